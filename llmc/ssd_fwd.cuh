/*
 * ssd_fwd.cuh: the forward chunk scans of the bf16 build, y_i = exp(cum_i) C_i Hprev_c^T
 * + sum_{j<=i} [(C_i.B_j) exp(cum_i - cum_j) dt_j] x_j + D x_i for 64-row tiles i of one chunk (the fp32 build's
 * scan: llmc/ssd_simple.cuh).
 *   ssd_fwd_scan_mma_kernel          mma.sync (portable, sm_80+): one block of 4 warps per 64 rows i of a
 *                                    (b, h, chunk); P, N up to the register widths PMAX, NMAX (64 or 128)
 *   ssd_fwd_scan_wgmma_kernel        Hopper wgmma (sm_90a): two warpgroups per block (row tiles 2a, 2a + 1),
 *                                    compile-time P, N in {64, 128}
 *   ssd_fwd_scan_wgmma_pair_kernel   wgmma, two heads of a group per block (P = 64, H/G even): C_i, B_j tiles and
 *                                    S = C_i B_j^T shared by the two heads; the off-diagonal decay factored, all
 *                                    global loads in the prologue (the trainer's default)
 * The wgmma kernels' bodies exist only in the sm_90a target; elsewhere they are empty and never launched
 * (ssd_fwd_wgmma_takes asks gpu_hopper_path()). Tiles are in shared memory as core matrices without swizzle
 * (llmc/wgmma.cuh), filled by cp.async; the next j tile loads while this one is used, one barrier per j tile.
 * Hprev is rounded to bf16 once (y is bf16; the backward does not read y).
 * Document boundaries: each kernel's template flag SEG (seg (B, T) from ssd_seg_kernel, llmc/ssd.cuh) masks the
 * entering state of row i (kept iff s_i < 0) and the score (i, j) (kept iff j >= s_i) with selects, on every tile
 * (the factored off-diagonal tiles too); without it the code is that of no boundaries.
 */
#include "wgmma.cuh"
#include "gpu_arch.cuh"

#ifndef MAMBA2_SSD_FWD_CUH
#define MAMBA2_SSD_FWD_CUH

#ifndef MAMBA2_SSD_CUH
#error "llmc/ssd_fwd.cuh is a part of llmc/ssd.cuh: include llmc/ssd.cuh instead"
#endif

#if !defined(ENABLE_FP32)
/* y for 64 rows i of one (b, h, chunk). PMAX, NMAX: 64 or 128, the register tiles' widths (P <= PMAX, N <= NMAX). */
template <int PMAX, int NMAX, bool EXACT, bool SEG>
__global__ static void __launch_bounds__(SSD_MMA_THREADS)
ssd_fwd_scan_mma_kernel(floatX* y, const floatX* xbc, int xbc_stride, const float* dt, const float* cum,
                     const int* seg, const float* states, const float* Dskip, int T, int H, int P, int N, int G,
                     int Q) {
    if (EXACT) { P = PMAX; N = NMAX; }  /* compile-time widths: the n-tile guards fold, the k loops unroll */
    extern __shared__ __align__(16) unsigned char ssd_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD_MMA_ROWS);
    int c = blockIdx.x / nti, rt = blockIdx.x % nti, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD_MMA_ROWS;
    if (i0 >= len) return;
    int E = H * P, ldn = N + 8, ldp = P + 8;
    floatX* Cs = (floatX*)ssd_smem;             /* (64, ldn) C rows i */
    floatX* Bs = Cs + SSD_MMA_ROWS * ldn;           /* (64, ldn) B rows j, buffer 0 */
    floatX* Xs = Bs + SSD_MMA_ROWS * ldn;           /* (64, ldp) x rows j, buffer 0 */
    floatX* Hs = Xs + SSD_MMA_ROWS * ldp;           /* (P, ldn) Hprev in bf16; then buffer 1: */
    floatX* Bs1 = Hs;                            /* (64, ldn) */
    floatX* Xs1 = Hs + SSD_MMA_ROWS * ldn;          /* (64, ldp) */
    float* cj = (float*)(Hs + ssd_region_fwd(P, N));  /* 2 x 64 cum_j */
    float* dj = cj + 2 * SSD_MMA_ROWS;                  /* 2 x 64 dt_j */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    const floatX* Bg = rows + E + g * N;
    const floatX* Xg = rows + h * P;
    ssd_load_tile(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
    ssd_load_tile(Bs, ldn, Bg, xbc_stride, 0, len, N);
    ssd_load_tile(Xs, ldp, Xg, xbc_stride, 0, len, P);
    ssd_cp_commit();
    if (threadIdx.x < SSD_MMA_ROWS) {
        int j = threadIdx.x;
        cj[j] = j < len ? cumc[j] : 0.f;
        dj[j] = j < len ? dtc[j] : 0.f;
    }
    ssd_load_split(Hs, NULL, ldn, states + ssd_state_off(b, c, h, nch, H, P * N), P, N);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    int ri[2] = {i0 + m0 + lane / 4, i0 + m0 + lane / 4 + 8};
    float cum_r[2];
    int sg_r[2];  /* SEG: the rows' segment starts */
    for (int r = 0; r < 2; r++) {
        cum_r[r] = ri[r] < len ? cumc[ri[r]] : 0.f;
        sg_r[r] = SEG && ri[r] < len ? seg[(size_t)b * T + t0 + ri[r]] : -1;
    }
    ssd_cp_wait<0>();
    __syncthreads();
    /* inter-chunk: exp(cum_i) C_i Hprev^T, B(k = n, col = p) = Hprev[p, n] */
    float acc[PMAX / 8][4];
#pragma unroll
    for (int nt = 0; nt < PMAX / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    ssd_mma_nt<PMAX / 8>(acc, Cs + m0 * ldn, ldn, Hs, ldn, N, P);
    float e0 = expf(cum_r[0]), e1 = expf(cum_r[1]);
    if (SEG) { e0 = sg_r[0] >= 0 ? 0.f : e0; e1 = sg_r[1] >= 0 ? 0.f : e1; }
#pragma unroll
    for (int nt = 0; nt < PMAX / 8; nt++) { acc[nt][0] *= e0; acc[nt][1] *= e0; acc[nt][2] *= e1; acc[nt][3] *= e1; }
    __syncthreads();  /* Hprev no longer needed: its space takes buffer 1 */
    /* intra-chunk: the j tiles up to the diagonal one, the next one loading while this one is used */
    for (int jt = 0; jt <= rt; jt++) {
        int buf = jt & 1;
        if (jt < rt) {
            int nb = buf ^ 1, j0n = (jt + 1) * SSD_MMA_ROWS;
            ssd_load_tile(nb ? Bs1 : Bs, ldn, Bg, xbc_stride, j0n, len, N);
            ssd_load_tile(nb ? Xs1 : Xs, ldp, Xg, xbc_stride, j0n, len, P);
            ssd_cp_commit();
            if (threadIdx.x < SSD_MMA_ROWS) {
                int j = j0n + threadIdx.x;
                cj[nb * SSD_MMA_ROWS + threadIdx.x] = j < len ? cumc[j] : 0.f;
                dj[nb * SSD_MMA_ROWS + threadIdx.x] = j < len ? dtc[j] : 0.f;
            }
            ssd_cp_wait<1>();
        } else {
            ssd_cp_wait<0>();
        }
        __syncthreads();
        const float* cjb = cj + buf * SSD_MMA_ROWS;
        const float* djb = dj + buf * SSD_MMA_ROWS;
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        /* on the diagonal tile this warp's rows m0..m0+15 need only the columns j < m0 + 16 */
        int jw = jt == rt ? m0 + 16 : SSD_MMA_ROWS;
        if (jt < rt) ssd_mma_nt<8>(s, Cs + m0 * ldn, ldn, buf ? Bs1 : Bs, ldn, N, SSD_MMA_ROWS);  /* C_i . B_j */
        else ssd_mma_nt<8>(s, Cs + m0 * ldn, ldn, buf ? Bs1 : Bs, ldn, N, jw);
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int jj = nt * 8 + 2 * tig + (e & 1), j = jt * SSD_MMA_ROWS + jj, r = e / 2;
                int ok = j <= ri[r] && ri[r] < len && j < len && (!SEG || j >= sg_r[r]);
                s[nt][e] = ok ? s[nt][e] * __expf(cum_r[r] - cjb[jj]) * djb[jj] : 0.f;
            }
        uint32_t sf[4][4];
        ssd_pack_a<4>(sf, s);
        if (jt < rt) ssd_mma_rn<4, PMAX / 8>(acc, sf, buf ? Xs1 : Xs, ldp, P);
        else ssd_mma_rn<4, PMAX / 8>(acc, sf, buf ? Xs1 : Xs, ldp, P, jw);
        __syncthreads();
    }
    float Dh = Dskip[h];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (ri[r] >= len) continue;
        size_t row = (size_t)(b * T + t0 + ri[r]);
        const floatX* xr = xbc + row * xbc_stride + h * P;
        floatX* yr = y + row * E + h * P;
#pragma unroll
        for (int nt = 0; nt < PMAX / 8; nt++) {
            if (nt * 8 < P) {
                int p = nt * 8 + 2 * tig;
                __nv_bfloat162 xv = *(const __nv_bfloat162*)(xr + p);
                *(__nv_bfloat162*)(yr + p) = __floats2bfloat162_rn(acc[nt][2 * r] + Dh * __low2float(xv),
                                                                  acc[nt][2 * r + 1] + Dh * __high2float(xv));
            }
        }
    }
}

