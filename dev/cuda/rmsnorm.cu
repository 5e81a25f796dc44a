/*
 * rmsnorm.cu: develop and check llmc/rmsnorm.cuh (fused residual add + RMSNorm forward, backward with a
 * deterministic dw).
 *
 * Build: nvcc -O3 -arch=sm_90 -I. -o dev/cuda/rmsnorm_bin dev/cuda/rmsnorm.cu        (add -DENABLE_FP32 for fp32)
 * Run:   ./dev/cuda/rmsnorm_bin
 */
#include "dev/cuda/kernels_dev.h"
#include "llmc/rmsnorm.cuh"

/* the kernels under test: RMSNORM_AUTO (row-resident where D allows) or RMSNORM_GENERIC; the backward grid */
static int variant = RMSNORM_AUTO, rows_blocks = RMSNORM_BWD_ROWS_BLOCKS;

static void check_shape(int BT, int D, int with_delta) {
    printf("shape BT=%d D=%d delta=%s, %s kernels, %d blocks (%s)\n", BT, D, with_delta ? "yes" : "NULL",
           variant == RMSNORM_GENERIC ? "generic" : "default", rows_blocks, PRECISION_NAME);
    size_t n = (size_t)BT * D;
    int bf16 = sizeof(floatX) == 2;
    float* h_x = dev_random_floats(n, -2.f, 2.f);
    float* h_delta = dev_random_floats(n, -1.f, 1.f);
    dev_round_to_X(h_delta, n);
    float* h_w = dev_random_floats(D, 0.5f, 1.5f);
    float* d_x = dev_upload_F(h_x, n);
    floatX* d_delta = dev_upload_X(h_delta, n);
    float* d_w = dev_upload_F(h_w, D);
    floatX* d_u = (floatX*)dev_malloc(n * sizeof(floatX));
    float* d_rstd = (float*)dev_malloc(BT * sizeof(float));
    dev_poison(d_u, n * sizeof(floatX));
    dev_poison(d_rstd, BT * sizeof(float));
    rmsnorm_forward_cfg(d_u, d_rstd, d_x, d_x, with_delta ? d_delta : NULL, d_w, BT, D, variant, 0);
    float* g_x = dev_download_F(d_x, n);
    float* g_u = dev_download_X(d_u, n);
    float* g_rstd = dev_download_F(d_rstd, BT);

    /* reference in double; the residual add is done in float by the kernel, so add in float here too */
    double* r_x = (double*)mallocCheck(n * sizeof(double));
    double* r_u = (double*)mallocCheck(n * sizeof(double));
    double* r_rstd = (double*)mallocCheck(BT * sizeof(double));
    float* x_after = (float*)mallocCheck(n * sizeof(float));
    for (int t = 0; t < BT; t++) {
        double ss = 0;
        for (int c = 0; c < D; c++) {
            size_t i = (size_t)t * D + c;
            x_after[i] = with_delta ? h_x[i] + h_delta[i] : h_x[i];
            r_x[i] = x_after[i];
            ss += r_x[i] * r_x[i];
        }
        r_rstd[t] = 1.0 / sqrt(ss / D + 1e-5);
        for (int c = 0; c < D; c++) r_u[(size_t)t * D + c] = r_x[(size_t)t * D + c] * r_rstd[t] * h_w[c];
    }
    dev_validate("rmsnorm_forward x (residual)", g_x, r_x, n, 0.0, 0.0);
    dev_validate("rmsnorm_forward u", g_u, r_u, n, bf16 ? 1e-4 : 1e-6, bf16 ? 5e-3 : 1e-5);
    dev_validate("rmsnorm_forward rstd", g_rstd, r_rstd, BT, 0.0, 1e-5);

    /* backward on the post-add x, with dx and dw starting random (both accumulate) */
    float* h_du = dev_random_floats(n, -1.f, 1.f);
    dev_round_to_X(h_du, n);
    float* h_dx0 = dev_random_floats(n, -1.f, 1.f);
    float* h_dw0 = dev_random_floats(D, -1.f, 1.f);
    float* rstd_f = g_rstd;   /* the kernel's own rstd is what backward reads */
    floatX* d_du = dev_upload_X(h_du, n);
    float* d_dx = dev_upload_F(h_dx0, n);
    float* d_dw = dev_upload_F(h_dw0, D);
    float* d_xa = dev_upload_F(x_after, n);
    float* d_scratch = (float*)dev_malloc(rmsnorm_backward_scratch_floats(D) * sizeof(float));
    dev_poison(d_scratch, rmsnorm_backward_scratch_floats(D) * sizeof(float));
    rmsnorm_backward_cfg(d_dx, NULL, d_dw, d_scratch, d_du, d_xa, d_w, d_rstd, BT, D, variant, rows_blocks, 0);
    float* g_dx = dev_download_F(d_dx, n);
    float* g_dw = dev_download_F(d_dw, D);
    double* r_dx = (double*)mallocCheck(n * sizeof(double));
    double* r_dw = (double*)mallocCheck(D * sizeof(double));
    for (int c = 0; c < D; c++) r_dw[c] = h_dw0[c];
    for (int t = 0; t < BT; t++) {
        double r = rstd_f[t], dot = 0;
        for (int c = 0; c < D; c++) dot += (double)h_du[(size_t)t * D + c] * h_w[c] * x_after[(size_t)t * D + c];
        for (int c = 0; c < D; c++) {
            size_t i = (size_t)t * D + c;
            r_dx[i] = h_dx0[i] + r * (h_du[i] * h_w[c] - x_after[i] * r * r * dot / D);
            r_dw[c] += (double)h_du[i] * x_after[i] * r;
        }
    }
    dev_validate("rmsnorm_backward dx (accumulated)", g_dx, r_dx, n, 1e-5, 1e-4);
    dev_validate("rmsnorm_backward dw (accumulated)", g_dw, r_dw, D, 1e-4, 1e-4);
    cudaCheck(cudaMemcpy(d_dx, h_dx0, n * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_dw, h_dw0, D * sizeof(float), cudaMemcpyHostToDevice));
    rmsnorm_backward_cfg(d_dx, NULL, d_dw, d_scratch, d_du, d_xa, d_w, d_rstd, BT, D, variant, rows_blocks, 0);
    float* g_dw2 = dev_download_F(d_dw, D);
    float* g_dx2 = dev_download_F(d_dx, n);
    dev_check_bitwise("rmsnorm_backward dw", g_dw, g_dw2, D * sizeof(float));
    dev_check_bitwise("rmsnorm_backward dx", g_dx, g_dx2, n * sizeof(float));

    free(h_x); free(h_delta); free(h_w); free(g_x); free(g_u); free(g_rstd); free(r_x); free(r_u); free(r_rstd);
    free(x_after); free(h_du); free(h_dx0); free(h_dw0); free(g_dx); free(g_dw); free(r_dx); free(r_dw);
    free(g_dw2); free(g_dx2);
    cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_delta)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_u));
    cudaCheck(cudaFree(d_rstd)); cudaCheck(cudaFree(d_du)); cudaCheck(cudaFree(d_dx)); cudaCheck(cudaFree(d_dw));
    cudaCheck(cudaFree(d_xa)); cudaCheck(cudaFree(d_scratch));
}

