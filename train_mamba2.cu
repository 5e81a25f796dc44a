/*
 * train_mamba2.cu: train a Mamba-2 language model on an NVIDIA GPU.
 *
 * The same model, flags, log format, checkpoints and sampling as the CPU trainer train_mamba2.c (the two share
 * llmc/mamba2_model.h and llmc/train_common.h), so a run can move between them; train_mamba2.c is the reference
 * this file is tested against (test_mamba2.cu).
 *
 * Precision: fp32 master weights, AdamW moments and parameter gradients; floatX (bf16, or fp32 with
 * -DENABLE_FP32 / make PRECISION=FP32) copies of the weights for the matmuls and floatX activations; the residual
 * stream, norm statistics, dt, decays and SSD states in fp32. Every reduction runs in a fixed order: two runs with
 * the same seed are bitwise identical.
 *
 * The model (parameters, activations, the blocks' forward and backward, AdamW, checkpoints) is llmc/model.cuh; this
 * file is the training loop: arguments, data, schedule, logging, checkpoints, samples, the benchmark report.
 *
 * Packed documents (-D) and masked targets (-M), as the CPU trainer (doc/packing.md): each batch's document index is
 * made on the host from its inputs (dataloader_doc_index) and uploaded with it (gpu_forward_docs); a masked target
 * (-1) has loss 0 and a zero gradient row, and the step's gradient, accumulated as the mean over all its targets, is
 * scaled by all / counted (summed over every GPU) in the norm, the clipping and the update (gpu_update_scaled).
 *
 * Carried state (-C 1, doc/packing.md section 6), as the CPU trainer: B streams over the data, each row's SSM state
 * and conv window carried into its next batch (gpu_forward_carry), saved beside each checkpoint (carry_write); one
 * GPU only for now.
 *
 * Several GPUs (llmc/multigpu.h): data parallel, one process per GPU. Each layer's gradients are all-reduced on a
 * second stream as soon as that layer's backward is done, overlapped with the backward of the layers below it.
 * With -z 1 (ZeRO-1) the gradients are reduce-scattered instead, each GPU runs AdamW on its 1/N shard of the
 * parameters (holding only that shard's moments) and the updated weights are all-gathered.
 */

#include "llmc/train_common.h"
#include "llmc/schedulers.h"
#include "llmc/model.cuh"
#include "llmc/generate.cuh"

