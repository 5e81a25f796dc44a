/*
 * ssd.cuh: the SSD (state-space dual) layer of Mamba-2, forward and backward, by the chunked algorithm of
 * SPEC.md section 3. One head h of batch element b, chunk c of Q steps, rows i, j inside the chunk:
 *
 *   dt_t   = softplus(dt_raw_t + dt_bias[h]),  A = -exp(A_log[h])          (ssd_dt_cumsum_kernel)
 *   cum_i  = sum_{k<=i} dt_k A                  chunk-local inclusive log-decay, decreasing in i
 *   S_c    = sum_j exp(cum_last - cum_j) dt_j x_j B_j^T          (P,N)     (chunk state, mode 0)
 *   Hprev_c = exp(cum_last_{c-1}) Hprev_{c-1} + S_{c-1}          state entering chunk c (state pass)
 *   y_i    = sum_{j<=i} (C_i.B_j) exp(cum_i - cum_j) dt_j x_j + exp(cum_i) Hprev_c C_i + D x_i
 *                                                                          (forward scan)
 * Every exp() argument is a difference that is <= 0, or a chunk-local cum <= 0: nothing overflows.
 *
 * Saved for backward (`saved`, ssd_saved_bytes): dt (B,H,T) float, cum (B,H,T) float, the states entering
 * each chunk (B, nchunks, H, P, N) float, and with seq_idx the segment starts seg (B,T) int (ssd_seg_kernel).
 *
 * Document boundaries (seq_idx, doc/packing.md section 2): every term of the formulas below is kept unchanged or
 * dropped (an exact zero), by one integer compare per term against seg (the rules: ssd_seg_kernel). Every kernel
 * that forms a decay applies them; the dt kernels need none (a dropped term is a constant, so it adds nothing to
 * dcum). The kernels with a template flag SEG (the tile kernels, the state passes) compile the masks away without
 * seq_idx; the simple kernels (fp32 build, fallback shapes) test a pointer. doc/ssd_backward.md section 7 derives the backward with boundaries.
 *
 * Backward: derivation from the recurrence of SPEC.md section 4, in chunk form.
 * Let dH_c = dL/d(state leaving chunk c) (= dL/dHprev_{c+1}; zero for the last chunk: the final state is not
 * differentiated). The recurrence g_t = dy_t C_t^T + a_{t+1} g_{t+1} summed over one chunk gives
 *   dH_{c-1} = exp(cum_last) dH_c + sum_i exp(cum_i) dy_i C_i^T            (chunk state mode 1 makes the
 *                                                                           sum, the reverse state pass the scan)
 * Inside the chunk y_i is a sum of products, so each input's gradient is the matching sum:
 *   dxs_j = sum_{i>=j} (C_i.B_j) exp(cum_i-cum_j) dy_i + exp(cum_last-cum_j) dH_c B_j        (P)
 *   dx_j  = dt_j dxs_j + D dy_j
 *   dB_j  = dt_j [ sum_{i>=j} (dy_i.x_j) exp(cum_i-cum_j) C_i + exp(cum_last-cum_j) dH_c^T x_j ]   (N)
 *                                                              (these three: the dxdb kernels)
 *   dC_i  = sum_{j<=i} (dy_i.x_j) exp(cum_i-cum_j) dt_j B_j + exp(cum_i) Hprev_c^T dy_i      (the dC kernels)
 *   ddt_j (as a coefficient) = x_j . dxs_j
 * The log-decays: cum_k enters exp(cum_i - cum_j) with + at i = k and - at j = k, exp(cum_i) with +,
 * exp(cum_last - cum_j) with - at j, and cum_last in the state leaving the chunk with +. Collecting terms:
 *   dcum_i = dy_i . ssd_i  -  dt_i (x_i . dxs_i)  [+ <dH_c, Hout_c> at i = last]
 * where ssd_i = y_i - D x_i is the SSD output and Hout_c = Hprev_{c+1}. With
 *   W[i,j] = (dy_i.x_j)(C_i.B_j) exp(cum_i - cum_j) dt_j   (j <= i)
 * the intra-chunk parts are dy_i.ssd_i|intra = sum_j W[i,j] (row sums) and dt_j x_j.dxs_j|intra = sum_i W[i,j]
 * (column sums). Their suffix sums cancel to the pairs that straddle a position, so both are taken from the same
 * W values (the kernel that makes W writes both sums): computed apart, with bf16 operands, the rounding of the
 * two would not cancel and ddt would lose most of its digits. The inter-chunk parts, C_i.(exp(cum_i) Hprev^T dy_i)
 * and dt_j exp(cum_last - cum_j) x_j.(dH_c B_j), multiply fp32 states: their products keep ~16 mantissa bits
 * (the state operand split in bf16 hi + lo).
 * cum_i = A sum_{k<=i} dt_k, so
 *   ddt_k += A sum_{i>=k} dcum_i      (a reverse cumsum inside the chunk)
 *   dA_log = dA A = sum_i dcum_i cum_i                        (the dt kernels)
 * then ddt_raw = ddt sigmoid(dt_raw + dt_bias), d_dt_bias += sum ddt_raw, d_D += sum x.dy.
 * dB, dC of a group are the sums over its heads: each head writes its own float copy to the workspace and
 * a group-sum pass adds them in head order. Parameter gradients: per-(b,h,chunk) partials, then
 * ssd_bwd_param_sum_kernel adds them in a fixed order. No atomics: two runs are bitwise identical.
 *
 * doc/ssd_backward.md derives the same lines step by step from the recurrence.
 *
 * Kernels (bf16 build; timings and the history of each in dev/cuda/NOTES_ssd.md; the lab's versions 2 to 11 are
 * dev/cuda/ssd_lab*.cuh, run by dev/cuda/ssd.cu):
 *   forward   ssd_dt_cumsum_kernel; the states: ssd_state_scan_kernel<0> (chunk states and the pass fused) where
 *             ssd_state_scan_takes, else ssd_chunk_state_kernel + ssd_state_pass_kernel; y: on the Hopper path
 *             (gpu_hopper_path()) ssd_fwd_scan_wgmma_pair_kernel (P = 64, H/G even) or ssd_fwd_scan_wgmma_kernel
 *             (P, N in {64, 128}), else ssd_fwd_scan_mma_kernel (mma.sync, any target from sm_80)
 *   backward  the states: ssd_state_scan_kernel<1> or ssd_chunk_state_kernel + ssd_dstate_pass_kernel; then
 *             ssd_bwd_bct_kernel, ssd_bwd_dxdb_kernel, ssd_bwd_dc_kernel (their tuned form where
 *             ssd_bwd_tuned_takes), ssd_bwd_group_sum_kernel (groups of more than 4 heads), ssd_bwd_dt_kernel,
 *             ssd_bwd_param_sum_kernel
 *   These need the tile layout rules (ssd_tiles_take: P, N multiples of 16, 16-byte aligned rows). The fp32 build
 *   and other shapes run the simple kernels: ssd_simple_chunk_state_kernel and the state passes,
 *   ssd_simple_fwd_scan_kernel, ssd_simple_bwd_dxdb_kernel, ssd_simple_bwd_dc_kernel, ssd_simple_bwd_dt_kernel,
 *   ssd_simple_group_sum_kernel, ssd_bwd_param_sum_kernel. Every path: any P, N <= 128, G dividing H,
 *   16 <= Q <= 256, T any length (the last chunk may be partial). ssd_forward / ssd_backward return an SSDPath
 *   saying which kernels ran (dev/cuda/ssd.cu checks it).
 * At the trainer's 130M shape (B=8, T=2048, H=24, G=1, P=64, N=128, Q=128) on an H100: forward
 *   ssd_dt_cumsum_kernel, ssd_state_scan_kernel<0>, ssd_fwd_scan_wgmma_pair_kernel<8>; backward
 *   ssd_state_scan_kernel<1>, ssd_bwd_bct_kernel, ssd_bwd_dxdb_kernel and ssd_bwd_dc_kernel<64, 128, true, true>,
 *   ssd_bwd_group_sum_kernel (24 heads in 6 head-groups of 4), ssd_bwd_dt_kernel, ssd_bwd_param_sum_kernel.
 *
 * Files (one concern each; this file includes the others, which are not included on their own):
 *   llmc/ssd.cuh         this comment, the saved / workspace layouts, the shared helpers and small kernels, the
 *                        shape rules and the dispatch (ssd_forward / ssd_backward, at the end)
 *   llmc/ssd_tile.cuh    bf16 tile primitives: mma.sync fragments, ldmatrix, cp.async, row-tile shared memory
 *   llmc/ssd_simple.cuh  the simple 32-row tile kernels: the fp32 build's path and the bf16 build's fallback
 *   llmc/ssd_state.cuh   chunk states and state passes (every build), the fused state scans (bf16)
 *   llmc/ssd_fwd.cuh     the bf16 forward scans: wgmma (sm_90a) and mma.sync
 *   llmc/ssd_bwd.cuh     the bf16 backward's tile kernels
 */
