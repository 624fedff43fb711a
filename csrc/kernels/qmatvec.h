/* qmatvec.h - matrix-vector kernels for inference weights stored as int8 or
 * BF16, row-major by OUTPUT row (W is (rows, cols), y = W x):
 *
 *   int8: q(rows, cols) int8 in [-127, 127], scale(rows) FP32, so
 *         W[r, i] ~= scale[r] * q[r, i]. The input vector x is quantized per
 *         call: xq(cols) int8 with one FP32 scale xs (symmetric, max|x|/127),
 *         so y[r] = xs * scale[r] * sum_i xq[i] q[r, i] + bias[r], the sum
 *         computed EXACTLY in int32 on every path (AVX512-VNNI vpdpbusd on
 *         xq + 128 with the per-row correction -128 * rowsum[r]; AVX2
 *         vpmaddubsw on |xq| and sign-adjusted q; scalar), and the final
 *         float step is one fused multiply-add on every path, so all paths
 *         give bit-identical results.
 *   bf16: w(rows, cols) BF16 bits, x rounded to BF16 per call; products are
 *         exact in FP32, sums in FP32 (vdpbf16ps on AVX512-BF16, FMA on
 *         AVX2, scalar loop): paths agree to rounding, not bitwise.
 *
 * Each row's result depends only on the row (not on [lo, hi) or on how rows
 * are grouped), so splitting rows across threads is bit-reproducible. */
#ifndef CLLM_QMATVEC_H
#define CLLM_QMATVEC_H
#include <stddef.h>
#include <stdint.h>
#include "bf16.h"

typedef struct cllm_qops {
    const char *name;
    /* y[r] = xs*scale[r]*dot(xq, q[r]) + (bias ? bias[r] : 0), r in [lo, hi) */
    void (*q8_rows)(float *y, const int8_t *q, const float *scale, const int32_t *rowsum,
                    const int8_t *xq, float xs, const float *bias, int cols, int lo, int hi);
    /* y[r] = dot(xb, w[r]) + (bias ? bias[r] : 0), r in [lo, hi) */
    void (*bf16_rows)(float *y, const uint16_t *w, const uint16_t *xb, const float *bias,
                      int cols, int lo, int hi);
    /* FP32 weights row-major by output row, W (rows, cols):
     * y[r] = dot(x, W[r]) + (bias ? bias[r] : 0), r in [lo, hi). One row at a
     * time, read as one sequential stream (several rows interleaved defeat
     * the hardware prefetcher); paths agree to rounding, not bitwise. */
    void (*f32_rows)(float *y, const float *W, const float *x, const float *bias, int cols, int lo, int hi);
} cllm_qops;

/* the FP32 bodies, written once over simd_vec.h in kernels_simd.h */
void cllm_f32_rows_avx2(float *y, const float *W, const float *x, const float *bias, int cols, int lo, int hi);
void cllm_f32_rows_avx512(float *y, const float *W, const float *x, const float *bias, int cols, int lo, int hi);

/* Kernel path for isa (CLLM_ISA_SCALAR/AVX2/AVX512; AVX512 uses VNNI/BF16
 * instructions only where CPUID reports them, else the AVX2 bodies). */
const cllm_qops *cllm_qops_for_isa(int isa);
const cllm_qops *cllm_qops_current(void);
/* Shared, path-independent helpers (plain C; gcc vectorises the loops). */
/* symmetric per-vector int8 quantization: xq = round(x / xs), xs = max|x|/127
 * (xs = 0 and xq = 0 for an all-zero x) */
void cllm_quantize_vec(int8_t *xq, float *xs, const float *x, int n);
float cllm_f16_to_f32(uint16_t h);
/* Quantize a weight matrix given as src with element (r, i) (r < rows output
 * rows, i < cols inputs) at src[r*rs + i*cs]: q(rows, cols), scale(rows),
 * rowsum(rows) (sum of q over the row, for the VNNI correction). */
void cllm_quantize_rows(int8_t *q, float *scale, int32_t *rowsum, const float *src, int rows,
                        int cols, size_t rs, size_t cs);
/* dst(rows, cols) = the transpose of src(cols, rows), both row-major (16 x 16
 * register tiles on AVX-512, a plain loop otherwise; exact on every path) */
void cllm_transpose_f32(int isa, float *dst, const float *src, int rows, int cols);
/* rowsum only (for a pre-quantized q) */
void cllm_q8_rowsums(int32_t *rowsum, const int8_t *q, int rows, int cols);
#endif
