/* dev/cuda/ssd_lab_wgmma.cuh: the SSD lab (versions 2 to 11), a frozen copy of llmc/ssd_wgmma.cuh as it stood before the default path moved
   alone into llmc/ (the knobs, run counters and version ladder stay here). Included by dev/cuda/ssd.cu inside
   namespace lab, after llmc/cuda_common.h and llmc/wgmma.cuh; only the include lines and guards differ from the
   original. Version history: dev/cuda/NOTES_ssd.md. */
/*
 * ssd_wgmma.cuh: the SSD layer's kernels on Hopper's warpgroup products (bf16 build, sm_90a; llmc/wgmma.cuh) and
 * their launchers: the forward chunk scans of version 5 (one head per block), version 6 (two heads of a group per
 * block), version 9 (the off-diagonal decay factored) and version 11 (every global load in the prologue), and
 * version 6's wgmma ports of the chunk-state and dC kernels (off by default: slower than version 4's). The math, the
 * buffers and the dispatch are in llmc/ssd.cuh, which includes this file after llmc/ssd_mma.cuh (whose tile
 * primitives it uses); it is not included on its own.
 */
#ifndef SSD_LAB_WGMMA_CUH
#define SSD_LAB_WGMMA_CUH

#ifndef SSD_LAB_CUH
#error "dev/cuda/ssd_lab_wgmma.cuh is a part of dev/cuda/ssd_lab.cuh"
#endif

#if !defined(ENABLE_FP32)
/* ------------------------------------------------------------------------------------------------------------ */
/* version 5 (bf16 build, sm_90a): version 4 with the forward chunk scan on Hopper's warpgroup products (wgmma,
   llmc/wgmma.cuh). One warpgroup (4 warps, 128 threads) per 64 rows i of a (b, h, chunk), the same grid and
   algorithm as ssd3_scan_fwd_kernel; what changes is how the products run:
     state term  acc  = C_i Hprev^T          wgmma, A = C_i tile, B = Hprev (bf16, rows p), both K-major in shared
                 acc *= exp(cum_i) per row   in registers
     per j tile  S    = C_i B_j^T            wgmma m64n64k16 x N/16, A = C_i, B = B_j tile (K-major), fp32 registers
                 S   *= exp(cum_i - cum_j) dt_j, masked j <= i on the diagonal tile (in registers)
                 acc += S x_j                wgmma with A = S repacked to bf16 registers, B = x_j tile (p contiguous:
                                             MN-major, the transpose bit)
     epilogue    y = acc + D x_i
   The products are issued by the whole warpgroup and run asynchronously; the warps stop issuing ldmatrix / mma.sync
   chains (version 3: 8 ldmatrix + 16 mma.sync per warp per k step) and issue one wgmma per 64 x 64 x 16 step.
   Tiles are in shared memory as core matrices without swizzle (wgmma.cuh), filled by cp.async 16 bytes per thread
   (8 consecutive threads fill one 128-byte core matrix); the next j tile loads while this one is used, with one
   barrier per j tile. Hprev is rounded to bf16 once, as in version 3's forward (y is bf16; the backward does not
   read y, so the cancellation rules of the backward do not apply here).
   Compile-time P (64 or 128) and N (64 or 128): the k loops unroll, which keeps ptxas from serializing the wgmmas;
   other shapes run version 4's forward. Needs the sm_90a target (the Makefile's CUDA_ARCH); built for another
   target the kernel stops with a message instead of computing. */
#include "llmc/wgmma.cuh"  /* already included outside namespace lab */

#define SSD5_ROWS 64

/* rows [r0, r0 + ROWS) of a bf16 row-major matrix (NC columns) into a core-matrix tile (wg_tile_offset); rows at
   or past nvalid are zero. Two thread orders (LINES):
   0: thread idx writes the 16 bytes at element idx * 8 of the tile: 8 consecutive threads fill one 128-byte core
      matrix (8 rows, the same 8 columns): no bank conflicts; a warp reads 64 contiguous bytes of each of 8 rows.
   1: 4 consecutive threads take 4 rows of one 8-column chunk, a warp 4 rows x 8 chunks: it reads 4 whole 128-byte
      lines (half the lines per request of order 0, for the L2) and its shared-memory writes conflict 2-way. */
template <int ROWS, int NC, int NTHR, int LINES>
__device__ static inline void ssd5_load_tile(floatX* dst, const floatX* src, size_t gstride, int r0, int nvalid) {
#pragma unroll 4
    for (int idx = threadIdx.x; idx < ROWS * NC / 8; idx += NTHR) {
        int r, v;
        if (LINES) { r = (idx / (NC / 2)) * 4 + (idx & 3); v = (idx >> 2) % (NC / 8); }
        else { r = (idx / NC) * 8 + (idx & 7); v = (idx >> 3) % (NC / 8); }
        int ok = r0 + r < nvalid;
        ssd3_cp_async16(dst + (LINES ? wg_tile_offset(r, 8 * v, NC) : idx * 8),
                        src + (ok ? (size_t)(r0 + r) * gstride + v * 8 : 0), ok);
    }
}

