/* gemm_bf16_pack.c - portable (plain C) packers and epilogue of the BF16
 * GEMM: the same packed layouts as the AVX-512 ones (gemm_bf16_impl.h) and
 * the same epilogue arithmetic (one fused multiply-add per term), for the
 * micro-kernels that must run on any CPU (the emulated AMX kernel). */
#include <math.h>
#include <string.h>
#include "kernels/bf16.h"
#include "gemm_bf16_impl.h"

/* op(X)[r][c] of a row-major X (trans: X is stored transposed), as BF16 */
static inline uint16_t op_bf16(const void *X, int x_bf16, int ld, int trans, int r, int c) {
    size_t idx = trans ? (size_t)c * ld + r : (size_t)r * ld + c;
    return x_bf16 ? ((const uint16_t *)X)[idx] : cllm_bf16_from_f32(((const float *)X)[idx]);
}

void bgemm_pack_a_portable(int ta, const void *A, int a_bf16, int lda, int i0, int p0, int mc, int kc, int kcp,
                           uint16_t *dst, int MR) {
    int mcp = (mc + MR - 1) / MR * MR;
    for (int r = 0; r < mcp; r++) {
        uint16_t *d = dst + (size_t)r * kcp;
        int kv = r < mc ? kc : 0;
        for (int k = 0; k < kv; k++) d[k] = op_bf16(A, a_bf16, lda, ta, i0 + r, p0 + k);
        memset(d + kv, 0, sizeof(uint16_t) * (size_t)(kcp - kv));
    }
}

void bgemm_pack_b_portable(int tb, const void *B, int b_bf16, int ldb, int p0, int j0, int kc, int nc, int kcp,
                           uint16_t *dst, int NR) {
    int np = kcp / 2;
    for (int t = 0; t < nc; t += NR) {
        uint16_t *d = dst + (size_t)t * kcp;
        int nr = nc - t < NR ? nc - t : NR;
        for (int p = 0; p < np; p++)
            for (int j = 0; j < NR; j++)
                for (int e = 0; e < 2; e++) {
                    int k = 2 * p + e;
                    d[((size_t)p * NR + j) * 2 + e] =
                        j < nr && k < kc ? op_bf16(B, b_bf16, ldb, tb, p0 + k, j0 + t + j) : 0;
                }
    }
}

void bgemm_store_tile_portable(const float *acc, int ldt, float *C, int ldc, int mr, int nr, float alpha,
                               float cs, const float *bias) {
    for (int i = 0; i < mr; i++) {
        float *c = C + (size_t)i * ldc;
        for (int j = 0; j < nr; j++) {
            float r = fmaf(alpha, acc[(size_t)i * ldt + j], bias ? bias[j] : 0.0f);
            c[j] = cs != 0.0f ? fmaf(cs, c[j], r) : r;
        }
    }
}
