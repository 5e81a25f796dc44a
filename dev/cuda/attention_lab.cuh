/*
 * dev/cuda/attention_lab.cuh: attention kernels that are not the default, kept to be tested and timed against it
 * by dev/cuda/attention.cu (`./dev/cuda/attention_bin` runs both; dev/cuda/NOTES_attention.md has the numbers).
 *
 * The Hopper (sm_90a) wgmma kernels. On one H100 80GB HBM3 they measured slower than llmc/attention.cuh's mma.sync
 * kernels (forward 0.398 vs 0.364 ms, forward + backward 1.845 vs 1.590 ms at B 8, T 2048, 12 heads of 64), so the
 * default path does not take them. Why, as far as reading tells: each product is issued and then waited for at once
 * (wg_wait<0> right after the commit), so nothing overlaps the tensor cores with the softmax or the loads; a
 * block of one or two warpgroups leaves few warps per multiprocessor to hide that; the tiles are interleaved
 * core matrices without swizzle, filled by cp.async from every thread. FlashAttention-3's answers (TMA loads by a
 * producer warp, two consumer warpgroups ping-ponging softmax and products, the next S = Q K^T issued before this
 * tile's softmax) are what a next version would try.
 *
 *   attn_fwd_wgmma_kernel       2 warpgroups x 64 query rows share each K, V tile; S = Q K^T and P V on wgmma
 *                               (llmc/wgmma.cuh), the softmax of llmc/attention.cuh (attn_online_softmax).
 *   attn_bwd_dkdv_wgmma_kernel, attn_bwd_dq_wgmma_kernel: the mma.sync backward's blocks, items, order and masks
 *                               (one warpgroup = the 4 warps of 16 rows), the products on wgmma.
 *
 * lab_attention_forward_wgmma / lab_attention_backward_wgmma return 1 where they ran, 0 where this GPU, build or
 * shape cannot take them (then they launch nothing).
 */
#ifndef MAMBA2_ATTENTION_LAB_CUH
#define MAMBA2_ATTENTION_LAB_CUH

#include "llmc/attention.cuh"
#include "llmc/wgmma.cuh"

#if !defined(ENABLE_FP32)
/* Forward on Hopper (sm_90a; llmc/wgmma.cuh): block = 2 warpgroups, 128 query rows (warpgroup wg rows 64 wg ..),
   sharing each K, V tile; tiles in shared memory as core matrices (wg_tile_offset), Q | K[2] | V[2]: 48 KB at
   hd 64, 96 KB at hd 128. Per key block and warpgroup: S (64 x 64) = Q K^T by wgmma (both K-major), the same mask
   and online softmax as the mma.sync kernel (wgmma's accumulator layout per warp is mma.sync's), then O += P V
   with P from registers and V MN-major. A warpgroup skips the key blocks past its own diagonal. */
#define ATTN_WG_ROWS 128
#define ATTN_WG_THREADS 256

static inline size_t attn_smem_fwd_wgmma(int hd) { return (size_t)(ATTN_WG_ROWS + 4 * 64) * hd * sizeof(floatX); }

/* rows [r0, r0 + ROWS) of a row-major bf16 matrix (NC columns, row stride gstride) into a core-matrix tile; rows at
   or past nvalid are zero. 4 consecutive threads take 4 rows of one 8-column chunk (the order of llmc/ssd_fwd.cuh's
   tile loads: whole 128-byte lines per warp request) */
template <int ROWS, int NC, int NTHR>
__device__ static inline void attn_wg_load_tile(floatX* dst, const floatX* src, size_t gstride, int r0, int nvalid) {
#pragma unroll 4
    for (int idx = threadIdx.x; idx < ROWS * NC / 8; idx += NTHR) {
        int r = (idx / (NC / 2)) * 4 + (idx & 3), v = (idx >> 2) % (NC / 8);
        int ok = r0 + r < nvalid;
        ssd_cp_async16(dst + wg_tile_offset(r, 8 * v, NC), src + (ok ? (size_t)(r0 + r) * gstride + v * 8 : 0), ok);
    }
}

