/*
 * train_mamba2.c: train a Mamba-2 language model on the CPU, in plain C, every backward pass written by hand.
 *
 * This file is the reference the GPU trainer is checked against, and it is meant to be read top to bottom:
 *   1. the layers, each forward next to its backward: embedding, RMSNorm, matmul, causal conv1d + SiLU,
 *      dt softplus, the SSD layer (chunked algorithm, and the recurrent step for generation), gated RMSNorm,
 *      softmax + cross-entropy; for hybrids (doc/hybrid.md) bias, RoPE, causal attention with GQA, SwiGLU;
 *   2. the model: parameters and activations laid out from tables, forward, backward, AdamW;
 *   3. generation with the recurrent (constant memory) form;
 *   4. the training loop: data, schedule, gradient accumulation, evaluation, samples, checkpoints, resume.
 * The math is ../shared/SPEC.md (copied into doc/); doc/ derives every backward, in particular the SSD one.
 *
 * Shapes use B batch, T time, D d_model, E d_inner = expand*D, H heads, P headdim, N d_state, G groups,
 * K conv width, Q chunk size, V vocab (Vp padded); attention Hq query and Hkv key/value heads of hd, QKV =
 * hd (Hq + 2 Hkv), gated MLP hidden Hm. Activations are row-major with B*T rows (row = b*T + t). The model is a list
 * of n_layer blocks, each a Mamba-2 mixer ('M'), attention ('A') or gated MLP ('F') by the config's pattern.
 *
 * `real` is float in the trainer. The tests compile this same file with -DMAMBA2_DOUBLE to check every backward
 * against finite differences in double precision.
 */
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "llmc/utils.h"
#include "llmc/rand.h"
#include "llmc/schedulers.h"
#include "llmc/mamba2_model.h"
#include "llmc/dataloader.h"
#include "llmc/tokenizer.h"
#include "llmc/train_common.h"

#ifdef MAMBA2_DOUBLE
typedef double real;
#else
typedef float real;
#endif

static inline real silu(real x) { return x / ((real)1 + (real)exp(-x)); }
static inline real sigmoid(real x) { return (real)1 / ((real)1 + (real)exp(-x)); }
/* d/dx of x*sigmoid(x) */
static inline real silu_grad(real x) {
    real s = sigmoid(x);
    return s * ((real)1 + x * ((real)1 - s));
}
/* log(1 + e^x) without overflow */
static inline real softplus(real x) { return x > (real)20 ? x : (real)log1p(exp(x)); }

/* ================================================================================================================
 * 1. Layers
 * ================================================================================================================ */

/* ---- token embedding: out[bt,:] = wte[inp[bt],:] ---- */

void encoder_forward(real* out, const int* inp, const real* wte, int BT, int D) {
    for (int bt = 0; bt < BT; bt++) memcpy(out + (size_t)bt * D, wte + (size_t)inp[bt] * D, D * sizeof(real));
}

/* dwte += scatter of dout by token (sequential over rows: deterministic) */
void encoder_backward(real* dwte, const real* dout, const int* inp, int BT, int D) {
    for (int bt = 0; bt < BT; bt++) {
        real* dw = dwte + (size_t)inp[bt] * D;
        const real* d = dout + (size_t)bt * D;
        for (int i = 0; i < D; i++) dw[i] += d[i];
    }
}

/* ---- RMSNorm: out = x / sqrt(mean(x^2) + eps) * w. Caches rstd = 1/sqrt(mean(x^2)+eps) for the backward. ---- */

void rmsnorm_forward(real* out, real* rstd, const real* inp, const real* w, int BT, int C) {
#pragma omp parallel for
    for (int bt = 0; bt < BT; bt++) {
        const real* x = inp + (size_t)bt * C;
        real ss = 0;
        for (int i = 0; i < C; i++) ss += x[i] * x[i];
        real r = (real)1 / (real)sqrt(ss / C + MAMBA2_NORM_EPS);
        real* o = out + (size_t)bt * C;
        for (int i = 0; i < C; i++) o[i] = x[i] * r * w[i];
        rstd[bt] = r;
    }
}

/*
 * With xhat = x*r, out = xhat*w:  dw += dout*xhat;  dx = r * (w*dout - xhat * mean(w*dout*xhat)).
 * dinp is accumulated (+=): the residual stream's gradient flows past the norm too.
 */
void rmsnorm_backward(real* dinp, real* dw, const real* dout, const real* inp, const real* w, const real* rstd,
                      int BT, int C) {
#pragma omp parallel for
    for (int bt = 0; bt < BT; bt++) {
        const real* x = inp + (size_t)bt * C;
        const real* d = dout + (size_t)bt * C;
        real r = rstd[bt];
        real dot = 0;
        for (int i = 0; i < C; i++) dot += w[i] * d[i] * x[i] * r;
        dot /= C;
        real* dx = dinp + (size_t)bt * C;
        for (int i = 0; i < C; i++) dx[i] += r * (w[i] * d[i] - x[i] * r * dot);
    }
    /* weight gradient: a sum over rows, one thread per column so the order is fixed */
#pragma omp parallel for
    for (int i = 0; i < C; i++) {
        real acc = 0;
        for (int bt = 0; bt < BT; bt++) acc += dout[(size_t)bt * C + i] * inp[(size_t)bt * C + i] * rstd[bt];
        dw[i] += acc;
    }
}

/* ---- matmul without bias: out (BT,OC) = inp (BT,C) @ w (OC,C)^T ---- */

/* a dot product in 8 interleaved partial sums: the compiler vectorizes them, and their fixed order keeps the result
   the same on every run and thread count */
static inline real dot8(const real* a, const real* b, int n) {
    real acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    real s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

void matmul_forward(real* out, const real* inp, const real* w, int BT, int C, int OC) {
    /* (row, output) pairs in parallel: a single row (generation) still uses every thread */
#pragma omp parallel for collapse(2)
    for (int bt = 0; bt < BT; bt++)
        for (int o = 0; o < OC; o++) out[(size_t)bt * OC + o] = dot8(inp + (size_t)bt * C, w + (size_t)o * C, C);
}

/* dinp (BT,C) += dout @ w;  dw (OC,C) += dout^T @ inp */
void matmul_backward(real* dinp, real* dw, const real* dout, const real* inp, const real* w, int BT, int C, int OC) {
#pragma omp parallel for
    for (int bt = 0; bt < BT; bt++) {
        real* dx = dinp + (size_t)bt * C;
        const real* d = dout + (size_t)bt * OC;
        for (int o = 0; o < OC; o++) {
            const real* wrow = w + (size_t)o * C;
            real g = d[o];
            for (int i = 0; i < C; i++) dx[i] += g * wrow[i];
        }
    }
#pragma omp parallel for
    for (int o = 0; o < OC; o++) {
        real* dwrow = dw + (size_t)o * C;
        for (int bt = 0; bt < BT; bt++) {
            real g = dout[(size_t)bt * OC + o];
            const real* x = inp + (size_t)bt * C;
            for (int i = 0; i < C; i++) dwrow[i] += g * x[i];
        }
    }
}

/*
 * ---- causal depthwise conv1d + bias + SiLU over the xBC columns ----
 * pre[t,c] = bias[c] + sum_k w[c,k] * in[t-(K-1)+k, c]  (in = 0 before t = 0 of each sequence);  out = SiLU(pre).
 * `in` has row stride in_stride (it is a column slice of in_proj's output). pre is cached for the backward.
 * seq_idx (B*T, or NULL: one document per row) is the document of each position (doc/packing.md): a window position
 * ts of an earlier document than t's reads as zero, exactly as if t's document began the row (the test
 * `same_doc(seq_idx, b, T, ts, t)` is 1 when seq_idx is NULL, so the default path is the plain causal conv).
 * init_window (B, K-1, Cd), or NULL (zeros): carried state (-C 1, doc/packing.md section 6), the last K-1 conv inputs
 * of the row's previous batch, read where t - (K-1) + k < 0. It belongs to the document open at t = 0 (entries of
 * earlier documents were zeroed when it was saved, conv1d_final_window), so t reads it only when t is still in
 * that document. The window's terms come in the same k order as the row's own: a batch of T after a batch of T
 * computes exactly what one batch of 2T computes at those positions.
 */
static inline int same_doc(const int* seq_idx, int b, int T, int ts, int t) {
    return seq_idx == NULL || seq_idx[(size_t)b * T + ts] == seq_idx[(size_t)b * T + t];
}

void conv1d_silu_forward(real* pre, real* out, const real* in, int in_stride, const real* w, const real* bias,
                         const real* init_window, const int* seq_idx, int B, int T, int Cd, int K) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            size_t row = (size_t)b * T + t;
            for (int c = 0; c < Cd; c++) {
                real acc = bias[c];
                for (int k = 0; k < K; k++) {
                    int ts = t - (K - 1) + k;
                    if (ts >= 0 && same_doc(seq_idx, b, T, ts, t))
                        acc += w[c * K + k] * in[((size_t)b * T + ts) * in_stride + c];
                    else if (ts < 0 && init_window && same_doc(seq_idx, b, T, 0, t))
                        acc += w[c * K + k] * init_window[((size_t)b * (K - 1) + (K - 1 + ts)) * Cd + c];
                }
                pre[row * Cd + c] = acc;
                out[row * Cd + c] = silu(acc);
            }
        }
    }
}

/*
 * dpre = dout * SiLU'(pre)  (computed in place: dout is overwritten, it is not needed afterwards)
 * din[s,c] = sum_k w[c,k] * dpre[s+(K-1)-k, c]  (written, row stride in_stride)
 * dw[c,k] += sum_t dpre[t,c] * in[t-(K-1)+k, c];   dbias[c] += sum_t dpre[t,c]
 * With seq_idx, every (t, ts) pair the forward skipped (different documents) is skipped here too.
 * init_window (or NULL): the carried window the forward read; it adds to dw, and gets no gradient itself (the
 * gradient stops at the batch edge).
 */
void conv1d_silu_backward(real* din, int in_stride, real* dw, real* dbias, real* dout, const real* pre,
                          const real* in, const real* w, const real* init_window, const int* seq_idx, int B, int T,
                          int Cd, int K) {
    size_t BT = (size_t)B * T;
#pragma omp parallel for
    for (size_t i = 0; i < BT * Cd; i++) dout[i] *= silu_grad(pre[i]);
    const real* dpre = dout;
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int s = 0; s < T; s++) {
            for (int c = 0; c < Cd; c++) {
                real acc = 0;
                for (int k = 0; k < K; k++) {
                    int t = s + (K - 1) - k;
                    if (t < T && same_doc(seq_idx, b, T, s, t)) acc += w[c * K + k] * dpre[((size_t)b * T + t) * Cd + c];
                }
                din[((size_t)b * T + s) * in_stride + c] = acc;
            }
        }
    }
#pragma omp parallel for
    for (int c = 0; c < Cd; c++) {
        for (int b = 0; b < B; b++) {
            for (int t = 0; t < T; t++) {
                real g = dpre[((size_t)b * T + t) * Cd + c];
                dbias[c] += g;
                for (int k = 0; k < K; k++) {
                    int ts = t - (K - 1) + k;
                    if (ts >= 0 && same_doc(seq_idx, b, T, ts, t))
                        dw[c * K + k] += g * in[((size_t)b * T + ts) * in_stride + c];
                    else if (ts < 0 && init_window && same_doc(seq_idx, b, T, 0, t))
                        dw[c * K + k] += g * init_window[((size_t)b * (K - 1) + (K - 1 + ts)) * Cd + c];
                }
            }
        }
    }
}

/*
 * The window the row's next batch reads (carried state): its last K-1 conv inputs, taken from init_window where the
 * row is shorter than K-1. The next batch continues only the row's last document, so an entry of an earlier document
 * is stored as zero, which is what same_doc() would give it. out_window must not alias init_window.
 */
void conv1d_final_window(real* out_window, const real* init_window, const real* in, int in_stride, const int* seq_idx,
                         int B, int T, int Cd, int K) {
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < K - 1; j++) {
            int ts = T - (K - 1) + j; /* the row position this window entry holds; < 0: the previous window's */
            real* o = out_window + ((size_t)b * (K - 1) + j) * Cd;
            if (ts >= 0 && same_doc(seq_idx, b, T, ts, T - 1)) {
                for (int c = 0; c < Cd; c++) o[c] = in[((size_t)b * T + ts) * in_stride + c];
            } else if (ts < 0 && init_window && same_doc(seq_idx, b, T, 0, T - 1)) {
                for (int c = 0; c < Cd; c++) o[c] = init_window[((size_t)b * (K - 1) + (K - 1 + ts)) * Cd + c];
            } else {
                for (int c = 0; c < Cd; c++) o[c] = 0;
            }
        }
    }
}

/* ---- dt = softplus(dt_raw + dt_bias): the per-head step size. dt_raw is a column slice (row stride) ---- */

void dt_forward(real* dt, const real* dt_raw, int raw_stride, const real* dt_bias, int BT, int H) {
    for (int bt = 0; bt < BT; bt++)
        for (int h = 0; h < H; h++) dt[(size_t)bt * H + h] = softplus(dt_raw[(size_t)bt * raw_stride + h] + dt_bias[h]);
}

/* softplus'(u) = sigmoid(u):  d dt_raw = ddt * sigmoid(dt_raw + dt_bias) (written);  d dt_bias += the same */
void dt_backward(real* ddt_raw, int raw_stride, real* ddt_bias, const real* ddt, const real* dt_raw,
                 const real* dt_bias, int BT, int H) {
    for (int bt = 0; bt < BT; bt++) {
        for (int h = 0; h < H; h++) {
            real g = ddt[(size_t)bt * H + h] * sigmoid(dt_raw[(size_t)bt * raw_stride + h] + dt_bias[h]);
            ddt_raw[(size_t)bt * raw_stride + h] = g;
            ddt_bias[h] += g;
        }
    }
}

