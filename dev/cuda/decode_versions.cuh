/*
 * decode_versions.cuh: every decode-step version and knob of llmc/generate.cuh as it was at commit 6b385b7, moved
 * here UNCHANGED (in namespace decode_lab, so the names do not collide with llmc/decode.cuh's) when llmc/ kept only
 * the default path (llmc/decode.cuh, llmc/decoder.cuh). dev/cuda/decode.cu runs and checks them; the versions and
 * their measurements are in dev/cuda/NOTES_decode.md, with a table from the llmc/ names to these.
 *
 * The knobs (mutable, set by dev/cuda/decode.cu's flags): g_gen_pdl (-L), g_gen_carveout (-C), g_gen_state_v (-U:
 * 2 conv_ssd_step_kernel, 4/5 gen_state_step_kernel, the bulk-copy state step), g_gen_argmax_split, g_gen_mma (-M),
 * g_gen_version (-V: 2, or 3 the persistent step gen_persist_step_kernel), g_gen_p_blocks (-W), g_gen_coop. With
 * every knob at its default this is the llmc/ path, kernel for kernel: dev/cuda/decode.cu checks that bitwise.
 */
#ifndef MAMBA2_DEV_DECODE_VERSIONS_CUH
#define MAMBA2_DEV_DECODE_VERSIONS_CUH

#include "llmc/cuda_common.h"
#include "llmc/vec128.cuh"
#include "llmc/model.cuh"

namespace decode_lab {

/* ================================================================================================================
 * The decode step in few launches (generate_mamba2.cu). One new token for each of S sequences.
 *
 * Every sequence's row is computed by the same threads in the same order whatever S is, so a sequence decoded in a
 * batch gets bitwise the logits it gets alone (the small-S path; the large-S path uses cuBLASLt, whose algorithm
 * may change with S).
 *
 *   conv_ssd_step_kernel      conv1d step + SiLU, dt = softplus(dt_raw + dt_bias), the SSM state update and
 *                             y = h C + D x, one block per (sequence, head, block_rows state rows). The state is float
 *                             or floatX (St); each thread owns one 16-byte vector of N per row, for up to
 *                             GEN_SSD_RPT rows, all loaded before any arithmetic (the large-S step is bound by the
 *                             state's bytes). The conv window is double-buffered (read win_in, write win_out)
 *                             because the B and C channels of a group are read by all the group's heads while one of
 *                             them writes the shifted window.
 *   rmsnorm_matvec_kernel     S <= GEN_SMALL_S: out = RMSNorm(x) W^T (in_proj, and the LM head with the final norm,
 *                             which also leaves each block's greedy pick per sequence for argmax_partials_kernel);
 *                             one warp per output row, the block normalizes the S rows into shared memory.
 *   gated_matvec_kernel       S <= GEN_SMALL_S: x += RMSNorm_g(y * SiLU(z)) W_out^T: the gated norm, out_proj and
 *                             the residual add in one launch (each output element is owned by one warp).
 *   decode_embed_kernel       x = wte[tokens]; counts the steps on the device (so a replayed graph knows its step).
 *   argmax_kernel, argmax_partials_kernel   the greedy pick per sequence (lowest id on ties), written to the token
 *                             input of the next step and to the token history at the current step.
 *
 * Launch overlap (programmatic dependent launch, sm_90): batch 1 reads 257 MB of weights a step in ~100 small
 * kernels, so a kernel's launch and its first loads, not bandwidth, set the time. Each kernel lets the next one start
 * at once (griddepcontrol.launch_dependents); the next one loads what does not depend on its predecessor (its weight
 * rows, parameters) into registers, then waits for the predecessor to finish (griddepcontrol.wait) before it reads
 * activations or writes anything. Nothing is written before the wait, so a kernel never races the one before it;
 * the state, written by the previous step, is read only after the wait too.
 * Rounding follows the parallel forward: values the forward stores as floatX (xbc, u, gn, delta) are rounded to
 * floatX here too.
 * ================================================================================================================ */


#define GEN_SMALL_S 8      /* the fused matvec path handles up to this many sequences; more go through cuBLASLt */
#define GEN_THREADS 256
#define GEN_SSD_RPT 4      /* conv_ssd_step: state rows per thread, at most (16 x 16-byte loads in flight) */

/* state rows (p) per block: 16 for a few sequences, so that batch 1 fills the GPU; all P for many sequences, where
 * recomputing the group's B/C conv in every block costs more than it gains (H100, 130M: batch 64 2.04 ms/step with 16,
 * 1.71 with P) */
#define GEN_SSD_ROWS 16

/* ---- programmatic dependent launch ---- */

/* wait until the kernel before this one in the stream has finished and its writes are visible (a no-op when this
 * launch did not ask for overlap) */
__device__ static inline void gen_wait_prior(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
/* let the next kernel in the stream start launching now (it still waits for this one before reading its outputs) */
__device__ static inline void gen_allow_next(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__global__ static void gen_pdl_probe_kernel(void) { gen_wait_prior(); }

static int g_gen_pdl = 1; /* generate_mamba2cu -L 0 turns the overlap off (for timing, or a driver without it) */
/* generate_mamba2cu -C: the shared-memory carveout asked for: -1 the driver's choice everywhere, -2 100% for the v4
 * state kernel alone, 0..100 that percentage for every decode kernel (an SM whose kernels ask for different
 * carveouts must drain before it reconfigures, which can undo the launch overlap) */
static int g_gen_carveout = -1;

/* the overlap needs an sm_90 GPU and kernels compiled for it (else the waits would be missing from the code) */
static int gen_pdl_on(void) {
    static int capable = -1;
    if (capable < 0) {
        int dev, major;
        cudaFuncAttributes fa;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        cudaCheck(cudaFuncGetAttributes(&fa, (const void*)gen_pdl_probe_kernel));
        capable = major >= 9 && fa.binaryVersion >= 90;
    }
    return capable && g_gen_pdl;
}

/* kernel<<<grid, block, smem, stream>>>(args...), allowed to start while the previous kernel in the stream runs */
template <typename... Exp, typename... Act>
static void gen_launch(void (*kernel)(Exp...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                       Act... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = gen_pdl_on() ? 1 : 0;
    if (g_gen_carveout >= 0)
        cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, g_gen_carveout));
    cudaCheck(cudaLaunchKernelEx(&cfg, kernel, args...));
    cudaCheckLast();
}

/* ---- conv + SSD step ---- */

__device__ static inline void st_set(float& d, float v) { d = v; }
#if !defined(ENABLE_FP32)
__device__ static inline void st_set(__nv_bfloat16& d, float v) { d = __float2bfloat16(v); }
#endif

template <typename St>
__global__ static void __launch_bounds__(GEN_THREADS, 3)
conv_ssd_step_kernel(floatX* y, St* state, float* win_out, const float* win_in, const floatX* zxbcdt, int zx_stride,
                     const floatX* xbc, const float* conv_w, const float* conv_b, const float* dt_bias,
                     const float* A_log, const float* Dskip, int H, int P, int N, int G, int K, int block_rows,
                     int tpr) {
    constexpr int EPV = 16 / sizeof(St); /* state elements per 16-byte vector */
    extern __shared__ float sm[];        /* x (rows) | B (N) | C (N): the conv outputs this block needs */
    gen_allow_next();
    int s = blockIdx.x / H, h = blockIdx.x % H, heads_per_group = H / G, g = h / heads_per_group;
    int p0 = blockIdx.y * block_rows, rows = P - p0 < block_rows ? P - p0 : block_rows;
    int E = H * P, Cd = E + 2 * G * N, K1 = K - 1;
    float dtb = dt_bias[h], A = -expf(A_log[h]), Dh = Dskip[h]; /* parameters: before the wait */
    gen_wait_prior();
    /* this thread's state vectors first, so their loads are in flight during the conv */
    int sub = threadIdx.x % tpr, rgrp = threadIdx.x / tpr, rstride = blockDim.x / tpr, n0 = sub * EPV;
    int nvalid = n0 < N, rpt = CEIL_DIV(rows, rstride);
    St* st = state + (((size_t)s * H + h) * P + p0) * N;
    Vec128<St> sv[GEN_SSD_RPT];
#pragma unroll
    for (int k = 0; k < GEN_SSD_RPT; k++) {
        int r = rgrp + k * rstride;
        if (r < rows && nvalid) sv[k] = load128cs(st + (size_t)r * N + n0);
    }
    const floatX* row = zxbcdt + (size_t)s * zx_stride;
    const floatX* xin = row + E;
    const float* wi = win_in + (size_t)s * (K1 > 0 ? K1 : 1) * Cd;
    float* wo = win_out + (size_t)s * (K1 > 0 ? K1 : 1) * Cd;
    /* the first block of the group's first head shifts the B, C windows; each block its own x rows */
    int owns_group = (h % heads_per_group) == 0 && blockIdx.y == 0;
    for (int i = threadIdx.x; i < rows + 2 * N; i += blockDim.x) {
        int ch = i < rows ? h * P + p0 + i
                          : (i < rows + N ? E + g * N + (i - rows) : E + G * N + g * N + (i - rows - N));
        if (xbc != NULL) { /* the conv ran in gen_conv_step_kernel */
            sm[i] = toF(xbc[(size_t)s * Cd + ch]);
            continue;
        }
        float in = toF(xin[ch]);
        float acc = conv_b[ch];
        for (int k = 0; k < K1; k++) acc += conv_w[ch * K + k] * wi[(size_t)k * Cd + ch];
        acc += conv_w[ch * K + K1] * in;
        sm[i] = toF(fromF(acc / (1.f + expf(-acc)))); /* the forward stores xbc as floatX */
        if (i < rows || owns_group) {
            for (int k = 0; k + 1 < K1; k++) wo[(size_t)k * Cd + ch] = wi[(size_t)(k + 1) * Cd + ch];
            if (K1 > 0) wo[(size_t)(K1 - 1) * Cd + ch] = in;
        }
    }
    __syncthreads();
    float u = toF(row[E + Cd + h]) + dtb;
    float dt = u > 20.f ? u : log1pf(expf(u));
    float a = expf(dt * A);
    const float* Bs = sm + rows;
    const float* Cs = sm + rows + N;
#pragma unroll
    for (int k = 0; k < GEN_SSD_RPT; k++) {
        if (k >= rpt) break; /* the same for the whole block: the shuffles below stay converged */
        int r = rgrp + k * rstride;
        float acc = 0.f, xp = r < rows ? sm[r] : 0.f;
        if (r < rows && nvalid) {
            float dtx = dt * xp;
            Vec128<St> out;
#pragma unroll
            for (int j = 0; j < EPV; j++) {
                float v = a * toF(sv[k].v[j]) + dtx * Bs[n0 + j];
                st_set(out.v[j], v);
                acc += v * Cs[n0 + j];
            }
            store128cs(st + (size_t)r * N + n0, out);
        }
        /* the row's tpr threads are adjacent lanes of one warp: a fixed-order butterfly */
        for (int off = tpr / 2; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (sub == 0 && r < rows) y[(size_t)s * E + h * P + p0 + r] = fromF(acc + Dh * xp);
    }
}

/* xbc (S, conv_dim) floatX = SiLU(conv1d step), one thread per (sequence, channel); the window shifts by one */
__global__ static void gen_conv_step_kernel(floatX* xbc, float* win_out, const float* win_in, const floatX* zxbcdt,
                                            int zx_stride, const float* conv_w, const float* conv_b, int S, int Cd,
                                            int K) {
    gen_allow_next();
    gen_wait_prior();
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= S * Cd) return;
    int s = idx / Cd, ch = idx % Cd, K1 = K - 1;
    const float* wi = win_in + (size_t)s * (K1 > 0 ? K1 : 1) * Cd;
    float* wo = win_out + (size_t)s * (K1 > 0 ? K1 : 1) * Cd;
    float in = toF(zxbcdt[(size_t)s * zx_stride + ch]); /* zxbcdt points at the xBC columns */
    float acc = conv_b[ch];
    for (int k = 0; k < K1; k++) acc += conv_w[ch * K + k] * wi[(size_t)k * Cd + ch];
    acc += conv_w[ch * K + K1] * in;
    for (int k = 0; k + 1 < K1; k++) wo[(size_t)k * Cd + ch] = wi[(size_t)(k + 1) * Cd + ch];
    if (K1 > 0) wo[(size_t)(K1 - 1) * Cd + ch] = in;
    xbc[idx] = fromF(acc / (1.f + expf(-acc)));
}

/* ---- the state step for many sequences (v4): a head's state slice copied whole into shared memory ----
 *
 * Why: at 16-64 sequences the state is the step's traffic (batch 64, bf16: 25 MB read + 25 MB written a layer), and
 * conv_ssd_step_kernel reached 61% of HBM bandwidth: a thread holds 4 x 16 bytes of state in registers, so at most
 * ~400 blocks' loads are in flight and the 1536 (sequence, head) blocks run in 4 waves, each wave a latency (load,
 * reduce, store) with the memory pipe half empty between them. Here one thread of each block asks the copy engine
 * (cp.async.bulk, completion counted on an mbarrier) for the whole contiguous P x N slice at once; the slice waits in
 * shared memory, not registers, so 12 blocks of 128 threads fit on an SM and batch 64's 1536 blocks are ONE wave: the
 * whole layer's state is requested in the first microseconds and streams at full bandwidth. The update itself is
 * conv_ssd_step_kernel's, element for element and in the same summation order (a row's tpr adjacent lanes, the same
 * butterfly), so states and y are bitwise those of the v2 kernel; the new state goes back with streaming stores.
 * x/B/C come from xbc (gen_conv_step_kernel ran first); dt from zxbcdt. */

#define GEN_ST_THREADS 128
#define GEN_ST_MINB 12 /* blocks per SM: 12 x 128 threads at <= 40 registers; batch 64 x 24 heads in one wave */

/* shared-memory address of a generic pointer to shared memory (the form PTX's .shared operands take) */
__device__ static inline uint32_t gen_smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* mbarrier: init with one expected arrival; make the init visible to the copy engine (the async proxy) */
__device__ static inline void gen_mbar_init(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(gen_smem_addr(bar)) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

/* the calling thread arrives expecting `bytes` and starts the bulk copy global -> shared that will deliver them */
__device__ static inline void gen_bulk_load(void* dst_smem, const void* src_gmem, uint32_t bytes, uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint32_t b = gen_smem_addr(bar);
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(b), "r"(bytes) : "memory");
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     gen_smem_addr(dst_smem)),
                 "l"(__cvta_generic_to_global(src_gmem)), "r"(bytes), "r"(b)
                 : "memory");
#endif
}

