#!/usr/bin/env python3
"""
make_hf_fixture.py: an independent reference for mamba2.c, made with HF transformers' Mamba2ForCausalLM.

What it writes (one safetensors file, --out): a tiny float32 Mamba-2 (D=64, L=2, N=16, P=16, H=8, E=128,
G=1, K=4, chunk 8, V=96) with every parameter overwritten deterministically, one batch of tokens
(B=2, T=20), the logits, the mean cross-entropy loss, the gradient of every parameter, and the losses and
pre-clip gradient norms of 10 AdamW steps on that batch. The C trainer loads `param.*`, runs the same batch,
and must reproduce `logits`, `loss`, `grad.*` and `adamw_*`.

Why HF and not our own torch code: a fixture written by the same hands as the C code would share its
misreadings of the paper. HF's pure-torch path is written by other people. As a second opinion, this script
also runs its own float64 SPEC.md recurrence (sequential scan, no chunks) on the same weights and prints how
far HF is from it; nothing of that goes into the file.

Run (GPU machine, CPU torch is used on purpose so that HF takes its pure-torch chunked path):
    python3 dev/make_hf_fixture.py --out $OUT/mamba2_hf_tiny.safetensors --dump-source $OUT/hf_mamba2_source.py

File layout (safetensors, written by our own writer below, little-endian):
    param.<hf name>   F32, HF shapes (conv1d.weight is (E+2GN, 1, K)); lm_head.weight is tied, not written
    grad.<hf name>    F32, same shapes; the tied embedding's gradient includes the LM-head part
    tokens            I32 (2, 21): inputs = tokens[:, :20], targets = tokens[:, 1:]
    logits            F32 (2, 20, 96);  loss F32 (1,)
    adamw_losses      F32 (10,): loss at step s, before step s's update (adamw_losses[0] == loss)
    adamw_grad_norms  F32 (10,): global L2 norm of all gradients at step s, before clipping
    __metadata__      strings: config (HF's own JSON of the Mamba2Config; 5.17 writes the inf of time_step_limit
                      as {"__float__": "Infinity"}, so it is strict JSON), B, T, lr, beta1, beta2, eps,
                      weight_decay, grad_clip, adamw_steps, transformers_version, torch_version, made_by, ...

Printed by the run that made dev/fixtures/mamba2_hf_tiny.safetensors (H100 machine, CPU torch 2.11.0,
transformers 5.17.0): loss 17.6662788, max|logit| 26.96912; float64 SPEC recurrence vs HF: logits
max|diff| 5.8e-6, worst gradient max|diff|/max|ref| 1.2e-6 (A_log of layer 0); AdamW losses 17.666279
13.791150 10.305353 7.477199 5.214375 3.375632 2.006691 1.057589 0.456356 0.150188.

Parameter values (torch.manual_seed(1234), parameters visited in HF's named_parameters() order):
    embeddings N(0, 0.5); in_proj/out_proj/conv1d weight U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (conv fan_in = K);
    conv1d.bias U(-0.5, 0.5); dt_bias = inverse softplus of exp(U(log 1e-3, log 1e-1)) clamped >= 1e-4;
    A_log = log U(1, 16); D = 1 + 0.1 N(0,1); every norm weight 1 + 0.1 N(0,1).
    The scales are larger than SPEC section 5's so that every gradient is far from zero and from round-off.

Optimizer, exactly as torch does it (what the C AdamW must match):
    groups: weight_decay 0.1 for embeddings, in_proj.weight, conv1d.weight, out_proj.weight; 0.0 for A_log,
    D, dt_bias, every norm weight and conv1d.bias. Each step: zero grads, forward, backward,
    norm = ||all grads||_2 (tied embedding counted once); grads *= min(1, 1 / (norm + 1e-6)) (torch's
    clip_grad_norm_ with max_norm 1; the 1e-6 is torch's; every one of the 10 norms is > 2.5, so it clips);
    torch AdamW: p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)      (eps added AFTER the bias correction).
    Constant lr, 10 steps on the same batch.

HF's math against SPEC.md (read in the source of the installed transformers 5.17.0, which --dump-source saves):
  None of the differences below changes the numbers for this config, which is why the config is what it is.
  - Path: 5.17 has no `torch_forward`; Mamba2Mixer.forward first tries the fused hub kernel
    (mamba2_split_conv1d_scan_combined, whose fallback returns None), then runs causal_conv1d_fn (F.conv1d)
    and mamba2_chunk_scan (pure-torch chunked SSD) unless hub kernels are loaded. PathSpy forces and counts it.
  - Config: 5.17's Mamba2Config (a strict dataclass) has no `rms_norm` field; the norms are always RMSNorm.
  - dt: softplus(dt_raw + dt_bias), then clamped to config.time_step_limit; with (0, inf) the clamp is a
    no-op (softplus > 0) and passes the gradient through. torch's softplus returns x itself for x > 20
    (threshold=20); SPEC's softplus has none. Both only matter where dt_raw + dt_bias > 20.
  - The chunked path pads T up to a multiple of chunk_size with zeros (here 20 -> 24: the last chunk is a
    partial one) and cuts the padding off; padded steps come after the real ones, so they change nothing.
  - Gated norm (MambaRMSNormGated): y * silu(z) first, then RMS over ALL E channels, whatever n_groups is
    (SPEC section 8); mamba_ssm normalizes each group of E/G channels. Same at G=1.
  - Heads to groups: 5.17 expands B and C with repeat_interleave (head h reads group h // (H/G)), as mamba_ssm
    does. (Some older versions used `repeat`, i.e. group h % G.) Same at G=1 in any case.
  - Every norm uses config.layer_norm_epsilon (1e-5) and computes in float32 whatever the model dtype.
  - Norm placement (pre-norm, gate before the gated norm), residual in fp32, conv as cross-correlation with
    K-1 zeros in front (F.conv1d, padding K-1, first T outputs kept), the z | xBC | dt split of in_proj, and
    A = -exp(A_log): as SPEC.md. The float64 SPEC recurrence below measures the agreement.
"""

