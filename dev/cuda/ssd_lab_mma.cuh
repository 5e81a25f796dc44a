/* dev/cuda/ssd_lab_mma.cuh: the SSD lab (versions 2 to 11), a frozen copy of llmc/ssd_mma.cuh as it stood before the default path moved
   alone into llmc/ (the knobs, run counters and version ladder stay here). Included by dev/cuda/ssd.cu inside
   namespace lab, after llmc/cuda_common.h and llmc/wgmma.cuh; only the include lines and guards differ from the
   original. Version history: dev/cuda/NOTES_ssd.md. */
/*
 * ssd_mma.cuh: the SSD layer's mma.sync tile kernels (bf16 build) and their launchers: version 3 (64-row tiles,
 * bf16 operands in shared memory read with ldmatrix, accumulators in registers), version 4 (the heads of a group
 * looped in the backward row-tile kernels), version 8 (those kernels reorganized) and version 9's col kernel (the
 * off-diagonal decay factored). Also the tile primitives (cp.async, ldmatrix, mma.sync fragments) that the wgmma
 * and state-scan files build on. The math, the buffers and the dispatch are in llmc/ssd.cuh, which includes this
 * file; it is not included on its own.
 */
#ifndef SSD_LAB_MMA_CUH
#define SSD_LAB_MMA_CUH

#ifndef SSD_LAB_CUH
#error "dev/cuda/ssd_lab_mma.cuh is a part of dev/cuda/ssd_lab.cuh"
#endif

/* ------------------------------------------------------------------------------------------------------------ */
/* version 3 (bf16 build): 64-row tiles, operands kept as bf16 in shared memory (cp.async, double-buffered), read
   with ldmatrix into mma.sync m16n8k16 fragments, accumulators in registers for the whole tile loop. Each block is
   4 warps; warp w owns rows 16w..16w+15 of the block's 64-row tile. The Q x Q "attention" products never leave the
   registers: a 16 x 64 score tile (C B^T, dy x^T, ...) is masked and scaled in its accumulator fragments, which are
   then repacked in place as the A fragments of the next product (the m16n8 accumulator layout of two adjacent
   8-column tiles is the m16k16 A-operand layout).
   Kernels (same algorithm and saved/workspace buffers as version 2; see the top of llmc/ssd.cuh):
     ssd3_chunk_state_kernel  S_c (forward) and sum_i exp(cum_i) dy_i C_i^T (backward) on the tensor cores; the
                              scaled operand is split in two bf16 terms (hi + lo), so the product keeps ~16 bits.
     ssd3_scan_fwd_kernel     y for 64 rows i: exp(cum_i) C_i Hprev^T + sum_j [(C_i.B_j) decay dt_j] x_j + D x_i.
     ssd3_bct_kernel          B_j . C_i for the j <= i tiles of each (b, chunk, group): made once, read (from L2) by
                              the backward of every head of the group instead of recomputed per head.
     ssd3_bwd_col_kernel      for 64 rows j ("columns" of the Q x Q products), looping over the rows i >= j:
                              dxs_j, dx_j, the per-head dB_j, x_j.dxs_j, x_j.dy_j and, from ONE set of fp32 values
                              W[i,j], both the column sums (for j) and the row sums (partial per j tile, for i).
     ssd3_bwd_dc_kernel       for 64 rows i, looping over j <= i: the per-head dC_i and dy_i . y_off_i.
     ssd3_bwd_dt_kernel       dcum, ddt_raw and the parameter partials, like ssd_bwd_dt_kernel.
   The per-head dB, dC partials are bf16 (ssd_bwd_group_sum_kernel<floatX> adds them in fp32, in head order): half
   the traffic of fp32 ones, ~3e-3 instead of ~2.4e-3 norm-relative error on dB, dC; dx, ddt and the parameter
   gradients do not go through them. The three row-tile kernels have an instantiation with P, N fixed at compile
   time (EXACT: P == PMAX, N == NMAX, the model's 64 and 128 among them): the n-tile guards fold away and the k loops
   unroll, 1.5x on those kernels against runtime widths.
   The state products (Hprev, dH: fp32) split the state in hi + lo bf16 terms in the backward (the dcum terms
   cancel, see llmc/ssd.cuh); the forward rounds Hprev to bf16 once (y is bf16 anyway, and the backward does not
   use y). */
#if !defined(ENABLE_FP32)
#define SSD3_ROWS 64
#define SSD3_THREADS 128

__device__ static inline uint32_t ssd3_saddr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
/* four 8x8 bf16 matrices; lanes 8m..8m+7 give the row addresses of matrix m */
__device__ static inline void ssd3_ldsm(uint32_t r[4], const floatX* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(ssd3_saddr(p)) : "memory");
}
__device__ static inline void ssd3_ldsm_t(uint32_t r[4], const floatX* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(ssd3_saddr(p)) : "memory");
}
/* 16 bytes global -> shared without passing through registers; valid = 0 writes zeros (reads nothing) */
__device__ static inline void ssd3_cp_async16(void* dst, const void* src, int valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(ssd3_saddr(dst)), "l"(src),
                 "r"(valid ? 16 : 0) : "memory");
}
__device__ static inline void ssd3_cp_commit(void) { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int n> __device__ static inline void ssd3_cp_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(n) : "memory");
}

/* rows [r0, r0 + 64) of a bf16 row-major matrix (row stride gstride, ncols % 8 == 0 columns) into shared memory
   with row stride ld (ncols + 8: the 16-byte pad puts the 8 rows of an ldmatrix in 8 different bank groups).
   Rows at or past nvalid are zero-filled, so partial chunks need no bounds checks in the products. */
__device__ static inline void ssd3_load_tile(floatX* dst, int ld, const floatX* src, size_t gstride, int r0,
                                             int nvalid, int ncols) {
    int nv = ncols / 8;
    for (int idx = threadIdx.x; idx < SSD3_ROWS * nv; idx += SSD3_THREADS) {
        int r = idx / nv, v = idx % nv, ok = r0 + r < nvalid;
        ssd3_cp_async16(dst + r * ld + v * 8, src + (ok ? (size_t)(r0 + r) * gstride + v * 8 : 0), ok);
    }
}

/* an fp32 (R, Cn) matrix into shared memory as bf16 hi (and lo = the rounding error of hi, if lo != NULL).
   16-byte loads and no per-element division where the layout allows (it does for the model's shapes): this runs in
   every block's prologue, before any tile work can start. */
__device__ static inline void ssd3_load_split(floatX* hi, floatX* lo, int ld, const float* m, int R, int Cn) {
    int nv = Cn / 4;
    if (Cn % 4 == 0 && SSD3_THREADS % nv == 0 && (uintptr_t)m % 16 == 0) {
        int c = (threadIdx.x % nv) * 4;
#pragma unroll 4
        for (int r = threadIdx.x / nv; r < R; r += SSD3_THREADS / nv) {
            float4 q = *(const float4*)(m + (size_t)r * Cn + c);
            __nv_bfloat162 h01 = __floats2bfloat162_rn(q.x, q.y), h23 = __floats2bfloat162_rn(q.z, q.w);
            uint2 hv = make_uint2(*(uint32_t*)&h01, *(uint32_t*)&h23);
            *(uint2*)(hi + r * ld + c) = hv;
            if (lo) {
                uint2 lv = make_uint2(ssd_pack_bf16(q.x - __low2float(h01), q.y - __high2float(h01)),
                                      ssd_pack_bf16(q.z - __low2float(h23), q.w - __high2float(h23)));
                *(uint2*)(lo + r * ld + c) = lv;
            }
        }
        return;
    }
    for (int idx = threadIdx.x; idx < R * Cn; idx += SSD3_THREADS) {
        int r = idx / Cn, c = idx % Cn;
        float v = m[idx];
        floatX vh = __float2bfloat16_rn(v);
        hi[r * ld + c] = vh;
        if (lo) lo[r * ld + c] = __float2bfloat16_rn(v - __bfloat162float(vh));
    }
}

/* Warp-level products into acc[nt][4], the 16 x 8 accumulator tiles nt of a 16-row strip (only nt * 8 < ncols;
   ncols % 16 == 0). Fragment owner: lane holds rows lane/4 and lane/4 + 8, columns nt*8 + 2*(lane%4) + {0, 1}.
   ssd3_mma_nt: A(m, k) = a[m*lda + k] (16 rows), B(k, n) = b[n*ldb + k]   (both K-contiguous)
   ssd3_mma_nn: A(m, k) = a[m*lda + k],             B(k, n) = b[k*ldb + n]   (B row-major: ldmatrix.trans)
   ssd3_mma_tn: A(m, k) = a[k*lda + m],             B(k, n) = b[k*ldb + n]
   ssd3_mma_rn: A from registers (packed bf16 A fragments af[ks], K = 16 * KS), B(k, n) = b[k*ldb + n] */
template <int NT8>
__device__ static inline void ssd3_mma_nt(float acc[][4], const floatX* a, int lda, const floatX* b, int ldb, int K,
                                          int ncols) {
    int lane = threadIdx.x % 32;
    const floatX* ap = a + (lane % 16) * lda + (lane / 16) * 8;
    const floatX* bp = b + ((lane % 8) + (lane / 16) * 8) * ldb + ((lane / 8) % 2) * 8;
    for (int k0 = 0; k0 < K; k0 += 16) {
        uint32_t af[4];
        ssd3_ldsm(af, ap + k0);
#pragma unroll
        for (int nt = 0; nt < NT8; nt += 2) {
            if (nt * 8 < ncols) {
                uint32_t bf[4];
                ssd3_ldsm(bf, bp + nt * 8 * ldb + k0);
                ssd_mma_bf16(acc[nt], af, bf);
                ssd_mma_bf16(acc[nt + 1], af, bf + 2);
            }
        }
    }
}
template <int NT8>
__device__ static inline void ssd3_mma_nn(float acc[][4], const floatX* a, int lda, const floatX* b, int ldb, int K,
                                          int ncols) {
    int lane = threadIdx.x % 32;
    const floatX* ap = a + (lane % 16) * lda + (lane / 16) * 8;
    const floatX* bp = b + ((lane % 8) + ((lane / 8) % 2) * 8) * ldb + (lane / 16) * 8;
    for (int k0 = 0; k0 < K; k0 += 16) {
        uint32_t af[4];
        ssd3_ldsm(af, ap + k0);
#pragma unroll
        for (int nt = 0; nt < NT8; nt += 2) {
            if (nt * 8 < ncols) {
                uint32_t bf[4];
                ssd3_ldsm_t(bf, bp + k0 * ldb + nt * 8);
                ssd_mma_bf16(acc[nt], af, bf);
                ssd_mma_bf16(acc[nt + 1], af, bf + 2);
            }
        }
    }
}
template <int NT8>
__device__ static inline void ssd3_mma_tn(float acc[][4], const floatX* a, int lda, const floatX* b, int ldb, int K,
                                          int ncols) {
    int lane = threadIdx.x % 32;
    const floatX* ap = a + ((lane % 8) + (lane / 16) * 8) * lda + ((lane / 8) % 2) * 8;
    const floatX* bp = b + ((lane % 8) + ((lane / 8) % 2) * 8) * ldb + (lane / 16) * 8;
    for (int k0 = 0; k0 < K; k0 += 16) {
        uint32_t af[4];
        ssd3_ldsm_t(af, ap + k0 * lda);
#pragma unroll
        for (int nt = 0; nt < NT8; nt += 2) {
            if (nt * 8 < ncols) {
                uint32_t bf[4];
                ssd3_ldsm_t(bf, bp + k0 * ldb + nt * 8);
                ssd_mma_bf16(acc[nt], af, bf);
                ssd_mma_bf16(acc[nt + 1], af, bf + 2);
            }
        }
    }
}
template <int KS, int NT8>
__device__ static inline void ssd3_mma_rn(float acc[][4], const uint32_t af[][4], const floatX* b, int ldb, int ncols,
                                          int K = 16 * KS) {
    int lane = threadIdx.x % 32;
    const floatX* bp = b + ((lane % 8) + ((lane / 8) % 2) * 8) * ldb + (lane / 16) * 8;
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        if (ks * 16 >= K) break;
#pragma unroll
        for (int nt = 0; nt < NT8; nt += 2) {
            if (nt * 8 < ncols) {
                uint32_t bf[4];
                ssd3_ldsm_t(bf, bp + ks * 16 * ldb + nt * 8);
                ssd_mma_bf16(acc[nt], af[ks], bf);
                ssd_mma_bf16(acc[nt + 1], af[ks], bf + 2);
            }
        }
    }
}
/* accumulator tiles s[2ks], s[2ks+1] (16 x 16 fp32) -> the bf16 A fragment af[ks] of the next product */
template <int KS>
__device__ static inline void ssd3_pack_a(uint32_t af[][4], const float s[][4]) {
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        af[ks][0] = ssd_pack_bf16(s[2 * ks][0], s[2 * ks][1]);
        af[ks][1] = ssd_pack_bf16(s[2 * ks][2], s[2 * ks][3]);
        af[ks][2] = ssd_pack_bf16(s[2 * ks + 1][0], s[2 * ks + 1][1]);
        af[ks][3] = ssd_pack_bf16(s[2 * ks + 1][2], s[2 * ks + 1][3]);
    }
}
/* the sum over the 4 lanes that hold one accumulator row (the same lane/4) */
__device__ static inline float ssd3_quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    return v;
}
/* rowdot[r] = sum over the columns of acc of acc * m (bf16 shared, row-major ld, rows m0 + lane/4 (+8)), for
   r = 0 (row lane/4) and 1 (row lane/4 + 8); the full row sums, in every lane of the quad */
