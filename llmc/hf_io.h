/*
 * hf_io.h: import and export of public Mamba-2 checkpoints (SPEC.md sections 7 and 8). Header-only C11, also
 * compiles as C++ (the GPU trainer includes it).
 *
 *   import  a folder holding config.json and model.safetensors (or shards listed in model.safetensors.index.json),
 *           in either naming:
 *             HF transformers  (Mamba2ForCausalLM.save_pretrained): hidden_size, num_hidden_layers, state_size,
 *                              head_dim, n_groups, ...; backbone.embeddings.weight with vocab_size rows
 *             mamba_ssm        (MambaLMHeadModel's config.json, weights converted with scripts/convert_mamba_ssm.py):
 *                              d_model, n_layer, ssm_cfg {...}; backbone.embedding.weight with vocab_size rounded
 *                              up to pad_vocab_size_multiple rows
 *           into a Mamba2Config and fp32 parameters in our table's layout (llmc/mamba2_model.h). F32, BF16, F16 and
 *           F64 tensors are accepted (converted to fp32). Our vocab_size is the config's vocab_size (the real
 *           vocabulary in mamba_ssm's files; in HF's, whatever the file says, often already padded); our table pads
 *           the embedding to a multiple of 16 rows and those extra rows are zero.
 *           Anything this project's model cannot represent is refused with the field and its value: MLP blocks
 *           (d_intermediate > 0), attention layers, an untied LM head, non-RMS norms, norm_before_gate, a per-channel
 *           D, biases in the projections, no conv bias, a time_step_limit that clamps, an eps other than 1e-5, a
 *           Mamba-1 layer, extra or missing tensors, wrong shapes.
 *
 *   export  HF_STYLE_TRANSFORMERS: config.json + model.safetensors (fp32) that Mamba2ForCausalLM.from_pretrained
 *           loads. Decision: the padded embedding rows are DROPPED and vocab_size = our real vocabulary, so HF's
 *           logits are exactly our first V logits, and import(export(x)) == x. The LM head is tied (not written,
 *           as HF itself does). Refused for ngroups > 1 unless forced: HF's gated norm normalizes over all E
 *           channels, mamba_ssm's (and ours) over each group of E/G (SPEC.md section 8), so HF would compute
 *           another function.
 *           HF_STYLE_MAMBA_SSM: config.json in MambaConfig's fields + model.safetensors with mamba_ssm's names
 *           (backbone.embedding.weight with the padded rows, lm_head.weight written too, as its state_dict has it).
 *           mamba_ssm's from_pretrained reads pytorch_model.bin: convert with one line of torch (README).
 *
 * Errors come back through err (they name the file, the field or tensor, and the value); nothing here exits.
 */
#ifndef MAMBA2_HF_IO_H
#define MAMBA2_HF_IO_H

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "mamba2_model.h"
#include "json.h"
#include "safetensors.h"
#include "safetensors_write.h"

typedef enum { HF_STYLE_TRANSFORMERS = 0, HF_STYLE_MAMBA_SSM = 1 } HfStyle;

#define HF_MAX_SHARDS 256

/* 1 if path is a folder holding a config.json (what -e DIR means), else 0 */
static inline int hf_is_model_dir(const char* path) {
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return 0;
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", path);
    return stat(p, &sb) == 0;
}

/* reads a whole (text) file; *out is malloc'd and NUL-terminated */
static inline int hf_read_file_(const char* path, char** out, size_t* len, char* err, size_t errlen) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) return json_fail_(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return json_fail_(err, errlen, "%s: cannot seek", path); }
    long n = ftell(f);
    if (n < 0 || n > (64L << 20)) {
        fclose(f);
        return json_fail_(err, errlen, "%s: size %ld is not that of a config file (limit 64 MB)", path, n);
    }
    rewind(f);
    char* s = (char*)malloc((size_t)n + 1);
    if (s == NULL) { fclose(f); return json_fail_(err, errlen, "%s: out of memory", path); }
    if (fread(s, 1, (size_t)n, f) != (size_t)n) {
        fclose(f); free(s);
        return json_fail_(err, errlen, "%s: read error", path);
    }
    fclose(f);
    s[n] = '\0';
    *out = s;
    *len = (size_t)n;
    return 0;
}

/* reads and parses a whole JSON file (config.json, the shard index) into *root; the caller json_free()s it */
static inline int hf_read_json_(const char* path, JsonValue* root, char* err, size_t errlen) {
    char* text = NULL;
    size_t len = 0;
    if (hf_read_file_(path, &text, &len, err, errlen) != 0) return -1;
    char jerr[300];
    int rc = json_parse(root, text, len, JSON_ALLOW_NONFINITE, jerr, sizeof jerr);
    free(text);
    return rc != 0 ? json_fail_(err, errlen, "%s: %s", path, jerr) : 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * config.json readers. A missing optional field takes the library's default (HF's save_pretrained omits every
 * field equal to Mamba2Config's default; mamba_ssm's MambaConfig and Mamba2 defaults likewise). */

/* an integer field; def < -1000000 marks it required */
#define HF_REQUIRED (-2000000000)
static inline int hf_int_(const JsonValue* obj, const char* where, const char* key, long long def, int* out,
                          char* err, size_t errlen) {
    const JsonValue* v = json_get(obj, key);
    if (v == NULL || v->type == JSON_NULL) {
        if (def == HF_REQUIRED) return json_fail_(err, errlen, "%s: field %s is missing", where, key);
        *out = (int)def;
        return 0;
    }
    if (v->type != JSON_NUMBER)
        return json_fail_(err, errlen, "%s: field %s: expected an integer, got a %s", where, key, json_type_name(v->type));
    if (v->number != floor(v->number) || fabs(v->number) > 1e9)
        return json_fail_(err, errlen, "%s: field %s: expected an integer, got %.17g", where, key, v->number);
    *out = (int)v->number;
    return 0;
}

