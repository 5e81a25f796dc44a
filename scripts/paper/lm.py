#!/usr/bin/env python3
"""
scripts/paper/lm.py: the paper's language-model comparisons as one command each (doc/paper.md).

    python3 scripts/paper/lm.py table2 --dry-run        # hybrids: 0 / 1 / 2 attention layers of 8, Transformer++
    python3 scripts/paper/lm.py fig9 --dry-run          # Mamba-2 vs Transformer++ at 3 sizes, Chinchilla tokens
    python3 scripts/paper/lm.py fig9 --only mamba2 --budget-minutes 9.5    # one family in one 10-minute call
    python3 scripts/paper/lm.py pile 350m transformer++ --gpus 8 --dry-run # the paper's Table 9 run on the Pile

table2 and fig9 run small models on GPT-2 tokens of an offline corpus (default: this machine's site-packages
sources, `python3 scripts/paper.py corpus --tokenizer gpt2 --gpt2-dir DIR`), T = 2048, the same data order, token
budget rule and hyperparameters for every model of a size. Runs live in <out>/<model name>/ (main.log, run.json,
train.out, checkpoints); a model that both experiments use (Mamba-2 and Transformer++ at d_model 256) is trained
once. Running the same command again resumes an interrupted run and skips finished ones (scripts/paper.py
run_plan). Then:
    /usr/bin/python3 scripts/plot_paper.py table2 log_lm --out log_lm/table2
    /usr/bin/python3 scripts/plot_paper.py fig9 log_lm --out log_lm/fig9

pile: one run of the paper's scaling-law recipe (its Table 9: GPT-3 shapes, 0.5M-token batches, the steps and
tokens per size; Mamba-2 with twice the layers of the Transformer++, LR 5x GPT-3's) on the Pile tokenized with
GPT-2's BPE (data/pile.py). Hours to days of GPU time: for users with the data and the GPUs.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import models  # noqa: E402
import paper  # noqa: E402

GPT2_VOCAB = 50257
SEQ_LEN = 2048
TOKENS_PER_STEP = 131072      # 64 sequences of 2048 (the paper: 0.5M; ours is a quarter, so small runs take steps)
MICRO_BATCH = 32              # rows per micro-step on one GPU (accumulation 2)
TOKENS_PER_PARAM = 20         # Chinchilla
HEADDIM = 64
D_STATE = 128

# small sizes (d_model, Mamba-2 layers); Transformer++ of a size: n_layer/2 (attention, MLP) pairs
SIZES = {"f1": (128, 4), "f2": (192, 6), "f3": (256, 8), "f4": (384, 12)}
FIG9_SIZES = ["f1", "f2", "f3"]
TABLE2_SIZE = "f3"
TABLE2_ATTN = [0, 1, 2]       # attention layers among the 8 (12.5%, 25%), plus Transformer++ (all attention + MLP)

# The paper's Table 9 (Appendix D): GPT-3 shapes (heads x head size for the Transformer++), batch 0.5M tokens, training
# steps. Transformer++ layers are (attention + MLP) pairs; Mamba-2 has twice as many Mamba-2 blocks (about the same
# parameters). Peak LR: 5x GPT-3's (Table 9 lists GPT-3's 6e-4 .. 2e-4; the "improved recipe" of the Mamba papers that
# Transformer++ and Mamba-2 train with multiplies it by 5), cosine to 1e-5.
PILE_SIZES = {
    "125m": dict(d_model=768, tpp_layers=12, head_dim=64, steps=4800, lr=3e-3),
    "350m": dict(d_model=1024, tpp_layers=24, head_dim=64, steps=13500, lr=1.5e-3),
    "760m": dict(d_model=1536, tpp_layers=24, head_dim=96, steps=29000, lr=1.25e-3),
    "1.3b": dict(d_model=2048, tpp_layers=24, head_dim=64, steps=50000, lr=1e-3),
}
PILE_TOKENS_PER_STEP = 524288


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def make_plan(name, kind, d_model, n_layer, n_attn, seq_len, tokens_per_step, micro_batch, lr, steps, experiments,
              gpus=1, vocab=GPT2_VOCAB, head_dim=None):
    """a plan in scripts/paper.py's form (trainer_args, run_plan) for any block pattern"""
    if tokens_per_step % (seq_len * gpus * micro_batch):
        die(f"{name}: {tokens_per_step} tokens a step do not split into micro-batches of {micro_batch} x "
            f"{seq_len} on {gpus} GPUs")
    spec, desc = models.model_spec(kind, d_model, n_layer, vocab, d_state=D_STATE, headdim=HEADDIM, n_attn=n_attn,
                                   head_dim=head_dim)
    c = paper.model_config(d_model, n_layer, vocab, d_state=D_STATE, headdim=HEADDIM)
    warmup = max(1, min(round(paper.WARMUP_TOKENS / tokens_per_step), int(steps * paper.WARMUP_MAX_FRACTION)))
    fpt = models.flops_per_token(desc, seq_len)
    label = {"mamba2": "Mamba-2", "transformer++": "Transformer++"}.get(kind, f"Mamba-2 + {n_attn} attention")
    return dict(name=name, label=f"{label} {models.fmt_params(desc['params'])}", kind=kind, n_attn=n_attn,
                pattern=desc["pattern"], experiments=experiments, experiment=experiments[0], config=c,
                model_arg=spec, params=desc["params"], matmul_params=desc["matmul_params"], flops_per_token=fpt,
                seq_len=seq_len, tokens_per_step=tokens_per_step, gpus=gpus, micro_batch=micro_batch,
                accum=tokens_per_step // (seq_len * gpus * micro_batch), steps=steps,
                total_tokens=steps * tokens_per_step, lr=lr, final_lr_frac=paper.FINAL_LR / lr, warmup=warmup,
                val_every=max(1, steps // 10), ckpt_every=max(1, steps // 10))


def small_plans(a):
    """{name: plan} of table2 and fig9 together (a shared model appears once, listing both experiments)"""
    wanted = {}

    def add(kind, size, n_attn, exp):
        d, L = SIZES[size]
        name = {"mamba2": f"mamba2_{size}", "transformer++": f"tpp_{size}"}.get(kind, f"hybrid{n_attn}_{size}")
        wanted.setdefault(name, (kind, size, n_attn, []))[3].append(exp)
    if a.experiment in ("table2", "both"):
        for k in TABLE2_ATTN:
            add("mamba2" if k == 0 else "hybrid", TABLE2_SIZE, k, "table2")
        add("transformer++", TABLE2_SIZE, 0, "table2")
    if a.experiment in ("fig9", "both"):
        for s in a.sizes:
            add("mamba2", s, 0, "fig9")
            add("transformer++", s, 0, "fig9")
    plans = {}
    for name, (kind, size, n_attn, exps) in wanted.items():
        d, L = SIZES[size]
        # one LR and one token count per size, from its Mamba-2 model: every model of a size trains alike
        _, ref = models.model_spec("mamba2", d, L, GPT2_VOCAB, d_state=D_STATE, headdim=HEADDIM)
        lr = paper.sweep_lr(ref["params"], paper.SWEEP_LR_CAP) * a.lr_scale
        steps = -(-a.tokens_per_param * ref["params"] // a.tokens_per_step)
        plans[name] = make_plan(name, kind, d, L, n_attn, SEQ_LEN, a.tokens_per_step, a.micro_batch, lr, steps,
                                exps)
    return plans


def print_plans(plans, a, table):
    print(f"{'name':<12} {'pattern':<10} {'params':>9} {'tokens':>8} {'steps':>6} {'LR':>8} {'GFLOP/tok':>9} "
          f"{'min (H100)':>10}  experiments")
    total = 0.0
    for p in plans.values():
        tps, src = paper.throughput(table, f"lm_{p['name']}@{p['seq_len']}", p["flops_per_token"])
        minutes = p["total_tokens"] / tps / 60
        total += minutes
        print(f"{p['name']:<12} {p['pattern']:<10} {p['params']:>9,} {paper.fmt_tokens(p['total_tokens']):>8} "
              f"{p['steps']:>6} {p['lr']:>8.2e} {p['flops_per_token'] / 1e9:>9.4f} {minutes:>9.1f}"
              f"{'' if src.startswith('measured') else '*'}  {','.join(p['experiments'])}")
    print(f"total {total:.1f} minutes of H100 time (* not measured: scripts/paper/tokens_per_s.json keys "
          f"lm_<name>@{SEQ_LEN}; until then the placeholder TFLOP/s estimate)")


def cmd_small(a):
    plans = small_plans(a)
    if a.only:
        keep = a.only.split(",")
        plans = {n: p for n, p in plans.items() if n in keep or p["kind"] in keep}
        if not plans:
            die(f"--only {a.only}: matches no run (names: {', '.join(small_plans(a))}; or a kind)")
    print_plans(plans, a, paper.load_tokens_per_s())
    cmds = {}
    for n, p in plans.items():
        cmds[n] = [a.trainer] + paper.trainer_args(p, a.train, a.val, os.path.join(a.out, n), a.val_batches)
    if a.dry_run:
        for n in plans:
            print(" ".join(cmds[n]))
        return
    paths, n_train = paper.shard_tokens(a.train)
    if not paths:
        die(f"no shards match {a.train}: make them with `python3 scripts/paper.py corpus --tokenizer gpt2 "
            f"--gpt2-dir DIR` (doc/paper.md)")
    paper.require_trainer(a.trainer)
    deadline = time.time() + a.budget_minutes * 60 if a.budget_minutes else None
    for n, p in plans.items():
        if p["total_tokens"] > n_train:
            print(f"[{n}] note: reads {p['total_tokens']:,} tokens, the train shards hold {n_train:,} "
                  f"({p['total_tokens'] / n_train:.2f} epochs)", flush=True)
        if paper.run_plan(p, cmds[n], os.path.join(a.out, n), deadline, a.keep_checkpoints) == "stopped":
            print(f"stopped {n} at the budget: run the same command again to resume it")
            return
    print(f"done: /usr/bin/python3 scripts/plot_paper.py {a.experiment if a.experiment != 'both' else 'fig9'} "
          f"{a.out} --out {a.out}/{a.experiment}")


def pile_plan(size, kind, gpus, micro_batch):
    s = PILE_SIZES[size]
    n_layer = s["tpp_layers"] * 2          # Mamba-2 blocks; Transformer++: that many A and F blocks in pairs
    return make_plan(f"pile_{kind.replace('+', 'p')}_{size}", kind, s["d_model"], n_layer, 0, SEQ_LEN,
                     PILE_TOKENS_PER_STEP, micro_batch, s["lr"], s["steps"], ["pile"], gpus=gpus,
                     head_dim=s["head_dim"])


def cmd_pile(a):
    if a.size not in PILE_SIZES:
        die(f"unknown size {a.size}: one of {', '.join(PILE_SIZES)}")
    if a.kind not in ("mamba2", "transformer++"):
        die(f"unknown model {a.kind}: mamba2 or transformer++")
    p = pile_plan(a.size, a.kind, a.gpus, a.micro_batch)
    out = a.out or os.path.join("log_pile", p["name"])
    cmd = paper.launch_prefix(a.gpus, a.trainer) + paper.trainer_args(p, a.train, a.val, out, a.val_batches)
    print(f"{p['label']} on the Pile, the paper's Table 9 recipe: {p['pattern'][:8]}... ({len(p['pattern'])} blocks),"
          f" {p['params']:,} parameters, {p['steps']} steps of {PILE_TOKENS_PER_STEP} tokens "
          f"({paper.fmt_tokens(p['total_tokens'])}), peak LR {p['lr']:g} (warm-up {p['warmup']} steps, cosine to "
          f"1e-5), {a.gpus} GPUs x {a.micro_batch} rows x accumulation {p['accum']}, "
          f"{p['flops_per_token'] / 1e9:.3f} GFLOP/token")
    print(" ".join(cmd))
    if a.dry_run:
        return
    paths, n = paper.shard_tokens(a.train)
    if not paths:
        die(f"no shards match {a.train}: prepare the Pile with `python3 data/pile.py` (doc/paper.md)")
    paper.require_trainer(a.trainer)
    deadline = time.time() + a.budget_minutes * 60 if a.budget_minutes else None
    paper.run_plan(p, cmd, out, deadline, a.keep_checkpoints)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name, what in (("table2", "the hybrid ablation"), ("fig9", "the scaling comparison"),
                       ("both", "table2 and fig9 together")):
        s = sub.add_parser(name, help=what)
        s.set_defaults(experiment=name)
        s.add_argument("--sizes", type=lambda x: x.split(","), default=FIG9_SIZES, help="fig9 sizes (f1..f4)")
        s.add_argument("--only", help="comma-separated run names or kinds (mamba2, transformer++, hybrid)")
        s.add_argument("--train", default="data/sitepackages_gpt2/sitepackages_gpt2_train_*.bin")
        s.add_argument("--val", default="data/sitepackages_gpt2/sitepackages_gpt2_val_*.bin")
        s.add_argument("--out", default="log_lm")
        s.add_argument("--tokens-per-step", type=int, default=TOKENS_PER_STEP)
        s.add_argument("--micro-batch", type=int, default=MICRO_BATCH)
        s.add_argument("--lr-scale", type=float, default=1.0, help="multiply every size's LR")
        s.add_argument("--tokens-per-param", type=int, default=TOKENS_PER_PARAM,
                       help="training tokens per parameter of a size's Mamba-2 model (Chinchilla: 20)")
        s.add_argument("--val-batches", type=int, default=20)
        s.add_argument("--trainer", default="./train_mamba2cu")
        s.add_argument("--keep-checkpoints", type=int, default=1)
        s.add_argument("--budget-minutes", type=float)
        s.add_argument("--dry-run", action="store_true")
    p = sub.add_parser("pile", help="one run of the paper's Table 9 recipe on the Pile")
    p.add_argument("size", help=", ".join(PILE_SIZES))
    p.add_argument("kind", help="mamba2 or transformer++")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--train", default="data/pile/pile_train_*.bin")
    p.add_argument("--val", default="data/pile/pile_val_*.bin")
    p.add_argument("--out")
    p.add_argument("--val-batches", type=int, default=20)
    p.add_argument("--trainer", default="./train_mamba2cu")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--budget-minutes", type=float)
    p.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    if a.command == "pile":
        cmd_pile(a)
    else:
        unknown = [s for s in a.sizes if s not in SIZES]
        if unknown:
            die(f"--sizes {','.join(unknown)}: unknown (sizes: {', '.join(SIZES)})")
        cmd_small(a)


if __name__ == "__main__":
    main()
