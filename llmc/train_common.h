/*
 * train_common.h: what the CPU trainer (train_mamba2.c) and the GPU trainer (train_mamba2.cu) share around the model:
 * the command line (same flags, same defaults), checkpoint file names, the log format, progress/ETA and sampling.
 * A run can move between the two trainers because both go through this one file.
 */
#ifndef MAMBA2_TRAIN_COMMON_H
#define MAMBA2_TRAIN_COMMON_H

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "utils.h"
#include "rand.h"
#include "dataloader.h"
#include "mamba2_model.h"
#include "hf_io.h"
#include "tokenizer.h"

/* sample from softmax(logits / temperature) over the V real classes; temperature 0 = greedy */
static inline int sample_token(const float* logits, int V, float temperature, Rng* rng) {
    int best = 0;
    for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    if (temperature <= 0) return best;
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp((logits[i] - logits[best]) / temperature);
    double coin = rng_uniform(rng) * sum, cdf = 0;
    for (int i = 0; i < V; i++) {
        cdf += exp((logits[i] - logits[best]) / temperature);
        if (coin < cdf) return i;
    }
    return V - 1;
}

typedef struct {
    const char* train_pattern;
    const char* val_pattern;
    const char* tokenizer_path;
    const char* output_dir;
    const char* model;        /* preset / key=value description / checkpoint path */
    int model_given;
    int resume;
    int B, T;
    int total_batch_tokens;
    float lr, final_lr_frac, weight_decay, grad_clip;
    int warmup, max_steps, val_every, val_batches, sample_every, gen_tokens, ckpt_every;
    unsigned long long seed;
    int zero_stage;           /* GPU trainer, several GPUs: 1 = shard the AdamW state (ZeRO-1) */
    int profile;              /* GPU trainer: 1 = benchmark report (per-kernel times of a step, MFU, memory) */
    int recompute;            /* GPU trainer: 1 = recompute the conv and gated-norm outputs in the backward */
    int ssd_chunk;            /* GPU trainer: the SSD kernels' chunk length; 0 = the config's, capped at 128 */
} TrainArgs;

/* the trainers set this to say what they are ("on the CPU (fp32)", "on the GPU (bf16)") */
static const char* g_trainer_name = "./train_mamba2";
static const char* g_trainer_what = "on the CPU (fp32)";

static inline void usage(void) {
    fprintf(stderr, "Usage: %s [options]\nTrains a Mamba-2 language model %s.\n", g_trainer_name, g_trainer_what);
    fprintf(stderr,
        "  -i <glob>   train shards (default data/stdlib/stdlib_train_*.bin)\n"
        "  -j <glob>   val shards (default data/stdlib/stdlib_val_*.bin; 'none' to skip)\n"
        "  -k <path>   tokenizer file for decoding samples (default: tokenizer.bin beside the train shards)\n"
        "  -o <dir>    output dir for main.log and checkpoints (default: none)\n"
        "  -e <model>  a preset (tiny small 130m 370m 780m 1.3b 2.7b), key=value pairs (d_model n_layer d_state\n"
        "              headdim expand ngroups d_conv vocab chunk, e.g. 'tiny,vocab=50277' or\n"
        "              'd_model=64,n_layer=4'), a checkpoint file, or an HF / mamba_ssm model folder (config.json +\n"
        "              model.safetensors) to start from: weights only, fresh optimizer (default tiny, vocab 257)\n"
        "  -y <0|1>    resume from the latest checkpoint in -o (default 0)\n"
        "  -b <int>    micro-batch size (default 4)\n"
        "  -t <int>    sequence length (default 64)\n"
        "  -d <int>    total batch size in tokens; gradient accumulation makes up the rest (default B*T)\n"
        "  -l <float>  peak learning rate (default 1e-3)\n"
        "  -u <int>    warm-up steps (default 0)\n"
        "  -q <float>  final learning rate as a fraction of the peak, cosine decay (default 0.1)\n"
        "  -c <float>  weight decay (default 0.1)\n"
        "  -a <float>  gradient clipping norm, 0 = off (default 1.0)\n"
        "  -x <int>    steps (default 100)\n"
        "  -v <int>    evaluate val loss every v steps (default 20)\n"
        "  -m <int>    val batches per evaluation (default 20)\n"
        "  -s <int>    print a sample every s steps, 0 = never (default 20)\n"
        "  -g <int>    tokens per sample (default 64)\n"
        "  -n <int>    checkpoint every n steps, 0 = only at the end (default 0; needs -o)\n"
        "  -S <int>    seed for initialization and sampling (default 1337)\n"
        "  -z <0|1>    GPU trainer on several GPUs: 1 = ZeRO-1, the AdamW state sharded across GPUs (default 0)\n"
        "  -r <0|1>    GPU trainer: 1 = recompute the conv1d and gated-norm outputs in the backward instead of\n"
        "              storing them for every layer: ~2.5 GB less at 130M, B=8, T=2048, ~3%% more time (default 0)\n"
        "  -p <0|1>    GPU trainer: 1 = benchmark report at the end: median ms/step, tokens/s, MFU, memory and the\n"
        "              time of each kernel family in one step (make bench)\n"
        "  -K <int>    GPU trainer: chunk length of the SSD kernels, 16..256 (an algorithm choice: results agree up\n"
        "              to rounding; default the model's chunk_size capped at 128, the fastest on an H100; 256 saves\n"
        "              ~1.1 GB at 130M, B=8, T=2048)\n"
        "Several GPUs (GPU trainer): mpirun -np N ./train_mamba2cu ..., or without MPI one process per GPU with\n"
        "RANK, WORLD_SIZE, LOCAL_RANK and MAMBA2_RENDEZVOUS=file:/shared/path or tcp:HOST:PORT set. -b is per GPU,\n"
        "-d the total over all GPUs.\n"
        "  -h          this help\n");
}

