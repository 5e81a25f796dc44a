/*
 * test_safetensors.c: tests llmc/json.h and llmc/safetensors.h.
 *
 *   cc -O2 -std=c11 -Wall -o test_safetensors test_safetensors.c -lm && ./test_safetensors [fixture]
 *
 * 1. JSON: values, escapes (incl. \u surrogate pairs), numbers, nesting, and malformed inputs, each
 *    compared with hand-written expected bytes/values and, for errors, the exact byte offset.
 * 2. safetensors, good file: written here byte by byte (a writer far simpler than the reader), with F32,
 *    BF16, F16 (subnormal, max, -0, inf), F64, I32, I64, a scalar and an empty tensor of known values.
 * 3. safetensors, bad files: each broken in one way; the open (or read) must fail and the message must
 *    name the problem.
 * 4. the HF fixture (dev/fixtures/mamba2_hf_tiny.safetensors, or argv[1]): layout, config, and the loss
 *    recomputed in double from the stored logits and tokens must match the stored loss.
 * Run from the repository root. Prints one line per check and ends with "N passed, N failed".
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp, rmdir */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "llmc/json.h"
#include "llmc/safetensors.h"

static int num_passed = 0, num_failed = 0;
static char tmp_dir[256];
static int tmp_files = 0;

static void check(int ok, const char* name, const char* fmt, ...) {
    if (ok) { num_passed++; printf("PASS %s\n", name); return; }
    num_failed++;
    printf("FAIL %s: ", name);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

/* ----------------------------------------------------------------------------------------------------------
 * JSON */

static void json_expect_error(const char* name, const char* text, size_t len, int flags, const char* want) {
    JsonValue v;
    char err[256] = "";
    int rc = json_parse(&v, text, len, flags, err, sizeof err);
    check(rc != 0 && strstr(err, want) != NULL && v.type == JSON_NULL, name,
          "rc %d, message \"%s\", wanted it to contain \"%s\"", rc, err, want);
    json_free(&v);
}
#define JSON_BAD(name, text, want) json_expect_error(name, text, sizeof(text) - 1, 0, want)

static int json_parse_ok(const char* name, const char* text, size_t len, int flags, JsonValue* v) {
    char err[256] = "";
    int rc = json_parse(v, text, len, flags, err, sizeof err);
    if (rc != 0) check(0, name, "parse failed: %s", err);
    return rc == 0;
}

static void test_json_values(void) {
    const char* text = " {\"a\": [1, 2.5, -3e2, true, false, null], \"b\": {\"c\": \"x\"}, \"e\": [], \"f\": {}} ";
    JsonValue v;
    if (!json_parse_ok("json nested object", text, strlen(text), 0, &v)) return;
    const JsonValue* a = json_get(&v, "a");
    const JsonValue* c = json_get(json_get(&v, "b"), "c");
    int ok = v.type == JSON_OBJECT && v.count == 4 && a && a->type == JSON_ARRAY && a->count == 6 &&
             json_at(a, 0)->number == 1.0 && json_at(a, 1)->number == 2.5 && json_at(a, 2)->number == -300.0 &&
             json_at(a, 3)->type == JSON_BOOL && json_at(a, 3)->boolean == 1 && json_at(a, 4)->boolean == 0 &&
             json_at(a, 5)->type == JSON_NULL && c && c->type == JSON_STRING && strcmp(c->string, "x") == 0 &&
             json_get(&v, "e")->count == 0 && json_get(&v, "f")->type == JSON_OBJECT && json_get(&v, "f")->count == 0 &&
             json_get(&v, "zz") == NULL && json_at(a, 6) == NULL && json_at(a, -1) == NULL &&
             json_get(a, "x") == NULL && a->offset == 7;
    check(ok, "json nested object: values, lookups, offsets", "tree differs from the text");
    json_free(&v);

    /* the parser must honor len and not read a terminator */
    if (json_parse_ok("json length respected", "[1,2]XYZ", 5, 0, &v)) {
        check(v.count == 2, "json length respected", "count %d", v.count);
        json_free(&v);
    }
}

static void test_json_strings(void) {
    JsonValue v;
    const char esc[] = "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"";
    if (json_parse_ok("json simple escapes", esc, sizeof esc - 1, 0, &v)) {
        check(v.length == 8 && memcmp(v.string, "\"\\/\b\f\n\r\t", 8) == 0, "json simple escapes",
              "got %zu bytes", v.length);
        json_free(&v);
    }
    const char uni[] = "\"\\u00e9\\u20AC\\ud83d\\ude00\"";
    const unsigned char want[] = {0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80};
    if (json_parse_ok("json \\u escapes", uni, sizeof uni - 1, 0, &v)) {
        check(v.length == 9 && memcmp(v.string, want, 9) == 0, "json \\u escapes and a surrogate pair to UTF-8",
              "got %zu bytes", v.length);
        json_free(&v);
    }
    const char nul[] = "\"a\\u0000b\"";
    if (json_parse_ok("json \\u0000", nul, sizeof nul - 1, 0, &v)) {
        check(v.length == 3 && v.string[1] == '\0' && v.string[2] == 'b', "json \\u0000 keeps its length",
              "length %zu", v.length);
        json_free(&v);
    }
    const char raw[] = "\"caf\xC3\xA9 \xF0\x9F\x98\x80\"";
    if (json_parse_ok("json raw UTF-8", raw, sizeof raw - 1, 0, &v)) {
        check(v.length == 10 && memcmp(v.string, raw + 1, 10) == 0, "json raw UTF-8 passes through", "length %zu", v.length);
        json_free(&v);
    }
    JSON_BAD("json error: unterminated string", "\"abc", "byte 0: string starting here is not terminated");
    JSON_BAD("json error: raw control character", "\"a\x01" "b\"", "byte 2: raw control character");
    JSON_BAD("json error: invalid escape", "\"\\x\"", "byte 2: invalid escape");
    JSON_BAD("json error: lone high surrogate", "\"\\ud800\"", "byte 1: \\uD800 is a high surrogate not followed");
    JSON_BAD("json error: lone low surrogate", "\"\\udc00\"", "byte 1: \\uDC00 is a low surrogate");
    JSON_BAD("json error: high surrogate + non-low", "\"\\ud800\\u0041\"", "followed by \\u0041, not a low surrogate");
    JSON_BAD("json error: bad hex digit", "\"\\u12G4\"", "byte 5: expected 4 hex digits");
    JSON_BAD("json error: invalid UTF-8", "\"\xC3\x28\"", "byte 1: invalid UTF-8");
    JSON_BAD("json error: overlong UTF-8", "\"\xC0\x80\"", "byte 1: invalid UTF-8");
    JSON_BAD("json error: UTF-8 encoded surrogate", "\"\xED\xA0\x80\"", "byte 1: invalid UTF-8");
    JSON_BAD("json error: truncated UTF-8", "\"\xE2\x82", "byte 1: invalid UTF-8");
}

static void test_json_numbers(void) {
    struct { const char* text; double want; } cases[] = {
        {"0", 0.0}, {"-0", -0.0}, {"1.5e3", 1500.0}, {"-2E-2", -0.02}, {"123456789012", 123456789012.0},
        {"  7  ", 7.0}, {"1e-400", 0.0}, {"0.1", 0.1}, {"2.5E+1", 25.0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        JsonValue v;
        char name[64];
        snprintf(name, sizeof name, "json number %s", cases[i].text);
        if (!json_parse_ok(name, cases[i].text, strlen(cases[i].text), 0, &v)) continue;
        check(v.type == JSON_NUMBER && v.number == cases[i].want && signbit(v.number) == signbit(cases[i].want),
              name, "got %.17g", v.number);
        json_free(&v);
    }
    JSON_BAD("json error: leading zero", "01", "byte 1: leading zeros");
    JSON_BAD("json error: '1.'", "1.", "byte 2: expected a digit after '.'");
    JSON_BAD("json error: '.5'", ".5", "byte 0: expected a value");
    JSON_BAD("json error: '-'", "-", "byte 1: expected a digit");
    JSON_BAD("json error: '+1'", "+1", "byte 0: expected a value");
    JSON_BAD("json error: '1e'", "1e", "byte 2: expected a digit in the exponent");
    JSON_BAD("json error: hex", "0x10", "byte 1: expected the end of the input");
    JSON_BAD("json error: overflow", "[1e400]", "byte 1: number 1e400 is out of the range of a double");
    JSON_BAD("json error: NaN without the flag", "NaN", "byte 0: expected a value");
    JSON_BAD("json error: Infinity without the flag", "[-Infinity]", "byte 2: expected a digit");

    JsonValue v;
    const char nf[] = "[NaN, Infinity, -Infinity]";
    if (json_parse_ok("json nonfinite with JSON_ALLOW_NONFINITE", nf, sizeof nf - 1, JSON_ALLOW_NONFINITE, &v)) {
        check(v.count == 3 && isnan(v.items[0].number) && isinf(v.items[1].number) && v.items[1].number > 0 &&
              isinf(v.items[2].number) && v.items[2].number < 0, "json nonfinite with JSON_ALLOW_NONFINITE", "wrong values");
        json_free(&v);
    }
}

static void test_json_structure_errors(void) {
    JSON_BAD("json error: trailing comma in object", "{\"a\":1,}", "byte 7: expected '\"' to start an object key, got '}'");
    JSON_BAD("json error: trailing comma in array", "[1,]", "byte 3: expected a value");
    JSON_BAD("json error: missing comma", "[1 2]", "byte 3: expected ',' or ']'");
    JSON_BAD("json error: missing colon", "{\"a\" 1}", "byte 5: expected ':'");
    JSON_BAD("json error: single quotes", "{'a':1}", "byte 1: expected '\"'");
    JSON_BAD("json error: comment", "[1] // c", "byte 4: expected the end of the input");
    JSON_BAD("json error: two values", "1 2", "byte 2: expected the end of the input");
    JSON_BAD("json error: empty input", "", "byte 0: expected a value, got end of input");
    JSON_BAD("json error: whitespace only", "  \n", "byte 3: expected a value, got end of input");
    JSON_BAD("json error: bad literal", "tru", "byte 0: expected a value");
    JSON_BAD("json error: unclosed array", "[1, [2]", "byte 7: expected ',' or ']'");
    JSON_BAD("json error: duplicate key", "{\"a\":1,\"b\":2,\"a\":3}", "has the key \"a\" twice");

    /* depth: JSON_MAX_DEPTH levels parse, one more fails */
    char deep[2 * (JSON_MAX_DEPTH + 1) + 1];
    for (int i = 0; i < JSON_MAX_DEPTH; i++) { deep[i] = '['; deep[2 * JSON_MAX_DEPTH - 1 - i] = ']'; }
    JsonValue v;
    char err[256] = "";
    int rc = json_parse(&v, deep, 2 * JSON_MAX_DEPTH, 0, err, sizeof err);
    check(rc == 0, "json depth 64 parses", "%s", err);
    json_free(&v);
    for (int i = 0; i <= JSON_MAX_DEPTH; i++) { deep[i] = '['; deep[2 * JSON_MAX_DEPTH + 1 - i] = ']'; }
    json_expect_error("json error: depth 65", deep, 2 * (JSON_MAX_DEPTH + 1), 0, "byte 64: arrays/objects nested deeper than 64");
}

static void test_json_getters(void) {
    const char text[] = "{\"n\": 3, \"s\": \"x\", \"f\": 1.5, \"b\": true, \"big\": 1e300}";
    JsonValue v;
    if (!json_parse_ok("json getters", text, sizeof text - 1, 0, &v)) return;
    char err[256] = "";
    long long n = 0;
    double d = 0;
    int b = 0;
    const char* s = NULL;
    check(json_get_int(&v, "n", &n, err, sizeof err) == 0 && n == 3, "json_get_int", "%s", err);
    check(json_get_number(&v, "f", &d, err, sizeof err) == 0 && d == 1.5, "json_get_number", "%s", err);
    check(json_get_bool(&v, "b", &b, err, sizeof err) == 0 && b == 1, "json_get_bool", "%s", err);
    check(json_get_string(&v, "s", &s, err, sizeof err) == 0 && strcmp(s, "x") == 0, "json_get_string", "%s", err);
    err[0] = '\0';
    int rc = json_get_number(&v, "s", &d, err, sizeof err);
    check(rc != 0 && strcmp(err, "field s: expected number, got string") == 0, "json_get_number on a string", "\"%s\"", err);
    rc = json_get_string(&v, "zz", &s, err, sizeof err);
    check(rc != 0 && strcmp(err, "field zz: missing") == 0, "json_get_string on a missing key", "\"%s\"", err);
    rc = json_get_int(&v, "f", &n, err, sizeof err);
    check(rc != 0 && strstr(err, "field f: expected an integer, got 1.5") != NULL, "json_get_int on 1.5", "\"%s\"", err);
    rc = json_get_int(&v, "big", &n, err, sizeof err);
    check(rc != 0 && strstr(err, "field big: expected an integer") != NULL, "json_get_int on 1e300", "\"%s\"", err);
    rc = json_get_bool(json_get(&v, "n"), "x", &b, err, sizeof err);
    check(rc != 0 && strstr(err, "field x: looked up in a number") != NULL, "json_get_bool on a non-object", "\"%s\"", err);
    json_free(&v);
}

/* ----------------------------------------------------------------------------------------------------------
 * safetensors: a byte-level writer for the test files */

typedef struct { unsigned char bytes[4096]; size_t len; } Blob;

static void put_le(Blob* b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) b->bytes[b->len++] = (unsigned char)(v >> (8 * i));
}
static void put_f32(Blob* b, float f) { uint32_t u; memcpy(&u, &f, 4); put_le(b, u, 4); }
static void put_f64(Blob* b, double d) { uint64_t u; memcpy(&u, &d, 8); put_le(b, u, 8); }

/* writes 8-byte header length + header + data to a fresh file in the temp dir; returns its path */
static const char* write_st(const char* header, const Blob* data) {
    static char path[512];
    snprintf(path, sizeof path, "%s/f%03d.safetensors", tmp_dir, tmp_files++);
    FILE* f = fopen(path, "wb");
    if (f == NULL) { fprintf(stderr, "test_safetensors: cannot write %s\n", path); exit(1); }
    unsigned char len[8];
    uint64_t n = strlen(header);
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(n >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(header, 1, n, f);
    if (data != NULL) fwrite(data->bytes, 1, data->len, f);
    fclose(f);
    return path;
}

static const char* write_raw(const void* bytes, size_t n) {
    static char path[512];
    snprintf(path, sizeof path, "%s/f%03d.safetensors", tmp_dir, tmp_files++);
    FILE* f = fopen(path, "wb");
    if (f == NULL) { fprintf(stderr, "test_safetensors: cannot write %s\n", path); exit(1); }
    fwrite(bytes, 1, n, f);
    fclose(f);
    return path;
}

static void st_expect_open_error(const char* name, const char* path, const char* want) {
    SafeTensors st;
    char err[512] = "";
    int rc = safetensors_open(&st, path, err, sizeof err);
    check(rc != 0 && strstr(err, want) != NULL && st.file == NULL && st.num_tensors == 0 && st.tensors == NULL, name,
          "rc %d, message \"%s\", wanted it to contain \"%s\"", rc, err, want);
    safetensors_close(&st); /* must be harmless after a failed open */
}

static void st_bad_header(const char* name, const char* header, size_t data_len, const char* want) {
    Blob data = {{0}, data_len};
    st_expect_open_error(name, write_st(header, &data), want);
}

static void test_st_good(void) {
    /* layout: a F32 [0,24) | b BF16 [24,32) | c F16 [32,44) | gap [44,48) | d F64 [48,64) | tok I32 [64,76)
     * | big I64 [76,92) | s F32 scalar [92,96) | e F32 (0,3) [96,96) | wide I64 [96,104) */
    Blob data = {{0}, 0};
    const float a[6] = {1.0f, -2.0f, 3.5f, 0.0f, 1e-3f, -7.25f};
    for (int i = 0; i < 6; i++) put_f32(&data, a[i]);
    const uint16_t bf[4] = {0x3F80, 0xC020, 0x4049, 0x0000};
    for (int i = 0; i < 4; i++) put_le(&data, bf[i], 2);
    const uint16_t h[6] = {0x3C00, 0xC100, 0x0001, 0x7BFF, 0x8000, 0x7C00};
    for (int i = 0; i < 6; i++) put_le(&data, h[i], 2);
    put_le(&data, 0xDEADBEEF, 4); /* gap: belongs to no tensor */
    put_f64(&data, 0.1);
    put_f64(&data, -1e10);
    put_le(&data, 0, 4); put_le(&data, 95, 4); put_le(&data, (uint32_t)-7, 4);
    put_le(&data, 5, 8); put_le(&data, (uint64_t)-3, 8);
    put_f32(&data, 2.5f);
    put_le(&data, (uint64_t)1 << 40, 8);
    const char* header =
        "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"caf\\u00e9\"},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
        "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
        "\"c\":{\"dtype\":\"F16\",\"shape\":[6],\"data_offsets\":[32,44]},"
        "\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[48,64]},"
        "\"tok\":{\"dtype\":\"I32\",\"shape\":[3],\"data_offsets\":[64,76]},"
        "\"big\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[76,92]},"
        "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[92,96]},"
        "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[96,96]},"
        "\"wide\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[96,104]}}   ";
    const char* path = write_st(header, &data);

    SafeTensors st;
    char err[512] = "";
    if (safetensors_open(&st, path, err, sizeof err) != 0) { check(0, "good file opens", "%s", err); return; }
    check(st.num_tensors == 9 && st.num_metadata == 2, "good file: 9 tensors, 2 metadata keys",
          "%d tensors, %d metadata", st.num_tensors, st.num_metadata);
    const char* note = safetensors_metadata(&st, "note");
    check(note && strcmp(note, "caf\xC3\xA9") == 0 && safetensors_metadata(&st, "absent") == NULL &&
          strcmp(safetensors_metadata(&st, "format"), "pt") == 0, "good file: metadata", "note=%s", note ? note : "NULL");
    const SafeTensorInfo* ta = safetensors_find(&st, "a");
    const SafeTensorInfo* ts = safetensors_find(&st, "s");
    const SafeTensorInfo* te = safetensors_find(&st, "e");
    check(ta && ta->ndim == 2 && ta->shape[0] == 2 && ta->shape[1] == 3 && ta->numel == 6 && strcmp(ta->dtype, "F32") == 0 &&
          ta->begin == 0 && ta->end == 24 && ts && ts->ndim == 0 && ts->numel == 1 && te && te->numel == 0 &&
          safetensors_find(&st, "zz") == NULL, "good file: shapes, dtypes, offsets", "entries differ");

    float out[8];
    int rc = safetensors_read_f32(&st, "a", out, 6, err, sizeof err);
    check(rc == 0 && memcmp(out, a, sizeof a) == 0, "read F32", "%s", err);
    rc = safetensors_read_f32(&st, "b", out, 4, err, sizeof err);
    check(rc == 0 && out[0] == 1.0f && out[1] == -2.5f && out[2] == 3.140625f && out[3] == 0.0f, "read BF16 -> float",
          "rc %d: %g %g %g %g", rc, out[0], out[1], out[2], out[3]);
    rc = safetensors_read_f32(&st, "c", out, 6, err, sizeof err);
    check(rc == 0 && out[0] == 1.0f && out[1] == -2.5f && out[2] == ldexpf(1.0f, -24) && out[3] == 65504.0f &&
          out[4] == 0.0f && signbit(out[4]) && isinf(out[5]) && out[5] > 0, "read F16 -> float (subnormal, max, -0, inf)",
          "rc %d: %g %g %g %g %g %g", rc, out[0], out[1], out[2], out[3], out[4], out[5]);
    rc = safetensors_read_f32(&st, "d", out, 2, err, sizeof err);
    check(rc == 0 && out[0] == (float)0.1 && out[1] == (float)-1e10, "read F64 -> float", "rc %d: %g %g", rc, out[0], out[1]);
    rc = safetensors_read_f32(&st, "s", out, 1, err, sizeof err);
    check(rc == 0 && out[0] == 2.5f, "read a scalar", "rc %d: %g", rc, out[0]);
    rc = safetensors_read_f32(&st, "e", out, 0, err, sizeof err);
    check(rc == 0, "read an empty tensor", "%s", err);
    int iv[3];
    rc = safetensors_read_i32(&st, "tok", iv, 3, err, sizeof err);
    check(rc == 0 && iv[0] == 0 && iv[1] == 95 && iv[2] == -7, "read I32", "rc %d", rc);
    rc = safetensors_read_i32(&st, "big", iv, 2, err, sizeof err);
    check(rc == 0 && iv[0] == 5 && iv[1] == -3, "read I64 -> int32", "rc %d", rc);

    rc = safetensors_read_f32(&st, "nope", out, 1, err, sizeof err);
    check(rc != 0 && strstr(err, "tensor nope not found") != NULL, "read error: missing tensor", "\"%s\"", err);
    rc = safetensors_read_f32(&st, "a", out, 5, err, sizeof err);
    check(rc != 0 && strstr(err, "tensor a has 6 elements (shape [2, 3]), expected 5") != NULL, "read error: wrong numel",
          "\"%s\"", err);
    rc = safetensors_read_f32(&st, "tok", out, 3, err, sizeof err);
    check(rc != 0 && strstr(err, "dtype I32, which cannot be read as float") != NULL, "read error: I32 as float", "\"%s\"", err);
    rc = safetensors_read_i32(&st, "a", iv, 6, err, sizeof err);
    check(rc != 0 && strstr(err, "dtype F32, which cannot be read as int32") != NULL, "read error: F32 as int32", "\"%s\"", err);
    rc = safetensors_read_i32(&st, "wide", iv, 1, err, sizeof err);
    check(rc != 0 && strstr(err, "element 0 = 1099511627776 does not fit in int32") != NULL, "read error: I64 out of int32 range",
          "\"%s\"", err);
    safetensors_close(&st);
    check(st.file == NULL && st.tensors == NULL && st.num_tensors == 0, "close zeroes the struct", "not zeroed");
}

static void test_st_bad(void) {
    const char* T1 = "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    char h[1024];

    st_expect_open_error("bad: missing file", "/nonexistent/dir/x.safetensors", "cannot open the file");
    st_expect_open_error("bad: file shorter than 8 bytes", write_raw("abc", 3), "file is 3 bytes, too short");
    unsigned char raw[28] = {0xE8, 0x03}; /* header length 1000, file 28 bytes */
    memcpy(raw + 8, "{\"a\":1}", 7);
    st_expect_open_error("bad: header length past the end", write_raw(raw, sizeof raw), "header length 1000 runs past the end of the file (28 bytes)");
    st_bad_header("bad: malformed header JSON", "{\"t\":", 0, "is not valid: JSON error at byte 5");
    st_bad_header("bad: header is an array", "[1]", 0, "expected object at the top level, got array");
    st_bad_header("bad: entry is not an object", "{\"t\":[1]}", 0, "tensor t: expected an object with dtype");
    st_bad_header("bad: unknown dtype", "{\"t\":{\"dtype\":\"F17\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor t: unknown dtype \"F17\"");
    st_bad_header("bad: dtype is a number", "{\"t\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                  "tensor t: field dtype: expected string, got number");
    st_bad_header("bad: dtype missing", "{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor t: field dtype: missing");
    st_bad_header("bad: shape is a string", "{\"t\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8,
                  "tensor t: field shape: expected array, got string");
    st_bad_header("bad: negative dim", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,8]}}", 8,
                  "shape[0] must be a non-negative integer, got -1");
    st_bad_header("bad: fractional dim", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,1.5],\"data_offsets\":[0,8]}}", 8,
                  "shape[1] must be a non-negative integer, got 1.5");
    st_bad_header("bad: dim is a string", "{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
                  "shape[0] must be a non-negative integer, got a string");
    st_bad_header("bad: 9 dimensions", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
                  "shape has 9 dimensions, at most 8");
    st_bad_header("bad: shape/offset mismatch", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24,
                  "tensor t: shape [2, 3] of F32 needs 24 bytes, data_offsets [0, 20] hold 20");
    st_bad_header("bad: offsets reversed", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
                  "data_offsets [8, 0] end before they begin");
    st_bad_header("bad: one offset", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8,
                  "data_offsets must be [begin, end]");
    st_bad_header("bad: data truncated", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
                  "data_offsets [0, 8] lie past the end of the data (4 bytes after the header)");
    st_bad_header("bad: offsets out of range", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1000,1008]}}", 8,
                  "data_offsets [1000, 1008] lie past the end");
    st_bad_header("bad: overlapping tensors",
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                  12, "tensors a [0, 8) and b [4, 12) overlap");
    st_bad_header("bad: unexpected field", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8,
                  "tensor t: unexpected field \"x\"");
    snprintf(h, sizeof h, "{%s,%s}", T1, T1);
    st_bad_header("bad: duplicate tensor name", h, 8, "has the key \"t\" twice");
    st_bad_header("bad: metadata value is a number", "{\"__metadata__\":{\"x\":1}}", 0,
                  "__metadata__: value of \"x\" is a number, expected a string");
    st_bad_header("bad: metadata is an array", "{\"__metadata__\":[]}", 0, "__metadata__: expected an object of strings, got array");
    char longname[301];
    memset(longname, 'n', 300);
    longname[300] = '\0';
    snprintf(h, sizeof h, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", longname);
    st_bad_header("bad: name too long", h, 8, "is 300 bytes long, the limit is 255");

    /* an empty header object is a valid (empty) file */
    SafeTensors st;
    char err[512] = "";
    int rc = safetensors_open(&st, write_st("{}", NULL), err, sizeof err);
    check(rc == 0 && st.num_tensors == 0, "empty header opens", "%s", err);
    safetensors_close(&st);
}

