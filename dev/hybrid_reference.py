#!/usr/bin/env python3
"""
hybrid_reference.py: a float64 torch model of mamba_ssm's hybrids that checks the CPU trainer and the GPU builds.

The oracle of the hybrid blocks (attention, gated MLP, next to Mamba-2) for the CPU trainer and the GPU build.

The model is written again here from mamba_ssm's semantics (MambaLMHeadModel with Mamba2, MHA, GatedMLP; doc/hybrid.md
has the layout), as plain torch in float64: no mamba_ssm, no flash_attn, no Triton. It loads a folder that
`./test_interop --dump-hybrid DIR` wrote (each model exported in mamba_ssm's form, and reference.safetensors with the
batch, the CPU trainer's logits, loss and every parameter gradient; one with packed documents and masked targets, run
here document by document), runs the same batch, and compares logits, loss and the gradient of every tensor with
`--ours`:

    cpu       reference.safetensors, the CPU trainer (fp32)                   every quantity: rel <= 1e-5
    gpu_fp32  gpu_fp32.safetensors, ./dev/cuda/hybrid_dump_fp32_bin DIR       every quantity: rel <= 1e-5
    gpu_bf16  gpu_bf16.safetensors, ./dev/cuda/hybrid_dump_bin DIR            logits, loss, gradients 6e-2;
                                                                              d A_log, d dt_bias 1.2e-1

where rel = max |ours - torch| / max |torch| over the whole tensor. The bf16 bounds are those test_hybrid.cu holds
the bf16 GPU build to on packed batches (twice its 3e-2 and 6e-2; test_mamba2.cu's comment says why): these models see
38 tokens (B 2, T 19), fewer than any batch of the GPU tests, so a gradient is a sum of few terms and the rounding of
each (bf16 activations and matmul operands, 2^-9 relative) weighs more. Measured on one H100 (bf16, this check):
gradients up to 4.6e-2 (hybrid_docs conv1d.weight; 3.9e-2 without documents), d A_log up to 7.2e-2; the fp32 build
of the same programs is within 1.8e-6 of torch, which is what shows the math is right. The injected bug still fails
80 of the 104 comparisons at these bounds.

RoPE's angles (`--rope-angles`): the CPU trainer computes pos * base^(-2i/rd) and its cos / sin in double; the GPU
kernels compute them in fp32 as flash_attn's RotaryEmbedding does (its inv_freq and positions in float32, cos / sin
in float32, then cast), which is also what mamba_ssm's MHA runs. The default follows --ours: float64 for cpu,
float32 (flash_attn's) for gpu_*, so each is compared with the rotation it implements. The difference is one fp32
rounding of an angle of up to T radians (test_hybrid.cu's note on it): at the dump's T = 19 it moves the CPU
trainer's largest gradient error from 1.924e-6 to 1.928e-6, so either setting passes; it matters at long T.

It prints one line per comparison with its error and tolerance, the largest relative error of each kind, and
`N passed, N failed`, and exits 1 on a failure (2 on a missing or bad file).

    ./test_interop --dump-hybrid /tmp/hybrid_dump
    python3 dev/hybrid_reference.py /tmp/hybrid_dump                       # expect: 4 models, 104 passed, 0 failed
    python3 dev/hybrid_reference.py /tmp/hybrid_dump --ours gpu_fp32 --device cuda     # GPU machine, after the dump
    python3 dev/hybrid_reference.py /tmp/hybrid_dump --inject-bug          # interleaved rotary pairs: must FAIL

dev/run_hybrid_reference.sh runs all of it on the GPU machine. Any python3 with torch will do; --device cuda runs the
float64 torch model on the GPU (the default is the CPU; Debian: apt-get install python3-torch, then /usr/bin/python3).

Semantics it encodes (mamba_ssm 2.x): pre-norm residual blocks (RMSNorm eps 1e-5); a layer is its mixer (Mamba2, or
MHA when its index is in attn_layer_idx) then, with d_intermediate > 0, a GatedMLP under its own norm2. MHA: in_proj
rows [q (Hq hd) | k (Hkv hd) | v (Hkv hd)], rotary (flash_attn's non-interleaved rotate-half) on the first
rotary_emb_dim dims of q and k at absolute positions, query head h uses kv head h // (Hq / Hkv), causal softmax with
scale 1/sqrt(hd), out_proj. GatedMLP: fc1 -> [y | gate], fc2(y * silu(gate)). Mamba2: in_proj -> [z | xBC | dt],
causal depthwise conv1d + SiLU on xBC, dt = softplus(dt + dt_bias), A = -exp(A_log), the SSM recurrence, D skip,
RMSNorm of y * silu(z) per group of E / ngroups channels, out_proj. LM head tied to the embedding; the loss is the
cross-entropy over the real vocabulary (the pad logits are not classes, as in the CPU trainer).
"""
import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

