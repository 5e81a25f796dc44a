/*
 * infer_common.h: what the CPU and GPU evaluation and generation programs share: eval_mamba2.c / eval_mamba2.cu's
 * command line, and the choice of the prompt tokenizer in generate_mamba2.c / generate_mamba2.cu.
 */
#ifndef MAMBA2_INFER_COMMON_H
#define MAMBA2_INFER_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utils.h"
#include "tokenizer.h"
#include "bpe.h"
#include "dataloader.h"
#include "train_common.h"

/* ---- evaluation: -e MODEL -i SHARDS [-b B] [-t T] [-m MAX_BATCHES] [-k TOKENIZER] ---- */

typedef struct {
    const char* model_path;
    const char* pattern;
    const char* tok_path;
    int B, T;
    long max_batches; /* -1: all */
} EvalArgs;

/* prog: "./eval_mamba2" or "./eval_mamba2cu"; model_note: what -e accepts beyond checkpoints and folders */
static inline void eval_usage(const char* prog, const char* model_note) {
    fprintf(stderr,
        "usage: %s -e MODEL -i SHARDS [-b B] [-t T] [-m MAX_BATCHES] [-k TOKENIZER]\n"
        "  -e MODEL    a mamba2.c checkpoint, or an HF transformers / mamba_ssm model folder%s\n"
        "  -i GLOB     token shards (data/prepare.py's format), e.g. 'data/stdlib/stdlib_val_*.bin' (quote it)\n"
        "  -b B        rows per batch (default 4);  -t T  tokens per row (default 256)\n"
        "  -m N        evaluate at most N batches (default: all)\n"
        "  -k FILE     tokenizer.bin for bits per byte (default: tokenizer.bin beside the shards; without one, no\n"
        "              bits per byte)\n", prog, model_note);
}

static inline EvalArgs eval_parse_args(int argc, char** argv, const char* prog, const char* model_note) {
    EvalArgs a = {NULL, NULL, NULL, 4, 256, -1};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { eval_usage(prog, model_note); exit(0); }
        if (argv[i][0] != '-' || strlen(argv[i]) != 2 || i + 1 >= argc) {
            eval_usage(prog, model_note);
            die("bad argument '%s' (flags take one value each; -h for help)", argv[i]);
        }
        const char* v = argv[++i];
        char* end;
        switch (argv[i - 1][1]) {
        case 'e': a.model_path = v; break;
        case 'i': a.pattern = v; break;
        case 'k': a.tok_path = v; break;
        case 'b': a.B = (int)strtol(v, &end, 10); if (*end || a.B < 1) die("-b %s: need a batch size >= 1", v); break;
        case 't': a.T = (int)strtol(v, &end, 10); if (*end || a.T < 1) die("-t %s: need a sequence length >= 1", v); break;
        case 'm':
            a.max_batches = strtol(v, &end, 10);
            if (*end || a.max_batches < 1) die("-m %s: need a count >= 1", v);
            break;
        default: eval_usage(prog, model_note); die("unknown flag %s (-h for help)", argv[i - 1]);
        }
    }
    if (a.model_path == NULL || a.pattern == NULL) {
        eval_usage(prog, model_note);
        die("give the model (-e) and the shards (-i)");
    }
    return a;
}

/* the evaluation's data: the tokenizer for bits per byte (default: tokenizer.bin beside the shards; none is fine)
   and the shards in order; returns the number of batches to evaluate */
static inline long eval_open_data(const EvalArgs* a, int vocab_size, Tokenizer* tok, DataLoader* loader) {
    char tbuf[4200];
    const char* tok_path = a->tok_path;
    if (tok_path == NULL) { default_tokenizer_path(tbuf, sizeof tbuf, a->pattern); tok_path = tbuf; }
    tokenizer_init(tok, tok_path); /* warns and leaves init_ok = 0 when there is none */
    if (tok->init_ok && (int)tok->vocab_size > vocab_size)
        die("tokenizer %s has %u tokens, the model's vocabulary only %d: they do not belong together", tok_path,
            tok->vocab_size, vocab_size);
    dataloader_init(loader, a->pattern, (size_t)a->B, (size_t)a->T, 0, 1, 0, 0, vocab_size);
    long n = (long)dataloader_num_batches(loader);
    if (n == 0)
        die("%s: fewer than B*T+1 = %d tokens: nothing to evaluate (lower -b or -t)", a->pattern, a->B * a->T + 1);
    if (a->max_batches > 0 && a->max_batches < n) n = a->max_batches;
    return n;
}

