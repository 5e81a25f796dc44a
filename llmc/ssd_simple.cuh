/*
 * ssd_simple.cuh: the simple tile kernels (lab version 2): the fp32 build's path, and the bf16 build's for the
 * shapes the 64-row tile kernels refuse (P or N not a multiple of 16, rows not 16-byte aligned: ssd_tiles_take).
 * 32-row tiles in fp32 shared memory; every product goes through ssd_gemm32: tensor cores (mma.sync, bf16
 * operands, fp32 accumulation in shared memory) in the bf16 build, fp32 dot products with -DENABLE_FP32.
 * Kernels, by the formulas at the top of llmc/ssd.cuh (the chunk states and state passes: llmc/ssd_state.cuh):
 *   ssd_simple_fwd_scan_kernel   y for 32 rows i of one (b, h, chunk): inter-chunk term, then the masked intra part
 *   ssd_simple_bwd_dxdb_kernel   for 32 rows j: dx_j, the per-head dB_j, x_j.dxs_j, x_j.(state part), x_j.dy_j
 *   ssd_simple_bwd_dc_kernel     for 32 rows i: the per-head dC_i, dy_i.ssd_i and the column sums of the same W
 *   ssd_simple_bwd_dt_kernel     dcum, its reverse cumsum, ddt_raw and the per-chunk parameter partials
 *   ssd_simple_group_sum_kernel  dB, dC of a group: the per-head float copies added in head order
 */
#ifndef MAMBA2_SSD_SIMPLE_CUH
#define MAMBA2_SSD_SIMPLE_CUH

#ifndef MAMBA2_SSD_CUH
#error "llmc/ssd_simple.cuh is a part of llmc/ssd.cuh: include llmc/ssd.cuh instead"
#endif

/* load 32 rows of `ncols` floatX columns starting at row r0 of a row-major matrix into shared memory with row
   stride ld (ncols + 1: the +1 keeps column walks across rows free of bank conflicts); rows past nvalid are 0.
   16-byte loads where the layout allows (it does for the model's shapes), so few loads are in flight per tile. */
__device__ static inline void ssd_load_rows(float* dst, int ld, const floatX* src, size_t src_stride, int r0,
                                            int nvalid, int ncols) {
    const int VEC = 16 / (int)sizeof(floatX);
    if (ncols % VEC == 0 && src_stride % VEC == 0 && ((uintptr_t)src) % 16 == 0) {
        int nv = ncols / VEC;
#pragma unroll 4
        for (int idx = threadIdx.x; idx < SSD_TILE * nv; idx += blockDim.x) {
            int r = idx / nv, v = idx % nv;
            float4 raw = make_float4(0.f, 0.f, 0.f, 0.f);
            if (r0 + r < nvalid) raw = *(const float4*)(src + (size_t)(r0 + r) * src_stride + v * VEC);
            const floatX* e = (const floatX*)&raw;
#pragma unroll
            for (int k = 0; k < VEC; k++) dst[r * ld + v * VEC + k] = toF(e[k]);
        }
        return;
    }
    for (int idx = threadIdx.x; idx < SSD_TILE * ncols; idx += blockDim.x) {
        int r = idx / ncols, col = idx % ncols;
        dst[r * ld + col] = (r0 + r < nvalid) ? toF(src[(size_t)(r0 + r) * src_stride + col]) : 0.f;
    }
}

/* the transposed 32-column slice [c0, c0+32) of a (R, Cn) float matrix: dst[cc * ld + r] = m[r, c0 + cc] */
__device__ static inline void ssd_load_cols_T(float* dst, int ld, const float* m, int R, int Cn, int c0) {
    if (Cn % 4 == 0) {
#pragma unroll 4
        for (int idx = threadIdx.x; idx < (SSD_TILE / 4) * R; idx += blockDim.x) {
            int v = idx % (SSD_TILE / 4), r = idx / (SSD_TILE / 4), cc = 4 * v;
            float4 q = make_float4(0.f, 0.f, 0.f, 0.f);
            if (c0 + cc < Cn) q = *(const float4*)(m + (size_t)r * Cn + c0 + cc);
            dst[cc * ld + r] = q.x; dst[(cc + 1) * ld + r] = q.y; dst[(cc + 2) * ld + r] = q.z;
            dst[(cc + 3) * ld + r] = q.w;
        }
        return;
    }
    for (int idx = threadIdx.x; idx < SSD_TILE * R; idx += blockDim.x) {
        int cc = idx % SSD_TILE, r = idx / SSD_TILE;
        dst[cc * ld + r] = (c0 + cc < Cn) ? m[(size_t)r * Cn + c0 + cc] : 0.f;
    }
}

