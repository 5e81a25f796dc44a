/*
 * ssd_ws.cu: test and benchmark of the warp-specialized dC kernel (dev/cuda/ssd_ws.cuh, issue #28) against llmc's
 * ssd_bwd_dc_kernel, inside llmc's backward.
 *
 * For each shape: random inputs (SPEC 5's dt / A ranges, as dev/cuda/ssd.cu), llmc's ssd_forward, then
 *   1. the reference: llmc's ssd_backward (its SSDPath must be the tuned tile path, whose dC kernel is replaced);
 *   2. the same backward composed here from llmc's own launchers and kernels (state pass, B.C, dxdb, dC, group sum,
 *      dt, parameter sums, in ssd_backward's order and launch shapes), with llmc's dC kernel: every output must be
 *      bitwise the reference's (this proves the composition is llmc's backward);
 *   3. the composition with a warp-specialized dC kernel substituted (ssd_ws_dc_kernel, one block per work item,
 *      and ssd_ws_dc_persist_kernel, one block an SM looping over the items), each at llmc's head-group size (dC as
 *      bf16 partials where llmc writes partials) and, where it differs, at hg = H/G (dC straight into dxbc): every output
 *      against the reference: dx, dB and d_D bitwise (the kernel does not reach them), dC (dxbc), ddt_raw,
 *      d_dt_bias, d_A_log and the intermediates rowi (dy.y_off) and the dC partials within a tolerance (below);
 *      run twice: bitwise identical (deterministic: fixed reduction order, no atomics);
 *   4. at the benchmark shapes: timings (median of 30 runs after 5 warm-ups, cudaEvents) of llmc's dC kernel and
 *      each new one alone, and of the whole backward (ssd_backward, and the composition with each dC kernel),
 *      each against its floor (HBM bytes at SSD_WS_HBM, tensor FLOPs at SSD_WS_TFLOPS: H100 SXM figures; an H200
 *      has 4.8 TB/s). Also llmc's dxdb kernel alone against its floor (dxdb_floor): the next kernel of issue #28,
 *      whose warp-specialized form is only designed so far (NOTES_ssd.md, last section).
 * Tolerances: the new kernel sums in another order (wgmma's K steps, the consumers' K halves added at the end, the
 * state term's rowi in two halves) and rounds the score tile WD to bf16 from slightly different fp32 values, so
 * outputs are not bitwise llmc's. bf16 outputs (dC, its partials, ddt_raw): |got - ref| <= 1e-2 rms(ref) + 2e-2 |ref|
 * per element (1-2 bf16 ulps) and ||got - ref|| / ||ref|| <= 1e-2; fp32 (rowi, d_dt_bias, d_A_log): 1e-3 rms(ref) +
 * 1e-3 |ref| and norm 1e-3. Each tolerance is shown to reject a copy with one element moved by 10x it.
 * The exact dC (exact_dc: double on the host from the inputs the kernels read) judges the dC elements in question:
 * a ws dC element past the bound against llmc's passes if it is within the bound of the exact value and no farther
 * from it than llmc's (dc_check_exact: llmc's bf16 partial sums are the worse of the two at rare cancelling elements);
 * after each ws variant's checks, its worst element (the 3 worst where any is past the bound) with llmc's, the ws
 * value and exact, each error against exact and the sum of |terms| (is it a cancelling sum, which kernel is closer);
 * per shape one check that exact agrees with llmc at 16 ordinary elements (this validates the host formula).
 *
 * Usage: ./dev/cuda/ssd_ws_bin [small|bench|all] (default all). Prints "N passed, N failed"; exits 1 on a failure.
 * ./dev/cuda/ssd_ws_bin profile runs each dC kernel once at the 130M shape (Q = 128) for ncu, without checks.
 * A hang in the kernel's pipeline (an mbarrier wait past 4 s) ends the program with a message (SSD_WS_HANG_CHECK).
 */
#include <math.h>
#include <string.h>
#include "llmc/cuda_common.h"
#include "llmc/wgmma.cuh"
#include "llmc/gpu_arch.cuh"
#include "llmc/ssd.cuh"
#include "dev/cuda/kernels_dev.h"
#include "dev/cuda/ssd_ws.cuh"

#define SSD_WS_HBM 3.35e12    /* H100 SXM HBM3, bytes/s */
#define SSD_WS_TFLOPS 989e12  /* H100 SXM bf16 dense tensor peak, FLOP/s */

typedef struct {
    const char* name;
    int B, T, H, G, Q, bench;
} WsShape;

static int* g_err = NULL;  /* host-mapped: the hang guard's code, block x y z, thread, parity */
static int* g_err_dev = NULL;

static void check_hang_flag(const char* where) {
    volatile int* e = g_err;
    if (e[0] != 0) {
        fprintf(stderr, "ssd_ws: the kernel's pipeline timed out during %s: %s, block (%d, %d, %d), thread %d, "
                "parity %d\n", where, e[0] == 1 ? "the producer waiting for an empty stage" :
                e[0] == 2 ? "consumer 0 waiting for a full stage" : e[0] == 3 ? "consumer 1 waiting for a full stage" :
                "the producer waiting for an empty item slot (persistent form)",
                e[1], e[2], e[3], e[4], e[5]);
        exit(EXIT_FAILURE);
    }
}
/* synchronize; a kernel error (a trap of the hang guard, a bad address) names where it happened */
static void sync_check(const char* where) {
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        fprintf(stderr, "ssd_ws: CUDA error during %s: %s\n", where, cudaGetErrorString(e));
        check_hang_flag(where);
        exit(EXIT_FAILURE);
    }
    check_hang_flag(where);
}

typedef struct {
    WsShape s;
    int P, N, E, CD, dstride, nch, hg_llmc, direct_llmc;
    floatX *xbc, *dtraw, *dy, *y;
    float *dt_bias, *A_log, *Dskip;
    void *saved, *ws;
    SSDSaved sv;
    SSDWork w;
    int state_path;
    /* outputs of one backward */
    floatX *dxbc, *ddt;
    float* dpar;
} Problem;