import argparse
import inspect
import json
import math
import os
import struct
import sys
import time

# HF must not try to reach the hub (the GPU machine has no network) nor pick a GPU kernel path.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

B, T = 2, 20
V = 96
NUM_ADAMW_STEPS = 10
LR, BETA1, BETA2, EPS, WEIGHT_DECAY, GRAD_CLIP = 1e-3, 0.9, 0.95, 1e-8, 0.1, 1.0
PARAM_SEED, TOKEN_SEED = 1234, 5678

CONFIG_FIELDS = dict(
    hidden_size=64, num_hidden_layers=2, state_size=16, head_dim=16, num_heads=8, expand=2, n_groups=1,
    conv_kernel=4, chunk_size=8, vocab_size=V, use_conv_bias=True, use_bias=False, residual_in_fp32=True,
    tie_word_embeddings=True, layer_norm_epsilon=1e-5, time_step_limit=(0.0, float("inf")),
)
# parameters that get weight decay (by name suffix); everything else gets none
DECAY_SUFFIXES = ("embeddings.weight", "in_proj.weight", "conv1d.weight", "out_proj.weight")


def fail(msg):
    print(f"make_hf_fixture: error: {msg}", file=sys.stderr)
    sys.exit(1)


# ----------------------------------------------------------------------------------------------------------
# model construction


def build_config():
    """Mamba2Config with our fields; checks that each field name is one the installed version knows."""
    from transformers import Mamba2Config
    known = set(inspect.signature(Mamba2Config.__init__).parameters)
    for name in CONFIG_FIELDS:
        if name not in known:
            print(f"WARNING: Mamba2Config.__init__ has no parameter '{name}' (kept only as an attribute)")
    cfg = Mamba2Config(**CONFIG_FIELDS)
    for name, want in CONFIG_FIELDS.items():
        got = getattr(cfg, name, None)
        if isinstance(want, tuple):
            got = tuple(got) if got is not None else None
        if got != want:
            fail(f"Mamba2Config.{name} = {got!r} after construction, wanted {want!r}")
    return cfg


