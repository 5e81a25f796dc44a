/*
 * ssd.cuh: the SSD (state-space dual) layer of Mamba-2, forward and backward, by the chunked algorithm of
 * SPEC.md section 3. One head h of batch element b, chunk c of Q steps, rows i, j inside the chunk:
 *
 *   dt_t   = softplus(dt_raw_t + dt_bias[h]),  A = -exp(A_log[h])          (fused: ssd_dt_cumsum_kernel)
 *   cum_i  = sum_{k<=i} dt_k A                  chunk-local inclusive log-decay, decreasing in i
 *   S_c    = sum_j exp(cum_last - cum_j) dt_j x_j B_j^T          (P,N)     (ssd_chunk_outer_kernel, mode 0)
 *   Hprev_c = exp(cum_last_{c-1}) Hprev_{c-1} + S_{c-1}          state entering chunk c (ssd_state_pass_kernel)
 *   y_i    = sum_{j<=i} (C_i.B_j) exp(cum_i - cum_j) dt_j x_j + exp(cum_i) Hprev_c C_i + D x_i
 *                                                                          (ssd_chunk_scan_fwd_kernel)
 * Every exp() argument is a difference that is <= 0, or a chunk-local cum <= 0: nothing overflows.
 *
 * Saved for backward (`saved`, ssd_saved_bytes): dt (B,H,T) float, cum (B,H,T) float, and the states entering
 * each chunk (B, nchunks, H, P, N) float.
 *
 * Backward: derivation from the recurrence of SPEC.md section 4, in chunk form.
 * Let dH_c = dL/d(state leaving chunk c) (= dL/dHprev_{c+1}; zero for the last chunk: the final state is not
 * differentiated). The recurrence g_t = dy_t C_t^T + a_{t+1} g_{t+1} summed over one chunk gives
 *   dH_{c-1} = exp(cum_last) dH_c + sum_i exp(cum_i) dy_i C_i^T            (ssd_chunk_outer_kernel mode 1 makes
 *                                                                           the sum, ssd_dstate_pass_kernel the scan)
 * Inside the chunk y_i is a sum of products, so each input's gradient is the matching sum:
 *   dxs_j = sum_{i>=j} (C_i.B_j) exp(cum_i-cum_j) dy_i + exp(cum_last-cum_j) dH_c B_j        (P)
 *   dx_j  = dt_j dxs_j + D dy_j
 *   dB_j  = dt_j [ sum_{i>=j} (dy_i.x_j) exp(cum_i-cum_j) C_i + exp(cum_last-cum_j) dH_c^T x_j ]   (N)
 *                                                              (these three: ssd_bwd_dx_db_kernel)
 *   dC_i  = sum_{j<=i} (dy_i.x_j) exp(cum_i-cum_j) dt_j B_j + exp(cum_i) Hprev_c^T dy_i      (ssd_bwd_dc_kernel)
 *   ddt_j (as a coefficient) = x_j . dxs_j
 * The log-decays: cum_k enters exp(cum_i - cum_j) with + at i = k and - at j = k, exp(cum_i) with +,
 * exp(cum_last - cum_j) with - at j, and cum_last in the state leaving the chunk with +. Collecting terms:
 *   dcum_i = dy_i . ssd_i  -  dt_i (x_i . dxs_i)  [+ <dH_c, Hout_c> at i = last]
 * where ssd_i = y_i - D x_i is the SSD output and Hout_c = Hprev_{c+1}. With
 *   W[i,j] = (dy_i.x_j)(C_i.B_j) exp(cum_i - cum_j) dt_j   (j <= i)
 * the intra-chunk parts are dy_i.ssd_i|intra = sum_j W[i,j] (row sums) and dt_j x_j.dxs_j|intra = sum_i W[i,j]
 * (column sums). Their suffix sums cancel to the pairs that straddle a position, so both are taken from the same
 * W values (ssd_bwd_dc_kernel writes row and column sums): computed apart, with bf16 operands, the rounding of the
 * two would not cancel and ddt would lose most of its digits. The inter-chunk parts, C_i.(exp(cum_i) Hprev^T dy_i)
 * and dt_j exp(cum_last - cum_j) x_j.(dH_c B_j), multiply fp32 states: their products keep ~16 mantissa bits
 * (ssd_gemm32's b_split).
 * cum_i = A sum_{k<=i} dt_k, so
 *   ddt_k += A sum_{i>=k} dcum_i      (a reverse cumsum inside the chunk)
 *   dA_log = dA A = sum_i dcum_i cum_i                        (ssd_bwd_dt_kernel)
 * then ddt_raw = ddt sigmoid(dt_raw + dt_bias), d_dt_bias += sum ddt_raw, d_D += sum x.dy.
 * dB, dC of a group are the sums over its heads: each head writes its own float copy to the workspace and
 * ssd_bwd_group_sum_kernel adds them in head order. Parameter gradients: per-(b,h,chunk) partials, then
 * ssd_bwd_param_sum_kernel adds them in a fixed order. No atomics: two runs are bitwise identical.
 *
 * Implementations of these kernels (timings in dev/cuda/NOTES_ssd.md): version 11 (the bf16 build's default) is
 * version 9 with the forward scan's global loads all issued in its prologue (ssd6_scan_fwd_kernel with V11: every
 * j tile's cum / dt factors built once, the fp32 Hprev loads all in flight before any conversion; the same
 * arithmetic, bitwise version 9's y; see "version 11" above that kernel; version 10 runs as version 9); version 9 is
 * version 8 with the per-element exp(cum_i - cum_j) of the off-diagonal score tiles factored as
 * exp(cum_i - cref) exp(cref - cum_j), cref = cum of the j tile's last row, both arguments <= 0 (the forward scan,
 * ssd6_scan_fwd_kernel with V9, and the backward col kernel, ssd4_bwd_col_kernel with V9; see "version 9" at the
 * first); version 8 is version 7 with the backward's two row-tile kernels reorganized (ssd4_bwd_col_kernel /
 * ssd4_bwd_dc_kernel with V8: see "version 8" above those kernels); version 7 is version 6 with the chunk-state
 * products and the state pass over chunks fused into one kernel per direction (ssd7_state_scan_kernel: the running
 * state stays in registers, S_c never goes through global memory; where P % 64 == 0, Q % 64 == 0 and
 * B H P N / (64 NS) blocks fill the GPU, else version 6's kernels); version 6 is version 5 with two heads of a
 * group per forward block (ssd6_scan_fwd_kernel: the C_i, B_j tiles and S = C_i B_j^T shared by the two heads;
 * P = 64, H/G even, else version 5's forward); version 5 is version 4 with the forward chunk scan on Hopper's
 * wgmma (ssd5_scan_fwd_kernel, sm_90a, llmc/wgmma.cuh); version 4 is version 3 with the heads of a group looped
 * in the backward; and:
 * - version 3 (the base of versions 4 and 5; "version 3" below): 64-row tiles, bf16 operands in shared memory read with
 *   ldmatrix, accumulators in registers, score tiles repacked in registers as the next product's operand,
 *   B_j . C_i made once per group for the backward, per-head dB/dC partials in bf16. Needs P, N multiples of 16 and
 *   16-byte aligned rows (ssd_use_v3); 1.5 ms forward+backward at B=8, T=2048, H=24, P=64, N=128 on an H100.
 * - version 2 (the fp32 build, and any shape version 3 does not take): 32-row tiles; every product goes through
 *   ssd_gemm32: tensor cores (mma.sync m16n8k16, bf16 operands, fp32 accumulation in shared memory) in the bf16
 *   build, fp32 dot products with -DENABLE_FP32 (version 1 in dev/cuda/ssd.cu is the all-fp32 CUDA-core form).
 * Both: any P, N <= 128, G dividing H, 16 <= Q <= 256, T any length (the last chunk may be partial).
 */
#ifndef MAMBA2_SSD_CUH
#define MAMBA2_SSD_CUH

#include <stdint.h>
#include "cuda_common.h"

#define SSD_TILE 32        /* chunk rows per tile */
#define SSD_THREADS 256    /* threads of the tile kernels: 8 warps */
#define SSD_MAXD 128       /* largest P and N: the per-thread views of a tile (SSD_ROW/SSD_COL) span 128 columns */

/* ------------------------------------------------------------------------------------------------------------ */
/* sizes and the layout of the saved and workspace buffers */

__host__ __device__ static inline int ssd_nchunks(int T, int Q) { return CEIL_DIV(T, Q); }

typedef struct {
    float* dt;      /* (B, H, T) softplus'd dt */
    float* cum;     /* (B, H, T) chunk-local inclusive cumsum of dt*A */
    float* states;  /* (B, nchunks, H, P, N) state entering each chunk */
} SSDSaved;

static inline size_t ssd_saved_bytes(int B, int T, int H, int P, int N, int Q) {
    return (2 * (size_t)B * H * T + (size_t)B * ssd_nchunks(T, Q) * H * P * N) * sizeof(float);
}
static inline SSDSaved ssd_saved_layout(void* saved, int B, int T, int H, int P, int N, int Q) {
    SSDSaved s;
    s.dt = (float*)saved;
    s.cum = s.dt + (size_t)B * H * T;
    s.states = s.cum + (size_t)B * H * T;
    (void)P; (void)N; (void)Q;
    return s;
}

typedef struct {
    float* dstates;  /* (B, nchunks, H, P, N) first sum_i exp(cum_i) dy_i C_i^T, then dH_c */
    float* dotp;     /* (B, H, nchunks, nsplit) partial <dH_c, Hout_c> */
    float* dB_h;     /* (B, T, H, N) per-head dB (version 3: floatX, in the first half of the region) */
    float* dC_h;     /* (B, T, H, N) per-head dC (likewise) */
    float* roww;     /* (B, H, T) dy_i . ssd_i */
    float* xdxs;     /* (B, H, T) x_i . dxs_i */
    float* xdy;      /* (B, H, T) x_i . dy_i */
    float* xdxs_st;  /* (B, H, T) x_i . (state part of dxs_i) */
    float* colw;     /* (B, H, nchunks, ntile, Q) column sums over one 32-row tile i of W[i, j] */
    float* part;     /* (3, B, H, nchunks) per-chunk partials of d_dt_bias, d_A_log, d_D */
    float* bct;      /* (B, nchunks, G, Q, Q) version 3: [j][i] = B_j . C_i inside a chunk, for all heads of g */
} SSDWork;

static inline int ssd_nsplit(int P, int N) { return CEIL_DIV(P * N, SSD_THREADS); }
/* floats of the colw region per (b, h, chunk): version 2's per-32-row-tile column sums (ceil(Q/32) x Q), or
   version 3's full column sums (Q, as (B, H, T) at the region's start) and per-64-row-tile row sums
   (ceil(Q/64) x Q, after the B*H*nchunks*Q floats of the first) */
static inline size_t ssd_colw_len(int Q) {
    size_t v2 = (size_t)CEIL_DIV(Q, SSD_TILE) * Q, v3 = (size_t)(1 + CEIL_DIV(Q, 64)) * Q;
    return v2 > v3 ? v2 : v3;
}

static inline size_t ssd_workspace_bytes(int B, int T, int H, int P, int N, int G, int Q) {
    (void)G;
    size_t nch = ssd_nchunks(T, Q);
    size_t n = (size_t)B * nch * H * P * N + (size_t)B * H * nch * ssd_nsplit(P, N) + 2 * (size_t)B * T * H * N +
               4 * (size_t)B * H * T + (size_t)B * H * nch * ssd_colw_len(Q) + 3 * (size_t)B * H * nch +
               (size_t)B * nch * G * Q * Q;
    return n * sizeof(float);
}
static inline SSDWork ssd_work_layout(void* ws, int B, int T, int H, int P, int N, int G, int Q) {
    SSDWork w;
    size_t nch = ssd_nchunks(T, Q);
    w.dstates = (float*)ws;
    w.dotp = w.dstates + (size_t)B * nch * H * P * N;
    w.dB_h = w.dotp + (size_t)B * H * nch * ssd_nsplit(P, N);
    w.dC_h = w.dB_h + (size_t)B * T * H * N;
    w.roww = w.dC_h + (size_t)B * T * H * N;
    w.xdxs = w.roww + (size_t)B * H * T;
    w.xdy = w.xdxs + (size_t)B * H * T;
    w.xdxs_st = w.xdy + (size_t)B * H * T;
    w.colw = w.xdxs_st + (size_t)B * H * T;
    w.part = w.colw + (size_t)B * H * nch * ssd_colw_len(Q);
    w.bct = w.part + 3 * (size_t)B * H * nch;
    (void)G;
    return w;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* device helpers */

__device__ static inline float ssd_softplus(float v) { return v > 20.f ? v : log1pf(expf(v)); }
__device__ static inline float ssd_sigmoid(float v) { return 1.f / (1.f + expf(-v)); }

/* index of the state (P,N) block of (b, chunk c, head h) in a (B, nchunks, H, P, N) buffer */
__device__ static inline size_t ssd_state_off(int b, int c, int h, int nch, int H, int PN) {
    return (((size_t)b * nch + c) * H + h) * PN;
}

/* load 32 rows of `ncols` floatX columns starting at row r0 of a row-major matrix into shared memory with row
   stride ld (ncols + 1: the +1 keeps column walks across rows free of bank conflicts); rows past nvalid are 0.
   16-byte loads where the layout allows (it does for the model's shapes), so few loads are in flight per tile. */
__device__ static inline void ssd_load_rows(float* dst, int ld, const floatX* src, size_t src_stride, int r0,
                                            int nvalid, int ncols) {
    const int VEC = 16 / (int)sizeof(floatX);
    if (ncols % VEC == 0 && src_stride % VEC == 0 && ((uintptr_t)src) % 16 == 0) {
        int nv = ncols / VEC;
#pragma unroll 4
        for (int idx = threadIdx.x; idx < SSD_TILE * nv; idx += blockDim.x) {
            int r = idx / nv, v = idx % nv;
            float4 raw = make_float4(0.f, 0.f, 0.f, 0.f);
            if (r0 + r < nvalid) raw = *(const float4*)(src + (size_t)(r0 + r) * src_stride + v * VEC);
            const floatX* e = (const floatX*)&raw;
#pragma unroll
            for (int k = 0; k < VEC; k++) dst[r * ld + v * VEC + k] = toF(e[k]);
        }
        return;
    }
    for (int idx = threadIdx.x; idx < SSD_TILE * ncols; idx += blockDim.x) {
        int r = idx / ncols, col = idx % ncols;
        dst[r * ld + col] = (r0 + r < nvalid) ? toF(src[(size_t)(r0 + r) * src_stride + col]) : 0.f;
    }
}

/* the transposed 32-column slice [c0, c0+32) of a (R, Cn) float matrix: dst[cc * ld + r] = m[r, c0 + cc] */
__device__ static inline void ssd_load_cols_T(float* dst, int ld, const float* m, int R, int Cn, int c0) {
    if (Cn % 4 == 0) {
#pragma unroll 4
        for (int idx = threadIdx.x; idx < (SSD_TILE / 4) * R; idx += blockDim.x) {
            int v = idx % (SSD_TILE / 4), r = idx / (SSD_TILE / 4), cc = 4 * v;
            float4 q = make_float4(0.f, 0.f, 0.f, 0.f);
            if (c0 + cc < Cn) q = *(const float4*)(m + (size_t)r * Cn + c0 + cc);
            dst[cc * ld + r] = q.x; dst[(cc + 1) * ld + r] = q.y; dst[(cc + 2) * ld + r] = q.z;
            dst[(cc + 3) * ld + r] = q.w;
        }
        return;
    }
    for (int idx = threadIdx.x; idx < SSD_TILE * R; idx += blockDim.x) {
        int cc = idx % SSD_TILE, r = idx / SSD_TILE;
        dst[cc * ld + r] = (c0 + cc < Cn) ? m[(size_t)r * Cn + c0 + cc] : 0.f;
    }
}

/* the 32-row slice [r0, r0+32) of a (R, Cn) float matrix: dst[rr * ld + c] = m[r0 + rr, c] */
__device__ static inline void ssd_load_rows_F(float* dst, int ld, const float* m, int R, int Cn, int r0) {
    if (Cn % 4 == 0) {
        int nv = Cn / 4;
#pragma unroll 4
        for (int idx = threadIdx.x; idx < SSD_TILE * nv; idx += blockDim.x) {
            int rr = idx / nv, c = 4 * (idx % nv);
            float4 q = make_float4(0.f, 0.f, 0.f, 0.f);
            if (r0 + rr < R) q = *(const float4*)(m + (size_t)(r0 + rr) * Cn + c);
            dst[rr * ld + c] = q.x; dst[rr * ld + c + 1] = q.y; dst[rr * ld + c + 2] = q.z; dst[rr * ld + c + 3] = q.w;
        }
        return;
    }
    for (int idx = threadIdx.x; idx < SSD_TILE * Cn; idx += blockDim.x) {
        int rr = idx / Cn, c = idx % Cn;
        dst[rr * ld + c] = (r0 + rr < R) ? m[(size_t)(r0 + rr) * Cn + c] : 0.f;
    }
}

/* The per-thread view of a 32 x (<=128) tile kept in shared memory: thread t reads rows t/64 + 4k (k < 8) and
   columns t%64 + 64m (m < 2) of it for the element-wise steps (scaling, output writes, row reductions). */
#define SSD_ROW(k) ((int)(threadIdx.x / 64) + 4 * (k))
#define SSD_COL(m) ((int)(threadIdx.x % 64) + 64 * (m))

#if !defined(ENABLE_FP32)
/* two floats to one register of two bf16, the lower index in the low half (the mma fragment order) */
__device__ static inline uint32_t ssd_pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t*)&v;
}
/* d (16x8 fp32) += a (16x16 bf16, row-major) b (16x8 bf16, column-major) on the tensor cores */
__device__ static inline void ssd_mma_bf16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

#if !defined(ENABLE_FP32)
/* ssd_gemm32 for the common layouts, with nothing to bound-check: A(r, k) = A[r*lda + k], K % 16 == 0, W % 8 == 0,
   and Bm(k, c) = Bm[c*ldb + k] (B_T) or Bm[k*ldb + c]. Fewer address computations per mma than the general path. */
template <bool B_T>
__device__ static inline void ssd_gemm32_fast(float* out, int o_ld, int accumulate, const float* A, int lda,
                                              const float* Bm, int ldb, int K, int W, int b_split) {
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gr = lane / 4, gc = (lane % 4) * 2;
    int ntiles = 2 * (W / 8);
    for (int tile = warp; tile < ntiles; tile += blockDim.x / 32) {
        int ra = (tile & 1) * 16 + gr, c0 = (tile >> 1) * 8, ca = c0 + gc, nb = c0 + gr;
        const float* a0 = A + ra * lda + gc;
        const float* a1 = a0 + 8 * lda;
        const float* bp = B_T ? Bm + nb * ldb + gc : Bm + gc * ldb + nb;
        float* o0 = out + ra * o_ld + ca;
        float* o1 = o0 + 8 * o_ld;
        float d[4] = {0.f, 0.f, 0.f, 0.f};
        if (accumulate) { d[0] = o0[0]; d[1] = o0[1]; d[2] = o1[0]; d[3] = o1[1]; }
#pragma unroll 2
        for (int k0 = 0; k0 < K; k0 += 16) {
            uint32_t a[4], bb[2];
            a[0] = ssd_pack_bf16(a0[k0], a0[k0 + 1]);
            a[1] = ssd_pack_bf16(a1[k0], a1[k0 + 1]);
            a[2] = ssd_pack_bf16(a0[k0 + 8], a0[k0 + 9]);
            a[3] = ssd_pack_bf16(a1[k0 + 8], a1[k0 + 9]);
            float b0, b1, b2, b3;
            if (B_T) { b0 = bp[k0]; b1 = bp[k0 + 1]; b2 = bp[k0 + 8]; b3 = bp[k0 + 9]; }
            else { b0 = bp[k0 * ldb]; b1 = bp[(k0 + 1) * ldb]; b2 = bp[(k0 + 8) * ldb]; b3 = bp[(k0 + 9) * ldb]; }
            bb[0] = ssd_pack_bf16(b0, b1);
            bb[1] = ssd_pack_bf16(b2, b3);
            ssd_mma_bf16(d, a, bb);
            if (b_split) {
                bb[0] = ssd_pack_bf16(b0 - __bfloat162float(__float2bfloat16_rn(b0)),
                                      b1 - __bfloat162float(__float2bfloat16_rn(b1)));
                bb[1] = ssd_pack_bf16(b2 - __bfloat162float(__float2bfloat16_rn(b2)),
                                      b3 - __bfloat162float(__float2bfloat16_rn(b3)));
                ssd_mma_bf16(d, a, bb);
            }
        }
        o0[0] = d[0]; o0[1] = d[1]; o1[0] = d[2]; o1[1] = d[3];
    }
}
#endif

/* out (32 x W, row stride o_ld, shared) = [out +] sum_{k<K} A(r, k) Bm(k, c), with A(r, k) = A[r*a_rs + k*a_ks]
   and Bm(k, c) = Bm[k*b_ks + c*b_cs], all in shared memory as float (the strides express the transposes).
   Called by all threads of the block; the caller puts the barriers around it.
   bf16 build: 16x8 output tiles spread over the 8 warps, m16n8k16 mma.sync with bf16 operands (rounded from the
   float staging copy) and fp32 accumulation. A must hold bf16-exact values (inputs) or tolerate bf16 rounding;
   b_split = 1 for an fp32 B (states): it is split into two bf16 terms, so the product keeps ~16 mantissa bits. fp32 build (ENABLE_FP32): plain fp32 dot products. */