static inline int hf_bool_(const JsonValue* obj, const char* where, const char* key, int def, int* out, char* err,
                           size_t errlen) {
    const JsonValue* v = json_get(obj, key);
    if (v == NULL || v->type == JSON_NULL) { *out = def; return 0; }
    if (v->type != JSON_BOOL)
        return json_fail_(err, errlen, "%s: field %s: expected true or false, got a %s", where, key,
                          json_type_name(v->type));
    *out = v->boolean;
    return 0;
}

/* a float: a JSON number, NaN/Infinity (Python's json), or {"__float__": "Infinity"} (transformers 5.x) */
static inline int hf_float_value_(const JsonValue* v, double* out) {
    if (v->type == JSON_NUMBER) { *out = v->number; return 0; }
    if (v->type == JSON_OBJECT && v->count == 1) {
        const JsonValue* s = json_get(v, "__float__");
        if (s != NULL && s->type == JSON_STRING) {
            if (strcmp(s->string, "Infinity") == 0 || strcmp(s->string, "inf") == 0) { *out = INFINITY; return 0; }
            if (strcmp(s->string, "-Infinity") == 0 || strcmp(s->string, "-inf") == 0) { *out = -INFINITY; return 0; }
            if (strcmp(s->string, "NaN") == 0 || strcmp(s->string, "nan") == 0) { *out = NAN; return 0; }
        }
    }
    return -1;
}

static inline int hf_float_(const JsonValue* obj, const char* where, const char* key, double def, double* out,
                            char* err, size_t errlen) {
    const JsonValue* v = json_get(obj, key);
    if (v == NULL || v->type == JSON_NULL) { *out = def; return 0; }
    if (hf_float_value_(v, out) != 0)
        return json_fail_(err, errlen, "%s: field %s: expected a number, got a %s", where, key, json_type_name(v->type));
    return 0;
}

/* a string field that, when present, must equal want */
static inline int hf_string_is_(const JsonValue* obj, const char* where, const char* key, const char* want,
                                const char* why, char* err, size_t errlen) {
    const JsonValue* v = json_get(obj, key);
    if (v == NULL || v->type == JSON_NULL) return 0;
    if (v->type != JSON_STRING)
        return json_fail_(err, errlen, "%s: field %s: expected a string, got a %s", where, key, json_type_name(v->type));
    if (strcmp(v->string, want) != 0)
        return json_fail_(err, errlen, "%s: %s = \"%s\" is not supported: %s", where, key, v->string, why);
    return 0;
}

/* the dt clamp (lo, hi): only (<= 0, +inf) is the identity on softplus's output, which is what we compute */
static inline int hf_check_dt_limit_(const JsonValue* obj, const char* where, const char* key, char* err,
                                     size_t errlen) {
    const JsonValue* v = json_get(obj, key);
    if (v == NULL || v->type == JSON_NULL) return 0;
    double lo, hi;
    if (v->type != JSON_ARRAY || v->count != 2 || hf_float_value_(&v->items[0], &lo) != 0 ||
        hf_float_value_(&v->items[1], &hi) != 0)
        return json_fail_(err, errlen, "%s: field %s: expected [low, high], two numbers", where, key);
    if (!(lo <= 0.0) || !(isinf(hi) && hi > 0))
        return json_fail_(err, errlen, "%s: %s = [%g, %g] clamps dt; only [0.0, Infinity] (no clamp) is supported",
                          where, key, lo, hi);
    return 0;
}

static inline int hf_check_eps_(double eps, const char* where, const char* key, char* err, size_t errlen) {
    if (fabs(eps - 1e-5) > 1e-12)
        return json_fail_(err, errlen, "%s: %s = %g; this project's norms hard-code eps = 1e-5 (MAMBA2_NORM_EPS)",
                          where, key, eps);
    return 0;
}

/* HF transformers' Mamba2Config (checked against 5.17's defaults: dev/fixtures/interop/hf_defaults.json) */
static inline int hf_config_transformers_(const JsonValue* root, const char* where, Mamba2Config* c, int* emb_rows,
                                          char* err, size_t errlen) {
    int num_heads = 0, tie = 0, use_bias = 0, use_conv_bias = 1, rms_norm = 1, norm_before_gate = 0;
    double eps = 1e-5;
    if (hf_int_(root, where, "hidden_size", 4096, &c->d_model, err, errlen) ||
        hf_int_(root, where, "num_hidden_layers", 64, &c->n_layer, err, errlen) ||
        hf_int_(root, where, "state_size", 128, &c->d_state, err, errlen) ||
        hf_int_(root, where, "head_dim", 64, &c->headdim, err, errlen) ||
        hf_int_(root, where, "num_heads", 128, &num_heads, err, errlen) ||
        hf_int_(root, where, "expand", 2, &c->expand, err, errlen) ||
        hf_int_(root, where, "n_groups", 8, &c->ngroups, err, errlen) ||
        hf_int_(root, where, "conv_kernel", 4, &c->d_conv, err, errlen) ||
        hf_int_(root, where, "vocab_size", 32768, &c->vocab_size, err, errlen) ||
        hf_int_(root, where, "chunk_size", 256, &c->chunk_size, err, errlen) ||
        hf_float_(root, where, "layer_norm_epsilon", 1e-5, &eps, err, errlen) ||
        hf_bool_(root, where, "tie_word_embeddings", 0, &tie, err, errlen) ||
        hf_bool_(root, where, "use_bias", 0, &use_bias, err, errlen) ||
        hf_bool_(root, where, "use_conv_bias", 1, &use_conv_bias, err, errlen) ||
        hf_bool_(root, where, "rms_norm", 1, &rms_norm, err, errlen) ||
        hf_bool_(root, where, "norm_before_gate", 0, &norm_before_gate, err, errlen) ||
        hf_check_dt_limit_(root, where, "time_step_limit", err, errlen) ||
        hf_check_eps_(eps, where, "layer_norm_epsilon", err, errlen) ||
        hf_string_is_(root, where, "hidden_act", "silu", "the mixer's activation is SiLU", err, errlen) ||
        hf_string_is_(root, where, "model_type", "mamba2", "not a Mamba-2 model", err, errlen))
        return -1;
    if (!tie) return json_fail_(err, errlen, "%s: tie_word_embeddings = false (or missing: HF's default is false): "
                                "this project's LM head is the token embedding", where);
    if (use_bias) return json_fail_(err, errlen, "%s: use_bias = true: in_proj/out_proj biases are not supported", where);
    if (!use_conv_bias) return json_fail_(err, errlen, "%s: use_conv_bias = false: the conv1d bias is required", where);
    if (!rms_norm) return json_fail_(err, errlen, "%s: rms_norm = false: only RMSNorm is supported", where);
    if (norm_before_gate) return json_fail_(err, errlen, "%s: norm_before_gate = true: the gated norm here comes "
                                            "after the gate", where);
    if (c->headdim > 0 && (long long)num_heads * c->headdim != (long long)c->expand * c->d_model)
        return json_fail_(err, errlen, "%s: num_heads = %d times head_dim = %d is not expand * hidden_size = %lld "
                          "(a partial-SSM layer is not supported)", where, num_heads, c->headdim,
                          (long long)c->expand * c->d_model);
    *emb_rows = c->vocab_size;
    return 0;
}

