/*
 * ssd.cu: development program of the SSD chunked scan (llmc/ssd.cuh), forward and backward.
 *
 * Checks (each prints its errors; the program ends with "N passed, N failed"):
 *   - small shapes (partial last chunk, G = 1 and 2, P != N, nonzero or absent initial state): every output of
 *     forward (y, final state) and backward (dx, dB, dC in dxbc; ddt_raw; the += into d_dt_bias, d_A_log, d_D)
 *     against the sequential recurrence of SPEC.md sections 3-4 in double; outputs poisoned first; the columns of
 *     the dt-gradient buffer that are not ssd's stay untouched; backward twice gives bitwise the same results;
 *     each tolerance is shown to reject a perturbed copy.
 *   - llmc also writes and checks d_init_state (dL/d(initial state)) on every small shape, and runs six shapes with
 *     packed documents (seq_idx, make_docs), one per kernel path: every output above and d_init_state against the
 *     recurrence with a restart at each boundary, determinism, the path taken, and that the reference without
 *     documents differs from it by > 5 x the tolerance (a kernel that ignored a mask would fail). At each benchmark
 *     shape llmc reruns the same inputs with about one boundary per 512 positions (checked slices, timings).
 *   - the benchmark shapes (H=24, P=64, N=128, G=1, Q=256; B=8,T=2048 ; B=1,T=8192 ; B=1,T=32768): forward on
 *     two (b, h) slices against the recurrence; at B=8, T=2048 the backward of batch element 0 (all heads) too;
 *     then timings of forward and forward+backward against the floor, and cost per token against T.
 *
 * Versions (timings in NOTES_ssd.md). Versions 2 to 11 are the lab: dev/cuda/ssd_lab*.cuh, a frozen copy of the
 * llmc/ssd*.cuh that held all of them (knobs, run counters, version ladder), compiled here inside namespace lab;
 * where the list below says llmc/ssd.cuh for them, that copy is meant. "llmc" (or "default") is llmc/ssd.cuh as the
 * trainers run it (its default path alone, at every shape): its checks are those of every version, plus the
 * kernels it ran (the SSDPath its ssd_forward / ssd_backward return) against the ones its rules give the shape, and
 * every output bitwise that of lab version 11 (bf16 build; version 2 in the fp32 build) run with the lab's default
 * knobs on the same inputs. MAMBA2_PORTABLE=1 makes llmc take its portable forward scan (mma.sync) on an H100.
 *   1  fp32 CUDA-core tiles (namespace v1 below): one block per 32 rows of a (b, h, chunk); the 32x32 products
 *      C B^T and dy x^T as per-thread dot products, accumulations in per-thread register tiles.
 *   2  llmc/ssd.cuh: the same decomposition, every 32-row product (C B^T, dy x^T, the masked Q x Q times x / dy /
 *      B / C, the state terms) on the tensor cores (mma.sync m16n8k16, bf16 operands, fp32 accumulators kept in
 *      shared memory). With -DENABLE_FP32 the same kernels use fp32 dot products instead.
 *   3  llmc/ssd.cuh's default in the bf16 build: 64-row tiles, bf16 operands in shared memory (cp.async, double
 *      buffered) read with ldmatrix, accumulators in registers, the Q x Q score tiles repacked in registers as the
 *      next product's operand, tensor-core chunk states; one backward kernel per 64 "column" rows j (dx, dB and
 *      both sums of W) and one per 64 rows i (dC). In the fp32 build, and for shapes outside its layout rules
 *      (P or N not a multiple of 16, unaligned rows), llmc/ssd.cuh runs version 2: "3" then measures version 2.
 *   4  llmc/ssd.cuh's default: version 3 with the heads of a group looped inside the two backward row-tile kernels
 *      (up to 4 heads per block; dB, dC summed over them in registers, so 1/4 of the per-head partials, or none
 *      and no group-sum pass where a group has <= 4 heads), and 64 x 128 chunk-state tiles. fp32 build: version 2.
 *   5  version 4 with the forward chunk scan on Hopper's wgmma (ssd5_scan_fwd_kernel, sm_90a): one warpgroup per
 *      64 rows, C B^T from shared-memory descriptors, the score tile repacked in registers as the A operand of the
 *      product with x. P and N in {64, 128} (the small shapes below include each pair); other shapes, and the fp32
 *      build, run version 4 (fp32: version 2). dev/cuda/wgmma_check.cu tests the wgmma wrappers alone.
 *   6  version 5 with two heads of a group per forward block (ssd6_scan_fwd_kernel: the
 *      C_i / B_j tiles loaded once and S = C_i B_j^T computed once for both heads, each head's decay and dt applied
 *      in registers). P = 64 and H/G even (the small shapes with P = 64, N = 64 / 128 and the benchmarks); other
 *      shapes run version 5. "parts=K" (bits: 1 the 2-head forward, 2 the chunk-state kernel on wgmma, 4 the dC
 *      kernel on wgmma; default 1) also runs the two wgmma ports that measured slower than version 4's kernels.
 *   7  version 6 with the chunk-state products and the state pass over chunks fused, one kernel per direction
 *      (ssd7_state_scan_kernel: one block per (b, h, 64 x NS slice of the state) runs over the sequence in 64-row
 *      tiles with the running state in registers; no per-chunk S_c in global memory). P % 64 == 0, Q % 64 == 0;
 *      "fuse=K": 0 never (= version 6), 1 (default) where B H (P/64) (N/NS) >= the SM count, 2 wherever the shape
 *      allows; the small-shape checks run with fuse=1 raised to 2, so the fused kernels are what they check, and
 *      they check that the fused kernels ran where they should. "ns=32|64": state columns per block, "st=2|3":
 *      tile buffers, "split=0|1": the scaled x / dy operand split in hi + lo per warp in registers (0, the first
 *      form) or once per block in shared memory (1, default). Other shapes run version 6.
 *   8  version 7 with the backward row-tile kernels changed (ssd4_bwd_col_kernel /
 *      ssd4_bwd_dc_kernel with V8): the row tiles of a head-group adjacent in the grid (the second read of a state
 *      hits L2), each head's state loads issued together, and in the col kernel the B_j . C_i slab in shared memory
 *      once per block, the W row sums reduced per 32-column half, dy_j for the epilogue from shared memory.
 *      P, N in {64, 128}, Q in {64, 128}; other shapes run version 7. The small-shape checks check that the
 *      version 8 kernels ran on exactly the shapes they take (4 of the small shapes).
 *   9  llmc/ssd.cuh's default: version 8 with the per-score-element exp() factored on the off-diagonal tiles
 *      (exp(cum_i - cum_j) = exp(cum_i - cref) exp(cref - cum_j), cref = cum of the j tile's last row: both <= 0)
 *      in the forward scan (ssd6_scan_fwd_kernel with V9, which also reads cum_j / dt_j of a column pair in one
 *      16-byte shared load on the diagonal tile) and in the backward col kernel (V9). The forward where version 6's
 *      forward runs (P = 64, H/G even), the col kernel where version 8's runs; other shapes run version 8. The
 *      small-shape checks check that the version 9 kernels ran on exactly the shapes they take. "v9=K" (bits: 1 the
 *      forward scan, 2 the col kernel; default 3) runs only those parts.
 *  10  = version 9 (version 10, a dC kernel that summed the heads' score tiles before the B product, measured no
 *      faster and was removed: NOTES_ssd.md).
 *  11  version 9 with the forward scan's global loads all issued in its prologue (ssd6_scan_fwd_kernel with V11):
 *      every j tile's cum / dt factors built once into their own shared-memory slots (no global loads in the
 *      j-tile loop) and the fp32 Hprev read with all of a thread's 16-byte loads in flight before any conversion.
 *      Where version 9's forward scan runs; the same arithmetic, so the small-shape checks and the benchmark
 *      shapes also check that its y is bitwise version 9's (a version 9 forward on the same inputs), and that it
 *      ran on exactly the shapes it takes. "v11=0" runs version 9's forward scan under version 11.
 *
 * Build: nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -I. -o dev/cuda/ssd_bin dev/cuda/ssd.cu  (-DENABLE_FP32: fp32)
 * Run:   ./dev/cuda/ssd_bin [small] [hg=K] [wg=1|2] [lines=0|1] [parts=K] [fuse=K] [ns=K] [st=K] [v9=K] [v11=0|1] [Q=K] [1-11]
 *        [llmc]  (the knobs set the lab's versions; llmc has none)
 *        (small: small-shape checks only; numbers: those versions only; hg=K: version 4 with at most K heads per
 *        block; wg: version 5's warpgroups per forward block; lines: its tile-load thread order (ssd5_load_tile);
 *        parts: version 6's kernels; fuse, ns, st: version 7's (above); Q=K: the benchmark shapes' chunk
 *        length)
 *        ./dev/cuda/ssd_bin profile [Q=K] [1-11]  (one forward + backward at B=8, T=2048, nothing checked: for ncu)
 */
#include <math.h>
#include <string.h>
#include "llmc/cuda_common.h"

/* ============================================================================================================
 * version 1: fp32 CUDA-core tiles, kept here as the simpler baseline (it was llmc/ssd.cuh before version 2).
 * Same algorithm and buffers as llmc/ssd.cuh; the 32x32 products (C B^T, dy x^T) are per-thread dot products and
 * the accumulations per-thread register tiles. Namespace v1, so the names match llmc/ssd.cuh.
 * ============================================================================================================ */
