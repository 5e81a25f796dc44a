/*
 * train_common.h: what the CPU trainer (train_mamba2.c) and the GPU trainer (train_mamba2.cu) share around the model:
 * the command line (same flags, same defaults), checkpoint file names, the log format, progress/ETA and sampling.
 * A run can move between the two trainers because both go through this one file.
 */
#ifndef MAMBA2_TRAIN_COMMON_H
#define MAMBA2_TRAIN_COMMON_H

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>
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
    int profile;              /* GPU trainer: 1 = benchmark report (ms/step, tokens/s, MFU, memory) */
    int recompute;            /* GPU trainer: 1 = recompute the conv and gated-norm outputs in the backward; 2 = the
                                 whole layer from its input (long context); 3 = 2 with the residual stream kept in
                                 host memory */
    int ssd_chunk;            /* GPU trainer: the SSD kernels' chunk length; 0 = the config's, capped at 128 */
    int ckpt_keep;            /* keep the newest N checkpoints, delete older ones; 0 = keep all */
    int overwrite;            /* 1: -o may hold an earlier run: its main.log and checkpoints are deleted first */
    int ckpt_every_given;     /* -n was on the command line (else a default interval when -o is given) */
    int doc_sep;              /* -D: DOC_SEP_NONE (default), DOC_SEP_EOT, or a separator token id (doc/packing.md) */
    int masks;                /* -M: 1 = masked targets from the shards' X.bin.mask files (doc/packing.md) */
    int carry;                /* -C: 1 = carried state: row b continues row b of the previous batch, the SSM state
                                 and conv window carried over (doc/packing.md section 6) */
} TrainArgs;

/* -D's values: no document boundaries (the default), or boundaries at the tokenizer's end-of-text token */
#define DOC_SEP_NONE (-1)
#define DOC_SEP_EOT (-2)

/* Document boundaries (-D) and masked targets (-M): a trainer that implements them (both do) sets this to 1 before
   parse_args; one that does not refuses the flags (refuse_docs_flags) */
static int g_trainer_has_docs = 0;

/* carried state (-C 1): a trainer that implements it sets this to 1 before parse_args; one that does not refuses it */
static int g_trainer_has_carry = 0;

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
        "  -y <0|1|2>  resume from the latest checkpoint in -o (default 0); a corrupt latest checkpoint stops -y 1\n"
        "              with the name of the newest good one; -y 2 takes that one (the corrupt files are renamed\n"
        "              *.corrupt). main.log is cut back to the checkpoint's step, so it reads as one run\n"
        "  -w <0|1>    1 = -o may hold an earlier run: its main.log and checkpoints are deleted (default 0: such a\n"
        "              folder is refused without -y)\n"
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
        "  -n <int>    checkpoint every n steps, 0 = only at the end and when stopped by SIGINT/SIGTERM (default\n"
        "              with -o: every max(1, x/10) steps)\n"
        "  -N <int>    keep only the newest N checkpoints, 0 = keep all (default 0)\n"
        "  -S <int>    seed for initialization and sampling (default 1337)\n"
        "  -z <0|1>    GPU trainer on several GPUs: 1 = ZeRO-1, the AdamW state sharded across GPUs (default 0)\n"
        "  -r <0..3>   GPU trainer: 1 = recompute the conv1d and gated-norm outputs in the backward instead of\n"
        "              storing them for every layer: ~2.5 GB less at 130M, B=8, T=2048, ~3%% more time; 2 = keep only\n"
        "              each layer's input and recompute the whole layer in the backward (long context: one layer's\n"
        "              activations at a time; the same bits as 0); 3 = 2 with the residual stream's checkpoints and\n"
        "              block outputs in pinned host memory (~45 KiB a token less on the GPU at 130M, slower: PCIe)\n"
        "              (default 0)\n"
        "  -p <0|1>    GPU trainer: 1 = benchmark report at the end: median ms/step, tokens/s, MFU, memory (make\n"
        "              bench; ./profile_mamba2cu times each kernel of a step)\n"
        "  -K <int>    GPU trainer: chunk length of the SSD kernels, 16..256 (an algorithm choice: results agree up\n"
        "              to rounding; default the model's chunk_size capped at 128, the fastest on an H100; 256 saves\n"
        "              ~1.1 GB at 130M, B=8, T=2048)\n"
        "  -D <none|eot|id>  document boundaries: the state and the conv window restart at each\n"
        "              separator token (eot = the tokenizer's end-of-text id, or a token id), in training and\n"
        "              validation (default none: rows are read as one sequence; doc/packing.md)\n"
        "  -M <0|1>    1 = masked targets: a target whose byte in the shard's X.bin.mask file is 0 is\n"
        "              not counted; the loss is the mean over counted targets (default 0; doc/packing.md)\n"
        "  -C <0|1>    1 = carried state: row b of each batch continues row b of the batch before (B streams over\n"
        "              the data), starting from the SSM state and conv window it left (no gradient through them), so\n"
        "              the model trains on contexts longer than T; Mamba-2 / MLP blocks only (default 0;\n"
        "              doc/packing.md section 6)\n"
        "Several GPUs (GPU trainer): mpirun -np N ./train_mamba2cu ..., or without MPI one process per GPU with\n"
        "RANK, WORLD_SIZE, LOCAL_RANK (torchrun) or SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (srun) and\n"
        "MAMBA2_RENDEZVOUS=file:/shared/path or tcp:HOST:PORT set (scripts/sbatch_example.sh). -b is per GPU, -d the\n"
        "total over all GPUs.\n"
        "SIGINT / SIGTERM: the current step finishes, a checkpoint is written (with -o) and the trainer exits with\n"
        "128 + the signal's number; resume with -y 1.\n"
        "  -h          this help\n");
}

