/*
 * generate.cuh: the trainer's samples (train_mamba2.cu; test_mamba2.cu checks it): the recurrent (constant memory)
 * step of a Mamba-2 model on the GPU, one new token per sequence (S sequences at once), with plain kernels; the
 * norms and projections reuse the training kernels with S rows.
 *
 *   conv1d_step:  out = SiLU(bias + sum_k w[c,k] window[k] + w[c,K-1] in), then the window shifts by one.
 *                 window (S, K-1, C) float holds the last K-1 conv inputs.
 *   ssd_step:     a = exp(dt A), h = a h + dt x B^T, y = h C + D x, with dt = softplus(dt_raw + dt_bias) fused in.
 *                 state (S, H, P, N) float; one block per (sequence, head), one thread per p.
 *   gpu_step:     one token per sequence through the whole model; the logits to the host.
 * generate_mamba2.cu decodes with the fused kernels of llmc/decode.cuh instead (llmc/decoder.cuh).
 */
#ifndef MAMBA2_GENERATE_CUH
#define MAMBA2_GENERATE_CUH

#include "cuda_common.h"
#include "model.cuh"

__global__ static void conv1d_step_kernel(floatX* out, float* window, const floatX* in, int in_stride,
                                          const float* w, const float* bias, int S, int C, int K) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= S * C) return;
    int s = idx / C, c = idx % C;
    float* win = window + (size_t)s * (K - 1) * C;
    float x = toF(in[(size_t)s * in_stride + c]);
    float acc = bias[c] + w[c * K + K - 1] * x;
    for (int k = 0; k < K - 1; k++) acc += w[c * K + k] * win[(size_t)k * C + c];
    for (int k = 0; k + 1 < K - 1; k++) win[(size_t)k * C + c] = win[(size_t)(k + 1) * C + c];
    if (K > 1) win[(size_t)(K - 2) * C + c] = x;
    out[(size_t)s * C + c] = fromF(acc / (1.f + expf(-acc)));
}

static void conv1d_step(floatX* out, float* window, const floatX* in, int in_stride, const float* w,
                        const float* bias, int S, int C, int K, cudaStream_t stream) {
    conv1d_step_kernel<<<CEIL_DIV(S * C, 256), 256, 0, stream>>>(out, window, in, in_stride, w, bias, S, C, K);
    cudaCheckLast();
}

__global__ static void ssd_step_kernel(floatX* y, float* state, const floatX* xbc, const floatX* dt_raw,
                                       int dt_stride, const float* dt_bias, const float* A_log, const float* Dskip,
                                       int H, int P, int N, int G) {
    int s = blockIdx.x / H, h = blockIdx.x % H, p = threadIdx.x;
    if (p >= P) return;
    int E = H * P, g = h / (H / G), conv_dim = E + 2 * G * N;
    const floatX* row = xbc + (size_t)s * conv_dim;
    float u = toF(dt_raw[(size_t)s * dt_stride + h]) + dt_bias[h];
    float dt = u > 20.f ? u : log1pf(expf(u));
    float a = expf(dt * -expf(A_log[h]));
    float x = toF(row[h * P + p]);
    const floatX* Bv = row + E + g * N;
    const floatX* Cv = row + E + G * N + g * N;
    float* st = state + (((size_t)s * H + h) * P + p) * N;
    float acc = 0.f;
    for (int n = 0; n < N; n++) {
        float v = a * st[n] + dt * x * toF(Bv[n]);
        st[n] = v;
        acc += v * toF(Cv[n]);
    }
    y[(size_t)s * E + h * P + p] = fromF(acc + Dskip[h] * x);
}

static void ssd_step(floatX* y, float* state, const floatX* xbc, const floatX* dt_raw, int dt_stride,
                     const float* dt_bias, const float* A_log, const float* Dskip, int S, int H, int P, int N, int G,
                     cudaStream_t stream) {
    ssd_step_kernel<<<S * H, CEIL_DIV(P, 32) * 32, 0, stream>>>(y, state, xbc, dt_raw, dt_stride, dt_bias, A_log,
                                                                Dskip, H, P, N, G);
    cudaCheckLast();
}

/* ---- the trainer's samples: the whole model, one token per sequence ---- */

typedef struct {
    int S;            /* sequences */
    float* window;    /* (L, S, K-1, conv_dim) the conv inputs of the last K-1 tokens */
    float* state;     /* (L, S, H, P, N) */
    float* x;         /* (S, D) residual stream */
    floatX *u, *zxbcdt, *xbc, *y, *gn, *delta, *logits;
    float *rstd, *gn_rstd;
    int* tokens;
    float* logits_host;
    floatX* logits_host_x;
} GPUInference;