static Problem make_problem(WsShape s) {
    Problem p;
    memset(&p, 0, sizeof p);
    p.s = s;
    p.P = 64;
    p.N = 128;
    p.E = s.H * p.P;
    p.CD = p.E + 2 * s.G * p.N;
    p.dstride = s.H;
    p.nch = ssd_nchunks(s.T, s.Q);
    p.hg_llmc = ssd_bwd_heads_per_block(s.H, s.G);
    p.direct_llmc = p.hg_llmc == s.H / s.G;
    size_t BT = (size_t)s.B * s.T;
    float* xbc = dev_random_floats(BT * p.CD, -1.f, 1.f);
    float* dtraw = dev_random_floats(BT * p.dstride, -1.f, 1.f);
    float* dy = dev_random_floats(BT * p.E, -1.f, 1.f);
    float* dt_bias = (float*)mallocCheck(s.H * sizeof(float));
    float* A_log = (float*)mallocCheck(s.H * sizeof(float));
    float* Dskip = dev_random_floats(s.H, 0.5f, 1.5f);
    for (int h = 0; h < s.H; h++) {  /* SPEC 5: dt = exp(U(log 1e-3, log 0.1)), dt_bias = its inverse softplus */
        float dt = expf(dev_rand_uniform(logf(1e-3f), logf(0.1f)));
        dt_bias[h] = dt + logf(-expm1f(-dt));
        A_log[h] = logf(dev_rand_uniform(1.f, 16.f));
    }
    p.xbc = dev_upload_X(xbc, BT * p.CD);
    p.dtraw = dev_upload_X(dtraw, BT * p.dstride);
    p.dy = dev_upload_X(dy, BT * p.E);
    p.dt_bias = dev_upload_F(dt_bias, s.H);
    p.A_log = dev_upload_F(A_log, s.H);
    p.Dskip = dev_upload_F(Dskip, s.H);
    free(xbc); free(dtraw); free(dy); free(dt_bias); free(A_log); free(Dskip);
    p.y = (floatX*)dev_malloc(BT * p.E * sizeof(floatX));
    p.saved = dev_malloc(ssd_saved_bytes(s.B, s.T, s.H, p.P, p.N, s.Q));
    size_t wsb = ssd_workspace_bytes(s.B, s.T, s.H, p.P, p.N, s.G, s.Q);
    p.ws = dev_malloc(wsb);
    cudaCheck(cudaMemset(p.ws, 0, wsb));
    p.sv = ssd_saved_layout(p.saved, s.B, s.T, s.H, p.P, p.N, s.Q);
    p.sv.seg = NULL;  /* no document boundaries */
    p.w = ssd_work_layout(p.ws, ssd_bwd_kernels(s.H, p.P, p.N, cuda_smem_optin()), s.B, s.T, s.H, p.P, p.N, s.G, s.Q);
    p.dxbc = (floatX*)dev_malloc(BT * p.CD * sizeof(floatX));
    p.ddt = (floatX*)dev_malloc(BT * p.dstride * sizeof(floatX));
    p.dpar = (float*)dev_malloc(3 * s.H * sizeof(float));
    return p;
}
static void free_problem(Problem* p) {
    void* ptrs[] = {p->xbc, p->dtraw, p->dy, p->y, p->dt_bias, p->A_log, p->Dskip, p->saved, p->ws, p->dxbc, p->ddt,
                    p->dpar};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) cudaCheck(cudaFree(ptrs[i]));
}

/* llmc's bf16 partial buffers, as ssd_launch_bwd_tiles_s places them */
static floatX* part_B(const Problem* p) { return p->direct_llmc ? p->dxbc : (floatX*)p->w.dB_h; }
static floatX* part_C(const Problem* p) { return p->direct_llmc ? p->dxbc : (floatX*)p->w.dC_h; }

/* which dC kernel the composed backward runs: llmc's, or ssd_ws_dc_kernel / the persistent form at llmc's head-group
   size (partials where llmc writes partials) or at hg = H/G (dC straight into dxbc) */
enum { DC_LLMC = 0, DC_WS_LLMC_HG, DC_WS_DIRECT, DC_WS2_LLMC_HG, DC_WS2_DIRECT };
static const char* dc_name(int v) {
    static const char* names[] = {"llmc dC", "ws dC", "ws dC", "ws persistent dC", "ws persistent dC"};
    return names[v];
}
static int dc_direct(int v) { return v == DC_WS_DIRECT || v == DC_WS2_DIRECT; }

static void launch_llmc_dc(const Problem* p) {
    const WsShape& s = p->s;
    int nti = CEIL_DIV(s.Q, SSD_MMA_ROWS), nhg = s.H / p->hg_llmc;
    size_t smem = ssd_smem_dc(p->P, p->N);
    ssd_set_smem((const void*)ssd_bwd_dc_kernel<64, 128, true, true, false>, smem);
    ssd_bwd_dc_kernel<64, 128, true, true, false><<<dim3(nti, p->nch, s.B * nhg), SSD_MMA_THREADS, smem>>>(
        part_C(p), p->direct_llmc ? p->CD : nhg * p->N, p->E + s.G * p->N, p->direct_llmc, p->w.roww, p->dy, p->xbc,
        p->CD, p->sv.dt, p->sv.cum, NULL, p->sv.states, s.T, s.H, p->P, p->N, s.G, s.Q, p->hg_llmc);
    cudaCheckLast();
}
static void launch_ws_dc(const Problem* p, int variant) {
    const WsShape& s = p->s;
    int direct = dc_direct(variant) || p->direct_llmc, hg = dc_direct(variant) ? s.H / s.G : p->hg_llmc;
    floatX* dco = direct ? p->dxbc : part_C(p);
    int stride = direct ? p->CD : (s.H / hg) * p->N;
    if (variant == DC_WS_LLMC_HG || variant == DC_WS_DIRECT)
        ssd_ws_launch_dc(dco, stride, p->E + s.G * p->N, direct, p->w.roww, p->dy, p->xbc, p->CD, p->sv.dt, p->sv.cum,
                         p->sv.states, s.B, s.T, s.H, s.G, s.Q, hg, g_err_dev, 0);
    else
        ssd_ws_launch_dc_persist(dco, stride, p->E + s.G * p->N, direct, p->w.roww, p->dy, p->xbc, p->CD, p->sv.dt,
                                 p->sv.cum, p->sv.states, s.B, s.T, s.H, s.G, s.Q, hg, g_err_dev, 0);
}
static void launch_group_sum(const Problem* p) {
    if (p->direct_llmc) return;
    const WsShape& s = p->s;
    size_t n = (size_t)s.B * s.T * s.G * (p->N / 8);
    ssd_bwd_group_sum_kernel<<<(unsigned)CEIL_DIV(n, (size_t)256), 256>>>(p->dxbc, p->CD, part_B(p), part_C(p),
                                                                         s.B * s.T, s.H / p->hg_llmc, p->N, s.G, p->E);
    cudaCheckLast();
}

/* the workspace's rowp region, after colf (w.colw, (B, H, nchunks, Q)), as ssd_backward places it */
static float* ws_rowp(const Problem* p) { return p->w.colw + (size_t)p->s.B * p->s.H * p->nch * p->s.Q; }

/* llmc's dxdb kernel as ssd_backward launches it (the composition below, and its benchmark line alone); reads the
   B.C slab (w.bct) and dH_c (w.dstates) the kernels before it wrote */
