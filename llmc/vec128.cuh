/*
 * vec128.cuh: 16-byte vector loads and stores for the memory-bound kernels.
 *
 * A warp that moves 16 bytes per thread per instruction keeps far more bytes in flight than one that moves 2
 * (one bf16), which is what memory-bound kernels need to approach HBM bandwidth. Vec128<T> holds 16 bytes of T:
 * 8 bf16 or 4 float. The pointer must be 16-byte aligned; callers check that (or fall back to scalar code).
 */
#ifndef MAMBA2_VEC128_CUH
#define MAMBA2_VEC128_CUH

#include "cuda_common.h"

template <class T>
struct alignas(16) Vec128 {
    static constexpr int size = 16 / sizeof(T);
    T v[16 / sizeof(T)];
};

/* ordinary load: the data may be read again soon (it stays in L1/L2) */
template <class T>
__device__ static inline Vec128<T> load128(const T* p) {
    return *reinterpret_cast<const Vec128<T>*>(p);
}
/* streaming load: read once, do not keep it in cache */
template <class T>
__device__ static inline Vec128<T> load128cs(const T* p) {
    int4 raw = __ldcs(reinterpret_cast<const int4*>(p));
    return *reinterpret_cast<Vec128<T>*>(&raw);
}
template <class T>
__device__ static inline void store128(T* p, Vec128<T> x) {
    *reinterpret_cast<Vec128<T>*>(p) = x;
}
/* streaming store: written once, not read back by this kernel */
template <class T>
__device__ static inline void store128cs(T* p, Vec128<T> x) {
    __stcs(reinterpret_cast<int4*>(p), *reinterpret_cast<int4*>(&x));
}

/* number of floatX elements in one 16-byte vector: 8 for bf16, 4 for float */
#define XVEC ((int)(16 / sizeof(floatX)))

/* 8 consecutive floatX <-> float[8]: one 16-byte access for bf16, two for float. p must be 16-byte aligned. */
__device__ static inline void load8X(float out[8], const floatX* p) {
#pragma unroll
    for (int i = 0; i < 8; i += XVEC) {
        Vec128<floatX> a = load128(p + i);
#pragma unroll
        for (int j = 0; j < XVEC; j++) out[i + j] = toF(a.v[j]);
    }
}
__device__ static inline void load8Xcs(float out[8], const floatX* p) {
#pragma unroll
    for (int i = 0; i < 8; i += XVEC) {
        Vec128<floatX> a = load128cs(p + i);
#pragma unroll
        for (int j = 0; j < XVEC; j++) out[i + j] = toF(a.v[j]);
    }
}
__device__ static inline void store8X(floatX* p, const float in[8]) {
#pragma unroll
    for (int i = 0; i < 8; i += XVEC) {
        Vec128<floatX> a;
#pragma unroll
        for (int j = 0; j < XVEC; j++) a.v[j] = fromF(in[i + j]);
        store128(p + i, a);
    }
}
/* 8 consecutive floats: two 16-byte accesses */
__device__ static inline void load8F(float out[8], const float* p) {
    Vec128<float> a = load128(p), b = load128(p + 4);
#pragma unroll
    for (int j = 0; j < 4; j++) { out[j] = a.v[j]; out[4 + j] = b.v[j]; }
}
__device__ static inline void store8F(float* p, const float in[8]) {
    Vec128<float> a, b;
#pragma unroll
    for (int j = 0; j < 4; j++) { a.v[j] = in[j]; b.v[j] = in[4 + j]; }
    store128(p, a);
    store128(p + 4, b);
}

/* VEC consecutive floatX <-> float[VEC], VEC = 8 (16 bytes in bf16), 4 (8 bytes in bf16) or 1 (scalar fallback
 * for rows that are not 16-byte aligned). p must be aligned to VEC * sizeof(floatX) for VEC > 1. */
template <int VEC>
__device__ static inline void loadNX(float out[VEC], const floatX* p) {
    if constexpr (VEC == 8) {
        load8X(out, p);
    } else if constexpr (VEC == 4 && sizeof(floatX) == 2) {   /* one 8-byte load */
        uint2 raw = *reinterpret_cast<const uint2*>(p);
        const floatX* e = reinterpret_cast<const floatX*>(&raw);
        for (int i = 0; i < 4; i++) out[i] = toF(e[i]);
    } else if constexpr (VEC == 4) {
        Vec128<floatX> a = load128(p);
        for (int i = 0; i < 4; i++) out[i] = toF(a.v[i]);
    } else for (int i = 0; i < VEC; i++) out[i] = toF(p[i]);
}
template <int VEC>
__device__ static inline void storeNX(floatX* p, const float v[VEC]) {
    if constexpr (VEC == 8) {
        store8X(p, v);
    } else if constexpr (VEC == 4 && sizeof(floatX) == 2) {
        uint2 raw;
        floatX* e = reinterpret_cast<floatX*>(&raw);
        for (int i = 0; i < 4; i++) e[i] = fromF(v[i]);
        *reinterpret_cast<uint2*>(p) = raw;
    } else if constexpr (VEC == 4) {
        Vec128<floatX> a;
        for (int i = 0; i < 4; i++) a.v[i] = fromF(v[i]);
        store128(p, a);
    } else for (int i = 0; i < VEC; i++) p[i] = fromF(v[i]);
}

/* sigmoid through the fast exp and divide (MUFU.EX2 / MUFU.RCP): ~2 ulp, against ~20 instructions for expf and an
 * IEEE division; the conv1d and gated-norm kernels call it twice per element. sigmoid(-inf side) -> 0 correctly:
 * 1 / (1 + inf) = 0. */
__device__ static inline float fast_sigmoid(float x) { return __fdividef(1.f, 1.f + __expf(-x)); }

static inline int is_aligned16(const void* p) { return ((size_t)p & 15) == 0; }

#endif
