/*
 * encoder.cu: develop and check llmc/encoder.cuh (token embedding forward, deterministic backward).
 *
 * Build: nvcc -O3 -arch=sm_90 -I. -o dev/cuda/encoder_bin dev/cuda/encoder.cu        (add -DENABLE_FP32 for fp32)
 * Run:   ./dev/cuda/encoder_bin
 * Checks against a double CPU reference on random inputs, at a small odd shape and at the 130M shape, then times
 * forward and backward at the 130M shape (BT=16384, D=768, Vp=50288) against the memory floor.
 */
#include "dev/cuda/kernels_dev.h"
#include "llmc/encoder.cuh"

/* tokens with a skewed distribution: a quarter of the positions share 8 tokens, so some groups are large */
static int* make_tokens(int BT, int V) {
    int* t = dev_random_ints(BT, V);
    for (int i = 0; i < BT; i++) if (dev_rand_u32() % 4 == 0) t[i] = (int)(dev_rand_u32() % 8) * 37 % V;
    return t;
}

static void check_shape(int BT, int D, int Vp, const char* label) {
    printf("shape %s: BT=%d D=%d Vp=%d (%s)\n", label, BT, D, Vp, PRECISION_NAME);
    float* h_wte = dev_random_floats((size_t)Vp * D, -1.f, 1.f);
    dev_round_to_X(h_wte, (size_t)Vp * D);
    int* h_tok = make_tokens(BT, Vp);
    floatX* d_wte = dev_upload_X(h_wte, (size_t)Vp * D);
    int* d_tok = (int*)dev_malloc(BT * sizeof(int));
    cudaCheck(cudaMemcpy(d_tok, h_tok, BT * sizeof(int), cudaMemcpyHostToDevice));
    float* d_x = (float*)dev_malloc((size_t)BT * D * sizeof(float));
    dev_poison(d_x, (size_t)BT * D * sizeof(float));
    encoder_forward(d_x, d_tok, d_wte, BT, D, 0);
    float* h_x = dev_download_F(d_x, (size_t)BT * D);
    double* ref = (double*)mallocCheck((size_t)BT * D * sizeof(double));
    for (int bt = 0; bt < BT; bt++)
        for (int c = 0; c < D; c++) ref[(size_t)bt * D + c] = h_wte[(size_t)h_tok[bt] * D + c];
    dev_validate("encoder_forward x", h_x, ref, (size_t)BT * D, 0.0, 0.0);

    /* backward: dwte starts random (the kernel accumulates) */
    float* h_dx = dev_random_floats((size_t)BT * D, -1.f, 1.f);
    float* h_dwte0 = dev_random_floats((size_t)Vp * D, -1.f, 1.f);
    float* d_dx = dev_upload_F(h_dx, (size_t)BT * D);
    float* d_dwte = dev_upload_F(h_dwte0, (size_t)Vp * D);
    int* d_ws = (int*)dev_malloc(encoder_backward_workspace_ints(BT) * sizeof(int));
    int* h_scratch = (int*)mallocCheck(encoder_backward_host_scratch_ints(BT, Vp) * sizeof(int));
    dev_poison(d_ws, encoder_backward_workspace_ints(BT) * sizeof(int));
    EncoderBackwardPlan plan = encoder_backward_prepare(d_ws, h_scratch, h_tok, BT, Vp, 0);
    encoder_backward(d_dwte, d_dx, &plan, D, 0);
    float* h_dwte = dev_download_F(d_dwte, (size_t)Vp * D);
    double* ref_dwte = (double*)mallocCheck((size_t)Vp * D * sizeof(double));
    for (size_t i = 0; i < (size_t)Vp * D; i++) ref_dwte[i] = h_dwte0[i];
    for (int bt = 0; bt < BT; bt++)
        for (int c = 0; c < D; c++) ref_dwte[(size_t)h_tok[bt] * D + c] += h_dx[(size_t)bt * D + c];
    dev_validate("encoder_backward dwte (accumulated)", h_dwte, ref_dwte, (size_t)Vp * D, 1e-5, 1e-5);
    /* run again from the same start: bitwise the same */
    cudaCheck(cudaMemcpy(d_dwte, h_dwte0, (size_t)Vp * D * sizeof(float), cudaMemcpyHostToDevice));
    plan = encoder_backward_prepare(d_ws, h_scratch, h_tok, BT, Vp, 0);
    encoder_backward(d_dwte, d_dx, &plan, D, 0);
    float* h_dwte2 = dev_download_F(d_dwte, (size_t)Vp * D);
    dev_check_bitwise("encoder_backward dwte", h_dwte, h_dwte2, (size_t)Vp * D * sizeof(float));

    free(h_wte); free(h_tok); free(h_x); free(ref); free(h_dx); free(h_dwte0); free(h_dwte); free(h_dwte2);
    free(ref_dwte); free(h_scratch);
    cudaCheck(cudaFree(d_wte)); cudaCheck(cudaFree(d_tok)); cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_dx));
    cudaCheck(cudaFree(d_dwte)); cudaCheck(cudaFree(d_ws));
}