static void launch_llmc_dxdb(const Problem* p) {
    const WsShape& s = p->s;
    int nti = CEIL_DIV(s.Q, SSD_MMA_ROWS), hg = p->hg_llmc, nhg = s.H / hg, N = p->N;
    size_t smem = ssd_smem_dxdb(p->P, N) + ssd_smem_slab();
    ssd_set_smem((const void*)ssd_bwd_dxdb_kernel<64, 128, true, true, false>, smem);
    ssd_bwd_dxdb_kernel<64, 128, true, true, false><<<dim3(nti, p->nch, s.B * nhg), SSD_MMA_THREADS, smem>>>(
        p->dxbc, part_B(p), p->direct_llmc ? p->CD : nhg * N, p->E, p->direct_llmc, p->w.xdxs, p->w.xdxs_st, p->w.xdy,
        p->w.colw, ws_rowp(p), p->dy, p->xbc, p->CD, p->sv.dt, p->sv.cum, NULL, p->w.dstates, p->w.bct, p->Dskip, s.T,
        s.H, p->P, N, s.G, s.Q, hg);
    cudaCheckLast();
}

/* llmc's ssd_backward at this shape (no seq_idx, no d_init_state), composed from its launchers and kernels in its
   order, with the dC kernel chosen by `variant`. Writes p->dxbc, p->ddt and (+=) p->dpar. */
static void composed_backward(const Problem* p, int variant) {
    const WsShape& s = p->s;
    int B = s.B, T = s.T, H = s.H, G = s.G, Q = s.Q, P = p->P, N = p->N, E = p->E, nch = p->nch;
    int nsplit = ssd_nsplit(P, N), nti = CEIL_DIV(Q, SSD_MMA_ROWS);
    SSDWork w = p->w;
    if (p->state_path == SSD_STATE_FUSED) {
        ssd_launch_state_scan<1>(w.dstates, NULL, NULL, w.dotp, p->sv.states, p->dy, E, p->xbc, p->CD, E + G * N, p->sv,
                                 B, T, H, P, N, G, Q, 0);
        nsplit = ssd_state_scan_nsplit(P, N);
    } else {
        ssd_launch_chunk_state(w.dstates, p->dy, E, p->xbc, p->CD, E + G * N, p->sv, 1, B, T, H, P, N, G, Q, 0);
        ssd_launch_dstate_pass(w.dstates, w.dotp, NULL, p->sv.states, p->sv.cum, NULL, B, T, H, P * N, Q, nsplit, 0);
    }
    ssd_bwd_bct_kernel<<<dim3(nch * nti * nti, B * G), SSD_MMA_THREADS>>>(w.bct, p->xbc, p->CD, T, H, P, N, G, Q);
    cudaCheckLast();
    launch_llmc_dxdb(p);
    if (variant == DC_LLMC) {
        launch_llmc_dc(p);
        launch_group_sum(p);
    } else if (!dc_direct(variant)) {
        launch_ws_dc(p, variant);
        launch_group_sum(p);
    } else {  /* dC straight into dxbc: the group sum (dB, and llmc's stale dC partials) first */
        launch_group_sum(p);
        launch_ws_dc(p, variant);
    }
    ssd_bwd_dt_kernel<<<dim3(nch, B * H), 32>>>(p->ddt, p->dstride, w.part, p->sv.dt, p->sv.cum, w.roww, ws_rowp(p),
                                                w.colw, w.xdxs, w.xdxs_st, w.xdy, w.dotp, nsplit, p->dtraw, p->dt_bias,
                                                p->A_log, B, T, H, Q);
    cudaCheckLast();
    ssd_bwd_param_sum_kernel<<<CEIL_DIV(3 * H, 64), 64>>>(p->dpar, p->dpar + H, p->dpar + 2 * H, w.part, B, H, nch);
    cudaCheckLast();
}
static SSDPath llmc_backward(Problem* p) {
    const WsShape& s = p->s;
    return ssd_backward(p->dxbc, p->ddt, p->dpar, p->dpar + s.H, p->dpar + 2 * s.H, NULL, p->dy, p->saved, p->xbc,
                        p->CD, p->dtraw, p->dstride, p->dt_bias, p->A_log, p->Dskip, NULL, NULL, p->ws, s.B, s.T, s.H,
                        p->P, p->N, s.G, s.Q, 0);
}

/* ---- what one backward produced, on the host ---- */
typedef struct {
    float *dx, *dB, *dC, *ddt, *dpar, *rowi, *partC;
    size_t n_x, n_bc, n_ddt, n_rowi, n_part;
    int E, T;  /* for the failure messages' row / column */
} Outs;

static float* bf16_to_float(const floatX* d, size_t n) { return dev_download_X(d, n); }
static Outs download_outs(const Problem* p) {
    const WsShape& s = p->s;
    Outs o;
    size_t BT = (size_t)s.B * s.T;
    float* all = bf16_to_float(p->dxbc, BT * p->CD);
    o.n_x = BT * p->E;
    o.E = p->E;
    o.T = s.T;
    o.n_bc = BT * s.G * p->N;
    o.dx = (float*)mallocCheck(o.n_x * sizeof(float));
    o.dB = (float*)mallocCheck(o.n_bc * sizeof(float));
    o.dC = (float*)mallocCheck(o.n_bc * sizeof(float));
    for (size_t r = 0; r < BT; r++) {
        memcpy(o.dx + r * p->E, all + r * p->CD, p->E * sizeof(float));
        memcpy(o.dB + r * s.G * p->N, all + r * p->CD + p->E, s.G * p->N * sizeof(float));
        memcpy(o.dC + r * s.G * p->N, all + r * p->CD + p->E + s.G * p->N, s.G * p->N * sizeof(float));
    }
    free(all);
    o.n_ddt = BT * p->dstride;
    o.ddt = bf16_to_float(p->ddt, o.n_ddt);
    o.dpar = dev_download_F(p->dpar, 3 * s.H);
    o.n_rowi = (size_t)s.B * s.H * s.T;
    o.rowi = dev_download_F(p->w.roww, o.n_rowi);
    o.n_part = p->direct_llmc ? 0 : BT * (s.H / p->hg_llmc) * p->N;
    o.partC = o.n_part ? bf16_to_float(part_C(p), o.n_part) : NULL;
    return o;
}
static void free_outs(Outs* o) {
    free(o->dx); free(o->dB); free(o->dC); free(o->ddt); free(o->dpar); free(o->rowi);
    if (o->partC) free(o->partC);
}

/* the row length the failure messages decode a flat index with (dC: G N per position; rowi: T per (b, h)) */
static size_t g_tol_cols = 1;
/* per-element |got - ref| <= atol + rtol |ref| with atol = afrac rms(ref), and the norm-relative error <= nmax;
   prints the errors; quiet: only the verdict */
