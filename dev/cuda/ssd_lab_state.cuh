/* dev/cuda/ssd_lab_state.cuh: the SSD lab (versions 2 to 11), a frozen copy of llmc/ssd_state.cuh as it stood before the default path moved
   alone into llmc/ (the knobs, run counters and version ladder stay here). Included by dev/cuda/ssd.cu inside
   namespace lab, after llmc/cuda_common.h and llmc/wgmma.cuh; only the include lines and guards differ from the
   original. Version history: dev/cuda/NOTES_ssd.md. */
/*
 * ssd_state.cuh: version 7 of the SSD layer (bf16 build): the chunk-state products and the pass over chunks fused
 * into one kernel per direction (ssd7_state_scan_kernel; forward: the states entering each chunk and the final
 * state, backward: dH_c and <dH_c, Hout_c>), with its launchers. The math, the buffers and the dispatch are in
 * llmc/ssd.cuh, which includes this file after llmc/ssd_mma.cuh (whose tile primitives it uses); it is not
 * included on its own.
 */
#ifndef SSD_LAB_STATE_CUH
#define SSD_LAB_STATE_CUH

#ifndef SSD_LAB_CUH
#error "dev/cuda/ssd_lab_state.cuh is a part of dev/cuda/ssd_lab.cuh"
#endif

#if !defined(ENABLE_FP32)
/* ------------------------------------------------------------------------------------------------------------ */
/* version 7 (bf16 build): the chunk-state products and the state pass over chunks in ONE kernel per direction, so
   the per-chunk S_c never goes through global memory (version 6 wrote 100 MB of fp32 S_c at Q = 128 and the state
   passes read it back and overwrote it: ~390 us per layer at DRAM speed).
   One block per (b, h, 64 rows of P, NS columns of N) runs over the whole sequence in 64-row tiles, in order
   (forward) or in reverse (backward), with the running state in the mma accumulators (fp32 registers).
   The chunk recurrence, split at 64-row tiles: let tile k hold rows a..e of chunk c (a, e chunk-local; Q % 64 == 0,
   so a tile never straddles two chunks) and cum_{a-1} = 0 when a is the chunk's first row. Then
     forward   run <- exp(cum_e - cum_{a-1}) run + sum_{j=a..e} dt_j exp(cum_e - cum_j) x_j B_j^T
     backward  run <- exp(cum_e - cum_{a-1}) run + sum_{i=a..e} exp(cum_i - cum_{a-1}) dy_i C_i^T
   Over the tiles of one chunk these telescope to the chunk forms at the top of llmc/ssd.cuh:
     forward:  after the chunk's last tile, run = exp(cum_last) Hprev_c + S_c = Hprev_{c+1}
     backward: after the chunk's first tile (reverse order), run = exp(cum_last) dH_c + sum_i exp(cum_i) dy_i C_i^T
               = dH_{c-1}
   (the decay of the tiles multiply to exp(cum_last); each row's weight is its own exp(cum difference)). So every
   factor a tile needs is inside the tile (plus cum_{a-1}): nothing waits for the chunk's last row, and every
   exp() argument is still a difference <= 0 (forward) or cum_i - cum_{a-1} <= 0 (backward).
   Chunk boundaries: forward, at the chunk's first tile, run is Hprev_c: written to states[c] before the update
   (the final run is the final state); backward, at the chunk's last tile, run is dH_c (0 for the last chunk):
   written to dstates[c], and <dH_c, Hout_c> (Hout_c = states[c + 1], loaded into registers a chunk ahead) is
   reduced per warp and written to dotp[(b, h, c, slice * warps + warp)]: (B, H, nchunks, nsplit7) with
   nsplit7 = P N / 512 <= ssd_nsplit(P, N), read by ssd3_bwd_dt_kernel with that nsplit. Fixed order: deterministic.
   Precision as version 4's chunk-state kernel: A = the w-scaled x (dy) tile, split in bf16 hi + lo (two products,
   ~16 bits), B = the B (C) tile, fp32 accumulation into the running state.
   Layout: warp w owns state rows 16 (w % 4) .. + 15 of the block's 64 and columns 32 (w / 4) .. + 31 of its NS:
   4 accumulator tiles (16 registers) per thread. The tiles stream through STAGES cp.async buffers (x / dy 64 x 64,
   B / C 64 x NS, cum of rows a-1..a+63, dt), two barriers per tile (SPLIT 1, below); the loop is serial over the
   sequence, so the loads of the next STAGES - 1 tiles are in flight while a tile's products run. */
