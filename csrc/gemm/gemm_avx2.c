/* gemm_avx2.c - AVX2+FMA SGEMM path: BLIS driver with a 6x16 micro-kernel
 * (12 ymm accumulators, B sliver loaded as 2 ymm, A broadcast per row) and
 * its own block packers. Only 16 ymm registers exist without AVX-512VL, so
 * the register block is 6x16 or 4x24: measured on Zen 4 (1 thread, config-B
 * shapes), both micro-kernels alone reach 97% of the FMA peak (B sliver in
 * L1, A in L2) and 4x24 runs 2% slower geomean inside the GEMM. Most of the
 * remaining loss is packing, hence the packers below. */
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
        _mm_storeu_si64(p, _mm_castps_si128(x));
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
 * written next, so only the sliver's last column needs a partial store.
 * pf: the next sliver's first row (pf_rows rows, stride ld), prefetched
 * while this one is packed (short row runs train the hardware prefetchers
 * too late), or pf_rows = 0. */
static void gemm_pack_t_avx2(const float *src, size_t ld, int rows, int kc, float scale,
                             float *restrict dst, int W, const float *pf, int pf_rows) {
    __m256 vs = _mm256_set1_ps(scale);
    for (int r0 = 0; r0 < W; r0 += 8) {
        int wl = W - r0 < 8 ? W - r0 : 8;
        int rv = rows - r0 < 0 ? 0 : rows - r0 < wl ? rows - r0 : wl;
        int pv = pf_rows - r0 < 0 ? 0 : pf_rows - r0 < wl ? pf_rows - r0 : wl;
        const float *s0 = src + (size_t)r0 * ld;
        for (int k0 = 0; k0 < kc; k0 += 8) {
            int kt = kc - k0 < 8 ? kc - k0 : 8;
            for (int i = 0; i < pv; i++) _mm_prefetch((const char *)(pf + (size_t)(r0 + i) * ld + k0), _MM_HINT_T0);
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
}

/* Rows of op(A) with ta / op(B) without tb are packed GEMM_PACK_KB rows at a
 * time across all slivers, so each source row is read in one sequential run
 * (a sliver at a time would read a short run of every row, rows a page or
 * more apart, which the hardware prefetchers do not cross). */
#define GEMM_PACK_KB 8

/* One sliver row: W (= GEMM_MR or GEMM_NR) values of src times alpha into o,
 * zero-padded past n; full MR rows scale, full NR rows (alpha is 1) copy. */
static inline void gemm_pack_row_avx2(float *restrict o, const float *a, int n, int W, float alpha) {
    if (n == W && W == GEMM_NR) {
        _mm256_store_ps(o, _mm256_loadu_ps(a));
        _mm256_store_ps(o + 8, _mm256_loadu_ps(a + 8));
    } else if (n == W && W == GEMM_MR) {
        __m128 va = _mm_set1_ps(alpha);
        _mm_storeu_ps(o, _mm_mul_ps(va, _mm_loadu_ps(a)));
        /* two floats: unaligned 64-bit load/store (no alignment assumed) */
        __m128 hi = _mm_mul_ps(va, _mm_castsi128_ps(_mm_loadu_si64(a + 4)));
        _mm_storeu_si64(o + 4, _mm_castps_si128(hi));
    } else {
        int i = 0;
        for (; i < n; i++) o[i] = alpha * a[i];
        for (; i < W; i++) o[i] = 0.0f;
    }
}

/* Pack an operand whose k-th row holds the block's n values contiguously
 * (M[k*ld + c], c < n; c0 is the block's first column, for the prefetch)
 * into slivers of width W: dst[s*kc + k*W + (c - s)].
 * GEMM_PACK_KB rows at a time across all slivers, prefetching the next rows
 * about once per 64-byte line. Used by the A packer (W = MR, scaled by alpha)
 * and the B packer (W = NR, alpha 1). */
static inline void gemm_pack_rows_avx2(const float *M, size_t ld, int c0, int n, int kc, int W, float alpha,
                                       float *restrict dst) {
    for (int k0 = 0; k0 < kc; k0 += GEMM_PACK_KB) {
        int kb = kc - k0 < GEMM_PACK_KB ? kc - k0 : GEMM_PACK_KB;
        int pkb = kc - k0 - kb < GEMM_PACK_KB ? kc - k0 - kb : GEMM_PACK_KB;
        for (int s = 0; s < n; s += W) {
            int w = n - s < W ? n - s : W;
            float *restrict d = dst + (size_t)s * kc + (size_t)k0 * W;
            const float *src = M + (size_t)k0 * ld + s;
            if (((c0 + s) & 15) < W) /* ~once per 64-byte line (always for W = 16): the next block's rows */
                for (int k = 0; k < pkb; k++)
                    _mm_prefetch((const char *)(src + (size_t)(GEMM_PACK_KB + k) * ld), _MM_HINT_T0);
            for (int k = 0; k < kb; k++) gemm_pack_row_avx2(d + (size_t)k * W, src + (size_t)k * ld, w, W, alpha);
        }
    }
}

/* A block (see gemm_pack_a in gemm_impl.h): dst[s*MR*kc + k*MR + i]. */
static int gemm_pack_a_avx2(int ta, const float *A, int lda, int i0, int p0, int mc, int kc, float alpha,
                            float *restrict dst) {
    if (!ta) {
        for (int s = 0; s < mc; s += GEMM_MR) {
            int mr = mc - s < GEMM_MR ? mc - s : GEMM_MR, left = mc - s - GEMM_MR;
            const float *src = A + (size_t)(i0 + s) * lda + p0;
            gemm_pack_t_avx2(src, (size_t)lda, mr, kc, alpha, dst + (size_t)s * kc, GEMM_MR,
                             left > 0 ? src + (size_t)GEMM_MR * lda : NULL, left > GEMM_MR ? GEMM_MR : left > 0 ? left : 0);
        }
        return 1;
    }
    /* op(A)[i][k] = A[k*lda + i]: each k gives MR contiguous values */
    gemm_pack_rows_avx2(A + (size_t)p0 * lda + i0, (size_t)lda, i0, mc, kc, GEMM_MR, alpha, dst);
    return 1;
}

/* B panel (see gemm_pack_b in gemm_impl.h): dst[t*NR*kc + k*NR + j]. */
static int gemm_pack_b_avx2(int tb, const float *B, int ldb, int p0, int j0, int kc, int nc,
                            float *restrict dst) {
    if (tb) {
        /* op(B)[k][j] = B[j*ldb + k]: rows of B are contiguous in k */
        for (int t = 0; t < nc; t += GEMM_NR) {
            int nr = nc - t < GEMM_NR ? nc - t : GEMM_NR, left = nc - t - GEMM_NR;
            const float *src = B + (size_t)(j0 + t) * ldb + p0;
            gemm_pack_t_avx2(src, (size_t)ldb, nr, kc, 1.0f, dst + (size_t)t * kc, GEMM_NR,
                             left > 0 ? src + (size_t)GEMM_NR * ldb : NULL, left > GEMM_NR ? GEMM_NR : left > 0 ? left : 0);
        }
        return 1;
    }
    /* op(B)[k][j] = B[k*ldb + j]: each k gives NR contiguous values */
    gemm_pack_rows_avx2(B + (size_t)p0 * ldb + j0, (size_t)ldb, j0, nc, kc, GEMM_NR, 1.0f, dst);
    return 1;
}
#define GEMM_PACK_A gemm_pack_a_avx2
#define GEMM_PACK_B gemm_pack_b_avx2

#include "gemm_impl.h"

void gemm_regblock_avx2(int *mr, int *nr) {
    *mr = GEMM_MR;
    *nr = GEMM_NR;
}
