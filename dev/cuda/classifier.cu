/*
 * classifier.cu: develop and check llmc/classifier.cuh (fused softmax + cross-entropy + dlogits in place).
 *
 * Build: nvcc -O3 -arch=sm_90 -I. -o dev/cuda/classifier_bin dev/cuda/classifier.cu   (add -DENABLE_FP32 for fp32)
 * Run:   ./dev/cuda/classifier_bin          (checks, then the benchmark)   ./dev/cuda/classifier_bin bench
 * Every kernel variant is checked against a double CPU reference at each shape: the two-pass kernel (the fallback),
 * the resident kernel with one row buffer and with two (the default), each also with a grid of a few blocks so
 * that every block walks many rows (the double buffer's parity flips, the next-row copies). The resident kernels
 * must also match the two-pass kernel bitwise (same per-thread order of operations), and every kernel its own rerun.
 * The padded columns are filled with large values: a kernel that let them into the softmax would fail.
 */
#include "dev/cuda/kernels_dev.h"
#include "llmc/classifier.cuh"

/* v2, the kernel as it was before the resident kernel (exp2f, the column test on every element, contractions left
 * to the compiler): timed in the same call for the before/after, and checked against the reference */
__global__ static void __launch_bounds__(CLASSIFIER_BLOCK)
classifier_v2_kernel(floatX* logits, float* losses, int* error_flag, const int* targets, float dloss, int V, int Vp,
                     int write_grad) {
    __shared__ float sh_m[CLASSIFIER_BLOCK / WARP_SIZE], sh_s[CLASSIFIER_BLOCK / WARP_SIZE];
    int row = blockIdx.x;
    floatX* lr = logits + (size_t)row * Vp;
    int target = targets[row];
    int valid = target >= 0 && target < V;
    float target_logit = valid ? toF(lr[target]) : 0.f;
    float m = -INFINITY, s = 0.f;
    for (int c = threadIdx.x * XVEC; c < V; c += blockDim.x * XVEC) {
        Vec128<floatX> x = load128(lr + c);
        float vm = -INFINITY;
        for (int i = 0; i < XVEC; i++) if (c + i < V) vm = fmaxf(vm, toF(x.v[i]) * CLASSIFIER_LOG2E);
        float nm = fmaxf(m, vm);
        float vs = 0.f;
        for (int i = 0; i < XVEC; i++) if (c + i < V) vs += exp2f(toF(x.v[i]) * CLASSIFIER_LOG2E - nm);
        s = (m == -INFINITY ? 0.f : s * exp2f(m - nm)) + vs;
        m = nm;
    }
    float lse2 = classifier_block_lse2(m, s, sh_m, sh_s);
    classifier_write_loss(losses, error_flag, row, target, valid, lse2, target_logit);
    if (!write_grad) return;
    for (int c = threadIdx.x * XVEC; c < Vp; c += blockDim.x * XVEC) {
        Vec128<floatX> x = load128cs(lr + c);
        Vec128<floatX> g;
        for (int i = 0; i < XVEC; i++) {
            int col = c + i;
            float p = exp2f(toF(x.v[i]) * CLASSIFIER_LOG2E - lse2);
            float gi = (p - (col == target ? 1.f : 0.f)) * dloss;
            g.v[i] = fromF(col < V && valid ? gi : 0.f);
        }
        store128cs(lr + c, g);
    }
}

#define CLASSIFIER_V2 (-1)     /* a configuration's variant: run classifier_v2_kernel */
#define CLASSIFIER_WIDE (-2)   /* the resident kernel, two buffers, 1024 threads (other per-thread order, other bits) */

