/* gemm_bf16_avx512.c - AVX-512 packers for the BF16 GEMM (FP32 or BF16
 * sources, conversion fused into packing, transposes done in registers) and
 * the AVX512-BF16 micro-kernel: MR x NR = 6 x 64, 24 zmm accumulators, per
 * K pair 4 B loads + 6 broadcast A pairs + 24 vdpbf16ps (the FP32 kernel's
 * measured-best 6x64 shape; each vdpbf16ps does 2 K steps). */
#include <string.h>
#include "runtime/internal.h"
#include "kernels/bf16.h"
#include "kernels/bf16_simd.h"
#include "gemm_bf16_impl.h"
#include "kernels/transpose_avx512.h"

#define BF16_KERNEL_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")))

static inline __mmask16 mask16(int n) {
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}
static inline __mmask32 mask32(int n) {
    return n >= 32 ? (__mmask32)0xffffffffu : n <= 0 ? (__mmask32)0 : (__mmask32)((1u << n) - 1u);
}

BF16_AVX512 void bgemm_pack_a_avx512(int ta, const void *A, int a_bf16, int lda, int i0, int p0, int mc,
                                     int kc, int kcp, uint16_t *dst, int MR) {
    int mcp = (mc + MR - 1) / MR * MR; /* packed rows: row r at dst + r*kcp */
    if (!ta) {
        for (int r = 0; r < mcp; r++) {
            uint16_t *d = dst + (size_t)r * kcp;
            if (r >= mc) { memset(d, 0, sizeof(uint16_t) * (size_t)kcp); continue; }
            if (a_bf16) {
                memcpy(d, (const uint16_t *)A + (size_t)(i0 + r) * lda + p0, sizeof(uint16_t) * (size_t)kc);
            } else {
                const float *s = (const float *)A + (size_t)(i0 + r) * lda + p0;
                int k = 0;
                for (; k + 16 <= kc; k += 16)
                    _mm256_storeu_si256((__m256i *)(d + k), bf16x16_from_f32(_mm512_loadu_ps(s + k)));
                if (k < kc)
                    _mm256_mask_storeu_epi16(d + k, mask16(kc - k),
                                             bf16x16_from_f32(_mm512_maskz_loadu_ps(mask16(kc - k), s + k)));
            }
            for (int k = kc; k < kcp; k++) d[k] = 0;
        }
        return;
    }
    /* op(A)[r][k] = A[k*lda + r]: 16 k-rows x 16 r-columns, transposed
     * (BF16 sources widened to 32-bit lanes for the same 16 x 16 transpose).
     * k outer, so the 16 source rows are read front to back (streaming);
     * the writes (16 BF16 per packed row) land in the L2-resident block. */
    const float *Af = A;
    const uint16_t *Ah = A;
    for (int k0 = 0; k0 < kcp; k0 += 16) {
        int kt = kc - k0;
        __mmask16 sm = mask16(kcp - k0);
        for (int r0 = 0; r0 < mcp; r0 += 16) {
            __mmask16 rm = mask16(mc - r0);
            int rows = mcp - r0 < 16 ? mcp - r0 : 16;
            __m512 v[16];
            if (a_bf16) {
#pragma GCC unroll 16
                for (int kk = 0; kk < 16; kk++)
                    v[kk] = kk < kt ? _mm512_castsi512_ps(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(
                                          rm, Ah + (size_t)(p0 + k0 + kk) * lda + i0 + r0)))
                                    : _mm512_setzero_ps();
                cllm_tr16_ps(v);
                for (int rr = 0; rr < rows; rr++)
                    _mm256_mask_storeu_epi16(dst + (size_t)(r0 + rr) * kcp + k0, sm,
                                             _mm512_cvtepi32_epi16(_mm512_castps_si512(v[rr])));
                continue;
            }
#pragma GCC unroll 16
            for (int kk = 0; kk < 16; kk++)
                v[kk] = kk < kt ? _mm512_maskz_loadu_ps(rm, Af + (size_t)(p0 + k0 + kk) * lda + i0 + r0)
                                : _mm512_setzero_ps();
            cllm_tr16_ps(v);
            for (int rr = 0; rr < rows; rr++)
                _mm256_mask_storeu_epi16(dst + (size_t)(r0 + rr) * kcp + k0, sm, bf16x16_from_f32(v[rr]));
        }
    }
}