template <int HD>
__global__ static void __launch_bounds__(ATTN_WG_THREADS, 1) attn_fwd_wgmma_kernel(floatX* out, float* lse,
                                                                                    const floatX* qkv, AttnDims d) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int NT = HD / 8, PT = HD / 64;
    constexpr uint32_t KSBO = HD * 16;   /* K-major tiles of HD columns: bytes between 8-row groups */
    constexpr uint32_t VLBO = HD * 16;   /* V as the MN-major operand: bytes between 8-row (k) groups */
    extern __shared__ __align__(128) unsigned char attn_wg_smem[];
    floatX* Qs = (floatX*)attn_wg_smem;  /* 128 rows; warpgroup wg's 64 start at element 64 wg HD */
    floatX* Ks = Qs + ATTN_WG_ROWS * HD; /* two buffers of 64 rows */
    floatX* Vs = Ks + 2 * 64 * HD;
    int qb = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = h / (d.Hq / d.Hkv), T = d.T;
    int wg = threadIdx.x / 128, warp = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32;
    size_t row0 = (size_t)b * T;
    const floatX* kg = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + hk) * HD;
    const floatX* vg = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + d.Hkv + hk) * HD;
    int q0 = qb * ATTN_WG_ROWS, w0 = q0 + wg * 64;   /* the block's rows, this warpgroup's */
    int kdiag = w0 / 64, active = w0 < T;             /* this warpgroup's diagonal key block */
    int nkb = min(2 * qb + 2, CEIL_DIV(T, 64));
    int kb0 = d.seq_idx != NULL ? attn_doc_start(d.seq_idx, row0, q0) / 64 : 0;   /* first key block */
    attn_wg_load_tile<ATTN_WG_ROWS, HD, ATTN_WG_THREADS>(Qs, qkv + row0 * d.qkv_stride + (size_t)h * HD, d.qkv_stride, q0, T);
    attn_wg_load_tile<64, HD, ATTN_WG_THREADS>(Ks, kg, d.qkv_stride, kb0 * 64, T);
    attn_wg_load_tile<64, HD, ATTN_WG_THREADS>(Vs, vg, d.qkv_stride, kb0 * 64, T);
    ssd_cp_commit();

    const float sl2 = d.scale * ATTN_LOG2E;
    int rq = w0 + warp * 16 + lane / 4;
    int docq[2] = {0, 0};
    if (d.seq_idx != NULL) { docq[0] = attn_doc(d.seq_idx, row0, T, rq); docq[1] = attn_doc(d.seq_idx, row0, T, rq + 8); }
    const floatX* Qw = Qs + wg * 64 * HD;
    float o[NT][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
    for (int nt = 0; nt < NT; nt++) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;

    for (int kb = kb0; kb < nkb; kb++) {
        int buf = (kb - kb0) & 1;
        ssd_cp_wait<0>();
        wg_fence_proxy_async();
        __syncthreads();   /* tile kb landed for every thread; every warpgroup is done with tile kb - 1 */
        if (kb + 1 < nkb) {
            attn_wg_load_tile<64, HD, ATTN_WG_THREADS>(Ks + (buf ^ 1) * 64 * HD, kg, d.qkv_stride, (kb + 1) * 64, T);
            attn_wg_load_tile<64, HD, ATTN_WG_THREADS>(Vs + (buf ^ 1) * 64 * HD, vg, d.qkv_stride, (kb + 1) * 64, T);
            ssd_cp_commit();
        }
        if (kb > kdiag || !active) continue;   /* uniform over the warpgroup: its products run converged */
        const floatX* Kb = Ks + buf * 64 * HD;
        const floatX* Vb = Vs + buf * 64 * HD;
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        wg_pin_acc(&s[0][0]);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < HD / 16; ks++)   /* S = Q K^T */
            wg_mma_ss<0, 0>(&s[0][0], wg_desc(Qw + ks * 128, 128, KSBO), wg_desc(Kb + ks * 128, 128, KSBO));
        wg_commit();
        wg_wait<0>();
        wg_pin_acc(&s[0][0]);
        attn_online_softmax<NT>(s, o, m, l, rq, kb * 64, kb == kdiag || d.seq_idx != NULL, d.seq_idx, row0, T, docq,
                                sl2);
        uint32_t pf[4][4];
        ssd_pack_a<4>(pf, s);
#pragma unroll
        for (int pt = 0; pt < PT; pt++) wg_pin_acc(&o[8 * pt][0]);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < 4; ks++)   /* O += P V */
