/*
 * dataloader.h: reads the token shards written by data/prepare.py and serves (inputs, targets) batches.
 * Header-only, C11 (also compiles as C++ for the CUDA trainer). POSIX glob() finds the shards.
 *
 * Shard file: 256 int32 header {20240520 magic, version, token count, 0...}, then the tokens:
 * version 1 = uint16 tokens, version 2 = uint32 tokens (vocab > 65536). Little-endian, like llm.c.
 *
 * Samples. A sample is B*T+1 contiguous tokens of one shard: a shard of n tokens holds
 * (n-1) / (B*T) samples, at token offsets 0, B*T, 2*B*T, ... (neighbouring samples share one boundary
 * token, the way llm.c reads batches). A batch is one sample: inputs = tokens[0 .. B*T-1],
 * targets = tokens[1 .. B*T], laid out as B rows of T. Contiguous rows make each batch one fread.
 *
 * Epoch order. Every epoch lays all S samples of all shards in one global order: the shards in a
 * permuted order, and within each shard its samples in a permuted order (identity orders when
 * should_shuffle = 0). The permutations are drawn from a small PRNG seeded by (seed, epoch) and
 * (seed, epoch, shard), so the same seed gives the same order on every machine, and every epoch differs.
 *
 * Ranks. Rank r takes the global positions r, r + P, r + 2P, ... (P = num_processes): over one epoch the
 * ranks together read every sample exactly once, with no overlap, and their batch counts differ by at
 * most one. All ranks walk the shards in the same order, one open file at a time.
 *
 * Position. (epoch, next global position) is the whole state: the permutations are recomputed from the
 * seed, so dataloader_save_state / dataloader_load_state restore the exact next batch.
 *
 * Masked targets (optional, dataloader_use_masks; doc/packing.md). A shard X.bin may have a companion X.bin.mask:
 * 256 int32 header {20240607 magic, version 1, token count, 0...}, then one byte per token of X.bin: 1 = the token
 * counts as a target, 0 = no loss. With masks on, the target of an input whose next token has mask 0 is
 * TARGET_NO_LOSS (-1). The shard itself is unchanged, so llm.c's loader still reads it (and ignores the mask, which
 * its *.bin glob does not match). Document boundaries: dataloader_doc_index below.
 *
 * Streams (optional, dataloader_use_streams; the trainers' -C 1, carried state; doc/packing.md section 6). Row b of
 * every batch continues row b of the batch before: each shard is cut into P*B contiguous regions of
 * R = floor(n / (P*B)) tokens, region r = rank*B + b is stream b of rank `rank`, and batch k of the shard gives row b
 * the tokens region_r[k*T .. k*T+T] (T inputs, T targets). A shard gives K = (R-1) / T batches; then every stream moves
 * on to the next shard (epoch order of the shards as above, the batches of one shard always in order) and every row
 * starts afresh: row_reset[b] = 1 on the first batch of a shard. The ranks read the same batch index at the same time,
 * each its own regions, so they never overlap.
 */
#ifndef MAMBA2_DATALOADER_H
#define MAMBA2_DATALOADER_H

#include <errno.h>
#include <glob.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include "utils.h"

#define DATALOADER_MAGIC 20240520
#define DATALOADER_HEADER_BYTES (256 * 4)
#define DATALOADER_STATE_TAG 0x4d32444c53000000ull /* "M2DLS", low byte: should_shuffle */
#define TARGET_NO_LOSS (-1) /* a target that does not count in the loss (masked; doc/packing.md) */
#define DATALOADER_MASK_MAGIC 20240607

typedef struct {
    char* path;
    int token_size;     /* bytes per token: 2 (version 1) or 4 (version 2) */
    size_t num_tokens;
    size_t num_samples; /* (num_tokens - 1) / (B*T); streams: the batches of the shard, (R-1) / T */
    size_t region;      /* streams: tokens of each of the P*B regions, num_tokens / (P*B) */
} DataShard;

