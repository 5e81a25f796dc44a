/* dev/cuda/ssd_lab.cuh: the SSD lab (versions 2 to 11), a frozen copy of llmc/ssd.cuh as it stood before the default path moved
   alone into llmc/ (the knobs, run counters and version ladder stay here). Included by dev/cuda/ssd.cu inside
   namespace lab, after llmc/cuda_common.h and llmc/wgmma.cuh; only the include lines and guards differ from the
   original. Version history: dev/cuda/NOTES_ssd.md. */
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
 * arithmetic, bitwise version 9's y; see "version 11" in ssd_wgmma.cuh; version 10 runs as version 9); version 9 is
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
 * - version 3 (the base of versions 4 and 5; "version 3" in ssd_mma.cuh): 64-row tiles, bf16 operands in shared memory
 *   read with ldmatrix, accumulators in registers, score tiles repacked in registers as the next product's operand,
 *   B_j . C_i made once per group for the backward, per-head dB/dC partials in bf16. Needs P, N multiples of 16 and
 *   16-byte aligned rows (ssd_use_v3); 1.5 ms forward+backward at B=8, T=2048, H=24, P=64, N=128 on an H100.
 * - version 2 (the fp32 build, and any shape version 3 does not take): 32-row tiles; every product goes through
 *   ssd_gemm32: tensor cores (mma.sync m16n8k16, bf16 operands, fp32 accumulation in shared memory) in the bf16
 *   build, fp32 dot products with -DENABLE_FP32 (version 1 in dev/cuda/ssd.cu is the all-fp32 CUDA-core form).
 * Both: any P, N <= 128, G dividing H, 16 <= Q <= 256, T any length (the last chunk may be partial).
 *
 * Files (one concern each; this file includes the others, which are not included on their own):
 *   llmc/ssd.cuh        this comment, the saved / workspace layouts, the device helpers shared by every version,
 *                       version 2's kernels (the fp32 build's path), the dev knobs (ssd_fast_version, ...), the
 *                       shape rules, and the dispatch (ssd_forward / ssd_backward, at the end)
 *   llmc/ssd_mma.cuh    the mma.sync tile kernels of versions 3, 4, 8 and 9's col kernel, with their launchers
 *   llmc/ssd_wgmma.cuh  the wgmma forward scans (versions 5, 6, 9, 11) and version 6's wgmma ports, with launchers
 *   llmc/ssd_state.cuh  version 7's fused state scans (chunk states and the pass over chunks), with launchers
 * The default path (bf16 build, version 11) at the trainer's 130M shape (B=8, T=2048, H=24, G=1, P=64, N=128,
 * Q=128) runs, forward: ssd_dt_cumsum_kernel, ssd7_state_scan_kernel (mode 0: the states entering each chunk and
 * the final state), ssd6_scan_fwd_kernel (V9, V11: two heads per block, y); backward: ssd7_state_scan_kernel
 * (mode 1: dH_c and <dH_c, Hout_c>), ssd3_bct_kernel, ssd4_bwd_col_kernel (V8, V9: dx, dB), ssd4_bwd_dc_kernel
 * (V8: dC), ssd4_group_sum_kernel (H/G = 24 heads in 6 head-groups of 4), ssd3_bwd_dt_kernel and
 * ssd_bwd_param_sum_kernel.
 */
#ifndef SSD_LAB_CUH
#define SSD_LAB_CUH

#include <stdint.h>
#include "llmc/cuda_common.h"  /* already included outside namespace lab */

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

/* ------------------------------------------------------------------------------------------------------------ */
/* host side: the shape check, the dev knobs and version 3's layout rule (used by the launchers of the files
   included below) */

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
/* version 4's heads per block of the backward row-tile kernels (see "version 4" in llmc/ssd_mma.cuh): the largest
   divisor of H/G up to ssd4_hg_max. A variable in every build so that dev/cuda/ssd.cu can set it (it matters in
   bf16 only). */
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
static int ssd_use_v3(const void* xbc, int xbc_stride, const void* dy, int H, int P, int N) {
#if defined(ENABLE_FP32)
    (void)xbc; (void)xbc_stride; (void)dy; (void)H; (void)P; (void)N;
    return 0;
#else
    return ssd_fast_version >= 3 && P % 16 == 0 && N % 16 == 0 && xbc_stride % 8 == 0 && (H * P) % 8 == 0 &&
           (uintptr_t)xbc % 16 == 0 && (uintptr_t)dy % 16 == 0;
#endif
}

/* ------------------------------------------------------------------------------------------------------------ */
/* the bf16 build's kernels and their launchers, by concern (each file empty in the fp32 build but for its
   include guard); included in this order: each uses the ones above it */
#include "ssd_lab_mma.cuh"    /* versions 3, 4, 8, 9's col: mma.sync tile kernels */
#include "ssd_lab_wgmma.cuh"  /* versions 5, 6, 9, 11: wgmma forward scans, version 6's wgmma ports */
#include "ssd_lab_state.cuh"  /* version 7: the fused chunk-state scans */

/* ------------------------------------------------------------------------------------------------------------ */
/* dispatch */

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
