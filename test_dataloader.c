/*
 * test_dataloader.c: tests llmc/dataloader.h and llmc/tokenizer.h on tiny shards it writes itself.
 *   cc -O2 -std=c11 -Wall -o test_dataloader test_dataloader.c -lm && ./test_dataloader
 * Each check prints PASS/FAIL; the last line is "N passed, N failed"; the exit status is nonzero on failure.
 * Error paths run in a fork()ed child: the check wants a nonzero exit and a message naming the problem.
 * The reference for every batch is computed independently from how the shards were written.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llmc/dataloader.h"
#include "llmc/tokenizer.h"

static int passed = 0, failed = 0;
static char dir[256];

static void check(int ok, const char* name) {
    printf("%s  %s\n", ok ? "PASS" : "FAIL", name);
    if (ok) passed++; else failed++;
}

static const char* path_in_dir(const char* name) {
    static char buf[8][512];
    static int next = 0;
    char* p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

/* shard with n tokens, token i = base + i; header fields overridable; extra_bytes < 0 truncates */
static void write_shard_full(const char* name, int version, size_t n, uint32_t base, int magic, int count,
                             long extra_bytes) {
    FILE* fp = fopen(path_in_dir(name), "wb");
    if (fp == NULL) { perror("write shard"); exit(2); }
    int32_t header[256] = {0};
    header[0] = magic;
    header[1] = version;
    header[2] = count;
    fwrite(header, 4, 256, fp);
    int size = version == 1 ? 2 : 4;
    long bytes = (long)(n * (size_t)size) + extra_bytes;
    for (long b = 0; b < bytes; b++) {
        size_t i = (size_t)b / (size_t)size;
        uint32_t v = base + (uint32_t)i;
        if (version == 1) v &= 0xFFFF;
        fputc((int)((v >> (8 * (b % size))) & 0xFF), fp); /* little-endian */
    }
    fclose(fp);
}

static void write_shard(const char* name, int version, size_t n, uint32_t base) {
    write_shard_full(name, version, n, base, 20240520, (int)n, 0);
}

/* runs fn(arg) in a child with stderr captured; checks its exit (nonzero when should_fail, else zero) and
 * that stderr holds every needle */
static void expect_exit(const char* name, void (*fn)(const void*), const void* arg, int should_fail,
                        const char* needle1, const char* needle2) {
    const char* errpath = path_in_dir("stderr.txt");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        if (freopen(errpath, "w", stderr) == NULL) _exit(99);
        fn(arg);
        _exit(0); /* fn returned: the error was not detected */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    char msg[2048] = {0};
    FILE* fp = fopen(errpath, "r");
    if (fp) { size_t got = fread(msg, 1, sizeof(msg) - 1, fp); msg[got] = '\0'; fclose(fp); }
    int exit_ok = WIFEXITED(status) && WEXITSTATUS(status) != 99 &&
                  (should_fail ? WEXITSTATUS(status) != 0 : WEXITSTATUS(status) == 0);
    int has = (needle1 == NULL || strstr(msg, needle1) != NULL) && (needle2 == NULL || strstr(msg, needle2) != NULL);
    char label[512];
    snprintf(label, sizeof(label), "%s (exit %d, message: %.*s)", name, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
             (int)strcspn(msg, "\n"), msg);
    check(exit_ok && has, label);
}

static void expect_failure(const char* name, void (*fn)(const void*), const void* arg, const char* needle1,
                           const char* needle2) {
    expect_exit(name, fn, arg, 1, needle1, needle2);
}

/* ---------------------------------------------------------------------------------------------------- */
/* error paths */

typedef struct { const char* pattern; size_t B, T; int vocab; int batches; } InitArgs;

static void run_init(const void* a) {
    const InitArgs* x = (const InitArgs*)a;
    DataLoader l;
    dataloader_init(&l, path_in_dir(x->pattern), x->B, x->T, 0, 1, 1, 1, x->vocab);
    for (int i = 0; i < x->batches; i++) dataloader_next_batch(&l);
    dataloader_free(&l);
}

