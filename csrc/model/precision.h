/* precision.h - the training precision as a table of operations: every
 * step operation whose arithmetic depends on the precision (the GEMMs, the
 * LM head's backward products, attention, the cross-entropy and the BF16
 * weight copies), chosen once per model (model_exec_sync) so the step calls
 * through the table instead of branching on the precision. Each operation
 * runs on the ISA and BF16 kernel the model resolved (m->isa, m->ops,
 * m->bf16_kernel). */
#ifndef CLLM_MODEL_PRECISION_H
#define CLLM_MODEL_PRECISION_H
#include <stddef.h>
#include <stdint.h>
#include "model.h"

typedef struct ModelPrecision {
    const char *name;
    /* C = op(A) @ op(B) + beta*C (+ bias); b_param: B points into the FP32
     * params (a weight; BF16 reads the BF16 copy of it), else B is an
     * activation or gradient. ws: the sphere's GEMM workspace. */
    void (*gemm)(const cllm_model *m, int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                 int b_param, int ldb, float beta, float *C, int ldc, const float *bias, void *ws);
    /* the LM head's backward products, C = op(dlogits) @ B: dlogits are rows
     * of stride V inside the model's batch-wide logits buffer, as the
     * cross-entropy below left them */
    void (*lm_bwd_gemm)(const cllm_model *m, int ta, int M, int N, int K, const float *dlogits, const float *B,
                        int b_param, int ldb, float *C, int ldc, void *ws);
    /* causal attention (the attention_fwd / attention_bwd registry ops) of
     * the (sequence, head) units [u0, u1) of B * NH; gws: GEMM workspace,
     * aws: attention workspace */
    void (*attention_fwd)(const cllm_model *m, float *out, float *lse, const float *qkv, int B, int T, int C, int NH,
                          int u0, int u1, void *gws, float *aws);
    void (*attention_bwd)(const cllm_model *m, float *dqkv, const float *dout, const float *qkv, const float *lse,
                          int B, int T, int C, int NH, int u0, int u1, void *gws, float *aws);
    /* softmax + cross-entropy of N rows of V logits (overwritten by dlogits,
     * scaled by dscale), per-token losses; BF16 then stores each row's
     * dlogits as BF16 for lm_bwd_gemm */
    void (*crossentropy)(const cllm_model *m, float *logits, float *losses, const int32_t *targets, int N,
                         float dscale);
    /* refresh the weight copies the GEMMs read from params[lo, hi) (BF16:
     * the BF16 copy; FP32: nothing) */
    void (*sync_weights)(cllm_model *m, size_t lo, size_t hi);
    /* AdamW updates a slice this many floats at a time, syncing each chunk
     * right behind the update while it is still in L1; 0: the whole slice */
    size_t adamw_chunk;
} ModelPrecision;

/* FP32 everywhere; also what a forward without targets runs in either
 * precision (inference on the FP32 master weights) */
extern const ModelPrecision model_precision_fp32;
/* BF16 GEMMs and attention products, FP32 master weights */
extern const ModelPrecision model_precision_bf16;

/* The one place the step's execution state follows the ISA: on first use,
 * and whenever cllm_set_isa changed the ISA since the model last resolved
 * it, re-resolve m->isa, m->ops, m->bf16_kernel (the precision table itself
 * is fixed by the config). Called by every training entry point before it
 * runs the pool. */
void model_exec_sync(cllm_model *m);

#endif
