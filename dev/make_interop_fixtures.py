#!/usr/bin/env python3
"""
make_interop_fixtures.py: the fixtures of test_interop.c and scripts/test_convert.py, made by HF transformers and
torch on the GPU machine (CPU torch, HF's pure-torch path, as dev/make_hf_fixture.py does).

Writes into --out (dev/fixtures/interop/ when committed), all small:
  hf_l1/            Mamba2ForCausalLM(1 layer, D 32, N 16, P 16, G 1, chunk 8, vocab 100) save_pretrained, fp32
  hf_l1/logits.safetensors        tokens I32 (2, 13) and HF's logits F32 (2, 13, 100): chunk 8 does not divide T 13
  hf_l3/            3 layers, D 32, N 8, P 8, G 1, chunk 5, vocab 83, saved in BF16 and SHARDED (index.json), logits
                    of the fp32 model holding the bf16-rounded weights
  mssm_l1/          the hf_l1 model in mamba_ssm's layout: config.json (MambaConfig fields, pad_vocab_size_multiple 16)
                    and pytorch_model.bin written by torch.save (backbone.embedding.weight padded to 112 rows, the pad
                    rows random; lm_head.weight shares its storage), for scripts/convert_mamba_ssm.py
  torch_mixed.bin + torch_mixed.json   torch.save of tensors in several dtypes, a transposed (non-contiguous) view,
                    a view with a storage offset, an int64 tensor, a 0-d tensor; the json holds the expected values
  hf_defaults.json  Mamba2Config().to_json_string(use_diff=False): the defaults hf_io.h assumes for omitted fields
  export_check.json + ours_tiny_hf/hf_logits.safetensors   if --ours DIR is given (our exporter's folder, made by
                    ./test_interop --write-export-fixture): HF loads it with from_pretrained, runs the tokens of
                    DIR/ours_logits.safetensors, and records max|HF - ours|; HF's logits are saved for the C test

Run (GPU machine):  python3 dev/make_interop_fixtures.py --out $OUT/interop --ours dev/fixtures/interop/ours_tiny_hf
"""
import argparse
import json
import math
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_hf_fixture as mhf  # noqa: E402  (sets the offline / CPU environment, PathSpy)

import torch  # noqa: E402
from safetensors.torch import save_file, load_file  # noqa: E402

B, T = 2, 13


def fail(msg):
    print(f"make_interop_fixtures: error: {msg}", file=sys.stderr)
    sys.exit(1)


