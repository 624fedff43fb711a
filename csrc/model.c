/*
 * model.c - GPT-2 (pre-LN, tied LM head) training and inference.
 *
 * Layout of the parameter buffer (floats, in this order; Hugging Face names):
 *   transformer.wte.weight            (V, C)
 *   transformer.wpe.weight            (P, C)          P = context_len
 *   for each layer i, contiguous:
 *     transformer.h.i.ln_1.weight     (C)    .ln_1.bias (C)
 *     transformer.h.i.attn.c_attn.weight (C, 3C)  .c_attn.bias (3C)
 *     transformer.h.i.attn.c_proj.weight (C, C)   .c_proj.bias (C)
 *     transformer.h.i.ln_2.weight     (C)    .ln_2.bias (C)
 *     transformer.h.i.mlp.c_fc.weight (C, 4C)     .c_fc.bias (4C)
 *     transformer.h.i.mlp.c_proj.weight (4C, C)   .c_proj.bias (C)
 *   transformer.ln_f.weight (C)   transformer.ln_f.bias (C)
 * Conv1D weights are (in, out): y = x @ W + b. Gradients and the two AdamW
 * moments use the same layout in their own buffers.
 *
 * Training is data-parallel over spheres: sphere s owns a shard of the batch
 * rows, its activation arena and its own gradient buffer (sphere 0 writes the
 * model's grads buffer directly). Gradients are then reduced slice-by-slice
 * (each sphere owns a parameter slice and sums the shards in fixed order
 * 0,1,2,...), so a run is bit-identical for a given seed and thread count.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "internal.h"
#include "kernels.h"
#include "gemm.h"
#include "spheres.h"

#define NTENS_PER_LAYER 12

typedef struct {
    float *ln1w, *ln1b, *qkvw, *qkvb, *projw, *projb;
    float *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb;
} LayerW;

typedef struct {
    float *wte, *wpe, *lnfw, *lnfb;
    LayerW *h; /* L entries */
} Weights;

typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *att, *attproj, *res2;
    float *ln2, *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *fcproj, *res3;
} LayerAct;

/* One sphere's context: its shard, arena and gradient accumulators. */
typedef struct {
    int b0, bs;            /* shard: batch rows [b0, b0+bs) of the last call  */
    float *grads_buf;      /* NULL for sphere 0 (uses the model's grads)       */
    Weights g;             /* pointers into this sphere's gradient buffer      */
    float *arena;          /* activations + backward scratch                  */
    float *encoded, *lnf, *lnf_mean, *lnf_rstd, *logits, *losses;
    LayerAct *act;         /* L entries                                        */
    float *dres, *dtmp, *dqkv, *datt, *dfch;
    float *gemm_ws, *att_ws;
    double loss_sum;       /* sum of this shard's token losses                 */
    double sumsq;          /* partial grad sum of squares (reduce phase)       */
    float *infer_scratch;  /* attention scratch for inference (P floats)       */
} Sphere;

struct cllm_model {
    cllm_config cfg;
    int V, P, L, NH, C, Bmax, Tmax;
    size_t nparams;
    int ntensors;
    cllm_tensor_info *tensors;
    float *params, *grads, *adam_m, *adam_v;
    Weights w, gw;
    cllm_spheres *pool;
    int nspheres;
    Sphere *sph;
    /* last forward */
    int32_t *inputs, *targets; /* copies, Bmax*Tmax */
    int last_B, last_T, have_fwd, fwd_targets, active;
    long valid_count;
    long loss_tokens;  /* cllm_model_set_loss_tokens: 0 = the block's own count */
    long loss_denom;   /* tokens the last forward's loss was normalised by     */
    /* inference */
    float *kcache, *vcache;    /* (L, P, C) each, allocated on first reset */
    float *ix, *ixb, *iqkv, *iatt, *ifc, *ifc2;
    int ipos;
    /* per-op profile of sphere 0 (cllm_model_profile_*) */
    int prof_on;
    double prof_sec[16];
    uint64_t prof_calls[16];
    /* sampling scratch */
    float *sprob;
    int32_t *sidx;
};