#define SSD_WG_ROWS 64  /* rows of a warpgroup's tile */
/* warpgroups per wgmma forward block: 2, taking row tiles 2a and 2a + 1 of a chunk and sharing the B_j / x_j tiles
   and Hprev (per (b, h, chunk) at Q = 256: 6 tile loads instead of 10, Hprev read twice instead of 4 times;
   NOTES_ssd.md, "Version 5": faster than one) */
#define SSD_FWD_WGS 2

/* rows [r0, r0 + ROWS) of a bf16 row-major matrix (NC columns) into a core-matrix tile (wg_tile_offset); rows at
   or past nvalid are zero. 4 consecutive threads take 4 rows of one 8-column chunk, a warp 4 rows x 8 chunks: it
   reads 4 whole 128-byte lines (half the lines per request of the order that fills one core matrix per 8 threads,
   for the L2; its shared-memory writes conflict 2-way). */
template <int ROWS, int NC, int NTHR>
__device__ static inline void ssd_wg_load_tile(floatX* dst, const floatX* src, size_t gstride, int r0, int nvalid) {
#pragma unroll 4
    for (int idx = threadIdx.x; idx < ROWS * NC / 8; idx += NTHR) {
        int r = (idx / (NC / 2)) * 4 + (idx & 3), v = (idx >> 2) % (NC / 8);
        int ok = r0 + r < nvalid;
        ssd_cp_async16(dst + wg_tile_offset(r, 8 * v, NC), src + (ok ? (size_t)(r0 + r) * gstride + v * 8 : 0), ok);
    }
}

/* the fp32 (R, NC) state into a bf16 core-matrix tile (rows p, columns n): thread idx writes the 16 bytes at
   element idx * 8 of the tile (8 consecutive threads fill one 128-byte core matrix) */
template <int R, int NC, int NTHR>
__device__ static inline void ssd_wg_load_state(floatX* dst, const float* m) {
#pragma unroll 4
    for (int idx = threadIdx.x; idx < R * NC / 8; idx += NTHR) {
        int r = (idx / NC) * 8 + (idx & 7), v = (idx >> 3) % (NC / 8);
        const float4* src = (const float4*)(m + (size_t)r * NC + v * 8);
        float4 q0 = src[0], q1 = src[1];
        uint4 o = make_uint4(ssd_pack_bf16(q0.x, q0.y), ssd_pack_bf16(q0.z, q0.w), ssd_pack_bf16(q1.x, q1.y),
                             ssd_pack_bf16(q1.z, q1.w));
        *(uint4*)(dst + idx * 8) = o;
    }
}

/* shared memory (bf16 elements): Cs (64 WGS x N) | Bs0 (64 x N) | Xs0 (64 x P) | region: Hprev (P x N), then
   Bs1 (64 x N) Xs1 (64 x P) | cum_j, dt_j (2 x 64 floats each). P = 64, N = 128: 65.5 KB at WGS = 1 (3 blocks
   per SM), 81.5 KB at WGS = 2 (2 blocks per SM). */
static inline size_t ssd_smem_fwd_wgmma(int P, int N, int wgs) {
    size_t region = ssd_max((size_t)P * N, (size_t)SSD_WG_ROWS * (N + P));
    return ((size_t)(wgs + 1) * SSD_WG_ROWS * N + (size_t)SSD_WG_ROWS * P + region) * sizeof(floatX) +
           4 * SSD_WG_ROWS * sizeof(float);
}

