/* gemm_avx512.c - AVX-512 SGEMM path: BLIS driver with an MR x NR micro-kernel
 * (MR*NR/16 zmm accumulators, B sliver loaded as NR/16 zmm, A broadcast per
 * row; 6x64 = 24 accumulators measured best on this Zen 5 against 14x32,
 * 12x32 and 8x48). Ragged columns use masked loads/stores, ragged rows are
 * skipped. The cache blocks MC x KC x NC come from blocking.c at run time. */
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#include <immintrin.h>
#include "gemm_isa.h"
#include "kernels/transpose_avx512.h"

#ifndef GEMM_MR
#define GEMM_MR 6
#define GEMM_NR 64
#endif
#define GEMM_NV (GEMM_NR / 16)
#define GEMM_FN gemm_driver_avx512

static void gemm_ukernel(int kc, const float *restrict Ap, const float *restrict Bp,
                         float *restrict C, int ldc, int mr, int nr, float cs,
                         const float *restrict bias) {
    __m512 acc[GEMM_MR][GEMM_NV];
#pragma GCC unroll 16
    for (int i = 0; i < GEMM_MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < GEMM_NV; v++) acc[i][v] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 b[GEMM_NV];
#pragma GCC unroll 4
        for (int v = 0; v < GEMM_NV; v++) b[v] = _mm512_load_ps(Bp + 16 * v);
#pragma GCC unroll 16
        for (int i = 0; i < GEMM_MR; i++) {
            __m512 a = _mm512_set1_ps(Ap[i]);
#pragma GCC unroll 4
            for (int v = 0; v < GEMM_NV; v++) acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);
        }
        Ap += GEMM_MR;
        Bp += GEMM_NR;
    }
    __mmask16 m[GEMM_NV];
#pragma GCC unroll 4
    for (int v = 0; v < GEMM_NV; v++) {
        int left = nr - 16 * v;
        m[v] = left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1u);
    }
    __m512 bb[GEMM_NV];
#pragma GCC unroll 4
    for (int v = 0; v < GEMM_NV; v++)
        bb[v] = bias ? _mm512_maskz_loadu_ps(m[v], bias + 16 * v) : _mm512_setzero_ps();
    __m512 vcs = _mm512_set1_ps(cs);
#pragma GCC unroll 16
    for (int i = 0; i < GEMM_MR; i++) {
        if (i >= mr) break;
        float *c = C + (size_t)i * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < GEMM_NV; v++) {
            __m512 r = _mm512_add_ps(acc[i][v], bb[v]);
            if (cs != 0.0f) r = _mm512_fmadd_ps(vcs, _mm512_maskz_loadu_ps(m[v], c + 16 * v), r);
            _mm512_mask_storeu_ps(c + 16 * v, m[v], r);
        }
    }
}

/* Transposing packer (see gemm_impl.h): dst[k*W + r] = scale*src[r*ld + k]. */
static int gemm_pack_t_avx512(const float *src, size_t ld, int rows, int kc, float scale,
                              float *restrict dst, int W) {
    __m512 vs = _mm512_set1_ps(scale);
    for (int r0 = 0; r0 < W; r0 += 16) {
        int wl = W - r0 < 16 ? W - r0 : 16;
        int rv = rows - r0 < 0 ? 0 : rows - r0 < wl ? rows - r0 : wl;
        __mmask16 sm = (__mmask16)((1u << wl) - 1u);
        for (int k0 = 0; k0 < kc; k0 += 16) {
            int kt = kc - k0 < 16 ? kc - k0 : 16;
            __mmask16 lm = (__mmask16)((1u << kt) - 1u);
            __m512 r[16];
            if (rv == 16 && kt == 16) {
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++)
                    r[i] = _mm512_mul_ps(vs, _mm512_loadu_ps(src + (size_t)(r0 + i) * ld + k0));
            } else {
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++)
                    r[i] = i < rv ? _mm512_mul_ps(vs, _mm512_maskz_loadu_ps(
                                                          lm, src + (size_t)(r0 + i) * ld + k0))
                                  : _mm512_setzero_ps();
            }
            cllm_tr16_ps(r);
            float *d = dst + (size_t)k0 * W + r0;
            if (kt == 16) {
#pragma GCC unroll 16
                for (int k = 0; k < 16; k++) _mm512_mask_storeu_ps(d + (size_t)k * W, sm, r[k]);
            } else {
                for (int k = 0; k < kt; k++) _mm512_mask_storeu_ps(d + (size_t)k * W, sm, r[k]);
            }
        }
    }
    return 1;
}
#define GEMM_PACK_T gemm_pack_t_avx512

#include "gemm_impl.h"

void gemm_regblock_avx512(int *mr, int *nr) {
    *mr = GEMM_MR;
    *nr = GEMM_NR;
}
