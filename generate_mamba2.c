/*
 * generate_mamba2.c: text generation on the CPU from a mamba2.c checkpoint or an HF / mamba_ssm model folder.
 *
 *   ./generate_mamba2 -e hf/mamba2-130m -k neox_tokenizer.bin -p "The meaning of life is" -n 64 -t 0.8 -P 0.95
 *
 * The prompt goes through the CHUNKED parallel forward (mamba2_prefill below: the SSD's final state and the conv
 * window of the last K-1 inputs of every layer), which hands its state to the recurrent step (mamba2_step in
 * train_mamba2.c); each new token then costs constant time and memory, whatever the length so far.
 * The prompt is encoded in C (llmc/bpe.h, a version-3 tokenizer.bin) or byte by byte for the byte tokenizer.
 *
 * Built on the CPU model of train_mamba2.c (included with MAMBA2_NO_MAIN). test_interop.c includes this file with
 * GENERATE_NO_MAIN for mamba2_prefill, the sampler and load_model.
 */
#define MAMBA2_NO_MAIN
#include "train_mamba2.c"
#include "llmc/hf_io.h"
#include "llmc/bpe.h"
#include "llmc/infer_common.h"

/* ---- loading: a checkpoint, a model folder, or (for timing) a preset with random weights ---- */

/* returns 1 if the model was loaded from path, 0 if path was a model description given random weights */
static int load_model(Mamba2* m, const char* path, int allow_random) {
    char err[1024];
    Mamba2Config c;
    float* params = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0 && allow_random) {
        if (config_parse(&c, path, err, sizeof err) != 0)
            die("-e %s: neither a checkpoint file, a model folder, nor a model description (%s)", path, err);
        fprintf(stderr, "note: -e %s is a model description: RANDOM weights (for timing only)\n", path);
        mamba2_build(m, &c, 1337);
        return 0;
    }
    if (model_load_weights(path, &c, &params, err, sizeof err) != 0) die("%s", err);
    mamba2_allocate_parameters(m, &c);
    for (size_t i = 0; i < m->num_parameters; i++) m->params_memory[i] = (real)params[i];
    free(params);
    return 1;
}

/* ---- prefill: the chunked parallel forward over the prompt, then hand the state to the recurrent step ---- */

/*
 * Runs tokens[0..T) through the parallel (chunked SSD) forward from the zero state and leaves in s exactly the state
 * that T calls of mamba2_step would leave: per layer the SSM state after the last token (ssd_chunked_forward's
 * final_state) and the conv window (the last K-1 inputs of the conv, zeros before the first token). Returns the
 * logits of the last position (in s->logits). Memory is that of one forward pass over T tokens. A hybrid's attention
 * blocks get their KV cache filled with the prompt's keys and values.
 * sep: with document boundaries (doc/packing.md) a new document starts at each sep token of the prompt, and the state
 * left is that of the prompt's last document (as T steps with a reset before each separator would leave it);
 * DOC_SEP_NONE for none.
 */
real* mamba2_prefill_docs(Mamba2* m, InferenceState* s, const int* tokens, int T, int sep) {
    const Mamba2Config* c = &m->config;
    int D = c->d_model, E = c->d_inner, H = c->nheads, P = c->headdim, N = c->d_state, K = c->d_conv;
    int Cd = c->conv_dim, K1 = K - 1 > 0 ? K - 1 : 1;
    if (T < 1) die("prefill: empty prompt (give at least one token)");
    int* seq = NULL;
    if (sep != DOC_SEP_NONE) {
        seq = (int*)mallocCheck(sizeof(int) * (size_t)T);
        dataloader_doc_index(seq, tokens, 1, (size_t)T, sep);
    }
    mamba2_forward_docs(m, tokens, NULL, seq, 1, T);
    int nc = ssd_num_chunks(T, c->chunk_size);
    real* y = (real*)mallocCheck(sizeof(real) * (size_t)T * E);
    real* states = (real*)mallocCheck(sizeof(real) * (size_t)H * nc * P * N);
    /* the prompt's last document starts at `start`: the attention blocks' KV cache holds its positions only (their
       keys already rotated by the position in that document, as the step would have rotated them) */
    int start = T - 1;
    while (start > 0 && (seq == NULL || seq[start - 1] == seq[T - 1])) start--;
    kv_cache_reserve(s, c, T - start);
    for (int l = 0; l < c->n_layer; l++) {
        if (config_block_kind(c, l) == 'F') continue; /* no state */
        size_t slot = (size_t)config_block_slot(c, l);
        if (config_block_kind(c, l) == 'A') {
            AttnActs a = attn_acts(&m->acts, c, 1, T, l);
            size_t row = (size_t)c->attn_kv_heads * c->attn_head_dim, Hq = c->attn_heads, hd = c->attn_head_dim;
            for (int t = start; t < T; t++) {
                const real* r = a.qkv_rot + (size_t)t * c->attn_qkv_dim;
                memcpy(s->k_cache + (slot * s->capacity + (size_t)(t - start)) * row, r + Hq * hd, sizeof(real) * row);
                memcpy(s->v_cache + (slot * s->capacity + (size_t)(t - start)) * row, r + Hq * hd + row,
                       sizeof(real) * row);
            }
            continue;
        }
        LayerParams p = layer_params(&m->params, c, l);
        LayerActs a = layer_acts(&m->acts, c, 1, T, l);
        /* the forward kept the state ENTERING each chunk; the state after the last token is computed once more */
        ssd_chunked_forward(y, states, s->ssm_state + slot * H * P * N, a.xbc, a.dt, p.A_log, p.D, NULL, seq, 1, T,
                            H, P, N, c->ngroups, c->chunk_size);
        /* conv window slot k holds the conv INPUT (in_proj's xBC columns) at time T-(K-1)+k; zeros before t = 0 and,
           with boundaries, at positions of earlier documents than the last */
        real* win = s->conv_state + slot * K1 * Cd;
        for (int k = 0; k < K - 1; k++) {
            int t = T - (K - 1) + k;
            int in_doc = t >= 0 && (seq == NULL || seq[t] == seq[T - 1]);
            for (int ch = 0; ch < Cd; ch++)
                win[(size_t)k * Cd + ch] = in_doc ? a.zxbcdt[(size_t)t * c->d_in_proj + E + ch] : 0;
        }
    }
    s->pos = T - start;
    free(y);
    free(states);
    free(seq);
    /* the LM head on the last position's final-norm output (the forward softmaxed its own logits in place) */
    matmul_forward(s->logits, m->acts.lnf + (size_t)(T - 1) * D, m->params.wte, 1, D, c->padded_vocab_size);
    return s->logits;
}

