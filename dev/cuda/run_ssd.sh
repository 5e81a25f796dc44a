#!/bin/bash
# run_ssd.sh: build, validate and benchmark the SSD kernels (dev/cuda/ssd.cu) in bf16 and fp32 on the GPU machine.
# Usage (from the repository root): bash dev/cuda/run_ssd.sh [outdir]   (logs go to outdir, default $OUT or /tmp)
set -o pipefail
out=${1:-${OUT:-/tmp}}
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$out/gpu.txt"
nvcc -O3 -arch=sm_90 -I. -Xptxas -v -o dev/cuda/ssd_bin dev/cuda/ssd.cu > "$out/build_bf16.txt" 2>&1 || { cat "$out/build_bf16.txt"; exit 1; }
nvcc -O3 -arch=sm_90 -I. -DENABLE_FP32 -o dev/cuda/ssd_fp32_bin dev/cuda/ssd.cu > "$out/build_fp32.txt" 2>&1 || { cat "$out/build_fp32.txt"; exit 1; }
cuobjdump --dump-sass dev/cuda/ssd_bin | grep -oE "HMMA[.A-Z0-9]*|HGMMA[.A-Z0-9]*" | sort | uniq -c | tee -a "$out/build_bf16.txt"
rc=0
./dev/cuda/ssd_fp32_bin ${SSD_ARGS} 2>&1 | tee "$out/ssd_fp32.txt" | grep -E "FAIL|TIME|passed|summary|===|  v[12] " || rc=1
./dev/cuda/ssd_bin ${SSD_ARGS} 2>&1 | tee "$out/ssd_bf16.txt" | grep -E "FAIL|TIME|passed|summary|===|  v[12] " || rc=1
# per-kernel times (ncu, one forward + backward of each version at B=8, T=2048, bf16)
if command -v ncu > /dev/null; then
    ncu --csv --metrics gpu__time_duration.sum ./dev/cuda/ssd_bin profile ${SSD_ARGS} > "$out/ncu_bf16.csv" 2>&1
    python3 - "$out/ncu_bf16.csv" <<'PY' | tee "$out/kernels.txt"
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; ki = hdr.index("Kernel Name"); vi = hdr.index("Metric Value"); ui = hdr.index("Metric Unit")
for r in rows[1:]:
    v = float(r[vi].replace(",", "")); unit = r[ui]
    us = v / 1000 if unit in ("ns", "nsecond") else v if unit in ("us", "usecond") else v * 1000
    print("%10.1f us  %s" % (us, r[ki].split("(")[0]))
PY
fi
exit $rc
