/*
 * mamba2_model.h: the ONE description of a Mamba-2 language model, shared by the CPU and the GPU trainer.
 *
 *   Mamba2Config    the hyper-parameters (SPEC.md section 1) and the dimensions derived from them
 *   param table     one entry per parameter tensor: name, shape, weight decay or not, how to initialize it, and its
 *                   name in the public checkpoints (SPEC.md section 7). Allocation, pointers, initialization,
 *                   checkpoint layout and the no-weight-decay groups are all driven by this table.
 *   checkpoints     the file format both trainers read and write: header (magic, version, full config), the
 *                   training state (step, RNG, data-loader position), fp32 parameters, fp32 AdamW moments.
 *
 * Per-layer tensors are stored with all layers contiguous: in_proj_w is (L, d_in_proj, D), layer l at l*d_in_proj*D.
 */
#ifndef MAMBA2_MODEL_H
#define MAMBA2_MODEL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

#include <math.h>

#include "utils.h"
#include "rand.h"

/* ----------------------------------------------------------------------------------------------------------------
 * config */

typedef struct {
    int d_model;           /* D */
    int n_layer;           /* L */
    int d_state;           /* N */
    int headdim;           /* P */
    int expand;            /* E = expand * D */
    int ngroups;           /* G: heads of a group share B and C */
    int d_conv;            /* K: causal depthwise conv width */
    int vocab_size;        /* V: real vocabulary */
    int padded_vocab_size; /* Vp: V rounded up to a multiple of 16 (embedding rows; padded logits are ignored) */
    int chunk_size;        /* Q: SSD chunk length, an algorithm choice (results do not depend on it) */
    /* derived, filled in by config_derive() */
    int d_inner;           /* E */
    int nheads;            /* H = E / P */
    int conv_dim;          /* E + 2 G N: the channels that go through the conv (x, B, C) */
    int d_in_proj;         /* 2E + 2GN + H: in_proj rows, split as z | xBC | dt */
} Mamba2Config;

#define MAMBA2_NORM_EPS 1e-5f
#define MAMBA2_VOCAB_MULTIPLE 16

/* x rounded up to a multiple of m (m >= 1), in 64 bits: no overflow for any int x; capped at INT32_MAX (a value
   config_check refuses) */
static inline int round_up(int x, int m) {
    if (m < 1) m = 1;
    long long r = ((long long)x + m - 1) / m * m;
    return r > 2147483647LL ? 2147483647 : (int)r;
}

/*
 * Explicit bounds on every config field: every size derived from a config (dimensions, parameter counts, byte
 * counts of the checkpoint) is computed from bounded values, so it fits its type. A file (checkpoint header,
 * config.json) can hold any integer; config_check refuses what is outside these before anything is derived or
 * allocated. They are far above any real Mamba-2 (the 2.7B has d_model 2560, 64 layers, vocab 50277).
 */
#define MAMBA2_MAX_D_MODEL 65536
#define MAMBA2_MAX_N_LAYER 4096
#define MAMBA2_MAX_D_STATE 4096
#define MAMBA2_MAX_HEADDIM 4096
#define MAMBA2_MAX_EXPAND 16
#define MAMBA2_MAX_NGROUPS 4096
#define MAMBA2_MAX_D_CONV 16
#define MAMBA2_MAX_VOCAB (1 << 24)
#define MAMBA2_MAX_CHUNK 65536
#define MAMBA2_MAX_PARAMS (1ULL << 38) /* 275 billion parameters: 1 TiB of fp32 weights */

/* the parameter count of a config, in 64 bits from the raw fields (all of them checked >= 1 and <= their bound
   first, so no product overflows); param_table_build's total for a valid config */
static inline unsigned long long config_param_count(const Mamba2Config* c) {
    unsigned long long D = (unsigned long long)c->d_model, L = (unsigned long long)c->n_layer;
    unsigned long long E = (unsigned long long)c->expand * D, GN = (unsigned long long)c->ngroups * c->d_state;
    unsigned long long H = E / (unsigned long long)c->headdim, K = (unsigned long long)c->d_conv;
    unsigned long long Vp = ((unsigned long long)c->vocab_size + MAMBA2_VOCAB_MULTIPLE - 1) / MAMBA2_VOCAB_MULTIPLE *
                            MAMBA2_VOCAB_MULTIPLE;
    unsigned long long conv = E + 2 * GN, inproj = 2 * E + 2 * GN + H;
    unsigned long long per_layer = D + inproj * D + conv * K + conv + 3 * H + E + D * E;
    return Vp * D + L * per_layer + D;
}

