/* gemm_amx.c - AMX-BF16 micro-kernel for the BF16 GEMM on the real tile
 * instructions (the body, shared with the emulated build gemm_amx_emul.c,
 * is gemm_amx_body.h), with the AVX-512 packers and epilogue of the
 * AVX512-BF16 kernel. Tiles are configured once per thread
 * (cllm_amx_tiles_ready, every tile 16 x 64 bytes); the OS permission is
 * requested once per process by the feature detection.
 *
 * Dispatched only where CPUID + XCR0 + the OS grant AMX-BF16
 * (cllm_bf16_kernel_usable). */
#include <immintrin.h>
#include "runtime/internal.h"
#include "runtime/cpu_features.h"
#include "gemm_bf16_impl.h"

#define AMX_UKERNEL_ATTR __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define AMX_UKERNEL_NAME ukernel_amx
#define AMX_TILES_READY() cllm_amx_tiles_ready()
#define AMX_ZERO(t) _tile_zero(t)
#define AMX_LOADD(t, base, s) _tile_loadd(t, base, s)
#define AMX_STORED(t, base, s) _tile_stored(t, base, s)
#define AMX_DPBF16PS(c, a, b) _tile_dpbf16ps(c, a, b)
#define AMX_STORE_TILE bgemm_store_tile_avx512
#include "gemm_amx_body.h"

const bgemm_kernel bgemm_kernel_amx = {"amx_bf16", AMX_MR, AMX_NR, AMX_KQ, bgemm_pack_a_avx512,
                                       bgemm_pack_b_avx512, ukernel_amx};
