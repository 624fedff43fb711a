/* optim.c - the optimizer side of a training step: the deterministic
 * gradient reduce + global norm and AdamW, each a sphere-pool run over the
 * parameter buffer split into per-sphere slices, and the public grad_norm
 * and adamw calls.
 *
 * Sphere s owns a slice of the parameter buffer and sums the shards'
 * gradients for it in fixed order 0,1,2,...; the partial sums of squares
 * are combined in sphere order. A run is so bit-identical for a given seed,
 * thread count and split plan. */
#include <math.h>
#include "optim.h"
#include "precision.h"
#include "decode.h"
#include "kernels/kernels.h"

typedef struct {
    cllm_model *m;
    const SplitPlan *plan;  /* reduce: which tensors are summed over shards */
    int with_norm;          /* reduce: also the sum of squares               */
    const cllm_adamw *opt;  /* adamw                                         */
    float gscale, bc1, bc2;
} OptimCtx;

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

/* over this sphere's slice of the buffer, grads = sum over shards in fixed
 * order 0,1,2,... for the per-shard tensors; the last addition also yields
 * the sum of squares (add_into_sumsq: one pass over memory instead of two);
 * batch-wide tensors only add to it */
static int task_reduce(void *arg, int sphere, int n) {
    const OptimCtx *x = arg;
    cllm_model *m = x->m;
    const cllm_ops *ops = m->ops;
    size_t lo, hi;
    param_slice(m, sphere, n, &lo, &hi);
    double sumsq = 0.0;
    int last = m->active - 1;
    size_t a, b;
    for (int i = 0; i < m->ntensors && lo < hi; i++) {
        if (!tensor_part(m, i, lo, hi, &a, &b)) continue;
        float *g = m->grads + a;
        if (last >= 1 && split_summed_over_shards(x->plan, m->grad_kind[i])) {
            for (int k = 1; k < last; k++) ops->add_into(g, m->sph[k].grads_buf + a, b - a);
            if (x->with_norm)
                sumsq += ops->add_into_sumsq(g, m->sph[last].grads_buf + a, b - a);
            else
                ops->add_into(g, m->sph[last].grads_buf + a, b - a);
        } else if (x->with_norm) {
            sumsq += ops->sumsq(g, b - a);
        }
    }
    m->sph[sphere].sumsq = sumsq;
    return CLLM_OK;
}

static int task_sumsq(void *arg, int sphere, int n) {
    const OptimCtx *x = arg;
    cllm_model *m = x->m;
    size_t lo, hi;
    param_slice(m, sphere, n, &lo, &hi);
    m->sph[sphere].sumsq = hi > lo ? m->ops->sumsq(m->grads + lo, hi - lo) : 0.0;
    return CLLM_OK;
}

/* AdamW on this sphere's slice, tensor by tensor (decay flag), in chunks
 * of the precision's adamw_chunk, each followed by its weight sync */
static int task_adamw(void *arg, int sphere, int n) {
    const OptimCtx *x = arg;
    cllm_model *m = x->m;
    const cllm_adamw *o = x->opt;
    const ModelPrecision *prec = m->prec;
    size_t lo, hi;
    param_slice(m, sphere, n, &lo, &hi);
    size_t a, b;
    for (int i = 0; i < m->ntensors && lo < hi; i++) {
        if (!tensor_part(m, i, lo, hi, &a, &b)) continue;
        const cllm_tensor_info *t = &m->tensors[i];
        size_t chunk = prec->adamw_chunk ? prec->adamw_chunk : b - a;
        for (size_t c = a; c < b; c += chunk) {
            size_t e = b - c < chunk ? b : c + chunk;
            m->ops->adamw(m->params + c, m->grads + c, m->adam_m + c, m->adam_v + c, e - c, o->lr, o->beta1,
                          o->beta2, o->eps, t->decay ? o->weight_decay : 0.0f, x->bc1, x->bc2, x->gscale);
            prec->sync_weights(m, c, e);
        }
    }
    return CLLM_OK;
}

/* global gradient norm from the spheres' partial sums of squares, combined
 * in sphere order (deterministic) */
static float combined_norm(const cllm_model *m) {
    double acc = 0.0;
    for (int i = 0; i < m->nspheres; i++) acc += m->sph[i].sumsq;
    return (float)sqrt(acc);
}

int optim_reduce(cllm_model *m, const SplitPlan *p, float *norm) {
    OptimCtx x = {.m = m, .plan = p, .with_norm = norm != NULL};
    int rc;
    PROF(m->prof_on, m, P_REDUCE, rc = cllm_spheres_run(m->pool, task_reduce, &x));
    if (rc) return rc;
    if (norm) *norm = combined_norm(m);
    return CLLM_OK;
}

CLLM_EXPORT int cllm_model_grad_norm(cllm_model *m, float *norm) {
    CLLM_CHECK_PTR(m, "model"); CLLM_CHECK_PTR(norm, "norm");
    model_exec_sync(m);
    OptimCtx x = {.m = m};
    int rc = cllm_spheres_run(m->pool, task_sumsq, &x);
    if (rc) return rc;
    *norm = combined_norm(m);
    return CLLM_OK;
}

int optim_check(const cllm_adamw *o, int t) {
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

int optim_adamw(cllm_model *m, const cllm_adamw *opt, int t, float norm) {
    cllm_decoder_release_weights(m->dec);   /* training resumes: the generation copy is stale */
    if (!isfinite(norm))
        return cllm_fail(CLLM_ERR_NUMERIC, "non-finite gradient norm (%g) at step %d: weights not updated "
                         "(lower the learning rate)", norm, t);
    model_exec_sync(m);
    OptimCtx x = {.m = m, .opt = opt, .gscale = 1.0f};
    if (opt->grad_clip > 0.0f) {
        float coef = opt->grad_clip / (norm + 1e-6f);
        if (coef < 1.0f) x.gscale = coef;
    }
    x.bc1 = 1.0f - powf(opt->beta1, (float)t);
    x.bc2 = 1.0f - powf(opt->beta2, (float)t);
    int rc;
    PROF(m->prof_on, m, P_ADAMW, rc = cllm_spheres_run(m->pool, task_adamw, &x));
    return rc;
}

CLLM_EXPORT int cllm_model_adamw(cllm_model *m, const cllm_adamw *opt, int t, float *grad_norm) {
    CLLM_CHECK_PTR(m, "model");
    int rc = optim_check(opt, t);
    if (rc) return rc;
    float norm;
    rc = cllm_model_grad_norm(m, &norm);
    if (rc) return rc;
    if (grad_norm) *grad_norm = norm;
    return optim_adamw(m, opt, t, norm);
}