__device__ static inline void ssd_gemm32(float* out, int o_ld, int accumulate, const float* A, int a_rs, int a_ks,
                                         const float* Bm, int b_ks, int b_cs, int K, int W, int b_split = 0) {
#if defined(ENABLE_FP32)
    (void)b_split;
    for (int idx = threadIdx.x; idx < SSD_TILE * W; idx += blockDim.x) {
        int r = idx / W, c = idx % W;
        float s = accumulate ? out[r * o_ld + c] : 0.f;
        for (int k = 0; k < K; k++) s += A[r * a_rs + k * a_ks] * Bm[k * b_ks + c * b_cs];
        out[r * o_ld + c] = s;
    }
#else
    if (a_ks == 1 && K % 16 == 0 && W % 8 == 0 && (b_ks == 1 || b_cs == 1)) {
        if (b_ks == 1) ssd_gemm32_fast<true>(out, o_ld, accumulate, A, a_rs, Bm, b_cs, K, W, b_split);
        else ssd_gemm32_fast<false>(out, o_ld, accumulate, A, a_rs, Bm, b_ks, K, W, b_split);
        return;
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gr = lane / 4, gc = (lane % 4) * 2;
    int ntiles = 2 * CEIL_DIV(W, 8);
    for (int tile = warp; tile < ntiles; tile += blockDim.x / 32) {
        int ra = (tile % 2) * 16 + gr, rb = ra + 8, c0 = (tile / 2) * 8, ca = c0 + gc, nb = c0 + gr;
        float d[4];
        d[0] = accumulate && ca < W ? out[ra * o_ld + ca] : 0.f;
        d[1] = accumulate && ca + 1 < W ? out[ra * o_ld + ca + 1] : 0.f;
        d[2] = accumulate && ca < W ? out[rb * o_ld + ca] : 0.f;
        d[3] = accumulate && ca + 1 < W ? out[rb * o_ld + ca + 1] : 0.f;
        for (int k0 = 0; k0 < K; k0 += 16) {
            int ka = k0 + gc, kb = ka + 8;
#define SSD_AGET(r, k) ((k) < K ? A[(r) * a_rs + (k) * a_ks] : 0.f)
#define SSD_BGET(k, c) ((k) < K && (c) < W ? Bm[(k) * b_ks + (c) * b_cs] : 0.f)
            uint32_t a[4], bb[2];
            a[0] = ssd_pack_bf16(SSD_AGET(ra, ka), SSD_AGET(ra, ka + 1));
            a[1] = ssd_pack_bf16(SSD_AGET(rb, ka), SSD_AGET(rb, ka + 1));
            a[2] = ssd_pack_bf16(SSD_AGET(ra, kb), SSD_AGET(ra, kb + 1));
            a[3] = ssd_pack_bf16(SSD_AGET(rb, kb), SSD_AGET(rb, kb + 1));
            float b0 = SSD_BGET(ka, nb), b1 = SSD_BGET(ka + 1, nb), b2 = SSD_BGET(kb, nb), b3 = SSD_BGET(kb + 1, nb);
#undef SSD_AGET
#undef SSD_BGET
            bb[0] = ssd_pack_bf16(b0, b1);
            bb[1] = ssd_pack_bf16(b2, b3);
            ssd_mma_bf16(d, a, bb);
            if (b_split) {  /* fp32 B = hi + lo in bf16: the second product adds what rounding B to bf16 lost */
                bb[0] = ssd_pack_bf16(b0 - __bfloat162float(__float2bfloat16_rn(b0)),
                                      b1 - __bfloat162float(__float2bfloat16_rn(b1)));
                bb[1] = ssd_pack_bf16(b2 - __bfloat162float(__float2bfloat16_rn(b2)),
                                      b3 - __bfloat162float(__float2bfloat16_rn(b3)));
                ssd_mma_bf16(d, a, bb);
            }
        }
        if (ca < W) { out[ra * o_ld + ca] = d[0]; out[rb * o_ld + ca] = d[2]; }
        if (ca + 1 < W) { out[ra * o_ld + ca + 1] = d[1]; out[rb * o_ld + ca + 1] = d[3]; }
    }
#endif
}

/* sum a per-row value over the 64 threads that share each row; red is 8 warps x 8 floats of shared memory.
   Returns the full sum for row `lane` (< 32) in threads 0..31. Ends with the block in step. */
__device__ static inline float ssd_row_reduce(float v[8], float* red) {
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        float s = warp_reduce_sum(v[k]);
        if (lane == 0) red[warp * 8 + k] = s;
    }
    __syncthreads();
    float out = 0.f;
    if (threadIdx.x < 32) {
        int row = threadIdx.x, r0 = row % 4, k = row / 4;  /* row = r0 + 4k lives in warps 2*r0, 2*r0+1 */
        out = red[(2 * r0) * 8 + k] + red[(2 * r0 + 1) * 8 + k];
    }
    __syncthreads();
    return out;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* forward kernels */

/* dt = softplus(dt_raw + dt_bias), cum = chunk-local inclusive cumsum of dt*A. One warp per (chunk, b*H+h). */
__global__ static void ssd_dt_cumsum_kernel(float* dt_out, float* cum_out, const floatX* dt_raw, int dt_stride,
                                            const float* dt_bias, const float* A_log, int T, int H, int Q) {
    int c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, lane = threadIdx.x;
    int t0 = c * Q, len = min(Q, T - t0);
    float A = -expf(A_log[h]), bias = dt_bias[h], carry = 0.f;
    for (int base = 0; base < len; base += 32) {
        int i = base + lane;
        float dt = 0.f;
        if (i < len) dt = ssd_softplus(toF(dt_raw[(size_t)(b * T + t0 + i) * dt_stride + h]) + bias);
        float v = dt * A;
        for (int o = 1; o < 32; o <<= 1) {
            float u = __shfl_up_sync(0xffffffffu, v, o);
            if (lane >= o) v += u;
        }
        v += carry;
        if (i < len) {
            dt_out[(size_t)bh * T + t0 + i] = dt;
            cum_out[(size_t)bh * T + t0 + i] = v;
        }
        carry = __shfl_sync(0xffffffffu, v, 31);
    }
}

/* out[p, n] = sum_{j in chunk} U_j[p] w_j V_j[n] for one (chunk, b, h), a 64x64 tile of (P, N) per block.
   mode 0 (chunk state):      U = x, V = B, w_j = dt_j exp(cum_last - cum_j)
   mode 1 (backward dstate):  U = dy, V = C, w_j = exp(cum_j)
   U columns start at h*P of rows of stride u_stride; V columns at v_col0 + g*N of rows of stride v_stride. */
__global__ static void __launch_bounds__(SSD_THREADS)
ssd_chunk_outer_kernel(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0,
                       const float* dt, const float* cum, int mode, int T, int H, int P, int N, int G, int Q) {
    __shared__ float Us[SSD_TILE][64], Vs[SSD_TILE][64], w_s[SSD_TILE];
    int nch = ssd_nchunks(T, Q), c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int ptiles = CEIL_DIV(P, 64), p0 = (blockIdx.z % ptiles) * 64, n0 = (blockIdx.z / ptiles) * 64;
    int t0 = c * Q, len = min(Q, T - t0);
    const float* dtc = dt + (size_t)bh * T + t0;
    const float* cumc = cum + (size_t)bh * T + t0;
    float cum_last = cumc[len - 1];
    const floatX* Ub = U + (size_t)b * T * u_stride + (size_t)t0 * u_stride + h * P + p0;
    const floatX* Vb = V + (size_t)b * T * v_stride + (size_t)t0 * v_stride + v_col0 + g * N + n0;
    int tn = threadIdx.x % 16, tp = threadIdx.x / 16;  /* n fastest: coalesced stores */
    float acc[4][4] = {{0.f}};
    for (int j0 = 0; j0 < len; j0 += SSD_TILE) {
        __syncthreads();
        if (threadIdx.x < SSD_TILE) {
            int j = j0 + threadIdx.x;
            float w = 0.f;
            if (j < len) w = mode == 0 ? dtc[j] * expf(cum_last - cumc[j]) : expf(cumc[j]);
            w_s[threadIdx.x] = w;
        }
        __syncthreads();
        for (int idx = threadIdx.x; idx < SSD_TILE * 64; idx += SSD_THREADS) {
            int jj = idx / 64, col = idx % 64, j = j0 + jj;
            Us[jj][col] = (j < len && p0 + col < P) ? toF(Ub[(size_t)j * u_stride + col]) * w_s[jj] : 0.f;
            Vs[jj][col] = (j < len && n0 + col < N) ? toF(Vb[(size_t)j * v_stride + col]) : 0.f;
        }
        __syncthreads();
        for (int jj = 0; jj < SSD_TILE; jj++) {
            float a[4], bv[4];
#pragma unroll
            for (int k = 0; k < 4; k++) { a[k] = Us[jj][tp + 16 * k]; bv[k] = Vs[jj][tn + 16 * k]; }
#pragma unroll
            for (int k = 0; k < 4; k++)
#pragma unroll
                for (int l = 0; l < 4; l++) acc[k][l] += a[k] * bv[l];
        }
    }
    float* o = out + ssd_state_off(b, c, h, nch, H, P * N);
#pragma unroll
    for (int k = 0; k < 4; k++)
#pragma unroll
        for (int l = 0; l < 4; l++) {
            int p = p0 + tp + 16 * k, n = n0 + tn + 16 * l;
            if (p < P && n < N) o[(size_t)p * N + n] = acc[k][l];
        }
}

/* Forward state pass over chunks, in place: states[c] holds S_c on entry and Hprev_c on exit.
   One thread per state element (p, n) of one (b, h). */
__global__ static void ssd_state_pass_kernel(float* states, float* final_state, const float* init_state,
                                             const float* cum, int T, int H, int PN, int Q) {
    int nch = ssd_nchunks(T, Q), bh = blockIdx.x, b = bh / H, h = bh % H;
    int e = blockIdx.y * blockDim.x + threadIdx.x;
    if (e >= PN) return;
    float run = init_state ? init_state[(size_t)bh * PN + e] : 0.f;
    float s_next = states[ssd_state_off(b, 0, h, nch, H, PN) + e];
    for (int c = 0; c < nch; c++) {
        size_t idx = ssd_state_off(b, c, h, nch, H, PN) + e;
        float s = s_next;  /* the next chunk's load is issued before this chunk's store: one latency, not two */
        if (c + 1 < nch) s_next = states[ssd_state_off(b, c + 1, h, nch, H, PN) + e];
        states[idx] = run;
        int tl = min(T, (c + 1) * Q) - 1;
        run = expf(cum[(size_t)bh * T + tl]) * run + s;
    }
    if (final_state) final_state[(size_t)bh * PN + e] = run;
}

/* dynamic shared memory of a row-tile kernel with nN tiles (32, N+1), nP tiles (32, P+1), two (32, 33) products
   and small vectors: only what each kernel lays out, so that more blocks fit on a multiprocessor */
static inline size_t ssd_tile_smem_bytes(int P, int N, int nN, int nP) {
    return (size_t)(nN * SSD_TILE * (N + 1) + nP * SSD_TILE * (P + 1) + 2 * SSD_TILE * 33 + 4 * SSD_TILE + 64) *
           sizeof(float);
}

/* y for 32 rows i of one chunk of one (b, h): inter-chunk term first, then the masked intra-chunk product. */
__global__ static void __launch_bounds__(SSD_THREADS)
ssd_chunk_scan_fwd_kernel(floatX* y, const floatX* xbc, int xbc_stride, const float* dt, const float* cum,
                          const float* states, const float* Dskip, int T, int H, int P, int N, int G, int Q) {
    extern __shared__ float sm[];
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE);
    int c = blockIdx.x / ntile, rt = blockIdx.x % ntile, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD_TILE;
    if (i0 >= len) return;
    int E = H * P, ldn = N + 1, ldp = P + 1;
    float* Cs = sm;                        /* (32, N+1) C rows i */
    float* Bs = Cs + SSD_TILE * ldn;       /* (32, N+1) B rows j */
    float* Xs = Bs + SSD_TILE * ldn;       /* (32, P+1) x rows j, or a transposed slice of Hprev */
    float* Acc = Xs + SSD_TILE * ldp;      /* (32, P+1) y accumulator */
    float* Ms = Acc + SSD_TILE * ldp;      /* (32, 33) masked, decayed C B^T dt */
    float* cum_i = Ms + 2 * SSD_TILE * 33;
    float* cum_j = cum_i + SSD_TILE;
    float* dt_j = cum_j + SSD_TILE;
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    ssd_load_rows(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
    if (threadIdx.x < SSD_TILE) cum_i[threadIdx.x] = i0 + (int)threadIdx.x < len ? cumc[i0 + threadIdx.x] : 0.f;
    /* inter-chunk: y_i = exp(cum_i) sum_n C_i[n] Hprev[p, n] */
    const float* Hp = states + ssd_state_off(b, c, h, nch, H, P * N);
    for (int n0 = 0; n0 < N; n0 += SSD_TILE) {
        __syncthreads();
        ssd_load_cols_T(Xs, ldp, Hp, P, N, n0);
        __syncthreads();
        ssd_gemm32(Acc, ldp, n0 > 0, Cs + n0, ldn, 1, Xs, ldp, 1, min(SSD_TILE, N - n0), P, 1);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < SSD_TILE * P; idx += SSD_THREADS) {
        int r = idx / P, p = idx % P;
        Acc[r * ldp + p] *= expf(cum_i[r]);
    }
    /* intra-chunk: y_i += sum_{j<=i} (C_i.B_j) exp(cum_i - cum_j) dt_j x_j */
    for (int j0 = 0; j0 <= i0; j0 += SSD_TILE) {
        __syncthreads();
        ssd_load_rows(Bs, ldn, rows + E + g * N, xbc_stride, j0, len, N);
        ssd_load_rows(Xs, ldp, rows + h * P, xbc_stride, j0, len, P);
        if (threadIdx.x < SSD_TILE) {
            int j = j0 + threadIdx.x;
            cum_j[threadIdx.x] = j < len ? cumc[j] : 0.f;
            dt_j[threadIdx.x] = j < len ? dtc[j] : 0.f;
        }
        __syncthreads();
        ssd_gemm32(Ms, 33, 0, Cs, ldn, 1, Bs, 1, ldn, N, SSD_TILE);  /* Ms[i][j] = C_i . B_j */
        __syncthreads();
        for (int idx = threadIdx.x; idx < SSD_TILE * SSD_TILE; idx += SSD_THREADS) {
            int i = idx / SSD_TILE, jj = idx % SSD_TILE;
            bool valid = j0 + jj <= i0 + i && i0 + i < len;
            Ms[i * 33 + jj] = valid ? Ms[i * 33 + jj] * expf(cum_i[i] - cum_j[jj]) * dt_j[jj] : 0.f;
        }
        __syncthreads();
        ssd_gemm32(Acc, ldp, 1, Ms, 33, 1, Xs, ldp, 1, SSD_TILE, P);
    }
    __syncthreads();
    float Dh = Dskip[h];
    for (int idx = threadIdx.x; idx < SSD_TILE * P; idx += SSD_THREADS) {
        int r = idx / P, p = idx % P, i = i0 + r;
        if (i >= len) continue;
        float xv = toF(rows[(size_t)i * xbc_stride + h * P + p]);
        y[(size_t)(b * T + t0 + i) * E + h * P + p] = fromF(Acc[r * ldp + p] + Dh * xv);
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* backward kernels */

/* Reverse state pass, in place: dstates[c] holds sum_i exp(cum_i) dy_i C_i^T on entry and dH_c on exit.
   Also writes this block's part of <dH_c, Hout_c> (Hout_c = Hprev_{c+1}) to dotp[(bh, c, blockIdx.y)]. */
__global__ static void __launch_bounds__(SSD_THREADS)
ssd_dstate_pass_kernel(float* dstates, float* dotp, const float* states, const float* cum, int T, int H, int PN,
                       int Q) {
    __shared__ float red[SSD_THREADS / 32];
    int nch = ssd_nchunks(T, Q), bh = blockIdx.x, b = bh / H, h = bh % H, nsplit = gridDim.y;
    int e = blockIdx.y * SSD_THREADS + threadIdx.x;
    float dH = 0.f, sb_next = 0.f, hout_next = 0.f;  /* loads for the next chunk are issued a chunk ahead */
    if (e < PN) sb_next = dstates[ssd_state_off(b, nch - 1, h, nch, H, PN) + e];
    for (int c = nch - 1; c >= 0; c--) {
        size_t idx = ssd_state_off(b, c, h, nch, H, PN) + e;
        float sb = sb_next, hout = hout_next, v = 0.f;
        if (e < PN) {
            if (c > 0) {
                sb_next = dstates[ssd_state_off(b, c - 1, h, nch, H, PN) + e];
                hout_next = states[idx];  /* Hout_{c-1} = Hprev_c */
            }
            dstates[idx] = dH;
            if (c + 1 < nch) v = dH * hout;
        }
        v = warp_reduce_sum(v);
        if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
        __syncthreads();
        if (threadIdx.x == 0) {
            float s = 0.f;
            for (int w = 0; w < SSD_THREADS / 32; w++) s += red[w];
            dotp[((size_t)bh * nch + c) * nsplit + blockIdx.y] = s;
        }
        __syncthreads();
        int tl = min(T, (c + 1) * Q) - 1;
        dH = expf(cum[(size_t)bh * T + tl]) * dH + sb;
    }
}

/* For 32 rows j of one chunk of one (b, h): dx_j (written into dxbc), the per-head dB_j (float workspace),
   x_j.dxs_j and x_j.dy_j. State terms first (they need dH_c), then the intra-chunk sums over i >= j. */
__global__ static void __launch_bounds__(SSD_THREADS)
ssd_bwd_dx_db_kernel(floatX* dxbc, float* dB_h, float* xdxs, float* xdxs_st, float* xdy, const floatX* dy,
                     const floatX* xbc,
                     int xbc_stride, const float* dt, const float* cum, const float* dstates, const float* Dskip,
                     int T, int H, int P, int N, int G, int Q) {
    extern __shared__ float sm[];
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE);
    int c = blockIdx.x / ntile, rt = blockIdx.x % ntile, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), j0 = rt * SSD_TILE;
    if (j0 >= len) return;
    int E = H * P, ldn = N + 1, ldp = P + 1;
    float* Bs = sm;                       /* (32, N+1) B rows j */
    float* Cs = Bs + SSD_TILE * ldn;      /* (32, N+1) C rows i, or a row slice of dH */
    float* AB = Cs + SSD_TILE * ldn;      /* (32, N+1) dB_j / dt_j accumulator */
    float* Xs = AB + SSD_TILE * ldn;      /* (32, P+1) x rows j */
    float* Ys = Xs + SSD_TILE * ldp;      /* (32, P+1) dy rows i, or a transposed slice of dH */
    float* AX = Ys + SSD_TILE * ldp;      /* (32, P+1) dxs_j accumulator */
    float* CBL = AX + SSD_TILE * ldp;     /* (32, 33) [j][i] (C_i.B_j) exp(cum_i - cum_j) */
    float* WD = CBL + SSD_TILE * 33;      /* (32, 33) [j][i] (dy_i.x_j) exp(cum_i - cum_j) */
    float* cum_j = WD + SSD_TILE * 33;
    float* dt_j = cum_j + SSD_TILE;
    float* cum_i = dt_j + SSD_TILE;
    float* red = cum_i + SSD_TILE;        /* 64 floats */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* dyrows = dy + (size_t)(b * T + t0) * E + h * P;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    ssd_load_rows(Bs, ldn, rows + E + g * N, xbc_stride, j0, len, N);
    ssd_load_rows(Xs, ldp, rows + h * P, xbc_stride, j0, len, P);
    if (threadIdx.x < SSD_TILE) {
        int j = j0 + threadIdx.x;
        cum_j[threadIdx.x] = j < len ? cumc[j] : 0.f;
        dt_j[threadIdx.x] = j < len ? dtc[j] : 0.f;
    }
    float cum_last = cumc[len - 1];
    const float* dH = dstates + ssd_state_off(b, c, h, nch, H, P * N);
    /* state terms: dxs_j = dH B_j, dB_j/dt_j = dH^T x_j, both times exp(cum_last - cum_j) */
    for (int n0 = 0; n0 < N; n0 += SSD_TILE) {
        __syncthreads();
        ssd_load_cols_T(Ys, ldp, dH, P, N, n0);
        __syncthreads();
        ssd_gemm32(AX, ldp, n0 > 0, Bs + n0, ldn, 1, Ys, ldp, 1, min(SSD_TILE, N - n0), P, 1);
    }
    for (int p0 = 0; p0 < P; p0 += SSD_TILE) {
        __syncthreads();
        ssd_load_rows_F(Cs, ldn, dH, P, N, p0);
        __syncthreads();
        ssd_gemm32(AB, ldn, p0 > 0, Xs + p0, ldp, 1, Cs, ldn, 1, min(SSD_TILE, P - p0), N, 1);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < SSD_TILE * (P + N); idx += SSD_THREADS) {
        int r = idx / (P + N), col = idx % (P + N);
        float e = j0 + r < len ? expf(cum_last - cum_j[r]) : 0.f;
        if (col < P) AX[r * ldp + col] *= e; else AB[r * ldn + col - P] *= e;
    }
    __syncthreads();
    {   /* x_j . (state part of dxs_j): the log-decay gradient needs it apart from the intra-chunk part */
        float ps[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int r = SSD_ROW(k);
            ps[k] = 0.f;
#pragma unroll
            for (int m = 0; m < 2; m++)
                if (SSD_COL(m) < P) ps[k] += Xs[r * ldp + SSD_COL(m)] * AX[r * ldp + SSD_COL(m)];
        }
        float st = ssd_row_reduce(ps, red);
        if (threadIdx.x < SSD_TILE && j0 + (int)threadIdx.x < len) xdxs_st[(size_t)bh * T + t0 + j0 + threadIdx.x] = st;
    }
    /* intra-chunk: sums over i >= j */
    for (int i0 = j0; i0 < len; i0 += SSD_TILE) {
        __syncthreads();
        ssd_load_rows(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
        ssd_load_rows(Ys, ldp, dyrows, E, i0, len, P);
        if (threadIdx.x < SSD_TILE) cum_i[threadIdx.x] = i0 + (int)threadIdx.x < len ? cumc[i0 + threadIdx.x] : 0.f;
        __syncthreads();
        ssd_gemm32(CBL, 33, 0, Bs, ldn, 1, Cs, 1, ldn, N, SSD_TILE);  /* [j][i] = B_j . C_i */
        ssd_gemm32(WD, 33, 0, Xs, ldp, 1, Ys, 1, ldp, P, SSD_TILE);   /* [j][i] = x_j . dy_i */
        __syncthreads();
        for (int idx = threadIdx.x; idx < SSD_TILE * SSD_TILE; idx += SSD_THREADS) {
            int j = idx / SSD_TILE, ii = idx % SSD_TILE;
            float L = (i0 + ii >= j0 + j && i0 + ii < len) ? expf(cum_i[ii] - cum_j[j]) : 0.f;
            CBL[j * 33 + ii] *= L;
            WD[j * 33 + ii] *= L;
        }
        __syncthreads();
        ssd_gemm32(AX, ldp, 1, CBL, 33, 1, Ys, ldp, 1, SSD_TILE, P);
        ssd_gemm32(AB, ldn, 1, WD, 33, 1, Cs, ldn, 1, SSD_TILE, N);
    }
    __syncthreads();
    float Dh = Dskip[h], px[8], pd[8];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int r = SSD_ROW(k), j = j0 + r;
        px[k] = 0.f; pd[k] = 0.f;
        if (j >= len) continue;
        float dtv = dt_j[r];
        size_t row = (size_t)(b * T + t0 + j);
#pragma unroll
        for (int m = 0; m < 2; m++) {
            int p = SSD_COL(m);
            if (p < P) {
                float xv = Xs[r * ldp + p], dyv = toF(dyrows[(size_t)j * E + p]), ax = AX[r * ldp + p];
                dxbc[row * xbc_stride + h * P + p] = fromF(dtv * ax + Dh * dyv);
                px[k] += xv * ax;
                pd[k] += xv * dyv;
            }
            if (p < N) dB_h[(row * H + h) * N + p] = AB[r * ldn + p] * dtv;
        }
    }
    float sx = ssd_row_reduce(px, red);
    float sd = ssd_row_reduce(pd, red);
    if (threadIdx.x < SSD_TILE && j0 + (int)threadIdx.x < len) {
        xdxs[(size_t)bh * T + t0 + j0 + threadIdx.x] = sx;
        xdy[(size_t)bh * T + t0 + j0 + threadIdx.x] = sd;
    }
}

/* For 32 rows i of one chunk of one (b, h): the per-head dC_i (float workspace) and dy_i . ssd_i. */
__global__ static void __launch_bounds__(SSD_THREADS)
ssd_bwd_dc_kernel(float* dC_h, float* roww, float* colw, const floatX* dy, const floatX* xbc, int xbc_stride, const float* dt,
                  const float* cum, const float* states, int T, int H, int P, int N, int G, int Q) {
    extern __shared__ float sm[];
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE);
    int c = blockIdx.x / ntile, rt = blockIdx.x % ntile, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD_TILE;
    if (i0 >= len) return;
    int E = H * P, ldn = N + 1, ldp = P + 1;
    float* Cs = sm;                       /* (32, N+1) C rows i */
    float* Bs = Cs + SSD_TILE * ldn;      /* (32, N+1) B rows j, or a row slice of Hprev */
    float* Acc = Bs + SSD_TILE * ldn;     /* (32, N+1) dC accumulator */
    float* Ys = Acc + SSD_TILE * ldn;     /* (32, P+1) dy rows i */
    float* Xs = Ys + SSD_TILE * ldp;      /* (32, P+1) x rows j */
    float* CB = Xs + SSD_TILE * ldp;      /* (32, 33) [i][j] C_i . B_j */
    float* WD = CB + SSD_TILE * 33;       /* (32, 33) [i][j] (dy_i.x_j) exp(cum_i - cum_j) dt_j */
    float* cum_i = WD + SSD_TILE * 33;
    float* cum_j = cum_i + SSD_TILE;
    float* dt_j = cum_j + SSD_TILE;
    float* red = dt_j + SSD_TILE;         /* 64 floats */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* dyrows = dy + (size_t)(b * T + t0) * E + h * P;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    ssd_load_rows(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
    ssd_load_rows(Ys, ldp, dyrows, E, i0, len, P);
    if (threadIdx.x < SSD_TILE) cum_i[threadIdx.x] = i0 + (int)threadIdx.x < len ? cumc[i0 + threadIdx.x] : 0.f;
    const float* Hp = states + ssd_state_off(b, c, h, nch, H, P * N);
    /* inter-chunk: q_i = exp(cum_i) Hprev^T dy_i */
    for (int p0 = 0; p0 < P; p0 += SSD_TILE) {
        __syncthreads();
        ssd_load_rows_F(Bs, ldn, Hp, P, N, p0);
        __syncthreads();
        ssd_gemm32(Acc, ldn, p0 > 0, Ys + p0, ldp, 1, Bs, ldn, 1, min(SSD_TILE, P - p0), N, 1);
    }
    __syncthreads();
    float pw[8];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int r = SSD_ROW(k);
        float e = expf(cum_i[r]);
        pw[k] = 0.f;
#pragma unroll
        for (int m = 0; m < 2; m++) {
            int n = SSD_COL(m);
            if (n < N) {
                float q = Acc[r * ldn + n] * e;
                Acc[r * ldn + n] = q;
                pw[k] += Cs[r * ldn + n] * q;  /* dy_i . y_off_i */
            }
        }
    }
    /* intra-chunk: sums over j <= i; rw accumulates dy_i . y_diag_i for row i = threadIdx.x % 32 */
    float rw = 0.f;
    for (int j0 = 0; j0 <= i0; j0 += SSD_TILE) {
        __syncthreads();
        ssd_load_rows(Bs, ldn, rows + E + g * N, xbc_stride, j0, len, N);
        ssd_load_rows(Xs, ldp, rows + h * P, xbc_stride, j0, len, P);
        if (threadIdx.x < SSD_TILE) {
            int j = j0 + threadIdx.x;
            cum_j[threadIdx.x] = j < len ? cumc[j] : 0.f;
            dt_j[threadIdx.x] = j < len ? dtc[j] : 0.f;
        }
        __syncthreads();
        ssd_gemm32(CB, 33, 0, Cs, ldn, 1, Bs, 1, ldn, N, SSD_TILE);  /* [i][j] = C_i . B_j */
        ssd_gemm32(WD, 33, 0, Ys, ldp, 1, Xs, 1, ldp, P, SSD_TILE);  /* [i][j] = dy_i . x_j */
        __syncthreads();
        for (int q = 0; q < 4; q++) {
            int i = threadIdx.x % SSD_TILE, jj = threadIdx.x / SSD_TILE + 8 * q;
            float wd = 0.f, wv = 0.f;
            if (j0 + jj <= i0 + i && i0 + i < len) {
                wd = WD[i * 33 + jj] * expf(cum_i[i] - cum_j[jj]) * dt_j[jj];
                wv = wd * CB[i * 33 + jj];
                rw += wv;
            }
            WD[i * 33 + jj] = wd;
            /* the column sums of the same W values: the row and column sums then cancel as they should in dcum */
            wv = warp_reduce_sum(wv);
            if (threadIdx.x % 32 == 0 && j0 + jj < len) colw[(((size_t)bh * nch + c) * ntile + rt) * Q + j0 + jj] = wv;
        }
        __syncthreads();
        ssd_gemm32(Acc, ldn, 1, WD, 33, 1, Bs, ldn, 1, SSD_TILE, N);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < SSD_TILE * N; idx += SSD_THREADS) {
        int r = idx / N, n = idx % N, i = i0 + r;
        if (i < len) dC_h[((size_t)(b * T + t0 + i) * H + h) * N + n] = Acc[r * ldn + n];
    }
    float sw = ssd_row_reduce(pw, red);
    /* the 8 threads of row i (one in each warp) hold parts of rw: add them in warp order */
    float* rws = WD;  /* free now: (8, 32) */
    rws[(threadIdx.x / 32) * 32 + threadIdx.x % 32] = rw;
    __syncthreads();
    if (threadIdx.x < SSD_TILE && i0 + (int)threadIdx.x < len) {
        float s = sw;
        for (int w = 0; w < SSD_THREADS / 32; w++) s += rws[w * 32 + threadIdx.x];
        roww[(size_t)bh * T + t0 + i0 + threadIdx.x] = s;
    }
}

/* Per (chunk, b*H+h), one warp: dcum, its reverse cumsum, ddt, ddt_raw; per-chunk partials of the parameter
   gradients (d_dt_bias, d_A_log, d_D) to part[(which, bh, c)]. */
__global__ static void ssd_bwd_dt_kernel(floatX* ddt_raw, int dt_stride, float* part, const float* dt,
                                         const float* cum, const float* roww, const float* xdxs,
                                         const float* xdxs_st, const float* colw, const float* xdy,
                                         const float* dotp, int nsplit, const floatX* dt_raw, const float* dt_bias,
                                         const float* A_log, int B, int T, int H, int Q) {
    int nch = ssd_nchunks(T, Q), c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, lane = threadIdx.x;
    int t0 = c * Q, len = min(Q, T - t0);
    float A = -expf(A_log[h]), bias = dt_bias[h];
    float dot_last = 0.f;
    for (int s = 0; s < nsplit; s++) dot_last += dotp[((size_t)bh * nch + c) * nsplit + s];
    size_t base = (size_t)bh * T + t0;
    float carry = 0.f, s_dtb = 0.f, s_alog = 0.f, s_d = 0.f;
    for (int end = len; end > 0; end -= 32) {
        int i = end - 32 + lane;
        float dcum = 0.f, xd = 0.f, cm = 0.f;
        if (i >= 0) {
            xd = xdxs[base + i];
            cm = cum[base + i];
            /* dcum_i = dy_i.ssd_i - dt_i x_i.dxs_i (+ <dH, Hout> at the last row), with the intra-chunk part of
               dt_i x_i.dxs_i taken as the column sum of the same W values as dy_i.ssd_i's intra part */
            int ntile = CEIL_DIV(Q, SSD_TILE);
            float cw = 0.f;
            for (int rt = i / SSD_TILE; rt < ntile && rt * SSD_TILE < len; rt++)
                cw += colw[(((size_t)bh * nch + c) * ntile + rt) * Q + i];
            dcum = roww[base + i] - cw - dt[base + i] * xdxs_st[base + i] + (i == len - 1 ? dot_last : 0.f);
        }
        float v = dcum;  /* suffix sum inside the 32 */
        for (int o = 1; o < 32; o <<= 1) {
            float u = __shfl_down_sync(0xffffffffu, v, o);
            if (lane + o < 32) v += u;
        }
        float rev = v + carry;
        if (i >= 0) {
            float ddt = xd + A * rev;
            size_t row = (size_t)(b * T + t0 + i) * dt_stride + h;
            float out = ddt * ssd_sigmoid(toF(dt_raw[row]) + bias);
            ddt_raw[row] = fromF(out);
            s_dtb += out;
            s_alog += dcum * cm;
            s_d += xdy[base + i];
        }
        carry += __shfl_sync(0xffffffffu, v, 0);
    }
    s_dtb = warp_reduce_sum(s_dtb);
    s_alog = warp_reduce_sum(s_alog);
    s_d = warp_reduce_sum(s_d);
    if (lane == 0) {
        size_t nbhc = (size_t)B * H * nch, o = (size_t)bh * nch + c;
        part[o] = s_dtb;
        part[nbhc + o] = s_alog;
        part[2 * nbhc + o] = s_d;
    }
}

/* d_dt_bias[h], d_A_log[h], d_D[h] += the sums of their partials over (b, chunk), in order. One thread per (h, which). */
__global__ static void ssd_bwd_param_sum_kernel(float* d_dt_bias, float* d_A_log, float* d_D, const float* part,
                                                int B, int H, int nch) {
    int h = blockIdx.x * blockDim.x + threadIdx.x;
    if (h >= 3 * H) return;
    int which = h / H;
    h = h % H;
    size_t nbhc = (size_t)B * H * nch;
    float s = 0.f;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < nch; c++) s += part[which * nbhc + ((size_t)(b * H + h)) * nch + c];
    float* out = which == 0 ? d_dt_bias : which == 1 ? d_A_log : d_D;
    out[h] += s;
}

/* dB, dC columns of dxbc: the sum over the heads of each group, in head order. One thread per (row, g, n). */
template <typename Tpart>
__global__ static void ssd_bwd_group_sum_kernel(floatX* dxbc, int xbc_stride, const Tpart* dB_h, const Tpart* dC_h,
                                                int BT, int H, int P, int N, int G) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)BT * G * N) return;
    int n = idx % N, g = (idx / N) % G;
    size_t row = idx / ((size_t)G * N);
    int hpg = H / G, E = H * P;
    float sB = 0.f, sC = 0.f;
    for (int h = g * hpg; h < (g + 1) * hpg; h++) {
        sB += toF(dB_h[(row * H + h) * N + n]);
        sC += toF(dC_h[(row * H + h) * N + n]);
    }
    dxbc[row * xbc_stride + E + g * N + n] = fromF(sB);
    dxbc[row * xbc_stride + E + G * N + g * N + n] = fromF(sC);
}

/* version 4's heads per block of the backward row-tile kernels (see "version 4" below): the largest divisor of H/G
   up to ssd4_hg_max. A variable in every build so that dev/cuda/ssd.cu can set it (it matters in bf16 only). */
#ifndef SSD4_HG_MAX
#define SSD4_HG_MAX 4
#endif
static int ssd4_hg_max = SSD4_HG_MAX;
static inline int ssd4_heads_per_block(int H, int G) {
    int hpg = H / G, best = 1;
    for (int k = 1; k <= ssd4_hg_max && k <= hpg; k++)
        if (hpg % k == 0) best = k;
    return best;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* version 3 (bf16 build): 64-row tiles, operands kept as bf16 in shared memory (cp.async, double-buffered), read
   with ldmatrix into mma.sync m16n8k16 fragments, accumulators in registers for the whole tile loop. Each block is
   4 warps; warp w owns rows 16w..16w+15 of the block's 64-row tile. The Q x Q "attention" products never leave the
   registers: a 16 x 64 score tile (C B^T, dy x^T, ...) is masked and scaled in its accumulator fragments, which are
   then repacked in place as the A fragments of the next product (the m16n8 accumulator layout of two adjacent
   8-column tiles is the m16k16 A-operand layout).
   Kernels (same algorithm and saved/workspace buffers as version 2; see the top of this file):
     ssd3_chunk_state_kernel  S_c (forward) and sum_i exp(cum_i) dy_i C_i^T (backward) on the tensor cores; the
                              scaled operand is split in two bf16 terms (hi + lo), so the product keeps ~16 bits.
     ssd3_scan_fwd_kernel     y for 64 rows i: exp(cum_i) C_i Hprev^T + sum_j [(C_i.B_j) decay dt_j] x_j + D x_i.
     ssd3_bct_kernel          B_j . C_i for the j <= i tiles of each (b, chunk, group): made once, read (from L2) by
                              the backward of every head of the group instead of recomputed per head.
     ssd3_bwd_col_kernel      for 64 rows j ("columns" of the Q x Q products), looping over the rows i >= j:
                              dxs_j, dx_j, the per-head dB_j, x_j.dxs_j, x_j.dy_j and, from ONE set of fp32 values
                              W[i,j], both the column sums (for j) and the row sums (partial per j tile, for i).
     ssd3_bwd_dc_kernel       for 64 rows i, looping over j <= i: the per-head dC_i and dy_i . y_off_i.
     ssd3_bwd_dt_kernel       dcum, ddt_raw and the parameter partials, like ssd_bwd_dt_kernel.
   The per-head dB, dC partials are bf16 (ssd_bwd_group_sum_kernel<floatX> adds them in fp32, in head order): half
   the traffic of fp32 ones, ~3e-3 instead of ~2.4e-3 norm-relative error on dB, dC; dx, ddt and the parameter
   gradients do not go through them. The three row-tile kernels have an instantiation with P, N fixed at compile
   time (EXACT: P == PMAX, N == NMAX, the model's 64 and 128 among them): the n-tile guards fold away and the k loops
   unroll, 1.5x on those kernels against runtime widths.
   The state products (Hprev, dH: fp32) split the state in hi + lo bf16 terms in the backward (the dcum terms
   cancel, see above); the forward rounds Hprev to bf16 once (y is bf16 anyway, and the backward does not use y). */
#if !defined(ENABLE_FP32)
#define SSD3_ROWS 64
#define SSD3_THREADS 128

__device__ static inline uint32_t ssd3_saddr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
/* four 8x8 bf16 matrices; lanes 8m..8m+7 give the row addresses of matrix m */
__device__ static inline void ssd3_ldsm(uint32_t r[4], const floatX* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(ssd3_saddr(p)) : "memory");
}
__device__ static inline void ssd3_ldsm_t(uint32_t r[4], const floatX* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(ssd3_saddr(p)) : "memory");
}
/* 16 bytes global -> shared without passing through registers; valid = 0 writes zeros (reads nothing) */
__device__ static inline void ssd3_cp_async16(void* dst, const void* src, int valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(ssd3_saddr(dst)), "l"(src),
                 "r"(valid ? 16 : 0) : "memory");
}
__device__ static inline void ssd3_cp_commit(void) { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int n> __device__ static inline void ssd3_cp_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(n) : "memory");
}

/* rows [r0, r0 + 64) of a bf16 row-major matrix (row stride gstride, ncols % 8 == 0 columns) into shared memory
   with row stride ld (ncols + 8: the 16-byte pad puts the 8 rows of an ldmatrix in 8 different bank groups).
   Rows at or past nvalid are zero-filled, so partial chunks need no bounds checks in the products. */
__device__ static inline void ssd3_load_tile(floatX* dst, int ld, const floatX* src, size_t gstride, int r0,
                                             int nvalid, int ncols) {
    int nv = ncols / 8;
    for (int idx = threadIdx.x; idx < SSD3_ROWS * nv; idx += SSD3_THREADS) {
        int r = idx / nv, v = idx % nv, ok = r0 + r < nvalid;
        ssd3_cp_async16(dst + r * ld + v * 8, src + (ok ? (size_t)(r0 + r) * gstride + v * 8 : 0), ok);
    }
}

/* an fp32 (R, Cn) matrix into shared memory as bf16 hi (and lo = the rounding error of hi, if lo != NULL).
   16-byte loads and no per-element division where the layout allows (it does for the model's shapes): this runs in
   every block's prologue, before any tile work can start. */
__device__ static inline void ssd3_load_split(floatX* hi, floatX* lo, int ld, const float* m, int R, int Cn) {
    int nv = Cn / 4;
    if (Cn % 4 == 0 && SSD3_THREADS % nv == 0 && (uintptr_t)m % 16 == 0) {
        int c = (threadIdx.x % nv) * 4;
#pragma unroll 4
        for (int r = threadIdx.x / nv; r < R; r += SSD3_THREADS / nv) {
            float4 q = *(const float4*)(m + (size_t)r * Cn + c);
            __nv_bfloat162 h01 = __floats2bfloat162_rn(q.x, q.y), h23 = __floats2bfloat162_rn(q.z, q.w);
            uint2 hv = make_uint2(*(uint32_t*)&h01, *(uint32_t*)&h23);
            *(uint2*)(hi + r * ld + c) = hv;
            if (lo) {
                uint2 lv = make_uint2(ssd_pack_bf16(q.x - __low2float(h01), q.y - __high2float(h01)),
                                      ssd_pack_bf16(q.z - __low2float(h23), q.w - __high2float(h23)));
                *(uint2*)(lo + r * ld + c) = lv;
            }
        }
        return;
    }
    for (int idx = threadIdx.x; idx < R * Cn; idx += SSD3_THREADS) {
        int r = idx / Cn, c = idx % Cn;
        float v = m[idx];
        floatX vh = __float2bfloat16_rn(v);
        hi[r * ld + c] = vh;
        if (lo) lo[r * ld + c] = __float2bfloat16_rn(v - __bfloat162float(vh));
    }
}

/* Warp-level products into acc[nt][4], the 16 x 8 accumulator tiles nt of a 16-row strip (only nt * 8 < ncols;
   ncols % 16 == 0). Fragment owner: lane holds rows lane/4 and lane/4 + 8, columns nt*8 + 2*(lane%4) + {0, 1}.
   ssd3_mma_nt: A(m, k) = a[m*lda + k] (16 rows), B(k, n) = b[n*ldb + k]   (both K-contiguous)
   ssd3_mma_nn: A(m, k) = a[m*lda + k],             B(k, n) = b[k*ldb + n]   (B row-major: ldmatrix.trans)
   ssd3_mma_tn: A(m, k) = a[k*lda + m],             B(k, n) = b[k*ldb + n]
   ssd3_mma_rn: A from registers (packed bf16 A fragments af[ks], K = 16 * KS), B(k, n) = b[k*ldb + n] */
