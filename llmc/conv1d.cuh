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
 * Tiled kernels (the default when 16-byte accesses are possible): a block stages a tile of 64 channels x 64 time
 * steps (plus the K-1 halo rows) of the input, and of dout in backward, in shared memory with 16-byte cp.async
 * copies (all of a tile's loads in flight at once, each row segment one 128-byte line in bf16), then thread
 * (channel, slice) runs the same sliding-window recurrence as below over its 16 time steps, reading the tile from
 * shared memory (its first K-1 steps' window, the halo, too). conv1d_forward_tile_kernel<K>,
 * conv1d_backward_tile_kernel<K>; a backward block walks `tiles` consecutive time tiles and keeps dw/db in
 * registers across them.
 * Kernels: conv1d_forward_kernel<K, VEC>, conv1d_backward_kernel<K, VEC> (+ partial_sums_accumulate_kernel).
 * Launchers: conv1d_forward, conv1d_backward; conv1d_backward_scratch_floats sizes the partials buffer.
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

template <int K, int VEC>
__global__ static void conv1d_forward_kernel(floatX* out, const floatX* in, int in_stride, const float* w,
                                             const float* bias, int B, int T, int C, int seg_len) {
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
    float win[K][VEC];   /* win[0..K-2] = inputs t-(K-1) .. t-1 (slot K-1 unused) */
#pragma unroll
    for (int j = 0; j < K - 1; j++) {
        int t = t0 - (K - 1) + j;
        if (t >= 0) loadNX<VEC>(win[j], inb + (size_t)t * in_stride);
        else for (int i = 0; i < VEC; i++) win[j][i] = 0.f;
    }
    floatX* outb = out + (size_t)b * T * C + c0;
#pragma unroll ConvUnroll<K, VEC>::n
    for (int t = t0; t < t1; t++) {
        float cur[VEC], o[VEC];
        loadNX<VEC>(cur, inb + (size_t)t * in_stride);
#pragma unroll
        for (int i = 0; i < VEC; i++) {
            float p = br[i] + wr[i][K - 1] * cur[i];
#pragma unroll
            for (int k = 0; k < K - 1; k++) p += wr[i][k] * win[k][i];
            o[i] = p * fast_sigmoid(p);
        }
        storeNX<VEC>(outb + (size_t)t * C, o);
#pragma unroll
        for (int j = 0; j + 1 < K - 1; j++)
            for (int i = 0; i < VEC; i++) win[j][i] = win[j + 1][i];
        if (K > 1)
            for (int i = 0; i < VEC; i++) win[K - 2][i] = cur[i];
    }
}

template <int K, int VEC>
__global__ static void conv1d_backward_kernel(floatX* din, int din_stride, float* dw_partials, float* db_partials,
                                              const floatX* dout, const floatX* in, int in_stride, const float* w,
                                              const float* bias, int B, int T, int C, int seg_len) {
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
        float win[K][VEC];   /* inputs t-(K-1) .. t-1 in slots 0..K-2 */
        float dpw[K][VEC];   /* dp[t-(K-1)] .. dp[t] in slots 0..K-1 */
#pragma unroll
        for (int j = 0; j < K; j++) {
            int t = t0 - (K - 1) + j;
            for (int i = 0; i < VEC; i++) dpw[j][i] = 0.f;
            if (j < K - 1) {
                if (t >= 0) loadNX<VEC>(win[j], inb + (size_t)t * in_stride);
                else for (int i = 0; i < VEC; i++) win[j][i] = 0.f;
            }
        }
        /* t runs K-1 steps past the segment: din[s] needs dp up to s + K-1 (zero past the sequence end) */
#pragma unroll ConvUnroll<K, VEC>::n
        for (int t = t0; t < t1 + K - 1; t++) {
            float cur[VEC], dp[VEC];
            if (t < T) {
                float g[VEC];
                loadNX<VEC>(cur, inb + (size_t)t * in_stride);
                loadNX<VEC>(g, doutb + (size_t)t * C);
#pragma unroll
                for (int i = 0; i < VEC; i++) {
                    float p = br[i] + wr[i][K - 1] * cur[i];
#pragma unroll
                    for (int k = 0; k < K - 1; k++) p += wr[i][k] * win[k][i];
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
                    for (int k = 0; k < K - 1; k++) dwa[i][k] += dp[i] * win[k][i];
                }
            }
#pragma unroll
            for (int j = 0; j + 1 < K; j++)
                for (int i = 0; i < VEC; i++) dpw[j][i] = dpw[j + 1][i];
            for (int i = 0; i < VEC; i++) dpw[K - 1][i] = dp[i];
            int s = t - (K - 1);
            if (s >= t0) {
                float d[VEC];
#pragma unroll
                for (int i = 0; i < VEC; i++) {
                    d[i] = 0.f;
#pragma unroll
                    for (int k = 0; k < K; k++) d[i] += wr[i][k] * dpw[K - 1 - k][i];
                }
                storeNX<VEC>(dinb + (size_t)s * din_stride, d);
            }
#pragma unroll
            for (int j = 0; j + 1 < K - 1; j++)
                for (int i = 0; i < VEC; i++) win[j][i] = win[j + 1][i];
            if (K > 1)
                for (int i = 0; i < VEC; i++) win[K - 2][i] = cur[i];
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
#ifndef CONV_BWD_TILES
#define CONV_BWD_TILES 2   /* time tiles a backward block walks (dev/cuda/conv1d.cu sweeps it) */
#endif

__device__ static inline void conv_cp_async16(void* dst, const void* src, int valid) {
    /* src-size 0 zero-fills the 16 bytes (rows before t = 0, past T, channels past C) */
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"((unsigned)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ static inline void conv_cp_async_wait_all(void) { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

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

template <int K>
__global__ static void __launch_bounds__(CONV_TILE_THREADS)
conv1d_forward_tile_kernel(floatX* out, const floatX* in, int in_stride, const float* w, const float* bias, int B,
                           int T, int C) {
    constexpr int IN_ROWS = CONV_TILE_T + K - 1;   /* inputs t0-(K-1) .. t0+TILE_T-1 */
    __shared__ alignas(16) floatX in_s[IN_ROWS * CONV_TILE_C];
    int cl = threadIdx.x % CONV_TILE_C, q = threadIdx.x / CONV_TILE_C;
    int ct0 = blockIdx.x * CONV_TILE_C, c = ct0 + cl;
    int tiles_per_seq = CEIL_DIV(T, CONV_TILE_T);
    int b = blockIdx.y / tiles_per_seq, t0 = (blockIdx.y % tiles_per_seq) * CONV_TILE_T;
    const floatX* inb = in + (size_t)b * T * in_stride;
    conv_stage_rows(in_s, inb, in_stride, t0 - (K - 1), IN_ROWS, T, ct0, C);
    float wr[K], br = 0.f;
#pragma unroll
    for (int k = 0; k < K; k++) wr[k] = c < C ? w[c * K + k] : 0.f;
    if (c < C) br = bias[c];
    conv_cp_async_wait_all();
    __syncthreads();
    if (c >= C) return;
    int s0 = q * CONV_TILE_STEPS;
    float win[K];   /* inputs t-(K-1) .. t-1 in slots 0..K-2 */
#pragma unroll
    for (int j = 0; j < K - 1; j++) win[j] = toF(in_s[(s0 + j) * CONV_TILE_C + cl]);
    floatX* outb = out + (size_t)b * T * C + c;
#pragma unroll
    for (int j = 0; j < CONV_TILE_STEPS; j++) {
        int t = t0 + s0 + j;
        float cur = toF(in_s[(s0 + j + K - 1) * CONV_TILE_C + cl]);
        float p = br + wr[K - 1] * cur;
#pragma unroll
        for (int k = 0; k < K - 1; k++) p += wr[k] * win[k];
        if (t < T) outb[(size_t)t * C] = fromF(p * fast_sigmoid(p));
#pragma unroll
        for (int k = 0; k + 1 < K - 1; k++) win[k] = win[k + 1];
        if (K > 1) win[K - 2] = cur;
    }
}

template <int K>
__global__ static void __launch_bounds__(CONV_TILE_THREADS)
conv1d_backward_tile_kernel(floatX* din, int din_stride, float* dw_partials, float* db_partials, const floatX* dout,
                            const floatX* in, int in_stride, const float* w, const float* bias, int B, int T, int C,
                            int tiles) {
    constexpr int IN_ROWS = CONV_TILE_T + 2 * (K - 1);   /* inputs t0-(K-1) .. t0+TILE_T+K-2 */
    constexpr int DOUT_ROWS = CONV_TILE_T + K - 1;       /* dout t0 .. t0+TILE_T+K-2: din[s] needs dp up to s+K-1 */
    __shared__ alignas(16) floatX in_s[IN_ROWS * CONV_TILE_C];
    __shared__ alignas(16) floatX dout_s[DOUT_ROWS * CONV_TILE_C];
    __shared__ float red[CONV_TILE_SLICES][K + 1][CONV_TILE_C];
    int cl = threadIdx.x % CONV_TILE_C, q = threadIdx.x / CONV_TILE_C;
    int ct0 = blockIdx.x * CONV_TILE_C, c = ct0 + cl;
    int groups_per_seq = CEIL_DIV(T, CONV_TILE_T * tiles);
    int b = blockIdx.y / groups_per_seq, tg = blockIdx.y % groups_per_seq;
    const floatX* inb = in + (size_t)b * T * in_stride;
    const floatX* doutb = dout + (size_t)b * T * C;
    floatX* dinb = din + (size_t)b * T * din_stride + c;
    float wr[K], br = 0.f;
#pragma unroll
    for (int k = 0; k < K; k++) wr[k] = c < C ? w[c * K + k] : 0.f;
    if (c < C) br = bias[c];
    float dwa[K], dba = 0.f;
#pragma unroll
    for (int k = 0; k < K; k++) dwa[k] = 0.f;
    int s0 = q * CONV_TILE_STEPS;
    for (int tile = 0; tile < tiles; tile++) {
        int t0 = (tg * tiles + tile) * CONV_TILE_T;
        if (t0 >= T) break;   /* the same for the whole block */
        conv_stage_rows(in_s, inb, in_stride, t0 - (K - 1), IN_ROWS, T, ct0, C);
        conv_stage_rows(dout_s, doutb, C, t0, DOUT_ROWS, T, ct0, C);
        conv_cp_async_wait_all();
        __syncthreads();
        if (c < C) {
            float win[K];   /* inputs t-(K-1) .. t-1 in slots 0..K-2 */
            float dpw[K];   /* dp[t-(K-1)] .. dp[t] in slots 0..K-1 */
#pragma unroll
            for (int j = 0; j < K; j++) {
                dpw[j] = 0.f;
                if (j < K - 1) win[j] = toF(in_s[(s0 + j) * CONV_TILE_C + cl]);
            }
            /* local step j: time t = t0 + s0 + j; K-1 steps past the slice recompute dp for din (zero past T:
             * dout was zero-filled there) */
#pragma unroll
            for (int j = 0; j < CONV_TILE_STEPS + K - 1; j++) {
                int t = t0 + s0 + j;
                float cur = toF(in_s[(s0 + j + K - 1) * CONV_TILE_C + cl]);
                float g = toF(dout_s[(s0 + j) * CONV_TILE_C + cl]);
                float p = br + wr[K - 1] * cur;
#pragma unroll
                for (int k = 0; k < K - 1; k++) p += wr[k] * win[k];
                float sg = fast_sigmoid(p);
                float dp = g * sg * (1.f + p * (1.f - sg));
                if (j < CONV_TILE_STEPS && t < T) {   /* the slice's own steps feed dw and db */
                    dba += dp;
                    dwa[K - 1] += dp * cur;
#pragma unroll
                    for (int k = 0; k < K - 1; k++) dwa[k] += dp * win[k];
                }
#pragma unroll
                for (int k = 0; k + 1 < K; k++) dpw[k] = dpw[k + 1];
                dpw[K - 1] = dp;
                if (j >= K - 1 && t - (K - 1) < T) {
                    float d = 0.f;
#pragma unroll
                    for (int k = 0; k < K; k++) d += wr[k] * dpw[K - 1 - k];
                    dinb[(size_t)(t - (K - 1)) * din_stride] = fromF(d);
                }
#pragma unroll
                for (int k = 0; k + 1 < K - 1; k++) win[k] = win[k + 1];
                if (K > 1) win[K - 2] = cur;
            }
        }
        __syncthreads();   /* the next tile overwrites in_s and dout_s */
    }
    /* the block's slices combined in increasing q: a fixed order */
#pragma unroll
    for (int k = 0; k < K; k++) red[q][k][cl] = dwa[k];
    red[q][K][cl] = dba;
    __syncthreads();
    if (q == 0 && c < C) {
#pragma unroll
        for (int k = 0; k <= K; k++) {
            float s = 0.f;
            for (int qq = 0; qq < CONV_TILE_SLICES; qq++) s += red[qq][k][cl];
            if (k < K) dw_partials[(size_t)blockIdx.y * C * K + (size_t)c * K + k] = s;
            else db_partials[(size_t)blockIdx.y * C + c] = s;
        }
    }
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

/* the forward at a chosen vector width (8, 4 or 1; lowered to 1 when alignment forbids it) and segment length */
static void conv1d_forward_cfg(floatX* out, const floatX* in, int in_stride, const float* w, const float* bias, int B,
                               int T, int C, int K, int vec, int seg_len, cudaStream_t stream) {
    conv1d_check_k("conv1d_forward", K);
    if (!conv1d_vec8_ok(in, in_stride, out, C)) vec = 1;
    size_t threads = (size_t)B * CEIL_DIV(T, seg_len) * (C / vec);
    const int block = 128;
    unsigned grid = (unsigned)CEIL_DIV(threads, (size_t)block);
#define CONV_FWD_LAUNCH(KK, VV) \
    conv1d_forward_kernel<KK, VV><<<grid, block, 0, stream>>>(out, in, in_stride, w, bias, B, T, C, seg_len)
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

/* the tiled forward; falls back to the per-thread kernel (scalar) where 16-byte copies are not possible */
static void conv1d_forward_tile(floatX* out, const floatX* in, int in_stride, const float* w, const float* bias,
                                int B, int T, int C, int K, cudaStream_t stream) {
    conv1d_check_k("conv1d_forward", K);
    if (!conv1d_vec8_ok(in, in_stride, out, C)) {
        conv1d_forward_cfg(out, in, in_stride, w, bias, B, T, C, K, 1, CONV_FWD_SEG, stream);
        return;
    }
    dim3 grid(CEIL_DIV(C, CONV_TILE_C), B * CEIL_DIV(T, CONV_TILE_T));
#define CONV_FWD_TILE(KK)                                                                                         \
    case KK:                                                                                                      \
        conv1d_forward_tile_kernel<KK><<<grid, CONV_TILE_THREADS, 0, stream>>>(out, in, in_stride, w, bias, B, T, C); \
        break;
    switch (K) { CONV_FOR_EACH_K(CONV_FWD_TILE) }
#undef CONV_FWD_TILE
    cudaCheckLast();
}

/* out = xbc (BT, C) floatX; in = the xBC column of zxbcdt, row stride in_stride; w (C, K), bias (C) float */
static void conv1d_forward(floatX* out, const floatX* in, int in_stride, const float* w, const float* bias, int B,
                           int T, int C, int K, cudaStream_t stream) {
    conv1d_forward_tile(out, in, in_stride, w, bias, B, T, C, K, stream);
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
                                const floatX* in, int in_stride, const float* w, const float* bias, int B, int T,
                                int C, int K, int vec, int seg_len, cudaStream_t stream) {
    if (seg_len < CONV_MIN_SEG) die("conv1d_backward: segment length %d < %d", seg_len, CONV_MIN_SEG);
    conv1d_check_k("conv1d_backward", K);
    if (!(conv1d_vec8_ok(in, in_stride, dout, C) && conv1d_vec8_ok(din, din_stride, din, C))) vec = 1;
    int by = conv1d_backward_blocks_y(B, T, seg_len);
    dim3 grid(CEIL_DIV(C / vec, WARP_SIZE), by), block(WARP_SIZE, CONV_BWD_SEGS);
    float* dw_partials = scratch;
    float* db_partials = scratch + (size_t)by * C * K;
#define CONV_BWD_LAUNCH(KK, VV)                                                                                   \
    conv1d_backward_kernel<KK, VV><<<grid, block, 0, stream>>>(din, din_stride, dw_partials, db_partials, dout,   \
                                                               in, in_stride, w, bias, B, T, C, seg_len)
#define CONV_BWD_CASE(KK) case KK: CONV_BY_VEC(CONV_BWD_LAUNCH, KK) break;
    switch (K) { CONV_FOR_EACH_K(CONV_BWD_CASE) }
#undef CONV_BWD_CASE
#undef CONV_BWD_LAUNCH
    cudaCheckLast();
    partial_sums_accumulate(dw, dw_partials, by, C * K, stream);
    partial_sums_accumulate(db, db_partials, by, C, stream);
}

/* the tiled backward with `tiles` time tiles per block; falls back to the per-thread kernel (scalar) where 16-byte
 * copies are not possible */
static void conv1d_backward_tile(floatX* din, int din_stride, float* dw, float* db, float* scratch,
                                 const floatX* dout, const floatX* in, int in_stride, const float* w,
                                 const float* bias, int B, int T, int C, int K, int tiles, cudaStream_t stream) {
    conv1d_check_k("conv1d_backward", K);
    if (tiles < 1) die("conv1d_backward: %d time tiles per block, must be >= 1", tiles);
    if (!(conv1d_vec8_ok(in, in_stride, dout, C) && conv1d_vec8_ok(din, din_stride, din, C))) {
        conv1d_backward_cfg(din, din_stride, dw, db, scratch, dout, in, in_stride, w, bias, B, T, C, K, 1,
                            CONV_BWD_SEG, stream);
        return;
    }
    int rows = conv1d_backward_tile_rows(B, T, tiles);
    dim3 grid(CEIL_DIV(C, CONV_TILE_C), rows);
    float* dw_partials = scratch;
    float* db_partials = scratch + (size_t)rows * C * K;
#define CONV_BWD_TILE(KK)                                                                                         \
    case KK:                                                                                                      \
        conv1d_backward_tile_kernel<KK><<<grid, CONV_TILE_THREADS, 0, stream>>>(                                  \
            din, din_stride, dw_partials, db_partials, dout, in, in_stride, w, bias, B, T, C, tiles);             \
        break;
    switch (K) { CONV_FOR_EACH_K(CONV_BWD_TILE) }
#undef CONV_BWD_TILE
    cudaCheckLast();
    partial_sums_accumulate(dw, dw_partials, rows, C * K, stream);
    partial_sums_accumulate(db, db_partials, rows, C, stream);
}

/* din: the xBC column of d_zxbcdt (row stride din_stride), overwritten; dw (C, K), db (C) float accumulated;
 * dout = dxbc (BT, C); in, in_stride, w, bias as in the forward; scratch: conv1d_backward_scratch_floats floats */
static void conv1d_backward(floatX* din, int din_stride, float* dw, float* db, float* scratch, const floatX* dout,
                            const floatX* in, int in_stride, const float* w, const float* bias, int B, int T, int C,
                            int K, cudaStream_t stream) {
    conv1d_backward_tile(din, din_stride, dw, db, scratch, dout, in, in_stride, w, bias, B, T, C, K, CONV_BWD_TILES,
                         stream);
}

#endif
