/*
 * ssd_tutorial.c: the SSD layer of Mamba-2 three ways, forward and backward, in double precision, for one head.
 *
 * Read it with doc/ssd_three_ways.md and doc/ssd_backward.md. One head, no batch, no groups, no D skip:
 *     h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T        state h (P,N), h_{-1} = 0
 *     y_t = h_t C_t                                     output (P)
 * with x (T,P), B (T,N), C (T,N), dt (T) > 0, A < 0. The same function is computed
 *   1. by the recurrence, one step at a time:                   O(T P N), sequential in T;
 *   2. as y = M x with the T x T lower-triangular matrix
 *      M_ij = (C_i . B_j) exp(A sum_{k=j+1..i} dt_k) dt_j:       O(T^2 (N + P)), all rows in parallel;
 *   3. by the chunked algorithm: the diagonal Q x Q blocks of M computed directly (form 2 on each chunk), the
 *      off-diagonal blocks through the state passed from chunk to chunk: O(T Q (N + P) + T P N).
 * Each form has its backward for the loss L = sum_t dy_t . y_t (dy fixed, so dL/dy = dy). The program checks
 * that the three forms agree, that the three backwards agree, that the backward matches finite differences,
 * that the off-diagonal blocks of M have rank <= N, then times each form against T.
 *
 * Build: cc -O2 -std=c11 -Wall -o dev/ssd_tutorial dev/ssd_tutorial.c -lm
 * Run:   dev/ssd_tutorial [--dump DIR] [--no-timing] [--inject-bug]
 *   --dump DIR     writes DIR/ssd_M.csv, ssd_L.csv, ssd_blocks.csv (M, its decay mask and block ranks for T=32,
 *                  Q=8) and ssd_timing.csv, for dev/plot_ssd.py
 *   --inject-bug   drops one term of the chunked backward (the decay gradient of the state passing), to see
 *                  what the checks print when a backward is wrong: they must FAIL and the exit code be 1
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int inject_bug = 0;

/* ---- inputs and gradients of one head ---- */

typedef struct {
    int T, P, N;
    double A;
    const double *x, *B, *C, *dt; /* x (T,P), B (T,N), C (T,N), dt (T) */
} Seq;

typedef struct {
    double *dx, *dB, *dC, *ddt; /* same shapes as the inputs; ACCUMULATED by every backward */
    double dA;
} Grads;

/* the part of a sequence from t0 on, len steps long: what one chunk sees */
static Seq seq_slice(const Seq* s, int t0, int len) {
    Seq c = *s;
    c.T = len;
    c.x = s->x + (size_t)t0 * s->P; c.B = s->B + (size_t)t0 * s->N;
    c.C = s->C + (size_t)t0 * s->N; c.dt = s->dt + t0;
    return c;
}

static Grads grads_slice(const Grads* g, const Seq* s, int t0) {
    Grads c = {g->dx + (size_t)t0 * s->P, g->dB + (size_t)t0 * s->N, g->dC + (size_t)t0 * s->N, g->ddt + t0, 0};
    return c;
}

static double dot(const double* a, const double* b, int n) {
    double acc = 0;
    for (int i = 0; i < n; i++) acc += a[i] * b[i];
    return acc;
}

static double* alloc0(size_t n) {
    double* p = calloc(n ? n : 1, sizeof(double));
    if (!p) { fprintf(stderr, "ssd_tutorial: out of memory allocating %zu doubles\n", n); exit(1); }
    return p;
}

/* ================================================================================================================
 * 1. the recurrence. hs (T+1, P, N) keeps every state for the backward: hs[t+1] = h_t, hs[0] = h_{-1} = 0
 * ================================================================================================================ */

static void ssd_recurrent_forward(double* y, double* hs, const Seq* s) {
    int P = s->P, N = s->N;
    memset(hs, 0, sizeof(double) * P * N);
    for (int t = 0; t < s->T; t++) {
        const double *prev = hs + (size_t)t * P * N, *xt = s->x + (size_t)t * P;
        const double *Bt = s->B + (size_t)t * N, *Ct = s->C + (size_t)t * N;
        double* h = hs + (size_t)(t + 1) * P * N;
        double a = exp(s->dt[t] * s->A);
        for (int p = 0; p < P; p++) {
            for (int n = 0; n < N; n++) h[p * N + n] = a * prev[p * N + n] + s->dt[t] * xt[p] * Bt[n];
            y[(size_t)t * P + p] = dot(h + p * N, Ct, N);
        }
    }
}

