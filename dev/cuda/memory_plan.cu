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
 * -r 3 (-r 2 with the checkpoints below x_L and the kept block outputs in pinned host memory) has its own column: its
 * GPU buffers, and its host memory on a line of its own.
 * It also checks (host only, before printing) that the plan's listed buffers add up to its total in every mode, that
 * -r 3's GPU and host bytes add up to -r 2's GPU bytes and one fp32 slot, -r 3's walk (its copies back from the host
 * counted: the figure its documentation gives), and
 * -r 2's index rules (llmc/model.cuh) for every L <= 64 and K <= 12: checkpoint and delta slots each fill their
 * buffer exactly once, every delta a rebuild adds is a kept one, and the backward's walk (layers descending, each
 * rebuild from resid_rebuild_start) forms each x_l from exactly delta_0 .. delta_{l-1}, with resid_rebuild_adds adds;
 * it exits 1 on a failure.
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

/* -r 2's index rules for one (L, K), against the definition x_l = x_0 + delta_0 + ... + delta_{l-1}: a stream value
   is the set of deltas added into it (a bit mask; L <= 63). host: -r 3's walk instead (every x_l < L went through the
   scratch in the forward; a checkpoint comes back through the base slot, copied from the host only when the base
   holds another one), whose copies back are counted into copies[0] (checkpoints) and copies[1] (deltas) and checked
   against the count -r 3 is documented with: one copy of each checkpoint k < L - 1, one of each delta added. Returns
   the number of failures, printed. */
