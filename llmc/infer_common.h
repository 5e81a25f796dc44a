/*
 * infer_common.h: what the CPU and GPU evaluation and generation programs share: eval_mamba2.c / eval_mamba2.cu's
 * command line, and the choice of the prompt tokenizer in generate_mamba2.c / generate_mamba2.cu.
 */
#ifndef MAMBA2_INFER_COMMON_H
#define MAMBA2_INFER_COMMON_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utils.h"
#include "tokenizer.h"
#include "bpe.h"
#include "dataloader.h"
#include "train_common.h"
#include "rand.h"

/* ---- evaluation: -e MODEL -i SHARDS [-b B] [-t T] [-m MAX_BATCHES] [-k TOKENIZER] ---- */

typedef struct {
    const char* model_path;
    const char* pattern;
    const char* tok_path;
    int B, T;
    long max_batches; /* -1: all */
    int doc_sep;      /* -D: DOC_SEP_NONE, DOC_SEP_EOT or a separator id (doc/packing.md) */
    int masks;        /* -M: 1 = masked targets from the shards' .mask files */
} EvalArgs;

/* Document boundaries (-D) and masked targets (-M): a program that implements them (the CPU and GPU eval and generate
   programs all do) sets this to 1 before parsing; one that does not refuses the flags */
static int g_infer_has_docs = 0;

static inline void infer_refuse_docs_flags(int doc_sep, int masks) {
    if (g_infer_has_docs) return;
    if (doc_sep != DOC_SEP_NONE)
        die("-D (document boundaries) is not supported by the GPU programs yet: leave it out, or use the CPU program "
            "(doc/packing.md)");
    if (masks)
        die("-M 1 (masked targets) is not supported by the GPU programs yet: leave it out, or use the CPU program "
            "(doc/packing.md)");
}

/* prog: "./eval_mamba2" or "./eval_mamba2cu"; model_note: what -e accepts beyond checkpoints and folders */
static inline void eval_usage(const char* prog, const char* model_note) {
    fprintf(stderr,
        "usage: %s -e MODEL -i SHARDS [-b B] [-t T] [-m MAX_BATCHES] [-k TOKENIZER]\n"
        "  -e MODEL    a mamba2.c checkpoint, or an HF transformers / mamba_ssm model folder%s\n"
        "  -i GLOB     token shards (data/prepare.py's format), e.g. 'data/stdlib/stdlib_val_*.bin' (quote it)\n"
        "  -b B        rows per batch (default 4);  -t T  tokens per row (default 256)\n"
        "  -m N        evaluate at most N batches (default: all)\n"
        "  -k FILE     tokenizer.bin for bits per byte (default: tokenizer.bin beside the shards; without one, no\n"
        "              bits per byte)\n"
        "  -D SEP      document boundaries at token SEP (none = default, eot = the tokenizer's end of text,\n"
        "              or an id): the state restarts at each, as in training with -D (doc/packing.md)\n"
        "  -M 0|1      1 = masked targets from the shards' .mask files, not counted (default 0)\n",
        prog, model_note);
}

static inline EvalArgs eval_parse_args(int argc, char** argv, const char* prog, const char* model_note) {
    EvalArgs a = {NULL, NULL, NULL, 4, 256, -1, DOC_SEP_NONE, 0};
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
        case 'D': a.doc_sep = doc_sep_parse(v); break;
        case 'M':
            if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0) die("-M %s: expected 0 or 1", v);
            a.masks = v[0] == '1';
            break;
        default: eval_usage(prog, model_note); die("unknown flag %s (-h for help)", argv[i - 1]);
        }
    }
    if (a.model_path == NULL || a.pattern == NULL) {
        eval_usage(prog, model_note);
        die("give the model (-e) and the shards (-i)");
    }
    infer_refuse_docs_flags(a.doc_sep, a.masks);
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
    if (a->masks) dataloader_use_masks(loader);
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
    int doc_sep;      /* -D: document boundaries in the prompt, DOC_SEP_NONE by default */
} GenerateArgs;

