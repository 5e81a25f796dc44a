/*
 * decode.cu: the decode-step versions that are not the default (dev/cuda/decode_versions.cuh, decode_decoder.cuh,
 * namespace decode_lab: llmc/generate.cuh and generate_mamba2.cu's decoder as they were at commit 6b385b7, with
 * their knobs), checked against the default path of llmc/decode.cuh + llmc/decoder.cuh, and timed.
 *
 * Build: nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I. --expt-relaxed-constexpr \
 *            -o dev/cuda/decode_bin dev/cuda/decode.cu -lcublas -lcublasLt        (add -DENABLE_FP32 for fp32)
 *
 *   ./dev/cuda/decode_bin                 the checks, on a small random model (ngroups = 2, chunk 16, vocab 257):
 *     0. the lab copy with every knob at its default == the llmc/ path, bitwise (logits, greedy picks and SSM
 *        states, 9 steps, graph and plain), at S = 1, 4 (fused), 12, 16 (tensor cores in bf16 builds; float and
 *        floatX state), 20 (cuBLASLt): so a version checked against the lab's v2 is checked against the default.
 *     1-3 on the persistent step (-V 3, S <= 8): prefill + steps == the full forward, graph == plain bitwise (with
 *        and without launch overlap), a batch of 4 == each alone (greedy and sampled).
 *     5. the persistent step (v3) against the v2 step: same greedy tokens, logits and states within bf16 rounding
 *        (its norms sum in another order), S = 1 and 4, 1 and 2 blocks an SM (-W), a floatX state; it must have run.
 *     6. the v4 state step (-U 4/5: a head's state slice by one bulk copy into shared memory) == the v2 kernel,
 *        logits and states bitwise, float (S = 12) and floatX (S = 16) state.
 *     M. the forced projections (-M 0: cuBLASLt at S = 12 in bf16 builds; -M 1: tensor cores at S = 20):
 *        prefill + steps == the full forward, graph == plain.
 *   ./dev/cuda/decode_bin -e 130m -I IDS -b B -n N -t 0 -r R [-q] [-G 0|1] [-T 1] [-L 0|1] [-S auto|fp32|bf16]
 *                         [-V 2|3] [-W 1|2] [-M -1|0|1] [-U 2|4|5] [-C N]
 *                         the benchmark: generate_mamba2cu's generation and timing line with the lab's knobs (-h);
 *                         -T 1 then times each kernel of the step alone. dev/bench_inference.sh runs it.
 */
#include "llmc/model.cuh"
#include "llmc/vec128.cuh"
#include "llmc/infer_common.h"

#include <string>
#include <vector>
#include <algorithm>

/* the default path in a namespace of its own, as the lab copy is in decode_lab: its functions share names and
 * signatures with the copy's, and argument-dependent lookup (on __nv_bfloat16, Mamba2Config, ...) would find a
 * global one from inside decode_lab and make the call ambiguous. Everything these headers include is included
 * above, so only their own text lands in the namespace. */
namespace llmc_default {
#include "llmc/decode.cuh"
#include "llmc/decoder.cuh"
} /* namespace llmc_default */
/* the constants the checks need, read before decode_versions.cuh's #defines of the same names hide them */
constexpr int LLMC_LOWP_MIN_S = llmc_default::GEN_LOWP_MIN_S, LLMC_MMA_AUTO_MAX_S = llmc_default::GEN_MMA_AUTO_MAX_S;
constexpr int LLMC_SMALL_S = llmc_default::GEN_SMALL_S, LLMC_CHECK_EVERY = llmc_default::GEN_CHECK_EVERY;

#include "dev/cuda/decode_versions.cuh"
#include "dev/cuda/decode_decoder.cuh"

/* the lab copy's #defines are the llmc/ constants (the lab at its defaults must be the llmc/ path) */
static_assert(LLMC_LOWP_MIN_S == GEN_LOWP_MIN_S && LLMC_MMA_AUTO_MAX_S == GEN_MMA_AUTO_MAX_S &&
                  LLMC_SMALL_S == GEN_SMALL_S && LLMC_CHECK_EVERY == GEN_CHECK_EVERY,
              "dev/cuda/decode_versions.cuh and llmc/decode.cuh disagree on a constant");

/* ================================================================================================================
 * the checks
 * ================================================================================================================ */

static int g_pass = 0, g_fail = 0;
static void check(int ok, const char* what, double value, double tol) {
    printf("%s %-72s %.3e (tol %.1e)\n", ok ? "PASS" : "FAIL", what, value, tol);
    if (ok) g_pass++; else g_fail++;
}

#if defined(ENABLE_FP32)
#define TOL_LOGITS 2e-5
#else
#define TOL_LOGITS 3e-2
#endif

/* max |a - b| over n, relative to max |b| */
static double rel_err(const float* a, const float* b, size_t n) {
    double diff = 0, mag = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > diff || d != d) diff = d != d ? INFINITY : d;
        if (fabs((double)b[i]) > mag) mag = fabs((double)b[i]);
    }
    return diff / (mag > 0 ? mag : 1);
}

