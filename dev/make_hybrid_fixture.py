#!/usr/bin/env python3
"""
make_hybrid_fixture.py: a tiny mamba_ssm hybrid checkpoint folder (MambaLMHeadModel's config.json + its
state_dict's names and shapes in model.safetensors), written with the standard library only, for test_interop.c.

The model: d_model 4, 2 layers; layer 0 a Mamba-2 mixer, layer 1 attention (attn_layer_idx [1]: 2 query heads of
head_dim 2 on 1 key/value head, rotary on 2 dims, qkv_proj_bias false, out_proj_bias left out so MHA's default
true applies, causal true); d_intermediate 40 (a gated MLP of hidden 128 after each mixer, with norm2).
The weights are deterministic pseudo-random fp32 numbers (an LCG), the embedding's pad rows (30, 31) zero and
lm_head.weight equal to the embedding (tied), as mamba_ssm's save_pretrained + our converter would store them.
test_interop.c imports the folder, checks the config it reads (every MHA default), and that our mamba_ssm export
of the imported model holds every tensor of this file bit for bit.

    python3 dev/make_hybrid_fixture.py dev/fixtures/interop/mssm_hybrid
"""
import json
import os
import struct
import sys

D, VOCAB, PAD_MULT = 4, 30, 16
ROWS = (VOCAB + PAD_MULT - 1) // PAD_MULT * PAD_MULT
E, NSTATE, HEADDIM, DCONV, NGROUPS = 2 * D, 4, 4, 4, 1
H = E // HEADDIM
CONV = E + 2 * NGROUPS * NSTATE
INPROJ = 2 * E + 2 * NGROUPS * NSTATE + H
HQ, HKV, HD = 2, 1, 2
QKV = HD * (HQ + 2 * HKV)
HM = 128  # d_intermediate 40 rounded up to a multiple of 128

CONFIG = {
    "d_model": D, "d_intermediate": 40, "n_layer": 2, "vocab_size": VOCAB,
    "ssm_cfg": {"layer": "Mamba2", "d_state": NSTATE, "d_conv": DCONV, "expand": 2, "headdim": HEADDIM,
                "ngroups": NGROUPS, "chunk_size": 8},
    "attn_layer_idx": [1],
    "attn_cfg": {"num_heads": HQ, "num_heads_kv": HKV, "head_dim": HD, "rotary_emb_dim": 2, "qkv_proj_bias": False,
                 "causal": True},
    "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": PAD_MULT,
    "tie_embeddings": True,
}


class Lcg:
    """numbers in [lo, hi) from a 64-bit LCG (Knuth's MMIX constants): the same on every machine"""

    def __init__(self, seed):
        self.s = seed

    def next(self, lo, hi):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        return lo + (hi - lo) * ((self.s >> 11) / float(1 << 53))


def tensors():
    rng = Lcg(2025)
    out = []

    def add(name, shape, lo, hi):
        n = 1
        for s in shape:
            n *= s
        out.append((name, shape, [rng.next(lo, hi) for _ in range(n)]))

    add("backbone.embedding.weight", [ROWS, D], -1, 1)
    emb = out[-1][2]
    for i in range(VOCAB * D, ROWS * D):
        emb[i] = 0.0
    p = "backbone.layers.0."
    add(p + "mixer.in_proj.weight", [INPROJ, D], -0.5, 0.5)
    add(p + "mixer.conv1d.weight", [CONV, 1, DCONV], -0.5, 0.5)
    add(p + "mixer.conv1d.bias", [CONV], -0.5, 0.5)
    add(p + "mixer.dt_bias", [H], -3, -1)
    add(p + "mixer.A_log", [H], 0, 2)
    add(p + "mixer.D", [H], 0.5, 1.5)
    add(p + "mixer.norm.weight", [E], 0.5, 1.5)
    add(p + "mixer.out_proj.weight", [D, E], -0.5, 0.5)
    for layer in (0, 1):
        p = "backbone.layers.%d." % layer
        if layer == 1:
            add(p + "mixer.in_proj.weight", [QKV, D], -0.5, 0.5)
            add(p + "mixer.out_proj.weight", [D, HQ * HD], -0.5, 0.5)
            add(p + "mixer.out_proj.bias", [D], -0.5, 0.5)
        add(p + "norm.weight", [D], 0.5, 1.5)
        add(p + "norm2.weight", [D], 0.5, 1.5)
        add(p + "mlp.fc1.weight", [2 * HM, D], -0.5, 0.5)
        add(p + "mlp.fc2.weight", [D, HM], -0.1, 0.1)
    add("backbone.norm_f.weight", [D], 0.5, 1.5)
    out.append(("lm_head.weight", [ROWS, D], list(emb)))
    return out


def write_safetensors(path, items):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, shape, values in items:
        blob = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        sys.exit(2)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(out, "model.safetensors"), tensors())


if __name__ == "__main__":
    main()
