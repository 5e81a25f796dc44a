/*
 * gated_norm.cuh: the gated RMSNorm after the SSD, out = RMSNorm_g(y * SiLU(z)) * w.
 *
 * The norm runs over each group of E/G channels separately (mamba_ssm's convention; HF normalizes over all E, which
 * agrees only at G = 1, see SPEC.md section 8). z is read in place from zxbcdt's z columns (row stride d_in_proj),
 * so no copy of z is made.
 * Forward, one warp per (row, group):  v = y * SiLU(z);  rstd = 1/sqrt(mean_group(v^2) + eps) saved (BT, G);
 *   out = v * rstd * w (floatX (BT, E), the input of out_proj).
 * Backward, with g = dout * w, r = rstd, v recomputed from y and z (cheaper than storing v):
 *   dv = r * (g - v * r^2 * mean_group(g * v))
 *   dy = dv * SiLU(z)                    floatX (BT, E), overwritten
 *   dz = dv * y * SiLU'(z)               written into d_zxbcdt's z columns (row stride dz_stride), overwritten
 *   dw += sum over rows of dout * v * r  deterministic: per-warp shared rows, per-block partials in a fixed order,
 *                                        then partial_sums_accumulate.
 *   out (optional, -r 1): the forward's output written again, bitwise (the same products in the same order), so
 *   a trainer that recomputes instead of storing out runs no second forward: the backward has y, z, rstd in hand
 *   and out_proj's weight gradient can wait for it.
 *   SiLU(z) = z s, SiLU'(z) = s (1 + z (1 - s)), s = sigmoid(z).
 *
 * Two kinds of kernels:
 * - row-resident (the default where it applies: group width Eg = CH * 256, CH = 1..8, 16-byte alignment; 130M:
 *   Eg = 1536, CH = 6): a lane holds its CH chunks of 8 elements of the row in registers (y, z, dout as loaded,
 *   packed), so the row is read from memory once and all its loads are in flight together; in the backward each
 *   warp keeps its (fixed) columns' dw sums in registers across its rows, so there are no per-warp shared dw rows.
 *   gated_norm_forward_rows_kernel<CH>, gated_norm_backward_rows_kernel<CH>.
 * - generic (any E, G): gated_norm_forward_kernel<VEC>, gated_norm_backward_kernel<VEC>; VEC = 8 (16-byte loads)
 *   when the group width, the z row stride and the pointers allow it, else a scalar path.
 * Launchers: gated_norm_forward, gated_norm_backward (+ _cfg versions that pick the kernel, for dev/cuda);
 * gated_norm_backward_scratch_floats(E) sizes the partials.
 */
#ifndef MAMBA2_GATED_NORM_CUH
#define MAMBA2_GATED_NORM_CUH

#include "cuda_common.h"
#include "utils.h"
#include "vec128.cuh"
#include "partial_sum.cuh"

#define GNORM_EPS 1e-5f
#ifndef GNORM_BWD_MAX_BLOCKS
#define GNORM_BWD_MAX_BLOCKS 264   /* fixed, not read off the device: the same partials order on every GPU */
#endif
#define GNORM_SMEM_LIMIT (48 * 1024)
/* chunks of a row unrolled per lane, forward and backward (#pragma unroll takes a constant, not a macro). Measured on
 * H100 at the 130M shape, bf16: forward 0.0841 ms unrolled by 2 against 0.0915 not unrolled; backward 0.1542 ms
 * against 0.1475, so the backward is left as it is */
#ifndef GNORM_UNROLL
#define GNORM_UNROLL 2
#endif
#ifndef GNORM_BWD_UNROLL
#define GNORM_BWD_UNROLL 1
#endif
static constexpr int gnorm_unroll = GNORM_UNROLL;
static constexpr int gnorm_bwd_unroll = GNORM_BWD_UNROLL;

/* the forward's output element, out = v r w with v = y z sigmoid(z): both forward kernels and the backward's optional
 * out go through these two, so the products are made in one order and the backward's out is bitwise the forward's */
__device__ static inline float gnorm_gated(float y, float z, float s) { return y * z * s; }
__device__ static inline float gnorm_out(float v, float r, float w) { return v * r * w; }