/* wait until phase 0 of the mbarrier has completed (the bytes have landed) */
__device__ static inline void gen_mbar_wait0(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint32_t done = 0, b = gen_smem_addr(bar);
    while (!done)
        asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0;\n selp.u32 %0, 1, 0, p;\n}"
                     : "=r"(done)
                     : "r"(b)
                     : "memory");
#endif
}

template <typename St>
__global__ static void __launch_bounds__(GEN_ST_THREADS, GEN_ST_MINB)
gen_state_step_kernel(floatX* y, St* state, const floatX* xbc, const floatX* dt_raw, int zx_stride,
                      const float* dt_bias, const float* A_log, const float* Dskip, int H, int P, int N, int G,
                      int tpr, int early) {
    constexpr int EPV = 16 / sizeof(St);
    extern __shared__ __align__(16) unsigned char smem_st[]; /* state slice (P x N St) | x (P) | B (N) | C (N) float */
    __shared__ uint64_t bar;
    if (early) gen_allow_next(); /* else the next kernel launches as this one's blocks exit (-U 5) */
    int s = blockIdx.x / H, h = blockIdx.x % H, g = h / (H / G);
    int E = H * P, Cd = E + 2 * G * N;
    float dtb = dt_bias[h], A = -expf(A_log[h]), Dh = Dskip[h]; /* parameters: before the wait */
    St* sst = (St*)smem_st;
    float* sx = (float*)(smem_st + (size_t)P * N * sizeof(St));
    float* Bs = sx + P;
    float* Cs = Bs + N;
    St* st = state + ((size_t)s * H + h) * P * N;
    if (threadIdx.x == 0) gen_mbar_init(&bar);
    gen_wait_prior(); /* the state too is read only after the wait (see the top of this file) */
    if (threadIdx.x == 0) gen_bulk_load(sst, st, (uint32_t)(P * N * sizeof(St)), &bar);
    const floatX* xr = xbc + (size_t)s * Cd;
    for (int i = threadIdx.x; i < P + 2 * N; i += blockDim.x) {
        int ch = i < P ? h * P + i : (i < P + N ? E + g * N + (i - P) : E + G * N + g * N + (i - P - N));
        sx[i] = toF(xr[ch]);
    }
    float u = toF(dt_raw[(size_t)s * zx_stride + h]) + dtb;
    float dt = u > 20.f ? u : log1pf(expf(u));
    float a = expf(dt * A);
    __syncthreads(); /* x/B/C in shared memory; the barrier's init seen by every thread */
    gen_mbar_wait0(&bar);
    int sub = threadIdx.x % tpr, rstride = blockDim.x / tpr, n0 = sub * EPV, nvalid = n0 < N;
    for (int r0 = 0; r0 < P; r0 += rstride) { /* the same trip count for the whole block: shuffles converged */
        int r = r0 + threadIdx.x / tpr;
        float acc = 0.f, xp = r < P ? sx[r] : 0.f;
        if (r < P && nvalid) {
            float dtx = dt * xp;
            Vec128<St> in = *(const Vec128<St>*)(sst + (size_t)r * N + n0), out;
#pragma unroll
            for (int j = 0; j < EPV; j++) {
                float v = a * toF(in.v[j]) + dtx * Bs[n0 + j];
                st_set(out.v[j], v);
                acc += v * Cs[n0 + j];
            }
            store128cs(st + (size_t)r * N + n0, out);
        }
        for (int off = tpr / 2; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (sub == 0 && r < P) y[(size_t)s * E + h * P + r] = fromF(acc + Dh * xp);
    }
}

/* the state step for more than GEN_SMALL_S sequences (generate_mamba2cu -U): 2 (default) conv_ssd_step_kernel;
 * 4 gen_state_step_kernel; 5 the same without the early launch of the next kernel. v4 is faster alone (batch 64:
 * 21.5 against 23.0 us) but made the whole step SLOWER on the H100 (batch 16 0.72 -> 1.03 ms, batch 64 1.21 -> 1.23
 * ms with cuBLASLt projections), whatever the shared-memory carveout: see dev/cuda/NOTES_decode.md, v4 */
static int g_gen_state_v = 2;

/* the v4 kernel's shared memory, or 0 where it does not apply (slice too big for an SM, too few threads a row) */
template <typename St>
static size_t gen_state_step_smem(int P, int N, int tpr) {
    size_t smem = (size_t)P * N * sizeof(St) + (size_t)(P + 2 * N) * sizeof(float);
    if (smem > 200 * 1024 || tpr > GEN_ST_THREADS || GEN_ST_THREADS % tpr != 0) return 0;
    return smem;
}

/* win_out/win_in (S, K-1, conv_dim) float; state (S, H, P, N) St (float or floatX); y (S, E).
 * parts: which of the two launches of the xbc != NULL path to enqueue (1 conv, 2 state, 3 both; -T 1 times each).
 * xbc == NULL: the conv inside (a few sequences: one launch fewer); else xbc (S, conv_dim) floatX scratch and the
 * conv runs first in its own kernel, once per channel rather than once per head (many sequences: the per-head
 * recomputation of the group's B/C conv cost more than the state's bytes) */
template <typename St>
static void conv_ssd_step(floatX* y, St* state, float* win_out, const float* win_in, const floatX* zxbcdt,
                          int zx_stride, floatX* xbc, const float* conv_w, const float* conv_b, const float* dt_bias,
                          const float* A_log, const float* Dskip, int S, int H, int P, int N, int G, int K,
                          cudaStream_t stream, int parts = 3) {
    const int EPV = 16 / sizeof(St);
    if (N % 8 != 0) die("decode step: d_state %d must be a multiple of 8 (16-byte state vectors)", N);
    int tpr = 1;
    while (tpr * EPV < N) tpr *= 2;
    if (tpr > WARP_SIZE)
        die("decode step: d_state %d is more than %d (%s state): not supported", N, WARP_SIZE * EPV,
            EPV == 4 ? "float" : "bf16");
    int rstride = GEN_THREADS / tpr, block_rows = S <= GEN_SMALL_S ? GEN_SSD_ROWS : P;
    if (block_rows > rstride * GEN_SSD_RPT) block_rows = rstride * GEN_SSD_RPT;
    if (block_rows > P) block_rows = P;
    size_t smem = (size_t)(block_rows + 2 * N) * sizeof(float);
    dim3 grid(S * H, CEIL_DIV(P, block_rows));
    int Cd = H * P + 2 * G * N;
    if (xbc != NULL && (parts & 1))
        gen_launch(gen_conv_step_kernel, dim3(CEIL_DIV(S * Cd, 256)), dim3(256), 0, stream, xbc, win_out, win_in,
                   zxbcdt + H * P, zx_stride, conv_w, conv_b, S, Cd, K);
    if (xbc != NULL && !(parts & 2)) return; /* parts (-T 1 timing): 1 the conv kernel, 2 the state kernel */
    size_t smem4 = gen_state_step_smem<St>(P, N, tpr);
    if (xbc != NULL && g_gen_state_v >= 4 && smem4 > 0) {
        cudaCheck(cudaFuncSetAttribute(gen_state_step_kernel<St>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)smem4));
        if (g_gen_carveout == -2) /* all of the SM's unified memory as shared memory: 12 slices a SM need ~220 KB */
            cudaCheck(cudaFuncSetAttribute(gen_state_step_kernel<St>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                           100));
        gen_launch(gen_state_step_kernel<St>, dim3(S * H), dim3(GEN_ST_THREADS), smem4, stream, y, state,
                   (const floatX*)xbc, zxbcdt + H * P + Cd, zx_stride, dt_bias, A_log, Dskip, H, P, N, G, tpr,
                   g_gen_state_v == 4 ? 1 : 0);
        return;
    }
    gen_launch(conv_ssd_step_kernel<St>, grid, dim3(GEN_THREADS), smem, stream, y, state, win_out, win_in, zxbcdt,
               zx_stride, (const floatX*)xbc, conv_w, conv_b, dt_bias, A_log, Dskip, H, P, N, G, K, block_rows, tpr);
}

