/*
 * ssd_ws.cuh: a warp-specialized Hopper (sm_90a) form of the SSD backward's dC kernel (issue #28), born in dev/cuda.
 * It computes what llmc/ssd_bwd.cuh's ssd_bwd_dc_kernel computes, for P = 64, N = 128, Q in {64, 128}, without
 * document boundaries (seq_idx); every other case is refused by ssd_ws_dc_takes() and runs llmc's kernel.
 *
 * The math (llmc/ssd.cuh, top): for 64 rows i of one (b, chunk) and the hg heads h of one head-group,
 *   dC_i   = sum_h [ sum_{j <= i} WD_h[i,j] B_j + exp(cum_h,i) dy_h,i Hprev_h ]     (summed over the block's heads)
 *   WD_h[i,j] = (dy_h,i . x_h,j) exp(cum_h,i - cum_h,j) dt_h,j                     (masked to j <= i < len)
 *   rowi_h,i = C_i . (exp(cum_h,i) dy_h,i Hprev_h)                                   (per head: dy_i . y_off_i)
 * Hprev_h (fp32) enters the products split in bf16 hi + lo, as in llmc.
 *
 * Why a new design (dev/cuda/NOTES_ssd.md, versions 6, 10, 13, 14): llmc's dC kernel is latency-bound at 12 warps
 * an SM (168-register cap): each warp loads its own tiles, waits at a block barrier per j tile, and runs short
 * chains of dependent mma.sync. One-for-one wgmma ports kept those chains and lost. Here the roles are split:
 *
 *   warpgroup 0, the producer (128 threads): fills a ring of SSD_WS_STAGES stages, one stage per head: the dy_i tile,
 *     the x_j tiles (cp.async, 16 bytes a thread, straight into wgmma's core-matrix layout), the chunk's cum / dt,
 *     and Hprev_h as bf16 hi + lo. Hprev arrives in fp32 by cp.async into a staging buffer F one head ahead (no
 *     registers held while it is in flight), and each thread converts exactly the 16-byte pieces it copied (so no
 *     barrier among producer threads is needed). It signals "stage full" on an mbarrier (one arrival per producer
 *     thread) and waits on the stage's "empty" mbarrier before refilling it. The tiles every head shares (C_i, the
 *     B_j tiles) are loaded once per block with the first head.
 *   warpgroups 1 and 2, the consumers: each holds a 64 x 128 fp32 accumulator of dC (64 registers) and never issues
 *     a global load in its loop. The work of a head is split in K between them, so they do the same work and the
 *     products are not duplicated: consumer k takes the state term's p in [32k, 32k + 32) (dy_i[:, p] Hprev[p, :])
 *     and the j columns [32k, 32k + 32) of every j tile (its half of S = dy_i x_j^T, m64n32k16, and WD B_j over
 *     those 32 rows of B_j). The two partial accumulators (and the two partial rowi) are added at the end through
 *     shared memory, consumer 0's first: a fixed order, so the kernel is deterministic (no atomics anywhere).
 *   The products are wgmma: S from two shared-memory descriptors, WD B_j with WD repacked in registers as the A
 *   operand (the forward scan's trick), the state term with Hprev hi / lo as MN-major B operands.
 *
 * Shared memory (bytes, P = 64, N = 128, up to 2 j tiles): C_i 16 KB | B_j 2 x 16 KB | 2 stages x (dy_i 8 KB,
 * Hprev hi 16 KB, lo 16 KB, x_j 2 x 8 KB, cum 512, dt 512) | F (fp32 Hprev) 32 KB, reused at the end for consumer
 * 1's accumulator | rowi partials 1 KB | 4 mbarriers: 200,736 bytes, one block (12 warps) an SM.
 *
 * Output: the same as llmc's dC kernel: dC into dco + row * dco_stride + (direct ? dco_col0 + g N : hgi N) (bf16;
 * direct when hg == H/G, else one partial per head-group that ssd_bwd_group_sum_kernel adds), rowi (B, H, T) fp32.
 * hg may be any divisor of H/G here (llmc takes at most 4): hg = H/G writes dC straight into dxbc.
 *
 * Hang guard (SSD_WS_HANG_CHECK, default 1 in this dev header): an mbarrier wait that spins longer than
 * SSD_WS_HANG_NS writes a code and where into err[0..5] (host-mapped memory, readable after the kernel dies) and
 * traps, so a broken pipeline ends the program instead of hanging the GPU (codes: 1 the producer waiting for an
 * empty stage, 2 / 3 consumer 0 / 1 waiting for a full one, 4 the persistent form's producer waiting for an item slot).
 *
 * Requires llmc/ssd.cuh (and llmc/wgmma.cuh) included before.
 */
#ifndef MAMBA2_SSD_WS_CUH
#define MAMBA2_SSD_WS_CUH

#ifndef MAMBA2_SSD_CUH
#error "dev/cuda/ssd_ws.cuh needs llmc/ssd.cuh included first"
#endif

#ifndef SSD_WS_HANG_CHECK
#define SSD_WS_HANG_CHECK 1
#endif
#define SSD_WS_HANG_NS 4000000000ull  /* 4 s: far beyond any legitimate wait (a whole kernel takes < 1 ms) */
/* setmaxnreg: the consumers ask for more registers than the 168 of 384 threads, the producer gives its up.
   Off by default: the consumer's live set (64 accumulators + 32 temporaries) fits 168 (ptxas -v in NOTES_ssd.md) */
#ifndef SSD_WS_SETMAXNREG
#define SSD_WS_SETMAXNREG 0
#endif

#define SSD_WS_THREADS 384  /* producer warpgroup + 2 consumer warpgroups */
#define SSD_WS_STAGES 2     /* heads in the ring: the producer fills head h + 1 while the consumers use head h */
#define SSD_WS_P 64
#define SSD_WS_N 128
#define SSD_WS_ROWS 64
#define SSD_WS_MAXJT 2      /* j tiles of a chunk: Q <= 128 */