static inline void config_derive(Mamba2Config* c) {
    c->padded_vocab_size = round_up(c->vocab_size, MAMBA2_VOCAB_MULTIPLE);
    long long E = (long long)c->expand * c->d_model, GN = (long long)c->ngroups * c->d_state;
    long long H = c->headdim > 0 ? E / c->headdim : 0;
    long long conv = E + 2 * GN, inproj = 2 * E + 2 * GN + H;
    /* only a config that passed config_check is used; the casts below are exact for those */
    c->d_inner = E > 2147483647LL ? 0 : (int)E;
    c->nheads = H > 2147483647LL ? 0 : (int)H;
    c->conv_dim = conv > 2147483647LL ? 0 : (int)conv;
    c->d_in_proj = inproj > 2147483647LL ? 0 : (int)inproj;
}

/* rows of the causal conv's window in the recurrent step: the last K-1 inputs (at least one row, so K = 1 needs no
   special case in the step code) */
static inline int conv_window_len(const Mamba2Config* c) { return c->d_conv > 1 ? c->d_conv - 1 : 1; }

/* returns NULL if the config is valid, else a message saying what is wrong (in a static buffer). Any int values
   are safe to pass: each field is bounded before anything is computed from it (in 64 bits). */
static inline const char* config_check(const Mamba2Config* c) {
    static char msg[320];
    struct { const char* name; int value; int min; int max; } fields[] = {
        {"d_model", c->d_model, 1, MAMBA2_MAX_D_MODEL}, {"n_layer", c->n_layer, 1, MAMBA2_MAX_N_LAYER},
        {"d_state", c->d_state, 1, MAMBA2_MAX_D_STATE}, {"headdim", c->headdim, 1, MAMBA2_MAX_HEADDIM},
        {"expand", c->expand, 1, MAMBA2_MAX_EXPAND},    {"ngroups", c->ngroups, 1, MAMBA2_MAX_NGROUPS},
        {"d_conv", c->d_conv, 1, MAMBA2_MAX_D_CONV},    {"vocab", c->vocab_size, 2, MAMBA2_MAX_VOCAB},
        {"chunk", c->chunk_size, 1, MAMBA2_MAX_CHUNK},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (fields[i].value < fields[i].min) {
            snprintf(msg, sizeof(msg), "invalid config: %s = %d, must be >= %d", fields[i].name, fields[i].value,
                     fields[i].min);
            return msg;
        }
        if (fields[i].value > fields[i].max) {
            snprintf(msg, sizeof(msg), "invalid config: %s = %d, at most %d is supported", fields[i].name,
                     fields[i].value, fields[i].max);
            return msg;
        }
    }
    long long E = (long long)c->expand * c->d_model;
    if (E % c->headdim != 0) {
        snprintf(msg, sizeof(msg), "invalid config: expand*d_model = %lld is not divisible by headdim = %d", E,
                 c->headdim);
        return msg;
    }
    long long H = E / c->headdim;
    if (H % c->ngroups != 0) {
        snprintf(msg, sizeof(msg), "invalid config: nheads = %lld (expand*d_model/headdim) is not divisible by "
                 "ngroups = %d", H, c->ngroups);
        return msg;
    }
    unsigned long long n = config_param_count(c);
    if (n > MAMBA2_MAX_PARAMS) {
        snprintf(msg, sizeof(msg), "invalid config: %llu parameters, at most %llu are supported (a corrupt or "
                 "hand-made config?)", n, (unsigned long long)MAMBA2_MAX_PARAMS);
        return msg;
    }
    return NULL;
}

/* The paper's sizes (SPEC.md section 1) and small ones for CPU runs and tests. vocab is set by the caller. */
typedef struct { const char* name; int d_model, n_layer, d_state, headdim; } Mamba2Preset;
static const Mamba2Preset MAMBA2_PRESETS[] = {
    {"tiny", 64, 4, 16, 16},  {"small", 128, 6, 32, 32}, {"130m", 768, 24, 128, 64}, {"370m", 1024, 48, 128, 64},
    {"780m", 1536, 48, 128, 64}, {"1.3b", 2048, 48, 128, 64}, {"2.7b", 2560, 64, 128, 64},
};

static inline Mamba2Config config_default(void) {
    Mamba2Config c;
    memset(&c, 0, sizeof(c));
    c.d_model = 64; c.n_layer = 4; c.d_state = 16; c.headdim = 16; c.expand = 2; c.ngroups = 1; c.d_conv = 4;
    c.vocab_size = 257; c.chunk_size = 64;
    config_derive(&c);
    return c;
}

/*
 * Parse a model description: a preset name, or key=value pairs separated by commas, or both
 * ("130m,vocab=257", "d_model=64,n_layer=4,d_state=16,headdim=16"). Keys: d_model n_layer d_state headdim expand
 * ngroups d_conv vocab chunk. Returns 0 on success, else -1 with a message in err.
 */