/* the fp32 (R, NC) state into a bf16 core-matrix tile (rows p, columns n), same thread order as ssd5_load_tile */
template <int R, int NC, int NTHR>
__device__ static inline void ssd5_load_state(floatX* dst, const float* m) {
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
static inline size_t ssd5_smem_fwd(int P, int N, int wgs) {
    size_t region = ssd3_max((size_t)P * N, (size_t)SSD5_ROWS * (N + P));
    return ((size_t)(wgs + 1) * SSD5_ROWS * N + (size_t)SSD5_ROWS * P + region) * sizeof(floatX) +
           4 * SSD5_ROWS * sizeof(float);
}

template <int PT, int NK, int WGS, int LINES>  /* P = 64 PT, N = 16 NK, WGS warpgroups per block, LINES: load order */
__global__ static void __launch_bounds__(SSD3_THREADS * WGS, WGS == 2 ? 2 : 1)
ssd5_scan_fwd_kernel(floatX* y, const floatX* xbc, int xbc_stride, const float* dt, const float* cum,
                     const float* states, const float* Dskip, int T, int H, int G, int Q) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int P = 64 * PT, N = 16 * NK, NTHR = SSD3_THREADS * WGS;
    constexpr uint32_t KSBO = N * 16;  /* K-major tiles of N columns: bytes between 8-row groups */
    constexpr uint32_t XLBO = P * 16;  /* the x tile (MN-major, P columns): bytes between 8-row (k) groups */
    extern __shared__ __align__(128) unsigned char ssd5_smem[];
    int nch = ssd_nchunks(T, Q), ngr = CEIL_DIV(CEIL_DIV(Q, SSD5_ROWS), WGS);
    int c = blockIdx.x / ngr, rg = blockIdx.x % ngr, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), ib = rg * WGS * SSD5_ROWS;
    if (ib >= len) return;
    /* this warpgroup's row tile rt (rows i0..); the block's last j tile jlast (its last row tile with rows) */
    int wg = threadIdx.x / SSD3_THREADS, rt = rg * WGS + wg, i0 = rt * SSD5_ROWS;
    int jlast = min(rg * WGS + WGS, CEIL_DIV(len, SSD5_ROWS)) - 1, active = i0 < len;
    int E = H * P;
    floatX* Cs = (floatX*)ssd5_smem;          /* 64 WGS rows: warpgroup wg's are rows 64 wg.. */
    floatX* Bs0 = Cs + WGS * SSD5_ROWS * N;
    floatX* Xs0 = Bs0 + SSD5_ROWS * N;
    floatX* Hs = Xs0 + SSD5_ROWS * P;  /* Hprev, then buffer 1: */
    floatX* Bs1 = Hs;
    floatX* Xs1 = Hs + SSD5_ROWS * N;
    float* cj = (float*)(Hs + (P * N > SSD5_ROWS * (N + P) ? P * N : SSD5_ROWS * (N + P)));  /* 2 x 64 cum_j */
    float* dj = cj + 2 * SSD5_ROWS;                                                       /* 2 x 64 dt_j */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    const floatX* Bg = rows + E + g * N;
    const floatX* Xg = rows + h * P;
    ssd5_load_tile<WGS * SSD5_ROWS, N, NTHR, LINES>(Cs, rows + E + G * N + g * N, xbc_stride, ib, len);
    ssd5_load_tile<SSD5_ROWS, N, NTHR, LINES>(Bs0, Bg, xbc_stride, 0, len);
    ssd5_load_tile<SSD5_ROWS, P, NTHR, LINES>(Xs0, Xg, xbc_stride, 0, len);
    ssd3_cp_commit();
    if (threadIdx.x < SSD5_ROWS) {
        int j = threadIdx.x;
        cj[j] = j < len ? cumc[j] : 0.f;
        dj[j] = j < len ? dtc[j] : 0.f;
    }
    ssd5_load_state<P, N, NTHR>(Hs, states + ssd_state_off(b, c, h, nch, H, P * N));
    const floatX* Cw = Cs + wg * SSD5_ROWS * N;
    int warp = (threadIdx.x % SSD3_THREADS) / 32, lane = threadIdx.x % 32, tig = lane % 4;
    int ri[2] = {i0 + warp * 16 + lane / 4, i0 + warp * 16 + lane / 4 + 8};
    /* rows past the chunk's end take the chunk's smallest cum: every exp() argument below stays <= 0 (no inf * 0) */
    float cum_r[2];
    for (int r = 0; r < 2; r++) cum_r[r] = cumc[min(ri[r], len - 1)];
    ssd3_cp_wait<0>();
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
#pragma unroll
    for (int pt = 0; pt < PT; pt++) {
        wg_pin_acc(acc[pt]);
#pragma unroll
        for (int e = 0; e < 32; e++) acc[pt][e] *= (e & 2) ? e1 : e0;
    }
    /* intra-chunk: the j tiles up to the block's last diagonal one; tile jt + 1 loads while tile jt is used */
    for (int jt = 0; jt <= jlast; jt++) {
        int buf = jt & 1;
        ssd3_cp_wait<0>();
        wg_fence_proxy_async();
        __syncthreads();  /* tile jt landed for all threads; every warp is done with tile jt - 1 (and Hprev) */
        if (jt < jlast) {
            int j0n = (jt + 1) * SSD5_ROWS;
            ssd5_load_tile<SSD5_ROWS, N, NTHR, LINES>(buf ? Bs0 : Bs1, Bg, xbc_stride, j0n, len);
            ssd5_load_tile<SSD5_ROWS, P, NTHR, LINES>(buf ? Xs0 : Xs1, Xg, xbc_stride, j0n, len);
            ssd3_cp_commit();
            if (threadIdx.x < SSD5_ROWS) {
                int j = j0n + threadIdx.x;
                cj[(buf ^ 1) * SSD5_ROWS + threadIdx.x] = j < len ? cumc[j] : 0.f;
                dj[(buf ^ 1) * SSD5_ROWS + threadIdx.x] = j < len ? dtc[j] : 0.f;
            }
        }
        if (jt > rt || !active) continue;  /* past this warpgroup's diagonal (uniform over the warpgroup) */
        const floatX* Bb = buf ? Bs1 : Bs0;
        const floatX* Xb = buf ? Xs1 : Xs0;
        const float* cjb = cj + buf * SSD5_ROWS;
        const float* djb = dj + buf * SSD5_ROWS;
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
                s[e] *= __expf(cum_r[(e >> 1) & 1] - cjb[jj]) * djb[jj];
            }
        } else {
#pragma unroll
            for (int e = 0; e < 32; e++) {
                int jj = 8 * (e / 4) + 2 * tig + (e & 1), r = (e >> 1) & 1;
                s[e] = jt * SSD5_ROWS + jj <= ri[r] ? s[e] * __expf(cum_r[r] - cjb[jj]) * djb[jj] : 0.f;
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
#else
    if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0)
        printf("ssd5_scan_fwd_kernel: built without the sm_90a target (wgmma); build with "
               "-gencode=arch=compute_90a,code=sm_90a, or set ssd_fast_version = 4\n");
    __trap();
#endif
}

/* ------------------------------------------------------------------------------------------------------------ */
/* version 6 (bf16 build, sm_90a), the wgmma ports that did NOT pay: the chunk-state kernel and the backward's dC
   kernel on wgmma. Both pass every check but measured slower than version 4's mma.sync kernels on the H100 (Q = 128,
   B=8 T=2048: chunk state 107 against 84 us, dC 333 against 308 us; dev/cuda/NOTES_ssd.md, "Version 6"), so they
   are off by default (ssd6_parts bits 1 and 2; dev/cuda/ssd.cu's "parts=7 6" runs them). Version 6's default part
   is the two-heads-per-block forward (ssd6_scan_fwd_kernel, below them).
   ssd6_chunk_state_kernel  out (64 rows p, all N) = sum_j (w_j U_j)^T V_j for one (b, h, chunk), one warpgroup:
       A = (w_j U_j)^T from registers: each warp reads raw U fragments with ldmatrix.trans (a padded row-major
       tile, as version 4), scales them by w_j and splits them in hi + lo bf16 (the fp32 states keep ~16 bits,
       as the backward's cancellation rules need); B = the V tile (rows j, n contiguous: MN-major core matrices).
       Per 64-row j tile: 4 k16 steps x N/64 x 2 (hi, lo) wgmma m64n64k16, issued together, one wait.
   ssd6_bwd_dc_kernel       version 4's dC kernel (hg heads of a group per block, dC_i summed over them in
       registers) with the products on wgmma, laid out as version 5's forward with (C, B, x) -> (dy, x, B):
         state term  t = dy_i (Hprev hi + Hprev lo) per 64 columns n (A = dy_i tile, B = Hprev, MN-major),
                     t *= exp(cum_i) per row; rowi = t . C_i; acc += t
         per j tile  WD = dy_i x_j^T (both K-major), masked j <= i, scaled by exp(cum_i - cum_j) dt_j in fp32
                     registers, repacked to bf16 as the A operand of acc += WD B_j (B_j tile MN-major)
       C_i stays in shared memory for all the block's heads (version 4 reloaded it per head).
   Both take P a multiple of 64 (dC: P in {64, 128}) and N in {64, 128}; other shapes run version 4's kernels. */
