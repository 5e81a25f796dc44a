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
 *   SiLU(z) = z s, SiLU'(z) = s (1 + z (1 - s)), s = sigmoid(z).
 *
 * Kernels: gated_norm_forward_kernel<VEC>, gated_norm_backward_kernel<VEC> (+ partial_sums_accumulate_kernel).
 * Launchers: gated_norm_forward, gated_norm_backward; gated_norm_backward_scratch_floats(E) sizes the partials.
 * VEC = 8 (16-byte loads) when the group width, the z row stride and the pointers allow it, else a scalar path.
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
            float v = yv[i] * zv[i] * fast_sigmoid(zv[i]);
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
        for (int i = 0; i < VEC; i++) o[i] = yv[i] * zv[i] * fast_sigmoid(zv[i]) * r * w[c + i];
        storeNX<VEC>(out + (size_t)row * E + c, o);
    }
}

template <int VEC>
__global__ static void gated_norm_backward_kernel(floatX* dy, floatX* dz, int dz_stride, float* dw_partials,
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
            float yv[VEC], zv[VEC], dov[VEC], dyv[VEC], dzv[VEC];
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
            }
            storeNX<VEC>(dy + (size_t)row * E + c, dyv);
            storeNX<VEC>(dz + (size_t)row * dz_stride + c, dzv);
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < E; c += blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < warps; k++) s += warp_dw[(size_t)k * E + c];
        dw_partials[(size_t)blockIdx.x * E + c] = s;
    }
}

static int gated_norm_vec8_ok(int E, int G, int z_stride, const void* a, const void* b, const void* c) {
    return (E / G) % 8 == 0 && z_stride % 8 == 0 && is_aligned16(a) && is_aligned16(b) && is_aligned16(c);
}

static void gated_norm_check_dims(const char* who, int E, int G) {
    if (G < 1 || E % G != 0) die("%s: E = %d is not divisible into ngroups G = %d", who, E, G);
}

/* out (BT, E) floatX, rstd (BT, G) float; y (BT, E); z: the z column of zxbcdt (row stride z_stride); w (E) float */
static void gated_norm_forward(floatX* out, float* rstd, const floatX* y, const floatX* z, int z_stride,
                               const float* w, int BT, int E, int G, cudaStream_t stream) {
    gated_norm_check_dims("gated_norm_forward", E, G);
    const int block = 256, warps = block / WARP_SIZE;
    int grid = CEIL_DIV(BT * G, warps);
    if (gated_norm_vec8_ok(E, G, z_stride, out, y, z))
        gated_norm_forward_kernel<8><<<grid, block, 0, stream>>>(out, rstd, y, z, z_stride, w, BT, E, G);
    else
        gated_norm_forward_kernel<1><<<grid, block, 0, stream>>>(out, rstd, y, z, z_stride, w, BT, E, G);
    cudaCheckLast();
}

static size_t gated_norm_backward_scratch_floats(int E) { return (size_t)GNORM_BWD_MAX_BLOCKS * E; }

/* dy (BT, E) floatX and dz (the z column of d_zxbcdt, row stride dz_stride) overwritten; dw (E) float accumulated.
 * dout (BT, E); y, z, z_stride, w as in the forward; rstd from the forward; scratch: gated_norm_backward_scratch_floats */
static void gated_norm_backward(floatX* dy, floatX* dz, int dz_stride, float* dw, float* scratch, const floatX* dout,
                                const floatX* y, const floatX* z, int z_stride, const float* w, const float* rstd,
                                int BT, int E, int G, cudaStream_t stream) {
    gated_norm_check_dims("gated_norm_backward", E, G);
    int warps = GNORM_SMEM_LIMIT / (E * (int)sizeof(float));
    if (warps < 1) die("gated_norm_backward: E = %d is too wide for the shared-memory dw rows (max %d)", E,
                       GNORM_SMEM_LIMIT / 4);
    if (warps > 8) warps = 8;
    int blocks = CEIL_DIV(BT * G, warps);
    if (blocks > GNORM_BWD_MAX_BLOCKS) blocks = GNORM_BWD_MAX_BLOCKS;
    size_t smem = (size_t)warps * E * sizeof(float);
    int vec8 = gated_norm_vec8_ok(E, G, z_stride, dout, y, z) && gated_norm_vec8_ok(E, G, dz_stride, dy, dz, dz);
    if (vec8)
        gated_norm_backward_kernel<8><<<blocks, warps * WARP_SIZE, smem, stream>>>(dy, dz, dz_stride, scratch, dout, y,
                                                                                   z, z_stride, w, rstd, BT, E, G);
    else
        gated_norm_backward_kernel<1><<<blocks, warps * WARP_SIZE, smem, stream>>>(dy, dz, dz_stride, scratch, dout, y,
                                                                                   z, z_stride, w, rstd, BT, E, G);
    cudaCheckLast();
    partial_sums_accumulate(dw, scratch, blocks, E, stream);
}

#endif