static int tol_compare(const char* name, const float* got, const float* ref, size_t n, double afrac, double rtol,
                       double nmax, int quiet) {
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)ref[i] * ref[i];
    double rms = n ? sqrt(ss / n) : 0.0, atol = afrac * rms;
    double max_abs = 0.0, max_rel = 0.0, num = 0.0;
    size_t bad = 0, first = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], r = ref[i], e = fabs(g - r);
        if (!(e == e) || isinf(g)) { bad++; if (first == (size_t)-1) first = i; continue; }
        if (e > max_abs) max_abs = e;
        if (fabs(r) > atol && e / fabs(r) > max_rel) max_rel = e / fabs(r);
        num += e * e;
        if (e > atol + rtol * fabs(r)) { bad++; if (first == (size_t)-1) first = i; }
    }
    double nrel = ss > 0 ? sqrt(num / ss) : sqrt(num);
    int ok = bad == 0 && nrel <= nmax;
    if (!quiet) {
        printf("    %-28s n=%-9zu max_abs %.3e max_rel %.3e norm_rel %.3e (rms(ref) %.3e)%s", name, n, max_abs, max_rel,
               nrel, rms, ok ? "" : " FAIL");
        if (bad)
            printf(" bad %zu, first at %zu (row %zu, column %zu of %zu): got %.6g ref %.6g", bad, first,
                   first / g_tol_cols, first % g_tol_cols, g_tol_cols, got[first], ref[first]);
        printf("\n");
    }
    return ok;
}
static void tol_check(const char* what, const char* name, const float* got, const float* ref, size_t n, int bf16) {
    double afrac = bf16 ? 1e-2 : 1e-3, rtol = bf16 ? 2e-2 : 1e-3, nmax = bf16 ? 1e-2 : 1e-3;
    char label[200];
    snprintf(label, sizeof label, "%s: %s within tolerance", what, name);
    dev_record(label, tol_compare(name, got, ref, n, afrac, rtol, nmax, 0));
    /* the tolerance can fail: one element moved by 10x it */
    float* bad = (float*)mallocCheck(n * sizeof(float));
    memcpy(bad, got, n * sizeof(float));
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)ref[i] * ref[i];
    size_t i = n / 2;
    bad[i] = (float)(ref[i] + 10.0 * (afrac * sqrt(ss / n) + rtol * fabs(ref[i])) + 1e-30);
    snprintf(label, sizeof label, "%s: %s perturbed copy is rejected", what, name);
    dev_record(label, !tol_compare(name, bad, ref, n, afrac, rtol, nmax, 1));
    free(bad);
}
static void bit_check(const char* what, const char* name, const float* a, const float* b, size_t n) {
    char label[200];
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += memcmp(a + i, b + i, sizeof(float)) != 0;
    snprintf(label, sizeof label, "%s: %s bitwise equal (%zu of %zu differ)", what, name, diff, n);
    dev_record(label, diff == 0);
}
/* every output of `got` against the reference; exact: all bitwise (the composition with llmc's own dC kernel);
   else dC is left to the caller (dc_check_exact) */
static void compare_outs(const char* what, const Outs* got, const Outs* ref, int H, int exact, int with_part) {
    printf("  %s\n", what);
    bit_check(what, "dx", got->dx, ref->dx, got->n_x);
    bit_check(what, "dB", got->dB, ref->dB, got->n_bc);
    bit_check(what, "d_D", got->dpar + 2 * H, ref->dpar + 2 * H, H);
    if (exact) {
        bit_check(what, "dC", got->dC, ref->dC, got->n_bc);
        bit_check(what, "ddt_raw", got->ddt, ref->ddt, got->n_ddt);
        bit_check(what, "d_dt_bias, d_A_log", got->dpar, ref->dpar, 2 * H);
        bit_check(what, "rowi", got->rowi, ref->rowi, got->n_rowi);
        return;
    }
    size_t BT = got->n_x / got->E;
    g_tol_cols = H;  /* ddt_raw: (B T, H) */
    tol_check(what, "ddt_raw", got->ddt, ref->ddt, got->n_ddt, 1);
    g_tol_cols = 1;
    tol_check(what, "d_dt_bias", got->dpar, ref->dpar, H, 0);
    tol_check(what, "d_A_log", got->dpar + H, ref->dpar + H, H, 0);
    g_tol_cols = got->T;  /* rowi: (B H, T) */
    tol_check(what, "rowi (dy.y_off)", got->rowi, ref->rowi, got->n_rowi, 0);
    g_tol_cols = got->n_part ? got->n_part / BT : 1;  /* partials: (B T, H/hg N) */
    if (with_part && got->partC) tol_check(what, "dC head-group partials", got->partC, ref->partC, got->n_part, 1);
    g_tol_cols = 1;
}

/* ---- dC of single elements in double precision on the host, from the kernels' own inputs ----
 * For a dC element the checks question: its exact value, so that llmc's and the ws kernel's errors are each measured
 * against the ideal result of the inputs they read (bf16 x, B, dy and fp32 dt, cum, states converted to double:
 * exact), and the size of the sum's terms, so that a cancelling sum (sum |terms| >> |value|) shows as such. The
 * formula (llmc/ssd.cuh's top comment; no seq_idx here, so no document masks), for position t of chunk c, group g,
 * column n, summed over the heads h of g:
 *   dC[t, g, n] = sum_h [ exp(cum_t) sum_p Hprev_c(h)[p, n] dy_t(h)[p]
 *                       + sum_{t0 <= j <= t} (dy_t(h) . x_j(h)) exp(cum_t - cum_j) dt_j B_j[g, n] ]
 * The terms counted are the state's (h, p) and the intra-chunk (h, j) products, the granularity at which the kernels
 * round: the state term's operand is bf16 hi + lo (~16 bits), WD = (dy.x) exp() dt is rounded to bf16 (8 bits)
 * before its product with B_j, and llmc's hg-head partials are rounded to bf16 before the group sum. */
typedef struct {
    double value, state, intra;   /* the element and its two parts */
    double abs_state, abs_intra;  /* sum of |term| of each part: the cancellation scale */
    double sq_intra;              /* sum of term^2 of the intra part: the size of a random walk of WD roundings */
    double partial_round;         /* sum over llmc's head-group partials of half a bf16 ulp of each (0: no partials) */
} ExactDc;

#define EXACT_SAMPLES 16
typedef struct {
    float *dt, *cum;  /* (B, H, T) as saved by the forward: what every dC kernel read */
    double atol;      /* the dC check's bound is atol + 2e-2 |ref|, atol = 1e-2 rms(ref) */
    size_t sample[EXACT_SAMPLES];  /* ordinary elements (exact_dc_validate's) and their exact values: the typical */
    double sample_exact[EXACT_SAMPLES];  /* error of each kernel, to set a questioned element's against */
} ExactInputs;

static ExactInputs exact_inputs(const Problem* p, const Outs* ref) {
    const WsShape& s = p->s;
    ExactInputs in;
    memset(&in, 0, sizeof in);  /* the samples are filled by exact_dc_validate */
    size_t nbht = (size_t)s.B * s.H * s.T;
    in.dt = dev_download_F(p->sv.dt, nbht);
    in.cum = dev_download_F(p->sv.cum, nbht);
    double ss = 0.0;
    for (size_t i = 0; i < ref->n_bc; i++) ss += (double)ref->dC[i] * ref->dC[i];
    in.atol = 1e-2 * sqrt(ss / (double)ref->n_bc);
    return in;
}
static void free_exact_inputs(ExactInputs* in) { free(in->dt); free(in->cum); }
/* the dC check's per-element bound around a value v (llmc's, or the exact one): tol_check's bf16 bound */
static double dc_bound(const ExactInputs* in, double v) { return in->atol + 2e-2 * fabs(v); }

