#!/usr/bin/env bash
# compare_sass.sh: the machine code of the kernels of two CUDA builds, paired by name, compared with the names left
# out: did a refactor that renamed kernels and folded template parameters leave the generated code alone?
#
#   dev/cuda/compare_sass.sh OLD NEW [RULES]
#
# OLD, NEW: two binaries or two cubins (nvcc -cubin). Each old kernel's demangled name (template arguments kept,
# parameter list and return type dropped) is rewritten by RULES, a file of `sed -E` expressions, one a line ('#'
# starts a comment); the default is the SSD rename of llmc/ssd*.cuh (lab version names -> llmc names, the folded
# template parameters dropped: dev/cuda/NOTES_ssd.md, "llmc names"). A rule may map an old kernel to "-" (not
# expected in the new build). Two ways to compare, by what the machine has:
#   - cuobjdump (CUDA toolkit): the SASS listings, identical once the function names, symbol references and blank
#     lines are removed; a difference is printed;
#   - without it, two cubins: the bytes of each kernel's .text section (its machine code), the (offset, type) of
#     its relocations and the sizes of its parameter and shared-memory sections (ELF read by python3).
# Kernels found only in one build are listed. Needs c++filt.
# Exit status: 0 when every new kernel has an old one and every pair is the same, 1 otherwise.
set -euo pipefail
if [ $# -lt 2 ]; then sed -n '2,19p' "$0"; exit 2; fi
old=$1; new=$2; rules=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$rules" ]; then
    rules=$work/rules.sed
    cat > "$rules" <<'EOF'
# simple kernels (lab version 2)
s/^ssd_chunk_outer_kernel$/ssd_simple_chunk_state_kernel/
s/^ssd_chunk_scan_fwd_kernel$/ssd_simple_fwd_scan_kernel/
s/^ssd_bwd_dx_db_kernel$/ssd_simple_bwd_dxdb_kernel/
s/^ssd_bwd_dc_kernel$/ssd_simple_bwd_dc_kernel/
s/^ssd_bwd_dt_kernel$/ssd_simple_bwd_dt_kernel/
s/^ssd_bwd_group_sum_kernel<float>$/ssd_simple_group_sum_kernel/
s/^ssd_bwd_group_sum_kernel<__nv_bfloat16>$/-/
# state
s/^ssd4_chunk_state_kernel</ssd_chunk_state_kernel</
s/^ssd7_state_scan_kernel<64, 3, ([01]), 1>$/ssd_state_scan_kernel<\1>/
s/^ssd7_state_scan_kernel<.*$/-/
s/^ssd3_chunk_state_kernel$/-/
s/^ssd6_chunk_state_kernel<.*$/-/
# forward scans
s/^ssd3_scan_fwd_kernel</ssd_fwd_scan_mma_kernel</
s/^ssd5_scan_fwd_kernel<([12]), ([48]), 2, 1>$/ssd_fwd_scan_wgmma_kernel<\1, \2>/
s/^ssd5_scan_fwd_kernel<.*$/-/
s/^ssd6_scan_fwd_kernel<([48]), 2, true, true>$/ssd_fwd_scan_wgmma_pair_kernel<\1>/
s/^ssd6_scan_fwd_kernel<.*$/-/
# backward
s/^ssd3_bct_kernel$/ssd_bwd_bct_kernel/
s/^ssd3_bwd_dt_kernel$/ssd_bwd_dt_kernel/
s/^ssd4_group_sum_kernel$/ssd_bwd_group_sum_kernel/
s/^ssd4_bwd_col_kernel<(.*), (true|false), \2>$/ssd_bwd_dxdb_kernel<\1, \2>/
s/^ssd4_bwd_col_kernel<.*$/-/
s/^ssd4_bwd_dc_kernel</ssd_bwd_dc_kernel</
s/^ssd3_bwd_(col|dc)_kernel<.*$/-/
s/^ssd6_bwd_dc_kernel<.*$/-/
EOF
fi

if ! command -v cuobjdump >/dev/null; then
    is_cubin() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ] && python3 -c "import sys; d = open(sys.argv[1], 'rb').read(20); sys.exit(0 if int.from_bytes(d[18:20], 'little') == 190 else 1)" "$1"; }
    if ! is_cubin "$old" || ! is_cubin "$new"; then
        echo "compare_sass.sh: no cuobjdump here (it comes with the CUDA toolkit): give two cubins (nvcc -cubin ...) to compare their machine code bytes" >&2
        exit 2
    fi
    echo "(no cuobjdump: comparing the cubins' .text bytes, relocations and section sizes)"
    python3 - "$old" "$new" "$rules" <<'PY'