DTYPE = torch.float64
DEVICE = torch.device("cpu")  # --device

# (file, tolerance of logits / loss / a gradient, of d A_log and d dt_bias, RoPE angles by default) per --ours
OURS = {
    "cpu": ("reference.safetensors", 1e-5, 1e-5, "float64"),
    "gpu_fp32": ("gpu_fp32.safetensors", 1e-5, 1e-5, "float32"),
    "gpu_bf16": ("gpu_bf16.safetensors", 6e-2, 1.2e-1, "float32"),
}


def read_safetensors(path):
    """name -> tensor (F32 and I32 only, which is what the C side writes)"""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        fmt = {"F32": "f", "I32": "i"}[info["dtype"]]
        count = (hi - lo) // 4
        values = struct.unpack("<%d%s" % (count, fmt), data[lo:hi])
        dtype = torch.float32 if fmt == "f" else torch.int64
        out[name] = torch.tensor(values, dtype=dtype).reshape(info["shape"])
    return out


def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


ROPE_ANGLES = "float64"  # --rope-angles


def rotary_cos_sin(T, rd, base, device):
    """cos, sin (T, rd/2) of the angles t * base^(-2i/rd): in float64, or (float32) as flash_attn's RotaryEmbedding
    makes them: inv_freq and positions in float32, their outer product, cos and sin in float32"""
    angle_dtype = torch.float32 if ROPE_ANGLES == "float32" else DTYPE
    inv_freq = 1.0 / (base ** (torch.arange(0, rd, 2, dtype=angle_dtype, device=device) / rd))
    freqs = torch.outer(torch.arange(T, dtype=angle_dtype, device=device), inv_freq)
    return freqs.cos().to(DTYPE), freqs.sin().to(DTYPE)


