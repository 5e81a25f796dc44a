#!/usr/bin/env python3
"""
hybrid_forward.py: the forward of mamba_ssm's hybrid blocks written again in plain Python (standard library only,
float64, one position at a time), checked against the CPU trainer's logits. It runs where torch does not (test_interop
calls it), so the forward's semantics (the [q | k | v] split, rotate-half RoPE, the query head -> kv head map, the
MLP's [y | gate] split, grouped gated norm) have an oracle on every machine; dev/hybrid_reference.py checks the
gradients too, with torch.

    ./test_interop --dump-hybrid /tmp/hybrid_dump && python3 dev/hybrid_forward.py /tmp/hybrid_dump
    python3 dev/hybrid_forward.py /tmp/hybrid_dump --inject-bug     # interleaved rotary pairs: must FAIL

A dump with seq_idx (packed documents) is run document by document: each is a sequence of its own, which is what
the CPU trainer's masking and per-document RoPE positions must give. Prints a line per model (max |ours - python| /
max |python| of the logits, bound 1e-5) and "N passed, N failed".
"""
import json
import math
import os
import struct
import sys

TOL = 1e-5


def read_safetensors(path):
    """name -> (shape, flat list); F32 and I32 only, which is what the C side writes"""
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
        out[name] = (info["shape"], list(struct.unpack("<%d%s" % ((hi - lo) // 4, fmt), data[lo:hi])))
    return out


def rows(t):
    shape, v = t
    c = shape[1]
    return [v[i * c:(i + 1) * c] for i in range(shape[0])]


def matvec(w, x):
    return [sum(a * b for a, b in zip(r, x)) for r in w]


def add(x, y):
    return [a + b for a, b in zip(x, y)]


def rmsnorm(x, w, eps=1e-5):
    r = 1.0 / math.sqrt(sum(a * a for a in x) / len(x) + eps)
    return [a * r * b for a, b in zip(x, w)]


def silu(a):
    return a / (1.0 + math.exp(-a))


def softplus(a):
    return a if a > 20 else math.log1p(math.exp(a))


def rotate(v, rd, base, pos, interleaved):
    """flash_attn's non-interleaved rotary: pairs (i, i + rd/2) (interleaved: pairs (2i, 2i+1), the injected bug)"""
    v = list(v)
    for i in range(rd // 2):
        ang = pos * base ** (-2.0 * i / rd)
        c, s = math.cos(ang), math.sin(ang)
        a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + rd // 2)
        v[a], v[b] = v[a] * c - v[b] * s, v[b] * c + v[a] * s
    return v


def attention(u, w, pre, a, bug):
    """u: the T normed rows of one sequence; returns the block's T output rows"""
    hq, hkv, hd = a["num_heads"], a.get("num_heads_kv") or a["num_heads"], a["head_dim"]
    rd, base = a.get("rotary_emb_dim", 0), float(a.get("rotary_emb_base", 10000.0))
    qkv = [matvec(rows(w[pre + "mixer.in_proj.weight"]), x) for x in u]
    if a.get("qkv_proj_bias", True):
        qkv = [add(r, w[pre + "mixer.in_proj.bias"][1]) for r in qkv]
    q = [[rotate(r[h * hd:(h + 1) * hd], rd, base, t, bug) for h in range(hq)] for t, r in enumerate(qkv)]
    k = [[rotate(r[(hq + g) * hd:(hq + g + 1) * hd], rd, base, t, bug) for g in range(hkv)] for t, r in enumerate(qkv)]
    v = [[r[(hq + hkv + g) * hd:(hq + hkv + g + 1) * hd] for g in range(hkv)] for r in qkv]
    wo = rows(w[pre + "mixer.out_proj.weight"])
    out = []
    for t in range(len(u)):
        ctx = []
        for h in range(hq):
            g = h // (hq // hkv)
            s = [sum(x * y for x, y in zip(q[t][h], k[j][g])) / math.sqrt(hd) for j in range(t + 1)]
            m = max(s)
            e = [math.exp(z - m) for z in s]
            z = sum(e)
            ctx += [sum(e[j] / z * v[j][g][d] for j in range(t + 1)) for d in range(hd)]
        o = matvec(wo, ctx)
        if a.get("out_proj_bias", True):
            o = add(o, w[pre + "mixer.out_proj.bias"][1])
        out.append(o)
    return out


def mamba2(u, w, pre, s, d_model):
    E, N, P, G, K = s["expand"] * d_model, s["d_state"], s["headdim"], s["ngroups"], s["d_conv"]
    H = E // P
    C = E + 2 * G * N
    zx = [matvec(rows(w[pre + "mixer.in_proj.weight"]), x) for x in u]
    cw, cb = w[pre + "mixer.conv1d.weight"][1], w[pre + "mixer.conv1d.bias"][1]
    T = len(u)
    xbc = [[silu(cb[c] + sum(cw[c * K + k] * zx[t - (K - 1) + k][E + c] for k in range(K) if t - (K - 1) + k >= 0))
            for c in range(C)] for t in range(T)]
    a_log, dt_bias, dskip = w[pre + "mixer.A_log"][1], w[pre + "mixer.dt_bias"][1], w[pre + "mixer.D"][1]
    gw, wo = w[pre + "mixer.norm.weight"][1], rows(w[pre + "mixer.out_proj.weight"])
    h = [[[0.0] * N for _ in range(P)] for _ in range(H)]
    out = []
    for t in range(T):
        y = []
        for hh in range(H):
            g = hh // (H // G)
            dt = softplus(zx[t][2 * E + 2 * G * N + hh] + dt_bias[hh])
            decay = math.exp(-math.exp(a_log[hh]) * dt)
            bv = xbc[t][E + g * N:E + (g + 1) * N]
            cv = xbc[t][E + G * N + g * N:E + G * N + (g + 1) * N]
            for p in range(P):
                x = xbc[t][hh * P + p]
                h[hh][p] = [h[hh][p][n] * decay + dt * x * bv[n] for n in range(N)]
                y.append(sum(h[hh][p][n] * cv[n] for n in range(N)) + dskip[hh] * x)
        gated = [y[i] * silu(zx[t][i]) for i in range(E)]
        normed = []
        for g in range(G):  # the gated norm is per group of E / G channels
            seg = gated[g * E // G:(g + 1) * E // G]
            normed += rmsnorm(seg, [1.0] * len(seg))
        out.append(matvec(wo, [a * b for a, b in zip(normed, gw)]))
    return out


def gated_mlp(u, w, pre):
    f1, f2 = rows(w[pre + "mlp.fc1.weight"]), rows(w[pre + "mlp.fc2.weight"])
    hm = len(f1) // 2
    out = []
    for x in u:
        hv = matvec(f1, x)
        out.append(matvec(f2, [hv[i] * silu(hv[hm + i]) for i in range(hm)]))
    return out


def logits_of(cfg, w, tokens, bug):
    d_model, vocab = cfg["d_model"], cfg["vocab_size"]
    attn_idx = set(cfg.get("attn_layer_idx") or [])
    a = dict(cfg.get("attn_cfg") or {})
    if a.get("num_heads") and not a.get("head_dim"):
        a["head_dim"] = d_model // a["num_heads"]
    s = dict(cfg.get("ssm_cfg") or {})
    for key, default in (("d_state", 128), ("d_conv", 4), ("expand", 2), ("headdim", 64), ("ngroups", 1)):
        s.setdefault(key, default)
    emb = rows(w["backbone.embedding.weight"])
    xs = [list(emb[t]) for t in tokens]
    for layer in range(cfg["n_layer"]):
        pre = "backbone.layers.%d." % layer
        u = [rmsnorm(x, w[pre + "norm.weight"][1]) for x in xs]
        branch = attention(u, w, pre, a, bug) if layer in attn_idx else mamba2(u, w, pre, s, d_model)
        xs = [add(x, o) for x, o in zip(xs, branch)]
        if cfg.get("d_intermediate", 0) > 0:
            u = [rmsnorm(x, w[pre + "norm2.weight"][1]) for x in xs]
            xs = [add(x, o) for x, o in zip(xs, gated_mlp(u, w, pre))]
    out = []
    for x in xs:
        f = rmsnorm(x, w["backbone.norm_f.weight"][1])
        out.append([sum(a * b for a, b in zip(f, emb[v])) for v in range(vocab)])
    return out


def check(folder, bug):
    with open(os.path.join(folder, "model", "config.json")) as f:
        cfg = json.load(f)
    w = read_safetensors(os.path.join(folder, "model", "model.safetensors"))
    ref = read_safetensors(os.path.join(folder, "reference.safetensors"))
    (b, t), tokens = ref["tokens"]
    seq = ref["seq_idx"][1] if "seq_idx" in ref else [0] * (b * t)
    vocab = cfg["vocab_size"]
    ours = ref["logits"][1]
    worst = scale = 0.0
    for r in range(b):
        # packed documents (flash_attn's varlen semantics): each document is a sequence of its own
        lg, start = [], 0
        for p in range(1, t + 1):
            if p == t or seq[r * t + p] != seq[r * t + p - 1]:
                lg += logits_of(cfg, w, tokens[r * t + start:r * t + p], bug)
                start = p
        for p in range(t):
            for v in range(vocab):
                x = lg[p][v]
                worst = max(worst, abs(ours[(r * t + p) * vocab + v] - x))
                scale = max(scale, abs(x))
    rel = worst / scale
    ok = rel <= TOL
    print("[%s] %-14s logits: max abs diff %.3e, max |python| %.3e, rel %.3e (tol %.0e)" %
          ("ok  " if ok else "FAIL", os.path.basename(folder), worst, scale, rel, TOL))
    return ok


def main():
    args = [a for a in sys.argv[1:] if a != "--inject-bug"]
    if len(args) != 1:
        print("usage: python3 dev/hybrid_forward.py DUMP_DIR [--inject-bug]", file=sys.stderr)
        sys.exit(2)
    bug = "--inject-bug" in sys.argv
    folders = sorted(os.path.join(args[0], d) for d in os.listdir(args[0])
                     if os.path.isfile(os.path.join(args[0], d, "reference.safetensors")))
    if not folders:
        print("hybrid_forward: no model folders with reference.safetensors in %s" % args[0], file=sys.stderr)
        sys.exit(2)
    results = [check(f, bug) for f in folders]
    print("%d passed, %d failed" % (sum(results), len(results) - sum(results)))
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