/* half a bf16 ulp of v: the most that rounding v to bf16 (8 significant bits) moves it */
static double bf16_half_ulp(double v) {
    int e;
    frexp(v, &e);  /* |v| = m 2^e, m in [0.5, 1): the ulp is 2^(e - 8) */
    return v == 0.0 ? 0.0 : ldexp(1.0, e - 9);
}

/* the exact dC[b, t, g, n]: copies back the rows t0..t of xbc (x, B), dy_t and the states entering the chunk of the
   group's heads (a few hundred KB), then sums in double */
static ExactDc exact_dc(const Problem* p, const ExactInputs* in, int b, int t, int g, int n) {
    const WsShape& s = p->s;
    int P = p->P, N = p->N, E = p->E, CD = p->CD, hpg = s.H / s.G, c = t / s.Q, t0 = c * s.Q, rows = t - t0 + 1;
    float* xb = dev_download_X(p->xbc + (size_t)(b * s.T + t0) * CD, (size_t)rows * CD);
    float* dy = dev_download_X(p->dy + (size_t)(b * s.T + t) * E, E);
    size_t st_off = (((size_t)b * p->nch + c) * s.H + g * hpg) * P * N;  /* llmc's ssd_state_off of head g hpg */
    float* st = dev_download_F(p->sv.states + st_off, (size_t)hpg * P * N);
    ExactDc r;
    memset(&r, 0, sizeof r);
    double part = 0.0;  /* the current head-group partial (llmc's hg heads) */
    for (int k = 0; k < hpg; k++) {
        int h = g * hpg + k;
        const float* cumh = in->cum + ((size_t)b * s.H + h) * s.T;
        const float* dth = in->dt + ((size_t)b * s.H + h) * s.T;
        const float* dyh = dy + h * P;
        double et = exp((double)cumh[t]);
        for (int q = 0; q < P; q++) {
            double term = et * (double)st[((size_t)k * P + q) * N + n] * (double)dyh[q];
            r.state += term;
            r.abs_state += fabs(term);
            part += term;
        }
        for (int j = t0; j <= t; j++) {
            const float* xj = xb + (size_t)(j - t0) * CD;
            double dot = 0.0;
            for (int q = 0; q < P; q++) dot += (double)dyh[q] * (double)xj[h * P + q];
            double term = dot * exp((double)cumh[t] - (double)cumh[j]) * (double)dth[j] * (double)xj[E + g * N + n];
            r.intra += term;
            r.abs_intra += fabs(term);
            r.sq_intra += term * term;
            part += term;
        }
        if (!p->direct_llmc && (k + 1) % p->hg_llmc == 0) {
            r.partial_round += bf16_half_ulp(part);
            part = 0.0;
        }
    }
    r.value = r.state + r.intra;
    free(xb); free(dy); free(st);
    return r;
}

/* flat index of dC (B T, G N) -> b, t, g, n */
static void dc_position(const Problem* p, size_t i, int* b, int* t, int* g, int* n) {
    size_t gn = (size_t)p->s.G * p->N, row = i / gn;
    *b = (int)(row / p->s.T);
    *t = (int)(row % p->s.T);
    *g = (int)((i % gn) / p->N);
    *n = (int)(i % p->N);
}

/* The host formula itself, checked: at EXACT_SAMPLES (16) ordinary elements (spread over b, t, g, n; the last position included), the
   exact value must agree with llmc's dC within the dC check's bf16 bound; and that comparison must reject a copy of
   the exact values with one moved by 10x the bound. */
static void exact_dc_validate(const char* name, const Problem* p, ExactInputs* in, const Outs* ref) {
    enum { K = EXACT_SAMPLES };
    double ex[K], lm[K], worst = 0.0, worst_abs = 0.0, ss = 0.0;
    for (int k = 0; k < K; k++) {
        size_t i = k == 0 ? ref->n_bc - 1 : (size_t)((uint64_t)k * 2654435761u % ref->n_bc);
        int b, t, g, n;
        dc_position(p, i, &b, &t, &g, &n);
        ex[k] = exact_dc(p, in, b, t, g, n).value;
        lm[k] = ref->dC[i];
        in->sample[k] = i;
        in->sample_exact[k] = ex[k];
        ss += (lm[k] - ex[k]) * (lm[k] - ex[k]);
    }
    int ok = 1, bad_ok = 1;
    for (int k = 0; k < K; k++) {
        double d = fabs(ex[k] - lm[k]), bound = dc_bound(in, lm[k]);
        if (!(d <= bound)) ok = 0;
        if (d / bound > worst) worst = d / bound;
        if (d > worst_abs) worst_abs = d;
        /* the rejection: element k = K/2 moved by 10x its bound */
        double moved = k == K / 2 ? ex[k] + 10.0 * bound : ex[k];
        if (!(fabs(moved - lm[k]) <= bound)) bad_ok = 0;
    }
    printf("  exact dC (host, double) at %d elements vs llmc: max |exact - llmc| %.3e, max of it / bound %.3f, rms %.3e\n",
           K, worst_abs, worst, sqrt(ss / K));
    char label[200];
    snprintf(label, sizeof label, "%s: host exact dC agrees with llmc at %d elements within the bf16 bound", name, K);
    dev_record(label, ok);
    snprintf(label, sizeof label, "%s: host exact dC check rejects a copy with one element moved by 10x the bound", name);
    dev_record(label, !bad_ok);
}

/* After a ws variant's dC check: its worst elements against the exact value. The 3 worst (by |got - ref| / bound)
   when any element is past the bound, else the worst one; two lines each: position, each value and its error against
   exact; the two parts with their sum |terms| and the rounding sizes to compare the errors with. */
