#!/usr/bin/env bash
# compare_sass.sh: the SASS of the kernels of two CUDA binaries (or cubins), paired by name, diffed with the names
# left out: did a refactor that renamed kernels and folded template parameters leave the generated code alone?
#
#   dev/cuda/compare_sass.sh OLD_BINARY NEW_BINARY [RULES]
#
# Each old kernel's demangled name (template arguments kept, parameter list dropped) is rewritten by RULES, a file
# of `sed -E` expressions, one a line ('#' starts a comment); the default is the SSD rename of llmc/ssd*.cuh
# (lab version names -> llmc names, the folded template parameters dropped: dev/cuda/NOTES_ssd.md, "llmc names").
# A rule may map an old kernel to "-" (not expected in the new binary). A pair is "same" when the two SASS listings
# are identical after the function names, the symbol references and the blank lines are removed; else the diff is
# printed. Kernels found only in one binary are listed. Needs cuobjdump (CUDA toolkit) and c++filt.
# Exit status: 0 when every new kernel has an old one and every pair is the same, 1 otherwise.
set -euo pipefail
if [ $# -lt 2 ]; then sed -n '2,12p' "$0"; exit 2; fi
old=$1; new=$2; rules=${3:-}
command -v cuobjdump >/dev/null || { echo "compare_sass.sh: cuobjdump not found (it comes with the CUDA toolkit)" >&2; exit 2; }
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