#define SSD6_ULD 72  /* U tile row stride: 64 + 8 (the 8 rows of an ldmatrix land in 8 different bank groups) */
static inline size_t ssd6_smem_chunk_state(int N) {
    return 2 * (size_t)SSD5_ROWS * (SSD6_ULD + N) * sizeof(floatX) + 2 * SSD5_ROWS * sizeof(float);
}
template <int NT>  /* N = 64 NT; grid (nchunks, B*H, P/64); 4 blocks per SM */
__global__ static void __launch_bounds__(SSD3_THREADS, 4)
ssd6_chunk_state_kernel(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0,
                        const float* dt, const float* cum, int mode, int T, int H, int P, int G, int Q) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int N = 64 * NT;
    constexpr uint32_t VLBO = N * 16;  /* MN-major V tile: bytes between 8-row (k) groups */
    extern __shared__ __align__(128) unsigned char ssd6_smem[];
    floatX* Us = (floatX*)ssd6_smem;                    /* 2 x (64, SSD6_ULD) U rows j, columns p0.. */
    floatX* Vs = Us + 2 * SSD5_ROWS * SSD6_ULD;         /* 2 x (64 x N) core matrices, V rows j */
    float* w_s = (float*)(Vs + 2 * SSD5_ROWS * N);      /* 2 x 64 */
    int nch = ssd_nchunks(T, Q), c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int p0 = blockIdx.z * 64, t0 = c * Q, len = min(Q, T - t0);
    const float* dtc = dt + (size_t)bh * T + t0;
    const float* cumc = cum + (size_t)bh * T + t0;
    float cum_last = cumc[len - 1];
    const floatX* Ub = U + (size_t)(b * T + t0) * u_stride + h * P + p0;
    const floatX* Vb = V + (size_t)(b * T + t0) * v_stride + v_col0 + g * N;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tig = lane % 4;
    int ntj = CEIL_DIV(len, SSD5_ROWS);
    float acc[NT][32];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
#pragma unroll
        for (int e = 0; e < 32; e++) acc[nt][e] = 0.f;
        wg_pin_acc(acc[nt]);
    }
    for (int jt = 0; jt <= ntj; jt++) {
        if (jt < ntj) {  /* issue tile jt into buffer jt & 1 (free: the wgmmas of tile jt - 2 were waited for) */
            int bf = jt & 1, j0 = jt * SSD5_ROWS;
            ssd3_load_tile(Us + bf * SSD5_ROWS * SSD6_ULD, SSD6_ULD, Ub, u_stride, j0, len, 64);
            ssd5_load_tile<SSD5_ROWS, N, SSD3_THREADS, 1>(Vs + bf * SSD5_ROWS * N, Vb, v_stride, j0, len);
            ssd3_cp_commit();
            if (threadIdx.x < SSD5_ROWS) {
                int j = j0 + threadIdx.x;
                w_s[bf * SSD5_ROWS + threadIdx.x] =
                    j < len ? (mode == 0 ? dtc[j] * expf(cum_last - cumc[j]) : expf(cumc[j])) : 0.f;
            }
        }
        if (jt == 0) continue;
        if (jt < ntj) ssd3_cp_wait<1>(); else ssd3_cp_wait<0>();
        wg_fence_proxy_async();
        __syncthreads();  /* tile jt - 1 (and its w_j) visible to every thread */
        int buf = (jt - 1) & 1;
        const float* wb = w_s + buf * SSD5_ROWS;
        const floatX* ap = Us + buf * SSD5_ROWS * SSD6_ULD + ((lane % 8) + (lane / 16) * 8) * SSD6_ULD + warp * 16 +
                           ((lane / 8) % 2) * 8;
        const floatX* vb = Vs + buf * SSD5_ROWS * N;
        uint32_t ah[4][4], al[4][4];  /* A = (w_j U_j)^T, k16 steps ks: rows p (16 per warp), k = j */
#pragma unroll
        for (int ks = 0; ks < 4; ks++) {
            uint32_t raw[4];
            ssd3_ldsm_t(raw, ap + ks * 16 * SSD6_ULD);
            int k0 = 16 * ks;
            float w0 = wb[k0 + 2 * tig], w1 = wb[k0 + 2 * tig + 1], w2 = wb[k0 + 8 + 2 * tig], w3 = wb[k0 + 9 + 2 * tig];
#pragma unroll
            for (int r = 0; r < 4; r++) {
                __nv_bfloat162 v = *(__nv_bfloat162*)&raw[r];
                float lo = __low2float(v) * (r < 2 ? w0 : w2), hi = __high2float(v) * (r < 2 ? w1 : w3);
                __nv_bfloat162 vh = __floats2bfloat162_rn(lo, hi);
                ah[ks][r] = *(uint32_t*)&vh;
                al[ks][r] = ssd_pack_bf16(lo - __low2float(vh), hi - __high2float(vh));
            }
        }
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < 4; ks++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                uint64_t dv = wg_desc(vb + wg_tile_offset(16 * ks, 64 * nt, N), VLBO, 128);
                wg_mma_rs<1>(acc[nt], ah[ks], dv);
                wg_mma_rs<1>(acc[nt], al[ks], dv);
            }
        wg_commit();
        wg_wait<0>();
#pragma unroll
        for (int nt = 0; nt < NT; nt++) wg_pin_acc(acc[nt]);
        __syncthreads();  /* every warp is done with buffer buf before the next iteration loads into it */
    }
    float* o = out + ssd_state_off(b, c, h, nch, H, P * N);
    int p = p0 + warp * 16 + lane / 4;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int q = 0; q < 8; q++) {
            int n = 64 * nt + 8 * q + 2 * tig;
            *(float2*)(o + (size_t)p * N + n) = make_float2(acc[nt][4 * q], acc[nt][4 * q + 1]);
            *(float2*)(o + (size_t)(p + 8) * N + n) = make_float2(acc[nt][4 * q + 2], acc[nt][4 * q + 3]);
        }
#else
    if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0)
        printf("ssd6_chunk_state_kernel: built without the sm_90a target (wgmma); build with "
               "-gencode=arch=compute_90a,code=sm_90a, or set ssd_fast_version = 4\n");
    __trap();
#endif
}

