/*
 * dev/cuda/attention.cu: the attention, RoPE and SwiGLU kernels (llmc/attention.cuh, llmc/swiglu.cuh) against a
 * plain double-precision CPU reference, then timed.
 *
 *   ./dev/cuda/attention_bin          tests, then the benchmark table
 *   ./dev/cuda/attention_bin test     tests only
 *   ./dev/cuda/attention_bin bench    benchmark only
 *   MAMBA2_SMEM_LIMIT=101376 ./dev/cuda/attention_bin test    the 99 KB path (hd 128 backward single-buffered)
 *
 * Each test case: random qkv (bf16-exact), RoPE on the GPU against the CPU rotation; the attention forward (out,
 * lse) against the reference computed from the GPU's rotated q, k (the same bf16 inputs, so what is measured is the
 * kernel's own rounding: P as bf16 in P V, the bf16 output); the backward chained through RoPE's backward (dq, dk,
 * dv of the unrotated qkv) against the reference. Tests that would fail if causality, the scale or the document
 * mask were wrong: the GPU's output must be rejected by references with those mistakes. Determinism: two runs
 * bitwise equal. SwiGLU forward and backward against the CPU. Ends with "N passed, N failed".
 *
 * Tolerances (bf16 build): rotated q, k: half a bf16 ulp (|x| 8e-3, rtol 8e-3); out: atol 1e-2, rtol 2e-2 (P is
 * rounded to bf16 before P V: ~0.4% per weight, and out to bf16); lse: 2e-4 (fp32 softmax on the same inputs);
 * dq, dk, dv: 2e-2 of the tensor's largest |value| plus 2e-2 relative (P and dS rounded to bf16 in the products,
 * sums of up to T terms). fp32 build: the same kernels' math in fp32: 1e-4 relative (out, lse), and 5e-4 of the
 * largest |value| for what passes through RoPE (the fp32 angle pos * inv_freq at pos ~2000 is good to ~1e-4 rad,
 * as in torch; host and device powf may differ by an ulp).
 */
#include "dev/cuda/kernels_dev.h"
#include "llmc/gpu_arch.cuh"
#include "llmc/attention.cuh"
#include "dev/cuda/attention_lab.cuh"   /* the wgmma kernels (Hopper), tested and timed here, not the default */
#include "llmc/swiglu.cuh"

#if defined(ENABLE_FP32)
static const int is_bf16 = 0;
#else
static const int is_bf16 = 1;
#endif

/* ------------------------------------------------------------------------------------------------------------ */
/* CPU reference (double) */

/* the angle exactly as the GPU forms it (fp32 inv_freq and product); sin, cos in double */
static float ref_angle(int pos, int i, int rotary_dim, float base) {
    float inv_freq = 1.0f / powf(base, (float)(2 * i) / (float)rotary_dim);
    return (float)pos * inv_freq;
}
/* rotate the first rotary_dim dims of nheads heads starting at column col0 of every row; sign -1 = inverse */
static void ref_rope(double* x, int B, int T, int stride, int col0, int nheads, int hd, int rotary_dim, float base,
                     const int* pos, double sign) {
    int half = rotary_dim / 2;
    for (int bt = 0; bt < B * T; bt++) {
        int p = pos != NULL ? pos[bt] : bt % T;
        for (int h = 0; h < nheads; h++) {
            double* r = x + (size_t)bt * stride + col0 + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                double a = ref_angle(p, i, rotary_dim, base), c = cos(a), s = sign * sin(a);
                double x0 = r[i], x1 = r[i + half];
                r[i] = x0 * c - x1 * s;
                r[i + half] = x0 * s + x1 * c;
            }
        }
    }
}

typedef struct {
    int causal;       /* 0: the wrong, non-causal attention (a test that must reject the GPU's output) */
    int use_docs;     /* 0: ignore seq_idx (likewise) */
} RefMask;

static int ref_allowed(const AttnDims* d, RefMask mk, int b, int i, int j) {
    if (mk.causal && j > i) return 0;
    if (mk.use_docs && d->seq_idx != NULL && d->seq_idx[b * d->T + i] != d->seq_idx[b * d->T + j]) return 0;
    return 1;
}
static double ref_dot(const float* a, const float* b, int n) {
    double s = 0.0;
    for (int c = 0; c < n; c++) s += (double)a[c] * b[c];
    return s;
}
/* P row i of head h (length T, zeros where masked) and its lse; qkv rotated, host floats; d->seq_idx host */
static double ref_probs(double* P, const float* qkv, const AttnDims* d, RefMask mk, double scale, int b, int h, int i) {
    int hk = h / (d->Hq / d->Hkv), hd = d->hd, T = d->T;
    const float* q = qkv + ((size_t)b * T + i) * d->qkv_stride + (size_t)h * hd;
    double mx = -INFINITY;
    for (int j = 0; j < T; j++) {
        if (!ref_allowed(d, mk, b, i, j)) { P[j] = -INFINITY; continue; }
        const float* k = qkv + ((size_t)b * T + j) * d->qkv_stride + (size_t)(d->Hq + hk) * hd;
        P[j] = scale * ref_dot(q, k, hd);
        if (P[j] > mx) mx = P[j];
    }
    double sum = 0.0;
    for (int j = 0; j < T; j++) { P[j] = P[j] == -INFINITY ? 0.0 : exp(P[j] - mx); sum += P[j]; }
    for (int j = 0; j < T; j++) P[j] /= sum;
    return mx + log(sum);
}
/* out (B, T, Hq*hd), lse (B, Hq, T) */
static void ref_attention_forward(double* out, double* lse, const float* qkv, const AttnDims* d, RefMask mk,
                                  double scale) {
    int T = d->T, hd = d->hd;
    double* P = (double*)mallocCheck(T * sizeof(double));
    for (int b = 0; b < d->B; b++)
        for (int h = 0; h < d->Hq; h++) {
            int hk = h / (d->Hq / d->Hkv);
            for (int i = 0; i < T; i++) {
                lse[((size_t)b * d->Hq + h) * T + i] = ref_probs(P, qkv, d, mk, scale, b, h, i);
                double* o = out + ((size_t)b * T + i) * d->Hq * hd + (size_t)h * hd;
                for (int c = 0; c < hd; c++) o[c] = 0.0;
                for (int j = 0; j < T; j++) {
                    if (P[j] == 0.0) continue;
                    const float* v = qkv + ((size_t)b * T + j) * d->qkv_stride + (size_t)(d->Hq + d->Hkv + hk) * hd;
                    for (int c = 0; c < hd; c++) o[c] += P[j] * v[c];
                }
            }
        }
    free(P);
}
/* dqkv (B, T, qkv_stride; the q, k, v columns) w.r.t. the rotated qkv, straight from the definition:
   dP_ij = do_i.v_j, D_i = sum_j P_ij dP_ij, dS = P (dP - D), dq_i = scale sum_j dS_ij k_j, dk_j = scale sum_i
   dS_ij q_i, dv_j = sum_i P_ij do_i (summed over the q heads of a kv head's group) */
