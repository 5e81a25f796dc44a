/*
 * swiglu.cuh: the gated MLP's activation (mamba_ssm's GatedMLP, Transformer++'s SwiGLU), forward and backward.
 *
 * fc1 output per row (BT rows): [y (Hd) | gate (Hd)], the first half the value, the second the gate (mamba_ssm
 * splits fc1's output as y, gate = chunk(2) and returns y * silu(gate)).
 *   out   = y silu(g),  silu(g) = g sigmoid(g)
 *   dy    = dout silu(g)
 *   dg    = dout y silu'(g),  silu'(g) = sigmoid(g) (1 + g (1 - sigmoid(g)))
 * The backward writes d(fc1 out) (BT, 2 Hd) in the fc1 layout, ready for fc1's matmul backward. Elementwise; one
 * thread per 8 columns with 16-byte accesses where Hd % 8 == 0 (and the buffers are 16-byte aligned), else one per
 * element. Deterministic: no reductions.
 */
#ifndef MAMBA2_SWIGLU_CUH
#define MAMBA2_SWIGLU_CUH

#include <stdint.h>
#include "cuda_common.h"
#include "vec128.cuh"

#define SWIGLU_THREADS 256

__device__ static inline float swiglu_sigmoid(float g) { return 1.f / (1.f + expf(-g)); }

/* VEC = 8: each thread 8 consecutive columns of one row; VEC = 1: one element */
template <int VEC>
__global__ static void swiglu_forward_kernel(floatX* out, const floatX* fc1, int BT, int Hd) {
    size_t n = (size_t)BT * Hd / VEC;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        size_t row = idx * VEC / Hd, col = idx * VEC % Hd;
        const floatX* yp = fc1 + row * 2 * Hd + col;
        float y[VEC], g[VEC], o[VEC];
        loadNX<VEC>(y, yp);
        loadNX<VEC>(g, yp + Hd);
#pragma unroll
        for (int e = 0; e < VEC; e++) o[e] = y[e] * g[e] * swiglu_sigmoid(g[e]);
        storeNX<VEC>(out + row * Hd + col, o);
    }
}
template <int VEC>
__global__ static void swiglu_backward_kernel(floatX* dfc1, const floatX* dout, const floatX* fc1, int BT, int Hd) {
    size_t n = (size_t)BT * Hd / VEC;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        size_t row = idx * VEC / Hd, col = idx * VEC % Hd;
        const floatX* yp = fc1 + row * 2 * Hd + col;
        float y[VEC], g[VEC], go[VEC], dy[VEC], dg[VEC];
        loadNX<VEC>(y, yp);
        loadNX<VEC>(g, yp + Hd);
        loadNX<VEC>(go, dout + row * Hd + col);
#pragma unroll
        for (int e = 0; e < VEC; e++) {
            float sg = swiglu_sigmoid(g[e]);
            dy[e] = go[e] * g[e] * sg;
            dg[e] = go[e] * y[e] * sg * (1.f + g[e] * (1.f - sg));
        }
        storeNX<VEC>(dfc1 + row * 2 * Hd + col, dy);
        storeNX<VEC>(dfc1 + row * 2 * Hd + Hd + col, dg);
    }
}

static inline int swiglu_vec_ok(int Hd, const void* a, const void* b, const void* c) {
    return Hd % 8 == 0 && (uintptr_t)a % 16 == 0 && (uintptr_t)b % 16 == 0 && (uintptr_t)c % 16 == 0;
}
static inline int swiglu_grid(size_t n) {
    size_t blocks = CEIL_DIV(n, (size_t)SWIGLU_THREADS), cap = (size_t)cuda_num_sms() * 32;
    return (int)(blocks < cap ? blocks : cap);
}
static void swiglu_check(int BT, int Hd, const char* who) {
    if (BT < 1 || Hd < 1) {
        fprintf(stderr, "%s: rows %d, hidden %d: both must be >= 1\n", who, BT, Hd);
        exit(EXIT_FAILURE);
    }
}

/* out (BT, Hd) = y * silu(gate) from fc1 (BT, 2 Hd) = [y | gate] */
static void swiglu_forward(floatX* out, const floatX* fc1, int BT, int Hd, cudaStream_t stream) {
    swiglu_check(BT, Hd, "swiglu_forward");
    size_t n = (size_t)BT * Hd;
    if (swiglu_vec_ok(Hd, out, fc1, fc1)) {
        swiglu_forward_kernel<8><<<swiglu_grid(n / 8), SWIGLU_THREADS, 0, stream>>>(out, fc1, BT, Hd);
    } else {
        swiglu_forward_kernel<1><<<swiglu_grid(n), SWIGLU_THREADS, 0, stream>>>(out, fc1, BT, Hd);
    }
    cudaCheckLast();
}
/* dfc1 (BT, 2 Hd) = [dy | dgate] from dout (BT, Hd) and the forward's fc1; dfc1 may be fc1 itself (each thread
   reads its elements before it writes them) */
static void swiglu_backward(floatX* dfc1, const floatX* dout, const floatX* fc1, int BT, int Hd, cudaStream_t stream) {
    swiglu_check(BT, Hd, "swiglu_backward");
    size_t n = (size_t)BT * Hd;
    if (swiglu_vec_ok(Hd, dfc1, dout, fc1)) {
        swiglu_backward_kernel<8><<<swiglu_grid(n / 8), SWIGLU_THREADS, 0, stream>>>(dfc1, dout, fc1, BT, Hd);
    } else {
        swiglu_backward_kernel<1><<<swiglu_grid(n), SWIGLU_THREADS, 0, stream>>>(dfc1, dout, fc1, BT, Hd);
    }
    cudaCheckLast();
}

#endif /* MAMBA2_SWIGLU_CUH */