template <int NT8>
__device__ static inline void ssd3_rowdot(float out[2], const float acc[][4], const floatX* m, int ld, int ncols) {
    int lane = threadIdx.x % 32, r = lane / 4, c = 2 * (lane % 4);
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int nt = 0; nt < NT8; nt++) {
        if (nt * 8 < ncols) {
            int col = nt * 8 + c;
            s0 += acc[nt][0] * toF(m[r * ld + col]) + acc[nt][1] * toF(m[r * ld + col + 1]);
            s1 += acc[nt][2] * toF(m[(r + 8) * ld + col]) + acc[nt][3] * toF(m[(r + 8) * ld + col + 1]);
        }
    }
    out[0] = ssd3_quad_sum(s0);
    out[1] = ssd3_quad_sum(s1);
}

/* out[p, n] = sum_{j in chunk} U_j[p] w_j V_j[n] for one (chunk, b, h), a 64x64 tile of (P, N) per block; the
   modes and operands as in ssd_chunk_outer_kernel. A = (w_j U_j)^T: each warp loads raw U fragments (ldmatrix.trans),
   scales them by w_j in registers and splits them in hi + lo bf16 (two products); B = V. Tiles double-buffered. */
__global__ static void __launch_bounds__(SSD3_THREADS)
ssd3_chunk_state_kernel(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0,
                        const float* dt, const float* cum, int mode, int T, int H, int P, int N, int G, int Q) {
    __shared__ __align__(16) floatX Us[2][SSD3_ROWS * 72], Vs[2][SSD3_ROWS * 72];
    __shared__ float w_s[2][SSD3_ROWS];
    int nch = ssd_nchunks(T, Q), c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int ptiles = CEIL_DIV(P, 64), p0 = (blockIdx.z % ptiles) * 64, n0 = (blockIdx.z / ptiles) * 64;
    int pw = min(64, P - p0), nw = min(64, N - n0);
    int t0 = c * Q, len = min(Q, T - t0);
    const float* dtc = dt + (size_t)bh * T + t0;
    const float* cumc = cum + (size_t)bh * T + t0;
    float cum_last = cumc[len - 1];
    const floatX* Ub = U + (size_t)(b * T + t0) * u_stride + h * P + p0;
    const floatX* Vb = V + (size_t)(b * T + t0) * v_stride + v_col0 + g * N + n0;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    float acc[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    int ntj = CEIL_DIV(len, SSD3_ROWS);
    for (int jt = 0; jt <= ntj; jt++) {
        if (jt < ntj) {  /* issue tile jt (buffer jt & 1), then work on tile jt - 1 */
            int bf = jt & 1, j0 = jt * SSD3_ROWS;
            ssd3_load_tile(Us[bf], 72, Ub, u_stride, j0, len, pw);
            ssd3_load_tile(Vs[bf], 72, Vb, v_stride, j0, len, nw);
            ssd3_cp_commit();
            if (threadIdx.x < SSD3_ROWS) {
                int j = j0 + threadIdx.x;
                w_s[bf][threadIdx.x] =
                    j < len ? (mode == 0 ? dtc[j] * expf(cum_last - cumc[j]) : expf(cumc[j])) : 0.f;
            }
        }
        if (jt == 0) continue;
        if (jt < ntj) ssd3_cp_wait<1>(); else ssd3_cp_wait<0>();
        __syncthreads();
        int buf = (jt - 1) & 1;
        if (m0 < pw) {
            const floatX* ap = Us[buf] + ((lane % 8) + (lane / 16) * 8) * 72 + m0 + ((lane / 8) % 2) * 8;
            const floatX* bp = Vs[buf] + ((lane % 8) + ((lane / 8) % 2) * 8) * 72 + (lane / 16) * 8;
#pragma unroll
            for (int k0 = 0; k0 < SSD3_ROWS; k0 += 16) {
                uint32_t raw[4], ah[4], al[4];
                ssd3_ldsm_t(raw, ap + k0 * 72);
                /* registers 0, 1 hold k = k0 + 2 tig (+1); registers 2, 3 hold k = k0 + 8 + 2 tig (+1) */
                float w0 = w_s[buf][k0 + 2 * tig], w1 = w_s[buf][k0 + 2 * tig + 1];
                float w2 = w_s[buf][k0 + 8 + 2 * tig], w3 = w_s[buf][k0 + 9 + 2 * tig];
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    __nv_bfloat162 v = *(__nv_bfloat162*)&raw[r];
                    float lo = __low2float(v) * (r < 2 ? w0 : w2), hi = __high2float(v) * (r < 2 ? w1 : w3);
                    __nv_bfloat162 vh = __floats2bfloat162_rn(lo, hi);
                    ah[r] = *(uint32_t*)&vh;
                    al[r] = ssd_pack_bf16(lo - __low2float(vh), hi - __high2float(vh));
                }
#pragma unroll
                for (int nt = 0; nt < 8; nt += 2) {
                    if (nt * 8 < nw) {
                        uint32_t bfr[4];
                        ssd3_ldsm_t(bfr, bp + k0 * 72 + nt * 8);
                        ssd_mma_bf16(acc[nt], ah, bfr);
                        ssd_mma_bf16(acc[nt], al, bfr);
                        ssd_mma_bf16(acc[nt + 1], ah, bfr + 2);
                        ssd_mma_bf16(acc[nt + 1], al, bfr + 2);
                    }
                }
            }
        }
        __syncthreads();
    }
    if (m0 >= pw) return;
    float* o = out + ssd_state_off(b, c, h, nch, H, P * N);
    int p = p0 + m0 + lane / 4;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
        if (nt * 8 < nw) {
            int n = n0 + nt * 8 + 2 * tig;
            *(float2*)(o + (size_t)p * N + n) = make_float2(acc[nt][0], acc[nt][1]);
            *(float2*)(o + (size_t)(p + 8) * N + n) = make_float2(acc[nt][2], acc[nt][3]);
        }
    }
}

/* Shared memory of the three row-tile kernels (bf16 elements; rows padded to N + 8, P + 8). What is used only
   before the tile loop (a state, in hi/lo halves where split; C_i in the dC kernel) shares its space with what the
   loop double-buffers, so that 3 blocks fit on a multiprocessor (P = 64, N = 128: 72 KB forward, 64 KB dC):
   forward  Cs | Bs[0] | Xs[0] | region(Hprev bf16 ; then Bs[1] Xs[1])                      ssd3_region_fwd
   col      Xj | region(Bj, dH hi, lo ; then Ci[2] Yi[2])                                    ssd3_region_bwd(P, N, 1)
   dC       Ys | region(Cs, Hprev hi, lo ; then Bs[2] Xs[2])                                 ssd3_region_bwd(P, N, 1)
   (col: B_j . C_i comes from ssd3_bct_kernel, so B_j is needed only for the state part) */
__host__ __device__ static inline size_t ssd3_max(size_t a, size_t b) { return a > b ? a : b; }
__host__ __device__ static inline size_t ssd3_region_fwd(int P, int N) {
    return ssd3_max((size_t)P * (N + 8), (size_t)SSD3_ROWS * (N + 8) + (size_t)SSD3_ROWS * (P + 8));
}
__host__ __device__ static inline size_t ssd3_region_bwd(int P, int N, int with_c) {
    return ssd3_max((size_t)(2 * P + with_c * SSD3_ROWS) * (N + 8),
                    2 * (size_t)SSD3_ROWS * (N + 8) + 2 * (size_t)SSD3_ROWS * (P + 8));
}
static inline size_t ssd3_smem_fwd(int P, int N) {
    return (2 * (size_t)SSD3_ROWS * (N + 8) + (size_t)SSD3_ROWS * (P + 8) + ssd3_region_fwd(P, N)) * sizeof(floatX) +
           4 * SSD3_ROWS * sizeof(float);
}
static inline size_t ssd3_smem_col(int P, int N) {
    return ((size_t)SSD3_ROWS * (P + 8) + ssd3_region_bwd(P, N, 1)) * sizeof(floatX) + 6 * SSD3_ROWS * sizeof(float);
}
static inline size_t ssd3_smem_dc(int P, int N) {
    return ((size_t)SSD3_ROWS * (P + 8) + ssd3_region_bwd(P, N, 1)) * sizeof(floatX) + 4 * SSD3_ROWS * sizeof(float);
}

