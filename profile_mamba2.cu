/*
 * profile_mamba2.cu: where one GPU training step's time goes, kernel by kernel, without touching the model's code.
 *
 *   ./profile_mamba2cu                      Mamba-2 130M, B=8, T=2048, random weights and tokens
 *   ./profile_mamba2cu -e 370m -b 4 -r 1    another model, batch, recompute mode
 *
 * After a few warm-up steps, one step runs with CUPTI's activity tracing on (the CUDA toolkit's profiling library:
 * every kernel's and memset's start and end on the GPU, recorded by the driver, nothing added to the model's
 * launches). The step runs in three phases, forward (with the tied LM head's backward, which the forward does chunk by
 * chunk), backward and optimizer, each flushed on its own, so a kernel is charged to its phase without marks in the
 * model. Within a phase a kernel's family comes from its name (KERNEL_FAMILIES below); cuBLASLt's kernels are the
 * matmuls, and those after the final norm of the forward phase are the LM head's. Helper kernels (partial sums,
 * casts, memsets) are charged to the family of the kernel before them, whose reduction they finish.
 * make bench runs it after the trainer's timing run.
 */
#include <cupti.h>

#include "llmc/model.cuh"

#define CUPTI_CHECK(call)                                                                                              \
    do {                                                                                                               \
        CUptiResult r_ = (call);                                                                                       \
        if (r_ != CUPTI_SUCCESS) {                                                                                     \
            const char* s_ = NULL;                                                                                     \
            cuptiGetResultString(r_, &s_);                                                                             \
            die("CUPTI: %s failed: %s (is libcupti from the CUDA toolkit on LD_LIBRARY_PATH?)", #call, s_ ? s_ : "?"); \
        }                                                                                                              \
    } while (0)

enum { PH_FORWARD, PH_BACKWARD, PH_OPTIMIZER, NUM_PHASES };
static const char* PHASE_NAMES[NUM_PHASES] = {"forward", "backward", "optimizer"};

/* one kernel or memset as CUPTI saw it */
typedef struct {
    char name[96];  /* the kernel's identifier (demangled enough: the name without its argument list) */
    double ms;
    uint64_t start;
    int phase;
} Record;

#define MAX_RECORDS 16384
static Record g_rec[MAX_RECORDS];
static int g_nrec = 0;
static int g_phase = PH_FORWARD;

/* the identifier of a mangled C++ name (_Z<len><identifier>...), else the name itself */
static void kernel_identifier(char* out, size_t cap, const char* mangled) {
    const char* p = mangled;
    size_t len = 0;
    if (strncmp(p, "_Z", 2) == 0) {
        p += 2;
        while (*p >= '0' && *p <= '9') len = len * 10 + (size_t)(*p++ - '0');
    }
    if (len == 0) len = strlen(p);
    if (len >= cap) len = cap - 1;
    memcpy(out, p, len);
    out[len] = '\0';
}

static void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
    *size = (size_t)8 << 20;
    *buffer = (uint8_t*)aligned_alloc(8, *size);
    if (*buffer == NULL) die("out of host memory for CUPTI's activity buffer");
    *max_records = 0;
}

static void add_record(const char* name, uint64_t start, uint64_t end) {
    if (g_nrec >= MAX_RECORDS) die("profile: more than %d GPU activities in one step", MAX_RECORDS);
    Record* r = &g_rec[g_nrec++];
    kernel_identifier(r->name, sizeof(r->name), name);
    r->ms = (end - start) / 1e6;
    r->start = start;
    r->phase = g_phase;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t* buffer, size_t size, size_t valid) {
    (void)ctx; (void)stream; (void)size;
    CUpti_Activity* rec = NULL;
    while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
        if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || rec->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
            const CUpti_ActivityKernel10* k = (const CUpti_ActivityKernel10*)rec;
            add_record(k->name, k->start, k->end);
        } else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
            const CUpti_ActivityMemset4* s = (const CUpti_ActivityMemset4*)rec;
            add_record("memset", s->start, s->end);
        }
    }
    free(buffer);
}

/* the work of one phase: wait for the GPU, then hand its records to buffer_completed tagged with the phase */
static void phase_end(int phase) {
    cudaCheck(cudaDeviceSynchronize());
    g_phase = phase;
    CUPTI_CHECK(cuptiActivityFlushAll(1));
}

/* ---- kernel families ---- */

enum { F_EMBED, F_NORM, F_MATMUL, F_LM_HEAD, F_CONV, F_SSD_FWD, F_SSD_BWD, F_GATED_NORM, F_CLASSIFIER, F_OPTIMIZER,
       F_OTHER, NUM_FAMILIES };