#define SSD7_ROWS 64
#define SSD7_LDU 72  /* x / dy tile row stride in bf16: 64 columns + a 16-byte pad (ldmatrix rows in 8 bank groups) */
template <int NS> struct Ssd7Stage {
    static constexpr int LDV = NS + 8;
    static constexpr int U_OFF = 0;                                             /* bf16 (64, SSD7_LDU) */
    static constexpr int V_OFF = U_OFF + SSD7_ROWS * SSD7_LDU * 2;              /* bf16 (64, LDV) */
    static constexpr int CUM_OFF = V_OFF + SSD7_ROWS * LDV * 2;                 /* float [0] = cum_{a-1}, [1 + r] */
    static constexpr int DT_OFF = CUM_OFF + (SSD7_ROWS + 4) * 4;                /* float [r] */
    static constexpr int BYTES = DT_OFF + SSD7_ROWS * 4;
};
/* the stage buffers, then (SPLIT) the lo half of the scaled x / dy tile, (64, SSD7_LDU) bf16 */
template <int NS> static inline size_t ssd7_smem(int stages, int split) {
    return (size_t)stages * Ssd7Stage<NS>::BYTES + (split ? (size_t)SSD7_ROWS * SSD7_LDU * sizeof(floatX) : 0);
}

/* 4 bytes global -> shared (cum, dt: no alignment to rely on); valid = 0 writes a zero */
__device__ static inline void ssd7_cp_async4(void* dst, const void* src, int valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(ssd3_saddr(dst)), "l"(src),
                 "r"(valid ? 4 : 0) : "memory");
}

/* issue the loads of tile t (rows j0 = 64 t ..) into one stage buffer; rows at or past T are zero-filled.
   Ub / Vb: row 0 of this batch element at the block's first U / V column; dtc, cumc: this (b, h)'s rows. */
template <int NS, int NTHR>
__device__ static inline void ssd7_load_tile(unsigned char* stage, const floatX* Ub, int u_stride, const floatX* Vb,
                                             int v_stride, const float* dtc, const float* cumc, int j0, int T, int Q,
                                             int with_dt) {
    typedef Ssd7Stage<NS> L;
    floatX* Us = (floatX*)(stage + L::U_OFF);
    floatX* Vs = (floatX*)(stage + L::V_OFF);
    float* cs = (float*)(stage + L::CUM_OFF);
    float* ds = (float*)(stage + L::DT_OFF);
#pragma unroll
    for (int idx = threadIdx.x; idx < SSD7_ROWS * 8; idx += NTHR) {
        int r = idx / 8, v = idx % 8, ok = j0 + r < T;
        ssd3_cp_async16(Us + r * SSD7_LDU + v * 8, Ub + (ok ? (size_t)(j0 + r) * u_stride + v * 8 : 0), ok);
    }
#pragma unroll
    for (int idx = threadIdx.x; idx < SSD7_ROWS * (NS / 8); idx += NTHR) {
        int r = idx / (NS / 8), v = idx % (NS / 8), ok = j0 + r < T;
        ssd3_cp_async16(Vs + r * L::LDV + v * 8, Vb + (ok ? (size_t)(j0 + r) * v_stride + v * 8 : 0), ok);
    }
    /* cs[0] = cum_{a-1} (zero at a chunk's first row), cs[1 + r] = cum of row j0 + r; then ds[r] = dt of row j0 + r */
    for (int k = threadIdx.x; k < 2 * SSD7_ROWS + 1; k += NTHR) {
        if (k <= SSD7_ROWS) {
            int row = j0 - 1 + k, ok = k == 0 ? j0 % Q != 0 : row < T;
            ssd7_cp_async4(cs + k, cumc + (ok ? row : 0), ok);
        } else if (with_dt) {
            int r = k - SSD7_ROWS - 1, ok = j0 + r < T;
            ssd7_cp_async4(ds + r, dtc + (ok ? j0 + r : 0), ok);
        }
    }
}

/* this thread's 16 entries of the block's (64 x NS) slice of a (P, N) fp32 state: rows p, p + 8 (eoff points at
   row p, column 2 tig of the warp's first accumulator tile), accumulator tiles nt at columns + 8 nt */