static void launch(floatX* logits, float* losses, int* error_flag, const int* targets, float dloss, int BT, int V,
                   int Vp, int write_grad, int variant, int ctas) {
    if (variant == CLASSIFIER_V2) {
        classifier_v2_kernel<<<BT, CLASSIFIER_BLOCK>>>(logits, losses, error_flag, targets, dloss, V, Vp, write_grad);
        cudaCheckLast();
    } else if (variant == CLASSIFIER_WIDE && classifier_resident_fits(Vp, 2)) {
        classifier_resident_launch<2, 1024>(logits, losses, error_flag, targets, dloss, BT, V, Vp, write_grad, ctas, 0);
    } else if (variant == CLASSIFIER_WIDE) {
        classifier_launch_cfg(logits, losses, error_flag, targets, dloss, BT, V, Vp, write_grad, CLASSIFIER_TWO_PASS,
                              0, 0);
    } else {
        classifier_launch_cfg(logits, losses, error_flag, targets, dloss, BT, V, Vp, write_grad, variant, ctas, 0);
    }
}

typedef struct {
    const char* name;
    int variant, ctas;   /* classifier_launch_cfg's arguments; ctas 0 = as many blocks as fit at once */
} Config;

static const Config configs[] = {
    {"two-pass", CLASSIFIER_TWO_PASS, 0},
    {"v2 (before)", CLASSIFIER_V2, 0},
    {"resident x1", CLASSIFIER_RESIDENT1, 0},
    {"resident x1, 3 blocks", CLASSIFIER_RESIDENT1, 3},
    {"resident x2 (default)", CLASSIFIER_AUTO, 0},
    {"resident x2, 5 blocks", CLASSIFIER_AUTO, 5},
    {"resident x2 1024 threads", CLASSIFIER_WIDE, 0},
    {"resident x2 1024 threads, 5 blocks", CLASSIFIER_WIDE, 5},
};
#define NCONFIGS ((int)(sizeof configs / sizeof configs[0]))

/* which kernel a configuration really runs at this Vp, training or not (a resident one whose rows do not fit falls
 * back; classifier_launch_cfg's AUTO rule) */
static const char* kernel_run(const Config* cfg, int Vp, int write_grad) {
    if (cfg->variant == CLASSIFIER_V2) return "v2 (before)";
    if (cfg->variant == CLASSIFIER_WIDE) return classifier_resident_fits(Vp, 2) ? "resident x2 1024" : "two-pass";
    if (cfg->variant == CLASSIFIER_AUTO && classifier_resident_fits(Vp, 2)) return "resident x2";
    if ((cfg->variant == CLASSIFIER_RESIDENT1 || (cfg->variant == CLASSIFIER_AUTO && write_grad)) &&
        classifier_resident_fits(Vp, 1))
        return "resident x1";
    return "two-pass";
}

