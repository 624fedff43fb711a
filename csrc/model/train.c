/* train.c - data-parallel training over spheres: the shard forward and
 * backward passes, the deterministic gradient reduce + norm, AdamW, the
 * public forward/backward/train_step/logits calls and the per-op profiler.
 *
 * Sphere s owns a shard of the batch rows, its activation arena and its own
 * gradient buffer (sphere 0 writes the model's grads buffer directly).
 * Gradients are then reduced slice-by-slice (each sphere owns a parameter
 * slice and sums the shards in fixed order 0,1,2,...), so a run is
 * bit-identical for a given seed and thread count. */
#define _GNU_SOURCE
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "model.h"
#include "kernels/kernels.h"
#include "kernels/bf16.h"
#include "gemm/gemm.h"
#include "gemm/gemm_bf16.h"
#include "attention_bf16.h"

/* ------------------------------------------------------------- profile */
enum { P_GEMM_FWD, P_LMHEAD_FWD, P_GEMM_BWD, P_LMHEAD_BWD, P_ATTN_FWD, P_ATTN_BWD, P_LAYERNORM,
       P_GELU, P_XENT, P_EMBED, P_BIAS_GRAD, P_REDUCE, P_ADAMW, P_COUNT };
static const char *const prof_names[P_COUNT] = {
    "matmul fwd", "lm head fwd", "matmul bwd", "lm head bwd", "attention fwd", "attention bwd",
    "layernorm (+residual)", "gelu fwd+bwd (+fc bias grad)", "softmax+cross-entropy", "embedding fwd+bwd",
    "bias grads", "grad reduce + norm", "adamw"};

/* Time `stmt` into bucket k when profiling is on; only sphere PROF_SPH (0;
 * build with -DPROF_SPH=1 to see another shard's side of a barrier) records,
 * so the figures are one shard's wall time and no lock is needed. */
#ifndef PROF_SPH
#define PROF_SPH 0
#endif
#define PROF(k, stmt) do { \
        if (prof) { double t0_ = cllm_now_s(); stmt; m->prof_sec[k] += cllm_now_s() - t0_; m->prof_calls[k]++; } \
        else { stmt; } } while (0)

CLLM_EXPORT int cllm_model_profile_enable(cllm_model *m, int on) {
    CLLM_CHECK_PTR(m, "model");
    m->prof_on = on != 0;
    memset(m->prof_sec, 0, sizeof m->prof_sec);
    memset(m->prof_calls, 0, sizeof m->prof_calls);
    return CLLM_OK;
}

CLLM_EXPORT int cllm_model_profile_read(const cllm_model *m, int index, char *name, size_t cap, double *seconds,
                                        uint64_t *calls) {
    CLLM_CHECK_PTR(m, "model");
    if (index < 0 || index >= P_COUNT) return cllm_fail(CLLM_ERR_RANGE, "profile index %d out of range [0, %d)", index, P_COUNT);
    if (name && cap) snprintf(name, cap, "%s", prof_names[index]);
    if (seconds) *seconds = m->prof_sec[index];
    if (calls) *calls = m->prof_calls[index];
    return CLLM_OK;
}

/* ----------------------------------------------------- forward / backward */
typedef struct {
    cllm_model *m;
    const cllm_ops *ops;
    int isa;
    int bf16_kernel;       /* CLLM_BF16_KERNEL_* for BF16 models, else -1  */
    int B, T;
    int with_targets, do_forward, do_backward;
    float dscale;
    int skip_norm;      /* reduce phase: no sum of squares (backward only)  */
    int split_lm;       /* LM head batch-wide, column-sliced (set_split)    */
    int split_dlnf;     /* its input gradient too (set_split)               */
    int dl_bf16;        /* dlogits stored as BF16 (BF16 models, lm_dlogits) */
    int split;          /* layer GEMMs batch-wide, column-sliced (set_split) */
    const cllm_adamw *opt;
    float gscale, bc1, bc2;
} StepCtx;

/* C = op(A) @ op(B) (+ beta*C, + bias): FP32 SGEMM, or for BF16 models the
 * BF16 GEMM (FP32 operands rounded while packed; a parameter operand,
 * b_param, is read from the BF16 weight copy instead). */
static void matmul(const StepCtx *x, Sphere *s, int ta, int tb, int M, int N, int K, const float *A, int lda,
                   const float *B, int b_param, int ldb, float beta, float *C, int ldc, const float *bias) {
    if (x->bf16_kernel < 0) {
        cllm_sgemm(x->isa, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc, bias, s->gemm_ws);
        return;
    }
    const void *Bq = b_param ? (const void *)(x->m->params_bf16 + (B - x->m->params)) : (const void *)B;
    cllm_bgemm(x->bf16_kernel, ta, tb, M, N, K, 1.0f, A, 0, lda, Bq, b_param, ldb, beta, C, ldc, bias, s->gemm_ws);
}
/* B an activation / gradient; GEMM_W: B a weight (parameter) tensor */
#define GEMM(ta, tb, M_, N_, K_, A_, lda, B_, ldb, beta, C_, ldc, bias) \
    matmul(x, s, ta, tb, M_, N_, K_, A_, lda, B_, 0, ldb, beta, C_, ldc, bias)
#define GEMM_W(ta, tb, M_, N_, K_, A_, lda, B_, ldb, beta, C_, ldc, bias) \
    matmul(x, s, ta, tb, M_, N_, K_, A_, lda, B_, 1, ldb, beta, C_, ldc, bias)