BF16_AVX512 void bgemm_pack_b_avx512(int tb, const void *B, int b_bf16, int ldb, int p0, int j0, int kc,
                                     int nc, int kcp, uint16_t *dst, int NR) {
    int np = kcp / 2;
    if (!tb) {
        /* word (p, j) = rows 2p and 2p+1 of op(B) at column j: interleave.
         * Pair-row outer, so both source rows stream front to back once. */
        for (int p = 0; p < np; p++) {
            int k = 2 * p;
            for (int t = 0; t < nc; t += NR) {
                int nr = nc - t < NR ? nc - t : NR;
                uint16_t *d = dst + (size_t)t * kcp;
                for (int jb = 0; jb < NR; jb += 16) {
                    __mmask16 m = mask16(nr - jb);
                    size_t off0 = (size_t)(p0 + k) * ldb + j0 + t + jb, off1 = off0 + (size_t)ldb;
                    __m512i w;
                    if (b_bf16) {
                        const uint16_t *Bh = B;
                        __m512i e = k < kc ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, Bh + off0))
                                           : _mm512_setzero_si512();
                        __m512i o = k + 1 < kc ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, Bh + off1))
                                               : _mm512_setzero_si512();
                        w = _mm512_or_si512(e, _mm512_slli_epi32(o, 16));
                    } else {
                        const float *Bf = B;
                        __m512 e = k < kc ? _mm512_maskz_loadu_ps(m, Bf + off0) : _mm512_setzero_ps();
                        __m512 o = k + 1 < kc ? _mm512_maskz_loadu_ps(m, Bf + off1) : _mm512_setzero_ps();
                        w = bf16x16_pairs(e, o);
                    }
                    _mm512_storeu_si512(d + ((size_t)p * NR + jb) * 2, w);
                }
            }
        }
        return;
    }
    for (int t = 0; t < nc; t += NR) {
        int nr = nc - t < NR ? nc - t : NR;
        uint16_t *d = dst + (size_t)t * kcp;
        /* op(B)[k][j] = B[j*ldb + k]: rows of B are contiguous in k */
        for (int jb = 0; jb < NR; jb += 16) {
            int jv = nr - jb;
            if (b_bf16) {
                const uint16_t *Bh = B;
                for (int k0 = 0; k0 < kcp; k0 += 32) {
                    __mmask32 lm = mask32(kc - k0);
                    __m512 v[16];
#pragma GCC unroll 16
                    for (int jj = 0; jj < 16; jj++)
                        v[jj] = jj < jv ? _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(
                                              lm, Bh + (size_t)(j0 + t + jb + jj) * ldb + p0 + k0))
                                        : _mm512_setzero_ps();
                    cllm_tr16_ps(v);
                    for (int q = 0; q < 16 && k0 / 2 + q < np; q++)
                        _mm512_storeu_si512(d + ((size_t)(k0 / 2 + q) * NR + jb) * 2, _mm512_castps_si512(v[q]));
                }
            } else {
                const float *Bf = B;
                for (int k0 = 0; k0 < kcp; k0 += 16) {
                    __mmask16 lm = mask16(kc - k0);
                    __m512 v[16];
#pragma GCC unroll 16
                    for (int jj = 0; jj < 16; jj++)
                        v[jj] = jj < jv ? _mm512_maskz_loadu_ps(lm, Bf + (size_t)(j0 + t + jb + jj) * ldb + p0 + k0)
                                        : _mm512_setzero_ps();
                    cllm_tr16_ps(v);
                    for (int q = 0; q < 8 && k0 / 2 + q < np; q++)
                        _mm512_storeu_si512(d + ((size_t)(k0 / 2 + q) * NR + jb) * 2,
                                            bf16x16_pairs(v[2 * q], v[2 * q + 1]));
                }
            }
        }
    }
}

