/*
 * test_mamba2.c: tests of the CPU trainer against simpler things.
 *
 * Built twice from this one file (see Makefile):
 *   test_mamba2_fd  (-DMAMBA2_DOUBLE): in double precision
 *       1. the chunked SSD forward and backward against the sequential recurrence (SPEC.md sections 3, 4),
 *          written again here from the spec, for several shapes;
 *       2. every layer's backward and the whole model's gradient against central finite differences;
 *       3. the recurrent step (generation) against the chunked forward; gradient accumulation.
 *   test_mamba2     (float, the trainer's precision):
 *       4. the independent reference: a fixture written by HF transformers' Mamba2ForCausalLM
 *          (dev/make_hf_fixture.py): logits, loss, every gradient, and 10 AdamW steps;
 *       5. resume: k steps + checkpoint + resume + k steps == 2k steps, bitwise (the trainer binary end to end);
 *       6. bad input: each gives a clear message and a nonzero exit, no crash.
 * Each check prints a line; the program closes with "N passed, N failed".
 */
#define _POSIX_C_SOURCE 200809L
#define MAMBA2_NO_MAIN
#include "train_mamba2.c"
#ifndef MAMBA2_DOUBLE
#include "dev/hf_fixture.h"
#endif
#include <sys/wait.h>
#include <dirent.h>
#include <signal.h>

#define TEST_REAL real
#include "dev/test_report.h"

static void fill_uniform(real* x, size_t n, Rng* r, double lo, double hi) {
    for (size_t i = 0; i < n; i++) x[i] = (real)rng_uniform_range(r, lo, hi);
}

static real* alloc_real(size_t n) { return (real*)callocCheck(n, sizeof(real)); }

/* the small model of the exact tests (chunk 4, d_conv 4, 2 groups, vocab 20) */
static Mamba2Config small_test_config(void) {
    Mamba2Config c;
    char err[256];
    if (config_parse(&c, "d_model=16,n_layer=2,d_state=8,headdim=8,ngroups=2,vocab=20,chunk=4", err, sizeof(err)))
        die("%s", err);
    return c;
}

/* random weights away from the init's symmetries (ones, zeros) so every gradient term is exercised */
static void perturb_parameters(Mamba2* m, Rng* rng) {
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        const ParamSpec* s = &m->table[t];
        for (size_t i = 0; i < s->numel; i++)
            m->params_memory[s->offset + i] += (real)rng_uniform_range(rng, -0.2, 0.2);
    }
}

#ifdef MAMBA2_DOUBLE
/* ================================================================================================================
 * 1. SSD: chunked algorithm vs the sequential recurrence
 * ================================================================================================================ */

typedef struct { int B, T, H, P, N, G, Q, init; } SSDShape;

/*
 * The recurrence of SPEC.md section 3 and its adjoint (section 4), one head at a time:
 *   h_t = a_t h_{t-1} + dt_t x_t B_t^T,  y_t = h_t C_t + D x_t,  a_t = exp(dt_t A)
 *   g_t = dy_t C_t^T + a_{t+1} g_{t+1} (+ d final state at t = T-1)
 */
static void ssd_recurrence_fwd_bwd(real* y, real* final_state, real* dxbc, real* ddt, real* dA_log, real* dD,
                                   real* dinit, const real* dy, const real* dfinal, const real* xbc, const real* dt,
                                   const real* A_log, const real* Dskip, const real* init, const int* seq, SSDShape s) {
    int E = s.H * s.P, cd = E + 2 * s.G * s.N, hpg = s.H / s.G, P = s.P, N = s.N, T = s.T;
    memset(dxbc, 0, sizeof(real) * (size_t)s.B * T * cd);
    real* hs = alloc_real((size_t)(T + 1) * P * N); /* hs[t+1] = h_t, hs[0] = h_{-1} */
    real* g = alloc_real((size_t)P * N);
    for (int b = 0; b < s.B; b++) {
        for (int h = 0; h < s.H; h++) {
            int gr = h / hpg;
            real A = -(real)exp(A_log[h]);
            size_t bh = (size_t)b * s.H + h;
            for (int i = 0; i < P * N; i++) hs[i] = init ? init[bh * P * N + i] : 0;
#define X(t) (xbc + ((size_t)b * T + (t)) * cd + h * P)
#define BV(t) (xbc + ((size_t)b * T + (t)) * cd + E + gr * N)
#define CV(t) (xbc + ((size_t)b * T + (t)) * cd + E + s.G * N + gr * N)
#define DT(t) (dt[((size_t)b * T + (t)) * s.H + h])
/* a document boundary at t (SPEC.md section 10): h_t = dt_t x_t B_t^T, i.e. a_t = 0, in the forward and the adjoint */
#define RESET(t) (seq && (t) > 0 && seq[(size_t)b * T + (t)] != seq[(size_t)b * T + (t) - 1])
            for (int t = 0; t < T; t++) {
                real a = RESET(t) ? 0 : (real)exp(DT(t) * A);
                real* hp = hs + (size_t)t * P * N;
                real* hn = hs + (size_t)(t + 1) * P * N;
                for (int p = 0; p < P; p++) {
                    real acc = 0;
                    for (int n = 0; n < N; n++) {
                        hn[p * N + n] = a * hp[p * N + n] + DT(t) * X(t)[p] * BV(t)[n];
                        acc += hn[p * N + n] * CV(t)[n];
                    }
                    y[((size_t)b * T + t) * E + h * P + p] = acc + Dskip[h] * X(t)[p];
                }
            }
            if (final_state) memcpy(final_state + bh * P * N, hs + (size_t)T * P * N, sizeof(real) * P * N);
            /* adjoint, backwards in time; g holds a_{t+1} g_{t+1} on entry to step t */
            for (int i = 0; i < P * N; i++) g[i] = dfinal ? dfinal[bh * P * N + i] : 0;
            real dA = 0;
            for (int t = T - 1; t >= 0; t--) {
                const real* dyt = dy + ((size_t)b * T + t) * E + h * P;
                real a = RESET(t) ? 0 : (real)exp(DT(t) * A);
                real* hp = hs + (size_t)t * P * N;
                real* hn = hs + (size_t)(t + 1) * P * N;
                for (int p = 0; p < P; p++)
                    for (int n = 0; n < N; n++) g[p * N + n] += dyt[p] * CV(t)[n];
                real* dx = dxbc + ((size_t)b * T + t) * cd + h * P;
                real* dB = dxbc + ((size_t)b * T + t) * cd + E + gr * N;
                real* dC = dxbc + ((size_t)b * T + t) * cd + E + s.G * N + gr * N;
                real gh = 0, xgb = 0;
                for (int p = 0; p < P; p++) {
                    real gb = 0;
                    for (int n = 0; n < N; n++) {
                        dC[n] += hn[p * N + n] * dyt[p];
                        dB[n] += g[p * N + n] * DT(t) * X(t)[p];
                        gb += g[p * N + n] * BV(t)[n];
                        gh += g[p * N + n] * hp[p * N + n];
                    }
                    dx[p] = DT(t) * gb + Dskip[h] * dyt[p];
                    xgb += X(t)[p] * gb;
                    dD[h] += X(t)[p] * dyt[p];
                }
                ddt[((size_t)b * T + t) * s.H + h] = xgb + gh * a * A;
                dA += gh * a * DT(t);
                for (int i = 0; i < P * N; i++) g[i] *= a; /* becomes a_t g_t for step t-1 */
            }
            dA_log[h] += dA * A;
            if (dinit) memcpy(dinit + bh * P * N, g, sizeof(real) * P * N);
#undef RESET
#undef X
#undef BV
#undef CV
#undef DT
        }
    }
    free(hs);
    free(g);
}

static void test_ssd_against_recurrence(SSDShape s, const int* seq, Rng* rng) {
    int E = s.H * s.P, cd = E + 2 * s.G * s.N, nc = ssd_num_chunks(s.T, s.Q);
    size_t BT = (size_t)s.B * s.T, SN = (size_t)s.B * s.H * s.P * s.N;
    real *xbc = alloc_real(BT * cd), *dt = alloc_real(BT * s.H), *A_log = alloc_real(s.H), *Dsk = alloc_real(s.H);
    real *init = alloc_real(SN), *dy = alloc_real(BT * E), *dfinal = alloc_real(SN);
    fill_uniform(xbc, BT * cd, rng, -1, 1);
    fill_uniform(dt, BT * s.H, rng, 0.01, 0.5);
    fill_uniform(A_log, s.H, rng, 0, 1.5);
    fill_uniform(Dsk, s.H, rng, 0.5, 1.5);
    fill_uniform(init, SN, rng, -1, 1);
    fill_uniform(dy, BT * E, rng, -1, 1);
    fill_uniform(dfinal, SN, rng, -1, 1);
    real* init_p = s.init ? init : NULL;
    real* dfinal_p = s.init ? dfinal : NULL;
    /* reference */
    real *y_r = alloc_real(BT * E), *fs_r = alloc_real(SN), *dxbc_r = alloc_real(BT * cd), *ddt_r = alloc_real(BT * s.H);
    real *dAl_r = alloc_real(s.H), *dD_r = alloc_real(s.H), *dinit_r = alloc_real(SN);
    ssd_recurrence_fwd_bwd(y_r, fs_r, dxbc_r, ddt_r, dAl_r, dD_r, dinit_r, dy, dfinal_p, xbc, dt, A_log, Dsk, init_p,
                           seq, s);
    /* chunked */
    real *y = alloc_real(BT * E), *fs = alloc_real(SN), *states = alloc_real((size_t)s.B * s.H * nc * s.P * s.N);
    real *dxbc = alloc_real(BT * cd), *ddt = alloc_real(BT * s.H), *dAl = alloc_real(s.H), *dD = alloc_real(s.H);
    real* dinit = alloc_real(SN);
    ssd_chunked_forward(y, states, fs, xbc, dt, A_log, Dsk, init_p, seq, s.B, s.T, s.H, s.P, s.N, s.G, s.Q);
    ssd_chunked_backward(dxbc, ddt, dAl, dD, dinit, dy, dfinal_p, xbc, dt, A_log, Dsk, states, seq, s.B, s.T, s.H, s.P,
                         s.N, s.G, s.Q);
    char name[128];
    const double tol = 1e-10;
#define CMP(what, a, b, n) \
    snprintf(name, sizeof(name), "ssd B%d T%d H%d P%d N%d G%d Q%d%s%s %s", s.B, s.T, s.H, s.P, s.N, s.G, s.Q, \
             s.init ? " init" : "", seq ? " docs" : "", what); \
    compare(name, a, b, n, tol)
    CMP("y", y, y_r, BT * E);
    CMP("final state", fs, fs_r, SN);
    CMP("dx,dB,dC", dxbc, dxbc_r, BT * cd);
    CMP("ddt", ddt, ddt_r, BT * s.H);
    CMP("dA_log", dAl, dAl_r, s.H);
    CMP("dD", dD, dD_r, s.H);
    if (s.init) { CMP("d init state", dinit, dinit_r, SN); }
#undef CMP
    free(xbc); free(dt); free(A_log); free(Dsk); free(init); free(dy); free(dfinal); free(y_r); free(fs_r);
    free(dxbc_r); free(ddt_r); free(dAl_r); free(dD_r); free(dinit_r); free(y); free(fs); free(states); free(dxbc);
    free(ddt); free(dAl); free(dD); free(dinit);
}

/* ================================================================================================================
 * 2. finite differences: L = sum(out * w) for a random w, so dL/dout = w
 * ================================================================================================================ */

typedef double (*LossFn)(void* ctx);

/* central differences on up to `samples` random entries of x; compares with the analytic gradient */
static void fd_check(const char* name, LossFn f, void* ctx, real* x, const real* analytic, size_t n, int samples,
                     Rng* rng) {
    const double h = 1e-5; /* balances truncation (h^2) and round-off (eps/h) in double */
    if (n == 0) return;    /* a tensor this model does not have (an attention tensor of a pure Mamba-2 model) */
    real* num = alloc_real(samples);
    real* ana = alloc_real(samples);
    for (int k = 0; k < samples; k++) {
        size_t i = n <= (size_t)samples ? (size_t)k % n : (size_t)(rng_u64(rng) % n);
        real old = x[i];
        x[i] = old + h; double lp = f(ctx);
        x[i] = old - h; double lm = f(ctx);
        x[i] = old;
        num[k] = (real)((lp - lm) / (2 * h));
        ana[k] = analytic[i];
    }
    compare(name, ana, num, (size_t)samples, 1e-6);
    free(num);
    free(ana);
}

/* fd_check on every parameter tensor of a model (12 entries each), named "<label> d <tensor>"; f(ctx) is its loss */
static void fd_check_params(const char* label, LossFn f, void* ctx, Mamba2* m, Rng* rng) {
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        char name[160];
        snprintf(name, sizeof(name), "%s d %s", label, m->table[t].name);
        fd_check(name, f, ctx, m->params_memory + m->table[t].offset, m->grads_memory + m->table[t].offset,
                 m->table[t].numel, 12, rng);
    }
}

static double weighted_sum(const real* out, const real* w, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * w[i];
    return s;
}

/* --- the layers, each wrapped as "inputs -> scalar" --- */
enum { FD_BT = 14, FD_B = 2, FD_T = 7, FD_C = 12, FD_OC = 9, FD_K = 4, FD_H = 4, FD_P = 4, FD_N = 3, FD_G = 2 };

typedef struct { real *x, *w, *out, *rstd, *wout; } NormCtx;
static double rmsnorm_loss(void* p) {
    NormCtx* c = (NormCtx*)p;
    rmsnorm_forward(c->out, c->rstd, c->x, c->w, FD_BT, FD_C);
    return weighted_sum(c->out, c->wout, FD_BT * FD_C);
}

typedef struct { real *x, *w, *out, *wout; } MatCtx;
static double matmul_loss(void* p) {
    MatCtx* c = (MatCtx*)p;
    matmul_forward(c->out, c->x, c->w, FD_BT, FD_C, FD_OC);
    return weighted_sum(c->out, c->wout, FD_BT * FD_OC);
}

enum { CONV_STRIDE = FD_C + 5 };
typedef struct { real *in, *w, *b, *pre, *out, *wout; const int* seq; } ConvCtx;
static double conv_loss(void* p) {
    ConvCtx* c = (ConvCtx*)p;
    conv1d_silu_forward(c->pre, c->out, c->in, CONV_STRIDE, c->w, c->b, NULL, c->seq, FD_B, FD_T, FD_C, FD_K);
    return weighted_sum(c->out, c->wout, FD_BT * FD_C);
}

typedef struct { real *raw, *bias, *dt, *wout; } DtCtx;
static double dt_loss(void* p) {
    DtCtx* c = (DtCtx*)p;
    dt_forward(c->dt, c->raw, FD_H + 3, c->bias, FD_BT, FD_H);
    return weighted_sum(c->dt, c->wout, FD_BT * FD_H);
}

typedef struct { real *y, *z, *w, *out, *rstd, *wout; } GnCtx;
enum { GN_E = 12, GN_ZSTRIDE = 15 };
static double gated_loss(void* p) {
    GnCtx* c = (GnCtx*)p;
    gated_rmsnorm_forward(c->out, c->rstd, c->y, c->z, GN_ZSTRIDE, c->w, FD_BT, GN_E, FD_G);
    return weighted_sum(c->out, c->wout, FD_BT * GN_E);
}

typedef struct { real *logits, *probs, *losses; int* targets; } CeCtx;
enum { CE_V = 10, CE_VP = 16 };
static double ce_loss(void* p) {
    CeCtx* c = (CeCtx*)p;
    memcpy(c->probs, c->logits, sizeof(real) * FD_BT * CE_VP);
    crossentropy_forward(c->losses, c->probs, c->targets, FD_BT, CE_V, CE_VP);
    double s = 0;
    for (int i = 0; i < FD_BT; i++) s += c->losses[i];
    return s / FD_BT;
}

typedef struct { real *xbc, *dt, *A_log, *Dsk, *init, *y, *states, *final, *wout, *wfinal; int Q; const int* seq; } SsdCtx;
enum { SSD_E = FD_H * FD_P, SSD_CD = SSD_E + 2 * FD_G * FD_N };
static double ssd_loss(void* p) {
    SsdCtx* c = (SsdCtx*)p;
    ssd_chunked_forward(c->y, c->states, c->final, c->xbc, c->dt, c->A_log, c->Dsk, c->init, c->seq, FD_B, FD_T, FD_H, FD_P,
                        FD_N, FD_G, c->Q);
    return weighted_sum(c->y, c->wout, FD_BT * SSD_E) + weighted_sum(c->final, c->wfinal, FD_B * FD_H * FD_P * FD_N);
}

