/*
 * generate.cuh: the recurrent (constant memory) step of a Mamba-2 block on the GPU, for generation.
 * One new token per sequence (S sequences at once); the rest of the step (norms, projections) reuses the
 * training kernels with S rows.
 *
 *   conv1d_step:  out = SiLU(bias + sum_k w[c,k] window[k] + w[c,K-1] in), then the window shifts by one.
 *                 window (S, K-1, C) float holds the last K-1 conv inputs.
 *   ssd_step:     a = exp(dt A), h = a h + dt x B^T, y = h C + D x, with dt = softplus(dt_raw + dt_bias) fused in.
 *                 state (S, H, P, N) float; one block per (sequence, head), one thread per p.
 * (these two are gpu_step's in train_mamba2.cu: the trainer's samples; generate_mamba2.cu uses the fused kernels
 * below)
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

/* ================================================================================================================
 * The decode step in few launches (generate_mamba2.cu). One new token for each of S sequences.
 *
 * Every sequence's row is computed by the same threads in the same order whatever S is, so a sequence decoded in a
 * batch gets bitwise the logits it gets alone (the small-S path; the large-S path uses cuBLASLt, whose algorithm
 * may change with S).
 *
 *   conv_ssd_step_kernel      conv1d step + SiLU, dt = softplus(dt_raw + dt_bias), the SSM state update and
 *                             y = h C + D x, one block per (sequence, head, 16 state rows; a whole head when
 *                             S > GEN_SMALL_S). The conv window is double-buffered (read win_in, write win_out)
 *                             because the B and C channels of a group are read by all
 *                             the group's heads while one of them writes the shifted window.
 *   rmsnorm_matvec_kernel     S <= GEN_SMALL_S: out = RMSNorm(x) W^T (in_proj, and the LM head with the final norm);
 *                             each block normalizes the S rows into shared memory, then one warp per output row.
 *   gated_matvec_kernel       S <= GEN_SMALL_S: x += RMSNorm_g(y * SiLU(z)) W_out^T: the gated norm, out_proj and
 *                             the residual add in one launch (each output element is owned by one warp).
 *   decode_embed_kernel       x = wte[tokens]; counts the steps on the device (so a replayed graph knows its step).
 *   argmax_kernel             greedy pick per sequence (lowest id on ties), written to the token input of the next
 *                             step and to the token history at the current step.
 * Rounding follows the parallel forward: values the forward stores as floatX (xbc, u, gn, delta) are rounded to
 * floatX here too.
 * ================================================================================================================ */

#include "vec128.cuh"

#define GEN_SMALL_S 8      /* the fused matvec path handles up to this many sequences; more go through cuBLASLt */
#define GEN_THREADS 256

/* state rows (p) per block: 16 for a few sequences, so that batch 1 fills the GPU; all P for many sequences, where
 * recomputing the group's B/C conv in every block costs more than it gains (H100, 130M: batch 64 2.04 ms/step with 16,
 * 1.71 with P) */
#define GEN_SSD_ROWS 16