namespace v1 {
#define SSD_TILE 32        /* chunk rows per tile */
#define SSD_THREADS 256    /* threads of the tile kernels: 8 warps */
#define SSD_MAXD 128       /* largest P and N the tile kernels hold in registers */

/* ------------------------------------------------------------------------------------------------------------ */
/* sizes and the layout of the saved and workspace buffers */

__host__ __device__ static inline int ssd_nchunks(int T, int Q) { return CEIL_DIV(T, Q); }

typedef struct {
    float* dt;      /* (B, H, T) softplus'd dt */
    float* cum;     /* (B, H, T) chunk-local inclusive cumsum of dt*A */
    float* states;  /* (B, nchunks, H, P, N) state entering each chunk */
} SSDSaved;

static inline size_t ssd_saved_bytes(int B, int T, int H, int P, int N, int Q) {
    return (2 * (size_t)B * H * T + (size_t)B * ssd_nchunks(T, Q) * H * P * N) * sizeof(float);
}
static inline SSDSaved ssd_saved_layout(void* saved, int B, int T, int H, int P, int N, int Q) {
    SSDSaved s;
    s.dt = (float*)saved;
    s.cum = s.dt + (size_t)B * H * T;
    s.states = s.cum + (size_t)B * H * T;
    (void)P; (void)N; (void)Q;
    return s;
}

typedef struct {
    float* dstates;  /* (B, nchunks, H, P, N) first sum_i exp(cum_i) dy_i C_i^T, then dH_c */
    float* dotp;     /* (B, H, nchunks, nsplit) partial <dH_c, Hout_c> */
    float* dB_h;     /* (B, T, H, N) per-head dB */
    float* dC_h;     /* (B, T, H, N) per-head dC */
    float* roww;     /* (B, H, T) dy_i . ssd_i */
    float* xdxs;     /* (B, H, T) x_i . dxs_i */
    float* xdy;      /* (B, H, T) x_i . dy_i */
    float* part;     /* (3, B, H, nchunks) per-chunk partials of d_dt_bias, d_A_log, d_D */
} SSDWork;

static inline int ssd_nsplit(int P, int N) { return CEIL_DIV(P * N, SSD_THREADS); }

static inline size_t ssd_workspace_bytes(int B, int T, int H, int P, int N, int G, int Q) {
    (void)G;
    size_t nch = ssd_nchunks(T, Q);
    size_t n = (size_t)B * nch * H * P * N + (size_t)B * H * nch * ssd_nsplit(P, N) + 2 * (size_t)B * T * H * N +
               3 * (size_t)B * H * T + 3 * (size_t)B * H * nch;
    return n * sizeof(float);
}
static inline SSDWork ssd_work_layout(void* ws, int B, int T, int H, int P, int N, int Q) {
    SSDWork w;
    size_t nch = ssd_nchunks(T, Q);
    w.dstates = (float*)ws;
    w.dotp = w.dstates + (size_t)B * nch * H * P * N;
    w.dB_h = w.dotp + (size_t)B * H * nch * ssd_nsplit(P, N);
    w.dC_h = w.dB_h + (size_t)B * T * H * N;
    w.roww = w.dC_h + (size_t)B * T * H * N;
    w.xdxs = w.roww + (size_t)B * H * T;
    w.xdy = w.xdxs + (size_t)B * H * T;
    w.part = w.xdy + (size_t)B * H * T;
    return w;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* device helpers */

__device__ static inline float ssd_softplus(float v) { return v > 20.f ? v : log1pf(expf(v)); }
__device__ static inline float ssd_sigmoid(float v) { return 1.f / (1.f + expf(-v)); }

/* index of the state (P,N) block of (b, chunk c, head h) in a (B, nchunks, H, P, N) buffer */
__device__ static inline size_t ssd_state_off(int b, int c, int h, int nch, int H, int PN) {
    return (((size_t)b * nch + c) * H + h) * PN;
}

/* load `rows` rows of `ncols` floatX columns starting at row r0 of a row-major matrix into shared memory with row
   stride ld (ncols + 1: the +1 keeps column walks across rows free of bank conflicts); rows past nvalid are 0 */
__device__ static inline void ssd_load_rows(float* dst, int ld, const floatX* src, size_t src_stride, int r0,
                                            int nvalid, int ncols) {
    for (int idx = threadIdx.x; idx < SSD_TILE * ncols; idx += blockDim.x) {
        int r = idx / ncols, col = idx % ncols;
        dst[r * ld + col] = (r0 + r < nvalid) ? toF(src[(size_t)(r0 + r) * src_stride + col]) : 0.f;
    }
}

/* the transposed 32-column slice [c0, c0+32) of a (R, Cn) float matrix: dst[cc * ld + r] = m[r, c0 + cc] */
__device__ static inline void ssd_load_cols_T(float* dst, int ld, const float* m, int R, int Cn, int c0) {
    for (int idx = threadIdx.x; idx < SSD_TILE * R; idx += blockDim.x) {
        int cc = idx % SSD_TILE, r = idx / SSD_TILE;
        dst[cc * ld + r] = (c0 + cc < Cn) ? m[(size_t)r * Cn + c0 + cc] : 0.f;
    }
}

/* the 32-row slice [r0, r0+32) of a (R, Cn) float matrix: dst[rr * ld + c] = m[r0 + rr, c] */
__device__ static inline void ssd_load_rows_F(float* dst, int ld, const float* m, int R, int Cn, int r0) {
    for (int idx = threadIdx.x; idx < SSD_TILE * Cn; idx += blockDim.x) {
        int rr = idx / Cn, c = idx % Cn;
        dst[rr * ld + c] = (r0 + rr < R) ? m[(size_t)(r0 + rr) * Cn + c] : 0.f;
    }
}

/* The accumulator layout of the tile kernels: a 32 x (<=128) output tile, thread t owns rows t/64 + 4k (k < 8)
   and columns t%64 + 64m (m < 2). acc[k][m] += sum_s a[row_k][s] * bm[s][col_m] over a 32-long s slice. */
#define SSD_ROW(k) ((int)(threadIdx.x / 64) + 4 * (k))
#define SSD_COL(m) ((int)(threadIdx.x % 64) + 64 * (m))

__device__ static inline void ssd_acc_tile(float acc[8][2], const float* a, int lda, int a_off, const float* bm,
                                           int ldb, int ncols, int slen) {
    for (int s = 0; s < slen; s++) {
        float bv[2];
#pragma unroll
        for (int m = 0; m < 2; m++) bv[m] = SSD_COL(m) < ncols ? bm[s * ldb + SSD_COL(m)] : 0.f;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            float av = a[SSD_ROW(k) * lda + a_off + s];
#pragma unroll
            for (int m = 0; m < 2; m++) acc[k][m] += av * bv[m];
        }
    }
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

/* ------------------------------------------------------------------------------------------------------------ */
/* forward kernels */

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

/* out[p, n] = sum_{j in chunk} U_j[p] w_j V_j[n] for one (chunk, b, h), a 64x64 tile of (P, N) per block.
   mode 0 (chunk state):      U = x, V = B, w_j = dt_j exp(cum_last - cum_j)
   mode 1 (backward dstate):  U = dy, V = C, w_j = exp(cum_j)
   U columns start at h*P of rows of stride u_stride; V columns at v_col0 + g*N of rows of stride v_stride. */
__global__ static void __launch_bounds__(SSD_THREADS)
ssd_chunk_outer_kernel(float* out, const floatX* U, int u_stride, const floatX* V, int v_stride, int v_col0,
                       const float* dt, const float* cum, int mode, int T, int H, int P, int N, int G, int Q) {
    __shared__ float Us[SSD_TILE][64], Vs[SSD_TILE][64], w_s[SSD_TILE];
    int nch = ssd_nchunks(T, Q), c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int ptiles = CEIL_DIV(P, 64), p0 = (blockIdx.z % ptiles) * 64, n0 = (blockIdx.z / ptiles) * 64;
    int t0 = c * Q, len = min(Q, T - t0);
    const float* dtc = dt + (size_t)bh * T + t0;
    const float* cumc = cum + (size_t)bh * T + t0;
    float cum_last = cumc[len - 1];
    const floatX* Ub = U + (size_t)b * T * u_stride + (size_t)t0 * u_stride + h * P + p0;
    const floatX* Vb = V + (size_t)b * T * v_stride + (size_t)t0 * v_stride + v_col0 + g * N + n0;
    int tn = threadIdx.x % 16, tp = threadIdx.x / 16;  /* n fastest: coalesced stores */
    float acc[4][4] = {{0.f}};
    for (int j0 = 0; j0 < len; j0 += SSD_TILE) {
        __syncthreads();
        if (threadIdx.x < SSD_TILE) {
            int j = j0 + threadIdx.x;
            float w = 0.f;
            if (j < len) w = mode == 0 ? dtc[j] * expf(cum_last - cumc[j]) : expf(cumc[j]);
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
   One thread per state element (p, n) of one (b, h). */
__global__ static void ssd_state_pass_kernel(float* states, float* final_state, const float* init_state,
                                             const float* cum, int T, int H, int PN, int Q) {
    int nch = ssd_nchunks(T, Q), bh = blockIdx.x, b = bh / H, h = bh % H;
    int e = blockIdx.y * blockDim.x + threadIdx.x;
    if (e >= PN) return;
    float run = init_state ? init_state[(size_t)bh * PN + e] : 0.f;
    for (int c = 0; c < nch; c++) {
        size_t idx = ssd_state_off(b, c, h, nch, H, PN) + e;
        float s = states[idx];
        states[idx] = run;
        int tl = min(T, (c + 1) * Q) - 1;
        run = expf(cum[(size_t)bh * T + tl]) * run + s;
    }
    if (final_state) final_state[(size_t)bh * PN + e] = run;
}

/* dynamic shared memory of the row-tile kernels: two (32, N+1), two (32, P+1), two (32, 33), small vectors */
static inline size_t ssd_tile_smem_bytes(int P, int N) {
    return (size_t)(2 * SSD_TILE * (N + 1) + 2 * SSD_TILE * (P + 1) + 2 * SSD_TILE * 33 + 4 * SSD_TILE + 64) *
           sizeof(float);
}

/* y for 32 rows i of one chunk of one (b, h): inter-chunk term first, then the masked intra-chunk product. */
__global__ static void __launch_bounds__(SSD_THREADS)
ssd_chunk_scan_fwd_kernel(floatX* y, const floatX* xbc, int xbc_stride, const float* dt, const float* cum,
                          const float* states, const float* Dskip, int T, int H, int P, int N, int G, int Q) {
    extern __shared__ float sm[];
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE);
    int c = blockIdx.x / ntile, rt = blockIdx.x % ntile, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD_TILE;
    if (i0 >= len) return;
    int E = H * P, ldn = N + 1, ldp = P + 1;
    float* Cs = sm;                        /* (32, N+1) C rows i */
    float* Bs = Cs + SSD_TILE * ldn;       /* (32, N+1) B rows j */
    float* Xs = Bs + SSD_TILE * ldn;       /* (32, P+1) x rows j, or a transposed slice of Hprev */
    float* Ms = Xs + SSD_TILE * ldp;       /* (32, 33) masked, decayed C B^T dt */
    float* cum_i = Ms + 2 * SSD_TILE * 33;
    float* cum_j = cum_i + SSD_TILE;
    float* dt_j = cum_j + SSD_TILE;
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    ssd_load_rows(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
    if (threadIdx.x < SSD_TILE) cum_i[threadIdx.x] = i0 + (int)threadIdx.x < len ? cumc[i0 + threadIdx.x] : 0.f;
    float acc[8][2] = {{0.f}};
    /* inter-chunk: y_i += exp(cum_i) sum_n C_i[n] Hprev[p, n] */
    const float* Hp = states + ssd_state_off(b, c, h, nch, H, P * N);
    for (int n0 = 0; n0 < N; n0 += SSD_TILE) {
        __syncthreads();
        ssd_load_cols_T(Xs, ldp, Hp, P, N, n0);
        __syncthreads();
        ssd_acc_tile(acc, Cs, ldn, n0, Xs, ldp, P, min(SSD_TILE, N - n0));
    }
#pragma unroll
    for (int k = 0; k < 8; k++) {
        float e = expf(cum_i[SSD_ROW(k)]);
        acc[k][0] *= e; acc[k][1] *= e;
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
        for (int q = 0; q < 4; q++) {
            int i = threadIdx.x % SSD_TILE, jj = threadIdx.x / SSD_TILE + 8 * q;
            float m = 0.f;
            if (j0 + jj <= i0 + i && i0 + i < len) {
                float d = 0.f;
                for (int n = 0; n < N; n++) d += Cs[i * ldn + n] * Bs[jj * ldn + n];
                m = d * expf(cum_i[i] - cum_j[jj]) * dt_j[jj];
            }
            Ms[i * 33 + jj] = m;
        }
        __syncthreads();
        ssd_acc_tile(acc, Ms, 33, 0, Xs, ldp, P, SSD_TILE);
    }
    float Dh = Dskip[h];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int i = i0 + SSD_ROW(k);
        if (i >= len) continue;
#pragma unroll
        for (int m = 0; m < 2; m++) {
            int p = SSD_COL(m);
            if (p < P) {
                float xv = toF(rows[(size_t)i * xbc_stride + h * P + p]);
                y[(size_t)(b * T + t0 + i) * E + h * P + p] = fromF(acc[k][m] + Dh * xv);
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* backward kernels */

/* Reverse state pass, in place: dstates[c] holds sum_i exp(cum_i) dy_i C_i^T on entry and dH_c on exit.
   Also writes this block's part of <dH_c, Hout_c> (Hout_c = Hprev_{c+1}) to dotp[(bh, c, blockIdx.y)]. */
__global__ static void __launch_bounds__(SSD_THREADS)
ssd_dstate_pass_kernel(float* dstates, float* dotp, const float* states, const float* cum, int T, int H, int PN,
                       int Q) {
    __shared__ float red[SSD_THREADS / 32];
    int nch = ssd_nchunks(T, Q), bh = blockIdx.x, b = bh / H, h = bh % H, nsplit = gridDim.y;
    int e = blockIdx.y * SSD_THREADS + threadIdx.x;
    float dH = 0.f;
    for (int c = nch - 1; c >= 0; c--) {
        size_t idx = ssd_state_off(b, c, h, nch, H, PN) + e;
        float sb = 0.f, v = 0.f;
        if (e < PN) {
            sb = dstates[idx];
            dstates[idx] = dH;
            if (c + 1 < nch) v = dH * states[ssd_state_off(b, c + 1, h, nch, H, PN) + e];
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
        dH = expf(cum[(size_t)bh * T + tl]) * dH + sb;
    }
}

/* For 32 rows j of one chunk of one (b, h): dx_j (written into dxbc), the per-head dB_j (float workspace),
   x_j.dxs_j and x_j.dy_j. State terms first (they need dH_c), then the intra-chunk sums over i >= j. */
__global__ static void __launch_bounds__(SSD_THREADS)
ssd_bwd_dx_db_kernel(floatX* dxbc, float* dB_h, float* xdxs, float* xdy, const floatX* dy, const floatX* xbc,
                     int xbc_stride, const float* dt, const float* cum, const float* dstates, const float* Dskip,
                     int T, int H, int P, int N, int G, int Q) {
    extern __shared__ float sm[];
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE);
    int c = blockIdx.x / ntile, rt = blockIdx.x % ntile, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), j0 = rt * SSD_TILE;
    if (j0 >= len) return;
    int E = H * P, ldn = N + 1, ldp = P + 1;
    float* Bs = sm;                       /* (32, N+1) B rows j */
    float* Cs = Bs + SSD_TILE * ldn;      /* (32, N+1) C rows i, or a row slice of dH */
    float* Xs = Cs + SSD_TILE * ldn;      /* (32, P+1) x rows j */
    float* Ys = Xs + SSD_TILE * ldp;      /* (32, P+1) dy rows i, or a transposed slice of dH */
    float* CBL = Ys + SSD_TILE * ldp;     /* (32, 33) [j][i] (C_i.B_j) exp(cum_i - cum_j) */
    float* WD = CBL + SSD_TILE * 33;      /* (32, 33) [j][i] (dy_i.x_j) exp(cum_i - cum_j) */
    float* cum_j = WD + SSD_TILE * 33;
    float* dt_j = cum_j + SSD_TILE;
    float* cum_i = dt_j + SSD_TILE;
    float* red = cum_i + SSD_TILE;        /* 64 floats */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* dyrows = dy + (size_t)(b * T + t0) * E + h * P;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    ssd_load_rows(Bs, ldn, rows + E + g * N, xbc_stride, j0, len, N);
    ssd_load_rows(Xs, ldp, rows + h * P, xbc_stride, j0, len, P);
    if (threadIdx.x < SSD_TILE) {
        int j = j0 + threadIdx.x;
        cum_j[threadIdx.x] = j < len ? cumc[j] : 0.f;
        dt_j[threadIdx.x] = j < len ? dtc[j] : 0.f;
    }
    float cum_last = cumc[len - 1];
    const float* dH = dstates + ssd_state_off(b, c, h, nch, H, P * N);
    float ax[8][2] = {{0.f}}, ab[8][2] = {{0.f}};
    /* state terms: dxs_j += dH B_j, dB_j/dt_j += dH^T x_j, both times exp(cum_last - cum_j) */
    for (int n0 = 0; n0 < N; n0 += SSD_TILE) {
        __syncthreads();
        ssd_load_cols_T(Ys, ldp, dH, P, N, n0);
        __syncthreads();
        ssd_acc_tile(ax, Bs, ldn, n0, Ys, ldp, P, min(SSD_TILE, N - n0));
    }
    for (int p0 = 0; p0 < P; p0 += SSD_TILE) {
        __syncthreads();
        ssd_load_rows_F(Cs, ldn, dH, P, N, p0);
        __syncthreads();
        ssd_acc_tile(ab, Xs, ldp, p0, Cs, ldn, N, min(SSD_TILE, P - p0));
    }
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int r = SSD_ROW(k);
        float e = j0 + r < len ? expf(cum_last - cum_j[r]) : 0.f;
        ax[k][0] *= e; ax[k][1] *= e; ab[k][0] *= e; ab[k][1] *= e;
    }
    /* intra-chunk: sums over i >= j */
    for (int i0 = j0; i0 < len; i0 += SSD_TILE) {
        __syncthreads();
        ssd_load_rows(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
        ssd_load_rows(Ys, ldp, dyrows, E, i0, len, P);
        if (threadIdx.x < SSD_TILE) cum_i[threadIdx.x] = i0 + (int)threadIdx.x < len ? cumc[i0 + threadIdx.x] : 0.f;
        __syncthreads();
        for (int q = 0; q < 4; q++) {
            int j = threadIdx.x % SSD_TILE, ii = threadIdx.x / SSD_TILE + 8 * q;
            float cbl = 0.f, wd = 0.f;
            if (i0 + ii >= j0 + j && i0 + ii < len) {
                float cb = 0.f, dyx = 0.f;
                for (int n = 0; n < N; n++) cb += Bs[j * ldn + n] * Cs[ii * ldn + n];
                for (int p = 0; p < P; p++) dyx += Xs[j * ldp + p] * Ys[ii * ldp + p];
                float L = expf(cum_i[ii] - cum_j[j]);
                cbl = cb * L;
                wd = dyx * L;
            }
            CBL[j * 33 + ii] = cbl;
            WD[j * 33 + ii] = wd;
        }
        __syncthreads();
        ssd_acc_tile(ax, CBL, 33, 0, Ys, ldp, P, SSD_TILE);
        ssd_acc_tile(ab, WD, 33, 0, Cs, ldn, N, SSD_TILE);
    }
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
                float xv = Xs[r * ldp + p], dyv = toF(dyrows[(size_t)j * E + p]);
                dxbc[row * xbc_stride + h * P + p] = fromF(dtv * ax[k][m] + Dh * dyv);
                px[k] += xv * ax[k][m];
                pd[k] += xv * dyv;
            }
            if (p < N) dB_h[(row * H + h) * N + p] = ab[k][m] * dtv;
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
ssd_bwd_dc_kernel(float* dC_h, float* roww, const floatX* dy, const floatX* xbc, int xbc_stride, const float* dt,
                  const float* cum, const float* states, int T, int H, int P, int N, int G, int Q) {
    extern __shared__ float sm[];
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE);
    int c = blockIdx.x / ntile, rt = blockIdx.x % ntile, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / G);
    int t0 = c * Q, len = min(Q, T - t0), i0 = rt * SSD_TILE;
    if (i0 >= len) return;
    int E = H * P, ldn = N + 1, ldp = P + 1;
    float* Cs = sm;                       /* (32, N+1) C rows i */
    float* Bs = Cs + SSD_TILE * ldn;      /* (32, N+1) B rows j, or a row slice of Hprev */
    float* Ys = Bs + SSD_TILE * ldn;      /* (32, P+1) dy rows i */
    float* Xs = Ys + SSD_TILE * ldp;      /* (32, P+1) x rows j */
    float* WD = Xs + SSD_TILE * ldp;      /* (32, 33) [i][j] (dy_i.x_j) exp(cum_i - cum_j) dt_j */
    float* cum_i = WD + 2 * SSD_TILE * 33;
    float* cum_j = cum_i + SSD_TILE;
    float* dt_j = cum_j + SSD_TILE;
    float* red = dt_j + SSD_TILE;         /* 64 floats; reused for the 8 partial row sums of rw */
    const floatX* rows = xbc + (size_t)(b * T + t0) * xbc_stride;
    const floatX* dyrows = dy + (size_t)(b * T + t0) * E + h * P;
    const float* cumc = cum + (size_t)bh * T + t0;
    const float* dtc = dt + (size_t)bh * T + t0;
    ssd_load_rows(Cs, ldn, rows + E + G * N + g * N, xbc_stride, i0, len, N);
    ssd_load_rows(Ys, ldp, dyrows, E, i0, len, P);
    if (threadIdx.x < SSD_TILE) cum_i[threadIdx.x] = i0 + (int)threadIdx.x < len ? cumc[i0 + threadIdx.x] : 0.f;
    const float* Hp = states + ssd_state_off(b, c, h, nch, H, P * N);
    float acc[8][2] = {{0.f}};
    /* inter-chunk: q_i = exp(cum_i) Hprev^T dy_i */
    for (int p0 = 0; p0 < P; p0 += SSD_TILE) {
        __syncthreads();
        ssd_load_rows_F(Bs, ldn, Hp, P, N, p0);
        __syncthreads();
        ssd_acc_tile(acc, Ys, ldp, p0, Bs, ldn, N, min(SSD_TILE, P - p0));
    }
    float pw[8];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int r = SSD_ROW(k);
        float e = expf(cum_i[r]);
        pw[k] = 0.f;
#pragma unroll
        for (int m = 0; m < 2; m++) {
            acc[k][m] *= e;
            if (SSD_COL(m) < N) pw[k] += Cs[r * ldn + SSD_COL(m)] * acc[k][m];  /* dy_i . y_off_i */
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
        for (int q = 0; q < 4; q++) {
            int i = threadIdx.x % SSD_TILE, jj = threadIdx.x / SSD_TILE + 8 * q;
            float wd = 0.f;
            if (j0 + jj <= i0 + i && i0 + i < len) {
                float cb = 0.f, dyx = 0.f;
                for (int n = 0; n < N; n++) cb += Cs[i * ldn + n] * Bs[jj * ldn + n];
                for (int p = 0; p < P; p++) dyx += Ys[i * ldp + p] * Xs[jj * ldp + p];
                wd = dyx * expf(cum_i[i] - cum_j[jj]) * dt_j[jj];
                rw += wd * cb;
            }
            WD[i * 33 + jj] = wd;
        }
        __syncthreads();
        ssd_acc_tile(acc, WD, 33, 0, Bs, ldn, N, SSD_TILE);
    }
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int i = i0 + SSD_ROW(k);
        if (i >= len) continue;
        size_t row = (size_t)(b * T + t0 + i);
#pragma unroll
        for (int m = 0; m < 2; m++)
            if (SSD_COL(m) < N) dC_h[(row * H + h) * N + SSD_COL(m)] = acc[k][m];
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
__global__ static void ssd_bwd_dt_kernel(floatX* ddt_raw, int dt_stride, float* part, const float* dt,
                                         const float* cum, const float* roww, const float* xdxs, const float* xdy,
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
            dcum = roww[base + i] - dt[base + i] * xd + (i == len - 1 ? dot_last : 0.f);
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

/* dB, dC columns of dxbc: the sum over the heads of each group, in head order. One thread per (row, g, n). */
__global__ static void ssd_bwd_group_sum_kernel(floatX* dxbc, int xbc_stride, const float* dB_h, const float* dC_h,
                                                int BT, int H, int P, int N, int G) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)BT * G * N) return;
    int n = idx % N, g = (idx / N) % G;
    size_t row = idx / ((size_t)G * N);
    int hpg = H / G, E = H * P;
    float sB = 0.f, sC = 0.f;
    for (int h = g * hpg; h < (g + 1) * hpg; h++) {
        sB += dB_h[(row * H + h) * N + n];
        sC += dC_h[(row * H + h) * N + n];
    }
    dxbc[row * xbc_stride + E + g * N + n] = fromF(sB);
    dxbc[row * xbc_stride + E + G * N + g * N + n] = fromF(sC);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* host launchers */

static void ssd_check_shapes(int B, int T, int H, int P, int N, int G, int Q) {
    if (B < 1 || T < 1 || H < 1 || G < 1 || H % G != 0 || P < 1 || P > SSD_MAXD || N < 1 || N > SSD_MAXD ||
        Q < 16 || Q > 256) {
        fprintf(stderr,
                "ssd: unsupported shape B=%d T=%d H=%d P=%d N=%d G=%d Q=%d: need B,T >= 1, G dividing H, "
                "1 <= P,N <= %d and 16 <= Q <= 256\n", B, T, H, P, N, G, Q, SSD_MAXD);
        exit(EXIT_FAILURE);
    }
}

static void ssd_set_smem(const void* kernel, size_t bytes) {
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

/* forward: y (BT, E) floatX = SSD(...) + D[h] x. See the top of this file for `saved`. */
static void ssd_forward(floatX* y, float* final_state, void* saved, const floatX* xbc, int xbc_stride,
                        const floatX* dt_raw, int dt_stride, const float* dt_bias, const float* A_log,
                        const float* Dskip, const float* init_state, int B, int T, int H, int P, int N, int G,
                        int Q, cudaStream_t stream) {
    ssd_check_shapes(B, T, H, P, N, G, Q);
    SSDSaved s = ssd_saved_layout(saved, B, T, H, P, N, Q);
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE), E = H * P, PN = P * N;
    ssd_dt_cumsum_kernel<<<dim3(nch, B * H), 32, 0, stream>>>(s.dt, s.cum, dt_raw, dt_stride, dt_bias, A_log, T, H,
                                                              Q);
    cudaCheckLast();
    dim3 og(nch, B * H, CEIL_DIV(P, 64) * CEIL_DIV(N, 64));
    ssd_chunk_outer_kernel<<<og, SSD_THREADS, 0, stream>>>(s.states, xbc, xbc_stride, xbc, xbc_stride, E, s.dt,
                                                           s.cum, 0, T, H, P, N, G, Q);
    cudaCheckLast();
    ssd_state_pass_kernel<<<dim3(B * H, CEIL_DIV(PN, 256)), 256, 0, stream>>>(s.states, final_state, init_state,
                                                                               s.cum, T, H, PN, Q);
    cudaCheckLast();
    size_t smem = ssd_tile_smem_bytes(P, N);
    ssd_set_smem((const void*)ssd_chunk_scan_fwd_kernel, smem);
    ssd_chunk_scan_fwd_kernel<<<dim3(nch * ntile, B * H), SSD_THREADS, smem, stream>>>(
        y, xbc, xbc_stride, s.dt, s.cum, s.states, Dskip, T, H, P, N, G, Q);
    cudaCheckLast();
}

/* backward: see the top of this file. init_state only matters through `saved` (the states it produced). */
static void ssd_backward(floatX* dxbc, floatX* ddt_raw, float* d_dt_bias, float* d_A_log, float* d_D,
                         const floatX* dy, const void* saved, const floatX* xbc, int xbc_stride, const floatX* dt_raw,
                         int dt_stride, const float* dt_bias, const float* A_log, const float* Dskip,
                         const float* init_state, void* workspace, int B, int T, int H, int P, int N, int G, int Q,
                         cudaStream_t stream) {
    (void)init_state;
    ssd_check_shapes(B, T, H, P, N, G, Q);
    SSDSaved s = ssd_saved_layout((void*)saved, B, T, H, P, N, Q);
    SSDWork w = ssd_work_layout(workspace, B, T, H, P, N, Q);
    int nch = ssd_nchunks(T, Q), ntile = CEIL_DIV(Q, SSD_TILE), E = H * P, PN = P * N, nsplit = ssd_nsplit(P, N);
    dim3 og(nch, B * H, CEIL_DIV(P, 64) * CEIL_DIV(N, 64));
    ssd_chunk_outer_kernel<<<og, SSD_THREADS, 0, stream>>>(w.dstates, dy, E, xbc, xbc_stride, E + G * N, s.dt,
                                                           s.cum, 1, T, H, P, N, G, Q);
    cudaCheckLast();
    ssd_dstate_pass_kernel<<<dim3(B * H, nsplit), SSD_THREADS, 0, stream>>>(w.dstates, w.dotp, s.states, s.cum, T, H,
                                                                            PN, Q);
    cudaCheckLast();
    size_t smem = ssd_tile_smem_bytes(P, N);
    ssd_set_smem((const void*)ssd_bwd_dx_db_kernel, smem);
    ssd_bwd_dx_db_kernel<<<dim3(nch * ntile, B * H), SSD_THREADS, smem, stream>>>(
        dxbc, w.dB_h, w.xdxs, w.xdy, dy, xbc, xbc_stride, s.dt, s.cum, w.dstates, Dskip, T, H, P, N, G, Q);
    cudaCheckLast();
    ssd_set_smem((const void*)ssd_bwd_dc_kernel, smem);
    ssd_bwd_dc_kernel<<<dim3(nch * ntile, B * H), SSD_THREADS, smem, stream>>>(
        w.dC_h, w.roww, dy, xbc, xbc_stride, s.dt, s.cum, s.states, T, H, P, N, G, Q);
    cudaCheckLast();
    ssd_bwd_dt_kernel<<<dim3(nch, B * H), 32, 0, stream>>>(ddt_raw, dt_stride, w.part, s.dt, s.cum, w.roww, w.xdxs,
                                                           w.xdy, w.dotp, nsplit, dt_raw, dt_bias, A_log, B, T, H,
                                                           Q);
    cudaCheckLast();
    ssd_bwd_param_sum_kernel<<<CEIL_DIV(3 * H, 64), 64, 0, stream>>>(d_dt_bias, d_A_log, d_D, w.part, B, H, nch);
    cudaCheckLast();
    size_t ngs = (size_t)B * T * G * N;
    ssd_bwd_group_sum_kernel<<<(unsigned)CEIL_DIV(ngs, (size_t)256), 256, 0, stream>>>(dxbc, xbc_stride, w.dB_h,
                                                                                       w.dC_h, B * T, H, P, N, G);
    cudaCheckLast();
}
}  /* namespace v1 */

/* the headers the two copies below include, first: inside the namespaces their includes are then empty */
#include "llmc/wgmma.cuh"
#include "llmc/gpu_arch.cuh"
/* llmc's default path and the lab get a namespace each: their functions share names and floatX arguments, so with
   one of them global, argument-dependent lookup (floatX is a global type) would find both */
namespace llmc {
#include "llmc/ssd.cuh"
}
namespace lab {  /* the lab: versions 2 to 11 with their knobs and run counters */
#include "dev/cuda/ssd_lab.cuh"
}
using namespace llmc;  /* below, unqualified ssd_* names are llmc's; the lab's are written lab:: */
#include "dev/cuda/kernels_dev.h"


/* which version run_forward / run_backward call: 1 = namespace v1 above, 2 to 11 = the lab (namespace lab) with
   lab::ssd_fast_version set to it, V_LLMC = llmc/ssd.cuh's default path (arguments "llmc" or "default") */
#define NVERSIONS 11
#define V_LLMC (NVERSIONS + 1)
static int g_version = 4;
static int lab_at_least(int v) { return g_version >= v && g_version <= NVERSIONS; }
static const char* vname(int v) {
    static char buf[16];
    if (v == V_LLMC) return "llmc";
    snprintf(buf, sizeof buf, "v%d", v);
    return buf;
}
/* the kernels the last llmc call ran (ssd_forward's and ssd_backward's return values) */
static SSDPath g_llmc_fwd, g_llmc_bwd;

/* docs: 1 = packed documents (seq_idx, make_docs; llmc only: the lab's versions have no document boundaries) */
typedef struct { int B, T, H, P, N, G, Q; int with_init; int docs; } Shape;

/* every input of one SSD call, on the host (already rounded to floatX where the GPU reads floatX) and device */
typedef struct {
    Shape s;
    int CD, E, dstride, dcol;            /* conv_dim, E, row stride of the dt buffer, dt column offset in it */
    float *xbc, *dtbuf, *dt_bias, *A_log, *Dskip, *init, *dy;
    floatX *d_xbc, *d_dtbuf, *d_dy;
    float *d_dt_bias, *d_A_log, *d_Dskip, *d_init;
    int *seq, *d_seq;                    /* (B, T) document of each position, or NULL (s.docs = 0) */
} Inputs;

/* seq_idx of row b (T values, non-decreasing, starting at an arbitrary document number): even rows take a fixed set
   of boundaries that hits every edge case the kernels distinguish: documents of one token at the row's start (a
   boundary at 1) and in a run (5, 6, 7: consecutive boundaries), a boundary at the last row of a chunk (Q - 1) and at
   the first rows of the next (Q, Q + 1: a one-token document that straddles nothing), at a chunk start (2Q), one
   before the last row of a chunk (3Q - 1) and at the row's last position (T - 1: a one-token last document); odd rows
   random boundaries, about one per 1.5 chunks, plus one at 2 (so documents longer than a chunk, also ones that span
   several chunks). A position t starts a new document where a boundary is at t. */
static void make_docs(int* seq, int b, int T, int Q) {
    int fixed[] = {1, 5, 6, 7, Q - 1, Q, Q + 1, 2 * Q, 3 * Q - 1, T - 1};
    int doc = 1000 * b + 7;
    for (int t = 0; t < T; t++) {
        int bnd = 0;
        if (t > 0 && b % 2 == 0)
            for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++) bnd |= fixed[k] == t;
        if (t > 0 && b % 2 == 1) bnd = t == 2 || dev_rand_uniform(0.f, 1.f) < 1.f / (1.5f * Q);
        doc += bnd;
        seq[(size_t)b * T + t] = doc;
    }
}
static int count_boundaries(const int* seq, int B, int T) {
    int n = 0;
    for (int b = 0; b < B; b++)
        for (int t = 1; t < T; t++) n += seq[(size_t)b * T + t] != seq[(size_t)b * T + t - 1];
    return n;
}

static Inputs make_inputs(Shape s) {
    Inputs in;
    in.s = s;
    in.E = s.H * s.P;
    in.CD = in.E + 2 * s.G * s.N;
    in.dcol = 3;                              /* dt sits inside a wider buffer, like zxbcdt */
    in.dstride = s.H + 5;
    size_t BT = (size_t)s.B * s.T;
    in.xbc = dev_random_floats(BT * in.CD, -1.f, 1.f);
    dev_round_to_X(in.xbc, BT * in.CD);
    in.dtbuf = dev_random_floats(BT * in.dstride, -1.f, 1.f);
    dev_round_to_X(in.dtbuf, BT * in.dstride);
    in.dt_bias = (float*)mallocCheck(s.H * sizeof(float));
    in.A_log = (float*)mallocCheck(s.H * sizeof(float));
    in.Dskip = dev_random_floats(s.H, 0.5f, 1.5f);
    for (int h = 0; h < s.H; h++) {
        /* SPEC 5: dt = exp(U(log 1e-3, log 0.1)), dt_bias = inverse softplus; A_log = log U(1, 16) */
        float dt = expf(dev_rand_uniform(logf(1e-3f), logf(0.1f)));
        in.dt_bias[h] = dt + logf(-expm1f(-dt));
        in.A_log[h] = logf(dev_rand_uniform(1.f, 16.f));
    }
    in.init = s.with_init ? dev_random_floats((size_t)s.B * s.H * s.P * s.N, -1.f, 1.f) : NULL;
    in.dy = dev_random_floats(BT * in.E, -1.f, 1.f);
    dev_round_to_X(in.dy, BT * in.E);
    in.d_xbc = dev_upload_X(in.xbc, BT * in.CD);
    in.d_dtbuf = dev_upload_X(in.dtbuf, BT * in.dstride);
    in.d_dy = dev_upload_X(in.dy, BT * in.E);
    in.d_dt_bias = dev_upload_F(in.dt_bias, s.H);
    in.d_A_log = dev_upload_F(in.A_log, s.H);
    in.d_Dskip = dev_upload_F(in.Dskip, s.H);
    in.d_init = in.init ? dev_upload_F(in.init, (size_t)s.B * s.H * s.P * s.N) : NULL;
    in.seq = in.d_seq = NULL;
    if (s.docs) {  /* drawn after everything else: the other inputs are those of the same shape without documents */
        in.seq = (int*)mallocCheck(BT * sizeof(int));
        for (int b = 0; b < s.B; b++) make_docs(in.seq, b, s.T, s.Q);
        in.d_seq = (int*)dev_malloc(BT * sizeof(int));
        cudaCheck(cudaMemcpy(in.d_seq, in.seq, BT * sizeof(int), cudaMemcpyHostToDevice));
    }
    return in;
}

static void free_inputs(Inputs* in) {
    free(in->xbc); free(in->dtbuf); free(in->dt_bias); free(in->A_log); free(in->Dskip); free(in->dy);
    if (in->init) free(in->init);
    cudaCheck(cudaFree(in->d_xbc)); cudaCheck(cudaFree(in->d_dtbuf)); cudaCheck(cudaFree(in->d_dy));
    cudaCheck(cudaFree(in->d_dt_bias)); cudaCheck(cudaFree(in->d_A_log)); cudaCheck(cudaFree(in->d_Dskip));
    if (in->d_init) cudaCheck(cudaFree(in->d_init));
    if (in->seq) { free(in->seq); cudaCheck(cudaFree(in->d_seq)); }
}

/* ---- CPU reference: the sequential recurrence of SPEC.md sections 3 and 4, in double, one (b, h) ----
 * Forward writes y[(b,t), h*P + p] and fin[(b,h), p, n]. Backward (if dxbc != NULL) writes dx columns,
 * ADDS the head's dB, dC into the group's columns of dxbc, writes ddt_raw[(b,t), h], adds to dpar[3][H], and (dinit
 * not NULL) writes dinit[(b,h), p, n] = dL/d(initial state).
 * Document boundaries (in->seq not NULL, doc/packing.md): where seq[t] != seq[t-1] the recurrence restarts,
 * h_t = dt_t x_t B_t^T: the decay a_t is the constant 0 there (not exp(dt_t A): no gradient to dt_t or A through it). */
static void ref_head(const Inputs* in, int b, int h, double* y, double* fin, double* dxbc, double* ddt_raw,
                     double* dpar, double* dinit = NULL) {
    const Shape* s = &in->s;
    int T = s->T, P = s->P, N = s->N, g = h / (s->H / s->G), E = in->E, CD = in->CD;
    int xo = h * P, bo = E + g * N, co = E + s->G * N + g * N;
    double A = -exp((double)in->A_log[h]), bias = in->dt_bias[h], Dh = in->Dskip[h];
    size_t PN = (size_t)P * N;
    int bwd = dxbc != NULL;
    double* hs = (double*)mallocCheck((bwd ? (size_t)(T + 1) : 2) * PN * sizeof(double));
    double* dt = (double*)mallocCheck(T * sizeof(double));
    for (size_t e = 0; e < PN; e++) hs[e] = in->init ? in->init[((size_t)b * s->H + h) * PN + e] : 0.0;
    for (int t = 0; t < T; t++) {
        double v = in->dtbuf[((size_t)b * T + t) * in->dstride + in->dcol + h] + bias;
        dt[t] = v > 20.0 ? v : log1p(exp(v));
    }
    const int* seq = in->seq ? in->seq + (size_t)b * T : NULL;
#define REF_RESTARTS(t) (seq && (t) > 0 && seq[(t)] != seq[(t) - 1])
    for (int t = 0; t < T; t++) {
        const float* row = in->xbc + ((size_t)b * T + t) * CD;
        double a = REF_RESTARTS(t) ? 0.0 : exp(dt[t] * A);
        double* hp = hs + (bwd ? (size_t)t : (size_t)(t % 2)) * PN;
        double* hn = hs + (bwd ? (size_t)(t + 1) : (size_t)((t + 1) % 2)) * PN;
        for (int p = 0; p < P; p++) {
            double xs = dt[t] * row[xo + p], acc = 0.0;
            for (int n = 0; n < N; n++) {
                double v = a * hp[p * N + n] + xs * row[bo + n];
                hn[p * N + n] = v;
                acc += v * row[co + n];
            }
            if (y) y[((size_t)b * T + t) * E + xo + p] = acc + Dh * row[xo + p];
        }
    }
    if (fin) memcpy(fin + ((size_t)b * s->H + h) * PN, hs + (bwd ? (size_t)T : (size_t)(T % 2)) * PN,
                    PN * sizeof(double));
    if (bwd) {
        double* gs = (double*)calloc(PN, sizeof(double));
        double* gB = (double*)mallocCheck(P * sizeof(double));
        double a_next = 0.0, dA = 0.0;
        for (int t = T - 1; t >= 0; t--) {
            const float* row = in->xbc + ((size_t)b * T + t) * CD;
            const float* dyr = in->dy + ((size_t)b * T + t) * E + xo;
            double* drow = dxbc + ((size_t)b * T + t) * CD;
            double a = REF_RESTARTS(t) ? 0.0 : exp(dt[t] * A);
            const double* ht = hs + (size_t)(t + 1) * PN;
            const double* hprev = hs + (size_t)t * PN;
            for (int p = 0; p < P; p++)
                for (int n = 0; n < N; n++) gs[p * N + n] = a_next * gs[p * N + n] + dyr[p] * row[co + n];
            double gh = 0.0, xg = 0.0, xdy = 0.0;
            for (int n = 0; n < N; n++) {
                double dc = 0.0, db = 0.0;
                for (int p = 0; p < P; p++) {
                    dc += ht[p * N + n] * dyr[p];
                    db += gs[p * N + n] * dt[t] * row[xo + p];
                }
                drow[co + n] += dc;
                drow[bo + n] += db;
            }
            for (int p = 0; p < P; p++) {
                double v = 0.0;
                for (int n = 0; n < N; n++) {
                    v += gs[p * N + n] * row[bo + n];
                    gh += gs[p * N + n] * hprev[p * N + n];
                }
                gB[p] = v;
                drow[xo + p] = dt[t] * v + Dh * dyr[p];
                xg += row[xo + p] * v;
                xdy += row[xo + p] * dyr[p];
            }
            double ddt = xg + gh * a * A;
            dA += gh * a * dt[t];
            double u = in->dtbuf[((size_t)b * T + t) * in->dstride + in->dcol + h] + bias;
            double dr = ddt / (1.0 + exp(-u));
            ddt_raw[((size_t)b * T + t) * s->H + h] = dr;
            dpar[0 * s->H + h] += dr;
            dpar[2 * s->H + h] += xdy;
            a_next = a;
        }
        dpar[1 * s->H + h] += dA * A;
        if (dinit)  /* h_0 = a_0 h_init + ...: dL/dh_init = a_0 dL/dh_0 (gs now holds dL/dh_0) */
            for (size_t e = 0; e < PN; e++) dinit[((size_t)b * s->H + h) * PN + e] = exp(dt[0] * A) * gs[e];
        free(gs); free(gB);
    }
#undef REF_RESTARTS
    free(hs); free(dt);
}

/* ---- running one version on the GPU ---- */
typedef struct {
    floatX *y, *dxbc, *ddtbuf;
    float *final_state, *dpar;  /* dpar: d_dt_bias | d_A_log | d_D, 3*H */
    float* dinit;               /* (B, H, P, N) d_init_state (llmc) */
    void *saved, *work;
    size_t saved_bytes, work_bytes;  /* of the version that allocated them */
} Outputs;

static Outputs alloc_outputs(const Inputs* in) {
    const Shape* s = &in->s;
    size_t BT = (size_t)s->B * s->T;
    Outputs o;
    o.y = (floatX*)dev_malloc(BT * in->E * sizeof(floatX));
    o.dxbc = (floatX*)dev_malloc(BT * in->CD * sizeof(floatX));
    o.ddtbuf = (floatX*)dev_malloc(BT * in->dstride * sizeof(floatX));
    o.final_state = (float*)dev_malloc((size_t)s->B * s->H * s->P * s->N * sizeof(float));
    o.dpar = (float*)dev_malloc(3 * s->H * sizeof(float));
    o.dinit = (float*)dev_malloc((size_t)s->B * s->H * s->P * s->N * sizeof(float));
    o.saved_bytes = g_version == 1 ? v1::ssd_saved_bytes(s->B, s->T, s->H, s->P, s->N, s->Q)
                                   : g_version == V_LLMC ? ssd_saved_bytes(s->B, s->T, s->H, s->P, s->N, s->Q)
                                   : lab::ssd_saved_bytes(s->B, s->T, s->H, s->P, s->N, s->Q);
    o.work_bytes = g_version == 1 ? v1::ssd_workspace_bytes(s->B, s->T, s->H, s->P, s->N, s->G, s->Q)
                                  : g_version == V_LLMC ? ssd_workspace_bytes(s->B, s->T, s->H, s->P, s->N, s->G, s->Q)
                                  : lab::ssd_workspace_bytes(s->B, s->T, s->H, s->P, s->N, s->G, s->Q);
    o.saved = dev_malloc(o.saved_bytes);
    o.work = dev_malloc(o.work_bytes);
    return o;
}
static void free_outputs(Outputs* o) {
    cudaCheck(cudaFree(o->y)); cudaCheck(cudaFree(o->dxbc)); cudaCheck(cudaFree(o->ddtbuf));
    cudaCheck(cudaFree(o->final_state)); cudaCheck(cudaFree(o->dpar)); cudaCheck(cudaFree(o->dinit));
    cudaCheck(cudaFree(o->saved)); cudaCheck(cudaFree(o->work));
}

/* the lab's versions have no document boundaries: only llmc runs inputs with seq_idx */
static void refuse_docs_in_lab(const Inputs* in) {
    if (in->d_seq) {
        fprintf(stderr, "ssd: version %s has no seq_idx (document boundaries): only llmc runs shapes with docs\n",
                vname(g_version));
        exit(EXIT_FAILURE);
    }
}
static void run_forward(const Inputs* in, Outputs* o, int with_final) {
    const Shape* s = &in->s;
    if (g_version == V_LLMC) {
        g_llmc_fwd = ssd_forward(o->y, with_final ? o->final_state : NULL, o->saved, in->d_xbc, in->CD,
                                 in->d_dtbuf + in->dcol, in->dstride, in->d_dt_bias, in->d_A_log, in->d_Dskip, in->d_init,
                                 in->d_seq, s->B, s->T, s->H, s->P, s->N, s->G, s->Q, 0);
        return;
    }
    refuse_docs_in_lab(in);
    lab::ssd_fast_version = g_version;
    (g_version == 1 ? v1::ssd_forward : lab::ssd_forward)(o->y, with_final ? o->final_state : NULL, o->saved, in->d_xbc, in->CD, in->d_dtbuf + in->dcol,
                in->dstride, in->d_dt_bias, in->d_A_log, in->d_Dskip, in->d_init, s->B, s->T, s->H, s->P, s->N,
                s->G, s->Q, 0);
}
/* with_dinit: llmc also writes d_init_state into o->dinit (the benchmark timings run without it, as the trainer) */
static void run_backward(const Inputs* in, Outputs* o, int with_dinit = 0) {
    const Shape* s = &in->s;
    if (g_version == V_LLMC) {
        g_llmc_bwd = ssd_backward(o->dxbc, o->ddtbuf + in->dcol, o->dpar, o->dpar + s->H, o->dpar + 2 * s->H,
                                  with_dinit ? o->dinit : NULL, in->d_dy, o->saved, in->d_xbc, in->CD,
                                  in->d_dtbuf + in->dcol, in->dstride, in->d_dt_bias, in->d_A_log, in->d_Dskip,
                                  in->d_init, in->d_seq, o->work, s->B, s->T, s->H, s->P, s->N, s->G, s->Q, 0);
        return;
    }
    refuse_docs_in_lab(in);
    lab::ssd_fast_version = g_version;
    (g_version == 1 ? v1::ssd_backward : lab::ssd_backward)(o->dxbc, o->ddtbuf + in->dcol, o->dpar, o->dpar + s->H, o->dpar + 2 * s->H, in->d_dy, o->saved,
                 in->d_xbc, in->CD, in->d_dtbuf + in->dcol, in->dstride, in->d_dt_bias, in->d_A_log, in->d_Dskip,
                 in->d_init, o->work, s->B, s->T, s->H, s->P, s->N, s->G, s->Q, 0);
}

/* tolerances: atol is relative to the largest reference magnitude of the output */
static double tol_abs(void) {
#ifdef ENABLE_FP32
    return 1e-5;
#else
    return 1e-2;
#endif
}
static double tol_rel(void) {
#ifdef ENABLE_FP32
    return 1e-4;
#else
    return 2e-2;
#endif
}
static double max_abs_d(const double* r, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(r[i]));
    return m;
}
static void check(const char* name, const float* got, const double* ref, size_t n) {
    dev_validate(name, got, ref, n, tol_abs() * max_abs_d(ref, n), tol_rel());
}

/* gather columns [c0, c0 + nc) of rows [r0, r0 + nr) of a (rows, ld) matrix into a packed array */
static float* gather_f(const float* m, int ld, size_t r0, size_t nr, int c0, int nc) {
    float* out = (float*)mallocCheck(nr * nc * sizeof(float));
    for (size_t r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++) out[r * nc + c] = m[(r0 + r) * ld + c0 + c];
    return out;
}
static double* gather_d(const double* m, int ld, size_t r0, size_t nr, int c0, int nc) {
    double* out = (double*)mallocCheck(nr * nc * sizeof(double));
    for (size_t r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++) out[r * nc + c] = m[(r0 + r) * ld + c0 + c];
    return out;
}

/* ---- the llmc default path (V_LLMC) ---- */
/* the lab version llmc/ssd.cuh's default path was taken from: 11 in the bf16 build, 2 in the fp32 build */
#ifdef ENABLE_FP32
#define V_LAB_REF 2
#else
#define V_LAB_REF 11
#endif
/* the lab's knobs at their defaults (the values llmc fixed), for the reference run; put back after */
typedef struct { int hg, wgs, lines, parts, fuse, ns, st, split, v9, v11; } LabKnobs;
static LabKnobs lab_knobs_default(void) {
    LabKnobs k = {lab::ssd4_hg_max, lab::ssd5_wgs, lab::ssd5_lines, lab::ssd6_parts, lab::ssd7_fuse, lab::ssd7_ns,
                  lab::ssd7_stages, lab::ssd7_split, lab::ssd9_parts, lab::ssd11_fwd};
    lab::ssd4_hg_max = SSD4_HG_MAX; lab::ssd5_wgs = 2; lab::ssd5_lines = 1; lab::ssd6_parts = 1; lab::ssd7_fuse = 1;
    lab::ssd7_ns = 64; lab::ssd7_stages = 3; lab::ssd7_split = 1; lab::ssd9_parts = 3; lab::ssd11_fwd = 1;
    return k;
}
static void lab_knobs_restore(LabKnobs k) {
    lab::ssd4_hg_max = k.hg; lab::ssd5_wgs = k.wgs; lab::ssd5_lines = k.lines; lab::ssd6_parts = k.parts;
    lab::ssd7_fuse = k.fuse; lab::ssd7_ns = k.ns; lab::ssd7_stages = k.st; lab::ssd7_split = k.split;
    lab::ssd9_parts = k.v9; lab::ssd11_fwd = k.v11;
}
/* the path llmc/ssd.cuh's rules give shape s (the inputs here are 16-byte aligned, their row strides multiples of 8
   where P, N are multiples of 16, and B H T is even, so the saved states are 16-byte aligned) */
static SSDPath llmc_expected(Shape s) {
    SSDPath e = {SSD_STATE_SIMPLE, SSD_FWD_SIMPLE, SSD_BWD_SIMPLE};
#ifndef ENABLE_FP32
    if (s.P % 16 != 0 || s.N % 16 != 0) return e;
    /* the shared-memory rules ask cuda_smem_optin(), which MAMBA2_SMEM_LIMIT lowers (doc/gpus.md) */
    int w = (s.P == 64 || s.P == 128) && (s.N == 64 || s.N == 128), optin = cuda_smem_optin();
    e.state = s.P % 64 == 0 && s.N % 64 == 0 && s.Q % 64 == 0 &&
              (long)s.B * s.H * (s.P / 64) * (s.N / 64) >= cuda_num_sms() ? SSD_STATE_FUSED
              : ssd_smem_chunk_state() <= (size_t)optin ? SSD_STATE_CHUNKS : SSD_STATE_SIMPLE;
    e.fwd_scan = ssd_fwd_wgmma_takes(s.H, s.P, s.N, s.G, s.Q, NULL)
                     ? (s.P == 64 && (s.H / s.G) % 2 == 0 ? SSD_FWD_WGMMA_PAIR : SSD_FWD_WGMMA)
                 : ssd_smem_fwd_mma(s.P, s.N) <= (size_t)optin ? SSD_FWD_MMA : SSD_FWD_SIMPLE;
    e.bwd_tiles = !ssd_bwd_tiles_fit(s.P, s.N) ? SSD_BWD_SIMPLE
                  : w && (s.Q == 64 || s.Q == 128) &&
                            ssd_smem_dxdb(s.P, s.N) + ssd_smem_slab() + SSD_DXDB_SEG_SMEM <= (size_t)optin
                      ? SSD_BWD_TILES_TUNED : SSD_BWD_TILES;
#endif
    return e;
}
/* llmc's backward refuses a shape whose kernels all need more shared memory than a block may take (P = N = 128 under
   99 KB: MAMBA2_SMEM_LIMIT=101376 on an H100, or an sm_86 / 89 / 120 GPU) */
static int llmc_refuses(Shape s) {
    return llmc_expected(s).bwd_tiles == SSD_BWD_SIMPLE && ssd_simple_smem_bytes(s.P, s.N, 3, 3) > (size_t)cuda_smem_optin();
}
/* the backward kernels lab version V_LAB_REF runs at shape s: llmc's rules without a shared-memory limit */
static int lab_bwd_kind(Shape s) {
#ifndef ENABLE_FP32
    if (s.P % 16 == 0 && s.N % 16 == 0)
        return (s.P == 64 || s.P == 128) && (s.N == 64 || s.N == 128) && (s.Q == 64 || s.Q == 128) ? SSD_BWD_TILES_TUNED
                                                                                                 : SSD_BWD_TILES;
#endif
    (void)s;
    return SSD_BWD_SIMPLE;
}
static const char* state_name(int k) {
    return k == SSD_STATE_FUSED ? "fused scan" : k == SSD_STATE_CHUNKS ? "chunk-parallel" : k == SSD_STATE_SIMPLE ? "simple" : "?";
}
static const char* fwd_name(int k) {
    return k == SSD_FWD_WGMMA_PAIR ? "wgmma pair" : k == SSD_FWD_WGMMA ? "wgmma" : k == SSD_FWD_MMA ? "mma.sync"
         : k == SSD_FWD_SIMPLE ? "simple" : "?";
}
static const char* bwd_name(int k) {
    return k == SSD_BWD_TILES_TUNED ? "tiles (tuned)" : k == SSD_BWD_TILES ? "tiles" : k == SSD_BWD_SIMPLE ? "simple" : "?";
}
/* the kernels the last llmc forward (and backward) ran are those the rules give the shape */
static void check_llmc_path(Shape s, int with_bwd) {
    SSDPath e = llmc_expected(s), f = g_llmc_fwd, b = g_llmc_bwd;
    printf("  llmc path: states %s, forward scan %s", state_name(f.state), fwd_name(f.fwd_scan));
    if (with_bwd) printf(", backward states %s, backward %s", state_name(b.state), bwd_name(b.bwd_tiles));
    printf(" (expected %s, %s, %s)\n", state_name(e.state), fwd_name(e.fwd_scan), bwd_name(e.bwd_tiles));
    dev_record("llmc: the forward ran the kernels its rules give the shape",
               f.state == e.state && f.fwd_scan == e.fwd_scan && f.bwd_tiles == 0);
    if (with_bwd)
        dev_record("llmc: the backward ran the kernels its rules give the shape",
                   b.state == e.state && b.bwd_tiles == e.bwd_tiles && b.fwd_scan == 0);
}
/* o holds one llmc forward (with the final state) and, if with_bwd, one llmc backward whose parameter gradients
   started from par0 (NULL: zeros) with dxbc and the dt-gradient buffer poisoned before: every output must be bitwise
   that of lab version V_LAB_REF with its default knobs on the same inputs. With MAMBA2_PORTABLE set on a Hopper GPU
   the llmc forward runs the mma.sync scan where the lab runs wgmma: y is then not compared. */
static void check_llmc_against_lab(const Inputs* in, Outputs* o, const float* par0, int with_bwd) {
    const Shape* s = &in->s;
    size_t BT = (size_t)s->B * s->T, nst = (size_t)s->B * s->H * s->P * s->N;
    int keep = g_version;
    LabKnobs k = lab_knobs_default();
    g_version = V_LAB_REF;
    Outputs r = alloc_outputs(in);
    dev_poison(r.dxbc, BT * in->CD * sizeof(floatX));
    dev_poison(r.ddtbuf, BT * in->dstride * sizeof(floatX));
    if (par0) cudaCheck(cudaMemcpy(r.dpar, par0, 3 * s->H * sizeof(float), cudaMemcpyHostToDevice));
    else cudaCheck(cudaMemset(r.dpar, 0, 3 * s->H * sizeof(float)));
    run_forward(in, &r, 1);
    if (with_bwd) run_backward(in, &r);
    cudaCheck(cudaDeviceSynchronize());
    g_version = keep;
    lab_knobs_restore(k);
    char what[96];
    /* the lab's version 11 runs a wgmma scan wherever P, N are in {64, 128} (the tile rules hold here where P, N are
       multiples of 16); llmc only on the Hopper path */
    int lab_wgmma = V_LAB_REF == 11 && (s->P == 64 || s->P == 128) && (s->N == 64 || s->N == 128);
    int llmc_wgmma = g_llmc_fwd.fwd_scan == SSD_FWD_WGMMA || g_llmc_fwd.fwd_scan == SSD_FWD_WGMMA_PAIR;
    int y_comparable = lab_wgmma == llmc_wgmma;
    {
        float* a = dev_download_X(o->y, BT * in->E);
        float* b = dev_download_X(r.y, BT * in->E);
        snprintf(what, sizeof what, "llmc y bitwise lab v%d's", V_LAB_REF);
        if (y_comparable) dev_check_bitwise(what, a, b, BT * in->E * sizeof(float));
        else printf("  llmc y: the portable scan ran where lab v%d runs wgmma: not compared\n", V_LAB_REF);
        free(a); free(b);
    }
    {
        float* a = dev_download_F(o->final_state, nst);
        float* b = dev_download_F(r.final_state, nst);
        snprintf(what, sizeof what, "llmc final_state bitwise lab v%d's", V_LAB_REF);
        dev_check_bitwise(what, a, b, nst * sizeof(float));
        free(a); free(b);
    }
    /* under a shared-memory limit (MAMBA2_SMEM_LIMIT, doc/gpus.md) llmc may take other backward kernels than the
       lab's: those outputs are checked against the recurrence only */
    if (with_bwd && g_llmc_bwd.bwd_tiles != lab_bwd_kind(*s))
        printf("  llmc backward: %s under %d bytes of shared memory where lab v%d runs %s: not compared\n",
               bwd_name(g_llmc_bwd.bwd_tiles), cuda_smem_optin(), V_LAB_REF, bwd_name(lab_bwd_kind(*s)));
    else if (with_bwd) {
        float* a = dev_download_X(o->dxbc, BT * in->CD);
        float* b = dev_download_X(r.dxbc, BT * in->CD);
        snprintf(what, sizeof what, "llmc dxbc bitwise lab v%d's", V_LAB_REF);
        dev_check_bitwise(what, a, b, BT * in->CD * sizeof(float));
        free(a); free(b);
        a = dev_download_X(o->ddtbuf, BT * in->dstride);
        b = dev_download_X(r.ddtbuf, BT * in->dstride);
        snprintf(what, sizeof what, "llmc ddt_raw bitwise lab v%d's", V_LAB_REF);
        dev_check_bitwise(what, a, b, BT * in->dstride * sizeof(float));
        free(a); free(b);
        a = dev_download_F(o->dpar, 3 * s->H);
        b = dev_download_F(r.dpar, 3 * s->H);
        snprintf(what, sizeof what, "llmc parameter gradients bitwise lab v%d's", V_LAB_REF);
        dev_check_bitwise(what, a, b, 3 * s->H * sizeof(float));
        free(a); free(b);
    }
    free_outputs(&r);
}

/* ---- small shapes: everything against the recurrence ---- */
/* version 11 keeps version 9's arithmetic: y of a version 9 forward (lab::ssd11_fwd = 0) on the same inputs must be
   bitwise the y11 given (o's buffers are overwritten: y with the same values, saved with the same bits). That
   forward must have run version 9's scan, not version 11's (else the comparison proves nothing); it is not one of
   the callers' counted calls, so the run counters it moved are put back. */
static void check_v11_against_v9(const Inputs* in, Outputs* o, const float* y11, size_t n, const char* what) {
    int keep = lab::ssd11_fwd, runs7 = lab::ssd7_runs, runs9f = lab::ssd9_fwd_runs, runs11f = lab::ssd11_fwd_runs;
    lab::ssd11_fwd = 0;
    dev_poison(o->y, n * sizeof(floatX));
    run_forward(in, o, 1);
    cudaCheck(cudaDeviceSynchronize());
    lab::ssd11_fwd = keep;
    dev_record("version 11: the comparison forward ran version 9's scan",
               lab::ssd9_fwd_runs - runs9f == 1 && lab::ssd11_fwd_runs == runs11f);
    lab::ssd7_runs = runs7;
    lab::ssd9_fwd_runs = runs9f;
    float* y9 = dev_download_X(o->y, n);
    dev_check_bitwise(what, y11, y9, n * sizeof(float));
    free(y9);
}

/* the largest |a - b| over n values */
static double max_diff_d(const double* a, const double* b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
    return m;
}
/* with documents: the reference without them differs from the one with them by far more than the tolerance the
   GPU's outputs are held to, so a kernel that ignored a mask fails the checks (printed per tensor) */
static void check_docs_matter(Inputs* in, const double* ry, const double* rdx, const double* rddt) {
    const Shape* s = &in->s;
    size_t BT = (size_t)s->B * s->T, nst = (size_t)s->B * s->H * s->P * s->N;
    double* y0 = (double*)calloc(BT * in->E, sizeof(double));
    double* f0 = (double*)calloc(nst, sizeof(double));
    double* dx0 = (double*)calloc(BT * in->CD, sizeof(double));
    double* ddt0 = (double*)calloc(BT * s->H, sizeof(double));
    double* par0 = (double*)calloc(3 * s->H, sizeof(double));
    int* seq = in->seq;
    in->seq = NULL;
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++) ref_head(in, b, h, y0, f0, dx0, ddt0, par0);
    in->seq = seq;
    const char* names[3] = {"y", "dxbc", "ddt_raw"};
    const double* with[3] = {ry, rdx, rddt};
    const double* without[3] = {y0, dx0, ddt0};
    size_t n[3] = {BT * in->E, BT * in->CD, BT * s->H};
    int ok = 1;
    for (int k = 0; k < 3; k++) {
        double d = max_diff_d(with[k], without[k], n[k]), tol = tol_abs() * max_abs_d(with[k], n[k]);
        printf("  documents change the reference %s by up to %.3g (%.0f x its absolute tolerance)\n", names[k], d,
               d / tol);
        ok &= d > 5.0 * tol;
    }
    dev_record("seq_idx: the references with and without documents differ by > 5 x the tolerance", ok);
    free(y0); free(f0); free(dx0); free(ddt0); free(par0);
}

static void test_small(Shape s) {
    printf("%s small shape B=%d T=%d H=%d P=%d N=%d G=%d Q=%d init=%s (%s)\n", vname(g_version), s.B, s.T, s.H, s.P, s.N, s.G, s.Q,
           s.with_init ? "random" : "NULL", PRECISION_NAME);
    Inputs in = make_inputs(s);
    if (s.docs) printf("  with seq_idx: %d document boundaries in %d rows\n", count_boundaries(in.seq, s.B, s.T), s.B);
    Outputs o = alloc_outputs(&in);
    size_t BT = (size_t)s.B * s.T, PN = (size_t)s.P * s.N, nst = (size_t)s.B * s.H * PN;
    double* ry = (double*)calloc(BT * in.E, sizeof(double));
    double* rfin = (double*)calloc(nst, sizeof(double));
    double* rdx = (double*)calloc(BT * in.CD, sizeof(double));
    double* rddt = (double*)calloc(BT * s.H, sizeof(double));
    double* rpar = (double*)calloc(3 * s.H, sizeof(double));
    double* rdinit = (double*)calloc(nst, sizeof(double));
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.H; h++) ref_head(&in, b, h, ry, rfin, rdx, rddt, rpar, rdinit);
    if (s.docs) check_docs_matter(&in, ry, rdx, rddt);
    int with_dinit = g_version == V_LLMC;  /* the lab's versions have no d_init_state */

