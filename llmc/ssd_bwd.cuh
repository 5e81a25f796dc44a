/*
 * ssd_bwd.cuh: the backward's tile kernels of the bf16 build (the fp32 build's: llmc/ssd_simple.cuh), by the
 * formulas at the top of llmc/ssd.cuh. 64-row tiles, hg heads of one group per block (ssd_bwd_heads_per_block).
 *   ssd_bwd_bct_kernel        B_j . C_i for the j <= i tiles of each (b, chunk, group), made once for all its heads
 *   ssd_bwd_dxdb_kernel       for 64 rows j, over the i tiles i >= j: dx_j, dB_j summed over the block's heads,
 *                             x_j.dxs_j, x_j.(state part), x_j.dy_j, and from ONE set of fp32 values W[i, j] both
 *                             its column sums (complete) and its row sums (partial per j tile)
 *   ssd_bwd_dc_kernel         for 64 rows i, over j <= i: dC_i summed over the block's heads, dy_i.y_off_i per head
 *   ssd_bwd_group_sum_kernel  dB, dC of a group with more than one head-group: its bf16 partials added in order
 *   ssd_bwd_dt_kernel         dcum, ddt_raw and the per-chunk parameter partials from those sums
 * The two row-tile kernels have instantiations with P, N fixed at compile time (EXACT) and a tuned form (TUNED,
 * the trainer's shape: P, N in {64, 128}, Q in {64, 128}), and a template flag SEG for document boundaries (seg
 * (B, T) from ssd_seg_kernel, llmc/ssd.cuh): the pair (i, j) is kept iff j >= s_i, the entering state reaches row i
 * iff s_i < 0, row j enters the state leaving the chunk iff j >= s_last; dropped terms are exact zeros (selects;
 * the dxdb kernel's factored off-diagonal tiles: a zero row or column factor). Without SEG the code is that of no
 * boundaries. ssd_bwd_bct_kernel, ssd_bwd_dt_kernel and the group sum need no mask: B_j . C_i is masked where it
 * is used, and dcum's terms come from the masked sums (every dropped term is a constant 0, with no dependence on
 * cum).
 */
#ifndef MAMBA2_SSD_BWD_CUH
#define MAMBA2_SSD_BWD_CUH

#ifndef MAMBA2_SSD_CUH
#error "llmc/ssd_bwd.cuh is a part of llmc/ssd.cuh: include llmc/ssd.cuh instead"
#endif

#if !defined(ENABLE_FP32)
/* bct[(b, c, g)][j][i] = B_j . C_i for the 64 x 64 tile (jt, it), it >= jt, of one chunk: the product that
   ssd_bwd_dxdb_kernel needs for every head of group g, made once (with G = 1, once instead of H times). */
__global__ static void __launch_bounds__(SSD_MMA_THREADS)
ssd_bwd_bct_kernel(float* bct, const floatX* xbc, int xbc_stride, int T, int H, int P, int N, int G, int Q) {
    __shared__ __align__(16) floatX Bs[SSD_MMA_ROWS * (SSD_MAXD + 8)], Cs[SSD_MMA_ROWS * (SSD_MAXD + 8)];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD_MMA_ROWS);
    int c = blockIdx.x / (nti * nti), jt = (blockIdx.x / nti) % nti, it = blockIdx.x % nti;
    int b = blockIdx.y / G, g = blockIdx.y % G, t0 = c * Q, len = min(Q, T - t0);
    int j0 = jt * SSD_MMA_ROWS, i0 = it * SSD_MMA_ROWS;
    if (it < jt || i0 >= len) return;
    int E = H * P, ldn = N + 8;
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    ssd_load_tile(Bs, ldn, rows + E + g * N, xbc_stride, j0, len, N);
    ssd_load_tile(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
    ssd_cp_commit();
    ssd_cp_wait<0>();
    __syncthreads();
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    float acc[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    ssd_mma_nt<8>(acc, Bs + m0 * ldn, ldn, Cs, ldn, N, SSD_MMA_ROWS);
    float* o = bct + ((size_t)b * nch + c) * G * Q * Q + (size_t)g * Q * Q;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int j = j0 + m0 + lane / 4 + 8 * r;
        if (j >= Q) continue;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            int i = i0 + nt * 8 + 2 * tig;
            if (i < Q) o[(size_t)j * Q + i] = acc[nt][2 * r];
            if (i + 1 < Q) o[(size_t)j * Q + i + 1] = acc[nt][2 * r + 1];
        }
    }
}

/* dcum, ddt_raw and the parameter partials as ssd_simple_bwd_dt_kernel, from the tile kernels' partial sums:
   dy_i.ssd_i = rowi_i + sum over the j tiles jt <= i/64 of rowp[jt][i]; the column sums colf_i are complete. */
