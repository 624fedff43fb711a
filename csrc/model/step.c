/* step.c - the training step of data-parallel training over spheres: the
 * shard forward and backward passes, the batch-wide products the split plan
 * (split.c) asks for, and the public forward / backward / train_step /
 * logits calls, which run them on the sphere pool and hand the gradients to
 * the reduce and AdamW (optim.c).
 *
 * Sphere s owns a shard of the batch rows, its views of the batch-wide
 * activations and its own gradient buffer (sphere 0 writes the model's
 * grads buffer directly). Every precision-dependent operation goes through
 * the model's precision table (precision.h), every timed one through PROF
 * (profile.h) with the sphere's own decision to record. */
#define _GNU_SOURCE
#include <limits.h>
#include <math.h>
#include <string.h>
#include "model.h"
#include "profile.h"
#include "optim.h"
#include "precision.h"
#include "split.h"
#include "kernels/kernels.h"

/* ----------------------------------------------------- forward / backward */
typedef struct {
    cllm_model *m;
    const ModelPrecision *prec; /* the model's, or FP32 for a forward without
                                   targets (inference: FP32 master weights) */
    const cllm_ops *ops;        /* m->ops                                   */
    int B, T;
    int with_targets, do_forward, do_backward;
    float dscale;
    SplitPlan plan;             /* split_plan, made before the pool runs    */
} StepCtx;

/* time `stmt` into bucket k when sphere s records the profile */
#define SPROF(k, stmt) PROF(s->prof, x->m, k, stmt)

/* C = op(A) @ op(B) (+ beta*C, + bias) in the step's precision; GEMM: B an
 * activation / gradient, GEMM_W: B a weight (parameter) tensor */
#define GEMM(ta, tb, M_, N_, K_, A_, lda, B_, ldb, beta, C_, ldc, bias) \
    x->prec->gemm(x->m, ta, tb, M_, N_, K_, A_, lda, B_, 0, ldb, beta, C_, ldc, bias, s->gemm_ws)
#define GEMM_W(ta, tb, M_, N_, K_, A_, lda, B_, ldb, beta, C_, ldc, bias) \
    x->prec->gemm(x->m, ta, tb, M_, N_, K_, A_, lda, B_, 1, ldb, beta, C_, ldc, bias, s->gemm_ws)

/* Y(N, Ncol) = A(N, K) @ op(W) + bias for a layer weight W (tb: W stored
 * (Ncol, K), the input-gradient products, profiled as "matmul bwd"; else
 * (K, Ncol), the forward ones); A and Y are this shard's rows. With x->plan.layers
 * every sphere runs it over every row of the batch, for its slice of Y's
 * columns, between two barriers: bit-identical to the per-shard product (each
 * output is the same K-long sum). */
static void linear(StepCtx *x, Sphere *s, int tb, int N, int Ncol, int K, const float *A, int lda, const float *W,
                   int ldw, float *Y, int ldy, const float *bias) {
    cllm_model *m = x->m;
    int kind = tb ? P_GEMM_BWD : P_GEMM_FWD;
    if (!x->plan.layers) {
        SPROF(kind, GEMM_W(0, tb, N, Ncol, K, A, lda, W, ldw, 0.0f, Y, ldy, bias));
        return;
    }
    size_t r0 = (size_t)s->r0;
    int rows = m->last_B * x->T, lo, hi;
    split_columns(Ncol, (int)(s - m->sph), m->active, &lo, &hi);
    cllm_spheres_barrier(m->pool); /* every shard's rows of A are ready */
    if (hi > lo)
        SPROF(kind, GEMM_W(0, tb, rows, hi - lo, K, A - r0 * lda, lda, tb ? W + (size_t)lo * ldw : W + lo, ldw, 0.0f,
                          Y - r0 * ldy + lo, ldy, bias ? bias + lo : NULL));
    cllm_spheres_barrier(m->pool); /* every column of Y is ready */
}

/* dW(K, Ncol) = A(N, K)^T @ dY(N, Ncol), a layer weight's gradient. Per
 * shard into the sphere's own gradient (dw, reduced later); with x->plan.layers
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
    if (!x->plan.layers) {
        SPROF(P_GEMM_BWD, GEMM(1, 0, K, Ncol, s->n, A, K, dY, Ncol, 0.0f, dw, Ncol, NULL));
        return;
    }
    size_t r0 = (size_t)s->r0;
    int rows = m->last_B * x->T, lo, hi;
    split_columns(Ncol, (int)(s - m->sph), m->active, &lo, &hi);
    if (hi > lo)
        SPROF(P_GEMM_BWD, GEMM(1, 0, K, hi - lo, rows, A - r0 * K, K, dY - r0 * Ncol + lo, Ncol, 0.0f, dw_model + lo,
                              Ncol, NULL));
}

/* encoded = wte[ids] + wpe[position] of the shard's rows, a run of
 * positions at a time (a shard of token rows may start and end inside a
 * sequence) */
