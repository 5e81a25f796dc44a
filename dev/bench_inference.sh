#!/bin/bash
# dev/bench_inference.sh: the inference measurement of /work/shared/ANCHORS.md on this GPU, against its anchors.
#
#   Mamba-2 130M with random weights (-e 130m; speed does not depend on the weights), bf16.
#   Decode: prompt 128 tokens, 256 new tokens, greedy; ms per decode step after the prefill and the first token,
#           median of 5 generations (generate_mamba2cu -r 5), batch 1, 16 and 64 (and batch 1 without CUDA graphs,
#           batch 1 without launch overlap (-L 0), batch 64 with the float SSM state (-S fp32); and the versions that
#           are not the default, with dev/cuda/decode_bin's knobs: batch 1 with the persistent step (-V 3) and its
#           2-blocks-per-SM variant (-V 3 -W 2), batch 64 with the v4 state kernel (-U 4, -U 5), batch 16, 32 and 64
#           with cuBLASLt (-M 0) and tensor-core (-M 1) projections: what each choice buys).
#   Evaluation: B=8, T=2048, forward + loss (eval_mamba2cu), tokens/s over the batches after the first.
#
#   dev/bench_inference.sh [BIN_DIR]      BIN_DIR holds generate_mamba2cu and eval_mamba2cu (default: .); they are
#                                         built there if missing, and dev/cuda/decode_bin too ($DECODE_BIN to use
#                                         another). Logs go to $LOGDIR (default /tmp/bench_inference).
set -u
BIN=${1:-.}
LOGDIR=${LOGDIR:-/tmp/bench_inference}
mkdir -p "$LOGDIR"
NVCC="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I. --expt-relaxed-constexpr"
for p in generate_mamba2cu eval_mamba2cu; do
    if [ ! -x "$BIN/$p" ]; then
        src=${p%cu}.cu
        echo "building $BIN/$p"
        $NVCC -o "$BIN/$p" "$src" -lcublas -lcublasLt -lnccl || { echo "build of $p failed" >&2; exit 1; }
    fi
done
DECODE_BIN=${DECODE_BIN:-dev/cuda/decode_bin}
if [ ! -x "$DECODE_BIN" ]; then
    echo "building $DECODE_BIN"
    $NVCC -o "$DECODE_BIN" dev/cuda/decode.cu -lcublas -lcublasLt -lnccl || { echo "build of decode_bin failed" >&2; exit 1; }
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'

ids=$(python3 -c "print(','.join(str((i * 7919 + 13) % 50277) for i in range(128)))")
decode_ms() { # batch, graph flag, [more flags] -> median ms/step (generate_mamba2cu: the default path)
    local b=$1 g=$2 log
    shift 2
    log="$LOGDIR/gen_b${b}_g${g}$(echo "$@" | tr -d ' -').log"
    "$BIN/generate_mamba2cu" -e 130m -I "$ids" -b "$b" -G "$g" "$@" -n 256 -t 0 -r 5 -q 2>"$log"
    grep -o 'median [0-9.]* ms/step' "$log" | awk '{print $2}'
}
lab_ms() { # batch, graph flag, [lab flags] -> median ms/step (dev/cuda/decode_bin: the versions, by their knobs)
    local b=$1 g=$2 log
    shift 2
    log="$LOGDIR/lab_b${b}_g${g}$(echo "$@" | tr -d ' -').log"
    "$DECODE_BIN" -e 130m -I "$ids" -b "$b" -G "$g" "$@" -n 256 -t 0 -r 5 -q 2>"$log"
    grep -o 'median [0-9.]* ms/step' "$log" | awk '{print $2}'
}
declare -A MS
for b in 1 16 32 64; do MS[$b]=$(decode_ms "$b" 1); done
MS_NOGRAPH=$(decode_ms 1 0)
MS_NOPDL=$(decode_ms 1 1 -L 0)
MS_V3=$(lab_ms 1 1 -V 3)
MS_W2=$(lab_ms 1 1 -V 3 -W 2)
MS_F32STATE=$(decode_ms 64 1 -S fp32)
declare -A MS_M0 MS_M1
for b in 16 32 64; do MS_M0[$b]=$(lab_ms "$b" 1 -M 0); MS_M1[$b]=$(lab_ms "$b" 1 -M 1); done
MS_U4=$(lab_ms 64 1 -U 4)
MS_U5=$(lab_ms 64 1 -U 5)
MS_LAB64=$(lab_ms 64 1) # the lab copy at its defaults: the same kernels as generate_mamba2cu

