/*
 * gated_norm.cu: develop and check llmc/gated_norm.cuh (out = RMSNorm_g(y * SiLU(z)) * w, per group of E/G channels).
 *
 * Build: nvcc -O3 -arch=sm_90 -I. -o dev/cuda/gated_norm_bin dev/cuda/gated_norm.cu  (add -DENABLE_FP32 for fp32)
 * Run:   ./dev/cuda/gated_norm_bin
 * z is a column range of a wider buffer (like z inside zxbcdt), and dz is written into the same range of a gradient
 * buffer whose other columns must stay untouched.
 */
#include "dev/cuda/kernels_dev.h"
#include "llmc/gated_norm.cuh"

static double silu_d(double z) { return z / (1.0 + exp(-z)); }

/* the kernels under test: GNORM_AUTO (row-resident where the shape allows) or GNORM_GENERIC; the backward grid */
static int variant = GNORM_AUTO, rows_blocks = GNORM_BWD_ROWS_BLOCKS;

static void check_shape(int BT, int E, int G, int stride, int off) {
    printf("shape BT=%d E=%d G=%d z row stride %d offset %d, %s kernels (row chunks %d), %d blocks (%s)\n", BT, E, G,
           stride, off, variant == GNORM_GENERIC ? "generic" : "default", gated_norm_row_chunks(E, G), rows_blocks,
           PRECISION_NAME);
    int bf16 = sizeof(floatX) == 2;
    size_t n = (size_t)BT * E, nwide = (size_t)BT * stride;
    int Eg = E / G;
    float* h_y = dev_random_floats(n, -2.f, 2.f);
    dev_round_to_X(h_y, n);
    float* h_wide = dev_random_floats(nwide, -3.f, 3.f);
    dev_round_to_X(h_wide, nwide);
    float* h_w = dev_random_floats(E, 0.5f, 1.5f);
    floatX* d_y = dev_upload_X(h_y, n);
    floatX* d_wide = dev_upload_X(h_wide, nwide);
    float* d_w = dev_upload_F(h_w, E);
    floatX* d_out = (floatX*)dev_malloc(n * sizeof(floatX));
    float* d_rstd = (float*)dev_malloc((size_t)BT * G * sizeof(float));
    dev_poison(d_out, n * sizeof(floatX));
    dev_poison(d_rstd, (size_t)BT * G * sizeof(float));
    gated_norm_forward_cfg(d_out, d_rstd, d_y, d_wide + off, stride, d_w, BT, E, G, variant, 0);
    float* g_out = dev_download_X(d_out, n);
    float* g_rstd = dev_download_F(d_rstd, (size_t)BT * G);

    double* r_out = (double*)mallocCheck(n * sizeof(double));
    double* r_rstd = (double*)mallocCheck((size_t)BT * G * sizeof(double));
    double* v = (double*)mallocCheck(n * sizeof(double));
    for (int t = 0; t < BT; t++)
        for (int g = 0; g < G; g++) {
            double ss = 0;
            for (int c = g * Eg; c < (g + 1) * Eg; c++) {
                size_t i = (size_t)t * E + c;
                v[i] = h_y[i] * silu_d(h_wide[(size_t)t * stride + off + c]);
                ss += v[i] * v[i];
            }
            double r = 1.0 / sqrt(ss / Eg + 1e-5);
            r_rstd[(size_t)t * G + g] = r;
            for (int c = g * Eg; c < (g + 1) * Eg; c++) r_out[(size_t)t * E + c] = v[(size_t)t * E + c] * r * h_w[c];
        }
    dev_validate("gated_norm_forward out", g_out, r_out, n, bf16 ? 1e-4 : 1e-6, bf16 ? 5e-3 : 1e-5);
    dev_validate("gated_norm_forward rstd", g_rstd, r_rstd, (size_t)BT * G, 0.0, 1e-5);

    /* backward */
    float* h_dout = dev_random_floats(n, -1.f, 1.f);
    dev_round_to_X(h_dout, n);
    float* h_dw0 = dev_random_floats(E, -1.f, 1.f);
    floatX* d_dout = dev_upload_X(h_dout, n);
    floatX* d_dy = (floatX*)dev_malloc(n * sizeof(floatX));
    floatX* d_dwide = (floatX*)dev_malloc(nwide * sizeof(floatX));
    float* d_dw = dev_upload_F(h_dw0, E);
    float* d_scratch = (float*)dev_malloc(gated_norm_backward_scratch_floats(E) * sizeof(float));
    dev_poison(d_dy, n * sizeof(floatX));
    dev_poison(d_dwide, nwide * sizeof(floatX));
    dev_poison(d_scratch, gated_norm_backward_scratch_floats(E) * sizeof(float));
    dev_poison(d_out, n * sizeof(floatX));   /* the backward writes the forward's out again (the trainer's -r 1) */
    gated_norm_backward_cfg(d_out, d_dy, d_dwide + off, stride, d_dw, d_scratch, d_dout, d_y, d_wide + off, stride,
                            d_w, d_rstd, BT, E, G, variant, rows_blocks, 0);
    float* g_out2 = dev_download_X(d_out, n);
    dev_check_bitwise("gated_norm_backward out: the forward's out, bitwise", g_out, g_out2, n * sizeof(float));
    float* g_dy = dev_download_X(d_dy, n);
    float* g_dwide = dev_download_X(d_dwide, nwide);
    float* g_dw = dev_download_F(d_dw, E);

    double* r_dy = (double*)mallocCheck(n * sizeof(double));
    double* r_dz = (double*)mallocCheck(n * sizeof(double));
    double* r_dw = (double*)mallocCheck(E * sizeof(double));
    for (int c = 0; c < E; c++) r_dw[c] = h_dw0[c];
    for (int t = 0; t < BT; t++)
        for (int g = 0; g < G; g++) {
            double r = g_rstd[(size_t)t * G + g], dot = 0;   /* backward reads the kernel's rstd */
            for (int c = g * Eg; c < (g + 1) * Eg; c++) dot += (double)h_dout[(size_t)t * E + c] * h_w[c] * v[(size_t)t * E + c];
            for (int c = g * Eg; c < (g + 1) * Eg; c++) {
                size_t i = (size_t)t * E + c;
                double z = h_wide[(size_t)t * stride + off + c], s = 1.0 / (1.0 + exp(-z));
                double dv = r * (h_dout[i] * h_w[c] - v[i] * r * r * dot / Eg);
                r_dy[i] = dv * z * s;
                r_dz[i] = dv * h_y[i] * s * (1.0 + z * (1.0 - s));
                r_dw[c] += h_dout[i] * v[i] * r;
            }
        }
    float* g_dz = (float*)mallocCheck(n * sizeof(float));
    size_t touched = 0;
    for (int t = 0; t < BT; t++)
        for (int j = 0; j < stride; j++) {
            float val = g_dwide[(size_t)t * stride + j];
            if (j >= off && j < off + E) g_dz[(size_t)t * E + j - off] = val;
            else if (!isnan(val)) touched++;
        }
    dev_validate("gated_norm_backward dy", g_dy, r_dy, n, bf16 ? 1e-4 : 1e-5, bf16 ? 5e-3 : 1e-4);
    dev_validate("gated_norm_backward dz", g_dz, r_dz, n, bf16 ? 1e-4 : 1e-5, bf16 ? 5e-3 : 1e-4);
    printf("  columns outside z written: %zu\n", touched);
    dev_record("gated_norm_backward leaves the other columns alone", touched == 0);
    dev_validate("gated_norm_backward dw (accumulated)", g_dw, r_dw, E, 1e-4, 1e-4);
    cudaCheck(cudaMemcpy(d_dw, h_dw0, E * sizeof(float), cudaMemcpyHostToDevice));
    dev_poison(d_dy, n * sizeof(floatX));
    dev_poison(d_out, n * sizeof(floatX));
    gated_norm_backward_cfg(NULL, d_dy, d_dwide + off, stride, d_dw, d_scratch, d_dout, d_y, d_wide + off, stride,
                            d_w, d_rstd, BT, E, G, variant, rows_blocks, 0);   /* out = NULL: out is not written */
    float* g_dw2 = dev_download_F(d_dw, E);
    float* g_dy2 = dev_download_X(d_dy, n);
    dev_check_bitwise("gated_norm_backward dw", g_dw, g_dw2, E * sizeof(float));
    dev_check_bitwise("gated_norm_backward dy without out", g_dy, g_dy2, n * sizeof(float));
    float* g_out3 = dev_download_X(d_out, n);
    size_t written = 0;
    for (size_t i = 0; i < n; i++) written += !isnan(g_out3[i]);
    printf("  out elements written with out = NULL: %zu\n", written);
    dev_record("gated_norm_backward with out = NULL leaves out alone", written == 0);

    free(h_y); free(h_wide); free(h_w); free(g_out); free(g_rstd); free(r_out); free(r_rstd); free(v); free(h_dout);
    free(h_dw0); free(g_dy); free(g_dwide); free(g_dw); free(r_dy); free(r_dz); free(r_dw); free(g_dz); free(g_dw2);
    free(g_out2); free(g_dy2); free(g_out3);
    cudaCheck(cudaFree(d_y)); cudaCheck(cudaFree(d_wide)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_rstd)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_dy)); cudaCheck(cudaFree(d_dwide));
    cudaCheck(cudaFree(d_dw)); cudaCheck(cudaFree(d_scratch));
}

