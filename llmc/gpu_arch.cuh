/*
 * gpu_arch.cuh: which code path the GPU this process drives takes, decided once per process (doc/gpus.md).
 *
 * gpu_path() asks three things once and keeps the answers (one device per process, as cuda_device_attr_cached):
 *   - the device: its name and compute capability (cc, e.g. 80 for an A100, 90 for an H100, 120 for an RTX 5090);
 *   - the code the CUDA runtime loaded for it from this binary (gpu_arch_probe_kernel reports __CUDA_ARCH__ of that
 *     code, and whether it has the sm_90a features): a fat binary (the Makefile's GPU_ARCHS) holds one cubin per
 *     architecture and the runtime picks the one matching the device, or JIT-compiles the PTX of an older target;
 *   - MAMBA2_PORTABLE: unset or "0", the fastest path the device and the code allow; anything else, the portable
 *     path even on an H100 (to compare the two paths on the same card).
 * From them:
 *   hopper      the sm_90a-only kernels (Hopper's wgmma: llmc/wgmma.cuh, the SSD forward scans of llmc/ssd_fwd.cuh)
 *               may run: cc 9.0, sm_90a code loaded, not MAMBA2_PORTABLE. Everywhere else the dispatchers launch
 *               only portable kernels (mma.sync, cp.async, ldmatrix: sm_80 and later). Other targets compile the
 *               sm_90a kernels to empty bodies, which this rule never launches.
 *   bulk_copy   the classifier's resident kernel loads rows with the copy engine (cp.async.bulk + mbarrier, sm_90 and
 *               later: Hopper, Blackwell): code for sm_90 or later loaded, not MAMBA2_PORTABLE; else the same kernel
 *               loads them with 16-byte cp.async (sm_80).
 *   pdl         decode's programmatic dependent launch (griddepcontrol, sm_90 and later) may be asked for: the code
 *               has the griddepcontrol instructions (code for sm_90 or later) and the device takes them.
 *   smem_optin  the dynamic shared memory one block may opt in to: cuda_smem_optin() (llmc/cuda_common.h), which
 *               MAMBA2_SMEM_LIMIT=bytes lowers; every SSD / classifier / decode dispatcher asks it and takes a
 *               smaller kernel where a faster one does not fit.
 * gpu_arch_check() (every program calls it: gpu_model_create in llmc/model.cuh, the dev/cuda programs) refuses a GPU
 * below sm_80 in the bf16 build (no bf16 tensor cores; the fp32 build, make PRECISION=FP32, is the way there), and a
 * binary without code for the device (built with a GPU_ARCHS that leaves it out), naming the GPU.
 */
#ifndef MAMBA2_GPU_ARCH_CUH
#define MAMBA2_GPU_ARCH_CUH

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cuda_common.h"

typedef struct {
    char name[256];  /* cudaDeviceProp.name */
    int cc;          /* compute capability, major * 10 + minor */
    int code_arch;   /* __CUDA_ARCH__ / 10 of the code loaded for this device: 80, 86, 89, 90, 100, 120, ... */
    int sm90a;       /* that code is sm_90a (wgmma, setmaxnreg compiled in) */
    int portable;    /* MAMBA2_PORTABLE set and not "0" */
    int hopper;      /* the sm_90a-only kernels run */
    int bulk_copy;   /* the classifier's resident kernel uses cp.async.bulk */
    int pdl;         /* decode may overlap kernels (griddepcontrol) */
} GpuPath;

/* writes __CUDA_ARCH__ of the code the runtime chose for this device, and whether it is sm_90a */
__global__ static void gpu_arch_probe_kernel(int* out) {
#if defined(__CUDA_ARCH__)
    out[0] = __CUDA_ARCH__;
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    out[1] = 1;
#else
    out[1] = 0;
#endif
#endif
}

static const GpuPath* gpu_path(void) {
    static GpuPath p;
    static int done = 0;
    if (done) return &p;
    int dev;
    cudaDeviceProp prop;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaGetDeviceProperties(&prop, dev));
    memset(&p, 0, sizeof(p));
    snprintf(p.name, sizeof(p.name), "%s", prop.name);
    p.cc = prop.major * 10 + prop.minor;
    int* d_out;
    int h_out[2] = {0, 0};
    cudaCheck(cudaMalloc(&d_out, 2 * sizeof(int)));
    cudaCheck(cudaMemset(d_out, 0, 2 * sizeof(int)));
    gpu_arch_probe_kernel<<<1, 1>>>(d_out);
    cudaError_t err = cudaGetLastError();
    if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction) {
        fprintf(stderr, "this binary has no code for the %s (sm_%d): build it with GPU_ARCHS including %d (the "
                "default build covers sm_80, 86, 89, 90a, 100 and 120; doc/gpus.md)\n", p.name, p.cc, p.cc);
        exit(EXIT_FAILURE);
    }
    cudaCheck(err);
    cudaCheck(cudaMemcpy(h_out, d_out, 2 * sizeof(int), cudaMemcpyDeviceToHost));
    cudaCheck(cudaFree(d_out));
    p.code_arch = h_out[0] / 10;
    p.sm90a = h_out[1];
    const char* portable = getenv("MAMBA2_PORTABLE");
    p.portable = portable != NULL && strcmp(portable, "0") != 0;
    p.hopper = p.cc == 90 && p.sm90a && !p.portable;
    p.bulk_copy = p.code_arch >= 90 && p.cc >= 90 && !p.portable;
    p.pdl = p.code_arch >= 90 && p.cc >= 90;
    done = 1;
    return &p;
}

/* 1 where the sm_90a-only kernels may run (see the top of this file) */
static inline int gpu_hopper_path(void) { return gpu_path()->hopper; }

/* the refusals at start-up; every program passes here before its first kernel */
static void gpu_arch_check(void) {
    int dev, major, minor;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    cudaCheck(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
#if !defined(ENABLE_FP32)
    if (major < 8) {
        cudaDeviceProp prop;
        cudaCheck(cudaGetDeviceProperties(&prop, dev));
        fprintf(stderr, "the %s (sm_%d%d) has no bf16 tensor cores: the bf16 GPU build needs sm_80 or later (A100, "
                "RTX 30xx / 40xx / 50xx, H100, B200). Build the fp32 programs for it: make PRECISION=FP32 "
                "GPU_ARCHS=%d%d train_mamba2cu (doc/gpus.md)\n", prop.name, major, minor, major, minor);
        exit(EXIT_FAILURE);
    }
#endif
    (void)minor;
    gpu_path();  /* the probe: refuses a binary without code for this device */
}

/* one line: the device, the code it runs and the path taken, for logs and tests */
static void gpu_path_print(FILE* f) {
    const GpuPath* p = gpu_path();
    fprintf(f, "gpu: %s (sm_%d), code sm_%d%s, %s path: SSD forward %s, classifier rows by %s, decode overlap %s, "
            "shared memory %d bytes per block\n", p->name, p->cc, p->code_arch, p->sm90a ? "a" : "",
            p->hopper ? "Hopper" : "portable", p->hopper ? "wgmma" : "mma.sync",
            p->bulk_copy ? "cp.async.bulk" : "cp.async", p->pdl ? "on" : "off", cuda_smem_optin());
}

#endif
