/*
 * eval_mamba2.cu: mean loss, perplexity and bits per byte of a model over token shards, on an NVIDIA GPU.
 *
 *   ./eval_mamba2cu -e hf/mamba2-130m -i 'data/pile/pile_val_*.bin' -b 8 -t 2048 -m 50
 *
 * The GPU twin of eval_mamba2.c, with the same flags and output. Forward only: the trainer's gpu_forward with
 * dloss = 0 (classifier_loss_only: no dlogits) on a model made forward_only (the layers take turns in one layer's
 * activation buffers; no gradient buffers). The shards are read in order in non-overlapping windows of B*T+1
 * tokens (llmc/dataloader.h), each row of T tokens starting from an empty state, as the trainers' validation does,
 * so the mean loss here is the trainer's val loss on the same data. Bits per byte = total loss in bits / total
 * bytes of the target tokens' text (tokenizer file -k, default tokenizer.bin beside the shards; end-of-text counts
 * 0 bytes). -e also takes a preset (130m) with random weights, for timing only. -D and -M: document boundaries and
 * masked targets, as the trainer's (doc/packing.md): the means are over the counted targets. The accuracy line
 * (argmax of the logits == target, ties to the lowest id, over the counted targets) is for synthetic tasks (MQAR).
 * The loop itself is gpu_eval (llmc/eval.cuh).
 */
#include "llmc/model.cuh"
#include "llmc/eval.cuh"
#include "llmc/infer_common.h"

int main(int argc, char** argv) {
    g_infer_has_docs = 1; /* -D and -M (doc/packing.md) */
    EvalArgs args = eval_parse_args(argc, argv, "./eval_mamba2cu", ",\n              or a preset such as 130m (random weights: for timing only)");
    const char *model_path = args.model_path, *pattern = args.pattern;
    int B = args.B, T = args.T;
    int dev_count = 0;
    if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0)
        die("no CUDA GPU found: use the CPU program ./eval_mamba2");

    GPUModel model;
    gpu_load_model(&model, model_path, 1);
    model.forward_only = 1; /* one layer's activations, no gradient buffers */
    model.want_argmax = 1;  /* the accuracy line */
    const Mamba2Config* c = &model.config;
    {   /* a NaN model's loss means nothing */
        float* host = (float*)mallocCheck(model.num_parameters * sizeof(float));
        cudaCheck(cudaMemcpy(host, model.params, model.num_parameters * sizeof(float), cudaMemcpyDeviceToHost));
        params_check_finite(host, model.table, model_path);
        free(host);
    }
    /* the chunk length the forward likes best is the trainer's (dev/cuda/NOTES_ssd.md times both) */
    model.ssd_q = gpu_ssd_chunk(c, GPU_SSD_MAX_CHUNK);
    config_print(c, stderr);

    Tokenizer tok;
    DataLoader loader;
    long n = eval_open_data(&args, c->vocab_size, &tok, &loader);

    /* -D: the document index of each batch, from its inputs; -M: masked targets are not counted */
    int sep = doc_sep_id(args.doc_sep, tok.init_ok ? tok.eot_token : -1, c->vocab_size);
    EvalResult r = gpu_eval_docs(&model, &loader, n, &tok, 1, sep);
    if (r.tokens == 0) die("%s: every target of the %ld batches is masked (-M 1): nothing to evaluate", pattern, n);
    double mean = r.sum_nats / r.tokens;
    if (!isfinite(mean)) die("model %s: the mean loss is %f (the weights are finite, the activations overflowed)",
                             model_path, mean);
    long positions = (long)n * B * T;
    if (r.tokens == positions)
        printf("model %s\nshards %s: %ld batches of %d x %d = %ld tokens\n", model_path, pattern, n, B, T, r.tokens);
    else
        printf("model %s\nshards %s: %ld batches of %d x %d, %ld counted targets (the others masked)\n", model_path,
               pattern, n, B, T, r.tokens);
    if (sep != DOC_SEP_NONE) printf("document boundaries at token %d\n", sep);
    printf("mean loss %.6f nats/token, perplexity %.4f", mean, exp(mean));
    if (tok.init_ok && r.bytes > 0)
        printf(", bits per byte %.5f (%.0f bytes, %.3f bytes/token)", r.sum_nats / log(2.0) / r.bytes, r.bytes,
               r.bytes / r.tokens);
    printf("\n");
    printf("accuracy %.6f over %ld targets\n", (double)r.hits / r.tokens, r.tokens);
    size_t free_b, total_b;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    printf("speed: %.0f tokens/s over all batches; %.0f tokens/s after the first (%ld batches); GPU memory in use "
           "%.2f GiB (%s)\n", positions / r.seconds,
           r.batches > 1 ? (positions - (double)B * T) / r.seconds_after_first : 0.0, r.batches - 1,
           (total_b - free_b) / 1073741824.0, PRECISION_NAME);
    dataloader_free(&loader);
    tokenizer_free(&tok);
    matmul_destroy();
    return 0;
}