static void test_layer_gradients(Rng* rng) {
    /* RMSNorm */
    {
        NormCtx c = {alloc_real(FD_BT * FD_C), alloc_real(FD_C), alloc_real(FD_BT * FD_C), alloc_real(FD_BT),
                     alloc_real(FD_BT * FD_C)};
        fill_uniform(c.x, FD_BT * FD_C, rng, -2, 2); fill_uniform(c.w, FD_C, rng, 0.5, 1.5);
        fill_uniform(c.wout, FD_BT * FD_C, rng, -1, 1);
        real *dx = alloc_real(FD_BT * FD_C), *dw = alloc_real(FD_C);
        rmsnorm_loss(&c);
        rmsnorm_backward(dx, dw, c.wout, c.x, c.w, c.rstd, FD_BT, FD_C);
        fd_check("fd rmsnorm dx", rmsnorm_loss, &c, c.x, dx, FD_BT * FD_C, 24, rng);
        fd_check("fd rmsnorm dw", rmsnorm_loss, &c, c.w, dw, FD_C, FD_C, rng);
        free(c.x); free(c.w); free(c.out); free(c.rstd); free(c.wout); free(dx); free(dw);
    }
    /* matmul */
    {
        MatCtx c = {alloc_real(FD_BT * FD_C), alloc_real(FD_OC * FD_C), alloc_real(FD_BT * FD_OC),
                    alloc_real(FD_BT * FD_OC)};
        fill_uniform(c.x, FD_BT * FD_C, rng, -1, 1); fill_uniform(c.w, FD_OC * FD_C, rng, -1, 1);
        fill_uniform(c.wout, FD_BT * FD_OC, rng, -1, 1);
        real *dx = alloc_real(FD_BT * FD_C), *dw = alloc_real(FD_OC * FD_C);
        matmul_backward(dx, dw, c.wout, c.x, c.w, FD_BT, FD_C, FD_OC);
        fd_check("fd matmul dinp", matmul_loss, &c, c.x, dx, FD_BT * FD_C, 24, rng);
        fd_check("fd matmul dw", matmul_loss, &c, c.w, dw, FD_OC * FD_C, 24, rng);
        free(c.x); free(c.w); free(c.out); free(c.wout); free(dx); free(dw);
    }
    /* conv1d + SiLU, input with a row stride */
    {
        ConvCtx c = {alloc_real(FD_BT * CONV_STRIDE), alloc_real(FD_C * FD_K), alloc_real(FD_C),
                     alloc_real(FD_BT * FD_C), alloc_real(FD_BT * FD_C), alloc_real(FD_BT * FD_C), NULL};
        fill_uniform(c.in, FD_BT * CONV_STRIDE, rng, -2, 2); fill_uniform(c.w, FD_C * FD_K, rng, -1, 1);
        fill_uniform(c.b, FD_C, rng, -1, 1); fill_uniform(c.wout, FD_BT * FD_C, rng, -1, 1);
        real *din = alloc_real(FD_BT * CONV_STRIDE), *dw = alloc_real(FD_C * FD_K), *db = alloc_real(FD_C);
        real* dout = alloc_real(FD_BT * FD_C);
        conv_loss(&c);
        memcpy(dout, c.wout, sizeof(real) * FD_BT * FD_C);
        conv1d_silu_backward(din, CONV_STRIDE, dw, db, dout, c.pre, c.in, c.w, NULL, c.seq, FD_B, FD_T, FD_C, FD_K);
        /* the columns past FD_C of each row are not conv inputs: backward leaves them 0, and so does the FD */
        fd_check("fd conv1d+silu din", conv_loss, &c, c.in, din, FD_BT * CONV_STRIDE, 40, rng);
        fd_check("fd conv1d+silu dw", conv_loss, &c, c.w, dw, FD_C * FD_K, FD_C * FD_K, rng);
        fd_check("fd conv1d+silu dbias", conv_loss, &c, c.b, db, FD_C, FD_C, rng);
        free(c.in); free(c.w); free(c.b); free(c.pre); free(c.out); free(c.wout); free(din); free(dw); free(db);
        free(dout);
    }
    /* dt softplus */
    {
        DtCtx c = {alloc_real(FD_BT * (FD_H + 3)), alloc_real(FD_H), alloc_real(FD_BT * FD_H), alloc_real(FD_BT * FD_H)};
        fill_uniform(c.raw, FD_BT * (FD_H + 3), rng, -3, 3); fill_uniform(c.bias, FD_H, rng, -2, 1);
        fill_uniform(c.wout, FD_BT * FD_H, rng, -1, 1);
        real *draw = alloc_real(FD_BT * (FD_H + 3)), *dbias = alloc_real(FD_H);
        dt_backward(draw, FD_H + 3, dbias, c.wout, c.raw, c.bias, FD_BT, FD_H);
        fd_check("fd dt softplus d dt_raw", dt_loss, &c, c.raw, draw, FD_BT * (FD_H + 3), 24, rng);
        fd_check("fd dt softplus d dt_bias", dt_loss, &c, c.bias, dbias, FD_H, FD_H, rng);
        free(c.raw); free(c.bias); free(c.dt); free(c.wout); free(draw); free(dbias);
    }
    /* gated RMSNorm, 2 groups, z with a row stride */
    {
        GnCtx c = {alloc_real(FD_BT * GN_E), alloc_real(FD_BT * GN_ZSTRIDE), alloc_real(GN_E), alloc_real(FD_BT * GN_E),
                   alloc_real(FD_BT * FD_G), alloc_real(FD_BT * GN_E)};
        fill_uniform(c.y, FD_BT * GN_E, rng, -2, 2); fill_uniform(c.z, FD_BT * GN_ZSTRIDE, rng, -2, 2);
        fill_uniform(c.w, GN_E, rng, 0.5, 1.5); fill_uniform(c.wout, FD_BT * GN_E, rng, -1, 1);
        real *dy = alloc_real(FD_BT * GN_E), *dz = alloc_real(FD_BT * GN_ZSTRIDE), *dw = alloc_real(GN_E);
        gated_loss(&c);
        gated_rmsnorm_backward(dy, dz, GN_ZSTRIDE, dw, c.wout, c.y, c.z, c.w, c.rstd, FD_BT, GN_E, FD_G);
        fd_check("fd gated rmsnorm dy", gated_loss, &c, c.y, dy, FD_BT * GN_E, 24, rng);
        fd_check("fd gated rmsnorm dz", gated_loss, &c, c.z, dz, FD_BT * GN_ZSTRIDE, 40, rng);
        fd_check("fd gated rmsnorm dw", gated_loss, &c, c.w, dw, GN_E, GN_E, rng);
        free(c.y); free(c.z); free(c.w); free(c.out); free(c.rstd); free(c.wout); free(dy); free(dz); free(dw);
    }
    /* softmax + cross-entropy with padded logits */
    {
        int targets[FD_BT];
        for (int i = 0; i < FD_BT; i++) targets[i] = (int)(rng_u64(rng) % CE_V);
        CeCtx c = {alloc_real(FD_BT * CE_VP), alloc_real(FD_BT * CE_VP), alloc_real(FD_BT), targets};
        fill_uniform(c.logits, FD_BT * CE_VP, rng, -3, 3);
        ce_loss(&c);
        real* dl = alloc_real(FD_BT * CE_VP);
        crossentropy_backward(dl, c.probs, targets, (real)1 / FD_BT, FD_BT, CE_V, CE_VP);
        fd_check("fd cross-entropy dlogits", ce_loss, &c, c.logits, dl, FD_BT * CE_VP, 40, rng);
        free(c.logits); free(c.probs); free(c.losses); free(dl);
    }
    /* SSD chunked, with an initial state and a loss on the final state too; Q = 3 does not divide T = 7 */
    {
        int nc = ssd_num_chunks(FD_T, 3);
        size_t SN = (size_t)FD_B * FD_H * FD_P * FD_N;
        SsdCtx c = {alloc_real(FD_BT * SSD_CD), alloc_real(FD_BT * FD_H), alloc_real(FD_H), alloc_real(FD_H),
                    alloc_real(SN), alloc_real(FD_BT * SSD_E), alloc_real((size_t)FD_B * FD_H * nc * FD_P * FD_N),
                    alloc_real(SN), alloc_real(FD_BT * SSD_E), alloc_real(SN), 3, NULL};
        fill_uniform(c.xbc, FD_BT * SSD_CD, rng, -1, 1); fill_uniform(c.dt, FD_BT * FD_H, rng, 0.05, 0.8);
        fill_uniform(c.A_log, FD_H, rng, -0.5, 1); fill_uniform(c.Dsk, FD_H, rng, 0.5, 1.5);
        fill_uniform(c.init, SN, rng, -1, 1); fill_uniform(c.wout, FD_BT * SSD_E, rng, -1, 1);
        fill_uniform(c.wfinal, SN, rng, -1, 1);
        ssd_loss(&c);
        real *dxbc = alloc_real(FD_BT * SSD_CD), *ddt = alloc_real(FD_BT * FD_H), *dAl = alloc_real(FD_H);
        real *dD = alloc_real(FD_H), *dinit = alloc_real(SN);
        ssd_chunked_backward(dxbc, ddt, dAl, dD, dinit, c.wout, c.wfinal, c.xbc, c.dt, c.A_log, c.Dsk, c.states, c.seq, FD_B,
                             FD_T, FD_H, FD_P, FD_N, FD_G, 3);
        fd_check("fd ssd chunked dx,dB,dC", ssd_loss, &c, c.xbc, dxbc, FD_BT * SSD_CD, 60, rng);
        fd_check("fd ssd chunked ddt", ssd_loss, &c, c.dt, ddt, FD_BT * FD_H, 30, rng);
        fd_check("fd ssd chunked dA_log", ssd_loss, &c, c.A_log, dAl, FD_H, FD_H, rng);
        fd_check("fd ssd chunked dD", ssd_loss, &c, c.Dsk, dD, FD_H, FD_H, rng);
        fd_check("fd ssd chunked d init state", ssd_loss, &c, c.init, dinit, SN, 30, rng);
        free(c.xbc); free(c.dt); free(c.A_log); free(c.Dsk); free(c.init); free(c.y); free(c.states); free(c.final);
        free(c.wout); free(c.wfinal); free(dxbc); free(ddt); free(dAl); free(dD); free(dinit);
    }
}

/* --- the whole model --- */
typedef struct { Mamba2* m; int* inputs; int* targets; int B, T; } ModelCtx;
static double model_loss(void* p) {
    ModelCtx* c = (ModelCtx*)p;
    return mamba2_forward(c->m, c->inputs, c->targets, c->B, c->T);
}

static void test_model_gradients(Rng* rng) {
    Mamba2Config cfg = small_test_config();
    Mamba2 m;
    mamba2_build(&m, &cfg, 7);
    perturb_parameters(&m, rng);
    int B = 2, T = 11;
    int inputs[22], targets[22];
    for (int i = 0; i < B * T; i++) { inputs[i] = (int)(rng_u64(rng) % 20); targets[i] = (int)(rng_u64(rng) % 20); }
    ModelCtx ctx = {&m, inputs, targets, B, T};
    mamba2_zero_grad(&m);
    mamba2_forward(&m, inputs, targets, B, T);
    mamba2_backward(&m, inputs, targets, (real)1 / (B * T));
    fd_check_params("fd whole model", model_loss, &ctx, &m, rng);
    mamba2_free(&m);
}

/* ================================================================================================================
 * 3. the recurrent step == the chunked forward; gradient accumulation == one big batch
 * ================================================================================================================ */

static void test_step_matches_forward(Rng* rng) {
    Mamba2Config cfg = small_test_config();
    Mamba2 m;
    mamba2_build(&m, &cfg, 11);
    perturb_parameters(&m, rng);
    int T = 13;
    int inputs[13];
    for (int i = 0; i < T; i++) inputs[i] = (int)(rng_u64(rng) % cfg.vocab_size);
    mamba2_forward(&m, inputs, NULL, 1, T); /* probs = softmax of the logits of every position */
    InferenceState st;
    inference_state_init(&st, &cfg);
    real* probs = alloc_real((size_t)T * cfg.padded_vocab_size);
    for (int t = 0; t < T; t++) {
        real* logits = mamba2_step(&m, &st, inputs[t]);
        memcpy(probs + (size_t)t * cfg.padded_vocab_size, logits, sizeof(real) * cfg.padded_vocab_size);
    }
    real* unused_losses = alloc_real(T);
    crossentropy_forward(unused_losses, probs, NULL, T, cfg.vocab_size, cfg.padded_vocab_size);
    free(unused_losses);
    compare("recurrent step == chunked forward (probs, T=13)", probs, m.acts.probs, (size_t)T * cfg.padded_vocab_size,
            1e-12);
    free(probs);
    inference_state_free(&st);
    mamba2_free(&m);
}

static void test_grad_accumulation(Rng* rng) {
    Mamba2Config cfg = small_test_config();
    Mamba2 m;
    mamba2_build(&m, &cfg, 3);
    int B = 4, T = 9;
    int inputs[36], targets[36];
    for (int i = 0; i < B * T; i++) { inputs[i] = (int)(rng_u64(rng) % 20); targets[i] = (int)(rng_u64(rng) % 20); }
    mamba2_zero_grad(&m);
    mamba2_forward(&m, inputs, targets, B, T);
    mamba2_backward(&m, inputs, targets, (real)1 / (B * T));
    real* full = alloc_real(m.num_parameters);
    memcpy(full, m.grads_memory, sizeof(real) * m.num_parameters);
    mamba2_zero_grad(&m);
    for (int half = 0; half < 2; half++) {
        mamba2_forward(&m, inputs + half * 2 * T, targets + half * 2 * T, 2, T);
        mamba2_backward(&m, inputs + half * 2 * T, targets + half * 2 * T, (real)1 / (2 * T * 2));
    }
    compare("grad accumulation 2x(B=2) == 1x(B=4)", m.grads_memory, full, m.num_parameters, 1e-12);
    free(full);
    mamba2_free(&m);
}


/* ================================================================================================================
 * 3b. document boundaries (SPEC.md section 10, doc/packing.md): the same checks with packed documents
 * ================================================================================================================ */

/* random document indices: a boundary at each t > 0 with probability 1/6, and one forced at `force` (a chunk start) */
static void random_doc_index(int* seq, int B, int T, int force, Rng* rng) {
    for (int b = 0; b < B; b++) {
        int d = 0;
        for (int t = 0; t < T; t++) {
            if (t > 0 && (rng_u64(rng) % 6 == 0 || t == force)) d++;
            seq[(size_t)b * T + t] = d;
        }
    }
}

static void test_ssd_docs_against_recurrence(Rng* rng) {
    SSDShape shapes[] = {
        {2, 37, 4, 8, 6, 2, 8, 1},   /* 2 groups, initial state and d(final state) */
        {1, 19, 2, 4, 5, 1, 1, 1},   /* chunk 1: every boundary is a chunk start */
        {2, 21, 4, 4, 4, 2, 64, 1},  /* chunk >= T */
        {1, 64, 2, 16, 16, 1, 16, 0}, /* T a multiple of the chunk */
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        SSDShape s = shapes[i];
        int* seq = (int*)mallocCheck(sizeof(int) * (size_t)s.B * s.T);
        random_doc_index(seq, s.B, s.T, s.Q < s.T ? s.Q : 1, rng);
        test_ssd_against_recurrence(s, seq, rng);
        free(seq);
    }
}

/* finite differences through boundaries: rows {0,0,0|1,1|2,2} and {0|1,1,1,1|2,2}, chunk 3 (a boundary at a chunk
   start, two inside chunks, one at t = 1) */
static const int g_fd_seq[FD_BT] = {0, 0, 0, 1, 1, 2, 2, 0, 1, 1, 1, 1, 2, 2};

