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
 * Hybrids (doc/hybrid.md): the model is a list of blocks (config pattern: M Mamba-2 mixer, A attention, F gated MLP);
 * a per-block tensor has one copy per block of its kind, block b's at its slot among them (config_block_slot), so
 * a pure Mamba-2 model (every block M) has exactly the layout above.
 */
#ifndef MAMBA2_MODEL_H
#define MAMBA2_MODEL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <errno.h>
#include <unistd.h>

#include <math.h>

#include "utils.h"
#include "rand.h"

/* ----------------------------------------------------------------------------------------------------------------
 * config */

#define MAMBA2_MAX_PATTERN 512   /* blocks of a hybrid (the checkpoint header holds the pattern, 4 kinds an int) */
#define MAMBA2_MLP_MULTIPLE 128  /* mamba_ssm GatedMLP's multiple_of */

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
    /* hybrids (doc/hybrid.md): n_layer pre-norm residual blocks, block b of kind pattern[b]: 'M' Mamba-2 mixer,
       'A' causal multi-head attention, 'F' gated MLP (SwiGLU). An empty pattern is a pure Mamba-2 model (every block
       'M'), the only form before hybrids: its parameters, checkpoints and results are unchanged. */
    char pattern[MAMBA2_MAX_PATTERN + 1];
    int attn_heads;        /* Hq: query heads (mamba_ssm attn_cfg num_heads); 0 without attention blocks */
    int attn_kv_heads;     /* Hkv: key/value heads, Hq % Hkv == 0 (GQA; num_heads_kv) */
    int attn_head_dim;     /* hd (head_dim) */
    int rotary_dim;        /* rotary_emb_dim: RoPE on the first rotary_dim dims of each q and k head; 0 = none */
    int rotary_base;       /* rotary_emb_base (10000) */
    int qkv_bias;          /* qkv_proj_bias: 1 = in_proj of attention has a bias */
    int out_bias;          /* out_proj_bias: 1 = out_proj of attention has a bias */
    int d_intermediate;    /* the gated MLP's hidden size as given (mamba_ssm d_intermediate); 0 without MLP blocks */
    /* derived, filled in by config_derive() */
    int d_inner;           /* E */
    int nheads;            /* H = E / P */
    int conv_dim;          /* E + 2 G N: the channels that go through the conv (x, B, C) */
    int d_in_proj;         /* 2E + 2GN + H: in_proj rows, split as z | xBC | dt */
    int n_mamba, n_attn, n_mlp; /* blocks of each kind (a pure Mamba-2 model: n_mamba = n_layer) */
    int attn_qkv_dim;      /* hd (Hq + 2 Hkv): attention in_proj rows, per position [q | k | v] */
    int attn_out_dim;      /* hd Hq: attention out_proj columns */
    int mlp_hidden;        /* Hm: d_intermediate rounded up to a multiple of 128 (GatedMLP's multiple_of) */
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

/* ---- the block list of a hybrid (doc/hybrid.md) ---- */

/* the kind of block b: 'M' Mamba-2 mixer, 'A' attention, 'F' gated MLP */
static inline char config_block_kind(const Mamba2Config* c, int b) { return c->pattern[0] ? c->pattern[b] : 'M'; }

/* the blocks of one kind (from the raw fields: a pure model is n_layer 'M' blocks) */
static inline int config_count_kind(const Mamba2Config* c, char kind) {
    if (c->pattern[0] == '\0') return kind == 'M' ? c->n_layer : 0;
    int n = 0;
    for (int b = 0; b < MAMBA2_MAX_PATTERN && c->pattern[b]; b++) n += c->pattern[b] == kind;
    return n;
}

/* the index of block b among the blocks of its kind: its slot in that kind's per-block tensors and caches */
static inline int config_block_slot(const Mamba2Config* c, int b) {
    if (c->pattern[0] == '\0') return b;
    int n = 0;
    for (int i = 0; i < b; i++) n += c->pattern[i] == c->pattern[b];
    return n;
}

/* the carried state of B rows (-C 1, doc/packing.md section 6), in elements: the SSM states (n_mamba, B, H, P, N) and
   the conv windows (n_mamba, B, K-1, conv_dim); the CPU and GPU trainers and the companion file use these sizes */
static inline size_t carry_ssm_floats(const Mamba2Config* c, int B) {
    return (size_t)c->n_mamba * B * c->nheads * c->headdim * c->d_state;
}
static inline size_t carry_window_floats(const Mamba2Config* c, int B) {
    return (size_t)c->n_mamba * B * (c->d_conv - 1) * c->conv_dim;
}

/* 1 if the model has a block other than a Mamba-2 mixer */
static inline int config_is_hybrid(const Mamba2Config* c) { return c->pattern[0] != '\0'; }

/* the gated MLP's hidden size: d_intermediate rounded up to a multiple of 128, as mamba_ssm's GatedMLP does */
static inline long long mlp_hidden_of(long long d_intermediate) {
    return d_intermediate <= 0 ? 0 : (d_intermediate + MAMBA2_MLP_MULTIPLE - 1) / MAMBA2_MLP_MULTIPLE *
                                     MAMBA2_MLP_MULTIPLE;
}