static void embed_rows(StepCtx *x, Sphere *s) {
    cllm_model *m = x->m;
    int T = x->T, C = m->C;
    for (int r = s->r0, end = s->r0 + s->n; r < end;) {
        int t = r % T, len = T - t < end - r ? T - t : end - r;
        x->ops->embed_fwd(s->encoded + (size_t)(r - s->r0) * C, m->inputs + r, m->w.wte, m->w.wpe + (size_t)t * C, 1,
                          len, C);
        r += len;
    }
}

/* The (sequence, head) units of attention this sphere runs, and on which
 * activations: with whole-sequence shards, every head of the shard's own
 * sequences (its views); with token-row shards (x->plan.rows), a slice of
 * the units of the whole batch (the batch-wide activations, m->all), since
 * a sequence's keys may lie in another sphere's rows. */
typedef struct {
    const Sphere *v;  /* the activation views the units read and write */
    int B, u0, u1;
} AttUnits;

static AttUnits att_units(StepCtx *x, Sphere *s) {
    cllm_model *m = x->m;
    AttUnits u;
    if (!x->plan.rows) {
        u.v = s;
        u.B = s->n / x->T;
        u.u0 = 0;
        u.u1 = u.B * m->NH;
        return u;
    }
    long lo, hi;
    cllm_split((long)m->last_B * m->NH, (int)(s - m->sph), m->nspheres, &lo, &hi);
    u.v = &m->all;
    u.B = m->last_B;
    u.u0 = (int)lo;
    u.u1 = (int)hi;
    return u;
}

/* with token-row shards, attention sits between two barriers: every row's
 * input is ready before, every unit's output after */
static void att_barrier(StepCtx *x) {
    if (x->plan.rows) cllm_spheres_barrier(x->m->pool);
}

static void attention_fwd(StepCtx *x, Sphere *s, int l) {
    cllm_model *m = x->m;
    AttUnits u = att_units(x, s);
    const LayerAct *a = &u.v->act[l];
    att_barrier(x);
    if (u.u1 > u.u0)
        SPROF(P_ATTN_FWD, x->prec->attention_fwd(m, a->atty, a->lse, a->qkv, u.B, x->T, m->C, m->NH, u.u0, u.u1,
                                                 s->gemm_ws, s->att_ws));
    att_barrier(x);
}

/* dqkv from datty (dtmp) */
static void attention_bwd(StepCtx *x, Sphere *s, int l) {
    cllm_model *m = x->m;
    AttUnits u = att_units(x, s);
    const LayerAct *a = &u.v->act[l];
    att_barrier(x);
    if (u.u1 > u.u0)
        SPROF(P_ATTN_BWD, x->prec->attention_bwd(m, u.v->dqkv, u.v->dtmp, a->qkv, a->lse, u.B, x->T, m->C, m->NH,
                                                 u.u0, u.u1, s->gemm_ws, s->att_ws));
    att_barrier(x);
}

/* Grouped K/V heads (layout.h): n rows of c_attn's output qkvc (QKV wide:
 * queries, then the KVD key and KVD value columns) into attention's qkv (3 C
 * wide), query head h getting K/V head h / (NH / NKV) */
static void expand_kv(const cllm_model *m, float *qkv, const float *qkvc, int n) {
    size_t C = (size_t)m->C, hs = C / (size_t)m->NH, KVD = (size_t)m->KVD, QKV = (size_t)m->QKV;
    int group = m->NH / m->NKV;
    for (int r = 0; r < n; r++) {
        float *d = qkv + (size_t)r * 3 * C;
        const float *src = qkvc + (size_t)r * QKV;
        memcpy(d, src, sizeof(float) * C);
        for (int h = 0; h < m->NH; h++) {
            size_t kv = (size_t)(h / group) * hs;
            memcpy(d + C + (size_t)h * hs, src + C + kv, sizeof(float) * hs);
            memcpy(d + 2 * C + (size_t)h * hs, src + C + KVD + kv, sizeof(float) * hs);
        }
    }
}

