/*
 * eval.cuh: the evaluation loop on the GPU (eval_mamba2.cu; test_generate.cu checks it against the trainer's
 * validation formula and against the recurrent step): the summed per-token loss of n batches through gpu_forward
 * with dloss = 0, the text bytes of the target tokens for bits per byte, and (want_argmax) the accuracy.
 * Document boundaries (sep, -D) and masked targets (-M, the loader's) as in training (doc/packing.md): only counted
 * targets enter the sums.
 */
#ifndef MAMBA2_EVAL_CUH
#define MAMBA2_EVAL_CUH

#include "model.cuh"
#include "dataloader.h"
#include "tokenizer.h"
#include "train_common.h" /* DOC_SEP_NONE */

typedef struct {
    double sum_nats;   /* summed per-token losses of the counted targets */
    double bytes;      /* text bytes of the counted target tokens (0 without a tokenizer) */
    long tokens, batches; /* tokens: the counted targets (every position without masked targets) */
    long hits;         /* counted targets that are the argmax of their logits (m->want_argmax; else 0) */
    double seconds;    /* every batch */
    double seconds_after_first; /* batches after the first (start-up costs excluded), for tokens/s */
} EvalResult;

/* n batches from the loader's current position; sep: the document separator (DOC_SEP_NONE: none); progress: a \r
 * line on stderr per batch */
static EvalResult gpu_eval_docs(GPUModel* m, DataLoader* loader, long n, const Tokenizer* tok, int progress, int sep) {
    EvalResult r;
    memset(&r, 0, sizeof(r));
    int B = (int)loader->B, T = (int)loader->T, BT = B * T;
    int* seq_idx = sep != DOC_SEP_NONE ? (int*)mallocCheck(sizeof(int) * (size_t)BT) : NULL;
    double t0 = now_seconds(), t1 = t0;
    for (long i = 0; i < n; i++) {
        dataloader_next_batch(loader);
        if (seq_idx) dataloader_doc_index(seq_idx, loader->inputs, (size_t)B, (size_t)T, sep);
        gpu_forward_docs(m, loader->inputs, loader->targets, seq_idx, B, T, 0.0f);
        for (int k = 0; k < BT; k++) { /* fixed order, double; a masked target's loss is 0 */
            int id = loader->targets[k];
            if (id == TARGET_NO_LOSS) continue;
            r.sum_nats += m->losses_host[k];
            r.tokens++;
            if (m->argmax_host) r.hits += m->argmax_host[k] == id;
            if (tok && tok->init_ok && id != tok->eot_token && (uint32_t)id < tok->vocab_size)
                r.bytes += tok->token_len[id];
        }
        r.batches++;
        if (i == 0) t1 = now_seconds();
        if (progress) {
            double mean = r.tokens > 0 ? r.sum_nats / r.tokens : 0, el = now_seconds() - t0;
            fprintf(stderr, "\rbatch %ld/%ld  loss %.4f  ppl %.3f  %.0f tok/s   ", i + 1, n, mean, exp(mean),
                    (double)r.batches * BT / (el > 0 ? el : 1e-9));
        }
    }
    if (progress) fprintf(stderr, "\n");
    free(seq_idx);
    r.seconds = now_seconds() - t0;
    r.seconds_after_first = now_seconds() - t1;
    return r;
}

/* one document per row */
static EvalResult gpu_eval(GPUModel* m, DataLoader* loader, long n, const Tokenizer* tok, int progress) {
    return gpu_eval_docs(m, loader, n, tok, progress, DOC_SEP_NONE);
}

#endif