template <int VEC>
__global__ static void gated_norm_forward_kernel(floatX* out, float* rstd, const floatX* y, const floatX* z,
                                                 int z_stride, const float* w, int BT, int E, int G) {
    int warps = blockDim.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    int item = blockIdx.x * warps + threadIdx.x / WARP_SIZE;
    if (item >= BT * G) return;
    int row = item / G, g = item % G, Eg = E / G;
    int c_begin = g * Eg, c_end = c_begin + Eg;
    const floatX* yr = y + (size_t)row * E;
    const floatX* zr = z + (size_t)row * z_stride;
    float sumsq = 0.f;
#pragma unroll gnorm_unroll
    for (int c = c_begin + lane * VEC; c < c_end; c += WARP_SIZE * VEC) {
        float yv[VEC], zv[VEC];
        loadNX<VEC>(yv, yr + c);
        loadNX<VEC>(zv, zr + c);
        for (int i = 0; i < VEC; i++) {
            float v = gnorm_gated(yv[i], zv[i], fast_sigmoid(zv[i]));
            sumsq += v * v;
        }
    }
    sumsq = warp_reduce_sum(sumsq);
    float r = rsqrtf(sumsq / Eg + GNORM_EPS);
    if (lane == 0) rstd[item] = r;
#pragma unroll gnorm_unroll
    for (int c = c_begin + lane * VEC; c < c_end; c += WARP_SIZE * VEC) {
        float yv[VEC], zv[VEC], o[VEC];
        loadNX<VEC>(yv, yr + c);   /* second read of the row: an L1/L2 hit */
        loadNX<VEC>(zv, zr + c);
        for (int i = 0; i < VEC; i++) o[i] = gnorm_out(gnorm_gated(yv[i], zv[i], fast_sigmoid(zv[i])), r, w[c + i]);
        storeNX<VEC>(out + (size_t)row * E + c, o);
    }
}