/* the parameter count of a config, in 64 bits from the raw fields (all of them checked >= 1 and <= their bound
   first, so no product overflows); param_table_build's total for a valid config */
static inline unsigned long long config_param_count(const Mamba2Config* c) {
    unsigned long long D = (unsigned long long)c->d_model, L = (unsigned long long)c->n_layer;
    unsigned long long E = (unsigned long long)c->expand * D, GN = (unsigned long long)c->ngroups * c->d_state;
    unsigned long long H = E / (unsigned long long)c->headdim, K = (unsigned long long)c->d_conv;
    unsigned long long Vp = ((unsigned long long)c->vocab_size + MAMBA2_VOCAB_MULTIPLE - 1) / MAMBA2_VOCAB_MULTIPLE *
                            MAMBA2_VOCAB_MULTIPLE;
    unsigned long long conv = E + 2 * GN, inproj = 2 * E + 2 * GN + H;
    unsigned long long mamba = inproj * D + conv * K + conv + 3 * H + E + D * E;
    unsigned long long nM = (unsigned long long)config_count_kind(c, 'M');
    unsigned long long nA = (unsigned long long)config_count_kind(c, 'A');
    unsigned long long nF = (unsigned long long)config_count_kind(c, 'F');
    unsigned long long hd = c->attn_head_dim > 0 ? (unsigned long long)c->attn_head_dim : 0;
    unsigned long long qkv = hd * ((unsigned long long)(c->attn_heads > 0 ? c->attn_heads : 0) +
                                   2ULL * (unsigned long long)(c->attn_kv_heads > 0 ? c->attn_kv_heads : 0));
    unsigned long long out = hd * (unsigned long long)(c->attn_heads > 0 ? c->attn_heads : 0);
    unsigned long long attn = qkv * D + (c->qkv_bias ? qkv : 0) + D * out + (c->out_bias ? D : 0);
    unsigned long long Hm = (unsigned long long)mlp_hidden_of(c->d_intermediate);
    unsigned long long mlp = 2 * Hm * D + D * Hm;
    return Vp * D + L * D + nM * mamba + nA * attn + nF * mlp + D;
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
    c->n_mamba = config_count_kind(c, 'M');
    c->n_attn = config_count_kind(c, 'A');
    c->n_mlp = config_count_kind(c, 'F');
    c->attn_qkv_dim = c->attn_head_dim * (c->attn_heads + 2 * c->attn_kv_heads);
    c->attn_out_dim = c->attn_head_dim * c->attn_heads;
    c->mlp_hidden = (int)mlp_hidden_of(c->d_intermediate);
}

/* rows of the causal conv's window in the recurrent step: the last K-1 inputs (at least one row, so K = 1 needs no
   special case in the step code) */
static inline int conv_window_len(const Mamba2Config* c) { return c->d_conv > 1 ? c->d_conv - 1 : 1; }

#define MAMBA2_MAX_ATTN_HEADS 4096
#define MAMBA2_MAX_ATTN_HEAD_DIM 4096
#define MAMBA2_MAX_ROTARY_BASE 1000000000
#define MAMBA2_MAX_D_INTERMEDIATE (1 << 20)

/* the hybrid part of config_check: the pattern, and the attention / MLP settings exactly when their blocks exist
   (a setting without its block is refused: it would be silently ignored). NULL or the message (in msg). */