static void bench(int BT, int E, int G, int stride) {
    printf("benchmark BT=%d E=%d G=%d d_in_proj=%d (%s)\n", BT, E, G, stride, PRECISION_NAME);
    size_t n = (size_t)BT * E, nwide = (size_t)BT * stride;
    float* h = dev_random_floats(nwide, -1.f, 1.f);
    floatX* d_y = dev_upload_X(h, n);
    floatX* d_wide = dev_upload_X(h, nwide);
    floatX* d_dwide = dev_upload_X(h, nwide);
    floatX* d_out = dev_upload_X(h, n);
    floatX* d_dy = dev_upload_X(h, n);
    floatX* d_out2 = dev_upload_X(h, n);
    float* d_w = dev_upload_F(h, E);
    float* d_dw = dev_upload_F(h, E);
    float* d_rstd = (float*)dev_malloc((size_t)BT * G * sizeof(float));
    float* d_scratch = (float*)dev_malloc(gated_norm_backward_scratch_floats(E) * sizeof(float));
    const char* names[2] = {"row-resident (default)", "generic"};
    for (int v = 0; v < 2; v++) {
        char name[128];
        float ms = dev_bench_ms(100, [&] {
            gated_norm_forward_cfg(d_out, d_rstd, d_y, d_wide, stride, d_w, BT, E, G, v, 0);
        });
        snprintf(name, sizeof name, "gated_norm_forward %s", names[v]);
        dev_report_bytes(name, ms, (double)n * 3 * sizeof(floatX) + BT * G * 4.0);
    }
    const int grids[5] = {GNORM_BWD_ROWS_BLOCKS, 132, 264, 396, 528};
    for (int v = 0; v < 2; v++)
        for (int gi = 0; gi < (v == 0 ? 5 : 1); gi++) {
            char name[128];
            float ms = dev_bench_ms(100, [&] {
                gated_norm_backward_cfg(NULL, d_dy, d_dwide, stride, d_dw, d_scratch, d_out, d_y, d_wide, stride,
                                        d_w, d_rstd, BT, E, G, v, grids[gi], 0);
            });
            snprintf(name, sizeof name, "gated_norm_backward (+ dw partial sums) %s, %d blocks (minb %d)", names[v],
                     v == 0 ? grids[gi] : GNORM_BWD_MAX_BLOCKS, GNORM_BWD_ROWS_MINB);
            dev_report_bytes(name, ms, (double)n * 5 * sizeof(floatX) + BT * G * 4.0);
        }
    for (int v = 0; v < 2; v++) {   /* -r 1's form: out written again (the 6th BT x E stream) */
        char name[128];
        float ms = dev_bench_ms(100, [&] {
            gated_norm_backward_cfg(d_out2, d_dy, d_dwide, stride, d_dw, d_scratch, d_out, d_y, d_wide, stride, d_w,
                                    d_rstd, BT, E, G, v, GNORM_BWD_ROWS_BLOCKS, 0);
        });
        snprintf(name, sizeof name, "gated_norm_backward writing out again (-r 1) %s", names[v]);
        dev_report_bytes(name, ms, (double)n * 6 * sizeof(floatX) + BT * G * 4.0);
    }
    free(h);
    cudaCheck(cudaFree(d_y)); cudaCheck(cudaFree(d_wide)); cudaCheck(cudaFree(d_dwide)); cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_dy)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_dw)); cudaCheck(cudaFree(d_rstd));
    cudaCheck(cudaFree(d_scratch)); cudaCheck(cudaFree(d_out2));
}

