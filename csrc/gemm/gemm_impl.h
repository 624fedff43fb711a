/* gemm_impl.h - BLIS-style SGEMM driver template (included once per ISA).
 *
 * The including file defines, before #include:
 *   GEMM_MR, GEMM_NR            register block (rows of A, columns of B)
 *   GEMM_FN                     name of the generated driver function
 * The cache blocks MC, KC, NC come at run time (gemm_blocking, from the
 * detected cache sizes: blocking.c).
 * and a micro-kernel
 *   static void gemm_ukernel(int kc, const float *Ap, const float *Bp,
 *                            float *C, int ldc, int mr, int nr,
 *                            float cs, const float *bias);
 * which computes acc = Ap-sliver @ Bp-sliver (MR x NR, k-major packed) and
 * stores the top-left mr x nr of   acc + cs*C (+ bias[j])   into C, reading
 * C only when cs != 0.
 *
 * Layering (Goto/BLIS): for each NC-wide column panel of op(B), for each
 * KC-deep slice, op(B) is packed into KC x NR slivers (L3/L2 resident); for
 * each MC-tall row block op(A) is packed into MR x KC slivers (L2 resident);
 * the macro-kernel then walks NR slivers (L1 resident) x MR slivers.
 * Transposes are absorbed by the packing routines, alpha is folded into the
 * packed A, beta/bias are applied by the micro-kernel epilogue (beta on the
 * first KC slice, bias on the last). Ragged edges: packing zero-pads to full
 * MR/NR slivers, the kernel stores only the valid mr x nr corner.
 *
 * Optional: GEMM_PACK_T(src, ld, rows, kc, scale, dst, W) - a SIMD transposing
 * packer for the strided cases (A not transposed, B transposed): writes
 * dst[k*W + r] = scale * src[r*ld + k] for r < rows (zero for rows <= r < W),
 * k < kc; returns nonzero if it handled the sliver.
 * Optional: GEMM_PACK_A(ta, A, lda, i0, p0, mc, kc, alpha, dst) and
 * GEMM_PACK_B(tb, B, ldb, p0, j0, kc, nc, dst) - whole-block packers with
 * the contracts of gemm_pack_a / gemm_pack_b below; return nonzero if they
 * handled the block. */

#include <stddef.h>
#include <string.h>

/* Pack rows [i0, i0+mc) x cols [p0, p0+kc) of op(A), scaled by alpha, into
 * MR-tall slivers: dst[s*MR*kc + k*MR + i]. */
static void gemm_pack_a(int ta, const float *A, int lda, int i0, int p0, int mc, int kc,
                        float alpha, float *restrict dst) {
#ifdef GEMM_PACK_A
    if (GEMM_PACK_A(ta, A, lda, i0, p0, mc, kc, alpha, dst)) return;
#endif
    for (int s = 0; s < mc; s += GEMM_MR) {
        int mr = mc - s < GEMM_MR ? mc - s : GEMM_MR;
        float *restrict d = dst + (size_t)s * kc;
        if (ta) {
            /* op(A)[i][k] = A[k*lda + i]: each k gives MR contiguous values. */
            const float *src = A + (size_t)p0 * lda + i0 + s;
            if (mr == GEMM_MR) {
                for (int k = 0; k < kc; k++) {
                    const float *a = src + (size_t)k * lda;
                    for (int i = 0; i < GEMM_MR; i++) d[(size_t)k * GEMM_MR + i] = alpha * a[i];
                }
            } else {
                for (int k = 0; k < kc; k++) {
                    const float *a = src + (size_t)k * lda;
                    int i = 0;
                    for (; i < mr; i++) d[(size_t)k * GEMM_MR + i] = alpha * a[i];
                    for (; i < GEMM_MR; i++) d[(size_t)k * GEMM_MR + i] = 0.0f;
                }
            }
        } else {
            /* op(A)[i][k] = A[i*lda + k]: rows are contiguous in k. Walk
             * blocks of 8 k so each source row is read in cache-line runs. */
            const float *src = A + (size_t)(i0 + s) * lda + p0;
#ifdef GEMM_PACK_T
            if (GEMM_PACK_T(src, (size_t)lda, mr, kc, alpha, d, GEMM_MR)) continue;
#endif
            int k0 = 0;
            for (; k0 + 8 <= kc; k0 += 8) {
                for (int i = 0; i < mr; i++) {
                    const float *a = src + (size_t)i * lda + k0;
                    for (int k = 0; k < 8; k++) d[(size_t)(k0 + k) * GEMM_MR + i] = alpha * a[k];
                }
                for (int i = mr; i < GEMM_MR; i++)
                    for (int k = 0; k < 8; k++) d[(size_t)(k0 + k) * GEMM_MR + i] = 0.0f;
            }
            for (; k0 < kc; k0++) {
                int i = 0;
                for (; i < mr; i++) d[(size_t)k0 * GEMM_MR + i] = alpha * src[(size_t)i * lda + k0];
                for (; i < GEMM_MR; i++) d[(size_t)k0 * GEMM_MR + i] = 0.0f;
            }
        }
    }
}