def check_structure(model, cfg):
    """The shapes and settings the mixer actually uses, so a renamed config field cannot slip through."""
    E = cfg.expand * cfg.hidden_size
    conv_dim = E + 2 * cfg.n_groups * cfg.state_size
    mixer = model.backbone.layers[0].mixer
    want = {
        "in_proj.weight": (2 * E + 2 * cfg.n_groups * cfg.state_size + cfg.num_heads, cfg.hidden_size),
        "conv1d.weight": (conv_dim, 1, cfg.conv_kernel),
        "conv1d.bias": (conv_dim,),
        "out_proj.weight": (cfg.hidden_size, E),
        "norm.weight": (E,),
        "dt_bias": (cfg.num_heads,), "A_log": (cfg.num_heads,), "D": (cfg.num_heads,),
    }
    got = {n: tuple(p.shape) for n, p in mixer.named_parameters()}
    if got != want:
        fail(f"mixer parameters {got} differ from the expected {want}")
    used = {"chunk_size": cfg.chunk_size, "n_groups": 1, "head_dim": cfg.head_dim,
            "time_step_limit": (0.0, float("inf"))}
    for attr, want in used.items():
        got = getattr(mixer, attr, None)
        if got is None:
            print(f"WARNING: Mamba2Mixer has no attribute '{attr}'; read the dumped source")
        elif (tuple(got) if isinstance(want, tuple) else got) != want:
            fail(f"Mamba2Mixer.{attr} = {got!r}, wanted {want!r}")
    for norm in (model.backbone.layers[0].norm, mixer.norm, model.backbone.norm_f):
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
        if eps is None:
            print(f"WARNING: {type(norm).__name__} has no variance_epsilon/eps attribute; read the dumped source")
        elif eps != 1e-5:
            fail(f"{type(norm).__name__} eps = {eps}, wanted 1e-5")
    for n, p in model.named_parameters():
        if p.dtype != torch.float32:
            fail(f"parameter {n} is {p.dtype}, wanted float32")


def tie_embeddings(model):
    """Returns True if HF tied lm_head to the embedding itself; ties it by hand otherwise."""
    emb, head = model.backbone.embeddings.weight, model.lm_head.weight
    if head is emb or head.data_ptr() == emb.data_ptr():
        return True
    print("NOTE: HF did not tie lm_head.weight to backbone.embeddings.weight; tying by hand")
    model.lm_head.weight = emb
    return False


def init_parameters(model, cfg):
    """Overwrites every parameter (see the docstring); the order is HF's named_parameters() order."""
    torch.manual_seed(PARAM_SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("embeddings.weight"):
                p.normal_(0.0, 0.5)
            elif name.endswith(("in_proj.weight", "out_proj.weight")):
                bound = 1.0 / math.sqrt(p.shape[1])
                p.uniform_(-bound, bound)
            elif name.endswith("conv1d.weight"):
                bound = 1.0 / math.sqrt(p.shape[1] * p.shape[2])  # fan_in = 1 * K for a depthwise conv
                p.uniform_(-bound, bound)
            elif name.endswith("conv1d.bias"):
                p.uniform_(-0.5, 0.5)
            elif name.endswith("dt_bias"):
                lo, hi = math.log(cfg.time_step_min), math.log(cfg.time_step_max)
                dt = torch.exp(torch.rand(p.shape) * (hi - lo) + lo).clamp(min=cfg.time_step_floor)
                p.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
            elif name.endswith("A_log"):
                p.copy_(torch.log(torch.empty(p.shape).uniform_(1.0, 16.0)))
            elif name.endswith(".D"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape))
            elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape))
            else:
                fail(f"no init rule for parameter {name}")


def make_tokens():
    g = torch.Generator().manual_seed(TOKEN_SEED)
    return torch.randint(0, V, (B, T + 1), generator=g, dtype=torch.long)


# ----------------------------------------------------------------------------------------------------------
# checking which path HF runs


