#!/usr/bin/env python3
"""
scripts/test_scripts.py: tests of the paper scripts (scripts/paper.py, its wrappers, scripts/scaling_sweep.sh,
scripts/plot.py). Standard library only; needs ./train_mamba2 (make train_mamba2). ~20 s on 2 cores.

  1. plot.py on the committed tiny-sweep logs (scripts/fixtures/sweep_tiny): every CSV point equals its log line
     (step, loss text, tokens, FLOPs = tokens x FLOPs/token), the frontier is a falling staircase holding the lowest
     val loss, the PNG is written (skipped, with a message, where no python3 has matplotlib), and without matplotlib
     the CSV is still written, no PNG, exit 0.
  2. --dry-run of scripts/paper/130m.sh and 1.3b.sh on 1 and 8 GPUs against numbers computed by hand below.
  3. The tiny sweep on the CPU trainer, interrupted (SIGKILL of the whole sweep) and resumed, writes the same
     loss lines as one uninterrupted sweep; the sweep's parameter counts equal the trainer's.
Prints one line per check and closes with "N passed, N failed".
"""

import csv
import glob
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
FIXTURE = os.path.join(ROOT, "scripts", "fixtures", "sweep_tiny")
TRAINER = os.path.join(ROOT, "train_mamba2")
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    show = detail and (not ok or (len(detail) < 100 and "\n" not in detail))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if show else ""), flush=True)


def run(cmd, env=None, timeout=120):
    e = dict(os.environ, **(env or {}))
    return subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)


def python_with_matplotlib():
    for py in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(py) and subprocess.run([py, "-c", "import matplotlib"], capture_output=True).returncode == 0:
            return py
    return None


def log_lines(path):
    """{(kind, step): (loss text, tok or None)} of a main.log, and the number of lines (duplicates show)"""
    out, n = {}, 0
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2 or not parts[0].startswith("s:"):
                continue
            step = int(parts[0][2:])
            kind, loss = parts[1].split(":")
            tok = next((int(p[4:]) for p in parts if p.startswith("tok:")), None)
            out[(kind, step)] = (loss, tok)
            n += 1
    return out, n


# ---------------------------------------------------------------------------------------------------------------
def test_plot(tmp):
    import json
    runs = sorted(d for d in os.listdir(FIXTURE) if os.path.isfile(os.path.join(FIXTURE, d, "main.log")))
    check("fixture: three tiny runs committed", runs == ["t1", "t2", "t3"], str(runs))
    py = python_with_matplotlib() or sys.executable
    prefix = os.path.join(tmp, "plot", "tiny")
    r = run([py, "scripts/plot.py", FIXTURE, "--out", prefix])
    check("plot.py on the fixture exits 0", r.returncode == 0, (r.stdout + r.stderr)[-300:])
    rows = list(csv.DictReader(open(prefix + ".csv"))) if os.path.exists(prefix + ".csv") else []
    check("plot.py wrote the CSV", len(rows) > 0)
    for name in runs:
        log_path = os.path.join(FIXTURE, name, "main.log")
        meta = json.load(open(os.path.join(FIXTURE, name, "run.json")))
        lines, _ = log_lines(log_path)
        mine = [x for x in rows if x["run"].endswith(os.path.join(name, "main.log"))]
        bad = []
        for x in mine:
            kind = "trl" if x["kind"] == "train" else "tel"
            step, tokens = int(x["step"]), int(x["tokens"])
            loss, tok = lines.get((kind, step), (None, None))
            want_tokens = tok if kind == "trl" else step * meta["tokens_per_step"]
            flops = float(x["flops"])
            if (loss != x["loss"] or tokens != want_tokens
                    or abs(flops - tokens * meta["flops_per_token"]) > 1e-6 * max(flops, 1)):
                bad.append((kind, step, x["loss"], loss, tokens, want_tokens))
        check(f"CSV points of {name} equal its log ({len(lines)} lines: step, loss, tokens, FLOPs)",
              len(mine) == len(lines) and not bad, f"{len(mine)} rows for {len(lines)} lines, first bad {bad[:1]}")
    front = [(float(x["flops"]), float(x["loss"])) for x in rows if x["kind"].startswith("frontier")]
    vals = [float(x["loss"]) for x in rows if x["kind"] == "val" and int(x["tokens"]) > 0]
    stair = all(a[0] < b[0] and a[1] > b[1] for a, b in zip(front, front[1:]))
    check("frontier: FLOPs rise, loss falls, ends at the lowest val loss", front and stair and
          front[-1][1] == min(vals), f"{len(front)} points, last {front[-1] if front else None}, min val {min(vals)}")
    if python_with_matplotlib() is None:
        print("skip PNG check: no python3 here has matplotlib (apt-get install -y python3-matplotlib)")
    else:
        png = prefix + ".png"
        ok = os.path.exists(png) and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(png) > 20000
        check(f"plot.py wrote a PNG ({py})", ok, f"{os.path.getsize(png) if os.path.exists(png) else 0} bytes")

    # without matplotlib: a stand-in package whose import fails
    fake = os.path.join(tmp, "nompl", "matplotlib")
    os.makedirs(fake)
    with open(os.path.join(fake, "__init__.py"), "w") as f:
        f.write("raise ImportError('matplotlib hidden by the test')\n")
    prefix2 = os.path.join(tmp, "plot", "nompl")
    r = run([sys.executable, "scripts/plot.py", os.path.join(FIXTURE, "t1"), "--out", prefix2],
            env={"PYTHONPATH": os.path.dirname(fake)})
    check("without matplotlib: exit 0, CSV written, no PNG, says so",
          r.returncode == 0 and os.path.exists(prefix2 + ".csv") and not os.path.exists(prefix2 + ".png")
          and "matplotlib is missing" in r.stdout, (r.stdout + r.stderr)[-300:])