static inline const char* config_check_hybrid(const Mamba2Config* c, char* msg, size_t msglen) {
    size_t len = strnlen(c->pattern, sizeof(c->pattern));
    if (len == sizeof(c->pattern)) {
        snprintf(msg, msglen, "invalid config: pattern longer than %d blocks", MAMBA2_MAX_PATTERN);
        return msg;
    }
    for (size_t b = 0; b < len; b++) {
        char k = c->pattern[b];
        if (k != 'M' && k != 'A' && k != 'F') {
            snprintf(msg, msglen, "invalid config: pattern '%.40s' has '%c' at block %zu (kinds: M Mamba-2 mixer, A "
                     "attention, F gated MLP)", c->pattern, isprint((unsigned char)k) ? k : '?', b);
            return msg;
        }
    }
    if (len > 0 && (int)len != c->n_layer) {
        snprintf(msg, msglen, "invalid config: pattern '%.40s' has %zu blocks but n_layer is %d", c->pattern, len,
                 c->n_layer);
        return msg;
    }
    int nA = config_count_kind(c, 'A'), nF = config_count_kind(c, 'F');
    if (nA > 0) {
        struct { const char* name; int value; int min; int max; } f[] = {
            {"num_heads", c->attn_heads, 1, MAMBA2_MAX_ATTN_HEADS},
            {"num_heads_kv", c->attn_kv_heads, 1, MAMBA2_MAX_ATTN_HEADS},
            {"head_dim", c->attn_head_dim, 1, MAMBA2_MAX_ATTN_HEAD_DIM},
            {"rotary_emb_dim", c->rotary_dim, 0, c->attn_head_dim},
            {"rotary_emb_base", c->rotary_base, 1, MAMBA2_MAX_ROTARY_BASE},
            {"qkv_proj_bias", c->qkv_bias, 0, 1}, {"out_proj_bias", c->out_bias, 0, 1},
        };
        for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
            if (f[i].value < f[i].min || f[i].value > f[i].max) {
                snprintf(msg, msglen, "invalid config: attention %s = %d, must be in [%d, %d]", f[i].name, f[i].value,
                         f[i].min, f[i].max);
                return msg;
            }
        }
        if (c->attn_heads % c->attn_kv_heads != 0) {
            snprintf(msg, msglen, "invalid config: attention num_heads = %d is not divisible by num_heads_kv = %d",
                     c->attn_heads, c->attn_kv_heads);
            return msg;
        }
        if (c->rotary_dim % 2 != 0) {
            snprintf(msg, msglen, "invalid config: rotary_emb_dim = %d must be even (RoPE rotates pairs)",
                     c->rotary_dim);
            return msg;
        }
    } else if (c->attn_heads || c->attn_kv_heads || c->attn_head_dim || c->rotary_dim || c->rotary_base ||
               c->qkv_bias || c->out_bias) {
        snprintf(msg, msglen, "invalid config: attention settings (num_heads, head_dim, rotary_emb_dim, ...) given, "
                 "but the pattern has no attention block 'A' (add pattern=... or attn_layer_idx=...)");
        return msg;
    }
    if (nF > 0 && (c->d_intermediate < 1 || c->d_intermediate > MAMBA2_MAX_D_INTERMEDIATE)) {
        snprintf(msg, msglen, "invalid config: the pattern has gated-MLP blocks 'F', so d_intermediate (their hidden "
                 "size) must be in [1, %d], got %d", MAMBA2_MAX_D_INTERMEDIATE, c->d_intermediate);
        return msg;
    }
    if (nF == 0 && c->d_intermediate != 0) {
        snprintf(msg, msglen, "invalid config: d_intermediate = %d but the pattern has no gated-MLP block 'F'",
                 c->d_intermediate);
        return msg;
    }
    return NULL;
}

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
    const char* bad_hybrid = config_check_hybrid(c, msg, sizeof(msg));
    if (bad_hybrid) return bad_hybrid;
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
 * Hybrid presets (doc/hybrid.md says where each number comes from): the Transformer++ baselines of the paper's
 * scaling-law figure at GPT-3's shapes (every layer attention then gated MLP, RoPE on the whole head, no biases;
 * the MLP hidden size mamba_ssm's GatedMLP default int(8 d / 3) rounded up to 128), and a 130M-class Mamba-2 hybrid
 * (the 130m preset with 3 of its 24 mixers attention, at layers 6, 12, 18: the paper's ~10% attention).
 */
typedef struct { const char* name; const char* spec; } Mamba2HybridPreset;
static const Mamba2HybridPreset MAMBA2_HYBRID_PRESETS[] = {
    {"tpp125m", "d_model=768,pattern=AF*12,num_heads=12,head_dim=64,rotary_emb_dim=64,d_intermediate=2048,"
                "vocab=50277,chunk=256"},
    {"tpp350m", "d_model=1024,pattern=AF*24,num_heads=16,head_dim=64,rotary_emb_dim=64,d_intermediate=2816,"
                "vocab=50277,chunk=256"},
    {"tpp760m", "d_model=1536,pattern=AF*24,num_heads=16,head_dim=96,rotary_emb_dim=96,d_intermediate=4096,"
                "vocab=50277,chunk=256"},
    {"tpp1.3b", "d_model=2048,pattern=AF*24,num_heads=32,head_dim=64,rotary_emb_dim=64,d_intermediate=5504,"
                "vocab=50277,chunk=256"},
    {"hybrid130m", "130m,attn_layer_idx=6,12,18,num_heads=12,head_dim=64,rotary_emb_dim=64"},
};

/* what config_parse collects besides the fields themselves */
typedef struct {
    int attn_idx[MAMBA2_MAX_PATTERN]; /* mamba_ssm's attn_layer_idx */
    int n_attn_idx;
    int in_attn_list;                 /* the previous token was attn_layer_idx=...: a bare integer continues it */
    int n_layer_given, pattern_given;
} ConfigParseState_;

/* "AF*12" -> "AFAF...": a unit of block kinds, optionally repeated; 0 or -1 with a message */
static inline int config_expand_pattern_(char* out, const char* value, char* err, size_t errlen) {
    char unit[MAMBA2_MAX_PATTERN + 1];
    const char* star = strchr(value, '*');
    size_t ulen = star ? (size_t)(star - value) : strlen(value);
    long reps = 1;
    if (star) {
        char* end;
        reps = strtol(star + 1, &end, 10);
        if (*end != '\0' || end == star + 1 || reps < 1) {
            snprintf(err, errlen, "model description: pattern '%s': the repeat count after '*' must be a positive "
                     "integer", value);
            return -1;
        }
    }
    if (ulen == 0 || ulen * (unsigned long)reps > MAMBA2_MAX_PATTERN) {
        snprintf(err, errlen, "model description: pattern '%s' must have 1 to %d blocks", value, MAMBA2_MAX_PATTERN);
        return -1;
    }
    memcpy(unit, value, ulen);
    unit[ulen] = '\0';
    out[0] = '\0';
    for (long r = 0; r < reps; r++) strcat(out, unit);
    return 0;
}

static inline int config_apply_spec_(Mamba2Config* c, ConfigParseState_* ps, const char* spec, int depth, char* err,
                                     size_t errlen) {
    char buf[1024];
    if (strlen(spec) >= sizeof(buf)) { snprintf(err, errlen, "model description too long"); return -1; }
    strcpy(buf, spec);
    char* save = NULL;
    for (char* tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        char* eq = strchr(tok, '=');
        if (eq == NULL) {
            char* end;
            long idx = strtol(tok, &end, 10);
            if (ps->in_attn_list && *end == '\0' && end != tok) { /* attn_layer_idx=3,9: the list goes on */
                if (ps->n_attn_idx >= MAMBA2_MAX_PATTERN || idx < 0 || idx >= MAMBA2_MAX_PATTERN) {
                    snprintf(err, errlen, "model description: attn_layer_idx entry %ld is out of range", idx);
                    return -1;
                }
                ps->attn_idx[ps->n_attn_idx++] = (int)idx;
                continue;
            }
            ps->in_attn_list = 0;
            int found = 0;
            for (size_t i = 0; i < sizeof(MAMBA2_PRESETS) / sizeof(MAMBA2_PRESETS[0]); i++) {
                if (strcmp(tok, MAMBA2_PRESETS[i].name) == 0) {
                    c->d_model = MAMBA2_PRESETS[i].d_model; c->n_layer = MAMBA2_PRESETS[i].n_layer;
                    c->d_state = MAMBA2_PRESETS[i].d_state; c->headdim = MAMBA2_PRESETS[i].headdim;
                    if (c->d_model >= 768) { c->vocab_size = 50277; c->chunk_size = 256; }
                    found = 1;
                }
            }
            for (size_t i = 0; !found && depth == 0 &&
                               i < sizeof(MAMBA2_HYBRID_PRESETS) / sizeof(MAMBA2_HYBRID_PRESETS[0]); i++) {
                if (strcmp(tok, MAMBA2_HYBRID_PRESETS[i].name) == 0) {
                    if (config_apply_spec_(c, ps, MAMBA2_HYBRID_PRESETS[i].spec, depth + 1, err, errlen) != 0)
                        return -1;
                    ps->in_attn_list = 0;
                    found = 1;
                }
            }
            if (!found) {
                snprintf(err, errlen, "unknown model preset '%s' (presets: tiny small 130m 370m 780m 1.3b 2.7b, "
                         "hybrids tpp125m tpp350m tpp760m tpp1.3b hybrid130m, or key=value pairs)", tok);
                return -1;
            }
            continue;
        }
        ps->in_attn_list = 0;
        *eq = '\0';
        const char* key = tok;
        const char* value = eq + 1;
        if (!strcmp(key, "pattern")) {
            if (config_expand_pattern_(c->pattern, value, err, errlen) != 0) return -1;
            ps->pattern_given = 1;
            continue;
        }
        char* end;
        long v = strtol(value, &end, 10);
        if (*end != '\0' || end == value || v < -1000000000L || v > 1000000000L) {
            snprintf(err, errlen, "model description: '%s' needs an integer, got '%s'", key, value);
            return -1;
        }
        if (!strcmp(key, "attn_layer_idx")) {
            ps->n_attn_idx = 0;
            if (v < 0 || v >= MAMBA2_MAX_PATTERN) {
                snprintf(err, errlen, "model description: attn_layer_idx entry %ld is out of range", v);
                return -1;
            }
            ps->attn_idx[ps->n_attn_idx++] = (int)v;
            ps->in_attn_list = 1;
            continue;
        }
        int* dst = NULL;
        if (!strcmp(key, "d_model")) dst = &c->d_model;
        else if (!strcmp(key, "n_layer")) { dst = &c->n_layer; ps->n_layer_given = 1; }
        else if (!strcmp(key, "d_state")) dst = &c->d_state;
        else if (!strcmp(key, "headdim")) dst = &c->headdim;
        else if (!strcmp(key, "expand")) dst = &c->expand;
        else if (!strcmp(key, "ngroups")) dst = &c->ngroups;
        else if (!strcmp(key, "d_conv")) dst = &c->d_conv;
        else if (!strcmp(key, "vocab")) dst = &c->vocab_size;
        else if (!strcmp(key, "chunk")) dst = &c->chunk_size;
        else if (!strcmp(key, "d_intermediate")) dst = &c->d_intermediate;
        else if (!strcmp(key, "num_heads")) dst = &c->attn_heads;
        else if (!strcmp(key, "num_heads_kv")) dst = &c->attn_kv_heads;
        else if (!strcmp(key, "head_dim")) dst = &c->attn_head_dim;
        else if (!strcmp(key, "rotary_emb_dim")) dst = &c->rotary_dim;
        else if (!strcmp(key, "rotary_emb_base")) dst = &c->rotary_base;
        else if (!strcmp(key, "qkv_proj_bias")) dst = &c->qkv_bias;
        else if (!strcmp(key, "out_proj_bias")) dst = &c->out_bias;
        if (dst == NULL) {
            snprintf(err, errlen, "model description: unknown key '%s' (keys: d_model n_layer d_state headdim expand "
                     "ngroups d_conv vocab chunk; hybrids: pattern attn_layer_idx d_intermediate num_heads "
                     "num_heads_kv head_dim rotary_emb_dim rotary_emb_base qkv_proj_bias out_proj_bias)", key);
            return -1;
        }
        *dst = (int)v;
    }
    return 0;
}

/* the block list from mamba_ssm's form: n_layer layers, a layer's mixer attention if its index is in attn_idx,
   each layer followed by a gated-MLP block when d_intermediate > 0 */
static inline int config_pattern_from_layers_(Mamba2Config* c, const ConfigParseState_* ps, char* err,
                                              size_t errlen) {
    int per = c->d_intermediate > 0 ? 2 : 1;
    if (c->n_layer < 1 || (long long)c->n_layer * per > MAMBA2_MAX_PATTERN) {
        snprintf(err, errlen, "model description: n_layer = %d layers with attention or MLP blocks: 1 to %d blocks "
                 "are supported", c->n_layer, MAMBA2_MAX_PATTERN);
        return -1;
    }
    for (int i = 0; i < ps->n_attn_idx; i++) {
        if (ps->attn_idx[i] >= c->n_layer) {
            snprintf(err, errlen, "model description: attn_layer_idx %d is not a layer of the %d (0-based)",
                     ps->attn_idx[i], c->n_layer);
            return -1;
        }
    }
    int n = 0;
    for (int l = 0; l < c->n_layer; l++) {
        int attn = 0;
        for (int i = 0; i < ps->n_attn_idx; i++) attn |= ps->attn_idx[i] == l;
        c->pattern[n++] = attn ? 'A' : 'M';
        if (per == 2) c->pattern[n++] = 'F';
    }
    c->pattern[n] = '\0';
    c->n_layer = n;
    return 0;
}

/* a pattern of Mamba-2 mixers only is the pure model: the empty pattern (its one form, so that its checkpoints and
   results stay what they were); with attention blocks, the unset attention settings take mamba_ssm's defaults
   (num_heads_kv = num_heads, head_dim = d_model / num_heads, rotary_emb_base 10000) */
static inline int config_normalize_(Mamba2Config* c, char* err, size_t errlen) {
    if (c->pattern[0] != '\0' && strspn(c->pattern, "M") == strlen(c->pattern)) c->pattern[0] = '\0';
    if (config_count_kind(c, 'A') > 0 && c->attn_heads > 0) {
        if (c->attn_kv_heads == 0) c->attn_kv_heads = c->attn_heads;
        if (c->attn_head_dim == 0) {
            if (c->d_model % c->attn_heads != 0) {
                snprintf(err, errlen, "model description: d_model = %d is not divisible by num_heads = %d (give "
                         "head_dim)", c->d_model, c->attn_heads);
                return -1;
            }
            c->attn_head_dim = c->d_model / c->attn_heads;
        }
        if (c->rotary_base == 0) c->rotary_base = 10000;
    }
    return 0;
}

/*
 * Parse a model description: a preset name, or key=value pairs separated by commas, or both
 * ("130m,vocab=257", "d_model=64,n_layer=4,d_state=16,headdim=16"). Keys: d_model n_layer d_state headdim expand
 * ngroups d_conv vocab chunk. Hybrids (doc/hybrid.md): pattern=MFAF (or AF*12: a unit repeated), or mamba_ssm's
 * form attn_layer_idx=3,9 (layers of the n_layer whose mixer is attention) and d_intermediate=N (every layer
 * followed by a gated MLP of hidden size N); attention: num_heads num_heads_kv head_dim rotary_emb_dim
 * rotary_emb_base qkv_proj_bias out_proj_bias (biases off unless set). Returns 0 on success, else -1 with a
 * message in err.
 */
static inline int config_parse(Mamba2Config* c, const char* spec, char* err, size_t errlen) {
    *c = config_default();
    ConfigParseState_ ps;
    memset(&ps, 0, sizeof(ps));
    if (config_apply_spec_(c, &ps, spec, 0, err, errlen) != 0) return -1;
    if (ps.pattern_given) {
        if (ps.n_attn_idx > 0) {
            snprintf(err, errlen, "model description: give the blocks either by pattern=... or by attn_layer_idx=... "
                     "(with d_intermediate), not both");
            return -1;
        }
        int len = (int)strlen(c->pattern);
        if (ps.n_layer_given && c->n_layer != len) {
            snprintf(err, errlen, "model description: n_layer = %d but pattern '%.40s' has %d blocks (n_layer can be "
                     "left out)", c->n_layer, c->pattern, len);
            return -1;
        }
        c->n_layer = len;
    } else if (ps.n_attn_idx > 0 || c->d_intermediate > 0) {
        if (config_pattern_from_layers_(c, &ps, err, errlen) != 0) return -1;
    }
    if (config_normalize_(c, err, errlen) != 0) return -1;
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
    if (!config_is_hybrid(c)) return;
    fprintf(f, "hybrid: pattern %s (%d Mamba-2, %d attention, %d MLP blocks)", c->pattern, c->n_mamba, c->n_attn,
            c->n_mlp);
    if (c->n_attn > 0)
        fprintf(f, "; attention %d heads, %d kv heads, head_dim %d, rotary %d (base %d), biases qkv %d out %d",
                c->attn_heads, c->attn_kv_heads, c->attn_head_dim, c->rotary_dim, c->rotary_base, c->qkv_bias,
                c->out_bias);
    if (c->n_mlp > 0) fprintf(f, "; MLP hidden %d (d_intermediate %d)", c->mlp_hidden, c->d_intermediate);
    fprintf(f, "\n");
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
    INIT_UNIFORM_OUT,    /* the same divided by sqrt(n_layer) (all blocks): the pre-norm residual rescale of out_proj
                            and fc2 (mamba_ssm: sqrt(n_residuals_per_layer * its n_layer), the same number) */
    INIT_ONES,           /* norm weights, D skip */
    INIT_DT_BIAS,        /* inverse softplus of dt ~ exp(U(log 0.001, log 0.1)), clamped >= 1e-4 */
    INIT_A_LOG,          /* log(U(1, 16)) */
    INIT_ZEROS,          /* biases (mamba_ssm's _init_weights zeroes every Linear bias) */
} InitKind;

typedef struct {
    const char* name;     /* our name; also the field of ParameterTensors at the same index */
    const char* hf_name;  /* name in the public checkpoints; per-layer names have one %d for the layer */
    int per_layer;        /* 1: one copy per block of its kind (`copies` of them), stored (copies, rows, cols) */
    size_t rows, cols;    /* shape of one copy (cols = 1 for vectors) */
    int weight_decay;     /* 1: AdamW decays it (matrices and the embedding); 0: A_log, D, dt_bias, norms, biases */
    InitKind init;
    int fan_in;           /* for the uniform inits */
    size_t offset;        /* in elements, into the single parameter allocation */
    size_t numel;         /* total, all layers */
    char kind;            /* per-block tensors: the blocks that have a copy, 'N' every block (the pre-norm), 'M' the
                             Mamba-2 mixers, 'A' attention, 'F' gated MLPs; 0 for a whole tensor */
    int copies;           /* copies stored (the blocks of that kind; 1 for a whole tensor) */
} ParamSpec;

/* The Mamba-2 tensors first, in the order they always had; the attention and MLP tensors after norm_f_w, so a pure
   Mamba-2 model (where they have no element) keeps its layout, checkpoints and offsets. The Mamba-2 mixer tensors
   have one copy per 'M' block (slot config_block_slot), norm_w one per block. */
enum {
    P_WTE, P_NORM_W, P_IN_PROJ_W, P_CONV_W, P_CONV_B, P_DT_BIAS, P_A_LOG, P_D, P_GNORM_W, P_OUT_PROJ_W, P_NORM_F_W,
    P_ATTN_IN_W, P_ATTN_IN_B, P_ATTN_OUT_W, P_ATTN_OUT_B, P_MLP_FC1_W, P_MLP_FC2_W,
    NUM_PARAM_TENSORS
};

/* fills the table (shapes, offsets) from the config; returns the total number of parameters */
static inline size_t param_table_build(ParamSpec t[NUM_PARAM_TENSORS], const Mamba2Config* c) {
    size_t D = c->d_model, E = c->d_inner, H = c->nheads, K = c->d_conv;
    size_t QKV = c->attn_qkv_dim, AO = c->attn_out_dim, Hm = c->mlp_hidden;
    const ParamSpec specs[NUM_PARAM_TENSORS] = {
        {"wte", "backbone.embeddings.weight", 0, (size_t)c->padded_vocab_size, D, 1, INIT_NORMAL_002, 0, 0, 0, 0, 0},
        {"norm_w", "backbone.layers.%d.norm.weight", 1, D, 1, 0, INIT_ONES, 0, 0, 0, 'N', 0},
        {"in_proj_w", "backbone.layers.%d.mixer.in_proj.weight", 1, (size_t)c->d_in_proj, D, 1, INIT_UNIFORM_FANIN,
         (int)D, 0, 0, 'M', 0},
        {"conv_w", "backbone.layers.%d.mixer.conv1d.weight", 1, (size_t)c->conv_dim, K, 1, INIT_UNIFORM_FANIN,
         (int)K, 0, 0, 'M', 0},
        {"conv_b", "backbone.layers.%d.mixer.conv1d.bias", 1, (size_t)c->conv_dim, 1, 0, INIT_UNIFORM_FANIN, (int)K,
         0, 0, 'M', 0},
        {"dt_bias", "backbone.layers.%d.mixer.dt_bias", 1, H, 1, 0, INIT_DT_BIAS, 0, 0, 0, 'M', 0},
        {"A_log", "backbone.layers.%d.mixer.A_log", 1, H, 1, 0, INIT_A_LOG, 0, 0, 0, 'M', 0},
        {"D", "backbone.layers.%d.mixer.D", 1, H, 1, 0, INIT_ONES, 0, 0, 0, 'M', 0},
        {"gnorm_w", "backbone.layers.%d.mixer.norm.weight", 1, E, 1, 0, INIT_ONES, 0, 0, 0, 'M', 0},
        {"out_proj_w", "backbone.layers.%d.mixer.out_proj.weight", 1, D, E, 1, INIT_UNIFORM_OUT, (int)E, 0, 0, 'M', 0},
        {"norm_f_w", "backbone.norm_f.weight", 0, D, 1, 0, INIT_ONES, 0, 0, 0, 0, 0},
        /* attention: in_proj rows per position [q (Hq hd) | k (Hkv hd) | v (Hkv hd)]; out_proj over the heads */
        {"attn_in_w", "backbone.layers.%d.mixer.in_proj.weight", 1, QKV, D, 1, INIT_UNIFORM_FANIN, (int)D, 0, 0, 'A',
         0},
        {"attn_in_b", "backbone.layers.%d.mixer.in_proj.bias", 1, c->qkv_bias ? QKV : 0, 1, 0, INIT_ZEROS, 0, 0, 0,
         'A', 0},
        {"attn_out_w", "backbone.layers.%d.mixer.out_proj.weight", 1, AO > 0 ? D : 0, AO, 1, INIT_UNIFORM_OUT, (int)AO,
         0, 0, 'A', 0},
        {"attn_out_b", "backbone.layers.%d.mixer.out_proj.bias", 1, c->out_bias ? D : 0, 1, 0, INIT_ZEROS, 0, 0, 0,
         'A', 0},
        /* gated MLP: fc1 rows [y (Hm) | gate (Hm)], out = fc2(y * silu(gate)) */
        {"mlp_fc1_w", "backbone.layers.%d.mlp.fc1.weight", 1, 2 * Hm, D, 1, INIT_UNIFORM_FANIN, (int)D, 0, 0, 'F', 0},
        {"mlp_fc2_w", "backbone.layers.%d.mlp.fc2.weight", 1, Hm > 0 ? D : 0, Hm, 1, INIT_UNIFORM_OUT, (int)Hm, 0, 0,
         'F', 0},
    };
    size_t offset = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        t[i] = specs[i];
        t[i].copies = t[i].kind == 0 ? 1 : t[i].kind == 'N' ? c->n_layer : config_count_kind(c, t[i].kind);
        t[i].numel = t[i].rows * t[i].cols * (size_t)t[i].copies;
        t[i].offset = offset;
        offset += t[i].numel;
    }
    return offset;
}

