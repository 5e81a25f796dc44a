/*
 * test_hybrid.cu: the GPU trainer's hybrid models (attention 'A' and gated-MLP 'F' blocks next to Mamba-2 'M' ones,
 * doc/hybrid.md) against the CPU trainer's model (train_mamba2.c, compiled into this program in namespace cpu, as
 * test_mamba2.cu does). Run on a GPU machine by `make test_cu`, in fp32 (test_hybrid_fp32: the oracle build) and bf16.
 * For each of four models (every kind with GQA, partial rotary and both biases; the same shape at head_dim 64, which
 * the bf16 build runs on the tensor-core attention kernels; Transformer++ (AF); MQA without rotary):
 *   1. one forward + backward of a batch: the loss and every parameter tensor's gradient against the CPU trainer,
 *      plain, with packed documents (-D: attention and RoPE restart at each document) and with masked targets too;
 *   2. the same step again, and with -r 1 and -r 2 (recompute): bitwise the same loss and gradients; the start-up
 *      memory plan is the allocation to the byte in every mode;
 *   3. negative control: the packed batch without its boundaries is far from the reference with them;
 *   4. 5 AdamW steps on both: the losses agree;
 *   5. generation (llmc/decoder.cuh, the KV cache next to the SSM state): two prompts of different lengths prefilled
 *      by the parallel forward, then decode steps fed the CPU's greedy tokens: every step's logits against the CPU
 *      trainer's recurrent step (mamba2_step, its own KV cache); then greedy generation on the GPU (generate_batch):
 *      the same tokens as the CPU's greedy ones (fp32 build: all of them; bf16: the first, see there).
 * Then the trainer binaries on a small shard: train_mamba2cu against train_mamba2 for a hybrid and a Transformer++
 * (loss curves), twice (bitwise logs and checkpoints), with -r 1 and -r 2 (the same log), and with -D.
 * And (no GPU needed) model_flops_per_token: the pure model's flops_per_token to the bit.
 *
 * Tolerances: fp32 1e-5 relative (max |diff| over max |ref| of the whole tensor), the CPU trainer's own margin.
 * bf16: 3e-2 on the loss and every gradient, 6e-2 on A_log and dt_bias, as test_mamba2.cu argues for the Mamba-2
 * tensors; the attention adds the bf16 rounding of q, k, v, P and dS (each 2^-9 relative) on the same scale, so we
 * state the same bound for its tensors. The fp32 build of the same code is what shows the math is right.
 * One exception in fp32: the GPU computes RoPE's angle pos * base^(-2i/rd) in fp32 (as torch and flash_attn do,
 * llmc/attention.cuh), the CPU trainer in double; at the test's positions (< 96) the angles differ by up to ~1e-6
 * rad, a relative change of q and k of that size that the attention and its backward amplify a few times, so models
 * with rotary dims get 3e-5 (a wrong rotation, position or document start is off by O(1)).
 */
#include "llmc/model.cuh"
#include "llmc/model_flops.h"
#include "llmc/decoder.cuh"
#include <stdarg.h>
#include <sys/wait.h>

#if defined(ENABLE_FP32)
#define TOL 1e-5
#define TOL_DECAY 1e-5
#define TOL_ROPE 3e-5    /* models with RoPE: see the comment at the top */
#define TOL_CURVE 1e-4   /* several optimizer steps, two different summation orders */
#define TOL_PACKED_FACTOR 1.0
#define TRAINER_CU "./train_mamba2cu_fp32"
#else
#define TOL 3e-2
#define TOL_DECAY 6e-2   /* d A_log, d dt_bias: see test_mamba2.cu */
#define TOL_ROPE 3e-2
#define TOL_CURVE 3e-2
#define TOL_PACKED_FACTOR 2.0  /* gradients of packed batches: twice the bounds, as test_mamba2.cu argues */
#define TRAINER_CU "./train_mamba2cu"
#endif

#define TEST_REAL float
#include "dev/test_report.h"
#include "dev/gpu_test_util.h"

#include "llmc/train_common.h"
#include "llmc/schedulers.h"
#include "llmc/tokenizer.h"
#include <ctype.h>
#include <dirent.h>
#include <time.h>
#define MAMBA2_NO_MAIN
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunknown-pragmas" /* its OpenMP pragmas: this build has no -fopenmp */
namespace cpu {
#include "train_mamba2.c"
}
#pragma GCC diagnostic pop

