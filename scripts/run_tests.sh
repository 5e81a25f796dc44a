#!/bin/sh
# Runs every CPU test suite of mamba2.c and prints the combined "N passed, N failed".
# Each suite prints its own "N passed, N failed" as its last such line; a suite that crashes counts as a failure.
PYTHON=${PYTHON:-python3}
total_pass=0
total_fail=0
total_skip=0
run_suite() {
    name=$1
    shift
    echo "=================== $name: $*"
    out=$("$@" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    if [ -z "$line" ]; then
        echo "!! $name printed no 'N passed, N failed' line (exit $rc): counted as 1 failure"
        total_fail=$((total_fail + 1))
        return
    fi
    p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
    s=$(echo "$line" | sed -nE 's/.*, ([0-9]+) skipped.*/\1/p')
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    total_skip=$((total_skip + ${s:-0}))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "!! $name exited $rc with no failed check: counted as 1 failure"
        total_fail=$((total_fail + 1))
    fi
}
run_suite "SSD, finite differences (double)" ./test_mamba2_fd
run_suite "HF fixture, resume, bad input (float)" ./test_mamba2
run_suite "data loader" ./test_dataloader
run_suite "HF/mamba_ssm import-export, prefill, BPE encoder" ./test_interop
run_suite "torch .bin -> safetensors without torch" "$PYTHON" scripts/test_convert.py
run_suite "the converter's unpickler fuzzed (3000 mutated checkpoints, fixed seed)" "$PYTHON" dev/fuzz/fuzz_unpickler.py --cases 3000 --seed 1
run_suite "safetensors + json" ./test_safetensors
run_suite "data pipeline (python)" "$PYTHON" data/test_data.py
run_suite "MQAR generator: answers, masks, gap law, rows, determinism" "$PYTHON" data/test_mqar.py
run_suite "SSD tutorial: three forms, backward, finite differences" ./dev/ssd_tutorial --no-timing
run_suite "docs name only real functions, files, quotes" "$PYTHON" dev/test_docs.py
run_suite "paper scripts: plot, dry runs, sweep resume" "$PYTHON" scripts/test_scripts.py
run_suite "multi-GPU scaling script: dry runs, report" "$PYTHON" dev/test_scaling.py
run_suite "multi-GPU rendezvous without CUDA: local processes, torchrun / Slurm variables" ./test_rendezvous
# built with nvcc but needs no GPU (CI builds it before this script); skipped where it is missing or older than the
# model header it plans from
if [ -x dev/cuda/memory_plan_bin ] && [ dev/cuda/memory_plan_bin -nt llmc/model.cuh ]; then
    run_suite "GPU memory plan (no GPU): buffers == plan, -r 2 / -r 3 residual rules" ./dev/cuda/memory_plan_bin
else
    echo "=================== GPU memory plan: skipped (dev/cuda/memory_plan_bin missing or older than llmc/model.cuh)"
    total_skip=$((total_skip + 1))
fi
echo "==================="
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