/* the prefill's float final state (n values) into a floatX state slot */
__global__ static void state_to_lowp_kernel(floatX* dst, const float* src, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = fromF(src[i]);
}

static void state_to_lowp(floatX* dst, const float* src, size_t n, cudaStream_t stream) {
    state_to_lowp_kernel<<<(unsigned)CEIL_DIV(n, (size_t)256), 256, 0, stream>>>(dst, src, n);
    cudaCheckLast();
}

/* ---- the fused norm + matvec kernels ---- */

/* the sum of v over the block, in a fixed order; red holds a float per warp */
__device__ static inline float block_sum(float v, float* red) {
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, warps = blockDim.x / WARP_SIZE;
    v = warp_reduce_sum(v);
    __syncthreads(); /* red may still be read from the previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = 0.f;
    for (int w = 0; w < warps; w++) t += red[w];
    return t;
}

/* 8 consecutive weights, as loaded (16 bytes in bf16, 32 in fp32) */
struct GenW8 {
    Vec128<floatX> v[8 / XVEC];
};

/* lane's chunks of pass `pass` of weight row wr (C wide): chunk j covers columns ((pass*PASS + j)*32 + lane)*8.. */
template <int NPF>
__device__ static inline void mv_load(GenW8 w[NPF], const floatX* wr, int C, int pass, int lane) {
#pragma unroll
    for (int j = 0; j < NPF; j++) {
        int i = ((pass * NPF + j) * WARP_SIZE + lane) * 8;
        if (i < C) {
#pragma unroll
            for (int q = 0; q < 8 / XVEC; q++) w[j].v[q] = load128cs(wr + i + q * XVEC);
        }
    }
}

/* acc[s] += the pass's weights . rows[s]; the same order for a row whatever S is */
template <int SMAX, int NPF>
__device__ static inline void mv_dot(float acc[SMAX], const GenW8 w[NPF], const float* rows, int S, int C, int pass,
                                     int lane) {
#pragma unroll
    for (int j = 0; j < NPF; j++) {
        int i = ((pass * NPF + j) * WARP_SIZE + lane) * 8;
        if (i >= C) break;
        float wv[8];
#pragma unroll
        for (int q = 0; q < 8 / XVEC; q++)
#pragma unroll
            for (int e = 0; e < XVEC; e++) wv[q * XVEC + e] = toF(w[j].v[q].v[e]);
#pragma unroll
        for (int s = 0; s < SMAX; s++) {
            if (s < S) {
                const float* r = rows + (size_t)s * C + i;
                float4 r0 = *(const float4*)r, r1 = *(const float4*)(r + 4);
                /* explicit roundings: the kernels are compiled for several SMAX, a row must sum the same in each */
                float t = __fmul_rn(wv[0], r0.x);
                t = __fmaf_rn(wv[1], r0.y, t);
                t = __fmaf_rn(wv[2], r0.z, t);
                t = __fmaf_rn(wv[3], r0.w, t);
                t = __fmaf_rn(wv[4], r1.x, t);
                t = __fmaf_rn(wv[5], r1.y, t);
                t = __fmaf_rn(wv[6], r1.z, t);
                t = __fmaf_rn(wv[7], r1.w, t);
                acc[s] = __fadd_rn(acc[s], t);
            }
        }
    }
}

/* acc[s] = W row o . rows[s]; the first pass of the warp's first row was loaded before the wait (w) */
template <int SMAX, int NPF>
__device__ static inline void mv_row(float acc[SMAX], GenW8 w[NPF], const floatX* wr, const float* rows, int S, int C,
                                     int lane, int preloaded) {
    int npass = CEIL_DIV(C, NPF * WARP_SIZE * 8);
#pragma unroll
    for (int s = 0; s < SMAX; s++) acc[s] = 0.f;
    for (int pass = 0; pass < npass; pass++) {
        if (!(preloaded && pass == 0)) mv_load<NPF>(w, wr, C, pass, lane);
        mv_dot<SMAX, NPF>(acc, w, rows, S, C, pass, lane);
    }
}

/* out (S, OC) floatX (row stride out_stride) = RMSNorm(x (S, C) float) * norm_w @ W (OC, C)^T.
 * With part_v != NULL (the LM head, greedy): block b's best (value as stored, lowest id) among rows < V, per
 * sequence, at part_v/part_i[s * gridDim.x + b]. */
template <int SMAX, int NPF>
__global__ static void __launch_bounds__(GEN_THREADS, SMAX == 1 ? (NPF <= 3 ? 4 : 3) : 2)
rmsnorm_matvec_kernel(floatX* out, int out_stride, const float* x, const float* norm_w,
                                             const floatX* W, int S, int C, int OC, float* part_v, int* part_i,
                                             int V) {
    extern __shared__ float4 sm_u4[];
    float* u = (float*)sm_u4; /* (S, C) the normalized rows, rounded to floatX as the forward stores them */
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, warps = blockDim.x / WARP_SIZE;
    __shared__ float red[32];
    __shared__ float best_v[GEN_THREADS / WARP_SIZE][SMAX];
    __shared__ int best_i[GEN_THREADS / WARP_SIZE][SMAX];
    int o0 = blockIdx.x * warps + warp, ostride = gridDim.x * warps;
    GenW8 w[NPF];
    if (o0 < OC) mv_load<NPF>(w, W + (size_t)o0 * C, C, 0, lane); /* weights do not depend on the previous kernel */
    gen_allow_next();
    gen_wait_prior();
    for (int s = 0; s < S; s++) { /* the whole block on each row: the prologue is on the critical path */
        const float* xr = x + (size_t)s * C;
        float ss = 0.f;
        for (int i = threadIdx.x; i < C; i += blockDim.x) ss += xr[i] * xr[i];
        float r = rsqrtf(block_sum(ss, red) / C + 1e-5f);
        for (int i = threadIdx.x; i < C; i += blockDim.x) u[(size_t)s * C + i] = toF(fromF(xr[i] * r * norm_w[i]));
    }
    __syncthreads();
    float bv[SMAX];
    int bi[SMAX];
#pragma unroll
    for (int s = 0; s < SMAX; s++) { bv[s] = -INFINITY; bi[s] = 0x7fffffff; }
    for (int o = o0; o < OC; o += ostride) {
        float acc[SMAX];
        mv_row<SMAX, NPF>(acc, w, W + (size_t)o * C, u, S, C, lane, o == o0);
#pragma unroll
        for (int s = 0; s < SMAX; s++) {
            if (s < S) {
                floatX v = fromF(warp_reduce_sum(acc[s]));
                if (lane == 0) out[(size_t)s * out_stride + o] = v;
                /* o grows: the first of equals stays */
                if (part_v != NULL && o < V && toF(v) > bv[s]) { bv[s] = toF(v); bi[s] = o; }
            }
        }
    }
    if (part_v == NULL) return;
    if (lane == 0)
        for (int s = 0; s < S && s < SMAX; s++) { best_v[warp][s] = bv[s]; best_i[warp][s] = bi[s]; }
    __syncthreads();
    if (threadIdx.x < S) {
        int s = threadIdx.x;
        float v = best_v[0][s];
        int id = best_i[0][s];
        for (int k = 1; k < warps; k++)
            if (best_v[k][s] > v || (best_v[k][s] == v && best_i[k][s] < id)) { v = best_v[k][s]; id = best_i[k][s]; }
        part_v[(size_t)s * gridDim.x + blockIdx.x] = v;
        part_i[(size_t)s * gridDim.x + blockIdx.x] = id;
    }
}

/* x (S, D) float += RMSNorm_g(y * SiLU(z)) * gnorm_w @ W_out (D, E)^T, the product rounded to floatX first as the
 * forward's delta is */
template <int SMAX, int NPF>
__global__ static void __launch_bounds__(GEN_THREADS, SMAX == 1 ? (NPF <= 3 ? 4 : 3) : 2)
gated_matvec_kernel(float* x, const floatX* y, const floatX* z, int z_stride,
                                           const float* gnorm_w, const floatX* W, int S, int E, int G, int D) {
    extern __shared__ float4 sm_g4[];
    float* gn = (float*)sm_g4; /* (S, E) */
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, warps = blockDim.x / WARP_SIZE;
    int Eg = E / G;
    __shared__ float red[32];
    int o0 = blockIdx.x * warps + warp, ostride = gridDim.x * warps;
    GenW8 w[NPF];
    if (o0 < D) mv_load<NPF>(w, W + (size_t)o0 * E, E, 0, lane);
    gen_allow_next();
    gen_wait_prior();
    for (int item = 0; item < S * G; item++) { /* the whole block on each (row, group) */
        int s = item / G, g = item % G;
        const floatX* yr = y + (size_t)s * E + g * Eg;
        const floatX* zr = z + (size_t)s * z_stride + g * Eg;
        float* out = gn + (size_t)s * E + g * Eg;
        float ss = 0.f;
        for (int i = threadIdx.x; i < Eg; i += blockDim.x) {
            float zv = toF(zr[i]), v = toF(yr[i]) * zv / (1.f + expf(-zv));
            out[i] = v;
            ss += v * v;
        }
        float r = rsqrtf(block_sum(ss, red) / Eg + 1e-5f);
        for (int i = threadIdx.x; i < Eg; i += blockDim.x) out[i] = toF(fromF(out[i] * r * gnorm_w[g * Eg + i]));
    }
    __syncthreads();
    for (int o = o0; o < D; o += ostride) {
        float acc[SMAX];
        mv_row<SMAX, NPF>(acc, w, W + (size_t)o * E, gn, S, E, lane, o == o0);
#pragma unroll
        for (int s = 0; s < SMAX; s++) {
            if (s < S) {
                float v = warp_reduce_sum(acc[s]);
                if (lane == 0) x[(size_t)s * D + o] += toF(fromF(v));
            }
        }
    }
}

/* one warp per row while that fits in 8 blocks per SM (every row's weights then load before the wait); more rows
 * (the LM head) loop */
static int gen_matvec_grid(int OC) {
    int warps = GEN_THREADS / WARP_SIZE, want = CEIL_DIV(OC, warps), cap = cuda_num_sms() * 8;
    return want < cap ? want : cap;
}

static void gen_check_matvec(const char* who, int S, int C, size_t smem) {
    if (S < 1 || S > GEN_SMALL_S) die("%s: %d sequences, the fused path takes 1..%d", who, S, GEN_SMALL_S);
    if (C % 8 != 0) die("%s: width %d must be a multiple of 8 (16-byte weight rows)", who, C);
    if (smem > 227 * 1024) die("%s: %d rows of %d need %zu bytes of shared memory (at most 227 KiB)", who, S, C, smem);
}

/* part_v/part_i: NULL, or (S, gen_matvec_grid(OC)) for the greedy pick among the first V rows */
static void rmsnorm_matvec(floatX* out, int out_stride, const float* x, const float* norm_w, const floatX* W, int S,
                           int C, int OC, float* part_v, int* part_i, int V, cudaStream_t stream) {
    size_t smem = (size_t)S * C * sizeof(float);
    gen_check_matvec("rmsnorm_matvec", S, C, smem);
    /* one sequence: a kernel with one accumulator (fewer registers, more blocks per SM); rows up to 768 wide: 3
     * prefetched chunks a lane (a whole row), wider: 6. The row sums are the same in every variant. */
    void (*kernel)(floatX*, int, const float*, const float*, const floatX*, int, int, int, float*, int*, int) =
        C <= 768 ? (S == 1 ? rmsnorm_matvec_kernel<1, 3> : rmsnorm_matvec_kernel<GEN_SMALL_S, 3>)
                 : (S == 1 ? rmsnorm_matvec_kernel<1, 6> : rmsnorm_matvec_kernel<GEN_SMALL_S, 6>);
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    gen_launch(kernel, dim3(gen_matvec_grid(OC)), dim3(GEN_THREADS), smem, stream, out, out_stride, x, norm_w, W, S,
               C, OC, part_v, part_i, V);
}

static void gated_matvec(float* x, const floatX* y, const floatX* z, int z_stride, const float* gnorm_w,
                         const floatX* W, int S, int E, int G, int D, cudaStream_t stream) {
    size_t smem = (size_t)S * E * sizeof(float);
    gen_check_matvec("gated_matvec", S, E, smem);
    if (E % G != 0) die("gated_matvec: E = %d is not a multiple of ngroups = %d", E, G);
    void (*kernel)(float*, const floatX*, const floatX*, int, const float*, const floatX*, int, int, int, int) =
        E <= 768 ? (S == 1 ? gated_matvec_kernel<1, 3> : gated_matvec_kernel<GEN_SMALL_S, 3>)
                 : (S == 1 ? gated_matvec_kernel<1, 6> : gated_matvec_kernel<GEN_SMALL_S, 6>);
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    gen_launch(kernel, dim3(gen_matvec_grid(D)), dim3(GEN_THREADS), smem, stream, x, y, z, z_stride, gnorm_w, W, S,
               E, G, D);
}

/* x (S, D) float = wte[tokens]; *step += 1 (the step counter the argmax writes the history with); *bar = 0 (the
 * persistent step's grid-barrier counter, when there is one). The first kernel of a step: launched without overlap
 * (it follows host copies of the tokens), but lets the first in_proj start. */
__global__ static void decode_embed_kernel(float* x, int* step, unsigned* bar, const int* tokens, const floatX* wte,
                                           int D) {
    gen_allow_next();
    int s = blockIdx.x;
    if (s == 0 && threadIdx.x == 0) {
        *step += 1;
        if (bar != NULL) *bar = 0;
    }
    const floatX* w = wte + (size_t)tokens[s] * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) x[(size_t)s * D + i] = toF(w[i]);
}

