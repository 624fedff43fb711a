/* model.c - the GPT-2 model object: config validation and memory estimate,
 * the parameter tensor table, shard activation arenas, new/free/init, the
 * BF16 weight copies and the accessors (tensor info, buffers). The layout
 * itself is declared in layout.h. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"
#include "kernels/kernels.h"
#include "kernels/bf16.h"
#include "gemm/gemm_bf16.h"
#include "decode.h"
#include "precision_check.h"

/* ------------------------------------------------------------- sizes */

/* elements of a (d0, d1) tensor; d1 = 0 is a vector */
#define NUMEL(d0, d1) ((double)(d0) * ((d1) > 0 ? (double)(d1) : 1.0))
#define X_NUMEL(f, name, d0, d1, ...) + NUMEL(d0, d1)

/* QKVC of layout.h: c_attn's output width when the K/V heads are grouped, else 0 */
static int qkv_scratch(const cllm_config *c) { return layout_kv_heads(c) == c->num_heads ? 0 : layout_qkv(c); }

static double count_params(const cllm_config *c) {
    double V = c->vocab_size, P = c->context_len, C = c->embed_dim, QKV = layout_qkv(c);
    return 0.0 CLLM_PARAMS_HEAD(X_NUMEL) CLLM_PARAMS_TAIL(X_NUMEL) +
           (double)c->num_layers * (0.0 CLLM_PARAMS_LAYER(X_NUMEL));
}

/* floats of the activations of Bs rows of T tokens (layout.h) */
static size_t act_floats(int Bs, int T, int C_, int NH, int L, int V_, int QKVC_) {
    size_t N = (size_t)Bs * T, C = (size_t)C_, V = (size_t)V_, QKVC = (size_t)QKVC_;
    (void)V; /* the lists may size buffers by V */
#define X_SIZE(f, n) + (n)
    return (size_t)0 CLLM_ACTS_HEAD(X_SIZE) CLLM_ACTS_TAIL(X_SIZE) + (size_t)L * ((size_t)0 CLLM_ACTS_LAYER(X_SIZE));
#undef X_SIZE
}

static int resolve_threads(int threads) {
    if (threads > 0) return threads;
    int n = 1;
    cllm_cpu_count(&n);
    return n;
}

static double memory_bytes(const cllm_config *c) {
    int n = resolve_threads(c->threads);
    double P = count_params(c);
    /* every sphere holds a shard and a gradient buffer, but only spheres
     * holding whole sequences can fill theirs: with fewer sequences than
     * spheres the shards are token rows, whose weight gradients are computed
     * batch-wide (split.c), and the untouched pages of a buffer never become
     * resident (cllm_aligned_alloc) */
    int active = n < c->batch_size ? n : c->batch_size;
    double acts = (double)act_floats(c->batch_size, c->seq_len, c->embed_dim, c->num_heads, c->num_layers,
                                     c->vocab_size, qkv_scratch(c));
    double per_sphere = (double)cllm_gemm_any_ws_floats() + (double)cllm_attention_ws_floats(c->seq_len, c->embed_dim / c->num_heads) +
                        (double)c->context_len;
    double bf16_copy = c->precision == CLLM_PRECISION_BF16 ? 2.0 * P : 0.0;
    return 4.0 * (4.0 * P + (double)(active - 1) * P + (double)n * per_sphere + acts) + bf16_copy;
}

CLLM_EXPORT int cllm_config_memory(const cllm_config *cfg, double *bytes) {
    CLLM_CHECK_PTR(cfg, "cfg");
    CLLM_CHECK_PTR(bytes, "bytes");
    int rc = cllm_config_validate(cfg);
    if (rc && rc != CLLM_ERR_NOMEM) return rc;
    *bytes = memory_bytes(cfg);
    return CLLM_OK;
}

