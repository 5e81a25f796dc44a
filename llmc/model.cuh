/*
 * model.cuh: the Mamba-2 model on the GPU: parameters, activations, forward, backward, AdamW update, checkpoints.
 * Every GPU program includes this header; the training loop lives in train_mamba2.cu.
 */
#ifndef MAMBA2_MODEL_CUH
#define MAMBA2_MODEL_CUH

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "utils.h"
#include "rand.h"
#include "mamba2_model.h"
#include "dataloader.h"
#include "hf_io.h"
#include "cuda_common.h"
#include "encoder.cuh"
#include "rmsnorm.cuh"
#include "matmul.cuh"
#include "conv1d.cuh"
#include "ssd.cuh"
#include "gated_norm.cuh"
#include "classifier.cuh"
#include "adamw.cuh"
#include "global_norm.cuh"
#include "multigpu.h"
#include "linear_bias.cuh"
#include "model_flops.h"
#include "attention.cuh"
#include "swiglu.cuh"

/* float -> floatX: the residual-stream gradient that a matmul reads as an operand, and the floatX weight copy that
   follows the fp32 master weights */
__global__ static void cast_to_floatX_kernel(floatX* out, const float* in, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = fromF(in[i]);
}
static void cast_to_floatX(floatX* out, const float* in, size_t n, cudaStream_t stream) {
    cast_to_floatX_kernel<<<(unsigned)CEIL_DIV(n, (size_t)256), 256, 0, stream>>>(out, in, n);
    cudaCheckLast();
}

/* ================================================================================================================
 * the model on the GPU
 * ================================================================================================================ */

/*
 * Activations. A layer's activations are buffers of `slots` equal layers: every layer's where the backward reads
 * them, or a single one that the layers take turns in, where nothing reads it later: evaluation (forward_only) keeps
 * one layer of everything, -r 1 (recompute) one layer of xbc and gn, which the backward makes again, and -r 2 one
 * layer of everything but the residual stream: the backward of layer l first runs layer l's forward again from the
 * stream entering it (mamba2_block_recompute), so one layer's activations live at a time (long context: doc/
 * operations.md). The residual stream keeps L + 1 (the stream entering each block, then the one entering the final
 * norm), in evaluation one, updated in place. Under -r 2 it keeps less (gpu_residual): fp32 checkpoints x_k every
 * resid_every layers and x_L, the blocks' outputs delta_l (floatX) from which the backward rebuilds the x_l between
 * checkpoints, and one fp32 scratch slot the rebuilt (or, in the forward, the running) x_l lives in.
 * gpu_layer_acts() is the one description of them, act_at() and gpu_residual() the places a layer index becomes an
 * address.
 */
typedef enum {
    ACT_RESIDUAL,   /* float (BT, D): the residual stream entering the block; slot L goes to the final norm (-r 2:
                       the checkpoints, then the scratch slot: gpu_residual) */
    ACT_U,          /* floatX (BT, D): the pre-norm output */
    ACT_RSTD,       /* float (BT): its 1/rms */
    ACT_ZXBCDT,     /* floatX (BT, 2E+2GN+H): in_proj output, z | xBC | dt_raw */
    ACT_XBC,        /* floatX (BT, E+2GN): conv + SiLU output, x | B | C */
    ACT_SSD_SAVED,  /* ssd_saved_bytes: dt, cumulative decays, chunk states (llmc/ssd.cuh) */
    ACT_Y,          /* floatX (BT, E): SSD output incl. the D skip */
    ACT_GN,         /* floatX (BT, E): gated-norm output */
    ACT_GN_RSTD,    /* float (BT, G): its 1/rms per group */
    /* attention blocks (llmc/attention_block.cuh) */
    ACT_QKV,        /* floatX (BT, hd (Hq + 2 Hkv)): in_proj output (+ bias), q and k rotated in place */
    ACT_ATT,        /* floatX (BT, Hq hd): attention output */
    ACT_ATT_LSE,    /* float (B, Hq, T): each query row's log-sum-exp, for the backward */
    /* gated-MLP blocks (llmc/mlp_block.cuh) */
    ACT_MLP_H,      /* floatX (BT, 2 Hm): fc1 output [y | gate] */
    ACT_MLP_ACT,    /* floatX (BT, Hm): y * silu(gate), fc2's input */
    NUM_LAYER_ACTS
} LayerAct;

typedef struct {
    char* base;
    size_t layer_bytes;  /* one layer's bytes */
    int slots;           /* layers kept: all blocks of its kind (L or L + 1 for the residual stream), or 1 (the
                            blocks take turns), or 0 (no block of its kind) */
    char kind;           /* the blocks that have one: 'N' every block (indexed by block), 'M', 'A' or 'F' (indexed
                            by the block's slot among its kind: config_block_slot) */
} ActBuffer;

typedef struct {
    ActBuffer layer[NUM_LAYER_ACTS];
    floatX* delta;    /* (BT, D) out_proj output of the latest block, added by the next norm (-r 2: of the blocks
                         whose output is not kept, gpu_delta) */
    floatX* deltas;   /* -r 2: (resid_ndeltas, BT, D) the block outputs the backward rebuilds the stream from */
    floatX* lnf;      /* (BT, D) */
    float* lnf_rstd;  /* (BT) */
    floatX* logits;   /* (lm_rows, Vp) logits, overwritten by dlogits in training */
    float* losses;    /* (BT) */
    int* inputs;      /* (BT) */
    int* targets;     /* (BT); TARGET_NO_LOSS (-1) = a masked target: loss 0, no gradient */
    int* seq_idx;     /* (BT) each position's document (doc/packing.md), uploaded with a batch that has boundaries */
    int* rope_pos;    /* (BT) with attention blocks: each position's place in its document (RoPE), uploaded with
                         seq_idx */
    int* argmax;      /* (BT) each row's argmax over the vocabulary, when m->want_argmax (evaluation's accuracy) */
} GPUActivations;

typedef struct {
    float* dresidual; /* (BT, D) float gradient of the residual stream */
    floatX* dqkv;     /* (BT, max(QKV, 2 Hm)): attention d(in_proj output), or the MLP's d(fc1 output) */
    floatX* dmix;     /* (BT, max(Hq hd, Hm)): attention d(attention output), or the MLP's d(fc2 input) */
    float* dsum;      /* (B, Hq, T) the attention backward's rowsum(dO * O) */
    floatX* dres_x;   /* (BT, D) the same as a matmul operand */
    floatX* dgn;      /* (BT, E) */
    floatX* dy;       /* (BT, E) */
    floatX* dzxbcdt;  /* (BT, 2E+2GN+H) */
    floatX* dxbc;     /* (BT, E+2GN) */
    floatX* du;       /* (BT, D) */
    void* ssd_ws;     /* SSD backward workspace */
    float* scratch;   /* partial sums of the parameter-gradient reductions (norms, conv) */
    int* enc_ws;      /* embedding backward: device workspace */
    int* enc_host;    /* embedding backward: host scratch (pinned, so its upload is asynchronous) */
    EncoderBackwardPlan enc_plan; /* the step's tokens grouped by id, made during the forward */
} GPUGradActivations;

/* carried state (-C 1; doc/packing.md section 6), allocated by gpu_carry_allocate, apart from the activations. Two
   buffers of each: the forward reads the initial states from [cur] and writes the final ones to [1 - cur];
   gpu_forward_carry flips cur first, so the last forward's final states become the next one's initial states. */
typedef struct {
    int B, T;           /* rows and sequence length it is sized for; B = 0: off */
    int cur;            /* the buffer the last forward read */
    float* ssm[2];      /* (LM, B, H, P, N) fp32 SSM states */
    floatX* window[2];  /* (LM, B, K-1, conv_dim) the last K-1 conv inputs of each row */
    floatX* ext[3];     /* conv staging buffers, (B, T+K-1, conv_dim) each (conv1d_forward_window) */
    float* scratch;     /* the conv backward's partial sums over T+K-1 positions */
    int* seq_ext;       /* (B, T+K-1) device: the document index with the window's positions (-D) */
    int* seq_ext_host;
    int request;        /* gpu_forward_carry: the next forward reads and writes the carried state */
    int active;         /* the last forward did: its backward reads the same window */
} GPUCarry;

typedef struct {
    Mamba2Config config;
    ParamSpec table[NUM_PARAM_TENSORS];
    size_t num_parameters;
    float* params;     /* fp32 master weights */
    floatX* params_x;  /* floatX copy, the matmul operands */
    float* grads;      /* fp32, accumulated over micro-steps */
    float* m;          /* AdamW moments */
    float* v;
    int adam_t;
    float* norm_coef;  /* device: grad norm, clip coefficient */
    float* norm_scratch;
    int* error_flag;   /* set by the classifier on a target outside the vocabulary */
    int B, T;          /* batch shape the activations are sized for */
    int lm_rows;       /* rows of the logits buffer: the LM head and classifier run in chunks of this many rows */
    size_t lm_chunk_bytes; /* the logits buffer's most bytes; 0 = LM_HEAD_CHUNK_BYTES (tests set it before the first
                              forward, to run several chunks on small shapes) */
    int recompute;     /* 1: keep one layer's xbc and gn, recompute them in the backward; 2: keep only each layer's input
                          (the residual stream), recompute the whole layer in the backward (set before the first
                          forward) */
    int ssd_q;         /* the SSD kernels' chunk length (set before the first forward); see gpu_ssd_chunk */
    int resid_every;   /* -r 2: an fp32 checkpoint of the residual stream every this many layers (set before the first
                          forward; 0: GPU_RESID_EVERY); see gpu_residual */
    int resid_holds;   /* -r 2: the layer l whose x_l the scratch slot holds now, or -1 */
    int resid_host;    /* -r 3 (-r 2 with resid_host = 1): the residual checkpoints below x_L and the kept block
                          outputs live in pinned host memory (set before the first forward); see gpu_residual */
    char* resid_host_base; /* -r 3: that host memory: the checkpoint slots, then the kept deltas */
    int resid_base_holds; /* -r 3: the checkpoint k whose x_k the GPU's base slot holds (copied from the host), or -1 */
    size_t host_bytes; /* -r 3: its size (pinned host memory, not in activation_bytes) */
    cudaStream_t copy_stream; /* -r 3: the forward's copies to the host run here, beside the kernels */
    cudaEvent_t copy_ready, x_copied, delta_copied; /* -r 3: a copy's source written; the scratch's, a->delta's copy
                                                       done (see resid_copy_to_host) */
    int plan_smem_optin; /* dry plans only: the shared memory a block may opt in to, assumed (0: this GPU's) */
    struct GPUPlanList* plan_list; /* dry plans only: where gpu_activation_plan lists its buffers, or NULL */
    int forward_only;  /* 1: evaluation only: one layer's activations, reused by every layer, and no gradient
                          buffers (set before the first forward; eval_mamba2cu) */
    int want_argmax;   /* 1: a forward with targets and dloss = 0 also leaves each row's argmax in argmax_host (set
                          before the first forward; eval_mamba2cu's accuracy) */
    int docs;          /* the last forward had document boundaries: a->seq_idx holds them for its backward */
    size_t num_counted; /* targets of the last forward that count (not TARGET_NO_LOSS) */
    int* argmax_host;  /* (BT) with want_argmax */
    GPUActivations a;
    GPUGradActivations g;
    float* losses_host;
    size_t activation_bytes;
    cudaStream_t stream;
    /* several GPUs */
    MultiGPU* mg;
    size_t padded;      /* parameter buffers are padded to world * shard elements (zeros past num_parameters) */
    size_t shard;       /* ZeRO-1: the elements this rank updates, [rank * shard, (rank + 1) * shard) */
    float* grads_shard; /* ZeRO-1: this rank's shard of the summed gradients */
    float* dev_scalar;  /* one float for host <-> all-reduce round trips */
    cudaEvent_t layer_done, comm_done;
    GPUCarry carry;     /* -C 1 */
} GPUModel;