#pragma unroll
            for (int pt = 0; pt < PT; pt++)
                wg_mma_rs<1>(&o[8 * pt][0], pf[ks], wg_desc(Vb + wg_tile_offset(16 * ks, 64 * pt, HD), VLBO, 128));
        wg_commit();
        wg_wait<0>();
#pragma unroll
        for (int pt = 0; pt < PT; pt++) wg_pin_acc(&o[8 * pt][0]);
    }
    if (!active) return;
    size_t ostride = (size_t)d.Hq * HD;
    attn_fwd_finish<NT>(out + row0 * ostride + (size_t)h * HD, ostride, lse + ((size_t)b * d.Hq + h) * T,
                        w0 + warp * 16, T, o, m, l);
#endif
}

/* The backward on the Hopper path: the mma.sync kernels' structure (one warpgroup = the 4 warps of 16 rows; the
   same items, masks, order and accumulator layout) with the products on wgmma from core-matrix tiles: Q | dO | K | V
   are each read as the K-major operand of one product and the MN-major operand of another (Q: dK += dS^T Q;
   dO: dV += P^T dO; K: dQ += dS K), which the same tile serves through the descriptor. Q/dO (dK/dV kernel) and K/V
   (dQ kernel) double-buffered: 6 tiles of 64 x hd, 48 KB at hd 64, 96 KB at hd 128. */
static inline size_t attn_smem_bwd_wgmma(int hd) {
    return (size_t)6 * 64 * hd * sizeof(floatX) + 4 * 64 * sizeof(float);
}

/* acc (64 x 64 per warpgroup, fp32) += A B^T over k = 0..HD-1, A and B K-major core-matrix tiles of HD columns */
template <int HD>
__device__ static inline void attn_wg_nt(float acc[8][4], const floatX* a, const floatX* b) {
    constexpr uint32_t KSBO = HD * 16;
    wg_pin_acc(&acc[0][0]);
    wg_fence();
#pragma unroll
    for (int ks = 0; ks < HD / 16; ks++)
        wg_mma_ss<0, 0>(&acc[0][0], wg_desc(a + ks * 128, 128, KSBO), wg_desc(b + ks * 128, 128, KSBO));
    wg_commit();
    wg_wait<0>();
    wg_pin_acc(&acc[0][0]);
}
/* acc (64 x HD) += A B, A = the 64 x 64 bf16 fragments af (registers), B (64 x HD) a core-matrix tile read MN-major */
template <int HD>
__device__ static inline void attn_wg_rn(float acc[][4], const uint32_t af[4][4], const floatX* b) {
    constexpr int PT = HD / 64;
    constexpr uint32_t LBO = HD * 16;
#pragma unroll
    for (int pt = 0; pt < PT; pt++) wg_pin_acc(&acc[8 * pt][0]);
    wg_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ks++)
#pragma unroll
        for (int pt = 0; pt < PT; pt++)
            wg_mma_rs<1>(&acc[8 * pt][0], af[ks], wg_desc(b + wg_tile_offset(16 * ks, 64 * pt, HD), LBO, 128));
    wg_commit();
    wg_wait<0>();
#pragma unroll
    for (int pt = 0; pt < PT; pt++) wg_pin_acc(&acc[8 * pt][0]);
}

