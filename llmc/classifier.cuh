/*
 * classifier.cuh: fused softmax + cross-entropy loss + its gradient, in place on the logits (llm.c's manner).
 *
 * Per row of the (BT, Vp) floatX logits, which the LM-head matmul wrote:
 *   pass 1: running max and running sum of exp over the V real columns (padded columns Vp - V are ignored),
 *           per thread, then combined over the block: lse = max + log(sum);  loss[row] = lse - logit[target]
 *   pass 2 (training only): logits[row, c] = (softmax_c - [c == target]) * dloss for c < V, 0 for padded columns,
 *           overwriting the logits in place, so no float (BT, Vp) buffer is ever materialized.
 * All math is fp32. dloss = 1 / (B * T * grad_accum_steps): the gradient of the mean loss over all tokens of the step.
 * A target outside [0, V) sets *error_flag = 1 (an int the host reads after the step), gets loss NaN and a zero
 * gradient row, rather than reading out of bounds. A target of -1 (TARGET_NO_LOSS, a masked position: doc/packing.md)
 * is not an error: loss 0 and a zero gradient row (the host leaves it out of the mean and scales the gradient by
 * 1/counted targets); rows with a real target compute exactly what they did before masks existed.
 *
 * Two kernels compute exactly this, with the same per-thread order of operations (thread t takes the 16-byte vectors
 * t, t + 512, ... of the row), so their losses and dlogits are bitwise equal (dev/cuda/classifier.cu checks it):
 * - classifier_resident_kernel (the default where two rows fit in shared memory: bf16 up to Vp ~ 58K): a persistent
 *   grid, one block an SM, each block walking rows gridDim.x apart. One thread asks the copy engine (cp.async.bulk,
 *   completion counted on an mbarrier) for the block's NEXT row into the second of two row buffers in shared memory,
 *   then the block computes the current row from the first: both passes read shared memory, so each row comes from
 *   DRAM exactly once, and a whole row (100 KB at Vp = 50288) is always in flight per SM while the block computes.
 *   Where only one row fits (fp32 at Vp = 50288), training takes the same kernel with one buffer (the next row
 *   requested after the current one is done; 1 block an SM). The copy engine is sm_90's (Hopper, Blackwell); on
 *   sm_80 / 86 / 89, and under MAMBA2_PORTABLE=1, classifier_resident_async_kernel does the same with every thread
 *   copying its own 16-byte pieces (cp.async) and a barrier before the row is read (gpu_path()->bulk_copy picks).
 * - classifier_kernel (the fallback, and the fp32 loss-only kernel at Vp = 50288): one block per row, both passes
 *   read global memory. Its second read of the ~100 KB row partly misses L2 (4 blocks an SM x 132 SMs hold ~53 MB of
 *   rows against a 50 MB L2).
 * H100, 130M shape (16384 rows of Vp = 50288, bf16): fwd+bwd 1.52 ms before (two passes) -> 1.23 ms (floor 1.10),
 * loss only 0.675 -> 0.566 (floor 0.549); dev/cuda/NOTES_kernels.md has the measurements.
 *
 * Launchers: classifier_forward_backward (training), classifier_loss_only (evaluation); classifier_launch_cfg picks
 * the kernel (dev/cuda uses it to run each). Requires Vp % 8 == 0 (16-byte rows); the launchers check.
 */
#ifndef MAMBA2_CLASSIFIER_CUH
#define MAMBA2_CLASSIFIER_CUH

#include <stdint.h>
#include "cuda_common.h"
#include "gpu_arch.cuh"
#include "utils.h"
#include "vec128.cuh"

#define CLASSIFIER_BLOCK 512

#define CLASSIFIER_LOG2E 1.4426950408889634f
#define CLASSIFIER_LN2 0.6931471805599453f

/* 2^x as the bare MUFU.EX2, denormal results flushed to 0. exp2f without fast math is ex2.approx.f32, which ptxas
 * wraps in extra instructions to keep results under 2^-126 (these kernels' code is 30-40% larger with it); those
 * are probabilities under 1e-38, which change neither the sum (>= 1) nor any gradient entry that matters. The
 * kernels do two of these per element. */
__device__ static inline float classifier_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* combine two (max, sum of 2^(x - max)) pairs; all in base 2 (x pre-multiplied by log2 e): exp2 is one MUFU.EX2
 * where expf is several instructions more, and pass 1 is instruction-bound in bf16 */
