#!/bin/bash
# Data-parallel scaling of Mamba-2 130M and 1.3B (issue 8), everything in one device call (a 4- or 8-GPU machine).
#
#   bash dev/run_scaling.sh [--dry-run] [--gpus N] [--quick] [--mpi]
#
#   (a) speed: for G in 1 2 4 8 (<= N GPUs), both models, ZeRO 0 and 1 (1 only with G > 1): the trainer's -p 1
#       benchmark report (median ms/step after 3 warm-up steps, tokens/s of all GPUs). The batch per GPU is fixed
#       (B=8, T=2048) and the total grows with G, as in data-parallel pre-training.
#   (b) agreement: a small model, G GPUs against 1 GPU with gradient accumulation G at the same total batch (-d),
#       20 steps, bf16, ZeRO 0 and 1: the largest relative train-loss difference.
# Then dev/scaling_report.py prints one table (efficiency = tokens/s / (G x the 1-GPU no-ZeRO tokens/s)).
#
# 1.3B micro-batch: `python3 dev/scaling_report.py --estimate 1.3b -b 8 -t 2048` gives 72.7 GiB allocated by the
# trainer (1,343,757,312 parameters x 18 bytes of fp32 weights, bf16 copy, fp32 grads and AdamW moments = 22.5 GiB;
# activations 50.2 GiB, mostly the per-layer zxbcdt, residual, conv and gated-norm outputs and SSD chunk states).
# The same estimator gives 13.52 GiB for 130M at B=8 (the trainer prints 13.52) and 11.18 with -r 1 (11.19), so
# B=8 without -r fits an H200 (140 GiB) with room; B=16 would need 122.8 GiB (98.6 with -r 1): too close.
#
# Time (budget: one command of at most 10 minutes): build ~1 min, then each run pays a start-up before its steps,
# mostly the single-threaded host initialisation of the weights (params_init: 3.9 s for 130M, 29 s for 1.3B on the
# 2-core development machine). So the first 1.3B run (1 GPU) also saves its weights (a 16 GB checkpoint, written
# after its timed steps, to /dev/shm or else beside the logs) and the other 1.3B runs start from them (-e CHECKPOINT:
# weights only, read back in seconds); if that checkpoint is missing they use -e 1.3b. The 1.3B
# step is ~10x the 130M's FLOPs (8.5 vs 0.86 GFLOP/token): ~0.7 s at B=8. Runs are ordered by importance (each
# model's 1-GPU run, then the largest G first), every run has a timeout, and a run that would end past
# SCALING_BUDGET_S (default 540 s since the start; estimated from the previous run of the same model) is skipped
# and reported as skipped, so the summary always comes back. The plan and the estimate are printed first.
#
# Output: $OUT (default ./scaling_out) gets at most 5 files: plan.txt (runs, commands, estimate), progress.txt,
# summary.txt, summary.md (for README) and scaling_logs.tar.gz (every run's per-rank logs, the plan, the machine's
# GPU list and topology), refreshed after every run, so a call cut short still returns what was measured.
set -o pipefail

DRY=0 QUICK=0 USE_MPI=0 NGPU=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --quick) QUICK=1 ;;
        --mpi) USE_MPI=1 ;;
        --gpus) NGPU=$2; shift ;;
        --gpus=*) NGPU=${1#--gpus=} ;;
        -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument '$1' (use --dry-run, --gpus N, --quick, --mpi)" >&2; exit 2 ;;
    esac
    shift
done

if [ -z "$NGPU" ]; then
    if [ $DRY = 1 ]; then
        NGPU=8
    elif command -v nvidia-smi > /dev/null; then
        NGPU=$(nvidia-smi -L | grep -c '^GPU')
    else
        echo "error: nvidia-smi not found, so the GPU count is unknown: pass --gpus N (or --dry-run)" >&2; exit 2
    fi
fi
case "$NGPU" in ''|*[!0-9]*) echo "error: --gpus '$NGPU' is not a whole number" >&2; exit 2 ;; esac
[ "$NGPU" -ge 1 ] || { echo "error: --gpus $NGPU: need at least 1 GPU" >&2; exit 2; }

OUT=${OUT:-scaling_out}
WORK=${SCALING_WORK:-${TMPDIR:-/tmp}/mamba2_scaling.$$}   # per-run logs; not under $OUT (at most 8 files return)
BUDGET_S=${SCALING_BUDGET_S:-540}
BIN=${SCALING_BIN:-./train_mamba2cu}   # SCALING_BIN, SCALING_SKIP_BUILD=1: for dev/test_scaling.py's stand-in trainer
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1   # NVLink multicast off