template <int PT, int NK, bool SEG>  /* P = 64 PT, N = 16 NK */
__global__ static void __launch_bounds__(SSD_MMA_THREADS * SSD_FWD_WGS, 2)
ssd_fwd_scan_wgmma_kernel(floatX* y, const floatX* xbc, int xbc_stride, const float* dt, const float* cum,
                     const int* seg, const float* states, const float* Dskip, int T, int H, int G, int Q) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int P = 64 * PT, N = 16 * NK, WGS = SSD_FWD_WGS, NTHR = SSD_MMA_THREADS * WGS;
    constexpr uint32_t KSBO = N * 16;  /* K-major tiles of N columns: bytes between 8-row groups */
    constexpr uint32_t XLBO = P * 16;  /* the x tile (MN-major, P columns): bytes between 8-row (k) groups */
    extern __shared__ __align__(128) unsigned char ssd_wg_smem[];
    int nch = ssd_nchunks(T, Q), ngr = CEIL_DIV(CEIL_DIV(Q, SSD_WG_ROWS), WGS);
    int c = blockIdx.x / ngr, rg = blockIdx.x % ngr, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), ib = rg * WGS * SSD_WG_ROWS;
    if (ib >= len) return;
    /* this warpgroup's row tile rt (rows i0..); the block's last j tile jlast (its last row tile with rows) */
    int wg = threadIdx.x / SSD_MMA_THREADS, rt = rg * WGS + wg, i0 = rt * SSD_WG_ROWS;
    int jlast = min(rg * WGS + WGS, CEIL_DIV(len, SSD_WG_ROWS)) - 1, active = i0 < len;
    int E = H * P;
    floatX* Cs = (floatX*)ssd_wg_smem;          /* 64 WGS rows: warpgroup wg's are rows 64 wg.. */
    floatX* Bs0 = Cs + WGS * SSD_WG_ROWS * N;
    floatX* Xs0 = Bs0 + SSD_WG_ROWS * N;
    floatX* Hs = Xs0 + SSD_WG_ROWS * P;  /* Hprev, then buffer 1: */
    floatX* Bs1 = Hs;
    floatX* Xs1 = Hs + SSD_WG_ROWS * N;
    float* cj = (float*)(Hs + (P * N > SSD_WG_ROWS * (N + P) ? P * N : SSD_WG_ROWS * (N + P)));  /* 2 x 64 cum_j */
    float* dj = cj + 2 * SSD_WG_ROWS;                                                       /* 2 x 64 dt_j */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    const floatX* Bg = rows + E + g * N;
    const floatX* Xg = rows + h * P;
    ssd_wg_load_tile<WGS * SSD_WG_ROWS, N, NTHR>(Cs, rows + E + G * N + g * N, xbc_stride, ib, len);
    ssd_wg_load_tile<SSD_WG_ROWS, N, NTHR>(Bs0, Bg, xbc_stride, 0, len);
    ssd_wg_load_tile<SSD_WG_ROWS, P, NTHR>(Xs0, Xg, xbc_stride, 0, len);
    ssd_cp_commit();
    if (threadIdx.x < SSD_WG_ROWS) {
        int j = threadIdx.x;
        cj[j] = j < len ? cumc[j] : 0.f;
        dj[j] = j < len ? dtc[j] : 0.f;
    }
    ssd_wg_load_state<P, N, NTHR>(Hs, states + ssd_state_off(b, c, h, nch, H, P * N));
    const floatX* Cw = Cs + wg * SSD_WG_ROWS * N;
    int warp = (threadIdx.x % SSD_MMA_THREADS) / 32, lane = threadIdx.x % 32, tig = lane % 4;
    int ri[2] = {i0 + warp * 16 + lane / 4, i0 + warp * 16 + lane / 4 + 8};
    /* rows past the chunk's end take the chunk's smallest cum: every exp() argument below stays <= 0 (no inf * 0) */
    float cum_r[2];
    int sg_r[2];  /* SEG: the rows' segment starts (rows past the end: the last row's) */
    for (int r = 0; r < 2; r++) {
        cum_r[r] = cumc[min(ri[r], len - 1)];
        sg_r[r] = SEG ? seg[(size_t)b * T + t0 + min(ri[r], len - 1)] : -1;
    }
    ssd_cp_wait<0>();
    wg_fence_proxy_async();
    __syncthreads();
    /* inter-chunk: exp(cum_i) C_i Hprev^T */
    float acc[PT][32];
#pragma unroll
    for (int pt = 0; pt < PT; pt++) {
#pragma unroll
        for (int e = 0; e < 32; e++) acc[pt][e] = 0.f;
        wg_pin_acc(acc[pt]);
    }
    if (active) {  /* uniform over the warpgroup: its products run converged */
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < NK; ks++) {
            uint64_t da = wg_desc(Cw + ks * 128, 128, KSBO);
#pragma unroll
            for (int pt = 0; pt < PT; pt++)
                wg_mma_ss<0, 0>(acc[pt], da, wg_desc(Hs + pt * 64 * N + ks * 128, 128, KSBO));
        }
        wg_commit();
        wg_wait<0>();
    }
    float e0 = expf(cum_r[0]), e1 = expf(cum_r[1]);
    if (SEG) { e0 = sg_r[0] >= 0 ? 0.f : e0; e1 = sg_r[1] >= 0 ? 0.f : e1; }
