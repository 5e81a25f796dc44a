/*
 * matmul.cu: develop and check llmc/matmul.cuh (cuBLASLt forward, backward-input, backward-weight).
 *
 * Build: nvcc -O3 -arch=sm_90 -I. -o dev/cuda/matmul_bin dev/cuda/matmul.cu -lcublasLt   (add -DENABLE_FP32 for fp32)
 * Run:   ./dev/cuda/matmul_bin
 * Small odd shapes are checked in full against a double CPU product; the 130M shapes on a sample of rows
 * (forward, dinp) or of weight rows (dW, a full sum over BT). Tolerances scale with the rms of the reference:
 * bf16 output rounding is ~0.4% of an element, float accumulation ~1e-6.
 */
#include "dev/cuda/kernels_dev.h"
#include "llmc/matmul.cuh"

static double rms(const double* r, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += r[i] * r[i];
    return sqrt(s / (n > 0 ? n : 1)) + 1e-30;
}

/* rows: the output rows checked (all when nrows == BT); wrows: the weight-gradient rows checked */
static void check_shape(int BT, int C, int OC, int nsample, const char* label) {
    printf("shape %s: BT=%d C=%d OC=%d (%s)\n", label, BT, C, OC, PRECISION_NAME);
    int bf16 = sizeof(floatX) == 2;
    double tol_x = bf16 ? 4e-3 : 1e-5;   /* floatX outputs */
    double tol_f = bf16 ? 2e-5 : 1e-5;   /* float outputs */
    /* measured on H100 (NOTES_kernels.md): with beta = 1 and a bf16 output cuBLASLt rounds twice, so an element may be
     * 1 ulp (2^-8 relative) off, not half; and the tensor cores' fp32 accumulation over k = 16384 (dW) is off by
     * ~2e-5 of the rms (max ~7e-5), far above a sequential fp32 sum's error, far below any indexing bug's */
    double tol_acc = bf16 ? 8e-3 : 1e-5;
    double tol_dw_abs = bf16 ? 2e-4 : 1e-5;
    float* h_inp = dev_random_floats((size_t)BT * C, -1.f, 1.f);
    float* h_w = dev_random_floats((size_t)OC * C, -1.f, 1.f);
    float* h_dout = dev_random_floats((size_t)BT * OC, -1.f, 1.f);
    float* h_dinp0 = dev_random_floats((size_t)BT * C, -1.f, 1.f);
    float* h_dw0 = dev_random_floats((size_t)OC * C, -1.f, 1.f);
    dev_round_to_X(h_inp, (size_t)BT * C);
    dev_round_to_X(h_w, (size_t)OC * C);
    dev_round_to_X(h_dout, (size_t)BT * OC);
    dev_round_to_X(h_dinp0, (size_t)BT * C);
    floatX* d_inp = dev_upload_X(h_inp, (size_t)BT * C);
    floatX* d_w = dev_upload_X(h_w, (size_t)OC * C);
    floatX* d_dout = dev_upload_X(h_dout, (size_t)BT * OC);
    floatX* d_out = (floatX*)dev_malloc((size_t)BT * OC * sizeof(floatX));
    float* d_outf = (float*)dev_malloc((size_t)BT * OC * sizeof(float));
    floatX* d_dinp = (floatX*)dev_malloc((size_t)BT * C * sizeof(floatX));
    float* d_dw = dev_upload_F(h_dw0, (size_t)OC * C);

    /* sampled rows: spread over the whole range, first and last included */
    int ns = nsample < BT ? nsample : BT;
    int* rows = (int*)mallocCheck(ns * sizeof(int));
    for (int i = 0; i < ns; i++) rows[i] = ns == BT ? i : (int)((long)i * (BT - 1) / (ns - 1));
    int nws = nsample < OC ? nsample : OC;
    int* wrows = (int*)mallocCheck(nws * sizeof(int));
    for (int i = 0; i < nws; i++) wrows[i] = nws == OC ? i : (int)((long)i * (OC - 1) / (nws - 1));

    /* forward, floatX and float outputs */
    dev_poison(d_out, (size_t)BT * OC * sizeof(floatX));
    dev_poison(d_outf, (size_t)BT * OC * sizeof(float));
    matmul_forward(d_out, d_inp, d_w, BT, C, OC, 0);
    matmul_forward_f32(d_outf, d_inp, d_w, BT, C, OC, 0);
    float* g_out = dev_download_X(d_out, (size_t)BT * OC);
    float* g_outf = dev_download_F(d_outf, (size_t)BT * OC);
    double* ref = (double*)mallocCheck((size_t)ns * (OC > C ? OC : C) * sizeof(double));
    float* got = (float*)mallocCheck((size_t)ns * (OC > C ? OC : C) * sizeof(float));
    float* gotf = (float*)mallocCheck((size_t)ns * OC * sizeof(float));
    for (int i = 0; i < ns; i++)
        for (int o = 0; o < OC; o++) {
            double s = 0;
            for (int c = 0; c < C; c++) s += (double)h_inp[(size_t)rows[i] * C + c] * h_w[(size_t)o * C + c];
            ref[(size_t)i * OC + o] = s;
            got[(size_t)i * OC + o] = g_out[(size_t)rows[i] * OC + o];
            gotf[(size_t)i * OC + o] = g_outf[(size_t)rows[i] * OC + o];
        }
    /* every element written? (the sampled check cannot see the other rows) */
    size_t unwritten = 0;
    for (size_t i = 0; i < (size_t)BT * OC; i++) unwritten += isnan(g_out[i]) + isnan(g_outf[i]);
    dev_record("matmul_forward writes every element", unwritten == 0);
    double r = rms(ref, (size_t)ns * OC);
    dev_validate("matmul_forward out (floatX)", got, ref, (size_t)ns * OC, tol_x * r, tol_x);
    dev_validate("matmul_forward_f32 out (float)", gotf, ref, (size_t)ns * OC, tol_f * r, tol_f);

    /* backward input: overwrite, then accumulate onto a random start */
    for (int acc = 0; acc <= 1; acc++) {
        if (acc) dev_copy_to_X(d_dinp, h_dinp0, (size_t)BT * C);
        else dev_poison(d_dinp, (size_t)BT * C * sizeof(floatX));
        matmul_backward_input(d_dinp, d_dout, d_w, BT, C, OC, acc, 0);
        float* g = dev_download_X(d_dinp, (size_t)BT * C);
        for (int i = 0; i < ns; i++)
            for (int c = 0; c < C; c++) {
                double s = acc ? h_dinp0[(size_t)rows[i] * C + c] : 0.0;
                for (int o = 0; o < OC; o++) s += (double)h_dout[(size_t)rows[i] * OC + o] * h_w[(size_t)o * C + c];
                ref[(size_t)i * C + c] = s;
                got[(size_t)i * C + c] = g[(size_t)rows[i] * C + c];
            }
        unwritten = 0;
        for (size_t i = 0; i < (size_t)BT * C; i++) unwritten += isnan(g[i]);
        dev_record(acc ? "matmul_backward_input (+=) writes every element" : "matmul_backward_input writes every element",
                   unwritten == 0);
        r = rms(ref, (size_t)ns * C);
        dev_validate(acc ? "matmul_backward_input dinp (accumulate)" : "matmul_backward_input dinp (overwrite)", got,
                     ref, (size_t)ns * C, (acc ? tol_acc : tol_x) * r, acc ? tol_acc : tol_x);
        free(g);
    }

    /* backward weight: dW += dout^T inp, onto a random start; twice from the same start must match bitwise */
    matmul_backward_weight(d_dw, d_dout, d_inp, BT, C, OC, 0);
    float* g_dw = dev_download_F(d_dw, (size_t)OC * C);
    double* refw = (double*)mallocCheck((size_t)nws * C * sizeof(double));
    float* gotw = (float*)mallocCheck((size_t)nws * C * sizeof(float));
    double* col = (double*)mallocCheck((size_t)BT * sizeof(double));
    for (int i = 0; i < nws; i++) {
        int o = wrows[i];
        for (int t = 0; t < BT; t++) col[t] = h_dout[(size_t)t * OC + o];
        for (int c = 0; c < C; c++) {
            double s = h_dw0[(size_t)o * C + c];
            for (int t = 0; t < BT; t++) s += col[t] * h_inp[(size_t)t * C + c];
            refw[(size_t)i * C + c] = s;
            gotw[(size_t)i * C + c] = g_dw[(size_t)o * C + c];
        }
    }
    r = rms(refw, (size_t)nws * C);
    dev_validate("matmul_backward_weight dW (accumulated)", gotw, refw, (size_t)nws * C, tol_dw_abs * r, tol_f);
    cudaCheck(cudaMemcpy(d_dw, h_dw0, (size_t)OC * C * sizeof(float), cudaMemcpyHostToDevice));
    matmul_backward_weight(d_dw, d_dout, d_inp, BT, C, OC, 0);
    float* g_dw2 = dev_download_F(d_dw, (size_t)OC * C);
    dev_check_bitwise("matmul_backward_weight dW", g_dw, g_dw2, (size_t)OC * C * sizeof(float));

    free(h_inp); free(h_w); free(h_dout); free(h_dinp0); free(h_dw0); free(rows); free(wrows); free(g_out);
    free(g_outf); free(ref); free(got); free(gotf); free(g_dw); free(refw); free(gotw); free(col); free(g_dw2);
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_outf)); cudaCheck(cudaFree(d_dinp)); cudaCheck(cudaFree(d_dw));
}