/*
 * ---- the SSD layer (state space duality), chunked algorithm ----
 *
 * Per batch element and head h (group g = h / (H/G)), with a_t = exp(dt_t A), A = -exp(A_log[h]):
 *     h_t = a_t h_{t-1} + dt_t x_t B_t^T          state (P,N)
 *     y_t = h_t C_t + D[h] x_t
 * computed chunk by chunk (SPEC.md section 3). Inside a chunk of length Q, cum_i = sum_{k<=i} dt_k A:
 *   1. intra-chunk  y_i  = sum_{j<=i} (C_i . B_j) exp(cum_i - cum_j) dt_j x_j        Q x Q masked "attention"
 *   2. inter-chunk  y_i += exp(cum_i) Hprev C_i                                      the state entering the chunk
 *   3. state pass   H    = exp(cum_last) Hprev + sum_j exp(cum_last - cum_j) dt_j x_j B_j^T
 * Every exp() argument is a difference cum_i - cum_j <= 0 (or cum_i <= 0): no overflow, no 0*inf.
 *
 * One head's view: x points at (t=0, this head's first channel), B and C at the group's columns; consecutive
 * time steps are `row` elements apart (the xBC row stride), dt steps are dt_stride apart, y steps y_stride apart.
 *
 * Document boundaries (SPEC.md section 10, doc/packing.md). seq (T, or NULL) is the row's document index s_t,
 * non-decreasing. The recurrence restarts where s_t != s_{t-1}: h_t = dt_t x_t B_t^T, the old state is dropped.
 * In the chunked form that is a decay of exp(-infinity) = 0 between documents, so each term is kept or dropped:
 *   1. intra-chunk  (i, j) kept only if s_i == s_j
 *   2. inter-chunk  i kept only if s_i == s_prev, the document open at the chunk's start (s_{t0-1}; s_0 for the
 *                   first chunk, whose entering state is the initial state)
 *   3. state pass   the entering state kept only if s_last == s_prev; input j kept only if s_j == s_last
 * A kept term is computed exactly as without boundaries (its decays only span positions of one document), so with
 * seq NULL, or a row of one document, the arithmetic is the same to the bit. The backward drops the same terms.
 */
typedef struct {
    const real* x; const real* B; const real* C; const real* dt;
    const int* seq;
    int row, dt_stride, y_stride;
    real A, Dskip;
    int T, P, N, Q;
} SSDHead;

static inline int ssd_num_chunks(int T, int Q) { return (T + Q - 1) / Q; }

/* cum[i] = A * sum_{k<=i} dt_{t0+k};  cs[i] = sum_{k<=i} dt_{t0+k} (needed for dA in the backward) */
static void ssd_chunk_cumsum(real* cum, real* cs, const SSDHead* s, int t0, int len) {
    real acc = 0;
    for (int i = 0; i < len; i++) {
        acc += s->dt[(size_t)(t0 + i) * s->dt_stride];
        cs[i] = acc;
        cum[i] = acc * s->A;
    }
}

/* CB[i][j] = C_{t0+i} . B_{t0+j} for j <= i: the "attention scores" of the chunk */
static void ssd_chunk_cb(real* CB, const SSDHead* s, int t0, int len) {
    for (int i = 0; i < len; i++) {
        const real* Ci = s->C + (size_t)(t0 + i) * s->row;
        for (int j = 0; j <= i; j++) {
            const real* Bj = s->B + (size_t)(t0 + j) * s->row;
            real acc = 0;
            for (int n = 0; n < s->N; n++) acc += Ci[n] * Bj[n];
            CB[i * s->Q + j] = acc;
        }
    }
}

/*
 * Forward for one head. states (nchunks, P, N) receives the state ENTERING each chunk (the backward needs it);
 * init_state (P,N) may be NULL (zeros); final_state (P,N) may be NULL.
 */
static void ssd_head_forward(real* y, real* states, real* final_state, const real* init_state, const SSDHead* s) {
    int P = s->P, N = s->N, Q = s->Q, nc = ssd_num_chunks(s->T, Q);
    real* S = (real*)mallocCheck(sizeof(real) * P * N);
    real* cum = (real*)mallocCheck(sizeof(real) * Q);
    real* cs = (real*)mallocCheck(sizeof(real) * Q);
    real* CB = (real*)mallocCheck(sizeof(real) * Q * Q);
    real* acc = (real*)mallocCheck(sizeof(real) * P);
    for (int i = 0; i < P * N; i++) S[i] = init_state ? init_state[i] : 0;
    const int* seq = s->seq;
    for (int c = 0; c < nc; c++) {
        int t0 = c * Q, len = s->T - t0 < Q ? s->T - t0 : Q;
        int prev = seq ? seq[t0 > 0 ? t0 - 1 : 0] : 0; /* the document open at the chunk's start */
        memcpy(states + (size_t)c * P * N, S, sizeof(real) * P * N);
        ssd_chunk_cumsum(cum, cs, s, t0, len);
        ssd_chunk_cb(CB, s, t0, len);
        for (int i = 0; i < len; i++) {
            for (int p = 0; p < P; p++) acc[p] = 0;
            /* 1. intra-chunk: masked, decayed C.B "attention" over the chunk's inputs */
            for (int j = 0; j <= i; j++) {
                if (seq && seq[t0 + j] != seq[t0 + i]) continue; /* another document: decay 0 */
                real wgt = CB[i * Q + j] * (real)exp(cum[i] - cum[j]) * s->dt[(size_t)(t0 + j) * s->dt_stride];
                const real* xj = s->x + (size_t)(t0 + j) * s->row;
                for (int p = 0; p < P; p++) acc[p] += wgt * xj[p];
            }
            /* 2. inter-chunk: the state that entered the chunk, decayed to position i, read out by C_i */
            const real* Ci = s->C + (size_t)(t0 + i) * s->row;
            real e = (real)exp(cum[i]);
            if (!seq || seq[t0 + i] == prev) {
                for (int p = 0; p < P; p++) {
                    real hc = 0;
                    for (int n = 0; n < N; n++) hc += S[p * N + n] * Ci[n];
                    acc[p] += e * hc;
                }
            }
            const real* xi = s->x + (size_t)(t0 + i) * s->row;
            real* yi = y + (size_t)(t0 + i) * s->y_stride;
            for (int p = 0; p < P; p++) yi[p] = acc[p] + s->Dskip * xi[p]; /* + D skip */
        }
        /* 3. state passing: decay the entering state over the whole chunk, add the chunk's own contribution */
        real eL = (real)exp(cum[len - 1]);
        for (int i = 0; i < P * N; i++) S[i] *= eL;
        if (seq && seq[t0 + len - 1] != prev) memset(S, 0, sizeof(real) * P * N); /* a boundary in the chunk */
        for (int j = 0; j < len; j++) {
            if (seq && seq[t0 + j] != seq[t0 + len - 1]) continue; /* only the last document's inputs */
            real wgt = (real)exp(cum[len - 1] - cum[j]) * s->dt[(size_t)(t0 + j) * s->dt_stride];
            const real* xj = s->x + (size_t)(t0 + j) * s->row;
            const real* Bj = s->B + (size_t)(t0 + j) * s->row;
            for (int p = 0; p < P; p++)
                for (int n = 0; n < N; n++) S[p * N + n] += wgt * xj[p] * Bj[n];
        }
    }
    if (final_state) memcpy(final_state, S, sizeof(real) * P * N);
    free(S); free(cum); free(cs); free(CB); free(acc);
}

/*
 * Backward for one head (doc/ssd_backward.md derives each line from the recurrence's adjoint).
 * Walks the chunks in reverse carrying dS = dL/d(state leaving the chunk), starting from d(final state).
 * Writes dx (this head's columns, incl. the D skip) and ddt; ACCUMULATES dB, dC (shared by the group's heads),
 * *dA (d/dA) and *dD; dinit (P,N) may be NULL.
 */
static void ssd_head_backward(real* dx, real* dB, real* dC, real* ddt, real* dA, real* dD, real* dinit,
                              const real* dy, const real* dfinal, const real* states, const SSDHead* s) {
    int P = s->P, N = s->N, Q = s->Q, nc = ssd_num_chunks(s->T, Q);
    int row = s->row, dts = s->dt_stride, ys = s->y_stride;
    real* dS = (real*)mallocCheck(sizeof(real) * P * N);
    real* dHprev = (real*)mallocCheck(sizeof(real) * P * N);
    real* cum = (real*)mallocCheck(sizeof(real) * Q);
    real* cs = (real*)mallocCheck(sizeof(real) * Q);
    real* dcum = (real*)mallocCheck(sizeof(real) * Q);
    real* CB = (real*)mallocCheck(sizeof(real) * Q * Q);
    real* u = (real*)mallocCheck(sizeof(real) * P);
    for (int i = 0; i < P * N; i++) dS[i] = dfinal ? dfinal[i] : 0;
    real dA_acc = 0, dD_acc = 0;
    const int* seq = s->seq; /* document boundaries: the forward's dropped terms are dropped here (doc/ssd_backward.md 7) */
    for (int c = nc - 1; c >= 0; c--) {
        int t0 = c * Q, len = s->T - t0 < Q ? s->T - t0 : Q, L = len - 1;
        int prev = seq ? seq[t0 > 0 ? t0 - 1 : 0] : 0;
        int keep = !seq || seq[t0 + L] == prev;
        const real* Hprev = states + (size_t)c * P * N;
        ssd_chunk_cumsum(cum, cs, s, t0, len);
        ssd_chunk_cb(CB, s, t0, len);
        for (int i = 0; i < len; i++) dcum[i] = 0;
        /* the D skip: y += D x */
        for (int i = 0; i < len; i++) {
            const real* dyi = dy + (size_t)(t0 + i) * ys;
            const real* xi = s->x + (size_t)(t0 + i) * row;
            real* dxi = dx + (size_t)(t0 + i) * row;
            for (int p = 0; p < P; p++) { dxi[p] = s->Dskip * dyi[p]; dD_acc += xi[p] * dyi[p]; }
            ddt[(size_t)(t0 + i) * dts] = 0;
        }
        /* 3. state passing, H = exp(cum_L) Hprev + sum_j exp(cum_L - cum_j) dt_j x_j B_j^T, given dS = dL/dH */
        real eL = (real)exp(cum[L]);
        real dot = 0;
        if (keep) {
            for (int i = 0; i < P * N; i++) { dHprev[i] = eL * dS[i]; dot += dS[i] * Hprev[i]; }
            dcum[L] += eL * dot;
        } else {
            for (int i = 0; i < P * N; i++) dHprev[i] = 0; /* the entering state never reached the chunk's end */
        }
        for (int j = 0; j < len; j++) {
            if (seq && seq[t0 + j] != seq[t0 + L]) continue;
            const real* xj = s->x + (size_t)(t0 + j) * row;
            const real* Bj = s->B + (size_t)(t0 + j) * row;
            real* dxj = dx + (size_t)(t0 + j) * row;
            real* dBj = dB + (size_t)(t0 + j) * row;
            real dtj = s->dt[(size_t)(t0 + j) * dts];
            real sj = (real)exp(cum[L] - cum[j]);
            real xu = 0;
            for (int p = 0; p < P; p++) {
                real acc = 0;
                for (int n = 0; n < N; n++) acc += dS[p * N + n] * Bj[n];
                u[p] = acc; /* u = dS B_j */
                xu += xj[p] * acc;
                dxj[p] += sj * dtj * acc;
            }
            for (int n = 0; n < N; n++) {
                real acc = 0;
                for (int p = 0; p < P; p++) acc += dS[p * N + n] * xj[p];
                dBj[n] += sj * dtj * acc;
            }
            ddt[(size_t)(t0 + j) * dts] += sj * xu;
            dcum[L] += sj * dtj * xu;
            dcum[j] -= sj * dtj * xu;
        }
        for (int i = 0; i < len; i++) {
            const real* dyi = dy + (size_t)(t0 + i) * ys;
            const real* Ci = s->C + (size_t)(t0 + i) * row;
            real* dCi = dC + (size_t)(t0 + i) * row;
            /* 2. inter-chunk, y_i += exp(cum_i) Hprev C_i */
            real ei = (real)exp(cum[i]);
            if (!seq || seq[t0 + i] == prev) {
                for (int p = 0; p < P; p++) {
                    real hc = 0;
                    for (int n = 0; n < N; n++) hc += Hprev[p * N + n] * Ci[n];
                    dcum[i] += ei * dyi[p] * hc;
                }
                for (int n = 0; n < N; n++) {
                    real acc = 0;
                    for (int p = 0; p < P; p++) acc += dyi[p] * Hprev[p * N + n];
                    dCi[n] += ei * acc;
                }
                for (int p = 0; p < P; p++)
                    for (int n = 0; n < N; n++) dHprev[p * N + n] += ei * dyi[p] * Ci[n];
            }
            /* 1. intra-chunk, y_i += sum_{j<=i} CB_ij exp(cum_i - cum_j) dt_j x_j */
            for (int j = 0; j <= i; j++) {
                if (seq && seq[t0 + j] != seq[t0 + i]) continue;
                const real* xj = s->x + (size_t)(t0 + j) * row;
                const real* Bj = s->B + (size_t)(t0 + j) * row;
                real* dxj = dx + (size_t)(t0 + j) * row;
                real* dBj = dB + (size_t)(t0 + j) * row;
                real dtj = s->dt[(size_t)(t0 + j) * dts];
                real eij = (real)exp(cum[i] - cum[j]);
                real dyx = 0;
                for (int p = 0; p < P; p++) dyx += dyi[p] * xj[p];
                real cb = CB[i * Q + j];
                real dcb = eij * dtj * dyx; /* dL/dCB_ij */
                for (int p = 0; p < P; p++) dxj[p] += cb * eij * dtj * dyi[p];
                ddt[(size_t)(t0 + j) * dts] += cb * eij * dyx;
                dcum[i] += cb * dcb;
                dcum[j] -= cb * dcb;
                for (int n = 0; n < N; n++) { dCi[n] += dcb * Bj[n]; dBj[n] += dcb * Ci[n]; }
            }
        }
        /* cum_i = A * sum_{k<=i} dt_k: each dt_k feeds every cum_i with i >= k (a reverse cumsum), A feeds all */
        real rev = 0;
        for (int i = L; i >= 0; i--) {
            rev += dcum[i];
            ddt[(size_t)(t0 + i) * dts] += s->A * rev;
            dA_acc += dcum[i] * cs[i];
        }
        memcpy(dS, dHprev, sizeof(real) * P * N); /* the state entering this chunk left the previous one */
    }
    if (dinit) memcpy(dinit, dS, sizeof(real) * P * N);
    *dA += dA_acc;
    *dD += dD_acc;
    free(dS); free(dHprev); free(cum); free(cs); free(dcum); free(CB); free(u);
}

