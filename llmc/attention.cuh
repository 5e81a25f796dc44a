/*
 * attention.cuh: causal multi-head attention (mamba_ssm's MHA semantics: GQA, partial rotary) forward and backward
 * on the GPU, in the FlashAttention-2 manner: the T x T score matrix never reaches memory; the forward keeps a
 * running max and sum per query row (online softmax) and saves only the logsumexp; the backward recomputes the
 * probabilities from it. RoPE is a separate in-place pass on the qkv buffer (attention_rope_forward / _backward).
 *
 * Layout. qkv: (B, T, qkv_stride) bf16, each position [q (Hq*hd) | k (Hkv*hd) | v (Hkv*hd) | unused], the in_proj
 * output. q head h reads kv head h / (Hq/Hkv). out: (B, T, Hq*hd). lse: (B, Hq, T) fp32, natural log.
 * seq_idx (B, T) int or NULL: the document of each position (packed documents); a query sees only keys of its own
 * document. seq_idx must be non-decreasing along a row (llmc/dataloader.h's dataloader_doc_index): the tile kernels
 * skip the tiles wholly outside a block's documents.
 *
 * Math, one query row i of head h, keys j <= i of the same document, scale = 1/sqrt(hd) usually:
 *   s_ij = scale q_i.k_j,  lse_i = log sum_j exp(s_ij),  P_ij = exp(s_ij - lse_i),  o_i = sum_j P_ij v_j
 * Backward, with D_i = sum_j P_ij (do_i.v_j) = do_i.o_i (attn_bwd_dsum_kernel computes it from o):
 *   dP_ij = do_i.v_j,  dS_ij = P_ij (dP_ij - D_i),  dq_i = scale sum_j dS_ij k_j,
 *   dk_j = scale sum_i dS_ij q_i,  dv_j = sum_i P_ij do_i
 * With GQA, dk, dv of a kv head are the sums over the q heads of its group.
 *
 * Kernels (bf16 build, hd 64 or 128, 16-byte aligned rows: attn_tiles_take), 4 warps of 16-row strips on
 * mma.sync m16n8k16 (llmc/ssd_tile.cuh's fragments, ldmatrix, cp.async; every GPU from sm_80):
 *   attn_fwd_mma_kernel         one block per (64 query rows, q head, batch), each warp a strip of 16 rows (a
 *                               variant: 128 rows, 2 strips a warp, measured slower); loops over the key blocks up
 *                               to the diagonal, K and V tiles double-buffered; S = Q K^T and P V in registers.
 *   attn_bwd_dsum_kernel        D = rowsum(dO * O)
 *   attn_bwd_dkdv_mma_kernel    one block per (128 key rows at hd 64 (2 strips per warp), 64 at hd 128, kv head,
 *                               batch); loops over the q heads of the group and the query blocks at and after the
 *                               diagonal, in a fixed order: dK, dV stay in registers, written once. No atomics.
 *   attn_bwd_dq_mma_kernel      one block per (64 query rows, q head, batch); recomputes P
 *                               and dP over the key blocks (FA2 adds dQ with float atomics from the dK/dV kernel
 *                               instead: not deterministic).
 * The backward thus does 7 T x T x hd products where FA2 does 5: the price of bitwise determinism.
 * Hopper's wgmma versions of these kernels measured slower on an H100 and live in dev/cuda/attention_lab.cuh.
 * The fp32 build (the oracle build) and other head dims run the simple kernels: one thread per query row (forward,
 * dq) or key row (dk, dv), the same math in fp32 in the same order every run.
 * Generation (every build): attention_kv_write (prefill or one step into a KV cache), attention_decode (one query
 * per sequence against the cache); see the section before the dispatch.
 *
 * RoPE, flash_attn's non-interleaved rotate-half on the first rotary_dim dims of every q and k head: for
 * i < rotary_dim/2, (x_i, x_{i+r/2}) -> (x_i c - x_{i+r/2} s, x_i s + x_{i+r/2} c), c, s = cos, sin(pos inv_freq_i),
 * inv_freq_i = base^(-2i/rotary_dim) (fp32, as torch computes it), pos = the position in the row (or pos[b, t]).
 * The backward rotates the gradient by -angle. Why a separate in-place pass rather than rotating inside the
 * attention's tile loads: the rotated q, k are what the backward needs (saved in place, nothing recomputed in every
 * tile load of three kernels), the tile kernels keep plain cp.async loads, and the pass costs one read and write of
 * q and k (by the floors, ~5% of the attention's forward + backward at T = 2048, ~1% at 8192).
 */
#ifndef MAMBA2_ATTENTION_CUH
#define MAMBA2_ATTENTION_CUH

#include <math.h>
#include <stdint.h>
#include "cuda_common.h"
#include "gpu_arch.cuh"
#include "ssd_tile.cuh"   /* the mma.sync tile primitives of the SSD kernels (bf16 build) */

#define ATTN_ROWS 64            /* query (or key) rows of a tile kernel's block: 4 warps of 16 */
#define ATTN_THREADS 128
#define ATTN_SIMPLE_MAX_HD 256  /* the simple kernels hold a head's row in registers / local memory */
#define ATTN_SIMPLE_THREADS 128

typedef struct {
    int B, T;
    int Hq, Hkv;      /* query heads, kv heads (Hq % Hkv == 0) */
    int hd;           /* head dim */
    int qkv_stride;   /* elements per position of the qkv (and dqkv) buffer, >= (Hq + 2 Hkv) hd */
    float scale;      /* softmax scale, usually 1/sqrt(hd) */
    const int* seq_idx;  /* (B, T) document of each position, or NULL (one document per row) */
} AttnDims;

/* the refusals: what is wrong and what to pass instead */
static void attn_check_dims(const AttnDims* d, const char* who) {
    const char* err = NULL;
    if (d->B < 1 || d->T < 1) err = "B and T must be >= 1";
    else if (d->Hq < 1 || d->Hkv < 1 || d->Hq % d->Hkv != 0) err = "num_heads must be a multiple of num_heads_kv";
    else if (d->hd < 1 || d->hd > ATTN_SIMPLE_MAX_HD) err = "head_dim must be in 1..256";
    else if (d->qkv_stride < (d->Hq + 2 * d->Hkv) * d->hd) err = "qkv_stride is smaller than (Hq + 2 Hkv) * head_dim";
    if (err != NULL) {
        fprintf(stderr, "%s: B=%d T=%d Hq=%d Hkv=%d head_dim=%d qkv_stride=%d: %s\n", who, d->B, d->T, d->Hq, d->Hkv,
                d->hd, d->qkv_stride, err);
        exit(EXIT_FAILURE);
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* RoPE, in place on the q and k heads of a qkv (or dqkv) buffer; sign = +1 forward, -1 backward */

/* v1, any even rotary_dim: one thread per (position, head, pair i) */
__global__ static void attn_rope_kernel(floatX* qkv, int B, int T, int nheads, int hd, int stride, int rotary_dim,
                                        float base, const int* pos, float sign) {
    int half = rotary_dim / 2;
    size_t n = (size_t)B * T * nheads * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % half);
        size_t rest = idx / half;
        int head = (int)(rest % nheads);
        size_t bt = rest / nheads;
        int t = (int)(bt % T);
        float p = pos != NULL ? (float)pos[bt] : (float)t;
        float inv_freq = 1.0f / powf(base, (float)(2 * i) / (float)rotary_dim);
        float s, c;
        sincosf(p * inv_freq, &s, &c);   /* the accurate sincosf: angles reach T radians */
        s *= sign;
        floatX* x = qkv + bt * stride + (size_t)head * hd;
        float x0 = toF(x[i]), x1 = toF(x[i + half]);
        x[i] = fromF(x0 * c - x1 * s);
        x[i + half] = fromF(x0 * s + x1 * c);
    }
}

/* two adjacent elements (an aligned pair) as floats, and back */
__device__ static inline void attn_load2(const floatX* p, float* a, float* b) {
#if defined(ENABLE_FP32)
    float2 v = *(const float2*)p;
    *a = v.x;
    *b = v.y;
#else
    __nv_bfloat162 v = *(const __nv_bfloat162*)p;
    *a = __low2float(v);
    *b = __high2float(v);
#endif
}
__device__ static inline void attn_store2(floatX* p, float a, float b) {
#if defined(ENABLE_FP32)
    *(float2*)p = make_float2(a, b);
#else
    *(__nv_bfloat162*)p = __floats2bfloat162_rn(a, b);
#endif
}
/* v2, rotary_dim % 4 == 0 and pair-aligned rows: one thread per (position, pairs i = 2j and 2j + 1). v1 spent a
   powf and an accurate sincosf on every element of every head (and 2-byte accesses): 4.3x its memory floor on an
   H100. Here the two angles are computed once per position and used for all Hq + Hkv heads, with two elements per
   load and store. The same fp32 arithmetic per element as v1. */