/* columns [*lo, *hi) of n for sphere i of `parts`, in units of 16 floats so
 * that no two spheres write the same cache line of a row */
static void column_slice(int n, int i, int parts, int *lo, int *hi) {
    long a, b;
    cllm_split((n + 15) / 16, i, parts, &a, &b);
    *lo = (int)(a * 16 < n ? a * 16 : n);
    *hi = (int)(b * 16 < n ? b * 16 : n);
}

/* Which GEMMs run batch-wide, every sphere multiplying every row of the
 * batch by its slice of the weight's columns instead of all of the weight by
 * its shard's rows (bit-identical either way: each output is the same K-long
 * sum). Both need every sphere that passes the barriers to see the same
 * flags, so they are set once per call, before the pool runs.
 *   split_lm:   the LM head's logits and wte gradient (wte is the largest
 *               operand), whenever the batch is spread over several spheres;
 *   split_dlnf: with split_lm, its input gradient too, when that packs less;
 *   split:      the layers' forward and input-gradient GEMMs, when the shards
 *               are shorter than the GEMM's MC (a sphere packing all of a
 *               weight for its few rows costs more than it computes) and
 *               every sphere of the pool holds a shard (they all run the
 *               layers).
 * With split_lm / split the matching weight gradients are batch-wide too
 * (batch_dwte, embed_grads, weight_grad), which changes the summation order
 * against the per-shard run (a sum of shard sums) to that of one sphere.
 * CLLM_GEMM_SPLIT_ROWS=<rows> replaces the MC threshold of `split`; 0 turns
 * both off (every product per shard), for experiments and tests. */
static void set_split(const cllm_model *m, StepCtx *x) {
    const char *v = getenv("CLLM_GEMM_SPLIT_ROWS");
    char *end = NULL;
    long env = v && *v ? strtol(v, &end, 10) : -1;
    if (!v || !*v || *end || env < 0 || env > INT_MAX) env = -1;
    int rows = (m->last_B + m->active - 1) / m->active * m->last_T;
    x->split_lm = m->active > 1 && env != 0;
    /* dlnf(rows, C) = dlogits(rows, V) @ wte(V, C): each sphere packs its
     * A rows and B columns, V floats each, so per shard it packs rows + C,
     * batch-wide by column slice all rows + C / spheres (every sphere reads
     * all of the V-wide dlogits); the smaller wins. Measured (default model,
     * BF16, 2 threads: 1024-row shards, C = 256): 288 / 291 / 284 ms per step
     * per shard against 309 / 306 / 305 ms column-sliced, alternated. */
    long all_rows = (long)m->last_B * m->last_T;
    x->split_dlnf = x->split_lm && all_rows + m->C / m->active < (long)rows + m->C;
    x->split = m->active > 1 && m->active == m->nspheres && rows < (env >= 0 ? env : cllm_sgemm_mc(x->isa));
}

/* Y(N, Ncol) = A(N, K) @ op(W) + bias for a layer weight W (tb: W stored
 * (Ncol, K), the input-gradient products, profiled as "matmul bwd"; else
 * (K, Ncol), the forward ones); A and Y are this shard's rows. With x->split
 * every sphere runs it over every row of the batch, for its slice of Y's
 * columns, between two barriers: bit-identical to the per-shard product (each
 * output is the same K-long sum). */
static void linear(StepCtx *x, Sphere *s, int tb, int N, int Ncol, int K, const float *A, int lda, const float *W,
                   int ldw, float *Y, int ldy, const float *bias) {
    cllm_model *m = x->m;
    int prof = m->prof_on && s == &m->sph[PROF_SPH], kind = tb ? P_GEMM_BWD : P_GEMM_FWD;
    if (!x->split) {
        PROF(kind, GEMM_W(0, tb, N, Ncol, K, A, lda, W, ldw, 0.0f, Y, ldy, bias));
        return;
    }
    size_t r0 = (size_t)s->b0 * x->T;
    int rows = m->last_B * x->T, lo, hi;
    column_slice(Ncol, (int)(s - m->sph), m->active, &lo, &hi);
    cllm_spheres_barrier(m->pool); /* every shard's rows of A are ready */
    if (hi > lo)
        PROF(kind, GEMM_W(0, tb, rows, hi - lo, K, A - r0 * lda, lda, tb ? W + (size_t)lo * ldw : W + lo, ldw, 0.0f,
                          Y - r0 * ldy + lo, ldy, bias ? bias + lo : NULL));
    cllm_spheres_barrier(m->pool); /* every column of Y is ready */
}

/* dW(K, Ncol) = A(N, K)^T @ dY(N, Ncol), a layer weight's gradient. Per
 * shard into the sphere's own gradient (dw, reduced later); with x->split
 * batch-wide: every sphere multiplies every row of the batch for its slice of
 * dW's columns, straight into the model's gradient (dw_model; GRAD_LAYER:
 * nothing to reduce), with the K = all-rows sums one sphere running the whole
 * batch would form. Called right after the linear() that read the same dY:
 * its closing barrier is the one this needs (every shard's dY is final), and
 * nothing writes A or dY again before the next barrier every sphere passes
 * only after finishing this product. */