static inline void parse_args(TrainArgs* a, int argc, char** argv) {
    a->train_pattern = "data/stdlib/stdlib_train_*.bin";
    a->val_pattern = "data/stdlib/stdlib_val_*.bin";
    a->tokenizer_path = NULL; a->output_dir = NULL; a->model = "tiny"; a->model_given = 0; a->resume = 0;
    a->B = 4; a->T = 64; a->total_batch_tokens = -1;
    a->lr = 1e-3f; a->final_lr_frac = 0.1f; a->weight_decay = 0.1f; a->grad_clip = 1.0f;
    a->warmup = 0; a->max_steps = 100; a->val_every = 20; a->val_batches = 20; a->sample_every = 20;
    a->gen_tokens = 64; a->ckpt_every = 0; a->seed = 1337; a->zero_stage = 0; a->profile = 0; a->recompute = 0;
    a->ssd_chunk = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { usage(); exit(EXIT_SUCCESS); }
        if (argv[i][0] != '-' || strlen(argv[i]) != 2) { usage(); die("unexpected argument '%s'", argv[i]); }
        if (i + 1 >= argc) { usage(); die("flag %s needs a value", argv[i]); }
        char f = argv[i][1];
        const char* v = argv[++i];
        switch (f) {
        case 'i': a->train_pattern = v; break;
        case 'j': a->val_pattern = v; break;
        case 'k': a->tokenizer_path = v; break;
        case 'o': a->output_dir = v; break;
        case 'e': a->model = v; a->model_given = 1; break;
        case 'y': a->resume = atoi(v); break;
        case 'b': a->B = atoi(v); break;
        case 't': a->T = atoi(v); break;
        case 'd': a->total_batch_tokens = atoi(v); break;
        case 'l': a->lr = (float)atof(v); break;
        case 'u': a->warmup = atoi(v); break;
        case 'q': a->final_lr_frac = (float)atof(v); break;
        case 'c': a->weight_decay = (float)atof(v); break;
        case 'a': a->grad_clip = (float)atof(v); break;
        case 'x': a->max_steps = atoi(v); break;
        case 'v': a->val_every = atoi(v); break;
        case 'm': a->val_batches = atoi(v); break;
        case 's': a->sample_every = atoi(v); break;
        case 'g': a->gen_tokens = atoi(v); break;
        case 'n': a->ckpt_every = atoi(v); break;
        case 'S': a->seed = strtoull(v, NULL, 10); break;
        case 'z': a->zero_stage = atoi(v); break;
        case 'p': a->profile = atoi(v); break;
        case 'r': a->recompute = atoi(v); break;
        case 'K': a->ssd_chunk = atoi(v); break;
        default: usage(); die("unknown flag -%c", f);
        }
    }
    if (a->B < 1 || a->T < 1) die("batch size (-b %d) and sequence length (-t %d) must be >= 1", a->B, a->T);
    if (a->zero_stage < 0 || a->zero_stage > 1) die("-z %d: the ZeRO stage is 0 or 1", a->zero_stage);
    if (a->max_steps < 1) die("-x must be >= 1");
    if (a->resume && a->output_dir == NULL) die("-y 1 (resume) needs -o <dir> holding the checkpoints");
    if (a->ckpt_every > 0 && a->output_dir == NULL) die("-n (checkpoints) needs -o <dir>");
}