real* mamba2_prefill(Mamba2* m, InferenceState* s, const int* tokens, int T) {
    return mamba2_prefill_docs(m, s, tokens, T, DOC_SEP_NONE);
}

#ifndef GENERATE_NO_MAIN

static void generate_usage(void) {
    fprintf(stderr,
        "usage: ./generate_mamba2 -e MODEL [-k TOKENIZER] (-p TEXT | -f FILE | -I IDS) [options]\n"
        "  -e MODEL   a mamba2.c checkpoint, an HF transformers Mamba-2 folder (config.json + model.safetensors),\n"
        "             a mamba_ssm folder (after scripts/convert_mamba_ssm.py), or a preset such as 130m (random\n"
        "             weights, for timing)\n"
        "  -k FILE    tokenizer.bin, version 3 (written by data/prepare.py or data/text_tokenizers.py) to encode the\n"
        "             prompt with byte-level BPE; version 1-2 files only decode. Without -k a model of vocab 257 is\n"
        "             taken as the byte tokenizer (id 256 = end of text)\n"
        "  -p TEXT    the prompt;  -f FILE  read the prompt from a file;  -I 1,2,3  prompt token ids\n"
        "  -n N       tokens to generate (default 128); stops early at the end-of-text token\n"
        "  -t T       temperature (default 1.0; 0 = greedy)\n"
        "  -K K       top-k (default 0 = off);  -P P  top-p (default 1.0 = off)\n"
        "  -s SEED    sampling seed (default 1337)\n"
        "  -D SEP     document boundaries at token SEP (eot = the end-of-text token, or an id; default none): a\n"
        "             prompt holding separators is read as the trainer's -D reads it, and generation continues its\n"
        "             last document from that document's own state; a sampled separator restarts the state\n"
        "  -q         quiet: no timing line on stderr\n");
}

static char* read_text_file(const char* path, size_t* len) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) die("prompt file %s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char* s = (char*)mallocCheck(cap);
    size_t got;
    while ((got = fread(s + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) { cap *= 2; s = (char*)realloc(s, cap); if (s == NULL) die("out of memory reading %s", path); }
    }
    fclose(f);
    *len = n;
    return s;
}

static int* parse_ids(const char* text, int* n) {
    int cap = 16, k = 0;
    int* ids = (int*)mallocCheck(sizeof(int) * cap);
    const char* p = text;
    while (*p) {
        char* end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 100000000) die("-I %s: expected comma-separated token ids, e.g. -I 1,2,3", text);
        if (k == cap) { cap *= 2; ids = (int*)realloc(ids, sizeof(int) * cap); if (!ids) die("out of memory"); }
        ids[k++] = (int)v;
        p = end;
        if (*p == ',') p++;
        else if (*p) die("-I %s: expected comma-separated token ids, e.g. -I 1,2,3", text);
    }
    *n = k;
    return ids;
}

