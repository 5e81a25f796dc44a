#!/usr/bin/env bash
# dev/run_hybrid_reference.sh: issue 25's acceptance check in one go, on the GPU machine, from the repository root.
# A float64 torch model of mamba_ssm's hybrid blocks (dev/hybrid_reference.py) against the CPU trainer, the GPU fp32
# build (1e-5) and the GPU bf16 build (test_hybrid.cu's packed-batch bounds: 6e-2, 1.2e-1 for d A_log and d dt_bias),
# on the four small hybrids of ./test_interop --dump-hybrid (logits, loss, every gradient; one model with packed
# documents and masked targets). Then the injected bug (interleaved rotary pairs) against both GPU builds: it
# must be caught.
#
#   bash dev/run_hybrid_reference.sh [DIR]      DIR: where the dump goes (default /tmp/hybrid_reference; replaced)
#   PYTHON=...        the python3 with torch (default python3)
#   TORCH_DEVICE=...  where torch runs its float64 model (default: cuda if that torch sees a GPU, else cpu)
#   DEV_GPU_ARCHS=... the dev/cuda programs' architectures (the Makefile's default: 90a, Hopper)
#
# Prints each check's `N passed, N failed` and a summary; exits 1 if an expected pass failed, the injected bug
# passed, or a step could not run. Without torch on the GPU machine it stops after the GPU programs: DIR then holds
# every file the torch side reads, so copy it to a machine with torch (the CPU is enough) and run
# dev/hybrid_reference.py there.
set -u
cd "$(dirname "$0")/.." || exit 1
DIR=${1:-/tmp/hybrid_reference}
PY=${PYTHON:-python3}
failed=0
summary=""
note() { summary="$summary$1"$'\n'; }

echo "== build: test_interop (CPU), dev/cuda/hybrid_dump_fp32_bin, dev/cuda/hybrid_dump_bin"
if ! make -s -j3 test_interop dev/cuda/hybrid_dump_fp32_bin dev/cuda/hybrid_dump_bin; then
    echo "run_hybrid_reference: the build failed (above)"; exit 1
fi

echo "== dump: ./test_interop --dump-hybrid $DIR"
rm -rf "$DIR"
if ! ./test_interop --dump-hybrid "$DIR"; then echo "run_hybrid_reference: the dump failed"; exit 1; fi
for prog in hybrid_dump_fp32_bin hybrid_dump_bin; do
    echo "== GPU: ./dev/cuda/$prog $DIR"
    if ! "./dev/cuda/$prog" "$DIR"; then
        failed=1; note "FAILED: ./dev/cuda/$prog $DIR did not run through (above)"
    fi
done

if ! "$PY" -c "import torch" 2>/dev/null; then
    # the GPU files are made: the torch side can run on any machine with torch (CPU is enough) from a copy of DIR
    echo "run_hybrid_reference: $PY cannot import torch: set PYTHON to a python3 that has it, or copy $DIR to a"
    echo "  machine with torch and run there: python3 dev/hybrid_reference.py DIR --ours cpu|gpu_fp32|gpu_bf16"
    exit 1
fi
DEVICE=${TORCH_DEVICE:-$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}

# one check: the reference script's own last line ("N passed, N failed"); want = pass (exit 0) or fail (exit 1 with
# failures: the check ran and caught the bug; a crash, exit 2, is no catch)
check() {
    local want=$1 label=$2; shift 2
    echo "== torch ($DEVICE): $PY dev/hybrid_reference.py $DIR $* (expect: $want)"
    local out rc
    out=$("$PY" dev/hybrid_reference.py "$DIR" --device "$DEVICE" "$@" 2>&1)
    rc=$?
    echo "$out"
    local counts
    counts=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
    [ -n "$counts" ] || counts="no result line"
    if { [ "$want" = pass ] && [ $rc -eq 0 ]; } || { [ "$want" = fail ] && [ $rc -eq 1 ] && ! echo "$counts" | grep -q ' 0 failed'; }; then
        note "ok      $label: $counts (expected: $want)"
    else
        failed=1
        note "FAILED  $label: $counts, exit $rc (expected: $want)"
    fi
}
check pass "torch vs CPU trainer         " --ours cpu
check pass "torch vs GPU fp32 build      " --ours gpu_fp32
check pass "torch vs GPU bf16 build      " --ours gpu_bf16
check fail "injected bug vs GPU fp32     " --ours gpu_fp32 --inject-bug
check fail "injected bug vs GPU bf16     " --ours gpu_bf16 --inject-bug

echo "== summary"
printf "%s" "$summary"
[ $failed -eq 0 ] && echo "run_hybrid_reference: all as expected" || echo "run_hybrid_reference: FAILED"
exit $failed