/* shared-memory layout, byte offsets (all multiples of 128: the core-matrix tiles need 16-byte alignment) */
#define SSD_WS_TILE_C (SSD_WS_ROWS * SSD_WS_N * 2)       /* 16384: a 64 x 128 bf16 tile */
#define SSD_WS_TILE_P (SSD_WS_ROWS * SSD_WS_P * 2)       /* 8192: a 64 x 64 bf16 tile */
#define SSD_WS_OFF_C 0
#define SSD_WS_OFF_B (SSD_WS_OFF_C + SSD_WS_TILE_C)
#define SSD_WS_OFF_STAGE (SSD_WS_OFF_B + SSD_WS_MAXJT * SSD_WS_TILE_C)
#define SSD_WS_ST_DY 0
#define SSD_WS_ST_HI (SSD_WS_ST_DY + SSD_WS_TILE_P)
#define SSD_WS_ST_LO (SSD_WS_ST_HI + SSD_WS_P * SSD_WS_N * 2)
#define SSD_WS_ST_X (SSD_WS_ST_LO + SSD_WS_P * SSD_WS_N * 2)
#define SSD_WS_ST_CUM (SSD_WS_ST_X + SSD_WS_MAXJT * SSD_WS_TILE_P)
#define SSD_WS_ST_DT (SSD_WS_ST_CUM + SSD_WS_MAXJT * SSD_WS_ROWS * 4)
#define SSD_WS_STAGE_BYTES (SSD_WS_ST_DT + SSD_WS_MAXJT * SSD_WS_ROWS * 4)
#define SSD_WS_OFF_F (SSD_WS_OFF_STAGE + SSD_WS_STAGES * SSD_WS_STAGE_BYTES)
#define SSD_WS_OFF_RROW (SSD_WS_OFF_F + SSD_WS_P * 132 * 4)  /* F: 64 rows of SSD_WS_F_LD = 132 floats */
#define SSD_WS_OFF_BAR (SSD_WS_OFF_RROW + SSD_WS_STAGES * 2 * SSD_WS_ROWS * 4)
#define SSD_WS_SMEM (SSD_WS_OFF_BAR + 2 * SSD_WS_STAGES * 8)

/* ---- device primitives: mbarriers, the hang guard, one more wgmma shape ---- */

__device__ static inline void ws_mbar_init(uint64_t* bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(wg_saddr(bar)), "r"(count) : "memory");
}
/* one arrival (release: this thread's earlier shared-memory writes are visible to a thread whose wait sees it) */
__device__ static inline void ws_mbar_arrive(uint64_t* bar) {
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(wg_saddr(bar)) : "memory");
}
__device__ static inline int ws_mbar_try_wait(uint64_t* bar, unsigned parity) {
    unsigned ok;
    asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(ok)
                 : "r"(wg_saddr(bar)), "r"(parity)
                 : "memory");
    return (int)ok;
}
__device__ static inline uint64_t ws_globaltimer(void) {
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
    return t;
}
/* wait until the phase of `bar` with this parity has completed; SSD_WS_HANG_CHECK bounds the wait: past
   SSD_WS_HANG_NS it writes {code, blockIdx.x, .y, .z, threadIdx.x, parity} into err[0..5] (host-mapped memory: the
   host reads it after the trap) and traps. No printf here: a function call inside the kernel makes ptxas serialize
   every wgmma of it (warning C7510). */
__device__ static inline void ws_mbar_wait(uint64_t* bar, unsigned parity, int* err, int code) {
    if (ws_mbar_try_wait(bar, parity)) return;
#if SSD_WS_HANG_CHECK
    uint64_t start = ws_globaltimer();
    while (!ws_mbar_try_wait(bar, parity)) {
        if (ws_globaltimer() - start > SSD_WS_HANG_NS) {
            if (err) {
                volatile int* e = err;
                e[1] = blockIdx.x; e[2] = blockIdx.y; e[3] = blockIdx.z; e[4] = threadIdx.x; e[5] = (int)parity;
                __threadfence_system();
                e[0] = code;
                __threadfence_system();
            }
            __trap();
        }
    }
#else
    (void)err; (void)code;
    while (!ws_mbar_try_wait(bar, parity)) {
    }
#endif
}
/* named barrier 1 over the two consumer warpgroups (256 threads; the producer never takes part) */
__device__ static inline void ws_consumer_sync(void) { asm volatile("bar.sync 1, 256;\n" ::: "memory"); }

__device__ static inline void ws_pin16(float d[16]) {
#pragma unroll
    for (int i = 0; i < 16; i++) asm volatile("" : "+f"(d[i])::"memory");
}
/* d (64 x 32 fp32) += A (64 x 16) B (16 x 32), both bf16 in shared memory (descriptors as in llmc/wgmma.cuh);
   d[4 nt + e]: row 16 warp + lane/4 + 8 (e/2), column 8 nt + 2 (lane%4) + e%2, nt < 4 */
template <int TA, int TB>
__device__ static inline void ws_mma_ss_n32(float d[16], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, %19, %20;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "l"(da), "l"(db), "r"(1), "n"(TA), "n"(TB));
}

/* ---- the producer warpgroup ---- */

/* The fp32 (64, 128) state is moved in units of 8 floats (a core-matrix row of the bf16 tiles): unit u = tid + 128 m
   (m < 8) is row r = 8 (u / 128) + u % 8, columns 8 ((u / 8) % 16) .. + 7, and its bf16 form is the 16 bytes at
   element 8 u of a core-matrix tile (wg_tile_offset(r, 8 ((u / 8) % 16), 128) == 8 u): a warp's 16-byte stores
   cover 512 contiguous bytes (no bank conflict; a mapping with 8-byte stores, 4 floats a thread along n, conflicted
   16-way). F (ssd_ws_dc_kernel's fp32 staging) keeps the global row-major layout with rows padded to
   SSD_WS_F_LD floats, so a warp's float4 reads (8 rows x 4 column groups) spread over all banks. */