if [ $USE_MPI = 1 ] && ! command -v mpirun > /dev/null && [ $DRY = 0 ]; then
    echo "--mpi: mpirun is not installed here; launching with RANK/WORLD_SIZE and a file rendezvous instead"
    USE_MPI=0
fi

# ---- what to run ------------------------------------------------------------------------------------------------
GPUS=""
for g in 1 2 4 8; do [ "$g" -le "$NGPU" ] && GPUS="$GPUS $g"; done
DESC=$(echo "$GPUS" | tr ' ' '\n' | sort -rn | grep -v '^1$' | tr '\n' ' ')   # largest first after the 1-GPU run

STEPS_130M=20 STEPS_13B=12 STEPS_AGREE=20 AGREE_GPUS="$DESC"
if [ $QUICK = 1 ]; then   # a rough look in about half the time: fewer steps, agreement only at the largest G
    STEPS_130M=10 STEPS_13B=8 AGREE_GPUS=$(echo "$DESC" | cut -d' ' -f1)
fi
B_130M=8 B_13B=8 T=2048
# estimates (seconds) for the plan and the budget: start-up + steps x ms/step (H100/H200, bf16, B=8, T=2048); 1.3B
# from the first run's weights: START_13B_CKPT. Replaced by the wall time of the model's previous run once known.
START_130M=8 MS_130M=75 START_13B=35 SAVE_13B=15 START_13B_CKPT=12 MS_13B=750 START_AGREE=6 MS_AGREE=30 BUILD_S=90
SPEED_COMMON="-v 0 -s 0 -l 1e-3 -u 2 -p 1"
AGREE_MODEL="-e d_model=128,n_layer=4,d_state=32,headdim=32,chunk=64"
AGREE_COMMON="$AGREE_MODEL -b 4 -t 256 -x $STEPS_AGREE -l 2e-3 -u 4 -v 0 -s 0 -S 11"

# where the first 1.3B run leaves its weights for the others (empty: every run initialises its own)
# (16 GB with the AdamW moments): /dev/shm when it has room, else beside the logs (a big-memory host keeps it in the
# page cache); SCALING_INIT_DIR: this folder instead, 'none': every run initialises its own weights
free_gib() { local g; g=$(df -P -BG "$1" 2> /dev/null | awk 'NR == 2 { print $4 + 0 }'); echo "${g:-0}"; }
INIT_DIR=${SCALING_INIT_DIR:-}
if [ -z "$INIT_DIR" ]; then
    if [ $DRY = 1 ] || { [ -w /dev/shm ] && [ "$(free_gib /dev/shm)" -ge 24 ]; }; then
        INIT_DIR=/dev/shm/mamba2_scaling_init.$$
    elif [ "$(free_gib "$(dirname "$WORK")")" -ge 40 ]; then
        INIT_DIR=$WORK/init_1.3b
    fi
fi
[ "$INIT_DIR" = none ] && INIT_DIR=""
INIT_CKPT=$INIT_DIR/ckpt_$(printf %08d $STEPS_13B).bin

PLAN=()   # "name kind model gpus zero batch seq steps ref est_s | trainer args"
add_speed() { # add_speed MODEL G Z B STEPS START MS [EXTRA ARGS]
    local model=$1 g=$2 z=$3 b=$4 steps=$5 est=$(( $6 + $5 * $7 / 1000 + ($2 > 1 ? 3 : 0) )) e=$1
    shift 7
    PLAN+=("speed_${model}_g${g}_z${z} speed $model $g $z $b $T $steps - $est | -e $e -b $b -t $T -d $((b * T * g)) -x $steps -z $z $SPEED_COMMON $*")
}
speed_runs() { # speed_runs MODEL B STEPS START MS: the 1-GPU run, then each G (largest first) without and with ZeRO
    add_speed "$1" 1 0 "$2" "$3" "$4" "$5"
    for g in $DESC; do add_speed "$1" "$g" 0 "$2" "$3" "$4" "$5"; add_speed "$1" "$g" 1 "$2" "$3" "$4" "$5"; done
}
speed_runs 130m $B_130M $STEPS_130M $START_130M $MS_130M
for g in $AGREE_GPUS; do
    est=$(( START_AGREE + STEPS_AGREE * MS_AGREE / 1000 ))
    PLAN+=("agree_g${g}_ref agree_ref small 1 0 4 256 $STEPS_AGREE - $est | $AGREE_COMMON -d $((1024 * g)) -z 0")
    for z in 0 1; do
        PLAN+=("agree_g${g}_z${z} agree small $g $z 4 256 $STEPS_AGREE agree_g${g}_ref $((est + 3)) | $AGREE_COMMON -d $((1024 * g)) -z $z")
    done