/* the models: every block kind with GQA, partial rotary and both biases (hd 16: the simple attention kernels); the
   same kinds at hd 64 (the tile kernels in bf16) without biases; Transformer++; MQA without rotary, one bias */
static const char* const MODELS[] = {
    "d_model=64,pattern=MAFMAF,d_state=16,headdim=16,chunk=16,vocab=257,num_heads=4,num_heads_kv=2,head_dim=16,"
    "rotary_emb_dim=8,d_intermediate=128,qkv_proj_bias=1,out_proj_bias=1",
    "d_model=128,pattern=AFMA,d_state=16,headdim=32,chunk=16,vocab=257,num_heads=4,num_heads_kv=2,head_dim=64,"
    "rotary_emb_dim=32,d_intermediate=256",
    "d_model=64,pattern=AF*3,vocab=257,num_heads=4,head_dim=16,rotary_emb_dim=16,d_intermediate=128",
    "d_model=64,pattern=FAMA,d_state=16,headdim=16,chunk=16,vocab=257,num_heads=4,num_heads_kv=1,head_dim=16,"
    "d_intermediate=128,qkv_proj_bias=1",
};
#define NUM_MODELS ((int)(sizeof(MODELS) / sizeof(MODELS[0])))
static const char* const MODEL_NAMES[NUM_MODELS] = {"MAFMAF GQA rotary 8/16 biases", "AFMA hd 64 GQA rotary 32/64",
                                                     "Transformer++ AF*3", "FAMA MQA no rotary qkv bias"};

#define DOC_TEST_SEP 256 /* the byte tokenizer's end of text (vocab 257) */

/* a batch of B rows of T tokens; with docs: documents of 1 to 20 tokens, each opened by the separator, and seq_idx
   from them; masked: about a third of the targets are -1 */
static void make_batch(int* inputs, int* targets, int* seq_idx, int B, int T, int docs, int masked) {
    Rng r;
    rng_seed(&r, 2024);
    int n = B * T + 1;
    int* stream = (int*)mallocCheck((size_t)n * sizeof(int));
    int left = 0;
    for (int i = 0; i < n; i++) {
        if (docs && left == 0) { stream[i] = DOC_TEST_SEP; left = 1 + (int)(rng_u64(&r) % 20); continue; }
        stream[i] = (int)(rng_u64(&r) % 256);
        left--;
    }
    if (docs) stream[16] = stream[21] = stream[22] = DOC_TEST_SEP; /* a chunk start; back to back */
    for (int i = 0; i < B * T; i++) {
        inputs[i] = stream[i];
        targets[i] = stream[i + 1];
        if (masked && rng_u64(&r) % 3 == 0) targets[i] = TARGET_NO_LOSS;
    }
    if (seq_idx) dataloader_doc_index(seq_idx, inputs, (size_t)B, (size_t)T, DOC_TEST_SEP);
    free(stream);
}

/* the init, with the embedding and the blocks' output projections scaled up so that the blocks change the logits a
   lot (a leak across documents must show), and the attention biases nonzero (their init is zero) */
static float* lively_params(const Mamba2Config* c) {
    ParamSpec t[NUM_PARAM_TENSORS];
    size_t n = param_table_build(t, c);
    float* p = (float*)mallocCheck(n * sizeof(float));
    params_init(p, t, c, 31);
    Rng r;
    rng_seed(&r, 5);
    const struct { int tensor; float scale; } ups[] = {{P_WTE, 25.f}, {P_OUT_PROJ_W, 4.f}, {P_ATTN_OUT_W, 4.f},
                                                       {P_MLP_FC2_W, 4.f}};
    for (size_t k = 0; k < sizeof(ups) / sizeof(ups[0]); k++)
        for (size_t i = 0; i < t[ups[k].tensor].numel; i++) p[t[ups[k].tensor].offset + i] *= ups[k].scale;
    const int biases[] = {P_ATTN_IN_B, P_ATTN_OUT_B};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < t[biases[k]].numel; i++)
            p[t[biases[k]].offset + i] = 0.2f * ((float)(rng_u64(&r) % 2001) / 1000.f - 1.f);
    return p;
}