typedef struct {
    /* configuration */
    int process_rank, num_processes, should_shuffle, vocab_size;
    unsigned long long seed;
    /* the shards, in glob (sorted) order */
    DataShard* shards;
    int num_shards;
    size_t total_samples;       /* samples per epoch, all ranks together */
    /* position: the whole resumable state */
    unsigned long long epoch;
    size_t next_global;         /* global position (in this epoch's order) of this rank's next batch */
    /* this epoch's order, recomputed from (seed, epoch) */
    int* shard_order;           /* shard_order[k] = index of the k-th shard read this epoch */
    size_t* order_start;        /* order_start[k] = global position of the first sample of shard_order[k] */
    int perm_pos;               /* k whose sample permutation sample_perm holds, -1 for none */
    size_t* sample_perm;
    /* reading */
    FILE* fp;
    int fp_shard;               /* shard index fp is open on, -1 for none */
    unsigned char* buffer;      /* B*T+1 raw tokens */
    /* the interface */
    int* inputs;                /* B*T current batch inputs */
    int* targets;               /* B*T current batch targets (inputs shifted by one; TARGET_NO_LOSS where masked) */
    /* masked targets (dataloader_use_masks): the companion X.bin.mask files */
    int use_masks;
    FILE* mask_fp;
    int mask_shard;             /* shard index mask_fp is open on, -1 for none */
    unsigned char* mask_buffer; /* B*T+1 mask bytes */
    /* streams (dataloader_use_streams): row b continues row b of the previous batch */
    int streams;
    int* row_reset;             /* (B) 1 where row b of the current batch starts its stream afresh (streams only) */
    size_t num_tokens;          /* total tokens over all shards matched */
    size_t B, T;
} DataLoader;

typedef struct { unsigned long long v[8]; } DataLoaderState; /* fixed-size POD, written into checkpoints */

/* ---------------------------------------------------------------------------------------------------- */
/* a tiny PRNG: splitmix64. Its own here so the data order never changes when another part of the code
 * changes how it draws random numbers. */

