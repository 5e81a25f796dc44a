/*
 * ssd_state.cuh: the states entering each chunk (forward) and the state gradients dH_c (backward).
 *   ssd_simple_chunk_state_kernel  S_c = sum_j exp(cum_last - cum_j) dt_j x_j B_j^T (mode 0) or
 *                                  sum_i exp(cum_i) dy_i C_i^T (mode 1) per chunk, fp32 (both builds)
 *   ssd_state_pass_kernel          Hprev_c = exp(cum_last_{c-1}) Hprev_{c-1} + S_{c-1}, in place over the chunks
 *   ssd_dstate_pass_kernel         dH_{c-1} = exp(cum_last) dH_c + (mode 1's sum), in place, and <dH_c, Hout_c>
 *   ssd_chunk_state_kernel         (bf16) the chunk states of mode 0 / 1 on the tensor cores, chunk-parallel
 *   ssd_state_scan_kernel          (bf16) chunk states and the pass fused, one kernel per direction (MODE 0 / 1),
 *                                  the running state in registers
 */
#ifndef MAMBA2_SSD_STATE_CUH
#define MAMBA2_SSD_STATE_CUH

#ifndef MAMBA2_SSD_CUH
#error "llmc/ssd_state.cuh is a part of llmc/ssd.cuh: include llmc/ssd.cuh instead"
#endif

/* out[p, n] = sum_{j in chunk} U_j[p] w_j V_j[n] for one (chunk, b, h), a 64x64 tile of (P, N) per block.
   mode 0 (chunk state):      U = x, V = B, w_j = dt_j exp(cum_last - cum_j)
   mode 1 (backward dstate):  U = dy, V = C, w_j = exp(cum_j)
   U columns start at h*P of rows of stride u_stride; V columns at v_col0 + g*N of rows of stride v_stride.
   seg (B, T) or NULL (no boundaries, ssd_seg_kernel): mode 0 keeps the rows j >= s_last (the chunk's last
   document), mode 1 the rows i with s_i < 0 (the document open at the chunk's start); the other weights are 0. */
__global__ static void __launch_bounds__(SSD_THREADS)
ssd_simple_chunk_state_kernel(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0,
                       const float* dt, const float* cum, const int* seg, int mode, int T, int H, int P, int N, int G,
                       int Q) {
    __shared__ float Us[SSD_TILE][64], Vs[SSD_TILE][64], w_s[SSD_TILE];
    int nch = ssd_nchunks(T, Q), c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int ptiles = CEIL_DIV(P, 64), p0 = (blockIdx.z % ptiles) * 64, n0 = (blockIdx.z / ptiles) * 64;
    int t0 = c * Q, len = min(Q, T - t0);
    const float* dtc = dt + (size_t)bh * T + t0;
    const float* cumc = cum + (size_t)bh * T + t0;
    float cum_last = cumc[len - 1];
    const int* segc = seg ? seg + (size_t)b * T + t0 : NULL;
    int s_last = segc ? segc[len - 1] : -1;
    const floatX* Ub = U + (size_t)b * T * u_stride + (size_t)t0 * u_stride + h * P + p0;
    const floatX* Vb = V + (size_t)b * T * v_stride + (size_t)t0 * v_stride + v_col0 + g * N + n0;
    int tn = threadIdx.x % 16, tp = threadIdx.x / 16;  /* n fastest: coalesced stores */
    float acc[4][4] = {{0.f}};
    for (int j0 = 0; j0 < len; j0 += SSD_TILE) {
        __syncthreads();
        if (threadIdx.x < SSD_TILE) {
            int j = j0 + threadIdx.x;
            float w = 0.f;
            if (j < len) {
                w = mode == 0 ? dtc[j] * expf(cum_last - cumc[j]) : expf(cumc[j]);
                if (segc && (mode == 0 ? j < s_last : segc[j] >= 0)) w = 0.f;  /* another document */
            }
            w_s[threadIdx.x] = w;
        }
        __syncthreads();
        for (int idx = threadIdx.x; idx < SSD_TILE * 64; idx += SSD_THREADS) {
            int jj = idx / 64, col = idx % 64, j = j0 + jj;
            Us[jj][col] = (j < len && p0 + col < P) ? toF(Ub[(size_t)j * u_stride + col]) * w_s[jj] : 0.f;
            Vs[jj][col] = (j < len && n0 + col < N) ? toF(Vb[(size_t)j * v_stride + col]) : 0.f;
        }
        __syncthreads();
        for (int jj = 0; jj < SSD_TILE; jj++) {
            float a[4], bv[4];
#pragma unroll
            for (int k = 0; k < 4; k++) { a[k] = Us[jj][tp + 16 * k]; bv[k] = Vs[jj][tn + 16 * k]; }
#pragma unroll
            for (int k = 0; k < 4; k++)
#pragma unroll
                for (int l = 0; l < 4; l++) acc[k][l] += a[k] * bv[l];
        }
    }
    float* o = out + ssd_state_off(b, c, h, nch, H, P * N);
#pragma unroll
    for (int k = 0; k < 4; k++)
#pragma unroll
        for (int l = 0; l < 4; l++) {
            int p = p0 + tp + 16 * k, n = n0 + tn + 16 * l;
            if (p < P && n < N) o[(size_t)p * N + n] = acc[k][l];
        }
}

