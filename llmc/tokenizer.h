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

#include <stdarg.h>
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

/* The file is read whole, then parsed from memory: a refused file leaves nothing open or allocated (die() exits in
   the programs, but returns to the fuzz harness of dev/fuzz, which must not leak). */
typedef struct {
    unsigned char* data;
    size_t size, pos;
    const char* path;
} TokenizerFile;

static inline void tokenizer_free(Tokenizer* t);

/* stops with the message, after freeing the file and what t holds so far */
static inline void tokenizer_refuse(Tokenizer* t, TokenizerFile* f, const char* fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    free(f->data);
    f->data = NULL;
    tokenizer_free(t);
    die("tokenizer %s: %s", f->path, msg);
}

/* takes exactly n bytes or stops with a message naming the file and what was being read */
static inline void tokenizer_read(void* dst, size_t n, Tokenizer* t, TokenizerFile* f, const char* what) {
    if (n > f->size - f->pos)
        tokenizer_refuse(t, f, "truncated while reading %s (remake it with python3 data/prepare.py)", what);
    memcpy(dst, f->data + f->pos, n);
    f->pos += n;
}

/* reads the tokenizer at path into t; a missing file is a warning (init_ok stays 0), a bad one an error */
static inline void tokenizer_init(Tokenizer* t, const char* path) {
    memset(t, 0, sizeof(*t));
    FILE* fp = fopen(path, "rb");
    if (fp == NULL) {
        fprintf(stderr, "warning: no tokenizer file %s; samples will be printed as token ids\n", path);
        return;
    }
    TokenizerFile f = {NULL, 0, 0, path};
    long size = fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : -1;
    if (size < 0 || size > (1L << 30) || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        die("tokenizer %s: cannot read it (size %ld; a tokenizer file is at most 1 GiB)", path, size);
    }
    f.size = (size_t)size;
    f.data = (unsigned char*)malloc(f.size > 0 ? f.size : 1);
    int ok = f.data != NULL && fread(f.data, 1, f.size, fp) == f.size;
    fclose(fp);
    if (!ok) tokenizer_refuse(t, &f, "cannot read its %zu bytes", f.size);
    uint32_t header[256];
    tokenizer_read(header, sizeof(header), t, &f, "the 1024-byte header");
    if (header[0] != TOKENIZER_MAGIC)
        tokenizer_refuse(t, &f, "bad magic %u, expected %d (not a tokenizer.bin from data/prepare.py?)", header[0],
                         TOKENIZER_MAGIC);
    if (header[1] != 1 && header[1] != 2 && header[1] != 3)
        tokenizer_refuse(t, &f, "unknown version %u, expected 1, 2 or 3", header[1]);
    if (header[2] == 0 || header[2] > (1u << 24)) tokenizer_refuse(t, &f, "implausible vocab size %u", header[2]);
    t->vocab_size = header[2];
    t->eot_token = header[1] == 1 ? 50256 : (int)header[3];
    if (t->eot_token < 0 || (uint32_t)t->eot_token >= t->vocab_size)
        tokenizer_refuse(t, &f, "end-of-text id %d outside the vocab of %u", t->eot_token, t->vocab_size);
    t->token_table = (char**)callocCheck(t->vocab_size, sizeof(char*));
    t->token_len = (int*)callocCheck(t->vocab_size, sizeof(int));
    for (uint32_t i = 0; i < t->vocab_size; i++) {
        unsigned char len;
        char what[64];
        snprintf(what, sizeof(what), "the length of token %u", i);
        tokenizer_read(&len, 1, t, &f, what);
        t->token_table[i] = (char*)mallocCheck((size_t)len + 1);
        snprintf(what, sizeof(what), "the %u bytes of token %u", (unsigned)len, i);
        tokenizer_read(t->token_table[i], len, t, &f, what);
        t->token_table[i][len] = '\0';
        t->token_len[i] = len;
    }
    if (header[1] == 3) {
        /* the encoder table: per id a uint8 flag, a uint32 length and the full bytes (replacing the truncated ones) */
        for (uint32_t i = 0; i < t->vocab_size; i++) {
            unsigned char rec[5];
            tokenizer_read(rec, 5, t, &f, "the version-3 encoder table");
            uint32_t len = (uint32_t)rec[1] | ((uint32_t)rec[2] << 8) | ((uint32_t)rec[3] << 16) | ((uint32_t)rec[4] << 24);
            if (len > (1u << 20))
                tokenizer_refuse(t, &f, "token %u has an implausible length %u: corrupt file", i, len);
            free(t->token_table[i]);
            t->token_table[i] = (char*)mallocCheck((size_t)len + 1);
            tokenizer_read(t->token_table[i], len, t, &f, "the version-3 encoder table");
            t->token_table[i][len] = '\0';
            t->token_len[i] = (int)len;
        }
    } else if (f.pos != f.size) {
        tokenizer_refuse(t, &f, "bytes left after the %u tokens the header announces: corrupt file", t->vocab_size);
    }
    free(f.data);
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