#ifndef MAMBA2_SSD_CUH
#define MAMBA2_SSD_CUH

#include <stdint.h>
#include "cuda_common.h"

#define SSD_TILE 32        /* chunk rows per tile of the simple kernels */
#define SSD_THREADS 256    /* threads of the simple kernels: 8 warps */
#define SSD_MAXD 128       /* largest P and N: the per-thread views of a tile (SSD_ROW/SSD_COL) span 128 columns */

/* ------------------------------------------------------------------------------------------------------------ */
/* sizes and the layout of the saved and workspace buffers */

__host__ __device__ static inline int ssd_nchunks(int T, int Q) { return CEIL_DIV(T, Q); }

typedef struct {
    float* dt;      /* (B, H, T) softplus'd dt */
    float* cum;     /* (B, H, T) chunk-local inclusive cumsum of dt*A */
    float* states;  /* (B, nchunks, H, P, N) state entering each chunk */
    int* seg;       /* (B, T) with seq_idx: the segment start of each position (ssd_seg_kernel); NULL without */
} SSDSaved;

/* n floats rounded up to 16 bytes: every region of the saved buffer and of the backward's workspace is laid out with
   it, so each starts 16-byte aligned (the kernels read the states, bct and the partials with 16-byte loads; B*H*T
   need not be a multiple of 4: a packed batch of 19 tokens) */