/* strict number parsing for the flags: the whole value must be a number in [lo, hi], else a message naming the
   flag, the value and the range */
static inline long long flag_int(char f, const char* v, long long lo, long long hi) {
    char* end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end != '\0' || errno == ERANGE || x < lo || x > hi)
        die("-%c %s: expected an integer in [%lld, %lld]", f, v, lo, hi);
    return x;
}
static inline float flag_float(char f, const char* v, double lo, double hi) {
    char* end;
    double x = strtod(v, &end);
    if (end == v || *end != '\0' || !isfinite(x) || x < lo || x > hi)
        die("-%c %s: expected a finite number in [%g, %g]", f, v, lo, hi);
    return (float)x;
}

/* -D's value: none, eot or a token id */
static inline int doc_sep_parse(const char* v) {
    if (strcmp(v, "none") == 0) return DOC_SEP_NONE;
    if (strcmp(v, "eot") == 0) return DOC_SEP_EOT;
    char* end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end != '\0' || errno == ERANGE || x < 0 || x > 100000000)
        die("-D %s: expected none, eot (the tokenizer's end-of-text token) or a separator token id", v);
    return (int)x;
}

/* -D's separator as a token id (DOC_SEP_NONE stays); eot_token: the tokenizer's end-of-text id, -1 without one */
static inline int doc_sep_id(int doc_sep, int eot_token, int vocab_size) {
    if (doc_sep == DOC_SEP_NONE) return DOC_SEP_NONE;
    int sep = doc_sep;
    if (sep == DOC_SEP_EOT) {
        if (eot_token < 0)
            die("-D eot: no tokenizer file to read the end-of-text id from (give it with -k, or the id: -D <id>)");
        sep = eot_token;
    }
    if (sep >= vocab_size) die("-D %d: the separator id is outside the vocabulary [0, %d)", sep, vocab_size);
    return sep;
}

/* a trainer without document boundaries and masked targets stops on -D / -M instead of ignoring them */
static inline void refuse_docs_flags(const TrainArgs* a) {
    if (a->doc_sep != DOC_SEP_NONE)
        die("-D (document boundaries) is not supported by the GPU trainer yet: leave it out, or train with the CPU "
            "trainer ./train_mamba2 (doc/packing.md)");
    if (a->masks)
        die("-M 1 (masked targets) is not supported by the GPU trainer yet: leave it out, or train with the CPU "
            "trainer ./train_mamba2 (doc/packing.md)");
}

