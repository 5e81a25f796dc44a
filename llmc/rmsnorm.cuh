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
 * Kernels: where D = CH * 256 (CH = 1..8; 130M: D = 768, CH = 3) the row-resident rmsnorm_forward_rows_kernel<CH>
 * and rmsnorm_backward_rows_kernel<CH>: a lane holds its 8 CH elements of the row in registers, so all of a row's
 * loads are in flight together and the row is read once; the backward keeps each lane's (fixed) columns' dw sums
 * in registers across the warp's rows instead of a shared-memory row per warp. Otherwise the generic
 * rmsnorm_forward_kernel and rmsnorm_backward_kernel (+ partial_sums_accumulate_kernel in both cases).
 * Launchers: rmsnorm_forward(_from), rmsnorm_backward(_lowp) (+ _cfg versions that pick the kernel, for dev/cuda);
 * residual_add, the forward's residual add alone (-r 2 rebuilds the stream with it);
 * rmsnorm_backward_scratch_floats(D) sizes the partials buffer.
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

/* ---------------------------------------------------------------------------------------------------------------
 * Row-resident kernels: lane l owns columns 8 l + k * 256 + (0..7), k = 0..CH-1 (the generic loops' columns and
 * per-lane order).
 */
#define RMSNORM_ROW_CHUNK (WARP_SIZE * 8)
#define RMSNORM_ROW_MAX_CHUNKS 8
#define RMSNORM_ROWS_THREADS 128
#ifndef RMSNORM_BWD_ROWS_BLOCKS
#define RMSNORM_BWD_ROWS_BLOCKS 528     /* fixed (4 blocks of 4 warps on each of 132 SMs), not read off the device */
#endif
#define RMSNORM_BWD_ROWS_MAX_BLOCKS 1056

template <int CH>
__global__ static void __launch_bounds__(256) rmsnorm_forward_rows_kernel(floatX* u, float* rstd, float* x,
                                                                          const float* x_in, const floatX* delta,
                                                                          const float* w, int BT, int D) {
    int warps = blockDim.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    int row = blockIdx.x * warps + threadIdx.x / WARP_SIZE;
    if (row >= BT) return;
    size_t base = (size_t)row * D + lane * 8;
    int write_x = delta != NULL || x_in != x;
    float v[CH][8];
#pragma unroll
    for (int k = 0; k < CH; k++) load8F(v[k], x_in + base + k * RMSNORM_ROW_CHUNK);
    if (delta != NULL) {
        float d[CH][8];
#pragma unroll
        for (int k = 0; k < CH; k++) load8Xcs(d[k], delta + base + k * RMSNORM_ROW_CHUNK);
#pragma unroll
        for (int k = 0; k < CH; k++)
#pragma unroll
            for (int i = 0; i < 8; i++) v[k][i] += d[k][i];
    }
    float sumsq = 0.f;
#pragma unroll
    for (int k = 0; k < CH; k++) {
        if (write_x) store8F(x + base + k * RMSNORM_ROW_CHUNK, v[k]);
#pragma unroll
        for (int i = 0; i < 8; i++) sumsq += v[k][i] * v[k][i];
    }
    sumsq = warp_reduce_sum(sumsq);
    float r = rsqrtf(sumsq / D + RMSNORM_EPS);
    if (lane == 0) rstd[row] = r;
#pragma unroll
    for (int k = 0; k < CH; k++) {
        float wv[8];
        load8F(wv, w + lane * 8 + k * RMSNORM_ROW_CHUNK);
#pragma unroll
        for (int i = 0; i < 8; i++) wv[i] = v[k][i] * r * wv[i];
        store8X(u + base + k * RMSNORM_ROW_CHUNK, wv);
    }
}

/* Each warp takes rows first, first + gridDim.x * warps, ...; its lanes' columns never change, so dw accumulates in
 * registers (rows in increasing order), then the block's warps are added in increasing warp order. */
