/*
 * attention_block.cuh: the attention block of a hybrid model on the GPU (doc/hybrid.md; the CPU reference is
 * train_mamba2.c's attention_block_forward / _backward). Included by llmc/model.cuh, next to the Mamba-2 block, as
 * one entry of its block-kind table.
 *
 * Block l (a pre-norm residual block like every other):
 *   x_l   = x_{l-1} + delta_{l-1};  u = RMSNorm(x_l) * w         (rmsnorm.cuh, the residual add fused in)
 *   qkv   = u @ W_in^T (+ b_in)                                  (matmul.cuh; linear_bias.cuh)
 *   q, k  rotated in place (RoPE, positions restarting at each document with -D)   (attention.cuh)
 *   att   = causal attention over the rotated qkv, lse saved      (attention.cuh: attention_forward)
 *   delta = att @ W_out^T (+ b_out)
 * Activations (model.cuh's LayerAct, one copy per attention block, or one shared with -r 2 / evaluation): u and its
 * rstd (every block), qkv (rotated), att, lse. The backward reverses the list; the attention's own backward
 * (attention_backward) recomputes the probabilities from lse and reduces dK, dV without atomics, the bias gradients
 * are fixed-order column sums (linear_bias.cuh): two runs give the same bits.
 */
#ifndef MAMBA2_ATTENTION_BLOCK_CUH
#define MAMBA2_ATTENTION_BLOCK_CUH

/* the attention kernels' description of this model's attention at the batch in flight */
static AttnDims attention_block_dims(const GPUModel* m) {
    const Mamba2Config* c = &m->config;
    AttnDims d;
    d.B = m->B;
    d.T = m->T;
    d.Hq = c->attn_heads;
    d.Hkv = c->attn_kv_heads;
    d.hd = c->attn_head_dim;
    d.qkv_stride = c->attn_qkv_dim;
    d.scale = (float)(1.0 / sqrt((double)c->attn_head_dim)); /* the CPU trainer's 1/sqrt(hd), rounded once */
    d.seq_idx = gpu_doc_index(m);
    return d;
}

/* the RoPE position of each position of the batch in flight: NULL (its index in the row) without documents */
static inline const int* attention_block_positions(const GPUModel* m) { return m->docs ? m->a.rope_pos : NULL; }

/*
 * With packed documents: each position's place in its document (flash_attn's varlen rotary, the CPU trainer's
 * doc_position), from the host document index seq_idx (B, T), uploaded to a->rope_pos for the forward and backward
 * of this batch. Called by gpu_forward_docs for models with attention blocks.
 */
static void attention_block_upload_positions(GPUModel* m, const int* seq_idx, int B, int T) {
    size_t BT = (size_t)B * T;
    int* pos = (int*)mallocCheck(BT * sizeof(int));
    for (size_t i = 0; i < BT; i++) {
        int t = (int)(i % (size_t)T);
        pos[i] = (t > 0 && seq_idx[i] == seq_idx[i - 1]) ? pos[i - 1] + 1 : 0;
    }
    /* from pageable memory the copy has left pos when the call returns, so it can be freed now */
    cudaCheck(cudaMemcpyAsync(m->a.rope_pos, pos, BT * sizeof(int), cudaMemcpyHostToDevice, m->stream));
    free(pos);
}

/* from u (the pre-norm output) to the attention output and lse: in_proj (+ bias), RoPE, attention */
static void attention_block_mix(GPUModel* m, int l) {
    const Mamba2Config* c = &m->config;
    cudaStream_t st = m->stream;
    int BT = m->B * m->T, D = c->d_model, QKV = c->attn_qkv_dim;
    floatX* qkv = act_x(m, ACT_QKV, l);
    matmul_forward(qkv, act_x(m, ACT_U, l), PX(m, P_ATTN_IN_W, l), BT, D, QKV, st);
    if (c->qkv_bias) bias_forward(qkv, PF(m, P_ATTN_IN_B, l), BT, QKV, st);
    AttnDims d = attention_block_dims(m);
    attention_rope_forward(qkv, &d, c->rotary_dim, (float)c->rotary_base, attention_block_positions(m), st);
    attention_forward(act_x(m, ACT_ATT, l), act_f(m, ACT_ATT_LSE, l), qkv, &d, st);
}

static void attention_block_forward(GPUModel* m, int l) {
    const Mamba2Config* c = &m->config;
    cudaStream_t st = m->stream;
    int BT = m->B * m->T, D = c->d_model;
    block_prenorm_forward(m, l, 0);
    attention_block_mix(m, l);
    floatX* delta = gpu_delta_out(m, l);
    matmul_forward(delta, act_x(m, ACT_ATT, l), PX(m, P_ATTN_OUT_W, l), BT, c->attn_out_dim, D, st);
    if (c->out_bias) bias_forward(delta, PF(m, P_ATTN_OUT_B, l), BT, D, st);
}

/* -r 2: the block's forward again from the stored x_l (no delta: the forward formed x_l already), up to what its
   backward reads; the same kernels on the same input, so the same bits as the forward */
static void attention_block_recompute(GPUModel* m, int l) {
    block_prenorm_forward(m, l, 1);
    attention_block_mix(m, l);
}

/* g->dres_x holds d(delta); parameter gradients accumulate; ends with the pre-norm's backward (model.cuh's contract) */
static void attention_block_backward(GPUModel* m, int l) {
    const Mamba2Config* c = &m->config;
    GPUGradActivations* g = &m->g;
    cudaStream_t st = m->stream;
    int BT = m->B * m->T, D = c->d_model, QKV = c->attn_qkv_dim, AO = c->attn_out_dim;
    if (m->recompute == 2 && l < c->n_layer - 1) /* the top block's activations are still in the shared buffers */
        attention_block_recompute(m, l);
    floatX* qkv = act_x(m, ACT_QKV, l);
    floatX* att = act_x(m, ACT_ATT, l);
    floatX* u = act_x(m, ACT_U, l);
    /* out_proj */
    matmul_backward_input(g->dmix, g->dres_x, PX(m, P_ATTN_OUT_W, l), BT, AO, D, 0, st);
    matmul_backward_weight(GF(m, P_ATTN_OUT_W, l), g->dres_x, att, BT, AO, D, st);
    if (c->out_bias) bias_backward(GF(m, P_ATTN_OUT_B, l), g->scratch, g->dres_x, BT, D, st);
    /* attention, then the rotation back (d of the unrotated q, k) */
    AttnDims d = attention_block_dims(m);
    attention_backward(g->dqkv, g->dsum, g->dmix, att, act_f(m, ACT_ATT_LSE, l), qkv, &d, st);
    attention_rope_backward(g->dqkv, &d, c->rotary_dim, (float)c->rotary_base, attention_block_positions(m), st);
    /* in_proj */
    if (c->qkv_bias) bias_backward(GF(m, P_ATTN_IN_B, l), g->scratch, g->dqkv, BT, QKV, st);
    matmul_backward_input(g->du, g->dqkv, PX(m, P_ATTN_IN_W, l), BT, D, QKV, 0, st);
    matmul_backward_weight(GF(m, P_ATTN_IN_W, l), g->dqkv, u, BT, D, QKV, st);
    rmsnorm_backward_lowp(g->dresidual, l > 0 ? g->dres_x : NULL, GF(m, P_NORM_W, l), g->scratch, g->du,
                          gpu_residual(m, l), PF(m, P_NORM_W, l), act_f(m, ACT_RSTD, l), BT, D, st);
}

#endif /* MAMBA2_ATTENTION_BLOCK_CUH */
