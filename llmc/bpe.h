/*
 * bpe.h: the byte-level BPE ENCODER (GPT-2, GPT-NeoX) in C, reading a version-3 tokenizer.bin (the layout is
 * described in data/text_tokenizers.py, which writes it). Header-only C11, also compiles as C++.
 *
 *   BpeEncoder e;  char err[512];  int* ids;  size_t n;
 *   if (bpe_load(&e, "tokenizer.bin", err, sizeof err) != 0) { ... }
 *   if (bpe_encode(&e, text, strlen(text), &ids, &n, err, sizeof err) != 0) { ... }   ids: malloc'd
 *
 * It does what data/text_tokenizers.py's encode() does, step by step:
 *   1. NeoX only: NFC normalization (UAX #15 with the tables of llmc/unicode_tables.h, generated from Python's
 *      unicodedata). A text holding none of the characters NFC could change or combine (UNI_NFC_UNSAFE) is its own
 *      NFC form and is used as it is, without a copy; any other is decomposed, reordered and recomposed.
 *   2. NeoX only: the plain added tokens (runs of spaces) are cut out of the text, leftmost first, longest first.
 *   3. GPT-2's pre-tokenizer regex, emulated exactly as Python's `re` runs it (see bpe_next_piece_):
 *        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      with \p{L}, \p{N} from unicodedata's categories and \s = the White_Space property (unicode_tables.h).
 *   4. BPE on each piece's UTF-8 bytes: repeatedly merge every non-overlapping occurrence (left to right) of the
 *      adjacent pair with the lowest merge rank; then each part's bytes must be a vocabulary entry.
 * Merges are looked up by their bytes (not by ids), like the Python code: vocabularies may lack intermediate tokens.
 * Errors (invalid UTF-8, a truncated file, a part missing from the vocabulary) come back through err.
 */
#ifndef MAMBA2_BPE_H
#define MAMBA2_BPE_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_tables.h"

#define BPE_TOKENIZER_MAGIC 20240328

typedef struct {
    int vocab_size, eot, nfc;
    unsigned char** tok;      /* full bytes of each id (the BPE vocabulary's form) */
    uint32_t* tok_len;
    unsigned char* in_vocab;  /* 1: id is a BPE vocabulary entry (a possible result of step 4) */
    int32_t* vocab_hash;      /* open addressing, bytes -> id; -1 empty */
    size_t vocab_cap;
    int num_merges;
    unsigned char** m_left; uint32_t* m_left_len;
    unsigned char** m_right; uint32_t* m_right_len;
    int32_t* merge_hash;      /* (left bytes, right bytes) -> rank; -1 empty */
    size_t merge_cap;
    int num_added;
    int32_t* added_id; unsigned char** added; uint32_t* added_len;
} BpeEncoder;

/* ---- small helpers ---- */

static inline int bpe_fail_(char* err, size_t errlen, const char* fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static inline uint64_t bpe_hash_bytes_(uint64_t h, const unsigned char* s, size_t n) {
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 1099511628211ull; }
    return h;
}

static inline uint64_t bpe_pair_hash_(const unsigned char* a, size_t na, const unsigned char* b, size_t nb) {
    uint64_t h = bpe_hash_bytes_(14695981039346656037ull, a, na);
    h ^= (uint64_t)na * 0x9E3779B97F4A7C15ull; /* where the split is: ("ab","c") and ("a","bc") differ */
    h *= 1099511628211ull;
    return bpe_hash_bytes_(h, b, nb);
}

static inline size_t bpe_pow2_(size_t n) {
    size_t c = 16;
    while (c < 2 * n) c *= 2;
    return c;
}

/* the id whose bytes are s[0..n), or -1 */
static inline int bpe_vocab_find(const BpeEncoder* e, const unsigned char* s, size_t n) {
    size_t mask = e->vocab_cap - 1, i = (size_t)bpe_hash_bytes_(14695981039346656037ull, s, n) & mask;
    for (;; i = (i + 1) & mask) {
        int32_t id = e->vocab_hash[i];
        if (id < 0) return -1;
        if (e->tok_len[id] == n && memcmp(e->tok[id], s, n) == 0) return id;
    }
}

