/*
 * hybrid_dump.cu: the GPU model's logits, loss and gradients for the torch reference (issue 25's acceptance check:
 * torch and the GPU build agree for small hybrids, 1e-5 in the fp32 build, a stated bound in bf16).
 *
 * `./test_interop --dump-hybrid DIR` writes small hybrids in mamba_ssm's form (DIR/<model>/model: config.json and
 * model.safetensors) and, in DIR/<model>/reference.safetensors, a batch (tokens, targets with -1 for a masked one,
 * and for one model seq_idx, each position's document) with the CPU trainer's results. This program, for every such
 * model folder: imports the mamba_ssm checkpoint (llmc/hf_io.h, as the GPU trainer does with -e FOLDER), reads the
 * batch, runs the GPU model's forward and backward on it (loss: the mean over the counted targets, the trainer's),
 * then a forward without targets for the logits, and writes DIR/<model>/gpu_<fp32|bf16>.safetensors with the names
 * of reference.safetensors' results: logits (B, T, V: the real vocabulary), loss (1), and grad.<mamba_ssm name> of
 * every tensor, in fp32 (the bf16 build's logits are its bf16 values; its gradients are fp32 as in training).
 * dev/hybrid_reference.py --ours gpu_fp32 / gpu_bf16 compares them with torch; dev/run_hybrid_reference.sh runs all.
 *
 * Build (the generic dev/cuda rule; the fp32 build by its own Makefile rule):
 *   make dev/cuda/hybrid_dump_bin dev/cuda/hybrid_dump_fp32_bin
 *   ./test_interop --dump-hybrid /tmp/hybrid_dump
 *   ./dev/cuda/hybrid_dump_fp32_bin /tmp/hybrid_dump        # DIR/<model>/gpu_fp32.safetensors
 *   ./dev/cuda/hybrid_dump_bin /tmp/hybrid_dump             # DIR/<model>/gpu_bf16.safetensors
 *   ./dev/cuda/hybrid_dump_bin --check /tmp/hybrid_dump     # no GPU: import, batch, names and shapes only
 *
 * The SSD chunk: the dumps use chunk 4 and 8; the GPU kernels take 16 at least, so the model runs at 16 as
 * gpu_model_from_weights does (an algorithm choice: SPEC section 3, the same function up to rounding).
 */
#include "llmc/model.cuh"

#include <dirent.h>

/* one model's batch, from its reference.safetensors */
typedef struct {
    int B, T;
    int* tokens;   /* (B, T) */
    int* targets;  /* (B, T), TARGET_NO_LOSS (-1) where masked */
    int* seq_idx;  /* (B, T) each position's document, or NULL: one document per row */
    int counted;   /* targets that count in the loss */
} DumpBatch;

/* the GPU model's results, laid out as the tensors of gpu_<precision>.safetensors */
typedef struct {
    float* logits; /* (B, T, V) */
    float loss;
    float* grads;  /* the parameter table's layout */
} GpuResults;

static void usage(FILE* f) {
    fprintf(f, "usage: %s [--check] DIR\n"
            "  DIR: the folder ./test_interop --dump-hybrid DIR wrote (model folders with reference.safetensors).\n"
            "  For each model: the GPU (%s build) forward + backward on its batch, written to\n"
            "  DIR/<model>/gpu_%s.safetensors (logits, loss, grad.<name>) for dev/hybrid_reference.py --ours gpu_%s.\n"
            "  --check: no GPU; import each model, read its batch and check the result names and shapes against\n"
            "           reference.safetensors, writing nothing.\n", "hybrid_dump", PRECISION_NAME, PRECISION_NAME,
            PRECISION_NAME);
}

static int by_name(const void* a, const void* b) { return strcmp(*(char* const*)a, *(char* const*)b); }

/* the sub-folders of dir that hold a reference.safetensors, sorted; their count in *n */
static char** list_models(const char* dir, int* n) {
    DIR* d = opendir(dir);
    if (d == NULL)
        die("%s: cannot open the folder (%s): give the folder ./test_interop --dump-hybrid DIR wrote", dir,
            strerror(errno));
    char** names = NULL;
    int cap = 0;
    *n = 0;
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[1200];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s/reference.safetensors", dir, e->d_name);
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            names = (char**)realloc(names, (size_t)cap * sizeof(char*));
            if (names == NULL) die("out of memory listing %s", dir);
        }
        names[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    if (*n == 0)
        die("%s: no model folders with a reference.safetensors in it: make them with ./test_interop --dump-hybrid %s",
            dir, dir);
    qsort(names, (size_t)*n, sizeof(char*), by_name);
    return names;
}