__global__ static void ssd_bwd_dt_kernel(floatX* ddt_raw, int dt_stride, float* part, const float* dt,
                                          const float* cum, const float* rowi, const float* rowp, const float* colf,
                                          const float* xdxs, const float* xdxs_st, const float* xdy,
                                          const float* dotp, int nsplit, const floatX* dt_raw, const float* dt_bias,
                                          const float* A_log, int B, int T, int H, int Q) {
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD_MMA_ROWS), c = blockIdx.x, bh = blockIdx.y, b = bh / H,
        h = bh % H, lane = threadIdx.x;
    int t0 = c * Q, len = min(Q, T - t0);
    float A = -expf(A_log[h]), bias = dt_bias[h];
    float dot_last = 0.f;
    for (int s = 0; s < nsplit; s++) dot_last += dotp[((size_t)bh * nch + c) * nsplit + s];
    size_t base = (size_t)bh * T + t0;
    const float* rp = rowp + ((size_t)bh * nch + c) * nti * Q;
    float carry = 0.f, s_dtb = 0.f, s_alog = 0.f, s_d = 0.f;
    for (int end = len; end > 0; end -= 32) {
        int i = end - 32 + lane;
        float dcum = 0.f, xd = 0.f, cm = 0.f;
        if (i >= 0) {
            xd = xdxs[base + i];
            cm = cum[base + i];
            float rw = rowi[base + i];
            for (int jt = 0; jt <= i / SSD_MMA_ROWS; jt++) rw += rp[(size_t)jt * Q + i];
            dcum = rw - colf[base + i] - dt[base + i] * xdxs_st[base + i] + (i == len - 1 ? dot_last : 0.f);
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

/* ------------------------------------------------------------------------------------------------------------ */
/* The two row-tile kernels loop over `hg` heads of a group per block (the largest divisor of H/G up to
   SSD_BWD_MAX_HEADS = 4).
   dB_j and dC_i of a group are sums over its heads, and the operands that differ per head can carry the per-head
   scale, so ONE register accumulator holds the sum over the block's heads:
     dB_j = sum_h [ sum_i (dt_j Z_h[j,i]) C_i + (dt_j exp(cum_last - cum_j)) x_j dH_h ]   (dt_j folded into Z's rows)
     dC_i = sum_h [ sum_j WD_h[i,j] B_j + exp(cum_i) dy_i Hprev_h ]                       (WD_h holds dt_j already)
   The state terms need a per-row, per-head scale after the product: they go through a 32-column temporary
   (ssd_state_nn), 16 registers instead of a second 64-register accumulator.
   With hg = H/G (H/G <= 4) the block writes dB, dC straight into dxbc; otherwise each block writes one bf16 partial
   per head-group (B*T*(H/hg)*N: a quarter of per-head partials at hg = 4) and ssd_bwd_group_sum_kernel
   adds the H/(G hg) partials of a group in order, 16 bytes per load. Same summation order every run: deterministic.
   The row-tile index runs slowest in the grid, the longest tiles first (dxdb: rt = 0 loops over every i tile; dC:
   the last rt loops over every j tile), so the short ones fill the tail of the last wave. */

/* acc[c/8 ..] += sc[r] * (A hi + A lo) for the 32-column chunks c of N: A = a (16 rows, row-major lda, K columns)
   times the row-major (K, N) matrix hs + ls (a state split in bf16 hi and lo). sc[r] scales row lane/4 (r = 0) and
   lane/4 + 8 (r = 1). If dotm != NULL, rsum[r] += the scaled product . dotm (the same rows of a row-major (16, N)
   bf16 matrix), unreduced across the 4 lanes of a row (ssd_quad_sum them after). */
template <int NMAX>
__device__ static inline void ssd_state_nn(float acc[][4], float rsum[2], const floatX* a, int lda, const floatX* hs,
                                            const floatX* ls, int ldn, int K, int N, const float sc[2],
                                            const floatX* dotm, int ldd) {
    int lane = threadIdx.x % 32, r0 = lane / 4, tig = lane % 4;
#pragma unroll
    for (int c0 = 0; c0 < NMAX; c0 += 32) {
        if (c0 < N) {
            float t[4][4];
#pragma unroll
            for (int q = 0; q < 4; q++) t[q][0] = t[q][1] = t[q][2] = t[q][3] = 0.f;
            ssd_mma_nn<4>(t, a, lda, hs + c0, ldn, K, N - c0);
            ssd_mma_nn<4>(t, a, lda, ls + c0, ldn, K, N - c0);
#pragma unroll
            for (int q = 0; q < 4; q++) {
                if (c0 + q * 8 < N) {
                    t[q][0] *= sc[0]; t[q][1] *= sc[0]; t[q][2] *= sc[1]; t[q][3] *= sc[1];
                    if (dotm) {
                        int col = c0 + q * 8 + 2 * tig;
                        rsum[0] += t[q][0] * toF(dotm[r0 * ldd + col]) + t[q][1] * toF(dotm[r0 * ldd + col + 1]);
                        rsum[1] += t[q][2] * toF(dotm[(r0 + 8) * ldd + col]) +
                                   t[q][3] * toF(dotm[(r0 + 8) * ldd + col + 1]);
                    }
                    acc[c0 / 8 + q][0] += t[q][0]; acc[c0 / 8 + q][1] += t[q][1];
                    acc[c0 / 8 + q][2] += t[q][2]; acc[c0 / 8 + q][3] += t[q][3];
                }
            }
        }
    }
}

/* the 64 x NMAX accumulator tile of a block (rows r0 + 16 warp + lane/4 (+8)) as bf16 into row `row` of out:
   out + row * stride + col */
template <int NMAX>
__device__ static inline void ssd_store_rows(floatX* out, size_t stride, int col, const float acc[][4],
                                              size_t row0, size_t row1, int ok0, int ok1, int N) {
    int tig = threadIdx.x % 4;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (!(r ? ok1 : ok0)) continue;
        floatX* o = out + (r ? row1 : row0) * stride + col;
#pragma unroll
        for (int nt = 0; nt < NMAX / 8; nt++)
            if (nt * 8 < N)
                *(__nv_bfloat162*)(o + nt * 8 + 2 * tig) = __floats2bfloat162_rn(acc[nt][2 * r], acc[nt][2 * r + 1]);
    }
}


/* The tuned form of the two row-tile kernels (template flag TUNED, lab version 8 with version 9's factored decay in
   the dxdb kernel; TUNED = false is lab version 4's form, which every other shape runs):
   - the grid runs the row tiles of one (b, chunk, head-group) next to each other (blockIdx.x the row tile), so the
     blocks that read the same states (dxdb: dH_c, dC: Hprev_c, 32 KB of fp32 per head at P = 64, N = 128) and the
     same dy / x / B / C rows run in the same wave: the second read hits L2 (the general form's grid runs all first
     row tiles, then all second ones, and the states, written by the kernel before, come twice from DRAM);
   - the per-head state's split into bf16 hi + lo issues all (col) or half (dC: 168-register cap) of its 16-byte
     loads before the first use: one memory latency per head instead of four;
   - dxdb: the fp32 B_j . C_i slab of the block (64 rows j x the chunk's columns i >= j0, from ssd_bwd_bct_kernel) is
     copied into shared memory once per block by 16-byte cp.async, and each lane reads its pairs (i, i + 1) as one
     8-byte load (the general form: from L2 / L1, one 4-byte load per element for every head of the block);
   - dxdb: the off-diagonal decay factored: exp(cum_i - cum_j) = exp(cum_i - cref) exp(cref - cum_j), cref = cum of
     the j tile's last row, both arguments <= 0: one exp per row and per column instead of one per element, no mask
     (the same factoring as the wgmma pair forward scan: see ssd_wg_store_scalars in llmc/ssd_fwd.cuh);
   - dxdb: the row sums of W are reduced across the warp inside each 32-column half (their 8 partials die there),
     and the epilogue's dy_j comes from the diagonal tile's dy buffer (at Q <= 128 no later tile overwrites it)
     instead of 16 scalar global loads per thread and head.
   Taken where P, N are in {64, 128} (compile-time widths), Q is 64 or 128 (the slab: 64 x 128 floats) and bct,
   the states are 16-byte aligned (ssd_bwd_tuned_takes); else the general form. */
#define SSD_DXDB_STATE_BATCH 16  /* dxdb: 16-byte state loads in flight per thread (16: all of dH at P = 64, N = 128) */
#define SSD_SLAB_LD 136  /* slab row stride in floats: 128 + 8 (8-byte reads of a quad's 4 lanes x 8 rows: no conflicts) */
static inline size_t ssd_smem_slab(void) { return (size_t)SSD_MMA_ROWS * SSD_SLAB_LD * sizeof(float); }
/* ssd_load_split for a compile-time (R, CN) fp32 matrix m (16-byte aligned), hi and lo both written: BATCH
   16-byte loads per thread are issued before any of them is used (ssd_load_split's loop has 4 in flight) */
template <int R, int CN, int BATCH>
__device__ static inline void ssd_load_split_all(floatX* hi, floatX* lo, int ld, const float* m) {
    constexpr int NV = CN / 4, RSTEP = SSD_MMA_THREADS / NV, NPASS = R / RSTEP;
    static_assert(SSD_MMA_THREADS % NV == 0 && R % RSTEP == 0 && NPASS % BATCH == 0, "ssd_load_split_all: shape");
    int c = (threadIdx.x % NV) * 4, r0 = threadIdx.x / NV;
#pragma unroll
    for (int p0 = 0; p0 < NPASS; p0 += BATCH) {
        float4 q[BATCH];
#pragma unroll
        for (int k = 0; k < BATCH; k++) q[k] = *(const float4*)(m + (size_t)(r0 + (p0 + k) * RSTEP) * CN + c);
#pragma unroll
        for (int k = 0; k < BATCH; k++) {
            int r = r0 + (p0 + k) * RSTEP;
            __nv_bfloat162 h01 = __floats2bfloat162_rn(q[k].x, q[k].y), h23 = __floats2bfloat162_rn(q[k].z, q[k].w);
            *(uint2*)(hi + r * ld + c) = make_uint2(*(uint32_t*)&h01, *(uint32_t*)&h23);
            uint32_t l01 = ssd_pack_bf16(q[k].x - __low2float(h01), q[k].y - __high2float(h01));
            uint32_t l23 = ssd_pack_bf16(q[k].z - __low2float(h23), q[k].w - __high2float(h23));
            *(uint2*)(lo + r * ld + c) = make_uint2(l01, l23);
        }
    }
}

/* For 64 rows j of one (b, chunk) and the hg heads h0.. of one head-group, looping over the i tiles i >= j (grid
   (nchunks, B * H/hg, ceil(Q/64)), blockIdx.z the row tile; tuned: (ceil(Q/64), nchunks, B * H/hg)); per head:
   dxs_j = exp(cum_last - cum_j) B_j dH^T + sum_i M[j,i] dy_i,   M[j,i] = (B_j.C_i) exp(cum_i - cum_j) (i >= j)
   dB_j  = dt_j [exp(cum_last - cum_j) x_j dH + sum_i Z[j,i] C_i], Z[j,i] = (x_j.dy_i) exp(cum_i - cum_j)
   dx_j = dt_j dxs_j + D dy_j; x_j.dxs_j, x_j.(state part of dxs_j), x_j.dy_j;
   W[i,j] = Z[j,i] (B_j.C_i) dt_j in fp32: colf_j = sum_i W[i,j] and rowp[jt][i] = sum_{j in this tile} W[i,j].
   dB_j is summed over the heads in registers (dt_j folded into the Z rows) and written once, to
   dbo + row * dbo_stride + (direct ? dbo_col0 + g N : hgi N). */
#define SSD_DXDB_MIN_BLOCKS 2  /* 2 blocks/SM without the spill beat 3 with it: 1.471 vs 1.507 ms fwd+bwd (NOTES_ssd.md) */
#define SSD_DC_MIN_BLOCKS 3   /* without the cap, 177 registers at P = 64, N = 128: only 2 blocks per SM */
/* SEG: doc_end of the 64 rows j after the slab (or after red); the shared-memory rules (ssd_bwd_tuned_takes,
   ssd_bwd_tiles_fit) count it with or without seq_idx, so a shape takes the same kernels either way */
#define SSD_DXDB_SEG_SMEM (SSD_MMA_ROWS * sizeof(int))
template <int PMAX, int NMAX, bool EXACT, bool TUNED, bool SEG>  /* TUNED: see "the tuned form" above */
__global__ static void __launch_bounds__(SSD_MMA_THREADS, SSD_DXDB_MIN_BLOCKS)
ssd_bwd_dxdb_kernel(floatX* dxbc, floatX* dbo, int dbo_stride, int dbo_col0, int direct, float* xdxs, float* xdxs_st,
                    float* xdy, float* colf, float* rowp, const floatX* dy, const floatX* xbc, int xbc_stride,
                    const float* dt, const float* cum, const int* seg, const float* dstates, const float* bct,
                    const float* Dskip, int T, int H, int P, int N, int G, int Q, int hg) {
    if (EXACT) { P = PMAX; N = NMAX; }  /* compile-time widths: the n-tile guards fold, the k loops unroll */
    extern __shared__ __align__(16) unsigned char ssd_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD_MMA_ROWS), nhg = H / hg;
    /* tuned: grid (nti, nchunks, B * H/hg), the row tiles of one head-group adjacent (see "the tuned form") */
    int c = TUNED ? blockIdx.y : blockIdx.x, rt = TUNED ? blockIdx.x : blockIdx.z, bhg = TUNED ? blockIdx.z : blockIdx.y;
    int b = bhg / nhg, hgi = bhg % nhg, h0 = hgi * hg;
    int g = h0 / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), j0 = rt * SSD_MMA_ROWS;
    if (j0 >= len) return;
    int E = H * P, ldn = N + 8, ldp = P + 8;
    floatX* Xj = (floatX*)ssd_smem;             /* (64, ldp) x rows j */
    floatX* Bj = Xj + SSD_MMA_ROWS * ldp;           /* first B rows j (64, ldn), dH hi, lo (2 x (P, ldn)); then */
    floatX* R = Bj + SSD_MMA_ROWS * ldn;
    floatX* Ci = Bj;                             /* the i tiles: 2 x (64, ldn) C rows i */
    floatX* Yi = Ci + 2 * SSD_MMA_ROWS * ldn;       /* 2 x (64, ldp) dy rows i */
    float* ci = (float*)(Bj + ssd_region_bwd(P, N, 1));  /* 2 x 64 cum_i */
    float* red = ci + 2 * SSD_MMA_ROWS;                    /* 4 warps x 64 partial row sums */
    float* slab = red + 4 * SSD_MMA_ROWS;                  /* tuned: (64, SSD_SLAB_LD) B_j . C_i, columns i - j0 */
    const int* segc = SEG ? seg + (size_t)b * T + t0 : NULL;
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Cg = rows + E + G * N + g * N;
    const float* bcc = bct + ((size_t)b * nch + c) * G * Q * Q + (size_t)g * Q * Q;  /* [j][i] = B_j . C_i */
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    int rj[2] = {j0 + m0 + lane / 4, j0 + m0 + lane / 4 + 8};
    int it_end = CEIL_DIV(len, SSD_MMA_ROWS);
    /* SEG: where the rows' documents end (ssd_seg_doc_end): the pair (i, j) is kept iff i < doc_end_j, row j enters
       the leaving state iff doc_end_j == len. Tuned, off-diagonal tiles (every i after the whole j tile): kept iff
       doc_end_j >= j0 + 64 (no boundary after j in the j tile: a row factor, folded into er) and i < doc_end of
       the tile's last row (no boundary from the j tile's end to i: a column factor, folded into ci), so their inner
       loop has no test.
       doc_end of the 64 rows waits in shared memory (de) and is read where used (each head's es / er, the masked
       tiles): two registers more across the tile loop spill at P = 64, N = 128. */
    int* de = (int*)(slab + (TUNED ? SSD_MMA_ROWS * SSD_SLAB_LD : 0));
    if (SEG) {
        int d[2];
        ssd_seg_doc_end(d, segc, rj, j0, len);
        if (tig == 0) { de[m0 + lane / 4] = d[0]; de[m0 + lane / 4 + 8] = d[1]; }
        __syncwarp();  /* read by the quad's other lanes */
    }
    if (TUNED) {
        /* the slab, once for every head of the block: rows j0.., columns i in [j0, 64 it_end); the bct kernel wrote
           all of them (zeros where a row is past the chunk's end); committed with the first head's tiles */
        int nq = (it_end - rt) * (SSD_MMA_ROWS / 4);
        for (int idx = threadIdx.x; idx < SSD_MMA_ROWS * nq; idx += SSD_MMA_THREADS) {
            int jj = idx / nq, q = idx % nq;
            ssd_cp_async16(slab + jj * SSD_SLAB_LD + 4 * q, bcc + (size_t)(j0 + jj) * Q + j0 + 4 * q, 1);
        }
    }
    float adb[NMAX / 8][4];  /* dB_j summed over the block's heads */
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) adb[nt][0] = adb[nt][1] = adb[nt][2] = adb[nt][3] = 0.f;
    for (int hh = 0; hh < hg; hh++) {
        int h = h0 + hh, bh = b * H + h;
        const floatX* Yg = dy + (size_t)(b * T + t0) * E + h * P;
        const float* cumc = cum + (size_t)bh * T + t0;
        const float* dtc = dt + (size_t)bh * T + t0;
        ssd_load_tile(Bj, ldn, rows + E + g * N, xbc_stride, j0, len, N);
        ssd_load_tile(Xj, ldp, rows + h * P, xbc_stride, j0, len, P);
        ssd_cp_commit();
        if (TUNED) {
            constexpr int NPASS = PMAX * NMAX / (4 * SSD_MMA_THREADS);  /* all of them, up to SSD_DXDB_STATE_BATCH */
            ssd_load_split_all<PMAX, NMAX, (NPASS > SSD_DXDB_STATE_BATCH ? SSD_DXDB_STATE_BATCH : NPASS)>(
                R, R + P * ldn, ldn, dstates + ssd_state_off(b, c, h, nch, H, P * N));
        } else {
            ssd_load_split(R, R + P * ldn, ldn, dstates + ssd_state_off(b, c, h, nch, H, P * N), P, N);
        }
        float cum_last = cumc[len - 1], cum_r[2], dt_r[2], es[2];
        /* tuned, the off-diagonal i tiles (it > rt: the j tile is whole, every i > every j): cref = cum of the
           j tile's last row; decay = exp(cum_i - cref) (per column, in ci) times er = exp(cref - cum_j) (per row) */
        float cref = TUNED && j0 + SSD_MMA_ROWS <= len ? cumc[j0 + SSD_MMA_ROWS - 1] : 0.f, er[2];
        for (int r = 0; r < 2; r++) {
            int ok = rj[r] < len, dend = SEG ? de[m0 + lane / 4 + 8 * r] : len;
            cum_r[r] = ok ? cumc[rj[r]] : 0.f;
            dt_r[r] = ok ? dtc[rj[r]] : 0.f;
            es[r] = ok && (!SEG || dend == len) ? expf(cum_last - cum_r[r]) : 0.f;
            er[r] = TUNED && ok && (!SEG || dend >= j0 + SSD_MMA_ROWS) ? __expf(cref - cum_r[r]) : 0.f;
        }
        ssd_cp_wait<0>();
        __syncthreads();
        float adx[PMAX / 8][4];
#pragma unroll
        for (int nt = 0; nt < PMAX / 8; nt++) adx[nt][0] = adx[nt][1] = adx[nt][2] = adx[nt][3] = 0.f;
        /* state parts: B_j dH^T (B(k = n, col = p) = dH[p, n]) and dt_j x_j dH (B(k = p, n) = dH[p, n]) */
        for (int part = 0; part < 2; part++)
            ssd_mma_nt<PMAX / 8>(adx, Bj + m0 * ldn, ldn, R + part * P * ldn, ldn, N, P);
#pragma unroll
        for (int nt = 0; nt < PMAX / 8; nt++) {
            adx[nt][0] *= es[0]; adx[nt][1] *= es[0]; adx[nt][2] *= es[1]; adx[nt][3] *= es[1];
        }
        float sd[2] = {es[0] * dt_r[0], es[1] * dt_r[1]};
        ssd_state_nn<NMAX>(adb, NULL, Xj + m0 * ldp, ldp, R, R + P * ldn, ldn, P, N, sd, NULL, 0);
        float st[2];
        ssd_rowdot<PMAX / 8>(st, adx, Xj + m0 * ldp, ldp, P);  /* x_j . (state part of dxs_j) */
        __syncthreads();  /* dH no longer needed: its space takes the i tiles */
        ssd_load_tile(Ci, ldn, Cg, xbc_stride, j0, len, N);
        ssd_load_tile(Yi, ldp, Yg, E, j0, len, P);
        ssd_cp_commit();
        if (threadIdx.x < SSD_MMA_ROWS) {
            int i = j0 + threadIdx.x;
            ci[threadIdx.x] = i < len ? cumc[i] : 0.f;
        }
        float colacc[2] = {0.f, 0.f};
        for (int it = rt; it < it_end; it++) {
            int buf = (it - rt) & 1;
            if (it + 1 < it_end) {
                int nb = buf ^ 1, i0n = (it + 1) * SSD_MMA_ROWS;
                ssd_load_tile(Ci + nb * SSD_MMA_ROWS * ldn, ldn, Cg, xbc_stride, i0n, len, N);
                ssd_load_tile(Yi + nb * SSD_MMA_ROWS * ldp, ldp, Yg, E, i0n, len, P);
                ssd_cp_commit();
                if (threadIdx.x < SSD_MMA_ROWS) {  /* tuned: tile it + 1 > rt is off-diagonal: exp(cum_i - cref) */
                    int i = i0n + threadIdx.x;
                    ci[nb * SSD_MMA_ROWS + threadIdx.x] =
                        i >= len ? 0.f : !TUNED ? cumc[i] : SEG && i >= de[SSD_MMA_ROWS - 1] ? 0.f  /* 2 documents */
                                                                          : __expf(cumc[i] - cref);
                }
                ssd_cp_wait<1>();
            } else {
                ssd_cp_wait<0>();
            }
            __syncthreads();
            const floatX* Cb = Ci + buf * SSD_MMA_ROWS * ldn;
            const floatX* Yb = Yi + buf * SSD_MMA_ROWS * ldp;
            const float* cib = ci + buf * SSD_MMA_ROWS;
            float rp[8][2];
#pragma unroll
            for (int ih = 0; ih < 2; ih++) {  /* two halves of 32 columns i: fewer live registers */
                if (ih == 0 && it == rt && m0 >= 32) {  /* diagonal tile: rows j >= 32 have nothing at i < 32 */
#pragma unroll
                    for (int nt = 0; nt < 4; nt++) rp[nt][0] = rp[nt][1] = 0.f;
                    if (TUNED && lane < 4)  /* this warp's row-sum partials of the half: zero */
#pragma unroll
                        for (int k = 0; k < 8; k++) red[warp * SSD_MMA_ROWS + k * 4 + lane] = 0.f;
                    continue;
                }
                float bc[4][4], xy[4][4];
                if (!TUNED) {
#pragma unroll
                    for (int nt = 0; nt < 4; nt++)  /* B_j . C_i from ssd_bwd_bct_kernel (L2), zero outside the chunk */
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            int i = it * SSD_MMA_ROWS + ih * 32 + nt * 8 + 2 * tig + (e & 1), j = rj[e / 2];
                            bc[nt][e] = i < len && j < len ? bcc[(size_t)j * Q + i] : 0.f;
                        }
                }
#pragma unroll
                for (int nt = 0; nt < 4; nt++) xy[nt][0] = xy[nt][1] = xy[nt][2] = xy[nt][3] = 0.f;
                ssd_mma_nt<4>(xy, Xj + m0 * ldp, ldp, Yb + ih * 32 * ldp, ldp, P, 32);  /* x_j . dy_i */
                if (TUNED) {  /* the slab's (i, i + 1) pairs; finite everywhere, the mask below zeroes the decay */
#pragma unroll
                    for (int nt = 0; nt < 4; nt++)
#pragma unroll
                        for (int r = 0; r < 2; r++) {
                            float2 v = *(const float2*)(slab + (m0 + lane / 4 + 8 * r) * SSD_SLAB_LD +
                                                        (it - rt) * SSD_MMA_ROWS + ih * 32 + nt * 8 + 2 * tig);
                            bc[nt][2 * r] = v.x;
                            bc[nt][2 * r + 1] = v.y;
                        }
                }
                if (TUNED && it > rt)  /* off-diagonal: no mask (i >= len, SEG: 0 in ci or er), no exp */
#pragma unroll
                    for (int nt = 0; nt < 4; nt++) {
                        rp[ih * 4 + nt][0] = rp[ih * 4 + nt][1] = 0.f;
                        float2 cf = *(const float2*)(cib + ih * 32 + nt * 8 + 2 * tig);
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            int r = e / 2;
                            float dec = ((e & 1) ? cf.y : cf.x) * er[r];
                            float m = bc[nt][e] * dec, zd = xy[nt][e] * dec * dt_r[r];
                            float w = zd * bc[nt][e];
                            colacc[r] += w;
                            rp[ih * 4 + nt][e & 1] += w;
                            bc[nt][e] = m;
                            xy[nt][e] = zd;
                        }
                    }
                else {
                    int dend[2];  /* SEG: the rows' doc_end */
                    if (SEG) { dend[0] = de[m0 + lane / 4]; dend[1] = de[m0 + lane / 4 + 8]; }
#pragma unroll
                    for (int nt = 0; nt < 4; nt++) {
                        rp[ih * 4 + nt][0] = rp[ih * 4 + nt][1] = 0.f;
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            int ii = ih * 32 + nt * 8 + 2 * tig + (e & 1), i = it * SSD_MMA_ROWS + ii, r = e / 2;
                            int ok = SEG ? i >= rj[r] && i < dend[r]  /* dend <= len; rows past the end: dend = len */
                                         : i >= rj[r] && i < len && rj[r] < len;
                            float dec = ok ? __expf(cib[ii] - cum_r[r]) : 0.f;
                            float m = bc[nt][e] * dec, zd = xy[nt][e] * dec * dt_r[r];  /* Z[j,i] dt_j */
                            float w = zd * bc[nt][e];                                   /* W[i,j] */
                            colacc[r] += w;
                            rp[ih * 4 + nt][e & 1] += w;
                            bc[nt][e] = m;
                            xy[nt][e] = zd;
                        }
                    }
                }
                if (TUNED)  /* this half's row sums over the warp's 16 rows j now: the 8 partials die here */