/* the offset of (tensor t, layer l) in the flat parameter buffers: the one place the table is turned into pointers */
static inline size_t param_offset(const GPUModel* m, int t, int l) {
    const ParamSpec* s = &m->table[t];
    if (!s->per_layer) return s->offset;
    /* a per-block tensor has one copy per block of its kind: block l's is its slot among them (the pre-norm: l) */
    size_t copy = s->kind == 'N' ? (size_t)l : (size_t)config_block_slot(&m->config, l);
    return s->offset + copy * s->rows * s->cols;
}
static inline float* PF(GPUModel* m, int t, int l) { return m->params + param_offset(m, t, l); }
static inline floatX* PX(GPUModel* m, int t, int l) { return m->params_x + param_offset(m, t, l); }
static inline float* GF(GPUModel* m, int t, int l) { return m->grads + param_offset(m, t, l); }

static size_t g_gpu_bytes = 0; /* everything gpu_alloc handed out: the trainer's own peak (allocations are static) */

static void* gpu_alloc(size_t bytes, size_t* total) {
    void* p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes > 0 ? bytes : 1);
    if (err != cudaSuccess) die("GPU out of memory allocating %.2f GiB (%.2f GiB allocated so far): lower -b or -t",
                                bytes / 1073741824.0, *total / 1073741824.0);
    if (total) *total += bytes;
    g_gpu_bytes += bytes;
    return p;
}


/* a single-process group for programs (tests) that do not set one up */
static MultiGPU g_single_gpu = {0, 1, 0, 0, 0};

/* Shapes the GPU kernels cannot run: the in_proj output row (z | xBC | dt, d_in_proj wide) is read with 4-byte
   (bf16 pair) loads by the conv, gated-norm and SSD kernels and is a cuBLASLt operand; an odd d_in_proj leaves every
   other row misaligned (a sweep size with 13 heads stopped with cuBLASLt status 13, execution failed). d_in_proj's parity is the
   number of heads' parity (2E and 2GN are even). The CPU trainer has no such rule. */
static void gpu_config_check(const Mamba2Config* c) {
    /* an attention head's row is read in pairs (RoPE, the tile kernels) and every in_proj / out_proj row must stay
       4-byte aligned for cuBLASLt, as above: an even head_dim keeps hd (Hq + 2 Hkv) and hd Hq even */
    if (config_count_kind(c, 'A') > 0 && c->attn_head_dim % 2 != 0)
        die("model: attention head_dim = %d is odd; the GPU attention reads head rows in pairs: choose an even "
            "head_dim (the CPU trainer runs this shape)", c->attn_head_dim);
    if (config_count_kind(c, 'A') > 0 && c->attn_head_dim > ATTN_SIMPLE_MAX_HD)
        die("model: attention head_dim = %d; the GPU attention takes head dims up to %d (the CPU trainer runs this "
            "shape)", c->attn_head_dim, ATTN_SIMPLE_MAX_HD);
    if (config_count_kind(c, 'M') > 0 && c->d_in_proj % 2 != 0)
        die("model: nheads = %d (d_model %d x expand %d / headdim %d) is odd, so the in_proj output row (d_in_proj "
            "= %d) is odd and its rows are misaligned for the GPU kernels: choose d_model, expand and headdim so that "
            "the number of heads is even (the CPU trainer runs this shape)", c->nheads, c->d_model, c->expand,
            c->headdim, c->d_in_proj);
}

/* The chunk length is an algorithm choice (SPEC section 3: results agree up to rounding), so the GPU picks its own:
 * the config's, capped at 128, where the SSD kernels are fastest on an H100 at the 130M shape (fewer masked Q x Q
 * tile pairs than at 256, fewer chunk states than at 64; dev/cuda/NOTES_ssd.md times the kernels at both lengths).
 * The price: the chunk states saved for the backward double against Q = 256 (+1.15 GB at B=8, T=2048). */
#define GPU_SSD_MAX_CHUNK 128
#define GPU_SSD_MIN_CHUNK 16 /* the SSD kernels' smallest chunk: a config's shorter chunk_size is raised to it */
/* the config's chunk length capped at `cap` (GPU_SSD_MAX_CHUNK: training and evaluation alike since SSD v7) */
static int gpu_ssd_chunk(const Mamba2Config* c, int cap) { return c->chunk_size < cap ? c->chunk_size : cap; }

static void gpu_model_create(GPUModel* m, const Mamba2Config* c, const float* host_params, MultiGPU* mg) {
    gpu_arch_check();  /* the GPU / build refusals, and the path decided once (llmc/gpu_arch.cuh) */
    gpu_config_check(c);
    memset(m, 0, sizeof(*m));
    m->config = *c;
    m->mg = mg ? mg : &g_single_gpu;
    m->num_parameters = param_table_build(m->table, c);
    m->ssd_q = gpu_ssd_chunk(c, GPU_SSD_MAX_CHUNK);
    size_t n = m->num_parameters, total = 0, world = (size_t)m->mg->world;
    m->shard = CEIL_DIV(n, world);
    m->padded = m->shard * world;
    m->params = (float*)gpu_alloc(m->padded * sizeof(float), &total);
    m->params_x = (floatX*)gpu_alloc(n * sizeof(floatX), &total);
    m->grads = (float*)gpu_alloc(m->padded * sizeof(float), &total);
    m->dev_scalar = (float*)gpu_alloc(sizeof(float), &total);
    if (m->mg->zero_stage == 1) m->grads_shard = (float*)gpu_alloc(m->shard * sizeof(float), &total);
    cudaCheck(cudaMemset(m->params, 0, m->padded * sizeof(float)));
    cudaCheck(cudaEventCreateWithFlags(&m->layer_done, cudaEventDisableTiming));
    cudaCheck(cudaEventCreateWithFlags(&m->comm_done, cudaEventDisableTiming));
    m->norm_coef = (float*)gpu_alloc(2 * sizeof(float), &total);
    m->norm_scratch = (float*)gpu_alloc(global_norm_scratch_floats() * sizeof(float), &total);
    m->error_flag = (int*)gpu_alloc(sizeof(int), &total);
    cudaCheck(cudaMemcpy(m->params, host_params, n * sizeof(float), cudaMemcpyHostToDevice));
    cast_to_floatX(m->params_x, m->params, n, 0);
    cudaCheck(cudaMemset(m->grads, 0, m->padded * sizeof(float)));
    cudaCheck(cudaStreamCreate(&m->stream));
    if (matmul_handle == NULL) matmul_init();
}

/* the AdamW moments: all of them, or (ZeRO-1) this rank's shard. host_m/host_v: the whole arrays (a checkpoint), or
 * NULL for zeros */
static size_t optimizer_elements(const GPUModel* m) { return m->mg->zero_stage == 1 ? m->shard : m->num_parameters; }
static size_t optimizer_first(const GPUModel* m) { return m->mg->zero_stage == 1 ? m->mg->rank * m->shard : 0; }

