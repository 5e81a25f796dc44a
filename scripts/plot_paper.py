#!/usr/bin/env python3
"""
scripts/plot_paper.py: tables and plots of the paper's experiments from their run folders (doc/paper.md).

    /usr/bin/python3 scripts/plot_paper.py fig8 log_mqar --out doc/paper/fig8       # MQAR: accuracy vs d_model
    /usr/bin/python3 scripts/plot_paper.py table2 log_table2 --out doc/paper/table2 # hybrids: perplexity table
    /usr/bin/python3 scripts/plot_paper.py fig9 log_fig9 --out doc/paper/fig9       # scaling: loss vs FLOPs

Every command writes PREFIX.csv (one row per run) and PREFIX.md (the table as in the paper), and PREFIX.png where
matplotlib imports (Debian: apt-get install -y python3-matplotlib, then run with /usr/bin/python3); without it, it
says so and exits 0. A run is a folder with run.json (written by scripts/paper/mqar.py or scripts/paper/lm.py) and
main.log (the trainer's); MQAR runs also hold result.json (the accuracy eval_mamba2cu printed). Standard library
only, apart from the PNG.
"""

import argparse
import csv
import json
import math
import os
import re
import sys

LINE_RE = re.compile(r"^s:(\d+) (trl|tel):(\S+)")


# ---------------------------------------------------------------------------------------------------------------
# reading runs

def parse_log(path):
    """(train [(step, loss)], val [(step, loss)]) of a main.log; a step logged twice keeps its last line"""
    train, val = {}, {}
    with open(path) as f:
        for line in f:
            m = LINE_RE.match(line)
            if m:
                (train if m.group(2) == "trl" else val)[int(m.group(1))] = float(m.group(3))
    return sorted(train.items()), sorted(val.items())


def final_losses(log_path):
    """{'final_train_loss', 'final_val_loss', 'last_step'} of a main.log (None where absent)"""
    if not os.path.exists(log_path):
        return dict(final_train_loss=None, final_val_loss=None, last_step=None)
    train, val = parse_log(log_path)
    return dict(final_train_loss=train[-1][1] if train else None, final_val_loss=val[-1][1] if val else None,
                last_step=train[-1][0] if train else None)


def run_dirs(root):
    """every folder under root (root included) holding a run.json, sorted"""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if "run.json" in filenames:
            found.append(dirpath)
    return sorted(found)


def load_json(path):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------------------------
# Figure 8: MQAR

MQAR_FIELDS = ["T", "name", "kind", "d_model", "d_state", "lr", "accuracy", "targets", "params", "final_train_loss",
               "final_val_loss", "train_s", "dir"]


def model_label(kind, d_state):
    return "Attention" if kind == "attention" else f"Mamba-2 (N={d_state})"


def mqar_rows(root):
    """one dict per finished MQAR run (run.json + result.json)"""
    rows = []
    for d in run_dirs(root):
        if not os.path.exists(os.path.join(d, "result.json")):
            continue
        run, res = load_json(os.path.join(d, "run.json")), load_json(os.path.join(d, "result.json"))
        if "accuracy" not in res:
            continue
        row = {k: run.get(k) for k in ("T", "name", "kind", "d_model", "d_state", "lr", "params")}
        row.update({k: res.get(k) for k in ("accuracy", "targets", "final_train_loss", "final_val_loss", "train_s")})
        row.update({k: v for k, v in res.items() if k.startswith("acc_kv")})  # --per-slice accuracies
        row["dir"] = d
        rows.append(row)
    rows.sort(key=lambda r: (r["T"], r["kind"] != "attention", r["d_state"] or 0, r["d_model"], r["lr"]))
    return rows


def best_over_lr(rows):
    """{(T, label, d_model): (accuracy, lr)}: the best accuracy over the learning rates (ties: the smaller LR)"""
    best = {}
    for r in rows:
        key = (r["T"], model_label(r["kind"], r["d_state"]), r["d_model"])
        if key not in best or r["accuracy"] > best[key][0] or (r["accuracy"] == best[key][0] and r["lr"] <
                                                               best[key][1]):
            best[key] = (r["accuracy"], r["lr"])
    return best