/* Pack rows [p0, p0+kc) x cols [j0, j0+nc) of op(B) into NR-wide slivers:
 * dst[t*NR*kc + k*NR + j]. */
static void gemm_pack_b(int tb, const float *B, int ldb, int p0, int j0, int kc, int nc,
                        float *restrict dst) {
#ifdef GEMM_PACK_B
    if (GEMM_PACK_B(tb, B, ldb, p0, j0, kc, nc, dst)) return;
#endif
    for (int t = 0; t < nc; t += GEMM_NR) {
        int nr = nc - t < GEMM_NR ? nc - t : GEMM_NR;
        float *restrict d = dst + (size_t)t * kc;
        if (!tb) {
            const float *src = B + (size_t)p0 * ldb + j0 + t;
            if (nr == GEMM_NR) {
                for (int k = 0; k < kc; k++)
                    memcpy(d + (size_t)k * GEMM_NR, src + (size_t)k * ldb, sizeof(float) * GEMM_NR);
            } else {
                for (int k = 0; k < kc; k++) {
                    const float *b = src + (size_t)k * ldb;
                    int j = 0;
                    for (; j < nr; j++) d[(size_t)k * GEMM_NR + j] = b[j];
                    for (; j < GEMM_NR; j++) d[(size_t)k * GEMM_NR + j] = 0.0f;
                }
            }
        } else {
            /* op(B)[k][j] = B[j*ldb + k]: rows of B are contiguous in k. */
            const float *src = B + (size_t)(j0 + t) * ldb + p0;
#ifdef GEMM_PACK_T
            if (GEMM_PACK_T(src, (size_t)ldb, nr, kc, 1.0f, d, GEMM_NR)) continue;
#endif
            int k0 = 0;
            for (; k0 + 8 <= kc; k0 += 8) {
                for (int j = 0; j < nr; j++) {
                    const float *b = src + (size_t)j * ldb + k0;
                    for (int k = 0; k < 8; k++) d[(size_t)(k0 + k) * GEMM_NR + j] = b[k];
                }
                for (int j = nr; j < GEMM_NR; j++)
                    for (int k = 0; k < 8; k++) d[(size_t)(k0 + k) * GEMM_NR + j] = 0.0f;
            }
            for (; k0 < kc; k0++) {
                int j = 0;
                for (; j < nr; j++) d[(size_t)k0 * GEMM_NR + j] = src[(size_t)j * ldb + k0];
                for (; j < GEMM_NR; j++) d[(size_t)k0 * GEMM_NR + j] = 0.0f;
            }
        }
    }
}

/* Split n into ceil(n/cap) near-equal blocks, each rounded up to a multiple
 * of q (and never above cap, which is itself a multiple of q). */
static int gemm_block(int n, int cap, int q) {
    int nb = (n + cap - 1) / cap;
    int b = (n + nb - 1) / nb;
    b = (b + q - 1) / q * q;
    return b > cap ? cap : b;
}