    /* version 7's fused state kernels: forced on (fuse=1 -> 2) so that these shapes check them */
    int fuse_arg = lab::ssd7_fuse, runs0 = lab::ssd7_runs, runs8 = lab::ssd8_runs, runs9f = lab::ssd9_fwd_runs, runs9b = lab::ssd9_bwd_runs;
    if (lab_at_least(7) && lab::ssd7_fuse == 1) lab::ssd7_fuse = 2;
    int expect_fused = lab_at_least(7) && lab::ssd7_fuse == 2 && s.P % 64 == 0 && s.N % lab::ssd7_ns == 0 && s.Q % 64 == 0;
    /* version 8's backward kernels: compile-time widths P, N in {64, 128}, Q 64 or 128 (the buffers are aligned) */
    int expect_v8 = lab_at_least(8) && (s.P == 64 || s.P == 128) && (s.N == 64 || s.N == 128) && (s.Q == 64 || s.Q == 128);
    /* version 9: the forward where version 6's 2-head forward runs (P = 64, N in {64, 128}, H/G even), the col
       kernel where version 8's runs */
    int expect_v9f = lab_at_least(9) && (lab::ssd9_parts & 1) && (lab::ssd6_parts & 1) && s.P == 64 &&
                     (s.N == 64 || s.N == 128) && (s.H / s.G) % 2 == 0;
    int expect_v9b = lab_at_least(9) && (lab::ssd9_parts & 2) && expect_v8;
    /* version 11: where version 9's forward scan runs */
    int expect_v11f = lab_at_least(11) && lab::ssd11_fwd && expect_v9f, runs11f = lab::ssd11_fwd_runs;
#ifdef ENABLE_FP32
    expect_fused = 0;  /* the fp32 build runs version 2's kernels */
    expect_v8 = 0;
    expect_v9f = expect_v9b = expect_v11f = 0;
#endif