#define SSD_WS_F_LD 132
__device__ __forceinline__ static void ws_unit(int u, int* r, int* c) {
    *r = (u >> 7) * 8 + (u & 7);
    *c = ((u >> 3) & 15) * 8;
}
/* 8 floats as bf16 hi and lo (lo = bf16(v - hi), as llmc's split) into 16 bytes each */
__device__ __forceinline__ static void ws_split8(floatX* hi, floatX* lo, float4 a, float4 b) {
    float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    uint32_t h[4], l[4];
#pragma unroll
    for (int e = 0; e < 4; e++) {
        __nv_bfloat162 hv = __floats2bfloat162_rn(v[2 * e], v[2 * e + 1]);
        h[e] = *(uint32_t*)&hv;
        l[e] = ssd_pack_bf16(v[2 * e] - __low2float(hv), v[2 * e + 1] - __high2float(hv));
    }
    *(uint4*)hi = make_uint4(h[0], h[1], h[2], h[3]);
    *(uint4*)lo = make_uint4(l[0], l[1], l[2], l[3]);
}
/* the state at m (row-major (64, 128) fp32) into F by cp.async: this thread's 8 units */
__device__ static inline void ws_issue_state(float* F, const float* m, int tid) {
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int r, c;
        ws_unit(tid + 128 * k, &r, &c);
        ssd_cp_async16(F + r * SSD_WS_F_LD + c, m + r * SSD_WS_N + c, 1);
        ssd_cp_async16(F + r * SSD_WS_F_LD + c + 4, m + r * SSD_WS_N + c + 4, 1);
    }
}
/* the same 8 units of F (this thread's own copies, complete after its cp.async.wait: no barrier among the
   producers) as bf16 hi + lo into the two core-matrix tiles (rows p, columns n) */
__device__ static inline void ws_split_state(floatX* hi, floatX* lo, const float* F, int tid) {
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int u = tid + 128 * k, r, c;
        ws_unit(u, &r, &c);
        const float* f = F + r * SSD_WS_F_LD + c;
        ws_split8(hi + 8 * u, lo + 8 * u, *(const float4*)f, *(const float4*)(f + 4));
    }
}

/* ---- the consumers' work on one head ---- */

/* consumer k's share of one head (stage st; the block's C_i, B_j tiles Cs, Bs): acc += its K half of
   exp(cum_i) dy_i Hprev and of sum_j WD[i, j] B_j; its partial rowi of the 64 rows into rrow_k[64]. Every product
   it issued has completed when it returns (wgmma.wait_group 0): the stage may be released. */