static void test_errors(void) {
    InitArgs a = {"nothing_*.bin", 2, 4, 0, 0};
    expect_failure("no file matches the pattern", run_init, &a, "no file matches", "nothing_");

    write_shard_full("magic_000.bin", 1, 100, 0, 12345, 100, 0);
    InitArgs b = {"magic_*.bin", 2, 4, 0, 0};
    expect_failure("wrong magic", run_init, &b, "magic_000.bin", "bad magic 12345");

    write_shard_full("version_000.bin", 3, 100, 0, 20240520, 100, 0);
    InitArgs c = {"version_*.bin", 2, 4, 0, 0};
    expect_failure("unknown version", run_init, &c, "version_000.bin", "unknown version 3");

    write_shard_full("trunc_000.bin", 1, 100, 0, 20240520, 100, -6);
    InitArgs d = {"trunc_*.bin", 2, 4, 0, 0};
    expect_failure("truncated shard", run_init, &d, "trunc_000.bin: truncated", "header says 100 tokens");

    write_shard_full("long_000.bin", 2, 100, 0, 20240520, 100, 8);
    InitArgs e = {"long_*.bin", 2, 4, 0, 0};
    expect_failure("shard longer than its header", run_init, &e, "long_000.bin", "longer than its header");

    FILE* fp = fopen(path_in_dir("tiny_000.bin"), "wb");
    fputs("short", fp);
    fclose(fp);
    InitArgs f = {"tiny_*.bin", 2, 4, 0, 0};
    expect_failure("file smaller than the header", run_init, &f, "tiny_000.bin", "smaller than the 1024-byte header");

    write_shard("small_000.bin", 1, 8, 0); /* B*T+1 = 9 > 8 */
    InitArgs g = {"small_*.bin", 2, 4, 0, 0};
    expect_failure("shard too small for one sample", run_init, &g, "small_000.bin", "too small for one sample");

    write_shard("vocab_000.bin", 1, 100, 0); /* tokens 0..99, vocab 50: first bad id 50 at offset 50 */
    InitArgs h = {"vocab_*.bin", 5, 8, 50, 3};
    expect_failure("token id >= vocab_size names shard and offset", run_init, &h, "vocab_000.bin",
                   "token id 50 at token offset 50");
    InitArgs h0 = {"vocab_*.bin", 5, 8, 50, 0};
    expect_failure("token ids are checked when the shard is opened (no batch read)", run_init, &h0, "vocab_000.bin",
                   "token id 50 at token offset 50");

    char sub[600];
    snprintf(sub, sizeof(sub), "%s", path_in_dir("adir_000.bin"));
    mkdir(sub, 0755);
    InitArgs dd = {"adir_*.bin", 2, 4, 0, 0};
    expect_failure("a folder given as a shard names the path", run_init, &dd, "adir_000.bin", "not a regular file");
    rmdir(sub);

    InitArgs big = {"vocab_*.bin", 1u << 21, 1u << 20, 0, 0};
    expect_failure("B*T beyond 2^28 tokens is refused before any allocation", run_init, &big, "B*T", "2^28");
}

/* ---------------------------------------------------------------------------------------------------- */
/* coverage, order, state */

/* the coverage shards: uint32 tokens, token i of shard s = s*1000000 + i, so a batch names its sample */
static const size_t cov_tokens[4] = {41, 97, 17, 66};
static size_t cov_samples(size_t BT) {
    size_t S = 0;
    for (int s = 0; s < 4; s++) S += (cov_tokens[s] - 1) / BT;
    return S;
}
/* global sample id (shard-major) of the current batch, or (size_t)-1 when its contents are not a sample */
static size_t batch_sample_id(const DataLoader* l) {
    size_t BT = l->B * l->T;
    int s = l->inputs[0] / 1000000;
    size_t off = (size_t)(l->inputs[0] % 1000000);
    if (s < 0 || s >= 4 || off % BT != 0) return (size_t)-1;
    for (size_t i = 0; i < BT; i++) { /* contiguous, and targets are inputs shifted by one */
        if (l->inputs[i] != l->inputs[0] + (int)i || l->targets[i] != l->inputs[0] + (int)i + 1) return (size_t)-1;
    }
    size_t id = 0;
    for (int k = 0; k < s; k++) id += (cov_tokens[k] - 1) / BT;
    return id + off / BT;
}

