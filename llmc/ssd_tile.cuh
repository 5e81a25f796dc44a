/*
 * ssd_tile.cuh: the bf16 build's tile primitives, which every SSD tile kernel (llmc/ssd_state.cuh, ssd_fwd.cuh,
 * ssd_bwd.cuh) and the simple kernels' ssd_gemm32 (llmc/ssd_simple.cuh) build on: mma.sync m16n8k16 fragments (bf16
 * operands, fp32 accumulators), ldmatrix, cp.async, and the shared-memory layout of the 64-row tile kernels.
 * Row tiles are 64 rows (SSD_MMA_ROWS); a block is 4 warps, warp w owns rows 16w..16w+15. Operands sit in shared
 * memory as bf16 (rows padded by 16 bytes, so the 8 rows of an ldmatrix fall in 8 bank groups), products
 * accumulate in registers, and a 16 x 64 score tile (C B^T, dy x^T, ...) is masked and scaled in its accumulator
 * fragments and then repacked in place as the A fragments of the next product (the m16n8 accumulator layout of two
 * adjacent 8-column tiles is the m16k16 A-operand layout). Empty in the fp32 build.
 */
#ifndef MAMBA2_SSD_TILE_CUH
#define MAMBA2_SSD_TILE_CUH

#if !defined(MAMBA2_SSD_CUH) && !defined(MAMBA2_ATTENTION_CUH)
#error "llmc/ssd_tile.cuh is a part of llmc/ssd.cuh (and shared with llmc/attention.cuh): include llmc/ssd.cuh instead"
#endif

#if !defined(ENABLE_FP32)
/* two floats to one register of two bf16, the lower index in the low half (the mma fragment order) */
__device__ static inline uint32_t ssd_pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t*)&v;
}
/* d (16x8 fp32) += a (16x16 bf16, row-major) b (16x8 bf16, column-major) on the tensor cores */
__device__ static inline void ssd_mma_bf16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

#define SSD_MMA_ROWS 64     /* rows of a row tile: 4 warps of 16 */
#define SSD_MMA_THREADS 128

__device__ static inline uint32_t ssd_saddr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
/* four 8x8 bf16 matrices; lanes 8m..8m+7 give the row addresses of matrix m */
__device__ static inline void ssd_ldsm(uint32_t r[4], const floatX* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(ssd_saddr(p)) : "memory");
}
__device__ static inline void ssd_ldsm_t(uint32_t r[4], const floatX* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(ssd_saddr(p)) : "memory");
}
/* 16 bytes global -> shared without passing through registers; valid = 0 writes zeros (reads nothing) */
__device__ static inline void ssd_cp_async16(void* dst, const void* src, int valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(ssd_saddr(dst)), "l"(src),
                 "r"(valid ? 16 : 0) : "memory");
}
__device__ static inline void ssd_cp_commit(void) { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int n> __device__ static inline void ssd_cp_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(n) : "memory");
}

/* rows [r0, r0 + 64) of a bf16 row-major matrix (row stride gstride, ncols % 8 == 0 columns) into shared memory
   with row stride ld (ncols + 8: the 16-byte pad puts the 8 rows of an ldmatrix in 8 different bank groups).
   Rows at or past nvalid are zero-filled, so partial chunks need no bounds checks in the products. */
__device__ static inline void ssd_load_tile(floatX* dst, int ld, const floatX* src, size_t gstride, int r0,
                                             int nvalid, int ncols) {
    int nv = ncols / 8;
    for (int idx = threadIdx.x; idx < SSD_MMA_ROWS * nv; idx += SSD_MMA_THREADS) {
        int r = idx / nv, v = idx % nv, ok = r0 + r < nvalid;
        ssd_cp_async16(dst + r * ld + v * 8, src + (ok ? (size_t)(r0 + r) * gstride + v * 8 : 0), ok);
    }
}

/* an fp32 (R, Cn) matrix into shared memory as bf16 hi (and lo = the rounding error of hi, if lo != NULL).
   16-byte loads and no per-element division where the layout allows (it does for the model's shapes): this runs in
   every block's prologue, before any tile work can start. */