static void gpu_model_alloc_optimizer(GPUModel* m, const float* host_m, const float* host_v) {
    size_t count = optimizer_elements(m), first = optimizer_first(m), total = 0;
    if (m->m == NULL) {
        m->m = (float*)gpu_alloc(count * sizeof(float), &total);
        m->v = (float*)gpu_alloc(count * sizeof(float), &total);
    }
    cudaCheck(cudaMemset(m->m, 0, count * sizeof(float)));
    cudaCheck(cudaMemset(m->v, 0, count * sizeof(float)));
    if (host_m && first < m->num_parameters) {
        size_t n = first + count <= m->num_parameters ? count : m->num_parameters - first;
        cudaCheck(cudaMemcpy(m->m, host_m + first, n * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(m->v, host_v + first, n * sizeof(float), cudaMemcpyHostToDevice));
    }
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

/* rows of the logits buffer: all B*T rows while their logits fit in max_bytes, else the fewest equal chunks that do
 * (4 chunks of 4096 rows at 130M, B=8, T=2048 with the default 512 MiB); a multiple of 8 rows */
#define LM_HEAD_CHUNK_BYTES ((size_t)512 << 20)
static int lm_head_rows(int BT, int Vp, size_t max_bytes) {
    size_t row_bytes = (size_t)Vp * sizeof(floatX);
    int chunks = (int)CEIL_DIV((size_t)BT * row_bytes, max_bytes);
    if (chunks <= 1) return BT;
    int rows = (int)CEIL_DIV(BT, chunks);
    return (int)CEIL_DIV(rows, 8) * 8;
}

/*
 * -r 2's residual stream. The forward forms x_l = x_{l-1} + delta_{l-1} (delta: block l-1's out_proj output, floatX)
 * in fp32 in the pre-norm; -r 0 and -r 1 keep every x_l (L + 1 slots of 4 D bytes a token: 75 KiB at 130M). -r 2
 * keeps x_k only at the checkpoints k = 0, K, 2K, ... and L (K = resid_every), and the deltas between them (2 D
 * bytes a token each); the backward, which needs x_l at layer l, rebuilds it in a scratch slot from the checkpoint k
 * below it: x = x_k, then x += (float)delta_j for j = k .. l-1 in order (residual_add: the forward's own fp32 add, so
 * the rebuilt x_l is the forward's to the bit). A delta_j is kept iff x_{j+1} is not a checkpoint.
 *   memory (a token):  D (4 (checkpoints + 1 scratch) + 2 (L - checkpoints + 1))     130M, K = 4: 51 KiB
 *   rebuild adds:      sum over the layers l of (l - k), about L (K - 1) / 2 a backward, each 10 bytes an element
 */
/*
 * -r 3 is -r 2 with the checkpoints below x_L and the kept deltas in pinned host memory: the GPU keeps three fp32
 * slots (x_L, the scratch, and a base slot) and a->delta. The forward writes every x_l < L into the scratch and every
 * delta into a->delta, and copies the ones -r 2 keeps to the host after the kernel that wrote them, on a copy
 * stream beside the next kernels (gpu_residual_commit, gpu_delta_commit); the backward's rebuild of x_l starts from
 * its checkpoint copied back into the base slot (once for the K layers that start from it: resid_base) and copies each
 * delta into a->delta before its residual_add, on the model's stream. Copies are exact, the kernels and their order
 * are -r 2's: the same bits. At 130M: 45 of -r 2's 51 KiB a token on the host, 3 more on the GPU (T = 1M: 45 GiB of
 * host memory, 66.75 GiB on the GPU); 45 KiB a token cross PCIe in the forward and 67.5 in the backward
 * (doc/operations.md).
 */
/* K = 4: at 130M, 51 KiB a token and 33 adds a backward (~0.1 s a step at T = 1M), and T = 1M fits a 141 GB GPU
   with ~30 GiB to spare; K = 8 would save 4.5 KiB a token more for 77 adds (doc/operations.md, long context) */
#ifndef GPU_RESID_EVERY
#define GPU_RESID_EVERY 4
#endif
static inline int resid_every(int every) { return every > 0 ? every : GPU_RESID_EVERY; }
static inline int resid_is_checkpoint(int l, int L, int K) { return l % K == 0 || l == L; }
static inline int resid_ncheckpoints(int L, int K) { return L / K + 1 + (L % K != 0); }  /* 0, K, ..., and L */
static inline int resid_ndeltas(int L, int K) { return L - (resid_ncheckpoints(L, K) - 1); }
static inline int resid_checkpoint_slot(int l, int L, int K) { return l == L ? resid_ncheckpoints(L, K) - 1 : l / K; }
/* delta_j's place among the kept ones: j less the checkpoints in 1..j (each drops the delta below it) */
static inline int resid_delta_slot(int j, int K) { return j - j / K; }
/* where the rebuild of a non-checkpoint x_l starts: from x_j already in the scratch slot when k < j < l (k the
   checkpoint below l), else from x_k */
static inline int resid_rebuild_start(int l, int K, int holds) {
    int k = l / K * K;
    return holds > k && holds < l ? holds : k;
}
/* the residual adds a backward makes to rebuild the stream (the top layer's x_{L-1} is still in the scratch slot
   after the forward) */
static inline int resid_rebuild_adds(int L, int K) {
    int adds = 0;
    for (int l = 0; l < L - 1; l++) adds += l % K;
    return adds;
}

/* the layer activations of a model of config c at batch (B, T): each buffer's bytes per layer and slots (see
   LayerAct). Bases are left NULL. resid_k: -r 2's checkpoint spacing (resid_every()) */
static void gpu_layer_acts(ActBuffer* acts, const Mamba2Config* c, int B, int T, int ssd_q, int recompute,
                           int forward_only, int resid_k, int resid_host) {
    size_t BT = (size_t)B * T, X = sizeof(floatX), F = sizeof(float), L = (size_t)c->n_layer;
    /* per kind: the blocks of that kind whose activations the backward reads (-r 2: makes again; evaluation: none),
       and those that -r 1's backward makes again; 0 where the model has no block of the kind */
    int n[4] = {(int)L, config_count_kind(c, 'M'), config_count_kind(c, 'A'), config_count_kind(c, 'F')};
    int kept[4], remade[4];
    for (int k = 0; k < 4; k++) {
        kept[k] = n[k] == 0 ? 0 : (forward_only || recompute == 2) ? 1 : n[k];
        remade[k] = n[k] == 0 ? 0 : (recompute || forward_only) ? 1 : n[k];
    }
    enum { KN, KM, KA, KF };
    const char kind_letter[4] = {'N', 'M', 'A', 'F'};
    size_t bytes[NUM_LAYER_ACTS];
    int slots[NUM_LAYER_ACTS], kind[NUM_LAYER_ACTS];
#define ACT_ROW(act, b, k, sl) do { bytes[act] = (b); kind[act] = (k); slots[act] = (sl); } while (0)
    int resid_slots = forward_only ? 1 : recompute != 2 ? (int)L + 1
                      : resid_host ? 3 /* x_L, the scratch, the base */ : resid_ncheckpoints((int)L, resid_k) + 1;
    ACT_ROW(ACT_RESIDUAL, BT * c->d_model * F, KN, resid_slots);
    ACT_ROW(ACT_U, BT * c->d_model * X, KN, kept[KN]);
    ACT_ROW(ACT_RSTD, BT * F, KN, kept[KN]);
    ACT_ROW(ACT_ZXBCDT, BT * c->d_in_proj * X, KM, kept[KM]);
    ACT_ROW(ACT_XBC, BT * c->conv_dim * X, KM, remade[KM]);
    ACT_ROW(ACT_SSD_SAVED, ssd_saved_bytes(B, T, c->nheads, c->headdim, c->d_state, ssd_q), KM, kept[KM]);
    ACT_ROW(ACT_Y, BT * c->d_inner * X, KM, kept[KM]);
    ACT_ROW(ACT_GN, BT * c->d_inner * X, KM, remade[KM]);
    ACT_ROW(ACT_GN_RSTD, BT * c->ngroups * F, KM, kept[KM]);
    ACT_ROW(ACT_QKV, BT * c->attn_qkv_dim * X, KA, kept[KA]);
    ACT_ROW(ACT_ATT, BT * c->attn_out_dim * X, KA, kept[KA]);
    ACT_ROW(ACT_ATT_LSE, BT * c->attn_heads * F, KA, kept[KA]);
    ACT_ROW(ACT_MLP_H, BT * 2 * c->mlp_hidden * X, KF, kept[KF]);
    ACT_ROW(ACT_MLP_ACT, BT * c->mlp_hidden * X, KF, remade[KF]); /* -r 1: swiglu again from fc1's output */
#undef ACT_ROW
    for (int k = 0; k < NUM_LAYER_ACTS; k++) {
        acts[k].base = NULL;
        /* each layer's slot starts 256-byte aligned, as cudaMalloc's buffers do: the kernels' vector loads and
           cuBLASLt's operands need it (an "ssd saved" slot of a 19-token batch is not a multiple of 16 bytes) */
        acts[k].layer_bytes = slots[k] > 0 ? CEIL_DIV(bytes[k], (size_t)256) * 256 : 0;
        acts[k].slots = slots[k];
        acts[k].kind = kind_letter[kind[k]];
    }
}

/* 1 where the residual stream is split into -r 2's checkpoints, kept deltas and scratch slot (training at -r 2) */
static inline int resid_split(const GPUModel* m) { return m->recompute == 2 && !m->forward_only; }
/* 1 where -r 2's kept checkpoints and deltas are in host memory (-r 3) */
static inline int resid_on_host(const GPUModel* m) { return resid_split(m) && m->resid_host; }
/* the recompute mode as the trainer's -r gives it (0..3; 3 is 2 with the residual stream on the host), set before the
   first forward */
static inline void gpu_model_set_recompute(GPUModel* m, int mode) {
    m->recompute = mode == 3 ? 2 : mode;
    m->resid_host = mode == 3;
}
/* the elements of one (B*T, D) residual-stream value */
static inline size_t resid_elems(const GPUModel* m) { return (size_t)m->B * m->T * m->config.d_model; }

/* layer l's part of a layer activation (the residual stream: gpu_residual) */
static inline void* act_at(const GPUModel* m, LayerAct k, int l) {
    const ActBuffer* b = &m->a.layer[k];
    if (k == ACT_RESIDUAL && resid_split(m))
        die("act_at: under -r 2 the residual stream is not one slot per layer: read it with gpu_residual");
    if (b->slots == 1) return b->base;
    return b->base + (size_t)(b->kind == 'N' ? l : config_block_slot(&m->config, l)) * b->layer_bytes;
}
static inline floatX* act_x(const GPUModel* m, LayerAct k, int l) { return (floatX*)act_at(m, k, l); }
static inline float* act_f(const GPUModel* m, LayerAct k, int l) { return (float*)act_at(m, k, l); }

/* -r 2 (training): the residual stream's checkpoint slots, then the scratch slot (see resid_is_checkpoint). -r 3:
   the GPU holds x_L's slot, the scratch slot and the base slot (a checkpoint copied back for the backward's
   rebuilds, resid_base); the other checkpoints are host slots (resid_host_slot) */
static inline float* resid_device_slot(const GPUModel* m, int i) {  /* the residual buffer's i-th slot */
    const ActBuffer* b = &m->a.layer[ACT_RESIDUAL];
    return (float*)(b->base + (size_t)i * b->layer_bytes);
}
static inline float* resid_slot(const GPUModel* m, int slot) {
    if (resid_on_host(m)) {
        if (slot != resid_ncheckpoints(m->config.n_layer, resid_every(m->resid_every)) - 1)
            die("resid_slot: under -r 3 only x_L's checkpoint is on the GPU (slot %d asked)", slot);
        return resid_device_slot(m, 0);
    }
    return resid_device_slot(m, slot);
}
static inline float* resid_scratch(const GPUModel* m) {
    if (resid_on_host(m)) return resid_device_slot(m, 1);
    return resid_slot(m, resid_ncheckpoints(m->config.n_layer, resid_every(m->resid_every)));
}
/* -r 3: the host copies, each as large as a device slot: checkpoint x_l (l < L, a checkpoint) and kept delta_j */
static inline float* resid_host_slot(const GPUModel* m, int l) {
    int K = resid_every(m->resid_every);
    return (float*)(m->resid_host_base + (size_t)resid_checkpoint_slot(l, m->config.n_layer, K) *
                                             m->a.layer[ACT_RESIDUAL].layer_bytes);
}
static inline floatX* resid_host_delta(const GPUModel* m, int j) {
    int L = m->config.n_layer, K = resid_every(m->resid_every);
    char* deltas = m->resid_host_base + (size_t)(resid_ncheckpoints(L, K) - 1) * m->a.layer[ACT_RESIDUAL].layer_bytes;
    return (floatX*)deltas + (size_t)resid_delta_slot(j, K) * resid_elems(m);
}
/* -r 3: the base slot holding checkpoint x_k, copied from the host unless it holds it already: the backward's
   layers k + K - 1 .. k all rebuild from x_k, so it crosses PCIe once a group instead of once a layer */
static float* resid_base(GPUModel* m, int k) {
    float* base = resid_device_slot(m, 2);
    if (m->resid_base_holds != k) {
        cudaCheck(cudaMemcpyAsync(base, resid_host_slot(m, k), resid_elems(m) * sizeof(float), cudaMemcpyHostToDevice,
                                  m->stream));
        m->resid_base_holds = k;
    }
    return base;
}

/* block l's out_proj output delta_l, which the forward writes and the next pre-norm (or the final norm) adds: the one
   buffer a->delta, or under -r 2 its kept slot when the backward rebuilds x_{l+1} from it (-r 3: a->delta, copied
   to the host by gpu_delta_commit) */
static inline floatX* gpu_delta(const GPUModel* m, int l) {
    int K = resid_every(m->resid_every);
    if (!resid_split(m) || resid_on_host(m) || resid_is_checkpoint(l + 1, m->config.n_layer, K)) return m->a.delta;
    return m->a.deltas + (size_t)resid_delta_slot(l, K) * resid_elems(m);
}

/* gpu_delta for the kernel that writes delta_l (block l's out_proj): under -r 3 the one a->delta, once the host copy
   of delta_{l-1} is done (gpu_delta_commit) */
static inline floatX* gpu_delta_out(const GPUModel* m, int l) {
    if (resid_on_host(m)) cudaCheck(cudaStreamWaitEvent(m->stream, m->delta_copied, 0));
    return gpu_delta(m, l);
}

/* where the forward's pre-norm writes x_l (0 <= l <= L; x_0 the embedding): its slot, or under -r 2 its checkpoint
   or the scratch slot, which then holds x_l. Call after reading x_{l-1} with gpu_residual: the scratch may hold it. */
static inline float* gpu_residual_out(GPUModel* m, int l) {
    int L = m->config.n_layer, K = resid_every(m->resid_every);
    if (!resid_split(m)) return act_f(m, ACT_RESIDUAL, l);
    if (l == 0) m->resid_holds = m->resid_base_holds = -1;  /* a new forward: the scratch (and base) are stale */
    /* -r 3: every x_l below x_L goes to the scratch; gpu_residual_commit copies a checkpoint to the host */
    if (resid_is_checkpoint(l, L, K) && (l == L || !resid_on_host(m)))
        return resid_slot(m, resid_checkpoint_slot(l, L, K));
    m->resid_holds = l;
    if (resid_on_host(m)) cudaCheck(cudaStreamWaitEvent(m->stream, m->x_copied, 0));  /* x_{l-1}'s copy is done */
    return resid_scratch(m);
}

/* x_l, the residual stream entering block l (l = L: the final norm's input), as the forward formed it: its slot, or
   under -r 2 its checkpoint, or the scratch slot, rebuilt there first from the checkpoint below unless it holds x_l
   already (in the forward it always does; in the backward, layers descend, so each rebuild starts again from its
   checkpoint, or continues from a lower x_j the scratch holds) */
static float* gpu_residual(GPUModel* m, int l) {
    int L = m->config.n_layer, K = resid_every(m->resid_every);
    if (!resid_split(m)) return act_f(m, ACT_RESIDUAL, l);
    int host = resid_on_host(m);
    if (resid_is_checkpoint(l, L, K) && (l == L || !host)) return resid_slot(m, resid_checkpoint_slot(l, L, K));
    float* x = resid_scratch(m);
    if (m->resid_holds == l) return x;
    size_t n = resid_elems(m);
    if (host && resid_is_checkpoint(l, L, K)) return resid_base(m, l);  /* -r 3: x_l < x_L from the host */
    int k = l / K * K, from = resid_rebuild_start(l, K, m->resid_holds);
    const float* src = x;
    if (from == k) src = host ? resid_base(m, k) : resid_slot(m, resid_checkpoint_slot(k, L, K));
    for (int j = from; j < l; j++) {  /* the forward's adds, in its order */
        if (host)
            cudaCheck(cudaMemcpyAsync(m->a.delta, resid_host_delta(m, j), n * sizeof(floatX), cudaMemcpyHostToDevice,
                                      m->stream));
        residual_add(x, src, gpu_delta(m, j), n, m->stream);
        src = x;
    }
    m->resid_holds = l;
    return x;
}

/* -r 3: a forward copy to the host on the copy stream, after the kernels queued so far (which wrote src), so that it
   runs beside the next ones; `done` is recorded at its end. The next kernel to overwrite src waits for `done` first
   (gpu_residual_out for the scratch, gpu_delta_out for a->delta): a checkpoint's copy has block l's forward to hide
   in, a delta's copy the next block's up to its out_proj. */
static void resid_copy_to_host(GPUModel* m, void* dst, const void* src, size_t bytes, cudaEvent_t done) {
    cudaCheck(cudaEventRecord(m->copy_ready, m->stream));
    cudaCheck(cudaStreamWaitEvent(m->copy_stream, m->copy_ready, 0));
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, m->copy_stream));
    cudaCheck(cudaEventRecord(done, m->copy_stream));
}

