/*
 * test_report.h: per-check lines and per-tensor comparisons in llm.c's manner, for test_mamba2.c (CPU, real = float
 * or double) and test_mamba2.cu (GPU, float). Define TEST_REAL, the element type of the compared arrays, first.
 * Each check prints "[ OK ]" or "[FAIL]" and a line; main closes with "N passed, N failed" from g_passed/g_failed.
 */
#ifndef MAMBA2_TEST_REPORT_H
#define MAMBA2_TEST_REPORT_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#ifndef TEST_REAL
#error "define TEST_REAL (the element type compare() reads) before including dev/test_report.h"
#endif

static int g_passed = 0, g_failed = 0;

static void report(int ok, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "[ OK ]" : "[FAIL]");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (ok) g_passed++; else g_failed++;
}

/* max |a-b| and that over max |b| (the whole tensor); passes if that relative error <= tol and a is finite */
static double compare(const char* name, const TEST_REAL* a, const TEST_REAL* b, size_t n, double tol) {
    double maxdiff = 0, maxref = 0;
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite((double)a[i])) finite = 0;
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > maxdiff) maxdiff = d;
        if (fabs((double)b[i]) > maxref) maxref = fabs((double)b[i]);
    }
    double rel = maxdiff / (maxref > 0 ? maxref : 1e-30);
    report(finite && rel <= tol, "%-46s max abs diff %.3e, max |ref| %.3e, rel %.3e (tol %.0e)", name, maxdiff,
           maxref, rel, tol);
    return rel;
}

#endif
