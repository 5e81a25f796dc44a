/*
 * model_load.cuh: a GPU model for the inference programs (generate_mamba2.cu, eval_mamba2.cu, dev/cuda/decode.cu):
 * from a checkpoint, a model folder, or a preset description given random weights (for timing).
 */
#ifndef MAMBA2_MODEL_LOAD_CUH
#define MAMBA2_MODEL_LOAD_CUH

#include <sys/stat.h>

#include "model.cuh"

/* returns 1 if the weights came from path, 0 if path was a model description given random weights */
static int gpu_load_model(GPUModel* m, const char* path, int allow_random) {
    char err[1024];
    Mamba2Config c;
    struct stat sb;
    if (stat(path, &sb) != 0 && allow_random) {
        if (config_parse(&c, path, err, sizeof err) != 0)
            die("-e %s: neither a checkpoint file, a model folder, nor a model description (%s)", path, err);
        fprintf(stderr, "note: -e %s is a model description: RANDOM weights (for timing only)\n", path);
        if (c.chunk_size < 16) c.chunk_size = 16; /* the GPU SSD kernels' smallest chunk */
        gpu_model_build(m, &c, 1337, NULL);
        return 0;
    }
    float* w = NULL;
    if (model_load_weights(path, &c, &w, err, sizeof err) != 0) die("%s", err);
    if (c.chunk_size < 16) c.chunk_size = 16;
    gpu_model_create(m, &c, w, NULL);
    free(w);
    return 1;
}

#endif
