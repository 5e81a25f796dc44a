/*
 * generate_mamba2.cu: text generation on an NVIDIA GPU, a batch of prompts at once.
 *
 *   ./generate_mamba2cu -e hf/mamba2-130m -k neox_tokenizer.bin -f prompts.txt -n 64 -t 0.8 -P 0.95
 *   ./generate_mamba2cu -e 130m -I 1,2,3 -b 64 -n 256 -t 0 -r 5     (random weights: decode timing)
 *
 * The GPU twin of generate_mamba2.c (same flags, plus -b, -r, -G, -L, -S). The generator is llmc/decoder.cuh (prefill, batched decode state, CUDA graphs, greedy on the device), its kernels
 * llmc/decode.cuh. The decode versions that measured slower, their knobs and the per-kernel timing (-T) are
 * dev/cuda/decode.cu's.
 * -D SEP (doc/packing.md): a prompt holding separators is read with document boundaries, so generation continues its
 * last document from that document's own state: the prefill runs over the last document alone (from its last
 * separator on), which gives exactly the state and logits the boundaries give; a sampled separator (other than
 * end-of-text, which stops) restarts the sequence's state on the device (decode_reset_at_sep), in the CUDA graph too.
 */
#include "llmc/model.cuh"
#include "llmc/decoder.cuh"
#include "llmc/bpe.h"
#include "llmc/infer_common.h"

#include <string>
#include <vector>
#include <algorithm>

static void generate_usage(void) {
    fprintf(stderr,
        "usage: ./generate_mamba2cu -e MODEL [-k TOKENIZER] (-p TEXT | -f FILE | -I IDS) [options]\n"
        "  -e MODEL   a mamba2.c checkpoint, an HF transformers Mamba-2 folder, a mamba_ssm folder (after\n"
        "             scripts/convert_mamba_ssm.py), or a preset such as 130m (random weights, for timing)\n"
        "  -k FILE    tokenizer.bin, version 3, to encode the prompts (byte-level BPE). Without -k a model of\n"
        "             vocab 257 is taken as the byte tokenizer (id 256 = end of text)\n"
        "  -p TEXT    one prompt;  -f FILE  one prompt per line (a batch);  -I IDS  token ids, e.g. 1,2,3;\n"
        "             several prompts separated by ';' (1,2;3,4,5)\n"
        "  -b N       batch of N sequences: the prompts repeated in turn (default: one per prompt)\n"
        "  -n N       tokens to generate per sequence (default 128); each stops early at its end-of-text token\n"
        "  -t T       temperature (default 1.0; 0 = greedy, decoded entirely on the GPU)\n"
        "  -K K       top-k (default 0 = off);  -P P  top-p (default 1.0 = off)\n"
        "  -s SEED    sampling seed (default 1337; sequence i uses SEED + i)\n"
        "  -G 0|1     replay the decode step as a CUDA graph (default 1)\n"
        "  -L 0|1     let each decode kernel start while the previous one finishes (sm_90 programmatic dependent\n"
        "             launch; default 1; 0 for a driver or tool that cannot take it)\n"
        "  -S MODE    SSM state precision: auto (default: bf16 from 16 sequences on, else fp32), fp32, bf16\n"
        "  -r R       generate R times and report the median decode time (timing; default 1)\n"
        "  -q         quiet: no generated text, only the timing line\n"
        "  -D SEP     document boundaries at token SEP (none = default, eot, or an id): generation continues the\n"
        "             prompt's last document from its own state; a sampled SEP restarts the state (doc/packing.md)\n"
        "The decode versions that measured slower, their knobs and per-kernel timing: dev/cuda/decode_bin -h\n");
}

