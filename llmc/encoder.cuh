/*
 * encoder.cuh: the token embedding, forward and backward.
 *
 * Forward:  x[bt, :] = wte[tok[bt], :]       x is the float residual stream (BT, D); wte the floatX copy (Vp, D).
 *           One thread copies 16 bytes of wte (8 bf16 / 4 float) and writes them widened to float.
 * Backward: dwte[v, :] += sum over the positions bt with tok[bt] == v of dx[bt, :]   (dwte float (Vp, D)).
 *           Deterministic without atomics: the host (which holds the tokens anyway) groups the positions by token,
 *           in increasing bt order; one block per distinct token sums its rows in that fixed order and adds the sum
 *           to dwte once. Buckets are launched largest first so a frequent token does not finish last.
 *
 * Kernels: encoder_forward_kernel, encoder_backward_kernel.
 * Launchers: encoder_forward; encoder_backward_prepare (host grouping + upload, call it early in the step), then
 * encoder_backward (the kernel); encoder_backward_workspace_ints / _host_scratch_ints size the buffers.
 * Requires D % 8 == 0 (16-byte rows); the launchers check.
 */
#ifndef MAMBA2_ENCODER_CUH
#define MAMBA2_ENCODER_CUH

#include "cuda_common.h"
#include "utils.h"
#include "vec128.cuh"

__global__ static void encoder_forward_kernel(float* x, const int* tokens, const floatX* wte, int BT, int D) {
    int vecs_per_row = D / XVEC;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)BT * vecs_per_row) return;
    int bt = (int)(idx / vecs_per_row);
    int c = (int)(idx % vecs_per_row) * XVEC;
    Vec128<floatX> w = load128(wte + (size_t)tokens[bt] * D + c);
    float* out = x + (size_t)bt * D + c;
    for (int i = 0; i < XVEC; i += 4) {
        Vec128<float> o;
        for (int j = 0; j < 4; j++) o.v[j] = toF(w.v[i + j]);
        store128(out + i, o);
    }
}

/* x (BT, D) float = wte[tokens] ; tokens: device ints in [0, Vp) (the data loader checks them on the host) */
static void encoder_forward(float* x, const int* tokens, const floatX* wte, int BT, int D, cudaStream_t stream) {
    if (D % 8 != 0) die("encoder_forward: D = %d must be a multiple of 8 (16-byte rows)", D);
    const int block = 256;
    size_t nvec = (size_t)BT * (D / XVEC);
    encoder_forward_kernel<<<(unsigned)CEIL_DIV(nvec, (size_t)block), block, 0, stream>>>(x, tokens, wte, BT, D);
    cudaCheckLast();
}

/* one block per distinct token (bucket); threads (x) own 4 consecutive channels, looping if D > 4 * blockDim.x, and
 * ENC_SLICES slices (y) split the group's rows: slice y sums rows y, y + ENC_SLICES, ... in increasing order (loaded
 * 4 at a time, so several loads are in flight), then the slices are added in increasing y. A fixed order: two runs
 * agree bitwise. A frequent token has hundreds of rows, and without the slices its block alone sets the time.
 * workspace layout (ints): positions[BT] (grouped by token, increasing bt inside a group), bucket_token[nb],
 * bucket_start[nb + 1]. Dynamic shared memory: ENC_SLICES * D floats. */
#define ENC_SLICES 4
__global__ static void encoder_backward_kernel(float* dwte, const float* dx, const int* positions,
                                               const int* bucket_token, const int* bucket_start, int D) {
    extern __shared__ float slice_sum[];   /* (ENC_SLICES, D) */
    int b = blockIdx.x;
    int v = bucket_token[b];
    int start = bucket_start[b], end = bucket_start[b + 1];
    int y = threadIdx.y;
    for (int c = threadIdx.x * 4; c < D; c += blockDim.x * 4) {
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
        int i = start + y;
        for (; i + 3 * ENC_SLICES < end; i += 4 * ENC_SLICES) {
            Vec128<float> g[4];
#pragma unroll
            for (int j = 0; j < 4; j++) g[j] = load128cs(dx + (size_t)positions[i + j * ENC_SLICES] * D + c);
#pragma unroll
            for (int j = 0; j < 4; j++) { s0 += g[j].v[0]; s1 += g[j].v[1]; s2 += g[j].v[2]; s3 += g[j].v[3]; }
        }
        for (; i < end; i += ENC_SLICES) {
            Vec128<float> g = load128cs(dx + (size_t)positions[i] * D + c);
            s0 += g.v[0]; s1 += g.v[1]; s2 += g.v[2]; s3 += g.v[3];
        }
        float* mine = slice_sum + (size_t)y * D + c;
        mine[0] = s0; mine[1] = s1; mine[2] = s2; mine[3] = s3;
    }
    __syncthreads();
    if (y != 0) return;
    for (int c = threadIdx.x * 4; c < D; c += blockDim.x * 4) {
        float* out = dwte + (size_t)v * D + c;
        Vec128<float> o = load128(out);
        for (int k = 0; k < 4; k++) {
            float s = slice_sum[c + k];
            for (int sl = 1; sl < ENC_SLICES; sl++) s += slice_sum[(size_t)sl * D + c + k];
            o.v[k] += s;
        }
        store128(out, o);
    }
}