__global__ static void attn_rope_pairs_kernel(floatX* qkv, int BT, int T, int nheads, int hd, int stride,
                                              int rotary_dim, float base, const int* pos, float sign) {
    int quarter = rotary_dim / 4, half = rotary_dim / 2;
    size_t n = (size_t)BT * quarter;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        int i = 2 * (int)(idx % quarter);
        size_t bt = idx / quarter;
        float p = pos != NULL ? (float)pos[bt] : (float)(bt % T);
        float s[2], c[2];
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float inv_freq = 1.0f / powf(base, (float)(2 * (i + e)) / (float)rotary_dim);
            sincosf(p * inv_freq, &s[e], &c[e]);   /* the accurate sincosf: angles reach T radians */
            s[e] *= sign;
        }
        floatX* row = qkv + bt * stride + i;
#pragma unroll 4
        for (int head = 0; head < nheads; head++) {
            floatX* x = row + (size_t)head * hd;
            float a0, a1, b0, b1;   /* x[i], x[i + 1]; x[i + half], x[i + 1 + half] */
            attn_load2(x, &a0, &a1);
            attn_load2(x + half, &b0, &b1);
            attn_store2(x, a0 * c[0] - b0 * s[0], a1 * c[1] - b1 * s[1]);
            attn_store2(x + half, a0 * s[0] + b0 * c[0], a1 * s[1] + b1 * c[1]);
        }
    }
}

/* version 2 (attn_rope_pairs_kernel) where the shape allows it, else (or version 1) attn_rope_kernel */
static void attn_rope_launch(floatX* qkv, const AttnDims* d, int rotary_dim, float base, const int* pos, float sign,
                             int version, cudaStream_t stream) {
    if (rotary_dim == 0) return;
    if (rotary_dim < 0 || rotary_dim % 2 != 0 || rotary_dim > d->hd) {
        fprintf(stderr, "attention RoPE: rotary_dim %d must be even and in 0..head_dim (%d)\n", rotary_dim, d->hd);
        exit(EXIT_FAILURE);
    }
    size_t cap = (size_t)cuda_num_sms() * 16;   /* blocks; grid-stride past that */
    int pairs = version >= 2 && rotary_dim % 4 == 0 && d->hd % 2 == 0 && d->qkv_stride % 2 == 0 &&
                (uintptr_t)qkv % (2 * sizeof(floatX)) == 0;
    if (pairs) {
        size_t n = (size_t)d->B * d->T * (rotary_dim / 4), blocks = CEIL_DIV(n, (size_t)256);
        attn_rope_pairs_kernel<<<(int)(blocks < cap ? blocks : cap), 256, 0, stream>>>(
            qkv, d->B * d->T, d->T, d->Hq + d->Hkv, d->hd, d->qkv_stride, rotary_dim, base, pos, sign);
    } else {
        size_t n = (size_t)d->B * d->T * (d->Hq + d->Hkv) * (rotary_dim / 2), blocks = CEIL_DIV(n, (size_t)256);
        attn_rope_kernel<<<(int)(blocks < cap ? blocks : cap), 256, 0, stream>>>(
            qkv, d->B, d->T, d->Hq + d->Hkv, d->hd, d->qkv_stride, rotary_dim, base, pos, sign);
    }
    cudaCheckLast();
}
/* rotate the q and k heads of qkv in place (the q and k heads are adjacent: Hq + Hkv heads from column 0) */
static void attention_rope_forward(floatX* qkv, const AttnDims* d, int rotary_dim, float base, const int* pos,
                                   cudaStream_t stream) {
    attn_rope_launch(qkv, d, rotary_dim, base, pos, 1.0f, 2, stream);
}
/* the gradient w.r.t. the unrotated q, k from the one w.r.t. the rotated: rotation by -angle, in place on dqkv */
static void attention_rope_backward(floatX* dqkv, const AttnDims* d, int rotary_dim, float base, const int* pos,
                                    cudaStream_t stream) {
    attn_rope_launch(dqkv, d, rotary_dim, base, pos, -1.0f, 2, stream);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* the simple kernels: fp32 build, and head dims the tile kernels do not take */

__device__ static inline int attn_same_doc(const int* seq, size_t row0, int i, int j) {
    return seq == NULL || seq[row0 + i] == seq[row0 + j];
}

/* one thread per (b, h, query row i): online softmax over the keys j <= i */
__global__ static void attn_fwd_simple_kernel(floatX* out, float* lse, const floatX* qkv, AttnDims d) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= d.B * d.Hq * d.T) return;
    int i = idx % d.T, h = (idx / d.T) % d.Hq, b = idx / (d.T * d.Hq);
    int hk = h / (d.Hq / d.Hkv), hd = d.hd;
    size_t row0 = (size_t)b * d.T;
    const floatX* q = qkv + (row0 + i) * d.qkv_stride + (size_t)h * hd;
    const floatX* kbase = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + hk) * hd;
    const floatX* vbase = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + d.Hkv + hk) * hd;
    float qr[ATTN_SIMPLE_MAX_HD], acc[ATTN_SIMPLE_MAX_HD];
    for (int c = 0; c < hd; c++) { qr[c] = toF(q[c]) * d.scale; acc[c] = 0.f; }
    float m = -INFINITY, l = 0.f;
    for (int j = 0; j <= i; j++) {
        if (!attn_same_doc(d.seq_idx, row0, i, j)) continue;
        const floatX* k = kbase + (size_t)j * d.qkv_stride;
        const floatX* v = vbase + (size_t)j * d.qkv_stride;
        float s = 0.f;
        for (int c = 0; c < hd; c++) s += qr[c] * toF(k[c]);
        float m_new = fmaxf(m, s), alpha = expf(m - m_new), p = expf(s - m_new);
        l = l * alpha + p;
        for (int c = 0; c < hd; c++) acc[c] = acc[c] * alpha + p * toF(v[c]);
        m = m_new;
    }
    floatX* o = out + (row0 + i) * (size_t)(d.Hq * hd) + (size_t)h * hd;
    for (int c = 0; c < hd; c++) o[c] = fromF(acc[c] / l);
    lse[((size_t)b * d.Hq + h) * d.T + i] = m + logf(l);
}

/* D[b, h, i] = do_i . o_i, one warp per (b, i, h) row (every build) */
__global__ static void attn_bwd_dsum_kernel(float* dsum, const floatX* dout, const floatX* out, int B, int T, int Hq,
                                            int hd) {
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (warp >= B * T * Hq) return;
    int h = warp % Hq, bt = warp / Hq;
    const floatX* o = out + (size_t)warp * hd;
    const floatX* g = dout + (size_t)warp * hd;
    float s = 0.f;
    for (int c = lane; c < hd; c += 32) s += toF(o[c]) * toF(g[c]);
    s = warp_reduce_sum(s);
    if (lane == 0) dsum[((size_t)(bt / T) * Hq + h) * T + bt % T] = s;
}

/* one thread per (b, h, query row i): dq_i = scale sum_{j<=i} P_ij (do_i.v_j - D_i) k_j */
__global__ static void attn_bwd_dq_simple_kernel(floatX* dqkv, const floatX* dout, const float* lse, const float* dsum,
                                                 const floatX* qkv, AttnDims d) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= d.B * d.Hq * d.T) return;
    int i = idx % d.T, h = (idx / d.T) % d.Hq, b = idx / (d.T * d.Hq);
    int hk = h / (d.Hq / d.Hkv), hd = d.hd;
    size_t row0 = (size_t)b * d.T;
    const floatX* q = qkv + (row0 + i) * d.qkv_stride + (size_t)h * hd;
    const floatX* g = dout + (row0 + i) * (size_t)(d.Hq * hd) + (size_t)h * hd;
    const floatX* kbase = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + hk) * hd;
    const floatX* vbase = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + d.Hkv + hk) * hd;
    float qr[ATTN_SIMPLE_MAX_HD], gr[ATTN_SIMPLE_MAX_HD], dq[ATTN_SIMPLE_MAX_HD];
    for (int c = 0; c < hd; c++) { qr[c] = toF(q[c]) * d.scale; gr[c] = toF(g[c]); dq[c] = 0.f; }
    float L = lse[((size_t)b * d.Hq + h) * d.T + i], D = dsum[((size_t)b * d.Hq + h) * d.T + i];
    for (int j = 0; j <= i; j++) {
        if (!attn_same_doc(d.seq_idx, row0, i, j)) continue;
        const floatX* k = kbase + (size_t)j * d.qkv_stride;
        const floatX* v = vbase + (size_t)j * d.qkv_stride;
        float s = 0.f, dp = 0.f;
        for (int c = 0; c < hd; c++) { s += qr[c] * toF(k[c]); dp += gr[c] * toF(v[c]); }
        float ds = expf(s - L) * (dp - D);
        for (int c = 0; c < hd; c++) dq[c] += ds * toF(k[c]);
    }
    floatX* dst = dqkv + (row0 + i) * d.qkv_stride + (size_t)h * hd;
    for (int c = 0; c < hd; c++) dst[c] = fromF(dq[c] * d.scale);
}

