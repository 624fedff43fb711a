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

/* scratch floats attention_fwd/bwd (FP32 and BF16) need for sequence length
 * T, head size hs: per (batch, head) one T x T tile of probabilities and one
 * of score gradients (backward), packed K^T / V^T panels, a strip of scores */
size_t cllm_attention_ws_floats(int T, int hs);
/* T rounded up to whole key panels: the row stride of the attention score
 * tiles in that workspace (a multiple of 32 floats, so of every SIMD width) */
#define CLLM_ATT_TPAD(T) (((size_t)(T) + 31) / 32 * 32)

/* The (batch b, head h) slices the attention backward works on: Q, K, V in
 * qkv (B, T, 3C) and their gradients in dqkv (rows 3C apart), dO in dout
 * (B, T, C; rows C apart) and the row log-sum-exps L in lse (B, NH, T). */
typedef struct {
    const float *Q, *K, *V, *dO, *L;
    float *dQ, *dK, *dV;
} cllm_att_head;

static inline cllm_att_head cllm_att_head_at(const float *qkv, float *dqkv, const float *dout, const float *lse,
                                             int b, int h, int T, int C, int NH) {
    size_t hs = (size_t)(C / NH), off = (size_t)b * T * 3 * C + (size_t)h * hs;
    cllm_att_head a;
    a.Q = qkv + off, a.K = a.Q + C, a.V = a.Q + 2 * (size_t)C;
    a.dQ = dqkv + off, a.dK = a.dQ + C, a.dV = a.dQ + 2 * (size_t)C;
    a.dO = dout + (size_t)b * T * C + (size_t)h * hs;
    a.L = lse + ((size_t)b * NH + h) * T;
    return a;
}
/* query rows per block of the BF16 attention (attention_bf16.c) */
#define CLLM_ATT_BF16_RB 64

/* Fill the table of one SIMD ISA (used by kernels_avx2.c, kernels_avx512.c
 * after including kernels_simd.h, which defines S(name)). */
#define CLLM_OPS_PICK_0(name) cllm_ref_##name
#define CLLM_OPS_PICK_1(name) S(name)
#define CLLM_OPS_SIMD_FIELD(name, simd, ...) .name = CLLM_OPS_PICK_##simd(name),
#endif