static void test_step_vs_cpu(int model, int docs, int masked) {
    Mamba2Config c;
    char err[512], name[200];
    if (config_parse(&c, MODELS[model], err, sizeof err) != 0) die("%s", err);
    const int B = 2, T = 96, BT = B * T;
    int *in = (int*)mallocCheck(BT * sizeof(int)), *tg = (int*)mallocCheck(BT * sizeof(int));
    int* seq = docs ? (int*)mallocCheck(BT * sizeof(int)) : NULL;
    make_batch(in, tg, seq, B, T, docs, masked);
    int counted = 0;
    for (int i = 0; i < BT; i++) counted += tg[i] != TARGET_NO_LOSS;
    char what[160];
    snprintf(what, sizeof what, "%s%s%s", MODEL_NAMES[model], docs ? ", packed" : "", masked ? " + masked" : "");
    printf("  %s: pattern %s, B=%d T=%d, %d documents, %d of %d targets counted\n", what, c.pattern, B, T,
           docs ? seq[T - 1] + seq[BT - 1] + 2 : B, counted, BT);
    float* p = lively_params(&c);
    cpu::Mamba2 cm;
    cpu::mamba2_allocate_parameters(&cm, &c);
    for (size_t i = 0; i < cm.num_parameters; i++) cm.params_memory[i] = p[i];
    cpu::mamba2_zero_grad(&cm);
    float dloss = 1.0f / (masked ? counted : BT);
    float loss_cpu = cpu::mamba2_forward_docs(&cm, in, tg, seq, B, T);
    cpu::mamba2_backward(&cm, in, tg, dloss);
    GPUModel m;
    gpu_model_create(&m, &c, p, NULL);
    float loss = gpu_packed_step(&m, in, tg, seq, B, T, dloss);
    double tol_model = c.rotary_dim > 0 ? TOL_ROPE : TOL;
    snprintf(name, sizeof name, "%s: loss vs CPU", what);
    compare(name, &loss, &loss_cpu, 1, tol_model);
    float* g = gpu_grads_to_host(&m);
    int tensors = 0;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        if (m.table[t].numel == 0) continue; /* a kind or bias the model does not have */
        snprintf(name, sizeof name, "%s: grad %s", what, m.table[t].name);
        double tol = (t == P_A_LOG || t == P_DT_BIAS) ? fmax(TOL_DECAY, tol_model) : tol_model;
        if (docs) tol *= TOL_PACKED_FACTOR;
        compare(name, g + m.table[t].offset, cm.grads_memory + m.table[t].offset, m.table[t].numel, tol);
        tensors++;
    }
    report(tensors >= 5, "%s: %d parameter tensors compared", what, tensors);
    /* determinism, -r 1 and -r 2 */
    size_t act_bytes[3];
    check_repeat_and_recompute(&m, &c, p, in, tg, seq, B, T, dloss, loss, g, what, act_bytes);
    report(act_bytes[2] < act_bytes[0] && act_bytes[1] <= act_bytes[0],
           "%s: activations -r 0 %zu >= -r 1 %zu, > -r 2 %zu bytes", what, act_bytes[0], act_bytes[1], act_bytes[2]);
    if (docs) { /* negative control: the boundaries matter (a leak across documents would be caught) */
        gpu_packed_step(&m, in, tg, NULL, B, T, dloss);
        float* gp = gpu_grads_to_host(&m);
        double rel = grads_rel_err(gp, cm.grads_memory, m.table);
        report(rel > 5 * TOL_DECAY, "%s: without seq_idx the GPU is far from the reference (the check can fail): "
               "worst gradient rel %.3e (must be > %.0e)", what, rel, 5 * TOL_DECAY);
        free(gp);
    }
    free(in); free(tg); free(seq); free(p); free(g);
    cpu::mamba2_free(&cm);
}