/* one thread per (b, kv head, key row j): the q heads of the group in order, then the queries i >= j */
__global__ static void attn_bwd_dkdv_simple_kernel(floatX* dqkv, const floatX* dout, const float* lse,
                                                   const float* dsum, const floatX* qkv, AttnDims d) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= d.B * d.Hkv * d.T) return;
    int j = idx % d.T, hk = (idx / d.T) % d.Hkv, b = idx / (d.T * d.Hkv);
    int G = d.Hq / d.Hkv, hd = d.hd;
    size_t row0 = (size_t)b * d.T;
    const floatX* k = qkv + (row0 + j) * d.qkv_stride + (size_t)(d.Hq + hk) * hd;
    const floatX* v = qkv + (row0 + j) * d.qkv_stride + (size_t)(d.Hq + d.Hkv + hk) * hd;
    float kr[ATTN_SIMPLE_MAX_HD], vr[ATTN_SIMPLE_MAX_HD], dk[ATTN_SIMPLE_MAX_HD], dv[ATTN_SIMPLE_MAX_HD];
    for (int c = 0; c < hd; c++) { kr[c] = toF(k[c]) * d.scale; vr[c] = toF(v[c]); dk[c] = 0.f; dv[c] = 0.f; }
    for (int g = 0; g < G; g++) {
        int h = hk * G + g;
        const float* L = lse + ((size_t)b * d.Hq + h) * d.T;
        const float* D = dsum + ((size_t)b * d.Hq + h) * d.T;
        for (int i = j; i < d.T; i++) {
            if (!attn_same_doc(d.seq_idx, row0, i, j)) continue;
            const floatX* q = qkv + (row0 + i) * d.qkv_stride + (size_t)h * hd;
            const floatX* gi = dout + (row0 + i) * (size_t)(d.Hq * hd) + (size_t)h * hd;
            float s = 0.f, dp = 0.f;
            for (int c = 0; c < hd; c++) { s += kr[c] * toF(q[c]); dp += vr[c] * toF(gi[c]); }
            float p = expf(s - L[i]), ds = p * (dp - D[i]);
            for (int c = 0; c < hd; c++) { dv[c] += p * toF(gi[c]); dk[c] += ds * toF(q[c]); }
        }
    }
    floatX* dkd = dqkv + (row0 + j) * d.qkv_stride + (size_t)(d.Hq + hk) * hd;
    floatX* dvd = dqkv + (row0 + j) * d.qkv_stride + (size_t)(d.Hq + d.Hkv + hk) * hd;
    for (int c = 0; c < hd; c++) { dkd[c] = fromF(dk[c] * d.scale); dvd[c] = fromF(dv[c]); }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* the tile kernels (bf16 build) */

#if !defined(ENABLE_FP32)
#define ATTN_LOG2E 1.4426950408889634f

/* doc[row] of a position, or -1 past the end (masked by the causal or length test anyway) */
__device__ static inline int attn_doc(const int* seq, size_t row0, int T, int t) {
    return t < T ? __ldg(seq + row0 + t) : -1;
}
/* With packed documents (seq_idx non-decreasing along a row, as llmc/dataloader.h makes it), whole tiles that the
   document mask hides are skipped rather than masked: a query block needs no key before the start of its first
   row's document, a key block no query after the end of its last row's document. Binary searches, once per block. */
__device__ static inline int attn_doc_start(const int* seq, size_t row0, int t) {
    int doc = __ldg(seq + row0 + t), lo = 0, hi = t;   /* the first s <= t with seq[s] == doc */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (__ldg(seq + row0 + mid) < doc) lo = mid + 1; else hi = mid;
    }
    return lo;
}
__device__ static inline int attn_doc_end(const int* seq, size_t row0, int T, int t) {
    int doc = __ldg(seq + row0 + t), lo = t, hi = T - 1;   /* the last e >= t with seq[e] == doc */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (__ldg(seq + row0 + mid) > doc) hi = mid - 1; else lo = mid;
    }
    return lo;
}

/* a 16 x 64 accumulator strip (fragment layout of llmc/ssd_tile.cuh) written as bf16 pairs to rows r0 + lane/4
   (+8) of a row-major matrix (row stride ld), rows at or past T skipped; values times mul */
template <int NT8>
__device__ static inline void attn_store_strip(floatX* dst, size_t ld, int r0, int T, const float acc[][4], float mul) {
    int lane = threadIdx.x % 32, r = r0 + lane / 4, c = 2 * (lane % 4);
#pragma unroll
    for (int nt = 0; nt < NT8; nt++) {
        if (r < T) *(uint32_t*)(dst + (size_t)r * ld + nt * 8 + c) = ssd_pack_bf16(acc[nt][0] * mul, acc[nt][1] * mul);
        if (r + 8 < T)
            *(uint32_t*)(dst + (size_t)(r + 8) * ld + nt * 8 + c) = ssd_pack_bf16(acc[nt][2] * mul, acc[nt][3] * mul);
    }
}

/* 2^x on the special-function unit, subnormal results flushed to 0. exp2f without --use_fast_math is the
   non-flushing ex2.approx.f32, which needs a range test and scaling multiplies around the same unit: extra
   instructions on every score element, where the softmax's instructions already compete with the products' at
   hd 64. A probability below 2^-126 is 0 after the bf16 rounding of P anyway, and nothing sums enough of them to
   matter. */
__device__ static inline float attn_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* The forward's step on one 16 x 64 score strip of a warp (fragment layout of llmc/ssd_tile.cuh: s[nt][e] is row
   rq + 8 (e/2), key kc0 + 8 nt + 2 (lane%4) + e%2), s the raw dot products q.k: mask (causal where `masked`, and
   documents), then the online softmax in the log2 domain: the running max m (of s * scale * log2 e) and this lane's
   part of the row sum l are updated, the output accumulator o (NTO 8-column tiles) rescaled, and s replaced by the
   unnormalized probabilities exp2(s sl2 - m). The max is taken over the raw s and scaled once (sl2 > 0 and rounding
   is monotonic: the same value as the max of the scaled), so each element costs a max, one FFMA and one ex2. */
template <int NTO>
__device__ static inline void attn_online_softmax(float s[8][4], float o[][4], float m[2], float l[2], int rq, int kc0,
                                                  int masked, const int* seq, size_t row0, int T, const int docq[2],
                                                  float sl2) {
    int lane = threadIdx.x % 32;
    if (masked) {
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int r = rq + (e / 2) * 8, c = kc0 + nt * 8 + 2 * (lane % 4) + (e % 2);
                int ok = c <= r;
                if (seq != NULL) ok = ok && attn_doc(seq, row0, T, c) == docq[e / 2];
                if (!ok) s[nt][e] = -INFINITY;
            }
        }
    }
    float alpha[2], m_use[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        float m_new = fmaxf(m[i], mx * sl2);
        m_use[i] = m_new == -INFINITY ? 0.f : m_new;   /* a row with every key masked so far: p = 0 */
        alpha[i] = attn_exp2(m[i] - m_use[i]);
        m[i] = m_new;
        l[i] *= alpha[i];
    }
    /* o *= alpha only where some row of the warp has a new max: alpha is exactly 1 elsewhere, so skipping is the
       same bits, and past the first key tiles the running max rarely moves (NTO multiplies per row saved) */
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
        for (int nt = 0; nt < NTO; nt++) {
            o[nt][0] *= alpha[0];
            o[nt][1] *= alpha[0];
            o[nt][2] *= alpha[1];
            o[nt][3] *= alpha[1];
        }
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            float p0 = attn_exp2(fmaf(s[nt][2 * i], sl2, -m_use[i]));
            float p1 = attn_exp2(fmaf(s[nt][2 * i + 1], sl2, -m_use[i]));
            s[nt][2 * i] = p0;
            s[nt][2 * i + 1] = p1;
            l[i] += p0 + p1;   /* this lane's part of the row sum; the quad adds them at the end */
        }
    }
}
/* the forward's end for one 16-row strip: o / l to out (row stride ostride) and lse = ln(sum exp(s)) */
template <int NTO>
__device__ static inline void attn_fwd_finish(floatX* out, size_t ostride, float* lse_row, int r0, int T, float o[][4],
                                              float m[2], float l[2]) {
    float inv[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] = ssd_quad_sum(l[i]);
        inv[i] = 1.f / l[i];
    }
#pragma unroll
    for (int nt = 0; nt < NTO; nt++) { o[nt][0] *= inv[0]; o[nt][1] *= inv[0]; o[nt][2] *= inv[1]; o[nt][3] *= inv[1]; }
    attn_store_strip<NTO>(out, ostride, r0, T, o, 1.f);
    int lane = threadIdx.x % 32, rq = r0 + lane / 4;
    if (lane % 4 == 0) {
        if (rq < T) lse_row[rq] = (m[0] + log2f(l[0])) * 0.6931471805599453f;
        if (rq + 8 < T) lse_row[rq + 8] = (m[1] + log2f(l[1])) * 0.6931471805599453f;
    }
}

