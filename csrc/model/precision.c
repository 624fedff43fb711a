/* precision.c - the model's training precision: which precisions the CPU
 * (under the selected ISA) can run, what "auto" resolves to, and the BF16
 * weight copies derived from the FP32 master weights. */
#include "model.h"
#include "kernels/bf16.h"
#include "gemm/gemm_bf16.h"

int model_check_precision(int p, int isa) {
    if (p == CLLM_PRECISION_FP32) return CLLM_OK;
    if (p != CLLM_PRECISION_BF16)
        return cllm_fail(CLLM_ERR_INVALID, "precision must be CLLM_PRECISION_FP32 (0) or CLLM_PRECISION_BF16 (1), got %d", p);
    /* the scalar ISA runs the reference BF16 kernel on any CPU (tests) */
    if (isa == CLLM_ISA_SCALAR || cllm_bf16_kernel_best(isa) != CLLM_BF16_KERNEL_SCALAR) return CLLM_OK;
    return cllm_fail(CLLM_ERR_UNSUPPORTED, "precision bf16 needs AMX-BF16 or AVX512-BF16 with the avx512 kernel "
                     "path; this CPU%s has neither usable: use precision fp32",
                     isa == CLLM_ISA_AVX2 ? " (forced to the avx2 path)" : "");
}

CLLM_EXPORT int cllm_precision_auto(int *precision) {
    CLLM_CHECK_PTR(precision, "precision");
    int k = cllm_bf16_kernel_best(cllm_isa_current());
    *precision = k != CLLM_BF16_KERNEL_SCALAR ? CLLM_PRECISION_BF16 : CLLM_PRECISION_FP32;
    return CLLM_OK;
}

void model_sync_bf16_range(cllm_model *m, int isa, size_t lo, size_t hi) {
    if (m->params_bf16 && hi > lo) cllm_f32_to_bf16_n(isa, m->params_bf16 + lo, m->params + lo, hi - lo);
}

CLLM_EXPORT int cllm_model_sync_weights(cllm_model *m) {
    CLLM_CHECK_PTR(m, "model");
    model_sync_bf16_range(m, cllm_isa_current(), 0, m->nparams);
    return CLLM_OK;
}
