/*
 * rmsnorm.cuh: the pre-norm of every layer (and the final norm), fused with the residual add.
 *
 * Forward (one warp per row, fused residual add):
 *     x = x_in + delta           (delta == NULL: x = x_in; the first layer's input is the embedding)
 *     rstd = 1 / sqrt(mean(x^2) + eps)         saved (BT) float for backward
 *     u = x * rstd * w           u floatX (BT, D), the input of in_proj
 *   Fusing the add saves a full read and write of the float residual stream per layer. x_in and x may be different
 *   buffers (the trainer keeps the stream entering every layer: reading layer l-1's and writing layer l's slice here
 *   replaces a copy of the stream per layer) or the same one (in place).
 * Backward: with g = du * w and r = rstd,
 *     dx[j] += r * (g[j] - x[j] * r^2 * mean(g * x))      (dx is the float residual-stream gradient)
 *     dw[j] += sum over rows of du[j] * x[j] * r
 *   x is the normalized input (the residual stream after the add, which the trainer keeps per layer).
 *   Optionally dx is also written as floatX (dx_lowp): the next out_proj backward's operand, without a cast pass.
 *   dw is deterministic: each warp accumulates its rows in its own shared-memory row, each block writes the sum of its
 *   warps (fixed order) to a partials buffer, and partial_sums_accumulate adds the column sums to dw.
 *
 * Kernels: rmsnorm_forward_kernel, rmsnorm_backward_kernel (+ partial_sums_accumulate_kernel).
 * Launchers: rmsnorm_forward(_from), rmsnorm_backward(_lowp); rmsnorm_backward_scratch_floats(D) sizes the partials
 * buffer.
 * Requires D % 8 == 0; the launchers check.
 */
#ifndef MAMBA2_RMSNORM_CUH
#define MAMBA2_RMSNORM_CUH

#include "cuda_common.h"
#include "utils.h"
#include "vec128.cuh"
#include "partial_sum.cuh"

#define RMSNORM_EPS 1e-5f
#ifndef RMSNORM_BWD_MAX_BLOCKS
#define RMSNORM_BWD_MAX_BLOCKS 264   /* fixed, not read off the device: the same partials order on every GPU */
#endif
#define RMSNORM_SMEM_LIMIT (48 * 1024)

__global__ static void rmsnorm_forward_kernel(floatX* u, float* rstd, float* x, const float* x_in,
                                              const floatX* delta, const float* w, int BT, int D) {
    int warps = blockDim.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    int row = blockIdx.x * warps + threadIdx.x / WARP_SIZE;
    if (row >= BT) return;
    float* xr = x + (size_t)row * D;
    const float* xin = x_in + (size_t)row * D;
    int write_x = delta != NULL || x_in != x;
    float sumsq = 0.f;
    for (int c = lane * 8; c < D; c += WARP_SIZE * 8) {
        float v[8];
        load8F(v, xin + c);
        if (delta != NULL) {
            float d[8];
            load8Xcs(d, delta + (size_t)row * D + c);
            for (int i = 0; i < 8; i++) v[i] += d[i];
        }
        if (write_x) store8F(xr + c, v);
        for (int i = 0; i < 8; i++) sumsq += v[i] * v[i];
    }
    sumsq = warp_reduce_sum(sumsq);
    float r = rsqrtf(sumsq / D + RMSNORM_EPS);
    if (lane == 0) rstd[row] = r;
    for (int c = lane * 8; c < D; c += WARP_SIZE * 8) {
        float v[8], wv[8];
        load8F(v, xr + c);   /* this thread's own values, just written: an L1/L2 hit */
        load8F(wv, w + c);
        for (int i = 0; i < 8; i++) v[i] = v[i] * r * wv[i];
        store8X(u + (size_t)row * D + c, v);
    }
}

/* x (BT, D) float = x_in + delta (floatX, may be NULL; x_in may be x); u (BT, D) floatX = RMSNorm(x) * w;
 * rstd (BT) float */
static void rmsnorm_forward_from(floatX* u, float* rstd, float* x, const float* x_in, const floatX* delta,
                                 const float* w, int BT, int D, cudaStream_t stream) {
    if (D % 8 != 0) die("rmsnorm_forward: D = %d must be a multiple of 8", D);
    const int block = 256, rows_per_block = block / WARP_SIZE;
    rmsnorm_forward_kernel<<<CEIL_DIV(BT, rows_per_block), block, 0, stream>>>(u, rstd, x, x_in, delta, w, BT, D);
    cudaCheckLast();
}

