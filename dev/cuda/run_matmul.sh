#!/bin/bash
# run_matmul.sh: the cuBLASLt matmul checks, timings and algorithm sweep (dev/cuda/matmul.cu) on the GPU machine.
#   usage (from the repo root): bash dev/cuda/run_matmul.sh [logdir]     (logdir defaults to $OUT, else /tmp)
# MATMUL_PREBUILT=dir: use dir/matmul_bin and dir/matmul32_bin built elsewhere (nvcc -O3 -std=c++17
# -gencode=arch=compute_90a,code=sm_90a -I. [-DENABLE_FP32] dev/cuda/matmul.cu -lcublasLt) instead of building here.
# MATMUL_SWEEP=0 skips the sweep; fp32 runs the checks alone unless MATMUL_FP32_MODE="" (plain SGEMM: its ~50 TFLOP/s
# timings take a minute and matter only for comparisons with the CPU trainer). Writes sweep.txt, bf16.txt, fp32.txt and prints the short lines last.
set -u
out=${1:-${OUT:-/tmp}}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
bin=${MATMUL_PREBUILT:-}
if [ -z "$bin" ]; then
    bin=dev/cuda
    nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I. -o $bin/matmul_bin dev/cuda/matmul.cu -lcublasLt &&
    nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I. -DENABLE_FP32 -o $bin/matmul32_bin \
        dev/cuda/matmul.cu -lcublasLt || { echo "run_matmul.sh: build failed"; exit 1; }
fi
for f in matmul_bin matmul32_bin; do
    [ -x "$bin/$f" ] || { echo "run_matmul.sh: $bin/$f missing or not executable: build it or unset MATMUL_PREBUILT"; exit 1; }
done
status=0
if [ "${MATMUL_SWEEP:-1}" != 0 ]; then
    "$bin/matmul_bin" sweep > "$out/sweep.txt" 2>&1 || status=1
fi
"$bin/matmul_bin" > "$out/bf16.txt" 2>&1 || status=1
"$bin/matmul32_bin" ${MATMUL_FP32_MODE-check} > "$out/fp32.txt" 2>&1 || status=1
for f in sweep bf16 fp32; do
    [ -f "$out/$f.txt" ] || continue
    echo "===== $f"
    grep -h "SWEEP\|STEP\|rounds\|HOST\|TIME\|FAIL\|version\|passed" "$out/$f.txt"
done
exit $status
