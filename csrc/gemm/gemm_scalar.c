/* gemm_scalar.c - reference SGEMM path: the BLIS driver with a plain C
 * 4x8 micro-kernel (no intrinsics; the compiler may use baseline SSE). */
#include "gemm_isa.h"

#define GEMM_MR 4
#define GEMM_NR 8
#define GEMM_FN gemm_driver_scalar

static void gemm_ukernel(int kc, const float *restrict Ap, const float *restrict Bp,
                         float *restrict C, int ldc, int mr, int nr, float cs,
                         const float *restrict bias) {
    float acc[GEMM_MR][GEMM_NR];
    for (int i = 0; i < GEMM_MR; i++)
        for (int j = 0; j < GEMM_NR; j++) acc[i][j] = 0.0f;
    for (int k = 0; k < kc; k++) {
        const float *a = Ap + (size_t)k * GEMM_MR, *b = Bp + (size_t)k * GEMM_NR;
        for (int i = 0; i < GEMM_MR; i++)
            for (int j = 0; j < GEMM_NR; j++) acc[i][j] += a[i] * b[j];
    }
    for (int i = 0; i < mr; i++) {
        float *c = C + (size_t)i * ldc;
        for (int j = 0; j < nr; j++) {
            float v = acc[i][j];
            if (cs != 0.0f) v += cs * c[j];
            if (bias) v += bias[j];
            c[j] = v;
        }
    }
}

#include "gemm_impl.h"

void gemm_regblock_scalar(int *mr, int *nr) {
    *mr = GEMM_MR;
    *nr = GEMM_NR;
}