static void test_rank_coverage(int P, int shuffle) {
    size_t B = 2, T = 4, S = cov_samples(B * T);
    int* seen = (int*)calloc(S, sizeof(int));
    int ok_ids = 1;
    size_t sum_batches = 0;
    for (int epoch = 0; epoch < 2; epoch++) {
        memset(seen, 0, S * sizeof(int));
        for (int r = 0; r < P; r++) {
            DataLoader l;
            dataloader_init(&l, path_in_dir("cov_*.bin"), B, T, r, P, shuffle, 42, 0);
            size_t nb = dataloader_num_batches(&l);
            if (epoch == 0) sum_batches += nb;
            for (int e = 0; e <= epoch; e++) {
                for (size_t i = 0; i < nb; i++) {
                    dataloader_next_batch(&l);
                    size_t id = batch_sample_id(&l);
                    if (id == (size_t)-1) { ok_ids = 0; continue; }
                    if (e == epoch) seen[id]++;
                }
            }
            dataloader_free(&l);
        }
        int once = 1;
        for (size_t i = 0; i < S; i++) once &= seen[i] == 1;
        char name[160];
        snprintf(name, sizeof(name), "%d rank(s), shuffle %d, epoch %d: every one of %zu samples read exactly once",
                 P, shuffle, epoch, S);
        check(once && ok_ids, name);
    }
    char name[160];
    snprintf(name, sizeof(name), "%d rank(s): batches per epoch over ranks sum to %zu samples (got %zu)", P, S,
             sum_batches);
    check(sum_batches == S, name);
    free(seen);
}

static void record(DataLoader* l, size_t n, size_t* ids) {
    for (size_t i = 0; i < n; i++) { dataloader_next_batch(l); ids[i] = batch_sample_id(l); }
}

