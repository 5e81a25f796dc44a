/*
 * decoder.cuh: the batched generator on the GPU (generate_mamba2.cu; test_generate.cu checks it).
 *
 * - Prefill: each prompt goes through the CHUNKED parallel forward on its own (B = 1, T = its length), so prompts of
 *   different lengths need no padding and each sequence's state is exactly its own. ssd_forward's final_state gives
 *   the SSM state after the last prompt token and the last K-1 conv inputs give the conv window, per layer; they are
 *   written into that sequence's slot of the batched decode state.
 * - Decode: one token for every sequence at once (the kernels: llmc/decode.cuh). Up to GEN_SMALL_S sequences a layer
 *   is three launches (RMSNorm + in_proj matvec, conv + SSD step, gated norm + out_proj + residual); more sequences
 *   six: RMSNorm, in_proj, conv step, SSD step, gated norm, out_proj adding into the residual, the projections on
 *   tensor cores up to GEN_MMA_AUTO_MAX_S sequences in bf16 builds, else cuBLASLt (fp32 builds, more sequences);
 *   greedy picks by a split argmax (S x nsplit blocks, then their partials). Each kernel may start while the one
 *   before it finishes (programmatic dependent launch, DecoderOptions.overlap). From GEN_LOWP_MIN_S sequences on the
 *   SSM state is kept in bf16 (DecoderOptions.state_mode), the step's largest traffic. The whole step (embedding,
 *   every layer, final norm, LM head and, for greedy decoding, the argmax) is captured once in a CUDA graph and
 *   replayed each token. The conv window is double-buffered, so there are two graphs, one per buffer parity,
 *   replayed in turn.
 * - Greedy decoding never leaves the GPU: the argmax feeds the next step and records the token history on the
 *   device; the host looks at it every GEN_CHECK_EVERY steps (end-of-text) and at the end. With a temperature the
 *   logits come to the host and are sampled there (temperature, top-k, top-p), one generator per sequence seeded
 *   with seed + sequence index, so a prompt gives the same text alone and in a batch.
 * - Hybrids (attention 'A' and MLP 'F' blocks, doc/hybrid.md): the plain path (cuBLASLt products, no fused kernels,
 *   no graph) with a KV cache per attention block next to the SSM states: the prefill writes the prompt's rotated
 *   keys and values (attention_kv_write), each step rotates the new q and k by the sequence's position, appends
 *   its key and value and attends over the cache (attention_decode), one launch pair per sequence since prompt
 *   lengths differ. The positions live on the host (kv_len), so a step is enqueued, never captured. Not yet: -D
 *   (a cache reset at a separator) for hybrids, refused.
 */
#ifndef MAMBA2_DECODER_CUH
#define MAMBA2_DECODER_CUH

#include "model.cuh"
#include "decode.cuh"
#include "infer_common.h"

#include <vector>

constexpr int GEN_CHECK_EVERY = 32; /* greedy: steps between looks at the token history (end-of-text): each look is a
                                     * copy and a host sync */

/* ---- the decoder: batched recurrent state, the prefill buffers and the captured step ---- */

typedef struct {
    int S;              /* sequences decoded together */
    int Tmax;           /* the longest prompt the prefill buffers hold */
    int max_steps;      /* token history rows */
    int small;          /* S <= GEN_SMALL_S and their rows fit shared memory (gen_small_fits): the fused matvecs */
    int mma;            /* else, bf16 builds, S <= GEN_MMA_AUTO_MAX_S: the tensor-core projections (gen_mma) */
    int overlap;        /* each decode kernel may start while the one before it finishes (DecodeStream) */
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
    int sep;            /* document separator (-D; doc/packing.md): a sequence fed this token starts from a fresh
                           state (SSM state and conv window zero); DOC_SEP_NONE (-1): none. Set before the first step */
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
    /* hybrids (attention 'A' and MLP 'F' blocks, doc/hybrid.md): the plain path (no fused kernels, no graphs) and the
       attention blocks' KV cache, (n_attn, S, Hkv, Lmax, hd) for keys and values: the rotated keys and the values of
       every position of a sequence so far. kv_len[s] (host): sequence s's cached positions = the position its next
       token takes (RoPE, the cache row) */
    int hybrid;
    int Lmax;
    floatX *k_cache, *v_cache;
    int* kv_len;
    int* pos_dev;       /* (S) the step's positions, uploaded from kv_len */
    floatX *qkv, *att, *mlp_h, *mlp_act;          /* one token per sequence */
    floatX *pf_qkv, *pf_att, *pf_mlp_h, *pf_mlp_act; /* the prefill's, Tmax rows */
    float* pf_lse;
} Decoder;

