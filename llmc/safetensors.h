/*
 * safetensors.h: reads .safetensors files (HF checkpoints, the fixtures in dev/fixtures). Header-only C11.
 *
 * The format: 8 bytes little-endian u64 N, then N bytes of JSON header, then the data. The header is one
 * object: "__metadata__" (optional) maps strings to strings; every other key names a tensor
 *     {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
 * whose bytes are data[begin, end), offsets relative to the first byte after the header, little-endian.
 *
 *   SafeTensors st;
 *   char err[512];
 *   if (safetensors_open(&st, path, err, sizeof err) != 0) { fprintf(stderr, "%s\n", err); exit(1); }
 *   if (safetensors_read_f32(&st, "param.backbone.norm_f.weight", w, 64, err, sizeof err) != 0) { ... }
 *   safetensors_close(&st);
 *
 * safetensors_open checks the whole header before anything is read: the header length against the file
 * size, the JSON (strict, see json.h), every entry's fields and their types, known dtypes, that each
 * shape's byte size equals its data_offsets span, that the data lies inside the file, and that no two
 * tensors' bytes overlap. Gaps between tensors and bytes after the last one are allowed (the format does
 * not need them, but they do no harm). Errors name the file and the problem and are returned through
 * err; nothing here prints or exits. Data is read on demand with stdio, so a 10 GB checkpoint costs
 * memory only for the tensors asked for. Offsets beyond 2^63 (long) are rejected.
 */
#ifndef MAMBA2_SAFETENSORS_H
#define MAMBA2_SAFETENSORS_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "json.h"

#define SAFETENSORS_MAX_NAME 256
#define SAFETENSORS_MAX_DIMS 8
#define SAFETENSORS_MAX_HEADER (100u * 1024u * 1024u) /* the format's own limit on the JSON header */

typedef struct {
    char name[SAFETENSORS_MAX_NAME];
    char dtype[8];                       /* "F32", "BF16", ... as written in the file */
    int ndim;
    long long shape[SAFETENSORS_MAX_DIMS];
    size_t numel;                        /* product of shape (1 for a scalar, ndim == 0) */
    size_t begin, end;                   /* data_offsets, relative to the start of the data */
} SafeTensorInfo;

typedef struct {
    char path[512];
    FILE* file;
    size_t file_size;
    size_t data_start;                   /* 8 + header length */
    int num_tensors;
    SafeTensorInfo* tensors;             /* in header order */
    int num_metadata;
    char** metadata_keys;
    char** metadata_values;
} SafeTensors;

