/*
 * export_mamba2.c: writes a model (a mamba2.c checkpoint, or an HF / mamba_ssm folder) as a folder that
 * HF transformers' Mamba2ForCausalLM.from_pretrained loads (config.json + model.safetensors, fp32), or with
 * mamba_ssm's names. The weights only: the optimizer state stays in the checkpoint.
 *
 *   ./export_mamba2 -e log_130m/ckpt_00004921.bin -o mamba2-130m-mine              (HF transformers)
 *   ./export_mamba2 -e log_130m/ckpt_00004921.bin -o mamba2-130m-mssm -s mamba_ssm   (mamba_ssm names)
 *
 * ngroups > 1 is refused for HF transformers (its gated norm normalizes over all channels, SPEC.md section 8)
 * unless -f 1 is given, with a warning that HF's logits will differ.
 *
 *   ./export_mamba2 --verify log_130m/ckpt_*.bin      checks each checkpoint's header, size and checksum; exit 1 if
 *                                                      any is corrupt (nothing is written)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/utils.h"
#include "llmc/mamba2_model.h"
#include "llmc/hf_io.h"

static void usage(void) {
    fprintf(stderr,
            "Usage: ./export_mamba2 -e MODEL -o DIR [-s transformers|mamba_ssm] [-f 0|1]\n"
            "Writes MODEL (a mamba2.c checkpoint, or an HF / mamba_ssm model folder) as a model folder.\n"
            "  -e MODEL  the model to export\n"
            "  -o DIR    the output folder (created; config.json and model.safetensors are written into it)\n"
            "  -s STYLE  transformers (default: Mamba2ForCausalLM.from_pretrained loads it) or mamba_ssm (its names)\n"
            "  -f 1      force the HF export of an ngroups > 1 model (HF computes its gated norm differently)\n"
            "  -h        this help\n"
            "   or: ./export_mamba2 --verify CHECKPOINT...\n"
            "Checks each checkpoint (header, size, checksum) and prints OK or what is wrong; exit status 1 if any is\n"
            "corrupt. Checkpoints of format version 1 (no checksum) are checked for header and size only.\n");
}

static int verify_main(int argc, char** argv) {
    if (argc < 3) { usage(); die("--verify needs one or more checkpoint files"); }
    int bad = 0;
    for (int i = 2; i < argc; i++) {
        CheckpointInfo info;
        char err[1024];
        if (checkpoint_verify(argv[i], &info, err, sizeof(err)) != 0) {
            printf("CORRUPT %s\n", err);
            bad++;
        } else {
            printf("OK      %s: step %llu, %s, format version %d%s\n", argv[i],
                   (unsigned long long)info.state[CKPT_S_STEP],
                   info.has_optimizer ? "weights and optimizer state" : "weights only", info.version,
                   info.version < 2 ? " (no checksum: header and size checked only)" : ", checksum verified");
        }
    }
    return bad ? 1 : 0;
}

int main(int argc, char** argv) {
    if (argc >= 2 && strcmp(argv[1], "--verify") == 0) return verify_main(argc, argv);
    const char* model = NULL;
    const char* out = NULL;
    HfStyle style = HF_STYLE_TRANSFORMERS;
    int force = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(); return 0; }
        if (i + 1 >= argc || argv[i][0] != '-' || strlen(argv[i]) != 2) { usage(); die("bad argument '%s'", argv[i]); }
        const char* v = argv[++i];
        switch (argv[i - 1][1]) {
        case 'e': model = v; break;
        case 'o': out = v; break;
        case 's':
            if (!strcmp(v, "transformers")) style = HF_STYLE_TRANSFORMERS;
            else if (!strcmp(v, "mamba_ssm")) style = HF_STYLE_MAMBA_SSM;
            else die("-s %s: the styles are transformers and mamba_ssm", v);
            break;
        case 'f': force = atoi(v); break;
        default: usage(); die("unknown flag %s", argv[i - 1]);
        }
    }
    if (model == NULL || out == NULL) { usage(); die("-e MODEL and -o DIR are required"); }
    Mamba2Config c;
    float* params = NULL;
    char err[1024];
    if (model_load_weights(model, &c, &params, err, sizeof(err)) != 0) die("%s", err);
    if (hf_export(out, &c, params, style, force, err, sizeof(err)) != 0) die("%s", err);
    printf("exported %s to %s (%s)\n", model, out, style == HF_STYLE_TRANSFORMERS ? "HF transformers" : "mamba_ssm");
    free(params);
    return 0;
}
