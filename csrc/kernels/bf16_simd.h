/* bf16_simd.h - AVX-512 FP32 <-> BF16 helpers (integer round to nearest
 * even, same bits as cllm_bf16_from_f32). Functions using them carry
 * BF16_AVX512 (a target attribute: no -march flags needed). */
#ifndef CLLM_BF16_SIMD_H
#define CLLM_BF16_SIMD_H
#include <immintrin.h>

#define BF16_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))

/* 16 floats -> 16 rounded 32-bit words whose top halves are the BF16 bits
 * (low halves are garbage; use >> 16 or & 0xffff0000). */
BF16_AVX512 static inline __m512i bf16x16_round_hi(__m512 x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
}

/* 16 floats -> 16 BF16 */
BF16_AVX512 static inline __m256i bf16x16_from_f32(__m512 x) {
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(bf16x16_round_hi(x), 16));
}

/* 16 BF16 -> 16 floats (exact) */
BF16_AVX512 static inline __m512 bf16x16_to_f32(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* VNNI pair words: low half bf16(even), high half bf16(odd) */
BF16_AVX512 static inline __m512i bf16x16_pairs(__m512 even, __m512 odd) {
    return _mm512_or_si512(_mm512_srli_epi32(bf16x16_round_hi(even), 16),
                           _mm512_and_si512(bf16x16_round_hi(odd), _mm512_set1_epi32((int)0xffff0000u)));
}
#endif
