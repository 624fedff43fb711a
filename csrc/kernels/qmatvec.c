/* qmatvec.c - int8 / BF16 matrix-vector kernels for inference (see
 * qmatvec.h for the formats and the exactness contract) and the weight and
 * activation quantizers.
 *
 * Paths: scalar reference; AVX2 (int8: vpmaddubsw on |x| and sign(x)*w, no
 * saturation because both sides are in [-127, 127]; bf16: widen to FP32 and
 * FMA); AVX-512 (int8: vpdpbusd on the unsigned x + 128 with the per-row
 * correction; bf16: vdpbf16ps). Every SIMD body handles any cols (masked or
 * scalar tails) and works ONE row at a time with four accumulators: the
 * row is one sequential stream, which the hardware prefetchers follow
 * (measured on Zen 4, config-B BF16 weights in huge pages: 1 row per pass
 * 56 GB/s, 4 interleaved rows 28 GB/s; the x reloads hit L1). Selected at
 * run time from CPUID (runtime/cpu_features.c; target attributes, no
 * -march). The FP32 row bodies of both widths are written
 * once over simd_vec.h in kernels_simd.h (cllm_f32_rows_*). */
#include <math.h>
#include <string.h>
#include <immintrin.h>
#include "runtime/cpu_features.h"
#include "runtime/internal.h"
#include "kernels.h"
#include "avx2_reduce.h"
#include "transpose_avx512.h"
#include "qmatvec.h"

/* ------------------------------------------------------ shared helpers */
static inline float bias_at(const float *bias, int r) { return bias ? bias[r] : 0.0f; }

void cllm_quantize_vec(int8_t *xq, float *xs, const float *x, int n) {
    if (n <= 0) { *xs = 0.0f; return; }
    float m = 0.0f;
    for (int i = 0; i < n; i++) { float a = fabsf(x[i]); m = a > m ? a : m; }
    if (!(m > 0.0f) || !isfinite(m)) {   /* zero (or non-finite) input */
        memset(xq, 0, (size_t)n);
        *xs = isfinite(m) ? 0.0f : NAN;
        return;
    }
    float inv = 127.0f / m;
    for (int i = 0; i < n; i++) {
        float v = x[i] * inv;
        xq[i] = (int8_t)(int)(v + copysignf(0.5f, v));
    }
    *xs = m / 127.0f;
}

