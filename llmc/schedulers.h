/*
 * schedulers.h: the learning-rate schedule of the GPT-3 "improved recipe" the Mamba-2 paper trains with:
 * linear warm-up from lr/warmup to lr over `warmup` steps, then cosine decay to lr * final_frac at max_steps.
 */
#ifndef MAMBA2_SCHEDULERS_H
#define MAMBA2_SCHEDULERS_H

#include <math.h>

static inline float lr_at_step(float lr, int warmup, float final_frac, int step, int max_steps) {
    float min_lr = lr * final_frac;
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (max_steps <= warmup) return lr;
    float ratio = (float)(step - warmup) / (float)(max_steps - warmup);
    if (ratio > 1.0f) ratio = 1.0f;
    float coeff = 0.5f * (1.0f + cosf(3.14159265358979f * ratio));
    return min_lr + coeff * (lr - min_lr);
}

#endif