/*
 * mamba_ssm's hybrid fields (doc/hybrid.md): attn_layer_idx (the layers whose mixer is attention), attn_cfg (MHA's
 * arguments, with MHA's defaults when absent: qkv_proj_bias and out_proj_bias TRUE, causal FALSE, which a language
 * model must set), d_intermediate (> 0: a gated MLP after every mixer). Sets c->pattern and the attention and MLP
 * fields (n_layer becomes the block count) and derives c; refuses what this project does not compute.
 */
static inline int hf_config_hybrid_(const JsonValue* root, const char* where, Mamba2Config* c, int d_intermediate,
                                    char* err, size_t errlen) {
    ConfigParseState_ ps;
    memset(&ps, 0, sizeof ps);
    const JsonValue* attn = json_get(root, "attn_layer_idx");
    if (attn != NULL && attn->type != JSON_NULL) {
        if (attn->type != JSON_ARRAY)
            return json_fail_(err, errlen, "%s: field attn_layer_idx: expected an array, got a %s", where,
                              json_type_name(attn->type));
        if (attn->count > MAMBA2_MAX_PATTERN)
            return json_fail_(err, errlen, "%s: attn_layer_idx has %d entries, at most %d are supported", where,
                              attn->count, MAMBA2_MAX_PATTERN);
        for (int i = 0; i < attn->count; i++) {
            double v;
            const JsonValue* it = &attn->items[i];
            if (it->type != JSON_NUMBER || hf_float_value_(it, &v) != 0 || v != floor(v) || v < 0 || v >= c->n_layer)
                return json_fail_(err, errlen, "%s: attn_layer_idx[%d] must be a layer index in [0, n_layer = %d)",
                                  where, i, c->n_layer);
            ps.attn_idx[ps.n_attn_idx++] = (int)v;
        }
    }
    c->d_intermediate = d_intermediate;
    if (ps.n_attn_idx == 0 && d_intermediate == 0) { c->n_mamba = c->n_layer; return 0; }
    if (ps.n_attn_idx > 0) {
        const JsonValue* a = json_get(root, "attn_cfg");
        if (a == NULL || a->type != JSON_OBJECT)
            return json_fail_(err, errlen, "%s: attention layers need attn_cfg (an object with num_heads)", where);
        char w2[4300];
        snprintf(w2, sizeof w2, "%s attn_cfg", where);
        int interleaved = 0, causal = 0, d_conv = 0, mlp_dim = 0, heads = 0;
        double base = 10000.0;
        if (hf_int_(a, w2, "num_heads", 0, &heads, err, errlen) ||
            hf_int_(a, w2, "num_heads_kv", heads, &c->attn_kv_heads, err, errlen) ||
            hf_int_(a, w2, "head_dim", heads > 0 ? c->d_model / heads : 0, &c->attn_head_dim, err, errlen) ||
            hf_int_(a, w2, "rotary_emb_dim", 0, &c->rotary_dim, err, errlen) ||
            hf_float_(a, w2, "rotary_emb_base", 10000.0, &base, err, errlen) ||
            hf_bool_(a, w2, "rotary_emb_interleaved", 0, &interleaved, err, errlen) ||
            hf_bool_(a, w2, "qkv_proj_bias", 1, &c->qkv_bias, err, errlen) ||
            hf_bool_(a, w2, "out_proj_bias", 1, &c->out_bias, err, errlen) ||
            hf_bool_(a, w2, "causal", 0, &causal, err, errlen) ||
            hf_int_(a, w2, "d_conv", 0, &d_conv, err, errlen) ||
            hf_int_(a, w2, "mlp_dim", 0, &mlp_dim, err, errlen))
            return -1;
        c->attn_heads = heads;
        if (!causal) return json_fail_(err, errlen, "%s: causal is false (MHA's default): a language model needs "
                                       "causal attention (set \"causal\": true)", w2);
        if (interleaved) return json_fail_(err, errlen, "%s: rotary_emb_interleaved = true is not supported (only "
                                           "flash_attn's rotate-half form)", w2);
        if (d_conv != 0) return json_fail_(err, errlen, "%s: d_conv = %d: a conv before attention is not supported",
                                           w2, d_conv);
        if (mlp_dim != 0) return json_fail_(err, errlen, "%s: mlp_dim = %d: an MLP inside the attention block is not "
                                            "supported", w2, mlp_dim);
        const JsonValue* scale = json_get(a, "softmax_scale");
        if (scale != NULL && scale->type != JSON_NULL)
            return json_fail_(err, errlen, "%s: softmax_scale is set: only the default 1/sqrt(head_dim) is supported",
                              w2);
        if (base != floor(base) || base < 1 || base > MAMBA2_MAX_ROTARY_BASE)
            return json_fail_(err, errlen, "%s: rotary_emb_base = %g: an integer in [1, %d] is supported", w2, base,
                              MAMBA2_MAX_ROTARY_BASE);
        c->rotary_base = (int)base;
        if (heads > 0 && json_get(a, "head_dim") == NULL && c->d_model % heads != 0)
            return json_fail_(err, errlen, "%s: d_model = %d is not divisible by num_heads = %d and head_dim is not "
                              "given", w2, c->d_model, heads);
    }
    if (config_pattern_from_layers_(c, &ps, err, errlen) != 0) return -1;
    if (config_normalize_(c, err, errlen) != 0) return -1;
    c->n_mamba = config_count_kind(c, 'M'); /* the rest is checked and derived once ssm_cfg is read */
    return 0;
}

