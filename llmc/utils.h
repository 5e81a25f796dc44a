/*
 * utils.h: checked wrappers around libc calls that can fail, shared by every C program of mamba2.c.
 * A failure prints what failed, with the caller's file and line, and exits with a nonzero status:
 * a training run should stop loudly, never continue on a half-read file.
 */
#ifndef MAMBA2_UTILS_H
#define MAMBA2_UTILS_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef MAMBA2_FUZZ
/* fuzz harnesses (dev/fuzz/): die() returns to the harness through this jump instead of exiting, so a reader's
   refusal of an input is a normal outcome and only crashes, hangs and sanitizer reports are findings */
#include <setjmp.h>
static jmp_buf g_fuzz_die_jmp;
#endif

/* print "error: <message>" to stderr and exit(EXIT_FAILURE) */
static inline void die(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
#ifdef MAMBA2_FUZZ
    (void)fmt;
    va_end(ap);
    longjmp(g_fuzz_die_jmp, 1);
#else
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(EXIT_FAILURE);
#endif
}

static inline FILE* fopen_check(const char* path, const char* mode, const char* file, int line) {
    FILE* fp = fopen(path, mode);
    if (fp == NULL) die("could not open '%s' (mode %s) at %s:%d", path, mode, file, line);
    return fp;
}
#define fopenCheck(path, mode) fopen_check(path, mode, __FILE__, __LINE__)

static inline void fread_check(void* ptr, size_t size, size_t nmemb, FILE* fp, const char* file, int line) {
    size_t got = fread(ptr, size, nmemb, fp);
    if (got != nmemb) {
        die("short read at %s:%d: expected %zu elements of %zu bytes, read %zu (%s)", file, line, nmemb, size, got,
            feof(fp) ? "file is truncated" : "read error");
    }
}
#define freadCheck(ptr, size, nmemb, fp) fread_check(ptr, size, nmemb, fp, __FILE__, __LINE__)

static inline void fwrite_check(const void* ptr, size_t size, size_t nmemb, FILE* fp, const char* file, int line) {
    if (fwrite(ptr, size, nmemb, fp) != nmemb) die("write failed at %s:%d (disk full?)", file, line);
}
#define fwriteCheck(ptr, size, nmemb, fp) fwrite_check(ptr, size, nmemb, fp, __FILE__, __LINE__)

static inline void fclose_check(FILE* fp, const char* file, int line) {
    if (fclose(fp) != 0) die("fclose failed at %s:%d (disk full?)", file, line);
}
#define fcloseCheck(fp) fclose_check(fp, __FILE__, __LINE__)

static inline void fseek_check(FILE* fp, long off, int whence, const char* file, int line) {
    if (fseek(fp, off, whence) != 0) die("fseek failed at %s:%d", file, line);
}
#define fseekCheck(fp, off, whence) fseek_check(fp, off, whence, __FILE__, __LINE__)

static inline void* malloc_check(size_t size, const char* file, int line) {
    void* p = malloc(size > 0 ? size : 1);
    if (p == NULL) die("out of memory allocating %zu bytes at %s:%d", size, file, line);
    return p;
}
#define mallocCheck(size) malloc_check(size, __FILE__, __LINE__)

static inline void* calloc_check(size_t n, size_t size, const char* file, int line) {
    void* p = calloc(n > 0 ? n : 1, size > 0 ? size : 1);
    if (p == NULL) die("out of memory allocating %zu x %zu bytes at %s:%d", n, size, file, line);
    return p;
}
#define callocCheck(n, size) calloc_check(n, size, __FILE__, __LINE__)

/* seconds on a monotonic clock (intervals only) */
static inline double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#endif