template <int VEC>
__global__ static void gated_norm_backward_kernel(floatX* out, floatX* dy, floatX* dz, int dz_stride,
                                                  float* dw_partials,
                                                  const floatX* dout, const floatX* y, const floatX* z, int z_stride,
                                                  const float* w, const float* rstd, int BT, int E, int G) {
    extern __shared__ float warp_dw[];   /* (warps, E): each warp's own dw row */
    int warps = blockDim.x / WARP_SIZE, warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    float* my_dw = warp_dw + (size_t)warp * E;
    for (int c = lane; c < E; c += WARP_SIZE) my_dw[c] = 0.f;
    __syncwarp();   /* lanes zero other columns than they later accumulate */
    int Eg = E / G;
    /* fixed assignment of (row, group) items to warps */
    for (int item = blockIdx.x * warps + warp; item < BT * G; item += gridDim.x * warps) {
        int row = item / G, g = item % G;
        int c_begin = g * Eg, c_end = c_begin + Eg;
        const floatX* yr = y + (size_t)row * E;
        const floatX* zr = z + (size_t)row * z_stride;
        const floatX* dor = dout + (size_t)row * E;
        float r = rstd[item];
        float dot = 0.f;
#pragma unroll gnorm_bwd_unroll
    for (int c = c_begin + lane * VEC; c < c_end; c += WARP_SIZE * VEC) {
            float yv[VEC], zv[VEC], dv[VEC];
            loadNX<VEC>(yv, yr + c);
            loadNX<VEC>(zv, zr + c);
            loadNX<VEC>(dv, dor + c);
            for (int i = 0; i < VEC; i++) dot += dv[i] * w[c + i] * yv[i] * zv[i] * fast_sigmoid(zv[i]);
        }
        dot = warp_reduce_sum(dot);
        float m = dot / Eg * r * r;
#pragma unroll gnorm_bwd_unroll
    for (int c = c_begin + lane * VEC; c < c_end; c += WARP_SIZE * VEC) {
            float yv[VEC], zv[VEC], dov[VEC], dyv[VEC], dzv[VEC], o[VEC];
            loadNX<VEC>(yv, yr + c);
            loadNX<VEC>(zv, zr + c);
            loadNX<VEC>(dov, dor + c);
            for (int i = 0; i < VEC; i++) {
                float s = fast_sigmoid(zv[i]);
                float silu = zv[i] * s;
                float v = yv[i] * silu;
                float dvv = r * (dov[i] * w[c + i] - v * m);
                dyv[i] = dvv * silu;
                dzv[i] = dvv * yv[i] * s * (1.f + zv[i] * (1.f - s));
                my_dw[c + i] += dov[i] * v * r;
                o[i] = gnorm_out(gnorm_gated(yv[i], zv[i], s), r, w[c + i]);
            }
            storeNX<VEC>(dy + (size_t)row * E + c, dyv);
            storeNX<VEC>(dz + (size_t)row * dz_stride + c, dzv);
            if (out != NULL) storeNX<VEC>(out + (size_t)row * E + c, o);
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < E; c += blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < warps; k++) s += warp_dw[(size_t)k * E + c];
        dw_partials[(size_t)blockIdx.x * E + c] = s;
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Row-resident kernels. Lane l of a warp owns columns c0 + k * 256 + (0..7) of its group, c0 = g * Eg + 8 l,
 * k = 0..CH-1: the same columns and the same per-lane summation order as the generic kernels' loop.
 */
#define GNORM_ROW_CHUNK (WARP_SIZE * 8)   /* columns one warp covers per chunk: 256 */
#define GNORM_ROW_MAX_CHUNKS 8            /* Eg up to 2048 */
#define GNORM_ROW_NV (8 / XVEC)           /* 16-byte vectors per chunk: 1 in bf16, 2 in fp32 */
#define GNORM_ROWS_THREADS 128            /* backward block: 4 warps */
/* minimum resident backward blocks per SM asked of the compiler: at 1, CH = 6 takes 240 registers (no spills), 2
 * blocks of 4 warps an SM; at 3 it is held to 168 registers and spills ~400 bytes a thread */
#ifndef GNORM_BWD_ROWS_MINB
#define GNORM_BWD_ROWS_MINB 1
#endif
#ifndef GNORM_BWD_ROWS_BLOCKS
#define GNORM_BWD_ROWS_BLOCKS 264         /* fixed (2 blocks on each of 132 SMs), not read off the device */
#endif
#define GNORM_BWD_ROWS_MAX_BLOCKS 1056    /* the partials buffer holds this many rows */

/* chunk k of a lane as loaded: 8 floatX in GNORM_ROW_NV 16-byte vectors (4 registers in bf16) */
__device__ static inline void gnorm_load_chunk(Vec128<floatX> dst[GNORM_ROW_NV], const floatX* p) {
#pragma unroll
    for (int j = 0; j < GNORM_ROW_NV; j++) dst[j] = load128(p + j * XVEC);
}
__device__ static inline float gnorm_elem(const Vec128<floatX> src[GNORM_ROW_NV], int i) {
    return toF(src[i / XVEC].v[i % XVEC]);
}

template <int CH>
__global__ static void __launch_bounds__(256) gated_norm_forward_rows_kernel(floatX* out, float* rstd,
                                                                             const floatX* y, const floatX* z,
                                                                             int z_stride, const float* w, int BT,
                                                                             int E, int G) {
    int warps = blockDim.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    int item = blockIdx.x * warps + threadIdx.x / WARP_SIZE;
    if (item >= BT * G) return;
    int row = item / G, g = item % G, Eg = E / G;
    int c0 = g * Eg + lane * 8;
    const floatX* yr = y + (size_t)row * E + c0;
    const floatX* zr = z + (size_t)row * z_stride + c0;
    Vec128<floatX> ry[CH][GNORM_ROW_NV], rz[CH][GNORM_ROW_NV];
#pragma unroll
    for (int k = 0; k < CH; k++) {   /* all 2 * CH loads issued before the first is used */
        gnorm_load_chunk(ry[k], yr + k * GNORM_ROW_CHUNK);
        gnorm_load_chunk(rz[k], zr + k * GNORM_ROW_CHUNK);
    }
    float v[CH][8];
    float sumsq = 0.f;
#pragma unroll
    for (int k = 0; k < CH; k++)
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float zz = gnorm_elem(rz[k], i);
            v[k][i] = gnorm_gated(gnorm_elem(ry[k], i), zz, fast_sigmoid(zz));
            sumsq += v[k][i] * v[k][i];
        }
    sumsq = warp_reduce_sum(sumsq);
    float r = rsqrtf(sumsq / Eg + GNORM_EPS);
    if (lane == 0) rstd[item] = r;
#pragma unroll
    for (int k = 0; k < CH; k++) {
        float wv[8], o[8];
        load8F(wv, w + c0 + k * GNORM_ROW_CHUNK);
#pragma unroll
        for (int i = 0; i < 8; i++) o[i] = gnorm_out(v[k][i], r, wv[i]);
        store8X(out + (size_t)row * E + c0 + k * GNORM_ROW_CHUNK, o);
    }
}

/* Each warp takes items first, first + stride, ... with stride = gridDim.x * warps a multiple of G (the launcher
 * checks), so its group, and so its lanes' columns, never change: dw accumulates in registers over the warp's rows
 * (in increasing row order), then the block's warps are added in increasing warp order in shared memory. */
template <int CH>
__global__ static void __launch_bounds__(GNORM_ROWS_THREADS, GNORM_BWD_ROWS_MINB)
gated_norm_backward_rows_kernel(floatX* out, floatX* dy, floatX* dz, int dz_stride, float* dw_partials,
                                const floatX* dout,
                                const floatX* y, const floatX* z, int z_stride, const float* w, const float* rstd,
                                int BT, int E, int G) {
    extern __shared__ float block_dw[];   /* (E) */
    int warps = blockDim.x / WARP_SIZE, warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    int Eg = E / G;
    int first = blockIdx.x * warps + warp, stride = gridDim.x * warps;
    int c0 = (first % G) * Eg + lane * 8;
    float dwa[CH][8];
#pragma unroll
    for (int k = 0; k < CH; k++)
#pragma unroll
        for (int i = 0; i < 8; i++) dwa[k][i] = 0.f;
    for (int item = first; item < BT * G; item += stride) {
        int row = item / G;
        const floatX* yr = y + (size_t)row * E + c0;
        const floatX* zr = z + (size_t)row * z_stride + c0;
        const floatX* dor = dout + (size_t)row * E + c0;
        Vec128<floatX> ry[CH][GNORM_ROW_NV], rz[CH][GNORM_ROW_NV], rd[CH][GNORM_ROW_NV];
#pragma unroll
        for (int k = 0; k < CH; k++) {   /* the whole row's 3 * CH loads in flight at once, read once */
            gnorm_load_chunk(ry[k], yr + k * GNORM_ROW_CHUNK);
            gnorm_load_chunk(rz[k], zr + k * GNORM_ROW_CHUNK);
            gnorm_load_chunk(rd[k], dor + k * GNORM_ROW_CHUNK);
        }
        float r = rstd[item];
        float dot = 0.f;
#pragma unroll
        for (int k = 0; k < CH; k++) {
            float wv[8];
            load8F(wv, w + c0 + k * GNORM_ROW_CHUNK);   /* w (E floats) stays in L1 */
#pragma unroll
            for (int i = 0; i < 8; i++) {
                float zz = gnorm_elem(rz[k], i);
                dot += gnorm_elem(rd[k], i) * wv[i] * gnorm_elem(ry[k], i) * zz * fast_sigmoid(zz);
            }
        }
        dot = warp_reduce_sum(dot);
        float m = dot / Eg * r * r;
#pragma unroll
        for (int k = 0; k < CH; k++) {
            float wv[8], dyv[8], dzv[8], o[8];
            load8F(wv, w + c0 + k * GNORM_ROW_CHUNK);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                float zz = gnorm_elem(rz[k], i), yy = gnorm_elem(ry[k], i), dd = gnorm_elem(rd[k], i);
                float s = fast_sigmoid(zz);
                float silu = zz * s;
                float v = yy * silu;
                float dvv = r * (dd * wv[i] - v * m);
                dyv[i] = dvv * silu;
                dzv[i] = dvv * yy * s * (1.f + zz * (1.f - s));
                dwa[k][i] += dd * v * r;
                o[i] = gnorm_out(gnorm_gated(yy, zz, s), r, wv[i]);
            }
            store8X(dy + (size_t)row * E + c0 + k * GNORM_ROW_CHUNK, dyv);
            store8X(dz + (size_t)row * dz_stride + c0 + k * GNORM_ROW_CHUNK, dzv);
            if (out != NULL) store8X(out + (size_t)row * E + c0 + k * GNORM_ROW_CHUNK, o);
        }
    }
    for (int c = threadIdx.x; c < E; c += blockDim.x) block_dw[c] = 0.f;
    __syncthreads();
    for (int k8 = 0; k8 < warps; k8++) {   /* warps in a fixed order: bitwise the same sum every run */
        if (warp == k8 && first < BT * G) {
#pragma unroll
            for (int k = 0; k < CH; k++)
#pragma unroll
                for (int i = 0; i < 8; i++) block_dw[c0 + k * GNORM_ROW_CHUNK + i] += dwa[k][i];
        }
        __syncthreads();
    }
    for (int c = threadIdx.x; c < E; c += blockDim.x) dw_partials[(size_t)blockIdx.x * E + c] = block_dw[c];
}