/* the 32-row slice [r0, r0+32) of a (R, Cn) float matrix: dst[rr * ld + c] = m[r0 + rr, c] */
__device__ static inline void ssd_load_rows_F(float* dst, int ld, const float* m, int R, int Cn, int r0) {
    if (Cn % 4 == 0) {
        int nv = Cn / 4;
#pragma unroll 4
        for (int idx = threadIdx.x; idx < SSD_TILE * nv; idx += blockDim.x) {
            int rr = idx / nv, c = 4 * (idx % nv);
            float4 q = make_float4(0.f, 0.f, 0.f, 0.f);
            if (r0 + rr < R) q = *(const float4*)(m + (size_t)(r0 + rr) * Cn + c);
            dst[rr * ld + c] = q.x; dst[rr * ld + c + 1] = q.y; dst[rr * ld + c + 2] = q.z; dst[rr * ld + c + 3] = q.w;
        }
        return;
    }
    for (int idx = threadIdx.x; idx < SSD_TILE * Cn; idx += blockDim.x) {
        int rr = idx / Cn, c = idx % Cn;
        dst[rr * ld + c] = (r0 + rr < R) ? m[(size_t)(r0 + rr) * Cn + c] : 0.f;
    }
}

/* The per-thread view of a 32 x (<=128) tile kept in shared memory: thread t reads rows t/64 + 4k (k < 8) and
   columns t%64 + 64m (m < 2) of it for the element-wise steps (scaling, output writes, row reductions). */
#define SSD_ROW(k) ((int)(threadIdx.x / 64) + 4 * (k))
#define SSD_COL(m) ((int)(threadIdx.x % 64) + 64 * (m))

#if !defined(ENABLE_FP32)
/* ssd_gemm32 for the common layouts, with nothing to bound-check: A(r, k) = A[r*lda + k], K % 16 == 0, W % 8 == 0,
   and Bm(k, c) = Bm[c*ldb + k] (B_T) or Bm[k*ldb + c]. Fewer address computations per mma than the general path. */
template <bool B_T>
__device__ static inline void ssd_gemm32_fast(float* out, int o_ld, int accumulate, const float* A, int lda,
                                              const float* Bm, int ldb, int K, int W, int b_split) {
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gr = lane / 4, gc = (lane % 4) * 2;
    int ntiles = 2 * (W / 8);
    for (int tile = warp; tile < ntiles; tile += blockDim.x / 32) {
        int ra = (tile & 1) * 16 + gr, c0 = (tile >> 1) * 8, ca = c0 + gc, nb = c0 + gr;
        const float* a0 = A + ra * lda + gc;
        const float* a1 = a0 + 8 * lda;
        const float* bp = B_T ? Bm + nb * ldb + gc : Bm + gc * ldb + nb;
        float* o0 = out + ra * o_ld + ca;
        float* o1 = o0 + 8 * o_ld;
        float d[4] = {0.f, 0.f, 0.f, 0.f};
        if (accumulate) { d[0] = o0[0]; d[1] = o0[1]; d[2] = o1[0]; d[3] = o1[1]; }
#pragma unroll 2
        for (int k0 = 0; k0 < K; k0 += 16) {
            uint32_t a[4], bb[2];
            a[0] = ssd_pack_bf16(a0[k0], a0[k0 + 1]);
            a[1] = ssd_pack_bf16(a1[k0], a1[k0 + 1]);
            a[2] = ssd_pack_bf16(a0[k0 + 8], a0[k0 + 9]);
            a[3] = ssd_pack_bf16(a1[k0 + 8], a1[k0 + 9]);
            float b0, b1, b2, b3;
            if (B_T) { b0 = bp[k0]; b1 = bp[k0 + 1]; b2 = bp[k0 + 8]; b3 = bp[k0 + 9]; }
            else { b0 = bp[k0 * ldb]; b1 = bp[(k0 + 1) * ldb]; b2 = bp[(k0 + 8) * ldb]; b3 = bp[(k0 + 9) * ldb]; }
            bb[0] = ssd_pack_bf16(b0, b1);
            bb[1] = ssd_pack_bf16(b2, b3);
            ssd_mma_bf16(d, a, bb);
            if (b_split) {
                bb[0] = ssd_pack_bf16(b0 - __bfloat162float(__float2bfloat16_rn(b0)),
                                      b1 - __bfloat162float(__float2bfloat16_rn(b1)));
                bb[1] = ssd_pack_bf16(b2 - __bfloat162float(__float2bfloat16_rn(b2)),
                                      b3 - __bfloat162float(__float2bfloat16_rn(b3)));
                ssd_mma_bf16(d, a, bb);
            }
        }
        o0[0] = d[0]; o0[1] = d[1]; o1[0] = d[2]; o1[1] = d[3];
    }
}
#endif

/* out (32 x W, row stride o_ld, shared) = [out +] sum_{k<K} A(r, k) Bm(k, c), with A(r, k) = A[r*a_rs + k*a_ks]
   and Bm(k, c) = Bm[k*b_ks + c*b_cs], all in shared memory as float (the strides express the transposes).
   Called by all threads of the block; the caller puts the barriers around it.
   bf16 build: 16x8 output tiles spread over the 8 warps, m16n8k16 mma.sync with bf16 operands (rounded from the
   float staging copy) and fp32 accumulation. A must hold bf16-exact values (inputs) or tolerate bf16 rounding;
   b_split = 1 for an fp32 B (states): it is split into two bf16 terms, so the product keeps ~16 mantissa bits. fp32 build (ENABLE_FP32): plain fp32 dot products. */
