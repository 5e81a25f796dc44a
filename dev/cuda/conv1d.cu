/*
 * conv1d.cu: develop and check llmc/conv1d.cuh (causal depthwise conv1d + bias + SiLU, forward and backward).
 *
 * Build: nvcc -O3 -arch=sm_90 -I. -o dev/cuda/conv1d_bin dev/cuda/conv1d.cu          (add -DENABLE_FP32 for fp32)
 * Run:   ./dev/cuda/conv1d_bin
 * The input is a column range of a wider row-major buffer (like xBC inside zxbcdt), and din is written into the
 * same column range of a gradient buffer whose other columns must stay untouched.
 * Document boundaries: every shape runs again with a (B, T) document index (random documents of 1 to 12 positions,
 * so a window often spans two or three of them) against the reference's same-document rule, and the same output
 * without the index must differ (the check can fail).
 * Carried window (-C 1): conv1d_forward_window / conv1d_backward_window with a random (B, K-1, C) window, with and
 * without a document index, against the reference reading the window before t = 0 (by positions of the row's first
 * document), conv1d_final_window against its rule, and the window must change the output (the check can fail).
 */
#include "dev/cuda/kernels_dev.h"
#include "llmc/conv1d.cuh"

/* the configuration under test: version 5: the pipelined tiled kernels (the default launchers' path) with fwd_tiles
 * / tiles time tiles per forward / backward block; version 0: the per-thread kernels at these vector widths and
 * segment lengths */
static int version = 5, tiles = CONV_BWD_PIPE_TILES, fwd_tiles = CONV_FWD_PIPE_TILES;
static int fwd_vec = CONV_FWD_VEC, fwd_seg = CONV_FWD_SEG, bwd_vec = CONV_BWD_VEC, bwd_seg = CONV_BWD_SEG;

static void run_forward(floatX* out, const floatX* in, int in_stride, const float* w, const float* bias,
                        const int* seq, int B, int T, int C, int K) {
    if (version == 5) conv1d_forward_pipe(out, in, in_stride, w, bias, seq, B, T, C, K, fwd_tiles, 0);
    else conv1d_forward_cfg(out, in, in_stride, w, bias, seq, B, T, C, K, fwd_vec, fwd_seg, 0);
}

static void run_backward(floatX* din, int din_stride, float* dw, float* db, float* scratch, const floatX* dout,
                         const floatX* in, int in_stride, const float* w, const float* bias, const int* seq, int B,
                         int T, int C, int K) {
    if (version == 5)
        conv1d_backward_pipe(din, din_stride, dw, db, scratch, dout, in, in_stride, w, bias, seq, B, T, C, K, tiles,
                             0);
    else conv1d_backward_cfg(din, din_stride, dw, db, scratch, dout, in, in_stride, w, bias, seq, B, T, C, K,
                             bwd_vec, bwd_seg, 0);
}

/* a (B, T) document index: each row's documents of 1 to 12 positions, counted from 0 (non-decreasing, as
 * dataloader_doc_index makes it) */
static int* random_doc_index(int B, int T) {
    int* seq = (int*)mallocCheck((size_t)B * T * sizeof(int));
    unsigned r = 12345u;
    for (int b = 0; b < B; b++) {
        int d = 0, left = 0;
        for (int t = 0; t < T; t++) {
            if (left == 0) {
                r = r * 1103515245u + 12345u;
                left = 1 + (int)((r >> 16) % 12);
                if (t > 0) d++;
            }
            seq[(size_t)b * T + t] = d;
            left--;
        }
    }
    return seq;
}

/* train_mamba2.c's same_doc: position ts is read by t's window only inside t's document (seq NULL: always) */
static int ref_same_doc(const int* seq, int b, int T, int ts, int t) {
    return seq == NULL || seq[(size_t)b * T + ts] == seq[(size_t)b * T + t];
}

/* stride: row length of the wide buffer; off: first column of the conv input inside it; docs: with a document
 * index */