static void decode_embed(float* x, int* step, unsigned* bar, const int* tokens, const floatX* wte, int S, int D,
                         cudaStream_t stream) {
    decode_embed_kernel<<<S, 256, 0, stream>>>(x, step, bar, tokens, wte, D);
    cudaCheckLast();
}

/* (bv, bi) = the better of itself and (ov, oi): the larger value, the lower id among equals; NaN never wins */
__device__ static inline void argmax_merge(float& bv, int& bi, float ov, int oi) {
    if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
}

/* the block's best of (bv, bi) over its threads (any multiple of 32 up to 1024), returned in thread 0's bv, bi */
__device__ static inline void argmax_block(float& bv, int& bi) {
    __shared__ float best_v[32];
    __shared__ int best_i[32];
    for (int off = 16; off > 0; off >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, off);
        int oi = __shfl_xor_sync(0xffffffffu, bi, off);
        argmax_merge(bv, bi, ov, oi);
    }
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    if (lane == 0) { best_v[warp] = bv; best_i[warp] = bi; }
    __syncthreads();
    if (threadIdx.x == 0)
        for (int w = 1; w < (int)blockDim.x / WARP_SIZE; w++) argmax_merge(bv, bi, best_v[w], best_i[w]);
}

/* the block's best of (bv, bi), then tokens[s] = hist[*step * S + s] = it (id 0 if none) */
__device__ static inline void argmax_finish(int* tokens, int* hist, const int* step, float bv, int bi) {
    int s = blockIdx.x, S = gridDim.x;
    argmax_block(bv, bi);
    if (threadIdx.x == 0) {
        if (bi == 0x7fffffff) bi = 0; /* every logit NaN: id 0 rather than an id outside the vocabulary */
        tokens[s] = bi;
        hist[(size_t)(*step) * S + s] = bi;
    }
}

/* tokens[s] = hist[*step * S + s] = argmax over the V real ids of logits row s (the lowest id among equals) */
__global__ static void argmax_kernel(int* tokens, int* hist, const int* step, const floatX* logits, int Vp, int V) {
    gen_allow_next();
    gen_wait_prior();
    const floatX* row = logits + (size_t)blockIdx.x * Vp;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = toF(row[i]);
        if (v > bv) { bv = v; bi = i; } /* i grows: the first of equals stays */
    }
    argmax_finish(tokens, hist, step, bv, bi);
}

static void argmax_tokens(int* tokens, int* hist, const int* step, const floatX* logits, int S, int Vp, int V,
                          cudaStream_t stream) {
    gen_launch(argmax_kernel, dim3(S), dim3(1024), 0, stream, tokens, hist, step, logits, Vp, V);
}

/* the same pick from the LM head's per-block partials (S, nparts) */
__global__ static void argmax_partials_kernel(int* tokens, int* hist, const int* step, const float* part_v,
                                              const int* part_i, int nparts) {
    gen_allow_next();
    gen_wait_prior();
    const float* pv = part_v + (size_t)blockIdx.x * nparts;
    const int* pi = part_i + (size_t)blockIdx.x * nparts;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) argmax_merge(bv, bi, pv[i], pi[i]);
    argmax_finish(tokens, hist, step, bv, bi);
}

