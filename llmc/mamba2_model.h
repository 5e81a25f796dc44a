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

static inline int round_up(int x, int m) { return ((x + m - 1) / m) * m; }

static inline void config_derive(Mamba2Config* c) {
    c->padded_vocab_size = round_up(c->vocab_size, MAMBA2_VOCAB_MULTIPLE);
    c->d_inner = c->expand * c->d_model;
    c->nheads = c->headdim > 0 ? c->d_inner / c->headdim : 0;
    c->conv_dim = c->d_inner + 2 * c->ngroups * c->d_state;
    c->d_in_proj = 2 * c->d_inner + 2 * c->ngroups * c->d_state + c->nheads;
}

/* rows of the causal conv's window in the recurrent step: the last K-1 inputs (at least one row, so K = 1 needs no
   special case in the step code) */
static inline int conv_window_len(const Mamba2Config* c) { return c->d_conv > 1 ? c->d_conv - 1 : 1; }

/* returns NULL if the config is valid, else a message saying what is wrong (in a static buffer) */
static inline const char* config_check(const Mamba2Config* c) {
    static char msg[256];
    struct { const char* name; int value; int min; } fields[] = {
        {"d_model", c->d_model, 1}, {"n_layer", c->n_layer, 1}, {"d_state", c->d_state, 1},
        {"headdim", c->headdim, 1}, {"expand", c->expand, 1},   {"ngroups", c->ngroups, 1},
        {"d_conv", c->d_conv, 1},   {"vocab", c->vocab_size, 2}, {"chunk", c->chunk_size, 1},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (fields[i].value < fields[i].min) {
            snprintf(msg, sizeof(msg), "invalid config: %s = %d, must be >= %d", fields[i].name, fields[i].value,
                     fields[i].min);
            return msg;
        }
    }
    int E = c->expand * c->d_model;
    if (E % c->headdim != 0) {
        snprintf(msg, sizeof(msg), "invalid config: expand*d_model = %d is not divisible by headdim = %d", E,
                 c->headdim);
        return msg;
    }
    int H = E / c->headdim;
    if (H % c->ngroups != 0) {
        snprintf(msg, sizeof(msg), "invalid config: nheads = %d (expand*d_model/headdim) is not divisible by "
                 "ngroups = %d", H, c->ngroups);
        return msg;
    }
    if (c->d_conv > 16) {
        snprintf(msg, sizeof(msg), "invalid config: d_conv = %d, at most 16 is supported", c->d_conv);
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
 * checkpoints
 *
 * layout (little-endian):
 *   int32  header[256]      magic, version, config, flags (see CKPT_* below)
 *   uint64 state[64]        step, sampling RNG, data-loader position (DataLoaderState, 8 words), reserved
 *   float  params[n]        fp32 master weights in param-table order
 *   float  m[n], v[n]       AdamW moments (only if header[CKPT_HAS_OPT])
 * Written to "<path>.tmp" and renamed, so a crash never leaves a half-written checkpoint under the real name.
 */

#define CKPT_MAGIC 20260523
#define CKPT_VERSION 1
enum {
    CKPT_H_MAGIC = 0, CKPT_H_VERSION, CKPT_H_D_MODEL, CKPT_H_N_LAYER, CKPT_H_D_STATE, CKPT_H_HEADDIM,
    CKPT_H_EXPAND, CKPT_H_NGROUPS, CKPT_H_D_CONV, CKPT_H_VOCAB, CKPT_H_PADDED_VOCAB, CKPT_H_CHUNK,
    CKPT_H_HAS_OPT, CKPT_H_NPARAMS_LO, CKPT_H_NPARAMS_HI,
};
enum { CKPT_S_STEP = 0, CKPT_S_RNG = 1, CKPT_S_LOADER = 2 /* 8 words */, CKPT_S_ADAM_T = 10 };
#define CKPT_HEADER_INTS 256
#define CKPT_STATE_WORDS 64

typedef struct {
    Mamba2Config config;
    int has_optimizer;
    uint64_t state[CKPT_STATE_WORDS];
} CheckpointInfo;

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
    header[CKPT_H_NPARAMS_HI] = (int32_t)(uint32_t)(nparams >> 32);
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE* f = fopenCheck(tmp, "wb");
    fwriteCheck(header, sizeof(int32_t), CKPT_HEADER_INTS, f);
    fwriteCheck(state, sizeof(uint64_t), CKPT_STATE_WORDS, f);
    fwriteCheck(params, sizeof(float), nparams, f);
    if (header[CKPT_H_HAS_OPT]) {
        fwriteCheck(m, sizeof(float), nparams, f);
        fwriteCheck(v, sizeof(float), nparams, f);
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) die("could not flush checkpoint %s (disk full?)", tmp);
    fcloseCheck(f);
    if (rename(tmp, path) != 0) die("could not rename %s to %s: %s", tmp, path, strerror(errno));
}

/*
 * Reads and validates a checkpoint's header; leaves the file positioned at the parameters.
 * Every way a file can be wrong gets its own message naming the file.
 */
static inline FILE* checkpoint_open(const char* path, CheckpointInfo* info) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) die("checkpoint %s: cannot open: %s", path, strerror(errno));
    int32_t h[CKPT_HEADER_INTS];
    if (fread(h, sizeof(int32_t), CKPT_HEADER_INTS, f) != CKPT_HEADER_INTS)
        die("checkpoint %s: truncated header (file shorter than %zu bytes)", path, sizeof(h));
    if (h[CKPT_H_MAGIC] != CKPT_MAGIC)
        die("checkpoint %s: bad magic %d (expected %d): not a mamba2.c checkpoint", path, h[CKPT_H_MAGIC], CKPT_MAGIC);
    if (h[CKPT_H_VERSION] != CKPT_VERSION)
        die("checkpoint %s: version %d, this build reads version %d", path, h[CKPT_H_VERSION], CKPT_VERSION);
    Mamba2Config c;
    memset(&c, 0, sizeof(c));
    c.d_model = h[CKPT_H_D_MODEL]; c.n_layer = h[CKPT_H_N_LAYER]; c.d_state = h[CKPT_H_D_STATE];
    c.headdim = h[CKPT_H_HEADDIM]; c.expand = h[CKPT_H_EXPAND]; c.ngroups = h[CKPT_H_NGROUPS];
    c.d_conv = h[CKPT_H_D_CONV]; c.vocab_size = h[CKPT_H_VOCAB]; c.chunk_size = h[CKPT_H_CHUNK];
    const char* bad = config_check(&c);
    if (bad) die("checkpoint %s: header holds an %s", path, bad);
    config_derive(&c);
    if (c.padded_vocab_size != h[CKPT_H_PADDED_VOCAB])
        die("checkpoint %s: padded vocab %d does not match vocab %d", path, h[CKPT_H_PADDED_VOCAB], c.vocab_size);
    ParamSpec table[NUM_PARAM_TENSORS];
    size_t nparams = param_table_build(table, &c);
    size_t stored = (size_t)(uint32_t)h[CKPT_H_NPARAMS_LO] | ((size_t)(uint32_t)h[CKPT_H_NPARAMS_HI] << 32);
    if (stored != nparams)
        die("checkpoint %s: holds %zu parameters, its config needs %zu", path, stored, nparams);
    int has_opt = h[CKPT_H_HAS_OPT];
    size_t expect = sizeof(h) + sizeof(uint64_t) * CKPT_STATE_WORDS + sizeof(float) * nparams * (has_opt ? 3 : 1);
    if (fseek(f, 0, SEEK_END) != 0) die("checkpoint %s: cannot seek", path);
    long size = ftell(f);
    if (size < 0 || (size_t)size != expect)
        die("checkpoint %s: file is %ld bytes, its header says %zu (truncated or corrupt)", path, size, expect);
    fseekCheck(f, (long)sizeof(h), SEEK_SET);
    info->config = c;
    info->has_optimizer = has_opt;
    freadCheck(info->state, sizeof(uint64_t), CKPT_STATE_WORDS, f);
    return f;
}

/* 1 if the two configs describe the same model (chunk size may differ: it does not change the function) */
static inline int config_same_model(const Mamba2Config* a, const Mamba2Config* b) {
    return a->d_model == b->d_model && a->n_layer == b->n_layer && a->d_state == b->d_state &&
           a->headdim == b->headdim && a->expand == b->expand && a->ngroups == b->ngroups &&
           a->d_conv == b->d_conv && a->vocab_size == b->vocab_size;
}

#endif