float cllm_f16_to_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
    if (e == 0x1f) u = s | 0x7f800000u | (m << 13);            /* inf / nan */
    else if (e) u = s | ((e + 112) << 23) | (m << 13);         /* normal */
    else if (!m) u = s;                                        /* zero */
    else {                                                     /* subnormal */
        int k = 0;
        while (!(m & 0x400)) { m <<= 1; k++; }
        u = s | ((uint32_t)(113 - k) << 23) | ((m & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void cllm_q8_rowsums(int32_t *rowsum, const int8_t *q, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        const int8_t *w = q + (size_t)r * cols;
        int32_t s = 0;
        for (int i = 0; i < cols; i++) s += w[i];
        rowsum[r] = s;
    }
}

void cllm_quantize_rows(int8_t *q, float *scale, int32_t *rowsum, const float *src, int rows, int cols,
                        size_t rs, size_t cs) {
    if (cs == 1) {   /* row-major rows: one contiguous (vectorised) pass per row */
        for (int r = 0; r < rows; r++) {
            const float *s = src + (size_t)r * rs;
            int8_t *d = q + (size_t)r * cols;
            float m = 0.0f;
            for (int i = 0; i < cols; i++) { float a = fabsf(s[i]); m = a > m ? a : m; }
            float iv = m > 0.0f ? 127.0f / m : 0.0f;
            for (int i = 0; i < cols; i++) {
                float v = s[i] * iv;
                d[i] = (int8_t)(int)(v + copysignf(0.5f, v));
            }
            scale[r] = m / 127.0f;
        }
        cllm_q8_rowsums(rowsum, q, rows, cols);
        return;
    }
    /* pass 1: max |w| per output row, walking src in memory order */
    for (int r = 0; r < rows; r++) scale[r] = 0.0f;
    if (rs == 1) {
        for (int i = 0; i < cols; i++) {
            const float *s = src + (size_t)i * cs;
            for (int r = 0; r < rows; r++) { float a = fabsf(s[r]); scale[r] = a > scale[r] ? a : scale[r]; }
        }
    } else {
        for (int r = 0; r < rows; r++) {
            const float *s = src + (size_t)r * rs;
            float m = 0.0f;
            for (int i = 0; i < cols; i++) { float a = fabsf(s[i * cs]); m = a > m ? a : m; }
            scale[r] = m;
        }
    }
    /* pass 2: quantize in 64 x 64 tiles (a transpose when rs == 1) */
    enum { TB = 64 };
    for (int r0 = 0; r0 < rows; r0 += TB) {
        int r1 = r0 + TB < rows ? r0 + TB : rows;
        float inv[TB];
        for (int r = r0; r < r1; r++) inv[r - r0] = scale[r] > 0.0f ? 127.0f / scale[r] : 0.0f;
        for (int i0 = 0; i0 < cols; i0 += TB) {
            int i1 = i0 + TB < cols ? i0 + TB : cols;
            if (rs == 1) {
                for (int i = i0; i < i1; i++) {
                    const float *s = src + (size_t)i * cs;
                    for (int r = r0; r < r1; r++) {
                        float v = s[r] * inv[r - r0];
                        q[(size_t)r * cols + i] = (int8_t)(int)(v + copysignf(0.5f, v));
                    }
                }
            } else {
                for (int r = r0; r < r1; r++) {
                    const float *s = src + (size_t)r * rs;
                    int8_t *d = q + (size_t)r * cols;
                    float iv = inv[r - r0];
                    for (int i = i0; i < i1; i++) {
                        float v = s[(size_t)i * cs] * iv;
                        d[i] = (int8_t)(int)(v + copysignf(0.5f, v));
                    }
                }
            }
        }
    }
    for (int r = 0; r < rows; r++) scale[r] /= 127.0f;
    cllm_q8_rowsums(rowsum, q, rows, cols);
}

static void transpose_block(float *dst, const float *src, int rows, int cols, int r0, int r1, int c0, int c1) {
    for (int c = c0; c < c1; c++)
        for (int r = r0; r < r1; r++) dst[(size_t)r * cols + c] = src[(size_t)c * rows + r];
}

__attribute__((target("avx512f"))) static void transpose_avx512(float *dst, const float *src, int rows, int cols) {
    int r16 = rows & ~15, c16 = cols & ~15;
    for (int r0 = 0; r0 < r16; r0 += 16)
        for (int c0 = 0; c0 < c16; c0 += 16) {
            __m512 t[16];
            for (int i = 0; i < 16; i++) t[i] = _mm512_loadu_ps(src + (size_t)(c0 + i) * rows + r0);
            cllm_tr16_ps(t);
            for (int i = 0; i < 16; i++) _mm512_storeu_ps(dst + (size_t)(r0 + i) * cols + c0, t[i]);
        }
    transpose_block(dst, src, rows, cols, 0, r16, c16, cols);   /* ragged edges */
    transpose_block(dst, src, rows, cols, r16, rows, 0, cols);
}

void cllm_transpose_f32(int isa, float *dst, const float *src, int rows, int cols) {
    if (isa >= CLLM_ISA_AVX512) { transpose_avx512(dst, src, rows, cols); return; }
    enum { TB = 64 };   /* cache tiles */
    for (int r0 = 0; r0 < rows; r0 += TB)
        for (int c0 = 0; c0 < cols; c0 += TB)
            transpose_block(dst, src, rows, cols, r0, r0 + TB < rows ? r0 + TB : rows, c0, c0 + TB < cols ? c0 + TB : cols);
}

/* ------------------------------------------------------------- scalar */
static void q8_rows_scalar(float *y, const int8_t *q, const float *scale, const int32_t *rowsum,
                           const int8_t *xq, float xs, const float *bias, int cols, int lo, int hi) {
    (void)rowsum;
    for (int r = lo; r < hi; r++) {
        const int8_t *w = q + (size_t)r * cols;
        int32_t acc = 0;
        for (int i = 0; i < cols; i++) acc += (int32_t)xq[i] * (int32_t)w[i];
        y[r] = fmaf((float)acc, xs * scale[r], bias_at(bias, r));
    }
}

static void bf16_rows_scalar(float *y, const uint16_t *w, const uint16_t *xb, const float *bias, int cols,
                             int lo, int hi) {
    for (int r = lo; r < hi; r++) {
        const uint16_t *wr = w + (size_t)r * cols;
        float acc = 0.0f;
        for (int i = 0; i < cols; i++) acc += cllm_bf16_to_f32(xb[i]) * cllm_bf16_to_f32(wr[i]);
        y[r] = acc + bias_at(bias, r);
    }
}

static void f32_rows_scalar(float *y, const float *W, const float *x, const float *bias, int cols, int lo,
                            int hi) {
    for (int r = lo; r < hi; r++) {
        const float *w = W + (size_t)r * cols;
        float acc = 0.0f;
        for (int i = 0; i < cols; i++) acc += x[i] * w[i];
        y[r] = acc + bias_at(bias, r);
    }
}

/* --------------------------------------------------------------- AVX2 */
#define AVX2_FN __attribute__((target("avx2,fma"))) static

/* |x| * (sign(x) * w) summed in pairs (no saturation: |x|, |w| <= 127) */
AVX2_FN __m256i dot32_avx2(__m256i ax, __m256i xv, const int8_t *w, __m256i ones) {
    __m256i sw = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)w), xv);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), ones);
}