static void argmax_from_partials(int* tokens, int* hist, const int* step, const float* part_v, const int* part_i,
                                 int S, int nparts, cudaStream_t stream) {
    gen_launch(argmax_partials_kernel, dim3(S), dim3(256), 0, stream, tokens, hist, step, part_v, part_i, nparts);
}

/* ---- argmax for many sequences: S x nsplit blocks, then argmax_partials_kernel ----
 * Why: argmax_kernel is one 1024-thread block per sequence, 64 blocks for 64 sequences on 132 SMs, each scanning
 * 100 KB of logits 2 bytes at a time (11.6 us at batch 64). Here block (b, s) scans a contiguous 1/nsplit of row s
 * with 16-byte loads and leaves its best (value, lowest id) in part_v/part_i[s * nsplit + b]; argmax_partials_kernel
 * picks among the nsplit. argmax_merge is a total order on (value, id) (larger value, then lower id; NaN never wins),
 * so the pick is argmax_kernel's exactly, whatever order the merges run in. */
#define GEN_AM_THREADS 256

__global__ static void __launch_bounds__(GEN_AM_THREADS)
argmax_split_kernel(float* part_v, int* part_i, const floatX* logits, int Vp, int V, int span) {
    gen_allow_next();
    gen_wait_prior();
    int b = blockIdx.x, s = blockIdx.y, nsplit = gridDim.x;
    int lo = b * span, hi = lo + span < V ? lo + span : V; /* span: a multiple of XVEC, so lo is 16-byte aligned */
    const floatX* row = logits + (size_t)s * Vp;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = lo + threadIdx.x * XVEC; i < hi; i += blockDim.x * XVEC) {
        Vec128<floatX> v = load128cs(row + i); /* i + XVEC <= Vp: Vp is a multiple of XVEC (checked) */
#pragma unroll
        for (int j = 0; j < XVEC; j++) {
            float f = toF(v.v[j]);
            if (i + j < hi && f > bv) { bv = f; bi = i + j; } /* ids grow within a thread: the first of equals */
        }
    }
    argmax_block(bv, bi);
    if (threadIdx.x == 0) {
        part_v[(size_t)s * nsplit + b] = bv;
        part_i[(size_t)s * nsplit + b] = bi;
    }
}

/* 1 (default): argmax_split for S > GEN_SMALL_S where it applies; 0: argmax_kernel (for comparison and the test) */
static int g_gen_argmax_split = 1;

/* blocks per sequence: ~512 blocks in all (4 a SM), each span at least a block's worth of vectors, at most maxparts */
static int gen_argmax_nsplit(int S, int V, int maxparts) {
    int n = CEIL_DIV(512, S);
    int most = CEIL_DIV(V, GEN_AM_THREADS * XVEC);
    if (n > most) n = most;
    if (n > maxparts) n = maxparts;
    return n < 1 ? 1 : n;
}

/* tokens = argmax of each logits row; the split kernel + partials when part_v/part_i hold S x maxparts, the rows
 * are 16-byte aligned and g_gen_argmax_split, else argmax_kernel */
static void argmax_tokens_split(int* tokens, int* hist, const int* step, const floatX* logits, float* part_v,
                                int* part_i, int maxparts, int S, int Vp, int V, cudaStream_t stream) {
    if (!g_gen_argmax_split || part_v == NULL || Vp % XVEC != 0 || maxparts < 1) {
        argmax_tokens(tokens, hist, step, logits, S, Vp, V, stream);
        return;
    }
    int nsplit = gen_argmax_nsplit(S, V, maxparts);
    int span = CEIL_DIV(CEIL_DIV(V, nsplit), XVEC) * XVEC;
    nsplit = CEIL_DIV(V, span);
    gen_launch(argmax_split_kernel, dim3(nsplit, S), dim3(GEN_AM_THREADS), 0, stream, part_v, part_i, logits, Vp, V,
               span);
    argmax_from_partials(tokens, hist, step, part_v, part_i, S, nsplit, stream);
}

/* prefill -> step hand-over: window slot k of sequence s = the conv input (xBC columns of zxbcdt) at time
 * T-(K-1)+k of the prompt, zeros before its first token. win (S, K-1, Cd) float; zx (T, zx_stride) */
__global__ static void conv_window_from_prefill_kernel(float* win, const floatX* zx, int zx_stride, int T, int K1,
                                                       int Cd) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= K1 * Cd) return;
    int k = idx / Cd, ch = idx % Cd, t = T - K1 + k;
    win[idx] = t >= 0 ? toF(zx[(size_t)t * zx_stride + ch]) : 0.f;
}

static void conv_window_from_prefill(float* win, const floatX* zx_xbc, int zx_stride, int T, int K, int Cd,
                                     cudaStream_t stream) {
    int K1 = K - 1;
    if (K1 < 1) return;
    conv_window_from_prefill_kernel<<<CEIL_DIV(K1 * Cd, 256), 256, 0, stream>>>(win, zx_xbc, zx_stride, T, K1, Cd);
    cudaCheckLast();
}

/* ================================================================================================================
 * The mid-batch path (GEN_SMALL_S < S <= GEN_MMA_MAX_S, bf16 builds; by default only up to GEN_MMA_AUTO_MAX_S,
 * where it measured faster than cuBLASLt): five launches a layer, every one overlapped with the one before it
 * (programmatic dependent launch), the two projections on tensor cores.
 *
 *   gen_rmsnorm_kernel        u = floatX(RMSNorm(x) * w), one block per sequence.
 *   gen_mma_kernel<NT>        out (S, OC) = A (S, C) W^T (OC, C), or x += floatX(A W^T) (the residual, out_proj).
 *                             Weight-stationary: a block owns NT*8 output columns for all S (<= 64) rows; its 8 warps
 *                             split C in 32-wide slices (slice kb to warp kb % 8), each warp loads its weight slices
 *                             into registers before the wait and A straight from global memory (L2) after it, and
 *                             sums with mma.sync m16n8k16 (bf16 in, fp32 accumulate); the 8 partial sums meet in
 *                             shared memory and are added in warp order (deterministic).
 *                             Both operands are read as 16-byte vectors: lane (g = lane/4, q = lane%4) holds columns
 *                             8q..8q+7 of a slice; that is a permutation of the 16 k-slots of two mma steps (the first
 *                             takes 8q..8q+3, the second 8q+4..8q+7), the same for A and W, so the sum is unchanged.
 *   gen_gated_norm_kernel     gn = floatX(RMSNorm_g(y * SiLU(z)) * w), one block per (sequence, group).
 * ================================================================================================================ */

#define GEN_MMA_MAX_S 64
/* generate_mamba2cu -M: 1 the tensor-core projections for 9..GEN_MMA_MAX_S sequences, 0 cuBLASLt, -1 (default) by
 * measurement: tensor cores up to GEN_MMA_AUTO_MAX_S sequences, cuBLASLt above (H100, -r 3, ms/step M0 / M1:
 * batch 16 0.741 / 0.719, batch 32 0.898 / 0.911, batch 64 1.206 / 1.274) */
#define GEN_MMA_AUTO_MAX_S 16
static int g_gen_mma = -1;

__global__ static void gen_rmsnorm_kernel(floatX* u, const float* x, const float* w, int C) {
    __shared__ float red[32];
    gen_allow_next();
    gen_wait_prior();
    const float* xr = x + (size_t)blockIdx.x * C;
    float ss = 0.f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) ss += xr[i] * xr[i];
    float r = rsqrtf(block_sum(ss, red) / C + 1e-5f);
    for (int i = threadIdx.x; i < C; i += blockDim.x) u[(size_t)blockIdx.x * C + i] = fromF(xr[i] * r * w[i]);
}

__global__ static void gen_gated_norm_kernel(floatX* gn, const floatX* y, const floatX* z, int z_stride,
                                             const float* w, int E, int G) {
    __shared__ float red[32];
    gen_allow_next();
    gen_wait_prior();
    int s = blockIdx.x / G, g = blockIdx.x % G, Eg = E / G;
    const floatX* yr = y + (size_t)s * E + g * Eg;
    const floatX* zr = z + (size_t)s * z_stride + g * Eg;
    float ss = 0.f;
    for (int i = threadIdx.x; i < Eg; i += blockDim.x) {
        float zv = toF(zr[i]), v = toF(yr[i]) * zv / (1.f + expf(-zv));
        ss += v * v;
    }
    float r = rsqrtf(block_sum(ss, red) / Eg + 1e-5f);
    for (int i = threadIdx.x; i < Eg; i += blockDim.x) {
        float zv = toF(zr[i]), v = toF(yr[i]) * zv / (1.f + expf(-zv));
        gn[(size_t)s * E + g * Eg + i] = fromF(v * r * w[g * Eg + i]);
    }
}

static void gen_rmsnorm(floatX* u, const float* x, const float* w, int S, int C, cudaStream_t stream) {
    gen_launch(gen_rmsnorm_kernel, dim3(S), dim3(GEN_THREADS), 0, stream, u, x, w, C);
}

static void gen_gated_norm(floatX* gn, const floatX* y, const floatX* z, int z_stride, const float* w, int S, int E,
                           int G, cudaStream_t stream) {
    if (E % G != 0) die("gated norm: E = %d is not a multiple of ngroups = %d", E, G);
    gen_launch(gen_gated_norm_kernel, dim3(S * G), dim3(GEN_THREADS), 0, stream, gn, y, z, z_stride, w, E, G);
}

