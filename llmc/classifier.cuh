/*
 * classifier.cuh: fused softmax + cross-entropy loss + its gradient, in place on the logits (llm.c's manner).
 *
 * Per row (one block per row of the (BT, Vp) floatX logits, which the LM-head matmul wrote):
 *   pass 1: running max and running sum of exp over the V real columns (padded columns Vp - V are ignored),
 *           per thread, then combined over the block: lse = max + log(sum);  loss[row] = lse - logit[target]
 *   pass 2 (training only): logits[row, c] = (softmax_c - [c == target]) * dloss for c < V, 0 for padded columns,
 *           overwriting the logits in place, so no float (BT, Vp) buffer is ever materialized.
 * The logits row is read twice (the second read mostly hits L2) and written once; all math is fp32.
 * dloss = 1 / (B * T * grad_accum_steps): the gradient of the mean loss over all tokens of the step.
 * A target outside [0, V) sets *error_flag = 1 (an int the host reads after the step), gets loss NaN and a zero
 * gradient row, rather than reading out of bounds.
 *
 * Kernel: classifier_kernel. Launchers: classifier_forward_backward (training), classifier_loss_only (evaluation).
 * Requires Vp % 8 == 0 (16-byte rows); the launchers check.
 */
#ifndef MAMBA2_CLASSIFIER_CUH
#define MAMBA2_CLASSIFIER_CUH

#include "cuda_common.h"
#include "utils.h"
#include "vec128.cuh"

#define CLASSIFIER_BLOCK 512

#define CLASSIFIER_LOG2E 1.4426950408889634f
#define CLASSIFIER_LN2 0.6931471805599453f

/* combine two (max, sum of 2^(x - max)) pairs; all in base 2 (x pre-multiplied by log2 e): exp2f is one MUFU.EX2
 * where expf is several instructions more, and pass 1 is instruction-bound in bf16 */
__device__ static inline void softmax_merge(float& m, float& s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    s = (m == -INFINITY ? 0.f : s * exp2f(m - mn)) + (m2 == -INFINITY ? 0.f : s2 * exp2f(m2 - mn));
    m = mn;
}

__global__ static void __launch_bounds__(CLASSIFIER_BLOCK)
classifier_kernel(floatX* logits, float* losses, int* error_flag, const int* targets, float dloss, int V, int Vp,
                  int write_grad) {
    __shared__ float sh_m[CLASSIFIER_BLOCK / WARP_SIZE], sh_s[CLASSIFIER_BLOCK / WARP_SIZE];
    int row = blockIdx.x;
    floatX* lr = logits + (size_t)row * Vp;
    int target = targets[row];
    int valid = target >= 0 && target < V;
    float target_logit = valid ? toF(lr[target]) : 0.f;   /* read before pass 2 overwrites the row */
    /* pass 1: this thread's running max and sum over its 16-byte vectors */
    float m = -INFINITY, s = 0.f;
    for (int c = threadIdx.x * XVEC; c < V; c += blockDim.x * XVEC) {
        Vec128<floatX> x = load128(lr + c);
        float vm = -INFINITY;
        for (int i = 0; i < XVEC; i++) if (c + i < V) vm = fmaxf(vm, toF(x.v[i]) * CLASSIFIER_LOG2E);
        float nm = fmaxf(m, vm);
        float vs = 0.f;
        for (int i = 0; i < XVEC; i++) if (c + i < V) vs += exp2f(toF(x.v[i]) * CLASSIFIER_LOG2E - nm);
        s = (m == -INFINITY ? 0.f : s * exp2f(m - nm)) + vs;
        m = nm;
    }
    /* combine over the warp, then over the warps (fixed shuffle/loop order: deterministic) */
    for (int off = 16; off > 0; off >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, off), s2 = __shfl_xor_sync(0xffffffffu, s, off);
        softmax_merge(m, s, m2, s2);
    }
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, nwarps = blockDim.x / WARP_SIZE;
    if (lane == 0) { sh_m[warp] = m; sh_s[warp] = s; }
    __syncthreads();
    m = sh_m[0]; s = sh_s[0];
    for (int w = 1; w < nwarps; w++) softmax_merge(m, s, sh_m[w], sh_s[w]);
    float lse2 = m + log2f(s);   /* log-sum-exp in base 2 */
    if (threadIdx.x == 0) {
        if (valid) {
            losses[row] = lse2 * CLASSIFIER_LN2 - target_logit;
        } else {
            losses[row] = NAN;
            atomicExch(error_flag, 1);   /* an int flag, no float sum: order does not matter */
        }
    }
    if (!write_grad) return;
    /* pass 2: the gradient, in place; padded columns get 0 */
    for (int c = threadIdx.x * XVEC; c < Vp; c += blockDim.x * XVEC) {
        Vec128<floatX> x = load128cs(lr + c);   /* last use of the logits: do not keep them in cache */
        Vec128<floatX> g;
        for (int i = 0; i < XVEC; i++) {
            int col = c + i;
            float p = exp2f(toF(x.v[i]) * CLASSIFIER_LOG2E - lse2);
            float gi = (p - (col == target ? 1.f : 0.f)) * dloss;
            g.v[i] = fromF(col < V && valid ? gi : 0.f);
        }
        store128cs(lr + c, g);
    }
}

static void classifier_check(const char* who, int V, int Vp) {
    if (Vp % 8 != 0) die("%s: padded vocab Vp = %d must be a multiple of 8 (16-byte rows)", who, Vp);
    if (V < 1 || V > Vp) die("%s: vocab V = %d must be in [1, Vp = %d]", who, V, Vp);
}

/* training: losses (BT) float; logits (BT, Vp) floatX overwritten by dlogits; targets device ints;
 * error_flag device int, set to 1 on a target outside [0, V) (clear it before the step, read it after) */
static void classifier_forward_backward(floatX* logits, float* losses, int* error_flag, const int* targets,
                                        float dloss, int BT, int V, int Vp, cudaStream_t stream) {
    classifier_check("classifier_forward_backward", V, Vp);
    classifier_kernel<<<BT, CLASSIFIER_BLOCK, 0, stream>>>(logits, losses, error_flag, targets, dloss, V, Vp, 1);
    cudaCheckLast();
}

/* evaluation: losses only, the logits are left as they are */
static void classifier_loss_only(floatX* logits, float* losses, int* error_flag, const int* targets, int BT, int V,
                                 int Vp, cudaStream_t stream) {
    classifier_check("classifier_loss_only", V, Vp);
    classifier_kernel<<<BT, CLASSIFIER_BLOCK, 0, stream>>>(logits, losses, error_flag, targets, 0.f, V, Vp, 0);
    cudaCheckLast();
}

#endif
