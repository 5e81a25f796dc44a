/*
 * partial_sum.cuh: the second stage of every deterministic parameter-gradient reduction.
 *
 * Backward kernels that reduce over the B*T rows (norm weights, conv weights) write one partial sum per block to a
 * scratch buffer partials (nrows, ncols) instead of using float atomics (whose order, and so whose rounding,
 * changes from run to run). This kernel then adds the column sums to the gradient, out[c] += sum_r partials[r, c],
 * always in the same order: thread (x, y) sums rows y, y + 16, y + 32, ... of column c in increasing order, and the
 * 16 slices are combined in increasing y. Two runs give bitwise the same gradient.
 */
#ifndef MAMBA2_PARTIAL_SUM_CUH
#define MAMBA2_PARTIAL_SUM_CUH

#include "cuda_common.h"

#define PSUM_COLS 32
#define PSUM_SLICES 16

__global__ static void partial_sums_accumulate_kernel(float* out, const float* partials, int nrows, int ncols) {
    __shared__ float slice_sum[PSUM_SLICES][PSUM_COLS + 1];
    int c = blockIdx.x * PSUM_COLS + threadIdx.x;
    float s = 0.f;
    if (c < ncols) {
        for (int r = threadIdx.y; r < nrows; r += PSUM_SLICES) s += partials[(size_t)r * ncols + c];
    }
    slice_sum[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < ncols) {
        float total = 0.f;
        for (int y = 0; y < PSUM_SLICES; y++) total += slice_sum[y][threadIdx.x];
        out[c] += total;
    }
}

/* out[c] += sum over r of partials[r * ncols + c], in a fixed order */
static void partial_sums_accumulate(float* out, const float* partials, int nrows, int ncols, cudaStream_t stream) {
    dim3 block(PSUM_COLS, PSUM_SLICES);
    partial_sums_accumulate_kernel<<<CEIL_DIV(ncols, PSUM_COLS), block, 0, stream>>>(out, partials, nrows, ncols);
    cudaCheckLast();
}

#endif