/* the forward with MW strips per warp: Q (64 MW rows) | K[2] | V[2] */
static inline size_t attn_smem_fwd(int hd, int mw) {
    return (size_t)(mw + 4) * ATTN_ROWS * (hd + 8) * sizeof(floatX);
}
/* the dK/dV kernel with MW strips per warp: K, V (64 MW rows each) | Q[stages] | dO[stages] | lse2, D[stages] */
static inline size_t attn_smem_dkdv(int hd, int stages, int mw) {
    return (size_t)(2 * mw + 2 * stages) * ATTN_ROWS * (hd + 8) * sizeof(floatX) +
           2 * stages * ATTN_ROWS * sizeof(float);
}
/* the dQ kernel with MW strips per warp: Q, dO (64 MW rows each) | K[stages] | V[stages] */
static inline size_t attn_smem_dq(int hd, int stages, int mw) {
    return (size_t)(2 * mw + 2 * stages) * ATTN_ROWS * (hd + 8) * sizeof(floatX);
}

/* element (nt, e) of a 16 x 64 tile (accumulator layout) from its bf16 A fragments (ssd_pack_a's packing: the
   lower column in the low half) */
__device__ static inline float attn_frag_elem(const uint32_t af[4][4], int nt, int e) {
    uint32_t w = af[nt / 2][(nt % 2) * 2 + e / 2];
    return __uint_as_float(e % 2 == 0 ? w << 16 : w & 0xffff0000u);
}

/* The products of a warp's MW 16-row strips (rows a + 64 m lda.., m < MW) against one 64-row tile (the forward's
   S = Q K^T and P V; the dQ kernel's S, dP = dO V^T and dS K; the dK/dV kernel's S^T = K Q^T, P^T dO and dS^T Q):
   the strips share every fragment of the tile read from shared memory, which is the point of more rows per warp
   (with one strip, each ldmatrix of the tile feeds 2 mma; with two, 4: shared-memory reads per product halve).
   Only the strips mlo <= m <= mhi take part (the others are wholly masked by causality on this tile); the bounds
   are warp-uniform, so the mma run converged. */
template <int MW, int HD>
__device__ static inline void attn_strips_nt(float s[][8][4], const floatX* a, int lda, const floatX* k, int ldk,
                                             int mlo, int mhi) {
    int lane = threadIdx.x % 32;
    const floatX* ap = a + (lane % 16) * lda + (lane / 16) * 8;
    const floatX* bp = k + ((lane % 8) + (lane / 16) * 8) * ldk + ((lane / 8) % 2) * 8;
#pragma unroll
    for (int k0 = 0; k0 < HD; k0 += 16) {
        uint32_t af[MW][4];
#pragma unroll
        for (int m = 0; m < MW; m++)
            if (m >= mlo && m <= mhi) ssd_ldsm(af[m], ap + m * ATTN_ROWS * lda + k0);
#pragma unroll
        for (int nt = 0; nt < 8; nt += 2) {
            uint32_t bf[4];
            ssd_ldsm(bf, bp + nt * 8 * ldk + k0);
#pragma unroll
            for (int m = 0; m < MW; m++) {
                if (m >= mlo && m <= mhi) {
                    ssd_mma_bf16(s[m][nt], af[m], bf);
                    ssd_mma_bf16(s[m][nt + 1], af[m], bf + 2);
                }
            }
        }
    }
}
/* o[m] (16 x HD) += P[m] (16 x 64, bf16 A fragments) V (64 x HD, row-major in shared memory), mlo <= m <= mhi */
template <int MW, int HD>
__device__ static inline void attn_strips_rn(float o[][HD / 8][4], const uint32_t pf[][4][4], const floatX* v,
                                             int ldv, int mlo, int mhi) {
    int lane = threadIdx.x % 32;
    const floatX* bp = v + ((lane % 8) + ((lane / 8) % 2) * 8) * ldv + (lane / 16) * 8;
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
#pragma unroll
        for (int nt = 0; nt < HD / 8; nt += 2) {
            uint32_t bf[4];
            ssd_ldsm_t(bf, bp + ks * 16 * ldv + nt * 8);
#pragma unroll
            for (int m = 0; m < MW; m++) {
                if (m >= mlo && m <= mhi) {
                    ssd_mma_bf16(o[m][nt], pf[m][ks], bf);
                    ssd_mma_bf16(o[m][nt + 1], pf[m][ks], bf + 2);
                }
            }
        }
    }
}

/* Forward: block (query block qb of 64 MW rows, q head h, batch b), 4 warps. Shared: Q (64 MW rows) | K[2] | V[2],
   rows padded to HD + 8; K, V tiles of 64 keys, the next loaded (cp.async) while this one is used. Warp w owns the
   MW strips of 16 query rows q0 + 64 m + 16 w (m < MW): interleaved, so that on the block's last key tiles every
   warp has the same work (strip m's diagonal tile is MW qb + m; the tiles after it are skipped). Per key tile and
   strip: S = Q K^T (16 x 64 fp32), masked (causal on the diagonal tile, documents where DOCS), online softmax in
   the log2 domain, O += P V with P repacked in registers as bf16 A fragments (never through shared memory).
   MW = 1 (64 rows per block) is the default; MW = 2 (128 rows, FlashAttention-2's block for these head dims)
   halves the shared-memory reads per product and the K/V tile loads per query row, but runs half the warps per
   multiprocessor and measured slower (dev/cuda/NOTES_attention.md). DOCS = 0 (seq_idx NULL) is
   compiled without any document code. */
template <int HD, int MW, bool DOCS>
__global__ static void __launch_bounds__(ATTN_THREADS) attn_fwd_mma_kernel(floatX* out, float* lse,
                                                                           const floatX* qkv,
                                                                           AttnDims d) {
    constexpr int LD = HD + 8, NT = HD / 8, QROWS = ATTN_ROWS * MW;
    extern __shared__ __align__(16) unsigned char attn_smem[];
    floatX* Qs = (floatX*)attn_smem;
    floatX* Ks = Qs + QROWS * LD;        /* two buffers */
    floatX* Vs = Ks + 2 * ATTN_ROWS * LD;
    int qb = gridDim.x - 1 - blockIdx.x;  /* the longest rows first: the last wave is short blocks */
    int h = blockIdx.y, b = blockIdx.z, hk = h / (d.Hq / d.Hkv);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, T = d.T;
    size_t row0 = (size_t)b * T;
    const int* seq = DOCS ? d.seq_idx : NULL;
    const floatX* qg = qkv + row0 * d.qkv_stride + (size_t)h * HD;
    const floatX* kg = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + hk) * HD;
    const floatX* vg = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + d.Hkv + hk) * HD;
    int q0 = qb * QROWS, kdiag0 = MW * qb;                            /* strip m's diagonal key tile: kdiag0 + m */
    int nkb = MW == 1 ? qb + 1 : min(kdiag0 + MW, CEIL_DIV(T, ATTN_ROWS));
    int kb0 = DOCS ? attn_doc_start(seq, row0, q0) / ATTN_ROWS : 0;   /* first key tile */
#pragma unroll
    for (int m = 0; m < MW; m++)
        ssd_load_tile(Qs + m * ATTN_ROWS * LD, LD, qg, d.qkv_stride, q0 + m * ATTN_ROWS, T, HD);
    ssd_load_tile(Ks, LD, kg, d.qkv_stride, kb0 * ATTN_ROWS, T, HD);
    ssd_load_tile(Vs, LD, vg, d.qkv_stride, kb0 * ATTN_ROWS, T, HD);
    ssd_cp_commit();

    const float sl2 = d.scale * ATTN_LOG2E;
    int rq[MW], docq[MW][2];   /* this lane's rows rq[m], rq[m] + 8 and their documents */
    float o[MW][NT][4], mx[MW][2], l[MW][2];
#pragma unroll
    for (int m = 0; m < MW; m++) {
        rq[m] = q0 + m * ATTN_ROWS + warp * 16 + lane / 4;
        docq[m][0] = DOCS ? attn_doc(seq, row0, T, rq[m]) : 0;
        docq[m][1] = DOCS ? attn_doc(seq, row0, T, rq[m] + 8) : 0;
        mx[m][0] = mx[m][1] = -INFINITY;
        l[m][0] = l[m][1] = 0.f;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) o[m][nt][0] = o[m][nt][1] = o[m][nt][2] = o[m][nt][3] = 0.f;
    }

    for (int kb = kb0; kb < nkb; kb++) {
        int buf = DOCS ? (kb - kb0) & 1 : kb & 1;
        if (kb + 1 < nkb) {
            ssd_load_tile(Ks + (buf ^ 1) * ATTN_ROWS * LD, LD, kg, d.qkv_stride, (kb + 1) * ATTN_ROWS, T, HD);
            ssd_load_tile(Vs + (buf ^ 1) * ATTN_ROWS * LD, LD, vg, d.qkv_stride, (kb + 1) * ATTN_ROWS, T, HD);
        }
        ssd_cp_commit();
        ssd_cp_wait<1>();
        __syncthreads();
        int mlo = MW == 1 ? 0 : max(kb - kdiag0, 0);   /* the strips before mlo end before this tile's first key */
        float s[MW][8][4];
#pragma unroll
        for (int m = 0; m < MW; m++)
#pragma unroll
            for (int nt = 0; nt < 8; nt++) s[m][nt][0] = s[m][nt][1] = s[m][nt][2] = s[m][nt][3] = 0.f;
        attn_strips_nt<MW, HD>(s, Qs + warp * 16 * LD, LD, Ks + buf * ATTN_ROWS * LD, LD, mlo, MW - 1);
        uint32_t pf[MW][4][4];
#pragma unroll
        for (int m = 0; m < MW; m++) {
            if (m >= mlo) {
                attn_online_softmax<NT>(s[m], o[m], mx[m], l[m], rq[m], kb * ATTN_ROWS, kb == kdiag0 + m || DOCS, seq,
                                        row0, T, docq[m], sl2);
                ssd_pack_a<4>(pf[m], s[m]);
            }
        }
        attn_strips_rn<MW, HD>(o, pf, Vs + buf * ATTN_ROWS * LD, LD, mlo, MW - 1);
        __syncthreads();   /* the buffer is refilled by the next iteration's loads */
    }
    size_t ostride = (size_t)d.Hq * HD;