static void weight_grad(StepCtx *x, Sphere *s, int K, int Ncol, const float *A, const float *dY, float *dw,
                        float *dw_model) {
    cllm_model *m = x->m;
    int prof = m->prof_on && s == &m->sph[PROF_SPH];
    if (!x->split) {
        int N = s->bs * x->T;
        PROF(P_GEMM_BWD, GEMM(1, 0, K, Ncol, N, A, K, dY, Ncol, 0.0f, dw, Ncol, NULL));
        return;
    }
    size_t r0 = (size_t)s->b0 * x->T;
    int rows = m->last_B * x->T, lo, hi;
    column_slice(Ncol, (int)(s - m->sph), m->active, &lo, &hi);
    if (hi > lo)
        PROF(P_GEMM_BWD, GEMM(1, 0, K, hi - lo, rows, A - r0 * K, K, dY - r0 * Ncol + lo, Ncol, 0.0f, dw_model + lo,
                              Ncol, NULL));
}

static void shard_forward(StepCtx *x, Sphere *s) {
    cllm_model *m = x->m;
    const cllm_ops *ops = x->ops;
    int T = x->T, C = m->C, NH = m->NH, L = m->L, Bs = s->bs, N = Bs * T;
    const int32_t *ids = m->inputs + (size_t)s->b0 * T;
    Weights *w = &m->w;
    int prof = m->prof_on && s == &m->sph[PROF_SPH];

    PROF(P_EMBED, ops->embed_fwd(s->encoded, ids, w->wte, w->wpe, Bs, T, C));
    LayerAct *a0 = &s->act[0];
    PROF(P_LAYERNORM, ops->layernorm_fwd(a0->ln1, a0->ln1_mean, a0->ln1_rstd, s->encoded, w->h[0].ln1w, w->h[0].ln1b, N, C));
    for (int l = 0; l < L; l++) {
        LayerW *lw = &w->h[l];
        LayerAct *a = &s->act[l];
        const float *resid = l == 0 ? s->encoded : s->act[l - 1].res3;
        linear(x, s, 0, N, 3 * C, C, a->ln1, C, lw->qkvw, 3 * C, a->qkv, 3 * C, lw->qkvb);
        if (x->bf16_kernel >= 0)
            PROF(P_ATTN_FWD, attention_fwd_bf16(x->bf16_kernel, a->atty, a->lse, a->qkv, Bs, T, C, NH, s->gemm_ws,
                                                s->att_ws));
        else
            PROF(P_ATTN_FWD, ops->attention_fwd(a->atty, a->lse, a->qkv, Bs, T, C, NH, s->att_ws));
        linear(x, s, 0, N, C, C, a->atty, C, lw->projw, C, a->attproj, C, lw->projb);
        PROF(P_LAYERNORM, ops->residual_layernorm_fwd(a->res2, a->ln2, a->ln2_mean, a->ln2_rstd, resid, a->attproj,
                                    lw->ln2w, lw->ln2b, N, C));
        linear(x, s, 0, N, 4 * C, C, a->ln2, C, lw->fcw, 4 * C, a->fch, 4 * C, lw->fcb);
        PROF(P_GELU, ops->gelu_fwd(a->fch_gelu, a->fch, (size_t)N * 4 * C));
        linear(x, s, 0, N, C, 4 * C, a->fch_gelu, 4 * C, lw->fcprojw, C, a->fcproj, C, lw->fcprojb);
        if (l + 1 < L) {
            LayerAct *an = &s->act[l + 1];
            PROF(P_LAYERNORM, ops->residual_layernorm_fwd(a->res3, an->ln1, an->ln1_mean, an->ln1_rstd, a->res2, a->fcproj,
                                        w->h[l + 1].ln1w, w->h[l + 1].ln1b, N, C));
        } else {
            PROF(P_LAYERNORM, ops->residual_layernorm_fwd(a->res3, s->lnf, s->lnf_mean, s->lnf_rstd, a->res2, a->fcproj,
                                        w->lnfw, w->lnfb, N, C));
        }
    }
}

/* LM head, tied: logits(N,V) = lnf(N,C) @ wte(V,C)^T over the rows [all
 * rows of the batch when split, else this shard's], columns [v0, v1). Each
 * logit is the same K = C dot product either way: bit-identical. */
static void lm_head_fwd(StepCtx *x, Sphere *s, const float *lnf, float *logits, int rows, int v0, int v1) {
    cllm_model *m = x->m;
    int C = m->C, V = m->V, prof = m->prof_on && s == &m->sph[PROF_SPH];
    if (v1 > v0)
        PROF(P_LMHEAD_FWD, GEMM_W(0, 1, rows, v1 - v0, C, lnf, C, m->w.wte + (size_t)v0 * C, C, 0.0f, logits + v0, V,
                                  NULL));
}

/* dlogits of BF16 models (x->dl_bf16): shard_loss rounds each row of
 * dlogits to BF16 in place, into the first half of its own logits row (row
 * stride 2V BF16 values), exactly as the BF16 GEMM would round it while
 * packing. The two LM-head backward products then read half the bytes and
 * pack without converting: bit-identical to packing the FP32 dlogits. */
static void lm_bwd_gemm(StepCtx *x, Sphere *s, int ta, int M, int N, int K, const float *dlogits, const float *B,
                        int b_param, int ldb, float *C, int ldc) {
    int V = x->m->V;
    if (!x->dl_bf16) {
        matmul(x, s, ta, 0, M, N, K, dlogits, V, B, b_param, ldb, 0.0f, C, ldc, NULL);
        return;
    }
    /* dlogits is element (r, j) of the FP32 logits: its BF16 one is at r*2V + j */
    const cllm_model *m = x->m;
    size_t off = (size_t)(dlogits - m->all.logits);
    const uint16_t *A = (const uint16_t *)m->all.logits + off / (size_t)V * 2 * (size_t)V + off % (size_t)V;
    const void *Bq = b_param ? (const void *)(m->params_bf16 + (B - m->params)) : (const void *)B;
    cllm_bgemm(x->bf16_kernel, ta, 0, M, N, K, 1.0f, A, 1, 2 * V, Bq, b_param, ldb, 0.0f, C, ldc, NULL, s->gemm_ws);
}

