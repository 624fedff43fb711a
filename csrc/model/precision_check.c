/* precision_check.c - the model's training precision: which precisions the CPU
 * (under the selected ISA) can run and what "auto" resolves to. Below the
 * model (model.c validates configs with it); the step's per-precision
 * operations are precision.c's. */
#include "runtime/internal.h"
#include "gemm/gemm_bf16.h"
#include "precision_check.h"

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