#pragma unroll
    for (int m = 0; m < MW; m++)
        attn_fwd_finish<NT>(out + row0 * ostride + (size_t)h * HD, ostride, lse + ((size_t)b * d.Hq + h) * T,
                            q0 + m * ATTN_ROWS + warp * 16, T, o[m], mx[m], l[m]);
}

/* dK, dV: block (key block kb of 64 MW keys, kv head hk, batch b). Shared: K | V (64 MW rows each) | Q[STAGES] |
   dO[STAGES] | lse2[STAGES] | D[STAGES]. Work items (q head g of the group, query block qb of 64 rows at or after
   the block's first key), g outer, in this fixed order, each loaded while the previous is computed where
   STAGES = 2. Warp w owns the MW strips of 16 keys kb 64 MW + 64 m + 16 w (m < MW) and keeps their dK, dV (16 x HD
   fp32 each) in registers:
     S^T = K Q^T, P^T = exp2(S^T scale log2e - lse2) (masked), dV += P^T dO, dP^T = V dO^T, dS^T = P^T (dP^T - D),
     dK += dS^T Q; dK * scale at the end.
   MW = 2 (128 keys per block, hd 64 only: dk, dv of two strips are 128 registers) shares each Q and dO fragment of
   S^T, dV and dK between the strips and loads each Q, dO tile once per 128 keys; dP^T runs strip after strip (the
   registers of both strips' P and dP at once are not there), and dS^T = P^T (dP^T - D) takes P^T as rounded to
   bf16 for the dV product (its fp32 copy would not fit beside dk, dv of two strips: 160 bytes of spill): one more
   bf16 rounding in dS, which is itself rounded to bf16 for dK. On a query block, the strips after strip mhi hold
   only keys later than every query of the block (causal) and are skipped. DOCS = 0: no document code. HD 64,
   MW 1: at most 170 registers, 3 blocks per multiprocessor (the first version's 168). */
template <int HD, int STAGES, int MW, bool DOCS>
__global__ static void __launch_bounds__(ATTN_THREADS, HD == 64 && MW == 1 ? 3 : 1) attn_bwd_dkdv_mma_kernel(floatX* dqkv, const floatX* dout,
                                                                                const float* lse, const float* dsum,
                                                                                const floatX* qkv, AttnDims d) {
    constexpr int LD = HD + 8, NT = HD / 8, KROWS = ATTN_ROWS * MW;
    extern __shared__ __align__(16) unsigned char attn_smem[];
    floatX* Ks = (floatX*)attn_smem;
    floatX* Vs = Ks + KROWS * LD;
    floatX* Qs = Vs + KROWS * LD;
    floatX* Gs = Qs + STAGES * ATTN_ROWS * LD;
    float* Ls = (float*)(Gs + STAGES * ATTN_ROWS * LD);
    float* Ds = Ls + STAGES * ATTN_ROWS;
    int kb = blockIdx.x, hk = blockIdx.y, b = blockIdx.z, G = d.Hq / d.Hkv, T = d.T;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    size_t row0 = (size_t)b * T, gstride = (size_t)d.Hq * HD;
    const int* seq = DOCS ? d.seq_idx : NULL;
    const floatX* kg = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + hk) * HD;
    const floatX* vg = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + d.Hkv + hk) * HD;
    int k0 = kb * KROWS, qb0 = kb * MW;   /* the block's first key; the query block holding it (strip m's: qb0 + m) */
    int nqb = CEIL_DIV(T, ATTN_ROWS);
    if (DOCS) nqb = min(nqb, attn_doc_end(seq, row0, T, min(k0 + KROWS - 1, T - 1)) / ATTN_ROWS + 1);   /* no query
                                                                            block past the last key's document */
    int nq = nqb - qb0, nitems = G * nq;
#pragma unroll
    for (int m = 0; m < MW; m++) {
        ssd_load_tile(Ks + m * ATTN_ROWS * LD, LD, kg, d.qkv_stride, k0 + m * ATTN_ROWS, T, HD);
        ssd_load_tile(Vs + m * ATTN_ROWS * LD, LD, vg, d.qkv_stride, k0 + m * ATTN_ROWS, T, HD);
    }
    ssd_cp_commit();
    /* item it -> buffer buf: the Q and dO tiles (cp.async) and the rows' lse (log2 units; +inf past T: P = 0), D */
    auto load_item = [&](int it, int buf) {
        int h = hk * G + it / nq, q0 = (qb0 + it % nq) * ATTN_ROWS;
        ssd_load_tile(Qs + buf * ATTN_ROWS * LD, LD, qkv + row0 * d.qkv_stride + (size_t)h * HD, d.qkv_stride, q0, T,
                      HD);
        ssd_load_tile(Gs + buf * ATTN_ROWS * LD, LD, dout + row0 * gstride + (size_t)h * HD, gstride, q0, T, HD);
        if (threadIdx.x < ATTN_ROWS) {
            int r = q0 + threadIdx.x;
            size_t at = ((size_t)b * d.Hq + h) * T + r;
            Ls[buf * ATTN_ROWS + threadIdx.x] = r < T ? lse[at] * ATTN_LOG2E : INFINITY;
            Ds[buf * ATTN_ROWS + threadIdx.x] = r < T ? dsum[at] : 0.f;
        }
    };
    if (STAGES == 2) { load_item(0, 0); ssd_cp_commit(); }

    const float sl2 = d.scale * ATTN_LOG2E;
    int rk[MW], dock[MW][2];   /* this lane's key rows rk[m], rk[m] + 8 and their documents */
    float dk[MW][NT][4], dv[MW][NT][4];
#pragma unroll
    for (int m = 0; m < MW; m++) {
        rk[m] = k0 + m * ATTN_ROWS + warp * 16 + lane / 4;
        dock[m][0] = DOCS ? attn_doc(seq, row0, T, rk[m]) : 0;
        dock[m][1] = DOCS ? attn_doc(seq, row0, T, rk[m] + 8) : 0;
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) dk[m][nt][e] = dv[m][nt][e] = 0.f;
    }

    for (int it = 0; it < nitems; it++) {
        int buf = STAGES == 2 ? it & 1 : 0;
        if (STAGES == 2) {
            if (it + 1 < nitems) load_item(it + 1, buf ^ 1);
            ssd_cp_commit();
            ssd_cp_wait<1>();
        } else {
            load_item(it, 0);
            ssd_cp_commit();
            ssd_cp_wait<0>();
        }
        __syncthreads();
        int qb = qb0 + it % nq;
        int mhi = MW == 1 ? 0 : min(qb - qb0, MW - 1);   /* strips after mhi: every key after every query here */
        const floatX* Qt = Qs + buf * ATTN_ROWS * LD;
        const floatX* Gt = Gs + buf * ATTN_ROWS * LD;
        const float* Lt = Ls + buf * ATTN_ROWS;
        const float* Dt = Ds + buf * ATTN_ROWS;
        float p[MW][8][4];
#pragma unroll
        for (int m = 0; m < MW; m++)
#pragma unroll
            for (int nt = 0; nt < 8; nt++) p[m][nt][0] = p[m][nt][1] = p[m][nt][2] = p[m][nt][3] = 0.f;
        attn_strips_nt<MW, HD>(p, Ks + warp * 16 * LD, LD, Qt, LD, 0, mhi);   /* S^T = K Q^T */
        uint32_t af[MW][4][4];
#pragma unroll
        for (int m = 0; m < MW; m++) {
            if (m > mhi) continue;
            int masked = qb == qb0 + m || DOCS;
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int cl = nt * 8 + 2 * (lane % 4) + (e % 2), c = qb * ATTN_ROWS + cl, r = rk[m] + (e / 2) * 8;
                    int ok = 1;
                    if (masked) {
                        ok = c >= r;
                        if (DOCS) ok = ok && attn_doc(seq, row0, T, c) == dock[m][e / 2];
                    }
                    p[m][nt][e] = ok ? attn_exp2(fmaf(p[m][nt][e], sl2, -Lt[cl])) : 0.f;
                }
            }
            ssd_pack_a<4>(af[m], p[m]);
        }
        attn_strips_rn<MW, HD>(dv, af, Gt, LD, 0, mhi);   /* dV += P^T dO */