static inline int config_parse(Mamba2Config* c, const char* spec, char* err, size_t errlen) {
    *c = config_default();
    char buf[512];
    if (strlen(spec) >= sizeof(buf)) { snprintf(err, errlen, "model description too long"); return -1; }
    strcpy(buf, spec);
    for (char* tok = strtok(buf, ","); tok != NULL; tok = strtok(NULL, ",")) {
        char* eq = strchr(tok, '=');
        if (eq == NULL) {
            int found = 0;
            for (size_t i = 0; i < sizeof(MAMBA2_PRESETS) / sizeof(MAMBA2_PRESETS[0]); i++) {
                if (strcmp(tok, MAMBA2_PRESETS[i].name) == 0) {
                    c->d_model = MAMBA2_PRESETS[i].d_model; c->n_layer = MAMBA2_PRESETS[i].n_layer;
                    c->d_state = MAMBA2_PRESETS[i].d_state; c->headdim = MAMBA2_PRESETS[i].headdim;
                    if (c->d_model >= 768) { c->vocab_size = 50277; c->chunk_size = 256; }
                    found = 1;
                }
            }
            if (!found) {
                snprintf(err, errlen, "unknown model preset '%s' (presets: tiny small 130m 370m 780m 1.3b 2.7b, or "
                         "key=value pairs)", tok);
                return -1;
            }
            continue;
        }
        *eq = '\0';
        const char* key = tok;
        char* end;
        long v = strtol(eq + 1, &end, 10);
        if (*end != '\0' || end == eq + 1 || v < -1000000000L || v > 1000000000L) {
            snprintf(err, errlen, "model description: '%s' needs an integer, got '%s'", key, eq + 1);
            return -1;
        }
        int* dst = NULL;
        if (!strcmp(key, "d_model")) dst = &c->d_model;
        else if (!strcmp(key, "n_layer")) dst = &c->n_layer;
        else if (!strcmp(key, "d_state")) dst = &c->d_state;
        else if (!strcmp(key, "headdim")) dst = &c->headdim;
        else if (!strcmp(key, "expand")) dst = &c->expand;
        else if (!strcmp(key, "ngroups")) dst = &c->ngroups;
        else if (!strcmp(key, "d_conv")) dst = &c->d_conv;
        else if (!strcmp(key, "vocab")) dst = &c->vocab_size;
        else if (!strcmp(key, "chunk")) dst = &c->chunk_size;
        if (dst == NULL) {
            snprintf(err, errlen, "model description: unknown key '%s' (keys: d_model n_layer d_state headdim expand "
                     "ngroups d_conv vocab chunk)", key);
            return -1;
        }
        *dst = (int)v;
    }
    const char* bad = config_check(c);
    if (bad) { snprintf(err, errlen, "%s", bad); return -1; }
    config_derive(c);
    return 0;
}

static inline void config_print(const Mamba2Config* c, FILE* f) {
    fprintf(f, "model: d_model %d, n_layer %d, d_state %d, headdim %d, expand %d, ngroups %d, d_conv %d, "
            "vocab %d (padded %d), chunk %d -> d_inner %d, nheads %d\n", c->d_model, c->n_layer, c->d_state,
            c->headdim, c->expand, c->ngroups, c->d_conv, c->vocab_size, c->padded_vocab_size, c->chunk_size,
            c->d_inner, c->nheads);
}


/*
 * Training FLOPs per token (forward + backward), for MFU: 6 x the weights every token multiplies by (in_proj, out_proj,
 * the tied LM head) plus the chunked SSD's forward FLOPs x 3. Per chunk of Q (causal Q x Q products at half):
 * C B^T per group Q*Q*N/2, its product with x per head Q*Q*P/2, chunk state Q*P*N, state output Q*P*N.
 * 130M: 0.86 GFLOP/token (ANCHORS.md). scripts/paper.py computes the same.
 */
static inline double flops_per_token(const Mamba2Config* c, int seq_len) {
    double D = c->d_model, E = c->d_inner;
    double matmul = (double)c->padded_vocab_size * D + c->n_layer * ((double)c->d_in_proj * D + D * E);
    double Q = c->chunk_size < seq_len ? c->chunk_size : seq_len;
    double G = c->ngroups, H = c->nheads, P = c->headdim, N = c->d_state;
    double macs_per_chunk = G * Q * Q * N / 2 + H * (Q * Q * P / 2 + 2 * Q * P * N);
    return 6 * matmul + 3 * 2 * macs_per_chunk / Q * c->n_layer;
}

/* ----------------------------------------------------------------------------------------------------------------
 * the parameter table */