static SSDHead ssd_head_view(const real* xbc, const real* dt, const real* A_log, const real* Dskip,
                             const int* seq_idx, int b, int h, int T, int H, int P, int N, int G, int Q) {
    int E = H * P, conv_dim = E + 2 * G * N, g = h / (H / G);
    const real* base = xbc + (size_t)b * T * conv_dim;
    SSDHead s;
    s.x = base + h * P;
    s.B = base + E + g * N;
    s.C = base + E + G * N + g * N;
    s.dt = dt + (size_t)b * T * H + h;
    s.seq = seq_idx ? seq_idx + (size_t)b * T : NULL;
    s.row = conv_dim; s.dt_stride = H; s.y_stride = E;
    s.A = -(real)exp(A_log[h]);
    s.Dskip = Dskip[h];
    s.T = T; s.P = P; s.N = N; s.Q = Q;
    return s;
}

/*
 * SSD over the batch: y (BT, E) from xbc (BT, E+2GN) = [x | B | C] and dt (BT, H).
 * states: (B, H, nchunks, P, N) saved for the backward. init_state/final_state: (B, H, P, N), may be NULL.
 * seq_idx (B*T): each position's document, or NULL for one document per row.
 */
void ssd_chunked_forward(real* y, real* states, real* final_state, const real* xbc, const real* dt,
                         const real* A_log, const real* Dskip, const real* init_state, const int* seq_idx,
                         int B, int T, int H, int P, int N, int G, int Q) {
    int nc = ssd_num_chunks(T, Q);
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            SSDHead s = ssd_head_view(xbc, dt, A_log, Dskip, seq_idx, b, h, T, H, P, N, G, Q);
            size_t bh = (size_t)b * H + h;
            ssd_head_forward(y + (size_t)b * T * H * P + h * P, states + bh * nc * P * N,
                             final_state ? final_state + bh * P * N : NULL,
                             init_state ? init_state + bh * P * N : NULL, &s);
        }
    }
}

/*
 * SSD backward: writes dxbc (BT, E+2GN) and ddt (BT, H); accumulates dA_log (H) and dD (H).
 * dfinal_state / dinit_state (B, H, P, N) may be NULL. dB and dC are sums over the heads of a group, so the work is
 * split over (batch, group) and the group's heads run in order: deterministic, no atomics.
 */
void ssd_chunked_backward(real* dxbc, real* ddt, real* dA_log, real* dD, real* dinit_state, const real* dy,
                          const real* dfinal_state, const real* xbc, const real* dt, const real* A_log,
                          const real* Dskip, const real* states, const int* seq_idx, int B, int T, int H, int P, int N,
                          int G, int Q) {
    int nc = ssd_num_chunks(T, Q), E = H * P, conv_dim = E + 2 * G * N, hpg = H / G;
    real* dA = (real*)callocCheck((size_t)B * H, sizeof(real));
    real* dDh = (real*)callocCheck((size_t)B * H, sizeof(real));
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int g = 0; g < G; g++) {
            real* base = dxbc + (size_t)b * T * conv_dim;
            real* dBg = base + E + g * N;
            real* dCg = base + E + G * N + g * N;
            for (int t = 0; t < T; t++)
                for (int n = 0; n < N; n++) { dBg[(size_t)t * conv_dim + n] = 0; dCg[(size_t)t * conv_dim + n] = 0; }
            for (int h = g * hpg; h < (g + 1) * hpg; h++) {
                SSDHead s = ssd_head_view(xbc, dt, A_log, Dskip, seq_idx, b, h, T, H, P, N, G, Q);
                size_t bh = (size_t)b * H + h;
                ssd_head_backward(base + h * P, dBg, dCg, ddt + (size_t)b * T * H + h, &dA[bh], &dDh[bh],
                                  dinit_state ? dinit_state + bh * P * N : NULL, dy + (size_t)b * T * E + h * P,
                                  dfinal_state ? dfinal_state + bh * P * N : NULL, states + bh * nc * P * N, &s);
            }
        }
    }
    /* A = -exp(A_log): dA_log = dA * A. Summed over the batch in a fixed order. */
    for (int h = 0; h < H; h++) {
        real A = -(real)exp(A_log[h]);
        for (int b = 0; b < B; b++) {
            dA_log[h] += dA[(size_t)b * H + h] * A;
            dD[h] += dDh[(size_t)b * H + h];
        }
    }
    free(dA);
    free(dDh);
}

/*
 * The recurrent step (generation): one token, constant memory. state (H, P, N) is updated in place.
 * y_h = (a h + dt x B^T) C + D x, with a = exp(dt A).  It computes the same function as the chunked form.
 */
void ssd_step(real* y, real* state, const real* xbc, const real* dt, const real* A_log, const real* Dskip,
              int H, int P, int N, int G) {
    int E = H * P, hpg = H / G;
    for (int h = 0; h < H; h++) {
        int g = h / hpg;
        const real* x = xbc + h * P;
        const real* Bv = xbc + E + g * N;
        const real* Cv = xbc + E + G * N + g * N;
        real a = (real)exp(dt[h] * -(real)exp(A_log[h]));
        real* S = state + (size_t)h * P * N;
        for (int p = 0; p < P; p++) {
            real acc = 0;
            for (int n = 0; n < N; n++) {
                S[p * N + n] = a * S[p * N + n] + dt[h] * x[p] * Bv[n];
                acc += S[p * N + n] * Cv[n];
            }
            y[h * P + p] = acc + Dskip[h] * x[p];
        }
    }
}

/*
 * ---- gated RMSNorm: out = RMSNorm(y * SiLU(z)) * w, normalized over each group of E/G channels ----
 * (mamba_ssm's convention: the norm comes AFTER the gate.) z is a column slice (row stride z_stride).
 * Caches rstd (BT, G).
 */
void gated_rmsnorm_forward(real* out, real* rstd, const real* y, const real* z, int z_stride, const real* w,
                           int BT, int E, int G) {
    int Eg = E / G;
#pragma omp parallel for
    for (int bt = 0; bt < BT; bt++) {
        for (int g = 0; g < G; g++) {
            const real* yr = y + (size_t)bt * E + g * Eg;
            const real* zr = z + (size_t)bt * z_stride + g * Eg;
            real ss = 0;
            for (int i = 0; i < Eg; i++) { real v = yr[i] * silu(zr[i]); ss += v * v; }
            real r = (real)1 / (real)sqrt(ss / Eg + MAMBA2_NORM_EPS);
            real* o = out + (size_t)bt * E + g * Eg;
            for (int i = 0; i < Eg; i++) o[i] = yr[i] * silu(zr[i]) * r * w[g * Eg + i];
            rstd[(size_t)bt * G + g] = r;
        }
    }
}

/*
 * With v = y * SiLU(z) (recomputed), the RMSNorm backward gives dv; then dy = dv * SiLU(z) and
 * dz = dv * y * SiLU'(z). dy and dz are written (dz into the z columns of d(in_proj output)); dw += .
 */
void gated_rmsnorm_backward(real* dy, real* dz, int z_stride, real* dw, const real* dout, const real* y,
                            const real* z, const real* w, const real* rstd, int BT, int E, int G) {
    int Eg = E / G;
#pragma omp parallel for
    for (int bt = 0; bt < BT; bt++) {
        for (int g = 0; g < G; g++) {
            const real* yr = y + (size_t)bt * E + g * Eg;
            const real* zr = z + (size_t)bt * z_stride + g * Eg;
            const real* d = dout + (size_t)bt * E + g * Eg;
            const real* wg = w + g * Eg;
            real r = rstd[(size_t)bt * G + g];
            real dot = 0;
            for (int i = 0; i < Eg; i++) dot += wg[i] * d[i] * yr[i] * silu(zr[i]) * r;
            dot /= Eg;
            for (int i = 0; i < Eg; i++) {
                real v = yr[i] * silu(zr[i]);
                real dv = r * (wg[i] * d[i] - v * r * dot);
                dy[(size_t)bt * E + g * Eg + i] = dv * silu(zr[i]);
                dz[(size_t)bt * z_stride + g * Eg + i] = dv * yr[i] * silu_grad(zr[i]);
            }
        }
    }
#pragma omp parallel for
    for (int i = 0; i < E; i++) {
        int g = i / Eg;
        real acc = 0;
        for (int bt = 0; bt < BT; bt++)
            acc += dout[(size_t)bt * E + i] * y[(size_t)bt * E + i] * silu(z[(size_t)bt * z_stride + i]) *
                   rstd[(size_t)bt * G + g];
        dw[i] += acc;
    }
}

/*
 * ---- softmax + cross-entropy over the V real classes (the Vp - V padded logits are ignored) ----
 * probs overwrite the logits (llm.c's manner); losses[bt] = -log p[target]. A target of -1 (TARGET_NO_LOSS) is a
 * masked position: its loss is 0 and it is not counted in the mean (doc/packing.md).
 */
void crossentropy_forward(real* losses, real* logits, const int* targets, int BT, int V, int Vp) {
#pragma omp parallel for
    for (int bt = 0; bt < BT; bt++) {
        real* l = logits + (size_t)bt * Vp;
        real maxv = l[0];
        for (int i = 1; i < V; i++) maxv = l[i] > maxv ? l[i] : maxv;
        real sum = 0;
        for (int i = 0; i < V; i++) { l[i] = (real)exp(l[i] - maxv); sum += l[i]; }
        for (int i = 0; i < V; i++) l[i] /= sum;
        for (int i = V; i < Vp; i++) l[i] = 0;
        if (targets) losses[bt] = targets[bt] == TARGET_NO_LOSS ? 0 : -(real)log(l[targets[bt]]);
    }
}

/* dlogits = (probs - onehot(target)) * dloss; padded columns get 0; a masked row (target -1) gets 0 */
void crossentropy_backward(real* dlogits, const real* probs, const int* targets, real dloss, int BT, int V, int Vp) {
#pragma omp parallel for
    for (int bt = 0; bt < BT; bt++) {
        const real* p = probs + (size_t)bt * Vp;
        real* d = dlogits + (size_t)bt * Vp;
        if (targets[bt] == TARGET_NO_LOSS) { memset(d, 0, sizeof(real) * Vp); continue; }
        for (int i = 0; i < Vp; i++) d[i] = i < V ? p[i] * dloss : 0;
        d[targets[bt]] -= dloss;
    }
}

/*
 * ---- the attention block's layers (doc/hybrid.md): bias, RoPE, causal softmax attention with GQA, SwiGLU ----
 * mamba_ssm's MHA: in_proj gives per position [q (Hq hd) | k (Hkv hd) | v (Hkv hd)]; q and k get rotary embeddings on
 * the first rd dims of each head; head h attends with key/value head h / (Hq / Hkv); softmax scale 1/sqrt(hd).
 */

/* out[bt,:] += b */
void bias_forward(real* out, const real* b, int BT, int OC) {
#pragma omp parallel for
    for (int bt = 0; bt < BT; bt++)
        for (int o = 0; o < OC; o++) out[(size_t)bt * OC + o] += b[o];
}

/* db += the column sums of dout (one thread per column: a fixed order) */
void bias_backward(real* db, const real* dout, int BT, int OC) {
#pragma omp parallel for
    for (int o = 0; o < OC; o++) {
        real acc = 0;
        for (int bt = 0; bt < BT; bt++) acc += dout[(size_t)bt * OC + o];
        db[o] += acc;
    }
}

/* the position of t in its document: t itself, or t - (the document's first position) with packed documents, as
   flash_attn's varlen rotary (cu_seqlens) counts it: every document starts at position 0 */
static inline int doc_position(const int* seq_idx, int b, int T, int t) {
    if (seq_idx == NULL) return t;
    int s = t;
    while (s > 0 && same_doc(seq_idx, b, T, s - 1, t)) s--;
    return t - s;
}

/*
 * Rotary embedding (GPT-NeoX / flash_attn non-interleaved "rotate half") of n_heads heads of hd at x, in place: for
 * i < rd/2, with angle = pos * base^(-2i/rd), the pair (x[i], x[i + rd/2]) turns by +angle (sign 1) or -angle
 * (sign -1: the inverse, which is also the transpose, so the backward of a turn is the turn back). Dims past rd
 * are left alone.
 */
static void rope_rotate(real* x, int n_heads, int hd, int rd, int pos, int base, int sign) {
    int half = rd / 2;
    for (int i = 0; i < half; i++) {
        double angle = (double)pos * pow((double)base, -2.0 * i / rd);
        real cs = (real)cos(angle), sn = (real)(sign * sin(angle));
        for (int h = 0; h < n_heads; h++) {
            real* v = x + (size_t)h * hd;
            real x1 = v[i], x2 = v[i + half];
            v[i] = x1 * cs - x2 * sn;
            v[i + half] = x2 * cs + x1 * sn;
        }
    }
}

/* rows of qkv (stride QKV): the q and k heads (the first Hq + Hkv heads of a row) rotated by their position */
void rope_forward(real* out, const real* qkv, const int* seq_idx, int B, int T, int QKV, int n_rot_heads, int hd,
                  int rd, int base) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t row = ((size_t)b * T + t) * QKV;
            memcpy(out + row, qkv + row, sizeof(real) * QKV);
            if (rd > 0) rope_rotate(out + row, n_rot_heads, hd, rd, doc_position(seq_idx, b, T, t), base, 1);
        }
}

/* d(before rotation) from d(after), in place: the turn back */
void rope_backward(real* dqkv, const int* seq_idx, int B, int T, int QKV, int n_rot_heads, int hd, int rd, int base) {
    if (rd == 0) return;
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            rope_rotate(dqkv + ((size_t)b * T + t) * QKV, n_rot_heads, hd, rd, doc_position(seq_idx, b, T, t), base,
                        -1);
}

/* the first position of t's document (0 without packed documents): attention never looks past it */
static inline int doc_start(const int* seq_idx, int b, int T, int t) { return t - doc_position(seq_idx, b, T, t); }

/*
 * Causal attention over the rotated qkv rows. out (BT, Hq hd): head h of position t is sum_j p_j v_j over the
 * positions j <= t of t's document, p = softmax_j(q_t . k_j / sqrt(hd)). lse (B, Hq, T) keeps each row's
 * log-sum-exp of the scaled scores, so the backward recomputes p instead of storing the (T, T) matrices.
 */