__global__ static void conv_ssd_step_kernel(floatX* y, float* state, float* win_out, const float* win_in,
                                            const floatX* zxbcdt, int zx_stride, const float* conv_w,
                                            const float* conv_b, const float* dt_bias, const float* A_log,
                                            const float* Dskip, int H, int P, int N, int G, int K, int block_rows) {
    extern __shared__ float sm[]; /* x (rows) | B (N) | C (N): the conv outputs this block needs */
    int s = blockIdx.x / H, h = blockIdx.x % H, heads_per_group = H / G, g = h / heads_per_group;
    int p0 = blockIdx.y * block_rows, rows = P - p0 < block_rows ? P - p0 : block_rows;
    int E = H * P, Cd = E + 2 * G * N, K1 = K - 1;
    const floatX* row = zxbcdt + (size_t)s * zx_stride;
    const floatX* xin = row + E;
    const float* wi = win_in + (size_t)s * (K1 > 0 ? K1 : 1) * Cd;
    float* wo = win_out + (size_t)s * (K1 > 0 ? K1 : 1) * Cd;
    /* the first block of the group's first head shifts the B, C windows; each block its own x rows */
    int owns_group = (h % heads_per_group) == 0 && blockIdx.y == 0;
    for (int i = threadIdx.x; i < rows + 2 * N; i += blockDim.x) {
        int ch = i < rows ? h * P + p0 + i
                          : (i < rows + N ? E + g * N + (i - rows) : E + G * N + g * N + (i - rows - N));
        float in = toF(xin[ch]);
        float acc = conv_b[ch];
        for (int k = 0; k < K1; k++) acc += conv_w[ch * K + k] * wi[(size_t)k * Cd + ch];
        acc += conv_w[ch * K + K1] * in;
        sm[i] = toF(fromF(acc / (1.f + expf(-acc)))); /* the forward stores xbc as floatX */
        if (i < rows || owns_group) {
            for (int k = 0; k + 1 < K1; k++) wo[(size_t)k * Cd + ch] = wi[(size_t)(k + 1) * Cd + ch];
            if (K1 > 0) wo[(size_t)(K1 - 1) * Cd + ch] = in;
        }
    }
    __syncthreads();
    float u = toF(row[E + Cd + h]) + dt_bias[h];
    float dt = u > 20.f ? u : log1pf(expf(u));
    float a = expf(dt * -expf(A_log[h]));
    const float* Bs = sm + rows;
    const float* Cs = sm + rows + N;
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, warps = blockDim.x / WARP_SIZE;
    float* st = state + (((size_t)s * H + h) * P + p0) * N;
    for (int r = warp; r < rows; r += warps) {
        float xp = sm[r], dtx = dt * xp, acc = 0.f;
        float* sr = st + (size_t)r * N;
#pragma unroll 4
        for (int n = lane; n < N; n += WARP_SIZE) {
            float v = a * sr[n] + dtx * Bs[n];
            sr[n] = v;
            acc += v * Cs[n];
        }
        acc = warp_reduce_sum(acc);
        if (lane == 0) y[(size_t)s * E + h * P + p0 + r] = fromF(acc + Dskip[h] * xp);
    }
}

/* win_out/win_in (S, K-1, conv_dim) float; state (S, H, P, N) float; y (S, E) */
static void conv_ssd_step(floatX* y, float* state, float* win_out, const float* win_in, const floatX* zxbcdt,
                          int zx_stride, const float* conv_w, const float* conv_b, const float* dt_bias,
                          const float* A_log, const float* Dskip, int S, int H, int P, int N, int G, int K,
                          cudaStream_t stream) {
    int block_rows = S <= GEN_SMALL_S ? GEN_SSD_ROWS : P;
    size_t smem = (size_t)(block_rows + 2 * N) * sizeof(float);
    dim3 grid(S * H, CEIL_DIV(P, block_rows));
    conv_ssd_step_kernel<<<grid, GEN_THREADS, smem, stream>>>(y, state, win_out, win_in, zxbcdt, zx_stride, conv_w,
                                                              conv_b, dt_bias, A_log, Dskip, H, P, N, G, K,
                                                              block_rows);
    cudaCheckLast();
}

/* the sum of v over the block, in a fixed order; red holds a float per warp */
__device__ static inline float block_sum(float v, float* red) {
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, warps = blockDim.x / WARP_SIZE;
    v = warp_reduce_sum(v);
    __syncthreads(); /* red may still be read from the previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = 0.f;
    for (int w = 0; w < warps; w++) t += red[w];
    return t;
}

/* acc[s] += W row chunk . rows[s] chunk for every sequence; the same order for a row whatever S is */
__device__ static inline void matvec_rows(float acc[GEN_SMALL_S], const floatX* wr, const float* rows, int S, int C,
                                          int lane) {
    /* four 16-byte weight loads in flight per lane before any arithmetic: batch 1 is latency-bound */
    for (int base = lane * 8; base < C; base += 4 * WARP_SIZE * 8) {
        float wv[4][8];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int i = base + j * WARP_SIZE * 8;
            if (i < C) load8X(wv[j], wr + i);
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int i = base + j * WARP_SIZE * 8;
            if (i >= C) break;
#pragma unroll
            for (int s = 0; s < GEN_SMALL_S; s++) {
                if (s < S) {
                    const float* r = rows + (size_t)s * C + i;
                    float4 r0 = *(const float4*)r, r1 = *(const float4*)(r + 4);
                    acc[s] += wv[j][0] * r0.x + wv[j][1] * r0.y + wv[j][2] * r0.z + wv[j][3] * r0.w +
                              wv[j][4] * r1.x + wv[j][5] * r1.y + wv[j][6] * r1.z + wv[j][7] * r1.w;
                }
            }
        }
    }
}

