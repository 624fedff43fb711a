/* gemm.h - internal single-threaded SGEMM (BLIS-style), dispatched by ISA. */
#ifndef CLLM_GEMM_H
#define CLLM_GEMM_H
#include <stddef.h>

/* Floats of packing workspace one cllm_sgemm call needs (64-byte aligned). */
size_t cllm_gemm_ws_floats(void);

/* Same contract as the public cllm_gemm (see cllm.h), no validation:
 * C = alpha*op(A)@op(B) + beta*C (+ bias[N]); beta == 0 never reads C.
 * isa: CLLM_ISA_SCALAR/AVX2/AVX512; ws: cllm_gemm_ws_floats() floats. */
void cllm_sgemm(int isa, int trans_a, int trans_b, int M, int N, int K,
                float alpha, const float *A, int lda, const float *B, int ldb,
                float beta, float *C, int ldc, const float *bias, float *ws);

/* MC (rows of op(A) per packed block) of the ISA's blocking: a product with
 * fewer rows amortises each packed panel of op(B) over fewer rows */
int cllm_sgemm_mc(int isa);

/* C = beta*C (+ bias[N] per row) when there is nothing to multiply (K == 0
 * or alpha == 0); beta == 0 never reads C. Used by the FP32 and BF16 GEMMs. */
void cllm_gemm_scale_only(int M, int N, float beta, float *C, int ldc, const float *bias);

/* Shared argument checks of the public GEMM entries (`who` prefixes the
 * message): sizes >= 0, pointers, leading dimensions for the transposes. */
int cllm_gemm_check_args(const char *who, int trans_a, int trans_b, int M, int N, int K, const void *A, int lda,
                         const void *B, int ldb, const float *C, int ldc);
#endif
