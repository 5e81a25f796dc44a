"""
Tests of the scaling run (dev/run_scaling.sh) and its report (dev/scaling_report.py), on the CPU, standard library
only. Compared against simpler things: the run list written out by hand from issue 8, efficiencies computed by hand
from synthetic trainer logs in print_benchmark's exact format, the memory the trainer printed for 130M on the H100,
and a stand-in trainer (a shell script) that lets the real (non-dry) launch path run without a GPU.

    python3 dev/test_scaling.py
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import scaling_report as sr  # noqa: E402

PASSED, FAILED = 0, 0
TMPDIRS = []


def tmpdir():
    TMPDIRS.append(tempfile.mkdtemp(prefix="test_scaling_"))
    return TMPDIRS[-1]


def check(name, ok, detail=""):
    global PASSED, FAILED
    if ok:
        PASSED += 1
    else:
        FAILED += 1
    detail = " ".join(str(detail).split())  # one line; the whole detail when failing, a short one when passing
    if ok and len(detail) > 100:
        detail = ""
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
    return ok


def close(got, want, tol=1e-9):
    return got is not None and abs(got - want) <= tol * max(1.0, abs(want))


# ---------------------------------------------------------------------------------------------------------------
# 1. the dry run lists the expected runs with the right flags

def dry_run(*args, env_extra=None):
    env = dict(os.environ, OUT=os.path.join(tmpdir(), "out"), **(env_extra or {}))
    p = subprocess.run(["bash", os.path.join(HERE, "run_scaling.sh"), "--dry-run", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    return p, env["OUT"]


def parse_dry(text):
    """{run name: [one dict per process: env vars and trainer flags]} from the dry run's listing"""
    runs, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^== run (\S+) \(", line)
        if m:
            cur = m.group(1)
            runs[cur] = []
            continue
        if cur and line.startswith("    ") and "train_mamba2cu" in line:
            words = shlex.split(line.split(">")[0])
            env = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_0-9]+=", w))
            trainer = words.index(next(w for w in words if w.endswith("train_mamba2cu")))
            flags, rest = {}, words[trainer + 1:]
            for i in range(0, len(rest) - 1, 2):
                flags[rest[i]] = rest[i + 1]
            runs[cur].append(dict(env=env, flags=flags, log=line.split(">")[1].split()[0]))
    return runs


def expected_runs(ngpu, quick=False):
    """issue 8's list, written out plainly: name -> (GPUs, ZeRO, -b, -d)"""
    gs = [g for g in (1, 2, 4, 8) if g <= ngpu]
    out = {}
    for model in ("130m", "1.3b"):
        for g in gs:
            for z in ((0,) if g == 1 else (0, 1)):
                out[f"speed_{model}_g{g}_z{z}"] = (g, z, 8, 8 * 2048 * g)
    agree_gs = [max(gs)] if quick else [g for g in gs if g > 1]
    for g in agree_gs:
        out[f"agree_g{g}_ref"] = (1, 0, 4, 1024 * g)
        for z in (0, 1):
            out[f"agree_g{g}_z{z}"] = (g, z, 4, 1024 * g)
    return out