static inline void parse_args(TrainArgs* a, int argc, char** argv) {
    a->train_pattern = "data/stdlib/stdlib_train_*.bin";
    a->val_pattern = "data/stdlib/stdlib_val_*.bin";
    a->tokenizer_path = NULL; a->output_dir = NULL; a->model = "tiny"; a->model_given = 0; a->resume = 0;
    a->B = 4; a->T = 64; a->total_batch_tokens = -1;
    a->lr = 1e-3f; a->final_lr_frac = 0.1f; a->weight_decay = 0.1f; a->grad_clip = 1.0f;
    a->warmup = 0; a->max_steps = 100; a->val_every = 20; a->val_batches = 20; a->sample_every = 20;
    a->gen_tokens = 64; a->ckpt_every = 0; a->seed = 1337; a->zero_stage = 0; a->profile = 0; a->recompute = 0;
    a->ssd_chunk = 0; a->ckpt_keep = 0; a->overwrite = 0; a->ckpt_every_given = 0;
    a->doc_sep = DOC_SEP_NONE; a->masks = 0; a->carry = 0;
    const long long BIG = 1000000000LL;
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
        case 'y': a->resume = (int)flag_int(f, v, 0, 2); break;
        case 'w': a->overwrite = (int)flag_int(f, v, 0, 1); break;
        case 'b': a->B = (int)flag_int(f, v, 1, 1 << 20); break;
        case 't': a->T = (int)flag_int(f, v, 1, 1 << 24); break;
        case 'd': a->total_batch_tokens = (int)flag_int(f, v, 1, BIG); break;
        case 'l': a->lr = flag_float(f, v, 0, 10); if (!(a->lr > 0)) die("-l %s: the learning rate must be > 0", v); break;
        case 'u': a->warmup = (int)flag_int(f, v, 0, BIG); break;
        case 'q': a->final_lr_frac = flag_float(f, v, 0, 1); break;
        case 'c': a->weight_decay = flag_float(f, v, 0, 10); break;
        case 'a': a->grad_clip = flag_float(f, v, 0, 1e30); break;
        case 'x': a->max_steps = (int)flag_int(f, v, 1, BIG); break;
        case 'v': a->val_every = (int)flag_int(f, v, 0, BIG); break;
        case 'm': a->val_batches = (int)flag_int(f, v, 1, BIG); break;
        case 's': a->sample_every = (int)flag_int(f, v, 0, BIG); break;
        case 'g': a->gen_tokens = (int)flag_int(f, v, 1, 1 << 24); break;
        case 'n': a->ckpt_every = (int)flag_int(f, v, 0, BIG); a->ckpt_every_given = 1; break;
        case 'N': a->ckpt_keep = (int)flag_int(f, v, 0, BIG); break;
        case 'S': {
            char* end;
            errno = 0;
            a->seed = strtoull(v, &end, 10);
            if (end == v || *end != '\0' || errno == ERANGE || v[0] == '-') die("-S %s: expected a seed in [0, 2^64)", v);
            break;
        }
        case 'z': a->zero_stage = (int)flag_int(f, v, 0, 1); break;
        case 'p': a->profile = (int)flag_int(f, v, 0, 1); break;
        case 'r': a->recompute = (int)flag_int(f, v, 0, 3); break;
        case 'K': a->ssd_chunk = (int)flag_int(f, v, 0, 256);
            if (a->ssd_chunk != 0 && a->ssd_chunk < 16) die("-K %s: the SSD chunk length is 0 (default) or 16..256", v);
            break;
        case 'D': a->doc_sep = doc_sep_parse(v); break;
        case 'M': a->masks = (int)flag_int(f, v, 0, 1); break;
        case 'C': a->carry = (int)flag_int(f, v, 0, 1); break;
        default: usage(); die("unknown flag -%c", f);
        }
    }
    if (!g_trainer_has_docs) refuse_docs_flags(a);
    if (a->carry && !g_trainer_has_carry)
        die("-C 1 (carried state) is not supported by %s yet: leave it out, or train with the CPU trainer "
            "./train_mamba2 (doc/packing.md section 6)", g_trainer_name);
    if ((long long)a->B * a->T > (1LL << 28))
        die("-b %d -t %d: B*T = %lld tokens per micro-batch, at most 2^28 are supported", a->B, a->T,
            (long long)a->B * a->T);
    if (a->warmup > a->max_steps)
        die("-u %d: the warm-up is longer than the run (-x %d); use -u <= -x", a->warmup, a->max_steps);
    if (a->resume && a->output_dir == NULL) die("-y %d (resume) needs -o <dir> holding the checkpoints", a->resume);
    if (a->ckpt_every_given && a->ckpt_every > 0 && a->output_dir == NULL) die("-n (checkpoints) needs -o <dir>");
    if (a->ckpt_keep > 0 && a->output_dir == NULL) die("-N (keep the newest checkpoints) needs -o <dir>");
    if (a->overwrite && a->resume) die("-w 1 (start over) and -y %d (resume) contradict each other", a->resume);
    /* a default interval: a crash or kill -9 loses at most a tenth of the run */
    if (!a->ckpt_every_given && a->output_dir != NULL) a->ckpt_every = a->max_steps / 10 > 1 ? a->max_steps / 10 : 1;
}