static inline size_t ssd_region_floats(size_t n) { return CEIL_DIV(n, (size_t)4) * 4; }
static inline size_t ssd_saved_bytes(int B, int T, int H, int P, int N, int Q) {
    return (2 * ssd_region_floats((size_t)B * H * T) +
            ssd_region_floats((size_t)B * ssd_nchunks(T, Q) * H * P * N)) * sizeof(float) +
           (size_t)B * T * sizeof(int);
}
/* seg points at its region always; the dispatch sets it to NULL where seq_idx is NULL */
static inline SSDSaved ssd_saved_layout(void* saved, int B, int T, int H, int P, int N, int Q) {
    SSDSaved s;
    s.dt = (float*)saved;
    s.cum = s.dt + ssd_region_floats((size_t)B * H * T);
    s.states = s.cum + ssd_region_floats((size_t)B * H * T);
    s.seg = (int*)(s.states + ssd_region_floats((size_t)B * ssd_nchunks(T, Q) * H * P * N));
    return s;
}

typedef struct {
    float* dstates;  /* (B, nchunks, H, P, N) first sum_i exp(cum_i) dy_i C_i^T, then dH_c */
    float* dotp;     /* (B, H, nchunks, nsplit) partial <dH_c, Hout_c> */
    float* dB_h;     /* (B, T, H, N) per-head dB (simple kernels); the tile kernels' bf16 head-group partials */
    float* dC_h;     /* (B, T, H, N) per-head dC (likewise) */
    float* roww;     /* (B, H, T) dy_i . ssd_i */
    float* xdxs;     /* (B, H, T) x_i . dxs_i */
    float* xdy;      /* (B, H, T) x_i . dy_i */
    float* xdxs_st;  /* (B, H, T) x_i . (state part of dxs_i) */
    float* colw;     /* (B, H, nchunks, ntile, Q) simple: column sums over one 32-row tile i of W[i, j] */
    float* part;     /* (3, B, H, nchunks) per-chunk partials of d_dt_bias, d_A_log, d_D */
    float* bct;      /* (B, nchunks, G, Q, Q) tile kernels: [j][i] = B_j . C_i inside a chunk, for all heads of g */
} SSDWork;

static inline int ssd_nsplit(int P, int N) { return CEIL_DIV(P * N, SSD_THREADS); }
/* ------------------------------------------------------------------------------------------------------------ */
/* device helpers */

__device__ static inline float ssd_softplus(float v) { return v > 20.f ? v : log1pf(expf(v)); }
__device__ static inline float ssd_sigmoid(float v) { return 1.f / (1.f + expf(-v)); }

/* index of the state (P,N) block of (b, chunk c, head h) in a (B, nchunks, H, P, N) buffer */
__device__ static inline size_t ssd_state_off(int b, int c, int h, int nch, int H, int PN) {
    return (((size_t)b * nch + c) * H + h) * PN;
}

/* which kernels a call ran (ssd_forward fills state and fwd_scan, ssd_backward state and bwd_tiles; the other is 0):
   dev/cuda/ssd.cu checks that each shape took the path the rules of the dispatch give it */
enum { SSD_STATE_SIMPLE = 1, SSD_STATE_CHUNKS, SSD_STATE_FUSED };  /* simple / chunk-parallel tile / fused scan */
enum { SSD_FWD_SIMPLE = 1, SSD_FWD_MMA, SSD_FWD_WGMMA, SSD_FWD_WGMMA_PAIR };
enum { SSD_BWD_SIMPLE = 1, SSD_BWD_TILES, SSD_BWD_TILES_TUNED };
typedef struct {
    int state;      /* SSD_STATE_*: how the chunk states (forward) or dH_c (backward) were made */
    int fwd_scan;   /* SSD_FWD_*: the forward scan (0 in a backward's) */
    int bwd_tiles;  /* SSD_BWD_*: the backward's dx, dB, dC kernels (0 in a forward's) */
} SSDPath;


/* ------------------------------------------------------------------------------------------------------------ */
/* the kernels every path runs */

/* dt = softplus(dt_raw + dt_bias), cum = chunk-local inclusive cumsum of dt*A. One warp per (chunk, b*H+h). */
__global__ static void ssd_dt_cumsum_kernel(float* dt_out, float* cum_out, const floatX* dt_raw, int dt_stride,
                                            const float* dt_bias, const float* A_log, int T, int H, int Q) {
    int c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, lane = threadIdx.x;
    int t0 = c * Q, len = min(Q, T - t0);
    float A = -expf(A_log[h]), bias = dt_bias[h], carry = 0.f;
    for (int base = 0; base < len; base += 32) {
        int i = base + lane;
        float dt = 0.f;
        if (i < len) dt = ssd_softplus(toF(dt_raw[(size_t)(b * T + t0 + i) * dt_stride + h]) + bias);
        float v = dt * A;
        for (int o = 1; o < 32; o <<= 1) {
            float u = __shfl_up_sync(0xffffffffu, v, o);
            if (lane >= o) v += u;
        }
        v += carry;
        if (i < len) {
            dt_out[(size_t)bh * T + t0 + i] = dt;
            cum_out[(size_t)bh * T + t0 + i] = v;
        }
        carry = __shfl_sync(0xffffffffu, v, 31);
    }
}