static void test_layer_gradients_docs(Rng* rng) {
    {
        ConvCtx c = {alloc_real(FD_BT * CONV_STRIDE), alloc_real(FD_C * FD_K), alloc_real(FD_C),
                     alloc_real(FD_BT * FD_C), alloc_real(FD_BT * FD_C), alloc_real(FD_BT * FD_C), g_fd_seq};
        fill_uniform(c.in, FD_BT * CONV_STRIDE, rng, -2, 2); fill_uniform(c.w, FD_C * FD_K, rng, -1, 1);
        fill_uniform(c.b, FD_C, rng, -1, 1); fill_uniform(c.wout, FD_BT * FD_C, rng, -1, 1);
        real *din = alloc_real(FD_BT * CONV_STRIDE), *dw = alloc_real(FD_C * FD_K), *db = alloc_real(FD_C);
        real* dout = alloc_real(FD_BT * FD_C);
        conv_loss(&c);
        memcpy(dout, c.wout, sizeof(real) * FD_BT * FD_C);
        conv1d_silu_backward(din, CONV_STRIDE, dw, db, dout, c.pre, c.in, c.w, NULL, c.seq, FD_B, FD_T, FD_C, FD_K);
        fd_check("fd conv1d+silu docs din", conv_loss, &c, c.in, din, FD_BT * CONV_STRIDE, 40, rng);
        fd_check("fd conv1d+silu docs dw", conv_loss, &c, c.w, dw, FD_C * FD_K, FD_C * FD_K, rng);
        fd_check("fd conv1d+silu docs dbias", conv_loss, &c, c.b, db, FD_C, FD_C, rng);
        /* the window really is cut: position 3 of row 0 (a document start) does not depend on inputs 0..2 */
        real* pre0 = alloc_real(FD_BT * FD_C);
        memcpy(pre0, c.pre, sizeof(real) * FD_BT * FD_C);
        for (int t = 0; t < 3; t++) c.in[(size_t)t * CONV_STRIDE] += 1;
        conv_loss(&c);
        report(c.pre[3 * FD_C] == pre0[3 * FD_C] && c.pre[2 * FD_C] != pre0[2 * FD_C],
               "conv1d docs: a document's first position does not see the previous document's inputs");
        free(pre0);
        free(c.in); free(c.w); free(c.b); free(c.pre); free(c.out); free(c.wout); free(din); free(dw); free(db);
        free(dout);
    }
    {
        int nc = ssd_num_chunks(FD_T, 3);
        size_t SN = (size_t)FD_B * FD_H * FD_P * FD_N;
        SsdCtx c = {alloc_real(FD_BT * SSD_CD), alloc_real(FD_BT * FD_H), alloc_real(FD_H), alloc_real(FD_H),
                    alloc_real(SN), alloc_real(FD_BT * SSD_E), alloc_real((size_t)FD_B * FD_H * nc * FD_P * FD_N),
                    alloc_real(SN), alloc_real(FD_BT * SSD_E), alloc_real(SN), 3, g_fd_seq};
        fill_uniform(c.xbc, FD_BT * SSD_CD, rng, -1, 1); fill_uniform(c.dt, FD_BT * FD_H, rng, 0.05, 0.8);
        fill_uniform(c.A_log, FD_H, rng, -0.5, 1); fill_uniform(c.Dsk, FD_H, rng, 0.5, 1.5);
        fill_uniform(c.init, SN, rng, -1, 1); fill_uniform(c.wout, FD_BT * SSD_E, rng, -1, 1);
        fill_uniform(c.wfinal, SN, rng, -1, 1);
        ssd_loss(&c);
        real *dxbc = alloc_real(FD_BT * SSD_CD), *ddt = alloc_real(FD_BT * FD_H), *dAl = alloc_real(FD_H);
        real *dD = alloc_real(FD_H), *dinit = alloc_real(SN);
        ssd_chunked_backward(dxbc, ddt, dAl, dD, dinit, c.wout, c.wfinal, c.xbc, c.dt, c.A_log, c.Dsk, c.states, c.seq,
                             FD_B, FD_T, FD_H, FD_P, FD_N, FD_G, 3);
        fd_check("fd ssd chunked docs dx,dB,dC", ssd_loss, &c, c.xbc, dxbc, FD_BT * SSD_CD, 60, rng);
        fd_check("fd ssd chunked docs ddt", ssd_loss, &c, c.dt, ddt, FD_BT * FD_H, 30, rng);
        fd_check("fd ssd chunked docs dA_log", ssd_loss, &c, c.A_log, dAl, FD_H, FD_H, rng);
        fd_check("fd ssd chunked docs dD", ssd_loss, &c, c.Dsk, dD, FD_H, FD_H, rng);
        fd_check("fd ssd chunked docs d init state", ssd_loss, &c, c.init, dinit, SN, 30, rng);
        free(c.xbc); free(c.dt); free(c.A_log); free(c.Dsk); free(c.init); free(c.y); free(c.states); free(c.final);
        free(c.wout); free(c.wfinal); free(dxbc); free(ddt); free(dAl); free(dD); free(dinit);
    }
}

/* the whole model through boundaries, with masked targets: the loss is the mean over the counted targets */
typedef struct { Mamba2* m; int* inputs; int* targets; const int* seq; int B, T; } DocModelCtx;
static double doc_model_loss(void* p) {
    DocModelCtx* c = (DocModelCtx*)p;
    return mamba2_forward_docs(c->m, c->inputs, c->targets, c->seq, c->B, c->T);
}

static void test_model_gradients_docs(Rng* rng) {
    Mamba2Config cfg = small_test_config();
    Mamba2 m;
    mamba2_build(&m, &cfg, 7);
    perturb_parameters(&m, rng);
    int B = 2, T = 11;
    int inputs[22], targets[22], seq[22];
    random_doc_index(seq, B, T, 4, rng);
    for (int i = 0; i < B * T; i++) {
        inputs[i] = (int)(rng_u64(rng) % 20);
        targets[i] = rng_u64(rng) % 4 == 0 ? TARGET_NO_LOSS : (int)(rng_u64(rng) % 20);
    }
    DocModelCtx ctx = {&m, inputs, targets, seq, B, T};
    mamba2_zero_grad(&m);
    mamba2_forward_docs(&m, inputs, targets, seq, B, T);
    mamba2_backward(&m, inputs, targets, (real)1 / (real)m.num_counted);
    fd_check_params("fd whole model docs+mask", doc_model_loss, &ctx, &m, rng);
    mamba2_free(&m);
}

/* the recurrent step with a fresh state at each document start == the chunked forward with boundaries */
static void test_step_matches_forward_docs(Rng* rng) {
    Mamba2Config cfg = small_test_config();
    Mamba2 m;
    mamba2_build(&m, &cfg, 11);
    perturb_parameters(&m, rng);
    enum { T = 23, SEP = 3 };
    int inputs[T], seq[T];
    for (int i = 0; i < T; i++) inputs[i] = 4 + (int)(rng_u64(rng) % (cfg.vocab_size - 4));
    inputs[5] = inputs[6] = inputs[12] = inputs[16] = SEP; /* documents start at 5, 6 (a one-token one), 12, 16 */
    dataloader_doc_index(seq, inputs, 1, T, SEP);
    mamba2_forward_docs(&m, inputs, NULL, seq, 1, T);
    InferenceState st;
    inference_state_init(&st, &cfg);
    real* probs = alloc_real((size_t)T * cfg.padded_vocab_size);
    for (int t = 0; t < T; t++) {
        if (t > 0 && inputs[t] == SEP) inference_state_reset(&st, &cfg); /* a new document: a fresh state */
        real* logits = mamba2_step(&m, &st, inputs[t]);
        memcpy(probs + (size_t)t * cfg.padded_vocab_size, logits, sizeof(real) * cfg.padded_vocab_size);
    }
    real* unused_losses = alloc_real(T);
    crossentropy_forward(unused_losses, probs, NULL, T, cfg.vocab_size, cfg.padded_vocab_size);
    free(unused_losses);
    compare("recurrent step + resets == chunked docs (T=23)", probs, m.acts.probs, (size_t)T * cfg.padded_vocab_size,
            1e-12);
    free(probs);
    inference_state_free(&st);
    mamba2_free(&m);
}

/* ================================================================================================================
 * 3c. hybrids (doc/hybrid.md): attention (RoPE, GQA, biases) and gated-MLP blocks next to Mamba-2 blocks
 * ================================================================================================================ */

/* the attention layer alone, 2 rows with documents, GQA 4 query heads on 2 kv heads, partial rotary (4 of 6) */
enum { AT_B = 2, AT_T = 7, AT_HQ = 4, AT_HKV = 2, AT_HD = 6, AT_RD = 4, AT_QKV = AT_HD * (AT_HQ + 2 * AT_HKV) };
typedef struct { real *qkv, *rot, *out, *lse, *wout; const int* seq; } AttnCtx;
static double attn_loss(void* p) {
    AttnCtx* c = (AttnCtx*)p;
    rope_forward(c->rot, c->qkv, c->seq, AT_B, AT_T, AT_QKV, AT_HQ + AT_HKV, AT_HD, AT_RD, 10000);
    attention_forward(c->out, c->lse, c->rot, c->seq, AT_B, AT_T, AT_HQ, AT_HKV, AT_HD);
    return weighted_sum(c->out, c->wout, (size_t)AT_B * AT_T * AT_HQ * AT_HD);
}

typedef struct { real *h, *out, *wout; int BT, Hm; } SwigluCtx;
static double swiglu_loss(void* p) {
    SwigluCtx* c = (SwigluCtx*)p;
    swiglu_forward(c->out, c->h, c->BT, c->Hm);
    return weighted_sum(c->out, c->wout, (size_t)c->BT * c->Hm);
}

static void test_hybrid_layer_gradients(Rng* rng) {
    for (int docs = 0; docs <= 1; docs++) {
        int seq[AT_B * AT_T];
        random_doc_index(seq, AT_B, AT_T, 3, rng);
        size_t n = (size_t)AT_B * AT_T * AT_QKV, no = (size_t)AT_B * AT_T * AT_HQ * AT_HD;
        AttnCtx c = {alloc_real(n), alloc_real(n), alloc_real(no), alloc_real((size_t)AT_B * AT_HQ * AT_T),
                     alloc_real(no), docs ? seq : NULL};
        fill_uniform(c.qkv, n, rng, -1.5, 1.5); fill_uniform(c.wout, no, rng, -1, 1);
        attn_loss(&c);
        real* dqkv = alloc_real(n);
        attention_backward(dqkv, c.wout, c.rot, c.out, c.lse, c.seq, AT_B, AT_T, AT_HQ, AT_HKV, AT_HD);
        rope_backward(dqkv, c.seq, AT_B, AT_T, AT_QKV, AT_HQ + AT_HKV, AT_HD, AT_RD, 10000);
        fd_check(docs ? "fd rope+attention (GQA, documents) dqkv" : "fd rope+attention (GQA) dqkv", attn_loss, &c,
                 c.qkv, dqkv, n, 80, rng);
        free(c.qkv); free(c.rot); free(c.out); free(c.lse); free(c.wout); free(dqkv);
    }
    /* attention without RoPE, against the plain softmax formula for one (row, head, position) */
    {
        real q[3] = {0.3, -0.2, 0.5}, k[3][3] = {{0.1, 0.4, -0.3}, {-0.5, 0.2, 0.2}, {0.3, 0.3, 0.1}};
        real v[3][3] = {{1, 2, 3}, {-1, 0, 1}, {0.5, -0.5, 2}};
        real qkv[3 * 9], out[9], lse[3];
        for (int t = 0; t < 3; t++)
            for (int d = 0; d < 3; d++) {
                qkv[t * 9 + d] = q[d];
                qkv[t * 9 + 3 + d] = k[t][d];
                qkv[t * 9 + 6 + d] = v[t][d];
            }
        attention_forward(out, lse, qkv, NULL, 1, 3, 1, 1, 3);
        double w[3], sum = 0, ref[3] = {0, 0, 0};
        for (int j = 0; j < 3; j++) {
            w[j] = exp((q[0] * k[j][0] + q[1] * k[j][1] + q[2] * k[j][2]) / sqrt(3.0));
            sum += w[j];
        }
        for (int j = 0; j < 3; j++)
            for (int d = 0; d < 3; d++) ref[d] += w[j] / sum * v[j][d];
        real refr[3] = {(real)ref[0], (real)ref[1], (real)ref[2]};
        compare("attention == softmax(q k^T / sqrt(hd)) v (last position)", out + 6, refr, 3, 1e-14);
    }
    /* RoPE: position 0 is the identity, and a turn keeps each pair's length */
    {
        real x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8];
        memcpy(y, x, sizeof(x));
        rope_rotate(y, 1, 8, 4, 0, 10000, 1);
        int ident = memcmp(x, y, sizeof(x)) == 0;
        rope_rotate(y, 1, 8, 4, 5, 10000, 1);
        double n0 = x[0] * x[0] + x[2] * x[2], n1 = y[0] * y[0] + y[2] * y[2];
        report(ident && fabs(n0 - n1) < 1e-12 && y[4] == 5 && y[7] == 8 && y[0] != x[0],
               "rope: identity at position 0, pairs (i, i + rd/2) keep their length, dims past rd untouched");
    }
    {
        enum { BT = 6, HM = 5 };
        SwigluCtx c = {alloc_real(BT * 2 * HM), alloc_real(BT * HM), alloc_real(BT * HM), BT, HM};
        fill_uniform(c.h, BT * 2 * HM, rng, -3, 3); fill_uniform(c.wout, BT * HM, rng, -1, 1);
        real* dh = alloc_real(BT * 2 * HM);
        swiglu_backward(dh, c.wout, c.h, BT, HM);
        fd_check("fd swiglu dh (y and gate)", swiglu_loss, &c, c.h, dh, BT * 2 * HM, 40, rng);
        free(c.h); free(c.out); free(c.wout); free(dh);
    }
    {
        enum { BT = 5, OC = 4 };
        real dout[BT * OC], db[OC] = {0, 0, 0, 0}, ref[OC] = {0, 0, 0, 0};
        fill_uniform(dout, BT * OC, rng, -1, 1);
        bias_backward(db, dout, BT, OC);
        for (int i = 0; i < BT * OC; i++) ref[i % OC] += dout[i];
        compare("bias backward == column sums", db, ref, OC, 1e-15);
    }
}

static void test_packed_vs_separate_spec(const char* spec, const char* label, int aligned, int masked, double tol,
                                         Rng* rng);

/* small hybrids: every block kind, GQA, partial rotary, both biases; and mamba_ssm's form (MF / AF pairs) */
#define HYBRID_TEST_SPEC "d_model=16,pattern=MAFMF,d_state=8,headdim=8,ngroups=2,vocab=20,chunk=4,num_heads=4," \
                         "num_heads_kv=2,head_dim=6,rotary_emb_dim=4,qkv_proj_bias=1,out_proj_bias=1,d_intermediate=20"
#define HYBRID_TEST_SPEC2 "d_model=16,n_layer=3,attn_layer_idx=0,2,d_intermediate=8,d_state=8,headdim=8,vocab=20," \
                          "chunk=4,num_heads=2,rotary_emb_dim=8"

static Mamba2Config hybrid_test_config(const char* spec) {
    Mamba2Config c;
    char err[256];
    if (config_parse(&c, spec, err, sizeof(err))) die("%s", err);
    return c;
}

static void test_hybrid_model_gradients(const char* spec, int docs, Rng* rng) {
    Mamba2Config cfg = hybrid_test_config(spec);
    Mamba2 m;
    mamba2_build(&m, &cfg, 7);
    perturb_parameters(&m, rng);
    int B = 2, T = 11;
    int inputs[22], targets[22], seq[22];
    random_doc_index(seq, B, T, 4, rng);
    for (int i = 0; i < B * T; i++) {
        inputs[i] = (int)(rng_u64(rng) % 20);
        targets[i] = docs && rng_u64(rng) % 4 == 0 ? TARGET_NO_LOSS : (int)(rng_u64(rng) % 20);
    }
    DocModelCtx ctx = {&m, inputs, targets, docs ? seq : NULL, B, T};
    mamba2_zero_grad(&m);
    mamba2_forward_docs(&m, inputs, targets, ctx.seq, B, T);
    mamba2_backward(&m, inputs, targets, (real)1 / (real)m.num_counted);
    char label[96];
    snprintf(label, sizeof(label), "fd hybrid %.40s%s", cfg.pattern, docs ? " docs+mask" : "");
    fd_check_params(label, doc_model_loss, &ctx, &m, rng);
    mamba2_free(&m);
}

