/*
 * json.h: a small, strict JSON parser (RFC 8259) that builds a tree of values.
 *
 * Used for safetensors headers and HF config.json files. Header-only, C11, no global state.
 *
 *   JsonValue root;
 *   char err[256];
 *   if (json_parse(&root, text, len, 0, err, sizeof err) != 0) { fprintf(stderr, "config.json: %s\n", err); ... }
 *   long long d;
 *   if (json_get_int(&root, "hidden_size", &d, err, sizeof err) != 0) { ... "field hidden_size: missing" ... }
 *   json_free(&root);
 *
 * Strict means: one value and only whitespace around it; no trailing commas, comments, single quotes,
 * leading zeros, leading '+', hex, bare '.5' or '1.'; strings must be valid UTF-8 with no raw control
 * characters; \uXXXX escapes must pair their surrogates; duplicate keys in an object are an error (a
 * checkpoint header with two entries for one tensor name is broken, not "last one wins"); numbers that
 * overflow a double are an error. The one opt-in exception is JSON_ALLOW_NONFINITE, which accepts the
 * NaN / Infinity / -Infinity that Python's json module writes by default (older HF config.json files
 * hold them).
 *
 * Errors never exit: every function that can fail returns nonzero and writes a message naming the byte
 * offset ("JSON error at byte 7: expected '\"' to start an object key, got '}'") into err[errlen].
 * Numbers are parsed with strtod, which reads '.' as the decimal point only in the "C" locale (the
 * default of a C program that never calls setlocale).
 */
#ifndef MAMBA2_JSON_H
#define MAMBA2_JSON_H

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64           /* arrays/objects nested deeper than this are rejected (stack safety) */
#define JSON_ALLOW_NONFINITE 1      /* flag for json_parse: accept NaN, Infinity, -Infinity as numbers */

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct JsonValue {
    JsonType type;
    size_t offset;             /* byte offset of the value's first character in the parsed text */
    int boolean;               /* JSON_BOOL */
    double number;             /* JSON_NUMBER */
    char* string;              /* JSON_STRING: UTF-8, NUL-terminated; may hold NULs from \u0000, see length */
    size_t length;             /* JSON_STRING: bytes in string, without the terminator */
    int count;                 /* JSON_ARRAY / JSON_OBJECT: number of elements or members */
    struct JsonValue* items;   /* JSON_ARRAY: elements; JSON_OBJECT: member values, in file order */
    char** keys;               /* JSON_OBJECT: member keys (NUL-terminated UTF-8), keys[i] names items[i] */
} JsonValue;

static inline const char* json_type_name(JsonType t) {
    switch (t) {
        case JSON_NULL: return "null";
        case JSON_BOOL: return "bool";
        case JSON_NUMBER: return "number";
        case JSON_STRING: return "string";
        case JSON_ARRAY: return "array";
        case JSON_OBJECT: return "object";
    }
    return "unknown";
}

/* writes a printf-style message into err (if there is room) and returns -1, so callers can `return json_fail_(...)` */
static inline int json_fail_(char* err, size_t errlen, const char* fmt, ...) {
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* frees everything a value owns (not the JsonValue itself) and leaves it as JSON_NULL */
static inline void json_free(JsonValue* v) {
    if (v == NULL) return;
    if (v->type == JSON_STRING) free(v->string);
    if (v->type == JSON_ARRAY || v->type == JSON_OBJECT) {
        for (int i = 0; i < v->count; i++) {
            json_free(&v->items[i]);
            if (v->keys != NULL) free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
    }
    memset(v, 0, sizeof(*v));
}

/* ----------------------------------------------------------------------------------------------------------
 * the parser: recursive descent over the bytes, one function per grammar rule */

typedef struct {
    const char* s;
    size_t len, pos;
    int depth, flags;
    char* err;
    size_t errlen;
} JsonParser_;

/* describes the byte at p->pos for error messages: 'x', end of input, or a hex code for non-printables */
static inline const char* json_describe_(const JsonParser_* p, char* buf, size_t n) {
    if (p->pos >= p->len) return "end of input";
    unsigned char c = (unsigned char)p->s[p->pos];
    if (c >= 0x20 && c < 0x7f) snprintf(buf, n, "'%c'", c);
    else snprintf(buf, n, "byte 0x%02x", c);
    return buf;
}

static inline int json_error_(JsonParser_* p, size_t at, const char* what) {
    char buf[16];
    size_t saved = p->pos;
    p->pos = at;
    json_fail_(p->err, p->errlen, "JSON error at byte %zu: %s, got %s", at, what, json_describe_(p, buf, sizeof buf));
    p->pos = saved;
    return -1;
}

static inline void json_skip_ws_(JsonParser_* p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static inline int json_match_(JsonParser_* p, const char* word) {
    size_t n = strlen(word);
    if (p->len - p->pos >= n && memcmp(p->s + p->pos, word, n) == 0) { p->pos += n; return 1; }
    return 0;
}

/* a growable byte buffer for decoding strings */
typedef struct { char* data; size_t len, cap; } JsonBuf_;

static inline int json_buf_put_(JsonBuf_* b, const char* bytes, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (b->len + n + 1 > cap) cap *= 2;
        char* d = (char*)realloc(b->data, cap);
        if (d == NULL) return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* encodes one code point (<= 0x10FFFF, not a surrogate) as UTF-8; returns the byte count */
static inline int json_utf8_encode_(uint32_t cp, char out[4]) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12)); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18)); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* length of the valid UTF-8 sequence starting at s[0] (n bytes available), or 0 if it is invalid:
 * rejects stray continuation bytes, overlong forms, encoded surrogates and code points above 0x10FFFF */
