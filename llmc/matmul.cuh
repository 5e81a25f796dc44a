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
 * Each distinct product (shapes, leading dimensions, transposes, output type, pointer alignments, beta != 0) gets a
 * plan once: its descriptors and the algorithm chosen from cuBLASLt's heuristic list (matmul_choose), kept in a
 * small fixed table. The choice depends only on the heuristic's answer for that product, never on a timing, so a
 * run picks the same kernels as every other run on the same GPU and library: results are bitwise repeatable.
 *
 * Host functions: matmul_init / matmul_destroy (handle, a 32 MiB workspace, the plan table), matmul_forward,
 * matmul_forward_f32, matmul_backward_input, matmul_backward_weight. The *_call functions describe a product
 * without running it (dev/cuda/matmul.cu sweeps the heuristic's list with them). One workspace: calls on different
 * streams must not overlap.
 */
#ifndef MAMBA2_MATMUL_CUH
#define MAMBA2_MATMUL_CUH

#include <cublasLt.h>
#include "cuda_common.h"
#include "utils.h"

#define MATMUL_WORKSPACE_BYTES ((size_t)32 << 20)
#define MATMUL_PLANS 32          /* distinct products kept; the trainer has 9, generation a few per prompt length */
#define MATMUL_HEURISTICS 16     /* results asked of the heuristic, among which matmul_choose picks (it lists 8 for
                                    every trainer product on H100) */

#if defined(ENABLE_FP32)
#define MATMUL_X_TYPE CUDA_R_32F
#else
#define MATMUL_X_TYPE CUDA_R_16BF
#endif

/* everything cuBLASLt's choice of algorithm depends on */
typedef struct {
    int m, n, k, lda, ldb, ldd, trans_a, trans_b;
    int accumulate;                /* beta != 0 */
    cudaDataType_t d_type;
    uint32_t align_a, align_b, align_d;
} MatmulShape;

/* one product as the layer functions pass it: D (m, n) = op(A) op(B) + beta * D */
typedef struct {
    MatmulShape s;
    void* d;
    const floatX* a;
    const floatX* b;
    float beta;
} MatmulCall;

/* a product's descriptors and chosen algorithm, built once per shape */
typedef struct {
    MatmulShape s;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
} MatmulPlan;

static cublasLtHandle_t matmul_handle = NULL;
static void* matmul_workspace = NULL;
static MatmulPlan matmul_plans[MATMUL_PLANS];
static int matmul_nplans = 0, matmul_next_evict = 0;

static void matmul_check_(cublasStatus_t status, const char* file, int line) {
    if (status != CUBLAS_STATUS_SUCCESS) die("cuBLASLt error %d at %s:%d", (int)status, file, line);
}
#define matmulCheck(status) matmul_check_((status), __FILE__, __LINE__)

static void matmul_init(void) {
    matmulCheck(cublasLtCreate(&matmul_handle));
    cudaCheck(cudaMalloc(&matmul_workspace, MATMUL_WORKSPACE_BYTES));
}

static void matmul_plan_release(MatmulPlan* p) {
    matmulCheck(cublasLtMatrixLayoutDestroy(p->la));
    matmulCheck(cublasLtMatrixLayoutDestroy(p->lb));
    matmulCheck(cublasLtMatrixLayoutDestroy(p->ld));
    matmulCheck(cublasLtMatmulDescDestroy(p->desc));
}

/* forget every plan (matmul_destroy; dev/cuda/matmul.cu between its timings) */
static void matmul_forget_plans(void) {
    for (int i = 0; i < matmul_nplans; i++) matmul_plan_release(&matmul_plans[i]);
    matmul_nplans = 0;
    matmul_next_evict = 0;
}

