/*
 * fuzz_readers.c: one libFuzzer harness per reader of mamba2.c, chosen at compile time with -DFUZZ_<NAME>:
 *   SHARD       token shards (llmc/dataloader.h: header, size, token ids at open, batches)
 *   CHECKPOINT  mamba2.c checkpoints (llmc/mamba2_model.h checkpoint_open_e via model_load_weights)
 *   SAFETENSORS safetensors files (llmc/safetensors.h: header JSON, offsets, every tensor read as f32)
 *   JSON        the JSON parser (llmc/json.h), strict and with NaN/Infinity
 *   HFCONFIG    config.json of an HF / mamba_ssm folder (llmc/hf_io.h hf_read_config)
 *   TOKENIZER   tokenizer.bin (llmc/tokenizer.h)
 *   BPE         the BPE encoder file (llmc/bpe.h bpe_load) and, with a fixed byte-level encoder, the encoder and
 *               NFC on the input as text
 *   CONFIG      model descriptions (-e key=value,... : config_parse) and the config bounds
 * Built with MAMBA2_FUZZ: die() longjmps back here, so a refusal is a normal outcome; only crashes, hangs and
 * sanitizer reports are findings. dev/fuzz/run_fuzz.sh builds and runs them; seeds in dev/fuzz/corpus/<name>/.
 */
#define _POSIX_C_SOURCE 200809L
#define MAMBA2_FUZZ
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llmc/utils.h"
#include "llmc/mamba2_model.h"
#include "llmc/dataloader.h"
#include "llmc/json.h"
#include "llmc/safetensors.h"
#include "llmc/hf_io.h"
#include "llmc/tokenizer.h"
#include "llmc/bpe.h"

static char g_dir[64];

static const char* fuzz_file(const char* name, const uint8_t* data, size_t size) {
    static char path[128];
    if (g_dir[0] == '\0') {
        snprintf(g_dir, sizeof(g_dir), access("/dev/shm", W_OK) == 0 ? "/dev/shm/mamba2_fuzz_XXXXXX" : "/tmp/mamba2_fuzz_XXXXXX");
        if (mkdtemp(g_dir) == NULL) abort();
    }
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    FILE* f = fopen(path, "wb");
    if (f == NULL) abort();
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    return path;
}

/* a reader that dies mid-way (longjmp) leaves its files open: close what was opened during this input */
static void close_fds_from(int lo) {
    for (int fd = lo; fd < lo + 16; fd++) close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    char err[1024];
    int lo = dup(0);
    if (lo >= 0) close(lo);
#if defined(FUZZ_SHARD)
    const char* p = fuzz_file("shard_000.bin", data, size);
    static DataLoader l;
    if (setjmp(g_fuzz_die_jmp) == 0) {
        dataloader_init(&l, p, 2, 4, 0, 1, 1, 1, 300);
        for (int i = 0; i < 3; i++) dataloader_next_batch(&l);
    }
    dataloader_free(&l); /* also after a die(): what the loader held when it refused the file (freeing twice is a no-op) */
#elif defined(FUZZ_CHECKPOINT)
    const char* p = fuzz_file("ckpt.bin", data, size);
    Mamba2Config c;
    float* w = NULL;
    if (setjmp(g_fuzz_die_jmp) == 0 && model_load_weights(p, &c, &w, err, sizeof err) == 0) free(w);
#elif defined(FUZZ_SAFETENSORS)
    const char* p = fuzz_file("model.safetensors", data, size);
    SafeTensors st;
    if (safetensors_open(&st, p, err, sizeof err) == 0) {
        for (int i = 0; i < st.num_tensors; i++) {
            const SafeTensorInfo* t = &st.tensors[i];
            if (t->numel > (1u << 20)) continue;
            float* buf = (float*)malloc((t->numel ? t->numel : 1) * sizeof(float));
            (void)safetensors_read_f32(&st, t->name, buf, t->numel, err, sizeof err);
            free(buf);
        }
        safetensors_close(&st);
    }
#elif defined(FUZZ_JSON)
    JsonValue v;
    if (json_parse(&v, (const char*)data, size, 0, err, sizeof err) == 0) json_free(&v);
    if (json_parse(&v, (const char*)data, size, JSON_ALLOW_NONFINITE, err, sizeof err) == 0) json_free(&v);
#elif defined(FUZZ_HFCONFIG)
    fuzz_file("config.json", data, size);
    Mamba2Config c;
    HfStyle style;
    int emb_rows;
    if (hf_read_config(g_dir, &c, &style, &emb_rows, err, sizeof err) == 0) {
        ParamSpec t[NUM_PARAM_TENSORS];
        size_t n = param_table_build(t, &c);
        if (n != (size_t)config_param_count(&c)) abort();
    }
#elif defined(FUZZ_TOKENIZER)
    const char* p = fuzz_file("tokenizer.bin", data, size);
    Tokenizer t;
    if (setjmp(g_fuzz_die_jmp) == 0) {
        tokenizer_init(&t, p);
        for (uint32_t i = 0; t.init_ok && i < t.vocab_size && i < 64; i++) (void)tokenizer_decode(&t, i);
        tokenizer_free(&t); /* (a refused file was freed by tokenizer_init itself) */
    }
#elif defined(FUZZ_BPE)
    const char* p = fuzz_file("bpe.bin", data, size);
    BpeEncoder e;
    if (bpe_load(&e, p, err, sizeof err) == 0) {
        int* ids = NULL;
        size_t n = 0;
        if (bpe_encode(&e, "hello world, caf\xc3\xa9 \xe2\x84\xab", 18, &ids, &n, err, sizeof err) == 0) free(ids);
        bpe_free(&e);
    }
    unsigned char* o = NULL;
    size_t olen = 0;
    if (bpe_nfc_(data, size, &o, &olen, err, sizeof err) == 0) free(o);
#elif defined(FUZZ_CONFIG)
    char spec[600];
    size_t n = size < sizeof(spec) - 1 ? size : sizeof(spec) - 1;
    memcpy(spec, data, n);
    spec[n] = '\0';
    Mamba2Config c;
    if (config_parse(&c, spec, err, sizeof err) == 0) {
        ParamSpec t[NUM_PARAM_TENSORS];
        if (param_table_build(t, &c) != (size_t)config_param_count(&c)) abort();
    }
    if (size >= 9 * sizeof(int)) { /* raw field values: config_check must never overflow */
        int f[9];
        memcpy(f, data, sizeof f);
        Mamba2Config r;
        memset(&r, 0, sizeof r);
        r.d_model = f[0]; r.n_layer = f[1]; r.d_state = f[2]; r.headdim = f[3]; r.expand = f[4]; r.ngroups = f[5];
        r.d_conv = f[6]; r.vocab_size = f[7]; r.chunk_size = f[8];
        if (config_check(&r) == NULL) config_derive(&r);
    }
#else
#error "define one of FUZZ_SHARD FUZZ_CHECKPOINT FUZZ_SAFETENSORS FUZZ_JSON FUZZ_HFCONFIG FUZZ_TOKENIZER FUZZ_BPE FUZZ_CONFIG"
#endif
    if (lo >= 0) close_fds_from(lo);
    return 0;
}
