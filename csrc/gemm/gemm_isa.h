/* gemm_isa.h - per-ISA SGEMM drivers generated from gemm_impl.h (private to
 * gemm*.c). Each needs gemm_ws_<isa>() floats of 64-byte aligned workspace. */
#ifndef CLLM_GEMM_ISA_H
#define CLLM_GEMM_ISA_H
#include <stddef.h>

#define GEMM_DRIVER_ARGS int ta, int tb, int M, int N, int K, float alpha, const float *A, \
    int lda, const float *B, int ldb, float beta, float *C, int ldc, const float *bias, float *ws

void gemm_driver_scalar(GEMM_DRIVER_ARGS);
void gemm_driver_avx2(GEMM_DRIVER_ARGS);
void gemm_driver_avx512(GEMM_DRIVER_ARGS);
size_t gemm_ws_scalar(void);
size_t gemm_ws_avx2(void);
size_t gemm_ws_avx512(void);
#endif