static void gpu_inference_init(GPUInference* s, const Mamba2Config* c, int S) {
    if (config_is_hybrid(c))
        die("the one-token sampler (llmc/generate.cuh) has no KV cache for a hybrid model's attention blocks: generate "
            "with ./generate_mamba2cu (llmc/decoder.cuh) or ./generate_mamba2");
    size_t total = 0, K1 = (size_t)conv_window_len(c), X = sizeof(floatX), F = sizeof(float);
    s->S = S;
    s->window = (float*)gpu_alloc((size_t)c->n_layer * S * K1 * c->conv_dim * F, &total);
    s->state = (float*)gpu_alloc((size_t)c->n_layer * S * c->nheads * c->headdim * c->d_state * F, &total);
    s->x = (float*)gpu_alloc((size_t)S * c->d_model * F, &total);
    s->u = (floatX*)gpu_alloc((size_t)S * c->d_model * X, &total);
    s->zxbcdt = (floatX*)gpu_alloc((size_t)S * c->d_in_proj * X, &total);
    s->xbc = (floatX*)gpu_alloc((size_t)S * c->conv_dim * X, &total);
    s->y = (floatX*)gpu_alloc((size_t)S * c->d_inner * X, &total);
    s->gn = (floatX*)gpu_alloc((size_t)S * c->d_inner * X, &total);
    s->delta = (floatX*)gpu_alloc((size_t)S * c->d_model * X, &total);
    s->logits = (floatX*)gpu_alloc((size_t)S * c->padded_vocab_size * X, &total);
    s->rstd = (float*)gpu_alloc((size_t)S * F, &total);
    s->gn_rstd = (float*)gpu_alloc((size_t)S * c->ngroups * F, &total);
    s->tokens = (int*)gpu_alloc((size_t)S * sizeof(int), &total);
    s->logits_host = (float*)mallocCheck((size_t)S * c->padded_vocab_size * F);
    s->logits_host_x = (floatX*)mallocCheck((size_t)S * c->padded_vocab_size * X);
}

static void gpu_inference_reset(GPUInference* s, const Mamba2Config* c) {
    size_t K1 = (size_t)conv_window_len(c);
    cudaCheck(cudaMemset(s->window, 0, (size_t)c->n_layer * s->S * K1 * c->conv_dim * sizeof(float)));
    cudaCheck(cudaMemset(s->state, 0, (size_t)c->n_layer * s->S * c->nheads * c->headdim * c->d_state * sizeof(float)));
}

/* feeds one token per sequence; returns the host logits (S, Vp) as float */
static float* gpu_step(GPUModel* m, GPUInference* s, const int* tokens_host) {
    const Mamba2Config* c = &m->config;
    cudaStream_t st = m->stream;
    int S = s->S, D = c->d_model, E = c->d_inner, H = c->nheads, GN = c->ngroups * c->d_state;
    size_t K1 = (size_t)conv_window_len(c);
    cudaCheck(cudaMemcpyAsync(s->tokens, tokens_host, S * sizeof(int), cudaMemcpyHostToDevice, st));
    encoder_forward(s->x, s->tokens, PX(m, P_WTE, 0), S, D, st);
    for (int l = 0; l < c->n_layer; l++) {
        rmsnorm_forward(s->u, s->rstd, s->x, l > 0 ? s->delta : NULL, PF(m, P_NORM_W, l), S, D, st);
        matmul_forward(s->zxbcdt, s->u, PX(m, P_IN_PROJ_W, l), S, D, c->d_in_proj, st);
        conv1d_step(s->xbc, s->window + (size_t)l * S * K1 * c->conv_dim, s->zxbcdt + E, c->d_in_proj,
                    PF(m, P_CONV_W, l), PF(m, P_CONV_B, l), S, c->conv_dim, c->d_conv, st);
        ssd_step(s->y, s->state + (size_t)l * S * H * c->headdim * c->d_state, s->xbc, s->zxbcdt + 2 * E + 2 * GN,
                 c->d_in_proj, PF(m, P_DT_BIAS, l), PF(m, P_A_LOG, l), PF(m, P_D, l), S, H, c->headdim, c->d_state,
                 c->ngroups, st);
        gated_norm_forward(s->gn, s->gn_rstd, s->y, s->zxbcdt, c->d_in_proj, PF(m, P_GNORM_W, l), S, E, c->ngroups,
                           st);
        matmul_forward(s->delta, s->gn, PX(m, P_OUT_PROJ_W, l), S, E, D, st);
    }
    rmsnorm_forward(s->u, s->rstd, s->x, s->delta, PF(m, P_NORM_F_W, 0), S, D, st);
    matmul_forward(s->logits, s->u, PX(m, P_WTE, 0), S, D, c->padded_vocab_size, st);
    size_t n = (size_t)S * c->padded_vocab_size;
    cudaCheck(cudaMemcpyAsync(s->logits_host_x, s->logits, n * sizeof(floatX), cudaMemcpyDeviceToHost, st));
    cudaCheck(cudaStreamSynchronize(st));
    for (size_t i = 0; i < n; i++) s->logits_host[i] = toF(s->logits_host_x[i]);
    return s->logits_host;
}

#endif