/* the recurrent step with the KV cache (and resets at document starts) == the parallel forward */
static void test_hybrid_step_matches_forward(const char* spec, int docs, Rng* rng) {
    Mamba2Config cfg = hybrid_test_config(spec);
    Mamba2 m;
    mamba2_build(&m, &cfg, 11);
    perturb_parameters(&m, rng);
    enum { T = 23, SEP = 3 };
    int inputs[T], seq[T];
    for (int i = 0; i < T; i++) inputs[i] = 4 + (int)(rng_u64(rng) % (cfg.vocab_size - 4));
    if (docs) inputs[5] = inputs[6] = inputs[12] = inputs[16] = SEP;
    dataloader_doc_index(seq, inputs, 1, T, SEP);
    mamba2_forward_docs(&m, inputs, NULL, docs ? seq : NULL, 1, T);
    InferenceState st;
    inference_state_init(&st, &cfg);
    real* probs = alloc_real((size_t)T * cfg.padded_vocab_size);
    for (int t = 0; t < T; t++) {
        if (docs && t > 0 && inputs[t] == SEP) inference_state_reset(&st, &cfg);
        real* logits = mamba2_step(&m, &st, inputs[t]);
        memcpy(probs + (size_t)t * cfg.padded_vocab_size, logits, sizeof(real) * cfg.padded_vocab_size);
    }
    real* unused_losses = alloc_real(T);
    crossentropy_forward(unused_losses, probs, NULL, T, cfg.vocab_size, cfg.padded_vocab_size);
    free(unused_losses);
    char name[128];
    snprintf(name, sizeof(name), "hybrid %.40s: step + KV cache%s == parallel (T=23)", cfg.pattern,
             docs ? " + resets" : "");
    compare(name, probs, m.acts.probs, (size_t)T * cfg.padded_vocab_size, 1e-12);
    free(probs);
    inference_state_free(&st);
    mamba2_free(&m);
}

/* configs: the two spellings of a mamba_ssm model agree; bad settings are refused with a message */
static void test_hybrid_configs(void) {
    Mamba2Config a = hybrid_test_config("d_model=16,n_layer=2,attn_layer_idx=1,d_intermediate=8,num_heads=2");
    Mamba2Config b = hybrid_test_config("d_model=16,pattern=MFAF,d_intermediate=8,num_heads=2");
    report(config_same_model(&a, &b) && strcmp(a.pattern, "MFAF") == 0 && a.mlp_hidden == 128 &&
           a.attn_head_dim == 8 && a.attn_kv_heads == 2 && a.rotary_base == 10000,
           "attn_layer_idx=1,d_intermediate=8 on 2 layers == pattern=MFAF (hidden 128, head_dim 8, base 10000)");
    Mamba2Config p = hybrid_test_config("tiny,pattern=MMMM");
    Mamba2Config q = hybrid_test_config("tiny");
    report(p.pattern[0] == '\0' && config_same_model(&p, &q) && !config_is_hybrid(&q) && config_is_hybrid(&a),
           "an all-M pattern is the pure model; a pattern with A or F blocks is a hybrid");
    const char* bad[] = {"tiny,pattern=MAX", "tiny,pattern=MA", "tiny,pattern=MF,num_heads=2",
                         "tiny,num_heads=2", "tiny,pattern=MA,num_heads=3,num_heads_kv=2",
                         "tiny,pattern=MA,num_heads=2,rotary_emb_dim=3", "tiny,pattern=MF",
                         "tiny,d_intermediate=8,pattern=MA,num_heads=2", "tiny,n_layer=4,pattern=MAM,num_heads=2",
                         "tiny,attn_layer_idx=9,num_heads=2", "tiny,pattern=MA*0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        Mamba2Config c;
        char err[256] = "";
        int rc = config_parse(&c, bad[i], err, sizeof(err));
        report(rc != 0 && err[0] != '\0', "refused '%s': %s", bad[i], err);
    }
    const char* presets[] = {"tpp125m", "tpp350m", "tpp760m", "tpp1.3b", "hybrid130m"};
    for (size_t i = 0; i < 5; i++) {
        Mamba2Config c;
        char err[256] = "";
        int rc = config_parse(&c, presets[i], err, sizeof(err));
        ParamSpec t[NUM_PARAM_TENSORS];
        size_t n = rc == 0 ? param_table_build(t, &c) : 0;
        report(rc == 0 && n == config_param_count(&c), "preset %s: %zu blocks, %.1fM parameters %s", presets[i],
               rc == 0 ? strlen(c.pattern) : 0, n / 1e6, err);
    }
}

#else /* float build */
/* ================================================================================================================
 * 4. the independent reference: HF transformers' Mamba2ForCausalLM (dev/make_hf_fixture.py)
 * ================================================================================================================ */

static void test_hf_fixture(int chunk) {
    HFFixture fx;
    char err[512], name[128];
    if (hf_fixture_load(&fx, HF_FIXTURE_PATH, chunk, err, sizeof(err)) != 0) { report(0, "fixture: %s", err); return; }
    const Mamba2Config* cfg = &fx.config;
    int B = fx.B, T = fx.T;
    size_t nlogits = (size_t)B * T * cfg->vocab_size;
    Mamba2 m;
    mamba2_allocate_parameters(&m, cfg);
    memcpy(m.params_memory, fx.params, sizeof(float) * m.num_parameters); /* real is float in this build */
    mamba2_zero_grad(&m);
    real loss = mamba2_forward(&m, fx.inputs, fx.targets, B, T);
    /* the forward leaves probabilities in acts.probs: take the logits from the LM head again */
    real* logits = alloc_real(nlogits);
    matmul_forward(logits, m.acts.lnf, m.params.wte, B * T, cfg->d_model, cfg->padded_vocab_size);
    snprintf(name, sizeof(name), "hf fixture (chunk %d) logits", chunk);
    compare(name, logits, fx.logits, nlogits, 1e-5);
    snprintf(name, sizeof(name), "hf fixture (chunk %d) loss", chunk);
    compare(name, &loss, &fx.loss, 1, 2e-6);
    mamba2_backward(&m, fx.inputs, fx.targets, (real)1 / (B * T));
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        if (m.table[t].numel == 0) continue; /* the attention / MLP tensors a pure Mamba-2 model does not have */
        snprintf(name, sizeof(name), "hf fixture (chunk %d) grad %s", chunk, m.table[t].name);
        compare(name, m.grads_memory + m.table[t].offset, fx.grads + m.table[t].offset, m.table[t].numel, 1e-5);
    }
    /* 10 AdamW steps on the same batch, with the fixture's hyper-parameters */
    real losses[HF_FIXTURE_STEPS], norms[HF_FIXTURE_STEPS];
    for (int step = 0; step < HF_FIXTURE_STEPS; step++) {
        mamba2_zero_grad(&m);
        losses[step] = mamba2_forward(&m, fx.inputs, fx.targets, B, T);
        mamba2_backward(&m, fx.inputs, fx.targets, (real)1 / (B * T));
        double norm = mamba2_grad_norm(&m);
        norms[step] = (real)norm;
        mamba2_update(&m, (real)fx.lr, (real)fx.beta1, (real)fx.beta2, (real)fx.eps, (real)fx.weight_decay,
                      (real)clip_coefficient(norm, fx.grad_clip));
    }
    snprintf(name, sizeof(name), "hf fixture (chunk %d) 10 AdamW losses", chunk);
    compare(name, losses, fx.losses, HF_FIXTURE_STEPS, 1e-5);
    snprintf(name, sizeof(name), "hf fixture (chunk %d) 10 AdamW grad norms", chunk);
    compare(name, norms, fx.grad_norms, HF_FIXTURE_STEPS, 1e-5);
    for (int i = 0; i < HF_FIXTURE_STEPS; i++)
        printf("    step %d: loss %.7f (hf %.7f)  grad norm %.6f (hf %.6f)\n", i, losses[i], fx.losses[i], norms[i],
               fx.grad_norms[i]);
    free(logits);
    mamba2_free(&m);
    hf_fixture_free(&fx);
}

/* ================================================================================================================
 * 5, 6. the trainer binary end to end: resume, and bad input
 * ================================================================================================================ */

static char g_tmp[256];

/* llm.c shard: 256 int32 header (magic, version, count) then uint16 tokens */
static void write_shard(const char* path, const uint16_t* tokens, int n, int magic, int header_count) {
    int32_t header[256] = {0};
    header[0] = magic;
    header[1] = 1;
    header[2] = header_count;
    FILE* f = fopenCheck(path, "wb");
    fwriteCheck(header, sizeof(header), 1, f);
    fwriteCheck(tokens, sizeof(uint16_t), (size_t)n, f);
    fcloseCheck(f);
}

/* runs a shell command, captures its output (all of it is read, so the command never meets a closed pipe; a long
   output keeps its first and last halves); returns the exit status */
static int run_capture(const char* cmd, char* out, size_t outlen) {
    char full[4096];
    snprintf(full, sizeof(full), "%s 2>&1", cmd);
    FILE* p = popen(full, "r");
    if (p == NULL) return -1;
    size_t cap = 1 << 16, n = 0;
    char* all = (char*)mallocCheck(cap);
    size_t got;
    while ((got = fread(all + n, 1, cap - n, p)) > 0) {
        n += got;
        if (n == cap) { cap *= 2; all = (char*)realloc(all, cap); if (all == NULL) die("out of memory"); }
    }
    if (n < outlen) { memcpy(out, all, n); out[n] = '\0'; }
    else {
        size_t half = (outlen - 1) / 2;
        memcpy(out, all, half);
        memcpy(out + half, all + n - (outlen - 1 - half), outlen - 1 - half);
        out[outlen - 1] = '\0';
    }
    free(all);
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static int files_equal(const char* a, const char* b) {
    FILE* fa = fopen(a, "rb");
    FILE* fb = fopen(b, "rb");
    int eq = fa && fb;
    while (eq) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) eq = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return eq;
}

/* the train-loss lines "s:<step> trl:..." of a log with step > after, concatenated */
static void log_lines_after(const char* path, int after, char* out, size_t n) {
    out[0] = '\0';
    FILE* f = fopen(path, "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        int s;
        if (sscanf(line, "s:%d trl:", &s) == 1 && s > after && strlen(out) + strlen(line) < n) strcat(out, line);
    }
    fclose(f);
}

#define TINY_MODEL "d_model=32,n_layer=2,d_state=8,headdim=8,chunk=8"

static void make_train_data(void) {
    /* a text-like byte stream: repeated phrases with variations, so the loss can fall */
    const char* words[] = {"the ", "state ", "space ", "model ", "scans ", "a ", "chunk ", "of ", "tokens ", "\n"};
    uint16_t* tok = (uint16_t*)mallocCheck(sizeof(uint16_t) * 20000);
    int n = 0;
    Rng r;
    rng_seed(&r, 5);
    while (n < 19000) {
        const char* w = words[rng_u64(&r) % 10];
        for (const char* ch = w; *ch; ch++) tok[n++] = (uint16_t)(unsigned char)*ch;
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/train.bin", g_tmp);
    write_shard(path, tok, n, 20240520, n);
    snprintf(path, sizeof(path), "%s/val.bin", g_tmp);
    write_shard(path, tok, 3000, 20240520, 3000);
    free(tok);
}

static void test_resume_bitwise(void) {
    char cmd[2048], out[65536], a[512], b[512];
    const char* common = "-b 2 -t 16 -x 6 -v 3 -m 2 -s 3 -g 8 -l 3e-3 -u 2 -S 42";
    snprintf(cmd, sizeof(cmd), "./train_mamba2 -i %s/train.bin -j %s/val.bin -k none -e " TINY_MODEL
             " -o %s/run_full -n 3 %s", g_tmp, g_tmp, g_tmp, common);
    int rc = run_capture(cmd, out, sizeof(out));
    report(rc == 0, "trainer runs 6 steps with checkpoints (exit %d)", rc);
    if (rc != 0) { printf("%s\n", out); return; }
    /* resume from the step-3 checkpoint in a fresh directory */
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/run_resume && cp %s/run_full/ckpt_00000003.bin %s/run_resume/", g_tmp,
             g_tmp, g_tmp);
    if (system(cmd) != 0) { report(0, "copy checkpoint"); return; }
    snprintf(cmd, sizeof(cmd), "./train_mamba2 -i %s/train.bin -j %s/val.bin -k none -e " TINY_MODEL
             " -o %s/run_resume -n 3 -y 1 %s", g_tmp, g_tmp, g_tmp, common);
    rc = run_capture(cmd, out, sizeof(out));
    report(rc == 0 && strstr(out, "resumed from") != NULL, "trainer resumes from the step-3 checkpoint (exit %d)", rc);
    snprintf(a, sizeof(a), "%s/run_full/ckpt_00000006.bin", g_tmp);
    snprintf(b, sizeof(b), "%s/run_resume/ckpt_00000006.bin", g_tmp);
    report(files_equal(a, b), "resume: step-6 checkpoints (weights, AdamW, loader, RNG) are bitwise identical");
    char la[4096], lb[4096];
    snprintf(a, sizeof(a), "%s/run_full/main.log", g_tmp);
    snprintf(b, sizeof(b), "%s/run_resume/main.log", g_tmp);
    log_lines_after(a, 3, la, sizeof(la));
    log_lines_after(b, 3, lb, sizeof(lb));
    report(strlen(la) > 0 && strcmp(la, lb) == 0, "resume: logged train losses of steps 4-6 identical");
    /* the loss falls on this data */
    float first = 0, lastv = 0;
    FILE* f = fopen(a, "r");
    char line[256];
    int s;
    float v;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "s:%d trl:%f", &s, &v) == 2) { if (s == 1) first = v; lastv = v; }
    if (f) fclose(f);
    report(lastv < first, "training lowers the loss (%.4f -> %.4f)", first, lastv);
    /* export to an HF folder, then evaluate the folder and the checkpoint: the same loss */
    char la2[65536];
    snprintf(cmd, sizeof(cmd), "./export_mamba2 -e %s/run_full/ckpt_00000006.bin -o %s/exported", g_tmp, g_tmp);
    rc = run_capture(cmd, out, sizeof(out));
    report(rc == 0, "export_mamba2 writes an HF folder (exit %d)", rc);
    snprintf(cmd, sizeof(cmd), "./eval_mamba2 -e %s/run_full/ckpt_00000006.bin -i %s/val.bin -b 2 -t 16 -m 4 2>&1 | "
             "grep 'mean loss'", g_tmp, g_tmp);
    run_capture(cmd, la2, sizeof(la2));
    snprintf(cmd, sizeof(cmd), "./eval_mamba2 -e %s/exported -i %s/val.bin -b 2 -t 16 -m 4 2>&1 | grep 'mean loss'",
             g_tmp, g_tmp);
    run_capture(cmd, out, sizeof(out));
    out[strcspn(out, "\n")] = '\0';
    la2[strcspn(la2, "\n")] = '\0';
    report(strlen(out) > 0 && strcmp(out, la2) == 0, "the exported folder evaluates to the checkpoint's loss: %s", out);
}

static void expect_failure(const char* what, const char* args, const char* must_contain) {
    char cmd[2048 + 32], out[65536]; /* args: up to 2048 bytes */
    snprintf(cmd, sizeof(cmd), "./train_mamba2 %s", args);
    int rc = run_capture(cmd, out, sizeof(out));
    int ok = rc != 0 && rc < 128 && strstr(out, must_contain) != NULL;
    report(ok, "bad input, %s: exit %d, message contains \"%s\"", what, rc, must_contain);
    if (!ok) printf("    output was: %.600s\n", out);
}

/* a hybrid through the trainer binary: resume is bitwise, and its mamba_ssm export evaluates to the checkpoint's loss
   and accuracy */
#define HYBRID_TRAIN_MODEL "d_model=32,n_layer=2,attn_layer_idx=1,d_intermediate=32,d_state=8,headdim=8,chunk=8," \
                           "num_heads=4,num_heads_kv=2,rotary_emb_dim=4,qkv_proj_bias=1"