void attention_forward(real* out, real* lse, const real* qkv, const int* seq_idx, int B, int T, int Hq, int Hkv,
                       int hd) {
    int QKV = hd * (Hq + 2 * Hkv), rep = Hq / Hkv;
    real scale = (real)(1.0 / sqrt((double)hd));
#pragma omp parallel
    {
        real* p = (real*)mallocCheck(sizeof(real) * (size_t)T);
#pragma omp for collapse(3)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < Hq; h++)
                for (int t = 0; t < T; t++) {
                    int g = h / rep, j0 = doc_start(seq_idx, b, T, t);
                    const real* q = qkv + ((size_t)b * T + t) * QKV + (size_t)h * hd;
                    real maxv = -INFINITY;
                    for (int j = j0; j <= t; j++) {
                        const real* k = qkv + ((size_t)b * T + j) * QKV + (size_t)(Hq + g) * hd;
                        p[j] = dot8(q, k, hd) * scale;
                        if (p[j] > maxv) maxv = p[j];
                    }
                    real sum = 0;
                    for (int j = j0; j <= t; j++) { p[j] = (real)exp(p[j] - maxv); sum += p[j]; }
                    real* o = out + ((size_t)b * T + t) * Hq * hd + (size_t)h * hd;
                    for (int d = 0; d < hd; d++) o[d] = 0;
                    for (int j = j0; j <= t; j++) {
                        const real* v = qkv + ((size_t)b * T + j) * QKV + (size_t)(Hq + Hkv + g) * hd;
                        real w = p[j] / sum;
                        for (int d = 0; d < hd; d++) o[d] += w * v[d];
                    }
                    lse[((size_t)b * Hq + h) * T + t] = maxv + (real)log(sum);
                }
        free(p);
    }
}

/*
 * dqkv (zeroed here) from dout. With p_j recomputed from lse, dp_j = dout_t . v_j and D_t = dout_t . out_t:
 *   ds_j = p_j (dp_j - D_t);  dq_t = scale sum_j ds_j k_j;  dk_j += scale ds_j q_t;  dv_j += p_j dout_t.
 * The heads sharing a key/value head add into the same dk, dv: one thread per (row, kv head) runs them in a fixed
 * order, so the sums are the same on every run.
 */
void attention_backward(real* dqkv, const real* dout, const real* qkv, const real* out, const real* lse,
                        const int* seq_idx, int B, int T, int Hq, int Hkv, int hd) {
    int QKV = hd * (Hq + 2 * Hkv), rep = Hq / Hkv;
    real scale = (real)(1.0 / sqrt((double)hd));
    memset(dqkv, 0, sizeof(real) * (size_t)B * T * QKV);
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < Hkv; g++)
            for (int h = g * rep; h < (g + 1) * rep; h++)
                for (int t = 0; t < T; t++) {
                    int j0 = doc_start(seq_idx, b, T, t);
                    size_t rt = ((size_t)b * T + t);
                    const real* q = qkv + rt * QKV + (size_t)h * hd;
                    const real* dO = dout + rt * Hq * hd + (size_t)h * hd;
                    const real* O = out + rt * Hq * hd + (size_t)h * hd;
                    real* dq = dqkv + rt * QKV + (size_t)h * hd;
                    real Dt = dot8(dO, O, hd), l = lse[((size_t)b * Hq + h) * T + t];
                    for (int j = j0; j <= t; j++) {
                        size_t rj = ((size_t)b * T + j);
                        const real* k = qkv + rj * QKV + (size_t)(Hq + g) * hd;
                        const real* v = qkv + rj * QKV + (size_t)(Hq + Hkv + g) * hd;
                        real* dk = dqkv + rj * QKV + (size_t)(Hq + g) * hd;
                        real* dv = dqkv + rj * QKV + (size_t)(Hq + Hkv + g) * hd;
                        real p = (real)exp(dot8(q, k, hd) * scale - l);
                        real ds = p * (dot8(dO, v, hd) - Dt) * scale;
                        for (int d = 0; d < hd; d++) {
                            dq[d] += ds * k[d];
                            dk[d] += ds * q[d];
                            dv[d] += p * dO[d];
                        }
                    }
                }
}

/* ---- gated MLP (SwiGLU): h = fc1(x) = [y | gate] (2 Hm), out = y * silu(gate), then fc2 ---- */

void swiglu_forward(real* out, const real* h, int BT, int Hm) {
#pragma omp parallel for
    for (int bt = 0; bt < BT; bt++) {
        const real* y = h + (size_t)bt * 2 * Hm;
        for (int i = 0; i < Hm; i++) out[(size_t)bt * Hm + i] = y[i] * silu(y[Hm + i]);
    }
}

/* dh (written) from dout: dy = dout silu(gate), dgate = dout y silu'(gate) */
void swiglu_backward(real* dh, const real* dout, const real* h, int BT, int Hm) {
#pragma omp parallel for
    for (int bt = 0; bt < BT; bt++) {
        const real* y = h + (size_t)bt * 2 * Hm;
        real* d = dh + (size_t)bt * 2 * Hm;
        for (int i = 0; i < Hm; i++) {
            real g = dout[(size_t)bt * Hm + i];
            d[i] = g * silu(y[Hm + i]);
            d[Hm + i] = g * y[i] * silu_grad(y[Hm + i]);
        }
    }
}

/* ================================================================================================================
 * 2. The model
 * ================================================================================================================ */

/* one pointer per entry of the parameter table (llmc/mamba2_model.h), in the table's order */
typedef struct {
    real* wte;        /* (Vp, D) token embedding, tied with the LM head */
    real* norm_w;     /* (L, D) pre-norm of each block (L = n_layer, all blocks) */
    real* in_proj_w;  /* (LM, 2E+2GN+H, D)   LM = the Mamba-2 blocks (L in a pure model) */
    real* conv_w;     /* (LM, E+2GN, K) */
    real* conv_b;     /* (LM, E+2GN) */
    real* dt_bias;    /* (LM, H) */
    real* A_log;      /* (LM, H) */
    real* D;          /* (LM, H) skip */
    real* gnorm_w;    /* (LM, E) gated norm */
    real* out_proj_w; /* (LM, D, E) */
    real* norm_f_w;   /* (D) final norm */
    real* attn_in_w;  /* (LA, QKV, D) attention blocks: rows [q (Hq hd) | k (Hkv hd) | v (Hkv hd)] */
    real* attn_in_b;  /* (LA, QKV) with qkv_proj_bias */
    real* attn_out_w; /* (LA, D, Hq hd) */
    real* attn_out_b; /* (LA, D) with out_proj_bias */
    real* mlp_fc1_w;  /* (LF, 2 Hm, D) gated-MLP blocks: rows [y | gate] */
    real* mlp_fc2_w;  /* (LF, D, Hm) */
} ParameterTensors;

static void point_parameters(ParameterTensors* p, real* memory, const ParamSpec* table) {
    real** ptrs[NUM_PARAM_TENSORS] = {&p->wte, &p->norm_w, &p->in_proj_w, &p->conv_w, &p->conv_b, &p->dt_bias,
                                      &p->A_log, &p->D, &p->gnorm_w, &p->out_proj_w, &p->norm_f_w, &p->attn_in_w,
                                      &p->attn_in_b, &p->attn_out_w, &p->attn_out_b, &p->mlp_fc1_w, &p->mlp_fc2_w};
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) *ptrs[i] = memory + table[i].offset;
}

/* activations of one forward pass, laid out from one table of sizes (built in activation_sizes) */
typedef struct {
    real* residual;   /* (L+1, BT, D) the residual stream entering each block; [L] goes to the final norm */
    real* ln;         /* (L, BT, D) pre-norm output */
    real* ln_rstd;    /* (L, BT) */
    real* zxbcdt;     /* (LM, BT, 2E+2GN+H) in_proj output: z | xBC | dt_raw  (LM: the Mamba-2 blocks) */
    real* xbc_pre;    /* (LM, BT, E+2GN) conv output before SiLU */
    real* xbc;        /* (LM, BT, E+2GN) after SiLU: x | B | C */
    real* dt;         /* (LM, BT, H) softplus(dt_raw + dt_bias) */
    real* ssd_states; /* (LM, B, H, nchunks, P, N) state entering each chunk */
    real* y;          /* (LM, BT, E) SSD output incl. the D skip */
    real* gn_rstd;    /* (LM, BT, G) */
    real* gn;         /* (LM, BT, E) gated-norm output, the input of out_proj */
    real* lnf;        /* (BT, D) */
    real* lnf_rstd;   /* (BT) */
    real* probs;      /* (BT, Vp) logits, then softmax probabilities */
    real* losses;     /* (BT) */
    real* qkv;        /* (LA, BT, QKV) attention in_proj output (+ bias)  (LA: the attention blocks) */
    real* qkv_rot;    /* (LA, BT, QKV) q and k after RoPE, v as is */
    real* att_lse;    /* (LA, B, Hq, T) log-sum-exp of each row's scores */
    real* att;        /* (LA, BT, Hq hd) attention output, the input of out_proj */
    real* mlp_h;      /* (LF, BT, 2 Hm) fc1 output [y | gate]  (LF: the gated-MLP blocks) */
    real* mlp_act;    /* (LF, BT, Hm) y * silu(gate), the input of fc2 */
} ActivationTensors;
#define NUM_ACTIVATION_TENSORS 21

/* gradients of the activations of ONE block at a time (the backward reuses them layer after layer) */
typedef struct {
    real* dresidual;  /* (BT, D) */
    real* dln;        /* (BT, D) */
    real* dzxbcdt;    /* (BT, 2E+2GN+H) */
    real* dxbc;       /* (BT, E+2GN) */
    real* ddt;        /* (BT, H) */
    real* dy;         /* (BT, E) */
    real* dgn;        /* (BT, E) */
    real* dlogits;    /* (BT, Vp) */
    real* dqkv;       /* (BT, QKV) */
    real* datt;       /* (BT, Hq hd) */
    real* dmlp_h;     /* (BT, 2 Hm) */
    real* dmlp_act;   /* (BT, Hm) */
} GradActivationTensors;
#define NUM_GRAD_ACTIVATION_TENSORS 12

static void activation_sizes(size_t sizes[NUM_ACTIVATION_TENSORS], const Mamba2Config* c, int B, int T) {
    size_t L = c->n_layer, BT = (size_t)B * T, D = c->d_model, E = c->d_inner, H = c->nheads;
    size_t LM = c->n_mamba, LA = c->n_attn, LF = c->n_mlp;
    size_t nc = (size_t)ssd_num_chunks(T, c->chunk_size);
    size_t i = 0;
    sizes[i++] = (L + 1) * BT * D;                                  /* residual */
    sizes[i++] = L * BT * D;                                        /* ln */
    sizes[i++] = L * BT;                                            /* ln_rstd */
    sizes[i++] = LM * BT * c->d_in_proj;                            /* zxbcdt */
    sizes[i++] = LM * BT * c->conv_dim;                             /* xbc_pre */
    sizes[i++] = LM * BT * c->conv_dim;                             /* xbc */
    sizes[i++] = LM * BT * H;                                       /* dt */
    sizes[i++] = LM * B * H * nc * c->headdim * c->d_state;         /* ssd_states */
    sizes[i++] = LM * BT * E;                                       /* y */
    sizes[i++] = LM * BT * c->ngroups;                              /* gn_rstd */
    sizes[i++] = LM * BT * E;                                       /* gn */
    sizes[i++] = BT * D;                                            /* lnf */
    sizes[i++] = BT;                                                /* lnf_rstd */
    sizes[i++] = BT * c->padded_vocab_size;                         /* probs */
    sizes[i++] = BT;                                                /* losses */
    sizes[i++] = LA * BT * c->attn_qkv_dim;                         /* qkv */
    sizes[i++] = LA * BT * c->attn_qkv_dim;                         /* qkv_rot */
    sizes[i++] = LA * B * c->attn_heads * T;                        /* att_lse */
    sizes[i++] = LA * BT * c->attn_out_dim;                         /* att */
    sizes[i++] = LF * BT * 2 * c->mlp_hidden;                       /* mlp_h */
    sizes[i++] = LF * BT * c->mlp_hidden;                           /* mlp_act */
}

static void grad_activation_sizes(size_t sizes[NUM_GRAD_ACTIVATION_TENSORS], const Mamba2Config* c, int B, int T) {
    size_t BT = (size_t)B * T;
    size_t i = 0;
    sizes[i++] = BT * c->d_model;
    sizes[i++] = BT * c->d_model;
    sizes[i++] = BT * c->d_in_proj;
    sizes[i++] = BT * c->conv_dim;
    sizes[i++] = BT * c->nheads;
    sizes[i++] = BT * c->d_inner;
    sizes[i++] = BT * c->d_inner;
    sizes[i++] = BT * c->padded_vocab_size;
    sizes[i++] = BT * c->attn_qkv_dim;
    sizes[i++] = BT * c->attn_out_dim;
    sizes[i++] = BT * 2 * c->mlp_hidden;
    sizes[i++] = BT * c->mlp_hidden;
}

/* one allocation for a group of tensors, pointers filled in from the size table */
static real* alloc_tensor_group(real** ptrs[], const size_t* sizes, int n) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += sizes[i];
    real* mem = (real*)callocCheck(total, sizeof(real));
    real* p = mem;
    for (int i = 0; i < n; i++) { *ptrs[i] = p; p += sizes[i]; }
    return mem;
}

typedef struct {
    Mamba2Config config;
    ParamSpec table[NUM_PARAM_TENSORS];
    size_t num_parameters;
    ParameterTensors params; real* params_memory;
    ParameterTensors grads;  real* grads_memory;
    real* m_memory; real* v_memory;   /* AdamW moments, allocated at the first update or by a checkpoint load */
    ActivationTensors acts;  real* acts_memory;
    GradActivationTensors gacts; real* gacts_memory;
    int B, T;                         /* the batch shape the activations are allocated for */
    int* seq_idx;                     /* (B*T) document of each position of the last forward, NULL: one per row */
    real mean_loss;                   /* of the last forward with targets: over its counted (unmasked) targets */
    size_t num_counted;               /* targets of the last forward that count (not TARGET_NO_LOSS) */
    int adam_t;                       /* AdamW steps taken (bias correction) */
    /* carried state (-C 1, mamba2_carry_allocate; doc/packing.md section 6), fp32 like the GPU's */
    real* carry_ssm;                  /* (LM, B, H, P, N) each row's SSM state at the end of its last batch */
    real* carry_window;               /* (LM, B, K-1, conv_dim) each row's last K-1 conv inputs (xBC) */
    real* carry_window_in;            /* (LM, B, K-1, conv_dim) the windows the last forward read (its backward's) */
    int carry_B;                      /* rows of the carried state, 0: none allocated */
    int carry_active;                 /* the last forward read and wrote the carried state */
} Mamba2;