#pragma unroll
    for (int pt = 0; pt < PT; pt++) {
        wg_pin_acc(acc[pt]);
#pragma unroll
        for (int e = 0; e < 32; e++) acc[pt][e] *= (e & 2) ? e1 : e0;
    }
    /* intra-chunk: the j tiles up to the block's last diagonal one; tile jt + 1 loads while tile jt is used */
    for (int jt = 0; jt <= jlast; jt++) {
        int buf = jt & 1;
        ssd_cp_wait<0>();
        wg_fence_proxy_async();
        __syncthreads();  /* tile jt landed for all threads; every warp is done with tile jt - 1 (and Hprev) */
        if (jt < jlast) {
            int j0n = (jt + 1) * SSD_WG_ROWS;
            ssd_wg_load_tile<SSD_WG_ROWS, N, NTHR>(buf ? Bs0 : Bs1, Bg, xbc_stride, j0n, len);
            ssd_wg_load_tile<SSD_WG_ROWS, P, NTHR>(buf ? Xs0 : Xs1, Xg, xbc_stride, j0n, len);
            ssd_cp_commit();
            if (threadIdx.x < SSD_WG_ROWS) {
                int j = j0n + threadIdx.x;
                cj[(buf ^ 1) * SSD_WG_ROWS + threadIdx.x] = j < len ? cumc[j] : 0.f;
                dj[(buf ^ 1) * SSD_WG_ROWS + threadIdx.x] = j < len ? dtc[j] : 0.f;
            }
        }
        if (jt > rt || !active) continue;  /* past this warpgroup's diagonal (uniform over the warpgroup) */
        const floatX* Bb = buf ? Bs1 : Bs0;
        const floatX* Xb = buf ? Xs1 : Xs0;
        const float* cjb = cj + buf * SSD_WG_ROWS;
        const float* djb = dj + buf * SSD_WG_ROWS;
        float s[32];
#pragma unroll
        for (int e = 0; e < 32; e++) s[e] = 0.f;
        wg_pin_acc(s);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < NK; ks++)  /* S = C_i . B_j */
            wg_mma_ss<0, 0>(s, wg_desc(Cw + ks * 128, 128, KSBO), wg_desc(Bb + ks * 128, 128, KSBO));
        wg_commit();
        wg_wait<0>();
        wg_pin_acc(s);
        /* s[4 nt + e]: row ri[e / 2], column jj = 8 nt + 2 tig + e % 2 of the j tile */
        if (jt < rt) {
#pragma unroll
            for (int e = 0; e < 32; e++) {
                int jj = 8 * (e / 4) + 2 * tig + (e & 1);
                if (SEG)
                    s[e] = jt * SSD_WG_ROWS + jj >= sg_r[(e >> 1) & 1]
                               ? s[e] * __expf(cum_r[(e >> 1) & 1] - cjb[jj]) * djb[jj] : 0.f;
                else
                    s[e] *= __expf(cum_r[(e >> 1) & 1] - cjb[jj]) * djb[jj];
            }
        } else {
#pragma unroll
            for (int e = 0; e < 32; e++) {
                int jj = 8 * (e / 4) + 2 * tig + (e & 1), r = (e >> 1) & 1;
                int ok = jt * SSD_WG_ROWS + jj <= ri[r] && (!SEG || jt * SSD_WG_ROWS + jj >= sg_r[r]);
                s[e] = ok ? s[e] * __expf(cum_r[r] - cjb[jj]) * djb[jj] : 0.f;
            }
        }
        uint32_t sf[4][4];  /* the 64 x 64 score tile as 4 k16 A fragments (wgmma.cuh's register layout) */
#pragma unroll
        for (int ks = 0; ks < 4; ks++) {
            sf[ks][0] = ssd_pack_bf16(s[8 * ks + 0], s[8 * ks + 1]);
            sf[ks][1] = ssd_pack_bf16(s[8 * ks + 2], s[8 * ks + 3]);
            sf[ks][2] = ssd_pack_bf16(s[8 * ks + 4], s[8 * ks + 5]);
            sf[ks][3] = ssd_pack_bf16(s[8 * ks + 6], s[8 * ks + 7]);
        }
#pragma unroll
        for (int pt = 0; pt < PT; pt++) wg_pin_acc(acc[pt]);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < 4; ks++)  /* acc += S x_j */
#pragma unroll
            for (int pt = 0; pt < PT; pt++)
                wg_mma_rs<1>(acc[pt], sf[ks], wg_desc(Xb + wg_tile_offset(16 * ks, 64 * pt, P), XLBO, 128));
        wg_commit();
        wg_wait<0>();
#pragma unroll
        for (int pt = 0; pt < PT; pt++) wg_pin_acc(acc[pt]);
    }
    if (!active) return;
    /* y = acc + D x_i. x_i is the x tile of the diagonal iteration jt = rt, still in its buffer: no later iteration
       loads into it (the block's last prefetch is of tile jlast <= rt + 1, into the other buffer) */
    const floatX* Xd = (rt & 1) ? Xs1 : Xs0;
    float Dh = Dskip[h];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (ri[r] >= len) continue;
        size_t row = (size_t)(b * T + t0 + ri[r]);
        floatX* yr = y + row * E + h * P;
#pragma unroll
        for (int pt = 0; pt < PT; pt++)
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                int p = 64 * pt + nt * 8 + 2 * tig;
                __nv_bfloat162 xv = *(const __nv_bfloat162*)(Xd + wg_tile_offset(ri[r] - i0, p, P));
                *(__nv_bfloat162*)(yr + p) = __floats2bfloat162_rn(acc[pt][4 * nt + 2 * r] + Dh * __low2float(xv),
                                                                  acc[pt][4 * nt + 2 * r + 1] + Dh * __high2float(xv));
            }
    }
#endif  /* other targets: an empty body, never launched (gpu_hopper_path() is 0 there) */
}

/* The pair kernel's decay factors. On an off-diagonal score tile (every row i after every column j) the decay
   exp(cum_i - cum_j) = exp(cum_i - cref) exp(cref - cum_j), cref = cum of the j tile's last row, so both exp()
   arguments stay <= 0 (nothing overflows; where one factor underflows the true product is smaller still) and the
   exps become one per row and one per column (made once per block), with no mask: a multiply per score element
   instead of a subtraction, an exp and a masked select. The diagonal tiles keep the per-element form (a factor
   there would be exp(> 0)) and read a column pair's cum and dt as one 16-byte shared load per head.
   Per-column factors of slot q (one slot per head and j tile), laid out for wide shared loads:
   cd[q][pair] = {cum_j, cum_j+1, dt_j, dt_j+1} (the diagonal tile: one 16-byte load per column pair and head),
   wj[q][jj] = dt_j exp(cref - cum_j) with cref = cum of the tile's last row inside the chunk (the off-diagonal
   tiles: one 8-byte load per pair), cr[q] = cref. Every exp() argument is <= 0 (j <= that row); zeros past the
   chunk's end. */
/* column jj of scalar slot q: {cum_j, dt_j} into its pair's 16-byte group of cd, wj = dt_j exp(cref - cum_j)
   (0 past the chunk's end), cr = cref (written by column 0) */
__device__ static inline void ssd_wg_store_scalars(float* cd, float* wj, float* cr, int q, int jj, float c, float d,
                                                 float cref, int valid) {
    cd[(q * (SSD_WG_ROWS / 2) + jj / 2) * 4 + (jj & 1)] = c;
    cd[(q * (SSD_WG_ROWS / 2) + jj / 2) * 4 + 2 + (jj & 1)] = d;
    wj[q * SSD_WG_ROWS + jj] = valid ? d * __expf(cref - c) : 0.f;
    if (jj == 0) cr[q] = cref;
}