/* Document boundaries (seq_idx, doc/packing.md section 2): a boundary between t-1 and t where seq_idx differs; the
   recurrence restarts there (a decay of exp(-inf) = 0). In the chunk form each term is kept unchanged or dropped,
   and every kernel decides which with one integer per position, made here once per forward:
     seg[b, t] = the chunk-local index of the last boundary at or before t inside t's chunk (t's document starts
                 there), or -1 when t's document is the one open at the chunk's start (no boundary in t0..t; for the
                 first chunk: the row's first document, the one the initial state reaches).
   With s_i = seg of chunk-local row i and s_last = that of the chunk's last row:
     intra-chunk pair (i, j), j <= i        kept iff j >= s_i
     entering state reaches row i           iff s_i < 0
     input j enters the state leaving       iff j >= s_last
     the entering state survives the chunk  iff s_last < 0
   Dropped terms are exact zeros (a select, never exp of a large negative number), kept terms are computed as without
   boundaries, so seq_idx NULL (seg NULL) runs the same arithmetic as before. seq_idx must be non-decreasing in each
   row (as the CPU reference requires): then "no boundary between j and i" and "same document" are the same test.
   One warp per (chunk, b): a running max-scan of the boundary positions. */
__global__ static void ssd_seg_kernel(int* seg, const int* seq_idx, int T, int Q) {
    int c = blockIdx.x, b = blockIdx.y, lane = threadIdx.x;
    int t0 = c * Q, len = min(Q, T - t0);
    const int* sq = seq_idx + (size_t)b * T;
    int carry = -1;
    for (int base = 0; base < len; base += 32) {
        int i = base + lane, t = t0 + i;
        int v = i < len && t > 0 && sq[t] != sq[t - 1] ? i : -1;
        for (int o = 1; o < 32; o <<= 1) {
            int u = __shfl_up_sync(0xffffffffu, v, o);
            if (lane >= o) v = max(v, u);
        }
        v = max(v, carry);
        if (i < len) seg[(size_t)b * T + t] = v;
        carry = __shfl_sync(0xffffffffu, v, 31);
    }
}

/* The same rules seen from a column j (the backward's dxdb kernel holds rows j and loops over columns i):
     doc_end_j = the chunk-local index of the first boundary after j in j's chunk, or len (the chunk's length) if none
   (j's document ends before it). For i >= j: the pair (i, j) is kept iff i < doc_end_j (no boundary in j+1..i), and
   row j enters the state leaving the chunk iff doc_end_j == len. A boundary at p is seg[p] == p. For the two rows of
   this lane (chunk-local; rows past the chunk's end get len), by the warp's ballots over the positions from..len - 1,
   32 at a time (from <= every row + 1; from, len uniform over the warp, every lane active): once per block, so the
   inner loops compare with the row's value instead of reading a column's seg per element. */
__device__ static inline void ssd_seg_doc_end(int doc_end[2], const int* segc, const int rows[2], int from, int len) {
    int lane = threadIdx.x % 32;
    doc_end[0] = doc_end[1] = len;
    for (int base = from; base < len; base += 32) {
        int p = base + lane;
        unsigned bnd = __ballot_sync(0xffffffffu, p < len && segc[p] == p);  /* bit k: a boundary at base + k */
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int k = rows[r] + 1 - base;  /* bits k.. are positions after the row */
            unsigned after = k <= 0 ? bnd : k >= 32 ? 0u : bnd & (0xffffffffu << k);
            if (after && doc_end[r] == len) doc_end[r] = base + __ffs(after) - 1;
        }
    }
}

/* d_dt_bias[h], d_A_log[h], d_D[h] += the sums of their partials over (b, chunk), in order. One thread per (h, which). */
__global__ static void ssd_bwd_param_sum_kernel(float* d_dt_bias, float* d_A_log, float* d_D, const float* part,
                                                int B, int H, int nch) {
    int h = blockIdx.x * blockDim.x + threadIdx.x;
    if (h >= 3 * H) return;
    int which = h / H;
    h = h % H;
    size_t nbhc = (size_t)B * H * nch;
    float s = 0.f;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < nch; c++) s += part[which * nbhc + ((size_t)(b * H + h)) * nch + c];
    float* out = which == 0 ? d_dt_bias : which == 1 ? d_A_log : d_D;
    out[h] += s;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* host side: the shape check and the tile kernels' layout rule (used by the launchers of the files included below) */


static void ssd_check_shapes(int B, int T, int H, int P, int N, int G, int Q) {
    if (B < 1 || T < 1 || H < 1 || G < 1 || H % G != 0 || P < 1 || P > SSD_MAXD || N < 1 || N > SSD_MAXD ||
        Q < 16 || Q > 256) {
        fprintf(stderr,
                "ssd: unsupported shape B=%d T=%d H=%d P=%d N=%d G=%d Q=%d: need B,T >= 1, G dividing H, "
                "1 <= P,N <= %d and 16 <= Q <= 256\n", B, T, H, P, N, G, Q, SSD_MAXD);
        exit(EXIT_FAILURE);
    }
}