static void dc_diagnose(const Problem* p, const ExactInputs* in, const Outs* got, const Outs* ref) {
    enum { K = 3 };
    size_t top[K];
    double topr[K];
    int ntop = 0;
    size_t nbad = 0;
    for (size_t i = 0; i < got->n_bc; i++) {
        double e = fabs((double)got->dC[i] - ref->dC[i]), r = e / dc_bound(in, ref->dC[i]);
        if (!(r == r)) r = INFINITY;  /* NaN: an unwritten element */
        if (r > 1.0) nbad++;
        if (ntop == K && !(r > topr[K - 1])) continue;
        int k = ntop < K ? ntop++ : K - 1;  /* insertion into the descending top K */
        while (k > 0 && r > topr[k - 1]) { top[k] = top[k - 1]; topr[k] = topr[k - 1]; k--; }
        top[k] = i;
        topr[k] = r;
    }
    double ssw = 0.0, ssl = 0.0;  /* the typical errors: at the sampled ordinary elements */
    for (int k = 0; k < EXACT_SAMPLES; k++) {
        double x = in->sample_exact[k];
        ssw += (got->dC[in->sample[k]] - x) * (got->dC[in->sample[k]] - x);
        ssl += (ref->dC[in->sample[k]] - x) * (ref->dC[in->sample[k]] - x);
    }
    int shown = nbad ? ntop : (ntop ? 1 : 0);
    printf("    dC vs exact (host, double): rms error at the %d sampled elements: ws %.2e, llmc %.2e; %zu of %zu past "
           "the bound; the %d worst (|ws - llmc| / bound):\n", EXACT_SAMPLES, sqrt(ssw / EXACT_SAMPLES),
           sqrt(ssl / EXACT_SAMPLES), nbad, got->n_bc, shown);
    for (int k = 0; k < shown; k++) {
        int b, t, g, n;
        dc_position(p, top[k], &b, &t, &g, &n);
        ExactDc x = exact_dc(p, in, b, t, g, n);
        double lv = ref->dC[top[k]], wv = got->dC[top[k]];
        printf("      %.2f: b %d t %d (chunk %d row %d) g %d n %d: exact %+.6e | llmc %+.6e err %+.2e | ws %+.6e "
               "err %+.2e\n", topr[k], b, t, t / p->s.Q, t % p->s.Q, g, n, x.value, lv, lv - x.value, wv, wv - x.value);
        printf("        state %+.3e (sum|t| %.3e), intra %+.3e (sum|t| %.3e, 2^-9 ||t|| %.1e); sum|t| / |exact| %.3g; "
               "half bf16 ulp: output %.1e, llmc partials (sum) %.1e\n", x.state, x.abs_state, x.intra, x.abs_intra,
               ldexp(sqrt(x.sq_intra), -9), (x.abs_state + x.abs_intra) / fabs(x.value), bf16_half_ulp(x.value),
               x.partial_round);
    }
}

/* The ws kernel's dC against llmc's, where llmc's is not always the better one. dC is a cancelling sum (its terms'
   sum of |t| up to ~2000x the value), and llmc rounds hg-head partials to bf16 before the group sum: at a rare
   element llmc is off by nearly its bound while the ws kernel is close to the exact value (one H100 call: exact
   8.036e-3, llmc 3.052e-3, ws 7.385e-3, in 1 of 2M elements). So the bound is the llmc comparison's (|got - ref| <=
   1e-2 rms(ref) + 2e-2 |ref|, and the norm-relative error <= 1e-2), and an element past it is judged by its exact
   value (exact_dc) instead: it passes when within the same bound of exact and no farther from exact than llmc's
   value. At most DC_ADJUDICATE elements are judged; past that many, the check fails without computing more.
   quiet: only the verdict. */
#define DC_ADJUDICATE 64
static int dc_exact_verdict(const Problem* p, const ExactInputs* in, const float* got, const float* ref, size_t n,
                            int quiet) {
    double num = 0.0, den = 0.0;
    size_t past = 0, unexplained = 0;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], r = ref[i], e = fabs(g - r);
        num += e * e;
        den += r * r;
        if (e == e && !isinf(g) && e <= dc_bound(in, r)) continue;
        if (++past > DC_ADJUDICATE) { unexplained++; continue; }
        int b, t, gg, nn;
        dc_position(p, i, &b, &t, &gg, &nn);
        double x = exact_dc(p, in, b, t, gg, nn).value, ex = fabs(g - x);
        if (!(ex <= dc_bound(in, x) && ex <= fabs(r - x))) unexplained++;
    }
    double nrel = den > 0 ? sqrt(num / den) : sqrt(num);
    int ok = unexplained == 0 && nrel <= 1e-2;
    if (!quiet)
        printf("    dC                           n=%-9zu norm_rel %.3e; %zu past the bound against llmc, %zu of them "
               "not explained by the exact value (within the bound of it and closer than llmc)%s\n", n, nrel, past,
               unexplained, ok ? "" : " FAIL");
    return ok;
}
static void dc_check_exact(const char* what, const Problem* p, const ExactInputs* in, const Outs* got,
                           const Outs* ref) {
    char label[320];
    snprintf(label, sizeof label, "%s: dC within tolerance (llmc's, or the exact value's where llmc is off)", what);
    dev_record(label, dc_exact_verdict(p, in, got->dC, ref->dC, got->n_bc, 0));
    /* the check can fail: one element moved by 10x the bound from llmc's value (and so ~9x from the exact one) */
    float* bad = (float*)mallocCheck(got->n_bc * sizeof(float));
    memcpy(bad, got->dC, got->n_bc * sizeof(float));
    size_t i = got->n_bc / 2;
    bad[i] = (float)(ref->dC[i] + 10.0 * dc_bound(in, ref->dC[i]) + 1e-30);
    snprintf(label, sizeof label, "%s: dC perturbed copy is rejected", what);
    dev_record(label, !dc_exact_verdict(p, in, bad, ref->dC, got->n_bc, 1));
    free(bad);
}

/* outputs poisoned (NaN) and parameter gradients zeroed before a backward, so an unwritten element fails */
static void reset_outputs(Problem* p) {
    const WsShape& s = p->s;
    size_t BT = (size_t)s.B * s.T;
    dev_poison(p->dxbc, BT * p->CD * sizeof(floatX));
    dev_poison(p->ddt, BT * p->dstride * sizeof(floatX));
    cudaCheck(cudaMemset(p->dpar, 0, 3 * s.H * sizeof(float)));
    dev_poison(p->w.roww, (size_t)s.B * s.H * s.T * sizeof(float));
    if (!p->direct_llmc) dev_poison(part_C(p), BT * (s.H / p->hg_llmc) * p->N * sizeof(floatX));
}

/* ---- floors ---- */
/* what the dC and the dxdb kernel both read once: x and dy, B and C (bf16), cum and dt (fp32), the fp32 states */
static double tile_input_bytes(const Problem* p) {
    const WsShape& s = p->s;
    double BT = (double)s.B * s.T;
    return BT * p->E * 2 * 2 + BT * 2 * s.G * p->N * 2 + 2.0 * s.B * s.H * s.T * 4 +
           (double)s.B * p->nch * s.H * p->P * p->N * 4;
}
/* a group's dB or dC as a kernel at head-group size hg writes it: bf16 partials, or straight into dxbc at H/G */
static double group_out_bytes(const Problem* p, int hg) {
    const WsShape& s = p->s;
    double BT = (double)s.B * s.T;
    return hg == s.H / s.G ? BT * s.G * p->N * 2 : BT * (s.H / hg) * p->N * 2;
}
static int chunk_len(const Problem* p, int c) { return p->s.Q < p->s.T - c * p->s.Q ? p->s.Q : p->s.T - c * p->s.Q; }
/* the dC kernel: bytes that must move (the tile inputs; dC and rowi written) and the tensor FLOPs it issues (state
   term hi + lo, the j tiles' S and WD B_j, diagonal tiles whole) */