    /* forward, twice: the second run must give bitwise the same y and final state */
    float *gy = NULL, *gfin = NULL;
    for (int rep = 0; rep < 2; rep++) {
        dev_poison(o.y, BT * in.E * sizeof(floatX));
        dev_poison(o.final_state, nst * sizeof(float));
        dev_poison(o.saved, o.saved_bytes);
        run_forward(&in, &o, 1);
        cudaCheck(cudaDeviceSynchronize());
        float* y2 = dev_download_X(o.y, BT * in.E);
        float* f2 = dev_download_F(o.final_state, nst);
        if (rep == 0) { gy = y2; gfin = f2; continue; }
        dev_check_bitwise("y (forward twice)", gy, y2, BT * in.E * sizeof(float));
        dev_check_bitwise("final_state (forward twice)", gfin, f2, nst * sizeof(float));
        free(y2); free(f2);
    }
    check("y", gy, ry, BT * in.E);
    check("final_state", gfin, rfin, nst);
    if (expect_v11f && !s.docs) check_v11_against_v9(&in, &o, gy, BT * in.E, "y of version 11 and of version 9");

    /* backward: poison outputs, random starting values for the accumulated parameter gradients */
    float* par0 = dev_random_floats(3 * s.H, -1.f, 1.f);
    float* gpar[2];
    float* gdx[2];
    float* gddt[2];
    float* gdinit[2] = {NULL, NULL};
    for (int rep = 0; rep < 2; rep++) {
        dev_poison(o.dxbc, BT * in.CD * sizeof(floatX));
        dev_poison(o.ddtbuf, BT * in.dstride * sizeof(floatX));
        dev_poison(o.work, o.work_bytes);
        dev_poison(o.dinit, nst * sizeof(float));
        cudaCheck(cudaMemcpy(o.dpar, par0, 3 * s.H * sizeof(float), cudaMemcpyHostToDevice));
        run_backward(&in, &o, with_dinit);
        cudaCheck(cudaDeviceSynchronize());
        gdx[rep] = dev_download_X(o.dxbc, BT * in.CD);
        gddt[rep] = dev_download_X(o.ddtbuf, BT * in.dstride);
        gpar[rep] = dev_download_F(o.dpar, 3 * s.H);
        if (with_dinit) gdinit[rep] = dev_download_F(o.dinit, nst);
    }
    float* dx = gather_f(gdx[0], in.CD, 0, BT, 0, in.E);
    double* rdxx = gather_d(rdx, in.CD, 0, BT, 0, in.E);
    float* dB = gather_f(gdx[0], in.CD, 0, BT, in.E, s.G * s.N);
    double* rdB = gather_d(rdx, in.CD, 0, BT, in.E, s.G * s.N);
    float* dC = gather_f(gdx[0], in.CD, 0, BT, in.E + s.G * s.N, s.G * s.N);
    double* rdC = gather_d(rdx, in.CD, 0, BT, in.E + s.G * s.N, s.G * s.N);
    float* ddt = gather_f(gddt[0], in.dstride, 0, BT, in.dcol, s.H);
    check("dx", dx, rdxx, BT * in.E);
    check("dB", dB, rdB, BT * s.G * s.N);
    check("dC", dC, rdC, BT * s.G * s.N);
    check("ddt_raw", ddt, rddt, BT * s.H);
    const char* pname[3] = {"d_dt_bias (+=)", "d_A_log (+=)", "d_D (+=)"};
    for (int k = 0; k < 3; k++) {
        float inc[256];
        for (int h = 0; h < s.H; h++) inc[h] = gpar[0][k * s.H + h] - par0[k * s.H + h];
        check(pname[k], inc, rpar + k * s.H, s.H);
    }
    if (with_dinit) {
        check("d_init_state", gdinit[0], rdinit, nst);
        dev_check_bitwise("d_init_state (backward twice)", gdinit[0], gdinit[1], nst * sizeof(float));
    }
    /* the dt-gradient buffer's other columns belong to other kernels: still poisoned (all bits set) */
    size_t touched = 0, nraw = BT * in.dstride * sizeof(floatX);
    unsigned char* raw = (unsigned char*)mallocCheck(nraw);
    cudaCheck(cudaMemcpy(raw, o.ddtbuf, nraw, cudaMemcpyDeviceToHost));
    for (size_t r = 0; r < BT; r++)
        for (int c = 0; c < in.dstride; c++) {
            if (c >= in.dcol && c < in.dcol + s.H) continue;
            for (size_t k = 0; k < sizeof(floatX); k++) touched += raw[(r * in.dstride + c) * sizeof(floatX) + k] != 0xFF;
        }
    free(raw);
    dev_record("ddt buffer: columns outside dt untouched", touched == 0);
    dev_check_bitwise("dxbc", gdx[0], gdx[1], BT * in.CD * sizeof(float));
    dev_check_bitwise("ddt_raw", gddt[0], gddt[1], BT * in.dstride * sizeof(float));
    dev_check_bitwise("parameter gradients", gpar[0], gpar[1], 3 * s.H * sizeof(float));
    if (g_version == V_LLMC) {  /* o holds the second forward and backward, from par0 */
        check_llmc_path(s, 1);
        if (!s.docs) check_llmc_against_lab(&in, &o, par0, 1);
    }
    if (lab_at_least(7)) {  /* 2 forwards + 2 backwards: all fused, or none where the shape is not version 7's */
        int ran = lab::ssd7_runs - runs0;
        printf("  version 7 fused state kernels: %d of 4 calls (expected %d)\n", ran, expect_fused ? 4 : 0);
        dev_record("version 7: fused state kernels ran where the shape allows, and only there",
                   ran == (expect_fused ? 4 : 0));
    }
    lab::ssd7_fuse = fuse_arg;
    if (lab_at_least(8)) {  /* 2 backwards */
        int ran = lab::ssd8_runs - runs8;
        printf("  version 8 backward kernels: %d of 2 calls (expected %d)\n", ran, expect_v8 ? 2 : 0);
        dev_record("version 8: its backward kernels ran where the shape allows, and only there", ran == (expect_v8 ? 2 : 0));
    }
    if (lab_at_least(9)) {  /* 2 forwards, 2 backwards */
        int rf = lab::ssd9_fwd_runs - runs9f, rb = lab::ssd9_bwd_runs - runs9b;
        printf("  version 9 forward scan: %d of 2 calls (expected %d), col kernel: %d of 2 (expected %d)\n", rf,
               expect_v9f ? 2 : 0, rb, expect_v9b ? 2 : 0);
        dev_record("version 9: its forward scan ran where the shape allows, and only there", rf == (expect_v9f ? 2 : 0));
        dev_record("version 9: its col kernel ran where the shape allows, and only there", rb == (expect_v9b ? 2 : 0));
    }
    if (lab_at_least(11)) {  /* 2 forwards (the version 9 comparison forward is not counted) */
        int rf = lab::ssd11_fwd_runs - runs11f;
        printf("  version 11 forward scan: %d of 2 calls (expected %d)\n", rf, expect_v11f ? 2 : 0);
        dev_record("version 11: its forward scan ran where the shape allows, and only there",
                   rf == (expect_v11f ? 2 : 0));
    }