typedef enum {
    INIT_NORMAL_002,     /* N(0, 0.02): the token embedding */
    INIT_UNIFORM_FANIN,  /* U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's Linear/Conv1d default */
    INIT_UNIFORM_OUT,    /* the same divided by sqrt(n_layer): the pre-norm residual rescale of out_proj */
    INIT_ONES,           /* norm weights, D skip */
    INIT_DT_BIAS,        /* inverse softplus of dt ~ exp(U(log 0.001, log 0.1)), clamped >= 1e-4 */
    INIT_A_LOG,          /* log(U(1, 16)) */
} InitKind;

typedef struct {
    const char* name;     /* our name; also the field of ParameterTensors at the same index */
    const char* hf_name;  /* name in the public checkpoints; per-layer names have one %d for the layer */
    int per_layer;        /* 1: one copy per layer, stored (L, rows, cols) */
    size_t rows, cols;    /* shape of one copy (cols = 1 for vectors) */
    int weight_decay;     /* 1: AdamW decays it (matrices and the embedding); 0: A_log, D, dt_bias, norms, biases */
    InitKind init;
    int fan_in;           /* for the uniform inits */
    size_t offset;        /* in elements, into the single parameter allocation */
    size_t numel;         /* total, all layers */
} ParamSpec;

enum {
    P_WTE, P_NORM_W, P_IN_PROJ_W, P_CONV_W, P_CONV_B, P_DT_BIAS, P_A_LOG, P_D, P_GNORM_W, P_OUT_PROJ_W, P_NORM_F_W,
    NUM_PARAM_TENSORS
};

/* fills the table (shapes, offsets) from the config; returns the total number of parameters */
static inline size_t param_table_build(ParamSpec t[NUM_PARAM_TENSORS], const Mamba2Config* c) {
    size_t D = c->d_model, E = c->d_inner, H = c->nheads, K = c->d_conv;
    const ParamSpec specs[NUM_PARAM_TENSORS] = {
        {"wte", "backbone.embeddings.weight", 0, (size_t)c->padded_vocab_size, D, 1, INIT_NORMAL_002, 0, 0, 0},
        {"norm_w", "backbone.layers.%d.norm.weight", 1, D, 1, 0, INIT_ONES, 0, 0, 0},
        {"in_proj_w", "backbone.layers.%d.mixer.in_proj.weight", 1, (size_t)c->d_in_proj, D, 1, INIT_UNIFORM_FANIN,
         (int)D, 0, 0},
        {"conv_w", "backbone.layers.%d.mixer.conv1d.weight", 1, (size_t)c->conv_dim, K, 1, INIT_UNIFORM_FANIN,
         (int)K, 0, 0},
        {"conv_b", "backbone.layers.%d.mixer.conv1d.bias", 1, (size_t)c->conv_dim, 1, 0, INIT_UNIFORM_FANIN, (int)K,
         0, 0},
        {"dt_bias", "backbone.layers.%d.mixer.dt_bias", 1, H, 1, 0, INIT_DT_BIAS, 0, 0, 0},
        {"A_log", "backbone.layers.%d.mixer.A_log", 1, H, 1, 0, INIT_A_LOG, 0, 0, 0},
        {"D", "backbone.layers.%d.mixer.D", 1, H, 1, 0, INIT_ONES, 0, 0, 0},
        {"gnorm_w", "backbone.layers.%d.mixer.norm.weight", 1, E, 1, 0, INIT_ONES, 0, 0, 0},
        {"out_proj_w", "backbone.layers.%d.mixer.out_proj.weight", 1, D, E, 1, INIT_UNIFORM_OUT, (int)E, 0, 0},
        {"norm_f_w", "backbone.norm_f.weight", 0, D, 1, 0, INIT_ONES, 0, 0, 0},
    };
    size_t offset = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        t[i] = specs[i];
        t[i].numel = t[i].rows * t[i].cols * (t[i].per_layer ? (size_t)c->n_layer : 1);
        t[i].offset = offset;
        offset += t[i].numel;
    }
    return offset;
}

/* dies naming the first tensor of `params` (laid out by `table`) that holds NaN or infinite weights: a model whose
   loss would mean nothing (a diverged run, or a corrupt file). `what` names the model in the message. */
static inline void params_check_finite(const float* params, const ParamSpec table[NUM_PARAM_TENSORS],
                                       const char* what) {
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        const ParamSpec* sp = &table[t];
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < sp->numel; i++)
            if (!isfinite((double)params[sp->offset + i]) && bad++ == 0) first = i;
        if (bad > 0)
            die("model %s: tensor %s holds %zu NaN or infinite weights (first at element %zu): the model is broken "
                "(a diverged run, or a corrupt file)", what, sp->name, bad, first);
    }
}