__device__ static inline void softmax_merge(float& m, float& s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    s = (m == -INFINITY ? 0.f : s * classifier_exp2(m - mn)) +
        (m2 == -INFINITY ? 0.f : s2 * classifier_exp2(m2 - mn));
    m = mn;
}

/* x * log2 e, rounded on its own (__fmul_rn is never fused into a later add): both kernels, and both passes, then
 * see the same value whatever the compiler contracts elsewhere, which keeps the two kernels bitwise equal */
__device__ static inline float classifier_scaled(floatX x) { return __fmul_rn(toF(x), CLASSIFIER_LOG2E); }

/* pass 1 for one 16-byte vector at column c: fold it into this thread's running (m, s). RAGGED: the vector may
 * cross V (only the last one of a row can); the full vectors skip the per-element column test. */
template <bool RAGGED>
__device__ static inline void classifier_accumulate(float& m, float& s, const Vec128<floatX>& x, int c, int V) {
    float vm = -INFINITY;
#pragma unroll
    for (int i = 0; i < XVEC; i++) if (!RAGGED || c + i < V) vm = fmaxf(vm, classifier_scaled(x.v[i]));
    float nm = fmaxf(m, vm);
    float vs = 0.f;
#pragma unroll
    for (int i = 0; i < XVEC; i++) if (!RAGGED || c + i < V) vs += classifier_exp2(classifier_scaled(x.v[i]) - nm);
    s = (m == -INFINITY ? 0.f : s * classifier_exp2(m - nm)) + vs;
    m = nm;
}

/* pass 2 for one 16-byte vector at column c: (softmax - onehot) * dloss for real columns of a valid row, else 0 */
template <bool RAGGED>
__device__ static inline Vec128<floatX> classifier_grad(const Vec128<floatX>& x, int c, int V, int target, int valid,
                                                        float lse2, float dloss) {
    Vec128<floatX> g;
#pragma unroll
    for (int i = 0; i < XVEC; i++) {
        int col = c + i;
        float p = classifier_exp2(classifier_scaled(x.v[i]) - lse2);
        float gi = (p - (col == target ? 1.f : 0.f)) * dloss;
        g.v[i] = fromF((!RAGGED || col < V) && valid ? gi : 0.f);
    }
    return g;
}

/* combine the threads' (m, s) over the warp, then over the warps, in a fixed order (deterministic); returns the
 * row's log-sum-exp in base 2 to every thread. Ends with a barrier after sh_m/sh_s are written; the caller must
 * put a barrier between this and its next call (the next row) so no warp overwrites them while others read. */
__device__ static inline float classifier_block_lse2(float m, float s, float* sh_m, float* sh_s) {
    for (int off = 16; off > 0; off >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, off), s2 = __shfl_xor_sync(0xffffffffu, s, off);
        softmax_merge(m, s, m2, s2);
    }
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, nwarps = blockDim.x / WARP_SIZE;
    if (lane == 0) { sh_m[warp] = m; sh_s[warp] = s; }
    __syncthreads();
    m = sh_m[0]; s = sh_s[0];
    for (int w = 1; w < nwarps; w++) softmax_merge(m, s, sh_m[w], sh_s[w]);
    return m + log2f(s);
}

#define CLASSIFIER_NO_LOSS (-1) /* = TARGET_NO_LOSS of llmc/dataloader.h: a masked target */

/* thread 0 writes the row's loss (0 for a masked target; NaN and the error flag for a target outside [0, V)) */
__device__ static inline void classifier_write_loss(float* losses, int* error_flag, int row, int target, int valid,
                                                    float lse2, float target_logit) {
    if (threadIdx.x != 0) return;
    if (valid) {
        losses[row] = lse2 * CLASSIFIER_LN2 - target_logit;
    } else if (target == CLASSIFIER_NO_LOSS) {
        losses[row] = 0.f;
    } else {
        losses[row] = NAN;
        atomicExch(error_flag, 1);   /* an int flag, no float sum: order does not matter */
    }
}

/* one row: pass 1 (max and sum of exponentials) over src, the loss, then pass 2 writes the gradient to dst. src is the
 * row itself in global memory (STREAM: its last read, not kept in cache) or a copy in shared memory; dst may be
 * the row itself (pass 2 reads each vector before it writes it back). */
