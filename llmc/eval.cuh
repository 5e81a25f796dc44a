/*
 * eval.cuh: the evaluation loop on the GPU (eval_mamba2.cu; test_generate.cu checks it against the trainer's
 * validation formula and against the recurrent step): the summed per-token loss of n batches through gpu_forward
 * with dloss = 0, and the text bytes of the target tokens for bits per byte.
 */
#ifndef MAMBA2_EVAL_CUH
#define MAMBA2_EVAL_CUH

#include "model.cuh"
#include "dataloader.h"
#include "tokenizer.h"

typedef struct {
    double sum_nats;   /* summed per-token losses */
    double bytes;      /* text bytes of the target tokens (0 without a tokenizer) */
    long tokens, batches;
    double seconds;    /* every batch */
    double seconds_after_first; /* batches after the first (start-up costs excluded), for tokens/s */
} EvalResult;

/* n batches from the loader's current position; progress: a \r line on stderr per batch */
static EvalResult gpu_eval(GPUModel* m, DataLoader* loader, long n, const Tokenizer* tok, int progress) {
    EvalResult r;
    memset(&r, 0, sizeof(r));
    int B = (int)loader->B, T = (int)loader->T, BT = B * T;
    double t0 = now_seconds(), t1 = t0;
    for (long i = 0; i < n; i++) {
        dataloader_next_batch(loader);
        gpu_forward(m, loader->inputs, loader->targets, B, T, 0.0f);
        for (int k = 0; k < BT; k++) r.sum_nats += m->losses_host[k]; /* fixed order, double */
        r.tokens += BT;
        r.batches++;
        if (tok && tok->init_ok) {
            for (int k = 0; k < BT; k++) {
                int id = loader->targets[k];
                if (id != tok->eot_token && (uint32_t)id < tok->vocab_size) r.bytes += tok->token_len[id];
            }
        }
        if (i == 0) t1 = now_seconds();
        if (progress) {
            double mean = r.sum_nats / r.tokens, el = now_seconds() - t0;
            fprintf(stderr, "\rbatch %ld/%ld  loss %.4f  ppl %.3f  %.0f tok/s   ", i + 1, n, mean, exp(mean),
                    r.tokens / (el > 0 ? el : 1e-9));
        }
    }
    if (progress) fprintf(stderr, "\n");
    r.seconds = now_seconds() - t0;
    r.seconds_after_first = now_seconds() - t1;
    return r;
}

#endif