static const char* FAMILY_NAMES[NUM_FAMILIES] = {
    "embedding fwd+bwd", "RMSNorm (+residual) fwd+bwd", "in_proj/out_proj matmuls", "LM head matmuls",
    "conv1d+SiLU fwd+bwd", "SSD forward", "SSD backward", "gated RMSNorm fwd+bwd", "classifier (softmax+CE)",
    "grad norm + AdamW", "other"};

/* name prefix -> family; -1: a helper kernel, charged to the family of the kernel before it */
typedef struct { const char* prefix; int family; } FamilyRule;
static const FamilyRule KERNEL_FAMILIES[] = {
    {"encoder_", F_EMBED},          {"rmsnorm_", F_NORM},           {"conv1d_", F_CONV},
    {"gated_norm_", F_GATED_NORM},  {"classifier_", F_CLASSIFIER},  {"adamw_", F_OPTIMIZER},
    {"global_norm_", F_OPTIMIZER},  {"ssd", F_SSD_FWD /* or F_SSD_BWD, by phase */},
    {"partial_sums_", -1},          {"cast_to_floatX", -1},         {"memset", -1},
};
/* cuBLASLt's kernels have its own names; these substrings cover the ones it picks on Ampere to Blackwell */
static const char* MATMUL_MARKS[] = {"gemm", "nvjet", "xmma", "cutlass", "splitKreduce"};

static int kernel_family(const char* name, int phase) {
    for (size_t i = 0; i < sizeof(KERNEL_FAMILIES) / sizeof(KERNEL_FAMILIES[0]); i++) {
        const FamilyRule* r = &KERNEL_FAMILIES[i];
        if (strncmp(name, r->prefix, strlen(r->prefix)) == 0)
            return r->family == F_SSD_FWD && phase == PH_BACKWARD ? F_SSD_BWD : r->family;
    }
    for (size_t i = 0; i < sizeof(MATMUL_MARKS) / sizeof(MATMUL_MARKS[0]); i++)
        if (strstr(name, MATMUL_MARKS[i])) return F_MATMUL;
    return F_OTHER;
}

static int cmp_record_start(const void* a, const void* b) {
    uint64_t x = ((const Record*)a)->start, y = ((const Record*)b)->start;
    return (x > y) - (x < y);
}

static void print_report(const Mamba2Config* c, int B, int T) {
    qsort(g_rec, g_nrec, sizeof(Record), cmp_record_start);
    int final_norm = -1; /* the forward's last RMSNorm: the final norm; matmuls after it are the LM head */
    for (int i = 0; i < g_nrec; i++)
        if (g_rec[i].phase == PH_FORWARD && strncmp(g_rec[i].name, "rmsnorm_", 8) == 0) final_norm = i;
    double fam[NUM_FAMILIES] = {0}, total = 0;
    int prev = F_OTHER;
    for (int i = 0; i < g_nrec; i++) {
        int f = kernel_family(g_rec[i].name, g_rec[i].phase);
        if (f == -1) f = prev;
        if (f == F_MATMUL && g_rec[i].phase == PH_FORWARD && i > final_norm) f = F_LM_HEAD;
        if (f == F_OTHER && g_rec[i].phase == PH_OPTIMIZER) f = F_OPTIMIZER;
        fam[f] += g_rec[i].ms;
        total += g_rec[i].ms;
        prev = f;
    }
    double phase_ms[NUM_PHASES] = {0};
    for (int i = 0; i < g_nrec; i++) phase_ms[g_rec[i].phase] += g_rec[i].ms;
    printf("\n== profile: %d layers, d_model %d, B=%d T=%d, %s, one step after warm-up (CUPTI, GPU time of each "
           "kernel)\n", c->n_layer, c->d_model, B, T, PRECISION_NAME);
    cuda_warn_reduced_opt(stdout);
    int order[NUM_FAMILIES];
    for (int k = 0; k < NUM_FAMILIES; k++) order[k] = k;
    for (int i = 0; i < NUM_FAMILIES; i++)
        for (int j = i + 1; j < NUM_FAMILIES; j++)
            if (fam[order[j]] > fam[order[i]]) { int t = order[i]; order[i] = order[j]; order[j] = t; }
    for (int i = 0; i < NUM_FAMILIES; i++) {
        int k = order[i];
        if (fam[k] > 0) printf("  %-30s %8.2f ms  %5.1f%%\n", FAMILY_NAMES[k], fam[k], 100.0 * fam[k] / total);
    }
    printf("  %-30s %8.2f ms  (%d kernels and memsets;", "total", total, g_nrec);
    for (int p = 0; p < NUM_PHASES; p++)
        printf(" %s %.2f%s", PHASE_NAMES[p], phase_ms[p], p + 1 < NUM_PHASES ? "," : ")\n");
    int L = c->n_layer;
    printf("SSD per layer    forward %.3f ms, backward %.3f ms, forward+backward %.3f ms\n", fam[F_SSD_FWD] / L,
           fam[F_SSD_BWD] / L, (fam[F_SSD_FWD] + fam[F_SSD_BWD]) / L);
    /* the kernels by total time, each name once */
    printf("kernels by GPU time (calls, ms):\n");
    static char seen[MAX_RECORDS];
    memset(seen, 0, sizeof(seen));
    for (int shown = 0; shown < 16; shown++) {
        int best = -1;
        double best_ms = 0;
        for (int i = 0; i < g_nrec; i++) {
            if (seen[i]) continue;
            double ms = 0;
            for (int j = i; j < g_nrec; j++)
                if (!seen[j] && strcmp(g_rec[j].name, g_rec[i].name) == 0) ms += g_rec[j].ms;
            if (ms > best_ms) { best_ms = ms; best = i; }
        }
        if (best < 0) break;
        int calls = 0;
        char name[96];
        strcpy(name, g_rec[best].name);
        for (int j = best; j < g_nrec; j++)
            if (!seen[j] && strcmp(g_rec[j].name, name) == 0) { seen[j] = 1; calls++; }
        printf("  %-60.60s %5d %8.2f\n", name, calls, best_ms);
    }
}

