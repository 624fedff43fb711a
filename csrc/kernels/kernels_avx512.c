/* kernels_avx512.c - AVX-512 path. Generic loops compiled for the target;
 * hot ops are overridden with intrinsics (kernels_simd.h, 16 lanes). */
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#define KSFX avx512
#define KNAME "avx512"
#define KISA CLLM_ISA_AVX512
#define SIMD_W 16
#include "cllm.h"
#include "kernels_simd.h"
#include "kernels_impl.h"
