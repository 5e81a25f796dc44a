/*
 * decode_decoder.cuh: the batched generator of generate_mamba2.cu as it was at commit 6b385b7 (prefill, decode state,
 * the persistent step's planning, CUDA graphs, the -T 1 per-kernel timing, generate_batch), moved here UNCHANGED in
 * namespace decode_lab: it drives every version of dev/cuda/decode_versions.cuh by their knobs. The default path
 * is llmc/decoder.cuh.
 */
#ifndef MAMBA2_DEV_DECODE_DECODER_CUH
#define MAMBA2_DEV_DECODE_DECODER_CUH

#include "dev/cuda/decode_versions.cuh"
#include "llmc/infer_common.h"

#include <vector>
#include <algorithm>

namespace decode_lab {

#define GEN_CHECK_EVERY 32 /* greedy: steps between looks at the token history (end-of-text) */

/* ---- the decoder: batched recurrent state, the prefill buffers and the captured step ---- */

typedef struct {
    int S;              /* sequences decoded together */
    int Tmax;           /* the longest prompt the prefill buffers hold */
    int max_steps;      /* token history rows */
    int small;          /* S <= GEN_SMALL_S: the fused matvec kernels */
    int persist;        /* small, and the persistent step (v3) takes these shapes: one kernel for all layers */
    int p_grid;         /* its blocks */
    float* gate;        /* (S, E) persistent step: y * SiLU(z), the gated norm's input */
    unsigned* bar;      /* persistent step: grid-barrier counter */
    int mma;            /* else, bf16 builds, S <= GEN_MMA_MAX_S: the tensor-core projections (gen_mma) */
    int parity;         /* which conv window buffer the next step reads */
    void* state;        /* (L, S, H, P, N) SSM states, float or (state_lowp) floatX */
    int state_lowp;     /* the state is kept in floatX (bf16): half the bytes, the large-S step's main traffic */
    float* pf_state;    /* (H, P, N) the prefill's float final state of one layer, before it is rounded */
    float* part_v;      /* (S, nparts) the LM head's per-block greedy picks (small path) */
    int* part_i;
    int nparts;
    float* win[2];      /* (L, S, K-1, conv_dim) conv windows, read one, write the other */
    float* x;           /* (S, D) residual stream */
    floatX *u, *zxbcdt, *y, *gn, *delta, *logits;
    floatX* xbc;        /* (S, conv_dim) the conv step's output, when it runs in its own kernel (more than
                         * GEN_SMALL_S sequences) */
    float *rstd, *gn_rstd;
    int* tokens;        /* (S) the next step's input tokens */
    int* hist;          /* (max_steps + 1, S) greedy: the picked tokens, row = *step */
    int* step;          /* device step counter */
    cudaGraphExec_t graph[2];
    int graph_argmax;   /* the graphs end with the argmax (greedy) */
    int have_graph;
    /* prefill, one sequence of up to Tmax tokens */
    float* pf_x;
    floatX *pf_u, *pf_zx, *pf_xbc, *pf_y, *pf_gn, *pf_delta;
    float *pf_rstd, *pf_gn_rstd;
    char* pf_saved;
    int* pf_tokens;
    size_t bytes;
    float* logits_host;
    floatX* logits_host_x;
} Decoder;

static size_t dec_K1(const Mamba2Config* c) { return c->d_conv > 1 ? (size_t)c->d_conv - 1 : 1; }
static size_t dec_state_elems(const Mamba2Config* c, int S) {
    return (size_t)c->n_layer * S * c->nheads * c->headdim * c->d_state;
}
static size_t dec_state_bytes(const Decoder* d, const Mamba2Config* c) {
    return dec_state_elems(c, d->S) * (d->state_lowp ? sizeof(floatX) : sizeof(float));
}

/* the SSM state's precision: -1 auto (floatX from GEN_LOWP_MIN_S sequences on, where the state's bytes set the step
 * time; float below, where the weights do), 0 always float, 1 always floatX. In fp32 builds floatX is float. */
static int g_gen_state_mode = -1;
#define GEN_LOWP_MIN_S 16
static int gen_state_lowp(int S) {
    if (sizeof(floatX) == sizeof(float)) return 0;
    return g_gen_state_mode < 0 ? S >= GEN_LOWP_MIN_S : g_gen_state_mode;
}
static size_t dec_win_floats(const Mamba2Config* c, int S) { return (size_t)c->n_layer * S * dec_K1(c) * c->conv_dim; }

/* the persistent step's arguments for window parity `parity` (GPUModel pointers in, the kernel's plain struct out) */
static GenPArgs decoder_pargs(Decoder* d, const GPUModel* m, int parity) {
    const Mamba2Config* c = &m->config;
    GenPArgs a;
    memset(&a, 0, sizeof a);
    int S = d->S;
    size_t K1 = dec_K1(c);
    a.x = d->x; a.zxbcdt = d->zxbcdt; a.xbc = d->xbc; a.y = d->y; a.gate = d->gate; a.state = d->state;
    a.win_in = d->win[parity]; a.win_out = d->win[parity ^ 1];
    a.win_layer = (size_t)S * K1 * c->conv_dim;
    a.state_layer = (size_t)S * c->nheads * c->headdim * c->d_state;
    a.bar = d->bar;
    GPUModel* mm = (GPUModel*)m; /* PF/PX take a non-const model; nothing is written */
#define GEN_PARAM(field, t, F)                                                                                         \
    a.field = F(mm, t, 0);                                                                                             \
    a.field##_ls = param_offset(m, t, 1) - param_offset(m, t, 0);
    GEN_PARAM(norm_w, P_NORM_W, PF) GEN_PARAM(conv_w, P_CONV_W, PF) GEN_PARAM(conv_b, P_CONV_B, PF)
    GEN_PARAM(dt_bias, P_DT_BIAS, PF) GEN_PARAM(A_log, P_A_LOG, PF) GEN_PARAM(Dskip, P_D, PF)
    GEN_PARAM(gnorm_w, P_GNORM_W, PF) GEN_PARAM(in_w, P_IN_PROJ_W, PX) GEN_PARAM(out_w, P_OUT_PROJ_W, PX)
#undef GEN_PARAM
    a.S = S; a.L = c->n_layer; a.D = c->d_model; a.E = c->d_inner; a.H = c->nheads; a.P = c->headdim;
    a.N = c->d_state; a.G = c->ngroups; a.K = c->d_conv; a.Z = c->d_in_proj; a.Cd = c->conv_dim;
    a.tpr = c->d_state / (16 / (d->state_lowp ? (int)sizeof(floatX) : (int)sizeof(float)));
    return a;
}

static cudaError_t decoder_persist_launch(Decoder* d, const GPUModel* m, const GenPArgs& a, cudaStream_t st) {
    (void)m;
    if (d->state_lowp) return gen_persist_step<floatX>(a, d->p_grid, st);
    return gen_persist_step<float>(a, d->p_grid, st);
}

/* the small path takes the persistent step (v3) when asked (-V 3, the default), the shapes fit and its grid is resident
 * at once; else the v2 kernels, with a note saying why. A first launch with no layers checks the launch itself (a
 * cooperative grid the driver refuses: then without the cooperative attribute, residency checked by occupancy). */
static void decoder_persist_plan(Decoder* d, const GPUModel* m) {
    const Mamba2Config* c = &m->config;
    d->persist = 0;
    if (!d->small || g_gen_version != 3) return;
    int stb = d->state_lowp ? (int)sizeof(floatX) : (int)sizeof(float);
    const char* why = gen_persist_unsupported(d->S, c->d_model, c->d_inner, c->nheads, c->headdim, c->d_state,
                                              c->ngroups, c->d_conv, stb);
    d->p_grid = d->state_lowp ? gen_persist_grid<floatX>() : gen_persist_grid<float>();
    if (why == NULL && d->p_grid == 0) why = "its block does not fit on an SM";
    if (why != NULL) {
        fprintf(stderr, "note: the persistent decode step does not apply (%s): the v2 kernels run instead\n", why);
        return;
    }
    GenPArgs a = decoder_pargs(d, m, 0);
    a.L = 0;
    cudaStream_t st = m->stream;
    cudaCheck(cudaStreamSynchronize(st));
    cudaError_t err = decoder_persist_launch(d, m, a, st);
    if (err != cudaSuccess && g_gen_coop) {
        (void)cudaGetLastError();
        fprintf(stderr, "note: cooperative launch of the persistent step refused (%s): launching it plainly (its %d "
                "blocks fit at once by the occupancy count)\n", cudaGetErrorString(err), d->p_grid);
        g_gen_coop = 0;
        err = decoder_persist_launch(d, m, a, st);
    }
    if (err == cudaSuccess) err = cudaStreamSynchronize(st);
    if (err != cudaSuccess) die("persistent decode step: launch failed: %s (run with -V 2 for the v2 kernels)",
                                cudaGetErrorString(err));
    d->persist = 1;
}

static void decoder_create(Decoder* d, const GPUModel* m, int S, int Tmax, int max_steps) {
    const Mamba2Config* c = &m->config;
    memset(d, 0, sizeof(*d));
    if (S < 1) die("decoder: need at least one sequence");
    if (Tmax < 1) Tmax = 1;
    d->S = S; d->Tmax = Tmax; d->max_steps = max_steps; d->small = S <= GEN_SMALL_S;
    d->mma = gen_mma_path_ok(S, c->d_model, c->d_inner);
    size_t X = sizeof(floatX), F = sizeof(float), D = c->d_model, E = c->d_inner, Vp = c->padded_vocab_size;
    size_t total = 0, T = (size_t)Tmax;
    d->state_lowp = gen_state_lowp(S);
    d->state = gpu_alloc(dec_state_bytes(d, c), &total);
    d->pf_state = (float*)gpu_alloc((size_t)c->nheads * c->headdim * c->d_state * F, &total);
    d->nparts = gen_matvec_grid((int)Vp);
    d->part_v = (float*)gpu_alloc((size_t)S * d->nparts * F, &total);
    d->part_i = (int*)gpu_alloc((size_t)S * d->nparts * sizeof(int), &total);
    for (int i = 0; i < 2; i++) d->win[i] = (float*)gpu_alloc(dec_win_floats(c, S) * F, &total);
    d->x = (float*)gpu_alloc(S * D * F, &total);
    d->u = (floatX*)gpu_alloc(S * D * X, &total);
    d->zxbcdt = (floatX*)gpu_alloc(S * (size_t)c->d_in_proj * X, &total);
    d->y = (floatX*)gpu_alloc(S * E * X, &total);
    d->xbc = (floatX*)gpu_alloc(S * (size_t)c->conv_dim * X, &total);
    d->gate = (float*)gpu_alloc(S * E * F, &total);
    d->bar = (unsigned*)gpu_alloc(sizeof(unsigned), &total);
    d->gn = (floatX*)gpu_alloc(S * E * X, &total);
    d->delta = (floatX*)gpu_alloc(S * D * X, &total);
    d->logits = (floatX*)gpu_alloc(S * Vp * X, &total);
    d->rstd = (float*)gpu_alloc(S * F, &total);
    d->gn_rstd = (float*)gpu_alloc(S * (size_t)c->ngroups * F, &total);
    d->tokens = (int*)gpu_alloc(S * sizeof(int), &total);
    d->hist = (int*)gpu_alloc(((size_t)max_steps + 2) * S * sizeof(int), &total);
    d->step = (int*)gpu_alloc(sizeof(int), &total);
    d->pf_x = (float*)gpu_alloc(T * D * F, &total);
    d->pf_u = (floatX*)gpu_alloc(T * D * X, &total);
    d->pf_zx = (floatX*)gpu_alloc(T * c->d_in_proj * X, &total);
    d->pf_xbc = (floatX*)gpu_alloc(T * c->conv_dim * X, &total);
    d->pf_y = (floatX*)gpu_alloc(T * E * X, &total);
    d->pf_gn = (floatX*)gpu_alloc(T * E * X, &total);
    d->pf_delta = (floatX*)gpu_alloc(T * D * X, &total);
    d->pf_rstd = (float*)gpu_alloc(T * F, &total);
    d->pf_gn_rstd = (float*)gpu_alloc(T * c->ngroups * F, &total);
    d->pf_saved = (char*)gpu_alloc(ssd_saved_bytes(1, Tmax, c->nheads, c->headdim, c->d_state, c->chunk_size), &total);
    d->pf_tokens = (int*)gpu_alloc(T * sizeof(int), &total);
    d->bytes = total;
    d->logits_host = (float*)mallocCheck(S * Vp * F);
    d->logits_host_x = (floatX*)mallocCheck(S * Vp * X);
    decoder_persist_plan(d, m);
}

static void decoder_free(Decoder* d) {
    for (int i = 0; i < 2; i++) if (d->have_graph) cudaCheck(cudaGraphExecDestroy(d->graph[i]));
    void* ptrs[] = {d->state, d->win[0], d->win[1], d->x, d->u, d->zxbcdt, d->xbc, d->y, d->gn, d->delta, d->logits,
                    d->rstd, d->gn_rstd, d->tokens, d->hist, d->step, d->pf_x, d->pf_u, d->pf_zx, d->pf_xbc,
                    d->pf_y, d->pf_gn, d->pf_delta, d->pf_rstd, d->pf_gn_rstd, d->pf_saved, d->pf_tokens,
                    d->pf_state, d->part_v, d->part_i, d->gate, d->bar};
    for (size_t i = 0; i < sizeof(ptrs) / sizeof(ptrs[0]); i++) cudaCheck(cudaFree(ptrs[i]));
    free(d->logits_host);
    free(d->logits_host_x);
    memset(d, 0, sizeof(*d));
}

/* zero state, zero windows, step counter 0 (a new batch) */
static void decoder_reset(Decoder* d, const GPUModel* m) {
    const Mamba2Config* c = &m->config;
    cudaStream_t st = m->stream;
    cudaCheck(cudaMemsetAsync(d->state, 0, dec_state_bytes(d, c), st));
    for (int i = 0; i < 2; i++) cudaCheck(cudaMemsetAsync(d->win[i], 0, dec_win_floats(c, d->S) * sizeof(float), st));
    cudaCheck(cudaMemsetAsync(d->step, 0, sizeof(int), st));
    d->parity = 0;
}

/*
 * Prefill sequence s with tokens[0..T): the parallel chunked forward for B = 1 (the trainer's kernels), leaving
 * sequence s's SSM states and conv windows as T recurrent steps would, and its last-position logits in row s of
 * d->logits. Only the last position goes through the final norm and the LM head.
 */
static void decoder_prefill(Decoder* d, GPUModel* m, int s, const int* tokens, int T) {
    const Mamba2Config* c = &m->config;
    cudaStream_t st = m->stream;
    if (T < 1) die("prefill: empty prompt (give at least one token)");
    if (T > d->Tmax) die("prefill: prompt of %d tokens, the decoder was made for at most %d", T, d->Tmax);
    if (s < 0 || s >= d->S) die("prefill: sequence %d outside the batch of %d", s, d->S);
    for (int i = 0; i < T; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            die("prompt token %d at position %d is outside the model's vocabulary [0, %d)", tokens[i], i,
                c->vocab_size);
    int D = c->d_model, E = c->d_inner, H = c->nheads, P = c->headdim, N = c->d_state, GN = c->ngroups * N;
    int Cd = c->conv_dim, Z = c->d_in_proj, S = d->S;
    size_t K1 = dec_K1(c);
    cudaCheck(cudaMemcpyAsync(d->pf_tokens, tokens, T * sizeof(int), cudaMemcpyHostToDevice, st));
    encoder_forward(d->pf_x, d->pf_tokens, PX(m, P_WTE, 0), T, D, st);
    for (int l = 0; l < c->n_layer; l++) {
        rmsnorm_forward(d->pf_u, d->pf_rstd, d->pf_x, l > 0 ? d->pf_delta : NULL, PF(m, P_NORM_W, l), T, D, st);
        matmul_forward(d->pf_zx, d->pf_u, PX(m, P_IN_PROJ_W, l), T, D, Z, st);
        conv1d_forward(d->pf_xbc, d->pf_zx + E, Z, PF(m, P_CONV_W, l), PF(m, P_CONV_B, l), 1, T, Cd, c->d_conv, st);
        size_t slot = (((size_t)l * S + s) * H) * P * N, hpn = (size_t)H * P * N;
        float* final_state = d->state_lowp ? d->pf_state : (float*)d->state + slot;
        ssd_forward(d->pf_y, final_state, d->pf_saved, d->pf_xbc, Cd, d->pf_zx + 2 * E + 2 * GN, Z,
                    PF(m, P_DT_BIAS, l), PF(m, P_A_LOG, l), PF(m, P_D, l), NULL, NULL, 1, T, H, P, N, c->ngroups,
                    c->chunk_size, st);
        if (d->state_lowp) state_to_lowp((floatX*)d->state + slot, d->pf_state, hpn, st);
        float* win = d->win[d->parity] + ((size_t)l * S + s) * K1 * Cd;
        conv_window_from_prefill(win, d->pf_zx + E, Z, T, c->d_conv, Cd, st);
        gated_norm_forward(d->pf_gn, d->pf_gn_rstd, d->pf_y, d->pf_zx, Z, PF(m, P_GNORM_W, l), T, E, c->ngroups, st);
        matmul_forward(d->pf_delta, d->pf_gn, PX(m, P_OUT_PROJ_W, l), T, E, D, st);
    }
    size_t last = (size_t)(T - 1) * D;
    rmsnorm_forward(d->pf_u, d->pf_rstd, d->pf_x + last, d->pf_delta + last, PF(m, P_NORM_F_W, 0), 1, D, st);
    matmul_forward(d->logits + (size_t)s * c->padded_vocab_size, d->pf_u, PX(m, P_WTE, 0), 1, D,
                   c->padded_vocab_size, st);
}

/* enqueue one decode step reading window buffer `parity` (plain launches; also what the graphs capture) */
static void decoder_enqueue_step(Decoder* d, GPUModel* m, int parity, int with_argmax) {
    const Mamba2Config* c = &m->config;
    cudaStream_t st = m->stream;
    int S = d->S, D = c->d_model, E = c->d_inner, H = c->nheads, P = c->headdim, N = c->d_state, Z = c->d_in_proj;
    int Cd = c->conv_dim, Vp = c->padded_vocab_size;
    size_t K1 = dec_K1(c), win_layer = (size_t)S * K1 * Cd, state_layer = (size_t)S * H * P * N;
    decode_embed(d->x, d->step, d->persist ? d->bar : NULL, d->tokens, PX(m, P_WTE, 0), S, D, st);
    if (d->persist) cudaCheck(decoder_persist_launch(d, m, decoder_pargs(d, m, parity), st));
    for (int l = 0; l < c->n_layer && !d->persist; l++) {
        const float* win_in = d->win[parity] + l * win_layer;
        float* win_out = d->win[parity ^ 1] + l * win_layer;
        if (d->small) {
            rmsnorm_matvec(d->zxbcdt, Z, d->x, PF(m, P_NORM_W, l), PX(m, P_IN_PROJ_W, l), S, D, Z, NULL, NULL, 0,
                           st);
        } else if (d->mma) {
            gen_rmsnorm(d->u, d->x, PF(m, P_NORM_W, l), S, D, st);
            gen_mma(d->zxbcdt, Z, NULL, d->u, PX(m, P_IN_PROJ_W, l), S, D, Z, st);
        } else {
            rmsnorm_forward(d->u, d->rstd, d->x, l > 0 ? d->delta : NULL, PF(m, P_NORM_W, l), S, D, st);
            matmul_forward(d->zxbcdt, d->u, PX(m, P_IN_PROJ_W, l), S, D, Z, st);
        }
        floatX* xbc = d->small ? NULL : d->xbc;
        if (d->state_lowp)
            conv_ssd_step(d->y, (floatX*)d->state + l * state_layer, win_out, win_in, d->zxbcdt, Z, xbc,
                          PF(m, P_CONV_W, l), PF(m, P_CONV_B, l), PF(m, P_DT_BIAS, l), PF(m, P_A_LOG, l), PF(m, P_D, l),
                          S, H, P, N, c->ngroups, c->d_conv, st);
        else
            conv_ssd_step(d->y, (float*)d->state + l * state_layer, win_out, win_in, d->zxbcdt, Z, xbc,
                          PF(m, P_CONV_W, l), PF(m, P_CONV_B, l), PF(m, P_DT_BIAS, l), PF(m, P_A_LOG, l), PF(m, P_D, l),
                          S, H, P, N, c->ngroups, c->d_conv, st);
        if (d->small) {
            gated_matvec(d->x, d->y, d->zxbcdt, Z, PF(m, P_GNORM_W, l), PX(m, P_OUT_PROJ_W, l), S, E, c->ngroups, D,
                         st);
        } else if (d->mma) { /* out_proj adds into the residual stream x itself */
            gen_gated_norm(d->gn, d->y, d->zxbcdt, Z, PF(m, P_GNORM_W, l), S, E, c->ngroups, st);
            gen_mma(NULL, D, d->x, d->gn, PX(m, P_OUT_PROJ_W, l), S, E, D, st);
        } else {
            gated_norm_forward(d->gn, d->gn_rstd, d->y, d->zxbcdt, Z, PF(m, P_GNORM_W, l), S, E, c->ngroups, st);
            matmul_forward(d->delta, d->gn, PX(m, P_OUT_PROJ_W, l), S, E, D, st);
        }
    }
    if (d->small) {
        /* greedy: the LM head leaves per-block picks, a small kernel picks among them */
        rmsnorm_matvec(d->logits, Vp, d->x, PF(m, P_NORM_F_W, 0), PX(m, P_WTE, 0), S, D, Vp,
                       with_argmax ? d->part_v : NULL, d->part_i, c->vocab_size, st);
        if (with_argmax) argmax_from_partials(d->tokens, d->hist, d->step, d->part_v, d->part_i, S, d->nparts, st);
    } else if (d->mma) {
        gen_rmsnorm(d->u, d->x, PF(m, P_NORM_F_W, 0), S, D, st);
        matmul_forward(d->logits, d->u, PX(m, P_WTE, 0), S, D, Vp, st);
        if (with_argmax)
            argmax_tokens_split(d->tokens, d->hist, d->step, d->logits, d->part_v, d->part_i, d->nparts, S, Vp,
                                c->vocab_size, st);
    } else {
        rmsnorm_forward(d->u, d->rstd, d->x, d->delta, PF(m, P_NORM_F_W, 0), S, D, st);
        matmul_forward(d->logits, d->u, PX(m, P_WTE, 0), S, D, Vp, st);
        if (with_argmax)
            argmax_tokens_split(d->tokens, d->hist, d->step, d->logits, d->part_v, d->part_i, d->nparts, S, Vp,
                                c->vocab_size, st);
    }
}

/* capture the step for both window parities; with_argmax: the graphs end with the greedy pick */
static void decoder_capture(Decoder* d, GPUModel* m, int with_argmax) {
    if (d->have_graph) for (int i = 0; i < 2; i++) cudaCheck(cudaGraphExecDestroy(d->graph[i]));
    /* relaxed: the launchers set kernel attributes and cuBLASLt asks for its heuristic while capturing */
    cudaStream_t st = m->stream;
    for (int p = 0; p < 2; p++) {
        cudaGraph_t g;
        cudaCheck(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed));
        decoder_enqueue_step(d, m, p, with_argmax);
        cudaCheck(cudaStreamEndCapture(st, &g));
        cudaCheck(cudaGraphInstantiate(&d->graph[p], g, 0));
        cudaCheck(cudaGraphDestroy(g));
    }
    d->have_graph = 1;
    d->graph_argmax = with_argmax;
}

/* one decode step: the tokens in d->tokens in, logits (and with the argmax, the next tokens) out */
static void decoder_step(Decoder* d, GPUModel* m, int use_graph, int with_argmax) {
    if (use_graph) {
        if (!d->have_graph || d->graph_argmax != with_argmax) decoder_capture(d, m, with_argmax);
        cudaCheck(cudaGraphLaunch(d->graph[d->parity], m->stream));
    } else {
        decoder_enqueue_step(d, m, d->parity, with_argmax);
    }
    d->parity ^= 1;
}

/* the (S, Vp) logits on the host as float */
static float* decoder_logits_host(Decoder* d, GPUModel* m) {
    size_t n = (size_t)d->S * m->config.padded_vocab_size;
    cudaCheck(cudaMemcpyAsync(d->logits_host_x, d->logits, n * sizeof(floatX), cudaMemcpyDeviceToHost, m->stream));
    cudaCheck(cudaStreamSynchronize(m->stream));
    for (size_t i = 0; i < n; i++) d->logits_host[i] = toF(d->logits_host_x[i]);
    return d->logits_host;
}

/* ---- -T 1: each kernel of a decode step (layer 0's sizes) timed on its own, against its bytes at 3.0 TB/s ---- */

/* enqueue component `which` of the step (layer 0); returns its name (NULL past the last) and the bytes it must move */
static const char* decoder_profile_part(Decoder* d, GPUModel* m, int which, double* bytes, int enqueue) {
    const Mamba2Config* c = &m->config;
    cudaStream_t st = m->stream;
    int S = d->S, D = c->d_model, E = c->d_inner, H = c->nheads, P = c->headdim, N = c->d_state, Z = c->d_in_proj;
    int Vp = c->padded_vocab_size, G = c->ngroups;
    double X = sizeof(floatX), st_b = (double)S * H * P * N * 2 * (d->state_lowp ? sizeof(floatX) : sizeof(float));
    const float* win_in = d->win[0];
    float* win_out = d->win[1];
    floatX* xbc = d->small ? NULL : d->xbc;
    /* the parts in step order: norm + in_proj, conv + SSD, gated norm + out_proj, final norm + LM head, argmax */
    const char* names_small[] = {"rmsnorm_matvec (in_proj)", "conv_ssd_step", "gated_matvec (out_proj)",
                                 "rmsnorm_matvec (LM head + picks)", "argmax_partials",
                                 "(conv step + ssd step, split)", "embed + persistent step (all layers)",
                                 "embed + persistent, barriers alone"};
    const char* names_mid[] = {"gen_rmsnorm", "in_proj (gen_mma / cuBLASLt)", "conv step + state step",
                               "gen_gated_norm", "out_proj (gen_mma / cuBLASLt)", "LM head (cuBLASLt)", "argmax",
                               "  (conv step alone)", "  (state step alone, v4 kernel)", "  (state step alone, v2 kernel)",
                               "  (argmax, v2: a block a sequence)"};
    int nparts = d->small ? (d->persist ? 8 : 6) : 11;
    if (which >= nparts) return NULL;
    const char* name = d->small ? names_small[which] : names_mid[which];
    if (d->small) {
        switch (which) {
        case 0: *bytes = (double)Z * D * X; break;
        case 1: case 5: *bytes = st_b; break;
        case 2: *bytes = (double)D * E * X; break;
        case 3: *bytes = (double)Vp * D * X; break;
        case 6: *bytes = c->n_layer * ((double)Z * D * X + (double)D * E * X + st_b); break;
        default: *bytes = 0;
        }
        if (!enqueue) return name;
        if (which >= 6) { /* the embedding zeroes the barrier counter */
            decode_embed(d->x, d->step, d->bar, d->tokens, PX(m, P_WTE, 0), S, D, st);
            GenPArgs a = decoder_pargs(d, m, 0);
            a.only_barriers = which == 7;
            cudaCheck(decoder_persist_launch(d, m, a, st));
            return name;
        }
        switch (which) {
        case 0:
            rmsnorm_matvec(d->zxbcdt, Z, d->x, PF(m, P_NORM_W, 0), PX(m, P_IN_PROJ_W, 0), S, D, Z, NULL, NULL, 0, st);
            break;
        case 1: break;
        case 2:
            gated_matvec(d->x, d->y, d->zxbcdt, Z, PF(m, P_GNORM_W, 0), PX(m, P_OUT_PROJ_W, 0), S, E, G, D, st);
            break;
        case 3:
            rmsnorm_matvec(d->logits, Vp, d->x, PF(m, P_NORM_F_W, 0), PX(m, P_WTE, 0), S, D, Vp, d->part_v,
                           d->part_i, c->vocab_size, st);
            break;
        case 4: argmax_from_partials(d->tokens, d->hist, d->step, d->part_v, d->part_i, S, d->nparts, st); break;
        }
    } else {
        switch (which) {
        case 1: *bytes = (double)Z * D * X; break;
        case 2: case 8: case 9: *bytes = st_b; break;
        case 4: *bytes = (double)D * E * X; break;
        case 5: *bytes = (double)Vp * D * X; break;
        case 6: case 10: *bytes = (double)S * Vp * X; break;
        default: *bytes = 0;
        }
        if (!enqueue) return name;
        switch (which) {
        case 0: gen_rmsnorm(d->u, d->x, PF(m, P_NORM_W, 0), S, D, st); break;
        case 1:
            if (d->mma) gen_mma(d->zxbcdt, Z, NULL, d->u, PX(m, P_IN_PROJ_W, 0), S, D, Z, st);
            else matmul_forward(d->zxbcdt, d->u, PX(m, P_IN_PROJ_W, 0), S, D, Z, st);
            break;
        case 3: gen_gated_norm(d->gn, d->y, d->zxbcdt, Z, PF(m, P_GNORM_W, 0), S, E, G, st); break;
        case 4:
            if (d->mma) gen_mma(NULL, D, d->x, d->gn, PX(m, P_OUT_PROJ_W, 0), S, E, D, st);
            else matmul_forward(d->delta, d->gn, PX(m, P_OUT_PROJ_W, 0), S, E, D, st);
            break;
        case 5: matmul_forward(d->logits, d->u, PX(m, P_WTE, 0), S, D, Vp, st); break;
        case 6:
            argmax_tokens_split(d->tokens, d->hist, d->step, d->logits, d->part_v, d->part_i, d->nparts, S, Vp,
                                c->vocab_size, st);
            break;
        case 10: argmax_tokens(d->tokens, d->hist, d->step, d->logits, S, Vp, c->vocab_size, st); break;
        }
    }
    if (d->small && which == 5) xbc = d->xbc; /* the large-S kernels, for comparison */
    if ((d->small && (which == 1 || which == 5)) || (!d->small && (which == 2 || (which >= 7 && which <= 9)))) {
        int parts = !d->small && which == 7 ? 1 : (!d->small && which >= 8 ? 2 : 3), saved_v = g_gen_state_v;
        if (!d->small && which >= 8) g_gen_state_v = which == 8 ? 4 : 2;
        if (d->state_lowp)
            conv_ssd_step(d->y, (floatX*)d->state, win_out, win_in, d->zxbcdt, Z, xbc, PF(m, P_CONV_W, 0),
                          PF(m, P_CONV_B, 0), PF(m, P_DT_BIAS, 0), PF(m, P_A_LOG, 0), PF(m, P_D, 0), S, H, P, N, G,
                          c->d_conv, st, parts);
        else
            conv_ssd_step(d->y, (float*)d->state, win_out, win_in, d->zxbcdt, Z, xbc, PF(m, P_CONV_W, 0),
                          PF(m, P_CONV_B, 0), PF(m, P_DT_BIAS, 0), PF(m, P_A_LOG, 0), PF(m, P_D, 0), S, H, P, N, G,
                          c->d_conv, st, parts);
        g_gen_state_v = saved_v;
    }
    return name;
}

/* a graph of 20 launches of each part (without launch overlap, so each launch is whole), replayed 20 times */
static void decoder_profile(Decoder* d, GPUModel* m) {
    cudaStream_t st = m->stream;
    int saved_pdl = g_gen_pdl;
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0));
    cudaCheck(cudaEventCreate(&e1));
    fprintf(stderr, "per-kernel times, batch %d, layer 0 sizes (graph of 20 launches, no overlap, median of 5):\n",
            d->S);
    for (int pdl = 0; pdl < 2; pdl++) {
        g_gen_pdl = pdl;
        double total = 0;
        for (int which = 0;; which++) {
            double bytes = 0;
            const char* name = decoder_profile_part(d, m, which, &bytes, 0);
            if (name == NULL) break;
            cudaGraph_t g;
            cudaGraphExec_t ge;
            cudaCheck(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed));
            for (int r = 0; r < 20; r++) decoder_profile_part(d, m, which, &bytes, 1);
            cudaCheck(cudaStreamEndCapture(st, &g));
            cudaCheck(cudaGraphInstantiate(&ge, g, 0));
            std::vector<float> t;
            for (int rep = 0; rep < 6; rep++) {
                cudaCheck(cudaEventRecord(e0, st));
                cudaCheck(cudaGraphLaunch(ge, st));
                cudaCheck(cudaEventRecord(e1, st));
                cudaCheck(cudaEventSynchronize(e1));
                float ms;
                cudaCheck(cudaEventElapsedTime(&ms, e0, e1));
                if (rep > 0) t.push_back(ms * 1000.f / 20);
            }
            std::sort(t.begin(), t.end());
            if (name[0] != ' ') total += t[t.size() / 2]; /* "  (...)": alternatives, for comparison */
            if (pdl == 0)
                fprintf(stderr, "  %-36s %8.2f us   floor %7.2f us (%.2f MB at 3.0 TB/s)\n", name, t[t.size() / 2],
                        bytes / 3.0e6, bytes / 1e6);
            cudaCheck(cudaGraphExecDestroy(ge));
            cudaCheck(cudaGraphDestroy(g));
        }
        fprintf(stderr, "  sum of one of each, launch overlap %s (back-to-back repeats of a kernel): %.2f us\n",
                pdl ? "on" : "off", total);
    }
    g_gen_pdl = saved_pdl;
    cudaCheck(cudaEventDestroy(e0));
    cudaCheck(cudaEventDestroy(e1));
}

