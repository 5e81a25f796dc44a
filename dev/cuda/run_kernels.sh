#!/bin/bash
# run_kernels.sh: build, validate and benchmark every non-SSD kernel (encoder, rmsnorm, conv1d, gated_norm, matmul,
# classifier, adamw, global_norm) in bf16 and fp32, in one go on the GPU machine.
#   usage (from the repo root): bash dev/cuda/run_kernels.sh [logdir]     (logdir defaults to $OUT, else /tmp)
# Each program prints per-check results and "N passed, N failed"; this script prints a summary table last and exits
# nonzero if any build or program failed.
set -u
LOG=${1:-${OUT:-/tmp}}
mkdir -p "$LOG"
NAMES="encoder rmsnorm conv1d gated_norm matmul classifier adamw global_norm"
NVCC="nvcc -O3 -arch=sm_90 -I."
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$LOG/gpu.txt" 2>&1
cat "$LOG/gpu.txt"

# build all 16 binaries in parallel (bf16: <name>_bin, fp32: <name>32_bin)
build() {
    local name=$1 prec=$2 libs=""
    [ "$name" = matmul ] && libs="-lcublasLt"
    if [ "$prec" = fp32 ]; then
        $NVCC -DENABLE_FP32 -o dev/cuda/${name}32_bin dev/cuda/$name.cu $libs
    else
        $NVCC -o dev/cuda/${name}_bin dev/cuda/$name.cu $libs
    fi
}
export -f build; export NVCC
t0=$(date +%s)
for n in $NAMES; do echo "$n bf16"; echo "$n fp32"; done |
    xargs -P 16 -L 1 bash -c 'build $0 $1 > /dev/null 2>> '"$LOG"'/build.log || echo "BUILD FAILED: $0 $1" >> '"$LOG"'/build.log'
echo "build: $(( $(date +%s) - t0 )) s"
grep -q "BUILD FAILED" "$LOG/build.log" 2>/dev/null && { cat "$LOG/build.log"; }

status=0
summary=""
for prec in bf16 fp32; do
    for n in $NAMES; do
        bin=dev/cuda/${n}_bin; [ $prec = fp32 ] && bin=dev/cuda/${n}32_bin
        if [ ! -x $bin ]; then summary+=$(printf "%-12s %-5s %s" $n $prec "NOT BUILT")$'\n'; status=1; continue; fi
        $bin > "$LOG/${n}_${prec}.log" 2>&1
        rc=$?
        last=$(tail -n 1 "$LOG/${n}_${prec}.log")
        [ $rc -ne 0 ] && status=1
        summary+=$(printf "%-12s %-5s rc=%d  %s" $n $prec $rc "$last")$'\n'
    done
done
# everything in one log too (the files come back as at most 8 files: keep the combined one and the summary)
for f in "$LOG"/*_bf16.log "$LOG"/*_fp32.log; do echo "===== $(basename $f)"; cat "$f"; done > "$LOG/all.log"
grep -h "TIME\|FAIL\|^benchmark" "$LOG"/*_bf16.log "$LOG"/*_fp32.log > "$LOG/times.txt"
rm -f "$LOG"/*_bf16.log "$LOG"/*_fp32.log
echo "===== timings"
cat "$LOG/times.txt"
echo "===== summary"
printf "%s" "$summary" | tee "$LOG/summary.txt"
exit $status
