/*
 * gpu_arch.cuh: which code path the GPU this process drives can take, decided once per process.
 *
 * gpu_hopper_path(): 1 where the sm_90a-only kernels (Hopper's wgmma: llmc/wgmma.cuh, the SSD forward scans of
 * llmc/ssd_fwd.cuh) may run: the device's compute capability is exactly 9.0 and the environment variable
 * MAMBA2_PORTABLE is unset or "0". Otherwise 0, and the dispatchers launch only portable kernels (mma.sync,
 * cp.async, ldmatrix: sm_80 and later). A binary built for another target (sm_80, 86, 89, 100, 120) compiles the
 * sm_90a kernels to empty bodies, which this rule never launches; MAMBA2_PORTABLE=1 on an H100 runs the portable
 * path of an sm_90a build (to compare the two on the same card).
 */
#ifndef MAMBA2_GPU_ARCH_CUH
#define MAMBA2_GPU_ARCH_CUH

#include <stdlib.h>
#include <string.h>
#include "cuda_common.h"

static inline int gpu_hopper_path(void) {
    static int cached = -1;  /* -1: not asked yet (one device per process, as cuda_device_attr_cached) */
    if (cached < 0) {
        int dev, major, minor;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        cudaCheck(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
        const char* portable = getenv("MAMBA2_PORTABLE");
        cached = major == 9 && minor == 0 && (portable == NULL || strcmp(portable, "0") == 0);
    }
    return cached;
}

#endif