static int cmp_double(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

/* make bench's report: speed, MFU, memory */
static void print_benchmark(const GPUModel* m, const TrainArgs* a, const cudaDeviceProp* prop, double* step_ms,
                            int nsteps, int world) {
    const Mamba2Config* c = &m->config;
    int skip = nsteps > 6 ? 3 : (nsteps > 1 ? 1 : 0); /* warm-up steps left out of the median */
    qsort(step_ms + skip, nsteps - skip, sizeof(double), cmp_double);
    double ms = step_ms[skip + (nsteps - skip) / 2];
    double tps = a->total_batch_tokens / (ms / 1000.0);
    double fpt = model_flops_per_token(c, a->T); /* every block kind (llmc/model_flops.h) */
    size_t free_b, total_b;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    printf("\n== benchmark: %s, %d layers, d_model %d, B=%d T=%d (%d tokens/step), %s, %d x %s\n", a->model, c->n_layer,
           c->d_model, a->B, a->T, a->total_batch_tokens, PRECISION_NAME, world, prop->name);
    cuda_warn_reduced_opt(stdout);
    printf("ms/step          %.1f (median of %d steps after %d warm-up)\n", ms, nsteps - skip, skip);
    printf("tokens/s         %.0f\n", tps);
    printf("model FLOPs      %.3f GFLOP/token -> %.1f TFLOP/s per GPU, MFU %.1f%% of 989 TFLOP/s (H100 bf16 dense)\n",
           fpt / 1e9, fpt * tps / world / 1e12, 100.0 * fpt * tps / world / 989e12);
    printf("GPU memory       %.2f GiB allocated by the trainer (its peak: allocations are made once); %.2f GiB in use "
           "on the device (incl. CUDA context, cuBLAS)\n", g_gpu_bytes / 1073741824.0,
           (total_b - free_b) / 1073741824.0);
    printf("(./profile_mamba2cu shows where a step's time goes, kernel by kernel)\n");
}

/* the CPU trainer's evaluate(): the mean of the batch means, or with masked targets the mean over every counted
 * target of the batches; seq_idx (B*T host scratch) and sep: the document boundaries (-D), NULL / DOC_SEP_NONE
 * without */
static float gpu_evaluate(GPUModel* m, DataLoader* val, int max_batches, int* seq_idx, int sep) {
    dataloader_reset(val);
    int n = (int)dataloader_num_batches(val);
    if (max_batches < n) n = max_batches;
    int B = (int)val->B, T = (int)val->T;
    double sum = 0, nats = 0;
    size_t counted = 0;
    for (int i = 0; i < n; i++) {
        dataloader_next_batch(val);
        if (seq_idx) dataloader_doc_index(seq_idx, val->inputs, val->B, val->T, sep);
        float loss = gpu_forward_docs(m, val->inputs, val->targets, seq_idx, B, T, 0.0f);
        sum += loss;
        nats += (double)loss * m->num_counted;
        counted += m->num_counted;
    }
    if (counted != (size_t)n * B * T) return (float)(counted > 0 ? nats / counted : 0);
    return (float)(sum / (n > 0 ? n : 1));
}

/* the carried state's companion file beside a checkpoint (llmc/train_common.h: carry_write / carry_read), the CPU
   trainer's layout: a run moves between the trainers with it. The host copies: (LM, B, H, P, N) SSM states and
   (LM, B, K-1, conv_dim) windows, one element more each, as carry_write / carry_read take them */
typedef struct { float* ssm; float* win; } CarryHostCopy;
static CarryHostCopy carry_host_alloc(const Mamba2Config* c, int B) {
    CarryHostCopy h;
    h.ssm = (float*)mallocCheck((carry_ssm_floats(c, B) + 1) * sizeof(float));
    h.win = (float*)mallocCheck((carry_window_floats(c, B) + 1) * sizeof(float));
    return h;
}

static void gpu_carry_save(GPUModel* m, const char* ckpt_path, int step, const DataLoader* loader) {
    DataLoaderState ls;
    dataloader_save_state(loader, &ls);
    CarryHostCopy h = carry_host_alloc(&m->config, m->carry.B);
    gpu_carry_download(m, h.ssm, h.win);
    carry_write(ckpt_path, &m->config, m->carry.B, step, 1, &ls, h.ssm, h.win);
    free(h.ssm); free(h.win);
}

static void gpu_carry_load(GPUModel* m, const char* ckpt_path, int step, const DataLoader* loader) {
    DataLoaderState ls;
    dataloader_save_state(loader, &ls);
    CarryHostCopy h = carry_host_alloc(&m->config, m->carry.B);
    carry_read(ckpt_path, &m->config, m->carry.B, step, 1, &ls, h.ssm, h.win);
    gpu_carry_upload(m, h.ssm, h.win);
    free(h.ssm); free(h.win);
    printf("resume: carried state of %d streams from %s.carry\n", m->carry.B, ckpt_path);
}

static void gpu_print_sample(GPUModel* m, GPUInference* s, Tokenizer* tok, Rng* rng, int n_tokens) {
    gpu_inference_reset(s, &m->config);
    int token = sample_first_token(tok, m->config.vocab_size);
    printf("sample: ");
    for (int i = 0; i < n_tokens; i++) {
        float* logits = gpu_step(m, s, &token);
        token = sample_token(logits, m->config.vocab_size, 1.0f, rng);
        sample_print_token(tok, token);
    }
    printf("\n---\n");
    fflush(stdout);
}

int main(int argc, char** argv) {
    g_trainer_name = "./train_mamba2cu";
    g_trainer_what = "on an NVIDIA GPU (" PRECISION_NAME ")";
    g_trainer_has_docs = 1; /* -D and -M (doc/packing.md) */
    g_trainer_has_carry = 1; /* -C (doc/packing.md section 6) */
    TrainArgs args;
    parse_args(&args, argc, argv);
    train_signals_install(); /* SIGINT / SIGTERM: finish the step, checkpoint, exit */
    MultiGPUArgs mga = {-1, -1, -1, NULL};
    MultiGPU mg = multigpu_init(&argc, &argv, &mga, args.zero_stage);
    if (mg.rank != 0 && freopen("/dev/null", "w", stdout) == NULL) die("cannot silence rank %d's stdout", mg.rank);
    if (args.zero_stage == 1 && mg.world == 1) printf("-z 1 on one GPU: nothing to shard, running without ZeRO\n");
    if (args.carry && mg.world > 1)
        die("-C 1 (carried state) runs on one GPU for now: each rank's streams would need their carried state gathered "
            "into the checkpoint's companion file; train on one GPU, or without -C");
    int dev_count = 0;
    if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0)
        die("no CUDA GPU found: use the CPU trainer ./train_mamba2");
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %.1f GiB, precision %s; %d GPU%s%s\n", prop.name, prop.totalGlobalMem / 1073741824.0,
           PRECISION_NAME, mg.world, mg.world > 1 ? "s" : "", mg.zero_stage ? ", ZeRO-1" : "");

    if (mg.rank == 0) output_dir_prepare(&args); /* refuses a used -o unless -y or -w; removes stale .tmp files */

    GPUModel model;
    Rng sample_rng;
    rng_seed(&sample_rng, args.seed ^ 0x5a5a5a5a5a5a5a5aull);
    int start_step = 0;
    uint64_t resume_state[CKPT_STATE_WORDS] = {0};
    int have_loader_state = 0;
    ModelSource src = model_source(&args);
    {   /* before any allocation: refuse a model that cannot fit (weights, gradients, AdamW moments, activations),
           counted by the plan the model allocates with (gpu_train_memory_plan), in every recompute mode */
        Mamba2Config need = model_source_config(&src);
        if (need.chunk_size < GPU_SSD_MIN_CHUNK) need.chunk_size = GPU_SSD_MIN_CHUNK;
        size_t free_b, total_b;
        cudaCheck(cudaMemGetInfo(&free_b, &total_b));
        int q = args.ssd_chunk > 0 ? args.ssd_chunk : gpu_ssd_chunk(&need, GPU_SSD_MAX_CHUNK);
        GPUMemoryPlan plan = gpu_train_memory_plan(&need, args.B, args.T, q, args.recompute, mg.world,
                                                   mg.world > 1 ? args.zero_stage : 0);
        printf("memory plan: %.2f GiB weights, gradients and AdamW state + %.2f GiB activations (B=%d T=%d, -r %d: "
               "%.1f KiB a token) = %.2f GiB of %.2f GiB free\n", plan.weights / 1073741824.0,
               plan.activations / 1073741824.0, args.B, args.T, args.recompute,
               plan.activations / 1024.0 / ((double)args.B * args.T), (plan.weights + plan.activations) / 1073741824.0,
               free_b / 1073741824.0);
        if (plan.host > 0)
            printf("memory plan: + %.2f GiB of pinned host memory (-r 3: the residual stream's checkpoints and block "
                   "outputs, %.1f KiB a token)\n", plan.host / 1073741824.0,
                   plan.host / 1024.0 / ((double)args.B * args.T));
        size_t carry_bytes = args.carry ? gpu_carry_bytes(&need, args.B, args.T) : 0;
        if (args.carry)
            printf("memory plan: + %.3f GiB carried state (-C 1: SSM states and conv windows, two copies, conv staging)\n",
                   carry_bytes / 1073741824.0);
        memory_check_or_die(plan.weights + plan.activations + carry_bytes, free_b, "GPU", &need);
        memory_check_or_die(config_param_count(&need) * 16ULL + plan.host, host_memory_available(), "CPU", &need);
    }
    CheckpointInfo info;
    if (src.kind == MODEL_RESUME) {
        gpu_load_checkpoint(&model, src.path, &info, 1, &mg);
        start_step = resume_accept(&args, &src, &info, &sample_rng, resume_state);
        have_loader_state = 1;
    } else if (src.kind == MODEL_FROM_FILE) {
        gpu_model_from_weights(&model, src.path, &mg); /* trained weights: a fresh optimizer, step 0 */
        printf("initialized from %s (weights only; fresh optimizer)\n", src.path);
    } else {
        gpu_model_build(&model, &src.config, args.seed, &mg);
    }
    const Mamba2Config* c = &model.config;
    config_print(c, stdout);
    printf("parameters: %zu\n", model.num_parameters);

    int B = args.B, T = args.T;
    int accum = grad_accum_steps(&args, mg.world);
    DataLoader train_loader, val_loader;
    dataloader_init(&train_loader, args.train_pattern, B, T, mg.rank, mg.world, 1, args.seed, c->vocab_size);
    if (args.carry) { /* B streams over the data, each row's state carried to its next batch */
        gpu_carry_allocate(&model, B, T);
        dataloader_use_streams(&train_loader);
    }
    if (have_loader_state) train_state_restore_loader(&train_loader, resume_state);
    if (have_loader_state && args.carry) gpu_carry_load(&model, src.path, start_step, &train_loader);
    int use_val = strcmp(args.val_pattern, "none") != 0 && args.val_every > 0;
    if (use_val) dataloader_init(&val_loader, args.val_pattern, B, T, 0, 1, 0, args.seed, c->vocab_size);
    if (args.masks) { /* every train and val shard needs its X.bin.mask (checked now) */
        dataloader_use_masks(&train_loader);
        if (use_val) dataloader_use_masks(&val_loader);
    }
    printf("train: %zu tokens, B=%d T=%d on each of %d GPU(s), grad accumulation %d -> %d tokens/step\n",
           train_loader.num_tokens, B, T, mg.world, accum, args.total_batch_tokens);
    Tokenizer tokenizer;
    trainer_tokenizer_init(&tokenizer, &args);
    /* document boundaries: each row's document index, made from the inputs of every batch */
    int doc_sep = doc_sep_resolve(&args, &tokenizer, c->vocab_size);
    int* seq_idx = doc_sep != DOC_SEP_NONE ? (int*)mallocCheck(sizeof(int) * (size_t)B * T) : NULL;
    if (seq_idx) printf("document boundaries: a new document at each token %d\n", doc_sep);
    if (args.masks) printf("masked targets: from the shards' .mask files\n");
    int* fresh = args.carry ? (int*)mallocCheck(sizeof(int) * (size_t)B) : NULL;
    if (args.carry)
        printf("carried state: %d streams of %zu batches an epoch; validation reads fresh rows\n", B,
               dataloader_num_batches(&train_loader));
    GPUInference infer; /* only rank 0 prints samples; none for hybrids yet (the GPU sampler has no KV cache) */
    int gpu_samples = !config_is_hybrid(c);
    if (gpu_samples) gpu_inference_init(&infer, c, 1);
    else if (args.sample_every > 0) printf("samples: none for a hybrid model in the GPU trainer yet (./generate_mamba2cu "
                                           "on a checkpoint samples it)\n");
    gpu_model_set_recompute(&model, args.recompute);
    if (args.ssd_chunk > 0) {
        if (args.ssd_chunk < 16 || args.ssd_chunk > 256)
            die("-K %d: the GPU SSD chunk length is 16 to 256", args.ssd_chunk);
        model.ssd_q = args.ssd_chunk;
    }
    printf("SSD kernels: chunk length %d (the model's chunk_size %d; -K sets it)\n", model.ssd_q, c->chunk_size);
    gpu_model_ensure_activations(&model, B, T);
    printf("activations: %.2f GiB%s\n", model.activation_bytes / 1073741824.0,
           args.recompute == 1 ? " (-r 1: conv and gated-norm outputs recomputed in the backward)"
           : args.recompute == 2 ? " (-r 2: each layer's input kept, the layer recomputed in the backward)"
           : args.recompute == 3 ? " (-r 3: as -r 2, the residual stream's checkpoints and block outputs on the host)"
                                 : "");

    if (start_step > 0 && mg.rank == 0) { /* resume: main.log back to the checkpoint's step */
        int cut = log_trim(args.output_dir, start_step);
        if (cut > 0) printf("resume: cut %d lines written after step %d from %s/main.log\n", cut, start_step,
                            args.output_dir);
    }
    FILE* logf = log_open(mg.rank == 0 ? args.output_dir : NULL, start_step > 0);
    double* step_ms = (double*)callocCheck((size_t)args.max_steps + 1, sizeof(double));
    int nstep_ms = 0;
    double t_loop = now_seconds();
    int steps_timed = 0;
    for (int step = start_step; step <= args.max_steps; step++) {
        int last = step == args.max_steps;
        if (use_val && (step % args.val_every == 0 || last))
            log_val(logf, step, gpu_evaluate(&model, &val_loader, args.val_batches, seq_idx, doc_sep));
        if (mg.rank == 0 && gpu_samples && args.sample_every > 0 && step > 0 && (step % args.sample_every == 0 || last))
            gpu_print_sample(&model, &infer, &tokenizer, &sample_rng, args.gen_tokens);
        if (last) break;

        double t0 = now_seconds();
        gpu_zero_grad(&model);
        double loss_sum = 0, nats_sum = 0;
        size_t counted = 0;
        for (int micro = 0; micro < accum; micro++) {
            dataloader_next_batch(&train_loader);
            if (seq_idx) dataloader_doc_index(seq_idx, train_loader.inputs, (size_t)B, (size_t)T, doc_sep);
            float dloss = 1.0f / ((float)B * T * accum * mg.world), l;
            if (args.carry) {
                dataloader_fresh_rows(fresh, train_loader.row_reset, train_loader.inputs, (size_t)B, (size_t)T,
                                      doc_sep);
                l = gpu_forward_carry(&model, train_loader.inputs, train_loader.targets, seq_idx, fresh, B, T, dloss);
            } else {
                l = gpu_forward_docs(&model, train_loader.inputs, train_loader.targets, seq_idx, B, T, dloss);
            }
            loss_sum += l;
            nats_sum += (double)l * model.num_counted;
            counted += model.num_counted;
            gpu_backward(&model, micro == accum - 1);
        }
        float loss = (float)(multigpu_sum_double(&mg, loss_sum / accum, model.dev_scalar, model.stream) / mg.world);
        /* masked targets: the backward used 1/(all targets of the step, every GPU's); the loss is the mean over the
           counted ones, so the gradient is scaled by all/counted in the norm, the clipping and the update (exactly
           1, and skipped, when every target counts: the default arithmetic is unchanged). Without -M every target
           counts and no GPU needs to ask the others. */
        double grad_scale = 1.0;
        if (args.masks) {
            double all = (double)B * T * accum * mg.world;
            double counted_all = multigpu_sum_double(&mg, (double)counted, model.dev_scalar, model.stream);
            double nats_all = multigpu_sum_double(&mg, nats_sum, model.dev_scalar, model.stream);
            if (counted_all != all) {
                loss = (float)(counted_all > 0 ? nats_all / counted_all : 0);
                grad_scale = counted_all > 0 ? all / counted_all : 0; /* nothing counted: no gradient */
            }
        }
        if (!isfinite(loss)) die("loss is %f at step %d: training diverged (lower -l, or check the data)", loss, step);
        float lr = lr_at_step(args.lr, args.warmup, args.final_lr_frac, step, args.max_steps);
        float norm = gpu_update_scaled(&model, lr, 0.9f, 0.95f, 1e-8f, args.weight_decay, args.grad_clip,
                                       (float)grad_scale);
        double step_s = now_seconds() - t0;
        step_ms[nstep_ms++] = step_s * 1000.0;
        if (step > start_step) steps_timed++; /* the first step includes start-up costs */
        int done = step + 1;
        double avg = steps_timed > 0 ? (now_seconds() - t_loop) / (done - start_step) : step_s;
        log_train(logf, &args, done, loss, lr, norm, step_s, avg);
        /* a stop signal: every rank must see the same decision (saving under ZeRO-1 is collective) */
        int sig = train_stop_requested();
        int stop = multigpu_sum_double(&mg, sig ? 1.0 : 0.0, model.dev_scalar, model.stream) > 0;
        if (checkpoint_due_or_stop(&args, done, stop)) {
            uint64_t st[CKPT_STATE_WORDS];
            train_state_pack(st, done, &sample_rng, &train_loader);
            char path[4096];
            checkpoint_path(path, sizeof(path), args.output_dir, done);
            if (args.carry) gpu_carry_save(&model, path, done, &train_loader); /* first: no checkpoint lacks it */
            gpu_save_checkpoint(&model, path, st);
            printf("saved checkpoint %s\n", path);
            if (mg.rank == 0) prune_checkpoints(args.output_dir, args.ckpt_keep);
        }
        if (stop && done < args.max_steps) {
            if (sig == 0) sig = SIGTERM; /* another rank was signalled */
            log_close(logf);
            printf("stopped by %s after step %d%s\n", signal_name(sig), done,
                   args.output_dir ? ": checkpoint written, resume with -y 1" : " (no -o: nothing saved)");
            fflush(stdout);
            multigpu_free(&mg);
            exit(128 + sig);
        }
    }
    size_t free_b, total_b;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    printf("total time %.1f s, GPU memory in use %.2f GiB\n", now_seconds() - t_loop,
           (total_b - free_b) / 1073741824.0);
    if (args.profile && nstep_ms > 0) print_benchmark(&model, &args, &prop, step_ms, nstep_ms, mg.world);
    free(step_ms);
    free(seq_idx);
    free(fresh);
    log_close(logf);
    tokenizer_free(&tokenizer);
    dataloader_free(&train_loader);
    if (use_val) dataloader_free(&val_loader);
    matmul_destroy();
    multigpu_free(&mg);
    return 0;
}

