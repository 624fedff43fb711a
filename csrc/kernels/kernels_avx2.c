/* kernels_avx2.c - the AVX2+FMA kernel table: the S(name) bodies of
 * kernels_simd.h compiled for 8 lanes; ops without one use the scalar reference. */
#pragma GCC target("avx2,fma")
#define KSFX avx2
#define KNAME "avx2"
#define KISA CLLM_ISA_AVX2
#define SIMD_W 8
#include "kernels_simd.h"