/* an I32 tensor of shape (B, T) from the reference file into a new array; B, T from the first one read (*B == 0) */
static int* read_bt_ints(const SafeTensors* st, const char* name, int* B, int* T) {
    const SafeTensorInfo* info = safetensors_find(st, name);
    if (info == NULL) return NULL;
    if (info->ndim != 2 || info->shape[0] < 1 || info->shape[1] < 1 || info->shape[0] * info->shape[1] > (1 << 24))
        die("%s: tensor %s must have shape (B, T) with 1 <= B*T <= 2^24 (it has %d dimensions): remake the dump with "
            "./test_interop --dump-hybrid DIR", st->path, name, info->ndim);
    if (*B == 0) { *B = (int)info->shape[0]; *T = (int)info->shape[1]; }
    if (info->shape[0] != *B || info->shape[1] != *T)
        die("%s: tensor %s has shape (%lld, %lld), the tokens (%d, %d): remake the dump with ./test_interop "
            "--dump-hybrid DIR", st->path, name, info->shape[0], info->shape[1], *B, *T);
    char err[1024];
    int* out = (int*)mallocCheck((size_t)*B * *T * sizeof(int));
    if (safetensors_read_i32(st, name, out, (size_t)*B * *T, err, sizeof err) != 0) die("%s", err);
    return out;
}

/* the batch of reference.safetensors, every value checked against the model (vocab) */
static void batch_read(DumpBatch* b, const char* path, int vocab) {
    SafeTensors st;
    char err[1024];
    memset(b, 0, sizeof *b);
    if (safetensors_open(&st, path, err, sizeof err) != 0) die("%s", err);
    b->tokens = read_bt_ints(&st, "tokens", &b->B, &b->T);
    if (b->tokens == NULL) die("%s: no tensor 'tokens': not a --dump-hybrid reference file", path);
    b->targets = read_bt_ints(&st, "targets", &b->B, &b->T);
    if (b->targets == NULL) die("%s: no tensor 'targets': not a --dump-hybrid reference file", path);
    b->seq_idx = read_bt_ints(&st, "seq_idx", &b->B, &b->T); /* optional: packed documents */
    safetensors_close(&st);
    for (int i = 0; i < b->B * b->T; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= vocab)
            die("%s: token %d at position %d is outside the model's vocabulary [0, %d)", path, b->tokens[i], i, vocab);
        if (b->targets[i] != TARGET_NO_LOSS && (b->targets[i] < 0 || b->targets[i] >= vocab))
            die("%s: target %d at position %d is outside [0, %d) and not -1 (masked)", path, b->targets[i], i, vocab);
        if (b->seq_idx && i % b->T > 0 && b->seq_idx[i] < b->seq_idx[i - 1])
            die("%s: seq_idx decreases at position %d (%d after %d): a document index must not decrease along a row",
                path, i, b->seq_idx[i], b->seq_idx[i - 1]);
        b->counted += b->targets[i] != TARGET_NO_LOSS;
    }
    if (b->counted == 0) die("%s: every target is masked (-1): there is no loss to differentiate", path);
}

static void batch_free(DumpBatch* b) { free(b->tokens); free(b->targets); free(b->seq_idx); }

/* The output tensors: logits, loss, then grad.<mamba_ssm name> of every tensor copy, named and shaped as
   test_interop's dump names them (hf_tensor_name, hf_tensor_shape with the padded vocabulary's rows). names holds
   the strings (count rows of 320). Returns the number of tensors. */