__device__ static inline void ssd7_store_state(float* o, size_t eoff, int N, const float run[4][4]) {
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
        *(float2*)(o + eoff + nt * 8) = make_float2(run[nt][0], run[nt][1]);
        *(float2*)(o + eoff + (size_t)8 * N + nt * 8) = make_float2(run[nt][2], run[nt][3]);
    }
}
__device__ static inline void ssd7_load_state(float v[4][4], const float* m, size_t eoff, int N) {
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
        float2 a = *(const float2*)(m + eoff + nt * 8), c = *(const float2*)(m + eoff + (size_t)8 * N + nt * 8);
        v[nt][0] = a.x; v[nt][1] = a.y; v[nt][2] = c.x; v[nt][3] = c.y;
    }
}

/* the w-scaled U tile of one stage in place as its bf16 hi part, the lo part (the rounding error of hi) into Ls;
   each element once per block (the register form scaled every A fragment in each warp that read it: 2 warps per
   row tile at NS = 64, and each row's weight in every lane) */
template <int MODE, int NTHR>
__device__ static inline void ssd7_scale_split(floatX* Us, floatX* Ls, const float* cs, const float* ds, int nvalid) {
    float ca = cs[0], ce = cs[nvalid];
#pragma unroll
    for (int idx = threadIdx.x; idx < SSD7_ROWS * 8; idx += NTHR) {
        int r = idx / 8, off = r * SSD7_LDU + (idx % 8) * 8;
        float w = r < nvalid ? (MODE == 0 ? ds[r] * expf(ce - cs[1 + r]) : expf(cs[1 + r] - ca)) : 0.f;
        uint4 raw = *(const uint4*)(Us + off), lo;
        uint32_t* rv = (uint32_t*)&raw;
        uint32_t* lv = (uint32_t*)&lo;
#pragma unroll
        for (int q = 0; q < 4; q++) {
            __nv_bfloat162 v = *(__nv_bfloat162*)&rv[q];
            float a = __low2float(v) * w, b = __high2float(v) * w;
            __nv_bfloat162 vh = __floats2bfloat162_rn(a, b);
            rv[q] = *(uint32_t*)&vh;
            lv[q] = ssd_pack_bf16(a - __low2float(vh), b - __high2float(vh));
        }
        *(uint4*)(Us + off) = raw;
        *(uint4*)(Ls + off) = lo;
    }
}

/* MODE 0 (forward): out = states (B, nchunks, H, P, N): Hprev_c; final_state (may be NULL) = the state after the
   last row; init_state (may be NULL) starts the run. U = x, V = B (v_col0 = E).
   MODE 1 (backward): out = dstates: dH_c; dotp as above, hstates = the forward's states (Hout). U = dy (stride E),
   V = C (v_col0 = E + G N).
   grid ((P / 64) (N / NS), B H): the slices of one head are neighbours (their U tiles are the same rows: L2 hits),
   and so are the heads of one batch element (the same B / C tiles).
   SPLIT 1: the scaled U tile is made once per block in shared memory (ssd7_scale_split; a second barrier per tile),
   and the A fragments (hi, lo) are plain ldmatrix loads; SPLIT 0: each warp scales and splits its A fragments in
   registers (one barrier per tile, the scaling repeated in every warp that reads the rows). */
template <int NS, int STAGES, int MODE, int SPLIT>
__global__ static void __launch_bounds__(NS * 4, NS == 64 ? 3 : 5)
ssd7_state_scan_kernel(float* out, float* final_state, const float* init_state, float* dotp, const float* hstates,
                       const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0, const float* dt,
                       const float* cum, int T, int H, int P, int N, int G, int Q) {
    constexpr int NTHR = NS * 4, WARPS = NS / 8;
    typedef Ssd7Stage<NS> L;
    extern __shared__ __align__(16) unsigned char ssd3_smem[];
    int nsl_n = N / NS, nsl = (P / 64) * nsl_n, sl = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H;
    int g = h / (H / G), p0 = (sl / nsl_n) * 64, n0 = (sl % nsl_n) * NS;
    int nch = ssd_nchunks(T, Q), ntl = CEIL_DIV(T, SSD7_ROWS), PN = P * N;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tig = lane % 4;
    int m0 = (warp % 4) * 16, c0 = (warp / 4) * 32;  /* the warp's rows of the 64 and first column of the NS */
    const floatX* Ub = U + (size_t)b * T * u_stride + h * P + p0;
    const floatX* Vb = V + (size_t)b * T * v_stride + v_col0 + g * N + n0;
    const float* dtc = dt + (size_t)bh * T;
    const float* cumc = cum + (size_t)bh * T;
    size_t eoff = (size_t)(p0 + m0 + lane / 4) * N + n0 + c0 + 2 * tig;
    float run[4][4], hout[4][4];
#pragma unroll
    for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) run[nt][e] = hout[nt][e] = 0.f;
    if (MODE == 0 && init_state) ssd7_load_state(run, init_state + (size_t)bh * PN, eoff, N);