template <int NT8>
__device__ static inline void ssd3_mma_nt(float acc[][4], const floatX* a, int lda, const floatX* b, int ldb, int K,
                                          int ncols) {
    int lane = threadIdx.x % 32;
    const floatX* ap = a + (lane % 16) * lda + (lane / 16) * 8;
    const floatX* bp = b + ((lane % 8) + (lane / 16) * 8) * ldb + ((lane / 8) % 2) * 8;
    for (int k0 = 0; k0 < K; k0 += 16) {
        uint32_t af[4];
        ssd3_ldsm(af, ap + k0);
#pragma unroll
        for (int nt = 0; nt < NT8; nt += 2) {
            if (nt * 8 < ncols) {
                uint32_t bf[4];
                ssd3_ldsm(bf, bp + nt * 8 * ldb + k0);
                ssd_mma_bf16(acc[nt], af, bf);
                ssd_mma_bf16(acc[nt + 1], af, bf + 2);
            }
        }
    }
}
template <int NT8>
__device__ static inline void ssd3_mma_nn(float acc[][4], const floatX* a, int lda, const floatX* b, int ldb, int K,
                                          int ncols) {
    int lane = threadIdx.x % 32;
    const floatX* ap = a + (lane % 16) * lda + (lane / 16) * 8;
    const floatX* bp = b + ((lane % 8) + ((lane / 8) % 2) * 8) * ldb + (lane / 16) * 8;
    for (int k0 = 0; k0 < K; k0 += 16) {
        uint32_t af[4];
        ssd3_ldsm(af, ap + k0);
#pragma unroll
        for (int nt = 0; nt < NT8; nt += 2) {
            if (nt * 8 < ncols) {
                uint32_t bf[4];
                ssd3_ldsm_t(bf, bp + k0 * ldb + nt * 8);
                ssd_mma_bf16(acc[nt], af, bf);
                ssd_mma_bf16(acc[nt + 1], af, bf + 2);
            }
        }
    }
}
template <int NT8>
__device__ static inline void ssd3_mma_tn(float acc[][4], const floatX* a, int lda, const floatX* b, int ldb, int K,
                                          int ncols) {
    int lane = threadIdx.x % 32;
    const floatX* ap = a + ((lane % 8) + (lane / 16) * 8) * lda + ((lane / 8) % 2) * 8;
    const floatX* bp = b + ((lane % 8) + ((lane / 8) % 2) * 8) * ldb + (lane / 16) * 8;
    for (int k0 = 0; k0 < K; k0 += 16) {
        uint32_t af[4];
        ssd3_ldsm_t(af, ap + k0 * lda);
#pragma unroll
        for (int nt = 0; nt < NT8; nt += 2) {
            if (nt * 8 < ncols) {
                uint32_t bf[4];
                ssd3_ldsm_t(bf, bp + k0 * ldb + nt * 8);
                ssd_mma_bf16(acc[nt], af, bf);
                ssd_mma_bf16(acc[nt + 1], af, bf + 2);
            }
        }
    }
}
template <int KS, int NT8>
__device__ static inline void ssd3_mma_rn(float acc[][4], const uint32_t af[][4], const floatX* b, int ldb, int ncols,
                                          int K = 16 * KS) {
    int lane = threadIdx.x % 32;
    const floatX* bp = b + ((lane % 8) + ((lane / 8) % 2) * 8) * ldb + (lane / 16) * 8;
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        if (ks * 16 >= K) break;
#pragma unroll
        for (int nt = 0; nt < NT8; nt += 2) {
            if (nt * 8 < ncols) {
                uint32_t bf[4];
                ssd3_ldsm_t(bf, bp + ks * 16 * ldb + nt * 8);
                ssd_mma_bf16(acc[nt], af[ks], bf);
                ssd_mma_bf16(acc[nt + 1], af[ks], bf + 2);
            }
        }
    }
}
/* accumulator tiles s[2ks], s[2ks+1] (16 x 16 fp32) -> the bf16 A fragment af[ks] of the next product */
template <int KS>
__device__ static inline void ssd3_pack_a(uint32_t af[][4], const float s[][4]) {
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        af[ks][0] = ssd_pack_bf16(s[2 * ks][0], s[2 * ks][1]);
        af[ks][1] = ssd_pack_bf16(s[2 * ks][2], s[2 * ks][3]);
        af[ks][2] = ssd_pack_bf16(s[2 * ks + 1][0], s[2 * ks + 1][1]);
        af[ks][3] = ssd_pack_bf16(s[2 * ks + 1][2], s[2 * ks + 1][3]);
    }
}
/* the sum over the 4 lanes that hold one accumulator row (the same lane/4) */
__device__ static inline float ssd3_quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    return v;
}
/* rowdot[r] = sum over the columns of acc of acc * m (bf16 shared, row-major ld, rows m0 + lane/4 (+8)), for
   r = 0 (row lane/4) and 1 (row lane/4 + 8); the full row sums, in every lane of the quad */
template <int NT8>
__device__ static inline void ssd3_rowdot(float out[2], const float acc[][4], const floatX* m, int ld, int ncols) {
    int lane = threadIdx.x % 32, r = lane / 4, c = 2 * (lane % 4);
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int nt = 0; nt < NT8; nt++) {
        if (nt * 8 < ncols) {
            int col = nt * 8 + c;
            s0 += acc[nt][0] * toF(m[r * ld + col]) + acc[nt][1] * toF(m[r * ld + col + 1]);
            s1 += acc[nt][2] * toF(m[(r + 8) * ld + col]) + acc[nt][3] * toF(m[(r + 8) * ld + col + 1]);
        }
    }
    out[0] = ssd3_quad_sum(s0);
    out[1] = ssd3_quad_sum(s1);
}

/* out[p, n] = sum_{j in chunk} U_j[p] w_j V_j[n] for one (chunk, b, h), a 64x64 tile of (P, N) per block; the
   modes and operands as in ssd_chunk_outer_kernel. A = (w_j U_j)^T: each warp loads raw U fragments (ldmatrix.trans),
   scales them by w_j in registers and splits them in hi + lo bf16 (two products); B = V. Tiles double-buffered. */
__global__ static void __launch_bounds__(SSD3_THREADS)
ssd3_chunk_state_kernel(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0,
                        const float* dt, const float* cum, int mode, int T, int H, int P, int N, int G, int Q) {
    __shared__ __align__(16) floatX Us[2][SSD3_ROWS * 72], Vs[2][SSD3_ROWS * 72];
    __shared__ float w_s[2][SSD3_ROWS];
    int nch = ssd_nchunks(T, Q), c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int ptiles = CEIL_DIV(P, 64), p0 = (blockIdx.z % ptiles) * 64, n0 = (blockIdx.z / ptiles) * 64;
    int pw = min(64, P - p0), nw = min(64, N - n0);
    int t0 = c * Q, len = min(Q, T - t0);
    const float* dtc = dt + (size_t)bh * T + t0;
    const float* cumc = cum + (size_t)bh * T + t0;
    float cum_last = cumc[len - 1];
    const floatX* Ub = U + (size_t)(b * T + t0) * u_stride + h * P + p0;
    const floatX* Vb = V + (size_t)(b * T + t0) * v_stride + v_col0 + g * N + n0;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    float acc[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    int ntj = CEIL_DIV(len, SSD3_ROWS);
    for (int jt = 0; jt <= ntj; jt++) {
        if (jt < ntj) {  /* issue tile jt (buffer jt & 1), then work on tile jt - 1 */
            int bf = jt & 1, j0 = jt * SSD3_ROWS;
            ssd3_load_tile(Us[bf], 72, Ub, u_stride, j0, len, pw);
            ssd3_load_tile(Vs[bf], 72, Vb, v_stride, j0, len, nw);
            ssd3_cp_commit();
            if (threadIdx.x < SSD3_ROWS) {
                int j = j0 + threadIdx.x;
                w_s[bf][threadIdx.x] =
                    j < len ? (mode == 0 ? dtc[j] * expf(cum_last - cumc[j]) : expf(cumc[j])) : 0.f;
            }
        }
        if (jt == 0) continue;
        if (jt < ntj) ssd3_cp_wait<1>(); else ssd3_cp_wait<0>();
        __syncthreads();
        int buf = (jt - 1) & 1;
        if (m0 < pw) {
            const floatX* ap = Us[buf] + ((lane % 8) + (lane / 16) * 8) * 72 + m0 + ((lane / 8) % 2) * 8;
            const floatX* bp = Vs[buf] + ((lane % 8) + ((lane / 8) % 2) * 8) * 72 + (lane / 16) * 8;
#pragma unroll
            for (int k0 = 0; k0 < SSD3_ROWS; k0 += 16) {
                uint32_t raw[4], ah[4], al[4];
                ssd3_ldsm_t(raw, ap + k0 * 72);
                /* registers 0, 1 hold k = k0 + 2 tig (+1); registers 2, 3 hold k = k0 + 8 + 2 tig (+1) */
                float w0 = w_s[buf][k0 + 2 * tig], w1 = w_s[buf][k0 + 2 * tig + 1];
                float w2 = w_s[buf][k0 + 8 + 2 * tig], w3 = w_s[buf][k0 + 9 + 2 * tig];
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    __nv_bfloat162 v = *(__nv_bfloat162*)&raw[r];
                    float lo = __low2float(v) * (r < 2 ? w0 : w2), hi = __high2float(v) * (r < 2 ? w1 : w3);
                    __nv_bfloat162 vh = __floats2bfloat162_rn(lo, hi);
                    ah[r] = *(uint32_t*)&vh;
                    al[r] = ssd_pack_bf16(lo - __low2float(vh), hi - __high2float(vh));
                }
#pragma unroll
                for (int nt = 0; nt < 8; nt += 2) {
                    if (nt * 8 < nw) {
                        uint32_t bfr[4];
                        ssd3_ldsm_t(bfr, bp + k0 * 72 + nt * 8);
                        ssd_mma_bf16(acc[nt], ah, bfr);
                        ssd_mma_bf16(acc[nt], al, bfr);
                        ssd_mma_bf16(acc[nt + 1], ah, bfr + 2);
                        ssd_mma_bf16(acc[nt + 1], al, bfr + 2);
                    }
                }
            }
        }
        __syncthreads();
    }
    if (m0 >= pw) return;
    float* o = out + ssd_state_off(b, c, h, nch, H, P * N);
    int p = p0 + m0 + lane / 4;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
        if (nt * 8 < nw) {
            int n = n0 + nt * 8 + 2 * tig;
            *(float2*)(o + (size_t)p * N + n) = make_float2(acc[nt][0], acc[nt][1]);
            *(float2*)(o + (size_t)(p + 8) * N + n) = make_float2(acc[nt][2], acc[nt][3]);
        }
    }
}

/* Shared memory of the three row-tile kernels (bf16 elements; rows padded to N + 8, P + 8). What is used only
   before the tile loop (a state, in hi/lo halves where split; C_i in the dC kernel) shares its space with what the
   loop double-buffers, so that 3 blocks fit on a multiprocessor (P = 64, N = 128: 72 KB forward, 64 KB dC):
   forward  Cs | Bs[0] | Xs[0] | region(Hprev bf16 ; then Bs[1] Xs[1])                      ssd3_region_fwd
   col      Xj | region(Bj, dH hi, lo ; then Ci[2] Yi[2])                                    ssd3_region_bwd(P, N, 1)
   dC       Ys | region(Cs, Hprev hi, lo ; then Bs[2] Xs[2])                                 ssd3_region_bwd(P, N, 1)
   (col: B_j . C_i comes from ssd3_bct_kernel, so B_j is needed only for the state part) */
__host__ __device__ static inline size_t ssd3_max(size_t a, size_t b) { return a > b ? a : b; }
__host__ __device__ static inline size_t ssd3_region_fwd(int P, int N) {
    return ssd3_max((size_t)P * (N + 8), (size_t)SSD3_ROWS * (N + 8) + (size_t)SSD3_ROWS * (P + 8));
}
__host__ __device__ static inline size_t ssd3_region_bwd(int P, int N, int with_c) {
    return ssd3_max((size_t)(2 * P + with_c * SSD3_ROWS) * (N + 8),
                    2 * (size_t)SSD3_ROWS * (N + 8) + 2 * (size_t)SSD3_ROWS * (P + 8));
}
static inline size_t ssd3_smem_fwd(int P, int N) {
    return (2 * (size_t)SSD3_ROWS * (N + 8) + (size_t)SSD3_ROWS * (P + 8) + ssd3_region_fwd(P, N)) * sizeof(floatX) +
           4 * SSD3_ROWS * sizeof(float);
}
static inline size_t ssd3_smem_col(int P, int N) {
    return ((size_t)SSD3_ROWS * (P + 8) + ssd3_region_bwd(P, N, 1)) * sizeof(floatX) + 6 * SSD3_ROWS * sizeof(float);
}
static inline size_t ssd3_smem_dc(int P, int N) {
    return ((size_t)SSD3_ROWS * (P + 8) + ssd3_region_bwd(P, N, 1)) * sizeof(floatX) + 4 * SSD3_ROWS * sizeof(float);
}

/* y for 64 rows i of one (b, h, chunk). PMAX, NMAX: 64 or 128, the register tiles' widths (P <= PMAX, N <= NMAX). */
template <int PMAX, int NMAX, bool EXACT>
__global__ static void __launch_bounds__(SSD3_THREADS)
ssd3_scan_fwd_kernel(floatX* y, const floatX* xbc, int xbc_stride, const float* dt, const float* cum,
                     const float* states, const float* Dskip, int T, int H, int P, int N, int G, int Q) {
    if (EXACT) { P = PMAX; N = NMAX; }  /* compile-time widths: the n-tile guards fold, the k loops unroll */
    extern __shared__ __align__(16) unsigned char ssd3_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD3_ROWS);
    int c = blockIdx.x / nti, rt = blockIdx.x % nti, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD3_ROWS;
    if (i0 >= len) return;
    int E = H * P, ldn = N + 8, ldp = P + 8;
    floatX* Cs = (floatX*)ssd3_smem;             /* (64, ldn) C rows i */
    floatX* Bs = Cs + SSD3_ROWS * ldn;           /* (64, ldn) B rows j, buffer 0 */
    floatX* Xs = Bs + SSD3_ROWS * ldn;           /* (64, ldp) x rows j, buffer 0 */
    floatX* Hs = Xs + SSD3_ROWS * ldp;           /* (P, ldn) Hprev in bf16; then buffer 1: */
    floatX* Bs1 = Hs;                            /* (64, ldn) */
    floatX* Xs1 = Hs + SSD3_ROWS * ldn;          /* (64, ldp) */
    float* cj = (float*)(Hs + ssd3_region_fwd(P, N));  /* 2 x 64 cum_j */
    float* dj = cj + 2 * SSD3_ROWS;                  /* 2 x 64 dt_j */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    const floatX* Bg = rows + E + g * N;
    const floatX* Xg = rows + h * P;
    ssd3_load_tile(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
    ssd3_load_tile(Bs, ldn, Bg, xbc_stride, 0, len, N);
    ssd3_load_tile(Xs, ldp, Xg, xbc_stride, 0, len, P);
    ssd3_cp_commit();
    if (threadIdx.x < SSD3_ROWS) {
        int j = threadIdx.x;
        cj[j] = j < len ? cumc[j] : 0.f;
        dj[j] = j < len ? dtc[j] : 0.f;
    }
    ssd3_load_split(Hs, NULL, ldn, states + ssd_state_off(b, c, h, nch, H, P * N), P, N);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    int ri[2] = {i0 + m0 + lane / 4, i0 + m0 + lane / 4 + 8};
    float cum_r[2];
    for (int r = 0; r < 2; r++) cum_r[r] = ri[r] < len ? cumc[ri[r]] : 0.f;
    ssd3_cp_wait<0>();
    __syncthreads();
    /* inter-chunk: exp(cum_i) C_i Hprev^T, B(k = n, col = p) = Hprev[p, n] */
    float acc[PMAX / 8][4];
#pragma unroll
    for (int nt = 0; nt < PMAX / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    ssd3_mma_nt<PMAX / 8>(acc, Cs + m0 * ldn, ldn, Hs, ldn, N, P);
    float e0 = expf(cum_r[0]), e1 = expf(cum_r[1]);
#pragma unroll
    for (int nt = 0; nt < PMAX / 8; nt++) { acc[nt][0] *= e0; acc[nt][1] *= e0; acc[nt][2] *= e1; acc[nt][3] *= e1; }
    __syncthreads();  /* Hprev no longer needed: its space takes buffer 1 */
    /* intra-chunk: the j tiles up to the diagonal one, the next one loading while this one is used */
    for (int jt = 0; jt <= rt; jt++) {
        int buf = jt & 1;
        if (jt < rt) {
            int nb = buf ^ 1, j0n = (jt + 1) * SSD3_ROWS;
            ssd3_load_tile(nb ? Bs1 : Bs, ldn, Bg, xbc_stride, j0n, len, N);
            ssd3_load_tile(nb ? Xs1 : Xs, ldp, Xg, xbc_stride, j0n, len, P);
            ssd3_cp_commit();
            if (threadIdx.x < SSD3_ROWS) {
                int j = j0n + threadIdx.x;
                cj[nb * SSD3_ROWS + threadIdx.x] = j < len ? cumc[j] : 0.f;
                dj[nb * SSD3_ROWS + threadIdx.x] = j < len ? dtc[j] : 0.f;
            }
            ssd3_cp_wait<1>();
        } else {
            ssd3_cp_wait<0>();
        }
        __syncthreads();
        const float* cjb = cj + buf * SSD3_ROWS;
        const float* djb = dj + buf * SSD3_ROWS;
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        /* on the diagonal tile this warp's rows m0..m0+15 need only the columns j < m0 + 16 */
        int jw = jt == rt ? m0 + 16 : SSD3_ROWS;
        if (jt < rt) ssd3_mma_nt<8>(s, Cs + m0 * ldn, ldn, buf ? Bs1 : Bs, ldn, N, SSD3_ROWS);  /* C_i . B_j */
        else ssd3_mma_nt<8>(s, Cs + m0 * ldn, ldn, buf ? Bs1 : Bs, ldn, N, jw);
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int jj = nt * 8 + 2 * tig + (e & 1), j = jt * SSD3_ROWS + jj, r = e / 2;
                int ok = j <= ri[r] && ri[r] < len && j < len;
                s[nt][e] = ok ? s[nt][e] * __expf(cum_r[r] - cjb[jj]) * djb[jj] : 0.f;
            }
        uint32_t sf[4][4];
        ssd3_pack_a<4>(sf, s);
        if (jt < rt) ssd3_mma_rn<4, PMAX / 8>(acc, sf, buf ? Xs1 : Xs, ldp, P);
        else ssd3_mma_rn<4, PMAX / 8>(acc, sf, buf ? Xs1 : Xs, ldp, P, jw);
        __syncthreads();
    }
    float Dh = Dskip[h];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (ri[r] >= len) continue;
        size_t row = (size_t)(b * T + t0 + ri[r]);
        const floatX* xr = xbc + row * xbc_stride + h * P;
        floatX* yr = y + row * E + h * P;
#pragma unroll
        for (int nt = 0; nt < PMAX / 8; nt++) {
            if (nt * 8 < P) {
                int p = nt * 8 + 2 * tig;
                __nv_bfloat162 xv = *(const __nv_bfloat162*)(xr + p);
                *(__nv_bfloat162*)(yr + p) = __floats2bfloat162_rn(acc[nt][2 * r] + Dh * __low2float(xv),
                                                                  acc[nt][2 * r + 1] + Dh * __high2float(xv));
            }
        }
    }
}

/* bct[(b, c, g)][j][i] = B_j . C_i for the 64 x 64 tile (jt, it), it >= jt, of one chunk: the product that
   ssd3_bwd_col_kernel needs for every head of group g, made once (with G = 1, once instead of H times). */
__global__ static void __launch_bounds__(SSD3_THREADS)
ssd3_bct_kernel(float* bct, const floatX* xbc, int xbc_stride, int T, int H, int P, int N, int G, int Q) {
    __shared__ __align__(16) floatX Bs[SSD3_ROWS * (SSD_MAXD + 8)], Cs[SSD3_ROWS * (SSD_MAXD + 8)];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD3_ROWS);
    int c = blockIdx.x / (nti * nti), jt = (blockIdx.x / nti) % nti, it = blockIdx.x % nti;
    int b = blockIdx.y / G, g = blockIdx.y % G, t0 = c * Q, len = min(Q, T - t0);
    int j0 = jt * SSD3_ROWS, i0 = it * SSD3_ROWS;
    if (it < jt || i0 >= len) return;
    int E = H * P, ldn = N + 8;
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    ssd3_load_tile(Bs, ldn, rows + E + g * N, xbc_stride, j0, len, N);
    ssd3_load_tile(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
    ssd3_cp_commit();
    ssd3_cp_wait<0>();
    __syncthreads();
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    float acc[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    ssd3_mma_nt<8>(acc, Bs + m0 * ldn, ldn, Cs, ldn, N, SSD3_ROWS);
    float* o = bct + ((size_t)b * nch + c) * G * Q * Q + (size_t)g * Q * Q;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int j = j0 + m0 + lane / 4 + 8 * r;
        if (j >= Q) continue;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            int i = i0 + nt * 8 + 2 * tig;
            if (i < Q) o[(size_t)j * Q + i] = acc[nt][2 * r];
            if (i + 1 < Q) o[(size_t)j * Q + i + 1] = acc[nt][2 * r + 1];
        }
    }
}

/* For 64 rows j of one (b, h, chunk), looping over the i tiles i >= j (see the top of this file):
   dxs_j = exp(cum_last - cum_j) B_j dH^T + sum_i M[j,i] dy_i,   M[j,i] = (B_j.C_i) exp(cum_i - cum_j) (i >= j)
   dB_j  = dt_j [exp(cum_last - cum_j) x_j dH + sum_i Z[j,i] C_i], Z[j,i] = (x_j.dy_i) exp(cum_i - cum_j)
   dx_j = dt_j dxs_j + D dy_j; x_j.dxs_j, x_j.(state part of dxs_j), x_j.dy_j;
   W[i,j] = Z[j,i] (B_j.C_i) dt_j in fp32: colf_j = sum_i W[i,j] and rowp[jt][i] = sum_{j in this tile} W[i,j]. */
#ifndef SSD3_COL_MINBLOCKS
#define SSD3_COL_MINBLOCKS 3  /* 168 registers (~190 bytes spill), 3 blocks/SM: fwd+bwd 1.51 ms against 1.56 with 2 */
#endif
template <int PMAX, int NMAX, bool EXACT>
__global__ static void __launch_bounds__(SSD3_THREADS, SSD3_COL_MINBLOCKS)
ssd3_bwd_col_kernel(floatX* dxbc, floatX* dB_h, float* xdxs, float* xdxs_st, float* xdy, float* colf, float* rowp,
                    const floatX* dy, const floatX* xbc, int xbc_stride, const float* dt, const float* cum,
                    const float* dstates, const float* bct, const float* Dskip, int T, int H, int P, int N, int G,
                    int Q) {
    if (EXACT) { P = PMAX; N = NMAX; }  /* compile-time widths: the n-tile guards fold, the k loops unroll */
    extern __shared__ __align__(16) unsigned char ssd3_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD3_ROWS);
    int c = blockIdx.x / nti, rt = blockIdx.x % nti, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), j0 = rt * SSD3_ROWS;
    if (j0 >= len) return;
    int E = H * P, ldn = N + 8, ldp = P + 8;
    floatX* Xj = (floatX*)ssd3_smem;             /* (64, ldp) x rows j */
    floatX* Bj = Xj + SSD3_ROWS * ldp;           /* first B rows j (64, ldn), dH hi, lo (2 x (P, ldn)); then */
    floatX* R = Bj + SSD3_ROWS * ldn;
    floatX* Ci = Bj;                             /* the i tiles: 2 x (64, ldn) C rows i */
    floatX* Yi = Ci + 2 * SSD3_ROWS * ldn;       /* 2 x (64, ldp) dy rows i */
    float* ci = (float*)(Bj + ssd3_region_bwd(P, N, 1));  /* 2 x 64 cum_i */
    float* red = ci + 2 * SSD3_ROWS;                    /* 4 warps x 64 partial row sums */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Cg = rows + E + G * N + g * N;
    const floatX* Yg = dy + (size_t)(b * T + t0) * E + h * P;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    const float* bcc = bct + ((size_t)b * nch + c) * G * Q * Q + (size_t)g * Q * Q;  /* [j][i] = B_j . C_i */
    ssd3_load_tile(Bj, ldn, rows + E + g * N, xbc_stride, j0, len, N);
    ssd3_load_tile(Xj, ldp, rows + h * P, xbc_stride, j0, len, P);
    ssd3_cp_commit();
    ssd3_load_split(R, R + P * ldn, ldn, dstates + ssd_state_off(b, c, h, nch, H, P * N), P, N);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    int rj[2] = {j0 + m0 + lane / 4, j0 + m0 + lane / 4 + 8};
    float cum_last = cumc[len - 1], cum_r[2], dt_r[2], es[2];
    for (int r = 0; r < 2; r++) {
        int ok = rj[r] < len;
        cum_r[r] = ok ? cumc[rj[r]] : 0.f;
        dt_r[r] = ok ? dtc[rj[r]] : 0.f;
        es[r] = ok ? expf(cum_last - cum_r[r]) : 0.f;
    }
    ssd3_cp_wait<0>();
    __syncthreads();
    float adx[PMAX / 8][4], adb[NMAX / 8][4];
#pragma unroll
    for (int nt = 0; nt < PMAX / 8; nt++) adx[nt][0] = adx[nt][1] = adx[nt][2] = adx[nt][3] = 0.f;
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) adb[nt][0] = adb[nt][1] = adb[nt][2] = adb[nt][3] = 0.f;
    /* state parts: B_j dH^T (B(k = n, col = p) = dH[p, n]) and x_j dH (B(k = p, n) = dH[p, n]), dH = hi + lo */
    for (int part = 0; part < 2; part++) {
        const floatX* Hh = R + part * P * ldn;
        ssd3_mma_nt<PMAX / 8>(adx, Bj + m0 * ldn, ldn, Hh, ldn, N, P);
        ssd3_mma_nn<NMAX / 8>(adb, Xj + m0 * ldp, ldp, Hh, ldn, P, N);
    }
#pragma unroll
    for (int nt = 0; nt < PMAX / 8; nt++) {
        adx[nt][0] *= es[0]; adx[nt][1] *= es[0]; adx[nt][2] *= es[1]; adx[nt][3] *= es[1];
    }
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) {
        adb[nt][0] *= es[0]; adb[nt][1] *= es[0]; adb[nt][2] *= es[1]; adb[nt][3] *= es[1];
    }
    float st[2];
    ssd3_rowdot<PMAX / 8>(st, adx, Xj + m0 * ldp, ldp, P);  /* x_j . (state part of dxs_j) */
    __syncthreads();  /* dH no longer needed: its space takes the i tiles */
    int it_end = CEIL_DIV(len, SSD3_ROWS);
    ssd3_load_tile(Ci, ldn, Cg, xbc_stride, j0, len, N);
    ssd3_load_tile(Yi, ldp, Yg, E, j0, len, P);
    ssd3_cp_commit();
    if (threadIdx.x < SSD3_ROWS) {
        int i = j0 + threadIdx.x;
        ci[threadIdx.x] = i < len ? cumc[i] : 0.f;
    }
    float colacc[2] = {0.f, 0.f};
    for (int it = rt; it < it_end; it++) {
        int buf = (it - rt) & 1;
        if (it + 1 < it_end) {
            int nb = buf ^ 1, i0n = (it + 1) * SSD3_ROWS;
            ssd3_load_tile(Ci + nb * SSD3_ROWS * ldn, ldn, Cg, xbc_stride, i0n, len, N);
            ssd3_load_tile(Yi + nb * SSD3_ROWS * ldp, ldp, Yg, E, i0n, len, P);
            ssd3_cp_commit();
            if (threadIdx.x < SSD3_ROWS) {
                int i = i0n + threadIdx.x;
                ci[nb * SSD3_ROWS + threadIdx.x] = i < len ? cumc[i] : 0.f;
            }
            ssd3_cp_wait<1>();
        } else {
            ssd3_cp_wait<0>();
        }
        __syncthreads();
        const floatX* Cb = Ci + buf * SSD3_ROWS * ldn;
        const floatX* Yb = Yi + buf * SSD3_ROWS * ldp;
        const float* cib = ci + buf * SSD3_ROWS;
        float rp[8][2];
#pragma unroll
        for (int ih = 0; ih < 2; ih++) {  /* two halves of 32 columns i: fewer live registers */
            if (ih == 0 && it == rt && m0 >= 32) {  /* diagonal tile: rows j >= 32 have nothing at i < 32 */
#pragma unroll
                for (int nt = 0; nt < 4; nt++) rp[nt][0] = rp[nt][1] = 0.f;
                continue;
            }
            float bc[4][4], xy[4][4];
#pragma unroll
            for (int nt = 0; nt < 4; nt++)  /* B_j . C_i from ssd3_bct_kernel (L2), zero outside the chunk */
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int i = it * SSD3_ROWS + ih * 32 + nt * 8 + 2 * tig + (e & 1), j = rj[e / 2];
                    bc[nt][e] = i < len && j < len ? bcc[(size_t)j * Q + i] : 0.f;
                    xy[nt][e] = 0.f;
                }
            ssd3_mma_nt<4>(xy, Xj + m0 * ldp, ldp, Yb + ih * 32 * ldp, ldp, P, 32);  /* x_j . dy_i */
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                rp[ih * 4 + nt][0] = rp[ih * 4 + nt][1] = 0.f;
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int ii = ih * 32 + nt * 8 + 2 * tig + (e & 1), i = it * SSD3_ROWS + ii, r = e / 2;
                    int ok = i >= rj[r] && i < len && rj[r] < len;
                    float dec = ok ? __expf(cib[ii] - cum_r[r]) : 0.f;
                    float m = bc[nt][e] * dec, z = xy[nt][e] * dec;
                    float w = z * bc[nt][e] * dt_r[r];
                    colacc[r] += w;
                    rp[ih * 4 + nt][e & 1] += w;
                    bc[nt][e] = m;
                    xy[nt][e] = z;
                }
            }
            uint32_t mf[2][4], zf[2][4];
            ssd3_pack_a<2>(mf, bc);
            ssd3_pack_a<2>(zf, xy);
            ssd3_mma_rn<2, PMAX / 8>(adx, mf, Yb + ih * 32 * ldp, ldp, P);  /* += M dy_i */
            ssd3_mma_rn<2, NMAX / 8>(adb, zf, Cb + ih * 32 * ldn, ldn, N);  /* += Z C_i */
        }
        /* row sums over this tile's j of W[i, j]: over the 8 row groups of a warp, then the 4 warps in order */
#pragma unroll
        for (int k = 0; k < 8; k++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float v = rp[k][e];
                v += __shfl_xor_sync(0xffffffffu, v, 4);
                v += __shfl_xor_sync(0xffffffffu, v, 8);
                v += __shfl_xor_sync(0xffffffffu, v, 16);
                if (lane < 4) red[warp * SSD3_ROWS + k * 8 + 2 * tig + e] = v;
            }
        __syncthreads();
        if (threadIdx.x < SSD3_ROWS) {
            int i = it * SSD3_ROWS + threadIdx.x;
            if (i < len)
                rowp[(((size_t)bh * nch + c) * nti + rt) * Q + i] =
                    red[threadIdx.x] + red[SSD3_ROWS + threadIdx.x] + red[2 * SSD3_ROWS + threadIdx.x] +
                    red[3 * SSD3_ROWS + threadIdx.x];
        }
        __syncthreads();
    }
    /* epilogue: per row j, outputs */
    float xd[2];
    ssd3_rowdot<PMAX / 8>(xd, adx, Xj + m0 * ldp, ldp, P);  /* x_j . dxs_j */
    float Dh = Dskip[h];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int ok = rj[r] < len;
        size_t row = (size_t)(b * T + t0 + (ok ? rj[r] : 0));
        const floatX* dyr = dy + row * E + h * P;
        floatX* dxr = dxbc + row * xbc_stride + h * P;
        const floatX* xr = Xj + (m0 + lane / 4 + 8 * r) * ldp;
        float sdy = 0.f;
#pragma unroll
        for (int nt = 0; nt < PMAX / 8; nt++) {
            if (nt * 8 < P && ok) {
                int p = nt * 8 + 2 * tig;
                __nv_bfloat162 dv = *(const __nv_bfloat162*)(dyr + p);
                float d0 = __low2float(dv), d1 = __high2float(dv);
                sdy += d0 * toF(xr[p]) + d1 * toF(xr[p + 1]);
                *(__nv_bfloat162*)(dxr + p) = __floats2bfloat162_rn(dt_r[r] * adx[nt][2 * r] + Dh * d0,
                                                                   dt_r[r] * adx[nt][2 * r + 1] + Dh * d1);
            }
        }
        sdy = ssd3_quad_sum(sdy);
        float cs = ssd3_quad_sum(colacc[r]);
        if (!ok) continue;
        floatX* dbr = dB_h + (row * H + h) * N;
#pragma unroll
        for (int nt = 0; nt < NMAX / 8; nt++) {
            if (nt * 8 < N) {
                int n = nt * 8 + 2 * tig;
                *(__nv_bfloat162*)(dbr + n) =
                    __floats2bfloat162_rn(dt_r[r] * adb[nt][2 * r], dt_r[r] * adb[nt][2 * r + 1]);
            }
        }
        if (tig == 0) {
            size_t o = (size_t)bh * T + t0 + rj[r];
            xdxs[o] = xd[r];
            xdxs_st[o] = st[r];
            xdy[o] = sdy;
            colf[o] = cs;
        }
    }
}