static void check_shape(int BT, int V, int Vp) {
    printf("shape BT=%d V=%d Vp=%d (%s)\n", BT, V, Vp, PRECISION_NAME);
    int bf16 = sizeof(floatX) == 2;
    size_t n = (size_t)BT * Vp;
    float* h_logits = dev_random_floats(n, -6.f, 6.f);
    for (int t = 0; t < BT; t++)
        for (int c = V; c < Vp; c++) h_logits[(size_t)t * Vp + c] = 50.f;
    dev_round_to_X(h_logits, n);
    int* h_tgt = dev_random_ints(BT, V);
    h_tgt[BT - 1] = V - 1;   /* the last real column is a target once */
    float dloss = 1.0f / (BT * 3.0f);
    floatX* d_logits = dev_upload_X(h_logits, n);
    int* d_tgt = (int*)dev_malloc(BT * sizeof(int));
    float* d_losses = (float*)dev_malloc(BT * sizeof(float));
    int* d_flag = (int*)dev_malloc(sizeof(int));

    /* reference */
    double* r_loss = (double*)mallocCheck(BT * sizeof(double));
    double* r_grad = (double*)mallocCheck(n * sizeof(double));
    for (int t = 0; t < BT; t++) {
        const float* x = h_logits + (size_t)t * Vp;
        double mx = -1e300, s = 0;
        for (int c = 0; c < V; c++) if (x[c] > mx) mx = x[c];
        for (int c = 0; c < V; c++) s += exp(x[c] - mx);
        double lse = mx + log(s);
        r_loss[t] = lse - x[h_tgt[t]];
        for (int c = 0; c < Vp; c++)
            r_grad[(size_t)t * Vp + c] = c < V ? (exp(x[c] - lse) - (c == h_tgt[t])) * dloss : 0.0;
    }

    float *base_loss = NULL, *base_grad = NULL;   /* the two-pass kernel's outputs (configs[0]) */
    for (int k = 0; k < NCONFIGS; k++) {
        const Config* cfg = &configs[k];
        char label[160];
        printf(" config %s (runs the %s kernel; loss only: %s)\n", cfg->name, kernel_run(cfg, Vp, 1),
               kernel_run(cfg, Vp, 0));
        cudaCheck(cudaMemcpy(d_tgt, h_tgt, BT * sizeof(int), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemset(d_flag, 0, sizeof(int)));
        dev_copy_to_X(d_logits, h_logits, n);

        /* evaluation mode: losses only, logits untouched */
        dev_poison(d_losses, BT * sizeof(float));
        launch(d_logits, d_losses, d_flag, d_tgt, 0.f, BT, V, Vp, 0, cfg->variant, cfg->ctas);
        float* g_loss = dev_download_F(d_losses, BT);
        float* g_untouched = dev_download_X(d_logits, n);
        dev_validate("loss only: losses", g_loss, r_loss, BT, 1e-5, 1e-5);
        dev_record("loss only leaves the logits alone", memcmp(g_untouched, h_logits, n * sizeof(float)) == 0);

        /* training mode, twice from the same logits: the second must be bitwise the first */
        dev_poison(d_losses, BT * sizeof(float));
        launch(d_logits, d_losses, d_flag, d_tgt, dloss, BT, V, Vp, 1, cfg->variant, cfg->ctas);
        float* t_loss = dev_download_F(d_losses, BT);
        float* t_grad = dev_download_X(d_logits, n);
        dev_validate("losses", t_loss, r_loss, BT, 1e-5, 1e-5);
        dev_validate("dlogits (in place)", t_grad, r_grad, n, bf16 ? 1e-3 * dloss / V : 2e-7 * dloss,
                     bf16 ? 5e-3 : 1e-5);
        dev_record("loss-only and training losses bitwise equal", memcmp(g_loss, t_loss, BT * sizeof(float)) == 0);
        int flag;
        cudaCheck(cudaMemcpy(&flag, d_flag, sizeof(int), cudaMemcpyDeviceToHost));
        dev_record("error flag stays 0 for valid targets", flag == 0);
        dev_copy_to_X(d_logits, h_logits, n);
        dev_poison(d_losses, BT * sizeof(float));
        launch(d_logits, d_losses, d_flag, d_tgt, dloss, BT, V, Vp, 1, cfg->variant, cfg->ctas);
        float* t_loss2 = dev_download_F(d_losses, BT);
        float* t_grad2 = dev_download_X(d_logits, n);
        dev_check_bitwise("losses", t_loss, t_loss2, BT * sizeof(float));
        dev_check_bitwise("dlogits", t_grad, t_grad2, n * sizeof(float));
        if (k == 0) {
            base_loss = t_loss; base_grad = t_grad;
        } else if (cfg->variant != CLASSIFIER_V2 && cfg->variant != CLASSIFIER_WIDE) {   /* those round otherwise */
            snprintf(label, sizeof label, "losses bitwise equal to the two-pass kernel's");
            dev_record(label, memcmp(t_loss, base_loss, BT * sizeof(float)) == 0);
            snprintf(label, sizeof label, "dlogits bitwise equal to the two-pass kernel's");
            dev_record(label, memcmp(t_grad, base_grad, n * sizeof(float)) == 0);
        }

        /* out-of-range targets (V, and -2) must raise the flag, get NaN and a zero gradient row; the other rows
         * stay exactly as before (-1 is not out of range: a masked target, below) */
        int* bad_tgt = (int*)mallocCheck(BT * sizeof(int));
        memcpy(bad_tgt, h_tgt, BT * sizeof(int));
        bad_tgt[0] = V;
        bad_tgt[BT / 2] = -2;
        cudaCheck(cudaMemcpy(d_tgt, bad_tgt, BT * sizeof(int), cudaMemcpyHostToDevice));
        dev_copy_to_X(d_logits, h_logits, n);
        launch(d_logits, d_losses, d_flag, d_tgt, dloss, BT, V, Vp, 1, cfg->variant, cfg->ctas);
        cudaCheck(cudaMemcpy(&flag, d_flag, sizeof(int), cudaMemcpyDeviceToHost));
        float* b_loss = dev_download_F(d_losses, BT);
        float* b_grad = dev_download_X(d_logits, n);
        dev_record("error flag is set by targets V and -2", flag == 1);
        dev_record("a bad target's loss is NaN", isnan(b_loss[0]) && isnan(b_loss[BT / 2]));
        int zero_rows = 1;
        for (int c = 0; c < Vp; c++)
            if (b_grad[c] != 0.f || b_grad[(size_t)(BT / 2) * Vp + c] != 0.f) zero_rows = 0;
        dev_record("a bad target's dlogits row is all zero", zero_rows);
        if (BT > 2) dev_record("the other rows' losses are unchanged", b_loss[1] == t_loss[1]);

        /* masked targets (-1, TARGET_NO_LOSS; doc/packing.md): no flag, loss 0, a zero gradient row; every other row
         * bitwise as without the mask */
        int* m_tgt = (int*)mallocCheck(BT * sizeof(int));
        memcpy(m_tgt, h_tgt, BT * sizeof(int));
        for (int t = 0; t < BT; t += 3) m_tgt[t] = -1;
        cudaCheck(cudaMemcpy(d_tgt, m_tgt, BT * sizeof(int), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemset(d_flag, 0, sizeof(int)));
        dev_copy_to_X(d_logits, h_logits, n);
        launch(d_logits, d_losses, d_flag, d_tgt, dloss, BT, V, Vp, 1, cfg->variant, cfg->ctas);
        cudaCheck(cudaMemcpy(&flag, d_flag, sizeof(int), cudaMemcpyDeviceToHost));
        float* m_loss = dev_download_F(d_losses, BT);
        float* m_grad = dev_download_X(d_logits, n);
        int masked_ok = flag == 0, others_same = 1;
        for (int t = 0; t < BT; t++) {
            const float* gr = m_grad + (size_t)t * Vp;
            if (m_tgt[t] == -1) {
                if (m_loss[t] != 0.f) masked_ok = 0;
                for (int c = 0; c < Vp; c++) if (gr[c] != 0.f) masked_ok = 0;
            } else if (m_loss[t] != t_loss[t] || memcmp(gr, t_grad + (size_t)t * Vp, Vp * sizeof(float)) != 0) {
                others_same = 0;
            }
        }
        dev_record("masked targets (-1): no flag, loss 0, a zero dlogits row", masked_ok);
        dev_record("masked targets: every other row bitwise as without the mask", others_same);
        free(m_tgt); free(m_loss); free(m_grad);

        free(g_loss); free(g_untouched); free(t_loss2); free(t_grad2); free(bad_tgt); free(b_loss); free(b_grad);
        if (k != 0) { free(t_loss); free(t_grad); }
    }
    free(base_loss); free(base_grad);
    free(h_logits); free(h_tgt); free(r_loss); free(r_grad);
    cudaCheck(cudaFree(d_logits)); cudaCheck(cudaFree(d_tgt)); cudaCheck(cudaFree(d_losses)); cudaCheck(cudaFree(d_flag));
}

/* the ceiling for fwd+bwd: each 16-byte vector read and written back in place, no math, one per thread */
__global__ static void inplace_rewrite_kernel(floatX* x, size_t nvec) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < nvec) store128cs(x + i * XVEC, load128cs(x + i * XVEC));
}