__device__ static inline void ssd_gemm32(float* out, int o_ld, int accumulate, const float* A, int a_rs, int a_ks,
                                         const float* Bm, int b_ks, int b_cs, int K, int W, int b_split = 0) {
#if defined(ENABLE_FP32)
    (void)b_split;
    for (int idx = threadIdx.x; idx < SSD_TILE * W; idx += blockDim.x) {
        int r = idx / W, c = idx % W;
        float s = accumulate ? out[r * o_ld + c] : 0.f;
        for (int k = 0; k < K; k++) s += A[r * a_rs + k * a_ks] * Bm[k * b_ks + c * b_cs];
        out[r * o_ld + c] = s;
    }
#else
    if (a_ks == 1 && K % 16 == 0 && W % 8 == 0 && (b_ks == 1 || b_cs == 1)) {
        if (b_ks == 1) ssd_gemm32_fast<true>(out, o_ld, accumulate, A, a_rs, Bm, b_cs, K, W, b_split);
        else ssd_gemm32_fast<false>(out, o_ld, accumulate, A, a_rs, Bm, b_ks, K, W, b_split);
        return;
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gr = lane / 4, gc = (lane % 4) * 2;
    int ntiles = 2 * CEIL_DIV(W, 8);
    for (int tile = warp; tile < ntiles; tile += blockDim.x / 32) {
        int ra = (tile % 2) * 16 + gr, rb = ra + 8, c0 = (tile / 2) * 8, ca = c0 + gc, nb = c0 + gr;
        float d[4];
        d[0] = accumulate && ca < W ? out[ra * o_ld + ca] : 0.f;
        d[1] = accumulate && ca + 1 < W ? out[ra * o_ld + ca + 1] : 0.f;
        d[2] = accumulate && ca < W ? out[rb * o_ld + ca] : 0.f;
        d[3] = accumulate && ca + 1 < W ? out[rb * o_ld + ca + 1] : 0.f;
        for (int k0 = 0; k0 < K; k0 += 16) {
            int ka = k0 + gc, kb = ka + 8;
#define SSD_AGET(r, k) ((k) < K ? A[(r) * a_rs + (k) * a_ks] : 0.f)
#define SSD_BGET(k, c) ((k) < K && (c) < W ? Bm[(k) * b_ks + (c) * b_cs] : 0.f)
            uint32_t a[4], bb[2];
            a[0] = ssd_pack_bf16(SSD_AGET(ra, ka), SSD_AGET(ra, ka + 1));
            a[1] = ssd_pack_bf16(SSD_AGET(rb, ka), SSD_AGET(rb, ka + 1));
            a[2] = ssd_pack_bf16(SSD_AGET(ra, kb), SSD_AGET(ra, kb + 1));
            a[3] = ssd_pack_bf16(SSD_AGET(rb, kb), SSD_AGET(rb, kb + 1));
            float b0 = SSD_BGET(ka, nb), b1 = SSD_BGET(ka + 1, nb), b2 = SSD_BGET(kb, nb), b3 = SSD_BGET(kb + 1, nb);
#undef SSD_AGET
#undef SSD_BGET
            bb[0] = ssd_pack_bf16(b0, b1);
            bb[1] = ssd_pack_bf16(b2, b3);
            ssd_mma_bf16(d, a, bb);
            if (b_split) {  /* fp32 B = hi + lo in bf16: the second product adds what rounding B to bf16 lost */
                bb[0] = ssd_pack_bf16(b0 - __bfloat162float(__float2bfloat16_rn(b0)),
                                      b1 - __bfloat162float(__float2bfloat16_rn(b1)));
                bb[1] = ssd_pack_bf16(b2 - __bfloat162float(__float2bfloat16_rn(b2)),
                                      b3 - __bfloat162float(__float2bfloat16_rn(b3)));
                ssd_mma_bf16(d, a, bb);
            }
        }
        if (ca < W) { out[ra * o_ld + ca] = d[0]; out[rb * o_ld + ca] = d[2]; }
        if (ca + 1 < W) { out[ra * o_ld + ca + 1] = d[1]; out[rb * o_ld + ca + 1] = d[3]; }
    }
#endif
}

/* sum a per-row value over the 64 threads that share each row; red is 8 warps x 8 floats of shared memory.
   Returns the full sum for row `lane` (< 32) in threads 0..31. Ends with the block in step. */
__device__ static inline float ssd_row_reduce(float v[8], float* red) {
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        float s = warp_reduce_sum(v[k]);
        if (lane == 0) red[warp * 8 + k] = s;
    }
    __syncthreads();
    float out = 0.f;
    if (threadIdx.x < 32) {
        int row = threadIdx.x, r0 = row % 4, k = row / 4;  /* row = r0 + 4k lives in warps 2*r0, 2*r0+1 */
        out = red[(2 * r0) * 8 + k] + red[(2 * r0 + 1) * 8 + k];
    }
    __syncthreads();
    return out;
}