/* the rank of merging a (na bytes) with b (nb bytes), or -1 */
static inline int bpe_merge_rank(const BpeEncoder* e, const unsigned char* a, size_t na, const unsigned char* b,
                                 size_t nb) {
    if (e->merge_cap == 0) return -1;
    size_t mask = e->merge_cap - 1, i = (size_t)bpe_pair_hash_(a, na, b, nb) & mask;
    for (;; i = (i + 1) & mask) {
        int32_t r = e->merge_hash[i];
        if (r < 0) return -1;
        if (e->m_left_len[r] == na && e->m_right_len[r] == nb && memcmp(e->m_left[r], a, na) == 0 &&
            memcmp(e->m_right[r], b, nb) == 0)
            return r;
    }
}

static inline void bpe_free(BpeEncoder* e);

/* ---- loading ---- */

typedef struct { FILE* f; const char* path; char* err; size_t errlen; int bad; } BpeReader_;

static inline int bpe_read_(BpeReader_* r, void* dst, size_t n, const char* what) {
    if (r->bad) return -1;
    if (n > 0 && fread(dst, 1, n, r->f) != n) {
        r->bad = 1;
        return bpe_fail_(r->err, r->errlen, "tokenizer %s: truncated while reading %s (remake it with python3 "
                         "data/text_tokenizers.py write-bin ...)", r->path, what);
    }
    return 0;
}