/* the fp32 (R, NC) state into two bf16 core-matrix tiles hi and lo = the rounding error of hi (rows p, columns n) */
template <int R, int NC, int NTHR>
__device__ static inline void ssd6_load_state_split(floatX* hi, floatX* lo, const float* m) {
#pragma unroll 2
    for (int idx = threadIdx.x; idx < R * NC / 8; idx += NTHR) {
        int r = (idx / NC) * 8 + (idx & 7), v = (idx >> 3) % (NC / 8);
        const float4* src = (const float4*)(m + (size_t)r * NC + v * 8);
        float4 q0 = src[0], q1 = src[1];
        float f[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
        uint32_t oh[4], ol[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            __nv_bfloat162 vh = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
            oh[k] = *(uint32_t*)&vh;
            ol[k] = ssd_pack_bf16(f[2 * k] - __low2float(vh), f[2 * k + 1] - __high2float(vh));
        }
        *(uint4*)(hi + idx * 8) = make_uint4(oh[0], oh[1], oh[2], oh[3]);
        *(uint4*)(lo + idx * 8) = make_uint4(ol[0], ol[1], ol[2], ol[3]);
    }
}

/* shared memory (bf16 elements): Ys (64 x P) | Cs (64 x N) | region: Hprev hi, lo (2 x P x N), then the j tiles
   Bs0 (64 x N) Xs0 (64 x P) Bs1 Xs1 | cum_j, dt_j (2 x 64 floats each). P = 64, N = 128: 73 KB, 3 blocks per SM. */
static inline size_t ssd6_smem_dc(int P, int N) {
    size_t region = ssd3_max((size_t)2 * P * N, (size_t)2 * SSD5_ROWS * (N + P));
    return ((size_t)SSD5_ROWS * (P + N) + region) * sizeof(floatX) + 4 * SSD5_ROWS * sizeof(float);
}
#ifndef SSD6_DC_MINBLOCKS
#define SSD6_DC_MINBLOCKS 3
#endif
template <int PT, int NT>  /* P = 64 PT, N = 64 NT; grid (nchunks, B * H/hg, ceil(Q/64)) as version 4's */
__global__ static void __launch_bounds__(SSD3_THREADS, SSD6_DC_MINBLOCKS)
ssd6_bwd_dc_kernel(floatX* dco, int dco_stride, int dco_col0, int direct, float* rowi, const floatX* dy,
                   const floatX* xbc, int xbc_stride, const float* dt, const float* cum, const float* states, int T,
                   int H, int G, int Q, int hg) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int P = 64 * PT, N = 64 * NT;
    constexpr uint32_t PSBO = P * 16;  /* K-major tiles of P columns (dy_i, x_j): bytes between 8-row groups */
    constexpr uint32_t NLBO = N * 16;  /* MN-major tiles of N columns (Hprev, B_j): bytes between 8-row k groups */
    extern __shared__ __align__(128) unsigned char ssd6_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD5_ROWS), nhg = H / hg;
    int c = blockIdx.x, rt = nti - 1 - (int)blockIdx.z, b = blockIdx.y / nhg, hgi = blockIdx.y % nhg, h0 = hgi * hg;
    int g = h0 / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD5_ROWS;
    if (i0 >= len) return;
    int E = H * P;
    floatX* Ys = (floatX*)ssd6_smem;  /* dy rows i of the current head */
    floatX* Cs = Ys + SSD5_ROWS * P;  /* C rows i (the group's: the same for every head of the block) */
    floatX* Rg = Cs + SSD5_ROWS * N;  /* region: Hprev hi, lo; then the j tiles */
    floatX* Hhi = Rg;
    floatX* Hlo = Rg + P * N;
    floatX* Bs0 = Rg;
    floatX* Xs0 = Bs0 + SSD5_ROWS * N;
    floatX* Bs1 = Xs0 + SSD5_ROWS * P;
    floatX* Xs1 = Bs1 + SSD5_ROWS * N;
    float* cj = (float*)(Rg + (2 * P * N > 2 * SSD5_ROWS * (N + P) ? 2 * P * N : 2 * SSD5_ROWS * (N + P)));
    float* dj = cj + 2 * SSD5_ROWS;
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Bg = rows + E + g * N;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tig = lane % 4;
    int rl[2] = {warp * 16 + lane / 4, warp * 16 + lane / 4 + 8};  /* this thread's accumulator rows in the tile */
    int ri[2] = {i0 + rl[0], i0 + rl[1]};
    ssd5_load_tile<SSD5_ROWS, N, SSD3_THREADS, 1>(Cs, rows + E + G * N + g * N, xbc_stride, i0, len);
    float acc[NT][32];  /* dC_i summed over the block's heads */
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
#pragma unroll
        for (int e = 0; e < 32; e++) acc[nt][e] = 0.f;
        wg_pin_acc(acc[nt]);
    }
    for (int hh = 0; hh < hg; hh++) {
        int h = h0 + hh, bh = b * H + h;
        const floatX* Xg = rows + h * P;
        const float* cumc = cum + (size_t)bh * T + t0;
        const float* dtc = dt + (size_t)bh * T + t0;
        if (hh > 0) __syncthreads();  /* the previous head is done with Ys and the region */
        ssd5_load_tile<SSD5_ROWS, P, SSD3_THREADS, 1>(Ys, dy + (size_t)(b * T + t0) * E + h * P, E, i0, len);
        ssd3_cp_commit();
        ssd6_load_state_split<P, N, SSD3_THREADS>(Hhi, Hlo, states + ssd_state_off(b, c, h, nch, H, P * N));
        float cum_r[2];
        for (int r = 0; r < 2; r++) cum_r[r] = ri[r] < len ? cumc[ri[r]] : 0.f;
        ssd3_cp_wait<0>();
        wg_fence_proxy_async();
        __syncthreads();
        /* state term: exp(cum_i) dy_i Hprev (Hprev = hi + lo), its dot with C_i (rowi), 64 columns n at a time */
        float e[2] = {expf(cum_r[0]), expf(cum_r[1])}, pw[2] = {0.f, 0.f};
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            float t[32];
#pragma unroll
            for (int k = 0; k < 32; k++) t[k] = 0.f;
            wg_pin_acc(t);
            wg_fence();
#pragma unroll
            for (int ks = 0; ks < P / 16; ks++) {
                uint64_t da = wg_desc(Ys + ks * 128, 128, PSBO);
                wg_mma_ss<0, 1>(t, da, wg_desc(Hhi + wg_tile_offset(16 * ks, 64 * nt, N), NLBO, 128));
                wg_mma_ss<0, 1>(t, da, wg_desc(Hlo + wg_tile_offset(16 * ks, 64 * nt, N), NLBO, 128));
            }
            wg_commit();
            wg_wait<0>();
            wg_pin_acc(t);
#pragma unroll
            for (int q = 0; q < 8; q++) {
                int n = 64 * nt + 8 * q + 2 * tig;
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    float a0 = t[4 * q + 2 * r] * e[r], a1 = t[4 * q + 2 * r + 1] * e[r];
                    __nv_bfloat162 cv = *(const __nv_bfloat162*)(Cs + wg_tile_offset(rl[r], n, N));
                    pw[r] += a0 * __low2float(cv) + a1 * __high2float(cv);
                    acc[nt][4 * q + 2 * r] += a0;
                    acc[nt][4 * q + 2 * r + 1] += a1;
                }
            }
        }
        pw[0] = ssd3_quad_sum(pw[0]);
        pw[1] = ssd3_quad_sum(pw[1]);
        if (tig == 0)
            for (int r = 0; r < 2; r++)
                if (ri[r] < len) rowi[(size_t)bh * T + t0 + ri[r]] = pw[r];
        __syncthreads();  /* Hprev no longer needed: its space takes the j tiles */
        ssd5_load_tile<SSD5_ROWS, N, SSD3_THREADS, 1>(Bs0, Bg, xbc_stride, 0, len);
        ssd5_load_tile<SSD5_ROWS, P, SSD3_THREADS, 1>(Xs0, Xg, xbc_stride, 0, len);
        ssd3_cp_commit();
        if (threadIdx.x < SSD5_ROWS) {
            int j = threadIdx.x;
            cj[j] = j < len ? cumc[j] : 0.f;
            dj[j] = j < len ? dtc[j] : 0.f;
        }
        for (int jt = 0; jt <= rt; jt++) {
            int buf = jt & 1;
            ssd3_cp_wait<0>();
            wg_fence_proxy_async();
            __syncthreads();  /* tile jt landed for all threads; every warp is done with tile jt - 1 */
            if (jt < rt) {
                int j0n = (jt + 1) * SSD5_ROWS;
                ssd5_load_tile<SSD5_ROWS, N, SSD3_THREADS, 1>(buf ? Bs0 : Bs1, Bg, xbc_stride, j0n, len);
                ssd5_load_tile<SSD5_ROWS, P, SSD3_THREADS, 1>(buf ? Xs0 : Xs1, Xg, xbc_stride, j0n, len);
                ssd3_cp_commit();
                if (threadIdx.x < SSD5_ROWS) {
                    int j = j0n + threadIdx.x;
                    cj[(buf ^ 1) * SSD5_ROWS + threadIdx.x] = j < len ? cumc[j] : 0.f;
                    dj[(buf ^ 1) * SSD5_ROWS + threadIdx.x] = j < len ? dtc[j] : 0.f;
                }
            }
            const floatX* Bb = buf ? Bs1 : Bs0;
            const floatX* Xb = buf ? Xs1 : Xs0;
            const float* cjb = cj + buf * SSD5_ROWS;
            const float* djb = dj + buf * SSD5_ROWS;
            float s[32];
#pragma unroll
            for (int k = 0; k < 32; k++) s[k] = 0.f;
            wg_pin_acc(s);
            wg_fence();
#pragma unroll
            for (int ks = 0; ks < P / 16; ks++)  /* dy_i . x_j */
                wg_mma_ss<0, 0>(s, wg_desc(Ys + ks * 128, 128, PSBO), wg_desc(Xb + ks * 128, 128, PSBO));
            wg_commit();
            wg_wait<0>();
            wg_pin_acc(s);
            /* s[4 q + k]: row ri[k / 2], column jj = 8 q + 2 tig + k % 2 of the j tile; rows past the chunk's end
               are masked before the exp (their cum_r is 0: the exp could overflow) */
#pragma unroll
            for (int k = 0; k < 32; k++) {
                int jj = 8 * (k / 4) + 2 * tig + (k & 1), r = (k >> 1) & 1;
                int ok = jt * SSD5_ROWS + jj <= ri[r] && ri[r] < len;
                s[k] = ok ? s[k] * __expf(cum_r[r] - cjb[jj]) * djb[jj] : 0.f;
            }
            uint32_t sf[4][4];  /* WD as 4 k16 A fragments */
#pragma unroll
            for (int ks = 0; ks < 4; ks++) {
                sf[ks][0] = ssd_pack_bf16(s[8 * ks + 0], s[8 * ks + 1]);
                sf[ks][1] = ssd_pack_bf16(s[8 * ks + 2], s[8 * ks + 3]);
                sf[ks][2] = ssd_pack_bf16(s[8 * ks + 4], s[8 * ks + 5]);
                sf[ks][3] = ssd_pack_bf16(s[8 * ks + 6], s[8 * ks + 7]);
            }
#pragma unroll
            for (int nt = 0; nt < NT; nt++) wg_pin_acc(acc[nt]);
            wg_fence();
#pragma unroll
            for (int ks = 0; ks < 4; ks++)  /* acc += WD B_j */
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
                    wg_mma_rs<1>(acc[nt], sf[ks], wg_desc(Bb + wg_tile_offset(16 * ks, 64 * nt, N), NLBO, 128));
            wg_commit();
            wg_wait<0>();
#pragma unroll
            for (int nt = 0; nt < NT; nt++) wg_pin_acc(acc[nt]);
        }
    }
    int col = direct ? dco_col0 + g * N : hgi * N;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (ri[r] >= len) continue;
        floatX* o = dco + (size_t)(b * T + t0 + ri[r]) * dco_stride + col;
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int q = 0; q < 8; q++)
                *(__nv_bfloat162*)(o + 64 * nt + 8 * q + 2 * tig) =
                    __floats2bfloat162_rn(acc[nt][4 * q + 2 * r], acc[nt][4 * q + 2 * r + 1]);
    }