/* dlnf(N,C) = dlogits(N,V) @ wte(V,C), columns [c0, c1) */
static void lm_head_dlnf(StepCtx *x, Sphere *s, const float *dlogits, float *dlnf, int rows, int c0, int c1) {
    cllm_model *m = x->m;
    int C = m->C, V = m->V, prof = m->prof_on && s == &m->sph[PROF_SPH];
    if (c1 > c0)
        PROF(P_LMHEAD_BWD, lm_bwd_gemm(x, s, 0, rows, c1 - c0, V, dlogits, m->w.wte + c0, 1, C, dlnf + c0, C));
}

/* crossentropy_fused row by row, each row's dlogits then rounded to BF16 in
 * place (x->dl_bf16, see lm_bwd_gemm) while it is still in cache */
static void crossentropy_bf16(const StepCtx *x, float *logits, float *losses, const int32_t *tg, int N) {
    int V = x->m->V;
    for (int i = 0; i < N; i++) {
        float *l = logits + (size_t)i * V;
        x->ops->crossentropy_fused(l, losses + i, tg + i, 1, V, x->dscale);
        cllm_f32_to_bf16_n(x->isa, (uint16_t *)l, l, (size_t)V);
    }
}

/* softmax + cross-entropy of this shard's rows (logits -> dlogits) */
static void shard_loss(StepCtx *x, Sphere *s) {
    cllm_model *m = x->m;
    int T = x->T, N = s->bs * T, prof = m->prof_on && s == &m->sph[PROF_SPH];
    s->loss_sum = 0.0;
    if (!x->with_targets) return;
    const int32_t *tg = m->targets + (size_t)s->b0 * T;
    if (!x->dl_bf16)
        PROF(P_XENT, x->ops->crossentropy_fused(s->logits, s->losses, tg, N, m->V, x->dscale));
    else
        PROF(P_XENT, crossentropy_bf16(x, s->logits, s->losses, tg, N));
    double acc = 0.0;
    for (int i = 0; i < N; i++) acc += s->losses[i];
    s->loss_sum = acc;
}

static void shard_backward(StepCtx *x, Sphere *s) {
    cllm_model *m = x->m;
    const cllm_ops *ops = x->ops;
    int T = x->T, C = m->C, NH = m->NH, L = m->L, Bs = s->bs, N = Bs * T;
    const int32_t *ids = m->inputs + (size_t)s->b0 * T;
    Weights *w = &m->w, *g = &s->g;
    int prof = m->prof_on && s == &m->sph[PROF_SPH];

    /* LM head: dlnf = dlogits @ wte came before (lm_head_dlnf) */
    memset(s->dres, 0, sizeof(float) * (size_t)N * C);
    LayerAct *al = &s->act[L - 1];
    PROF(P_LAYERNORM, ops->layernorm_bwd(s->dres, g->lnfw, g->lnfb, s->dlnf, al->res3, w->lnfw, s->lnf_mean, s->lnf_rstd, N, C));

    for (int l = L - 1; l >= 0; l--) {
        LayerW *lw = &w->h[l], *lg = &g->h[l], *mg = &m->gw.h[l];
        LayerAct *a = &s->act[l];
        const float *resid = l == 0 ? s->encoded : s->act[l - 1].res3;
        /* res3 = res2 + fcproj: dres flows to both */
        linear(x, s, 1, N, 4 * C, C, s->dres, C, lw->fcprojw, C, s->dfch, 4 * C, NULL);
        weight_grad(x, s, 4 * C, C, a->fch_gelu, s->dres, lg->fcprojw, mg->fcprojw);
        PROF(P_BIAS_GRAD, ops->bias_grad(lg->fcprojb, s->dres, N, C));
        PROF(P_GELU, ops->gelu_bwd_bias(s->dfch, lg->fcb, a->fch, s->dfch, N, 4 * C));
        linear(x, s, 1, N, C, 4 * C, s->dfch, 4 * C, lw->fcw, 4 * C, s->dtmp, C, NULL);
        weight_grad(x, s, C, 4 * C, a->ln2, s->dfch, lg->fcw, mg->fcw);
        PROF(P_LAYERNORM, ops->layernorm_bwd(s->dres, lg->ln2w, lg->ln2b, s->dtmp, a->res2, lw->ln2w, a->ln2_mean, a->ln2_rstd, N, C));
        /* res2 = resid + attproj */
        linear(x, s, 1, N, C, C, s->dres, C, lw->projw, C, s->dtmp, C, NULL);
        weight_grad(x, s, C, C, a->atty, s->dres, lg->projw, mg->projw);
        PROF(P_BIAS_GRAD, ops->bias_grad(lg->projb, s->dres, N, C));
        if (x->bf16_kernel >= 0)
            PROF(P_ATTN_BWD, attention_bwd_bf16(x->bf16_kernel, s->dqkv, s->dtmp, a->qkv, a->lse, Bs, T, C,
                                                NH, s->gemm_ws, s->att_ws));
        else
            PROF(P_ATTN_BWD, ops->attention_bwd(s->dqkv, s->dtmp, a->qkv, a->lse, Bs, T, C, NH, s->att_ws));
        linear(x, s, 1, N, C, 3 * C, s->dqkv, 3 * C, lw->qkvw, 3 * C, s->dtmp, C, NULL);
        weight_grad(x, s, C, 3 * C, a->ln1, s->dqkv, lg->qkvw, mg->qkvw);
        PROF(P_BIAS_GRAD, ops->bias_grad(lg->qkvb, s->dqkv, N, 3 * C));
        PROF(P_LAYERNORM, ops->layernorm_bwd(s->dres, lg->ln1w, lg->ln1b, s->dtmp, resid, lw->ln1w, a->ln1_mean, a->ln1_rstd, N, C));
    }
    if (x->split_lm) return; /* the embedding's gradients come batch-wide (embed_grads) */
    memset(g->wpe, 0, sizeof(float) * (size_t)m->P * C);
    PROF(P_EMBED, ops->embed_bwd(g->wte, g->wpe, s->dres, ids, Bs, T, C));
}