static inline size_t json_utf8_valid_len_(const unsigned char* s, size_t n) {
    unsigned char c = s[0];
    size_t need;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    else if ((c & 0xE0) == 0xC0) { need = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { need = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { need = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < need) return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return need;
}

/* reads the 4 hex digits of a \u escape at p->pos */
static inline int json_hex4_(JsonParser_* p, uint32_t* out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        if (p->pos >= p->len) return json_error_(p, p->pos, "expected 4 hex digits after \\u");
        char c = p->s[p->pos];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10
              : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0) return json_error_(p, p->pos, "expected 4 hex digits after \\u");
        v = (v << 4) | (uint32_t)d;
        p->pos++;
    }
    *out = v;
    return 0;
}

/* parses a string at p->pos (which holds '"') into a fresh NUL-terminated buffer */
static inline int json_parse_string_(JsonParser_* p, char** out, size_t* out_len) {
    JsonBuf_ b = {NULL, 0, 0};
    size_t start = p->pos;
    p->pos++; /* opening quote */
    if (json_buf_put_(&b, "", 0) != 0) goto oom;
    for (;;) {
        if (p->pos >= p->len) {
            free(b.data);
            return json_fail_(p->err, p->errlen, "JSON error at byte %zu: string starting here is not terminated "
                              "(end of input reached)", start);
        }
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) { free(b.data); return json_error_(p, p->pos, "raw control character in string (escape it)"); }
        if (c == '\\') {
            size_t esc = p->pos;
            p->pos++;
            if (p->pos >= p->len) { free(b.data); return json_error_(p, p->pos, "expected an escape character after '\\'"); }
            char e = p->s[p->pos++];
            char one;
            switch (e) {
                case '"': one = '"'; break;
                case '\\': one = '\\'; break;
                case '/': one = '/'; break;
                case 'b': one = '\b'; break;
                case 'f': one = '\f'; break;
                case 'n': one = '\n'; break;
                case 'r': one = '\r'; break;
                case 't': one = '\t'; break;
                case 'u': {
                    uint32_t cp = 0, lo = 0;
                    if (json_hex4_(p, &cp) != 0) { free(b.data); return -1; }
                    if (cp >= 0xDC00 && cp <= 0xDFFF) {
                        free(b.data);
                        return json_fail_(p->err, p->errlen, "JSON error at byte %zu: \\u%04X is a low surrogate "
                                          "without a high surrogate before it", esc, (unsigned)cp);
                    }
                    if (cp >= 0xD800 && cp <= 0xDBFF) { /* a high surrogate must be followed by \uDC00-\uDFFF */
                        if (!(p->len - p->pos >= 2 && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u')) {
                            free(b.data);
                            return json_fail_(p->err, p->errlen, "JSON error at byte %zu: \\u%04X is a high "
                                              "surrogate not followed by a \\u low surrogate", esc, (unsigned)cp);
                        }
                        p->pos += 2;
                        if (json_hex4_(p, &lo) != 0) { free(b.data); return -1; }
                        if (lo < 0xDC00 || lo > 0xDFFF) {
                            free(b.data);
                            return json_fail_(p->err, p->errlen, "JSON error at byte %zu: \\u%04X is a high "
                                              "surrogate followed by \\u%04X, not a low surrogate", esc,
                                              (unsigned)cp, (unsigned)lo);
                        }
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    char enc[4];
                    int n = json_utf8_encode_(cp, enc);
                    if (json_buf_put_(&b, enc, (size_t)n) != 0) goto oom;
                    continue;
                }
                default:
                    free(b.data);
                    p->pos--;
                    return json_error_(p, p->pos, "invalid escape (expected one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u)");
            }
            if (json_buf_put_(&b, &one, 1) != 0) goto oom;
            continue;
        }
        /* a run of plain bytes: validate UTF-8 and copy */
        size_t n = json_utf8_valid_len_((const unsigned char*)p->s + p->pos, p->len - p->pos);
        if (n == 0) { free(b.data); return json_error_(p, p->pos, "invalid UTF-8 in string"); }
        if (json_buf_put_(&b, p->s + p->pos, n) != 0) goto oom;
        p->pos += n;
    }
    *out = b.data;
    *out_len = b.len;
    return 0;
oom:
    free(b.data);
    return json_fail_(p->err, p->errlen, "JSON error at byte %zu: out of memory while reading a string", start);
}

/* number = [-] int [frac] [exp]; the grammar is checked here, the value comes from strtod */
static inline int json_parse_number_(JsonParser_* p, JsonValue* v) {
    size_t start = p->pos;
    const char* s = p->s;
    if (p->pos < p->len && s[p->pos] == '-') p->pos++;
    if ((p->flags & JSON_ALLOW_NONFINITE) && json_match_(p, "Infinity")) {
        v->number = (s[start] == '-') ? -INFINITY : INFINITY;
        return 0;
    }
    if (p->pos >= p->len || s[p->pos] < '0' || s[p->pos] > '9') return json_error_(p, p->pos, "expected a digit");
    if (s[p->pos] == '0') {
        p->pos++;
        if (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9')
            return json_error_(p, p->pos, "leading zeros are not allowed in numbers; expected '.', 'e' or the end of the number");
    } else {
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
    }
    if (p->pos < p->len && s[p->pos] == '.') {
        p->pos++;
        if (p->pos >= p->len || s[p->pos] < '0' || s[p->pos] > '9') return json_error_(p, p->pos, "expected a digit after '.'");
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
    }
    if (p->pos < p->len && (s[p->pos] == 'e' || s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (s[p->pos] == '+' || s[p->pos] == '-')) p->pos++;
        if (p->pos >= p->len || s[p->pos] < '0' || s[p->pos] > '9') return json_error_(p, p->pos, "expected a digit in the exponent");
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
    }
    /* strtod needs a NUL-terminated copy: the text we were given need not be terminated */
    size_t n = p->pos - start;
    char small[64];
    char* buf = n < sizeof small ? small : (char*)malloc(n + 1);
    if (buf == NULL) return json_fail_(p->err, p->errlen, "JSON error at byte %zu: out of memory", start);
    memcpy(buf, s + start, n);
    buf[n] = '\0';
    errno = 0;
    double d = strtod(buf, NULL);
    int overflow = (errno == ERANGE && isinf(d));
    if (buf != small) free(buf);
    if (overflow) {
        return json_fail_(p->err, p->errlen, "JSON error at byte %zu: number %.*s is out of the range of a double",
                          start, (int)(n < 40 ? n : 40), s + start);
    }
    v->number = d; /* underflow to 0 or a subnormal is accepted: it is the nearest double */
    return 0;
}

static inline int json_parse_value_(JsonParser_* p, JsonValue* v);

static inline int json_key_cmp_(const void* a, const void* b) {
    return strcmp(*(char* const*)a, *(char* const*)b);
}

/* after an object is read: finds a key that appears twice (sorting a copy of the key pointers) */
static inline const char* json_duplicate_key_(const JsonValue* obj) {
    if (obj->count < 2) return NULL;
    char** sorted = (char**)malloc((size_t)obj->count * sizeof(char*));
    if (sorted == NULL) return "(out of memory while checking for duplicate keys)";
    memcpy(sorted, obj->keys, (size_t)obj->count * sizeof(char*));
    qsort(sorted, (size_t)obj->count, sizeof(char*), json_key_cmp_);
    const char* dup = NULL;
    for (int i = 1; i < obj->count && dup == NULL; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) dup = sorted[i];
    free(sorted);
    return dup;
}

/* appends a zeroed slot to an array/object value, growing its storage geometrically */
static inline JsonValue* json_push_(JsonValue* v, int* cap, int with_key) {
    if (v->count == *cap) {
        int ncap = *cap ? *cap * 2 : 8;
        JsonValue* items = (JsonValue*)realloc(v->items, (size_t)ncap * sizeof(JsonValue));
        if (items == NULL) return NULL;
        v->items = items;
        if (with_key) {
            char** keys = (char**)realloc(v->keys, (size_t)ncap * sizeof(char*));
            if (keys == NULL) return NULL;
            v->keys = keys;
        }
        *cap = ncap;
    }
    JsonValue* slot = &v->items[v->count];
    memset(slot, 0, sizeof(*slot));
    if (with_key) v->keys[v->count] = NULL;
    v->count++;
    return slot;
}

static inline int json_parse_array_(JsonParser_* p, JsonValue* v) {
    int cap = 0;
    v->type = JSON_ARRAY;
    p->pos++; /* '[' */
    json_skip_ws_(p);
    if (p->pos < p->len && p->s[p->pos] == ']') { p->pos++; return 0; }
    for (;;) {
        JsonValue* item = json_push_(v, &cap, 0);
        if (item == NULL) return json_fail_(p->err, p->errlen, "JSON error at byte %zu: out of memory", p->pos);
        if (json_parse_value_(p, item) != 0) return -1;
        json_skip_ws_(p);
        if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->len && p->s[p->pos] == ']') { p->pos++; return 0; }
        return json_error_(p, p->pos, "expected ',' or ']' after an array element");
    }
}

static inline int json_parse_object_(JsonParser_* p, JsonValue* v) {
    int cap = 0;
    v->type = JSON_OBJECT;
    p->pos++; /* '{' */
    json_skip_ws_(p);
    if (p->pos < p->len && p->s[p->pos] == '}') { p->pos++; return 0; }
    for (;;) {
        json_skip_ws_(p);
        if (p->pos >= p->len || p->s[p->pos] != '"') return json_error_(p, p->pos, "expected '\"' to start an object key");
        size_t key_at = p->pos;
        char* key;
        size_t key_len;
        if (json_parse_string_(p, &key, &key_len) != 0) return -1;
        JsonValue* item = json_push_(v, &cap, 1);
        if (item == NULL) { free(key); return json_fail_(p->err, p->errlen, "JSON error at byte %zu: out of memory", p->pos); }
        v->keys[v->count - 1] = key;
        if (strlen(key) != key_len) {
            return json_fail_(p->err, p->errlen, "JSON error at byte %zu: object key contains a \\u0000 "
                              "(NUL) character, which this parser does not support in keys", key_at);
        }
        json_skip_ws_(p);
        if (p->pos >= p->len || p->s[p->pos] != ':') return json_error_(p, p->pos, "expected ':' after an object key");
        p->pos++;
        if (json_parse_value_(p, item) != 0) return -1;
        json_skip_ws_(p);
        if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->len && p->s[p->pos] == '}') { p->pos++; break; }
        return json_error_(p, p->pos, "expected ',' or '}' after an object member");
    }
    const char* dup = json_duplicate_key_(v);
    if (dup != NULL)
        return json_fail_(p->err, p->errlen, "JSON error: object starting at byte %zu has the key \"%s\" twice",
                          v->offset, dup);
    return 0;
}