#if !defined(ENABLE_FP32)
/* c += a b: one m16n8k16 step, bf16 operands, fp32 accumulators */
__device__ static inline void mma_16816(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* W slices of pass i0 (slices warp + 8 (i0 + j)): the lane's 16 bytes of each of the NT weight rows it feeds */
template <int NT, int PF>
__device__ static inline void mma_load_w(uint4 wf[PF][NT], const floatX* W, int o_base, int OC, int C, int nkb,
                                         int warp, int i0, int g, int q) {
#pragma unroll
    for (int j = 0; j < PF; j++) {
        int kb = warp + 8 * (i0 + j);
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            int n = o_base + nt * 8 + g;
            wf[j][nt] = make_uint4(0, 0, 0, 0);
            if (kb < nkb && n < OC) wf[j][nt] = __ldcs((const uint4*)(W + (size_t)n * C + kb * 32 + 8 * q));
        }
    }
}

template <int NT, int PF>
__global__ static void __launch_bounds__(GEN_THREADS, 1)
gen_mma_kernel(floatX* out, int out_stride, float* resid, const floatX* A, const floatX* W, int S, int C, int OC) {
    extern __shared__ float red_mma[]; /* (8 warps, 64 rows, NT*8 columns) partial sums */
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, g = lane / 4, q = lane % 4;
    int o_base = blockIdx.x * NT * 8, nkb = C / 32;
    uint4 wf[PF][NT];
    mma_load_w<NT, PF>(wf, W, o_base, OC, C, nkb, warp, 0, g, q); /* weights: before the wait */
    gen_allow_next();
    gen_wait_prior();
    float acc[4][NT][4];
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][nt][e] = 0.f;
    for (int i0 = 0; warp + 8 * i0 < nkb; i0 += PF) {
        if (i0 > 0) mma_load_w<NT, PF>(wf, W, o_base, OC, C, nkb, warp, i0, g, q);
#pragma unroll
        for (int j = 0; j < PF; j++) {
            int kb = warp + 8 * (i0 + j);
            if (kb >= nkb) break;
            int k0 = kb * 32 + 8 * q;
            uint4 a[4][2];
#pragma unroll
            for (int mt = 0; mt < 4; mt++) {
                int r0 = mt * 16 + g, r1 = r0 + 8;
                a[mt][0] = r0 < S ? *(const uint4*)(A + (size_t)r0 * C + k0) : make_uint4(0, 0, 0, 0);
                a[mt][1] = r1 < S ? *(const uint4*)(A + (size_t)r1 * C + k0) : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int mt = 0; mt < 4; mt++) {
                if (mt * 16 >= S) break; /* the same for the whole block */
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    mma_16816(acc[mt][nt], a[mt][0].x, a[mt][1].x, a[mt][0].y, a[mt][1].y, wf[j][nt].x, wf[j][nt].y);
                    mma_16816(acc[mt][nt], a[mt][0].z, a[mt][1].z, a[mt][0].w, a[mt][1].w, wf[j][nt].z, wf[j][nt].w);
                }
            }
        }
    }
    const int NC = NT * 8;
#pragma unroll
    for (int mt = 0; mt < 4; mt++) {
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            float* r = red_mma + ((size_t)warp * 64 + mt * 16 + g) * NC + nt * 8 + 2 * q;
            r[0] = acc[mt][nt][0];
            r[1] = acc[mt][nt][1];
            r[8 * NC] = acc[mt][nt][2];
            r[8 * NC + 1] = acc[mt][nt][3];
        }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < S * NC; idx += blockDim.x) {
        int row = idx / NC, col = idx % NC, o = o_base + col;
        if (o >= OC) continue;
        float v = 0.f;
        for (int w = 0; w < GEN_THREADS / WARP_SIZE; w++) v += red_mma[((size_t)w * 64 + row) * NC + col];
        if (resid != NULL) resid[(size_t)row * out_stride + o] += toF(fromF(v));
        else out[(size_t)row * out_stride + o] = fromF(v);
    }
}
#endif

/* out (S, OC) = A (S, C) W^T, or (resid != NULL) resid (S, OC) float += floatX(A W^T); row stride out_stride */
static void gen_mma(floatX* out, int out_stride, float* resid, const floatX* A, const floatX* W, int S, int C, int OC,
                    cudaStream_t stream) {
#if defined(ENABLE_FP32)
    (void)out; (void)out_stride; (void)resid; (void)A; (void)W; (void)S; (void)C; (void)OC; (void)stream;
    die("gen_mma: the tensor-core path is for bf16 builds");
#else
    if (S < 1 || S > GEN_MMA_MAX_S) die("gen_mma: %d sequences, the path takes 1..%d", S, GEN_MMA_MAX_S);
    if (C % 32 != 0) die("gen_mma: width %d must be a multiple of 32", C);
    /* wide outputs (in_proj): 32 columns a block, so fewer blocks re-read A; narrow ones (out_proj): 16 */
    if (OC >= 2048) {
        size_t smem = (size_t)8 * 64 * 32 * sizeof(float);
        cudaCheck(cudaFuncSetAttribute(gen_mma_kernel<4, 3>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        gen_launch(gen_mma_kernel<4, 3>, dim3(CEIL_DIV(OC, 32)), dim3(GEN_THREADS), smem, stream, out, out_stride,
                   resid, A, W, S, C, OC);
    } else {
        size_t smem = (size_t)8 * 64 * 16 * sizeof(float);
        gen_launch(gen_mma_kernel<2, 6>, dim3(CEIL_DIV(OC, 16)), dim3(GEN_THREADS), smem, stream, out, out_stride,
                   resid, A, W, S, C, OC);
    }
#endif
}

/* the mid-batch path applies: bf16 build, S in (GEN_SMALL_S, GEN_MMA_MAX_S], widths multiples of 32 */
static int gen_mma_path_ok(int S, int D, int E) {
    if (sizeof(floatX) != 2 || !g_gen_mma) return 0;
    int most = g_gen_mma < 0 ? GEN_MMA_AUTO_MAX_S : GEN_MMA_MAX_S;
    return S > GEN_SMALL_S && S <= most && D % 32 == 0 && E % 32 == 0;
}


/* ================================================================================================================
 * The persistent decode step (version 3; S <= GEN_SMALL_S): every layer of a step in ONE kernel.
 *
 * Why: in v2 a layer is three kernels of ~4.5-5.7 us each against a 0.5-1.7 us floor; each kernel is one dependent
 * chain after its griddepcontrol.wait (activation load from L2, a block-wide norm with two barriers, the dot, the
 * store). Here the grid (gen_persist_grid: blocks_per_SM x #SMs, all resident) stays on the GPU for the whole step
 * and its phases are separated by a grid barrier of our own; each phase is WARP-independent (no __syncthreads, no
 * shared memory inside a phase), and each warp issues the loads of its NEXT phase's weights (or SSM state rows)
 * between arriving at a barrier and waiting at it, so the weight stream overlaps the barrier.
 *
 * Per layer, 3 phases and 3 barriers (2 after the last layer's first two phases; the kernel's end is the last):
 *   (a) in   warp w owns in_proj rows w, w + NW, ... (NW warps in the grid; the global warp id interleaves blocks, so
 *            rows spread evenly over the SMs). Each warp normalizes x itself (RMSNorm: its lanes load x at the
 *            columns of their weight chunks, one warp reduction), dots, rounds to floatX, stores zxbcdt; a warp that
 *            owns an xBC channel also runs that channel's conv step (conv + SiLU -> xbc, the window shift).
 *   (b) ssm  a warp (tpr lanes a row, 32/tpr rows) per group of state rows: dt, the state update, y = h C + D x, and
 *            the gate g = y * SiLU(z) as float (the gated norm's input), from xbc / zxbcdt.
 *   (c) out  warp w owns out_proj rows w, w + NW, ...: it loads g at its chunk columns, RMSNorm per group (one warp
 *            reduction a group), dots, x[o] += floatX(dot) (the residual; each element has one owner: no atomics).
 * The grid barrier: a counter in global memory, zeroed by decode_embed_kernel each step; a block arrives with
 * __syncthreads + one red.release.gpu (the CUDA-model pattern: the barrier orders the block's writes before thread
 * 0's release) and waits with thread 0 spinning on ld.acquire.gpu until the counter reaches (barriers so far) x
 * (blocks), then __syncthreads. Activations written by other blocks are read with ld.global.cg (L2), never through a
 * possibly stale L1 line. Arrive and wait are split so that a warp's prefetch loads are issued after its release
 * (a release waits for the thread's earlier memory operations, prefetches included) and before the wait.
 * Roundings are those of v2 (u, zxbcdt, xbc, y, gn, delta stored as floatX); the two norms sum in another order
 * than v2's block sums (per warp, lane chunks), so v3's logits equal v2's to bf16 rounding, not bitwise. Every
 * sequence is computed by the same warps in the same order whatever S is: a batch gives each prompt's logits
 * bitwise as alone.
 * ================================================================================================================ */

#define GEN_P_THREADS 256
#define GEN_P_NA 3   /* in_proj: 16-byte weight chunks (8 values) per lane per row: rows up to 768 wide (d_model) */
#define GEN_P_NC 6   /* out_proj: rows up to 1536 wide (d_inner) */
#define GEN_P_KMAX 4 /* conv width */

/* generate_mamba2cu -V 3: the persistent step on the small path; -V 2 (default): the v2 step, 3 kernels a layer,
 * which measured faster on the H100 (0.383 against 0.493 ms/token at batch 1: dev/cuda/NOTES_decode.md, v3) */
static int g_gen_version = 2;
static int g_gen_p_blocks = 1; /* -W 1|2: persistent blocks per SM (kernel variants: see gen_persist_step_kernel) */
static int g_gen_coop = 1;     /* launch the persistent step as a cooperative grid (residency checked by the driver) */

typedef struct {
    float* x;          /* (S, D) residual stream */
    floatX* zxbcdt;    /* (S, Z) in_proj output */
    floatX* xbc;       /* (S, Cd) conv step output */
    floatX* y;         /* (S, E) SSD output */
    float* gate;       /* (S, E) y * SiLU(z) */
    void* state;       /* (L, S, H, P, N) float or floatX */
    const float* win_in;
    float* win_out;    /* (L, S, K-1, Cd) */
    size_t win_layer, state_layer;
    unsigned* bar;     /* grid-barrier counter, zeroed by decode_embed_kernel */
    /* layer 0's parameters; layer l's at + l * the tensor's per-layer stride (_ls) */
    const float *norm_w, *conv_w, *conv_b, *dt_bias, *A_log, *Dskip, *gnorm_w;
    const floatX *in_w, *out_w;
    size_t norm_w_ls, conv_w_ls, conv_b_ls, dt_bias_ls, A_log_ls, Dskip_ls, gnorm_w_ls, in_w_ls, out_w_ls;
    int S, L, D, E, H, P, N, G, K, Z, Cd, tpr;
    int only_barriers; /* -T 1: the barriers alone, to time them */
} GenPArgs;

__device__ static inline void gen_bar_arrive(unsigned* count) {
    __syncthreads();
    if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(count) : "memory");
}

__device__ static inline void gen_bar_wait(const unsigned* count, unsigned target) {
    if (threadIdx.x == 0) {
        unsigned v;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(count) : "memory");
        } while (v < target);
    }
    __syncthreads();
}