AVX2_FN void q8_rows_avx2(float *y, const int8_t *q, const float *scale, const int32_t *rowsum,
                          const int8_t *xq, float xs, const float *bias, int cols, int lo, int hi) {
    (void)rowsum;
    const __m256i ones = _mm256_set1_epi16(1);
    int n128 = cols & ~127, n32 = cols & ~31;
    for (int r = lo; r < hi; r++) {
        const int8_t *w = q + (size_t)r * cols;
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        int i = 0;
        for (; i < n128; i += 128) {
#define Q8_STEP(acc, o) { __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + i + (o))); \
            acc = _mm256_add_epi32(acc, dot32_avx2(_mm256_sign_epi8(xv, xv), xv, w + i + (o), ones)); }
            Q8_STEP(a0, 0) Q8_STEP(a1, 32) Q8_STEP(a2, 64) Q8_STEP(a3, 96)
        }
        for (; i < n32; i += 32) Q8_STEP(a0, 0)
#undef Q8_STEP
        int32_t acc = mm256_reduce_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)));
        for (; i < cols; i++) acc += (int32_t)xq[i] * (int32_t)w[i];
        y[r] = fmaf((float)acc, xs * scale[r], bias_at(bias, r));
    }
}

AVX2_FN __m256 bf16x8_avx2(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

AVX2_FN void bf16_rows_avx2(float *y, const uint16_t *w, const uint16_t *xb, const float *bias, int cols,
                            int lo, int hi) {
    int n32 = cols & ~31, n8 = cols & ~7;
    for (int r = lo; r < hi; r++) {
        const uint16_t *wr = w + (size_t)r * cols;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int i = 0;
        for (; i < n32; i += 32) {
            a0 = _mm256_fmadd_ps(bf16x8_avx2(xb + i), bf16x8_avx2(wr + i), a0);
            a1 = _mm256_fmadd_ps(bf16x8_avx2(xb + i + 8), bf16x8_avx2(wr + i + 8), a1);
            a2 = _mm256_fmadd_ps(bf16x8_avx2(xb + i + 16), bf16x8_avx2(wr + i + 16), a2);
            a3 = _mm256_fmadd_ps(bf16x8_avx2(xb + i + 24), bf16x8_avx2(wr + i + 24), a3);
        }
        for (; i < n8; i += 8) a0 = _mm256_fmadd_ps(bf16x8_avx2(xb + i), bf16x8_avx2(wr + i), a0);
        float acc = mm256_reduce_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; i < cols; i++) acc += cllm_bf16_to_f32(xb[i]) * cllm_bf16_to_f32(wr[i]);
        y[r] = acc + bias_at(bias, r);
    }
}

/* ------------------------------------------------------------ AVX-512 */

#define VNNI_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) static
#define BF16_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static

