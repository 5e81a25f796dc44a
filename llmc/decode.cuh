/*
 * decode.cuh: the decode step's kernels and their launchers: one new token for each of S sequences, the default
 * path of generate_mamba2.cu at every batch size (the batched generator that strings them together is
 * llmc/decoder.cuh). Versions that measured slower (the persistent step, the bulk-copy state kernel) and the knobs
 * that chose them live in dev/cuda/decode.cu and dev/cuda/decode_versions.cuh; dev/cuda/NOTES_decode.md has the
 * measurements and maps these names to the version names.
 */
#ifndef MAMBA2_DECODE_CUH
#define MAMBA2_DECODE_CUH

#include "cuda_common.h"
#include "gpu_arch.cuh"
#include "vec128.cuh"

/* ================================================================================================================
 * The decode step in few launches. One new token for each of S sequences.
 *
 * Every sequence's row is computed by the same threads in the same order whatever S is, so a sequence decoded in a
 * batch gets bitwise the logits it gets alone (the small-S path; the large-S path uses cuBLASLt, whose algorithm
 * may change with S).
 *
 *   conv_ssd_step_kernel      conv1d step + SiLU, dt = softplus(dt_raw + dt_bias), the SSM state update and
 *                             y = h C + D x, one block per (sequence, head, block_rows state rows). The state is float
 *                             or floatX (St); each thread owns one 16-byte vector of N per row, for up to
 *                             GEN_SSD_RPT rows, all loaded before any arithmetic (the large-S step is bound by the
 *                             state's bytes). The conv window is double-buffered (read win_in, write win_out)
 *                             because the B and C channels of a group are read by all the group's heads while one of
 *                             them writes the shifted window.
 *   rmsnorm_matvec_kernel     S <= GEN_SMALL_S: out = RMSNorm(x) W^T (in_proj, and the LM head with the final norm,
 *                             which also leaves each block's greedy pick per sequence for argmax_partials_kernel);
 *                             one warp per output row, the block normalizes the S rows into shared memory.
 *   gated_matvec_kernel       S <= GEN_SMALL_S: x += RMSNorm_g(y * SiLU(z)) W_out^T: the gated norm, out_proj and
 *                             the residual add in one launch (each output element is owned by one warp).
 *   decode_embed_kernel       x = wte[tokens]; counts the steps on the device (so a replayed graph knows its step).
 *   argmax_kernel, argmax_partials_kernel   the greedy pick per sequence (lowest id on ties), written to the token
 *                             input of the next step and to the token history at the current step.
 *
 * Launch overlap (programmatic dependent launch, sm_90): batch 1 reads 257 MB of weights a step in ~100 small
 * kernels, so a kernel's launch and its first loads, not bandwidth, set the time. Each kernel lets the next one start
 * at once (griddepcontrol.launch_dependents); the next one loads what does not depend on its predecessor (its weight
 * rows, parameters) into registers, then waits for the predecessor to finish (griddepcontrol.wait) before it reads
 * activations or writes anything. Nothing is written before the wait, so a kernel never races the one before it;
 * the state, written by the previous step, is read only after the wait too.
 * Rounding follows the parallel forward: values the forward stores as floatX (xbc, u, gn, delta) are rounded to
 * floatX here too.
 * ================================================================================================================ */

/* the fused matvec path handles up to this many sequences (its kernels hold S rows of the normalized input in shared
 * memory and S accumulators a warp); more go through the mid-batch path or cuBLASLt */
constexpr int GEN_SMALL_S = 8;
constexpr int GEN_THREADS = 256; /* threads of the step's kernels: 8 warps, one output row a warp in the matvecs */
constexpr int GEN_SSD_RPT = 4;   /* conv_ssd_step: state rows per thread, at most (16 x 16-byte loads in flight) */

/* state rows (p) per block: 16 for a few sequences, so that batch 1 fills the GPU; all P for many sequences, where
 * recomputing the group's B/C conv in every block costs more than it gains (H100, 130M: batch 64 2.04 ms/step with 16,
 * 1.71 with P) */
constexpr int GEN_SSD_ROWS = 16;

/* ---- programmatic dependent launch ---- */

/* wait until the kernel before this one in the stream has finished and its writes are visible (a no-op when this
 * launch did not ask for overlap) */
