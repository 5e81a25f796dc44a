/*
 * test_generate.cu: GPU generation and evaluation checked against simpler computations.
 *
 * Every check runs the default decode path (llmc/decoder.cuh, llmc/decode.cuh); the path a check took is read from
 * the decoder (Decoder.small, .mma, .state_lowp, .overlap). The slower versions (the persistent step, the bulk-copy
 * state kernel) are checked against this path by dev/cuda/decode.cu.
 *
 *   1. prefill (chunked parallel forward + state hand-over) then recurrent steps == the full parallel forward
 *      (gpu_forward) at every position, for several prefill lengths, on the fused small-batch path (S = 1, 4), the
 *      mid-batch path with a float state (S = 12) and with a floatX state (S = 16, bf16 in bf16 builds), the
 *      mid-batch path being the tensor-core projections in bf16 builds and cuBLASLt in fp32 builds, and the
 *      cuBLASLt path with a floatX state (S = 20); the comparison must also catch a one-position shift.
 *   2. the CUDA-graph-replayed step == the plain step, bitwise (logits and SSM states), on both paths; and the plain
 *      step with launch overlap (programmatic dependent launch) == without it, bitwise.
 *   3. greedy and seeded sampling (temperature 1): a batch of 4 prompts of different lengths gives the same tokens
 *      as each prompt alone, on a livelier copy of the model (out_proj scaled up, so that the residual stream is
 *      not just the current token's embedding and the greedy output varies: the check asserts >= 3 distinct ids,
 *      else it could not fail); the picked tokens (the LM head's per-block picks on the fused path, the argmax
 *      kernel on the cuBLASLt path) == the argmax of the step's logits on the host.
 *   7. the split argmax (S x nsplit blocks, then the partials kernel) == argmax_kernel == the host's argmax, on
 *      logits full of ties, NaNs, a row of -inf, maxima at the first and last ids, padding that must be ignored.
 *   4. evaluation: gpu_eval's mean loss == the trainer's validation formula (mean of gpu_forward's batch losses),
 *      and == the cross-entropy computed on the host (double) from recurrent-step logits, token by token.
 *   5. document boundaries (-D; doc/packing.md): a prompt of several documents through the packed parallel forward
 *      (gpu_forward_docs) gives at its last position the logits of the decoder's prefill of its last document
 *      alone (what generate_mamba2cu -D prefills), and without the boundaries it does not; a separator sampled
 *      during greedy decoding restarts the state on the device (CUDA graph): the tokens after it are those
 *      generated from the separator alone, and without the restart they are not.
 *   6. evaluation with -D and -M: gpu_eval_docs == the trainer's validation formula (the mean over every counted
 *      target of gpu_forward_docs's batches), every masked target left out; the accuracy (argmax == target over the
 *      counted targets) == the host's argmax of the same logits.
 * A small random model with ngroups = 2 (heads share B/C windows), chunk 16, vocab 257.
 * Tolerances: bf16 builds compare against the same-precision forward, whose floatX roundings happen at other
 * places; fp32 builds agree to ~1e-6.
 */
#include "llmc/model.cuh"
#include "llmc/decoder.cuh"
#include "llmc/eval.cuh"

#include <unistd.h>
#include <vector>

static int g_pass = 0, g_fail = 0;
static void check(int ok, const char* what, double value, double tol) {
    printf("%s %-72s %.3e (tol %.1e)\n", ok ? "PASS" : "FAIL", what, value, tol);
    if (ok) g_pass++; else g_fail++;
}