static void test_resume_bitwise_hybrid(void) {
    char cmd[2048], out[65536], a[512], b[512];
    const char* common = "-b 2 -t 16 -x 4 -v 2 -m 2 -s 2 -g 8 -l 3e-3 -u 1 -S 43";
    snprintf(cmd, sizeof(cmd), "./train_mamba2 -i %s/train.bin -j %s/val.bin -k none -e " HYBRID_TRAIN_MODEL
             " -o %s/hyb_full -n 2 %s", g_tmp, g_tmp, g_tmp, common);
    int rc = run_capture(cmd, out, sizeof(out));
    report(rc == 0 && strstr(out, "pattern MFAF") != NULL, "hybrid MFAF: the trainer runs 4 steps (exit %d)", rc);
    if (rc != 0) { printf("%s\n", out); return; }
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/hyb_resume && cp %s/hyb_full/ckpt_00000002.bin %s/hyb_resume/", g_tmp,
             g_tmp, g_tmp);
    if (system(cmd) != 0) { report(0, "copy checkpoint"); return; }
    snprintf(cmd, sizeof(cmd), "./train_mamba2 -i %s/train.bin -j %s/val.bin -k none -e " HYBRID_TRAIN_MODEL
             " -o %s/hyb_resume -n 2 -y 1 %s", g_tmp, g_tmp, g_tmp, common);
    rc = run_capture(cmd, out, sizeof(out));
    snprintf(a, sizeof(a), "%s/hyb_full/ckpt_00000004.bin", g_tmp);
    snprintf(b, sizeof(b), "%s/hyb_resume/ckpt_00000004.bin", g_tmp);
    report(rc == 0 && files_equal(a, b), "hybrid resume from step 2: the step-4 checkpoints are bitwise identical");
    char la[4096], lb[4096];
    snprintf(a, sizeof(a), "%s/hyb_full/main.log", g_tmp);
    snprintf(b, sizeof(b), "%s/hyb_resume/main.log", g_tmp);
    log_lines_after(a, 2, la, sizeof(la));
    log_lines_after(b, 2, lb, sizeof(lb));
    report(strlen(la) > 0 && strcmp(la, lb) == 0, "hybrid resume: logged losses of steps 3-4 identical");
    snprintf(cmd, sizeof(cmd), "./export_mamba2 -e %s/hyb_full/ckpt_00000004.bin -o %s/hyb_exported -s mamba_ssm",
             g_tmp, g_tmp);
    rc = run_capture(cmd, out, sizeof(out));
    report(rc == 0, "export_mamba2 -s mamba_ssm writes the hybrid (exit %d)", rc);
    char l1[65536];
    snprintf(cmd, sizeof(cmd), "./eval_mamba2 -e %s/hyb_full/ckpt_00000004.bin -i %s/val.bin -b 2 -t 16 -m 4 2>&1 | "
             "grep -E 'mean loss|accuracy'", g_tmp, g_tmp);
    run_capture(cmd, l1, sizeof(l1));
    snprintf(cmd, sizeof(cmd), "./eval_mamba2 -e %s/hyb_exported -i %s/val.bin -b 2 -t 16 -m 4 2>&1 | "
             "grep -E 'mean loss|accuracy'", g_tmp, g_tmp);
    run_capture(cmd, out, sizeof(out));
    report(strstr(out, "accuracy ") != NULL && strcmp(out, l1) == 0, "the exported hybrid evaluates to the "
           "checkpoint's loss and accuracy: %s", out);
    snprintf(cmd, sizeof(cmd), "./export_mamba2 -e %s/hyb_full/ckpt_00000004.bin -o %s/hyb_hf", g_tmp, g_tmp);
    rc = run_capture(cmd, out, sizeof(out));
    report(rc != 0 && strstr(out, "hybrid") != NULL, "export of a hybrid to HF transformers is refused (exit %d)", rc);
}

static void test_bad_input(void) {
    char path[512], args[2048];
    uint16_t toks[400];
    for (int i = 0; i < 400; i++) toks[i] = (uint16_t)(i % 200);
    /* truncated: the header promises more tokens than the file holds */
    snprintf(path, sizeof(path), "%s/truncated.bin", g_tmp);
    write_shard(path, toks, 400, 20240520, 1000);
    snprintf(args, sizeof(args), "-i %s -j none -k none -b 2 -t 16 -x 1", path);
    expect_failure("truncated shard", args, "truncated");
    /* wrong magic */
    snprintf(path, sizeof(path), "%s/badmagic.bin", g_tmp);
    write_shard(path, toks, 400, 12345, 400);
    snprintf(args, sizeof(args), "-i %s -j none -k none -b 2 -t 16 -x 1", path);
    expect_failure("wrong magic", args, "magic");
    /* a token id outside the vocabulary */
    toks[123] = 300;
    snprintf(path, sizeof(path), "%s/badtoken.bin", g_tmp);
    write_shard(path, toks, 400, 20240520, 400);
    snprintf(args, sizeof(args), "-i %s -j none -k none -b 2 -t 16 -x 1", path);
    expect_failure("token id >= vocab", args, "300");
    /* an invalid config */
    snprintf(args, sizeof(args), "-i %s/train.bin -j none -k none -e d_model=30,headdim=16 -x 1", g_tmp);
    expect_failure("invalid config", args, "not divisible by headdim");
    snprintf(args, sizeof(args), "-i %s/train.bin -j none -k none -e d_model=64,foo=3 -x 1", g_tmp);
    expect_failure("unknown config key", args, "unknown key 'foo'");
    /* resuming a checkpoint of another model */
    snprintf(args, sizeof(args), "-i %s/train.bin -j none -k none -e d_model=48,n_layer=2,d_state=8,headdim=8 "
             "-o %s/run_full -y 1 -b 2 -t 16 -x 8", g_tmp, g_tmp);
    expect_failure("checkpoint of another config", args, "another model");
    /* a truncated checkpoint */
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/run_trunc && head -c 5000 %s/run_full/ckpt_00000006.bin > "
             "%s/run_trunc/ckpt_00000006.bin", g_tmp, g_tmp, g_tmp);
    if (system(cmd) != 0) report(0, "make truncated checkpoint");
    snprintf(args, sizeof(args), "-i %s/train.bin -j none -k none -o %s/run_trunc -y 1 -b 2 -t 16 -x 8", g_tmp, g_tmp);
    expect_failure("truncated checkpoint", args, "truncated");
    /* a file that is not a checkpoint given to -e */
    snprintf(args, sizeof(args), "-i %s/train.bin -j none -k none -e %s/train.bin -x 1", g_tmp, g_tmp);
    expect_failure("not a checkpoint", args, "not a mamba2.c checkpoint");
    /* a missing shard */
    snprintf(args, sizeof(args), "-i %s/nothing_*.bin -j none -k none -x 1", g_tmp);
    expect_failure("no shard matches", args, "nothing_");
    /* an unknown flag */
    expect_failure("unknown flag", "-Z 3", "unknown flag");
}

/* ================================================================================================================
 * 7. operations (#27): kill -9, SIGTERM, a full disk, corrupt checkpoints, a used -o, flags, memory, NaN weights
 * ================================================================================================================ */

/* the trainer runs single-threaded here: on a shared machine OpenMP's spinning makes a 1.5 ms step take 100 ms */
#define OPS_TRAIN "OMP_NUM_THREADS=1 ./train_mamba2"
#define OPS_COMMON "-e " TINY_MODEL " -b 2 -t 16 -x 1500 -n 100 -v 50 -m 2 -s 0 -l 3e-3 -u 20 -S 7"

static void ops_cmd(char* cmd, size_t n, const char* dir, const char* extra) {
    snprintf(cmd, n, OPS_TRAIN " -i %s/train.bin -j %s/val.bin -k none " OPS_COMMON " -o %s/%s %s", g_tmp, g_tmp,
             g_tmp, dir, extra);
}

static int count_lines(const char* path) {
    FILE* f = fopen(path, "r");
    if (f == NULL) return 0;
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF) if (ch == '\n') n++;
    fclose(f);
    return n;
}

/* starts cmd (with exec, so the pid is the trainer's), output to outpath; returns the pid */
static pid_t spawn(const char* cmd, const char* outpath) {
    char full[4096];
    snprintf(full, sizeof(full), "exec env %s > %s 2>&1", cmd, outpath);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) { execl("/bin/sh", "sh", "-c", full, (char*)NULL); _exit(127); }
    return pid;
}

/* starts a run in dir, sends sig once its main.log has `lines` lines; returns the exit status (128+n if killed) */
static int run_and_signal(const char* dir, int lines, int sig, char* out, size_t outlen) {
    char cmd[2048], outp[600], logp[600];
    ops_cmd(cmd, sizeof(cmd), dir, "");
    snprintf(outp, sizeof(outp), "%s/%s.out", g_tmp, dir);
    snprintf(logp, sizeof(logp), "%s/%s/main.log", g_tmp, dir);
    pid_t pid = spawn(cmd, outp);
    int status = 0;
    for (int i = 0; i < 200000; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid) goto done;
        if (count_lines(logp) >= lines) break;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    kill(pid, sig);
    waitpid(pid, &status, 0);
done:;
    FILE* f = fopen(outp, "r");  /* the last outlen-1 bytes: the end of the run */
    if (f && fseek(f, 0, SEEK_END) == 0 && ftell(f) > (long)outlen - 1) fseek(f, -((long)outlen - 1), SEEK_END);
    else if (f) fseek(f, 0, SEEK_SET);
    size_t n = f ? fread(out, 1, outlen - 1, f) : 0;
    out[n] = '\0';
    if (f) fclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int last_train_step(const char* logpath) {
    FILE* f = fopen(logpath, "r");
    int last = -1, s;
    char line[512];
    while (f && fgets(line, sizeof(line), f)) if (sscanf(line, "s:%d trl:", &s) == 1) last = s;
    if (f) fclose(f);
    return last;
}

static void expect_same_run(const char* dir, const char* what) {
    char a[600], b[600];
    snprintf(a, sizeof(a), "%s/ops_ref/main.log", g_tmp);
    snprintf(b, sizeof(b), "%s/%s/main.log", g_tmp, dir);
    int logs = files_equal(a, b) && count_lines(a) > 1500;
    snprintf(a, sizeof(a), "%s/ops_ref/ckpt_00001500.bin", g_tmp);
    snprintf(b, sizeof(b), "%s/%s/ckpt_00001500.bin", g_tmp, dir);
    int ck = files_equal(a, b);
    report(logs && ck, "%s: main.log (%s) and the final checkpoint (%s) equal the uninterrupted run's", what,
           logs ? "same" : "DIFFERS", ck ? "bitwise" : "DIFFERS");
}

static void test_operations(void) {
    char cmd[4096], out[65536], path[600], path2[700];
    /* the reference: one uninterrupted run */
    ops_cmd(cmd, sizeof(cmd), "ops_ref", "");
    int rc = run_capture(cmd, out, sizeof(out));
    report(rc == 0, "uninterrupted reference run of 1500 steps, checkpoints every 100 (exit %d)", rc);
    if (rc != 0) { printf("%.2000s\n", out); return; }

    /* kill -9 in the middle, then a resume under a full disk (RLIMIT_FSIZE: the next checkpoint cannot be
       written), then a resume with space again */
    rc = run_and_signal("ops_kill", 450, SIGKILL, out, sizeof(out));
    snprintf(path, sizeof(path), "%s/ops_kill/main.log", g_tmp);
    int at_kill = last_train_step(path);
    report(rc == 128 + SIGKILL && at_kill > 0 && at_kill < 1500, "kill -9 at step %d (status %d)", at_kill, rc);
    snprintf(path2, sizeof(path2), "%s/ops_kill/ckpt_00000999.bin.tmp", g_tmp);
    FILE* f = fopen(path2, "w");
    if (f) { fputs("half a checkpoint", f); fclose(f); }
    ops_cmd(cmd, sizeof(cmd), "ops_kill", "-y 1");
    char limited[4300];
    snprintf(limited, sizeof(limited), "trap '' XFSZ; ulimit -f 100; %s", cmd);
    rc = run_capture(limited, out, sizeof(out));
    report(rc != 0 && rc < 128 && strstr(out, "disk full") != NULL && strstr(out, "ckpt_") != NULL,
           "full disk while writing a checkpoint: exit %d, message names the file and says disk full", rc);
    if (!(rc != 0 && strstr(out, "disk full"))) printf("    output was: %.800s\n", out + (strlen(out) > 800 ? strlen(out) - 800 : 0));
    report(access(path2, F_OK) != 0, "a stale ckpt_*.bin.tmp is removed when the run starts");
    int tmp_left = 0;
    DIR* d = opendir(path[0] ? (snprintf(path2, sizeof(path2), "%s/ops_kill", g_tmp), path2) : ".");
    struct dirent* e;
    while (d && (e = readdir(d)) != NULL) if (strstr(e->d_name, ".tmp")) tmp_left++;
    if (d) closedir(d);
    report(tmp_left == 0, "the failed checkpoint write leaves no .tmp file (%d)", tmp_left);
    rc = run_capture(cmd, out, sizeof(out));
    report(rc == 0 && strstr(out, "resumed from") != NULL, "resume after the kill and the full disk (exit %d)", rc);
    expect_same_run("ops_kill", "kill -9 + full disk + resume");

    /* SIGTERM: the step finishes, a checkpoint is written, exit 128 + 15 */
    rc = run_and_signal("ops_term", 700, SIGTERM, out, sizeof(out));
    snprintf(path, sizeof(path), "%s/ops_term/main.log", g_tmp);
    int at_term = last_train_step(path);
    snprintf(path2, sizeof(path2), "%s/ops_term/ckpt_%08d.bin", g_tmp, at_term);
    report(rc == 128 + SIGTERM && strstr(out, "stopped by SIGTERM") != NULL && access(path2, F_OK) == 0,
           "SIGTERM at step %d: exit %d, \"stopped by SIGTERM\", checkpoint of that step written", at_term, rc);
    ops_cmd(cmd, sizeof(cmd), "ops_term", "-y 1");
    rc = run_capture(cmd, out, sizeof(out));
    report(rc == 0, "resume after SIGTERM (exit %d)", rc);
    expect_same_run("ops_term", "SIGTERM + resume");

    /* a corrupt newest checkpoint: -y 1 names the previous good one, -y 2 takes it */
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/ops_bad && cp %s/ops_ref/ckpt_00001400.bin %s/ops_ref/ckpt_00001500.bin "
             "%s/ops_ref/main.log %s/ops_bad/", g_tmp, g_tmp, g_tmp, g_tmp, g_tmp);
    if (system(cmd) != 0) report(0, "copy checkpoints");
    snprintf(path, sizeof(path), "%s/ops_bad/ckpt_00001500.bin", g_tmp);
    f = fopen(path, "r+b");
    if (f) { fseek(f, 5000, SEEK_SET); int ch = fgetc(f); fseek(f, 5000, SEEK_SET); fputc(ch ^ 0x10, f); fclose(f); }
    snprintf(cmd, sizeof(cmd), "./export_mamba2 --verify %s/ops_bad/ckpt_00001400.bin %s", g_tmp, path);
    rc = run_capture(cmd, out, sizeof(out));
    report(rc == 1 && strstr(out, "OK ") && strstr(out, "CORRUPT") && strstr(out, "checksum mismatch"),
           "export_mamba2 --verify: the good one OK, the flipped bit CORRUPT (checksum mismatch), exit %d", rc);
    snprintf(cmd, sizeof(cmd), "./eval_mamba2 -e %s -i %s/val.bin -b 2 -t 16 -m 2", path, g_tmp);
    rc = run_capture(cmd, out, sizeof(out));
    report(rc != 0 && strstr(out, "checksum mismatch") != NULL, "eval of a checkpoint with a flipped bit: exit %d, "
           "checksum mismatch", rc);
    ops_cmd(cmd, sizeof(cmd), "ops_bad", "-y 1");
    rc = run_capture(cmd, out, sizeof(out));
    report(rc != 0 && strstr(out, "corrupt") && strstr(out, "ckpt_00001400.bin") && strstr(out, "-y 2"),
           "-y 1 with a corrupt newest checkpoint: exit %d, names the good ckpt_00001400.bin and -y 2", rc);
    ops_cmd(cmd, sizeof(cmd), "ops_bad", "-y 2");
    rc = run_capture(cmd, out, sizeof(out));
    snprintf(path2, sizeof(path2), "%s.corrupt", path);
    report(rc == 0 && access(path2, F_OK) == 0, "-y 2 resumes from step 1400, the corrupt file renamed .corrupt "
           "(exit %d)", rc);
    expect_same_run("ops_bad", "corrupt newest checkpoint + -y 2");

    /* a format version 1 checkpoint (no checksum) is still read, with a note */
    {
        snprintf(path, sizeof(path), "%s/ops_ref/ckpt_00001500.bin", g_tmp);
        snprintf(path2, sizeof(path2), "%s/v1.bin", g_tmp);
        snprintf(cmd, sizeof(cmd), "cp %s %s", path, path2);
        if (system(cmd) != 0) report(0, "copy");
        FILE* g = fopen(path2, "r+b");
        int32_t h[CKPT_HEADER_INTS];
        if (g && fread(h, 4, CKPT_HEADER_INTS, g) == CKPT_HEADER_INTS) {
            h[CKPT_H_VERSION] = 1; h[CKPT_H_SUM_LO] = 0; h[CKPT_H_SUM_HI] = 0;
            fseek(g, 0, SEEK_SET);
            fwrite(h, 4, CKPT_HEADER_INTS, g);
        }
        if (g) fclose(g);
        snprintf(cmd, sizeof(cmd), "./eval_mamba2 -e %s -i %s/val.bin -b 2 -t 16 -m 2", path2, g_tmp);
        rc = run_capture(cmd, out, sizeof(out));
        report(rc == 0 && strstr(out, "version 1") && strstr(out, "mean loss"),
               "a version-1 checkpoint (no checksum) loads, with a note (exit %d)", rc);
    }

    /* NaN weights: eval refuses, naming the tensor */
    {
        CheckpointInfo info;
        Mamba2 m;
        mamba2_load_checkpoint(&m, path, &info);
        m.params_memory[m.table[P_IN_PROJ_W].offset + 7] = NAN;
        snprintf(path2, sizeof(path2), "%s/nan.bin", g_tmp);
        mamba2_save_checkpoint(&m, path2, info.state);
        mamba2_free(&m);
        snprintf(cmd, sizeof(cmd), "./eval_mamba2 -e %s -i %s/val.bin -b 2 -t 16 -m 2", path2, g_tmp);
        rc = run_capture(cmd, out, sizeof(out));
        report(rc != 0 && strstr(out, "in_proj_w") && strstr(out, "NaN"), "eval of a model with a NaN weight: exit "
               "%d, names in_proj_w", rc);
    }

    /* a used -o: refused without -y; -w 1 deletes the old run; -N keeps the newest N */
    snprintf(cmd, sizeof(cmd), OPS_TRAIN " -i %s/train.bin -j none -k none -e " TINY_MODEL " -b 2 -t 16 -x 20 -n 5 "
             "-o %s/ops_ref", g_tmp, g_tmp);
    rc = run_capture(cmd, out, sizeof(out));
    report(rc != 0 && strstr(out, "already holds a run") && strstr(out, "-w 1"), "a used -o without -y is refused "
           "(exit %d)", rc);
    snprintf(path, sizeof(path), "%s/ops_ref/main.log", g_tmp);
    report(count_lines(path) > 1500, "... and its main.log is untouched");
    snprintf(cmd, sizeof(cmd), OPS_TRAIN " -i %s/train.bin -j none -k none -e " TINY_MODEL " -b 2 -t 16 -x 20 -n 5 "
             "-N 2 -w 1 -o %s/ops_ref", g_tmp, g_tmp);
    rc = run_capture(cmd, out, sizeof(out));
    int steps[64];
    snprintf(path2, sizeof(path2), "%s/ops_ref", g_tmp);
    int n = list_checkpoints(path2, steps, 64);
    report(rc == 0 && n == 2 && steps[0] == 20 && steps[1] == 15 && count_lines(path) == 20,
           "-w 1 deletes the old run, -N 2 keeps the newest 2 checkpoints (%d left, newest %d), log of 20 lines", n,
           n > 0 ? steps[0] : -1);
}

