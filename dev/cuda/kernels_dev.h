/*
 * kernels_dev.h: what the dev/cuda programs of the non-SSD kernels share (encoder, rmsnorm, conv1d, gated_norm,
 * matmul, classifier, adamw, global_norm): random inputs, poisoned outputs, validation against a double CPU
 * reference with a tolerance that can fail, a check that it does fail on a perturbed output, and timing with
 * cudaEvents (median of many runs after warm-up) against the memory or FLOP floor.
 *
 * Every program ends with "N passed, N failed" and exits nonzero on a failure.
 */
#ifndef MAMBA2_KERNELS_DEV_H
#define MAMBA2_KERNELS_DEV_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "llmc/cuda_common.h"
#include "llmc/utils.h"

#define HBM_BYTES_PER_S 3.0e12   /* measured device-to-device copy on the lent H100 (ANCHORS.md) */
#define TENSOR_FLOPS 800e12      /* measured bf16 dense GEMM on the lent H100 (ANCHORS.md) */

static int dev_passed = 0, dev_failed = 0;

static inline void dev_record(const char* name, int ok) {
    if (ok) dev_passed++; else dev_failed++;
    printf("  [%s] %s\n", ok ? "PASS" : "FAIL", name);
}

static inline int dev_finish(void) {
    printf("%d passed, %d failed\n", dev_passed, dev_failed);
    return dev_failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---- random numbers (xorshift64*, fixed seed per program: runs are reproducible) ---- */
static uint64_t dev_rng = 0x9E3779B97F4A7C15ull;
static inline uint32_t dev_rand_u32(void) {
    dev_rng ^= dev_rng >> 12; dev_rng ^= dev_rng << 25; dev_rng ^= dev_rng >> 27;
    return (uint32_t)((dev_rng * 0x2545F4914F6CDD1Dull) >> 32);
}
static inline float dev_rand_uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)((dev_rand_u32() >> 8) * (1.0 / 16777216.0));
}
static inline float* dev_random_floats(size_t n, float lo, float hi) {
    float* h = (float*)mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = dev_rand_uniform(lo, hi);
    return h;
}
/* random ints in [0, hi) */
static inline int* dev_random_ints(size_t n, int hi) {
    int* h = (int*)mallocCheck(n * sizeof(int));
    for (size_t i = 0; i < n; i++) h[i] = (int)(dev_rand_u32() % (uint32_t)hi);
    return h;
}

/* round a host array to floatX precision in place, so the CPU reference sees exactly what the GPU reads */
static inline void dev_round_to_X(float* h, size_t n) {
    for (size_t i = 0; i < n; i++) h[i] = (float)(floatX)h[i];
}

/* ---- device buffers ---- */
static inline void* dev_malloc(size_t bytes) {
    void* d;
    cudaCheck(cudaMalloc(&d, bytes > 0 ? bytes : 1));
    return d;
}
/* all bits set: NaN in both float and bf16, so an element the kernel never wrote fails validation */
static inline void dev_poison(void* d, size_t bytes) { cudaCheck(cudaMemset(d, 0xFF, bytes)); }