static void test_order_and_state(void) {
    size_t B = 2, T = 4, S = cov_samples(B * T);
    size_t n = 3 * S; /* three epochs */
    size_t* a = (size_t*)malloc(n * sizeof(size_t));
    size_t* b = (size_t*)malloc(n * sizeof(size_t));
    size_t* c = (size_t*)malloc(n * sizeof(size_t));
    DataLoader l1, l2, l3;
    dataloader_init(&l1, path_in_dir("cov_*.bin"), B, T, 0, 1, 1, 7, 0);
    dataloader_init(&l2, path_in_dir("cov_*.bin"), B, T, 0, 1, 1, 7, 0);
    dataloader_init(&l3, path_in_dir("cov_*.bin"), B, T, 0, 1, 1, 8, 0);
    record(&l1, n, a);
    record(&l2, n, b);
    record(&l3, n, c);
    check(memcmp(a, b, n * sizeof(size_t)) == 0, "same seed gives the same batches over 3 epochs");
    check(memcmp(a, c, S * sizeof(size_t)) != 0, "another seed gives another order");
    check(memcmp(a, a + S, S * sizeof(size_t)) != 0 && memcmp(a + S, a + 2 * S, S * sizeof(size_t)) != 0,
          "the order differs from epoch to epoch");
    int sorted = 1;
    for (size_t i = 1; i < S; i++) sorted &= a[i] == a[i - 1] + 1;
    check(!sorted, "shuffled epoch 0 is not the file order");

    /* pinned: the order for seed 7 must be the same on every machine and compiler, and stay the same
     * across versions of this header (a resumed or reproduced run depends on it) */
    const size_t pinned[27] = {24, 26, 22, 20, 21, 19, 23, 25, 13, 12, 11, 9, 7, 6, 10, 5, 14, 15, 16, 8, 0, 1, 3, 4,
                               2, 18, 17};
    check(S == 27 && memcmp(a, pinned, sizeof(pinned)) == 0, "seed 7 epoch 0 order equals the pinned order");

    /* save at several points (including right at an epoch boundary), restore into a fresh loader */
    size_t points[4] = {0, 5, S, S + 3};
    for (int p = 0; p < 4; p++) {
        DataLoader x, y;
        dataloader_init(&x, path_in_dir("cov_*.bin"), B, T, 0, 1, 1, 7, 0);
        for (size_t i = 0; i < points[p]; i++) dataloader_next_batch(&x);
        DataLoaderState st;
        dataloader_save_state(&x, &st);
        size_t m = S + 2;
        size_t* want = (size_t*)malloc(m * sizeof(size_t));
        size_t* got = (size_t*)malloc(m * sizeof(size_t));
        record(&x, m, want);
        dataloader_init(&y, path_in_dir("cov_*.bin"), B, T, 0, 1, 1, 999 /* overridden by the state */, 0);
        dataloader_next_batch(&y); /* a different position, to be overwritten */
        dataloader_load_state(&y, &st);
        record(&y, m, got);
        char name[128];
        snprintf(name, sizeof(name), "state saved after %zu batches restores the identical next %zu batches",
                 points[p], m);
        check(memcmp(want, got, m * sizeof(size_t)) == 0 && memcmp(want, a + points[p], m * sizeof(size_t)) == 0,
              name);
        free(want);
        free(got);
        dataloader_free(&x);
        dataloader_free(&y);
    }

    /* rank 1 of 3 restores too */
    {
        DataLoader x, y;
        dataloader_init(&x, path_in_dir("cov_*.bin"), B, T, 1, 3, 1, 7, 0);
        for (int i = 0; i < 4; i++) dataloader_next_batch(&x);
        DataLoaderState st;
        dataloader_save_state(&x, &st);
        size_t want[8], got[8];
        record(&x, 8, want);
        dataloader_init(&y, path_in_dir("cov_*.bin"), B, T, 1, 3, 1, 7, 0);
        dataloader_load_state(&y, &st);
        record(&y, 8, got);
        check(memcmp(want, got, sizeof(want)) == 0, "rank 1 of 3: restored state gives the identical batches");
        dataloader_free(&x);
        dataloader_free(&y);
    }

    /* a 2-process run resumed on 1 and on 3 processes: rank 0's state, and the ranks together continue with
     * exactly the global positions the 2 ranks had not read yet */
    {
        DataLoader x;
        dataloader_init(&x, path_in_dir("cov_*.bin"), B, T, 0, 2, 1, 7, 0);
        for (int i = 0; i < 5; i++) dataloader_next_batch(&x); /* both ranks read 5: positions 0..9 */
        DataLoaderState st;
        dataloader_save_state(&x, &st);
        for (int M = 1; M <= 3; M += 2) {
            size_t got[12];
            int n = 0;
            for (int r = 0; r < M; r++) {
                DataLoader y;
                dataloader_init(&y, path_in_dir("cov_*.bin"), B, T, r, M, 1, 7, 0);
                dataloader_load_state(&y, &st);
                size_t ids[4], per_rank = M == 1 ? 4 : 1; /* one process: 4 batches; 3 processes: 1 each */
                record(&y, per_rank, ids);
                for (size_t k = 0; k < per_rank; k++) got[n++] = ids[k];
                dataloader_free(&y);
            }
            /* the union must be positions 10, 11, 12(, 13) of the epoch order a[] */
            int ok = 1;
            for (int k = 0; k < n; k++) ok &= got[k] == a[10 + k];
            char name[128];
            snprintf(name, sizeof(name), "2-process state resumed on %d process(es) continues at global position 10",
                     M);
            check(ok, name);
        }
        dataloader_free(&x);
    }

    /* reset returns to the start of epoch 0 */
    dataloader_reset(&l1);
    record(&l1, S, b);
    check(memcmp(a, b, S * sizeof(size_t)) == 0, "dataloader_reset replays epoch 0");

    /* without shuffling the samples come in file order, every epoch */
    DataLoader u;
    dataloader_init(&u, path_in_dir("cov_*.bin"), B, T, 0, 1, 0, 7, 0);
    record(&u, 2 * S, b);
    int in_order = 1;
    for (size_t i = 0; i < 2 * S; i++) in_order &= b[i] == i % S;
    check(in_order, "should_shuffle=0 reads the samples in file order, epoch after epoch");
    dataloader_free(&u);

    check(l1.num_tokens == 41 + 97 + 17 + 66, "num_tokens is the sum over the matched shards");
    dataloader_free(&l1);
    dataloader_free(&l2);
    dataloader_free(&l3);
    free(a);
    free(b);
    free(c);
}

typedef struct { size_t B; } StateArgs;
static void run_bad_state(const void* arg) {
    const StateArgs* s = (const StateArgs*)arg;
    DataLoader x, y;
    dataloader_init(&x, path_in_dir("cov_*.bin"), 2, 4, 0, 1, 1, 7, 0);
    DataLoaderState st;
    dataloader_save_state(&x, &st);
    dataloader_init(&y, path_in_dir("cov_*.bin"), s->B, 4, 0, 1, 1, 7, 0);
    dataloader_load_state(&y, &st);
}

