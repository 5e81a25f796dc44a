"""
dev/cuda/bench_attention_torch.py: torch's scaled_dot_product_attention (flash backend), causal, bf16, timed at the
shapes of dev/cuda/attention.cu's benchmark, printed as the same table, so the two can sit side by side:

    ./dev/cuda/attention_bin bench && python3 dev/cuda/bench_attention_torch.py

FLOPs as FlashAttention counts them: forward 4 B H T^2 hd / 2 (causal), forward + backward 3.5 x that. The timings
are medians of 20 runs (CUDA events) after 5 warm-up runs; fwd+bwd is one forward and one backward (the gradient
of out against a fixed random dout). torch's layout is (B, H, T, hd); ours is packed qkv rows (B, T, 3 H hd), whose
strided q, k, v views SDPA reads through a transpose, so each side runs on its own natural layout.
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_ms(fn, repeats=20, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def bench_shape(B, T, H, hd):
    gen = torch.Generator(device="cuda").manual_seed(1337)
    shape = (B, H, T, hd)
    q, k, v = (torch.empty(shape, device="cuda", dtype=torch.bfloat16).uniform_(-2, 2, generator=gen)
               .requires_grad_(True) for _ in range(3))
    dout = torch.empty(shape, device="cuda", dtype=torch.bfloat16).uniform_(-1, 1, generator=gen)

    def fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def fwd_bwd():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.autograd.grad(out, (q, k, v), dout)

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        t_fwd = median_ms(fwd)
        t_all = median_ms(fwd_bwd)
    flops = 4.0 * B * H * T * T * hd / 2
    print(f"| {T:5d} | {hd:3d} | {B:2d} | {H:2d} | {t_fwd:7.3f} | {flops / (t_fwd * 1e-3) / 1e12:7.1f} | "
          f"{t_all:10.3f} | {3.5 * flops / (t_all * 1e-3) / 1e12:7.1f} |       - |")


def main():
    print(f"attention (torch {torch.__version__} SDPA flash, {torch.cuda.get_device_name()}): causal, Hq = Hkv, "
          "B*T = 16384, H*hd = 768")
    print("|     T |  hd |  B |  H |  fwd ms | TFLOP/s | fwd+bwd ms | TFLOP/s | rope ms |")
    print("| ----- | --- | -- | -- | ------- | ------- | ---------- | ------- | ------- |")
    for B, T, H, hd in ((8, 2048, 12, 64), (8, 2048, 6, 128), (2, 8192, 12, 64), (2, 8192, 6, 128)):
        bench_shape(B, T, H, hd)


if __name__ == "__main__":
    main()