/* dwte = dlogits^T @ lnf over this shard's rows (overwrites the shard's
 * gradient: data-parallel, reduced with the rest) */
static void shard_dwte(StepCtx *x, Sphere *s) {
    cllm_model *m = x->m;
    int N = s->bs * x->T, C = m->C, V = m->V, prof = m->prof_on && s == &m->sph[PROF_SPH];
    PROF(P_LMHEAD_BWD, lm_bwd_gemm(x, s, 1, V, C, N, s->logits, s->lnf, 0, C, s->g.wte, C));
}

/* Batch-wide (split_lm), rows [v0, v1) of the vocabulary: dwte[v0:v1] =
 * dlogits[:, v0:v1]^T @ lnf over every row of the batch, straight into the
 * model's gradient (GRAD_LM: nothing to reduce). The same K-long sums as one
 * sphere running the whole batch. */
static void batch_dwte(StepCtx *x, Sphere *s, int v0, int v1) {
    cllm_model *m = x->m;
    int rows = m->last_B * x->T, C = m->C, prof = m->prof_on && s == &m->sph[PROF_SPH];
    if (v1 > v0)
        PROF(P_LMHEAD_BWD, lm_bwd_gemm(x, s, 1, v1 - v0, C, rows, m->all.logits + v0, m->all.lnf, 0, C,
                                       m->gw.wte + (size_t)v0 * C, C));
}

/* Batch-wide embedding backward (split_lm), after every shard's backward:
 * the token rows of wte in [v0, v1) and the columns [c0, c1) of wpe get
 * every row of the batch's dres added, in row order, as one sphere running
 * the whole batch adds them (bit-identical to it). */
static void embed_grads_slice(const StepCtx *x, int v0, int v1, int c0, int c1) {
    cllm_model *m = x->m;
    int T = x->T, C = m->C, N = m->last_B * T;
    const float *dres = m->all.dres;
    for (int p = 0; p < m->P && c1 > c0; p++) memset(m->gw.wpe + (size_t)p * C + c0, 0, sizeof(float) * (size_t)(c1 - c0));
    for (int i = 0; i < N; i++) {
        const float *d = dres + (size_t)i * C;
        int id = m->inputs[i];
        if (id >= v0 && id < v1) x->ops->add_into(m->gw.wte + (size_t)id * C, d, (size_t)C);
        if (c1 > c0) x->ops->add_into(m->gw.wpe + (size_t)(i % T) * C + c0, d + c0, (size_t)(c1 - c0));
    }
}

static void embed_grads(StepCtx *x, Sphere *s, int v0, int v1, int c0, int c1) {
    cllm_model *m = x->m;
    int prof = m->prof_on && s == &m->sph[PROF_SPH];
    PROF(P_EMBED, embed_grads_slice(x, v0, v1, c0, c1));
}

/* phase 1: forward and/or backward of this sphere's shard. With several
 * spheres the LM head is batch-wide (x->split_lm): barriers separate the
 * per-shard parts from it, and every sphere of the pool passes them. */
static int task_fwd_bwd(void *arg, int sphere, int n) {
    (void)n;
    StepCtx *x = arg;
    cllm_model *m = x->m;
    Sphere *s = &m->sph[sphere];
    int mine = s->bs > 0, rows, lo, hi;
    if (!x->split_lm) {
        if (!mine) return CLLM_OK;
        rows = s->bs * x->T;
        if (x->do_forward) {
            shard_forward(x, s);
            lm_head_fwd(x, s, s->lnf, s->logits, rows, 0, m->V);
            shard_loss(x, s);
        }
        if (x->do_backward) {
            shard_dwte(x, s);
            lm_head_dlnf(x, s, s->logits, s->dlnf, rows, 0, m->C);
            shard_backward(x, s);
        }
        return CLLM_OK;
    }
    rows = m->last_B * x->T;
    if (x->do_forward) {
        if (mine) shard_forward(x, s);
        cllm_spheres_barrier(m->pool);
        if (sphere < m->active) {
            column_slice(m->V, sphere, m->active, &lo, &hi);
            lm_head_fwd(x, s, m->all.lnf, m->all.logits, rows, lo, hi);
        }
        cllm_spheres_barrier(m->pool);
        if (mine) shard_loss(x, s);
    }
    if (x->do_backward) {
        cllm_spheres_barrier(m->pool); /* every row's dlogits are ready */
        if (x->split_dlnf && sphere < m->active) {
            column_slice(m->C, sphere, m->active, &lo, &hi);
            lm_head_dlnf(x, s, m->all.logits, m->all.dlnf, rows, lo, hi);
        } else if (!x->split_dlnf && mine) {
            lm_head_dlnf(x, s, s->logits, s->dlnf, s->bs * x->T, 0, m->C);
        }
        if (sphere < m->active) {
            column_slice(m->V, sphere, m->active, &lo, &hi);
            batch_dwte(x, s, lo, hi);
        }
        cllm_spheres_barrier(m->pool); /* every row's dlnf is ready */
        if (mine) shard_backward(x, s);
        cllm_spheres_barrier(m->pool); /* every shard's dres is final */
        if (sphere < m->active) {
            int c0, c1;
            column_slice(m->V, sphere, m->active, &lo, &hi);
            column_slice(m->C, sphere, m->active, &c0, &c1);
            embed_grads(x, s, lo, hi, c0, c1);
        }
    }
    return CLLM_OK;
}

