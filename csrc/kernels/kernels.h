/* kernels.h - the per-ISA kernel table cllm_ops, generated from the op
 * registry (ops_list.h, which documents every op's shapes). Each ISA
 * (scalar, avx2, avx512) provides one table; cllm_ops_current() returns the
 * table of the selected ISA. */
#ifndef CLLM_KERNELS_H
#define CLLM_KERNELS_H
#include <stddef.h>
#include <stdint.h>

typedef struct cllm_ops {
    const char *name;
    int isa;
#define OP(name, simd, ret, params, ...) ret (*name) params;
#include "ops_list.h"
#undef OP
} cllm_ops;

/* the plain scalar reference of every op (kernels_scalar.c); ISAs without
 * their own body for an op use these */
#define OP(name, simd, ret, params, ...) ret cllm_ref_##name params;
#include "ops_list.h"
#undef OP

extern const cllm_ops cllm_ops_scalar;
extern const cllm_ops cllm_ops_avx2;
extern const cllm_ops cllm_ops_avx512;

const cllm_ops *cllm_ops_current(void);
const cllm_ops *cllm_ops_for_isa(int isa);

/* scratch floats attention_fwd/bwd need for sequence length T, head size hs */
size_t cllm_attention_ws_floats(int T, int hs);

/* Fill the table of one SIMD ISA (used by kernels_avx2.c, kernels_avx512.c
 * after including kernels_simd.h, which defines S(name)). */
#define CLLM_OPS_PICK_0(name) cllm_ref_##name
#define CLLM_OPS_PICK_1(name) S(name)
#define CLLM_OPS_SIMD_FIELD(name, simd, ...) .name = CLLM_OPS_PICK_##simd(name),
#endif