class PathSpy:
    """Makes HF 5.17's Mamba2Mixer.forward take its pure-torch path and counts that it did.

    In training mode without a cache the mixer first calls mamba2_split_conv1d_scan_combined (a hub kernel
    whose CPU fallback returns None, which sends the mixer on to the step-by-step path); we replace it by a
    function that always returns None. The step-by-step path calls causal_conv1d_fn and mamba2_chunk_scan,
    module globals looked up at call time, so wrapping them counts the calls. Whether the wrapped functions
    are the pure-torch fallbacks (not hub kernels) is checked by the float64 SPEC comparison, not here.
    """

    def __init__(self, module):
        self.calls = {"mamba2_split_conv1d_scan_combined": 0, "causal_conv1d_fn": 0, "mamba2_chunk_scan": 0}
        for name in self.calls:
            if not hasattr(module, name):
                fail(f"{module.__name__} has no function {name}; the installed transformers is not the 5.17 "
                     "this script was written against; read its source and update PathSpy")
        spy = self

        def fused(*args, **kwargs):
            spy.calls["mamba2_split_conv1d_scan_combined"] += 1
            return None

        def counted(name, orig):
            def wrapper(*args, **kwargs):
                spy.calls[name] += 1
                if kwargs.get("initial_states") is not None:
                    fail(f"{name} got an initial state; the fixture must run without a cache")
                return orig(*args, **kwargs)
            return wrapper

        module.mamba2_split_conv1d_scan_combined = fused
        module.causal_conv1d_fn = counted("causal_conv1d_fn", module.causal_conv1d_fn)
        module.mamba2_chunk_scan = counted("mamba2_chunk_scan", module.mamba2_chunk_scan)


# ----------------------------------------------------------------------------------------------------------
# forward / backward / AdamW with HF


def hf_loss(model, tokens):
    inputs, targets = tokens[:, :T], tokens[:, 1:]
    logits = model(input_ids=inputs, use_cache=False).logits
    loss = F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1))
    return logits, loss


def run_adamw(model, tokens, init_state):
    model.load_state_dict(init_state)
    named = list(model.named_parameters())
    decay = [p for n, p in named if n.endswith(DECAY_SUFFIXES)]
    no_decay = [p for n, p in named if not n.endswith(DECAY_SUFFIXES)]
    print(f"adamw groups: {len(decay)} tensors with decay, {len(no_decay)} without: "
          f"{[n for n, _ in named if not n.endswith(DECAY_SUFFIXES)]}")
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(BETA1, BETA2), eps=EPS, foreach=False)
    params = [p for _, p in named]
    losses, norms = [], []
    for step in range(NUM_ADAMW_STEPS):
        opt.zero_grad(set_to_none=True)
        _, loss = hf_loss(model, tokens)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        losses.append(loss.item())
        norms.append(float(norm))
        print(f"adamw step {step}: loss {losses[-1]:.7f}  grad norm {norms[-1]:.6f}")
    return losses, norms


# ----------------------------------------------------------------------------------------------------------
# second opinion: SPEC.md's math in float64, sequential recurrence, no chunks


def spec_rmsnorm(v, w, eps):
    return v / torch.sqrt((v * v).mean(-1, keepdim=True) + eps) * w


