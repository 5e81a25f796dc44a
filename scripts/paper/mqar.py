#!/usr/bin/env python3
"""
scripts/paper/mqar.py: the Mamba-2 paper's Figure 8 (multi-query associative recall) as one command.

    python3 scripts/paper/mqar.py grid --dry-run                   # every command and the planned GPU minutes
    python3 scripts/paper/mqar.py grid --seq-lens 256 --jobs 3 --budget-minutes 9   # one T in one 10-minute call
    python3 scripts/paper/mqar.py collect log_mqar --out doc/mqar/fig8             # table (CSV, markdown), plot

The grid: 2-layer models, d_model 32/64/128/256, Mamba-2 with d_state 16/64/256 and attention, at T = 256, 512,
1024, each at every learning rate of --lrs; a run trains on data/mqar.py's training mixture (T/32 .. T/4 pairs)
with the loss on the answers only (-M 1), then ./eval_mamba2cu -M 1 measures its accuracy (argmax == answer) on the
held-out test examples of every pair count. A point of the figure is the best accuracy over the learning rates, as
in Zoology's sweeps. doc/paper.md says what differs from the paper.

A run lives in <out>/T<T>/<model>_d<d>_lr<lr>/: main.log, train.out, eval.out, run.json (the plan) and result.json
(written last: a run with one is done and skipped when the command runs again; a run without one starts over).
--budget-minutes starts only runs planned to end in time (planned_wall: from the finished runs of the same model
where there are) and kills a run still going at its end.
Data that is missing is generated first (data/mqar.py, deterministic, ~10-30 s per T with 16 cores). Models the GPU
trainer cannot run (d_state 256 today: scripts/paper/models.py says why) are listed as skipped, not run.
"""

import argparse
import concurrent.futures
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "data"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import models  # noqa: E402
import plot_paper  # noqa: E402  (scripts/plot_paper.py: parsing, tables, plots)


