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
/* the largest dynamic shared memory one block may opt in to (A100: 163 KB, H100 / B200: 227 KB, sm_86 / 89 / 120:
   99 KB), read once. MAMBA2_SMEM_LIMIT=bytes lowers it (never raises it), so that every dispatcher, all of which ask
   this function, takes the kernels a GPU with that limit would take: MAMBA2_SMEM_LIMIT=101376 on an H100 runs the
   path of an RTX 4090 / RTX 5090 (doc/gpus.md). */
static inline int cuda_smem_optin(void) {
    static int bytes = 0;
    if (bytes == 0) {
        int dev_bytes = 0;
        cuda_device_attr_cached(cudaDevAttrMaxSharedMemoryPerBlockOptin, &dev_bytes);
        const char* cap = getenv("MAMBA2_SMEM_LIMIT");
        if (cap != NULL && cap[0] != '\0') {
            char* end = NULL;
            long v = strtol(cap, &end, 10);
            if (end == cap || *end != '\0' || v < 1024) {
                fprintf(stderr, "MAMBA2_SMEM_LIMIT='%s': need a number of bytes >= 1024 (e.g. 101376, 99 KB)\n", cap);
                exit(EXIT_FAILURE);
            }
            if (v < dev_bytes) dev_bytes = (int)v;
        }
        bytes = dev_bytes;
    }
    return bytes;
}
/* let `kernel` take `bytes` of dynamic shared memory; more than cuda_smem_optin() is a dispatch error (the launcher
   should have taken a smaller kernel): refused with the numbers, never left to fail at launch */
static inline void cuda_set_smem(const void* kernel, size_t bytes, const char* who) {
    if (bytes > (size_t)cuda_smem_optin()) {
        fprintf(stderr, "%s: a kernel needs %zu bytes of shared memory per block; this GPU allows %d%s\n", who, bytes,
                cuda_smem_optin(), getenv("MAMBA2_SMEM_LIMIT") != NULL ? " (MAMBA2_SMEM_LIMIT)" : "");
        exit(EXIT_FAILURE);
    }
    cuda_check_(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), __FILE__,
                __LINE__);
}

/* timing reports call this: a compile check's build (NVCC_DEVICE_OPT, which the Makefile marks with
   MAMBA2_REDUCED_DEVICE_OPT) or a -G build runs the same arithmetic several times slower, and passes every test */
static inline void cuda_warn_reduced_opt(FILE* f) {
#if defined(MAMBA2_REDUCED_DEVICE_OPT) || defined(__CUDACC_DEBUG__)
    fprintf(f, "WARNING: this binary was built with reduced device optimization (NVCC_DEVICE_OPT or -G): its timings "
               "are not the release build's; rebuild it with make -B\n");
#else
    (void)f;
#endif
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