#define SSD7_TILE_OF(k) (MODE == 0 ? (k) : ntl - 1 - (k))
#pragma unroll 1
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < ntl)
            ssd7_load_tile<NS, NTHR>(ssd3_smem + s * L::BYTES, Ub, u_stride, Vb, v_stride, dtc, cumc,
                                     SSD7_ROWS * SSD7_TILE_OF(s), T, Q, MODE == 0);
        ssd3_cp_commit();
    }
#pragma unroll 1
    for (int k = 0; k < ntl; k++) {
        ssd3_cp_wait<STAGES - 2>();  /* this thread's copies of tile k are in */
        __syncthreads();             /* everyone's are, and everyone is done with the buffer refilled next */
        int kn = k + STAGES - 1;
        if (kn < ntl)
            ssd7_load_tile<NS, NTHR>(ssd3_smem + (kn % STAGES) * L::BYTES, Ub, u_stride, Vb, v_stride, dtc, cumc,
                                     SSD7_ROWS * SSD7_TILE_OF(kn), T, Q, MODE == 0);
        ssd3_cp_commit();
        unsigned char* st = ssd3_smem + (k % STAGES) * L::BYTES;
        floatX* Ls = (floatX*)(ssd3_smem + STAGES * L::BYTES);
        int j0 = SSD7_ROWS * SSD7_TILE_OF(k), c = j0 / Q, nvalid = min(SSD7_ROWS, T - j0);
        if (MODE == 0) {
            if (j0 % Q == 0) ssd7_store_state(out + ssd_state_off(b, c, h, nch, H, PN), eoff, N, run);  /* Hprev_c */
        } else if (j0 + SSD7_ROWS >= min(T, (c + 1) * Q)) {  /* the chunk's last tile: run = dH_c */
            ssd7_store_state(out + ssd_state_off(b, c, h, nch, H, PN), eoff, N, run);
            float v = 0.f;
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) v += run[nt][e] * hout[nt][e];
            v = warp_reduce_sum(v);
            if (lane == 0) dotp[((size_t)bh * nch + c) * (nsl * WARPS) + sl * WARPS + warp] = v;
            /* Hout_{c-1} = states[c], used at the next chunk boundary: its loads have a chunk to land */
            if (c > 0) ssd7_load_state(hout, hstates + ssd_state_off(b, c, h, nch, H, PN), eoff, N);
        }
        const float* cs = (const float*)(st + L::CUM_OFF);
        const float* ds = (const float*)(st + L::DT_OFF);
        if (SPLIT) {  /* Ls is free: every warp passed this tile's first barrier after its last tile's products */
            ssd7_scale_split<MODE, NTHR>((floatX*)(st + L::U_OFF), Ls, cs, ds, nvalid);
            __syncthreads();
        }
        float ca = cs[0], ce = cs[nvalid], decay = expf(ce - ca);
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) run[nt][e] *= decay;
        int aoff = ((lane % 8) + (lane / 16) * 8) * SSD7_LDU + m0 + ((lane / 8) % 2) * 8;
        const floatX* ap = (const floatX*)(st + L::U_OFF) + aoff;
        const floatX* bp = (const floatX*)(st + L::V_OFF) + ((lane % 8) + ((lane / 8) % 2) * 8) * L::LDV +
                           (lane / 16) * 8 + c0;
#pragma unroll
        for (int k0 = 0; k0 < SSD7_ROWS; k0 += 16) {
            uint32_t ah[4], al[4];
            if (SPLIT) {
                ssd3_ldsm_t(ah, ap + k0 * SSD7_LDU);
                ssd3_ldsm_t(al, Ls + aoff + k0 * SSD7_LDU);
            } else {
                uint32_t raw[4];
                ssd3_ldsm_t(raw, ap + k0 * SSD7_LDU);
                float w[4];  /* rows k0 + 2 tig, + 1, + 8, + 9: the A fragment's k index */
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    int j = k0 + 2 * tig + (q & 1) + (q >> 1) * 8;
                    w[q] = j < nvalid ? (MODE == 0 ? ds[j] * expf(ce - cs[1 + j]) : expf(cs[1 + j] - ca)) : 0.f;
                }
#pragma unroll
                for (int r = 0; r < 4; r++) {  /* registers 0, 1: k 2 tig (+1); 2, 3: k 2 tig + 8 (+1) */
                    __nv_bfloat162 v = *(__nv_bfloat162*)&raw[r];
                    float lo = __low2float(v) * w[r < 2 ? 0 : 2], hi = __high2float(v) * w[r < 2 ? 1 : 3];
                    __nv_bfloat162 vh = __floats2bfloat162_rn(lo, hi);
                    ah[r] = *(uint32_t*)&vh;
                    al[r] = ssd_pack_bf16(lo - __low2float(vh), hi - __high2float(vh));
                }
            }
