/* gemm_avx2.c - AVX2+FMA SGEMM path: BLIS driver with a 6x16 micro-kernel
 * (12 ymm accumulators, B sliver loaded as 2 ymm, A broadcast per row). */
#pragma GCC target("avx2,fma")
#include <immintrin.h>
#include "gemm_isa.h"

#define GEMM_MR 6
#define GEMM_NR 16
#define GEMM_MC 144
#define GEMM_KC 256
#define GEMM_NC 4096
#define GEMM_FN gemm_driver_avx2

static void gemm_ukernel(int kc, const float *restrict Ap, const float *restrict Bp,
                         float *restrict C, int ldc, int mr, int nr, float cs,
                         const float *restrict bias) {
    __m256 c0[GEMM_MR], c1[GEMM_MR];
#pragma GCC unroll 8
    for (int i = 0; i < GEMM_MR; i++) { c0[i] = _mm256_setzero_ps(); c1[i] = _mm256_setzero_ps(); }
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(Bp), b1 = _mm256_load_ps(Bp + 8);
#pragma GCC unroll 8
        for (int i = 0; i < GEMM_MR; i++) {
            __m256 a = _mm256_broadcast_ss(Ap + i);
            c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
            c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
        }
        Ap += GEMM_MR;
        Bp += GEMM_NR;
    }
    if (mr == GEMM_MR && nr == GEMM_NR) {
        __m256 vcs = _mm256_set1_ps(cs);
        __m256 bb0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
        __m256 bb1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 8
        for (int i = 0; i < GEMM_MR; i++) {
            float *c = C + (size_t)i * ldc;
            __m256 v0 = _mm256_add_ps(c0[i], bb0), v1 = _mm256_add_ps(c1[i], bb1);
            if (cs != 0.0f) {
                v0 = _mm256_fmadd_ps(vcs, _mm256_loadu_ps(c), v0);
                v1 = _mm256_fmadd_ps(vcs, _mm256_loadu_ps(c + 8), v1);
            }
            _mm256_storeu_ps(c, v0);
            _mm256_storeu_ps(c + 8, v1);
        }
        return;
    }
    /* Ragged tile: spill to a small aligned tile, merge the valid corner. */
    float t[GEMM_MR * GEMM_NR] __attribute__((aligned(32)));
#pragma GCC unroll 8
    for (int i = 0; i < GEMM_MR; i++) {
        _mm256_store_ps(t + i * GEMM_NR, c0[i]);
        _mm256_store_ps(t + i * GEMM_NR + 8, c1[i]);
    }
    for (int i = 0; i < mr; i++) {
        float *c = C + (size_t)i * ldc;
        for (int j = 0; j < nr; j++) {
            float v = t[i * GEMM_NR + j];
            if (cs != 0.0f) v += cs * c[j];
            if (bias) v += bias[j];
            c[j] = v;
        }
    }
}

#include "gemm_impl.h"

size_t gemm_ws_avx2(void) { return (size_t)GEMM_KC * GEMM_NC + (size_t)GEMM_MC * GEMM_KC; }