template <bool STREAM>
__device__ static inline void classifier_row(floatX* dst, const floatX* src, float* losses, int* error_flag, int row,
                                             int target, float dloss, int V, int Vp, int write_grad, float* sh_m,
                                             float* sh_s) {
    int valid = target >= 0 && target < V;
    float target_logit = valid ? toF(src[target]) : 0.f;   /* read before pass 2 overwrites the row */
    float m = -INFINITY, s = 0.f;
    for (int c = threadIdx.x * XVEC; c < V; c += blockDim.x * XVEC) {
        Vec128<floatX> x = load128(src + c);
        if (c + XVEC <= V) classifier_accumulate<false>(m, s, x, c, V);
        else classifier_accumulate<true>(m, s, x, c, V);
    }
    float lse2 = classifier_block_lse2(m, s, sh_m, sh_s);
    classifier_write_loss(losses, error_flag, row, target, valid, lse2, target_logit);
    if (!write_grad) return;
    for (int c = threadIdx.x * XVEC; c < Vp; c += blockDim.x * XVEC) {
        Vec128<floatX> x = STREAM ? load128cs(src + c) : load128(src + c);
        Vec128<floatX> g = c + XVEC <= V ? classifier_grad<false>(x, c, V, target, valid, lse2, dloss)
                                         : classifier_grad<true>(x, c, V, target, valid, lse2, dloss);
        store128cs(dst + c, g);   /* written once, read by the next kernel: do not keep it in L1 */
    }
}

/* ---- the fallback: one block per row, both passes from global memory ---- */
__global__ static void __launch_bounds__(CLASSIFIER_BLOCK)
classifier_kernel(floatX* logits, float* losses, int* error_flag, const int* targets, float dloss, int V, int Vp,
                  int write_grad) {
    __shared__ float sh_m[CLASSIFIER_BLOCK / WARP_SIZE], sh_s[CLASSIFIER_BLOCK / WARP_SIZE];
    int row = blockIdx.x;
    floatX* lr = logits + (size_t)row * Vp;
    classifier_row<true>(lr, lr, losses, error_flag, row, targets[row], dloss, V, Vp, write_grad, sh_m, sh_s);
}

/* ---- the default: persistent blocks, rows through shared memory by the copy engine, read from DRAM once ---- */

__device__ static inline uint32_t classifier_smem_addr(const void* p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* one expected arrival (the thread that starts each copy); the init made visible to the copy engine */
__device__ static inline void classifier_mbar_init(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(classifier_smem_addr(bar)) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

/* start copying `bytes` (a multiple of 16, both addresses 16-byte aligned) global -> shared; the mbarrier's current
 * phase completes when they have all landed. Pieces of at most 32 KB: several copies in flight, none near any limit
 * of one bulk copy; one arrival expects the total. */
__device__ static inline void classifier_row_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint32_t b = classifier_smem_addr(bar), d = classifier_smem_addr(dst);
    uint64_t g = (uint64_t)__cvta_generic_to_global(src);
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(b), "r"(bytes) : "memory");
    for (uint32_t off = 0; off < bytes; off += 32768u) {
        uint32_t n = bytes - off < 32768u ? bytes - off : 32768u;
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                     ::"r"(d + off), "l"(g + off), "r"(n), "r"(b) : "memory");
    }
#endif
}

/* wait until the mbarrier's phase with this parity has completed (that row's bytes have landed) */
__device__ static inline void classifier_mbar_wait(uint64_t* bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint32_t done = 0, b = classifier_smem_addr(bar);
    while (!done)
        asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                     " selp.u32 %0, 1, 0, p;\n}"
                     : "=r"(done) : "r"(b), "r"(parity) : "memory");
#endif
}

/*
 * NBUF = 2 (default): the block's next row is requested before the current one is computed, into the other buffer,
 * which the barrier that ends the previous row has freed. Buffer b is used by the block's rows k = b, b + 2, ...;
 * its j-th use (j = k / 2) completes mbarrier phase j, so the wait is on parity j & 1.
 * NBUF = 1 (measured alternative): one buffer, the next row requested after the current one is done; overlap then
 * comes only from the other blocks on the SM (two fit at Vp = 50288 in bf16).
 * Dynamic shared memory: NBUF rows of Vp floatX. THREADS: CLASSIFIER_BLOCK (512) gives the two-pass kernel's
 * per-thread order, hence its bits; dev/cuda also times 1024.
 */