/* ---- one generation run over the batch ---- */

typedef struct {
    float temperature, top_p;
    int top_k, max_new, eot, use_graph;
    unsigned long long seed;
} GenOptions;

typedef struct {
    double prefill_s;  /* all prompts, to the first token's logits */
    double decode_s;   /* decode steps after the first token */
    int steps;         /* decode steps timed */
} GenTiming;

/*
 * Prefill every prompt, then decode up to o->max_new tokens per sequence. out[s] receives sequence s's tokens,
 * n_out[s] how many (stopping before its end-of-text token). Greedy runs on the GPU; sampling on the host.
 */
static GenTiming generate_batch(Decoder* d, GPUModel* m, int* const* prompts, const int* lens, const GenOptions* o,
                                int** out, int* n_out) {
    const Mamba2Config* c = &m->config;
    cudaStream_t st = m->stream;
    int S = d->S, V = c->vocab_size, greedy = o->temperature <= 0;
    GenTiming tm = {0, 0, 0};
    if (o->max_new > d->max_steps) die("generate: %d new tokens, the decoder holds %d", o->max_new, d->max_steps);
    for (int s = 0; s < S; s++) n_out[s] = 0;
    if (o->max_new == 0) return tm;
    std::vector<int> done(S, 0), host_tokens(S);
    std::vector<Rng> rngs(S);
    for (int s = 0; s < S; s++) rng_seed(&rngs[s], o->seed + (unsigned long long)s);
    std::vector<ProbIndex> scratch(V);
    cudaCheck(cudaStreamSynchronize(st));
    double t0 = now_seconds();
    decoder_reset(d, m);
    for (int s = 0; s < S; s++) decoder_prefill(d, m, s, prompts[s], lens[s]);
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0));
    cudaCheck(cudaEventCreate(&e1));
    if (greedy) {
        /* the first token from the prefill logits, then steps 1..max_new-1, all on the device */
        argmax_tokens(d->tokens, d->hist, d->step, d->logits, S, c->padded_vocab_size, V, st);
        cudaCheck(cudaStreamSynchronize(st));
        tm.prefill_s = now_seconds() - t0;
        if (o->use_graph && !d->have_graph) {
            decoder_capture(d, m, 1); /* before the timing: capture is a one-time cost */
        }
        int checked = 0; /* history rows already copied to the host */
        std::vector<int> rows;
        cudaCheck(cudaEventRecord(e0, st));
        for (int i = 1;; i++) {
            int finished = i == o->max_new;
            if (!finished) decoder_step(d, m, o->use_graph, 1); /* writes history row i */
            if (!finished && !(o->eot >= 0 && i % GEN_CHECK_EVERY == 0)) continue;
            if (finished) cudaCheck(cudaEventRecord(e1, st));
            int avail = finished ? o->max_new : i + 1, nrow = avail - checked;
            rows.resize((size_t)nrow * S);
            cudaCheck(cudaMemcpyAsync(rows.data(), d->hist + (size_t)checked * S, rows.size() * sizeof(int),
                                      cudaMemcpyDeviceToHost, st));
            cudaCheck(cudaStreamSynchronize(st));
            for (int k = 0; k < nrow; k++) {
                for (int s = 0; s < S; s++) {
                    if (done[s]) continue;
                    int tok = rows[(size_t)k * S + s];
                    if (tok == o->eot) done[s] = 1;
                    else out[s][n_out[s]++] = tok;
                }
            }
            checked = avail;
            int all_done = 1;
            for (int s = 0; s < S; s++) all_done &= done[s];
            if (finished) { tm.steps = o->max_new - 1; break; }
            if (all_done) { cudaCheck(cudaEventRecord(e1, st)); tm.steps = i; break; }
        }
        cudaCheck(cudaEventSynchronize(e1));
        float ms = 0;
        cudaCheck(cudaEventElapsedTime(&ms, e0, e1));
        tm.decode_s = ms / 1000.0;
    } else {
        float* logits = decoder_logits_host(d, m);
        tm.prefill_s = now_seconds() - t0;
        double t1 = now_seconds();
        for (int i = 0; i < o->max_new; i++) {
            int all_done = 1;
            for (int s = 0; s < S; s++) {
                int tok = sample_logits(logits + (size_t)s * c->padded_vocab_size, V, o->temperature, o->top_k,
                                     o->top_p, &rngs[s], scratch.data());
                host_tokens[s] = tok;
                if (done[s]) continue;
                if (tok == o->eot) done[s] = 1;
                else out[s][n_out[s]++] = tok;
                all_done &= done[s];
            }
            if (all_done || i + 1 == o->max_new) break;
            cudaCheck(cudaMemcpyAsync(d->tokens, host_tokens.data(), S * sizeof(int), cudaMemcpyHostToDevice, st));
            decoder_step(d, m, o->use_graph, 0);
            logits = decoder_logits_host(d, m);
            tm.steps++;
        }
        tm.decode_s = now_seconds() - t1;
    }
    cudaCheck(cudaEventDestroy(e0));
    cudaCheck(cudaEventDestroy(e1));
    return tm;
}

} /* namespace decode_lab */

#endif