__device__ __forceinline__ static void ws_consumer_head(float acc[2][32], float* rrow_k, const unsigned char* st,
                                                       const floatX* Cs, const floatX* Bs, int k, int tid, int rt,
                                                       int i0, int len) {
    constexpr int P = SSD_WS_P, N = SSD_WS_N;
    const floatX* sdy = (const floatX*)(st + SSD_WS_ST_DY);
    const floatX* shi = (const floatX*)(st + SSD_WS_ST_HI);
    const floatX* slo = (const floatX*)(st + SSD_WS_ST_LO);
    const floatX* sx = (const floatX*)(st + SSD_WS_ST_X);
    const float* scum = (const float*)(st + SSD_WS_ST_CUM);
    const float* sdt = (const float*)(st + SSD_WS_ST_DT);
    int warp = tid / 32, lane = tid % 32, tig = lane % 4;
    int rl[2] = {warp * 16 + lane / 4, warp * 16 + lane / 4 + 8};  /* this thread's rows in the tile */
    int ri[2] = {i0 + rl[0], i0 + rl[1]};                          /* ... in the chunk */
    float cum_r[2], er[2], pw[2] = {0.f, 0.f};
#pragma unroll
    for (int r = 0; r < 2; r++) {
        cum_r[r] = ri[r] < len ? scum[ri[r]] : 0.f;
        er[r] = expf(cum_r[r]);
    }
    /* state term, this consumer's p in [32k, 32k + 32): t = dy_i[:, p] (Hprev hi + lo)[p, :], per 64 columns n (two
       commit groups: the second half's products run while the first half is scaled); then exp(cum_i) t into acc
       and its dot with C_i into pw (rowi) */
    float t[2][32];
#pragma unroll
    for (int nh = 0; nh < 2; nh++) {
#pragma unroll
        for (int e = 0; e < 32; e++) t[nh][e] = 0.f;
        wg_pin_acc(t[nh]);
    }
    wg_fence();
#pragma unroll
    for (int nh = 0; nh < 2; nh++) {
#pragma unroll
        for (int kk = 0; kk < 2; kk++) {
            int ks = 2 * k + kk;
            uint64_t da = wg_desc(sdy + ks * 128, 128, 1024);  /* dy_i (64 x 64), K-major */
            wg_mma_ss<0, 1>(t[nh], da, wg_desc(shi + wg_tile_offset(16 * ks, 64 * nh, N), 2048, 128));
            wg_mma_ss<0, 1>(t[nh], da, wg_desc(slo + wg_tile_offset(16 * ks, 64 * nh, N), 2048, 128));
        }
        wg_commit();
    }
#pragma unroll
    for (int nh = 0; nh < 2; nh++) {
        if (nh == 0)
            wg_wait<1>();  /* the first half's group */
        else
            wg_wait<0>();
        wg_pin_acc(t[nh]);
        wg_pin_acc(acc[nh]);
#pragma unroll
        for (int e = 0; e < 32; e += 2) {  /* the pair of columns (col, col + 1): one 4-byte read of C_i */
            int r = (e >> 1) & 1, col = 64 * nh + 8 * (e >> 2) + 2 * tig;
            __nv_bfloat162 cv = *(const __nv_bfloat162*)(Cs + wg_tile_offset(rl[r], col, N));
            float v0 = t[nh][e] * er[r], v1 = t[nh][e + 1] * er[r];
            pw[r] += v0 * __low2float(cv);
            pw[r] += v1 * __high2float(cv);
            acc[nh][e] += v0;
            acc[nh][e + 1] += v1;
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        pw[r] = ssd_quad_sum(pw[r]);
        if (tig == 0) rrow_k[rl[r]] = pw[r];
    }
    /* the j tiles: S = dy_i x_j^T on this consumer's 32 columns j, WD = masked decay, acc += WD B_j */
    for (int jt = 0; jt <= rt; jt++) {
        float sc[16];
#pragma unroll
        for (int e = 0; e < 16; e++) sc[e] = 0.f;
        ws_pin16(sc);
        wg_fence();
        const floatX* xt = sx + jt * SSD_WS_ROWS * P + wg_tile_offset(32 * k, 0, P);  /* rows j of this half */
#pragma unroll
        for (int ks = 0; ks < 4; ks++)
            ws_mma_ss_n32<0, 0>(sc, wg_desc(sdy + ks * 128, 128, 1024), wg_desc(xt + ks * 128, 128, 1024));
        wg_commit();
        wg_wait<0>();
        ws_pin16(sc);
#pragma unroll
        for (int e = 0; e < 16; e++) {
            int r = (e >> 1) & 1, j = jt * SSD_WS_ROWS + 32 * k + 8 * (e >> 2) + 2 * tig + (e & 1);
            int ok = j <= ri[r] && ri[r] < len && j < len;
            sc[e] = ok ? sc[e] * __expf(cum_r[r] - scum[j]) * sdt[j] : 0.f;
        }
        uint32_t af[2][4];  /* WD (64 x 32) as two k16 A fragments */
#pragma unroll
        for (int kc = 0; kc < 2; kc++) {
            af[kc][0] = ssd_pack_bf16(sc[8 * kc + 0], sc[8 * kc + 1]);
            af[kc][1] = ssd_pack_bf16(sc[8 * kc + 2], sc[8 * kc + 3]);
            af[kc][2] = ssd_pack_bf16(sc[8 * kc + 4], sc[8 * kc + 5]);
            af[kc][3] = ssd_pack_bf16(sc[8 * kc + 6], sc[8 * kc + 7]);
        }
        const floatX* bt = Bs + jt * SSD_WS_ROWS * N;
#pragma unroll
        for (int nh = 0; nh < 2; nh++) wg_pin_acc(acc[nh]);
        wg_fence();
#pragma unroll
        for (int kc = 0; kc < 2; kc++)
#pragma unroll
            for (int nh = 0; nh < 2; nh++)
                wg_mma_rs<1>(acc[nh], af[kc], wg_desc(bt + wg_tile_offset(32 * k + 16 * kc, 64 * nh, N), 2048, 128));
        wg_commit();
        wg_wait<0>();
#pragma unroll
        for (int nh = 0; nh < 2; nh++) wg_pin_acc(acc[nh]);
    }
}

/* a consumer's dC accumulator: zero, and pinned to its registers for the wgmma products that follow */
__device__ __forceinline__ static void ws_acc_zero(float acc[2][32]) {
#pragma unroll
    for (int nh = 0; nh < 2; nh++) {
#pragma unroll
        for (int e = 0; e < 32; e++) acc[nh][e] = 0.f;
        wg_pin_acc(acc[nh]);
    }
}

/* consumer 0, after the barrier that follows a head: row_i . dy_i of head bh for the block's rows i0.. of the chunk
   at t0 (those below len) = the two consumers' partials, rrow2 = their two SSD_WS_ROWS-float halves */
__device__ __forceinline__ static void ws_store_rowi(float* rowi, const float* rrow2, int tid, int bh, int T, int t0,
                                                     int i0, int len) {
    if (tid < SSD_WS_ROWS && i0 + tid < len)
        rowi[(size_t)bh * T + t0 + i0 + tid] = rrow2[tid] + rrow2[SSD_WS_ROWS + tid];
}

/* the end of a block's (or an item's) heads: dC = consumer 0's accumulator + consumer 1's. Consumer 1 leaves its
   accumulator in buf (64 x 128 floats of shared memory the producer no longer uses); after the consumers' barrier
   consumer 0 adds it to its own and writes the bf16 sum: this thread's rows ri[] of the chunk (those below len),
   rows row0 + ri[] of dco (row0: the chunk's first, b T + t0), columns col0.. */
__device__ __forceinline__ static void ws_store_dc(const float acc[2][32], float* buf, int k, int tid, int tig,
                                                   const int ri[2], int len, floatX* dco, int row0, int dco_stride,
                                                   int col0) {
    if (k == 1) {
#pragma unroll
        for (int nh = 0; nh < 2; nh++)
#pragma unroll
            for (int e = 0; e < 32; e++) buf[(nh * 32 + e) * 128 + tid] = acc[nh][e];
    }
    ws_consumer_sync();
    if (k != 0) return;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (ri[r] >= len) continue;
        floatX* o = dco + (size_t)(row0 + ri[r]) * dco_stride + col0;
#pragma unroll
        for (int nh = 0; nh < 2; nh++)
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                int e = 4 * nt + 2 * r;
                float v0 = acc[nh][e] + buf[(nh * 32 + e) * 128 + tid];
                float v1 = acc[nh][e + 1] + buf[(nh * 32 + e + 1) * 128 + tid];
                *(__nv_bfloat162*)(o + 64 * nh + 8 * nt + 2 * tig) = __floats2bfloat162_rn(v0, v1);
            }
    }
}

/* ---- the kernel ---- */