/* carried state of one Mamba-2 block (-C 1, doc/packing.md section 6): each row's SSM state (B, H, P, N), read as the
   initial state and overwritten with the final one; the conv window the forward reads (B, K-1, conv_dim) and the one
   it leaves for the next batch */
typedef struct {
    real* ssm;
    const real* window_in;
    real* window_out;
} LayerCarry;

/* carried state for B rows, zero (every stream starts fresh). Attention blocks have no fixed-size state to carry: a
   hybrid with 'A' blocks is refused */
void mamba2_carry_allocate(Mamba2* m, int B) {
    const Mamba2Config* c = &m->config;
    if (c->n_attn > 0)
        die("carried state (-C 1) needs a model of Mamba-2 (and MLP) blocks only: this one has %d attention blocks, "
            "whose keys and values cannot be carried in a fixed-size state; train it without -C", c->n_attn);
    free(m->carry_ssm); free(m->carry_window); free(m->carry_window_in);
    m->carry_ssm = (real*)callocCheck(carry_ssm_floats(c, B), sizeof(real));
    m->carry_window = (real*)callocCheck(carry_window_floats(c, B) + 1, sizeof(real));
    m->carry_window_in = (real*)callocCheck(carry_window_floats(c, B) + 1, sizeof(real));
    m->carry_B = B;
}

/* the carried state of Mamba-2 block slot l (its place among the Mamba-2 blocks) */
static LayerCarry layer_carry(const Mamba2* m, int l) {
    const Mamba2Config* c = &m->config;
    size_t ssm = carry_ssm_floats(c, m->carry_B) / c->n_mamba, win = carry_window_floats(c, m->carry_B) / c->n_mamba;
    LayerCarry lc = {m->carry_ssm + l * ssm, m->carry_window_in + l * win, m->carry_window + l * win};
    return lc;
}

static void mamba2_allocate_parameters(Mamba2* m, const Mamba2Config* c) {
    memset(m, 0, sizeof(*m));
    m->config = *c;
    m->num_parameters = param_table_build(m->table, c);
    m->params_memory = (real*)callocCheck(m->num_parameters, sizeof(real));
    point_parameters(&m->params, m->params_memory, m->table);
}

/* SPEC.md section 5 (params_init in llmc/mamba2_model.h, shared with the GPU trainer so both start alike) */
void mamba2_init_parameters(Mamba2* m, uint64_t seed) {
    float* p = (float*)mallocCheck(m->num_parameters * sizeof(float));
    params_init(p, m->table, &m->config, seed);
    for (size_t i = 0; i < m->num_parameters; i++) m->params_memory[i] = (real)p[i];
    free(p);
}

void mamba2_build(Mamba2* m, const Mamba2Config* c, uint64_t seed) {
    mamba2_allocate_parameters(m, c);
    mamba2_init_parameters(m, seed);
}

static void mamba2_ensure_activations(Mamba2* m, int B, int T) {
    if (m->acts_memory != NULL && m->B == B && m->T == T) return;
    free(m->acts_memory);
    free(m->gacts_memory);
    free(m->seq_idx);
    m->seq_idx = NULL;
    size_t sizes[NUM_ACTIVATION_TENSORS];
    activation_sizes(sizes, &m->config, B, T);
    ActivationTensors* a = &m->acts;
    real** ptrs[NUM_ACTIVATION_TENSORS] = {&a->residual, &a->ln, &a->ln_rstd, &a->zxbcdt, &a->xbc_pre, &a->xbc,
                                           &a->dt, &a->ssd_states, &a->y, &a->gn_rstd, &a->gn, &a->lnf,
                                           &a->lnf_rstd, &a->probs, &a->losses, &a->qkv, &a->qkv_rot,
                                           &a->att_lse, &a->att, &a->mlp_h, &a->mlp_act};
    m->acts_memory = alloc_tensor_group(ptrs, sizes, NUM_ACTIVATION_TENSORS);
    size_t gsizes[NUM_GRAD_ACTIVATION_TENSORS];
    grad_activation_sizes(gsizes, &m->config, B, T);
    GradActivationTensors* g = &m->gacts;
    real** gptrs[NUM_GRAD_ACTIVATION_TENSORS] = {&g->dresidual, &g->dln, &g->dzxbcdt, &g->dxbc,
                                                 &g->ddt, &g->dy, &g->dgn, &g->dlogits, &g->dqkv, &g->datt,
                                                 &g->dmlp_h, &g->dmlp_act};
    m->gacts_memory = alloc_tensor_group(gptrs, gsizes, NUM_GRAD_ACTIVATION_TENSORS);
    m->B = B;
    m->T = T;
}

/* the per-block slices of the parameters of a Mamba-2 block l, so the block code reads like the math (the mixer's
   tensors at the block's slot among the Mamba-2 blocks: l itself in a pure model) */
typedef struct {
    const real *norm_w, *in_proj_w, *conv_w, *conv_b, *dt_bias, *A_log, *D, *gnorm_w, *out_proj_w;
} LayerParams;

static LayerParams layer_params(const ParameterTensors* p, const Mamba2Config* c, int b) {
    size_t D = c->d_model, E = c->d_inner, H = c->nheads;
    size_t l = (size_t)config_block_slot(c, b);
    LayerParams lp = {
        p->norm_w + (size_t)b * D, p->in_proj_w + l * (size_t)c->d_in_proj * D,
        p->conv_w + l * (size_t)c->conv_dim * c->d_conv, p->conv_b + l * (size_t)c->conv_dim,
        p->dt_bias + l * H,        p->A_log + l * H, p->D + l * H, p->gnorm_w + l * E,
        p->out_proj_w + l * D * E,
    };
    return lp;
}

/* the same for gradients (writable) */
typedef struct {
    real *norm_w, *in_proj_w, *conv_w, *conv_b, *dt_bias, *A_log, *D, *gnorm_w, *out_proj_w;
} LayerGrads;

static LayerGrads layer_grads(ParameterTensors* p, const Mamba2Config* c, int l) {
    LayerParams lp = layer_params(p, c, l);
    LayerGrads g = {(real*)lp.norm_w, (real*)lp.in_proj_w, (real*)lp.conv_w, (real*)lp.conv_b, (real*)lp.dt_bias,
                    (real*)lp.A_log, (real*)lp.D, (real*)lp.gnorm_w, (real*)lp.out_proj_w};
    return g;
}

/* the per-layer slices of the activations */
typedef struct {
    real *res_in, *res_out, *ln, *ln_rstd, *zxbcdt, *xbc_pre, *xbc, *dt, *ssd_states, *y, *gn_rstd, *gn;
} LayerActs;

static LayerActs layer_acts(const ActivationTensors* a, const Mamba2Config* c, int B, int T, int b) {
    size_t BT = (size_t)B * T, D = c->d_model, E = c->d_inner, H = c->nheads;
    size_t nc = (size_t)ssd_num_chunks(T, c->chunk_size);
    size_t l = (size_t)config_block_slot(c, b), bb = (size_t)b;
    LayerActs la = {
        a->residual + bb * BT * D,     a->residual + (bb + 1) * BT * D,
        a->ln + bb * BT * D,           a->ln_rstd + bb * BT,
        a->zxbcdt + l * BT * c->d_in_proj, a->xbc_pre + l * BT * c->conv_dim, a->xbc + l * BT * c->conv_dim,
        a->dt + l * BT * H,            a->ssd_states + l * (size_t)B * H * nc * c->headdim * c->d_state,
        a->y + l * BT * E,             a->gn_rstd + l * BT * c->ngroups, a->gn + l * BT * E,
    };
    return la;
}

/* one Mamba-2 block: x_out = x_in + out_proj(gated_norm(SSD(conv(in_proj(norm(x_in)))), z)).
   seq_idx (B*T) or NULL: the conv and the SSD do not cross a document boundary (doc/packing.md). carry, or NULL: the
   row starts from its carried state and window and leaves its final ones for the next batch */
static void block_forward(const Mamba2Config* c, const LayerParams* p, LayerActs* a, const LayerCarry* carry,
                          const int* seq_idx, int B, int T) {
    int BT = B * T, D = c->d_model, E = c->d_inner, H = c->nheads, GN = c->ngroups * c->d_state;
    rmsnorm_forward(a->ln, a->ln_rstd, a->res_in, p->norm_w, BT, D);
    matmul_forward(a->zxbcdt, a->ln, p->in_proj_w, BT, D, c->d_in_proj);
    const real* z = a->zxbcdt;                      /* columns [0, E) */
    const real* xBC = a->zxbcdt + E;                /* columns [E, E + conv_dim) */
    const real* dt_raw = a->zxbcdt + 2 * E + 2 * GN; /* columns [2E+2GN, +H) */
    conv1d_silu_forward(a->xbc_pre, a->xbc, xBC, c->d_in_proj, p->conv_w, p->conv_b, carry ? carry->window_in : NULL,
                        seq_idx, B, T, c->conv_dim, c->d_conv);
    if (carry)
        conv1d_final_window(carry->window_out, carry->window_in, xBC, c->d_in_proj, seq_idx, B, T, c->conv_dim,
                            c->d_conv);
    dt_forward(a->dt, dt_raw, c->d_in_proj, p->dt_bias, BT, H);
    /* carried: the SSM state is both the initial and the final state: ssd_head_forward copies the initial state of
       its (row, head) before it writes the final one, and no other (row, head) reads it */
    real* ssm = carry ? carry->ssm : NULL;
    ssd_chunked_forward(a->y, a->ssd_states, ssm, a->xbc, a->dt, p->A_log, p->D, ssm, seq_idx, B, T, H, c->headdim,
                        c->d_state, c->ngroups, c->chunk_size);
    gated_rmsnorm_forward(a->gn, a->gn_rstd, a->y, z, c->d_in_proj, p->gnorm_w, BT, E, c->ngroups);
    /* residual: x_out = x_in + gn @ W_out^T */
    matmul_forward(a->res_out, a->gn, p->out_proj_w, BT, E, D);
    for (size_t i = 0; i < (size_t)BT * D; i++) a->res_out[i] += a->res_in[i];
}

/* ---- the attention and gated-MLP blocks of a hybrid (doc/hybrid.md): the same pre-norm residual form ---- */

/* the slices of an attention block b: its pre-norm (by block) and its tensors at its slot among the attention
   blocks; the biases are NULL without qkv_proj_bias / out_proj_bias */
typedef struct { real *norm_w, *in_w, *in_b, *out_w, *out_b; } AttnParams;

static AttnParams attn_params(const ParameterTensors* p, const Mamba2Config* c, int b) {
    size_t D = c->d_model, QKV = c->attn_qkv_dim, AO = c->attn_out_dim, l = (size_t)config_block_slot(c, b);
    AttnParams ap = {p->norm_w + (size_t)b * D, p->attn_in_w + l * QKV * D, c->qkv_bias ? p->attn_in_b + l * QKV : NULL,
                     p->attn_out_w + l * D * AO, c->out_bias ? p->attn_out_b + l * D : NULL};
    return ap;
}

typedef struct { real *res_in, *res_out, *ln, *ln_rstd, *qkv, *qkv_rot, *lse, *att; } AttnActs;

static AttnActs attn_acts(const ActivationTensors* a, const Mamba2Config* c, int B, int T, int b) {
    size_t BT = (size_t)B * T, D = c->d_model, QKV = c->attn_qkv_dim, l = (size_t)config_block_slot(c, b);
    AttnActs aa = {a->residual + (size_t)b * BT * D, a->residual + (size_t)(b + 1) * BT * D, a->ln + (size_t)b * BT * D,
                   a->ln_rstd + (size_t)b * BT, a->qkv + l * BT * QKV, a->qkv_rot + l * BT * QKV,
                   a->att_lse + l * (size_t)B * c->attn_heads * T, a->att + l * BT * c->attn_out_dim};
    return aa;
}

/* x_out = x_in + out_proj(attention(rope(in_proj(norm(x_in))))); seq_idx: no attention across documents, and RoPE
   positions count from each document's start */
static void attention_block_forward(const Mamba2Config* c, const AttnParams* p, AttnActs* a, const int* seq_idx,
                                    int B, int T) {
    int BT = B * T, D = c->d_model, QKV = c->attn_qkv_dim, AO = c->attn_out_dim;
    rmsnorm_forward(a->ln, a->ln_rstd, a->res_in, p->norm_w, BT, D);
    matmul_forward(a->qkv, a->ln, p->in_w, BT, D, QKV);
    if (p->in_b) bias_forward(a->qkv, p->in_b, BT, QKV);
    rope_forward(a->qkv_rot, a->qkv, seq_idx, B, T, QKV, c->attn_heads + c->attn_kv_heads, c->attn_head_dim,
                 c->rotary_dim, c->rotary_base);
    attention_forward(a->att, a->lse, a->qkv_rot, seq_idx, B, T, c->attn_heads, c->attn_kv_heads, c->attn_head_dim);
    matmul_forward(a->res_out, a->att, p->out_w, BT, AO, D);
    if (p->out_b) bias_forward(a->res_out, p->out_b, BT, D);
    for (size_t i = 0; i < (size_t)BT * D; i++) a->res_out[i] += a->res_in[i];
}

/* the attention block's backward; g->dresidual holds dL/dx_out and becomes dL/dx_in */
static void attention_block_backward(const Mamba2Config* c, const AttnParams* p, AttnParams* dp, const AttnActs* a,
                                     GradActivationTensors* g, const int* seq_idx, int B, int T) {
    int BT = B * T, D = c->d_model, QKV = c->attn_qkv_dim, AO = c->attn_out_dim;
    memset(g->datt, 0, sizeof(real) * (size_t)BT * AO);
    matmul_backward(g->datt, dp->out_w, g->dresidual, a->att, p->out_w, BT, AO, D);
    if (p->out_b) bias_backward(dp->out_b, g->dresidual, BT, D);
    attention_backward(g->dqkv, g->datt, a->qkv_rot, a->att, a->lse, seq_idx, B, T, c->attn_heads, c->attn_kv_heads,
                       c->attn_head_dim);
    rope_backward(g->dqkv, seq_idx, B, T, QKV, c->attn_heads + c->attn_kv_heads, c->attn_head_dim, c->rotary_dim,
                  c->rotary_base);
    if (p->in_b) bias_backward(dp->in_b, g->dqkv, BT, QKV);
    memset(g->dln, 0, sizeof(real) * (size_t)BT * D);
    matmul_backward(g->dln, dp->in_w, g->dqkv, a->ln, p->in_w, BT, D, QKV);
    rmsnorm_backward(g->dresidual, dp->norm_w, g->dln, a->res_in, p->norm_w, a->ln_rstd, BT, D);
}