/* test_generate.cu's checks 1-3, 5 and 6 as they were at commit 6b385b7, on the lab decoder */
namespace decode_lab {

static void set_tokens(Decoder* d, GPUModel* m, const int* host) {
    cudaCheck(cudaMemcpyAsync(d->tokens, host, d->S * sizeof(int), cudaMemcpyHostToDevice, m->stream));
}

static std::vector<float> copy_logits_rows(GPUModel* m, const floatX* dev, size_t rows) {
    size_t n = rows * m->config.padded_vocab_size;
    std::vector<floatX> x(n);
    std::vector<float> f(n);
    cudaCheck(cudaStreamSynchronize(m->stream));
    cudaCheck(cudaMemcpy(x.data(), dev, n * sizeof(floatX), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) f[i] = toF(x[i]);
    return f;
}

/* logits of the two decoders' last step that are not bitwise equal */
static size_t logits_differing(GPUModel* m, const Decoder* a, const Decoder* b) {
    std::vector<float> la = copy_logits_rows(m, a->logits, a->S), lb = copy_logits_rows(m, b->logits, b->S);
    size_t diff = 0;
    for (size_t k = 0; k < la.size(); k++) diff += memcmp(&la[k], &lb[k], sizeof(float)) != 0;
    return diff;
}

/* SSM state elements of the two decoders that are not bitwise equal; *nonzero: a's elements that are not all zero
 * bytes (a comparison of two zeroed states would pass without testing anything) */
static size_t states_differing(const Mamba2Config* c, const Decoder* a, const Decoder* b, size_t* nonzero) {
    size_t ns = dec_state_elems(c, a->S), es = a->state_lowp ? sizeof(floatX) : sizeof(float);
    std::vector<char> sa(ns * es), sb(ns * es);
    cudaCheck(cudaMemcpy(sa.data(), a->state, ns * es, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(sb.data(), b->state, ns * es, cudaMemcpyDeviceToHost));
    size_t sdiff = 0;
    *nonzero = 0;
    for (size_t k = 0; k < ns; k++) {
        sdiff += memcmp(&sa[k * es], &sb[k * es], es) != 0;
        for (size_t j = 0; j < es; j++) if (sa[k * es + j] != 0) { (*nonzero)++; break; }
    }
    return sdiff;
}

/* 1: prefill p tokens, step the rest; every position's logits against the full forward's */
static void test_prefill_then_step(GPUModel* m, const std::vector<float>& full, const int* tokens, int T, int S) {
    int Vp = m->config.padded_vocab_size;
    Decoder d;
    decoder_create(&d, m, S, T, 1);
    const int lens[] = {1, 7, 16, 21};
    double worst = 0, shifted = INFINITY;
    for (int li = 0; li < 4; li++) {
        int p = lens[li];
        decoder_reset(&d, m);
        for (int s = 0; s < S; s++) decoder_prefill(&d, m, s, tokens, p);
        for (int t = p - 1; t < T; t++) {
            if (t >= p) {
                std::vector<int> in(S, tokens[t]);
                set_tokens(&d, m, in.data());
                decoder_step(&d, m, 0, 0);
            }
            const float* lh = decoder_logits_host(&d, m);
            std::vector<float> got(lh, lh + (size_t)S * Vp);
            for (int s = 0; s < S; s++) {
                double e = rel_err(&got[(size_t)s * Vp], &full[(size_t)t * Vp], Vp);
                if (e > worst || e != e) worst = e != e ? INFINITY : e;
                if (t > 0) {
                    double sh = rel_err(&got[(size_t)s * Vp], &full[(size_t)(t - 1) * Vp], Vp);
                    if (sh < shifted) shifted = sh;
                }
            }
        }
    }
    char what[160];
    snprintf(what, sizeof what, "prefill(1,7,16,21)+step == full forward, every position, S=%d (%s, %s state)", S,
             d.persist ? "persistent" : d.small ? "fused" : d.mma ? "tensor-core" : "cuBLASLt",
             d.state_lowp ? PRECISION_NAME : "fp32");
    check(worst <= TOL_LOGITS, what, worst, TOL_LOGITS);
    snprintf(what, sizeof what, "  ... and the comparison fails against the previous position, S=%d", S);
    check(shifted > 10 * TOL_LOGITS, what, shifted, 10 * TOL_LOGITS);
    decoder_free(&d);
}

/* reset two decoders and prefill each sequence s of both with the same prompt: len0 + step * (s % 16) tokens from
 * s % 16 on (the modulo keeps every prompt inside the 40 test tokens for any S) */
static void prefill_pair(Decoder* a, Decoder* b, GPUModel* m, const int* tokens, int S, int len0, int step) {
    decoder_reset(a, m);
    decoder_reset(b, m);
    for (int s = 0; s < S; s++) {
        decoder_prefill(a, m, s, tokens + s % 16, len0 + step * (s % 16));
        decoder_prefill(b, m, s, tokens + s % 16, len0 + step * (s % 16));
    }
}

/* 2: graph replay == plain launches, bitwise; plain_pdl 0: the plain side without launch overlap */
static void test_graph_bitwise(GPUModel* m, const int* tokens, int S, int plain_pdl) {
    const Mamba2Config* c = &m->config;
    Decoder a, b;
    decoder_create(&a, m, S, 30, 1);
    decoder_create(&b, m, S, 30, 1);
    prefill_pair(&a, &b, m, tokens, S, 5, 1);
    size_t diff = 0;
    for (int i = 0; i < 9; i++) { /* odd and even parities, several replays of each graph */
        std::vector<int> in(S);
        for (int s = 0; s < S; s++) in[s] = tokens[(i * 7 + s) % 40];
        set_tokens(&a, m, in.data());
        set_tokens(&b, m, in.data());
        g_gen_pdl = plain_pdl;
        decoder_step(&a, m, 0, 0);
        g_gen_pdl = 1;
        decoder_step(&b, m, 1, 0);
        diff += logits_differing(m, &a, &b);
    }
    size_t ns = dec_state_elems(c, S), nonzero, sdiff = states_differing(c, &a, &b, &nonzero);
    char what[160];
    snprintf(what, sizeof what, "graph step == plain step%s bitwise, 9 steps, S=%d (%s, %s state): differing",
             plain_pdl ? "" : " without launch overlap", S,
             a.persist ? "persistent" : a.small ? "fused" : a.mma ? "tensor-core" : "cuBLASLt",
             a.state_lowp ? PRECISION_NAME : "fp32");
    check(diff == 0 && sdiff == 0 && nonzero > ns / 2, what, (double)(diff + sdiff), 0);
    decoder_free(&a);
    decoder_free(&b);
}

/* 3: a batch of 4 == each alone (greedy, or sampling at temperature 1 with a fixed seed) */
static void test_batch_equals_alone(GPUModel* m, const int* tokens, float temperature) {
    const int lens[4] = {3, 9, 17, 30};
    int* prompts[4];
    std::vector<std::vector<int>> p(4);
    for (int s = 0; s < 4; s++) { p[s].assign(tokens + s, tokens + s + lens[s]); prompts[s] = p[s].data(); }
    const int n = 24;
    GenOptions o = {temperature, 1.0f, 0, n, -1, 1, 1};
    const char* how = temperature > 0 ? "sampled (t=1, seed 1)" : "greedy";
    const char* path = g_gen_version == 3 ? "persistent" : "v2";
    std::vector<std::vector<int>> outb(4, std::vector<int>(n)), outa(4, std::vector<int>(n));
    std::vector<int*> pb(4), pa(4);
    for (int s = 0; s < 4; s++) { pb[s] = outb[s].data(); pa[s] = outa[s].data(); }
    int nb[4], na[4];
    Decoder d;
    decoder_create(&d, m, 4, 30, n);
    generate_batch(&d, m, prompts, lens, &o, pb.data(), nb);
    decoder_free(&d);
    int mismatches = 0, distinct = 0, seen[512] = {0};
    for (int s = 0; s < 4; s++) {
        Decoder one;
        decoder_create(&one, m, 1, 30, n);
        GenOptions oa = o;
        oa.seed = o.seed + s; /* sequence s of a batch samples with seed + s */
        generate_batch(&one, m, &prompts[s], &lens[s], &oa, &pa[s], &na[s]);
        decoder_free(&one);
        if (na[s] != n || nb[s] != n) mismatches++;
        for (int i = 0; i < n; i++) mismatches += outa[s][i] != outb[s][i];
        for (int i = 0; i < nb[s] && i < n; i++) seen[outb[s][i] & 511] = 1;
    }
    for (int i = 0; i < 512; i++) distinct += seen[i];
    char what[160];
    snprintf(what, sizeof what, "%s batch of 4 prompts (3,9,17,30 tokens) == each alone, 24 tokens (%s): mismatches",
             how, path);
    check(mismatches == 0, what, mismatches, 0);
    snprintf(what, sizeof what, "  ... and the batch's tokens vary (else the check above cannot fail): >= 3 ids");
    check(distinct >= 3, what, distinct, 3);
    if (temperature > 0) return;
    /* the device's pick == the host's argmax of the same step's logits, fused path (S = 4) and cuBLASLt (S = 12) */
    for (int S = 4; S <= 12; S += 8) {
        Decoder e;
        decoder_create(&e, m, S, 30, 8);
        decoder_reset(&e, m);
        for (int s = 0; s < S; s++) decoder_prefill(&e, m, s, tokens + s, 3 + s);
        int wrong = 0;
        for (int i = 0; i < 6; i++) {
            std::vector<int> in(S);
            for (int s = 0; s < S; s++) in[s] = tokens[(i * 5 + s) % 40];
            set_tokens(&e, m, in.data());
            decoder_step(&e, m, i % 2, 1); /* graph and plain */
            std::vector<float> lg = copy_logits_rows(m, e.logits, S);
            std::vector<int> got(S);
            cudaCheck(cudaMemcpy(got.data(), e.tokens, S * sizeof(int), cudaMemcpyDeviceToHost));
            int V = m->config.vocab_size, Vp = m->config.padded_vocab_size;
            for (int s = 0; s < S; s++) {
                int best = 0;
                for (int v = 1; v < V; v++) if (lg[(size_t)s * Vp + v] > lg[(size_t)s * Vp + best]) best = v;
                wrong += got[s] != best;
            }
        }
        snprintf(what, sizeof what, "greedy pick on the device == host argmax of the logits, 6 steps, S=%d (%s)", S,
                 e.small ? "LM head partials" : "argmax kernel");
        check(wrong == 0, what, wrong, 0);
        decoder_free(&e);
    }
    /* the same batch without graphs */
    o.use_graph = 0;
    std::vector<std::vector<int>> outc(4, std::vector<int>(n));
    std::vector<int*> pc(4);
    for (int s = 0; s < 4; s++) pc[s] = outc[s].data();
    int nc[4];
    decoder_create(&d, m, 4, 30, n);
    generate_batch(&d, m, prompts, lens, &o, pc.data(), nc);
    decoder_free(&d);
    int mm = 0;
    for (int s = 0; s < 4; s++) for (int i = 0; i < n; i++) mm += outc[s][i] != outb[s][i];
    snprintf(what, sizeof what, "greedy batch of 4: graph == no graph (%s): mismatches", path);
    check(mm == 0, what, mm, 0);
}

/* 5: the persistent step against the v2 step: the same prefill, then 9 steps of the same tokens */
static void test_persist_vs_v2(GPUModel* m, const int* tokens, int S, int blocks, int state_mode) {
    const Mamba2Config* c = &m->config;
    int saved_mode = g_gen_state_mode, saved_blocks = g_gen_p_blocks;
    g_gen_state_mode = state_mode;
    g_gen_p_blocks = blocks;
    Decoder a, b;
    g_gen_version = 3;
    decoder_create(&a, m, S, 30, 1);
    g_gen_version = 2;
    decoder_create(&b, m, S, 30, 1);
    g_gen_version = 3;
    prefill_pair(&a, &b, m, tokens, S, 5, 3);
    int V = c->vocab_size, Vp = c->padded_vocab_size, wrong = 0;
    double worst = 0;
    for (int i = 0; i < 9; i++) {
        std::vector<int> in(S);
        for (int s = 0; s < S; s++) in[s] = tokens[(i * 7 + s) % 40];
        set_tokens(&a, m, in.data());
        set_tokens(&b, m, in.data());
        decoder_step(&a, m, i % 2, 1); /* graph and plain, with the greedy pick */
        decoder_step(&b, m, i % 2, 1);
        std::vector<float> la = copy_logits_rows(m, a.logits, S), lb = copy_logits_rows(m, b.logits, S);
        std::vector<int> ta(S), tb(S);
        cudaCheck(cudaMemcpy(ta.data(), a.tokens, S * sizeof(int), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(tb.data(), b.tokens, S * sizeof(int), cudaMemcpyDeviceToHost));
        for (int s = 0; s < S; s++) {
            double e = rel_err(&la[(size_t)s * Vp], &lb[(size_t)s * Vp], V);
            if (e > worst || e != e) worst = e != e ? INFINITY : e;
            wrong += ta[s] != tb[s];
        }
    }
    size_t ns = dec_state_elems(c, S);
    std::vector<float> sa(ns), sb(ns);
    if (a.state_lowp) {
        std::vector<floatX> xa(ns), xb(ns);
        cudaCheck(cudaMemcpy(xa.data(), a.state, ns * sizeof(floatX), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(xb.data(), b.state, ns * sizeof(floatX), cudaMemcpyDeviceToHost));
        for (size_t k = 0; k < ns; k++) { sa[k] = toF(xa[k]); sb[k] = toF(xb[k]); }
    } else {
        cudaCheck(cudaMemcpy(sa.data(), a.state, ns * sizeof(float), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(sb.data(), b.state, ns * sizeof(float), cudaMemcpyDeviceToHost));
    }
    double se = rel_err(sa.data(), sb.data(), ns);
    char what[200];
    snprintf(what, sizeof what, "persistent step ran (S=%d, %d block%s/SM, %s state)", S, blocks, blocks > 1 ? "s" : "",
             a.state_lowp ? PRECISION_NAME : "fp32");
    check(a.persist == 1 && b.persist == 0, what, a.persist, 1);
    snprintf(what, sizeof what, "  persistent == v2 step, 9 steps: logits rel err, S=%d", S);
    check(worst <= TOL_LOGITS, what, worst, TOL_LOGITS);
    snprintf(what, sizeof what, "  persistent == v2 step, 9 steps: SSM states rel err, S=%d", S);
    check(se <= TOL_LOGITS, what, se, TOL_LOGITS);
    snprintf(what, sizeof what, "  persistent == v2 step, 9 steps: greedy picks that differ, S=%d", S);
    check(wrong == 0, what, wrong, 0);
    decoder_free(&a);
    decoder_free(&b);
    g_gen_state_mode = saved_mode;
    g_gen_p_blocks = saved_blocks;
}

/* 6: the v4 state step (head slice by bulk copy into shared memory) against the v2 kernel, 9 steps (graph and
 * plain): the same arithmetic in the same order, so logits and states must be bitwise equal */
static void test_state_v4_vs_v2(GPUModel* m, const int* tokens, int S) {
    const Mamba2Config* c = &m->config;
    Decoder a, b;
    decoder_create(&a, m, S, 30, 1);
    decoder_create(&b, m, S, 30, 1);
    prefill_pair(&a, &b, m, tokens, S, 4, 1);
    int es = a.state_lowp ? (int)sizeof(floatX) : (int)sizeof(float), epv = 16 / es, tpr = 1;
    while (tpr * epv < c->d_state) tpr *= 2;
    size_t smem = a.state_lowp ? gen_state_step_smem<floatX>(c->headdim, c->d_state, tpr)
                               : gen_state_step_smem<float>(c->headdim, c->d_state, tpr);
    size_t diff = 0;
    for (int i = 0; i < 9; i++) {
        std::vector<int> in(S);
        for (int s = 0; s < S; s++) in[s] = tokens[(i * 3 + s) % 40];
        set_tokens(&a, m, in.data());
        set_tokens(&b, m, in.data());
        int saved_v = g_gen_state_v;
        g_gen_state_v = 4 + i % 2; /* with and without the early launch of the next kernel */
        decoder_step(&a, m, i % 2, 0);
        g_gen_state_v = 2;
        decoder_step(&b, m, i % 2, 0);
        g_gen_state_v = saved_v;
        diff += logits_differing(m, &a, &b);
    }
    size_t ns = dec_state_elems(c, S), nonzero, sdiff = states_differing(c, &a, &b, &nonzero);
    char what[200];
    snprintf(what, sizeof what, "v4 state step applies (S=%d, %s state): shared-memory bytes", S,
             a.state_lowp ? PRECISION_NAME : "fp32");
    check(!a.small && smem > 0, what, (double)smem, 1);
    snprintf(what, sizeof what, "  v4 state step == v2 kernel bitwise, 9 steps, S=%d: logits + states differing", S);
    check(diff == 0 && sdiff == 0 && nonzero > ns / 2, what, (double)(diff + sdiff), 0);
    decoder_free(&a);
    decoder_free(&b);
}

} /* namespace decode_lab */

/* 0: the lab decoder with its knobs at their defaults against the llmc/ decoder: the same prompts, then 9 steps of
 * the same tokens (graph and plain, with the greedy pick); logits, picks and SSM states bitwise */
static void check_lab_default_is_llmc(GPUModel* m, const int* tokens, int S) {
    const Mamba2Config* c = &m->config;
    llmc_default::Decoder a;
    decode_lab::Decoder b;
    llmc_default::decoder_create(&a, m, S, 30, 10, NULL);
    decode_lab::decoder_create(&b, m, S, 30, 10);
    llmc_default::decoder_reset(&a, m);
    decode_lab::decoder_reset(&b, m);
    for (int s = 0; s < S; s++) {
        llmc_default::decoder_prefill(&a, m, s, tokens + s, 4 + 2 * s % 17);
        decode_lab::decoder_prefill(&b, m, s, tokens + s, 4 + 2 * s % 17);
    }
    size_t diff = 0;
    int wrong = 0;
    for (int i = 0; i < 9; i++) {
        std::vector<int> in(S);
        for (int s = 0; s < S; s++) in[s] = tokens[(i * 7 + s) % 40];
        cudaCheck(cudaMemcpy(a.tokens, in.data(), S * sizeof(int), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(b.tokens, in.data(), S * sizeof(int), cudaMemcpyHostToDevice));
        llmc_default::decoder_step(&a, m, i % 2, 1);
        decode_lab::decoder_step(&b, m, i % 2, 1);
        std::vector<float> la = decode_lab::copy_logits_rows(m, a.logits, S), lb = decode_lab::copy_logits_rows(m, b.logits, S);
        for (size_t k = 0; k < la.size(); k++) diff += memcmp(&la[k], &lb[k], sizeof(float)) != 0;
        std::vector<int> ta(S), tb(S);
        cudaCheck(cudaMemcpy(ta.data(), a.tokens, S * sizeof(int), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(tb.data(), b.tokens, S * sizeof(int), cudaMemcpyDeviceToHost));
        for (int s = 0; s < S; s++) wrong += ta[s] != tb[s];
    }
    size_t ns = llmc_default::dec_state_elems(c, S), es = a.state_lowp ? sizeof(floatX) : sizeof(float), sdiff = 0, nonzero = 0;
    std::vector<char> sa(ns * es), sb(ns * es);
    cudaCheck(cudaMemcpy(sa.data(), a.state, ns * es, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(sb.data(), b.state, ns * es, cudaMemcpyDeviceToHost));
    for (size_t k = 0; k < ns; k++) {
        sdiff += memcmp(&sa[k * es], &sb[k * es], es) != 0;
        for (size_t j = 0; j < es; j++) if (sa[k * es + j] != 0) { nonzero++; break; }
    }
    char what[200];
    snprintf(what, sizeof what, "lab defaults == llmc/ path bitwise, 9 steps, S=%d (%s, %s state): differing", S,
             a.small ? "fused" : a.mma ? "tensor-core" : "cuBLASLt", a.state_lowp ? PRECISION_NAME : "fp32");
    check(a.small == b.small && a.mma == b.mma && a.state_lowp == b.state_lowp && b.persist == 0 && diff == 0 &&
              wrong == 0 && sdiff == 0 && nonzero > ns / 2,
          what, (double)(diff + wrong + sdiff), 0);
    llmc_default::decoder_free(&a);
    decode_lab::decoder_free(&b);
}

static int run_checks(void) {
    using namespace decode_lab; /* the knobs: g_gen_version, g_gen_mma */
    printf("dev/cuda/decode.cu checks (%s)\n", PRECISION_NAME);
    Mamba2Config c;
    char err[256];
    if (config_parse(&c, "d_model=64,n_layer=2,d_state=16,headdim=16,ngroups=2,vocab=257,chunk=16", err,
                     sizeof err) != 0)
        die("%s", err);
    ParamSpec table[NUM_PARAM_TENSORS];
    size_t np = param_table_build(table, &c);
    std::vector<float> params(np);
    params_init(params.data(), table, &c, 42);
    for (size_t i = 0; i < table[P_WTE].numel; i++) params[table[P_WTE].offset + i] *= 25.0f; /* as test_generate */
    const int T = 40;
    int tokens[T];
    Rng rng;
    rng_seed(&rng, 7);
    for (int i = 0; i < T; i++) tokens[i] = (int)(rng_u64(&rng) % 257);
    GPUModel mA;
    gpu_model_create(&mA, &c, params.data(), NULL);
    gpu_forward(&mA, tokens, NULL, 1, T, 0.0f);
    std::vector<float> full = copy_logits_rows(&mA, mA.a.logits, T);

    /* 0 */
    const int sizes[] = {1, 4, 12, LLMC_LOWP_MIN_S, LLMC_MMA_AUTO_MAX_S + 4};
    for (int S : sizes) check_lab_default_is_llmc(&mA, tokens, S);
    /* 1-2 and 5 on the persistent step */
    g_gen_version = 3;
    test_prefill_then_step(&mA, full, tokens, T, 1);
    test_prefill_then_step(&mA, full, tokens, T, 4);
    test_graph_bitwise(&mA, tokens, 4, 1);
    test_graph_bitwise(&mA, tokens, 1, 0);
    test_graph_bitwise(&mA, tokens, 4, 0);
    test_persist_vs_v2(&mA, tokens, 1, 1, -1);
    test_persist_vs_v2(&mA, tokens, 4, 1, -1);
    test_persist_vs_v2(&mA, tokens, 4, 2, -1);
    if (sizeof(floatX) == 2) test_persist_vs_v2(&mA, tokens, 4, 1, 1);
    g_gen_version = 2;
    /* 6 */
    test_state_v4_vs_v2(&mA, tokens, 12);             /* float state */
    test_state_v4_vs_v2(&mA, tokens, GEN_LOWP_MIN_S); /* floatX state */
    /* M: the projections forced either way */
    if (sizeof(floatX) == 2) {
        g_gen_mma = 0;
        test_prefill_then_step(&mA, full, tokens, T, 12);
        test_graph_bitwise(&mA, tokens, 12, 1);
        g_gen_mma = 1;
        test_prefill_then_step(&mA, full, tokens, T, LLMC_MMA_AUTO_MAX_S + 4);
        test_graph_bitwise(&mA, tokens, LLMC_MMA_AUTO_MAX_S + 4, 1);
        g_gen_mma = -1;
    }
    printf("     (launch overlap %s on this GPU)\n", gen_pdl_on() ? "available" : "NOT available");
    /* 3 on the persistent step, on test_generate's livelier model */
    std::vector<float> lively(params);
    for (size_t i = 0; i < table[P_OUT_PROJ_W].numel; i++) lively[table[P_OUT_PROJ_W].offset + i] *= 8.0f;
    GPUModel mC;
    gpu_model_create(&mC, &c, lively.data(), NULL);
    g_gen_version = 3;
    test_batch_equals_alone(&mC, tokens, 0.0f);
    test_batch_equals_alone(&mC, tokens, 1.0f);
    g_gen_version = 2;
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}

/* ================================================================================================================
 * the benchmark: generate_mamba2cu's main as it was at commit 6b385b7 (token ids only), with the lab's knobs
 * ================================================================================================================ */

static void bench_usage(void) {
    fprintf(stderr,
        "usage: ./dev/cuda/decode_bin                   the checks\n"
        "       ./dev/cuda/decode_bin -e MODEL -I IDS [options]   generation timed with the lab's knobs\n"
        "  -e MODEL   a checkpoint or model folder, or a preset such as 130m (random weights)\n"
        "  -I IDS     token ids, e.g. 1,2,3; several prompts separated by ';'\n"
        "  -b N, -n N, -t T, -K K, -P P, -s SEED, -G 0|1, -r R, -q   as generate_mamba2cu\n"
        "  -L 0|1     let each decode kernel start while the previous one finishes (default 1)\n"
        "  -S MODE    SSM state precision: auto (default: bf16 from 16 sequences on, else fp32), fp32, bf16\n"
        "  -T 1       after generating, time each kernel of the decode step on its own (layer 0's sizes)\n"
        "  -V 2|3     1..8 sequences: the v2 step, three kernels a layer (2, default: faster so far), or the\n"
        "             persistent step, all layers in one kernel with grid barriers (3)\n"
        "  -W 1|2     the persistent step's blocks per SM (default 1: 255 registers a thread; 2: 128)\n"
        "  -M -1|0|1  9..64 sequences: tensor-core projections (1), cuBLASLt (0), or by batch (-1, default:\n"
        "             tensor cores up to 16 sequences, cuBLASLt above; measured on the H100)\n"
        "  -U 2|4|5   9+ sequences: the state step's kernel: v2 (2, default: 16-byte register vectors), v4 (4: the\n"
        "             head's state copied whole into shared memory; faster alone, slower in the step), 5 (v4 without\n"
        "             the next kernel's early launch)\n"
        "  -C N       shared-memory carveout: -1 the driver's choice (default), -2 100%% for the v4 state kernel,\n"
        "             0..100 that percentage for every decode kernel\n");
}

/* "1,2,3" -> ids */
static std::vector<int> parse_ids(const char* text) {
    std::vector<int> ids;
    const char* p = text;
    while (*p) {
        char* end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 100000000) die("-I %s: expected comma-separated token ids, e.g. -I 1,2,3", text);
        ids.push_back((int)v);
        p = end;
        if (*p == ',') p++;
        else if (*p) die("-I %s: expected comma-separated token ids, e.g. -I 1,2,3", text);
    }
    return ids;
}

static int run_bench(int argc, char** argv) {
    using namespace decode_lab;
    GenerateArgs ga = generate_args_default();
    int batch = 0, repeats = 1, use_graph = 1, profile = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { bench_usage(); return 0; }
        if (!strcmp(argv[i], "-q")) { ga.quiet = 1; continue; }
        if (argv[i][0] != '-' || strlen(argv[i]) != 2 || i + 1 >= argc) {
            bench_usage();
            die("bad argument '%s' (flags take one value each; -h for help)", argv[i]);
        }
        const char* v = argv[++i];
        char flag = argv[i - 1][1];
        if (flag != 'k' && flag != 'p' && flag != 'f' && generate_parse_flag(&ga, flag, v)) continue;
        char* end;
        switch (flag) {
        case 'b': batch = (int)strtol(v, &end, 10); if (*end || batch < 1) die("-b %s: need a batch size >= 1", v); break;
        case 'r': repeats = (int)strtol(v, &end, 10); if (*end || repeats < 1) die("-r %s: need a count >= 1", v); break;
        case 'T': profile = (int)strtol(v, &end, 10); if (*end || (profile != 0 && profile != 1)) die("-T %s: 0 or 1", v); break;
        case 'V': g_gen_version = (int)strtol(v, &end, 10); if (*end || (g_gen_version != 2 && g_gen_version != 3)) die("-V %s: 2 or 3", v); break;
        case 'W': g_gen_p_blocks = (int)strtol(v, &end, 10); if (*end || (g_gen_p_blocks != 1 && g_gen_p_blocks != 2)) die("-W %s: 1 or 2", v); break;
        case 'U': g_gen_state_v = (int)strtol(v, &end, 10); if (*end || (g_gen_state_v != 2 && g_gen_state_v != 4 && g_gen_state_v != 5)) die("-U %s: 2, 4 or 5", v); break;
        case 'C': g_gen_carveout = (int)strtol(v, &end, 10); if (*end || g_gen_carveout < -2 || g_gen_carveout > 100) die("-C %s: -2, -1 or 0..100", v); break;
        case 'M': g_gen_mma = (int)strtol(v, &end, 10); if (*end || g_gen_mma < -1 || g_gen_mma > 1) die("-M %s: -1, 0 or 1", v); break;
        case 'L': g_gen_pdl = (int)strtol(v, &end, 10); if (*end || (g_gen_pdl != 0 && g_gen_pdl != 1)) die("-L %s: 0 or 1", v); break;
        case 'S':
            if (!strcmp(v, "auto")) g_gen_state_mode = -1;
            else if (!strcmp(v, "fp32")) g_gen_state_mode = 0;
            else if (!strcmp(v, "bf16")) g_gen_state_mode = 1;
            else die("-S %s: auto, fp32 or bf16", v);
            break;
        case 'G': use_graph = (int)strtol(v, &end, 10); if (*end || (use_graph != 0 && use_graph != 1)) die("-G %s: 0 or 1", v); break;
        default: bench_usage(); die("unknown flag %s (-h for help)", argv[i - 1]);
        }
    }
    if (ga.model_path == NULL || ga.id_text == NULL) { bench_usage(); die("the benchmark needs -e MODEL and -I IDS"); }
    int dev_count = 0;
    if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0) die("no CUDA GPU found");
    GPUModel model;
    gpu_load_model(&model, ga.model_path, 1);
    const Mamba2Config* c = &model.config;
    if (!ga.quiet) config_print(c, stderr);
    std::vector<std::vector<int>> prompts;
    std::string all(ga.id_text);
    size_t start = 0;
    while (start <= all.size()) {
        size_t semi = all.find(';', start);
        std::string one = all.substr(start, semi == std::string::npos ? std::string::npos : semi - start);
        if (!one.empty()) prompts.push_back(parse_ids(one.c_str()));
        if (semi == std::string::npos) break;
        start = semi + 1;
    }
    if (prompts.empty()) die("no prompt");
    int S = batch > 0 ? batch : (int)prompts.size(), max_new = ga.max_new;
    std::vector<int*> pp(S);
    std::vector<int> lens(S);
    int Tmax = 1;
    for (int s = 0; s < S; s++) {
        std::vector<int>& p = prompts[s % prompts.size()];
        pp[s] = p.data();
        lens[s] = (int)p.size();
        if (lens[s] > Tmax) Tmax = lens[s];
    }
    int eot = c->vocab_size == 257 ? 256 : -1; /* ids in, ids out: the byte model's end of text, else none */
    Decoder dec;
    decoder_create(&dec, &model, S, Tmax, max_new > 0 ? max_new : 1);
    std::vector<std::vector<int>> outs(S, std::vector<int>(max_new > 0 ? max_new : 1));
    std::vector<int*> outp(S);
    for (int s = 0; s < S; s++) outp[s] = outs[s].data();
    std::vector<int> n_out(S);
    GenOptions o = {ga.temperature, ga.top_p, ga.top_k, max_new, eot, use_graph, ga.seed};
    std::vector<double> ms_per_step;
    GenTiming tm = {0, 0, 0};
    for (int r = 0; r < repeats; r++) {
        tm = generate_batch(&dec, &model, pp.data(), lens.data(), &o, outp.data(), n_out.data());
        if (tm.steps > 0) ms_per_step.push_back(tm.decode_s * 1000.0 / tm.steps);
    }
    if (!ga.quiet) {
        for (int s = 0; s < S; s++) {
            printf("[%d] ", s);
            for (int i = 0; i < n_out[s]; i++) printf("%d ", outs[s][i]);
            printf("\n");
        }
        fflush(stdout);
    }
    if (profile) decoder_profile(&dec, &model);
    std::sort(ms_per_step.begin(), ms_per_step.end());
    double med = ms_per_step.empty() ? 0 : ms_per_step[ms_per_step.size() / 2];
    fprintf(stderr,
            "batch %d, prompt %d tokens (longest), prefill %.3f s; decode %d steps: median %.4f ms/step over %d run%s "
            "(%.0f tokens/s), %s, %s path, %s SSM state, launch overlap %s, state kernel v%d, carveout %d; decoder "
            "state %.2f GiB\n",
            S, Tmax, tm.prefill_s, tm.steps, med, (int)ms_per_step.size(), ms_per_step.size() == 1 ? "" : "s",
            med > 0 ? S * 1000.0 / med : 0.0, use_graph ? "CUDA graph" : "no graph",
            dec.persist ? "persistent" : dec.small ? "fused matvec" : dec.mma ? "tensor-core" : "cuBLASLt",
            dec.state_lowp ? PRECISION_NAME : "fp32", gen_pdl_on() ? "on" : "off", g_gen_state_v, g_gen_carveout,
            dec.bytes / 1073741824.0);
    decoder_free(&dec);
    matmul_destroy();
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 1) {
        int dev_count = 0;
        if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0) die("decode_bin needs a CUDA GPU");
        return run_checks();
    }
    return run_bench(argc, argv);
}