#pragma unroll
        for (int m = 0; m < MW; m++) {
            if (m > mhi) continue;
            float dp[8][4];
#pragma unroll
            for (int nt = 0; nt < 8; nt++) dp[nt][0] = dp[nt][1] = dp[nt][2] = dp[nt][3] = 0.f;
            ssd_mma_nt<8>(dp, Vs + (m * ATTN_ROWS + warp * 16) * LD, LD, Gt, LD, HD, 64);   /* dP^T = V dO^T */
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    dp[nt][e] = (MW == 1 ? p[m][nt][e] : attn_frag_elem(af[m], nt, e)) *
                                (dp[nt][e] - Dt[nt * 8 + 2 * (lane % 4) + (e % 2)]);
            ssd_pack_a<4>(af[m], dp);
        }
        attn_strips_rn<MW, HD>(dk, af, Qt, LD, 0, mhi);   /* dK += dS^T Q */
        __syncthreads();   /* the buffer is refilled by a later iteration's loads */
    }
#pragma unroll
    for (int m = 0; m < MW; m++) {
        int r0 = k0 + m * ATTN_ROWS + warp * 16;
        attn_store_strip<NT>(dqkv + row0 * d.qkv_stride + (size_t)(d.Hq + hk) * HD, d.qkv_stride, r0, T, dk[m],
                             d.scale);
        attn_store_strip<NT>(dqkv + row0 * d.qkv_stride + (size_t)(d.Hq + d.Hkv + hk) * HD, d.qkv_stride, r0, T,
                             dv[m], 1.f);
    }
}

/* dQ: block (query block qb of 64 MW rows, q head h, batch b). Shared: Q | dO (64 MW rows each) | K[STAGES] |
   V[STAGES]. Warp w owns the MW strips of 16 query rows q0 + 64 m + 16 w, as in the forward (MW = 2: each K, V fragment
   read from shared memory feeds both strips; only at hd 64, where dq, P and dP of two strips fit the registers;
   measured slower than MW = 1, which the default runs). Per key tile and strip: S = Q K^T, P = exp2(S scale log2e -
   lse2), dP = dO V^T, dS = P (dP - D), dQ += dS K; dQ * scale at the end. DOCS = 0 (seq_idx NULL): no document code
   (and registers). */
template <int HD, int STAGES, int MW, bool DOCS>
__global__ static void __launch_bounds__(ATTN_THREADS) attn_bwd_dq_mma_kernel(floatX* dqkv, const floatX* dout,
                                                                              const float* lse, const float* dsum,
                                                                              const floatX* qkv, AttnDims d) {
    constexpr int LD = HD + 8, NT = HD / 8, QROWS = ATTN_ROWS * MW;
    extern __shared__ __align__(16) unsigned char attn_smem[];
    floatX* Qs = (floatX*)attn_smem;
    floatX* Gs = Qs + QROWS * LD;
    floatX* Ks = Gs + QROWS * LD;
    floatX* Vs = Ks + STAGES * ATTN_ROWS * LD;
    int qb = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = h / (d.Hq / d.Hkv), T = d.T;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    size_t row0 = (size_t)b * T, gstride = (size_t)d.Hq * HD;
    const floatX* kg = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + hk) * HD;
    const floatX* vg = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + d.Hkv + hk) * HD;
    int q0 = qb * QROWS, kdiag0 = MW * qb;                             /* strip m's diagonal key tile: kdiag0 + m */
    int nkb = MW == 1 ? qb + 1 : min(kdiag0 + MW, CEIL_DIV(T, ATTN_ROWS));
    const int* seq = DOCS ? d.seq_idx : NULL;
    int kb0 = DOCS ? attn_doc_start(seq, row0, q0) / ATTN_ROWS : 0;   /* first key tile */
#pragma unroll
    for (int m = 0; m < MW; m++) {
        ssd_load_tile(Qs + m * ATTN_ROWS * LD, LD, qkv + row0 * d.qkv_stride + (size_t)h * HD, d.qkv_stride,
                      q0 + m * ATTN_ROWS, T, HD);
        ssd_load_tile(Gs + m * ATTN_ROWS * LD, LD, dout + row0 * gstride + (size_t)h * HD, gstride, q0 + m * ATTN_ROWS,
                      T, HD);
    }
    ssd_cp_commit();
    if (STAGES == 2) {
        ssd_load_tile(Ks, LD, kg, d.qkv_stride, kb0 * ATTN_ROWS, T, HD);
        ssd_load_tile(Vs, LD, vg, d.qkv_stride, kb0 * ATTN_ROWS, T, HD);
        ssd_cp_commit();
    }
    const float sl2 = d.scale * ATTN_LOG2E;
    int rq[MW], docq[MW][2];
    float L2[MW][2], Dr[MW][2], dq[MW][NT][4];
#pragma unroll
    for (int m = 0; m < MW; m++) {
        rq[m] = q0 + m * ATTN_ROWS + warp * 16 + lane / 4;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            int r = rq[m] + 8 * i;
            size_t at = ((size_t)b * d.Hq + h) * T + r;
            L2[m][i] = r < T ? lse[at] * ATTN_LOG2E : INFINITY;
            Dr[m][i] = r < T ? dsum[at] : 0.f;
            docq[m][i] = DOCS ? attn_doc(seq, row0, T, r) : 0;
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++) dq[m][nt][0] = dq[m][nt][1] = dq[m][nt][2] = dq[m][nt][3] = 0.f;
    }

    for (int kb = kb0; kb < nkb; kb++) {
        int buf = STAGES == 2 ? (DOCS ? kb - kb0 : kb) & 1 : 0;
        if (STAGES == 2) {
            if (kb + 1 < nkb) {
                ssd_load_tile(Ks + (buf ^ 1) * ATTN_ROWS * LD, LD, kg, d.qkv_stride, (kb + 1) * ATTN_ROWS, T, HD);
                ssd_load_tile(Vs + (buf ^ 1) * ATTN_ROWS * LD, LD, vg, d.qkv_stride, (kb + 1) * ATTN_ROWS, T, HD);
            }
            ssd_cp_commit();
            ssd_cp_wait<1>();
        } else {
            ssd_load_tile(Ks, LD, kg, d.qkv_stride, kb * ATTN_ROWS, T, HD);
            ssd_load_tile(Vs, LD, vg, d.qkv_stride, kb * ATTN_ROWS, T, HD);
            ssd_cp_commit();
            ssd_cp_wait<0>();
        }
        __syncthreads();
        const floatX* Kt = Ks + buf * ATTN_ROWS * LD;
        const floatX* Vt = Vs + buf * ATTN_ROWS * LD;
        int mlo = MW == 1 ? 0 : max(kb - kdiag0, 0);   /* the strips before mlo end before this tile's first key */
        float p[MW][8][4], dp[MW][8][4];
#pragma unroll
        for (int m = 0; m < MW; m++)
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) p[m][nt][e] = dp[m][nt][e] = 0.f;
        attn_strips_nt<MW, HD>(p, Qs + warp * 16 * LD, LD, Kt, LD, mlo, MW - 1);    /* S = Q K^T */
        attn_strips_nt<MW, HD>(dp, Gs + warp * 16 * LD, LD, Vt, LD, mlo, MW - 1);   /* dP = dO V^T */
        uint32_t af[MW][4][4];
#pragma unroll
        for (int m = 0; m < MW; m++) {
            if (m < mlo) continue;
            int masked = kb == kdiag0 + m || DOCS;
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int i = e / 2, c = kb * ATTN_ROWS + nt * 8 + 2 * (lane % 4) + (e % 2), ok = 1;
                    if (masked) {
                        ok = c <= rq[m] + 8 * i;
                        if (DOCS) ok = ok && attn_doc(seq, row0, T, c) == docq[m][i];
                    }
                    float pv = ok ? attn_exp2(fmaf(p[m][nt][e], sl2, -L2[m][i])) : 0.f;
                    dp[m][nt][e] = pv * (dp[m][nt][e] - Dr[m][i]);
                }
            }
            ssd_pack_a<4>(af[m], dp[m]);
        }
        attn_strips_rn<MW, HD>(dq, af, Kt, LD, mlo, MW - 1);   /* dQ += dS K */
        __syncthreads();
    }
#pragma unroll
    for (int m = 0; m < MW; m++)
        attn_store_strip<NT>(dqkv + row0 * d.qkv_stride + (size_t)h * HD, d.qkv_stride,
                             q0 + m * ATTN_ROWS + warp * 16, T, dq[m], d.scale);
}

#endif /* !ENABLE_FP32 */

/* ------------------------------------------------------------------------------------------------------------ */
/* generation: a KV cache per attention layer, prefill then one query per step (every build, any hd <= 256)
 *
 * Cache: k_cache, v_cache (B, Hkv, Lmax, hd) floatX, the rotated keys and values of positions 0 .. len-1.
 * Prefill: attention_rope_forward + attention_forward on the prompt's qkv (B, T), then attention_kv_write(pos0 = 0)
 * stores its T positions. Step: the new token's qkv (B, 1) rotated at its position (attention_rope_forward with
 * dims T = 1 and pos = a (B) array holding len), attention_kv_write(pos0 = len), then attention_decode over len + 1
 * cached positions. The decode kernel: one block per (b, q head), 8 warps; warp w takes the positions j = w mod 8
 * with an online softmax (lanes split the head dims: one dot product per position, a warp sum), and the 8 partial
 * results are merged in warp order: deterministic, no atomics. */