static void bench(int BT, int D, int Vp) {
    printf("benchmark BT=%d D=%d Vp=%d (%s)\n", BT, D, Vp, PRECISION_NAME);
    float* h_wte = dev_random_floats((size_t)Vp * D, -1.f, 1.f);
    int* h_tok = make_tokens(BT, Vp);
    floatX* d_wte = dev_upload_X(h_wte, (size_t)Vp * D);
    int* d_tok = (int*)dev_malloc(BT * sizeof(int));
    cudaCheck(cudaMemcpy(d_tok, h_tok, BT * sizeof(int), cudaMemcpyHostToDevice));
    float* d_x = (float*)dev_malloc((size_t)BT * D * sizeof(float));
    float ms = dev_bench_ms(100, [&] { encoder_forward(d_x, d_tok, d_wte, BT, D, 0); });
    dev_report_bytes("encoder_forward", ms, (double)BT * D * (sizeof(floatX) + 4) + BT * 4.0);

    float* d_dwte = dev_upload_F(h_wte, (size_t)Vp * D);
    int* d_ws = (int*)dev_malloc(encoder_backward_workspace_ints(BT) * sizeof(int));
    int* h_scratch;   /* pinned, as the trainer should allocate it: the upload is then truly asynchronous */
    cudaCheck(cudaMallocHost(&h_scratch, encoder_backward_host_scratch_ints(BT, Vp) * sizeof(int)));
    EncoderBackwardPlan plan = encoder_backward_prepare(d_ws, h_scratch, h_tok, BT, Vp, 0);
    double bytes = (double)BT * D * 4 + (double)plan.nbuckets * D * 8 + (3.0 * BT) * 4;
    printf("  %d distinct tokens in %d positions\n", plan.nbuckets, BT);
    ms = dev_bench_ms(50, [&] {
        cudaCheck(cudaStreamSynchronize(0));   /* the pinned scratch is reused: wait for the last copy */
        EncoderBackwardPlan p = encoder_backward_prepare(d_ws, h_scratch, h_tok, BT, Vp, 0);
        encoder_backward(d_dwte, d_x, &p, D, 0);
    });
    dev_report_bytes("encoder_backward prepare+kernel (host on the path)", ms, bytes);
    ms = dev_bench_ms(100, [&] { encoder_backward(d_dwte, d_x, &plan, D, 0); });
    dev_report_bytes("encoder_backward kernel (prepared early)", ms, bytes);
    free(h_wte); free(h_tok);
    cudaCheck(cudaFreeHost(h_scratch));
    cudaCheck(cudaFree(d_wte)); cudaCheck(cudaFree(d_tok)); cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_dwte));
    cudaCheck(cudaFree(d_ws));
}

int main(int argc, char** argv) {
    int bench_only = argc > 1 && strcmp(argv[1], "bench") == 0;
    if (!bench_only) {
        check_shape(97, 72, 203, "small");
        check_shape(16384, 768, 50288, "130M");
    }
    bench(16384, 768, 50288);
    return dev_finish();
}