int main(int argc, char** argv) {
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0;
    if (!bench_only) {
        check_shape(29, 48, 2, 112, 0);       /* two groups, 16-byte path */
        check_shape(23, 30, 3, 71, 3);        /* three groups of 10, scalar path */
        check_shape(3, 256, 1, 264, 8);       /* row-resident, 1 chunk, fewer rows than a block's warps */
        check_shape(77, 1024, 2, 1100, 8);    /* row-resident, two groups of 2 chunks */
        check_shape(45, 2048, 1, 2048, 0);    /* row-resident, 8 chunks */
        check_shape(16384, 1536, 1, 3352, 0); /* 130M layer: row-resident, 6 chunks */
        rows_blocks = 7;                      /* grid of 7 blocks (28 warps): kept for G = 2 (each warp one group), */
        check_shape(77, 1024, 2, 1100, 8);
        check_shape(61, 768, 3, 800, 16);     /* lowered to 6 blocks (24 warps) for G = 3 */
        rows_blocks = GNORM_BWD_ROWS_BLOCKS;
        variant = GNORM_GENERIC;
        check_shape(16384, 1536, 1, 3352, 0); /* 130M layer, the generic kernels */
        variant = GNORM_AUTO;
    }
    bench(16384, 1536, 1, 3352);
    return dev_finish();
}