typedef struct { real *norm_w, *fc1_w, *fc2_w; } MLPParams;

static MLPParams mlp_params(const ParameterTensors* p, const Mamba2Config* c, int b) {
    size_t D = c->d_model, Hm = c->mlp_hidden, l = (size_t)config_block_slot(c, b);
    MLPParams mp = {p->norm_w + (size_t)b * D, p->mlp_fc1_w + l * 2 * Hm * D, p->mlp_fc2_w + l * D * Hm};
    return mp;
}

typedef struct { real *res_in, *res_out, *ln, *ln_rstd, *h, *act; } MLPActs;

static MLPActs mlp_acts(const ActivationTensors* a, const Mamba2Config* c, int B, int T, int b) {
    size_t BT = (size_t)B * T, D = c->d_model, Hm = c->mlp_hidden, l = (size_t)config_block_slot(c, b);
    MLPActs ma = {a->residual + (size_t)b * BT * D, a->residual + (size_t)(b + 1) * BT * D, a->ln + (size_t)b * BT * D,
                  a->ln_rstd + (size_t)b * BT, a->mlp_h + l * BT * 2 * Hm, a->mlp_act + l * BT * Hm};
    return ma;
}

/* x_out = x_in + fc2(y * silu(gate)), [y | gate] = fc1(norm(x_in)) */
static void mlp_block_forward(const Mamba2Config* c, const MLPParams* p, MLPActs* a, int B, int T) {
    int BT = B * T, D = c->d_model, Hm = c->mlp_hidden;
    rmsnorm_forward(a->ln, a->ln_rstd, a->res_in, p->norm_w, BT, D);
    matmul_forward(a->h, a->ln, p->fc1_w, BT, D, 2 * Hm);
    swiglu_forward(a->act, a->h, BT, Hm);
    matmul_forward(a->res_out, a->act, p->fc2_w, BT, Hm, D);
    for (size_t i = 0; i < (size_t)BT * D; i++) a->res_out[i] += a->res_in[i];
}

static void mlp_block_backward(const Mamba2Config* c, const MLPParams* p, MLPParams* dp, const MLPActs* a,
                               GradActivationTensors* g, int B, int T) {
    int BT = B * T, D = c->d_model, Hm = c->mlp_hidden;
    memset(g->dmlp_act, 0, sizeof(real) * (size_t)BT * Hm);
    matmul_backward(g->dmlp_act, dp->fc2_w, g->dresidual, a->act, p->fc2_w, BT, Hm, D);
    swiglu_backward(g->dmlp_h, g->dmlp_act, a->h, BT, Hm);
    memset(g->dln, 0, sizeof(real) * (size_t)BT * D);
    matmul_backward(g->dln, dp->fc1_w, g->dmlp_h, a->ln, p->fc1_w, BT, D, 2 * Hm);
    rmsnorm_backward(g->dresidual, dp->norm_w, g->dln, a->res_in, p->norm_w, a->ln_rstd, BT, D);
}

/*
 * Forward pass of packed documents. targets may be NULL (then no loss); a target of -1 (TARGET_NO_LOSS) is not
 * counted. seq_idx (B*T, non-decreasing in each row) is each position's document, or NULL for one document per row
 * (llmc/dataloader.h's dataloader_doc_index computes it from the inputs). Returns the mean loss over the counted
 * targets (0 if none counts), or -1 without targets. Checks every token id: an id outside the vocabulary is a data
 * error, never a silent out-of-bounds read.
 */
static real mamba2_forward_impl(Mamba2* m, const int* inputs, const int* targets, const int* seq_idx, int carry,
                                int B, int T) {
    const Mamba2Config* c = &m->config;
    int V = c->vocab_size, Vp = c->padded_vocab_size, BT = B * T;
    for (int i = 0; i < BT; i++) {
        if (inputs[i] < 0 || inputs[i] >= V) die("input token id %d at position %d is outside the vocabulary [0, %d)",
                                                 inputs[i], i, V);
        if (targets && targets[i] != TARGET_NO_LOSS && (targets[i] < 0 || targets[i] >= V))
            die("target token id %d at position %d is outside the vocabulary [0, %d) (and not -1, no loss)",
                targets[i], i, V);
        if (seq_idx && i % T > 0 && seq_idx[i] < seq_idx[i - 1])
            die("document index %d at position %d is below the previous one (%d): it must not decrease along a row",
                seq_idx[i], i, seq_idx[i - 1]);
    }
    mamba2_ensure_activations(m, B, T);
    if (seq_idx) {
        if (m->seq_idx == NULL) m->seq_idx = (int*)mallocCheck(sizeof(int) * (size_t)BT);
        memcpy(m->seq_idx, seq_idx, sizeof(int) * (size_t)BT); /* the backward needs the same boundaries */
    } else {
        free(m->seq_idx);
        m->seq_idx = NULL;
    }
    ActivationTensors* a = &m->acts;
    encoder_forward(a->residual, inputs, m->params.wte, BT, c->d_model);
    for (int l = 0; l < c->n_layer; l++) {
        char kind = config_block_kind(c, l);
        if (kind == 'A') {
            AttnParams p = attn_params(&m->params, c, l);
            AttnActs aa = attn_acts(a, c, B, T, l);
            attention_block_forward(c, &p, &aa, m->seq_idx, B, T);
        } else if (kind == 'F') {
            MLPParams p = mlp_params(&m->params, c, l);
            MLPActs ma = mlp_acts(a, c, B, T, l);
            mlp_block_forward(c, &p, &ma, B, T);
        } else {
            LayerParams p = layer_params(&m->params, c, l);
            LayerActs la = layer_acts(a, c, B, T, l);
            LayerCarry lc = {NULL, NULL, NULL};
            if (carry) lc = layer_carry(m, config_block_slot(c, l));
            block_forward(c, &p, &la, carry ? &lc : NULL, m->seq_idx, B, T);
        }
    }
    rmsnorm_forward(a->lnf, a->lnf_rstd, a->residual + (size_t)c->n_layer * BT * c->d_model, m->params.norm_f_w, BT,
                    c->d_model);
    matmul_forward(a->probs, a->lnf, m->params.wte, BT, c->d_model, Vp); /* tied LM head */
    crossentropy_forward(a->losses, a->probs, targets, BT, V, Vp);
    if (targets == NULL) { m->mean_loss = -1; m->num_counted = 0; return -1; }
    double sum = 0;
    size_t count = 0;
    for (int i = 0; i < BT; i++) {
        if (targets[i] == TARGET_NO_LOSS) continue;
        sum += a->losses[i];
        count++;
    }
    m->num_counted = count;
    m->mean_loss = count > 0 ? (real)(sum / count) : 0;
    return m->mean_loss;
}

real mamba2_forward_docs(Mamba2* m, const int* inputs, const int* targets, const int* seq_idx, int B, int T) {
    m->carry_active = 0;
    return mamba2_forward_impl(m, inputs, targets, seq_idx, 0, B, T);
}

/*
 * The forward with carried state (-C 1, doc/packing.md section 6): row b starts from the SSM state and conv window
 * its previous batch left (mamba2_carry_allocate: zeros at first), unless fresh[b] (its stream starts afresh, or its
 * first input opens a new document: carry_fresh_rows), and leaves its final ones for the next batch. They are
 * constants for the backward: the gradient stops at the batch edge.
 */
real mamba2_forward_carry(Mamba2* m, const int* inputs, const int* targets, const int* seq_idx, const int* fresh,
                          int B, int T) {
    const Mamba2Config* c = &m->config;
    if (m->carry_B != B)
        die("mamba2_forward_carry: the carried state holds %d rows, the batch %d (mamba2_carry_allocate with B)",
            m->carry_B, B);
    size_t ssm = carry_ssm_floats(c, 1) / (c->n_mamba ? c->n_mamba : 1);
    size_t win = carry_window_floats(c, 1) / (c->n_mamba ? c->n_mamba : 1);
    for (int l = 0; l < c->n_mamba; l++) {
        for (int b = 0; b < B; b++) {
            if (!fresh[b]) continue;
            memset(m->carry_ssm + ((size_t)l * B + b) * ssm, 0, ssm * sizeof(real));
            memset(m->carry_window + ((size_t)l * B + b) * win, 0, win * sizeof(real));
        }
    }
    memcpy(m->carry_window_in, m->carry_window, carry_window_floats(c, B) * sizeof(real));
    m->carry_active = 1;
    return mamba2_forward_impl(m, inputs, targets, seq_idx, 1, B, T);
}

/* one document per row, every target counted unless it is -1 */
real mamba2_forward(Mamba2* m, const int* inputs, const int* targets, int B, int T) {
    return mamba2_forward_docs(m, inputs, targets, NULL, B, T);
}

void mamba2_zero_grad(Mamba2* m) {
    if (m->grads_memory == NULL) {
        m->grads_memory = (real*)callocCheck(m->num_parameters, sizeof(real));
        point_parameters(&m->grads, m->grads_memory, m->table);
    }
    memset(m->grads_memory, 0, m->num_parameters * sizeof(real));
}

/* the block's backward, in the reverse order of block_forward; g->dresidual holds dL/dx_out and becomes dL/dx_in */
static void block_backward(const Mamba2Config* c, const LayerParams* p, LayerGrads* dp, const LayerActs* a,
                           GradActivationTensors* g, const real* window_in, const int* seq_idx, int B, int T) {
    int BT = B * T, D = c->d_model, E = c->d_inner, H = c->nheads, GN = c->ngroups * c->d_state;
    int dt_col = 2 * E + 2 * GN;
    /* out_proj (the residual branch); the identity branch passes dresidual through unchanged */
    memset(g->dgn, 0, sizeof(real) * (size_t)BT * E);
    matmul_backward(g->dgn, dp->out_proj_w, g->dresidual, a->gn, p->out_proj_w, BT, E, D);
    /* gated norm: writes dy and the z columns of dzxbcdt */
    gated_rmsnorm_backward(g->dy, g->dzxbcdt, c->d_in_proj, dp->gnorm_w, g->dgn, a->y, a->zxbcdt, p->gnorm_w,
                           a->gn_rstd, BT, E, c->ngroups);
    /* SSD: dxbc (x incl. D skip, B, C), ddt, dA_log, dD. A carried initial state is in ssd_states (the state entering
       the first chunk); its own gradient is not needed (the gradient stops at the batch edge) */
    ssd_chunked_backward(g->dxbc, g->ddt, dp->A_log, dp->D, NULL, g->dy, NULL, a->xbc, a->dt, p->A_log, p->D,
                         a->ssd_states, seq_idx, B, T, H, c->headdim, c->d_state, c->ngroups, c->chunk_size);
    /* dt softplus: the dt_raw columns of dzxbcdt, and dt_bias */
    dt_backward(g->dzxbcdt + dt_col, c->d_in_proj, dp->dt_bias, g->ddt, a->zxbcdt + dt_col, p->dt_bias, BT, H);
    /* conv + SiLU: the xBC columns of dzxbcdt (g->dxbc is consumed in place) */
    conv1d_silu_backward(g->dzxbcdt + E, c->d_in_proj, dp->conv_w, dp->conv_b, g->dxbc, a->xbc_pre, a->zxbcdt + E,
                         p->conv_w, window_in, seq_idx, B, T, c->conv_dim, c->d_conv);
    /* in_proj */
    memset(g->dln, 0, sizeof(real) * (size_t)BT * D);
    matmul_backward(g->dln, dp->in_proj_w, g->dzxbcdt, a->ln, p->in_proj_w, BT, D, c->d_in_proj);
    /* pre-norm: adds into dresidual, which now is dL/dx_in */
    rmsnorm_backward(g->dresidual, dp->norm_w, g->dln, a->res_in, p->norm_w, a->ln_rstd, BT, D);
}

/*
 * Backward pass after mamba2_forward (or _docs) with targets, through the same document boundaries. Gradients are
 * ACCUMULATED into m->grads (gradient accumulation): call mamba2_zero_grad first. dloss is dL/d(each counted
 * position's loss): 1/(B*T*accum_steps), or 1/(counted targets of the step) with masked targets; a masked position
 * gets no gradient from the loss.
 */
void mamba2_backward(Mamba2* m, const int* inputs, const int* targets, real dloss) {
    const Mamba2Config* c = &m->config;
    int B = m->B, T = m->T, BT = B * T, D = c->d_model, V = c->vocab_size, Vp = c->padded_vocab_size;
    if (m->grads_memory == NULL) mamba2_zero_grad(m);
    ActivationTensors* a = &m->acts;
    GradActivationTensors* g = &m->gacts;
    crossentropy_backward(g->dlogits, a->probs, targets, dloss, BT, V, Vp);
    /* tied LM head: dlnf = dlogits @ wte, dwte += dlogits^T @ lnf */
    memset(g->dln, 0, sizeof(real) * (size_t)BT * D);
    matmul_backward(g->dln, m->grads.wte, g->dlogits, a->lnf, m->params.wte, BT, D, Vp);
    memset(g->dresidual, 0, sizeof(real) * (size_t)BT * D);
    rmsnorm_backward(g->dresidual, m->grads.norm_f_w, g->dln, a->residual + (size_t)c->n_layer * BT * D,
                     m->params.norm_f_w, a->lnf_rstd, BT, D);
    for (int l = c->n_layer - 1; l >= 0; l--) {
        char kind = config_block_kind(c, l);
        if (kind == 'A') {
            AttnParams p = attn_params(&m->params, c, l), dp = attn_params(&m->grads, c, l);
            AttnActs aa = attn_acts(a, c, B, T, l);
            attention_block_backward(c, &p, &dp, &aa, g, m->seq_idx, B, T);
        } else if (kind == 'F') {
            MLPParams p = mlp_params(&m->params, c, l), dp = mlp_params(&m->grads, c, l);
            MLPActs ma = mlp_acts(a, c, B, T, l);
            mlp_block_backward(c, &p, &dp, &ma, g, B, T);
        } else {
            LayerParams p = layer_params(&m->params, c, l);
            LayerGrads dp = layer_grads(&m->grads, c, l);
            LayerActs la = layer_acts(a, c, B, T, l);
            const real* window_in = m->carry_active ? layer_carry(m, config_block_slot(c, l)).window_in : NULL;
            block_backward(c, &p, &dp, &la, g, window_in, m->seq_idx, B, T);
        }
    }
    encoder_backward(m->grads.wte, g->dresidual, inputs, BT, D);
}