/* Its backward: dqkvc (QKV wide) of n rows from the expanded dqkv (3 C):
 * the queries' columns as they are, each K/V head's the sum of its query
 * heads' columns, added in head order (the same for every split) */
static void reduce_kv(const StepCtx *x, float *dqkvc, const float *dqkv, int n) {
    const cllm_model *m = x->m;
    size_t C = (size_t)m->C, hs = C / (size_t)m->NH, KVD = (size_t)m->KVD, QKV = (size_t)m->QKV;
    int group = m->NH / m->NKV;
    for (int r = 0; r < n; r++) {
        const float *src = dqkv + (size_t)r * 3 * C;
        float *d = dqkvc + (size_t)r * QKV;
        memcpy(d, src, sizeof(float) * C);
        for (int part = 1; part <= 2; part++) /* keys, values */
            for (int g = 0; g < m->NKV; g++) {
                float *dst = d + C + (size_t)(part - 1) * KVD + (size_t)g * hs;
                const float *head = src + (size_t)part * C + (size_t)g * group * hs;
                memcpy(dst, head, sizeof(float) * hs);
                for (int j = 1; j < group; j++) x->ops->add_into(dst, head + (size_t)j * hs, hs);
            }
    }
}

static void shard_forward(StepCtx *x, Sphere *s) {
    cllm_model *m = x->m;
    const cllm_ops *ops = x->ops;
    int C = m->C, L = m->L, N = s->n;
    Weights *w = &m->w;

    SPROF(P_EMBED, embed_rows(x, s));
    LayerAct *a0 = &s->act[0];
    SPROF(P_LAYERNORM, ops->layernorm_fwd(a0->ln1, a0->ln1_mean, a0->ln1_rstd, s->encoded, w->h[0].ln1w, w->h[0].ln1b, N, C));
    for (int l = 0; l < L; l++) {
        LayerW *lw = &w->h[l];
        LayerAct *a = &s->act[l];
        const float *resid = l == 0 ? s->encoded : s->act[l - 1].res3;
        if (m->QKVC) { /* grouped K/V heads: c_attn's output, then one K/V head per query head */
            linear(x, s, 0, N, m->QKV, C, a->ln1, C, lw->qkvw, m->QKV, s->qkvc, m->QKV, lw->qkvb);
            SPROF(P_ATTN_FWD, expand_kv(m, a->qkv, s->qkvc, N));
        } else {
            linear(x, s, 0, N, 3 * C, C, a->ln1, C, lw->qkvw, 3 * C, a->qkv, 3 * C, lw->qkvb);
        }
        attention_fwd(x, s, l);
        linear(x, s, 0, N, C, C, a->atty, C, lw->projw, C, a->attproj, C, lw->projb);
        SPROF(P_LAYERNORM, ops->residual_layernorm_fwd(a->res2, a->ln2, a->ln2_mean, a->ln2_rstd, resid, a->attproj,
                                    lw->ln2w, lw->ln2b, N, C));
        linear(x, s, 0, N, 4 * C, C, a->ln2, C, lw->fcw, 4 * C, a->fch, 4 * C, lw->fcb);
        SPROF(P_GELU, ops->gelu_fwd(a->fch_gelu, a->fch, (size_t)N * 4 * C));
        linear(x, s, 0, N, C, 4 * C, a->fch_gelu, 4 * C, lw->fcprojw, C, a->fcproj, C, lw->fcprojb);
        if (l + 1 < L) {
            LayerAct *an = &s->act[l + 1];
            SPROF(P_LAYERNORM, ops->residual_layernorm_fwd(a->res3, an->ln1, an->ln1_mean, an->ln1_rstd, a->res2, a->fcproj,
                                        w->h[l + 1].ln1w, w->h[l + 1].ln1b, N, C));
        } else {
            SPROF(P_LAYERNORM, ops->residual_layernorm_fwd(a->res3, s->lnf, s->lnf_mean, s->lnf_rstd, a->res2, a->fcproj,
                                        w->lnfw, w->lnfb, N, C));
        }
    }
}

/* LM head, tied: logits(N,V) = lnf(N,C) @ wte(V,C)^T over the rows [all
 * rows of the batch when x->plan.lm, else this shard's], columns [v0, v1). Each
 * logit is the same K = C dot product either way: bit-identical. */