python3 - "$LOGDIR/bench_val_000000.bin" <<'PY'
import random, struct, sys
n = 8 * 2048 * 6 + 1
rng = random.Random(1)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<256i", 20240520, 1, n, *([0] * 253)))
    f.write(struct.pack("<%dH" % n, *[rng.randrange(50277) for _ in range(n)]))
PY
"$BIN/eval_mamba2cu" -e 130m -i "$LOGDIR/bench_val_*.bin" -b 8 -t 2048 -m 6 >"$LOGDIR/eval.log" 2>&1
EVAL=$(grep -o '[0-9]* tokens/s after the first' "$LOGDIR/eval.log" | awk '{print $1}')

tps() { python3 -c "import sys; b, ms = float(sys.argv[1]), sys.argv[2]; print('%.0f' % (b * 1000 / float(ms)) if ms else '-')" "$1" "$2"; }
echo
echo "| figure (Mamba-2 130M, bf16) | mamba2.c | anchor (mamba_ssm, CUDA graphs) | target |"
echo "| --- | --- | --- | --- |"
echo "| decode batch 1, ms/token | ${MS[1]:-fail} | 0.658 | <= 0.2 |"
echo "| decode batch 1 without graphs, ms/token | ${MS_NOGRAPH:-fail} | 18-25 (no graphs) | - |"
echo "| decode batch 1 without launch overlap (-L 0), ms/token | ${MS_NOPDL:-fail} | - | - |"
echo "| decode batch 1, persistent step: all layers in one kernel (-V 3), ms/token | ${MS_V3:-fail} | - | - |"
echo "| decode batch 1, persistent step, 2 blocks/SM (-V 3 -W 2), ms/token | ${MS_W2:-fail} | - | - |"
echo "| decode batch 16, tokens/s | $(tps 16 "${MS[16]:-}") (${MS[16]:-fail} ms/step) | 18,763 | - |"
echo "| decode batch 32, tokens/s | $(tps 32 "${MS[32]:-}") (${MS[32]:-fail} ms/step) | - | - |"
echo "| decode batch 64, tokens/s | $(tps 64 "${MS[64]:-}") (${MS[64]:-fail} ms/step) | 47,035 | >= 100,000 |"
echo "| decode batch 64 with the fp32 state (-S fp32), tokens/s | $(tps 64 "${MS_F32STATE:-}") (${MS_F32STATE:-fail} ms/step) | - | - |"
echo "| decode batch 64, dev/cuda/decode_bin at its defaults (= the default path), tokens/s | $(tps 64 "${MS_LAB64:-}") (${MS_LAB64:-fail} ms/step) | - | - |"
echo "| decode batch 64 with the v4 state kernel (-U 4), tokens/s | $(tps 64 "${MS_U4:-}") (${MS_U4:-fail} ms/step) | - | - |"
echo "| decode batch 64, v4 state kernel without early launch (-U 5), tokens/s | $(tps 64 "${MS_U5:-}") (${MS_U5:-fail} ms/step) | - | - |"
for b in 16 32 64; do
    echo "| decode batch $b, cuBLASLt projections (-M 0) / tensor-core (-M 1), tokens/s | $(tps $b "${MS_M0[$b]:-}") / $(tps $b "${MS_M1[$b]:-}") (${MS_M0[$b]:-fail} / ${MS_M1[$b]:-fail} ms/step) | - | - |"
done
echo "| evaluation B=8 T=2048, tokens/s | ${EVAL:-fail} | 316,000-415,000 | >= 1,000,000 |"
echo "logs: $LOGDIR"
