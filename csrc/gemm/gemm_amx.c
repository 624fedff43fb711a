/* gemm_amx.c - AMX-BF16 micro-kernel for the BF16 GEMM (same BLIS driver
 * and AVX-512 packers as the AVX512-BF16 kernel).
 *
 * MR x NR = 32 x 32: C is four 16x16 FP32 tiles (tmm0..3), each K step of
 * 32 loads two A tiles (tmm4/5: rows 0-15 / 16-31, 16 rows x 32 BF16, row
 * stride 2*kcp bytes) and two B tiles (tmm6/7: 16 K pairs x 16 columns in
 * the VNNI pair layout, row stride NR*4 bytes) and issues four tdpbf16ps.
 * Tiles are configured once per thread (cllm_amx_tiles_ready, every tile
 * 16 x 64 bytes); the OS permission is requested once per process by the
 * feature detection. The accumulators go through a 4 KiB stack tile to the
 * shared AVX-512 epilogue (alpha, bias, beta, ragged edges).
 *
 * Dispatched only where CPUID + XCR0 + the OS grant AMX-BF16
 * (cllm_bf16_kernel_usable). */
#include <immintrin.h>
#include "runtime/internal.h"
#include "runtime/cpu_features.h"
#include "gemm_bf16_impl.h"

#define AMX_MR 32
#define AMX_NR 32
#define AMX_KQ 32

__attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"))) static void
ukernel_amx(int kcp, const uint16_t *Ap, const uint16_t *Bp, float *C, int ldc, int mr, int nr, float alpha,
            float cs, const float *bias) {
    float acc[AMX_MR * AMX_NR] __attribute__((aligned(64)));
    if (!cllm_amx_tiles_ready()) return; /* unreachable: dispatch checked the feature */
    const long sa = 2L * kcp, sb = 4L * AMX_NR;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int k = 0; k < kcp; k += AMX_KQ) {
        const uint16_t *a = Ap + k, *b = Bp + (size_t)k * AMX_NR;
        _tile_loadd(4, a, sa);
        _tile_loadd(5, a + (size_t)16 * kcp, sa);
        _tile_loadd(6, b, sb);
        _tile_loadd(7, b + 32, sb);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    const long sc = 4L * AMX_NR;
    _tile_stored(0, acc, sc);
    _tile_stored(1, acc + 16, sc);
    _tile_stored(2, acc + 16 * AMX_NR, sc);
    _tile_stored(3, acc + 16 * AMX_NR + 16, sc);
    bgemm_store_tile_avx512(acc, AMX_NR, C, ldc, mr, nr, alpha, cs, bias);
}

const bgemm_kernel bgemm_kernel_amx = {"amx_bf16", AMX_MR, AMX_NR, AMX_KQ, bgemm_pack_a_avx512,
                                       bgemm_pack_b_avx512, ukernel_amx};
