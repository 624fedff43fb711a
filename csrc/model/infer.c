/* infer.c - single-token decoding with a KV cache (cllm_model_infer_*):
 * matrix-vector products split across spheres by output rows. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"
#include "kernels/kernels.h"

/* ------------------------------------------------------------ inference */
typedef struct {
    const cllm_ops *ops;
    int kind;              /* 0 matvec (Conv1D), 1 matvec_t (LM head) */
    float *y;
    const float *x, *W, *bias;
    int in, out;
} MatvecCtx;

static int task_matvec(void *arg, int sphere, int n) {
    MatvecCtx *c = arg;
    long units = (c->out + 15) / 16, a, b;
    cllm_split(units, sphere, n, &a, &b);
    int lo = (int)(a * 16), hi = (int)(b * 16);
    if (hi > c->out) hi = c->out;
    if (lo >= hi) return CLLM_OK;
    if (c->kind == 0) c->ops->matvec(c->y, c->x, c->W, c->bias, c->in, c->out, lo, hi);
    else c->ops->matvec_t(c->y, c->x, c->W, c->in, lo, hi);
    return CLLM_OK;
}

/* y = x @ W (+bias), split by output rows across spheres when it pays */
static int par_matvec(cllm_model *m, const cllm_ops *ops, int kind, float *y, const float *x, const float *W,
                      const float *bias, int in, int out) {
    MatvecCtx c = {ops, kind, y, x, W, bias, in, out};
    if (m->nspheres > 1 && (double)in * out >= 65536.0) return cllm_spheres_run(m->pool, task_matvec, &c);
    return task_matvec(&c, 0, 1);
}

CLLM_EXPORT int cllm_model_infer_reset(cllm_model *m) {
    CLLM_CHECK_PTR(m, "model");
    if (!m->kcache) {
        size_t kv = (size_t)m->L * m->P * m->C;
        m->kcache = cllm_aligned_alloc(kv * sizeof(float));
        m->vcache = cllm_aligned_alloc(kv * sizeof(float));
        m->ix = cllm_aligned_alloc(sizeof(float) * (size_t)m->C * 14);
        if (!m->kcache || !m->vcache || !m->ix) {
            cllm_aligned_free(m->kcache); cllm_aligned_free(m->vcache); cllm_aligned_free(m->ix);
            m->kcache = m->vcache = m->ix = NULL;
            return cllm_fail(CLLM_ERR_NOMEM, "infer: cannot allocate the KV cache");
        }
        float *p = m->ix;
        int C = m->C;
        m->ixb = p + C; m->iqkv = p + 2 * C; m->iatt = p + 5 * C; m->ifc = p + 6 * C; m->ifc2 = p + 10 * C;
    }
    m->ipos = 0;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_model_infer_pos(const cllm_model *m, int *pos) {
    CLLM_CHECK_PTR(m, "model"); CLLM_CHECK_PTR(pos, "pos");
    *pos = m->ipos;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_model_infer_step(cllm_model *m, int32_t token, float *logits) {
    CLLM_CHECK_PTR(m, "model");
    CLLM_CHECK_PTR(logits, "logits");
    if (!m->kcache) { int rc = cllm_model_infer_reset(m); if (rc) return rc; }
    if (token < 0 || token >= m->V)
        return cllm_fail(CLLM_ERR_RANGE, "token id %d out of range [0, %d)", token, m->V);
    if (m->ipos >= m->P)
        return cllm_fail(CLLM_ERR_RANGE, "KV cache full: context_len %d reached (reset and re-feed a suffix)", m->P);
    const cllm_ops *ops = cllm_ops_current();
    int C = m->C, L = m->L, pos = m->ipos, rc;
    Weights *w = &m->w;
    float *x = m->ix, *xb = m->ixb, *qkv = m->iqkv, *att = m->iatt, *fc = m->ifc, *fc2 = m->ifc2;
    float mean, rstd;
    const float *e = w->wte + (size_t)token * C, *pe = w->wpe + (size_t)pos * C;
    for (int i = 0; i < C; i++) x[i] = e[i] + pe[i];
    for (int l = 0; l < L; l++) {
        LayerW *lw = &w->h[l];
        float *kc = m->kcache + (size_t)l * m->P * C, *vc = m->vcache + (size_t)l * m->P * C;
        ops->layernorm_fwd(xb, &mean, &rstd, x, lw->ln1w, lw->ln1b, 1, C);
        if ((rc = par_matvec(m, ops, 0, qkv, xb, lw->qkvw, lw->qkvb, C, 3 * C))) return rc;
        memcpy(kc + (size_t)pos * C, qkv + C, sizeof(float) * C);
        memcpy(vc + (size_t)pos * C, qkv + 2 * C, sizeof(float) * C);
        ops->attention_step(att, qkv, kc, vc, pos + 1, C, C, m->NH, m->sph[0].infer_scratch);
        if ((rc = par_matvec(m, ops, 0, xb, att, lw->projw, lw->projb, C, C))) return rc;
        ops->add_into(x, xb, (size_t)C);
        ops->layernorm_fwd(xb, &mean, &rstd, x, lw->ln2w, lw->ln2b, 1, C);
        if ((rc = par_matvec(m, ops, 0, fc, xb, lw->fcw, lw->fcb, C, 4 * C))) return rc;
        ops->gelu_fwd(fc2, fc, (size_t)4 * C);
        if ((rc = par_matvec(m, ops, 0, xb, fc2, lw->fcprojw, lw->fcprojb, 4 * C, C))) return rc;
        ops->add_into(x, xb, (size_t)C);
    }
    ops->layernorm_fwd(xb, &mean, &rstd, x, w->lnfw, w->lnfb, 1, C);
    if ((rc = par_matvec(m, ops, 1, logits, xb, w->wte, NULL, C, m->V))) return rc;
    m->ipos = pos + 1;
    return CLLM_OK;
}