/* grid (nti, nchunks, B * H/hg): blockIdx.x the row tile, the longest (last) first, as llmc's tuned dC kernel */
__global__ static void __launch_bounds__(SSD_WS_THREADS, 1)
ssd_ws_dc_kernel(floatX* dco, int dco_stride, int dco_col0, int direct, float* rowi, const floatX* dy,
                 const floatX* xbc, int xbc_stride, const float* dt, const float* cum, const float* states, int T, int H,
                 int G, int Q, int hg, int* err) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int P = SSD_WS_P, N = SSD_WS_N;
    extern __shared__ __align__(128) unsigned char ws_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD_WS_ROWS), nhg = H / hg;
    int c = blockIdx.y, bhg = blockIdx.z, rt = nti - 1 - (int)blockIdx.x;
    int b = bhg / nhg, hgi = bhg % nhg, h0 = hgi * hg, g = h0 / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD_WS_ROWS;
    if (i0 >= len) return;  /* uniform over the block, before any barrier */
    int E = H * P;
    floatX* Cs = (floatX*)(ws_smem + SSD_WS_OFF_C);
    floatX* Bs = (floatX*)(ws_smem + SSD_WS_OFF_B);
    float* F = (float*)(ws_smem + SSD_WS_OFF_F);
    float* rrow = (float*)(ws_smem + SSD_WS_OFF_RROW);  /* [stage][consumer][64] partial rowi */
    uint64_t* full = (uint64_t*)(ws_smem + SSD_WS_OFF_BAR);
    uint64_t* empty = full + SSD_WS_STAGES;
    if (threadIdx.x == 0) {
        for (int s = 0; s < SSD_WS_STAGES; s++) {
            ws_mbar_init(&full[s], 128);   /* every producer thread arrives once per fill */
            ws_mbar_init(&empty[s], 256);  /* every consumer thread arrives once per use */
        }
    }
    __syncthreads();  /* the barriers are initialized before anyone waits on them; the last block-wide barrier */
    int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;

    if (wg == 0) {
        /* ================= producer ================= */
#if SSD_WS_SETMAXNREG
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
#endif
        ws_issue_state(F, states + ssd_state_off(b, c, h0, nch, H, P * N), tid);
        ssd_cp_commit();
        for (int hh = 0; hh < hg; hh++) {
            int s = hh % SSD_WS_STAGES, h = h0 + hh, bh = b * H + h;
            unsigned char* st = ws_smem + SSD_WS_OFF_STAGE + s * SSD_WS_STAGE_BYTES;
            floatX* sdy = (floatX*)(st + SSD_WS_ST_DY);
            floatX* shi = (floatX*)(st + SSD_WS_ST_HI);
            floatX* slo = (floatX*)(st + SSD_WS_ST_LO);
            floatX* sx = (floatX*)(st + SSD_WS_ST_X);
            float* scum = (float*)(st + SSD_WS_ST_CUM);
            float* sdt = (float*)(st + SSD_WS_ST_DT);
            if (hh >= SSD_WS_STAGES)  /* the consumers are done with head hh - STAGES in this stage */
                ws_mbar_wait(&empty[s], (unsigned)((hh / SSD_WS_STAGES - 1) & 1), err, 1);
            if (hh == 0) {  /* the tiles every head shares: C_i and the B_j tiles, once per block */
                ssd_wg_load_tile<SSD_WS_ROWS, N, 128>(Cs, rows + E + G * N + g * N, xbc_stride, i0, len);
                for (int jt = 0; jt <= rt; jt++)
                    ssd_wg_load_tile<SSD_WS_ROWS, N, 128>(Bs + jt * SSD_WS_ROWS * N, rows + E + g * N, xbc_stride,
                                                          jt * SSD_WS_ROWS, len);
            }
            ssd_wg_load_tile<SSD_WS_ROWS, P, 128>(sdy, dy + (size_t)(b * T + t0) * E + h * P, E, i0, len);
            for (int jt = 0; jt <= rt; jt++)
                ssd_wg_load_tile<SSD_WS_ROWS, P, 128>(sx + jt * SSD_WS_ROWS * P, rows + h * P, xbc_stride,
                                                      jt * SSD_WS_ROWS, len);
            ssd_cp_commit();
            if (tid < Q) {  /* the chunk's cum, dt (zeros past its end) */
                scum[tid] = tid < len ? cum[(size_t)bh * T + t0 + tid] : 0.f;
                sdt[tid] = tid < len ? dt[(size_t)bh * T + t0 + tid] : 0.f;
            }
            ssd_cp_wait<0>();  /* this thread's copies of the tiles and of F (head hh) have landed */
            ws_split_state(shi, slo, F, tid);
            if (hh + 1 < hg) {  /* the next head's state into F: the pieces this thread just read */
                ws_issue_state(F, states + ssd_state_off(b, c, h + 1, nch, H, P * N), tid);
                ssd_cp_commit();
            }
            wg_fence_proxy_async();  /* this thread's writes (cp.async, stores) before the wgmma reads of them */
            ws_mbar_arrive(&full[s]);
        }
        return;
    }

    /* ================= consumers ================= */
#if SSD_WS_SETMAXNREG
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
#endif
    int k = wg - 1, warp = tid / 32, lane = tid % 32, tig = lane % 4;
    int ri[2] = {i0 + warp * 16 + lane / 4, i0 + warp * 16 + lane / 4 + 8};  /* this thread's rows in the chunk */
    float acc[2][32];  /* dC: columns 64 nh + 8 nt + 2 tig + e%2 at acc[nh][4 nt + e], rows rl[e/2] */
    ws_acc_zero(acc);
    for (int hh = 0; hh < hg; hh++) {
        int s = hh % SSD_WS_STAGES, bh = b * H + h0 + hh;
        const unsigned char* st = ws_smem + SSD_WS_OFF_STAGE + s * SSD_WS_STAGE_BYTES;
        ws_mbar_wait(&full[s], (unsigned)((hh / SSD_WS_STAGES) & 1), err, 2 + k);
        wg_fence_proxy_async();
        ws_consumer_head(acc, rrow + (s * 2 + k) * SSD_WS_ROWS, st, Cs, Bs, k, tid, rt, i0, len);
        ws_mbar_arrive(&empty[s]);  /* every product reading this stage has completed (wg_wait<0>) */
        ws_consumer_sync();         /* both consumers' rowi partials of this head are in rrow */
        if (k == 0) ws_store_rowi(rowi, rrow + s * 2 * SSD_WS_ROWS, tid, bh, T, t0, i0, len);
    }
    /* dC = consumer 0's accumulator + consumer 1's (through F: the producer's last use of F was before its last
       "full" arrival, which both consumers have waited on) */
    ws_store_dc(acc, F, k, tid, tig, ri, len, dco, b * T + t0, dco_stride, direct ? dco_col0 + g * N : hgi * N);