/* dynamic shared memory of a row-tile kernel with nN tiles (32, N+1), nP tiles (32, P+1), two (32, 33) products
   and small vectors: only what each kernel lays out, so that more blocks fit on a multiprocessor */
static inline size_t ssd_simple_smem_bytes(int P, int N, int nN, int nP) {
    return (size_t)(nN * SSD_TILE * (N + 1) + nP * SSD_TILE * (P + 1) + 2 * SSD_TILE * 33 + 4 * SSD_TILE + 64) *
           sizeof(float);
}

/* y for 32 rows i of one chunk of one (b, h): inter-chunk term first, then the masked intra-chunk product. seg (B, T)
   or NULL: document boundaries (ssd_seg_kernel): the entering state reaches row i iff s_i < 0, the pair (i, j) is
   kept iff j >= s_i (s_i = -1 without seg: the same arithmetic as without a mask). The two backward kernels below
   likewise, and the dxdb kernel's state term keeps the rows j >= s_last. */
__global__ static void __launch_bounds__(SSD_THREADS)
ssd_simple_fwd_scan_kernel(floatX* y, const floatX* xbc, int xbc_stride, const float* dt, const float* cum,
                          const int* seg, const float* states, const float* Dskip, int T, int H, int P, int N, int G,
                          int Q) {
    extern __shared__ float sm[];
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE);
    int c = blockIdx.x / ntile, rt = blockIdx.x % ntile, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD_TILE;
    if (i0 >= len) return;
    int E = H * P, ldn = N + 1, ldp = P + 1;
    float* Cs = sm;                        /* (32, N+1) C rows i */
    float* Bs = Cs + SSD_TILE * ldn;       /* (32, N+1) B rows j */
    float* Xs = Bs + SSD_TILE * ldn;       /* (32, P+1) x rows j, or a transposed slice of Hprev */
    float* Acc = Xs + SSD_TILE * ldp;      /* (32, P+1) y accumulator */
    float* Ms = Acc + SSD_TILE * ldp;      /* (32, 33) masked, decayed C B^T dt */
    float* cum_i = Ms + 2 * SSD_TILE * 33;
    float* cum_j = cum_i + SSD_TILE;
    float* dt_j = cum_j + SSD_TILE;
    int* sg_i = (int*)(dt_j + SSD_TILE);   /* seg of rows i, -1 without seg */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    const int* segc = seg ? seg + (size_t)b * T + t0 : NULL;
    ssd_load_rows(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
    if (threadIdx.x < SSD_TILE) {
        int i = i0 + (int)threadIdx.x;
        cum_i[threadIdx.x] = i < len ? cumc[i] : 0.f;
        sg_i[threadIdx.x] = segc && i < len ? segc[i] : -1;
    }
    /* inter-chunk: y_i = exp(cum_i) sum_n C_i[n] Hprev[p, n] */
    const float* Hp = states + ssd_state_off(b, c, h, nch, H, P * N);
    for (int n0 = 0; n0 < N; n0 += SSD_TILE) {
        __syncthreads();
        ssd_load_cols_T(Xs, ldp, Hp, P, N, n0);
        __syncthreads();
        ssd_gemm32(Acc, ldp, n0 > 0, Cs + n0, ldn, 1, Xs, ldp, 1, min(SSD_TILE, N - n0), P, 1);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < SSD_TILE * P; idx += SSD_THREADS) {
        int r = idx / P, p = idx % P;
        Acc[r * ldp + p] *= sg_i[r] >= 0 ? 0.f : expf(cum_i[r]);
    }
    /* intra-chunk: y_i += sum_{j<=i} (C_i.B_j) exp(cum_i - cum_j) dt_j x_j */
    for (int j0 = 0; j0 <= i0; j0 += SSD_TILE) {
        __syncthreads();
        ssd_load_rows(Bs, ldn, rows + E + g * N, xbc_stride, j0, len, N);
        ssd_load_rows(Xs, ldp, rows + h * P, xbc_stride, j0, len, P);
        if (threadIdx.x < SSD_TILE) {
            int j = j0 + threadIdx.x;
            cum_j[threadIdx.x] = j < len ? cumc[j] : 0.f;
            dt_j[threadIdx.x] = j < len ? dtc[j] : 0.f;
        }
        __syncthreads();
        ssd_gemm32(Ms, 33, 0, Cs, ldn, 1, Bs, 1, ldn, N, SSD_TILE);  /* Ms[i][j] = C_i . B_j */
        __syncthreads();
        for (int idx = threadIdx.x; idx < SSD_TILE * SSD_TILE; idx += SSD_THREADS) {
            int i = idx / SSD_TILE, jj = idx % SSD_TILE;
            bool valid = j0 + jj <= i0 + i && i0 + i < len && j0 + jj >= sg_i[i];
            Ms[i * 33 + jj] = valid ? Ms[i * 33 + jj] * expf(cum_i[i] - cum_j[jj]) * dt_j[jj] : 0.f;
        }
        __syncthreads();
        ssd_gemm32(Acc, ldp, 1, Ms, 33, 1, Xs, ldp, 1, SSD_TILE, P);
    }
    __syncthreads();
    float Dh = Dskip[h];
    for (int idx = threadIdx.x; idx < SSD_TILE * P; idx += SSD_THREADS) {
        int r = idx / P, p = idx % P, i = i0 + r;
        if (i >= len) continue;
        float xv = toF(rows[(size_t)i * xbc_stride + h * P + p]);
        y[(size_t)(b * T + t0 + i) * E + h * P + p] = fromF(Acc[r * ldp + p] + Dh * xv);
    }
}