/* y for 64 rows i of one (b, h, chunk). PMAX, NMAX: 64 or 128, the register tiles' widths (P <= PMAX, N <= NMAX). */
template <int PMAX, int NMAX, bool EXACT>
__global__ static void __launch_bounds__(SSD3_THREADS)
ssd3_scan_fwd_kernel(floatX* y, const floatX* xbc, int xbc_stride, const float* dt, const float* cum,
                     const float* states, const float* Dskip, int T, int H, int P, int N, int G, int Q) {
    if (EXACT) { P = PMAX; N = NMAX; }  /* compile-time widths: the n-tile guards fold, the k loops unroll */
    extern __shared__ __align__(16) unsigned char ssd3_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD3_ROWS);
    int c = blockIdx.x / nti, rt = blockIdx.x % nti, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD3_ROWS;
    if (i0 >= len) return;
    int E = H * P, ldn = N + 8, ldp = P + 8;
    floatX* Cs = (floatX*)ssd3_smem;             /* (64, ldn) C rows i */
    floatX* Bs = Cs + SSD3_ROWS * ldn;           /* (64, ldn) B rows j, buffer 0 */
    floatX* Xs = Bs + SSD3_ROWS * ldn;           /* (64, ldp) x rows j, buffer 0 */
    floatX* Hs = Xs + SSD3_ROWS * ldp;           /* (P, ldn) Hprev in bf16; then buffer 1: */
    floatX* Bs1 = Hs;                            /* (64, ldn) */
    floatX* Xs1 = Hs + SSD3_ROWS * ldn;          /* (64, ldp) */
    float* cj = (float*)(Hs + ssd3_region_fwd(P, N));  /* 2 x 64 cum_j */
    float* dj = cj + 2 * SSD3_ROWS;                  /* 2 x 64 dt_j */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    const floatX* Bg = rows + E + g * N;
    const floatX* Xg = rows + h * P;
    ssd3_load_tile(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
    ssd3_load_tile(Bs, ldn, Bg, xbc_stride, 0, len, N);
    ssd3_load_tile(Xs, ldp, Xg, xbc_stride, 0, len, P);
    ssd3_cp_commit();
    if (threadIdx.x < SSD3_ROWS) {
        int j = threadIdx.x;
        cj[j] = j < len ? cumc[j] : 0.f;
        dj[j] = j < len ? dtc[j] : 0.f;
    }
    ssd3_load_split(Hs, NULL, ldn, states + ssd_state_off(b, c, h, nch, H, P * N), P, N);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    int ri[2] = {i0 + m0 + lane / 4, i0 + m0 + lane / 4 + 8};
    float cum_r[2];
    for (int r = 0; r < 2; r++) cum_r[r] = ri[r] < len ? cumc[ri[r]] : 0.f;
    ssd3_cp_wait<0>();
    __syncthreads();
    /* inter-chunk: exp(cum_i) C_i Hprev^T, B(k = n, col = p) = Hprev[p, n] */
    float acc[PMAX / 8][4];
#pragma unroll
    for (int nt = 0; nt < PMAX / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    ssd3_mma_nt<PMAX / 8>(acc, Cs + m0 * ldn, ldn, Hs, ldn, N, P);
    float e0 = expf(cum_r[0]), e1 = expf(cum_r[1]);
#pragma unroll
    for (int nt = 0; nt < PMAX / 8; nt++) { acc[nt][0] *= e0; acc[nt][1] *= e0; acc[nt][2] *= e1; acc[nt][3] *= e1; }
    __syncthreads();  /* Hprev no longer needed: its space takes buffer 1 */
    /* intra-chunk: the j tiles up to the diagonal one, the next one loading while this one is used */
    for (int jt = 0; jt <= rt; jt++) {
        int buf = jt & 1;
        if (jt < rt) {
            int nb = buf ^ 1, j0n = (jt + 1) * SSD3_ROWS;
            ssd3_load_tile(nb ? Bs1 : Bs, ldn, Bg, xbc_stride, j0n, len, N);
            ssd3_load_tile(nb ? Xs1 : Xs, ldp, Xg, xbc_stride, j0n, len, P);
            ssd3_cp_commit();
            if (threadIdx.x < SSD3_ROWS) {
                int j = j0n + threadIdx.x;
                cj[nb * SSD3_ROWS + threadIdx.x] = j < len ? cumc[j] : 0.f;
                dj[nb * SSD3_ROWS + threadIdx.x] = j < len ? dtc[j] : 0.f;
            }
            ssd3_cp_wait<1>();
        } else {
            ssd3_cp_wait<0>();
        }
        __syncthreads();
        const float* cjb = cj + buf * SSD3_ROWS;
        const float* djb = dj + buf * SSD3_ROWS;
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        /* on the diagonal tile this warp's rows m0..m0+15 need only the columns j < m0 + 16 */
        int jw = jt == rt ? m0 + 16 : SSD3_ROWS;
        if (jt < rt) ssd3_mma_nt<8>(s, Cs + m0 * ldn, ldn, buf ? Bs1 : Bs, ldn, N, SSD3_ROWS);  /* C_i . B_j */
        else ssd3_mma_nt<8>(s, Cs + m0 * ldn, ldn, buf ? Bs1 : Bs, ldn, N, jw);
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int jj = nt * 8 + 2 * tig + (e & 1), j = jt * SSD3_ROWS + jj, r = e / 2;
                int ok = j <= ri[r] && ri[r] < len && j < len;
                s[nt][e] = ok ? s[nt][e] * __expf(cum_r[r] - cjb[jj]) * djb[jj] : 0.f;
            }
        uint32_t sf[4][4];
        ssd3_pack_a<4>(sf, s);
        if (jt < rt) ssd3_mma_rn<4, PMAX / 8>(acc, sf, buf ? Xs1 : Xs, ldp, P);
        else ssd3_mma_rn<4, PMAX / 8>(acc, sf, buf ? Xs1 : Xs, ldp, P, jw);
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

/* bct[(b, c, g)][j][i] = B_j . C_i for the 64 x 64 tile (jt, it), it >= jt, of one chunk: the product that
   ssd3_bwd_col_kernel needs for every head of group g, made once (with G = 1, once instead of H times). */
__global__ static void __launch_bounds__(SSD3_THREADS)
ssd3_bct_kernel(float* bct, const floatX* xbc, int xbc_stride, int T, int H, int P, int N, int G, int Q) {
    __shared__ __align__(16) floatX Bs[SSD3_ROWS * (SSD_MAXD + 8)], Cs[SSD3_ROWS * (SSD_MAXD + 8)];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD3_ROWS);
    int c = blockIdx.x / (nti * nti), jt = (blockIdx.x / nti) % nti, it = blockIdx.x % nti;
    int b = blockIdx.y / G, g = blockIdx.y % G, t0 = c * Q, len = min(Q, T - t0);
    int j0 = jt * SSD3_ROWS, i0 = it * SSD3_ROWS;
    if (it < jt || i0 >= len) return;
    int E = H * P, ldn = N + 8;
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    ssd3_load_tile(Bs, ldn, rows + E + g * N, xbc_stride, j0, len, N);
    ssd3_load_tile(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
    ssd3_cp_commit();
    ssd3_cp_wait<0>();
    __syncthreads();
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    float acc[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    ssd3_mma_nt<8>(acc, Bs + m0 * ldn, ldn, Cs, ldn, N, SSD3_ROWS);
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

/* For 64 rows j of one (b, h, chunk), looping over the i tiles i >= j (see the top of llmc/ssd.cuh):
   dxs_j = exp(cum_last - cum_j) B_j dH^T + sum_i M[j,i] dy_i,   M[j,i] = (B_j.C_i) exp(cum_i - cum_j) (i >= j)
   dB_j  = dt_j [exp(cum_last - cum_j) x_j dH + sum_i Z[j,i] C_i], Z[j,i] = (x_j.dy_i) exp(cum_i - cum_j)
   dx_j = dt_j dxs_j + D dy_j; x_j.dxs_j, x_j.(state part of dxs_j), x_j.dy_j;
   W[i,j] = Z[j,i] (B_j.C_i) dt_j in fp32: colf_j = sum_i W[i,j] and rowp[jt][i] = sum_{j in this tile} W[i,j]. */
#ifndef SSD3_COL_MINBLOCKS
#define SSD3_COL_MINBLOCKS 3  /* 168 registers (~190 bytes spill), 3 blocks/SM: fwd+bwd 1.51 ms against 1.56 with 2 */
#endif
template <int PMAX, int NMAX, bool EXACT>
__global__ static void __launch_bounds__(SSD3_THREADS, SSD3_COL_MINBLOCKS)
ssd3_bwd_col_kernel(floatX* dxbc, floatX* dB_h, float* xdxs, float* xdxs_st, float* xdy, float* colf, float* rowp,
                    const floatX* dy, const floatX* xbc, int xbc_stride, const float* dt, const float* cum,
                    const float* dstates, const float* bct, const float* Dskip, int T, int H, int P, int N, int G,
                    int Q) {
    if (EXACT) { P = PMAX; N = NMAX; }  /* compile-time widths: the n-tile guards fold, the k loops unroll */
    extern __shared__ __align__(16) unsigned char ssd3_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD3_ROWS);
    int c = blockIdx.x / nti, rt = blockIdx.x % nti, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), j0 = rt * SSD3_ROWS;
    if (j0 >= len) return;
    int E = H * P, ldn = N + 8, ldp = P + 8;
    floatX* Xj = (floatX*)ssd3_smem;             /* (64, ldp) x rows j */
    floatX* Bj = Xj + SSD3_ROWS * ldp;           /* first B rows j (64, ldn), dH hi, lo (2 x (P, ldn)); then */
    floatX* R = Bj + SSD3_ROWS * ldn;
    floatX* Ci = Bj;                             /* the i tiles: 2 x (64, ldn) C rows i */
    floatX* Yi = Ci + 2 * SSD3_ROWS * ldn;       /* 2 x (64, ldp) dy rows i */
    float* ci = (float*)(Bj + ssd3_region_bwd(P, N, 1));  /* 2 x 64 cum_i */
    float* red = ci + 2 * SSD3_ROWS;                    /* 4 warps x 64 partial row sums */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Cg = rows + E + G * N + g * N;
    const floatX* Yg = dy + (size_t)(b * T + t0) * E + h * P;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    const float* bcc = bct + ((size_t)b * nch + c) * G * Q * Q + (size_t)g * Q * Q;  /* [j][i] = B_j . C_i */
    ssd3_load_tile(Bj, ldn, rows + E + g * N, xbc_stride, j0, len, N);
    ssd3_load_tile(Xj, ldp, rows + h * P, xbc_stride, j0, len, P);
    ssd3_cp_commit();
    ssd3_load_split(R, R + P * ldn, ldn, dstates + ssd_state_off(b, c, h, nch, H, P * N), P, N);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    int rj[2] = {j0 + m0 + lane / 4, j0 + m0 + lane / 4 + 8};
    float cum_last = cumc[len - 1], cum_r[2], dt_r[2], es[2];
    for (int r = 0; r < 2; r++) {
        int ok = rj[r] < len;
        cum_r[r] = ok ? cumc[rj[r]] : 0.f;
        dt_r[r] = ok ? dtc[rj[r]] : 0.f;
        es[r] = ok ? expf(cum_last - cum_r[r]) : 0.f;
    }
    ssd3_cp_wait<0>();
    __syncthreads();
    float adx[PMAX / 8][4], adb[NMAX / 8][4];
#pragma unroll
    for (int nt = 0; nt < PMAX / 8; nt++) adx[nt][0] = adx[nt][1] = adx[nt][2] = adx[nt][3] = 0.f;
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) adb[nt][0] = adb[nt][1] = adb[nt][2] = adb[nt][3] = 0.f;
    /* state parts: B_j dH^T (B(k = n, col = p) = dH[p, n]) and x_j dH (B(k = p, n) = dH[p, n]), dH = hi + lo */
    for (int part = 0; part < 2; part++) {
        const floatX* Hh = R + part * P * ldn;
        ssd3_mma_nt<PMAX / 8>(adx, Bj + m0 * ldn, ldn, Hh, ldn, N, P);
        ssd3_mma_nn<NMAX / 8>(adb, Xj + m0 * ldp, ldp, Hh, ldn, P, N);
    }
#pragma unroll
    for (int nt = 0; nt < PMAX / 8; nt++) {
        adx[nt][0] *= es[0]; adx[nt][1] *= es[0]; adx[nt][2] *= es[1]; adx[nt][3] *= es[1];
    }
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) {
        adb[nt][0] *= es[0]; adb[nt][1] *= es[0]; adb[nt][2] *= es[1]; adb[nt][3] *= es[1];
    }
    float st[2];
    ssd3_rowdot<PMAX / 8>(st, adx, Xj + m0 * ldp, ldp, P);  /* x_j . (state part of dxs_j) */
    __syncthreads();  /* dH no longer needed: its space takes the i tiles */
    int it_end = CEIL_DIV(len, SSD3_ROWS);
    ssd3_load_tile(Ci, ldn, Cg, xbc_stride, j0, len, N);
    ssd3_load_tile(Yi, ldp, Yg, E, j0, len, P);
    ssd3_cp_commit();
    if (threadIdx.x < SSD3_ROWS) {
        int i = j0 + threadIdx.x;
        ci[threadIdx.x] = i < len ? cumc[i] : 0.f;
    }
    float colacc[2] = {0.f, 0.f};
    for (int it = rt; it < it_end; it++) {
        int buf = (it - rt) & 1;
        if (it + 1 < it_end) {
            int nb = buf ^ 1, i0n = (it + 1) * SSD3_ROWS;
            ssd3_load_tile(Ci + nb * SSD3_ROWS * ldn, ldn, Cg, xbc_stride, i0n, len, N);
            ssd3_load_tile(Yi + nb * SSD3_ROWS * ldp, ldp, Yg, E, i0n, len, P);
            ssd3_cp_commit();
            if (threadIdx.x < SSD3_ROWS) {
                int i = i0n + threadIdx.x;
                ci[nb * SSD3_ROWS + threadIdx.x] = i < len ? cumc[i] : 0.f;
            }
            ssd3_cp_wait<1>();
        } else {
            ssd3_cp_wait<0>();
        }
        __syncthreads();
        const floatX* Cb = Ci + buf * SSD3_ROWS * ldn;
        const floatX* Yb = Yi + buf * SSD3_ROWS * ldp;
        const float* cib = ci + buf * SSD3_ROWS;
        float rp[8][2];
#pragma unroll
        for (int ih = 0; ih < 2; ih++) {  /* two halves of 32 columns i: fewer live registers */
            if (ih == 0 && it == rt && m0 >= 32) {  /* diagonal tile: rows j >= 32 have nothing at i < 32 */
#pragma unroll
                for (int nt = 0; nt < 4; nt++) rp[nt][0] = rp[nt][1] = 0.f;
                continue;
            }
            float bc[4][4], xy[4][4];
#pragma unroll
            for (int nt = 0; nt < 4; nt++)  /* B_j . C_i from ssd3_bct_kernel (L2), zero outside the chunk */
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int i = it * SSD3_ROWS + ih * 32 + nt * 8 + 2 * tig + (e & 1), j = rj[e / 2];
                    bc[nt][e] = i < len && j < len ? bcc[(size_t)j * Q + i] : 0.f;
                    xy[nt][e] = 0.f;
                }
            ssd3_mma_nt<4>(xy, Xj + m0 * ldp, ldp, Yb + ih * 32 * ldp, ldp, P, 32);  /* x_j . dy_i */
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                rp[ih * 4 + nt][0] = rp[ih * 4 + nt][1] = 0.f;
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int ii = ih * 32 + nt * 8 + 2 * tig + (e & 1), i = it * SSD3_ROWS + ii, r = e / 2;
                    int ok = i >= rj[r] && i < len && rj[r] < len;
                    float dec = ok ? __expf(cib[ii] - cum_r[r]) : 0.f;
                    float m = bc[nt][e] * dec, z = xy[nt][e] * dec;
                    float w = z * bc[nt][e] * dt_r[r];
                    colacc[r] += w;
                    rp[ih * 4 + nt][e & 1] += w;
                    bc[nt][e] = m;
                    xy[nt][e] = z;
                }
            }
            uint32_t mf[2][4], zf[2][4];
            ssd3_pack_a<2>(mf, bc);
            ssd3_pack_a<2>(zf, xy);
            ssd3_mma_rn<2, PMAX / 8>(adx, mf, Yb + ih * 32 * ldp, ldp, P);  /* += M dy_i */
            ssd3_mma_rn<2, NMAX / 8>(adb, zf, Cb + ih * 32 * ldn, ldn, N);  /* += Z C_i */
        }
        /* row sums over this tile's j of W[i, j]: over the 8 row groups of a warp, then the 4 warps in order */
