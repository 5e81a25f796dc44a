#!/bin/bash
# Before/after check of a change that must not change what the GPU programs compute (GPU machine):
#
#   bash dev/compare_builds.sh build BEFORE_TREE     build both trees' GPU programs in parallel (make -j)
#   bash dev/compare_builds.sh test BEFORE_TREE      make test_cu in each tree (the same checks must pass), and the
#                                                    130M trainer of each for 30 steps: main.log bitwise equal
#   bash dev/compare_builds.sh bench BEFORE_TREE     make bench's trainer run of each, twice, interleaved
#   bash dev/compare_builds.sh sass BEFORE_TREE      dev/cuda/compare_sass.sh on the two trainers (bf16, fp32)
#
# BEFORE_TREE is a checkout of the old commit (git archive OLD | tar -x -C DIR). Logs go to $OUT (or ./cmp_out).
# The data: the default corpus (byte tokens), made in this tree if missing.
# The modes are separate so that each fits one device call; run them in this order on one warm machine.
# (dev/cuda/compare_sass.sh compares cubins without cuobjdump too, so the sass mode also runs where nvcc is.)
set -o pipefail
MODE=${1:?usage: bash dev/compare_builds.sh build|test|bench BEFORE_TREE}
BEFORE=${2:?the old tree}
OUT=${OUT:-cmp_out}
mkdir -p "$OUT"
AFTER=$(pwd)
GPU_PROGRAMS="train_mamba2 train_mamba2cu train_mamba2cu_fp32 test_mamba2cu test_mamba2cu_fp32 test_generate \
test_generate_fp32 dev/cuda/wgmma_check_bin"
AFTER_ONLY=${AFTER_ONLY:-}   # more targets of this tree, e.g. the new programs

case "$MODE" in
build)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
    (cd "$BEFORE" && make -j8 NO_USE_MPI=1 $GPU_PROGRAMS > "$OUT/build_before.log" 2>&1; echo "before: rc $?") &
    make -j8 NO_USE_MPI=1 $GPU_PROGRAMS $AFTER_ONLY > "$OUT/build_after.log" 2>&1; echo "after: rc $?"
    wait
    ;;
test)
    for side in before after; do
        dir=$BEFORE; [ $side = after ] && dir=$AFTER
        echo "== make test_cu ($side)"
        (cd "$dir" && make NO_USE_MPI=1 test_cu 2>&1) > "$OUT/test_cu_$side.log"; echo "rc $?"
        grep -E "passed, [0-9]+ failed|FAIL" "$OUT/test_cu_$side.log"
    done
    [ -f data/stdlib/tokenizer.bin ] || python3 data/prepare.py --quiet > "$OUT/prepare.log" 2>&1
    echo "== the 130M trainer (byte vocabulary), 30 steps, each build: main.log"
    for side in before after; do
        dir=$BEFORE; [ $side = after ] && dir=$AFTER
        rm -rf "/tmp/cmp_$side"
        (cd "$dir" && ./train_mamba2cu -e 130m,vocab=257 -b 4 -t 1024 -x 30 -v 10 -m 2 -s 0 -l 1e-3 -u 5 \
            -i "$AFTER/data/stdlib/stdlib_train_*.bin" -j "$AFTER/data/stdlib/stdlib_val_*.bin" -o "/tmp/cmp_$side" > "$OUT/train_$side.log" 2>&1)
        echo "$side: rc $?"
    done
    if cmp -s /tmp/cmp_before/main.log /tmp/cmp_after/main.log; then
        echo "main.log bitwise equal ($(wc -l < /tmp/cmp_after/main.log) lines)"
    else
        echo "main.log DIFFERS"; diff /tmp/cmp_before/main.log /tmp/cmp_after/main.log | head
    fi
    ;;
bench)
    for round in 1 2; do
        for side in before after; do
            dir=$BEFORE; [ $side = after ] && dir=$AFTER
            printf "%s round %d: " $side $round
            (cd "$dir" && ./train_mamba2cu -e 130m -b 8 -t 2048 -x 20 -v 0 -s 0 -l 1e-3 -u 5 -p 1 \
                -i "$AFTER/data/stdlib/stdlib_train_*.bin" -j none 2>&1) > "$OUT/bench_${side}_$round.log"
            grep -E "^tokens/s" "$OUT/bench_${side}_$round.log" | tr '\n' ' '
            grep -E "GPU memory" "$OUT/bench_${side}_$round.log" | cut -c1-60
        done
    done
    ;;
sass)
    for prog in train_mamba2cu train_mamba2cu_fp32; do
        echo "== $prog"
        bash dev/cuda/compare_sass.sh "$BEFORE/$prog" "$AFTER/$prog" > "$OUT/sass_$prog.txt" 2>&1; echo "rc $?"
        tail -n 12 "$OUT/sass_$prog.txt"
    done
    ;;
*)
    echo "unknown mode $MODE"; exit 2
    ;;
esac