/*
 * Adjoint state g_t = dL/dh_t, backwards in time: g_t = dy_t C_t^T + a_{t+1} g_{t+1}. Every input of step t
 * reaches L through h_t (and y_t), so its gradient is read off g_t (doc/ssd_backward.md, section 1).
 */
static void ssd_recurrent_backward(Grads* gr, const double* dy, const double* hs, const Seq* s) {
    int P = s->P, N = s->N;
    double* g = alloc0((size_t)P * N); /* holds a_{t+1} g_{t+1} on entry to step t */
    for (int t = s->T - 1; t >= 0; t--) {
        const double *h = hs + (size_t)(t + 1) * P * N, *prev = hs + (size_t)t * P * N;
        const double *xt = s->x + (size_t)t * P, *Bt = s->B + (size_t)t * N, *Ct = s->C + (size_t)t * N;
        const double* dyt = dy + (size_t)t * P;
        double a = exp(s->dt[t] * s->A), dt = s->dt[t];
        for (int p = 0; p < P; p++)
            for (int n = 0; n < N; n++) g[p * N + n] += dyt[p] * Ct[n];
        double gh = 0; /* <g_t, h_{t-1}>: how much L moves when the decay a_t moves */
        for (int p = 0; p < P; p++) {
            double gB = dot(g + p * N, Bt, N); /* (g_t B_t)_p */
            gr->dx[(size_t)t * P + p] += dt * gB;
            gr->ddt[t] += xt[p] * gB;
            gh += dot(g + p * N, prev + p * N, N);
            for (int n = 0; n < N; n++) {
                gr->dC[(size_t)t * N + n] += h[p * N + n] * dyt[p];
                gr->dB[(size_t)t * N + n] += g[p * N + n] * dt * xt[p];
            }
        }
        gr->ddt[t] += gh * a * s->A; /* a_t = exp(dt_t A): da/ddt = a A, da/dA = a dt */
        gr->dA += gh * a * dt;
        for (int i = 0; i < P * N; i++) g[i] *= a;
    }
    free(g);
}

/* ================================================================================================================
 * 2. the masked matrix ("attention") form: y = M x, M = L o (C B^T) o dt  (o: elementwise; dt scales column j)
 * L_ij = exp(A sum_{k=j+1..i} dt_k) for j <= i is accumulated from the diagonal leftwards as a running segment
 * sum seg <= 0, so every exp() argument is <= 0 and nothing is subtracted (no cancellation, no overflow).
 * ================================================================================================================ */

/* M (T,T) and Lmask (T,T), if not NULL, receive the matrix and its decay mask (upper triangle left 0) */
static void ssd_quadratic_forward(double* y, double* M, double* Lmask, const Seq* s) {
    int T = s->T, P = s->P, N = s->N;
    for (int i = 0; i < T; i++) {
        double* yi = y + (size_t)i * P;
        for (int p = 0; p < P; p++) yi[p] = 0;
        double seg = 0; /* A * sum_{k=j+1..i} dt_k */
        for (int j = i; j >= 0; j--) {
            double L = exp(seg);
            double m = dot(s->C + (size_t)i * N, s->B + (size_t)j * N, N) * L * s->dt[j];
            if (M) M[(size_t)i * T + j] = m;
            if (Lmask) Lmask[(size_t)i * T + j] = L;
            for (int p = 0; p < P; p++) yi[p] += m * s->x[(size_t)j * P + p];
            seg += s->A * s->dt[j];
        }
    }
}

/*
 * cum_i = A sum_{k<=i} dt_k, and log L_ij = cum_i - cum_j. Backwards pass the gradient of each cum_i (dcum) to
 * dt and A: dt_k is in every cum_i with i >= k (a reverse cumsum), A multiplies all of them.
 */
static void cumsum_backward(Grads* gr, const double* dcum, const Seq* s) {
    double rev = 0, cs = 0;
    for (int i = s->T - 1; i >= 0; i--) { rev += dcum[i]; gr->ddt[i] += s->A * rev; }
    for (int i = 0; i < s->T; i++) { cs += s->dt[i]; gr->dA += dcum[i] * cs; }
}