#else
    (void)dco; (void)dco_stride; (void)dco_col0; (void)direct; (void)rowi; (void)dy; (void)xbc; (void)xbc_stride;
    (void)dt; (void)cum; (void)states; (void)T; (void)H; (void)G; (void)Q; (void)hg; (void)err;
    __trap();  /* never launched off sm_90a: ssd_ws_dc_takes refuses */
#endif
}

/* ---- the persistent form ----
 * ssd_ws_dc_kernel runs one block per (row tile, chunk, b x head-group) at one block an SM: every block starts with
 * an empty pipeline (its first head's tiles, state and the shared C_i / B_j tiles loaded with nothing to overlap)
 * and ends with one (the producer idle while the consumers finish). ssd_ws_dc_persist_kernel keeps the same work
 * items and per-head work but runs one block an SM over items blockIdx.x, + gridDim.x, ...: the producer fills the
 * next item's stages while the consumers finish the current one, so the ring never drains between items.
 * What changes for that:
 *   - C_i and the B_j tiles live in a 2-slot item ring (48 KB a slot) with its own "item empty" mbarriers; the
 *     first head's "full" arrival publishes them;
 *   - the fp32 state goes through the producer's registers (16 float4 a thread, loaded one head ahead, also across
 *     an item change) instead of the F staging buffer (shared memory is taken by the item ring);
 *   - the consumers add their two accumulators at an item's end through its last stage's Hprev hi / lo region
 *     (32 KB: exactly the fp32 64 x 128 tile), released to the producer after that;
 *   - the grid is the SM count, made odd where Q = 128 so a block's consecutive items alternate between the long
 *     (2 j tiles) and the short row tile.
 * Shared memory: 2 x 48 KB item slots | 2 stages x 57 KB | rowi partials 1 KB | 6 mbarriers: 216,112 bytes. */
#define SSD_WS2_ITEM_BYTES (SSD_WS_TILE_C * (1 + SSD_WS_MAXJT))
#define SSD_WS2_OFF_ITEM 0
#define SSD_WS2_OFF_STAGE (SSD_WS2_OFF_ITEM + 2 * SSD_WS2_ITEM_BYTES)
#define SSD_WS2_OFF_RROW (SSD_WS2_OFF_STAGE + SSD_WS_STAGES * SSD_WS_STAGE_BYTES)
#define SSD_WS2_OFF_BAR (SSD_WS2_OFF_RROW + SSD_WS_STAGES * 2 * SSD_WS_ROWS * 4)
#define SSD_WS2_SMEM (SSD_WS2_OFF_BAR + 3 * SSD_WS_STAGES * 8)

/* a work item's coordinates, in the order of llmc's tuned dC grid (row tile fastest, the longest first) */
typedef struct {
    int b, c, rt, hgi, h0, g, t0, len, i0;
} WsItem;
__device__ __forceinline__ static WsItem ws_item(int id, int nti, int nch, int nhg, int hg, int H, int G, int T,
                                                 int Q) {
    WsItem w;
    w.rt = nti - 1 - id % nti;
    w.c = (id / nti) % nch;
    int bhg = id / (nti * nch);
    w.b = bhg / nhg;
    w.hgi = bhg % nhg;
    w.h0 = w.hgi * hg;
    w.g = w.h0 / (H / G);
    w.t0 = w.c * Q;
    w.len = min(Q, T - w.t0);
    w.i0 = w.rt * SSD_WS_ROWS;
    return w;
}
/* the first item at or after id (stepping by the grid) with rows in its chunk (a short last chunk has none in its
   later row tiles), or nitems */
__device__ __forceinline__ static int ws_next_item(int id, int nitems, int nti, int nch, int T, int Q) {
    for (; id < nitems; id += gridDim.x) {
        int c = (id / nti) % nch, rt = nti - 1 - id % nti;
        if (rt * SSD_WS_ROWS < min(Q, T - c * Q)) break;
    }
    return id;
}
/* the fp32 (64, 128) state at m into 16 float4 registers: this thread's 8 units (ws_unit), read-only path */
__device__ __forceinline__ static void ws_load_state_regs(float4 q[16], const float* m, int tid) {
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int r, c;
        ws_unit(tid + 128 * k, &r, &c);
        q[2 * k] = __ldg((const float4*)(m + r * SSD_WS_N + c));
        q[2 * k + 1] = __ldg((const float4*)(m + r * SSD_WS_N + c + 4));
    }
}
/* those registers as bf16 hi + lo into the two core-matrix tiles (as ws_split_state) */
__device__ __forceinline__ static void ws_split_regs(floatX* hi, floatX* lo, const float4 q[16], int tid) {
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int u = tid + 128 * k;
        ws_split8(hi + 8 * u, lo + 8 * u, q[2 * k], q[2 * k + 1]);
    }
}