/* the layers of the mamba_ssm model (MambaLMHeadModel) with this block list, or -1 if it has none: mamba_ssm's
   layer is a mixer (Mamba-2 or attention) and, when d_intermediate > 0, a gated MLP after it, in every layer. So
   the pattern is a list of M / A, or of MF / AF pairs. */
static inline int config_mamba_ssm_layers(const Mamba2Config* c) {
    if (c->n_mlp == 0) return c->n_layer;
    if (c->n_layer % 2 != 0) return -1;
    for (int b = 0; b < c->n_layer; b += 2)
        if (config_block_kind(c, b) == 'F' || config_block_kind(c, b + 1) != 'F') return -1;
    return c->n_layer / 2;
}

/* the block of a per-block tensor's copy (the copy-th block of its kind) */
static inline int param_copy_block(const Mamba2Config* c, const ParamSpec* s, int copy) {
    if (s->kind == 'N' || !config_is_hybrid(c)) return copy;
    for (int b = 0, n = 0; b < c->n_layer; b++)
        if (c->pattern[b] == s->kind && n++ == copy) return b;
    return -1;
}

/* the name of copy `copy` of a tensor in mamba_ssm / HF checkpoints (a block's layer index, norm2 for the norm of a
   layer's MLP); 0, or -1 if the model has no mamba_ssm form (config_mamba_ssm_layers) */