/* mamba_ssm's MambaConfig + the Mamba2 mixer's arguments in ssm_cfg */
static inline int hf_config_mamba_ssm_(const JsonValue* root, const char* where, Mamba2Config* c, int* emb_rows,
                                       char* err, size_t errlen) {
    int d_intermediate = 0, rms_norm = 1, tie = 1, pad_multiple = 8, d_ssm = -1, rmsnorm = 1, norm_before_gate = 0;
    int D_has_hdim = 0, bias = 0, conv_bias = 1;
    double eps = 1e-5;
    if (hf_int_(root, where, "d_model", 2560, &c->d_model, err, errlen) ||
        hf_int_(root, where, "n_layer", 64, &c->n_layer, err, errlen) ||
        hf_int_(root, where, "vocab_size", 50277, &c->vocab_size, err, errlen) ||
        hf_int_(root, where, "d_intermediate", 0, &d_intermediate, err, errlen) ||
        hf_bool_(root, where, "rms_norm", 1, &rms_norm, err, errlen) ||
        hf_bool_(root, where, "tie_embeddings", 1, &tie, err, errlen) ||
        hf_int_(root, where, "pad_vocab_size_multiple", 8, &pad_multiple, err, errlen) ||
        hf_float_(root, where, "norm_epsilon", 1e-5, &eps, err, errlen) ||
        hf_check_eps_(eps, where, "norm_epsilon", err, errlen))
        return -1;
    if (d_intermediate < 0 || d_intermediate > MAMBA2_MAX_D_INTERMEDIATE)
        return json_fail_(err, errlen, "%s: d_intermediate = %d, must be in [0, %d]", where, d_intermediate,
                          MAMBA2_MAX_D_INTERMEDIATE);
    if (hf_config_hybrid_(root, where, c, d_intermediate, err, errlen) != 0) return -1;
    if (!rms_norm) return json_fail_(err, errlen, "%s: rms_norm = false: only RMSNorm is supported", where);
    if (!tie) return json_fail_(err, errlen, "%s: tie_embeddings = false: this project's LM head is the token "
                                "embedding", where);
    if (pad_multiple < 1 || pad_multiple > 65536)
        return json_fail_(err, errlen, "%s: pad_vocab_size_multiple = %d, must be in 1..65536", where, pad_multiple);
    const JsonValue* ssm = json_get(root, "ssm_cfg");
    JsonValue empty;
    memset(&empty, 0, sizeof empty);
    empty.type = JSON_OBJECT;
    if (ssm == NULL || ssm->type == JSON_NULL) ssm = &empty;
    if (ssm->type != JSON_OBJECT)
        return json_fail_(err, errlen, "%s: field ssm_cfg: expected an object, got a %s", where, json_type_name(ssm->type));
    char w2[4300];
    snprintf(w2, sizeof w2, "%s ssm_cfg", where);
    const JsonValue* layer = json_get(ssm, "layer");
    if (c->n_mamba > 0 && (layer == NULL || layer->type != JSON_STRING || strcmp(layer->string, "Mamba2") != 0))
        return json_fail_(err, errlen, "%s: layer is %s%s%s: mamba_ssm builds Mamba-1 blocks unless layer = "
                          "\"Mamba2\"; only Mamba-2 is supported", w2, layer && layer->type == JSON_STRING ? "\"" : "",
                          layer == NULL ? "missing" : layer->type == JSON_STRING ? layer->string : "not a string",
                          layer && layer->type == JSON_STRING ? "\"" : "");
    if (hf_int_(ssm, w2, "d_state", 128, &c->d_state, err, errlen) ||
        hf_int_(ssm, w2, "d_conv", 4, &c->d_conv, err, errlen) ||
        hf_int_(ssm, w2, "expand", 2, &c->expand, err, errlen) ||
        hf_int_(ssm, w2, "headdim", 64, &c->headdim, err, errlen) ||
        hf_int_(ssm, w2, "ngroups", 1, &c->ngroups, err, errlen) ||
        hf_int_(ssm, w2, "chunk_size", 256, &c->chunk_size, err, errlen) ||
        hf_int_(ssm, w2, "d_ssm", -1, &d_ssm, err, errlen) ||
        hf_bool_(ssm, w2, "rmsnorm", 1, &rmsnorm, err, errlen) ||
        hf_bool_(ssm, w2, "norm_before_gate", 0, &norm_before_gate, err, errlen) ||
        hf_bool_(ssm, w2, "D_has_hdim", 0, &D_has_hdim, err, errlen) ||
        hf_bool_(ssm, w2, "bias", 0, &bias, err, errlen) ||
        hf_bool_(ssm, w2, "conv_bias", 1, &conv_bias, err, errlen) ||
        hf_check_dt_limit_(ssm, w2, "dt_limit", err, errlen))
        return -1;
    if (d_ssm != -1 && (long long)d_ssm != (long long)c->expand * c->d_model)
        return json_fail_(err, errlen, "%s: d_ssm = %d differs from expand * d_model = %lld: a partial-SSM layer (MLP "
                          "part in the mixer) is not supported", w2, d_ssm, (long long)c->expand * c->d_model);
    if (!rmsnorm) return json_fail_(err, errlen, "%s: rmsnorm = false: the gated RMSNorm is required", w2);
    if (norm_before_gate) return json_fail_(err, errlen, "%s: norm_before_gate = true is not supported", w2);
    if (D_has_hdim) return json_fail_(err, errlen, "%s: D_has_hdim = true (a D per channel) is not supported", w2);
    if (bias) return json_fail_(err, errlen, "%s: bias = true: in_proj/out_proj biases are not supported", w2);
    if (!conv_bias) return json_fail_(err, errlen, "%s: conv_bias = false: the conv1d bias is required", w2);
    *emb_rows = round_up(c->vocab_size, pad_multiple);
    return 0;
}