/* global L2 norm of the gradient, in double */
double mamba2_grad_norm(const Mamba2* m) {
    double ss = 0;
    for (size_t i = 0; i < m->num_parameters; i++) ss += (double)m->grads_memory[i] * m->grads_memory[i];
    return sqrt(ss);
}

/* torch.nn.utils.clip_grad_norm_'s coefficient: min(1, clip / (norm + 1e-6)) */
static inline double clip_coefficient(double norm, double clip) {
    if (clip <= 0) return 1.0;
    double coef = clip / (norm + 1e-6);
    return coef < 1.0 ? coef : 1.0;
}

/*
 * AdamW, torch.optim.AdamW's arithmetic: decoupled weight decay p *= 1 - lr*wd (only on the table's decayed tensors),
 * m and v moments, bias corrections. grad_scale multiplies the gradient first (the clipping coefficient).
 */
void mamba2_update(Mamba2* m, real lr, real beta1, real beta2, real eps, real weight_decay, real grad_scale) {
    if (m->m_memory == NULL) {
        m->m_memory = (real*)callocCheck(m->num_parameters, sizeof(real));
        m->v_memory = (real*)callocCheck(m->num_parameters, sizeof(real));
    }
    m->adam_t++;
    real bc1 = (real)1 - (real)pow(beta1, m->adam_t);
    real bc2_sqrt = (real)sqrt((real)1 - (real)pow(beta2, m->adam_t));
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        const ParamSpec* s = &m->table[t];
        real wd = s->weight_decay ? weight_decay : 0;
        real* p = m->params_memory + s->offset;
        real* gr = m->grads_memory + s->offset;
        real* mm = m->m_memory + s->offset;
        real* vv = m->v_memory + s->offset;
#pragma omp parallel for
        for (size_t i = 0; i < s->numel; i++) {
            real g = gr[i] * grad_scale;
            p[i] *= (real)1 - lr * wd;
            mm[i] = beta1 * mm[i] + ((real)1 - beta1) * g;
            vv[i] = beta2 * vv[i] + ((real)1 - beta2) * g * g;
            real denom = (real)sqrt(vv[i]) / bc2_sqrt + eps;
            p[i] -= (lr / bc1) * mm[i] / denom;
        }
    }
}

void mamba2_free(Mamba2* m) {
    free(m->params_memory);
    free(m->grads_memory);
    free(m->m_memory);
    free(m->v_memory);
    free(m->acts_memory);
    free(m->gacts_memory);
    free(m->seq_idx);
    free(m->carry_ssm); free(m->carry_window); free(m->carry_window_in);
    memset(m, 0, sizeof(*m));
}

/* ---- checkpoints: the model, AdamW state and the training state (llmc/mamba2_model.h has the format) ---- */

static float* to_float_copy(const real* src, size_t n) {
    float* dst = (float*)mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
    return dst;
}

void mamba2_save_checkpoint(const Mamba2* m, const char* path, const uint64_t state[CKPT_STATE_WORDS]) {
    uint64_t st[CKPT_STATE_WORDS];
    memcpy(st, state, sizeof(st));
    st[CKPT_S_ADAM_T] = (uint64_t)m->adam_t;
    float* p = to_float_copy(m->params_memory, m->num_parameters);
    float* mm = m->m_memory ? to_float_copy(m->m_memory, m->num_parameters) : NULL;
    float* vv = m->v_memory ? to_float_copy(m->v_memory, m->num_parameters) : NULL;
    checkpoint_write(path, &m->config, st, p, mm, vv, m->num_parameters);
    free(p); free(mm); free(vv);
}

static void read_floats_into(real* dst, size_t n, FILE* f) {
    float* tmp = (float*)mallocCheck(n * sizeof(float));
    freadCheck(tmp, sizeof(float), n, f);
    for (size_t i = 0; i < n; i++) dst[i] = (real)tmp[i];
    free(tmp);
}

/* builds the model from a checkpoint (parameters, and the AdamW moments if it holds them) */
void mamba2_load_checkpoint(Mamba2* m, const char* path, CheckpointInfo* info) {
    FILE* f = checkpoint_open(path, info);
    mamba2_allocate_parameters(m, &info->config);
    read_floats_into(m->params_memory, m->num_parameters, f);
    if (info->has_optimizer) {
        m->m_memory = (real*)mallocCheck(m->num_parameters * sizeof(real));
        m->v_memory = (real*)mallocCheck(m->num_parameters * sizeof(real));
        read_floats_into(m->m_memory, m->num_parameters, f);
        read_floats_into(m->v_memory, m->num_parameters, f);
        m->adam_t = (int)info->state[CKPT_S_ADAM_T];
    }
    fclose(f);
}

/* the carried state's companion file (llmc/train_common.h: carry_write), fp32 whatever real is */
void carry_save(const Mamba2* m, const char* ckpt_path, int step, const DataLoader* loader) {
    DataLoaderState ls;
    dataloader_save_state(loader, &ls);
    size_t ns = carry_ssm_floats(&m->config, m->carry_B), nw = carry_window_floats(&m->config, m->carry_B);
    float* ssm = to_float_copy(m->carry_ssm, ns);
    float* win = to_float_copy(m->carry_window, nw + 1);
    carry_write(ckpt_path, &m->config, m->carry_B, step, 1, &ls, ssm, win);
    free(ssm); free(win);
}

/* reads the companion of the checkpoint a run resumes from, after the loader's state was restored */
void carry_load(Mamba2* m, const char* ckpt_path, int step, const DataLoader* loader) {
    DataLoaderState ls;
    dataloader_save_state(loader, &ls);
    size_t ns = carry_ssm_floats(&m->config, m->carry_B), nw = carry_window_floats(&m->config, m->carry_B);
    float* ssm = (float*)mallocCheck((ns + 1) * sizeof(float));
    float* win = (float*)mallocCheck((nw + 1) * sizeof(float));
    carry_read(ckpt_path, &m->config, m->carry_B, step, 1, &ls, ssm, win);
    for (size_t i = 0; i < ns; i++) m->carry_ssm[i] = (real)ssm[i];
    for (size_t i = 0; i < nw; i++) m->carry_window[i] = (real)win[i];
    free(ssm); free(win);
    printf("resume: carried state of %d streams from %s.carry\n", m->carry_B, ckpt_path);
}

/* ================================================================================================================
 * 3. Generation with the recurrent form: constant memory per token
 * ================================================================================================================ */

typedef struct {
    real* conv_state; /* (LM, K-1, conv_dim) the last K-1 inputs of each Mamba-2 block's conv (LM: those blocks) */
    real* ssm_state;  /* (LM, H, P, N) */
    real *x, *u, *zxbcdt, *xbc, *dt, *y, *gn, *out, *logits, *rstd; /* one token's scratch */
    /* attention blocks: the KV cache, (LA, capacity, Hkv hd) each, the rotated keys and the values of every position
       fed since the last reset (it grows as tokens come); pos: those positions */
    real *k_cache, *v_cache;
    int capacity, pos;
    real *qkv, *att, *scores, *mlp_h, *mlp_act; /* one token's scratch of the attention and MLP blocks */
} InferenceState;

void inference_state_init(InferenceState* s, const Mamba2Config* c) {
    size_t L = c->n_mamba;
    memset(s, 0, sizeof(*s));
    s->conv_state = (real*)callocCheck(L * conv_window_len(c) * c->conv_dim, sizeof(real));
    s->ssm_state = (real*)callocCheck(L * c->nheads * c->headdim * c->d_state, sizeof(real));
    s->x = (real*)callocCheck(c->d_model, sizeof(real));
    s->u = (real*)callocCheck(c->d_model, sizeof(real));
    s->zxbcdt = (real*)callocCheck(c->d_in_proj, sizeof(real));
    s->xbc = (real*)callocCheck(c->conv_dim, sizeof(real));
    s->dt = (real*)callocCheck(c->nheads, sizeof(real));
    s->y = (real*)callocCheck(c->d_inner, sizeof(real));
    s->gn = (real*)callocCheck(c->d_inner, sizeof(real));
    s->out = (real*)callocCheck(c->d_model, sizeof(real));
    s->logits = (real*)callocCheck(c->padded_vocab_size, sizeof(real));
    s->rstd = (real*)callocCheck(c->ngroups, sizeof(real));
    if (c->n_attn > 0) {
        s->qkv = (real*)callocCheck(c->attn_qkv_dim, sizeof(real));
        s->att = (real*)callocCheck(c->attn_out_dim, sizeof(real));
    }
    if (c->n_mlp > 0) {
        s->mlp_h = (real*)callocCheck(2 * (size_t)c->mlp_hidden, sizeof(real));
        s->mlp_act = (real*)callocCheck(c->mlp_hidden, sizeof(real));
    }
}

/* a fresh sequence: zero states, an empty KV cache (its memory is kept) */
void inference_state_reset(InferenceState* s, const Mamba2Config* c) {
    size_t K1 = (size_t)conv_window_len(c);
    memset(s->conv_state, 0, sizeof(real) * c->n_mamba * K1 * c->conv_dim);
    memset(s->ssm_state, 0, sizeof(real) * c->n_mamba * c->nheads * c->headdim * c->d_state);
    s->pos = 0;
}

void inference_state_free(InferenceState* s) {
    free(s->conv_state); free(s->ssm_state); free(s->x); free(s->u); free(s->zxbcdt); free(s->xbc); free(s->dt);
    free(s->y); free(s->gn); free(s->out); free(s->logits); free(s->rstd);
    free(s->k_cache); free(s->v_cache); free(s->qkv); free(s->att); free(s->scores); free(s->mlp_h); free(s->mlp_act);
    memset(s, 0, sizeof(*s));
}

/* room in the KV cache for `need` positions: doubles the capacity until they fit, keeping every block's rows */
static void kv_cache_reserve(InferenceState* s, const Mamba2Config* c, int need) {
    if (c->n_attn == 0 || need <= s->capacity) return;
    int cap = s->capacity > 0 ? 2 * s->capacity : 256;
    while (cap < need) cap *= 2;
    size_t row = (size_t)c->attn_kv_heads * c->attn_head_dim, LA = c->n_attn;
    real* k = (real*)callocCheck(LA * cap * row, sizeof(real));
    real* v = (real*)callocCheck(LA * cap * row, sizeof(real));
    for (size_t l = 0; l < LA; l++) {
        if (s->capacity == 0) break;
        memcpy(k + l * cap * row, s->k_cache + l * s->capacity * row, sizeof(real) * s->capacity * row);
        memcpy(v + l * cap * row, s->v_cache + l * s->capacity * row, sizeof(real) * s->capacity * row);
    }
    free(s->k_cache); free(s->v_cache); free(s->scores);
    s->k_cache = k; s->v_cache = v;
    s->scores = (real*)callocCheck((size_t)cap, sizeof(real));
    s->capacity = cap;
}

/* one token through attention block b at position s->pos: q, k rotated by the position, k and v appended to the
   cache, softmax over the cached positions; out (D) is the block's branch output */
static void attention_step(real* out, InferenceState* s, const Mamba2Config* c, const AttnParams* p, int b) {
    int D = c->d_model, Hq = c->attn_heads, Hkv = c->attn_kv_heads, hd = c->attn_head_dim, rep = Hq / Hkv;
    size_t row = (size_t)Hkv * hd, l = (size_t)config_block_slot(c, b);
    matmul_forward(s->qkv, s->u, p->in_w, 1, D, c->attn_qkv_dim);
    if (p->in_b) bias_forward(s->qkv, p->in_b, 1, c->attn_qkv_dim);
    if (c->rotary_dim > 0) rope_rotate(s->qkv, Hq + Hkv, hd, c->rotary_dim, s->pos, c->rotary_base, 1);
    real* kc = s->k_cache + l * s->capacity * row;
    real* vc = s->v_cache + l * s->capacity * row;
    memcpy(kc + (size_t)s->pos * row, s->qkv + (size_t)Hq * hd, sizeof(real) * row);
    memcpy(vc + (size_t)s->pos * row, s->qkv + (size_t)(Hq + Hkv) * hd, sizeof(real) * row);
    real scale = (real)(1.0 / sqrt((double)hd));
    for (int h = 0; h < Hq; h++) {
        int g = h / rep;
        const real* q = s->qkv + (size_t)h * hd;
        real maxv = -INFINITY, sum = 0;
        for (int j = 0; j <= s->pos; j++) {
            s->scores[j] = dot8(q, kc + (size_t)j * row + (size_t)g * hd, hd) * scale;
            if (s->scores[j] > maxv) maxv = s->scores[j];
        }
        for (int j = 0; j <= s->pos; j++) { s->scores[j] = (real)exp(s->scores[j] - maxv); sum += s->scores[j]; }
        real* o = s->att + (size_t)h * hd;
        for (int d = 0; d < hd; d++) o[d] = 0;
        for (int j = 0; j <= s->pos; j++) {
            const real* v = vc + (size_t)j * row + (size_t)g * hd;
            real w = s->scores[j] / sum;
            for (int d = 0; d < hd; d++) o[d] += w * v[d];
        }
    }
    matmul_forward(out, s->att, p->out_w, 1, c->attn_out_dim, D);
    if (p->out_b) bias_forward(out, p->out_b, 1, D);
}

/* one causal conv step: the window is the K-1 stored inputs and the new one; then the window shifts */
static void conv1d_silu_step(real* out, real* window, const real* in, const real* w, const real* bias, int Cd, int K) {
    for (int c = 0; c < Cd; c++) {
        real acc = bias[c] + w[c * K + K - 1] * in[c];
        for (int k = 0; k < K - 1; k++) acc += w[c * K + k] * window[(size_t)k * Cd + c];
        for (int k = 0; k + 1 < K - 1; k++) window[(size_t)k * Cd + c] = window[(size_t)(k + 1) * Cd + c];
        if (K > 1) window[(size_t)(K - 2) * Cd + c] = in[c];
        out[c] = silu(acc);
    }
}

/* feeds one token through the model with the recurrent form (the Mamba-2 blocks' states, the attention blocks' KV
   cache); returns the logits (Vp, only V meaningful) */