static void lm_head_fwd(StepCtx *x, Sphere *s, const float *lnf, float *logits, int rows, int v0, int v1) {
    cllm_model *m = x->m;
    int C = m->C, V = m->V;
    if (v1 > v0)
        SPROF(P_LMHEAD_FWD, GEMM_W(0, 1, rows, v1 - v0, C, lnf, C, m->w.wte + (size_t)v0 * C, C, 0.0f, logits + v0, V,
                                  NULL));
}

/* dlnf(N,C) = dlogits(N,V) @ wte(V,C), columns [c0, c1) */
static void lm_head_dlnf(StepCtx *x, Sphere *s, const float *dlogits, float *dlnf, int rows, int c0, int c1) {
    cllm_model *m = x->m;
    int C = m->C, V = m->V;
    if (c1 > c0)
        SPROF(P_LMHEAD_BWD, x->prec->lm_bwd_gemm(m, 0, rows, c1 - c0, V, dlogits, m->w.wte + c0, 1, C, dlnf + c0, C,
                                                  s->gemm_ws));
}

/* softmax + cross-entropy of this shard's rows (logits -> dlogits) */
static void shard_loss(StepCtx *x, Sphere *s) {
    cllm_model *m = x->m;
    int N = s->n;
    s->loss_sum = 0.0;
    if (!x->with_targets) return;
    const int32_t *tg = m->targets + s->r0;
    SPROF(P_XENT, x->prec->crossentropy(m, s->logits, s->losses, tg, N, x->dscale));
    double acc = 0.0;
    for (int i = 0; i < N; i++) acc += s->losses[i];
    s->loss_sum = acc;
}

static void shard_backward(StepCtx *x, Sphere *s) {
    cllm_model *m = x->m;
    const cllm_ops *ops = x->ops;
    int T = x->T, C = m->C, L = m->L, N = s->n, QKV = m->QKV;
    Weights *w = &m->w, *g = &s->g;

    /* LM head: dlnf = dlogits @ wte came before (lm_head_dlnf) */
    memset(s->dres, 0, sizeof(float) * (size_t)N * C);
    LayerAct *al = &s->act[L - 1];
    SPROF(P_LAYERNORM, ops->layernorm_bwd(s->dres, g->lnfw, g->lnfb, s->dlnf, al->res3, w->lnfw, s->lnf_mean, s->lnf_rstd, N, C));

    for (int l = L - 1; l >= 0; l--) {
        LayerW *lw = &w->h[l], *lg = &g->h[l], *mg = &m->gw.h[l];
        LayerAct *a = &s->act[l];
        const float *resid = l == 0 ? s->encoded : s->act[l - 1].res3;
        /* res3 = res2 + fcproj: dres flows to both */
        linear(x, s, 1, N, 4 * C, C, s->dres, C, lw->fcprojw, C, s->dfch, 4 * C, NULL);
        weight_grad(x, s, 4 * C, C, a->fch_gelu, s->dres, lg->fcprojw, mg->fcprojw);
        SPROF(P_BIAS_GRAD, ops->bias_grad(lg->fcprojb, s->dres, N, C));
        SPROF(P_GELU, ops->gelu_bwd_bias(s->dfch, lg->fcb, a->fch, s->dfch, N, 4 * C));
        linear(x, s, 1, N, C, 4 * C, s->dfch, 4 * C, lw->fcw, 4 * C, s->dtmp, C, NULL);
        weight_grad(x, s, C, 4 * C, a->ln2, s->dfch, lg->fcw, mg->fcw);
        SPROF(P_LAYERNORM, ops->layernorm_bwd(s->dres, lg->ln2w, lg->ln2b, s->dtmp, a->res2, lw->ln2w, a->ln2_mean, a->ln2_rstd, N, C));
        /* res2 = resid + attproj */
        linear(x, s, 1, N, C, C, s->dres, C, lw->projw, C, s->dtmp, C, NULL);
        weight_grad(x, s, C, C, a->atty, s->dres, lg->projw, mg->projw);
        SPROF(P_BIAS_GRAD, ops->bias_grad(lg->projb, s->dres, N, C));
        attention_bwd(x, s, l);
        /* c_attn's output gradient: with grouped K/V heads, the expanded
         * one summed back (after attention's closing barrier with token-row
         * shards, this shard's rows are final) */
        const float *dqkv = s->dqkv;
        if (m->QKVC) {
            SPROF(P_ATTN_BWD, reduce_kv(x, s->qkvc, s->dqkv, N));
            dqkv = s->qkvc;
        }
        linear(x, s, 1, N, C, QKV, dqkv, QKV, lw->qkvw, QKV, s->dtmp, C, NULL);
        weight_grad(x, s, C, QKV, a->ln1, dqkv, lg->qkvw, mg->qkvw);
        SPROF(P_BIAS_GRAD, ops->bias_grad(lg->qkvb, dqkv, N, QKV));
        SPROF(P_LAYERNORM, ops->layernorm_bwd(s->dres, lg->ln1w, lg->ln1b, s->dtmp, resid, lw->ln1w, a->ln1_mean, a->ln1_rstd, N, C));
    }
    /* the embedding's gradients come batch-wide (embed_grads) with the LM
     * head batch-wide, as it always is with token-row shards; else the
     * shard is whole sequences */
    if (x->plan.lm) return;
    memset(g->wpe, 0, sizeof(float) * (size_t)m->P * C);
    SPROF(P_EMBED, ops->embed_bwd(g->wte, g->wpe, s->dres, m->inputs + s->r0, N / T, T, C));
}

