/*
 * conv1d.cuh: the causal depthwise conv1d over the xBC columns, fused with its bias and SiLU.
 *
 * Forward:  out[t, c] = SiLU(p[t, c]),  p[t, c] = b[c] + sum_{k<K} w[c, k] * in[t - (K-1) + k, c]
 *           in = the xBC columns of zxbcdt (row stride d_in_proj), zero before t = 0 of each sequence;
 *           out = xbc (BT, conv_dim).
 * Backward: given dout = dxbc (BT, conv_dim), recompute p (cheaper than storing it: K multiply-adds per element),
 *           dp = dout * SiLU'(p), SiLU'(p) = s (1 + p (1 - s)), s = sigmoid(p), and
 *             din[s, c] = sum_k w[c, k] * dp[s + (K-1) - k, c]   (written into the xBC columns of d_zxbcdt)
 *             dw[c, k] += sum_t dp[t, c] * in[t - (K-1) + k, c],   db[c] += sum_t dp[t, c]
 *           dw/db are deterministic: per-block partial sums (threads of a block combined in a fixed order), then
 *           partial_sums_accumulate.
 *
 * Work split: a thread owns VEC = 8 consecutive channels (one 16-byte load in bf16) and a segment of seg_len time
 * steps of one sequence, sliding a K-wide window of inputs (and, in backward, of dp) through registers, so each
 * input row is read once plus a K-1 halo per segment. The vector widths and segment lengths are defaults chosen by
 * the sweep in dev/cuda/conv1d.cu (NOTES_kernels.md). K is a template parameter (1..8) so the windows stay in
 * registers. When the channel count, the row stride or a pointer does not allow 16-byte accesses, a scalar
 * (VEC = 1) instance runs instead.
 *
 * Tiled kernels (v5, the default): a block stages tiles of 64 channels x 64 time steps (plus the K-1 halo rows) of
 * the input, and of dout in backward, in shared memory with 16-byte cp.async copies (each row segment one 128-byte
 * line in bf16), then thread (channel, slice) runs the same sliding-window recurrence as below over its 16 time steps,
 * reading the tile from shared memory. A block walks `tiles` consecutive time tiles of one sequence, double buffered
 * (tile i + 1's copies in flight while tile i is computed), writes its outputs through a shared-memory tile with
 * 16-byte stores, and keeps dw/db in registers across its tiles (+ one conv1d_partials_accumulate launch for both):
 * conv1d_forward_pipe_kernel<K>, conv1d_backward_pipe_kernel<K>. (v4, the same tiles single-buffered with 2-byte
 * stores, was 15-20% slower and is gone: NOTES_kernels.md.)
 * Document boundaries (doc/packing.md): seq (B, T) device ints, each position's document, or NULL. With seq, the
 * window of position t reads zero at every position of another document than t's (train_mamba2.c's same_doc), and
 * the backward drops the same (t, ts) pairs from din and dw. Each thread carries the documents of its window
 * positions in registers beside the window itself (one broadcast load per time step); the tiled kernels take it as
 * a template flag, so the NULL path is the same code as before, to the instruction.
 * Kernels: conv1d_forward_kernel<K, VEC>, conv1d_backward_kernel<K, VEC> (+ partial_sums_accumulate_kernel).
 * Launchers: conv1d_forward, conv1d_backward (v5, else the scalar per-thread kernels); _pipe and _cfg versions
 * for dev/cuda; conv1d_backward_scratch_floats sizes the partials buffer.
 */
#ifndef MAMBA2_CONV1D_CUH
#define MAMBA2_CONV1D_CUH

#include "cuda_common.h"
#include "utils.h"
#include "vec128.cuh"
#include "partial_sum.cuh"

/* time steps per thread (a runtime argument, so dev/cuda/conv1d.cu can sweep it; these are the defaults) */
#ifndef CONV_FWD_SEG
#define CONV_FWD_SEG 64
#endif
#ifndef CONV_BWD_SEG
#define CONV_BWD_SEG 64
#endif
#ifndef CONV_T_UNROLL
#define CONV_T_UNROLL 4    /* time steps unrolled: loads of several steps in flight before the first is used */
#endif
/* #pragma unroll takes a constant, not a macro; wide windows (K * VEC > 32 floats) are not unrolled: they would
 * spill */
template <int K, int VEC>
struct ConvUnroll { static constexpr int n = K * VEC <= 32 ? CONV_T_UNROLL : 1; };
#define CONV_MIN_SEG 8     /* the scratch buffer is sized for this shortest segment */
#define CONV_BWD_SEGS 8    /* segments (threadIdx.y) per backward block */
#define CONV_MAX_K 8

/* the document of position t of a sequence (seqb: its row of the (B, T) index), or -1 outside [0, T): a window slot
 * there holds zeros anyway, and dp is zero past T */
__device__ static inline int conv_doc_at(const int* seqb, int t, int T) { return t >= 0 && t < T ? seqb[t] : -1; }

template <int K, int VEC>
__global__ static void conv1d_forward_kernel(floatX* out, const floatX* in, int in_stride, const float* w,
                                             const float* bias, const int* seq, int B, int T, int C, int seg_len) {
    int ncv = C / VEC, nseg = CEIL_DIV(T, seg_len);
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * nseg * ncv) return;
    int cv = (int)(idx % ncv), seg = (int)(idx / ncv);
    int b = seg / nseg, t0 = (seg % nseg) * seg_len;
    int t1 = min(t0 + seg_len, T);
    int c0 = cv * VEC;
    float wr[VEC][K], br[VEC];
#pragma unroll
    for (int i = 0; i < VEC; i++) {
        br[i] = bias[c0 + i];
#pragma unroll
        for (int k = 0; k < K; k++) wr[i][k] = w[(c0 + i) * K + k];
    }
    const floatX* inb = in + (size_t)b * T * in_stride + c0;
    const int* seqb = seq ? seq + (size_t)b * T : NULL;
    float win[K][VEC];   /* win[0..K-2] = inputs t-(K-1) .. t-1 (slot K-1 unused) */
    int sw[K];           /* with seq: the documents of positions t-(K-1) .. t */
#pragma unroll
    for (int j = 0; j < K - 1; j++) {
        int t = t0 - (K - 1) + j;
        if (t >= 0) loadNX<VEC>(win[j], inb + (size_t)t * in_stride);
        else for (int i = 0; i < VEC; i++) win[j][i] = 0.f;
        sw[j] = seqb ? conv_doc_at(seqb, t, T) : 0;
    }
    floatX* outb = out + (size_t)b * T * C + c0;
