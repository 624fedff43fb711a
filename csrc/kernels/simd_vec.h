/* simd_vec.h - the vector abstraction the hand-vectorised kernels are
 * written in: the type vf (SIMD_W floats), vd (SIMD_W / 2 doubles) and the
 * v_* operations, including v_exp. The includer defines SIMD_W (8: AVX2+FMA,
 * 16: AVX-512) and compiles under a matching `#pragma GCC target`; operations
 * that are one instruction at both widths are written once through VP(op)
 * (the _mm256_ / _mm512_ intrinsic of that name), the horizontal reductions
 * through VR(op) (_mm512_reduce_* or its avx2_reduce.h counterpart).
 * Used by kernels_simd.h (both widths) and attention_bf16.c (16 lanes, for
 * v_exp). */
#ifndef CLLM_SIMD_VEC_H
#define CLLM_SIMD_VEC_H
#include <immintrin.h>
#include "avx2_reduce.h"

#define SFN static inline __attribute__((always_inline))

#if SIMD_W == 16
typedef __m512 vf;
typedef __m512d vd;
typedef __m256 vhalf; /* half a vf */
#define VP(op) _mm512_##op
#define VR(op) _mm512_##op
SFN __mmask16 v_mask(int n) { return (__mmask16)((1u << n) - 1u); }
SFN vf v_loadn(const float *p, int n) { return _mm512_maskz_loadu_ps(v_mask(n), p); }
SFN vf v_loadn_fill(const float *p, int n, float fill) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), v_mask(n), p);
}
SFN void v_storen(float *p, vf v, int n) { _mm512_mask_storeu_ps(p, v_mask(n), v); }
SFN vf v_round(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
SFN vf v_from_bits(__m512i a) { return _mm512_castsi512_ps(a); }
/* lanes where a < b become 0 */
SFN vf v_zero_if_lt(vf x, vf a, vf b) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, b, _CMP_GE_OQ), x); }
/* lanes where x is NaN take x (so NaN propagates), others keep r */
SFN vf v_nan_pass(vf r, vf x) { return _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x); }
SFN vhalf v_lo_half(vf x) { return _mm512_castps512_ps256(x); }
SFN vhalf v_hi_half(vf x) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)); }
#elif SIMD_W == 8
typedef __m256 vf;
typedef __m256d vd;
typedef __m128 vhalf;
#define VP(op) _mm256_##op
#define VR(op) mm256_##op /* avx2_reduce.h */
SFN __m256i v_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
SFN vf v_loadn(const float *p, int n) { return _mm256_maskload_ps(p, v_mask(n)); }
SFN vf v_loadn_fill(const float *p, int n, float fill) {
    __m256i m = v_mask(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
SFN void v_storen(float *p, vf v, int n) { _mm256_maskstore_ps(p, v_mask(n), v); }
SFN vf v_round(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
SFN vf v_from_bits(__m256i a) { return _mm256_castsi256_ps(a); }
SFN vf v_zero_if_lt(vf x, vf a, vf b) { return _mm256_and_ps(x, _mm256_cmp_ps(a, b, _CMP_GE_OQ)); }
SFN vf v_nan_pass(vf r, vf x) { return _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); }
SFN vhalf v_lo_half(vf x) { return _mm256_castps256_ps128(x); }
SFN vhalf v_hi_half(vf x) { return _mm256_extractf128_ps(x, 1); }
#else
#error "SIMD_W must be 8 or 16"
#endif
#define VW SIMD_W

/* the same operation at either width */
SFN vf v_set1(float x) { return VP(set1_ps)(x); }
SFN vf v_zero(void) { return VP(setzero_ps)(); }
SFN vf v_load(const float *p) { return VP(loadu_ps)(p); }
SFN void v_store(float *p, vf v) { VP(storeu_ps)(p, v); }
SFN vf v_add(vf a, vf b) { return VP(add_ps)(a, b); }
SFN vf v_sub(vf a, vf b) { return VP(sub_ps)(a, b); }
SFN vf v_mul(vf a, vf b) { return VP(mul_ps)(a, b); }
SFN vf v_div(vf a, vf b) { return VP(div_ps)(a, b); }
SFN vf v_max(vf a, vf b) { return VP(max_ps)(a, b); }
SFN vf v_min(vf a, vf b) { return VP(min_ps)(a, b); }
SFN vf v_sqrt(vf a) { return VP(sqrt_ps)(a); }
SFN vf v_fmadd(vf a, vf b, vf c) { return VP(fmadd_ps)(a, b, c); }   /* a*b+c */
SFN vf v_fnmadd(vf a, vf b, vf c) { return VP(fnmadd_ps)(a, b, c); } /* c-a*b */
SFN vd vd_zero(void) { return VP(setzero_pd)(); }
SFN vd vd_add(vd a, vd b) { return VP(add_pd)(a, b); }
SFN float v_hsum(vf a) { return VR(reduce_add_ps)(a); }
SFN float v_hmax(vf a) { return VR(reduce_max_ps)(a); }
SFN double vd_hsum(vd a) { return VR(reduce_add_pd)(a); }

/* 2^n for integral float n in [-126, 127] */
SFN vf v_pow2i(vf n) { return v_from_bits(VP(slli_epi32)(VP(add_epi32)(VP(cvtps_epi32)(n), VP(set1_epi32)(127)), 23)); }

/* acc + the squares of the lanes of x, in double */
SFN vd v_sq_d_acc(vd acc, vf x) {
    vd lo = VP(cvtps_pd)(v_lo_half(x)), hi = VP(cvtps_pd)(v_hi_half(x));
    acc = VP(fmadd_pd)(lo, lo, acc);
    return VP(fmadd_pd)(hi, hi, acc);
}

/* exp(x): x = n ln2 + r, |r| <= ln2/2, e^r by a degree-7 Taylor polynomial
 * (truncation < 1e-8 relative), times 2^n. Inputs are clamped to [-87, 88];
 * below -87 the result is flushed to 0 (true value < 1.7e-38), above 88 it
 * saturates at e^88 (callers subtract a row max first). NaN stays NaN. */
SFN vf v_exp(vf x) {
    vf xc = v_min(v_max(x, v_set1(-87.0f)), v_set1(88.0f));
    vf n = v_round(v_mul(xc, v_set1(1.44269504088896341f)));
    vf r = v_fnmadd(n, v_set1(0.693145751953125f), xc);   /* ln2 high part */
    r = v_fnmadd(n, v_set1(1.428606765330187e-06f), r);   /* ln2 low part  */
    vf p = v_set1(1.0f / 5040.0f);
    p = v_fmadd(p, r, v_set1(1.0f / 720.0f));
    p = v_fmadd(p, r, v_set1(1.0f / 120.0f));
    p = v_fmadd(p, r, v_set1(1.0f / 24.0f));
    p = v_fmadd(p, r, v_set1(1.0f / 6.0f));
    p = v_fmadd(p, r, v_set1(0.5f));
    p = v_fmadd(p, r, v_set1(1.0f));
    p = v_fmadd(p, r, v_set1(1.0f));
    return v_nan_pass(v_zero_if_lt(v_mul(p, v_pow2i(n)), x, v_set1(-87.0f)), x);
}
#endif
