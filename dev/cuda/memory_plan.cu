/*
 * dev/cuda/memory_plan.cu: the GPU trainer's memory plan (llmc/model.cuh, gpu_train_memory_plan_detail) buffer by
 * buffer, for each recompute mode, at sequence lengths from 2K to 1M, WITHOUT a GPU: the plan is the allocation's
 * own list of buffers counted dry, and the one device-dependent choice in it (the shared memory a block may opt in
 * to, which decides the SSD backward's kernels and so its workspace) is an assumption, Hopper's 227 KB by default.
 * Nothing here calls CUDA: it runs on a machine without a GPU (built with nvcc for the model's headers).
 *
 *   dev/cuda/memory_plan_bin                      130M: the per-buffer table at T=1M, then totals for T=2K..1M
 *   dev/cuda/memory_plan_bin -e 130m -b 1 -t 262144 -k 4 -s 101376
 *      -e model preset or key=value description, -b batch (0, the default: dev/run_long_context.sh's, 16384 / T below
 *      T = 16K, else 1), -t the breakdown's T, -k -r 2's checkpoint spacing (0: the default), -s the opt-in shared
 *      memory in bytes (A100: 166912, H100/H200: 232448, sm_86/89/120: 101376)
 *
 * What to read: the KiB a token of each buffer per mode (at B=1, T=2^20 a KiB a token is a GiB), the total against
 * the GPU's memory (H200 139.8 GiB, H100 79.2 GiB, less ~1 GiB of CUDA context), and -r 2's rebuild adds (residual_add
 * calls a backward, each ~10 bytes an element of the (BT, D) stream).
 */
#include "llmc/model.cuh"

#define GIB 1073741824.0

static void die_usage(const char* prog) {
    fprintf(stderr, "usage: %s [-e model] [-b B] [-t T] [-k resid_every] [-s smem_optin_bytes]\n", prog);
    exit(EXIT_FAILURE);
}

/* the plan of one mode: weights and activations, and the activation buffers listed */
static GPUMemoryPlan plan_of(const Mamba2Config* c, int B, int T, int q, int r, int k, int smem, GPUPlanList* list) {
    if (list) list->n = 0;
    return gpu_train_memory_plan_detail(c, B, T, q, r, k, 1, 0, smem, list);
}

/* the batch at T: the one asked for, or (0) dev/run_long_context.sh's */
static int batch_for(int B_arg, int T) { return B_arg > 0 ? B_arg : T < 16384 ? 16384 / T : 1; }

int main(int argc, char** argv) {
    const char* model = "130m";
    int B_arg = 0, T_show = 1 << 20, k = 0, smem = 232448;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (argv[i][0] != '-' || argv[i][2] != '\0') die_usage(argv[0]);
        switch (argv[i][1]) {
        case 'e': model = argv[i + 1]; break;
        case 'b': B_arg = atoi(argv[i + 1]); break;
        case 't': T_show = atoi(argv[i + 1]); break;
        case 'k': k = atoi(argv[i + 1]); break;
        case 's': smem = atoi(argv[i + 1]); break;
        default: die_usage(argv[0]);
        }
    }
    if (argc % 2 == 0 || B_arg < 0 || T_show < 1 || k < 0 || smem < 1024) die_usage(argv[0]);
    Mamba2Config c;
    char err[1024];
    if (config_parse(&c, model, err, sizeof err) != 0) die("-e %s: %s", model, err);
    if (c.chunk_size < GPU_SSD_MIN_CHUNK) c.chunk_size = GPU_SSD_MIN_CHUNK;
    int q = gpu_ssd_chunk(&c, GPU_SSD_MAX_CHUNK), K = resid_every(k), L = c.n_layer;
    printf("model %s: d_model %d, %d layers, d_inner %d, %d heads, headdim %d, d_state %d, d_in_proj %d, conv_dim %d; "
           "%s build, SSD chunk %d, assumed opt-in shared memory %d bytes (SSD backward: %s kernels)\n", model,
           c.d_model, L, c.d_inner, c.nheads, c.headdim, c.d_state, c.d_in_proj, c.conv_dim, PRECISION_NAME, q, smem,
           ssd_bwd_kernels(c.nheads, c.headdim, c.d_state, smem) == SSD_BWD_TILES ? "tile" : "simple");
    printf("-r 2 keeps fp32 residual checkpoints every %d layers (%d of them with x_L, + 1 scratch slot) and %d block "
           "outputs; a backward rebuilds the stream with %d residual adds\n\n", K, resid_ncheckpoints(L, K),
           resid_ndeltas(L, K), resid_rebuild_adds(L, K));

    /* the breakdown at T_show: each buffer's KiB a token in each mode */
    int B = batch_for(B_arg, T_show);
    static GPUPlanList lists[3];
    GPUMemoryPlan plans[3];
    for (int r = 0; r < 3; r++) plans[r] = plan_of(&c, B, T_show, q, r, k, smem, &lists[r]);
    double tokens = (double)B * T_show;
    printf("B=%d T=%d: activation buffers, KiB a token (%s)\n", B, T_show,
           tokens == 1048576.0 ? "= GiB at this B*T" : "GiB = KiB a token x B*T / 2^20");
    printf("  %-26s %10s %10s %10s\n", "buffer", "-r 0", "-r 1", "-r 2");
    for (int i = 0; i < lists[0].n; i++) {
        double v[3];
        int any = 0;
        for (int r = 0; r < 3; r++) {
            v[r] = lists[r].bytes[i] / 1024.0 / tokens;
            any |= lists[r].bytes[i] > 0;
        }
        if (any) printf("  %-26s %10.2f %10.2f %10.2f\n", lists[0].name[i], v[0], v[1], v[2]);
    }
    printf("  %-26s %10.2f %10.2f %10.2f\n", "activations", plans[0].activations / 1024.0 / tokens,
           plans[1].activations / 1024.0 / tokens, plans[2].activations / 1024.0 / tokens);
    printf("  %-26s %10.2f %10.2f %10.2f   (GiB)\n", "weights, grads, AdamW", plans[0].weights / GIB,
           plans[1].weights / GIB, plans[2].weights / GIB);
    printf("  %-26s %10.2f %10.2f %10.2f   (GiB)\n\n", "total", (plans[0].weights + plans[0].activations) / GIB,
           (plans[1].weights + plans[1].activations) / GIB, (plans[2].weights + plans[2].activations) / GIB);

    /* totals over T */
    printf("GiB in all (weights + activations; KiB a token of activations)\n");
    printf("  %9s %4s %20s %20s %20s\n", "T", "B", "-r 0", "-r 1", "-r 2");
    for (int T = 2048; T <= (1 << 20); T *= 2) {
        B = batch_for(B_arg, T);
        printf("  %9d %4d", T, B);
        for (int r = 0; r < 3; r++) {
            GPUMemoryPlan p = plan_of(&c, B, T, q, r, k, smem, NULL);
            char cell[64];
            snprintf(cell, sizeof cell, "%.2f (%.1f)", (p.weights + p.activations) / GIB,
                     p.activations / 1024.0 / ((double)B * T));
            printf(" %20s", cell);
        }
        printf("\n");
    }
    return 0;
}
