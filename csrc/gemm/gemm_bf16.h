/* gemm_bf16.h - BF16 x BF16 -> FP32 GEMM (internal API).
 *
 * C[M,N] = alpha * op(A) @ op(B) + beta * C (+ bias[N]), row-major, like
 * cllm_sgemm, but op(A) and op(B) are rounded to BF16 (round to nearest even)
 * and multiplied with FP32 accumulation. Each operand is either FP32
 * (converted while it is packed) or already BF16 (uint16 bits), flagged by
 * a_bf16 / b_bf16. Kernels (CLLM_BF16_KERNEL_*, cllm.h):
 *   SCALAR  plain reference loops (no packing; any CPU)
 *   AVX512  BLIS driver + vdpbf16ps micro-kernel (AVX512_BF16)
 *   AMX     BLIS driver + tdpbf16ps tile micro-kernel (AMX-BF16)
 * Single-threaded; ws: cllm_gemm_bf16_ws_bytes() bytes, 64-byte aligned. */
#ifndef CLLM_GEMM_BF16_H
#define CLLM_GEMM_BF16_H
#include <stddef.h>
#include <stdint.h>

size_t cllm_gemm_bf16_ws_bytes(void);
/* Floats of a workspace that serves both cllm_sgemm (cllm_gemm_ws_floats)
 * and cllm_bgemm: the model's per-sphere GEMM workspace. */
size_t cllm_gemm_any_ws_floats(void);
/* 1 if this CPU can run the kernel (SCALAR always). */
int cllm_bf16_kernel_usable(int kernel);
/* Fastest usable kernel when the ISA is isa: AMX, else AVX512 (both only
 * under CLLM_ISA_AVX512), else SCALAR. */
int cllm_bf16_kernel_best(int isa);

void cllm_bgemm(int kernel, int ta, int tb, int M, int N, int K, float alpha,
                const void *A, int a_bf16, int lda, const void *B, int b_bf16, int ldb,
                float beta, float *C, int ldc, const float *bias, void *ws);
#endif