/* ----------------------------------------------------------------------------------------------------------
 * the HF fixture */

static int expect_shape(const SafeTensors* st, const char* name, int ndim, const long long* shape) {
    const SafeTensorInfo* t = safetensors_find(st, name);
    if (t == NULL || t->ndim != ndim || strcmp(t->dtype, name[0] == 't' ? "I32" : "F32") != 0) return 0;
    for (int d = 0; d < ndim; d++) if (t->shape[d] != shape[d]) return 0;
    return 1;
}

static void test_fixture(const char* path) {
    SafeTensors st;
    char err[512] = "";
    if (safetensors_open(&st, path, err, sizeof err) != 0) {
        check(0, "fixture opens", "%s (run from the repository root, or pass the fixture's path)", err);
        return;
    }
    check(st.num_tensors == 45, "fixture: 45 tensors (20 params, 20 grads, 5 others)", "%d tensors", st.num_tensors);
    const char* B = safetensors_metadata(&st, "B");
    const char* T = safetensors_metadata(&st, "T");
    check(B && T && strcmp(B, "2") == 0 && strcmp(T, "20") == 0 && safetensors_metadata(&st, "transformers_version"),
          "fixture: metadata B=2, T=20", "B=%s T=%s", B ? B : "NULL", T ? T : "NULL");

    /* the config is HF's own JSON: it must parse strictly and describe the tiny model */
    const char* cfg_text = safetensors_metadata(&st, "config");
    JsonValue cfg;
    long long hidden = 0, groups = 0, heads = 0, hdim = 0, nstate = 0, chunk = 0, vocab = 0, layers = 0;
    int tied = 0;
    if (cfg_text && json_parse(&cfg, cfg_text, strlen(cfg_text), 0, err, sizeof err) == 0) {
        int ok = json_get_int(&cfg, "hidden_size", &hidden, err, sizeof err) == 0 &&
                 json_get_int(&cfg, "n_groups", &groups, err, sizeof err) == 0 &&
                 json_get_int(&cfg, "num_heads", &heads, err, sizeof err) == 0 &&
                 json_get_int(&cfg, "head_dim", &hdim, err, sizeof err) == 0 &&
                 json_get_int(&cfg, "state_size", &nstate, err, sizeof err) == 0 &&
                 json_get_int(&cfg, "chunk_size", &chunk, err, sizeof err) == 0 &&
                 json_get_int(&cfg, "vocab_size", &vocab, err, sizeof err) == 0 &&
                 json_get_int(&cfg, "num_hidden_layers", &layers, err, sizeof err) == 0 &&
                 json_get_bool(&cfg, "tie_word_embeddings", &tied, err, sizeof err) == 0;
        check(ok && hidden == 64 && groups == 1 && heads == 8 && hdim == 16 && nstate == 16 && chunk == 8 &&
              vocab == 96 && layers == 2 && tied, "fixture: config JSON", "%s", ok ? "unexpected values" : err);
        json_free(&cfg);
    } else {
        check(0, "fixture: config JSON", "%s", cfg_text ? err : "no config in metadata");
    }

    const long long s_in[] = {296, 64}, s_conv[] = {160, 1, 4}, s_tok[] = {2, 21}, s_log[] = {2, 20, 96}, s_emb[] = {96, 64};
    check(expect_shape(&st, "param.backbone.layers.0.mixer.in_proj.weight", 2, s_in) &&
          expect_shape(&st, "grad.backbone.layers.1.mixer.conv1d.weight", 3, s_conv) &&
          expect_shape(&st, "param.backbone.embeddings.weight", 2, s_emb) && expect_shape(&st, "tokens", 2, s_tok) &&
          expect_shape(&st, "logits", 3, s_log) && safetensors_find(&st, "param.lm_head.weight") == NULL,
          "fixture: shapes of in_proj, conv1d, embeddings, tokens, logits; no separate lm_head", "a shape differs");
    int paired = 1;
    for (int i = 0; i < st.num_tensors; i++) {
        const SafeTensorInfo* t = &st.tensors[i];
        if (strncmp(t->name, "param.", 6) != 0) continue;
        char gname[SAFETENSORS_MAX_NAME + 8];
        snprintf(gname, sizeof gname, "grad.%s", t->name + 6);
        const SafeTensorInfo* g = safetensors_find(&st, gname);
        if (g == NULL || g->numel != t->numel || g->ndim != t->ndim) { paired = 0; printf("  no matching %s\n", gname); }
    }
    check(paired, "fixture: every param.* has a grad.* of the same shape", "see above");

    /* the loss recomputed from the stored logits and targets (double, log-sum-exp) must match the stored one */
    int tokens[2 * 21];
    static float logits[2 * 20 * 96];
    float loss = 0, adamw[10];
    if (safetensors_read_i32(&st, "tokens", tokens, 42, err, sizeof err) != 0 ||
        safetensors_read_f32(&st, "logits", logits, 2 * 20 * 96, err, sizeof err) != 0 ||
        safetensors_read_f32(&st, "loss", &loss, 1, err, sizeof err) != 0 ||
        safetensors_read_f32(&st, "adamw_losses", adamw, 10, err, sizeof err) != 0) {
        check(0, "fixture: read tokens, logits, loss", "%s", err);
        safetensors_close(&st);
        return;
    }
    int in_range = 1;
    for (int i = 0; i < 42; i++) if (tokens[i] < 0 || tokens[i] >= 96) in_range = 0;
    check(in_range, "fixture: token ids in [0, 96)", "out of range");
    double total = 0;
    for (int b = 0; b < 2; b++) {
        for (int t = 0; t < 20; t++) {
            const float* row = logits + (b * 20 + t) * 96;
            double mx = row[0], sum = 0;
            for (int v = 1; v < 96; v++) if (row[v] > mx) mx = row[v];
            for (int v = 0; v < 96; v++) sum += exp(row[v] - mx);
            int target = tokens[b * 21 + t + 1];
            total += mx + log(sum) - row[target];
        }
    }
    double ce = total / 40.0;
    check(fabs(ce - loss) <= 1e-5 * fabs(loss), "fixture: cross-entropy of stored logits == stored loss",
          "recomputed %.7f, stored %.7f", ce, (double)loss);
    check(adamw[0] == loss && adamw[9] < adamw[0], "fixture: adamw_losses[0] == loss and the loss falls",
          "adamw[0] %.7f adamw[9] %.7f loss %.7f", (double)adamw[0], (double)adamw[9], (double)loss);
    printf("  fixture loss %.7f, recomputed %.7f, adamw loss after 9 updates %.7f\n", (double)loss, ce, (double)adamw[9]);
    safetensors_close(&st);
}

static void remove_tmp_files(void) {
    char path[512];
    for (int i = 0; i < tmp_files; i++) {
        snprintf(path, sizeof path, "%s/f%03d.safetensors", tmp_dir, i);
        remove(path);
    }
    rmdir(tmp_dir);
}

int main(int argc, char** argv) {
    const char* fixture = argc > 1 ? argv[1] : "dev/fixtures/mamba2_hf_tiny.safetensors";
    const char* base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmp_dir, sizeof tmp_dir, "%s/test_safetensors_XXXXXX", base);
    if (mkdtemp(tmp_dir) == NULL) {
        fprintf(stderr, "test_safetensors: cannot create a temp dir under %s (set TMPDIR to a writable dir)\n", base);
        return 1;
    }
    test_json_values();
    test_json_strings();
    test_json_numbers();
    test_json_structure_errors();
    test_json_getters();
    test_st_good();
    test_st_bad();
    test_fixture(fixture);
    remove_tmp_files();
    printf("%d passed, %d failed\n", num_passed, num_failed);
    return num_failed == 0 ? 0 : 1;
}