#pragma unroll
                    for (int nt = 0; nt < 4; nt++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            float v = rp[ih * 4 + nt][e];
                            v += __shfl_xor_sync(0xffffffffu, v, 4);
                            v += __shfl_xor_sync(0xffffffffu, v, 8);
                            v += __shfl_xor_sync(0xffffffffu, v, 16);
                            if (lane < 4) red[warp * SSD_MMA_ROWS + (ih * 4 + nt) * 8 + 2 * tig + e] = v;
                        }
                uint32_t mf[2][4], zf[2][4];
                ssd_pack_a<2>(mf, bc);
                ssd_pack_a<2>(zf, xy);
                ssd_mma_rn<2, PMAX / 8>(adx, mf, Yb + ih * 32 * ldp, ldp, P);  /* += M dy_i */
                ssd_mma_rn<2, NMAX / 8>(adb, zf, Cb + ih * 32 * ldn, ldn, N);  /* += (dt Z) C_i */
            }
            /* row sums over this tile's j of W[i, j]: over the 8 row groups of a warp (tuned: done above),
               then the 4 warps in order */
            if (!TUNED)
#pragma unroll
                for (int k = 0; k < 8; k++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float v = rp[k][e];
                        v += __shfl_xor_sync(0xffffffffu, v, 4);
                        v += __shfl_xor_sync(0xffffffffu, v, 8);
                        v += __shfl_xor_sync(0xffffffffu, v, 16);
                        if (lane < 4) red[warp * SSD_MMA_ROWS + k * 8 + 2 * tig + e] = v;
                    }
            __syncthreads();
            if (threadIdx.x < SSD_MMA_ROWS) {
                int i = it * SSD_MMA_ROWS + threadIdx.x;
                if (i < len)
                    rowp[(((size_t)bh * nch + c) * nti + rt) * Q + i] =
                        red[threadIdx.x] + red[SSD_MMA_ROWS + threadIdx.x] + red[2 * SSD_MMA_ROWS + threadIdx.x] +
                        red[3 * SSD_MMA_ROWS + threadIdx.x];
            }
            __syncthreads();
        }
        /* this head's outputs per row j */
        float xd[2];
        ssd_rowdot<PMAX / 8>(xd, adx, Xj + m0 * ldp, ldp, P);  /* x_j . dxs_j */
        float Dh = Dskip[h];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int ok = rj[r] < len;
            size_t row = (size_t)(b * T + t0 + (ok ? rj[r] : 0));
            /* tuned: dy_j from the diagonal tile's dy buffer (buffer 0; Q <= 128: no later tile went there) */
            const floatX* dyr = TUNED ? Yi + (m0 + lane / 4 + 8 * r) * ldp : dy + row * E + h * P;
            floatX* dxr = dxbc + row * xbc_stride + h * P;
            const floatX* xr = Xj + (m0 + lane / 4 + 8 * r) * ldp;
            float sdy = 0.f;