template <int NBUF, int THREADS = CLASSIFIER_BLOCK>
__global__ static void __launch_bounds__(THREADS, 1)
classifier_resident_kernel(floatX* logits, float* losses, int* error_flag, const int* targets, float dloss, int BT,
                           int V, int Vp, int write_grad) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ __align__(16) unsigned char classifier_smem[];
    __shared__ float sh_m[THREADS / WARP_SIZE], sh_s[THREADS / WARP_SIZE];
    __shared__ uint64_t bars[NBUF];
    floatX* rows = (floatX*)classifier_smem;
    uint32_t row_bytes = (uint32_t)Vp * sizeof(floatX);
    if (threadIdx.x == 0) {
        for (int b = 0; b < NBUF; b++) classifier_mbar_init(&bars[b]);
        classifier_row_load(rows, logits + (size_t)blockIdx.x * Vp, row_bytes, &bars[0]);   /* grid <= BT */
    }
    __syncthreads();   /* the barriers' init before anyone waits on them */
    int k = 0;
    for (int row = blockIdx.x; row < BT; row += gridDim.x, k++) {
        int b = NBUF == 2 ? (k & 1) : 0;
        uint32_t parity = NBUF == 2 ? (uint32_t)(k >> 1) & 1u : (uint32_t)k & 1u;
        int next = row + gridDim.x;
        if (NBUF == 2 && threadIdx.x == 0 && next < BT)
            classifier_row_load(rows + (size_t)(b ^ 1) * Vp, logits + (size_t)next * Vp, row_bytes, &bars[b ^ 1]);
        const floatX* xs = rows + (size_t)b * Vp;
        int target = targets[row];
        classifier_mbar_wait(&bars[b], parity);
        classifier_row<false>(logits + (size_t)row * Vp, xs, losses, error_flag, row, target, dloss, V, Vp, write_grad,
                              sh_m, sh_s);
        __syncthreads();   /* buffer b and sh_m/sh_s are free: the next requests may overwrite them */
        if (NBUF == 1 && threadIdx.x == 0 && next < BT)
            classifier_row_load(rows, logits + (size_t)next * Vp, row_bytes, &bars[0]);
    }
#endif  /* below sm_90 an empty body, never launched: gpu_path()->bulk_copy is 0 there (classifier_resident_launch) */
}

/* ---- the same without the copy engine (sm_80 / 86 / 89, MAMBA2_PORTABLE=1): cp.async by every thread ---- */

/* start copying a row of nvec 16-byte pieces global -> shared, piece i by thread i % THREADS (cp.async.cg: L2 only),
 * then close the thread's commit group (empty when there is no row: a group is still counted) */
template <int THREADS>
__device__ static inline void classifier_row_load_async(floatX* dst, const floatX* src, int nvec) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint32_t d = classifier_smem_addr(dst);
    const char* s = (const char*)src;
    if (src != NULL)
        for (int i = threadIdx.x; i < nvec; i += THREADS)
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d + 16u * (uint32_t)i),
                         "l"(s + 16 * (size_t)i) : "memory");
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
/* wait until at most `pending` of this thread's newest commit groups are still in flight */
template <int PENDING>
__device__ static inline void classifier_async_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(PENDING) : "memory");
#endif
}

/* classifier_resident_kernel's rows and order of work with cp.async: with two buffers the next row's pieces are
 * requested before the current row's are waited for (wait_group 1: all but the newest group), then a barrier makes
 * every thread's pieces visible to all (classifier_row reads the target's logit and pieces other threads copied).
 * The computation from shared memory is classifier_resident_kernel's: the same bits. */