static void dc_floor(const Problem* p, int hg, double* bytes, double* flops) {
    const WsShape& s = p->s;
    *bytes = tile_input_bytes(p) + group_out_bytes(p, hg) + (double)s.B * s.H * s.T * 4;
    double f = 0.0;
    for (int c = 0; c < p->nch; c++) {
        int len = chunk_len(p, c);
        for (int rt = 0; rt * 64 < len; rt++)
            f += 2.0 * 64 * p->P * p->N * 2 + (rt + 1) * (2.0 * 64 * 64 * p->P + 2.0 * 64 * 64 * p->N);
    }
    *flops = f * s.B * s.H;
}
/* the dxdb kernel (llmc's ssd_bwd_dxdb_kernel; the ws form of issue #28 is designed in NOTES_ssd.md, not built):
   bytes that must move (the tile inputs, the B.C slab's part a row tile reads (columns i >= j0) once per (b, chunk,
   group); dx, dB (bf16 head-group partials or direct), xdxs, xdxs_st, xdy, colf and rowp written) and the tensor
   FLOPs issued (state parts hi + lo for dx and dB, per i tile x_j . dy_i, M dy_i and (dt Z) C_i, diagonal tiles
   whole) */
static void dxdb_floor(const Problem* p, int hg, double* bytes, double* flops) {
    const WsShape& s = p->s;
    double BT = (double)s.B * s.T, BHT = (double)s.B * s.H * s.T;
    int nti = CEIL_DIV(s.Q, SSD_MMA_ROWS);
    double slab = 0.0, f = 0.0;
    for (int c = 0; c < p->nch; c++) {
        int len = chunk_len(p, c);
        for (int rt = 0; rt * 64 < len; rt++) {
            int ntile = CEIL_DIV(len, 64) - rt;
            slab += 64.0 * 64 * ntile * 4;
            f += 8.0 * 64 * p->P * p->N + ntile * 2.0 * 64 * 64 * (2.0 * p->P + p->N);
        }
    }
    *bytes = tile_input_bytes(p) + slab * s.B * s.G + BT * p->E * 2 + group_out_bytes(p, hg) + 4.0 * BHT * 4 +
             (double)s.B * s.H * p->nch * nti * s.Q * 4;
    *flops = f * s.B * s.H;
}
/* the whole backward: its inputs read once (xbc, dy, dt_raw, the saved dt / cum / states), dH_c written and read
   once (fp32), its outputs written once (dxbc, ddt_raw) */
static double bwd_floor_bytes(const Problem* p) {
    const WsShape& s = p->s;
    double BT = (double)s.B * s.T, st = (double)s.B * p->nch * s.H * p->P * p->N * 4;
    return BT * p->CD * 2 * 2 + BT * p->E * 2 + BT * p->dstride * 2 * 2 + 2.0 * s.B * s.H * s.T * 4 + st + 2 * st;
}
static void report(const char* name, float ms, double bytes, double flops) {
    double fb = bytes / SSD_WS_HBM * 1e3, ff = flops / SSD_WS_TFLOPS * 1e3, fl = fb > ff ? fb : ff;
    printf("  TIME %-44s %8.4f ms  floor %.4f ms (%.1f MB at %.2f TB/s: %.4f; %.2f GFLOP at %.0f TFLOP/s: %.4f)  "
           "%.1fx the floor\n", name, ms, fl, bytes / 1e6, SSD_WS_HBM / 1e12, fb, flops / 1e9, SSD_WS_TFLOPS / 1e12,
           ff, ms / fl);
}

static void run_shape(WsShape s) {
    printf("== %s: B=%d T=%d H=%d P=64 N=128 G=%d Q=%d\n", s.name, s.B, s.T, s.H, s.G, s.Q);
    fflush(stdout);
    Problem p = make_problem(s);
    ssd_forward(p.y, NULL, p.saved, p.xbc, p.CD, p.dtraw, p.dstride, p.dt_bias, p.A_log, p.Dskip, NULL, NULL, s.B, s.T,
                s.H, p.P, p.N, s.G, s.Q, 0);
    sync_check("forward");
    printf("  llmc: hg %d (%s), ws kernel takes the shape: %d\n", p.hg_llmc,
           p.direct_llmc ? "dC straight into dxbc" : "bf16 head-group partials + group sum",
           ssd_ws_dc_takes(s.H, p.P, p.N, s.G, s.Q, p.hg_llmc, NULL, p.xbc, p.CD, p.dy, p.sv.states));
    if (!ssd_ws_dc_takes(s.H, p.P, p.N, s.G, s.Q, p.hg_llmc, NULL, p.xbc, p.CD, p.dy, p.sv.states)) {
        dev_record("the warp-specialized kernel takes this shape (needs sm_90a on a 9.0 GPU)", 0);
        free_problem(&p);
        return;
    }
    /* 1. the reference */
    reset_outputs(&p);
    SSDPath path = llmc_backward(&p);
    sync_check("llmc ssd_backward");
    p.state_path = path.state;
    char label[200];
    snprintf(label, sizeof label, "%s: llmc ran the tuned tile backward (bwd_tiles %d, state %d)", s.name,
             path.bwd_tiles, path.state);
    dev_record(label, path.bwd_tiles == SSD_BWD_TILES_TUNED);
    Outs ref = download_outs(&p);
    ExactInputs ex = exact_inputs(&p, &ref);
    exact_dc_validate(s.name, &p, &ex, &ref);
    /* 2. the composition with llmc's dC kernel: bitwise the reference */
    reset_outputs(&p);
    composed_backward(&p, DC_LLMC);
    sync_check("composed backward, llmc dC");
    Outs o0 = download_outs(&p);
    snprintf(label, sizeof label, "%s: composed backward with llmc's dC kernel vs ssd_backward", s.name);
    compare_outs(label, &o0, &ref, s.H, 1, 0);
    free_outs(&o0);
    /* 3. the warp-specialized dC kernels substituted */
    for (int v = DC_WS_LLMC_HG; v <= DC_WS2_DIRECT; v++) {
        if (dc_direct(v) && p.direct_llmc) continue;  /* llmc's hg is H/G already */
        int hg = dc_direct(v) ? s.H / s.G : p.hg_llmc;
        reset_outputs(&p);
        composed_backward(&p, v);
        sync_check(dc_name(v));
        Outs o1 = download_outs(&p);
        snprintf(label, sizeof label, "%s: %s (hg %d%s) substituted vs ssd_backward", s.name, dc_name(v), hg,
                 hg == s.H / s.G ? ", direct" : ", partials");
        compare_outs(label, &o1, &ref, s.H, 0, !dc_direct(v));
        dc_check_exact(label, &p, &ex, &o1, &ref);
        dc_diagnose(&p, &ex, &o1, &ref);
        reset_outputs(&p);
        composed_backward(&p, v);
        sync_check(dc_name(v));
        Outs o2 = download_outs(&p);
        snprintf(label, sizeof label, "%s: %s (hg %d) two runs", s.name, dc_name(v), hg);
        printf("  %s\n", label);
        bit_check(label, "dC", o2.dC, o1.dC, o1.n_bc);
        bit_check(label, "ddt_raw", o2.ddt, o1.ddt, o1.n_ddt);
        bit_check(label, "d_dt_bias, d_A_log, d_D", o2.dpar, o1.dpar, 3 * s.H);
        bit_check(label, "rowi", o2.rowi, o1.rowi, o1.n_rowi);
        free_outs(&o1);
        free_outs(&o2);
        fflush(stdout);
    }
    free_outs(&ref);
    free_exact_inputs(&ex);
    fflush(stdout);
    /* 4. timings */
    if (s.bench) {
        const int reps = 30;
        double bytes, flops;
        float t_dc[DC_WS2_DIRECT + 1] = {0}, t_bwd[DC_WS2_DIRECT + 1] = {0};
        t_dc[DC_LLMC] = dev_bench_ms(reps, [&] { launch_llmc_dc(&p); });
        dc_floor(&p, p.hg_llmc, &bytes, &flops);
        snprintf(label, sizeof label, "dC kernel, llmc (hg %d)", p.hg_llmc);
        report(label, t_dc[DC_LLMC], bytes, flops);
        for (int v = DC_WS_LLMC_HG; v <= DC_WS2_DIRECT; v++) {
            if (dc_direct(v) && p.direct_llmc) continue;
            int hg = dc_direct(v) ? s.H / s.G : p.hg_llmc;
            t_dc[v] = dev_bench_ms(reps, [&] { launch_ws_dc(&p, v); });
            dc_floor(&p, hg, &bytes, &flops);
            snprintf(label, sizeof label, "dC kernel, %s (hg %d)", dc_name(v), hg);
            report(label, t_dc[v], bytes, flops);
            sync_check(label);
        }
        float t_dxdb = dev_bench_ms(reps, [&] { launch_llmc_dxdb(&p); });
        dxdb_floor(&p, p.hg_llmc, &bytes, &flops);
        snprintf(label, sizeof label, "dxdb kernel, llmc (hg %d)", p.hg_llmc);
        report(label, t_dxdb, bytes, flops);
        sync_check(label);
        double bb = bwd_floor_bytes(&p);
        float b_llmc = dev_bench_ms(reps, [&] { llmc_backward(&p); });
        report("backward, llmc ssd_backward", b_llmc, bb, 0.0);
        for (int v = DC_LLMC; v <= DC_WS2_DIRECT; v++) {
            if (dc_direct(v) && p.direct_llmc) continue;
            int hg = dc_direct(v) ? s.H / s.G : p.hg_llmc;
            t_bwd[v] = dev_bench_ms(reps, [&] { composed_backward(&p, v); });
            snprintf(label, sizeof label, "backward, composed, %s (hg %d)", dc_name(v), hg);
            report(label, t_bwd[v], bb, 0.0);
            sync_check(label);
        }
        float f_llmc = dev_bench_ms(reps, [&] {
            ssd_forward(p.y, NULL, p.saved, p.xbc, p.CD, p.dtraw, p.dstride, p.dt_bias, p.A_log, p.Dskip, NULL, NULL,
                        s.B, s.T, s.H, p.P, p.N, s.G, s.Q, 0);
        });
        sync_check("forward timing");
        printf("  TIME forward, llmc ssd_forward %.4f ms\n", f_llmc);
        for (int v = DC_WS_LLMC_HG; v <= DC_WS2_DIRECT; v++) {
            if (t_dc[v] == 0.f) continue;
            printf("  SUMMARY %s: %-18s hg %2d: dC %.4f -> %.4f ms (%.2fx); backward %.4f -> %.4f ms; fwd+bwd %.4f -> "
                   "%.4f ms\n", s.name, dc_name(v), dc_direct(v) ? s.H / s.G : p.hg_llmc, t_dc[DC_LLMC], t_dc[v],
                   t_dc[DC_LLMC] / t_dc[v], t_bwd[DC_LLMC], t_bwd[v], f_llmc + t_bwd[DC_LLMC], f_llmc + t_bwd[v]);
        }
        fflush(stdout);
    }
    free_problem(&p);
}