static inline int param_hf_name(char* out, size_t n, const Mamba2Config* c, const ParamSpec* s, int copy) {
    if (s->kind == 0) { snprintf(out, n, "%s", s->hf_name); return 0; }
    if (config_mamba_ssm_layers(c) < 0) return -1;
    int b = param_copy_block(c, s, copy);
    if (b < 0) return -1;
    int layer = c->n_mlp > 0 ? b / 2 : b;
    if (s->kind == 'N' && config_block_kind(c, b) == 'F') snprintf(out, n, "backbone.layers.%d.norm2.weight", layer);
    else snprintf(out, n, s->hf_name, layer);
    return 0;
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
            case INIT_ZEROS: p[i] = 0.0f; break;
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
 * Version 3 (#25): a hybrid model (attention / MLP blocks): version 2 plus the attention and MLP settings at
 * CKPT_H_HYBRID.. and the pattern at CKPT_H_PATTERN (4 block kinds an int, byte i of the pattern at bits 8 (i % 4)
 * of int i / 4). A pure Mamba-2 model is still written as version 2, byte for byte as before.
 * Written to "<path>.tmp", flushed to disk, renamed, and the folder synced, so a crash or a full disk never leaves
 * a half-written checkpoint under the real name.
 */

#define CKPT_MAGIC 20260523
#define CKPT_VERSION 2
#define CKPT_VERSION_HYBRID 3
enum {
    CKPT_H_MAGIC = 0, CKPT_H_VERSION, CKPT_H_D_MODEL, CKPT_H_N_LAYER, CKPT_H_D_STATE, CKPT_H_HEADDIM,
    CKPT_H_EXPAND, CKPT_H_NGROUPS, CKPT_H_D_CONV, CKPT_H_VOCAB, CKPT_H_PADDED_VOCAB, CKPT_H_CHUNK,
    CKPT_H_HAS_OPT, CKPT_H_NPARAMS_LO, CKPT_H_NPARAMS_HI, CKPT_H_SUM_LO, CKPT_H_SUM_HI,
    CKPT_H_HYBRID, CKPT_H_ATTN_HEADS, CKPT_H_ATTN_KV_HEADS, CKPT_H_ATTN_HEAD_DIM, CKPT_H_ROTARY_DIM,
    CKPT_H_ROTARY_BASE, CKPT_H_QKV_BIAS, CKPT_H_OUT_BIAS, CKPT_H_D_INTERMEDIATE,
    CKPT_H_PATTERN = 128 /* to 255: MAMBA2_MAX_PATTERN bytes */
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
    if (config_is_hybrid(c)) {
        header[CKPT_H_VERSION] = CKPT_VERSION_HYBRID;
        header[CKPT_H_HYBRID] = 1;
        header[CKPT_H_ATTN_HEADS] = c->attn_heads;
        header[CKPT_H_ATTN_KV_HEADS] = c->attn_kv_heads;
        header[CKPT_H_ATTN_HEAD_DIM] = c->attn_head_dim;
        header[CKPT_H_ROTARY_DIM] = c->rotary_dim;
        header[CKPT_H_ROTARY_BASE] = c->rotary_base;
        header[CKPT_H_QKV_BIAS] = c->qkv_bias;
        header[CKPT_H_OUT_BIAS] = c->out_bias;
        header[CKPT_H_D_INTERMEDIATE] = c->d_intermediate;
        for (int i = 0; i < MAMBA2_MAX_PATTERN && c->pattern[i]; i++)
            header[CKPT_H_PATTERN + i / 4] = (int32_t)((uint32_t)header[CKPT_H_PATTERN + i / 4] |
                                                       ((uint32_t)(unsigned char)c->pattern[i] << (8 * (i % 4))));
    }
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
    if (h[CKPT_H_VERSION] != 1 && h[CKPT_H_VERSION] != CKPT_VERSION && h[CKPT_H_VERSION] != CKPT_VERSION_HYBRID)
        return ckpt_fail_(f, err, errlen, "checkpoint %s: version %d, this build reads versions 1 to %d", path,
                          h[CKPT_H_VERSION], CKPT_VERSION_HYBRID);
    Mamba2Config c;
    memset(&c, 0, sizeof(c));
    c.d_model = h[CKPT_H_D_MODEL]; c.n_layer = h[CKPT_H_N_LAYER]; c.d_state = h[CKPT_H_D_STATE];
    c.headdim = h[CKPT_H_HEADDIM]; c.expand = h[CKPT_H_EXPAND]; c.ngroups = h[CKPT_H_NGROUPS];
    c.d_conv = h[CKPT_H_D_CONV]; c.vocab_size = h[CKPT_H_VOCAB]; c.chunk_size = h[CKPT_H_CHUNK];
    if ((h[CKPT_H_VERSION] == CKPT_VERSION_HYBRID) != (h[CKPT_H_HYBRID] == 1))
        return ckpt_fail_(f, err, errlen, "checkpoint %s: version %d with hybrid flag %d (corrupt header)", path,
                          h[CKPT_H_VERSION], h[CKPT_H_HYBRID]);
    if (h[CKPT_H_VERSION] == CKPT_VERSION_HYBRID) {
        c.attn_heads = h[CKPT_H_ATTN_HEADS]; c.attn_kv_heads = h[CKPT_H_ATTN_KV_HEADS];
        c.attn_head_dim = h[CKPT_H_ATTN_HEAD_DIM]; c.rotary_dim = h[CKPT_H_ROTARY_DIM];
        c.rotary_base = h[CKPT_H_ROTARY_BASE]; c.qkv_bias = h[CKPT_H_QKV_BIAS]; c.out_bias = h[CKPT_H_OUT_BIAS];
        c.d_intermediate = h[CKPT_H_D_INTERMEDIATE];
        for (int i = 0; i < MAMBA2_MAX_PATTERN; i++)
            c.pattern[i] = (char)(((uint32_t)h[CKPT_H_PATTERN + i / 4] >> (8 * (i % 4))) & 0xff);
        c.pattern[MAMBA2_MAX_PATTERN] = '\0';
        if (c.pattern[0] == '\0' || strspn(c.pattern, "M") == strlen(c.pattern))
            return ckpt_fail_(f, err, errlen, "checkpoint %s: hybrid header without attention or MLP blocks "
                              "(corrupt header)", path);
    }
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
           a->d_conv == b->d_conv && a->vocab_size == b->vocab_size && strcmp(a->pattern, b->pattern) == 0 &&
           a->attn_heads == b->attn_heads && a->attn_kv_heads == b->attn_kv_heads &&
           a->attn_head_dim == b->attn_head_dim && a->rotary_dim == b->rotary_dim &&
           a->rotary_base == b->rotary_base && a->qkv_bias == b->qkv_bias && a->out_bias == b->out_bias &&
           a->d_intermediate == b->d_intermediate;
}

#endif
