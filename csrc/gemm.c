/* gemm.c - SGEMM. PLACEHOLDER reference (correct, not fast); the BLIS-style
 * packed implementation replaces it. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "gemm.h"

size_t cllm_gemm_ws_floats(void) { return 16; }

void cllm_sgemm(int isa, int ta, int tb, int M, int N, int K, float alpha,
                const float *A, int lda, const float *B, int ldb, float beta,
                float *C, int ldc, const float *bias, float *ws) {
    (void)isa; (void)ws;
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f) memset(c, 0, sizeof(float) * (size_t)N);
        else if (beta != 1.0f) for (int j = 0; j < N; j++) c[j] *= beta;
        for (int k = 0; k < K; k++) {
            float a = alpha * (ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]);
            if (!tb) {
                const float *b = B + (size_t)k * ldb;
                for (int j = 0; j < N; j++) c[j] += a * b[j];
            } else {
                for (int j = 0; j < N; j++) c[j] += a * B[(size_t)j * ldb + k];
            }
        }
        if (bias) for (int j = 0; j < N; j++) c[j] += bias[j];
    }
}

CLLM_EXPORT int cllm_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
                          const float *A, int lda, const float *B, int ldb, float beta,
                          float *C, int ldc, const float *bias) {
    if (M < 0 || N < 0 || K < 0) return cllm_fail(CLLM_ERR_INVALID, "gemm: negative size M=%d N=%d K=%d", M, N, K);
    if (M == 0 || N == 0) return CLLM_OK;
    CLLM_CHECK_PTR(C, "C");
    if (K > 0) { CLLM_CHECK_PTR(A, "A"); CLLM_CHECK_PTR(B, "B"); }
    if (lda < (trans_a ? M : K) || lda < 1) return cllm_fail(CLLM_ERR_INVALID, "gemm: lda=%d too small", lda);
    if (ldb < (trans_b ? K : N) || ldb < 1) return cllm_fail(CLLM_ERR_INVALID, "gemm: ldb=%d too small", ldb);
    if (ldc < N) return cllm_fail(CLLM_ERR_INVALID, "gemm: ldc=%d < N=%d", ldc, N);
    float *ws = cllm_aligned_alloc(sizeof(float) * cllm_gemm_ws_floats());
    if (!ws) return cllm_fail(CLLM_ERR_NOMEM, "gemm: cannot allocate workspace");
    cllm_sgemm(cllm_isa_current(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, ws);
    cllm_aligned_free(ws);
    return CLLM_OK;
}