/* dwte = dlogits^T @ lnf over this shard's rows (overwrites the shard's
 * gradient: data-parallel, reduced with the rest) */
static void shard_dwte(StepCtx *x, Sphere *s) {
    cllm_model *m = x->m;
    int N = s->n, C = m->C, V = m->V;
    SPROF(P_LMHEAD_BWD, x->prec->lm_bwd_gemm(m, 1, V, C, N, s->logits, s->lnf, 0, C, s->g.wte, C, s->gemm_ws));
}

/* Batch-wide (x->plan.lm), rows [v0, v1) of the vocabulary: dwte[v0:v1] =
 * dlogits[:, v0:v1]^T @ lnf over every row of the batch, straight into the
 * model's gradient (GRAD_LM: nothing to reduce). The same K-long sums as one
 * sphere running the whole batch. */
static void batch_dwte(StepCtx *x, Sphere *s, int v0, int v1) {
    cllm_model *m = x->m;
    int rows = m->last_B * x->T, C = m->C;
    if (v1 > v0)
        SPROF(P_LMHEAD_BWD, x->prec->lm_bwd_gemm(m, 1, v1 - v0, C, rows, m->all.logits + v0, m->all.lnf, 0, C,
                                                 m->gw.wte + (size_t)v0 * C, C, s->gemm_ws));
}

/* Batch-wide embedding backward (x->plan.lm), after every shard's backward:
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
    SPROF(P_EMBED, embed_grads_slice(x, v0, v1, c0, c1));
}

/* phase 1: forward and/or backward of this sphere's shard. With several
 * spheres the LM head is batch-wide (x->plan.lm): barriers separate the
 * per-shard parts from it, and every sphere of the pool passes them. */