/* bytes per element for every dtype the format defines; 0 for an unknown name */
static inline size_t safetensors_dtype_size(const char* dtype) {
    static const struct { const char* name; size_t size; } table[] = {
        {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
        {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1}, {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1},
        {"BOOL", 1},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(dtype, table[i].name) == 0) return table[i].size;
    return 0;
}

static inline void safetensors_close_(SafeTensors* st) {
    if (st->file != NULL) fclose(st->file);
    for (int i = 0; i < st->num_metadata; i++) {
        free(st->metadata_keys[i]);
        free(st->metadata_values[i]);
    }
    free(st->metadata_keys);
    free(st->metadata_values);
    free(st->tensors);
    memset(st, 0, sizeof(*st));
}

/* frees everything; safe on a SafeTensors that failed to open or was closed already */
static inline void safetensors_close(SafeTensors* st) { if (st != NULL) safetensors_close_(st); }

/* a JSON number that must be a non-negative integer below 2^53 (exact in a double) */
static inline int safetensors_uint_(const JsonValue* v, unsigned long long* out) {
    if (v->type != JSON_NUMBER || !(v->number >= 0) || v->number != floor(v->number) || v->number > 9007199254740992.0)
        return -1;
    *out = (unsigned long long)v->number;
    return 0;
}

/* formats a shape as "[2, 3]" for messages */
static inline const char* safetensors_shape_str_(const SafeTensorInfo* t, char* buf, size_t n) {
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && used < n; d++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", d ? ", " : "", t->shape[d]);
    if (used < n) snprintf(buf + used, n - used, "]");
    return buf;
}

/* checks one tensor entry of the header and fills *t */
static inline int safetensors_parse_entry_(const SafeTensors* st, const char* name, const JsonValue* v,
                                           SafeTensorInfo* t, char* err, size_t errlen) {
    const char* path = st->path;
    char ferr[256];
    memset(t, 0, sizeof(*t));
    if (strlen(name) >= SAFETENSORS_MAX_NAME)
        return json_fail_(err, errlen, "safetensors %s: tensor name \"%.60s...\" is %zu bytes long, the limit is %d",
                          path, name, strlen(name), SAFETENSORS_MAX_NAME - 1);
    strcpy(t->name, name);
    if (v->type != JSON_OBJECT)
        return json_fail_(err, errlen, "safetensors %s: tensor %s: expected an object with dtype, shape and "
                          "data_offsets, got %s", path, name, json_type_name(v->type));
    for (int i = 0; i < v->count; i++) {
        const char* k = v->keys[i];
        if (strcmp(k, "dtype") != 0 && strcmp(k, "shape") != 0 && strcmp(k, "data_offsets") != 0)
            return json_fail_(err, errlen, "safetensors %s: tensor %s: unexpected field \"%s\" (expected only "
                              "dtype, shape, data_offsets)", path, name, k);
    }
    const char* dtype;
    if (json_get_string(v, "dtype", &dtype, ferr, sizeof ferr) != 0)
        return json_fail_(err, errlen, "safetensors %s: tensor %s: %s", path, name, ferr);
    size_t esize = safetensors_dtype_size(dtype);
    if (esize == 0 || strlen(dtype) >= sizeof(t->dtype))
        return json_fail_(err, errlen, "safetensors %s: tensor %s: unknown dtype \"%.20s\"", path, name, dtype);
    strcpy(t->dtype, dtype);

    const JsonValue* shape = json_get_typed(v, "shape", JSON_ARRAY, ferr, sizeof ferr);
    if (shape == NULL) return json_fail_(err, errlen, "safetensors %s: tensor %s: %s", path, name, ferr);
    if (shape->count > SAFETENSORS_MAX_DIMS)
        return json_fail_(err, errlen, "safetensors %s: tensor %s: shape has %d dimensions, at most %d are supported",
                          path, name, shape->count, SAFETENSORS_MAX_DIMS);
    t->ndim = shape->count;
    size_t numel = 1;
    for (int d = 0; d < shape->count; d++) {
        unsigned long long n;
        if (safetensors_uint_(&shape->items[d], &n) != 0) {
            const JsonValue* x = &shape->items[d];
            if (x->type == JSON_NUMBER)
                return json_fail_(err, errlen, "safetensors %s: tensor %s: shape[%d] must be a non-negative "
                                  "integer, got %.17g", path, name, d, x->number);
            return json_fail_(err, errlen, "safetensors %s: tensor %s: shape[%d] must be a non-negative integer, "
                              "got a %s", path, name, d, json_type_name(x->type));
        }
        t->shape[d] = (long long)n;
        if (n != 0 && numel > SIZE_MAX / n)
            return json_fail_(err, errlen, "safetensors %s: tensor %s: shape is too large (element count overflows)", path, name);
        numel *= (size_t)n;
    }
    if (numel > SIZE_MAX / esize)
        return json_fail_(err, errlen, "safetensors %s: tensor %s: shape is too large (byte size overflows)", path, name);
    t->numel = numel;

    const JsonValue* offs = json_get_typed(v, "data_offsets", JSON_ARRAY, ferr, sizeof ferr);
    if (offs == NULL) return json_fail_(err, errlen, "safetensors %s: tensor %s: %s", path, name, ferr);
    unsigned long long b, e;
    if (offs->count != 2 || safetensors_uint_(&offs->items[0], &b) != 0 || safetensors_uint_(&offs->items[1], &e) != 0)
        return json_fail_(err, errlen, "safetensors %s: tensor %s: data_offsets must be [begin, end], two "
                          "non-negative integers", path, name);
    if (b > e)
        return json_fail_(err, errlen, "safetensors %s: tensor %s: data_offsets [%llu, %llu] end before they begin",
                          path, name, b, e);
    t->begin = (size_t)b;
    t->end = (size_t)e;
    char sbuf[160];
    if (e - b != numel * esize)
        return json_fail_(err, errlen, "safetensors %s: tensor %s: shape %s of %s needs %zu bytes, data_offsets "
                          "[%llu, %llu] hold %llu", path, name, safetensors_shape_str_(t, sbuf, sizeof sbuf),
                          t->dtype, numel * esize, b, e, e - b);
    size_t data_size = st->file_size - st->data_start;
    if (e > data_size)
        return json_fail_(err, errlen, "safetensors %s: tensor %s: data_offsets [%llu, %llu] lie past the end of "
                          "the data (%zu bytes after the header): the file is truncated or the header is wrong",
                          path, name, b, e, data_size);
    return 0;
}

static inline int safetensors_by_begin_(const void* a, const void* b) {
    const SafeTensorInfo* x = *(const SafeTensorInfo* const*)a;
    const SafeTensorInfo* y = *(const SafeTensorInfo* const*)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : (x->end > y->end);
}

/* no two non-empty tensors may share a byte */
static inline int safetensors_check_overlap_(const SafeTensors* st, char* err, size_t errlen) {
    if (st->num_tensors < 2) return 0;
    const SafeTensorInfo** order = (const SafeTensorInfo**)malloc((size_t)st->num_tensors * sizeof(*order));
    if (order == NULL) return json_fail_(err, errlen, "safetensors %s: out of memory", st->path);
    for (int i = 0; i < st->num_tensors; i++) order[i] = &st->tensors[i];
    qsort(order, (size_t)st->num_tensors, sizeof(*order), safetensors_by_begin_);
    const SafeTensorInfo* prev = NULL;
    int rc = 0;
    for (int i = 0; i < st->num_tensors && rc == 0; i++) {
        const SafeTensorInfo* t = order[i];
        if (t->begin == t->end) continue; /* an empty tensor owns no bytes */
        if (prev != NULL && t->begin < prev->end)
            rc = json_fail_(err, errlen, "safetensors %s: tensors %s [%zu, %zu) and %s [%zu, %zu) overlap in the data",
                            st->path, prev->name, prev->begin, prev->end, t->name, t->begin, t->end);
        prev = t;
    }
    free(order);
    return rc;
}

static inline int safetensors_parse_metadata_(SafeTensors* st, const JsonValue* meta, char* err, size_t errlen) {
    if (meta->type != JSON_OBJECT)
        return json_fail_(err, errlen, "safetensors %s: __metadata__: expected an object of strings, got %s",
                          st->path, json_type_name(meta->type));
    if (meta->count == 0) return 0;
    st->metadata_keys = (char**)calloc((size_t)meta->count, sizeof(char*));
    st->metadata_values = (char**)calloc((size_t)meta->count, sizeof(char*));
    if (st->metadata_keys == NULL || st->metadata_values == NULL)
        return json_fail_(err, errlen, "safetensors %s: out of memory", st->path);
    for (int i = 0; i < meta->count; i++) {
        const JsonValue* v = &meta->items[i];
        if (v->type != JSON_STRING)
            return json_fail_(err, errlen, "safetensors %s: __metadata__: value of \"%s\" is a %s, expected a string",
                              st->path, meta->keys[i], json_type_name(v->type));
        st->metadata_keys[i] = (char*)malloc(strlen(meta->keys[i]) + 1);
        st->metadata_values[i] = (char*)malloc(v->length + 1);
        st->num_metadata = i + 1;
        if (st->metadata_keys[i] == NULL || st->metadata_values[i] == NULL)
            return json_fail_(err, errlen, "safetensors %s: out of memory", st->path);
        strcpy(st->metadata_keys[i], meta->keys[i]);
        memcpy(st->metadata_values[i], v->string, v->length + 1);
    }
    return 0;
}

/* reads and validates the header. 0 = ok; otherwise -1 with the reason in err and *st zeroed. */
static inline int safetensors_open(SafeTensors* st, const char* path, char* err, size_t errlen) {
    memset(st, 0, sizeof(*st));
    snprintf(st->path, sizeof st->path, "%s", path);
    st->file = fopen(path, "rb");
    if (st->file == NULL) {
        json_fail_(err, errlen, "safetensors %s: cannot open the file for reading (does it exist?)", path);
        safetensors_close_(st);
        return -1;
    }
    char* text = NULL;
    JsonValue root;
    memset(&root, 0, sizeof root);
    int rc = -1;
    unsigned char lenbuf[8]; /* declared before the first goto: C++ (the GPU test) forbids jumping past an init */
    uint64_t hlen = 0;
    if (fseek(st->file, 0, SEEK_END) != 0 || ftell(st->file) < 0) {
        json_fail_(err, errlen, "safetensors %s: cannot seek in the file (not a regular file?)", path);
        goto done;
    }
    st->file_size = (size_t)ftell(st->file);
    rewind(st->file);
    if (st->file_size < 8 || fread(lenbuf, 1, 8, st->file) != 8) {
        json_fail_(err, errlen, "safetensors %s: file is %zu bytes, too short for the 8-byte header length", path, st->file_size);
        goto done;
    }
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | lenbuf[i];
    if (hlen > st->file_size - 8) {
        json_fail_(err, errlen, "safetensors %s: header length %llu runs past the end of the file (%zu bytes): "
                   "truncated, or not a safetensors file", path, (unsigned long long)hlen, st->file_size);
        goto done;
    }
    if (hlen > SAFETENSORS_MAX_HEADER) {
        json_fail_(err, errlen, "safetensors %s: header length %llu is over the format's limit of %u bytes",
                   path, (unsigned long long)hlen, SAFETENSORS_MAX_HEADER);
        goto done;
    }
    st->data_start = 8 + (size_t)hlen;
    text = (char*)malloc((size_t)hlen + 1);
    if (text == NULL) { json_fail_(err, errlen, "safetensors %s: out of memory for a %llu-byte header", path, (unsigned long long)hlen); goto done; }
    if (fread(text, 1, (size_t)hlen, st->file) != (size_t)hlen) {
        json_fail_(err, errlen, "safetensors %s: could not read the %llu-byte header", path, (unsigned long long)hlen);
        goto done;
    }
    text[hlen] = '\0';
    char jerr[256];
    if (json_parse(&root, text, (size_t)hlen, 0, jerr, sizeof jerr) != 0) {
        json_fail_(err, errlen, "safetensors %s: header (bytes 8..%llu of the file) is not valid: %s",
                   path, (unsigned long long)(8 + hlen), jerr);
        goto done;
    }
    if (root.type != JSON_OBJECT) {
        json_fail_(err, errlen, "safetensors %s: header: expected object at the top level, got %s", path, json_type_name(root.type));
        goto done;
    }
    st->tensors = (SafeTensorInfo*)calloc(root.count ? (size_t)root.count : 1, sizeof(SafeTensorInfo));
    if (st->tensors == NULL) { json_fail_(err, errlen, "safetensors %s: out of memory", path); goto done; }
    for (int i = 0; i < root.count; i++) {
        if (strcmp(root.keys[i], "__metadata__") == 0) {
            if (safetensors_parse_metadata_(st, &root.items[i], err, errlen) != 0) goto done;
            continue;
        }
        if (safetensors_parse_entry_(st, root.keys[i], &root.items[i], &st->tensors[st->num_tensors], err, errlen) != 0)
            goto done;
        st->num_tensors++;
    }
    if (safetensors_check_overlap_(st, err, errlen) != 0) goto done;
    rc = 0;
done:
    free(text);
    json_free(&root);
    if (rc != 0) safetensors_close_(st);
    return rc;
}

/* the entry for `name`, or NULL */
static inline const SafeTensorInfo* safetensors_find(const SafeTensors* st, const char* name) {
    for (int i = 0; i < st->num_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

/* the metadata value for `key`, or NULL if the file has none */
static inline const char* safetensors_metadata(const SafeTensors* st, const char* key) {
    for (int i = 0; i < st->num_metadata; i++)
        if (strcmp(st->metadata_keys[i], key) == 0) return st->metadata_values[i];
    return NULL;
}

/* ----------------------------------------------------------------------------------------------------------
 * element conversion (explicit little-endian decoding, so the reader works on any host) */

static inline float safetensors_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    if (exp == 0x1F) bits = sign | 0x7F800000u | (mant << 13);      /* inf / nan */
    else if (exp != 0) bits = sign | ((exp + 112) << 23) | (mant << 13); /* normal: rebias 15 -> 127 */
    else if (mant == 0) bits = sign;                                   /* +-0 */
    else { /* subnormal: mant * 2^-24, exact in float */
        float f = (float)mant * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float safetensors_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint64_t safetensors_le_(const unsigned char* p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* finds `name`, checks its element count, and positions the file at its first byte */
static inline const SafeTensorInfo* safetensors_prepare_read_(const SafeTensors* st, const char* name,
                                                              size_t expected_numel, char* err, size_t errlen) {
    if (st->file == NULL) { json_fail_(err, errlen, "safetensors: read of %s from a file that is not open", name); return NULL; }
    const SafeTensorInfo* t = safetensors_find(st, name);
    if (t == NULL) { json_fail_(err, errlen, "safetensors %s: tensor %s not found in the file", st->path, name); return NULL; }
    if (t->numel != expected_numel) {
        char sbuf[160];
        json_fail_(err, errlen, "safetensors %s: tensor %s has %zu elements (shape %s), expected %zu",
                   st->path, name, t->numel, safetensors_shape_str_(t, sbuf, sizeof sbuf), expected_numel);
        return NULL;
    }
    size_t at = st->data_start + t->begin;
    if (at > (size_t)LONG_MAX || fseek(st->file, (long)at, SEEK_SET) != 0) {
        json_fail_(err, errlen, "safetensors %s: cannot seek to byte %zu for tensor %s", st->path, at, name);
        return NULL;
    }
    return t;
}

/* reads the tensor's bytes in pieces through a small buffer and hands each piece to convert() */
static inline int safetensors_read_chunks_(const SafeTensors* st, const SafeTensorInfo* t, size_t esize,
                                           void (*convert)(const unsigned char*, size_t, void*, size_t),
                                           void* out, char* err, size_t errlen) {
    unsigned char buf[1 << 16];
    size_t per = sizeof buf / esize, done = 0;
    while (done < t->numel) {
        size_t n = t->numel - done < per ? t->numel - done : per;
        if (fread(buf, esize, n, st->file) != n)
            return json_fail_(err, errlen, "safetensors %s: short read in tensor %s (file changed or truncated "
                              "since it was opened?)", st->path, t->name);
        convert(buf, n, out, done);
        done += n;
    }
    return 0;
}

static inline void safetensors_cvt_f32_(const unsigned char* b, size_t n, void* out, size_t at) {
    float* o = (float*)out + at;
    for (size_t i = 0; i < n; i++) { uint32_t u = (uint32_t)safetensors_le_(b + 4 * i, 4); memcpy(&o[i], &u, 4); }
}
static inline void safetensors_cvt_f64_(const unsigned char* b, size_t n, void* out, size_t at) {
    float* o = (float*)out + at;
    for (size_t i = 0; i < n; i++) { uint64_t u = safetensors_le_(b + 8 * i, 8); double d; memcpy(&d, &u, 8); o[i] = (float)d; }
}
static inline void safetensors_cvt_f16_(const unsigned char* b, size_t n, void* out, size_t at) {
    float* o = (float*)out + at;
    for (size_t i = 0; i < n; i++) o[i] = safetensors_f16_to_f32((uint16_t)safetensors_le_(b + 2 * i, 2));
}
static inline void safetensors_cvt_bf16_(const unsigned char* b, size_t n, void* out, size_t at) {
    float* o = (float*)out + at;
    for (size_t i = 0; i < n; i++) o[i] = safetensors_bf16_to_f32((uint16_t)safetensors_le_(b + 2 * i, 2));
}
static inline void safetensors_cvt_i32_(const unsigned char* b, size_t n, void* out, size_t at) {
    int* o = (int*)out + at;
    for (size_t i = 0; i < n; i++) o[i] = (int)(int32_t)(uint32_t)safetensors_le_(b + 4 * i, 4);
}

/* reads an F32/F16/BF16/F64 tensor as float; expected_numel must equal the tensor's element count */
static inline int safetensors_read_f32(const SafeTensors* st, const char* name, float* out, size_t expected_numel,
                                       char* err, size_t errlen) {
    const SafeTensorInfo* t = safetensors_prepare_read_(st, name, expected_numel, err, errlen);
    if (t == NULL) return -1;
    if (strcmp(t->dtype, "F32") == 0) return safetensors_read_chunks_(st, t, 4, safetensors_cvt_f32_, out, err, errlen);
    if (strcmp(t->dtype, "F64") == 0) return safetensors_read_chunks_(st, t, 8, safetensors_cvt_f64_, out, err, errlen);
    if (strcmp(t->dtype, "F16") == 0) return safetensors_read_chunks_(st, t, 2, safetensors_cvt_f16_, out, err, errlen);
    if (strcmp(t->dtype, "BF16") == 0) return safetensors_read_chunks_(st, t, 2, safetensors_cvt_bf16_, out, err, errlen);
    return json_fail_(err, errlen, "safetensors %s: tensor %s has dtype %s, which cannot be read as float "
                      "(F32, F16, BF16, F64 can)", st->path, name, t->dtype);
}

/* reads an I32 tensor, or an I64 one whose values all fit in int32 */
static inline int safetensors_read_i32(const SafeTensors* st, const char* name, int* out, size_t expected_numel,
                                       char* err, size_t errlen) {
    const SafeTensorInfo* t = safetensors_prepare_read_(st, name, expected_numel, err, errlen);
    if (t == NULL) return -1;
    if (strcmp(t->dtype, "I32") == 0) return safetensors_read_chunks_(st, t, 4, safetensors_cvt_i32_, out, err, errlen);
    if (strcmp(t->dtype, "I64") == 0) {
        unsigned char b[8];
        for (size_t i = 0; i < t->numel; i++) {
            if (fread(b, 1, 8, st->file) != 8)
                return json_fail_(err, errlen, "safetensors %s: short read in tensor %s", st->path, name);
            int64_t v = (int64_t)safetensors_le_(b, 8);
            if (v < INT32_MIN || v > INT32_MAX)
                return json_fail_(err, errlen, "safetensors %s: tensor %s: element %zu = %lld does not fit in int32",
                                  st->path, name, i, (long long)v);
            out[i] = (int)v;
        }
        return 0;
    }
    return json_fail_(err, errlen, "safetensors %s: tensor %s has dtype %s, which cannot be read as int32 "
                      "(I32, I64 can)", st->path, name, t->dtype);
}

#endif /* MAMBA2_SAFETENSORS_H */