/* uint16 and uint32 shards: the batch equals the tokens as written, in a mixed-version set */
static void test_versions(void) {
    write_shard("mix_000.bin", 1, 50, 65500);  /* uint16: values wrap past 65535 to 0 */
    write_shard("mix_001.bin", 2, 50, 70000);  /* uint32: values above 65535 */
    DataLoader l;
    dataloader_init(&l, path_in_dir("mix_*.bin"), 3, 4, 0, 1, 0, 0, 0);
    int ok16 = 1, ok32 = 1;
    size_t per = (50 - 1) / 12;
    for (size_t k = 0; k < 2 * per; k++) {
        dataloader_next_batch(&l);
        int shard = (int)(k / per);
        size_t off = (k % per) * 12;
        for (size_t i = 0; i < 12; i++) {
            uint32_t in = shard == 0 ? (65500 + (uint32_t)(off + i)) & 0xFFFF : 70000 + (uint32_t)(off + i);
            uint32_t tg = shard == 0 ? (65500 + (uint32_t)(off + i + 1)) & 0xFFFF : 70000 + (uint32_t)(off + i + 1);
            int ok = l.inputs[i] == (int)in && l.targets[i] == (int)tg;
            if (shard == 0) ok16 &= ok; else ok32 &= ok;
        }
    }
    check(ok16, "uint16 (version 1) shard: batches equal the written tokens, ids up to 65535");
    check(ok32, "uint32 (version 2) shard: batches equal the written tokens, ids above 65535");
    dataloader_free(&l);
    InitArgs below = {"mix_*.bin", 3, 4, 70050, (int)(3 * per)}; /* every id is < 70050 */
    expect_exit("vocab_size check passes when every id is below it (3 epochs read)", run_init, &below, 0, NULL, NULL);
    /* the samples of mix_001 end at token 48 (token 49 is the unused tail), so 70048 is the largest id read */
    InitArgs at = {"mix_*.bin", 3, 4, 70048, (int)(3 * per)};
    expect_exit("vocab_size one too small catches the largest id read", run_init, &at, 1, "mix_001.bin",
                "token id 70048 at token offset 48");
}

/* ---------------------------------------------------------------------------------------------------- */
/* tokenizer */

static void write_tokenizer(const char* name, uint32_t magic, uint32_t vocab, int truncate) {
    const char* pieces[4] = {"a", "hello", "\n", "<|endoftext|>"};
    FILE* fp = fopen(path_in_dir(name), "wb");
    uint32_t header[256] = {0};
    header[0] = magic;
    header[1] = 2;
    header[2] = vocab;
    header[3] = vocab - 1 < 3 ? vocab - 1 : 3;
    fwrite(header, 4, 256, fp);
    for (int i = 0; i < 4 - truncate; i++) {
        unsigned char len = (unsigned char)strlen(pieces[i]);
        fputc(len, fp);
        fwrite(pieces[i], 1, len, fp);
    }
    fclose(fp);
}

static void run_tokenizer(const void* name) {
    Tokenizer t;
    tokenizer_init(&t, path_in_dir((const char*)name));
    tokenizer_free(&t);
}

static void test_tokenizer(void) {
    write_tokenizer("tok_ok.bin", 20240328, 4, 0);
    Tokenizer t;
    tokenizer_init(&t, path_in_dir("tok_ok.bin"));
    check(t.init_ok && t.vocab_size == 4 && t.eot_token == 3, "tokenizer: header read (vocab 4, eot 3)");
    check(tokenizer_decode(&t, 1) && strcmp(tokenizer_decode(&t, 1), "hello") == 0 && t.token_len[1] == 5 &&
              strcmp(tokenizer_decode(&t, 3), "<|endoftext|>") == 0,
          "tokenizer: decode gives the written bytes");
    check(tokenizer_decode(&t, 4) == NULL && tokenizer_decode(&t, 0xFFFFFFFFu) == NULL,
          "tokenizer: out-of-range ids decode to NULL");
    tokenizer_free(&t);

    Tokenizer m;
    tokenizer_init(&m, path_in_dir("no_such_tokenizer.bin"));
    check(m.init_ok == 0 && tokenizer_decode(&m, 0) == NULL, "tokenizer: a missing file gives init_ok = 0");
    tokenizer_free(&m);

    write_tokenizer("tok_magic.bin", 1234, 4, 0);
    expect_failure("tokenizer: bad magic is an error", run_tokenizer, "tok_magic.bin", "tok_magic.bin", "bad magic");
    write_tokenizer("tok_trunc.bin", 20240328, 4, 1);
    expect_failure("tokenizer: truncated file is an error", run_tokenizer, "tok_trunc.bin", "tok_trunc.bin",
                   "truncated while reading the length of token 3");
    write_tokenizer("tok_long.bin", 20240328, 3, 0);
    expect_failure("tokenizer: trailing bytes are an error", run_tokenizer, "tok_long.bin", "tok_long.bin",
                   "bytes left");
}

/* ---------------------------------------------------------------------------------------------------- */
/* document boundaries and masked targets (doc/packing.md) */