#pragma unroll
        for (int k = 0; k < 8; k++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float v = rp[k][e];
                v += __shfl_xor_sync(0xffffffffu, v, 4);
                v += __shfl_xor_sync(0xffffffffu, v, 8);
                v += __shfl_xor_sync(0xffffffffu, v, 16);
                if (lane < 4) red[warp * SSD3_ROWS + k * 8 + 2 * tig + e] = v;
            }
        __syncthreads();
        if (threadIdx.x < SSD3_ROWS) {
            int i = it * SSD3_ROWS + threadIdx.x;
            if (i < len)
                rowp[(((size_t)bh * nch + c) * nti + rt) * Q + i] =
                    red[threadIdx.x] + red[SSD3_ROWS + threadIdx.x] + red[2 * SSD3_ROWS + threadIdx.x] +
                    red[3 * SSD3_ROWS + threadIdx.x];
        }
        __syncthreads();
    }
    /* epilogue: per row j, outputs */
    float xd[2];
    ssd3_rowdot<PMAX / 8>(xd, adx, Xj + m0 * ldp, ldp, P);  /* x_j . dxs_j */
    float Dh = Dskip[h];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int ok = rj[r] < len;
        size_t row = (size_t)(b * T + t0 + (ok ? rj[r] : 0));
        const floatX* dyr = dy + row * E + h * P;
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
        sdy = ssd3_quad_sum(sdy);
        float cs = ssd3_quad_sum(colacc[r]);
        if (!ok) continue;
        floatX* dbr = dB_h + (row * H + h) * N;
#pragma unroll
        for (int nt = 0; nt < NMAX / 8; nt++) {
            if (nt * 8 < N) {
                int n = nt * 8 + 2 * tig;
                *(__nv_bfloat162*)(dbr + n) =
                    __floats2bfloat162_rn(dt_r[r] * adb[nt][2 * r], dt_r[r] * adb[nt][2 * r + 1]);
            }
        }
        if (tig == 0) {
            size_t o = (size_t)bh * T + t0 + rj[r];
            xdxs[o] = xd[r];
            xdxs_st[o] = st[r];
            xdy[o] = sdy;
            colf[o] = cs;
        }
    }
}

/* For 64 rows i of one (b, h, chunk): the per-head dC_i = exp(cum_i) Hprev^T dy_i + sum_{j<=i} WD[i,j] B_j with
   WD[i,j] = (dy_i.x_j) exp(cum_i - cum_j) dt_j, and rowi_i = dy_i . y_off_i = C_i . (state part of dC_i). */
template <int PMAX, int NMAX, bool EXACT>
__global__ static void __launch_bounds__(SSD3_THREADS)
ssd3_bwd_dc_kernel(floatX* dC_h, float* rowi, const floatX* dy, const floatX* xbc, int xbc_stride, const float* dt,
                   const float* cum, const float* states, int T, int H, int P, int N, int G, int Q) {
    if (EXACT) { P = PMAX; N = NMAX; }  /* compile-time widths: the n-tile guards fold, the k loops unroll */
    extern __shared__ __align__(16) unsigned char ssd3_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD3_ROWS);
    int c = blockIdx.x / nti, rt = blockIdx.x % nti, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD3_ROWS;
    if (i0 >= len) return;
    int E = H * P, ldn = N + 8, ldp = P + 8;
    floatX* Ys = (floatX*)ssd3_smem;             /* (64, ldp) dy rows i */
    floatX* Cs = Ys + SSD3_ROWS * ldp;           /* first C rows i (64, ldn), Hprev hi, lo (2 x (P, ldn)); then */
    floatX* R = Cs + SSD3_ROWS * ldn;
    floatX* Bs = Cs;                             /* the j tiles: 2 x (64, ldn) B rows j */
    floatX* Xs = Bs + 2 * SSD3_ROWS * ldn;       /* 2 x (64, ldp) x rows j */
    float* cj = (float*)(Cs + ssd3_region_bwd(P, N, 1));  /* 2 x 64 cum_j */
    float* dj = cj + 2 * SSD3_ROWS;                     /* 2 x 64 dt_j */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Bg = rows + E + g * N;
    const floatX* Xg = rows + h * P;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    ssd3_load_tile(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
    ssd3_load_tile(Ys, ldp, dy + (size_t)(b * T + t0) * E + h * P, E, i0, len, P);
    ssd3_cp_commit();
    ssd3_load_split(R, R + P * ldn, ldn, states + ssd_state_off(b, c, h, nch, H, P * N), P, N);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    int ri[2] = {i0 + m0 + lane / 4, i0 + m0 + lane / 4 + 8};
    float cum_r[2];
    for (int r = 0; r < 2; r++) cum_r[r] = ri[r] < len ? cumc[ri[r]] : 0.f;
    ssd3_cp_wait<0>();
    __syncthreads();
    float acc[NMAX / 8][4];
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    for (int part = 0; part < 2; part++)  /* dy_i Hprev, B(k = p, n) = Hprev[p, n] = hi + lo */
        ssd3_mma_nn<NMAX / 8>(acc, Ys + m0 * ldp, ldp, R + part * P * ldn, ldn, P, N);
    float e0 = expf(cum_r[0]), e1 = expf(cum_r[1]);
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) { acc[nt][0] *= e0; acc[nt][1] *= e0; acc[nt][2] *= e1; acc[nt][3] *= e1; }
    float pw[2];
    ssd3_rowdot<NMAX / 8>(pw, acc, Cs + m0 * ldn, ldn, N);
    if (tig == 0)
        for (int r = 0; r < 2; r++)
            if (ri[r] < len) rowi[(size_t)bh * T + t0 + ri[r]] = pw[r];
    __syncthreads();  /* Hprev no longer needed: its space takes the j tiles */
    ssd3_load_tile(Bs, ldn, Bg, xbc_stride, 0, len, N);
    ssd3_load_tile(Xs, ldp, Xg, xbc_stride, 0, len, P);
    ssd3_cp_commit();
    if (threadIdx.x < SSD3_ROWS) {
        int j = threadIdx.x;
        cj[j] = j < len ? cumc[j] : 0.f;
        dj[j] = j < len ? dtc[j] : 0.f;
    }
    for (int jt = 0; jt <= rt; jt++) {
        int buf = jt & 1;
        if (jt < rt) {
            int nb = buf ^ 1, j0n = (jt + 1) * SSD3_ROWS;
            ssd3_load_tile(Bs + nb * SSD3_ROWS * ldn, ldn, Bg, xbc_stride, j0n, len, N);
            ssd3_load_tile(Xs + nb * SSD3_ROWS * ldp, ldp, Xg, xbc_stride, j0n, len, P);
            ssd3_cp_commit();
            if (threadIdx.x < SSD3_ROWS) {
                int j = j0n + threadIdx.x;
                cj[nb * SSD3_ROWS + threadIdx.x] = j < len ? cumc[j] : 0.f;
                dj[nb * SSD3_ROWS + threadIdx.x] = j < len ? dtc[j] : 0.f;
            }
            ssd3_cp_wait<1>();
        } else {
            ssd3_cp_wait<0>();
        }
        __syncthreads();
        const floatX* Bb = Bs + buf * SSD3_ROWS * ldn;
        const floatX* Xb = Xs + buf * SSD3_ROWS * ldp;
        const float* cjb = cj + buf * SSD3_ROWS;
        const float* djb = dj + buf * SSD3_ROWS;
#pragma unroll
        for (int jh = 0; jh < 2; jh++) {
            if (jh == 1 && jt == rt && m0 < 32) continue;  /* diagonal tile: rows i < 32 have nothing at j >= 32 */
            float wd[4][4];
#pragma unroll
            for (int nt = 0; nt < 4; nt++) wd[nt][0] = wd[nt][1] = wd[nt][2] = wd[nt][3] = 0.f;
            ssd3_mma_nt<4>(wd, Ys + m0 * ldp, ldp, Xb + jh * 32 * ldp, ldp, P, 32);  /* dy_i . x_j */
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int jj = jh * 32 + nt * 8 + 2 * tig + (e & 1), j = jt * SSD3_ROWS + jj, r = e / 2;
                    int ok = j <= ri[r] && ri[r] < len && j < len;
                    wd[nt][e] = ok ? wd[nt][e] * __expf(cum_r[r] - cjb[jj]) * djb[jj] : 0.f;
                }
            uint32_t wf[2][4];
            ssd3_pack_a<2>(wf, wd);
            ssd3_mma_rn<2, NMAX / 8>(acc, wf, Bb + jh * 32 * ldn, ldn, N);  /* += WD B_j */
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (ri[r] >= len) continue;
        floatX* o = dC_h + ((size_t)(b * T + t0 + ri[r]) * H + h) * N;
#pragma unroll
        for (int nt = 0; nt < NMAX / 8; nt++)
            if (nt * 8 < N)
                *(__nv_bfloat162*)(o + nt * 8 + 2 * tig) = __floats2bfloat162_rn(acc[nt][2 * r], acc[nt][2 * r + 1]);
    }
}

/* ssd_bwd_dt_kernel for version 3's partial sums: dy_i.ssd_i = rowi_i + sum over the j tiles jt <= i/64 of
   rowp[jt][i]; the column sums colf_i are already complete. */