def build_model(fields, seed):
    from transformers import Mamba2Config, Mamba2ForCausalLM
    cfg = Mamba2Config(**fields)
    model = Mamba2ForCausalLM(cfg).to(torch.float32)
    mhf.tie_embeddings(model)
    torch.manual_seed(seed)
    with torch.no_grad():  # the same rules as make_hf_fixture.py: every parameter far from its trivial value
        for name, p in model.named_parameters():
            if name.endswith("embeddings.weight"):
                p.normal_(0.0, 0.5)
            elif name.endswith(("in_proj.weight", "out_proj.weight")):
                b = 1.0 / math.sqrt(p.shape[1])
                p.uniform_(-b, b)
            elif name.endswith("conv1d.weight"):
                b = 1.0 / math.sqrt(p.shape[2])
                p.uniform_(-b, b)
            elif name.endswith("conv1d.bias"):
                p.uniform_(-0.5, 0.5)
            elif name.endswith("dt_bias"):
                dt = torch.exp(torch.rand(p.shape) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
                p.copy_(dt + torch.log(-torch.expm1(-dt)))
            elif name.endswith("A_log"):
                p.copy_(torch.log(torch.empty(p.shape).uniform_(1.0, 16.0)))
            else:  # D and the norm weights
                p.copy_(1.0 + 0.1 * torch.randn(p.shape))
    return cfg, model


def save(model, d, **kw):
    try:
        model.save_pretrained(d, safe_serialization=True, **kw)
    except TypeError:  # transformers versions without the argument always write safetensors
        model.save_pretrained(d, **kw)


def hf_logits(model, tokens):
    model.train()  # the path dev/make_hf_fixture.py checked (PathSpy forces the pure-torch chunked scan)
    with torch.no_grad():
        return model(input_ids=tokens, use_cache=False).logits.float()


def tokens_for(V, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=g, dtype=torch.long)


def make_hf_l1(out):
    fields = dict(hidden_size=32, num_hidden_layers=1, state_size=16, head_dim=16, num_heads=4, expand=2, n_groups=1,
                  conv_kernel=4, chunk_size=8, vocab_size=100, use_conv_bias=True, use_bias=False,
                  residual_in_fp32=True, tie_word_embeddings=True, layer_norm_epsilon=1e-5)
    cfg, model = build_model(fields, 11)
    d = os.path.join(out, "hf_l1")
    save(model, d)
    tok = tokens_for(100, 12)
    logits = hf_logits(model, tok)
    save_file({"tokens": tok.to(torch.int32), "logits": logits.contiguous()}, os.path.join(d, "logits.safetensors"))
    print(f"hf_l1: files {sorted(os.listdir(d))}, max|logit| {logits.abs().max().item():.4f}")
    return cfg, model, tok, logits


def make_hf_l3(out):
    fields = dict(hidden_size=32, num_hidden_layers=3, state_size=8, head_dim=8, num_heads=8, expand=2, n_groups=1,
                  conv_kernel=4, chunk_size=5, vocab_size=83, use_conv_bias=True, use_bias=False,
                  residual_in_fp32=True, tie_word_embeddings=True, layer_norm_epsilon=1e-5)
    cfg, model = build_model(fields, 21)
    d = os.path.join(out, "hf_l3")
    save(model.to(torch.bfloat16), d, max_shard_size="20KB")
    model.to(torch.float32)  # now holds the bf16-rounded weights, which is what the files hold
    tok = tokens_for(83, 22)
    logits = hf_logits(model, tok)
    save_file({"tokens": tok.to(torch.int32), "logits": logits.contiguous()}, os.path.join(d, "logits.safetensors"))
    files = sorted(os.listdir(d))
    if "model.safetensors.index.json" not in files:
        fail(f"hf_l3 was not sharded: {files}")
    print(f"hf_l3: files {files}")


def make_mamba_ssm_l1(out, cfg, model):
    """the hf_l1 model as mamba_ssm's MambaLMHeadModel would save it (names, padded embedding, config)"""
    d = os.path.join(out, "mssm_l1")
    os.makedirs(d, exist_ok=True)
    sd = {}
    for name, p in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        sd[name.replace("backbone.embeddings.", "backbone.embedding.")] = p.detach().clone()
    emb = sd["backbone.embedding.weight"]
    g = torch.Generator().manual_seed(31)
    pad = torch.randn(112 - emb.shape[0], emb.shape[1], generator=g)  # mamba_ssm's pad rows are initialized too
    sd["backbone.embedding.weight"] = torch.cat([emb, pad], 0)
    sd["lm_head.weight"] = sd["backbone.embedding.weight"]  # tied: one storage, two names (as torch saves it)
    torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    conf = {"d_model": cfg.hidden_size, "d_intermediate": 0, "n_layer": cfg.num_hidden_layers, "vocab_size": 100,
            "ssm_cfg": {"layer": "Mamba2", "d_state": cfg.state_size, "headdim": cfg.head_dim, "ngroups": 1,
                        "chunk_size": 8},
            "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
            "pad_vocab_size_multiple": 16, "tie_embeddings": True}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    print(f"mssm_l1: {os.path.getsize(os.path.join(d, 'pytorch_model.bin'))} bytes")


def make_torch_mixed(out):
    g = torch.Generator().manual_seed(41)
    base = torch.randn(4, 6, generator=g)
    t = {
        "f32": base.clone(),
        "bf16": (base * 3).to(torch.bfloat16),
        "f16": (base / 3).to(torch.float16),
        "transposed": base.t(),                       # non-contiguous: strides (1, 6)
        "offset_view": base.reshape(-1)[5:17],        # shares base's storage, offset 5
        "i64": torch.arange(-3, 9, dtype=torch.int64).reshape(3, 4),
        "scalar": torch.tensor(2.5),
    }
    # two tensors of one storage (written once in the pickle), one of them transposed
    shared = torch.randn(3, 5, generator=g)
    t["shared_a"] = shared
    t["shared_t"] = shared.t()
    torch.save(t, os.path.join(out, "torch_mixed.bin"))
    expect = {}
    for k, v in t.items():
        expect[k] = {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape),
                     "values": v.float().reshape(-1).tolist() if v.dtype != torch.int64 else v.reshape(-1).tolist()}
    with open(os.path.join(out, "torch_mixed.json"), "w") as f:
        json.dump(expect, f)
    print(f"torch_mixed.bin: {os.path.getsize(os.path.join(out, 'torch_mixed.bin'))} bytes")