__device__ static inline void ssd_load_split(floatX* hi, floatX* lo, int ld, const float* m, int R, int Cn) {
    int nv = Cn / 4;
    if (Cn % 4 == 0 && SSD_MMA_THREADS % nv == 0 && (uintptr_t)m % 16 == 0) {
        int c = (threadIdx.x % nv) * 4;
#pragma unroll 4
        for (int r = threadIdx.x / nv; r < R; r += SSD_MMA_THREADS / nv) {
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
    for (int idx = threadIdx.x; idx < R * Cn; idx += SSD_MMA_THREADS) {
        int r = idx / Cn, c = idx % Cn;
        float v = m[idx];
        floatX vh = __float2bfloat16_rn(v);
        hi[r * ld + c] = vh;
        if (lo) lo[r * ld + c] = __float2bfloat16_rn(v - __bfloat162float(vh));
    }
}

/* Warp-level products into acc[nt][4], the 16 x 8 accumulator tiles nt of a 16-row strip (only nt * 8 < ncols;
   ncols % 16 == 0). Fragment owner: lane holds rows lane/4 and lane/4 + 8, columns nt*8 + 2*(lane%4) + {0, 1}.
   ssd_mma_nt: A(m, k) = a[m*lda + k] (16 rows), B(k, n) = b[n*ldb + k]   (both K-contiguous)
   ssd_mma_nn: A(m, k) = a[m*lda + k],             B(k, n) = b[k*ldb + n]   (B row-major: ldmatrix.trans)
   ssd_mma_tn: A(m, k) = a[k*lda + m],             B(k, n) = b[k*ldb + n]
   ssd_mma_rn: A from registers (packed bf16 A fragments af[ks], K = 16 * KS), B(k, n) = b[k*ldb + n] */
template <int NT8>
__device__ static inline void ssd_mma_nt(float acc[][4], const floatX* a, int lda, const floatX* b, int ldb, int K,
                                          int ncols) {
    int lane = threadIdx.x % 32;
    const floatX* ap = a + (lane % 16) * lda + (lane / 16) * 8;
    const floatX* bp = b + ((lane % 8) + (lane / 16) * 8) * ldb + ((lane / 8) % 2) * 8;
    for (int k0 = 0; k0 < K; k0 += 16) {
        uint32_t af[4];
        ssd_ldsm(af, ap + k0);
#pragma unroll
        for (int nt = 0; nt < NT8; nt += 2) {
            if (nt * 8 < ncols) {
                uint32_t bf[4];
                ssd_ldsm(bf, bp + nt * 8 * ldb + k0);
                ssd_mma_bf16(acc[nt], af, bf);
                ssd_mma_bf16(acc[nt + 1], af, bf + 2);
            }
        }
    }
}
template <int NT8>
__device__ static inline void ssd_mma_nn(float acc[][4], const floatX* a, int lda, const floatX* b, int ldb, int K,
                                          int ncols) {
    int lane = threadIdx.x % 32;
    const floatX* ap = a + (lane % 16) * lda + (lane / 16) * 8;
    const floatX* bp = b + ((lane % 8) + ((lane / 8) % 2) * 8) * ldb + (lane / 16) * 8;
    for (int k0 = 0; k0 < K; k0 += 16) {
        uint32_t af[4];
        ssd_ldsm(af, ap + k0);
#pragma unroll
        for (int nt = 0; nt < NT8; nt += 2) {
            if (nt * 8 < ncols) {
                uint32_t bf[4];
                ssd_ldsm_t(bf, bp + k0 * ldb + nt * 8);
                ssd_mma_bf16(acc[nt], af, bf);
                ssd_mma_bf16(acc[nt + 1], af, bf + 2);
            }
        }
    }
}
template <int NT8>
__device__ static inline void ssd_mma_tn(float acc[][4], const floatX* a, int lda, const floatX* b, int ldb, int K,
                                          int ncols) {
    int lane = threadIdx.x % 32;
    const floatX* ap = a + ((lane % 8) + (lane / 16) * 8) * lda + ((lane / 8) % 2) * 8;
    const floatX* bp = b + ((lane % 8) + ((lane / 8) % 2) * 8) * ldb + (lane / 16) * 8;
    for (int k0 = 0; k0 < K; k0 += 16) {
        uint32_t af[4];
        ssd_ldsm_t(af, ap + k0 * lda);
#pragma unroll
        for (int nt = 0; nt < NT8; nt += 2) {
            if (nt * 8 < ncols) {
                uint32_t bf[4];
                ssd_ldsm_t(bf, bp + k0 * ldb + nt * 8);
                ssd_mma_bf16(acc[nt], af, bf);
                ssd_mma_bf16(acc[nt + 1], af, bf + 2);
            }
        }
    }
}
template <int KS, int NT8>
__device__ static inline void ssd_mma_rn(float acc[][4], const uint32_t af[][4], const floatX* b, int ldb, int ncols,
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
                ssd_ldsm_t(bf, bp + ks * 16 * ldb + nt * 8);
                ssd_mma_bf16(acc[nt], af[ks], bf);
                ssd_mma_bf16(acc[nt + 1], af[ks], bf + 2);
            }
        }
    }
}
/* accumulator tiles s[2ks], s[2ks+1] (16 x 16 fp32) -> the bf16 A fragment af[ks] of the next product */
template <int KS>
__device__ static inline void ssd_pack_a(uint32_t af[][4], const float s[][4]) {
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        af[ks][0] = ssd_pack_bf16(s[2 * ks][0], s[2 * ks][1]);
        af[ks][1] = ssd_pack_bf16(s[2 * ks][2], s[2 * ks][3]);
        af[ks][2] = ssd_pack_bf16(s[2 * ks + 1][0], s[2 * ks + 1][1]);
        af[ks][3] = ssd_pack_bf16(s[2 * ks + 1][2], s[2 * ks + 1][3]);
    }
}
/* the sum over the 4 lanes that hold one accumulator row (the same lane/4) */
__device__ static inline float ssd_quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    return v;
}
/* rowdot[r] = sum over the columns of acc of acc * m (bf16 shared, row-major ld, rows m0 + lane/4 (+8)), for
   r = 0 (row lane/4) and 1 (row lane/4 + 8); the full row sums, in every lane of the quad */