    free(dx); free(rdxx); free(dB); free(rdB); free(dC); free(rdC); free(ddt); free(par0);
    for (int rep = 0; rep < 2; rep++) { free(gdx[rep]); free(gddt[rep]); free(gpar[rep]); free(gdinit[rep]); }
    free(gy); free(gfin); free(ry); free(rfin); free(rdx); free(rddt); free(rpar); free(rdinit);
    free_outputs(&o);
    free_inputs(&in);
}

/* ---- benchmark shapes: slices against the recurrence, then timings ---- */
static double fwd_flops(Shape s) {
    double nch = ceil((double)s.T / s.Q), Q = s.Q;
    return 2.0 * s.B * nch * (s.G * Q * Q * s.N / 2 + s.H * (Q * Q * s.P / 2 + 2 * Q * s.P * s.N));
}
static double bwd_flops(Shape s) {
    double nch = ceil((double)s.T / s.Q), Q = s.Q;
    return 2.0 * s.B * nch * (s.G * Q * Q * s.N / 2 + s.H * (Q * Q * (2 * s.P + 2 * s.N) / 2 + 4 * Q * s.P * s.N));
}
static double fwd_bytes(Shape s) {
    double BT = (double)s.B * s.T, E = s.H * s.P;
    return BT * ((E + 2 * s.G * s.N) + s.H + E) * sizeof(floatX);
}
static double bwd_bytes(Shape s) {
    double BT = (double)s.B * s.T, E = s.H * s.P;
    return BT * (2 * (E + 2 * s.G * s.N) + 2 * s.H + E) * sizeof(floatX);
}
static void report(const char* name, float ms, double flops, double bytes, Shape s) {
    double fl = flops / TENSOR_FLOPS * 1e3, by = bytes / HBM_BYTES_PER_S * 1e3, floor_ms = fmax(fl, by);
    printf("  TIME %-28s %8.3f ms  floor %6.3f ms (%5.1f GFLOP: %.3f ms, %6.1f MB: %.3f ms)  %5.1f%% of floor "
           "speed, %6.3f ms per M tokens\n", name, ms, floor_ms, flops / 1e9, fl, bytes / 1e6, by,
           100.0 * floor_ms / ms, ms / ((double)s.B * s.T / 1e6));
}

