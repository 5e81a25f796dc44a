#!/bin/bash
# Long context on one GPU (issue #24): the 130M model trained at sequence lengths from 2K to 1M tokens in each
# recompute mode (-r 0: every layer's activations kept; -r 1: conv and gated-norm outputs recomputed; -r 2: only each
# layer's input kept, the whole layer recomputed in the backward; -r 3: -r 2 with the residual stream's checkpoints
# and block outputs in pinned host memory), one table row per run: tokens/s (median step after the warm-up, bf16),
# the trainer's own allocation (its peak: allocations are made once), the device memory in use (with the CUDA
# context and cuBLAS) and the activations per token on the GPU (-r 3: its host memory in the note). A run that does
# not fit is refused by the trainer before it allocates anything (its memory plan, printed at start-up, is exact),
# and the row says so.
#   B = 16384 / T for T < 16K (the same tokens a step), B = 1 from 16K on.
# Usage (GPU machine, after `make train_mamba2cu` and the default corpus, data/prepare.py):
#   bash dev/run_long_context.sh                      every T of the list, modes 0 1 2
#   bash dev/run_long_context.sh "131072 262144" "2 3"  some T, some modes (one device call holds ~10 minutes)
# Logs of every run go to $OUT (default ./long_context_out).
set -o pipefail
OUT=${OUT:-long_context_out}
mkdir -p "$OUT"
TS=${1:-"2048 8192 32768 131072 262144 524288 1048576"}
MODES=${2:-"0 1 2"}
STEPS=${STEPS:-4}
TRAIN=${TRAIN:-./train_mamba2cu}
[ -x "$TRAIN" ] || { echo "build the trainer first: make train_mamba2cu"; exit 1; }
[ -f data/stdlib/tokenizer.bin ] || python3 data/prepare.py --quiet > "$OUT/prepare.log" 2>&1 || \
    { tail "$OUT/prepare.log"; exit 1; }
gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)
echo "== long context: Mamba-2 130M, bf16, $gpu"
printf "%9s %4s %3s %12s %12s %12s %12s  %s\n" T B "-r" "tokens/s" "trainer GiB" "in use GiB" "KiB/token" "note"
for T in $TS; do
    B=$(( T < 16384 ? 16384 / T : 1 ))
    for r in $MODES; do
        log="$OUT/T${T}_r${r}.log"
        "$TRAIN" -e 130m -b "$B" -t "$T" -x "$STEPS" -v 0 -s 0 -l 1e-3 -u 1 -r "$r" -p 1 > "$log" 2>&1
        rc=$?
        act=$(sed -n 's/^activations: \([0-9.]*\) GiB.*/\1/p' "$log" | head -1)
        kib=$(awk -v a="$act" -v n="$((B * T))" 'BEGIN { if (a != "") printf "%.1f", a * 1048576 / n }')
        if [ $rc -eq 0 ]; then
            tps=$(sed -n 's/^tokens\/s *\([0-9]*\).*/\1/p' "$log" | head -1)
            mine=$(sed -n 's/^GPU memory *\([0-9.]*\) GiB allocated.*/\1/p' "$log" | head -1)
            used=$(sed -n 's/^GPU memory.*; \([0-9.]*\) GiB in use.*/\1/p' "$log" | head -1)
            host=$(sed -n 's/^memory plan: + \([0-9.]*\) GiB of pinned host memory.*/\1/p' "$log" | head -1)
            printf "%9s %4s %3s %12s %12s %12s %12s  %s\n" "$T" "$B" "$r" "$tps" "$mine" "$used" "$kib" \
                "${host:++ $host GiB of host memory}"
        elif grep -q "this run needs about" "$log"; then
            need=$(sed -n 's/.*needs about \([0-9.]*\) GiB.*/\1/p' "$log" | head -1)
            printf "%9s %4s %3s %12s %12s %12s %12s  %s\n" "$T" "$B" "$r" "-" "-" "-" "-" \
                "does not fit: the plan needs $need GiB"
        else
            printf "%9s %4s %3s %12s %12s %12s %12s  %s\n" "$T" "$B" "$r" "-" "-" "-" "-" \
                "FAILED (exit $rc): $(grep -m1 -i "error" "$log" | cut -c1-80)"
        fi
    done
done