/* gradient accumulation steps so that B*T tokens on each of `world` processes make up -d tokens a step */
static inline int grad_accum_steps(TrainArgs* a, int world) {
    long long per_step = (long long)a->B * a->T * world;
    if (a->total_batch_tokens < 0) {
        if (per_step > 1000000000LL)
            die("B*T*GPUs = %d*%d*%d = %lld tokens per step, at most 10^9 are supported", a->B, a->T, world, per_step);
        a->total_batch_tokens = (int)per_step;
    }
    if (a->total_batch_tokens % per_step != 0)
        die("total batch size -d %d is not a multiple of B*T*GPUs = %d*%d*%d = %lld", a->total_batch_tokens, a->B,
            a->T, world, per_step);
    return (int)(a->total_batch_tokens / per_step);
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

/* the trainer's -D as a token id: eot needs the tokenizer file that names the end-of-text id */
static inline int doc_sep_resolve(const TrainArgs* a, const Tokenizer* tok, int vocab_size) {
    return doc_sep_id(a->doc_sep, tok->init_ok ? tok->eot_token : -1, vocab_size);
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


/* ---- the training log: llm.c's "s:<step> trl:<loss>" / "s:<step> tel:<loss>", with lr, grad norm, tokens ----
 * Every write is checked: a full disk stops the run with a message (at most the steps since the last checkpoint
 * are lost; resume with -y 1 once there is space). */

static inline FILE* log_open(const char* dir, int append) {
    if (dir == NULL) return NULL;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) die("-o %s: cannot create the folder: %s", dir, strerror(errno));
    char path[4096];
    snprintf(path, sizeof(path), "%s/main.log", dir);
    FILE* f = fopen(path, append ? "a" : "w");
    if (f == NULL) die("cannot open %s for writing: %s (is -o a writable folder?)", path, strerror(errno));
    return f;
}

static inline void log_write_check_(FILE* f, int rc) {
    if (rc < 0 || fflush(f) != 0)
        die("write to main.log failed: %s (disk full? the checkpoints are intact: free space, then resume with -y 1)",
            strerror(errno));
}

static inline void log_val(FILE* f, int step, float loss) {
    printf("step %d: val loss %.6f\n", step, loss);
    if (f) log_write_check_(f, fprintf(f, "s:%d tel:%.6f\n", step, loss));
}

/* one line per optimizer step: to stdout with speed and ETA, to the log file for plots */
static inline void log_train(FILE* f, const TrainArgs* a, int done, float loss, float lr, double norm, double step_s,
                             double avg_s) {
    char eta[32];
    format_eta(eta, sizeof(eta), avg_s * (a->max_steps - done));
    printf("step %5d/%d | loss %.6f | lr %.2e | norm %.4f | %.1f ms | %.0f tok/s | eta %s\n", done, a->max_steps, loss,
           lr, norm, step_s * 1000, a->total_batch_tokens / step_s, eta);
    fflush(stdout);
    if (f)
        log_write_check_(f, fprintf(f, "s:%d trl:%.6f lr:%.6e norm:%.6f tok:%lld\n", done, loss, lr, norm,
                                    (long long)done * a->total_batch_tokens));
}

static inline void log_close(FILE* f) {
    if (f == NULL) return;
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    if (fclose(f) != 0 || bad) die("closing main.log failed: %s (disk full?)", strerror(errno));
}

/*
 * Cuts dir/main.log back to what it held when the checkpoint of `step` was written, so that a resumed run's log
 * equals an uninterrupted run's. The loop logs, at step k, 's:k tel' first, then trains and logs 's:k+1 trl', then
 * checkpoints k+1; resuming from checkpoint k starts the loop at k again and writes 's:k tel' again: keep train
 * lines up to k and val lines before k. A line cut by a crash (no newline) or not of this format is dropped.
 * Written to main.log.tmp and renamed. Returns the number of lines removed (0 when there is no main.log).
 */
static inline int log_trim(const char* dir, int step) {
    char path[4096], tmp[4200];
    snprintf(path, sizeof(path), "%s/main.log", dir);
    snprintf(tmp, sizeof(tmp), "%s/main.log.tmp", dir);
    FILE* in = fopen(path, "r");
    if (in == NULL) return 0;
    FILE* out = fopen(tmp, "w");
    if (out == NULL) die("cannot write %s: %s", tmp, strerror(errno));
    char line[1024];
    int removed = 0, bad = 0;
    while (fgets(line, sizeof(line), in)) {
        size_t len = strlen(line);
        int s = -1;
        char kind[4] = {0};
        int keep = len > 0 && line[len - 1] == '\n' && sscanf(line, "s:%d %3[a-z]:", &s, kind) == 2 &&
                   ((strcmp(kind, "trl") == 0 && s <= step) || (strcmp(kind, "tel") == 0 && s < step));
        if (len > 0 && line[len - 1] != '\n' && len == sizeof(line) - 1) {
            /* an overlong line: skip the rest of it */
            int ch;
            while ((ch = fgetc(in)) != EOF && ch != '\n') {}
            keep = 0;
        }
        if (keep) { if (fputs(line, out) < 0) bad = 1; }
        else removed++;
    }
    fclose(in);
    if (fflush(out) != 0 || fsync(fileno(out)) != 0) bad = 1;
    if (fclose(out) != 0) bad = 1;
    if (bad) { remove(tmp); die("writing %s failed: %s (disk full?)", tmp, strerror(errno)); }
    if (rename(tmp, path) != 0) die("could not rename %s to %s: %s", tmp, path, strerror(errno));
    return removed;
}

/* ---- the output folder: checkpoints, stale files, keep-last-N ---- */

/* the steps of the "ckpt_%08d.bin" files in dir, newest first; returns the count (at most max) */
static inline int list_checkpoints(const char* dir, int* steps, int max) {
    DIR* d = opendir(dir);
    if (d == NULL) return 0;
    int n = 0;
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        int step, len = 0;
        if (sscanf(e->d_name, "ckpt_%d.bin%n", &step, &len) == 1 && len > 0 && e->d_name[len] == '\0' && step >= 0) {
            if (n < max) steps[n++] = step;
        }
    }
    closedir(d);
    for (int i = 1; i < n; i++)  /* insertion sort, descending */
        for (int j = i; j > 0 && steps[j] > steps[j - 1]; j--) { int t = steps[j]; steps[j] = steps[j - 1]; steps[j - 1] = t; }
    return n;
}