/* a mask file for a shard of n tokens: byte i = mask(i); header fields overridable */
static void write_mask(const char* name, size_t n, int magic, int count, int (*mask)(size_t), long extra_bytes) {
    FILE* fp = fopen(path_in_dir(name), "wb");
    if (fp == NULL) { perror("write mask"); exit(2); }
    int32_t header[256] = {0};
    header[0] = magic;
    header[1] = 1;
    header[2] = count;
    fwrite(header, 4, 256, fp);
    for (long i = 0; i < (long)n + extra_bytes; i++) fputc(mask((size_t)i), fp);
    fclose(fp);
}
static int mask_every_third(size_t i) { return i % 3 != 0; }
static int mask_bad_byte(size_t i) { return i == 20 ? 7 : 1; }

static void run_masks(const void* a) {
    DataLoader l;
    dataloader_init(&l, path_in_dir((const char*)a), 2, 4, 0, 1, 0, 1, 0);
    dataloader_use_masks(&l);
    dataloader_next_batch(&l);
    dataloader_free(&l);
}

static void test_docs_and_masks(void) {
    /* the document index: a separator opens the document it precedes; position 0 is always document 0 */
    int inputs[12] = {7, 1, 2, 7, 3, 7, 7, 4, /* row 2: */ 5, 7, 6, 6};
    int seq[12], want[12] = {0, 0, 0, 1, 0, 1, 2, 2, 0, 1, 1, 1};
    dataloader_doc_index(seq, inputs, 3, 4, 7);
    int ok = 1;
    for (int i = 0; i < 12; i++) ok &= seq[i] == want[i];
    check(ok, "doc index: a new document at each separator but a row's first (7 1 2 7 | 3 7 7 4 | 5 7 6 6: 0001 0122 0111)");

    /* masks: token i of the shard is base + i; mask byte 0 on every third token */
    write_shard("mask_000.bin", 1, 41, 100);
    write_mask("mask_000.bin.mask", 41, DATALOADER_MASK_MAGIC, 41, mask_every_third, 0);
    DataLoader l;
    dataloader_init(&l, path_in_dir("mask_000.bin"), 2, 4, 0, 1, 0, 1, 0);
    dataloader_use_masks(&l);
    int all_ok = 1, masked = 0;
    for (int k = 0; k < 6; k++) { /* over an epoch boundary */
        dataloader_next_batch(&l);
        for (int i = 0; i < 8; i++) {
            int tok = l.inputs[i] + 1; /* the target's token id (base + index, consecutive) */
            size_t idx = (size_t)(tok - 100);
            int want_t = idx % 3 == 0 ? TARGET_NO_LOSS : tok;
            all_ok &= l.targets[i] == want_t;
            masked += l.targets[i] == TARGET_NO_LOSS;
        }
    }
    dataloader_free(&l);
    check(all_ok && masked > 0, "masks: a target whose token has mask byte 0 is -1, every other target unchanged");
    /* the same shard without masks on: nothing is masked (the default) */
    dataloader_init(&l, path_in_dir("mask_000.bin"), 2, 4, 0, 1, 0, 1, 0);
    dataloader_next_batch(&l);
    int none = 1;
    for (int i = 0; i < 8; i++) none &= l.targets[i] == l.inputs[i] + 1;
    dataloader_free(&l);
    check(none, "masks off (default): the mask file is ignored, targets are the next tokens");

    write_shard("nomask_000.bin", 1, 41, 100);
    expect_failure("masks on, a shard without its .mask file", run_masks, "nomask_000.bin", "no mask file",
                   "nomask_000.bin.mask");
    write_shard("mcount_000.bin", 1, 41, 100);
    write_mask("mcount_000.bin.mask", 41, DATALOADER_MASK_MAGIC, 40, mask_every_third, 0);
    expect_failure("mask file with another token count", run_masks, "mcount_000.bin", "token count", "41 tokens");
    write_shard("mmagic_000.bin", 1, 41, 100);
    write_mask("mmagic_000.bin.mask", 41, 20240520, 41, mask_every_third, 0);
    expect_failure("mask file with a bad magic", run_masks, "mmagic_000.bin", "bad magic", NULL);
    write_shard("msize_000.bin", 1, 41, 100);
    write_mask("msize_000.bin.mask", 41, DATALOADER_MASK_MAGIC, 41, mask_every_third, -3);
    expect_failure("truncated mask file", run_masks, "msize_000.bin", "one byte per token", NULL);
    write_shard("mbyte_000.bin", 1, 41, 100);
    write_mask("mbyte_000.bin.mask", 41, DATALOADER_MASK_MAGIC, 41, mask_bad_byte, 0);
    expect_failure("mask byte other than 0/1", run_masks, "mbyte_000.bin", "other than 0 or 1", "byte 20 of the mask is 7");
}


