/* avx2_reduce.h - horizontal reductions of 256-bit vectors: the AVX2
 * counterparts of the _mm512_reduce_* intrinsics (same names with mm256_),
 * shared by every AVX2 body (kernels_simd.h at 8 lanes through simd_vec.h,
 * the AVX2 matrix-vector kernels of qmatvec.c). */
#ifndef CLLM_AVX2_REDUCE_H
#define CLLM_AVX2_REDUCE_H
#include <immintrin.h>
#include <stdint.h>

#define AVX2_REDUCE_FN static inline __attribute__((always_inline, target("avx2")))

/* fixed order: lanes (i, i+4) first, then (i, i+2), then (0, 1) */
AVX2_REDUCE_FN float mm256_reduce_add_ps(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

AVX2_REDUCE_FN float mm256_reduce_max_ps(__m256 a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

AVX2_REDUCE_FN double mm256_reduce_add_pd(__m256d a) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

AVX2_REDUCE_FN int32_t mm256_reduce_add_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}
#endif