/* initializes every parameter by its table entry's init kind (SPEC.md section 5); same seed, same weights */
static inline void params_init(float* params, const ParamSpec table[NUM_PARAM_TENSORS], const Mamba2Config* c,
                               uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        const ParamSpec* s = &table[t];
        float* p = params + s->offset;
        double bound = s->fan_in > 0 ? 1.0 / sqrt((double)s->fan_in) : 0.0;
        for (size_t i = 0; i < s->numel; i++) {
            switch (s->init) {
            case INIT_NORMAL_002: p[i] = (float)(0.02 * rng_normal(&rng)); break;
            case INIT_UNIFORM_FANIN: p[i] = (float)rng_uniform_range(&rng, -bound, bound); break;
            case INIT_UNIFORM_OUT: p[i] = (float)(rng_uniform_range(&rng, -bound, bound) / sqrt((double)c->n_layer));
                break;
            case INIT_ONES: p[i] = 1.0f; break;
            case INIT_DT_BIAS: {
                double dt = exp(rng_uniform_range(&rng, log(0.001), log(0.1)));
                if (dt < 1e-4) dt = 1e-4;
                p[i] = (float)(dt + log(-expm1(-dt))); /* inverse of softplus */
                break;
            }
            case INIT_A_LOG: p[i] = (float)log(rng_uniform_range(&rng, 1.0, 16.0)); break;
            }
        }
    }
}

/* ----------------------------------------------------------------------------------------------------------------
 * checksums: XXH64 (Yann Collet's xxHash, 64-bit), streaming. Fast (several GB/s), so a checkpoint of any size is
 * verified on every load; it finds flipped bits and truncation, not a deliberate forgery. */

#define XXH_P1 11400714785074694791ULL
#define XXH_P2 14029467366897019727ULL
#define XXH_P3 1609587929392839161ULL
#define XXH_P4 9650029242287828579ULL
#define XXH_P5 2870177450012600261ULL

typedef struct {
    uint64_t v[4], total;
    unsigned char buf[32];
    size_t buffered;
} Xxh64;