/* Forward state pass over chunks, in place: states[c] holds S_c on entry and Hprev_c on exit.
   One thread per state element (p, n) of one (b, h). SEG (seg (B, T)): a chunk whose last row is not in the
   document open at its start (s_last >= 0) drops the entering state (decay 0). The state passes and the chunk-state
   kernels take SEG as a template flag: a pointer test in the loop cost registers (22 -> 40 here, a spill in
   ssd_chunk_state_kernel<128, true>). */
template <bool SEG>
__global__ static void ssd_state_pass_kernel(float* states, float* final_state, const float* init_state,
                                             const float* cum, const int* seg, int T, int H, int PN, int Q) {
    int nch = ssd_nchunks(T, Q), bh = blockIdx.x, b = bh / H, h = bh % H;
    const int* segb = SEG ? seg + (size_t)b * T : NULL;
    int e = blockIdx.y * blockDim.x + threadIdx.x;
    if (e >= PN) return;
    float run = init_state ? init_state[(size_t)bh * PN + e] : 0.f;
    float s_next = states[ssd_state_off(b, 0, h, nch, H, PN) + e];
    for (int c = 0; c < nch; c++) {
        size_t idx = ssd_state_off(b, c, h, nch, H, PN) + e;
        float s = s_next;  /* the next chunk's load is issued before this chunk's store: one latency, not two */
        if (c + 1 < nch) s_next = states[ssd_state_off(b, c + 1, h, nch, H, PN) + e];
        states[idx] = run;
        int tl = min(T, (c + 1) * Q) - 1;
        float a = expf(cum[(size_t)bh * T + tl]);
        if (SEG && segb[tl] >= 0) a = 0.f;
        run = a * run + s;
    }
    if (final_state) final_state[(size_t)bh * PN + e] = run;
}


/* Reverse state pass, in place: dstates[c] holds sum_i exp(cum_i) dy_i C_i^T on entry and dH_c on exit.
   Also writes this block's part of <dH_c, Hout_c> (Hout_c = Hprev_{c+1}) to dotp[(bh, c, blockIdx.y)], and (d_init
   not NULL) the step past chunk 0, dH_{-1} = dL/d(init_state), to d_init (B, H, P, N). SEG as the forward pass's. */
template <bool SEG>
__global__ static void __launch_bounds__(SSD_THREADS)
ssd_dstate_pass_kernel(float* dstates, float* dotp, float* d_init, const float* states, const float* cum,
                       const int* seg, int T, int H, int PN, int Q) {
    __shared__ float red[SSD_THREADS / 32];
    int nch = ssd_nchunks(T, Q), bh = blockIdx.x, b = bh / H, h = bh % H, nsplit = gridDim.y;
    const int* segb = SEG ? seg + (size_t)b * T : NULL;
    int e = blockIdx.y * SSD_THREADS + threadIdx.x;
    float dH = 0.f, sb_next = 0.f, hout_next = 0.f;  /* loads for the next chunk are issued a chunk ahead */
    if (e < PN) sb_next = dstates[ssd_state_off(b, nch - 1, h, nch, H, PN) + e];
    for (int c = nch - 1; c >= 0; c--) {
        size_t idx = ssd_state_off(b, c, h, nch, H, PN) + e;
        float sb = sb_next, hout = hout_next, v = 0.f;
        if (e < PN) {
            if (c > 0) {
                sb_next = dstates[ssd_state_off(b, c - 1, h, nch, H, PN) + e];
                hout_next = states[idx];  /* Hout_{c-1} = Hprev_c */
            }
            dstates[idx] = dH;
            if (c + 1 < nch) v = dH * hout;
        }
        v = warp_reduce_sum(v);
        if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
        __syncthreads();
        if (threadIdx.x == 0) {
            float s = 0.f;
            for (int w = 0; w < SSD_THREADS / 32; w++) s += red[w];
            dotp[((size_t)bh * nch + c) * nsplit + blockIdx.y] = s;
        }
        __syncthreads();
        int tl = min(T, (c + 1) * Q) - 1;
        float a = expf(cum[(size_t)bh * T + tl]);
        if (SEG && segb[tl] >= 0) a = 0.f;
        dH = a * dH + sb;
    }
    if (d_init && e < PN) d_init[(size_t)bh * PN + e] = dH;
}