template <int CH>
__global__ static void __launch_bounds__(RMSNORM_ROWS_THREADS, 4)   /* 4 blocks an SM: <= 128 registers */
rmsnorm_backward_rows_kernel(float* dx, floatX* dx_lowp, float* dw_partials, const floatX* du, const float* x,
                             const float* w, const float* rstd, int BT, int D) {
    extern __shared__ float block_dw[];   /* (D) */
    int warps = blockDim.x / WARP_SIZE, warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    int first = blockIdx.x * warps + warp;
    float dwa[CH][8];
#pragma unroll
    for (int k = 0; k < CH; k++)
#pragma unroll
        for (int i = 0; i < 8; i++) dwa[k][i] = 0.f;
    for (int row = first; row < BT; row += gridDim.x * warps) {
        size_t base = (size_t)row * D + lane * 8;
        float g[CH][8], xv[CH][8], d[CH][8];
#pragma unroll
        for (int k = 0; k < CH; k++) {   /* the row's loads, dx's included, in flight at once */
            load8X(g[k], du + base + k * RMSNORM_ROW_CHUNK);
            load8F(xv[k], x + base + k * RMSNORM_ROW_CHUNK);
            load8F(d[k], dx + base + k * RMSNORM_ROW_CHUNK);
        }
        float r = rstd[row];
        float dot = 0.f;
#pragma unroll
        for (int k = 0; k < CH; k++) {
            float wv[8];
            load8F(wv, w + lane * 8 + k * RMSNORM_ROW_CHUNK);   /* w (D floats) stays in L1 */
#pragma unroll
            for (int i = 0; i < 8; i++) dot += g[k][i] * wv[i] * xv[k][i];
        }
        dot = warp_reduce_sum(dot);
        float m = dot / D * r * r;
#pragma unroll
        for (int k = 0; k < CH; k++) {
            float wv[8];
            load8F(wv, w + lane * 8 + k * RMSNORM_ROW_CHUNK);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                d[k][i] += r * (g[k][i] * wv[i] - xv[k][i] * m);
                dwa[k][i] += g[k][i] * xv[k][i] * r;
            }
            store8F(dx + base + k * RMSNORM_ROW_CHUNK, d[k]);
            if (dx_lowp != NULL) store8X(dx_lowp + base + k * RMSNORM_ROW_CHUNK, d[k]);
        }
    }
    for (int c = threadIdx.x; c < D; c += blockDim.x) block_dw[c] = 0.f;
    __syncthreads();
    for (int k8 = 0; k8 < warps; k8++) {   /* warps in a fixed order: bitwise the same sum every run */
        if (warp == k8 && first < BT) {
#pragma unroll
            for (int k = 0; k < CH; k++)
#pragma unroll
                for (int i = 0; i < 8; i++) block_dw[lane * 8 + k * RMSNORM_ROW_CHUNK + i] += dwa[k][i];
        }
        __syncthreads();
    }
    for (int c = threadIdx.x; c < D; c += blockDim.x) dw_partials[(size_t)blockIdx.x * D + c] = block_dw[c];
}

/* chunks per lane of the row-resident kernels, or 0 when they do not apply (pointers must be 16-byte aligned) */
static int rmsnorm_row_chunks(int D, const void* a, const void* b, const void* c, const void* d) {
    if (D % RMSNORM_ROW_CHUNK != 0 || D / RMSNORM_ROW_CHUNK > RMSNORM_ROW_MAX_CHUNKS) return 0;
    if (!is_aligned16(a) || !is_aligned16(b) || !is_aligned16(c) || !is_aligned16(d)) return 0;
    return D / RMSNORM_ROW_CHUNK;
}

/* the kernel variants, for dev/cuda: RMSNORM_GENERIC forces the generic kernels */
enum { RMSNORM_AUTO = 0, RMSNORM_GENERIC = 1 };

static void rmsnorm_forward_cfg(floatX* u, float* rstd, float* x, const float* x_in, const floatX* delta,
                                const float* w, int BT, int D, int variant, cudaStream_t stream) {
    if (D % 8 != 0) die("rmsnorm_forward: D = %d must be a multiple of 8", D);
    const int block = 256, rows_per_block = block / WARP_SIZE;
    int grid = CEIL_DIV(BT, rows_per_block);
    int ch = variant == RMSNORM_GENERIC ? 0 : rmsnorm_row_chunks(D, u, x, x_in, w);
    if (delta != NULL && !is_aligned16(delta)) ch = 0;
#define RMSNORM_FWD_ROWS(CC) \
    case CC: rmsnorm_forward_rows_kernel<CC><<<grid, block, 0, stream>>>(u, rstd, x, x_in, delta, w, BT, D); break;
    switch (ch) {
        RMSNORM_FWD_ROWS(1) RMSNORM_FWD_ROWS(2) RMSNORM_FWD_ROWS(3) RMSNORM_FWD_ROWS(4)
        RMSNORM_FWD_ROWS(5) RMSNORM_FWD_ROWS(6) RMSNORM_FWD_ROWS(7) RMSNORM_FWD_ROWS(8)
    default: rmsnorm_forward_kernel<<<grid, block, 0, stream>>>(u, rstd, x, x_in, delta, w, BT, D);
    }
#undef RMSNORM_FWD_ROWS
    cudaCheckLast();
}

/* x (BT, D) float = x_in + delta (floatX, may be NULL; x_in may be x); u (BT, D) floatX = RMSNorm(x) * w;
 * rstd (BT) float */
static void rmsnorm_forward_from(floatX* u, float* rstd, float* x, const float* x_in, const floatX* delta,
                                 const float* w, int BT, int D, cudaStream_t stream) {
    rmsnorm_forward_cfg(u, rstd, x, x_in, delta, w, BT, D, RMSNORM_AUTO, stream);
}

/* in place: x += delta (may be NULL) */
static inline void rmsnorm_forward(floatX* u, float* rstd, float* x, const floatX* delta, const float* w, int BT,
                                   int D, cudaStream_t stream) {
    rmsnorm_forward_from(u, rstd, x, x, delta, w, BT, D, stream);
}