static size_t dec_K1(const Mamba2Config* c) { return c->d_conv > 1 ? (size_t)c->d_conv - 1 : 1; }
/* the SSM states and conv windows are indexed by block (a hybrid's attention and MLP blocks leave theirs unused); a
   model without Mamba-2 blocks has none */
static size_t dec_state_layers(const Mamba2Config* c) {
    return config_count_kind(c, 'M') > 0 ? (size_t)c->n_layer : 0;
}
static size_t dec_state_elems(const Mamba2Config* c, int S) {
    return dec_state_layers(c) * S * c->nheads * c->headdim * c->d_state;
}
static size_t dec_state_bytes(const Decoder* d, const Mamba2Config* c) {
    return dec_state_elems(c, d->S) * (d->state_lowp ? sizeof(floatX) : sizeof(float));
}

/* the SSM state is kept in floatX (bf16) from this many sequences on, where its bytes set the step time (float
 * below, where the weights do; H100, 130M, batch 64: 1.209 ms/step in bf16, 1.531 in fp32) */
constexpr int GEN_LOWP_MIN_S = 16;

/* what the user chooses about the decoder (generate_mamba2cu -S, -L); decoder_options_default() gives the default */
typedef struct {
    int state_mode; /* the SSM state's precision: -1 auto (floatX from GEN_LOWP_MIN_S sequences on), 0 always float,
                     * 1 always floatX (in fp32 builds floatX is float) */
    int overlap;    /* 1: launch overlap (programmatic dependent launch) where the GPU has it; 0: plain launches */
} DecoderOptions;

static DecoderOptions decoder_options_default(void) {
    DecoderOptions o = {-1, 1};
    return o;
}

static int gen_state_lowp(int S, int state_mode) {
    if (sizeof(floatX) == sizeof(float)) return 0;
    return state_mode < 0 ? S >= GEN_LOWP_MIN_S : state_mode;
}
static size_t dec_win_floats(const Mamba2Config* c, int S) { return dec_state_layers(c) * S * dec_K1(c) * c->conv_dim; }

/* the stream and launch mode of d's decode kernels */
static DecodeStream decoder_stream(const Decoder* d, const GPUModel* m) {
    DecodeStream ds = {m->stream, d->overlap};
    return ds;
}

/* a decoder for S sequences, prompts up to Tmax tokens, max_steps tokens of history; opt NULL: the defaults */
/* a hybrid's buffers: the KV cache for every position a sequence can reach (its prompt, at most Tmax, and
   max_steps + 1 more), the attention and MLP blocks' one-token and prefill scratch */
static void decoder_alloc_hybrid(Decoder* d, const Mamba2Config* c, size_t* total) {
    size_t X = sizeof(floatX), S = (size_t)d->S, T = (size_t)d->Tmax, nA = (size_t)config_count_kind(c, 'A');
    size_t QKV = c->attn_qkv_dim, AO = c->attn_out_dim, Hm = c->mlp_hidden;
    d->Lmax = d->Tmax + d->max_steps + 2;
    size_t cache = nA * S * c->attn_kv_heads * (size_t)d->Lmax * c->attn_head_dim;
    d->k_cache = (floatX*)gpu_alloc(cache * X, total);
    d->v_cache = (floatX*)gpu_alloc(cache * X, total);
    d->kv_len = (int*)callocCheck(S, sizeof(int));
    d->pos_dev = (int*)gpu_alloc(S * sizeof(int), total);
    d->qkv = (floatX*)gpu_alloc(S * QKV * X, total);
    d->att = (floatX*)gpu_alloc(S * AO * X, total);
    d->mlp_h = (floatX*)gpu_alloc(S * 2 * Hm * X, total);
    d->mlp_act = (floatX*)gpu_alloc(S * Hm * X, total);
    d->pf_qkv = (floatX*)gpu_alloc(T * QKV * X, total);
    d->pf_att = (floatX*)gpu_alloc(T * AO * X, total);
    d->pf_mlp_h = (floatX*)gpu_alloc(T * 2 * Hm * X, total);
    d->pf_mlp_act = (floatX*)gpu_alloc(T * Hm * X, total);
    d->pf_lse = (float*)gpu_alloc(T * c->attn_heads * sizeof(float), total);
}