/* dM_ij = dy_i . x_j;  then through M_ij = CB_ij L_ij dt_j to C, B, dt and, via log L_ij = cum_i - cum_j, to dcum */
static void ssd_quadratic_backward(Grads* gr, const double* dy, const Seq* s) {
    int T = s->T, P = s->P, N = s->N;
    double* dcum = alloc0(T);
    for (int i = 0; i < T; i++) {
        const double *Ci = s->C + (size_t)i * N, *dyi = dy + (size_t)i * P;
        double seg = 0;
        for (int j = i; j >= 0; j--) {
            const double *Bj = s->B + (size_t)j * N, *xj = s->x + (size_t)j * P;
            double L = exp(seg), cb = dot(Ci, Bj, N), dtj = s->dt[j];
            double m = cb * L * dtj;
            double dm = dot(dyi, xj, P);                                       /* dL/dM_ij */
            for (int p = 0; p < P; p++) gr->dx[(size_t)j * P + p] += m * dyi[p]; /* dx = M^T dy */
            double dcb = dm * L * dtj;                                         /* dL/d(C_i . B_j) */
            for (int n = 0; n < N; n++) {
                gr->dC[(size_t)i * N + n] += dcb * Bj[n];
                gr->dB[(size_t)j * N + n] += dcb * Ci[n];
            }
            gr->ddt[j] += dm * cb * L; /* dt_j as the column scale */
            dcum[i] += dm * m;         /* dL/dlog L_ij = dm * m, with + for cum_i and - for cum_j */
            dcum[j] -= dm * m;
            seg += s->A * dtj;
        }
    }
    cumsum_backward(gr, dcum, s);
    free(dcum);
}

/* ================================================================================================================
 * 3. the chunked algorithm. states (nchunks, P, N) keeps the state ENTERING each chunk for the backward.
 * Inside a chunk cum_i = A sum_{k<=i} dt_k restarts at the chunk's first step, so cum_i <= 0 is small.
 * ================================================================================================================ */

static void chunk_cumsum(double* cum, const Seq* c) {
    double acc = 0;
    for (int i = 0; i < c->T; i++) { acc += c->A * c->dt[i]; cum[i] = acc; }
}

static void ssd_chunked_forward(double* y, double* states, const Seq* s, int Q) {
    int P = s->P, N = s->N;
    double* H = alloc0((size_t)P * N);
    double* cum = alloc0(Q);
    for (int t0 = 0, c = 0; t0 < s->T; t0 += Q, c++) {
        int len = s->T - t0 < Q ? s->T - t0 : Q;
        Seq ch = seq_slice(s, t0, len);
        double* yc = y + (size_t)t0 * P;
        memcpy(states + (size_t)c * P * N, H, sizeof(double) * P * N);
        ssd_quadratic_forward(yc, NULL, NULL, &ch); /* diagonal block: form 2 on the chunk */
        chunk_cumsum(cum, &ch);
        for (int i = 0; i < len; i++) /* off-diagonal blocks: the entering state, decayed to i, read by C_i */
            for (int p = 0; p < P; p++) yc[(size_t)i * P + p] += exp(cum[i]) * dot(H + p * N, ch.C + (size_t)i * N, N);
        double eL = exp(cum[len - 1]); /* state passing: H <- exp(cum_last) H + sum_j w_j x_j B_j^T */
        for (int k = 0; k < P * N; k++) H[k] *= eL;
        for (int j = 0; j < len; j++) {
            double w = exp(cum[len - 1] - cum[j]) * ch.dt[j];
            for (int p = 0; p < P; p++)
                for (int n = 0; n < N; n++) H[p * N + n] += w * ch.x[(size_t)j * P + p] * ch.B[(size_t)j * N + n];
        }
    }
    free(H); free(cum);
}

