/*
 * matmul.cuh: the three matmuls of every linear layer (in_proj, out_proj, the tied LM head), through cuBLASLt.
 *
 *   forward:          out (BT, OC) = inp (BT, C) @ W (OC, C)^T            out floatX, or float (matmul_forward_f32)
 *   backward, input:  dinp (BT, C) = dout (BT, OC) @ W                     floatX, overwritten or accumulated (+=)
 *   backward, weight: dW (OC, C) += dout^T @ inp                           float, always accumulated (beta = 1)
 *
 * Operands are floatX: bf16 with fp32 accumulation by default; with -DENABLE_FP32 they are float and the compute
 * type is plain CUBLAS_COMPUTE_32F (no TF32), so the GPU trainer agrees with the fp32 CPU trainer to ~1e-5.
 * No bias (Mamba-2 has none in its projections).
 *
 * Row-major (R, C) is column-major (C, R) with leading dimension C, so each product is written for cuBLASLt's
 * column-major D (m, n) = op(A) (m, k) op(B) (k, n):
 *   forward:  D = out^T (OC, BT) = W (stored col-major (C, OC), transposed) x inp^T (col-major (C, BT))
 *   dinp:     D = dinp^T (C, BT) = W (col-major (C, OC)) x dout^T (col-major (OC, BT))
 *   dW:       D = dW^T (C, OC)   = inp^T (col-major (C, BT)) x dout (col-major (OC, BT), transposed)
 *
 * Host functions: matmul_init / matmul_destroy (handle and a 32 MiB workspace), matmul_forward, matmul_forward_f32,
 * matmul_backward_input, matmul_backward_weight. One workspace: calls on different streams must not overlap.
 */
#ifndef MAMBA2_MATMUL_CUH
#define MAMBA2_MATMUL_CUH

#include <cublasLt.h>
#include "cuda_common.h"
#include "utils.h"

#define MATMUL_WORKSPACE_BYTES ((size_t)32 << 20)

static cublasLtHandle_t matmul_handle = NULL;
static void* matmul_workspace = NULL;

static void matmul_check_(cublasStatus_t status, const char* file, int line) {
    if (status != CUBLAS_STATUS_SUCCESS) die("cuBLASLt error %d at %s:%d", (int)status, file, line);
}
#define matmulCheck(status) matmul_check_((status), __FILE__, __LINE__)

static void matmul_init(void) {
    matmulCheck(cublasLtCreate(&matmul_handle));
    cudaCheck(cudaMalloc(&matmul_workspace, MATMUL_WORKSPACE_BYTES));
}

static void matmul_destroy(void) {
    if (matmul_workspace != NULL) cudaCheck(cudaFree(matmul_workspace));
    if (matmul_handle != NULL) matmulCheck(cublasLtDestroy(matmul_handle));
    matmul_workspace = NULL;
    matmul_handle = NULL;
}

/* largest power of two (<= 256) dividing the address: cuBLASLt's heuristic assumes 256-byte aligned operands unless
 * told otherwise, and might pick a kernel that needs more alignment than a sliced pointer has */
static uint32_t matmul_alignment(const void* p) {
    uint32_t a = 256;
    while (a > 1 && ((size_t)p % a) != 0) a >>= 1;
    return a;
}

#if defined(ENABLE_FP32)
#define MATMUL_X_TYPE CUDA_R_32F
#else
#define MATMUL_X_TYPE CUDA_R_16BF
#endif

/* D (m, n, col-major, ldd, type d_type) = op(A) op(B) + beta * D, A and B floatX; op = transpose when trans_* */
static void matmul_lt(void* d, cudaDataType_t d_type, int ldd, const floatX* a, int lda, int trans_a, const floatX* b,
                      int ldb, int trans_b, int m, int n, int k, float beta, cudaStream_t stream) {
    if (matmul_handle == NULL) die("matmul: call matmul_init() before the first matmul");
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulPreference_t pref;
    cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    matmulCheck(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    matmulCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
    matmulCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
    matmulCheck(cublasLtMatrixLayoutCreate(&la, MATMUL_X_TYPE, trans_a ? k : m, trans_a ? m : k, lda));
    matmulCheck(cublasLtMatrixLayoutCreate(&lb, MATMUL_X_TYPE, trans_b ? n : k, trans_b ? k : n, ldb));
    matmulCheck(cublasLtMatrixLayoutCreate(&ld, d_type, m, n, ldd));
    matmulCheck(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = MATMUL_WORKSPACE_BYTES;
    matmulCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    uint32_t al_a = matmul_alignment(a), al_b = matmul_alignment(b), al_d = matmul_alignment(d);
    matmulCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                                                     sizeof(al_a)));
    matmulCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                                                     sizeof(al_b)));
    matmulCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d,
                                                     sizeof(al_d)));
    matmulCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d,
                                                     sizeof(al_d)));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    matmulCheck(cublasLtMatmulAlgoGetHeuristic(matmul_handle, desc, la, lb, ld, ld, pref, 1, &heur, &found));
    if (found == 0) {
        die("matmul: cuBLASLt has no algorithm for m=%d n=%d k=%d (trans %d %d, ld %d %d %d, align %u %u %u); check "
            "the shapes and the pointers' alignment", m, n, k, trans_a, trans_b, lda, ldb, ldd, al_a, al_b, al_d);
    }
    const float alpha = 1.f;
    matmulCheck(cublasLtMatmul(matmul_handle, desc, &alpha, a, la, b, lb, &beta, d, ld, d, ld, &heur.algo,
                               matmul_workspace, MATMUL_WORKSPACE_BYTES, stream));
    matmulCheck(cublasLtMatmulPreferenceDestroy(pref));
    matmulCheck(cublasLtMatrixLayoutDestroy(la));
    matmulCheck(cublasLtMatrixLayoutDestroy(lb));
    matmulCheck(cublasLtMatrixLayoutDestroy(ld));
    matmulCheck(cublasLtMatmulDescDestroy(desc));
}

/* out (BT, OC) floatX = inp (BT, C) @ weight (OC, C)^T */
static void matmul_forward(floatX* out, const floatX* inp, const floatX* weight, int BT, int C, int OC,
                           cudaStream_t stream) {
    matmul_lt(out, MATMUL_X_TYPE, OC, weight, C, 1, inp, C, 0, OC, BT, C, 0.f, stream);
}

/* the same with a float output */
static void matmul_forward_f32(float* out, const floatX* inp, const floatX* weight, int BT, int C, int OC,
                               cudaStream_t stream) {
    matmul_lt(out, CUDA_R_32F, OC, weight, C, 1, inp, C, 0, OC, BT, C, 0.f, stream);
}

/* dinp (BT, C) floatX = dout (BT, OC) @ weight (OC, C); accumulate != 0 adds to dinp instead of overwriting */
static void matmul_backward_input(floatX* dinp, const floatX* dout, const floatX* weight, int BT, int C, int OC,
                                  int accumulate, cudaStream_t stream) {
    matmul_lt(dinp, MATMUL_X_TYPE, C, weight, C, 0, dout, OC, 0, C, BT, OC, accumulate ? 1.f : 0.f, stream);
}

/* dweight (OC, C) float += dout (BT, OC)^T @ inp (BT, C) */
static void matmul_backward_weight(float* dweight, const floatX* dout, const floatX* inp, int BT, int C, int OC,
                                   cudaStream_t stream) {
    matmul_lt(dweight, CUDA_R_32F, C, inp, C, 0, dout, OC, 1, C, OC, BT, 1.f, stream);
}

#endif
