"""
scripts/paper/models.py: the one place that turns a model kind of the paper's experiments into the trainer's -e
spec, its parameter count and its FLOPs per token. The runners (scripts/paper/mqar.py, scripts/paper/lm.py) call
model_spec() and nothing else builds -e strings, so a change of the trainers' config keys is made here once.

Kinds (each block is a pre-norm residual block; M = Mamba-2 mixer, A = causal attention, F = gated (SwiGLU) MLP):
    mamba2          n_layer M blocks
    attention       n_layer A blocks, no MLP (the MQAR baseline: Zoology's 2-layer attention model has none)
    transformer++   n_layer/2 (A, F) pairs: the paper counts attention and MLP layers separately, so a 48-layer
                    Transformer++ is 24 A + 24 F, the parameters of 48 M blocks (F's width 8/3 d_model)
    hybrid          n_layer M blocks of which n_attn are A, spread out, never first or last (paper footnote 6)

The trainers' keys (issue #25, being built): pattern=<one letter a block>, num_heads, num_heads_kv, head_dim,
rotary_emb_dim, d_intermediate (the F width). If they change, change block_keys() below.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import paper  # noqa: E402  (model_config, param_count, ssd_flops_per_token: the Mamba-2 arithmetic)

GPU_MAX_D_STATE = 128   # llmc/ssd.cuh SSD_MAXD: the GPU SSD takes d_state <= 128 (raise when it takes more)
ATTN_HEAD_DIM = 64      # GPT-3's head size at every paper size
MLP_MULTIPLE = 128      # mamba_ssm GatedMLP rounds its width up to a multiple of 128


class Unsupported(Exception):
    """a model the GPU trainer cannot run today; the message says why (the runners list it as skipped)"""


def mlp_width(d_model):
    """SwiGLU width: 8/3 d_model rounded up to MLP_MULTIPLE (mamba_ssm GatedMLP's default)"""
    return -(-(8 * d_model // 3) // MLP_MULTIPLE) * MLP_MULTIPLE


def hybrid_pattern(n_layer, n_attn):
    """n_layer letters, n_attn of them 'A' evenly spread over the inner blocks 1 .. n_layer-2 (all blocks when
    there are more A than inner blocks), the rest 'M'"""
    if not 0 <= n_attn <= n_layer:
        raise ValueError(f"{n_attn} attention layers of {n_layer}")
    slots = list(range(1, n_layer - 1)) if n_attn <= n_layer - 2 else list(range(n_layer))
    pos = {slots[int((i + 0.5) * len(slots) / n_attn)] for i in range(n_attn)}
    return "".join("A" if i in pos else "M" for i in range(n_layer))


def pattern_of(kind, n_layer, n_attn=0):
    if kind == "mamba2":
        return "M" * n_layer
    if kind == "attention":
        return "A" * n_layer
    if kind == "transformer++":
        if n_layer % 2:
            raise ValueError(f"transformer++ with {n_layer} layers: needs an even count (attention, MLP pairs)")
        return "AF" * (n_layer // 2)
    if kind == "hybrid":
        return hybrid_pattern(n_layer, n_attn)
    raise ValueError(f"unknown model kind {kind!r}: mamba2, attention, transformer++ or hybrid")


def attn_heads(d_model, head_dim=None):
    hd = head_dim or min(ATTN_HEAD_DIM, d_model)
    if d_model % hd:
        raise ValueError(f"d_model {d_model} is not a multiple of the head size {hd}")
    return d_model // hd, hd


def block_keys(pattern, d_model, head_dim=None):
    """the -e keys beyond the Mamba-2 ones that a pattern needs"""
    keys = {}
    if set(pattern) != {"M"}:
        keys["pattern"] = pattern
    if "A" in pattern:
        h, hd = attn_heads(d_model, head_dim)
        keys.update(num_heads=h, num_heads_kv=h, head_dim=hd, rotary_emb_dim=hd)
    if "F" in pattern:
        keys["d_intermediate"] = mlp_width(d_model)
    return keys


def model_spec(kind, d_model, n_layer, vocab, d_state=128, headdim=64, chunk=256, n_attn=0, head_dim=None,
               gpu=True):
    """
    (-e string, description dict) of one model. gpu: refuse (Unsupported) what the GPU trainer cannot run today.
    """
    pattern = pattern_of(kind, n_layer, n_attn)
    c = paper.model_config(d_model, n_layer, vocab, d_state=d_state, headdim=headdim, chunk=chunk)
    if gpu and "M" in pattern:
        if d_state > GPU_MAX_D_STATE:
            raise Unsupported(f"d_state {d_state}: the GPU SSD takes d_state <= {GPU_MAX_D_STATE} (llmc/ssd.cuh "
                              f"SSD_MAXD); run it with the CPU trainer or a GPU SSD that takes more")
        if c["nheads"] % 2:
            raise Unsupported(f"{c['nheads']} Mamba-2 heads (odd): the GPU trainer needs an even count")
    spec = paper.trainer_model_arg(c)
    extra = block_keys(pattern, d_model, head_dim)
    spec += "".join(f",{k}={v}" for k, v in extra.items())
    desc = dict(kind=kind, pattern=pattern, d_model=d_model, n_layer=n_layer, vocab=vocab, d_state=d_state,
                headdim=headdim, chunk=chunk, **{k: v for k, v in extra.items() if k != "pattern"})
    desc["params"] = param_count(c, pattern, extra)
    desc["matmul_params"] = matmul_params(c, pattern, extra)
    return spec, desc


def block_params(c, letter, extra):
    D = c["d_model"]
    if letter == "M":
        E, H, K = c["d_inner"], c["nheads"], c["d_conv"]
        return D + c["d_in_proj"] * D + c["conv_dim"] * K + c["conv_dim"] + 3 * H + E + D * E
    if letter == "A":
        h, hkv, hd = extra["num_heads"], extra["num_heads_kv"], extra["head_dim"]
        return D + D * (h + 2 * hkv) * hd + h * hd * D          # norm, Wqkv, out_proj (no biases)
    if letter == "F":
        F = extra["d_intermediate"]
        return D + D * 2 * F + F * D                             # norm, fc1 (gate and up), fc2
    raise ValueError(letter)


def block_matmul_params(c, letter, extra):
    D = c["d_model"]
    if letter == "M":
        return c["d_in_proj"] * D + D * c["d_inner"]
    return block_params(c, letter, extra) - D


def param_count(c, pattern, extra):
    return c["padded_vocab"] * c["d_model"] + sum(block_params(c, x, extra) for x in pattern) + c["d_model"]


def matmul_params(c, pattern, extra):
    return c["padded_vocab"] * c["d_model"] + sum(block_matmul_params(c, x, extra) for x in pattern)


def flops_per_token(desc, seq_len):
    """
    training FLOPs per token: 6 x the weights each token multiplies by, plus the sequence mixing: the chunked SSD
    (3 x its forward, scripts/paper.py) per M block, and causal attention's Q K^T and A V (2 x 2 x T/2 x
    heads x head_dim forward, x 3) per A block.
    """
    c = paper.model_config(desc["d_model"], desc["n_layer"], desc["vocab"], d_state=desc["d_state"],
                           headdim=desc["headdim"], chunk=desc["chunk"])
    n_m = desc["pattern"].count("M")
    n_a = desc["pattern"].count("A")
    ssd_one = paper.ssd_flops_per_token(dict(c, n_layer=1), seq_len)
    attn_one = 3 * 2 * 2 * (seq_len / 2) * desc.get("num_heads", 0) * desc.get("head_dim", 0)
    return 6 * desc["matmul_params"] + n_m * ssd_one + n_a * attn_one


def fmt_params(n):
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"