static inline GenerateArgs generate_args_default(void) {
    GenerateArgs a = {NULL, NULL, NULL, NULL, NULL, 128, 0, 0, 1.0f, 1.0f, 1337, DOC_SEP_NONE};
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
    case 'D': a->doc_sep = doc_sep_parse(v); infer_refuse_docs_flags(a->doc_sep, 0); return 1;
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

/* ---- sampling: top-k, top-p (nucleus), the draw (generate_mamba2.c and generate_mamba2.cu) ---- */

typedef struct { float p; int id; } ProbIndex;

/* the order of the candidates: more probable first, ties by id, so that the same seed gives the same text with any
   libc's sort (qsort is not stable, and the heap below visits in its own order) */
static inline int prob_before(ProbIndex a, ProbIndex b) { return a.p != b.p ? a.p > b.p : a.id < b.id; }
static int prob_compare(const void* a, const void* b) {
    ProbIndex x = *(const ProbIndex*)a, y = *(const ProbIndex*)b;
    return prob_before(x, y) ? -1 : prob_before(y, x) ? 1 : 0;
}

/* restore the heap below position i: heap[0] is the candidate that ranks LAST (the first to drop out) */
static void prob_sift_down(ProbIndex* heap, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, last = i;
        if (l < n && prob_before(heap[last], heap[l])) last = l;
        if (r < n && prob_before(heap[last], heap[r])) last = r;
        if (last == i) return;
        ProbIndex t = heap[i]; heap[i] = heap[last]; heap[last] = t;
        i = last;
    }
}

/* put the k highest-ranked of the V entries, in order, at the front: O(V log k), where sorting all 50K ids for each
   token would cost milliseconds, more than the GPU's whole decode step */
static void prob_top_k(ProbIndex* p, int V, int k) {
    for (int i = k / 2 - 1; i >= 0; i--) prob_sift_down(p, k, i);
    for (int i = k; i < V; i++) {
        if (prob_before(p[i], p[0])) {
            ProbIndex t = p[0]; p[0] = p[i]; p[i] = t;
            prob_sift_down(p, k, 0);
        }
    }
    qsort(p, (size_t)k, sizeof(ProbIndex), prob_compare);
}

/* p[0..V) holds each id's unnormalized probability exp((logit - max) / temperature), sum their sum. Keep the top_k
   most likely (top_k <= 0: all), then the smallest prefix whose mass reaches top_p (top_p >= 1: all), renormalize
   and draw one id. */
static int sample_from_probs(ProbIndex* p, int V, double sum, int top_k, float top_p, Rng* rng) {
    int n = V;
    if ((top_k > 0 && top_k < V) || top_p < 1.0f) {
        n = top_k > 0 && top_k < V ? top_k : V;
        if (n < V) prob_top_k(p, V, n);
        else qsort(p, (size_t)V, sizeof(ProbIndex), prob_compare);
        if (top_p < 1.0f) {
            double cum = 0;
            for (int i = 0; i < n; i++) {
                cum += p[i].p / sum;
                if (cum >= top_p) { n = i + 1; break; }
            }
        }
        sum = 0;
        for (int i = 0; i < n; i++) sum += p[i].p;
    }
    double coin = rng_uniform(rng) * sum, cdf = 0;
    for (int i = 0; i < n; i++) {
        cdf += p[i].p;
        if (coin < cdf) return p[i].id;
    }
    return p[n - 1].id;
}

/* temperature <= 0: the most likely token (the lowest id among equals). Otherwise softmax(logits / temperature) over
   the V real ids, then sample_from_probs. scratch holds V entries. */
static int sample_logits(const float* logits, int V, float temperature, int top_k, float top_p, Rng* rng,
                         ProbIndex* scratch) {
    int best = 0;
    for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    if (temperature <= 0) return best;
    double sum = 0;
    for (int i = 0; i < V; i++) {
        scratch[i].p = (float)exp((logits[i] - logits[best]) / temperature);
        scratch[i].id = i;
        sum += scratch[i].p;
    }
    return sample_from_probs(scratch, V, sum, top_k, top_p, rng);
}

#endif