/* the trainer's -D and -M (doc/packing.md): the default untouched, the flags' errors, a run with both */
static void write_mask_file(const char* shard_path, int n, int every) {
    char path[600];
    snprintf(path, sizeof(path), "%s.mask", shard_path);
    FILE* f = fopenCheck(path, "wb");
    int32_t header[256] = {0};
    header[0] = DATALOADER_MASK_MAGIC; header[1] = 1; header[2] = n;
    fwriteCheck(header, sizeof(header), 1, f);
    for (int i = 0; i < n; i++) fputc(every > 0 && i % every == 0 ? 0 : 1, f); /* every = 0: all counted */
    fcloseCheck(f);
}

static void test_trainer_docs(void) {
    char cmd[2048], out[65536], a[600], b[600 + 8]; /* b: a with a suffix */
    const char* common = "-k none -e " TINY_MODEL " -b 2 -t 16 -x 4 -v 2 -m 2 -s 0 -l 3e-3 -u 1 -S 42 -n 4";
    /* the same shards under another name, with masks of all ones (train) and one in 5 masked (val) */
    snprintf(cmd, sizeof(cmd), "cp %s/train.bin %s/dtrain.bin && cp %s/val.bin %s/dval.bin", g_tmp, g_tmp, g_tmp,
             g_tmp);
    if (system(cmd) != 0) { report(0, "copy shards"); return; }
    snprintf(a, sizeof(a), "%s/dtrain.bin", g_tmp);
    FILE* f = fopenCheck(a, "rb");
    int32_t header[256];
    freadCheck(header, sizeof(header), 1, f);
    fcloseCheck(f);
    int ntrain = header[2];
    write_mask_file(a, ntrain, 0);
    snprintf(a, sizeof(a), "%s/dval.bin", g_tmp);
    write_mask_file(a, 3000, 0);
    const char* runs[][2] = {
        {"plain", ""},
        {"m_ones", "-M 1"},             /* every target counted: the default arithmetic */
        {"d_absent", "-D 7"},           /* a separator the data never holds: one document per row */
        {"d_space", "-D 32"},           /* boundaries at every space */
    };
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        snprintf(cmd, sizeof(cmd), "./train_mamba2 -i %s/dtrain.bin -j %s/dval.bin -o %s/docs_%s %s %s", g_tmp, g_tmp,
                 g_tmp, runs[i][0], common, runs[i][1]);
        int rc = run_capture(cmd, out, sizeof(out));
        report(rc == 0, "trainer %s runs (exit %d)", runs[i][1][0] ? runs[i][1] : "without -D / -M", rc);
        if (rc != 0) printf("%.2000s\n", out);
    }
    const char* same[] = {"m_ones", "d_absent"};
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof(a), "%s/docs_plain/ckpt_00000004.bin", g_tmp);
        snprintf(b, sizeof(b), "%s/docs_%s/ckpt_00000004.bin", g_tmp, same[i]);
        int ck = files_equal(a, b);
        snprintf(a, sizeof(a), "%s/docs_plain/main.log", g_tmp);
        snprintf(b, sizeof(b), "%s/docs_%s/main.log", g_tmp, same[i]);
        report(ck && files_equal(a, b), "trainer %s: checkpoint and main.log bitwise those of the default run",
               i == 0 ? "-M 1 with masks of all ones" : "-D with a separator absent from the data");
    }
    snprintf(a, sizeof(a), "%s/docs_plain/main.log", g_tmp);
    snprintf(b, sizeof(b), "%s/docs_d_space/main.log", g_tmp);
    report(!files_equal(a, b), "trainer -D 32 (a boundary at every space) trains another model than the default");
    /* masked val targets: the val loss is the mean over the counted ones, and differs from the unmasked one */
    snprintf(a, sizeof(a), "%s/dval.bin", g_tmp);
    write_mask_file(a, 3000, 5);
    snprintf(cmd, sizeof(cmd), "./train_mamba2 -i %s/dtrain.bin -j %s/dval.bin -o %s/docs_mval %s -M 1 -D 32", g_tmp,
             g_tmp, g_tmp, common);
    int rc = run_capture(cmd, out, sizeof(out));
    report(rc == 0 && strstr(out, "masked targets") && strstr(out, "document boundaries: a new document at each token 32"),
           "trainer -M 1 -D 32 with masked val targets runs and says so (exit %d)", rc);
    /* masked targets with gradient accumulation: the step's loss and gradient are those of the mean over all its
       counted targets, so 2 micro-batches of B=2 give what one of B=4 over the same 4 rows gives (a 65-token shard:
       one sample of 4x16, two of 2x16). Blocks of 12 masked tokens make the two halves count differently (13 vs 23
       of 32), so a mean of the micro-batch means would differ */
    snprintf(a, sizeof(a), "%s/one.bin", g_tmp);
    {
        uint16_t tok[65];
        FILE* tf = fopenCheck(a, "wb");
        int32_t h[256] = {0};
        h[0] = 20240520; h[1] = 1; h[2] = 65;
        for (int i = 0; i < 65; i++) tok[i] = (uint16_t)('a' + (i * 7) % 26);
        fwriteCheck(h, sizeof(h), 1, tf);
        fwriteCheck(tok, sizeof(tok), 1, tf);
        fcloseCheck(tf);
        snprintf(b, sizeof(b), "%s.mask", a);
        FILE* mf = fopenCheck(b, "wb");
        h[0] = DATALOADER_MASK_MAGIC; h[1] = 1; h[2] = 65;
        fwriteCheck(h, sizeof(h), 1, mf);
        for (int i = 0; i < 65; i++) fputc(i < 20 && i % 20 >= 1 && i % 20 <= 12 ? 0 : (i >= 40 && i < 47 ? 0 : 1), mf);
        fcloseCheck(mf);
    }
    float lossv[2] = {0, 0}, normv[2] = {0, 0};
    const char* shapes[2] = {"-b 4", "-b 2 -d 64"};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof(cmd), "./train_mamba2 -i %s -j none -k none -e " TINY_MODEL " -t 16 -x 1 -s 0 -S 3 -M 1 "
                 "-o %s/acc_%d %s", a, g_tmp, i, shapes[i]);
        rc = run_capture(cmd, out, sizeof(out));
        snprintf(b, sizeof(b), "%s/acc_%d/main.log", g_tmp, i);
        FILE* lf = fopen(b, "r");
        char line[256];
        float lr;
        while (lf && fgets(line, sizeof(line), lf))
            sscanf(line, "s:1 trl:%f lr:%e norm:%f", &lossv[i], &lr, &normv[i]);
        if (lf) fclose(lf);
    }
    report(lossv[0] > 0 && fabsf(lossv[0] - lossv[1]) <= 2e-6f * lossv[0] && fabsf(normv[0] - normv[1]) <= 1e-5f * normv[0],
           "trainer -M 1: 2 micro-batches of B=2 == 1 of B=4 (loss %.6f / %.6f, norm %.6f / %.6f)", lossv[0], lossv[1],
           normv[0], normv[1]);
    /* eval_mamba2 -M 1 -D 32 on the step-4 checkpoint == the trainer's step-4 validation with the same flags */
    {
        snprintf(b, sizeof(b), "%s/docs_mval/main.log", g_tmp);
        float tel = -1, v;
        int st;
        char line[256];
        FILE* lf = fopen(b, "r");
        while (lf && fgets(line, sizeof(line), lf)) if (sscanf(line, "s:%d tel:%f", &st, &v) == 2 && st == 4) tel = v;
        if (lf) fclose(lf);
        snprintf(cmd, sizeof(cmd), "./eval_mamba2 -e %s/docs_mval/ckpt_00000004.bin -i %s/dval.bin -k none -b 2 -t 16 "
                 "-m 2 -M 1 -D 32", g_tmp, g_tmp);
        rc = run_capture(cmd, out, sizeof(out));
        const char* m = strstr(out, "mean loss ");
        float ev = m ? strtof(m + 10, NULL) : -2;
        char want[32];
        snprintf(want, sizeof(want), "%.6f", tel);
        report(rc == 0 && m && strncmp(m + 10, want, strlen(want)) == 0 && strstr(out, "counted targets"),
               "eval_mamba2 -M 1 -D 32 == the trainer's validation with -M 1 -D 32 (%.6f / %.6f)", ev, tel);
        snprintf(cmd, sizeof(cmd), "./eval_mamba2 -e %s/docs_mval/ckpt_00000004.bin -i %s/dval.bin -k none -b 2 -t 16 "
                 "-m 2", g_tmp, g_tmp);
        rc = run_capture(cmd, out, sizeof(out));
        m = strstr(out, "mean loss ");
        report(rc == 0 && m && fabsf(strtof(m + 10, NULL) - tel) > 1e-3f,
               "eval_mamba2 without -M / -D gives another loss (%.6f)", m ? strtof(m + 10, NULL) : -1.0f);
    }
    /* generate_mamba2 -D 32: a prompt of several documents continues its last one as if it were alone (greedy) */
    {
        const char* prompt = "the state space model scans a chunk";
        const char* last = prompt + 29; /* " chunk", the last document: a separator opens it */
        char ids_all[512] = "", ids_last[512] = "", outs[3][4096];
        for (const char* p = prompt; *p; p++)
            snprintf(ids_all + strlen(ids_all), sizeof(ids_all) - strlen(ids_all), "%s%d", p == prompt ? "" : ",", *p);
        for (const char* p = last; *p; p++)
            snprintf(ids_last + strlen(ids_last), sizeof(ids_last) - strlen(ids_last), "%s%d", p == last ? "" : ",", *p);
        const char* variants[3][2] = {{ids_all, "-D 32"}, {ids_last, "-D 32"}, {ids_all, ""}};
        for (int i = 0; i < 3; i++) {
            snprintf(cmd, sizeof(cmd), "./generate_mamba2 -e %s/docs_d_space/ckpt_00000004.bin -q -t 0 -n 24 -I %s %s",
                     g_tmp, variants[i][0], variants[i][1]);
            rc = run_capture(cmd, outs[i], sizeof(outs[i]));
            if (rc != 0) printf("    %s: exit %d: %.300s\n", cmd, rc, outs[i]);
        }
        /* each output is the prompt, then the continuation */
        const char* g0 = strncmp(outs[0], prompt, strlen(prompt)) == 0 ? outs[0] + strlen(prompt) : NULL;
        const char* g1 = strncmp(outs[1], last, strlen(last)) == 0 ? outs[1] + strlen(last) : NULL;
        const char* g2 = strncmp(outs[2], prompt, strlen(prompt)) == 0 ? outs[2] + strlen(prompt) : NULL;
        report(g0 && g1 && strlen(g0) > 1 && strcmp(g0, g1) == 0,
               "generate_mamba2 -D 32: the prompt's last document continues as if alone (%zu bytes, identical)",
               g0 ? strlen(g0) : 0);
        report(g0 && g2 && strcmp(g0, g2) != 0, "generate_mamba2 without -D continues differently");
        snprintf(cmd, sizeof(cmd), "./generate_mamba2 -e %s/docs_d_space/ckpt_00000004.bin -q -I 1,2 -D x", g_tmp);
        rc = run_capture(cmd, outs[0], sizeof(outs[0]));
        report(rc != 0 && strstr(outs[0], "-D x: expected none, eot"), "generate_mamba2 -D x is refused (exit %d)", rc);
    }
    /* the flags' errors */
    struct { const char* flags; const char* needle; } cases[] = {
        {"-D foo", "-D foo: expected none, eot"}, {"-D eot", "no tokenizer file"}, {"-D 300", "outside the vocabulary"},
        {"-M 2", "-M 2"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(cmd, sizeof(cmd), "-i %s/dtrain.bin -j none -k none -x 1 %s", g_tmp, cases[i].flags);
        char what[128];
        snprintf(what, sizeof(what), "flag %s", cases[i].flags);
        expect_failure(what, cmd, cases[i].needle);
    }
    snprintf(cmd, sizeof(cmd), "-i %s/train.bin -j none -k none -x 1 -M 1", g_tmp);
    expect_failure("-M 1 on a shard without a .mask file", cmd, "no mask file");
}

