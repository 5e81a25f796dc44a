/*
 * tokenizer.h: decodes token ids to text with the tokenizer.bin that data/prepare.py writes next to the
 * shards. Header-only, C11 (also compiles as C++). Decoding only: encoding is data/prepare.py's or llmc/bpe.h's.
 *
 * File layout (llm.c's): 256 uint32 header {20240328 magic, version, vocab_size, eot_token (version 2)},
 * then for each id 0..vocab_size-1: one uint8 length and that many raw bytes (a piece of UTF-8 text, not
 * necessarily a whole character). Version 1 files have no end-of-text id in the header; GPT-2's 50256 is
 * assumed, as llm.c does. Version 3 (byte-level BPE tokenizers) appends the encoder's data (layout in
 * data/text_tokenizers.py; llmc/bpe.h reads it): from it this reader takes only each token's FULL bytes, so tokens
 * longer than 255 bytes decode whole; the merges are llmc/bpe.h's business.
 */
#ifndef MAMBA2_TOKENIZER_H
#define MAMBA2_TOKENIZER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utils.h"

#define TOKENIZER_MAGIC 20240328

typedef struct {
    uint32_t vocab_size;
    char** token_table; /* token_table[id]: the token's bytes, NUL-terminated (a byte token may be "\0") */
    int* token_len;     /* byte length of each token */
    int init_ok;        /* 0 when no tokenizer file was found: callers print ids instead of text */
    int eot_token;
} Tokenizer;

/* reads exactly n bytes or stops with a message naming the file and what was being read */
static inline void tokenizer_read(void* dst, size_t n, FILE* fp, const char* path, const char* what) {
    if (n > 0 && fread(dst, 1, n, fp) != n) {
        die("tokenizer %s: truncated while reading %s (remake it with python3 data/prepare.py)", path, what);
    }
}

static inline void tokenizer_init(Tokenizer* t, const char* path) {
    memset(t, 0, sizeof(*t));
    FILE* fp = fopen(path, "rb");
    if (fp == NULL) {
        fprintf(stderr, "warning: no tokenizer file %s; samples will be printed as token ids\n", path);
        return;
    }
    uint32_t header[256];
    tokenizer_read(header, sizeof(header), fp, path, "the 1024-byte header");
    if (header[0] != TOKENIZER_MAGIC) {
        die("tokenizer %s: bad magic %u, expected %d (not a tokenizer.bin from data/prepare.py?)", path,
            header[0], TOKENIZER_MAGIC);
    }
    if (header[1] != 1 && header[1] != 2 && header[1] != 3) {
        die("tokenizer %s: unknown version %u, expected 1, 2 or 3", path, header[1]);
    }
    if (header[2] == 0 || header[2] > (1u << 24)) {
        die("tokenizer %s: implausible vocab size %u", path, header[2]);
    }
    t->vocab_size = header[2];
    t->eot_token = header[1] == 1 ? 50256 : (int)header[3];
    if (t->eot_token < 0 || (uint32_t)t->eot_token >= t->vocab_size) {
        die("tokenizer %s: end-of-text id %d outside the vocab of %u", path, t->eot_token, t->vocab_size);
    }
    t->token_table = (char**)callocCheck(t->vocab_size, sizeof(char*));
    t->token_len = (int*)callocCheck(t->vocab_size, sizeof(int));
    for (uint32_t i = 0; i < t->vocab_size; i++) {
        unsigned char len;
        char what[64];
        snprintf(what, sizeof(what), "the length of token %u", i);
        tokenizer_read(&len, 1, fp, path, what);
        t->token_table[i] = (char*)mallocCheck((size_t)len + 1);
        snprintf(what, sizeof(what), "the %u bytes of token %u", (unsigned)len, i);
        tokenizer_read(t->token_table[i], len, fp, path, what);
        t->token_table[i][len] = '\0';
        t->token_len[i] = len;
    }
    if (header[1] == 3) {
        /* the encoder table: per id a uint8 flag, a uint32 length and the full bytes (replacing the truncated ones) */
        for (uint32_t i = 0; i < t->vocab_size; i++) {
            unsigned char rec[5];
            tokenizer_read(rec, 5, fp, path, "the version-3 encoder table");
            uint32_t len = (uint32_t)rec[1] | ((uint32_t)rec[2] << 8) | ((uint32_t)rec[3] << 16) | ((uint32_t)rec[4] << 24);
            if (len > (1u << 20)) die("tokenizer %s: token %u has an implausible length %u: corrupt file", path, i, len);
            free(t->token_table[i]);
            t->token_table[i] = (char*)mallocCheck((size_t)len + 1);
            tokenizer_read(t->token_table[i], len, fp, path, "the version-3 encoder table");
            t->token_table[i][len] = '\0';
            t->token_len[i] = (int)len;
        }
        fclose(fp);
        t->init_ok = 1;
        return;
    }
    int extra = fgetc(fp);
    fclose(fp);
    if (extra != EOF) {
        die("tokenizer %s: bytes left after the %u tokens the header announces: corrupt file", path, t->vocab_size);
    }
    t->init_ok = 1;
}

/* the token's bytes (NUL-terminated), or NULL for an id outside the vocab or without a tokenizer */
static inline const char* tokenizer_decode(Tokenizer* t, uint32_t id) {
    if (!t->init_ok || id >= t->vocab_size) return NULL;
    return t->token_table[id];
}

/* prints a piece as text: printable bytes and newlines/tabs as they are, bytes >= 0x80 as they are (parts
 * of UTF-8 characters), other control bytes as \xNN so they cannot garble the terminal */
static inline void tokenizer_safe_print(const char* piece) {
    if (piece == NULL) return;
    for (const unsigned char* p = (const unsigned char*)piece; *p; p++) {
        unsigned char c = *p;
        if (c == '\n' || c == '\t' || (c >= 0x20 && c != 0x7f)) {
            putchar(c);
        } else {
            printf("\\x%02x", c);
        }
    }
}

static inline void tokenizer_free(Tokenizer* t) {
    if (t->token_table != NULL) {
        for (uint32_t i = 0; i < t->vocab_size; i++) free(t->token_table[i]);
    }
    free(t->token_table);
    free(t->token_len);
    memset(t, 0, sizeof(*t));
}

#endif