def check_dry(ngpu, quick=False):
    args = ["--gpus", str(ngpu)] + (["--quick"] if quick else [])
    label = f"dry run --gpus {ngpu}{' --quick' if quick else ''}"
    p, out = dry_run(*args)
    if not check(f"{label}: exits 0", p.returncode == 0, p.stderr.strip()[-300:]):
        return
    runs = parse_dry(p.stdout)
    want = expected_runs(ngpu, quick)
    check(f"{label}: the planned runs are exactly issue 8's list ({len(want)})", set(runs) == set(want),
          f"extra {sorted(set(runs) - set(want))}, missing {sorted(set(want) - set(runs))}")
    bad = []
    for name, (g, z, b, d) in want.items():
        procs = runs.get(name, [])
        if len(procs) != g:
            bad.append(f"{name}: {len(procs)} processes, want {g}")
            continue
        ranks = sorted(int(pr["env"].get("RANK", 0)) for pr in procs)
        if ranks != list(range(g)):
            bad.append(f"{name}: ranks {ranks}")
        for pr in procs:
            f, env = pr["flags"], pr["env"]
            if g > 1 and (env.get("WORLD_SIZE") != str(g) or env.get("LOCAL_RANK") != env.get("RANK")
                          or not env.get("MAMBA2_RENDEZVOUS", "").startswith("file:")):
                bad.append(f"{name}: env {env}")
            if g == 1 and "WORLD_SIZE" in env:
                bad.append(f"{name}: a 1-GPU run with WORLD_SIZE set")
            if f.get("-z") != str(z) or f.get("-b") != str(b) or f.get("-d") != str(d):
                bad.append(f"{name}: -z {f.get('-z')} -b {f.get('-b')} -d {f.get('-d')}, want -z {z} -b {b} -d {d}")
            if name.startswith("speed"):
                model = name.split("_")[1]
                first = name == "speed_1.3b_g1_z0"
                e_ok = f.get("-e") == model or (model == "1.3b" and not first and f.get("-e", "").endswith(".bin"))
                if not e_ok or f.get("-p") != "1" or f.get("-t") != "2048":
                    bad.append(f"{name}: -e {f.get('-e')} -p {f.get('-p')} -t {f.get('-t')}")
                steps = int(f.get("-x", 0))
                if not (8 if quick else 12) <= steps <= 25:
                    bad.append(f"{name}: -x {steps}")
            elif f.get("-x") != "20":
                bad.append(f"{name}: agreement -x {f.get('-x')}, want 20")
        if len({pr["log"] for pr in procs}) != g:
            bad.append(f"{name}: ranks share a log file")
    bad = list(dict.fromkeys(bad))  # one line per problem, not per rank
    check(f"{label}: processes, WORLD_SIZE/RANK/LOCAL_RANK, -e -b -d -z -p -x of every run", not bad,
          "; ".join(bad[:4]))
    m = re.search(r"estimate: (\d+) runs, ~(\d+) s in all \(budget (\d+) s", p.stdout)
    check(f"{label}: prints an estimate within the budget (well under the 10-minute command)",
          m is not None and int(m.group(1)) == len(want) and int(m.group(2)) <= int(m.group(3)) <= 570,
          m.group(0) if m else "no 'estimate:' line")
    check(f"{label}: NCCL NVLink multicast off, nothing written", "NCCL_NVLS_ENABLE=0" in
          open(os.path.join(HERE, "run_scaling.sh")).read() and not os.path.exists(out))


def check_dry_errors():
    p, _ = dry_run("--gpus", "four")
    check("dry run --gpus four: refused with a message", p.returncode != 0 and "not a whole number" in p.stderr,
          p.stderr.strip())
    p, _ = dry_run("--frobnicate")
    check("unknown flag: refused with a message", p.returncode != 0 and "unknown argument" in p.stderr,
          p.stderr.strip())
    p, _ = dry_run()
    runs = parse_dry(p.stdout)
    check("dry run without --gpus plans 8 GPUs", p.returncode == 0 and "speed_1.3b_g8_z1" in runs)


# ---------------------------------------------------------------------------------------------------------------
# 2. the report on synthetic trainer outputs (print_benchmark's and log_train's formats, copied)

