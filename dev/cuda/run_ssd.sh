#!/bin/bash
# run_ssd.sh: build, validate and benchmark the SSD kernels (dev/cuda/ssd.cu) in bf16 and fp32 on the GPU machine.
# Usage (from the repository root): bash dev/cuda/run_ssd.sh [outdir]   (logs go to outdir, default $OUT or /tmp)
# SSD_BF16_ARGS / SSD_FP32_ARGS pick the versions (default: 9, 11 and llmc in bf16, measured in the same process; 11
# and llmc in fp32, where the lab's 11 runs version 2's kernels; "llmc" is llmc/ssd.cuh's default path, the code the
# trainers run, checked bitwise against lab version 11, fp32: 2).
# SSD_MEMCHECK=1: compute-sanitizer --tool memcheck, then --tool racecheck, on the small-shape checks of version 11
# and of llmc (both into ssd_memcheck.txt). SSD_VARIANTS=1 also times
# version 4 with 2 and 8 heads per block and with the col kernel at 3 blocks/SM (the default is 2) (timings only matter there).
# SSD_EXTRA="args": one more ssd_bin run with those arguments (e.g. "fuse=2 7", "ns=32 7"), into ssd_extra.txt;
# SSD_EXTRA2="args": likewise, into ssd_extra2.txt. At most 8 files come back: choose among EXTRA2, MEMCHECK,
# SSD_QS (one file per Q) and SSD_NCU_DETAIL accordingly.
# SSD_PREBUILT=dir: use dir/ssd_bin, dir/ssd_fp32_bin, dir/wgmma_check_bin built elsewhere (same nvcc flags) instead
# of building here. SSD_QS="128 ...": also time versions SSD_BF16_ARGS at those chunk lengths (no ncu).
# dev/cuda/wgmma_check.cu (the wgmma descriptor and product wrappers against CPU products) runs first.
# The short table is printed last.
set -o pipefail
out=${1:-${OUT:-/tmp}}
mkdir -p "$out"
gpu=$(nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv); echo "$gpu"
build() {  # build <binary> <log> [nvcc flags...]
    local bin=$1 log=$2; shift 2
    nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -I. -Xptxas -v "$@" -o "$bin" dev/cuda/ssd.cu > "$log" 2>&1
}
bin=dev/cuda
if [ -n "$SSD_PREBUILT" ]; then
    bin=$SSD_PREBUILT
    for f in ssd_bin ssd_fp32_bin wgmma_check_bin; do [ -x "$bin/$f" ] || { echo "run_ssd.sh: $bin/$f missing or not executable: build it or unset SSD_PREBUILT"; exit 1; }; done
    echo "prebuilt binaries from $bin" > "$out/build_bf16.txt"
    touch $bin/*
else
    build dev/cuda/ssd_bin "$out/build_bf16.txt" & pid_bf16=$!
    build dev/cuda/ssd_fp32_bin "$out/build_fp32.txt" -DENABLE_FP32 & pid_fp32=$!
    nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -I. -o dev/cuda/wgmma_check_bin dev/cuda/wgmma_check.cu > "$out/build_wgmma.txt" 2>&1 & pid_wg=$!
    if [ -n "$SSD_VARIANTS" ]; then build dev/cuda/ssd_col3_bin "$out/build_col3.txt" -DSSD4_COL_MINBLOCKS=3 & pid_c3=$!; fi
    wait $pid_bf16 || { cat "$out/build_bf16.txt"; exit 1; }
    wait $pid_fp32 || { cat "$out/build_fp32.txt"; exit 1; }
    wait $pid_wg || { cat "$out/build_wgmma.txt"; exit 1; }
fi
echo "$gpu" >> "$out/build_bf16.txt"
cuobjdump --dump-sass $bin/ssd_bin | grep -oE "HMMA[.A-Z0-9]*|HGMMA[.A-Z0-9]*|LDSM[.A-Z0-9]*" | sort | uniq -c | tee -a "$out/build_bf16.txt"
rc=0
# SSD_ONLY_BF16=1: skip wgmma_check and the fp32 build (two files fewer, for variant runs)
[ -z "$SSD_ONLY_BF16" ] && { $bin/wgmma_check_bin > "$out/ssd_wgmma.txt" 2>&1 || rc=1; }
if [ -n "$SSD_MEMCHECK" ]; then
    cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
    $cs --tool memcheck $bin/ssd_bin small 11 llmc > "$out/ssd_memcheck.txt" 2>&1 || rc=1
    echo "== racecheck ==" >> "$out/ssd_memcheck.txt"
    $cs --tool racecheck $bin/ssd_bin small 11 llmc >> "$out/ssd_memcheck.txt" 2>&1 || rc=1
fi
[ -z "$SSD_ONLY_BF16" ] && { $bin/ssd_fp32_bin ${SSD_FP32_ARGS:-11 llmc} > "$out/ssd_fp32.txt" 2>&1 || rc=1; }
for q in $SSD_QS; do $bin/ssd_bin Q=$q ${SSD_BF16_ARGS:-9 11 llmc} > "$out/ssd_q$q.txt" 2>&1 || rc=1; done
$bin/ssd_bin ${SSD_BF16_ARGS:-9 11 llmc} > "$out/ssd_bf16.txt" 2>&1 || rc=1
if [ -n "$SSD_EXTRA" ]; then $bin/ssd_bin $SSD_EXTRA > "$out/ssd_extra.txt" 2>&1 || rc=1; fi
if [ -n "$SSD_EXTRA2" ]; then $bin/ssd_bin $SSD_EXTRA2 > "$out/ssd_extra2.txt" 2>&1 || rc=1; fi
if [ -n "$SSD_VARIANTS" ]; then
    for k in 2 8; do $bin/ssd_bin hg=$k 4 > "$out/ssd_hg$k.txt" 2>&1 || rc=1; done
    if wait $pid_c3; then ./dev/cuda/ssd_col3_bin 4 > "$out/ssd_col3.txt" 2>&1 || rc=1; else cat "$out/build_col3.txt"; fi
fi
# per-kernel times (ncu, one forward + backward at B=8, T=2048, bf16) of the versions in SSD_NCU (default 11 llmc; it may
# also hold "Q=128")
if command -v ncu > /dev/null; then
    ncu --csv --metrics gpu__time_duration.sum,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active \
        $bin/ssd_bin profile ${SSD_NCU:-11 llmc} > "$out/ncu_bf16.csv" 2>&1
    python3 - "$out/ncu_bf16.csv" <<'PY' > "$out/kernels.txt" 2>&1
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; ki = hdr.index("Kernel Name"); mi = hdr.index("Metric Name"); vi = hdr.index("Metric Value"); ui = hdr.index("Metric Unit")
ii = hdr.index("ID")
kern = {}
order = []
for r in rows[1:]:
    key = (r[ii], r[ki].split("(")[0])
    if key not in kern: kern[key] = {}; order.append(key)
    v = float(r[vi].replace(",", "")); unit = r[ui]
    if r[mi] == "gpu__time_duration.sum":
        v = v / 1000 if unit in ("ns", "nsecond") else v if unit in ("us", "usecond") else v * 1000
    kern[key][r[mi]] = v
for key in order:
    m = kern[key]
    print("%10.1f us  regs %3d  occupancy %5.1f%%  %s" % (m.get("gpu__time_duration.sum", 0), m.get("launch__registers_per_thread", 0),
          m.get("sm__warps_active.avg.pct_of_peak_sustained_active", 0), key[1]))
PY
fi
# SSD_NCU_DETAIL=regex: ncu's speed-of-light, memory, warp-state and occupancy sections for the matching kernels
if [ -n "$SSD_NCU_DETAIL" ] && command -v ncu > /dev/null; then
    ncu -k "regex:$SSD_NCU_DETAIL" --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
        --section Occupancy --section LaunchStats $bin/ssd_bin profile ${SSD_NCU:-11 llmc} > "$out/ncu_detail.txt" 2>&1
fi
# SSD_NCU_FULL=regex: ncu's full set (stall reasons, source counters) for the first SSD_NCU_FULL_COUNT (default 2)
# matching kernels of the versions in SSD_NCU, in order (e.g. "bwd_col" with "Q=128 7 8": version 7's col kernel,
# then version 8's)
if [ -n "$SSD_NCU_FULL" ] && command -v ncu > /dev/null; then
    ncu --set full -k "regex:$SSD_NCU_FULL" -c ${SSD_NCU_FULL_COUNT:-2} $bin/ssd_bin profile ${SSD_NCU:-11 llmc} \
        > "$out/ncu_full.txt" 2>&1
fi
rm -f "$out/ncu_bf16.csv"  # summarized in kernels.txt; at most 8 files come back from the device
echo "== failures (fp32, bf16) =="
grep -h -B1 "FAIL" "$out"/ssd_*.txt | head -40
echo "== per-kernel (ncu, bf16, B=8 T=2048; versions ${SSD_NCU:-11 llmc} in order) =="
cat "$out/kernels.txt" 2>/dev/null
echo "== results =="
grep -H "passed, .* failed" "$out"/ssd_*.txt
for f in "$out"/ssd_*.txt; do echo "-- $(basename $f)"; grep -h -A12 "^summary" "$f"; done
exit $rc