CLLM_EXPORT int cllm_config_validate(const cllm_config *c) {
    CLLM_CHECK_PTR(c, "cfg");
#define REQ(cond, ...) do { if (!(cond)) return cllm_fail(CLLM_ERR_INVALID, __VA_ARGS__); } while (0)
    REQ(c->vocab_size >= 1 && c->vocab_size <= (1 << 24), "vocab_size must be in [1, 16777216], got %d", c->vocab_size);
    REQ(c->context_len >= 1 && c->context_len <= 65536, "context_len must be in [1, 65536], got %d", c->context_len);
    REQ(c->num_layers >= 1 && c->num_layers <= 1024, "num_layers must be in [1, 1024], got %d", c->num_layers);
    REQ(c->num_heads >= 1 && c->num_heads <= 4096, "num_heads must be in [1, 4096], got %d", c->num_heads);
    REQ(c->embed_dim >= 1 && c->embed_dim <= 65536, "embed_dim must be in [1, 65536], got %d", c->embed_dim);
    REQ(c->embed_dim % c->num_heads == 0, "embed_dim (%d) must be divisible by num_heads (%d)", c->embed_dim, c->num_heads);
    REQ(c->batch_size >= 1 && c->batch_size <= 65536, "batch_size must be in [1, 65536], got %d", c->batch_size);
    REQ(c->seq_len >= 1, "seq_len must be >= 1, got %d", c->seq_len);
    REQ(c->seq_len <= c->context_len, "seq_len (%d) must not exceed context_len (%d)", c->seq_len, c->context_len);
    REQ(c->threads >= 0 && c->threads <= 4096, "threads must be in [0, 4096] (0 = all CPUs), got %d", c->threads);
    REQ(isfinite(c->max_memory_gb), "max_memory_gb must be finite");
    REQ(c->n_kv_heads >= 0 && layout_kv_heads(c),
        "n_kv_heads %d must divide num_heads %d (1 = multi-query, 0 = num_heads)", c->n_kv_heads, c->num_heads);
    REQ(c->linear_weights == 0, "training models hold Conv1D (in, out) matrices: linear_weights must be 0 "
        "(nn.Linear checkpoints are transposed on load)");
#undef REQ
    int rc = model_check_precision(c->precision, cllm_isa_current());
    if (rc) return rc;
    double limit = c->max_memory_gb > 0 ? c->max_memory_gb : 16.0;
    double need = memory_bytes(c);
    if (need > limit * 1073741824.0)
        return cllm_fail(CLLM_ERR_NOMEM, "config needs about %.2f GB (params, grads, AdamW moments and "
                         "activations for %d thread(s)), above the %.2f GB limit; reduce batch_size, seq_len, "
                         "embed_dim, num_layers, vocab_size or threads, or raise max_memory_gb",
                         need / 1073741824.0, resolve_threads(c->threads), limit);
    return CLLM_OK;
}

/* --------------------------------------------------------- tensor table */
static void add_tensor(cllm_model *m, const char *name, size_t *off, int d0, int d1, int decay, int init) {
    cllm_tensor_info *t = &m->tensors[m->ntensors];
    m->init_kind[m->ntensors++] = (unsigned char)init;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->offset = *off;
    t->ndim = d1 > 0 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1 > 0 ? d1 : 0;
    t->numel = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    t->decay = decay;
    *off += t->numel;
}

static int total_tensors(int L) { return NTENS_HEAD + L * NTENS_PER_LAYER + NTENS_TAIL; }

/* the tensor table in buffer order (names, shapes, offsets, decay flags) */
static void build_table(cllm_model *m) {
    int V = m->V, P = m->P, C = m->C, QKV = m->QKV;
    size_t off = 0;
    char nm[64];
    m->ntensors = 0;
#define X_TOP(f, name, d0, d1, decay, init) add_tensor(m, name, &off, d0, d1, decay, init);
#define X_LAYER(f, name, d0, d1, decay, init) \
    snprintf(nm, sizeof nm, "transformer.h.%d.%s", l, name); add_tensor(m, nm, &off, d0, d1, decay, init);
    CLLM_PARAMS_WALK(m->L, X_TOP, X_LAYER)
#undef X_LAYER
#undef X_TOP
    (void)V; (void)P;
    m->nparams = off;
}

/* point w's fields into base, following the tensor table */
static void point_weights(const cllm_model *m, float *base, Weights *w) {
    const cllm_tensor_info *t = m->tensors;
#define X_POINT(f, ...) w->f = base + (t++)->offset;
#define X_POINT_LAYER(f, ...) w->h[l].f = base + (t++)->offset;
    CLLM_PARAMS_WALK(m->L, X_POINT, X_POINT_LAYER)
#undef X_POINT_LAYER
#undef X_POINT
}

/* grad_kind of every tensor, found by where its gradient lives */
static void mark_grad_kinds(cllm_model *m) {
    for (int i = 0; i < m->ntensors; i++) {
        const float *g = m->grads + m->tensors[i].offset;
        unsigned char k = GRAD_SHARD;
        if (g == m->gw.wte || g == m->gw.wpe) k = GRAD_LM;
        for (int l = 0; l < m->L; l++) {
            const LayerW *h = &m->gw.h[l];
            if (g == h->qkvw || g == h->projw || g == h->fcw || g == h->fcprojw) k = GRAD_LAYER;
        }
        m->grad_kind[i] = k;
    }
}