/* The pair kernel's global loads are all issued in its prologue, together, so one memory latency precedes the first
   product instead of several, and none is left inside the j-tile loop:
   - the per-column factors of every j tile the block uses (0..jlast: at most Q / 64 <= 4) are built once into
     their own slots ([hp][tile]);
   - the fp32 Hprev of the two heads (64 KB per block at P = 64, N = 128) is read with all of a thread's 16-byte
     loads in registers before the first bf16 conversion, through the read-only path (__ldg: the loads may move
     above the shared-memory stores of the scalars); a loop that stores each pair of loads before the next has 2
     loads in flight per thread, not 8 (lab versions 9 and 11 in NOTES_ssd.md).
   Thread k < HP 64 ntl of the scalars takes head k / (64 ntl), tile (k / 64) % ntl, row k % 64, zeros past the
   chunk's end (ntl = jlast + 1 tiles; slot q = hp nsl + tile).
   SEG (segc: seg of the chunk's rows): wj of column j is 0 where a document boundary follows j in its tile (j <
   s_e, e the tile's last row): wj serves only the off-diagonal tiles, where (i, j) is kept iff no boundary in
   j+1..e (this column factor) and none in e+1..i (s_i <= e, the row factor: see the kernel). */
template <int R, int NC, int NTHR, int HP, bool SEG>
__device__ static inline void ssd_wg_load_prologue(floatX* Hdst, const float* m, float* cd, float* wj, float* cr,
                                                  const float* cum, const float* dt, const int* segc, size_t base,
                                                  int T, int ntl, int nsl, int len) {
    constexpr int ITER = R * NC / 8 / NTHR;  /* 16-byte load pairs per thread: 4 at R = 128, NC = 128, NTHR = 512 */
    static_assert(R * NC / 8 % NTHR == 0, "ssd_wg_load_prologue: the state tile must split evenly over the threads");
    float4 q[ITER][2];
#pragma unroll
    for (int it = 0; it < ITER; it++) {  /* all the state loads first: 8 in flight per thread */
        int idx = threadIdx.x + it * NTHR, r = (idx / NC) * 8 + (idx & 7), v = (idx >> 3) % (NC / 8);
        const float4* src = (const float4*)(m + (size_t)r * NC + v * 8);
        q[it][0] = __ldg(src);
        q[it][1] = __ldg(src + 1);
    }
    for (int k = threadIdx.x; k < HP * SSD_WG_ROWS * ntl; k += NTHR) {  /* one pass at Q <= 256 (HP = 2) */
        int hp = k / (SSD_WG_ROWS * ntl), jt = (k / SSD_WG_ROWS) % ntl, jj = k % SSD_WG_ROWS, j = jt * SSD_WG_ROWS + jj;
        size_t at = base + (size_t)hp * T;
        float cref = __ldg(cum + at + min(jt * SSD_WG_ROWS + SSD_WG_ROWS - 1, len - 1));  /* one address per warp */
        float c = j < len ? __ldg(cum + at + j) : 0.f, d = j < len ? __ldg(dt + at + j) : 0.f;
        int keep = j < len && (!SEG || j >= __ldg(segc + min(jt * SSD_WG_ROWS + SSD_WG_ROWS - 1, len - 1)));
        ssd_wg_store_scalars(cd, wj, cr, hp * nsl + jt, jj, c, d, cref, keep);
    }
#pragma unroll
    for (int it = 0; it < ITER; it++) {
        int idx = threadIdx.x + it * NTHR;
        uint4 o = make_uint4(ssd_pack_bf16(q[it][0].x, q[it][0].y), ssd_pack_bf16(q[it][0].z, q[it][0].w),
                             ssd_pack_bf16(q[it][1].x, q[it][1].y), ssd_pack_bf16(q[it][1].z, q[it][1].w));
        *(uint4*)(Hdst + idx * 8) = o;
    }
}
#define SSD_PAIR_SEG_SMEM (SSD_FWD_WGS * SSD_WG_ROWS * sizeof(int))  /* SEG: the rows' seg (512 bytes) */
template <int NK, bool SEG>  /* N = 16 NK, P = 64 per head, the heads h0, h0 + 1 of one group per block */
__global__ static void __launch_bounds__(SSD_MMA_THREADS * SSD_FWD_WGS, 2)
ssd_fwd_scan_wgmma_pair_kernel(floatX* y, const floatX* xbc, int xbc_stride, const float* dt, const float* cum,
                     const int* seg, const float* states, const float* Dskip, int T, int H, int G, int Q) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int HP = 2, P = 64, PW = 64 * HP, N = 16 * NK, WGS = SSD_FWD_WGS, NTHR = SSD_MMA_THREADS * WGS;
    constexpr uint32_t KSBO = N * 16;   /* K-major tiles of N columns: bytes between 8-row groups */
    constexpr uint32_t XLBO = PW * 16;  /* the x tile (MN-major, PW columns): bytes between 8-row (k) groups */
    extern __shared__ __align__(128) unsigned char ssd_wg_pair_smem[];
    int nch = ssd_nchunks(T, Q), ngr = CEIL_DIV(CEIL_DIV(Q, SSD_WG_ROWS), WGS), nhb = H / HP;
    int c = blockIdx.x / ngr, rg = blockIdx.x % ngr, b = blockIdx.y / nhb, h0 = (blockIdx.y % nhb) * HP;
    int g = h0 / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), ib = rg * WGS * SSD_WG_ROWS;
    if (ib >= len) return;
    int wg = threadIdx.x / SSD_MMA_THREADS, rt = rg * WGS + wg, i0 = rt * SSD_WG_ROWS;
    int jlast = min(rg * WGS + WGS, CEIL_DIV(len, SSD_WG_ROWS)) - 1, active = i0 < len;
    int E = H * P;
    /* SEG: the seg of the block's WGS 64 rows first (rows past the chunk's end: the last row's), read where used:
       two registers held across the j-tile loop would spill more at the 128-register cap (NK = 8), and at a fixed
       address no register holds a pointer to them */
    int* sgs = (int*)ssd_wg_pair_smem;
    floatX* Cs = (floatX*)(ssd_wg_pair_smem + (SEG ? SSD_PAIR_SEG_SMEM : 0));  /* 64 WGS rows: wg's are 64 wg.. */
    floatX* Bs0 = Cs + WGS * SSD_WG_ROWS * N;
    floatX* Xs0 = Bs0 + SSD_WG_ROWS * N;
    floatX* Hs = Xs0 + SSD_WG_ROWS * PW;  /* Hprev of the HP heads ((HP P) x N), then buffer 1: */
    floatX* Bs1 = Hs;
    floatX* Xs1 = Hs + SSD_WG_ROWS * N;
    /* the per-column factors: cd ([hp][slot][32 pairs][4]), wj ([hp][slot][64]), cr ([hp][slot]); nsl slots per
       head, one per j tile, at least 2 (ssd_smem_fwd_wgmma_pair) */
    float* cd = (float*)(Hs + (PW * N > SSD_WG_ROWS * (N + PW) ? PW * N : SSD_WG_ROWS * (N + PW)));
    int nsl = max(2, CEIL_DIV(Q, SSD_WG_ROWS));
    float* wj = cd + HP * nsl * 2 * SSD_WG_ROWS;
    float* cr = wj + HP * nsl * SSD_WG_ROWS;
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Bg = rows + E + g * N;
    const floatX* Xg = rows + h0 * P;
    ssd_wg_load_tile<WGS * SSD_WG_ROWS, N, NTHR>(Cs, rows + E + G * N + g * N, xbc_stride, ib, len);
    ssd_wg_load_tile<SSD_WG_ROWS, N, NTHR>(Bs0, Bg, xbc_stride, 0, len);
    ssd_wg_load_tile<SSD_WG_ROWS, PW, NTHR>(Xs0, Xg, xbc_stride, 0, len);
    ssd_cp_commit();
    ssd_wg_load_prologue<PW, N, NTHR, HP, SEG>(Hs, states + ssd_state_off(b, c, h0, nch, H, P * N), cd, wj, cr, cum,
                                              dt, SEG ? seg + (size_t)b * T + t0 : NULL, (size_t)(b * H + h0) * T + t0,
                                              T, jlast + 1, nsl, len);
    const floatX* Cw = Cs + wg * SSD_WG_ROWS * N;
    int warp = (threadIdx.x % SSD_MMA_THREADS) / 32, lane = threadIdx.x % 32, tig = lane % 4;
    int ri[2] = {i0 + warp * 16 + lane / 4, i0 + warp * 16 + lane / 4 + 8};
    /* rows past the chunk's end take the chunk's smallest cum: every exp() argument below stays <= 0 (no inf * 0) */
    float cum_r[HP][2];