/* gradient accumulation steps so that B*T tokens on each of `world` processes make up -d tokens a step */
static inline int grad_accum_steps(TrainArgs* a, int world) {
    int per_step = a->B * a->T * world;
    if (a->total_batch_tokens < 0) a->total_batch_tokens = per_step;
    if (a->total_batch_tokens % per_step != 0)
        die("total batch size -d %d is not a multiple of B*T*GPUs = %d*%d*%d = %d", a->total_batch_tokens, a->B, a->T,
            world, per_step);
    return a->total_batch_tokens / per_step;
}

/* the highest step of a "ckpt_%08d.bin" file in dir, or -1 */
static inline int latest_checkpoint_step(const char* dir) {
    DIR* d = opendir(dir);
    if (d == NULL) return -1;
    int best = -1;
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        int step;
        char tail[8];
        if (sscanf(e->d_name, "ckpt_%d.%7s", &step, tail) == 2 && strcmp(tail, "bin") == 0 && step > best) best = step;
    }
    closedir(d);
    return best;
}

static inline void checkpoint_path(char* out, size_t n, const char* dir, int step) {
    snprintf(out, n, "%s/ckpt_%08d.bin", dir, step);
}

static inline void format_eta(char* buf, size_t n, double seconds) {
    if (seconds < 0) seconds = 0;
    int s = (int)(seconds + 0.5);
    snprintf(buf, n, "%dh%02dm%02ds", s / 3600, (s / 60) % 60, s % 60);
}

static inline double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline void default_tokenizer_path(char* out, size_t n, const char* train_pattern) {
    const char* slash = strrchr(train_pattern, '/');
    if (slash == NULL) snprintf(out, n, "tokenizer.bin");
    else snprintf(out, n, "%.*s/tokenizer.bin", (int)(slash - train_pattern), train_pattern);
}

/* the trainers' tokenizer (for printing samples): -k's path, else tokenizer.bin beside the train shards */
static inline void trainer_tokenizer_init(Tokenizer* tok, const TrainArgs* a) {
    char path[4096];
    if (a->tokenizer_path) snprintf(path, sizeof(path), "%s", a->tokenizer_path);
    else default_tokenizer_path(path, sizeof(path), a->train_pattern);
    tokenizer_init(tok, path);
}

/* a sample starts from end-of-text when the tokenizer names one inside the vocabulary, else from token 0 */
static inline int sample_first_token(const Tokenizer* tok, int vocab_size) {
    int token = tok->init_ok ? tok->eot_token : 0;
    return token < 0 || token >= vocab_size ? 0 : token;
}

/* one sampled token: its text, or its id when there is no tokenizer */
static inline void sample_print_token(Tokenizer* tok, int token) {
    if (tok->init_ok) {
        const char* piece = tokenizer_decode(tok, (uint32_t)token);
        if (piece) tokenizer_safe_print(piece);
    } else {
        printf("%d ", token);
    }
}

/* is this -e argument an existing file (a checkpoint) rather than a model description? */
static inline int is_file(const char* path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}


/* ---- the training log: llm.c's "s:<step> trl:<loss>" / "s:<step> tel:<loss>", with lr, grad norm, tokens ---- */

static inline FILE* log_open(const char* dir, int append) {
    if (dir == NULL) return NULL;
    mkdir(dir, 0755);
    char path[4096];
    snprintf(path, sizeof(path), "%s/main.log", dir);
    return fopenCheck(path, append ? "a" : "w");
}

static inline void log_val(FILE* f, int step, float loss) {
    printf("step %d: val loss %.6f\n", step, loss);
    if (f) { fprintf(f, "s:%d tel:%.6f\n", step, loss); fflush(f); }
}

/* one line per optimizer step: to stdout with speed and ETA, to the log file for plots */
static inline void log_train(FILE* f, const TrainArgs* a, int done, float loss, float lr, double norm, double step_s,
                             double avg_s) {
    char eta[32];
    format_eta(eta, sizeof(eta), avg_s * (a->max_steps - done));
    printf("step %5d/%d | loss %.6f | lr %.2e | norm %.4f | %.1f ms | %.0f tok/s | eta %s\n", done, a->max_steps, loss,
           lr, norm, step_s * 1000, a->total_batch_tokens / step_s, eta);
    fflush(stdout);
    if (f) {
        fprintf(f, "s:%d trl:%.6f lr:%.6e norm:%.6f tok:%lld\n", done, loss, lr, norm,
                (long long)done * a->total_batch_tokens);
        fflush(f);
    }
}