/* reads dir/config.json into *c (derived fields filled in); style and the embedding's row count in the file */
static inline int hf_read_config(const char* dir, Mamba2Config* c, HfStyle* style, int* emb_rows, char* err,
                                 size_t errlen) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    JsonValue root;
    if (hf_read_json_(path, &root, err, errlen) != 0) return -1;
    memset(c, 0, sizeof(*c));
    int rc;
    if (root.type != JSON_OBJECT) {
        rc = json_fail_(err, errlen, "%s: expected a JSON object at the top level, got a %s", path,
                        json_type_name(root.type));
    } else if (json_get(&root, "hidden_size") != NULL || json_get(&root, "model_type") != NULL) {
        *style = HF_STYLE_TRANSFORMERS;
        rc = hf_config_transformers_(&root, path, c, emb_rows, err, errlen);
    } else if (json_get(&root, "d_model") != NULL) {
        *style = HF_STYLE_MAMBA_SSM;
        rc = hf_config_mamba_ssm_(&root, path, c, emb_rows, err, errlen);
    } else {
        rc = json_fail_(err, errlen, "%s: neither an HF transformers config (hidden_size, model_type) nor a "
                        "mamba_ssm one (d_model, ssm_cfg)", path);
    }
    json_free(&root);
    if (rc != 0) return rc;
    const char* bad = config_check(c);
    if (bad) return json_fail_(err, errlen, "%s: the model it describes is not valid here: %s", path, bad);
    config_derive(c);
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * the weights: one model.safetensors, or the shards a model.safetensors.index.json lists */

typedef struct {
    int n;
    SafeTensors shards[HF_MAX_SHARDS];
} HfWeights;

static inline void hf_weights_close(HfWeights* w) {
    for (int i = 0; i < w->n; i++) safetensors_close(&w->shards[i]);
    w->n = 0;
}