/* 8 floats at p (16-byte aligned) from L2 */
__device__ static inline void gp_load8f(float v[8], const float* p) {
    float4 a = __ldcg((const float4*)p), b = __ldcg((const float4*)(p + 4));
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

/* the lane's NCH chunks of 8 floats of a row of len floats (chunk j at (j * 32 + lane) * 8), zeros past the end */
template <int NCH>
__device__ static inline void gp_load_chunks(float v[NCH][8], const float* row, int len, int lane) {
#pragma unroll
    for (int j = 0; j < NCH; j++) {
        int i = (j * WARP_SIZE + lane) * 8;
        if (i < len) gp_load8f(v[j], row + i);
        else
#pragma unroll
            for (int e = 0; e < 8; e++) v[j][e] = 0.f;
    }
}

/* the lane's NPF chunks of weight row wr (C wide), or zeros (row < 0): every register is written, so a prefetch
 * leaves no old value alive across the phases in between (a conditional load would keep the old one live) */
template <int NPF>
__device__ static inline void gp_load_w(GenW8 w[NPF], const floatX* wr, int C, int lane, int valid) {
#pragma unroll
    for (int j = 0; j < NPF; j++) {
        int i = (j * WARP_SIZE + lane) * 8;
#pragma unroll
        for (int q = 0; q < 8 / XVEC; q++) {
            if (valid && i < C) w[j].v[q] = load128cs(wr + i + q * XVEC);
            else
#pragma unroll
                for (int e = 0; e < XVEC; e++) w[j].v[q].v[e] = fromF(0.f);
        }
    }
}

/* the lane's part of W row . u, u held in registers at the lane's chunk columns ((j * 32 + lane) * 8 ..); the same
 * fma chain per chunk as mv_dot */
template <int NPF>
__device__ static inline float gp_dot(const GenW8 w[NPF], const float u[NPF][8], int C, int lane) {
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < NPF; j++) {
        int i = (j * WARP_SIZE + lane) * 8;
        if (i >= C) break;
        float wv[8];
#pragma unroll
        for (int q = 0; q < 8 / XVEC; q++)
#pragma unroll
            for (int e = 0; e < XVEC; e++) wv[q * XVEC + e] = toF(w[j].v[q].v[e]);
        float t = __fmul_rn(wv[0], u[j][0]);
#pragma unroll
        for (int e = 1; e < 8; e++) t = __fmaf_rn(wv[e], u[j][e], t);
        acc = __fadd_rn(acc, t);
    }
    return acc;
}

/* (a) in_proj row `row` for sequence s: zxbcdt, and for an xBC channel its conv step */
__device__ static inline void gp_in_row(const GenPArgs& a, int l, const GenW8 w[GEN_P_NA], const float u[GEN_P_NA][8],
                                        int row, int s, int lane) {
    int E = a.E, Cd = a.Cd, K = a.K, K1 = K - 1, ch = row - E, is_conv = ch >= 0 && ch < Cd;
    const float* cw = a.conv_w + l * a.conv_w_ls;
    const float* wi = a.win_in + l * a.win_layer + (size_t)s * K1 * Cd;
    float cwv[GEN_P_KMAX], win[GEN_P_KMAX], cb = 0.f;
    if (is_conv) { /* the conv operands load while the dot runs */
        cb = a.conv_b[l * a.conv_b_ls + ch];
#pragma unroll
        for (int k = 0; k < GEN_P_KMAX; k++) {
            cwv[k] = k < K ? cw[ch * K + k] : 0.f;
            win[k] = k < K1 ? wi[(size_t)k * Cd + ch] : 0.f;
        }
    }
    float v = toF(fromF(warp_reduce_sum(gp_dot<GEN_P_NA>(w, u, a.D, lane))));
    if (lane != 0) return;
    a.zxbcdt[(size_t)s * a.Z + row] = fromF(v);
    if (!is_conv) return;
    float acc = cb;
#pragma unroll
    for (int k = 0; k < GEN_P_KMAX; k++) if (k < K1) acc += cwv[k] * win[k];
#pragma unroll
    for (int k = 0; k < GEN_P_KMAX; k++) if (k == K1) acc += cwv[k] * v;
    float* wo = a.win_out + l * a.win_layer + (size_t)s * K1 * Cd;
#pragma unroll
    for (int k = 0; k < GEN_P_KMAX; k++) if (k + 1 < K1) wo[(size_t)k * Cd + ch] = win[k + 1];
    wo[(size_t)(K1 - 1) * Cd + ch] = v;
    a.xbc[(size_t)s * Cd + ch] = fromF(acc / (1.f + expf(-acc)));
}

template <int RA>
__device__ static inline void gp_prefetch_in(GenW8 wa[RA][GEN_P_NA], const GenPArgs& a, int l, int gw, int NW,
                                             int lane) {
    const floatX* W = a.in_w + l * a.in_w_ls;
#pragma unroll
    for (int k = 0; k < RA; k++) {
        int row = gw + k * NW;
        gp_load_w<GEN_P_NA>(wa[k], W + (size_t)(row < a.Z ? row : 0) * a.D, a.D, lane, row < a.Z);
    }
}

template <int RA>
__device__ static inline void gp_phase_in(const GenPArgs& a, int l, const GenW8 wa[RA][GEN_P_NA], int gw, int NW,
                                          int lane) {
    int D = a.D;
    const float* nw = a.norm_w + l * a.norm_w_ls;
    const floatX* W = a.in_w + l * a.in_w_ls;
    float nwv[GEN_P_NA][8];
#pragma unroll
    for (int j = 0; j < GEN_P_NA; j++) {
        int i = (j * WARP_SIZE + lane) * 8;
#pragma unroll
        for (int e = 0; e < 8; e++) nwv[j][e] = i < D ? nw[i + e] : 0.f;
    }
    #pragma unroll 1
    for (int s = 0; s < a.S; s++) {
        float u[GEN_P_NA][8], ss = 0.f;
        gp_load_chunks<GEN_P_NA>(u, a.x + (size_t)s * D, D, lane);
#pragma unroll
        for (int j = 0; j < GEN_P_NA; j++)
#pragma unroll
            for (int e = 0; e < 8; e++) ss += u[j][e] * u[j][e];
        float r = rsqrtf(warp_reduce_sum(ss) / D + 1e-5f);
#pragma unroll
        for (int j = 0; j < GEN_P_NA; j++)
#pragma unroll
            for (int e = 0; e < 8; e++) u[j][e] = toF(fromF(u[j][e] * r * nwv[j][e]));
#pragma unroll
        for (int k = 0; k < RA; k++) {
            int row = gw + k * NW;
            if (row < a.Z) gp_in_row(a, l, wa[k], u, row, s, lane);
        }
        #pragma unroll 1
        for (int row = gw + RA * NW; row < a.Z; row += NW) {
            GenW8 w[GEN_P_NA];
            gp_load_w<GEN_P_NA>(w, W + (size_t)row * D, D, lane, 1);
            gp_in_row(a, l, w, u, row, s, lane);
        }
    }
}

/* (b): the first item's state vector, before the barrier (the state was written by the previous step) */
template <typename St>
__device__ static inline void gp_prefetch_state(Vec128<St>& sv, const GenPArgs& a, int l, int gw, int lane) {
    constexpr int EPV = 16 / sizeof(St);
    int rpw = WARP_SIZE / a.tpr, items = a.S * a.H * a.P / rpw;
    if (gw >= items) {
#pragma unroll
        for (int j = 0; j < EPV; j++) sv.v[j] = St(0.f);
        return;
    }
    int rowid = gw * rpw + lane / a.tpr;
    sv = load128cs((const St*)a.state + l * a.state_layer + (size_t)rowid * a.N + (lane % a.tpr) * EPV);
}