/* ----------------------------------------------------------------- rng */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_uniform(uint64_t *s) { return (double)(splitmix64(s) >> 11) * (1.0 / 9007199254740992.0); }
static float rng_normal(uint64_t *s) {
    double u1 = rng_uniform(s), u2 = rng_uniform(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* ------------------------------------------------------------- sizes */

static double count_params(const cllm_config *c) {
    double C = c->embed_dim;
    return (double)c->vocab_size * C + (double)c->context_len * C +
           (double)c->num_layers * (12.0 * C * C + 13.0 * C) + 2.0 * C;
}

static size_t act_floats(int Bs, int T, int C, int NH, int L, int V) {
    size_t N = (size_t)Bs * T;
    size_t per_layer = N * C * 9 + N * 3 * C + N * 4 * C * 2 + N * 4 + (size_t)Bs * NH * T * T;
    size_t a = N * C + (size_t)L * per_layer + N * C + 2 * N + N * (size_t)V + N;
    /* backward scratch: dres, dtmp, dqkv, datt, dfch */
    a += N * C * 2 + N * 3 * C + (size_t)Bs * NH * T * T + N * 4 * C;
    return a;
}

static int shard_rows(const cllm_config *c, int nspheres) {
    int s = nspheres < c->batch_size ? nspheres : c->batch_size;
    return (c->batch_size + s - 1) / s;
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
    int bs = shard_rows(c, n);
    int active = n < c->batch_size ? n : c->batch_size;
    double per_sphere = (double)act_floats(bs, c->seq_len, c->embed_dim, c->num_heads, c->num_layers, c->vocab_size) +
                        (double)cllm_gemm_ws_floats() + (double)cllm_attention_ws_floats(c->seq_len, c->embed_dim / c->num_heads) +
                        (double)c->context_len;
    return 4.0 * (4.0 * P + (double)(active - 1) * P + (double)n * per_sphere);
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
#undef REQ
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
static void add_tensor(cllm_model *m, const char *name, size_t *off, int d0, int d1, int decay) {
    cllm_tensor_info *t = &m->tensors[m->ntensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->offset = *off;
    t->ndim = d1 > 0 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1 > 0 ? d1 : 0;
    t->numel = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    t->decay = decay;
    *off += t->numel;
}

static void build_table(cllm_model *m) {
    int C = m->C;
    size_t off = 0;
    char nm[64];
    m->ntensors = 0;
    add_tensor(m, "transformer.wte.weight", &off, m->V, C, 0);
    add_tensor(m, "transformer.wpe.weight", &off, m->P, C, 0);
    for (int l = 0; l < m->L; l++) {
#define T(suffix, d0, d1, dec) snprintf(nm, sizeof nm, "transformer.h.%d.%s", l, suffix); add_tensor(m, nm, &off, d0, d1, dec)
        T("ln_1.weight", C, 0, 0); T("ln_1.bias", C, 0, 0);
        T("attn.c_attn.weight", C, 3 * C, 1); T("attn.c_attn.bias", 3 * C, 0, 0);
        T("attn.c_proj.weight", C, C, 1); T("attn.c_proj.bias", C, 0, 0);
        T("ln_2.weight", C, 0, 0); T("ln_2.bias", C, 0, 0);
        T("mlp.c_fc.weight", C, 4 * C, 1); T("mlp.c_fc.bias", 4 * C, 0, 0);
        T("mlp.c_proj.weight", 4 * C, C, 1); T("mlp.c_proj.bias", C, 0, 0);
#undef T
    }
    add_tensor(m, "transformer.ln_f.weight", &off, C, 0, 0);
    add_tensor(m, "transformer.ln_f.bias", &off, C, 0, 0);
    m->nparams = off;
}

static void point_weights(const cllm_model *m, float *base, Weights *w) {
    const cllm_tensor_info *t = m->tensors;
    w->wte = base + t[0].offset;
    w->wpe = base + t[1].offset;
    for (int l = 0; l < m->L; l++) {
        const cllm_tensor_info *lt = t + 2 + l * NTENS_PER_LAYER;
        float **p = (float **)&w->h[l];
        for (int k = 0; k < NTENS_PER_LAYER; k++) p[k] = base + lt[k].offset;
    }
    int last = 2 + m->L * NTENS_PER_LAYER;
    w->lnfw = base + t[last].offset;
    w->lnfb = base + t[last + 1].offset;
}

/* Carve a shard arena into activation pointers. */
static void carve(cllm_model *m, Sphere *s, int Bs) {
    int T = m->Tmax, C = m->C, NH = m->NH, V = m->V;
    size_t N = (size_t)Bs * T;
    float *p = s->arena;
#define TAKE(ptr, n) do { ptr = p; p += (n); } while (0)
    TAKE(s->encoded, N * C);
    for (int l = 0; l < m->L; l++) {
        LayerAct *a = &s->act[l];
        TAKE(a->ln1, N * C); TAKE(a->ln1_mean, N); TAKE(a->ln1_rstd, N);
        TAKE(a->qkv, N * 3 * C); TAKE(a->atty, N * C); TAKE(a->att, (size_t)Bs * NH * T * T);
        TAKE(a->attproj, N * C); TAKE(a->res2, N * C); TAKE(a->ln2, N * C);
        TAKE(a->ln2_mean, N); TAKE(a->ln2_rstd, N); TAKE(a->fch, N * 4 * C);
        TAKE(a->fch_gelu, N * 4 * C); TAKE(a->fcproj, N * C); TAKE(a->res3, N * C);
    }
    TAKE(s->lnf, N * C); TAKE(s->lnf_mean, N); TAKE(s->lnf_rstd, N);
    TAKE(s->logits, N * V); TAKE(s->losses, N);
    TAKE(s->dres, N * C); TAKE(s->dtmp, N * C); TAKE(s->dqkv, N * 3 * C);
    TAKE(s->datt, (size_t)Bs * NH * T * T); TAKE(s->dfch, N * 4 * C);
#undef TAKE
}

/* --------------------------------------------------------- lifecycle */
CLLM_EXPORT int cllm_model_free(cllm_model *m) {
    if (!m) return CLLM_OK;
    if (m->pool) cllm_spheres_free(m->pool);
    if (m->sph) {
        for (int i = 0; i < m->nspheres; i++) {
            Sphere *s = &m->sph[i];
            cllm_aligned_free(s->grads_buf);
            cllm_aligned_free(s->arena);
            cllm_aligned_free(s->gemm_ws);
            cllm_aligned_free(s->att_ws);
            cllm_aligned_free(s->infer_scratch);
            free(s->act);
            free(s->g.h);
        }
        free(m->sph);
    }
    cllm_aligned_free(m->params);
    cllm_aligned_free(m->grads);
    cllm_aligned_free(m->adam_m);
    cllm_aligned_free(m->adam_v);
    cllm_aligned_free(m->kcache);
    cllm_aligned_free(m->vcache);
    cllm_aligned_free(m->ix);
    cllm_aligned_free(m->sprob);
    free(m->sidx);
    free(m->inputs);
    free(m->targets);
    free(m->tensors);
    free(m->w.h);
    free(m->gw.h);
    free(m);
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
    m->tensors = calloc((size_t)(4 + NTENS_PER_LAYER * m->L), sizeof *m->tensors);
    m->w.h = calloc((size_t)m->L, sizeof(LayerW));
    m->gw.h = calloc((size_t)m->L, sizeof(LayerW));
    if (!m->tensors || !m->w.h || !m->gw.h) goto nomem;
    build_table(m);
    m->params = cllm_aligned_alloc(m->nparams * sizeof(float));
    m->grads = cllm_aligned_alloc(m->nparams * sizeof(float));
    m->adam_m = cllm_aligned_alloc(m->nparams * sizeof(float));
    m->adam_v = cllm_aligned_alloc(m->nparams * sizeof(float));
    if (!m->params || !m->grads || !m->adam_m || !m->adam_v) goto nomem;
    point_weights(m, m->params, &m->w);
    point_weights(m, m->grads, &m->gw);

    rc = cllm_spheres_new(cfg->threads, &m->pool);
    if (rc) { cllm_model_free(m); return rc; }
    cllm_spheres_count(m->pool, &m->nspheres);
    m->sph = calloc((size_t)m->nspheres, sizeof(Sphere));
    if (!m->sph) goto nomem;
    int active = m->nspheres < m->Bmax ? m->nspheres : m->Bmax;
    int bs = shard_rows(cfg, m->nspheres);
    size_t arena = act_floats(bs, m->Tmax, m->C, m->NH, m->L, m->V);
    for (int i = 0; i < m->nspheres; i++) {
        Sphere *s = &m->sph[i];
        s->infer_scratch = cllm_aligned_alloc(sizeof(float) * (size_t)m->P);
        if (!s->infer_scratch) goto nomem;
        if (i >= active) continue; /* never gets a shard: no arena */
        s->act = calloc((size_t)m->L, sizeof(LayerAct));
        s->g.h = calloc((size_t)m->L, sizeof(LayerW));
        s->arena = cllm_aligned_alloc(arena * sizeof(float));
        s->gemm_ws = cllm_aligned_alloc(cllm_gemm_ws_floats() * sizeof(float));
        s->att_ws = cllm_aligned_alloc(cllm_attention_ws_floats(m->Tmax, m->C / m->NH) * sizeof(float));
        if (!s->act || !s->g.h || !s->arena || !s->gemm_ws || !s->att_ws) goto nomem;
        if (i == 0) {
            point_weights(m, m->grads, &s->g);
        } else {
            s->grads_buf = cllm_aligned_alloc(m->nparams * sizeof(float));
            if (!s->grads_buf) goto nomem;
            point_weights(m, s->grads_buf, &s->g);
        }
        carve(m, s, bs);
    }
    m->inputs = calloc((size_t)m->Bmax * m->Tmax, sizeof(int32_t));
    m->targets = calloc((size_t)m->Bmax * m->Tmax, sizeof(int32_t));
    m->sprob = cllm_aligned_alloc(sizeof(float) * (size_t)m->V);
    m->sidx = calloc((size_t)m->V, sizeof(int32_t));
    if (!m->inputs || !m->targets || !m->sprob || !m->sidx) goto nomem;
    rc = cllm_model_init(m, cfg->seed);
    if (rc) { cllm_model_free(m); return rc; }
    *out = m;
    return CLLM_OK;
nomem:
    cllm_model_free(m);
    return cllm_fail(CLLM_ERR_NOMEM, "model: out of memory allocating buffers");
}

CLLM_EXPORT int cllm_model_get_config(const cllm_model *m, cllm_config *out) {
    CLLM_CHECK_PTR(m, "model"); CLLM_CHECK_PTR(out, "out");
    *out = m->cfg;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_model_init(cllm_model *m, uint64_t seed) {
    CLLM_CHECK_PTR(m, "model");
    uint64_t st = seed ^ 0x636c6c6d5f696e69ull; /* "cllm_ini" */
    float proj_std = 0.02f / sqrtf(2.0f * (float)m->L);
    for (int i = 0; i < m->ntensors; i++) {
        const cllm_tensor_info *t = &m->tensors[i];
        float *p = m->params + t->offset;
        const char *nm = t->name;
        size_t len = strlen(nm);
        int is_ln_w = strstr(nm, "ln_") && len > 7 && !strcmp(nm + len - 7, ".weight");
        if (t->ndim == 1) {
            float v = is_ln_w ? 1.0f : 0.0f;
            for (size_t k = 0; k < t->numel; k++) p[k] = v;
        } else {
            float std = (strstr(nm, "c_proj.weight") != NULL) ? proj_std : 0.02f;
            for (size_t k = 0; k < t->numel; k++) p[k] = std * rng_normal(&st);
        }
    }
    memset(m->grads, 0, m->nparams * sizeof(float));
    memset(m->adam_m, 0, m->nparams * sizeof(float));
    memset(m->adam_v, 0, m->nparams * sizeof(float));
    m->have_fwd = 0;
    m->ipos = 0;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_model_num_params(const cllm_model *m, size_t *n) {
    CLLM_CHECK_PTR(m, "model"); CLLM_CHECK_PTR(n, "n");
    *n = m->nparams;
    return CLLM_OK;
}
CLLM_EXPORT int cllm_model_num_tensors(const cllm_model *m, int *n) {
    CLLM_CHECK_PTR(m, "model"); CLLM_CHECK_PTR(n, "n");
    *n = m->ntensors;
    return CLLM_OK;
}
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

/* ------------------------------------------------------------- profile */
enum { P_GEMM_FWD, P_LMHEAD_FWD, P_GEMM_BWD, P_LMHEAD_BWD, P_ATTN_FWD, P_ATTN_BWD, P_LAYERNORM,
       P_GELU, P_XENT, P_EMBED, P_BIAS_GRAD, P_REDUCE, P_ADAMW, P_COUNT };
static const char *const prof_names[P_COUNT] = {
    "matmul fwd", "lm head fwd", "matmul bwd", "lm head bwd", "attention fwd", "attention bwd",
    "layernorm (+residual)", "gelu fwd+bwd (+fc bias grad)", "softmax+cross-entropy", "embedding fwd+bwd",
    "bias grads", "grad reduce + norm", "adamw"};

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Time `stmt` into bucket k when profiling is on; only sphere 0 records so
 * the figures are one shard's wall time and no lock is needed. */
#define PROF(k, stmt) do { \
        if (prof) { double t0_ = now_sec(); stmt; m->prof_sec[k] += now_sec() - t0_; m->prof_calls[k]++; } \
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
    int B, T;
    int with_targets, do_backward;
    float dscale;
    int skip_norm;      /* reduce phase: no sum of squares (backward only)  */
    const cllm_adamw *opt;
    float gscale, bc1, bc2;
} StepCtx;

#define GEMM(ta, tb, M_, N_, K_, A_, lda, B_, ldb, beta, C_, ldc, bias) \
    cllm_sgemm(isa, ta, tb, M_, N_, K_, 1.0f, A_, lda, B_, ldb, beta, C_, ldc, bias, s->gemm_ws)

static void shard_forward(StepCtx *x, Sphere *s) {
    cllm_model *m = x->m;
    const cllm_ops *ops = x->ops;
    int isa = x->isa;
    int T = x->T, C = m->C, NH = m->NH, V = m->V, L = m->L, Bs = s->bs;
    int N = Bs * T;
    const int32_t *ids = m->inputs + (size_t)s->b0 * T;
    Weights *w = &m->w;
    int prof = m->prof_on && s == &m->sph[0];

    PROF(P_EMBED, ops->embed_fwd(s->encoded, ids, w->wte, w->wpe, Bs, T, C));
    LayerAct *a0 = &s->act[0];
    PROF(P_LAYERNORM, ops->layernorm_fwd(a0->ln1, a0->ln1_mean, a0->ln1_rstd, s->encoded, w->h[0].ln1w, w->h[0].ln1b, N, C));
    for (int l = 0; l < L; l++) {
        LayerW *lw = &w->h[l];
        LayerAct *a = &s->act[l];
        const float *resid = l == 0 ? s->encoded : s->act[l - 1].res3;
        PROF(P_GEMM_FWD, GEMM(0, 0, N, 3 * C, C, a->ln1, C, lw->qkvw, 3 * C, 0.0f, a->qkv, 3 * C, lw->qkvb));
        PROF(P_ATTN_FWD, ops->attention_fwd(a->atty, a->att, a->qkv, Bs, T, C, NH, s->att_ws));
        PROF(P_GEMM_FWD, GEMM(0, 0, N, C, C, a->atty, C, lw->projw, C, 0.0f, a->attproj, C, lw->projb));
        PROF(P_LAYERNORM, ops->residual_layernorm_fwd(a->res2, a->ln2, a->ln2_mean, a->ln2_rstd, resid, a->attproj,
                                    lw->ln2w, lw->ln2b, N, C));
        PROF(P_GEMM_FWD, GEMM(0, 0, N, 4 * C, C, a->ln2, C, lw->fcw, 4 * C, 0.0f, a->fch, 4 * C, lw->fcb));
        PROF(P_GELU, ops->gelu_fwd(a->fch_gelu, a->fch, (size_t)N * 4 * C));
        PROF(P_GEMM_FWD, GEMM(0, 0, N, C, 4 * C, a->fch_gelu, 4 * C, lw->fcprojw, C, 0.0f, a->fcproj, C, lw->fcprojb));
        if (l + 1 < L) {
            LayerAct *an = &s->act[l + 1];
            PROF(P_LAYERNORM, ops->residual_layernorm_fwd(a->res3, an->ln1, an->ln1_mean, an->ln1_rstd, a->res2, a->fcproj,
                                        w->h[l + 1].ln1w, w->h[l + 1].ln1b, N, C));
        } else {
            PROF(P_LAYERNORM, ops->residual_layernorm_fwd(a->res3, s->lnf, s->lnf_mean, s->lnf_rstd, a->res2, a->fcproj,
                                        w->lnfw, w->lnfb, N, C));
        }
    }
    /* LM head, tied: logits(N,V) = lnf(N,C) @ wte(V,C)^T */
    PROF(P_LMHEAD_FWD, GEMM(0, 1, N, V, C, s->lnf, C, w->wte, C, 0.0f, s->logits, V, NULL));
    s->loss_sum = 0.0;
    if (x->with_targets) {
        const int32_t *tg = m->targets + (size_t)s->b0 * T;
        PROF(P_XENT, ops->crossentropy_fused(s->logits, s->losses, tg, N, V, x->dscale));
        double acc = 0.0;
        for (int i = 0; i < N; i++) acc += s->losses[i];
        s->loss_sum = acc;
    }
}

static void shard_backward(StepCtx *x, Sphere *s) {
    cllm_model *m = x->m;
    const cllm_ops *ops = x->ops;
    int isa = x->isa;
    int T = x->T, C = m->C, NH = m->NH, V = m->V, L = m->L, Bs = s->bs;
    int N = Bs * T;
    const int32_t *ids = m->inputs + (size_t)s->b0 * T;
    Weights *w = &m->w, *g = &s->g;
    int prof = m->prof_on && s == &m->sph[0];
    float *dlogits = s->logits; /* replaced in place by crossentropy_fused */

    /* LM head: dwte = dlogits^T @ lnf (overwrites), dlnf = dlogits @ wte */
    PROF(P_LMHEAD_BWD, GEMM(1, 0, V, C, N, dlogits, V, s->lnf, C, 0.0f, g->wte, C, NULL));
    PROF(P_LMHEAD_BWD, GEMM(0, 0, N, C, V, dlogits, V, w->wte, C, 0.0f, s->dtmp, C, NULL));
    memset(s->dres, 0, sizeof(float) * (size_t)N * C);
    LayerAct *al = &s->act[L - 1];
    PROF(P_LAYERNORM, ops->layernorm_bwd(s->dres, g->lnfw, g->lnfb, s->dtmp, al->res3, w->lnfw, s->lnf_mean, s->lnf_rstd, N, C));

    for (int l = L - 1; l >= 0; l--) {
        LayerW *lw = &w->h[l], *lg = &g->h[l];
        LayerAct *a = &s->act[l];
        const float *resid = l == 0 ? s->encoded : s->act[l - 1].res3;
        /* res3 = res2 + fcproj: dres flows to both */
        PROF(P_GEMM_BWD, GEMM(1, 0, 4 * C, C, N, a->fch_gelu, 4 * C, s->dres, C, 0.0f, lg->fcprojw, C, NULL));
        PROF(P_BIAS_GRAD, ops->bias_grad(lg->fcprojb, s->dres, N, C));
        PROF(P_GEMM_BWD, GEMM(0, 1, N, 4 * C, C, s->dres, C, lw->fcprojw, C, 0.0f, s->dfch, 4 * C, NULL));
        PROF(P_GELU, ops->gelu_bwd_bias(s->dfch, lg->fcb, a->fch, s->dfch, N, 4 * C));
        PROF(P_GEMM_BWD, GEMM(1, 0, C, 4 * C, N, a->ln2, C, s->dfch, 4 * C, 0.0f, lg->fcw, 4 * C, NULL));
        PROF(P_GEMM_BWD, GEMM(0, 1, N, C, 4 * C, s->dfch, 4 * C, lw->fcw, 4 * C, 0.0f, s->dtmp, C, NULL));
        PROF(P_LAYERNORM, ops->layernorm_bwd(s->dres, lg->ln2w, lg->ln2b, s->dtmp, a->res2, lw->ln2w, a->ln2_mean, a->ln2_rstd, N, C));
        /* res2 = resid + attproj */
        PROF(P_GEMM_BWD, GEMM(1, 0, C, C, N, a->atty, C, s->dres, C, 0.0f, lg->projw, C, NULL));
        PROF(P_BIAS_GRAD, ops->bias_grad(lg->projb, s->dres, N, C));
        PROF(P_GEMM_BWD, GEMM(0, 1, N, C, C, s->dres, C, lw->projw, C, 0.0f, s->dtmp, C, NULL));
        PROF(P_ATTN_BWD, ops->attention_bwd(s->dqkv, s->datt, s->dtmp, a->qkv, a->att, Bs, T, C, NH, s->att_ws));
        PROF(P_GEMM_BWD, GEMM(1, 0, C, 3 * C, N, a->ln1, C, s->dqkv, 3 * C, 0.0f, lg->qkvw, 3 * C, NULL));
        PROF(P_BIAS_GRAD, ops->bias_grad(lg->qkvb, s->dqkv, N, 3 * C));
        PROF(P_GEMM_BWD, GEMM(0, 1, N, C, 3 * C, s->dqkv, 3 * C, lw->qkvw, 3 * C, 0.0f, s->dtmp, C, NULL));
        PROF(P_LAYERNORM, ops->layernorm_bwd(s->dres, lg->ln1w, lg->ln1b, s->dtmp, resid, lw->ln1w, a->ln1_mean, a->ln1_rstd, N, C));
    }
    memset(g->wpe, 0, sizeof(float) * (size_t)m->P * C);
    PROF(P_EMBED, ops->embed_bwd(g->wte, g->wpe, s->dres, ids, Bs, T, C));
}

/* phase 1: forward (and backward) of this sphere's shard */
static int task_fwd_bwd(void *arg, int sphere, int n) {
    (void)n;
    StepCtx *x = arg;
    Sphere *s = &x->m->sph[sphere];
    if (s->bs <= 0) return CLLM_OK;
    shard_forward(x, s);
    if (x->do_backward) shard_backward(x, s);
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

/* phase 2: grads[slice] = sum over shards in fixed order; partial sumsq */
static int task_reduce(void *arg, int sphere, int n) {
    StepCtx *x = arg;
    cllm_model *m = x->m;
    size_t lo, hi;
    param_slice(m, sphere, n, &lo, &hi);
    for (int k = 1; k < m->active; k++)
        x->ops->add_into(m->grads + lo, m->sph[k].grads_buf + lo, hi - lo);
    m->sph[sphere].sumsq = hi > lo && !x->skip_norm ? x->ops->sumsq(m->grads + lo, hi - lo) : 0.0;
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
    for (int i = 0; i < m->ntensors && lo < hi; i++) {
        const cllm_tensor_info *t = &m->tensors[i];
        size_t a = t->offset, b = t->offset + t->numel;
        if (b <= lo || a >= hi) continue;
        if (a < lo) a = lo;
        if (b > hi) b = hi;
        x->ops->adamw(m->params + a, m->grads + a, m->adam_m + a, m->adam_v + a, b - a, o->lr, o->beta1,
                      o->beta2, o->eps, t->decay ? o->weight_decay : 0.0f, x->bc1, x->bc2, x->gscale);
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
    x->B = m->last_B;
    x->T = m->last_T;
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
    }
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

static int task_bwd(void *arg, int sphere, int n) {
    (void)n;
    StepCtx *x = arg;
    Sphere *s = &x->m->sph[sphere];
    if (s->bs <= 0) return CLLM_OK;
    shard_backward(x, s);
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
static int reduce_grads(cllm_model *m, StepCtx *x, float *norm) {
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
    int rc = cllm_spheres_run(m->pool, task_bwd, &x);
    if (rc) return rc;
    float norm;
    x.skip_norm = 1; /* nobody reads it: cllm_model_grad_norm / adamw compute their own */
    rc = reduce_grads(m, &x, &norm);
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
    rc = reduce_grads(m, &x, &norm);
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
    for (int i = 0; i < m->active; i++) {
        Sphere *s = &m->sph[i];
        size_t n = (size_t)s->bs * T * m->V;
        memcpy(out + (size_t)s->b0 * T * m->V, s->logits, n * sizeof(float));
    }
    m->have_fwd = 0;
    return CLLM_OK;
}

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

/* ------------------------------------------------------------- sampling */
static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *p = ctx;
    float x = p[*(const int32_t *)a], y = p[*(const int32_t *)b];
    if (x > y) return -1;
    if (x < y) return 1;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    return (i > j) - (i < j);
}

CLLM_EXPORT int cllm_model_sample(cllm_model *m, const float *logits, float temperature, int top_k, float top_p,
                                  uint64_t *rng_state, int32_t *out) {
    CLLM_CHECK_PTR(m, "model"); CLLM_CHECK_PTR(logits, "logits");
    CLLM_CHECK_PTR(rng_state, "rng_state"); CLLM_CHECK_PTR(out, "out");
    if (isnan(temperature) || isnan(top_p))
        return cllm_fail(CLLM_ERR_INVALID, "sample: temperature and top_p must not be NaN");
    if (top_p <= 0.0f) return cllm_fail(CLLM_ERR_INVALID, "sample: top_p must be > 0, got %g", top_p);
    int V = m->V;
    for (int i = 0; i < V; i++)
        if (isnan(logits[i])) return cllm_fail(CLLM_ERR_NUMERIC, "sample: logits contain NaN");
    int best = 0;
    for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    if (temperature <= 0.0f || top_k == 1) { *out = best; return CLLM_OK; }
    float *p = m->sprob;
    int32_t *idx = m->sidx;
    float mx = logits[best];
    double sum = 0.0;
    for (int i = 0; i < V; i++) { p[i] = expf((logits[i] - mx) / temperature); sum += p[i]; idx[i] = i; }
    int n = V;
    if ((top_k > 0 && top_k < V) || top_p < 1.0f) {
        qsort_r(idx, (size_t)V, sizeof(int32_t), cmp_desc, p);
        if (top_k > 0 && top_k < V) n = top_k;
        sum = 0.0;
        for (int i = 0; i < n; i++) sum += p[idx[i]];
        if (top_p < 1.0f) {
            double cum = 0.0;
            int keep = n;
            for (int i = 0; i < n; i++) {
                cum += p[idx[i]] / sum;
                if (cum >= top_p) { keep = i + 1; break; }
            }
            n = keep;
            sum = 0.0;
            for (int i = 0; i < n; i++) sum += p[idx[i]];
        }
    }
    double r = rng_uniform(rng_state) * sum, cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += p[idx[i]];
        if (r < cum) { *out = idx[i]; return CLLM_OK; }
    }
    *out = idx[n - 1];
    return CLLM_OK;
}