template <int HD>
__global__ static void __launch_bounds__(ATTN_THREADS, 1) attn_bwd_dkdv_wgmma_kernel(floatX* dqkv, const floatX* dout,
                                                                                     const float* lse,
                                                                                     const float* dsum,
                                                                                     const floatX* qkv, AttnDims d) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int NT = HD / 8, TILE = 64 * HD;
    extern __shared__ __align__(128) unsigned char attn_wg_smem[];
    floatX* Ks = (floatX*)attn_wg_smem;
    floatX* Vs = Ks + TILE;
    floatX* Qs = Vs + TILE;       /* two buffers */
    floatX* Gs = Qs + 2 * TILE;   /* two buffers */
    float* Ls = (float*)(Gs + 2 * TILE);
    float* Ds = Ls + 2 * 64;
    int kb = blockIdx.x, hk = blockIdx.y, b = blockIdx.z, G = d.Hq / d.Hkv, T = d.T;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    size_t row0 = (size_t)b * T, gstride = (size_t)d.Hq * HD;
    const floatX* kg = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + hk) * HD;
    const floatX* vg = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + d.Hkv + hk) * HD;
    int nqb = CEIL_DIV(T, 64);
    if (d.seq_idx != NULL) nqb = min(nqb, attn_doc_end(d.seq_idx, row0, T, min(kb * 64 + 63, T - 1)) / 64 + 1);
    int nq = nqb - kb, nitems = G * nq;
    attn_wg_load_tile<64, HD, ATTN_THREADS>(Ks, kg, d.qkv_stride, kb * 64, T);
    attn_wg_load_tile<64, HD, ATTN_THREADS>(Vs, vg, d.qkv_stride, kb * 64, T);
    auto load_item = [&](int it, int buf) {
        int h = hk * G + it / nq, q0 = (kb + it % nq) * 64;
        attn_wg_load_tile<64, HD, ATTN_THREADS>(Qs + buf * TILE, qkv + row0 * d.qkv_stride + (size_t)h * HD,
                                                d.qkv_stride, q0, T);
        attn_wg_load_tile<64, HD, ATTN_THREADS>(Gs + buf * TILE, dout + row0 * gstride + (size_t)h * HD, gstride, q0, T);
        if (threadIdx.x < 64) {
            int r = q0 + threadIdx.x;
            size_t at = ((size_t)b * d.Hq + h) * T + r;
            Ls[buf * 64 + threadIdx.x] = r < T ? lse[at] * ATTN_LOG2E : INFINITY;
            Ds[buf * 64 + threadIdx.x] = r < T ? dsum[at] : 0.f;
        }
    };
    load_item(0, 0);
    ssd_cp_commit();

    const float sl2 = d.scale * ATTN_LOG2E;
    int rk = kb * 64 + warp * 16 + lane / 4;
    int dock[2] = {0, 0};
    if (d.seq_idx != NULL) { dock[0] = attn_doc(d.seq_idx, row0, T, rk); dock[1] = attn_doc(d.seq_idx, row0, T, rk + 8); }
    float dk[NT][4], dv[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[nt][e] = dv[nt][e] = 0.f;

    for (int it = 0; it < nitems; it++) {
        int buf = it & 1;
        ssd_cp_wait<0>();
        wg_fence_proxy_async();
        __syncthreads();   /* item it landed for every thread; every warp is done with item it - 1 */
        if (it + 1 < nitems) {
            load_item(it + 1, buf ^ 1);
            ssd_cp_commit();
        }
        int qb = kb + it % nq;
        const floatX* Qt = Qs + buf * TILE;
        const floatX* Gt = Gs + buf * TILE;
        const float* Lt = Ls + buf * 64;
        const float* Dt = Ds + buf * 64;
        float p[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++) p[nt][0] = p[nt][1] = p[nt][2] = p[nt][3] = 0.f;
        attn_wg_nt<HD>(p, Ks, Qt);   /* S^T = K Q^T */
        int masked = qb == kb || d.seq_idx != NULL;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int cl = nt * 8 + 2 * (lane % 4) + (e % 2), c = qb * 64 + cl, r = rk + (e / 2) * 8;
                int ok = 1;
                if (masked) {
                    ok = c >= r;
                    if (d.seq_idx != NULL) ok = ok && attn_doc(d.seq_idx, row0, T, c) == dock[e / 2];
                }
                p[nt][e] = ok ? attn_exp2(fmaf(p[nt][e], sl2, -Lt[cl])) : 0.f;
            }
        }
        uint32_t af[4][4];
        ssd_pack_a<4>(af, p);
        attn_wg_rn<HD>(dv, af, Gt);  /* dV += P^T dO */
        float dp[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++) dp[nt][0] = dp[nt][1] = dp[nt][2] = dp[nt][3] = 0.f;
        attn_wg_nt<HD>(dp, Vs, Gt);  /* dP^T = V dO^T */
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) dp[nt][e] = p[nt][e] * (dp[nt][e] - Dt[nt * 8 + 2 * (lane % 4) + (e % 2)]);
        ssd_pack_a<4>(af, dp);
        attn_wg_rn<HD>(dk, af, Qt);  /* dK += dS^T Q */
    }
    attn_store_strip<NT>(dqkv + row0 * d.qkv_stride + (size_t)(d.Hq + hk) * HD, d.qkv_stride, kb * 64 + warp * 16, T,
                         dk, d.scale);
    attn_store_strip<NT>(dqkv + row0 * d.qkv_stride + (size_t)(d.Hq + d.Hkv + hk) * HD, d.qkv_stride,
                         kb * 64 + warp * 16, T, dv, 1.f);