__device__ static inline void gen_wait_prior(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
/* let the next kernel in the stream start launching now (it still waits for this one before reading its outputs) */
__device__ static inline void gen_allow_next(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* the overlap needs a GPU of sm_90 or later and kernels compiled for one (else the waits would be missing from the
 * code): gpu_path()->pdl, which asks the code the runtime loaded (a probe kernel's __CUDA_ARCH__), not the cubin's
 * binary version (PTX of an older target JIT-compiled for an H100 has a 9.0 binary and no griddepcontrol in it).
 * sm_80 / 86 / 89: off; sm_90, 100, 120 with their code: on. */
static int gen_pdl_capable(void) { return gpu_path()->pdl; }

/* where the decode kernels launch: the stream, and whether each may start while the previous kernel in the stream
 * runs (overlap: programmatic dependent launch; set only where gen_pdl_capable(). Off, every kernel waits for the
 * one before it as plain launches do: for timing, or a driver or tool that cannot take the attribute) */
typedef struct {
    cudaStream_t stream;
    int overlap;
} DecodeStream;

/* kernel<<<grid, block, smem, ds.stream>>>(args...), allowed to start while the previous kernel in the stream runs
 * when ds.overlap */
template <typename... Exp, typename... Act>
static void gen_launch(void (*kernel)(Exp...), dim3 grid, dim3 block, size_t smem, DecodeStream ds, Act... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = ds.stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = ds.overlap ? 1 : 0;
    cudaCheck(cudaLaunchKernelEx(&cfg, kernel, args...));
    cudaCheckLast();
}

/* ---- conv + SSD step ---- */

__device__ static inline void st_set(float& d, float v) { d = v; }
#if !defined(ENABLE_FP32)
__device__ static inline void st_set(__nv_bfloat16& d, float v) { d = __float2bfloat16(v); }
#endif

template <typename St>
__global__ static void __launch_bounds__(GEN_THREADS, 3)
conv_ssd_step_kernel(floatX* y, St* state, float* win_out, const float* win_in, const floatX* zxbcdt, int zx_stride,
                     const floatX* xbc, const float* conv_w, const float* conv_b, const float* dt_bias,
                     const float* A_log, const float* Dskip, int H, int P, int N, int G, int K, int block_rows,
                     int tpr) {
    constexpr int EPV = 16 / sizeof(St); /* state elements per 16-byte vector */
    extern __shared__ float sm[];        /* x (rows) | B (N) | C (N): the conv outputs this block needs */
    gen_allow_next();
    int s = blockIdx.x / H, h = blockIdx.x % H, heads_per_group = H / G, g = h / heads_per_group;
    int p0 = blockIdx.y * block_rows, rows = P - p0 < block_rows ? P - p0 : block_rows;
    int E = H * P, Cd = E + 2 * G * N, K1 = K - 1;
    float dtb = dt_bias[h], A = -expf(A_log[h]), Dh = Dskip[h]; /* parameters: before the wait */
    gen_wait_prior();
    /* this thread's state vectors first, so their loads are in flight during the conv */
    int sub = threadIdx.x % tpr, rgrp = threadIdx.x / tpr, rstride = blockDim.x / tpr, n0 = sub * EPV;
    int nvalid = n0 < N, rpt = CEIL_DIV(rows, rstride);
    St* st = state + (((size_t)s * H + h) * P + p0) * N;
    Vec128<St> sv[GEN_SSD_RPT];
#pragma unroll
    for (int k = 0; k < GEN_SSD_RPT; k++) {
        int r = rgrp + k * rstride;
        if (r < rows && nvalid) sv[k] = load128cs(st + (size_t)r * N + n0);
    }
    const floatX* row = zxbcdt + (size_t)s * zx_stride;
    const floatX* xin = row + E;
    const float* wi = win_in + (size_t)s * (K1 > 0 ? K1 : 1) * Cd;
    float* wo = win_out + (size_t)s * (K1 > 0 ? K1 : 1) * Cd;
    /* the first block of the group's first head shifts the B, C windows; each block its own x rows */
    int owns_group = (h % heads_per_group) == 0 && blockIdx.y == 0;
    for (int i = threadIdx.x; i < rows + 2 * N; i += blockDim.x) {
        int ch = i < rows ? h * P + p0 + i
                          : (i < rows + N ? E + g * N + (i - rows) : E + G * N + g * N + (i - rows - N));
        if (xbc != NULL) { /* the conv ran in gen_conv_step_kernel */
            sm[i] = toF(xbc[(size_t)s * Cd + ch]);
            continue;
        }
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
    float u = toF(row[E + Cd + h]) + dtb;
    float dt = u > 20.f ? u : log1pf(expf(u));
    float a = expf(dt * A);
    const float* Bs = sm + rows;
    const float* Cs = sm + rows + N;
#pragma unroll
    for (int k = 0; k < GEN_SSD_RPT; k++) {
        if (k >= rpt) break; /* the same for the whole block: the shuffles below stay converged */
        int r = rgrp + k * rstride;
        float acc = 0.f, xp = r < rows ? sm[r] : 0.f;
        if (r < rows && nvalid) {
            float dtx = dt * xp;
            Vec128<St> out;
#pragma unroll
            for (int j = 0; j < EPV; j++) {
                float v = a * toF(sv[k].v[j]) + dtx * Bs[n0 + j];
                st_set(out.v[j], v);
                acc += v * Cs[n0 + j];
            }
            store128cs(st + (size_t)r * N + n0, out);
        }
        /* the row's tpr threads are adjacent lanes of one warp: a fixed-order butterfly */
        for (int off = tpr / 2; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (sub == 0 && r < rows) y[(size_t)s * E + h * P + p0 + r] = fromF(acc + Dh * xp);
    }
}

/* xbc (S, conv_dim) floatX = SiLU(conv1d step), one thread per (sequence, channel); the window shifts by one */
__global__ static void gen_conv_step_kernel(floatX* xbc, float* win_out, const float* win_in, const floatX* zxbcdt,
                                            int zx_stride, const float* conv_w, const float* conv_b, int S, int Cd,
                                            int K) {
    gen_allow_next();
    gen_wait_prior();
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= S * Cd) return;
    int s = idx / Cd, ch = idx % Cd, K1 = K - 1;
    const float* wi = win_in + (size_t)s * (K1 > 0 ? K1 : 1) * Cd;
    float* wo = win_out + (size_t)s * (K1 > 0 ? K1 : 1) * Cd;
    float in = toF(zxbcdt[(size_t)s * zx_stride + ch]); /* zxbcdt points at the xBC columns */
    float acc = conv_b[ch];
    for (int k = 0; k < K1; k++) acc += conv_w[ch * K + k] * wi[(size_t)k * Cd + ch];
    acc += conv_w[ch * K + K1] * in;
    for (int k = 0; k + 1 < K1; k++) wo[(size_t)k * Cd + ch] = wi[(size_t)(k + 1) * Cd + ch];
    if (K1 > 0) wo[(size_t)(K1 - 1) * Cd + ch] = in;
    xbc[idx] = fromF(acc / (1.f + expf(-acc)));
}

/* win_out/win_in (S, K-1, conv_dim) float; state (S, H, P, N) St (float or floatX); y (S, E).
 * xbc == NULL: the conv inside (a few sequences: one launch fewer); else xbc (S, conv_dim) floatX scratch and the
 * conv runs first in its own kernel, once per channel rather than once per head (many sequences: the per-head
 * recomputation of the group's B/C conv cost more than the state's bytes) */
template <typename St>
static void conv_ssd_step(floatX* y, St* state, float* win_out, const float* win_in, const floatX* zxbcdt,
                          int zx_stride, floatX* xbc, const float* conv_w, const float* conv_b, const float* dt_bias,
                          const float* A_log, const float* Dskip, int S, int H, int P, int N, int G, int K,
                          DecodeStream ds) {
    const int EPV = 16 / sizeof(St);
    if (N % 8 != 0) die("decode step: d_state %d must be a multiple of 8 (16-byte state vectors)", N);
    int tpr = 1;
    while (tpr * EPV < N) tpr *= 2;
    if (tpr > WARP_SIZE)
        die("decode step: d_state %d is more than %d (%s state): not supported", N, WARP_SIZE * EPV,
            EPV == 4 ? "float" : "bf16");
    int rstride = GEN_THREADS / tpr, block_rows = S <= GEN_SMALL_S ? GEN_SSD_ROWS : P;
    if (block_rows > rstride * GEN_SSD_RPT) block_rows = rstride * GEN_SSD_RPT;
    if (block_rows > P) block_rows = P;
    size_t smem = (size_t)(block_rows + 2 * N) * sizeof(float);
    dim3 grid(S * H, CEIL_DIV(P, block_rows));
    int Cd = H * P + 2 * G * N;
    if (xbc != NULL)
        gen_launch(gen_conv_step_kernel, dim3(CEIL_DIV(S * Cd, 256)), dim3(256), 0, ds, xbc, win_out, win_in,
                   zxbcdt + H * P, zx_stride, conv_w, conv_b, S, Cd, K);
    gen_launch(conv_ssd_step_kernel<St>, grid, dim3(GEN_THREADS), smem, ds, y, state, win_out, win_in, zxbcdt,
               zx_stride, (const floatX*)xbc, conv_w, conv_b, dt_bias, A_log, Dskip, H, P, N, G, K, block_rows, tpr);
}

/* ---- the fused norm + matvec kernels ---- */

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

/* 8 consecutive weights, as loaded (16 bytes in bf16, 32 in fp32) */
struct GenW8 {
    Vec128<floatX> v[8 / XVEC];
};

/* lane's chunks of pass `pass` of weight row wr (C wide): chunk j covers columns ((pass*PASS + j)*32 + lane)*8.. */
template <int NPF>
__device__ static inline void mv_load(GenW8 w[NPF], const floatX* wr, int C, int pass, int lane) {
#pragma unroll
    for (int j = 0; j < NPF; j++) {
        int i = ((pass * NPF + j) * WARP_SIZE + lane) * 8;
        if (i < C) {
#pragma unroll
            for (int q = 0; q < 8 / XVEC; q++) w[j].v[q] = load128cs(wr + i + q * XVEC);
        }
    }
}

/* acc[s] += the pass's weights . rows[s]; the same order for a row whatever S is */
template <int SMAX, int NPF>
__device__ static inline void mv_dot(float acc[SMAX], const GenW8 w[NPF], const float* rows, int S, int C, int pass,
                                     int lane) {
#pragma unroll
    for (int j = 0; j < NPF; j++) {
        int i = ((pass * NPF + j) * WARP_SIZE + lane) * 8;
        if (i >= C) break;
        float wv[8];
#pragma unroll
        for (int q = 0; q < 8 / XVEC; q++)
#pragma unroll
            for (int e = 0; e < XVEC; e++) wv[q * XVEC + e] = toF(w[j].v[q].v[e]);
#pragma unroll
        for (int s = 0; s < SMAX; s++) {
            if (s < S) {
                const float* r = rows + (size_t)s * C + i;
                float4 r0 = *(const float4*)r, r1 = *(const float4*)(r + 4);
                /* explicit roundings: the kernels are compiled for several SMAX, a row must sum the same in each */
                float t = __fmul_rn(wv[0], r0.x);
                t = __fmaf_rn(wv[1], r0.y, t);
                t = __fmaf_rn(wv[2], r0.z, t);
                t = __fmaf_rn(wv[3], r0.w, t);
                t = __fmaf_rn(wv[4], r1.x, t);
                t = __fmaf_rn(wv[5], r1.y, t);
                t = __fmaf_rn(wv[6], r1.z, t);
                t = __fmaf_rn(wv[7], r1.w, t);
                acc[s] = __fadd_rn(acc[s], t);
            }
        }
    }
}

/* acc[s] = W row o . rows[s]; the first pass of the warp's first row was loaded before the wait (w) */
template <int SMAX, int NPF>
__device__ static inline void mv_row(float acc[SMAX], GenW8 w[NPF], const floatX* wr, const float* rows, int S, int C,
                                     int lane, int preloaded) {
    int npass = CEIL_DIV(C, NPF * WARP_SIZE * 8);
#pragma unroll
    for (int s = 0; s < SMAX; s++) acc[s] = 0.f;
    for (int pass = 0; pass < npass; pass++) {
        if (!(preloaded && pass == 0)) mv_load<NPF>(w, wr, C, pass, lane);
        mv_dot<SMAX, NPF>(acc, w, rows, S, C, pass, lane);
    }
}

/* out (S, OC) floatX (row stride out_stride) = RMSNorm(x (S, C) float) * norm_w @ W (OC, C)^T.
 * With part_v != NULL (the LM head, greedy): block b's best (value as stored, lowest id) among rows < V, per
 * sequence, at part_v/part_i[s * gridDim.x + b]. */
template <int SMAX, int NPF>
__global__ static void __launch_bounds__(GEN_THREADS, SMAX == 1 ? (NPF <= 3 ? 4 : 3) : 2)
rmsnorm_matvec_kernel(floatX* out, int out_stride, const float* x, const float* norm_w,
                                             const floatX* W, int S, int C, int OC, float* part_v, int* part_i,
                                             int V) {
    extern __shared__ float4 sm_u4[];
    float* u = (float*)sm_u4; /* (S, C) the normalized rows, rounded to floatX as the forward stores them */
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, warps = blockDim.x / WARP_SIZE;
    __shared__ float red[32];
    __shared__ float best_v[GEN_THREADS / WARP_SIZE][SMAX];
    __shared__ int best_i[GEN_THREADS / WARP_SIZE][SMAX];
    int o0 = blockIdx.x * warps + warp, ostride = gridDim.x * warps;
    GenW8 w[NPF];
    if (o0 < OC) mv_load<NPF>(w, W + (size_t)o0 * C, C, 0, lane); /* weights do not depend on the previous kernel */
    gen_allow_next();
    gen_wait_prior();
    for (int s = 0; s < S; s++) { /* the whole block on each row: the prologue is on the critical path */
        const float* xr = x + (size_t)s * C;
        float ss = 0.f;
        for (int i = threadIdx.x; i < C; i += blockDim.x) ss += xr[i] * xr[i];
        float r = rsqrtf(block_sum(ss, red) / C + 1e-5f);
        for (int i = threadIdx.x; i < C; i += blockDim.x) u[(size_t)s * C + i] = toF(fromF(xr[i] * r * norm_w[i]));
    }
    __syncthreads();
    float bv[SMAX];
    int bi[SMAX];
#pragma unroll
    for (int s = 0; s < SMAX; s++) { bv[s] = -INFINITY; bi[s] = 0x7fffffff; }
    for (int o = o0; o < OC; o += ostride) {
        float acc[SMAX];
        mv_row<SMAX, NPF>(acc, w, W + (size_t)o * C, u, S, C, lane, o == o0);
#pragma unroll
        for (int s = 0; s < SMAX; s++) {
            if (s < S) {
                floatX v = fromF(warp_reduce_sum(acc[s]));
                if (lane == 0) out[(size_t)s * out_stride + o] = v;
                /* o grows: the first of equals stays */
                if (part_v != NULL && o < V && toF(v) > bv[s]) { bv[s] = toF(v); bi[s] = o; }
            }
        }
    }
    if (part_v == NULL) return;
    if (lane == 0)
        for (int s = 0; s < S && s < SMAX; s++) { best_v[warp][s] = bv[s]; best_i[warp][s] = bi[s]; }
    __syncthreads();
    if (threadIdx.x < S) {
        int s = threadIdx.x;
        float v = best_v[0][s];
        int id = best_i[0][s];
        for (int k = 1; k < warps; k++)
            if (best_v[k][s] > v || (best_v[k][s] == v && best_i[k][s] < id)) { v = best_v[k][s]; id = best_i[k][s]; }
        part_v[(size_t)s * gridDim.x + blockIdx.x] = v;
        part_i[(size_t)s * gridDim.x + blockIdx.x] = id;
    }
}

/* x (S, D) float += RMSNorm_g(y * SiLU(z)) * gnorm_w @ W_out (D, E)^T, the product rounded to floatX first as the
 * forward's delta is */
template <int SMAX, int NPF>
__global__ static void __launch_bounds__(GEN_THREADS, SMAX == 1 ? (NPF <= 3 ? 4 : 3) : 2)
gated_matvec_kernel(float* x, const floatX* y, const floatX* z, int z_stride,
                                           const float* gnorm_w, const floatX* W, int S, int E, int G, int D) {
    extern __shared__ float4 sm_g4[];
    float* gn = (float*)sm_g4; /* (S, E) */
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, warps = blockDim.x / WARP_SIZE;
    int Eg = E / G;
    __shared__ float red[32];
    int o0 = blockIdx.x * warps + warp, ostride = gridDim.x * warps;
    GenW8 w[NPF];
    if (o0 < D) mv_load<NPF>(w, W + (size_t)o0 * E, E, 0, lane);
    gen_allow_next();
    gen_wait_prior();
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
    for (int o = o0; o < D; o += ostride) {
        float acc[SMAX];
        mv_row<SMAX, NPF>(acc, w, W + (size_t)o * E, gn, S, E, lane, o == o0);
#pragma unroll
        for (int s = 0; s < SMAX; s++) {
            if (s < S) {
                float v = warp_reduce_sum(acc[s]);
                if (lane == 0) x[(size_t)s * D + o] += toF(fromF(v));
            }
        }
    }
}

/* one warp per row while that fits in 8 blocks per SM (every row's weights then load before the wait); more rows
 * (the LM head) loop */
static int gen_matvec_grid(int OC) {
    int warps = GEN_THREADS / WARP_SIZE, want = CEIL_DIV(OC, warps), cap = cuda_num_sms() * 8;
    return want < cap ? want : cap;
}

static void gen_check_matvec(const char* who, int S, int C, size_t smem) {
    if (S < 1 || S > GEN_SMALL_S) die("%s: %d sequences, the fused path takes 1..%d", who, S, GEN_SMALL_S);
    if (C % 8 != 0) die("%s: width %d must be a multiple of 8 (16-byte weight rows)", who, C);
    if (smem > (size_t)cuda_smem_optin())
        die("%s: %d rows of %d need %zu bytes of shared memory (this GPU: at most %d)", who, S, C, smem,
            cuda_smem_optin());
}
/* the fused matvec path (S rows of the widest input, d_inner floats, in shared memory) fits this GPU: 8 sequences
 * of 1.3B (d_inner 4096) need 128 KB, over the 99 KB of sm_86 / 89 / 120, which then decode on the cuBLASLt path */
static int gen_small_fits(int S, int D, int E) {
    return (size_t)S * (size_t)(D > E ? D : E) * sizeof(float) <= (size_t)cuda_smem_optin();
}

/* part_v/part_i: NULL, or (S, gen_matvec_grid(OC)) for the greedy pick among the first V rows */
static void rmsnorm_matvec(floatX* out, int out_stride, const float* x, const float* norm_w, const floatX* W, int S,
                           int C, int OC, float* part_v, int* part_i, int V, DecodeStream ds) {
    size_t smem = (size_t)S * C * sizeof(float);
    gen_check_matvec("rmsnorm_matvec", S, C, smem);
    /* one sequence: a kernel with one accumulator (fewer registers, more blocks per SM); rows up to 768 wide: 3
     * prefetched chunks a lane (a whole row), wider: 6. The row sums are the same in every variant. */
    void (*kernel)(floatX*, int, const float*, const float*, const floatX*, int, int, int, float*, int*, int) =
        C <= 768 ? (S == 1 ? rmsnorm_matvec_kernel<1, 3> : rmsnorm_matvec_kernel<GEN_SMALL_S, 3>)
                 : (S == 1 ? rmsnorm_matvec_kernel<1, 6> : rmsnorm_matvec_kernel<GEN_SMALL_S, 6>);
    cuda_set_smem((const void*)kernel, smem, "decode");
    gen_launch(kernel, dim3(gen_matvec_grid(OC)), dim3(GEN_THREADS), smem, ds, out, out_stride, x, norm_w, W, S,
               C, OC, part_v, part_i, V);
}

static void gated_matvec(float* x, const floatX* y, const floatX* z, int z_stride, const float* gnorm_w,
                         const floatX* W, int S, int E, int G, int D, DecodeStream ds) {
    size_t smem = (size_t)S * E * sizeof(float);
    gen_check_matvec("gated_matvec", S, E, smem);
    if (E % G != 0) die("gated_matvec: E = %d is not a multiple of ngroups = %d", E, G);
    void (*kernel)(float*, const floatX*, const floatX*, int, const float*, const floatX*, int, int, int, int) =
        E <= 768 ? (S == 1 ? gated_matvec_kernel<1, 3> : gated_matvec_kernel<GEN_SMALL_S, 3>)
                 : (S == 1 ? gated_matvec_kernel<1, 6> : gated_matvec_kernel<GEN_SMALL_S, 6>);
    cuda_set_smem((const void*)kernel, smem, "decode");
    gen_launch(kernel, dim3(gen_matvec_grid(D)), dim3(GEN_THREADS), smem, ds, x, y, z, z_stride, gnorm_w, W, S,
               E, G, D);
}

/* x (S, D) float = wte[tokens]; *step += 1 (the step counter the argmax writes the history with). The first kernel
 * of a step: launched without overlap (it follows host copies of the tokens), but lets the first in_proj start. */
__global__ static void decode_embed_kernel(float* x, int* step, const int* tokens, const floatX* wte, int D) {
    gen_allow_next();
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

/* (bv, bi) = the better of itself and (ov, oi): the larger value, the lower id among equals; NaN never wins */
__device__ static inline void argmax_merge(float& bv, int& bi, float ov, int oi) {
    if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
}

/* the block's best of (bv, bi) over its threads (any multiple of 32 up to 1024), returned in thread 0's bv, bi */
__device__ static inline void argmax_block(float& bv, int& bi) {
    __shared__ float best_v[32];
    __shared__ int best_i[32];
    for (int off = 16; off > 0; off >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, off);
        int oi = __shfl_xor_sync(0xffffffffu, bi, off);
        argmax_merge(bv, bi, ov, oi);
    }
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    if (lane == 0) { best_v[warp] = bv; best_i[warp] = bi; }
    __syncthreads();
    if (threadIdx.x == 0)
        for (int w = 1; w < (int)blockDim.x / WARP_SIZE; w++) argmax_merge(bv, bi, best_v[w], best_i[w]);
}

/* the block's best of (bv, bi), then tokens[s] = hist[*step * S + s] = it (id 0 if none) */
__device__ static inline void argmax_finish(int* tokens, int* hist, const int* step, float bv, int bi) {
    int s = blockIdx.x, S = gridDim.x;
    argmax_block(bv, bi);
    if (threadIdx.x == 0) {
        if (bi == 0x7fffffff) bi = 0; /* every logit NaN: id 0 rather than an id outside the vocabulary */
        tokens[s] = bi;
        hist[(size_t)(*step) * S + s] = bi;
    }
}

/* tokens[s] = hist[*step * S + s] = argmax over the V real ids of logits row s (the lowest id among equals) */
__global__ static void argmax_kernel(int* tokens, int* hist, const int* step, const floatX* logits, int Vp, int V) {
    gen_allow_next();
    gen_wait_prior();
    const floatX* row = logits + (size_t)blockIdx.x * Vp;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = toF(row[i]);
        if (v > bv) { bv = v; bi = i; } /* i grows: the first of equals stays */
    }
    argmax_finish(tokens, hist, step, bv, bi);
}

static void argmax_tokens(int* tokens, int* hist, const int* step, const floatX* logits, int S, int Vp, int V,
                          DecodeStream ds) {
    gen_launch(argmax_kernel, dim3(S), dim3(1024), 0, ds, tokens, hist, step, logits, Vp, V);
}

/* the same pick from the LM head's per-block partials (S, nparts) */
__global__ static void argmax_partials_kernel(int* tokens, int* hist, const int* step, const float* part_v,
                                              const int* part_i, int nparts) {
    gen_allow_next();
    gen_wait_prior();
    const float* pv = part_v + (size_t)blockIdx.x * nparts;
    const int* pi = part_i + (size_t)blockIdx.x * nparts;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) argmax_merge(bv, bi, pv[i], pi[i]);
    argmax_finish(tokens, hist, step, bv, bi);
}

static void argmax_from_partials(int* tokens, int* hist, const int* step, const float* part_v, const int* part_i,
                                 int S, int nparts, DecodeStream ds) {
    gen_launch(argmax_partials_kernel, dim3(S), dim3(256), 0, ds, tokens, hist, step, part_v, part_i, nparts);
}

/* ---- argmax for many sequences: S x nsplit blocks, then argmax_partials_kernel ----
 * Why: argmax_kernel is one 1024-thread block per sequence, 64 blocks for 64 sequences on 132 SMs, each scanning
 * 100 KB of logits 2 bytes at a time (11.6 us at batch 64). Here block (b, s) scans a contiguous 1/nsplit of row s
 * with 16-byte loads and leaves its best (value, lowest id) in part_v/part_i[s * nsplit + b]; argmax_partials_kernel
 * picks among the nsplit. argmax_merge is a total order on (value, id) (larger value, then lower id; NaN never wins),
 * so the pick is argmax_kernel's exactly, whatever order the merges run in. */
constexpr int GEN_AM_THREADS = 256;

__global__ static void __launch_bounds__(GEN_AM_THREADS)
argmax_split_kernel(float* part_v, int* part_i, const floatX* logits, int Vp, int V, int span) {
    gen_allow_next();
    gen_wait_prior();
    int b = blockIdx.x, s = blockIdx.y, nsplit = gridDim.x;
    int lo = b * span, hi = lo + span < V ? lo + span : V; /* span: a multiple of XVEC, so lo is 16-byte aligned */
    const floatX* row = logits + (size_t)s * Vp;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = lo + threadIdx.x * XVEC; i < hi; i += blockDim.x * XVEC) {
        Vec128<floatX> v = load128cs(row + i); /* i + XVEC <= Vp: Vp is a multiple of XVEC (checked) */
#pragma unroll
        for (int j = 0; j < XVEC; j++) {
            float f = toF(v.v[j]);
            if (i + j < hi && f > bv) { bv = f; bi = i + j; } /* ids grow within a thread: the first of equals */
        }
    }
    argmax_block(bv, bi);
    if (threadIdx.x == 0) {
        part_v[(size_t)s * nsplit + b] = bv;
        part_i[(size_t)s * nsplit + b] = bi;
    }
}

/* blocks per sequence: ~512 blocks in all (4 a SM), each span at least a block's worth of vectors, at most maxparts */
static int gen_argmax_nsplit(int S, int V, int maxparts) {
    int n = CEIL_DIV(512, S);
    int most = CEIL_DIV(V, GEN_AM_THREADS * XVEC);
    if (n > most) n = most;
    if (n > maxparts) n = maxparts;
    return n < 1 ? 1 : n;
}

/* tokens = argmax of each logits row; the split kernel + partials when part_v/part_i hold S x maxparts and the rows
 * are 16-byte aligned, else argmax_kernel */
static void argmax_tokens_split(int* tokens, int* hist, const int* step, const floatX* logits, float* part_v,
                                int* part_i, int maxparts, int S, int Vp, int V, DecodeStream ds) {
    if (part_v == NULL || Vp % XVEC != 0 || maxparts < 1) {
        argmax_tokens(tokens, hist, step, logits, S, Vp, V, ds);
        return;
    }
    int nsplit = gen_argmax_nsplit(S, V, maxparts);
    int span = CEIL_DIV(CEIL_DIV(V, nsplit), XVEC) * XVEC;
    nsplit = CEIL_DIV(V, span);
    gen_launch(argmax_split_kernel, dim3(nsplit, S), dim3(GEN_AM_THREADS), 0, ds, part_v, part_i, logits, Vp, V,
               span);
    argmax_from_partials(tokens, hist, step, part_v, part_i, S, nsplit, ds);
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

/* ================================================================================================================
 * The mid-batch path (GEN_SMALL_S < S <= GEN_MMA_AUTO_MAX_S, bf16 builds, where it measured faster than cuBLASLt;
 * the kernel takes up to GEN_MMA_MAX_S): five launches a layer, every one overlapped with the one before it
 * (programmatic dependent launch), the two projections on tensor cores.
 *
 *   gen_rmsnorm_kernel        u = floatX(RMSNorm(x) * w), one block per sequence.
 *   gen_mma_kernel<NT>        out (S, OC) = A (S, C) W^T (OC, C), or x += floatX(A W^T) (the residual, out_proj).
 *                             Weight-stationary: a block owns NT*8 output columns for all S (<= 64) rows; its 8 warps
 *                             split C in 32-wide slices (slice kb to warp kb % 8), each warp loads its weight slices
 *                             into registers before the wait and A straight from global memory (L2) after it, and
 *                             sums with mma.sync m16n8k16 (bf16 in, fp32 accumulate); the 8 partial sums meet in
 *                             shared memory and are added in warp order (deterministic).
 *                             Both operands are read as 16-byte vectors: lane (g = lane/4, q = lane%4) holds columns
 *                             8q..8q+7 of a slice; that is a permutation of the 16 k-slots of two mma steps (the first
 *                             takes 8q..8q+3, the second 8q+4..8q+7), the same for A and W, so the sum is unchanged.
 *   gen_gated_norm_kernel     gn = floatX(RMSNorm_g(y * SiLU(z)) * w), one block per (sequence, group).
 * ================================================================================================================ */

constexpr int GEN_MMA_MAX_S = 64; /* gen_mma_kernel's rows: 4 m16 tiles a warp */
/* the decoder takes the tensor-core projections up to this many sequences and cuBLASLt above, by measurement (H100,
 * -r 3, ms/step cuBLASLt / tensor cores: batch 16 0.741 / 0.719, batch 32 0.898 / 0.911, batch 64 1.206 / 1.274;
 * dev/cuda/decode_bin -M 0|1 forces either) */
constexpr int GEN_MMA_AUTO_MAX_S = 16;

__global__ static void gen_rmsnorm_kernel(floatX* u, const float* x, const float* w, int C) {
    __shared__ float red[32];
    gen_allow_next();
    gen_wait_prior();
    const float* xr = x + (size_t)blockIdx.x * C;
    float ss = 0.f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) ss += xr[i] * xr[i];
    float r = rsqrtf(block_sum(ss, red) / C + 1e-5f);
    for (int i = threadIdx.x; i < C; i += blockDim.x) u[(size_t)blockIdx.x * C + i] = fromF(xr[i] * r * w[i]);
}

__global__ static void gen_gated_norm_kernel(floatX* gn, const floatX* y, const floatX* z, int z_stride,
                                             const float* w, int E, int G) {
    __shared__ float red[32];
    gen_allow_next();
    gen_wait_prior();
    int s = blockIdx.x / G, g = blockIdx.x % G, Eg = E / G;
    const floatX* yr = y + (size_t)s * E + g * Eg;
    const floatX* zr = z + (size_t)s * z_stride + g * Eg;
    float ss = 0.f;
    for (int i = threadIdx.x; i < Eg; i += blockDim.x) {
        float zv = toF(zr[i]), v = toF(yr[i]) * zv / (1.f + expf(-zv));
        ss += v * v;
    }
    float r = rsqrtf(block_sum(ss, red) / Eg + 1e-5f);
    for (int i = threadIdx.x; i < Eg; i += blockDim.x) {
        float zv = toF(zr[i]), v = toF(yr[i]) * zv / (1.f + expf(-zv));
        gn[(size_t)s * E + g * Eg + i] = fromF(v * r * w[g * Eg + i]);
    }
}

static void gen_rmsnorm(floatX* u, const float* x, const float* w, int S, int C, DecodeStream ds) {
    gen_launch(gen_rmsnorm_kernel, dim3(S), dim3(GEN_THREADS), 0, ds, u, x, w, C);
}

static void gen_gated_norm(floatX* gn, const floatX* y, const floatX* z, int z_stride, const float* w, int S, int E,
                           int G, DecodeStream ds) {
    if (E % G != 0) die("gated norm: E = %d is not a multiple of ngroups = %d", E, G);
    gen_launch(gen_gated_norm_kernel, dim3(S * G), dim3(GEN_THREADS), 0, ds, gn, y, z, z_stride, w, E, G);
}

#if !defined(ENABLE_FP32)
/* c += a b: one m16n8k16 step, bf16 operands, fp32 accumulators */
__device__ static inline void mma_16816(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* W slices of pass i0 (slices warp + 8 (i0 + j)): the lane's 16 bytes of each of the NT weight rows it feeds */
template <int NT, int PF>
__device__ static inline void mma_load_w(uint4 wf[PF][NT], const floatX* W, int o_base, int OC, int C, int nkb,
                                         int warp, int i0, int g, int q) {
#pragma unroll
    for (int j = 0; j < PF; j++) {
        int kb = warp + 8 * (i0 + j);
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            int n = o_base + nt * 8 + g;
            wf[j][nt] = make_uint4(0, 0, 0, 0);
            if (kb < nkb && n < OC) wf[j][nt] = __ldcs((const uint4*)(W + (size_t)n * C + kb * 32 + 8 * q));
        }
    }
}

template <int NT, int PF>
__global__ static void __launch_bounds__(GEN_THREADS, 1)
gen_mma_kernel(floatX* out, int out_stride, float* resid, const floatX* A, const floatX* W, int S, int C, int OC) {
    extern __shared__ float red_mma[]; /* (8 warps, 64 rows, NT*8 columns) partial sums */
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, g = lane / 4, q = lane % 4;
    int o_base = blockIdx.x * NT * 8, nkb = C / 32;
    uint4 wf[PF][NT];
    mma_load_w<NT, PF>(wf, W, o_base, OC, C, nkb, warp, 0, g, q); /* weights: before the wait */
    gen_allow_next();
    gen_wait_prior();
    float acc[4][NT][4];
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][nt][e] = 0.f;
    for (int i0 = 0; warp + 8 * i0 < nkb; i0 += PF) {
        if (i0 > 0) mma_load_w<NT, PF>(wf, W, o_base, OC, C, nkb, warp, i0, g, q);
#pragma unroll
        for (int j = 0; j < PF; j++) {
            int kb = warp + 8 * (i0 + j);
            if (kb >= nkb) break;
            int k0 = kb * 32 + 8 * q;
            uint4 a[4][2];
#pragma unroll
            for (int mt = 0; mt < 4; mt++) {
                int r0 = mt * 16 + g, r1 = r0 + 8;
                a[mt][0] = r0 < S ? *(const uint4*)(A + (size_t)r0 * C + k0) : make_uint4(0, 0, 0, 0);
                a[mt][1] = r1 < S ? *(const uint4*)(A + (size_t)r1 * C + k0) : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int mt = 0; mt < 4; mt++) {
                if (mt * 16 >= S) break; /* the same for the whole block */
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    mma_16816(acc[mt][nt], a[mt][0].x, a[mt][1].x, a[mt][0].y, a[mt][1].y, wf[j][nt].x, wf[j][nt].y);
                    mma_16816(acc[mt][nt], a[mt][0].z, a[mt][1].z, a[mt][0].w, a[mt][1].w, wf[j][nt].z, wf[j][nt].w);
                }
            }
        }
    }
    const int NC = NT * 8;
