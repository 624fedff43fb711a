/* kernels.h - per-op kernel table. Each ISA (scalar, avx2, avx512) provides
 * one cllm_ops; cllm_ops_current() returns the table of the selected ISA.
 * Shapes are in the comments; all tensors row-major, contiguous.
 * Conventions: "acc" outputs are accumulated (+=), others overwritten. */
#ifndef CLLM_KERNELS_H
#define CLLM_KERNELS_H
#include <stddef.h>
#include <stdint.h>

typedef struct cllm_ops {
    const char *name;
    int isa;
    /* out(N,C) = LN(x)(N,C)*w(C)+b(C); mean,rstd (N) saved for backward */
    void (*layernorm_fwd)(float *out, float *mean, float *rstd, const float *x,
                          const float *w, const float *b, int N, int C);
    /* dx(N,C) acc; dw,db(C) overwritten */
    void (*layernorm_bwd)(float *dx, float *dw, float *db, const float *dout,
                          const float *x, const float *w, const float *mean,
                          const float *rstd, int N, int C);
    /* res(N,C) = a + b, then out = LN(res) (fused residual + LayerNorm) */
    void (*residual_layernorm_fwd)(float *res, float *out, float *mean, float *rstd,
                                   const float *a, const float *b, const float *w,
                                   const float *bias, int N, int C);
    /* out(n) = a + b */
    void (*residual_fwd)(float *out, const float *a, const float *b, size_t n);
    /* tanh-GELU: out(n) = gelu(x); dx(n) = gelu'(x) * dout (overwrite) */
    void (*gelu_fwd)(float *out, const float *x, size_t n);
    void (*gelu_bwd)(float *dx, const float *x, const float *dout, size_t n);
    /* Causal multi-head attention. qkv(B,T,3C) -> out(B,T,C);
     * att(B,NH,T,T) receives the softmax probabilities (row t: cols <= t).
     * ws: scratch of cllm_attention_ws_floats(T, C/NH) floats. */
    void (*attention_fwd)(float *out, float *att, const float *qkv, int B, int T,
                          int C, int NH, float *ws);
    /* dqkv(B,T,3C) overwritten; datt(B,NH,T,T) scratch */
    void (*attention_bwd)(float *dqkv, float *datt, const float *dout,
                          const float *qkv, const float *att, int B, int T, int C,
                          int NH, float *ws);
    /* Row-wise softmax cross-entropy, fused with its gradient: logits(N,V)
     * are replaced by dlogits = (softmax - onehot(target)) * dscale; rows with
     * target < 0 get loss 0 and zero gradient. losses(N). */
    void (*crossentropy_fused)(float *logits, float *losses, const int32_t *targets,
                               int N, int V, float dscale);
    /* out(B,T,C) = wte[ids] + wpe[t] */
    void (*embed_fwd)(float *out, const int32_t *ids, const float *wte,
                      const float *wpe, int B, int T, int C);
    /* dwte(V,C) acc rows ids; dwpe(T,C) acc */
    void (*embed_bwd)(float *dwte, float *dwpe, const float *dout,
                      const int32_t *ids, int B, int T, int C);
    /* db(OC) = sum over N rows of dout(N,OC) (overwrite) */
    void (*bias_grad)(float *db, const float *dout, int N, int OC);
    /* dst(n) += src(n) */
    void (*add_into)(float *dst, const float *src, size_t n);
    /* sum of squares, accumulated in double */
    double (*sumsq)(const float *x, size_t n);
    /* AdamW on n elements (torch.optim.AdamW semantics): g *= gscale;
     * m = lerp(m, g, 1-b1); v = b2 v + (1-b2) g^2; p *= 1 - lr*wd;
     * p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps) */
    void (*adamw)(float *p, const float *g, float *m, float *v, size_t n,
                  float lr, float b1, float b2, float eps, float wd,
                  float bc1, float bc2, float gscale);
    /* y[j] = (bias ? bias[j] : 0) + sum_i x[i] * W[i*ldw + j], j in [lo,hi) */
    void (*matvec)(float *y, const float *x, const float *W, const float *bias,
                   int in, int ldw, int lo, int hi);
    /* y[r] = dot(x, W[r*C : r*C+C]), r in [lo,hi)  (LM head, tied wte) */
    void (*matvec_t)(float *y, const float *x, const float *W, int C, int lo, int hi);
    /* single-query causal attention over a KV cache: q(C); kc,vc (len, C)
     * rows strided by ldc; out(C); scratch >= len floats */
    void (*attention_step)(float *out, const float *q, const float *kc,
                           const float *vc, int len, int ldc, int C, int NH,
                           float *scratch);
    /* ---- added after the original table (append-only) ---- */
    /* fused MLP backward step: dx(N,OC) = gelu'(x) * dout (overwrite) and
     * db(OC) = column sums of dx (overwrite): gelu_bwd + bias_grad in one
     * pass over dx */
    void (*gelu_bwd_bias)(float *dx, float *db, const float *x, const float *dout,
                          int N, int OC);
} cllm_ops;

extern const cllm_ops cllm_ops_scalar;
extern const cllm_ops cllm_ops_avx2;
extern const cllm_ops cllm_ops_avx512;

const cllm_ops *cllm_ops_current(void);
const cllm_ops *cllm_ops_for_isa(int isa);

/* scratch floats attention_fwd/bwd need for sequence length T, head size hs */
size_t cllm_attention_ws_floats(int T, int hs);
#endif