/* removes "ckpt_*.bin.tmp" (and "main.log.tmp") left by a run killed while writing; returns how many */
static inline int remove_stale_tmp(const char* dir) {
    DIR* d = opendir(dir);
    if (d == NULL) return 0;
    int n = 0;
    struct dirent* e;
    char path[4400];
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        int ckpt_tmp = strncmp(e->d_name, "ckpt_", 5) == 0 &&
                       ((len > 8 && strcmp(e->d_name + len - 8, ".bin.tmp") == 0) ||
                        (len > 14 && strcmp(e->d_name + len - 14, ".bin.carry.tmp") == 0));
        if (ckpt_tmp || strcmp(e->d_name, "main.log.tmp") == 0) {
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            if (remove(path) == 0) { printf("removed %s (left by an interrupted write)\n", path); n++; }
        }
    }
    closedir(d);
    return n;
}

/* deletes all but the newest `keep` checkpoints (keep 0: none deleted) */
static inline void prune_checkpoints(const char* dir, int keep) {
    if (keep <= 0) return;
    int steps[4096];
    int n = list_checkpoints(dir, steps, 4096);
    char path[4200];
    for (int i = keep; i < n; i++) {
        snprintf(path, sizeof(path), "%s/ckpt_%08d.bin", dir, steps[i]);
        if (remove(path) != 0) fprintf(stderr, "warning: could not delete old checkpoint %s: %s\n", path, strerror(errno));
        snprintf(path, sizeof(path), "%s/ckpt_%08d.bin.carry", dir, steps[i]);
        if (remove(path) != 0 && errno != ENOENT)
            fprintf(stderr, "warning: could not delete old carried state %s: %s\n", path, strerror(errno));
    }
}

/*
 * Before a run writes into -o: stale .tmp files go; a folder holding an earlier run (main.log or checkpoints) is
 * refused unless resuming (-y) or starting over (-w 1, which deletes that run's main.log and checkpoints, so a later
 * -y 1 cannot resume the old run). Only rank 0 of a multi-process run should call this.
 */
static inline void output_dir_prepare(const TrainArgs* a) {
    if (a->output_dir == NULL) return;
    if (mkdir(a->output_dir, 0755) != 0 && errno != EEXIST)
        die("-o %s: cannot create the folder: %s", a->output_dir, strerror(errno));
    remove_stale_tmp(a->output_dir);
    if (a->resume) return;
    int steps[4096];
    int n = list_checkpoints(a->output_dir, steps, 4096);
    char logp[4200];
    snprintf(logp, sizeof(logp), "%s/main.log", a->output_dir);
    struct stat st;
    int has_log = stat(logp, &st) == 0;
    if (n == 0 && !has_log) return;
    if (!a->overwrite)
        die("-o %s already holds a run (%s%s%d checkpoint%s): resume it with -y 1, use another folder, or pass -w 1 "
            "to delete it and start over", a->output_dir, has_log ? "main.log, " : "", "", n, n == 1 ? "" : "s");
    char path[4200];
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/ckpt_%08d.bin", a->output_dir, steps[i]);
        if (remove(path) != 0) die("-w 1: cannot delete %s: %s", path, strerror(errno));
        snprintf(path, sizeof(path), "%s/ckpt_%08d.bin.carry", a->output_dir, steps[i]);
        if (remove(path) != 0 && errno != ENOENT) die("-w 1: cannot delete %s: %s", path, strerror(errno));
    }
    if (has_log && remove(logp) != 0) die("-w 1: cannot delete %s: %s", logp, strerror(errno));
    printf("-w 1: deleted the earlier run in %s (main.log and %d checkpoints)\n", a->output_dir, n);
}

/* ---- SIGINT / SIGTERM: the loop finishes its step, writes a checkpoint and exits with 128 + the signal ---- */

static volatile sig_atomic_t g_stop_signal = 0;

static void train_on_signal_(int sig) {
    g_stop_signal = sig;
    signal(sig, SIG_DFL); /* a second signal kills at once (the .tmp it may leave is removed at the next start) */
}

static inline void train_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = train_on_signal_;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* the signal that asked the run to stop (SIGINT, SIGTERM), or 0 */
static inline int train_stop_requested(void) { return (int)g_stop_signal; }