/* chunks per lane of the row-resident kernels for this shape, or 0 when they do not apply */
static int gated_norm_row_chunks(int E, int G) {
    int Eg = E / G;
    if (Eg % GNORM_ROW_CHUNK != 0 || Eg / GNORM_ROW_CHUNK > GNORM_ROW_MAX_CHUNKS) return 0;
    return Eg / GNORM_ROW_CHUNK;
}

static int gated_norm_vec8_ok(int E, int G, int z_stride, const void* a, const void* b, const void* c) {
    return (E / G) % 8 == 0 && z_stride % 8 == 0 && is_aligned16(a) && is_aligned16(b) && is_aligned16(c);
}

static void gated_norm_check_dims(const char* who, int E, int G) {
    if (G < 1 || E % G != 0) die("%s: E = %d is not divisible into ngroups G = %d", who, E, G);
}

/* the kernel variants, by name, for dev/cuda: GNORM_GENERIC forces the generic kernels */
enum { GNORM_AUTO = 0, GNORM_GENERIC = 1 };

static void gated_norm_forward_cfg(floatX* out, float* rstd, const floatX* y, const floatX* z, int z_stride,
                                   const float* w, int BT, int E, int G, int variant, cudaStream_t stream) {
    gated_norm_check_dims("gated_norm_forward", E, G);
    const int block = 256, warps = block / WARP_SIZE;
    int grid = CEIL_DIV(BT * G, warps);
    int vec8 = gated_norm_vec8_ok(E, G, z_stride, out, y, z);
    int ch = vec8 && is_aligned16(w) && variant != GNORM_GENERIC ? gated_norm_row_chunks(E, G) : 0;
#define GNORM_FWD_ROWS(CC) \
    case CC: gated_norm_forward_rows_kernel<CC><<<grid, block, 0, stream>>>(out, rstd, y, z, z_stride, w, BT, E, G); break;
    switch (ch) {
        GNORM_FWD_ROWS(1) GNORM_FWD_ROWS(2) GNORM_FWD_ROWS(3) GNORM_FWD_ROWS(4)
        GNORM_FWD_ROWS(5) GNORM_FWD_ROWS(6) GNORM_FWD_ROWS(7) GNORM_FWD_ROWS(8)
    default:
        if (vec8)
            gated_norm_forward_kernel<8><<<grid, block, 0, stream>>>(out, rstd, y, z, z_stride, w, BT, E, G);
        else
            gated_norm_forward_kernel<1><<<grid, block, 0, stream>>>(out, rstd, y, z, z_stride, w, BT, E, G);
    }
#undef GNORM_FWD_ROWS
    cudaCheckLast();
}