static int results_layout(SafeTensorOut* outs, char (*names)[320], const Mamba2Config* c, const ParamSpec* table,
                          const GpuResults* r, int B, int T) {
    int n = 0;
    outs[n++] = (SafeTensorOut){"logits", "F32", 3, {B, T, c->vocab_size}, r->logits};
    outs[n++] = (SafeTensorOut){"loss", "F32", 1, {1}, &r->loss};
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        const ParamSpec* s = &table[t];
        for (int l = 0; l < (s->numel ? s->copies : 0); l++) {
            char hf[300];
            hf_tensor_name(hf, sizeof hf, s, l, c, HF_STYLE_MAMBA_SSM);
            snprintf(names[n], 320, "grad.%s", hf);
            outs[n].name = names[n];
            outs[n].dtype = "F32";
            outs[n].ndim = hf_tensor_shape(outs[n].shape, s, c->padded_vocab_size);
            outs[n].data = r->grads ? r->grads + s->offset + (size_t)l * s->rows * s->cols : NULL;
            n++;
        }
    }
    return n;
}

/* the tensors we write must be reference.safetensors' results, name for name and shape for shape: the torch check
   then compares like with like */
static void check_layout_against_reference(const SafeTensorOut* outs, int n, const char* ref_path) {
    SafeTensors st;
    char err[1024];
    if (safetensors_open(&st, ref_path, err, sizeof err) != 0) die("%s", err);
    int in_ref = 0;
    for (int i = 0; i < st.num_tensors; i++) {
        const char* name = st.tensors[i].name;
        in_ref += strncmp(name, "grad.", 5) == 0 || strcmp(name, "logits") == 0 || strcmp(name, "loss") == 0;
    }
    for (int i = 0; i < n; i++) {
        const SafeTensorInfo* info = safetensors_find(&st, outs[i].name);
        int same = info != NULL && info->ndim == outs[i].ndim;
        for (int d = 0; same && d < outs[i].ndim; d++) same = info->shape[d] == outs[i].shape[d];
        if (!same)
            die("%s: the GPU model's tensor %s (%d dimensions, first %lld) is %s: the dump and this program disagree "
                "on the model; rebuild test_interop and this program from one commit and dump again", ref_path,
                outs[i].name, outs[i].ndim, outs[i].shape[0],
                info == NULL ? "not in the file" : "shaped differently there");
    }
    if (in_ref != n)
        die("%s: %d results (logits, loss, grad.*) in the file, the GPU model has %d: rebuild test_interop and this "
            "program from one commit and dump again", ref_path, in_ref, n);
    safetensors_close(&st);
}

/* one forward + backward on the GPU (the trainer's loss: the mean over the counted targets), then a forward without
   targets for the logits (over the real vocabulary). The model is not freed: a few MB, and the process ends soon. */
static void gpu_run(GpuResults* r, const Mamba2Config* c, const float* params, const DumpBatch* b) {
    GPUModel m;
    gpu_model_create(&m, c, params, NULL);
    gpu_zero_grad(&m);
    r->loss = gpu_forward_docs(&m, b->tokens, b->targets, b->seq_idx, b->B, b->T, 1.0f / (float)b->counted);
    gpu_backward(&m, 1);
    if ((int)m.num_counted != b->counted)
        die("the GPU counted %zu targets, the batch has %d: a bug in gpu_forward_docs's mask", m.num_counted,
            b->counted);
    r->grads = (float*)mallocCheck(m.num_parameters * sizeof(float));
    cudaCheck(cudaMemcpy(r->grads, m.grads, m.num_parameters * sizeof(float), cudaMemcpyDeviceToHost));
    gpu_forward_docs(&m, b->tokens, NULL, b->seq_idx, b->B, b->T, 0.0f); /* the logits stay in m.a.logits */
    cudaCheck(cudaStreamSynchronize(m.stream)); /* that forward returns with its kernels queued on m.stream */
    size_t BT = (size_t)b->B * b->T, V = (size_t)c->vocab_size, Vp = (size_t)c->padded_vocab_size;
    floatX* full = (floatX*)mallocCheck(BT * Vp * sizeof(floatX));
    cudaCheck(cudaMemcpy(full, m.a.logits, BT * Vp * sizeof(floatX), cudaMemcpyDeviceToHost));
    r->logits = (float*)mallocCheck(BT * V * sizeof(float));
    for (size_t i = 0; i < BT; i++)
        for (size_t v = 0; v < V; v++) r->logits[i * V + v] = toF(full[i * Vp + v]);
    free(full);
}