/* the two state passes with or without document boundaries (seg NULL) */
static void ssd_launch_state_pass(float* states, float* final_state, const float* init_state, const float* cum,
                                  const int* seg, int B, int T, int H, int PN, int Q, cudaStream_t stream) {
    dim3 grid(B * H, CEIL_DIV(PN, 256));
    if (seg) ssd_state_pass_kernel<true><<<grid, 256, 0, stream>>>(states, final_state, init_state, cum, seg, T, H, PN, Q);
    else ssd_state_pass_kernel<false><<<grid, 256, 0, stream>>>(states, final_state, init_state, cum, seg, T, H, PN, Q);
    cudaCheckLast();
}
static void ssd_launch_dstate_pass(float* dstates, float* dotp, float* d_init, const float* states, const float* cum,
                                   const int* seg, int B, int T, int H, int PN, int Q, int nsplit,
                                   cudaStream_t stream) {
    dim3 grid(B * H, nsplit);
    if (seg)
        ssd_dstate_pass_kernel<true><<<grid, SSD_THREADS, 0, stream>>>(dstates, dotp, d_init, states, cum, seg, T, H,
                                                                       PN, Q);
    else
        ssd_dstate_pass_kernel<false><<<grid, SSD_THREADS, 0, stream>>>(dstates, dotp, d_init, states, cum, seg, T, H,
                                                                        PN, Q);
    cudaCheckLast();
}

#if !defined(ENABLE_FP32)
/* ------------------------------------------------------------------------------------------------------------ */
/* The chunk-parallel chunk state (bf16 build), ssd_simple_chunk_state_kernel's product on the tensor cores: one
   block per (chunk, b, h, 64 rows of P) with all of N <= 128 in its output tile (64 x 128), grid (nchunks, B*H,
   ceil(P/64)). A = (w_j U_j)^T: each warp loads raw U fragments (ldmatrix.trans), scales them by w_j in registers
   and splits them in hi + lo bf16 (two products, ~16 mantissa bits); B = V. Tiles double-buffered (cp.async). */