static int check_resid_rules(int L, int K, int host, int copies[2]) {
    int fails = 0, ncp = resid_ncheckpoints(L, K), nd = resid_ndeltas(L, K);
    int cp_used[66] = {0}, d_used[66] = {0};
    for (int l = 0; l <= L; l++)
        if (resid_is_checkpoint(l, L, K)) {
            int s = resid_checkpoint_slot(l, L, K);
            if (s < 0 || s >= ncp || cp_used[s]++) {
                printf("  FAIL L=%d K=%d: checkpoint x_%d in slot %d\n", L, K, l, s);
                fails++;
            }
        }
    for (int j = 0; j < L; j++)
        if (!resid_is_checkpoint(j + 1, L, K)) {
            int s = resid_delta_slot(j, K);
            if (s < 0 || s >= nd || d_used[s]++) {
                printf("  FAIL L=%d K=%d: delta_%d in slot %d\n", L, K, j, s);
                fails++;
            }
        }
    for (int s = 0; s < ncp; s++)
        if (!cp_used[s]) { printf("  FAIL L=%d K=%d: checkpoint slot %d unused\n", L, K, s); fails++; }
    for (int s = 0; s < nd; s++)
        if (!d_used[s]) { printf("  FAIL L=%d K=%d: delta slot %d unused\n", L, K, s); fails++; }
    /* the backward: the scratch holds x_{L-1} after the forward unless it is a checkpoint (-r 3: always) */
    uint64_t scratch = 0;
    int holds = resid_is_checkpoint(L - 1, L, K) && !host ? -1 : L - 1, adds = 0, base_holds = -1;
    if (holds >= 0) scratch = (1ull << (L - 1)) - 1;
    copies[0] = copies[1] = 0;
    for (int l = L - 1; l >= 0; l--) {
        uint64_t want = (1ull << l) - 1, got;
        if (resid_is_checkpoint(l, L, K) && !host) {
            got = want;  /* stored as the forward formed it */
        } else if (holds == l) {
            got = scratch;
        } else if (resid_is_checkpoint(l, L, K)) {  /* -r 3: through the base slot */
            copies[0] += base_holds != l;
            base_holds = l;
            got = want;
        } else {
            int from = resid_rebuild_start(l, K, holds), k = l / K * K;
            if (from == k && host) {
                copies[0] += base_holds != k;
                base_holds = k;
            }
            uint64_t x = from == k ? (1ull << k) - 1 : scratch;
            for (int j = from; j < l; j++) {
                if (resid_is_checkpoint(j + 1, L, K)) {
                    printf("  FAIL L=%d K=%d: rebuild of x_%d adds dropped delta_%d\n", L, K, l, j);
                    fails++;
                }
                x |= 1ull << j;
                adds++;
                copies[1] += host;
            }
            scratch = x;
            holds = l;
            got = x;
        }
        if (got != want) { printf("  FAIL L=%d K=%d: x_%d rebuilt from the wrong deltas\n", L, K, l); fails++; }
    }
    if (adds != resid_rebuild_adds(L, K)) {
        printf("  FAIL L=%d K=%d: %d rebuild adds, resid_rebuild_adds says %d\n", L, K, adds, resid_rebuild_adds(L, K));
        fails++;
    }
    int want_cp = host && L >= 2 ? (L - 2) / K + 1 : 0;  /* the checkpoints 0, K, .. up to L - 2 */
    if (copies[0] != want_cp || copies[1] != (host ? adds : 0)) {
        printf("  FAIL L=%d K=%d host=%d: %d checkpoint and %d delta copies back, documented %d and %d\n", L, K, host,
               copies[0], copies[1], want_cp, host ? adds : 0);
        fails++;
    }
    return fails;
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
           "outputs; a backward rebuilds the stream with %d residual adds\n", K, resid_ncheckpoints(L, K),
           resid_ndeltas(L, K), resid_rebuild_adds(L, K));

    int fails = 0, checks = 0, copies[2];
    for (int host = 0; host <= 1; host++)
        for (int LL = 1; LL <= 63; LL++)
            for (int KK = 1; KK <= 12; KK++, checks++) fails += check_resid_rules(LL, KK, host, copies) > 0;
    check_resid_rules(L, K, 1, copies);
    printf("-r 3 keeps those checkpoints but x_L and those block outputs in host memory: its backward copies %d "
           "checkpoints and %d block outputs back\n\n", copies[0], copies[1]);

    /* the breakdown at T_show: each buffer's KiB a token in each mode (-r 3: the GPU's; its host memory below) */
    enum { NM = 4 };
    int B = batch_for(B_arg, T_show);
    static GPUPlanList lists[NM];
    GPUMemoryPlan plans[NM];
    for (int r = 0; r < NM; r++) {
        plans[r] = plan_of(&c, B, T_show, q, r, k, smem, &lists[r]);
        size_t sum = 0;
        for (int i = 0; i < lists[r].n; i++) sum += lists[r].bytes[i];
        checks++;
        if (sum != plans[r].activations || lists[r].n != lists[0].n) {
            printf("FAIL -r %d: the %d listed buffers add up to %zu bytes, the plan to %zu\n", r, lists[r].n, sum,
                   plans[r].activations);
            fails++;
        }
    }
    /* -r 3 moves bytes of -r 2 to the host and adds one fp32 slot on the GPU (the base slot) */
    checks++;
    size_t slot = CEIL_DIV((size_t)B * T_show * c.d_model * sizeof(float), (size_t)256) * 256;
    if (plans[3].activations + plans[3].host != plans[2].activations + slot || plans[2].host != 0) {
        printf("FAIL -r 3: %zu bytes on the GPU + %zu on the host, -r 2 %zu on the GPU (+ %zu on the host) + a slot "
               "of %zu\n", plans[3].activations, plans[3].host, plans[2].activations, plans[2].host, slot);
        fails++;
    }
    double tokens = (double)B * T_show;
    printf("B=%d T=%d: activation buffers, KiB a token (%s)\n", B, T_show,
           tokens == 1048576.0 ? "= GiB at this B*T" : "GiB = KiB a token x B*T / 2^20");
    printf("  %-26s", "buffer");
    for (int r = 0; r < NM; r++) printf(" %9s%d", "-r ", r);
    printf("\n");
    for (int i = 0; i < lists[0].n; i++) {
        int any = 0;
        for (int r = 0; r < NM; r++) any |= lists[r].bytes[i] > 0;
        if (!any) continue;
        printf("  %-26s", lists[0].name[i]);
        for (int r = 0; r < NM; r++) printf(" %10.2f", lists[r].bytes[i] / 1024.0 / tokens);
        printf("\n");
    }
    printf("  %-26s", "activations (GPU)");
    for (int r = 0; r < NM; r++) printf(" %10.2f", plans[r].activations / 1024.0 / tokens);
    printf("\n  %-26s", "host, pinned (-r 3)");
    for (int r = 0; r < NM; r++) printf(" %10.2f", plans[r].host / 1024.0 / tokens);
    printf("\n  %-26s", "weights, grads, AdamW");
    for (int r = 0; r < NM; r++) printf(" %10.2f", plans[r].weights / GIB);
    printf("   (GiB)\n  %-26s", "GPU total");
    for (int r = 0; r < NM; r++) printf(" %10.2f", (plans[r].weights + plans[r].activations) / GIB);
    printf("   (GiB)\n\n");

    /* totals over T */
    printf("GiB on the GPU (weights + activations; KiB a token of activations); -r 3: + GiB of host memory\n");
    printf("  %9s %4s", "T", "B");
    for (int r = 0; r < NM; r++) printf(" %20s%d", "-r ", r);
    printf("\n");
    for (int T = 2048; T <= (1 << 20); T *= 2) {
        B = batch_for(B_arg, T);
        printf("  %9d %4d", T, B);
        for (int r = 0; r < NM; r++) {
            GPUMemoryPlan p = plan_of(&c, B, T, q, r, k, smem, NULL);
            char cell[64];
            int n = snprintf(cell, sizeof cell, "%.2f (%.1f)", (p.weights + p.activations) / GIB,
                             p.activations / 1024.0 / ((double)B * T));
            if (r == 3) snprintf(cell + n, sizeof cell - n, " + %.2f", p.host / GIB);
            printf(" %21s", cell);
        }
        printf("\n");
    }
    printf("\nchecks: -r 2's and -r 3's index rules for L = 1..63, K = 1..12; listed buffers == plan; -r 3 == -r 2 + a "
           "slot\n%d passed, %d failed\n", checks - fails, fails);
    return fails ? EXIT_FAILURE : EXIT_SUCCESS;
}