real* mamba2_step(Mamba2* m, InferenceState* s, int token) {
    const Mamba2Config* c = &m->config;
    int D = c->d_model, E = c->d_inner, H = c->nheads, GN = c->ngroups * c->d_state;
    size_t K1 = (size_t)conv_window_len(c);
    if (token < 0 || token >= c->vocab_size) die("token id %d is outside the vocabulary [0, %d)", token, c->vocab_size);
    kv_cache_reserve(s, c, s->pos + 1);
    memcpy(s->x, m->params.wte + (size_t)token * D, sizeof(real) * D);
    for (int b = 0; b < c->n_layer; b++) {
        char kind = config_block_kind(c, b);
        real rstd;
        if (kind == 'A') {
            AttnParams p = attn_params(&m->params, c, b);
            rmsnorm_forward(s->u, &rstd, s->x, p.norm_w, 1, D);
            attention_step(s->out, s, c, &p, b);
        } else if (kind == 'F') {
            MLPParams p = mlp_params(&m->params, c, b);
            rmsnorm_forward(s->u, &rstd, s->x, p.norm_w, 1, D);
            matmul_forward(s->mlp_h, s->u, p.fc1_w, 1, D, 2 * c->mlp_hidden);
            swiglu_forward(s->mlp_act, s->mlp_h, 1, c->mlp_hidden);
            matmul_forward(s->out, s->mlp_act, p.fc2_w, 1, c->mlp_hidden, D);
        } else {
            LayerParams p = layer_params(&m->params, c, b);
            size_t l = (size_t)config_block_slot(c, b);
            rmsnorm_forward(s->u, &rstd, s->x, p.norm_w, 1, D);
            matmul_forward(s->zxbcdt, s->u, p.in_proj_w, 1, D, c->d_in_proj);
            conv1d_silu_step(s->xbc, s->conv_state + l * K1 * c->conv_dim, s->zxbcdt + E, p.conv_w, p.conv_b,
                             c->conv_dim, c->d_conv);
            dt_forward(s->dt, s->zxbcdt + 2 * E + 2 * GN, c->d_in_proj, p.dt_bias, 1, H);
            ssd_step(s->y, s->ssm_state + l * H * c->headdim * c->d_state, s->xbc, s->dt, p.A_log, p.D, H,
                     c->headdim, c->d_state, c->ngroups);
            gated_rmsnorm_forward(s->gn, s->rstd, s->y, s->zxbcdt, c->d_in_proj, p.gnorm_w, 1, E, c->ngroups);
            matmul_forward(s->out, s->gn, p.out_proj_w, 1, E, D);
        }
        for (int i = 0; i < D; i++) s->x[i] += s->out[i];
    }
    s->pos++;
    real rstd;
    rmsnorm_forward(s->u, &rstd, s->x, m->params.norm_f_w, 1, D);
    matmul_forward(s->logits, s->u, m->params.wte, 1, D, c->padded_vocab_size);
    return s->logits;
}

/* ================================================================================================================
 * 4. Training
 * ================================================================================================================ */
#ifndef MAMBA2_NO_MAIN

/*
 * Mean loss over up to max_batches val batches from the start of the val data. seq_idx (B*T scratch) and sep: the
 * document boundaries (-D), NULL / DOC_SEP_NONE without. With masked targets (-M) the mean is over the counted
 * targets of all batches; without, it is the mean of the batch means, as it always was (the same number).
 */
static real evaluate(Mamba2* m, DataLoader* val, int max_batches, int* seq_idx, int sep) {
    dataloader_reset(val);
    int n = (int)dataloader_num_batches(val);
    if (max_batches < n) n = max_batches;
    int B = (int)val->B, T = (int)val->T;
    double sum = 0, nats = 0;
    size_t counted = 0;
    for (int i = 0; i < n; i++) {
        dataloader_next_batch(val);
        if (seq_idx) dataloader_doc_index(seq_idx, val->inputs, val->B, val->T, sep);
        real loss = mamba2_forward_docs(m, val->inputs, val->targets, seq_idx, B, T);
        sum += loss;
        nats += (double)loss * m->num_counted;
        counted += m->num_counted;
    }
    if (counted != (size_t)n * B * T) return (real)(counted > 0 ? nats / counted : 0);
    return (real)(sum / (n > 0 ? n : 1));
}

/* generation from the end-of-text token with the recurrent step; prints text (or ids without a tokenizer) */
static void print_sample(Mamba2* m, InferenceState* st, Tokenizer* tok, Rng* rng, int n_tokens) {
    inference_state_reset(st, &m->config);
    int token = sample_first_token(tok, m->config.vocab_size);
    printf("sample: ");
    for (int i = 0; i < n_tokens; i++) {
        real* logits = mamba2_step(m, st, token);
        token = sample_token(logits, m->config.vocab_size, 1.0f, rng);
        sample_print_token(tok, token);
    }
    printf("\n---\n");
    fflush(stdout);
}

/* refuses a run that cannot fit this machine's RAM before anything big is allocated */
static void check_host_memory(const Mamba2Config* c, int B, int T, int carry) {
    size_t sizes[NUM_ACTIVATION_TENSORS], gsizes[NUM_GRAD_ACTIVATION_TENSORS];
    activation_sizes(sizes, c, B, T);
    grad_activation_sizes(gsizes, c, B, T);
    double acts = 0;
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) acts += (double)sizes[i];
    for (int i = 0; i < NUM_GRAD_ACTIVATION_TENSORS; i++) acts += (double)gsizes[i];
    /* params, grads, m, v, and a float copy while a checkpoint is read or written */
    double need = (double)config_param_count(c) * (4.0 * sizeof(real) + sizeof(float)) + acts * sizeof(real);
    if (carry) /* -C 1: the carried SSM states, the windows and the windows' copy for the backward */
        need += ((double)carry_ssm_floats(c, B) + 2.0 * carry_window_floats(c, B)) * sizeof(real);
    memory_check_or_die((unsigned long long)need, host_memory_available(), "CPU", c);
}

int main(int argc, char** argv) {
    TrainArgs args;
    g_trainer_has_docs = 1; /* -D and -M (doc/packing.md) */
    g_trainer_has_carry = 1; /* -C (doc/packing.md section 6) */
    parse_args(&args, argc, argv);
    train_signals_install();
    output_dir_prepare(&args);
    Mamba2 model;
    Rng sample_rng;
    rng_seed(&sample_rng, args.seed ^ 0x5a5a5a5a5a5a5a5aull);
    int start_step = 0;
    uint64_t resume_state[CKPT_STATE_WORDS] = {0};
    int have_loader_state = 0;

    /* the model: a description, a checkpoint given with -e, or the latest checkpoint in -o when resuming */
    ModelSource src = model_source(&args);
    {
        Mamba2Config need = model_source_config(&src);
        check_host_memory(&need, args.B, args.T, args.carry);
    }
    CheckpointInfo info;
    if (src.kind == MODEL_RESUME) {
        mamba2_load_checkpoint(&model, src.path, &info);
        start_step = resume_accept(&args, &src, &info, &sample_rng, resume_state);
        have_loader_state = 1;
    } else if (src.kind == MODEL_FROM_FILE) {
        /* trained weights (our checkpoint, or an HF / mamba_ssm folder): a fresh optimizer, step 0 */
        Mamba2Config wc;
        float* w;
        char err[1024];
        if (model_load_weights(src.path, &wc, &w, err, sizeof(err)) != 0) die("%s", err);
        mamba2_allocate_parameters(&model, &wc);
        for (size_t i = 0; i < model.num_parameters; i++) model.params_memory[i] = (real)w[i];
        free(w);
        printf("initialized from %s (weights only; fresh optimizer)\n", src.path);
    } else {
        mamba2_build(&model, &src.config, args.seed);
    }
    const Mamba2Config* c = &model.config;
    config_print(c, stdout);
    printf("parameters: %zu\n", model.num_parameters);

    /* data */
    int B = args.B, T = args.T;
    if (args.zero_stage != 0 || args.recompute != 0 || args.profile != 0 || args.ssd_chunk != 0)
        die("-z, -r, -p and -K are options of the GPU trainer");
    int accum = grad_accum_steps(&args, 1);
    DataLoader train_loader, val_loader;
    dataloader_init(&train_loader, args.train_pattern, B, T, 0, 1, 1, args.seed, c->vocab_size);
    if (args.carry) { /* B streams over the data, each row's state carried to its next batch */
        mamba2_carry_allocate(&model, B);
        dataloader_use_streams(&train_loader);
    }
    if (have_loader_state) train_state_restore_loader(&train_loader, resume_state);
    if (have_loader_state && args.carry) carry_load(&model, src.path, start_step, &train_loader);
    int use_val = strcmp(args.val_pattern, "none") != 0 && args.val_every > 0;
    if (use_val) dataloader_init(&val_loader, args.val_pattern, B, T, 0, 1, 0, args.seed, c->vocab_size);
    if (args.masks) { /* every train and val shard needs its X.bin.mask (checked now) */
        dataloader_use_masks(&train_loader);
        if (use_val) dataloader_use_masks(&val_loader);
    }
    printf("train: %zu tokens, B=%d T=%d, grad accumulation %d -> %d tokens/step\n", train_loader.num_tokens, B, T,
           accum, args.total_batch_tokens);
    Tokenizer tokenizer;
    trainer_tokenizer_init(&tokenizer, &args);
    /* document boundaries: each row's document index, recomputed from the inputs of every batch */
    int doc_sep = doc_sep_resolve(&args, &tokenizer, c->vocab_size);
    int* seq_idx = doc_sep != DOC_SEP_NONE ? (int*)mallocCheck(sizeof(int) * (size_t)B * T) : NULL;
    if (seq_idx) printf("document boundaries: a new document at each token %d\n", doc_sep);
    if (args.masks) printf("masked targets: from the shards' .mask files\n");
    int* fresh = args.carry ? (int*)mallocCheck(sizeof(int) * (size_t)B) : NULL;
    if (args.carry)
        printf("carried state: %d streams of %zu batches an epoch; validation reads fresh rows\n", B,
               dataloader_num_batches(&train_loader));
    InferenceState infer;
    inference_state_init(&infer, c);
#ifdef _OPENMP
    printf("OpenMP threads: %d\n", omp_get_max_threads());
#endif

    if (start_step > 0) {
        int cut = log_trim(args.output_dir, start_step);
        if (cut > 0) printf("resume: cut %d lines written after step %d from %s/main.log\n", cut, start_step,
                            args.output_dir);
    }
    FILE* logf = log_open(args.output_dir, start_step > 0);

    double t_loop = now_seconds();
    int steps_timed = 0;
    for (int step = start_step; step <= args.max_steps; step++) {
        int last = step == args.max_steps;
        if (use_val && (step % args.val_every == 0 || last)) {
            log_val(logf, step, evaluate(&model, &val_loader, args.val_batches, seq_idx, doc_sep));
        }
        if (args.sample_every > 0 && step > 0 && (step % args.sample_every == 0 || last))
            print_sample(&model, &infer, &tokenizer, &sample_rng, args.gen_tokens);
        if (last) break;

        double t0 = now_seconds();
        mamba2_zero_grad(&model);
        double loss_sum = 0, nats_sum = 0;
        size_t counted = 0;
        for (int micro = 0; micro < accum; micro++) {
            dataloader_next_batch(&train_loader);
            if (seq_idx) dataloader_doc_index(seq_idx, train_loader.inputs, (size_t)B, (size_t)T, doc_sep);
            real l;
            if (args.carry) {
                dataloader_fresh_rows(fresh, train_loader.row_reset, train_loader.inputs, (size_t)B, (size_t)T,
                                      doc_sep);
                l = mamba2_forward_carry(&model, train_loader.inputs, train_loader.targets, seq_idx, fresh, B, T);
            } else {
                l = mamba2_forward_docs(&model, train_loader.inputs, train_loader.targets, seq_idx, B, T);
            }
            loss_sum += l;
            nats_sum += (double)l * model.num_counted;
            counted += model.num_counted;
            mamba2_backward(&model, train_loader.inputs, train_loader.targets, (real)1 / ((real)B * T * accum));
        }
        float loss = (float)(loss_sum / accum);
        /* masked targets: the backward used 1/(all targets of the step); the loss is the mean over the counted ones,
           so its gradient is the accumulated one times all/counted, folded into the norm and the update (exactly
           1, and skipped, when every target counts: the default arithmetic is unchanged) */
        size_t all = (size_t)B * T * accum;
        double grad_scale = 1.0;
        if (counted != all) {
            loss = (float)(counted > 0 ? nats_sum / counted : 0);
            grad_scale = counted > 0 ? (double)all / counted : 0; /* nothing counted: no gradient */
        }
        if (!isfinite(loss)) die("loss is %f at step %d: training diverged (lower -l, or check the data)", loss, step);
        double norm = mamba2_grad_norm(&model);
        if (grad_scale != 1.0) norm *= grad_scale;
        double coef = clip_coefficient(norm, args.grad_clip);
        float lr = lr_at_step(args.lr, args.warmup, args.final_lr_frac, step, args.max_steps);
        mamba2_update(&model, lr, 0.9f, 0.95f, 1e-8f, args.weight_decay, (real)(coef * grad_scale));
        double step_s = now_seconds() - t0;
        steps_timed++;
        int done = step + 1;
        log_train(logf, &args, done, loss, lr, norm, step_s, (now_seconds() - t_loop) / steps_timed);
        int sig = train_stop_requested();
        if (checkpoint_due_or_stop(&args, done, sig != 0)) {
            uint64_t st[CKPT_STATE_WORDS];
            train_state_pack(st, done, &sample_rng, &train_loader);
            char path[4096];
            checkpoint_path(path, sizeof(path), args.output_dir, done);
            if (args.carry) carry_save(&model, path, done, &train_loader); /* first: no checkpoint lacks it */
            mamba2_save_checkpoint(&model, path, st);
            printf("saved checkpoint %s\n", path);
            prune_checkpoints(args.output_dir, args.ckpt_keep);
        }
        if (sig && done < args.max_steps) {
            log_close(logf);
            printf("stopped by %s after step %d%s\n", signal_name(sig), done,
                   args.output_dir ? ": checkpoint written, resume with -y 1" : " (no -o: nothing saved)");
            fflush(stdout);
            exit(128 + sig);
        }
    }
    printf("total time %.1f s\n", now_seconds() - t_loop);
    log_close(logf);
    inference_state_free(&infer);
    free(seq_idx);
    free(fresh);
    tokenizer_free(&tokenizer);
    dataloader_free(&train_loader);
    if (use_val) dataloader_free(&val_loader);
    mamba2_free(&model);
    return 0;
}
#endif /* MAMBA2_NO_MAIN */