static void matmul_destroy(void) {
    matmul_forget_plans();
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

static MatmulCall matmul_call(void* d, cudaDataType_t d_type, int ldd, const floatX* a, int lda, int trans_a,
                              const floatX* b, int ldb, int trans_b, int m, int n, int k, float beta) {
    MatmulCall c;
    memset(&c, 0, sizeof(c));   /* the shape is compared with memcmp: no stray padding bytes */
    c.s.m = m; c.s.n = n; c.s.k = k;
    c.s.lda = lda; c.s.ldb = ldb; c.s.ldd = ldd;
    c.s.trans_a = trans_a; c.s.trans_b = trans_b;
    c.s.accumulate = beta != 0.f;
    c.s.d_type = d_type;
    c.s.align_a = matmul_alignment(a); c.s.align_b = matmul_alignment(b); c.s.align_d = matmul_alignment(d);
    c.d = d; c.a = a; c.b = b; c.beta = beta;
    return c;
}

/* out (BT, OC) floatX = inp (BT, C) @ weight (OC, C)^T */
static MatmulCall matmul_forward_call(floatX* out, const floatX* inp, const floatX* weight, int BT, int C, int OC) {
    return matmul_call(out, MATMUL_X_TYPE, OC, weight, C, 1, inp, C, 0, OC, BT, C, 0.f);
}
/* the same with a float output */
static MatmulCall matmul_forward_f32_call(float* out, const floatX* inp, const floatX* weight, int BT, int C,
                                          int OC) {
    return matmul_call(out, CUDA_R_32F, OC, weight, C, 1, inp, C, 0, OC, BT, C, 0.f);
}
/* dinp (BT, C) floatX = dout (BT, OC) @ weight (OC, C); accumulate != 0 adds to dinp instead of overwriting */
static MatmulCall matmul_backward_input_call(floatX* dinp, const floatX* dout, const floatX* weight, int BT, int C,
                                             int OC, int accumulate) {
    return matmul_call(dinp, MATMUL_X_TYPE, C, weight, C, 0, dout, OC, 0, C, BT, OC, accumulate ? 1.f : 0.f);
}
/* dweight (OC, C) float += dout (BT, OC)^T @ inp (BT, C) */
static MatmulCall matmul_backward_weight_call(float* dweight, const floatX* dout, const floatX* inp, int BT, int C,
                                              int OC) {
    return matmul_call(dweight, CUDA_R_32F, C, inp, C, 0, dout, OC, 1, C, OC, BT, 1.f);
}

/* the descriptors of a product (no algorithm yet) */
static void matmul_describe(MatmulPlan* p, const MatmulShape* s) {
    p->s = *s;
    cublasOperation_t op_a = s->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = s->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    matmulCheck(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    matmulCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
    matmulCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
    matmulCheck(cublasLtMatrixLayoutCreate(&p->la, MATMUL_X_TYPE, s->trans_a ? s->k : s->m, s->trans_a ? s->m : s->k,
                                           s->lda));
    matmulCheck(cublasLtMatrixLayoutCreate(&p->lb, MATMUL_X_TYPE, s->trans_b ? s->n : s->k, s->trans_b ? s->k : s->n,
                                           s->ldb));
    matmulCheck(cublasLtMatrixLayoutCreate(&p->ld, s->d_type, s->m, s->n, s->ldd));
}

/* the heuristic's results for a described product, best first by its own model (no timing); returns how many */
static int matmul_heuristics(const MatmulPlan* p, cublasLtMatmulHeuristicResult_t* results, int max_results) {
    if (matmul_handle == NULL) die("matmul: call matmul_init() before the first matmul");
    cublasLtMatmulPreference_t pref;
    matmulCheck(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = MATMUL_WORKSPACE_BYTES;
    matmulCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    const MatmulShape* s = &p->s;
    matmulCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &s->align_a,
                                                     sizeof(s->align_a)));
    matmulCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &s->align_b,
                                                     sizeof(s->align_b)));
    matmulCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &s->align_d,
                                                     sizeof(s->align_d)));
    matmulCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &s->align_d,
                                                     sizeof(s->align_d)));
    int found = 0;
    matmulCheck(cublasLtMatmulAlgoGetHeuristic(matmul_handle, p->desc, p->la, p->lb, p->ld, p->ld, pref, max_results,
                                               results, &found));
    matmulCheck(cublasLtMatmulPreferenceDestroy(pref));
    return found;
}

