/* dispatch.c - picks the per-ISA kernel table (cllm_ops) and sizes the
 * attention workspace the SIMD attention kernels need. */
#include "runtime/internal.h"
#include "kernels.h"

const cllm_ops *cllm_ops_for_isa(int isa) {
    switch (isa) {
    case CLLM_ISA_AVX512: return &cllm_ops_avx512;
    case CLLM_ISA_AVX2: return &cllm_ops_avx2;
    default: return &cllm_ops_scalar;
    }
}

const cllm_ops *cllm_ops_current(void) { return cllm_ops_for_isa(cllm_isa_current()); }

size_t cllm_attention_ws_floats(int T, int hs) {
    /* the SIMD attention keeps its score tiles in att/datt; ws holds up to
     * three dense T x hs head panels (forward: K^T; backward: V^T, K, Q) */
    if (T <= 0 || hs <= 0) return 64;
    return (size_t)3 * T * (size_t)hs + 64;
}