/* x_out = x_in + delta, elementwise over n floats: the forward kernels' fused add alone (v = x_in; v += (float)delta,
 * one fp32 add of the floatX value converted exactly, no multiply that could be contracted into an FMA), so a stream
 * rebuilt by repeated calls is the one the forward formed, to the bit. -r 2 rebuilds x_l from a checkpoint x_k and
 * the stored block outputs delta_k .. delta_{l-1} with it (llmc/model.cuh, gpu_residual). Memory-bound: 10 bytes an
 * element in bf16 (4 read, 2 read, 4 written). x_out may be x_in. */
__global__ static void residual_add_kernel(float* x_out, const float* x_in, const floatX* delta, size_t n8) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n8) return;
    float v[8], d[8];
    load8F(v, x_in + 8 * i);
    load8Xcs(d, delta + 8 * i);
    for (int k = 0; k < 8; k++) v[k] += d[k];
    store8F(x_out + 8 * i, v);
}
static inline void residual_add(float* x_out, const float* x_in, const floatX* delta, size_t n, cudaStream_t stream) {
    if (n % 8 != 0 || !is_aligned16(x_out) || !is_aligned16(x_in) || !is_aligned16(delta))
        die("residual_add: %zu elements at %p, %p, %p: need a multiple of 8 and 16-byte aligned buffers", n,
            (void*)x_out, (const void*)x_in, (const void*)delta);
    size_t n8 = n / 8;
    residual_add_kernel<<<(unsigned)CEIL_DIV(n8, (size_t)256), 256, 0, stream>>>(x_out, x_in, delta, n8);
    cudaCheckLast();
}

static size_t rmsnorm_backward_scratch_floats(int D) {
    int rows = RMSNORM_BWD_MAX_BLOCKS > RMSNORM_BWD_ROWS_MAX_BLOCKS ? RMSNORM_BWD_MAX_BLOCKS
                                                                    : RMSNORM_BWD_ROWS_MAX_BLOCKS;
    return (size_t)rows * D;
}

/* variant: RMSNORM_AUTO or RMSNORM_GENERIC; rows_blocks: the row-resident kernel's grid (1..RMSNORM_BWD_ROWS_MAX_BLOCKS) */
static void rmsnorm_backward_cfg(float* dx, floatX* dx_lowp, float* dw, float* scratch, const floatX* du,
                                 const float* x, const float* w, const float* rstd, int BT, int D, int variant,
                                 int rows_blocks, cudaStream_t stream) {
    if (D % 8 != 0) die("rmsnorm_backward: D = %d must be a multiple of 8", D);
    if (rows_blocks < 1 || rows_blocks > RMSNORM_BWD_ROWS_MAX_BLOCKS)
        die("rmsnorm_backward: %d blocks asked for, the partials buffer holds 1..%d", rows_blocks,
            RMSNORM_BWD_ROWS_MAX_BLOCKS);
    int ch = variant == RMSNORM_GENERIC ? 0 : rmsnorm_row_chunks(D, dx, du, x, w);
    if (dx_lowp != NULL && !is_aligned16(dx_lowp)) ch = 0;
    if (ch > 0) {
        const int warps = RMSNORM_ROWS_THREADS / WARP_SIZE;
        int blocks = CEIL_DIV(BT, warps);
        if (blocks > rows_blocks) blocks = rows_blocks;
        size_t smem = (size_t)D * sizeof(float);
#define RMSNORM_BWD_ROWS(CC)                                                                                      \
    case CC:                                                                                                      \
        rmsnorm_backward_rows_kernel<CC><<<blocks, RMSNORM_ROWS_THREADS, smem, stream>>>(dx, dx_lowp, scratch, du, \
                                                                                         x, w, rstd, BT, D);      \
        break;
        switch (ch) {
            RMSNORM_BWD_ROWS(1) RMSNORM_BWD_ROWS(2) RMSNORM_BWD_ROWS(3) RMSNORM_BWD_ROWS(4)
            RMSNORM_BWD_ROWS(5) RMSNORM_BWD_ROWS(6) RMSNORM_BWD_ROWS(7) RMSNORM_BWD_ROWS(8)
        }
#undef RMSNORM_BWD_ROWS
        cudaCheckLast();
        partial_sums_accumulate(dw, scratch, blocks, D, stream);
        return;
    }
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

/* dx (BT, D) float += RMSNorm backward of du (floatX); dw (D) float += its gradient; dx_lowp (may be NULL) = the
 * new dx as floatX. x: the normalized input (float), rstd from the forward; scratch:
 * rmsnorm_backward_scratch_floats(D) floats. */
static void rmsnorm_backward_lowp(float* dx, floatX* dx_lowp, float* dw, float* scratch, const floatX* du,
                                  const float* x, const float* w, const float* rstd, int BT, int D,
                                  cudaStream_t stream) {
    rmsnorm_backward_cfg(dx, dx_lowp, dw, scratch, du, x, w, rstd, BT, D, RMSNORM_AUTO, RMSNORM_BWD_ROWS_BLOCKS,
                         stream);
}

static inline void rmsnorm_backward(float* dx, float* dw, float* scratch, const floatX* du, const float* x,
                                    const float* w, const float* rstd, int BT, int D, cudaStream_t stream) {
    rmsnorm_backward_lowp(dx, NULL, dw, scratch, du, x, w, rstd, BT, D, stream);
}

#endif