#pragma unroll
            for (int nt = 0; nt < PMAX / 8; nt++) {
                if (nt * 8 < P && ok) {
                    int p = nt * 8 + 2 * tig;
                    __nv_bfloat162 dv = *(const __nv_bfloat162*)(dyr + p);
                    float d0 = __low2float(dv), d1 = __high2float(dv);
                    sdy += d0 * toF(xr[p]) + d1 * toF(xr[p + 1]);
                    *(__nv_bfloat162*)(dxr + p) = __floats2bfloat162_rn(dt_r[r] * adx[nt][2 * r] + Dh * d0,
                                                                       dt_r[r] * adx[nt][2 * r + 1] + Dh * d1);
                }
            }
            sdy = ssd_quad_sum(sdy);
            float cs = ssd_quad_sum(colacc[r]);
            if (ok && tig == 0) {
                size_t o = (size_t)bh * T + t0 + rj[r];
                xdxs[o] = xd[r];
                xdxs_st[o] = st[r];
                xdy[o] = sdy;
                colf[o] = cs;
            }
        }
        __syncthreads();  /* Xj was read above: the next head's tiles overwrite it */
    }
    int col = direct ? dbo_col0 + g * N : hgi * N;
    ssd_store_rows<NMAX>(dbo, (size_t)dbo_stride, col, adb, (size_t)(b * T + t0 + rj[0]), (size_t)(b * T + t0 + rj[1]),
                          rj[0] < len, rj[1] < len, N);
}