template <int NBUF, int THREADS = CLASSIFIER_BLOCK>
__global__ static void __launch_bounds__(THREADS, 1)
classifier_resident_async_kernel(floatX* logits, float* losses, int* error_flag, const int* targets, float dloss,
                                 int BT, int V, int Vp, int write_grad) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    extern __shared__ __align__(16) unsigned char classifier_smem[];
    __shared__ float sh_m[THREADS / WARP_SIZE], sh_s[THREADS / WARP_SIZE];
    floatX* rows = (floatX*)classifier_smem;
    int nvec = Vp * (int)sizeof(floatX) / 16;
    classifier_row_load_async<THREADS>(rows, logits + (size_t)blockIdx.x * Vp, nvec);   /* grid <= BT */
    int k = 0;
    for (int row = blockIdx.x; row < BT; row += gridDim.x, k++) {
        int b = NBUF == 2 ? (k & 1) : 0;
        int next = row + gridDim.x;
        if (NBUF == 2) {
            classifier_row_load_async<THREADS>(rows + (size_t)(b ^ 1) * Vp,
                                               next < BT ? logits + (size_t)next * Vp : NULL, nvec);
            classifier_async_wait<1>();
        } else {
            classifier_async_wait<0>();
        }
        __syncthreads();   /* every thread's pieces of this row have landed */
        const floatX* xs = rows + (size_t)b * Vp;
        classifier_row<false>(logits + (size_t)row * Vp, xs, losses, error_flag, row, targets[row], dloss, V, Vp,
                              write_grad, sh_m, sh_s);
        __syncthreads();   /* buffer b and sh_m/sh_s are free: the next requests may overwrite them */
        if (NBUF == 1 && next < BT) classifier_row_load_async<THREADS>(rows, logits + (size_t)next * Vp, nvec);
    }
#endif  /* below sm_80 an empty body, never launched: classifier_resident_fits is 0 there */
}

/* the kernel variants, for dev/cuda. AUTO: the resident kernel with two buffers where two rows fit in shared memory
 * (bf16 up to Vp ~ 58K); else, when training, with one buffer where one row fits (fp32 at Vp = 50288: 2.47 ms
 * against the two-pass kernel's 3.43 on the H100), and for the loss alone the two-pass kernel (one read of the row
 * already: 1.11 ms against 1.22) */
enum { CLASSIFIER_AUTO = 0, CLASSIFIER_TWO_PASS = 1, CLASSIFIER_RESIDENT1 = 2 };

static void classifier_check(const char* who, int V, int Vp) {
    if (Vp % 8 != 0) die("%s: padded vocab Vp = %d must be a multiple of 8 (16-byte rows)", who, Vp);
    if (V < 1 || V > Vp) die("%s: vocab V = %d must be in [1, Vp = %d]", who, V, Vp);
}

/* does the resident kernel with nbuf row buffers take rows of Vp? Its static shared memory is 144 bytes at 512
 * threads, 272 at 1024: 1 KB of margin covers both */
static int classifier_resident_fits(int Vp, int nbuf) {
    return gpu_path()->code_arch >= 80 && (size_t)nbuf * Vp * sizeof(floatX) + 1024 <= (size_t)cuda_smem_optin();
}

template <int NBUF, int THREADS = CLASSIFIER_BLOCK>
static void classifier_resident_launch(floatX* logits, float* losses, int* error_flag, const int* targets, float dloss,
                                       int BT, int V, int Vp, int write_grad, int ctas, cudaStream_t stream) {
    /* the copy engine's kernel where the device and the code have it (gpu_path(): fixed for the process), else
       cp.async's */
    void (*kernel)(floatX*, float*, int*, const int*, float, int, int, int, int) =
        gpu_path()->bulk_copy ? classifier_resident_kernel<NBUF, THREADS> : classifier_resident_async_kernel<NBUF, THREADS>;
    static size_t allowed = 0;   /* the dynamic shared-memory limit set so far for this kernel */
    size_t smem = (size_t)NBUF * Vp * sizeof(floatX);
    if (smem > allowed) {
        cuda_set_smem((const void*)kernel, smem, "classifier");
        allowed = smem;
    }
    static size_t per_sm_smem = 0;   /* the occupancy below, queried once per shared-memory size (rows of Vp) */
    static int per_sm = 0;
    if (ctas <= 0) {   /* every block that fits at once, no more: the grid is persistent */
        if (per_sm_smem != smem) {
            cudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, THREADS, smem));
            per_sm_smem = smem;
        }
        ctas = cuda_num_sms() * (per_sm > 0 ? per_sm : 1);
    }
    if (ctas > BT) ctas = BT;
    kernel<<<ctas, THREADS, smem, stream>>>(logits, losses, error_flag, targets, dloss, BT, V, Vp, write_grad);
    cudaCheckLast();
}