def mqar_markdown(rows):
    best = best_over_lr(rows)
    Ts = sorted({k[0] for k in best})
    labels = sorted({k[1] for k in best}, key=lambda s: (s != "Attention", len(s), s))
    ds = sorted({k[2] for k in best})
    lines = []
    for T in Ts:
        lines.append(f"**T = {T}** (best accuracy over the learning rates; the LR in brackets)\n")
        lines.append("| model | " + " | ".join(f"d_model {d}" for d in ds) + " |")
        lines.append("| --- |" + " --- |" * len(ds))
        for lab in labels:
            cells = []
            for d in ds:
                v = best.get((T, lab, d))
                cells.append(f"{v[0]:.3f} ({v[1]:g})" if v else "-")
            lines.append(f"| {lab} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_csv(path, rows, fields):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def pyplot():
    """matplotlib.pyplot (Agg), or None with a message"""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        print("matplotlib is missing: no PNG written (Debian: apt-get install -y python3-matplotlib, then run with "
              "/usr/bin/python3)")
        return None


def write_mqar_outputs(rows, prefix):
    slices = sorted({k for r in rows for k in r if k.startswith("acc_kv")}, key=lambda k: int(k[6:]))
    write_csv(prefix + ".csv", rows, MQAR_FIELDS + slices)
    with open(prefix + ".md", "w") as f:
        f.write(mqar_markdown(rows))
    print(f"wrote {prefix}.csv ({len(rows)} runs) and {prefix}.md")
    plt = pyplot()
    if plt is None:
        return
    best = best_over_lr(rows)
    Ts = sorted({k[0] for k in best})
    labels = sorted({k[1] for k in best}, key=lambda s: (s != "Attention", len(s), s))
    # at least 6.4 inches wide: one panel must still hold the title and the one-row legend
    fig, axes = plt.subplots(1, len(Ts), figsize=(max(4.2 * len(Ts), 6.4), 3.6), sharey=True, squeeze=False)
    colors = {lab: f"C{i}" for i, lab in enumerate(labels)}  # one colour a model in every panel
    for ax, T in zip(axes[0], Ts):
        for lab in labels:
            pts = sorted((k[2], v[0]) for k, v in best.items() if k[0] == T and k[1] == lab)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lab, color=colors[lab])
        ax.set_xscale("log", base=2)
        ds = sorted({k[2] for k in best})
        ax.set_xticks(ds)
        ax.set_xticklabels([str(d) for d in ds])
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"Sequence Length: {T}")
        ax.set_xlabel("Model dimension")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Accuracy")
    handles = [plt.Line2D([], [], color=colors[lab], marker="o", label=lab) for lab in labels]
    fig.legend(handles=handles, loc="lower center", ncol=len(labels), fontsize=8)
    fig.suptitle("Multi-Query Associative Recall (MQAR), mamba2.c")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(prefix + ".png", dpi=130, bbox_inches="tight")
    print(f"wrote {prefix}.png")


# ---------------------------------------------------------------------------------------------------------------
# Table 2 and Figure 9: language-model runs

LM_FIELDS = ["experiment", "label", "kind", "n_attn", "pattern", "params", "flops_per_token", "tokens", "flops",
             "final_train_loss", "final_val_loss", "val_perplexity", "last_step", "steps", "dir"]


def lm_rows(root):
    """one dict per language-model run (run.json from scripts/paper/lm.py + its main.log)"""
    rows = []
    for d in run_dirs(root):
        run = load_json(os.path.join(d, "run.json"))
        row = {k: run.get(k) for k in ("experiment", "label", "kind", "n_attn", "pattern", "params",
                                       "flops_per_token", "steps", "tokens_per_step")}
        row["experiments"] = run.get("experiments") or [run.get("experiment")]
        row.update(final_losses(os.path.join(d, "main.log")))
        row["dir"] = d
        if row["last_step"] is not None and row["tokens_per_step"]:
            row["tokens"] = row["last_step"] * row["tokens_per_step"]
            row["flops"] = row["tokens"] * row["flops_per_token"]
        v = row["final_val_loss"]
        row["val_perplexity"] = math.exp(v) if v is not None else None
        rows.append(row)
    return rows