def load_generator():
    """data/mqar.py by its path (this file has the same name, so a plain import could find the wrong one)"""
    import importlib.util
    spec = importlib.util.spec_from_file_location("mqar_data", os.path.join(ROOT, "data", "mqar.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mqar_data"] = mod  # its worker processes find make_block by this name
    spec.loader.exec_module(mod)
    return mod


mqar_data = load_generator()

VOCAB = 8192
N_LAYER = 2
SEQ_LENS = [256, 512, 1024]
D_MODELS = [32, 64, 128, 256]
STATES = [16, 64, 256]
LRS = [1e-3, 3e-3, 1e-2]
TOKENS_PER_STEP = 32768       # B x T: 128 rows of 256, 64 of 512, 32 of 1024
STEPS = 2000                  # 65.5M tokens a run: each training example seen once (train set = STEPS x B examples)
WARMUP_FRACTION = 0.05
WEIGHT_DECAY = 0.01           # Zoology's trainer: torch AdamW's default
TEST_PER_COUNT = 1000         # held-out examples per pair count (Zoology's test sets: 1000 per slice)
VAL_PER_COUNT = 200
EVAL_ROWS = 50                # eval batch rows: divides TEST_PER_COUNT, so every test example is read

# Planning: step time = max(STEP_FLOOR_S, tokens per step / tokens/s), plus a fixed start-up and eval cost per run.
# Measured on one H100 80GB HBM3 (2026-12-07, release build, B x T = 128 x 256 and 32 x 1024, 200 steps alone on
# the GPU): Mamba-2 d_model 32 (N 16) 2.8 ms a step, d_model 256 (N 128) 4.9-5.0 ms, attention d_model 256 3.2-3.7
# ms. The 2-layer models are launch-bound: the step time barely depends on T. Runs side by side (--jobs J) share
# the GPU: 4 at once took 70 s each for 6000 steps, about 1.2x the throughput of one at a time.
STEP_FLOOR_S = 0.0028
GUESS_TOKENS_PER_S = {32: 11.5e6, 64: 11e6, 128: 9e6, 256: 6.6e6}
RUN_OVERHEAD_S = 5.0
JOBS_SPEEDUP = 1.2            # throughput of --jobs > 1 over one run at a time (measured with 4, above)

ACC_RE = re.compile(r"accuracy ([0-9.]+) over (\d+) targets")


def mamba_headdim(d_model):
    """a Mamba-2 head size giving >= 4 heads (an even count: the GPU trainer's rule), at most 64"""
    return min(64, 2 * d_model // 4)


def model_list(d_models, states, kinds=("attention", "mamba2")):
    """[(name, kind, d_model, d_state)]: attention first, then Mamba-2 by state size"""
    out = []
    for d in d_models:
        if "attention" in kinds:
            out.append((f"attention_d{d}", "attention", d, None))
        for n in states if "mamba2" in kinds else []:
            out.append((f"mamba2_N{n}_d{d}", "mamba2", d, n))
    return out


def fmt_lr(lr):
    return f"{lr:.0e}".replace("e-0", "e-")


def plan_runs(a):
    """every run of the grid: dicts with the trainer and eval commands, or a 'skipped' reason"""
    runs = []
    for T in a.seq_lens:
        if a.tokens_per_step % T:
            sys.exit(f"error: --tokens-per-step {a.tokens_per_step} is not a multiple of T = {T}")
        B = a.tokens_per_step // T
        data = os.path.join(a.data, f"T{T}")
        for name, kind, d, n in model_list(a.d_models, a.states, a.models):
            for lr in a.lrs:
                run = dict(T=T, B=B, name=name, kind=kind, d_model=d, d_state=n, lr=lr, steps=a.steps,
                           dir=os.path.join(a.out, f"T{T}", f"{name}_lr{fmt_lr(lr)}"), data=data)
                try:
                    spec, desc = models.model_spec(kind, d, N_LAYER, VOCAB, d_state=n or 16,
                                                   headdim=mamba_headdim(d), chunk=64, gpu=a.gpu_rules)
                except models.Unsupported as e:
                    run["skipped"] = str(e)
                    runs.append(run)
                    continue
                run.update(model_arg=spec, params=desc["params"], pattern=desc["pattern"],
                           flops_per_token=models.flops_per_token(desc, T))
                run["train_cmd"] = [
                    a.trainer, "-i", os.path.join(data, "mqar_train_*.bin"),
                    "-j", os.path.join(data, "mqar_val_*.bin"), "-o", run["dir"], "-e", spec,
                    "-b", str(B), "-t", str(T), "-d", str(B * T), "-l", f"{lr:g}",
                    "-u", str(max(1, int(a.steps * WARMUP_FRACTION))), "-q", "0", "-c", str(WEIGHT_DECAY),
                    "-a", "1.0", "-x", str(a.steps), "-v", str(max(1, a.steps // 5)),
                    "-m", str(max(1, min(4, 4 * VAL_PER_COUNT // B))), "-s", "0", "-n", str(a.steps),
                    "-M", "1", "-S", str(a.seed), "-w", "1"]
                run["eval_cmd"] = [
                    a.evaluator, "-e", os.path.join(run["dir"], f"ckpt_{a.steps:08d}.bin"),
                    "-i", os.path.join(data, "mqar_test_kv*_*.bin"), "-b", str(EVAL_ROWS), "-t", str(T), "-M", "1"]
                if a.per_slice:  # one more eval per pair count: its shard alone
                    run["slice_cmds"] = {
                        kv: run["eval_cmd"][:4] + [os.path.join(data, f"mqar_test_kv{kv}_000000.bin")] +
                        run["eval_cmd"][5:] for kv in kv_counts(T)}
                runs.append(run)
    return runs


def planned_seconds(run):
    tps = GUESS_TOKENS_PER_S.get(run["d_model"], min(GUESS_TOKENS_PER_S.values()))
    return RUN_OVERHEAD_S + run["steps"] * max(STEP_FLOOR_S, run["B"] * run["T"] / tps)


def jobs_factor(jobs):
    """how much longer a run takes beside jobs - 1 others than alone: its share of the GPU is JOBS_SPEEDUP / jobs"""
    return jobs / JOBS_SPEEDUP if jobs > 1 else 1.0


def finished(run):
    """a run is done when its result.json exists (written last)"""
    return os.path.exists(os.path.join(run["dir"], "result.json"))


def measured_walls(out):
    """{(model name, T): [(seconds, steps, jobs or None)]}: train + eval wall time of every finished run under out"""
    walls = {}
    for res_path in glob.glob(os.path.join(out, "T*", "*", "result.json")):
        try:
            with open(res_path) as f:
                res = json.load(f)
            with open(os.path.join(os.path.dirname(res_path), "run.json")) as f:
                run = json.load(f)
            walls.setdefault((run["name"], run["T"]), []).append(
                (res["train_s"] + res.get("eval_s", 0.0), run["steps"], res.get("jobs")))
        except (OSError, ValueError, KeyError):
            continue
    return walls


def planned_wall(run, jobs, walls):
    """the seconds a run should take beside jobs - 1 others: from the finished runs of the same model (any LR) at its
    T; else extrapolated linearly in T from the two nearest other T's (attention with heads of 32 runs the simple
    kernels, whose time grows with T; the rest are launch-bound and flat), never below either; else from one other T;
    else the guess. A measured time is scaled by steps and by jobs (a run without 'jobs' in its result.json is taken
    as run with the same --jobs)."""
    by_T = {}
    for (name, T), v in walls.items():
        if name == run["name"]:
            by_T[T] = max(sec * run["steps"] / steps * jobs_factor(jobs) / jobs_factor(j or jobs)
                          for sec, steps, j in v)
    T = run["T"]
    if T in by_T:
        return by_T[T]
    if len(by_T) >= 2:
        (t1, s1), (t2, s2) = sorted(by_T.items(), key=lambda kv: abs(kv[0] - T))[:2]
        return max(s1, s2, s1 + (s2 - s1) * (T - t1) / (t2 - t1))
    if by_T:
        return next(iter(by_T.values()))
    return planned_seconds(run) * jobs_factor(jobs)


def print_plan(runs, a):
    todo = [r for r in runs if "skipped" not in r]
    skipped = [r for r in runs if "skipped" in r]
    print(f"MQAR grid: {len(todo)} runs ({len(skipped)} skipped), {a.steps} steps of {a.tokens_per_step} tokens "
          f"({a.steps * a.tokens_per_step / 1e6:.1f}M tokens a run), LRs {', '.join(fmt_lr(x) for x in a.lrs)}, "
          f"output {a.out}")
    walls = measured_walls(a.out)
    for T in a.seq_lens:
        rs = [r for r in todo if r["T"] == T]
        left = [r for r in rs if not finished(r)]
        w = [planned_wall(r, a.jobs, walls) for r in left]
        sec = max([sum(w) / a.jobs] + w)  # the longest run bounds it from below when few are left
        ex = train_per_count(a, T)
        print(f"  T={T}: {len(rs)} runs ({len(rs) - len(left)} finished), B={a.tokens_per_step // T}, train set {ex} "
              f"examples per pair count {kv_counts(T)} ({a.epochs} epoch{'s' if a.epochs > 1 else ''}), the "
              f"{len(left)} left planned {sec / 60:.1f} min with --jobs "
              f"{a.jobs} (from the finished runs under {a.out} where there are, else the guess of GUESS_TOKENS_PER_S)")
    reasons = {}
    for r in skipped:
        reasons.setdefault(r["skipped"], set()).add(r["name"])
    for why, names in reasons.items():
        print(f"  skipped {', '.join(sorted(names))} (every T and LR): {why}")
    if a.dry_run:
        for r in todo:
            print("  " + shlex.join(r["train_cmd"]))
            print("  " + shlex.join(r["eval_cmd"]))
            for cmd in r.get("slice_cmds", {}).values():
                print("  " + shlex.join(cmd))


def kv_counts(T):
    return mqar_data.default_kv_pairs(T)


def train_per_count(a, T):
    """training examples per pair count: the steps' examples (steps x B) over the epochs, split among the counts"""
    return a.steps * (a.tokens_per_step // T) // a.epochs // len(kv_counts(T))


def ensure_data(a, T):
    d = os.path.join(a.data, f"T{T}")
    per = train_per_count(a, T)
    want = dict(seq_len=T, vocab=VOCAB, seed=a.data_seed, train_per_count=per, val_per_count=VAL_PER_COUNT,
                test_per_count=TEST_PER_COUNT, version=mqar_data.GENERATOR_VERSION)
    meta_path = os.path.join(d, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if all(meta.get(k) == v for k, v in want.items()):
            return
        print(f"{d}: built with other parameters: building again", flush=True)
    t0 = time.time()
    mqar_data.build(d, T, VOCAB, None, per, VAL_PER_COUNT, TEST_PER_COUNT, a.data_seed, workers=a.workers)
    print(f"{d}: built in {time.time() - t0:.0f} s", flush=True)


STOPPED = "stopped at the budget's end"


def run_capped(cmd, deadline, **kw):
    """subprocess.run, killed at the deadline (time.time() seconds; None: no limit)"""
    timeout = None if deadline is None else max(1.0, deadline - time.time())
    return subprocess.run(cmd, timeout=timeout, **kw)


def run_one(r, keep_ckpt, jobs=1, deadline=None):
    """train, then evaluate; writes result.json last. Returns (run, result or error text). A run still going at the
    deadline is killed and returns STOPPED, without result.json: the next call starts it over."""
    try:
        return run_one_capped(r, keep_ckpt, jobs, deadline)
    except subprocess.TimeoutExpired:
        for c in glob.glob(os.path.join(r["dir"], "ckpt_*.bin")):
            os.remove(c)
        return r, STOPPED


def run_one_capped(r, keep_ckpt, jobs, deadline):
    os.makedirs(r["dir"], exist_ok=True)
    record = {k: v for k, v in r.items() if k not in ("skipped",)}
    with open(os.path.join(r["dir"], "run.json"), "w") as f:
        json.dump(dict(record, label=r["name"]), f, indent=1)
    t0 = time.time()
    with open(os.path.join(r["dir"], "train.out"), "w") as out:
        p = run_capped(r["train_cmd"], deadline, stdout=out, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        return r, f"trainer exit {p.returncode} (see {r['dir']}/train.out)"
    t1 = time.time()
    p = run_capped(r["eval_cmd"], deadline, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with open(os.path.join(r["dir"], "eval.out"), "w") as f:
        f.write(p.stdout)
    m = ACC_RE.search(p.stdout)
    if p.returncode != 0 or not m:
        return r, f"eval exit {p.returncode}, no 'accuracy X over N targets' line (see {r['dir']}/eval.out)"
    res = dict(accuracy=float(m.group(1)), targets=int(m.group(2)), train_s=round(t1 - t0, 1), jobs=jobs)
    for kv, cmd in r.get("slice_cmds", {}).items():
        p = run_capped(cmd, deadline, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with open(os.path.join(r["dir"], "eval.out"), "a") as f:
            f.write(f"\n== test slice K={kv}: {shlex.join(cmd)}\n" + p.stdout)
        m = ACC_RE.search(p.stdout)
        if p.returncode != 0 or not m:
            return r, f"eval of slice K={kv}: exit {p.returncode}, no accuracy line (see {r['dir']}/eval.out)"
        res[f"acc_kv{kv}"] = float(m.group(1))
    res["eval_s"] = round(time.time() - t1, 1)
    res.update(plot_paper.final_losses(os.path.join(r["dir"], "main.log")))
    if not keep_ckpt:
        for c in glob.glob(os.path.join(r["dir"], "ckpt_*.bin")):
            os.remove(c)
    with open(os.path.join(r["dir"], "result.json"), "w") as f:
        json.dump(res, f, indent=1)
    return r, res


def cmd_grid(a):
    runs = plan_runs(a)
    print_plan(runs, a)
    if a.dry_run:
        return
    for exe in (a.trainer, a.evaluator):
        if not os.access(exe, os.X_OK):
            sys.exit(f"error: {exe} not found or not executable: build it (make {os.path.basename(exe)})")
    deadline = time.time() + a.budget_minutes * 60 if a.budget_minutes else None
    todo = [r for r in runs if "skipped" not in r]
    queue = [r for r in todo if not finished(r)]
    if len(queue) < len(todo):
        print(f"{len(todo) - len(queue)} runs finished before (result.json): not run again")
    walls = measured_walls(a.out)
    failures = stopped = 0
    for T in sorted({r["T"] for r in queue}):
        ensure_data(a, T)
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
        pending = set()
        while queue or pending:
            while queue and len(pending) < a.jobs:
                # the next run in order that can end before the deadline (planned_wall: measured where it can be)
                fit = next((r for r in queue
                            if not deadline or time.time() + planned_wall(r, a.jobs, walls) <= deadline), None)
                if fit is None:
                    print(f"budget: {len(queue)} runs not started; run the same command again to continue")
                    queue = []
                    break
                queue.remove(fit)
                pending.add(pool.submit(run_one, fit, a.keep_checkpoints, a.jobs, deadline))
            if not pending:
                break
            done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in done:
                r, res = fut.result()
                if isinstance(res, dict):
                    print(f"[T={r['T']} {r['name']} lr {fmt_lr(r['lr'])}] accuracy {res['accuracy']:.4f} "
                          f"(train {res.get('train_s', 0):.0f} s + eval {res.get('eval_s', 0):.0f} s; planned "
                          f"{planned_wall(r, a.jobs, walls):.0f} s)", flush=True)
                    walls = measured_walls(a.out)
                elif res == STOPPED:
                    stopped += 1
                    print(f"[T={r['T']} {r['name']} lr {fmt_lr(r['lr'])}] {STOPPED}: killed, to start over in the "
                          f"next call (planned {planned_wall(r, a.jobs, walls):.0f} s)", flush=True)
                else:
                    failures += 1
                    print(f"[T={r['T']} {r['name']} lr {fmt_lr(r['lr'])}] FAILED: {res}", flush=True)
    if stopped:
        print(f"budget: {stopped} runs stopped at the deadline; run the same command again to continue")
    print(f"collect with: /usr/bin/python3 scripts/paper/mqar.py collect {a.out} --out {a.out}/fig8")
    if failures:
        sys.exit(f"{failures} runs failed")


def cmd_collect(a):
    rows = plot_paper.mqar_rows(a.root)
    if not rows:
        sys.exit(f"error: {a.root}: no finished MQAR runs (result.json beside run.json)")
    plot_paper.write_mqar_outputs(rows, a.out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grid", help="train and evaluate the Figure 8 grid")
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    floats = lambda s: [float(x) for x in s.split(",")]  # noqa: E731
    g.add_argument("--seq-lens", type=ints, default=SEQ_LENS)
    g.add_argument("--d-models", type=ints, default=D_MODELS)
    g.add_argument("--states", type=ints, default=STATES,
                   help="Mamba-2 d_state values (the GPU SSD takes <= 128 today: 16,64,128 runs its largest)")
    g.add_argument("--models", type=lambda s: s.split(","), default=["attention", "mamba2"],
                   help="model kinds: attention,mamba2")
    g.add_argument("--lrs", type=floats, default=LRS)
    g.add_argument("--steps", type=int, default=STEPS)
    g.add_argument("--epochs", type=int, default=1,
                   help="passes over the training set in --steps (its size: steps x B / epochs examples); Zoology's "
                        "MQAR runs make 32-64 passes over 20,000-100,000 examples")
    g.add_argument("--tokens-per-step", type=int, default=TOKENS_PER_STEP)
    g.add_argument("--seed", type=int, default=1337, help="the trainer's seed (init, data order)")
    g.add_argument("--data-seed", type=int, default=1, help="data/mqar.py's seed")
    g.add_argument("--data", default=os.path.join("data", "mqar"))
    g.add_argument("--out", default="log_mqar")
    g.add_argument("--trainer", default="./train_mamba2cu")
    g.add_argument("--evaluator", default="./eval_mamba2cu")
    g.add_argument("--cpu-rules", dest="gpu_rules", action="store_false",
                   help="do not skip what the GPU trainer refuses (with --trainer ./train_mamba2)")
    g.add_argument("--jobs", type=int, default=1, help="runs at once on the GPU (small models are launch-bound)")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="data generation processes")
    g.add_argument("--budget-minutes", type=float, help="start no run that would end after this many minutes")
    g.add_argument("--keep-checkpoints", action="store_true", help="keep each run's final checkpoint")
    g.add_argument("--per-slice", action="store_true",
                   help="also evaluate each pair count's test shard alone (acc_kvK in result.json and the CSV)")
    g.add_argument("--dry-run", action="store_true")
    c = sub.add_parser("collect", help="the table and the plot of finished runs")
    c.add_argument("root", help="the grid's --out folder")
    c.add_argument("--out", help="output prefix (default <root>/fig8)")
    a = ap.parse_args(argv)
    if a.command == "collect":
        a.out = a.out or os.path.join(a.root, "fig8")
        cmd_collect(a)
    else:
        if a.jobs < 1 or a.steps < 1 or a.epochs < 1:
            sys.exit("error: --jobs, --steps and --epochs must be >= 1")
        cmd_grid(a)


if __name__ == "__main__":
    main()