/* "profile": the 130M shape at Q = 128, each dC kernel (and llmc's backward) once, no checks: for
   ncu -k regex:dc_ ./dev/cuda/ssd_ws_bin profile */
static void run_profile(void) {
    WsShape s = {"130M Q=128 (profile)", 8, 2048, 24, 1, 128, 0};
    Problem p = make_problem(s);
    ssd_forward(p.y, NULL, p.saved, p.xbc, p.CD, p.dtraw, p.dstride, p.dt_bias, p.A_log, p.Dskip, NULL, NULL, s.B, s.T,
                s.H, p.P, p.N, s.G, s.Q, 0);
    p.state_path = llmc_backward(&p).state;
    for (int v = DC_LLMC; v <= DC_WS2_DIRECT; v++) {
        printf("profile: %s (hg %d)\n", dc_name(v), dc_direct(v) ? s.H / s.G : p.hg_llmc);
        if (v == DC_LLMC) launch_llmc_dc(&p); else launch_ws_dc(&p, v);
        sync_check(dc_name(v));
    }
    free_problem(&p);
}

int main(int argc, char** argv) {
    const char* which = argc > 1 ? argv[1] : "all";
    int small = !strcmp(which, "small") || !strcmp(which, "all"), bench = !strcmp(which, "bench") || !strcmp(which, "all");
    int profile = !strcmp(which, "profile");
    if (!small && !bench && !profile) {
        fprintf(stderr, "usage: %s [small|bench|all|profile]\n", argv[0]);
        return EXIT_FAILURE;
    }
    gpu_arch_check();
    gpu_path_print(stdout);
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s (%d.%d, %d SMs), hopper path %d, ws smem %d bytes (opt-in limit %d), hang check %d\n", prop.name,
           prop.major, prop.minor, prop.multiProcessorCount, gpu_hopper_path(), (int)SSD_WS_SMEM, cuda_smem_optin(),
           SSD_WS_HANG_CHECK);
    cudaCheck(cudaHostAlloc((void**)&g_err, 8 * sizeof(int), cudaHostAllocMapped));
    memset(g_err, 0, 8 * sizeof(int));
    cudaCheck(cudaHostGetDevicePointer((void**)&g_err_dev, g_err, 0));
    if (!gpu_hopper_path()) {
        printf("not an H100 / H200 running sm_90a code: nothing to test (the kernel is sm_90a only)\n");
        dev_record("a Hopper GPU with sm_90a code", 0);
        return dev_finish();
    }
    if (profile) {
        run_profile();
        return EXIT_SUCCESS;
    }
    WsShape shapes[] = {
        {"small-a (partial chunk, partials)", 2, 300, 8, 1, 128, 0},
        {"small-b (Q=64, direct)", 1, 256, 4, 1, 64, 0},
        {"small-c (G=2, partial chunk, Q=64)", 2, 200, 8, 2, 64, 0},
        {"small-d (Q=128, 1 chunk short)", 1, 100, 8, 1, 128, 0},
        {"130M Q=128", 8, 2048, 24, 1, 128, 1},
        {"130M Q=64", 8, 2048, 24, 1, 64, 1},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        if (shapes[i].bench ? !bench : !small) continue;
        run_shape(shapes[i]);
    }
    return dev_finish();
}