static inline int hf_weights_open(HfWeights* w, const char* dir, char* err, size_t errlen) {
    w->n = 0;
    char path[4200];
    struct stat sb;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (stat(path, &sb) == 0) {
        if (safetensors_open(&w->shards[0], path, err, errlen) != 0) return -1;
        w->n = 1;
        return 0;
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (stat(path, &sb) != 0) {
        snprintf(path, sizeof path, "%s/pytorch_model.bin", dir);
        if (stat(path, &sb) == 0)
            return json_fail_(err, errlen, "%s holds pytorch_model.bin but no model.safetensors: convert it first "
                              "with python3 scripts/convert_mamba_ssm.py %s", dir, dir);
        return json_fail_(err, errlen, "%s: no model.safetensors nor model.safetensors.index.json", dir);
    }
    JsonValue root;
    if (hf_read_json_(path, &root, err, errlen) != 0) return -1;
    char jerr[300];
    const JsonValue* map = json_get_typed(&root, "weight_map", JSON_OBJECT, jerr, sizeof jerr);
    int rc = 0;
    if (map == NULL) rc = json_fail_(err, errlen, "%s: %s", path, jerr);
    for (int i = 0; rc == 0 && map != NULL && i < map->count; i++) {
        const JsonValue* f = &map->items[i];
        if (f->type != JSON_STRING) {
            rc = json_fail_(err, errlen, "%s: weight_map[\"%s\"]: expected a file name, got a %s", path, map->keys[i],
                            json_type_name(f->type));
            break;
        }
        if (strchr(f->string, '/') != NULL || strchr(f->string, '\\') != NULL || f->string[0] == '.') {
            rc = json_fail_(err, errlen, "%s: weight_map[\"%s\"] = \"%s\": shard names must be plain file names in "
                            "the same folder", path, map->keys[i], f->string);
            break;
        }
        int seen = 0;
        for (int s = 0; s < w->n && !seen; s++) {
            const char* base = strrchr(w->shards[s].path, '/');
            seen = strcmp(base ? base + 1 : w->shards[s].path, f->string) == 0;
        }
        if (seen) continue;
        if (w->n == HF_MAX_SHARDS) { rc = json_fail_(err, errlen, "%s: more than %d shards", path, HF_MAX_SHARDS); break; }
        char sp[4200];
        snprintf(sp, sizeof sp, "%s/%s", dir, f->string);
        if (safetensors_open(&w->shards[w->n], sp, err, errlen) != 0) { rc = -1; break; }
        w->n++;
    }
    json_free(&root);
    if (rc != 0) hf_weights_close(w);
    return rc;
}

static inline const SafeTensors* hf_weights_find(const HfWeights* w, const char* name) {
    for (int i = 0; i < w->n; i++)
        if (safetensors_find(&w->shards[i], name) != NULL) return &w->shards[i];
    return NULL;
}

/* the name of table entry t (its copy `copy`: the block of that kind, doc/hybrid.md) in the given naming */
static inline void hf_tensor_name(char* out, size_t n, const ParamSpec* t, int copy, const Mamba2Config* c,
                                  HfStyle style) {
    if (style == HF_STYLE_MAMBA_SSM && strcmp(t->name, "wte") == 0) snprintf(out, n, "backbone.embedding.weight");
    else if (param_hf_name(out, n, c, t, copy) != 0) snprintf(out, n, "(no mamba_ssm name)");
}

/* the shape a public checkpoint stores for table entry t (conv1d.weight is (C, 1, K)); returns ndim */
static inline int hf_tensor_shape(long long shape[3], const ParamSpec* t, int emb_rows) {
    if (strcmp(t->name, "wte") == 0) { shape[0] = emb_rows; shape[1] = (long long)t->cols; return 2; }
    if (strcmp(t->name, "conv_w") == 0) { shape[0] = (long long)t->rows; shape[1] = 1; shape[2] = (long long)t->cols; return 3; }
    if (t->cols == 1) { shape[0] = (long long)t->rows; return 1; }
    shape[0] = (long long)t->rows; shape[1] = (long long)t->cols;
    return 2;
}

static inline int hf_check_shape_(const SafeTensors* st, const SafeTensorInfo* info, const long long* shape, int ndim,
                                  char* err, size_t errlen) {
    int same = info->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = info->shape[d] == shape[d];
    if (same) return 0;
    char got[160], want[160];
    SafeTensorInfo tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.ndim = ndim;
    for (int d = 0; d < ndim; d++) tmp.shape[d] = shape[d];
    safetensors_shape_str_(info, got, sizeof got);
    safetensors_shape_str_(&tmp, want, sizeof want);
    return json_fail_(err, errlen, "safetensors %s: tensor %s has shape %s, the config needs %s", st->path, info->name,
                      got, want);
}

/* the layer number of name if it is the per-layer name pattern `fmt` (one %d) with a canonical decimal there (no
   leading zero, at most 9 digits), else -1: the name of layer 0 splits at its "0" into the prefix and suffix every
   layer shares */
static inline long hf_name_layer_(const char* name, const char* fmt) {
    char pat[300];
    snprintf(pat, sizeof pat, fmt, 0);
    const char* zero = strstr(pat, ".0.");
    if (zero == NULL) return -1;
    size_t len = strlen(name), pre = (size_t)(zero - pat) + 1, suf = strlen(zero + 2);
    if (len <= pre + suf || strncmp(name, pat, pre) != 0 || strcmp(name + len - suf, zero + 2) != 0) return -1;
    const char* d = name + pre;
    size_t nd = len - pre - suf;
    if (nd > 9 || (nd > 1 && d[0] == '0')) return -1;
    long layer = 0;
    for (size_t k = 0; k < nd; k++) {
        if (d[k] < '0' || d[k] > '9') return -1;
        layer = layer * 10 + (d[k] - '0');
    }
    return layer;
}

/* 1 if name is one the model uses (or the tied lm_head.weight). Per-layer names are matched by their prefix and
   suffix around the layer number (canonical decimal, < n_layer), so the cost is that of the name, not of n_layer. */
static inline int hf_is_known_name_(const char* name, const ParamSpec* table, const Mamba2Config* c, HfStyle style) {
    if (strcmp(name, "lm_head.weight") == 0) return 1;
    char buf[300];
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        if (!table[t].per_layer) {
            hf_tensor_name(buf, sizeof buf, &table[t], 0, c, style);
            if (strcmp(buf, name) == 0) return 1;
            continue;
        }
        if (table[t].numel == 0) continue;
        /* the pre-norm of a hybrid's MLP block is the layer's norm2 */
        const char* pats[2] = {table[t].hf_name, table[t].kind == 'N' && c->n_mlp > 0 ?
                               "backbone.layers.%d.norm2.weight" : NULL};
        for (int k = 0; k < 2 && pats[k] != NULL; k++) {
            long layer = hf_name_layer_(name, pats[k]);
            if (layer < 0) continue;
            if (!config_is_hybrid(c)) {
                if (layer < c->n_layer) return 1;
                continue;
            }
            /* a hybrid: one of the layer's blocks (mixer, and MLP) has this tensor under exactly this name */
            int per = c->n_mlp > 0 ? 2 : 1;
            if (layer >= c->n_layer / per) continue;
            for (int b = (int)layer * per; b < ((int)layer + 1) * per; b++) {
                char kind = config_block_kind(c, b);
                if (table[t].kind != 'N' && table[t].kind != kind) continue;
                hf_tensor_name(buf, sizeof buf, &table[t], table[t].kind == 'N' ? b : config_block_slot(c, b), c,
                               style);
                if (strcmp(buf, name) == 0) return 1;
            }
        }
    }
    return 0;
}

/*
 * Imports an HF or mamba_ssm folder. On success *config holds the model (chunk_size from the file's config) and
 * *params a malloc'd array of param_table_build(config) floats in the table's order (the caller frees it).
 */