static void bench(int BT, int V, int Vp) {
    printf("benchmark BT=%d V=%d Vp=%d (%s)\n", BT, V, Vp, PRECISION_NAME);
    size_t n = (size_t)BT * Vp;
    /* fill on the device from a small random block (a host array of 0.8 G floats would be slow to make) */
    size_t chunk = (size_t)1 << 24;
    float* h = dev_random_floats(chunk, -6.f, 6.f);
    floatX* d_logits = (floatX*)dev_malloc(n * sizeof(floatX));
    for (size_t off = 0; off < n; off += chunk) dev_copy_to_X(d_logits + off, h, n - off < chunk ? n - off : chunk);
    int* h_tgt = dev_random_ints(BT, V);
    int* d_tgt = (int*)dev_malloc(BT * sizeof(int));
    cudaCheck(cudaMemcpy(d_tgt, h_tgt, BT * sizeof(int), cudaMemcpyHostToDevice));
    float* d_losses = (float*)dev_malloc(BT * sizeof(float));
    int* d_flag = (int*)dev_malloc(sizeof(int));
    cudaCheck(cudaMemset(d_flag, 0, sizeof(int)));
    /* v2 (before) first and again last: the spread between its two timings is this call's noise. Then the two-pass
     * kernel (the fallback), the resident kernel with one buffer (2 blocks an SM), with two (the default) and with
     * two at 1024 threads.
     * Repeated in-place runs turn the logits into gradients and then gradients of gradients: still random data. */
    const int order[] = {1, 0, 2, 4, 6, 1};
    for (int i = 0; i < (int)(sizeof order / sizeof order[0]); i++) {
        const Config* cfg = &configs[order[i]];
        char label[160];
        float ms = dev_bench_ms(30, [&] {
            launch(d_logits, d_losses, d_flag, d_tgt, 1.f / BT, BT, V, Vp, 1, cfg->variant, 0);
        });
        snprintf(label, sizeof label, "fwd+bwd, %s", kernel_run(cfg, Vp, 1));
        dev_report_bytes(label, ms, 2.0 * n * sizeof(floatX));
        ms = dev_bench_ms(30, [&] {
            launch(d_logits, d_losses, d_flag, d_tgt, 0.f, BT, V, Vp, 0, cfg->variant, 0);
        });
        snprintf(label, sizeof label, "loss only, %s", kernel_run(cfg, Vp, 0));
        dev_report_bytes(label, ms, 1.0 * n * sizeof(floatX));
    }
    size_t nvec = n / XVEC;
    float ms0 = dev_bench_ms(30, [&] {
        inplace_rewrite_kernel<<<(unsigned)CEIL_DIV(nvec, (size_t)256), 256>>>(d_logits, nvec);
    });
    dev_report_bytes("ceiling: in-place read+write, no math", ms0, 2.0 * n * sizeof(floatX));
    /* the launchers the trainer calls (AUTO) */
    float ms = dev_bench_ms(30, [&] {
        classifier_forward_backward(d_logits, d_losses, d_flag, d_tgt, 1.f / BT, BT, V, Vp, 0);
    });
    dev_report_bytes("classifier_forward_backward", ms, 2.0 * n * sizeof(floatX));
    ms = dev_bench_ms(30, [&] { classifier_loss_only(d_logits, d_losses, d_flag, d_tgt, BT, V, Vp, 0); });
    dev_report_bytes("classifier_loss_only", ms, 1.0 * n * sizeof(floatX));
    int flag;
    cudaCheck(cudaMemcpy(&flag, d_flag, sizeof(int), cudaMemcpyDeviceToHost));
    dev_record("benchmark: error flag stays 0", flag == 0);
    free(h); free(h_tgt);
    cudaCheck(cudaFree(d_logits)); cudaCheck(cudaFree(d_tgt)); cudaCheck(cudaFree(d_losses)); cudaCheck(cudaFree(d_flag));
}

int main(int argc, char** argv) {
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0;
    gpu_arch_check();
    gpu_path_print(stdout);  /* the resident kernel's rows: cp.async.bulk (sm_90+) or cp.async (MAMBA2_PORTABLE=1) */
    if (!bench_only) {
        check_shape(7, 37, 48);
        check_shape(5, 8, 8);           /* no padding */
        check_shape(96, 50277, 50288);  /* GPT-NeoX vocab */
        check_shape(300, 50277, 50288); /* more rows than SMs: the default grid's blocks walk 2-3 rows each */
    }
    bench(16384, 50277, 50288);
    return dev_finish();
}