static void check_shape_docs(int B, int T, int C, int K, int stride, int off, int docs) {
    int BT = B * T;
    if (version == 5)
        printf("shape B=%d T=%d C=%d K=%d row stride %d column offset %d; v5 pipelined, %d / %d time tiles per fwd / "
               "bwd block (%s)\n", B, T, C, K, stride, off, fwd_tiles, tiles, PRECISION_NAME);
    else
        printf("shape B=%d T=%d C=%d K=%d row stride %d column offset %d; fwd vec %d seg %d, bwd vec %d seg %d (%s)\n",
               B, T, C, K, stride, off, fwd_vec, fwd_seg, bwd_vec, bwd_seg, PRECISION_NAME);
    if (docs) printf("  with document boundaries (seq_idx)\n");
    int* h_seq = docs ? random_doc_index(B, T) : NULL;
    int* d_seq = NULL;
    if (docs) {
        d_seq = (int*)dev_malloc((size_t)BT * sizeof(int));
        cudaCheck(cudaMemcpy(d_seq, h_seq, (size_t)BT * sizeof(int), cudaMemcpyHostToDevice));
    }
    int bf16 = sizeof(floatX) == 2;
    size_t nwide = (size_t)BT * stride, n = (size_t)BT * C;
    float* h_wide = dev_random_floats(nwide, -1.f, 1.f);
    dev_round_to_X(h_wide, nwide);
    float* h_w = dev_random_floats((size_t)C * K, -0.5f, 0.5f);
    float* h_b = dev_random_floats(C, -0.5f, 0.5f);
    floatX* d_wide = dev_upload_X(h_wide, nwide);
    float* d_w = dev_upload_F(h_w, (size_t)C * K);
    float* d_b = dev_upload_F(h_b, C);
    floatX* d_out = (floatX*)dev_malloc(n * sizeof(floatX));
    dev_poison(d_out, n * sizeof(floatX));
    run_forward(d_out, d_wide + off, stride, d_w, d_b, d_seq, B, T, C, K);
    float* g_out = dev_download_X(d_out, n);

    double* pre = (double*)mallocCheck(n * sizeof(double));
    double* r_out = (double*)mallocCheck(n * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) {
                double p = h_b[c];
                for (int k = 0; k < K; k++) {
                    int ts = t - (K - 1) + k;
                    if (ts >= 0 && ref_same_doc(h_seq, b, T, ts, t))
                        p += (double)h_w[c * K + k] * h_wide[((size_t)b * T + ts) * stride + off + c];
                }
                size_t i = ((size_t)b * T + t) * C + c;
                pre[i] = p;
                r_out[i] = p / (1.0 + exp(-p));
            }
    dev_validate("conv1d_forward xbc", g_out, r_out, n, bf16 ? 1e-5 : 1e-6, bf16 ? 5e-3 : 1e-5);
    if (docs) {   /* the boundaries matter: without the index the same output differs where a window crosses one */
        run_forward(d_out, d_wide + off, stride, d_w, d_b, NULL, B, T, C, K);
        float* g_plain = dev_download_X(d_out, n);
        size_t differ = 0;
        for (size_t i = 0; i < n; i++) differ += fabs(g_plain[i] - r_out[i]) > 1e-2 + 1e-2 * fabs(r_out[i]);
        printf("  without seq_idx %zu of %zu outputs differ from the reference with boundaries\n", differ, n);
        dev_record("conv1d_forward: the boundaries change the output (negative control)", K == 1 || differ > n / 20);
        free(g_plain);
    }

    /* backward */
    float* h_dout = dev_random_floats(n, -1.f, 1.f);
    dev_round_to_X(h_dout, n);
    float* h_dw0 = dev_random_floats((size_t)C * K, -1.f, 1.f);
    float* h_db0 = dev_random_floats(C, -1.f, 1.f);
    floatX* d_dout = dev_upload_X(h_dout, n);
    floatX* d_dwide = (floatX*)dev_malloc(nwide * sizeof(floatX));
    float* d_dw = dev_upload_F(h_dw0, (size_t)C * K);
    float* d_db = dev_upload_F(h_db0, C);
    size_t ns = conv1d_backward_scratch_floats(B, T, C, K);
    float* d_scratch = (float*)dev_malloc(ns * sizeof(float));
    dev_poison(d_scratch, ns * sizeof(float));
    dev_poison(d_dwide, nwide * sizeof(floatX));
    run_backward(d_dwide + off, stride, d_dw, d_db, d_scratch, d_dout, d_wide + off, stride, d_w, d_b, d_seq, B, T, C,
                 K);
    float* g_dwide = dev_download_X(d_dwide, nwide);
    float* g_dw = dev_download_F(d_dw, (size_t)C * K);
    float* g_db = dev_download_F(d_db, C);

    double* dp = (double*)mallocCheck(n * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        double s = 1.0 / (1.0 + exp(-pre[i]));
        dp[i] = h_dout[i] * s * (1.0 + pre[i] * (1.0 - s));
    }
    double* r_din = (double*)mallocCheck(n * sizeof(double));
    double* r_dw = (double*)mallocCheck((size_t)C * K * sizeof(double));
    double* r_db = (double*)mallocCheck(C * sizeof(double));
    for (int i = 0; i < C * K; i++) r_dw[i] = h_dw0[i];
    for (int c = 0; c < C; c++) r_db[c] = h_db0[c];
    for (size_t i = 0; i < n; i++) r_din[i] = 0.0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) {
                double g = dp[((size_t)b * T + t) * C + c];
                r_db[c] += g;
                for (int k = 0; k < K; k++) {
                    int ts = t - (K - 1) + k;
                    if (ts < 0 || !ref_same_doc(h_seq, b, T, ts, t)) continue;
                    r_dw[c * K + k] += g * h_wide[((size_t)b * T + ts) * stride + off + c];
                    r_din[((size_t)b * T + ts) * C + c] += g * h_w[c * K + k];
                }
            }
    /* the din columns out of the wide gradient buffer; every other column must still hold the poison */
    float* g_din = (float*)mallocCheck(n * sizeof(float));
    size_t touched = 0;
    for (int r = 0; r < BT; r++)
        for (int j = 0; j < stride; j++) {
            float v = g_dwide[(size_t)r * stride + j];
            if (j >= off && j < off + C) g_din[(size_t)r * C + j - off] = v;
            else if (!isnan(v)) touched++;
        }
    dev_validate("conv1d_backward din", g_din, r_din, n, bf16 ? 1e-5 : 1e-6, bf16 ? 5e-3 : 1e-4);
    printf("  columns outside xBC written: %zu\n", touched);
    dev_record("conv1d_backward leaves the other columns alone", touched == 0);
    dev_validate("conv1d_backward dw (accumulated)", g_dw, r_dw, (size_t)C * K, 1e-4, 1e-4);
    dev_validate("conv1d_backward db (accumulated)", g_db, r_db, C, 1e-4, 1e-4);
    cudaCheck(cudaMemcpy(d_dw, h_dw0, (size_t)C * K * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_db, h_db0, C * sizeof(float), cudaMemcpyHostToDevice));
    run_backward(d_dwide + off, stride, d_dw, d_db, d_scratch, d_dout, d_wide + off, stride, d_w, d_b, d_seq, B, T, C,
                 K);
    float* g_dw2 = dev_download_F(d_dw, (size_t)C * K);
    float* g_db2 = dev_download_F(d_db, C);
    dev_check_bitwise("conv1d_backward dw", g_dw, g_dw2, (size_t)C * K * sizeof(float));
    dev_check_bitwise("conv1d_backward db", g_db, g_db2, C * sizeof(float));

    free(h_wide); free(h_w); free(h_b); free(g_out); free(pre); free(r_out); free(h_dout); free(h_dw0); free(h_db0);
    free(g_dwide); free(g_dw); free(g_db); free(dp); free(r_din); free(r_dw); free(r_db); free(g_din);
    free(g_dw2); free(g_db2); free(h_seq);
    if (d_seq) cudaCheck(cudaFree(d_seq));
    cudaCheck(cudaFree(d_wide)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_b)); cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_dwide)); cudaCheck(cudaFree(d_dw)); cudaCheck(cudaFree(d_db));
    cudaCheck(cudaFree(d_scratch));
}