static void bench(int BT, int C, int OC, const char* label) {
    size_t nmax = (size_t)BT * (C > OC ? C : OC);
    float* h = dev_random_floats(nmax > (size_t)OC * C ? nmax : (size_t)OC * C, -1.f, 1.f);
    floatX* d_inp = dev_upload_X(h, (size_t)BT * C);
    floatX* d_w = dev_upload_X(h, (size_t)OC * C);
    floatX* d_dout = dev_upload_X(h, (size_t)BT * OC);
    floatX* d_out = (floatX*)dev_malloc((size_t)BT * OC * sizeof(floatX));
    floatX* d_dinp = (floatX*)dev_malloc((size_t)BT * C * sizeof(floatX));
    float* d_dw = dev_upload_F(h, (size_t)OC * C);
    double flops = 2.0 * BT * C * OC;
    char name[96];
    snprintf(name, sizeof name, "%s forward (%dx%dx%d)", label, BT, C, OC);
    dev_report_flops(name, dev_bench_ms(30, [&] { matmul_forward(d_out, d_inp, d_w, BT, C, OC, 0); }), flops);
    snprintf(name, sizeof name, "%s backward input", label);
    dev_report_flops(name, dev_bench_ms(30, [&] { matmul_backward_input(d_dinp, d_dout, d_w, BT, C, OC, 0, 0); }),
                     flops);
    snprintf(name, sizeof name, "%s backward weight (+=)", label);
    dev_report_flops(name, dev_bench_ms(30, [&] { matmul_backward_weight(d_dw, d_dout, d_inp, BT, C, OC, 0); }), flops);
    free(h);
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_dinp)); cudaCheck(cudaFree(d_dw));
}

int main(int argc, char** argv) {
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0;
    matmul_init();
    if (!bench_only) {
        check_shape(40, 24, 56, 1 << 30, "small");
        check_shape(64, 96, 200, 1 << 30, "small 2");
        check_shape(16384, 768, 3352, 6, "130M in_proj");
        check_shape(16384, 1536, 768, 6, "130M out_proj");
    }
    printf("benchmark (%s)\n", PRECISION_NAME);
    bench(16384, 768, 3352, "in_proj");
    bench(16384, 1536, 768, "out_proj");
    bench(16384, 768, 50288, "lm_head");
    matmul_destroy();
    return dev_finish();
}
