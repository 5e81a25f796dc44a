/*
 * eval_mamba2.c: mean loss, perplexity and bits per byte of a model over token shards, on the CPU.
 *
 *   ./eval_mamba2 -e hf/mamba2-130m -i 'data/pile/pile_val_*.bin' -b 4 -t 1024 -m 50
 *
 * The model is a mamba2.c checkpoint or an HF / mamba_ssm folder (llmc/hf_io.h). The shards are read in order
 * (no shuffling) in non-overlapping windows of B*T+1 tokens (llmc/dataloader.h), each row of T tokens starting
 * from an empty state, as the trainers' validation does. Bits per byte = total loss in bits / total bytes of the
 * target tokens' text, the bytes counted with the tokenizer file (-k, default tokenizer.bin beside the shards; the
 * end-of-text token counts 0 bytes). -D and -M: document boundaries and masked targets, as the trainer's
 * (doc/packing.md). It also prints the next-token accuracy over the counted targets (argmax of the logits == the
 * target, a tie going to the lowest id), the measure of the MQAR recall task. Built on train_mamba2.c's CPU model
 * (MAMBA2_NO_MAIN) and generate_mamba2.c's loader (GENERATE_NO_MAIN).
 */
#define GENERATE_NO_MAIN
#include "generate_mamba2.c"

/* the counted targets (not TARGET_NO_LOSS) of the last forward whose logits' argmax is the target, a tie going to
   the lowest id. The forward left probabilities in acts.probs; the logits are the LM head applied again to the final
   norm's output (the same product, so the same numbers), so the argmax is that of the logits themselves. */
static long count_argmax_hits(real* logits, const Mamba2* m, const int* targets, int BT) {
    const Mamba2Config* c = &m->config;
    matmul_forward(logits, m->acts.lnf, m->params.wte, BT, c->d_model, c->padded_vocab_size);
    long hits = 0;
    for (int i = 0; i < BT; i++) {
        if (targets[i] == TARGET_NO_LOSS) continue;
        const real* l = logits + (size_t)i * c->padded_vocab_size;
        int best = 0;
        for (int v = 1; v < c->vocab_size; v++)
            if (l[v] > l[best]) best = v;
        hits += best == targets[i];
    }
    return hits;
}

int main(int argc, char** argv) {
    g_infer_has_docs = 1; /* -D and -M (doc/packing.md) */
    EvalArgs args = eval_parse_args(argc, argv, "./eval_mamba2", "");
    const char *model_path = args.model_path, *pattern = args.pattern;
    int B = args.B, T = args.T;

    Mamba2 model;
    load_model(&model, model_path, 0);
    const Mamba2Config* c = &model.config;
    config_print(c, stderr);
    params_check_finite(model.params_memory, model.table, model_path); /* a NaN model's loss means nothing */

    Tokenizer tok;
    DataLoader loader;
    long n = eval_open_data(&args, c->vocab_size, &tok, &loader);
    /* -D: the document index of each batch, from its inputs; -M: masked targets are not counted */
    int sep = doc_sep_id(args.doc_sep, tok.init_ok ? tok.eot_token : -1, c->vocab_size);
    int* seq_idx = sep != DOC_SEP_NONE ? (int*)mallocCheck(sizeof(int) * (size_t)B * T) : NULL;

    double sum_nats = 0, bytes = 0;
    long tokens = 0, correct = 0;
    real* logits = (real*)mallocCheck(sizeof(real) * (size_t)B * T * c->padded_vocab_size);
    double t0 = now_seconds();
    for (long i = 0; i < n; i++) {
        dataloader_next_batch(&loader);
        if (seq_idx) dataloader_doc_index(seq_idx, loader.inputs, (size_t)B, (size_t)T, sep);
        real loss = mamba2_forward_docs(&model, loader.inputs, loader.targets, seq_idx, B, T);
        if (!isfinite((double)loss))
            die("model %s: the loss of batch %ld is %f (the weights are finite, the activations overflowed)",
                model_path, i + 1, (double)loss);
        if (model.num_counted == (size_t)B * T) {
            sum_nats += (double)loss * B * T;
            tokens += (long)B * T;
        } else { /* masked targets: the batch's loss is the mean over its counted ones */
            sum_nats += (double)loss * model.num_counted;
            tokens += (long)model.num_counted;
        }
        correct += count_argmax_hits(logits, &model, loader.targets, B * T);
        if (tok.init_ok) {
            for (int k = 0; k < B * T; k++) {
                int id = loader.targets[k];
                if (id != tok.eot_token && (uint32_t)id < tok.vocab_size) bytes += tok.token_len[id];
            }
        }
        double mean = tokens > 0 ? sum_nats / tokens : 0, el = now_seconds() - t0;
        fprintf(stderr, "\rbatch %ld/%ld  loss %.4f  ppl %.3f  %.0f tok/s   ", i + 1, n, mean, exp(mean), tokens / el);
    }
    fprintf(stderr, "\n");
    if (tokens == 0) die("%s: every target of the %ld batches is masked (-M 1): nothing to evaluate", pattern, n);
    double mean = sum_nats / tokens;
    if (tokens == (long)n * B * T)
        printf("model %s\nshards %s: %ld batches of %d x %d = %ld tokens\n", model_path, pattern, n, B, T, tokens);
    else
        printf("model %s\nshards %s: %ld batches of %d x %d, %ld counted targets (the others masked)\n", model_path,
               pattern, n, B, T, tokens);
    if (seq_idx) printf("document boundaries at token %d\n", sep);
    printf("mean loss %.6f nats/token, perplexity %.4f", mean, exp(mean));
    if (tok.init_ok && bytes > 0)
        printf(", bits per byte %.5f (%.0f bytes, %.3f bytes/token)", sum_nats / log(2.0) / bytes, bytes, bytes / tokens);
    printf("\n");
    printf("accuracy %.6f over %ld targets\n", (double)correct / tokens, tokens);
    free(logits);
    free(seq_idx);
    dataloader_free(&loader);
    tokenizer_free(&tok);
    mamba2_free(&model);
    return 0;
}