static char* read_text_file(const char* path, size_t* len) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) die("prompt file %s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0, got;
    char* s = (char*)mallocCheck(cap + 1);
    while ((got = fread(s + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            s = (char*)realloc(s, cap + 1);
            if (s == NULL) die("out of memory reading %s", path);
        }
    }
    fclose(f);
    s[n] = '\0';
    *len = n;
    return s;
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

int main(int argc, char** argv) {
    g_infer_has_docs = 1; /* -D (doc/packing.md) */
    GenerateArgs ga = generate_args_default();
    int batch = 0, repeats = 1, use_graph = 1; /* this program's own flags: -b, -r, -G */
    DecoderOptions dopt = decoder_options_default(); /* -S, -L */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { generate_usage(); return 0; }
        if (!strcmp(argv[i], "-q")) { ga.quiet = 1; continue; }
        if (argv[i][0] != '-' || strlen(argv[i]) != 2 || i + 1 >= argc) {
            generate_usage();
            die("bad argument '%s' (flags take one value each; -h for help)", argv[i]);
        }
        const char* v = argv[++i];
        if (generate_parse_flag(&ga, argv[i - 1][1], v)) continue;
        char* end;
        switch (argv[i - 1][1]) {
        case 'b': batch = (int)strtol(v, &end, 10); if (*end || batch < 1) die("-b %s: need a batch size >= 1", v); break;
        case 'r': repeats = (int)strtol(v, &end, 10); if (*end || repeats < 1) die("-r %s: need a count >= 1", v); break;
        case 'L': dopt.overlap = (int)strtol(v, &end, 10); if (*end || (dopt.overlap != 0 && dopt.overlap != 1)) die("-L %s: 0 or 1", v); break;
        case 'S':
            if (!strcmp(v, "auto")) dopt.state_mode = -1;
            else if (!strcmp(v, "fp32")) dopt.state_mode = 0;
            else if (!strcmp(v, "bf16")) dopt.state_mode = 1;
            else die("-S %s: auto, fp32 or bf16", v);
            break;
        case 'G': use_graph = (int)strtol(v, &end, 10); if (*end || (use_graph != 0 && use_graph != 1)) die("-G %s: 0 or 1", v); break;
        default: generate_usage(); die("unknown flag %s (-h for help)", argv[i - 1]);
        }
    }
    generate_check_args(&ga, generate_usage);
    const char *model_path = ga.model_path, *tok_path = ga.tok_path, *prompt = ga.prompt;
    const char *prompt_file = ga.prompt_file, *id_text = ga.id_text;
    int max_new = ga.max_new, top_k = ga.top_k, quiet = ga.quiet;
    float temperature = ga.temperature, top_p = ga.top_p;
    unsigned long long seed = ga.seed;
    int dev_count = 0;
    if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0)
        die("no CUDA GPU found: use the CPU program ./generate_mamba2");

    GPUModel model;
    gpu_load_model(&model, model_path, 1);
    const Mamba2Config* c = &model.config;
    if (!quiet) config_print(c, stderr);

    /* the tokenizer: BPE (version 3 file), or bytes, or none (ids in, ids out): llmc/infer_common.h */
    PromptTokenizer pt;
    prompt_tokenizer_init(&pt, tok_path, c->vocab_size, id_text != NULL);
    Tokenizer tok = pt.tok;  /* the names the code below uses; pt itself is not freed */
    BpeEncoder bpe = pt.bpe;
    int byte_level = pt.byte_level, eot = pt.eot;
    char err[1024];

    /* the prompts: split on ';' (ids) or newlines (a file), or the one -p text */
    std::vector<std::vector<int>> prompts;
    if (id_text != NULL) {
        std::string all(id_text);
        size_t start = 0;
        while (start <= all.size()) {
            size_t semi = all.find(';', start);
            std::string one = all.substr(start, semi == std::string::npos ? std::string::npos : semi - start);
            if (!one.empty()) prompts.push_back(parse_ids(one.c_str()));
            if (semi == std::string::npos) break;
            start = semi + 1;
        }
    } else {
        size_t len;
        char* text = prompt_file ? read_text_file(prompt_file, &len) : NULL;
        std::vector<std::string> lines;
        if (text == NULL) {
            lines.push_back(std::string(prompt));
        } else {
            std::string all(text, len);
            size_t start = 0;
            while (start < all.size()) {
                size_t nl = all.find('\n', start);
                std::string line = all.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
                if (!line.empty()) lines.push_back(line);
                if (nl == std::string::npos) break;
                start = nl + 1;
            }
            free(text);
            if (lines.empty()) die("prompt file %s: no non-empty line (one prompt per line)", prompt_file);
        }
        for (size_t i = 0; i < lines.size(); i++) {
            std::vector<int> ids;
            if (byte_level) {
                for (size_t k = 0; k < lines[i].size(); k++) ids.push_back((unsigned char)lines[i][k]);
            } else {
                int* enc;
                size_t n;
                if (bpe_encode(&bpe, lines[i].c_str(), lines[i].size(), &enc, &n, err, sizeof err) != 0)
                    die("prompt %zu: %s", i + 1, err);
                ids.assign(enc, enc + n);
                free(enc);
            }
            prompts.push_back(ids);
        }
    }
    if (prompts.empty()) die("no prompt");
    for (size_t i = 0; i < prompts.size(); i++) {
        if (prompts[i].empty()) {
            if (eot < 0) die("prompt %zu is empty", i + 1);
            prompts[i].push_back(eot); /* an empty prompt starts from end-of-text, as a new document does */
        }
    }
    int S = batch > 0 ? batch : (int)prompts.size();
    std::vector<int*> pp(S);
    std::vector<int> lens(S);
    /* what the prefill reads: the whole prompt, or with -D its last document (from its last separator on) */
    int sep = doc_sep_id(ga.doc_sep, eot, c->vocab_size);
    std::vector<int*> pf(S);
    std::vector<int> pf_lens(S);
    int Tmax = 1;
    for (int s = 0; s < S; s++) {
        std::vector<int>& p = prompts[s % prompts.size()];
        pp[s] = p.data();
        lens[s] = (int)p.size();
        int first = 0;
        if (sep != DOC_SEP_NONE)
            for (int i = 0; i < lens[s]; i++) if (p[i] == sep) first = i;
        pf[s] = p.data() + first;
        pf_lens[s] = lens[s] - first;
        if (pf_lens[s] > Tmax) Tmax = pf_lens[s];
    }

    Decoder dec;
    decoder_create(&dec, &model, S, Tmax, max_new > 0 ? max_new : 1, &dopt);
    dec.sep = sep;
    std::vector<std::vector<int>> outs(S, std::vector<int>(max_new > 0 ? max_new : 1));
    std::vector<int*> outp(S);
    for (int s = 0; s < S; s++) outp[s] = outs[s].data();
    std::vector<int> n_out(S);
    GenOptions o = {temperature, top_p, top_k, max_new, eot, use_graph, seed};
    std::vector<double> ms_per_step;
    GenTiming tm = {0, 0, 0};
    for (int r = 0; r < repeats; r++) {
        tm = generate_batch(&dec, &model, pf.data(), pf_lens.data(), &o, outp.data(), n_out.data());
        if (tm.steps > 0) ms_per_step.push_back(tm.decode_s * 1000.0 / tm.steps);
    }

    if (!quiet) {
        for (int s = 0; s < S; s++) {
            if (S > 1) printf("[%d] ", s);
            for (int i = 0; i < lens[s]; i++) {
                int id = pp[s][i];
                if (byte_level) { if (id != eot) putchar(id); }
                else if (tok.init_ok) tokenizer_safe_print(tokenizer_decode(&tok, (uint32_t)id));
                else printf("%d ", id);
            }
            printf(byte_level || tok.init_ok ? "" : "| ");
            for (int i = 0; i < n_out[s]; i++) {
                int id = outs[s][i];
                if (byte_level) putchar(id);
                else if (tok.init_ok) tokenizer_safe_print(tokenizer_decode(&tok, (uint32_t)id));
                else printf("%d ", id);
            }
            printf("\n");
        }
        fflush(stdout);
    }
    std::sort(ms_per_step.begin(), ms_per_step.end());
    double med = ms_per_step.empty() ? 0 : ms_per_step[ms_per_step.size() / 2];
    size_t free_b, total_b;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    fprintf(stderr,
            "batch %d, prompt %d tokens (longest), prefill %.3f s; decode %d steps: median %.4f ms/step over %d run%s "
            "(%.0f tokens/s), %s, %s path, %s SSM state, launch overlap %s; decoder state %.2f GiB, GPU memory in "
            "use %.2f GiB\n",
            S, Tmax, tm.prefill_s, tm.steps, med, (int)ms_per_step.size(), ms_per_step.size() == 1 ? "" : "s",
            med > 0 ? S * 1000.0 / med : 0.0, use_graph ? "CUDA graph" : "no graph",
            dec.small ? "fused matvec" : dec.mma ? "tensor-core" : "cuBLASLt", dec.state_lowp ? PRECISION_NAME : "fp32",
            dec.overlap ? "on" : "off", dec.bytes / 1073741824.0, (total_b - free_b) / 1073741824.0);
    decoder_free(&dec);
    bpe_free(&bpe);
    tokenizer_free(&tok);
    matmul_destroy();
    return 0;
}