#define ATTN_DECODE_WARPS 8

__global__ static void attn_kv_write_kernel(floatX* k_cache, floatX* v_cache, const floatX* qkv, AttnDims d, int Lmax,
                                            int pos0) {
    size_t n = (size_t)d.B * d.T * d.Hkv * d.hd;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(idx % d.hd);
        size_t rest = idx / d.hd;
        int hk = (int)(rest % d.Hkv);
        size_t bt = rest / d.Hkv;
        int t = (int)(bt % d.T), b = (int)(bt / d.T);
        const floatX* row = qkv + bt * d.qkv_stride;
        size_t at = (((size_t)b * d.Hkv + hk) * Lmax + pos0 + t) * d.hd + c;
        k_cache[at] = row[(size_t)(d.Hq + hk) * d.hd + c];
        v_cache[at] = row[(size_t)(d.Hq + d.Hkv + hk) * d.hd + c];
    }
}
/* positions pos0 .. pos0 + T - 1 of the cache from the (rotated) k, v of qkv (B, T) */
static void attention_kv_write(floatX* k_cache, floatX* v_cache, const floatX* qkv, const AttnDims* d, int Lmax,
                               int pos0, cudaStream_t stream) {
    attn_check_dims(d, "attention_kv_write");
    if (pos0 < 0 || pos0 + d->T > Lmax) {
        fprintf(stderr, "attention_kv_write: positions %d..%d do not fit a KV cache of %d positions (raise the "
                "cache length)\n", pos0, pos0 + d->T - 1, Lmax);
        exit(EXIT_FAILURE);
    }
    size_t n = (size_t)d->B * d->T * d->Hkv * d->hd;
    size_t blocks = CEIL_DIV(n, (size_t)256), cap = (size_t)cuda_num_sms() * 16;
    attn_kv_write_kernel<<<(int)(blocks < cap ? blocks : cap), 256, 0, stream>>>(k_cache, v_cache, qkv, *d, Lmax, pos0);
    cudaCheckLast();
}

__global__ static void __launch_bounds__(ATTN_DECODE_WARPS * 32)
    attn_decode_kernel(floatX* out, const floatX* qkv, const floatX* k_cache, const floatX* v_cache, AttnDims d,
                       int Lmax, int len) {
    constexpr int NC = ATTN_SIMPLE_MAX_HD / 32;   /* head dims per lane */
    __shared__ float part_m[ATTN_DECODE_WARPS], part_l[ATTN_DECODE_WARPS];
    __shared__ float part_o[ATTN_DECODE_WARPS][ATTN_SIMPLE_MAX_HD];
    int h = blockIdx.x, b = blockIdx.y, hk = h / (d.Hq / d.Hkv), hd = d.hd;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const floatX* q = qkv + (size_t)b * d.qkv_stride + (size_t)h * hd;
    const floatX* kc = k_cache + ((size_t)b * d.Hkv + hk) * Lmax * hd;
    const floatX* vc = v_cache + ((size_t)b * d.Hkv + hk) * Lmax * hd;
    float qr[NC], acc[NC];
#pragma unroll
    for (int i = 0; i < NC; i++) {
        int c = lane + 32 * i;
        qr[i] = c < hd ? toF(q[c]) * d.scale : 0.f;
        acc[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int j = warp; j < len; j += ATTN_DECODE_WARPS) {
        const floatX* k = kc + (size_t)j * hd;
        const floatX* v = vc + (size_t)j * hd;
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < NC; i++) if (lane + 32 * i < hd) s += qr[i] * toF(k[lane + 32 * i]);
        s = warp_reduce_sum(s);
        float m_new = fmaxf(m, s), alpha = expf(m - m_new), p = expf(s - m_new);
        l = l * alpha + p;
#pragma unroll
        for (int i = 0; i < NC; i++) if (lane + 32 * i < hd) acc[i] = acc[i] * alpha + p * toF(v[lane + 32 * i]);
        m = m_new;
    }
    if (lane == 0) { part_m[warp] = m; part_l[warp] = l; }
#pragma unroll
    for (int i = 0; i < NC; i++) if (lane + 32 * i < hd) part_o[warp][lane + 32 * i] = acc[i];
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < ATTN_DECODE_WARPS; w++) M = fmaxf(M, part_m[w]);
    float L = 0.f;
    for (int w = 0; w < ATTN_DECODE_WARPS; w++) L += part_l[w] * expf(part_m[w] - M);   /* empty warp: 0 * 0 */
    floatX* o = out + (size_t)b * d.Hq * hd + (size_t)h * hd;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float v = 0.f;
        for (int w = 0; w < ATTN_DECODE_WARPS; w++) v += part_o[w][c] * expf(part_m[w] - M);
        o[c] = fromF(v / L);
    }
}
/* out (B, Hq*hd): the new token's attention over cached positions 0 .. len-1 (its own k, v written there already).
   qkv: the new token's rotated row per sequence, (B, qkv_stride); d->T is ignored (one query per sequence). */
static void attention_decode(floatX* out, const floatX* qkv, const floatX* k_cache, const floatX* v_cache,
                             const AttnDims* d, int Lmax, int len, cudaStream_t stream) {
    attn_check_dims(d, "attention_decode");
    if (len < 1 || len > Lmax) {
        fprintf(stderr, "attention_decode: %d cached positions, the cache holds %d: need 1 <= len <= Lmax\n", len, Lmax);
        exit(EXIT_FAILURE);
    }
    attn_decode_kernel<<<dim3(d->Hq, d->B), ATTN_DECODE_WARPS * 32, 0, stream>>>(out, qkv, k_cache, v_cache, *d, Lmax,
                                                                                 len);
    cudaCheckLast();
}

/* ------------------------------------------------------------------------------------------------------------ */
/* dispatch */

#if !defined(ENABLE_FP32)
/* 1 where the tile kernels take this shape: hd 64 or 128, 16-byte aligned rows and buffers (bf16 build) */
static int attn_tiles_take(const AttnDims* d, const void* qkv, const void* out) {
    return (d->hd == 64 || d->hd == 128) && d->qkv_stride % 8 == 0 && (uintptr_t)qkv % 16 == 0 &&
           (uintptr_t)out % 16 == 0;
}
#endif
/* 2 (double-buffered tiles) where that fits the GPU's shared memory, else 1 */
static inline int attn_bwd_stages(int hd) {
#if defined(ENABLE_FP32)
    (void)hd;
    return 1;
#else
    size_t optin = (size_t)cuda_smem_optin();
    return attn_smem_dkdv(hd, 2, 1) <= optin && attn_smem_dq(hd, 2, 1) <= optin ? 2 : 1;
#endif
}

/* which kernels ran (the launchers' return value) or are asked for (the _cfg launchers' variant, for dev/cuda):
   ATTN_AUTO takes the fastest the GPU, the build and the shape allow; a variant takes at most that kind.
   ATTN_MMA: the mma.sync tile kernels with 64 query rows per forward and dQ block;
   ATTN_MMA128: 128 key rows per dK/dV block (2 strips per warp) at hd 64 (registers), with the 64-row dQ kernel,
   the mix measured fastest (1.5-3% over 128 rows in both; dev/cuda/NOTES_attention.md); the 128-row forward only
   when a variant asks for it (where its shared memory fits: 104 KB at hd 128), as it measured 3-12% slower than
   the 64-row forward at every benchmarked shape. The Hopper wgmma kernels measured
   slower than these (dev/cuda/NOTES_attention.md) and live in dev/cuda/attention_lab.cuh. */
enum { ATTN_AUTO = -1, ATTN_SIMPLE = 0, ATTN_MMA = 1, ATTN_MMA128 = 2 };

#if !defined(ENABLE_FP32)
template <int HD, int MW>
static void attn_fwd_launch(floatX* out, float* lse, const floatX* qkv, const AttnDims* d, cudaStream_t stream) {
    size_t smem = attn_smem_fwd(HD, MW);
    dim3 grid(CEIL_DIV(d->T, ATTN_ROWS * MW), d->Hq, d->B);
    if (d->seq_idx != NULL) {
        cuda_set_smem((const void*)attn_fwd_mma_kernel<HD, MW, true>, smem, "attention_forward");
        attn_fwd_mma_kernel<HD, MW, true><<<grid, ATTN_THREADS, smem, stream>>>(out, lse, qkv, *d);
    } else {
        cuda_set_smem((const void*)attn_fwd_mma_kernel<HD, MW, false>, smem, "attention_forward");
        attn_fwd_mma_kernel<HD, MW, false><<<grid, ATTN_THREADS, smem, stream>>>(out, lse, qkv, *d);
    }
    cudaCheckLast();
}
#endif

/* the forward kernels this shape takes: ATTN_AUTO the 64-row tiles where they run (the fastest measured), a variant
   at most that kind (ATTN_MMA128 where its shared memory fits) */