/* every SSD launcher sets its kernel's dynamic shared memory here: more than cuda_smem_optin() (the GPU's opt-in
   limit, or MAMBA2_SMEM_LIMIT's) is refused with the numbers; the dispatch rules (*_fits) keep the default path
   under it on every supported GPU (doc/gpus.md) */
static void ssd_set_smem(const void* kernel, size_t bytes) { cuda_set_smem(kernel, bytes, "ssd"); }
static inline int ssd_smem_fits(size_t bytes) { return bytes <= (size_t)cuda_smem_optin(); }

/* The tile kernels (ssd_tile.cuh and the files after it) run in the bf16 build where P and N are multiples of 16
   and the rows they read with 16-byte loads are 16-byte aligned; the fp32 build and other shapes run the simple
   kernels (ssd_simple.cuh) */
static int ssd_tiles_take(const void* xbc, int xbc_stride, const void* dy, int H, int P, int N) {
#if defined(ENABLE_FP32)
    (void)xbc; (void)xbc_stride; (void)dy; (void)H; (void)P; (void)N;
    return 0;
#else
    return P % 16 == 0 && N % 16 == 0 && xbc_stride % 8 == 0 && (H * P) % 8 == 0 && (uintptr_t)xbc % 16 == 0 &&
           (uintptr_t)dy % 16 == 0;
#endif
}

/* ------------------------------------------------------------------------------------------------------------ */
#include "ssd_tile.cuh"    /* bf16 tile primitives */
#include "ssd_simple.cuh"  /* the simple kernels (fp32 build, fallback) */
#include "ssd_state.cuh"   /* chunk states, state passes, fused state scans */
#include "ssd_fwd.cuh"     /* forward scans: wgmma, mma.sync */
#include "ssd_bwd.cuh"     /* backward tile kernels */

/* ------------------------------------------------------------------------------------------------------------ */
/* the backward's workspace, sized by the path that runs */

/* Which kernels make the backward's dx, dB, dC: SSD_BWD_TILES (the row-tile kernels of ssd_bwd.cuh, either form) or
   SSD_BWD_SIMPLE, for a shape on a GPU whose blocks may opt in to smem_optin bytes of shared memory. The one decision
   that both ssd_workspace_bytes (the memory plan, which may run with an assumed smem_optin and no GPU) and
   ssd_backward (with cuda_smem_optin()) take, so the workspace is always the one the launch lays out. It assumes
   rows laid out as xbc = (x | B | C) of stride E + 2GN from 16-byte aligned buffers (cudaMalloc's, and every layer
   slice of the model's): ssd_backward refuses other pointers where this says tiles. */
static int ssd_bwd_kernels(int H, int P, int N, int smem_optin) {
#if defined(ENABLE_FP32)
    (void)H; (void)P; (void)N; (void)smem_optin;
    return SSD_BWD_SIMPLE;
#else
    int layout = P % 16 == 0 && N % 16 == 0 && (H * P) % 8 == 0;  /* ssd_tiles_take's shape part */
    return layout && ssd_bwd_tiles_fit_in(P, N, smem_optin) ? SSD_BWD_TILES : SSD_BWD_SIMPLE;
#endif
}

/* floats of the dB_h and the dC_h regions (each): the simple kernels' per-head fp32 copies (B, T, H, N); on the tile
   path nothing where a block holds all heads of a group (dB, dC go straight into dxbc), else the bf16 head-group
   partials (B*T, nhg, N) (ssd_launch_bwd_tiles_s) */
static inline size_t ssd_dbc_region_floats(int bwd, int B, int T, int H, int N, int G) {
    size_t BT = (size_t)B * T;
    if (bwd == SSD_BWD_SIMPLE) return BT * H * N;
#if defined(ENABLE_FP32)
    (void)G;
    return BT * H * N;
#else
    int hg = ssd_bwd_heads_per_block(H, G), nhg = H / hg;
    if (hg == H / G) return 0;
    return CEIL_DIV(BT * nhg * N * sizeof(floatX), sizeof(float));
#endif
}
/* floats of the colw region per (b, h, chunk): the simple kernels' per-32-row-tile column sums (ceil(Q/32) x Q), or the
   tile kernels' full column sums (Q, as (B, H, T) at the region's start) and per-64-row-tile row sums (ceil(Q/64) x Q,
   after the B*H*nchunks*Q floats of the first) */
static inline size_t ssd_colw_path_len(int bwd, int Q) {
    return bwd == SSD_BWD_SIMPLE ? (size_t)CEIL_DIV(Q, SSD_TILE) * Q : (size_t)(1 + CEIL_DIV(Q, 64)) * Q;
}

/* the regions of SSDWork in order, in floats, each rounded up to 16 bytes so that every region starts 16-byte aligned
   (the tuned kernels take bct and the states only so); bwd = ssd_bwd_kernels(...) */