__global__ static void ssd3_bwd_dt_kernel(floatX* ddt_raw, int dt_stride, float* part, const float* dt,
                                          const float* cum, const float* rowi, const float* rowp, const float* colf,
                                          const float* xdxs, const float* xdxs_st, const float* xdy,
                                          const float* dotp, int nsplit, const floatX* dt_raw, const float* dt_bias,
                                          const float* A_log, int B, int T, int H, int Q) {
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD3_ROWS), c = blockIdx.x, bh = blockIdx.y, b = bh / H,
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
            for (int jt = 0; jt <= i / SSD3_ROWS; jt++) rw += rp[(size_t)jt * Q + i];
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
/* version 4 (bf16 build; the default once validated on the GPU): version 3 with the heads of a group looped inside the two backward row-tile
   kernels, `hg` heads per block (the largest divisor of H/G up to ssd4_hg_max, 4 by default).
   dB_j and dC_i of a group are sums over its heads, and the operands that differ per head can carry the per-head
   scale, so ONE register accumulator holds the sum over the block's heads:
     dB_j = sum_h [ sum_i (dt_j Z_h[j,i]) C_i + (dt_j exp(cum_last - cum_j)) x_j dH_h ]   (dt_j folded into Z's rows)
     dC_i = sum_h [ sum_j WD_h[i,j] B_j + exp(cum_i) dy_i Hprev_h ]                       (WD_h holds dt_j already)
   The state terms need a per-row, per-head scale after the product: they go through a 32-column temporary
   (ssd4_state_nn), 16 registers instead of a second 64-register accumulator.
   With hg = H/G (H/G <= 4) the block writes dB, dC straight into dxbc; otherwise each block writes one bf16 partial
   per head-group (B*T*(H/hg)*N: a quarter of version 3's per-head partials at hg = 4) and ssd4_group_sum_kernel
   adds the H/(G hg) partials of a group in order, 16 bytes per load. Same summation order every run: deterministic.
   ssd4_chunk_state_kernel: version 3's chunk-state product with a 64 x 128 output tile per block (all of N <= 128)
   instead of 64 x 64: the U operand (x or dy, scaled and split in hi + lo in registers) is loaded and split once
   per row instead of twice.
   The row-tile index runs slowest in the grid, the longest tiles first (col: rt = 0 loops over every i tile; dC:
   the last rt loops over every j tile), so the short ones fill the tail of the last wave. */

/* acc[c/8 ..] += sc[r] * (A hi + A lo) for the 32-column chunks c of N: A = a (16 rows, row-major lda, K columns)
   times the row-major (K, N) matrix hs + ls (a state split in bf16 hi and lo). sc[r] scales row lane/4 (r = 0) and
   lane/4 + 8 (r = 1). If dotm != NULL, rsum[r] += the scaled product . dotm (the same rows of a row-major (16, N)
   bf16 matrix), unreduced across the 4 lanes of a row (ssd3_quad_sum them after). */