/* the attention kernels' dims for `B` sequences of `T` positions */
static AttnDims dec_attn_dims(const Mamba2Config* c, int B, int T) {
    AttnDims a;
    a.B = B; a.T = T;
    a.Hq = c->attn_heads; a.Hkv = c->attn_kv_heads; a.hd = c->attn_head_dim;
    a.qkv_stride = c->attn_qkv_dim;
    a.scale = (float)(1.0 / sqrt((double)c->attn_head_dim));
    a.seq_idx = NULL;
    return a;
}
/* sequence s's part of attention block l's cache (keys or values), (Hkv, Lmax, hd) */
static floatX* dec_cache_at(const Decoder* d, const Mamba2Config* c, floatX* cache, int l, int s) {
    size_t per_seq = (size_t)c->attn_kv_heads * d->Lmax * c->attn_head_dim;
    return cache + ((size_t)config_block_slot(c, l) * d->S + s) * per_seq;
}

static void decoder_create(Decoder* d, const GPUModel* m, int S, int Tmax, int max_steps, const DecoderOptions* opt) {
    DecoderOptions o = opt != NULL ? *opt : decoder_options_default();
    const Mamba2Config* c = &m->config;
    memset(d, 0, sizeof(*d));
    if (S < 1) die("decoder: need at least one sequence");
    if (Tmax < 1) Tmax = 1;
    d->S = S; d->Tmax = Tmax; d->max_steps = max_steps;
    d->sep = DOC_SEP_NONE;
    d->hybrid = config_is_hybrid(c);
    d->small = !d->hybrid && S <= GEN_SMALL_S && gen_small_fits(S, c->d_model, c->d_inner);
    d->mma = !d->hybrid && gen_mma_path_ok(S, c->d_model, c->d_inner);
    size_t X = sizeof(floatX), F = sizeof(float), D = c->d_model, E = c->d_inner, Vp = c->padded_vocab_size;
    size_t total = 0, T = (size_t)Tmax;
    d->overlap = o.overlap && gen_pdl_capable();
    d->state_lowp = gen_state_lowp(S, o.state_mode);
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
    if (d->hybrid) decoder_alloc_hybrid(d, c, &total);
    d->bytes = total;
    d->logits_host = (float*)mallocCheck(S * Vp * F);
    d->logits_host_x = (floatX*)mallocCheck(S * Vp * X);
}

static void decoder_free(Decoder* d) {
    for (int i = 0; i < 2; i++) if (d->have_graph) cudaCheck(cudaGraphExecDestroy(d->graph[i]));
    void* ptrs[] = {d->state, d->win[0], d->win[1], d->x, d->u, d->zxbcdt, d->xbc, d->y, d->gn, d->delta, d->logits,
                    d->rstd, d->gn_rstd, d->tokens, d->hist, d->step, d->pf_x, d->pf_u, d->pf_zx, d->pf_xbc,
                    d->pf_y, d->pf_gn, d->pf_delta, d->pf_rstd, d->pf_gn_rstd, d->pf_saved, d->pf_tokens,
                    d->pf_state, d->part_v, d->part_i, d->k_cache, d->v_cache, d->pos_dev, d->qkv, d->att,
                    d->mlp_h, d->mlp_act, d->pf_qkv, d->pf_att, d->pf_mlp_h, d->pf_mlp_act, d->pf_lse};
    for (size_t i = 0; i < sizeof(ptrs) / sizeof(ptrs[0]); i++) cudaCheck(cudaFree(ptrs[i]));
    free(d->kv_len);
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
    if (d->hybrid) memset(d->kv_len, 0, (size_t)d->S * sizeof(int));
}