/* -r 3, the forward: after the kernel that wrote x_l (into the scratch, gpu_residual_out), the host copy of a
   checkpoint below x_L; after block l's forward (its output in a->delta), the host copy of a kept delta_l. No-ops in
   every other mode. gpu_residual_copies_done ends the forward: the backward reads the copies back. */
static void gpu_residual_commit(GPUModel* m, int l) {
    int L = m->config.n_layer, K = resid_every(m->resid_every);
    if (!resid_on_host(m) || l == L || !resid_is_checkpoint(l, L, K)) return;
    resid_copy_to_host(m, resid_host_slot(m, l), resid_scratch(m), resid_elems(m) * sizeof(float), m->x_copied);
}
static void gpu_delta_commit(GPUModel* m, int l) {
    int L = m->config.n_layer, K = resid_every(m->resid_every);
    if (!resid_on_host(m) || resid_is_checkpoint(l + 1, L, K)) return;
    resid_copy_to_host(m, resid_host_delta(m, l), m->a.delta, resid_elems(m) * sizeof(floatX), m->delta_copied);
}
static void gpu_residual_copies_done(GPUModel* m) {
    if (!resid_on_host(m)) return;
    cudaCheck(cudaStreamWaitEvent(m->stream, m->x_copied, 0));
    cudaCheck(cudaStreamWaitEvent(m->stream, m->delta_copied, 0));
}

/* a dry plan's buffers by name, for the per-buffer breakdown (dev/cuda/memory_plan.cu) */
#define GPU_PLAN_MAX_BUFFERS 48
typedef struct GPUPlanList {
    const char* name[GPU_PLAN_MAX_BUFFERS];
    size_t bytes[GPU_PLAN_MAX_BUFFERS];
    int n;
} GPUPlanList;

static const char* const LAYER_ACT_NAMES[NUM_LAYER_ACTS] = {
    "residual stream", "u (pre-norm out)", "rstd", "zxbcdt (in_proj out)", "xbc (conv out)", "ssd saved",
    "y (ssd out)", "gn (gated-norm out)", "gn rstd", "qkv", "att", "att lse", "mlp h", "mlp act"};

/* one buffer of the plan below: allocated, or (dry run) only counted, and listed where m->plan_list asks */
static void* act_alloc(GPUModel* m, const char* name, size_t bytes, size_t* total, int dry) {
    if (dry) {
        *total += bytes;
        GPUPlanList* pl = m->plan_list;
        if (pl && pl->n < GPU_PLAN_MAX_BUFFERS) { pl->name[pl->n] = name; pl->bytes[pl->n] = bytes; pl->n++; }
        return NULL;
    }
    return gpu_alloc(bytes, total);
}

/*
 * The activation and gradient-activation buffers of batch (B, T) for this model's settings (ssd_q, recompute,
 * forward_only, want_argmax, lm_chunk_bytes): allocated into m, or with dry = 1 only counted (nothing is touched but
 * the returned byte count). The one list of them, so the trainer's start-up plan (gpu_train_memory_plan) is the
 * allocation itself.
 */
static size_t gpu_activation_plan(GPUModel* m, int B, int T, int dry) {
    GPUActivations* a = &m->a;
    const Mamba2Config* c = &m->config;
    size_t BT = (size_t)B * T, D = c->d_model, E = c->d_inner, Vp = c->padded_vocab_size;
    size_t X = sizeof(floatX), F = sizeof(float), total = 0;
    ActBuffer layer[NUM_LAYER_ACTS];
    int resid_k = resid_every(m->resid_every), split = resid_split(m);
    int host = resid_on_host(m);
    gpu_layer_acts(layer, c, B, T, m->ssd_q, m->recompute, m->forward_only, resid_k, host);
    for (int k = 0; k < NUM_LAYER_ACTS; k++) {
        if (!dry) a->layer[k] = layer[k];
        char* base = (char*)act_alloc(m, LAYER_ACT_NAMES[k], layer[k].slots * layer[k].layer_bytes, &total, dry);
        if (!dry) a->layer[k].base = base;
    }
    int lm_rows = lm_head_rows((int)BT, (int)Vp, m->lm_chunk_bytes ? m->lm_chunk_bytes : LM_HEAD_CHUNK_BYTES);
    floatX* delta = (floatX*)act_alloc(m, "delta (block out)", BT * D * X, &total, dry);
    size_t kept_deltas = split ? (size_t)resid_ndeltas(c->n_layer, resid_k) * BT * D * X : 0;
    floatX* deltas = (floatX*)act_alloc(m, "kept deltas (-r 2)", host ? 0 : kept_deltas, &total, dry);
    /* -r 3: the checkpoints below x_L and the kept deltas, in pinned host memory (not in the GPU total) */
    m->host_bytes = host ? (size_t)(resid_ncheckpoints(c->n_layer, resid_k) - 1) * layer[ACT_RESIDUAL].layer_bytes +
                           kept_deltas : 0;
    if (!dry && m->host_bytes > 0) {
        cudaError_t e = cudaMallocHost((void**)&m->resid_host_base, m->host_bytes);
        if (e != cudaSuccess)
            die("-r 3: could not pin %.2f GiB of host memory for the residual stream (%s); -r 2 keeps it on the GPU",
                m->host_bytes / 1073741824.0, cudaGetErrorString(e));
        cudaCheck(cudaStreamCreate(&m->copy_stream));
        cudaCheck(cudaEventCreateWithFlags(&m->copy_ready, cudaEventDisableTiming));
        cudaCheck(cudaEventCreateWithFlags(&m->x_copied, cudaEventDisableTiming));
        cudaCheck(cudaEventCreateWithFlags(&m->delta_copied, cudaEventDisableTiming));
    }
    floatX* lnf = (floatX*)act_alloc(m, "lnf", BT * D * X, &total, dry);
    float* lnf_rstd = (float*)act_alloc(m, "lnf rstd", BT * F, &total, dry);
    floatX* logits = (floatX*)act_alloc(m, "logits (a chunk)", (size_t)lm_rows * Vp * X, &total, dry);
    float* losses = (float*)act_alloc(m, "losses", BT * F, &total, dry);
    int* inputs = (int*)act_alloc(m, "inputs", BT * sizeof(int), &total, dry);
    int* targets = (int*)act_alloc(m, "targets", BT * sizeof(int), &total, dry);
    int* seq_idx = (int*)act_alloc(m, "seq_idx", BT * sizeof(int), &total, dry);
    int has_attn = config_count_kind(c, 'A') > 0, has_mamba = config_count_kind(c, 'M') > 0;
    int* rope_pos = (int*)act_alloc(m, "rope positions", has_attn ? BT * sizeof(int) : 0, &total, dry);
    int* argmax = m->want_argmax ? (int*)act_alloc(m, "argmax", BT * sizeof(int), &total, dry) : NULL;
    if (!dry) {
        a->delta = delta; a->deltas = deltas; a->lnf = lnf; a->lnf_rstd = lnf_rstd; a->logits = logits;
        a->losses = losses;
        a->inputs = inputs; a->targets = targets; a->seq_idx = seq_idx; a->argmax = argmax;
        a->rope_pos = rope_pos;
        m->lm_rows = lm_rows;
    }
    if (m->forward_only) return total;
    GPUGradActivations* g = &m->g;
    size_t scratch = rmsnorm_backward_scratch_floats(c->d_model);
    if (has_mamba)
        scratch = max_sz(max_sz(scratch, gated_norm_backward_scratch_floats(E)),
                         conv1d_backward_scratch_floats(B, T, c->conv_dim, c->d_conv));
    if (c->qkv_bias || c->out_bias) /* the attention biases' gradients */
        scratch = max_sz(scratch, bias_backward_scratch_floats(max_sz(c->attn_qkv_dim, D)));
    size_t mamba_bt = has_mamba ? BT : 0; /* the Mamba-2 block's gradient buffers, none without its blocks */
    size_t wide = max_sz(c->attn_qkv_dim, 2 * (size_t)c->mlp_hidden), mix = max_sz(c->attn_out_dim, c->mlp_hidden);
    /* the SSD backward's workspace for the kernels it will run (ssd_bwd_kernels): on this GPU, or in a dry plan on
       one whose blocks may opt in to m->plan_smem_optin bytes of shared memory */
    int smem = dry && m->plan_smem_optin > 0 ? m->plan_smem_optin : cuda_smem_optin();
    size_t ssd_ws = has_mamba ? ssd_workspace_bytes_smem(B, T, c->nheads, c->headdim, c->d_state, c->ngroups, m->ssd_q,
                                                         smem) : 0;
    void* p[13];
    p[0] = act_alloc(m, "d residual (fp32)", BT * D * F, &total, dry);
    p[1] = act_alloc(m, "d residual (floatX)", BT * D * X, &total, dry);
    /* Two pairs of gradient buffers share memory: their lives in a block's backward do not overlap, and every block
       writes each before it reads it (none accumulates across blocks).
         dgn and dxbc: the Mamba-2 backward writes dgn (out_proj's input gradient) and reads it only in the gated-norm
           backward; dxbc is written after that, by the SSD backward, and read by the conv backward. Only Mamba-2
           blocks use either.
         dy and du: dy is written by the gated-norm backward and read last by the SSD backward; du is written after
           it, by in_proj's input gradient (every block kind), and read by the pre-norm's backward; the LM head writes
           du (dlnf) in the forward for the final norm's backward, when no dy is live. */
    p[2] = act_alloc(m, "d gn = d xbc (shared)", mamba_bt * max_sz(E, c->conv_dim) * X, &total, dry);
    p[3] = act_alloc(m, "d y = d u (shared)", BT * max_sz(mamba_bt ? E : 0, D) * X, &total, dry);
    p[4] = act_alloc(m, "d zxbcdt", mamba_bt * c->d_in_proj * X, &total, dry);
    p[5] = p[2];
    p[6] = p[3];
    p[7] = act_alloc(m, "ssd bwd workspace", ssd_ws, &total, dry);
    p[8] = act_alloc(m, "reduction scratch", scratch * F, &total, dry);
    p[9] = act_alloc(m, "embedding bwd workspace", encoder_backward_workspace_ints((int)BT) * sizeof(int), &total,
                     dry);
    p[10] = act_alloc(m, "d qkv / d mlp h", BT * wide * X, &total, dry);
    p[11] = act_alloc(m, "d att / d mlp act", BT * mix * X, &total, dry);
    p[12] = act_alloc(m, "d sum (attention)", has_attn ? BT * c->attn_heads * F : 0, &total, dry);
    if (!dry) {
        g->dresidual = (float*)p[0]; g->dres_x = (floatX*)p[1]; g->dgn = (floatX*)p[2]; g->dy = (floatX*)p[3];
        g->dzxbcdt = (floatX*)p[4]; g->dxbc = (floatX*)p[5]; g->du = (floatX*)p[6]; g->ssd_ws = p[7];
        g->scratch = (float*)p[8]; g->enc_ws = (int*)p[9];
        g->dqkv = (floatX*)p[10]; g->dmix = (floatX*)p[11]; g->dsum = (float*)p[12];
    }
    return total;
}