static int attn_fwd_kind(const AttnDims* d, const void* qkv, const void* out, int variant) {
    int kind = ATTN_SIMPLE;
#if !defined(ENABLE_FP32)
    if (attn_tiles_take(d, qkv, out)) {
        kind = ATTN_MMA;
        if (variant == ATTN_MMA128 && attn_smem_fwd(d->hd, 2) <= (size_t)cuda_smem_optin()) kind = ATTN_MMA128;
    }
#else
    (void)d; (void)qkv; (void)out;
#endif
    return variant != ATTN_AUTO && variant < kind ? variant : kind;
}

static int attention_forward_cfg(floatX* out, float* lse, const floatX* qkv, const AttnDims* d, int variant,
                                 cudaStream_t stream) {
    attn_check_dims(d, "attention_forward");
    int kind = attn_fwd_kind(d, qkv, out, variant);
#if !defined(ENABLE_FP32)
    if (kind == ATTN_MMA128) {
        if (d->hd == 64) attn_fwd_launch<64, 2>(out, lse, qkv, d, stream);
        else attn_fwd_launch<128, 2>(out, lse, qkv, d, stream);
        return kind;
    }
    if (kind == ATTN_MMA) {
        if (d->hd == 64) attn_fwd_launch<64, 1>(out, lse, qkv, d, stream);
        else attn_fwd_launch<128, 1>(out, lse, qkv, d, stream);
        return kind;
    }
#endif
    int n = d->B * d->Hq * d->T;
    attn_fwd_simple_kernel<<<CEIL_DIV(n, ATTN_SIMPLE_THREADS), ATTN_SIMPLE_THREADS, 0, stream>>>(out, lse, qkv, *d);
    cudaCheckLast();
    return ATTN_SIMPLE;
}
/* out (B, T, Hq*hd), lse (B, Hq, T) from the (already rotated) qkv. Returns the kernels that ran (ATTN_*). */
static int attention_forward(floatX* out, float* lse, const floatX* qkv, const AttnDims* d, cudaStream_t stream) {
    return attention_forward_cfg(out, lse, qkv, d, ATTN_AUTO, stream);
}

#if !defined(ENABLE_FP32)
/* the two tile kernels of the backward: dK/dV with KVMW strips of keys per warp, dQ with DQMW strips of queries
   (MW = 2: 128 rows per block; the default takes KVMW = 2, DQMW = 1 at hd 64, dev/cuda/attention.cu times each
   mix) */
template <int HD, int STAGES, int DQMW, int KVMW>
static void attn_bwd_tiles_launch(floatX* dqkv, const floatX* dout, const float* lse, const float* dsum,
                                  const floatX* qkv, const AttnDims* d, cudaStream_t stream) {
    size_t smem = attn_smem_dkdv(HD, STAGES, KVMW);
    dim3 grid(CEIL_DIV(d->T, ATTN_ROWS * KVMW), d->Hkv, d->B);
    if (d->seq_idx != NULL) {
        cuda_set_smem((const void*)attn_bwd_dkdv_mma_kernel<HD, STAGES, KVMW, true>, smem, "attention_backward");
        attn_bwd_dkdv_mma_kernel<HD, STAGES, KVMW, true><<<grid, ATTN_THREADS, smem, stream>>>(dqkv, dout, lse, dsum,
                                                                                               qkv, *d);
    } else {
        cuda_set_smem((const void*)attn_bwd_dkdv_mma_kernel<HD, STAGES, KVMW, false>, smem, "attention_backward");
        attn_bwd_dkdv_mma_kernel<HD, STAGES, KVMW, false><<<grid, ATTN_THREADS, smem, stream>>>(dqkv, dout, lse, dsum,
                                                                                                qkv, *d);
    }
    cudaCheckLast();
    smem = attn_smem_dq(HD, STAGES, DQMW);
    grid = dim3(CEIL_DIV(d->T, ATTN_ROWS * DQMW), d->Hq, d->B);
    if (d->seq_idx != NULL) {
        cuda_set_smem((const void*)attn_bwd_dq_mma_kernel<HD, STAGES, DQMW, true>, smem, "attention_backward");
        attn_bwd_dq_mma_kernel<HD, STAGES, DQMW, true><<<grid, ATTN_THREADS, smem, stream>>>(dqkv, dout, lse, dsum, qkv,
                                                                                             *d);
    } else {
        cuda_set_smem((const void*)attn_bwd_dq_mma_kernel<HD, STAGES, DQMW, false>, smem, "attention_backward");
        attn_bwd_dq_mma_kernel<HD, STAGES, DQMW, false><<<grid, ATTN_THREADS, smem, stream>>>(dqkv, dout, lse, dsum,
                                                                                              qkv, *d);
    }
    cudaCheckLast();
}
#endif

/* the backward kernels this shape can take, at most `variant` (ATTN_AUTO: no limit) */
static int attn_bwd_kind(const AttnDims* d, const void* qkv, const void* out, const void* dqkv, const void* dout,
                         int variant) {
    int kind = ATTN_SIMPLE;
#if !defined(ENABLE_FP32)
    if (attn_tiles_take(d, qkv, out) && attn_tiles_take(d, dqkv, dout)) {
        kind = ATTN_MMA;
        size_t optin = (size_t)cuda_smem_optin();
        if (d->hd == 64 && attn_bwd_stages(64) == 2 && attn_smem_dq(64, 2, 1) <= optin &&
            attn_smem_dkdv(64, 2, 2) <= optin)
            kind = ATTN_MMA128;
    }
#else
    (void)d; (void)qkv; (void)out; (void)dqkv; (void)dout;
#endif
    return variant != ATTN_AUTO && variant < kind ? variant : kind;
}

/* D = rowsum(dO * O), the backward's first pass (every kind) */
static void attn_bwd_dsum(float* dsum, const floatX* dout, const floatX* out, const AttnDims* d, cudaStream_t stream) {
    int rows = d->B * d->T * d->Hq;
    attn_bwd_dsum_kernel<<<CEIL_DIV(rows, 4), 128, 0, stream>>>(dsum, dout, out, d->B, d->T, d->Hq, d->hd);
    cudaCheckLast();
}

/* variant: ATTN_AUTO, or a slower kind to force it (dev/cuda) */
static int attention_backward_cfg(floatX* dqkv, float* dsum, const floatX* dout, const floatX* out, const float* lse,
                                  const floatX* qkv, const AttnDims* d, int variant, cudaStream_t stream) {
    attn_check_dims(d, "attention_backward");
    attn_bwd_dsum(dsum, dout, out, d, stream);
    int kind = attn_bwd_kind(d, qkv, out, dqkv, dout, variant);
#if !defined(ENABLE_FP32)
    if (kind == ATTN_MMA128) {   /* hd 64, 2 stages: dK/dV on 128 key rows, dQ on 64 query rows */
        attn_bwd_tiles_launch<64, 2, 1, 2>(dqkv, dout, lse, dsum, qkv, d, stream);
        return ATTN_MMA128;
    }
    if (kind == ATTN_MMA) {
        int stages = attn_bwd_stages(d->hd);
        if (d->hd == 64 && stages == 2) attn_bwd_tiles_launch<64, 2, 1, 1>(dqkv, dout, lse, dsum, qkv, d, stream);
        else if (d->hd == 64) attn_bwd_tiles_launch<64, 1, 1, 1>(dqkv, dout, lse, dsum, qkv, d, stream);
        else if (stages == 2) attn_bwd_tiles_launch<128, 2, 1, 1>(dqkv, dout, lse, dsum, qkv, d, stream);
        else attn_bwd_tiles_launch<128, 1, 1, 1>(dqkv, dout, lse, dsum, qkv, d, stream);
        return ATTN_MMA;
    }
#endif
    int nq = d->B * d->Hq * d->T, nk = d->B * d->Hkv * d->T;
    attn_bwd_dq_simple_kernel<<<CEIL_DIV(nq, ATTN_SIMPLE_THREADS), ATTN_SIMPLE_THREADS, 0, stream>>>(dqkv, dout, lse,
                                                                                                    dsum, qkv, *d);
    cudaCheckLast();
    attn_bwd_dkdv_simple_kernel<<<CEIL_DIV(nk, ATTN_SIMPLE_THREADS), ATTN_SIMPLE_THREADS, 0, stream>>>(dqkv, dout, lse,
                                                                                                      dsum, qkv, *d);
    cudaCheckLast();
    return ATTN_SIMPLE;
}
/* dqkv (same layout as qkv; the q, k, v columns are written, the rest untouched) from dout (B, T, Hq*hd), the
   forward's out and lse, and the rotated qkv. dsum: workspace (B, Hq, T) fp32. Call attention_rope_backward on
   dqkv afterwards when the forward rotated. Returns the kernels that ran (ATTN_*). */
static int attention_backward(floatX* dqkv, float* dsum, const floatX* dout, const floatX* out, const float* lse,
                              const floatX* qkv, const AttnDims* d, cudaStream_t stream) {
    return attention_backward_cfg(dqkv, dsum, dout, out, lse, qkv, d, ATTN_AUTO, stream);
}

#endif /* MAMBA2_ATTENTION_CUH */