static inline int json_parse_value_(JsonParser_* p, JsonValue* v) {
    json_skip_ws_(p);
    v->offset = p->pos;
    if (p->pos >= p->len) return json_error_(p, p->pos, "expected a value");
    char c = p->s[p->pos];
    if (c == '{' || c == '[') {
        if (p->depth >= JSON_MAX_DEPTH) {
            return json_fail_(p->err, p->errlen, "JSON error at byte %zu: arrays/objects nested deeper than %d levels",
                              p->pos, JSON_MAX_DEPTH);
        }
        p->depth++;
        int rc = (c == '{') ? json_parse_object_(p, v) : json_parse_array_(p, v);
        p->depth--;
        return rc;
    }
    if (c == '"') {
        v->type = JSON_STRING;
        return json_parse_string_(p, &v->string, &v->length);
    }
    if (json_match_(p, "true")) { v->type = JSON_BOOL; v->boolean = 1; return 0; }
    if (json_match_(p, "false")) { v->type = JSON_BOOL; v->boolean = 0; return 0; }
    if (json_match_(p, "null")) { v->type = JSON_NULL; return 0; }
    if ((p->flags & JSON_ALLOW_NONFINITE) && json_match_(p, "NaN")) { v->type = JSON_NUMBER; v->number = NAN; return 0; }
    if ((p->flags & JSON_ALLOW_NONFINITE) && json_match_(p, "Infinity")) { v->type = JSON_NUMBER; v->number = INFINITY; return 0; }
    if (c == '-' || (c >= '0' && c <= '9')) {
        v->type = JSON_NUMBER;
        return json_parse_number_(p, v);
    }
    return json_error_(p, p->pos, "expected a value (object, array, string, number, true, false or null)");
}

