#!/bin/bash
# One device-machine call: build everything, run the GPU tests (fp32 and bf16), then train the 130M config at
# B=8, T=2048 for a few steps and report ms/step, tokens/s and peak memory. Logs go to $OUT (or ./gpu_out).
# Usage (GPU machine): bash dev/run_gpu_tests.sh [steps]
set -o pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
STEPS=${1:-12}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
make -j16 train_mamba2 train_mamba2cu train_mamba2cu_fp32 test_mamba2cu test_mamba2cu_fp32 > "$OUT/build.log" 2>&1 \
    || { tail -30 "$OUT/build.log"; exit 1; }
echo "== make test_cu"
make test_cu 2>&1 | tee "$OUT/test_cu.log" | grep -vE "^\[ OK \]|^    step [0-9]:|^    \$"
echo "== conv1d kernels (with and without document boundaries), and their timing"
make dev/cuda/conv1d_bin > "$OUT/build_conv1d.log" 2>&1 || tail -30 "$OUT/build_conv1d.log"
./dev/cuda/conv1d_bin 2>&1 | tee "$OUT/conv1d.log" | grep -E "FAIL|passed|docs|benchmark"
echo "== default corpus"
python3 data/prepare.py --quiet > "$OUT/prepare.log" 2>&1 || tail "$OUT/prepare.log"
echo "== Mamba-2 130M, B=8, T=2048, bf16 ($STEPS steps)"
./train_mamba2cu -e 130m -b 8 -t 2048 -x "$STEPS" -v 0 -s 0 -l 3e-3 -u 2 2>&1 | tee "$OUT/train_130m.log" | \
    grep -E "device|parameters|activations|step +[0-9]+/|total time"
echo "== the same with document boundaries at each newline (-D 10): packed-with-resets cost"
./train_mamba2cu -e 130m -b 8 -t 2048 -x "$STEPS" -v 0 -s 0 -l 3e-3 -u 2 -D 10 -p 1 2>&1 | \
    tee "$OUT/train_130m_docs.log" | grep -E "document|tokens/s|step +[0-9]+/"
./train_mamba2cu -e 130m -b 8 -t 2048 -x "$STEPS" -v 0 -s 0 -l 3e-3 -u 2 -p 1 2>&1 | \
    tee "$OUT/train_130m_nodocs.log" | grep -E "tokens/s"