/* the carried window (conv1d_forward_window, conv1d_backward_window, conv1d_final_window) against a double
   reference: position t reads window[b][K-1+ts] for ts = t-(K-1)+k < 0 when t is in the row's first document; the
   window gets no gradient and adds to dw; the final window holds the last K-1 inputs, zero where another document
   than the row's last */
static void check_window(int B, int T, int C, int K, int stride, int off, int docs) {
    printf("carried window: B=%d T=%d C=%d K=%d stride %d offset %d%s (%s)\n", B, T, C, K, stride, off,
           docs ? ", document index" : "", PRECISION_NAME);
    int BT = B * T, K1 = K - 1, TE = T + K1, bf16 = sizeof(floatX) == 2;
    int* h_seq = docs ? random_doc_index(B, T) : NULL;
    int *d_seq = NULL, *d_seq_ext = NULL;
    if (docs) {
        int* h_ext = (int*)mallocCheck((size_t)B * TE * sizeof(int));
        for (int b = 0; b < B; b++)
            for (int t = 0; t < TE; t++) h_ext[(size_t)b * TE + t] = h_seq[(size_t)b * T + (t < K1 ? 0 : t - K1)];
        d_seq = (int*)dev_malloc((size_t)BT * sizeof(int));
        d_seq_ext = (int*)dev_malloc((size_t)B * TE * sizeof(int));
        cudaCheck(cudaMemcpy(d_seq, h_seq, (size_t)BT * sizeof(int), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(d_seq_ext, h_ext, (size_t)B * TE * sizeof(int), cudaMemcpyHostToDevice));
        free(h_ext);
    }
    size_t nwide = (size_t)BT * stride, n = (size_t)BT * C, nwin = (size_t)B * K1 * C + 1;
    float* h_wide = dev_random_floats(nwide, -1.f, 1.f);
    dev_round_to_X(h_wide, nwide);
    float* h_win = dev_random_floats(nwin, -1.f, 1.f);
    dev_round_to_X(h_win, nwin);
    float* h_w = dev_random_floats((size_t)C * K, -0.5f, 0.5f);
    float* h_b = dev_random_floats(C, -0.5f, 0.5f);
    float* h_dout = dev_random_floats(n, -1.f, 1.f);
    dev_round_to_X(h_dout, n);
    floatX* d_wide = dev_upload_X(h_wide, nwide);
    floatX* d_win = dev_upload_X(h_win, nwin);
    float* d_w = dev_upload_F(h_w, (size_t)C * K);
    float* d_b = dev_upload_F(h_b, C);
    floatX* d_dout = dev_upload_X(h_dout, n);
    floatX* d_out = (floatX*)dev_malloc(n * sizeof(floatX));
    floatX* d_dwide = (floatX*)dev_malloc(nwide * sizeof(floatX));
    floatX* d_final = (floatX*)dev_malloc(nwin * sizeof(floatX));
    size_t ne = conv1d_window_stage_elems(B, T, C, K);
    floatX* ext[3];
    for (int i = 0; i < 3; i++) ext[i] = (floatX*)dev_malloc(ne * sizeof(floatX));
    float* d_scratch = (float*)dev_malloc(conv1d_window_scratch_floats(B, T, C, K) * sizeof(float));
    float* d_dw = (float*)dev_malloc((size_t)C * K * sizeof(float));
    float* d_db = (float*)dev_malloc(C * sizeof(float));
    cudaCheck(cudaMemset(d_dw, 0, (size_t)C * K * sizeof(float)));
    cudaCheck(cudaMemset(d_db, 0, C * sizeof(float)));
    dev_poison(d_out, n * sizeof(floatX));
    dev_poison(d_dwide, nwide * sizeof(floatX));
    conv1d_forward_window(d_out, d_wide + off, stride, d_w, d_b, d_win, d_seq_ext, ext[0], ext[1], B, T, C, K, 0);
    conv1d_backward_window(d_dwide + off, stride, d_dw, d_db, d_scratch, d_dout, d_wide + off, stride, d_w, d_b, d_win,
                           d_seq_ext, ext[0], ext[1], ext[2], B, T, C, K, 0);
    conv1d_final_window(d_final, d_win, d_wide + off, stride, d_seq, B, T, C, K, 0);
    float* g_out = dev_download_X(d_out, n);
    float* g_dwide = dev_download_X(d_dwide, nwide);
    float* g_dw = dev_download_F(d_dw, (size_t)C * K);
    float* g_db = dev_download_F(d_db, C);
    float* g_final = dev_download_X(d_final, nwin);
    /* the reference */
    double* pre = (double*)mallocCheck(n * sizeof(double));
    double* r_out = (double*)mallocCheck(n * sizeof(double));
    double* r_din = (double*)callocCheck(n, sizeof(double));
    double* r_dw = (double*)callocCheck((size_t)C * K, sizeof(double));
    double* r_db = (double*)callocCheck(C, sizeof(double));
    double* r_final = (double*)callocCheck(nwin, sizeof(double));
    double* r_plain = (double*)mallocCheck(n * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) {
                double p = h_b[c], q = h_b[c];
                for (int k = 0; k < K; k++) {
                    int ts = t - K1 + k;
                    double w = h_w[c * K + k];
                    if (ts >= 0 && ref_same_doc(h_seq, b, T, ts, t)) {
                        p += w * h_wide[((size_t)b * T + ts) * stride + off + c];
                        q += w * h_wide[((size_t)b * T + ts) * stride + off + c];
                    } else if (ts < 0 && ref_same_doc(h_seq, b, T, 0, t)) {
                        p += w * h_win[((size_t)b * K1 + K1 + ts) * C + c];
                    }
                }
                size_t i = ((size_t)b * T + t) * C + c;
                pre[i] = p;
                r_out[i] = p / (1.0 + exp(-p));
                r_plain[i] = q / (1.0 + exp(-q));
            }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) {
                size_t i = ((size_t)b * T + t) * C + c;
                double s = 1.0 / (1.0 + exp(-pre[i])), g = h_dout[i] * s * (1.0 + pre[i] * (1.0 - s));
                r_db[c] += g;
                for (int k = 0; k < K; k++) {
                    int ts = t - K1 + k;
                    if (ts >= 0 && ref_same_doc(h_seq, b, T, ts, t)) {
                        r_dw[c * K + k] += g * h_wide[((size_t)b * T + ts) * stride + off + c];
                        r_din[((size_t)b * T + ts) * C + c] += g * h_w[c * K + k];
                    } else if (ts < 0 && ref_same_doc(h_seq, b, T, 0, t)) {
                        r_dw[c * K + k] += g * h_win[((size_t)b * K1 + K1 + ts) * C + c];
                    }
                }
            }
    for (int b = 0; b < B; b++)
        for (int j = 0; j < K1; j++) {
            int ts = T - K1 + j;
            for (int c = 0; c < C; c++) {
                double v = 0;
                if (ts >= 0 && ref_same_doc(h_seq, b, T, ts, T - 1)) v = h_wide[((size_t)b * T + ts) * stride + off + c];
                else if (ts < 0 && ref_same_doc(h_seq, b, T, 0, T - 1)) v = h_win[((size_t)b * K1 + K1 + ts) * C + c];
                r_final[((size_t)b * K1 + j) * C + c] = v;
            }
        }
    float* g_din = (float*)mallocCheck(n * sizeof(float));
    for (int r = 0; r < BT; r++)
        for (int c = 0; c < C; c++) g_din[(size_t)r * C + c] = g_dwide[(size_t)r * stride + off + c];
    dev_validate("conv1d_forward_window xbc", g_out, r_out, n, bf16 ? 1e-5 : 1e-6, bf16 ? 5e-3 : 1e-5);
    dev_validate("conv1d_backward_window din", g_din, r_din, n, bf16 ? 1e-5 : 1e-6, bf16 ? 5e-3 : 1e-4);
    dev_validate("conv1d_backward_window dw", g_dw, r_dw, (size_t)C * K, 1e-4, 1e-4);
    dev_validate("conv1d_backward_window db", g_db, r_db, C, 1e-4, 1e-4);
    if (K1 > 0) dev_validate("conv1d_final_window", g_final, r_final, nwin - 1, 1e-6, 1e-6);
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += fabs(g_out[i] - r_plain[i]) > 1e-2 + 1e-2 * fabs(r_plain[i]);
    printf("  %zu of %zu outputs differ from the same conv without the window\n", differ, n);
    dev_record("conv1d_forward_window: the window changes the output (negative control)", K == 1 || differ > 0);
    free(h_seq); free(h_wide); free(h_win); free(h_w); free(h_b); free(h_dout); free(g_out); free(g_dwide);
    free(g_dw); free(g_db); free(g_final); free(pre); free(r_out); free(r_din); free(r_dw); free(r_db); free(r_final);
    free(r_plain); free(g_din);
    if (d_seq) { cudaCheck(cudaFree(d_seq)); cudaCheck(cudaFree(d_seq_ext)); }
    cudaCheck(cudaFree(d_wide)); cudaCheck(cudaFree(d_win)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_b));
    cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_dwide)); cudaCheck(cudaFree(d_final));
    for (int i = 0; i < 3; i++) cudaCheck(cudaFree(ext[i]));
    cudaCheck(cudaFree(d_scratch)); cudaCheck(cudaFree(d_dw)); cudaCheck(cudaFree(d_db));
}

