/* kernels_avx2.c - the AVX2+FMA kernel table: the S(name) bodies of
 * kernels_simd.h compiled for 8 lanes; ops without one use the scalar reference. */
#pragma GCC target("avx2,fma")
#define KSFX avx2
#define SIMD_W 8
#include "cllm.h"
#include "kernels_simd.h"

const cllm_ops cllm_ops_avx2 = {
    .name = "avx2",
    .isa = CLLM_ISA_AVX2,
#define OP CLLM_OPS_SIMD_FIELD
#include "ops_list.h"
#undef OP
};
