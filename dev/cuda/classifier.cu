/*
 * classifier.cu: develop and check llmc/classifier.cuh (fused softmax + cross-entropy + dlogits in place).
 *
 * Build: nvcc -O3 -arch=sm_90 -I. -o dev/cuda/classifier_bin dev/cuda/classifier.cu   (add -DENABLE_FP32 for fp32)
 * Run:   ./dev/cuda/classifier_bin
 * The padded columns are filled with large values: a kernel that let them into the softmax would fail.
 */
#include "dev/cuda/kernels_dev.h"
#include "llmc/classifier.cuh"

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
    cudaCheck(cudaMemcpy(d_tgt, h_tgt, BT * sizeof(int), cudaMemcpyHostToDevice));
    float* d_losses = (float*)dev_malloc(BT * sizeof(float));
    int* d_flag = (int*)dev_malloc(sizeof(int));
    cudaCheck(cudaMemset(d_flag, 0, sizeof(int)));

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

    /* evaluation mode: losses only, logits untouched */
    dev_poison(d_losses, BT * sizeof(float));
    classifier_loss_only(d_logits, d_losses, d_flag, d_tgt, BT, V, Vp, 0);
    float* g_loss = dev_download_F(d_losses, BT);
    float* g_untouched = dev_download_X(d_logits, n);
    dev_validate("classifier_loss_only losses", g_loss, r_loss, BT, 1e-5, 1e-5);
    dev_record("classifier_loss_only leaves the logits alone", memcmp(g_untouched, h_logits, n * sizeof(float)) == 0);
    free(g_loss);

    /* training mode */
    dev_poison(d_losses, BT * sizeof(float));
    classifier_forward_backward(d_logits, d_losses, d_flag, d_tgt, dloss, BT, V, Vp, 0);
    g_loss = dev_download_F(d_losses, BT);
    float* g_grad = dev_download_X(d_logits, n);
    dev_validate("classifier losses", g_loss, r_loss, BT, 1e-5, 1e-5);
    dev_validate("classifier dlogits (in place)", g_grad, r_grad, n, bf16 ? 1e-3 * dloss / V : 2e-7 * dloss,
                 bf16 ? 5e-3 : 1e-5);
    int flag;
    cudaCheck(cudaMemcpy(&flag, d_flag, sizeof(int), cudaMemcpyDeviceToHost));
    dev_record("error flag stays 0 for valid targets", flag == 0);

    /* an out-of-range target (V, and -1) must raise the flag; the other rows stay right */
    h_tgt[0] = V;
    h_tgt[BT / 2] = -1;
    cudaCheck(cudaMemcpy(d_tgt, h_tgt, BT * sizeof(int), cudaMemcpyHostToDevice));
    dev_copy_to_X(d_logits, h_logits, n);
    classifier_forward_backward(d_logits, d_losses, d_flag, d_tgt, dloss, BT, V, Vp, 0);
    cudaCheck(cudaMemcpy(&flag, d_flag, sizeof(int), cudaMemcpyDeviceToHost));
    float* g_loss2 = dev_download_F(d_losses, BT);
    dev_record("error flag is set by targets V and -1", flag == 1);
    dev_record("a bad target's loss is NaN", isnan(g_loss2[0]) && isnan(g_loss2[BT / 2]));
    if (BT > 2) dev_record("the other rows' losses are unchanged", g_loss2[1] == g_loss[1]);

    free(h_logits); free(h_tgt); free(r_loss); free(r_grad); free(g_loss); free(g_untouched); free(g_grad);
    free(g_loss2);
    cudaCheck(cudaFree(d_logits)); cudaCheck(cudaFree(d_tgt)); cudaCheck(cudaFree(d_losses)); cudaCheck(cudaFree(d_flag));
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
    /* repeated in-place runs turn the logits into gradients and then gradients of gradients: still random data */
    float ms = dev_bench_ms(30, [&] {
        classifier_forward_backward(d_logits, d_losses, d_flag, d_tgt, 1.f / BT, BT, V, Vp, 0);
    });
    dev_report_bytes("classifier_forward_backward", ms, 2.0 * n * sizeof(floatX));
    ms = dev_bench_ms(30, [&] { classifier_loss_only(d_logits, d_losses, d_flag, d_tgt, BT, V, Vp, 0); });
    dev_report_bytes("classifier_loss_only", ms, 1.0 * n * sizeof(floatX));
    free(h); free(h_tgt);
    cudaCheck(cudaFree(d_logits)); cudaCheck(cudaFree(d_tgt)); cudaCheck(cudaFree(d_losses)); cudaCheck(cudaFree(d_flag));
}

int main(int argc, char** argv) {
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0;
    if (!bench_only) {
        check_shape(7, 37, 48);
        check_shape(5, 8, 8);           /* no padding */
        check_shape(96, 50277, 50288);  /* GPT-NeoX vocab */
    }
    bench(16384, 50277, 50288);
    return dev_finish();
}