static inline int hf_import(const char* dir, Mamba2Config* config, float** params, char* err, size_t errlen) {
    HfStyle style = HF_STYLE_TRANSFORMERS;
    int emb_rows = 0;
    Mamba2Config c;
    *params = NULL;
    if (hf_read_config(dir, &c, &style, &emb_rows, err, errlen) != 0) return -1;
    HfWeights* w = (HfWeights*)calloc(1, sizeof(HfWeights));
    if (w == NULL) return json_fail_(err, errlen, "out of memory");
    if (hf_weights_open(w, dir, err, errlen) != 0) { free(w); return -1; }
    ParamSpec table[NUM_PARAM_TENSORS];
    size_t n = param_table_build(table, &c);
    float* p = (float*)calloc(n, sizeof(float));
    float* emb = NULL;
    int rc = 0;
    if (p == NULL) rc = json_fail_(err, errlen, "out of memory for %zu parameters", n);
    /* every tensor in the files must be one the model uses: an extra one means a different architecture */
    for (int s = 0; rc == 0 && s < w->n; s++)
        for (int i = 0; rc == 0 && i < w->shards[s].num_tensors; i++)
            if (!hf_is_known_name_(w->shards[s].tensors[i].name, table, &c, style))
                rc = json_fail_(err, errlen, "safetensors %s: unexpected tensor %s: not part of the model this config "
                                "describes (%s naming)", w->shards[s].path, w->shards[s].tensors[i].name,
                                style == HF_STYLE_MAMBA_SSM ? "mamba_ssm" : "HF transformers");
    for (int t = 0; rc == 0 && t < NUM_PARAM_TENSORS; t++) {
        const ParamSpec* spec = &table[t];
        int copies = spec->numel == 0 ? 0 : spec->copies;
        for (int l = 0; rc == 0 && l < copies; l++) {
            char name[300];
            hf_tensor_name(name, sizeof name, spec, l, &c, style);
            const SafeTensors* st = hf_weights_find(w, name);
            if (st == NULL) {
                rc = json_fail_(err, errlen, "%s: tensor %s is missing from the weights", dir, name);
                break;
            }
            long long shape[3];
            int ndim = hf_tensor_shape(shape, spec, emb_rows);
            if (hf_check_shape_(st, safetensors_find(st, name), shape, ndim, err, errlen) != 0) { rc = -1; break; }
            if (strcmp(spec->name, "wte") == 0) {
                /* the file's rows (vocab_size, or mamba_ssm's own padding) into our padded table; extra rows 0 */
                size_t D = spec->cols, rows = (size_t)emb_rows, keep = rows < spec->rows ? rows : spec->rows;
                emb = (float*)malloc(rows * D * sizeof(float));
                if (emb == NULL) { rc = json_fail_(err, errlen, "out of memory"); break; }
                if (safetensors_read_f32(st, name, emb, rows * D, err, errlen) != 0) { rc = -1; break; }
                memcpy(p + spec->offset, emb, keep * D * sizeof(float));
                for (size_t r = (size_t)c.vocab_size; r < spec->rows; r++)
                    memset(p + spec->offset + r * D, 0, D * sizeof(float));
            } else {
                size_t one = spec->rows * spec->cols;
                if (safetensors_read_f32(st, name, p + spec->offset + (size_t)l * one, one, err, errlen) != 0) rc = -1;
            }
        }
    }
    /* a stored lm_head must be the embedding itself (tied); a different one is a different model */
    const SafeTensors* hs = rc == 0 ? hf_weights_find(w, "lm_head.weight") : NULL;
    if (hs != NULL) {
        long long shape[2] = {emb_rows, c.d_model};
        size_t cnt = (size_t)emb_rows * c.d_model;
        float* head = (float*)malloc(cnt * sizeof(float));
        if (head == NULL) rc = json_fail_(err, errlen, "out of memory");
        else if (hf_check_shape_(hs, safetensors_find(hs, "lm_head.weight"), shape, 2, err, errlen) != 0 ||
                 safetensors_read_f32(hs, "lm_head.weight", head, cnt, err, errlen) != 0) rc = -1;
        else if (memcmp(head, emb, cnt * sizeof(float)) != 0)
            rc = json_fail_(err, errlen, "safetensors %s: lm_head.weight differs from the token embedding although "
                            "the config says they are tied: an untied head is not supported", hs->path);
        free(head);
    }
    free(emb);
    hf_weights_close(w);
    free(w);
    if (rc != 0) { free(p); return -1; }
    *config = c;
    *params = p;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * export */

static inline int hf_mkdir_(const char* dir, char* err, size_t errlen) {
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) return 0;
        return json_fail_(err, errlen, "%s exists and is not a folder", dir);
    }
    if (mkdir(dir, 0755) != 0) return json_fail_(err, errlen, "cannot create folder %s: %s", dir, strerror(errno));
    return 0;
}

static inline int hf_write_text_(const char* path, const char* text, char* err, size_t errlen) {
    FILE* f = fopen(path, "wb");
    if (f == NULL) return json_fail_(err, errlen, "cannot write %s: %s", path, strerror(errno));
    size_t n = strlen(text);
    int bad = fwrite(text, 1, n, f) != n;
    if (fclose(f) != 0) bad = 1;
    if (bad) return json_fail_(err, errlen, "write to %s failed (disk full?)", path);
    return 0;
}

/*
 * Writes dir/config.json and dir/model.safetensors (fp32) from our parameters (table order). force: export to HF
 * even for ngroups > 1 (with a warning on stderr: HF computes another function then).
 */