/* parses text[0..len) into *out. Returns 0 on success; on failure returns -1, writes a message with the
 * byte offset into err, and leaves *out as JSON_NULL with nothing to free. flags: 0 or JSON_ALLOW_NONFINITE. */
static inline int json_parse(JsonValue* out, const char* text, size_t len, int flags, char* err, size_t errlen) {
    JsonParser_ p = {text, len, 0, 0, flags, err, errlen};
    memset(out, 0, sizeof(*out));
    if (text == NULL) return json_fail_(err, errlen, "JSON error: no text given");
    if (json_parse_value_(&p, out) != 0) { json_free(out); return -1; }
    json_skip_ws_(&p);
    if (p.pos != p.len) {
        json_error_(&p, p.pos, "expected the end of the input after the top-level value");
        json_free(out);
        return -1;
    }
    return 0;
}

/* ----------------------------------------------------------------------------------------------------------
 * lookup helpers */

/* the member `key` of an object, or NULL if obj is not an object or has no such member */
static inline const JsonValue* json_get(const JsonValue* obj, const char* key) {
    if (obj == NULL || obj->type != JSON_OBJECT) return NULL;
    for (int i = 0; i < obj->count; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

/* element i of an array, or NULL if arr is not an array or i is out of range */
static inline const JsonValue* json_at(const JsonValue* arr, int i) {
    if (arr == NULL || arr->type != JSON_ARRAY || i < 0 || i >= arr->count) return NULL;
    return &arr->items[i];
}

/* the member `key` of obj if it exists and has type t; else NULL with "field KEY: missing" or
 * "field KEY: expected number, got string" in err */
static inline const JsonValue* json_get_typed(const JsonValue* obj, const char* key, JsonType t, char* err, size_t errlen) {
    if (obj == NULL || obj->type != JSON_OBJECT) {
        json_fail_(err, errlen, "field %s: looked up in a %s, not an object", key, obj ? json_type_name(obj->type) : "NULL value");
        return NULL;
    }
    const JsonValue* v = json_get(obj, key);
    if (v == NULL) { json_fail_(err, errlen, "field %s: missing", key); return NULL; }
    if (v->type != t) {
        json_fail_(err, errlen, "field %s: expected %s, got %s", key, json_type_name(t), json_type_name(v->type));
        return NULL;
    }
    return v;
}

static inline int json_get_number(const JsonValue* obj, const char* key, double* out, char* err, size_t errlen) {
    const JsonValue* v = json_get_typed(obj, key, JSON_NUMBER, err, errlen);
    if (v == NULL) return -1;
    *out = v->number;
    return 0;
}

/* a number that must be an integer exactly representable in a double (|x| <= 2^53) */
static inline int json_get_int(const JsonValue* obj, const char* key, long long* out, char* err, size_t errlen) {
    const JsonValue* v = json_get_typed(obj, key, JSON_NUMBER, err, errlen);
    if (v == NULL) return -1;
    double d = v->number;
    if (!(d == floor(d)) || fabs(d) > 9007199254740992.0)
        return json_fail_(err, errlen, "field %s: expected an integer, got %.17g", key, d);
    *out = (long long)d;
    return 0;
}

static inline int json_get_bool(const JsonValue* obj, const char* key, int* out, char* err, size_t errlen) {
    const JsonValue* v = json_get_typed(obj, key, JSON_BOOL, err, errlen);
    if (v == NULL) return -1;
    *out = v->boolean;
    return 0;
}

/* the string stays owned by obj */
static inline int json_get_string(const JsonValue* obj, const char* key, const char** out, char* err, size_t errlen) {
    const JsonValue* v = json_get_typed(obj, key, JSON_STRING, err, errlen);
    if (v == NULL) return -1;
    *out = v->string;
    return 0;
}

#endif /* MAMBA2_JSON_H */