/* llmc at a benchmark shape with packed documents (about one boundary per 512 positions, at random): the forward on
   two (b, h) slices and (check_bwd) the backward of batch element 0 against the reference with the same documents,
   then the timings with seq_idx next to times[2] (the same inputs without), printed, never asserted */
static void test_big_docs(Inputs* in, Outputs* o, int check_bwd, const float times[2]) {
    const Shape* s = &in->s;
    size_t BT = (size_t)s->B * s->T, PN = (size_t)s->P * s->N, nst = (size_t)s->B * s->H * PN;
    in->seq = (int*)mallocCheck(BT * sizeof(int));
    for (int b = 0; b < s->B; b++) {
        int doc = 0;
        for (int t = 0; t < s->T; t++) {
            doc += t > 0 && dev_rand_uniform(0.f, 1.f) < 1.f / 512.f;
            in->seq[(size_t)b * s->T + t] = doc;
        }
    }
    in->d_seq = (int*)dev_malloc(BT * sizeof(int));
    cudaCheck(cudaMemcpy(in->d_seq, in->seq, BT * sizeof(int), cudaMemcpyHostToDevice));
    printf("  with seq_idx: %d document boundaries in %d rows\n", count_boundaries(in->seq, s->B, s->T), s->B);
    dev_poison(o->y, BT * in->E * sizeof(floatX));
    run_forward(in, o, 1);
    cudaCheck(cudaDeviceSynchronize());
    float* gy = dev_download_X(o->y, BT * in->E);
    float* gfin = dev_download_F(o->final_state, nst);
    double* ry = (double*)calloc(BT * in->E, sizeof(double));
    double* rfin = (double*)calloc(nst, sizeof(double));
    int slices[2][2] = {{0, 0}, {s->B - 1, s->H - 1}};
    for (int k = 0; k < 2; k++) {
        int b = slices[k][0], h = slices[k][1];
        ref_head(in, b, h, ry, rfin, NULL, NULL, NULL);
        char name[80];
        float* gys = gather_f(gy, in->E, (size_t)b * s->T, s->T, h * s->P, s->P);
        double* rys = gather_d(ry, in->E, (size_t)b * s->T, s->T, h * s->P, s->P);
        snprintf(name, sizeof name, "y slice b=%d h=%d, seq_idx", b, h);
        check(name, gys, rys, (size_t)s->T * s->P);
        float* gfs = (float*)mallocCheck(PN * sizeof(float));
        for (size_t e = 0; e < PN; e++) gfs[e] = gfin[((size_t)b * s->H + h) * PN + e];
        snprintf(name, sizeof name, "final_state b=%d h=%d, seq_idx", b, h);
        check(name, gfs, rfin + ((size_t)b * s->H + h) * PN, PN);
        free(gys); free(rys); free(gfs);
    }
    if (check_bwd) {  /* batch element 0, all heads; d_init_state of b = 0 */
        double* rdx = (double*)calloc(BT * in->CD, sizeof(double));
        double* rddt = (double*)calloc(BT * s->H, sizeof(double));
        double* rpar = (double*)calloc(3 * s->H, sizeof(double));
        double* rdinit = (double*)calloc(nst, sizeof(double));
        for (int h = 0; h < s->H; h++) ref_head(in, 0, h, ry, rfin, rdx, rddt, rpar, rdinit);
        dev_poison(o->dxbc, BT * in->CD * sizeof(floatX));
        dev_poison(o->ddtbuf, BT * in->dstride * sizeof(floatX));
        cudaCheck(cudaMemset(o->dpar, 0, 3 * s->H * sizeof(float)));
        run_backward(in, o, 1);
        cudaCheck(cudaDeviceSynchronize());
        float* gdx = dev_download_X(o->dxbc, (size_t)s->T * in->CD);  /* rows of b = 0 */
        float* gdt = dev_download_X(o->ddtbuf, (size_t)s->T * in->dstride);
        float* gdi = dev_download_F(o->dinit, (size_t)s->H * PN);      /* b = 0 */
        const char* names[3] = {"dx (b=0), seq_idx", "dB (b=0), seq_idx", "dC (b=0), seq_idx"};
        int c0[3] = {0, in->E, in->E + s->G * s->N}, nc[3] = {in->E, s->G * s->N, s->G * s->N};
        for (int k = 0; k < 3; k++) {
            float* g = gather_f(gdx, in->CD, 0, s->T, c0[k], nc[k]);
            double* r = gather_d(rdx, in->CD, 0, s->T, c0[k], nc[k]);
            check(names[k], g, r, (size_t)s->T * nc[k]);
            free(g); free(r);
        }
        float* g = gather_f(gdt, in->dstride, 0, s->T, in->dcol, s->H);
        check("ddt_raw (b=0), seq_idx", g, rddt, (size_t)s->T * s->H);
        check("d_init_state (b=0), seq_idx", gdi, rdinit, (size_t)s->H * PN);
        free(g); free(gdx); free(gdt); free(gdi); free(rdx); free(rddt); free(rpar); free(rdinit);
    }
    check_llmc_path(*s, check_bwd);
    free(gy); free(gfin); free(ry); free(rfin);
    int reps = 20;
    float td[2];
    td[0] = dev_bench_ms(reps, [&]() { run_forward(in, o, 0); });
    td[1] = dev_bench_ms(reps, [&]() { run_forward(in, o, 0); run_backward(in, o); });
    report("forward, seq_idx", td[0], fwd_flops(*s), fwd_bytes(*s), *s);
    report("forward+backward, seq_idx", td[1], fwd_flops(*s) + bwd_flops(*s), fwd_bytes(*s) + bwd_bytes(*s), *s);
    printf("  TIME seq_idx cost: forward %+.1f%%, forward+backward %+.1f%% (against the same inputs without)\n",
           100.0 * (td[0] / times[0] - 1.0), 100.0 * (td[1] / times[1] - 1.0));
}