static inline const char* signal_name(int sig) {
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
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

/*
 * ---- carried state (-C 1): a companion file next to the checkpoint, "<ckpt>.carry" (doc/packing.md section 6) ----
 * The checkpoint format is unchanged; what resume needs besides it is each row's carried SSM state and conv window:
 *   uint64 header[32]   magic "M2CARRY\0", version 1, step, B, Mamba-2 blocks, H, P, N, K-1, conv_dim, processes,
 *                       the data loader state (8 words, DataLoaderState: its stream position), checksum (last word:
 *                       XXH64 of the whole file with this word 0)
 *   float  ssm[LM][B][H][P][N]         each row's SSM state at the end of its last batch
 *   float  window[LM][B][K-1][conv_dim] each row's last K-1 conv inputs (zero where another document)
 * Both trainers write and read this one layout (fp32), so a run moves between them as with checkpoints. Written to
 * "<ckpt>.carry.tmp", synced and renamed, before the checkpoint itself: a checkpoint never lacks its companion.
 */
#define CARRY_MAGIC 0x005952524143324Dull /* the bytes "M2CARRY\0" (little-endian) */
#define CARRY_VERSION 1
#define CARRY_HEADER_WORDS 32
enum { CARRY_H_MAGIC = 0, CARRY_H_VERSION, CARRY_H_STEP, CARRY_H_B, CARRY_H_LM, CARRY_H_H, CARRY_H_P, CARRY_H_N,
       CARRY_H_K1, CARRY_H_CONV_DIM, CARRY_H_PROCS, CARRY_H_LOADER /* 8 words */, CARRY_H_SUM = 31 };

static inline void carry_path(char* out, size_t n, const char* ckpt_path) { snprintf(out, n, "%s.carry", ckpt_path); }

static inline void carry_header_fill(uint64_t h[CARRY_HEADER_WORDS], const Mamba2Config* c, int B, int step,
                                     int procs, const DataLoaderState* ls) {
    memset(h, 0, sizeof(uint64_t) * CARRY_HEADER_WORDS);
    h[CARRY_H_MAGIC] = CARRY_MAGIC;
    h[CARRY_H_VERSION] = CARRY_VERSION;
    h[CARRY_H_STEP] = (uint64_t)step;
    h[CARRY_H_B] = (uint64_t)B;
    h[CARRY_H_LM] = (uint64_t)c->n_mamba;
    h[CARRY_H_H] = (uint64_t)c->nheads;
    h[CARRY_H_P] = (uint64_t)c->headdim;
    h[CARRY_H_N] = (uint64_t)c->d_state;
    h[CARRY_H_K1] = (uint64_t)(c->d_conv - 1);
    h[CARRY_H_CONV_DIM] = (uint64_t)c->conv_dim;
    h[CARRY_H_PROCS] = (uint64_t)procs;
    memcpy(&h[CARRY_H_LOADER], ls->v, sizeof(ls->v));
}

/* XXH64 of the whole file as written: the header (its checksum word 0), then the states, then the windows */
static inline uint64_t carry_checksum(const uint64_t h[CARRY_HEADER_WORDS], const float* ssm, size_t ns,
                                      const float* window, size_t nw) {
    Xxh64 x;
    xxh64_init(&x, 0);
    xxh64_update(&x, h, sizeof(uint64_t) * CARRY_HEADER_WORDS);
    xxh64_update(&x, ssm, ns * sizeof(float));
    xxh64_update(&x, window, nw * sizeof(float));
    return xxh64_final(&x, 0);
}

/* writes the companion of checkpoint ckpt_path (atomically, every write checked) */
static inline void carry_write(const char* ckpt_path, const Mamba2Config* c, int B, int step, int procs,
                               const DataLoaderState* ls, const float* ssm, const float* window) {
    uint64_t h[CARRY_HEADER_WORDS];
    carry_header_fill(h, c, B, step, procs, ls);
    size_t ns = carry_ssm_floats(c, B), nw = carry_window_floats(c, B);
    h[CARRY_H_SUM] = carry_checksum(h, ssm, ns, window, nw);
    char path[4200], tmp[4300];
    carry_path(path, sizeof(path), ckpt_path);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE* f = fopen(tmp, "wb");
    if (f == NULL) die("carried state %s: cannot create: %s (is -o a writable folder?)", tmp, strerror(errno));
    int bad = fwrite(h, sizeof(uint64_t), CARRY_HEADER_WORDS, f) != CARRY_HEADER_WORDS ||
              fwrite(ssm, sizeof(float), ns, f) != ns || fwrite(window, sizeof(float), nw, f) != nw;
    if (!bad) bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    int err = errno;
    if (fclose(f) != 0) bad = 1;
    if (bad) {
        remove(tmp);
        die("carried state %s: write failed: %s (disk full? the previous checkpoints are untouched; free space and "
            "resume with -y 1)", tmp, strerror(err));
    }
    if (rename(tmp, path) != 0) die("could not rename %s to %s: %s", tmp, path, strerror(errno));
    fsync_parent_dir(path);
}

/* reads the companion of checkpoint ckpt_path into ssm / window (carry_*_floats), checking that it belongs to this
   checkpoint (step, loader state), this model and B, and its checksum; dies naming the file and what to do */
static inline void carry_read(const char* ckpt_path, const Mamba2Config* c, int B, int step, int procs,
                              const DataLoaderState* ls, float* ssm, float* window) {
    char path[4200];
    carry_path(path, sizeof(path), ckpt_path);
    FILE* f = fopen(path, "rb");
    if (f == NULL)
        die("-C 1: checkpoint %s has no carried-state file %s (%s): either it was written without -C 1 (then resume "
            "without -C), or the file was lost (then move the checkpoint away to resume from an earlier one, or start "
            "over with -w 1)", ckpt_path, path, strerror(errno));
    uint64_t h[CARRY_HEADER_WORDS], want[CARRY_HEADER_WORDS];
    carry_header_fill(want, c, B, step, procs, ls);
    if (fread(h, sizeof(uint64_t), CARRY_HEADER_WORDS, f) != CARRY_HEADER_WORDS) {
        fclose(f);
        die("carried state %s: shorter than its header: corrupt (start over, or resume an earlier checkpoint)", path);
    }
    const char* bad = NULL;
    if (h[CARRY_H_MAGIC] != CARRY_MAGIC) bad = "not a carried-state file (bad magic)";
    else if (h[CARRY_H_VERSION] != CARRY_VERSION) bad = "unknown version";
    else if (h[CARRY_H_STEP] != want[CARRY_H_STEP]) bad = "written at another step than its checkpoint";
    else if (h[CARRY_H_B] != want[CARRY_H_B] || h[CARRY_H_PROCS] != want[CARRY_H_PROCS])
        bad = "written with another batch size (-b) or process count: resume with the same";
    else if (memcmp(&h[CARRY_H_LM], &want[CARRY_H_LM], 5 * sizeof(uint64_t)) != 0) bad = "of another model";
    else if (memcmp(&h[CARRY_H_LOADER], &want[CARRY_H_LOADER], 8 * sizeof(uint64_t)) != 0)
        bad = "its data position is not its checkpoint's";
    if (bad) { fclose(f); die("carried state %s: %s", path, bad); }
    size_t ns = carry_ssm_floats(c, B), nw = carry_window_floats(c, B);
    int short_read = fread(ssm, sizeof(float), ns, f) != ns || fread(window, sizeof(float), nw, f) != nw;
    int extra = !short_read && fgetc(f) != EOF;
    fclose(f);
    if (short_read || extra) die("carried state %s: %s than its header says: corrupt", path, short_read ? "shorter" : "longer");
    uint64_t sum = h[CARRY_H_SUM];
    h[CARRY_H_SUM] = 0;
    if (carry_checksum(h, ssm, ns, window, nw) != sum)
        die("carried state %s: checksum mismatch: corrupt (resume an earlier checkpoint)", path);
}

/* should a checkpoint be written after `done` steps? every -n steps, at the end, and when the run stops on a signal:
   stopping is 1 when it does (train_stop_requested() in one process; the GPU trainer passes the flag agreed by all
   ranks, so every rank takes the same branch: a checkpoint with ZeRO-1 is collective) */
static inline int checkpoint_due_or_stop(const TrainArgs* a, int done, int stopping) {
    return a->output_dir && ((a->ckpt_every > 0 && done % a->ckpt_every == 0) || done == a->max_steps || stopping);
}

/* the same without a stop (every -n steps and at the end) */
static inline int checkpoint_due(const TrainArgs* a, int done) { return checkpoint_due_or_stop(a, done, 0); }

/* ---- where the model comes from: a description (-e), a checkpoint file (-e FILE), or resuming (-y 1 -o DIR) ---- */

typedef enum { MODEL_FROM_CONFIG, MODEL_FROM_FILE, MODEL_RESUME } ModelSourceKind;

typedef struct {
    ModelSourceKind kind;
    Mamba2Config config;   /* MODEL_FROM_CONFIG: the parsed -e description */
    char path[4096];       /* MODEL_FROM_FILE: a checkpoint or an HF / mamba_ssm model folder; MODEL_RESUME: the
                              checkpoint to resume */
} ModelSource;

/*
 * The checkpoint to resume from in dir: the newest one whose checksum verifies. If the newest is corrupt, -y 1
 * stops with its problem and the name of the newest good one; -y 2 (take_previous) renames the corrupt ones to
 * *.corrupt and returns the good one. Returns the step, or -1 when dir holds no checkpoint.
 */
static inline int resume_pick_checkpoint(const char* dir, int take_previous, char* path, size_t pathlen) {
    int steps[4096];
    int n = list_checkpoints(dir, steps, 4096);
    char err[1024], first_err[1024] = "";
    int good = -1;
    for (int i = 0; i < n && good < 0; i++) {
        checkpoint_path(path, pathlen, dir, steps[i]);
        if (checkpoint_verify(path, NULL, err, sizeof(err)) == 0) good = i;
        else {
            fprintf(stderr, "warning: %s\n", err);
            if (i == 0) snprintf(first_err, sizeof(first_err), "%s", err);
        }
    }
    if (n == 0) return -1;
    if (good < 0) die("-y: none of the %d checkpoints in %s is intact (newest: %s); start over with -w 1", n, dir,
                      first_err);
    if (good > 0) {
        char newest[4200];
        checkpoint_path(newest, sizeof(newest), dir, steps[0]);
        if (!take_previous)
            die("-y 1: the newest checkpoint is corrupt (%s). The newest intact one is %s (step %d): rerun with -y 2 "
                "to resume from it (the corrupt file%s renamed *.corrupt)", first_err, path, steps[good],
                good > 1 ? "s are" : " is");
        for (int i = 0; i < good; i++) {
            char bad[4200], to[4300];
            checkpoint_path(bad, sizeof(bad), dir, steps[i]);
            snprintf(to, sizeof(to), "%s.corrupt", bad);
            if (rename(bad, to) != 0 && errno != ENOENT) die("-y 2: cannot rename %s: %s", bad, strerror(errno));
            fprintf(stderr, "warning: -y 2: %s is corrupt, renamed to %s\n", bad, to);
        }
        printf("resume: taking the newest intact checkpoint %s (step %d)\n", path, steps[good]);
    }
    return steps[good];
}

static inline ModelSource model_source(const TrainArgs* a) {
    ModelSource s;
    memset(&s, 0, sizeof(s));
    char err[512];
    int from_file = is_file(a->model) || hf_is_model_dir(a->model);
    if (!from_file && config_parse(&s.config, a->model, err, sizeof(err)) != 0) die("%s", err);
    char ckpt[4096];
    int resume_step = a->resume ? resume_pick_checkpoint(a->output_dir, a->resume == 2, ckpt, sizeof(ckpt)) : -1;
    if (a->resume && resume_step < 0) printf("resume: no checkpoint in %s, starting fresh\n", a->output_dir);
    if (resume_step >= 0) {
        s.kind = MODEL_RESUME;
        snprintf(s.path, sizeof(s.path), "%s", ckpt);
        if (from_file) printf("resuming from %s: -e %s is not used\n", s.path, a->model);
    } else if (from_file) {
        s.kind = MODEL_FROM_FILE;
        snprintf(s.path, sizeof(s.path), "%s", a->model);
    } else {
        s.kind = MODEL_FROM_CONFIG;
    }
    return s;
}

/* the model's config, read from wherever the source points (description, checkpoint header, config.json) without
   loading any weights: what the memory estimate needs before anything big is allocated */
static inline Mamba2Config model_source_config(const ModelSource* src) {
    if (src->kind == MODEL_FROM_CONFIG) return src->config;
    Mamba2Config c;
    char err[1024];
    if (hf_is_model_dir(src->path)) {
        HfStyle style;
        int emb_rows;
        if (hf_read_config(src->path, &c, &style, &emb_rows, err, sizeof(err)) != 0) die("%s", err);
        return c;
    }
    CheckpointInfo info;
    if (checkpoint_verify(src->path, &info, err, sizeof(err)) != 0) die("%s", err);
    return info.config;
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


/* ---- memory: refuse up front a model that cannot fit, instead of an OOM kill with no word ---- */

/* bytes of RAM this machine has available (MemAvailable of /proc/meminfo; else the physical RAM), 0 if unknown */
static inline unsigned long long host_memory_available(void) {
    FILE* f = fopen("/proc/meminfo", "r");
    if (f != NULL) {
        char line[256];
        unsigned long long kb = 0;
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
        fclose(f);
        if (kb > 0) return kb * 1024ULL;
    }
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (unsigned long long)pages * (unsigned long long)page : 0;
}

/* dies with the estimate, the memory there is and what to try when need > available (available 0: unknown, no
   check). The CPU trainer passes its activation and parameter sizes (check_host_memory); the GPU trainer its
   allocation plan (gpu_train_memory_plan in llmc/model.cuh), cudaMemGetInfo's free bytes and where = "GPU". */
static inline void memory_check_or_die(unsigned long long need, unsigned long long available, const char* where,
                                       const Mamba2Config* c) {
    if (available == 0 || need <= available) return;
    die("this run needs about %.1f GiB of %s memory (%llu parameters: weights, gradients, AdamW moments, and the "
        "activations of one micro-batch), %.1f GiB are available: use a smaller model (-e), a smaller micro-batch "
        "(-b) or sequence (-t), or a larger machine", need / 1073741824.0, where, config_param_count(c),
        available / 1073741824.0);
}

#endif