static inline uint32_t bpe_read_u32_(BpeReader_* r, const char* what) {
    unsigned char b[4] = {0, 0, 0, 0};
    bpe_read_(r, b, 4, what);
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

/* a length-prefixed byte string (lengths are checked against a sane limit before allocating) */
static inline unsigned char* bpe_read_str_(BpeReader_* r, uint32_t* len, const char* what) {
    *len = bpe_read_u32_(r, what);
    if (r->bad) return NULL;
    if (*len > (1u << 20)) {
        r->bad = 1;
        bpe_fail_(r->err, r->errlen, "tokenizer %s: %s has an implausible length %u: corrupt file", r->path, what, *len);
        return NULL;
    }
    unsigned char* s = (unsigned char*)malloc(*len + 1);
    if (s == NULL) { r->bad = 1; bpe_fail_(r->err, r->errlen, "out of memory"); return NULL; }
    if (bpe_read_(r, s, *len, what) != 0) { free(s); return NULL; }
    s[*len] = 0;
    return s;
}

static inline int bpe_load(BpeEncoder* e, const char* path, char* err, size_t errlen) {
    memset(e, 0, sizeof(*e));
    FILE* f = fopen(path, "rb");
    if (f == NULL) return bpe_fail_(err, errlen, "tokenizer %s: cannot open", path);
    BpeReader_ r = {f, path, err, errlen, 0};
    uint32_t h[256];
    for (int i = 0; i < 256; i++) h[i] = bpe_read_u32_(&r, "the header");
    if (r.bad) { fclose(f); return -1; }
    if (h[0] != BPE_TOKENIZER_MAGIC) {
        fclose(f);
        return bpe_fail_(err, errlen, "tokenizer %s: bad magic %u (not a tokenizer.bin)", path, h[0]);
    }
    if (h[1] != 3) {
        fclose(f);
        return bpe_fail_(err, errlen, "tokenizer %s: version %u holds no merges, so text cannot be encoded in C; "
                         "rewrite it as version 3 with python3 data/text_tokenizers.py write-bin --tokenizer "
                         "gpt2|neox ... (or data/prepare.py)", path, h[1]);
    }
    if (h[2] == 0 || h[2] > (1u << 24) || h[3] >= h[2] || h[4] != 1 || h[5] > 1 || h[6] > (1u << 24) ||
        h[7] > (1u << 16)) {
        fclose(f);
        return bpe_fail_(err, errlen, "tokenizer %s: header fields out of range (vocab %u, eot %u, pre-tokenizer %u, "
                         "normalizer %u, merges %u, added %u): corrupt file", path, h[2], h[3], h[4], h[5], h[6], h[7]);
    }
    e->vocab_size = (int)h[2];
    e->eot = (int)h[3];
    e->nfc = (int)h[5];
    e->num_merges = (int)h[6];
    e->num_added = (int)h[7];
    /* skip the version-2 table (uint8 lengths, truncated tokens): the full bytes follow */
    for (int i = 0; i < e->vocab_size && !r.bad; i++) {
        unsigned char len, buf[256];
        bpe_read_(&r, &len, 1, "the version-2 token table");
        bpe_read_(&r, buf, len, "the version-2 token table");
    }
    e->tok = (unsigned char**)calloc((size_t)e->vocab_size, sizeof(unsigned char*));
    e->tok_len = (uint32_t*)calloc((size_t)e->vocab_size, sizeof(uint32_t));
    e->in_vocab = (unsigned char*)calloc((size_t)e->vocab_size, 1);
    e->m_left = (unsigned char**)calloc((size_t)e->num_merges + 1, sizeof(unsigned char*));
    e->m_right = (unsigned char**)calloc((size_t)e->num_merges + 1, sizeof(unsigned char*));
    e->m_left_len = (uint32_t*)calloc((size_t)e->num_merges + 1, sizeof(uint32_t));
    e->m_right_len = (uint32_t*)calloc((size_t)e->num_merges + 1, sizeof(uint32_t));
    e->added_id = (int32_t*)calloc((size_t)e->num_added + 1, sizeof(int32_t));
    e->added = (unsigned char**)calloc((size_t)e->num_added + 1, sizeof(unsigned char*));
    e->added_len = (uint32_t*)calloc((size_t)e->num_added + 1, sizeof(uint32_t));
    if (!e->tok || !e->tok_len || !e->in_vocab || !e->m_left || !e->m_right || !e->m_left_len || !e->m_right_len ||
        !e->added_id || !e->added || !e->added_len) {
        fclose(f); bpe_free(e);
        return bpe_fail_(err, errlen, "out of memory");
    }
    int vocab_count = 0;
    for (int i = 0; i < e->vocab_size && !r.bad; i++) {
        bpe_read_(&r, &e->in_vocab[i], 1, "the encoder table");
        e->tok[i] = bpe_read_str_(&r, &e->tok_len[i], "a token of the encoder table");
        vocab_count += e->in_vocab[i] != 0;
    }
    for (int m = 0; m < e->num_merges && !r.bad; m++) {
        e->m_left[m] = bpe_read_str_(&r, &e->m_left_len[m], "a merge");
        e->m_right[m] = bpe_read_str_(&r, &e->m_right_len[m], "a merge");
    }
    for (int a = 0; a < e->num_added && !r.bad; a++) {
        e->added_id[a] = (int32_t)bpe_read_u32_(&r, "an added token");
        e->added[a] = bpe_read_str_(&r, &e->added_len[a], "an added token");
        if (!r.bad && (e->added_id[a] < 0 || e->added_id[a] >= e->vocab_size || e->added_len[a] == 0)) {
            r.bad = 1;
            bpe_fail_(err, errlen, "tokenizer %s: added token %d has id %d / length %u: corrupt file", path, a,
                      e->added_id[a], e->added_len[a]);
        }
    }
    uint32_t end = r.bad ? 0 : bpe_read_u32_(&r, "the end marker");
    if (!r.bad && end != BPE_TOKENIZER_MAGIC) {
        r.bad = 1;
        bpe_fail_(err, errlen, "tokenizer %s: end marker %u, expected %u: corrupt file", path, end, BPE_TOKENIZER_MAGIC);
    }
    if (!r.bad && fgetc(f) != EOF) {
        r.bad = 1;
        bpe_fail_(err, errlen, "tokenizer %s: bytes after the end marker: corrupt file", path);
    }
    fclose(f);
    if (r.bad) { bpe_free(e); return -1; }
    /* the hash tables */
    e->vocab_cap = bpe_pow2_((size_t)vocab_count);
    e->vocab_hash = (int32_t*)malloc(e->vocab_cap * sizeof(int32_t));
    e->merge_cap = e->num_merges ? bpe_pow2_((size_t)e->num_merges) : 0;
    e->merge_hash = (int32_t*)malloc((e->merge_cap ? e->merge_cap : 1) * sizeof(int32_t));
    if (!e->vocab_hash || !e->merge_hash) { bpe_free(e); return bpe_fail_(err, errlen, "out of memory"); }
    memset(e->vocab_hash, 0xff, e->vocab_cap * sizeof(int32_t));
    memset(e->merge_hash, 0xff, (e->merge_cap ? e->merge_cap : 1) * sizeof(int32_t));
    for (int i = 0; i < e->vocab_size; i++) {
        if (!e->in_vocab[i] || bpe_vocab_find(e, e->tok[i], e->tok_len[i]) >= 0) continue; /* first id wins */
        size_t mask = e->vocab_cap - 1, j = (size_t)bpe_hash_bytes_(14695981039346656037ull, e->tok[i], e->tok_len[i]) & mask;
        while (e->vocab_hash[j] >= 0) j = (j + 1) & mask;
        e->vocab_hash[j] = i;
    }
    for (int m = 0; m < e->num_merges; m++) {
        if (bpe_merge_rank(e, e->m_left[m], e->m_left_len[m], e->m_right[m], e->m_right_len[m]) >= 0) continue;
        size_t mask = e->merge_cap - 1;
        size_t j = (size_t)bpe_pair_hash_(e->m_left[m], e->m_left_len[m], e->m_right[m], e->m_right_len[m]) & mask;
        while (e->merge_hash[j] >= 0) j = (j + 1) & mask;
        e->merge_hash[j] = m;
    }
    return 0;
}

static inline void bpe_free(BpeEncoder* e) {
    if (e->tok) for (int i = 0; i < e->vocab_size; i++) free(e->tok[i]);
    if (e->m_left) for (int m = 0; m < e->num_merges; m++) { free(e->m_left[m]); free(e->m_right[m]); }
    if (e->added) for (int a = 0; a < e->num_added; a++) free(e->added[a]);
    free(e->tok); free(e->tok_len); free(e->in_vocab); free(e->vocab_hash); free(e->m_left); free(e->m_right);
    free(e->m_left_len); free(e->m_right_len); free(e->merge_hash); free(e->added_id); free(e->added);
    free(e->added_len);
    memset(e, 0, sizeof(*e));
}

/* ---- unicode ---- */

static inline int bpe_in_ranges_(uint32_t cp, const UniRange* r, int n) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid].lo) hi = mid - 1;
        else if (cp > r[mid].hi) lo = mid + 1;
        else return 1;
    }
    return 0;
}