/* For 64 rows i of one (b, chunk) and the hg heads h0.. of one head-group, looping over the j tiles j <= i (grid as
   the dxdb kernel's; the last row tile, the longest, first):
   dC_i = sum_j WD[i,j] B_j + exp(cum_i) dy_i Hprev,  WD[i,j] = (dy_i.x_j) exp(cum_i - cum_j) dt_j  (j <= i),
   summed over the heads in registers; rowi_i = dy_i . y_off_i per head; dC written as dB in ssd_bwd_dxdb_kernel. */
template <int PMAX, int NMAX, bool EXACT, bool TUNED, bool SEG>
__global__ static void __launch_bounds__(SSD_MMA_THREADS, SSD_DC_MIN_BLOCKS)
ssd_bwd_dc_kernel(floatX* dco, int dco_stride, int dco_col0, int direct, float* rowi, const floatX* dy,
                   const floatX* xbc, int xbc_stride, const float* dt, const float* cum, const int* seg,
                   const float* states, int T, int H, int P, int N, int G, int Q, int hg) {
    if (EXACT) { P = PMAX; N = NMAX; }  /* compile-time widths: the n-tile guards fold, the k loops unroll */
    extern __shared__ __align__(16) unsigned char ssd_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD_MMA_ROWS), nhg = H / hg;
    /* tuned: grid (nti, nchunks, B * H/hg), the row tiles of one head-group adjacent, the longest first */
    int c = TUNED ? blockIdx.y : blockIdx.x, bhg = TUNED ? blockIdx.z : blockIdx.y;
    int rt = nti - 1 - (int)(TUNED ? blockIdx.x : blockIdx.z), b = bhg / nhg, hgi = bhg % nhg, h0 = hgi * hg;
    int g = h0 / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD_MMA_ROWS;
    if (i0 >= len) return;
    int E = H * P, ldn = N + 8, ldp = P + 8;
    floatX* Ys = (floatX*)ssd_smem;             /* (64, ldp) dy rows i */
    floatX* Cs = Ys + SSD_MMA_ROWS * ldp;           /* first C rows i (64, ldn), Hprev hi, lo (2 x (P, ldn)); then */
    floatX* R = Cs + SSD_MMA_ROWS * ldn;
    floatX* Bs = Cs;                             /* the j tiles: 2 x (64, ldn) B rows j */
    floatX* Xs = Bs + 2 * SSD_MMA_ROWS * ldn;       /* 2 x (64, ldp) x rows j */
    float* cj = (float*)(Cs + ssd_region_bwd(P, N, 1));  /* 2 x 64 cum_j */
    float* dj = cj + 2 * SSD_MMA_ROWS;                     /* 2 x 64 dt_j */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Bg = rows + E + g * N;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    int ri[2] = {i0 + m0 + lane / 4, i0 + m0 + lane / 4 + 8};
    int sg_r[2];  /* SEG: the rows' segment starts */
    for (int r = 0; r < 2; r++) sg_r[r] = SEG && ri[r] < len ? seg[(size_t)b * T + t0 + ri[r]] : -1;
    float acc[NMAX / 8][4];  /* dC_i summed over the block's heads */
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    for (int hh = 0; hh < hg; hh++) {
        int h = h0 + hh, bh = b * H + h;
        const floatX* Xg = rows + h * P;
        const float* cumc = cum + (size_t)bh * T + t0;
        const float* dtc = dt + (size_t)bh * T + t0;
        ssd_load_tile(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
        ssd_load_tile(Ys, ldp, dy + (size_t)(b * T + t0) * E + h * P, E, i0, len, P);
        ssd_cp_commit();
        if (TUNED) {
            /* half of the loads in flight at once: the 168-register cap leaves no room for all */
            ssd_load_split_all<PMAX, NMAX, PMAX * NMAX / (8 * SSD_MMA_THREADS)>(
                R, R + P * ldn, ldn, states + ssd_state_off(b, c, h, nch, H, P * N));
        } else {
            ssd_load_split(R, R + P * ldn, ldn, states + ssd_state_off(b, c, h, nch, H, P * N), P, N);
        }
        float cum_r[2];
        for (int r = 0; r < 2; r++) cum_r[r] = ri[r] < len ? cumc[ri[r]] : 0.f;
        ssd_cp_wait<0>();
        __syncthreads();
        /* exp(cum_i) dy_i Hprev (B(k = p, n) = Hprev[p, n] = hi + lo), and its dot with C_i (rowi) */
        float e[2] = {expf(cum_r[0]), expf(cum_r[1])}, pw[2] = {0.f, 0.f};
        if (SEG) { e[0] = sg_r[0] >= 0 ? 0.f : e[0]; e[1] = sg_r[1] >= 0 ? 0.f : e[1]; }  /* state of another document */
        ssd_state_nn<NMAX>(acc, pw, Ys + m0 * ldp, ldp, R, R + P * ldn, ldn, P, N, e, Cs + m0 * ldn, ldn);
        pw[0] = ssd_quad_sum(pw[0]);
        pw[1] = ssd_quad_sum(pw[1]);
        if (tig == 0)
            for (int r = 0; r < 2; r++)
                if (ri[r] < len) rowi[(size_t)bh * T + t0 + ri[r]] = pw[r];
        __syncthreads();  /* Hprev no longer needed: its space takes the j tiles */
        ssd_load_tile(Bs, ldn, Bg, xbc_stride, 0, len, N);
        ssd_load_tile(Xs, ldp, Xg, xbc_stride, 0, len, P);
        ssd_cp_commit();
        if (threadIdx.x < SSD_MMA_ROWS) {
            int j = threadIdx.x;
            cj[j] = j < len ? cumc[j] : 0.f;
            dj[j] = j < len ? dtc[j] : 0.f;
        }
        for (int jt = 0; jt <= rt; jt++) {
            int buf = jt & 1;
            if (jt < rt) {
                int nb = buf ^ 1, j0n = (jt + 1) * SSD_MMA_ROWS;
                ssd_load_tile(Bs + nb * SSD_MMA_ROWS * ldn, ldn, Bg, xbc_stride, j0n, len, N);
                ssd_load_tile(Xs + nb * SSD_MMA_ROWS * ldp, ldp, Xg, xbc_stride, j0n, len, P);
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
            const floatX* Bb = Bs + buf * SSD_MMA_ROWS * ldn;
            const floatX* Xb = Xs + buf * SSD_MMA_ROWS * ldp;
            const float* cjb = cj + buf * SSD_MMA_ROWS;
            const float* djb = dj + buf * SSD_MMA_ROWS;
#pragma unroll
            for (int jh = 0; jh < 2; jh++) {
                if (jh == 1 && jt == rt && m0 < 32) continue;  /* diagonal tile: rows i < 32 have nothing at j >= 32 */
                float wd[4][4];
#pragma unroll
                for (int nt = 0; nt < 4; nt++) wd[nt][0] = wd[nt][1] = wd[nt][2] = wd[nt][3] = 0.f;
                ssd_mma_nt<4>(wd, Ys + m0 * ldp, ldp, Xb + jh * 32 * ldp, ldp, P, 32);  /* dy_i . x_j */
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
#pragma unroll
                    for (int k = 0; k < 4; k++) {
                        int jj = jh * 32 + nt * 8 + 2 * tig + (k & 1), j = jt * SSD_MMA_ROWS + jj, r = k / 2;
                        int ok = j <= ri[r] && ri[r] < len && j < len && (!SEG || j >= sg_r[r]);
                        wd[nt][k] = ok ? wd[nt][k] * __expf(cum_r[r] - cjb[jj]) * djb[jj] : 0.f;
                    }
                uint32_t wf[2][4];
                ssd_pack_a<2>(wf, wd);
                ssd_mma_rn<2, NMAX / 8>(acc, wf, Bb + jh * 32 * ldn, ldn, N);  /* += WD B_j */
            }
            __syncthreads();  /* (the last one also frees Ys, Cs for the next head) */
        }
    }
    int col = direct ? dco_col0 + g * N : hgi * N;
    ssd_store_rows<NMAX>(dco, (size_t)dco_stride, col, acc, (size_t)(b * T + t0 + ri[0]), (size_t)(b * T + t0 + ri[1]),
                          ri[0] < len, ri[1] < len, N);
}

/* dB, dC of each group = the sum of its H/(G hg) head-group partials (B*T, H/hg, N) bf16, in order; 8 columns (16
   bytes) per thread */
__global__ static void ssd_bwd_group_sum_kernel(floatX* dxbc, int xbc_stride, const floatX* pB, const floatX* pC, int BT,
                                             int nhg, int N, int G, int E) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    int nv = N / 8;
    if (idx >= (size_t)BT * G * nv) return;
    int n = (int)(idx % nv) * 8, g = (int)((idx / nv) % G);
    size_t row = idx / ((size_t)G * nv);
    int kpg = nhg / G;
    float sB[8], sC[8];
#pragma unroll
    for (int e = 0; e < 8; e++) sB[e] = sC[e] = 0.f;
    for (int k = g * kpg; k < (g + 1) * kpg; k++) {
        float4 vb = *(const float4*)(pB + (row * nhg + k) * N + n), vc = *(const float4*)(pC + (row * nhg + k) * N + n);
        const floatX* eb = (const floatX*)&vb;
        const floatX* ec = (const floatX*)&vc;
#pragma unroll
        for (int e = 0; e < 8; e++) { sB[e] += toF(eb[e]); sC[e] += toF(ec[e]); }
    }
    float4 ob, oc;
    floatX* pb = (floatX*)&ob;
    floatX* pc = (floatX*)&oc;
#pragma unroll
    for (int e = 0; e < 8; e++) { pb[e] = fromF(sB[e]); pc[e] = fromF(sC[e]); }
    *(float4*)(dxbc + row * xbc_stride + E + g * N + n) = ob;
    *(float4*)(dxbc + row * xbc_stride + E + G * N + g * N + n) = oc;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* launchers */

/* heads per block of the row-tile kernels: the largest divisor of H/G up to SSD_BWD_MAX_HEADS (4: the dB, dC sums
   over 4 heads in registers, with up to 4 heads per group written straight into dxbc; NOTES_ssd.md, "Version 4") */
#define SSD_BWD_MAX_HEADS 4
static inline int ssd_bwd_heads_per_block(int H, int G) {
    int hpg = H / G, best = 1;
    for (int k = 1; k <= SSD_BWD_MAX_HEADS && k <= hpg; k++)
        if (hpg % k == 0) best = k;
    return best;
}
/* the tuned form of the row-tile kernels (TUNED) runs where P, N are their compile-time widths (64 or 128), Q is 64
   or 128 (the dxdb kernel's B_j . C_i slab holds 128 columns), bct and the states are 16-byte aligned and the dxdb
   kernel with its slab fits the shared memory a block may take (P = 64, N = 128: 96.5 KB, under the 99 KB of
   sm_86 / 89 / 120; P = 128, N = 64 or 128: 104.5 / 137.5 KB, the A100's and Hopper's only) */
static inline int ssd_bwd_tuned_takes(int P, int N, int Q, const void* bct, const void* states) {
    return (P == 64 || P == 128) && (N == 64 || N == 128) && (Q == 64 || Q == 128) && (uintptr_t)bct % 16 == 0 &&
           (uintptr_t)states % 16 == 0 &&
           ssd_smem_dxdb(P, N) + ssd_smem_slab() + SSD_DXDB_SEG_SMEM <= (size_t)cuda_smem_optin();
}
/* the row-tile kernels (either form) run where their shared memory fits (P = N = 128: 103.5 KB, over the 99 KB of
   sm_86 / 89 / 120; the simple kernels need 105.75 KB there, so ssd_backward refuses that shape on those GPUs) */
static inline int ssd_bwd_tiles_fit_in(int P, int N, int smem_optin) {
    return ssd_max(ssd_smem_dxdb(P, N) + SSD_DXDB_SEG_SMEM, ssd_smem_dc(P, N)) <= (size_t)smem_optin;
}
static inline int ssd_bwd_tiles_fit(int P, int N) { return ssd_bwd_tiles_fit_in(P, N, cuda_smem_optin()); }
/* B_j . C_i per group, the two row-tile kernels and, where a group has more than one head-group, the group sum;
   SEG (s.seg not NULL): the instantiations with document boundaries */
template <int PMAX, int NMAX, bool EXACT, bool TUNED, bool SEG>
static void ssd_launch_bwd_tiles_s(floatX* dxbc, SSDWork w, float* colf, float* rowp, const floatX* dy, const floatX* xbc,
                                   int xbc_stride, SSDSaved s, const float* Dskip, int B, int T, int H, int P, int N,
                                   int G, int Q, cudaStream_t stream) {
    int nti = CEIL_DIV(Q, SSD_MMA_ROWS), nch = ssd_nchunks(T, Q), E = H * P;
    int hg = ssd_bwd_heads_per_block(H, G), nhg = H / hg, direct = hg == H / G;
    ssd_bwd_bct_kernel<<<dim3(nch * nti * nti, B * G), SSD_MMA_THREADS, 0, stream>>>(w.bct, xbc, xbc_stride, T, H, P, N,
                                                                                    G, Q);
    cudaCheckLast();
    /* direct: dB, dC into dxbc; else bf16 partials (B*T, nhg, N) in the per-head regions */
    /* the group sum reads them 16 bytes at a time: every workspace region starts 16-byte aligned (ssd_work_layout,
       from the 16-byte aligned workspace ssd_backward checks) */
    floatX* pB = direct ? dxbc : (floatX*)w.dB_h;
    floatX* pC = direct ? dxbc : (floatX*)w.dC_h;
    int pstride = direct ? xbc_stride : nhg * N;
    dim3 grid = TUNED ? dim3(nti, nch, B * nhg) : dim3(nch, B * nhg, nti);  /* tuned: row tiles adjacent */
    size_t smem = ssd_smem_dxdb(P, N) + (TUNED ? ssd_smem_slab() : 0) + (SEG ? SSD_DXDB_SEG_SMEM : 0);
    ssd_set_smem((const void*)ssd_bwd_dxdb_kernel<PMAX, NMAX, EXACT, TUNED, SEG>, smem);
    ssd_bwd_dxdb_kernel<PMAX, NMAX, EXACT, TUNED, SEG><<<grid, SSD_MMA_THREADS, smem, stream>>>(
        dxbc, pB, pstride, E, direct, w.xdxs, w.xdxs_st, w.xdy, colf, rowp, dy, xbc, xbc_stride, s.dt, s.cum, s.seg,
        w.dstates, w.bct, Dskip, T, H, P, N, G, Q, hg);
    cudaCheckLast();
    smem = ssd_smem_dc(P, N);
    ssd_set_smem((const void*)ssd_bwd_dc_kernel<PMAX, NMAX, EXACT, TUNED, SEG>, smem);
    ssd_bwd_dc_kernel<PMAX, NMAX, EXACT, TUNED, SEG><<<grid, SSD_MMA_THREADS, smem, stream>>>(
        pC, pstride, E + G * N, direct, w.roww, dy, xbc, xbc_stride, s.dt, s.cum, s.seg, s.states, T, H, P, N, G, Q,
        hg);
    cudaCheckLast();
    if (!direct) {
        size_t n = (size_t)B * T * G * (N / 8);
        ssd_bwd_group_sum_kernel<<<(unsigned)CEIL_DIV(n, (size_t)256), 256, 0, stream>>>(dxbc, xbc_stride, pB, pC, B * T,
                                                                                        nhg, N, G, E);
        cudaCheckLast();
    }
}
template <int PMAX, int NMAX, bool EXACT, bool TUNED>
static void ssd_launch_bwd_tiles_e(floatX* dxbc, SSDWork w, float* colf, float* rowp, const floatX* dy, const floatX* xbc,
                                   int xbc_stride, SSDSaved s, const float* Dskip, int B, int T, int H, int P, int N,
                                   int G, int Q, cudaStream_t stream) {
    if (s.seg)
        ssd_launch_bwd_tiles_s<PMAX, NMAX, EXACT, TUNED, true>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T,
                                                               H, P, N, G, Q, stream);
    else
        ssd_launch_bwd_tiles_s<PMAX, NMAX, EXACT, TUNED, false>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T,
                                                                H, P, N, G, Q, stream);
}
template <int PMAX, int NMAX>
static int ssd_launch_bwd_tiles_w(floatX* dxbc, SSDWork w, float* colf, float* rowp, const floatX* dy, const floatX* xbc,
                                  int xbc_stride, SSDSaved s, const float* Dskip, int B, int T, int H, int P, int N, int G,
                                  int Q, cudaStream_t stream) {
    if (P == PMAX && N == NMAX && ssd_bwd_tuned_takes(P, N, Q, w.bct, s.states)) {
        ssd_launch_bwd_tiles_e<PMAX, NMAX, true, true>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N,
                                                       G, Q, stream);
        return SSD_BWD_TILES_TUNED;
    }
    if (P == PMAX && N == NMAX)
        ssd_launch_bwd_tiles_e<PMAX, NMAX, true, false>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P,
                                                        N, G, Q, stream);
    else
        ssd_launch_bwd_tiles_e<PMAX, NMAX, false, false>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P,
                                                         N, G, Q, stream);
    return SSD_BWD_TILES;
}
/* the row-tile kernels with register tiles of 64 or 128 columns for P and N; returns SSDPath's bwd_tiles */
static int ssd_launch_bwd_tiles(floatX* dxbc, SSDWork w, float* colf, float* rowp, const floatX* dy, const floatX* xbc,
                                int xbc_stride, SSDSaved s, const float* Dskip, int B, int T, int H, int P, int N, int G,
                                int Q, cudaStream_t stream) {
#define SSD_BWD_ARGS dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream
    if (P <= 64 && N <= 64) return ssd_launch_bwd_tiles_w<64, 64>(SSD_BWD_ARGS);
    if (P <= 64) return ssd_launch_bwd_tiles_w<64, 128>(SSD_BWD_ARGS);
    if (N <= 64) return ssd_launch_bwd_tiles_w<128, 64>(SSD_BWD_ARGS);
    return ssd_launch_bwd_tiles_w<128, 128>(SSD_BWD_ARGS);
#undef SSD_BWD_ARGS
}
#endif /* !ENABLE_FP32 */

#endif /* MAMBA2_SSD_BWD_CUH */