/* For 64 rows i of one (b, h, chunk): the per-head dC_i = exp(cum_i) Hprev^T dy_i + sum_{j<=i} WD[i,j] B_j with
   WD[i,j] = (dy_i.x_j) exp(cum_i - cum_j) dt_j, and rowi_i = dy_i . y_off_i = C_i . (state part of dC_i). */
template <int PMAX, int NMAX, bool EXACT>
__global__ static void __launch_bounds__(SSD3_THREADS)
ssd3_bwd_dc_kernel(floatX* dC_h, float* rowi, const floatX* dy, const floatX* xbc, int xbc_stride, const float* dt,
                   const float* cum, const float* states, int T, int H, int P, int N, int G, int Q) {
    if (EXACT) { P = PMAX; N = NMAX; }  /* compile-time widths: the n-tile guards fold, the k loops unroll */
    extern __shared__ __align__(16) unsigned char ssd3_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD3_ROWS);
    int c = blockIdx.x / nti, rt = blockIdx.x % nti, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD3_ROWS;
    if (i0 >= len) return;
    int E = H * P, ldn = N + 8, ldp = P + 8;
    floatX* Ys = (floatX*)ssd3_smem;             /* (64, ldp) dy rows i */
    floatX* Cs = Ys + SSD3_ROWS * ldp;           /* first C rows i (64, ldn), Hprev hi, lo (2 x (P, ldn)); then */
    floatX* R = Cs + SSD3_ROWS * ldn;
    floatX* Bs = Cs;                             /* the j tiles: 2 x (64, ldn) B rows j */
    floatX* Xs = Bs + 2 * SSD3_ROWS * ldn;       /* 2 x (64, ldp) x rows j */
    float* cj = (float*)(Cs + ssd3_region_bwd(P, N, 1));  /* 2 x 64 cum_j */
    float* dj = cj + 2 * SSD3_ROWS;                     /* 2 x 64 dt_j */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Bg = rows + E + g * N;
    const floatX* Xg = rows + h * P;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    ssd3_load_tile(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
    ssd3_load_tile(Ys, ldp, dy + (size_t)(b * T + t0) * E + h * P, E, i0, len, P);
    ssd3_cp_commit();
    ssd3_load_split(R, R + P * ldn, ldn, states + ssd_state_off(b, c, h, nch, H, P * N), P, N);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    int ri[2] = {i0 + m0 + lane / 4, i0 + m0 + lane / 4 + 8};
    float cum_r[2];
    for (int r = 0; r < 2; r++) cum_r[r] = ri[r] < len ? cumc[ri[r]] : 0.f;
    ssd3_cp_wait<0>();
    __syncthreads();
    float acc[NMAX / 8][4];
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    for (int part = 0; part < 2; part++)  /* dy_i Hprev, B(k = p, n) = Hprev[p, n] = hi + lo */
        ssd3_mma_nn<NMAX / 8>(acc, Ys + m0 * ldp, ldp, R + part * P * ldn, ldn, P, N);
    float e0 = expf(cum_r[0]), e1 = expf(cum_r[1]);
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) { acc[nt][0] *= e0; acc[nt][1] *= e0; acc[nt][2] *= e1; acc[nt][3] *= e1; }
    float pw[2];
    ssd3_rowdot<NMAX / 8>(pw, acc, Cs + m0 * ldn, ldn, N);
    if (tig == 0)
        for (int r = 0; r < 2; r++)
            if (ri[r] < len) rowi[(size_t)bh * T + t0 + ri[r]] = pw[r];
    __syncthreads();  /* Hprev no longer needed: its space takes the j tiles */
    ssd3_load_tile(Bs, ldn, Bg, xbc_stride, 0, len, N);
    ssd3_load_tile(Xs, ldp, Xg, xbc_stride, 0, len, P);
    ssd3_cp_commit();
    if (threadIdx.x < SSD3_ROWS) {
        int j = threadIdx.x;
        cj[j] = j < len ? cumc[j] : 0.f;
        dj[j] = j < len ? dtc[j] : 0.f;
    }
    for (int jt = 0; jt <= rt; jt++) {
        int buf = jt & 1;
        if (jt < rt) {
            int nb = buf ^ 1, j0n = (jt + 1) * SSD3_ROWS;
            ssd3_load_tile(Bs + nb * SSD3_ROWS * ldn, ldn, Bg, xbc_stride, j0n, len, N);
            ssd3_load_tile(Xs + nb * SSD3_ROWS * ldp, ldp, Xg, xbc_stride, j0n, len, P);
            ssd3_cp_commit();
            if (threadIdx.x < SSD3_ROWS) {
                int j = j0n + threadIdx.x;
                cj[nb * SSD3_ROWS + threadIdx.x] = j < len ? cumc[j] : 0.f;
                dj[nb * SSD3_ROWS + threadIdx.x] = j < len ? dtc[j] : 0.f;
            }
            ssd3_cp_wait<1>();
        } else {
            ssd3_cp_wait<0>();
        }
        __syncthreads();
        const floatX* Bb = Bs + buf * SSD3_ROWS * ldn;
        const floatX* Xb = Xs + buf * SSD3_ROWS * ldp;
        const float* cjb = cj + buf * SSD3_ROWS;
        const float* djb = dj + buf * SSD3_ROWS;
#pragma unroll
        for (int jh = 0; jh < 2; jh++) {
            if (jh == 1 && jt == rt && m0 < 32) continue;  /* diagonal tile: rows i < 32 have nothing at j >= 32 */
            float wd[4][4];
#pragma unroll
            for (int nt = 0; nt < 4; nt++) wd[nt][0] = wd[nt][1] = wd[nt][2] = wd[nt][3] = 0.f;
            ssd3_mma_nt<4>(wd, Ys + m0 * ldp, ldp, Xb + jh * 32 * ldp, ldp, P, 32);  /* dy_i . x_j */
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int jj = jh * 32 + nt * 8 + 2 * tig + (e & 1), j = jt * SSD3_ROWS + jj, r = e / 2;
                    int ok = j <= ri[r] && ri[r] < len && j < len;
                    wd[nt][e] = ok ? wd[nt][e] * __expf(cum_r[r] - cjb[jj]) * djb[jj] : 0.f;
                }
            uint32_t wf[2][4];
            ssd3_pack_a<2>(wf, wd);
            ssd3_mma_rn<2, NMAX / 8>(acc, wf, Bb + jh * 32 * ldn, ldn, N);  /* += WD B_j */
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (ri[r] >= len) continue;
        floatX* o = dC_h + ((size_t)(b * T + t0 + ri[r]) * H + h) * N;
#pragma unroll
        for (int nt = 0; nt < NMAX / 8; nt++)
            if (nt * 8 < N)
                *(__nv_bfloat162*)(o + nt * 8 + 2 * tig) = __floats2bfloat162_rn(acc[nt][2 * r], acc[nt][2 * r + 1]);
    }
}

/* ssd_bwd_dt_kernel for version 3's partial sums: dy_i.ssd_i = rowi_i + sum over the j tiles jt <= i/64 of
   rowp[jt][i]; the column sums colf_i are already complete. */
__global__ static void ssd3_bwd_dt_kernel(floatX* ddt_raw, int dt_stride, float* part, const float* dt,
                                          const float* cum, const float* rowi, const float* rowp, const float* colf,
                                          const float* xdxs, const float* xdxs_st, const float* xdy,
                                          const float* dotp, int nsplit, const floatX* dt_raw, const float* dt_bias,
                                          const float* A_log, int B, int T, int H, int Q) {
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD3_ROWS), c = blockIdx.x, bh = blockIdx.y, b = bh / H,
        h = bh % H, lane = threadIdx.x;
    int t0 = c * Q, len = min(Q, T - t0);
    float A = -expf(A_log[h]), bias = dt_bias[h];
    float dot_last = 0.f;
    for (int s = 0; s < nsplit; s++) dot_last += dotp[((size_t)bh * nch + c) * nsplit + s];
    size_t base = (size_t)bh * T + t0;
    const float* rp = rowp + ((size_t)bh * nch + c) * nti * Q;
    float carry = 0.f, s_dtb = 0.f, s_alog = 0.f, s_d = 0.f;
    for (int end = len; end > 0; end -= 32) {
        int i = end - 32 + lane;
        float dcum = 0.f, xd = 0.f, cm = 0.f;
        if (i >= 0) {
            xd = xdxs[base + i];
            cm = cum[base + i];
            float rw = rowi[base + i];
            for (int jt = 0; jt <= i / SSD3_ROWS; jt++) rw += rp[(size_t)jt * Q + i];
            dcum = rw - colf[base + i] - dt[base + i] * xdxs_st[base + i] + (i == len - 1 ? dot_last : 0.f);
        }
        float v = dcum;  /* suffix sum inside the 32 */
        for (int o = 1; o < 32; o <<= 1) {
            float u = __shfl_down_sync(0xffffffffu, v, o);
            if (lane + o < 32) v += u;
        }
        float rev = v + carry;
        if (i >= 0) {
            float ddt = xd + A * rev;
            size_t row = (size_t)(b * T + t0 + i) * dt_stride + h;
            float out = ddt * ssd_sigmoid(toF(dt_raw[row]) + bias);
            ddt_raw[row] = fromF(out);
            s_dtb += out;
            s_alog += dcum * cm;
            s_d += xdy[base + i];
        }
        carry += __shfl_sync(0xffffffffu, v, 0);
    }
    s_dtb = warp_reduce_sum(s_dtb);
    s_alog = warp_reduce_sum(s_alog);
    s_d = warp_reduce_sum(s_d);
    if (lane == 0) {
        size_t nbhc = (size_t)B * H * nch, o = (size_t)bh * nch + c;
        part[o] = s_dtb;
        part[nbhc + o] = s_alog;
        part[2 * nbhc + o] = s_d;
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* version 4 (bf16 build; the default once validated on the GPU): version 3 with the heads of a group looped inside the two backward row-tile
   kernels, `hg` heads per block (the largest divisor of H/G up to ssd4_hg_max, 4 by default).
   dB_j and dC_i of a group are sums over its heads, and the operands that differ per head can carry the per-head
   scale, so ONE register accumulator holds the sum over the block's heads:
     dB_j = sum_h [ sum_i (dt_j Z_h[j,i]) C_i + (dt_j exp(cum_last - cum_j)) x_j dH_h ]   (dt_j folded into Z's rows)
     dC_i = sum_h [ sum_j WD_h[i,j] B_j + exp(cum_i) dy_i Hprev_h ]                       (WD_h holds dt_j already)
   The state terms need a per-row, per-head scale after the product: they go through a 32-column temporary
   (ssd4_state_nn), 16 registers instead of a second 64-register accumulator.
   With hg = H/G (H/G <= 4) the block writes dB, dC straight into dxbc; otherwise each block writes one bf16 partial
   per head-group (B*T*(H/hg)*N: a quarter of version 3's per-head partials at hg = 4) and ssd4_group_sum_kernel
   adds the H/(G hg) partials of a group in order, 16 bytes per load. Same summation order every run: deterministic.
   ssd4_chunk_state_kernel: version 3's chunk-state product with a 64 x 128 output tile per block (all of N <= 128)
   instead of 64 x 64: the U operand (x or dy, scaled and split in hi + lo in registers) is loaded and split once
   per row instead of twice.
   The row-tile index runs slowest in the grid, the longest tiles first (col: rt = 0 loops over every i tile; dC:
   the last rt loops over every j tile), so the short ones fill the tail of the last wave. */

/* acc[c/8 ..] += sc[r] * (A hi + A lo) for the 32-column chunks c of N: A = a (16 rows, row-major lda, K columns)
   times the row-major (K, N) matrix hs + ls (a state split in bf16 hi and lo). sc[r] scales row lane/4 (r = 0) and
   lane/4 + 8 (r = 1). If dotm != NULL, rsum[r] += the scaled product . dotm (the same rows of a row-major (16, N)
   bf16 matrix), unreduced across the 4 lanes of a row (ssd3_quad_sum them after). */
template <int NMAX>
__device__ static inline void ssd4_state_nn(float acc[][4], float rsum[2], const floatX* a, int lda, const floatX* hs,
                                            const floatX* ls, int ldn, int K, int N, const float sc[2],
                                            const floatX* dotm, int ldd) {
    int lane = threadIdx.x % 32, r0 = lane / 4, tig = lane % 4;
#pragma unroll
    for (int c0 = 0; c0 < NMAX; c0 += 32) {
        if (c0 < N) {
            float t[4][4];
#pragma unroll
            for (int q = 0; q < 4; q++) t[q][0] = t[q][1] = t[q][2] = t[q][3] = 0.f;
            ssd3_mma_nn<4>(t, a, lda, hs + c0, ldn, K, N - c0);
            ssd3_mma_nn<4>(t, a, lda, ls + c0, ldn, K, N - c0);
#pragma unroll
            for (int q = 0; q < 4; q++) {
                if (c0 + q * 8 < N) {
                    t[q][0] *= sc[0]; t[q][1] *= sc[0]; t[q][2] *= sc[1]; t[q][3] *= sc[1];
                    if (dotm) {
                        int col = c0 + q * 8 + 2 * tig;
                        rsum[0] += t[q][0] * toF(dotm[r0 * ldd + col]) + t[q][1] * toF(dotm[r0 * ldd + col + 1]);
                        rsum[1] += t[q][2] * toF(dotm[(r0 + 8) * ldd + col]) +
                                   t[q][3] * toF(dotm[(r0 + 8) * ldd + col + 1]);
                    }
                    acc[c0 / 8 + q][0] += t[q][0]; acc[c0 / 8 + q][1] += t[q][1];
                    acc[c0 / 8 + q][2] += t[q][2]; acc[c0 / 8 + q][3] += t[q][3];
                }
            }
        }
    }
}

/* the 64 x NMAX accumulator tile of a block (rows r0 + 16 warp + lane/4 (+8)) as bf16 into row `row` of out:
   out + row * stride + col */
template <int NMAX>
__device__ static inline void ssd4_store_rows(floatX* out, size_t stride, int col, const float acc[][4],
                                              size_t row0, size_t row1, int ok0, int ok1, int N) {
    int tig = threadIdx.x % 4;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (!(r ? ok1 : ok0)) continue;
        floatX* o = out + (r ? row1 : row0) * stride + col;
#pragma unroll
        for (int nt = 0; nt < NMAX / 8; nt++)
            if (nt * 8 < N)
                *(__nv_bfloat162*)(o + nt * 8 + 2 * tig) = __floats2bfloat162_rn(acc[nt][2 * r], acc[nt][2 * r + 1]);
    }
}

/* ssd3_chunk_state_kernel with a 64 x 128 (P x all of N) output tile per block: grid (nchunks, B*H, ceil(P/64)) */
#define SSD4_CS_LDV (SSD_MAXD + 8)
static inline size_t ssd4_smem_chunk_state(void) {
    return 2 * (size_t)SSD3_ROWS * (72 + SSD4_CS_LDV) * sizeof(floatX) + 2 * SSD3_ROWS * sizeof(float);
}
/* 4 blocks/SM: 128 registers (132 uncapped), 54 KB smem */
template <int NMAX, bool EXACT>
__global__ static void __launch_bounds__(SSD3_THREADS, 4)
ssd4_chunk_state_kernel(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0,
                        const float* dt, const float* cum, int mode, int T, int H, int P, int N, int G, int Q) {
    if (EXACT) N = NMAX;
    extern __shared__ __align__(16) unsigned char ssd3_smem[];
    floatX* Us = (floatX*)ssd3_smem;                       /* 2 x (64, 72) U rows j, P columns p0.. */
    floatX* Vs = Us + 2 * SSD3_ROWS * 72;                  /* 2 x (64, SSD4_CS_LDV) V rows j */
    float* w_s = (float*)(Vs + 2 * SSD3_ROWS * SSD4_CS_LDV);  /* 2 x 64 */
    int nch = ssd_nchunks(T, Q), c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int p0 = blockIdx.z * 64, pw = min(64, P - p0);
    int t0 = c * Q, len = min(Q, T - t0);
    const float* dtc = dt + (size_t)bh * T + t0;
    const float* cumc = cum + (size_t)bh * T + t0;
    float cum_last = cumc[len - 1];
    const floatX* Ub = U + (size_t)(b * T + t0) * u_stride + h * P + p0;
    const floatX* Vb = V + (size_t)(b * T + t0) * v_stride + v_col0 + g * N;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    float acc[NMAX / 8][4];
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    int ntj = CEIL_DIV(len, SSD3_ROWS);
    for (int jt = 0; jt <= ntj; jt++) {
        if (jt < ntj) {  /* issue tile jt (buffer jt & 1), then work on tile jt - 1 */
            int bf = jt & 1, j0 = jt * SSD3_ROWS;
            ssd3_load_tile(Us + bf * SSD3_ROWS * 72, 72, Ub, u_stride, j0, len, pw);
            ssd3_load_tile(Vs + bf * SSD3_ROWS * SSD4_CS_LDV, SSD4_CS_LDV, Vb, v_stride, j0, len, N);
            ssd3_cp_commit();
            if (threadIdx.x < SSD3_ROWS) {
                int j = j0 + threadIdx.x;
                w_s[bf * SSD3_ROWS + threadIdx.x] =
                    j < len ? (mode == 0 ? dtc[j] * expf(cum_last - cumc[j]) : expf(cumc[j])) : 0.f;
            }
        }
        if (jt == 0) continue;
        if (jt < ntj) ssd3_cp_wait<1>(); else ssd3_cp_wait<0>();
        __syncthreads();
        int buf = (jt - 1) & 1;
        const float* wb = w_s + buf * SSD3_ROWS;
        if (m0 < pw) {
            const floatX* ap = Us + buf * SSD3_ROWS * 72 + ((lane % 8) + (lane / 16) * 8) * 72 + m0 +
                               ((lane / 8) % 2) * 8;
            const floatX* bp = Vs + buf * SSD3_ROWS * SSD4_CS_LDV +
                               ((lane % 8) + ((lane / 8) % 2) * 8) * SSD4_CS_LDV + (lane / 16) * 8;
#pragma unroll
            for (int k0 = 0; k0 < SSD3_ROWS; k0 += 16) {
                uint32_t raw[4], ah[4], al[4];
                ssd3_ldsm_t(raw, ap + k0 * 72);
                float w0 = wb[k0 + 2 * tig], w1 = wb[k0 + 2 * tig + 1];
                float w2 = wb[k0 + 8 + 2 * tig], w3 = wb[k0 + 9 + 2 * tig];
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    __nv_bfloat162 v = *(__nv_bfloat162*)&raw[r];
                    float lo = __low2float(v) * (r < 2 ? w0 : w2), hi = __high2float(v) * (r < 2 ? w1 : w3);
                    __nv_bfloat162 vh = __floats2bfloat162_rn(lo, hi);
                    ah[r] = *(uint32_t*)&vh;
                    al[r] = ssd_pack_bf16(lo - __low2float(vh), hi - __high2float(vh));
                }
#pragma unroll
                for (int nt = 0; nt < NMAX / 8; nt += 2) {
                    if (nt * 8 < N) {
                        uint32_t bfr[4];
                        ssd3_ldsm_t(bfr, bp + k0 * SSD4_CS_LDV + nt * 8);
                        ssd_mma_bf16(acc[nt], ah, bfr);
                        ssd_mma_bf16(acc[nt], al, bfr);
                        ssd_mma_bf16(acc[nt + 1], ah, bfr + 2);
                        ssd_mma_bf16(acc[nt + 1], al, bfr + 2);
                    }
                }
            }
        }
        __syncthreads();
    }
    if (m0 >= pw) return;
    float* o = out + ssd_state_off(b, c, h, nch, H, P * N);
    int p = p0 + m0 + lane / 4;
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) {
        if (nt * 8 < N) {
            int n = nt * 8 + 2 * tig;
            *(float2*)(o + (size_t)p * N + n) = make_float2(acc[nt][0], acc[nt][1]);
            *(float2*)(o + (size_t)(p + 8) * N + n) = make_float2(acc[nt][2], acc[nt][3]);
        }
    }
}

/* version 8 (bf16 build): version 7 with these changes to the two backward row-tile kernels below (template flag V8;
   the V8 = false instantiations are version 4's kernels, which versions 4 to 7 run):
   - the grid runs the row tiles of one (b, chunk, head-group) next to each other (blockIdx.x the row tile), so the
     blocks that read the same states (col: dH_c, dC: Hprev_c, 32 KB of fp32 per head at P = 64, N = 128) and the
     same dy / x / B / C rows run in the same wave: the second read hits L2 (version 4 ran all first row tiles, then
     all second ones, and the states, written by the kernel before, came twice from DRAM);
   - the per-head state's split into bf16 hi + lo issues all (col) or half (dC: 168-register cap) of its 16-byte
     loads before the first use: one memory latency per head instead of four;
   - col: the fp32 B_j . C_i slab of the block (64 rows j x the chunk's columns i >= j0, from ssd3_bct_kernel) is
     copied into shared memory once per block by 16-byte cp.async, and each lane reads its pairs (i, i + 1) as one
     8-byte load; version 4 read it from L2 / L1 with one 4-byte load per element for every head of the block;
   - col: the row sums of W are reduced across the warp inside each 32-column half (their 8 partials die there),
     and the epilogue's dy_j comes from the diagonal tile's dy buffer (at Q <= 128 no later tile overwrites it)
     instead of 16 scalar global loads per thread and head.
   Taken where P, N are in {64, 128} (compile-time widths), Q is 64 or 128 (the slab: 64 x 128 floats) and bct,
   the states are 16-byte aligned; else version 7's path. */
#ifndef SSD8_COL_BATCH
#define SSD8_COL_BATCH 16  /* col: 16-byte state loads in flight per thread (16: all of dH at P = 64, N = 128) */
#endif
#define SSD8_SLD 136  /* slab row stride in floats: 128 + 8 (8-byte reads of a quad's 4 lanes x 8 rows: no conflicts) */
static inline size_t ssd8_smem_slab(void) { return (size_t)SSD3_ROWS * SSD8_SLD * sizeof(float); }
/* ssd3_load_split for a compile-time (R, CN) fp32 matrix m (16-byte aligned), hi and lo both written: BATCH
   16-byte loads per thread are issued before any of them is used (ssd3_load_split's loop has 4 in flight) */
template <int R, int CN, int BATCH>
__device__ static inline void ssd8_load_split(floatX* hi, floatX* lo, int ld, const float* m) {
    constexpr int NV = CN / 4, RSTEP = SSD3_THREADS / NV, NPASS = R / RSTEP;
    static_assert(SSD3_THREADS % NV == 0 && R % RSTEP == 0 && NPASS % BATCH == 0, "ssd8_load_split: shape");
    int c = (threadIdx.x % NV) * 4, r0 = threadIdx.x / NV;
#pragma unroll
    for (int p0 = 0; p0 < NPASS; p0 += BATCH) {
        float4 q[BATCH];
#pragma unroll
        for (int k = 0; k < BATCH; k++) q[k] = *(const float4*)(m + (size_t)(r0 + (p0 + k) * RSTEP) * CN + c);
#pragma unroll
        for (int k = 0; k < BATCH; k++) {
            int r = r0 + (p0 + k) * RSTEP;
            __nv_bfloat162 h01 = __floats2bfloat162_rn(q[k].x, q[k].y), h23 = __floats2bfloat162_rn(q[k].z, q[k].w);
            *(uint2*)(hi + r * ld + c) = make_uint2(*(uint32_t*)&h01, *(uint32_t*)&h23);
            uint32_t l01 = ssd_pack_bf16(q[k].x - __low2float(h01), q[k].y - __high2float(h01));
            uint32_t l23 = ssd_pack_bf16(q[k].z - __low2float(h23), q[k].w - __high2float(h23));
            *(uint2*)(lo + r * ld + c) = make_uint2(l01, l23);
        }
    }
}

/* ssd3_bwd_col_kernel for the hg heads h0.. of one head-group (grid (nchunks, B * H/hg, ceil(Q/64)), blockIdx.z the
   row tile): per head, dx_j and the per-row sums exactly as version 3; dB_j summed over the heads in registers
   (dt_j folded into the Z rows) and written once, to dbo + row * dbo_stride + (direct ? dbo_col0 + g N : hgi N). */
#ifndef SSD4_COL_MINBLOCKS
#define SSD4_COL_MINBLOCKS 2  /* 2 blocks/SM without the spill beat 3 with it: 1.471 vs 1.507 ms fwd+bwd (NOTES_ssd.md) */
#endif
#ifndef SSD4_DC_MINBLOCKS
#define SSD4_DC_MINBLOCKS 3   /* without the cap, 177 registers at P = 64, N = 128: only 2 blocks per SM */
#endif
template <int PMAX, int NMAX, bool EXACT, bool V8, bool V9>  /* V9 (with V8): see "version 9" below */
__global__ static void __launch_bounds__(SSD3_THREADS, SSD4_COL_MINBLOCKS)
ssd4_bwd_col_kernel(floatX* dxbc, floatX* dbo, int dbo_stride, int dbo_col0, int direct, float* xdxs, float* xdxs_st,
                    float* xdy, float* colf, float* rowp, const floatX* dy, const floatX* xbc, int xbc_stride,
                    const float* dt, const float* cum, const float* dstates, const float* bct, const float* Dskip,
                    int T, int H, int P, int N, int G, int Q, int hg) {
    if (EXACT) { P = PMAX; N = NMAX; }  /* compile-time widths: the n-tile guards fold, the k loops unroll */
    extern __shared__ __align__(16) unsigned char ssd3_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD3_ROWS), nhg = H / hg;
    /* version 8: grid (nti, nchunks, B * H/hg), the row tiles of one head-group adjacent (see "version 8") */
    int c = V8 ? blockIdx.y : blockIdx.x, rt = V8 ? blockIdx.x : blockIdx.z, bhg = V8 ? blockIdx.z : blockIdx.y;
    int b = bhg / nhg, hgi = bhg % nhg, h0 = hgi * hg;
    int g = h0 / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), j0 = rt * SSD3_ROWS;
    if (j0 >= len) return;
    int E = H * P, ldn = N + 8, ldp = P + 8;
    floatX* Xj = (floatX*)ssd3_smem;             /* (64, ldp) x rows j */
    floatX* Bj = Xj + SSD3_ROWS * ldp;           /* first B rows j (64, ldn), dH hi, lo (2 x (P, ldn)); then */
    floatX* R = Bj + SSD3_ROWS * ldn;
    floatX* Ci = Bj;                             /* the i tiles: 2 x (64, ldn) C rows i */
    floatX* Yi = Ci + 2 * SSD3_ROWS * ldn;       /* 2 x (64, ldp) dy rows i */
    float* ci = (float*)(Bj + ssd3_region_bwd(P, N, 1));  /* 2 x 64 cum_i */
    float* red = ci + 2 * SSD3_ROWS;                    /* 4 warps x 64 partial row sums */
    float* slab = red + 4 * SSD3_ROWS;                  /* version 8: (64, SSD8_SLD) B_j . C_i, columns i - j0 */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Cg = rows + E + G * N + g * N;
    const float* bcc = bct + ((size_t)b * nch + c) * G * Q * Q + (size_t)g * Q * Q;  /* [j][i] = B_j . C_i */
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    int rj[2] = {j0 + m0 + lane / 4, j0 + m0 + lane / 4 + 8};
    int it_end = CEIL_DIV(len, SSD3_ROWS);
    if (V8) {
        /* the slab, once for every head of the block: rows j0.., columns i in [j0, 64 it_end); the bct kernel wrote
           all of them (zeros where a row is past the chunk's end); committed with the first head's tiles */
        int nq = (it_end - rt) * (SSD3_ROWS / 4);
        for (int idx = threadIdx.x; idx < SSD3_ROWS * nq; idx += SSD3_THREADS) {
            int jj = idx / nq, q = idx % nq;
            ssd3_cp_async16(slab + jj * SSD8_SLD + 4 * q, bcc + (size_t)(j0 + jj) * Q + j0 + 4 * q, 1);
        }
    }
    float adb[NMAX / 8][4];  /* dB_j summed over the block's heads */
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) adb[nt][0] = adb[nt][1] = adb[nt][2] = adb[nt][3] = 0.f;
    for (int hh = 0; hh < hg; hh++) {
        int h = h0 + hh, bh = b * H + h;
        const floatX* Yg = dy + (size_t)(b * T + t0) * E + h * P;
        const float* cumc = cum + (size_t)bh * T + t0;
        const float* dtc = dt + (size_t)bh * T + t0;
        ssd3_load_tile(Bj, ldn, rows + E + g * N, xbc_stride, j0, len, N);
        ssd3_load_tile(Xj, ldp, rows + h * P, xbc_stride, j0, len, P);
        ssd3_cp_commit();
        if (V8) {
            constexpr int NPASS = PMAX * NMAX / (4 * SSD3_THREADS);  /* all of them, up to SSD8_COL_BATCH */
            ssd8_load_split<PMAX, NMAX, (NPASS > SSD8_COL_BATCH ? SSD8_COL_BATCH : NPASS)>(
                R, R + P * ldn, ldn, dstates + ssd_state_off(b, c, h, nch, H, P * N));
        } else {
            ssd3_load_split(R, R + P * ldn, ldn, dstates + ssd_state_off(b, c, h, nch, H, P * N), P, N);
        }
        float cum_last = cumc[len - 1], cum_r[2], dt_r[2], es[2];
        /* version 9, the off-diagonal i tiles (it > rt: the j tile is whole, every i > every j): cref = cum of the
           j tile's last row; decay = exp(cum_i - cref) (per column, in ci) times er = exp(cref - cum_j) (per row) */
        float cref = V9 && j0 + SSD3_ROWS <= len ? cumc[j0 + SSD3_ROWS - 1] : 0.f, er[2];
        for (int r = 0; r < 2; r++) {
            int ok = rj[r] < len;
            cum_r[r] = ok ? cumc[rj[r]] : 0.f;
            dt_r[r] = ok ? dtc[rj[r]] : 0.f;
            es[r] = ok ? expf(cum_last - cum_r[r]) : 0.f;
            er[r] = V9 && ok ? __expf(cref - cum_r[r]) : 0.f;
        }
        ssd3_cp_wait<0>();
        __syncthreads();
        float adx[PMAX / 8][4];
#pragma unroll
        for (int nt = 0; nt < PMAX / 8; nt++) adx[nt][0] = adx[nt][1] = adx[nt][2] = adx[nt][3] = 0.f;
        /* state parts: B_j dH^T (B(k = n, col = p) = dH[p, n]) and dt_j x_j dH (B(k = p, n) = dH[p, n]) */
        for (int part = 0; part < 2; part++)
            ssd3_mma_nt<PMAX / 8>(adx, Bj + m0 * ldn, ldn, R + part * P * ldn, ldn, N, P);
#pragma unroll
        for (int nt = 0; nt < PMAX / 8; nt++) {
            adx[nt][0] *= es[0]; adx[nt][1] *= es[0]; adx[nt][2] *= es[1]; adx[nt][3] *= es[1];
        }
        float sd[2] = {es[0] * dt_r[0], es[1] * dt_r[1]};
        ssd4_state_nn<NMAX>(adb, NULL, Xj + m0 * ldp, ldp, R, R + P * ldn, ldn, P, N, sd, NULL, 0);
        float st[2];
        ssd3_rowdot<PMAX / 8>(st, adx, Xj + m0 * ldp, ldp, P);  /* x_j . (state part of dxs_j) */
        __syncthreads();  /* dH no longer needed: its space takes the i tiles */
        ssd3_load_tile(Ci, ldn, Cg, xbc_stride, j0, len, N);
        ssd3_load_tile(Yi, ldp, Yg, E, j0, len, P);
        ssd3_cp_commit();
        if (threadIdx.x < SSD3_ROWS) {
            int i = j0 + threadIdx.x;
            ci[threadIdx.x] = i < len ? cumc[i] : 0.f;
        }
        float colacc[2] = {0.f, 0.f};
        for (int it = rt; it < it_end; it++) {
            int buf = (it - rt) & 1;
            if (it + 1 < it_end) {
                int nb = buf ^ 1, i0n = (it + 1) * SSD3_ROWS;
                ssd3_load_tile(Ci + nb * SSD3_ROWS * ldn, ldn, Cg, xbc_stride, i0n, len, N);
                ssd3_load_tile(Yi + nb * SSD3_ROWS * ldp, ldp, Yg, E, i0n, len, P);
                ssd3_cp_commit();
                if (threadIdx.x < SSD3_ROWS) {  /* version 9: tile it + 1 > rt is off-diagonal: exp(cum_i - cref) */
                    int i = i0n + threadIdx.x;
                    ci[nb * SSD3_ROWS + threadIdx.x] = i >= len ? 0.f : V9 ? __expf(cumc[i] - cref) : cumc[i];
                }
                ssd3_cp_wait<1>();
            } else {
                ssd3_cp_wait<0>();
            }
            __syncthreads();
            const floatX* Cb = Ci + buf * SSD3_ROWS * ldn;
            const floatX* Yb = Yi + buf * SSD3_ROWS * ldp;
            const float* cib = ci + buf * SSD3_ROWS;
            float rp[8][2];
#pragma unroll
            for (int ih = 0; ih < 2; ih++) {  /* two halves of 32 columns i: fewer live registers */
                if (ih == 0 && it == rt && m0 >= 32) {  /* diagonal tile: rows j >= 32 have nothing at i < 32 */
#pragma unroll
                    for (int nt = 0; nt < 4; nt++) rp[nt][0] = rp[nt][1] = 0.f;
                    if (V8 && lane < 4)  /* this warp's row-sum partials of the half: zero */
#pragma unroll
                        for (int k = 0; k < 8; k++) red[warp * SSD3_ROWS + k * 4 + lane] = 0.f;
                    continue;
                }
                float bc[4][4], xy[4][4];
                if (!V8) {
#pragma unroll
                    for (int nt = 0; nt < 4; nt++)  /* B_j . C_i from ssd3_bct_kernel (L2), zero outside the chunk */
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            int i = it * SSD3_ROWS + ih * 32 + nt * 8 + 2 * tig + (e & 1), j = rj[e / 2];
                            bc[nt][e] = i < len && j < len ? bcc[(size_t)j * Q + i] : 0.f;
                        }
                }
#pragma unroll
                for (int nt = 0; nt < 4; nt++) xy[nt][0] = xy[nt][1] = xy[nt][2] = xy[nt][3] = 0.f;
                ssd3_mma_nt<4>(xy, Xj + m0 * ldp, ldp, Yb + ih * 32 * ldp, ldp, P, 32);  /* x_j . dy_i */
                if (V8) {  /* the slab's (i, i + 1) pairs; finite everywhere, the mask below zeroes the decay */
#pragma unroll
                    for (int nt = 0; nt < 4; nt++)
#pragma unroll
                        for (int r = 0; r < 2; r++) {
                            float2 v = *(const float2*)(slab + (m0 + lane / 4 + 8 * r) * SSD8_SLD +
                                                        (it - rt) * SSD3_ROWS + ih * 32 + nt * 8 + 2 * tig);
                            bc[nt][2 * r] = v.x;
                            bc[nt][2 * r + 1] = v.y;
                        }
                }
                if (V9 && it > rt)  /* off-diagonal: no mask (i >= len: 0 in ci), no exp */
#pragma unroll
                    for (int nt = 0; nt < 4; nt++) {
                        rp[ih * 4 + nt][0] = rp[ih * 4 + nt][1] = 0.f;
                        float2 cf = *(const float2*)(cib + ih * 32 + nt * 8 + 2 * tig);
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            int r = e / 2;
                            float dec = ((e & 1) ? cf.y : cf.x) * er[r];
                            float m = bc[nt][e] * dec, zd = xy[nt][e] * dec * dt_r[r];
                            float w = zd * bc[nt][e];
                            colacc[r] += w;
                            rp[ih * 4 + nt][e & 1] += w;
                            bc[nt][e] = m;
                            xy[nt][e] = zd;
                        }
                    }
                else
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    rp[ih * 4 + nt][0] = rp[ih * 4 + nt][1] = 0.f;
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int ii = ih * 32 + nt * 8 + 2 * tig + (e & 1), i = it * SSD3_ROWS + ii, r = e / 2;
                        int ok = i >= rj[r] && i < len && rj[r] < len;
                        float dec = ok ? __expf(cib[ii] - cum_r[r]) : 0.f;
                        float m = bc[nt][e] * dec, zd = xy[nt][e] * dec * dt_r[r];  /* Z[j,i] dt_j */
                        float w = zd * bc[nt][e];                                   /* W[i,j] */
                        colacc[r] += w;
                        rp[ih * 4 + nt][e & 1] += w;
                        bc[nt][e] = m;
                        xy[nt][e] = zd;
                    }
                }
                if (V8)  /* this half's row sums over the warp's 16 rows j now: the 8 partials die here */
