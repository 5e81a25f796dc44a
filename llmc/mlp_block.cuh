/*
 * mlp_block.cuh: the gated-MLP (SwiGLU) block of a hybrid model on the GPU (doc/hybrid.md; the CPU reference is
 * train_mamba2.c's mlp_block_forward / _backward). Included by llmc/model.cuh as one entry of its block-kind table.
 *
 * Block l:
 *   x_l   = x_{l-1} + delta_{l-1};  u = RMSNorm(x_l) * w         (rmsnorm.cuh, the residual add fused in)
 *   h     = u @ W_fc1^T = [y | gate]  (2 Hm)                      (matmul.cuh)
 *   act   = y * silu(gate)                                        (swiglu.cuh)
 *   delta = act @ W_fc2^T                                         (matmul.cuh)
 * No biases. Activations (model.cuh's LayerAct): u and its rstd (every block), h, act; -r 1 keeps one block's act
 * and makes it again from h in the backward (an elementwise pass: the forward's bits).
 */
#ifndef MAMBA2_MLP_BLOCK_CUH
#define MAMBA2_MLP_BLOCK_CUH

static void mlp_block_mix(GPUModel* m, int l) {
    const Mamba2Config* c = &m->config;
    int BT = m->B * m->T, Hm = c->mlp_hidden;
    floatX* h = act_x(m, ACT_MLP_H, l);
    matmul_forward(h, act_x(m, ACT_U, l), PX(m, P_MLP_FC1_W, l), BT, c->d_model, 2 * Hm, m->stream);
    swiglu_forward(act_x(m, ACT_MLP_ACT, l), h, BT, Hm, m->stream);
}

static void mlp_block_forward(GPUModel* m, int l) {
    const Mamba2Config* c = &m->config;
    int BT = m->B * m->T, D = c->d_model;
    block_prenorm_forward(m, l, 0);
    mlp_block_mix(m, l);
    matmul_forward(gpu_delta_out(m, l), act_x(m, ACT_MLP_ACT, l), PX(m, P_MLP_FC2_W, l), BT, c->mlp_hidden, D,
                   m->stream);
}

/* g->dres_x holds d(delta); parameter gradients accumulate; ends with the pre-norm's backward */
static void mlp_block_backward(GPUModel* m, int l) {
    const Mamba2Config* c = &m->config;
    GPUGradActivations* g = &m->g;
    cudaStream_t st = m->stream;
    int BT = m->B * m->T, D = c->d_model, Hm = c->mlp_hidden;
    float* x = gpu_residual(m, l);  /* -r 2: rebuilt from its checkpoint before the recompute below reads it */
    floatX* h = act_x(m, ACT_MLP_H, l);
    floatX* act = act_x(m, ACT_MLP_ACT, l);
    floatX* u = act_x(m, ACT_U, l);
    if (m->recompute == 2 && l < c->n_layer - 1) { /* -r 2: the block again from the stored x_l (no delta) */
        block_prenorm_forward(m, l, 1);
        mlp_block_mix(m, l);
    } else if (m->recompute == 1) { /* -r 1: act again from h, which every block keeps */
        swiglu_forward(act, h, BT, Hm, st);
    }
    matmul_backward_input(g->dmix, g->dres_x, PX(m, P_MLP_FC2_W, l), BT, Hm, D, 0, st);
    matmul_backward_weight(GF(m, P_MLP_FC2_W, l), g->dres_x, act, BT, Hm, D, st);
    swiglu_backward(g->dqkv, g->dmix, h, BT, Hm, st); /* g->dqkv: d h (BT, 2 Hm) */
    matmul_backward_input(g->du, g->dqkv, PX(m, P_MLP_FC1_W, l), BT, D, 2 * Hm, 0, st);
    matmul_backward_weight(GF(m, P_MLP_FC1_W, l), g->dqkv, u, BT, D, 2 * Hm, st);
    rmsnorm_backward_lowp(g->dresidual, l > 0 ? g->dres_x : NULL, GF(m, P_NORM_W, l), g->scratch, g->du, x,
                          PF(m, P_NORM_W, l), act_f(m, ACT_RSTD, l), BT, D, st);
}

#endif /* MAMBA2_MLP_BLOCK_CUH */