/* For 32 rows j of one chunk of one (b, h): dx_j (written into dxbc), the per-head dB_j (float workspace),
   x_j.dxs_j and x_j.dy_j. State terms first (they need dH_c), then the intra-chunk sums over i >= j. */
__global__ static void __launch_bounds__(SSD_THREADS)
ssd_simple_bwd_dxdb_kernel(floatX* dxbc, float* dB_h, float* xdxs, float* xdxs_st, float* xdy, const floatX* dy,
                     const floatX* xbc,
                     int xbc_stride, const float* dt, const float* cum, const int* seg, const float* dstates,
                     const float* Dskip, int T, int H, int P, int N, int G, int Q) {
    extern __shared__ float sm[];
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE);
    int c = blockIdx.x / ntile, rt = blockIdx.x % ntile, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), j0 = rt * SSD_TILE;
    if (j0 >= len) return;
    int E = H * P, ldn = N + 1, ldp = P + 1;
    float* Bs = sm;                       /* (32, N+1) B rows j */
    float* Cs = Bs + SSD_TILE * ldn;      /* (32, N+1) C rows i, or a row slice of dH */
    float* AB = Cs + SSD_TILE * ldn;      /* (32, N+1) dB_j / dt_j accumulator */
    float* Xs = AB + SSD_TILE * ldn;      /* (32, P+1) x rows j */
    float* Ys = Xs + SSD_TILE * ldp;      /* (32, P+1) dy rows i, or a transposed slice of dH */
    float* AX = Ys + SSD_TILE * ldp;      /* (32, P+1) dxs_j accumulator */
    float* CBL = AX + SSD_TILE * ldp;     /* (32, 33) [j][i] (C_i.B_j) exp(cum_i - cum_j) */
    float* WD = CBL + SSD_TILE * 33;      /* (32, 33) [j][i] (dy_i.x_j) exp(cum_i - cum_j) */
    float* cum_j = WD + SSD_TILE * 33;
    float* dt_j = cum_j + SSD_TILE;
    float* cum_i = dt_j + SSD_TILE;
    float* red = cum_i + SSD_TILE;        /* 64 floats */
    int* sg_i = (int*)(red + 64);         /* seg of rows i, -1 without seg */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* dyrows = dy + (size_t)(b * T + t0) * E + h * P;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    const int* segc = seg ? seg + (size_t)b * T + t0 : NULL;
    int s_last = segc ? segc[len - 1] : -1;  /* row j enters the state leaving the chunk iff j >= s_last */
    ssd_load_rows(Bs, ldn, rows + E + g * N, xbc_stride, j0, len, N);
    ssd_load_rows(Xs, ldp, rows + h * P, xbc_stride, j0, len, P);
    if (threadIdx.x < SSD_TILE) {
        int j = j0 + threadIdx.x;
        cum_j[threadIdx.x] = j < len ? cumc[j] : 0.f;
        dt_j[threadIdx.x] = j < len ? dtc[j] : 0.f;
    }
    float cum_last = cumc[len - 1];
    const float* dH = dstates + ssd_state_off(b, c, h, nch, H, P * N);
    /* state terms: dxs_j = dH B_j, dB_j/dt_j = dH^T x_j, both times exp(cum_last - cum_j) */
    for (int n0 = 0; n0 < N; n0 += SSD_TILE) {
        __syncthreads();
        ssd_load_cols_T(Ys, ldp, dH, P, N, n0);
        __syncthreads();
        ssd_gemm32(AX, ldp, n0 > 0, Bs + n0, ldn, 1, Ys, ldp, 1, min(SSD_TILE, N - n0), P, 1);
    }
    for (int p0 = 0; p0 < P; p0 += SSD_TILE) {
        __syncthreads();
        ssd_load_rows_F(Cs, ldn, dH, P, N, p0);
        __syncthreads();
        ssd_gemm32(AB, ldn, p0 > 0, Xs + p0, ldp, 1, Cs, ldn, 1, min(SSD_TILE, P - p0), N, 1);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < SSD_TILE * (P + N); idx += SSD_THREADS) {
        int r = idx / (P + N), col = idx % (P + N);
        float e = j0 + r < len && j0 + r >= s_last ? expf(cum_last - cum_j[r]) : 0.f;
        if (col < P) AX[r * ldp + col] *= e; else AB[r * ldn + col - P] *= e;
    }
    __syncthreads();
    {   /* x_j . (state part of dxs_j): the log-decay gradient needs it apart from the intra-chunk part */
        float ps[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int r = SSD_ROW(k);
            ps[k] = 0.f;
#pragma unroll
            for (int m = 0; m < 2; m++)
                if (SSD_COL(m) < P) ps[k] += Xs[r * ldp + SSD_COL(m)] * AX[r * ldp + SSD_COL(m)];
        }
        float st = ssd_row_reduce(ps, red);
        if (threadIdx.x < SSD_TILE && j0 + (int)threadIdx.x < len) xdxs_st[(size_t)bh * T + t0 + j0 + threadIdx.x] = st;
    }
    /* intra-chunk: sums over i >= j */
    for (int i0 = j0; i0 < len; i0 += SSD_TILE) {
        __syncthreads();
        ssd_load_rows(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
        ssd_load_rows(Ys, ldp, dyrows, E, i0, len, P);
        if (threadIdx.x < SSD_TILE) {
            int i = i0 + (int)threadIdx.x;
            cum_i[threadIdx.x] = i < len ? cumc[i] : 0.f;
            sg_i[threadIdx.x] = segc && i < len ? segc[i] : -1;
        }
        __syncthreads();
        ssd_gemm32(CBL, 33, 0, Bs, ldn, 1, Cs, 1, ldn, N, SSD_TILE);  /* [j][i] = B_j . C_i */
        ssd_gemm32(WD, 33, 0, Xs, ldp, 1, Ys, 1, ldp, P, SSD_TILE);   /* [j][i] = x_j . dy_i */
        __syncthreads();
        for (int idx = threadIdx.x; idx < SSD_TILE * SSD_TILE; idx += SSD_THREADS) {
            int j = idx / SSD_TILE, ii = idx % SSD_TILE;
            float L = (i0 + ii >= j0 + j && i0 + ii < len && j0 + j >= sg_i[ii]) ? expf(cum_i[ii] - cum_j[j]) : 0.f;
            CBL[j * 33 + ii] *= L;
            WD[j * 33 + ii] *= L;
        }
        __syncthreads();
        ssd_gemm32(AX, ldp, 1, CBL, 33, 1, Ys, ldp, 1, SSD_TILE, P);
        ssd_gemm32(AB, ldn, 1, WD, 33, 1, Cs, ldn, 1, SSD_TILE, N);
    }
    __syncthreads();
    float Dh = Dskip[h], px[8], pd[8];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int r = SSD_ROW(k), j = j0 + r;
        px[k] = 0.f; pd[k] = 0.f;
        if (j >= len) continue;
        float dtv = dt_j[r];
        size_t row = (size_t)(b * T + t0 + j);
#pragma unroll
        for (int m = 0; m < 2; m++) {
            int p = SSD_COL(m);
            if (p < P) {
                float xv = Xs[r * ldp + p], dyv = toF(dyrows[(size_t)j * E + p]), ax = AX[r * ldp + p];
                dxbc[row * xbc_stride + h * P + p] = fromF(dtv * ax + Dh * dyv);
                px[k] += xv * ax;
                pd[k] += xv * dyv;
            }
            if (p < N) dB_h[(row * H + h) * N + p] = AB[r * ldn + p] * dtv;
        }
    }
    float sx = ssd_row_reduce(px, red);
    float sd = ssd_row_reduce(pd, red);
    if (threadIdx.x < SSD_TILE && j0 + (int)threadIdx.x < len) {
        xdxs[(size_t)bh * T + t0 + j0 + threadIdx.x] = sx;
        xdy[(size_t)bh * T + t0 + j0 + threadIdx.x] = sd;
    }
}

