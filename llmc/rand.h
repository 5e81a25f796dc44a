/*
 * rand.h: a small seeded random number generator with a one-word state.
 * The state is a single uint64 so a checkpoint can store it and a resumed run draws the same numbers.
 * splitmix64 (Vigna) for the stream; Box-Muller for normals. Same seed, same numbers, on every machine.
 */
#ifndef MAMBA2_RAND_H
#define MAMBA2_RAND_H

#include <math.h>
#include <stdint.h>

typedef struct { uint64_t state; } Rng;

static inline void rng_seed(Rng* r, uint64_t seed) { r->state = seed; }

static inline uint64_t rng_u64(Rng* r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [0, 1), 53 random bits */
static inline double rng_uniform(Rng* r) { return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

static inline double rng_uniform_range(Rng* r, double lo, double hi) { return lo + (hi - lo) * rng_uniform(r); }

/* standard normal; uses two uniforms per draw (no cached second value, so the state alone defines the stream) */
static inline double rng_normal(Rng* r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