#define SSD_CS_LDV (SSD_MAXD + 8)
static inline size_t ssd_smem_chunk_state(void) {
    return 2 * (size_t)SSD_MMA_ROWS * (72 + SSD_CS_LDV) * sizeof(floatX) + 2 * SSD_MMA_ROWS * sizeof(float);
}
/* 4 blocks/SM: 128 registers (132 uncapped), 54 KB smem */
/* SEG: seg as ssd_simple_chunk_state_kernel's */
template <int NMAX, bool EXACT, bool SEG>
__global__ static void __launch_bounds__(SSD_MMA_THREADS, 4)
ssd_chunk_state_kernel(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0,
                        const float* dt, const float* cum, const int* seg, int mode, int T, int H, int P, int N, int G,
                        int Q) {
    if (EXACT) N = NMAX;
    extern __shared__ __align__(16) unsigned char ssd_smem[];
    floatX* Us = (floatX*)ssd_smem;                       /* 2 x (64, 72) U rows j, P columns p0.. */
    floatX* Vs = Us + 2 * SSD_MMA_ROWS * 72;                  /* 2 x (64, SSD_CS_LDV) V rows j */
    float* w_s = (float*)(Vs + 2 * SSD_MMA_ROWS * SSD_CS_LDV);  /* 2 x 64 */
    int nch = ssd_nchunks(T, Q), c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int p0 = blockIdx.z * 64, pw = min(64, P - p0);
    int t0 = c * Q, len = min(Q, T - t0);
    const float* dtc = dt + (size_t)bh * T + t0;
    const float* cumc = cum + (size_t)bh * T + t0;
    float cum_last = cumc[len - 1];
    const int* segc = SEG ? seg + (size_t)b * T + t0 : NULL;
    int s_last = SEG ? segc[len - 1] : -1;
    const floatX* Ub = U + (size_t)(b * T + t0) * u_stride + h * P + p0;
    const floatX* Vb = V + (size_t)(b * T + t0) * v_stride + v_col0 + g * N;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, m0 = warp * 16, tig = lane % 4;
    float acc[NMAX / 8][4];
#pragma unroll
    for (int nt = 0; nt < NMAX / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    int ntj = CEIL_DIV(len, SSD_MMA_ROWS);
    for (int jt = 0; jt <= ntj; jt++) {
        if (jt < ntj) {  /* issue tile jt (buffer jt & 1), then work on tile jt - 1 */
            int bf = jt & 1, j0 = jt * SSD_MMA_ROWS;
            ssd_load_tile(Us + bf * SSD_MMA_ROWS * 72, 72, Ub, u_stride, j0, len, pw);
            ssd_load_tile(Vs + bf * SSD_MMA_ROWS * SSD_CS_LDV, SSD_CS_LDV, Vb, v_stride, j0, len, N);
            ssd_cp_commit();
            if (threadIdx.x < SSD_MMA_ROWS) {
                int j = j0 + threadIdx.x;
                float w = j < len ? (mode == 0 ? dtc[j] * expf(cum_last - cumc[j]) : expf(cumc[j])) : 0.f;
                if (SEG && j < len && (mode == 0 ? j < s_last : segc[j] >= 0)) w = 0.f;  /* another document */
                w_s[bf * SSD_MMA_ROWS + threadIdx.x] = w;
            }
        }
        if (jt == 0) continue;
        if (jt < ntj) ssd_cp_wait<1>(); else ssd_cp_wait<0>();
        __syncthreads();
        int buf = (jt - 1) & 1;
        const float* wb = w_s + buf * SSD_MMA_ROWS;
        if (m0 < pw) {
            const floatX* ap = Us + buf * SSD_MMA_ROWS * 72 + ((lane % 8) + (lane / 16) * 8) * 72 + m0 +
                               ((lane / 8) % 2) * 8;
            const floatX* bp = Vs + buf * SSD_MMA_ROWS * SSD_CS_LDV +
                               ((lane % 8) + ((lane / 8) % 2) * 8) * SSD_CS_LDV + (lane / 16) * 8;
#pragma unroll
            for (int k0 = 0; k0 < SSD_MMA_ROWS; k0 += 16) {
                uint32_t raw[4], ah[4], al[4];
                ssd_ldsm_t(raw, ap + k0 * 72);
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
                        ssd_ldsm_t(bfr, bp + k0 * SSD_CS_LDV + nt * 8);
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

/* The fused state scans (bf16 build): the chunk-state products and the state pass over chunks in ONE kernel per
   direction, so the per-chunk S_c never goes through global memory (the chunk-parallel kernels write 100 MB of
   fp32 S_c at Q = 128, and the state passes read it back and overwrite it: ~390 us per layer at DRAM speed).
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
   nsplit7 = P N / 512 <= ssd_nsplit(P, N) (ssd_state_scan_nsplit), read by ssd_bwd_dt_kernel with that nsplit.
   Fixed order: deterministic.
   Precision as ssd_chunk_state_kernel's: A = the w-scaled x (dy) tile, split in bf16 hi + lo (two products,
   ~16 bits), B = the B (C) tile, fp32 accumulation into the running state.
   Layout: warp w owns state rows 16 (w % 4) .. + 15 of the block's 64 and columns 32 (w / 4) .. + 31 of its NS:
   4 accumulator tiles (16 registers) per thread. The tiles stream through STAGES cp.async buffers (x / dy 64 x 64,
   B / C 64 x NS, cum of rows a-1..a+63, dt), two barriers per tile (below); the loop is serial over the
   sequence, so the loads of the next STAGES - 1 tiles are in flight while a tile's products run. */
#define SSD_SCAN_ROWS 64
#define SSD_SCAN_LDU 72  /* x / dy tile row stride in bf16: 64 columns + a 16-byte pad (ldmatrix rows in 8 bank groups) */
/* state columns per block: 64 (8 warps; 32 with 4 warps measured slower), and cp.async tile buffers: 3 (the loads
   of the next 2 tiles in flight while a tile's products run; 2 measured slower): NOTES_ssd.md, "Version 7" */
#define SSD_SCAN_NS 64
#define SSD_SCAN_STAGES 3
struct SsdScanStage {
    static constexpr int LDV = SSD_SCAN_NS + 8;
    static constexpr int U_OFF = 0;                                             /* bf16 (64, SSD_SCAN_LDU) */
    static constexpr int V_OFF = U_OFF + SSD_SCAN_ROWS * SSD_SCAN_LDU * 2;              /* bf16 (64, LDV) */
    static constexpr int CUM_OFF = V_OFF + SSD_SCAN_ROWS * LDV * 2;                 /* float [0] = cum_{a-1}, [1 + r] */
    static constexpr int DT_OFF = CUM_OFF + (SSD_SCAN_ROWS + 4) * 4;                /* float [r] */
    static constexpr int BYTES = DT_OFF + SSD_SCAN_ROWS * 4;
};
/* the stage buffers, then the lo half of the scaled x / dy tile, (64, SSD_SCAN_LDU) bf16; with seq_idx (seg) then
   each stage's 64 segment starts (ints), outside the stages so the layout without seq_idx is unchanged */
static inline size_t ssd_state_scan_smem(int seg) {
    return (size_t)SSD_SCAN_STAGES * SsdScanStage::BYTES + (size_t)SSD_SCAN_ROWS * SSD_SCAN_LDU * sizeof(floatX) +
           (seg ? (size_t)SSD_SCAN_STAGES * SSD_SCAN_ROWS * sizeof(int) : 0);
}

/* 4 bytes global -> shared (cum, dt: no alignment to rely on); valid = 0 writes a zero */
__device__ static inline void ssd_cp_async4(void* dst, const void* src, int valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(ssd_saddr(dst)), "l"(src),
                 "r"(valid ? 4 : 0) : "memory");
}

/* issue the loads of tile t (rows j0 = 64 t ..) into one stage buffer; rows at or past T are zero-filled.
   Ub / Vb: row 0 of this batch element at the block's first U / V column; dtc, cumc: this (b, h)'s rows;
   SEG: segb (this b's seg row) into sgs (the stage's 64 ints). */
template <int NTHR, bool SEG>
__device__ static inline void ssd_scan_load_tile(unsigned char* stage, const floatX* Ub, int u_stride, const floatX* Vb,
                                             int v_stride, const float* dtc, const float* cumc, const int* segb,
                                             int* sgs, int j0, int T, int Q, int with_dt) {
    constexpr int NS = SSD_SCAN_NS;
    typedef SsdScanStage L;
    floatX* Us = (floatX*)(stage + L::U_OFF);
    floatX* Vs = (floatX*)(stage + L::V_OFF);
    float* cs = (float*)(stage + L::CUM_OFF);
    float* ds = (float*)(stage + L::DT_OFF);
#pragma unroll
    for (int idx = threadIdx.x; idx < SSD_SCAN_ROWS * 8; idx += NTHR) {
        int r = idx / 8, v = idx % 8, ok = j0 + r < T;
        ssd_cp_async16(Us + r * SSD_SCAN_LDU + v * 8, Ub + (ok ? (size_t)(j0 + r) * u_stride + v * 8 : 0), ok);
    }
#pragma unroll
    for (int idx = threadIdx.x; idx < SSD_SCAN_ROWS * (NS / 8); idx += NTHR) {
        int r = idx / (NS / 8), v = idx % (NS / 8), ok = j0 + r < T;
        ssd_cp_async16(Vs + r * L::LDV + v * 8, Vb + (ok ? (size_t)(j0 + r) * v_stride + v * 8 : 0), ok);
    }
    /* cs[0] = cum_{a-1} (zero at a chunk's first row), cs[1 + r] = cum of row j0 + r; then ds[r] = dt of row j0 + r */
    for (int k = threadIdx.x; k < 2 * SSD_SCAN_ROWS + 1; k += NTHR) {
        if (k <= SSD_SCAN_ROWS) {
            int row = j0 - 1 + k, ok = k == 0 ? j0 % Q != 0 : row < T;
            ssd_cp_async4(cs + k, cumc + (ok ? row : 0), ok);
        } else if (with_dt) {
            int r = k - SSD_SCAN_ROWS - 1, ok = j0 + r < T;
            ssd_cp_async4(ds + r, dtc + (ok ? j0 + r : 0), ok);
        }
    }
    if (SEG)
        for (int r = threadIdx.x; r < SSD_SCAN_ROWS; r += NTHR) {
            int ok = j0 + r < T;
            ssd_cp_async4(sgs + r, segb + (ok ? j0 + r : 0), ok);
        }
}

/* this thread's 16 entries of the block's (64 x NS) slice of a (P, N) fp32 state: rows p, p + 8 (eoff points at
   row p, column 2 tig of the warp's first accumulator tile), accumulator tiles nt at columns + 8 nt */
__device__ static inline void ssd_scan_store_state(float* o, size_t eoff, int N, const float run[4][4]) {
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
        *(float2*)(o + eoff + nt * 8) = make_float2(run[nt][0], run[nt][1]);
        *(float2*)(o + eoff + (size_t)8 * N + nt * 8) = make_float2(run[nt][2], run[nt][3]);
    }
}
__device__ static inline void ssd_scan_load_state(float v[4][4], const float* m, size_t eoff, int N) {
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
        float2 a = *(const float2*)(m + eoff + nt * 8), c = *(const float2*)(m + eoff + (size_t)8 * N + nt * 8);
        v[nt][0] = a.x; v[nt][1] = a.y; v[nt][2] = c.x; v[nt][3] = c.y;
    }
}

/* the w-scaled U tile of one stage in place as its bf16 hi part, the lo part (the rounding error of hi) into Ls;
   each element once per block (the register form scaled every A fragment in each warp that read it: 2 warps per
   row tile at NS = 64, and each row's weight in every lane).
   SEG: sg = the tile's segment starts, a = the chunk-local index of its first row. The tile form of the masks
   (ssd_seg_kernel): the state before row a reaches row a + r iff s_{a+r} < a (no boundary in a..a+r), so MODE 1
   keeps row r iff sg[r] < a; row a + r enters the state after the tile's last row e iff a + r >= s_e (MODE 0). */
template <int MODE, int NTHR, bool SEG>
__device__ static inline void ssd_scan_scale_split(floatX* Us, floatX* Ls, const float* cs, const float* ds,
                                                   const int* sg, int a, int nvalid) {
    float ca = cs[0], ce = cs[nvalid];
    int s_e = SEG ? sg[nvalid - 1] : -1;
#pragma unroll
    for (int idx = threadIdx.x; idx < SSD_SCAN_ROWS * 8; idx += NTHR) {
        int r = idx / 8, off = r * SSD_SCAN_LDU + (idx % 8) * 8;
        float w = r < nvalid ? (MODE == 0 ? ds[r] * expf(ce - cs[1 + r]) : expf(cs[1 + r] - ca)) : 0.f;
        if (SEG && (MODE == 0 ? a + r < s_e : sg[r] >= a)) w = 0.f;  /* another document */
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
   V = C (v_col0 = E + G N); final_state (may be NULL) = the run after the first row's tile, dH_{-1} =
   dL/d(init_state).
   SEG (seg (B, T), ssd_seg_kernel): document boundaries. Per 64-row tile (rows a..e of a chunk) the running state's
   decay exp(cum_e - cum_{a-1}) becomes 0 where s_e >= a (a boundary inside the tile, or at its first row), in both
   directions (the forward's state before a reaches e, the backward's gradient at e reaches the state before a, only
   if no boundary in a..e), and the rows' weights are masked as ssd_scan_scale_split says. Over the tiles of a chunk
   these multiply to the chunk rules of ssd_seg_kernel (s_e < a for the last tile and s_{a-1} < 0 for the ones before
   give s_last < 0). The seg tiles stream through their own STAGES buffers after Ls.
   grid ((P / 64) (N / NS), B H): the slices of one head are neighbours (their U tiles are the same rows: L2 hits),
   and so are the heads of one batch element (the same B / C tiles).
   The scaled U tile is made once per block in shared memory (ssd_scan_scale_split; a second barrier per tile), and
   the A fragments (hi, lo) are plain ldmatrix loads (scaling and splitting them per warp in registers, one barrier
   per tile, measured slower: NOTES_ssd.md, "Version 7"). */
template <int MODE, bool SEG>
__global__ static void __launch_bounds__(SSD_SCAN_NS * 4, 3)
ssd_state_scan_kernel(float* out, float* final_state, const float* init_state, float* dotp, const float* hstates,
                       const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0, const float* dt,
                       const float* cum, const int* seg, int T, int H, int P, int N, int G, int Q) {
    constexpr int NS = SSD_SCAN_NS, STAGES = SSD_SCAN_STAGES, NTHR = NS * 4, WARPS = NS / 8;
    typedef SsdScanStage L;
    extern __shared__ __align__(16) unsigned char ssd_smem[];
    int nsl_n = N / NS, nsl = (P / 64) * nsl_n, sl = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H;
    int g = h / (H / G), p0 = (sl / nsl_n) * 64, n0 = (sl % nsl_n) * NS;
    int nch = ssd_nchunks(T, Q), ntl = CEIL_DIV(T, SSD_SCAN_ROWS), PN = P * N;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tig = lane % 4;
    int m0 = (warp % 4) * 16, c0 = (warp / 4) * 32;  /* the warp's rows of the 64 and first column of the NS */
    const floatX* Ub = U + (size_t)b * T * u_stride + h * P + p0;
    const floatX* Vb = V + (size_t)b * T * v_stride + v_col0 + g * N + n0;
    const float* dtc = dt + (size_t)bh * T;
    const float* cumc = cum + (size_t)bh * T;
    const int* segb = SEG ? seg + (size_t)b * T : NULL;
    int* sgbuf = (int*)(ssd_smem + STAGES * L::BYTES + SSD_SCAN_ROWS * SSD_SCAN_LDU * sizeof(floatX));  /* SEG */
    size_t eoff = (size_t)(p0 + m0 + lane / 4) * N + n0 + c0 + 2 * tig;
    float run[4][4], hout[4][4];
#pragma unroll
    for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) run[nt][e] = hout[nt][e] = 0.f;
    if (MODE == 0 && init_state) ssd_scan_load_state(run, init_state + (size_t)bh * PN, eoff, N);
#define SSD_SCAN_TILE_OF(k) (MODE == 0 ? (k) : ntl - 1 - (k))
#pragma unroll 1
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < ntl)
            ssd_scan_load_tile<NTHR, SEG>(ssd_smem + s * L::BYTES, Ub, u_stride, Vb, v_stride, dtc, cumc, segb,
                                          sgbuf + s * SSD_SCAN_ROWS, SSD_SCAN_ROWS * SSD_SCAN_TILE_OF(s), T, Q, MODE == 0);
        ssd_cp_commit();
    }
#pragma unroll 1
    for (int k = 0; k < ntl; k++) {
        ssd_cp_wait<STAGES - 2>();  /* this thread's copies of tile k are in */
        __syncthreads();             /* everyone's are, and everyone is done with the buffer refilled next */
        int kn = k + STAGES - 1;
        if (kn < ntl)
            ssd_scan_load_tile<NTHR, SEG>(ssd_smem + (kn % STAGES) * L::BYTES, Ub, u_stride, Vb, v_stride, dtc, cumc,
                                          segb, sgbuf + (kn % STAGES) * SSD_SCAN_ROWS, SSD_SCAN_ROWS * SSD_SCAN_TILE_OF(kn),
                                          T, Q, MODE == 0);
        ssd_cp_commit();
        unsigned char* st = ssd_smem + (k % STAGES) * L::BYTES;
        floatX* Ls = (floatX*)(ssd_smem + STAGES * L::BYTES);
        int j0 = SSD_SCAN_ROWS * SSD_SCAN_TILE_OF(k), c = j0 / Q, nvalid = min(SSD_SCAN_ROWS, T - j0);
        if (MODE == 0) {
            if (j0 % Q == 0) ssd_scan_store_state(out + ssd_state_off(b, c, h, nch, H, PN), eoff, N, run);  /* Hprev_c */
        } else if (j0 + SSD_SCAN_ROWS >= min(T, (c + 1) * Q)) {  /* the chunk's last tile: run = dH_c */
            ssd_scan_store_state(out + ssd_state_off(b, c, h, nch, H, PN), eoff, N, run);
            float v = 0.f;
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) v += run[nt][e] * hout[nt][e];
            v = warp_reduce_sum(v);
            if (lane == 0) dotp[((size_t)bh * nch + c) * (nsl * WARPS) + sl * WARPS + warp] = v;
            /* Hout_{c-1} = states[c], used at the next chunk boundary: its loads have a chunk to land */
            if (c > 0) ssd_scan_load_state(hout, hstates + ssd_state_off(b, c, h, nch, H, PN), eoff, N);
        }
        const float* cs = (const float*)(st + L::CUM_OFF);
        const float* ds = (const float*)(st + L::DT_OFF);
        const int* sg = sgbuf + (k % STAGES) * SSD_SCAN_ROWS;  /* SEG */
        /* Ls is free: every warp passed this tile's first barrier after its last tile's products */
        ssd_scan_scale_split<MODE, NTHR, SEG>((floatX*)(st + L::U_OFF), Ls, cs, ds, sg, j0 % Q, nvalid);
        __syncthreads();
        float ca = cs[0], ce = cs[nvalid], decay = expf(ce - ca);
        if (SEG && sg[nvalid - 1] >= j0 % Q) decay = 0.f;  /* a boundary in the tile: the running state is dropped */
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) run[nt][e] *= decay;
        int aoff = ((lane % 8) + (lane / 16) * 8) * SSD_SCAN_LDU + m0 + ((lane / 8) % 2) * 8;
        const floatX* ap = (const floatX*)(st + L::U_OFF) + aoff;
        const floatX* bp = (const floatX*)(st + L::V_OFF) + ((lane % 8) + ((lane / 8) % 2) * 8) * L::LDV +
                           (lane / 16) * 8 + c0;
#pragma unroll
        for (int k0 = 0; k0 < SSD_SCAN_ROWS; k0 += 16) {
            uint32_t ah[4], al[4];
            ssd_ldsm_t(ah, ap + k0 * SSD_SCAN_LDU);
            ssd_ldsm_t(al, Ls + aoff + k0 * SSD_SCAN_LDU);
#pragma unroll
            for (int np = 0; np < 2; np++) {
                uint32_t bfr[4];
                ssd_ldsm_t(bfr, bp + k0 * L::LDV + np * 16);
                ssd_mma_bf16(run[2 * np], ah, bfr);
                ssd_mma_bf16(run[2 * np], al, bfr);
                ssd_mma_bf16(run[2 * np + 1], ah, bfr + 2);
                ssd_mma_bf16(run[2 * np + 1], al, bfr + 2);
            }
        }
    }