/* ---- small-M path (M <= GEMM_SMALL_M, e.g. one token at generation time).
 * Packing B would cost as much memory traffic as the product itself, so B is
 * streamed in place; only alpha*op(A) (M x K) is copied into ws. */
#define GEMM_SMALL_M 4
#define GEMM_SMALL_JB 64

static inline void gemm_small_store(float *c, float v, float beta, const float *bias, int j) {
    if (beta != 0.0f) v += beta * *c;
    if (bias) v += bias[j];
    *c = v;
}

/* op(B) = B (K x N, rows contiguous in n): C[i, j0:j0+JB] accumulated over k. */
static inline __attribute__((always_inline)) void
gemm_small_nn(const int M, int N, int K, const float *ap, const float *B, int ldb, float beta,
              float *C, int ldc, const float *bias) {
    for (int j0 = 0; j0 < N; j0 += GEMM_SMALL_JB) {
        int jb = N - j0 < GEMM_SMALL_JB ? N - j0 : GEMM_SMALL_JB;
        float acc[GEMM_SMALL_M][GEMM_SMALL_JB] __attribute__((aligned(64)));
        for (int i = 0; i < M; i++)
            for (int j = 0; j < GEMM_SMALL_JB; j++) acc[i][j] = 0.0f;
        if (jb == GEMM_SMALL_JB) {
            for (int k = 0; k < K; k++) {
                const float *restrict b = B + (size_t)k * ldb + j0;
                for (int i = 0; i < M; i++) {
                    float a = ap[(size_t)i * K + k];
                    for (int j = 0; j < GEMM_SMALL_JB; j++) acc[i][j] += a * b[j];
                }
            }
        } else {
            for (int k = 0; k < K; k++) {
                const float *restrict b = B + (size_t)k * ldb + j0;
                for (int i = 0; i < M; i++) {
                    float a = ap[(size_t)i * K + k];
                    for (int j = 0; j < jb; j++) acc[i][j] += a * b[j];
                }
            }
        }
        for (int i = 0; i < M; i++)
            for (int j = 0; j < jb; j++)
                gemm_small_store(C + (size_t)i * ldc + j0 + j, acc[i][j], beta, bias, j0 + j);
    }
}

/* op(B) = B^T (B is N x K, rows contiguous in k): dot products with 64
 * partial sums (several independent vector FMA chains), then 16, then scalar. */
static inline __attribute__((always_inline)) void
gemm_small_nt(const int M, int N, int K, const float *ap, const float *B, int ldb, float beta,
              float *C, int ldc, const float *bias) {
    int K64 = K & ~63, K16 = K & ~15;
    for (int j = 0; j < N; j++) {
        const float *restrict b = B + (size_t)j * ldb;
        float part[GEMM_SMALL_M][64] __attribute__((aligned(64)));
        for (int i = 0; i < M; i++)
            for (int l = 0; l < 64; l++) part[i][l] = 0.0f;
        for (int k = 0; k < K64; k += 64)
            for (int i = 0; i < M; i++) {
                const float *restrict a = ap + (size_t)i * K + k;
                for (int l = 0; l < 64; l++) part[i][l] += a[l] * b[k + l];
            }
        for (int k = K64; k < K16; k += 16)
            for (int i = 0; i < M; i++) {
                const float *restrict a = ap + (size_t)i * K + k;
                for (int l = 0; l < 16; l++) part[i][l] += a[l] * b[k + l];
            }
        for (int i = 0; i < M; i++) {
            for (int l = 16; l < 64; l++) part[i][l & 15] += part[i][l];
            float v = 0.0f;
            for (int l = 0; l < 16; l++) v += part[i][l];
            for (int k = K16; k < K; k++) v += ap[(size_t)i * K + k] * b[k];
            gemm_small_store(C + (size_t)i * ldc + j, v, beta, bias, j);
        }
    }
}