enum { BPE_OTHER = 0, BPE_LETTER = 1, BPE_NUMBER = 2, BPE_SPACE = 3 };

static inline int bpe_class(uint32_t cp) {
    if (cp < 128) { /* ASCII fast path, same answers as the tables */
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return BPE_LETTER;
        if (cp >= '0' && cp <= '9') return BPE_NUMBER;
        if (cp == ' ' || (cp >= 9 && cp <= 13)) return BPE_SPACE;
        return BPE_OTHER;
    }
    for (int i = 0; i < UNI_WHITE_SPACE_COUNT; i++) if (UNI_WHITE_SPACE[i] == cp) return BPE_SPACE;
    if (bpe_in_ranges_(cp, UNI_LETTER, UNI_LETTER_COUNT)) return BPE_LETTER;
    if (bpe_in_ranges_(cp, UNI_NUMBER, UNI_NUMBER_COUNT)) return BPE_NUMBER;
    return BPE_OTHER;
}

/* decodes strict UTF-8 (what Python's str can hold, minus surrogates); returns bytes used, 0 if invalid */
static inline int bpe_utf8_decode_(const unsigned char* s, size_t n, uint32_t* cp) {
    if (n == 0) return 0;
    unsigned char c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    int len;
    uint32_t v, min;
    if ((c & 0xE0) == 0xC0) { len = 2; v = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; v = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

/* ---- pre-tokenizer: one piece of the GPT-2 regex, on code points cps[i..n); returns the piece's end ---- */

static inline int bpe_is_contraction_(const uint32_t* cps, int i, int n) {
    if (cps[i] != '\'' || i + 1 >= n) return 0;
    uint32_t a = cps[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 < n) {
        uint32_t b = cps[i + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
    return 0;
}

static inline int bpe_next_piece_(const uint32_t* cps, const unsigned char* cls, int i, int n) {
    int k = bpe_is_contraction_(cps, i, n);
    if (k) return i + k;
    /* ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional U+0020, then a run of one class */
    int j = (cps[i] == ' ' && i + 1 < n && cls[i + 1] != BPE_SPACE) ? i + 1 : i;
    if (cls[j] != BPE_SPACE) {
        int c = cls[j];
        int e = j + 1;
        while (e < n && cls[e] == c) e++;
        return e;
    }
    /* whitespace: `\s+(?!\S)` takes the run, minus its last character when a non-space follows (that one then
     * prefixes the next piece), unless the run is a single character; `\s+` takes that single character */
    int e = i + 1;
    while (e < n && cls[e] == BPE_SPACE) e++;
    if (e == n) return e;
    return e - i >= 2 ? e - 1 : e;
}

/* ---- BPE on one piece ---- */

typedef struct { int* ids; size_t n, cap; } BpeIds_;

static inline int bpe_push_(BpeIds_* out, int id) {
    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 256;
        int* p = (int*)realloc(out->ids, cap * sizeof(int));
        if (p == NULL) return -1;
        out->ids = p;
        out->cap = cap;
    }
    out->ids[out->n++] = id;
    return 0;
}

/* parts are byte spans [start[i], start[i+1]) of w; scratch sized for n+1 ints each */
static inline int bpe_word_(const BpeEncoder* e, const unsigned char* w, int n, int* start, int* rank, BpeIds_* out,
                            char* err, size_t errlen) {
    int parts = n;
    for (int i = 0; i <= n; i++) start[i] = i;
    while (parts > 1) {
        int best = -1;
        for (int i = 0; i + 1 < parts; i++) {
            rank[i] = bpe_merge_rank(e, w + start[i], (size_t)(start[i + 1] - start[i]), w + start[i + 1],
                                     (size_t)(start[i + 2] - start[i + 1]));
            if (rank[i] >= 0 && (best < 0 || rank[i] < best)) best = rank[i];
        }
        if (best < 0) break;
        /* merge every occurrence of the best pair, left to right, never overlapping (as the Python loop does) */
        int k = 0;
        for (int i = 0; i < parts;) {
            start[k++] = start[i];
            i += (i + 1 < parts && rank[i] == best) ? 2 : 1;
        }
        start[k] = n;
        parts = k;
    }
    for (int i = 0; i < parts; i++) {
        int id = bpe_vocab_find(e, w + start[i], (size_t)(start[i + 1] - start[i]));
        if (id < 0)
            return bpe_fail_(err, errlen, "BPE produced the %d bytes \"%.*s\", which are not in the vocabulary: the "
                             "tokenizer's vocabulary and merges do not belong together", start[i + 1] - start[i],
                             start[i + 1] - start[i], (const char*)(w + start[i]));
        if (bpe_push_(out, id) != 0) return bpe_fail_(err, errlen, "out of memory");
    }
    return 0;
}

/* pre-tokenizes and encodes text[0..len) (no added tokens inside) */
static inline int bpe_encode_plain_(const BpeEncoder* e, const unsigned char* text, size_t len, BpeIds_* out,
                                    char* err, size_t errlen) {
    if (len == 0) return 0;
    uint32_t* cps = (uint32_t*)malloc(len * sizeof(uint32_t));
    size_t* at = (size_t*)malloc((len + 1) * sizeof(size_t));
    unsigned char* cls = (unsigned char*)malloc(len);
    int* start = (int*)malloc((len + 2) * sizeof(int));
    int* rank = (int*)malloc((len + 2) * sizeof(int));
    int rc = 0;
    if (!cps || !at || !cls || !start || !rank) rc = bpe_fail_(err, errlen, "out of memory");
    int n = 0;
    for (size_t p = 0; rc == 0 && p < len;) {
        int k = bpe_utf8_decode_(text + p, len - p, &cps[n]);
        if (k == 0) { rc = bpe_fail_(err, errlen, "invalid UTF-8 at byte %zu of the text", p); break; }
        cls[n] = (unsigned char)bpe_class(cps[n]);
        at[n++] = p;
        p += (size_t)k;
    }
    at[n] = len;
    for (int i = 0; rc == 0 && i < n;) {
        int j = bpe_next_piece_(cps, cls, i, n);
        rc = bpe_word_(e, text + at[i], (int)(at[j] - at[i]), start, rank, out, err, errlen);
        i = j;
    }
    free(cps); free(at); free(cls); free(start); free(rank);
    return rc;
}

/* ---- NFC (canonical decomposition, canonical ordering, canonical composition; UAX #15) ----
 * Only run when the text holds a character of UNI_NFC_UNSAFE: any other text is its own NFC form. */

static inline int bpe_ccc_(uint32_t cp) {
    int lo = 0, hi = UNI_CCC_COUNT - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < UNI_CCC[mid].lo) hi = mid - 1;
        else if (cp > UNI_CCC[mid].hi) lo = mid + 1;
        else return UNI_CCC[mid].cls;
    }
    return 0;
}

enum { BPE_SBASE = 0xAC00, BPE_LBASE = 0x1100, BPE_VBASE = 0x1161, BPE_TBASE = 0x11A7, BPE_LCOUNT = 19,
       BPE_VCOUNT = 21, BPE_TCOUNT = 28, BPE_NCOUNT = 588, BPE_SCOUNT = 11172 };

/* appends the full canonical decomposition of cp to out (room for 4 code points needed); returns the count */
static inline int bpe_decompose_(uint32_t cp, uint32_t* out) {
    if (cp >= BPE_SBASE && cp < BPE_SBASE + BPE_SCOUNT) { /* Hangul syllables decompose algorithmically */
        uint32_t s = cp - BPE_SBASE;
        out[0] = BPE_LBASE + s / BPE_NCOUNT;
        out[1] = BPE_VBASE + (s % BPE_NCOUNT) / BPE_TCOUNT;
        if (s % BPE_TCOUNT == 0) return 2;
        out[2] = BPE_TBASE + s % BPE_TCOUNT;
        return 3;
    }
    int lo = 0, hi = UNI_DECOMP_COUNT - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < UNI_DECOMP[mid].cp) hi = mid - 1;
        else if (cp > UNI_DECOMP[mid].cp) lo = mid + 1;
        else {
            for (int k = 0; k < UNI_DECOMP[mid].len; k++) out[k] = UNI_DECOMP_DATA[UNI_DECOMP[mid].offset + k];
            return UNI_DECOMP[mid].len;
        }
    }
    out[0] = cp;
    return 1;
}