static inline int hf_export(const char* dir, const Mamba2Config* c, const float* params, HfStyle style, int force,
                            char* err, size_t errlen) {
    if (config_is_hybrid(c) && style == HF_STYLE_TRANSFORMERS)
        return json_fail_(err, errlen, "export to HF transformers refused: the model is a hybrid (pattern %.40s) and "
                          "Mamba2ForCausalLM has no attention or MLP blocks; export the mamba_ssm variant", c->pattern);
    int ssm_layers = config_mamba_ssm_layers(c);
    if (ssm_layers < 0)
        return json_fail_(err, errlen, "export refused: pattern %.40s has no mamba_ssm form (its layers are a mixer "
                          "M or A, each followed by an MLP F when d_intermediate > 0, in every layer or in none)",
                          c->pattern);
    if (style == HF_STYLE_TRANSFORMERS && c->ngroups > 1) {
        if (!force)
            return json_fail_(err, errlen, "export to HF transformers refused: ngroups = %d. HF's gated norm "
                              "(MambaRMSNormGated) normalizes over all %d channels, this model over each group of %d "
                              "(as mamba_ssm does), so HF would compute different logits (SPEC.md section 8). Export "
                              "the mamba_ssm variant, or force it knowing the logits will differ.",
                              c->ngroups, c->d_inner, c->d_inner / c->ngroups);
        fprintf(stderr, "WARNING: exporting a model with ngroups = %d to HF transformers: HF normalizes the gated norm "
                "over all channels, not per group; its logits WILL DIFFER from this model's\n", c->ngroups);
    }
    if (hf_mkdir_(dir, err, errlen) != 0) return -1;
    char cfg[2048 + 8 * MAMBA2_MAX_PATTERN], path[4200];
    if (style == HF_STYLE_TRANSFORMERS) {
        snprintf(cfg, sizeof cfg,
                 "{\n  \"architectures\": [\"Mamba2ForCausalLM\"],\n  \"model_type\": \"mamba2\",\n"
                 "  \"hidden_size\": %d,\n  \"num_hidden_layers\": %d,\n  \"state_size\": %d,\n  \"head_dim\": %d,\n"
                 "  \"num_heads\": %d,\n  \"expand\": %d,\n  \"n_groups\": %d,\n  \"conv_kernel\": %d,\n"
                 "  \"vocab_size\": %d,\n  \"chunk_size\": %d,\n  \"layer_norm_epsilon\": 1e-05,\n"
                 "  \"tie_word_embeddings\": true,\n  \"use_bias\": false,\n  \"use_conv_bias\": true,\n"
                 "  \"hidden_act\": \"silu\",\n  \"residual_in_fp32\": true\n}\n",
                 c->d_model, c->n_layer, c->d_state, c->headdim, c->nheads, c->expand, c->ngroups, c->d_conv,
                 c->vocab_size, c->chunk_size);
    } else {
        /* attn_layer_idx and attn_cfg: the mamba_ssm layers whose mixer is attention (empty for a pure model, as
           before); every MHA argument written out, since MHA's defaults (biases on, causal off) are not ours */
        char idx[8 * MAMBA2_MAX_PATTERN + 8] = "", acfg[512] = "{}";
        int per = c->n_mlp > 0 ? 2 : 1;
        for (int l = 0; l < ssm_layers; l++) {
            if (config_block_kind(c, l * per) != 'A') continue;
            size_t len = strlen(idx);
            snprintf(idx + len, sizeof idx - len, "%s%d", len > 0 ? ", " : "", l);
        }
        if (c->n_attn > 0)
            snprintf(acfg, sizeof acfg, "{\"num_heads\": %d, \"num_heads_kv\": %d, \"head_dim\": %d, "
                     "\"rotary_emb_dim\": %d, \"rotary_emb_base\": %d, \"rotary_emb_interleaved\": false, "
                     "\"qkv_proj_bias\": %s, \"out_proj_bias\": %s, \"causal\": true}", c->attn_heads,
                     c->attn_kv_heads, c->attn_head_dim, c->rotary_dim, c->rotary_base, c->qkv_bias ? "true" : "false",
                     c->out_bias ? "true" : "false");
        snprintf(cfg, sizeof cfg,
                 "{\n  \"d_model\": %d,\n  \"d_intermediate\": %d,\n  \"n_layer\": %d,\n  \"vocab_size\": %d,\n"
                 "  \"ssm_cfg\": {\"layer\": \"Mamba2\", \"d_state\": %d, \"d_conv\": %d, \"expand\": %d, "
                 "\"headdim\": %d, \"ngroups\": %d, \"chunk_size\": %d},\n"
                 "  \"attn_layer_idx\": [%s],\n  \"attn_cfg\": %s,\n"
                 "  \"rms_norm\": true,\n  \"residual_in_fp32\": true,\n"
                 "  \"fused_add_norm\": true,\n  \"pad_vocab_size_multiple\": %d,\n  \"tie_embeddings\": true\n}\n",
                 c->d_model, c->d_intermediate, ssm_layers, c->vocab_size, c->d_state, c->d_conv, c->expand,
                 c->headdim, c->ngroups, c->chunk_size, idx, acfg, MAMBA2_VOCAB_MULTIPLE);
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (hf_write_text_(path, cfg, err, errlen) != 0) return -1;

    ParamSpec table[NUM_PARAM_TENSORS];
    param_table_build(table, c);
    int count = 1; /* lm_head (mamba_ssm) */
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) count += table[t].copies;
    SafeTensorOut* outs = (SafeTensorOut*)calloc((size_t)count, sizeof(SafeTensorOut));
    char (*names)[300] = (char (*)[300])calloc((size_t)count, 300);
    if (outs == NULL || names == NULL) { free(outs); free(names); return json_fail_(err, errlen, "out of memory"); }
    int n = 0;
    int emb_rows = style == HF_STYLE_TRANSFORMERS ? c->vocab_size : c->padded_vocab_size;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        const ParamSpec* spec = &table[t];
        for (int l = 0; l < (spec->numel == 0 ? 0 : spec->copies); l++) {
            hf_tensor_name(names[n], 300, spec, l, c, style);
            outs[n].name = names[n];
            outs[n].dtype = "F32";
            outs[n].ndim = hf_tensor_shape(outs[n].shape, spec, emb_rows);
            outs[n].data = params + spec->offset + (size_t)l * spec->rows * spec->cols;
            n++;
        }
        if (style == HF_STYLE_MAMBA_SSM && strcmp(spec->name, "wte") == 0) {
            outs[n] = outs[n - 1];
            snprintf(names[n], 300, "lm_head.weight");
            outs[n].name = names[n];
            n++;
        }
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = safetensors_write(path, outs, n, "{\"format\":\"pt\"}", err, errlen);
    free(outs);
    free(names);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------------------
 * one entry point for programs that take "-e MODEL": a folder is imported (HF or mamba_ssm), anything else is read
 * as a mamba2.c checkpoint (a bad checkpoint stops the program with checkpoint_open's message). *params is malloc'd,
 * in the table's order. Returns 0, or -1 with the reason in err. */
static inline int model_load_weights(const char* path, Mamba2Config* c, float** params, char* err, size_t errlen) {
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        if (!hf_is_model_dir(path))
            return json_fail_(err, errlen, "%s is a folder without config.json: not an HF / mamba_ssm model folder", path);
        return hf_import(path, c, params, err, errlen);
    }
    if (stat(path, &sb) != 0)
        return json_fail_(err, errlen, "model %s: no such file or folder (give a checkpoint file or a model folder)",
                          path);
    CheckpointInfo info;
    FILE* f = checkpoint_open_e(path, &info, err, errlen);
    if (f == NULL) return -1;
    ParamSpec table[NUM_PARAM_TENSORS];
    size_t n = param_table_build(table, &info.config);
    float* p = (float*)malloc(n * sizeof(float));
    if (p == NULL) { fclose(f); return json_fail_(err, errlen, "out of memory for %zu parameters", n); }
    if (fread(p, sizeof(float), n, f) != n) {
        fclose(f); free(p);
        return json_fail_(err, errlen, "checkpoint %s: short read of the parameters", path);
    }
    fclose(f);
    *c = info.config;
    *params = p;
    return 0;
}

#endif /* MAMBA2_HF_IO_H */