/* variant: CLASSIFIER_AUTO (the rule above the enum), _TWO_PASS or _RESIDENT1 (the two-pass kernel where one row
 * does not fit); ctas: the resident kernel's grid, 0 = as many blocks as fit at once (dev/cuda passes a few to make
 * each block walk many rows) */
static void classifier_launch_cfg(floatX* logits, float* losses, int* error_flag, const int* targets, float dloss,
                                  int BT, int V, int Vp, int write_grad, int variant, int ctas, cudaStream_t stream) {
    if (BT <= 0) return;
    if (variant == CLASSIFIER_AUTO && classifier_resident_fits(Vp, 2)) {
        classifier_resident_launch<2>(logits, losses, error_flag, targets, dloss, BT, V, Vp, write_grad, ctas, stream);
    } else if ((variant == CLASSIFIER_RESIDENT1 || (variant == CLASSIFIER_AUTO && write_grad)) &&
               classifier_resident_fits(Vp, 1)) {
        classifier_resident_launch<1>(logits, losses, error_flag, targets, dloss, BT, V, Vp, write_grad, ctas, stream);
    } else {
        classifier_kernel<<<BT, CLASSIFIER_BLOCK, 0, stream>>>(logits, losses, error_flag, targets, dloss, V, Vp,
                                                              write_grad);
        cudaCheckLast();
    }
}

/* training: losses (BT) float; logits (BT, Vp) floatX overwritten by dlogits; targets device ints;
 * error_flag device int, set to 1 on a target outside [0, V) (clear it before the step, read it after) */
static void classifier_forward_backward(floatX* logits, float* losses, int* error_flag, const int* targets,
                                        float dloss, int BT, int V, int Vp, cudaStream_t stream) {
    classifier_check("classifier_forward_backward", V, Vp);
    classifier_launch_cfg(logits, losses, error_flag, targets, dloss, BT, V, Vp, 1, CLASSIFIER_AUTO, 0, stream);
}

/* evaluation: losses only, the logits are left as they are */
static void classifier_loss_only(floatX* logits, float* losses, int* error_flag, const int* targets, int BT, int V,
                                 int Vp, cudaStream_t stream) {
    classifier_check("classifier_loss_only", V, Vp);
    classifier_launch_cfg(logits, losses, error_flag, targets, 0.f, BT, V, Vp, 0, CLASSIFIER_AUTO, 0, stream);
}

/* ---- the argmax of each row over the V real columns (evaluation's accuracy), ties to the lowest id ---- */

/* (value, column) pairs: the larger value wins, a tie the lower column; NaN never wins (a row of NaNs gives -1) */
__device__ static inline void classifier_argmax_merge(float& v, int& i, float v2, int i2) {
    if (i2 >= 0 && (i < 0 || v2 > v || (v2 == v && i2 < i))) { v = v2; i = i2; }
}

/* one block per row: each thread scans its columns in increasing order (strictly greater replaces, so its first
 * maximum stays), then the block merges in a fixed order */
__global__ static void __launch_bounds__(256) classifier_argmax_kernel(int* argmax, const floatX* logits, int V,
                                                                       int Vp) {
    __shared__ float sh_v[256 / WARP_SIZE];
    __shared__ int sh_i[256 / WARP_SIZE];
    const floatX* row = logits + (size_t)blockIdx.x * Vp;
    float v = -INFINITY;
    int idx = -1;
    for (int c = threadIdx.x; c < V; c += blockDim.x) {
        float x = toF(row[c]);
        if (x == x && (idx < 0 || x > v)) { v = x; idx = c; }
    }
    for (int off = 16; off > 0; off >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, v, off);
        int i2 = __shfl_xor_sync(0xffffffffu, idx, off);
        classifier_argmax_merge(v, idx, v2, i2);
    }
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    if (lane == 0) { sh_v[warp] = v; sh_i[warp] = idx; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x / WARP_SIZE); w++) classifier_argmax_merge(v, idx, sh_v[w], sh_i[w]);
        argmax[blockIdx.x] = idx;
    }
}

/* argmax (rows) device ints: each row's argmax over the first V of its Vp logits */
static inline void classifier_argmax(int* argmax, const floatX* logits, int rows, int V, int Vp, cudaStream_t stream) {
    if (rows <= 0) return;
    classifier_argmax_kernel<<<rows, 256, 0, stream>>>(argmax, logits, V, Vp);
    cudaCheckLast();
}

#endif
