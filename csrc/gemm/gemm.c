/* gemm.c - SGEMM entry points: ISA dispatch for the internal cllm_sgemm and
 * the validating public cllm_gemm / cllm_gemm_blocked, and the argument checks
 * the BF16 GEMM shares (gemm_bf16.c calls down into this file, never the
 * reverse). The packed BLIS-style
 * drivers live in gemm_scalar.c / gemm_avx2.c / gemm_avx512.c (template
 * gemm_impl.h); their cache blocking in blocking.c. */
#include <stdlib.h>
#include <string.h>
#include "runtime/internal.h"
#include "gemm.h"
#include "gemm_isa.h"

size_t cllm_gemm_ws_floats(void) {
    size_t n = 0;
    for (int isa = CLLM_ISA_SCALAR; isa <= CLLM_ISA_AVX512; isa++) {
        size_t w = gemm_blocking_ws(gemm_blocking_for(isa));
        if (w > n) n = w;
    }
    return n;
}

void cllm_gemm_scale_only(int M, int N, float beta, float *C, int ldc, const float *bias) {
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f) memset(c, 0, sizeof(float) * (size_t)N);
        else if (beta != 1.0f) for (int j = 0; j < N; j++) c[j] *= beta;
        if (bias) for (int j = 0; j < N; j++) c[j] += bias[j];
    }
}

/* C = alpha*op(A)@op(B) + beta*C (+ bias) under blocking bk */
static void sgemm_blocked(int isa, const gemm_blocking *bk, int ta, int tb, int M, int N, int K, float alpha,
                          const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc,
                          const float *bias, float *ws) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        cllm_gemm_scale_only(M, N, beta, C, ldc, bias);
        return;
    }
    switch (isa) {
    case CLLM_ISA_AVX512:
        gemm_driver_avx512(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, ws, bk);
        break;
    case CLLM_ISA_AVX2:
        gemm_driver_avx2(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, ws, bk);
        break;
    default:
        gemm_driver_scalar(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, ws, bk);
        break;
    }
}

void cllm_sgemm(int isa, int ta, int tb, int M, int N, int K, float alpha,
                const float *A, int lda, const float *B, int ldb, float beta,
                float *C, int ldc, const float *bias, float *ws) {
    sgemm_blocked(isa, gemm_blocking_for(isa), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, ws);
}

int cllm_sgemm_mc(int isa) { return gemm_blocking_for(isa)->mc; }

/* the public entries' argument checks (shared with the BF16 GEMM) */
int cllm_gemm_check_args(const char *who, int trans_a, int trans_b, int M, int N, int K, const void *A, int lda,
                         const void *B, int ldb, const float *C, int ldc) {
    if (M < 0 || N < 0 || K < 0)
        return cllm_fail(CLLM_ERR_INVALID, "%s: negative size M=%d N=%d K=%d", who, M, N, K);
    if (M == 0 || N == 0) return CLLM_OK;
    CLLM_CHECK_PTR(C, "C");
    if (K > 0) { CLLM_CHECK_PTR(A, "A"); CLLM_CHECK_PTR(B, "B"); }
    if (lda < 1 || lda < (trans_a ? M : K))
        return cllm_fail(CLLM_ERR_INVALID, "%s: lda=%d too small (needs >= %d)", who, lda, trans_a ? M : K);
    if (ldb < 1 || ldb < (trans_b ? K : N))
        return cllm_fail(CLLM_ERR_INVALID, "%s: ldb=%d too small (needs >= %d)", who, ldb, trans_b ? K : N);
    if (ldc < N) return cllm_fail(CLLM_ERR_INVALID, "%s: ldc=%d < N=%d", who, ldc, N);
    return CLLM_OK;
}

/* The public entry keeps one packing workspace per calling thread (see
 * cllm_thread_scratch): a fresh multi-megabyte block per call costs page
 * faults that dominate small products. */
static float *gemm_thread_ws(void) {
    return cllm_thread_scratch(CLLM_SCRATCH_SGEMM, sizeof(float) * cllm_gemm_ws_floats());
}

CLLM_EXPORT int cllm_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
                          const float *A, int lda, const float *B, int ldb, float beta,
                          float *C, int ldc, const float *bias) {
    int rc = cllm_gemm_check_args("gemm", trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
    if (rc || M == 0 || N == 0) return rc;
    float *ws = gemm_thread_ws();
    if (!ws) return cllm_fail(CLLM_ERR_NOMEM, "gemm: cannot allocate workspace");
    cllm_sgemm(cllm_isa_current(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
               bias, ws);
    return CLLM_OK;
}

CLLM_EXPORT int cllm_gemm_blocked(int isa, int mc, int kc, int nc, int trans_a, int trans_b, int M, int N, int K,
                                  float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                                  float *C, int ldc, const float *bias) {
    int ok = 0;
    if (isa == CLLM_ISA_SCALAR) ok = 1;
    else if (isa == CLLM_ISA_AVX2 || isa == CLLM_ISA_AVX512) {
        int a2 = 0, a5 = 0;
        cllm_cpu_detect(&a2, &a5);
        ok = isa == CLLM_ISA_AVX2 ? a2 : a5;
        if (!ok) return cllm_fail(CLLM_ERR_UNSUPPORTED, "gemm_blocked: ISA %d not supported by this CPU", isa);
    }
    if (!ok) return cllm_fail(CLLM_ERR_INVALID, "gemm_blocked: unknown ISA %d", isa);
    if (mc < 0 || kc < 0 || nc < 0 || mc > 65536 || kc > 65536 || nc > 65536)
        return cllm_fail(CLLM_ERR_INVALID, "gemm_blocked: mc=%d kc=%d nc=%d must be in [0, 65536]", mc, kc, nc);
    int rc = cllm_gemm_check_args("gemm", trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
    if (rc || M == 0 || N == 0) return rc;
    gemm_blocking bk = gemm_blocking_make(isa, mc, kc, nc);
    float *ws = cllm_aligned_alloc(sizeof(float) * gemm_blocking_ws(&bk));
    if (!ws) return cllm_fail(CLLM_ERR_NOMEM, "gemm_blocked: cannot allocate workspace");
    sgemm_blocked(isa, &bk, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, ws);
    cllm_aligned_free(ws);
    return CLLM_OK;
}