/* out (BT, E) floatX, rstd (BT, G) float; y (BT, E); z: the z column of zxbcdt (row stride z_stride); w (E) float */
static inline void gated_norm_forward(floatX* out, float* rstd, const floatX* y, const floatX* z, int z_stride,
                               const float* w, int BT, int E, int G, cudaStream_t stream) {
    gated_norm_forward_cfg(out, rstd, y, z, z_stride, w, BT, E, G, GNORM_AUTO, stream);
}

static size_t gated_norm_backward_scratch_floats(int E) {
    int rows = GNORM_BWD_MAX_BLOCKS > GNORM_BWD_ROWS_MAX_BLOCKS ? GNORM_BWD_MAX_BLOCKS : GNORM_BWD_ROWS_MAX_BLOCKS;
    return (size_t)rows * E;
}

/* variant: GNORM_AUTO or GNORM_GENERIC; rows_blocks: the row-resident kernel's grid (<= GNORM_BWD_ROWS_MAX_BLOCKS),
 * lowered to a multiple of G (in warps) as the kernel needs */
static void gated_norm_backward_cfg(floatX* out, floatX* dy, floatX* dz, int dz_stride, float* dw, float* scratch,
                                    const floatX* dout, const floatX* y, const floatX* z, int z_stride,
                                    const float* w, const float* rstd, int BT, int E, int G, int variant,
                                    int rows_blocks, cudaStream_t stream) {
    gated_norm_check_dims("gated_norm_backward", E, G);
    if (rows_blocks < 1 || rows_blocks > GNORM_BWD_ROWS_MAX_BLOCKS)
        die("gated_norm_backward: %d blocks asked for, the partials buffer holds 1..%d", rows_blocks,
            GNORM_BWD_ROWS_MAX_BLOCKS);
    int vec8 = gated_norm_vec8_ok(E, G, z_stride, dout, y, z) && gated_norm_vec8_ok(E, G, dz_stride, dy, dz, dz) &&
               (out == NULL || is_aligned16(out));
    int ch = vec8 && is_aligned16(w) && variant != GNORM_GENERIC ? gated_norm_row_chunks(E, G) : 0;
    if (ch > 0) {
        const int warps = GNORM_ROWS_THREADS / WARP_SIZE;
        int items_blocks = CEIL_DIV(BT * G, warps);
        int blocks = rows_blocks < items_blocks ? rows_blocks : items_blocks;
        while (blocks > 1 && (blocks * warps) % G != 0) blocks--;   /* each warp's group must stay fixed */
        if ((blocks * warps) % G != 0) ch = 0;                      /* G does not divide the warps: generic */
        else {
            size_t smem = (size_t)E * sizeof(float);
#define GNORM_BWD_ROWS(CC)                                                                                         \
    case CC:                                                                                                       \
        gated_norm_backward_rows_kernel<CC><<<blocks, GNORM_ROWS_THREADS, smem, stream>>>(                         \
            out, dy, dz, dz_stride, scratch, dout, y, z, z_stride, w, rstd, BT, E, G);                              \
        break;
            switch (ch) {
                GNORM_BWD_ROWS(1) GNORM_BWD_ROWS(2) GNORM_BWD_ROWS(3) GNORM_BWD_ROWS(4)
                GNORM_BWD_ROWS(5) GNORM_BWD_ROWS(6) GNORM_BWD_ROWS(7) GNORM_BWD_ROWS(8)
            }
#undef GNORM_BWD_ROWS
            cudaCheckLast();
            partial_sums_accumulate(dw, scratch, blocks, E, stream);
            return;
        }
    }
    int warps = GNORM_SMEM_LIMIT / (E * (int)sizeof(float));
    if (warps < 1) die("gated_norm_backward: E = %d is too wide for the shared-memory dw rows (max %d)", E,
                       GNORM_SMEM_LIMIT / 4);
    if (warps > 8) warps = 8;
    int blocks = CEIL_DIV(BT * G, warps);
    if (blocks > GNORM_BWD_MAX_BLOCKS) blocks = GNORM_BWD_MAX_BLOCKS;
    size_t smem = (size_t)warps * E * sizeof(float);
    if (vec8)
        gated_norm_backward_kernel<8><<<blocks, warps * WARP_SIZE, smem, stream>>>(out, dy, dz, dz_stride, scratch,
                                                                                   dout, y, z, z_stride, w, rstd, BT,
                                                                                   E, G);
    else
        gated_norm_backward_kernel<1><<<blocks, warps * WARP_SIZE, smem, stream>>>(out, dy, dz, dz_stride, scratch,
                                                                                   dout, y, z, z_stride, w, rstd, BT,
                                                                                   E, G);
    cudaCheckLast();
    partial_sums_accumulate(dw, scratch, blocks, E, stream);
}

/* dy (BT, E) floatX and dz (the z column of d_zxbcdt, row stride dz_stride) overwritten; dw (E) float accumulated.
 * dout (BT, E); y, z, z_stride, w as in the forward; rstd from the forward; scratch: gated_norm_backward_scratch_floats.
 * out: NULL, or (BT, E) floatX where the forward's output is written again, bitwise equal to it */
static inline void gated_norm_backward(floatX* out, floatX* dy, floatX* dz, int dz_stride, float* dw, float* scratch,
                                const floatX* dout, const floatX* y, const floatX* z, int z_stride, const float* w,
                                const float* rstd, int BT, int E, int G, cudaStream_t stream) {
    gated_norm_backward_cfg(out, dy, dz, dz_stride, dw, scratch, dout, y, z, z_stride, w, rstd, BT, E, G, GNORM_AUTO,
                            GNORM_BWD_ROWS_BLOCKS, stream);
}

#endif
