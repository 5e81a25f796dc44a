#!/usr/bin/env python3
"""
scripts/plot.py: loss curves of one or more training runs, and the compute-optimal frontier of a sweep.

    /usr/bin/python3 scripts/plot.py log_sweep/T2048 --out log_sweep/T2048/scaling      # every run of a sweep
    /usr/bin/python3 scripts/plot.py log_paper/130m log_paper/370m --out paper
    python3 scripts/plot.py run/main.log --label 130M --params 128989632 --flops-per-token 8.6e8 --out x

A RUN is a folder holding main.log (the trainer's log), a main.log file, or a sweep folder whose sub-folders are
runs. The label, parameter count and FLOPs per token come from run.json beside main.log (scripts/paper.py writes
it); --label / --params / --flops-per-token, given once per RUN in order, override it (without FLOPs per token,
6 x params is used). Writes PREFIX.csv (every plotted point) and PREFIX.png (three panels: loss against tokens,
loss against FLOPs with the frontier, the frontier alone with a power-law fit; log-log). Without matplotlib
(Debian: apt-get install python3-matplotlib, then run with /usr/bin/python3) it writes the CSV, says so and
exits 0.

The frontier: the val points (train points if no run has val points) that no point of any run beats with at most
the same FLOPs; at each compute, the size that got there lowest.
"""

import argparse
import csv
import json
import math
import os
import re
import sys

LINE_RE = re.compile(r"^s:(\d+) (trl|tel):(\S+)(.*)$")
TOK_RE = re.compile(r"\btok:(\d+)")


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def find_runs(paths):
    """expand each argument to main.log paths: a file, a run folder, or a folder of run folders"""
    logs = []
    for p in paths:
        if os.path.isfile(p):
            logs.append(p)
        elif os.path.isfile(os.path.join(p, "main.log")):
            logs.append(os.path.join(p, "main.log"))
        elif os.path.isdir(p):
            subs = sorted(os.path.join(p, d, "main.log") for d in os.listdir(p)
                          if os.path.isfile(os.path.join(p, d, "main.log")))
            if not subs:
                die(f"{p}: no main.log in it or in its sub-folders")
            logs.extend(subs)
        else:
            die(f"{p}: no such file or folder")
    return logs


def parse_log(path):
    """
    {'train': [(step, tokens or None, loss_text)], 'val': [(step, None, loss_text)]}. A step logged twice (a resume
    of a log that was not trimmed) keeps its last line, as the resumed run recomputed it.
    """
    by_kind = {"trl": {}, "tel": {}}
    dup = 0
    with open(path) as f:
        for line in f:
            m = LINE_RE.match(line.strip())
            if not m:
                continue
            step, kind, loss, rest = int(m.group(1)), m.group(2), m.group(3), m.group(4)
            try:
                float(loss)
            except ValueError:
                die(f"{path}: loss '{loss}' at step {step} is not a number")
            t = TOK_RE.search(rest)
            dup += step in by_kind[kind]
            by_kind[kind][step] = (step, int(t.group(1)) if t else None, loss)
    if dup:
        print(f"warning: {path}: {dup} steps logged twice (a resumed run whose log was not trimmed): kept the last",
              file=sys.stderr)
    return {"train": [by_kind["trl"][s] for s in sorted(by_kind["trl"])],
            "val": [by_kind["tel"][s] for s in sorted(by_kind["tel"])]}


def run_meta(log_path, i, a):
    meta = {}
    rj = os.path.join(os.path.dirname(log_path), "run.json")
    if os.path.isfile(rj):
        with open(rj) as f:
            meta = json.load(f)
    def arg(lst):
        return lst[i] if lst and i < len(lst) else None
    label = arg(a.label) or meta.get("label") or os.path.basename(os.path.dirname(os.path.abspath(log_path)))
    params = arg(a.params) or meta.get("params")
    fpt = arg(a.flops_per_token) or meta.get("flops_per_token")
    if fpt is None and params is not None:
        fpt = 6.0 * float(params)
    if fpt is None:
        die(f"{log_path}: no FLOPs per token: no run.json beside it; give --flops-per-token or --params")
    return dict(label=label, params=int(params) if params is not None else None, flops_per_token=float(fpt),
                tokens_per_step=meta.get("tokens_per_step"))


def tokens_per_step(log, meta, path):
    if meta["tokens_per_step"]:
        return int(meta["tokens_per_step"])
    for step, tok, _ in log["train"]:
        if tok is not None and step > 0:
            return tok // step
    die(f"{path}: cannot tell tokens per step (no run.json, no 'tok:' on train lines): give a run.json")


def build_rows(logs, a):
    rows, runs = [], []
    for i, path in enumerate(logs):
        meta = run_meta(path, i, a)
        log = parse_log(path)
        if not log["train"] and not log["val"]:
            die(f"{path}: no 's:<step> trl:' or 's:<step> tel:' lines: is it a main.log of the trainers?")
        tps = tokens_per_step(log, meta, path)
        run = dict(meta, path=path, points={"train": [], "val": []})
        for kind in ("train", "val"):
            for step, tok, loss in log[kind]:
                tokens = tok if tok is not None else step * tps
                r = dict(run=path, label=meta["label"], params=meta["params"] or "",
                         flops_per_token=f"{meta['flops_per_token']:.6e}", kind=kind, step=step, tokens=tokens,
                         flops=f"{tokens * meta['flops_per_token']:.6e}", loss=loss)
                rows.append(r)
                run["points"][kind].append((tokens, tokens * meta["flops_per_token"], float(loss)))
        runs.append(run)
    return rows, runs