def rotary(x, rd, base, bug):
    """flash_attn's non-interleaved rotary on the first rd dims of each head, pairs (i, i + rd/2); x (B, T, heads,
    hd). bug: GPT-J's interleaved pairs (2i, 2i + 1) instead (a shift of the positions would not do as a bug: RoPE's
    scores depend on position differences only)"""
    if rd == 0:
        return x
    T = x.shape[1]
    cos, sin = rotary_cos_sin(T, rd, base, x.device)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    if bug:
        x1, x2 = x[..., 0:rd:2], x[..., 1:rd:2]
        turned = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
        return torch.cat([turned, x[..., rd:]], dim=-1)
    x1, x2, rest = x[..., : rd // 2], x[..., rd // 2: rd], x[..., rd:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


def mha(x, p, pre, a, bug):
    B, T, _ = x.shape
    Hq, Hkv, hd = a["num_heads"], a["num_heads_kv"], a["head_dim"]
    qkv = x @ p[pre + "mixer.in_proj.weight"].T
    if a["qkv_proj_bias"]:
        qkv = qkv + p[pre + "mixer.in_proj.bias"]
    q = qkv[..., : Hq * hd].reshape(B, T, Hq, hd)
    k = qkv[..., Hq * hd: (Hq + Hkv) * hd].reshape(B, T, Hkv, hd)
    v = qkv[..., (Hq + Hkv) * hd:].reshape(B, T, Hkv, hd)
    q = rotary(q, a["rotary_emb_dim"], a["rotary_emb_base"], bug)
    k = rotary(k, a["rotary_emb_dim"], a["rotary_emb_base"], bug)
    k = torch.repeat_interleave(k, Hq // Hkv, dim=2)
    v = torch.repeat_interleave(v, Hq // Hkv, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(hd)
    mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    ctx = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v).reshape(B, T, Hq * hd)
    out = ctx @ p[pre + "mixer.out_proj.weight"].T
    if a["out_proj_bias"]:
        out = out + p[pre + "mixer.out_proj.bias"]
    return out


def gated_mlp(x, p, pre):
    y, gate = (x @ p[pre + "mlp.fc1.weight"].T).chunk(2, dim=-1)
    return (y * F.silu(gate)) @ p[pre + "mlp.fc2.weight"].T


def mamba2(x, p, pre, s, D):
    B, T, _ = x.shape
    E, N, P, G, K = s["expand"] * D, s["d_state"], s["headdim"], s["ngroups"], s["d_conv"]
    H = E // P
    zxbcdt = x @ p[pre + "mixer.in_proj.weight"].T
    z, xBC, dt = zxbcdt.split([E, E + 2 * G * N, H], dim=-1)
    w = p[pre + "mixer.conv1d.weight"]  # (C, 1, K)
    xBC = F.conv1d(xBC.transpose(1, 2), w, p[pre + "mixer.conv1d.bias"], padding=K - 1, groups=w.shape[0])
    xBC = F.silu(xBC[..., :T].transpose(1, 2))
    xs, Bm, Cm = xBC.split([E, G * N, G * N], dim=-1)
    xs = xs.reshape(B, T, H, P)
    Bm = Bm.reshape(B, T, G, N).repeat_interleave(H // G, dim=2)  # head h reads group h // (H / G)
    Cm = Cm.reshape(B, T, G, N).repeat_interleave(H // G, dim=2)
    dt = F.softplus(dt + p[pre + "mixer.dt_bias"])  # (B, T, H)
    A = -torch.exp(p[pre + "mixer.A_log"])
    h = torch.zeros(B, H, P, N, dtype=DTYPE, device=x.device)
    ys = []
    for t in range(T):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        h = h * decay + (dt[:, t, :, None, None] * xs[:, t, :, :, None]) * Bm[:, t, :, None, :]
        ys.append((h * Cm[:, t, :, None, :]).sum(-1) + p[pre + "mixer.D"][None, :, None] * xs[:, t])
    y = torch.stack(ys, dim=1).reshape(B, T, E)
    g = (y * F.silu(z)).reshape(B, T, G, E // G)
    g = rmsnorm(g, 1.0).reshape(B, T, E) * p[pre + "mixer.norm.weight"]
    return g @ p[pre + "mixer.out_proj.weight"].T


def attn_settings(cfg):
    """attn_cfg with MHA's own defaults for what is left out"""
    a = dict(cfg.get("attn_cfg") or {})
    D = cfg["d_model"]
    heads = a.get("num_heads", 0)
    return {
        "num_heads": heads, "num_heads_kv": a.get("num_heads_kv") or heads,
        "head_dim": a.get("head_dim") or (D // heads if heads else 0),
        "rotary_emb_dim": a.get("rotary_emb_dim", 0), "rotary_emb_base": float(a.get("rotary_emb_base", 10000.0)),
        "qkv_proj_bias": a.get("qkv_proj_bias", True), "out_proj_bias": a.get("out_proj_bias", True),
    }


def forward(cfg, p, tokens, bug):
    D, attn_idx = cfg["d_model"], set(cfg.get("attn_layer_idx") or [])
    s = dict(cfg.get("ssm_cfg") or {})
    for key, default in (("d_state", 128), ("d_conv", 4), ("expand", 2), ("headdim", 64), ("ngroups", 1)):
        s.setdefault(key, default)
    a = attn_settings(cfg)
    r = p["backbone.embedding.weight"][tokens]
    for layer in range(cfg["n_layer"]):
        pre = "backbone.layers.%d." % layer
        u = rmsnorm(r, p[pre + "norm.weight"])
        r = r + (mha(u, p, pre, a, bug) if layer in attn_idx else mamba2(u, p, pre, s, D))
        if cfg.get("d_intermediate", 0) > 0:
            r = r + gated_mlp(rmsnorm(r, p[pre + "norm2.weight"]), p, pre)
    logits = rmsnorm(r, p["backbone.norm_f.weight"]) @ p["backbone.embedding.weight"].T
    return logits[..., : cfg["vocab_size"]]


class Report:
    """counts, and the largest relative error of each kind of quantity (logits, loss, gradients)"""

    def __init__(self):
        self.passed = self.failed = 0
        self.worst = {}

    def compare(self, what, ours, ref, tol, kind="gradients"):
        if tuple(ours.shape) != tuple(ref.shape):
            self.refuse("%s: shape %s in our file, torch's %s" % (what, list(ours.shape), list(ref.shape)))
            return
        diff = (ours.to(DTYPE).cpu() - ref.to(DTYPE).cpu()).abs().max().item()
        scale = ref.abs().max().item()
        rel = diff / (scale if scale > 0 else 1e-30)
        ok = rel <= tol and bool(torch.isfinite(ours).all())
        self.passed += ok
        self.failed += not ok
        if kind not in self.worst or not rel <= self.worst[kind][0]:
            self.worst[kind] = (rel, what)
        print("[%s] %-58s max abs diff %.3e, max |torch| %.3e, rel %.3e (tol %.0e)" %
              ("ok  " if ok else "FAIL", what, diff, scale, rel, tol))

    def refuse(self, what):
        """a check that cannot be made (a missing tensor, an unexpected one): a failure"""
        self.failed += 1
        print("[FAIL] %s" % what)


def load_ours(folder, ours, ref):
    """the results --ours names: the CPU trainer's (the reference file itself) or a GPU build's file"""
    fname = OURS[ours][0]
    if ours == "cpu":
        return ref
    path = os.path.join(folder, fname)
    if not os.path.isfile(path):
        prog = "hybrid_dump_fp32_bin" if ours == "gpu_fp32" else "hybrid_dump_bin"
        print("hybrid_reference: no %s: make it on the GPU machine with ./dev/cuda/%s %s" %
              (path, prog, os.path.dirname(folder.rstrip("/")) or "."), file=sys.stderr)
        sys.exit(2)
    return read_safetensors(path)


def check_model(folder, name, rep, bug, ours_name):
    with open(os.path.join(folder, "model", "config.json")) as f:
        cfg = json.load(f)
    weights = read_safetensors(os.path.join(folder, "model", "model.safetensors"))
    ref = read_safetensors(os.path.join(folder, "reference.safetensors"))
    ours = load_ours(folder, ours_name, ref)
    _, tol, tol_decay, _ = OURS[ours_name]
    if not torch.equal(weights.pop("lm_head.weight"), weights["backbone.embedding.weight"]):
        rep.refuse(name + ": lm_head.weight is not the embedding (the export ties them)")
    params = {k: v.to(DTYPE).to(DEVICE).requires_grad_(True) for k, v in weights.items()}
    tokens, targets = ref["tokens"].to(DEVICE), ref["targets"].to(DEVICE)
    if "seq_idx" in ref:
        # packed documents, flash_attn's varlen semantics: each document is a sequence of its own (no attention
        # across, RoPE and the SSM state start over); masked targets (-1) are not counted in the mean
        seq, rows = ref["seq_idx"], []
        for b in range(tokens.shape[0]):
            cuts = [0] + [t for t in range(1, tokens.shape[1]) if seq[b, t] != seq[b, t - 1]] + [tokens.shape[1]]
            rows.append(torch.cat([forward(cfg, params, tokens[b:b + 1, lo:hi], bug)
                                   for lo, hi in zip(cuts[:-1], cuts[1:])], dim=1))
        logits = torch.cat(rows, dim=0)
    else:
        logits = forward(cfg, params, tokens, bug)
    V = cfg["vocab_size"]
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1)
    loss.backward()
    print("== %s: pattern from attn_layer_idx %s, d_intermediate %d, %d layers; ours: %s" %
          (name, cfg.get("attn_layer_idx"), cfg.get("d_intermediate", 0), cfg["n_layer"], ours_name))
    for key in ("logits", "loss"):
        if key not in ours:
            rep.refuse("%s: no %s in %s's file" % (name, key, ours_name))
    if "logits" in ours:
        rep.compare(name + ": logits", ours["logits"], logits.detach(), tol, "logits")
    if "loss" in ours:
        rep.compare(name + ": loss", ours["loss"], loss.detach().reshape(1), tol, "loss")
    names = sorted(k[len("grad."):] for k in ours if k.startswith("grad."))
    missing = sorted(set(params) - set(names))
    if missing:
        rep.refuse(name + ": no gradient in %s's file for " % ours_name + ", ".join(missing))
    for k in names:
        if k not in params:
            rep.refuse(name + ": gradient of an unknown tensor " + k)
            continue
        decay = k.endswith("mixer.A_log") or k.endswith("mixer.dt_bias")
        rep.compare(name + ": d " + k, ours["grad." + k], params[k].grad, tol_decay if decay else tol,
                    "d A_log, d dt_bias" if decay else "gradients")


def main():
    global DEVICE, ROPE_ANGLES
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("dump", help="the folder ./test_interop --dump-hybrid DIR wrote")
    ap.add_argument("--ours", choices=sorted(OURS), default="cpu",
                    help="whose numbers to check: the CPU trainer's (reference.safetensors, default) or a GPU "
                         "build's (gpu_fp32.safetensors / gpu_bf16.safetensors, from dev/cuda/hybrid_dump*_bin)")
    ap.add_argument("--device", default="cpu", help="where torch runs its float64 model: cpu (default) or cuda")
    ap.add_argument("--rope-angles", choices=("float64", "float32"), default=None,
                    help="RoPE angles and their cos / sin in float64 (the CPU trainer) or float32 (flash_attn, the "
                         "GPU kernels); default: float64 for --ours cpu, float32 for gpu_*")
    ap.add_argument("--inject-bug", action="store_true", help="interleaved rotary pairs: the check must fail")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("hybrid_reference: --device %s, but this torch (%s) sees no CUDA GPU: use --device cpu" %
              (args.device, torch.__version__), file=sys.stderr)
        sys.exit(2)
    DEVICE = torch.device(args.device)
    ROPE_ANGLES = args.rope_angles or OURS[args.ours][3]
    torch.set_grad_enabled(True)
    rep = Report()
    if not os.path.isdir(args.dump):
        print("hybrid_reference: %s is not a folder: make it with ./test_interop --dump-hybrid %s" %
              (args.dump, args.dump), file=sys.stderr)
        sys.exit(2)
    models = sorted(d for d in os.listdir(args.dump)
                    if os.path.isfile(os.path.join(args.dump, d, "reference.safetensors")))
    if not models:
        print("hybrid_reference: no model folders with reference.safetensors in %s" % args.dump, file=sys.stderr)
        sys.exit(2)
    _, tol, tol_decay, _ = OURS[args.ours]
    print("hybrid_reference: %d models, ours: %s, torch %s float64 on %s, RoPE angles in %s, tolerance %.0e "
          "(d A_log, d dt_bias %.0e)%s" % (len(models), args.ours, torch.__version__, DEVICE, ROPE_ANGLES, tol,
                                           tol_decay, ", INJECTED BUG (interleaved rotary)" if args.inject_bug else ""))
    for name in models:
        check_model(os.path.join(args.dump, name), name, rep, args.inject_bug, args.ours)
    for kind, (rel, what) in sorted(rep.worst.items()):
        print("largest rel error, %s: %.3e (%s)" % (kind, rel, what))
    print("%d passed, %d failed" % (rep.passed, rep.failed))
    sys.exit(1 if rep.failed else 0)


if __name__ == "__main__":
    main()
