/*
 * safetensors_write.h: writes .safetensors files (the HF export, test fixtures). Header-only C11, also compiles as
 * C++ (nvcc). The reader and the format's description are in safetensors.h.
 *
 *   SafeTensorOut t[2] = {...};   name, dtype ("F32" or "I32"), shape, data (host floats / int32s)
 *   char err[512];
 *   if (safetensors_write(path, t, 2, "{\"format\":\"pt\"}", err, sizeof err) != 0) { fprintf(stderr, ...) }
 *
 * Tensors are written in the order given, back to back; the JSON header is padded with spaces to a multiple of 8
 * bytes (what the reference writer does, so the data is 8-byte aligned when the file is mapped). Values are
 * written little-endian whatever the host. The file is written to "<path>.tmp" and renamed, so a crash never leaves
 * a half-written file under the real name. Nothing here prints or exits: errors come back through err.
 */
#ifndef MAMBA2_SAFETENSORS_WRITE_H
#define MAMBA2_SAFETENSORS_WRITE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "json.h"

typedef struct {
    const char* name;
    const char* dtype;       /* "F32" (data: float*) or "I32" (data: int32_t*) */
    int ndim;
    long long shape[8];
    const void* data;
} SafeTensorOut;

/* a growing text buffer for the JSON header */
typedef struct { char* s; size_t len, cap; int oom; } StwBuf_;

static inline void stw_put_(StwBuf_* b, const char* text, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char* s = (char*)realloc(b->s, cap);
        if (s == NULL) { b->oom = 1; return; }
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->len, text, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static inline void stw_puts_(StwBuf_* b, const char* text) { stw_put_(b, text, strlen(text)); }

/* a JSON string literal; tensor names are plain ASCII in practice, anything else is escaped */
static inline void stw_put_string_(StwBuf_* b, const char* s) {
    stw_puts_(b, "\"");
    for (const unsigned char* p = (const unsigned char*)s; *p; p++) {
        char tmp[8];
        if (*p == '"' || *p == '\\') { tmp[0] = '\\'; tmp[1] = (char)*p; stw_put_(b, tmp, 2); }
        else if (*p < 0x20) { snprintf(tmp, sizeof tmp, "\\u%04x", *p); stw_puts_(b, tmp); }
        else stw_put_(b, (const char*)p, 1);
    }
    stw_puts_(b, "\"");
}

static inline size_t stw_numel_(const SafeTensorOut* t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

/* writes n 4-byte values little-endian through a small buffer */
static inline int stw_write_u32_(FILE* f, const void* data, size_t n) {
    unsigned char buf[1 << 14];
    const uint32_t* v = (const uint32_t*)data;
    size_t per = sizeof buf / 4;
    for (size_t done = 0; done < n;) {
        size_t k = n - done < per ? n - done : per;
        for (size_t i = 0; i < k; i++) {
            uint32_t u = v[done + i];
            buf[4 * i] = (unsigned char)u; buf[4 * i + 1] = (unsigned char)(u >> 8);
            buf[4 * i + 2] = (unsigned char)(u >> 16); buf[4 * i + 3] = (unsigned char)(u >> 24);
        }
        if (fwrite(buf, 4, k, f) != k) return -1;
        done += k;
    }
    return 0;
}

/*
 * Writes the tensors (in the given order) and an optional __metadata__ object (metadata_json: the text of a JSON
 * object of strings, or NULL). Returns 0, or -1 with the reason in err.
 */
static inline int safetensors_write(const char* path, const SafeTensorOut* tensors, int n, const char* metadata_json,
                                    char* err, size_t errlen) {
    StwBuf_ h;
    memset(&h, 0, sizeof h);
    stw_puts_(&h, "{");
    int first = 1;
    if (metadata_json != NULL) {
        stw_puts_(&h, "\"__metadata__\":");
        stw_puts_(&h, metadata_json);
        first = 0;
    }
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        const SafeTensorOut* t = &tensors[i];
        if (strcmp(t->dtype, "F32") != 0 && strcmp(t->dtype, "I32") != 0) {
            free(h.s);
            return json_fail_(err, errlen, "safetensors %s: tensor %s: dtype %s cannot be written (F32 and I32 can)",
                              path, t->name, t->dtype);
        }
        if (t->ndim < 0 || t->ndim > 8) {
            free(h.s);
            return json_fail_(err, errlen, "safetensors %s: tensor %s: %d dimensions (0..8 allowed)", path, t->name,
                              t->ndim);
        }
        char tmp[96];
        size_t bytes = stw_numel_(t) * 4;
        if (!first) stw_puts_(&h, ",");
        first = 0;
        stw_put_string_(&h, t->name);
        stw_puts_(&h, ":{\"dtype\":");
        stw_put_string_(&h, t->dtype);
        stw_puts_(&h, ",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(tmp, sizeof tmp, "%s%lld", d ? "," : "", t->shape[d]);
            stw_puts_(&h, tmp);
        }
        snprintf(tmp, sizeof tmp, "],\"data_offsets\":[%zu,%zu]}", offset, offset + bytes);
        stw_puts_(&h, tmp);
        offset += bytes;
    }
    stw_puts_(&h, "}");
    while (!h.oom && h.len % 8 != 0) stw_puts_(&h, " ");
    if (h.oom) { free(h.s); return json_fail_(err, errlen, "safetensors %s: out of memory for the header", path); }

    char tmp_path[4400]; /* room for any path the callers build (<= 4300) plus ".tmp" */
    snprintf(tmp_path, sizeof tmp_path, "%s.tmp", path);
    FILE* f = fopen(tmp_path, "wb");
    if (f == NULL) {
        free(h.s);
        return json_fail_(err, errlen, "safetensors %s: cannot open %s for writing (does the folder exist, is it "
                          "writable?)", path, tmp_path);
    }
    unsigned char lenbuf[8];
    uint64_t hl = (uint64_t)h.len;
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)(hl >> (8 * i));
    int bad = fwrite(lenbuf, 1, 8, f) != 8 || fwrite(h.s, 1, h.len, f) != h.len;
    for (int i = 0; i < n && !bad; i++) bad = stw_write_u32_(f, tensors[i].data, stw_numel_(&tensors[i])) != 0;
    free(h.s);
    if (fclose(f) != 0) bad = 1;
    if (bad) {
        remove(tmp_path);
        return json_fail_(err, errlen, "safetensors %s: write failed (disk full?)", path);
    }
    if (rename(tmp_path, path) != 0) {
        remove(tmp_path);
        return json_fail_(err, errlen, "safetensors %s: could not rename %s to it", path, tmp_path);
    }
    return 0;
}

#endif /* MAMBA2_SAFETENSORS_WRITE_H */