#pragma unroll
            for (int np = 0; np < 2; np++) {
                uint32_t bfr[4];
                ssd3_ldsm_t(bfr, bp + k0 * L::LDV + np * 16);
                ssd_mma_bf16(run[2 * np], ah, bfr);
                ssd_mma_bf16(run[2 * np], al, bfr);
                ssd_mma_bf16(run[2 * np + 1], ah, bfr + 2);
                ssd_mma_bf16(run[2 * np + 1], al, bfr + 2);
            }
        }
    }
#undef SSD7_TILE_OF
    if (MODE == 0 && final_state) ssd7_store_state(final_state + (size_t)bh * PN, eoff, N, run);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* launchers */

/* version 7 runs where version 3's layout rules hold (checked by the caller), ssd_fast_version >= 7, P % 64 == 0,
   N % ssd7_ns == 0, Q % 64 == 0 (a 64-row tile never straddles two chunks), the fp32 state buffers it reads or
   writes with 8-byte accesses are 8-byte aligned (NULL passes), and ssd7_fuse's rule on the grid size holds */
static inline int ssd7_takes(int B, int H, int P, int N, int Q, const void* s0, const void* s1, const void* s2) {
    if (ssd_fast_version < 7 || ssd7_fuse == 0 || P % 64 != 0 || N % ssd7_ns != 0 || Q % 64 != 0) return 0;
    if ((uintptr_t)s0 % 8 != 0 || (uintptr_t)s1 % 8 != 0 || (uintptr_t)s2 % 8 != 0) return 0;
    return ssd7_fuse == 2 || (long)B * H * (P / 64) * (N / ssd7_ns) >= cuda_num_sms();
}
/* entries of version 7's dotp per (b, h, chunk): one per warp of each (64 x NS) slice */
static inline int ssd7_nsplit(int P, int N) { return P * N / 512; }
template <int NS, int STAGES, int MODE, int SPLIT>
static void ssd7_launch_t(float* out, float* final_state, const float* init_state, float* dotp, const float* hstates,
                          const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0, SSDSaved s, int B,
                          int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
    size_t smem = ssd7_smem<NS>(STAGES, SPLIT);
    ssd_set_smem((const void*)ssd7_state_scan_kernel<NS, STAGES, MODE, SPLIT>, smem);
    ssd7_state_scan_kernel<NS, STAGES, MODE, SPLIT><<<dim3((P / 64) * (N / NS), B * H), NS * 4, smem, stream>>>(
        out, final_state, init_state, dotp, hstates, U, u_stride, V, v_stride, v_col0, s.dt, s.cum, T, H, P, N, G, Q);
    cudaCheckLast();
    ssd7_runs++;
}
template <int MODE>
static void ssd7_launch(float* out, float* final_state, const float* init_state, float* dotp, const float* hstates,
                        const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0, SSDSaved s, int B,
                        int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
#define SSD7_ARGS out, final_state, init_state, dotp, hstates, U, u_stride, V, v_stride, v_col0, s, B, T, H, P, N, G, Q, stream
    if (!ssd7_split) ssd7_launch_t<64, 3, MODE, 0>(SSD7_ARGS);  /* the first form, kept for comparison (ns=64 st=3) */
    else if (ssd7_ns == 32 && ssd7_stages == 2) ssd7_launch_t<32, 2, MODE, 1>(SSD7_ARGS);
    else if (ssd7_ns == 32) ssd7_launch_t<32, 3, MODE, 1>(SSD7_ARGS);
    else if (ssd7_stages == 2) ssd7_launch_t<64, 2, MODE, 1>(SSD7_ARGS);
    else ssd7_launch_t<64, 3, MODE, 1>(SSD7_ARGS);
#undef SSD7_ARGS
}
#endif /* !ENABLE_FP32 */

#endif /* SSD_LAB_STATE_CUH */