static void bench(int BT, int D) {
    printf("benchmark BT=%d D=%d (%s)\n", BT, D, PRECISION_NAME);
    size_t n = (size_t)BT * D;
    float* h = dev_random_floats(n, -1.f, 1.f);
    float* d_x = dev_upload_F(h, n);
    floatX* d_delta = dev_upload_X(h, n);
    float* d_w = dev_upload_F(h, D);
    floatX* d_u = (floatX*)dev_malloc(n * sizeof(floatX));
    float* d_rstd = (float*)dev_malloc(BT * sizeof(float));
    float* d_dx = dev_upload_F(h, n);
    float* d_dw = dev_upload_F(h, D);
    float* d_scratch = (float*)dev_malloc(rmsnorm_backward_scratch_floats(D) * sizeof(float));
    /* the residual stream grows over the repeats (x += delta each time): harmless for timing */
    const char* names[2] = {"row-resident (default)", "generic"};
    char name[128];
    for (int v = 0; v < 2; v++) {
        float ms = dev_bench_ms(100, [&] { rmsnorm_forward_cfg(d_u, d_rstd, d_x, d_x, d_delta, d_w, BT, D, v, 0); });
        snprintf(name, sizeof name, "rmsnorm_forward (with residual add) %s", names[v]);
        dev_report_bytes(name, ms, (double)n * (4 + 4 + 2 * sizeof(floatX)) + BT * 4.0);
        ms = dev_bench_ms(100, [&] { rmsnorm_forward_cfg(d_u, d_rstd, d_x, d_x, NULL, d_w, BT, D, v, 0); });
        snprintf(name, sizeof name, "rmsnorm_forward (delta NULL) %s", names[v]);
        dev_report_bytes(name, ms, (double)n * (4 + sizeof(floatX)) + BT * 4.0);
    }
    const int grids[5] = {RMSNORM_BWD_ROWS_BLOCKS, 264, 396, 528, 660};
    for (int v = 0; v < 2; v++)
        for (int gi = 0; gi < (v == 0 ? 5 : 1); gi++) {
            float ms = dev_bench_ms(100, [&] {
                rmsnorm_backward_cfg(d_dx, NULL, d_dw, d_scratch, d_u, d_x, d_w, d_rstd, BT, D, v, grids[gi], 0);
            });
            snprintf(name, sizeof name, "rmsnorm_backward (+ dw partial sums) %s, %d blocks", names[v],
                     v == 0 ? grids[gi] : RMSNORM_BWD_MAX_BLOCKS);
            dev_report_bytes(name, ms, (double)n * (sizeof(floatX) + 4 + 8) + BT * 4.0);
        }
    free(h);
    cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_delta)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_u));
    cudaCheck(cudaFree(d_rstd)); cudaCheck(cudaFree(d_dx)); cudaCheck(cudaFree(d_dw)); cudaCheck(cudaFree(d_scratch));
}

int main(int argc, char** argv) {
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0;
    if (!bench_only) {
        check_shape(37, 40, 1);               /* generic kernels (D not a multiple of 256) */
        check_shape(37, 40, 0);
        check_shape(3, 256, 1);               /* row-resident, 1 chunk, fewer rows than a block's warps */
        check_shape(45, 2048, 0);             /* row-resident, 8 chunks */
        check_shape(16384, 768, 1);           /* 130M: row-resident, 3 chunks */
        check_shape(16384, 768, 0);
        rows_blocks = 7;                      /* a small odd grid: many rows per warp */
        check_shape(1000, 512, 1);
        rows_blocks = RMSNORM_BWD_ROWS_BLOCKS;
        variant = RMSNORM_GENERIC;
        check_shape(16384, 768, 1);           /* 130M, the generic kernels */
        variant = RMSNORM_AUTO;
    }
    bench(16384, 768);
    return dev_finish();
}
