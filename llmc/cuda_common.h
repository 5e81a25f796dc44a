/*
 * cuda_common.h: what every CUDA file of mamba2.c shares.
 *
 * - floatX: the storage type of activations and of the weight copies the matmuls read.
 *   bf16 by default; building with -DENABLE_FP32 (make PRECISION=FP32) makes it float, so the GPU trainer can be
 *   compared with the fp32 CPU trainer to ~1e-5. Master weights, AdamW state, gradients of parameters, the
 *   residual stream, norm statistics, dt/A/decays and SSD states are always float.
 * - cudaCheck / cublasCheck: every runtime call is checked, and a failure names the file and line.
 */
#ifndef MAMBA2_CUDA_COMMON_H
#define MAMBA2_CUDA_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <cuda_runtime.h>
#include <cuda_bf16.h>

#if defined(ENABLE_FP32)
typedef float floatX;
#define PRECISION_NAME "fp32"
#else
typedef __nv_bfloat16 floatX;
#define PRECISION_NAME "bf16"
#endif

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))
#define WARP_SIZE 32

static inline void cuda_check_(cudaError_t err, const char* file, int line) {
    if (err != cudaSuccess) {
        fprintf(stderr, "CUDA error at %s:%d: %s\n", file, line, cudaGetErrorString(err));
        exit(EXIT_FAILURE);
    }
}
#define cudaCheck(err) cuda_check_((err), __FILE__, __LINE__)

/* call after every kernel launch: catches bad launch configurations at the launch site */
#define cudaCheckLast() cuda_check_(cudaGetLastError(), __FILE__, __LINE__)

/* an attribute of the current device, read once per process (each process drives one device): launchers that size
   their grids by it run every step, and the query is host work on that path */
static inline int cuda_device_attr_cached(cudaDeviceAttr attr, int* cache) {
    if (*cache == 0) {
        int dev;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(cache, attr, dev));
    }
    return *cache;
}
static inline int cuda_num_sms(void) {
    static int sms = 0;
    return cuda_device_attr_cached(cudaDevAttrMultiProcessorCount, &sms);
}
/* the largest dynamic shared memory one block may opt in to */
static inline int cuda_smem_optin(void) {
    static int bytes = 0;
    return cuda_device_attr_cached(cudaDevAttrMaxSharedMemoryPerBlockOptin, &bytes);
}

/* conversions that work for both floatX choices */
__device__ __host__ static inline float toF(float x) { return x; }
__device__ __host__ static inline float toF(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __host__ static inline floatX fromF(float x) { return (floatX)x; }

__device__ static inline float warp_reduce_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}
__device__ static inline float warp_reduce_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

#endif
