/*
 * dev/gpu_test_util.h: what the GPU test programs that check the GPU model against the CPU trainer share
 * (test_mamba2.cu, test_hybrid.cu): gradients to the host and their worst per-tensor error, one forward + backward,
 * and the helpers that run the trainer binaries and read their logs. Include after llmc/model.cuh.
 */
#ifndef MAMBA2_GPU_TEST_UTIL_H
#define MAMBA2_GPU_TEST_UTIL_H

#include <sys/wait.h>

/* the GPU model's fp32 gradients, copied to a new host buffer */
static float* gpu_grads_to_host(GPUModel* m) {
    float* g = (float*)mallocCheck(m->num_parameters * sizeof(float));
    cudaCheck(cudaMemcpy(g, m->grads, m->num_parameters * sizeof(float), cudaMemcpyDeviceToHost));
    return g;
}

/* one forward + backward of a batch on the GPU (seq_idx NULL: no document boundaries); returns the loss */
static float gpu_packed_step(GPUModel* m, const int* in, const int* tg, const int* seq, int B, int T, float dloss) {
    gpu_zero_grad(m);
    float loss = gpu_forward_docs(m, in, tg, seq, B, T, dloss);
    gpu_backward(m, 1);
    return loss;
}

/* the max over tensors of max |a - b| / max |b| (NaN counts as the worst) */
static double grads_rel_err(const float* a, const float* b, const ParamSpec* table) {
    double worst = 0;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        double d = 0, mag = 0;
        for (size_t i = 0; i < table[t].numel; i++) {
            double e = fabs((double)a[table[t].offset + i] - b[table[t].offset + i]);
            d = e > d || e != e ? e : d;
            mag = fmax(mag, fabs((double)b[table[t].offset + i]));
        }
        double rel = d / (mag > 0 ? mag : 1e-30);
        if (rel > worst || rel != rel) worst = rel;
    }
    return worst;
}

/* a model of config c with weights params, made with recompute mode r (and, for -r 2 and 3, residual checkpoints
   every resid_k layers; 0: the default; -r 3: those in host memory), runs one step of the batch: its loss and
   gradients are bitwise those given, and its start-up memory plan is its allocation to the byte (-r 3: its GPU and
   its host memory). Returns its activation bytes. */
static size_t check_recompute_mode(const Mamba2Config* c, const float* params, int r, int resid_k, const int* in,
                                   const int* tg, const int* seq, int B, int T, float dloss, float loss, const float* g,
                                   const char* what) {
    GPUModel mr;
    gpu_model_create(&mr, c, params, NULL);
    gpu_model_set_recompute(&mr, r);
    mr.resid_every = resid_k;
    float loss_r = gpu_packed_step(&mr, in, tg, seq, B, T, dloss);
    float* gr = gpu_grads_to_host(&mr);
    char mode[160];
    if (r >= 2)
        snprintf(mode, sizeof mode, "-r %d (fp32 residual checkpoints every %d of %d layers%s)", r,
                 resid_every(resid_k), c->n_layer, r == 3 ? ", on the host with the kept block outputs" : "");
    else
        snprintf(mode, sizeof mode, "-r %d", r);
    int same = loss_r == loss && memcmp(g, gr, mr.num_parameters * sizeof(float)) == 0;
    report(same, "%s: %s gives the same loss and gradients, bitwise", what, mode);
    if (!same) printf("    loss %.9g vs %.9g; worst per-tensor gradient error %.3g\n", loss_r, loss,
                      grads_rel_err(gr, g, mr.table));
    GPUMemoryPlan plan = gpu_train_memory_plan_detail(c, B, T, mr.ssd_q, r, resid_k, 1, 0, 0, NULL);
    report(plan.activations == mr.activation_bytes, "%s: %s memory plan %zu bytes == allocated %zu", what, mode,
           plan.activations, mr.activation_bytes);
    if (r == 3) {
        report(plan.host == mr.host_bytes && mr.host_bytes > 0, "%s: %s host memory plan %zu bytes == pinned %zu", what,
               mode, plan.host, mr.host_bytes);
        if (c->n_layer >= 2) {  /* control: the backward reads the host copies (the forward's sync has landed them) */
            gpu_zero_grad(&mr);
            gpu_forward_docs(&mr, in, tg, seq, B, T, dloss);
            memset(mr.resid_host_base, 0, mr.host_bytes);
            gpu_backward(&mr, 1);
            float* gz = gpu_grads_to_host(&mr);
            report(memcmp(g, gz, mr.num_parameters * sizeof(float)) != 0, "%s: %s control: the host copies zeroed "
                   "between forward and backward change the gradients", what, mode);
            free(gz);
        }
    }
    free(gr);
    return mr.activation_bytes;  /* the model's GPU memory stays allocated (there is no free): a test's small models */
}

/* after a step that gave `loss` and gradients g on m: the same step again is bitwise the same; models made with
   -r 1, -r 2 and -r 3 give the same loss and gradients bitwise; each mode's start-up memory plan is its allocation to
   the byte. -r 2 runs with its default residual checkpoint spacing and with checkpoints every 2 layers, so that a model
   of 4 or more layers rebuilds some x_l from a checkpoint and one or several block outputs; a model of fewer layers
   than that rebuilds nothing (its top layer's input is still in the scratch slot), so -r 2 is checked on a deeper pure
   Mamba-2 model (7 layers, vocabulary 257: the same batch, whose tokens must be below 257) as well. Each mode's
   activation bytes (-r 2: the default spacing's) go to act_bytes, for the caller's own ordering check. Needs
   dev/test_report.h. */