static void gemm_small(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc, const float *bias,
                       float *ws) {
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++)
            ws[(size_t)i * K + k] = alpha * (ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]);
#define GEMM_SMALL_CASE(m)                                                       \
    case m:                                                                      \
        if (tb) gemm_small_nt(m, N, K, ws, B, ldb, beta, C, ldc, bias);          \
        else gemm_small_nn(m, N, K, ws, B, ldb, beta, C, ldc, bias);             \
        break;
    switch (M) {
        GEMM_SMALL_CASE(1)
        GEMM_SMALL_CASE(2)
        GEMM_SMALL_CASE(3)
        default: GEMM_SMALL_CASE(4)
    }
#undef GEMM_SMALL_CASE
}

void GEMM_FN(GEMM_DRIVER_ARGS) {
    const int MC = bk->mc, KC = bk->kc, NC = bk->nc;
    if (M <= GEMM_SMALL_M && (size_t)M * K <= gemm_blocking_ws(bk)) {
        gemm_small(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, ws);
        return;
    }
    float *Bp = ws;                                   /* KC x NC */
    float *Ap = ws + (size_t)KC * NC;                 /* MC x KC */
    int kcb = gemm_block(K, KC, 8);
    int mcb = gemm_block(M, MC, GEMM_MR);
    int ncb = gemm_block(N, NC, GEMM_NR);
    int ncb_pad = (ncb + GEMM_NR - 1) / GEMM_NR * GEMM_NR;
    /* When all of K fits in the B buffer for one NC panel (K > KC and N
     * small: the model's K = 1152..4096, N = 384 products), pack the whole
     * panel first and run every K block of one MC row block back to back, so
     * that block of C stays in L2 instead of being swept once per K block. */
    int whole_k = K > kcb && (size_t)K * ncb_pad <= (size_t)KC * NC;
    for (int jc = 0; jc < N; jc += ncb) {
        int nc = N - jc < ncb ? N - jc : ncb;
        size_t ncp = (size_t)(nc + GEMM_NR - 1) / GEMM_NR * GEMM_NR;
        if (whole_k)
            for (int pc = 0; pc < K; pc += kcb)
                gemm_pack_b(tb, B, ldb, pc, jc, K - pc < kcb ? K - pc : kcb, nc, Bp + (size_t)pc * ncp);
        for (int pc0 = 0; pc0 < K; pc0 += kcb) {
            if (!whole_k) gemm_pack_b(tb, B, ldb, pc0, jc, K - pc0 < kcb ? K - pc0 : kcb, nc, Bp);
            for (int ic = 0; ic < M; ic += mcb) {
                int mc = M - ic < mcb ? M - ic : mcb;
                /* whole_k: this (ic) visit runs all K blocks; else just pc0. */
                int pc_end = whole_k ? K : pc0 + 1;
                for (int pc = pc0; pc < pc_end; pc += kcb) {
                    int kc = K - pc < kcb ? K - pc : kcb;
                    const float *Bk = whole_k ? Bp + (size_t)pc * ncp : Bp;
                    float cs = pc == 0 ? beta : 1.0f;
                    const float *bl = (pc + kc == K && bias) ? bias + jc : NULL;
                    gemm_pack_a(ta, A, lda, ic, pc, mc, kc, alpha, Ap);
                    for (int jr = 0; jr < nc; jr += GEMM_NR) {
                        int nr = nc - jr < GEMM_NR ? nc - jr : GEMM_NR;
                        const float *bp = Bk + (size_t)jr * kc;
                        for (int ir = 0; ir < mc; ir += GEMM_MR) {
                            int mr = mc - ir < GEMM_MR ? mc - ir : GEMM_MR;
                            gemm_ukernel(kc, Ap + (size_t)ir * kc, bp,
                                         C + (size_t)(ic + ir) * ldc + jc + jr, ldc, mr, nr, cs,
                                         bl ? bl + jr : NULL);
                        }
                    }
                }
            }
            if (whole_k) break;
        }
    }
}
