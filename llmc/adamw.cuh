/*
 * adamw.cuh: the AdamW update of the fp32 master weights, with torch.optim.AdamW's semantics exactly, and the refresh
 * of the floatX copy the matmuls read, in one pass over memory.
 *
 * Per element, with t the 1-based step and g = grad * grad_scale (grad_scale: the clipping coefficient from
 * global_norm.cuh, read on the device so the host never waits for the norm):
 *   p *= 1 - lr * wd                                   (decoupled weight decay, before the moments, as torch)
 *   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *   p_x = (floatX) p                                   round to nearest (deterministic)
 * The bias corrections are computed on the host in double. Weight decay is per tensor: call adamw_update once per
 * tensor (or per contiguous run of tensors with the same wd), or adamw_update_tensors with a host list.
 *
 * Kernel: adamw_kernel. Launchers: adamw_update (one range), adamw_update_tensors (a list of (offset, size, wd)).
 */
#ifndef MAMBA2_ADAMW_CUH
#define MAMBA2_ADAMW_CUH

#include <math.h>
#include "cuda_common.h"
#include "utils.h"

typedef struct {
    float lr, beta1, beta2, eps;
    float bias_correction1;        /* 1 - beta1^t */
    float bias_correction2_sqrt;   /* sqrt(1 - beta2^t) */
} AdamWStep;

/* the per-step constants; t is the 1-based step count */
static AdamWStep adamw_step_constants(float lr, float beta1, float beta2, float eps, int t) {
    AdamWStep s;
    s.lr = lr; s.beta1 = beta1; s.beta2 = beta2; s.eps = eps;
    s.bias_correction1 = (float)(1.0 - pow((double)beta1, t));
    s.bias_correction2_sqrt = (float)sqrt(1.0 - pow((double)beta2, t));
    return s;
}

__device__ static inline void adamw_element(float& p, float& m, float& v, float g, float wd, const AdamWStep& s) {
    p *= 1.f - s.lr * wd;
    m = s.beta1 * m + (1.f - s.beta1) * g;
    v = s.beta2 * v + (1.f - s.beta2) * g * g;
    float denom = sqrtf(v) / s.bias_correction2_sqrt + s.eps;
    p -= (s.lr / s.bias_correction1) * (m / denom);
}

/* four elements per thread with 16-byte accesses when the range is 16-byte aligned, else one */
__global__ static void adamw_kernel(float* params, floatX* params_x, float* m, float* v, const float* grads,
                                    size_t n, float wd, AdamWStep s, const float* grad_scale, int vec4) {
    float scale = grad_scale != NULL ? *grad_scale : 1.f;
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * (vec4 ? 4 : 1);
    if (i >= n) return;
    if (vec4 && i + 4 <= n) {
        float4 p4 = *reinterpret_cast<float4*>(params + i);
        float4 m4 = *reinterpret_cast<float4*>(m + i);
        float4 v4 = *reinterpret_cast<float4*>(v + i);
        float4 g4 = __ldcs(reinterpret_cast<const float4*>(grads + i));
        adamw_element(p4.x, m4.x, v4.x, g4.x * scale, wd, s);
        adamw_element(p4.y, m4.y, v4.y, g4.y * scale, wd, s);
        adamw_element(p4.z, m4.z, v4.z, g4.z * scale, wd, s);
        adamw_element(p4.w, m4.w, v4.w, g4.w * scale, wd, s);
        *reinterpret_cast<float4*>(params + i) = p4;
        *reinterpret_cast<float4*>(m + i) = m4;
        *reinterpret_cast<float4*>(v + i) = v4;
        if (params_x != NULL) {
            params_x[i] = fromF(p4.x); params_x[i + 1] = fromF(p4.y);
            params_x[i + 2] = fromF(p4.z); params_x[i + 3] = fromF(p4.w);
        }
    } else {
        for (size_t j = i; j < n && j < i + (vec4 ? 4 : 1); j++) {
            float p = params[j], mm = m[j], vv = v[j];
            adamw_element(p, mm, vv, grads[j] * scale, wd, s);
            params[j] = p; m[j] = mm; v[j] = vv;
            if (params_x != NULL) params_x[j] = fromF(p);
        }
    }
}

/* one range of n elements (a tensor, or several with the same weight decay).
 * params/m/v/grads: float; params_x: the floatX copy (NULL when there is none, e.g. a float model's own weights);
 * grad_scale: device float multiplying the gradient (NULL = 1). */
static void adamw_update(float* params, floatX* params_x, float* m, float* v, const float* grads, size_t n, float wd,
                         AdamWStep s, const float* grad_scale, cudaStream_t stream) {
    if (n == 0) return;
    int vec4 = ((size_t)params % 16 == 0) && ((size_t)m % 16 == 0) && ((size_t)v % 16 == 0) &&
               ((size_t)grads % 16 == 0);
    const int block = 256;
    size_t threads = vec4 ? CEIL_DIV(n, (size_t)4) : n;
    adamw_kernel<<<(unsigned)CEIL_DIV(threads, (size_t)block), block, 0, stream>>>(params, params_x, m, v, grads, n, wd,
                                                                                   s, grad_scale, vec4);
    cudaCheckLast();
}

typedef struct {
    size_t offset;   /* in elements, into the flat parameter buffers */
    size_t size;
    float wd;        /* weight decay of this tensor (0 for A_log, D, dt_bias, norms, biases) */
} AdamWTensor;

/* every tensor of a flat parameter buffer, each with its own weight decay (one launch per tensor) */
static void adamw_update_tensors(float* params, floatX* params_x, float* m, float* v, const float* grads,
                                 const AdamWTensor* tensors, int ntensors, AdamWStep s, const float* grad_scale,
                                 cudaStream_t stream) {
    for (int i = 0; i < ntensors; i++) {
        size_t o = tensors[i].offset;
        adamw_update(params + o, params_x != NULL ? params_x + o : NULL, m + o, v + o, grads + o, tensors[i].size,
                     tensors[i].wd, s, grad_scale, stream);
    }
}

#endif