def trainer_log(model, world, zero, ms, tps, B=8, T=2048, gpu="NVIDIA H200", alloc=13.52, steps=20, tail=True):
    zero_txt = ", ZeRO-1" if zero else ""
    lines = [f"device: {gpu}, 139.8 GiB, precision bf16; {world} GPU{'s' if world > 1 else ''}{zero_txt}",
             "model: d_model 768, n_layer 24, d_state 128, headdim 64, expand 2, ngroups 1, d_conv 4, vocab 50277 "
             "(padded 50288), chunk 256 -> d_inner 1536, nheads 24", "parameters: 128989632",
             f"train: 30313008 tokens, B={B} T={T} on each of {world} GPU(s), grad accumulation 1 -> "
             f"{B * T * world} tokens/step", "activations: 12.94 GiB"]
    for s in range(1, steps + 1):
        lines.append(f"step {s:5d}/{steps} | loss {10.9 - 0.1 * s:.6f} | lr 1.00e-03 | norm 1.0000 | {ms:.1f} ms | "
                     f"{tps:.0f} tok/s | eta 0h00m01s")
    lines.append(f"total time 2.0 s, GPU memory in use {alloc + 0.6:.2f} GiB")
    if tail:
        lines += ["", f"== benchmark: {model}, 24 layers, d_model 768, B={B} T={T} ({B * T * world} tokens/step), "
                  f"bf16, {world} x {gpu}",
                  f"ms/step          {ms:.1f} (median of {steps - 3} steps after 3 warm-up)",
                  f"tokens/s         {tps:.0f}",
                  "model FLOPs      0.860 GFLOP/token -> 194.2 TFLOP/s per GPU, MFU 19.6% of 989 TFLOP/s (H100 bf16 "
                  "dense)",
                  f"GPU memory       {alloc:.2f} GiB allocated by the trainer (its peak: allocations are made once); "
                  f"{alloc + 0.57:.2f} GiB in use on the device (incl. CUDA context, cuBLAS)",
                  "one step (the last), by kernel family, main stream:",
                  "  SSD backward                      25.76 ms   35.3%"]
    return "\n".join(lines) + "\n"


def loss_log(losses, world=1):
    lines = [f"device: NVIDIA H200, 139.8 GiB, precision bf16; {world} GPU{'s' if world > 1 else ''}"]
    n = len(losses)
    for s, v in enumerate(losses, 1):
        lines.append(f"step {s:5d}/{n} | loss {v:.6f} | lr 2.00e-03 | norm 0.5000 | 3.0 ms | 300000 tok/s | eta 0h00m00s")
    return "\n".join(lines) + "\n"


def write_plan(d, rows):
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    with open(os.path.join(d, "plan.tsv"), "w") as f:
        f.write("\t".join(sr.PLAN_FIELDS) + "\n")
        for r in rows:
            f.write("\t".join(str(x) for x in r) + "\n")


def write_log(d, name, text):
    with open(os.path.join(d, "logs", f"{name}.rank0.txt"), "w") as f:
        f.write(text)


def synthetic_workdir():
    """130M on 1, 2, 4, 8 GPUs with tokens/s picked so that the efficiencies are round numbers; some broken logs"""
    d = tmpdir()
    rows = []
    for g, z in ((1, 0), (2, 0), (2, 1), (4, 0), (4, 1), (8, 0), (8, 1)):
        rows.append((f"speed_130m_g{g}_z{z}", "speed", "130m", g, z, 8, 2048, 20, ""))
    rows += [("speed_1.3b_g1_z0", "speed", "1.3b", 1, 0, 8, 2048, 12, ""),
             ("speed_1.3b_g4_z0", "speed", "1.3b", 4, 0, 8, 2048, 12, ""),
             ("speed_1.3b_g4_z1", "speed", "1.3b", 4, 1, 8, 2048, 12, ""),
             ("speed_1.3b_g8_z0", "speed", "1.3b", 8, 0, 8, 2048, 12, "")]
    rows += [("agree_g4_ref", "agree_ref", "small", 1, 0, 4, 256, 20, ""),
             ("agree_g4_z0", "agree", "small", 4, 0, 4, 256, 20, "agree_g4_ref"),
             ("agree_g4_z1", "agree", "small", 4, 1, 4, 256, 20, "agree_g4_ref"),
             ("agree_g8_ref", "agree_ref", "small", 1, 0, 4, 256, 20, ""),
             ("agree_g8_z0", "agree", "small", 8, 0, 4, 256, 20, "agree_g8_ref"),
             ("agree_g8_z1", "agree", "small", 8, 1, 4, 256, 20, "agree_g8_ref")]
    write_plan(d, rows)
    # tokens/s = B*T*G / ms; 1 GPU: 16384 tokens in 81.92 ms = 200,000 tokens/s
    for g, z, tps in ((1, 0, 200000), (2, 0, 380000), (2, 1, 370000), (4, 0, 720000), (4, 1, 700000),
                      (8, 0, 1440000)):
        write_log(d, f"speed_130m_g{g}_z{z}", trainer_log("130m", g, z, 16384 * g / tps * 1000, tps))
    # 8 GPUs ZeRO-1: died in NCCL (no benchmark report)
    write_log(d, "speed_130m_g8_z1", trainer_log("130m", 8, 1, 90.0, 1400000, tail=False)
              + "error: NCCL error at llmc/multigpu.h:230: unhandled system error\n")
    write_log(d, "speed_1.3b_g1_z0", trainer_log("1.3b", 1, 0, 655.36, 25000, alloc=72.7, steps=12))
    # 4 GPUs: the log says 2 GPUs (launched wrong): must not be counted as a 4-GPU figure
    write_log(d, "speed_1.3b_g4_z0", trainer_log("1.3b", 2, 0, 655.36, 50000, alloc=72.7, steps=12))
    # speed_1.3b_g4_z1: skipped by the time budget; speed_1.3b_g8_z0: no log at all
    with open(os.path.join(d, "logs", "speed_1.3b_g4_z1.skipped"), "w") as f:
        f.write("would end at ~560 s, past the 540 s budget\n")
    ref = [5.5 - 0.1 * s for s in range(20)]
    write_log(d, "agree_g4_ref", loss_log(ref))
    run = list(ref)
    run[6] = ref[6] * (1 + 5e-4)  # step 7: 5e-4 relative, under the 1e-3 tolerance
    write_log(d, "agree_g4_z0", loss_log(run, 4))
    run = list(ref)
    run[11] = ref[11] * (1 - 2e-3)  # step 12: 2e-3, over it
    write_log(d, "agree_g4_z1", loss_log(run, 4))
    write_log(d, "agree_g8_ref", loss_log(ref))
    write_log(d, "agree_g8_z0", loss_log(ref[:15], 8))  # stopped after 15 steps
    write_log(d, "agree_g8_z1", "")  # empty: crashed before printing anything
    return d


