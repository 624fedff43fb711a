/* precision.c - the training step's FP32 and BF16 tables of operations
 * (precision.h) and the resolution of the model's ISA, kernel registry and
 * BF16 kernel (model_exec_sync). Part of the step (above model.c, which
 * never calls into it); which precisions the CPU can run is
 * precision_check.c's. */
#include "precision.h"
#include "kernels/kernels.h"
#include "kernels/bf16.h"
#include "gemm/gemm.h"
#include "gemm/gemm_bf16.h"
#include "attention_bf16.h"

void model_exec_sync(cllm_model *m) {
    int isa = cllm_isa_current();
    if (m->prec && m->isa == isa) return;
    m->prec = m->params_bf16 ? &model_precision_bf16 : &model_precision_fp32;
    m->isa = isa;
    m->ops = cllm_ops_for_isa(isa);
    m->bf16_kernel = m->params_bf16 ? cllm_bf16_kernel_best(isa) : -1;
}

/* ------------------------------------------------------------------ FP32 */
static void fp32_gemm(const cllm_model *m, int ta, int tb, int M, int N, int K, const float *A, int lda,
                      const float *B, int b_param, int ldb, float beta, float *C, int ldc, const float *bias,
                      void *ws) {
    (void)b_param;
    cllm_sgemm(m->isa, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc, bias, ws);
}

static void fp32_lm_bwd_gemm(const cllm_model *m, int ta, int M, int N, int K, const float *dlogits,
                             const float *B, int b_param, int ldb, float *C, int ldc, void *ws) {
    fp32_gemm(m, ta, 0, M, N, K, dlogits, m->V, B, b_param, ldb, 0.0f, C, ldc, NULL, ws);
}

static void fp32_attention_fwd(const cllm_model *m, float *out, float *lse, const float *qkv, int B, int T, int C,
                               int NH, int u0, int u1, void *gws, float *aws) {
    (void)gws;
    m->ops->attention_fwd(out, lse, qkv, B, T, C, NH, u0, u1, aws);
}

static void fp32_attention_bwd(const cllm_model *m, float *dqkv, const float *dout, const float *qkv,
                               const float *lse, int B, int T, int C, int NH, int u0, int u1, void *gws,
                               float *aws) {
    (void)gws;
    m->ops->attention_bwd(dqkv, dout, qkv, lse, B, T, C, NH, u0, u1, aws);
}

static void fp32_crossentropy(const cllm_model *m, float *logits, float *losses, const int32_t *targets, int N,
                              float dscale) {
    m->ops->crossentropy_fused(logits, losses, targets, N, m->V, dscale);
}

static void fp32_sync_weights(cllm_model *m, size_t lo, size_t hi) {
    (void)m; (void)lo; (void)hi; /* the GEMMs read the FP32 params themselves */
}

const ModelPrecision model_precision_fp32 = {
    "fp32", fp32_gemm, fp32_lm_bwd_gemm, fp32_attention_fwd, fp32_attention_bwd, fp32_crossentropy,
    fp32_sync_weights, 0,
};

/* ------------------------------------------------------------------ BF16 */
/* a parameter operand (b_param) is read from the BF16 weight copy */
static const void *bf16_operand(const cllm_model *m, const float *B, int b_param) {
    return b_param ? (const void *)(m->params_bf16 + (B - m->params)) : (const void *)B;
}

/* the BF16 GEMM: FP32 operands rounded to BF16 while packed */
static void bf16_gemm(const cllm_model *m, int ta, int tb, int M, int N, int K, const float *A, int lda,
                      const float *B, int b_param, int ldb, float beta, float *C, int ldc, const float *bias,
                      void *ws) {
    cllm_bgemm(m->bf16_kernel, ta, tb, M, N, K, 1.0f, A, 0, lda, bf16_operand(m, B, b_param), b_param, ldb, beta,
               C, ldc, bias, ws);
}

/* dlogits as bf16_crossentropy stored them: each row rounded to BF16 in
 * place, into the first half of its own logits row (row stride 2V BF16
 * values), exactly as the BF16 GEMM would round it while packing. The LM
 * head's backward products read half the bytes and pack without
 * converting: bit-identical to packing the FP32 dlogits. Element (r, j) of
 * the FP32 logits has its BF16 value at r*2V + j. */
static void bf16_lm_bwd_gemm(const cllm_model *m, int ta, int M, int N, int K, const float *dlogits,
                             const float *B, int b_param, int ldb, float *C, int ldc, void *ws) {
    size_t V = (size_t)m->V, off = (size_t)(dlogits - m->all.logits);
    const uint16_t *A = (const uint16_t *)m->all.logits + off / V * 2 * V + off % V;
    cllm_bgemm(m->bf16_kernel, ta, 0, M, N, K, 1.0f, A, 1, 2 * m->V, bf16_operand(m, B, b_param), b_param, ldb,
               0.0f, C, ldc, NULL, ws);
}

static void bf16_attention_fwd(const cllm_model *m, float *out, float *lse, const float *qkv, int B, int T, int C,
                               int NH, int u0, int u1, void *gws, float *aws) {
    attention_fwd_bf16(m->bf16_kernel, out, lse, qkv, B, T, C, NH, u0, u1, gws, aws);
}

static void bf16_attention_bwd(const cllm_model *m, float *dqkv, const float *dout, const float *qkv,
                               const float *lse, int B, int T, int C, int NH, int u0, int u1, void *gws,
                               float *aws) {
    attention_bwd_bf16(m->bf16_kernel, dqkv, dout, qkv, lse, B, T, C, NH, u0, u1, gws, aws);
}

/* crossentropy_fused row by row, each row's dlogits then rounded to BF16 in
 * place (see bf16_lm_bwd_gemm) while it is still in cache */
static void bf16_crossentropy(const cllm_model *m, float *logits, float *losses, const int32_t *targets, int N,
                              float dscale) {
    size_t V = (size_t)m->V;
    for (int i = 0; i < N; i++) {
        float *l = logits + (size_t)i * V;
        m->ops->crossentropy_fused(l, losses + i, targets + i, 1, m->V, dscale);
        cllm_f32_to_bf16_n(m->isa, (uint16_t *)l, l, V);
    }
}

static void bf16_sync_weights(cllm_model *m, size_t lo, size_t hi) {
    model_sync_bf16_range(m, m->isa, lo, hi);
}

const ModelPrecision model_precision_bf16 = {
    "bf16", bf16_gemm, bf16_lm_bwd_gemm, bf16_attention_fwd, bf16_attention_bwd, bf16_crossentropy,
    bf16_sync_weights, 4096,
};