/* every shape without, then with document boundaries */
static void check_shape(int B, int T, int C, int K, int stride, int off) {
    check_shape_docs(B, T, C, K, stride, off, 0);
    check_shape_docs(B, T, C, K, stride, off, 1);
}

static void bench(int B, int T, int C, int K, int stride, int off) {
    printf("benchmark B=%d T=%d conv_dim=%d K=%d d_in_proj=%d (%s)\n", B, T, C, K, stride, PRECISION_NAME);
    size_t BT = (size_t)B * T, nwide = BT * stride, n = BT * C;
    float* h = dev_random_floats(nwide, -1.f, 1.f);
    floatX* d_wide = dev_upload_X(h, nwide);
    floatX* d_dwide = dev_upload_X(h, nwide);
    floatX* d_out = dev_upload_X(h, n);
    floatX* d_dout = dev_upload_X(h, n);
    float* d_w = dev_upload_F(h, (size_t)C * K);
    float* d_b = dev_upload_F(h, C);
    float* d_dw = dev_upload_F(h, (size_t)C * K);
    float* d_db = dev_upload_F(h, C);
    float* d_scratch = (float*)dev_malloc(conv1d_backward_scratch_floats(B, T, C, K) * sizeof(float));
    const int vecs[2] = {8, 4}, segs[4] = {8, 16, 32, 64};
    char name[96];
    float ms;
    for (int nt = 1; nt <= 8; nt *= 2) {
        ms = dev_bench_ms(100, [&] {
            conv1d_forward_pipe(d_out, d_wide + off, stride, d_w, d_b, NULL, B, T, C, K, nt, 0);
        });
        snprintf(name, sizeof name, "conv1d_forward v5 pipelined, %d time tiles per block%s", nt,
                 nt == CONV_FWD_PIPE_TILES ? " (default)" : "");
        dev_report_bytes(name, ms, (double)n * 2 * sizeof(floatX));
    }
    for (int nt = 1; nt <= 8; nt *= 2) {
        ms = dev_bench_ms(100, [&] {
            conv1d_backward_pipe(d_dwide + off, stride, d_dw, d_db, d_scratch, d_dout, d_wide + off, stride, d_w, d_b,
                                 NULL, B, T, C, K, nt, 0);
        });
        snprintf(name, sizeof name, "conv1d_backward v5 pipelined, %d time tiles per block%s", nt,
                 nt == CONV_BWD_PIPE_TILES ? " (default)" : "");
        dev_report_bytes(name, ms, (double)n * 3 * sizeof(floatX));
    }
    {   /* document boundaries: the default launchers with a (B, T) index of documents 1 to 12 long (the worst case:
           most windows cross a boundary) against none */
        int* h_seq = random_doc_index(B, T);
        int* d_seq = (int*)dev_malloc(BT * sizeof(int));
        cudaCheck(cudaMemcpy(d_seq, h_seq, BT * sizeof(int), cudaMemcpyHostToDevice));
        for (int docs = 0; docs < 2; docs++) {
            const int* sq = docs ? d_seq : NULL;
            ms = dev_bench_ms(100, [&] {
                conv1d_forward_docs(d_out, d_wide + off, stride, d_w, d_b, sq, B, T, C, K, 0);
            });
            dev_report_bytes(docs ? "conv1d_forward_docs with seq_idx" : "conv1d_forward_docs without seq_idx", ms,
                             (double)n * 2 * sizeof(floatX));
            ms = dev_bench_ms(100, [&] {
                conv1d_backward_docs(d_dwide + off, stride, d_dw, d_db, d_scratch, d_dout, d_wide + off, stride, d_w,
                                     d_b, sq, B, T, C, K, 0);
            });
            dev_report_bytes(docs ? "conv1d_backward_docs with seq_idx" : "conv1d_backward_docs without seq_idx", ms,
                             (double)n * 3 * sizeof(floatX));
        }
        free(h_seq);
        cudaCheck(cudaFree(d_seq));
    }
    {   /* the carried window (-C 1): the staged launchers against the window-less ones */
        floatX* d_win = dev_upload_X(h, (size_t)B * (K - 1) * C + 1);
        size_t ne = conv1d_window_stage_elems(B, T, C, K);
        floatX *e0 = (floatX*)dev_malloc(ne * sizeof(floatX)), *e1 = (floatX*)dev_malloc(ne * sizeof(floatX));
        floatX* e2 = (floatX*)dev_malloc(ne * sizeof(floatX));
        float* ws = (float*)dev_malloc(conv1d_window_scratch_floats(B, T, C, K) * sizeof(float));
        ms = dev_bench_ms(100, [&] {
            conv1d_forward_window(d_out, d_wide + off, stride, d_w, d_b, d_win, NULL, e0, e1, B, T, C, K, 0);
        });
        dev_report_bytes("conv1d_forward_window (carried window, staged)", ms, (double)n * 2 * sizeof(floatX));
        ms = dev_bench_ms(100, [&] {
            conv1d_backward_window(d_dwide + off, stride, d_dw, d_db, ws, d_dout, d_wide + off, stride, d_w, d_b, d_win,
                                   NULL, e0, e1, e2, B, T, C, K, 0);
        });
        dev_report_bytes("conv1d_backward_window (carried window, staged)", ms, (double)n * 3 * sizeof(floatX));
        cudaCheck(cudaFree(d_win)); cudaCheck(cudaFree(e0)); cudaCheck(cudaFree(e1)); cudaCheck(cudaFree(e2));
        cudaCheck(cudaFree(ws));
    }
    for (int vi = 0; vi < 2; vi++)
        for (int si = 0; si < 4; si++) {
            int v = vecs[vi], sg = segs[si];
            ms = dev_bench_ms(100, [&] {
                conv1d_forward_cfg(d_out, d_wide + off, stride, d_w, d_b, NULL, B, T, C, K, v, sg, 0);
            });
            snprintf(name, sizeof name, "conv1d_forward vec %d seg %d", v, sg);
            dev_report_bytes(name, ms, (double)n * 2 * sizeof(floatX));
        }
    for (int vi = 0; vi < 2; vi++)
        for (int si = 0; si < 4; si++) {
            int v = vecs[vi], sg = segs[si];
            ms = dev_bench_ms(100, [&] {
                conv1d_backward_cfg(d_dwide + off, stride, d_dw, d_db, d_scratch, d_dout, d_wide + off, stride, d_w,
                                    d_b, NULL, B, T, C, K, v, sg, 0);
            });
            snprintf(name, sizeof name, "conv1d_backward vec %d seg %d", v, sg);
            dev_report_bytes(name, ms, (double)n * 3 * sizeof(floatX));
        }
    free(h);
    cudaCheck(cudaFree(d_wide)); cudaCheck(cudaFree(d_dwide)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_dout));
    cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_b)); cudaCheck(cudaFree(d_dw)); cudaCheck(cudaFree(d_db));
    cudaCheck(cudaFree(d_scratch));
}

