/* gemm_amx_body.h - the AMX-BF16 micro-kernel's body, compiled twice: by
 * gemm_amx.c against the real tile instructions and by gemm_amx_emul.c
 * against the software tile model (amx_model.h), so the build that runs on
 * every host exercises the same loads, strides, K loop and tile indices as
 * the one that runs on AMX hardware. Private to csrc/gemm/; include once.
 *
 * MR x NR = 32 x 32: C is four 16x16 FP32 tiles (tmm0..3), each K step of
 * 32 loads two A tiles (tmm4/5: rows 0-15 / 16-31, 16 rows x 32 BF16, row
 * stride 2*kcp bytes) and two B tiles (tmm6/7: 16 K pairs x 16 columns in
 * the VNNI pair layout, row stride NR*4 bytes) and issues four tdpbf16ps.
 * Every tile is configured 16 rows x 64 bytes. The accumulators go through
 * a 4 KiB stack tile to the epilogue (alpha, bias, beta, ragged edges).
 *
 * The includer defines:
 *   AMX_UKERNEL_ATTR        attributes of the kernel function (target ISA)
 *   AMX_UKERNEL_NAME        its name
 *   AMX_TILES_READY()       configure this thread's tiles once; 0 = cannot
 *   AMX_ZERO(t)             TILEZERO
 *   AMX_LOADD(t, base, s)   TILELOADD with a row stride of s bytes
 *   AMX_STORED(t, base, s)  TILESTORED
 *   AMX_DPBF16PS(c, a, b)   TDPBF16PS
 *   AMX_STORE_TILE          the epilogue, a bgemm_store_tile_* function */
#ifndef CLLM_GEMM_AMX_BODY_H
#define CLLM_GEMM_AMX_BODY_H
#include <stddef.h>
#include <stdint.h>

#define AMX_MR 32
#define AMX_NR 32
#define AMX_KQ 32

AMX_UKERNEL_ATTR static void AMX_UKERNEL_NAME(int kcp, const uint16_t *Ap, const uint16_t *Bp, float *C,
                                              int ldc, int mr, int nr, float alpha, float cs,
                                              const float *bias) {
    float acc[AMX_MR * AMX_NR] __attribute__((aligned(64)));
    if (!AMX_TILES_READY()) return; /* unreachable: dispatch checked the feature */
    const long sa = 2L * kcp, sb = 4L * AMX_NR;
    AMX_ZERO(0);
    AMX_ZERO(1);
    AMX_ZERO(2);
    AMX_ZERO(3);
    for (int k = 0; k < kcp; k += AMX_KQ) {
        const uint16_t *a = Ap + k, *b = Bp + (size_t)k * AMX_NR;
        AMX_LOADD(4, a, sa);
        AMX_LOADD(5, a + (size_t)16 * kcp, sa);
        AMX_LOADD(6, b, sb);
        AMX_LOADD(7, b + 32, sb);
        AMX_DPBF16PS(0, 4, 6);
        AMX_DPBF16PS(1, 4, 7);
        AMX_DPBF16PS(2, 5, 6);
        AMX_DPBF16PS(3, 5, 7);
    }
    const long sc = 4L * AMX_NR;
    AMX_STORED(0, acc, sc);
    AMX_STORED(1, acc + 16, sc);
    AMX_STORED(2, acc + 16 * AMX_NR, sc);
    AMX_STORED(3, acc + 16 * AMX_NR + 16, sc);
    AMX_STORE_TILE(acc, AMX_NR, C, ldc, mr, nr, alpha, cs, bias);
}
#endif