/* section 4: 5 AdamW steps on the GPU and the CPU from the same weights on the same packed batch: the losses */
static void test_adamw_steps(int model) {
    Mamba2Config c;
    char err[512], name[200];
    if (config_parse(&c, MODELS[model], err, sizeof err) != 0) die("%s", err);
    const int B = 2, T = 64, BT = B * T, steps = 5;
    int *in = (int*)mallocCheck(BT * sizeof(int)), *tg = (int*)mallocCheck(BT * sizeof(int));
    int* seq = (int*)mallocCheck(BT * sizeof(int));
    make_batch(in, tg, seq, B, T, 1, 0);
    ParamSpec t[NUM_PARAM_TENSORS];
    size_t n = param_table_build(t, &c);
    float* p = (float*)mallocCheck(n * sizeof(float));
    params_init(p, t, &c, 77);
    cpu::Mamba2 cm;
    cpu::mamba2_allocate_parameters(&cm, &c);
    for (size_t i = 0; i < n; i++) cm.params_memory[i] = p[i];
    GPUModel m;
    gpu_model_create(&m, &c, p, NULL);
    float lc[8], lg[8];
    const float lr = 3e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
    for (int s = 0; s < steps; s++) {
        cpu::mamba2_zero_grad(&cm);
        lc[s] = cpu::mamba2_forward_docs(&cm, in, tg, seq, B, T);
        cpu::mamba2_backward(&cm, in, tg, 1.0f / BT);
        cpu::mamba2_update(&cm, lr, b1, b2, eps, wd, 1.0f);
        lg[s] = gpu_packed_step(&m, in, tg, seq, B, T, 1.0f / BT);
        gpu_update(&m, lr, b1, b2, eps, wd, 0.0f); /* no clipping, as the CPU call above */
    }
    snprintf(name, sizeof name, "%s: 5 AdamW steps, losses vs CPU", MODEL_NAMES[model]);
    compare(name, lg, lc, steps, TOL_CURVE);
    for (int s = 0; s < steps; s++) printf("    step %d: cpu %.6f gpu %.6f\n", s, lc[s], lg[s]);
    report(lg[steps - 1] < lg[0], "%s: the loss falls (%.4f -> %.4f)", MODEL_NAMES[model], lg[0], lg[steps - 1]);
    free(in); free(tg); free(seq); free(p);
    cpu::mamba2_free(&cm);
}

/* section 5: the GPU decoder against the CPU's recurrent steps, two sequences */
static void test_generation(int model) {
    Mamba2Config c;
    char err[512], name[200];
    if (config_parse(&c, MODELS[model], err, sizeof err) != 0) die("%s", err);
    const int S = 2, steps = 8, V = c.vocab_size;
    const int plen[S] = {7, 12};
    int prompt[S][12];
    Rng r;
    rng_seed(&r, 11);
    for (int s = 0; s < S; s++)
        for (int i = 0; i < plen[s]; i++) prompt[s][i] = (int)(rng_u64(&r) % 256);
    float* p = lively_params(&c);
    /* the CPU: each prompt token by token, then greedy; logits after the prompt and after each fed token */
    cpu::Mamba2 cm;
    cpu::mamba2_allocate_parameters(&cm, &c);
    for (size_t i = 0; i < cm.num_parameters; i++) cm.params_memory[i] = p[i];
    cpu::InferenceState cs;
    cpu::inference_state_init(&cs, &c);
    float* cpu_logits = (float*)mallocCheck((size_t)S * (steps + 1) * V * sizeof(float));
    int cpu_tok[S][steps + 1];
    for (int s = 0; s < S; s++) {
        cpu::inference_state_reset(&cs, &c);
        float* lg = NULL;
        for (int i = 0; i < plen[s]; i++) lg = cpu::mamba2_step(&cm, &cs, prompt[s][i]);
        for (int k = 0; k <= steps; k++) {
            memcpy(cpu_logits + ((size_t)s * (steps + 1) + k) * V, lg, V * sizeof(float));
            int best = 0;
            for (int v = 1; v < V; v++) if (lg[v] > lg[best]) best = v;
            cpu_tok[s][k] = best;
            if (k < steps) lg = cpu::mamba2_step(&cm, &cs, best);
        }
    }
    /* the GPU: prefill both, then steps fed the CPU's tokens */
    GPUModel m;
    gpu_model_create(&m, &c, p, NULL);
    Decoder d;
    decoder_create(&d, &m, S, 12, steps + 1, NULL);
    decoder_reset(&d, &m);
    for (int s = 0; s < S; s++) decoder_prefill(&d, &m, s, prompt[s], plen[s]);
    double tol = c.rotary_dim > 0 ? TOL_ROPE : TOL, worst = 0;
    float* gpu_logits = (float*)mallocCheck((size_t)S * (steps + 1) * V * sizeof(float));
    for (int k = 0; k <= steps; k++) {
        if (k > 0) {
            int toks[S];
            for (int s = 0; s < S; s++) toks[s] = cpu_tok[s][k - 1];
            cudaCheck(cudaMemcpy(d.tokens, toks, sizeof toks, cudaMemcpyHostToDevice));
            decoder_step(&d, &m, 1, 0); /* a hybrid runs the plain path even when a graph is asked for */
        }
        float* lg = decoder_logits_host(&d, &m);
        for (int s = 0; s < S; s++)
            memcpy(gpu_logits + ((size_t)s * (steps + 1) + k) * V, lg + (size_t)s * c.padded_vocab_size,
                   V * sizeof(float));
    }
    for (int s = 0; s < S; s++) {
        snprintf(name, sizeof name, "%s: decode seq %d (prompt %d), %d steps' logits", MODEL_NAMES[model], s, plen[s],
                 steps + 1);
        size_t off = (size_t)s * (steps + 1) * V;
        worst = fmax(worst, compare(name, gpu_logits + off, cpu_logits + off, (size_t)(steps + 1) * V, tol));
    }
    /* greedy on the GPU (the argmax on the device, generate_batch) */
    int out0[steps + 1], out1[steps + 1], n_out[S];
    int* outs[S] = {out0, out1};
    int* prompts[S] = {prompt[0], prompt[1]};
    GenOptions o = {0.0f, 1.0f, 0, steps + 1, -1, 1, 0};
    generate_batch(&d, &m, prompts, plen, &o, outs, n_out);
    int same = 0, total = 0, first_same = 1;
    for (int s = 0; s < S; s++) {
        first_same &= n_out[s] > 0 && outs[s][0] == cpu_tok[s][0];
        for (int k = 0; k < n_out[s] && k <= steps; k++) { same += outs[s][k] == cpu_tok[s][k]; total++; }
    }
#if defined(ENABLE_FP32)
    report(total == S * (steps + 1) && same == total, "%s: greedy on the GPU == greedy on the CPU (%d of %d tokens)",
           MODEL_NAMES[model], same, total);
#else /* bf16: a near tie may pick the other token once the logits differ at bf16's 3e-2; the first must agree */
    report(total == S * (steps + 1) && first_same, "%s: greedy on the GPU: first tokens == the CPU's, %d of %d tokens "
           "the same", MODEL_NAMES[model], same, total);
#endif
    (void)first_same;
    decoder_free(&d);
    free(p); free(cpu_logits); free(gpu_logits);
    cpu::inference_state_free(&cs);
    cpu::mamba2_free(&cm);
}