int main(int argc, char** argv) {
    GenerateArgs ga = generate_args_default();
    g_infer_has_docs = 1; /* -D (doc/packing.md) */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { generate_usage(); return 0; }
        if (!strcmp(argv[i], "-q")) { ga.quiet = 1; continue; }
        if (argv[i][0] != '-' || strlen(argv[i]) != 2 || i + 1 >= argc) {
            generate_usage();
            die("bad argument '%s' (flags take one value each; -h for help)", argv[i]);
        }
        const char* v = argv[++i];
        if (generate_parse_flag(&ga, argv[i - 1][1], v)) continue;
        generate_usage();
        die("unknown flag %s (-h for help)", argv[i - 1]);
    }
    generate_check_args(&ga, generate_usage);
    const char *model_path = ga.model_path, *tok_path = ga.tok_path, *prompt = ga.prompt;
    const char *prompt_file = ga.prompt_file, *id_text = ga.id_text;
    int max_new = ga.max_new, top_k = ga.top_k, quiet = ga.quiet;
    float temperature = ga.temperature, top_p = ga.top_p;
    unsigned long long seed = ga.seed;

    Mamba2 model;
    load_model(&model, model_path, 1);
    const Mamba2Config* c = &model.config;
    if (!quiet) config_print(c, stderr);

    /* the tokenizer: BPE (version 3 file), or bytes, or none (ids in, ids out): llmc/infer_common.h */
    PromptTokenizer pt;
    prompt_tokenizer_init(&pt, tok_path, c->vocab_size, id_text != NULL);
    Tokenizer tok = pt.tok;  /* the names the code below uses; pt itself is not freed */
    BpeEncoder bpe = pt.bpe;
    int byte_level = pt.byte_level, eot = pt.eot;
    char err[1024];

    int T = 0;
    int* ids = NULL;
    if (id_text != NULL) {
        ids = parse_ids(id_text, &T);
    } else {
        size_t len;
        char* text = prompt_file ? read_text_file(prompt_file, &len) : NULL;
        if (text == NULL) { len = strlen(prompt); text = (char*)mallocCheck(len + 1); memcpy(text, prompt, len + 1); }
        if (byte_level) {
            ids = (int*)mallocCheck(sizeof(int) * (len + 1));
            for (size_t i = 0; i < len; i++) ids[i] = (unsigned char)text[i];
            T = (int)len;
        } else {
            size_t n;
            if (bpe_encode(&bpe, text, len, &ids, &n, err, sizeof err) != 0) die("prompt: %s", err);
            T = (int)n;
        }
        free(text);
    }
    if (T == 0 && eot < 0) die("empty prompt");
    if (T == 0) { /* an empty prompt starts from the end-of-text token, as a new document does */
        free(ids);
        ids = (int*)mallocCheck(sizeof(int));
        ids[0] = eot;
        T = 1;
    }
    for (int i = 0; i < T; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            die("prompt token %d at position %d is outside the model's vocabulary [0, %d)", ids[i], i, c->vocab_size);

    /* print the prompt as the model sees it */
    for (int i = 0; i < T; i++) {
        if (byte_level) { if (ids[i] != eot) putchar(ids[i]); }
        else if (tok.init_ok) tokenizer_safe_print(tokenizer_decode(&tok, (uint32_t)ids[i]));
        else printf("%d ", ids[i]);
    }
    fflush(stdout);

    InferenceState st;
    inference_state_init(&st, c);
    Rng rng;
    rng_seed(&rng, seed);
    ProbIndex* scratch = (ProbIndex*)mallocCheck(sizeof(ProbIndex) * c->vocab_size);
    double t0 = now_seconds();
    int sep = doc_sep_id(ga.doc_sep, eot, c->vocab_size);
    real* logits = mamba2_prefill_docs(&model, &st, ids, T, sep);
    double t1 = now_seconds();
    int generated = 0;
    for (; generated < max_new; generated++) {
        int next = sample_logits(logits, c->vocab_size, temperature, top_k, top_p, &rng, scratch);
        if (next == eot) break;
        if (byte_level) putchar(next);
        else if (tok.init_ok) tokenizer_safe_print(tokenizer_decode(&tok, (uint32_t)next));
        else printf("%d ", next);
        fflush(stdout);
        if (generated + 1 < max_new) {
            if (sep != DOC_SEP_NONE && next == sep) inference_state_reset(&st, c); /* a new document: fresh state */
            logits = mamba2_step(&model, &st, next);
        }
    }
    double t2 = now_seconds();
    printf("\n");
    if (!quiet)
        fprintf(stderr, "prompt %d tokens, prefill %.3f s (%.1f tok/s); generated %d tokens in %.3f s (%.2f tok/s)\n",
                T, t1 - t0, T / (t1 - t0 > 0 ? t1 - t0 : 1e-9), generated, t2 - t1,
                generated / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    free(scratch);
    free(ids);
    inference_state_free(&st);
    bpe_free(&bpe);
    tokenizer_free(&tok);
    mamba2_free(&model);
    return 0;
}

#endif /* GENERATE_NO_MAIN */