/* the primary composite of (a, b), or 0 */
static inline uint32_t bpe_compose_(uint32_t a, uint32_t b) {
    if (a >= BPE_LBASE && a < BPE_LBASE + BPE_LCOUNT && b >= BPE_VBASE && b < BPE_VBASE + BPE_VCOUNT)
        return BPE_SBASE + ((a - BPE_LBASE) * BPE_VCOUNT + (b - BPE_VBASE)) * BPE_TCOUNT;
    if (a >= BPE_SBASE && a < BPE_SBASE + BPE_SCOUNT && (a - BPE_SBASE) % BPE_TCOUNT == 0 && b > BPE_TBASE &&
        b < BPE_TBASE + BPE_TCOUNT)
        return a + (b - BPE_TBASE);
    int lo = 0, hi = UNI_COMP_COUNT - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const UniComp* c = &UNI_COMP[mid];
        if (a < c->first || (a == c->first && b < c->second)) hi = mid - 1;
        else if (a > c->first || (a == c->first && b > c->second)) lo = mid + 1;
        else return c->composite;
    }
    return 0;
}

static inline size_t bpe_utf8_encode_(uint32_t cp, unsigned char* o) {
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = (unsigned char)(0xC0 | (cp >> 6)); o[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12)); o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18)); o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * *out = NFC(text) as malloc'd UTF-8 (*out_len bytes), or *out = NULL when the text is already its own NFC form
 * (no character of UNI_NFC_UNSAFE: the common case, no copy). Returns -1 on invalid UTF-8.
 */