static inline floatX* dev_upload_X(const float* h, size_t n) {
    floatX* tmp = (floatX*)mallocCheck(n * sizeof(floatX));
    for (size_t i = 0; i < n; i++) tmp[i] = (floatX)h[i];
    floatX* d = (floatX*)dev_malloc(n * sizeof(floatX));
    cudaCheck(cudaMemcpy(d, tmp, n * sizeof(floatX), cudaMemcpyHostToDevice));
    free(tmp);
    return d;
}
static inline void dev_copy_to_X(floatX* d, const float* h, size_t n) {
    floatX* tmp = (floatX*)mallocCheck(n * sizeof(floatX));
    for (size_t i = 0; i < n; i++) tmp[i] = (floatX)h[i];
    cudaCheck(cudaMemcpy(d, tmp, n * sizeof(floatX), cudaMemcpyHostToDevice));
    free(tmp);
}
static inline float* dev_upload_F(const float* h, size_t n) {
    float* d = (float*)dev_malloc(n * sizeof(float));
    cudaCheck(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}
static inline float* dev_download_X(const floatX* d, size_t n) {
    floatX* tmp = (floatX*)mallocCheck(n * sizeof(floatX));
    cudaCheck(cudaMemcpy(tmp, d, n * sizeof(floatX), cudaMemcpyDeviceToHost));
    float* h = (float*)mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = (float)tmp[i];
    free(tmp);
    return h;
}
static inline float* dev_download_F(const float* d, size_t n) {
    float* h = (float*)mallocCheck(n * sizeof(float));
    cudaCheck(cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

/* ---- validation ----
 * An element passes when |got - ref| <= atol + rtol * |ref|; NaN (an unwritten, poisoned element) never passes.
 * Prints max abs error, max relative error (over elements with |ref| > atol) and ||got-ref|| / ||ref||. */
static inline int dev_compare(const char* name, const float* got, const double* ref, size_t n, double atol, double rtol,
                       int quiet) {
    double max_abs = 0.0, max_rel = 0.0, num = 0.0, den = 0.0;
    size_t bad = 0, nans = 0, first_bad = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], r = ref[i];
        if (isnan(g) || isinf(g)) { nans++; if (first_bad == (size_t)-1) first_bad = i; continue; }
        double e = fabs(g - r);
        if (e > max_abs) max_abs = e;
        if (fabs(r) > atol && e / fabs(r) > max_rel) max_rel = e / fabs(r);
        num += e * e; den += r * r;
        if (e > atol + rtol * fabs(r)) { bad++; if (first_bad == (size_t)-1) first_bad = i; }
    }
    int ok = (bad == 0 && nans == 0);
    if (!quiet) {
        printf("  %-34s n=%-9zu max_abs %.3e max_rel %.3e norm_rel %.3e (atol %.0e rtol %.0e)", name, n, max_abs,
               max_rel, den > 0 ? sqrt(num / den) : sqrt(num), atol, rtol);
        if (!ok) {
            printf(" bad %zu nan %zu; first at %zu: got %.6g ref %.6g", bad, nans, first_bad, got[first_bad],
                   ref[first_bad]);
        }
        printf("\n");
    }
    return ok;
}

/* validate, record the result, and once per output also check that the tolerance CAN fail: a copy with one
 * element moved by 10x the tolerance (or by 1 ulp-scale more) must be rejected */
static inline void dev_validate(const char* name, const float* got, const double* ref, size_t n, double atol, double rtol) {
    dev_record(name, dev_compare(name, got, ref, n, atol, rtol, 0));
    float* bad = (float*)mallocCheck(n * sizeof(float));
    memcpy(bad, got, n * sizeof(float));
    size_t i = n / 2;
    bad[i] = (float)(ref[i] + 10.0 * (atol + rtol * fabs(ref[i])) + 1e-3 * fabs(ref[i]));
    char label[160];
    snprintf(label, sizeof label, "%s: perturbed copy is rejected", name);
    dev_record(label, !dev_compare(name, bad, ref, n, atol, rtol, 1));
    free(bad);
}

/* bitwise equality of two runs of a deterministic kernel */
static inline void dev_check_bitwise(const char* name, const void* a, const void* b, size_t bytes) {
    char label[160];
    snprintf(label, sizeof label, "%s: two runs bitwise identical", name);
    dev_record(label, memcmp(a, b, bytes) == 0);
}

/* ---- timing: median over `repeats` runs after `warmup`, each run timed with its own pair of events ---- */
static inline int dev_cmp_float(const void* a, const void* b) {
    float x = *(const float*)a, y = *(const float*)b;
    return (x > y) - (x < y);
}
template <class F>
static inline float dev_bench_ms(int repeats, F run) {
    const int warmup = 5;
    for (int i = 0; i < warmup; i++) run();
    cudaCheck(cudaDeviceSynchronize());
    cudaEvent_t start, stop;
    cudaCheck(cudaEventCreate(&start));
    cudaCheck(cudaEventCreate(&stop));
    float* times = (float*)mallocCheck(repeats * sizeof(float));
    for (int i = 0; i < repeats; i++) {
        cudaCheck(cudaEventRecord(start));
        run();
        cudaCheck(cudaEventRecord(stop));
        cudaCheck(cudaEventSynchronize(stop));
        cudaCheck(cudaEventElapsedTime(&times[i], start, stop));
    }
    cudaCheckLast();
    qsort(times, repeats, sizeof(float), dev_cmp_float);
    float median = times[repeats / 2];
    free(times);
    cudaCheck(cudaEventDestroy(start));
    cudaCheck(cudaEventDestroy(stop));
    return median;
}

/* print one timing line against the memory floor (bytes moved at 3.0 TB/s) */
static inline void dev_report_bytes(const char* name, float ms, double bytes) {
    double floor_ms = bytes / HBM_BYTES_PER_S * 1e3;
    printf("  TIME %-40s %9.4f ms  floor %8.4f ms (%7.1f MB)  %6.0f GB/s  %5.1f%% of floor speed\n", name, ms,
           floor_ms, bytes / 1e6, bytes / (ms * 1e-3) / 1e9, 100.0 * floor_ms / ms);
}
/* print one timing line against the tensor-core floor (FLOPs at 800 TFLOP/s) */
static inline void dev_report_flops(const char* name, float ms, double flops) {
    double floor_ms = flops / TENSOR_FLOPS * 1e3;
    printf("  TIME %-40s %9.4f ms  floor %8.4f ms (%7.1f GFLOP) %6.1f TFLOP/s %5.1f%% of floor speed\n", name, ms,
           floor_ms, flops / 1e9, flops / (ms * 1e-3) / 1e12, 100.0 * floor_ms / ms);
}

#endif
