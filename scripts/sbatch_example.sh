#!/bin/bash
# Multi-node training of mamba2.c under Slurm: one task per GPU, srun starts them, the NCCL id goes through a TCP
# rendezvous on the first node (MASTER_ADDR:MASTER_PORT; llmc/multigpu.h reads SLURM_PROCID, SLURM_NTASKS,
# SLURM_LOCALID). Submit with: sbatch scripts/sbatch_example.sh   (adapt partition, nodes, paths)
#SBATCH --job-name=mamba2-130m
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --signal=TERM@120          # SIGTERM to every task 2 minutes before the limit: checkpoint, exit 143
#SBATCH --requeue                  # a preempted / timed-out job can be requeued: -y 1 resumes it
#SBATCH --output=log_130m/slurm-%j.out
set -euo pipefail

OUT=${OUT:-log_130m}
mkdir -p "$OUT"
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
# or a file rendezvous on a filesystem every node sees (the job and step ids are appended to the name):
# export MAMBA2_RENDEZVOUS=file:$PWD/$OUT/nccl_id

# NCCL across nodes (see doc/operations.md): name the NIC, use InfiniBand / RoCE when there is one
export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-^lo,docker}
export NCCL_IB_DISABLE=${NCCL_IB_DISABLE:-0}
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
export NCCL_ASYNC_ERROR_HANDLING=1
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-8}

# resume when the folder holds a run (a requeued job), else start; -y 1 with no checkpoint starts fresh
RESUME=0
if ls "$OUT"/ckpt_*.bin > /dev/null 2>&1 || [ -e "$OUT/main.log" ]; then RESUME=1; fi

srun --kill-on-bad-exit=1 --cpu-bind=cores ./train_mamba2cu \
    -i "data/fineweb/fineweb_train_*.bin" -j "data/fineweb/fineweb_val_*.bin" \
    -e 130m -b 8 -t 2048 -d 524288 -x 4800 -l 3e-3 -u 700 -n 200 -N 3 -o "$OUT" -y "$RESUME"