/* Carve the arena (act_floats(Bs, ...) floats) into s's activation pointers. */
static void carve(cllm_model *m, Sphere *s, int Bs) {
    size_t T = (size_t)m->Tmax, C = (size_t)m->C, V = (size_t)m->V;
    size_t N = (size_t)Bs * T, NH = (size_t)m->NH, QKVC = (size_t)m->QKVC;
    float *p = m->arena;
#define X_TAKE(f, n) s->f = p; p += (n);
#define X_TAKE_LAYER(f, n) s->act[l].f = p; p += (n);
    CLLM_ACTS_WALK(m->L, X_TAKE, X_TAKE_LAYER)
#undef X_TAKE_LAYER
#undef X_TAKE
    (void)V; (void)NH; (void)QKVC;
}

/* --------------------------------------------------------- lifecycle */
CLLM_EXPORT int cllm_model_free(cllm_model *m) {
    if (!m) return CLLM_OK;
    cllm_decoder_free(m->dec);   /* before the pool it shares */
    if (m->pool) cllm_spheres_free(m->pool);
    if (m->sph) {
        for (int i = 0; i < m->nspheres; i++) {
            Sphere *s = &m->sph[i];
            FREE_EACH(cllm_aligned_free, s->grads_buf, s->gemm_ws, s->att_ws);
            FREE_EACH(free, s->act, s->g.h);
        }
        free(m->sph);
    }
    FREE_EACH(cllm_aligned_free, m->params, m->grads, m->adam_m, m->adam_v, m->params_bf16, m->arena);
    FREE_EACH(free, m->all.act, m->inputs, m->targets, m->tensors, m->init_kind, m->grad_kind, m->w.h, m->gw.h, m);
    return CLLM_OK;
}

CLLM_EXPORT int cllm_model_new(const cllm_config *cfg, cllm_model **out) {
    CLLM_CHECK_PTR(out, "out");
    *out = NULL;
    int rc = cllm_config_validate(cfg);
    if (rc) return rc;
    cllm_model *m = calloc(1, sizeof *m);
    if (!m) return cllm_fail(CLLM_ERR_NOMEM, "model: out of memory");
    m->cfg = *cfg;
    m->V = cfg->vocab_size; m->P = cfg->context_len; m->L = cfg->num_layers;
    m->NH = cfg->num_heads; m->C = cfg->embed_dim; m->Bmax = cfg->batch_size; m->Tmax = cfg->seq_len;
    m->NKV = layout_kv_heads(cfg); m->KVD = layout_kvd(cfg); m->QKV = layout_qkv(cfg); m->QKVC = qkv_scratch(cfg);
    m->tensors = calloc((size_t)total_tensors(m->L), sizeof *m->tensors);
    m->init_kind = calloc((size_t)total_tensors(m->L), 1);
    m->grad_kind = calloc((size_t)total_tensors(m->L), 1);
    m->w.h = calloc((size_t)m->L, sizeof(LayerW));
    m->gw.h = calloc((size_t)m->L, sizeof(LayerW));
    if (!m->tensors || !m->init_kind || !m->grad_kind || !m->w.h || !m->gw.h) goto nomem;
    build_table(m);
    m->params = cllm_aligned_alloc(m->nparams * sizeof(float));
    m->grads = cllm_aligned_alloc(m->nparams * sizeof(float));
    m->adam_m = cllm_aligned_alloc(m->nparams * sizeof(float));
    m->adam_v = cllm_aligned_alloc(m->nparams * sizeof(float));
    if (!m->params || !m->grads || !m->adam_m || !m->adam_v) goto nomem;
    if (cfg->precision == CLLM_PRECISION_BF16) {
        m->params_bf16 = cllm_aligned_alloc(m->nparams * sizeof(uint16_t));
        if (!m->params_bf16) goto nomem;
    }
    point_weights(m, m->params, &m->w);
    point_weights(m, m->grads, &m->gw);
    mark_grad_kinds(m);

    rc = cllm_spheres_new(cfg->threads, &m->pool);
    if (rc) { cllm_model_free(m); return rc; }
    cllm_spheres_count(m->pool, &m->nspheres);
    m->sph = calloc((size_t)m->nspheres, sizeof(Sphere));
    if (!m->sph) goto nomem;
    /* the batch-wide activations; the spheres' views into them are set
     * per call (step.c) */
    m->all.act = calloc((size_t)m->L, sizeof(LayerAct));
    m->arena = cllm_aligned_alloc(act_floats(m->Bmax, m->Tmax, m->C, m->NH, m->L, m->V, m->QKVC) * sizeof(float));
    if (!m->all.act || !m->arena) goto nomem;
    carve(m, &m->all, m->Bmax);
    for (int i = 0; i < m->nspheres; i++) {
        Sphere *s = &m->sph[i]; /* each may get a shard (of token rows when B is small) */
        s->act = calloc((size_t)m->L, sizeof(LayerAct));
        s->g.h = calloc((size_t)m->L, sizeof(LayerW));
        s->gemm_ws = cllm_aligned_alloc(cllm_gemm_any_ws_floats() * sizeof(float));
        s->att_ws = cllm_aligned_alloc(cllm_attention_ws_floats(m->Tmax, m->C / m->NH) * sizeof(float));
        if (!s->act || !s->g.h || !s->gemm_ws || !s->att_ws) goto nomem;
        if (i == 0) {
            point_weights(m, m->grads, &s->g);
        } else {
            s->grads_buf = cllm_aligned_alloc(m->nparams * sizeof(float));
            if (!s->grads_buf) goto nomem;
            point_weights(m, s->grads_buf, &s->g);
        }
    }
    m->inputs = calloc((size_t)m->Bmax * m->Tmax, sizeof(int32_t));
    m->targets = calloc((size_t)m->Bmax * m->Tmax, sizeof(int32_t));
    if (!m->inputs || !m->targets) goto nomem;
    rc = cllm_model_init(m, cfg->seed);
    if (rc) { cllm_model_free(m); return rc; }
    *out = m;
    return CLLM_OK;
nomem:
    cllm_model_free(m);
    return cllm_fail(CLLM_ERR_NOMEM, "model: out of memory allocating buffers");
}

