/*
 * wgmma_check.cu: unit test of llmc/wgmma.cuh (the descriptor, the tile layout, both m64n64k16 products) against
 * CPU products in double, before any SSD kernel relies on them. One warpgroup, one block.
 *   ss: D (64 x 64) = A B^T, A (64 x K) and B (64 x K) both K-major in shared memory, K = 16 (one wgmma) and
 *       K = 128 (8 chained wgmmas: the k-step advance of the start addresses); the SSD forward's C_i B_j^T.
 *   rs: D (64 x W) = A X, A (64 x K) from registers, X (K x W) row-major (MN-major, transpose bit) in shared
 *       memory, K = 64, W = 64 and 128 (two n64 halves); the SSD forward's S x_j.
 * Inputs are bf16 values, so the products are exact and the fp32 sums land within ~1e-6 of the double ones.
 * Also printed (not counted): the error with LBO and SBO swapped, so a wrong convention shows which way it is off.
 * Build: nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -I. -o dev/cuda/wgmma_check_bin dev/cuda/wgmma_check.cu
 * (built for another target it compiles, with empty kernels, and stops on any GPU that is not sm_90)
 */
#include <math.h>
#include <string.h>
#include "llmc/cuda_common.h"
#include "llmc/wgmma.cuh"
#include "dev/cuda/kernels_dev.h"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || !defined(__CUDA_ARCH__)
/* the 64 x 64 accumulator d of this thread into out (row-major, ld columns, column offset c0) */
__device__ static void store_acc(float* out, int ld, int c0, const float d[32]) {
    int w = threadIdx.x / 32, l = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < 32; i++) {
        int nt = i / 4, e = i % 4, row = 16 * w + l / 4 + 8 * (e / 2), col = 8 * nt + 2 * (l % 4) + (e % 2);
        out[row * ld + c0 + col] = d[i];
    }
}
#endif

/* out = A B^T; A, B: (64, K) row-major in global memory */
__global__ void check_ss_kernel(float* out, const floatX* A, const floatX* B, int K, int swap) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  /* other targets: an empty body (main stops before launching it) */
    extern __shared__ __align__(128) unsigned char smem[];
    floatX* As = (floatX*)smem;
    floatX* Bs = As + 64 * K;
    for (int idx = threadIdx.x; idx < 64 * K; idx += blockDim.x) {
        int r = idx / K, c = idx % K;
        As[wg_tile_offset(r, c, K)] = A[idx];
        Bs[wg_tile_offset(r, c, K)] = B[idx];
    }
    wg_fence_proxy_async();
    __syncthreads();
    uint32_t lbo = 128, sbo = K / 8 * 128;
    if (swap) { uint32_t t = lbo; lbo = sbo; sbo = t; }
    float d[32];
#pragma unroll
    for (int i = 0; i < 32; i++) d[i] = 0.f;
    wg_pin_acc(d);
    wg_fence();
    for (int ks = 0; ks < K / 16; ks++)
        wg_mma_ss<0, 0>(d, wg_desc(As + wg_tile_offset(0, 16 * ks, K), lbo, sbo),
                        wg_desc(Bs + wg_tile_offset(0, 16 * ks, K), lbo, sbo));
    wg_commit();
    wg_wait<0>();
    wg_pin_acc(d);
    store_acc(out, 64, 0, d);
#endif
}

/* out = A X; A (64, K) row-major (loaded into registers), X (K, W) row-major; W = 64 or 128 */
template <int W>
__global__ void check_rs_kernel(float* out, const floatX* A, const floatX* X, int K, int swap) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  /* other targets: an empty body (main stops before launching it) */
    extern __shared__ __align__(128) unsigned char smem[];
    floatX* Xs = (floatX*)smem;
    for (int idx = threadIdx.x; idx < K * W; idx += blockDim.x) Xs[wg_tile_offset(idx / W, idx % W, W)] = X[idx];
    wg_fence_proxy_async();
    __syncthreads();
    uint32_t lbo = W / 8 * 128, sbo = 128;
    if (swap) { uint32_t t = lbo; lbo = sbo; sbo = t; }
    int w = threadIdx.x / 32, l = threadIdx.x % 32, r0 = 16 * w + l / 4, k0 = 2 * (l % 4);
    float d[W / 64][32];
#pragma unroll
    for (int h = 0; h < W / 64; h++) {
#pragma unroll
        for (int i = 0; i < 32; i++) d[h][i] = 0.f;
        wg_pin_acc(d[h]);
    }
    for (int ks = 0; ks < K / 16; ks++) {
        uint32_t a[4];
        const floatX* ap = A + ks * 16;
#pragma unroll
        for (int q = 0; q < 4; q++) {
            int r = r0 + 8 * (q % 2), k = k0 + 8 * (q / 2);
            __nv_bfloat162 v;
            v.x = ap[r * K + k];
            v.y = ap[r * K + k + 1];
            a[q] = *(uint32_t*)&v;
        }
        wg_fence();
#pragma unroll
        for (int h = 0; h < W / 64; h++)
            wg_mma_rs<1>(d[h], a, wg_desc(Xs + wg_tile_offset(16 * ks, 64 * h, W), lbo, sbo));
        wg_commit();
        wg_wait<0>();
#pragma unroll
        for (int h = 0; h < W / 64; h++) wg_pin_acc(d[h]);
    }