/* For 32 rows i of one chunk of one (b, h): the per-head dC_i (float workspace) and dy_i . ssd_i. */
__global__ static void __launch_bounds__(SSD_THREADS)
ssd_simple_bwd_dc_kernel(float* dC_h, float* roww, float* colw, const floatX* dy, const floatX* xbc, int xbc_stride, const float* dt,
                  const float* cum, const int* seg, const float* states, int T, int H, int P, int N, int G, int Q) {
    extern __shared__ float sm[];
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE);
    int c = blockIdx.x / ntile, rt = blockIdx.x % ntile, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD_TILE;
    if (i0 >= len) return;
    int E = H * P, ldn = N + 1, ldp = P + 1;
    float* Cs = sm;                       /* (32, N+1) C rows i */
    float* Bs = Cs + SSD_TILE * ldn;      /* (32, N+1) B rows j, or a row slice of Hprev */
    float* Acc = Bs + SSD_TILE * ldn;     /* (32, N+1) dC accumulator */
    float* Ys = Acc + SSD_TILE * ldn;     /* (32, P+1) dy rows i */
    float* Xs = Ys + SSD_TILE * ldp;      /* (32, P+1) x rows j */
    float* CB = Xs + SSD_TILE * ldp;      /* (32, 33) [i][j] C_i . B_j */
    float* WD = CB + SSD_TILE * 33;       /* (32, 33) [i][j] (dy_i.x_j) exp(cum_i - cum_j) dt_j */
    float* cum_i = WD + SSD_TILE * 33;
    float* cum_j = cum_i + SSD_TILE;
    float* dt_j = cum_j + SSD_TILE;
    float* red = dt_j + SSD_TILE;         /* 64 floats */
    int* sg_i = (int*)(red + 64);         /* seg of rows i, -1 without seg */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* dyrows = dy + (size_t)(b * T + t0) * E + h * P;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    const int* segc = seg ? seg + (size_t)b * T + t0 : NULL;
    ssd_load_rows(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
    ssd_load_rows(Ys, ldp, dyrows, E, i0, len, P);
    if (threadIdx.x < SSD_TILE) {
        int i = i0 + (int)threadIdx.x;
        cum_i[threadIdx.x] = i < len ? cumc[i] : 0.f;
        sg_i[threadIdx.x] = segc && i < len ? segc[i] : -1;
    }
    const float* Hp = states + ssd_state_off(b, c, h, nch, H, P * N);
    /* inter-chunk: q_i = exp(cum_i) Hprev^T dy_i */
    for (int p0 = 0; p0 < P; p0 += SSD_TILE) {
        __syncthreads();
        ssd_load_rows_F(Bs, ldn, Hp, P, N, p0);
        __syncthreads();
        ssd_gemm32(Acc, ldn, p0 > 0, Ys + p0, ldp, 1, Bs, ldn, 1, min(SSD_TILE, P - p0), N, 1);
    }
    __syncthreads();
    float pw[8];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int r = SSD_ROW(k);
        float e = sg_i[r] >= 0 ? 0.f : expf(cum_i[r]);
        pw[k] = 0.f;
#pragma unroll
        for (int m = 0; m < 2; m++) {
            int n = SSD_COL(m);
            if (n < N) {
                float q = Acc[r * ldn + n] * e;
                Acc[r * ldn + n] = q;
                pw[k] += Cs[r * ldn + n] * q;  /* dy_i . y_off_i */
            }
        }
    }
    /* intra-chunk: sums over j <= i; rw accumulates dy_i . y_diag_i for row i = threadIdx.x % 32 */
    float rw = 0.f;
    for (int j0 = 0; j0 <= i0; j0 += SSD_TILE) {
        __syncthreads();
        ssd_load_rows(Bs, ldn, rows + E + g * N, xbc_stride, j0, len, N);
        ssd_load_rows(Xs, ldp, rows + h * P, xbc_stride, j0, len, P);
        if (threadIdx.x < SSD_TILE) {
            int j = j0 + threadIdx.x;
            cum_j[threadIdx.x] = j < len ? cumc[j] : 0.f;
            dt_j[threadIdx.x] = j < len ? dtc[j] : 0.f;
        }
        __syncthreads();
        ssd_gemm32(CB, 33, 0, Cs, ldn, 1, Bs, 1, ldn, N, SSD_TILE);  /* [i][j] = C_i . B_j */
        ssd_gemm32(WD, 33, 0, Ys, ldp, 1, Xs, 1, ldp, P, SSD_TILE);  /* [i][j] = dy_i . x_j */
        __syncthreads();
        for (int q = 0; q < 4; q++) {
            int i = threadIdx.x % SSD_TILE, jj = threadIdx.x / SSD_TILE + 8 * q;
            float wd = 0.f, wv = 0.f;
            if (j0 + jj <= i0 + i && i0 + i < len && j0 + jj >= sg_i[i]) {
                wd = WD[i * 33 + jj] * expf(cum_i[i] - cum_j[jj]) * dt_j[jj];
                wv = wd * CB[i * 33 + jj];
                rw += wv;
            }
            WD[i * 33 + jj] = wd;
            /* the column sums of the same W values: the row and column sums then cancel as they should in dcum */
            wv = warp_reduce_sum(wv);
            if (threadIdx.x % 32 == 0 && j0 + jj < len) colw[(((size_t)bh * nch + c) * ntile + rt) * Q + j0 + jj] = wv;
        }
        __syncthreads();
        ssd_gemm32(Acc, ldn, 1, WD, 33, 1, Bs, ldn, 1, SSD_TILE, N);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < SSD_TILE * N; idx += SSD_THREADS) {
        int r = idx / N, n = idx % N, i = i0 + r;
        if (i < len) dC_h[((size_t)(b * T + t0 + i) * H + h) * N + n] = Acc[r * ldn + n];
    }
    float sw = ssd_row_reduce(pw, red);
    /* the 8 threads of row i (one in each warp) hold parts of rw: add them in warp order */
    float* rws = WD;  /* free now: (8, 32) */
    rws[(threadIdx.x / 32) * 32 + threadIdx.x % 32] = rw;
    __syncthreads();
    if (threadIdx.x < SSD_TILE && i0 + (int)threadIdx.x < len) {
        float s = sw;
        for (int w = 0; w < SSD_THREADS / 32; w++) s += rws[w * 32 + threadIdx.x];
        roww[(size_t)bh * T + t0 + i0 + threadIdx.x] = s;
    }
}