static void ref_attention_backward(double* dqkv, const float* qkv, const float* dout, const AttnDims* d,
                                   double scale) {
    int T = d->T, hd = d->hd, S = d->qkv_stride;
    RefMask mk = {1, 1};
    memset(dqkv, 0, (size_t)d->B * T * S * sizeof(double));
    double* P = (double*)mallocCheck(T * sizeof(double));
    double* dP = (double*)mallocCheck(T * sizeof(double));
    for (int b = 0; b < d->B; b++)
        for (int h = 0; h < d->Hq; h++) {
            int hk = h / (d->Hq / d->Hkv);
            for (int i = 0; i < T; i++) {
                ref_probs(P, qkv, d, mk, scale, b, h, i);
                const float* q = qkv + ((size_t)b * T + i) * S + (size_t)h * hd;
                const float* g = dout + ((size_t)b * T + i) * d->Hq * hd + (size_t)h * hd;
                double D = 0.0;
                for (int j = 0; j < T; j++) {
                    if (P[j] == 0.0) { dP[j] = 0.0; continue; }
                    dP[j] = ref_dot(g, qkv + ((size_t)b * T + j) * S + (size_t)(d->Hq + d->Hkv + hk) * hd, hd);
                    D += P[j] * dP[j];
                }
                double* dq = dqkv + ((size_t)b * T + i) * S + (size_t)h * hd;
                for (int j = 0; j < T; j++) {
                    if (P[j] == 0.0) continue;
                    double ds = P[j] * (dP[j] - D);
                    const float* k = qkv + ((size_t)b * T + j) * S + (size_t)(d->Hq + hk) * hd;
                    double* dk = dqkv + ((size_t)b * T + j) * S + (size_t)(d->Hq + hk) * hd;
                    double* dv = dqkv + ((size_t)b * T + j) * S + (size_t)(d->Hq + d->Hkv + hk) * hd;
                    for (int c = 0; c < hd; c++) {
                        dq[c] += scale * ds * k[c];
                        dk[c] += scale * ds * q[c];
                        dv[c] += P[j] * g[c];
                    }
                }
            }
        }
    free(P);
    free(dP);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* helpers */

/* the kinds of llmc/attention.cuh (ATTN_*) and the lab's */
#define KIND_WGMMA 100   /* dev/cuda/attention_lab.cuh's wgmma kernels */
static const char* kind_name(int kind) {
    return kind == KIND_WGMMA ? "wgmma" : kind == ATTN_MMA128 ? "mma.sync 128 rows" : kind == ATTN_MMA ? "mma.sync"
                                                                                                      : "simple";
}
/* the same for the backward, whose ATTN_MMA128 runs 128 rows in the dK/dV kernel only */
static const char* bwd_kind_name(int kind) {
    return kind == ATTN_MMA128 ? "mma.sync, dK/dV 128 rows" : kind_name(kind);
}
/* the kernels a case must run: the default `want` (first), then every other kind up to `most` (the forward's
   128-row kernel is not its default); the lab's wgmma where it runs */
static int fwd_variants(int* vs, int want, int most, int want_wgmma) {
    int n = 0;
    vs[n++] = want;
    for (int v = most; v >= ATTN_SIMPLE; v--)
        if (v != want) vs[n++] = v;
    if (want_wgmma) vs[n++] = KIND_WGMMA;
    return n;
}

static double max_abs(const double* x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}
/* columns [col0, col0 + ncols) of every row of a (rows, stride) matrix, into contiguous arrays */
static void gather_cols_f(float* dst, const float* src, size_t rows, int stride, int col0, int ncols) {
    for (size_t r = 0; r < rows; r++) memcpy(dst + r * ncols, src + r * stride + col0, ncols * sizeof(float));
}
static void gather_cols_d(double* dst, const double* src, size_t rows, int stride, int col0, int ncols) {
    for (size_t r = 0; r < rows; r++) memcpy(dst + r * ncols, src + r * stride + col0, ncols * sizeof(double));
}
/* random documents: boundaries with probability 1/avg per position (at least one when T > 2); pos restarts at 0 */
static void make_docs(int* seq, int* pos, int B, int T, int avg) {
    for (int b = 0; b < B; b++) {
        int doc = 0, start = 0;
        int forced = T > 2 ? 1 + (int)(dev_rand_u32() % (uint32_t)(T - 1)) : -1;
        for (int t = 0; t < T; t++) {
            if (t > 0 && (t == forced || dev_rand_u32() % (uint32_t)avg == 0)) { doc++; start = t; }
            seq[b * T + t] = doc;
            pos[b * T + t] = t - start;
        }
    }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* one attention test case */

typedef struct {
    int B, T, Hq, Hkv, hd, rotary_dim, docs, pad;  /* pad: extra columns per qkv row (row stride > needed) */
} Case;

static void check_case(Case cs) {
    int B = cs.B, T = cs.T, hd = cs.hd, S = (cs.Hq + 2 * cs.Hkv) * hd + cs.pad;
    float base = 10000.0f;
    size_t nqkv = (size_t)B * T * S, nout = (size_t)B * T * cs.Hq * hd, nlse = (size_t)B * cs.Hq * T;
    printf("case B=%d T=%d Hq=%d Hkv=%d hd=%d rotary_dim=%d %s%s\n", B, T, cs.Hq, cs.Hkv, hd, cs.rotary_dim,
           cs.docs ? "packed documents" : "one document per row", cs.pad ? ", padded qkv rows" : "");
    float* qkv = dev_random_floats(nqkv, -2.f, 2.f);
    dev_round_to_X(qkv, nqkv);
    float* dout = dev_random_floats(nout, -1.f, 1.f);
    dev_round_to_X(dout, nout);
    int* seq = NULL; int* pos = NULL; int* d_seq = NULL; int* d_pos = NULL;
    if (cs.docs) {
        seq = (int*)mallocCheck((size_t)B * T * sizeof(int));
        pos = (int*)mallocCheck((size_t)B * T * sizeof(int));
        make_docs(seq, pos, B, T, T > 64 ? T / 4 : 8);
        d_seq = (int*)dev_malloc((size_t)B * T * sizeof(int));
        d_pos = (int*)dev_malloc((size_t)B * T * sizeof(int));
        cudaCheck(cudaMemcpy(d_seq, seq, (size_t)B * T * sizeof(int), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(d_pos, pos, (size_t)B * T * sizeof(int), cudaMemcpyHostToDevice));
    }
    AttnDims dd = {B, T, cs.Hq, cs.Hkv, hd, S, 1.0f / sqrtf((float)hd), d_seq};   /* device pointers */
    AttnDims hdims = dd;                                                           /* host seq_idx */
    hdims.seq_idx = seq;
    char name[96];

    /* RoPE forward */
    floatX* d_qkv = dev_upload_X(qkv, nqkv);
    attention_rope_forward(d_qkv, &dd, cs.rotary_dim, base, d_pos, 0);
    float* rot = dev_download_X(d_qkv, nqkv);
    double* rot_ref = (double*)mallocCheck(nqkv * sizeof(double));
    for (size_t i = 0; i < nqkv; i++) rot_ref[i] = qkv[i];
    ref_rope(rot_ref, B, T, S, 0, cs.Hq + cs.Hkv, hd, cs.rotary_dim, base, pos, 1.0);
    dev_validate("rope forward (all of qkv)", rot, rot_ref, nqkv, is_bf16 ? 8e-3 : 1e-3, is_bf16 ? 8e-3 : 1e-4);
    {   /* the per-element v1 kernel (the default where rotary_dim % 4 != 0) on the same input */
        floatX* d_qkv1 = dev_upload_X(qkv, nqkv);
        attn_rope_launch(d_qkv1, &dd, cs.rotary_dim, base, d_pos, 1.0f, 1, 0);
        float* rot1 = dev_download_X(d_qkv1, nqkv);
        dev_validate("rope forward v1 (all of qkv)", rot1, rot_ref, nqkv, is_bf16 ? 8e-3 : 1e-3, is_bf16 ? 8e-3 : 1e-4);
        free(rot1);
        cudaCheck(cudaFree(d_qkv1));
    }

    /* forward, from the GPU's rotated q, k */
    floatX* d_out = (floatX*)dev_malloc(nout * sizeof(floatX));
    float* d_lse = (float*)dev_malloc(nlse * sizeof(float));
    dev_poison(d_out, nout * sizeof(floatX));
    dev_poison(d_lse, nlse * sizeof(float));
    int kind = attention_forward(d_out, d_lse, d_qkv, &dd, 0);
    /* what should run, worked out here rather than asked of the dispatch: the tile kernels take hd 64 and 128 in
       the bf16 build, the 64-row forward by default and the 128-row one when asked, where its Q | K[2] | V[2]
       (6 x 64 rows of hd + 8) fit the shared memory; the lab's wgmma kernels on the Hopper path */
    int want_tiles = is_bf16 && (hd == 64 || hd == 128);
    int fits128 = (size_t)6 * 64 * (hd + 8) * 2 <= (size_t)cuda_smem_optin();
    int want = !want_tiles ? ATTN_SIMPLE : ATTN_MMA;                /* the 64-row forward: measured the faster */
    int most = !want_tiles ? ATTN_SIMPLE : fits128 ? ATTN_MMA128 : ATTN_MMA;
    /* the backward: at hd 64 the 128-row dK/dV kernel (K, V of 128 rows | Q[2] | dO[2]: 8 x 64 rows of 72, and
       2 x 2 x 64 floats) with the 64-row dQ kernel (smaller), where the dK/dV kernel fits */
    int want_bwd = !want_tiles ? ATTN_SIMPLE
                   : hd == 64 && (size_t)8 * 64 * 72 * 2 + 1024 <= (size_t)cuda_smem_optin() ? ATTN_MMA128
                                                                                              : ATTN_MMA;
    int want_wgmma = want_tiles && gpu_hopper_path();
    snprintf(name, sizeof name, "forward ran the %s kernel", kind_name(want));
    dev_record(name, kind == want);
    float* out = dev_download_X(d_out, nout);
    float* lse = dev_download_F(d_lse, nlse);
    double* out_ref = (double*)mallocCheck(nout * sizeof(double));
    double* lse_ref = (double*)mallocCheck(nlse * sizeof(double));
    double scale = dd.scale;   /* the float the kernels use */
    double oat = is_bf16 ? 1e-2 : 1e-4, ort = is_bf16 ? 2e-2 : 1e-4, lat = is_bf16 ? 2e-4 : 1e-5;
    RefMask right = {1, 1};
    ref_attention_forward(out_ref, lse_ref, rot, &hdims, right, scale);
    snprintf(name, sizeof name, "forward out (%s)", kind_name(kind));
    dev_validate(name, out, out_ref, nout, oat, ort);
    snprintf(name, sizeof name, "forward lse (%s)", kind_name(kind));
    dev_validate(name, lse, lse_ref, nlse, lat, lat);
    /* the slower forward kernels this shape could also take (and the lab's), into their own buffers */
    int vs[8], nv = fwd_variants(vs, kind, most, want_wgmma);
    for (int iv = 1; iv < nv; iv++) {
        int v = vs[iv];
        floatX* d_out2 = (floatX*)dev_malloc(nout * sizeof(floatX));
        float* d_lse2 = (float*)dev_malloc(nlse * sizeof(float));
        dev_poison(d_out2, nout * sizeof(floatX));
        dev_poison(d_lse2, nlse * sizeof(float));
        int ran = v == KIND_WGMMA ? lab_attention_forward_wgmma(d_out2, d_lse2, d_qkv, &dd, 0)
                                  : attention_forward_cfg(d_out2, d_lse2, d_qkv, &dd, v, 0) == v;
        snprintf(name, sizeof name, "forward variant ran (%s)", kind_name(v));
        dev_record(name, ran);
        float* out2 = dev_download_X(d_out2, nout);
        float* lse2 = dev_download_F(d_lse2, nlse);
        snprintf(name, sizeof name, "forward out (%s)", kind_name(v));
        dev_validate(name, out2, out_ref, nout, oat, ort);
        snprintf(name, sizeof name, "forward lse (%s)", kind_name(v));
        dev_validate(name, lse2, lse_ref, nlse, lat, lat);
        free(out2); free(lse2);
        cudaCheck(cudaFree(d_out2)); cudaCheck(cudaFree(d_lse2));
    }

    /* the tests can fail: references with a wrong mask or scale reject the GPU's output */
    double* wout = (double*)mallocCheck(nout * sizeof(double));
    double* wlse = (double*)mallocCheck(nlse * sizeof(double));
    if (T > 1) {
        RefMask noncausal = {0, 1};
        ref_attention_forward(wout, wlse, rot, &hdims, noncausal, scale);
        dev_record("forward is rejected by a non-causal reference",
                   !(dev_compare("", out, wout, nout, oat, ort, 1) && dev_compare("", lse, wlse, nlse, lat, lat, 1)));
        ref_attention_forward(wout, wlse, rot, &hdims, right, scale * 1.25);
        dev_record("forward is rejected by a reference with scale x1.25",
                   !(dev_compare("", out, wout, nout, oat, ort, 1) && dev_compare("", lse, wlse, nlse, lat, lat, 1)));
    }
    if (cs.docs) {
        RefMask nodocs = {1, 0};
        ref_attention_forward(wout, wlse, rot, &hdims, nodocs, scale);
        dev_record("forward is rejected by a reference without the document mask",
                   !(dev_compare("", out, wout, nout, oat, ort, 1) && dev_compare("", lse, wlse, nlse, lat, lat, 1)));
    }

    /* backward, then RoPE's backward: the gradient w.r.t. the unrotated qkv */
    floatX* d_dout = dev_upload_X(dout, nout);
    floatX* d_dqkv = (floatX*)dev_malloc(nqkv * sizeof(floatX));
    float* d_dsum = (float*)dev_malloc(nlse * sizeof(float));
    double* dqkv_ref = (double*)mallocCheck(nqkv * sizeof(double));
    ref_attention_backward(dqkv_ref, rot, dout, &hdims, scale);
    ref_rope(dqkv_ref, B, T, S, 0, cs.Hq + cs.Hkv, hd, cs.rotary_dim, base, pos, -1.0);
    /* the fastest kernels the shape takes on this GPU, then each slower kind (both builds), then the lab's */
    nv = fwd_variants(vs, want_bwd, want_bwd, want_wgmma);
    for (int iv = 0; iv < nv; iv++) {
        int v = vs[iv];
        dev_poison(d_dqkv, nqkv * sizeof(floatX));
        int ran = v == KIND_WGMMA
                      ? lab_attention_backward_wgmma(d_dqkv, d_dsum, d_dout, d_out, d_lse, d_qkv, &dd, 0)
                      : attention_backward_cfg(d_dqkv, d_dsum, d_dout, d_out, d_lse, d_qkv, &dd, v, 0) == v;
        snprintf(name, sizeof name, "backward ran the %s kernels%s", bwd_kind_name(v),
                 v == ATTN_MMA ? (attn_bwd_stages(hd) == 2 ? " (2 stages)" : " (1 stage)") : "");
        dev_record(name, ran);
        attention_rope_backward(d_dqkv, &dd, cs.rotary_dim, base, d_pos, 0);
        float* dqkv = dev_download_X(d_dqkv, nqkv);
        const char* parts[3] = {"dq (through RoPE)", "dk (through RoPE)", "dv"};
        int col0[3] = {0, cs.Hq * hd, (cs.Hq + cs.Hkv) * hd}, ncol[3] = {cs.Hq * hd, cs.Hkv * hd, cs.Hkv * hd};
        for (int p = 0; p < 3; p++) {
            size_t n = (size_t)B * T * ncol[p];
            float* got = (float*)mallocCheck(n * sizeof(float));
            double* ref = (double*)mallocCheck(n * sizeof(double));
            gather_cols_f(got, dqkv, (size_t)B * T, S, col0[p], ncol[p]);
            gather_cols_d(ref, dqkv_ref, (size_t)B * T, S, col0[p], ncol[p]);
            double m = max_abs(ref, n);
            double rel_of_max = is_bf16 ? 2e-2 : (p < 2 && cs.rotary_dim > 0 ? 5e-4 : 1e-4);
            snprintf(name, sizeof name, "backward %s (%s)", parts[p], bwd_kind_name(v));
            dev_validate(name, got, ref, n, rel_of_max * m + 1e-6, is_bf16 ? 2e-2 : 1e-4);
            free(got);
            free(ref);
        }
        free(dqkv);
    }

    free(wout); free(wlse); free(qkv); free(dout); free(rot); free(rot_ref); free(out); free(lse); free(out_ref);
    free(lse_ref); free(dqkv_ref); free(seq); free(pos);
    cudaCheck(cudaFree(d_qkv)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_lse)); cudaCheck(cudaFree(d_dout));
    cudaCheck(cudaFree(d_dqkv)); cudaCheck(cudaFree(d_dsum));
    if (d_seq) cudaCheck(cudaFree(d_seq));
    if (d_pos) cudaCheck(cudaFree(d_pos));
}

/* forward + backward twice on the same inputs: out, lse, dqkv bitwise equal. wgmma: the lab's kernels (Hopper) */
static void check_determinism(Case cs, int wgmma) {
    int B = cs.B, T = cs.T, hd = cs.hd, S = (cs.Hq + 2 * cs.Hkv) * hd + cs.pad;
    size_t nqkv = (size_t)B * T * S, nout = (size_t)B * T * cs.Hq * hd, nlse = (size_t)B * cs.Hq * T;
    printf("determinism B=%d T=%d Hq=%d Hkv=%d hd=%d%s (%s)\n", B, T, cs.Hq, cs.Hkv, hd,
           cs.docs ? " packed documents" : "", wgmma ? "the lab's wgmma kernels" : "the default kernels");
    float* qkv = dev_random_floats(nqkv, -2.f, 2.f);
    float* dout = dev_random_floats(nout, -1.f, 1.f);
    int* d_seq = NULL;
    if (cs.docs) {
        int* seq = (int*)mallocCheck((size_t)B * T * sizeof(int));
        int* pos = (int*)mallocCheck((size_t)B * T * sizeof(int));
        make_docs(seq, pos, B, T, T / 4 + 1);
        d_seq = (int*)dev_malloc((size_t)B * T * sizeof(int));
        cudaCheck(cudaMemcpy(d_seq, seq, (size_t)B * T * sizeof(int), cudaMemcpyHostToDevice));
        free(seq);
        free(pos);
    }
    AttnDims dd = {B, T, cs.Hq, cs.Hkv, hd, S, 1.0f / sqrtf((float)hd), d_seq};
    floatX* d_qkv = dev_upload_X(qkv, nqkv);
    floatX* d_dout = dev_upload_X(dout, nout);
    floatX* d_out = (floatX*)dev_malloc(nout * sizeof(floatX));
    floatX* d_dqkv = (floatX*)dev_malloc(nqkv * sizeof(floatX));
    float* d_lse = (float*)dev_malloc(nlse * sizeof(float));
    float* d_dsum = (float*)dev_malloc(nlse * sizeof(float));
    void* runs[2][3];
    for (int r = 0; r < 2; r++) {
        dev_poison(d_out, nout * sizeof(floatX));
        dev_poison(d_dqkv, nqkv * sizeof(floatX));
        if (wgmma) {
            lab_attention_forward_wgmma(d_out, d_lse, d_qkv, &dd, 0);
            lab_attention_backward_wgmma(d_dqkv, d_dsum, d_dout, d_out, d_lse, d_qkv, &dd, 0);
        } else {
            attention_forward(d_out, d_lse, d_qkv, &dd, 0);
            attention_backward(d_dqkv, d_dsum, d_dout, d_out, d_lse, d_qkv, &dd, 0);
        }
        runs[r][0] = mallocCheck(nout * sizeof(floatX));
        runs[r][1] = mallocCheck(nlse * sizeof(float));
        runs[r][2] = mallocCheck(nqkv * sizeof(floatX));
        cudaCheck(cudaMemcpy(runs[r][0], d_out, nout * sizeof(floatX), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(runs[r][1], d_lse, nlse * sizeof(float), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(runs[r][2], d_dqkv, nqkv * sizeof(floatX), cudaMemcpyDeviceToHost));
    }
    dev_check_bitwise("forward out", runs[0][0], runs[1][0], nout * sizeof(floatX));
    dev_check_bitwise("forward lse", runs[0][1], runs[1][1], nlse * sizeof(float));
    dev_check_bitwise("backward dqkv", runs[0][2], runs[1][2], nqkv * sizeof(floatX));
    for (int r = 0; r < 2; r++) for (int i = 0; i < 3; i++) free(runs[r][i]);
    free(qkv); free(dout);
    cudaCheck(cudaFree(d_qkv)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_dqkv));
    cudaCheck(cudaFree(d_lse)); cudaCheck(cudaFree(d_dsum));
    if (d_seq) cudaCheck(cudaFree(d_seq));
}

/* ------------------------------------------------------------------------------------------------------------ */
/* generation: prefill of L-1 positions into the KV cache, then one decode step at position L-1; its output must
   match the forward's row L-1 on the whole sequence (the same rotated inputs) and the CPU reference */

static void check_decode(int B, int L, int Hq, int Hkv, int hd) {
    int S = (Hq + 2 * Hkv) * hd, Lmax = L + 5, rot = hd / 2;
    float base = 10000.f;
    printf("decode B=%d: prefill %d positions, one step at position %d, Hq=%d Hkv=%d hd=%d (cache of %d)\n", B, L - 1,
           L - 1, Hq, Hkv, hd, Lmax);
    size_t nfull = (size_t)B * L * S;
    float* full = dev_random_floats(nfull, -2.f, 2.f);
    dev_round_to_X(full, nfull);
    float* prompt = (float*)mallocCheck((size_t)B * (L > 1 ? L - 1 : 1) * S * sizeof(float));
    float* step = (float*)mallocCheck((size_t)B * S * sizeof(float));
    for (int b = 0; b < B; b++) {
        memcpy(prompt + (size_t)b * (L - 1) * S, full + (size_t)b * L * S, (size_t)(L - 1) * S * sizeof(float));
        memcpy(step + (size_t)b * S, full + ((size_t)b * L + L - 1) * S, (size_t)S * sizeof(float));
    }
    size_t ncache = (size_t)B * Hkv * Lmax * hd, nrow = (size_t)B * Hq * hd;
    floatX* d_k = (floatX*)dev_malloc(ncache * sizeof(floatX));
    floatX* d_v = (floatX*)dev_malloc(ncache * sizeof(floatX));
    dev_poison(d_k, ncache * sizeof(floatX));
    dev_poison(d_v, ncache * sizeof(floatX));
    if (L > 1) {   /* prefill */
        AttnDims dp = {B, L - 1, Hq, Hkv, hd, S, 1.0f / sqrtf((float)hd), NULL};
        floatX* d_prompt = dev_upload_X(prompt, (size_t)B * (L - 1) * S);
        attention_rope_forward(d_prompt, &dp, rot, base, NULL, 0);
        attention_kv_write(d_k, d_v, d_prompt, &dp, Lmax, 0, 0);
        cudaCheck(cudaFree(d_prompt));
    }
    AttnDims ds = {B, 1, Hq, Hkv, hd, S, 1.0f / sqrtf((float)hd), NULL};
    int* pos = (int*)mallocCheck(B * sizeof(int));
    for (int b = 0; b < B; b++) pos[b] = L - 1;
    int* d_pos = (int*)dev_malloc(B * sizeof(int));
    cudaCheck(cudaMemcpy(d_pos, pos, B * sizeof(int), cudaMemcpyHostToDevice));
    floatX* d_step = dev_upload_X(step, (size_t)B * S);
    attention_rope_forward(d_step, &ds, rot, base, d_pos, 0);
    attention_kv_write(d_k, d_v, d_step, &ds, Lmax, L - 1, 0);
    floatX* d_dec = (floatX*)dev_malloc(nrow * sizeof(floatX));
    dev_poison(d_dec, nrow * sizeof(floatX));
    attention_decode(d_dec, d_step, d_k, d_v, &ds, Lmax, L, 0);
    float* dec = dev_download_X(d_dec, nrow);

    /* the whole sequence through the training forward */
    AttnDims df = {B, L, Hq, Hkv, hd, S, 1.0f / sqrtf((float)hd), NULL};
    floatX* d_full = dev_upload_X(full, nfull);
    attention_rope_forward(d_full, &df, rot, base, NULL, 0);
    floatX* d_out = (floatX*)dev_malloc((size_t)B * L * Hq * hd * sizeof(floatX));
    float* d_lse = (float*)dev_malloc((size_t)B * Hq * L * sizeof(float));
    attention_forward(d_out, d_lse, d_full, &df, 0);
    float* out = dev_download_X(d_out, (size_t)B * L * Hq * hd);
    float* rotated = dev_download_X(d_full, nfull);
    double* out_ref = (double*)mallocCheck((size_t)B * L * Hq * hd * sizeof(double));
    double* lse_ref = (double*)mallocCheck((size_t)B * Hq * L * sizeof(double));
    RefMask right = {1, 1};
    ref_attention_forward(out_ref, lse_ref, rotated, &df, right, df.scale);
    double* last_ref = (double*)mallocCheck(nrow * sizeof(double));
    double* last_fwd = (double*)mallocCheck(nrow * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int c = 0; c < Hq * hd; c++) {
            size_t at = ((size_t)b * L + L - 1) * Hq * hd + c;
            last_ref[(size_t)b * Hq * hd + c] = out_ref[at];
            last_fwd[(size_t)b * Hq * hd + c] = out[at];
        }
    double at = is_bf16 ? 1e-2 : 1e-4, rt = is_bf16 ? 2e-2 : 1e-4;
    dev_validate("decode out against the CPU reference", dec, last_ref, nrow, at, rt);
    dev_validate("decode out against the forward's last row", dec, last_fwd, nrow, 2 * at, 2 * rt);
    free(full); free(prompt); free(step); free(pos); free(dec); free(out); free(rotated); free(out_ref); free(lse_ref);
    free(last_ref); free(last_fwd);
    cudaCheck(cudaFree(d_k)); cudaCheck(cudaFree(d_v)); cudaCheck(cudaFree(d_pos)); cudaCheck(cudaFree(d_step));
    cudaCheck(cudaFree(d_dec)); cudaCheck(cudaFree(d_full)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_lse));
}

/* ------------------------------------------------------------------------------------------------------------ */
/* SwiGLU */

static void check_swiglu(int BT, int Hd) {
    printf("swiglu BT=%d Hd=%d (%s kernels)\n", BT, Hd, Hd % 8 == 0 ? "8-wide" : "scalar");
    size_t n1 = (size_t)BT * 2 * Hd, n = (size_t)BT * Hd;
    float* fc1 = dev_random_floats(n1, -4.f, 4.f);
    float* dout = dev_random_floats(n, -1.f, 1.f);
    dev_round_to_X(fc1, n1);
    dev_round_to_X(dout, n);
    double* out_ref = (double*)mallocCheck(n * sizeof(double));
    double* dfc1_ref = (double*)mallocCheck(n1 * sizeof(double));
    for (int r = 0; r < BT; r++)
        for (int c = 0; c < Hd; c++) {
            double y = fc1[(size_t)r * 2 * Hd + c], g = fc1[(size_t)r * 2 * Hd + Hd + c], go = dout[(size_t)r * Hd + c];
            double sg = 1.0 / (1.0 + exp(-g));
            out_ref[(size_t)r * Hd + c] = y * g * sg;
            dfc1_ref[(size_t)r * 2 * Hd + c] = go * g * sg;
            dfc1_ref[(size_t)r * 2 * Hd + Hd + c] = go * y * sg * (1.0 + g * (1.0 - sg));
        }
    floatX* d_fc1 = dev_upload_X(fc1, n1);
    floatX* d_dout = dev_upload_X(dout, n);
    floatX* d_out = (floatX*)dev_malloc(n * sizeof(floatX));
    floatX* d_dfc1 = (floatX*)dev_malloc(n1 * sizeof(floatX));
    dev_poison(d_out, n * sizeof(floatX));
    dev_poison(d_dfc1, n1 * sizeof(floatX));
    swiglu_forward(d_out, d_fc1, BT, Hd, 0);
    swiglu_backward(d_dfc1, d_dout, d_fc1, BT, Hd, 0);
    float* out = dev_download_X(d_out, n);
    float* dfc1 = dev_download_X(d_dfc1, n1);
    double tol = is_bf16 ? 1e-2 : 1e-5;
    dev_validate("swiglu forward out", out, out_ref, n, tol, tol);
    dev_validate("swiglu backward d(fc1 out)", dfc1, dfc1_ref, n1, tol, tol);
    /* in place: dfc1 over fc1 gives the same bits */
    swiglu_backward(d_fc1, d_dout, d_fc1, BT, Hd, 0);
    float* inplace = dev_download_X(d_fc1, n1);
    dev_check_bitwise("swiglu backward in place and out of place", inplace, dfc1, n1 * sizeof(float));
    free(fc1); free(dout); free(out_ref); free(dfc1_ref); free(out); free(dfc1); free(inplace);
    cudaCheck(cudaFree(d_fc1)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_dfc1));
}

/* ------------------------------------------------------------------------------------------------------------ */
/* benchmark: B*T = 16384 tokens, d_model = H*hd = 768; causal FLOPs as FlashAttention counts them:
   forward 4 B H T^2 hd / 2, forward + backward 3.5 x that (backward = 2.5 forward: 5 products; ours does 7) */

/* forward + backward with a chosen mix of the 64- and 128-row backward tile kernels at hd 64 (the default takes the
   128-row dK/dV and the 64-row dQ kernel; these time the other mixes): dq_mw, kv_mw = 1 or 2 strips per warp */
static void fwd_bwd_mix(int dq_mw, int kv_mw, floatX* dqkv, float* dsum, const floatX* dout, floatX* out, float* lse,
                        const floatX* qkv, const AttnDims* d) {
    attention_forward(out, lse, qkv, d, 0);
#if !defined(ENABLE_FP32)
    attn_bwd_dsum(dsum, dout, out, d, 0);
    if (dq_mw == 2 && kv_mw == 1) attn_bwd_tiles_launch<64, 2, 2, 1>(dqkv, dout, lse, dsum, qkv, d, 0);
    else if (dq_mw == 1 && kv_mw == 2) attn_bwd_tiles_launch<64, 2, 1, 2>(dqkv, dout, lse, dsum, qkv, d, 0);
    else if (dq_mw == 2) attn_bwd_tiles_launch<64, 2, 2, 2>(dqkv, dout, lse, dsum, qkv, d, 0);
    else attn_bwd_tiles_launch<64, 2, 1, 1>(dqkv, dout, lse, dsum, qkv, d, 0);
#else
    (void)dq_mw; (void)kv_mw; (void)dqkv; (void)dsum; (void)dout;
#endif
}

/* fwd, all, rope: the default kernels (kind: the forward's, bkind: the backward's); rope1: the per-element RoPE
   kernel (v1); fwd128: the 128-row mma.sync forward where it fits (else 0; the default is the 64-row one); all64:
   the default forward + the backward's 64-row tile kernels where the default's dK/dV kernel is the 128-row one
   (else 0); mix[0], mix[1]: the same with the 128-row dQ and 64-row dK/dV kernels, and with both on 128 rows (v2's
   default) (else 0); fwd_wg, all_wg:
   the lab's wgmma forward, forward + backward (0 where they cannot run) */
typedef struct {
    int B, T, H, hd;
    float fwd, all, rope, rope1, fwd128, all64, mix[2], fwd_wg, all_wg;
    int kind, bkind;
} BenchRow;

static BenchRow bench_shape(int B, int T, int H, int hd) {
    int S = 3 * H * hd;
    size_t nqkv = (size_t)B * T * S, nout = (size_t)B * T * H * hd, nlse = (size_t)B * H * T;
    float* h = dev_random_floats(nqkv, -2.f, 2.f);
    floatX* d_qkv = dev_upload_X(h, nqkv);
    free(h);
    h = dev_random_floats(nout, -1.f, 1.f);
    floatX* d_dout = dev_upload_X(h, nout);
    free(h);
    floatX* d_out = (floatX*)dev_malloc(nout * sizeof(floatX));
    floatX* d_dqkv = (floatX*)dev_malloc(nqkv * sizeof(floatX));
    float* d_lse = (float*)dev_malloc(nlse * sizeof(float));
    float* d_dsum = (float*)dev_malloc(nlse * sizeof(float));
    AttnDims dd = {B, T, H, H, hd, S, 1.0f / sqrtf((float)hd), NULL};
    float fwd = dev_bench_ms(20, [&] { attention_forward(d_out, d_lse, d_qkv, &dd, 0); });
    float all = dev_bench_ms(20, [&] {
        attention_forward(d_out, d_lse, d_qkv, &dd, 0);
        attention_backward(d_dqkv, d_dsum, d_dout, d_out, d_lse, d_qkv, &dd, 0);
    });
    float rope = dev_bench_ms(20, [&] { attention_rope_forward(d_qkv, &dd, hd, 10000.f, NULL, 0); });
    float rope1 = dev_bench_ms(20, [&] { attn_rope_launch(d_qkv, &dd, hd, 10000.f, NULL, 1.0f, 1, 0); });
    int kind = attention_forward(d_out, d_lse, d_qkv, &dd, 0);
    float fwd128 = attn_fwd_kind(&dd, d_qkv, d_out, ATTN_MMA128) == ATTN_MMA128
                       ? dev_bench_ms(20, [&] { attention_forward_cfg(d_out, d_lse, d_qkv, &dd, ATTN_MMA128, 0); })
                       : 0.f;
    int bkind = attention_backward(d_dqkv, d_dsum, d_dout, d_out, d_lse, d_qkv, &dd, 0);
    float all64 = bkind == ATTN_MMA128 ? dev_bench_ms(20, [&] {
        attention_forward(d_out, d_lse, d_qkv, &dd, 0);
        attention_backward_cfg(d_dqkv, d_dsum, d_dout, d_out, d_lse, d_qkv, &dd, ATTN_MMA, 0);
    }) : 0.f;
    float mix[2] = {0.f, 0.f};
    if (bkind == ATTN_MMA128) {
        mix[0] = dev_bench_ms(20, [&] { fwd_bwd_mix(2, 1, d_dqkv, d_dsum, d_dout, d_out, d_lse, d_qkv, &dd); });
        mix[1] = dev_bench_ms(20, [&] { fwd_bwd_mix(2, 2, d_dqkv, d_dsum, d_dout, d_out, d_lse, d_qkv, &dd); });
    }
    float fwd_wg = 0.f, all_wg = 0.f;
    if (lab_wgmma_takes(&dd, d_qkv, d_out)) {
        fwd_wg = dev_bench_ms(20, [&] { lab_attention_forward_wgmma(d_out, d_lse, d_qkv, &dd, 0); });
        all_wg = dev_bench_ms(20, [&] {
            lab_attention_forward_wgmma(d_out, d_lse, d_qkv, &dd, 0);
            lab_attention_backward_wgmma(d_dqkv, d_dsum, d_dout, d_out, d_lse, d_qkv, &dd, 0);
        });
    }
    double f = 4.0 * B * H * (double)T * T * hd / 2;
    printf("| %5d | %3d | %2d | %2d | %7.3f | %7.1f | %10.3f | %7.1f | %7.3f |\n", T, hd, B, H, fwd,
           f / (fwd * 1e-3) / 1e12, all, 3.5 * f / (all * 1e-3) / 1e12, rope);
    cudaCheck(cudaFree(d_qkv)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_dqkv));
    cudaCheck(cudaFree(d_lse)); cudaCheck(cudaFree(d_dsum));
    BenchRow row = {B, T, H, hd, fwd, all, rope, rope1, fwd128, all64, {mix[0], mix[1]}, fwd_wg, all_wg, kind, bkind};
    return row;
}
static void bench(void) {
    printf("\nattention (mamba2.c, %s, the default kernels: forward and backward on mma.sync, the backward %d-stage at "
           "hd 128): causal, Hq = Hkv, B*T = 16384, H*hd = 768\n", PRECISION_NAME, attn_bwd_stages(128));
    printf("|     T |  hd |  B |  H |  fwd ms | TFLOP/s | fwd+bwd ms | TFLOP/s | rope ms |\n");
    printf("| ----- | --- | -- | -- | ------- | ------- | ---------- | ------- | ------- |\n");
    BenchRow rows[4] = {bench_shape(8, 2048, 12, 64), bench_shape(8, 2048, 6, 128), bench_shape(2, 8192, 12, 64),
                        bench_shape(2, 8192, 6, 128)};
    /* against the tensor-core floor of the work these kernels do: forward 2 products, backward 7 (FA2's 5 plus the
       recomputation of S and dP in the dQ kernel), each 2 B H T^2 hd / 2 FLOPs */
    for (int i = 0; i < 4; i++) {
        BenchRow r = rows[i];
        double prod = 2.0 * r.B * r.H * (double)r.T * r.T * r.hd / 2;
        char name[96];
        snprintf(name, sizeof name, "attention fwd (%s) T=%d hd=%d", kind_name(r.kind), r.T, r.hd);
        dev_report_flops(name, r.fwd, 2 * prod);
        if (r.fwd128 > 0.f) {
            snprintf(name, sizeof name, "attention fwd (%s) T=%d hd=%d", kind_name(ATTN_MMA128), r.T, r.hd);
            dev_report_flops(name, r.fwd128, 2 * prod);
        }
        if (r.fwd_wg > 0.f) {
            snprintf(name, sizeof name, "attention fwd (lab wgmma) T=%d hd=%d", r.T, r.hd);
            dev_report_flops(name, r.fwd_wg, 2 * prod);
        }
        snprintf(name, sizeof name, "attention fwd+bwd (bwd %s) T=%d hd=%d", bwd_kind_name(r.bkind), r.T, r.hd);
        dev_report_flops(name, r.all, 9 * prod);
        if (r.all64 > 0.f) {
            snprintf(name, sizeof name, "attention fwd+bwd (bwd %s) T=%d hd=%d", bwd_kind_name(ATTN_MMA), r.T, r.hd);
            dev_report_flops(name, r.all64, 9 * prod);
        }
        if (r.mix[0] > 0.f) {
            snprintf(name, sizeof name, "attention fwd+bwd (dQ 128, dK/dV 64 rows) T=%d hd=%d", r.T, r.hd);
            dev_report_flops(name, r.mix[0], 9 * prod);
            snprintf(name, sizeof name, "attention fwd+bwd (dQ 128, dK/dV 128 rows) T=%d hd=%d", r.T, r.hd);
            dev_report_flops(name, r.mix[1], 9 * prod);
        }
        if (r.all_wg > 0.f) {
            snprintf(name, sizeof name, "attention fwd+bwd (lab wgmma) T=%d hd=%d", r.T, r.hd);
            dev_report_flops(name, r.all_wg, 9 * prod);
        }
        snprintf(name, sizeof name, "rope (q and k) T=%d hd=%d", r.T, r.hd);
        dev_report_bytes(name, r.rope, 2.0 * 2 * r.B * r.T * r.H * r.hd * sizeof(floatX));
        snprintf(name, sizeof name, "rope v1 (per element) T=%d hd=%d", r.T, r.hd);
        dev_report_bytes(name, r.rope1, 2.0 * 2 * r.B * r.T * r.H * r.hd * sizeof(floatX));
    }
    /* SwiGLU, 16384 rows of Hd = 2048 (a d_model 768 MLP's hidden width, rounded): memory-bound */
    int BT = 16384, Hd = 2048;
    floatX* d_fc1 = (floatX*)dev_malloc((size_t)BT * 2 * Hd * sizeof(floatX));
    floatX* d_dfc1 = (floatX*)dev_malloc((size_t)BT * 2 * Hd * sizeof(floatX));
    floatX* d_o = (floatX*)dev_malloc((size_t)BT * Hd * sizeof(floatX));
    cudaCheck(cudaMemset(d_fc1, 0, (size_t)BT * 2 * Hd * sizeof(floatX)));
    cudaCheck(cudaMemset(d_o, 0, (size_t)BT * Hd * sizeof(floatX)));
    float f = dev_bench_ms(20, [&] { swiglu_forward(d_o, d_fc1, BT, Hd, 0); });
    float b = dev_bench_ms(20, [&] { swiglu_backward(d_dfc1, d_o, d_fc1, BT, Hd, 0); });
    dev_report_bytes("swiglu_forward BT=16384 Hd=2048", f, 3.0 * BT * Hd * sizeof(floatX));
    dev_report_bytes("swiglu_backward BT=16384 Hd=2048", b, 5.0 * BT * Hd * sizeof(floatX));
    cudaCheck(cudaFree(d_fc1)); cudaCheck(cudaFree(d_dfc1)); cudaCheck(cudaFree(d_o));
}