#pragma unroll
                    for (int nt = 0; nt < 4; nt++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            float v = rp[ih * 4 + nt][e];
                            v += __shfl_xor_sync(0xffffffffu, v, 4);
                            v += __shfl_xor_sync(0xffffffffu, v, 8);
                            v += __shfl_xor_sync(0xffffffffu, v, 16);
                            if (lane < 4) red[warp * SSD3_ROWS + (ih * 4 + nt) * 8 + 2 * tig + e] = v;
                        }
                uint32_t mf[2][4], zf[2][4];
                ssd3_pack_a<2>(mf, bc);
                ssd3_pack_a<2>(zf, xy);
                ssd3_mma_rn<2, PMAX / 8>(adx, mf, Yb + ih * 32 * ldp, ldp, P);  /* += M dy_i */
                ssd3_mma_rn<2, NMAX / 8>(adb, zf, Cb + ih * 32 * ldn, ldn, N);  /* += (dt Z) C_i */
            }
            /* row sums over this tile's j of W[i, j]: over the 8 row groups of a warp (version 8: done above),
               then the 4 warps in order */
            if (!V8)
#pragma unroll
                for (int k = 0; k < 8; k++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float v = rp[k][e];
                        v += __shfl_xor_sync(0xffffffffu, v, 4);
                        v += __shfl_xor_sync(0xffffffffu, v, 8);
                        v += __shfl_xor_sync(0xffffffffu, v, 16);
                        if (lane < 4) red[warp * SSD3_ROWS + k * 8 + 2 * tig + e] = v;
                    }
            __syncthreads();
            if (threadIdx.x < SSD3_ROWS) {
                int i = it * SSD3_ROWS + threadIdx.x;
                if (i < len)
                    rowp[(((size_t)bh * nch + c) * nti + rt) * Q + i] =
                        red[threadIdx.x] + red[SSD3_ROWS + threadIdx.x] + red[2 * SSD3_ROWS + threadIdx.x] +
                        red[3 * SSD3_ROWS + threadIdx.x];
            }
            __syncthreads();
        }
        /* this head's outputs per row j */
        float xd[2];
        ssd3_rowdot<PMAX / 8>(xd, adx, Xj + m0 * ldp, ldp, P);  /* x_j . dxs_j */
        float Dh = Dskip[h];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int ok = rj[r] < len;
            size_t row = (size_t)(b * T + t0 + (ok ? rj[r] : 0));
            /* version 8: dy_j from the diagonal tile's dy buffer (buffer 0; Q <= 128: no later tile went there) */
            const floatX* dyr = V8 ? Yi + (m0 + lane / 4 + 8 * r) * ldp : dy + row * E + h * P;
            floatX* dxr = dxbc + row * xbc_stride + h * P;
            const floatX* xr = Xj + (m0 + lane / 4 + 8 * r) * ldp;
            float sdy = 0.f;
#pragma unroll
            for (int nt = 0; nt < PMAX / 8; nt++) {
                if (nt * 8 < P && ok) {
                    int p = nt * 8 + 2 * tig;
                    __nv_bfloat162 dv = *(const __nv_bfloat162*)(dyr + p);
                    float d0 = __low2float(dv), d1 = __high2float(dv);
                    sdy += d0 * toF(xr[p]) + d1 * toF(xr[p + 1]);
                    *(__nv_bfloat162*)(dxr + p) = __floats2bfloat162_rn(dt_r[r] * adx[nt][2 * r] + Dh * d0,
                                                                       dt_r[r] * adx[nt][2 * r + 1] + Dh * d1);
                }
            }
            sdy = ssd3_quad_sum(sdy);
            float cs = ssd3_quad_sum(colacc[r]);
            if (ok && tig == 0) {
                size_t o = (size_t)bh * T + t0 + rj[r];
                xdxs[o] = xd[r];
                xdxs_st[o] = st[r];
                xdy[o] = sdy;
                colf[o] = cs;
            }
        }
        __syncthreads();  /* Xj was read above: the next head's tiles overwrite it */
    }
    int col = direct ? dbo_col0 + g * N : hgi * N;
    ssd4_store_rows<NMAX>(dbo, (size_t)dbo_stride, col, adb, (size_t)(b * T + t0 + rj[0]), (size_t)(b * T + t0 + rj[1]),
                          rj[0] < len, rj[1] < len, N);
}

/* ssd3_bwd_dc_kernel for the hg heads h0.. of one head-group (grid as the col kernel's; the last row tile, the
   longest, first): dC_i summed over the heads in registers, rowi per head; written as in ssd4_bwd_col_kernel. */
template <int PMAX, int NMAX, bool EXACT, bool V8>
__global__ static void __launch_bounds__(SSD3_THREADS, SSD4_DC_MINBLOCKS)
ssd4_bwd_dc_kernel(floatX* dco, int dco_stride, int dco_col0, int direct, float* rowi, const floatX* dy,
                   const floatX* xbc, int xbc_stride, const float* dt, const float* cum, const float* states, int T,
                   int H, int P, int N, int G, int Q, int hg) {
    if (EXACT) { P = PMAX; N = NMAX; }  /* compile-time widths: the n-tile guards fold, the k loops unroll */
    extern __shared__ __align__(16) unsigned char ssd3_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD3_ROWS), nhg = H / hg;
    /* version 8: grid (nti, nchunks, B * H/hg), the row tiles of one head-group adjacent, the longest first */
    int c = V8 ? blockIdx.y : blockIdx.x, bhg = V8 ? blockIdx.z : blockIdx.y;
    int rt = nti - 1 - (int)(V8 ? blockIdx.x : blockIdx.z), b = bhg / nhg, hgi = bhg % nhg, h0 = hgi * hg;
    int g = h0 / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD3_ROWS;
    if (i0 >= len) return;
    int E = H * P, ldn = N + 8, ldp = P + 8;
    floatX* Ys = (floatX*)ssd3_smem;             /* (64, ldp) dy rows i */
    floatX* Cs = Ys + SSD3_ROWS * ldp;           /* first C rows i (64, ldn), Hprev hi, lo (2 x (P, ldn)); then */
    floatX* R = Cs + SSD3_ROWS * ldn;
    floatX* Bs = Cs;                             /* the j tiles: 2 x (64, ldn) B rows j */
    floatX* Xs = Bs + 2 * SSD3_ROWS * ldn;       /* 2 x (64, ldp) x rows j */
    float* cj = (float*)(Cs + ssd3_region_bwd(P, N, 1));  /* 2 x 64 cum_j */
    float* dj = cj + 2 * SSD3_ROWS;                     /* 2 x 64 dt_j */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Bg = rows + E + g * N;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    int ri[2] = {i0 + m0 + lane / 4, i0 + m0 + lane / 4 + 8};
    float acc[NMAX / 8][4];  /* dC_i summed over the block's heads */
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    for (int hh = 0; hh < hg; hh++) {
        int h = h0 + hh, bh = b * H + h;
        const floatX* Xg = rows + h * P;
        const float* cumc = cum + (size_t)bh * T + t0;
        const float* dtc = dt + (size_t)bh * T + t0;
        ssd3_load_tile(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
        ssd3_load_tile(Ys, ldp, dy + (size_t)(b * T + t0) * E + h * P, E, i0, len, P);
        ssd3_cp_commit();
        if (V8) {
            /* half of the loads in flight at once: the 168-register cap leaves no room for all */
            ssd8_load_split<PMAX, NMAX, PMAX * NMAX / (8 * SSD3_THREADS)>(
                R, R + P * ldn, ldn, states + ssd_state_off(b, c, h, nch, H, P * N));
        } else {
            ssd3_load_split(R, R + P * ldn, ldn, states + ssd_state_off(b, c, h, nch, H, P * N), P, N);
        }
        float cum_r[2];
        for (int r = 0; r < 2; r++) cum_r[r] = ri[r] < len ? cumc[ri[r]] : 0.f;
        ssd3_cp_wait<0>();
        __syncthreads();
        /* exp(cum_i) dy_i Hprev (B(k = p, n) = Hprev[p, n] = hi + lo), and its dot with C_i (rowi) */
        float e[2] = {expf(cum_r[0]), expf(cum_r[1])}, pw[2] = {0.f, 0.f};
        ssd4_state_nn<NMAX>(acc, pw, Ys + m0 * ldp, ldp, R, R + P * ldn, ldn, P, N, e, Cs + m0 * ldn, ldn);
        pw[0] = ssd3_quad_sum(pw[0]);
        pw[1] = ssd3_quad_sum(pw[1]);
        if (tig == 0)
            for (int r = 0; r < 2; r++)
                if (ri[r] < len) rowi[(size_t)bh * T + t0 + ri[r]] = pw[r];
        __syncthreads();  /* Hprev no longer needed: its space takes the j tiles */
        ssd3_load_tile(Bs, ldn, Bg, xbc_stride, 0, len, N);
        ssd3_load_tile(Xs, ldp, Xg, xbc_stride, 0, len, P);
        ssd3_cp_commit();
        if (threadIdx.x < SSD3_ROWS) {
            int j = threadIdx.x;
            cj[j] = j < len ? cumc[j] : 0.f;
            dj[j] = j < len ? dtc[j] : 0.f;
        }
        for (int jt = 0; jt <= rt; jt++) {
            int buf = jt & 1;
            if (jt < rt) {
                int nb = buf ^ 1, j0n = (jt + 1) * SSD3_ROWS;
                ssd3_load_tile(Bs + nb * SSD3_ROWS * ldn, ldn, Bg, xbc_stride, j0n, len, N);
                ssd3_load_tile(Xs + nb * SSD3_ROWS * ldp, ldp, Xg, xbc_stride, j0n, len, P);
                ssd3_cp_commit();
                if (threadIdx.x < SSD3_ROWS) {
                    int j = j0n + threadIdx.x;
                    cj[nb * SSD3_ROWS + threadIdx.x] = j < len ? cumc[j] : 0.f;
                    dj[nb * SSD3_ROWS + threadIdx.x] = j < len ? dtc[j] : 0.f;
                }
                ssd3_cp_wait<1>();
            } else {
                ssd3_cp_wait<0>();
            }
            __syncthreads();
            const floatX* Bb = Bs + buf * SSD3_ROWS * ldn;
            const floatX* Xb = Xs + buf * SSD3_ROWS * ldp;
            const float* cjb = cj + buf * SSD3_ROWS;
            const float* djb = dj + buf * SSD3_ROWS;
#pragma unroll
            for (int jh = 0; jh < 2; jh++) {
                if (jh == 1 && jt == rt && m0 < 32) continue;  /* diagonal tile: rows i < 32 have nothing at j >= 32 */
                float wd[4][4];
#pragma unroll
                for (int nt = 0; nt < 4; nt++) wd[nt][0] = wd[nt][1] = wd[nt][2] = wd[nt][3] = 0.f;
                ssd3_mma_nt<4>(wd, Ys + m0 * ldp, ldp, Xb + jh * 32 * ldp, ldp, P, 32);  /* dy_i . x_j */
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
#pragma unroll
                    for (int k = 0; k < 4; k++) {
                        int jj = jh * 32 + nt * 8 + 2 * tig + (k & 1), j = jt * SSD3_ROWS + jj, r = k / 2;
                        int ok = j <= ri[r] && ri[r] < len && j < len;
                        wd[nt][k] = ok ? wd[nt][k] * __expf(cum_r[r] - cjb[jj]) * djb[jj] : 0.f;
                    }
                uint32_t wf[2][4];
                ssd3_pack_a<2>(wf, wd);
                ssd3_mma_rn<2, NMAX / 8>(acc, wf, Bb + jh * 32 * ldn, ldn, N);  /* += WD B_j */
            }
            __syncthreads();  /* (the last one also frees Ys, Cs for the next head) */
        }
    }
    int col = direct ? dco_col0 + g * N : hgi * N;
    ssd4_store_rows<NMAX>(dco, (size_t)dco_stride, col, acc, (size_t)(b * T + t0 + ri[0]), (size_t)(b * T + t0 + ri[1]),
                          ri[0] < len, ri[1] < len, N);
}

/* dB, dC of each group = the sum of its H/(G hg) head-group partials (B*T, H/hg, N) bf16, in order; 8 columns (16
   bytes) per thread */
__global__ static void ssd4_group_sum_kernel(floatX* dxbc, int xbc_stride, const floatX* pB, const floatX* pC, int BT,
                                             int nhg, int N, int G, int E) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    int nv = N / 8;
    if (idx >= (size_t)BT * G * nv) return;
    int n = (int)(idx % nv) * 8, g = (int)((idx / nv) % G);
    size_t row = idx / ((size_t)G * nv);
    int kpg = nhg / G;
    float sB[8], sC[8];
#pragma unroll
    for (int e = 0; e < 8; e++) sB[e] = sC[e] = 0.f;
    for (int k = g * kpg; k < (g + 1) * kpg; k++) {
        float4 vb = *(const float4*)(pB + (row * nhg + k) * N + n), vc = *(const float4*)(pC + (row * nhg + k) * N + n);
        const floatX* eb = (const floatX*)&vb;
        const floatX* ec = (const floatX*)&vc;
#pragma unroll
        for (int e = 0; e < 8; e++) { sB[e] += toF(eb[e]); sC[e] += toF(ec[e]); }
    }
    float4 ob, oc;
    floatX* pb = (floatX*)&ob;
    floatX* pc = (floatX*)&oc;
#pragma unroll
    for (int e = 0; e < 8; e++) { pb[e] = fromF(sB[e]); pc[e] = fromF(sC[e]); }
    *(float4*)(dxbc + row * xbc_stride + E + g * N + n) = ob;
    *(float4*)(dxbc + row * xbc_stride + E + G * N + g * N + n) = oc;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* version 5 (bf16 build, sm_90a): version 4 with the forward chunk scan on Hopper's warpgroup products (wgmma,
   llmc/wgmma.cuh). One warpgroup (4 warps, 128 threads) per 64 rows i of a (b, h, chunk), the same grid and
   algorithm as ssd3_scan_fwd_kernel; what changes is how the products run:
     state term  acc  = C_i Hprev^T          wgmma, A = C_i tile, B = Hprev (bf16, rows p), both K-major in shared
                 acc *= exp(cum_i) per row   in registers
     per j tile  S    = C_i B_j^T            wgmma m64n64k16 x N/16, A = C_i, B = B_j tile (K-major), fp32 registers
                 S   *= exp(cum_i - cum_j) dt_j, masked j <= i on the diagonal tile (in registers)
                 acc += S x_j                wgmma with A = S repacked to bf16 registers, B = x_j tile (p contiguous:
                                             MN-major, the transpose bit)
     epilogue    y = acc + D x_i
   The products are issued by the whole warpgroup and run asynchronously; the warps stop issuing ldmatrix / mma.sync
   chains (version 3: 8 ldmatrix + 16 mma.sync per warp per k step) and issue one wgmma per 64 x 64 x 16 step.
   Tiles are in shared memory as core matrices without swizzle (wgmma.cuh), filled by cp.async 16 bytes per thread
   (8 consecutive threads fill one 128-byte core matrix); the next j tile loads while this one is used, with one
   barrier per j tile. Hprev is rounded to bf16 once, as in version 3's forward (y is bf16; the backward does not
   read y, so the cancellation rules of the backward do not apply here).
   Compile-time P (64 or 128) and N (64 or 128): the k loops unroll, which keeps ptxas from serializing the wgmmas;
   other shapes run version 4's forward. Needs the sm_90a target (the Makefile's CUDA_ARCH); built for another
   target the kernel stops with a message instead of computing. */
#include "wgmma.cuh"

#define SSD5_ROWS 64

/* rows [r0, r0 + ROWS) of a bf16 row-major matrix (NC columns) into a core-matrix tile (wg_tile_offset); rows at
   or past nvalid are zero. Two thread orders (LINES):
   0: thread idx writes the 16 bytes at element idx * 8 of the tile: 8 consecutive threads fill one 128-byte core
      matrix (8 rows, the same 8 columns): no bank conflicts; a warp reads 64 contiguous bytes of each of 8 rows.
   1: 4 consecutive threads take 4 rows of one 8-column chunk, a warp 4 rows x 8 chunks: it reads 4 whole 128-byte
      lines (half the lines per request of order 0, for the L2) and its shared-memory writes conflict 2-way. */
template <int ROWS, int NC, int NTHR, int LINES>
__device__ static inline void ssd5_load_tile(floatX* dst, const floatX* src, size_t gstride, int r0, int nvalid) {
#pragma unroll 4
    for (int idx = threadIdx.x; idx < ROWS * NC / 8; idx += NTHR) {
        int r, v;
        if (LINES) { r = (idx / (NC / 2)) * 4 + (idx & 3); v = (idx >> 2) % (NC / 8); }
        else { r = (idx / NC) * 8 + (idx & 7); v = (idx >> 3) % (NC / 8); }
        int ok = r0 + r < nvalid;
        ssd3_cp_async16(dst + (LINES ? wg_tile_offset(r, 8 * v, NC) : idx * 8),
                        src + (ok ? (size_t)(r0 + r) * gstride + v * 8 : 0), ok);
    }
}

/* the fp32 (R, NC) state into a bf16 core-matrix tile (rows p, columns n), same thread order as ssd5_load_tile */
template <int R, int NC, int NTHR>
__device__ static inline void ssd5_load_state(floatX* dst, const float* m) {
#pragma unroll 4
    for (int idx = threadIdx.x; idx < R * NC / 8; idx += NTHR) {
        int r = (idx / NC) * 8 + (idx & 7), v = (idx >> 3) % (NC / 8);
        const float4* src = (const float4*)(m + (size_t)r * NC + v * 8);
        float4 q0 = src[0], q1 = src[1];
        uint4 o = make_uint4(ssd_pack_bf16(q0.x, q0.y), ssd_pack_bf16(q0.z, q0.w), ssd_pack_bf16(q1.x, q1.y),
                             ssd_pack_bf16(q1.z, q1.w));
        *(uint4*)(dst + idx * 8) = o;
    }
}

/* shared memory (bf16 elements): Cs (64 WGS x N) | Bs0 (64 x N) | Xs0 (64 x P) | region: Hprev (P x N), then
   Bs1 (64 x N) Xs1 (64 x P) | cum_j, dt_j (2 x 64 floats each). P = 64, N = 128: 65.5 KB at WGS = 1 (3 blocks
   per SM), 81.5 KB at WGS = 2 (2 blocks per SM). */
static inline size_t ssd5_smem_fwd(int P, int N, int wgs) {
    size_t region = ssd3_max((size_t)P * N, (size_t)SSD5_ROWS * (N + P));
    return ((size_t)(wgs + 1) * SSD5_ROWS * N + (size_t)SSD5_ROWS * P + region) * sizeof(floatX) +
           4 * SSD5_ROWS * sizeof(float);
}

template <int PT, int NK, int WGS, int LINES>  /* P = 64 PT, N = 16 NK, WGS warpgroups per block, LINES: load order */
__global__ static void __launch_bounds__(SSD3_THREADS * WGS, WGS == 2 ? 2 : 1)
ssd5_scan_fwd_kernel(floatX* y, const floatX* xbc, int xbc_stride, const float* dt, const float* cum,
                     const float* states, const float* Dskip, int T, int H, int G, int Q) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int P = 64 * PT, N = 16 * NK, NTHR = SSD3_THREADS * WGS;
    constexpr uint32_t KSBO = N * 16;  /* K-major tiles of N columns: bytes between 8-row groups */
    constexpr uint32_t XLBO = P * 16;  /* the x tile (MN-major, P columns): bytes between 8-row (k) groups */
    extern __shared__ __align__(128) unsigned char ssd5_smem[];
    int nch = ssd_nchunks(T, Q), ngr = CEIL_DIV(CEIL_DIV(Q, SSD5_ROWS), WGS);
    int c = blockIdx.x / ngr, rg = blockIdx.x % ngr, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), ib = rg * WGS * SSD5_ROWS;
    if (ib >= len) return;
    /* this warpgroup's row tile rt (rows i0..); the block's last j tile jlast (its last row tile with rows) */
    int wg = threadIdx.x / SSD3_THREADS, rt = rg * WGS + wg, i0 = rt * SSD5_ROWS;
    int jlast = min(rg * WGS + WGS, CEIL_DIV(len, SSD5_ROWS)) - 1, active = i0 < len;
    int E = H * P;
    floatX* Cs = (floatX*)ssd5_smem;          /* 64 WGS rows: warpgroup wg's are rows 64 wg.. */
    floatX* Bs0 = Cs + WGS * SSD5_ROWS * N;
    floatX* Xs0 = Bs0 + SSD5_ROWS * N;
    floatX* Hs = Xs0 + SSD5_ROWS * P;  /* Hprev, then buffer 1: */
    floatX* Bs1 = Hs;
    floatX* Xs1 = Hs + SSD5_ROWS * N;
    float* cj = (float*)(Hs + (P * N > SSD5_ROWS * (N + P) ? P * N : SSD5_ROWS * (N + P)));  /* 2 x 64 cum_j */
    float* dj = cj + 2 * SSD5_ROWS;                                                       /* 2 x 64 dt_j */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    const floatX* Bg = rows + E + g * N;
    const floatX* Xg = rows + h * P;
    ssd5_load_tile<WGS * SSD5_ROWS, N, NTHR, LINES>(Cs, rows + E + G * N + g * N, xbc_stride, ib, len);
    ssd5_load_tile<SSD5_ROWS, N, NTHR, LINES>(Bs0, Bg, xbc_stride, 0, len);
    ssd5_load_tile<SSD5_ROWS, P, NTHR, LINES>(Xs0, Xg, xbc_stride, 0, len);
    ssd3_cp_commit();
    if (threadIdx.x < SSD5_ROWS) {
        int j = threadIdx.x;
        cj[j] = j < len ? cumc[j] : 0.f;
        dj[j] = j < len ? dtc[j] : 0.f;
    }
    ssd5_load_state<P, N, NTHR>(Hs, states + ssd_state_off(b, c, h, nch, H, P * N));
    const floatX* Cw = Cs + wg * SSD5_ROWS * N;
    int warp = (threadIdx.x % SSD3_THREADS) / 32, lane = threadIdx.x % 32, tig = lane % 4;
    int ri[2] = {i0 + warp * 16 + lane / 4, i0 + warp * 16 + lane / 4 + 8};
    /* rows past the chunk's end take the chunk's smallest cum: every exp() argument below stays <= 0 (no inf * 0) */
    float cum_r[2];
    for (int r = 0; r < 2; r++) cum_r[r] = cumc[min(ri[r], len - 1)];
    ssd3_cp_wait<0>();
    wg_fence_proxy_async();
    __syncthreads();
    /* inter-chunk: exp(cum_i) C_i Hprev^T */
    float acc[PT][32];
#pragma unroll
    for (int pt = 0; pt < PT; pt++) {
#pragma unroll
        for (int e = 0; e < 32; e++) acc[pt][e] = 0.f;
        wg_pin_acc(acc[pt]);
    }
    if (active) {  /* uniform over the warpgroup: its products run converged */
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < NK; ks++) {
            uint64_t da = wg_desc(Cw + ks * 128, 128, KSBO);
#pragma unroll
            for (int pt = 0; pt < PT; pt++)
                wg_mma_ss<0, 0>(acc[pt], da, wg_desc(Hs + pt * 64 * N + ks * 128, 128, KSBO));
        }
        wg_commit();
        wg_wait<0>();
    }
    float e0 = expf(cum_r[0]), e1 = expf(cum_r[1]);
#pragma unroll
    for (int pt = 0; pt < PT; pt++) {
        wg_pin_acc(acc[pt]);
#pragma unroll
        for (int e = 0; e < 32; e++) acc[pt][e] *= (e & 2) ? e1 : e0;
    }
    /* intra-chunk: the j tiles up to the block's last diagonal one; tile jt + 1 loads while tile jt is used */
    for (int jt = 0; jt <= jlast; jt++) {
        int buf = jt & 1;
        ssd3_cp_wait<0>();
        wg_fence_proxy_async();
        __syncthreads();  /* tile jt landed for all threads; every warp is done with tile jt - 1 (and Hprev) */
        if (jt < jlast) {
            int j0n = (jt + 1) * SSD5_ROWS;
            ssd5_load_tile<SSD5_ROWS, N, NTHR, LINES>(buf ? Bs0 : Bs1, Bg, xbc_stride, j0n, len);
            ssd5_load_tile<SSD5_ROWS, P, NTHR, LINES>(buf ? Xs0 : Xs1, Xg, xbc_stride, j0n, len);
            ssd3_cp_commit();
            if (threadIdx.x < SSD5_ROWS) {
                int j = j0n + threadIdx.x;
                cj[(buf ^ 1) * SSD5_ROWS + threadIdx.x] = j < len ? cumc[j] : 0.f;
                dj[(buf ^ 1) * SSD5_ROWS + threadIdx.x] = j < len ? dtc[j] : 0.f;
            }
        }
        if (jt > rt || !active) continue;  /* past this warpgroup's diagonal (uniform over the warpgroup) */
        const floatX* Bb = buf ? Bs1 : Bs0;
        const floatX* Xb = buf ? Xs1 : Xs0;
        const float* cjb = cj + buf * SSD5_ROWS;
        const float* djb = dj + buf * SSD5_ROWS;
        float s[32];
#pragma unroll
        for (int e = 0; e < 32; e++) s[e] = 0.f;
        wg_pin_acc(s);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < NK; ks++)  /* S = C_i . B_j */
            wg_mma_ss<0, 0>(s, wg_desc(Cw + ks * 128, 128, KSBO), wg_desc(Bb + ks * 128, 128, KSBO));
        wg_commit();
        wg_wait<0>();
        wg_pin_acc(s);
        /* s[4 nt + e]: row ri[e / 2], column jj = 8 nt + 2 tig + e % 2 of the j tile */
        if (jt < rt) {
#pragma unroll
            for (int e = 0; e < 32; e++) {
                int jj = 8 * (e / 4) + 2 * tig + (e & 1);
                s[e] *= __expf(cum_r[(e >> 1) & 1] - cjb[jj]) * djb[jj];
            }
        } else {
#pragma unroll
            for (int e = 0; e < 32; e++) {
                int jj = 8 * (e / 4) + 2 * tig + (e & 1), r = (e >> 1) & 1;
                s[e] = jt * SSD5_ROWS + jj <= ri[r] ? s[e] * __expf(cum_r[r] - cjb[jj]) * djb[jj] : 0.f;
            }
        }
        uint32_t sf[4][4];  /* the 64 x 64 score tile as 4 k16 A fragments (wgmma.cuh's register layout) */
#pragma unroll
        for (int ks = 0; ks < 4; ks++) {
            sf[ks][0] = ssd_pack_bf16(s[8 * ks + 0], s[8 * ks + 1]);
            sf[ks][1] = ssd_pack_bf16(s[8 * ks + 2], s[8 * ks + 3]);
            sf[ks][2] = ssd_pack_bf16(s[8 * ks + 4], s[8 * ks + 5]);
            sf[ks][3] = ssd_pack_bf16(s[8 * ks + 6], s[8 * ks + 7]);
        }
#pragma unroll
        for (int pt = 0; pt < PT; pt++) wg_pin_acc(acc[pt]);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < 4; ks++)  /* acc += S x_j */
#pragma unroll
            for (int pt = 0; pt < PT; pt++)
                wg_mma_rs<1>(acc[pt], sf[ks], wg_desc(Xb + wg_tile_offset(16 * ks, 64 * pt, P), XLBO, 128));
        wg_commit();
        wg_wait<0>();
#pragma unroll
        for (int pt = 0; pt < PT; pt++) wg_pin_acc(acc[pt]);
    }
    if (!active) return;
    /* y = acc + D x_i. x_i is the x tile of the diagonal iteration jt = rt, still in its buffer: no later iteration
       loads into it (the block's last prefetch is of tile jlast <= rt + 1, into the other buffer) */
    const floatX* Xd = (rt & 1) ? Xs1 : Xs0;
    float Dh = Dskip[h];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (ri[r] >= len) continue;
        size_t row = (size_t)(b * T + t0 + ri[r]);
        floatX* yr = y + row * E + h * P;
#pragma unroll
        for (int pt = 0; pt < PT; pt++)
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                int p = 64 * pt + nt * 8 + 2 * tig;
                __nv_bfloat162 xv = *(const __nv_bfloat162*)(Xd + wg_tile_offset(ri[r] - i0, p, P));
                *(__nv_bfloat162*)(yr + p) = __floats2bfloat162_rn(acc[pt][4 * nt + 2 * r] + Dh * __low2float(xv),
                                                                  acc[pt][4 * nt + 2 * r + 1] + Dh * __high2float(xv));
            }
    }
#else
    if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0)
        printf("ssd5_scan_fwd_kernel: built without the sm_90a target (wgmma); build with "
               "-gencode=arch=compute_90a,code=sm_90a, or set ssd_fast_version = 4\n");
    __trap();