static inline uint64_t xxh_rotl_(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t xxh_read64_(const unsigned char* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static inline uint64_t xxh_round_(uint64_t acc, uint64_t in) {
    acc += in * XXH_P2;
    return xxh_rotl_(acc, 31) * XXH_P1;
}
static inline uint64_t xxh_merge_(uint64_t acc, uint64_t v) {
    acc ^= xxh_round_(0, v);
    return acc * XXH_P1 + XXH_P4;
}
static inline void xxh64_init(Xxh64* h, uint64_t seed) {
    memset(h, 0, sizeof(*h));
    h->v[0] = seed + XXH_P1 + XXH_P2; h->v[1] = seed + XXH_P2; h->v[2] = seed; h->v[3] = seed - XXH_P1;
}
static inline void xxh64_update(Xxh64* h, const void* data, size_t n) {
    const unsigned char* p = (const unsigned char*)data;
    h->total += n;
    if (h->buffered + n < 32) { if (n) memcpy(h->buf + h->buffered, p, n); h->buffered += n; return; }
    if (h->buffered > 0) {
        size_t take = 32 - h->buffered;
        memcpy(h->buf + h->buffered, p, take);
        for (int i = 0; i < 4; i++) h->v[i] = xxh_round_(h->v[i], xxh_read64_(h->buf + 8 * i));
        p += take; n -= take; h->buffered = 0;
    }
    for (; n >= 32; p += 32, n -= 32)
        for (int i = 0; i < 4; i++) h->v[i] = xxh_round_(h->v[i], xxh_read64_(p + 8 * i));
    memcpy(h->buf, p, n);
    h->buffered = n;
}
static inline uint64_t xxh64_final(const Xxh64* h, uint64_t seed) {
    uint64_t acc;
    if (h->total >= 32) {
        acc = xxh_rotl_(h->v[0], 1) + xxh_rotl_(h->v[1], 7) + xxh_rotl_(h->v[2], 12) + xxh_rotl_(h->v[3], 18);
        for (int i = 0; i < 4; i++) acc = xxh_merge_(acc, h->v[i]);
    } else {
        acc = seed + XXH_P5;
    }
    acc += h->total;
    const unsigned char* p = h->buf;
    size_t n = h->buffered;
    for (; n >= 8; p += 8, n -= 8) acc = xxh_rotl_(acc ^ xxh_round_(0, xxh_read64_(p)), 27) * XXH_P1 + XXH_P4;
    if (n >= 4) {
        uint64_t w = (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 24);
        acc = xxh_rotl_(acc ^ (w * XXH_P1), 23) * XXH_P2 + XXH_P3;
        p += 4; n -= 4;
    }
    for (; n > 0; p++, n--) acc = xxh_rotl_(acc ^ (*p * XXH_P5), 11) * XXH_P1;
    acc ^= acc >> 33; acc *= XXH_P2; acc ^= acc >> 29; acc *= XXH_P3; acc ^= acc >> 32;
    return acc;
}
static inline uint64_t xxh64(const void* data, size_t n, uint64_t seed) {
    Xxh64 h;
    xxh64_init(&h, seed);
    xxh64_update(&h, data, n);
    return xxh64_final(&h, seed);
}

/* ----------------------------------------------------------------------------------------------------------------
 * checkpoints
 *
 * layout (little-endian):
 *   int32  header[256]      magic, version, config, flags (see CKPT_* below), checksum (version 2)
 *   uint64 state[64]        step, sampling RNG, data-loader position (DataLoaderState, 8 words), reserved
 *   float  params[n]        fp32 master weights in param-table order
 *   float  m[n], v[n]       AdamW moments (only if header[CKPT_H_HAS_OPT])
 * Version 2 (since #27): header[CKPT_H_SUM_LO/HI] hold the XXH64 (seed 0) of the whole file with those two words
 * zero; every load verifies it. Version 1 files (no checksum) are still read, with a note on stderr.
 * Written to "<path>.tmp", flushed to disk, renamed, and the folder synced, so a crash or a full disk never leaves
 * a half-written checkpoint under the real name.
 */

#define CKPT_MAGIC 20260523
#define CKPT_VERSION 2
enum {
    CKPT_H_MAGIC = 0, CKPT_H_VERSION, CKPT_H_D_MODEL, CKPT_H_N_LAYER, CKPT_H_D_STATE, CKPT_H_HEADDIM,
    CKPT_H_EXPAND, CKPT_H_NGROUPS, CKPT_H_D_CONV, CKPT_H_VOCAB, CKPT_H_PADDED_VOCAB, CKPT_H_CHUNK,
    CKPT_H_HAS_OPT, CKPT_H_NPARAMS_LO, CKPT_H_NPARAMS_HI, CKPT_H_SUM_LO, CKPT_H_SUM_HI,
};
enum { CKPT_S_STEP = 0, CKPT_S_RNG = 1, CKPT_S_LOADER = 2 /* 8 words */, CKPT_S_ADAM_T = 10 };
#define CKPT_HEADER_INTS 256
#define CKPT_STATE_WORDS 64

typedef struct {
    Mamba2Config config;
    int has_optimizer;
    int version;          /* 1: no checksum (not verified), 2: checksum verified */
    uint64_t state[CKPT_STATE_WORDS];
} CheckpointInfo;

/* fsync of the folder holding path, so a rename in it survives a power loss (best effort: some file systems refuse) */
static inline void fsync_parent_dir(const char* path) {
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s", path);
    char* slash = strrchr(dir, '/');
    if (slash == NULL) snprintf(dir, sizeof(dir), ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    FILE* d = fopen(dir, "r");
    if (d == NULL) return;
    (void)fsync(fileno(d));
    fclose(d);
}

static inline void checkpoint_write(const char* path, const Mamba2Config* c, const uint64_t state[CKPT_STATE_WORDS],
                                    const float* params, const float* m, const float* v, size_t nparams) {
    int32_t header[CKPT_HEADER_INTS] = {0};
    header[CKPT_H_MAGIC] = CKPT_MAGIC;
    header[CKPT_H_VERSION] = CKPT_VERSION;
    header[CKPT_H_D_MODEL] = c->d_model;
    header[CKPT_H_N_LAYER] = c->n_layer;
    header[CKPT_H_D_STATE] = c->d_state;
    header[CKPT_H_HEADDIM] = c->headdim;
    header[CKPT_H_EXPAND] = c->expand;
    header[CKPT_H_NGROUPS] = c->ngroups;
    header[CKPT_H_D_CONV] = c->d_conv;
    header[CKPT_H_VOCAB] = c->vocab_size;
    header[CKPT_H_PADDED_VOCAB] = c->padded_vocab_size;
    header[CKPT_H_CHUNK] = c->chunk_size;
    header[CKPT_H_HAS_OPT] = (m != NULL && v != NULL);
    header[CKPT_H_NPARAMS_LO] = (int32_t)(uint32_t)(nparams & 0xffffffffu);
    header[CKPT_H_NPARAMS_HI] = (int32_t)(uint32_t)((uint64_t)nparams >> 32);
    Xxh64 h;
    xxh64_init(&h, 0);
    xxh64_update(&h, header, sizeof(header));
    xxh64_update(&h, state, sizeof(uint64_t) * CKPT_STATE_WORDS);
    xxh64_update(&h, params, sizeof(float) * nparams);
    if (header[CKPT_H_HAS_OPT]) {
        xxh64_update(&h, m, sizeof(float) * nparams);
        xxh64_update(&h, v, sizeof(float) * nparams);
    }
    uint64_t sum = xxh64_final(&h, 0);
    header[CKPT_H_SUM_LO] = (int32_t)(uint32_t)(sum & 0xffffffffu);
    header[CKPT_H_SUM_HI] = (int32_t)(uint32_t)(sum >> 32);
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE* f = fopen(tmp, "wb");
    if (f == NULL) die("checkpoint %s: cannot create: %s (is -o a writable folder?)", tmp, strerror(errno));
    int bad = fwrite(header, sizeof(int32_t), CKPT_HEADER_INTS, f) != CKPT_HEADER_INTS ||
              fwrite(state, sizeof(uint64_t), CKPT_STATE_WORDS, f) != CKPT_STATE_WORDS ||
              fwrite(params, sizeof(float), nparams, f) != nparams;
    if (!bad && header[CKPT_H_HAS_OPT]) bad = fwrite(m, sizeof(float), nparams, f) != nparams ||
                                             fwrite(v, sizeof(float), nparams, f) != nparams;
    if (!bad) bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    int err = errno;
    if (fclose(f) != 0) bad = 1;
    if (bad) {
        remove(tmp);
        die("checkpoint %s: write failed: %s (disk full? the previous checkpoints are untouched; free space and "
            "resume with -y 1)", tmp, strerror(err));
    }
    if (rename(tmp, path) != 0) die("could not rename %s to %s: %s", tmp, path, strerror(errno));
    fsync_parent_dir(path);
}

/* writes the formatted message into err and returns NULL (for checkpoint_open_e's error paths) */
static inline FILE* ckpt_fail_(FILE* f, char* err, size_t errlen, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    if (f) fclose(f);
    return NULL;
}

/*
 * Reads and validates a checkpoint's header, verifies its checksum (version 2: one streaming pass over the file),
 * reads the training state; leaves the file positioned at the parameters. On any problem returns NULL with a
 * message naming the file in err. Every size is computed from a bounded config (config_check) in 64 bits.
 */
static inline FILE* checkpoint_open_e(const char* path, CheckpointInfo* info, char* err, size_t errlen) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) return ckpt_fail_(NULL, err, errlen, "checkpoint %s: cannot open: %s", path, strerror(errno));
    int32_t h[CKPT_HEADER_INTS];
    if (fread(h, sizeof(int32_t), CKPT_HEADER_INTS, f) != CKPT_HEADER_INTS)
        return ckpt_fail_(f, err, errlen, "checkpoint %s: truncated header (file shorter than %zu bytes)", path,
                          sizeof(h));
    if (h[CKPT_H_MAGIC] != CKPT_MAGIC)
        return ckpt_fail_(f, err, errlen, "checkpoint %s: bad magic %d (expected %d): not a mamba2.c checkpoint",
                          path, h[CKPT_H_MAGIC], CKPT_MAGIC);
    if (h[CKPT_H_VERSION] != 1 && h[CKPT_H_VERSION] != CKPT_VERSION)
        return ckpt_fail_(f, err, errlen, "checkpoint %s: version %d, this build reads versions 1 and %d", path,
                          h[CKPT_H_VERSION], CKPT_VERSION);
    Mamba2Config c;
    memset(&c, 0, sizeof(c));
    c.d_model = h[CKPT_H_D_MODEL]; c.n_layer = h[CKPT_H_N_LAYER]; c.d_state = h[CKPT_H_D_STATE];
    c.headdim = h[CKPT_H_HEADDIM]; c.expand = h[CKPT_H_EXPAND]; c.ngroups = h[CKPT_H_NGROUPS];
    c.d_conv = h[CKPT_H_D_CONV]; c.vocab_size = h[CKPT_H_VOCAB]; c.chunk_size = h[CKPT_H_CHUNK];
    const char* bad = config_check(&c);
    if (bad) return ckpt_fail_(f, err, errlen, "checkpoint %s: header holds an %s", path, bad);
    config_derive(&c);
    if (c.padded_vocab_size != h[CKPT_H_PADDED_VOCAB])
        return ckpt_fail_(f, err, errlen, "checkpoint %s: padded vocab %d does not match vocab %d", path,
                          h[CKPT_H_PADDED_VOCAB], c.vocab_size);
    ParamSpec table[NUM_PARAM_TENSORS];
    size_t nparams = param_table_build(table, &c);
    uint64_t stored = (uint64_t)(uint32_t)h[CKPT_H_NPARAMS_LO] | ((uint64_t)(uint32_t)h[CKPT_H_NPARAMS_HI] << 32);
    if (stored != (uint64_t)nparams)
        return ckpt_fail_(f, err, errlen, "checkpoint %s: holds %llu parameters, its config needs %zu", path,
                          (unsigned long long)stored, nparams);
    int has_opt = h[CKPT_H_HAS_OPT];
    if (has_opt != 0 && has_opt != 1)
        return ckpt_fail_(f, err, errlen, "checkpoint %s: optimizer flag %d, expected 0 or 1 (corrupt header)", path,
                          has_opt);
    /* nparams <= 2^38 (config_check), so this is < 2^42: no overflow */
    uint64_t expect = sizeof(h) + sizeof(uint64_t) * CKPT_STATE_WORDS + (uint64_t)sizeof(float) * nparams *
                      (has_opt ? 3 : 1);
    if (fseek(f, 0, SEEK_END) != 0) return ckpt_fail_(f, err, errlen, "checkpoint %s: cannot seek", path);
    long size = ftell(f);
    if (size < 0 || (uint64_t)size != expect)
        return ckpt_fail_(f, err, errlen, "checkpoint %s: file is %ld bytes, its header says %llu (truncated or "
                          "corrupt)", path, size, (unsigned long long)expect);
    if (h[CKPT_H_VERSION] >= 2) {
        uint64_t want = (uint64_t)(uint32_t)h[CKPT_H_SUM_LO] | ((uint64_t)(uint32_t)h[CKPT_H_SUM_HI] << 32);
        int32_t hz[CKPT_HEADER_INTS];
        memcpy(hz, h, sizeof(hz));
        hz[CKPT_H_SUM_LO] = 0; hz[CKPT_H_SUM_HI] = 0;
        Xxh64 x;
        xxh64_init(&x, 0);
        xxh64_update(&x, hz, sizeof(hz));
        if (fseek(f, (long)sizeof(h), SEEK_SET) != 0) return ckpt_fail_(f, err, errlen, "checkpoint %s: cannot seek", path);
        enum { BLOCK = 1 << 20 };
        unsigned char* buf = (unsigned char*)malloc(BLOCK);
        if (buf == NULL) return ckpt_fail_(f, err, errlen, "checkpoint %s: out of memory", path);
        uint64_t left = expect - sizeof(h);
        while (left > 0) {
            size_t n = left < BLOCK ? (size_t)left : (size_t)BLOCK;
            if (fread(buf, 1, n, f) != n) { free(buf); return ckpt_fail_(f, err, errlen, "checkpoint %s: read error", path); }
            xxh64_update(&x, buf, n);
            left -= n;
        }
        free(buf);
        uint64_t got = xxh64_final(&x, 0);
        if (got != want)
            return ckpt_fail_(f, err, errlen, "checkpoint %s: checksum mismatch (stored %016llx, computed %016llx): "
                              "the file is corrupt (flipped bits, or overwritten)", path, (unsigned long long)want,
                              (unsigned long long)got);
    } else {
        fprintf(stderr, "note: checkpoint %s is of format version 1 (no checksum): loaded without verification\n",
                path);
    }
    if (fseek(f, (long)sizeof(h), SEEK_SET) != 0) return ckpt_fail_(f, err, errlen, "checkpoint %s: cannot seek", path);
    info->config = c;
    info->has_optimizer = has_opt;
    info->version = h[CKPT_H_VERSION];
    if (fread(info->state, sizeof(uint64_t), CKPT_STATE_WORDS, f) != CKPT_STATE_WORDS)
        return ckpt_fail_(f, err, errlen, "checkpoint %s: short read of the training state", path);
    return f;
}

/* checkpoint_open_e that exits with its message on any problem */
static inline FILE* checkpoint_open(const char* path, CheckpointInfo* info) {
    char err[1024];
    FILE* f = checkpoint_open_e(path, info, err, sizeof(err));
    if (f == NULL) die("%s", err);
    return f;
}

/* 0 if the checkpoint at path is whole (header valid, size right, checksum matches; version 1: no checksum to
   check), else -1 with the reason in err */
static inline int checkpoint_verify(const char* path, CheckpointInfo* info, char* err, size_t errlen) {
    CheckpointInfo tmp;
    FILE* f = checkpoint_open_e(path, info ? info : &tmp, err, errlen);
    if (f == NULL) return -1;
    fclose(f);
    return 0;
}

/* 1 if the two configs describe the same model (chunk size may differ: it does not change the function) */
static inline int config_same_model(const Mamba2Config* a, const Mamba2Config* b) {
    return a->d_model == b->d_model && a->n_layer == b->n_layer && a->d_state == b->d_state &&
           a->headdim == b->headdim && a->expand == b->expand && a->ngroups == b->ngroups &&
           a->d_conv == b->d_conv && a->vocab_size == b->vocab_size;
}

#endif