template <int NMAX>
__device__ static inline void ssd4_state_nn(float acc[][4], float rsum[2], const floatX* a, int lda, const floatX* hs,
                                            const floatX* ls, int ldn, int K, int N, const float sc[2],
                                            const floatX* dotm, int ldd) {
    int lane = threadIdx.x % 32, r0 = lane / 4, tig = lane % 4;
#pragma unroll
    for (int c0 = 0; c0 < NMAX; c0 += 32) {
        if (c0 < N) {
            float t[4][4];
#pragma unroll
            for (int q = 0; q < 4; q++) t[q][0] = t[q][1] = t[q][2] = t[q][3] = 0.f;
            ssd3_mma_nn<4>(t, a, lda, hs + c0, ldn, K, N - c0);
            ssd3_mma_nn<4>(t, a, lda, ls + c0, ldn, K, N - c0);
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
__device__ static inline void ssd4_store_rows(floatX* out, size_t stride, int col, const float acc[][4],
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

/* ssd3_chunk_state_kernel with a 64 x 128 (P x all of N) output tile per block: grid (nchunks, B*H, ceil(P/64)) */
#define SSD4_CS_LDV (SSD_MAXD + 8)
static inline size_t ssd4_smem_chunk_state(void) {
    return 2 * (size_t)SSD3_ROWS * (72 + SSD4_CS_LDV) * sizeof(floatX) + 2 * SSD3_ROWS * sizeof(float);
}
/* 4 blocks/SM: 128 registers (132 uncapped), 54 KB smem */
template <int NMAX, bool EXACT>
__global__ static void __launch_bounds__(SSD3_THREADS, 4)
ssd4_chunk_state_kernel(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0,
                        const float* dt, const float* cum, int mode, int T, int H, int P, int N, int G, int Q) {
    if (EXACT) N = NMAX;
    extern __shared__ __align__(16) unsigned char ssd3_smem[];
    floatX* Us = (floatX*)ssd3_smem;                       /* 2 x (64, 72) U rows j, P columns p0.. */
    floatX* Vs = Us + 2 * SSD3_ROWS * 72;                  /* 2 x (64, SSD4_CS_LDV) V rows j */
    float* w_s = (float*)(Vs + 2 * SSD3_ROWS * SSD4_CS_LDV);  /* 2 x 64 */
    int nch = ssd_nchunks(T, Q), c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int p0 = blockIdx.z * 64, pw = min(64, P - p0);
    int t0 = c * Q, len = min(Q, T - t0);
    const float* dtc = dt + (size_t)bh * T + t0;
    const float* cumc = cum + (size_t)bh * T + t0;
    float cum_last = cumc[len - 1];
    const floatX* Ub = U + (size_t)(b * T + t0) * u_stride + h * P + p0;
    const floatX* Vb = V + (size_t)(b * T + t0) * v_stride + v_col0 + g * N;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    float acc[NMAX / 8][4];
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    int ntj = CEIL_DIV(len, SSD3_ROWS);
    for (int jt = 0; jt <= ntj; jt++) {
        if (jt < ntj) {  /* issue tile jt (buffer jt & 1), then work on tile jt - 1 */
            int bf = jt & 1, j0 = jt * SSD3_ROWS;
            ssd3_load_tile(Us + bf * SSD3_ROWS * 72, 72, Ub, u_stride, j0, len, pw);
            ssd3_load_tile(Vs + bf * SSD3_ROWS * SSD4_CS_LDV, SSD4_CS_LDV, Vb, v_stride, j0, len, N);
            ssd3_cp_commit();
            if (threadIdx.x < SSD3_ROWS) {
                int j = j0 + threadIdx.x;
                w_s[bf * SSD3_ROWS + threadIdx.x] =
                    j < len ? (mode == 0 ? dtc[j] * expf(cum_last - cumc[j]) : expf(cumc[j])) : 0.f;
            }
        }
        if (jt == 0) continue;
        if (jt < ntj) ssd3_cp_wait<1>(); else ssd3_cp_wait<0>();
        __syncthreads();
        int buf = (jt - 1) & 1;
        const float* wb = w_s + buf * SSD3_ROWS;
        if (m0 < pw) {
            const floatX* ap = Us + buf * SSD3_ROWS * 72 + ((lane % 8) + (lane / 16) * 8) * 72 + m0 +
                               ((lane / 8) % 2) * 8;
            const floatX* bp = Vs + buf * SSD3_ROWS * SSD4_CS_LDV +
                               ((lane % 8) + ((lane / 8) % 2) * 8) * SSD4_CS_LDV + (lane / 16) * 8;
#pragma unroll
            for (int k0 = 0; k0 < SSD3_ROWS; k0 += 16) {
                uint32_t raw[4], ah[4], al[4];
                ssd3_ldsm_t(raw, ap + k0 * 72);
                float w0 = wb[k0 + 2 * tig], w1 = wb[k0 + 2 * tig + 1];
                float w2 = wb[k0 + 8 + 2 * tig], w3 = wb[k0 + 9 + 2 * tig];
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    __nv_bfloat162 v = *(__nv_bfloat162*)&raw[r];
                    float lo = __low2float(v) * (r < 2 ? w0 : w2), hi = __high2float(v) * (r < 2 ? w1 : w3);
                    __nv_bfloat162 vh = __floats2bfloat162_rn(lo, hi);
                    ah[r] = *(uint32_t*)&vh;
                    al[r] = ssd_pack_bf16(lo - __low2float(vh), hi - __high2float(vh));
                }
#pragma unroll
                for (int nt = 0; nt < NMAX / 8; nt += 2) {
                    if (nt * 8 < N) {
                        uint32_t bfr[4];
                        ssd3_ldsm_t(bfr, bp + k0 * SSD4_CS_LDV + nt * 8);
                        ssd_mma_bf16(acc[nt], ah, bfr);
                        ssd_mma_bf16(acc[nt], al, bfr);
                        ssd_mma_bf16(acc[nt + 1], ah, bfr + 2);
                        ssd_mma_bf16(acc[nt + 1], al, bfr + 2);
                    }
                }
            }
        }
        __syncthreads();
    }
    if (m0 >= pw) return;
    float* o = out + ssd_state_off(b, c, h, nch, H, P * N);
    int p = p0 + m0 + lane / 4;
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) {
        if (nt * 8 < N) {
            int n = nt * 8 + 2 * tig;
            *(float2*)(o + (size_t)p * N + n) = make_float2(acc[nt][0], acc[nt][1]);
            *(float2*)(o + (size_t)(p + 8) * N + n) = make_float2(acc[nt][2], acc[nt][3]);
        }
    }
}

/* version 8 (bf16 build): version 7 with these changes to the two backward row-tile kernels below (template flag V8;
   the V8 = false instantiations are version 4's kernels, which versions 4 to 7 run):
   - the grid runs the row tiles of one (b, chunk, head-group) next to each other (blockIdx.x the row tile), so the
     blocks that read the same states (col: dH_c, dC: Hprev_c, 32 KB of fp32 per head at P = 64, N = 128) and the
     same dy / x / B / C rows run in the same wave: the second read hits L2 (version 4 ran all first row tiles, then
     all second ones, and the states, written by the kernel before, came twice from DRAM);
   - the per-head state's split into bf16 hi + lo issues all (col) or half (dC: 168-register cap) of its 16-byte
     loads before the first use: one memory latency per head instead of four;
   - col: the fp32 B_j . C_i slab of the block (64 rows j x the chunk's columns i >= j0, from ssd3_bct_kernel) is
     copied into shared memory once per block by 16-byte cp.async, and each lane reads its pairs (i, i + 1) as one
     8-byte load; version 4 read it from L2 / L1 with one 4-byte load per element for every head of the block;
   - col: the row sums of W are reduced across the warp inside each 32-column half (their 8 partials die there),
     and the epilogue's dy_j comes from the diagonal tile's dy buffer (at Q <= 128 no later tile overwrites it)
     instead of 16 scalar global loads per thread and head.
   Taken where P, N are in {64, 128} (compile-time widths), Q is 64 or 128 (the slab: 64 x 128 floats) and bct,
   the states are 16-byte aligned; else version 7's path. */
#ifndef SSD8_COL_BATCH
#define SSD8_COL_BATCH 16  /* col: 16-byte state loads in flight per thread (16: all of dH at P = 64, N = 128) */
#endif
#define SSD8_SLD 136  /* slab row stride in floats: 128 + 8 (8-byte reads of a quad's 4 lanes x 8 rows: no conflicts) */
static inline size_t ssd8_smem_slab(void) { return (size_t)SSD3_ROWS * SSD8_SLD * sizeof(float); }
/* ssd3_load_split for a compile-time (R, CN) fp32 matrix m (16-byte aligned), hi and lo both written: BATCH
   16-byte loads per thread are issued before any of them is used (ssd3_load_split's loop has 4 in flight) */
template <int R, int CN, int BATCH>
__device__ static inline void ssd8_load_split(floatX* hi, floatX* lo, int ld, const float* m) {
    constexpr int NV = CN / 4, RSTEP = SSD3_THREADS / NV, NPASS = R / RSTEP;
    static_assert(SSD3_THREADS % NV == 0 && R % RSTEP == 0 && NPASS % BATCH == 0, "ssd8_load_split: shape");
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

/* ssd3_bwd_col_kernel for the hg heads h0.. of one head-group (grid (nchunks, B * H/hg, ceil(Q/64)), blockIdx.z the
   row tile): per head, dx_j and the per-row sums exactly as version 3; dB_j summed over the heads in registers
   (dt_j folded into the Z rows) and written once, to dbo + row * dbo_stride + (direct ? dbo_col0 + g N : hgi N). */
#ifndef SSD4_COL_MINBLOCKS
#define SSD4_COL_MINBLOCKS 2  /* 2 blocks/SM without the spill beat 3 with it: 1.471 vs 1.507 ms fwd+bwd (NOTES_ssd.md) */
#endif
#ifndef SSD4_DC_MINBLOCKS
#define SSD4_DC_MINBLOCKS 3   /* without the cap, 177 registers at P = 64, N = 128: only 2 blocks per SM */
#endif
template <int PMAX, int NMAX, bool EXACT, bool V8, bool V9>  /* V9 (with V8): see "version 9" in ssd_wgmma.cuh */
__global__ static void __launch_bounds__(SSD3_THREADS, SSD4_COL_MINBLOCKS)
ssd4_bwd_col_kernel(floatX* dxbc, floatX* dbo, int dbo_stride, int dbo_col0, int direct, float* xdxs, float* xdxs_st,
                    float* xdy, float* colf, float* rowp, const floatX* dy, const floatX* xbc, int xbc_stride,
                    const float* dt, const float* cum, const float* dstates, const float* bct, const float* Dskip,
                    int T, int H, int P, int N, int G, int Q, int hg) {
    if (EXACT) { P = PMAX; N = NMAX; }  /* compile-time widths: the n-tile guards fold, the k loops unroll */
    extern __shared__ __align__(16) unsigned char ssd3_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD3_ROWS), nhg = H / hg;
    /* version 8: grid (nti, nchunks, B * H/hg), the row tiles of one head-group adjacent (see "version 8") */
    int c = V8 ? blockIdx.y : blockIdx.x, rt = V8 ? blockIdx.x : blockIdx.z, bhg = V8 ? blockIdx.z : blockIdx.y;
    int b = bhg / nhg, hgi = bhg % nhg, h0 = hgi * hg;
    int g = h0 / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), j0 = rt * SSD3_ROWS;
    if (j0 >= len) return;
    int E = H * P, ldn = N + 8, ldp = P + 8;
    floatX* Xj = (floatX*)ssd3_smem;             /* (64, ldp) x rows j */
    floatX* Bj = Xj + SSD3_ROWS * ldp;           /* first B rows j (64, ldn), dH hi, lo (2 x (P, ldn)); then */
    floatX* R = Bj + SSD3_ROWS * ldn;
    floatX* Ci = Bj;                             /* the i tiles: 2 x (64, ldn) C rows i */
    floatX* Yi = Ci + 2 * SSD3_ROWS * ldn;       /* 2 x (64, ldp) dy rows i */
    float* ci = (float*)(Bj + ssd3_region_bwd(P, N, 1));  /* 2 x 64 cum_i */
    float* red = ci + 2 * SSD3_ROWS;                    /* 4 warps x 64 partial row sums */
    float* slab = red + 4 * SSD3_ROWS;                  /* version 8: (64, SSD8_SLD) B_j . C_i, columns i - j0 */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Cg = rows + E + G * N + g * N;
    const float* bcc = bct + ((size_t)b * nch + c) * G * Q * Q + (size_t)g * Q * Q;  /* [j][i] = B_j . C_i */
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    int rj[2] = {j0 + m0 + lane / 4, j0 + m0 + lane / 4 + 8};
    int it_end = CEIL_DIV(len, SSD3_ROWS);
    if (V8) {
        /* the slab, once for every head of the block: rows j0.., columns i in [j0, 64 it_end); the bct kernel wrote
           all of them (zeros where a row is past the chunk's end); committed with the first head's tiles */
        int nq = (it_end - rt) * (SSD3_ROWS / 4);
        for (int idx = threadIdx.x; idx < SSD3_ROWS * nq; idx += SSD3_THREADS) {
            int jj = idx / nq, q = idx % nq;
            ssd3_cp_async16(slab + jj * SSD8_SLD + 4 * q, bcc + (size_t)(j0 + jj) * Q + j0 + 4 * q, 1);
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
        ssd3_load_tile(Bj, ldn, rows + E + g * N, xbc_stride, j0, len, N);
        ssd3_load_tile(Xj, ldp, rows + h * P, xbc_stride, j0, len, P);
        ssd3_cp_commit();
        if (V8) {
            constexpr int NPASS = PMAX * NMAX / (4 * SSD3_THREADS);  /* all of them, up to SSD8_COL_BATCH */
            ssd8_load_split<PMAX, NMAX, (NPASS > SSD8_COL_BATCH ? SSD8_COL_BATCH : NPASS)>(
                R, R + P * ldn, ldn, dstates + ssd_state_off(b, c, h, nch, H, P * N));
        } else {
            ssd3_load_split(R, R + P * ldn, ldn, dstates + ssd_state_off(b, c, h, nch, H, P * N), P, N);
        }
        float cum_last = cumc[len - 1], cum_r[2], dt_r[2], es[2];
        /* version 9, the off-diagonal i tiles (it > rt: the j tile is whole, every i > every j): cref = cum of the
           j tile's last row; decay = exp(cum_i - cref) (per column, in ci) times er = exp(cref - cum_j) (per row) */
        float cref = V9 && j0 + SSD3_ROWS <= len ? cumc[j0 + SSD3_ROWS - 1] : 0.f, er[2];
        for (int r = 0; r < 2; r++) {
            int ok = rj[r] < len;
            cum_r[r] = ok ? cumc[rj[r]] : 0.f;
            dt_r[r] = ok ? dtc[rj[r]] : 0.f;
            es[r] = ok ? expf(cum_last - cum_r[r]) : 0.f;
            er[r] = V9 && ok ? __expf(cref - cum_r[r]) : 0.f;
        }
        ssd3_cp_wait<0>();
        __syncthreads();
        float adx[PMAX / 8][4];
#pragma unroll
        for (int nt = 0; nt < PMAX / 8; nt++) adx[nt][0] = adx[nt][1] = adx[nt][2] = adx[nt][3] = 0.f;
        /* state parts: B_j dH^T (B(k = n, col = p) = dH[p, n]) and dt_j x_j dH (B(k = p, n) = dH[p, n]) */
        for (int part = 0; part < 2; part++)
            ssd3_mma_nt<PMAX / 8>(adx, Bj + m0 * ldn, ldn, R + part * P * ldn, ldn, N, P);
#pragma unroll
        for (int nt = 0; nt < PMAX / 8; nt++) {
            adx[nt][0] *= es[0]; adx[nt][1] *= es[0]; adx[nt][2] *= es[1]; adx[nt][3] *= es[1];
        }
        float sd[2] = {es[0] * dt_r[0], es[1] * dt_r[1]};
        ssd4_state_nn<NMAX>(adb, NULL, Xj + m0 * ldp, ldp, R, R + P * ldn, ldn, P, N, sd, NULL, 0);
        float st[2];
        ssd3_rowdot<PMAX / 8>(st, adx, Xj + m0 * ldp, ldp, P);  /* x_j . (state part of dxs_j) */
        __syncthreads();  /* dH no longer needed: its space takes the i tiles */
        ssd3_load_tile(Ci, ldn, Cg, xbc_stride, j0, len, N);
        ssd3_load_tile(Yi, ldp, Yg, E, j0, len, P);
        ssd3_cp_commit();
        if (threadIdx.x < SSD3_ROWS) {
            int i = j0 + threadIdx.x;
            ci[threadIdx.x] = i < len ? cumc[i] : 0.f;
        }
        float colacc[2] = {0.f, 0.f};
        for (int it = rt; it < it_end; it++) {
            int buf = (it - rt) & 1;
            if (it + 1 < it_end) {
                int nb = buf ^ 1, i0n = (it + 1) * SSD3_ROWS;
                ssd3_load_tile(Ci + nb * SSD3_ROWS * ldn, ldn, Cg, xbc_stride, i0n, len, N);
                ssd3_load_tile(Yi + nb * SSD3_ROWS * ldp, ldp, Yg, E, i0n, len, P);
                ssd3_cp_commit();
                if (threadIdx.x < SSD3_ROWS) {  /* version 9: tile it + 1 > rt is off-diagonal: exp(cum_i - cref) */
                    int i = i0n + threadIdx.x;
                    ci[nb * SSD3_ROWS + threadIdx.x] = i >= len ? 0.f : V9 ? __expf(cumc[i] - cref) : cumc[i];
                }
                ssd3_cp_wait<1>();
            } else {
                ssd3_cp_wait<0>();
            }
            __syncthreads();
            const floatX* Cb = Ci + buf * SSD3_ROWS * ldn;
            const floatX* Yb = Yi + buf * SSD3_ROWS * ldp;
            const float* cib = ci + buf * SSD3_ROWS;
            float rp[8][2];
#pragma unroll
            for (int ih = 0; ih < 2; ih++) {  /* two halves of 32 columns i: fewer live registers */
                if (ih == 0 && it == rt && m0 >= 32) {  /* diagonal tile: rows j >= 32 have nothing at i < 32 */
#pragma unroll
                    for (int nt = 0; nt < 4; nt++) rp[nt][0] = rp[nt][1] = 0.f;
                    if (V8 && lane < 4)  /* this warp's row-sum partials of the half: zero */
#pragma unroll
                        for (int k = 0; k < 8; k++) red[warp * SSD3_ROWS + k * 4 + lane] = 0.f;
                    continue;
                }
                float bc[4][4], xy[4][4];
                if (!V8) {
#pragma unroll
                    for (int nt = 0; nt < 4; nt++)  /* B_j . C_i from ssd3_bct_kernel (L2), zero outside the chunk */
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            int i = it * SSD3_ROWS + ih * 32 + nt * 8 + 2 * tig + (e & 1), j = rj[e / 2];
                            bc[nt][e] = i < len && j < len ? bcc[(size_t)j * Q + i] : 0.f;
                        }
                }
#pragma unroll
                for (int nt = 0; nt < 4; nt++) xy[nt][0] = xy[nt][1] = xy[nt][2] = xy[nt][3] = 0.f;
                ssd3_mma_nt<4>(xy, Xj + m0 * ldp, ldp, Yb + ih * 32 * ldp, ldp, P, 32);  /* x_j . dy_i */
                if (V8) {  /* the slab's (i, i + 1) pairs; finite everywhere, the mask below zeroes the decay */
#pragma unroll
                    for (int nt = 0; nt < 4; nt++)
#pragma unroll
                        for (int r = 0; r < 2; r++) {
                            float2 v = *(const float2*)(slab + (m0 + lane / 4 + 8 * r) * SSD8_SLD +
                                                        (it - rt) * SSD3_ROWS + ih * 32 + nt * 8 + 2 * tig);
                            bc[nt][2 * r] = v.x;
                            bc[nt][2 * r + 1] = v.y;
                        }
                }
                if (V9 && it > rt)  /* off-diagonal: no mask (i >= len: 0 in ci), no exp */
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
                else
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    rp[ih * 4 + nt][0] = rp[ih * 4 + nt][1] = 0.f;
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int ii = ih * 32 + nt * 8 + 2 * tig + (e & 1), i = it * SSD3_ROWS + ii, r = e / 2;
                        int ok = i >= rj[r] && i < len && rj[r] < len;
                        float dec = ok ? __expf(cib[ii] - cum_r[r]) : 0.f;
                        float m = bc[nt][e] * dec, zd = xy[nt][e] * dec * dt_r[r];  /* Z[j,i] dt_j */
                        float w = zd * bc[nt][e];                                   /* W[i,j] */
                        colacc[r] += w;
                        rp[ih * 4 + nt][e & 1] += w;
                        bc[nt][e] = m;
                        xy[nt][e] = zd;
                    }
                }
                if (V8)  /* this half's row sums over the warp's 16 rows j now: the 8 partials die here */
#pragma unroll
                    for (int nt = 0; nt < 4; nt++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            float v = rp[ih * 4 + nt][e];
                            v += __shfl_xor_sync(0xffffffffu, v, 4);
                            v += __shfl_xor_sync(0xffffffffu, v, 8);
                            v += __shfl_xor_sync(0xffffffffu, v, 16);
                            if (lane < 4) red[warp * SSD3_ROWS + (ih * 4 + nt) * 8 + 2 * tig + e] = v;
                        }
                uint32_t mf[2][4], zf[2][4];
                ssd3_pack_a<2>(mf, bc);
                ssd3_pack_a<2>(zf, xy);
                ssd3_mma_rn<2, PMAX / 8>(adx, mf, Yb + ih * 32 * ldp, ldp, P);  /* += M dy_i */
                ssd3_mma_rn<2, NMAX / 8>(adb, zf, Cb + ih * 32 * ldn, ldn, N);  /* += (dt Z) C_i */
            }
            /* row sums over this tile's j of W[i, j]: over the 8 row groups of a warp (version 8: done above),
               then the 4 warps in order */
            if (!V8)
#pragma unroll
                for (int k = 0; k < 8; k++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float v = rp[k][e];
                        v += __shfl_xor_sync(0xffffffffu, v, 4);
                        v += __shfl_xor_sync(0xffffffffu, v, 8);
                        v += __shfl_xor_sync(0xffffffffu, v, 16);
                        if (lane < 4) red[warp * SSD3_ROWS + k * 8 + 2 * tig + e] = v;
                    }
            __syncthreads();
            if (threadIdx.x < SSD3_ROWS) {
                int i = it * SSD3_ROWS + threadIdx.x;
                if (i < len)
                    rowp[(((size_t)bh * nch + c) * nti + rt) * Q + i] =
                        red[threadIdx.x] + red[SSD3_ROWS + threadIdx.x] + red[2 * SSD3_ROWS + threadIdx.x] +
                        red[3 * SSD3_ROWS + threadIdx.x];
            }
            __syncthreads();
        }
        /* this head's outputs per row j */
        float xd[2];
        ssd3_rowdot<PMAX / 8>(xd, adx, Xj + m0 * ldp, ldp, P);  /* x_j . dxs_j */
        float Dh = Dskip[h];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int ok = rj[r] < len;
            size_t row = (size_t)(b * T + t0 + (ok ? rj[r] : 0));
            /* version 8: dy_j from the diagonal tile's dy buffer (buffer 0; Q <= 128: no later tile went there) */
            const floatX* dyr = V8 ? Yi + (m0 + lane / 4 + 8 * r) * ldp : dy + row * E + h * P;
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
            sdy = ssd3_quad_sum(sdy);
            float cs = ssd3_quad_sum(colacc[r]);
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
    ssd4_store_rows<NMAX>(dbo, (size_t)dbo_stride, col, adb, (size_t)(b * T + t0 + rj[0]), (size_t)(b * T + t0 + rj[1]),
                          rj[0] < len, rj[1] < len, N);
}