static inline int bpe_nfc_(const unsigned char* text, size_t len, unsigned char** out, size_t* out_len, char* err,
                           size_t errlen) {
    *out = NULL;
    int unsafe = 0;
    for (size_t p = 0; p < len;) {
        uint32_t cp;
        int k = bpe_utf8_decode_(text + p, len - p, &cp);
        if (k == 0) return bpe_fail_(err, errlen, "invalid UTF-8 at byte %zu of the text", p);
        if (cp >= 0x300 && bpe_in_ranges_(cp, UNI_NFC_UNSAFE, UNI_NFC_UNSAFE_COUNT)) unsafe = 1;
        p += (size_t)k;
    }
    if (!unsafe) return 0;
    uint32_t* buf = (uint32_t*)malloc((len * 4 + 4) * sizeof(uint32_t)); /* a code point decomposes to <= 4 */
    unsigned char* o = (unsigned char*)malloc(len * 4 + 4);
    if (buf == NULL || o == NULL) { free(buf); free(o); return bpe_fail_(err, errlen, "out of memory"); }
    size_t n = 0;
    for (size_t p = 0; p < len;) { /* 1. full canonical decomposition */
        uint32_t cp = 0;
        p += (size_t)bpe_utf8_decode_(text + p, len - p, &cp);
        n += (size_t)bpe_decompose_(cp, buf + n);
    }
    /* 2. canonical ordering: a stable sort by combining class of each run of non-starters. Short runs by insertion,
       long ones by counting sort (classes are 1..254), so a run of k marks costs O(k), not O(k^2): the text's
       length bounds the time whatever it holds */
    unsigned char* cc = (unsigned char*)malloc(n + 1);
    uint32_t* tmp = (uint32_t*)malloc((n + 1) * sizeof(uint32_t));
    if (cc == NULL || tmp == NULL) { free(cc); free(tmp); free(buf); free(o); return bpe_fail_(err, errlen, "out of memory"); }
    for (size_t i = 0; i < n; i++) cc[i] = (unsigned char)bpe_ccc_(buf[i]);
    for (size_t a = 0; a < n;) {
        if (cc[a] == 0) { a++; continue; }
        size_t b = a;
        while (b < n && cc[b] != 0) b++;
        if (b - a <= 16) {
            for (size_t i = a + 1; i < b; i++)
                for (size_t j = i; j > a && cc[j - 1] > cc[j]; j--) {
                    uint32_t t = buf[j]; buf[j] = buf[j - 1]; buf[j - 1] = t;
                    unsigned char u = cc[j]; cc[j] = cc[j - 1]; cc[j - 1] = u;
                }
        } else {
            size_t count[257] = {0};
            for (size_t i = a; i < b; i++) count[cc[i] + 1]++;
            for (int k = 1; k < 257; k++) count[k] += count[k - 1];
            for (size_t i = a; i < b; i++) tmp[a + count[cc[i]]++] = buf[i];
            for (size_t i = a; i < b; i++) { buf[i] = tmp[i]; cc[i] = (unsigned char)bpe_ccc_(buf[i]); }
        }
        a = b;
    }
    free(cc);
    free(tmp);
    size_t m = 0; /* 3. canonical composition: each character with the last starter, unless blocked */
    if (n > 0) {
        size_t starter = 0;
        int last = bpe_ccc_(buf[0]) ? 256 : 0;
        m = 1;
        for (size_t i = 1; i < n; i++) {
            uint32_t ch = buf[i];
            int c = bpe_ccc_(ch);
            uint32_t comp = bpe_compose_(buf[starter], ch);
            if (comp != 0 && (last < c || last == 0)) { buf[starter] = comp; continue; }
            if (c == 0) starter = m;
            last = c;
            buf[m++] = ch;
        }
    }
    size_t bytes = 0;
    for (size_t i = 0; i < m; i++) bytes += bpe_utf8_encode_(buf[i], o + bytes);
    free(buf);
    *out = o;
    *out_len = bytes;
    return 0;
}