__global__ static void __launch_bounds__(SSD_WS_THREADS, 1)
ssd_ws_dc_persist_kernel(floatX* dco, int dco_stride, int dco_col0, int direct, float* rowi, const floatX* dy,
                         const floatX* xbc, int xbc_stride, const float* dt, const float* cum, const float* states,
                         int T, int H, int G, int Q, int hg, int nitems, int* err) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int P = SSD_WS_P, N = SSD_WS_N;
    extern __shared__ __align__(128) unsigned char ws_smem[];
    int nch = ssd_nchunks(T, Q), nti = CEIL_DIV(Q, SSD_WS_ROWS), nhg = H / hg, E = H * P;
    float* rrow = (float*)(ws_smem + SSD_WS2_OFF_RROW);  /* [stage][consumer][64] partial rowi */
    uint64_t* full = (uint64_t*)(ws_smem + SSD_WS2_OFF_BAR);
    uint64_t* empty = full + SSD_WS_STAGES;
    uint64_t* iempty = empty + SSD_WS_STAGES;  /* the item slots, released by the consumers at an item's end */
    if (threadIdx.x == 0) {
        for (int s = 0; s < SSD_WS_STAGES; s++) {
            ws_mbar_init(&full[s], 128);
            ws_mbar_init(&empty[s], 256);
            ws_mbar_init(&iempty[s], 256);
        }
    }
    __syncthreads();  /* the last block-wide barrier */
    int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
    int first = ws_next_item(blockIdx.x, nitems, nti, nch, T, Q);

    if (wg == 0) {
        /* ================= producer ================= */
        if (first >= nitems) return;
        float4 q[16];  /* the next head's fp32 state, in flight while the producer waits for a free stage */
        {
            WsItem w = ws_item(first, nti, nch, nhg, hg, H, G, T, Q);
            ws_load_state_regs(q, states + ssd_state_off(w.b, w.c, w.h0, nch, H, P * N), tid);
        }
        int gh = 0, it = 0;  /* heads and items this block has filled */
        for (int id = first; id < nitems; it++) {
            WsItem w = ws_item(id, nti, nch, nhg, hg, H, G, T, Q);
            int next = ws_next_item(id + gridDim.x, nitems, nti, nch, T, Q);
            unsigned char* slot = ws_smem + SSD_WS2_OFF_ITEM + (it & 1) * SSD_WS2_ITEM_BYTES;
            const floatX* rows = xbc + (size_t)(w.b * T + w.t0) * xbc_stride;
            for (int hh = 0; hh < hg; hh++, gh++) {
                int s = gh % SSD_WS_STAGES, h = w.h0 + hh, bh = w.b * H + h;
                unsigned char* st = ws_smem + SSD_WS2_OFF_STAGE + s * SSD_WS_STAGE_BYTES;
                float* scum = (float*)(st + SSD_WS_ST_CUM);
                float* sdt = (float*)(st + SSD_WS_ST_DT);
                if (gh >= SSD_WS_STAGES) ws_mbar_wait(&empty[s], (unsigned)((gh / SSD_WS_STAGES - 1) & 1), err, 1);
                if (hh == 0) {  /* this item's C_i, B_j into its slot, once the item two back has let it go */
                    if (it >= 2) ws_mbar_wait(&iempty[it & 1], (unsigned)((it / 2 - 1) & 1), err, 4);
                    ssd_wg_load_tile<SSD_WS_ROWS, N, 128>((floatX*)slot, rows + E + G * N + w.g * N, xbc_stride, w.i0,
                                                          w.len);
                    for (int jt = 0; jt <= w.rt; jt++)
                        ssd_wg_load_tile<SSD_WS_ROWS, N, 128>((floatX*)(slot + SSD_WS_TILE_C * (1 + jt)),
                                                              rows + E + w.g * N, xbc_stride, jt * SSD_WS_ROWS, w.len);
                }
                ssd_wg_load_tile<SSD_WS_ROWS, P, 128>((floatX*)(st + SSD_WS_ST_DY),
                                                      dy + (size_t)(w.b * T + w.t0) * E + h * P, E, w.i0, w.len);
                for (int jt = 0; jt <= w.rt; jt++)
                    ssd_wg_load_tile<SSD_WS_ROWS, P, 128>((floatX*)(st + SSD_WS_ST_X) + jt * SSD_WS_ROWS * P,
                                                          rows + h * P, xbc_stride, jt * SSD_WS_ROWS, w.len);
                ssd_cp_commit();
                if (tid < Q) {
                    scum[tid] = tid < w.len ? cum[(size_t)bh * T + w.t0 + tid] : 0.f;
                    sdt[tid] = tid < w.len ? dt[(size_t)bh * T + w.t0 + tid] : 0.f;
                }
                ws_split_regs((floatX*)(st + SSD_WS_ST_HI), (floatX*)(st + SSD_WS_ST_LO), q, tid);
                if (hh + 1 < hg) {  /* the next head's state: this item's, or the next item's first */
                    ws_load_state_regs(q, states + ssd_state_off(w.b, w.c, h + 1, nch, H, P * N), tid);
                } else if (next < nitems) {
                    WsItem wn = ws_item(next, nti, nch, nhg, hg, H, G, T, Q);
                    ws_load_state_regs(q, states + ssd_state_off(wn.b, wn.c, wn.h0, nch, H, P * N), tid);
                }
                ssd_cp_wait<0>();
                wg_fence_proxy_async();
                ws_mbar_arrive(&full[s]);
            }
            id = next;
        }
        return;
    }

    /* ================= consumers ================= */
    int k = wg - 1, warp = tid / 32, lane = tid % 32, tig = lane % 4;
    int gh = 0, it = 0;
    for (int id = first; id < nitems; id = ws_next_item(id + gridDim.x, nitems, nti, nch, T, Q), it++) {
        WsItem w = ws_item(id, nti, nch, nhg, hg, H, G, T, Q);
        const unsigned char* slot = ws_smem + SSD_WS2_OFF_ITEM + (it & 1) * SSD_WS2_ITEM_BYTES;
        const floatX* Cs = (const floatX*)slot;
        const floatX* Bs = (const floatX*)(slot + SSD_WS_TILE_C);
        int ri[2] = {w.i0 + warp * 16 + lane / 4, w.i0 + warp * 16 + lane / 4 + 8};
        float acc[2][32];
        ws_acc_zero(acc);
        for (int hh = 0; hh < hg; hh++, gh++) {
            int s = gh % SSD_WS_STAGES, bh = w.b * H + w.h0 + hh, last = hh == hg - 1;
            const unsigned char* st = ws_smem + SSD_WS2_OFF_STAGE + s * SSD_WS_STAGE_BYTES;
            ws_mbar_wait(&full[s], (unsigned)((gh / SSD_WS_STAGES) & 1), err, 2 + k);
            wg_fence_proxy_async();
            ws_consumer_head(acc, rrow + (s * 2 + k) * SSD_WS_ROWS, st, Cs, Bs, k, tid, w.rt, w.i0, w.len);
            if (!last) ws_mbar_arrive(&empty[s]);
            ws_consumer_sync();  /* both rowi partials are in rrow; both consumers are done reading the stage */
            if (k == 0) ws_store_rowi(rowi, rrow + s * 2 * SSD_WS_ROWS, tid, bh, T, w.t0, w.i0, w.len);
            if (!last) continue;
            /* the item's end: dC = consumer 0's accumulator + consumer 1's, through this stage's hi / lo region */
            float* red = (float*)(st + SSD_WS_ST_HI);
            ws_store_dc(acc, red, k, tid, tig, ri, w.len, dco, w.b * T + w.t0, dco_stride,
                        direct ? dco_col0 + w.g * N : w.hgi * N);
            ws_mbar_arrive(&empty[s]);       /* consumer 1: its writes of red; consumer 0: its reads */
            ws_mbar_arrive(&iempty[it & 1]);  /* C_i, B_j: every product that read them has completed */
        }
    }