CLLM_GETTER(cllm_model_get_config, cllm_model, "model", cllm_config, h->cfg)

CLLM_EXPORT int cllm_model_init(cllm_model *m, uint64_t seed) {
    CLLM_CHECK_PTR(m, "model");
    uint64_t st = seed ^ 0x636c6c6d5f696e69ull; /* "cllm_ini" */
    float proj_std = 0.02f / sqrtf(2.0f * (float)m->L);
    for (int i = 0; i < m->ntensors; i++) {
        const cllm_tensor_info *t = &m->tensors[i];
        float *p = m->params + t->offset;
        switch (m->init_kind[i]) {
        case INIT_ONE: for (size_t k = 0; k < t->numel; k++) p[k] = 1.0f; break;
        case INIT_ZERO: for (size_t k = 0; k < t->numel; k++) p[k] = 0.0f; break;
        case INIT_PROJ: for (size_t k = 0; k < t->numel; k++) p[k] = proj_std * rng_normal(&st); break;
        default: for (size_t k = 0; k < t->numel; k++) p[k] = 0.02f * rng_normal(&st); break;
        }
    }
    memset(m->grads, 0, m->nparams * sizeof(float));
    memset(m->adam_m, 0, m->nparams * sizeof(float));
    memset(m->adam_v, 0, m->nparams * sizeof(float));
    model_sync_bf16_range(m, cllm_isa_current(), 0, m->nparams);
    m->have_fwd = 0;
    cllm_decoder_release_weights(m->dec);   /* its copy is stale now */
    return CLLM_OK;
}

void model_sync_bf16_range(cllm_model *m, int isa, size_t lo, size_t hi) {
    if (m->params_bf16 && hi > lo) cllm_f32_to_bf16_n(isa, m->params_bf16 + lo, m->params + lo, hi - lo);
}

CLLM_EXPORT int cllm_model_sync_weights(cllm_model *m) {
    CLLM_CHECK_PTR(m, "model");
    model_sync_bf16_range(m, cllm_isa_current(), 0, m->nparams);
    cllm_decoder_release_weights(m->dec);   /* params were written from outside */
    return CLLM_OK;
}

CLLM_GETTER(cllm_model_num_params, cllm_model, "model", size_t, h->nparams)
CLLM_GETTER(cllm_model_num_tensors, cllm_model, "model", int, h->ntensors)
CLLM_EXPORT int cllm_model_tensor_info(const cllm_model *m, int index, cllm_tensor_info *out) {
    CLLM_CHECK_PTR(m, "model"); CLLM_CHECK_PTR(out, "out");
    if (index < 0 || index >= m->ntensors)
        return cllm_fail(CLLM_ERR_RANGE, "tensor index %d out of range [0, %d)", index, m->ntensors);
    *out = m->tensors[index];
    return CLLM_OK;
}
CLLM_EXPORT int cllm_model_buffers(cllm_model *m, float **params, float **grads, float **am, float **av) {
    CLLM_CHECK_PTR(m, "model");
    if (params) *params = m->params;
    if (grads) *grads = m->grads;
    if (am) *am = m->adam_m;
    if (av) *av = m->adam_v;
    return CLLM_OK;
}
CLLM_EXPORT int cllm_model_spheres(cllm_model *m, cllm_spheres **out) {
    CLLM_CHECK_PTR(m, "model"); CLLM_CHECK_PTR(out, "out");
    *out = m->pool;
    return CLLM_OK;
}