#pragma unroll
    for (int hp = 0; hp < HP; hp++)
        for (int r = 0; r < 2; r++) {
            const float* at = cum + (size_t)(b * H + h0 + hp) * T + t0 + min(ri[r], len - 1);
            cum_r[hp][r] = __ldg(at);  /* read-only path, free to move above the prologue's stores */
        }
    if (SEG && threadIdx.x < WGS * SSD_WG_ROWS)
        sgs[threadIdx.x] = __ldg(seg + (size_t)b * T + t0 + min(ib + (int)threadIdx.x, len - 1));
    ssd_cp_wait<0>();
    wg_fence_proxy_async();
    __syncthreads();
    /* inter-chunk: exp(cum_i) C_i Hprev^T, per head */
    float acc[HP][32];
#pragma unroll
    for (int hp = 0; hp < HP; hp++) {
#pragma unroll
        for (int e = 0; e < 32; e++) acc[hp][e] = 0.f;
        wg_pin_acc(acc[hp]);
    }
    if (active) {  /* uniform over the warpgroup: its products run converged */
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < NK; ks++) {
            uint64_t da = wg_desc(Cw + ks * 128, 128, KSBO);
#pragma unroll
            for (int hp = 0; hp < HP; hp++)
                wg_mma_ss<0, 0>(acc[hp], da, wg_desc(Hs + hp * 64 * N + ks * 128, 128, KSBO));
        }
        wg_commit();
        wg_wait<0>();
    }
