/* kernels_avx2.c - the AVX2+FMA kernel table: the S(name) bodies of
 * kernels_simd.h compiled for 8 lanes; ops without one use the scalar reference.
 * With 16 ymm registers and the same instruction count per vector as the
 * 16-lane path, the exp-heavy loops (GELU, softmax) are bound by their
 * dependency chains; GCC's pre-register-allocation scheduler (off by default
 * on x86) interleaves the unrolled chains: measured on Zen 4, one thread,
 * gelu_fwd -12%, gelu_bwd_bias -19%, crossentropy_fused -15% per call. The
 * results are unchanged (scheduling only; FP contraction stays off). */
#pragma GCC target("avx2,fma")
#pragma GCC optimize("schedule-insns", "sched-pressure")
#define KSFX avx2
#define KNAME "avx2"
#define KISA CLLM_ISA_AVX2
#define SIMD_W 8
#include "kernels_simd.h"