VNNI_FN void q8_rows_vnni(float *y, const int8_t *q, const float *scale, const int32_t *rowsum,
                          const int8_t *xq, float xs, const float *bias, int cols, int lo, int hi) {
    const __m512i off = _mm512_set1_epi8((char)0x80);   /* x + 128 as unsigned bytes */
    int n256 = cols & ~255, n64 = cols & ~63, t = cols - n64;
    __mmask64 tm = t ? (~0ULL >> (64 - t)) : 0;
#define XV(o) _mm512_xor_si512(_mm512_loadu_si512(xq + i + (o)), off)
#define WV(o) _mm512_loadu_si512(w + i + (o))
    for (int r = lo; r < hi; r++) {
        const int8_t *w = q + (size_t)r * cols;
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
        int i = 0;
        for (; i < n256; i += 256) {
            a0 = _mm512_dpbusd_epi32(a0, XV(0), WV(0));
            a1 = _mm512_dpbusd_epi32(a1, XV(64), WV(64));
            a2 = _mm512_dpbusd_epi32(a2, XV(128), WV(128));
            a3 = _mm512_dpbusd_epi32(a3, XV(192), WV(192));
        }
        for (; i < n64; i += 64) a0 = _mm512_dpbusd_epi32(a0, XV(0), WV(0));
        if (t)   /* masked-off weights load as 0, so their x + 128 adds nothing */
            a1 = _mm512_dpbusd_epi32(a1, _mm512_xor_si512(_mm512_maskz_loadu_epi8(tm, xq + n64), off),
                                     _mm512_maskz_loadu_epi8(tm, w + n64));
        int32_t exact = _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)))
                        - 128 * rowsum[r];
        y[r] = fmaf((float)exact, xs * scale[r], bias_at(bias, r));
    }
#undef XV
#undef WV
}

BF16_FN void bf16_rows_avx512(float *y, const uint16_t *w, const uint16_t *xb, const float *bias, int cols,
                              int lo, int hi) {
    int n128 = cols & ~127, n32 = cols & ~31, t = cols - n32;
    __mmask32 tm = t ? (__mmask32)(~0u >> (32 - t)) : 0;
#define XV(o) (__m512bh)_mm512_loadu_si512(xb + i + (o))
#define WV(o) (__m512bh)_mm512_loadu_si512(wr + i + (o))
    for (int r = lo; r < hi; r++) {
        const uint16_t *wr = w + (size_t)r * cols;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int i = 0;
        for (; i < n128; i += 128) {
            a0 = _mm512_dpbf16_ps(a0, XV(0), WV(0));
            a1 = _mm512_dpbf16_ps(a1, XV(32), WV(32));
            a2 = _mm512_dpbf16_ps(a2, XV(64), WV(64));
            a3 = _mm512_dpbf16_ps(a3, XV(96), WV(96));
        }
        for (; i < n32; i += 32) a0 = _mm512_dpbf16_ps(a0, XV(0), WV(0));
        if (t)
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_maskz_loadu_epi16(tm, xb + n32),
                                  (__m512bh)_mm512_maskz_loadu_epi16(tm, wr + n32));
        y[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))) + bias_at(bias, r);
    }
#undef XV
#undef WV
}

/* ------------------------------------------------------------ dispatch */
static const cllm_qops q_scalar = {"scalar", q8_rows_scalar, bf16_rows_scalar, f32_rows_scalar};
static const cllm_qops q_avx2 = {"avx2", q8_rows_avx2, bf16_rows_avx2, cllm_f32_rows_avx2};
static const cllm_qops q_avx512 = {"avx512", q8_rows_avx2, bf16_rows_avx2, cllm_f32_rows_avx512};
static const cllm_qops q_vnni_bf16 = {"avx512-vnni+bf16", q8_rows_vnni, bf16_rows_avx512, cllm_f32_rows_avx512};
static const cllm_qops q_vnni = {"avx512-vnni", q8_rows_vnni, bf16_rows_avx2, cllm_f32_rows_avx512};
static const cllm_qops q_bf16 = {"avx512-bf16", q8_rows_avx2, bf16_rows_avx512, cllm_f32_rows_avx512};

const cllm_qops *cllm_qops_for_isa(int isa) {
    if (isa == CLLM_ISA_SCALAR) return &q_scalar;
    if (isa == CLLM_ISA_AVX2) return &q_avx2;
    const cllm_cpu_features *f = cllm_cpu_features_get();
    if (f->avx512_vnni && f->avx512_bf16) return &q_vnni_bf16;
    if (f->avx512_vnni) return &q_vnni;
    if (f->avx512_bf16) return &q_bf16;
    return &q_avx512;
}

const cllm_qops *cllm_qops_current(void) { return cllm_qops_for_isa(cllm_isa_current()); }