template <typename St>
__device__ static inline void gp_phase_state(const GenPArgs& a, int l, Vec128<St> sv, int gw, int NW, int lane) {
    constexpr int EPV = 16 / sizeof(St);
    int tpr = a.tpr, rpw = WARP_SIZE / tpr, sub = lane % tpr, n0 = sub * EPV;
    int E = a.E, N = a.N, G = a.G, P = a.P, HP = a.H * P, items = a.S * HP / rpw;
    St* state = (St*)a.state + l * a.state_layer;
    const float *dt_bias = a.dt_bias + l * a.dt_bias_ls, *A_log = a.A_log + l * a.A_log_ls;
    const float* Dskip = a.Dskip + l * a.Dskip_ls;
    #pragma unroll 1
    for (int it = gw; it < items; it += NW) {
        int rowid = it * rpw + lane / tpr, s = rowid / HP, hp = rowid % HP, h = hp / P, g = h / (a.H / G);
        St* st = state + (size_t)rowid * N + n0;
        if (it != gw) sv = load128cs(st);
        const floatX* xr = a.xbc + (size_t)s * a.Cd;
        const floatX* zr = a.zxbcdt + (size_t)s * a.Z;
        float xp = toF(__ldcg(xr + hp)), Bv[EPV], Cv[EPV];
#pragma unroll
        for (int j = 0; j < EPV; j++) {
            Bv[j] = toF(__ldcg(xr + E + g * N + n0 + j));
            Cv[j] = toF(__ldcg(xr + E + G * N + g * N + n0 + j));
        }
        float u = toF(__ldcg(zr + E + a.Cd + h)) + dt_bias[h], zv = toF(__ldcg(zr + hp));
        float A = -expf(A_log[h]), Dh = Dskip[h];
        float dt = u > 20.f ? u : log1pf(expf(u));
        float aa = expf(dt * A), dtx = dt * xp, acc = 0.f;
        Vec128<St> out;
#pragma unroll
        for (int j = 0; j < EPV; j++) {
            float v = aa * toF(sv.v[j]) + dtx * Bv[j];
            st_set(out.v[j], v);
            acc += v * Cv[j];
        }
        store128cs(st, out);
        for (int off = tpr / 2; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (sub == 0) {
            floatX yv = fromF(acc + Dh * xp);
            a.y[(size_t)s * E + hp] = yv;
            a.gate[(size_t)s * E + hp] = toF(yv) * zv / (1.f + expf(-zv));
        }
    }
}

/* (c) out_proj row o for every sequence: x[s, o] += floatX(RMSNorm_g(gate) * gnorm_w . W_out row o) */
__device__ static inline void gp_out_row(const GenPArgs& a, int l, const GenW8 w[GEN_P_NC], int o, int lane) {
    int E = a.E, D = a.D, Eg = E / a.G;
    const float* gnw = a.gnorm_w + l * a.gnorm_w_ls;
    #pragma unroll 1
    for (int s = 0; s < a.S; s++) {
        float g[GEN_P_NC][8];
        gp_load_chunks<GEN_P_NC>(g, a.gate + (size_t)s * E, E, lane);
        float xo = __ldcg(a.x + (size_t)s * D + o);
        float rj[GEN_P_NC]; /* the norm factor of chunk j's group */
#pragma unroll 1
        for (int gi = 0; gi < a.G; gi++) { /* one pass a group (a chunk lies in one group: Eg % 8 == 0) */
            float ss = 0.f;
#pragma unroll
            for (int j = 0; j < GEN_P_NC; j++) {
                int i = (j * WARP_SIZE + lane) * 8;
                if (i < E && i / Eg == gi)
#pragma unroll
                    for (int e = 0; e < 8; e++) ss += g[j][e] * g[j][e];
            }
            float r = rsqrtf(warp_reduce_sum(ss) / Eg + 1e-5f);
#pragma unroll
            for (int j = 0; j < GEN_P_NC; j++) {
                int i = (j * WARP_SIZE + lane) * 8;
                if (i < E && i / Eg == gi) rj[j] = r;
            }
        }
        /* gn = floatX(g r w), then the dot: chunk by chunk, so gn never needs registers of its own */
        float acc = 0.f;
#pragma unroll
        for (int j = 0; j < GEN_P_NC; j++) {
            int i = (j * WARP_SIZE + lane) * 8;
            if (i >= E) break;
            float4 w0 = *(const float4*)(gnw + i), w1 = *(const float4*)(gnw + i + 4);
            float wn[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w}, wv[8], u[8];
#pragma unroll
            for (int e = 0; e < 8; e++) u[e] = toF(fromF(g[j][e] * rj[j] * wn[e]));
#pragma unroll
            for (int q = 0; q < 8 / XVEC; q++)
#pragma unroll
                for (int e = 0; e < XVEC; e++) wv[q * XVEC + e] = toF(w[j].v[q].v[e]);
            float t = __fmul_rn(wv[0], u[0]);
#pragma unroll
            for (int e = 1; e < 8; e++) t = __fmaf_rn(wv[e], u[e], t);
            acc = __fadd_rn(acc, t);
        }
        float v = warp_reduce_sum(acc);
        if (lane == 0) a.x[(size_t)s * D + o] = xo + toF(fromF(v));
    }
}

__device__ static inline void gp_phase_out(const GenPArgs& a, int l, const GenW8 wc[GEN_P_NC], int gw, int NW,
                                           int lane) {
    const floatX* W = a.out_w + l * a.out_w_ls;
    if (gw < a.D) gp_out_row(a, l, wc, gw, lane);
    #pragma unroll 1
    for (int o = gw + NW; o < a.D; o += NW) {
        GenW8 w[GEN_P_NC];
        gp_load_w<GEN_P_NC>(w, W + (size_t)o * a.E, a.E, lane, 1);
        gp_out_row(a, l, w, o, lane);
    }
}

/* MINB blocks per SM (the register budget: 1 block, 255 registers, or 2, 128 with spills); RA in_proj rows per warp
 * prefetched across the barrier (more rows load after it): 4 x 8 warps x 132 SMs or 2 x 16 x 132 cover 130M's 3352 */
template <typename St, int MINB, int RA>
__global__ static void __launch_bounds__(GEN_P_THREADS, MINB) gen_persist_step_kernel(const GenPArgs a) {
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, wpb = blockDim.x / WARP_SIZE;
    int NW = gridDim.x * wpb, gw = warp * gridDim.x + blockIdx.x;
    unsigned target = 0;
    GenW8 wa[RA][GEN_P_NA];
    GenW8 wc[GEN_P_NC];
    Vec128<St> sv;
    gp_prefetch_in<RA>(wa, a, 0, gw, NW, lane); /* weights: before the wait */
    gen_wait_prior();
    #pragma unroll 1
    for (int l = 0; l < a.L; l++) {
        if (l == a.L - 1) gen_allow_next(); /* the LM head may launch and load its first rows during the last layer */
        if (!a.only_barriers) gp_phase_in<RA>(a, l, wa, gw, NW, lane);
        gen_bar_arrive(a.bar);
        gp_prefetch_state<St>(sv, a, l, gw, lane); /* the prefetches run even with only_barriers: no old values live */
        gen_bar_wait(a.bar, target += gridDim.x);
        if (!a.only_barriers) gp_phase_state<St>(a, l, sv, gw, NW, lane);
        gen_bar_arrive(a.bar);
        gp_load_w<GEN_P_NC>(wc, a.out_w + l * a.out_w_ls + (size_t)(gw < a.D ? gw : 0) * a.E, a.E, lane, gw < a.D);
        gen_bar_wait(a.bar, target += gridDim.x);
        if (!a.only_barriers) gp_phase_out(a, l, wc, gw, NW, lane);
        if (l + 1 < a.L) {
            gen_bar_arrive(a.bar);
            gp_prefetch_in<RA>(wa, a, l + 1, gw, NW, lane);
            gen_bar_wait(a.bar, target += gridDim.x);
        }
    }
}

/* why the persistent step cannot take these shapes (NULL: it can); st_bytes: the state's element size */
static const char* gen_persist_unsupported(int S, int D, int E, int H, int P, int N, int G, int K, int st_bytes) {
    int EPV = 16 / st_bytes, tpr = N / EPV;
    if (S < 1 || S > GEN_SMALL_S) return "more sequences than the small path takes";
    if (D % 8 != 0 || D > GEN_P_NA * 256) return "d_model must be a multiple of 8 and at most 768";
    if (E % 8 != 0 || E > GEN_P_NC * 256) return "d_inner must be a multiple of 8 and at most 1536";
    if (G < 1 || H % G != 0 || E % G != 0 || (E / G) % 8 != 0) return "each group needs a multiple of 8 channels";
    if (K < 2 || K > GEN_P_KMAX) return "d_conv must be 2..4";
    if (N % EPV != 0 || tpr > WARP_SIZE || (tpr & (tpr - 1)) != 0)
        return "d_state must be a power of two times a 16-byte vector, at most a warp's worth";
    if (P % (WARP_SIZE / tpr) != 0) return "headdim must be a multiple of the state rows a warp takes";
    return NULL;
}

/* the kernel variant for g_gen_p_blocks (-W): 1 block per SM with 4 prefetched rows, or 2 with 2 */
template <typename St>
static void (*gen_persist_kernel(void))(const GenPArgs) {
    return g_gen_p_blocks >= 2 ? gen_persist_step_kernel<St, 2, 2> : gen_persist_step_kernel<St, 1, 4>;
}

/* blocks of the persistent grid: g_gen_p_blocks (1 or 2) per SM, if that many are resident at once; else 0 */
template <typename St>
static int gen_persist_grid(void) {
    int per_sm = 0, want = g_gen_p_blocks >= 2 ? 2 : 1;
    cudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gen_persist_kernel<St>(), GEN_P_THREADS, 0));
    return per_sm >= want ? want * cuda_num_sms() : 0;
}

/* launch the step; returns the launch's error (a cooperative launch the driver refuses) instead of dying */
template <typename St>
static cudaError_t gen_persist_step(const GenPArgs& a, int grid, cudaStream_t stream) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(GEN_P_THREADS);
    cfg.dynamicSmemBytes = 0;
    cfg.stream = stream;
    cudaLaunchAttribute attr[2];
    int n = 0;
    if (gen_pdl_on()) {
        attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[n++].val.programmaticStreamSerializationAllowed = 1;
    }
    if (g_gen_coop) {
        attr[n].id = cudaLaunchAttributeCooperative;
        attr[n++].val.cooperative = 1;
    }
    cfg.attrs = attr;
    cfg.numAttrs = n;
    return cudaLaunchKernelEx(&cfg, gen_persist_kernel<St>(), a);
}

} /* namespace decode_lab */

#endif