def spec_forward(P, tokens, cfg):
    """SPEC.md section 2-3, written from the spec (not from HF): returns (logits, loss) in float64."""
    Dm, L, N, Pd, H, G, K = (cfg.hidden_size, cfg.num_hidden_layers, cfg.state_size, cfg.head_dim,
                             cfg.num_heads, cfg.n_groups, cfg.conv_kernel)
    E, eps = cfg.expand * Dm, cfg.layer_norm_epsilon
    inputs, targets = tokens[:, :T], tokens[:, 1:]
    wte = P["backbone.embeddings.weight"]
    x = wte[inputs]
    for l in range(L):
        pre = f"backbone.layers.{l}."
        u = spec_rmsnorm(x, P[pre + "norm.weight"], eps)
        zxbcdt = u @ P[pre + "mixer.in_proj.weight"].T
        z, xbc, dt_raw = torch.split(zxbcdt, [E, E + 2 * G * N, H], dim=-1)
        w = P[pre + "mixer.conv1d.weight"][:, 0, :]  # (C, K)
        xpad = F.pad(xbc, (0, 0, K - 1, 0))  # K-1 zeros before t=0
        conv = P[pre + "mixer.conv1d.bias"] + sum(w[:, k] * xpad[:, k:k + T, :] for k in range(K))
        xbc = F.silu(conv)
        xs, Bm, Cm = torch.split(xbc, [E, G * N, G * N], dim=-1)
        dt = torch.log1p(torch.exp(dt_raw + P[pre + "mixer.dt_bias"]))  # softplus without threshold
        A = -torch.exp(P[pre + "mixer.A_log"])
        xs = xs.reshape(B, T, H, Pd)
        group = torch.arange(H) // (H // G)  # mamba_ssm's head -> group map
        Bh = Bm.reshape(B, T, G, N)[:, :, group]  # (B, T, H, N)
        Ch = Cm.reshape(B, T, G, N)[:, :, group]
        h = torch.zeros(B, H, Pd, N, dtype=x.dtype)
        ys = []
        for t in range(T):
            a = torch.exp(dt[:, t] * A)  # (B, H)
            h = a[:, :, None, None] * h + (dt[:, t, :, None] * xs[:, t])[..., None] * Bh[:, t, :, None, :]
            ys.append((h * Ch[:, t, :, None, :]).sum(-1))
        y = torch.stack(ys, 1) + P[pre + "mixer.D"][:, None] * xs
        y = (y.reshape(B, T, E) * F.silu(z)).reshape(B, T, G, E // G)
        wg = P[pre + "mixer.norm.weight"].reshape(G, E // G)
        y = spec_rmsnorm(y, wg, eps).reshape(B, T, E)
        x = x + y @ P[pre + "mixer.out_proj.weight"].T
    x = spec_rmsnorm(x, P["backbone.norm_f.weight"], eps)
    logits = x @ wte.T
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    return logits, loss


def compare_with_spec(init_state, tokens, cfg, logits, loss, grads):
    P = {n: t.detach().double().clone().requires_grad_(True) for n, t in init_state.items()
         if n != "lm_head.weight"}
    ref_logits, ref_loss = spec_forward(P, tokens, cfg)
    ref_loss.backward()
    scale = ref_logits.abs().max().item()
    print(f"SPEC float64 recurrence vs HF float32: loss {ref_loss.item():.9f} vs {loss.item():.9f}, "
          f"logits max|diff| {(ref_logits - logits.double()).abs().max().item():.3e} (max|logit| {scale:.3f})")
    worst = 0.0
    for n, g in grads.items():
        rg = P[n].grad
        rel = (rg - g.double()).abs().max().item() / max(rg.abs().max().item(), 1e-30)
        worst = max(worst, rel)
        print(f"  grad {n:45s} max|ref| {rg.abs().max().item():.3e}  max|diff|/max|ref| {rel:.3e}")
    print(f"SPEC vs HF: worst gradient max|diff|/max|ref| = {worst:.3e}")
    return worst


# ----------------------------------------------------------------------------------------------------------
# safetensors writer (our own: 8-byte little-endian header length, JSON header, raw data)


def tensor_entry(t, dtype):
    t = t.detach().cpu().contiguous()
    if dtype == "F32":
        data = t.to(torch.float32).numpy().astype("<f4").tobytes()
    elif dtype == "I32":
        data = t.to(torch.int32).numpy().astype("<i4").tobytes()
    else:
        fail(f"writer: unsupported dtype {dtype}")
    return dtype, list(t.shape), data


def write_safetensors(path, entries, metadata):
    """entries: name -> (dtype, shape, bytes). Data laid out in sorted-name order, offsets increasing."""
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(entries):
        dtype, shape, data = entries[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    text += b" " * ((-(8 + len(text))) % 8)  # pad with spaces so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)
    return 8 + len(text) + offset


def verify_with_library(path, entries, metadata):
    """Loads the file back with the safetensors library and compares every tensor bit for bit."""
    from safetensors import safe_open
    import numpy as np
    with safe_open(path, framework="numpy") as f:
        if set(f.keys()) != set(entries):
            fail(f"safetensors library sees keys {sorted(set(f.keys()) ^ set(entries))} that differ")
        if f.metadata() != metadata:
            fail("safetensors library reads different metadata")
        for name, (dtype, shape, data) in entries.items():
            arr = f.get_tensor(name)
            want = np.frombuffer(data, dtype="<f4" if dtype == "F32" else "<i4").reshape(shape)
            if list(arr.shape) != shape or arr.tobytes() != want.tobytes():
                fail(f"safetensors library reads tensor {name} back differently")
    print(f"verified with the safetensors library: {len(entries)} tensors, {len(metadata)} metadata keys")


# ----------------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", required=True, help="path of the safetensors file to write")
    ap.add_argument("--dump-source", default=None, help="also write the installed HF mamba2 source here")
    args = ap.parse_args()
    t0 = time.time()

    import transformers
    from transformers import Mamba2ForCausalLM
    from transformers.models.mamba2 import modeling_mamba2 as hf_m2
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {sys.version.split()[0]}")
    if args.dump_source:
        from transformers.models.mamba2 import configuration_mamba2 as hf_c2
        with open(args.dump_source, "w") as f:
            f.write(inspect.getsource(hf_m2) + "\n\n# ===== configuration_mamba2 =====\n" + inspect.getsource(hf_c2))

    torch.set_num_threads(4)
    cfg = build_config()
    spy = PathSpy(hf_m2)
    model = Mamba2ForCausalLM(cfg).to(torch.float32)
    tied_by_hf = tie_embeddings(model)
    check_structure(model, cfg)
    init_parameters(model, cfg)
    model.train()
    init_state = {n: t.detach().clone() for n, t in model.state_dict().items()}
    tokens = make_tokens()

    # one forward + backward
    model.zero_grad(set_to_none=True)
    logits, loss = hf_loss(model, tokens)
    loss.backward()
    for name, n in spy.calls.items():
        if n != cfg.num_hidden_layers:
            fail(f"{name} ran {n} times, wanted {cfg.num_hidden_layers} (once per layer): HF took another path")
    print(f"HF path: {spy.calls} (fused kernel call forced to its None fallback)")
    named = list(model.named_parameters())
    grads = {}
    for n, p in named:
        g = p.grad
        if g is None or not torch.isfinite(g).all() or g.abs().max().item() < 1e-6:
            fail(f"gradient of {n} is missing, not finite or ~zero")
        grads[n] = g.detach().clone()
    print(f"loss {loss.item():.7f}   max|logit| {logits.abs().max().item():.5f}   "
          f"(ln V = {math.log(V):.4f})   {len(named)} parameter tensors, "
          f"{sum(p.numel() for _, p in named)} values; tied by HF: {tied_by_hf}")

    worst = compare_with_spec(init_state, tokens, cfg, logits, loss, grads)

    losses, norms = run_adamw(model, tokens, init_state)
    if abs(losses[0] - loss.item()) > 1e-6 * max(1.0, abs(loss.item())):
        fail(f"first AdamW loss {losses[0]} differs from the single forward's {loss.item()}")

    entries = {"tokens": tensor_entry(tokens, "I32"), "logits": tensor_entry(logits, "F32"),
               "loss": tensor_entry(loss.reshape(1), "F32"),
               "adamw_losses": tensor_entry(torch.tensor(losses), "F32"),
               "adamw_grad_norms": tensor_entry(torch.tensor(norms), "F32")}
    for n, p in named:
        entries["param." + n] = tensor_entry(init_state[n], "F32")
        entries["grad." + n] = tensor_entry(grads[n], "F32")
    try:
        config_json = cfg.to_json_string(use_diff=False)
    except TypeError:
        config_json = cfg.to_json_string()
    metadata = {
        "config": config_json, "B": str(B), "T": str(T), "lr": repr(LR), "beta1": repr(BETA1),
        "beta2": repr(BETA2), "eps": repr(EPS), "weight_decay": repr(WEIGHT_DECAY), "grad_clip": repr(GRAD_CLIP),
        "adamw_steps": str(NUM_ADAMW_STEPS),
        "no_weight_decay": "A_log, D, dt_bias, every norm weight, conv1d.bias",
        "tied_lm_head": "lm_head.weight is backbone.embeddings.weight (not written; its gradient is in "
                        "grad.backbone.embeddings.weight)" + ("" if tied_by_hf else " [tied by hand]"),
        "transformers_version": transformers.__version__, "torch_version": torch.__version__,
        "made_by": "dev/make_hf_fixture.py: HF Mamba2ForCausalLM float32, pure-torch chunked path on CPU, "
                   f"no cache; params seed {PARAM_SEED}, tokens seed {TOKEN_SEED}; SPEC float64 recurrence "
                   f"agreed to {worst:.1e} (worst grad max|diff|/max|ref|)",
    }
    size = write_safetensors(args.out, entries, metadata)
    verify_with_library(args.out, entries, metadata)
    print(f"wrote {args.out}: {size} bytes, {len(entries)} tensors, in {time.time() - t0:.1f} s")
    print(f"SUMMARY loss {loss.item():.7f} max|logit| {logits.abs().max().item():.5f} "
          f"adamw_losses {' '.join(f'{v:.6f}' for v in losses)}")


if __name__ == "__main__":
    main()