/* slice of the parameter buffer owned by a sphere for reduce / AdamW,
 * in units of 16 floats so slices never share a cache line */
static void param_slice(const cllm_model *m, int sphere, int n, size_t *lo, size_t *hi) {
    long units = (long)((m->nparams + 15) / 16), a, b;
    cllm_split(units, sphere, n, &a, &b);
    *lo = (size_t)a * 16;
    *hi = (size_t)b * 16;
    if (*hi > m->nparams) *hi = m->nparams;
    if (*lo > *hi) *lo = *hi;
}

/* the part [*a, *b) of tensor i inside the buffer slice [lo, hi); 0 if none */
static int tensor_part(const cllm_model *m, int i, size_t lo, size_t hi, size_t *a, size_t *b) {
    const cllm_tensor_info *t = &m->tensors[i];
    *a = t->offset > lo ? t->offset : lo;
    *b = t->offset + t->numel < hi ? t->offset + t->numel : hi;
    return *a < *b;
}

/* does the reduce phase sum tensor i over the shards (else it was computed
 * batch-wide into the model's gradient: grad_kind) */
static int summed_over_shards(const StepCtx *x, int i) {
    switch (x->m->grad_kind[i]) {
    case GRAD_LM: return !x->split_lm;
    case GRAD_LAYER: return !x->split;
    default: return 1;
    }
}

/* phase 2, reduce_grads_and_norm: over this sphere's slice of the buffer,
 * grads = sum over shards in fixed order 0,1,2,... for the per-shard
 * tensors; the last addition also yields the sum of squares (add_into_sumsq:
 * one pass over memory instead of two); batch-wide tensors only add to it */
static int task_reduce(void *arg, int sphere, int n) {
    StepCtx *x = arg;
    cllm_model *m = x->m;
    size_t lo, hi;
    param_slice(m, sphere, n, &lo, &hi);
    double sumsq = 0.0;
    int last = m->active - 1;
    size_t a, b;
    for (int i = 0; i < m->ntensors && lo < hi; i++) {
        if (!tensor_part(m, i, lo, hi, &a, &b)) continue;
        float *g = m->grads + a;
        if (last >= 1 && summed_over_shards(x, i)) {
            for (int k = 1; k < last; k++) x->ops->add_into(g, m->sph[k].grads_buf + a, b - a);
            if (!x->skip_norm)
                sumsq += x->ops->add_into_sumsq(g, m->sph[last].grads_buf + a, b - a);
            else
                x->ops->add_into(g, m->sph[last].grads_buf + a, b - a);
        } else if (!x->skip_norm) {
            sumsq += x->ops->sumsq(g, b - a);
        }
    }
    m->sph[sphere].sumsq = sumsq;
    return CLLM_OK;
}

static int task_sumsq(void *arg, int sphere, int n) {
    StepCtx *x = arg;
    cllm_model *m = x->m;
    size_t lo, hi;
    param_slice(m, sphere, n, &lo, &hi);
    m->sph[sphere].sumsq = hi > lo ? x->ops->sumsq(m->grads + lo, hi - lo) : 0.0;
    return CLLM_OK;
}

/* phase 3: AdamW on this sphere's slice, tensor by tensor (decay flag) */
static int task_adamw(void *arg, int sphere, int n) {
    StepCtx *x = arg;
    cllm_model *m = x->m;
    const cllm_adamw *o = x->opt;
    size_t lo, hi;
    param_slice(m, sphere, n, &lo, &hi);
    size_t a, b;
    for (int i = 0; i < m->ntensors && lo < hi; i++) {
        if (!tensor_part(m, i, lo, hi, &a, &b)) continue;
        const cllm_tensor_info *t = &m->tensors[i];
        /* BF16 models: refresh the BF16 copy chunk by chunk right behind
         * the update, while the new weights are still in L1 */
        size_t chunk = m->params_bf16 ? 4096 : b - a;
        for (size_t c = a; c < b; c += chunk) {
            size_t e = b - c < chunk ? b : c + chunk;
            x->ops->adamw(m->params + c, m->grads + c, m->adam_m + c, m->adam_v + c, e - c, o->lr, o->beta1,
                          o->beta2, o->eps, t->decay ? o->weight_decay : 0.0f, x->bc1, x->bc2, x->gscale);
            model_sync_bf16_range(m, x->isa, c, e);
        }
    }
    return CLLM_OK;
}

static int check_ids(const cllm_model *m, const int32_t *ids, size_t n, int lo, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < lo || ids[i] >= m->V)
            return cllm_fail(CLLM_ERR_RANGE, "%s[%zu] = %d is out of range [%d, %d)", what, i, ids[i], lo, m->V);
    return CLLM_OK;
}