int main(int argc, char** argv) {
    int tests = !(argc > 1 && strcmp(argv[1], "bench") == 0);
    int timing = !(argc > 1 && strcmp(argv[1], "test") == 0);
    gpu_arch_check();
    gpu_path_print(stdout);
    if (tests) {
        /* B, T, Hq, Hkv, hd, rotary_dim, docs, pad */
        Case cases[] = {
            {2, 1, 2, 2, 64, 64, 0, 0},        /* one position */
            {2, 17, 4, 4, 64, 32, 0, 0},       /* a partial block */
            {1, 17, 8, 2, 128, 0, 1, 0},       /* GQA, no rotary, documents */
            {2, 64, 4, 1, 64, 64, 0, 8},       /* one full block, GQA 4:1, padded rows */
            {2, 64, 2, 2, 128, 128, 1, 0},
            {2, 200, 4, 4, 128, 64, 0, 0},     /* several blocks, a partial last */
            {2, 200, 8, 2, 64, 0, 1, 0},
            {1, 200, 4, 1, 128, 128, 1, 8},
            {1, 2048, 4, 1, 64, 32, 0, 0},
            {1, 2048, 2, 2, 128, 128, 1, 0},
            {2, 70, 4, 2, 32, 32, 0, 0},       /* head dims the tile kernels do not take: the simple kernels */
            {1, 45, 3, 1, 80, 42, 1, 0},       /* rotary_dim % 4 != 0: the per-element RoPE kernel */
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(cases[i]);
        Case det1 = {2, 333, 8, 2, 64, 0, 1, 0}, det2 = {1, 1000, 4, 4, 128, 0, 0, 0};
        check_determinism(det1, 0);
        check_determinism(det2, 0);
        if (is_bf16 && gpu_hopper_path()) {
            check_determinism(det1, 1);
            check_determinism(det2, 1);
        }
        check_decode(2, 1, 4, 2, 64);
        check_decode(2, 100, 8, 2, 128);
        check_decode(1, 1000, 4, 4, 64);
        check_decode(1, 37, 3, 1, 80);
        check_swiglu(37, 100);
        check_swiglu(64, 256);
    }
    if (timing) bench();
    return dev_finish();
}