/*
 * A hybrid's attention or MLP block l over the prefill's T positions of sequence s (the trainer's kernels, B = 1):
 * from pf_x (+ pf_delta, the previous block's output) to pf_delta. The attention block also writes the rotated keys
 * and the values of the T positions into sequence s's KV cache, rows 0..T-1.
 */
static void decoder_prefill_block(Decoder* d, GPUModel* m, int s, int l, int T) {
    const Mamba2Config* c = &m->config;
    cudaStream_t st = m->stream;
    int D = c->d_model, QKV = c->attn_qkv_dim, AO = c->attn_out_dim, Hm = c->mlp_hidden;
    rmsnorm_forward(d->pf_u, d->pf_rstd, d->pf_x, l > 0 ? d->pf_delta : NULL, PF(m, P_NORM_W, l), T, D, st);
    if (config_block_kind(c, l) == 'A') {
        matmul_forward(d->pf_qkv, d->pf_u, PX(m, P_ATTN_IN_W, l), T, D, QKV, st);
        if (c->qkv_bias) bias_forward(d->pf_qkv, PF(m, P_ATTN_IN_B, l), T, QKV, st);
        AttnDims a = dec_attn_dims(c, 1, T);
        attention_rope_forward(d->pf_qkv, &a, c->rotary_dim, (float)c->rotary_base, NULL, st);
        attention_forward(d->pf_att, d->pf_lse, d->pf_qkv, &a, st);
        attention_kv_write(dec_cache_at(d, c, d->k_cache, l, s), dec_cache_at(d, c, d->v_cache, l, s), d->pf_qkv, &a,
                           d->Lmax, 0, st);
        matmul_forward(d->pf_delta, d->pf_att, PX(m, P_ATTN_OUT_W, l), T, AO, D, st);
        if (c->out_bias) bias_forward(d->pf_delta, PF(m, P_ATTN_OUT_B, l), T, D, st);
    } else {
        matmul_forward(d->pf_mlp_h, d->pf_u, PX(m, P_MLP_FC1_W, l), T, D, 2 * Hm, st);
        swiglu_forward(d->pf_mlp_act, d->pf_mlp_h, T, Hm, st);
        matmul_forward(d->pf_delta, d->pf_mlp_act, PX(m, P_MLP_FC2_W, l), T, Hm, D, st);
    }
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
        if (config_block_kind(c, l) != 'M') { /* a hybrid's attention or MLP block */
            decoder_prefill_block(d, m, s, l, T);
            continue;
        }
        rmsnorm_forward(d->pf_u, d->pf_rstd, d->pf_x, l > 0 ? d->pf_delta : NULL, PF(m, P_NORM_W, l), T, D, st);
        matmul_forward(d->pf_zx, d->pf_u, PX(m, P_IN_PROJ_W, l), T, D, Z, st);
        conv1d_forward(d->pf_xbc, d->pf_zx + E, Z, PF(m, P_CONV_W, l), PF(m, P_CONV_B, l), 1, T, Cd, c->d_conv, st);
        size_t slot = (((size_t)l * S + s) * H) * P * N, hpn = (size_t)H * P * N;
        float* final_state = d->state_lowp ? d->pf_state : (float*)d->state + slot;
        ssd_forward(d->pf_y, final_state, d->pf_saved, d->pf_xbc, Cd, d->pf_zx + 2 * E + 2 * GN, Z,
                    PF(m, P_DT_BIAS, l), PF(m, P_A_LOG, l), PF(m, P_D, l), NULL, NULL, 1, T, H, P, N, c->ngroups,
                    c->chunk_size, st);
        if (d->state_lowp) cast_to_floatX((floatX*)d->state + slot, d->pf_state, hpn, st);
        float* win = d->win[d->parity] + ((size_t)l * S + s) * K1 * Cd;
        conv_window_from_prefill(win, d->pf_zx + E, Z, T, c->d_conv, Cd, st);
        gated_norm_forward(d->pf_gn, d->pf_gn_rstd, d->pf_y, d->pf_zx, Z, PF(m, P_GNORM_W, l), T, E, c->ngroups, st);
        matmul_forward(d->pf_delta, d->pf_gn, PX(m, P_OUT_PROJ_W, l), T, E, D, st);
    }
    size_t last = (size_t)(T - 1) * D;
    rmsnorm_forward(d->pf_u, d->pf_rstd, d->pf_x + last, d->pf_delta + last, PF(m, P_NORM_F_W, 0), 1, D, st);
    matmul_forward(d->logits + (size_t)s * c->padded_vocab_size, d->pf_u, PX(m, P_WTE, 0), 1, D,
                   c->padded_vocab_size, st);
    if (d->hybrid) d->kv_len[s] = T;
}