#else
    if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0)
        printf("ssd6_bwd_dc_kernel: built without the sm_90a target (wgmma); build with "
               "-gencode=arch=compute_90a,code=sm_90a, or set ssd_fast_version = 4\n");
    __trap();
#endif
}

/* version 6's forward: version 5's kernel (2 warpgroups = rows 2a, 2a + 1 of a chunk per block) for HP = 2 heads of
   one group per block. At P = 64 the two heads' x columns, y columns and states are adjacent in memory, so the
   block loads them as version 5 loads one head of P = 128; what the heads share is the C / B side: the C_i and
   B_j tiles are loaded once for both heads (per head, half the C and B bytes from L2 of version 5), and
   S = C_i B_j^T is computed once per (i, j) tile, scaled per head in fp32 registers (exp(cum_i - cum_j) dt_j of
   that head) into that head's bf16 score fragments, then both heads' S x_j products run as one batch. */
/* cum_j, dt_j of j tile jt into buffer nb ([hp][nb][64]) for HP heads whose rows start at base + hp T; thread
   k < 64 HP takes head k / 64, row k % 64; zeros past the chunk's end */
template <int HP>
__device__ static inline void ssd6_load_scalars(float* cj, float* dj, const float* cum, const float* dt, size_t base,
                                                int T, int jt, int nb, int len) {
    if (threadIdx.x < HP * SSD5_ROWS) {
        int hp = threadIdx.x / SSD5_ROWS, jj = threadIdx.x % SSD5_ROWS, j = jt * SSD5_ROWS + jj;
        size_t at = base + (size_t)hp * T + j;
        cj[(hp * 2 + nb) * SSD5_ROWS + jj] = j < len ? cum[at] : 0.f;
        dj[(hp * 2 + nb) * SSD5_ROWS + jj] = j < len ? dt[at] : 0.f;
    }
}
/* version 9 (bf16 build, ssd_fast_version >= 9; the forward scan wherever version 6's runs, the col kernel
   wherever version 8's runs): on an off-diagonal score tile (every row i after every column j) the decay
   exp(cum_i - cum_j) = exp(cum_i - cref) exp(cref - cum_j), cref = cum of the j tile's last row, so both exp()
   arguments stay <= 0 (nothing overflows; where one factor underflows the true product is smaller still) and the
   exps become one per row and one per column (made once per block when the tile is loaded), with no mask: a
   multiply per score element instead of a subtraction, an exp and a masked select. The diagonal tiles keep the
   per-element form (a factor there would be exp(> 0)). In the forward, the diagonal tile reads a column pair's
   cum and dt as one 16-byte shared load per head (version 6: 4 scalar loads).
   The j tile's per-column factors for HP heads into buffer nb, laid out for wide shared loads:
   cd[hp][nb][pair] = {cum_j, cum_j+1, dt_j, dt_j+1} (the diagonal tile: one 16-byte load per column pair and
   head), wj[hp][nb][jj] = dt_j exp(cref - cum_j) with cref = cum of the tile's last row inside the chunk (the
   off-diagonal tiles: one 8-byte load per pair), cr[hp][nb] = cref. Every exp() argument is <= 0 (j <= that row);
   zeros past the chunk's end. */
/* column jj of scalar slot q: {cum_j, dt_j} into its pair's 16-byte group of cd, wj = dt_j exp(cref - cum_j)
   (0 past the chunk's end), cr = cref (written by column 0) */