# ---------------------------------------------------------------------------------------------------------------
def dry_run(size, gpus):
    r = run(["sh", f"scripts/paper/{size}.sh", "--dry-run", "--gpus", str(gpus)])
    fields = {}
    for line in r.stdout.splitlines():
        line = line.strip()
        for key in ("tokens per step", "micro-batch", "accumulation steps", "total steps", "total tokens",
                    "peak LR", "final LR fraction", "warm-up steps", "parameters", "FLOPs per token", "command"):
            if line.startswith(key + " "):
                fields[key] = line[len(key):].strip().split(" ")[0].replace(",", "")
                if key == "command":
                    fields[key] = line[len(key):].strip()
    return r, fields


def test_dry_runs():
    # Hand computation (llmc/mamba2_model.h's table; SPEC.md sections 1 and 6):
    # 130M: D=768, L=24, E=1536, H=24, N=128, conv_dim = 1536+256 = 1792, in_proj rows = 3072+256+24 = 3352,
    #   vocab 50277 -> 50288. wte 50288*768 = 38,621,184. One layer: norm 768 + in_proj 3352*768 = 2,574,336
    #   + conv 1792*4 = 7,168 + conv bias 1,792 + dt_bias/A_log/D 72 + gated norm 1,536 + out_proj 768*1536 =
    #   1,179,648 -> 3,765,320; x24 = 90,367,680; + norm_f 768 -> 128,989,632.
    #   20 tokens/param = 2,579,792,640 tokens / 524,288 a step = 4920.6 -> 4921 steps = 2,580,021,248 tokens.
    #   LR 3e-3, final fraction 1e-5/3e-3 = 0.00333333; warm-up min(375e6/524288 = 715, 10% of 4921 = 492) = 492.
    #   256 sequences a step: 1 GPU, micro-batch 16 -> 16 accumulation steps; 8 GPUs: 32 each -> 2.
    # 1.3B: D=2048, L=48, E=4096, H=64, conv_dim 4352, in_proj rows 8192+256+64 = 8512. wte 50288*2048 =
    #   102,989,824. One layer: 2048 + 8512*2048 = 17,432,576 + 4352*4 = 17,408 + 4,352 + 192 + 4,096
    #   + 2048*4096 = 8,388,608 -> 25,849,280; x48 = 1,240,765,440; + 2048 -> 1,343,757,312.
    #   20x = 26,875,146,240 / 524,288 = 51260.3 -> 51261 steps = 26,875,527,168 tokens. LR 1e-3, fraction 0.01,
    #   warm-up min(715, 5126) = 715. Micro-batch 4: 1 GPU 256/4 = 64 accumulation steps; 8 GPUs 32/4 = 8.
    expected = {
        ("130m", 1): dict(params="128989632", steps="4921", tokens="2580021248", lr="0.003", q="0.00333333",
                          warmup="492", micro="16", accum="16"),
        ("130m", 8): dict(params="128989632", steps="4921", tokens="2580021248", lr="0.003", q="0.00333333",
                          warmup="492", micro="16", accum="2"),
        ("1.3b", 1): dict(params="1343757312", steps="51261", tokens="26875527168", lr="0.001", q="0.01",
                          warmup="715", micro="4", accum="64"),
        ("1.3b", 8): dict(params="1343757312", steps="51261", tokens="26875527168", lr="0.001", q="0.01",
                          warmup="715", micro="4", accum="8"),
    }
    for (size, gpus), e in expected.items():
        r, f = dry_run(size, gpus)
        got = dict(params=f.get("parameters"), steps=f.get("total steps"), tokens=f.get("total tokens"),
                   lr=f.get("peak LR"), q=f.get("final LR fraction"), warmup=f.get("warm-up steps"),
                   micro=f.get("micro-batch"), accum=f.get("accumulation steps"))
        ok = r.returncode == 0 and f.get("tokens per step") == "524288" and got == e
        check(f"dry run {size} on {gpus} GPU(s): 524288 tokens/step, params, steps, tokens, LR, warm-up, accumulation",
              ok, "" if ok else f"got {got} tokens/step {f.get('tokens per step')} rc {r.returncode} {r.stderr[-200:]}")
        cmd = f.get("command", "")
        want = (["mpirun -np 8 ./train_mamba2cu"] if gpus == 8 else ["./train_mamba2cu -i"]) + [
            f"-b {e['micro']} -t 2048 -d 524288 -l {e['lr']} -u {e['warmup']} -q {e['q']} -c 0.1 -a 1.0 -x {e['steps']}"]
        check(f"dry run {size} on {gpus} GPU(s): the trainer command", all(w in cmd for w in want), cmd)
    _, f = dry_run("130m", 1)
    gf = float(f.get("FLOPs per token", "0"))
    check("130M: FLOPs per token ~0.86 GFLOP (ANCHORS.md: 6 x 128.7M matmul params + ~85 MFLOP SSD)",
          abs(gf - 0.86) < 0.01, f"{gf} GFLOP")
    r = run(["sh", "scripts/paper/130m.sh", "--dry-run", "--gpus", "8", "--micro-batch", "3"])
    check("a micro-batch that does not divide the per-GPU sequences is refused with a message",
          r.returncode != 0 and "does not divide" in r.stderr, r.stderr.strip()[-200:])