/*
 * A hybrid's attention or MLP block l for one token of every sequence (the plain path: cuBLASLt products, d->delta
 * carries each block's output to the next norm). Attention: q and k rotated by each sequence's position kv_len[s]
 * (d->pos_dev), the new key and value written at that row of the sequence's cache, then the token attends over rows
 * 0..kv_len[s]; one launch pair per sequence, since the sequences' lengths differ.
 */
static void decoder_step_block(Decoder* d, GPUModel* m, int l) {
    const Mamba2Config* c = &m->config;
    cudaStream_t st = m->stream;
    int S = d->S, D = c->d_model, QKV = c->attn_qkv_dim, AO = c->attn_out_dim, Hm = c->mlp_hidden;
    rmsnorm_forward(d->u, d->rstd, d->x, l > 0 ? d->delta : NULL, PF(m, P_NORM_W, l), S, D, st);
    if (config_block_kind(c, l) == 'A') {
        matmul_forward(d->qkv, d->u, PX(m, P_ATTN_IN_W, l), S, D, QKV, st);
        if (c->qkv_bias) bias_forward(d->qkv, PF(m, P_ATTN_IN_B, l), S, QKV, st);
        AttnDims all = dec_attn_dims(c, S, 1), one = dec_attn_dims(c, 1, 1);
        attention_rope_forward(d->qkv, &all, c->rotary_dim, (float)c->rotary_base, d->pos_dev, st);
        for (int s = 0; s < S; s++) {
            floatX* kc = dec_cache_at(d, c, d->k_cache, l, s);
            floatX* vc = dec_cache_at(d, c, d->v_cache, l, s);
            const floatX* q = d->qkv + (size_t)s * QKV;
            attention_kv_write(kc, vc, q, &one, d->Lmax, d->kv_len[s], st);
            attention_decode(d->att + (size_t)s * AO, q, kc, vc, &one, d->Lmax, d->kv_len[s] + 1, st);
        }
        matmul_forward(d->delta, d->att, PX(m, P_ATTN_OUT_W, l), S, AO, D, st);
        if (c->out_bias) bias_forward(d->delta, PF(m, P_ATTN_OUT_B, l), S, D, st);
    } else {
        matmul_forward(d->mlp_h, d->u, PX(m, P_MLP_FC1_W, l), S, D, 2 * Hm, st);
        swiglu_forward(d->mlp_act, d->mlp_h, S, Hm, st);
        matmul_forward(d->delta, d->mlp_act, PX(m, P_MLP_FC2_W, l), S, Hm, D, st);
    }
}

/* -D: each sequence whose input token this step is the separator starts a new document: its SSM state and the conv
 * window the step reads are zeroed first, as the CPU's inference_state_reset before the separator is fed. One block
 * per (layer, sequence); the others return at once. */
template <typename TS>
__global__ static void decode_reset_at_sep_kernel(TS* state, float* win, const int* tokens, int sep, int S,
                                                  size_t state_len, size_t win_len) {
    int s = blockIdx.x % S;
    if (tokens[s] != sep) return;
    size_t ls = blockIdx.x; /* = l * S + s */
    for (size_t i = threadIdx.x; i < state_len; i += blockDim.x) state[ls * state_len + i] = (TS)0.f;
    for (size_t i = threadIdx.x; i < win_len; i += blockDim.x) win[ls * win_len + i] = 0.f;
}

