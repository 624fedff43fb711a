/* rng.h - the seeded random numbers of csrc/model/: splitmix64 and the
 * uniform / normal draws built on it (weight init in model.c, sampling in
 * sample.c). Header-only, so the users share it without depending on each
 * other. */
#ifndef CLLM_MODEL_RNG_H
#define CLLM_MODEL_RNG_H
#include <math.h>
#include <stdint.h>

static inline uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* uniform in [0, 1) with 53 random bits */
static inline double rng_uniform(uint64_t *s) { return (double)(splitmix64(s) >> 11) * (1.0 / 9007199254740992.0); }
/* standard normal (Box-Muller) */
static inline float rng_normal(uint64_t *s) {
    double u1 = rng_uniform(s), u2 = rng_uniform(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
#endif