/* reverse over chunks carrying dH = dL/d(state leaving the chunk); doc/ssd_backward.md, section 3 */
static void ssd_chunked_backward(Grads* gr, const double* dy, const double* states, const Seq* s, int Q) {
    int P = s->P, N = s->N, nc = (s->T + Q - 1) / Q;
    double *dH = alloc0((size_t)P * N), *dHprev = alloc0((size_t)P * N);
    double *cum = alloc0(Q), *dcum = alloc0(Q), *u = alloc0(P);
    for (int c = nc - 1; c >= 0; c--) {
        int t0 = c * Q, len = s->T - t0 < Q ? s->T - t0 : Q, last = len - 1;
        Seq ch = seq_slice(s, t0, len);
        Grads gc = grads_slice(gr, s, t0);
        const double* Hprev = states + (size_t)c * P * N;
        const double* dyc = dy + (size_t)t0 * P;
        ssd_quadratic_backward(&gc, dyc, &ch); /* diagonal block, dcum and all */
        chunk_cumsum(cum, &ch);
        for (int i = 0; i < len; i++) dcum[i] = 0;
        /* state passing, H_out = exp(cum_last) Hprev + sum_j exp(cum_last - cum_j) dt_j x_j B_j^T */
        double eL = exp(cum[last]);
        for (int k = 0; k < P * N; k++) dHprev[k] = eL * dH[k];
        if (!inject_bug) dcum[last] += eL * dot(dH, Hprev, P * N);
        for (int j = 0; j < len; j++) {
            const double *xj = ch.x + (size_t)j * P, *Bj = ch.B + (size_t)j * N;
            double e = exp(cum[last] - cum[j]), dtj = ch.dt[j];
            for (int p = 0; p < P; p++) u[p] = dot(dH + p * N, Bj, N); /* u = dH B_j */
            double xu = dot(xj, u, P);                                  /* x_j^T dH B_j */
            for (int p = 0; p < P; p++) gc.dx[(size_t)j * P + p] += e * dtj * u[p];
            for (int n = 0; n < N; n++) {
                double v = 0; /* (dH^T x_j)_n */
                for (int p = 0; p < P; p++) v += dH[p * N + n] * xj[p];
                gc.dB[(size_t)j * N + n] += e * dtj * v;
            }
            gc.ddt[j] += e * xu;
            dcum[last] += e * dtj * xu;
            dcum[j] -= e * dtj * xu;
        }
        /* off-diagonal blocks, y_i += exp(cum_i) Hprev C_i */
        for (int i = 0; i < len; i++) {
            const double *Ci = ch.C + (size_t)i * N, *dyi = dyc + (size_t)i * P;
            double e = exp(cum[i]);
            for (int p = 0; p < P; p++) {
                dcum[i] += e * dyi[p] * dot(Hprev + p * N, Ci, N);
                for (int n = 0; n < N; n++) {
                    gc.dC[(size_t)i * N + n] += e * dyi[p] * Hprev[p * N + n];
                    dHprev[p * N + n] += e * dyi[p] * Ci[n];
                }
            }
        }
        cumsum_backward(&gc, dcum, &ch);
        gr->dA += gc.dA;
        memcpy(dH, dHprev, sizeof(double) * P * N); /* the state entering chunk c left chunk c-1 */
    }
    free(dH); free(dHprev); free(cum); free(dcum); free(u);
}

/* ================================================================================================================
 * checks
 * ================================================================================================================ */