static int task_fwd_bwd(void *arg, int sphere, int n) {
    (void)n;
    StepCtx *x = arg;
    cllm_model *m = x->m;
    Sphere *s = &m->sph[sphere];
    int mine = s->n > 0, rows, lo, hi;
    if (!x->plan.lm) {
        if (!mine) return CLLM_OK;
        rows = s->n;
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
            split_columns(m->V, sphere, m->active, &lo, &hi);
            lm_head_fwd(x, s, m->all.lnf, m->all.logits, rows, lo, hi);
        }
        cllm_spheres_barrier(m->pool);
        if (mine) shard_loss(x, s);
    }
    if (x->do_backward) {
        cllm_spheres_barrier(m->pool); /* every row's dlogits are ready */
        if (x->plan.dlnf && sphere < m->active) {
            split_columns(m->C, sphere, m->active, &lo, &hi);
            lm_head_dlnf(x, s, m->all.logits, m->all.dlnf, rows, lo, hi);
        } else if (!x->plan.dlnf && mine) {
            lm_head_dlnf(x, s, s->logits, s->dlnf, s->n, 0, m->C);
        }
        if (sphere < m->active) {
            split_columns(m->V, sphere, m->active, &lo, &hi);
            batch_dwte(x, s, lo, hi);
        }
        cllm_spheres_barrier(m->pool); /* every row's dlnf is ready */
        if (mine) shard_backward(x, s);
        cllm_spheres_barrier(m->pool); /* every shard's dres is final */
        if (sphere < m->active) {
            int c0, c1;
            split_columns(m->V, sphere, m->active, &lo, &hi);
            split_columns(m->C, sphere, m->active, &c0, &c1);
            embed_grads(x, s, lo, hi, c0, c1);
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

/* step context for the last (B, T) block on the model's ISA (followed here:
 * model_exec_sync), in its training precision, or in FP32 when not
 * training (a forward without targets) */
static void init_ctx(cllm_model *m, StepCtx *x, int training) {
    memset(x, 0, sizeof *x);
    model_exec_sync(m);
    x->m = m;
    x->prec = training ? m->prec : &model_precision_fp32;
    x->ops = m->ops;
    x->B = m->last_B;
    x->T = m->last_T;
}

/* the per-call decisions every sphere must share, made before the pool runs */
static void plan_call(cllm_model *m, StepCtx *x) {
    split_plan(m, &x->plan);
    profile_arm(m);
}

/* point s's activations at its rows of the batch-wide ones, starting at
 * token row r0 (the layout lists' sizes with N = 1 are floats per row) */
static void point_shard(cllm_model *m, Sphere *s, size_t r0) {
    const size_t N = 1, C = (size_t)m->C, V = (size_t)m->V, NH = (size_t)m->NH, QKVC = (size_t)m->QKVC;
#define X_VIEW(f, n) s->f = m->all.f + r0 * (n);
#define X_VIEW_LAYER(f, n) s->act[l].f = m->all.act[l].f + r0 * (n);
    CLLM_ACTS_WALK(m->L, X_VIEW, X_VIEW_LAYER)
#undef X_VIEW_LAYER
#undef X_VIEW
    (void)N; (void)V; (void)NH; (void)QKVC;
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
    /* without targets this is inference (logits): FP32 master weights,
     * whatever the training precision */
    init_ctx(m, x, targets != NULL);
    x->with_targets = targets != NULL;
    x->do_forward = 1;
    if (m->loss_tokens > 0 && valid > m->loss_tokens)
        return cllm_fail(CLLM_ERR_INVALID, "the block has %ld target tokens, more than the %ld set by "
                         "cllm_model_set_loss_tokens", valid, m->loss_tokens);
    long denom = m->loss_tokens > 0 ? m->loss_tokens : valid;
    x->dscale = denom > 0 ? 1.0f / (float)denom : 0.0f;
    m->valid_count = valid;
    m->loss_denom = denom;
    /* shards of whole sequences, or of token rows (split_row_shards) */
    m->row_shards = split_row_shards(m, B, T);
    long units = m->row_shards ? (long)B * T : B, per = m->row_shards ? 1 : T;
    m->active = m->nspheres < units ? m->nspheres : (int)units;
    for (int i = 0; i < m->nspheres; i++) {
        long lo = 0, hi = 0;
        if (i < m->active) cllm_split(units, i, m->active, &lo, &hi);
        m->sph[i].r0 = (int)(lo * per);
        m->sph[i].n = (int)((hi - lo) * per);
        /* this shard's rows of the batch-wide activations */
        if (i < m->active) point_shard(m, &m->sph[i], (size_t)(lo * per));
    }
    plan_call(m, x);
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

CLLM_EXPORT int cllm_model_backward(cllm_model *m) {
    CLLM_CHECK_PTR(m, "model");
    if (!m->have_fwd || !m->fwd_targets)
        return cllm_fail(CLLM_ERR_STATE, "backward: needs a preceding forward with targets");
    StepCtx x;
    init_ctx(m, &x, 1);
    x.do_backward = 1;
    plan_call(m, &x);
    int rc = cllm_spheres_run(m->pool, task_fwd_bwd, &x);
    if (rc) return rc;
    /* no norm: nobody reads it, cllm_model_grad_norm / adamw compute their own */
    rc = optim_reduce(m, &x.plan, NULL);
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

CLLM_EXPORT int cllm_model_train_step(cllm_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                                      const cllm_adamw *opt, int t, float *loss, float *grad_norm) {
    CLLM_CHECK_PTR(m, "model");
    CLLM_CHECK_PTR(targets, "targets");
    int rc = optim_check(opt, t);
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
    rc = optim_reduce(m, &x.plan, &norm);
    if (rc) return rc;
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(l))
        return cllm_fail(CLLM_ERR_NUMERIC, "non-finite loss (%g) at step %d: weights not updated "
                         "(lower the learning rate)", l, t);
    return optim_adamw(m, opt, t, norm);
}

CLLM_EXPORT int cllm_model_logits(cllm_model *m, const int32_t *inputs, int B, int T, float *out) {
    CLLM_CHECK_PTR(out, "out");
    int rc = cllm_model_forward(m, inputs, NULL, B, T, NULL);
    if (rc) return rc;
    memcpy(out, m->all.logits, sizeof(float) * (size_t)B * T * m->V);
    m->have_fwd = 0;
    return CLLM_OK;
}
