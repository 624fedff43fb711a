/* gemm_isa.h - per-ISA SGEMM drivers generated from gemm_impl.h and their
 * cache blocking (private to csrc/gemm/). A driver call needs
 * gemm_blocking_ws(bk) floats of 64-byte aligned workspace. */
#ifndef CLLM_GEMM_ISA_H
#define CLLM_GEMM_ISA_H
#include <stddef.h>

/* register block MR x NR of the ISA's micro-kernel and the cache blocks
 * (MC multiple of MR, KC of 8, NC of NR) */
typedef struct {
    int mr, nr, mc, kc, nc;
} gemm_blocking;

#define GEMM_DRIVER_ARGS int ta, int tb, int M, int N, int K, float alpha, const float *A, \
    int lda, const float *B, int ldb, float beta, float *C, int ldc, const float *bias, float *ws, \
    const gemm_blocking *bk

void gemm_driver_scalar(GEMM_DRIVER_ARGS);
void gemm_driver_avx2(GEMM_DRIVER_ARGS);
void gemm_driver_avx512(GEMM_DRIVER_ARGS);
/* MR, NR of each ISA's micro-kernel */
void gemm_regblock_scalar(int *mr, int *nr);
void gemm_regblock_avx2(int *mr, int *nr);
void gemm_regblock_avx512(int *mr, int *nr);

/* the process-wide blocking of an ISA (blocking.c) */
const gemm_blocking *gemm_blocking_for(int isa);
/* blocking for explicit mc/kc/nc (0 = the default's), rounded and clamped */
gemm_blocking gemm_blocking_make(int isa, int mc, int kc, int nc);
static inline size_t gemm_blocking_ws(const gemm_blocking *bk) {
    return (size_t)bk->kc * bk->nc + (size_t)bk->mc * bk->kc;
}
#endif