/* ---- the trainer binaries ---- */

/* one model description through both trainers (`flags` extra: -D ...): loss curves, GPU twice, -r 1, -r 2 */
static void test_trainers_on(const char* dir, const char* shard, const char* label, const char* desc,
                             const char* flags) {
    char args[1024], cmd[4096], la[600], lb[600], lc[600];
    snprintf(args, sizeof args, "-j none -k none -e %s -b 4 -t 64 -x 12 -l 2e-3 -u 3 -s 0 -S 7 %s", desc, flags);
    const char* bins[5] = {"./train_mamba2", TRAINER_CU, TRAINER_CU, TRAINER_CU, TRAINER_CU};
    const char* sub[5] = {"cpu", "gpu", "gpu2", "gpu_r1", "gpu_r2"};
    const char* extra[5] = {"", "", "", " -r 1", " -r 2"};
    int rc[5];
    for (int i = 0; i < 5; i++) {
        snprintf(cmd, sizeof cmd, "%s -i %s %s%s -o %s/%s_%s > %s/%s_%s.txt 2>&1", bins[i], shard, args, extra[i], dir,
                 label, sub[i], dir, label, sub[i]);
        rc[i] = run(cmd);
    }
    report(rc[0] == 0 && rc[1] == 0 && rc[2] == 0 && rc[3] == 0 && rc[4] == 0, "%s: trainers ran (exit cpu %d, gpu "
           "%d, gpu again %d, -r 1 %d, -r 2 %d)", label, rc[0], rc[1], rc[2], rc[3], rc[4]);
    float cpu[32], gpu[32];
    snprintf(la, sizeof la, "%s/%s_cpu/main.log", dir, label);
    snprintf(lb, sizeof lb, "%s/%s_gpu/main.log", dir, label);
    int nc = read_log_losses(la, cpu, 32), ng = read_log_losses(lb, gpu, 32);
    report(nc == 12 && ng == 12, "%s: 12 logged steps each (cpu %d, gpu %d)", label, nc, ng);
    if (nc == 12 && ng == 12) {
        char name[200];
        snprintf(name, sizeof name, "%s: loss curve GPU vs CPU trainer", label);
        compare(name, gpu, cpu, 12, TOL_CURVE);
        for (int i = 0; i < 12; i += 3) printf("    step %2d: cpu %.6f gpu %.6f\n", i + 1, cpu[i], gpu[i]);
        report(gpu[11] < gpu[0], "%s: GPU training lowers the loss (%.4f -> %.4f)", label, gpu[0], gpu[11]);
    }
    for (int i = 2; i < 5; i++) {
        snprintf(lc, sizeof lc, "%s/%s_%s/main.log", dir, label, sub[i]);
        report(files_equal(lb, lc), "%s: GPU trainer%s: log identical to the first run", label,
               i == 2 ? " again" : extra[i]);
    }
    snprintf(la, sizeof la, "%s/%s_gpu/ckpt_00000012.bin", dir, label);
    snprintf(lc, sizeof lc, "%s/%s_gpu_r2/ckpt_00000012.bin", dir, label);
    report(files_equal(la, lc), "%s: GPU trainer -r 2: final checkpoint bitwise identical to -r 0", label);
    /* the GPU checkpoint is a hybrid (format version 3) the CPU trainer resumes from */
    snprintf(cmd, sizeof cmd, "./train_mamba2 -i %s -j none -k none -e %s -b 4 -t 64 -x 1 -s 0 > %s/%s_x.txt 2>&1",
             shard, la, dir, label);
    report(run(cmd) == 0, "%s: the GPU checkpoint loads in the CPU trainer", label);
}

