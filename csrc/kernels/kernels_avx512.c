/* kernels_avx512.c - the AVX-512 kernel table: the S(name) bodies of
 * kernels_simd.h compiled for 16 lanes; ops without one use the scalar reference. */
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#define KSFX avx512
#define KNAME "avx512"
#define KISA CLLM_ISA_AVX512
#define SIMD_W 16
#include "kernels_simd.h"
