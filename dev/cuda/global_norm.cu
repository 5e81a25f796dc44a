/*
 * global_norm.cu: develop and check llmc/global_norm.cuh (deterministic global gradient norm + clip coefficient).
 *
 * Build: nvcc -O3 -arch=sm_90 -I. -o dev/cuda/global_norm_bin dev/cuda/global_norm.cu  (add -DENABLE_FP32 too)
 * Run:   ./dev/cuda/global_norm_bin
 */
#include "dev/cuda/kernels_dev.h"
#include "llmc/global_norm.cuh"

static void check(size_t n, int misalign, float clip_rel) {
    printf("check n=%zu misaligned=%d clip=%.2f x norm\n", n, misalign, clip_rel);
    float* h = dev_random_floats(n + 1, -1e-2f, 1e-2f);
    float* d = dev_upload_F(h, n + 1);
    float* d_out = (float*)dev_malloc(2 * sizeof(float));
    float* d_scratch = (float*)dev_malloc(global_norm_scratch_floats() * sizeof(float));
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)h[i + misalign] * h[i + misalign];
    double norm = sqrt(ss);
    float clip = (float)(clip_rel * norm);
    dev_poison(d_out, 2 * sizeof(float));
    dev_poison(d_scratch, global_norm_scratch_floats() * sizeof(float));
    global_norm_clip(d_out, d_scratch, d + misalign, n, clip, 0);
    float out[2], out2[2];
    cudaCheck(cudaMemcpy(out, d_out, sizeof out, cudaMemcpyDeviceToHost));
    double coef = clip > 0 ? clip / (norm + 1e-6) : 1.0;
    double ref[2] = {norm, coef < 1.0 ? coef : 1.0};
    dev_validate("global_norm norm", out, ref, 1, 0.0, 1e-5);
    dev_validate("global_norm clip coefficient", out + 1, ref + 1, 1, 0.0, 1e-5);
    global_norm_clip(d_out, d_scratch, d + misalign, n, clip, 0);
    cudaCheck(cudaMemcpy(out2, d_out, sizeof out2, cudaMemcpyDeviceToHost));
    dev_check_bitwise("global_norm", out, out2, sizeof out);
    free(h);
    cudaCheck(cudaFree(d)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_scratch));
}

static void bench(size_t n) {
    printf("benchmark n=%zu\n", n);
    size_t chunk = (size_t)1 << 24;
    float* h = dev_random_floats(chunk, -1e-2f, 1e-2f);
    float* d = (float*)dev_malloc(n * 4);
    for (size_t off = 0; off < n; off += chunk)
        cudaCheck(cudaMemcpy(d + off, h, (n - off < chunk ? n - off : chunk) * 4, cudaMemcpyHostToDevice));
    float* d_out = (float*)dev_malloc(2 * sizeof(float));
    float* d_scratch = (float*)dev_malloc(global_norm_scratch_floats() * sizeof(float));
    float ms = dev_bench_ms(50, [&] { global_norm_clip(d_out, d_scratch, d, n, 1.f, 0); });
    dev_report_bytes("global_norm_clip", ms, (double)n * 4);
    free(h);
    cudaCheck(cudaFree(d)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_scratch));
}

int main(int argc, char** argv) {
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0;
    if (!bench_only) {
        check(5, 0, 0.5f);
        check(1000, 1, 0.5f);          /* unaligned start: the scalar path */
        check(1000003, 0, 2.0f);       /* norm below the clip: coefficient exactly 1 */
        check(1000003, 0, 0.f);        /* clip <= 0: no clipping */
        check(129000000, 0, 0.1f);     /* the 130M model's gradient */
    }
    bench(129000000);
    return dev_finish();
}