static void gpu_model_ensure_activations(GPUModel* m, int B, int T) {
    GPUActivations* a = &m->a;
    if (a->inputs != NULL && m->B == B && m->T == T) return;
    if (a->inputs != NULL) die("the GPU trainer sizes its activations once; got B=%d T=%d after B=%d T=%d", B, T,
                               m->B, m->T);
    size_t BT = (size_t)B * T, Vp = m->config.padded_vocab_size;
    m->activation_bytes = gpu_activation_plan(m, B, T, 0);
    if (m->want_argmax) m->argmax_host = (int*)mallocCheck(BT * sizeof(int));
    m->losses_host = (float*)mallocCheck(BT * sizeof(float));
    if (!m->forward_only)  /* host memory, pinned: the embedding backward's plan */
        cudaCheck(cudaMallocHost(&m->g.enc_host, encoder_backward_host_scratch_ints((int)BT, (int)Vp) * sizeof(int)));
    m->B = B;
    m->T = T;
}

/* the device bytes a training run of config c allocates at batch (B, T) with the SSD chunk ssd_q and recompute mode:
 * fp32 weights, their floatX copy, fp32 gradients, the AdamW moments (ZeRO-1: this rank's shard, and the gradient
 * shard), the cuBLASLt workspace, and gpu_activation_plan's activations, counted by the plan that allocates them.
 * Not counted: the CUDA context and cuBLAS's own memory (~0.5-1 GB), the sampler's one-sequence decode state. */
typedef struct {
    size_t weights;      /* weights, floatX copy, gradients, optimizer, small device scalars, matmul workspace */
    size_t activations;  /* gpu_activation_plan */
    size_t host;         /* -r 3: pinned host memory for the residual stream (not in the two above) */
} GPUMemoryPlan;

/* the plan with its choices spelled out: recompute 0..3 (-r; 3 = 2 with the residual stream on the host), resid_k
   (-r 2's checkpoint spacing, 0: the default), smem_optin (the GPU's
   opt-in shared memory, which decides the SSD backward's kernels and so its workspace; 0: this GPU's, asked of the
   device), list (NULL, or where each activation buffer is listed). Touches no GPU when smem_optin > 0. */
static GPUMemoryPlan gpu_train_memory_plan_detail(const Mamba2Config* c, int B, int T, int ssd_q, int recompute,
                                                  int resid_k, int world, int zero_stage, int smem_optin,
                                                  GPUPlanList* list) {
    GPUMemoryPlan p;
    ParamSpec table[NUM_PARAM_TENSORS];
    size_t n = param_table_build(table, c), w = world > 0 ? (size_t)world : 1;
    size_t shard = CEIL_DIV(n, w), padded = shard * w;
    size_t opt = zero_stage == 1 ? shard : n;
    p.weights = padded * sizeof(float) * 2 + n * sizeof(floatX) + 2 * opt * sizeof(float) +
                (zero_stage == 1 ? shard * sizeof(float) : 0) + MATMUL_WORKSPACE_BYTES +
                (global_norm_scratch_floats() + 3) * sizeof(float) + sizeof(int);
    GPUModel* m = (GPUModel*)callocCheck(1, sizeof(GPUModel)); /* a plan only: nothing is allocated */
    m->config = *c;
    m->ssd_q = ssd_q;
    gpu_model_set_recompute(m, recompute);
    m->resid_every = resid_k;
    m->plan_smem_optin = smem_optin;
    m->plan_list = list;
    p.activations = gpu_activation_plan(m, B, T, 1);
    p.host = m->host_bytes;
    free(m);
    return p;
}

static GPUMemoryPlan gpu_train_memory_plan(const Mamba2Config* c, int B, int T, int ssd_q, int recompute, int world,
                                           int zero_stage) {
    return gpu_train_memory_plan_detail(c, B, T, ssd_q, recompute, 0, world, zero_stage, 0, NULL);
}

/*
 * The tied LM head and the classifier over `rows` rows from r0, in a logits buffer of m->lm_rows rows: logits, the
 * fused softmax / cross-entropy and, when training (dloss > 0), dlogits in place and at once their two products:
 *   dlnf[r0..] = dlogits @ wte   (into g->du, which the backward's final-norm step reads)
 *   dwte      += dlogits^T @ lnf[r0..]
 * Done chunk by chunk, the (BT, Vp) logits never exist at once: 412 MB instead of 1.65 GB at 130M, B=8, T=2048.
 */
static void lm_head_chunk(GPUModel* m, int r0, int rows, float dloss) {
    const Mamba2Config* c = &m->config;
    GPUActivations* a = &m->a;
    cudaStream_t st = m->stream;
    int D = c->d_model, Vp = c->padded_vocab_size;
    const floatX* lnf = a->lnf + (size_t)r0 * D;
    matmul_forward(a->logits, lnf, PX(m, P_WTE, 0), rows, D, Vp, st);
    if (dloss > 0)
        classifier_forward_backward(a->logits, a->losses + r0, m->error_flag, a->targets + r0, dloss, rows,
                                    c->vocab_size, Vp, st);
    else
        classifier_loss_only(a->logits, a->losses + r0, m->error_flag, a->targets + r0, rows, c->vocab_size, Vp, st);
    if (dloss <= 0 && a->argmax) classifier_argmax(a->argmax + r0, a->logits, rows, c->vocab_size, Vp, st);
    if (dloss > 0) {
        matmul_backward_input(m->g.du + (size_t)r0 * D, a->logits, PX(m, P_WTE, 0), rows, D, Vp, 0, st);
        matmul_backward_weight(GF(m, P_WTE, 0), a->logits, lnf, rows, D, Vp, st);
    }
}

/* ================================================================================================================
 * blocks: a block kind is a forward and a backward of one layer, over the layer activations it keeps (LayerAct) and
 * the layer's parameters (the table in llmc/mamba2_model.h). Each block starts with its pre-norm, which adds the
 * previous block's output (gpu_delta) to the residual stream, and ends with its out_proj into gpu_delta.
 * ================================================================================================================ */

/* the document index of the batch in flight (device), or NULL without boundaries: conv1d and the SSD take it */
static inline const int* gpu_doc_index(const GPUModel* m) { return m->docs ? m->a.seq_idx : NULL; }

/* the carried state of Mamba-2 block slot `slot` (its place among the Mamba-2 blocks) in buffer `which` */
static inline size_t gpu_carry_ssm_per_layer(const GPUModel* m) {
    const Mamba2Config* c = &m->config;
    return (size_t)m->carry.B * c->nheads * c->headdim * c->d_state;
}
static inline size_t gpu_carry_window_per_layer(const GPUModel* m) {
    return (size_t)m->carry.B * (m->config.d_conv - 1) * m->config.conv_dim;
}
static inline float* gpu_carry_ssm(const GPUModel* m, int which, int slot) {
    return m->carry.ssm[which] + (size_t)slot * gpu_carry_ssm_per_layer(m);
}
static inline floatX* gpu_carry_window(const GPUModel* m, int which, int slot) {
    return m->carry.window[which] + (size_t)slot * gpu_carry_window_per_layer(m);
}

/* every block kind's pre-norm: u = rmsnorm(x_l) into ACT_U, its 1/rms into ACT_RSTD. The forward (again = 0) first
   forms x_l = x_{l-1} + delta_{l-1} in the same kernel and writes it where gpu_residual_out says (x_0, the embedding,
   is taken as it is); again = 1, -r 2's recompute of the block in its backward, norms x_l as the forward formed it
   (gpu_residual) and writes no stream: the same kernel on the same values, so the forward's bits. x_{l-1} is read
   before x_l's slot is asked for (gpu_residual_out's rule). */
static void block_prenorm_forward(GPUModel* m, int l, int again) {
    const float* x_in;
    const floatX* delta = NULL;
    float* x_out;
    if (again || l == 0) {
        x_in = gpu_residual(m, l);
        x_out = (float*)x_in;
    } else {
        x_in = gpu_residual(m, l - 1);
        delta = gpu_delta(m, l - 1);
        x_out = gpu_residual_out(m, l);
    }
    rmsnorm_forward_from(act_x(m, ACT_U, l), act_f(m, ACT_RSTD, l), x_out, x_in, delta, PF(m, P_NORM_W, l),
                         m->B * m->T, m->config.d_model, m->stream);
    if (!again && l > 0) gpu_residual_commit(m, l);
}

/* the block from its pre-norm through the gated norm: everything but out_proj; again: as block_prenorm_forward's
   (0: the forward, 1: -r 2's recompute, the forward's bits) */
static void mamba2_block_through_gated_norm(GPUModel* m, int l, int again) {
    const Mamba2Config* c = &m->config;
    cudaStream_t st = m->stream;
    int B = m->B, T = m->T, BT = B * T, D = c->d_model, E = c->d_inner, dt_col = 2 * E + 2 * c->ngroups * c->d_state;
    floatX* u = act_x(m, ACT_U, l);
    floatX* zx = act_x(m, ACT_ZXBCDT, l);
    floatX* xbc = act_x(m, ACT_XBC, l);
    floatX* y = act_x(m, ACT_Y, l);
    const int* seq = gpu_doc_index(m);
    block_prenorm_forward(m, l, again);
    matmul_forward(zx, u, PX(m, P_IN_PROJ_W, l), BT, D, c->d_in_proj, st);
    float *init_state = NULL, *final_state = NULL;
    if (m->carry.active) { /* -C 1: from the row's carried window and state, leaving the final ones (-r 2's recompute
                              writes them again, the same bits) */
        int slot = config_block_slot(c, l);
        const floatX* window = gpu_carry_window(m, m->carry.cur, slot);
        conv1d_forward_window(xbc, zx + E, c->d_in_proj, PF(m, P_CONV_W, l), PF(m, P_CONV_B, l), window,
                              seq ? m->carry.seq_ext : NULL, m->carry.ext[0], m->carry.ext[1], B, T, c->conv_dim,
                              c->d_conv, st);
        conv1d_final_window(gpu_carry_window(m, 1 - m->carry.cur, slot), window, zx + E, c->d_in_proj, seq, B, T,
                            c->conv_dim, c->d_conv, st);
        init_state = gpu_carry_ssm(m, m->carry.cur, slot);
        final_state = gpu_carry_ssm(m, 1 - m->carry.cur, slot);
    } else {
        conv1d_forward_docs(xbc, zx + E, c->d_in_proj, PF(m, P_CONV_W, l), PF(m, P_CONV_B, l), seq, B, T, c->conv_dim,
                            c->d_conv, st);
    }
    ssd_forward(y, final_state, act_at(m, ACT_SSD_SAVED, l), xbc, c->conv_dim, zx + dt_col, c->d_in_proj,
                PF(m, P_DT_BIAS, l), PF(m, P_A_LOG, l), PF(m, P_D, l), init_state, seq, B, T, c->nheads, c->headdim,
                c->d_state, c->ngroups, m->ssd_q, st);
    gated_norm_forward(act_x(m, ACT_GN, l), act_f(m, ACT_GN_RSTD, l), y, zx, c->d_in_proj, PF(m, P_GNORM_W, l), BT, E,
                       c->ngroups, st);
}