/* a config attribute of an algorithm (all the ones read here fit in 32 bits) */
static uint32_t matmul_algo_attr(const cublasLtMatmulAlgo_t* algo, cublasLtMatmulAlgoConfigAttributes_t attr) {
    uint64_t v = 0;   /* attributes are 16 or 32 bits wide: ask for the width cuBLASLt stores */
    size_t need = 0;
    matmulCheck(cublasLtMatmulAlgoConfigGetAttribute(algo, attr, NULL, 0, &need));
    if (need > sizeof(v)) die("matmul: algorithm attribute %d is %zu bytes wide", (int)attr, need);
    matmulCheck(cublasLtMatmulAlgoConfigGetAttribute(algo, attr, &v, need, &need));
    return (uint32_t)v;
}

/* An algorithm's full config (what cublasLtMatmulAlgoConfigGetAttribute reports), to name one of the heuristic's
 * results independently of its position in the list */
typedef struct {
    uint32_t id, tile, stages, splitk, reduction, swizzle, custom, inner, cluster;
} MatmulAlgoConfig;

static MatmulAlgoConfig matmul_algo_config(const cublasLtMatmulAlgo_t* a) {
    MatmulAlgoConfig c;
    c.id = matmul_algo_attr(a, CUBLASLT_ALGO_CONFIG_ID);
    c.tile = matmul_algo_attr(a, CUBLASLT_ALGO_CONFIG_TILE_ID);
    c.stages = matmul_algo_attr(a, CUBLASLT_ALGO_CONFIG_STAGES_ID);
    c.splitk = matmul_algo_attr(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM);
    c.reduction = matmul_algo_attr(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME);
    c.swizzle = matmul_algo_attr(a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING);
    c.custom = matmul_algo_attr(a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION);
    c.inner = matmul_algo_attr(a, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID);
    c.cluster = matmul_algo_attr(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID);
    return c;
}

/* A product for which one algorithm of the heuristic's own list beat its first by >= 5% (H100, cuBLASLt 13.1,
 * NOTES_kernels.md "cuBLASLt algorithm sweep"), named by its config. Only configs without split-k: a split-k
 * reduction is a second pass, and the INPLACE scheme adds in an order that may change from run to run. */
typedef struct {
    int m, n, k, trans_a, trans_b;
    cudaDataType_t d_type;
    MatmulAlgoConfig algo;
} MatmulPreference;

#if defined(ENABLE_FP32)
static const MatmulPreference* const matmul_preferences = NULL;   /* plain SGEMM: the heuristic's first, as ever */
#define MATMUL_NPREFERENCES 0
#else
static const MatmulPreference matmul_preferences[] = {
    /* in_proj forward at 130M, B*T = 16384 (out^T = W x inp^T): 168x128 tiles instead of 160x192 (the same cluster
     * of 2 along n), the heuristic's 8th of 8: 0.150 -> 0.131 ms, -0.46 ms a training step. (The LM head's dW chunk
     * was 8% faster with 256x128 tiles in one sweep and 2% in the next: within the LM head's clock noise, not kept.)
     * Other products: no listed algorithm beat the first by more than the run-to-run noise (2-5%). */
    {3352, 16384, 768, 1, 0, CUDA_R_16BF,
     {66, CUBLASLT_MATMUL_TILE_168x128, CUBLASLT_MATMUL_STAGES_64xAUTO, 1, CUBLASLT_REDUCTION_SCHEME_NONE, 0, 2, 0,
      CUBLASLT_CLUSTER_SHAPE_1x2x1}},
};
#define MATMUL_NPREFERENCES ((int)(sizeof(matmul_preferences) / sizeof(matmul_preferences[0])))
#endif

/* Which of the heuristic's results to run: the preferred config where the table names one for this product and the
 * list holds it, else the first. A fixed rule on the heuristic's (deterministic) answer: no timing, so every run and
 * every process picks the same kernel. */