static void profile_usage(void) {
    printf("usage: ./profile_mamba2cu [-e MODEL] [-b B] [-t T] [-r 0|1] [-K chunk] [-w warm-up steps]\n"
           "  one training step on random tokens, timed kernel by kernel with CUPTI\n"
           "  -e  a model description, as the trainer's -e (default 130m; random weights), or a checkpoint or model\n"
           "      folder\n"
           "  -b, -t  batch size and sequence length (default 8, 2048)\n"
           "  -r 0..3  recompute mode (as the trainer's -r);  -K  the SSD chunk length (default: the trainer's)\n"
           "  -w  warm-up steps before the profiled one (default 3)\n");
}

static int int_arg(const char* flag, const char* v, int lo, int hi) {
    char* end;
    long x = strtol(v, &end, 10);
    if (*v == '\0' || *end || x < lo || x > hi) die("%s %s: expected an integer in [%d, %d]", flag, v, lo, hi);
    return (int)x;
}

int main(int argc, char** argv) {
    const char* spec = "130m";
    int B = 8, T = 2048, recompute = 0, chunk = 0, warmup = 3;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { profile_usage(); return 0; }
        if (i + 1 >= argc || argv[i][0] != '-' || strlen(argv[i]) != 2) {
            profile_usage();
            die("bad argument %s", argv[i]);
        }
        const char* v = argv[++i];
        switch (argv[i - 1][1]) {
        case 'e': spec = v; break;
        case 'b': B = int_arg("-b", v, 1, 1 << 16); break;
        case 't': T = int_arg("-t", v, 1, 1 << 24); break;
        case 'r': recompute = int_arg("-r", v, 0, 3); break;
        case 'K': chunk = int_arg("-K", v, 16, 256); break;
        case 'w': warmup = int_arg("-w", v, 0, 100); break;
        default: profile_usage(); die("unknown flag %s", argv[i - 1]);
        }
    }
    GPUModel m;
    gpu_load_model(&m, spec, 1); /* a checkpoint or model folder, or a description given random weights */
    const Mamba2Config c = m.config;
    gpu_model_set_recompute(&m, recompute);
    if (chunk) m.ssd_q = chunk;
    int BT = B * T;
    int* tokens = (int*)mallocCheck((size_t)(BT + 1) * sizeof(int));
    Rng rng;
    rng_seed(&rng, 42);
    for (int i = 0; i <= BT; i++) tokens[i] = (int)(rng_u64(&rng) % (uint64_t)c.vocab_size);
    float dloss = 1.0f / BT;
    for (int s = 0; s < warmup; s++) {
        gpu_zero_grad(&m);
        gpu_forward(&m, tokens, tokens + 1, B, T, dloss);
        gpu_backward(&m, 1);
        gpu_update(&m, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f);
    }
    cudaCheck(cudaDeviceSynchronize());
    CUPTI_CHECK(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed));
    CUPTI_CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
    CUPTI_CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET));
    gpu_zero_grad(&m);
    phase_end(PH_OPTIMIZER);
    gpu_forward(&m, tokens, tokens + 1, B, T, dloss);
    phase_end(PH_FORWARD);
    gpu_backward(&m, 1);
    phase_end(PH_BACKWARD);
    gpu_update(&m, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f);
    phase_end(PH_OPTIMIZER);
    CUPTI_CHECK(cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
    CUPTI_CHECK(cuptiActivityDisable(CUPTI_ACTIVITY_KIND_MEMSET));
    print_report(&c, B, T);
    free(tokens);
    return 0;
}