/*
 * Mamba-2 block l, forward (SPEC.md section 2):
 *   x_l   = x_{l-1} + delta_{l-1};  u = RMSNorm(x_l) * w           (rmsnorm.cuh: the residual add fused into the norm)
 *   zxbcdt = u @ W_in^T                                             (matmul.cuh, cuBLASLt)
 *   xbc   = SiLU(conv1d(xBC) + b)                                   (conv1d.cuh: reads xBC in place from zxbcdt)
 *   y     = SSD(x, softplus(dt_raw + dt_bias), -exp(A_log), B, C) + D x   (ssd.cuh: dt and A fused in)
 *   gn    = RMSNorm_g(y * SiLU(z)) * w                              (gated_norm.cuh)
 *   delta = gn @ W_out^T                                            (matmul.cuh)
 */
static void mamba2_block_forward(GPUModel* m, int l) {
    const Mamba2Config* c = &m->config;
    mamba2_block_through_gated_norm(m, l, 0);
    matmul_forward(gpu_delta_out(m, l), act_x(m, ACT_GN, l), PX(m, P_OUT_PROJ_W, l), m->B * m->T, c->d_inner,
                   c->d_model, m->stream);
}

/*
 * -r 2: layer l's forward once more, from the residual stream entering it (kept for every layer), up to the gated
 * norm: what its backward reads (u, zxbcdt, xbc, the SSD's saved values, y, gn and their statistics), into the one
 * layer of buffers all layers share. The same kernels on the same input: the forward's values to the bit, so -r 2
 * trains exactly as -r 0. The pre-norm reads the stored sum x_l (the forward formed it from x_{l-1} + delta_{l-1}
 * and normed that float value; no delta now, so nothing is written back); out_proj is not needed.
 */
static void mamba2_block_recompute(GPUModel* m, int l) {
    mamba2_block_through_gated_norm(m, l, 1);
}

/*
 * Mamba-2 block l, backward: g->dres_x holds d(delta) (the residual stream's gradient as a matmul operand, written by
 * the norm backward above it); parameter gradients are accumulated; ends with the pre-norm's backward, which adds
 * into g->dresidual and, for l > 0, writes the next dres_x. doc/block_backward.md derives each step.
 */
static void mamba2_block_backward(GPUModel* m, int l) {
    const Mamba2Config* c = &m->config;
    GPUGradActivations* g = &m->g;
    cudaStream_t st = m->stream;
    int B = m->B, T = m->T, BT = B * T, D = c->d_model, E = c->d_inner, dt_col = 2 * E + 2 * c->ngroups * c->d_state;
    floatX* zx = act_x(m, ACT_ZXBCDT, l);
    floatX* xbc = act_x(m, ACT_XBC, l);
    floatX* gn = act_x(m, ACT_GN, l);
    const int* seq = gpu_doc_index(m);
    if (m->recompute == 2 && l < c->n_layer - 1) /* -r 2: the layer's forward again (the top layer's is still there) */
        mamba2_block_recompute(m, l);
    const floatX* window = m->carry.active ? gpu_carry_window(m, m->carry.cur, config_block_slot(c, l)) : NULL;
    const int* seq_ext = seq ? m->carry.seq_ext : NULL;
    if (m->recompute == 1 && window) /* -r 1 with carried state: the conv output again, with the window */
        conv1d_forward_window(xbc, zx + E, c->d_in_proj, PF(m, P_CONV_W, l), PF(m, P_CONV_B, l), window, seq_ext,
                              m->carry.ext[0], m->carry.ext[1], B, T, c->conv_dim, c->d_conv, st);
    else if (m->recompute == 1) /* -r 1: the conv output again, from what every layer keeps (zxbcdt) */
        conv1d_forward_docs(xbc, zx + E, c->d_in_proj, PF(m, P_CONV_W, l), PF(m, P_CONV_B, l), seq, B, T, c->conv_dim,
                            c->d_conv, st);
    /* out_proj: the residual branch; the identity branch passes dresidual through. Its weight gradient comes after
     * the gated-norm backward, which with -r 1 writes the gated-norm output gn again (bitwise the forward's) instead
     * of a second forward */
    matmul_backward_input(g->dgn, g->dres_x, PX(m, P_OUT_PROJ_W, l), BT, E, D, 0, st);
    gated_norm_backward(m->recompute == 1 ? gn : NULL, g->dy, g->dzxbcdt, c->d_in_proj, GF(m, P_GNORM_W, l), g->scratch,
                        g->dgn, act_x(m, ACT_Y, l), zx, c->d_in_proj, PF(m, P_GNORM_W, l),
                        act_f(m, ACT_GN_RSTD, l), BT, E, c->ngroups, st);
    matmul_backward_weight(GF(m, P_OUT_PROJ_W, l), g->dres_x, gn, BT, E, D, st);
    ssd_backward(g->dxbc, g->dzxbcdt + dt_col, GF(m, P_DT_BIAS, l), GF(m, P_A_LOG, l), GF(m, P_D, l), NULL, g->dy,
                 act_at(m, ACT_SSD_SAVED, l), xbc, c->conv_dim, zx + dt_col, c->d_in_proj, PF(m, P_DT_BIAS, l),
                 PF(m, P_A_LOG, l), PF(m, P_D, l),
                 m->carry.active ? gpu_carry_ssm(m, m->carry.cur, config_block_slot(c, l)) : NULL, seq, g->ssd_ws, B,
                 T, c->nheads, c->headdim, c->d_state, c->ngroups, m->ssd_q, st);
    if (window) /* -C 1: the carried window adds to d conv_w and gets no gradient (stopped at the batch edge) */
        conv1d_backward_window(g->dzxbcdt + E, c->d_in_proj, GF(m, P_CONV_W, l), GF(m, P_CONV_B, l),
                               m->carry.scratch, g->dxbc, zx + E, c->d_in_proj, PF(m, P_CONV_W, l),
                               PF(m, P_CONV_B, l), window, seq_ext, m->carry.ext[0], m->carry.ext[1], m->carry.ext[2],
                               B, T, c->conv_dim, c->d_conv, st);
    else
        conv1d_backward_docs(g->dzxbcdt + E, c->d_in_proj, GF(m, P_CONV_W, l), GF(m, P_CONV_B, l), g->scratch,
                             g->dxbc, zx + E, c->d_in_proj, PF(m, P_CONV_W, l), PF(m, P_CONV_B, l), seq, B, T,
                             c->conv_dim, c->d_conv, st);
    matmul_backward_input(g->du, g->dzxbcdt, PX(m, P_IN_PROJ_W, l), BT, D, c->d_in_proj, 0, st);
    matmul_backward_weight(GF(m, P_IN_PROJ_W, l), g->dzxbcdt, act_x(m, ACT_U, l), BT, D, c->d_in_proj, st);
    rmsnorm_backward_lowp(g->dresidual, l > 0 ? g->dres_x : NULL, GF(m, P_NORM_W, l), g->scratch, g->du,
                          gpu_residual(m, l), PF(m, P_NORM_W, l), act_f(m, ACT_RSTD, l), BT, D, st);
}

/* the hybrids' other block kinds (doc/hybrid.md), written over the same activations and helpers */
#include "attention_block.cuh"
#include "mlp_block.cuh"

/* The block kinds. Adding one: an entry here, its forward and backward, its parameters in the table of
   llmc/mamba2_model.h, its activations in LayerAct, and a test against the CPU trainer (test_hybrid.cu). */
typedef struct {
    char letter;  /* its letter in the config's pattern */
    const char* name;
    void (*forward)(GPUModel* m, int l);
    void (*backward)(GPUModel* m, int l);
} GPUBlockKind;
enum { BLOCK_MAMBA2, BLOCK_ATTENTION, BLOCK_MLP, NUM_BLOCK_KINDS };
static const GPUBlockKind GPU_BLOCK_KINDS[NUM_BLOCK_KINDS] = {
    {'M', "mamba2", mamba2_block_forward, mamba2_block_backward},
    {'A', "attention", attention_block_forward, attention_block_backward},
    {'F', "gated MLP", mlp_block_forward, mlp_block_backward},
};
/* the kind of layer l: its letter in the pattern (a pure model: every layer 'M') */
static inline const GPUBlockKind* gpu_block_kind(const GPUModel* m, int l) {
    char letter = config_block_kind(&m->config, l);
    for (int k = 0; k < NUM_BLOCK_KINDS; k++)
        if (GPU_BLOCK_KINDS[k].letter == letter) return &GPU_BLOCK_KINDS[k];
    die("block %d: kind '%c' has no GPU block (kinds: M, A, F)", l, letter);
    return NULL;
}

/* a document index must not decrease along a row (dataloader_doc_index makes it so): the kernels compare indices for
   equality, which is the CPU trainer's same-document rule only for such an index */
static void gpu_check_doc_index(const int* seq_idx, int B, int T) {
    for (size_t i = 0; i < (size_t)B * T; i++)
        if (i % (size_t)T > 0 && seq_idx[i] < seq_idx[i - 1])
            die("document index %d at position %zu is below the previous one (%d): it must not decrease along a row",
                seq_idx[i], i, seq_idx[i - 1]);
}

/*
 * Forward pass of packed documents. seq_idx (host, B*T, non-decreasing along each row; dataloader_doc_index) is each
 * position's document, or NULL for one document per row: conv1d and the SSD do not cross a boundary, and the
 * backward after this forward uses the same boundaries (doc/packing.md). A target of -1 (TARGET_NO_LOSS) is not
 * counted. With targets: the LM head and the fused classifier run chunk by chunk (lm_head_chunk) and compute the
 * losses; when dloss > 0 (training) each chunk's dlogits also go through the LM head's backward at once, so
 * gpu_backward starts at the final norm. Returns the mean loss over the counted targets (0 if none counts; with
 * every target counted, the mean over the batch as before) and sets m->num_counted. Without targets (tests): the
 * logits of all B*T <= m->lm_rows rows stay in a->logits; returns -1.
 */