def check_report():
    d = synthetic_workdir()
    plan = sr.read_plan(d)
    rows = {r["name"]: r for r in sr.speed_rows(d, plan)}
    # hand-computed: efficiency = tokens/s / (G x 200,000)
    want = {"speed_130m_g1_z0": 1.0, "speed_130m_g2_z0": 0.95, "speed_130m_g2_z1": 0.925, "speed_130m_g4_z0": 0.90,
            "speed_130m_g4_z1": 0.875, "speed_130m_g8_z0": 0.90}
    for name, eff in want.items():
        check(f"report: {name} efficiency {eff:.3f}", close(rows[name].get("eff"), eff, 1e-6),
              f"got {rows[name].get('eff')}")
    check("report: 4 GPUs ZeRO-1 at 87.5% misses the 90% target, 8 GPUs at 90% meets 85%",
          sr.verdict(rows["speed_130m_g4_z1"]["eff"], rows["speed_130m_g4_z1"]["target"]) == "NO"
          and sr.verdict(rows["speed_130m_g8_z0"]["eff"], rows["speed_130m_g8_z0"]["target"]) == "yes"
          and sr.verdict(rows["speed_130m_g4_z0"]["eff"], rows["speed_130m_g4_z0"]["target"]) == "yes")
    r = rows["speed_130m_g4_z0"]
    check("report: 4 GPUs: ms/step, tokens/s, per GPU, memory from the log",
          close(r["ms"], 91.0, 1e-3) and r["tps"] == 720000 and r["tps_gpu"] == 180000 and r["alloc_gib"] == 13.52,
          f"{r.get('ms')} {r.get('tps')} {r.get('tps_gpu')} {r.get('alloc_gib')}")
    check("report: 1.3B on 1 GPU: 25,000 tokens/s, efficiency 100%",
          rows["speed_1.3b_g1_z0"]["tps"] == 25000 and close(rows["speed_1.3b_g1_z0"]["eff"], 1.0))
    e = rows["speed_130m_g8_z1"].get("error", "")
    check("report: a run that died is reported with the trainer's error line", "malformed" in e and "NCCL error" in e,
          e)
    e = rows["speed_1.3b_g4_z0"].get("error", "")
    check("report: a log whose GPU count disagrees with the plan is refused", "planned 4 GPUs" in e, e)
    e = rows["speed_1.3b_g4_z1"].get("error", "")
    check("report: a skipped run says why", e.startswith("skipped") and "budget" in e, e)
    e = rows["speed_1.3b_g8_z0"].get("error", "")
    check("report: a missing log is reported", e.startswith("missing"), e)

    ag = {r["name"]: r for r in sr.agree_rows(d, plan, 1e-3)}
    check("agreement: 5e-4 at step 7", close(ag["agree_g4_z0"].get("diff"), 5e-4, 1e-6)
          and ag["agree_g4_z0"]["at"] == 7, f"{ag['agree_g4_z0'].get('diff')} at step {ag['agree_g4_z0'].get('at')}")
    check("agreement: 2e-3 at step 12, over the tolerance", close(ag["agree_g4_z1"].get("diff"), 2e-3, 1e-6)
          and ag["agree_g4_z1"]["at"] == 12)
    check("agreement: a run short of 20 steps is reported", "short: step 16" in ag["agree_g8_z0"].get("error", ""),
          ag["agree_g8_z0"].get("error", ""))
    check("agreement: an empty log is reported", "empty" in ag["agree_g8_z1"].get("error", ""),
          ag["agree_g8_z1"].get("error", ""))

    text, md, problems = sr.report(d)
    # problems: 130m g8 z1, 1.3b g4 z0, g4 z1, g8 z0, agree g4 z1 (over tol), g8 z0, g8 z1 = 7
    check("report: whole table printed, 7 problems counted", problems == 7 and "90.0%" in text and "87.5%" in text,
          f"{problems} problems")
    md_rows = [x for x in md.splitlines() if x.startswith("| 130m") or x.startswith("| 1.3b")]
    check("report: markdown has one row per speed run", len(md_rows) == 11, f"{len(md_rows)} rows")
    out = subprocess.run([sys.executable, os.path.join(HERE, "scaling_report.py"), d], capture_output=True, text=True)
    check("report CLI: prints the table, exit status 1 with problems", out.returncode == 1
          and "tokens/s per GPU" in out.stdout and "7 problem(s)" in out.stdout, out.stdout[-300:] + out.stderr[-200:])
    empty = tmpdir()
    out = subprocess.run([sys.executable, os.path.join(HERE, "scaling_report.py"), empty], capture_output=True,
                         text=True)
    check("report CLI: a folder without plan.tsv is an error message, not a traceback",
          out.returncode == 2 and "plan.tsv not found" in out.stderr and "Traceback" not in out.stderr, out.stderr)

    # the checks above can fail: a wrong expected efficiency is caught, and the efficiency follows the 1-GPU run
    check("self-test: a wrong expected efficiency (0.92 for 0.90) is caught",
          not close(rows["speed_130m_g4_z0"]["eff"], 0.92, 1e-6))
    write_log(d, "speed_130m_g1_z0", trainer_log("130m", 1, 0, 16384 / 180000 * 1000, 180000))
    rows2 = {r["name"]: r for r in sr.speed_rows(d, plan)}
    check("self-test: the efficiency is taken against the 1-GPU run (180,000 tokens/s -> 4 GPUs 100%)",
          close(rows2["speed_130m_g4_z0"]["eff"], 1.0, 1e-6), f"{rows2['speed_130m_g4_z0'].get('eff')}")


