/* gemm_bf16.c - BF16 x BF16 -> FP32 GEMM: the BLIS driver (cache blocking,
 * packing, macro-kernel) shared by the AVX512-BF16 and AMX micro-kernels
 * (and the emulated AMX one), the scalar reference, kernel selection, the
 * validating public entry cllm_gemm_bf16 and the packers' test entry. */
#include <stdlib.h>
#include <string.h>
#include "runtime/internal.h"
#include "kernels/bf16.h"
#include "runtime/cpu_features.h"
#include "gemm.h"
#include "gemm_bf16.h"
#include "gemm_bf16_impl.h"

size_t cllm_gemm_bf16_ws_bytes(void) {
    return sizeof(uint16_t) * ((size_t)BGEMM_KC * BGEMM_NC + (size_t)BGEMM_MC * BGEMM_KC);
}

size_t cllm_gemm_any_ws_floats(void) {
    size_t n = cllm_gemm_ws_floats(), b = (cllm_gemm_bf16_ws_bytes() + sizeof(float) - 1) / sizeof(float);
    return b > n ? b : n;
}

int cllm_bf16_kernel_usable(int kernel) {
    const cllm_cpu_features *f = cllm_cpu_features_get();
    switch (kernel) {
    case CLLM_BF16_KERNEL_SCALAR: return 1;
    case CLLM_BF16_KERNEL_AVX512: return f->avx512_bf16;
    case CLLM_BF16_KERNEL_AMX: return f->amx_bf16;
    case CLLM_BF16_KERNEL_AMX_EMUL: return 1;
    default: return 0;
    }
}

int cllm_bf16_kernel_best(int isa) {
    if (isa == CLLM_ISA_AVX512) {
        if (cllm_bf16_kernel_usable(CLLM_BF16_KERNEL_AMX)) return CLLM_BF16_KERNEL_AMX;
        if (cllm_bf16_kernel_usable(CLLM_BF16_KERNEL_AVX512)) return CLLM_BF16_KERNEL_AVX512;
    }
    return CLLM_BF16_KERNEL_SCALAR;
}

/* element idx of an FP32 or BF16 operand, as BF16 (the reference's reads) */
static inline uint16_t bf16_at(const void *X, int is_bf16, size_t idx) {
    return is_bf16 ? ((const uint16_t *)X)[idx] : cllm_bf16_from_f32(((const float *)X)[idx]);
}

/* ---------------------------------------------------------- reference */
/* Plain loops: each product of two BF16 values is exact in FP32, summed in
 * FP32 in increasing k. The definition the SIMD kernels are tested against. */
static void bgemm_reference(int ta, int tb, int M, int N, int K, float alpha, const void *A, int a_bf16,
                            int lda, const void *B, int b_bf16, int ldb, float beta, float *C, int ldc,
                            const float *bias) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) {
                size_t ia = ta ? (size_t)k * lda + i : (size_t)i * lda + k;
                size_t ib = tb ? (size_t)j * ldb + k : (size_t)k * ldb + j;
                acc += cllm_bf16_to_f32(bf16_at(A, a_bf16, ia)) * cllm_bf16_to_f32(bf16_at(B, b_bf16, ib));
            }
            float *c = C + (size_t)i * ldc + j;
            float v = alpha * acc;
            if (bias) v += bias[j];
            if (beta != 0.0f) v += beta * *c;
            *c = v;
        }
}

/* ------------------------------------------------------------- driver */
static int bgemm_block(int n, int cap, int q) {
    int nb = (n + cap - 1) / cap;
    int b = (n + nb - 1) / nb;
    b = (b + q - 1) / q * q;
    return b > cap ? cap : b;
}

static const bgemm_kernel *kernel_desc(int kernel) {
    if (kernel == CLLM_BF16_KERNEL_AMX) return &bgemm_kernel_amx;
    if (kernel == CLLM_BF16_KERNEL_AMX_EMUL) return &bgemm_kernel_amx_emul;
    if (kernel == CLLM_BF16_KERNEL_AVX512) return &bgemm_kernel_avx512;
    return NULL;
}

