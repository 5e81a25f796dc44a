/*
 * adamw.cu: develop and check llmc/adamw.cuh against a double CPU AdamW written from torch.optim.AdamW's update.
 *
 * Build: nvcc -O3 -arch=sm_90 -I. -o dev/cuda/adamw_bin dev/cuda/adamw.cu            (add -DENABLE_FP32 for fp32)
 * Run:   ./dev/cuda/adamw_bin
 * Three steps (the bias corrections change), a gradient scale read on the device, per-tensor weight decay, odd sizes
 * and an unaligned tensor (the scalar path).
 */
#include "dev/cuda/kernels_dev.h"
#include "llmc/adamw.cuh"

static void check(size_t n, int ntensors) {
    printf("check n=%zu in %d tensors (%s)\n", n, ntensors, PRECISION_NAME);
    int bf16 = sizeof(floatX) == 2;
    float lr = 3e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, scale = 0.37f;
    float* h_p = dev_random_floats(n, -1.f, 1.f);
    float* h_m = dev_random_floats(n, -1e-2f, 1e-2f);
    float* h_v = dev_random_floats(n, 0.f, 1e-4f);
    float* d_p = dev_upload_F(h_p, n);
    float* d_m = dev_upload_F(h_m, n);
    float* d_v = dev_upload_F(h_v, n);
    floatX* d_px = (floatX*)dev_malloc(n * sizeof(floatX));
    float* d_g = (float*)dev_malloc(n * sizeof(float));
    float* d_scale = dev_upload_F(&scale, 1);
    /* tensors: uneven sizes, the first one starting at an odd offset inside the buffers is simulated by the split */
    AdamWTensor* t = (AdamWTensor*)mallocCheck(ntensors * sizeof(AdamWTensor));
    size_t off = 0;
    for (int i = 0; i < ntensors; i++) {
        size_t sz = i == ntensors - 1 ? n - off : (n / ntensors) + (i % 3) - 1;   /* odd offsets: scalar paths */
        t[i].offset = off; t[i].size = sz; t[i].wd = (i % 2 == 0) ? 0.1f : 0.f;
        off += sz;
    }
    double *rp = (double*)mallocCheck(n * sizeof(double)), *rm = (double*)mallocCheck(n * sizeof(double)),
           *rv = (double*)mallocCheck(n * sizeof(double));
    for (size_t i = 0; i < n; i++) { rp[i] = h_p[i]; rm[i] = h_m[i]; rv[i] = h_v[i]; }
    dev_poison(d_px, n * sizeof(floatX));
    for (int step = 1; step <= 3; step++) {
        float* h_g = dev_random_floats(n, -1e-2f, 1e-2f);
        cudaCheck(cudaMemcpy(d_g, h_g, n * sizeof(float), cudaMemcpyHostToDevice));
        AdamWStep s = adamw_step_constants(lr, b1, b2, eps, step);
        adamw_update_tensors(d_p, d_px, d_m, d_v, d_g, t, ntensors, s, d_scale, 0);
        double bc1 = 1.0 - pow(b1, step), bc2 = 1.0 - pow(b2, step);
        for (int k = 0; k < ntensors; k++)
            for (size_t i = t[k].offset; i < t[k].offset + t[k].size; i++) {
                double g = (double)h_g[i] * scale;
                rp[i] *= 1.0 - (double)lr * t[k].wd;
                rm[i] = b1 * rm[i] + (1.0 - b1) * g;
                rv[i] = b2 * rv[i] + (1.0 - b2) * g * g;
                rp[i] -= (lr / bc1) * rm[i] / (sqrt(rv[i]) / sqrt(bc2) + eps);
            }
        free(h_g);
    }
    float* g_p = dev_download_F(d_p, n);
    float* g_m = dev_download_F(d_m, n);
    float* g_v = dev_download_F(d_v, n);
    float* g_px = dev_download_X(d_px, n);
    dev_validate("adamw params (3 steps)", g_p, rp, n, 1e-7, 2e-6);
    /* m = b1 m + (1 - b1) g cancels when m is near 0: its error is relative to the terms (~1e-2), not to m */
    dev_validate("adamw m", g_m, rm, n, 1e-8, 2e-6);
    dev_validate("adamw v", g_v, rv, n, 1e-14, 2e-6);
    dev_validate("adamw floatX copy", g_px, rp, n, 1e-7, bf16 ? 4e-3 : 2e-6);
    /* the floatX copy must be exactly the rounding of the master weights */
    size_t mismatch = 0;
    for (size_t i = 0; i < n; i++) mismatch += g_px[i] != (float)(floatX)g_p[i];
    dev_record("adamw floatX copy == round(master)", mismatch == 0);
    free(h_p); free(h_m); free(h_v); free(t); free(rp); free(rm); free(rv); free(g_p); free(g_m); free(g_v); free(g_px);
    cudaCheck(cudaFree(d_p)); cudaCheck(cudaFree(d_m)); cudaCheck(cudaFree(d_v)); cudaCheck(cudaFree(d_px));
    cudaCheck(cudaFree(d_g)); cudaCheck(cudaFree(d_scale));
}

static void bench(size_t n) {
    printf("benchmark n=%zu (%s)\n", n, PRECISION_NAME);
    size_t chunk = (size_t)1 << 24;
    float* h = dev_random_floats(chunk, -1e-2f, 1e-2f);
    float *d_p = (float*)dev_malloc(n * 4), *d_m = (float*)dev_malloc(n * 4), *d_v = (float*)dev_malloc(n * 4),
          *d_g = (float*)dev_malloc(n * 4);
    floatX* d_px = (floatX*)dev_malloc(n * sizeof(floatX));
    for (size_t off = 0; off < n; off += chunk) {
        size_t c = n - off < chunk ? n - off : chunk;
        cudaCheck(cudaMemcpy(d_p + off, h, c * 4, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(d_m + off, h, c * 4, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(d_g + off, h, c * 4, cudaMemcpyHostToDevice));
    }
    cudaCheck(cudaMemset(d_v, 0, n * 4));   /* v >= 0; zero start is a valid AdamW state (the first step's) */
    float ms = dev_bench_ms(20, [&] {
        adamw_update(d_p, d_px, d_m, d_v, d_g, n, 0.1f, adamw_step_constants(1e-3f, 0.9f, 0.95f, 1e-8f, 10), NULL, 0);
    });
    dev_report_bytes("adamw_update (one range)", ms, (double)n * (4 * 7 + sizeof(floatX)));
    free(h);
    cudaCheck(cudaFree(d_p)); cudaCheck(cudaFree(d_m)); cudaCheck(cudaFree(d_v)); cudaCheck(cudaFree(d_g));
    cudaCheck(cudaFree(d_px));
}

int main(int argc, char** argv) {
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0;
    if (!bench_only) {
        check(1000, 1);
        check(1000003, 7);
    }
    bench(129000000);   /* ~ the 130M model's parameter count */
    return dev_finish();
}