#endif
}

template <int HD>
__global__ static void __launch_bounds__(ATTN_THREADS, 1) attn_bwd_dq_wgmma_kernel(floatX* dqkv, const floatX* dout,
                                                                                   const float* lse, const float* dsum,
                                                                                   const floatX* qkv, AttnDims d) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int NT = HD / 8, TILE = 64 * HD;
    extern __shared__ __align__(128) unsigned char attn_wg_smem[];
    floatX* Qs = (floatX*)attn_wg_smem;
    floatX* Gs = Qs + TILE;
    floatX* Ks = Gs + TILE;       /* two buffers */
    floatX* Vs = Ks + 2 * TILE;   /* two buffers */
    int qb = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = h / (d.Hq / d.Hkv), T = d.T;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    size_t row0 = (size_t)b * T, gstride = (size_t)d.Hq * HD;
    const floatX* kg = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + hk) * HD;
    const floatX* vg = qkv + row0 * d.qkv_stride + (size_t)(d.Hq + d.Hkv + hk) * HD;
    int q0 = qb * 64, nkb = qb + 1;
    int kb0 = d.seq_idx != NULL ? attn_doc_start(d.seq_idx, row0, q0) / 64 : 0;
    attn_wg_load_tile<64, HD, ATTN_THREADS>(Qs, qkv + row0 * d.qkv_stride + (size_t)h * HD, d.qkv_stride, q0, T);
    attn_wg_load_tile<64, HD, ATTN_THREADS>(Gs, dout + row0 * gstride + (size_t)h * HD, gstride, q0, T);
    attn_wg_load_tile<64, HD, ATTN_THREADS>(Ks, kg, d.qkv_stride, kb0 * 64, T);
    attn_wg_load_tile<64, HD, ATTN_THREADS>(Vs, vg, d.qkv_stride, kb0 * 64, T);
    ssd_cp_commit();
    const float sl2 = d.scale * ATTN_LOG2E;
    int rq = q0 + warp * 16 + lane / 4;
    float L2[2], Dr[2];
    int docq[2] = {0, 0};
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int r = rq + 8 * i;
        size_t at = ((size_t)b * d.Hq + h) * T + r;
        L2[i] = r < T ? lse[at] * ATTN_LOG2E : INFINITY;
        Dr[i] = r < T ? dsum[at] : 0.f;
        if (d.seq_idx != NULL) docq[i] = attn_doc(d.seq_idx, row0, T, r);
    }
    float dq[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0.f;

    for (int kb = kb0; kb < nkb; kb++) {
        int buf = (kb - kb0) & 1;
        ssd_cp_wait<0>();
        wg_fence_proxy_async();
        __syncthreads();
        if (kb + 1 < nkb) {
            attn_wg_load_tile<64, HD, ATTN_THREADS>(Ks + (buf ^ 1) * TILE, kg, d.qkv_stride, (kb + 1) * 64, T);
            attn_wg_load_tile<64, HD, ATTN_THREADS>(Vs + (buf ^ 1) * TILE, vg, d.qkv_stride, (kb + 1) * 64, T);
            ssd_cp_commit();
        }
        const floatX* Kt = Ks + buf * TILE;
        const floatX* Vt = Vs + buf * TILE;
        float p[8][4], dp[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) p[nt][e] = dp[nt][e] = 0.f;
        attn_wg_nt<HD>(p, Qs, Kt);   /* S = Q K^T */
        attn_wg_nt<HD>(dp, Gs, Vt);  /* dP = dO V^T */
        int masked = kb == qb || d.seq_idx != NULL;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int i = e / 2, c = kb * 64 + nt * 8 + 2 * (lane % 4) + (e % 2), ok = 1;
                if (masked) {
                    ok = c <= rq + 8 * i;
                    if (d.seq_idx != NULL) ok = ok && attn_doc(d.seq_idx, row0, T, c) == docq[i];
                }
                float pv = ok ? attn_exp2(fmaf(p[nt][e], sl2, -L2[i])) : 0.f;
                dp[nt][e] = pv * (dp[nt][e] - Dr[i]);
            }
        }
        uint32_t af[4][4];
        ssd_pack_a<4>(af, dp);
        attn_wg_rn<HD>(dq, af, Kt);  /* dQ += dS K */
    }
    attn_store_strip<NT>(dqkv + row0 * d.qkv_stride + (size_t)h * HD, d.qkv_stride, q0 + warp * 16, T, dq, d.scale);
