#!/usr/bin/env python3
"""
hybrid_reference.py: the torch oracle of the CPU trainer's hybrid blocks (attention, gated MLP, next to Mamba-2).

The model is written again here from mamba_ssm's semantics (MambaLMHeadModel with Mamba2, MHA, GatedMLP; doc/hybrid.md
has the layout), as plain torch in float64 on the CPU: no mamba_ssm, no flash_attn, no Triton. It loads a folder that
`./test_interop --dump-hybrid DIR` wrote (each model exported in mamba_ssm's form, and reference.safetensors with the
batch, the CPU trainer's logits, loss and every parameter gradient; one with packed documents and masked targets, run
here document by document), runs the same batch, and compares:

    logits, loss, and the gradient of every tensor: max |ours - torch| / max |torch| <= 1e-5 (ours is fp32)

It prints one line per comparison and `N passed, N failed`, and exits 1 on a failure.

    ./test_interop --dump-hybrid /tmp/hybrid_dump
    python3 dev/hybrid_reference.py /tmp/hybrid_dump                 # expect: 4 models, 104 passed, 0 failed

Any python3 with torch will do, on the CPU (Debian: apt-get install python3-torch, then /usr/bin/python3).
    python3 dev/hybrid_reference.py /tmp/hybrid_dump --inject-bug     # interleaved rotary pairs: must FAIL

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

TOL = 1e-5
DTYPE = torch.float64


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


def rotary(x, rd, base, bug):
    """flash_attn's non-interleaved rotary on the first rd dims of each head, pairs (i, i + rd/2); x (B, T, heads,
    hd). bug: GPT-J's interleaved pairs (2i, 2i + 1) instead (a shift of the positions would not do as a bug: RoPE's
    scores depend on position differences only)"""
    if rd == 0:
        return x
    T = x.shape[1]
    inv_freq = 1.0 / (base ** (torch.arange(0, rd, 2, dtype=DTYPE) / rd))
    freqs = torch.outer(torch.arange(T, dtype=DTYPE), inv_freq)  # (T, rd/2)
    cos = freqs.cos()[None, :, None, :]
    sin = freqs.sin()[None, :, None, :]
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
    mask = torch.ones(T, T, dtype=torch.bool).tril()
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
    h = torch.zeros(B, H, P, N, dtype=DTYPE)
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
    def __init__(self):
        self.passed = self.failed = 0

    def compare(self, what, ours, ref):
        diff = (ours.to(DTYPE) - ref.to(DTYPE)).abs().max().item()
        scale = ref.abs().max().item()
        rel = diff / (scale if scale > 0 else 1e-30)
        ok = rel <= TOL and bool(torch.isfinite(ours).all())
        self.passed += ok
        self.failed += not ok
        print("[%s] %-58s max abs diff %.3e, max |torch| %.3e, rel %.3e (tol %.0e)" %
              ("ok  " if ok else "FAIL", what, diff, scale, rel, TOL))


def check_model(folder, name, rep, bug):
    with open(os.path.join(folder, "model", "config.json")) as f:
        cfg = json.load(f)
    weights = read_safetensors(os.path.join(folder, "model", "model.safetensors"))
    ref = read_safetensors(os.path.join(folder, "reference.safetensors"))
    if not torch.equal(weights.pop("lm_head.weight"), weights["backbone.embedding.weight"]):
        rep.compare(name + ": lm_head.weight is the embedding (tied)", torch.ones(1), torch.zeros(1))
    params = {k: v.to(DTYPE).requires_grad_(True) for k, v in weights.items()}
    tokens, targets = ref["tokens"], ref["targets"]
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
    print("== %s: pattern from attn_layer_idx %s, d_intermediate %d, %d layers" %
          (name, cfg.get("attn_layer_idx"), cfg.get("d_intermediate", 0), cfg["n_layer"]))
    rep.compare(name + ": logits", ref["logits"], logits.detach())
    rep.compare(name + ": loss", ref["loss"], loss.detach().reshape(1))
    names = sorted(k[len("grad."):] for k in ref if k.startswith("grad."))
    missing = sorted(set(params) - set(names))
    if missing:
        rep.compare(name + ": no gradient dumped for " + ", ".join(missing), torch.ones(1), torch.zeros(1))
    for k in names:
        if k not in params:
            rep.compare(name + ": gradient of an unknown tensor " + k, torch.ones(1), torch.zeros(1))
            continue
        rep.compare(name + ": d " + k, ref["grad." + k], params[k].grad)


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("dump", help="the folder ./test_interop --dump-hybrid DIR wrote")
    ap.add_argument("--inject-bug", action="store_true", help="interleaved rotary pairs: the check must fail")
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    rep = Report()
    models = sorted(d for d in os.listdir(args.dump)
                    if os.path.isfile(os.path.join(args.dump, d, "reference.safetensors")))
    if not models:
        print("hybrid_reference: no model folders with reference.safetensors in %s" % args.dump, file=sys.stderr)
        sys.exit(2)
    for name in models:
        check_model(os.path.join(args.dump, name), name, rep, args.inject_bug)
    print("%d passed, %d failed" % (rep.passed, rep.failed))
    sys.exit(1 if rep.failed else 0)


if __name__ == "__main__":
    main()
