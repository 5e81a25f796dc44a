/*
 * linear_bias.cuh: the bias of a linear layer (the attention block's in_proj and out_proj, doc/hybrid.md), forward
 * and backward. matmul.cuh's products have no bias; these add it after the product and reduce its gradient.
 *
 *   forward:  out[r, c] += b[c]                 out floatX (rows, N), b float (N), the fp32 master weights
 *   backward: db[c] += sum over rows r of dout[r, c]
 *
 * The backward is deterministic, like every parameter-gradient reduction of the project (rmsnorm.cuh, conv1d.cuh):
 * block y of a fixed BIAS_ROW_BLOCKS sums the rows y, y + BIAS_ROW_BLOCKS, ... of its 32 columns in increasing order
 * (8 row lanes, combined in lane order), writes one partial row, and partial_sums_accumulate adds the partial rows
 * in a fixed order. No float atomics; the grid does not depend on the GPU, so the sums are the same on every GPU.
 */
#ifndef MAMBA2_LINEAR_BIAS_CUH
#define MAMBA2_LINEAR_BIAS_CUH

#include "cuda_common.h"
#include "utils.h"
#include "partial_sum.cuh"

#define BIAS_ROW_BLOCKS 128   /* partial rows of the backward (fixed: the summation order must not follow the GPU) */
#define BIAS_COLS 32          /* columns of a backward block: one warp's coalesced row segment */
#define BIAS_LANES 8          /* row lanes of a backward block */

__global__ static void bias_forward_kernel(floatX* out, const float* b, size_t rows, int N) {
    size_t n = rows * (size_t)N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = fromF(toF(out[i]) + b[i % N]);
}

/* partials[blockIdx.y, c] = sum over the rows r = blockIdx.y + k BIAS_ROW_BLOCKS (k increasing) of dout[r, c] */
__global__ static void bias_backward_partials_kernel(float* partials, const floatX* dout, int rows, int N) {
    __shared__ float lane_sum[BIAS_LANES][BIAS_COLS];
    int c = blockIdx.x * BIAS_COLS + threadIdx.x, lane = threadIdx.y;
    float s = 0.f;
    if (c < N)
        for (int r = blockIdx.y + lane * BIAS_ROW_BLOCKS; r < rows; r += BIAS_LANES * BIAS_ROW_BLOCKS)
            s += toF(dout[(size_t)r * N + c]);
    lane_sum[lane][threadIdx.x] = s;
    __syncthreads();
    if (lane == 0 && c < N) {
        float total = 0.f;
        for (int k = 0; k < BIAS_LANES; k++) total += lane_sum[k][threadIdx.x];
        partials[(size_t)blockIdx.y * N + c] = total;
    }
}

/* scratch floats the backward of a bias of N columns needs */
static size_t bias_backward_scratch_floats(size_t N) { return (size_t)BIAS_ROW_BLOCKS * N; }

/* out (rows, N) += b */
static void bias_forward(floatX* out, const float* b, int rows, int N, cudaStream_t stream) {
    if (rows < 1 || N < 1) die("bias_forward: rows %d, columns %d: both must be >= 1", rows, N);
    size_t n = (size_t)rows * N, blocks = CEIL_DIV(n, (size_t)256), cap = (size_t)cuda_num_sms() * 16;
    bias_forward_kernel<<<(int)(blocks < cap ? blocks : cap), 256, 0, stream>>>(out, b, (size_t)rows, N);
    cudaCheckLast();
}

/* db (N) += column sums of dout (rows, N); scratch: bias_backward_scratch_floats(N) floats */
static void bias_backward(float* db, float* scratch, const floatX* dout, int rows, int N, cudaStream_t stream) {
    if (rows < 1 || N < 1) die("bias_backward: rows %d, columns %d: both must be >= 1", rows, N);
    dim3 grid(CEIL_DIV(N, BIAS_COLS), BIAS_ROW_BLOCKS), block(BIAS_COLS, BIAS_LANES);
    bias_backward_partials_kernel<<<grid, block, 0, stream>>>(scratch, dout, rows, N);
    cudaCheckLast();
    partial_sums_accumulate(db, scratch, BIAS_ROW_BLOCKS, N, stream);
}

#endif /* MAMBA2_LINEAR_BIAS_CUH */