static int n_pass = 0, n_fail = 0;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double uniform(double lo, double hi) { /* xorshift64*: reproducible, no dependency */
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return lo + (hi - lo) * (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* max |a - b| / max |b|: the error relative to the size of the reference (the "err" the checks print) */
static double max_rel_diff(const double* a, const double* b, size_t n) {
    double err = 0, ref = 1e-300;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        err = d > err ? d : err;
        ref = fabs(b[i]) > ref ? fabs(b[i]) : ref;
    }
    return err / ref;
}

static void check(const char* what, double err, double tol) {
    int ok = err <= tol; /* a NaN fails too */
    printf("%-60s err %.2e (tol %.0e)  %s\n", what, err, tol, ok ? "ok" : "FAIL");
    ok ? n_pass++ : n_fail++;
}

typedef struct { int T, P, N; double *x, *B, *C, *dt, *dy, A; } Problem;

static Problem problem_random(int T, int P, int N) {
    Problem q = {T, P, N, alloc0((size_t)T * P), alloc0((size_t)T * N), alloc0((size_t)T * N), alloc0(T),
                 alloc0((size_t)T * P), -uniform(0.5, 2.0)};
    for (int i = 0; i < T * P; i++) { q.x[i] = uniform(-1, 1); q.dy[i] = uniform(-1, 1); }
    for (int i = 0; i < T * N; i++) { q.B[i] = uniform(-1, 1); q.C[i] = uniform(-1, 1); }
    for (int t = 0; t < T; t++) q.dt[t] = uniform(0.02, 0.3);
    return q;
}

static Seq problem_seq(const Problem* q) { Seq s = {q->T, q->P, q->N, q->A, q->x, q->B, q->C, q->dt}; return s; }
static void problem_free(Problem* q) { free(q->x); free(q->B); free(q->C); free(q->dt); free(q->dy); }

static Grads grads_alloc(int T, int P, int N) {
    Grads g = {alloc0((size_t)T * P), alloc0((size_t)T * N), alloc0((size_t)T * N), alloc0(T), 0};
    return g;
}
static void grads_free(Grads* g) { free(g->dx); free(g->dB); free(g->dC); free(g->ddt); }

/* L = sum_t dy_t . y_t through the simplest form, for finite differences */
static double loss_recurrent(const Problem* q) {
    Seq s = problem_seq(q);
    double* y = alloc0((size_t)q->T * q->P);
    double* hs = alloc0((size_t)(q->T + 1) * q->P * q->N);
    ssd_recurrent_forward(y, hs, &s);
    double L = dot(y, q->dy, q->T * q->P);
    free(y); free(hs);
    return L;
}

/* the three forms (and their backwards) agree on one problem */
static void check_forms(int T, int P, int N, int Q) {
    Problem q = problem_random(T, P, N);
    Seq s = problem_seq(&q);
    size_t TP = (size_t)T * P, TN = (size_t)T * N;
    double *y1 = alloc0(TP), *y2 = alloc0(TP), *y3 = alloc0(TP);
    double* hs = alloc0((size_t)(T + 1) * P * N);
    double* states = alloc0((size_t)((T + Q - 1) / Q) * P * N);
    ssd_recurrent_forward(y1, hs, &s);
    ssd_quadratic_forward(y2, NULL, NULL, &s);
    ssd_chunked_forward(y3, states, &s, Q);
    Grads g1 = grads_alloc(T, P, N), g2 = grads_alloc(T, P, N), g3 = grads_alloc(T, P, N);
    ssd_recurrent_backward(&g1, q.dy, hs, &s);
    ssd_quadratic_backward(&g2, q.dy, &s);
    ssd_chunked_backward(&g3, q.dy, states, &s, Q);
    char name[128];
    const double tol = 1e-11;
#define CMP(what, a, b, n) snprintf(name, sizeof(name), "T=%d P=%d N=%d Q=%d %s", T, P, N, Q, what); \
    check(name, max_rel_diff(a, b, n), tol)
    CMP("y: quadratic vs recurrence", y2, y1, TP);
    CMP("y: chunked vs recurrence", y3, y1, TP);
    const char* form[2] = {"quadratic", "chunked"};
    Grads* g[2] = {&g2, &g3};
    for (int f = 0; f < 2; f++) {
        char w[64];
        snprintf(w, sizeof(w), "dx: %s vs recurrence", form[f]);  CMP(w, g[f]->dx, g1.dx, TP);
        snprintf(w, sizeof(w), "dB: %s vs recurrence", form[f]);  CMP(w, g[f]->dB, g1.dB, TN);
        snprintf(w, sizeof(w), "dC: %s vs recurrence", form[f]);  CMP(w, g[f]->dC, g1.dC, TN);
        snprintf(w, sizeof(w), "ddt: %s vs recurrence", form[f]); CMP(w, g[f]->ddt, g1.ddt, T);
        snprintf(w, sizeof(w), "dA: %s vs recurrence", form[f]);  CMP(w, &g[f]->dA, &g1.dA, 1);
    }
#undef CMP
    free(y1); free(y2); free(y3); free(hs); free(states);
    grads_free(&g1); grads_free(&g2); grads_free(&g3); problem_free(&q);
}

/* central differences of L on a few entries of each input against the chunked backward */
static void check_finite_differences(int T, int P, int N, int Q) {
    Problem q = problem_random(T, P, N);
    Seq s = problem_seq(&q);
    double* y = alloc0((size_t)T * P);
    double* states = alloc0((size_t)((T + Q - 1) / Q) * P * N);
    ssd_chunked_forward(y, states, &s, Q);
    Grads g = grads_alloc(T, P, N);
    ssd_chunked_backward(&g, q.dy, states, &s, Q);
    struct { const char* name; double* v; const double* grad; int n; } in[5] = {
        {"x", q.x, g.dx, T * P}, {"B", q.B, g.dB, T * N}, {"C", q.C, g.dC, T * N}, {"dt", q.dt, g.ddt, T},
        {"A", &q.A, &g.dA, 1}};
    const double h = 1e-6; /* truncation error ~h^2, round-off ~1e-16/h: both well under the tolerance */
    for (int k = 0; k < 5; k++) {
        int samples = in[k].n < 8 ? in[k].n : 8;
        double num[8], ana[8];
        for (int r = 0; r < samples; r++) {
            int i = samples == in[k].n ? r : (int)uniform(0, in[k].n - 1e-9);
            double old = in[k].v[i];
            in[k].v[i] = old + h; double lp = loss_recurrent(&q);
            in[k].v[i] = old - h; double lm = loss_recurrent(&q);
            in[k].v[i] = old;
            num[r] = (lp - lm) / (2 * h);
            ana[r] = in[k].grad[i];
        }
        char name[128];
        snprintf(name, sizeof(name), "T=%d Q=%d d%s: chunked backward vs finite differences", T, Q, in[k].name);
        check(name, max_rel_diff(ana, num, samples), 1e-7);
    }
    free(y); free(states); grads_free(&g); problem_free(&q);
}

/* numerical rank of the r x c block at M[r0.., c0..] (row stride ld), by Gaussian elimination with full pivoting */
static int block_rank(const double* M, int ld, int r0, int c0, int r, int c) {
    double* a = alloc0((size_t)r * c);
    double big = 0;
    for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++) { a[i * c + j] = M[(size_t)(r0 + i) * ld + c0 + j]; big = fmax(big, fabs(a[i * c + j])); }
    int rank = 0;
    for (; rank < r && rank < c; rank++) {
        int pi = rank, pj = rank;
        for (int i = rank; i < r; i++)
            for (int j = rank; j < c; j++)
                if (fabs(a[i * c + j]) > fabs(a[pi * c + pj])) { pi = i; pj = j; }
        if (fabs(a[pi * c + pj]) <= 1e-10 * big) break; /* what is left is round-off */
        for (int j = 0; j < c; j++) { double t = a[rank * c + j]; a[rank * c + j] = a[pi * c + j]; a[pi * c + j] = t; }
        for (int i = 0; i < r; i++) { double t = a[i * c + rank]; a[i * c + rank] = a[i * c + pj]; a[i * c + pj] = t; }
        for (int i = rank + 1; i < r; i++) {
            double f = a[i * c + rank] / a[rank * c + rank];
            for (int j = rank; j < c; j++) a[i * c + j] -= f * a[rank * c + j];
        }
    }
    free(a);
    return rank;
}