/* step context for the last (B, T) block, on the current ISA */
static void init_ctx(cllm_model *m, StepCtx *x) {
    memset(x, 0, sizeof *x);
    x->m = m;
    x->isa = cllm_isa_current();
    x->ops = cllm_ops_for_isa(x->isa);
    x->bf16_kernel = m->params_bf16 ? cllm_bf16_kernel_best(x->isa) : -1;
    x->B = m->last_B;
    x->T = m->last_T;
}

/* point s's activations at its rows of the batch-wide ones, starting at
 * token row r0 (the layout lists' sizes with N = 1 are floats per row) */
static void point_shard(cllm_model *m, Sphere *s, size_t r0) {
    const size_t N = 1, C = (size_t)m->C, V = (size_t)m->V, NH = (size_t)m->NH;
#define X_VIEW(f, n) s->f = m->all.f + r0 * (n);
#define X_VIEW_LAYER(f, n) s->act[l].f = m->all.act[l].f + r0 * (n);
    CLLM_ACTS_WALK(m->L, X_VIEW, X_VIEW_LAYER)
#undef X_VIEW_LAYER
#undef X_VIEW
    (void)N; (void)V; (void)NH;
}

static int prepare(cllm_model *m, const int32_t *inputs, const int32_t *targets, int B, int T, StepCtx *x) {
    CLLM_CHECK_PTR(m, "model");
    CLLM_CHECK_PTR(inputs, "inputs");
    if (B < 1 || B > m->Bmax)
        return cllm_fail(CLLM_ERR_INVALID, "batch of %d rows: must be in [1, %d] (the model's batch_size)", B, m->Bmax);
    if (T < 1 || T > m->Tmax)
        return cllm_fail(CLLM_ERR_INVALID, "sequence length %d: must be in [1, %d] (the model's seq_len)", T, m->Tmax);
    size_t n = (size_t)B * T;
    int rc = check_ids(m, inputs, n, 0, "inputs");
    if (rc) return rc;
    if (targets) { rc = check_ids(m, targets, n, -1, "targets"); if (rc) return rc; }
    memcpy(m->inputs, inputs, n * sizeof(int32_t));
    long valid = 0;
    if (targets) {
        memcpy(m->targets, targets, n * sizeof(int32_t));
        for (size_t i = 0; i < n; i++) valid += targets[i] >= 0;
    }
    m->last_B = B; m->last_T = T;
    init_ctx(m, x);
    x->with_targets = targets != NULL;
    x->do_forward = 1;
    /* without targets this is inference (logits): FP32 master weights,
     * whatever the training precision */
    if (!targets) x->bf16_kernel = -1;
    m->dlogits_bf16 = x->dl_bf16 = x->bf16_kernel >= 0;
    if (m->loss_tokens > 0 && valid > m->loss_tokens)
        return cllm_fail(CLLM_ERR_INVALID, "the block has %ld target tokens, more than the %ld set by "
                         "cllm_model_set_loss_tokens", valid, m->loss_tokens);
    long denom = m->loss_tokens > 0 ? m->loss_tokens : valid;
    x->dscale = denom > 0 ? 1.0f / (float)denom : 0.0f;
    m->valid_count = valid;
    m->loss_denom = denom;
    m->active = m->nspheres < B ? m->nspheres : B;
    for (int i = 0; i < m->nspheres; i++) {
        long lo = 0, hi = 0;
        if (i < m->active) cllm_split(B, i, m->active, &lo, &hi);
        m->sph[i].b0 = (int)lo;
        m->sph[i].bs = (int)(hi - lo);
        /* this shard's rows of the batch-wide activations */
        if (i < m->active) point_shard(m, &m->sph[i], (size_t)lo * T);
    }
    set_split(m, x);
    m->have_fwd = 0;
    return CLLM_OK;
}

static float total_loss(const cllm_model *m) {
    double acc = 0.0;
    for (int i = 0; i < m->active; i++) acc += m->sph[i].loss_sum;
    return m->loss_denom > 0 ? (float)(acc / (double)m->loss_denom) : 0.0f;
}

CLLM_EXPORT int cllm_model_forward(cllm_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                                   float *loss) {
    StepCtx x;
    int rc = prepare(m, inputs, targets, B, T, &x);
    if (rc) return rc;
    rc = cllm_spheres_run(m->pool, task_fwd_bwd, &x);
    if (rc) return rc;
    m->have_fwd = 1;
    m->fwd_targets = targets != NULL;
    if (loss) *loss = targets ? total_loss(m) : 0.0f;
    return CLLM_OK;
}

/* global gradient norm from the spheres' partial sums of squares, combined
 * in sphere order (deterministic) */
static float combined_norm(const cllm_model *m) {
    double acc = 0.0;
    for (int i = 0; i < m->nspheres; i++) acc += m->sph[i].sumsq;
    return (float)sqrt(acc);
}

/* reduce shard gradients into m->grads and return the global norm */
static int reduce_grads_and_norm(cllm_model *m, StepCtx *x, float *norm) {
    int rc, prof = m->prof_on;
    PROF(P_REDUCE, rc = cllm_spheres_run(m->pool, task_reduce, x));
    if (rc) return rc;
    *norm = combined_norm(m);
    return CLLM_OK;
}

CLLM_EXPORT int cllm_model_backward(cllm_model *m) {
    CLLM_CHECK_PTR(m, "model");
    if (!m->have_fwd || !m->fwd_targets)
        return cllm_fail(CLLM_ERR_STATE, "backward: needs a preceding forward with targets");
    StepCtx x;
    init_ctx(m, &x);
    x.do_backward = 1;
    x.dl_bf16 = m->dlogits_bf16; /* as the forward stored them */
    set_split(m, &x);
    int rc = cllm_spheres_run(m->pool, task_fwd_bwd, &x);
    if (rc) return rc;
    float norm;
    x.skip_norm = 1; /* nobody reads it: cllm_model_grad_norm / adamw compute their own */
    rc = reduce_grads_and_norm(m, &x, &norm);
    m->have_fwd = 0; /* dlogits were consumed */
    return rc;
}

