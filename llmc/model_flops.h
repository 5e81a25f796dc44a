/*
 * model_flops.h: training FLOPs per token of any block pattern (doc/hybrid.md), for MFU and the benchmark report.
 *
 * flops_per_token (llmc/mamba2_model.h) counts a pure Mamba-2 model. Here every block kind is counted, with the same
 * conventions: 6 x the weights each token multiplies by (forward 2, backward 4), plus the token-mixing products that
 * are not weights, forward FLOPs x 3:
 *   LM head (tied)   Vp D
 *   'M' block        in_proj d_in_proj D + out_proj D E, and the chunked SSD (flops_per_token's term per layer)
 *   'A' block        in_proj hd (Hq + 2 Hkv) D + out_proj D Hq hd, and the causal attention: per token and query
 *                    head, q.k over T/2 keys on average and p.v the same: 2 products x 2 FLOPs x hd x T/2 = 2 hd T
 *                    forward, so 6 Hq hd T for training (the model's FLOPs: the backward's extra dQ recomputation
 *                    that buys determinism, llmc/attention.cuh, is not counted, as FlashAttention's papers do not
 *                    count theirs)
 *   'F' block        fc1 2 Hm D + fc2 D Hm
 * Norms, RoPE, SwiGLU and the softmax are left out (elementwise, < 1%). With packed documents (-D) the attention does
 * less work than counted (it never looks across a document), so MFU with -D is a slight overestimate.
 * For a pure model the result is flops_per_token's to the last bit (same terms, same order).
 */
#ifndef MAMBA2_MODEL_FLOPS_H
#define MAMBA2_MODEL_FLOPS_H

#include "mamba2_model.h"

static inline double model_flops_per_token(const Mamba2Config* c, int seq_len) {
    double nM = config_count_kind(c, 'M'), nA = config_count_kind(c, 'A'), nF = config_count_kind(c, 'F');
    double D = c->d_model, E = c->d_inner;
    double matmul = (double)c->padded_vocab_size * D + nM * ((double)c->d_in_proj * D + D * E);
    double Q = c->chunk_size < seq_len ? c->chunk_size : seq_len;
    double G = c->ngroups, H = c->nheads, P = c->headdim, N = c->d_state;
    double macs_per_chunk = G * Q * Q * N / 2 + H * (Q * Q * P / 2 + 2 * Q * P * N);
    double flops = 6 * matmul + 3 * 2 * macs_per_chunk / Q * nM;
    if (nA > 0) {
        double hd = c->attn_head_dim, Hq = c->attn_heads;
        double qkv = c->attn_qkv_dim, ao = c->attn_out_dim;
        flops += nA * (6 * (qkv * D + D * ao) + 6 * Hq * hd * (double)seq_len);
    }
    if (nF > 0) flops += nF * 6 * (3 * (double)c->mlp_hidden * D);
    return flops;
}

#endif /* MAMBA2_MODEL_FLOPS_H */