static void test_trainers(void) {
    char dir[] = "/tmp/mamba2_hyb_XXXXXX";
    if (mkdtemp(dir) == NULL) die("mkdtemp");
    char shard[600];
    snprintf(shard, sizeof shard, "%s/train.bin", dir);
    write_text_shard(shard);
    const char* hybrid = "d_model=64,pattern=MAFMAF,d_state=16,headdim=16,chunk=16,num_heads=4,num_heads_kv=2,"
                         "head_dim=16,rotary_emb_dim=8,d_intermediate=128,qkv_proj_bias=1,out_proj_bias=1";
    const char* tpp = "d_model=64,pattern=AF*2,num_heads=4,head_dim=16,rotary_emb_dim=16,d_intermediate=128";
    test_trainers_on(dir, shard, "hybrid", hybrid, "");
    test_trainers_on(dir, shard, "hybrid_docs", hybrid, "-D 32");
    test_trainers_on(dir, shard, "tpp", tpp, "");
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", dir);
}

/* FLOPs per token: the pure model's count unchanged; a hybrid's adds its blocks (doc/hybrid.md) */
static void test_flops(void) {
    Mamba2Config c, t;
    char err[512];
    if (config_parse(&c, "130m", err, sizeof err) != 0) die("%s", err);
    double a = model_flops_per_token(&c, 2048), b = flops_per_token(&c, 2048);
    report(a == b, "model_flops_per_token(130m) == flops_per_token: %.6f GFLOP/token", a / 1e9);
    if (config_parse(&t, "tpp125m", err, sizeof err) != 0) die("%s", err);
    double f = model_flops_per_token(&t, 2048);
    /* 6 x the weights each token multiplies by (all but the norms: the embedding lookup is the tied head's) + the
       attention's 6 Hq hd T per layer */
    double weights = (double)config_param_count(&t) - (double)t.d_model * (t.n_layer + 1);
    double expect = 6 * weights + 12.0 * 6 * 12 * 64 * 2048;
    report(fabs(f - expect) <= 1e-9 * expect, "model_flops_per_token(tpp125m, T 2048) = %.6f GFLOP/token (6 x %.1fM "
           "weights + attention %.3f GFLOP)", f / 1e9, weights / 1e6, 12.0 * 6 * 12 * 64 * 2048 / 1e9);
}

int main(int argc, char** argv) {
    test_flops();
    int dev_count = 0;
    if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0) {
        printf("no CUDA GPU: the GPU tests run on a GPU machine (make test_cu)\n%d passed, %d failed\n", g_passed,
               g_failed + 1);
        return 1;
    }
    printf("== hybrid GPU tests, precision %s\n", PRECISION_NAME);
    gpu_arch_check();
    gpu_path_print(stdout);
    for (int m = 0; m < NUM_MODELS; m++) {
        test_step_vs_cpu(m, 0, 0);
        test_step_vs_cpu(m, 1, 0);
        test_step_vs_cpu(m, 1, 1);
        test_adamw_steps(m);
        test_generation(m);
    }
    if (argc < 2 || strcmp(argv[1], "--no-trainers") != 0) test_trainers();
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