static void test_flags(void) {
    char args[2048];
    struct { const char* flags; const char* needle; } cases[] = {
        {"-l nan", "-l nan"}, {"-l -1", "-l -1"}, {"-l 0", "must be > 0"}, {"-u 50 -x 10", "-u 50"},
        {"-q 5", "-q 5"}, {"-m 0", "-m 0"}, {"-t 2147483647", "-t 2147483647"}, {"-b 3x", "-b 3x"},
        {"-x 0", "-x 0"}, {"-y 3", "-y 3"}, {"-S -4", "-S -4"}, {"-b 65536 -t 65536", "2^28"},
        {"-N 2", "-N"}, {"-K 8", "-K 8"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(args, sizeof(args), "-i %s/train.bin -j none -k none %s", g_tmp, cases[i].flags);
        char what[128];
        snprintf(what, sizeof(what), "flag %s", cases[i].flags);
        expect_failure(what, args, cases[i].needle);
    }
    snprintf(args, sizeof(args), "-i %s/train.bin -j none -k none -e d_model=16384,n_layer=64 -x 1", g_tmp);
    expect_failure("a model larger than this machine's RAM is refused before allocating", args, "GiB of CPU memory");
    snprintf(args, sizeof(args), "-i %s/train.bin -j none -k none -e d_model=65536,expand=65536 -x 1", g_tmp);
    expect_failure("d_model = expand = 65536 (E would wrap to 0)", args, "expand = 65536, at most 16");
    snprintf(args, sizeof(args), "-i %s -j none -k none -x 1", g_tmp);
    expect_failure("a folder given as the train shards names it", args, "not a regular file");
}
#endif

/* ================================================================================================================
 * 5. packed documents == the documents run one by one (both builds; doc/packing.md)
 * ================================================================================================================ */

/*
 * Two rows of T = 24 packed with documents of the lengths below, against each document run alone (B = 1, T = its
 * length, zero initial state). The loss of both is the mean over the counted targets of all documents, so each
 * document's backward uses dloss = 1/(counted targets of the whole batch). With the chunk length 4, "aligned" puts
 * every document start at a chunk start: then each position's forward arithmetic is the same in both runs, and the
 * per-position probabilities and the loss are bitwise equal; unaligned, a document's positions fall in other chunks
 * (state passing instead of intra-chunk sums), equal to rounding. Parameter gradients are sums over positions grouped
 * differently in the two runs: equal to rounding (some tensors bitwise).
 */
#define PACKED_TEST_SPEC "d_model=16,n_layer=2,d_state=8,headdim=8,ngroups=2,vocab=20,chunk=4"
static void test_packed_vs_separate_spec(const char* spec, const char* label, int aligned, int masked, double tol,
                                         Rng* rng) {
    Mamba2Config cfg;
    char err[256];
    if (config_parse(&cfg, spec, err, sizeof(err))) die("%s", err);
    Mamba2 m;
    mamba2_build(&m, &cfg, 5);
    for (size_t i = 0; i < m.num_parameters; i++) m.params_memory[i] += (real)rng_uniform_range(rng, -0.2, 0.2);
    enum { B = 2, T = 24 };
    static const int len_aligned[2][4] = {{8, 4, 12, 0}, {4, 20, 0, 0}};
    static const int len_unaligned[2][4] = {{5, 9, 3, 7}, {11, 13, 0, 0}};
    const int(*lens)[4] = aligned ? len_aligned : len_unaligned;
    int inputs[B * T], targets[B * T], seq[B * T];
    for (int i = 0; i < B * T; i++) {
        inputs[i] = (int)(rng_u64(rng) % 20);
        targets[i] = (int)(rng_u64(rng) % 20);
        if (masked && rng_u64(rng) % 3 == 0) targets[i] = TARGET_NO_LOSS;
    }
    for (int b = 0; b < B; b++)
        for (int d = 0, t = 0; d < 4 && lens[b][d] > 0; t += lens[b][d], d++)
            for (int k = 0; k < lens[b][d]; k++) seq[b * T + t + k] = d;
    size_t Vp = (size_t)cfg.padded_vocab_size;
    /* packed */
    mamba2_zero_grad(&m);
    real loss_packed = mamba2_forward_docs(&m, inputs, targets, seq, B, T);
    size_t count = m.num_counted;
    mamba2_backward(&m, inputs, targets, (real)1 / (real)count);
    real* probs_packed = alloc_real((size_t)B * T * Vp);
    memcpy(probs_packed, m.acts.probs, sizeof(real) * B * T * Vp);
    real* grads_packed = alloc_real(m.num_parameters);
    memcpy(grads_packed, m.grads_memory, sizeof(real) * m.num_parameters);
    /* separate: the same sum over positions, in the same order */
    mamba2_zero_grad(&m);
    real* probs_sep = alloc_real((size_t)B * T * Vp);
    double sum = 0;
    size_t count_sep = 0;
    for (int b = 0; b < B; b++) {
        for (int d = 0, t = 0; d < 4 && lens[b][d] > 0; t += lens[b][d], d++) {
            int n = lens[b][d];
            const int* in = inputs + b * T + t;
            const int* tg = targets + b * T + t;
            mamba2_forward(&m, in, tg, 1, n);
            for (int k = 0; k < n; k++) if (tg[k] != TARGET_NO_LOSS) { sum += m.acts.losses[k]; count_sep++; }
            memcpy(probs_sep + (size_t)(b * T + t) * Vp, m.acts.probs, sizeof(real) * n * Vp);
            mamba2_backward(&m, in, tg, (real)1 / (real)count);
        }
    }
    real loss_sep = (real)(sum / count_sep);
    char name[128];
    char what[96];
    snprintf(what, sizeof(what), "%s%s", label,
             aligned ? (masked ? "aligned, masked" : "aligned") : (masked ? "unaligned, masked" : "unaligned"));
    snprintf(name, sizeof(name), "packed == separate (%s) loss", what);
    compare(name, &loss_packed, &loss_sep, 1, tol);
    snprintf(name, sizeof(name), "packed == separate (%s) probs", what);
    compare(name, probs_packed, probs_sep, (size_t)B * T * Vp, tol);
    int bitwise = 0, tensors = 0;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        size_t off = m.table[t].offset, n = m.table[t].numel;
        if (n == 0) continue; /* a tensor this model does not have */
        tensors++;
        snprintf(name, sizeof(name), "packed == separate (%s) d %s", what, m.table[t].name);
        compare(name, grads_packed + off, m.grads_memory + off, n, tol);
        bitwise += memcmp(grads_packed + off, m.grads_memory + off, sizeof(real) * n) == 0;
    }
    int probs_bitwise = memcmp(probs_packed, probs_sep, sizeof(real) * B * T * Vp) == 0;
    printf("       (%s: loss %s, probs %s, %d of %d gradient tensors bitwise; %zu of %d targets counted)\n", what,
           loss_packed == loss_sep ? "bitwise" : "not bitwise", probs_bitwise ? "bitwise" : "not bitwise", bitwise,
           tensors, count, B * T);
    if (aligned) report(probs_bitwise && loss_packed == loss_sep, "packed == separate (%s): loss and probs bitwise", what);
    /* the loss is the mean over the counted targets: recomputed by hand from the unmasked run's per-position losses */
    if (masked) {
        int all[B * T];
        for (int i = 0; i < B * T; i++) all[i] = targets[i] == TARGET_NO_LOSS ? 0 : targets[i];
        mamba2_forward_docs(&m, inputs, all, seq, B, T);
        double s = 0;
        for (int i = 0; i < B * T; i++) if (targets[i] != TARGET_NO_LOSS) s += m.acts.losses[i];
        real by_hand = (real)(s / count);
        report(by_hand == loss_packed, "masked loss == mean over the counted targets, bitwise (%.9g, %zu of %d)",
               (double)loss_packed, count, B * T);
    }
    /* the test can fail: without the reset (no seq_idx) the same packed rows differ from the separate documents */
    if (!masked) {
        mamba2_forward_docs(&m, inputs, targets, NULL, B, T);
        double maxd = 0, maxr = 0;
        for (size_t i = 0; i < (size_t)B * T * Vp; i++) {
            double dd = fabs((double)m.acts.probs[i] - (double)probs_sep[i]);
            if (dd > maxd) maxd = dd;
            if (fabs((double)probs_sep[i]) > maxr) maxr = fabs((double)probs_sep[i]);
        }
        report(maxd / maxr > 1e-3, "without the reset (%s) packed != separate: probs rel %.3e (must be > 1e-3)", what,
               maxd / maxr);
    }
    free(probs_packed); free(probs_sep); free(grads_packed);
    mamba2_free(&m);
}

static void test_packed_vs_separate(int aligned, int masked, double tol, Rng* rng) {
    test_packed_vs_separate_spec(PACKED_TEST_SPEC, "", aligned, masked, tol, rng);
}

/* the default path is untouched: one document per row given explicitly (all zeros) == no seq_idx, to the bit */
static void test_single_document_bitwise(Rng* rng) {
    Mamba2Config cfg;
    char err[256];
    if (config_parse(&cfg, "d_model=16,n_layer=2,d_state=8,headdim=8,ngroups=2,vocab=20,chunk=4", err, sizeof(err)))
        die("%s", err);
    Mamba2 m;
    mamba2_build(&m, &cfg, 9);
    enum { B = 2, T = 19 };
    int inputs[B * T], targets[B * T], seq[B * T];
    for (int i = 0; i < B * T; i++) { inputs[i] = (int)(rng_u64(rng) % 20); targets[i] = (int)(rng_u64(rng) % 20); }
    for (int i = 0; i < B * T; i++) seq[i] = 0;
    mamba2_zero_grad(&m);
    real l0 = mamba2_forward(&m, inputs, targets, B, T);
    mamba2_backward(&m, inputs, targets, (real)1 / (B * T));
    real* g0 = alloc_real(m.num_parameters);
    memcpy(g0, m.grads_memory, sizeof(real) * m.num_parameters);
    mamba2_zero_grad(&m);
    real l1 = mamba2_forward_docs(&m, inputs, targets, seq, B, T);
    mamba2_backward(&m, inputs, targets, (real)1 / (B * T));
    report(l0 == l1 && memcmp(g0, m.grads_memory, sizeof(real) * m.num_parameters) == 0,
           "one document per row via seq_idx == no seq_idx: loss and every gradient bitwise");
    free(g0);
    mamba2_free(&m);
}

/* ================================================================================================================
 * carried state (-C 1, doc/packing.md section 6): batches of T with the state carried == one batch of the rows joined
 * ================================================================================================================ */

#define CARRY_SEP 3 /* the separator id of the -D cases */

/* joined rows (B, n*T) -> batch k (B, T) */
static void carry_slice(int* out, const int* joined, int B, int T, int n, int k) {
    for (int b = 0; b < B; b++) memcpy(out + b * T, joined + ((size_t)b * n + k) * T, sizeof(int) * T);
}

/*
 * n batches of T per row with carried state against one forward of n*T per row: every position's loss and
 * probabilities, and the carried SSM state and conv window left at the end (the joined run's own final ones, taken
 * with mamba2_forward_carry on fresh rows). docs: -D with separator CARRY_SEP, placed at the start of batch 1 in row 1
 * (a boundary exactly at the batch edge), inside the last conv window of batch 0 in row 0 (the window holds two
 * documents) and at random. Negative control: the batches run without carried state must differ from the joined run.
 */
static void test_carry_matches_joined(int T, int n, int docs, double tol, Rng* rng) {
    Mamba2Config cfg = small_test_config();
    Mamba2 m;
    mamba2_build(&m, &cfg, 11);
    perturb_parameters(&m, rng);
    enum { B = 2 };
    int NT = n * T, K1 = cfg.d_conv - 1;
    size_t Vp = (size_t)cfg.padded_vocab_size;
    int* in = (int*)mallocCheck(sizeof(int) * B * NT);
    int* tg = (int*)mallocCheck(sizeof(int) * B * NT);
    int* seq = (int*)mallocCheck(sizeof(int) * B * NT);
    for (int i = 0; i < B * NT; i++) {
        in[i] = 4 + (int)(rng_u64(rng) % 16);
        tg[i] = (int)(rng_u64(rng) % 20);
        if (docs && rng_u64(rng) % 9 == 0) in[i] = CARRY_SEP;
    }
    if (docs) {
        in[1 * NT + T] = CARRY_SEP;  /* row 1: a document opens exactly at the edge of batches 0 and 1 */
        if (T >= 2) in[0 * NT + T - 2] = CARRY_SEP; /* row 0: one inside the window batch 0 leaves */
        in[0 * NT + T] = 5;          /* row 0 continues across the edge */
    }
    int sep = docs ? CARRY_SEP : DOC_SEP_NONE;
    /* the joined run, and its final carried state */
    int all_fresh[B] = {1, 1};
    if (docs) dataloader_doc_index(seq, in, B, (size_t)NT, sep);
    mamba2_carry_allocate(&m, B);
    mamba2_forward_carry(&m, in, tg, docs ? seq : NULL, all_fresh, B, NT);
    real* loss_ref = alloc_real((size_t)B * NT);
    real* probs_ref = alloc_real((size_t)B * NT * Vp);
    memcpy(loss_ref, m.acts.losses, sizeof(real) * B * NT);
    memcpy(probs_ref, m.acts.probs, sizeof(real) * B * NT * Vp);
    size_t ns = carry_ssm_floats(&cfg, B), nw = carry_window_floats(&cfg, B);
    real* ssm_ref = alloc_real(ns);
    real* win_ref = alloc_real(nw + 1);
    memcpy(ssm_ref, m.carry_ssm, sizeof(real) * ns);
    memcpy(win_ref, m.carry_window, sizeof(real) * nw);
    /* n batches of T, the state carried (fresh only for the first), and the same batches without */
    real* loss_c = alloc_real((size_t)B * NT);
    real* probs_c = alloc_real((size_t)B * NT * Vp);
    real* loss_nc = alloc_real((size_t)B * NT);
    int* bin = (int*)mallocCheck(sizeof(int) * B * T);
    int* btg = (int*)mallocCheck(sizeof(int) * B * T);
    int* bseq = (int*)mallocCheck(sizeof(int) * B * T);
    int fresh[B], no_reset[B] = {0, 0};
    int edge_fresh_ok = 1;
    mamba2_carry_allocate(&m, B);
    for (int k = 0; k < n; k++) {
        carry_slice(bin, in, B, T, n, k);
        carry_slice(btg, tg, B, T, n, k);
        if (docs) dataloader_doc_index(bseq, bin, B, (size_t)T, sep);
        dataloader_fresh_rows(fresh, k == 0 ? all_fresh : no_reset, bin, B, (size_t)T, sep);
        if (docs && k == 1) edge_fresh_ok = fresh[0] == 0 && fresh[1] == 1;
        mamba2_forward_carry(&m, bin, btg, docs ? bseq : NULL, fresh, B, T);
        for (int b = 0; b < B; b++) {
            memcpy(loss_c + (size_t)b * NT + k * T, m.acts.losses + (size_t)b * T, sizeof(real) * T);
            memcpy(probs_c + ((size_t)b * NT + k * T) * Vp, m.acts.probs + (size_t)b * T * Vp, sizeof(real) * T * Vp);
        }
    }
    real* ssm_c = alloc_real(ns);
    real* win_c = alloc_real(nw + 1);
    memcpy(ssm_c, m.carry_ssm, sizeof(real) * ns);
    memcpy(win_c, m.carry_window, sizeof(real) * nw);
    for (int k = 0; k < n; k++) {
        carry_slice(bin, in, B, T, n, k);
        carry_slice(btg, tg, B, T, n, k);
        if (docs) dataloader_doc_index(bseq, bin, B, (size_t)T, sep);
        mamba2_forward_docs(&m, bin, btg, docs ? bseq : NULL, B, T);
        for (int b = 0; b < B; b++)
            memcpy(loss_nc + (size_t)b * NT + k * T, m.acts.losses + (size_t)b * T, sizeof(real) * T);
    }
    char what[96], name[160];
    snprintf(what, sizeof(what), "%d batches of T=%d == one of %d%s", n, T, NT, docs ? ", -D (edge, window)" : "");
    if (docs) report(edge_fresh_ok, "carried (%s): a row whose batch opens with the separator starts fresh, the other "
                     "continues", what);
    snprintf(name, sizeof(name), "carried (%s) per-position losses", what);
    compare(name, loss_c, loss_ref, (size_t)B * NT, tol);
    snprintf(name, sizeof(name), "carried (%s) probs", what);
    compare(name, probs_c, probs_ref, (size_t)B * NT * Vp, tol);
    snprintf(name, sizeof(name), "carried (%s) final SSM states", what);
    compare(name, ssm_c, ssm_ref, ns, tol);
    snprintf(name, sizeof(name), "carried (%s) final conv windows", what);
    compare(name, win_c, win_ref, nw, tol);
    int bitwise = memcmp(loss_c, loss_ref, sizeof(real) * B * NT) == 0 && memcmp(ssm_c, ssm_ref, sizeof(real) * ns) == 0
                  && memcmp(win_c, win_ref, sizeof(real) * nw) == 0;
    /* T a multiple of the chunk: the chunks are the joined run's, the arithmetic the same: bitwise */
    if (T % cfg.chunk_size == 0)
        report(bitwise, "carried (%s): losses and final states bitwise (T a multiple of the chunk)", what);
    else
        printf("       (carried, %s: %s)\n", what, bitwise ? "bitwise" : "not bitwise (other chunks)");
    /* negative control: without the carried state, the batches after the first differ from the joined run */
    double maxd = 0;
    for (int b = 0; b < B; b++)
        for (int t = T; t < NT; t++) {
            double d = fabs((double)loss_nc[(size_t)b * NT + t] - (double)loss_ref[(size_t)b * NT + t]);
            if (d > maxd) maxd = d;
        }
    report(maxd > 1e-3, "carried (%s): without carrying, later batches' losses differ by %.3e (must be > 1e-3)", what,
           maxd);
    (void)K1;
    free(in); free(tg); free(seq); free(loss_ref); free(probs_ref); free(ssm_ref); free(win_ref); free(loss_c);
    free(probs_c); free(loss_nc); free(bin); free(btg); free(bseq); free(ssm_c); free(win_c);
    mamba2_free(&m);
}

