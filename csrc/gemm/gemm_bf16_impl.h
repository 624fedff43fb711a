/* gemm_bf16_impl.h - private pieces of the BF16 GEMM: the packed layouts
 * and the kernel descriptor the BLIS driver (gemm_bf16.c) runs.
 *
 * Packed layouts (BF16 bits, uint16):
 *   A block (mc x kc of op(A)) -> MR-row slivers, each row-major with its K
 *     padded with zeros to kcp (a multiple of the kernel's kq):
 *     sliver s, row i, column k at dst[s*MR*kcp + i*kcp + k]. The AVX512
 *     kernel broadcasts one (even, odd) pair per row; AMX loads 16-row tiles
 *     with a row stride of 2*kcp bytes.
 *   B block (kc x nc of op(B)) -> NR-column slivers in the VNNI pair layout:
 *     sliver t, pair p (K rows 2p and 2p+1), column j, e in {0,1} at
 *     dst[t*NR*kcp + (p*NR + j)*2 + e] = op(B)[2p+e][j]. One 32-bit word
 *     holds a pair; vdpbf16ps / tdpbf16ps multiply pairs word by word.
 *   Rows/columns past the edge and K past kc are zero, so an odd K simply
 *   pairs its last element with a zero.
 */
#ifndef CLLM_GEMM_BF16_IMPL_H
#define CLLM_GEMM_BF16_IMPL_H
#include <stdint.h>

/* Shared cache blocking: MC x KC of packed A (288 KiB) stays in L2, a
 * KC x NR sliver of B (96 KiB at NR = 64) streams through L1/L2 once per
 * MC block, the KC x NC panel of B (6 MiB) sits in L3: the same byte
 * footprints as the FP32 AVX-512 blocking, with twice the K per block. */
#define BGEMM_MC 192
#define BGEMM_KC 768
#define BGEMM_NC 4096

typedef void (*bgemm_pack_a_fn)(int ta, const void *A, int a_bf16, int lda, int i0, int p0, int mc,
                                int kc, int kcp, uint16_t *dst, int MR);
typedef void (*bgemm_pack_b_fn)(int tb, const void *B, int b_bf16, int ldb, int p0, int j0, int kc,
                                int nc, int kcp, uint16_t *dst, int NR);
/* acc = A sliver @ B sliver (MR x NR over kcp); stores the top-left mr x nr
 * of alpha*acc (+ bias[j]) (+ cs*C) into C, reading C only when cs != 0. */
typedef void (*bgemm_ukernel_fn)(int kcp, const uint16_t *Ap, const uint16_t *Bp, float *C, int ldc,
                                 int mr, int nr, float alpha, float cs, const float *bias);

typedef struct {
    const char *name;
    int mr, nr, kq;
    bgemm_pack_a_fn pack_a;
    bgemm_pack_b_fn pack_b;
    bgemm_ukernel_fn ukernel;
} bgemm_kernel;

extern const bgemm_kernel bgemm_kernel_avx512;   /* gemm_bf16_avx512.c */
extern const bgemm_kernel bgemm_kernel_amx;      /* gemm_amx.c         */
extern const bgemm_kernel bgemm_kernel_amx_emul; /* gemm_amx_emul.c    */

/* AVX-512 packers shared by both kernels (gemm_bf16_avx512.c) */
void bgemm_pack_a_avx512(int ta, const void *A, int a_bf16, int lda, int i0, int p0, int mc, int kc,
                         int kcp, uint16_t *dst, int MR);
void bgemm_pack_b_avx512(int tb, const void *B, int b_bf16, int ldb, int p0, int j0, int kc, int nc,
                         int kcp, uint16_t *dst, int NR);
/* store the valid mr x nr corner of alpha*acc (+bias) (+cs*C); acc is a
 * row-major tile with row stride ldt floats (AVX-512 epilogue) */
void bgemm_store_tile_avx512(const float *acc, int ldt, float *C, int ldc, int mr, int nr, float alpha,
                             float cs, const float *bias);

/* Portable equivalents of the three above (gemm_bf16_pack.c): the same
 * packed bytes and the same epilogue arithmetic, on any CPU. */
void bgemm_pack_a_portable(int ta, const void *A, int a_bf16, int lda, int i0, int p0, int mc, int kc,
                           int kcp, uint16_t *dst, int MR);
void bgemm_pack_b_portable(int tb, const void *B, int b_bf16, int ldb, int p0, int j0, int kc, int nc,
                           int kcp, uint16_t *dst, int NR);
void bgemm_store_tile_portable(const float *acc, int ldt, float *C, int ldc, int mr, int nr, float alpha,
                               float cs, const float *bias);
#endif