static void decode_reset_at_sep(Decoder* d, GPUModel* m, int parity) {
    const Mamba2Config* c = &m->config;
    size_t hpn = (size_t)c->nheads * c->headdim * c->d_state, wl = dec_K1(c) * c->conv_dim;
    unsigned grid = (unsigned)(c->n_layer * d->S);
    if (d->state_lowp)
        decode_reset_at_sep_kernel<floatX><<<grid, 256, 0, m->stream>>>((floatX*)d->state, d->win[parity], d->tokens,
                                                                         d->sep, d->S, hpn, wl);
    else
        decode_reset_at_sep_kernel<float><<<grid, 256, 0, m->stream>>>((float*)d->state, d->win[parity], d->tokens,
                                                                        d->sep, d->S, hpn, wl);
    cudaCheckLast();
}

/* enqueue one decode step reading window buffer `parity` (plain launches; also what the graphs capture) */
static void decoder_enqueue_step(Decoder* d, GPUModel* m, int parity, int with_argmax) {
    const Mamba2Config* c = &m->config;
    cudaStream_t st = m->stream;
    int S = d->S, D = c->d_model, E = c->d_inner, H = c->nheads, P = c->headdim, N = c->d_state, Z = c->d_in_proj;
    int Cd = c->conv_dim, Vp = c->padded_vocab_size;
    size_t K1 = dec_K1(c), win_layer = (size_t)S * K1 * Cd, state_layer = (size_t)S * H * P * N;
    DecodeStream ds = decoder_stream(d, m);
    if (d->hybrid && d->sep != DOC_SEP_NONE)
        die("GPU generation of a hybrid model with document boundaries (-D) is not built yet (the KV cache reset at "
            "a separator): generate with the CPU program ./generate_mamba2, or without -D");
    if (d->sep != DOC_SEP_NONE) decode_reset_at_sep(d, m, parity);
    if (d->hybrid) /* each sequence's position: RoPE and its cache row (pageable: copied before the call returns) */
        cudaCheck(cudaMemcpyAsync(d->pos_dev, d->kv_len, (size_t)S * sizeof(int), cudaMemcpyHostToDevice, st));
    decode_embed(d->x, d->step, d->tokens, PX(m, P_WTE, 0), S, D, st);
    for (int l = 0; l < c->n_layer; l++) {
        if (config_block_kind(c, l) != 'M') { /* a hybrid's attention or MLP block */
            decoder_step_block(d, m, l);
            continue;
        }
        const float* win_in = d->win[parity] + l * win_layer;
        float* win_out = d->win[parity ^ 1] + l * win_layer;
        if (d->small) {
            rmsnorm_matvec(d->zxbcdt, Z, d->x, PF(m, P_NORM_W, l), PX(m, P_IN_PROJ_W, l), S, D, Z, NULL, NULL, 0,
                           ds);
        } else if (d->mma) {
            gen_rmsnorm(d->u, d->x, PF(m, P_NORM_W, l), S, D, ds);
            gen_mma(d->zxbcdt, Z, NULL, d->u, PX(m, P_IN_PROJ_W, l), S, D, Z, ds);
        } else {
            rmsnorm_forward(d->u, d->rstd, d->x, l > 0 ? d->delta : NULL, PF(m, P_NORM_W, l), S, D, st);
            matmul_forward(d->zxbcdt, d->u, PX(m, P_IN_PROJ_W, l), S, D, Z, st);
        }
        floatX* xbc = d->small ? NULL : d->xbc;
        if (d->state_lowp)
            conv_ssd_step(d->y, (floatX*)d->state + l * state_layer, win_out, win_in, d->zxbcdt, Z, xbc,
                          PF(m, P_CONV_W, l), PF(m, P_CONV_B, l), PF(m, P_DT_BIAS, l), PF(m, P_A_LOG, l), PF(m, P_D, l),
                          S, H, P, N, c->ngroups, c->d_conv, ds);
        else
            conv_ssd_step(d->y, (float*)d->state + l * state_layer, win_out, win_in, d->zxbcdt, Z, xbc,
                          PF(m, P_CONV_W, l), PF(m, P_CONV_B, l), PF(m, P_DT_BIAS, l), PF(m, P_A_LOG, l), PF(m, P_D, l),
                          S, H, P, N, c->ngroups, c->d_conv, ds);
        if (d->small) {
            gated_matvec(d->x, d->y, d->zxbcdt, Z, PF(m, P_GNORM_W, l), PX(m, P_OUT_PROJ_W, l), S, E, c->ngroups, D,
                         ds);
        } else if (d->mma) { /* out_proj adds into the residual stream x itself */
            gen_gated_norm(d->gn, d->y, d->zxbcdt, Z, PF(m, P_GNORM_W, l), S, E, c->ngroups, ds);
            gen_mma(NULL, D, d->x, d->gn, PX(m, P_OUT_PROJ_W, l), S, E, D, ds);
        } else {
            gated_norm_forward(d->gn, d->gn_rstd, d->y, d->zxbcdt, Z, PF(m, P_GNORM_W, l), S, E, c->ngroups, st);
            matmul_forward(d->delta, d->gn, PX(m, P_OUT_PROJ_W, l), S, E, D, st);
        }
    }
    if (d->small) {
        /* greedy: the LM head leaves per-block picks, a small kernel picks among them */
        rmsnorm_matvec(d->logits, Vp, d->x, PF(m, P_NORM_F_W, 0), PX(m, P_WTE, 0), S, D, Vp,
                       with_argmax ? d->part_v : NULL, d->part_i, c->vocab_size, ds);
        if (with_argmax) argmax_from_partials(d->tokens, d->hist, d->step, d->part_v, d->part_i, S, d->nparts, ds);
    } else if (d->mma) {
        gen_rmsnorm(d->u, d->x, PF(m, P_NORM_F_W, 0), S, D, ds);
        matmul_forward(d->logits, d->u, PX(m, P_WTE, 0), S, D, Vp, st);
        if (with_argmax)
            argmax_tokens_split(d->tokens, d->hist, d->step, d->logits, d->part_v, d->part_i, d->nparts, S, Vp,
                                c->vocab_size, ds);
    } else {
        rmsnorm_forward(d->u, d->rstd, d->x, d->delta, PF(m, P_NORM_F_W, 0), S, D, st);
        matmul_forward(d->logits, d->u, PX(m, P_WTE, 0), S, D, Vp, st);
        if (with_argmax)
            argmax_tokens_split(d->tokens, d->hist, d->step, d->logits, d->part_v, d->part_i, d->nparts, S, Vp,
                                c->vocab_size, ds);
    }
}