static int matmul_choose(const MatmulShape* s, const cublasLtMatmulHeuristicResult_t* results, int found) {
    for (int p = 0; p < MATMUL_NPREFERENCES; p++) {
        const MatmulPreference* pr = &matmul_preferences[p];
        if (pr->m != s->m || pr->n != s->n || pr->k != s->k || pr->trans_a != s->trans_a ||
            pr->trans_b != s->trans_b || pr->d_type != s->d_type)
            continue;
        for (int i = 0; i < found; i++) {
            MatmulAlgoConfig c = matmul_algo_config(&results[i].algo);
            if (memcmp(&c, &pr->algo, sizeof(c)) == 0) return i;
        }
    }
    return 0;
}

static void matmul_plan_build(MatmulPlan* p, const MatmulShape* s) {
    matmul_describe(p, s);
    cublasLtMatmulHeuristicResult_t results[MATMUL_HEURISTICS];
    int found = matmul_heuristics(p, results, MATMUL_HEURISTICS);
    if (found == 0) {
        die("matmul: cuBLASLt has no algorithm for m=%d n=%d k=%d (trans %d %d, ld %d %d %d, align %u %u %u); check "
            "the shapes and the pointers' alignment", s->m, s->n, s->k, s->trans_a, s->trans_b, s->lda, s->ldb, s->ldd,
            s->align_a, s->align_b, s->align_d);
    }
    p->algo = results[matmul_choose(s, results, found)].algo;
}

/* the plan of a shape: from the table, else built into it (a full table evicts its entries in turn) */
static const MatmulPlan* matmul_plan(const MatmulShape* s) {
    for (int i = 0; i < matmul_nplans; i++)
        if (memcmp(&matmul_plans[i].s, s, sizeof(*s)) == 0) return &matmul_plans[i];
    MatmulPlan* p;
    if (matmul_nplans < MATMUL_PLANS) {
        p = &matmul_plans[matmul_nplans++];
    } else {   /* the descriptors are host objects that a finished cublasLtMatmul call no longer needs */
        p = &matmul_plans[matmul_next_evict];
        matmul_next_evict = (matmul_next_evict + 1) % MATMUL_PLANS;
        matmul_plan_release(p);
    }
    matmul_plan_build(p, s);
    return p;
}

/* run a product with a given algorithm of its plan */
static void matmul_execute(const MatmulPlan* p, const cublasLtMatmulAlgo_t* algo, const MatmulCall* c,
                           cudaStream_t stream) {
    const float alpha = 1.f;
    matmulCheck(cublasLtMatmul(matmul_handle, p->desc, &alpha, c->a, p->la, c->b, p->lb, &c->beta, c->d, p->ld, c->d,
                               p->ld, algo, matmul_workspace, MATMUL_WORKSPACE_BYTES, stream));
}

static void matmul_run(const MatmulCall* c, cudaStream_t stream) {
    if (matmul_handle == NULL) die("matmul: call matmul_init() before the first matmul");
    const MatmulPlan* p = matmul_plan(&c->s);
    matmul_execute(p, &p->algo, c, stream);
}

static void matmul_forward(floatX* out, const floatX* inp, const floatX* weight, int BT, int C, int OC,
                           cudaStream_t stream) {
    MatmulCall c = matmul_forward_call(out, inp, weight, BT, C, OC);
    matmul_run(&c, stream);
}

static void matmul_forward_f32(float* out, const floatX* inp, const floatX* weight, int BT, int C, int OC,
                               cudaStream_t stream) {
    MatmulCall c = matmul_forward_f32_call(out, inp, weight, BT, C, OC);
    matmul_run(&c, stream);
}

static void matmul_backward_input(floatX* dinp, const floatX* dout, const floatX* weight, int BT, int C, int OC,
                                  int accumulate, cudaStream_t stream) {
    MatmulCall c = matmul_backward_input_call(dinp, dout, weight, BT, C, OC, accumulate);
    matmul_run(&c, stream);
}

static void matmul_backward_weight(float* dweight, const floatX* dout, const floatX* inp, int BT, int C, int OC,
                                   cudaStream_t stream) {
    MatmulCall c = matmul_backward_weight_call(dweight, dout, inp, BT, C, OC);
    matmul_run(&c, stream);
}

#endif