static void test_big(Shape s, int check_bwd, float times[2]) {
    printf("%s benchmark shape B=%d T=%d H=%d P=%d N=%d G=%d Q=%d (%s)\n", vname(g_version), s.B, s.T, s.H, s.P, s.N, s.G, s.Q,
           PRECISION_NAME);
    Inputs in = make_inputs(s);
    Outputs o = alloc_outputs(&in);
    size_t BT = (size_t)s.B * s.T, PN = (size_t)s.P * s.N, nst = (size_t)s.B * s.H * PN;
    dev_poison(o.y, BT * in.E * sizeof(floatX));
    int runs0 = lab::ssd7_runs, runs8 = lab::ssd8_runs, runs9f = lab::ssd9_fwd_runs, runs9b = lab::ssd9_bwd_runs;
    int runs11f = lab::ssd11_fwd_runs;
    run_forward(&in, &o, 1);
    cudaCheck(cudaDeviceSynchronize());
    if (lab_at_least(7)) printf("  version 7 fused state kernel: %s\n", lab::ssd7_runs > runs0 ? "yes" : "no (version 6's path)");
    if (lab_at_least(9)) printf("  version 9 forward scan: %s\n", lab::ssd9_fwd_runs > runs9f ? "yes" : "no (version 8's)");
    int ran11 = lab::ssd11_fwd_runs > runs11f;
    if (lab_at_least(11)) printf("  version 11 forward scan: %s\n", ran11 ? "yes" : "no (version 9's)");
    float* gy = dev_download_X(o.y, BT * in.E);
    float* gfin = dev_download_F(o.final_state, nst);
    if (ran11) check_v11_against_v9(&in, &o, gy, BT * in.E, "y of version 11 and of version 9");
    double* ry = (double*)calloc(BT * in.E, sizeof(double));
    double* rfin = (double*)calloc(nst, sizeof(double));
    int slices[2][2] = {{0, 0}, {s.B - 1, s.H - 1}};
    for (int k = 0; k < 2; k++) {
        int b = slices[k][0], h = slices[k][1];
        ref_head(&in, b, h, ry, rfin, NULL, NULL, NULL);
        char name[64];
        float* gys = gather_f(gy, in.E, (size_t)b * s.T, s.T, h * s.P, s.P);
        double* rys = gather_d(ry, in.E, (size_t)b * s.T, s.T, h * s.P, s.P);
        snprintf(name, sizeof name, "y slice b=%d h=%d", b, h);
        check(name, gys, rys, (size_t)s.T * s.P);
        float* gfs = (float*)mallocCheck(PN * sizeof(float));
        for (size_t e = 0; e < PN; e++) gfs[e] = gfin[((size_t)b * s.H + h) * PN + e];
        snprintf(name, sizeof name, "final_state b=%d h=%d", b, h);
        check(name, gfs, rfin + ((size_t)b * s.H + h) * PN, PN);
        free(gys); free(rys); free(gfs);
    }
    if (check_bwd) {  /* batch element 0, all heads (dB, dC sum over them) */
        double* rdx = (double*)calloc((size_t)s.T * in.CD * s.B, sizeof(double));
        double* rddt = (double*)calloc(BT * s.H, sizeof(double));
        double* rpar = (double*)calloc(3 * s.H, sizeof(double));
        for (int h = 0; h < s.H; h++) ref_head(&in, 0, h, ry, rfin, rdx, rddt, rpar);
        dev_poison(o.dxbc, BT * in.CD * sizeof(floatX));
        dev_poison(o.ddtbuf, BT * in.dstride * sizeof(floatX));
        cudaCheck(cudaMemset(o.dpar, 0, 3 * s.H * sizeof(float)));
        run_backward(&in, &o);
        cudaCheck(cudaDeviceSynchronize());
        float* gdx = dev_download_X(o.dxbc, (size_t)s.T * in.CD);  /* rows of b = 0 */
        float* gdt = dev_download_X(o.ddtbuf, (size_t)s.T * in.dstride);
        const char* names[3] = {"dx (b=0)", "dB (b=0)", "dC (b=0)"};
        int c0[3] = {0, in.E, in.E + s.G * s.N}, nc[3] = {in.E, s.G * s.N, s.G * s.N};
        for (int k = 0; k < 3; k++) {
            float* g = gather_f(gdx, in.CD, 0, s.T, c0[k], nc[k]);
            double* r = gather_d(rdx, in.CD, 0, s.T, c0[k], nc[k]);
            check(names[k], g, r, (size_t)s.T * nc[k]);
            free(g); free(r);
        }
        float* g = gather_f(gdt, in.dstride, 0, s.T, in.dcol, s.H);
        check("ddt_raw (b=0)", g, rddt, (size_t)s.T * s.H);
        if (lab_at_least(8)) printf("  version 8 backward kernels: %s\n", lab::ssd8_runs > runs8 ? "yes" : "no (version 7's)");
        if (lab_at_least(9)) printf("  version 9 col kernel: %s\n", lab::ssd9_bwd_runs > runs9b ? "yes" : "no (version 8's)");
        free(g); free(gdx); free(gdt); free(rdx); free(rddt); free(rpar);
    }
    if (g_version == V_LLMC) {  /* o holds the forward and (check_bwd) the backward from zeros */
        check_llmc_path(s, check_bwd);
        check_llmc_against_lab(&in, &o, NULL, check_bwd);
    }
    free(gy); free(gfin); free(ry); free(rfin);
    /* timings */
    int reps = 20;
    times[0] = dev_bench_ms(reps, [&]() { run_forward(&in, &o, 0); });
    times[1] = dev_bench_ms(reps, [&]() { run_forward(&in, &o, 0); run_backward(&in, &o); });
    report("forward", times[0], fwd_flops(s), fwd_bytes(s), s);
    report("forward+backward", times[1], fwd_flops(s) + bwd_flops(s), fwd_bytes(s) + bwd_bytes(s), s);
    if (g_version == V_LLMC) test_big_docs(&in, &o, check_bwd, times);
    free_outputs(&o);
    free_inputs(&in);
}

