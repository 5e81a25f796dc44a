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
/* #pragma unroll takes a constant, not a macro; wide windows (K * VEC > 32 floats) are not unrolled: they would spill */
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
        for (int i = 0; i < VEC; i++) db_partials[(size_t)blockIdx.y * C + c0 + i] = block_acc[threadIdx.x][VEC * K + i];
    }
}

/* 16-byte path possible? channels, row strides and pointers must all allow 8-element groups */
static int conv1d_vec8_ok(const void* a, int a_stride, const void* b, int C) {
    return C % 8 == 0 && a_stride % 8 == 0 && is_aligned16(a) && is_aligned16(b);
}

/* the forward at a chosen vector width (8, 4 or 1; lowered to 1 when alignment forbids it) and segment length */
static void conv1d_forward_cfg(floatX* out, const floatX* in, int in_stride, const float* w, const float* bias, int B,
                               int T, int C, int K, int vec, int seg_len, cudaStream_t stream) {
    if (K < 1 || K > CONV_MAX_K) die("conv1d_forward: d_conv K = %d is not supported (1..%d)", K, CONV_MAX_K);
    if (!conv1d_vec8_ok(in, in_stride, out, C)) vec = 1;
    size_t threads = (size_t)B * CEIL_DIV(T, seg_len) * (C / vec);
    const int block = 128;
    unsigned grid = (unsigned)CEIL_DIV(threads, (size_t)block);
#define CONV_FWD_LAUNCH(KK, VV) \
    conv1d_forward_kernel<KK, VV><<<grid, block, 0, stream>>>(out, in, in_stride, w, bias, B, T, C, seg_len)
#define CONV_FWD_CASE(KK)                                                                                         \
    case KK:                                                                                                      \
        if (vec == 8) CONV_FWD_LAUNCH(KK, 8);                                                                     \
        else if (vec == 4) CONV_FWD_LAUNCH(KK, 4);                                                                \
        else CONV_FWD_LAUNCH(KK, 1);                                                                              \
        break;
    switch (K) {
        CONV_FWD_CASE(1) CONV_FWD_CASE(2) CONV_FWD_CASE(3) CONV_FWD_CASE(4)
        CONV_FWD_CASE(5) CONV_FWD_CASE(6) CONV_FWD_CASE(7) CONV_FWD_CASE(8)
    }
#undef CONV_FWD_CASE
#undef CONV_FWD_LAUNCH
    cudaCheckLast();
}

/* forward: 4 channels per thread, segment 64 was the fastest of the sweep (0.069 ms against 0.078 for 8 channels) */
#ifndef CONV_FWD_VEC
#define CONV_FWD_VEC 4
#endif

/* out = xbc (BT, C) floatX; in = the xBC column of zxbcdt, row stride in_stride; w (C, K), bias (C) float */
static void conv1d_forward(floatX* out, const floatX* in, int in_stride, const float* w, const float* bias, int B,
                           int T, int C, int K, cudaStream_t stream) {
    conv1d_forward_cfg(out, in, in_stride, w, bias, B, T, C, K, CONV_FWD_VEC, CONV_FWD_SEG, stream);
}

static int conv1d_backward_blocks_y(int B, int T, int seg_len) {
    return CEIL_DIV(B * CEIL_DIV(T, seg_len), CONV_BWD_SEGS);
}
/* sized for the shortest segment, so any segment length >= CONV_MIN_SEG fits */
static size_t conv1d_backward_scratch_floats(int B, int T, int C, int K) {
    return (size_t)conv1d_backward_blocks_y(B, T, CONV_MIN_SEG) * C * (K + 1);
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
    if (K < 1 || K > CONV_MAX_K) die("conv1d_backward: d_conv K = %d is not supported (1..%d)", K, CONV_MAX_K);
    if (!(conv1d_vec8_ok(in, in_stride, dout, C) && conv1d_vec8_ok(din, din_stride, din, C))) vec = 1;
    int by = conv1d_backward_blocks_y(B, T, seg_len);
    dim3 grid(CEIL_DIV(C / vec, WARP_SIZE), by), block(WARP_SIZE, CONV_BWD_SEGS);
    float* dw_partials = scratch;
    float* db_partials = scratch + (size_t)by * C * K;
#define CONV_BWD_LAUNCH(KK, VV)                                                                                   \
    conv1d_backward_kernel<KK, VV><<<grid, block, 0, stream>>>(din, din_stride, dw_partials, db_partials, dout,   \
                                                               in, in_stride, w, bias, B, T, C, seg_len)
#define CONV_BWD_CASE(KK)                                                                                         \
    case KK:                                                                                                      \
        if (vec == 8) CONV_BWD_LAUNCH(KK, 8);                                                                     \
        else if (vec == 4) CONV_BWD_LAUNCH(KK, 4);                                                                \
        else CONV_BWD_LAUNCH(KK, 1);                                                                              \
        break;
    switch (K) {
        CONV_BWD_CASE(1) CONV_BWD_CASE(2) CONV_BWD_CASE(3) CONV_BWD_CASE(4)
        CONV_BWD_CASE(5) CONV_BWD_CASE(6) CONV_BWD_CASE(7) CONV_BWD_CASE(8)
    }
#undef CONV_BWD_CASE
#undef CONV_BWD_LAUNCH
    cudaCheckLast();
    partial_sums_accumulate(dw, dw_partials, by, C * K, stream);
    partial_sums_accumulate(db, db_partials, by, C, stream);
}

/* din: the xBC column of d_zxbcdt (row stride din_stride), overwritten; dw (C, K), db (C) float accumulated;
 * dout = dxbc (BT, C); in, in_stride, w, bias as in the forward; scratch: conv1d_backward_scratch_floats floats */
static void conv1d_backward(floatX* din, int din_stride, float* dw, float* db, float* scratch, const floatX* dout,
                            const floatX* in, int in_stride, const float* w, const float* bias, int B, int T, int C,
                            int K, cudaStream_t stream) {
    conv1d_backward_cfg(din, din_stride, dw, db, scratch, dout, in, in_stride, w, bias, B, T, C, K, CONV_BWD_VEC,
                        CONV_BWD_SEG, stream);
}

#endif