__device__ static inline void ssd9_store_scalars(float* cd, float* wj, float* cr, int q, int jj, float c, float d,
                                                 float cref, int valid) {
    cd[(q * (SSD5_ROWS / 2) + jj / 2) * 4 + (jj & 1)] = c;
    cd[(q * (SSD5_ROWS / 2) + jj / 2) * 4 + 2 + (jj & 1)] = d;
    wj[q * SSD5_ROWS + jj] = valid ? d * __expf(cref - c) : 0.f;
    if (jj == 0) cr[q] = cref;
}
template <int HP>
__device__ static inline void ssd9_load_scalars(float* cd, float* wj, float* cr, const float* cum, const float* dt,
                                                size_t base, int T, int jt, int nb, int len) {
    if (threadIdx.x < HP * SSD5_ROWS) {
        int hp = threadIdx.x / SSD5_ROWS, jj = threadIdx.x % SSD5_ROWS, j = jt * SSD5_ROWS + jj;
        size_t at = base + (size_t)hp * T;
        float cref = cum[at + min(jt * SSD5_ROWS + SSD5_ROWS - 1, len - 1)];  /* one address per warp: broadcast */
        float c = j < len ? cum[at + j] : 0.f, d = j < len ? dt[at + j] : 0.f;
        ssd9_store_scalars(cd, wj, cr, hp * 2 + nb, jj, c, d, cref, j < len);
    }
}
/* version 11 (bf16 build, ssd_fast_version >= 11; wherever version 9's forward scan runs): the forward scan's global
   loads are all issued in the prologue, together, so one memory latency precedes the first product instead of
   several, and none is left inside the j-tile loop:
   - the per-column factors of every j tile the block uses (0..jlast: at most Q / 64 <= 4) are built once into their
     own slots ([hp][tile] instead of version 9's two [hp][buffer] slots refilled per tile). In version 9 warpgroup
     0 loaded tile jt + 1's cum / dt (synchronous global loads) after the loop's barrier, then waited for them
     before its own tile, and the next barrier waited for warpgroup 0.
   - the fp32 Hprev of the HP heads (64 KB per block at P = 64, N = 128) is read with all of a thread's 16-byte
     loads in registers before the first bf16 conversion, through the read-only path (__ldg: the loads may move
     above the shared-memory stores of the scalars). Version 9's ssd5_load_state, in its SASS: one iteration's two
     16-byte loads, then that iteration's shared-memory store, 4 times over (2 loads in flight per thread, not 8).
   Same arithmetic as version 9 (bitwise the same y: the factors are the same fp32 values, made by the same code
   in another order). ssd11_load_prologue: thread k < HP 64 ntl of the scalars takes head k / (64 ntl), tile
   (k / 64) % ntl, row k % 64, zeros past the chunk's end (ntl = jlast + 1 tiles; slot q = hp nsl + tile). */
template <int R, int NC, int NTHR, int HP>
__device__ static inline void ssd11_load_prologue(floatX* Hdst, const float* m, float* cd, float* wj, float* cr,
                                                  const float* cum, const float* dt, size_t base, int T, int ntl,
                                                  int nsl, int len) {
    constexpr int ITER = R * NC / 8 / NTHR;  /* 16-byte load pairs per thread: 4 at R = 128, NC = 128, NTHR = 512 */
    static_assert(R * NC / 8 % NTHR == 0, "ssd11_load_prologue: the state tile must split evenly over the threads");
    float4 q[ITER][2];
#pragma unroll
    for (int it = 0; it < ITER; it++) {  /* all the state loads first: 8 in flight per thread */
        int idx = threadIdx.x + it * NTHR, r = (idx / NC) * 8 + (idx & 7), v = (idx >> 3) % (NC / 8);
        const float4* src = (const float4*)(m + (size_t)r * NC + v * 8);
        q[it][0] = __ldg(src);
        q[it][1] = __ldg(src + 1);
    }
    for (int k = threadIdx.x; k < HP * SSD5_ROWS * ntl; k += NTHR) {  /* one pass at Q <= 256 (HP = 2) */
        int hp = k / (SSD5_ROWS * ntl), jt = (k / SSD5_ROWS) % ntl, jj = k % SSD5_ROWS, j = jt * SSD5_ROWS + jj;
        size_t at = base + (size_t)hp * T;
        float cref = __ldg(cum + at + min(jt * SSD5_ROWS + SSD5_ROWS - 1, len - 1));  /* one address per warp */
        float c = j < len ? __ldg(cum + at + j) : 0.f, d = j < len ? __ldg(dt + at + j) : 0.f;
        ssd9_store_scalars(cd, wj, cr, hp * nsl + jt, jj, c, d, cref, j < len);
    }
#pragma unroll
    for (int it = 0; it < ITER; it++) {
        int idx = threadIdx.x + it * NTHR;
        uint4 o = make_uint4(ssd_pack_bf16(q[it][0].x, q[it][0].y), ssd_pack_bf16(q[it][0].z, q[it][0].w),
                             ssd_pack_bf16(q[it][1].x, q[it][1].y), ssd_pack_bf16(q[it][1].z, q[it][1].w));
        *(uint4*)(Hdst + idx * 8) = o;
    }
}
template <int NK, int HP, bool V9, bool V11 = false>  /* N = 16 NK, P = 64 per head, HP heads per block; V9, V11:
                                                         see "version 9", "version 11" */
__global__ static void __launch_bounds__(SSD3_THREADS * 2, 2)
ssd6_scan_fwd_kernel(floatX* y, const floatX* xbc, int xbc_stride, const float* dt, const float* cum,
                     const float* states, const float* Dskip, int T, int H, int G, int Q) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int P = 64, PW = 64 * HP, N = 16 * NK, NTHR = SSD3_THREADS * 2, WGS = 2;
    constexpr uint32_t KSBO = N * 16;   /* K-major tiles of N columns: bytes between 8-row groups */
    constexpr uint32_t XLBO = PW * 16;  /* the x tile (MN-major, PW columns): bytes between 8-row (k) groups */
    extern __shared__ __align__(128) unsigned char ssd6_smem[];
    int nch = ssd_nchunks(T, Q), ngr = CEIL_DIV(CEIL_DIV(Q, SSD5_ROWS), WGS), nhb = H / HP;
    int c = blockIdx.x / ngr, rg = blockIdx.x % ngr, b = blockIdx.y / nhb, h0 = (blockIdx.y % nhb) * HP;
    int g = h0 / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), ib = rg * WGS * SSD5_ROWS;
    if (ib >= len) return;
    int wg = threadIdx.x / SSD3_THREADS, rt = rg * WGS + wg, i0 = rt * SSD5_ROWS;
    int jlast = min(rg * WGS + WGS, CEIL_DIV(len, SSD5_ROWS)) - 1, active = i0 < len;
    int E = H * P;
    floatX* Cs = (floatX*)ssd6_smem;          /* 64 WGS rows: warpgroup wg's are rows 64 wg.. */
    floatX* Bs0 = Cs + WGS * SSD5_ROWS * N;
    floatX* Xs0 = Bs0 + SSD5_ROWS * N;
    floatX* Hs = Xs0 + SSD5_ROWS * PW;  /* Hprev of the HP heads ((HP P) x N), then buffer 1: */
    floatX* Bs1 = Hs;
    floatX* Xs1 = Hs + SSD5_ROWS * N;
    float* cj = (float*)(Hs + (PW * N > SSD5_ROWS * (N + PW) ? PW * N : SSD5_ROWS * (N + PW)));  /* [hp][buf][64] */
    float* dj = cj + HP * 2 * SSD5_ROWS;                                                        /* likewise dt_j */
    /* version 9: cd ([hp][buf][32 pairs][4]) takes the place of cj and dj, then wj ([hp][buf][64]), cr ([hp][buf]);
       version 11: nsl = Q / 64 slots per head (one per j tile) instead of 2 buffers (ssd11_smem_fwd) */
    int nsl = V11 ? max(2, CEIL_DIV(Q, SSD5_ROWS)) : 2;  /* at least version 9's 2 (Q = 64: 1 tile) */
    float* cd = cj;
    float* wj = cj + HP * nsl * 2 * SSD5_ROWS;
    float* cr = wj + HP * nsl * SSD5_ROWS;
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Bg = rows + E + g * N;
    const floatX* Xg = rows + h0 * P;
    ssd5_load_tile<WGS * SSD5_ROWS, N, NTHR, 1>(Cs, rows + E + G * N + g * N, xbc_stride, ib, len);
    ssd5_load_tile<SSD5_ROWS, N, NTHR, 1>(Bs0, Bg, xbc_stride, 0, len);
    ssd5_load_tile<SSD5_ROWS, PW, NTHR, 1>(Xs0, Xg, xbc_stride, 0, len);
    ssd3_cp_commit();
    if (V11)
        ssd11_load_prologue<PW, N, NTHR, HP>(Hs, states + ssd_state_off(b, c, h0, nch, H, P * N), cd, wj, cr, cum,
                                             dt, (size_t)(b * H + h0) * T + t0, T, jlast + 1, nsl, len);
    else {
        if (V9) ssd9_load_scalars<HP>(cd, wj, cr, cum, dt, (size_t)(b * H + h0) * T + t0, T, 0, 0, len);
        else ssd6_load_scalars<HP>(cj, dj, cum, dt, (size_t)(b * H + h0) * T + t0, T, 0, 0, len);
        ssd5_load_state<PW, N, NTHR>(Hs, states + ssd_state_off(b, c, h0, nch, H, P * N));
    }
    const floatX* Cw = Cs + wg * SSD5_ROWS * N;
    int warp = (threadIdx.x % SSD3_THREADS) / 32, lane = threadIdx.x % 32, tig = lane % 4;
    int ri[2] = {i0 + warp * 16 + lane / 4, i0 + warp * 16 + lane / 4 + 8};
    /* rows past the chunk's end take the chunk's smallest cum: every exp() argument below stays <= 0 (no inf * 0) */
    float cum_r[HP][2];
