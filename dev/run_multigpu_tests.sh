#!/bin/bash
# Multi-GPU tests on a 2-GPU machine (2 x H200 or 2 x H100). Logs under $OUT (or ./mgpu_out).
#   1. 2 GPUs (total batch B*T*2) == 1 GPU with gradient accumulation 2, same total batch: loss curves, 20 steps;
#      with ZeRO-1 too. fp32 build (tight) and bf16 build (the training precision).
#   2. two identical 2-GPU runs: bitwise identical logs and checkpoints.
#   3. save on 2 GPUs, resume on 1 GPU: continues the 2-GPU curve.
#   4. the MPI launch, when mpirun exists on the machine.
#   5. scaling: Mamba-2 130M, B=8, T=2048 per GPU, tokens/s on 1 and 2 GPUs.
set -o pipefail
OUT=${OUT:-mgpu_out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
make -j32 train_mamba2cu train_mamba2cu_fp32 > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
python3 data/prepare.py --quiet > "$OUT/prepare.log" 2>&1 || tail "$OUT/prepare.log"
MODEL="-e d_model=128,n_layer=4,d_state=32,headdim=32,chunk=64"
# the same total batch (2048 tokens) everywhere: 1 GPU reads global samples 2k, 2k+1 as two micro-steps of step k;
# 2 GPUs read them as rank 0 and rank 1 (same B, T): the same data, only the summation order differs
COMMON="$MODEL -t 256 -d 2048 -x 20 -l 2e-3 -u 4 -v 0 -s 0 -S 11"

two_gpus() { # two_gpus BINARY OUTDIR ARGS...: one process per GPU, file rendezvous, no MPI
    local bin=$1 dir=$2; shift 2
    local rdv="/tmp/rdv_$RANDOM$RANDOM"
    local pids=()
    for r in 0 1; do
        RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r MAMBA2_RENDEZVOUS=file:$rdv ./$bin -o "$dir" "$@" > "$dir.rank$r.txt" 2>&1 &
        pids+=($!)
    done
    local rc=0 pid
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    rm -f "$rdv"
    return $rc
}

for bin in train_mamba2cu_fp32 train_mamba2cu; do
    p=$OUT/$bin
    ./$bin -o $p.1gpu -b 4 $COMMON -n 10 > $p.1gpu.txt 2>&1 || { echo "1-GPU run failed"; tail $p.1gpu.txt; }
    two_gpus $bin $p.2gpu -b 4 $COMMON -n 10 || { echo "2-GPU run failed"; tail $p.2gpu.rank*.txt; }
    two_gpus $bin $p.2gpu_again -b 4 $COMMON -n 10 || echo "2-GPU rerun failed"
    two_gpus $bin $p.2gpu_zero -b 4 $COMMON -n 10 -z 1 || { echo "2-GPU ZeRO run failed"; tail $p.2gpu_zero.rank*.txt; }
    # resume the 2-GPU ZeRO run's step-10 checkpoint on 1 GPU
    mkdir -p $p.resume1 && cp $p.2gpu_zero/ckpt_00000010.bin $p.resume1/
    ./$bin -o $p.resume1 -y 1 -b 4 $COMMON -n 10 > $p.resume1.txt 2>&1 || { echo "resume on 1 GPU failed"; tail $p.resume1.txt; }
    cmp -s $p.2gpu/main.log $p.2gpu_again/main.log && echo "$bin: two 2-GPU runs: logs bitwise identical" \
        || echo "$bin: two 2-GPU runs: logs DIFFER"
    cmp -s $p.2gpu/ckpt_00000020.bin $p.2gpu_again/ckpt_00000020.bin && \
        echo "$bin: two 2-GPU runs: checkpoints bitwise identical" || echo "$bin: two 2-GPU runs: checkpoints DIFFER"
done
python3 dev/compare_logs.py "$OUT"

if command -v mpirun > /dev/null; then
    mpirun --allow-run-as-root -np 2 -x NCCL_NVLS_ENABLE ./train_mamba2cu -o $OUT/mpi -b 4 $COMMON > $OUT/mpi.txt 2>&1 \
        && echo "mpirun -np 2: ok, $(grep -c trl $OUT/mpi/main.log) steps logged" || { echo "mpirun failed"; tail $OUT/mpi.txt; }
else
    echo "mpirun: not installed on this machine (the MPI launch was not run here)"
fi

cmp -s $OUT/mpi/main.log $OUT/train_mamba2cu.2gpu/main.log && echo "mpirun run == file-rendezvous run: logs bitwise identical" || echo "mpirun run and file-rendezvous run: logs differ"
echo "== scaling: 130M, B=8, T=2048 per GPU, bf16"
./train_mamba2cu -e 130m -b 8 -t 2048 -x 12 -v 0 -s 0 -l 1e-3 -u 2 > $OUT/scale1.txt 2>&1
two_gpus train_mamba2cu $OUT/scale2 -e 130m -b 8 -t 2048 -d 32768 -x 12 -v 0 -s 0 -l 1e-3 -u 2
python3 - "$OUT" <<'PY'
import re, sys, statistics
out = sys.argv[1]
def tps(path):
    v = [float(m.group(1)) for m in re.finditer(r"\| ([0-9]+) tok/s", open(path).read())]
    return statistics.median(v[2:]) if len(v) > 3 else float("nan")
a, b = tps(f"{out}/scale1.txt"), tps(f"{out}/scale2.rank0.txt")
print(f"130M B=8 T=2048 per GPU: 1 GPU {a:,.0f} tok/s, 2 GPUs {b:,.0f} tok/s, speed-up {b / a:.2f}x (median of steps 3-12)")
PY
