/* convert_bf16.c - FP32 <-> BF16 conversion kernels: scalar reference and
 * AVX-512 (integer round-to-nearest-even, bit-identical to the scalar one;
 * needs only AVX-512F/BW, not AVX512_BF16). Exported to tests through
 * cllm_convert_bf16 (cllm.h). */
#include "runtime/internal.h"
#include "kernels/bf16.h"
#include "kernels/bf16_simd.h"

static void f32_to_bf16_scalar(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = cllm_bf16_from_f32(src[i]);
}

static void bf16_to_f32_scalar(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = cllm_bf16_to_f32(src[i]);
}

BF16_AVX512 static void f32_to_bf16_avx512(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), bf16x16_from_f32(_mm512_loadu_ps(src + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm256_mask_storeu_epi16(dst + i, m, bf16x16_from_f32(_mm512_maskz_loadu_ps(m, src + i)));
    }
}

BF16_AVX512 static void bf16_to_f32_avx512(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(src + i))));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(dst + i, m, bf16x16_to_f32(_mm256_maskz_loadu_epi16(m, src + i)));
    }
}

void cllm_f32_to_bf16_n(int isa, uint16_t *dst, const float *src, size_t n) {
    if (isa == CLLM_ISA_AVX512) f32_to_bf16_avx512(dst, src, n);
    else f32_to_bf16_scalar(dst, src, n);
}

void cllm_bf16_to_f32_n(int isa, float *dst, const uint16_t *src, size_t n) {
    if (isa == CLLM_ISA_AVX512) bf16_to_f32_avx512(dst, src, n);
    else bf16_to_f32_scalar(dst, src, n);
}

CLLM_EXPORT int cllm_convert_bf16(int isa, int to_bf16, const void *src, void *dst, size_t n) {
    if (n == 0) return CLLM_OK;
    CLLM_CHECK_PTR(src, "src");
    CLLM_CHECK_PTR(dst, "dst");
    if (isa == CLLM_ISA_AUTO) isa = cllm_isa_current();
    if (isa != CLLM_ISA_SCALAR && isa != CLLM_ISA_AVX2 && isa != CLLM_ISA_AVX512)
        return cllm_fail(CLLM_ERR_INVALID, "convert_bf16: unknown ISA %d", isa);
    int a2 = 0, a5 = 0;
    cllm_cpu_detect(&a2, &a5);
    if (isa == CLLM_ISA_AVX512 && !a5)
        return cllm_fail(CLLM_ERR_UNSUPPORTED, "convert_bf16: avx512 is not supported by this CPU");
    if (to_bf16) cllm_f32_to_bf16_n(isa, dst, src, n);
    else cllm_bf16_to_f32_n(isa, dst, src, n);
    return CLLM_OK;
}