# ---------------------------------------------------------------------------------------------------------------
# 3. the memory estimate that chose the 1.3B micro-batch

def check_estimate():
    c = sr.model_config("130m")
    check("estimate: 130M has 128,989,632 parameters (the trainer's 'parameters:' line)",
          sr.param_count(c) == 128989632, str(sr.param_count(c)))
    check("estimate: 130M costs 0.860 GFLOP/token (doc/peers.md, the trainer's report)",
          round(sr.flops_per_token(c, 2048) / 1e9, 3) == 0.860)
    gib = sr.gpu_bytes(c, 8, 2048) / 2**30
    check("estimate: 130M B=8 T=2048 within 0.05 GiB of the 13.52 GiB the trainer allocated (H100, make bench)",
          abs(gib - 13.52) < 0.05, f"{gib:.3f}")
    gib = sr.gpu_bytes(c, 8, 2048, recompute=1) / 2**30
    check("estimate: with -r 1 within 0.05 GiB of the trainer's 11.19 GiB", abs(gib - 11.19) < 0.05, f"{gib:.3f}")
    big = sr.model_config("1.3b")
    gib = sr.gpu_bytes(big, 8, 2048) / 2**30
    check("estimate: 1.3B B=8 T=2048 leaves room on an H200 (140 GiB; < 100 GiB allocated)", gib < 100,
          f"{gib:.2f} GiB")
    z = sr.gpu_bytes(big, 8, 2048, world=8, zero=1) / 2**30
    check("estimate: ZeRO-1 on 8 GPUs saves 7/8 of the AdamW moments less the gradient shard (8.13 GiB)",
          abs((gib - z) - 1343757312 * 8 * 7 / 8 / 2**30 + 1343757312 * 4 / 8 / 2**30) < 0.01, f"{gib - z:.2f}")