import struct, subprocess, sys
def sections(path):
    d = open(path, 'rb').read()
    assert d[:4] == b'\x7fELF' and d[4] == 2, path + ': not a 64-bit ELF'
    shoff, = struct.unpack_from('<Q', d, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', d, 0x3a)
    hdrs = [struct.unpack_from('<IIQQQQIIQQ', d, shoff + i * shentsize) for i in range(shnum)]
    strtab = hdrs[shstrndx]
    def name(off):
        s = strtab[4] + off
        return d[s:d.index(b'\0', s)].decode()
    out = {}
    for h in hdrs:
        nm, typ, size, off = name(h[0]), h[1], h[5], h[4]
        out[nm] = (typ, d[off:off + size] if typ != 8 else b'', size)  # SHT_NOBITS (8): size only
    return out
def kernels(secs):
    k = {}
    for nm, (typ, data, size) in secs.items():
        if not nm.startswith('.text.'): continue
        sym = nm[len('.text.'):]
        rel = secs.get('.rela' + nm) or secs.get('.rel' + nm)
        rels = []
        if rel:
            ent = 24 if ('.rela' + nm) in secs else 16
            for i in range(0, len(rel[1]), ent):
                off, info = struct.unpack_from('<QQ', rel[1], i)
                rels.append((off, info & 0xffffffff))  # the type; the symbol index (info >> 32) is a name
        c0 = secs.get('.nv.constant0.' + sym, (0, b'', 0))[2]
        sh = secs.get('.nv.shared.' + sym, (0, b'', 0))[2]
        k[sym] = (data, tuple(rels), c0, sh)
    return k
def demangle(names):
    out = subprocess.run(['c++filt'], input='\n'.join(names) + '\n', capture_output=True, text=True).stdout.split('\n')
    res = []
    for x in out[:len(names)]:
        x = x.split('(')[0] if not x.startswith('_Z') else x
        res.append(x[5:] if x.startswith('void ') else x)
    return res
old, new = kernels(sections(sys.argv[1])), kernels(sections(sys.argv[2]))
rules = sys.argv[3]
on, nn = list(old), list(new)
odem, ndem = demangle(on), demangle(nn)
mapped = subprocess.run(['sed', '-E', '-f', rules], input='\n'.join(odem) + '\n', capture_output=True, text=True).stdout.split('\n')
oldby = {}
for sym, dem, m in zip(on, odem, mapped):
    if m == '-': print('old only (not in the new build by design):', dem); continue
    oldby[m] = (sym, dem)
status, same, diff, seen = 0, 0, 0, set()
for sym, dem in zip(nn, ndem):
    seen.add(dem)
    if dem not in oldby: print('NEW ONLY:', dem); status = 1; continue
    a, b = old[oldby[dem][0]], new[sym]
    what = [w for w, x, y in zip(('code bytes', 'relocations', 'parameter bytes', 'static shared bytes'), a, b) if x != y]
    if what: print('DIFF  %s (%s; %d vs %d code bytes)' % (dem, ', '.join(what), len(a[0]), len(b[0]))); diff += 1; status = 1
    else: print('same  %s (%d code bytes)' % (dem, len(b[0]))); same += 1
for m, (sym, dem) in oldby.items():
    if m not in seen: print('old only (mapped to %s, absent from the new build): %s' % (m, dem))
print('%d same, %d differ' % (same, diff))
sys.exit(status)
PY
    exit $?
fi

# split a binary's SASS into one file per kernel, named by a hash of its demangled name; index: name <tab> file
split_sass() {  # binary outdir
    mkdir -p "$2"
    cuobjdump -sass "$1" | awk -v dir="$2" '
        /Function : / { if (file != "") close(file); name = $NF; n++; file = dir "/" n ".sass"; print name "\t" file > (dir "/index.raw"); next }
        file != "" && !/^[ \t]*$/ && !/^[ \t]*\.\.\.\.\.\.\.\.\.\./ { print > file }'
    cut -f1 "$2/index.raw" | c++filt | sed -E 's/\(.*$//; s/^void //' > "$2/names"
    cut -f2 "$2/index.raw" > "$2/files"
    paste "$2/names" "$2/files" > "$2/index"
}
split_sass "$old" "$work/old"
split_sass "$new" "$work/new"
# drop the names left inside the code (calls and relocations name symbols): keep the instructions
norm() { sed -E 's/_Z[A-Za-z0-9_]+/SYM/g; s/\$[A-Za-z0-9_$.]+/LBL/g' "$1"; }

status=0; nsame=0; ndiff=0
declare -A oldfile
while IFS=$'\t' read -r name file; do
    mapped=$(printf '%s\n' "$name" | sed -E -f "$rules")
    [ "$mapped" = "-" ] && { echo "old only (not in the new build by design): $name"; continue; }
    oldfile[$mapped]=$file
done < "$work/old/index"
declare -A seen
while IFS=$'\t' read -r name file; do
    seen[$name]=1
    if [ -z "${oldfile[$name]:-}" ]; then echo "NEW ONLY: $name"; status=1; continue; fi
    if diff <(norm "${oldfile[$name]}") <(norm "$file") > "$work/d"; then
        echo "same  $name"; nsame=$((nsame + 1))
    else
        echo "DIFF  $name ($(grep -c '^[<>]' "$work/d") lines differ)"; sed -n '1,40p' "$work/d"; ndiff=$((ndiff + 1)); status=1
    fi
done < "$work/new/index"
for k in "${!oldfile[@]}"; do [ -z "${seen[$k]:-}" ] && echo "old only (mapped to $k, absent from the new build)"; done
echo "$nsame same, $ndiff differ"
exit $status