#ifdef MAMBA2_DOUBLE
/* the second batch's loss as a function of the parameters, with the carried state the first batch left held
   constant: restored before every forward */
typedef struct {
    Mamba2* m; int *inputs, *targets, *seq, *fresh; int B, T; real *ssm, *win; size_t ns, nw;
} CarryCtx;
static double carry_loss(void* p) {
    CarryCtx* c = (CarryCtx*)p;
    memcpy(c->m->carry_ssm, c->ssm, sizeof(real) * c->ns);
    memcpy(c->m->carry_window, c->win, sizeof(real) * c->nw);
    return mamba2_forward_carry(c->m, c->inputs, c->targets, c->seq, c->fresh, c->B, c->T);
}

/* finite differences of batch 2's loss, every parameter tensor, the carried state a constant (no gradient reaches
   batch 1); with -D a boundary at the batch edge in row 1 and a continuing document in row 0 */
static void test_carry_gradients(int docs, Rng* rng) {
    Mamba2Config cfg = small_test_config();
    Mamba2 m;
    mamba2_build(&m, &cfg, 13);
    perturb_parameters(&m, rng);
    enum { B = 2, T = 7 };
    int in1[B * T], in2[B * T], tg[B * T], seq[B * T], fresh[B], first[B] = {1, 1}, none[B] = {0, 0};
    for (int i = 0; i < B * T; i++) {
        in1[i] = 4 + (int)(rng_u64(rng) % 16);
        in2[i] = 4 + (int)(rng_u64(rng) % 16);
        tg[i] = (int)(rng_u64(rng) % 20);
    }
    int sep = docs ? CARRY_SEP : DOC_SEP_NONE;
    if (docs) { in2[1 * T] = CARRY_SEP; in2[0 * T + 4] = CARRY_SEP; in1[0 * T + 5] = CARRY_SEP; }
    mamba2_carry_allocate(&m, B);
    if (docs) dataloader_doc_index(seq, in1, B, T, sep);
    dataloader_fresh_rows(fresh, first, in1, B, T, sep);
    mamba2_forward_carry(&m, in1, tg, docs ? seq : NULL, fresh, B, T);
    size_t ns = carry_ssm_floats(&cfg, B), nw = carry_window_floats(&cfg, B);
    real* ssm = alloc_real(ns);
    real* win = alloc_real(nw + 1);
    memcpy(ssm, m.carry_ssm, sizeof(real) * ns);
    memcpy(win, m.carry_window, sizeof(real) * nw);
    if (docs) dataloader_doc_index(seq, in2, B, T, sep);
    dataloader_fresh_rows(fresh, none, in2, B, T, sep);
    CarryCtx ctx = {&m, in2, tg, docs ? seq : NULL, fresh, B, T, ssm, win, ns, nw};
    mamba2_zero_grad(&m);
    carry_loss(&ctx);
    mamba2_backward(&m, in2, tg, (real)1 / (B * T));
    fd_check_params(docs ? "fd carried batch 2, -D" : "fd carried batch 2", carry_loss, &ctx, &m, rng);
    free(ssm); free(win);
    mamba2_free(&m);
}
#else
/* the trainer with -C 1: resume bitwise (log and checkpoint, companion read), and the option's errors */
static void test_trainer_carry(void) {
    char cmd[2048], out[65536], a[512], b[512];
    const char* common = "-b 2 -t 16 -x 6 -v 3 -m 2 -s 0 -l 3e-3 -u 2 -S 42 -C 1";
    snprintf(cmd, sizeof(cmd), "./train_mamba2 -i %s/train.bin -j %s/val.bin -k none -e " TINY_MODEL
             " -o %s/carry_full -n 3 %s", g_tmp, g_tmp, g_tmp, common);
    int rc = run_capture(cmd, out, sizeof(out));
    snprintf(a, sizeof(a), "%s/carry_full/ckpt_00000003.bin.carry", g_tmp);
    report(rc == 0 && is_file(a), "-C 1: the trainer runs 6 steps and writes the carried state beside the checkpoints "
           "(exit %d)", rc);
    if (rc != 0) { printf("%s\n", out); return; }
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/carry_resume && cp %s/carry_full/ckpt_00000003.bin* %s/carry_resume/",
             g_tmp, g_tmp, g_tmp);
    if (system(cmd) != 0) { report(0, "copy checkpoint"); return; }
    snprintf(cmd, sizeof(cmd), "./train_mamba2 -i %s/train.bin -j %s/val.bin -k none -e " TINY_MODEL
             " -o %s/carry_resume -n 3 -y 1 %s", g_tmp, g_tmp, g_tmp, common);
    rc = run_capture(cmd, out, sizeof(out));
    report(rc == 0 && strstr(out, "carried state of 2 streams") != NULL,
           "-C 1: resumes from step 3 with its carried state (exit %d)", rc);
    snprintf(a, sizeof(a), "%s/carry_full/ckpt_00000006.bin", g_tmp);
    snprintf(b, sizeof(b), "%s/carry_resume/ckpt_00000006.bin", g_tmp);
    report(files_equal(a, b), "-C 1 resume: step-6 checkpoints bitwise identical");
    snprintf(a, sizeof(a), "%s/carry_full/ckpt_00000006.bin.carry", g_tmp);
    snprintf(b, sizeof(b), "%s/carry_resume/ckpt_00000006.bin.carry", g_tmp);
    report(files_equal(a, b), "-C 1 resume: step-6 carried states bitwise identical");
    snprintf(a, sizeof(a), "%s/carry_full/main.log", g_tmp);
    snprintf(b, sizeof(b), "%s/carry_resume/main.log", g_tmp);
    char la[4096], lb[4096];
    log_lines_after(a, 3, la, sizeof(la));
    log_lines_after(b, 3, lb, sizeof(lb));
    report(strlen(la) > 0 && strcmp(la, lb) == 0, "-C 1 resume: the logged losses of steps 4-6 identical");
    /* the negative control at this level: resuming with the carried state zeroed gives other losses */
    snprintf(cmd, sizeof(cmd), "rm -rf %s/carry_zero && mkdir -p %s/carry_zero && cp %s/carry_full/ckpt_00000003.bin "
             "%s/carry_zero/", g_tmp, g_tmp, g_tmp, g_tmp);
    if (system(cmd) != 0) { report(0, "copy checkpoint"); return; }
    snprintf(cmd, sizeof(cmd), "./train_mamba2 -i %s/train.bin -j %s/val.bin -k none -e " TINY_MODEL
             " -o %s/carry_zero -n 3 -y 1 %s", g_tmp, g_tmp, g_tmp, common);
    rc = run_capture(cmd, out, sizeof(out));
    report(rc != 0 && strstr(out, "has no carried-state file") != NULL,
           "-C 1: resuming a checkpoint whose carried state is missing is refused (exit %d)", rc);
    /* a corrupt companion (one flipped bit in the states) is refused by its checksum */
    snprintf(cmd, sizeof(cmd), "rm -rf %s/carry_bad && mkdir -p %s/carry_bad && cp %s/carry_full/ckpt_00000003.bin* "
             "%s/carry_bad/", g_tmp, g_tmp, g_tmp, g_tmp);
    if (system(cmd) != 0) { report(0, "copy checkpoint"); return; }
    snprintf(a, sizeof(a), "%s/carry_bad/ckpt_00000003.bin.carry", g_tmp);
    FILE* cf = fopen(a, "r+b");
    int flipped = cf != NULL && fseek(cf, 300, SEEK_SET) == 0;
    int byte = flipped ? fgetc(cf) : EOF;
    flipped = flipped && byte != EOF && fseek(cf, 300, SEEK_SET) == 0 && fputc(byte ^ 1, cf) != EOF;
    if (cf) fclose(cf);
    snprintf(cmd, sizeof(cmd), "./train_mamba2 -i %s/train.bin -j %s/val.bin -k none -e " TINY_MODEL
             " -o %s/carry_bad -n 3 -y 1 %s", g_tmp, g_tmp, g_tmp, common);
    rc = run_capture(cmd, out, sizeof(out));
    report(flipped && rc != 0 && strstr(out, "checksum mismatch") != NULL,
           "-C 1: a carried-state file with one flipped bit is refused (exit %d)", rc);
    snprintf(cmd, sizeof(cmd), "./train_mamba2 -i %s/train.bin -j %s/val.bin -k none -e " TINY_MODEL
             " -o %s/carry_resume -y 1 -b 2 -t 16 -x 9 -v 3 -m 2 -s 0 -l 3e-3 -u 2 -S 42", g_tmp, g_tmp, g_tmp);
    rc = run_capture(cmd, out, sizeof(out));
    report(rc != 0 && strstr(out, "resume with -C 1") != NULL,
           "-C 1: resuming its checkpoint without -C is refused (exit %d)", rc);
    char args[1024];
    snprintf(args, sizeof(args), "-i %s/train.bin -j none -k none -e d_model=32,n_layer=2,attn_layer_idx=1,d_state=8,"
             "headdim=8,num_heads=4 -b 2 -t 16 -x 1 -C 1", g_tmp);
    expect_failure("-C 1 with attention blocks", args, "attention blocks");
    snprintf(args, sizeof(args), "-i %s/train.bin -j none -k none -e " TINY_MODEL " -b 2 -t 16 -x 1 -C 2", g_tmp);
    expect_failure("-C 2", args, "-C 2");
}
#endif

int main(void) {
    Rng rng;
    rng_seed(&rng, 2024);
#ifdef MAMBA2_DOUBLE
    printf("== SSD chunked vs recurrence (double)\n");
    SSDShape shapes[] = {
        {2, 37, 4, 8, 6, 1, 8, 0},   /* T not a multiple of the chunk */
        {2, 37, 4, 8, 6, 2, 8, 1},   /* 2 groups, initial state and d(final state) */
        {1, 19, 2, 4, 5, 1, 1, 1},   /* chunk 1 */
        {2, 21, 4, 4, 4, 2, 64, 1},  /* chunk >= T */
        {1, 64, 2, 16, 16, 1, 16, 0}, /* T a multiple of the chunk */
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) test_ssd_against_recurrence(shapes[i], NULL, &rng);
    printf("== finite differences, each layer (double)\n");
    test_layer_gradients(&rng);
    printf("== finite differences, whole model (double)\n");
    test_model_gradients(&rng);
    printf("== generation and accumulation (double)\n");
    test_step_matches_forward(&rng);
    test_grad_accumulation(&rng);
    /* document boundaries and masked targets: a separate stream, so the checks above print what they always did */
    Rng drng;
    rng_seed(&drng, 2410);
    printf("== document boundaries: SSD chunked vs recurrence with resets (double)\n");
    test_ssd_docs_against_recurrence(&drng);
    printf("== document boundaries: finite differences through boundaries, masked targets (double)\n");
    test_layer_gradients_docs(&drng);
    test_model_gradients_docs(&drng);
    printf("== document boundaries: recurrent step with resets, packed == separate (double)\n");
    test_step_matches_forward_docs(&drng);
    test_single_document_bitwise(&drng);
    for (int aligned = 1; aligned >= 0; aligned--)
        for (int masked = 0; masked <= 1; masked++) test_packed_vs_separate(aligned, masked, 1e-12, &drng);
    /* hybrids: a stream of their own, so the checks above print what they always did */
    Rng hrng;
    rng_seed(&hrng, 2525);
    printf("== hybrids: attention, RoPE, SwiGLU layers; configs (double)\n");
    test_hybrid_layer_gradients(&hrng);
    test_hybrid_configs();
    printf("== hybrids: finite differences, whole model (double)\n");
    test_hybrid_model_gradients(HYBRID_TEST_SPEC, 0, &hrng);
    test_hybrid_model_gradients(HYBRID_TEST_SPEC, 1, &hrng);
    test_hybrid_model_gradients(HYBRID_TEST_SPEC2, 0, &hrng);
    printf("== hybrids: step with KV cache == parallel; packed == separate (double)\n");
    test_hybrid_step_matches_forward(HYBRID_TEST_SPEC, 0, &hrng);
    test_hybrid_step_matches_forward(HYBRID_TEST_SPEC, 1, &hrng);
    test_hybrid_step_matches_forward(HYBRID_TEST_SPEC2, 0, &hrng);
    for (int aligned = 1; aligned >= 0; aligned--)
        test_packed_vs_separate_spec(HYBRID_TEST_SPEC, "hybrid, ", aligned, 1, 1e-12, &hrng);
    /* carried state: a stream of its own */
    Rng crng;
    rng_seed(&crng, 2626);
    printf("== carried state: batches with the state carried == the rows joined; finite differences (double)\n");
    for (int docs = 0; docs <= 1; docs++) {
        test_carry_matches_joined(8, 2, docs, 1e-12, &crng);
        test_carry_matches_joined(6, 3, docs, 1e-12, &crng);
        test_carry_matches_joined(2, 4, docs, 1e-12, &crng);
        test_carry_gradients(docs, &crng);
    }
#else
    {
        Rng drng;
        rng_seed(&drng, 2410);
        printf("== document boundaries and masked targets: packed == separate (float)\n");
        test_single_document_bitwise(&drng);
        /* aligned: the same arithmetic per position, 1e-6 (the gradients are regrouped sums). Unaligned in float:
           d dt_bias, d A_log and d D are sums over every position of signed terms that cancel to ~1% of their size,
           so regrouping them moves the result by ~2e-6 of itself; the double build checks the same case to 1e-12 */
        for (int aligned = 1; aligned >= 0; aligned--)
            for (int masked = 0; masked <= 1; masked++)
                test_packed_vs_separate(aligned, masked, aligned ? 1e-6 : 1e-5, &drng);
    }
    {
        Rng crng;
        rng_seed(&crng, 2626);
        printf("== carried state: batches with the state carried == the rows joined (float)\n");
        /* T a multiple of the chunk: bitwise; otherwise the chunks differ: 1e-6 */
        for (int docs = 0; docs <= 1; docs++) {
            test_carry_matches_joined(8, 2, docs, 1e-6, &crng);
            test_carry_matches_joined(6, 3, docs, 1e-6, &crng);
            test_carry_matches_joined(2, 4, docs, 1e-6, &crng);
        }
    }
    printf("== HF transformers reference fixture (float)\n");
    test_hf_fixture(8);
    test_hf_fixture(7);
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/mamba2_test_XXXXXX");
    if (mkdtemp(g_tmp) == NULL) die("mkdtemp failed");
    make_train_data();
    printf("== resume (trainer binary, float)\n");
    test_resume_bitwise();
    test_resume_bitwise_hybrid();
    printf("== bad input (trainer binary)\n");
    test_bad_input();
    printf("== operations: kill -9, SIGTERM, full disk, corrupt checkpoints, used -o, flags (trainer binary)\n");
    test_operations();
    test_flags();
    printf("== document boundaries and masked targets (trainer binary)\n");
    test_trainer_docs();
    printf("== carried state (trainer binary)\n");
    test_trainer_carry();
    char cmd[512];
    snprintf(cmd, sizeof(cmd), getenv("KEEP_TMP") ? "true %s" : "rm -rf %s", g_tmp);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", g_tmp);
#endif
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
