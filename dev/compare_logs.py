"""Compares the train-loss curves of the multi-GPU test runs (dev/run_multigpu_tests.sh): prints max relative
differences against the 1-GPU run with the same total batch, and PASS/FAIL against the stated tolerances."""
import sys

def losses(path, first=1):
    out = {}
    for line in open(path):
        if " trl:" in line:
            s = int(line.split()[0][2:])
            out[s] = float(line.split()[1][4:])
    return out

def rel(a, b, steps):
    return max(abs(a[s] - b[s]) / abs(b[s]) for s in steps)

root = sys.argv[1]
fails = 0
for binary, tol in (("train_mamba2cu_fp32", 1e-4), ("train_mamba2cu", 3e-2)):
    p = f"{root}/{binary}"
    try:
        one = losses(f"{p}.1gpu/main.log")
        for name in ("2gpu", "2gpu_zero"):
            two = losses(f"{p}.{name}/main.log")
            r = rel(two, one, range(1, 21))
            ok = r <= tol and len(two) == 20
            fails += not ok
            print(f"{'PASS' if ok else 'FAIL'} {binary}: {name} vs 1 GPU (accumulation 2), 20 steps: max rel diff {r:.2e} (tol {tol:g})")
        res = losses(f"{p}.resume1/main.log")
        two = losses(f"{p}.2gpu_zero/main.log")
        r = rel(res, two, range(11, 21))
        ok = r <= tol and all(s in res for s in range(11, 21))
        fails += not ok
        print(f"{'PASS' if ok else 'FAIL'} {binary}: saved on 2 GPUs (ZeRO-1) at step 10, resumed on 1 GPU: steps 11-20 max rel diff {r:.2e} (tol {tol:g})")
        print(f"     steps 1/10/20: 1 GPU {one[1]:.6f} {one[10]:.6f} {one[20]:.6f} | 2 GPUs {two[1]:.6f} {two[10]:.6f} {two[20]:.6f}")
    except (OSError, KeyError, ValueError) as e:
        fails += 1
        print(f"FAIL {binary}: missing or short log ({e})")
print(f"{fails} comparisons failed")