/* encodes text[0..len) (UTF-8) to ids (malloc'd into *ids, count *n); no end-of-text token is added */
static inline int bpe_encode(const BpeEncoder* e, const char* text, size_t len, int** ids, size_t* n, char* err,
                             size_t errlen) {
    const unsigned char* s = (const unsigned char*)text;
    BpeIds_ out = {NULL, 0, 0};
    unsigned char* normalized = NULL;
    *ids = NULL;
    *n = 0;
    if (e->nfc) {
        if (bpe_nfc_(s, len, &normalized, &len, err, errlen) != 0) return -1;
        if (normalized != NULL) s = normalized;
    }
    size_t seg = 0; /* start of the text not yet encoded */
    int rc = 0;
    for (size_t p = 0; rc == 0 && e->num_added > 0 && p < len;) {
        int hit = -1;
        for (int a = 0; a < e->num_added && hit < 0; a++)
            if (e->added_len[a] <= len - p && memcmp(s + p, e->added[a], e->added_len[a]) == 0) hit = a;
        if (hit < 0) {
            uint32_t cp;
            int k = bpe_utf8_decode_(s + p, len - p, &cp);
            if (k == 0) { rc = bpe_fail_(err, errlen, "invalid UTF-8 at byte %zu of the text", p); break; }
            p += (size_t)k; /* matches start only at character boundaries, as the regex's do */
            continue;
        }
        rc = bpe_encode_plain_(e, s + seg, p - seg, &out, err, errlen);
        if (rc == 0 && bpe_push_(&out, e->added_id[hit]) != 0) rc = bpe_fail_(err, errlen, "out of memory");
        p += e->added_len[hit];
        seg = p;
    }
    if (rc == 0) rc = bpe_encode_plain_(e, s + seg, len - seg, &out, err, errlen);
    free(normalized);
    if (rc != 0) { free(out.ids); return -1; }
    *ids = out.ids ? out.ids : (int*)malloc(sizeof(int));
    *n = out.n;
    return 0;
}

#endif /* MAMBA2_BPE_H */