/* ssd3_bwd_dc_kernel for the hg heads h0.. of one head-group (grid as the col kernel's; the last row tile, the
   longest, first): dC_i summed over the heads in registers, rowi per head; written as in ssd4_bwd_col_kernel. */
template <int PMAX, int NMAX, bool EXACT, bool V8>
__global__ static void __launch_bounds__(SSD3_THREADS, SSD4_DC_MINBLOCKS)
ssd4_bwd_dc_kernel(floatX* dco, int dco_stride, int dco_col0, int direct, float* rowi, const floatX* dy,
                   const floatX* xbc, int xbc_stride, const float* dt, const float* cum, const float* states, int T,
                   int H, int P, int N, int G, int Q, int hg) {
    if (EXACT) { P = PMAX; N = NMAX; }  /* compile-time widths: the n-tile guards fold, the k loops unroll */
    extern __shared__ __align__(16) unsigned char ssd3_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD3_ROWS), nhg = H / hg;
    /* version 8: grid (nti, nchunks, B * H/hg), the row tiles of one head-group adjacent, the longest first */
    int c = V8 ? blockIdx.y : blockIdx.x, bhg = V8 ? blockIdx.z : blockIdx.y;
    int rt = nti - 1 - (int)(V8 ? blockIdx.x : blockIdx.z), b = bhg / nhg, hgi = bhg % nhg, h0 = hgi * hg;
    int g = h0 / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD3_ROWS;
    if (i0 >= len) return;
    int E = H * P, ldn = N + 8, ldp = P + 8;
    floatX* Ys = (floatX*)ssd3_smem;             /* (64, ldp) dy rows i */
    floatX* Cs = Ys + SSD3_ROWS * ldp;           /* first C rows i (64, ldn), Hprev hi, lo (2 x (P, ldn)); then */
    floatX* R = Cs + SSD3_ROWS * ldn;
    floatX* Bs = Cs;                             /* the j tiles: 2 x (64, ldn) B rows j */
    floatX* Xs = Bs + 2 * SSD3_ROWS * ldn;       /* 2 x (64, ldp) x rows j */
    float* cj = (float*)(Cs + ssd3_region_bwd(P, N, 1));  /* 2 x 64 cum_j */
    float* dj = cj + 2 * SSD3_ROWS;                     /* 2 x 64 dt_j */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* Bg = rows + E + g * N;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    int ri[2] = {i0 + m0 + lane / 4, i0 + m0 + lane / 4 + 8};
    float acc[NMAX / 8][4];  /* dC_i summed over the block's heads */
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    for (int hh = 0; hh < hg; hh++) {
        int h = h0 + hh, bh = b * H + h;
        const floatX* Xg = rows + h * P;
        const float* cumc = cum + (size_t)bh * T + t0;
        const float* dtc = dt + (size_t)bh * T + t0;
        ssd3_load_tile(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
        ssd3_load_tile(Ys, ldp, dy + (size_t)(b * T + t0) * E + h * P, E, i0, len, P);
        ssd3_cp_commit();
        if (V8) {
            /* half of the loads in flight at once: the 168-register cap leaves no room for all */
            ssd8_load_split<PMAX, NMAX, PMAX * NMAX / (8 * SSD3_THREADS)>(
                R, R + P * ldn, ldn, states + ssd_state_off(b, c, h, nch, H, P * N));
        } else {
            ssd3_load_split(R, R + P * ldn, ldn, states + ssd_state_off(b, c, h, nch, H, P * N), P, N);
        }
        float cum_r[2];
        for (int r = 0; r < 2; r++) cum_r[r] = ri[r] < len ? cumc[ri[r]] : 0.f;
        ssd3_cp_wait<0>();
        __syncthreads();
        /* exp(cum_i) dy_i Hprev (B(k = p, n) = Hprev[p, n] = hi + lo), and its dot with C_i (rowi) */
        float e[2] = {expf(cum_r[0]), expf(cum_r[1])}, pw[2] = {0.f, 0.f};
        ssd4_state_nn<NMAX>(acc, pw, Ys + m0 * ldp, ldp, R, R + P * ldn, ldn, P, N, e, Cs + m0 * ldn, ldn);
        pw[0] = ssd3_quad_sum(pw[0]);
        pw[1] = ssd3_quad_sum(pw[1]);
        if (tig == 0)
            for (int r = 0; r < 2; r++)
                if (ri[r] < len) rowi[(size_t)bh * T + t0 + ri[r]] = pw[r];
        __syncthreads();  /* Hprev no longer needed: its space takes the j tiles */
        ssd3_load_tile(Bs, ldn, Bg, xbc_stride, 0, len, N);
        ssd3_load_tile(Xs, ldp, Xg, xbc_stride, 0, len, P);
        ssd3_cp_commit();
        if (threadIdx.x < SSD3_ROWS) {
            int j = threadIdx.x;
            cj[j] = j < len ? cumc[j] : 0.f;
            dj[j] = j < len ? dtc[j] : 0.f;
        }
        for (int jt = 0; jt <= rt; jt++) {
            int buf = jt & 1;
            if (jt < rt) {
                int nb = buf ^ 1, j0n = (jt + 1) * SSD3_ROWS;
                ssd3_load_tile(Bs + nb * SSD3_ROWS * ldn, ldn, Bg, xbc_stride, j0n, len, N);
                ssd3_load_tile(Xs + nb * SSD3_ROWS * ldp, ldp, Xg, xbc_stride, j0n, len, P);
                ssd3_cp_commit();
                if (threadIdx.x < SSD3_ROWS) {
                    int j = j0n + threadIdx.x;
                    cj[nb * SSD3_ROWS + threadIdx.x] = j < len ? cumc[j] : 0.f;
                    dj[nb * SSD3_ROWS + threadIdx.x] = j < len ? dtc[j] : 0.f;
                }
                ssd3_cp_wait<1>();
            } else {
                ssd3_cp_wait<0>();
            }
            __syncthreads();
            const floatX* Bb = Bs + buf * SSD3_ROWS * ldn;
            const floatX* Xb = Xs + buf * SSD3_ROWS * ldp;
            const float* cjb = cj + buf * SSD3_ROWS;
            const float* djb = dj + buf * SSD3_ROWS;
#pragma unroll
            for (int jh = 0; jh < 2; jh++) {
                if (jh == 1 && jt == rt && m0 < 32) continue;  /* diagonal tile: rows i < 32 have nothing at j >= 32 */
                float wd[4][4];
#pragma unroll
                for (int nt = 0; nt < 4; nt++) wd[nt][0] = wd[nt][1] = wd[nt][2] = wd[nt][3] = 0.f;
                ssd3_mma_nt<4>(wd, Ys + m0 * ldp, ldp, Xb + jh * 32 * ldp, ldp, P, 32);  /* dy_i . x_j */
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
#pragma unroll
                    for (int k = 0; k < 4; k++) {
                        int jj = jh * 32 + nt * 8 + 2 * tig + (k & 1), j = jt * SSD3_ROWS + jj, r = k / 2;
                        int ok = j <= ri[r] && ri[r] < len && j < len;
                        wd[nt][k] = ok ? wd[nt][k] * __expf(cum_r[r] - cjb[jj]) * djb[jj] : 0.f;
                    }
                uint32_t wf[2][4];
                ssd3_pack_a<2>(wf, wd);
                ssd3_mma_rn<2, NMAX / 8>(acc, wf, Bb + jh * 32 * ldn, ldn, N);  /* += WD B_j */
            }
            __syncthreads();  /* (the last one also frees Ys, Cs for the next head) */
        }
    }
    int col = direct ? dco_col0 + g * N : hgi * N;
    ssd4_store_rows<NMAX>(dco, (size_t)dco_stride, col, acc, (size_t)(b * T + t0 + ri[0]), (size_t)(b * T + t0 + ri[1]),
                          ri[0] < len, ri[1] < len, N);
}

/* dB, dC of each group = the sum of its H/(G hg) head-group partials (B*T, H/hg, N) bf16, in order; 8 columns (16
   bytes) per thread */