int main(int argc, char** argv) {
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0;
    if (!bench_only) {
        {   /* the default (v5) */
            tiles = CONV_BWD_PIPE_TILES;
            fwd_tiles = CONV_FWD_PIPE_TILES;
            check_shape(2, 45, 48, 4, 72, 16);    /* 16-byte path, T not a multiple of the segment */
            check_shape(3, 70, 20, 4, 37, 5);     /* scalar path: odd stride and offset */
            check_shape(2, 33, 24, 1, 24, 0);     /* K = 1 */
            check_shape(2, 40, 16, 8, 40, 8);     /* K = 8 */
            check_shape(1, 19, 8, 3, 16, 8);      /* K = 3, a single short sequence */
            check_shape(2, 2048, 1792, 4, 3352, 1536);   /* 130M layer, two sequences */
            check_shape(3, 200, 136, 4, 200, 64);        /* tiled: partial last channel and time tiles */
            check_shape(2, 300, 64, 8, 72, 8);           /* K = 8 with several time tiles a block */
            for (int docs = 0; docs <= 1; docs++) {      /* the carried window (-C 1) */
                check_window(2, 45, 48, 4, 72, 16, docs);
                check_window(3, 70, 20, 4, 37, 5, docs);   /* scalar path */
                check_window(2, 2, 24, 4, 24, 0, docs);    /* a row shorter than the window */
                check_window(2, 40, 16, 8, 40, 8, docs);
                check_window(2, 33, 24, 1, 24, 0, docs);   /* K = 1: no window */
                check_window(2, 2048, 1792, 4, 3352, 1536, docs);
            }
            /* every tiled configuration the benchmark sweeps */
            for (tiles = 1; tiles <= 8; tiles *= 2) {
                fwd_tiles = tiles;
                check_shape(3, 300, 72, 4, 80, 8);
                check_shape(2, 2048, 1792, 4, 3352, 1536);
            }
        }
        version = 0;
        /* every per-thread configuration the benchmark sweeps, at an odd small shape and at the 130M shape */
        const int vecs[2] = {8, 4}, segs[4] = {8, 16, 32, 64};
        for (int vi = 0; vi < 2; vi++)
            for (int si = 0; si < 4; si++) {
                fwd_vec = bwd_vec = vecs[vi];
                fwd_seg = bwd_seg = segs[si];
                check_shape(2, 45, 48, 4, 72, 16);
                check_shape(2, 2048, 1792, 4, 3352, 1536);
            }
    }
    bench(8, 2048, 1792, 4, 3352, 1536);
    return dev_finish();
}