static inline size_t ssd_work_region_floats_exact(int region, int bwd, int B, int T, int H, int P, int N, int G,
                                                  int Q) {
    size_t nch = ssd_nchunks(T, Q), BH = (size_t)B * H;
    switch (region) {
    case 0: return (size_t)B * nch * H * P * N;                              /* dstates */
    case 1: return BH * nch * ssd_nsplit(P, N);                             /* dotp */
    case 2: case 3: return ssd_dbc_region_floats(bwd, B, T, H, N, G);       /* dB_h, dC_h */
    case 4: case 5: case 6: case 7: return BH * T;                          /* roww, xdxs, xdy, xdxs_st */
    case 8: return BH * nch * ssd_colw_path_len(bwd, Q);                    /* colw */
    case 9: return 3 * BH * nch;                                            /* part */
    case 10: return bwd == SSD_BWD_SIMPLE ? 0 : (size_t)B * nch * G * Q * Q; /* bct: the tile kernels only */
    }
    return 0;
}
static inline size_t ssd_work_region_floats(int region, int bwd, int B, int T, int H, int P, int N, int G, int Q) {
    return ssd_region_floats(ssd_work_region_floats_exact(region, bwd, B, T, H, P, N, G, Q));
}
#define SSD_WORK_REGIONS 11