#if defined(ENABLE_FP32)
#define TOL_LOGITS 2e-5
#define TOL_LOSS 2e-6
#else
#define TOL_LOGITS 3e-2
#define TOL_LOSS 5e-3
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
    decoder_create(&d, m, S, T, 1, NULL);
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
             d.small ? "fused" : d.mma ? "tensor-core" : "cuBLASLt", d.state_lowp ? PRECISION_NAME : "fp32");
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
    DecoderOptions plain = decoder_options_default();
    plain.overlap = plain_pdl;
    decoder_create(&a, m, S, 30, 1, &plain);
    decoder_create(&b, m, S, 30, 1, NULL);
    prefill_pair(&a, &b, m, tokens, S, 5, 1);
    size_t diff = 0;
    for (int i = 0; i < 9; i++) { /* odd and even parities, several replays of each graph */
        std::vector<int> in(S);
        for (int s = 0; s < S; s++) in[s] = tokens[(i * 7 + s) % 40];
        set_tokens(&a, m, in.data());
        set_tokens(&b, m, in.data());
        decoder_step(&a, m, 0, 0);
        decoder_step(&b, m, 1, 0);
        diff += logits_differing(m, &a, &b);
    }
    size_t ns = dec_state_elems(c, S), nonzero, sdiff = states_differing(c, &a, &b, &nonzero);
    char what[160];
    snprintf(what, sizeof what, "graph step == plain step%s bitwise, 9 steps, S=%d (%s, %s state): differing",
             a.overlap ? "" : " without launch overlap", S, a.small ? "fused" : a.mma ? "tensor-core" : "cuBLASLt",
             a.state_lowp ? PRECISION_NAME : "fp32");
    check(a.overlap == (plain_pdl && b.overlap) && diff == 0 && sdiff == 0 && nonzero > ns / 2, what, (double)(diff + sdiff), 0);
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
    std::vector<std::vector<int>> outb(4, std::vector<int>(n)), outa(4, std::vector<int>(n));
    std::vector<int*> pb(4), pa(4);
    for (int s = 0; s < 4; s++) { pb[s] = outb[s].data(); pa[s] = outa[s].data(); }
    int nb[4], na[4];
    Decoder d;
    decoder_create(&d, m, 4, 30, n, NULL);
    generate_batch(&d, m, prompts, lens, &o, pb.data(), nb);
    decoder_free(&d);
    int mismatches = 0, distinct = 0, seen[512] = {0};
    for (int s = 0; s < 4; s++) {
        Decoder one;
        decoder_create(&one, m, 1, 30, n, NULL);
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
    snprintf(what, sizeof what, "%s batch of 4 prompts (3,9,17,30 tokens) == each alone, 24 tokens: mismatches",
             how);
    check(mismatches == 0, what, mismatches, 0);
    snprintf(what, sizeof what, "  ... and the batch's tokens vary (else the check above cannot fail): >= 3 ids");
    check(distinct >= 3, what, distinct, 3);
    if (temperature > 0) return;
    /* the device's pick == the host's argmax of the same step's logits, fused path (S = 4) and the split argmax
     * (S = 12) */
    for (int S = 4; S <= 12; S += 8) {
        Decoder e;
        decoder_create(&e, m, S, 30, 8, NULL);
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
    decoder_create(&d, m, 4, 30, n, NULL);
    generate_batch(&d, m, prompts, lens, &o, pc.data(), nc);
    decoder_free(&d);
    int mm = 0;
    for (int s = 0; s < 4; s++) for (int i = 0; i < n; i++) mm += outc[s][i] != outb[s][i];
    snprintf(what, sizeof what, "greedy batch of 4: graph == no graph: mismatches");
    check(mm == 0, what, mm, 0);
}

/* 7: the split argmax (S x nsplit blocks + partials) against argmax_kernel and the host, on logits full of ties
 * (few distinct values), NaNs, a row of -inf, maxima at the first and the last real id, padding that must be
 * ignored */
static void test_argmax_split(int S, int V, int Vp) {
    std::vector<floatX> lx((size_t)S * Vp);
    std::vector<float> lf((size_t)S * Vp);
    Rng rng;
    rng_seed(&rng, 11 + S);
    for (int s = 0; s < S; s++) {
        for (int v = 0; v < Vp; v++) {
            float f = (float)(rng_u64(&rng) % 50) - 25.f; /* 50 levels: many ties at the top */
            if (v > 0 && rng_u64(&rng) % 97 == 0) f = NAN;
            if (v >= V) f = 1e30f; /* padding: never a pick */
            if (s == 1 && v < V) f = -INFINITY;
            if (s == 2 && v == 0) f = 100.f;
            if (s == 3 && v == V - 1) f = 100.f;
            lx[(size_t)s * Vp + v] = fromF(f);
            lf[(size_t)s * Vp + v] = toF(lx[(size_t)s * Vp + v]);
        }
    }
    std::vector<int> host(S);
    for (int s = 0; s < S; s++) {
        int best = 0;
        for (int v = 1; v < V; v++) if (lf[(size_t)s * Vp + v] > lf[(size_t)s * Vp + best]) best = v;
        host[s] = best;
    }
    floatX* dl;
    float* pv;
    int *pi, *tok, *hist, *step;
    int maxparts = 64;
    cudaCheck(cudaMalloc(&dl, lx.size() * sizeof(floatX)));
    cudaCheck(cudaMalloc(&pv, (size_t)S * maxparts * sizeof(float)));
    cudaCheck(cudaMalloc(&pi, (size_t)S * maxparts * sizeof(int)));
    cudaCheck(cudaMalloc(&tok, S * sizeof(int)));
    cudaCheck(cudaMalloc(&hist, S * sizeof(int)));
    cudaCheck(cudaMalloc(&step, sizeof(int)));
    cudaCheck(cudaMemset(step, 0, sizeof(int)));
    cudaCheck(cudaMemcpy(dl, lx.data(), lx.size() * sizeof(floatX), cudaMemcpyHostToDevice));
    std::vector<int> got_old(S), got_new(S), got_hist(S);
    DecodeStream ds = {0, gen_pdl_capable()};
    argmax_tokens(tok, hist, step, dl, S, Vp, V, ds);
    cudaCheck(cudaMemcpy(got_old.data(), tok, S * sizeof(int), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemset(tok, 0xff, S * sizeof(int)));
    argmax_tokens_split(tok, hist, step, dl, pv, pi, maxparts, S, Vp, V, ds);
    cudaCheck(cudaMemcpy(got_new.data(), tok, S * sizeof(int), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(got_hist.data(), hist, S * sizeof(int), cudaMemcpyDeviceToHost));
    int wrong = 0, wrong_old = 0;
    for (int s = 0; s < S; s++) {
        wrong += got_new[s] != host[s] || got_hist[s] != host[s];
        wrong_old += got_old[s] != host[s];
    }
    char what[200];
    snprintf(what, sizeof what, "split argmax (%d blocks a row) == host argmax, S=%d V=%d: rows wrong",
             gen_argmax_nsplit(S, V, maxparts), S, V);
    check(wrong == 0 && host[1] == 0 && host[2] == 0 && host[3] == V - 1, what, wrong, 0);
    snprintf(what, sizeof what, "  argmax_kernel (one block a row) == host argmax, S=%d V=%d: rows wrong", S, V);
    check(wrong_old == 0, what, wrong_old, 0);
    cudaCheck(cudaFree(dl));
    cudaCheck(cudaFree(pv));
    cudaCheck(cudaFree(pi));
    cudaCheck(cudaFree(tok));
    cudaCheck(cudaFree(hist));
    cudaCheck(cudaFree(step));
}

/* 5: document boundaries in generation. sep: a token id used as the separator */
static void test_docs_prefill(GPUModel* m, const int* tokens, int T, int sep) {
    const Mamba2Config* c = &m->config;
    int Vp = c->padded_vocab_size;
    std::vector<int> prompt(tokens, tokens + T);
    /* documents [0,9) [9] [10,23) [23,T-3) [T-3,T): the last one is 3 tokens long, so that at its last position the
       conv window (d_conv 4) and the SSM state both reach into the document before it; with a long last document the
       earlier ones' state has decayed, and the check that the boundaries matter (below) is too close to bf16 noise */
    prompt[0] = prompt[9] = prompt[10] = prompt[23] = prompt[T - 3] = sep;
    std::vector<int> seq(T);
    dataloader_doc_index(seq.data(), prompt.data(), 1, (size_t)T, sep);
    gpu_forward_docs(m, prompt.data(), NULL, seq.data(), 1, T, 0.0f);
    std::vector<float> packed = copy_logits_rows(m, m->a.logits, T);
    gpu_forward(m, prompt.data(), NULL, 1, T, 0.0f);
    std::vector<float> plain = copy_logits_rows(m, m->a.logits, T);
    Decoder d;
    decoder_create(&d, m, 1, T, 1, NULL);
    decoder_reset(&d, m);
    int first = 0; /* the last document: from the last separator on (the random tokens may hold more of them) */
    for (int i = 0; i < T; i++) if (prompt[i] == sep) first = i;
    decoder_prefill(&d, m, 0, prompt.data() + first, T - first); /* the last document alone */
    std::vector<float> alone = copy_logits_rows(m, d.logits, 1);
    size_t last = (size_t)(T - 1) * Vp;
    double e = rel_err(packed.data() + last, alone.data(), Vp), e_plain = rel_err(plain.data() + last, alone.data(), Vp);
    check(e < TOL_LOGITS, "-D: packed forward's last logits == prefill of the last document alone: rel err", e,
          TOL_LOGITS);
    check(e_plain > 3 * TOL_LOGITS, "  ... and without the boundaries they differ (the check can fail): rel err",
          e_plain, 3 * TOL_LOGITS);
    decoder_free(&d);
}

static void test_docs_decode_restart(GPUModel* m, const int* tokens) {
    const int n = 12, len = 9;
    int* prompt = (int*)tokens;
    int lens[1] = {len};
    std::vector<int> plain(n), restart(n), fresh(n);
    int* pp[1] = {plain.data()};
    int np, nr, nf;
    GenOptions o = {0.0f, 1.0f, 0, n, -1, 1, 1}; /* greedy, no end-of-text stop, CUDA graphs */
    Decoder d;
    decoder_create(&d, m, 1, 30, n, NULL);
    generate_batch(&d, m, &prompt, lens, &o, pp, &np);
    decoder_free(&d);
    int sep = plain[0]; /* the first token greedy picks becomes the separator */
    decoder_create(&d, m, 1, 30, n, NULL);
    d.sep = sep;
    pp[0] = restart.data();
    generate_batch(&d, m, &prompt, lens, &o, pp, &nr);
    decoder_free(&d);
    /* the reference: generation from the separator alone (a fresh state fed sep; a later sep restarts it too) */
    decoder_create(&d, m, 1, 30, n, NULL);
    d.sep = sep;
    pp[0] = fresh.data();
    int one[1] = {1};
    int* sp = &sep;
    generate_batch(&d, m, &sp, one, &o, pp, &nf);
    decoder_free(&d);
    int mism = restart[0] != sep, differ = 0;
    for (int i = 1; i < n; i++) mism += restart[i] != fresh[i - 1];
    for (int i = 1; i < n; i++) differ += plain[i] != fresh[i - 1];
    char what[200];
    snprintf(what, sizeof what, "-D: greedy decode restarts at a sampled separator (id %d): tokens after it == "
             "from the separator alone, mismatches", sep);
    check(mism == 0, what, mism, 0);
    check(differ > 0, "  ... and without the restart they differ (the check can fail): tokens differing", differ, 1);
}

/* 6: evaluation with document boundaries and masked targets, and the accuracy */
static void test_eval_docs(const Mamba2Config* c, const float* params, const char* shard, int B, int T, int nbatch,
                           int sep) {
    GPUModel m;
    gpu_model_create(&m, c, params, NULL);
    m.want_argmax = 1;
    DataLoader ld;
    dataloader_init(&ld, shard, (size_t)B, (size_t)T, 0, 1, 0, 0, c->vocab_size);
    dataloader_use_masks(&ld);
    EvalResult r = gpu_eval_docs(&m, &ld, nbatch, NULL, 0, sep);
    /* the trainer's gpu_evaluate with -D and -M: the mean over every counted target of the batches */
    dataloader_reset(&ld);
    double nats = 0;
    long counted = 0, masked = 0, hits = 0;
    int BT = B * T, V = c->vocab_size, Vp = c->padded_vocab_size;
    std::vector<int> seq(BT);
    GPUModel mf; /* the logits of the same batches, for the host's argmax */
    gpu_model_create(&mf, c, params, NULL);
    for (int i = 0; i < nbatch; i++) {
        dataloader_next_batch(&ld);
        dataloader_doc_index(seq.data(), ld.inputs, (size_t)B, (size_t)T, sep);
        float loss = gpu_forward_docs(&mf, ld.inputs, ld.targets, seq.data(), B, T, 0.0f);
        nats += (double)loss * mf.num_counted;
        counted += (long)mf.num_counted;
        gpu_forward_docs(&mf, ld.inputs, NULL, seq.data(), B, T, 0.0f);
        std::vector<float> lg = copy_logits_rows(&mf, mf.a.logits, BT);
        for (int k = 0; k < BT; k++) {
            if (ld.targets[k] == TARGET_NO_LOSS) { masked++; continue; }
            int best = 0;
            for (int v = 1; v < V; v++) if (lg[(size_t)k * Vp + v] > lg[(size_t)k * Vp + best]) best = v;
            hits += best == ld.targets[k];
        }
    }
    double trainer = nats / counted, mean = r.sum_nats / r.tokens, e = fabs(mean - trainer) / trainer;
    check(r.tokens == counted && masked > 0, "eval -D -M: counted targets == the trainer's (some masked)",
          (double)r.tokens, (double)counted);
    check(e < 1e-5, "eval -D -M mean loss == trainer val loss with -D -M: rel diff", e, 1e-5);
    check(r.hits == hits && hits > 0, "eval accuracy: hits == host argmax of the same logits", (double)r.hits,
          (double)hits);
    printf("     (eval -D %d -M 1: loss %.6f, trainer formula %.6f, %ld of %ld counted, accuracy %.6f)\n", sep, mean,
           trainer, counted, counted + masked, (double)r.hits / r.tokens);
    dataloader_free(&ld);
}

/* 4: evaluation */
static void test_eval(GPUModel* mB, const char* shard, int B, int T, int nbatch) {
    const Mamba2Config* c = &mB->config;
    DataLoader ld;
    dataloader_init(&ld, shard, (size_t)B, (size_t)T, 0, 1, 0, 0, c->vocab_size);
    EvalResult r = gpu_eval(mB, &ld, nbatch, NULL, 0);
    double eval_mean = r.sum_nats / r.tokens;
    check(r.tokens == (long)B * T * nbatch && r.batches == nbatch, "eval covers every batch: tokens counted",
          (double)r.tokens, 0);
    /* the trainer's gpu_evaluate: the mean of gpu_forward's per-batch means */
    dataloader_reset(&ld);
    double sum = 0;
    for (int i = 0; i < nbatch; i++) {
        dataloader_next_batch(&ld);
        sum += gpu_forward(mB, ld.inputs, ld.targets, B, T, 0.0f);
    }
    double trainer = sum / nbatch;
    double e1 = fabs(eval_mean - trainer) / trainer;
    check(e1 < 1e-5, "eval mean loss == trainer val loss (mean of batch means): rel diff", e1, 1e-5);
    /* the first batch through the recurrent step, cross-entropy on the host */
    dataloader_reset(&ld);
    EvalResult r1 = gpu_eval(mB, &ld, 1, NULL, 0);
    double first = r1.sum_nats / r1.tokens;
    dataloader_reset(&ld);
    dataloader_next_batch(&ld);
    Decoder d;
    decoder_create(&d, mB, B, 1, 1, NULL);
    decoder_reset(&d, mB);
    int V = c->vocab_size, Vp = c->padded_vocab_size;
    double nats = 0;
    std::vector<int> in(B);
    for (int t = 0; t < T; t++) {
        for (int s = 0; s < B; s++) in[s] = ld.inputs[s * T + t];
        set_tokens(&d, mB, in.data());
        decoder_step(&d, mB, 0, 0);
        float* lg = decoder_logits_host(&d, mB);
        for (int s = 0; s < B; s++) {
            const float* row = lg + (size_t)s * Vp;
            double mx = row[0];
            for (int v = 1; v < V; v++) if (row[v] > mx) mx = row[v];
            double z = 0;
            for (int v = 0; v < V; v++) z += exp(row[v] - mx);
            nats += mx + log(z) - row[ld.targets[s * T + t]];
        }
    }
    double rec = nats / (B * T), e2 = fabs(first - rec) / rec;
    check(e2 < TOL_LOSS, "eval loss (batch 1) == host cross-entropy of recurrent-step logits: rel diff", e2,
          TOL_LOSS);
    printf("     (losses: eval %.6f, trainer formula %.6f, batch 1 %.6f, recurrent %.6f)\n", eval_mean, trainer,
           first, rec);
    decoder_free(&d);
    dataloader_free(&ld);
}

int main(void) {
    int dev_count = 0;
    if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0) die("test_generate needs a CUDA GPU");
    printf("test_generate (%s)\n", PRECISION_NAME);
    gpu_arch_check();
    gpu_path_print(stdout);
    Mamba2Config c;
    char err[512];
    if (config_parse(&c, "d_model=64,n_layer=2,d_state=16,headdim=16,ngroups=2,vocab=257,chunk=16", err,
                     sizeof err) != 0)
        die("%s", err);
    ParamSpec table[NUM_PARAM_TENSORS];
    size_t np = param_table_build(table, &c);
    std::vector<float> params(np);
    params_init(params.data(), table, &c, 42);
    /* a livelier model than the init (embedding N(0, 0.02) makes near-uniform logits): scale the embedding up */
    for (size_t i = 0; i < table[P_WTE].numel; i++) params[table[P_WTE].offset + i] *= 25.0f;

    const int T = 40;
    int tokens[T];
    Rng rng;
    rng_seed(&rng, 7);
    for (int i = 0; i < T; i++) tokens[i] = (int)(rng_u64(&rng) % 257);

    GPUModel mA; /* B=1, T=40: the full forward */
    gpu_model_create(&mA, &c, params.data(), NULL);
    gpu_forward(&mA, tokens, NULL, 1, T, 0.0f);
    std::vector<float> full = copy_logits_rows(&mA, mA.a.logits, T);

    /* the paths: fused (S <= GEN_SMALL_S), mid-batch (tensor cores in bf16 builds) with a float and a floatX state,
     * cuBLASLt with a floatX state (S > GEN_MMA_AUTO_MAX_S) */
    const int sizes[] = {1, 4, 12, GEN_LOWP_MIN_S, GEN_MMA_AUTO_MAX_S + 4};
    for (int S : sizes) test_prefill_then_step(&mA, full, tokens, T, S);
    for (int S : sizes) if (S > 1) test_graph_bitwise(&mA, tokens, S, 1);
    test_argmax_split(64, 50277, 50288);
    test_argmax_split(12, 50277, 50288);
    test_argmax_split(16, 257, 272);
    test_graph_bitwise(&mA, tokens, 1, 0);
    test_graph_bitwise(&mA, tokens, 4, 0);
    test_graph_bitwise(&mA, tokens, GEN_LOWP_MIN_S, 0);
    printf("     (launch overlap %s on this GPU)\n", gen_pdl_capable() ? "available" : "NOT available: the overlap "
           "checks compare two plain launches");

    /* a livelier model for the batch checks: out_proj x 8, so the residual stream is not just the current token's
     * embedding (with it alone, the greedy pick is the input token again and again: a check that cannot fail) */
    std::vector<float> lively(params);
    for (size_t i = 0; i < table[P_OUT_PROJ_W].numel; i++) lively[table[P_OUT_PROJ_W].offset + i] *= 8.0f;
    GPUModel mC;
    gpu_model_create(&mC, &c, lively.data(), NULL);
    test_batch_equals_alone(&mC, tokens, 0.0f);
    test_batch_equals_alone(&mC, tokens, 1.0f);

    /* a shard of random tokens for the evaluation */
    const int B = 4, TE = 32, nb = 3;
    char shard[256];
    snprintf(shard, sizeof shard, "/tmp/test_generate_%d_val_000000.bin", (int)getpid());
    FILE* f = fopen(shard, "wb");
    if (f == NULL) die("cannot write %s", shard);
    int32_t header[256] = {0};
    int ntok = B * TE * nb + 1;
    header[0] = DATALOADER_MAGIC; header[1] = 1; header[2] = ntok;
    fwrite(header, sizeof(int32_t), 256, f);
    for (int i = 0; i < ntok; i++) {
        uint16_t t = (uint16_t)(rng_u64(&rng) % 257);
        fwrite(&t, sizeof t, 1, f);
    }
    fclose(f);
    GPUModel mB; /* B=4, T=32 */
    gpu_model_create(&mB, &c, params.data(), NULL);
    test_eval(&mB, shard, B, TE, nb);
    {   /* a shard of packed documents (the separator 256 at about one position in 8) with a mask file beside it
           (doc/packing.md's format): about one target in three not counted */
        char dshard[256], mpath[300];
        snprintf(dshard, sizeof dshard, "/tmp/test_generate_%d_docs_000000.bin", (int)getpid());
        snprintf(mpath, sizeof mpath, "%s.mask", dshard);
        FILE* df = fopen(dshard, "wb");
        FILE* mf = fopen(mpath, "wb");
        if (df == NULL || mf == NULL) die("cannot write %s and %s", dshard, mpath);
        fwrite(header, sizeof(int32_t), 256, df);
        int32_t mh[256] = {0};
        mh[0] = DATALOADER_MASK_MAGIC; mh[1] = 1; mh[2] = ntok;
        fwrite(mh, sizeof(int32_t), 256, mf);
        uint16_t prev = 0;
        for (int i = 0; i < ntok; i++) {
            /* half the tokens repeat the one before: the embedding-dominated model's argmax is its input token, so
               about half the counted targets are hits and the accuracy check below can fail (random targets
               give none) */
            uint16_t t = rng_u64(&rng) % 8 == 0 ? 256
                         : i > 0 && prev != 256 && rng_u64(&rng) % 2 == 0 ? prev : (uint16_t)(rng_u64(&rng) % 256);
            prev = t;
            unsigned char b = rng_u64(&rng) % 3 != 0;
            fwrite(&t, sizeof t, 1, df);
            fwrite(&b, 1, 1, mf);
        }
        fclose(df);
        fclose(mf);
        test_eval_docs(&c, params.data(), dshard, B, TE, nb, 256);
        remove(mpath);
        remove(dshard);
    }
    remove(shard);
    test_docs_prefill(&mC, tokens, T, 256);
    test_docs_decode_restart(&mC, tokens);

    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
