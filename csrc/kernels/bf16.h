/* bf16.h - FP32 <-> BF16 conversion (round to nearest even, NaN-safe).
 *
 * A BF16 value is the top 16 bits of an FP32. FP32 -> BF16 rounds to
 * nearest, ties to even, in integer arithmetic (so every path gives the
 * same bits, denormals included, independent of MXCSR); NaN stays NaN (sign
 * and top payload kept, quiet bit set) instead of rounding into Inf;
 * values above the largest finite BF16 round to Inf as IEEE requires.
 * BF16 -> FP32 is exact. */
#ifndef CLLM_BF16_H
#define CLLM_BF16_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t cllm_bf16_from_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float cllm_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* dst[i] = bf16(src[i]) / float(src[i]) for i < n, on the given ISA
 * (CLLM_ISA_AVX512 vectorised, anything else the scalar loop). The narrowing
 * may run in place, dst == (uint16_t *)src: both loops go front to back and
 * read each float before writing the lower-addressed BF16 values (train.c
 * rounds dlogits rows this way). */
void cllm_f32_to_bf16_n(int isa, uint16_t *dst, const float *src, size_t n);
void cllm_bf16_to_f32_n(int isa, float *dst, const uint16_t *src, size_t n);
#endif
