/* kernels_avx2.c - AVX2+FMA path. Generic loops compiled for the target;
 * hot ops are overridden with intrinsics (see KOP_* defines). */
#pragma GCC target("avx2,fma")
#define KSFX avx2
#define KNAME "avx2"
#define KISA CLLM_ISA_AVX2
#include "cllm.h"
#include "kernels_impl.h"