/* ---------------------------------------------------------------------------------------------------- */
/* streams (carried state): row b continues row b of the previous batch, resets at a shard's end */

/* one epoch of rank r of P in streams mode over the coverage shards: every row is T+1 consecutive tokens of one
   shard; row b continues its own previous row (first input + T) except where row_reset says it starts afresh, which
   is exactly at the first batch of a shard, and there it starts at region (r*B + b) * floor(n / (P*B)) */
static void test_streams_rank(size_t B, size_t T, int r, int P, int shuffle, int* covered_regions) {
    DataLoader l;
    dataloader_init(&l, path_in_dir("cov_*.bin"), B, T, r, P, shuffle, 42, 0);
    dataloader_use_streams(&l);
    size_t want_batches = 0;
    for (int s = 0; s < 4; s++) want_batches += (cov_tokens[s] / (B * (size_t)P) - 1) / T;
    size_t nb = dataloader_num_batches(&l);
    int contiguous = 1, continues = 1, resets_right = 1, starts_right = 1, one_reset_per_shard = 1;
    int* prev = (int*)calloc(B, sizeof(int));
    int prev_shard = -1, shards_seen = 0;
    for (size_t k = 0; k < nb; k++) {
        dataloader_next_batch(&l);
        int shard = l.inputs[0] / 1000000;
        int new_shard = shard != prev_shard;
        shards_seen += new_shard;
        for (size_t b = 0; b < B; b++) {
            const int* in = l.inputs + b * T;
            const int* tg = l.targets + b * T;
            for (size_t i = 0; i < T; i++) contiguous &= in[i] == in[0] + (int)i && tg[i] == in[0] + (int)i + 1;
            contiguous &= in[0] / 1000000 == shard;
            resets_right &= l.row_reset[b] == new_shard;
            if (new_shard) {
                size_t region = cov_tokens[shard] / (B * (size_t)P);
                starts_right &= (size_t)(in[0] % 1000000) == ((size_t)r * B + b) * region;
                if (covered_regions) covered_regions[shard * 16 + r * (int)B + (int)b]++;
            } else {
                continues &= in[0] == prev[b] + (int)T;
            }
            /* the row's last target stays inside its region */
            size_t region = cov_tokens[shard] / (B * (size_t)P);
            contiguous &= (size_t)(tg[T - 1] % 1000000) < ((size_t)r * B + b + 1) * region;
            prev[b] = in[0];
        }
        prev_shard = shard;
    }
    one_reset_per_shard = shards_seen == 4;
    char name[200];
    snprintf(name, sizeof(name), "streams, rank %d of %d, shuffle %d, B=%zu T=%zu: %zu batches an epoch (want %zu), rows "
             "contiguous %d, continue %d, reset exactly at a shard's start %d, start at their region %d, 4 shards %d",
             r, P, shuffle, B, T, nb, want_batches, contiguous, continues, resets_right, starts_right,
             one_reset_per_shard);
    check(nb == want_batches && contiguous && continues && resets_right && starts_right && one_reset_per_shard, name);
    free(prev);
    dataloader_free(&l);
}

static void run_streams_small(const void* arg) {
    (void)arg;
    DataLoader l;
    dataloader_init(&l, path_in_dir("cov_*.bin"), 2, 8, 0, 1, 0, 1, 0); /* cov_002: 17 tokens, 8 a stream < 9 */
    dataloader_use_streams(&l);
}

static void run_streams_resume_without(const void* arg) {
    (void)arg;
    DataLoader x, y;
    dataloader_init(&x, path_in_dir("cov_*.bin"), 2, 3, 0, 1, 1, 7, 0);
    dataloader_use_streams(&x);
    DataLoaderState st;
    dataloader_save_state(&x, &st);
    dataloader_init(&y, path_in_dir("cov_*.bin"), 2, 3, 0, 1, 1, 7, 0);
    dataloader_load_state(&y, &st);
}