#pragma unroll ConvUnroll<K, VEC>::n
    for (int t = t0; t < t1; t++) {
        float cur[VEC], o[VEC];
        loadNX<VEC>(cur, inb + (size_t)t * in_stride);
        sw[K - 1] = seqb ? seqb[t] : 0;
#pragma unroll
        for (int i = 0; i < VEC; i++) {
            float p = br[i] + wr[i][K - 1] * cur[i];
#pragma unroll
            for (int k = 0; k < K - 1; k++)
                if (sw[k] == sw[K - 1]) p += wr[i][k] * win[k][i];
            o[i] = p * fast_sigmoid(p);
        }
        storeNX<VEC>(outb + (size_t)t * C, o);
#pragma unroll
        for (int j = 0; j + 1 < K - 1; j++)
            for (int i = 0; i < VEC; i++) win[j][i] = win[j + 1][i];
        if (K > 1)
            for (int i = 0; i < VEC; i++) win[K - 2][i] = cur[i];
#pragma unroll
        for (int j = 0; j + 1 < K; j++) sw[j] = sw[j + 1];
    }
}

template <int K, int VEC>
__global__ static void conv1d_backward_kernel(floatX* din, int din_stride, float* dw_partials, float* db_partials,
                                              const floatX* dout, const floatX* in, int in_stride, const float* w,
                                              const float* bias, const int* seq, int B, int T, int C, int seg_len) {
    __shared__ float block_acc[WARP_SIZE][VEC * (K + 1)];
    int ncv = C / VEC, nseg = CEIL_DIV(T, seg_len);
    int cv = blockIdx.x * WARP_SIZE + threadIdx.x;
    int seg = blockIdx.y * CONV_BWD_SEGS + threadIdx.y;
    int active = cv < ncv && seg < B * nseg;
    float dwa[VEC][K], dba[VEC];
#pragma unroll
    for (int i = 0; i < VEC; i++) {
        dba[i] = 0.f;
#pragma unroll
        for (int k = 0; k < K; k++) dwa[i][k] = 0.f;
    }
    if (active) {
        int b = seg / nseg, t0 = (seg % nseg) * seg_len;
        int t1 = min(t0 + seg_len, T);
        int c0 = cv * VEC;
        float wr[VEC][K], br[VEC];
#pragma unroll
        for (int i = 0; i < VEC; i++) {
            br[i] = bias[c0 + i];
#pragma unroll
            for (int k = 0; k < K; k++) wr[i][k] = w[(c0 + i) * K + k];
        }
        const floatX* inb = in + (size_t)b * T * in_stride + c0;
        const floatX* doutb = dout + (size_t)b * T * C + c0;
        floatX* dinb = din + (size_t)b * T * din_stride + c0;
        const int* seqb = seq ? seq + (size_t)b * T : NULL;
        float win[K][VEC];   /* inputs t-(K-1) .. t-1 in slots 0..K-2 */
        float dpw[K][VEC];   /* dp[t-(K-1)] .. dp[t] in slots 0..K-1 */
        int sw[K];           /* with seq: the documents of positions t-(K-1) .. t */
#pragma unroll
        for (int j = 0; j < K; j++) {
            int t = t0 - (K - 1) + j;
            for (int i = 0; i < VEC; i++) dpw[j][i] = 0.f;
            if (j < K - 1) {
                if (t >= 0) loadNX<VEC>(win[j], inb + (size_t)t * in_stride);
                else for (int i = 0; i < VEC; i++) win[j][i] = 0.f;
                sw[j] = seqb ? conv_doc_at(seqb, t, T) : 0;
            }
        }
        /* t runs K-1 steps past the segment: din[s] needs dp up to s + K-1 (zero past the sequence end) */
#pragma unroll ConvUnroll<K, VEC>::n
        for (int t = t0; t < t1 + K - 1; t++) {
            float cur[VEC], dp[VEC];
            sw[K - 1] = seqb ? conv_doc_at(seqb, t, T) : 0;
            if (t < T) {
                float g[VEC];
                loadNX<VEC>(cur, inb + (size_t)t * in_stride);
                loadNX<VEC>(g, doutb + (size_t)t * C);
#pragma unroll
                for (int i = 0; i < VEC; i++) {
                    float p = br[i] + wr[i][K - 1] * cur[i];
#pragma unroll
                    for (int k = 0; k < K - 1; k++)
                        if (sw[k] == sw[K - 1]) p += wr[i][k] * win[k][i];
                    float s = fast_sigmoid(p);
                    dp[i] = g[i] * s * (1.f + p * (1.f - s));
                }
            } else {
                for (int i = 0; i < VEC; i++) { cur[i] = 0.f; dp[i] = 0.f; }
            }
            if (t < t1) {   /* this segment's own time steps feed dw and db (halo steps belong to the next) */
#pragma unroll
                for (int i = 0; i < VEC; i++) {
                    dba[i] += dp[i];
                    dwa[i][K - 1] += dp[i] * cur[i];
#pragma unroll
                    for (int k = 0; k < K - 1; k++)
                        if (sw[k] == sw[K - 1]) dwa[i][k] += dp[i] * win[k][i];
                }
            }
#pragma unroll
            for (int j = 0; j + 1 < K; j++)
                for (int i = 0; i < VEC; i++) dpw[j][i] = dpw[j + 1][i];
            for (int i = 0; i < VEC; i++) dpw[K - 1][i] = dp[i];
            int s = t - (K - 1);
            if (s >= t0) {   /* din[s]: the outputs t' = s .. s+K-1 of s's document read it */
                float d[VEC];
#pragma unroll
                for (int i = 0; i < VEC; i++) {
                    d[i] = 0.f;
#pragma unroll
                    for (int k = 0; k < K; k++)
                        if (sw[K - 1 - k] == sw[0]) d[i] += wr[i][k] * dpw[K - 1 - k][i];
                }
                storeNX<VEC>(dinb + (size_t)s * din_stride, d);
            }
#pragma unroll
            for (int j = 0; j + 1 < K - 1; j++)
                for (int i = 0; i < VEC; i++) win[j][i] = win[j + 1][i];
            if (K > 1)
                for (int i = 0; i < VEC; i++) win[K - 2][i] = cur[i];
#pragma unroll
            for (int j = 0; j + 1 < K; j++) sw[j] = sw[j + 1];
        }
    }
    /* combine the CONV_BWD_SEGS segments of this block in increasing threadIdx.y: a fixed order */
    for (int y = 0; y < CONV_BWD_SEGS; y++) {
        if (threadIdx.y == y) {
#pragma unroll
            for (int i = 0; i < VEC; i++) {
#pragma unroll
                for (int k = 0; k < K; k++) {
                    float* a = &block_acc[threadIdx.x][i * K + k];
                    *a = (y == 0 ? 0.f : *a) + dwa[i][k];
                }
                float* a = &block_acc[threadIdx.x][VEC * K + i];
                *a = (y == 0 ? 0.f : *a) + dba[i];
            }
        }
        __syncthreads();
    }
    if (threadIdx.y == 0 && cv < ncv) {
        int c0 = cv * VEC;
        for (int j = 0; j < VEC * K; j++) dw_partials[(size_t)blockIdx.y * C * K + (size_t)c0 * K + j] =
            block_acc[threadIdx.x][j];
        for (int i = 0; i < VEC; i++)
            db_partials[(size_t)blockIdx.y * C + c0 + i] = block_acc[threadIdx.x][VEC * K + i];
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Tiled kernels. Tile: CONV_TILE_C channels x CONV_TILE_T time steps of one sequence. Thread (cl, q) owns channel
 * cl of the tile and the CONV_TILE_STEPS time steps q * CONV_TILE_STEPS + (0..); a warp is 32 consecutive channels of
 * one slice, so its shared-memory reads are 32 consecutive elements (no bank conflicts) and its din/out stores 64
 * contiguous bytes.
 */
#define CONV_TILE_C 64
#define CONV_TILE_T 64
#define CONV_TILE_THREADS 256
#define CONV_TILE_SLICES (CONV_TILE_THREADS / CONV_TILE_C)   /* 4 */
#define CONV_TILE_STEPS (CONV_TILE_T / CONV_TILE_SLICES)     /* 16 */

/* The tile copies are cp.async (sm_80 on). Compiled for an older GPU (the fp32 build's sm_7x targets: doc/gpus.md)
   they are plain 16-byte copies, done when issued, so the commits and waits below have nothing to wait for; the
   kernels' __syncthreads still order them, and the results are the same. */
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define CONV_CP_ASYNC 1
#else
#define CONV_CP_ASYNC 0
#endif

__device__ static inline void conv_cp_async16(void* dst, const void* src, int valid) {
    /* src-size 0 zero-fills the 16 bytes (rows before t = 0, past T, channels past C) */
#if CONV_CP_ASYNC
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"((unsigned)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
#else
    *(int4*)dst = valid ? *(const int4*)src : make_int4(0, 0, 0, 0);
#endif
}
__device__ static inline void conv_cp_async_wait_all(void) {
#if CONV_CP_ASYNC
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

/* rows r = 0..nrows-1 of a tile, time t_first + r, channels ct0 .. ct0 + CONV_TILE_C - 1, into dst (nrows, TILE_C) */
__device__ static inline void conv_stage_rows(floatX* dst, const floatX* src, int stride, int t_first, int nrows,
                                              int T, int ct0, int C) {
    constexpr int per_row = CONV_TILE_C / XVEC;   /* 16-byte pieces of one row: 8 in bf16 */
    for (int idx = threadIdx.x; idx < nrows * per_row; idx += CONV_TILE_THREADS) {
        int r = idx / per_row, piece = idx % per_row;
        int t = t_first + r, c = ct0 + piece * XVEC;
        int ok = t >= 0 && t < T && c < C;
        conv_cp_async16(dst + r * CONV_TILE_C + piece * XVEC, ok ? src + (size_t)t * stride + c : src, ok);
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Pipelined tiled kernels (v5, the default where 16-byte accesses are possible). Same tile and thread mapping as v4,
 * with two changes that v4's 61% of the floor pointed at:
 * - double buffering: a block walks `tiles` consecutive time tiles of one sequence, and the cp.async copies of tile
 *   i + 1 go out before tile i is computed, so each block keeps loads in flight while it computes (v4 loaded, waited,
 *   computed: its load and compute phases only overlapped with other blocks');
 * - the outputs (out in forward, din in backward) are written to a tile in shared memory first and then stored with
 *   16-byte stores, 8 per 128-byte row segment (v4: one 2-byte store per element, 64 bytes a warp instruction).
 * Dynamic shared memory (bf16, K = 4): forward 2 x 67 + 64 rows of 128 bytes = 25 KB; backward 2 x (70 + 67) + 64
 * rows = 43 KB (the dw/db reduction reuses the input buffers at the end); 4 blocks an SM either way.
 */
/* time tiles a block walks (dev/cuda/conv1d.cu sweeps them). H100, 130M shape, bf16, 1/2/4/8 tiles: forward
 * 0.0544/0.0501/0.0523/0.0566 ms, backward 0.0871/0.0819/0.0869/0.0881 ms (NOTES_kernels.md) */
#ifndef CONV_FWD_PIPE_TILES
#define CONV_FWD_PIPE_TILES 2
#endif
#ifndef CONV_BWD_PIPE_TILES
#define CONV_BWD_PIPE_TILES 2
#endif

__device__ static inline void conv_cp_async_commit(void) {
#if CONV_CP_ASYNC
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
/* wait until at most n (0 or 1) of this thread's committed copy groups are in flight */
__device__ static inline void conv_cp_async_wait(int n) {
#if CONV_CP_ASYNC
    if (n == 0) asm volatile("cp.async.wait_group 0;\n" ::: "memory");
    else asm volatile("cp.async.wait_group 1;\n" ::: "memory");
#else
    (void)n;
#endif
}

/* store a finished (CONV_TILE_T, CONV_TILE_C) output tile from shared memory, 16 bytes a thread per step: rows past T
 * and channels past C are skipped; dst is the sequence's first row at channel 0, row stride `stride` */
__device__ static inline void conv_store_tile(floatX* dst, int stride, const floatX* tile_s, int t0, int T, int ct0,
                                              int C) {
    constexpr int per_row = CONV_TILE_C / XVEC;
    for (int idx = threadIdx.x; idx < CONV_TILE_T * per_row; idx += CONV_TILE_THREADS) {
        int r = idx / per_row, piece = idx % per_row;
        int t = t0 + r, c = ct0 + piece * XVEC;
        if (t < T && c < C)
            store128(dst + (size_t)t * stride + c, *reinterpret_cast<const Vec128<floatX>*>(tile_s + r * CONV_TILE_C +
                                                                                            piece * XVEC));
    }
}

/* time tiles of block row tg (a run of `tiles` tiles of one sequence) that lie inside the sequence */
__device__ static inline int conv_block_tiles(int tg, int tiles, int T) {
    int left = CEIL_DIV(T, CONV_TILE_T) - tg * tiles;
    return left < tiles ? left : tiles;
}

template <int K>
static size_t conv1d_forward_pipe_smem(void) {
    return (size_t)(2 * (CONV_TILE_T + K - 1) + CONV_TILE_T) * CONV_TILE_C * sizeof(floatX);
}

template <int K, bool DOCS>
__global__ static void __launch_bounds__(CONV_TILE_THREADS)
conv1d_forward_pipe_kernel(floatX* out, const floatX* in, int in_stride, const float* w, const float* bias,
                           const int* seq, int B, int T, int C, int tiles) {
    constexpr int IN_ROWS = CONV_TILE_T + K - 1;   /* inputs t0-(K-1) .. t0+TILE_T-1 */
    constexpr int IN_TILE = IN_ROWS * CONV_TILE_C;
    extern __shared__ float4 conv_smem[];
    floatX* in_s = (floatX*)conv_smem;   /* [2][IN_TILE] */
    floatX* out_s = in_s + 2 * IN_TILE;  /* [TILE_T][TILE_C] */
    int cl = threadIdx.x % CONV_TILE_C, q = threadIdx.x / CONV_TILE_C;
    int ct0 = blockIdx.x * CONV_TILE_C, c = ct0 + cl;
    int groups_per_seq = CEIL_DIV(T, CONV_TILE_T * tiles);
    int b = blockIdx.y / groups_per_seq, tg = blockIdx.y % groups_per_seq;
    int n = conv_block_tiles(tg, tiles, T);
    const floatX* inb = in + (size_t)b * T * in_stride;
    const int* seqb = DOCS ? seq + (size_t)b * T : NULL;
    int tb = tg * tiles * CONV_TILE_T;   /* first time step of the block */
    conv_stage_rows(in_s, inb, in_stride, tb - (K - 1), IN_ROWS, T, ct0, C);
    conv_cp_async_commit();
    float wr[K], br = 0.f;
#pragma unroll
    for (int k = 0; k < K; k++) wr[k] = c < C ? w[c * K + k] : 0.f;
    if (c < C) br = bias[c];
    int s0 = q * CONV_TILE_STEPS;
    for (int i = 0; i < n; i++) {
        int t0 = tb + i * CONV_TILE_T;
        const floatX* cur_s = in_s + (i & 1) * IN_TILE;
        if (i + 1 < n) {   /* the next tile's copies go out before this one is computed */
            conv_stage_rows(in_s + ((i + 1) & 1) * IN_TILE, inb, in_stride, t0 + CONV_TILE_T - (K - 1), IN_ROWS, T,
                            ct0, C);
            conv_cp_async_commit();
            conv_cp_async_wait(1);
        } else {
            conv_cp_async_wait(0);
        }
        __syncthreads();   /* every thread's copies of this tile have landed */
        float win[K];      /* inputs t-(K-1) .. t-1 in slots 0..K-2 */
        int sw[K];         /* DOCS: the documents of positions t-(K-1) .. t */
#pragma unroll
        for (int j = 0; j < K - 1; j++) {
            win[j] = toF(cur_s[(s0 + j) * CONV_TILE_C + cl]);
            if (DOCS) sw[j] = conv_doc_at(seqb, t0 + s0 - (K - 1) + j, T);
        }
#pragma unroll
        for (int j = 0; j < CONV_TILE_STEPS; j++) {
            float cur = toF(cur_s[(s0 + j + K - 1) * CONV_TILE_C + cl]);
            if (DOCS) sw[K - 1] = conv_doc_at(seqb, t0 + s0 + j, T);
            float p = br + wr[K - 1] * cur;
#pragma unroll
            for (int k = 0; k < K - 1; k++)
                if (!DOCS || sw[k] == sw[K - 1]) p += wr[k] * win[k];
            out_s[(s0 + j) * CONV_TILE_C + cl] = fromF(p * fast_sigmoid(p));
#pragma unroll
            for (int k = 0; k + 1 < K - 1; k++) win[k] = win[k + 1];
            if (K > 1) win[K - 2] = cur;
            if (DOCS)
#pragma unroll
                for (int k = 0; k + 1 < K; k++) sw[k] = sw[k + 1];
        }
        __syncthreads();   /* out_s complete; cur_s free for tile i + 2's copies */
        conv_store_tile(out + (size_t)b * T * C, C, out_s, t0, T, ct0, C);
    }
}

template <int K>
static size_t conv1d_backward_pipe_smem(void) {
    return (size_t)(2 * (CONV_TILE_T + 2 * (K - 1)) + 2 * (CONV_TILE_T + K - 1) + CONV_TILE_T) * CONV_TILE_C *
           sizeof(floatX);
}

template <int K, bool DOCS>
__global__ static void __launch_bounds__(CONV_TILE_THREADS)
conv1d_backward_pipe_kernel(floatX* din, int din_stride, float* dw_partials, float* db_partials, const floatX* dout,
                            const floatX* in, int in_stride, const float* w, const float* bias, const int* seq, int B,
                            int T, int C, int tiles) {
    constexpr int IN_ROWS = CONV_TILE_T + 2 * (K - 1);   /* inputs t0-(K-1) .. t0+TILE_T+K-2 */
    constexpr int DOUT_ROWS = CONV_TILE_T + K - 1;       /* dout t0 .. t0+TILE_T+K-2: din[s] needs dp up to s+K-1 */
    constexpr int IN_TILE = IN_ROWS * CONV_TILE_C, DOUT_TILE = DOUT_ROWS * CONV_TILE_C;
    static_assert(CONV_TILE_SLICES * (K + 1) * CONV_TILE_C * sizeof(float) <=
                      2 * (IN_TILE + DOUT_TILE) * sizeof(floatX), "the dw/db reduction must fit the tile buffers");
    extern __shared__ float4 conv_smem[];
    floatX* in_s = (floatX*)conv_smem;       /* [2][IN_TILE] */
    floatX* dout_s = in_s + 2 * IN_TILE;     /* [2][DOUT_TILE] */
    floatX* din_s = dout_s + 2 * DOUT_TILE;  /* [TILE_T][TILE_C] */
    float* red = (float*)conv_smem;          /* [SLICES][K + 1][TILE_C], after the last tile (aliases in_s, dout_s) */
    int cl = threadIdx.x % CONV_TILE_C, q = threadIdx.x / CONV_TILE_C;
    int ct0 = blockIdx.x * CONV_TILE_C, c = ct0 + cl;
    int groups_per_seq = CEIL_DIV(T, CONV_TILE_T * tiles);
    int b = blockIdx.y / groups_per_seq, tg = blockIdx.y % groups_per_seq;
    int n = conv_block_tiles(tg, tiles, T);
    const floatX* inb = in + (size_t)b * T * in_stride;
    const floatX* doutb = dout + (size_t)b * T * C;
    const int* seqb = DOCS ? seq + (size_t)b * T : NULL;
    int tb = tg * tiles * CONV_TILE_T;
    conv_stage_rows(in_s, inb, in_stride, tb - (K - 1), IN_ROWS, T, ct0, C);
    conv_stage_rows(dout_s, doutb, C, tb, DOUT_ROWS, T, ct0, C);
    conv_cp_async_commit();
    float wr[K], br = 0.f;
#pragma unroll
    for (int k = 0; k < K; k++) wr[k] = c < C ? w[c * K + k] : 0.f;
    if (c < C) br = bias[c];
    float dwa[K], dba = 0.f;
#pragma unroll
    for (int k = 0; k < K; k++) dwa[k] = 0.f;
    int s0 = q * CONV_TILE_STEPS;
    for (int i = 0; i < n; i++) {
        int t0 = tb + i * CONV_TILE_T;
        const floatX* cin_s = in_s + (i & 1) * IN_TILE;
        const floatX* cdout_s = dout_s + (i & 1) * DOUT_TILE;
        if (i + 1 < n) {   /* the next tile's copies go out before this one is computed */
            int nt0 = t0 + CONV_TILE_T;
            conv_stage_rows(in_s + ((i + 1) & 1) * IN_TILE, inb, in_stride, nt0 - (K - 1), IN_ROWS, T, ct0, C);
            conv_stage_rows(dout_s + ((i + 1) & 1) * DOUT_TILE, doutb, C, nt0, DOUT_ROWS, T, ct0, C);
            conv_cp_async_commit();
            conv_cp_async_wait(1);
        } else {
            conv_cp_async_wait(0);
        }
        __syncthreads();   /* every thread's copies of this tile have landed */
        float win[K];      /* inputs t-(K-1) .. t-1 in slots 0..K-2 */
        float dpw[K];      /* dp[t-(K-1)] .. dp[t] in slots 0..K-1 */
        int sw[K];         /* DOCS: the documents of positions t-(K-1) .. t */
#pragma unroll
        for (int j = 0; j < K; j++) {
            dpw[j] = 0.f;
            if (j < K - 1) win[j] = toF(cin_s[(s0 + j) * CONV_TILE_C + cl]);
            if (DOCS && j < K - 1) sw[j] = conv_doc_at(seqb, t0 + s0 - (K - 1) + j, T);
        }
        /* local step j: time t = t0 + s0 + j; the K-1 steps past the slice recompute dp for din (zero past T: dout
         * was zero-filled there) */
#pragma unroll
        for (int j = 0; j < CONV_TILE_STEPS + K - 1; j++) {
            int t = t0 + s0 + j;
            float cur = toF(cin_s[(s0 + j + K - 1) * CONV_TILE_C + cl]);
            float g = toF(cdout_s[(s0 + j) * CONV_TILE_C + cl]);
            if (DOCS) sw[K - 1] = conv_doc_at(seqb, t, T);
            float p = br + wr[K - 1] * cur;
#pragma unroll
            for (int k = 0; k < K - 1; k++)
                if (!DOCS || sw[k] == sw[K - 1]) p += wr[k] * win[k];
            float sg = fast_sigmoid(p);
            float dp = g * sg * (1.f + p * (1.f - sg));
            if (j < CONV_TILE_STEPS && t < T) {   /* the slice's own steps feed dw and db */
                dba += dp;
                dwa[K - 1] += dp * cur;
#pragma unroll
                for (int k = 0; k < K - 1; k++)
                    if (!DOCS || sw[k] == sw[K - 1]) dwa[k] += dp * win[k];
            }
#pragma unroll
            for (int k = 0; k + 1 < K; k++) dpw[k] = dpw[k + 1];
            dpw[K - 1] = dp;
            if (j >= K - 1) {   /* din of step s = t-(K-1): the outputs s .. t of s's document read it */
                float d = 0.f;
#pragma unroll
                for (int k = 0; k < K; k++)
                    if (!DOCS || sw[K - 1 - k] == sw[0]) d += wr[k] * dpw[K - 1 - k];
                din_s[(s0 + j - (K - 1)) * CONV_TILE_C + cl] = fromF(d);
            }
#pragma unroll
            for (int k = 0; k + 1 < K - 1; k++) win[k] = win[k + 1];
            if (K > 1) win[K - 2] = cur;
            if (DOCS)
#pragma unroll
                for (int k = 0; k + 1 < K; k++) sw[k] = sw[k + 1];
        }
        __syncthreads();   /* din_s complete; this tile's buffers free for tile i + 2's copies */
        conv_store_tile(din + (size_t)b * T * din_stride, din_stride, din_s, t0, T, ct0, C);
    }
    /* the block's slices combined in increasing q: a fixed order. red aliases the tile buffers: every thread passed
     * the last tile's barrier after its last read of them, and no copy is in flight (wait_group 0) */
    if (c < C) {
#pragma unroll
        for (int k = 0; k < K; k++) red[(q * (K + 1) + k) * CONV_TILE_C + cl] = dwa[k];
        red[(q * (K + 1) + K) * CONV_TILE_C + cl] = dba;
    }
    __syncthreads();
    if (q == 0 && c < C) {
#pragma unroll
        for (int k = 0; k <= K; k++) {
            float s = 0.f;
            for (int qq = 0; qq < CONV_TILE_SLICES; qq++) s += red[(qq * (K + 1) + k) * CONV_TILE_C + cl];
            if (k < K) dw_partials[(size_t)blockIdx.y * C * (K + 1) + (size_t)c * K + k] = s;
            else db_partials[(size_t)blockIdx.y * C * (K + 1) + c] = s;
        }
    }
}

/* dw[j] += sum_r partials[r, j] for j < C*K and db[j - C*K] += the same for the C columns after them (partials row
 * stride C*(K+1)): partial_sums_accumulate's fixed order (thread (x, y) sums rows y, y + 16, ..., the 16 slices are
 * added in increasing y), in one launch for both gradients instead of two */
__global__ static void conv1d_partials_accumulate_kernel(float* dw, float* db, const float* partials, int nrows,
                                                         int C, int K) {
    __shared__ float slice_sum[PSUM_SLICES][PSUM_COLS + 1];
    int ncols = C * (K + 1);
    int col = blockIdx.x * PSUM_COLS + threadIdx.x;
    float s = 0.f;
    if (col < ncols)
        for (int r = threadIdx.y; r < nrows; r += PSUM_SLICES) s += partials[(size_t)r * ncols + col];
    slice_sum[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && col < ncols) {
        float total = 0.f;
        for (int y = 0; y < PSUM_SLICES; y++) total += slice_sum[y][threadIdx.x];
        if (col < C * K) dw[col] += total;
        else db[col - C * K] += total;
    }
}
static void conv1d_partials_accumulate(float* dw, float* db, const float* partials, int nrows, int C, int K,
                                       cudaStream_t stream) {
    dim3 block(PSUM_COLS, PSUM_SLICES);
    conv1d_partials_accumulate_kernel<<<CEIL_DIV(C * (K + 1), PSUM_COLS), block, 0, stream>>>(dw, db, partials,
                                                                                               nrows, C, K);
    cudaCheckLast();
}

/* 16-byte path possible? channels, row strides and pointers must all allow 8-element groups */
static int conv1d_vec8_ok(const void* a, int a_stride, const void* b, int C) {
    return C % 8 == 0 && a_stride % 8 == 0 && is_aligned16(a) && is_aligned16(b);
}

/* the kernels take K as a template parameter (the windows live in registers): one case per supported width */
#define CONV_FOR_EACH_K(CASE) CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
/* the per-thread kernels' vector width: one launch per supported width */
#define CONV_BY_VEC(LAUNCH, KK)            \
    if (vec == 8) LAUNCH(KK, 8);           \
    else if (vec == 4) LAUNCH(KK, 4);      \
    else LAUNCH(KK, 1);

static void conv1d_check_k(const char* who, int K) {
    if (K < 1 || K > CONV_MAX_K) die("%s: d_conv K = %d is not supported (1..%d)", who, K, CONV_MAX_K);
}

/* the kernels put (sequence, time group) on gridDim.y, which CUDA caps at 65535 */
static void conv1d_check_grid_y(const char* who, long long rows, int B, int T) {
    if (rows > 65535)
        die("%s: B=%d T=%d needs %lld block rows, more than CUDA's 65535: lower B*T (at most ~8M tokens a "
            "micro-batch)", who, B, T, rows);
}

/* the forward at a chosen vector width (8, 4 or 1; lowered to 1 when alignment forbids it) and segment length */
static void conv1d_forward_cfg(floatX* out, const floatX* in, int in_stride, const float* w, const float* bias,
                               const int* seq, int B, int T, int C, int K, int vec, int seg_len, cudaStream_t stream) {
    conv1d_check_k("conv1d_forward", K);
    if (!conv1d_vec8_ok(in, in_stride, out, C)) vec = 1;
    size_t threads = (size_t)B * CEIL_DIV(T, seg_len) * (C / vec);
    const int block = 128;
    unsigned grid = (unsigned)CEIL_DIV(threads, (size_t)block);
#define CONV_FWD_LAUNCH(KK, VV) \
    conv1d_forward_kernel<KK, VV><<<grid, block, 0, stream>>>(out, in, in_stride, w, bias, seq, B, T, C, seg_len)
#define CONV_FWD_CASE(KK) case KK: CONV_BY_VEC(CONV_FWD_LAUNCH, KK) break;
    switch (K) { CONV_FOR_EACH_K(CONV_FWD_CASE) }
#undef CONV_FWD_CASE
#undef CONV_FWD_LAUNCH
    cudaCheckLast();
}

/* forward: 4 channels per thread, segment 64 was the fastest of the sweep (0.069 ms against 0.078 for 8 channels) */
#ifndef CONV_FWD_VEC
#define CONV_FWD_VEC 4
#endif

/* let kernel f take `smem` bytes of dynamic shared memory (over 48 KB needs the opt-in; fp32 backward: 87 KB).
 * *allowed remembers what was set for this kernel, so the call is made once, not per launch */
static void conv1d_allow_smem(const void* f, size_t smem, size_t* allowed) {
    if (smem <= *allowed) return;
    cudaCheck(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    *allowed = smem;
}

template <int K, bool DOCS>
static void conv1d_forward_pipe_launch(floatX* out, const floatX* in, int in_stride, const float* w,
                                       const float* bias, const int* seq, int B, int T, int C, int tiles,
                                       cudaStream_t stream) {
    static size_t allowed = 48 * 1024;
    size_t smem = conv1d_forward_pipe_smem<K>();
    conv1d_allow_smem((const void*)conv1d_forward_pipe_kernel<K, DOCS>, smem, &allowed);
    conv1d_check_grid_y("conv1d_forward", (long long)B * CEIL_DIV(T, CONV_TILE_T * tiles), B, T);
    dim3 grid(CEIL_DIV(C, CONV_TILE_C), B * CEIL_DIV(T, CONV_TILE_T * tiles));
    conv1d_forward_pipe_kernel<K, DOCS><<<grid, CONV_TILE_THREADS, smem, stream>>>(out, in, in_stride, w, bias, seq,
                                                                                   B, T, C, tiles);
}

/* the pipelined forward (v5) with `tiles` time tiles per block; falls back to the per-thread kernel (scalar) where
 * 16-byte copies are not possible. seq: (B, T) document index on the device, or NULL */
static void conv1d_forward_pipe(floatX* out, const floatX* in, int in_stride, const float* w, const float* bias,
                                const int* seq, int B, int T, int C, int K, int tiles, cudaStream_t stream) {
    conv1d_check_k("conv1d_forward", K);
    if (tiles < 1) die("conv1d_forward: %d time tiles per block, must be >= 1", tiles);
    if (!conv1d_vec8_ok(in, in_stride, out, C)) {
        conv1d_forward_cfg(out, in, in_stride, w, bias, seq, B, T, C, K, 1, CONV_FWD_SEG, stream);
        return;
    }
#define CONV_FWD_PIPE(KK)                                                                                         \
    case KK:                                                                                                      \
        if (seq) conv1d_forward_pipe_launch<KK, true>(out, in, in_stride, w, bias, seq, B, T, C, tiles, stream);  \
        else conv1d_forward_pipe_launch<KK, false>(out, in, in_stride, w, bias, NULL, B, T, C, tiles, stream);    \
        break;
    switch (K) { CONV_FOR_EACH_K(CONV_FWD_PIPE) }
#undef CONV_FWD_PIPE
    cudaCheckLast();
}

/* out = xbc (BT, C) floatX; in = the xBC column of zxbcdt, row stride in_stride; w (C, K), bias (C) float;
 * seq_idx: (B, T) device ints, each position's document (the window does not reach into earlier documents), or
 * NULL for one document per row */
static void conv1d_forward_docs(floatX* out, const floatX* in, int in_stride, const float* w, const float* bias,
                                const int* seq_idx, int B, int T, int C, int K, cudaStream_t stream) {
    conv1d_forward_pipe(out, in, in_stride, w, bias, seq_idx, B, T, C, K, CONV_FWD_PIPE_TILES, stream);
}

/* one document per row */
static inline void conv1d_forward(floatX* out, const floatX* in, int in_stride, const float* w, const float* bias, int B,
                           int T, int C, int K, cudaStream_t stream) {
    conv1d_forward_docs(out, in, in_stride, w, bias, NULL, B, T, C, K, stream);
}

static int conv1d_backward_blocks_y(int B, int T, int seg_len) {
    return CEIL_DIV(B * CEIL_DIV(T, seg_len), CONV_BWD_SEGS);
}
/* partial-sum rows of the tiled backward: one per block row (a sequence's run of `tiles` time tiles) */
static int conv1d_backward_tile_rows(int B, int T, int tiles) { return B * CEIL_DIV(T, CONV_TILE_T * tiles); }
/* sized for the shortest segment and for one time tile per block, so any configuration fits */
static size_t conv1d_backward_scratch_floats(int B, int T, int C, int K) {
    int rows = conv1d_backward_blocks_y(B, T, CONV_MIN_SEG), tile_rows = conv1d_backward_tile_rows(B, T, 1);
    return (size_t)(rows > tile_rows ? rows : tile_rows) * C * (K + 1);
}

/* vector width of the backward: 8 channels per thread (16-byte bf16 loads) needs ~170 registers at K = 4, 4 channels
 * (8-byte loads) ~100, and the lower register count wins (H100, 130M shape, bf16, segment 64: 0.180 ms against
 * 0.145 ms; the sweep is in NOTES_kernels.md) */
#ifndef CONV_BWD_VEC
#define CONV_BWD_VEC 4
#endif

/* the backward at a chosen vector width (8, 4, or 1 = scalar; lowered to 1 when alignment forbids it) and segment
 * length (>= CONV_MIN_SEG) */
static void conv1d_backward_cfg(floatX* din, int din_stride, float* dw, float* db, float* scratch, const floatX* dout,
                                const floatX* in, int in_stride, const float* w, const float* bias, const int* seq,
                                int B, int T, int C, int K, int vec, int seg_len, cudaStream_t stream) {
    if (seg_len < CONV_MIN_SEG) die("conv1d_backward: segment length %d < %d", seg_len, CONV_MIN_SEG);
    conv1d_check_k("conv1d_backward", K);
    if (!(conv1d_vec8_ok(in, in_stride, dout, C) && conv1d_vec8_ok(din, din_stride, din, C))) vec = 1;
    int by = conv1d_backward_blocks_y(B, T, seg_len);
    conv1d_check_grid_y("conv1d_backward", by, B, T);
    dim3 grid(CEIL_DIV(C / vec, WARP_SIZE), by), block(WARP_SIZE, CONV_BWD_SEGS);
    float* dw_partials = scratch;
    float* db_partials = scratch + (size_t)by * C * K;
#define CONV_BWD_LAUNCH(KK, VV)                                                                                   \
    conv1d_backward_kernel<KK, VV><<<grid, block, 0, stream>>>(din, din_stride, dw_partials, db_partials, dout,   \
                                                               in, in_stride, w, bias, seq, B, T, C, seg_len)
#define CONV_BWD_CASE(KK) case KK: CONV_BY_VEC(CONV_BWD_LAUNCH, KK) break;
    switch (K) { CONV_FOR_EACH_K(CONV_BWD_CASE) }
#undef CONV_BWD_CASE
#undef CONV_BWD_LAUNCH
    cudaCheckLast();
    partial_sums_accumulate(dw, dw_partials, by, C * K, stream);
    partial_sums_accumulate(db, db_partials, by, C, stream);
}

template <int K, bool DOCS>
static void conv1d_backward_pipe_launch(floatX* din, int din_stride, float* dw_partials, float* db_partials,
                                        const floatX* dout, const floatX* in, int in_stride, const float* w,
                                        const float* bias, const int* seq, int B, int T, int C, int tiles, int rows,
                                        cudaStream_t stream) {
    static size_t allowed = 48 * 1024;
    size_t smem = conv1d_backward_pipe_smem<K>();
    conv1d_allow_smem((const void*)conv1d_backward_pipe_kernel<K, DOCS>, smem, &allowed);
    conv1d_check_grid_y("conv1d_backward", rows, B, T);
    dim3 grid(CEIL_DIV(C, CONV_TILE_C), rows);
    conv1d_backward_pipe_kernel<K, DOCS><<<grid, CONV_TILE_THREADS, smem, stream>>>(
        din, din_stride, dw_partials, db_partials, dout, in, in_stride, w, bias, seq, B, T, C, tiles);
}

/* the pipelined backward (v5) with `tiles` time tiles per block; falls back to the per-thread kernel (scalar) where
 * 16-byte copies are not possible */
static void conv1d_backward_pipe(floatX* din, int din_stride, float* dw, float* db, float* scratch,
                                 const floatX* dout, const floatX* in, int in_stride, const float* w,
                                 const float* bias, const int* seq, int B, int T, int C, int K, int tiles,
                                 cudaStream_t stream) {
    conv1d_check_k("conv1d_backward", K);
    if (tiles < 1) die("conv1d_backward: %d time tiles per block, must be >= 1", tiles);
    if (!(conv1d_vec8_ok(in, in_stride, dout, C) && conv1d_vec8_ok(din, din_stride, din, C))) {
        conv1d_backward_cfg(din, din_stride, dw, db, scratch, dout, in, in_stride, w, bias, seq, B, T, C, K, 1,
                            CONV_BWD_SEG, stream);
        return;
    }
    int rows = conv1d_backward_tile_rows(B, T, tiles);
    float* dw_partials = scratch;   /* row r: C * K dw sums, then C db sums (one accumulate launch for both) */
    float* db_partials = scratch + (size_t)C * K;
#define CONV_BWD_PIPE(KK)                                                                                         \
    case KK:                                                                                                      \
        if (seq)                                                                                                  \
            conv1d_backward_pipe_launch<KK, true>(din, din_stride, dw_partials, db_partials, dout, in, in_stride, \
                                                  w, bias, seq, B, T, C, tiles, rows, stream);                    \
        else                                                                                                      \
            conv1d_backward_pipe_launch<KK, false>(din, din_stride, dw_partials, db_partials, dout, in, in_stride,\
                                                   w, bias, NULL, B, T, C, tiles, rows, stream);                  \
        break;
    switch (K) { CONV_FOR_EACH_K(CONV_BWD_PIPE) }
#undef CONV_BWD_PIPE
    cudaCheckLast();
    conv1d_partials_accumulate(dw, db, scratch, rows, C, K, stream);
}

/* din: the xBC column of d_zxbcdt (row stride din_stride), overwritten; dw (C, K), db (C) float accumulated;
 * dout = dxbc (BT, C); in, in_stride, w, bias, seq_idx as in the forward; scratch: conv1d_backward_scratch_floats
 * floats */
static void conv1d_backward_docs(floatX* din, int din_stride, float* dw, float* db, float* scratch, const floatX* dout,
                                 const floatX* in, int in_stride, const float* w, const float* bias,
                                 const int* seq_idx, int B, int T, int C, int K, cudaStream_t stream) {
    conv1d_backward_pipe(din, din_stride, dw, db, scratch, dout, in, in_stride, w, bias, seq_idx, B, T, C, K,
                         CONV_BWD_PIPE_TILES, stream);
}

/* one document per row */
static inline void conv1d_backward(floatX* din, int din_stride, float* dw, float* db, float* scratch, const floatX* dout,
                            const floatX* in, int in_stride, const float* w, const float* bias, int B, int T, int C,
                            int K, cudaStream_t stream) {
    conv1d_backward_docs(din, din_stride, dw, db, scratch, dout, in, in_stride, w, bias, NULL, B, T, C, K, stream);
}

/*
 * ---- carried state (-C 1, doc/packing.md section 6): a window of K-1 conv inputs before each row ----
 * window (B, K-1, C) floatX: row b's last K-1 conv inputs of its previous batch (entries of earlier documents stored as
 * zero, conv1d_final_window), read where t - (K-1) + k < 0 (by a position still in the row's first document, with
 * -D). These launchers do not touch the kernels above: they stage [window | the row's T inputs] as one row of
 * T + K-1 positions in a buffer of their own (seq_ext: the document index of that longer row, the window positions
 * in the row's first document; NULL without -D), run the same conv over it, and copy back the last T outputs. So the
 * conv without a window (every launcher above) is the same code and time as before, and the window's terms are
 * added in the order of the CPU trainer's conv1d_silu_forward (k ascending). The backward stages dout with zeros
 * before the row (the window's outputs are not the batch's: no loss reaches them, so they add nothing to dw, db or
 * din), and the window gets no gradient (the gradient stops at the batch edge). Cost: one extra copy of the conv's
 * input and output a layer, on the -C 1 path only.
 */

/* ext (B, T+K-1, C): rows 0..K-2 of each sequence = window[b] (zeros when window is NULL), then the T rows of src
   (row stride src_stride) */
__global__ static void conv1d_stage_window_kernel(floatX* ext, const floatX* window, const floatX* src, int src_stride,
                                                  int B, int T, int C, int K) {
    size_t TE = (size_t)T + K - 1, n = (size_t)B * TE * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t c = i % C, r = i / C, t = r % TE, b = r / TE;
        floatX v = (floatX)0.0f;
        if (t >= (size_t)(K - 1)) v = src[(b * T + t - (K - 1)) * (size_t)src_stride + c];
        else if (window != NULL) v = window[(b * (K - 1) + t) * (size_t)C + c];
        ext[i] = v;
    }
}

/* dst (B*T rows, stride dst_stride) = the last T rows of each sequence of ext (B, T+K-1, C) */
__global__ static void conv1d_unstage_kernel(floatX* dst, int dst_stride, const floatX* ext, int B, int T, int C,
                                             int K) {
    size_t TE = (size_t)T + K - 1, n = (size_t)B * T * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t c = i % C, r = i / C, t = r % T, b = r / T;
        dst[r * (size_t)dst_stride + c] = ext[(b * TE + t + K - 1) * (size_t)C + c];
    }
}

/* the window the row's next batch reads: its last K-1 conv inputs (from init_window where the row is shorter than
   K-1), an entry of a document other than the row's last stored as zero; seq (B, T) device ints or NULL. Mirrors
   train_mamba2.c's conv1d_final_window. out_window must not alias init_window */
__global__ static void conv1d_final_window_kernel(floatX* out_window, const floatX* init_window, const floatX* in,
                                                  int in_stride, const int* seq, int B, int T, int C, int K) {
    size_t n = (size_t)B * (K - 1) * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t c = i % C, r = i / C;
        int j = (int)(r % (K - 1)), b = (int)(r / (K - 1));
        int ts = T - (K - 1) + j;
        int last = seq ? seq[(size_t)b * T + T - 1] : 0;
        floatX v = (floatX)0.0f;
        if (ts >= 0) {
            if (!seq || seq[(size_t)b * T + ts] == last) v = in[((size_t)b * T + ts) * in_stride + c];
        } else if (init_window != NULL && (!seq || seq[(size_t)b * T] == last)) {
            v = init_window[((size_t)b * (K - 1) + (K - 1 + ts)) * C + c];
        }
        out_window[i] = v;
    }
}

static unsigned conv1d_window_grid(size_t n) {
    size_t g = CEIL_DIV(n, (size_t)256);
    return (unsigned)(g < 65535 * 8 ? (g > 0 ? g : 1) : 65535 * 8);
}

static void conv1d_final_window(floatX* out_window, const floatX* init_window, const floatX* in, int in_stride,
                                const int* seq_idx, int B, int T, int C, int K, cudaStream_t stream) {
    if (K < 2) return;
    conv1d_final_window_kernel<<<conv1d_window_grid((size_t)B * (K - 1) * C), 256, 0, stream>>>(
        out_window, init_window, in, in_stride, seq_idx, B, T, C, K);
    cudaCheckLast();
}

/* floats of the scratch, and floatX elements of each of the three staging buffers, the window launchers need */
static size_t conv1d_window_scratch_floats(int B, int T, int C, int K) {
    return conv1d_backward_scratch_floats(B, T + K - 1, C, K);
}
static size_t conv1d_window_stage_elems(int B, int T, int C, int K) { return (size_t)B * (T + K - 1) * C; }

/* the forward with a carried window (see above): ext_in, ext_out: conv1d_window_stage_elems each; seq_ext: (B, T+K-1)
   device ints or NULL */
static void conv1d_forward_window(floatX* out, const floatX* in, int in_stride, const float* w, const float* bias,
                                  const floatX* window, const int* seq_ext, floatX* ext_in, floatX* ext_out, int B,
                                  int T, int C, int K, cudaStream_t stream) {
    unsigned g = conv1d_window_grid(conv1d_window_stage_elems(B, T, C, K));
    conv1d_stage_window_kernel<<<g, 256, 0, stream>>>(ext_in, window, in, in_stride, B, T, C, K);
    cudaCheckLast();
    conv1d_forward_docs(ext_out, ext_in, C, w, bias, seq_ext, B, T + K - 1, C, K, stream);
    conv1d_unstage_kernel<<<g, 256, 0, stream>>>(out, C, ext_out, B, T, C, K);
    cudaCheckLast();
}

/* the backward with a carried window: din (row stride din_stride) written, dw, db accumulated; dout (BT, C); scratch:
   conv1d_window_scratch_floats; ext_in, ext_dout, ext_din: conv1d_window_stage_elems each */
static void conv1d_backward_window(floatX* din, int din_stride, float* dw, float* db, float* scratch,
                                   const floatX* dout, const floatX* in, int in_stride, const float* w,
                                   const float* bias, const floatX* window, const int* seq_ext, floatX* ext_in,
                                   floatX* ext_dout, floatX* ext_din, int B, int T, int C, int K,
                                   cudaStream_t stream) {
    unsigned g = conv1d_window_grid(conv1d_window_stage_elems(B, T, C, K));
    conv1d_stage_window_kernel<<<g, 256, 0, stream>>>(ext_in, window, in, in_stride, B, T, C, K);
    cudaCheckLast();
    conv1d_stage_window_kernel<<<g, 256, 0, stream>>>(ext_dout, NULL, dout, C, B, T, C, K);
    cudaCheckLast();
    conv1d_backward_docs(ext_din, C, dw, db, scratch, ext_dout, ext_in, C, w, bias, seq_ext, B, T + K - 1, C, K,
                         stream);
    conv1d_unstage_kernel<<<g, 256, 0, stream>>>(din, din_stride, ext_din, B, T, C, K);
    cudaCheckLast();
}

#endif