#pragma unroll
    for (int h = 0; h < W / 64; h++) store_acc(out, W, 64 * h, d[h]);
#endif
}

static float* random_bf16_values(size_t n) {
    float* h = dev_random_floats(n, -1.f, 1.f);
    dev_round_to_X(h, n);
    return h;
}

static void run_ss(int K) {
    float *hA = random_bf16_values(64 * K), *hB = random_bf16_values(64 * K);
    double* ref = (double*)mallocCheck(64 * 64 * sizeof(double));
    for (int m = 0; m < 64; m++)
        for (int n = 0; n < 64; n++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) s += (double)hA[m * K + k] * hB[n * K + k];
            ref[m * 64 + n] = s;
        }
    floatX *dA = dev_upload_X(hA, 64 * K), *dB = dev_upload_X(hB, 64 * K);
    float* dO = (float*)dev_malloc(64 * 64 * sizeof(float));
    size_t smem = 48 * 1024;  /* 2 * 64 * K bf16 at most 32 KB; the rest keeps the swapped-stride run inside */
    for (int swap = 0; swap < 2; swap++) {
        dev_poison(dO, 64 * 64 * sizeof(float));
        check_ss_kernel<<<1, 128, smem>>>(dO, dA, dB, K, swap);
        cudaCheckLast();
        cudaCheck(cudaDeviceSynchronize());
        float* got = dev_download_F(dO, 64 * 64);
        char name[96];
        snprintf(name, sizeof name, "ss A B^T K-major K=%d%s", K, swap ? " (LBO/SBO swapped, info)" : "");
        double amax = 0.0;
        for (int i = 0; i < 64 * 64; i++) amax = fmax(amax, fabs(ref[i]));
        if (swap) dev_compare(name, got, ref, 64 * 64, 1e-5 * amax, 1e-5, 0);
        else dev_validate(name, got, ref, 64 * 64, 1e-5 * amax, 1e-5);
        free(got);
    }
    cudaCheck(cudaFree(dA)); cudaCheck(cudaFree(dB)); cudaCheck(cudaFree(dO));
    free(hA); free(hB); free(ref);
}

static void run_rs(int K, int W) {
    float *hA = random_bf16_values(64 * K), *hX = random_bf16_values((size_t)K * W);
    double* ref = (double*)mallocCheck(64 * W * sizeof(double));
    for (int m = 0; m < 64; m++)
        for (int n = 0; n < W; n++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) s += (double)hA[m * K + k] * hX[k * W + n];
            ref[m * W + n] = s;
        }
    floatX *dA = dev_upload_X(hA, 64 * K), *dX = dev_upload_X(hX, (size_t)K * W);
    float* dO = (float*)dev_malloc(64 * W * sizeof(float));
    /* 48 KB whatever the tile: the swapped-stride (info) run reads past K * W elements and must stay inside */
    size_t smem = 48 * 1024;
    for (int swap = 0; swap < 2; swap++) {
        dev_poison(dO, 64 * W * sizeof(float));
        if (W == 64) check_rs_kernel<64><<<1, 128, smem>>>(dO, dA, dX, K, swap);
        else check_rs_kernel<128><<<1, 128, smem>>>(dO, dA, dX, K, swap);
        cudaCheckLast();
        cudaCheck(cudaDeviceSynchronize());
        float* got = dev_download_F(dO, 64 * W);
        char name[96];
        snprintf(name, sizeof name, "rs A X, X MN-major K=%d W=%d%s", K, W, swap ? " (LBO/SBO swapped, info)" : "");
        double amax = 0.0;
        for (int i = 0; i < 64 * W; i++) amax = fmax(amax, fabs(ref[i]));
        if (swap) dev_compare(name, got, ref, 64 * W, 1e-5 * amax, 1e-5, 0);
        else dev_validate(name, got, ref, 64 * W, 1e-5 * amax, 1e-5);
        free(got);
    }
    cudaCheck(cudaFree(dA)); cudaCheck(cudaFree(dX)); cudaCheck(cudaFree(dO));
    free(hA); free(hX); free(ref);
}

int main(void) {
#if defined(ENABLE_FP32)
    printf("wgmma_check: bf16 build only (the wgmma products take bf16 operands)\n");
    return dev_finish();
#else
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    printf("wgmma_check: device %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    if (prop.major != 9 || prop.minor != 0) {  /* other GPUs never run a wgmma kernel (llmc/gpu_arch.cuh) */
        printf("wgmma_check: wgmma needs a Hopper GPU (sm_90a); this device is sm_%d%d: skipped\n", prop.major,
               prop.minor);
        return dev_finish();
    }
    run_ss(16);
    run_ss(128);
    run_rs(64, 64);
    run_rs(64, 128);
    return dev_finish();
#endif
}