#pragma unroll
    for (int hp = 0; hp < HP; hp++)
        for (int r = 0; r < 2; r++) {
            const float* at = cum + (size_t)(b * H + h0 + hp) * T + t0 + min(ri[r], len - 1);
            cum_r[hp][r] = V11 ? __ldg(at) : *at;  /* V11: read-only path, free to move above the prologue's stores */
        }
    ssd3_cp_wait<0>();
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
#pragma unroll
        for (int e = 0; e < 32; e++) acc[hp][e] *= (e & 2) ? e1 : e0;
    }
    /* intra-chunk: the j tiles up to the block's last diagonal one; tile jt + 1 loads while tile jt is used */
    for (int jt = 0; jt <= jlast; jt++) {
        int buf = jt & 1;
        ssd3_cp_wait<0>();
        wg_fence_proxy_async();
        __syncthreads();  /* tile jt landed for all threads; every warp is done with tile jt - 1 (and Hprev) */
        if (jt < jlast) {
            int j0n = (jt + 1) * SSD5_ROWS;
            ssd5_load_tile<SSD5_ROWS, N, NTHR, 1>(buf ? Bs0 : Bs1, Bg, xbc_stride, j0n, len);
            ssd5_load_tile<SSD5_ROWS, PW, NTHR, 1>(buf ? Xs0 : Xs1, Xg, xbc_stride, j0n, len);
            ssd3_cp_commit();
            if (V11) {}  /* every tile's scalars are in shared memory since the prologue */
            else if (V9) ssd9_load_scalars<HP>(cd, wj, cr, cum, dt, (size_t)(b * H + h0) * T + t0, T, jt + 1, buf ^ 1, len);
            else ssd6_load_scalars<HP>(cj, dj, cum, dt, (size_t)(b * H + h0) * T + t0, T, jt + 1, buf ^ 1, len);
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
        int diag = jt == rt, sl = V11 ? jt : buf;  /* this tile's scalar slot (per head: hp nsl + sl) */
        if (V9 && !diag) {
            /* off-diagonal tile (every j < every i): exp(cum_i - cum_j) = exp(cum_i - cref) exp(cref - cum_j) with
               cref = cum of the tile's last row (< i0: the tile is whole), both arguments <= 0; no mask. Rows past
               the chunk's end have cum_r = the chunk's last cum, also <= cref. 2 exps per head instead of 32. */
            float rf[HP][2];
#pragma unroll
            for (int hp = 0; hp < HP; hp++)
#pragma unroll
                for (int r = 0; r < 2; r++) rf[hp][r] = __expf(cum_r[hp][r] - cr[hp * nsl + sl]);
#pragma unroll
            for (int ks = 0; ks < 4; ks++)
#pragma unroll
                for (int k = 0; k < 8; k += 2) {
                    int e = 8 * ks + k, jj = 8 * (e / 4) + 2 * tig, r = (e >> 1) & 1;
#pragma unroll
                    for (int hp = 0; hp < HP; hp++) {
                        float2 w = *(const float2*)(wj + (hp * nsl + sl) * SSD5_ROWS + jj);
                        sf[hp][ks][k / 2] = ssd_pack_bf16(s[e] * rf[hp][r] * w.x, s[e + 1] * rf[hp][r] * w.y);
                    }
                }
        } else if (V9) {  /* diagonal tile: the masked per-element decay, cum_j / dt_j of a pair in one load */
#pragma unroll
            for (int ks = 0; ks < 4; ks++)
#pragma unroll
                for (int k = 0; k < 8; k += 2) {
                    int e = 8 * ks + k, jj = 8 * (e / 4) + 2 * tig, r = (e >> 1) & 1;
                    int ok0 = jt * SSD5_ROWS + jj <= ri[r], ok1 = jt * SSD5_ROWS + jj + 1 <= ri[r];
#pragma unroll
                    for (int hp = 0; hp < HP; hp++) {
                        float4 q = *(const float4*)(cd + ((hp * nsl + sl) * (SSD5_ROWS / 2) + jj / 2) * 4);
                        float v0 = ok0 ? s[e] * __expf(cum_r[hp][r] - q.x) * q.z : 0.f;
                        float v1 = ok1 ? s[e + 1] * __expf(cum_r[hp][r] - q.y) * q.w : 0.f;
                        sf[hp][ks][k / 2] = ssd_pack_bf16(v0, v1);
                    }
                }
        } else
#pragma unroll
        for (int ks = 0; ks < 4; ks++)
#pragma unroll
            for (int k = 0; k < 8; k += 2) {
                int e = 8 * ks + k, jj = 8 * (e / 4) + 2 * tig, r = (e >> 1) & 1;
                int ok0 = !diag || jt * SSD5_ROWS + jj <= ri[r], ok1 = !diag || jt * SSD5_ROWS + jj + 1 <= ri[r];
#pragma unroll
                for (int hp = 0; hp < HP; hp++) {
                    const float* cjb = cj + (hp * 2 + buf) * SSD5_ROWS;
                    const float* djb = dj + (hp * 2 + buf) * SSD5_ROWS;
                    float v0 = ok0 ? s[e] * __expf(cum_r[hp][r] - cjb[jj]) * djb[jj] : 0.f;
                    float v1 = ok1 ? s[e + 1] * __expf(cum_r[hp][r] - cjb[jj + 1]) * djb[jj + 1] : 0.f;
                    sf[hp][ks][k / 2] = ssd_pack_bf16(v0, v1);
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
#else
    if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0)
        printf("ssd6_scan_fwd_kernel: built without the sm_90a target (wgmma); build with "
               "-gencode=arch=compute_90a,code=sm_90a, or set ssd_fast_version = 5\n");
    __trap();
#endif
}
/* shared memory of ssd6_scan_fwd_kernel: version 5's at P = 64 HP, plus the per-head cum_j, dt_j */
static inline size_t ssd6_smem_fwd(int N, int HP) {
    return ssd5_smem_fwd(64 * HP, N, 2) + (size_t)(HP - 1) * 4 * SSD5_ROWS * sizeof(float);
}
/* version 9 adds wj (HP x 2 x 64 floats) and cr (HP x 2, padded to 16 bytes) after cd (= cj, dj) */
static inline size_t ssd9_smem_fwd(int N, int HP) {
    return ssd6_smem_fwd(N, HP) + ((size_t)HP * 2 * SSD5_ROWS + 4 * HP) * sizeof(float);
}

/* version 11: cd, wj, cr with max(2, Q / 64) slots per head instead of 2 (cr padded to 16 bytes per slot); nsl
   as in ssd6_scan_fwd_kernel (at least 2: the terms below take version 9's 2 buffers as their base) */
static inline size_t ssd11_smem_fwd(int N, int HP, int Q) {
    size_t nsl = (size_t)ssd3_max(2, CEIL_DIV(Q, SSD5_ROWS));
    return ssd6_smem_fwd(N, HP) + ((size_t)HP * (nsl - 2) * 2 * SSD5_ROWS + (size_t)HP * nsl * SSD5_ROWS +
                                   4 * HP * nsl) * sizeof(float);  /* cd past version 6's 2 slots, wj, cr */
}

/* ------------------------------------------------------------------------------------------------------------ */
/* launchers */

/* version 6's kernels run where ssd_fast_version >= 6 and their compile-time widths hold (ssd6_parts) */
static inline int ssd6_takes_chunk_state(int P, int N) {
    return ssd_fast_version >= 6 && (ssd6_parts & 2) && P % 64 == 0 && (N == 64 || N == 128);
}
static inline int ssd6_takes_dc(int P, int N) {
    return ssd_fast_version >= 6 && (ssd6_parts & 4) && (P == 64 || P == 128) && (N == 64 || N == 128);
}
template <int PT, int NT>
static void ssd6_launch_dc_t(floatX* dco, int dco_stride, int dco_col0, int direct, float* rowi, const floatX* dy,
                             const floatX* xbc, int xbc_stride, SSDSaved s, dim3 grid, int T, int H, int G, int Q,
                             int hg, cudaStream_t stream) {
    size_t smem = ssd6_smem_dc(64 * PT, 64 * NT);
    ssd_set_smem((const void*)ssd6_bwd_dc_kernel<PT, NT>, smem);
    ssd6_bwd_dc_kernel<PT, NT><<<grid, SSD3_THREADS, smem, stream>>>(dco, dco_stride, dco_col0, direct, rowi, dy, xbc,
                                                                     xbc_stride, s.dt, s.cum, s.states, T, H, G, Q, hg);
    cudaCheckLast();
}
static void ssd6_launch_dc(floatX* dco, int dco_stride, int dco_col0, int direct, float* rowi, const floatX* dy,
                           const floatX* xbc, int xbc_stride, SSDSaved s, dim3 grid, int T, int H, int P, int N, int G,
                           int Q, int hg, cudaStream_t stream) {
    if (P == 64 && N == 128)
        ssd6_launch_dc_t<1, 2>(dco, dco_stride, dco_col0, direct, rowi, dy, xbc, xbc_stride, s, grid, T, H, G, Q, hg, stream);
    else if (P == 64)
        ssd6_launch_dc_t<1, 1>(dco, dco_stride, dco_col0, direct, rowi, dy, xbc, xbc_stride, s, grid, T, H, G, Q, hg, stream);
    else if (N == 128)
        ssd6_launch_dc_t<2, 2>(dco, dco_stride, dco_col0, direct, rowi, dy, xbc, xbc_stride, s, grid, T, H, G, Q, hg, stream);
    else
        ssd6_launch_dc_t<2, 1>(dco, dco_stride, dco_col0, direct, rowi, dy, xbc, xbc_stride, s, grid, T, H, G, Q, hg, stream);
}
/* version 6's forward: 2 heads of a group per block where P = 64, N in {64, 128}, H/G even (ssd6_parts bit 0) */
static inline int ssd6_takes_fwd(int H, int P, int N, int G) {
    return ssd_fast_version >= 6 && (ssd6_parts & 1) && P == 64 && (N == 64 || N == 128) && (H / G) % 2 == 0;
}
template <int NK, bool V9, bool V11>
static void ssd6_launch_fwd_t(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                              int T, int H, int G, int Q, cudaStream_t stream) {
    size_t smem = V11 ? ssd11_smem_fwd(16 * NK, 2, Q) : V9 ? ssd9_smem_fwd(16 * NK, 2) : ssd6_smem_fwd(16 * NK, 2);
    ssd_set_smem((const void*)ssd6_scan_fwd_kernel<NK, 2, V9, V11>, smem);
    dim3 grid(ssd_nchunks(T, Q) * CEIL_DIV(CEIL_DIV(Q, SSD5_ROWS), 2), B * H / 2);
    ssd6_scan_fwd_kernel<NK, 2, V9, V11><<<grid, SSD3_THREADS * 2, smem, stream>>>(y, xbc, xbc_stride, s.dt, s.cum,
                                                                                   s.states, Dskip, T, H, G, Q);
    cudaCheckLast();
    if (V9) ssd9_fwd_runs++;
    if (V11) ssd11_fwd_runs++;
}
/* version 5 runs where version 3's layout rules hold, P and N are among its compile-time widths and the saved
   states are 16-byte aligned (B * H * T even: they follow 2 * B * H * T floats of dt and cum) */
static inline int ssd5_takes(int P, int N) { return (P == 64 || P == 128) && (N == 64 || N == 128); }
template <int PT, int NK, int WGS, int LINES>
static void ssd5_launch_fwd_t(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                              int T, int H, int G, int Q, cudaStream_t stream) {
    size_t smem = ssd5_smem_fwd(64 * PT, 16 * NK, WGS);
    ssd_set_smem((const void*)ssd5_scan_fwd_kernel<PT, NK, WGS, LINES>, smem);
    dim3 grid(ssd_nchunks(T, Q) * CEIL_DIV(CEIL_DIV(Q, SSD5_ROWS), WGS), B * H);
    ssd5_scan_fwd_kernel<PT, NK, WGS, LINES><<<grid, SSD3_THREADS * WGS, smem, stream>>>(
        y, xbc, xbc_stride, s.dt, s.cum, s.states, Dskip, T, H, G, Q);
    cudaCheckLast();
}
template <int WGS, int LINES>
static void ssd5_launch_fwd_w(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                              int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
    if (P == 64 && N == 128) ssd5_launch_fwd_t<1, 8, WGS, LINES>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
    else if (P == 64) ssd5_launch_fwd_t<1, 4, WGS, LINES>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
    else if (N == 128) ssd5_launch_fwd_t<2, 8, WGS, LINES>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
    else ssd5_launch_fwd_t<2, 4, WGS, LINES>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
}
static void ssd5_launch_fwd(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                            int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
    if (ssd6_takes_fwd(H, P, N, G)) {
        int v9 = ssd_fast_version >= 9 && (ssd9_parts & 1), v11 = v9 && ssd_fast_version >= 11 && ssd11_fwd;
        if (N == 128 && v11) ssd6_launch_fwd_t<8, true, true>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
        else if (N == 128 && v9) ssd6_launch_fwd_t<8, true, false>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
        else if (N == 128) ssd6_launch_fwd_t<8, false, false>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
        else if (v11) ssd6_launch_fwd_t<4, true, true>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
        else if (v9) ssd6_launch_fwd_t<4, true, false>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
        else ssd6_launch_fwd_t<4, false, false>(y, xbc, xbc_stride, s, Dskip, B, T, H, G, Q, stream);
        return;
    }
    if (ssd5_wgs == 2 && ssd5_lines)
        ssd5_launch_fwd_w<2, 1>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
    else if (ssd5_wgs == 2) ssd5_launch_fwd_w<2, 0>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
    else if (ssd5_lines) ssd5_launch_fwd_w<1, 1>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
    else ssd5_launch_fwd_w<1, 0>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
}
#endif /* !ENABLE_FP32 */

#endif /* SSD_LAB_WGMMA_CUH */