/* out (S, OC) floatX (row stride out_stride) = RMSNorm(x (S, C) float) * norm_w @ W (OC, C)^T */
__global__ static void rmsnorm_matvec_kernel(floatX* out, int out_stride, const float* x, const float* norm_w,
                                             const floatX* W, int S, int C, int OC) {
    extern __shared__ float4 sm_u4[];
    float* u = (float*)sm_u4; /* (S, C) the normalized rows, rounded to floatX as the forward stores them */
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, warps = blockDim.x / WARP_SIZE;
    __shared__ float red[32];
    for (int s = 0; s < S; s++) { /* the whole block on each row: the prologue is on the critical path */
        const float* xr = x + (size_t)s * C;
        float ss = 0.f;
        for (int i = threadIdx.x; i < C; i += blockDim.x) ss += xr[i] * xr[i];
        float r = rsqrtf(block_sum(ss, red) / C + 1e-5f);
        for (int i = threadIdx.x; i < C; i += blockDim.x) u[(size_t)s * C + i] = toF(fromF(xr[i] * r * norm_w[i]));
    }
    __syncthreads();
    for (int o = blockIdx.x * warps + warp; o < OC; o += gridDim.x * warps) {
        float acc[GEN_SMALL_S];
        for (int s = 0; s < GEN_SMALL_S; s++) acc[s] = 0.f;
        matvec_rows(acc, W + (size_t)o * C, u, S, C, lane);
        for (int s = 0; s < GEN_SMALL_S; s++) {
            if (s < S) {
                float v = warp_reduce_sum(acc[s]);
                if (lane == 0) out[(size_t)s * out_stride + o] = fromF(v);
            }
        }
    }
}

/* x (S, D) float += RMSNorm_g(y * SiLU(z)) * gnorm_w @ W_out (D, E)^T, the product rounded to floatX first as the
 * forward's delta is */
__global__ static void gated_matvec_kernel(float* x, const floatX* y, const floatX* z, int z_stride,
                                           const float* gnorm_w, const floatX* W, int S, int E, int G, int D) {
    extern __shared__ float4 sm_g4[];
    float* gn = (float*)sm_g4; /* (S, E) */
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, warps = blockDim.x / WARP_SIZE;
    int Eg = E / G;
    __shared__ float red[32];
    for (int item = 0; item < S * G; item++) { /* the whole block on each (row, group) */
        int s = item / G, g = item % G;
        const floatX* yr = y + (size_t)s * E + g * Eg;
        const floatX* zr = z + (size_t)s * z_stride + g * Eg;
        float* out = gn + (size_t)s * E + g * Eg;
        float ss = 0.f;
        for (int i = threadIdx.x; i < Eg; i += blockDim.x) {
            float zv = toF(zr[i]), v = toF(yr[i]) * zv / (1.f + expf(-zv));
            out[i] = v;
            ss += v * v;
        }
        float r = rsqrtf(block_sum(ss, red) / Eg + 1e-5f);
        for (int i = threadIdx.x; i < Eg; i += blockDim.x) out[i] = toF(fromF(out[i] * r * gnorm_w[g * Eg + i]));
    }
    __syncthreads();
    for (int o = blockIdx.x * warps + warp; o < D; o += gridDim.x * warps) {
        float acc[GEN_SMALL_S];
        for (int s = 0; s < GEN_SMALL_S; s++) acc[s] = 0.f;
        matvec_rows(acc, W + (size_t)o * E, gn, S, E, lane);
        for (int s = 0; s < GEN_SMALL_S; s++) {
            if (s < S) {
                float v = warp_reduce_sum(acc[s]);
                if (lane == 0) x[(size_t)s * D + o] += toF(fromF(v));
            }
        }
    }
}

static int gen_num_sms(void) {
    static int sms = 0;
    if (sms == 0) {
        int dev;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    }
    return sms;
}

/* enough blocks to fill the GPU, few enough that the per-block normalization prologue stays cheap */
static int gen_matvec_grid(int OC) {
    int warps = GEN_THREADS / WARP_SIZE, want = CEIL_DIV(OC, warps), cap = gen_num_sms() * 8;
    return want < cap ? want : cap;
}

static void gen_check_matvec(const char* who, int S, int C, size_t smem) {
    if (S < 1 || S > GEN_SMALL_S) die("%s: %d sequences, the fused path takes 1..%d", who, S, GEN_SMALL_S);
    if (C % 8 != 0) die("%s: width %d must be a multiple of 8 (16-byte weight rows)", who, C);
    if (smem > 227 * 1024) die("%s: %d rows of %d need %zu bytes of shared memory (at most 227 KiB)", who, S, C, smem);
}

