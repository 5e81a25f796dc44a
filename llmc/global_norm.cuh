/*
 * global_norm.cuh: the L2 norm of the whole float gradient buffer and torch's clipping coefficient, on the device.
 *
 * Deterministic two-stage reduction, no atomics: stage 1 runs a FIXED grid (GLOBAL_NORM_BLOCKS blocks, independent of the
 * GPU), each thread summing squares over a fixed grid-stride set of elements, each block reducing its threads in a
 * fixed tree and writing one partial; stage 2 (one block) sums the partials in a fixed order (in double, cheap
 * here), and writes
 *   out[0] = norm = sqrt(sum g^2)
 *   out[1] = clip coefficient = min(clip / (norm + 1e-6), 1)       (torch.nn.utils.clip_grad_norm_; 1 if clip <= 0)
 * so AdamW can read out[1] as its grad_scale without a host sync. A non-finite norm gives a non-finite out[1], as
 * in torch (the trainer should check out[0] when it reads it back for logging).
 *
 * Kernels: global_norm_partials_kernel, global_norm_finish_kernel. Launcher: global_norm_clip.
 */
#ifndef MAMBA2_GLOBAL_NORM_CUH
#define MAMBA2_GLOBAL_NORM_CUH

#include "cuda_common.h"
#include "utils.h"

#define GLOBAL_NORM_BLOCKS 528          /* 4 per SM on an H100; fixed so the summation order never changes */
#define GLOBAL_NORM_THREADS 512

/* reduce over the block in a fixed tree (warp shuffles, then warp 0 over the warp sums); result in thread 0 */
__device__ static inline float block_sum_fixed(float v) {
    __shared__ float warp_sums[GLOBAL_NORM_THREADS / WARP_SIZE];
    v = warp_reduce_sum(v);
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x / WARP_SIZE) ? warp_sums[lane] : 0.f;
    return warp == 0 ? warp_reduce_sum(v) : 0.f;
}

__global__ static void __launch_bounds__(GLOBAL_NORM_THREADS)
global_norm_partials_kernel(float* partials, const float* grads, size_t n) {
    float s = 0.f;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if ((size_t)grads % 16 == 0) {
        /* 16-byte loads over the body, then the tail */
        size_t n4 = n / 4;
        const float4* g4 = reinterpret_cast<const float4*>(grads);
        for (size_t j = i; j < n4; j += stride) {
            float4 g = __ldcs(g4 + j);
            s += g.x * g.x + g.y * g.y + g.z * g.z + g.w * g.w;
        }
        for (size_t j = 4 * n4 + i; j < n; j += stride) s += grads[j] * grads[j];
    } else {
        for (size_t j = i; j < n; j += stride) s += grads[j] * grads[j];
    }
    s = block_sum_fixed(s);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ static void global_norm_finish_kernel(float* out, const float* partials, int npartials, float clip) {
    if (threadIdx.x != 0) return;
    double s = 0.0;
    for (int b = 0; b < npartials; b++) s += partials[b];
    float norm = (float)sqrt(s);
    float coef = clip > 0.f ? clip / (norm + 1e-6f) : 1.f;
    out[0] = norm;
    out[1] = coef < 1.f ? coef : 1.f;
}

static size_t global_norm_scratch_floats(void) { return GLOBAL_NORM_BLOCKS; }

/* stage 1: per-block partial sums of squares into scratch (global_norm_scratch_floats() floats) */
static void global_norm_partials(float* scratch, const float* grads, size_t n, cudaStream_t stream) {
    global_norm_partials_kernel<<<GLOBAL_NORM_BLOCKS, GLOBAL_NORM_THREADS, 0, stream>>>(scratch, grads, n);
    cudaCheckLast();
}

/* stage 2: out[0] = sqrt(sum of the partials), out[1] = min(1, clip / (norm + 1e-6)) (clip <= 0: 1).
 * Multi-GPU ZeRO sums the partials of every rank's shard (an all-reduce of scratch) between the two stages. */
static void global_norm_finish(float* out, const float* scratch, float clip, cudaStream_t stream) {
    global_norm_finish_kernel<<<1, 32, 0, stream>>>(out, scratch, GLOBAL_NORM_BLOCKS, clip);
    cudaCheckLast();
}

/* out: 2 device floats (norm, clip coefficient); scratch: global_norm_scratch_floats() floats; clip <= 0: no clip */
static void global_norm_clip(float* out, float* scratch, const float* grads, size_t n, float clip,
                             cudaStream_t stream) {
    global_norm_partials(scratch, grads, n, stream);
    global_norm_finish(out, scratch, clip, stream);
}

#endif