/* Per (chunk, b*H+h), one warp: dcum, its reverse cumsum, ddt, ddt_raw; per-chunk partials of the parameter
   gradients (d_dt_bias, d_A_log, d_D) to part[(which, bh, c)]. */
__global__ static void ssd_simple_bwd_dt_kernel(floatX* ddt_raw, int dt_stride, float* part, const float* dt,
                                         const float* cum, const float* roww, const float* xdxs,
                                         const float* xdxs_st, const float* colw, const float* xdy,
                                         const float* dotp, int nsplit, const floatX* dt_raw, const float* dt_bias,
                                         const float* A_log, int B, int T, int H, int Q) {
    int nch = ssd_nchunks(T, Q), c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, lane = threadIdx.x;
    int t0 = c * Q, len = min(Q, T - t0);
    float A = -expf(A_log[h]), bias = dt_bias[h];
    float dot_last = 0.f;
    for (int s = 0; s < nsplit; s++) dot_last += dotp[((size_t)bh * nch + c) * nsplit + s];
    size_t base = (size_t)bh * T + t0;
    float carry = 0.f, s_dtb = 0.f, s_alog = 0.f, s_d = 0.f;
    for (int end = len; end > 0; end -= 32) {
        int i = end - 32 + lane;
        float dcum = 0.f, xd = 0.f, cm = 0.f;
        if (i >= 0) {
            xd = xdxs[base + i];
            cm = cum[base + i];
            /* dcum_i = dy_i.ssd_i - dt_i x_i.dxs_i (+ <dH, Hout> at the last row), with the intra-chunk part of
               dt_i x_i.dxs_i taken as the column sum of the same W values as dy_i.ssd_i's intra part */
            int ntile = CEIL_DIV(Q, SSD_TILE);
            float cw = 0.f;
            for (int rt = i / SSD_TILE; rt < ntile && rt * SSD_TILE < len; rt++)
                cw += colw[(((size_t)bh * nch + c) * ntile + rt) * Q + i];
            dcum = roww[base + i] - cw - dt[base + i] * xdxs_st[base + i] + (i == len - 1 ? dot_last : 0.f);
        }
        float v = dcum;  /* suffix sum inside the 32 */
        for (int o = 1; o < 32; o <<= 1) {
            float u = __shfl_down_sync(0xffffffffu, v, o);
            if (lane + o < 32) v += u;
        }
        float rev = v + carry;
        if (i >= 0) {
            float ddt = xd + A * rev;
            size_t row = (size_t)(b * T + t0 + i) * dt_stride + h;
            float out = ddt * ssd_sigmoid(toF(dt_raw[row]) + bias);
            ddt_raw[row] = fromF(out);
            s_dtb += out;
            s_alog += dcum * cm;
            s_d += xdy[base + i];
        }
        carry += __shfl_sync(0xffffffffu, v, 0);
    }
    s_dtb = warp_reduce_sum(s_dtb);
    s_alog = warp_reduce_sum(s_alog);
    s_d = warp_reduce_sum(s_d);
    if (lane == 0) {
        size_t nbhc = (size_t)B * H * nch, o = (size_t)bh * nch + c;
        part[o] = s_dtb;
        part[nbhc + o] = s_alog;
        part[2 * nbhc + o] = s_d;
    }
}

/* dB, dC columns of dxbc: the sum over the heads of each group, in head order. One thread per (row, g, n). */
__global__ static void ssd_simple_group_sum_kernel(floatX* dxbc, int xbc_stride, const float* dB_h, const float* dC_h,
                                                int BT, int H, int P, int N, int G) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)BT * G * N) return;
    int n = idx % N, g = (idx / N) % G;
    size_t row = idx / ((size_t)G * N);
    int hpg = H / G, E = H * P;
    float sB = 0.f, sC = 0.f;
    for (int h = g * hpg; h < (g + 1) * hpg; h++) {
        sB += toF(dB_h[(row * H + h) * N + n]);
        sC += toF(dC_h[(row * H + h) * N + n]);
    }
    dxbc[row * xbc_stride + E + g * N + n] = fromF(sB);
    dxbc[row * xbc_stride + E + G * N + g * N + n] = fromF(sC);
}

#endif /* MAMBA2_SSD_SIMPLE_CUH */