# ---------------------------------------------------------------------------------------------------------------
def write_shard(path, tokens):
    header = [0] * 256
    header[0], header[1], header[2] = 20240520, 1, len(tokens)
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(struct.pack(f"<{len(tokens)}H", *tokens))


def sweep_cmd(data, out_root):
    return ["sh", "scripts/scaling_sweep.sh", "--tiny", "--only", "t1,t2", "--trainer", TRAINER,
            "--train", os.path.join(data, "tiny_train_*.bin"), "--val", os.path.join(data, "tiny_val_*.bin"),
            "--out-root", out_root, "--tokens-per-param", "4"]


def test_sweep_resume(tmp):
    if not os.access(TRAINER, os.X_OK):
        check("CPU trainer ./train_mamba2 present", False, "build it with `make train_mamba2`")
        return
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    # a small corpus of varied bytes (enough that no tiny size repeats data: t2 reads ~94K tokens)
    text = "".join(f"def f{i}(x, y={i % 7}):\n    return x * {i % 13} + y - {i % 5}  # line {i}\n"
                   for i in range(4000)).encode()
    write_shard(os.path.join(data, "tiny_train_000000.bin"), list(text[:200000]))
    write_shard(os.path.join(data, "tiny_val_000000.bin"), list(text[-20000:]))
    env = {"OMP_NUM_THREADS": "1"}

    whole = os.path.join(tmp, "whole")
    r = run(sweep_cmd(data, whole), env=env)
    check("uninterrupted tiny sweep runs", r.returncode == 0, (r.stdout + r.stderr)[-400:])
    for name in ("t1", "t2"):
        import json
        meta = json.load(open(os.path.join(whole, name, "run.json")))
        out = open(os.path.join(whole, name, "train.out")).read()
        want = f"parameters: {meta['params']}\n"
        check(f"{name}: scripts/paper.py's parameter count equals the trainer's ({meta['params']})", want in out)

    cut = os.path.join(tmp, "cut")
    e = dict(os.environ, **env)
    proc = subprocess.Popen(sweep_cmd(data, cut), cwd=ROOT, env=e, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    t2 = os.path.join(cut, "t2")
    steps = 0
    deadline = time.time() + 60
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        ck = [int(fn[5:13]) for fn in (os.listdir(t2) if os.path.isdir(t2) else []) if fn.endswith(".bin")
              and fn.startswith("ckpt_")]
        logged = log_lines(os.path.join(t2, "main.log"))[0] if ck else {}
        last = max([s for (k, s) in logged if k == "trl"], default=-1)
        if ck and max(ck) >= 36 and last > max(ck):
            # lines past the newest checkpoint: the resume must cut them
            os.killpg(proc.pid, signal.SIGKILL)   # the whole sweep: driver and trainer, as a crash would
            proc.wait()
            killed_at = max(ck)
            break
        time.sleep(0.005)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    import json
    steps = json.load(open(os.path.join(t2, "run.json")))["steps"] if os.path.exists(os.path.join(t2, "run.json")) else 0
    lines_at_kill, _ = log_lines(os.path.join(t2, "main.log")) if os.path.exists(os.path.join(t2, "main.log")) else ({}, 0)
    last_trl = max([s for (k, s) in lines_at_kill if k == "trl"], default=-1)
    check("the sweep was killed in the middle of t2, its log past its newest checkpoint",
          killed_at is not None and killed_at < last_trl < steps,
          f"checkpoint {killed_at}, log at step {last_trl} of {steps}")
    r = run(sweep_cmd(data, cut), env=env)
    check("the same command resumes: t1 skipped as complete, t2 resumed from its checkpoint",
          r.returncode == 0 and "[t1] complete" in r.stdout and "[t2] resuming from step" in r.stdout
          and "resumed from" in r.stdout, (r.stdout + r.stderr)[-400:])
    for name in ("t1", "t2"):
        a, na = log_lines(os.path.join(whole, name, "main.log"))
        b, nb = log_lines(os.path.join(cut, name, "main.log"))
        diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        check(f"{name}: interrupted + resumed log equals the uninterrupted one ({na} loss lines, no duplicates)",
              na == nb == len(a) == len(b) and not diff and len(a) > 0,
              f"{na} vs {nb} lines, first differences {diff[:3]}")


# ---------------------------------------------------------------------------------------------------------------
# the paper's experiments: scripts/paper/models.py, scripts/paper/mqar.py, scripts/paper/lm.py, scripts/plot_paper.py
PAPER_FIXTURE = os.path.join(ROOT, "scripts", "fixtures", "paper")


def paper_modules():
    sys.path.insert(0, os.path.join(ROOT, "scripts", "paper"))
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import models
    import plot_paper
    return models, plot_paper


def test_models():
    models, _ = paper_modules()
    import paper
    # Mamba-2 only: the same count as scripts/paper.py (itself checked against the trainer below)
    spec, desc = models.model_spec("mamba2", 256, 8, 50257)
    c = paper.model_config(256, 8, 50257)
    check("models: a Mamba-2 model counts as scripts/paper.py counts it", desc["params"] == paper.param_count(c),
          f"{desc['params']} vs {paper.param_count(c)}")
    # by hand: d 256, 4 heads of 64: A = norm 256 + Wqkv 256*768 + out 256*256 = 262,400; F (width 8/3*256 -> 768):
    # 256 + 256*1536 + 768*256 = 590,080; embedding 50272*256 = 12,869,632; final norm 256
    spec, desc = models.model_spec("transformer++", 256, 8, 50257)
    want = 12869632 + 4 * (262400 + 590080) + 256
    check("models: Transformer++ d256 x 8 blocks = 16,279,808 parameters (by hand)", desc["params"] == want,
          f"{desc['params']} vs {want}")
    check("models: Transformer++ spec carries pattern, heads and MLP width",
          "pattern=AFAFAFAF" in spec and "num_heads=4" in spec and "head_dim=64" in spec and "d_intermediate=768"
          in spec, spec)
    bad = []
    for L in (4, 8, 16, 48):
        for k in range(0, L + 1):
            pat = models.hybrid_pattern(L, k)
            if pat.count("A") != k or len(pat) != L or (k <= L - 2 and k > 0 and (pat[0] == "A" or pat[-1] == "A")):
                bad.append((L, k, pat))
    check("models: hybrid patterns hold n_attn A blocks, never first or last when there is room", not bad, str(bad[:3]))
    try:
        models.model_spec("mamba2", 64, 2, 8192, d_state=256, headdim=32)
        refused = False
    except models.Unsupported as e:
        refused = "128" in str(e)
    _, d_cpu = models.model_spec("mamba2", 64, 2, 8192, d_state=256, headdim=32, gpu=False)
    check("models: d_state 256 refused for the GPU (SSD_MAXD 128), allowed for the CPU trainer",
          refused and d_cpu["d_state"] == 256)
    _, d = models.model_spec("attention", 64, 2, 8192)
    fpt = models.flops_per_token(d, 256)
    # 6 x (8192*64 + 2*(64*192 + 64*64)) + 2 blocks x 3*2*2*128*64 = 3,342,336 + 393,216
    check("models: attention FLOPs per token by hand (T=256)", fpt == 6 * (8192 * 64 + 2 * (64 * 192 + 64 * 64))
          + 2 * 3 * 2 * 2 * 128 * 64, f"{fpt}")


def test_mqar_dry_run():
    r = run([sys.executable, "scripts/paper/mqar.py", "grid", "--dry-run"])
    train = [ln.split() for ln in r.stdout.splitlines() if ln.strip().startswith("./train_mamba2cu")]
    evals = [ln.split() for ln in r.stdout.splitlines() if ln.strip().startswith("./eval_mamba2cu")]
    # 3 T x (4 attention + 4 d x N 16, 64) x 3 LRs = 108; N=256 skipped (GPU SSD)
    check("mqar grid --dry-run: 108 train and 108 eval commands, N=256 listed as skipped",
          r.returncode == 0 and len(train) == 108 and len(evals) == 108 and "mamba2_N256_d32" in r.stdout,
          f"{len(train)} train, {len(evals)} eval; {r.stderr[-200:]}")

    def flag(cmd, f):
        return cmd[cmd.index(f) + 1]
    bad = [c for c in train if flag(c, "-M") != "1" or int(flag(c, "-b")) * int(flag(c, "-t")) != 32768
           or "vocab=8192" not in flag(c, "-e") or "n_layer=2" not in flag(c, "-e")]
    bad += [c for c in evals if flag(c, "-M") != "1" or "mqar_test_kv*" not in flag(c, "-i")]
    check("mqar grid: every run -M 1, B*T = 32768, vocab 8192, 2 layers; eval on the test slices with -M 1", not bad,
          " ".join(bad[0]) if bad else "")
    kinds = {("pattern=AA" in flag(c, "-e"), flag(c, "-t")) for c in train}
    check("mqar grid: attention (pattern=AA) and Mamba-2 runs at T 256, 512, 1024", kinds == {
        (a, t) for a in (True, False) for t in ("256", "512", "1024")}, str(sorted(kinds)))
    # --epochs: the same steps over a training set E times smaller (T=256, B=128: 16000 x 128 / 8 / 4 counts)
    r = run([sys.executable, "scripts/paper/mqar.py", "grid", "--dry-run", "--seq-lens", "256", "--steps", "16000",
             "--epochs", "8"])
    check("mqar grid --epochs 8 --steps 16000: train set 64000 examples per pair count, 8 epochs, -x 16000",
          r.returncode == 0 and "train set 64000 examples per pair count" in r.stdout and "(8 epochs)" in r.stdout
          and " -x 16000 " in r.stdout, r.stdout[:300] + r.stderr[-200:])
    r = run([sys.executable, "scripts/paper/mqar.py", "grid", "--dry-run", "--epochs", "0"])
    check("mqar grid --epochs 0 is refused", r.returncode != 0 and "--epochs" in r.stderr, r.stderr[-200:])


FAKE_EVAL = """#!/usr/bin/env python3
# stands in for eval_mamba2cu in the test: checks its arguments, prints the accuracy line with accuracy = 10 x LR
import json, os, sys
a = sys.argv
ckpt = a[a.index("-e") + 1]
assert a[a.index("-M") + 1] == "1", "eval without -M 1"
assert os.path.exists(ckpt), "no checkpoint " + ckpt
lr = json.load(open(os.path.join(os.path.dirname(ckpt), "run.json")))["lr"]
print("mean loss 1.0 nats/token")
print("accuracy %.6f over 1234 targets" % (10 * lr))
"""


def test_mqar_grid_cpu(tmp):
    if not os.access(TRAINER, os.X_OK):
        check("CPU trainer ./train_mamba2 present", False, "build it with `make train_mamba2`")
        return
    fake = os.path.join(tmp, "fake_eval.py")
    with open(fake, "w") as f:
        f.write(FAKE_EVAL)
    os.chmod(fake, 0o755)
    out, data = os.path.join(tmp, "mqar_runs"), os.path.join(tmp, "mqar_data")
    cmd = [sys.executable, "scripts/paper/mqar.py", "grid", "--trainer", TRAINER, "--evaluator", fake, "--cpu-rules",
           "--models", "mamba2", "--seq-lens", "64", "--d-models", "16", "--states", "8", "--lrs", "0.01,0.003",
           "--steps", "3", "--tokens-per-step", "256", "--data", data, "--out", out, "--workers", "2", "--jobs", "2", "--per-slice"]
    r = run(cmd, env={"OMP_NUM_THREADS": "1"})
    check("mqar grid on the CPU trainer (2 LRs, 3 steps each, fake eval) finishes", r.returncode == 0 and
          r.stdout.count("accuracy") == 2, (r.stdout + r.stderr)[-500:])
    res = sorted(glob.glob(os.path.join(out, "T64", "*", "result.json")))
    accs = sorted(json.load(open(p))["accuracy"] for p in res)
    logs = [open(os.path.join(os.path.dirname(p), "main.log")).read() for p in res]
    check("mqar grid: result.json per run (accuracy parsed from the eval line), main.log with val loss",
          accs == [0.03, 0.1] and all("tel:" in x for x in logs), f"{accs}")
    slices = sorted(k for k in (json.load(open(res[0])) if res else {}) if k.startswith("acc_kv"))
    check("mqar grid --per-slice: an accuracy per pair count of T=64 (2, 4, 8, 16)",
          slices == ["acc_kv16", "acc_kv2", "acc_kv4", "acc_kv8"], str(slices))
    check("mqar grid: data generated with 16 train examples per pair count (3 steps x 4 rows / ... one epoch)",
          os.path.exists(os.path.join(data, "T64", "mqar_test_kv16_000000.bin.mask")))
    r2 = run(cmd, env={"OMP_NUM_THREADS": "1"})
    stamps = [os.path.getmtime(p) for p in res]
    check("mqar grid run again: finished runs are skipped (result.json untouched)",
          r2.returncode == 0 and stamps == [os.path.getmtime(p) for p in res], (r2.stdout + r2.stderr)[-300:])
    # the budget counts a run beside others as slower (its share of the GPU): a run planned at ~5 s fits a 9 s budget
    # one at a time, not 4 at once (5 s x 4 / JOBS_SPEEDUP 1.2 = 17 s)
    def budgeted(jobs, name):
        c = cmd[:]
        c[c.index("--out") + 1] = os.path.join(tmp, name)
        c[c.index("--jobs") + 1] = str(jobs)
        return run(c + ["--budget-minutes", "0.15"], env={"OMP_NUM_THREADS": "1"})
    r4, r5 = budgeted(4, "mqar_budget4"), budgeted(1, "mqar_budget1")
    check("mqar grid --budget-minutes 0.15: with --jobs 4 no run starts, with --jobs 1 the first does",
          "budget: 2 runs not started" in r4.stdout and r5.stdout.count("accuracy") >= 1,
          (r4.stdout + r5.stdout)[-400:])
    # the plan learns from finished runs: a run of the same model (another LR) measured at 1000 s keeps the other
    # one from starting in a 9 s budget, where the guess (~5 s) would start it
    slow = os.path.join(tmp, "mqar_measured")
    shutil.copytree(os.path.join(out, "T64"), os.path.join(slow, "T64"))
    first = sorted(glob.glob(os.path.join(slow, "T64", "*", "result.json")))[0]
    json.dump(dict(json.load(open(first)), train_s=1000.0, jobs=1), open(first, "w"))
    os.remove(sorted(glob.glob(os.path.join(slow, "T64", "*", "result.json")))[1])
    c = cmd[:]
    c[c.index("--out") + 1], c[c.index("--jobs") + 1] = slow, "1"
    r6 = run(c + ["--budget-minutes", "0.15"], env={"OMP_NUM_THREADS": "1"})
    check("mqar grid: a run planned from the same model's measured 1000 s is not started in a 9 s budget",
          "1 runs finished before" in r6.stdout and "budget: 1 runs not started" in r6.stdout,
          (r6.stdout + r6.stderr)[-400:])
    # a run still going at the budget's end is killed, without result.json: the call ends on time
    sleeper = os.path.join(tmp, "sleeping_trainer.py")
    with open(sleeper, "w") as f:
        f.write("#!/usr/bin/env python3\nimport time\ntime.sleep(120)\n")
    os.chmod(sleeper, 0o755)
    c = cmd[:]
    c[c.index("--out") + 1], c[c.index("--jobs") + 1] = os.path.join(tmp, "mqar_killed"), "1"
    c[c.index("--trainer") + 1] = sleeper
    t0 = time.time()
    r7 = run(c + ["--budget-minutes", "0.15"])
    took = time.time() - t0
    check("mqar grid: a run still going at the budget's end is killed (no result.json) and the grid ends on time",
          "stopped at the budget's end" in r7.stdout and took < 60 and
          not glob.glob(os.path.join(tmp, "mqar_killed", "T64", "*", "result.json")),
          f"took {took:.0f} s: " + (r7.stdout + r7.stderr)[-400:])
    prefix = os.path.join(tmp, "fig8_cpu")
    r3 = run([sys.executable, "scripts/paper/mqar.py", "collect", out, "--out", prefix])
    md = open(prefix + ".md").read() if os.path.exists(prefix + ".md") else ""
    check("mqar collect: the table keeps the best LR (accuracy 0.100 at lr 0.01)",
          r3.returncode == 0 and "| Mamba-2 (N=8) | 0.100 (0.01) |" in md, md[-300:])
    head = open(prefix + ".csv").readline().strip().split(",") if os.path.exists(prefix + ".csv") else []
    check("mqar collect: the CSV has the per-slice columns in pair-count order",
          head[-4:] == ["acc_kv2", "acc_kv4", "acc_kv8", "acc_kv16"], str(head))


def test_paper_tables(tmp):
    _, plot_paper = paper_modules()
    rows = plot_paper.mqar_rows(os.path.join(PAPER_FIXTURE, "mqar"))
    check("plot_paper fig8: 9 fixture runs read", len(rows) == 9, str(len(rows)))
    best = plot_paper.best_over_lr(rows)
    want = {(256, "Attention", 32): (0.55, 0.01), (256, "Attention", 64): (0.97, 0.001),
            (256, "Mamba-2 (N=16)", 32): (0.12, 0.001), (256, "Mamba-2 (N=16)", 64): (0.62, 0.01),
            (512, "Attention", 32): (0.25, 0.001)}
    check("plot_paper fig8: best accuracy over LRs per point (a tie keeps the smaller LR)", best == want, str(best))
    prefix = os.path.join(tmp, "paper_fig8")
    r = run([sys.executable, "scripts/plot_paper.py", "fig8", os.path.join(PAPER_FIXTURE, "mqar"), "--out", prefix])
    lines = list(csv.DictReader(open(prefix + ".csv"))) if os.path.exists(prefix + ".csv") else []
    md = open(prefix + ".md").read() if os.path.exists(prefix + ".md") else ""
    check("plot_paper fig8: CSV has every run, markdown a panel per T with '-' for missing points",
          r.returncode == 0 and len(lines) == 9 and "**T = 512**" in md and "| Mamba-2 (N=16) | - | - |" in md
          and "| Attention | 0.550 (0.01) | 0.970 (0.001) |" in md, md[:300])
    py = python_with_matplotlib()
    if py:
        r = run([py, "scripts/plot_paper.py", "fig8", os.path.join(PAPER_FIXTURE, "mqar"), "--out", prefix])
        check("plot_paper fig8: PNG written with matplotlib", os.path.exists(prefix + ".png"))
    else:
        check("plot_paper fig8 without matplotlib: says so, exit 0, no PNG", r.returncode == 0 and "matplotlib is "
              "missing" in r.stdout and not os.path.exists(prefix + ".png"))
    lm = plot_paper.lm_rows(os.path.join(PAPER_FIXTURE, "lm"))
    by = {x["dir"].split(os.sep)[-1]: x for x in lm}
    check("plot_paper lm: final val loss is the last tel line (a step logged twice keeps the last)",
          by["tpp_f1"]["final_val_loss"] == 4.1 and by["mamba2_f3"]["final_val_loss"] == 3.3, str(
              {k: v["final_val_loss"] for k, v in by.items()}))
    check("plot_paper lm: FLOPs = last step x tokens per step x FLOPs per token",
          by["mamba2_f1"]["flops"] == 100 * 131072 * 4.45e7, str(by["mamba2_f1"].get("flops")))
    prefix = os.path.join(tmp, "paper_table2")
    r = run([sys.executable, "scripts/plot_paper.py", "table2", os.path.join(PAPER_FIXTURE, "lm"), "--out", prefix])
    md = open(prefix + ".md").read() if os.path.exists(prefix + ".md") else ""
    check("plot_paper table2: the three table2 runs, ordered 0, 1, Transformer++, the best in bold",
          r.returncode == 0 and "| Num. attn blocks | 0 (Mamba-2) | 1 | Transformer++ |" in md and
          "| val perplexity | 27.113 | **24.533** | 29.964 |" in md, md)
    prefix = os.path.join(tmp, "paper_fig9")
    r = run([sys.executable, "scripts/plot_paper.py", "fig9", os.path.join(PAPER_FIXTURE, "lm"), "--out", prefix])
    rows9 = list(csv.DictReader(open(prefix + ".csv"))) if os.path.exists(prefix + ".csv") else []
    check("plot_paper fig9: the four fig9 runs (the shared f3 models included), not the hybrid",
          r.returncode == 0 and sorted(x["label"] for x in rows9) == ["mamba2_f1", "mamba2_f3", "tpp_f1", "tpp_f3"],
          str([x["label"] for x in rows9]))


def test_lm_dry_runs():
    r = run([sys.executable, "scripts/paper/lm.py", "both", "--dry-run"])
    cmds = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("./train_mamba2cu")]
    outs = sorted(c[c.index("-o") + 1].split("/")[-1] for c in cmds)
    check("lm both --dry-run: 8 runs, the shared f3 Mamba-2 and Transformer++ once each",
          r.returncode == 0 and outs == sorted(["mamba2_f3", "hybrid1_f3", "hybrid2_f3", "tpp_f3", "mamba2_f1",
                                                 "tpp_f1", "mamba2_f2", "tpp_f2"]), str(outs))
    f3 = [c for c in cmds if c[c.index("-o") + 1].endswith("_f3")]
    same = {(c[c.index("-l") + 1], c[c.index("-x") + 1], c[c.index("-d") + 1]) for c in f3}
    check("lm: every f3 model has the same LR, steps and batch (Table 2: same hyperparameters)", len(same) == 1,
          str(same))
    r = run([sys.executable, "scripts/paper/lm.py", "pile", "350m", "transformer++", "--gpus", "8", "--dry-run"])
    c = next((ln.split() for ln in r.stdout.splitlines() if ln.startswith("mpirun")), [])
    ok = (c[:3] == ["mpirun", "-np", "8"] and c[c.index("-d") + 1] == "524288" and c[c.index("-x") + 1] == "13500"
          and c[c.index("-l") + 1] == "0.0015" and "pattern=" + "AF" * 24 in c[c.index("-e") + 1]
          and c[c.index("-b") + 1] == "8") if c else False
    check("lm pile 350m transformer++ on 8 GPUs: Table 9's 13500 steps of 0.5M tokens, LR 1.5e-3, 24 (A, F) pairs",
          ok, r.stdout[-400:])
    r = run([sys.executable, "scripts/paper/lm.py", "pile", "125m", "mamba2", "--dry-run"])
    check("lm pile 125m mamba2: 24 Mamba-2 blocks at d 768, 4800 steps, 2.52B tokens",
          r.returncode == 0 and "d_model=768,n_layer=24," in r.stdout and "-x 4800" in r.stdout and "2.52B" in r.stdout,
          r.stdout[-300:])


def main():
    tmp = tempfile.mkdtemp(prefix="test_scripts_")
    try:
        t0 = time.time()
        test_plot(tmp)
        test_dry_runs()
        test_sweep_resume(tmp)
        test_models()
        test_mqar_dry_run()
        test_mqar_grid_cpu(tmp)
        test_paper_tables(tmp)
        test_lm_dry_runs()
        print(f"({time.time() - t0:.1f} s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