#pragma unroll
    for (int hp = 0; hp < HP; hp++) {
        wg_pin_acc(acc[hp]);
        float e0 = expf(cum_r[hp][0]), e1 = expf(cum_r[hp][1]);
        if (SEG) {  /* the entering state reaches row i iff s_i < 0 */
            e0 = sgs[ri[0] - ib] >= 0 ? 0.f : e0;
            e1 = sgs[ri[1] - ib] >= 0 ? 0.f : e1;
        }
#pragma unroll
        for (int e = 0; e < 32; e++) acc[hp][e] *= (e & 2) ? e1 : e0;
    }
    /* intra-chunk: the j tiles up to the block's last diagonal one; tile jt + 1 loads while tile jt is used */
    for (int jt = 0; jt <= jlast; jt++) {
        int buf = jt & 1;
        ssd_cp_wait<0>();
        wg_fence_proxy_async();
        __syncthreads();  /* tile jt landed for all threads; every warp is done with tile jt - 1 (and Hprev) */
        if (jt < jlast) {
            int j0n = (jt + 1) * SSD_WG_ROWS;
            ssd_wg_load_tile<SSD_WG_ROWS, N, NTHR>(buf ? Bs0 : Bs1, Bg, xbc_stride, j0n, len);
            ssd_wg_load_tile<SSD_WG_ROWS, PW, NTHR>(buf ? Xs0 : Xs1, Xg, xbc_stride, j0n, len);
            ssd_cp_commit();  /* every tile's scalars are in shared memory since the prologue */
        }
        if (jt > rt || !active) continue;  /* past this warpgroup's diagonal (uniform over the warpgroup) */
        const floatX* Bb = buf ? Bs1 : Bs0;
        const floatX* Xb = buf ? Xs1 : Xs0;
        float s[32];
#pragma unroll
        for (int e = 0; e < 32; e++) s[e] = 0.f;
        wg_pin_acc(s);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < NK; ks++)  /* S = C_i . B_j, once for the HP heads */
            wg_mma_ss<0, 0>(s, wg_desc(Cw + ks * 128, 128, KSBO), wg_desc(Bb + ks * 128, 128, KSBO));
        wg_commit();
        wg_wait<0>();
        wg_pin_acc(s);
        /* s[4 nt + e]: row ri[e / 2], column jj = 8 nt + 2 tig + e % 2 of the j tile. One pass makes every head's
           score fragments (S times that head's decay and dt, masked on the diagonal tile): each s[e] dies as soon
           as it is read, so at most 64 accumulators + 32 S/fragment registers are live */
        uint32_t sf[HP][4][4];
        int diag = jt == rt, sl = jt;  /* this tile's scalar slot (per head: hp nsl + sl) */
        if (!diag) {
            /* off-diagonal tile (every j < every i): exp(cum_i - cum_j) = exp(cum_i - cref) exp(cref - cum_j) with
               cref = cum of the tile's last row (< i0: the tile is whole), both arguments <= 0; no mask. Rows past
               the chunk's end have cum_r = the chunk's last cum, also <= cref. 2 exps per head instead of 32.
               SEG: the mask factors too: (i, j) is kept iff no boundary in j+1..e (e = the tile's last row: wj is 0
               otherwise, ssd_wg_load_prologue) and none in e+1..i (s_i <= e: rf is 0 otherwise), so a dropped
               pair's fragment is an exact zero and the element loop has no test. */
            float rf[HP][2];
#pragma unroll
            for (int hp = 0; hp < HP; hp++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    rf[hp][r] = __expf(cum_r[hp][r] - cr[hp * nsl + sl]);
                    if (SEG && sgs[ri[r] - ib] >= (jt + 1) * SSD_WG_ROWS) rf[hp][r] = 0.f;  /* boundary after e */
                }
#pragma unroll
            for (int ks = 0; ks < 4; ks++)
#pragma unroll
                for (int k = 0; k < 8; k += 2) {
                    int e = 8 * ks + k, jj = 8 * (e / 4) + 2 * tig, r = (e >> 1) & 1;
#pragma unroll
                    for (int hp = 0; hp < HP; hp++) {
                        float2 w = *(const float2*)(wj + (hp * nsl + sl) * SSD_WG_ROWS + jj);
                        sf[hp][ks][k / 2] = ssd_pack_bf16(s[e] * rf[hp][r] * w.x, s[e + 1] * rf[hp][r] * w.y);
                    }
                }
        } else {  /* diagonal tile: the masked per-element decay, cum_j / dt_j of a pair in one load */
            int sg_r[2];  /* SEG: the rows' seg */
            if (SEG) { sg_r[0] = sgs[ri[0] - ib]; sg_r[1] = sgs[ri[1] - ib]; }
#pragma unroll
            for (int ks = 0; ks < 4; ks++)
#pragma unroll
                for (int k = 0; k < 8; k += 2) {
                    int e = 8 * ks + k, jj = 8 * (e / 4) + 2 * tig, r = (e >> 1) & 1;
                    int ok0 = jt * SSD_WG_ROWS + jj <= ri[r], ok1 = jt * SSD_WG_ROWS + jj + 1 <= ri[r];
                    if (SEG) {
                        ok0 = ok0 && jt * SSD_WG_ROWS + jj >= sg_r[r];
                        ok1 = ok1 && jt * SSD_WG_ROWS + jj + 1 >= sg_r[r];
                    }
#pragma unroll
                    for (int hp = 0; hp < HP; hp++) {
                        float4 q = *(const float4*)(cd + ((hp * nsl + sl) * (SSD_WG_ROWS / 2) + jj / 2) * 4);
                        float v0 = ok0 ? s[e] * __expf(cum_r[hp][r] - q.x) * q.z : 0.f;
                        float v1 = ok1 ? s[e + 1] * __expf(cum_r[hp][r] - q.y) * q.w : 0.f;
                        sf[hp][ks][k / 2] = ssd_pack_bf16(v0, v1);
                    }
                }
        }
#pragma unroll
        for (int hp = 0; hp < HP; hp++) wg_pin_acc(acc[hp]);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < 4; ks++)  /* acc_hp += S_hp x_j,hp */
#pragma unroll
            for (int hp = 0; hp < HP; hp++)
                wg_mma_rs<1>(acc[hp], sf[hp][ks], wg_desc(Xb + wg_tile_offset(16 * ks, 64 * hp, PW), XLBO, 128));
        wg_commit();
        wg_wait<0>();
#pragma unroll
        for (int hp = 0; hp < HP; hp++) wg_pin_acc(acc[hp]);
    }
    if (!active) return;
    /* y = acc + D x_i. x_i is the x tile of the diagonal iteration jt = rt, still in its buffer: no later iteration
       loads into it (the block's last prefetch is of tile jlast <= rt + 1, into the other buffer) */
    const floatX* Xd = (rt & 1) ? Xs1 : Xs0;
#pragma unroll
    for (int hp = 0; hp < HP; hp++) {
        float Dh = Dskip[h0 + hp];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            if (ri[r] >= len) continue;
            floatX* yr = y + (size_t)(b * T + t0 + ri[r]) * E + (h0 + hp) * P;
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                int p = nt * 8 + 2 * tig;
                __nv_bfloat162 xv = *(const __nv_bfloat162*)(Xd + wg_tile_offset(ri[r] - i0, 64 * hp + p, PW));
                *(__nv_bfloat162*)(yr + p) = __floats2bfloat162_rn(acc[hp][4 * nt + 2 * r] + Dh * __low2float(xv),
                                                                  acc[hp][4 * nt + 2 * r + 1] + Dh * __high2float(xv));
            }
        }
    }
#endif  /* other targets: an empty body, never launched (gpu_hopper_path() is 0 there) */
}
/* shared memory of ssd_fwd_scan_wgmma_pair_kernel: the one-head kernel's at P = 128 (the pair's x, y, states side by
   side), then the per-column factors: cd (4 floats per column pair), wj (64 floats) and cr (padded to 16 bytes) for
   each of nsl = max(2, Q / 64) slots per head (the formula keeps the terms of its first, two-slot form); SEG: the
   rows' seg before them all (SSD_PAIR_SEG_SMEM, a multiple of 128 bytes: the tiles keep their alignment), which
   ssd_fwd_wgmma_takes counts with or without seq_idx, so a shape takes the same forward scan either way */