/* the workspace of a backward on a GPU whose blocks may opt in to smem_optin bytes of shared memory (the plan) */
static inline size_t ssd_workspace_bytes_smem(int B, int T, int H, int P, int N, int G, int Q, int smem_optin) {
    int bwd = ssd_bwd_kernels(H, P, N, smem_optin);
    size_t n = 0;
    for (int r = 0; r < SSD_WORK_REGIONS; r++) n += ssd_work_region_floats(r, bwd, B, T, H, P, N, G, Q);
    return n * sizeof(float);
}
/* the workspace ssd_backward needs on this GPU */
static inline size_t ssd_workspace_bytes(int B, int T, int H, int P, int N, int G, int Q) {
    return ssd_workspace_bytes_smem(B, T, H, P, N, G, Q, cuda_smem_optin());
}
static inline SSDWork ssd_work_layout(void* ws, int bwd, int B, int T, int H, int P, int N, int G, int Q) {
    float* r[SSD_WORK_REGIONS];
    r[0] = (float*)ws;
    for (int k = 1; k < SSD_WORK_REGIONS; k++)
        r[k] = r[k - 1] + ssd_work_region_floats(k - 1, bwd, B, T, H, P, N, G, Q);
    SSDWork w;
    w.dstates = r[0]; w.dotp = r[1]; w.dB_h = r[2]; w.dC_h = r[3]; w.roww = r[4]; w.xdxs = r[5]; w.xdy = r[6];
    w.xdxs_st = r[7]; w.colw = r[8]; w.part = r[9]; w.bct = r[10];
    return w;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* dispatch */

/* forward: y (BT, E) floatX = SSD(...) + D[h] x. See the top of this file for `saved`. init_state (B, H, P, N) fp32
   or NULL (zeros); seq_idx (B, T) device ints or NULL: each position's document, non-decreasing in each row (see
   ssd_seg_kernel); the initial state then reaches only the row's first document. */
static SSDPath ssd_forward(floatX* y, float* final_state, void* saved, const floatX* xbc, int xbc_stride,
                           const floatX* dt_raw, int dt_stride, const float* dt_bias, const float* A_log,
                           const float* Dskip, const float* init_state, const int* seq_idx, int B, int T, int H,
                           int P, int N, int G, int Q, cudaStream_t stream) {
    ssd_check_shapes(B, T, H, P, N, G, Q);
    SSDSaved s = ssd_saved_layout(saved, B, T, H, P, N, Q);
    SSDPath path = {0, 0, 0};
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE), E = H * P, PN = P * N;
    int tiles = ssd_tiles_take(xbc, xbc_stride, y, H, P, N);
    ssd_dt_cumsum_kernel<<<dim3(nch, B * H), 32, 0, stream>>>(s.dt, s.cum, dt_raw, dt_stride, dt_bias, A_log, T, H,
                                                              Q);
    cudaCheckLast();
    if (seq_idx) {  /* the segment starts, saved for the backward */
        ssd_seg_kernel<<<dim3(nch, B), 32, 0, stream>>>(s.seg, seq_idx, T, Q);
        cudaCheckLast();
    } else {
        s.seg = NULL;
    }
    /* the states entering each chunk (and the final state) */
#if !defined(ENABLE_FP32)
    if (tiles && ssd_state_scan_takes(B, H, P, N, Q, s.states, final_state, init_state)) {
        ssd_launch_state_scan<0>(s.states, final_state, init_state, NULL, NULL, xbc, xbc_stride, xbc, xbc_stride, E, s,
                                 B, T, H, P, N, G, Q, stream);
        path.state = SSD_STATE_FUSED;
    } else if (tiles && ssd_smem_fits(ssd_smem_chunk_state())) {
        ssd_launch_chunk_state(s.states, xbc, xbc_stride, xbc, xbc_stride, E, s, 0, B, T, H, P, N, G, Q, stream);
        path.state = SSD_STATE_CHUNKS;
    }
#endif
    if (!path.state) {
        dim3 og(nch, B * H, CEIL_DIV(P, 64) * CEIL_DIV(N, 64));
        ssd_simple_chunk_state_kernel<<<og, SSD_THREADS, 0, stream>>>(s.states, xbc, xbc_stride, xbc, xbc_stride, E,
                                                                      s.dt, s.cum, s.seg, 0, T, H, P, N, G, Q);
        cudaCheckLast();
        path.state = SSD_STATE_SIMPLE;
    }
    if (path.state != SSD_STATE_FUSED) {
        ssd_launch_state_pass(s.states, final_state, init_state, s.cum, s.seg, B, T, H, PN, Q, stream);
    }
    /* y */
#if !defined(ENABLE_FP32)
    if (tiles && ssd_fwd_wgmma_takes(H, P, N, G, Q, s.states)) {
        path.fwd_scan = ssd_launch_fwd_wgmma(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
        return path;
    }
    if (tiles && ssd_smem_fits(ssd_smem_fwd_mma(P, N))) {
        ssd_launch_fwd_mma(y, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q, stream);
        path.fwd_scan = SSD_FWD_MMA;
        return path;
    }
#endif
    size_t smem = ssd_simple_smem_bytes(P, N, 2, 2);  /* Cs, Bs | Xs, Acc */
    ssd_set_smem((const void*)ssd_simple_fwd_scan_kernel, smem);
    ssd_simple_fwd_scan_kernel<<<dim3(nch * ntile, B * H), SSD_THREADS, smem, stream>>>(
        y, xbc, xbc_stride, s.dt, s.cum, s.seg, s.states, Dskip, T, H, P, N, G, Q);
    cudaCheckLast();
    path.fwd_scan = SSD_FWD_SIMPLE;
    return path;
}

/* backward: see the top of this file. `saved` is the forward's, which ran with the same init_state and seq_idx:
   init_state matters only through it (the states it produced: states[0] = init_state, read as Hprev_0 by the dC
   kernels and so in dy.ssd of the rows it reaches, and Hout_0 = states[1] in <dH_0, Hout_0>; both reach ddt and
   dA_log through dcum on every path), and seq_idx only through its segment starts (saved.seg; seq_idx NULL or not
   says whether to use them). d_init_state (B, H, P, N) fp32, or NULL: written (not accumulated) with
   dL/d(init_state) = dH_{-1} = exp(cum_last_0) dH_0 + sum_i exp(cum_i) dy_i C_i^T over chunk 0 (masked as the
   forward), the state pass's one step past chunk 0. */
static SSDPath ssd_backward(floatX* dxbc, floatX* ddt_raw, float* d_dt_bias, float* d_A_log, float* d_D,
                            float* d_init_state, const floatX* dy, const void* saved, const floatX* xbc,
                            int xbc_stride, const floatX* dt_raw, int dt_stride, const float* dt_bias,
                            const float* A_log, const float* Dskip, const float* init_state, const int* seq_idx,
                            void* workspace, int B, int T, int H, int P, int N, int G, int Q, cudaStream_t stream) {
    (void)init_state;
    ssd_check_shapes(B, T, H, P, N, G, Q);
    SSDSaved s = ssd_saved_layout((void*)saved, B, T, H, P, N, Q);
    if (!seq_idx) s.seg = NULL;
    int bwd = ssd_bwd_kernels(H, P, N, cuda_smem_optin());  /* the path ssd_workspace_bytes sized the workspace for */
    if ((uintptr_t)workspace % 16 != 0) {  /* its regions then start 16-byte aligned (ssd_work_layout) */
        fprintf(stderr, "ssd_backward: the workspace %p is not 16-byte aligned: pass a cudaMalloc'd buffer\n",
                workspace);
        exit(EXIT_FAILURE);
    }
    SSDWork w = ssd_work_layout(workspace, bwd, B, T, H, P, N, G, Q);
    SSDPath path = {0, 0, 0};
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE), E = H * P, PN = P * N, nsplit = ssd_nsplit(P, N);
    int tiles = ssd_tiles_take(xbc, xbc_stride, dy, H, P, N) && (uintptr_t)dxbc % 16 == 0;
    if (bwd == SSD_BWD_TILES && !tiles) {
        fprintf(stderr, "ssd_backward: the tile kernels need 16-byte aligned rows (xbc %p, row stride %d elements, dy "
                "%p, dxbc %p) and the workspace (ssd_workspace_bytes) is sized for them: pass rows of stride E + 2GN "
                "from cudaMalloc'd buffers\n", (const void*)xbc, xbc_stride, (const void*)dy, (const void*)dxbc);
        exit(EXIT_FAILURE);
    }
    /* dH_c of every chunk and the partials of <dH_c, Hout_c> */
#if !defined(ENABLE_FP32)
    if (tiles && ssd_state_scan_takes(B, H, P, N, Q, s.states, w.dstates, d_init_state)) {
        ssd_launch_state_scan<1>(w.dstates, d_init_state, NULL, w.dotp, s.states, dy, E, xbc, xbc_stride, E + G * N, s,
                                 B, T, H, P, N, G, Q, stream);
        nsplit = ssd_state_scan_nsplit(P, N);  /* the fused scan's dotp has one entry per warp and slice */
        path.state = SSD_STATE_FUSED;
    } else if (tiles && ssd_smem_fits(ssd_smem_chunk_state())) {
        ssd_launch_chunk_state(w.dstates, dy, E, xbc, xbc_stride, E + G * N, s, 1, B, T, H, P, N, G, Q, stream);
        path.state = SSD_STATE_CHUNKS;
    }
#endif
    if (!path.state) {
        dim3 og(nch, B * H, CEIL_DIV(P, 64) * CEIL_DIV(N, 64));
        ssd_simple_chunk_state_kernel<<<og, SSD_THREADS, 0, stream>>>(w.dstates, dy, E, xbc, xbc_stride, E + G * N,
                                                                      s.dt, s.cum, s.seg, 1, T, H, P, N, G, Q);
        cudaCheckLast();
        path.state = SSD_STATE_SIMPLE;
    }
    if (path.state != SSD_STATE_FUSED) {
        ssd_launch_dstate_pass(w.dstates, w.dotp, d_init_state, s.states, s.cum, s.seg, B, T, H, PN, Q, nsplit, stream);
    }
    /* dx, dB, dC, ddt_raw and the per-chunk parameter partials */
#if !defined(ENABLE_FP32)
    if (bwd == SSD_BWD_TILES) {
        float* colf = w.colw;                                   /* (B, H, T) */
        float* rowp = w.colw + (size_t)B * H * nch * Q;         /* (B, H, nchunks, ceil(Q/64), Q) */
        path.bwd_tiles = ssd_launch_bwd_tiles(dxbc, w, colf, rowp, dy, xbc, xbc_stride, s, Dskip, B, T, H, P, N, G, Q,
                                              stream);
        ssd_bwd_dt_kernel<<<dim3(nch, B * H), 32, 0, stream>>>(ddt_raw, dt_stride, w.part, s.dt, s.cum, w.roww, rowp,
                                                               colf, w.xdxs, w.xdxs_st, w.xdy, w.dotp, nsplit, dt_raw,
                                                               dt_bias, A_log, B, T, H, Q);
        cudaCheckLast();
    }
#endif
    if (!path.bwd_tiles) {
        size_t smem = ssd_simple_smem_bytes(P, N, 3, 3);  /* Bs, Cs, AB | Xs, Ys, AX */
        if (!ssd_smem_fits(smem)) {
            fprintf(stderr, "ssd_backward: headdim P = %d with d_state N = %d needs %zu bytes of shared memory per block "
                    "in the backward (%s build); this GPU allows %d: train with headdim 64 (every preset) or d_state "
                    "<= 64 here, or on a GPU with more (A100, H100, B200: doc/gpus.md)\n", P, N, smem, PRECISION_NAME,
                    cuda_smem_optin());
            exit(EXIT_FAILURE);
        }
        ssd_set_smem((const void*)ssd_simple_bwd_dxdb_kernel, smem);
        ssd_simple_bwd_dxdb_kernel<<<dim3(nch * ntile, B * H), SSD_THREADS, smem, stream>>>(
            dxbc, w.dB_h, w.xdxs, w.xdxs_st, w.xdy, dy, xbc, xbc_stride, s.dt, s.cum, s.seg, w.dstates, Dskip, T, H, P,
            N, G, Q);
        cudaCheckLast();
        smem = ssd_simple_smem_bytes(P, N, 3, 2);  /* Cs, Bs, Acc | Ys, Xs */
        ssd_set_smem((const void*)ssd_simple_bwd_dc_kernel, smem);
        ssd_simple_bwd_dc_kernel<<<dim3(nch * ntile, B * H), SSD_THREADS, smem, stream>>>(
            w.dC_h, w.roww, w.colw, dy, xbc, xbc_stride, s.dt, s.cum, s.seg, s.states, T, H, P, N, G, Q);
        cudaCheckLast();
        ssd_simple_bwd_dt_kernel<<<dim3(nch, B * H), 32, 0, stream>>>(ddt_raw, dt_stride, w.part, s.dt, s.cum, w.roww,
                                                                      w.xdxs, w.xdxs_st, w.colw, w.xdy, w.dotp, nsplit,
                                                                      dt_raw, dt_bias, A_log, B, T, H, Q);
        cudaCheckLast();
    }
    ssd_bwd_param_sum_kernel<<<CEIL_DIV(3 * H, 64), 64, 0, stream>>>(d_dt_bias, d_A_log, d_D, w.part, B, H, nch);
    cudaCheckLast();
    if (!path.bwd_tiles) {  /* the tile kernels summed dB, dC over the heads themselves */
        size_t ngs = (size_t)B * T * G * N;
        ssd_simple_group_sum_kernel<<<(unsigned)CEIL_DIV(ngs, (size_t)256), 256, 0, stream>>>(
            dxbc, xbc_stride, w.dB_h, w.dC_h, B * T, H, P, N, G);
        cudaCheckLast();
        path.bwd_tiles = SSD_BWD_SIMPLE;
    }
    return path;
}

#endif