/* the file's metadata: what made it, on which GPU (quotes and backslashes of the name replaced: a JSON string) */
static void results_metadata(char* out, size_t n, int ssd_chunk) {
    cudaDeviceProp prop;
    int dev = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaGetDeviceProperties(&prop, dev));
    for (char* p = prop.name; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) *p = '_';
    snprintf(out, n, "{\"made_by\":\"dev/cuda/hybrid_dump.cu\",\"precision\":\"%s\",\"gpu\":\"%s\","
             "\"ssd_chunk\":\"%d\"}", PRECISION_NAME, prop.name, ssd_chunk);
}

/* one model folder: import, batch, layout check; then (not check_only) the GPU run and the file */
static void dump_model(const char* dir, const char* name, int check_only) {
    char model_dir[1200], ref_path[1300], out_path[1300], err[2048];
    snprintf(model_dir, sizeof model_dir, "%s/%s/model", dir, name);
    snprintf(ref_path, sizeof ref_path, "%s/%s/reference.safetensors", dir, name);
    snprintf(out_path, sizeof out_path, "%s/%s/gpu_%s.safetensors", dir, name, PRECISION_NAME);
    Mamba2Config c;
    float* params = NULL;
    if (hf_import(model_dir, &c, &params, err, sizeof err) != 0)
        die("%s: importing the mamba_ssm checkpoint failed: %s (remake the dump with ./test_interop --dump-hybrid "
            "DIR)", model_dir, err);
    if (c.chunk_size < GPU_SSD_MIN_CHUNK) c.chunk_size = GPU_SSD_MIN_CHUNK;
    ParamSpec table[NUM_PARAM_TENSORS];
    param_table_build(table, &c);
    DumpBatch b;
    batch_read(&b, ref_path, c.vocab_size);
    GpuResults r = {NULL, 0.0f, NULL};
    int count = 2;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) count += table[t].numel ? table[t].copies : 0;
    SafeTensorOut* outs = (SafeTensorOut*)callocCheck((size_t)count, sizeof(SafeTensorOut));
    char (*names)[320] = (char (*)[320])callocCheck((size_t)count, 320);
    int n = results_layout(outs, names, &c, table, &r, b.B, b.T);
    check_layout_against_reference(outs, n, ref_path);
    if (check_only) {
        printf("%s: pattern %s, B %d T %d%s, %d of %d targets counted, %d result tensors match "
               "reference.safetensors (--check: no GPU run)\n", name, c.pattern, b.B, b.T,
               b.seq_idx ? ", packed documents" : "", b.counted, b.B * b.T, n - 2);
    } else {
        gpu_run(&r, &c, params, &b);
        n = results_layout(outs, names, &c, table, &r, b.B, b.T); /* now pointing at the results */
        char meta[600];
        results_metadata(meta, sizeof meta, gpu_ssd_chunk(&c, GPU_SSD_MAX_CHUNK));
        if (safetensors_write(out_path, outs, n, meta, err, sizeof err) != 0) die("%s", err);
        printf("%s: pattern %s, B %d T %d%s, %d of %d targets counted: loss %.7f, %d gradient tensors\n", out_path,
               c.pattern, b.B, b.T, b.seq_idx ? ", packed documents" : "", b.counted, b.B * b.T, (double)r.loss,
               n - 2);
    }
    free(outs); free(names); free(params); free(r.logits); free(r.grads);
    batch_free(&b);
}

int main(int argc, char** argv) {
    int check_only = 0;
    const char* dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { usage(stdout); return 0; }
        if (strcmp(argv[i], "--check") == 0) { check_only = 1; continue; }
        if (argv[i][0] == '-' || dir != NULL) {
            fprintf(stderr, "hybrid_dump: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
        dir = argv[i];
    }
    if (dir == NULL) { usage(stderr); return 2; }
    int n = 0;
    char** models = list_models(dir, &n);
    if (!check_only) {
        int devices = 0;
        if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
            die("no CUDA GPU here: run this on the GPU machine (--check tests the files without one)");
        printf("== hybrid_dump, precision %s, %d models in %s\n", PRECISION_NAME, n, dir);
        gpu_arch_check();
        gpu_path_print(stdout);
    }
    for (int i = 0; i < n; i++) {
        dump_model(dir, models[i], check_only);
        free(models[i]);
    }
    free(models);
    return 0;
}