# ---------------------------------------------------------------------------------------------------------------
# 4. the real launch path, with a stand-in trainer (no GPU): logs per rank, plan, summary, tarball, budget

FAKE_TRAINER = r"""#!/bin/bash
# stand-in for train_mamba2cu: prints what the real one prints, at a speed of 100,000 tokens/s per GPU
e=tiny b=4 t=64 x=100 z=0 p=0 o=""
while [ $# -gt 1 ]; do
    case "$1" in -e) e=$2;; -b) b=$2;; -t) t=$2;; -x) x=$2;; -z) z=$2;; -p) p=$2;; -o) o=$2;; esac; shift 2
done
w=${WORLD_SIZE:-1}
# FAKE_FAIL_RANK=r: that rank of a several-GPU run fails at once while rank 0 would hang for a minute
if [ "$w" -gt 1 ] && [ -n "$FAKE_FAIL_RANK" ]; then
    [ "$RANK" = "$FAKE_FAIL_RANK" ] && { echo "error: NCCL error at llmc/multigpu.h:99: remote process exited" >&2; exit 1; }
    [ "$RANK" = 0 ] && { echo "device: Fake GPU, 139.8 GiB, precision bf16; $w GPUs"; sleep 60; }
fi
[ "${RANK:-0}" = 0 ] || exec > /dev/null
echo "args: -e $e"
zt=""; [ "$z" = 1 ] && [ "$w" -gt 1 ] && zt=", ZeRO-1"
echo "device: Fake GPU, 139.8 GiB, precision bf16; $w GPU$([ "$w" -gt 1 ] && echo s)$zt"
tok=$((b * t * w))
ms=$(awk -v tok=$tok -v w=$w 'BEGIN { printf "%.1f", tok / (100000.0 * w * (w > 1 ? 0.9 : 1)) * 1000 }')
for s in $(seq 1 "$x"); do echo "step $s/$x | loss $(awk -v s=$s 'BEGIN { printf "%.6f", 5 - 0.1 * s }') | lr 1.00e-03 | norm 1.0000 | $ms ms | 1 tok/s | eta 0h00m00s"; done
[ -n "$o" ] && mkdir -p "$o" && : > "$o/$(printf 'ckpt_%08d.bin' "$x")"
if [ "$p" = 1 ]; then
    echo "== benchmark: $e, 4 layers, d_model 64, B=$b T=$t ($tok tokens/step), bf16, $w x Fake GPU"
    echo "ms/step          $ms (median of $((x - 3)) steps after 3 warm-up)"
    echo "tokens/s         $(awk -v tok=$tok -v ms=$ms 'BEGIN { printf "%.0f", tok / ms * 1000 }')"
    echo "GPU memory       1.00 GiB allocated by the trainer (its peak: allocations are made once); 1.50 GiB in use on the device (incl. CUDA context, cuBLAS)"
fi
"""


def write_fake_trainer(d):
    """the stand-in trainer script in folder d, executable; returns its path"""
    fake = os.path.join(d, "fake_trainer")
    with open(fake, "w") as f:
        f.write(FAKE_TRAINER)
    os.chmod(fake, 0o755)
    return fake