/* sizes of the two scratch buffers encoder_backward_prepare needs */
static size_t encoder_backward_workspace_ints(int BT) { return 3 * (size_t)BT + 1; }     /* device */
static size_t encoder_backward_host_scratch_ints(int BT, int Vp) { return (size_t)Vp + 1 + 4 * (size_t)BT + 1; }

/* what encoder_backward needs from the grouping: the device workspace and the number of groups */
typedef struct {
    const int* d_workspace;
    int nbuckets;
    int BT;
} EncoderBackwardPlan;

/* group the step's positions by token on the host and upload the groups. Call it as soon as the batch's tokens are
 * known (before the forward): the host work and the copy then overlap with the GPU's forward and backward.
 * host_scratch: encoder_backward_host_scratch_ints(BT, Vp) ints, best pinned (cudaMallocHost) so the copy is truly
 * asynchronous; it must stay untouched until the stream has passed the copy (e.g. until the step's end).
 * d_workspace: encoder_backward_workspace_ints(BT) device ints, likewise until encoder_backward has run. */
static EncoderBackwardPlan encoder_backward_prepare(int* d_workspace, int* host_scratch, const int* tokens_host, int BT,
                                                    int Vp, cudaStream_t stream) {
    int* count = host_scratch;                 /* Vp + 1: counts, then the next free slot of each token's group */
    int* ws = host_scratch + Vp + 1;           /* mirrors the device workspace: positions | tokens | starts */
    int* positions = ws;
    int* bucket_token = ws + BT;
    int* bucket_start = ws + 2 * BT;
    int* order = ws + 3 * BT + 1;              /* BT: bucket ids sorted by size */
    memset(count, 0, (size_t)(Vp + 1) * sizeof(int));
    for (int bt = 0; bt < BT; bt++) {
        int t = tokens_host[bt];
        if (t < 0 || t >= Vp) die("encoder_backward_prepare: token %d at position %d is outside [0, %d)", t, bt, Vp);
        count[t]++;
    }
    int nb = 0;
    for (int v = 0; v < Vp; v++) if (count[v] > 0) order[nb++] = v;
    /* counting sort by size, descending (a large group starts first and so does not finish last); stable, so ties
     * stay in token order: a fixed order */
    int max_count = 0;
    for (int i = 0; i < nb; i++) if (count[order[i]] > max_count) max_count = count[order[i]];
    int* by_size = (int*)mallocCheck((size_t)(max_count + 2) * sizeof(int));
    memset(by_size, 0, (size_t)(max_count + 2) * sizeof(int));
    for (int i = 0; i < nb; i++) by_size[max_count - count[order[i]] + 1]++;
    for (int s = 1; s <= max_count + 1; s++) by_size[s] += by_size[s - 1];
    for (int i = 0; i < nb; i++) bucket_token[by_size[max_count - count[order[i]]]++] = order[i];
    free(by_size);
    /* group starts, then positions in increasing bt order inside each group */
    int* cursor = count;
    int acc = 0;
    for (int b = 0; b < nb; b++) {
        int v = bucket_token[b], n = count[v];
        bucket_start[b] = acc;
        cursor[v] = acc;
        acc += n;
    }
    bucket_start[nb] = acc;
    for (int bt = 0; bt < BT; bt++) positions[cursor[tokens_host[bt]]++] = bt;
    /* upload packed: positions (BT) | bucket_token (nb) | bucket_start (nb + 1) */
    memmove(bucket_token + nb, bucket_start, (size_t)(nb + 1) * sizeof(int));
    cudaCheck(cudaMemcpyAsync(d_workspace, ws, (size_t)(BT + 2 * nb + 1) * sizeof(int), cudaMemcpyHostToDevice,
                              stream));
    EncoderBackwardPlan plan = {d_workspace, nb, BT};
    return plan;
}

/* dwte (Vp, D) float += dx (BT, D) float scattered by the tokens the plan was made from */
static void encoder_backward(float* dwte, const float* dx, const EncoderBackwardPlan* plan, int D, cudaStream_t stream) {
    if (D % 8 != 0) die("encoder_backward: D = %d must be a multiple of 8 (16-byte rows)", D);
    if (plan->nbuckets == 0) return;
    const int* ws = plan->d_workspace;
    int nb = plan->nbuckets, BT = plan->BT;
    if ((size_t)ENC_SLICES * D * sizeof(float) > 48 * 1024) die("encoder_backward: D = %d is too wide", D);
    dim3 block(D / 4 < 256 ? D / 4 : 256, ENC_SLICES);
    encoder_backward_kernel<<<nb, block, ENC_SLICES * D * sizeof(float), stream>>>(dwte, dx, ws, ws + BT, ws + BT + nb,
                                                                                     D);
    cudaCheckLast();
}

#endif
