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
    /* one (batch, head) at a time: P and dS tiles (T x Tp each, backward),
     * packed K^T and V^T panels (hs x Tp each), dense K and Q copies (T x hs
     * each), the row terms D (Tp), and a strip of scores (BF16: 64 rows) */
    if (T <= 0 || hs <= 0) return 64;
    size_t tp = CLLM_ATT_TPAD(T), t = (size_t)T, h = (size_t)hs;
    return 2 * t * tp + 2 * h * tp + 2 * t * h + tp + (size_t)CLLM_ATT_BF16_RB * tp + 64;
}