/* in place: x += delta (may be NULL) */
static inline void rmsnorm_forward(floatX* u, float* rstd, float* x, const floatX* delta, const float* w, int BT,
                                   int D, cudaStream_t stream) {
    rmsnorm_forward_from(u, rstd, x, x, delta, w, BT, D, stream);
}

__global__ static void rmsnorm_backward_kernel(float* dx, floatX* dx_lowp, float* dw_partials, const floatX* du,
                                               const float* x, const float* w, const float* rstd, int BT, int D) {
    extern __shared__ float warp_dw[];   /* (warps, D): each warp's own dw row, no sharing, no atomics */
    int warps = blockDim.x / WARP_SIZE, warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    float* my_dw = warp_dw + (size_t)warp * D;
    for (int c = lane; c < D; c += WARP_SIZE) my_dw[c] = 0.f;
    __syncwarp();   /* lanes zero other columns than they later accumulate */
    /* fixed assignment of rows to warps: row = (block * warps + warp) + k * (grid * warps) */
    for (int row = blockIdx.x * warps + warp; row < BT; row += gridDim.x * warps) {
        const floatX* dur = du + (size_t)row * D;
        const float* xr = x + (size_t)row * D;
        float r = rstd[row];
        float dot = 0.f;   /* sum of g * x */
        for (int c = lane * 8; c < D; c += WARP_SIZE * 8) {
            float g[8], xv[8], wv[8];
            load8X(g, dur + c);
            load8F(xv, xr + c);
            load8F(wv, w + c);
            for (int i = 0; i < 8; i++) dot += g[i] * wv[i] * xv[i];
        }
        dot = warp_reduce_sum(dot);
        float m = dot / D * r * r;
        for (int c = lane * 8; c < D; c += WARP_SIZE * 8) {
            float g[8], xv[8], wv[8], d[8];
            load8X(g, dur + c);
            load8F(xv, xr + c);
            load8F(wv, w + c);
            load8F(d, dx + (size_t)row * D + c);
            for (int i = 0; i < 8; i++) {
                d[i] += r * (g[i] * wv[i] - xv[i] * m);
                my_dw[c + i] += g[i] * xv[i] * r;
            }
            store8F(dx + (size_t)row * D + c, d);
            if (dx_lowp != NULL) store8X(dx_lowp + (size_t)row * D + c, d);
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < warps; k++) s += warp_dw[(size_t)k * D + c];
        dw_partials[(size_t)blockIdx.x * D + c] = s;
    }
}

static size_t rmsnorm_backward_scratch_floats(int D) { return (size_t)RMSNORM_BWD_MAX_BLOCKS * D; }

/* dx (BT, D) float += RMSNorm backward of du (floatX); dw (D) float += its gradient; dx_lowp (may be NULL) = the
 * new dx as floatX. x: the normalized input (float), rstd from the forward; scratch:
 * rmsnorm_backward_scratch_floats(D) floats. */
static void rmsnorm_backward_lowp(float* dx, floatX* dx_lowp, float* dw, float* scratch, const floatX* du,
                                  const float* x, const float* w, const float* rstd, int BT, int D,
                                  cudaStream_t stream) {
    if (D % 8 != 0) die("rmsnorm_backward: D = %d must be a multiple of 8", D);
    int warps = RMSNORM_SMEM_LIMIT / (D * (int)sizeof(float));
    if (warps < 1) die("rmsnorm_backward: D = %d is too wide for the shared-memory dw rows (max %d)", D,
                       RMSNORM_SMEM_LIMIT / 4);
    if (warps > 8) warps = 8;
    int blocks = CEIL_DIV(BT, warps);
    if (blocks > RMSNORM_BWD_MAX_BLOCKS) blocks = RMSNORM_BWD_MAX_BLOCKS;
    size_t smem = (size_t)warps * D * sizeof(float);
    rmsnorm_backward_kernel<<<blocks, warps * WARP_SIZE, smem, stream>>>(dx, dx_lowp, scratch, du, x, w, rstd, BT,
                                                                          D);
    cudaCheckLast();
    partial_sums_accumulate(dw, scratch, blocks, D, stream);
}

static inline void rmsnorm_backward(float* dx, float* dw, float* scratch, const floatX* du, const float* x,
                                    const float* w, const float* rstd, int BT, int D, cudaStream_t stream) {
    rmsnorm_backward_lowp(dx, NULL, dw, scratch, du, x, w, rstd, BT, D, stream);
}

#endif