static void check_repeat_and_recompute(GPUModel* m, const Mamba2Config* c, const float* params, const int* in,
                                       const int* tg, const int* seq, int B, int T, float dloss, float loss,
                                       const float* g, const char* what, size_t act_bytes[3]) {
    float loss2 = gpu_packed_step(m, in, tg, seq, B, T, dloss);
    float* g2 = gpu_grads_to_host(m);
    report(loss2 == loss && memcmp(g, g2, m->num_parameters * sizeof(float)) == 0,
           "%s: the same step twice: loss and gradients bitwise identical", what);
    free(g2);
    act_bytes[0] = m->activation_bytes;
    GPUMemoryPlan plan = gpu_train_memory_plan(c, B, T, m->ssd_q, 0, 1, 0);
    report(plan.activations == m->activation_bytes, "%s: -r 0 memory plan %zu bytes == allocated %zu", what,
           plan.activations, m->activation_bytes);
    act_bytes[1] = check_recompute_mode(c, params, 1, 0, in, tg, seq, B, T, dloss, loss, g, what);
    act_bytes[2] = check_recompute_mode(c, params, 2, 0, in, tg, seq, B, T, dloss, loss, g, what);
    check_recompute_mode(c, params, 2, 2, in, tg, seq, B, T, dloss, loss, g, what);
    check_recompute_mode(c, params, 3, 2, in, tg, seq, B, T, dloss, loss, g, what);
    if (c->n_layer < 4) { /* the deeper model: its own weights, -r 0's step as the reference */
        Mamba2Config d;
        char err[256];
        if (config_parse(&d, "d_model=64,n_layer=7,d_state=16,headdim=16,vocab=257,chunk=16", err, sizeof err) != 0)
            die("%s", err);
        ParamSpec table[NUM_PARAM_TENSORS];
        size_t n = param_table_build(table, &d);
        float* p = (float*)mallocCheck(n * sizeof(float));
        params_init(p, table, &d, 4242);
        GPUModel md;
        gpu_model_create(&md, &d, p, NULL);
        float loss_d = gpu_packed_step(&md, in, tg, seq, B, T, dloss);
        float* gd = gpu_grads_to_host(&md);
        char what_d[200];
        snprintf(what_d, sizeof what_d, "%.150s, 7-layer model", what);
        check_recompute_mode(&d, p, 2, 0, in, tg, seq, B, T, dloss, loss_d, gd, what_d);
        check_recompute_mode(&d, p, 2, 3, in, tg, seq, B, T, dloss, loss_d, gd, what_d);
        check_recompute_mode(&d, p, 3, 3, in, tg, seq, B, T, dloss, loss_d, gd, what_d);
        free(gd);
        free(p);
    }
}

/* ---- the trainer binaries ---- */

/* a shell command, echoed; its exit status (128: it did not exit) */
static int run(const char* cmd) {
    printf("    $ %s\n", cmd);
    int status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* the values of `key` ("trl" train losses, "tel" val losses) in a main.log's "s:<step> <key>:<value>" lines */
static int read_log_values(const char* path, const char* key, float* out, int max) {
    FILE* f = fopen(path, "r");
    if (!f) return 0;
    char line[512], fmt[32];
    snprintf(fmt, sizeof(fmt), "s:%%d %s:%%f", key);
    int n = 0, s;
    float v;
    while (fgets(line, sizeof(line), f) && n < max)
        if (sscanf(line, fmt, &s, &v) == 2) out[n++] = v;
    fclose(f);
    return n;
}
static int read_log_losses(const char* path, float* out, int max) { return read_log_values(path, "trl", out, max); }

static int files_equal(const char* a, const char* b) {
    char cmd[1300];
    snprintf(cmd, sizeof(cmd), "cmp -s %s %s", a, b);
    return system(cmd) == 0;
}

/* a text-like byte shard at path (repeated words, a newline now and then), so the loss falls; returns its tokens */
static int write_text_shard(const char* path) {
    const char* words[] = {"the ", "state ", "space ", "model ", "scans ", "a ", "chunk ", "of ", "tokens ", "\n"};
    int n = 0, cap = 60000;
    uint16_t* tok = (uint16_t*)mallocCheck(cap * sizeof(uint16_t));
    Rng r;
    rng_seed(&r, 9);
    while (n < cap - 16) {
        const char* w = words[rng_u64(&r) % 10];
        for (const char* ch = w; *ch; ch++) tok[n++] = (uint16_t)(unsigned char)*ch;
    }
    int32_t header[256] = {0};
    header[0] = 20240520; header[1] = 1; header[2] = n;
    FILE* f = fopenCheck(path, "wb");
    fwriteCheck(header, sizeof(header), 1, f);
    fwriteCheck(tok, sizeof(uint16_t), n, f);
    fcloseCheck(f);
    free(tok);
    return n;
}

#endif