def frontier(runs):
    """the points with FLOPs > 0 that no point with at most their FLOPs beats: (flops, loss, label)"""
    kind = "val" if any(r["points"]["val"] for r in runs) else "train"
    pts = sorted((f, l, r["label"]) for r in runs for (_, f, l) in r["points"][kind] if f > 0)
    out, best = [], math.inf
    for f, l, lab in pts:
        if l < best:
            out.append((f, l, lab))
            best = l
    return kind, out


def final_point(run, kind):
    """(flops, loss) of the run's last point of this kind"""
    pts = run["points"][kind]
    return (pts[-1][1], pts[-1][2]) if pts and pts[-1][1] > 0 else None


def power_fit(pts):
    """least squares of log L = log a - b log C over (flops, loss, ...) points: (a, b), or None with < 2 points"""
    if len(pts) < 2:
        return None
    xs = [math.log(p[0]) for p in pts]
    ys = [math.log(p[1]) for p in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    b = -sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return math.exp(my + b * mx), b


def write_csv(path, rows, front_kind, front):
    fields = ["run", "label", "params", "flops_per_token", "kind", "step", "tokens", "flops", "loss"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
        for fl, l, lab in front:
            w.writerow(dict(run="", label=lab, params="", flops_per_token="", kind=f"frontier_{front_kind}",
                            step="", tokens="", flops=f"{fl:.6e}", loss=repr(l)))


def ema(values, beta):
    out, m = [], None
    for v in values:
        m = v if m is None else beta * m + (1 - beta) * v
        out.append(m)
    return out


def plain_log_ticks(ax):
    """log-scaled loss axes print 2, 3, 4 rather than 2 x 10^0"""
    from matplotlib.ticker import FuncFormatter, LogLocator
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def plot(path, runs, front_kind, front, fit, title, smooth):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(runs, key=lambda r: (r["params"] or 0, r["label"]))
    cmap = plt.get_cmap("viridis")
    colors = {r["path"]: cmap(0.9 * i / max(1, len(runs) - 1)) for i, r in enumerate(runs)}
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.6))
    for ax, xi, xlabel in ((axes[0], 0, "training tokens"), (axes[1], 1, "training compute (FLOPs)")):
        for r in runs:
            c = colors[r["path"]]
            tr = [p for p in r["points"]["train"] if p[xi] > 0]
            if tr:
                ax.plot([p[xi] for p in tr], ema([p[2] for p in tr], smooth), color=c, lw=1.3, alpha=0.85,
                        label=f"{r['label']}")
            va = [p for p in r["points"]["val"] if p[xi] > 0]
            if va:
                ax.plot([p[xi] for p in va], [p[2] for p in va], "o", color=c, ms=4, mec="black", mew=0.4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss (nats per token)")
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_title(f"loss against tokens (lines: train, EMA {smooth}; dots: val)")
    axes[1].set_title("loss against compute")
    if front:
        axes[1].plot([f for f, _, _ in front], [l for _, l, _ in front], "--", color="crimson", lw=1.6,
                     label=f"frontier ({front_kind})")
    axes[0].legend(title="model (parameters)", fontsize=8, loc="upper right")
    axes[1].legend(fontsize=8, loc="upper right")

    ax = axes[2]
    if front:
        ax.plot([f for f, _, _ in front], [l for _, l, _ in front], "--", color="crimson", lw=1.0, alpha=0.6,
                label=f"frontier ({front_kind})")
    for r in runs:
        end = final_point(r, front_kind)
        if end:
            ax.plot([end[0]], [end[1]], "o", color=colors[r["path"]], ms=8, mec="black", mew=0.6,
                    label=f"{r['label']}, end of run")
    if fit:
        a_, b = fit
        ends = sorted(final_point(r, front_kind)[0] for r in runs if final_point(r, front_kind))
        xs = [ends[0] / 1.5, ends[-1] * 1.5]
        ax.plot(xs, [a_ * x ** -b for x in xs], "-", color="black", lw=1.0,
                label=f"fit to the ends: L = {a_:.3g} C^-{b:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(f"{front_kind} loss (nats per token)")
    ax.set_title("compute-optimal frontier and each size's final loss")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper right")
    for ax in axes:
        plain_log_ticks(ax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("runs", nargs="+", help="run folders, main.log files, or sweep folders")
    ap.add_argument("--label", action="append", help="label of the i-th run (repeat per run)")
    ap.add_argument("--params", action="append", type=int, help="parameters of the i-th run")
    ap.add_argument("--flops-per-token", action="append", type=float, help="training FLOPs per token of the i-th run")
    ap.add_argument("--out", default="scaling", help="output prefix: PREFIX.png and PREFIX.csv (default scaling)")
    ap.add_argument("--title", help="figure title")
    ap.add_argument("--smooth", type=float, default=0.9, help="EMA factor for the train curves (0: raw)")
    a = ap.parse_args(argv)
    if not 0.0 <= a.smooth < 1.0:
        die("--smooth must be in [0, 1)")
    logs = find_runs(a.runs)
    rows, runs = build_rows(logs, a)
    front_kind, front = frontier(runs)
    ends = [final_point(r, front_kind) for r in runs]
    fit = power_fit([e for e in ends if e])
    out_dir = os.path.dirname(a.out)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    write_csv(a.out + ".csv", rows, front_kind, front)
    print(f"wrote {a.out}.csv: {len(rows)} points of {len(runs)} runs, {len(front)} on the {front_kind} frontier")
    if fit:
        print(f"fit to each run's final {front_kind} loss: loss = {fit[0]:.4g} * FLOPs^-{fit[1]:.4f}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is missing: no PNG written (Debian: apt-get install -y python3-matplotlib, then run with "
              "/usr/bin/python3)")
        return 0
    plot(a.out + ".png", runs, front_kind, front, fit, a.title, a.smooth)
    print(f"wrote {a.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