void cllm_bgemm(int kernel, int ta, int tb, int M, int N, int K, float alpha, const void *A, int a_bf16,
                int lda, const void *B, int b_bf16, int ldb, float beta, float *C, int ldc, const float *bias,
                void *ws) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        cllm_gemm_scale_only(M, N, beta, C, ldc, bias);
        return;
    }
    const bgemm_kernel *kd = kernel_desc(kernel);
    if (!kd) {
        bgemm_reference(ta, tb, M, N, K, alpha, A, a_bf16, lda, B, b_bf16, ldb, beta, C, ldc, bias);
        return;
    }
    const int MR = kd->mr, NR = kd->nr, kq = kd->kq;
    uint16_t *Bp = ws;
    uint16_t *Ap = Bp + (size_t)BGEMM_KC * BGEMM_NC;
    int kcb = bgemm_block(K, BGEMM_KC, kq);
    int mcb = bgemm_block(M, BGEMM_MC, MR);
    int ncb = bgemm_block(N, BGEMM_NC, NR);
    for (int jc = 0; jc < N; jc += ncb) {
        int nc = N - jc < ncb ? N - jc : ncb;
        for (int pc = 0; pc < K; pc += kcb) {
            int kc = K - pc < kcb ? K - pc : kcb;
            int kcp = (kc + kq - 1) / kq * kq;
            float cs = pc == 0 ? beta : 1.0f;
            const float *bl = (pc + kc == K && bias) ? bias + jc : NULL;
            kd->pack_b(tb, B, b_bf16, ldb, pc, jc, kc, nc, kcp, Bp, NR);
            for (int ic = 0; ic < M; ic += mcb) {
                int mc = M - ic < mcb ? M - ic : mcb;
                kd->pack_a(ta, A, a_bf16, lda, ic, pc, mc, kc, kcp, Ap, MR);
                for (int jr = 0; jr < nc; jr += NR) {
                    int nr = nc - jr < NR ? nc - jr : NR;
                    const uint16_t *bp = Bp + (size_t)jr * kcp;
                    for (int ir = 0; ir < mc; ir += MR) {
                        int mr = mc - ir < MR ? mc - ir : MR;
                        kd->ukernel(kcp, Ap + (size_t)ir * kcp, bp, C + (size_t)(ic + ir) * ldc + jc + jr, ldc,
                                    mr, nr, alpha, cs, bl ? bl + jr : NULL);
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------- public entry */
/* one packing workspace per calling thread, freed when the thread exits */
static void *bgemm_thread_ws(void) { return cllm_thread_scratch(CLLM_SCRATCH_BGEMM, cllm_gemm_bf16_ws_bytes()); }

CLLM_EXPORT int cllm_gemm_bf16(int kernel, int trans_a, int trans_b, int M, int N, int K, float alpha,
                               const void *A, int a_dtype, int lda, const void *B, int b_dtype, int ldb,
                               float beta, float *C, int ldc, const float *bias) {
    if (kernel == CLLM_BF16_KERNEL_AUTO) kernel = cllm_bf16_kernel_best(cllm_isa_current());
    if (kernel < CLLM_BF16_KERNEL_SCALAR || kernel > CLLM_BF16_KERNEL_AMX_EMUL)
        return cllm_fail(CLLM_ERR_INVALID, "gemm_bf16: unknown kernel %d", kernel);
    if (!cllm_bf16_kernel_usable(kernel))
        return cllm_fail(CLLM_ERR_UNSUPPORTED, "gemm_bf16: the %s kernel is not usable on this CPU",
                         kernel == CLLM_BF16_KERNEL_AMX ? "AMX-BF16" : "AVX512-BF16");
    if ((a_dtype != CLLM_DTYPE_F32 && a_dtype != CLLM_DTYPE_BF16) ||
        (b_dtype != CLLM_DTYPE_F32 && b_dtype != CLLM_DTYPE_BF16))
        return cllm_fail(CLLM_ERR_INVALID, "gemm_bf16: dtypes must be CLLM_DTYPE_F32 or CLLM_DTYPE_BF16");
    int rc = cllm_gemm_check_args("gemm_bf16", trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
    if (rc || M == 0 || N == 0) return rc;
    void *ws = bgemm_thread_ws();
    if (!ws) return cllm_fail(CLLM_ERR_NOMEM, "gemm_bf16: cannot allocate workspace");
    cllm_bgemm(kernel, trans_a != 0, trans_b != 0, M, N, K, alpha, A, a_dtype == CLLM_DTYPE_BF16, lda, B,
               b_dtype == CLLM_DTYPE_BF16, ldb, beta, C, ldc, bias, ws);
    return CLLM_OK;
}

/* ------------------------------------------------------ packers, for tests */
CLLM_EXPORT int cllm_bgemm_pack(int impl, int side, int trans, const void *X, int x_dtype, int ld, int r0, int c0,
                                int rows, int cols, int kcp, int block, uint16_t *dst) {
    if (impl != 0 && impl != 1) return cllm_fail(CLLM_ERR_INVALID, "bgemm_pack: impl must be 0 or 1, not %d", impl);
    if (side != 0 && side != 1) return cllm_fail(CLLM_ERR_INVALID, "bgemm_pack: side must be 0 or 1, not %d", side);
    if (x_dtype != CLLM_DTYPE_F32 && x_dtype != CLLM_DTYPE_BF16)
        return cllm_fail(CLLM_ERR_INVALID, "bgemm_pack: dtype must be CLLM_DTYPE_F32 or CLLM_DTYPE_BF16");
    if (!X || !dst) return cllm_fail(CLLM_ERR_INVALID, "bgemm_pack: NULL source or destination");
    if (rows < 1 || cols < 1 || r0 < 0 || c0 < 0)
        return cllm_fail(CLLM_ERR_INVALID, "bgemm_pack: empty block or negative origin");
    if (ld < (trans ? r0 + rows : c0 + cols))
        return cllm_fail(CLLM_ERR_INVALID, "bgemm_pack: leading dimension %d too small for the block", ld);
    int kc = side == 0 ? cols : rows;
    if (kcp < kc || kcp % 2) return cllm_fail(CLLM_ERR_INVALID, "bgemm_pack: kcp %d must be even and >= %d", kcp, kc);
    if (block < 1 || block > 64 || (side == 1 && block % 16))
        return cllm_fail(CLLM_ERR_INVALID, "bgemm_pack: block %d not in 1..64 (a multiple of 16 for B)", block);
    if (impl == 1 && !cllm_cpu_features_get()->avx512)
        return cllm_fail(CLLM_ERR_UNSUPPORTED, "bgemm_pack: the AVX-512 packers need AVX-512 on this CPU");
    int xb = x_dtype == CLLM_DTYPE_BF16, tr = trans != 0;
    if (side == 0)
        (impl ? bgemm_pack_a_avx512 : bgemm_pack_a_portable)(tr, X, xb, ld, r0, c0, rows, cols, kcp, dst, block);
    else
        (impl ? bgemm_pack_b_avx512 : bgemm_pack_b_portable)(tr, X, xb, ld, r0, c0, rows, cols, kcp, dst, block);
    return CLLM_OK;
}