/* ---- the training state a checkpoint carries besides the weights: step, sampling RNG, data position ---- */

static inline void train_state_pack(uint64_t st[CKPT_STATE_WORDS], int step, const Rng* rng, const DataLoader* loader) {
    memset(st, 0, sizeof(uint64_t) * CKPT_STATE_WORDS);
    st[CKPT_S_STEP] = (uint64_t)step;
    st[CKPT_S_RNG] = rng->state;
    DataLoaderState ls;
    dataloader_save_state(loader, &ls);
    memcpy(&st[CKPT_S_LOADER], ls.v, sizeof(ls.v));
}

static inline void train_state_restore_loader(DataLoader* loader, const uint64_t st[CKPT_STATE_WORDS]) {
    DataLoaderState ls;
    memcpy(ls.v, &st[CKPT_S_LOADER], sizeof(ls.v));
    dataloader_load_state(loader, &ls);
}

/* should a checkpoint be written after `done` steps? (every -n steps, and at the end) */
static inline int checkpoint_due(const TrainArgs* a, int done) {
    return a->output_dir && ((a->ckpt_every > 0 && done % a->ckpt_every == 0) || done == a->max_steps);
}

/* ---- where the model comes from: a description (-e), a checkpoint file (-e FILE), or resuming (-y 1 -o DIR) ---- */

typedef enum { MODEL_FROM_CONFIG, MODEL_FROM_FILE, MODEL_RESUME } ModelSourceKind;

typedef struct {
    ModelSourceKind kind;
    Mamba2Config config;   /* MODEL_FROM_CONFIG: the parsed -e description */
    char path[4096];       /* MODEL_FROM_FILE: a checkpoint or an HF / mamba_ssm model folder; MODEL_RESUME: the
                              checkpoint to resume */
} ModelSource;

static inline ModelSource model_source(const TrainArgs* a) {
    ModelSource s;
    memset(&s, 0, sizeof(s));
    char err[512];
    int from_file = is_file(a->model) || hf_is_model_dir(a->model);
    if (!from_file && config_parse(&s.config, a->model, err, sizeof(err)) != 0) die("%s", err);
    int resume_step = a->resume ? latest_checkpoint_step(a->output_dir) : -1;
    if (a->resume && resume_step < 0) printf("resume: no checkpoint in %s, starting fresh\n", a->output_dir);
    if (resume_step >= 0) {
        s.kind = MODEL_RESUME;
        checkpoint_path(s.path, sizeof(s.path), a->output_dir, resume_step);
        if (from_file) printf("resuming from %s: -e %s is not used\n", s.path, a->model);
    } else if (from_file) {
        s.kind = MODEL_FROM_FILE;
        snprintf(s.path, sizeof(s.path), "%s", a->model);
    } else {
        s.kind = MODEL_FROM_CONFIG;
    }
    return s;
}

/*
 * After a trainer loaded the checkpoint of a MODEL_RESUME source: checks that it is the model -e asked for and that it
 * can be resumed; restores the sampling RNG and copies the training state (data position...). Returns the step.
 */
static inline int resume_accept(const TrainArgs* a, const ModelSource* s, const CheckpointInfo* info, Rng* rng,
                                uint64_t state[CKPT_STATE_WORDS]) {
    if (a->model_given && !is_file(a->model) && !hf_is_model_dir(a->model) &&
        !config_same_model(&s->config, &info->config)) {
        fprintf(stderr, "error: checkpoint %s is of another model than -e '%s':\n  checkpoint ", s->path, a->model);
        config_print(&info->config, stderr);
        fprintf(stderr, "  requested  ");
        config_print(&s->config, stderr);
        exit(EXIT_FAILURE);
    }
    if (!info->has_optimizer) die("checkpoint %s holds no optimizer state: it cannot be resumed", s->path);
    rng->state = info->state[CKPT_S_RNG];
    memcpy(state, info->state, sizeof(uint64_t) * CKPT_STATE_WORDS);
    int step = (int)info->state[CKPT_S_STEP];
    printf("resumed from %s at step %d\n", s->path, step);
    return step;
}

#endif