#undef SSD_SCAN_TILE_OF
    if (final_state) ssd_scan_store_state(final_state + (size_t)bh * PN, eoff, N, run);  /* MODE 1: d_init_state */
}

/* ------------------------------------------------------------------------------------------------------------ */
/* launchers */

/* the chunk-parallel chunk-state product (forward S_c: mode 0, backward sum exp(cum_i) dy_i C_i^T: mode 1); N = 128
   runs the instantiation with a compile-time N */
template <bool SEG>
static void ssd_launch_chunk_state_s(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride,
                                     int v_col0, SSDSaved s, int mode, int B, int T, int H, int P, int N, int G, int Q,
                                     cudaStream_t stream) {
    dim3 grid(ssd_nchunks(T, Q), B * H, CEIL_DIV(P, 64));
    size_t smem = ssd_smem_chunk_state();
    if (N == 128) {
        ssd_set_smem((const void*)ssd_chunk_state_kernel<128, true, SEG>, smem);
        ssd_chunk_state_kernel<128, true, SEG><<<grid, SSD_MMA_THREADS, smem, stream>>>(
            out, U, u_stride, V, v_stride, v_col0, s.dt, s.cum, s.seg, mode, T, H, P, N, G, Q);
    } else {
        ssd_set_smem((const void*)ssd_chunk_state_kernel<SSD_MAXD, false, SEG>, smem);
        ssd_chunk_state_kernel<SSD_MAXD, false, SEG><<<grid, SSD_MMA_THREADS, smem, stream>>>(
            out, U, u_stride, V, v_stride, v_col0, s.dt, s.cum, s.seg, mode, T, H, P, N, G, Q);
    }
    cudaCheckLast();
}
/* s.seg NULL: no document boundaries */
static void ssd_launch_chunk_state(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride,
                                   int v_col0, SSDSaved s, int mode, int B, int T, int H, int P, int N, int G, int Q,
                                   cudaStream_t stream) {
    if (s.seg) ssd_launch_chunk_state_s<true>(out, U, u_stride, V, v_stride, v_col0, s, mode, B, T, H, P, N, G, Q, stream);
    else ssd_launch_chunk_state_s<false>(out, U, u_stride, V, v_stride, v_col0, s, mode, B, T, H, P, N, G, Q, stream);
}