__global__ static void ssd4_group_sum_kernel(floatX* dxbc, int xbc_stride, const floatX* pB, const floatX* pC, int BT,
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

template <int PMAX, int NMAX, bool EXACT>
static void ssd3_launch_fwd_e(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B,
                              int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
    size_t smem = ssd3_smem_fwd(P, N);
    ssd_set_smem((const void*)ssd3_scan_fwd_kernel<PMAX, NMAX, EXACT>, smem);
    ssd3_scan_fwd_kernel<PMAX, NMAX, EXACT><<<dim3(ssd_nchunks(T, Q) * CEIL_DIV(Q, SSD3_ROWS), B * H), SSD3_THREADS,
                                              smem, stream>>>(y, xbc, xbc_stride, s.dt, s.cum, s.states, Dskip, T, H,
                                                              P, N, G, Q);
    cudaCheckLast();
}
/* P, N equal to the register widths (the model's 64, 128 among them) run the instantiation with compile-time widths */
template <int PMAX, int NMAX>
static void ssd3_launch_fwd(floatX* y, const floatX* xbc, int xbc_stride, SSDSaved s, const float* Dskip, int B, int T,
                            int H, int P, int N, int G, int Q, cudaStream_t stream) {
    if (P == PMAX && N == NMAX)
        ssd3_launch_fwd_e<PMAX, NMAX, true>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
    else ssd3_launch_fwd_e<PMAX, NMAX, false>(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
}
template <int PMAX, int NMAX, bool EXACT>
static void ssd3_launch_bwd_e(floatX* dxbc, SSDWork w, float* colf, float* rowp, const floatX* dy, const floatX* xbc,
                            int xbc_stride, SSDSaved s, const float* Dskip, int B, int T, int H, int P, int N, int G,
                            int Q, cudaStream_t stream) {
    int nti = CEIL_DIV(Q, SSD3_ROWS);
    dim3 grid(ssd_nchunks(T, Q) * nti, B * H);
    ssd3_bct_kernel<<<dim3(ssd_nchunks(T, Q) * nti * nti, B * G), SSD3_THREADS, 0, stream>>>(w.bct, xbc, xbc_stride, T,
                                                                                           H, P, N, G, Q);
    cudaCheckLast();
    size_t smem = ssd3_smem_col(P, N);
    ssd_set_smem((const void*)ssd3_bwd_col_kernel<PMAX, NMAX, EXACT>, smem);
    ssd3_bwd_col_kernel<PMAX, NMAX, EXACT><<<grid, SSD3_THREADS, smem, stream>>>(
        dxbc, (floatX*)w.dB_h, w.xdxs, w.xdxs_st, w.xdy, colf, rowp, dy, xbc, xbc_stride, s.dt, s.cum, w.dstates,
        w.bct, Dskip, T, H, P, N, G, Q);
    cudaCheckLast();
    smem = ssd3_smem_dc(P, N);
    ssd_set_smem((const void*)ssd3_bwd_dc_kernel<PMAX, NMAX, EXACT>, smem);
    ssd3_bwd_dc_kernel<PMAX, NMAX, EXACT><<<grid, SSD3_THREADS, smem, stream>>>(
        (floatX*)w.dC_h, w.roww, dy, xbc, xbc_stride, s.dt, s.cum, s.states, T, H, P, N, G, Q);
    cudaCheckLast();
}
template <int PMAX, int NMAX>
static void ssd3_launch_bwd(floatX* dxbc, SSDWork w, float* colf, float* rowp, const floatX* dy, const floatX* xbc,
                            int xbc_stride, SSDSaved s, const float* Dskip, int B, int T, int H, int P, int N, int G,
                            int Q, cudaStream_t stream) {
    if (P == PMAX && N == NMAX)
        ssd3_launch_bwd_e<PMAX, NMAX, true>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q,
                                            stream);
    else
        ssd3_launch_bwd_e<PMAX, NMAX, false>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q,
                                             stream);
}

/* version 6's wgmma ports, which the launchers below pick where ssd6_parts asks for them: defined in
   llmc/ssd_wgmma.cuh (included after this file) */
static inline int ssd6_takes_chunk_state(int P, int N);
static inline int ssd6_takes_dc(int P, int N);
static inline size_t ssd6_smem_chunk_state(int N);
template <int NT>
__global__ static void __launch_bounds__(SSD3_THREADS, 4)
ssd6_chunk_state_kernel(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0,
                        const float* dt, const float* cum, int mode, int T, int H, int P, int G, int Q);
static void ssd6_launch_dc(floatX* dco, int dco_stride, int dco_col0, int direct, float* rowi, const floatX* dy,
                           const floatX* xbc, int xbc_stride, SSDSaved s, dim3 grid, int T, int H, int P, int N, int G,
                           int Q, int hg, cudaStream_t stream);

/* version 4's chunk-state product (forward S_c: mode 0, backward sum exp(cum_i) dy_i C_i^T: mode 1) */
static void ssd4_launch_chunk_state(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride,
                                    int v_col0, SSDSaved s, int mode, int B, int T, int H, int P, int N, int G, int Q,
                                    cudaStream_t stream) {
    dim3 grid(ssd_nchunks(T, Q), B * H, CEIL_DIV(P, 64));
    if (ssd6_takes_chunk_state(P, N)) {
        size_t smem6 = ssd6_smem_chunk_state(N);
        if (N == 128) {
            ssd_set_smem((const void*)ssd6_chunk_state_kernel<2>, smem6);
            ssd6_chunk_state_kernel<2><<<grid, SSD3_THREADS, smem6, stream>>>(out, U, u_stride, V, v_stride, v_col0,
                                                                             s.dt, s.cum, mode, T, H, P, G, Q);
        } else {
            ssd_set_smem((const void*)ssd6_chunk_state_kernel<1>, smem6);
            ssd6_chunk_state_kernel<1><<<grid, SSD3_THREADS, smem6, stream>>>(out, U, u_stride, V, v_stride, v_col0,
                                                                             s.dt, s.cum, mode, T, H, P, G, Q);
        }
        cudaCheckLast();
        return;
    }
    size_t smem = ssd4_smem_chunk_state();
    if (N == 128) {
        ssd_set_smem((const void*)ssd4_chunk_state_kernel<128, true>, smem);
        ssd4_chunk_state_kernel<128, true><<<grid, SSD3_THREADS, smem, stream>>>(out, U, u_stride, V, v_stride, v_col0,
                                                                                s.dt, s.cum, mode, T, H, P, N, G, Q);
    } else {
        ssd_set_smem((const void*)ssd4_chunk_state_kernel<SSD_MAXD, false>, smem);
        ssd4_chunk_state_kernel<SSD_MAXD, false><<<grid, SSD3_THREADS, smem, stream>>>(
            out, U, u_stride, V, v_stride, v_col0, s.dt, s.cum, mode, T, H, P, N, G, Q);
    }
    cudaCheckLast();
}

/* version 4's two backward row-tile kernels and, where a group has more than one head-group, the group sum */
template <int PMAX, int NMAX, bool EXACT, bool V8, bool V9>
static void ssd4_launch_bwd_e(floatX* dxbc, SSDWork w, float* colf, float* rowp, const floatX* dy, const floatX* xbc,
                              int xbc_stride, SSDSaved s, const float* Dskip, int B, int T, int H, int P, int N, int G,
                              int Q, cudaStream_t stream) {
    int nti = CEIL_DIV(Q, SSD3_ROWS), nch = ssd_nchunks(T, Q), E = H * P;
    int hg = ssd4_heads_per_block(H, G), nhg = H / hg, direct = hg == H / G;
    ssd3_bct_kernel<<<dim3(nch * nti * nti, B * G), SSD3_THREADS, 0, stream>>>(w.bct, xbc, xbc_stride, T, H, P, N, G,
                                                                               Q);
    cudaCheckLast();
    /* direct: dB, dC into dxbc; else bf16 partials (B*T, nhg, N) in the per-head regions */
    /* the group sum reads them 16 bytes at a time: round the region starts up to 16 bytes (the regions hold
       B*T*H*N floats, the partials at most half of that) */
    floatX* pB = direct ? dxbc : (floatX*)(((uintptr_t)w.dB_h + 15) & ~(uintptr_t)15);
    floatX* pC = direct ? dxbc : (floatX*)(((uintptr_t)w.dC_h + 15) & ~(uintptr_t)15);
    int pstride = direct ? xbc_stride : nhg * N;
    dim3 grid = V8 ? dim3(nti, nch, B * nhg) : dim3(nch, B * nhg, nti);  /* version 8: row tiles adjacent */
    size_t smem = ssd3_smem_col(P, N) + (V8 ? ssd8_smem_slab() : 0);
    ssd_set_smem((const void*)ssd4_bwd_col_kernel<PMAX, NMAX, EXACT, V8, V9>, smem);
    ssd4_bwd_col_kernel<PMAX, NMAX, EXACT, V8, V9><<<grid, SSD3_THREADS, smem, stream>>>(
        dxbc, pB, pstride, E, direct, w.xdxs, w.xdxs_st, w.xdy, colf, rowp, dy, xbc, xbc_stride, s.dt, s.cum,
        w.dstates, w.bct, Dskip, T, H, P, N, G, Q, hg);
    cudaCheckLast();
    if (V8) {
        smem = ssd3_smem_dc(P, N);
        ssd_set_smem((const void*)ssd4_bwd_dc_kernel<PMAX, NMAX, EXACT, true>, smem);
        ssd4_bwd_dc_kernel<PMAX, NMAX, EXACT, true><<<grid, SSD3_THREADS, smem, stream>>>(
            pC, pstride, E + G * N, direct, w.roww, dy, xbc, xbc_stride, s.dt, s.cum, s.states, T, H, P, N, G, Q, hg);
        cudaCheckLast();
        ssd8_runs++;
        if (V9) ssd9_bwd_runs++;
    } else if (ssd6_takes_dc(P, N) && (uintptr_t)s.states % 16 == 0) {  /* its state loads are 16 bytes wide */
        ssd6_launch_dc(pC, pstride, E + G * N, direct, w.roww, dy, xbc, xbc_stride, s, grid, T, H, P, N, G, Q, hg,
                       stream);
    } else {
        smem = ssd3_smem_dc(P, N);
        ssd_set_smem((const void*)ssd4_bwd_dc_kernel<PMAX, NMAX, EXACT, false>, smem);
        ssd4_bwd_dc_kernel<PMAX, NMAX, EXACT, false><<<grid, SSD3_THREADS, smem, stream>>>(
            pC, pstride, E + G * N, direct, w.roww, dy, xbc, xbc_stride, s.dt, s.cum, s.states, T, H, P, N, G, Q, hg);
        cudaCheckLast();
    }
    if (!direct) {
        size_t n = (size_t)B * T * G * (N / 8);
        ssd4_group_sum_kernel<<<(unsigned)CEIL_DIV(n, (size_t)256), 256, 0, stream>>>(dxbc, xbc_stride, pB, pC, B * T,
                                                                                     nhg, N, G, E);
        cudaCheckLast();
    }
}
/* version 8's kernels run where ssd_fast_version >= 8, P, N are their compile-time widths (64 or 128), Q is 64 or
   128 (the col kernel's B_j . C_i slab holds 128 columns) and bct and the states are 16-byte aligned */
static inline int ssd8_takes(int P, int N, int Q, const void* bct, const void* states) {
    return ssd_fast_version >= 8 && (P == 64 || P == 128) && (N == 64 || N == 128) && (Q == 64 || Q == 128) &&
           (uintptr_t)bct % 16 == 0 && (uintptr_t)states % 16 == 0;
}
template <int PMAX, int NMAX>
static void ssd4_launch_bwd(floatX* dxbc, SSDWork w, float* colf, float* rowp, const floatX* dy, const floatX* xbc,
                            int xbc_stride, SSDSaved s, const float* Dskip, int B, int T, int H, int P, int N, int G,
                            int Q, cudaStream_t stream) {
    if (P == PMAX && N == NMAX && ssd8_takes(P, N, Q, w.bct, s.states) && ssd_fast_version >= 9 &&
        (ssd9_parts & 2))
        ssd4_launch_bwd_e<PMAX, NMAX, true, true, true>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N,
                                                        G, Q, stream);
    else if (P == PMAX && N == NMAX && ssd8_takes(P, N, Q, w.bct, s.states))
        ssd4_launch_bwd_e<PMAX, NMAX, true, true, false>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G,
                                                  Q, stream);
    else if (P == PMAX && N == NMAX)
        ssd4_launch_bwd_e<PMAX, NMAX, true, false, false>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G,
                                                   Q, stream);
    else
        ssd4_launch_bwd_e<PMAX, NMAX, false, false, false>(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N,
                                                    G, Q, stream);
}
#endif /* !ENABLE_FP32 */

#endif /* SSD_LAB_MMA_CUH */