BF16_AVX512 void bgemm_store_tile_avx512(const float *acc, int ldt, float *C, int ldc, int mr, int nr,
                                         float alpha, float cs, const float *bias) {
    __m512 va = _mm512_set1_ps(alpha), vcs = _mm512_set1_ps(cs);
    for (int j0 = 0; j0 < nr; j0 += 16) {
        __mmask16 m = mask16(nr - j0);
        __m512 bb = bias ? _mm512_maskz_loadu_ps(m, bias + j0) : _mm512_setzero_ps();
        for (int i = 0; i < mr; i++) {
            float *c = C + (size_t)i * ldc + j0;
            __m512 r = _mm512_fmadd_ps(va, _mm512_loadu_ps(acc + (size_t)i * ldt + j0), bb);
            if (cs != 0.0f) r = _mm512_fmadd_ps(vcs, _mm512_maskz_loadu_ps(m, c), r);
            _mm512_mask_storeu_ps(c, m, r);
        }
    }
}

/* ---------------------------------------------------- micro-kernel */
#define UK_MR 6
#define UK_NR 64
#define UK_NV (UK_NR / 16)

BF16_KERNEL_TARGET static void ukernel_avx512bf16(int kcp, const uint16_t *restrict Ap,
                                                  const uint16_t *restrict Bp, float *restrict C, int ldc,
                                                  int mr, int nr, float alpha, float cs,
                                                  const float *restrict bias) {
    __m512 acc[UK_MR][UK_NV];
#pragma GCC unroll 8
    for (int i = 0; i < UK_MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < UK_NV; v++) acc[i][v] = _mm512_setzero_ps();
    const int np = kcp / 2;
    for (int p = 0; p < np; p++) {
        __m512bh b[UK_NV];
#pragma GCC unroll 4
        for (int v = 0; v < UK_NV; v++) b[v] = (__m512bh)_mm512_load_si512(Bp + (size_t)p * 2 * UK_NR + 32 * v);
#pragma GCC unroll 8
        for (int i = 0; i < UK_MR; i++) {
            int32_t pair;
            memcpy(&pair, Ap + (size_t)i * kcp + 2 * p, sizeof pair);
            __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 4
            for (int v = 0; v < UK_NV; v++) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, b[v]);
        }
    }
    __mmask16 m[UK_NV];
    __m512 bb[UK_NV];
#pragma GCC unroll 4
    for (int v = 0; v < UK_NV; v++) {
        m[v] = mask16(nr - 16 * v);
        bb[v] = bias ? _mm512_maskz_loadu_ps(m[v], bias + 16 * v) : _mm512_setzero_ps();
    }
    __m512 va = _mm512_set1_ps(alpha), vcs = _mm512_set1_ps(cs);
#pragma GCC unroll 8
    for (int i = 0; i < UK_MR; i++) {
        if (i >= mr) break;
        float *c = C + (size_t)i * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < UK_NV; v++) {
            __m512 r = _mm512_fmadd_ps(va, acc[i][v], bb[v]);
            if (cs != 0.0f) r = _mm512_fmadd_ps(vcs, _mm512_maskz_loadu_ps(m[v], c + 16 * v), r);
            _mm512_mask_storeu_ps(c + 16 * v, m[v], r);
        }
    }
}

const bgemm_kernel bgemm_kernel_avx512 = {"avx512_bf16", UK_MR, UK_NR, 2, bgemm_pack_a_avx512,
                                          bgemm_pack_b_avx512, ukernel_avx512bf16};