#pragma unroll
    for (int mt = 0; mt < 4; mt++) {
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            float* r = red_mma + ((size_t)warp * 64 + mt * 16 + g) * NC + nt * 8 + 2 * q;
            r[0] = acc[mt][nt][0];
            r[1] = acc[mt][nt][1];
            r[8 * NC] = acc[mt][nt][2];
            r[8 * NC + 1] = acc[mt][nt][3];
        }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < S * NC; idx += blockDim.x) {
        int row = idx / NC, col = idx % NC, o = o_base + col;
        if (o >= OC) continue;
        float v = 0.f;
        for (int w = 0; w < GEN_THREADS / WARP_SIZE; w++) v += red_mma[((size_t)w * 64 + row) * NC + col];
        if (resid != NULL) resid[(size_t)row * out_stride + o] += toF(fromF(v));
        else out[(size_t)row * out_stride + o] = fromF(v);
    }
}
#endif

/* out (S, OC) = A (S, C) W^T, or (resid != NULL) resid (S, OC) float += floatX(A W^T); row stride out_stride */
static void gen_mma(floatX* out, int out_stride, float* resid, const floatX* A, const floatX* W, int S, int C, int OC,
                    DecodeStream ds) {
#if defined(ENABLE_FP32)
    (void)out; (void)out_stride; (void)resid; (void)A; (void)W; (void)S; (void)C; (void)OC; (void)ds;
    die("gen_mma: the tensor-core path is for bf16 builds");
#else
    if (S < 1 || S > GEN_MMA_MAX_S) die("gen_mma: %d sequences, the path takes 1..%d", S, GEN_MMA_MAX_S);
    if (C % 32 != 0) die("gen_mma: width %d must be a multiple of 32", C);
    /* wide outputs (in_proj): 32 columns a block, so fewer blocks re-read A; narrow ones (out_proj): 16 */
    if (OC >= 2048) {
        size_t smem = (size_t)8 * 64 * 32 * sizeof(float);
        cuda_set_smem((const void*)gen_mma_kernel<4, 3>, smem, "decode");
        gen_launch(gen_mma_kernel<4, 3>, dim3(CEIL_DIV(OC, 32)), dim3(GEN_THREADS), smem, ds, out, out_stride,
                   resid, A, W, S, C, OC);
    } else {
        size_t smem = (size_t)8 * 64 * 16 * sizeof(float);
        gen_launch(gen_mma_kernel<2, 6>, dim3(CEIL_DIV(OC, 16)), dim3(GEN_THREADS), smem, ds, out, out_stride,
                   resid, A, W, S, C, OC);
    }
#endif
}

/* the mid-batch path applies: bf16 build, S in (GEN_SMALL_S, GEN_MMA_AUTO_MAX_S], widths multiples of 32 */
static int gen_mma_path_ok(int S, int D, int E) {
    if (sizeof(floatX) != 2) return 0;
    return S > GEN_SMALL_S && S <= GEN_MMA_AUTO_MAX_S && D % 32 == 0 && E % 32 == 0;
}

#endif
