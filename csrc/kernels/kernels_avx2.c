/* kernels_avx2.c - AVX2+FMA path. Generic loops compiled for the target;
 * hot ops are overridden with intrinsics (kernels_simd.h, 8 lanes). */
#pragma GCC target("avx2,fma")
#define KSFX avx2
#define KNAME "avx2"
#define KISA CLLM_ISA_AVX2
#define SIMD_W 8
#include "cllm.h"
#include "kernels_simd.h"
#include "kernels_impl.h"