#else
    (void)dco; (void)dco_stride; (void)dco_col0; (void)direct; (void)rowi; (void)dy; (void)xbc; (void)xbc_stride;
    (void)dt; (void)cum; (void)states; (void)T; (void)H; (void)G; (void)Q; (void)hg; (void)nitems; (void)err;
    __trap();  /* never launched off sm_90a: ssd_ws_dc_takes refuses */
#endif
}

/* ---- host side ---- */

/* whether the warp-specialized dC kernel runs this call: sm_90a code on a 9.0 device (gpu_hopper_path()), P = 64,
   N = 128, Q in {64, 128}, no document boundaries, hg dividing H/G, 16-byte aligned rows and states, and its
   shared memory within the opt-in limit. Otherwise llmc's ssd_bwd_dc_kernel. */
static inline int ssd_ws_dc_takes(int H, int P, int N, int G, int Q, int hg, const int* seg, const void* xbc,
                                  int xbc_stride, const void* dy, const void* states) {
    return gpu_hopper_path() && P == SSD_WS_P && N == SSD_WS_N && (Q == 64 || Q == 128) && seg == NULL && hg >= 1 &&
           (H / G) % hg == 0 && xbc_stride % 8 == 0 && (H * P) % 8 == 0 && (uintptr_t)xbc % 16 == 0 &&
           (uintptr_t)dy % 16 == 0 && (uintptr_t)states % 16 == 0 &&
           (size_t)(SSD_WS_SMEM > SSD_WS2_SMEM ? SSD_WS_SMEM : SSD_WS2_SMEM) <= (size_t)cuda_smem_optin();
}
/* the launch, with llmc's dC arguments (see ssd_launch_bwd_tiles_s) and the head-group size hg; err: 6 host-mapped
   ints for the hang guard (or NULL) */
static void ssd_ws_launch_dc(floatX* dco, int dco_stride, int dco_col0, int direct, float* rowi, const floatX* dy,
                             const floatX* xbc, int xbc_stride, const float* dt, const float* cum, const float* states,
                             int B, int T, int H, int G, int Q, int hg, int* err, cudaStream_t stream) {
    int nti = CEIL_DIV(Q, SSD_WS_ROWS), nch = ssd_nchunks(T, Q);
    cuda_set_smem((const void*)ssd_ws_dc_kernel, SSD_WS_SMEM, "ssd_ws");
    ssd_ws_dc_kernel<<<dim3(nti, nch, B * (H / hg)), SSD_WS_THREADS, SSD_WS_SMEM, stream>>>(
        dco, dco_stride, dco_col0, direct, rowi, dy, xbc, xbc_stride, dt, cum, states, T, H, G, Q, hg, err);
    cudaCheckLast();
}

/* the persistent form: one block an SM (an odd count at Q = 128, see above); same arguments */
static void ssd_ws_launch_dc_persist(floatX* dco, int dco_stride, int dco_col0, int direct, float* rowi,
                                     const floatX* dy, const floatX* xbc, int xbc_stride, const float* dt,
                                     const float* cum, const float* states, int B, int T, int H, int G, int Q, int hg,
                                     int* err, cudaStream_t stream) {
    int nti = CEIL_DIV(Q, SSD_WS_ROWS), nch = ssd_nchunks(T, Q), nitems = nti * nch * B * (H / hg);
    int nb = cuda_num_sms() < nitems ? cuda_num_sms() : nitems;
    if (nti == 2 && nb % 2 == 0 && nb > 1) nb--;
    cuda_set_smem((const void*)ssd_ws_dc_persist_kernel, SSD_WS2_SMEM, "ssd_ws");
    ssd_ws_dc_persist_kernel<<<nb, SSD_WS_THREADS, SSD_WS2_SMEM, stream>>>(
        dco, dco_stride, dco_col0, direct, rowi, dy, xbc, xbc_stride, dt, cum, states, T, H, G, Q, hg, nitems, err);
    cudaCheckLast();
}

#endif /* MAMBA2_SSD_WS_CUH */