def table2_markdown(rows):
    rows = sorted(rows, key=lambda r: (r["kind"] == "transformer++", r.get("n_attn") or 0))
    head = [("Transformer++" if r["kind"] == "transformer++" else f"{r.get('n_attn') or 0}" +
             (" (Mamba-2)" if not r.get("n_attn") else "")) for r in rows]
    cells = [f"{r['val_perplexity']:.3f}" if r["val_perplexity"] else "not run yet" for r in rows]
    done = [r for r in rows if r["val_perplexity"]]
    best = min(done, key=lambda r: r["val_perplexity"]) if done else None
    cells = [f"**{c}**" if best is not None and r is best else c for c, r in zip(cells, rows)]
    return ("| Num. attn blocks | " + " | ".join(head) + " |\n| --- |" + " --- |" * len(rows) + "\n"
            "| val perplexity | " + " | ".join(cells) + " |\n"
            "| parameters | " + " | ".join(f"{r['params']:,}" if r["params"] else "-" for r in rows) + " |\n")


def fig9_markdown(rows):
    lines = ["| model | parameters | tokens | FLOPs | final val loss | val perplexity |", "| --- |" + " --- |" * 5]
    for r in sorted(rows, key=lambda r: (r["kind"], r["params"] or 0)):
        lines.append(f"| {r['label']} | {r['params']:,} | " +
                     (f"{r['tokens'] / 1e6:.0f}M | {r['flops']:.2e} | {r['final_val_loss']:.4f} | "
                      f"{r['val_perplexity']:.2f} |" if r.get("flops") and r["final_val_loss"] else
                      "not run yet | | | |"))
    return "\n".join(lines) + "\n"


def write_lm_outputs(rows, prefix, which):
    write_csv(prefix + ".csv", rows, LM_FIELDS)
    with open(prefix + ".md", "w") as f:
        f.write(table2_markdown(rows) if which == "table2" else fig9_markdown(rows))
    print(f"wrote {prefix}.csv ({len(rows)} runs) and {prefix}.md")
    if which != "fig9":
        return
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for kind, lab in (("transformer++", "Transformer++"), ("mamba2", "Mamba-2")):
        pts = sorted((r["flops"], r["val_perplexity"]) for r in rows
                     if r["kind"] == kind and r.get("flops") and r["val_perplexity"])
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lab)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOPs")
    ax.set_ylabel("Perplexity (val)")
    ax.set_title("Scaling laws at small scale, mamba2.c")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(prefix + ".png", dpi=130)
    print(f"wrote {prefix}.png")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("which", choices=["fig8", "table2", "fig9"])
    ap.add_argument("root", help="the experiment's output folder")
    ap.add_argument("--out", help="output prefix (default <root>/<which>)")
    a = ap.parse_args(argv)
    prefix = a.out or os.path.join(a.root, a.which)
    if not os.path.isdir(a.root):
        sys.exit(f"error: {a.root}: no such folder")
    if a.which == "fig8":
        rows = mqar_rows(a.root)
        if not rows:
            sys.exit(f"error: {a.root}: no finished MQAR runs (result.json beside run.json)")
        write_mqar_outputs(rows, prefix)
    else:
        rows = [dict(r, experiment=a.which) for r in lm_rows(a.root) if a.which in r["experiments"]]
        if not rows:
            sys.exit(f"error: {a.root}: no {a.which} runs (run.json with experiment '{a.which}')")
        write_lm_outputs(rows, prefix, a.which)


if __name__ == "__main__":
    main()
