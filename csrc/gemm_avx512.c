/* gemm_avx512.c - AVX-512 SGEMM path: BLIS driver with an MR x NR micro-kernel
 * (MR*NR/16 zmm accumulators, B sliver loaded as NR/16 zmm, A broadcast per
 * row). Ragged columns use masked loads/stores, ragged rows are skipped. */
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#include <immintrin.h>
#include "gemm_isa.h"

#ifndef GEMM_MR
#define GEMM_MR 14
#define GEMM_NR 32
#define GEMM_MC 168
#define GEMM_KC 256
#define GEMM_NC 4096
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

#include "gemm_impl.h"

size_t gemm_ws_avx512(void) { return (size_t)GEMM_KC * GEMM_NC + (size_t)GEMM_MC * GEMM_KC; }