def check_launch():
    d = tmpdir()
    fake = write_fake_trainer(d)
    out, work, init = os.path.join(d, "out"), os.path.join(d, "work"), os.path.join(d, "init")
    env = dict(os.environ, OUT=out, SCALING_WORK=work, SCALING_BIN=fake, SCALING_SKIP_BUILD="1",
               SCALING_INIT_DIR=init)
    p = subprocess.run(["bash", os.path.join(HERE, "run_scaling.sh"), "--gpus", "2", "--quick"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    check("stand-in run --gpus 2: exits 0 with every run measured", p.returncode == 0, (p.stdout + p.stderr)[-500:])
    files = sorted(os.listdir(out)) if os.path.isdir(out) else []
    check("stand-in run: $OUT holds at most 8 files, the logs in one tarball",
          len(files) <= 8 and "scaling_logs.tar.gz" in files and "summary.md" in files, str(files))
    logs = os.listdir(os.path.join(work, "logs")) if os.path.isdir(os.path.join(work, "logs")) else []
    check("stand-in run: one log per rank (2-GPU runs: rank0 and rank1)", "speed_130m_g2_z1.rank1.txt" in logs
          and "speed_1.3b_g2_z0.rank0.txt" in logs, str(sorted(logs))[:300])
    txt = open(os.path.join(work, "logs", "speed_1.3b_g2_z0.rank0.txt")).read() if logs else ""
    check("stand-in run: later 1.3B runs start from the first run's weights", f"-e {init}/ckpt_00000008.bin" in txt,
          txt[:200])
    summary = p.stdout[p.stdout.rfind("== data-parallel"):]
    check("stand-in run: the summary is printed last, 2 GPUs at 90.0% (the stand-in's speed)",
          "90.0%" in summary and "0 problem(s)" in summary, summary[-600:])
    # a tight budget: the runs that do not fit are skipped and the summary says so
    env.update(OUT=os.path.join(d, "out2"), SCALING_WORK=os.path.join(d, "work2"), SCALING_BUDGET_S="30",
               SCALING_INIT_DIR="none")
    p = subprocess.run(["bash", os.path.join(HERE, "run_scaling.sh"), "--gpus", "2", "--quick"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    check("stand-in run, 30 s budget: 1.3B runs skipped, reported, exit status 1",
          p.returncode == 1 and "skipped: would end" in p.stdout and "speed_1.3b_g1_z0" not in
          os.listdir(os.path.join(d, "work2", "logs")), p.stdout[-400:])


def check_fail_fast():
    """one rank fails: launch stops the others at once (not at their timeout), the report names the failed rank"""
    d = tmpdir()
    fake = write_fake_trainer(d)
    env = dict(os.environ, OUT=os.path.join(d, "out"), SCALING_WORK=os.path.join(d, "work"), SCALING_BIN=fake,
               SCALING_SKIP_BUILD="1", SCALING_INIT_DIR="none", FAKE_FAIL_RANK="1")
    t0 = time.time()
    p = subprocess.run(["bash", os.path.join(HERE, "run_scaling.sh"), "--gpus", "2", "--quick"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    took = time.time() - t0
    check("rank 1 fails: the 2-GPU runs are stopped at once (not after rank 0's 60 s)", took < 45, f"{took:.0f} s")
    summary = p.stdout[p.stdout.rfind("== data-parallel"):]
    check("rank 1 fails: the report shows rank 1's error line, exit status 1", p.returncode == 1
          and "rank1.txt: error: NCCL error" in summary and "FAILED" in p.stdout, summary[-400:])


def check_dry_mpi():
    p, _ = dry_run("--gpus", "4", "--mpi")
    lines = [x for x in p.stdout.splitlines() if x.startswith("    ") and "mpirun" in x]
    check("dry run --mpi: one mpirun -np G line per several-GPU run, NCCL_NVLS_ENABLE passed on",
          p.returncode == 0 and len(lines) == 12 and all("-x NCCL_NVLS_ENABLE" in x for x in lines)
          and sum("-np 4 " in x for x in lines) == 6, f"{len(lines)} mpirun lines")


def main():
    check_dry(4)
    check_dry(8)
    check_dry(8, quick=True)
    check_dry_errors()
    check_report()
    check_estimate()
    check_launch()
    check_fail_fast()
    check_dry_mpi()
    for d in TMPDIRS:
        shutil.rmtree(d, ignore_errors=True)
    print(f"{PASSED} passed, {FAILED} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