static inline uint64_t dataloader_splitmix64(uint64_t* state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [0, n), n > 0, without modulo bias: reject the top partial block of 2^64 */
static inline uint64_t dataloader_below(uint64_t* state, uint64_t n) {
    uint64_t limit = UINT64_MAX - (UINT64_MAX % n);
    uint64_t x;
    do { x = dataloader_splitmix64(state); } while (x >= limit);
    return x % n;
}

/* one stream per (seed, epoch, which): which = 0 for the shard order, 1 + shard index for a shard */
static inline uint64_t dataloader_stream(unsigned long long seed, unsigned long long epoch, uint64_t which) {
    uint64_t s = (uint64_t)seed;
    uint64_t a = dataloader_splitmix64(&s) ^ (uint64_t)epoch;
    uint64_t b = dataloader_splitmix64(&a) ^ which;
    return dataloader_splitmix64(&b);
}

/* Fisher-Yates: perm becomes a uniformly random permutation of 0..n-1 */
static inline void dataloader_permute_sizes(size_t* perm, size_t n, uint64_t state) {
    for (size_t i = 0; i < n; i++) perm[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)dataloader_below(&state, i);
        size_t t = perm[i - 1]; perm[i - 1] = perm[j]; perm[j] = t;
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* opening and checking the shards */

static inline size_t dataloader_file_size(FILE* fp, const char* path) {
    if (fseek(fp, 0, SEEK_END) != 0) die("dataloader: shard %s: cannot seek to its end", path);
    long size = ftell(fp);
    if (size < 0) die("dataloader: shard %s: cannot tell its size", path);
    fseekCheck(fp, 0, SEEK_SET);
    return (size_t)size;
}

/*
 * One pass over a shard's tokens: every id must be < vocab_size (0: no check). The maximum of each 1 MiB block is
 * taken in a tight loop; only a block holding a bad id is searched again for its offset, for the message. So a
 * shard prepared with another tokenizer is refused when the run starts, not at the step that first reads it.
 */
static inline void dataloader_validate_tokens(const char* path, size_t num_tokens, int token_size, int vocab_size) {
    if (vocab_size <= 0) return;
    enum { BLOCK = 1 << 20 };
    FILE* fp = fopenCheck(path, "rb");
    unsigned char* buf = (unsigned char*)mallocCheck(BLOCK);
    size_t per = BLOCK / (size_t)token_size, done = 0;
    fseekCheck(fp, DATALOADER_HEADER_BYTES, SEEK_SET);
    while (done < num_tokens) {
        size_t n = num_tokens - done < per ? num_tokens - done : per;
        if (fread(buf, (size_t)token_size, n, fp) != n) {
            free(buf);
            fclose(fp);
            die("dataloader: shard %s: read error at token %zu while checking the token ids", path, done);
        }
        uint32_t mx = 0;
        if (token_size == 2) {
            for (size_t i = 0; i < n; i++) { uint32_t v = (uint32_t)buf[2 * i] | ((uint32_t)buf[2 * i + 1] << 8); mx = v > mx ? v : mx; }
        } else {
            for (size_t i = 0; i < n; i++) {
                uint32_t v = (uint32_t)buf[4 * i] | ((uint32_t)buf[4 * i + 1] << 8) | ((uint32_t)buf[4 * i + 2] << 16) |
                             ((uint32_t)buf[4 * i + 3] << 24);
                mx = v > mx ? v : mx;
            }
        }
        if (mx >= (uint32_t)vocab_size) {
            for (size_t i = 0; i < n; i++) {
                const unsigned char* b = buf + i * (size_t)token_size;
                uint32_t v = token_size == 2 ? (uint32_t)b[0] | ((uint32_t)b[1] << 8)
                                             : (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) |
                                                   ((uint32_t)b[3] << 24);
                if (v >= (uint32_t)vocab_size) {
                    free(buf); /* (die exits; under the fuzz harness it returns to it, which must not leak) */
                    fclose(fp);
                    die("dataloader: shard %s: token id %u at token offset %zu is >= vocab_size %d (data prepared "
                        "with another tokenizer, or a model with a smaller vocab?)", path, v, done + i, vocab_size);
                }
            }
        }
        done += n;
    }
    free(buf);
    fclose(fp);
}

/* reads and checks one shard's header against its file size, and its token ids against vocab_size (0: not
   checked); fills sh */
static inline void dataloader_check_shard(DataShard* sh, const char* path, size_t B, size_t T, int vocab_size) {
    struct stat st;
    if (stat(path, &st) != 0) die("dataloader: shard %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        die("dataloader: shard %s is not a regular file (a folder? give a file or a glob such as DIR/*_train_*.bin)",
            path);
    FILE* fp = fopen(path, "rb");
    if (fp == NULL) die("dataloader: cannot open shard %s: %s", path, strerror(errno));
    /* the header is read and the file closed before any check, so that no check leaves it open */
    size_t size = dataloader_file_size(fp, path);
    int32_t header[256];
    int have_header = size >= DATALOADER_HEADER_BYTES && fread(header, sizeof(int32_t), 256, fp) == 256;
    fclose(fp);
    if (size < DATALOADER_HEADER_BYTES) {
        die("dataloader: shard %s: file is %zu bytes, smaller than the %d-byte header (truncated or not a shard)",
            path, size, DATALOADER_HEADER_BYTES);
    }
    if (!have_header) die("dataloader: shard %s: read error in its header", path);
    if (header[0] != DATALOADER_MAGIC) {
        die("dataloader: shard %s: bad magic %d, expected %d (not a token shard? make one with data/prepare.py)",
            path, (int)header[0], DATALOADER_MAGIC);
    }
    if (header[1] != 1 && header[1] != 2) {
        die("dataloader: shard %s: unknown version %d, expected 1 (uint16 tokens) or 2 (uint32 tokens)",
            path, (int)header[1]);
    }
    if (header[2] < 0) die("dataloader: shard %s: negative token count %d in the header", path, (int)header[2]);
    sh->token_size = header[1] == 1 ? 2 : 4;
    sh->num_tokens = (size_t)header[2];
    size_t payload = size - DATALOADER_HEADER_BYTES;
    if (payload != sh->num_tokens * (size_t)sh->token_size) {
        die("dataloader: shard %s: %s, header says %zu tokens (%zu bytes), file holds %zu bytes of tokens",
            path, payload < sh->num_tokens * (size_t)sh->token_size ? "truncated" : "longer than its header says",
            sh->num_tokens, sh->num_tokens * (size_t)sh->token_size, payload);
    }
    dataloader_validate_tokens(path, sh->num_tokens, sh->token_size, vocab_size);
    size_t need = B * T + 1;
    if (sh->num_tokens < need) {
        die("dataloader: shard %s: %zu tokens, too small for one sample of B*T+1 = %zu tokens "
            "(use a smaller B or T, or prepare the data with a larger --shard-size)", path, sh->num_tokens, need);
    }
    sh->num_samples = (sh->num_tokens - 1) / (B * T);
    size_t path_len = strlen(path);
    sh->path = (char*)mallocCheck(path_len + 1);
    memcpy(sh->path, path, path_len + 1);
}

/* this epoch's shard order and the global position where each shard starts */
static inline void dataloader_plan_epoch(DataLoader* l) {
    size_t* perm = (size_t*)mallocCheck((size_t)l->num_shards * sizeof(size_t));
    if (l->should_shuffle) {
        dataloader_permute_sizes(perm, (size_t)l->num_shards, dataloader_stream(l->seed, l->epoch, 0));
    } else {
        for (int i = 0; i < l->num_shards; i++) perm[i] = (size_t)i;
    }
    size_t start = 0;
    for (int k = 0; k < l->num_shards; k++) {
        l->shard_order[k] = (int)perm[k];
        l->order_start[k] = start;
        start += l->shards[perm[k]].num_samples;
    }
    l->order_start[l->num_shards] = start;
    free(perm);
    l->perm_pos = -1;
}

static inline void dataloader_reset(DataLoader* l) {
    l->epoch = 0;
    l->next_global = l->streams ? 0 : (size_t)l->process_rank;
    dataloader_plan_epoch(l);
}

static inline void dataloader_init(DataLoader* l, const char* filename_pattern, size_t B, size_t T,
                                   int process_rank, int num_processes, int should_shuffle, unsigned long long seed,
                                   int vocab_size) {
    memset(l, 0, sizeof(*l));
    if (B == 0 || T == 0) die("dataloader: B=%zu and T=%zu must both be positive", B, T);
    if (B > (1u << 20) || T > (1u << 24) || B * T > (1u << 28))
        die("dataloader: B=%zu, T=%zu: B*T must be at most 2^28 tokens", B, T);
    if (num_processes < 1 || process_rank < 0 || process_rank >= num_processes) {
        die("dataloader: process_rank %d out of range for num_processes %d", process_rank, num_processes);
    }
    l->B = B;
    l->T = T;
    l->process_rank = process_rank;
    l->num_processes = num_processes;
    l->should_shuffle = should_shuffle ? 1 : 0;
    l->seed = seed;
    l->vocab_size = vocab_size;

    glob_t g;
    int rc = glob(filename_pattern, 0, NULL, &g);
    if (rc != 0 || g.gl_pathc == 0) {
        if (rc == 0) globfree(&g);
        die("dataloader: no file matches '%s' (prepare the data first, e.g. python3 data/prepare.py)",
            filename_pattern);
    }
    l->num_shards = (int)g.gl_pathc;
    l->shards = (DataShard*)callocCheck((size_t)l->num_shards, sizeof(DataShard));
    for (int i = 0; i < l->num_shards; i++) {
        dataloader_check_shard(&l->shards[i], g.gl_pathv[i], B, T, vocab_size);
        l->num_tokens += l->shards[i].num_tokens;
        l->total_samples += l->shards[i].num_samples;
    }
    globfree(&g);
    if (l->total_samples < (size_t)num_processes) {
        die("dataloader: '%s' holds %zu samples of B*T+1 = %zu tokens, fewer than the %d processes",
            filename_pattern, l->total_samples, B * T + 1, num_processes);
    }

    size_t max_samples = 0;
    for (int i = 0; i < l->num_shards; i++) {
        if (l->shards[i].num_samples > max_samples) max_samples = l->shards[i].num_samples;
    }
    l->shard_order = (int*)mallocCheck((size_t)l->num_shards * sizeof(int));
    l->order_start = (size_t*)mallocCheck(((size_t)l->num_shards + 1) * sizeof(size_t));
    l->sample_perm = (size_t*)mallocCheck(max_samples * sizeof(size_t));
    l->buffer = (unsigned char*)mallocCheck((B * T + 1) * 4);
    l->inputs = (int*)mallocCheck(B * T * sizeof(int));
    l->targets = (int*)mallocCheck(B * T * sizeof(int));
    l->fp = NULL;
    l->fp_shard = -1;
    dataloader_reset(l);
}

static inline size_t dataloader_num_batches(const DataLoader* l) {
    if (l->streams) return l->total_samples; /* every rank reads every batch index, its own regions */
    size_t S = l->total_samples, r = (size_t)l->process_rank, P = (size_t)l->num_processes;
    return S > r ? (S - r + P - 1) / P : 0;
}

/* global position -> k, the shard's place in this epoch's order (the last k with order_start[k] <= global) */
static inline int dataloader_order_index(const DataLoader* l, size_t global) {
    int lo = 0, hi = l->num_shards - 1; /* binary search */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (l->order_start[mid] <= global) lo = mid; else hi = mid - 1;
    }
    /* shards with 0 samples cannot exist (init checks), so order_start is strictly increasing */
    return lo;
}

/* global position -> (shard index, token offset of the sample in that shard) */
static inline void dataloader_locate(DataLoader* l, size_t global, int* shard, size_t* token_offset) {
    int k = dataloader_order_index(l, global);
    int s = l->shard_order[k];
    size_t local = global - l->order_start[k];
    if (l->should_shuffle) {
        if (l->perm_pos != k) {
            dataloader_permute_sizes(l->sample_perm, l->shards[s].num_samples,
                                     dataloader_stream(l->seed, l->epoch, 1 + (uint64_t)s));
            l->perm_pos = k;
        }
        local = l->sample_perm[local];
    }
    *shard = s;
    *token_offset = local * l->B * l->T;
}

/* reads n contiguous tokens of shard s from token_offset: inputs[0 .. n-2] = tokens 0 .. n-2, targets[0 .. n-2] =
   tokens 1 .. n-1, checking ids against vocab_size */
static inline void dataloader_read_span(DataLoader* l, int s, size_t token_offset, size_t n, int* inputs,
                                        int* targets) {
    DataShard* sh = &l->shards[s];
    if (l->fp_shard != s) {
        if (l->fp != NULL) fclose(l->fp);
        l->fp = fopenCheck(sh->path, "rb");
        l->fp_shard = s;
    }
    fseekCheck(l->fp, (long)(DATALOADER_HEADER_BYTES + token_offset * (size_t)sh->token_size), SEEK_SET);
    if (fread(l->buffer, (size_t)sh->token_size, n, l->fp) != n) {
        die("dataloader: shard %s: short read of %zu tokens at token offset %zu (file changed since init?)",
            sh->path, n, token_offset);
    }
    for (size_t i = 0; i < n; i++) {
        const unsigned char* p = l->buffer + i * (size_t)sh->token_size;
        uint32_t id = sh->token_size == 2 ? (uint32_t)p[0] | ((uint32_t)p[1] << 8)
                                          : (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                                                ((uint32_t)p[3] << 24);
        if (l->vocab_size > 0 && id >= (uint32_t)l->vocab_size) {
            die("dataloader: shard %s: token id %u at token offset %zu is >= vocab_size %d "
                "(data prepared with another tokenizer?)", sh->path, id, token_offset + i, l->vocab_size);
        }
        if (i < n - 1) inputs[i] = (int)id;
        if (i > 0) targets[i - 1] = (int)id;
    }
}

/* reads the B*T+1 tokens of one sample (the B rows contiguous) */
static inline void dataloader_read(DataLoader* l, int s, size_t token_offset) {
    dataloader_read_span(l, s, token_offset, l->B * l->T + 1, l->inputs, l->targets);
}

/* X.bin -> X.bin.mask */
static inline void dataloader_mask_path(char* out, size_t cap, const char* shard_path) {
    if ((size_t)snprintf(out, cap, "%s.mask", shard_path) >= cap) die("dataloader: shard path too long: %s", shard_path);
}

/* a shard's mask file: header, size and every byte 0 or 1, checked once, before training (like the token ids) */
static inline void dataloader_check_mask(const DataShard* sh) {
    char path[4096];
    dataloader_mask_path(path, sizeof(path), sh->path);
    FILE* fp = fopen(path, "rb");
    if (fp == NULL) {
        die("dataloader: masked targets are on, but shard %s has no mask file %s (%s): write one (doc/packing.md) "
            "or turn masks off", sh->path, path, strerror(errno));
        return;
    }
    size_t size = dataloader_file_size(fp, path);
    int32_t header[256];
    int have_header = size >= DATALOADER_HEADER_BYTES && fread(header, sizeof(int32_t), 256, fp) == 256;
    const char* bad = NULL;
    size_t bad_at = 0;
    int bad_byte = 0;
    if (!have_header) bad = "shorter than its 1024-byte header";
    else if (header[0] != DATALOADER_MASK_MAGIC) bad = "bad magic (not a mask file)";
    else if (header[1] != 1) bad = "unknown version (expected 1)";
    else if (header[2] < 0 || (size_t)header[2] != sh->num_tokens) bad = "its header's token count is not the shard's";
    else if (size - DATALOADER_HEADER_BYTES != sh->num_tokens) bad = "its size is not the header + one byte per token";
    if (bad == NULL) {
        enum { BLOCK = 1 << 16 };
        unsigned char buf[BLOCK];
        size_t left = sh->num_tokens, off = 0;
        while (left > 0 && bad == NULL) {
            size_t k = left < BLOCK ? left : BLOCK;
            if (fread(buf, 1, k, fp) != k) { bad = "read error"; break; }
            for (size_t i = 0; i < k && bad == NULL; i++)
                if (buf[i] > 1) { bad = "a byte other than 0 or 1"; bad_at = off + i; bad_byte = buf[i]; }
            off += k;
            left -= k;
        }
    }
    fclose(fp);
    if (bad != NULL) {
        if (bad_byte != 0)
            die("dataloader: mask file %s of shard %s: %s (byte %zu of the mask is %d)", path, sh->path, bad, bad_at,
                bad_byte);
        die("dataloader: mask file %s of shard %s (%zu tokens): %s", path, sh->path, sh->num_tokens, bad);
    }
}

/* turns masked targets on: every shard must have its mask file (checked now) */
static inline void dataloader_use_masks(DataLoader* l) {
    for (int i = 0; i < l->num_shards; i++) dataloader_check_mask(&l->shards[i]);
    l->use_masks = 1;
    l->mask_fp = NULL;
    l->mask_shard = -1;
    l->mask_buffer = (unsigned char*)mallocCheck(l->B * l->T + 1);
}

/* the mask bytes of the n tokens just read from token_offset: a target whose token has mask 0 becomes
   TARGET_NO_LOSS */
static inline void dataloader_apply_mask_span(DataLoader* l, int s, size_t token_offset, size_t n, int* targets) {
    DataShard* sh = &l->shards[s];
    if (l->mask_shard != s) {
        if (l->mask_fp != NULL) fclose(l->mask_fp);
        char path[4096];
        dataloader_mask_path(path, sizeof(path), sh->path);
        l->mask_fp = fopenCheck(path, "rb");
        l->mask_shard = s;
    }
    fseekCheck(l->mask_fp, (long)(DATALOADER_HEADER_BYTES + token_offset), SEEK_SET);
    if (fread(l->mask_buffer, 1, n, l->mask_fp) != n)
        die("dataloader: mask of shard %s: short read at token offset %zu (file changed since init?)", sh->path,
            token_offset);
    for (size_t i = 1; i < n; i++)
        if (l->mask_buffer[i] == 0) targets[i - 1] = TARGET_NO_LOSS;
}

static inline void dataloader_apply_mask(DataLoader* l, int s, size_t token_offset) {
    dataloader_apply_mask_span(l, s, token_offset, l->B * l->T + 1, l->targets);
}

/*
 * Turns streams on (before the first batch): each shard is cut into P*B regions, one per row of every rank, and the
 * batches of a shard read them in order (the header's "Streams"). A shard too small to give every stream T+1
 * tokens is refused, naming it.
 */
static inline void dataloader_use_streams(DataLoader* l) {
    size_t streams = l->B * (size_t)l->num_processes;
    l->total_samples = 0;
    for (int i = 0; i < l->num_shards; i++) {
        DataShard* sh = &l->shards[i];
        sh->region = sh->num_tokens / streams;
        if (sh->region < l->T + 1)
            die("dataloader: carried state (streams): shard %s holds %zu tokens, %zu for each of the B*GPUs = %zu "
                "streams, fewer than T+1 = %zu: use a smaller B or T, or larger shards", sh->path, sh->num_tokens,
                sh->region, streams, l->T + 1);
        sh->num_samples = (sh->region - 1) / l->T;
        l->total_samples += sh->num_samples;
    }
    l->streams = 1;
    l->row_reset = (int*)callocCheck(l->B, sizeof(int));
    dataloader_reset(l);
}

/* streams: batch `global` of this epoch; row b reads its region from the batch's place in the shard */
static inline void dataloader_next_stream_batch(DataLoader* l) {
    int k = dataloader_order_index(l, l->next_global);
    int s = l->shard_order[k];
    size_t batch = l->next_global - l->order_start[k];
    const DataShard* sh = &l->shards[s];
    for (size_t b = 0; b < l->B; b++) {
        size_t region = (size_t)l->process_rank * l->B + b;
        size_t offset = region * sh->region + batch * l->T;
        dataloader_read_span(l, s, offset, l->T + 1, l->inputs + b * l->T, l->targets + b * l->T);
        if (l->use_masks) dataloader_apply_mask_span(l, s, offset, l->T + 1, l->targets + b * l->T);
        l->row_reset[b] = batch == 0; /* a new shard: every stream starts afresh */
    }
    l->next_global++;
}

static inline void dataloader_next_batch(DataLoader* l) {
    if (l->next_global >= l->total_samples) { /* this rank's share of the epoch is done: next epoch */
        l->epoch++;
        l->next_global = l->streams ? 0 : (size_t)l->process_rank;
        dataloader_plan_epoch(l);
    }
    if (l->streams) { dataloader_next_stream_batch(l); return; }
    int s;
    size_t offset;
    dataloader_locate(l, l->next_global, &s, &offset);
    dataloader_read(l, s, offset);
    if (l->use_masks) dataloader_apply_mask(l, s, offset);
    l->next_global += (size_t)l->num_processes;
}

static inline void dataloader_save_state(const DataLoader* l, DataLoaderState* st) {
    memset(st, 0, sizeof(*st));
    st->v[0] = DATALOADER_STATE_TAG | (unsigned long long)l->should_shuffle | ((unsigned long long)l->streams << 1);
    st->v[1] = l->epoch;
    st->v[2] = (unsigned long long)l->next_global;
    st->v[3] = l->seed;
    st->v[4] = (unsigned long long)l->B;
    st->v[5] = (unsigned long long)l->T;
    st->v[6] = ((unsigned long long)(unsigned)l->num_processes << 32) | (unsigned)l->process_rank;
    st->v[7] = (unsigned long long)l->total_samples;
}

static inline void dataloader_load_state(DataLoader* l, const DataLoaderState* st) {
    if ((st->v[0] & ~0xFFull) != DATALOADER_STATE_TAG) {
        die("dataloader: the saved data loader state is not one (tag %llx); checkpoint corrupt or of another "
            "program", st->v[0]);
    }
    if (st->v[4] != l->B || st->v[5] != l->T) {
        die("dataloader: state was saved with B=%llu T=%llu, this loader has B=%zu T=%zu; resume with the same "
            "B and T", st->v[4], st->v[5], l->B, l->T);
    }
    /* Another process count (a run saved on N GPUs resumed on M): the ranks walk the global order in lockstep, so
     * rank 0's saved position k*N is the first position no rank has read; rank r of M continues at k*N + r. Only
     * rank 0's state can be moved this way (the trainers save rank 0's). */
    unsigned long long saved_rank = st->v[6] & 0xFFFFFFFFull, saved_procs = st->v[6] >> 32;
    size_t next = (size_t)st->v[2];
    int saved_streams = (int)((st->v[0] >> 1) & 1);
    if (saved_streams != l->streams)
        die("dataloader: state was saved %s carried state (streams), this run is %s: resume with%s -C 1", saved_streams
            ? "with" : "without", l->streams ? "with" : "without", saved_streams ? "" : "out");
    if (l->streams && saved_procs != (unsigned long long)l->num_processes)
        die("dataloader: carried state (streams) was saved by %llu processes, this run has %d: the streams are cut "
            "per process, resume on %llu", saved_procs, l->num_processes, saved_procs);
    /* streams: every rank is at the same batch index, so rank 0's position is every rank's */
    if (!l->streams &&
        (saved_procs != (unsigned long long)l->num_processes || saved_rank != (unsigned long long)l->process_rank)) {
        if (saved_rank != 0) {
            die("dataloader: state was saved by rank %llu of %llu processes, this is rank %d of %d; only rank 0's "
                "state can be resumed on another process count", saved_rank, saved_procs, l->process_rank,
                l->num_processes);
        }
        next = next + (size_t)l->process_rank;
    }
    if (st->v[7] != l->total_samples) {
        die("dataloader: state was saved over data of %llu samples, the shards matched now hold %zu; "
            "resume on the same shards", st->v[7], l->total_samples);
    }
    if (st->v[2] > l->total_samples + (size_t)l->num_processes) {
        die("dataloader: saved position %llu is past the end of the epoch (%zu samples): corrupt state",
            st->v[2], l->total_samples);
    }
    l->should_shuffle = (int)(st->v[0] & 1);
    if (l->streams && next > l->total_samples)
        die("dataloader: saved stream position %zu is past the end of the epoch (%zu batches): corrupt state", next,
            l->total_samples);
    l->epoch = st->v[1];
    l->seed = st->v[3];
    l->next_global = next;
    dataloader_plan_epoch(l);
}

/* ---------------------------------------------------------------------------------------------------- */
/*
 * Document boundaries (doc/packing.md). seq_idx[b*T + t] = the document of position t of row b: 0 at t = 0, and one
 * more at each t > 0 whose input is the separator `sep` (the tokenizer's end-of-text id, or any id). The separator
 * OPENS the document it precedes, as data/prepare.py writes the shards (EOT, then the document's tokens, like llm.c):
 * the EOT is the document's first input, read with a fresh state, the way generation starts a sample; the last
 * token of a document predicts the next EOT from its own document. Non-decreasing along each row.
 */
static inline void dataloader_doc_index(int* seq_idx, const int* inputs, size_t B, size_t T, int sep) {
    for (size_t b = 0; b < B; b++) {
        int d = 0;
        for (size_t t = 0; t < T; t++) {
            if (t > 0 && inputs[b * T + t] == sep) d++;
            seq_idx[b * T + t] = d;
        }
    }
}

/*
 * Carried state (streams): fresh[b] = 1 where row b must not continue the state of its previous batch: its stream
 * starts afresh (row_reset, NULL: none), or, with document boundaries (sep != DOC_SEP_NONE, i.e. sep >= 0), its first
 * input is the separator, which opens a new document exactly at the batch edge (doc/packing.md section 6).
 */
static inline void dataloader_fresh_rows(int* fresh, const int* row_reset, const int* inputs, size_t B, size_t T,
                                         int sep) {
    for (size_t b = 0; b < B; b++)
        fresh[b] = (row_reset != NULL && row_reset[b]) || (sep >= 0 && inputs[b * T] == sep);
}

static inline void dataloader_free(DataLoader* l) {
    if (l->fp != NULL) fclose(l->fp);
    if (l->mask_fp != NULL) fclose(l->mask_fp);
    free(l->mask_buffer);
    free(l->row_reset);
    for (int i = 0; l->shards != NULL && i < l->num_shards; i++) free(l->shards[i].path);
    free(l->shards);
    free(l->shard_order);
    free(l->order_start);
    free(l->sample_perm);
    free(l->buffer);
    free(l->inputs);
    free(l->targets);
    memset(l, 0, sizeof(*l));
}

#endif