done
if [ -n "$INIT_DIR" ]; then
    add_speed 1.3b 1 0 $B_13B $STEPS_13B $((START_13B + SAVE_13B)) $MS_13B -o "$INIT_DIR"
    for g in $DESC; do
        for z in 0 1; do add_speed 1.3b "$g" "$z" $B_13B $STEPS_13B $START_13B_CKPT $MS_13B; done
    done
    # the runs after the first start from its weights (launch_args falls back to -e 1.3b without them)
    for i in "${!PLAN[@]}"; do
        case "${PLAN[$i]}" in speed_1.3b_g1_*) ;; speed_1.3b_*) PLAN[i]=${PLAN[$i]/-e 1.3b /-e $INIT_CKPT } ;; esac
    done
else
    speed_runs 1.3b $B_13B $STEPS_13B $START_13B $MS_13B
fi

# the trainer arguments of a plan entry; -e INIT_CKPT becomes -e 1.3b when the first 1.3B run left no checkpoint
launch_args() {
    local args=${1#*| }
    if [ $DRY = 0 ] && [ -n "$INIT_DIR" ] && [ ! -f "$INIT_CKPT" ]; then args=${args//-e $INIT_CKPT /-e 1.3b }; fi
    echo "$args"
}

# ---- launching --------------------------------------------------------------------------------------------------
# launch NAME G LIMIT ARGS...: one process per GPU. Without MPI each gets RANK, WORLD_SIZE, LOCAL_RANK and a file
# rendezvous for the NCCL id (as dev/run_multigpu_tests.sh's two_gpus); rank r's stdout and stderr go to
# $WORK/logs/NAME.rank<r>.txt (the trainer silences the stdout of ranks > 0, so rank 0's file has the report).
# With --mpi: mpirun -np G, one file. Each process is killed after LIMIT seconds (a hung collective must not eat
# the call). Returns nonzero if any process failed; the first failure stops the other ranks.
launch() {
    local name=$1 g=$2 limit=$3; shift 3
    local log="$WORK/logs/$name" rdv="$WORK/rdv_$name" r rc=0
    local pids=() cmd
    if [ "$g" -eq 1 ]; then
        cmd=(timeout -k 10 "$limit" "$BIN" "$@")
        show_or_run "$log.rank0.txt" "${cmd[@]}"; return
    fi
    if [ $USE_MPI = 1 ]; then
        cmd=(timeout -k 10 "$limit" mpirun --allow-run-as-root -np "$g" -x NCCL_NVLS_ENABLE "$BIN" "$@")
        show_or_run "$log.rank0.txt" "${cmd[@]}"; return
    fi
    rm -f "$rdv"
    for ((r = 0; r < g; r++)); do
        cmd=(env "RANK=$r" "WORLD_SIZE=$g" "LOCAL_RANK=$r" "MAMBA2_RENDEZVOUS=file:$rdv" timeout -k 10 "$limit" "$BIN" "$@")
        if [ $DRY = 1 ]; then
            echo "    ${cmd[*]} > $log.rank$r.txt 2>&1 &"
        else
            "${cmd[@]}" > "$log.rank$r.txt" 2>&1 &
            pids+=($!)
        fi
    done
    # as each rank ends: if one failed, stop the others (they would wait in NCCL until their timeout)
    for ((r = 0; r < g; r++)); do
        wait -n && continue
        rc=1
        kill -TERM "${pids[@]}" 2> /dev/null
    done
    rm -f "$rdv"
    return $rc
}
show_or_run() { # show_or_run LOGFILE CMD...
    local logf=$1; shift
    if [ $DRY = 1 ]; then echo "    $* > $logf 2>&1"; return 0; fi
    "$@" > "$logf" 2>&1
}

# refresh $OUT: the summary (text and markdown) and one tarball of every log
publish() {
    [ $DRY = 1 ] && return
    python3 dev/scaling_report.py "$WORK" --markdown "$OUT/summary.md" > "$OUT/summary.txt" 2>&1
    tar czf "$OUT/scaling_logs.tar.gz.tmp" -C "$WORK" plan.tsv logs && mv "$OUT/scaling_logs.tar.gz.tmp" "$OUT/scaling_logs.tar.gz"
}
progress() { echo "[$(printf '%3d' $SECONDS) s] $*" | tee -a "$OUT/progress.txt"; }

# ---- the plan and the estimate ----------------------------------------------------------------------------------
[ $DRY = 1 ] || { mkdir -p "$OUT" "$WORK/logs"; : > "$OUT/progress.txt"; }
PLAN_TSV=/dev/null PLAN_TXT=/dev/null
[ $DRY = 1 ] || { PLAN_TSV=$WORK/plan.tsv; PLAN_TXT=$OUT/plan.txt; }
{
    total=$BUILD_S
    echo "== dev/run_scaling.sh: $NGPU GPUs (G in$GPUS), $([ $USE_MPI = 1 ] && echo mpirun || echo 'RANK/WORLD_SIZE + file rendezvous')$([ $QUICK = 1 ] && echo ', --quick'), logs in $WORK, summary in $OUT"
    echo "build + data: make -j train_mamba2cu; python3 data/prepare.py --quiet  (~${BUILD_S} s)"
    printf "name\tkind\tmodel\tgpus\tzero\tbatch\tseq\tsteps\tref\n" > "$PLAN_TSV"
    for entry in "${PLAN[@]}"; do
        read -r name kind model g z b t steps ref est _ <<< "${entry%%|*}"
        total=$((total + est))
        echo "== run $name ($kind): $model on $g GPU(s), ZeRO $z, B=$b T=$t, $steps steps, est ${est} s"
        # shellcheck disable=SC2046  # the trainer arguments are words without spaces: split on purpose
        [ $DRY = 1 ] && launch "$name" "$g" "$((2 * est + 60))" $(launch_args "$entry")
        [ "$ref" = - ] && ref=""
        printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$name" "$kind" "$model" "$g" "$z" "$b" "$t" "$steps" "$ref" \
            >> "$PLAN_TSV"
    done
    [ -n "$INIT_DIR" ] && echo "1.3B runs after the first start from its weights, $INIT_CKPT (-e 1.3b if it is missing)"
    echo "estimate: ${#PLAN[@]} runs, ~$total s in all (budget $BUDGET_S s: runs that would end later are skipped)"
} | tee "$PLAN_TXT"
[ $DRY = 1 ] && exit 0

# ---- build, data, machine ---------------------------------------------------------------------------------------
{ nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader; nvidia-smi topo -m; } > "$WORK/logs/machine.txt" 2>&1
head -"$NGPU" "$WORK/logs/machine.txt"
if [ "${SCALING_SKIP_BUILD:-0}" != 1 ]; then
    progress "building $BIN"
    make -j train_mamba2cu > "$WORK/logs/build.log" 2>&1 || { tail -30 "$WORK/logs/build.log"; publish; exit 1; }
    python3 data/prepare.py --quiet > "$WORK/logs/prepare.log" 2>&1 || { tail "$WORK/logs/prepare.log"; publish; exit 1; }
    progress "built; data ready"
fi

# ---- the runs ---------------------------------------------------------------------------------------------------
[ -n "$INIT_DIR" ] && trap 'rm -rf "$INIT_DIR"' EXIT
declare -A MEASURED   # model -> wall seconds of its last completed run (a better estimate than the static one)
for entry in "${PLAN[@]}"; do
    read -r name kind model g z b t steps ref est _ <<< "${entry%%|*}"
    [ -n "${MEASURED[$model]}" ] && est=$(( ${MEASURED[$model]} + (g > 1 ? 3 : 0) ))
    if [ $((SECONDS + est)) -gt "$BUDGET_S" ]; then
        echo "would end at ~$((SECONDS + est)) s, past the ${BUDGET_S} s budget" > "$WORK/logs/$name.skipped"
        progress "skip $name: would end at ~$((SECONDS + est)) s, past the budget"
        continue
    fi
    progress "run $name: $model on $g GPU(s), ZeRO $z (est $est s)"
    t0=$SECONDS
    # shellcheck disable=SC2046  # the trainer arguments are words without spaces: split on purpose
    launch "$name" "$g" "$((2 * est + 60))" $(launch_args "$entry") \
        || progress "  $name FAILED: see logs/$name.rank*.txt in the tarball"
    case "$entry" in   # the run that saves the 1.3B weights is no estimate for the runs that read them
        *" -o "*) ;;
        *) MEASURED[$model]=$((SECONDS - t0 - (g > 1 ? 3 : 0))); [ "${MEASURED[$model]}" -ge 1 ] || MEASURED[$model]=1 ;;
    esac
    publish
done
progress "done"
publish
echo
cat "$OUT/summary.txt"
python3 dev/scaling_report.py "$WORK" > /dev/null 2>&1   # exit status: 1 if a run is missing, failed or disagrees