static void test_streams(void) {
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        for (int P = 1; P <= 2; P++) {
            int covered[4 * 16] = {0};
            for (int r = 0; r < P; r++) test_streams_rank(2, 3, r, P, shuffle, covered);
            int each_once = 1;
            for (int s = 0; s < 4; s++)
                for (int i = 0; i < 2 * P; i++) each_once &= covered[s * 16 + i] == 1;
            char name[160];
            snprintf(name, sizeof(name), "streams, %d rank(s), shuffle %d: the %d regions of every shard are each read "
                     "by exactly one (rank, row)", P, shuffle, 2 * P);
            check(each_once, name);
        }
    }
    test_streams_rank(3, 2, 0, 1, 1, NULL);
    /* two epochs: the second starts afresh at its first shard */
    {
        DataLoader l;
        dataloader_init(&l, path_in_dir("cov_*.bin"), 2, 3, 0, 1, 1, 42, 0);
        dataloader_use_streams(&l);
        size_t nb = dataloader_num_batches(&l);
        for (size_t k = 0; k < nb; k++) dataloader_next_batch(&l);
        dataloader_next_batch(&l);
        int ok = l.row_reset[0] == 1 && l.row_reset[1] == 1 && l.epoch == 1;
        dataloader_free(&l);
        check(ok, "streams: the first batch of the next epoch resets every row");
    }
    /* save / load: the batch after a load is the batch after the save, reset flags included */
    int state_ok = 1;
    for (int at = 0; at < 12; at++) {
        DataLoader x, y;
        dataloader_init(&x, path_in_dir("cov_*.bin"), 2, 3, 0, 1, 1, 7, 0);
        dataloader_use_streams(&x);
        for (int i = 0; i < at; i++) dataloader_next_batch(&x);
        DataLoaderState st;
        dataloader_save_state(&x, &st);
        dataloader_init(&y, path_in_dir("cov_*.bin"), 2, 3, 0, 1, 1, 999, 0);
        dataloader_use_streams(&y);
        dataloader_load_state(&y, &st);
        for (int i = 0; i < 6; i++) {
            dataloader_next_batch(&x);
            dataloader_next_batch(&y);
            state_ok &= memcmp(x.inputs, y.inputs, 6 * sizeof(int)) == 0 &&
                        memcmp(x.targets, y.targets, 6 * sizeof(int)) == 0 &&
                        memcmp(x.row_reset, y.row_reset, 2 * sizeof(int)) == 0;
        }
        dataloader_free(&x);
        dataloader_free(&y);
    }
    check(state_ok, "streams: save / load at 12 positions continues with the same batches and reset flags");
    expect_failure("streams: a shard too small for B*GPUs streams of T+1 tokens is refused", run_streams_small, NULL,
                   "cov_002.bin", "T+1 = 9");
    expect_failure("streams: a state saved with streams is refused by a loader without", run_streams_resume_without,
                   NULL, "with carried state", "-C 1");
}

static void cleanup(void) {
    const char* names[] = {"magic_000.bin", "version_000.bin", "trunc_000.bin", "long_000.bin", "tiny_000.bin",
                           "small_000.bin", "vocab_000.bin", "cov_000.bin", "cov_001.bin", "cov_002.bin",
                           "cov_003.bin", "mix_000.bin", "mix_001.bin", "tok_ok.bin", "tok_magic.bin",
                           "tok_trunc.bin", "tok_long.bin", "stderr.txt", "mask_000.bin", "mask_000.bin.mask",
                           "nomask_000.bin", "mcount_000.bin", "mcount_000.bin.mask", "mmagic_000.bin",
                           "mmagic_000.bin.mask", "msize_000.bin", "msize_000.bin.mask", "mbyte_000.bin",
                           "mbyte_000.bin.mask"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) remove(path_in_dir(names[i]));
    rmdir(dir);
}

int main(void) {
    snprintf(dir, sizeof(dir), "/tmp/test_dataloader_XXXXXX");
    if (mkdtemp(dir) == NULL) { perror("mkdtemp"); return 2; }
    for (int s = 0; s < 4; s++) {
        char name[32];
        snprintf(name, sizeof(name), "cov_%03d.bin", s);
        write_shard(name, 2, cov_tokens[s], (uint32_t)s * 1000000u);
    }
    test_errors();
    for (int P = 1; P <= 3; P++) {
        test_rank_coverage(P, 1);
        test_rank_coverage(P, 0);
    }
    test_order_and_state();
    StateArgs sb = {3};
    expect_failure("loading a state saved with another B is an error", run_bad_state, &sb, "B=2", "B=3");
    test_versions();
    test_tokenizer();
    test_docs_and_masks();
    test_streams();
    cleanup();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