static void write_matrix(const char* dir, const char* file, const double* a, int rows, int cols) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    FILE* f = fopen(path, "w");
    if (!f) { fprintf(stderr, "--dump: cannot write %s: does the directory %s exist?\n", path, dir); exit(1); }
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) fprintf(f, "%.9g%s", a[(size_t)i * cols + j], j + 1 < cols ? "," : "\n");
    fclose(f);
}

/* M of a short sequence: its off-diagonal chunk blocks factor through the N-dimensional state, so rank <= N */
static void check_block_ranks(const char* dump_dir) {
    const int T = 32, Q = 8, P = 2, N = 3, nc = T / Q;
    Problem q = problem_random(T, P, N);
    Seq s = problem_seq(&q);
    double *y = alloc0((size_t)T * P), *M = alloc0((size_t)T * T), *L = alloc0((size_t)T * T);
    ssd_quadratic_forward(y, M, L, &s);
    int ranks[4 * 4], worst_off = 0, least_diag = Q;
    for (int I = 0; I < nc; I++)
        for (int J = 0; J < nc; J++) {
            ranks[I * nc + J] = J > I ? 0 : block_rank(M, T, I * Q, J * Q, Q, Q);
            if (J < I && ranks[I * nc + J] > worst_off) worst_off = ranks[I * nc + J];
            if (J == I && ranks[I * nc + J] < least_diag) least_diag = ranks[I * nc + J];
        }
    printf("M (T=%d, Q=%d, N=%d): largest rank of an off-diagonal block %d, smallest of a diagonal block %d\n", T, Q,
           N, worst_off, least_diag);
    check("off-diagonal blocks of M: rank above N", worst_off > N ? worst_off - N : 0, 0);
    check("diagonal blocks of M: rank below Q (they are full rank)", Q - least_diag, 0);
    if (dump_dir) {
        write_matrix(dump_dir, "ssd_M.csv", M, T, T);
        write_matrix(dump_dir, "ssd_L.csv", L, T, T);
        double meta[4 + 16] = {T, Q, N, nc};
        for (int k = 0; k < nc * nc; k++) meta[4 + k] = ranks[k];
        write_matrix(dump_dir, "ssd_blocks.csv", meta, 1, 4 + nc * nc); /* T, Q, N, nc, then the ranks row-major */
    }
    free(y); free(M); free(L); problem_free(&q);
}

