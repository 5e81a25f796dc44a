/*
 * generate.cuh: the recurrent (constant memory) step of a Mamba-2 block on the GPU, for generation.
 * One new token per sequence (S sequences at once); the rest of the step (norms, projections) reuses the
 * training kernels with S rows.
 *
 *   conv1d_step:  out = SiLU(bias + sum_k w[c,k] window[k] + w[c,K-1] in), then the window shifts by one.
 *                 window (S, K-1, C) float holds the last K-1 conv inputs.
 *   ssd_step:     a = exp(dt A), h = a h + dt x B^T, y = h C + D x, with dt = softplus(dt_raw + dt_bias) fused in.
 *                 state (S, H, P, N) float; one block per (sequence, head), one thread per p.
 */
#ifndef MAMBA2_GENERATE_CUH
#define MAMBA2_GENERATE_CUH

#include "cuda_common.h"

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

#endif