static float gpu_forward_docs(GPUModel* m, const int* inputs, const int* targets, const int* seq_idx, int B, int T,
                              float dloss) {
    const Mamba2Config* c = &m->config;
    if (dloss > 0 && m->forward_only) die("gpu_forward: a model made for evaluation only (forward_only) cannot train");
    m->carry.active = m->carry.request; /* only a forward through gpu_forward_carry reads the carried state */
    m->carry.request = 0;
    gpu_model_ensure_activations(m, B, T);
    GPUActivations* a = &m->a;
    cudaStream_t st = m->stream;
    int BTi = B * T, D = c->d_model, L = c->n_layer;
    size_t BT = (size_t)BTi;
    cudaCheck(cudaMemcpyAsync(a->inputs, inputs, BT * sizeof(int), cudaMemcpyHostToDevice, st));
    if (targets) cudaCheck(cudaMemcpyAsync(a->targets, targets, BT * sizeof(int), cudaMemcpyHostToDevice, st));
    m->docs = seq_idx != NULL;
    if (seq_idx) {
        gpu_check_doc_index(seq_idx, B, T);
        cudaCheck(cudaMemcpyAsync(a->seq_idx, seq_idx, BT * sizeof(int), cudaMemcpyHostToDevice, st));
        if (config_count_kind(c, 'A') > 0) attention_block_upload_positions(m, seq_idx, B, T);
    }
    encoder_forward(gpu_residual_out(m, 0), a->inputs, PX(m, P_WTE, 0), BTi, D, st);
    gpu_residual_commit(m, 0);
    /* training: group the tokens for the embedding backward now, on the host, while the GPU runs the forward */
    if (targets && dloss > 0)
        m->g.enc_plan = encoder_backward_prepare(m->g.enc_ws, m->g.enc_host, inputs, BTi, c->padded_vocab_size, st);
    for (int l = 0; l < L; l++) {
        gpu_block_kind(m, l)->forward(m, l);
        gpu_delta_commit(m, l);
    }
    gpu_residual_copies_done(m);
    /* the stream entering the final norm = the last block's input plus its output */
    const float* x_last = gpu_residual(m, L - 1);
    rmsnorm_forward_from(a->lnf, a->lnf_rstd, gpu_residual_out(m, L), x_last, gpu_delta(m, L - 1), PF(m, P_NORM_F_W, 0),
                         BTi, D, st);
    if (targets == NULL) {
        if (BTi > m->lm_rows)
            die("gpu_forward without targets keeps the logits of at most %d rows (the LM-head chunk); got B*T = %d",
                m->lm_rows, BTi);
        matmul_forward(a->logits, a->lnf, PX(m, P_WTE, 0), BTi, D, c->padded_vocab_size, st); /* tied LM head */
        return -1.0f;
    }
    cudaCheck(cudaMemsetAsync(m->error_flag, 0, sizeof(int), st));
    for (int r0 = 0; r0 < BTi; r0 += m->lm_rows)
        lm_head_chunk(m, r0, BTi - r0 < m->lm_rows ? BTi - r0 : m->lm_rows, dloss);
    int flag = 0;
    cudaCheck(cudaMemcpyAsync(m->losses_host, a->losses, BT * sizeof(float), cudaMemcpyDeviceToHost, st));
    cudaCheck(cudaMemcpyAsync(&flag, m->error_flag, sizeof(int), cudaMemcpyDeviceToHost, st));
    if (dloss <= 0 && a->argmax)
        cudaCheck(cudaMemcpyAsync(m->argmax_host, a->argmax, BT * sizeof(int), cudaMemcpyDeviceToHost, st));
    cudaCheck(cudaStreamSynchronize(st));
    if (flag) die("a target token id is outside the vocabulary [0, %d) (and not -1, no loss)", c->vocab_size);
    double sum = 0; /* a masked position's loss is 0: the sum is that of the counted ones */
    size_t counted = 0;
    for (size_t i = 0; i < BT; i++) {
        sum += m->losses_host[i];
        counted += targets[i] != TARGET_NO_LOSS;
    }
    m->num_counted = counted;
    if (counted == BT) return (float)(sum / BT);
    return counted > 0 ? (float)(sum / counted) : 0.0f;
}

/* one document per row */
static float gpu_forward(GPUModel* m, const int* inputs, const int* targets, int B, int T, float dloss) {
    return gpu_forward_docs(m, inputs, targets, NULL, B, T, dloss);
}

/* ---- carried state (-C 1; doc/packing.md section 6): train_mamba2.c's mamba2_forward_carry on the GPU ---- */

/* the carried state's buffers at (B, T), in elements: the one description both its allocation and the trainer's
   start-up memory plan (gpu_carry_bytes) read */
typedef struct {
    size_t ssm;     /* each of ssm[2]: (LM, B, H, P, N) floats */
    size_t window;  /* each of window[2]: (LM, B, K-1, conv_dim) floatX, + 1: never a zero-size buffer (K = 1) */
    size_t stage;   /* each of ext[3], floatX */
    size_t scratch; /* floats */
    size_t seq_ext; /* ints, on the device and on the host */
} GPUCarrySizes;
static GPUCarrySizes gpu_carry_sizes(const Mamba2Config* c, int B, int T) {
    GPUCarrySizes z;
    z.ssm = carry_ssm_floats(c, B);
    z.window = carry_window_floats(c, B) + 1;
    z.stage = conv1d_window_stage_elems(B, T, c->conv_dim, c->d_conv);
    z.scratch = conv1d_window_scratch_floats(B, T, c->conv_dim, c->d_conv);
    z.seq_ext = (size_t)B * (T + c->d_conv - 1);
    return z;
}

/* device bytes of the carried state at (B, T): counted in the trainer's start-up memory plan on a line of its own */
static size_t gpu_carry_bytes(const Mamba2Config* c, int B, int T) {
    GPUCarrySizes z = gpu_carry_sizes(c, B, T);
    return 2 * z.ssm * sizeof(float) + 2 * z.window * sizeof(floatX) + 3 * z.stage * sizeof(floatX) +
           z.scratch * sizeof(float) + z.seq_ext * sizeof(int);
}

/* the carried state for B rows of T, zero (every stream starts fresh). Attention blocks carry no fixed-size state: a
   hybrid with 'A' blocks is refused */
static void gpu_carry_allocate(GPUModel* m, int B, int T) {
    const Mamba2Config* c = &m->config;
    if (c->n_attn > 0)
        die("carried state (-C 1) needs a model of Mamba-2 (and MLP) blocks only: this one has %d attention blocks, "
            "whose keys and values cannot be carried in a fixed-size state; train it without -C", c->n_attn);
    GPUCarry* k = &m->carry;
    if (k->B != 0) die("gpu_carry_allocate: already allocated");
    k->B = B;
    k->T = T;
    k->cur = 1; /* the first forward flips to buffer 0 */
    GPUCarrySizes z = gpu_carry_sizes(c, B, T);
    size_t total = 0;
    for (int i = 0; i < 2; i++) {
        k->ssm[i] = (float*)gpu_alloc(z.ssm * sizeof(float), &total);
        k->window[i] = (floatX*)gpu_alloc(z.window * sizeof(floatX), &total);
        cudaCheck(cudaMemset(k->ssm[i], 0, z.ssm * sizeof(float)));
        cudaCheck(cudaMemset(k->window[i], 0, z.window * sizeof(floatX)));
    }
    for (int i = 0; i < 3; i++) k->ext[i] = (floatX*)gpu_alloc(z.stage * sizeof(floatX), &total);
    k->scratch = (float*)gpu_alloc(z.scratch * sizeof(float), &total);
    k->seq_ext = (int*)gpu_alloc(z.seq_ext * sizeof(int), &total);
    k->seq_ext_host = (int*)mallocCheck(z.seq_ext * sizeof(int));
}

/*
 * The forward with carried state: row b starts from the SSM state and conv window its previous batch left, unless
 * fresh[b] (its stream starts afresh, or its first input opens a document: dataloader_fresh_rows), and leaves its
 * final ones for the next batch; the backward after it (gpu_backward) treats them as constants. Arguments and result
 * as gpu_forward_docs.
 */
static float gpu_forward_carry(GPUModel* m, const int* inputs, const int* targets, const int* seq_idx,
                               const int* fresh, int B, int T, float dloss) {
    const Mamba2Config* c = &m->config;
    GPUCarry* k = &m->carry;
    if (k->B != B || k->T != T)
        die("gpu_forward_carry: the carried state is sized for B=%d T=%d, the batch is B=%d T=%d (gpu_carry_allocate)",
            k->B, k->T, B, T);
    k->cur = 1 - k->cur; /* the last forward's final states are this one's initial states */
    size_t ns = gpu_carry_ssm_per_layer(m) / B, nw = gpu_carry_window_per_layer(m) / B;
    for (int l = 0; l < c->n_mamba; l++)
        for (int b = 0; b < B; b++) {
            if (!fresh[b]) continue;
            cudaCheck(cudaMemsetAsync(gpu_carry_ssm(m, k->cur, l) + b * ns, 0, ns * sizeof(float), m->stream));
            if (nw > 0)
                cudaCheck(cudaMemsetAsync(gpu_carry_window(m, k->cur, l) + b * nw, 0, nw * sizeof(floatX), m->stream));
        }
    if (seq_idx) { /* the window's positions are in the row's first document */
        int K1 = c->d_conv - 1, TE = T + K1;
        for (int b = 0; b < B; b++) {
            for (int j = 0; j < K1; j++) k->seq_ext_host[(size_t)b * TE + j] = seq_idx[(size_t)b * T];
            memcpy(k->seq_ext_host + (size_t)b * TE + K1, seq_idx + (size_t)b * T, sizeof(int) * T);
        }
        cudaCheck(cudaMemcpyAsync(k->seq_ext, k->seq_ext_host, sizeof(int) * (size_t)B * TE, cudaMemcpyHostToDevice,
                                  m->stream));
        cudaCheck(cudaStreamSynchronize(m->stream)); /* seq_ext_host is pageable: reusable only once copied */
    }
    k->request = 1;
    return gpu_forward_docs(m, inputs, targets, seq_idx, B, T, dloss);
}

/* the carried state the next forward reads, to / from the host as fp32 (the companion file's layout: ssm
   (LM, B, H, P, N), windows (LM, B, K-1, conv_dim)) */
static void gpu_carry_download(GPUModel* m, float* ssm, float* window) {
    const Mamba2Config* c = &m->config;
    int next = 1 - m->carry.cur;
    size_t ns = (size_t)c->n_mamba * gpu_carry_ssm_per_layer(m), nw = (size_t)c->n_mamba * gpu_carry_window_per_layer(m);
    cudaCheck(cudaStreamSynchronize(m->stream));
    cudaCheck(cudaMemcpy(ssm, m->carry.ssm[next], ns * sizeof(float), cudaMemcpyDeviceToHost));
    floatX* tmp = (floatX*)mallocCheck((nw + 1) * sizeof(floatX));
    cudaCheck(cudaMemcpy(tmp, m->carry.window[next], nw * sizeof(floatX), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < nw; i++) window[i] = (float)tmp[i];
    free(tmp);
}
static void gpu_carry_upload(GPUModel* m, const float* ssm, const float* window) {
    const Mamba2Config* c = &m->config;
    int next = 1 - m->carry.cur;
    size_t ns = (size_t)c->n_mamba * gpu_carry_ssm_per_layer(m), nw = (size_t)c->n_mamba * gpu_carry_window_per_layer(m);
    cudaCheck(cudaMemcpy(m->carry.ssm[next], ssm, ns * sizeof(float), cudaMemcpyHostToDevice));
    floatX* tmp = (floatX*)mallocCheck((nw + 1) * sizeof(floatX));
    for (size_t i = 0; i < nw; i++) tmp[i] = (floatX)window[i];
    cudaCheck(cudaMemcpy(m->carry.window[next], tmp, nw * sizeof(floatX), cudaMemcpyHostToDevice));
    free(tmp);
}

/* several GPUs, no ZeRO: sum the gradients of tensors `first..last` (layer l's slices, or the whole tensor when not
 * per layer) over the ranks, on the communication stream once the main stream has produced them */
static void allreduce_grads_async(GPUModel* m, int layer, int whole_tensors) {
    MultiGPU* mg = m->mg;
    cudaCheck(cudaEventRecord(m->layer_done, m->stream));
    cudaCheck(cudaStreamWaitEvent(mg->comm_stream, m->layer_done, 0));
    multigpu_group_start(mg);
    char kind = config_block_kind(&m->config, layer);
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        const ParamSpec* s = &m->table[t];
        if (s->per_layer == whole_tensors) continue;
        if (s->per_layer && s->kind != 'N' && s->kind != kind) continue; /* a tensor of another block kind */
        size_t n = s->per_layer ? s->rows * s->cols : s->numel;
        multigpu_allreduce_sum_f32(mg, GF(m, t, layer), n, mg->comm_stream);
    }
    multigpu_group_end(mg);
}