static void rmsnorm_matvec(floatX* out, int out_stride, const float* x, const float* norm_w, const floatX* W, int S,
                           int C, int OC, cudaStream_t stream) {
    size_t smem = (size_t)S * C * sizeof(float);
    gen_check_matvec("rmsnorm_matvec", S, C, smem);
    cudaCheck(cudaFuncSetAttribute(rmsnorm_matvec_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    rmsnorm_matvec_kernel<<<gen_matvec_grid(OC), GEN_THREADS, smem, stream>>>(out, out_stride, x, norm_w, W, S, C, OC);
    cudaCheckLast();
}

static void gated_matvec(float* x, const floatX* y, const floatX* z, int z_stride, const float* gnorm_w,
                         const floatX* W, int S, int E, int G, int D, cudaStream_t stream) {
    size_t smem = (size_t)S * E * sizeof(float);
    gen_check_matvec("gated_matvec", S, E, smem);
    if (E % G != 0) die("gated_matvec: E = %d is not a multiple of ngroups = %d", E, G);
    cudaCheck(cudaFuncSetAttribute(gated_matvec_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    gated_matvec_kernel<<<gen_matvec_grid(D), GEN_THREADS, smem, stream>>>(x, y, z, z_stride, gnorm_w, W, S, E, G,
                                                                           D);
    cudaCheckLast();
}

/* x (S, D) float = wte[tokens]; *step += 1 (the step counter the argmax writes the history with) */
__global__ static void decode_embed_kernel(float* x, int* step, const int* tokens, const floatX* wte, int D) {
    int s = blockIdx.x;
    if (s == 0 && threadIdx.x == 0) *step += 1;
    const floatX* w = wte + (size_t)tokens[s] * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) x[(size_t)s * D + i] = toF(w[i]);
}

static void decode_embed(float* x, int* step, const int* tokens, const floatX* wte, int S, int D,
                         cudaStream_t stream) {
    decode_embed_kernel<<<S, 256, 0, stream>>>(x, step, tokens, wte, D);
    cudaCheckLast();
}

/* tokens[s] = hist[*step * S + s] = argmax over the V real ids of logits row s (the lowest id among equals) */
__global__ static void argmax_kernel(int* tokens, int* hist, const int* step, const floatX* logits, int Vp, int V) {
    __shared__ float best_v[32];
    __shared__ int best_i[32];
    int s = blockIdx.x, S = gridDim.x;
    const floatX* row = logits + (size_t)s * Vp;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = toF(row[i]);
        if (v > bv) { bv = v; bi = i; } /* i grows: the first of equals stays */
    }
    for (int off = 16; off > 0; off >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, off);
        int oi = __shfl_xor_sync(0xffffffffu, bi, off);
        if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
    }
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    if (lane == 0) { best_v[warp] = bv; best_i[warp] = bi; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)blockDim.x / WARP_SIZE; w++)
            if (best_v[w] > bv || (best_v[w] == bv && best_i[w] < bi)) { bv = best_v[w]; bi = best_i[w]; }
        if (bi == 0x7fffffff) bi = 0; /* every logit NaN: id 0 rather than an id outside the vocabulary */
        tokens[s] = bi;
        hist[(size_t)(*step) * S + s] = bi;
    }
}

static void argmax_tokens(int* tokens, int* hist, const int* step, const floatX* logits, int S, int Vp, int V,
                          cudaStream_t stream) {
    argmax_kernel<<<S, 1024, 0, stream>>>(tokens, hist, step, logits, Vp, V);
    cudaCheckLast();
}

/* prefill -> step hand-over: window slot k of sequence s = the conv input (xBC columns of zxbcdt) at time
 * T-(K-1)+k of the prompt, zeros before its first token. win (S, K-1, Cd) float; zx (T, zx_stride) */
__global__ static void conv_window_from_prefill_kernel(float* win, const floatX* zx, int zx_stride, int T, int K1,
                                                       int Cd) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= K1 * Cd) return;
    int k = idx / Cd, ch = idx % Cd, t = T - K1 + k;
    win[idx] = t >= 0 ? toF(zx[(size_t)t * zx_stride + ch]) : 0.f;
}

static void conv_window_from_prefill(float* win, const floatX* zx_xbc, int zx_stride, int T, int K, int Cd,
                                     cudaStream_t stream) {
    int K1 = K - 1;
    if (K1 < 1) return;
    conv_window_from_prefill_kernel<<<CEIL_DIV(K1 * Cd, 256), 256, 0, stream>>>(win, zx_xbc, zx_stride, T, K1, Cd);
    cudaCheckLast();
}

#endif