#endif
}

/* ------------------------------------------------------------------------------------------------------------ */
/* version 6 (bf16 build, sm_90a), the wgmma ports that did NOT pay: the chunk-state kernel and the backward's dC
   kernel on wgmma. Both pass every check but measured slower than version 4's mma.sync kernels on the H100 (Q = 128,
   B=8 T=2048: chunk state 107 against 84 us, dC 333 against 308 us; dev/cuda/NOTES_ssd.md, "Version 6"), so they
   are off by default (ssd6_parts bits 1 and 2; dev/cuda/ssd.cu's "parts=7 6" runs them). Version 6's default part
   is the two-heads-per-block forward (ssd6_scan_fwd_kernel, below them).
   ssd6_chunk_state_kernel  out (64 rows p, all N) = sum_j (w_j U_j)^T V_j for one (b, h, chunk), one warpgroup:
       A = (w_j U_j)^T from registers: each warp reads raw U fragments with ldmatrix.trans (a padded row-major
       tile, as version 4), scales them by w_j and splits them in hi + lo bf16 (the fp32 states keep ~16 bits,
       as the backward's cancellation rules need); B = the V tile (rows j, n contiguous: MN-major core matrices).
       Per 64-row j tile: 4 k16 steps x N/64 x 2 (hi, lo) wgmma m64n64k16, issued together, one wait.
   ssd6_bwd_dc_kernel       version 4's dC kernel (hg heads of a group per block, dC_i summed over them in
       registers) with the products on wgmma, laid out as version 5's forward with (C, B, x) -> (dy, x, B):
         state term  t = dy_i (Hprev hi + Hprev lo) per 64 columns n (A = dy_i tile, B = Hprev, MN-major),
                     t *= exp(cum_i) per row; rowi = t . C_i; acc += t
         per j tile  WD = dy_i x_j^T (both K-major), masked j <= i, scaled by exp(cum_i - cum_j) dt_j in fp32
                     registers, repacked to bf16 as the A operand of acc += WD B_j (B_j tile MN-major)
       C_i stays in shared memory for all the block's heads (version 4 reloaded it per head).
   Both take P a multiple of 64 (dC: P in {64, 128}) and N in {64, 128}; other shapes run version 4's kernels. */
#define SSD6_ULD 72  /* U tile row stride: 64 + 8 (the 8 rows of an ldmatrix land in 8 different bank groups) */
static inline size_t ssd6_smem_chunk_state(int N) {
    return 2 * (size_t)SSD5_ROWS * (SSD6_ULD + N) * sizeof(floatX) + 2 * SSD5_ROWS * sizeof(float);
}
template <int NT>  /* N = 64 NT; grid (nchunks, B*H, P/64); 4 blocks per SM */
__global__ static void __launch_bounds__(SSD3_THREADS, 4)
ssd6_chunk_state_kernel(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0,
                        const float* dt, const float* cum, int mode, int T, int H, int P, int G, int Q) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int N = 64 * NT;
    constexpr uint32_t VLBO = N * 16;  /* MN-major V tile: bytes between 8-row (k) groups */
    extern __shared__ __align__(128) unsigned char ssd6_smem[];
    floatX* Us = (floatX*)ssd6_smem;                    /* 2 x (64, SSD6_ULD) U rows j, columns p0.. */
    floatX* Vs = Us + 2 * SSD5_ROWS * SSD6_ULD;         /* 2 x (64 x N) core matrices, V rows j */
    float* w_s = (float*)(Vs + 2 * SSD5_ROWS * N);      /* 2 x 64 */
    int nch = ssd_nchunks(T, Q), c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int p0 = blockIdx.z * 64, t0 = c * Q, len = min(Q, T - t0);
    const float* dtc = dt + (size_t)bh * T + t0;
    const float* cumc = cum + (size_t)bh * T + t0;
    float cum_last = cumc[len - 1];
    const floatX* Ub = U + (size_t)(b * T + t0) * u_stride + h * P + p0;
    const floatX* Vb = V + (size_t)(b * T + t0) * v_stride + v_col0 + g * N;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tig = lane % 4;
    int ntj = CEIL_DIV(len, SSD5_ROWS);
    float acc[NT][32];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
#pragma unroll
        for (int e = 0; e < 32; e++) acc[nt][e] = 0.f;
        wg_pin_acc(acc[nt]);
    }
    for (int jt = 0; jt <= ntj; jt++) {
        if (jt < ntj) {  /* issue tile jt into buffer jt & 1 (free: the wgmmas of tile jt - 2 were waited for) */
            int bf = jt & 1, j0 = jt * SSD5_ROWS;
            ssd3_load_tile(Us + bf * SSD5_ROWS * SSD6_ULD, SSD6_ULD, Ub, u_stride, j0, len, 64);
            ssd5_load_tile<SSD5_ROWS, N, SSD3_THREADS, 1>(Vs + bf * SSD5_ROWS * N, Vb, v_stride, j0, len);
            ssd3_cp_commit();
            if (threadIdx.x < SSD5_ROWS) {
                int j = j0 + threadIdx.x;
                w_s[bf * SSD5_ROWS + threadIdx.x] =
                    j < len ? (mode == 0 ? dtc[j] * expf(cum_last - cumc[j]) : expf(cumc[j])) : 0.f;
            }
        }
        if (jt == 0) continue;
        if (jt < ntj) ssd3_cp_wait<1>(); else ssd3_cp_wait<0>();
        wg_fence_proxy_async();
        __syncthreads();  /* tile jt - 1 (and its w_j) visible to every thread */
        int buf = (jt - 1) & 1;
        const float* wb = w_s + buf * SSD5_ROWS;
        const floatX* ap = Us + buf * SSD5_ROWS * SSD6_ULD + ((lane % 8) + (lane / 16) * 8) * SSD6_ULD + warp * 16 +
                           ((lane / 8) % 2) * 8;
        const floatX* vb = Vs + buf * SSD5_ROWS * N;
        uint32_t ah[4][4], al[4][4];  /* A = (w_j U_j)^T, k16 steps ks: rows p (16 per warp), k = j */
#pragma unroll
        for (int ks = 0; ks < 4; ks++) {
            uint32_t raw[4];
            ssd3_ldsm_t(raw, ap + ks * 16 * SSD6_ULD);
            int k0 = 16 * ks;
            float w0 = wb[k0 + 2 * tig], w1 = wb[k0 + 2 * tig + 1], w2 = wb[k0 + 8 + 2 * tig], w3 = wb[k0 + 9 + 2 * tig];
#pragma unroll
            for (int r = 0; r < 4; r++) {
                __nv_bfloat162 v = *(__nv_bfloat162*)&raw[r];
                float lo = __low2float(v) * (r < 2 ? w0 : w2), hi = __high2float(v) * (r < 2 ? w1 : w3);
                __nv_bfloat162 vh = __floats2bfloat162_rn(lo, hi);
                ah[ks][r] = *(uint32_t*)&vh;
                al[ks][r] = ssd_pack_bf16(lo - __low2float(vh), hi - __high2float(vh));
            }
        }
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < 4; ks++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                uint64_t dv = wg_desc(vb + wg_tile_offset(16 * ks, 64 * nt, N), VLBO, 128);
                wg_mma_rs<1>(acc[nt], ah[ks], dv);
                wg_mma_rs<1>(acc[nt], al[ks], dv);
            }
        wg_commit();
        wg_wait<0>();
#pragma unroll
        for (int nt = 0; nt < NT; nt++) wg_pin_acc(acc[nt]);
        __syncthreads();  /* every warp is done with buffer buf before the next iteration loads into it */
    }
    float* o = out + ssd_state_off(b, c, h, nch, H, P * N);
    int p = p0 + warp * 16 + lane / 4;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int q = 0; q < 8; q++) {
            int n = 64 * nt + 8 * q + 2 * tig;
            *(float2*)(o + (size_t)p * N + n) = make_float2(acc[nt][4 * q], acc[nt][4 * q + 1]);
            *(float2*)(o + (size_t)(p + 8) * N + n) = make_float2(acc[nt][4 * q + 2], acc[nt][4 * q + 3]);
        }
#else
    if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0)
        printf("ssd6_chunk_state_kernel: built without the sm_90a target (wgmma); build with "
               "-gencode=arch=compute_90a,code=sm_90a, or set ssd_fast_version = 4\n");
    __trap();
#endif
}

/* the fp32 (R, NC) state into two bf16 core-matrix tiles hi and lo = the rounding error of hi (rows p, columns n) */
template <int R, int NC, int NTHR>
__device__ static inline void ssd6_load_state_split(floatX* hi, floatX* lo, const float* m) {
#pragma unroll 2
    for (int idx = threadIdx.x; idx < R * NC / 8; idx += NTHR) {
        int r = (idx / NC) * 8 + (idx & 7), v = (idx >> 3) % (NC / 8);
        const float4* src = (const float4*)(m + (size_t)r * NC + v * 8);
        float4 q0 = src[0], q1 = src[1];
        float f[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
        uint32_t oh[4], ol[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            __nv_bfloat162 vh = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
            oh[k] = *(uint32_t*)&vh;
            ol[k] = ssd_pack_bf16(f[2 * k] - __low2float(vh), f[2 * k + 1] - __high2float(vh));
        }
        *(uint4*)(hi + idx * 8) = make_uint4(oh[0], oh[1], oh[2], oh[3]);
        *(uint4*)(lo + idx * 8) = make_uint4(ol[0], ol[1], ol[2], ol[3]);
    }
}

/* shared memory (bf16 elements): Ys (64 x P) | Cs (64 x N) | region: Hprev hi, lo (2 x P x N), then the j tiles
   Bs0 (64 x N) Xs0 (64 x P) Bs1 Xs1 | cum_j, dt_j (2 x 64 floats each). P = 64, N = 128: 73 KB, 3 blocks per SM. */
static inline size_t ssd6_smem_dc(int P, int N) {
    size_t region = ssd3_max((size_t)2 * P * N, (size_t)2 * SSD5_ROWS * (N + P));
    return ((size_t)SSD5_ROWS * (P + N) + region) * sizeof(floatX) + 4 * SSD5_ROWS * sizeof(float);
}
#ifndef SSD6_DC_MINBLOCKS
#define SSD6_DC_MINBLOCKS 3
#endif
template <int PT, int NT>  /* P = 64 PT, N = 64 NT; grid (nchunks, B * H/hg, ceil(Q/64)) as version 4's */
__global__ static void __launch_bounds__(SSD3_THREADS, SSD6_DC_MINBLOCKS)
ssd6_bwd_dc_kernel(floatX* dco, int dco_stride, int dco_col0, int direct, float* rowi, const floatX* dy,
                   const floatX* xbc, int xbc_stride, const float* dt, const float* cum, const float* states, int T,
                   int H, int G, int Q, int hg) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int P = 64 * PT, N = 64 * NT;
    constexpr uint32_t PSBO = P * 16;  /* K-major tiles of P columns (dy_i, x_j): bytes between 8-row groups */
    constexpr uint32_t NLBO = N * 16;  /* MN-major tiles of N columns (Hprev, B_j): bytes between 8-row k groups */
    extern __shared__ __align__(128) unsigned char ssd6_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD5_ROWS), nhg = H / hg;
    int c = blockIdx.x, rt = nti - 1 - (int)blockIdx.z, b = blockIdx.y / nhg, hgi = blockIdx.y % nhg, h0 = hgi * hg;
    int g = h0 / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD5_ROWS;
    if (i0 >= len) return;
    int E = H * P;
    floatX* Ys = (floatX*)ssd6_smem;  /* dy rows i of the current head */
    floatX* Cs = Ys + SSD5_ROWS * P;  /* C rows i (the group's: the same for every head of the block) */
    floatX* Rg = Cs + SSD5_ROWS * N;  /* region: Hprev hi, lo; then the j tiles */
    floatX* Hhi = Rg;
    floatX* Hlo = Rg + P * N;
    floatX* Bs0 = Rg;
    floatX* Xs0 = Bs0 + SSD5_ROWS * N;
    floatX* Bs1 = Xs0 + SSD5_ROWS * P;
    floatX* Xs1 = Bs1 + SSD5_ROWS * N;
    float* cj = (float*)(Rg + (2 * P * N > 2 * SSD5_ROWS * (N + P) ? 2 * P * N : 2 * SSD5_ROWS * (N + P)));
    float* dj = cj + 2 * SSD5_ROWS;
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Bg = rows + E + g * N;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tig = lane % 4;
    int rl[2] = {warp * 16 + lane / 4, warp * 16 + lane / 4 + 8};  /* this thread's accumulator rows in the tile */
    int ri[2] = {i0 + rl[0], i0 + rl[1]};
    ssd5_load_tile<SSD5_ROWS, N, SSD3_THREADS, 1>(Cs, rows + E + G * N + g * N, xbc_stride, i0, len);
    float acc[NT][32];  /* dC_i summed over the block's heads */
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
#pragma unroll
        for (int e = 0; e < 32; e++) acc[nt][e] = 0.f;
        wg_pin_acc(acc[nt]);
    }
    for (int hh = 0; hh < hg; hh++) {
        int h = h0 + hh, bh = b * H + h;
        const floatX* Xg = rows + h * P;
        const float* cumc = cum + (size_t)bh * T + t0;
        const float* dtc = dt + (size_t)bh * T + t0;
        if (hh > 0) __syncthreads();  /* the previous head is done with Ys and the region */
        ssd5_load_tile<SSD5_ROWS, P, SSD3_THREADS, 1>(Ys, dy + (size_t)(b * T + t0) * E + h * P, E, i0, len);
        ssd3_cp_commit();
        ssd6_load_state_split<P, N, SSD3_THREADS>(Hhi, Hlo, states + ssd_state_off(b, c, h, nch, H, P * N));
        float cum_r[2];
        for (int r = 0; r < 2; r++) cum_r[r] = ri[r] < len ? cumc[ri[r]] : 0.f;
        ssd3_cp_wait<0>();
        wg_fence_proxy_async();
        __syncthreads();
        /* state term: exp(cum_i) dy_i Hprev (Hprev = hi + lo), its dot with C_i (rowi), 64 columns n at a time */
        float e[2] = {expf(cum_r[0]), expf(cum_r[1])}, pw[2] = {0.f, 0.f};
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            float t[32];
#pragma unroll
            for (int k = 0; k < 32; k++) t[k] = 0.f;
            wg_pin_acc(t);
            wg_fence();
#pragma unroll
            for (int ks = 0; ks < P / 16; ks++) {
                uint64_t da = wg_desc(Ys + ks * 128, 128, PSBO);
                wg_mma_ss<0, 1>(t, da, wg_desc(Hhi + wg_tile_offset(16 * ks, 64 * nt, N), NLBO, 128));
                wg_mma_ss<0, 1>(t, da, wg_desc(Hlo + wg_tile_offset(16 * ks, 64 * nt, N), NLBO, 128));
            }
            wg_commit();
            wg_wait<0>();
            wg_pin_acc(t);
#pragma unroll
            for (int q = 0; q < 8; q++) {
                int n = 64 * nt + 8 * q + 2 * tig;
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    float a0 = t[4 * q + 2 * r] * e[r], a1 = t[4 * q + 2 * r + 1] * e[r];
                    __nv_bfloat162 cv = *(const __nv_bfloat162*)(Cs + wg_tile_offset(rl[r], n, N));
                    pw[r] += a0 * __low2float(cv) + a1 * __high2float(cv);
                    acc[nt][4 * q + 2 * r] += a0;
                    acc[nt][4 * q + 2 * r + 1] += a1;
                }
            }
        }
        pw[0] = ssd3_quad_sum(pw[0]);
        pw[1] = ssd3_quad_sum(pw[1]);
        if (tig == 0)
            for (int r = 0; r < 2; r++)
                if (ri[r] < len) rowi[(size_t)bh * T + t0 + ri[r]] = pw[r];
        __syncthreads();  /* Hprev no longer needed: its space takes the j tiles */
        ssd5_load_tile<SSD5_ROWS, N, SSD3_THREADS, 1>(Bs0, Bg, xbc_stride, 0, len);
        ssd5_load_tile<SSD5_ROWS, P, SSD3_THREADS, 1>(Xs0, Xg, xbc_stride, 0, len);
        ssd3_cp_commit();
        if (threadIdx.x < SSD5_ROWS) {
            int j = threadIdx.x;
            cj[j] = j < len ? cumc[j] : 0.f;
            dj[j] = j < len ? dtc[j] : 0.f;
        }
        for (int jt = 0; jt <= rt; jt++) {
            int buf = jt & 1;
            ssd3_cp_wait<0>();
            wg_fence_proxy_async();
            __syncthreads();  /* tile jt landed for all threads; every warp is done with tile jt - 1 */
            if (jt < rt) {
                int j0n = (jt + 1) * SSD5_ROWS;
                ssd5_load_tile<SSD5_ROWS, N, SSD3_THREADS, 1>(buf ? Bs0 : Bs1, Bg, xbc_stride, j0n, len);
                ssd5_load_tile<SSD5_ROWS, P, SSD3_THREADS, 1>(buf ? Xs0 : Xs1, Xg, xbc_stride, j0n, len);
                ssd3_cp_commit();
                if (threadIdx.x < SSD5_ROWS) {
                    int j = j0n + threadIdx.x;
                    cj[(buf ^ 1) * SSD5_ROWS + threadIdx.x] = j < len ? cumc[j] : 0.f;
                    dj[(buf ^ 1) * SSD5_ROWS + threadIdx.x] = j < len ? dtc[j] : 0.f;
                }
            }
            const floatX* Bb = buf ? Bs1 : Bs0;
            const floatX* Xb = buf ? Xs1 : Xs0;
            const float* cjb = cj + buf * SSD5_ROWS;
            const float* djb = dj + buf * SSD5_ROWS;
            float s[32];
#pragma unroll
            for (int k = 0; k < 32; k++) s[k] = 0.f;
            wg_pin_acc(s);
            wg_fence();
#pragma unroll
            for (int ks = 0; ks < P / 16; ks++)  /* dy_i . x_j */
                wg_mma_ss<0, 0>(s, wg_desc(Ys + ks * 128, 128, PSBO), wg_desc(Xb + ks * 128, 128, PSBO));
            wg_commit();
            wg_wait<0>();
            wg_pin_acc(s);
            /* s[4 q + k]: row ri[k / 2], column jj = 8 q + 2 tig + k % 2 of the j tile; rows past the chunk's end
               are masked before the exp (their cum_r is 0: the exp could overflow) */
#pragma unroll
            for (int k = 0; k < 32; k++) {
                int jj = 8 * (k / 4) + 2 * tig + (k & 1), r = (k >> 1) & 1;
                int ok = jt * SSD5_ROWS + jj <= ri[r] && ri[r] < len;
                s[k] = ok ? s[k] * __expf(cum_r[r] - cjb[jj]) * djb[jj] : 0.f;
            }
            uint32_t sf[4][4];  /* WD as 4 k16 A fragments */
#pragma unroll
            for (int ks = 0; ks < 4; ks++) {
                sf[ks][0] = ssd_pack_bf16(s[8 * ks + 0], s[8 * ks + 1]);
                sf[ks][1] = ssd_pack_bf16(s[8 * ks + 2], s[8 * ks + 3]);
                sf[ks][2] = ssd_pack_bf16(s[8 * ks + 4], s[8 * ks + 5]);
                sf[ks][3] = ssd_pack_bf16(s[8 * ks + 6], s[8 * ks + 7]);
            }
#pragma unroll
            for (int nt = 0; nt < NT; nt++) wg_pin_acc(acc[nt]);
            wg_fence();
#pragma unroll
            for (int ks = 0; ks < 4; ks++)  /* acc += WD B_j */
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
                    wg_mma_rs<1>(acc[nt], sf[ks], wg_desc(Bb + wg_tile_offset(16 * ks, 64 * nt, N), NLBO, 128));
            wg_commit();
            wg_wait<0>();
#pragma unroll
            for (int nt = 0; nt < NT; nt++) wg_pin_acc(acc[nt]);
        }
    }
    int col = direct ? dco_col0 + g * N : hgi * N;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (ri[r] >= len) continue;
        floatX* o = dco + (size_t)(b * T + t0 + ri[r]) * dco_stride + col;
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int q = 0; q < 8; q++)
                *(__nv_bfloat162*)(o + 64 * nt + 8 * q + 2 * tig) =
                    __floats2bfloat162_rn(acc[nt][4 * q + 2 * r], acc[nt][4 * q + 2 * r + 1]);
    }
#else
    if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0)
        printf("ssd6_bwd_dc_kernel: built without the sm_90a target (wgmma); build with "
               "-gencode=arch=compute_90a,code=sm_90a, or set ssd_fast_version = 4\n");
    __trap();
#endif
}

/* version 6's forward: version 5's kernel (2 warpgroups = rows 2a, 2a + 1 of a chunk per block) for HP = 2 heads of
   one group per block. At P = 64 the two heads' x columns, y columns and states are adjacent in memory, so the
   block loads them as version 5 loads one head of P = 128; what the heads share is the C / B side: the C_i and
   B_j tiles are loaded once for both heads (per head, half the C and B bytes from L2 of version 5), and
   S = C_i B_j^T is computed once per (i, j) tile, scaled per head in fp32 registers (exp(cum_i - cum_j) dt_j of
   that head) into that head's bf16 score fragments, then both heads' S x_j products run as one batch. */
/* cum_j, dt_j of j tile jt into buffer nb ([hp][nb][64]) for HP heads whose rows start at base + hp T; thread
   k < 64 HP takes head k / 64, row k % 64; zeros past the chunk's end */
template <int HP>
__device__ static inline void ssd6_load_scalars(float* cj, float* dj, const float* cum, const float* dt, size_t base,
                                                int T, int jt, int nb, int len) {
    if (threadIdx.x < HP * SSD5_ROWS) {
        int hp = threadIdx.x / SSD5_ROWS, jj = threadIdx.x % SSD5_ROWS, j = jt * SSD5_ROWS + jj;
        size_t at = base + (size_t)hp * T + j;
        cj[(hp * 2 + nb) * SSD5_ROWS + jj] = j < len ? cum[at] : 0.f;
        dj[(hp * 2 + nb) * SSD5_ROWS + jj] = j < len ? dt[at] : 0.f;
    }
}
/* version 9 (bf16 build, ssd_fast_version >= 9; the forward scan wherever version 6's runs, the col kernel
   wherever version 8's runs): on an off-diagonal score tile (every row i after every column j) the decay
   exp(cum_i - cum_j) = exp(cum_i - cref) exp(cref - cum_j), cref = cum of the j tile's last row, so both exp()
   arguments stay <= 0 (nothing overflows; where one factor underflows the true product is smaller still) and the
   exps become one per row and one per column (made once per block when the tile is loaded), with no mask: a
   multiply per score element instead of a subtraction, an exp and a masked select. The diagonal tiles keep the
   per-element form (a factor there would be exp(> 0)). In the forward, the diagonal tile reads a column pair's
   cum and dt as one 16-byte shared load per head (version 6: 4 scalar loads).
   The j tile's per-column factors for HP heads into buffer nb, laid out for wide shared loads:
   cd[hp][nb][pair] = {cum_j, cum_j+1, dt_j, dt_j+1} (the diagonal tile: one 16-byte load per column pair and
   head), wj[hp][nb][jj] = dt_j exp(cref - cum_j) with cref = cum of the tile's last row inside the chunk (the
   off-diagonal tiles: one 8-byte load per pair), cr[hp][nb] = cref. Every exp() argument is <= 0 (j <= that row);
   zeros past the chunk's end. */
template <int HP>
__device__ static inline void ssd9_load_scalars(float* cd, float* wj, float* cr, const float* cum, const float* dt,
                                                size_t base, int T, int jt, int nb, int len) {
    if (threadIdx.x < HP * SSD5_ROWS) {
        int hp = threadIdx.x / SSD5_ROWS, jj = threadIdx.x % SSD5_ROWS, j = jt * SSD5_ROWS + jj;
        size_t at = base + (size_t)hp * T;
        float cref = cum[at + min(jt * SSD5_ROWS + SSD5_ROWS - 1, len - 1)];  /* one address per warp: broadcast */
        float c = j < len ? cum[at + j] : 0.f, d = j < len ? dt[at + j] : 0.f;
        int q = hp * 2 + nb;
        cd[(q * (SSD5_ROWS / 2) + jj / 2) * 4 + (jj & 1)] = c;
        cd[(q * (SSD5_ROWS / 2) + jj / 2) * 4 + 2 + (jj & 1)] = d;
        wj[q * SSD5_ROWS + jj] = j < len ? d * __expf(cref - c) : 0.f;
        if (jj == 0) cr[q] = cref;
    }
}
/* version 11 (bf16 build, ssd_fast_version >= 11; wherever version 9's forward scan runs): the forward scan's global
   loads are all issued in the prologue, together, so one memory latency precedes the first product instead of
   several, and none is left inside the j-tile loop:
   - the per-column factors of every j tile the block uses (0..jlast: at most Q / 64 <= 4) are built once into their
     own slots ([hp][tile] instead of version 9's two [hp][buffer] slots refilled per tile). In version 9 warpgroup
     0 loaded tile jt + 1's cum / dt (synchronous global loads) after the loop's barrier, then waited for them
     before its own tile, and the next barrier waited for warpgroup 0.
   - the fp32 Hprev of the HP heads (64 KB per block at P = 64, N = 128) is read with all of a thread's 16-byte
     loads in registers before the first bf16 conversion, through the read-only path (__ldg: the loads may move
     above the shared-memory stores of the scalars). Version 9's ssd5_load_state, in its SASS: one iteration's two
     16-byte loads, then that iteration's shared-memory store, 4 times over (2 loads in flight per thread, not 8).
   Same arithmetic as version 9 (bitwise the same y: the factors are the same fp32 values, made by the same code
   in another order). ssd11_load_prologue: thread k < HP 64 ntl of the scalars takes head k / (64 ntl), tile
   (k / 64) % ntl, row k % 64, zeros past the chunk's end (ntl = jlast + 1 tiles; slot q = hp nsl + tile). */
template <int R, int NC, int NTHR, int HP>
__device__ static inline void ssd11_load_prologue(floatX* Hdst, const float* m, float* cd, float* wj, float* cr,
                                                  const float* cum, const float* dt, size_t base, int T, int ntl,
                                                  int nsl, int len) {
    constexpr int ITER = R * NC / 8 / NTHR;  /* 16-byte load pairs per thread: 4 at R = 128, NC = 128, NTHR = 512 */
    static_assert(R * NC / 8 % NTHR == 0, "ssd11_load_prologue: the state tile must split evenly over the threads");
    float4 q[ITER][2];
#pragma unroll
    for (int it = 0; it < ITER; it++) {  /* all the state loads first: 8 in flight per thread */
        int idx = threadIdx.x + it * NTHR, r = (idx / NC) * 8 + (idx & 7), v = (idx >> 3) % (NC / 8);
        const float4* src = (const float4*)(m + (size_t)r * NC + v * 8);
        q[it][0] = __ldg(src);
        q[it][1] = __ldg(src + 1);
    }
    for (int k = threadIdx.x; k < HP * SSD5_ROWS * ntl; k += NTHR) {  /* one pass at Q <= 256 (HP = 2) */
        int hp = k / (SSD5_ROWS * ntl), jt = (k / SSD5_ROWS) % ntl, jj = k % SSD5_ROWS, j = jt * SSD5_ROWS + jj;
        size_t at = base + (size_t)hp * T;
        float cref = __ldg(cum + at + min(jt * SSD5_ROWS + SSD5_ROWS - 1, len - 1));  /* one address per warp */
        float c = j < len ? __ldg(cum + at + j) : 0.f, d = j < len ? __ldg(dt + at + j) : 0.f;
        int s = hp * nsl + jt;
        cd[(s * (SSD5_ROWS / 2) + jj / 2) * 4 + (jj & 1)] = c;
        cd[(s * (SSD5_ROWS / 2) + jj / 2) * 4 + 2 + (jj & 1)] = d;
        wj[s * SSD5_ROWS + jj] = j < len ? d * __expf(cref - c) : 0.f;
        if (jj == 0) cr[s] = cref;
    }
#pragma unroll
    for (int it = 0; it < ITER; it++) {
        int idx = threadIdx.x + it * NTHR;
        uint4 o = make_uint4(ssd_pack_bf16(q[it][0].x, q[it][0].y), ssd_pack_bf16(q[it][0].z, q[it][0].w),
                             ssd_pack_bf16(q[it][1].x, q[it][1].y), ssd_pack_bf16(q[it][1].z, q[it][1].w));
        *(uint4*)(Hdst + idx * 8) = o;
    }
}
template <int NK, int HP, bool V9, bool V11 = false>  /* N = 16 NK, P = 64 per head, HP heads per block; V9, V11:
                                                         see "version 9", "version 11" */
__global__ static void __launch_bounds__(SSD3_THREADS * 2, 2)
ssd6_scan_fwd_kernel(floatX* y, const floatX* xbc, int xbc_stride, const float* dt, const float* cum,
                     const float* states, const float* Dskip, int T, int H, int G, int Q) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int P = 64, PW = 64 * HP, N = 16 * NK, NTHR = SSD3_THREADS * 2, WGS = 2;
    constexpr uint32_t KSBO = N * 16;   /* K-major tiles of N columns: bytes between 8-row groups */
    constexpr uint32_t XLBO = PW * 16;  /* the x tile (MN-major, PW columns): bytes between 8-row (k) groups */
    extern __shared__ __align__(128) unsigned char ssd6_smem[];
    int nch = ssd_nchunks(T, Q), ngr = CEIL_DIV(CEIL_DIV(Q, SSD5_ROWS), WGS), nhb = H / HP;
    int c = blockIdx.x / ngr, rg = blockIdx.x % ngr, b = blockIdx.y / nhb, h0 = (blockIdx.y % nhb) * HP;
    int g = h0 / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), ib = rg * WGS * SSD5_ROWS;
    if (ib >= len) return;
    int wg = threadIdx.x / SSD3_THREADS, rt = rg * WGS + wg, i0 = rt * SSD5_ROWS;
    int jlast = min(rg * WGS + WGS, CEIL_DIV(len, SSD5_ROWS)) - 1, active = i0 < len;
    int E = H * P;
    floatX* Cs = (floatX*)ssd6_smem;          /* 64 WGS rows: warpgroup wg's are rows 64 wg.. */
    floatX* Bs0 = Cs + WGS * SSD5_ROWS * N;
    floatX* Xs0 = Bs0 + SSD5_ROWS * N;
    floatX* Hs = Xs0 + SSD5_ROWS * PW;  /* Hprev of the HP heads ((HP P) x N), then buffer 1: */
    floatX* Bs1 = Hs;
    floatX* Xs1 = Hs + SSD5_ROWS * N;
    float* cj = (float*)(Hs + (PW * N > SSD5_ROWS * (N + PW) ? PW * N : SSD5_ROWS * (N + PW)));  /* [hp][buf][64] */
    float* dj = cj + HP * 2 * SSD5_ROWS;                                                        /* likewise dt_j */
    /* version 9: cd ([hp][buf][32 pairs][4]) takes the place of cj and dj, then wj ([hp][buf][64]), cr ([hp][buf]);
       version 11: nsl = Q / 64 slots per head (one per j tile) instead of 2 buffers (ssd11_smem_fwd) */
    int nsl = V11 ? max(2, CEIL_DIV(Q, SSD5_ROWS)) : 2;  /* at least version 9's 2 (Q = 64: 1 tile) */
    float* cd = cj;
    float* wj = cj + HP * nsl * 2 * SSD5_ROWS;
    float* cr = wj + HP * nsl * SSD5_ROWS;
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Bg = rows + E + g * N;
    const floatX* Xg = rows + h0 * P;
    ssd5_load_tile<WGS * SSD5_ROWS, N, NTHR, 1>(Cs, rows + E + G * N + g * N, xbc_stride, ib, len);
    ssd5_load_tile<SSD5_ROWS, N, NTHR, 1>(Bs0, Bg, xbc_stride, 0, len);
    ssd5_load_tile<SSD5_ROWS, PW, NTHR, 1>(Xs0, Xg, xbc_stride, 0, len);
    ssd3_cp_commit();
    if (V11)
        ssd11_load_prologue<PW, N, NTHR, HP>(Hs, states + ssd_state_off(b, c, h0, nch, H, P * N), cd, wj, cr, cum,
                                             dt, (size_t)(b * H + h0) * T + t0, T, jlast + 1, nsl, len);
    else {
        if (V9) ssd9_load_scalars<HP>(cd, wj, cr, cum, dt, (size_t)(b * H + h0) * T + t0, T, 0, 0, len);
        else ssd6_load_scalars<HP>(cj, dj, cum, dt, (size_t)(b * H + h0) * T + t0, T, 0, 0, len);
        ssd5_load_state<PW, N, NTHR>(Hs, states + ssd_state_off(b, c, h0, nch, H, P * N));
    }
    const floatX* Cw = Cs + wg * SSD5_ROWS * N;
    int warp = (threadIdx.x % SSD3_THREADS) / 32, lane = threadIdx.x % 32, tig = lane % 4;
    int ri[2] = {i0 + warp * 16 + lane / 4, i0 + warp * 16 + lane / 4 + 8};
    /* rows past the chunk's end take the chunk's smallest cum: every exp() argument below stays <= 0 (no inf * 0) */
    float cum_r[HP][2];
