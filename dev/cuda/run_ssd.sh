#!/bin/bash
# run_ssd.sh: build, validate and benchmark the SSD kernels (dev/cuda/ssd.cu) in bf16 and fp32 on the GPU machine.
# Usage (from the repository root): bash dev/cuda/run_ssd.sh [outdir]   (logs go to outdir, default $OUT or /tmp)
# SSD_BF16_ARGS / SSD_FP32_ARGS pick the versions (default: 2 and 3 in bf16; 3 in fp32, where it runs version 2's
# kernels, so all checks of the code the fp32 trainer runs); the short table is printed last.
set -o pipefail
out=${1:-${OUT:-/tmp}}
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$out/gpu.txt"
nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -I. -Xptxas -v -o dev/cuda/ssd_bin dev/cuda/ssd.cu > "$out/build_bf16.txt" 2>&1 &
pid_bf16=$!
nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -I. -DENABLE_FP32 -o dev/cuda/ssd_fp32_bin dev/cuda/ssd.cu > "$out/build_fp32.txt" 2>&1 &
pid_fp32=$!
wait $pid_bf16 || { cat "$out/build_bf16.txt"; exit 1; }
wait $pid_fp32 || { cat "$out/build_fp32.txt"; exit 1; }
cuobjdump --dump-sass dev/cuda/ssd_bin | grep -oE "HMMA[.A-Z0-9]*|HGMMA[.A-Z0-9]*|LDSM[.A-Z0-9]*" | sort | uniq -c | tee -a "$out/build_bf16.txt"
rc=0
./dev/cuda/ssd_fp32_bin ${SSD_FP32_ARGS:-3} > "$out/ssd_fp32.txt" 2>&1 || rc=1
./dev/cuda/ssd_bin ${SSD_BF16_ARGS:-2 3} > "$out/ssd_bf16.txt" 2>&1 || rc=1
# per-kernel times (ncu, one forward + backward of version 3 at B=8, T=2048, bf16)
if command -v ncu > /dev/null; then
    ncu --csv --metrics gpu__time_duration.sum,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active \
        ./dev/cuda/ssd_bin profile 3 > "$out/ncu_bf16.csv" 2>&1
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
echo "== failures (fp32, bf16) =="
grep -h -B1 "FAIL" "$out/ssd_fp32.txt" "$out/ssd_bf16.txt" | head -40
echo "== per-kernel (ncu, bf16 v3, B=8 T=2048) =="
cat "$out/kernels.txt" 2>/dev/null
echo "== results =="
grep -h "passed, .* failed" "$out/ssd_fp32.txt" "$out/ssd_bf16.txt"
grep -h -A8 "^summary" "$out/ssd_fp32.txt" "$out/ssd_bf16.txt"
exit $rc