/*
 * Backward after gpu_forward with dloss > 0. Parameter gradients are ACCUMULATED (zero them per step).
 * sync_grads (the last micro-step of a step, several GPUs, no ZeRO): all-reduce each layer's gradients as soon as
 * they are complete, overlapped with the rest of the backward.
 */
static void gpu_backward(GPUModel* m, int sync_grads) {
    int overlap = sync_grads && m->mg->world > 1 && m->mg->zero_stage == 0;
    const Mamba2Config* c = &m->config;
    GPUActivations* a = &m->a;
    GPUGradActivations* g = &m->g;
    cudaStream_t st = m->stream;
    int BTi = m->B * m->T, D = c->d_model;
    /* the tied LM head's backward ran in the forward (lm_head_chunk): g->du holds dlnf */
    cudaCheck(cudaMemsetAsync(g->dresidual, 0, (size_t)BTi * D * sizeof(float), st));
    rmsnorm_backward_lowp(g->dresidual, g->dres_x, GF(m, P_NORM_F_W, 0), g->scratch, g->du,
                          gpu_residual(m, c->n_layer), PF(m, P_NORM_F_W, 0), a->lnf_rstd, BTi, D, st);
    for (int l = c->n_layer - 1; l >= 0; l--) {
        gpu_block_kind(m, l)->backward(m, l);
        if (overlap) allreduce_grads_async(m, l, 0);
    }
    encoder_backward(GF(m, P_WTE, 0), g->dresidual, &g->enc_plan, D, st);
    if (overlap) { /* the embedding and the final norm last; then the optimizer waits for every bucket */
        allreduce_grads_async(m, 0, 1);
        cudaCheck(cudaEventRecord(m->comm_done, m->mg->comm_stream));
        cudaCheck(cudaStreamWaitEvent(st, m->comm_done, 0));
    }
    cudaCheck(cudaStreamSynchronize(st)); /* the embedding plan's host scratch is reused by the next forward */
}

static void gpu_zero_grad(GPUModel* m) {
    cudaCheck(cudaMemsetAsync(m->grads, 0, m->padded * sizeof(float), m->stream));
}

/*
 * The optimizer step: global grad norm + clipping coefficient on the device, then AdamW per tensor (each with its
 * own weight decay). ZeRO-1: reduce-scatter the gradients, norm from every rank's shard, AdamW on this rank's shard,
 * all-gather the weights. Returns the grad norm (before clipping).
 */
/* masked targets: the accumulated gradient is that of the mean over all targets; the step's is `scale` (all / counted)
 * times it. Folded into the norm and the clipping as the CPU trainer does: norm *= scale, the coefficient from that
 * norm, and AdamW's gradient factor coef * scale. */
__global__ static void grad_scale_fold_kernel(float* norm_coef, float scale, float clip) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    float norm = norm_coef[0] * scale;
    float coef = clip > 0.f ? clip / (norm + 1e-6f) : 1.f;
    norm_coef[0] = norm;
    norm_coef[1] = (coef < 1.f ? coef : 1.f) * scale;
}

static void gpu_grad_scale_fold(GPUModel* m, float scale, float clip) {
    if (scale == 1.0f) return; /* every target counted: the default arithmetic, untouched */
    grad_scale_fold_kernel<<<1, 32, 0, m->stream>>>(m->norm_coef, scale, clip);
    cudaCheckLast();
}

/* gpu_update with the gradient scaled by grad_scale (masked targets: all / counted targets of the step; 1 = none) */
static float gpu_update_scaled(GPUModel* m, float lr, float beta1, float beta2, float eps, float weight_decay,
                               float clip, float grad_scale);

static float gpu_update(GPUModel* m, float lr, float beta1, float beta2, float eps, float weight_decay, float clip) {
    return gpu_update_scaled(m, lr, beta1, beta2, eps, weight_decay, clip, 1.0f);
}

static float gpu_update_scaled(GPUModel* m, float lr, float beta1, float beta2, float eps, float weight_decay,
                               float clip, float grad_scale) {
    if (m->m == NULL) gpu_model_alloc_optimizer(m, NULL, NULL);
    MultiGPU* mg = m->mg;
    cudaStream_t st = m->stream;
    m->adam_t++;
    AdamWStep s = adamw_step_constants(lr, beta1, beta2, eps, m->adam_t);
    if (mg->zero_stage == 1) {
        size_t lo_shard = (size_t)mg->rank * m->shard, hi_shard = lo_shard + m->shard;
        multigpu_reduce_scatter_f32(mg, m->grads_shard, m->grads, m->shard, st);
        global_norm_partials(m->norm_scratch, m->grads_shard, m->shard, st);
        multigpu_allreduce_sum_f32(mg, m->norm_scratch, global_norm_scratch_floats(), st);
        global_norm_finish(m->norm_coef, m->norm_scratch, clip, st);
        gpu_grad_scale_fold(m, grad_scale, clip);
        for (int t = 0; t < NUM_PARAM_TENSORS; t++) { /* each tensor's part inside this rank's shard */
            size_t lo = m->table[t].offset, hi = lo + m->table[t].numel;
            if (lo < lo_shard) lo = lo_shard;
            if (hi > hi_shard) hi = hi_shard;
            if (lo >= hi) continue;
            adamw_update(m->params + lo, NULL, m->m + (lo - lo_shard), m->v + (lo - lo_shard),
                         m->grads_shard + (lo - lo_shard), hi - lo, m->table[t].weight_decay ? weight_decay : 0.0f,
                         s, m->norm_coef + 1, st);
        }
        multigpu_allgather_f32(mg, m->params, m->params + lo_shard, m->shard, st);
        cast_to_floatX(m->params_x, m->params, m->num_parameters, st);
    } else {
        global_norm_clip(m->norm_coef, m->norm_scratch, m->grads, m->num_parameters, clip, st);
        gpu_grad_scale_fold(m, grad_scale, clip);
        AdamWTensor tensors[NUM_PARAM_TENSORS];
        for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
            tensors[t].offset = m->table[t].offset;
            tensors[t].size = m->table[t].numel;
            tensors[t].wd = m->table[t].weight_decay ? weight_decay : 0.0f;
        }
        adamw_update_tensors(m->params, m->params_x, m->m, m->v, m->grads, tensors, NUM_PARAM_TENSORS, s,
                             m->norm_coef + 1, st);
    }
    float norm;
    cudaCheck(cudaMemcpyAsync(&norm, m->norm_coef, sizeof(float), cudaMemcpyDeviceToHost, m->stream));
    cudaCheck(cudaStreamSynchronize(m->stream));
    return norm;
}

/* ---- checkpoints: the same file format as the CPU trainer (llmc/mamba2_model.h) ---- */

/* the whole AdamW moment array on the host: a copy, or (ZeRO-1) gathered from every rank's shard. Collective. */
static float* gather_moments(GPUModel* m, const float* shard_or_all) {
    size_t n = m->num_parameters;
    float* host = (float*)mallocCheck(n * sizeof(float));
    if (m->mg->zero_stage == 1) {
        size_t total = 0;
        float* full = (float*)gpu_alloc(m->padded * sizeof(float), &total);
        multigpu_allgather_f32(m->mg, full, shard_or_all, m->shard, m->stream);
        cudaCheck(cudaStreamSynchronize(m->stream));
        cudaCheck(cudaMemcpy(host, full, n * sizeof(float), cudaMemcpyDeviceToHost));
        cudaCheck(cudaFree(full));
    } else {
        cudaCheck(cudaMemcpy(host, shard_or_all, n * sizeof(float), cudaMemcpyDeviceToHost));
    }
    return host;
}

/* every rank calls this (ZeRO-1 gathers the moments); rank 0 writes the file */
static void gpu_save_checkpoint(GPUModel* m, const char* path, uint64_t state[CKPT_STATE_WORDS]) {
    size_t n = m->num_parameters;
    cudaCheck(cudaDeviceSynchronize());
    float* mm = m->m ? gather_moments(m, m->m) : NULL;
    float* vv = m->v ? gather_moments(m, m->v) : NULL;
    if (m->mg->rank == 0) {
        float* p = (float*)mallocCheck(n * sizeof(float));
        cudaCheck(cudaMemcpy(p, m->params, n * sizeof(float), cudaMemcpyDeviceToHost));
        state[CKPT_S_ADAM_T] = (uint64_t)m->adam_t;
        checkpoint_write(path, &m->config, state, p, mm, vv, n);
        free(p);
    }
    free(mm); free(vv);
    multigpu_barrier(m->mg, m->dev_scalar, m->stream); /* nobody reads the file before it exists */
}

/* builds the model from a checkpoint; with_optimizer: also the AdamW moments and step (resume) */
static void gpu_load_checkpoint(GPUModel* m, const char* path, CheckpointInfo* info, int with_optimizer,
                                MultiGPU* mg) {
    FILE* f = checkpoint_open(path, info);
    ParamSpec table[NUM_PARAM_TENSORS];
    size_t n = param_table_build(table, &info->config);
    float* p = (float*)mallocCheck(n * sizeof(float));
    freadCheck(p, sizeof(float), n, f);
    gpu_model_create(m, &info->config, p, mg);
    if (with_optimizer && info->has_optimizer) {
        float* mm = (float*)mallocCheck(n * sizeof(float));
        float* vv = (float*)mallocCheck(n * sizeof(float));
        freadCheck(mm, sizeof(float), n, f);
        freadCheck(vv, sizeof(float), n, f);
        gpu_model_alloc_optimizer(m, mm, vv);
        m->adam_t = (int)info->state[CKPT_S_ADAM_T];
        free(mm); free(vv);
    }
    free(p);
    fclose(f);
}

static void gpu_model_build(GPUModel* m, const Mamba2Config* c, uint64_t seed, MultiGPU* mg) {
    ParamSpec table[NUM_PARAM_TENSORS];
    size_t n = param_table_build(table, c);
    float* p = (float*)mallocCheck(n * sizeof(float));
    params_init(p, table, c, seed); /* the same seed on every rank: the same weights */
    gpu_model_create(m, c, p, mg);
    free(p);
}

/* a model with the weights of `path` (a mamba2.c checkpoint, or an HF / mamba_ssm model folder) and no optimizer state */
static void gpu_model_from_weights(GPUModel* m, const char* path, MultiGPU* mg) {
    Mamba2Config c;
    float* w = NULL;
    char err[1024];
    if (model_load_weights(path, &c, &w, err, sizeof err) != 0) die("%s", err);
    if (c.chunk_size < GPU_SSD_MIN_CHUNK) c.chunk_size = GPU_SSD_MIN_CHUNK;
    gpu_model_create(m, &c, w, mg);
    free(w);
}

/* the inference and profiling programs' model: the weights of `path`, or (allow_random) a model description given random weights,
   for timing. Returns 1 if the weights came from path, 0 if they are random. */
static int gpu_load_model(GPUModel* m, const char* path, int allow_random) {
    struct stat sb;
    if (stat(path, &sb) != 0 && allow_random) {
        Mamba2Config c;
        char err[1024];
        if (config_parse(&c, path, err, sizeof err) != 0)
            die("-e %s: neither a checkpoint file, a model folder, nor a model description (%s)", path, err);
        fprintf(stderr, "note: -e %s is a model description: RANDOM weights (for timing only)\n", path);
        if (c.chunk_size < GPU_SSD_MIN_CHUNK) c.chunk_size = GPU_SSD_MIN_CHUNK;
        gpu_model_build(m, &c, 1337, NULL);
        return 0;
    }
    gpu_model_from_weights(m, path, NULL);
    return 1;
}

#endif /* MAMBA2_MODEL_CUH */