/* ================================================================================================================
 * timing: forward and backward of each form against T
 * ================================================================================================================ */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* seconds per call of forward (what = 0) or backward (what = 1) of form f, repeated for >= 20 ms, best of 3 */
static double time_form(int f, int what, const Problem* q, int Q, double* y, double* buf, Grads* g) {
    Seq s = problem_seq(q);
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        int calls = 0;
        double t0 = now(), t1;
        do {
            if (f == 0 && what == 0) ssd_recurrent_forward(y, buf, &s);
            if (f == 0 && what == 1) ssd_recurrent_backward(g, q->dy, buf, &s); /* buf: the states just made */
            if (f == 1 && what == 0) ssd_quadratic_forward(y, NULL, NULL, &s);
            if (f == 1 && what == 1) ssd_quadratic_backward(g, q->dy, &s);
            if (f == 2 && what == 0) ssd_chunked_forward(y, buf, &s, Q);
            if (f == 2 && what == 1) ssd_chunked_backward(g, q->dy, buf, &s, Q);
            calls++;
            t1 = now();
        } while (t1 - t0 < 0.02);
        best = fmin(best, (t1 - t0) / calls);
    }
    return best;
}

static void run_timing(const char* dump_dir) {
    const int P = 16, N = 32, Q = 32;
    const char* names[3] = {"recurrence", "quadratic", "chunked"};
    FILE* f = NULL;
    if (dump_dir) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/ssd_timing.csv", dump_dir);
        if (!(f = fopen(path, "w"))) { fprintf(stderr, "--dump: cannot write %s\n", path); exit(1); }
        fprintf(f, "form,T,P,N,Q,forward_ms,backward_ms\n");
    }
    printf("\ntiming, one head, P=%d N=%d Q=%d, ms per call (forward | backward)\n%6s", P, N, Q, "T");
    for (int k = 0; k < 3; k++) printf(" %23s", names[k]);
    printf("\n");
    for (int T = 64; T <= 4096; T *= 2) {
        Problem q = problem_random(T, P, N);
        double* y = alloc0((size_t)T * P);
        double* buf = alloc0((size_t)(T + 1) * P * N); /* the recurrence's states, or the chunked one's */
        Grads g = grads_alloc(T, P, N);
        printf("%6d", T);
        for (int k = 0; k < 3; k++) {
            if (k == 1 && T > 2048) { printf(" %23s", "-"); continue; } /* quadratic: too slow to wait for */
            double fw = time_form(k, 0, &q, Q, y, buf, &g) * 1e3;
            double bw = time_form(k, 1, &q, Q, y, buf, &g) * 1e3;
            printf(" %11.3f | %9.3f", fw, bw);
            if (f) fprintf(f, "%s,%d,%d,%d,%d,%.6g,%.6g\n", names[k], T, P, N, Q, fw, bw);
        }
        printf("\n");
        free(y); free(buf); grads_free(&g); problem_free(&q);
    }
    if (f) fclose(f);
}

int main(int argc, char** argv) {
    const char* dump_dir = NULL;
    int timing = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump_dir = argv[++i];
        else if (!strcmp(argv[i], "--no-timing")) timing = 0;
        else if (!strcmp(argv[i], "--inject-bug")) inject_bug = 1;
        else {
            fprintf(stderr, "unknown argument '%s'\nusage: %s [--dump DIR] [--no-timing] [--inject-bug]\n", argv[i],
                    argv[0]);
            return 2;
        }
    }
    if (inject_bug) printf("--inject-bug: the chunked backward drops the state-passing decay term; expect FAIL\n");
    /* shapes: chunks that divide T, a partial last chunk, chunks of one step, one chunk longer than T */
    int shapes[][4] = {{64, 4, 8, 16}, {50, 3, 5, 16}, {37, 2, 3, 1}, {40, 3, 4, 64}, {96, 8, 16, 32}};
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++)
        check_forms(shapes[k][0], shapes[k][1], shapes[k][2], shapes[k][3]);
    check_finite_differences(50, 3, 5, 16);
    check_block_ranks(dump_dir);
    if (timing) run_timing(dump_dir);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