/* capture the step for both window parities; with_argmax: the graphs end with the greedy pick */
static void decoder_capture(Decoder* d, GPUModel* m, int with_argmax) {
    if (d->hybrid) return; /* no graph: each step's cache lengths are the host's (decoder_step runs it plainly) */
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
    if (d->hybrid) use_graph = 0;
    if (use_graph) {
        if (!d->have_graph || d->graph_argmax != with_argmax) decoder_capture(d, m, with_argmax);
        cudaCheck(cudaGraphLaunch(d->graph[d->parity], m->stream));
    } else {
        decoder_enqueue_step(d, m, d->parity, with_argmax);
    }
    d->parity ^= 1;
    if (d->hybrid) /* every sequence's cache took one position */
        for (int s = 0; s < d->S; s++) d->kv_len[s]++;
}

/* the (S, Vp) logits on the host as float */
static float* decoder_logits_host(Decoder* d, GPUModel* m) {
    size_t n = (size_t)d->S * m->config.padded_vocab_size;
    cudaCheck(cudaMemcpyAsync(d->logits_host_x, d->logits, n * sizeof(floatX), cudaMemcpyDeviceToHost, m->stream));
    cudaCheck(cudaStreamSynchronize(m->stream));
    for (size_t i = 0; i < n; i++) d->logits_host[i] = toF(d->logits_host_x[i]);
    return d->logits_host;
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
        argmax_tokens(d->tokens, d->hist, d->step, d->logits, S, c->padded_vocab_size, V, decoder_stream(d, m));
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

#endif