/* ---- generation: the flags both generate programs take ---- */

typedef struct {
    const char *model_path, *tok_path, *prompt, *prompt_file, *id_text;
    int max_new, top_k, quiet;
    float temperature, top_p;
    unsigned long long seed;
} GenerateArgs;

static inline GenerateArgs generate_args_default(void) {
    GenerateArgs a = {NULL, NULL, NULL, NULL, NULL, 128, 0, 0, 1.0f, 1.0f, 1337};
    return a;
}

/* one of the common flags; returns 0 when `flag` is not one of them (the program may have its own) */
static inline int generate_parse_flag(GenerateArgs* a, char flag, const char* v) {
    char* end;
    switch (flag) {
    case 'e': a->model_path = v; return 1;
    case 'k': a->tok_path = v; return 1;
    case 'p': a->prompt = v; return 1;
    case 'f': a->prompt_file = v; return 1;
    case 'I': a->id_text = v; return 1;
    case 'n': a->max_new = (int)strtol(v, &end, 10); if (*end || a->max_new < 0) die("-n %s: need a count >= 0", v); return 1;
    case 't': a->temperature = strtof(v, &end); if (*end || a->temperature < 0) die("-t %s: need a temperature >= 0", v); return 1;
    case 'K': a->top_k = (int)strtol(v, &end, 10); if (*end || a->top_k < 0) die("-K %s: need an integer >= 0", v); return 1;
    case 'P': a->top_p = strtof(v, &end); if (*end || !(a->top_p > 0 && a->top_p <= 1)) die("-P %s: need 0 < top-p <= 1", v); return 1;
    case 's': a->seed = strtoull(v, &end, 10); if (*end) die("-s %s: need an integer seed", v); return 1;
    default: return 0;
    }
}

/* a model and exactly one prompt source */
static inline void generate_check_args(const GenerateArgs* a, void (*usage)(void)) {
    if (a->model_path == NULL) { usage(); die("no model: give -e CHECKPOINT_OR_FOLDER"); }
    if ((a->prompt != NULL) + (a->prompt_file != NULL) + (a->id_text != NULL) != 1) {
        usage();
        die("give exactly one prompt source: -p TEXT, -f FILE or -I IDS");
    }
}

/* ---- generation: how prompts become ids and ids become text ---- */

typedef struct {
    Tokenizer tok;   /* decoding (init_ok = 0 without a file) */
    BpeEncoder bpe;  /* encoding, for GPT-2 / NeoX tokenizer files (version 3) */
    int byte_level;  /* the byte tokenizer: 256 bytes + end-of-text 256 */
    int eot;         /* end-of-text id, -1 = none (ids in, ids out) */
} PromptTokenizer;

/* tok_path may be NULL; ids_given: the prompt comes as ids (-I), so no encoder is needed */
static inline void prompt_tokenizer_init(PromptTokenizer* p, const char* tok_path, int vocab_size, int ids_given) {
    memset(p, 0, sizeof(*p));
    char err[1024];
    if (tok_path != NULL) {
        tokenizer_init(&p->tok, tok_path);
        if (!p->tok.init_ok) die("tokenizer %s: cannot open", tok_path);
        if ((int)p->tok.vocab_size > vocab_size)
            die("tokenizer %s has %u tokens, the model's vocabulary only %d: they do not belong together", tok_path,
                p->tok.vocab_size, vocab_size);
        p->eot = p->tok.eot_token;
        if (p->tok.vocab_size == 257 && p->tok.eot_token == 256) p->byte_level = 1;
        else if (!ids_given && bpe_load(&p->bpe, tok_path, err, sizeof err) != 0) die("%s", err);
    } else if (ids_given && vocab_size != 257) {
        p->eot = -1; /* ids in, ids out: no tokenizer, no end-of-text stop */
    } else {
        if (vocab_size != 257)
            die("the model's vocabulary is %d: give its tokenizer with -k tokenizer.bin (version 3; make one with "
                "python3 data/text_tokenizers.py --help)", vocab_size);
        p->byte_level = 1;
        p->eot = 256;
    }
}

#endif