def check_our_export(ours, out):
    from transformers import Mamba2ForCausalLM
    ref = load_file(os.path.join(ours, "ours_logits.safetensors"))
    try:
        model = Mamba2ForCausalLM.from_pretrained(ours, dtype=torch.float32)
    except TypeError:
        model = Mamba2ForCausalLM.from_pretrained(ours, torch_dtype=torch.float32)
    tok = ref["tokens"].long()
    logits = hf_logits(model, tok)
    ours_logits = ref["logits"]
    if logits.shape != ours_logits.shape:
        fail(f"HF logits {tuple(logits.shape)} vs ours {tuple(ours_logits.shape)}")
    diff = (logits - ours_logits).abs().max().item()
    rel = diff / ours_logits.abs().max().item()
    dst = os.path.join(out, "ours_tiny_hf")
    os.makedirs(dst, exist_ok=True)
    save_file({"tokens": tok.to(torch.int32), "logits": logits.contiguous()}, os.path.join(dst, "hf_logits.safetensors"))
    res = {"loaded_by": "Mamba2ForCausalLM.from_pretrained", "shape": list(logits.shape),
           "max_abs_diff": diff, "max_rel_diff": rel, "max_abs_logit": ours_logits.abs().max().item()}
    with open(os.path.join(out, "export_check.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(f"EXPORT CHECK: HF from_pretrained of our export: max|HF - ours| {diff:.3e} (relative {rel:.3e})")


def main():
    ap = argparse.ArgumentParser(description="interop fixtures (GPU machine)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ours", default=None, help="our exporter's folder (config.json, model.safetensors, "
                    "ours_logits.safetensors)")
    args = ap.parse_args()
    import transformers
    from transformers import Mamba2Config
    from transformers.models.mamba2 import modeling_mamba2 as hf_m2
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    torch.set_num_threads(4)
    mhf.PathSpy(hf_m2)
    os.makedirs(args.out, exist_ok=True)
    try:
        defaults = Mamba2Config().to_json_string(use_diff=False)
    except TypeError:
        defaults = Mamba2Config().to_json_string()
    with open(os.path.join(args.out, "hf_defaults.json"), "w") as f:
        f.write(defaults)
    cfg, model, tok, logits = make_hf_l1(args.out)
    make_hf_l3(args.out)
    make_mamba_ssm_l1(args.out, cfg, model)
    make_torch_mixed(args.out)
    if args.ours:
        check_our_export(args.ours, args.out)
    total = 0
    for root, _, files in os.walk(args.out):
        for fn in files:
            total += os.path.getsize(os.path.join(root, fn))
    print(f"total {total} bytes")
    # one tarball so that the nested folders come back through $OUT (2 levels max)
    shutil.make_archive(os.path.join(os.path.dirname(args.out.rstrip('/')), "interop"), "gztar", args.out)


if __name__ == "__main__":
    main()