template <int NT8>
__device__ static inline void ssd_rowdot(float out[2], const float acc[][4], const floatX* m, int ld, int ncols) {
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
    out[0] = ssd_quad_sum(s0);
    out[1] = ssd_quad_sum(s1);
}

/* Shared memory of the three row-tile kernels (bf16 elements; rows padded to N + 8, P + 8). What is used only
   before the tile loop (a state, in hi/lo halves where split; C_i in the dC kernel) shares its space with what the
   loop double-buffers, so that 3 blocks fit on a multiprocessor (P = 64, N = 128: 72 KB forward, 64 KB dC):
   forward  Cs | Bs[0] | Xs[0] | region(Hprev bf16 ; then Bs[1] Xs[1])                      ssd_region_fwd
   col      Xj | region(Bj, dH hi, lo ; then Ci[2] Yi[2])                                    ssd_region_bwd(P, N, 1)
   dC       Ys | region(Cs, Hprev hi, lo ; then Bs[2] Xs[2])                                 ssd_region_bwd(P, N, 1)
   (col: B_j . C_i comes from ssd_bwd_bct_kernel, so B_j is needed only for the state part) */
__host__ __device__ static inline size_t ssd_max(size_t a, size_t b) { return a > b ? a : b; }
__host__ __device__ static inline size_t ssd_region_fwd(int P, int N) {
    return ssd_max((size_t)P * (N + 8), (size_t)SSD_MMA_ROWS * (N + 8) + (size_t)SSD_MMA_ROWS * (P + 8));
}
__host__ __device__ static inline size_t ssd_region_bwd(int P, int N, int with_c) {
    return ssd_max((size_t)(2 * P + with_c * SSD_MMA_ROWS) * (N + 8),
                    2 * (size_t)SSD_MMA_ROWS * (N + 8) + 2 * (size_t)SSD_MMA_ROWS * (P + 8));
}
static inline size_t ssd_smem_fwd_mma(int P, int N) {
    return (2 * (size_t)SSD_MMA_ROWS * (N + 8) + (size_t)SSD_MMA_ROWS * (P + 8) + ssd_region_fwd(P, N)) * sizeof(floatX) +
           4 * SSD_MMA_ROWS * sizeof(float);
}
static inline size_t ssd_smem_dxdb(int P, int N) {
    return ((size_t)SSD_MMA_ROWS * (P + 8) + ssd_region_bwd(P, N, 1)) * sizeof(floatX) + 6 * SSD_MMA_ROWS * sizeof(float);
}
static inline size_t ssd_smem_dc(int P, int N) {
    return ((size_t)SSD_MMA_ROWS * (P + 8) + ssd_region_bwd(P, N, 1)) * sizeof(floatX) + 4 * SSD_MMA_ROWS * sizeof(float);
}
#endif /* !ENABLE_FP32 */

#endif /* MAMBA2_SSD_TILE_CUH */