#pragma unroll
    for (int hp = 0; hp < HP; hp++)
        for (int r = 0; r < 2; r++) {
            const float* at = cum + (size_t)(b * H + h0 + hp) * T + t0 + min(ri[r], len - 1);
            cum_r[hp][r] = V11 ? __ldg(at) : *at;  /* V11: read-only path, free to move above the prologue's stores */
        }
    ssd3_cp_wait<0>();
    wg_fence_proxy_async();
    __syncthreads();
    /* inter-chunk: exp(cum_i) C_i Hprev^T, per head */
    float acc[HP][32];
#pragma unroll
    for (int hp = 0; hp < HP; hp++) {
#pragma unroll
        for (int e = 0; e < 32; e++) acc[hp][e] = 0.f;
        wg_pin_acc(acc[hp]);
    }
    if (active) {  /* uniform over the warpgroup: its products run converged */
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < NK; ks++) {
            uint64_t da = wg_desc(Cw + ks * 128, 128, KSBO);
#pragma unroll
            for (int hp = 0; hp < HP; hp++)
                wg_mma_ss<0, 0>(acc[hp], da, wg_desc(Hs + hp * 64 * N + ks * 128, 128, KSBO));
        }
        wg_commit();
        wg_wait<0>();
    }
#pragma unroll
    for (int hp = 0; hp < HP; hp++) {
        wg_pin_acc(acc[hp]);
        float e0 = expf(cum_r[hp][0]), e1 = expf(cum_r[hp][1]);
#pragma unroll
        for (int e = 0; e < 32; e++) acc[hp][e] *= (e & 2) ? e1 : e0;
    }
    /* intra-chunk: the j tiles up to the block's last diagonal one; tile jt + 1 loads while tile jt is used */
    for (int jt = 0; jt <= jlast; jt++) {
        int buf = jt & 1;
        ssd3_cp_wait<0>();
        wg_fence_proxy_async();
        __syncthreads();  /* tile jt landed for all threads; every warp is done with tile jt - 1 (and Hprev) */
        if (jt < jlast) {
            int j0n = (jt + 1) * SSD5_ROWS;
            ssd5_load_tile<SSD5_ROWS, N, NTHR, 1>(buf ? Bs0 : Bs1, Bg, xbc_stride, j0n, len);
            ssd5_load_tile<SSD5_ROWS, PW, NTHR, 1>(buf ? Xs0 : Xs1, Xg, xbc_stride, j0n, len);
            ssd3_cp_commit();
            if (V11) {}  /* every tile's scalars are in shared memory since the prologue */
            else if (V9) ssd9_load_scalars<HP>(cd, wj, cr, cum, dt, (size_t)(b * H + h0) * T + t0, T, jt + 1, buf ^ 1, len);
            else ssd6_load_scalars<HP>(cj, dj, cum, dt, (size_t)(b * H + h0) * T + t0, T, jt + 1, buf ^ 1, len);
        }
        if (jt > rt || !active) continue;  /* past this warpgroup's diagonal (uniform over the warpgroup) */
        const floatX* Bb = buf ? Bs1 : Bs0;
        const floatX* Xb = buf ? Xs1 : Xs0;
        float s[32];
#pragma unroll
        for (int e = 0; e < 32; e++) s[e] = 0.f;
        wg_pin_acc(s);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < NK; ks++)  /* S = C_i . B_j, once for the HP heads */
            wg_mma_ss<0, 0>(s, wg_desc(Cw + ks * 128, 128, KSBO), wg_desc(Bb + ks * 128, 128, KSBO));
        wg_commit();
        wg_wait<0>();
        wg_pin_acc(s);
        /* s[4 nt + e]: row ri[e / 2], column jj = 8 nt + 2 tig + e % 2 of the j tile. One pass makes every head's
           score fragments (S times that head's decay and dt, masked on the diagonal tile): each s[e] dies as soon
           as it is read, so at most 64 accumulators + 32 S/fragment registers are live */
        uint32_t sf[HP][4][4];
        int diag = jt == rt, sl = V11 ? jt : buf;  /* this tile's scalar slot (per head: hp nsl + sl) */
        if (V9 && !diag) {
            /* off-diagonal tile (every j < every i): exp(cum_i - cum_j) = exp(cum_i - cref) exp(cref - cum_j) with
               cref = cum of the tile's last row (< i0: the tile is whole), both arguments <= 0; no mask. Rows past
               the chunk's end have cum_r = the chunk's last cum, also <= cref. 2 exps per head instead of 32. */
            float rf[HP][2];
#pragma unroll
            for (int hp = 0; hp < HP; hp++)
#pragma unroll
                for (int r = 0; r < 2; r++) rf[hp][r] = __expf(cum_r[hp][r] - cr[hp * nsl + sl]);
#pragma unroll
            for (int ks = 0; ks < 4; ks++)
#pragma unroll
                for (int k = 0; k < 8; k += 2) {
                    int e = 8 * ks + k, jj = 8 * (e / 4) + 2 * tig, r = (e >> 1) & 1;
#pragma unroll
                    for (int hp = 0; hp < HP; hp++) {
                        float2 w = *(const float2*)(wj + (hp * nsl + sl) * SSD5_ROWS + jj);
                        sf[hp][ks][k / 2] = ssd_pack_bf16(s[e] * rf[hp][r] * w.x, s[e + 1] * rf[hp][r] * w.y);
                    }
                }
        } else if (V9) {  /* diagonal tile: the masked per-element decay, cum_j / dt_j of a pair in one load */
#pragma unroll
            for (int ks = 0; ks < 4; ks++)
#pragma unroll
                for (int k = 0; k < 8; k += 2) {
                    int e = 8 * ks + k, jj = 8 * (e / 4) + 2 * tig, r = (e >> 1) & 1;
                    int ok0 = jt * SSD5_ROWS + jj <= ri[r], ok1 = jt * SSD5_ROWS + jj + 1 <= ri[r];
#pragma unroll
                    for (int hp = 0; hp < HP; hp++) {
                        float4 q = *(const float4*)(cd + ((hp * nsl + sl) * (SSD5_ROWS / 2) + jj / 2) * 4);
                        float v0 = ok0 ? s[e] * __expf(cum_r[hp][r] - q.x) * q.z : 0.f;
                        float v1 = ok1 ? s[e + 1] * __expf(cum_r[hp][r] - q.y) * q.w : 0.f;
                        sf[hp][ks][k / 2] = ssd_pack_bf16(v0, v1);
                    }
                }
        } else
#pragma unroll
        for (int ks = 0; ks < 4; ks++)
#pragma unroll
            for (int k = 0; k < 8; k += 2) {
                int e = 8 * ks + k, jj = 8 * (e / 4) + 2 * tig, r = (e >> 1) & 1;
                int ok0 = !diag || jt * SSD5_ROWS + jj <= ri[r], ok1 = !diag || jt * SSD5_ROWS + jj + 1 <= ri[r];
#pragma unroll
                for (int hp = 0; hp < HP; hp++) {
                    const float* cjb = cj + (hp * 2 + buf) * SSD5_ROWS;
                    const float* djb = dj + (hp * 2 + buf) * SSD5_ROWS;
                    float v0 = ok0 ? s[e] * __expf(cum_r[hp][r] - cjb[jj]) * djb[jj] : 0.f;
                    float v1 = ok1 ? s[e + 1] * __expf(cum_r[hp][r] - cjb[jj + 1]) * djb[jj + 1] : 0.f;
                    sf[hp][ks][k / 2] = ssd_pack_bf16(v0, v1);
                }
            }
#pragma unroll
        for (int hp = 0; hp < HP; hp++) wg_pin_acc(acc[hp]);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < 4; ks++)  /* acc_hp += S_hp x_j,hp */
#pragma unroll
            for (int hp = 0; hp < HP; hp++)
                wg_mma_rs<1>(acc[hp], sf[hp][ks], wg_desc(Xb + wg_tile_offset(16 * ks, 64 * hp, PW), XLBO, 128));
        wg_commit();
        wg_wait<0>();
#pragma unroll
        for (int hp = 0; hp < HP; hp++) wg_pin_acc(acc[hp]);
    }
    if (!active) return;
    /* y = acc + D x_i. x_i is the x tile of the diagonal iteration jt = rt, still in its buffer: no later iteration
       loads into it (the block's last prefetch is of tile jlast <= rt + 1, into the other buffer) */
    const floatX* Xd = (rt & 1) ? Xs1 : Xs0;
#pragma unroll
    for (int hp = 0; hp < HP; hp++) {
        float Dh = Dskip[h0 + hp];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            if (ri[r] >= len) continue;
            floatX* yr = y + (size_t)(b * T + t0 + ri[r]) * E + (h0 + hp) * P;
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                int p = nt * 8 + 2 * tig;
                __nv_bfloat162 xv = *(const __nv_bfloat162*)(Xd + wg_tile_offset(ri[r] - i0, 64 * hp + p, PW));
                *(__nv_bfloat162*)(yr + p) = __floats2bfloat162_rn(acc[hp][4 * nt + 2 * r] + Dh * __low2float(xv),
                                                                  acc[hp][4 * nt + 2 * r + 1] + Dh * __high2float(xv));
            }
        }
    }
#else
    if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0)
        printf("ssd6_scan_fwd_kernel: built without the sm_90a target (wgmma); build with "
               "-gencode=arch=compute_90a,code=sm_90a, or set ssd_fast_version = 5\n");
    __trap();
#endif
}
/* shared memory of ssd6_scan_fwd_kernel: version 5's at P = 64 HP, plus the per-head cum_j, dt_j */
static inline size_t ssd6_smem_fwd(int N, int HP) {
    return ssd5_smem_fwd(64 * HP, N, 2) + (size_t)(HP - 1) * 4 * SSD5_ROWS * sizeof(float);
}
/* version 9 adds wj (HP x 2 x 64 floats) and cr (HP x 2, padded to 16 bytes) after cd (= cj, dj) */
static inline size_t ssd9_smem_fwd(int N, int HP) {
    return ssd6_smem_fwd(N, HP) + ((size_t)HP * 2 * SSD5_ROWS + 4 * HP) * sizeof(float);
}

/* version 11: cd, wj, cr with max(2, Q / 64) slots per head instead of 2 (cr padded to 16 bytes per slot); nsl
   as in ssd6_scan_fwd_kernel (at least 2: the terms below take version 9's 2 buffers as their base) */
static inline size_t ssd11_smem_fwd(int N, int HP, int Q) {
    size_t nsl = (size_t)ssd3_max(2, CEIL_DIV(Q, SSD5_ROWS));
    return ssd6_smem_fwd(N, HP) + ((size_t)HP * (nsl - 2) * 2 * SSD5_ROWS + (size_t)HP * nsl * SSD5_ROWS +
                                   4 * HP * nsl) * sizeof(float);  /* cd past version 6's 2 slots, wj, cr */
}

/* ------------------------------------------------------------------------------------------------------------ */
/* version 7 (bf16 build): the chunk-state products and the state pass over chunks in ONE kernel per direction, so
   the per-chunk S_c never goes through global memory (version 6 wrote 100 MB of fp32 S_c at Q = 128 and the state
   passes read it back and overwrote it: ~390 us per layer at DRAM speed).
   One block per (b, h, 64 rows of P, NS columns of N) runs over the whole sequence in 64-row tiles, in order
   (forward) or in reverse (backward), with the running state in the mma accumulators (fp32 registers).
   The chunk recurrence, split at 64-row tiles: let tile k hold rows a..e of chunk c (a, e chunk-local; Q % 64 == 0,
   so a tile never straddles two chunks) and cum_{a-1} = 0 when a is the chunk's first row. Then
     forward   run <- exp(cum_e - cum_{a-1}) run + sum_{j=a..e} dt_j exp(cum_e - cum_j) x_j B_j^T
     backward  run <- exp(cum_e - cum_{a-1}) run + sum_{i=a..e} exp(cum_i - cum_{a-1}) dy_i C_i^T
   Over the tiles of one chunk these telescope to the chunk forms at the top of this file:
     forward:  after the chunk's last tile, run = exp(cum_last) Hprev_c + S_c = Hprev_{c+1}
     backward: after the chunk's first tile (reverse order), run = exp(cum_last) dH_c + sum_i exp(cum_i) dy_i C_i^T
               = dH_{c-1}
   (the decay of the tiles multiply to exp(cum_last); each row's weight is its own exp(cum difference)). So every
   factor a tile needs is inside the tile (plus cum_{a-1}): nothing waits for the chunk's last row, and every
   exp() argument is still a difference <= 0 (forward) or cum_i - cum_{a-1} <= 0 (backward).
   Chunk boundaries: forward, at the chunk's first tile, run is Hprev_c: written to states[c] before the update
   (the final run is the final state); backward, at the chunk's last tile, run is dH_c (0 for the last chunk):
   written to dstates[c], and <dH_c, Hout_c> (Hout_c = states[c + 1], loaded into registers a chunk ahead) is
   reduced per warp and written to dotp[(b, h, c, slice * warps + warp)]: (B, H, nchunks, nsplit7) with
   nsplit7 = P N / 512 <= ssd_nsplit(P, N), read by ssd3_bwd_dt_kernel with that nsplit. Fixed order: deterministic.
   Precision as version 4's chunk-state kernel: A = the w-scaled x (dy) tile, split in bf16 hi + lo (two products,
   ~16 bits), B = the B (C) tile, fp32 accumulation into the running state.
   Layout: warp w owns state rows 16 (w % 4) .. + 15 of the block's 64 and columns 32 (w / 4) .. + 31 of its NS:
   4 accumulator tiles (16 registers) per thread. The tiles stream through STAGES cp.async buffers (x / dy 64 x 64,
   B / C 64 x NS, cum of rows a-1..a+63, dt), two barriers per tile (SPLIT 1, below); the loop is serial over the
   sequence, so the loads of the next STAGES - 1 tiles are in flight while a tile's products run. */
#define SSD7_ROWS 64
#define SSD7_LDU 72  /* x / dy tile row stride in bf16: 64 columns + a 16-byte pad (ldmatrix rows in 8 bank groups) */
template <int NS> struct Ssd7Stage {
    static constexpr int LDV = NS + 8;
    static constexpr int U_OFF = 0;                                             /* bf16 (64, SSD7_LDU) */
    static constexpr int V_OFF = U_OFF + SSD7_ROWS * SSD7_LDU * 2;              /* bf16 (64, LDV) */
    static constexpr int CUM_OFF = V_OFF + SSD7_ROWS * LDV * 2;                 /* float [0] = cum_{a-1}, [1 + r] */
    static constexpr int DT_OFF = CUM_OFF + (SSD7_ROWS + 4) * 4;                /* float [r] */
    static constexpr int BYTES = DT_OFF + SSD7_ROWS * 4;
};
/* the stage buffers, then (SPLIT) the lo half of the scaled x / dy tile, (64, SSD7_LDU) bf16 */
template <int NS> static inline size_t ssd7_smem(int stages, int split) {
    return (size_t)stages * Ssd7Stage<NS>::BYTES + (split ? (size_t)SSD7_ROWS * SSD7_LDU * sizeof(floatX) : 0);
}

/* 4 bytes global -> shared (cum, dt: no alignment to rely on); valid = 0 writes a zero */
__device__ static inline void ssd7_cp_async4(void* dst, const void* src, int valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(ssd3_saddr(dst)), "l"(src),
                 "r"(valid ? 4 : 0) : "memory");
}

/* issue the loads of tile t (rows j0 = 64 t ..) into one stage buffer; rows at or past T are zero-filled.
   Ub / Vb: row 0 of this batch element at the block's first U / V column; dtc, cumc: this (b, h)'s rows. */
template <int NS, int NTHR>
__device__ static inline void ssd7_load_tile(unsigned char* stage, const floatX* Ub, int u_stride, const floatX* Vb,
                                             int v_stride, const float* dtc, const float* cumc, int j0, int T, int Q,
                                             int with_dt) {
    typedef Ssd7Stage<NS> L;
    floatX* Us = (floatX*)(stage + L::U_OFF);
    floatX* Vs = (floatX*)(stage + L::V_OFF);
    float* cs = (float*)(stage + L::CUM_OFF);
    float* ds = (float*)(stage + L::DT_OFF);
#pragma unroll
    for (int idx = threadIdx.x; idx < SSD7_ROWS * 8; idx += NTHR) {
        int r = idx / 8, v = idx % 8, ok = j0 + r < T;
        ssd3_cp_async16(Us + r * SSD7_LDU + v * 8, Ub + (ok ? (size_t)(j0 + r) * u_stride + v * 8 : 0), ok);
    }
#pragma unroll
    for (int idx = threadIdx.x; idx < SSD7_ROWS * (NS / 8); idx += NTHR) {
        int r = idx / (NS / 8), v = idx % (NS / 8), ok = j0 + r < T;
        ssd3_cp_async16(Vs + r * L::LDV + v * 8, Vb + (ok ? (size_t)(j0 + r) * v_stride + v * 8 : 0), ok);
    }
    /* cs[0] = cum_{a-1} (zero at a chunk's first row), cs[1 + r] = cum of row j0 + r; then ds[r] = dt of row j0 + r */
    for (int k = threadIdx.x; k < 2 * SSD7_ROWS + 1; k += NTHR) {
        if (k <= SSD7_ROWS) {
            int row = j0 - 1 + k, ok = k == 0 ? j0 % Q != 0 : row < T;
            ssd7_cp_async4(cs + k, cumc + (ok ? row : 0), ok);
        } else if (with_dt) {
            int r = k - SSD7_ROWS - 1, ok = j0 + r < T;
            ssd7_cp_async4(ds + r, dtc + (ok ? j0 + r : 0), ok);
        }
    }
}

/* this thread's 16 entries of the block's (64 x NS) slice of a (P, N) fp32 state: rows p, p + 8 (eoff points at
   row p, column 2 tig of the warp's first accumulator tile), accumulator tiles nt at columns + 8 nt */
__device__ static inline void ssd7_store_state(float* o, size_t eoff, int N, const float run[4][4]) {
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
        *(float2*)(o + eoff + nt * 8) = make_float2(run[nt][0], run[nt][1]);
        *(float2*)(o + eoff + (size_t)8 * N + nt * 8) = make_float2(run[nt][2], run[nt][3]);
    }
}
__device__ static inline void ssd7_load_state(float v[4][4], const float* m, size_t eoff, int N) {
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
        float2 a = *(const float2*)(m + eoff + nt * 8), c = *(const float2*)(m + eoff + (size_t)8 * N + nt * 8);
        v[nt][0] = a.x; v[nt][1] = a.y; v[nt][2] = c.x; v[nt][3] = c.y;
    }
}

/* the w-scaled U tile of one stage in place as its bf16 hi part, the lo part (the rounding error of hi) into Ls;
   each element once per block (the register form scaled every A fragment in each warp that read it: 2 warps per
   row tile at NS = 64, and each row's weight in every lane) */
template <int MODE, int NTHR>
__device__ static inline void ssd7_scale_split(floatX* Us, floatX* Ls, const float* cs, const float* ds, int nvalid) {
    float ca = cs[0], ce = cs[nvalid];
#pragma unroll
    for (int idx = threadIdx.x; idx < SSD7_ROWS * 8; idx += NTHR) {
        int r = idx / 8, off = r * SSD7_LDU + (idx % 8) * 8;
        float w = r < nvalid ? (MODE == 0 ? ds[r] * expf(ce - cs[1 + r]) : expf(cs[1 + r] - ca)) : 0.f;
        uint4 raw = *(const uint4*)(Us + off), lo;
        uint32_t* rv = (uint32_t*)&raw;
        uint32_t* lv = (uint32_t*)&lo;
#pragma unroll
        for (int q = 0; q < 4; q++) {
            __nv_bfloat162 v = *(__nv_bfloat162*)&rv[q];
            float a = __low2float(v) * w, b = __high2float(v) * w;
            __nv_bfloat162 vh = __floats2bfloat162_rn(a, b);
            rv[q] = *(uint32_t*)&vh;
            lv[q] = ssd_pack_bf16(a - __low2float(vh), b - __high2float(vh));
        }
        *(uint4*)(Us + off) = raw;
        *(uint4*)(Ls + off) = lo;
    }
}

/* MODE 0 (forward): out = states (B, nchunks, H, P, N): Hprev_c; final_state (may be NULL) = the state after the
   last row; init_state (may be NULL) starts the run. U = x, V = B (v_col0 = E).
   MODE 1 (backward): out = dstates: dH_c; dotp as above, hstates = the forward's states (Hout). U = dy (stride E),
   V = C (v_col0 = E + G N).
   grid ((P / 64) (N / NS), B H): the slices of one head are neighbours (their U tiles are the same rows: L2 hits),
   and so are the heads of one batch element (the same B / C tiles).
   SPLIT 1: the scaled U tile is made once per block in shared memory (ssd7_scale_split; a second barrier per tile),
   and the A fragments (hi, lo) are plain ldmatrix loads; SPLIT 0: each warp scales and splits its A fragments in
   registers (one barrier per tile, the scaling repeated in every warp that reads the rows). */
template <int NS, int STAGES, int MODE, int SPLIT>
__global__ static void __launch_bounds__(NS * 4, NS == 64 ? 3 : 5)
ssd7_state_scan_kernel(float* out, float* final_state, const float* init_state, float* dotp, const float* hstates,
                       const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0, const float* dt,
                       const float* cum, int T, int H, int P, int N, int G, int Q) {
    constexpr int NTHR = NS * 4, WARPS = NS / 8;
    typedef Ssd7Stage<NS> L;
    extern __shared__ __align__(16) unsigned char ssd3_smem[];
    int nsl_n = N / NS, nsl = (P / 64) * nsl_n, sl = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H;
    int g = h / (H / G), p0 = (sl / nsl_n) * 64, n0 = (sl % nsl_n) * NS;
    int nch = ssd_nchunks(T, Q), ntl = CEIL_DIV(T, SSD7_ROWS), PN = P * N;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tig = lane % 4;
    int m0 = (warp % 4) * 16, c0 = (warp / 4) * 32;  /* the warp's rows of the 64 and first column of the NS */
    const floatX* Ub = U + (size_t)b * T * u_stride + h * P + p0;
    const floatX* Vb = V + (size_t)b * T * v_stride + v_col0 + g * N + n0;
    const float* dtc = dt + (size_t)bh * T;
    const float* cumc = cum + (size_t)bh * T;
    size_t eoff = (size_t)(p0 + m0 + lane / 4) * N + n0 + c0 + 2 * tig;
    float run[4][4], hout[4][4];
#pragma unroll
    for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) run[nt][e] = hout[nt][e] = 0.f;
    if (MODE == 0 && init_state) ssd7_load_state(run, init_state + (size_t)bh * PN, eoff, N);
#define SSD7_TILE_OF(k) (MODE == 0 ? (k) : ntl - 1 - (k))
#pragma unroll 1
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < ntl)
            ssd7_load_tile<NS, NTHR>(ssd3_smem + s * L::BYTES, Ub, u_stride, Vb, v_stride, dtc, cumc,
                                     SSD7_ROWS * SSD7_TILE_OF(s), T, Q, MODE == 0);
        ssd3_cp_commit();
    }
#pragma unroll 1
    for (int k = 0; k < ntl; k++) {
        ssd3_cp_wait<STAGES - 2>();  /* this thread's copies of tile k are in */
        __syncthreads();             /* everyone's are, and everyone is done with the buffer refilled next */
        int kn = k + STAGES - 1;
        if (kn < ntl)
            ssd7_load_tile<NS, NTHR>(ssd3_smem + (kn % STAGES) * L::BYTES, Ub, u_stride, Vb, v_stride, dtc, cumc,
                                     SSD7_ROWS * SSD7_TILE_OF(kn), T, Q, MODE == 0);
        ssd3_cp_commit();
        unsigned char* st = ssd3_smem + (k % STAGES) * L::BYTES;
        floatX* Ls = (floatX*)(ssd3_smem + STAGES * L::BYTES);
        int j0 = SSD7_ROWS * SSD7_TILE_OF(k), c = j0 / Q, nvalid = min(SSD7_ROWS, T - j0);
        if (MODE == 0) {
            if (j0 % Q == 0) ssd7_store_state(out + ssd_state_off(b, c, h, nch, H, PN), eoff, N, run);  /* Hprev_c */
        } else if (j0 + SSD7_ROWS >= min(T, (c + 1) * Q)) {  /* the chunk's last tile: run = dH_c */
            ssd7_store_state(out + ssd_state_off(b, c, h, nch, H, PN), eoff, N, run);
            float v = 0.f;
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) v += run[nt][e] * hout[nt][e];
            v = warp_reduce_sum(v);
            if (lane == 0) dotp[((size_t)bh * nch + c) * (nsl * WARPS) + sl * WARPS + warp] = v;
            /* Hout_{c-1} = states[c], used at the next chunk boundary: its loads have a chunk to land */
            if (c > 0) ssd7_load_state(hout, hstates + ssd_state_off(b, c, h, nch, H, PN), eoff, N);
        }
        const float* cs = (const float*)(st + L::CUM_OFF);
        const float* ds = (const float*)(st + L::DT_OFF);
        if (SPLIT) {  /* Ls is free: every warp passed this tile's first barrier after its last tile's products */
            ssd7_scale_split<MODE, NTHR>((floatX*)(st + L::U_OFF), Ls, cs, ds, nvalid);
            __syncthreads();
        }
        float ca = cs[0], ce = cs[nvalid], decay = expf(ce - ca);
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) run[nt][e] *= decay;
        int aoff = ((lane % 8) + (lane / 16) * 8) * SSD7_LDU + m0 + ((lane / 8) % 2) * 8;
        const floatX* ap = (const floatX*)(st + L::U_OFF) + aoff;
        const floatX* bp = (const floatX*)(st + L::V_OFF) + ((lane % 8) + ((lane / 8) % 2) * 8) * L::LDV +
                           (lane / 16) * 8 + c0;
#pragma unroll
        for (int k0 = 0; k0 < SSD7_ROWS; k0 += 16) {
            uint32_t ah[4], al[4];
            if (SPLIT) {
                ssd3_ldsm_t(ah, ap + k0 * SSD7_LDU);
                ssd3_ldsm_t(al, Ls + aoff + k0 * SSD7_LDU);
            } else {
                uint32_t raw[4];
                ssd3_ldsm_t(raw, ap + k0 * SSD7_LDU);
                float w[4];  /* rows k0 + 2 tig, + 1, + 8, + 9: the A fragment's k index */
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    int j = k0 + 2 * tig + (q & 1) + (q >> 1) * 8;
                    w[q] = j < nvalid ? (MODE == 0 ? ds[j] * expf(ce - cs[1 + j]) : expf(cs[1 + j] - ca)) : 0.f;
                }
#pragma unroll
                for (int r = 0; r < 4; r++) {  /* registers 0, 1: k 2 tig (+1); 2, 3: k 2 tig + 8 (+1) */
                    __nv_bfloat162 v = *(__nv_bfloat162*)&raw[r];
                    float lo = __low2float(v) * w[r < 2 ? 0 : 2], hi = __high2float(v) * w[r < 2 ? 1 : 3];
                    __nv_bfloat162 vh = __floats2bfloat162_rn(lo, hi);
                    ah[r] = *(uint32_t*)&vh;
                    al[r] = ssd_pack_bf16(lo - __low2float(vh), hi - __high2float(vh));
                }
            }
#pragma unroll
            for (int np = 0; np < 2; np++) {
                uint32_t bfr[4];
                ssd3_ldsm_t(bfr, bp + k0 * L::LDV + np * 16);
                ssd_mma_bf16(run[2 * np], ah, bfr);
                ssd_mma_bf16(run[2 * np], al, bfr);
                ssd_mma_bf16(run[2 * np + 1], ah, bfr + 2);
                ssd_mma_bf16(run[2 * np + 1], al, bfr + 2);
            }
        }
    }
#undef SSD7_TILE_OF
    if (MODE == 0 && final_state) ssd7_store_state(final_state + (size_t)bh * PN, eoff, N, run);
}
#endif /* !ENABLE_FP32 */

/* ------------------------------------------------------------------------------------------------------------ */
/* host launchers */

static void ssd_check_shapes(int B, int T, int H, int P, int N, int G, int Q) {
    if (B < 1 || T < 1 || H < 1 || G < 1 || H % G != 0 || P < 1 || P > SSD_MAXD || N < 1 || N > SSD_MAXD ||
        Q < 16 || Q > 256) {
        fprintf(stderr,
                "ssd: unsupported shape B=%d T=%d H=%d P=%d N=%d G=%d Q=%d: need B,T >= 1, G dividing H, "
                "1 <= P,N <= %d and 16 <= Q <= 256\n", B, T, H, P, N, G, Q, SSD_MAXD);
        exit(EXIT_FAILURE);
    }
}