#endif
}

template <int HD>
static void lab_fwd_wgmma_launch(floatX* out, float* lse, const floatX* qkv, const AttnDims* d, cudaStream_t stream) {
    size_t smem = attn_smem_fwd_wgmma(HD);
    cuda_set_smem((const void*)attn_fwd_wgmma_kernel<HD>, smem, "lab_attention_forward_wgmma");
    attn_fwd_wgmma_kernel<HD><<<dim3(CEIL_DIV(d->T, ATTN_WG_ROWS), d->Hq, d->B), ATTN_WG_THREADS, smem, stream>>>(
        out, lse, qkv, *d);
    cudaCheckLast();
}
template <int HD>
static void lab_bwd_wgmma_launch(floatX* dqkv, const floatX* dout, const float* lse, const float* dsum,
                                 const floatX* qkv, const AttnDims* d, cudaStream_t stream) {
    int nb = CEIL_DIV(d->T, 64);
    size_t smem = attn_smem_bwd_wgmma(HD);
    cuda_set_smem((const void*)attn_bwd_dkdv_wgmma_kernel<HD>, smem, "lab_attention_backward_wgmma");
    attn_bwd_dkdv_wgmma_kernel<HD><<<dim3(nb, d->Hkv, d->B), ATTN_THREADS, smem, stream>>>(dqkv, dout, lse, dsum, qkv,
                                                                                            *d);
    cudaCheckLast();
    cuda_set_smem((const void*)attn_bwd_dq_wgmma_kernel<HD>, smem, "lab_attention_backward_wgmma");
    attn_bwd_dq_wgmma_kernel<HD><<<dim3(nb, d->Hq, d->B), ATTN_THREADS, smem, stream>>>(dqkv, dout, lse, dsum, qkv, *d);
    cudaCheckLast();
}
#endif /* !ENABLE_FP32 */

/* 1 where the wgmma kernels can run: the Hopper path (sm_90a code, not MAMBA2_PORTABLE), the tile kernels' shapes,
   and their shared memory */
static int lab_wgmma_takes(const AttnDims* d, const void* qkv, const void* out) {
#if defined(ENABLE_FP32)
    (void)d; (void)qkv; (void)out;
    return 0;
#else
    size_t optin = (size_t)cuda_smem_optin();
    return gpu_hopper_path() && attn_tiles_take(d, qkv, out) && attn_smem_fwd_wgmma(d->hd) <= optin &&
           attn_smem_bwd_wgmma(d->hd) <= optin;
#endif
}
static int lab_attention_forward_wgmma(floatX* out, float* lse, const floatX* qkv, const AttnDims* d,
                                       cudaStream_t stream) {
    attn_check_dims(d, "lab_attention_forward_wgmma");
    if (!lab_wgmma_takes(d, qkv, out)) return 0;
#if !defined(ENABLE_FP32)
    if (d->hd == 64) lab_fwd_wgmma_launch<64>(out, lse, qkv, d, stream);
    else lab_fwd_wgmma_launch<128>(out, lse, qkv, d, stream);
#else
    (void)lse; (void)stream;
#endif
    return 1;
}
static int lab_attention_backward_wgmma(floatX* dqkv, float* dsum, const floatX* dout, const floatX* out,
                                        const float* lse, const floatX* qkv, const AttnDims* d, cudaStream_t stream) {
    attn_check_dims(d, "lab_attention_backward_wgmma");
    if (!lab_wgmma_takes(d, qkv, out) || !lab_wgmma_takes(d, dqkv, dout)) return 0;
#if !defined(ENABLE_FP32)
    attn_bwd_dsum(dsum, dout, out, d, stream);
    if (d->hd == 64) lab_bwd_wgmma_launch<64>(dqkv, dout, lse, dsum, qkv, d, stream);
    else lab_bwd_wgmma_launch<128>(dqkv, dout, lse, dsum, qkv, d, stream);
#else
    (void)dsum; (void)lse; (void)stream;
#endif
    return 1;
}

#endif /* MAMBA2_ATTENTION_LAB_CUH */