/* The fused scans run where the tile kernels' layout rules hold (checked by the caller), P % 64 == 0,
   N % SSD_SCAN_NS == 0, Q % 64 == 0 (a 64-row tile never straddles two chunks), the fp32 state buffers they read or
   write with 8-byte accesses are 8-byte aligned (NULL passes), and the grid of (b, h, slice) blocks fills the GPU:
   B H (P/64) (N/NS) >= the SM count. Each block is serial over the whole sequence, so a smaller grid leaves SMs idle
   and the chunk-parallel kernels win (NOTES_ssd.md, "Version 7": the trainer's B = 8, H = 24 fuses; B = 1 does not). */
static inline int ssd_state_scan_takes(int B, int H, int P, int N, int Q, const void* s0, const void* s1,
                                       const void* s2) {
    if (P % 64 != 0 || N % SSD_SCAN_NS != 0 || Q % 64 != 0) return 0;
    if ((uintptr_t)s0 % 8 != 0 || (uintptr_t)s1 % 8 != 0 || (uintptr_t)s2 % 8 != 0) return 0;
    return (long)B * H * (P / 64) * (N / SSD_SCAN_NS) >= cuda_num_sms();
}
/* entries of the fused backward's dotp per (b, h, chunk): one per warp of each (64 x NS) slice */
static inline int ssd_state_scan_nsplit(int P, int N) { return P * N / 512; }
template <int MODE, bool SEG>
static void ssd_launch_state_scan_s(float* out, float* final_state, const float* init_state, float* dotp,
                                    const float* hstates, const floatX* U, int u_stride, const floatX* V, int v_stride,
                                    int v_col0, SSDSaved s, int B, int T, int H, int P, int N, int G, int Q,
                                    cudaStream_t stream) {
    size_t smem = ssd_state_scan_smem(SEG);
    ssd_set_smem((const void*)ssd_state_scan_kernel<MODE, SEG>, smem);
    ssd_state_scan_kernel<MODE, SEG><<<dim3((P / 64) * (N / SSD_SCAN_NS), B * H), SSD_SCAN_NS * 4, smem, stream>>>(
        out, final_state, init_state, dotp, hstates, U, u_stride, V, v_stride, v_col0, s.dt, s.cum, s.seg, T, H, P, N,
        G, Q);
    cudaCheckLast();
}
/* MODE 1: final_state is d_init_state (or NULL); s.seg NULL: no document boundaries */
template <int MODE>
static void ssd_launch_state_scan(float* out, float* final_state, const float* init_state, float* dotp,
                                  const float* hstates, const floatX* U, int u_stride, const floatX* V, int v_stride,
                                  int v_col0, SSDSaved s, int B, int T, int H, int P, int N, int G, int Q,
                                  cudaStream_t stream) {
    if (s.seg)
        ssd_launch_state_scan_s<MODE, true>(out, final_state, init_state, dotp, hstates, U, u_stride, V, v_stride,
                                            v_col0, s, B, T, H, P, N, G, Q, stream);
    else
        ssd_launch_state_scan_s<MODE, false>(out, final_state, init_state, dotp, hstates, U, u_stride, V, v_stride,
                                             v_col0, s, B, T, H, P, N, G, Q, stream);
}
#endif /* !ENABLE_FP32 */

#endif /* MAMBA2_SSD_STATE_CUH */