static void ssd_set_smem(const void* kernel, size_t bytes) {
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

/* Versions 3 to 8 run where their layout rules hold (bf16 build, P and N multiples of 16, 16-byte aligned rows;
   version 5's forward also P, N in {64, 128}, else version 4's; version 6's forward also P = 64 and H/G even, else
   version 5's; version 7's fused state kernels also P % 64 == 0, Q % 64 == 0 and a grid that fills the GPU, else
   version 6's state kernels); other shapes and the fp32 build run version 2. ssd_fast_version picks among them:
   11, 10 (= 9), 9, 8, 7, 6, 5, 4, 3, or 2 (version 2 everywhere); dev/cuda/ssd.cu sets it per version. Version 4 passed its checks on the H100 in both
   builds and is 2.5-6% faster than version 3 on the three benchmark shapes; version 5 (sm_90a wgmma forward):
   dev/cuda/NOTES_ssd.md, "Version 5"; version 6 (two heads per forward block): 9% off the forward at Q = 128,
   "Version 6" there; version 7 (chunk states and state passes fused): 16% off the forward and 11% off
   forward+backward at Q = 128, B=8 T=2048, "Version 7" there; version 8 (the backward's col and dC kernels: row
   tiles adjacent in the grid, state loads together, the col kernel's B_j . C_i slab in shared memory; P, N in
   {64, 128}, Q in {64, 128}, else version 7's): "Version 8" there; version 9 (the off-diagonal decay factored in
   the forward scan where version 6's runs and in the col kernel where version 8's runs): "Version 9" there;
   version 11 (the forward scan's loads in its prologue, where version 9's forward scan runs): forward -3 to -4%
   at Q = 128, -1 to -4% at Q = 256, "Version 11" there. */
static int ssd_fast_version = 11;
/* version 5's warpgroups per forward block: 1, or 2, where the two warpgroups take row tiles 2a and 2a + 1 of a
   chunk and share the B_j / x_j tiles and Hprev: per (b, h, chunk) of Q = 256, 6 tile loads instead of 10 and
   Hprev read twice instead of 4 times. dev/cuda/ssd.cu's "wg=K" argument sets it. */
static int ssd5_wgs = 2;
/* version 5's tile-load thread order (ssd5_load_tile's LINES; dev/cuda/ssd.cu's "lines=0|1") */
static int ssd5_lines = 1;
/* version 6's kernels (a dev knob, dev/cuda/ssd.cu's "parts=K"): bit 0 the 2-heads-per-block forward scan, bit 1
   the chunk-state kernel on wgmma, bit 2 the dC kernel on wgmma */
static int ssd6_parts = 1;
/* version 7's fused state kernels (ssd7_state_scan_kernel): ssd7_fuse 0 never, 1 where the grid of (b, h, slice)
   blocks fills the GPU (B H (P/64) (N/NS) >= the SM count: each block is serial over the whole sequence, so a
   small grid leaves SMs idle and version 6's chunk-parallel kernels win), 2 wherever the shape allows;
   ssd7_ns: state columns per block (64: 8 warps, 32: 4 warps); ssd7_stages: cp.async tile buffers (2 or 3).
   ssd7_split: where the scaled x / dy operand is split in hi + lo (ssd7_state_scan_kernel's SPLIT).
   dev/cuda/ssd.cu's "fuse=K", "ns=K", "st=K", "split=K" set them; ssd7_runs counts the fused launches (its checks that the
   fused kernels ran where they should). */
static int ssd7_fuse = 1;
static int ssd7_ns = 64;
static int ssd7_stages = 3;
static int ssd7_split = 1;  /* 1: the scaled x / dy tile split once per block in shared memory; 0: per warp in registers */
static int ssd7_runs = 0;
/* backward calls that ran version 8's row-tile kernels (dev/cuda/ssd.cu checks that they ran where they should) */
static int ssd8_runs = 0;
/* forward calls that ran version 9's scan (ssd6_scan_fwd_kernel with V9), backward calls that ran its col kernel */
static int ssd9_fwd_runs = 0;
/* version 9's parts (a dev knob, dev/cuda/ssd.cu's "v9=K"): bit 0 the forward scan, bit 1 the col kernel */
static int ssd9_parts = 3;
static int ssd9_bwd_runs = 0;
/* version 11 (the forward scan's loads in its prologue, ssd6_scan_fwd_kernel with V11) where version 9's forward
   scan runs; ssd11_fwd 0 keeps version 9's (a dev knob, dev/cuda/ssd.cu's "v11=0|1"); ssd11_fwd_runs counts its
   launches (the small-shape checks check that it ran on exactly the shapes it takes) */
static int ssd11_fwd = 1;
static int ssd11_fwd_runs = 0;
static int ssd_use_v3(const void* xbc, int xbc_stride, const void* dy, int H, int P, int N) {
#if defined(ENABLE_FP32)
    (void)xbc; (void)xbc_stride; (void)dy; (void)H; (void)P; (void)N;
    return 0;
#else
    return ssd_fast_version >= 3 && P % 16 == 0 && N % 16 == 0 && xbc_stride % 8 == 0 && (H * P) % 8 == 0 &&
           (uintptr_t)xbc % 16 == 0 && (uintptr_t)dy % 16 == 0;
#endif
}

#if !defined(ENABLE_FP32)
template <int PMAX, int NMAX, bool EXACT>
static void ssd3_launch_fwd_e(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                              int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
    size_t smem = ssd3_smem_fwd(P, N);
    ssd_set_smem((const void*)ssd3_scan_fwd_kernel<PMAX, NMAX, EXACT>, smem);
    ssd3_scan_fwd_kernel<PMAX, NMAX, EXACT><<<dim3(ssd_nchunks(T, Q) * CEIL_DIV(Q, SSD3_ROWS), B * H), SSD3_THREADS,
                                              smem, stream>>>(y, xbc, xbc_stride, s.dt, s.cum, s.states, Dskip, T, H,
                                                              P, N, G, Q);
    cudaCheckLast();
}
/* P, N equal to the register widths (the model's 64, 128 among them) run the instantiation with compile-time widths */
template <int PMAX, int NMAX>
static void ssd3_launch_fwd(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B, int T,
                            int H, int P, int N, int G, int Q, cudaStream_t stream) {
    if (P == PMAX && N == NMAX)
        ssd3_launch_fwd_e<PMAX, NMAX, true>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
    else ssd3_launch_fwd_e<PMAX, NMAX, false>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
}
template <int PMAX, int NMAX, bool EXACT>
static void ssd3_launch_bwd_e(floatX* dxbc, SSDWork w, float* colf, float* rowp, const floatX* dy, const floatX* xbc,
                            int xbc_stride, SSDSaved s, const float* Dskip, int B, int T, int H, int P, int N, int G,
                            int Q, cudaStream_t stream) {
    int nti = CEIL_DIV(Q, SSD3_ROWS);
    dim3 grid(ssd_nchunks(T, Q) * nti, B * H);
    ssd3_bct_kernel<<<dim3(ssd_nchunks(T, Q) * nti * nti, B * G), SSD3_THREADS, 0, stream>>>(w.bct, xbc, xbc_stride, T,
                                                                                           H, P, N, G, Q);
    cudaCheckLast();
    size_t smem = ssd3_smem_col(P, N);
    ssd_set_smem((const void*)ssd3_bwd_col_kernel<PMAX, NMAX, EXACT>, smem);
    ssd3_bwd_col_kernel<PMAX, NMAX, EXACT><<<grid, SSD3_THREADS, smem, stream>>>(
        dxbc, (floatX*)w.dB_h, w.xdxs, w.xdxs_st, w.xdy, colf, rowp, dy, xbc, xbc_stride, s.dt, s.cum, w.dstates,
        w.bct, Dskip, T, H, P, N, G, Q);
    cudaCheckLast();
    smem = ssd3_smem_dc(P, N);
    ssd_set_smem((const void*)ssd3_bwd_dc_kernel<PMAX, NMAX, EXACT>, smem);
    ssd3_bwd_dc_kernel<PMAX, NMAX, EXACT><<<grid, SSD3_THREADS, smem, stream>>>(
        (floatX*)w.dC_h, w.roww, dy, xbc, xbc_stride, s.dt, s.cum, s.states, T, H, P, N, G, Q);
    cudaCheckLast();
}
template <int PMAX, int NMAX>
static void ssd3_launch_bwd(floatX* dxbc, SSDWork w, float* colf, float* rowp, const floatX* dy, const floatX* xbc,
                            int xbc_stride, SSDSaved s, const float* Dskip, int B, int T, int H, int P, int N, int G,
                            int Q, cudaStream_t stream) {
    if (P == PMAX && N == NMAX)
        ssd3_launch_bwd_e<PMAX, NMAX, true>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q,
                                            stream);
    else
        ssd3_launch_bwd_e<PMAX, NMAX, false>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q,
                                             stream);
}

/* version 4's chunk-state product (forward S_c: mode 0, backward sum exp(cum_i) dy_i C_i^T: mode 1) */
/* version 6's kernels run where ssd_fast_version >= 6 and their compile-time widths hold (ssd6_parts) */
static inline int ssd6_takes_chunk_state(int P, int N) {
    return ssd_fast_version >= 6 && (ssd6_parts & 2) && P % 64 == 0 && (N == 64 || N == 128);
}
static inline int ssd6_takes_dc(int P, int N) {
    return ssd_fast_version >= 6 && (ssd6_parts & 4) && (P == 64 || P == 128) && (N == 64 || N == 128);
}
template <int PT, int NT>
static void ssd6_launch_dc_t(floatX* dco, int dco_stride, int dco_col0, int direct, float* rowi, const floatX* dy,
                             const floatX* xbc, int xbc_stride, SSDSaved s, dim3 grid, int T, int H, int G, int Q,
                             int hg, cudaStream_t stream) {
    size_t smem = ssd6_smem_dc(64 * PT, 64 * NT);
    ssd_set_smem((const void*)ssd6_bwd_dc_kernel<PT, NT>, smem);
    ssd6_bwd_dc_kernel<PT, NT><<<grid, SSD3_THREADS, smem, stream>>>(dco, dco_stride, dco_col0, direct, rowi, dy, xbc,
                                                                     xbc_stride, s.dt, s.cum, s.states, T, H, G, Q, hg);
    cudaCheckLast();
}
static void ssd6_launch_dc(floatX* dco, int dco_stride, int dco_col0, int direct, float* rowi, const floatX* dy,
                           const floatX* xbc, int xbc_stride, SSDSaved s, dim3 grid, int T, int H, int P, int N, int G,
                           int Q, int hg, cudaStream_t stream) {
    if (P == 64 && N == 128)
        ssd6_launch_dc_t<1, 2>(dco, dco_stride, dco_col0, direct, rowi, dy, xbc, xbc_stride, s, grid, T, H, G, Q, hg, stream);
    else if (P == 64)
        ssd6_launch_dc_t<1, 1>(dco, dco_stride, dco_col0, direct, rowi, dy, xbc, xbc_stride, s, grid, T, H, G, Q, hg, stream);
    else if (N == 128)
        ssd6_launch_dc_t<2, 2>(dco, dco_stride, dco_col0, direct, rowi, dy, xbc, xbc_stride, s, grid, T, H, G, Q, hg, stream);
    else
        ssd6_launch_dc_t<2, 1>(dco, dco_stride, dco_col0, direct, rowi, dy, xbc, xbc_stride, s, grid, T, H, G, Q, hg, stream);
}
static void ssd4_launch_chunk_state(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride,
                                    int v_col0, SSDSaved s, int mode, int B, int T, int H, int P, int N, int G, int Q,
                                    cudaStream_t stream) {
    dim3 grid(ssd_nchunks(T, Q), B * H, CEIL_DIV(P, 64));
    if (ssd6_takes_chunk_state(P, N)) {
        size_t smem6 = ssd6_smem_chunk_state(N);
        if (N == 128) {
            ssd_set_smem((const void*)ssd6_chunk_state_kernel<2>, smem6);
            ssd6_chunk_state_kernel<2><<<grid, SSD3_THREADS, smem6, stream>>>(out, U, u_stride, V, v_stride, v_col0,
                                                                             s.dt, s.cum, mode, T, H, P, G, Q);
        } else {
            ssd_set_smem((const void*)ssd6_chunk_state_kernel<1>, smem6);
            ssd6_chunk_state_kernel<1><<<grid, SSD3_THREADS, smem6, stream>>>(out, U, u_stride, V, v_stride, v_col0,
                                                                             s.dt, s.cum, mode, T, H, P, G, Q);
        }
        cudaCheckLast();
        return;
    }
    size_t smem = ssd4_smem_chunk_state();
    if (N == 128) {
        ssd_set_smem((const void*)ssd4_chunk_state_kernel<128, true>, smem);
        ssd4_chunk_state_kernel<128, true><<<grid, SSD3_THREADS, smem, stream>>>(out, U, u_stride, V, v_stride, v_col0,
                                                                                s.dt, s.cum, mode, T, H, P, N, G, Q);
    } else {
        ssd_set_smem((const void*)ssd4_chunk_state_kernel<SSD_MAXD, false>, smem);
        ssd4_chunk_state_kernel<SSD_MAXD, false><<<grid, SSD3_THREADS, smem, stream>>>(
            out, U, u_stride, V, v_stride, v_col0, s.dt, s.cum, mode, T, H, P, N, G, Q);
    }
    cudaCheckLast();
}

/* version 4's two backward row-tile kernels and, where a group has more than one head-group, the group sum */
template <int PMAX, int NMAX, bool EXACT, bool V8, bool V9>
static void ssd4_launch_bwd_e(floatX* dxbc, SSDWork w, float* colf, float* rowp, const floatX* dy, const floatX* xbc,
                              int xbc_stride, SSDSaved s, const float* Dskip, int B, int T, int H, int P, int N, int G,
                              int Q, cudaStream_t stream) {
    int nti = CEIL_DIV(Q, SSD3_ROWS), nch = ssd_nchunks(T, Q), E = H * P;
    int hg = ssd4_heads_per_block(H, G), nhg = H / hg, direct = hg == H / G;
    ssd3_bct_kernel<<<dim3(nch * nti * nti, B * G), SSD3_THREADS, 0, stream>>>(w.bct, xbc, xbc_stride, T, H, P, N, G,
                                                                               Q);
    cudaCheckLast();
    /* direct: dB, dC into dxbc; else bf16 partials (B*T, nhg, N) in the per-head regions */
    /* the group sum reads them 16 bytes at a time: round the region starts up to 16 bytes (the regions hold
       B*T*H*N floats, the partials at most half of that) */
    floatX* pB = direct ? dxbc : (floatX*)(((uintptr_t)w.dB_h + 15) & ~(uintptr_t)15);
    floatX* pC = direct ? dxbc : (floatX*)(((uintptr_t)w.dC_h + 15) & ~(uintptr_t)15);
    int pstride = direct ? xbc_stride : nhg * N;
    dim3 grid = V8 ? dim3(nti, nch, B * nhg) : dim3(nch, B * nhg, nti);  /* version 8: row tiles adjacent */
    size_t smem = ssd3_smem_col(P, N) + (V8 ? ssd8_smem_slab() : 0);
    ssd_set_smem((const void*)ssd4_bwd_col_kernel<PMAX, NMAX, EXACT, V8, V9>, smem);
    ssd4_bwd_col_kernel<PMAX, NMAX, EXACT, V8, V9><<<grid, SSD3_THREADS, smem, stream>>>(
        dxbc, pB, pstride, E, direct, w.xdxs, w.xdxs_st, w.xdy, colf, rowp, dy, xbc, xbc_stride, s.dt, s.cum,
        w.dstates, w.bct, Dskip, T, H, P, N, G, Q, hg);
    cudaCheckLast();
    if (V8) {
        smem = ssd3_smem_dc(P, N);
        ssd_set_smem((const void*)ssd4_bwd_dc_kernel<PMAX, NMAX, EXACT, true>, smem);
        ssd4_bwd_dc_kernel<PMAX, NMAX, EXACT, true><<<grid, SSD3_THREADS, smem, stream>>>(
            pC, pstride, E + G * N, direct, w.roww, dy, xbc, xbc_stride, s.dt, s.cum, s.states, T, H, P, N, G, Q, hg);
        cudaCheckLast();
        ssd8_runs++;
        if (V9) ssd9_bwd_runs++;
    } else if (ssd6_takes_dc(P, N) && (uintptr_t)s.states % 16 == 0) {  /* its state loads are 16 bytes wide */
        ssd6_launch_dc(pC, pstride, E + G * N, direct, w.roww, dy, xbc, xbc_stride, s, grid, T, H, P, N, G, Q, hg,
                       stream);
    } else {
        smem = ssd3_smem_dc(P, N);
        ssd_set_smem((const void*)ssd4_bwd_dc_kernel<PMAX, NMAX, EXACT, false>, smem);
        ssd4_bwd_dc_kernel<PMAX, NMAX, EXACT, false><<<grid, SSD3_THREADS, smem, stream>>>(
            pC, pstride, E + G * N, direct, w.roww, dy, xbc, xbc_stride, s.dt, s.cum, s.states, T, H, P, N, G, Q, hg);
        cudaCheckLast();
    }
    if (!direct) {
        size_t n = (size_t)B * T * G * (N / 8);
        ssd4_group_sum_kernel<<<(unsigned)CEIL_DIV(n, (size_t)256), 256, 0, stream>>>(dxbc, xbc_stride, pB, pC, B * T,
                                                                                     nhg, N, G, E);
        cudaCheckLast();
    }
}
/* version 8's kernels run where ssd_fast_version >= 8, P, N are their compile-time widths (64 or 128), Q is 64 or
   128 (the col kernel's B_j . C_i slab holds 128 columns) and bct and the states are 16-byte aligned */
static inline int ssd8_takes(int P, int N, int Q, const void* bct, const void* states) {
    return ssd_fast_version >= 8 && (P == 64 || P == 128) && (N == 64 || N == 128) && (Q == 64 || Q == 128) &&
           (uintptr_t)bct % 16 == 0 && (uintptr_t)states % 16 == 0;
}
template <int PMAX, int NMAX>
static void ssd4_launch_bwd(floatX* dxbc, SSDWork w, float* colf, float* rowp, const floatX* dy, const floatX* xbc,
                            int xbc_stride, SSDSaved s, const float* Dskip, int B, int T, int H, int P, int N, int G,
                            int Q, cudaStream_t stream) {
    if (P == PMAX && N == NMAX && ssd8_takes(P, N, Q, w.bct, s.states) && ssd_fast_version >= 9 &&
        (ssd9_parts & 2))
        ssd4_launch_bwd_e<PMAX, NMAX, true, true, true>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N,
                                                        G, Q, stream);
    else if (P == PMAX && N == NMAX && ssd8_takes(P, N, Q, w.bct, s.states))
        ssd4_launch_bwd_e<PMAX, NMAX, true, true, false>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G,
                                                  Q, stream);
    else if (P == PMAX && N == NMAX)
        ssd4_launch_bwd_e<PMAX, NMAX, true, false, false>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G,
                                                   Q, stream);
    else
        ssd4_launch_bwd_e<PMAX, NMAX, false, false, false>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N,
                                                    G, Q, stream);
}
/* version 6's forward: 2 heads of a group per block where P = 64, N in {64, 128}, H/G even (ssd6_parts bit 0) */
static inline int ssd6_takes_fwd(int H, int P, int N, int G) {
    return ssd_fast_version >= 6 && (ssd6_parts & 1) && P == 64 && (N == 64 || N == 128) && (H / G) % 2 == 0;
}
template <int NK, bool V9, bool V11>
static void ssd6_launch_fwd_t(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                              int T, int H, int G, int Q, cudaStream_t stream) {
    size_t smem = V11 ? ssd11_smem_fwd(16 * NK, 2, Q) : V9 ? ssd9_smem_fwd(16 * NK, 2) : ssd6_smem_fwd(16 * NK, 2);
    ssd_set_smem((const void*)ssd6_scan_fwd_kernel<NK, 2, V9, V11>, smem);
    dim3 grid(ssd_nchunks(T, Q) * CEIL_DIV(CEIL_DIV(Q, SSD5_ROWS), 2), B * H / 2);
    ssd6_scan_fwd_kernel<NK, 2, V9, V11><<<grid, SSD3_THREADS * 2, smem, stream>>>(y, xbc, xbc_stride, s.dt, s.cum,
                                                                                   s.states, Dskip, T, H, G, Q);
    cudaCheckLast();
    if (V9) ssd9_fwd_runs++;
    if (V11) ssd11_fwd_runs++;
}
/* version 5 runs where version 3's layout rules hold, P and N are among its compile-time widths and the saved
   states are 16-byte aligned (B * H * T even: they follow 2 * B * H * T floats of dt and cum) */
static inline int ssd5_takes(int P, int N) { return (P == 64 || P == 128) && (N == 64 || N == 128); }
template <int PT, int NK, int WGS, int LINES>
static void ssd5_launch_fwd_t(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                              int T, int H, int G, int Q, cudaStream_t stream) {
    size_t smem = ssd5_smem_fwd(64 * PT, 16 * NK, WGS);
    ssd_set_smem((const void*)ssd5_scan_fwd_kernel<PT, NK, WGS, LINES>, smem);
    dim3 grid(ssd_nchunks(T, Q) * CEIL_DIV(CEIL_DIV(Q, SSD5_ROWS), WGS), B * H);
    ssd5_scan_fwd_kernel<PT, NK, WGS, LINES><<<grid, SSD3_THREADS * WGS, smem, stream>>>(
        y, xbc, xbc_stride, s.dt, s.cum, s.states, Dskip, T, H, G, Q);
    cudaCheckLast();
}
template <int WGS, int LINES>
static void ssd5_launch_fwd_w(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                              int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
    if (P == 64 && N == 128) ssd5_launch_fwd_t<1, 8, WGS, LINES>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
    else if (P == 64) ssd5_launch_fwd_t<1, 4, WGS, LINES>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
    else if (N == 128) ssd5_launch_fwd_t<2, 8, WGS, LINES>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
    else ssd5_launch_fwd_t<2, 4, WGS, LINES>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
}
static void ssd5_launch_fwd(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                            int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
    if (ssd6_takes_fwd(H, P, N, G)) {
        int v9 = ssd_fast_version >= 9 && (ssd9_parts & 1), v11 = v9 && ssd_fast_version >= 11 && ssd11_fwd;
        if (N == 128 && v11) ssd6_launch_fwd_t<8, true, true>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
        else if (N == 128 && v9) ssd6_launch_fwd_t<8, true, false>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
        else if (N == 128) ssd6_launch_fwd_t<8, false, false>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
        else if (v11) ssd6_launch_fwd_t<4, true, true>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
        else if (v9) ssd6_launch_fwd_t<4, true, false>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
        else ssd6_launch_fwd_t<4, false, false>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
        return;
    }
    if (ssd5_wgs == 2 && ssd5_lines)
        ssd5_launch_fwd_w<2, 1>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
    else if (ssd5_wgs == 2) ssd5_launch_fwd_w<2, 0>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
    else if (ssd5_lines) ssd5_launch_fwd_w<1, 1>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
    else ssd5_launch_fwd_w<1, 0>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
}
#endif

#if !defined(ENABLE_FP32)
/* version 7 runs where version 3's layout rules hold (checked by the caller), ssd_fast_version >= 7, P % 64 == 0,
   N % ssd7_ns == 0, Q % 64 == 0 (a 64-row tile never straddles two chunks), the fp32 state buffers it reads or
   writes with 8-byte accesses are 8-byte aligned (NULL passes), and ssd7_fuse's rule on the grid size holds */
static inline int ssd7_takes(int B, int H, int P, int N, int Q, const void* s0, const void* s1, const void* s2) {
    if (ssd_fast_version < 7 || ssd7_fuse == 0 || P % 64 != 0 || N % ssd7_ns != 0 || Q % 64 != 0) return 0;
    if ((uintptr_t)s0 % 8 != 0 || (uintptr_t)s1 % 8 != 0 || (uintptr_t)s2 % 8 != 0) return 0;
    return ssd7_fuse == 2 || (long)B * H * (P / 64) * (N / ssd7_ns) >= cuda_num_sms();
}
/* entries of version 7's dotp per (b, h, chunk): one per warp of each (64 x NS) slice */
static inline int ssd7_nsplit(int P, int N) { return P * N / 512; }
template <int NS, int STAGES, int MODE, int SPLIT>
static void ssd7_launch_t(float* out, float* final_state, const float* init_state, float* dotp, const float* hstates,
                          const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0, SSDSaved s, int B,
                          int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
    size_t smem = ssd7_smem<NS>(STAGES, SPLIT);
    ssd_set_smem((const void*)ssd7_state_scan_kernel<NS, STAGES, MODE, SPLIT>, smem);
    ssd7_state_scan_kernel<NS, STAGES, MODE, SPLIT><<<dim3((P / 64) * (N / NS), B * H), NS * 4, smem, stream>>>(
        out, final_state, init_state, dotp, hstates, U, u_stride, V, v_stride, v_col0, s.dt, s.cum, T, H, P, N, G, Q);
    cudaCheckLast();
    ssd7_runs++;
}
template <int MODE>
static void ssd7_launch(float* out, float* final_state, const float* init_state, float* dotp, const float* hstates,
                        const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0, SSDSaved s, int B,
                        int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
#define SSD7_ARGS out, final_state, init_state, dotp, hstates, U, u_stride, V, v_stride, v_col0, s, B, T, H, P, N, G, Q, stream
    if (!ssd7_split) ssd7_launch_t<64, 3, MODE, 0>(SSD7_ARGS);  /* the first form, kept for comparison (ns=64 st=3) */
    else if (ssd7_ns == 32 && ssd7_stages == 2) ssd7_launch_t<32, 2, MODE, 1>(SSD7_ARGS);
    else if (ssd7_ns == 32) ssd7_launch_t<32, 3, MODE, 1>(SSD7_ARGS);
    else if (ssd7_stages == 2) ssd7_launch_t<64, 2, MODE, 1>(SSD7_ARGS);
    else ssd7_launch_t<64, 3, MODE, 1>(SSD7_ARGS);
#undef SSD7_ARGS
}
#endif

/* forward: y (BT, E) floatX = SSD(...) + D[h] x. See the top of this file for `saved`. */
static void ssd_forward(floatX* y, float* final_state, void* saved, const floatX* xbc, int xbc_stride,
                        const floatX* dt_raw, int dt_stride, const float* dt_bias, const float* A_log,
                        const float* Dskip, const float* init_state, int B, int T, int H, int P, int N, int G,
                        int Q, cudaStream_t stream) {
    ssd_check_shapes(B, T, H, P, N, G, Q);
    SSDSaved s = ssd_saved_layout(saved, B, T, H, P, N, Q);
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE), E = H * P, PN = P * N;
    ssd_dt_cumsum_kernel<<<dim3(nch, B * H), 32, 0, stream>>>(s.dt, s.cum, dt_raw, dt_stride, dt_bias, A_log, T, H,
                                                              Q);
    cudaCheckLast();
    dim3 og(nch, B * H, CEIL_DIV(P, 64) * CEIL_DIV(N, 64));
    int v3 = ssd_use_v3(xbc, xbc_stride, y, H, P, N), fused = 0;
#if !defined(ENABLE_FP32)
    /* version 7: chunk states and the state pass in one kernel (no S_c in global memory) */
    fused = v3 && ssd7_takes(B, H, P, N, Q, s.states, final_state, init_state);
    if (fused)
        ssd7_launch<0>(s.states, final_state, init_state, NULL, NULL, xbc, xbc_stride, xbc, xbc_stride, E, s, B, T, H, P,
                       N, G, Q, stream);
    else if (v3 && ssd_fast_version >= 4)
        ssd4_launch_chunk_state(s.states, xbc, xbc_stride, xbc, xbc_stride, E, s, 0, B, T, H, P, N, G, Q, stream);
    else if (v3)
        ssd3_chunk_state_kernel<<<og, SSD3_THREADS, 0, stream>>>(s.states, xbc, xbc_stride, xbc, xbc_stride, E, s.dt,
                                                                 s.cum, 0, T, H, P, N, G, Q);
    else
#endif
        ssd_chunk_outer_kernel<<<og, SSD_THREADS, 0, stream>>>(s.states, xbc, xbc_stride, xbc, xbc_stride, E, s.dt,
                                                               s.cum, 0, T, H, P, N, G, Q);
    cudaCheckLast();
    if (!fused) {
        ssd_state_pass_kernel<<<dim3(B * H, CEIL_DIV(PN, 256)), 256, 0, stream>>>(s.states, final_state, init_state,
                                                                                   s.cum, T, H, PN, Q);
        cudaCheckLast();
    }
#if !defined(ENABLE_FP32)
    if (v3 && ssd_fast_version >= 5 && ssd5_takes(P, N) && (uintptr_t)s.states % 16 == 0) {
        ssd5_launch_fwd(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
        return;
    }
    if (v3) {
        if (P <= 64 && N <= 64) ssd3_launch_fwd<64, 64>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
        else if (P <= 64) ssd3_launch_fwd<64, 128>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
        else if (N <= 64) ssd3_launch_fwd<128, 64>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
        else ssd3_launch_fwd<128, 128>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
        return;
    }
#endif
    size_t smem = ssd_tile_smem_bytes(P, N, 2, 2);  /* Cs, Bs | Xs, Acc */
    ssd_set_smem((const void*)ssd_chunk_scan_fwd_kernel, smem);
    ssd_chunk_scan_fwd_kernel<<<dim3(nch * ntile, B * H), SSD_THREADS, smem, stream>>>(
        y, xbc, xbc_stride, s.dt, s.cum, s.states, Dskip, T, H, P, N, G, Q);
    cudaCheckLast();
}

/* backward: see the top of this file. init_state only matters through `saved` (the states it produced). */
static void ssd_backward(floatX* dxbc, floatX* ddt_raw, float* d_dt_bias, float* d_A_log, float* d_D,
                         const floatX* dy, const void* saved, const floatX* xbc, int xbc_stride, const floatX* dt_raw,
                         int dt_stride, const float* dt_bias, const float* A_log, const float* Dskip,
                         const float* init_state, void* workspace, int B, int T, int H, int P, int N, int G, int Q,
                         cudaStream_t stream) {
    (void)init_state;
    ssd_check_shapes(B, T, H, P, N, G, Q);
    SSDSaved s = ssd_saved_layout((void*)saved, B, T, H, P, N, Q);
    SSDWork w = ssd_work_layout(workspace, B, T, H, P, N, G, Q);
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE), E = H * P, PN = P * N, nsplit = ssd_nsplit(P, N);
    dim3 og(nch, B * H, CEIL_DIV(P, 64) * CEIL_DIV(N, 64));
    int v3 = ssd_use_v3(xbc, xbc_stride, dy, H, P, N) && (uintptr_t)dxbc % 16 == 0, fused = 0;
#if !defined(ENABLE_FP32)
    /* version 7: the dstate products and the reverse pass in one kernel; its dotp has ssd7_nsplit entries */
    fused = v3 && ssd7_takes(B, H, P, N, Q, s.states, w.dstates, NULL);
    if (fused) {
        ssd7_launch<1>(w.dstates, NULL, NULL, w.dotp, s.states, dy, E, xbc, xbc_stride, E + G * N, s, B, T, H, P, N, G,
                       Q, stream);
        nsplit = ssd7_nsplit(P, N);
    } else if (v3 && ssd_fast_version >= 4)
        ssd4_launch_chunk_state(w.dstates, dy, E, xbc, xbc_stride, E + G * N, s, 1, B, T, H, P, N, G, Q, stream);
    else if (v3)
        ssd3_chunk_state_kernel<<<og, SSD3_THREADS, 0, stream>>>(w.dstates, dy, E, xbc, xbc_stride, E + G * N, s.dt,
                                                                 s.cum, 1, T, H, P, N, G, Q);
    else
#endif
        ssd_chunk_outer_kernel<<<og, SSD_THREADS, 0, stream>>>(w.dstates, dy, E, xbc, xbc_stride, E + G * N, s.dt,
                                                               s.cum, 1, T, H, P, N, G, Q);
    cudaCheckLast();
    if (!fused) {
        ssd_dstate_pass_kernel<<<dim3(B * H, nsplit), SSD_THREADS, 0, stream>>>(w.dstates, w.dotp, s.states, s.cum, T,
                                                                                H, PN, Q);
        cudaCheckLast();
    }
#if !defined(ENABLE_FP32)
    if (v3) {
        float* colf = w.colw;                                   /* (B, H, T) */
        float* rowp = w.colw + (size_t)B * H * nch * Q;         /* (B, H, nchunks, ceil(Q/64), Q) */
        if (ssd_fast_version >= 4) {
            if (P <= 64 && N <= 64)
                ssd4_launch_bwd<64, 64>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
            else if (P <= 64)
                ssd4_launch_bwd<64, 128>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
            else if (N <= 64)
                ssd4_launch_bwd<128, 64>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
            else
                ssd4_launch_bwd<128, 128>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q,
                                          stream);
        } else if (P <= 64 && N <= 64)
            ssd3_launch_bwd<64, 64>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
        else if (P <= 64)
            ssd3_launch_bwd<64, 128>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
        else if (N <= 64)
            ssd3_launch_bwd<128, 64>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
        else
            ssd3_launch_bwd<128, 128>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
        ssd3_bwd_dt_kernel<<<dim3(nch, B * H), 32, 0, stream>>>(ddt_raw, dt_stride, w.part, s.dt, s.cum, w.roww, rowp,
                                                                colf, w.xdxs, w.xdxs_st, w.xdy, w.dotp, nsplit, dt_raw,
                                                                dt_bias, A_log, B, T, H, Q);
        cudaCheckLast();
    } else
#endif
    {
        size_t smem = ssd_tile_smem_bytes(P, N, 3, 3);  /* Bs, Cs, AB | Xs, Ys, AX */
        ssd_set_smem((const void*)ssd_bwd_dx_db_kernel, smem);
        ssd_bwd_dx_db_kernel<<<dim3(nch * ntile, B * H), SSD_THREADS, smem, stream>>>(
            dxbc, w.dB_h, w.xdxs, w.xdxs_st, w.xdy, dy, xbc, xbc_stride, s.dt, s.cum, w.dstates, Dskip, T, H, P, N, G, Q);
        cudaCheckLast();
        smem = ssd_tile_smem_bytes(P, N, 3, 2);  /* Cs, Bs, Acc | Ys, Xs */
        ssd_set_smem((const void*)ssd_bwd_dc_kernel, smem);
        ssd_bwd_dc_kernel<<<dim3(nch * ntile, B * H), SSD_THREADS, smem, stream>>>(
            w.dC_h, w.roww, w.colw, dy, xbc, xbc_stride, s.dt, s.cum, s.states, T, H, P, N, G, Q);
        cudaCheckLast();
        ssd_bwd_dt_kernel<<<dim3(nch, B * H), 32, 0, stream>>>(ddt_raw, dt_stride, w.part, s.dt, s.cum, w.roww, w.xdxs,
                                                               w.xdxs_st, w.colw, w.xdy, w.dotp, nsplit, dt_raw, dt_bias, A_log, B, T, H,
                                                               Q);
        cudaCheckLast();
    }
    ssd_bwd_param_sum_kernel<<<CEIL_DIV(3 * H, 64), 64, 0, stream>>>(d_dt_bias, d_A_log, d_D, w.part, B, H, nch);
    cudaCheckLast();
    size_t ngs = (size_t)B * T * G * N;
    unsigned nblk = (unsigned)CEIL_DIV(ngs, (size_t)256);
#if !defined(ENABLE_FP32)
    if (v3 && ssd_fast_version >= 4) return;  /* version 4 summed dB, dC over the heads itself */
    if (v3)  /* version 3 writes the per-head partials as bf16 (half the traffic of this pass and of their writes) */
        ssd_bwd_group_sum_kernel<floatX><<<nblk, 256, 0, stream>>>(dxbc, xbc_stride, (const floatX*)w.dB_h,
                                                                   (const floatX*)w.dC_h, B * T, H, P, N, G);
    else
#endif
        ssd_bwd_group_sum_kernel<float><<<nblk, 256, 0, stream>>>(dxbc, xbc_stride, w.dB_h, w.dC_h, B * T, H, P, N,
                                                                  G);
    cudaCheckLast();
}

#endif