int main(int argc, char** argv) {
    /* arguments, in any order: "small" (small-shape checks only), version numbers (default: every version) */
    int small_only = 0, profile = 0, want[V_LLMC + 1] = {0}, any_version = 0, big_q = 256;
    for (int k = 1; k < argc; k++) {
        if (strcmp(argv[k], "small") == 0) small_only = 1;
        else if (strcmp(argv[k], "profile") == 0) profile = 1;
        else if (strncmp(argv[k], "hg=", 3) == 0 && atoi(argv[k] + 3) >= 1) lab::ssd4_hg_max = atoi(argv[k] + 3);
        else if (strncmp(argv[k], "wg=", 3) == 0 && atoi(argv[k] + 3) >= 1 && atoi(argv[k] + 3) <= 2)
            lab::ssd5_wgs = atoi(argv[k] + 3); /* version 5's warpgroups per forward block */
        else if (strcmp(argv[k], "lines=0") == 0 || strcmp(argv[k], "lines=1") == 0)
            lab::ssd5_lines = argv[k][6] - '0'; /* version 5's tile-load thread order */
        else if (strncmp(argv[k], "parts=", 6) == 0 && atoi(argv[k] + 6) >= 0 && atoi(argv[k] + 6) <= 7)
            lab::ssd6_parts = atoi(argv[k] + 6); /* version 6's kernels: bit 0 2-head forward, 1 chunk state, 2 dC */
        else if (strncmp(argv[k], "fuse=", 5) == 0 && atoi(argv[k] + 5) >= 0 && atoi(argv[k] + 5) <= 2)
            lab::ssd7_fuse = atoi(argv[k] + 5); /* version 7: 0 never, 1 where the grid fills the GPU, 2 always */
        else if (strcmp(argv[k], "ns=32") == 0 || strcmp(argv[k], "ns=64") == 0)
            lab::ssd7_ns = atoi(argv[k] + 3); /* version 7's state columns per block */
        else if (strcmp(argv[k], "split=0") == 0 || strcmp(argv[k], "split=1") == 0)
            lab::ssd7_split = atoi(argv[k] + 6); /* version 7's hi + lo split: per block in smem (1) or per warp (0) */
        else if (strcmp(argv[k], "st=2") == 0 || strcmp(argv[k], "st=3") == 0)
            lab::ssd7_stages = atoi(argv[k] + 3); /* version 7's tile buffers */
        else if (strncmp(argv[k], "v9=", 3) == 0 && atoi(argv[k] + 3) >= 0 && atoi(argv[k] + 3) <= 3)
            lab::ssd9_parts = atoi(argv[k] + 3); /* version 9's parts: bit 0 the forward scan, bit 1 the col kernel */
        else if (strcmp(argv[k], "v11=0") == 0 || strcmp(argv[k], "v11=1") == 0)
            lab::ssd11_fwd = argv[k][4] - '0'; /* version 11's forward scan (0: version 9's under version 11) */
        else if (strncmp(argv[k], "Q=", 2) == 0 && atoi(argv[k] + 2) >= 16 && atoi(argv[k] + 2) <= 256)
            big_q = atoi(argv[k] + 2); /* the chunk length of the benchmark shapes (an algorithm choice) */
        else if (atoi(argv[k]) >= 1 && atoi(argv[k]) <= NVERSIONS) want[atoi(argv[k])] = any_version = 1;
        else if (strcmp(argv[k], "llmc") == 0 || strcmp(argv[k], "default") == 0) want[V_LLMC] = any_version = 1;
        else {
            fprintf(stderr, "ssd: unknown argument '%s'; use 'small', 'profile', 'hg=K' (version 4's most heads per "
                    "block), 'wg=1|2' (version 5's warpgroups per forward block), 'lines=0|1' (its tile-load order), 'parts=K' (version 6's kernels, 0 to 7: 1 2-head forward, 2 chunk state on wgmma, 4 dC on wgmma), 'fuse=0|1|2', 'ns=32|64', 'st=2|3', 'split=0|1' (version 7's fused state kernels: never / where the grid fills the GPU / always; state columns per block; tile buffers; hi + lo split in registers per warp / once per block in shared memory), 'v9=0..3' (version 9's parts: 1 the forward scan, 2 the col kernel), 'v11=0|1' (version 11's forward scan), 'Q=K' (benchmark chunk length, 16 to 256) and/or version numbers 1 to %d, 'llmc' or 'default' (llmc/ssd.cuh's default path)\n", argv[k], NVERSIONS);
            return EXIT_FAILURE;
        }
    }
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    gpu_arch_check();
    gpu_path_print(stdout);
    printf("ssd dev program, %s, device %s, version 4 with at most %d heads per block, version 5 with %d warpgroups "
           "per forward block and load order %d, version 6 parts %d, version 7 fuse %d ns %d stages %d split %d, "
           "version 9 parts %d, version 11 forward %d, benchmark chunk Q=%d\n", PRECISION_NAME, prop.name, lab::ssd4_hg_max,
           lab::ssd5_wgs, lab::ssd5_lines, lab::ssd6_parts, lab::ssd7_fuse, lab::ssd7_ns, lab::ssd7_stages, lab::ssd7_split, lab::ssd9_parts, lab::ssd11_fwd, big_q);
    Shape small[] = {
        {2, 100, 4, 16, 16, 1, 32, 1},   /* the brief's shape, partial last chunk */
        {2, 100, 4, 16, 16, 2, 32, 1},   /* two groups */
        {1, 200, 4, 32, 64, 2, 64, 0},   /* P != N, no initial state */
        {1, 300, 2, 128, 128, 1, 256, 1},/* the largest P, N and Q */
        {2, 37, 6, 64, 32, 3, 16, 1},    /* smallest Q, three groups */
        {1, 150, 8, 32, 64, 1, 64, 1},   /* 8 heads per group: version 4 sums two head-groups of 4 (group sum pass) */
        {2, 90, 10, 16, 32, 2, 32, 0},   /* 5 heads per group: version 4 runs one head per block (5 partials) */
        {2, 130, 4, 64, 64, 2, 64, 1},   /* version 5's P = 64, N = 64 kernel; partial chunk, two groups */
        {1, 200, 2, 128, 64, 1, 128, 0}, /* version 5's P = 128, N = 64 kernel (N = 128 pairs: shape 4, benchmarks) */
        {2, 160, 4, 64, 128, 1, 256, 1}, /* version 5's benchmark kernel on a partial 256-step chunk */
        {2, 200, 8, 64, 128, 1, 128, 1}, /* version 8's trainer kernels (Q = 128): 2 head-groups of 4, partial chunk */
        {1, 230, 4, 64, 128, 1, 64, 0},  /* version 8 at Q = 64: one head-group, dB / dC written directly */
    };
    /* packed documents (seq_idx, make_docs), llmc only: each of its paths (bf16 build, H100 / H200 with 132 SMs;
       MAMBA2_PORTABLE=1 turns the wgmma scans into mma.sync; the fp32 build runs the simple kernels everywhere) */
    Shape small_docs[] = {
        {2, 300, 66, 64, 64, 1, 64, 1, 1},  /* B H >= the SM count: fused state scans, wgmma pair, tuned backward */
        {2, 200, 4, 64, 128, 1, 128, 0, 1}, /* chunk-parallel states, wgmma pair, tuned backward (Q = 128), no init */
        {1, 300, 2, 128, 64, 2, 256, 1, 1}, /* one head per group: one-head wgmma; Q = 256: untuned backward tiles */
        {2, 100, 4, 16, 16, 2, 32, 1, 1},   /* P, N = 16: mma.sync forward, untuned tiles, chunk-parallel states */
        {2, 37, 6, 64, 32, 3, 16, 0, 1},    /* the smallest Q (boundaries at Q - 1, Q, Q + 1, 2Q, 3Q - 1) */
        {2, 90, 3, 24, 40, 1, 32, 1, 1},    /* P, N not multiples of 16: the simple kernels in the bf16 build */
    };
    Shape big[3] = {{8, 2048, 24, 64, 128, 1, big_q, 1}, {1, 8192, 24, 64, 128, 1, big_q, 1},
                    {1, 32768, 24, 64, 128, 1, big_q, 1}};
    if (profile) {  /* one forward and one backward per version at the first benchmark shape, for ncu */
        for (int v = 1; v <= V_LLMC; v++) {
            if (any_version && !want[v]) continue;
            g_version = v;
            Inputs in = make_inputs(big[0]);
            Outputs o = alloc_outputs(&in);
            run_forward(&in, &o, 1);
            run_backward(&in, &o);
            cudaCheck(cudaDeviceSynchronize());
            free_outputs(&o);
            free_inputs(&in);
        }
        return EXIT_SUCCESS;
    }
    float t[V_LLMC + 1][3][2];
    for (int v = 1; v <= V_LLMC; v++) {
        if (any_version && !want[v]) continue;
        g_version = v;
        printf("=== version %s ===\n", vname(v));
        for (size_t k = 0; k < sizeof small / sizeof small[0]; k++) {
            if (v == V_LLMC && llmc_refuses(small[k])) {
                printf("  B=%d T=%d H=%d P=%d N=%d: llmc's backward refuses this shape under %d bytes of shared memory "
                       "per block (doc/gpus.md): skipped\n", small[k].B, small[k].T, small[k].H, small[k].P, small[k].N,
                       cuda_smem_optin());
                continue;
            }
            test_small(small[k]);
        }
        if (v == V_LLMC)
            for (size_t k = 0; k < sizeof small_docs / sizeof small_docs[0]; k++) {
                if (llmc_refuses(small_docs[k])) continue;
                test_small(small_docs[k]);
            }
        if (!small_only)
            for (int k = 0; k < 3; k++) test_big(big[k], k == 0, t[v][k]);
    }
    if (!small_only) {
        printf("summary (%s, %s, Q=%d): version | shape | fwd ms | fwd+bwd ms | fwd+bwd ms per M tokens\n",
               PRECISION_NAME, prop.name, big_q);
        for (int v = 1; v <= V_LLMC; v++) {
            if (any_version && !want[v]) continue;
            for (int k = 0; k < 3; k++)
                printf("  %s | B=%d T=%-6d | %8.3f | %8.3f | %8.3f\n", vname(v), big[k].B, big[k].T, t[v][k][0], t[v][k][1],
                       t[v][k][1] / ((double)big[k].B * big[k].T / 1e6));
        }
    }
    return dev_finish();
}