CLLM_EXPORT int cllm_model_set_loss_tokens(cllm_model *m, int64_t n) {
    CLLM_CHECK_PTR(m, "model");
    if (n < 0 || n > (int64_t)LONG_MAX)
        return cllm_fail(CLLM_ERR_INVALID, "loss tokens must be >= 0 (0 = each block's own count), got %lld",
                         (long long)n);
    m->loss_tokens = (long)n;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_model_grad_norm(cllm_model *m, float *norm) {
    CLLM_CHECK_PTR(m, "model"); CLLM_CHECK_PTR(norm, "norm");
    StepCtx x;
    init_ctx(m, &x);
    int rc = cllm_spheres_run(m->pool, task_sumsq, &x);
    if (rc) return rc;
    *norm = combined_norm(m);
    return CLLM_OK;
}

static int check_opt(const cllm_adamw *o, int t) {
    CLLM_CHECK_PTR(o, "opt");
    if (t < 1) return cllm_fail(CLLM_ERR_INVALID, "adamw: step t must be >= 1, got %d", t);
    if (!(o->lr >= 0.0f) || !isfinite(o->lr)) return cllm_fail(CLLM_ERR_INVALID, "adamw: learning rate must be finite and >= 0, got %g", o->lr);
    if (!(o->beta1 >= 0.0f && o->beta1 < 1.0f)) return cllm_fail(CLLM_ERR_INVALID, "adamw: beta1 must be in [0, 1), got %g", o->beta1);
    if (!(o->beta2 >= 0.0f && o->beta2 < 1.0f)) return cllm_fail(CLLM_ERR_INVALID, "adamw: beta2 must be in [0, 1), got %g", o->beta2);
    if (!(o->eps > 0.0f) || !isfinite(o->eps)) return cllm_fail(CLLM_ERR_INVALID, "adamw: eps must be > 0, got %g", o->eps);
    if (!(o->weight_decay >= 0.0f) || !isfinite(o->weight_decay)) return cllm_fail(CLLM_ERR_INVALID, "adamw: weight_decay must be >= 0, got %g", o->weight_decay);
    if (isnan(o->grad_clip)) return cllm_fail(CLLM_ERR_INVALID, "adamw: grad_clip is NaN");
    return CLLM_OK;
}

static int apply_adamw(cllm_model *m, StepCtx *x, const cllm_adamw *opt, int t, float norm) {
    if (!isfinite(norm))
        return cllm_fail(CLLM_ERR_NUMERIC, "non-finite gradient norm (%g) at step %d: weights not updated "
                         "(lower the learning rate)", norm, t);
    x->opt = opt;
    x->gscale = 1.0f;
    if (opt->grad_clip > 0.0f) {
        float coef = opt->grad_clip / (norm + 1e-6f);
        if (coef < 1.0f) x->gscale = coef;
    }
    x->bc1 = 1.0f - powf(opt->beta1, (float)t);
    x->bc2 = 1.0f - powf(opt->beta2, (float)t);
    int rc, prof = m->prof_on;
    PROF(P_ADAMW, rc = cllm_spheres_run(m->pool, task_adamw, x));
    return rc;
}

CLLM_EXPORT int cllm_model_adamw(cllm_model *m, const cllm_adamw *opt, int t, float *grad_norm) {
    CLLM_CHECK_PTR(m, "model");
    int rc = check_opt(opt, t);
    if (rc) return rc;
    float norm;
    rc = cllm_model_grad_norm(m, &norm);
    if (rc) return rc;
    if (grad_norm) *grad_norm = norm;
    StepCtx x;
    init_ctx(m, &x);
    return apply_adamw(m, &x, opt, t, norm);
}

CLLM_EXPORT int cllm_model_train_step(cllm_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                                      const cllm_adamw *opt, int t, float *loss, float *grad_norm) {
    CLLM_CHECK_PTR(m, "model");
    CLLM_CHECK_PTR(targets, "targets");
    int rc = check_opt(opt, t);
    if (rc) return rc;
    StepCtx x;
    rc = prepare(m, inputs, targets, B, T, &x);
    if (rc) return rc;
    if (m->loss_denom == 0) return cllm_fail(CLLM_ERR_INVALID, "train_step: every target is ignored (-1)");
    x.do_backward = 1;
    rc = cllm_spheres_run(m->pool, task_fwd_bwd, &x);
    if (rc) return rc;
    float l = total_loss(m), norm;
    if (loss) *loss = l;
    rc = reduce_grads_and_norm(m, &x, &norm);
    if (rc) return rc;
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(l))
        return cllm_fail(CLLM_ERR_NUMERIC, "non-finite loss (%g) at step %d: weights not updated "
                         "(lower the learning rate)", l, t);
    return apply_adamw(m, &x, opt, t, norm);
}

CLLM_EXPORT int cllm_model_logits(cllm_model *m, const int32_t *inputs, int B, int T, float *out) {
    CLLM_CHECK_PTR(out, "out");
    int rc = cllm_model_forward(m, inputs, NULL, B, T, NULL);
    if (rc) return rc;
    memcpy(out, m->all.logits, sizeof(float) * (size_t)B * T * m->V);
    m->have_fwd = 0;
    return CLLM_OK;
}
