#!/bin/bash
# The GPU checks of this round in one device-machine call, most important first, each under its own time limit and
# all under BUDGET seconds (default 560), so that one call of at most ten minutes gives a verdict even when it cannot
# finish: what did not run says "SKIPPED (no time)". Logs of every step go to $OUT (default ./gpu_out).
#
#   1. correctness: the attention kernels (fp32 and bf16), test_hybrid (fp32, bf16), the torch reference against the
#      GPU build (dev/run_hybrid_reference.sh), test_mamba2cu (bf16, fp32: packed documents, masked targets, carried
#      state, -r 1 / -r 2 bitwise), the SSD's small shapes, then the portable path (MAMBA2_PORTABLE=1)
#   2. benchmarks: Mamba-2 130M at B=8, T=2048 with and without document boundaries (-D eot, -D 10), hybrid130m and
#      tpp125m, the attention kernels against torch's SDPA, the long-context table (-r 2 at 256K and 1M or 512K)
#   3. the warp-specialized SSD dC kernel of dev/cuda/ssd_ws.cu (issue #28)
#
# Usage (GPU machine, repository root): bash dev/run_gpu_tests.sh
#   Binaries already built (e.g. on another machine with `make ... GPU_ARCHS=90a NO_USE_MPI=1`; CPU programs with
#   CFLAGS=-O3, no -march=native) are used when they run; otherwise everything is built here first (16 cores: ~3 min).
#   Build those with the Makefile's default device flags, from a clean target (`make -B`): a binary left by a -G or
#   NVCC_DEVICE_OPT build runs too and passes the tests, ~9x slower (one such trainer cost a session its timings).
set -o pipefail
OUT=${OUT:-gpu_out}
BUDGET=${BUDGET:-560}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/extras/CUPTI/lib64:${LD_LIBRARY_PATH:-}
export PATH=/usr/local/cuda/bin:$PATH
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
# run LIMIT CMD...: CMD under min(LIMIT, what is left of BUDGET)
run() {
    local lim=$1; shift
    local l=$(( BUDGET - $(el) ))
    if [ $l -lt 8 ]; then echo "SKIPPED (no time): $*"; return 99; fi
    [ "$lim" -gt $l ] && lim=$l
    timeout "$lim" "$@"
}
# check LIMIT NAME CMD...: a test program; prints its 'N passed, N failed' line and its first failures
check() {
    local lim=$1 name=$2; shift 2
    run "$lim" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc at $(el) s: $(grep -E 'passed, [0-9]+ failed' "$OUT/$name.log" | tail -1)"
    grep -E "FAIL" "$OUT/$name.log" | head -6 | cut -c1-220
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
git log --oneline -1 2>/dev/null | cut -c1-80

BINS="train_mamba2 train_mamba2cu train_mamba2cu_fp32 eval_mamba2cu eval_mamba2cu_fp32 test_mamba2cu test_mamba2cu_fp32 test_hybrid
      test_hybrid_fp32 test_interop dev/cuda/attention_bin dev/cuda/attention_fp32_bin dev/cuda/ssd_bin
      dev/cuda/hybrid_dump_bin dev/cuda/hybrid_dump_fp32_bin dev/cuda/ssd_ws_bin"
ok=1
for b in $BINS; do [ -x "$b" ] || ok=0; done
if [ $ok -eq 1 ] && ./train_mamba2cu -h > /dev/null 2>&1 && ./train_mamba2 -h > /dev/null 2>&1; then
    echo "using the binaries present"; touch $BINS   # newer than the sources: make (dev/run_hybrid_reference.sh) keeps them
else
    make -j16 NO_USE_MPI=1 GPU_ARCHS=90a $BINS > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
    echo "built at $(el) s"
fi
(python3 data/prepare.py --quiet > "$OUT/prepare.log" 2>&1; echo "default corpus ready at $(el) s" >> "$OUT/background.log") &

echo "== 1. correctness"
check 50 attention_fp32 ./dev/cuda/attention_fp32_bin test
check 50 attention ./dev/cuda/attention_bin test
check 70 hybrid ./test_hybrid --no-trainers
check 70 hybrid_fp32 ./test_hybrid_fp32 --no-trainers
run 90 bash dev/run_hybrid_reference.sh > "$OUT/hybrid_reference.log" 2>&1
sed -n '/== summary/,$p' "$OUT/hybrid_reference.log"; grep -iE 'largest' "$OUT/hybrid_reference.log" | head -8
check 100 mamba2cu ./test_mamba2cu
check 70 mamba2cu_fp32 ./test_mamba2cu_fp32
check 30 ssd_small ./dev/cuda/ssd_bin small llmc

echo "== 2. benchmarks"
cat "$OUT/background.log" 2>/dev/null
bench() { run 40 ./train_mamba2cu -b 8 -t 2048 -x 20 -v 0 -s 0 -l 1e-3 -u 5 -p 1 "$@" 2>&1; }
bench -e 130m > "$OUT/train_130m.log"; echo "130m: $(grep -E '^tokens/s' "$OUT/train_130m.log")"
bench -e 130m -D eot > "$OUT/train_130m_eot.log"; echo "130m -D eot: $(grep -E '^tokens/s' "$OUT/train_130m_eot.log")"
bench -e 130m -D 10 > "$OUT/train_130m_nl.log"; echo "130m -D 10: $(grep -E '^tokens/s' "$OUT/train_130m_nl.log")"
for m in hybrid130m tpp125m; do
    bench -e $m > "$OUT/train_$m.log"; echo "$m: $(grep -E '^tokens/s|^MFU' "$OUT/train_$m.log" | tr '\n' ' ')"
done
bench -e 130m > "$OUT/train_130m_again.log"; echo "130m again: $(grep -E '^tokens/s' "$OUT/train_130m_again.log")"
run 50 ./dev/cuda/attention_bin bench > "$OUT/attention_bench.log" 2>&1
grep -vE "^\[|^$" "$OUT/attention_bench.log" | tail -12
run 50 python3 dev/cuda/bench_attention_torch.py > "$OUT/attention_torch.log" 2>&1; tail -8 "$OUT/attention_torch.log"
mem=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
longest=524288; [ "$mem" -gt 100000 ] && longest=1048576
STEPS=3 OUT="$OUT/long_context" run 150 bash dev/run_long_context.sh "262144 $longest" "2" 2>&1 | tail -4

echo "== 3. the warp-specialized SSD dC kernel (dev/cuda/ssd_ws.cu)"
check 60 ssd_ws ./dev/cuda/ssd_ws_bin
grep -E "^TIME|^SUMMARY" "$OUT/ssd_ws.log" | head -12

echo "== 4. the portable path"
check 60 portable_hybrid env MAMBA2_PORTABLE=1 ./test_hybrid --no-trainers
check 80 portable_mamba2cu env MAMBA2_PORTABLE=1 ./test_mamba2cu
check 40 portable_attention env MAMBA2_PORTABLE=1 ./dev/cuda/attention_bin test
check 30 small_smem_ssd env MAMBA2_PORTABLE=1 MAMBA2_SMEM_LIMIT=101376 ./dev/cuda/ssd_bin small llmc
echo "end at $(el) s"
