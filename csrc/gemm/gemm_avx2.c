/* gemm_avx2.c - AVX2+FMA SGEMM path: BLIS driver with a 6x16 micro-kernel
 * (12 ymm accumulators, B sliver loaded as 2 ymm, A broadcast per row). */
#pragma GCC target("avx2,fma")
#include <immintrin.h>
#include "gemm_isa.h"

#ifndef GEMM_MR
#define GEMM_MR 6
#define GEMM_NR 16
#endif
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

/* In-register 8x8 transpose: r[i] (row i) -> r[c] (column c). */
static inline void gemm_tr8(__m256 r[8]) {
    __m256 t[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* u[4h+e]: 128-bit half L holds column 4L+e of rows 4h..4h+3. */
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        u[4 * h + 0] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
        u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
        u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
        u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int e = 0; e < 4; e++) {
        r[e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x20);
        r[4 + e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x31);
    }
}

/* First n (0..8) lanes set, for maskload. */
static inline __m256i gemm_lanes8(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Store the first n (1..8) lanes of v. (AVX2 vmaskmovps stores are slow on
 * AMD cores, so partial stores are 4/2/1-lane pieces.) */
static inline void gemm_store_n(float *p, __m256 v, int n) {
    __m128 x = _mm256_castps256_ps128(v);
    if (n >= 4) {
        _mm_storeu_ps(p, x);
        if (n == 8) { _mm_storeu_ps(p + 4, _mm256_extractf128_ps(v, 1)); return; }
        p += 4;
        n -= 4;
        x = _mm256_extractf128_ps(v, 1);
    }
    if (n >= 2) {
        _mm_storel_pi((__m64 *)p, x);
        p += 2;
        n -= 2;
        x = _mm_movehl_ps(x, x);
    }
    if (n) _mm_store_ss(p, x);
}

/* Transposing packer (see gemm_impl.h): dst[k*W + r] = scale*src[r*ld + k].
 * 8x8 blocks are transposed in registers. Each column k of a block is W
 * floats of dst; for W < 8 (the A sliver, W = MR) column k is stored as a
 * full 8-lane vector whose W..7 lanes spill onto column k+1, which is
 * written next, so only the sliver's last column needs a partial store. */
static int gemm_pack_t_avx2(const float *src, size_t ld, int rows, int kc, float scale,
                            float *restrict dst, int W) {
    __m256 vs = _mm256_set1_ps(scale);
    for (int r0 = 0; r0 < W; r0 += 8) {
        int wl = W - r0 < 8 ? W - r0 : 8;
        int rv = rows - r0 < 0 ? 0 : rows - r0 < wl ? rows - r0 : wl;
        const float *s0 = src + (size_t)r0 * ld;
        for (int k0 = 0; k0 < kc; k0 += 8) {
            int kt = kc - k0 < 8 ? kc - k0 : 8;
            __m256 r[8];
            if (kt == 8) {
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++)
                    r[i] = i < rv ? _mm256_mul_ps(vs, _mm256_loadu_ps(s0 + (size_t)i * ld + k0))
                                  : _mm256_setzero_ps();
            } else {
                __m256i lm = gemm_lanes8(kt);
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++)
                    r[i] = i < rv ? _mm256_mul_ps(vs, _mm256_maskload_ps(s0 + (size_t)i * ld + k0, lm))
                                  : _mm256_setzero_ps();
            }
            gemm_tr8(r);
            float *d = dst + (size_t)k0 * W + r0;
            if (wl == 8) {
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++)
                    if (k < kt) _mm256_storeu_ps(d + (size_t)k * W, r[k]);
            } else if (wl == W) {
                int last = k0 + 8 >= kc ? kt - 1 : 8;  /* the sliver's last column */
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++)
                    if (k < kt) {
                        if (k == last) gemm_store_n(d + (size_t)k * W, r[k], wl);
                        else _mm256_storeu_ps(d + (size_t)k * W, r[k]);
                    }
            } else {
                for (int k = 0; k < kt; k++) gemm_store_n(d + (size_t)k * W, r[k], wl);
            }
        }
    }
    return 1;
}
#define GEMM_PACK_T gemm_pack_t_avx2

#include "gemm_impl.h"

void gemm_regblock_avx2(int *mr, int *nr) {
    *mr = GEMM_MR;
    *nr = GEMM_NR;
}
