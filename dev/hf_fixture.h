/*
 * hf_fixture.h: reads the HF transformers reference fixture (dev/make_hf_fixture.py writes it) for the CPU and GPU
 * tests: config, tokens, logits, loss, every parameter and gradient (by the parameter table's HF names, into our
 * layout), and the 10 AdamW steps' losses and grad norms with their hyper-parameters.
 */
#ifndef MAMBA2_HF_FIXTURE_H
#define MAMBA2_HF_FIXTURE_H

#include "../llmc/mamba2_model.h"
#include "../llmc/safetensors.h"
#include "../llmc/json.h"

#define HF_FIXTURE_PATH "dev/fixtures/mamba2_hf_tiny.safetensors"
#define HF_FIXTURE_STEPS 10

typedef struct {
    Mamba2Config config;
    ParamSpec table[NUM_PARAM_TENSORS];
    size_t num_parameters;
    int B, T;
    int* inputs;    /* (B, T) */
    int* targets;   /* (B, T) */
    float* logits;  /* (B, T, V) */
    float loss;
    float* params;  /* our layout */
    float* grads;
    float losses[HF_FIXTURE_STEPS], grad_norms[HF_FIXTURE_STEPS];
    double lr, beta1, beta2, eps, weight_decay, grad_clip;
} HFFixture;

/* "<prefix><HF name>" of every table entry (each layer of the per-layer ones) into dst */
static inline int hf_fixture_read_params(const SafeTensors* st, const HFFixture* fx, const char* prefix, float* dst,
                                         char* err, size_t errlen) {
    char name[256], hf[200];
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        const ParamSpec* s = &fx->table[t];
        if (s->numel == 0) continue; /* the attention / MLP tensors a pure Mamba-2 model does not have */
        int copies = s->per_layer ? fx->config.n_layer : 1;
        size_t per = s->rows * s->cols;
        for (int l = 0; l < copies; l++) {
            snprintf(hf, sizeof(hf), s->hf_name, l);
            snprintf(name, sizeof(name), "%s%s", prefix, hf);
            if (safetensors_read_f32(st, name, dst + s->offset + (size_t)l * per, per, err, errlen) != 0) return -1;
        }
    }
    return 0;
}

static inline int hf_fixture_config(const SafeTensors* st, Mamba2Config* c, int chunk, char* err, size_t errlen) {
    const char* json = safetensors_metadata(st, "config");
    if (json == NULL) { snprintf(err, errlen, "no 'config' in the metadata"); return -1; }
    JsonValue root;
    if (json_parse(&root, json, strlen(json), 0, err, errlen) != 0) return -1;
    const char* keys[] = {"hidden_size", "num_hidden_layers", "state_size", "head_dim", "expand", "n_groups",
                          "conv_kernel", "vocab_size"};
    long long v[8];
    for (int i = 0; i < 8; i++) {
        if (json_get_int(&root, keys[i], &v[i], err, errlen) != 0) { json_free(&root); return -1; }
    }
    json_free(&root);
    memset(c, 0, sizeof(*c));
    c->d_model = (int)v[0]; c->n_layer = (int)v[1]; c->d_state = (int)v[2]; c->headdim = (int)v[3];
    c->expand = (int)v[4]; c->ngroups = (int)v[5]; c->d_conv = (int)v[6]; c->vocab_size = (int)v[7];
    c->chunk_size = chunk;
    const char* bad = config_check(c);
    if (bad) { snprintf(err, errlen, "%s", bad); return -1; }
    config_derive(c);
    if (c->padded_vocab_size != c->vocab_size) {
        snprintf(err, errlen, "fixture vocab %d is not a multiple of 16", c->vocab_size);
        return -1;
    }
    return 0;
}

/* loads everything; 0 on success, else -1 with a message in err */
static inline int hf_fixture_load(HFFixture* fx, const char* path, int chunk, char* err, size_t errlen) {
    memset(fx, 0, sizeof(*fx));
    SafeTensors st;
    if (safetensors_open(&st, path, err, errlen) != 0) return -1;
    int rc = -1;
    if (hf_fixture_config(&st, &fx->config, chunk, err, errlen) != 0) goto done;
    fx->num_parameters = param_table_build(fx->table, &fx->config);
    {
        const SafeTensorInfo* ti = safetensors_find(&st, "tokens");
        if (ti == NULL || ti->ndim != 2) { snprintf(err, errlen, "tokens: missing or not 2-d"); goto done; }
        int B = (int)ti->shape[0], Tp1 = (int)ti->shape[1], T = Tp1 - 1, V = fx->config.vocab_size;
        fx->B = B; fx->T = T;
        int* tokens = (int*)mallocCheck(sizeof(int) * (size_t)B * Tp1);
        fx->inputs = (int*)mallocCheck(sizeof(int) * (size_t)B * T);
        fx->targets = (int*)mallocCheck(sizeof(int) * (size_t)B * T);
        fx->logits = (float*)mallocCheck(sizeof(float) * (size_t)B * T * V);
        fx->params = (float*)mallocCheck(sizeof(float) * fx->num_parameters);
        fx->grads = (float*)mallocCheck(sizeof(float) * fx->num_parameters);
        if (safetensors_read_i32(&st, "tokens", tokens, (size_t)B * Tp1, err, errlen) != 0) { free(tokens); goto done; }
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                fx->inputs[b * T + t] = tokens[b * Tp1 + t];
                fx->targets[b * T + t] = tokens[b * Tp1 + t + 1];
            }
        free(tokens);
        if (safetensors_read_f32(&st, "logits", fx->logits, (size_t)B * T * V, err, errlen) != 0 ||
            safetensors_read_f32(&st, "loss", &fx->loss, 1, err, errlen) != 0 ||
            safetensors_read_f32(&st, "adamw_losses", fx->losses, HF_FIXTURE_STEPS, err, errlen) != 0 ||
            safetensors_read_f32(&st, "adamw_grad_norms", fx->grad_norms, HF_FIXTURE_STEPS, err, errlen) != 0 ||
            hf_fixture_read_params(&st, fx, "param.", fx->params, err, errlen) != 0 ||
            hf_fixture_read_params(&st, fx, "grad.", fx->grads, err, errlen) != 0)
            goto done;
        const char* keys[] = {"lr", "beta1", "beta2", "eps", "weight_decay", "grad_clip"};
        double* dst[] = {&fx->lr, &fx->beta1, &fx->beta2, &fx->eps, &fx->weight_decay, &fx->grad_clip};
        for (int i = 0; i < 6; i++) {
            const char* s = safetensors_metadata(&st, keys[i]);
            if (s == NULL) { snprintf(err, errlen, "metadata '%s' missing", keys[i]); goto done; }
            *dst[i] = atof(s);
        }
    }
    rc = 0;
done:
    safetensors_close(&st);
    return rc;
}

static inline void hf_fixture_free(HFFixture* fx) {
    free(fx->inputs); free(fx->targets); free(fx->logits); free(fx->params); free(fx->grads);
    memset(fx, 0, sizeof(*fx));
}

#endif