static inline size_t ssd_smem_fwd_wgmma_pair(int N, int Q) {
    const int HP = 2;
    size_t nsl = (size_t)ssd_max(2, CEIL_DIV(Q, SSD_WG_ROWS));
    size_t base = ssd_smem_fwd_wgmma(64 * HP, N, 2) + (size_t)(HP - 1) * 4 * SSD_WG_ROWS * sizeof(float);
    return base + ((size_t)HP * (nsl - 2) * 2 * SSD_WG_ROWS + (size_t)HP * nsl * SSD_WG_ROWS + 4 * HP * nsl) * sizeof(float);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* launchers */

template <int PMAX, int NMAX, bool EXACT, bool SEG>
static void ssd_launch_fwd_mma_s(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                                 int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
    size_t smem = ssd_smem_fwd_mma(P, N);
    ssd_set_smem((const void*)ssd_fwd_scan_mma_kernel<PMAX, NMAX, EXACT, SEG>, smem);
    ssd_fwd_scan_mma_kernel<PMAX, NMAX, EXACT, SEG><<<dim3(ssd_nchunks(T, Q) * CEIL_DIV(Q, SSD_MMA_ROWS), B * H),
                                                      SSD_MMA_THREADS, smem, stream>>>(
        y, xbc, xbc_stride, s.dt, s.cum, s.seg, s.states, Dskip, T, H, P, N, G, Q);
    cudaCheckLast();
}
/* s.seg: the instantiation with document boundaries */
template <int PMAX, int NMAX, bool EXACT>
static void ssd_launch_fwd_mma_e(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                                 int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
    if (s.seg) ssd_launch_fwd_mma_s<PMAX, NMAX, EXACT, true>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
    else ssd_launch_fwd_mma_s<PMAX, NMAX, EXACT, false>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
}
/* P, N equal to the register widths (the model's 64, 128 among them) run the instantiation with compile-time widths */
template <int PMAX, int NMAX>
static void ssd_launch_fwd_mma_w(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                                 int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
    if (P == PMAX && N == NMAX) ssd_launch_fwd_mma_e<PMAX, NMAX, true>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
    else ssd_launch_fwd_mma_e<PMAX, NMAX, false>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
}
/* the portable forward scan (mma.sync): register tiles of 64 or 128 columns for P and N */
static void ssd_launch_fwd_mma(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                               int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
    if (P <= 64 && N <= 64) ssd_launch_fwd_mma_w<64, 64>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
    else if (P <= 64) ssd_launch_fwd_mma_w<64, 128>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
    else if (N <= 64) ssd_launch_fwd_mma_w<128, 64>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
    else ssd_launch_fwd_mma_w<128, 128>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
}

/* The wgmma scans run on the Hopper path (gpu_hopper_path()) where the tile kernels' layout rules hold (checked by
   the caller), P and N are among their compile-time widths and the saved states are 16-byte aligned (B * H * T even:
   they follow 2 * B * H * T floats of dt and cum); the pair kernel where also P = 64 and H/G is even. Both where
   their shared memory fits cuda_smem_optin() (always on an H100; MAMBA2_SMEM_LIMIT may say otherwise). */
static inline int ssd_fwd_wgmma_pair_takes(int H, int P, int N, int G) {
    return P == 64 && (N == 64 || N == 128) && (H / G) % 2 == 0;
}
static inline int ssd_fwd_wgmma_takes(int H, int P, int N, int G, int Q, const void* states) {
    if (!(gpu_hopper_path() && (P == 64 || P == 128) && (N == 64 || N == 128) && (uintptr_t)states % 16 == 0))
        return 0;
    size_t smem = ssd_fwd_wgmma_pair_takes(H, P, N, G) ? ssd_smem_fwd_wgmma_pair(N, Q) + SSD_PAIR_SEG_SMEM
                                                        : ssd_smem_fwd_wgmma(P, N, SSD_FWD_WGS);
    return smem <= (size_t)cuda_smem_optin();
}
template <int PT, int NK, bool SEG>
static void ssd_launch_fwd_wgmma_s(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                                   int T, int H, int G, int Q, cudaStream_t stream) {
    size_t smem = ssd_smem_fwd_wgmma(64 * PT, 16 * NK, SSD_FWD_WGS);
    ssd_set_smem((const void*)ssd_fwd_scan_wgmma_kernel<PT, NK, SEG>, smem);
    dim3 grid(ssd_nchunks(T, Q) * CEIL_DIV(CEIL_DIV(Q, SSD_WG_ROWS), SSD_FWD_WGS), B * H);
    ssd_fwd_scan_wgmma_kernel<PT, NK, SEG><<<grid, SSD_MMA_THREADS * SSD_FWD_WGS, smem, stream>>>(
        y, xbc, xbc_stride, s.dt, s.cum, s.seg, s.states, Dskip, T, H, G, Q);
    cudaCheckLast();
}
template <int PT, int NK>
static void ssd_launch_fwd_wgmma_t(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                                   int T, int H, int G, int Q, cudaStream_t stream) {
    if (s.seg) ssd_launch_fwd_wgmma_s<PT, NK, true>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
    else ssd_launch_fwd_wgmma_s<PT, NK, false>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
}
template <int NK, bool SEG>
static void ssd_launch_fwd_wgmma_pair_s(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip,
                                        int B, int T, int H, int G, int Q, cudaStream_t stream) {
    size_t smem = ssd_smem_fwd_wgmma_pair(16 * NK, Q) + (SEG ? SSD_PAIR_SEG_SMEM : 0);
    ssd_set_smem((const void*)ssd_fwd_scan_wgmma_pair_kernel<NK, SEG>, smem);
    dim3 grid(ssd_nchunks(T, Q) * CEIL_DIV(CEIL_DIV(Q, SSD_WG_ROWS), SSD_FWD_WGS), B * H / 2);
    ssd_fwd_scan_wgmma_pair_kernel<NK, SEG><<<grid, SSD_MMA_THREADS * SSD_FWD_WGS, smem, stream>>>(
        y, xbc, xbc_stride, s.dt, s.cum, s.seg, s.states, Dskip, T, H, G, Q);
    cudaCheckLast();
}
template <int NK>
static void ssd_launch_fwd_wgmma_pair_t(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip,
                                        int B, int T, int H, int G, int Q, cudaStream_t stream) {
    if (s.seg) ssd_launch_fwd_wgmma_pair_s<NK, true>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
    else ssd_launch_fwd_wgmma_pair_s<NK, false>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
}
/* where ssd_fwd_wgmma_takes: the pair kernel, else the one-head kernel; returns which (SSDPath's fwd_scan) */
static int ssd_launch_fwd_wgmma(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                                int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
    if (ssd_fwd_wgmma_pair_takes(H, P, N, G)) {
        if (N == 128) ssd_launch_fwd_wgmma_pair_t<8>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
        else ssd_launch_fwd_wgmma_pair_t<4>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
        return SSD_FWD_WGMMA_PAIR;
    }
    if (P == 64 && N == 128) ssd_launch_fwd_wgmma_t<1, 8>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
    else if (P == 64) ssd_launch_fwd_wgmma_t<1, 4>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
    else if (N == 128) ssd_launch_fwd_wgmma_t<2, 8>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
    else ssd_launch_fwd_wgmma_t<2, 4>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
    return SSD_FWD_WGMMA;
}
#endif /* !ENABLE_FP32 */

#endif /* MAMBA2_SSD_FWD_CUH */
