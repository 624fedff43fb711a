/* decode.c - batch-1 decoding (generation) with FP32, BF16 or int8 weights.
 *
 * A cllm_decoder holds what generation needs and nothing else: the weights
 * in the chosen storage format, a KV cache (L, P, KVD) x 2, and small vectors.
 * KVD = NKV * hs: NKV K/V heads, each shared by NH / NKV query heads (NKV =
 * NH: GPT-2's multi-head attention; NKV = 1: multi-query, gpt_bigcode's
 * StarCoder models), so c_attn outputs C + 2 * KVD rows (q | k | v).
 * FP32 vectors and tables (and an FP32 wte) may be BORROWED, e.g. straight
 * from an mmap of model.safetensors; matrices are copied (BF16 and int8:
 * converted) once at load, or borrowed from a quantized file. The training
 * model's decoder (infer.c) is an FP32 one filled with copies of the
 * model's parameters, whose weights are released (cllm_decoder_release_weights)
 * when training changes them and copied again before the next use.
 *
 * Matrices are used as y = W x with W stored row-major by output row
 * (out, in), read one row at a time as a sequential stream (qmatvec.h), in
 * one "weight arena" mapping with transparent huge pages requested (with 4
 * KiB pages a token's 12-50 MB of weights cost a TLB miss every 4 KiB and
 * the hardware prefetchers restart at every page: measured 20 -> 40 GB/s
 * for a config-B fp32 sweep on Zen 4). A Hugging Face Conv1D (in, out)
 * matrix is always transposed into the arena (an nn.Linear one, gpt_bigcode's,
 * is (out, in) already and copied); only the tied LM head wte,
 * already (V, C) row-major, may be borrowed in place as FP32.
 *
 * The KV cache is per (layer, K/V head): keys TRANSPOSED (hs, P) and values
 * (P, hs), so the attention kernel reads both as sequential runs and
 * computes 4 x 16 scores at once without horizontal sums; it lives in the
 * arena too.
 *
 * One token step = ONE run of the sphere pool. Every sphere computes the
 * LayerNorms (C floats) itself into private buffers, then its share of each
 * matvec's output rows (units of 16 rows), meeting the others at an in-task
 * barrier between dependent ops (5 per layer): qkv | attention (by heads) |
 * attention projection + residual | MLP up + GELU | MLP down + residual.
 * The final LayerNorm and the LM head (rows = vocabulary) finish the run.
 * Each output element is computed by the same code whatever the split, so
 * results are bit-identical for any thread count. No allocation per token.
 *
 * Several tokens at once (feed, extend, prime, nll) go through the batched
 * prefill (prefill.c) in chunks of rows instead: GEMMs per layer, the LM
 * head only where logits are needed. The decoder remembers the ids in its
 * cache (decode_impl.h), so prime can keep the longest common prefix of the
 * cached ids and a new prompt and run only the rest.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/internal.h"
#include "model/decode.h"
#include "model/decode_impl.h"
#include "model/prefill.h"
#include "model/sample.h"
#ifdef __linux__
#include <sys/mman.h>
#endif

/* A slot of HF shape (d0, d1) (d1 = 0: a vector); layer matrices (in, out)
 * Conv1D, or (out, in) when kind is K_LIN. */
static void def(Slot *s, const char *name, int kind, int d0, int d1) {
    snprintf(s->name, sizeof s->name, "%s", name);
    s->kind = d1 ? kind : K_VEC;
    s->ndim = d1 ? 2 : 1;
    s->shape[0] = kind == K_LIN && d1 ? d1 : d0;
    s->shape[1] = kind == K_LIN && d1 ? d0 : d1;
    if (s->kind == K_CONV || s->kind == K_LIN) { s->rows = d1; s->cols = d0; }
    else if (s->kind == K_WTE) { s->rows = d0; s->cols = d1; }
}

/* The model's tensor table (model/layout.h; c_attn's output is QKV = C + 2
 * KVD wide), with the layer matrices Conv1D or Linear. */
static void build_slots(cllm_decoder *d, int linear) {
    int V = d->V, P = d->P, C = d->C, QKV = d->QKV, i = 0, lk = linear ? K_LIN : K_CONV;
    (void)P;
    char name[64];
    /* wte is the (tied) LM head; wpe and every vector stay FP32 */
#define X_TOP(f, nm, d0, d1, ...) def(&d->slot[i++], nm, strcmp(#f, "wte") ? K_VEC : K_WTE, d0, d1);
#define X_LAYER(f, nm, d0, d1, ...) \
    snprintf(name, sizeof name, "transformer.h.%d.%s", l, nm); def(&d->slot[i++], name, lk, d0, d1);
    CLLM_PARAMS_WALK(d->L, X_TOP, X_LAYER)
#undef X_TOP
#undef X_LAYER
}

static size_t slot_numel(const Slot *s) { return (size_t)s->shape[0] * (size_t)(s->ndim == 2 ? s->shape[1] : 1); }
static int elem_size(int dt) { return dt == CLLM_DTYPE_F32 ? 4 : dt == CLLM_DTYPE_INT8 ? 1 : 2; }

/* ------------------------------------------------------- weight arena */
/* Every matrix slot has a fixed, 64-byte aligned place in the arena. */
static void arena_plan(cllm_decoder *d) {
    size_t off = 0;
    for (int i = 0; i < d->nslots; i++) {
        Slot *s = &d->slot[i];
        if (s->kind == K_VEC) continue;
        s->aoff = off;
        off += (slot_numel(s) * (size_t)elem_size(d->dtype) + 63) & ~(size_t)63;
    }
    d->arena_bytes = off + 2 * (size_t)d->L * d->P * d->KVD * sizeof(float);   /* + the KV cache */
}

/* The arena, mapped at creation (and again at the first tensor after
 * cllm_decoder_release_weights): 2 MiB aligned, huge pages requested (best
 * effort: without them it is ordinary memory); only the pages written are
 * ever backed. The KV cache is its tail. NULL when out of memory. */
static unsigned char *arena_new(cllm_decoder *d) {
    size_t kv = (size_t)d->L * d->P * d->KVD;
    d->arena = NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    size_t huge = (size_t)2 << 20, span = (d->arena_bytes + huge - 1) & ~(huge - 1), map = span + huge;
    void *p = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
        uintptr_t a = ((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1);
        (void)madvise((void *)a, span, MADV_HUGEPAGE);
        d->arena_map = p;
        d->arena_map_bytes = map;
        d->arena = (unsigned char *)a;
    }
#endif
    if (!d->arena) d->arena = cllm_aligned_alloc(d->arena_bytes);
    if (d->arena) {
        d->kc = (float *)(d->arena + d->arena_bytes) - 2 * kv;
        d->vc = d->kc + kv;
    }
    return d->arena;
}

static void arena_free(cllm_decoder *d) {
#ifdef __linux__
    if (d->arena_map) munmap(d->arena_map, d->arena_map_bytes);
    else
#endif
        cllm_aligned_free(d->arena);
    d->arena = NULL;
    d->arena_map = NULL;
    d->kc = d->vc = NULL;
}

static void slot_clear(Slot *s) {
    cllm_aligned_free(s->owned);
    cllm_aligned_free(s->owned_scale);
    cllm_aligned_free(s->rowsum);
    s->owned = s->owned_scale = NULL;
    s->rowsum = NULL;
    s->data = NULL;
    s->scale = NULL;
    s->set = 0;
}

int cllm_decoder_release_weights(cllm_decoder *d) {
    if (!d) return CLLM_OK;
    for (int i = 0; i < d->nslots; i++) slot_clear(&d->slot[i]);
    arena_free(d);
    cllm_prefill_free(d);
    d->ready = 0;
    d->pos = 0;
    return CLLM_OK;
}

int cllm_decoder_has_weights(const cllm_decoder *d) {
    for (int i = 0; i < d->nslots; i++)
        if (!d->slot[i].set) return 0;
    return 1;
}

/* ------------------------------------------------------------ lifecycle */
CLLM_EXPORT int cllm_decoder_free(cllm_decoder *d) {
    if (!d) return CLLM_OK;
    if (d->pool && d->own_pool) cllm_spheres_free(d->pool);
    if (d->slot) for (int i = 0; i < d->nslots; i++) slot_clear(&d->slot[i]);
    free(d->slot);
    arena_free(d);
    cllm_prefill_free(d);
    if (d->sph) {
        for (int i = 0; i < d->ns; i++) {
            cllm_aligned_free(d->sph[i].xb);
            cllm_aligned_free(d->sph[i].xq);
            cllm_aligned_free(d->sph[i].xbf);
        }
        free(d->sph);
    }
    cllm_aligned_free(d->x);
    cllm_aligned_free(d->prob);
    cllm_aligned_free(d->idx);
    cllm_aligned_free(d->tok);
    free(d);
    return CLLM_OK;
}

CLLM_EXPORT int cllm_decoder_new(const cllm_config *cfg, int dtype, cllm_decoder **out) {
    return cllm_decoder_new_on_pool(cfg, dtype, NULL, out);
}

int cllm_decoder_new_on_pool(const cllm_config *cfg, int dtype, cllm_spheres *pool, cllm_decoder **out) {
    CLLM_CHECK_PTR(cfg, "cfg");
    CLLM_CHECK_PTR(out, "out");
    *out = NULL;
    if (dtype != CLLM_DTYPE_F32 && dtype != CLLM_DTYPE_BF16 && dtype != CLLM_DTYPE_INT8)
        return cllm_fail(CLLM_ERR_INVALID, "decoder: dtype must be CLLM_DTYPE_F32, _BF16 or _INT8, got %d", dtype);
    int V = cfg->vocab_size, P = cfg->context_len, L = cfg->num_layers, NH = cfg->num_heads, C = cfg->embed_dim;
    if (V < 1 || P < 1 || L < 1 || NH < 1 || C < 1 || C % NH)
        return cllm_fail(CLLM_ERR_INVALID, "decoder: bad shape (vocab %d, context %d, layers %d, heads %d, embed %d; "
                         "all must be >= 1 and embed divisible by heads)", V, P, L, NH, C);
    int NKV = layout_kv_heads(cfg);
    if (cfg->n_kv_heads < 0 || !NKV)
        return cllm_fail(CLLM_ERR_INVALID, "decoder: n_kv_heads %d must divide num_heads %d (1 = multi-query)",
                         cfg->n_kv_heads, NH);
    if (cfg->linear_weights != 0 && cfg->linear_weights != 1)
        return cllm_fail(CLLM_ERR_INVALID, "decoder: linear_weights must be 0 or 1, got %d", cfg->linear_weights);
    if ((double)V * C > 2e9 || (double)P * C > 2e9 || 4.0 * C * C > 2e9 || L > 100000)
        return cllm_fail(CLLM_ERR_INVALID, "decoder: shape too large (vocab %d, context %d, embed %d)", V, P, C);
    int KVD = layout_kvd(cfg);
    double kv_bytes = 2.0 * L * P * KVD * 4.0;
    double limit = (cfg->max_memory_gb > 0 ? cfg->max_memory_gb : 16.0) * 1073741824.0;
    if (kv_bytes > limit)
        return cllm_fail(CLLM_ERR_NOMEM, "decoder: the KV cache needs %.2f GiB, over the %.2f GiB limit",
                         kv_bytes / 1073741824.0, limit / 1073741824.0);
    if (cfg->threads < 0) return cllm_fail(CLLM_ERR_INVALID, "decoder: threads must be >= 0, got %d", cfg->threads);
    cllm_decoder *d = calloc(1, sizeof *d);
    if (!d) return cllm_fail(CLLM_ERR_NOMEM, "decoder: out of memory");
    d->V = V; d->P = P; d->L = L; d->NH = NH; d->C = C; d->dtype = dtype; d->nsample = V;
    d->NKV = NKV; d->KVD = KVD; d->QKV = layout_qkv(cfg);
    d->chunk = P < CLLM_PREFILL_CHUNK ? P : CLLM_PREFILL_CHUNK;
    d->nslots = 4 + NLT * L;
    d->slot = calloc((size_t)d->nslots, sizeof(Slot));
    if (!d->slot) goto nomem;
    build_slots(d, cfg->linear_weights);
    arena_plan(d);
    if (pool) d->pool = pool;
    else {
        int rc = cllm_spheres_new(cfg->threads, &d->pool);
        if (rc) { cllm_decoder_free(d); return rc; }
        d->own_pool = 1;
    }
    cllm_spheres_count(d->pool, &d->ns);
    d->sph = calloc((size_t)d->ns, sizeof(DSphere));
    if (!d->sph) goto nomem;
    for (int i = 0; i < d->ns; i++) {
        DSphere *s = &d->sph[i];
        s->xb = cllm_aligned_alloc(sizeof(float) * ((size_t)2 * C + P + 16));
        s->xq = cllm_aligned_alloc((size_t)4 * C);
        s->xbf = cllm_aligned_alloc(sizeof(uint16_t) * 4 * (size_t)C);
        if (!s->xb || !s->xq || !s->xbf) goto nomem;
        s->tmp = s->xb + C;
        s->scratch = s->xb + 2 * C;
    }
    if (!arena_new(d)) goto nomem;
    d->x = cllm_aligned_alloc(sizeof(float) * ((size_t)9 * C + V));
    d->prob = cllm_aligned_alloc(sizeof(float) * (size_t)V);
    d->idx = cllm_aligned_alloc(sizeof(int32_t) * (size_t)V);
    d->tok = cllm_aligned_alloc(sizeof(int32_t) * (size_t)P);
    if (!d->x || !d->prob || !d->idx || !d->tok) goto nomem;
    d->qkv = d->x + C;
    d->att = d->qkv + 3 * C;
    d->fc = d->att + C;
    d->logits = d->fc + 4 * C;
    *out = d;
    return CLLM_OK;
nomem:
    cllm_decoder_free(d);
    return cllm_fail(CLLM_ERR_NOMEM, "decoder: out of memory");
}

CLLM_GETTER(cllm_decoder_num_tensors, cllm_decoder, "decoder", int, h->nslots)
CLLM_GETTER(cllm_decoder_kv_bytes, cllm_decoder, "decoder", size_t, 2 * (size_t)h->L * h->P * h->KVD * sizeof(float))

static int check_slot(const cllm_decoder *d, int i) {
    if (i < 0 || i >= d->nslots)
        return cllm_fail(CLLM_ERR_RANGE, "decoder: tensor index %d out of range [0, %d)", i, d->nslots);
    return CLLM_OK;
}

CLLM_EXPORT int cllm_decoder_tensor_info(const cllm_decoder *d, int i, cllm_tensor_info *out, int *rows, int *cols) {
    CLLM_CHECK_PTR(d, "decoder"); CLLM_CHECK_PTR(out, "out");
    int rc = check_slot(d, i);
    if (rc) return rc;
    const Slot *s = &d->slot[i];
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", s->name);
    out->numel = slot_numel(s);
    out->ndim = s->ndim;
    out->shape[0] = s->shape[0];
    out->shape[1] = s->shape[1];
    if (rows) *rows = s->kind == K_VEC ? 0 : s->rows;
    if (cols) *cols = s->kind == K_VEC ? 0 : s->cols;
    return CLLM_OK;
}

/* ------------------------------------------------------------- loading */
static inline float load_elem(const void *src, int dt, size_t k) {
    if (dt == CLLM_DTYPE_F32) return ((const float *)src)[k];
    uint16_t h = ((const uint16_t *)src)[k];
    return dt == CLLM_DTYPE_BF16 ? cllm_bf16_to_f32(h) : cllm_f16_to_f32(h);
}

/* dst(rows, cols) FP32 from src element (r, i) at k = r*rs + i*cs, in tiles */
static void gather_f32(float *dst, const void *src, int dt, int rows, int cols, size_t rs, size_t cs) {
    enum { TB = 64 };
    if (dt == CLLM_DTYPE_F32 && rs == 1 && cs == (size_t)rows) {   /* a Conv1D (in, out) weight */
        cllm_transpose_f32(cllm_isa_current(), dst, src, rows, cols);
        return;
    }
    if (dt == CLLM_DTYPE_F32 && cs == 1 && rs == (size_t)cols) {
        memcpy(dst, src, sizeof(float) * (size_t)rows * cols);
        return;
    }
    for (int r0 = 0; r0 < rows; r0 += TB)
        for (int i0 = 0; i0 < cols; i0 += TB) {
            int r1 = r0 + TB < rows ? r0 + TB : rows, i1 = i0 + TB < cols ? i0 + TB : cols;
            if (rs == 1) {
                for (int i = i0; i < i1; i++)
                    for (int r = r0; r < r1; r++) dst[(size_t)r * cols + i] = load_elem(src, dt, (size_t)r + i * cs);
            } else {
                for (int r = r0; r < r1; r++)
                    for (int i = i0; i < i1; i++) dst[(size_t)r * cols + i] = load_elem(src, dt, r * rs + i * cs);
            }
        }
}

CLLM_EXPORT int cllm_decoder_set_tensor(cllm_decoder *d, int i, const void *src, int src_dtype, int borrow) {
    CLLM_CHECK_PTR(d, "decoder"); CLLM_CHECK_PTR(src, "src");
    int rc = check_slot(d, i);
    if (rc) return rc;
    if (src_dtype != CLLM_DTYPE_F32 && src_dtype != CLLM_DTYPE_F16 && src_dtype != CLLM_DTYPE_BF16)
        return cllm_fail(CLLM_ERR_INVALID, "decoder: source dtype of %s must be F32, F16 or BF16", d->slot[i].name);
    Slot *s = &d->slot[i];
    slot_clear(s);
    d->ready = 0;
    d->pos = 0;   /* the cached keys and values came from the old weights */
    if (!d->arena && !arena_new(d)) return cllm_fail(CLLM_ERR_NOMEM, "decoder: out of memory for the weight arena");
    size_t n = slot_numel(s);
    if (s->kind == K_VEC) {   /* vectors and tables (wpe) stay FP32 */
        if (src_dtype == CLLM_DTYPE_F32 && borrow) { s->data = src; s->set = 1; return CLLM_OK; }
        float *f = cllm_aligned_alloc(n * sizeof(float));
        if (!f) return cllm_fail(CLLM_ERR_NOMEM, "decoder: out of memory for %s", s->name);
        if (src_dtype == CLLM_DTYPE_F32) memcpy(f, src, n * sizeof(float));
        else for (size_t k = 0; k < n; k++) f[k] = load_elem(src, src_dtype, k);
        s->owned = f;
        s->data = f;
        s->set = 1;
        return CLLM_OK;
    }
    if (d->dtype == CLLM_DTYPE_F32 && src_dtype == CLLM_DTYPE_F32 && borrow && s->kind == K_WTE) {
        s->data = src;   /* in place: already (V, C) by output row */
        s->set = 1;
        return CLLM_OK;
    }
    void *dst = d->arena + s->aoff;
    /* matrices to (out, in) storage: element (r, i) of a Conv1D (in, out)
     * tensor is at i*rows + r; of wte (V, C) or a Linear (out, in) one at r*cols + i */
    size_t rs = s->kind == K_CONV ? 1 : (size_t)s->cols, cs = s->kind == K_CONV ? (size_t)s->rows : 1;
    if (d->dtype == CLLM_DTYPE_F32) {
        gather_f32(dst, src, src_dtype, s->rows, s->cols, rs, cs);
        s->data = dst;
        s->set = 1;
        return CLLM_OK;
    }
    float *tmp = NULL;
    const float *f32 = src;   /* FP32 (out, in): the source itself only for an FP32 wte */
    if (src_dtype != CLLM_DTYPE_F32 || s->kind == K_CONV) {
        tmp = malloc(n * sizeof(float));
        if (!tmp) return cllm_fail(CLLM_ERR_NOMEM, "decoder: out of memory converting %s", s->name);
        gather_f32(tmp, src, src_dtype, s->rows, s->cols, rs, cs);
        f32 = tmp;
    }
    if (d->dtype == CLLM_DTYPE_BF16) {
        cllm_f32_to_bf16_n(cllm_isa_current(), dst, f32, n);
    } else {
        int finite = 1;        /* quantizing NaN / Inf would be undefined */
        for (size_t k = 0; k < n; k++) finite &= isfinite(f32[k]) != 0;
        if (!finite) {
            free(tmp);
            return cllm_fail(CLLM_ERR_NUMERIC, "decoder: %s holds NaN or Inf; cannot quantize it", s->name);
        }
        float *sc = cllm_aligned_alloc(sizeof(float) * (size_t)s->rows);
        s->rowsum = cllm_aligned_alloc(sizeof(int32_t) * (size_t)s->rows);
        s->owned_scale = sc;
        if (!sc || !s->rowsum) { free(tmp); slot_clear(s); return cllm_fail(CLLM_ERR_NOMEM, "decoder: out of memory for %s", s->name); }
        cllm_quantize_rows(dst, sc, s->rowsum, f32, s->rows, s->cols, (size_t)s->cols, 1);
        s->scale = sc;
    }
    s->data = dst;
    free(tmp);
    s->set = 1;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_decoder_set_quantized(cllm_decoder *d, int i, const void *w, const float *scale, int borrow) {
    CLLM_CHECK_PTR(d, "decoder"); CLLM_CHECK_PTR(w, "w");
    int rc = check_slot(d, i);
    if (rc) return rc;
    Slot *s = &d->slot[i];
    if (s->kind == K_VEC || d->dtype == CLLM_DTYPE_F32)
        return cllm_fail(CLLM_ERR_INVALID, "decoder: %s is not a quantized matrix of this %s decoder", s->name,
                         d->dtype == CLLM_DTYPE_F32 ? "fp32" : "quantized");
    if (d->dtype == CLLM_DTYPE_INT8 && !scale)
        return cllm_fail(CLLM_ERR_INVALID, "decoder: int8 tensor %s needs its scales", s->name);
    slot_clear(s);
    d->ready = 0;
    d->pos = 0;
    if (!d->arena && !arena_new(d)) return cllm_fail(CLLM_ERR_NOMEM, "decoder: out of memory for the weight arena");
    size_t n = slot_numel(s), bytes = n * (size_t)elem_size(d->dtype);
    if (borrow) {
        s->data = w;
        s->scale = scale;
    } else {
        memcpy(d->arena + s->aoff, w, bytes);
        s->data = d->arena + s->aoff;
        if (scale) {
            s->owned_scale = cllm_aligned_alloc(sizeof(float) * (size_t)s->rows);
            if (!s->owned_scale) { slot_clear(s); return cllm_fail(CLLM_ERR_NOMEM, "decoder: out of memory"); }
            memcpy(s->owned_scale, scale, sizeof(float) * (size_t)s->rows);
            s->scale = s->owned_scale;
        }
    }
    if (d->dtype == CLLM_DTYPE_INT8) {
        const int8_t *q = s->data;
        for (size_t k = 0; k < n; k++)
            if (q[k] == -128) { slot_clear(s); return cllm_fail(CLLM_ERR_INVALID, "decoder: %s holds -128 (int8 weights must be in [-127, 127])", s->name); }
        for (int r = 0; r < s->rows; r++)
            if (!isfinite(s->scale[r])) { slot_clear(s); return cllm_fail(CLLM_ERR_NUMERIC, "decoder: %s has a non-finite scale", s->name); }
        s->rowsum = cllm_aligned_alloc(sizeof(int32_t) * (size_t)s->rows);
        if (!s->rowsum) { slot_clear(s); return cllm_fail(CLLM_ERR_NOMEM, "decoder: out of memory"); }
        cllm_q8_rowsums(s->rowsum, q, s->rows, s->cols);
    }
    s->set = 1;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_decoder_get_tensor(const cllm_decoder *d, int i, const void **w, const float **scale) {
    CLLM_CHECK_PTR(d, "decoder"); CLLM_CHECK_PTR(w, "w");
    int rc = check_slot(d, i);
    if (rc) return rc;
    const Slot *s = &d->slot[i];
    if (!s->set) return cllm_fail(CLLM_ERR_STATE, "decoder: tensor %s was not set", s->name);
    *w = s->data;
    if (scale) *scale = s->scale;
    return CLLM_OK;
}

/* ----------------------------------------------------------- the step */
static int task_step(void *arg, int sp, int ns) {
    cllm_decoder *d = arg;
    DSphere *s = &d->sph[sp];
    const cllm_ops *ops = d->ops;
    int C = d->C, P = d->P, pos = d->pos, hs = C / d->NH, KVD = d->KVD, lo, hi;
    float mean, rstd, *x = d->x;
    for (int l = 0; l < d->L; l++) {
        float *kc = d->kc + (size_t)l * P * KVD, *vc = d->vc + (size_t)l * P * KVD;
        /* qkv = c_attn(ln_1(x)); this sphere's k, v rows go to the cache */
        ops->layernorm_fwd(s->xb, &mean, &rstd, x, F(l, SL_ln1w), F(l, SL_ln1b), 1, C);
        prep(d, s, s->xb, C);
        rows_of(d->QKV, ROW_UNIT, sp, ns, &lo, &hi);
        mat_rows(d, s, W(l, SL_qkvw), s->xb, F(l, SL_qkvb), d->qkv, lo, hi);
        for (int r = lo > C ? lo : C; r < hi; r++) {   /* column r - C of k | v: K/V head g, element e */
            int c = r < C + KVD ? r - C : r - C - KVD, g = c / hs, e = c - g * hs;
            if (r < C + KVD) kc[((size_t)g * hs + e) * P + pos] = d->qkv[r];
            else vc[((size_t)g * P + pos) * hs + e] = d->qkv[r];
        }
        cllm_spheres_barrier(d->pool);
        /* attention, split by query heads */
        long h0, h1;
        cllm_split(d->NH, sp, ns, &h0, &h1);
        for (long h = h0; h < h1; h++) {
            size_t o = (size_t)h * hs, kv = (size_t)kv_head(d, (int)h) * hs * P;
            ops->attention_step(d->att + o, d->qkv + o, kc + kv, vc + kv, pos + 1, P, hs, s->scratch);
        }
        cllm_spheres_barrier(d->pool);
        /* x += c_proj(att) */
        prep(d, s, d->att, C);
        rows_of(C, ROW_UNIT, sp, ns, &lo, &hi);
        mat_rows(d, s, W(l, SL_projw), d->att, F(l, SL_projb), s->tmp, lo, hi);
        for (int r = lo; r < hi; r++) x[r] += s->tmp[r];
        cllm_spheres_barrier(d->pool);
        /* fc = gelu(c_fc(ln_2(x))) */
        ops->layernorm_fwd(s->xb, &mean, &rstd, x, F(l, SL_ln2w), F(l, SL_ln2b), 1, C);
        prep(d, s, s->xb, C);
        rows_of(4 * C, ROW_UNIT, sp, ns, &lo, &hi);
        mat_rows(d, s, W(l, SL_fcw), s->xb, F(l, SL_fcb), d->fc, lo, hi);
        if (hi > lo) ops->gelu_fwd(d->fc + lo, d->fc + lo, (size_t)(hi - lo));
        cllm_spheres_barrier(d->pool);
        /* x += c_proj(fc) */
        prep(d, s, d->fc, 4 * C);
        rows_of(C, ROW_UNIT, sp, ns, &lo, &hi);
        mat_rows(d, s, W(l, SL_fcprojw), d->fc, F(l, SL_fcprojb), s->tmp, lo, hi);
        for (int r = lo; r < hi; r++) x[r] += s->tmp[r];
        cllm_spheres_barrier(d->pool);
    }
    lm_head_row(d, s, sp, ns, x);   /* logits = wte @ ln_f(x) */
    return CLLM_OK;
}

static int make_ready(cllm_decoder *d) {
    if (d->ready) return CLLM_OK;
    if (!d->arena)
        return cllm_fail(CLLM_ERR_STATE, "decoder: its weights were released (the training model's parameters "
                         "changed); get it again with cllm_model_decoder");
    for (int i = 0; i < d->nslots; i++)
        if (!d->slot[i].set) return cllm_fail(CLLM_ERR_STATE, "decoder: tensor %s was not set", d->slot[i].name);
    d->ready = 1;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_decoder_reset(cllm_decoder *d) {
    CLLM_CHECK_PTR(d, "decoder");
    d->pos = 0;
    return make_ready(d);
}

CLLM_EXPORT int cllm_decoder_pos(const cllm_decoder *d, int *pos) {
    CLLM_CHECK_PTR(d, "decoder"); CLLM_CHECK_PTR(pos, "pos");
    *pos = d->pos;
    return CLLM_OK;
}

static int step(cllm_decoder *d, int32_t token) {
    if (token < 0 || token >= d->V)
        return cllm_fail(CLLM_ERR_RANGE, "token id %d out of range [0, %d)", token, d->V);
    if (d->pos >= d->P)
        return cllm_fail(CLLM_ERR_RANGE, "KV cache full: context_len %d reached (reset and re-feed a suffix)", d->P);
    int rc = make_ready(d);
    if (rc) return rc;
    d->isa = cllm_isa_current();
    d->ops = cllm_ops_for_isa(d->isa);
    d->qops = cllm_qops_for_isa(d->isa);
    embed_row(d, token, d->pos, d->x);
    rc = d->ns > 1 ? cllm_spheres_run(d->pool, task_step, d) : task_step(d, 0, 1);
    if (rc) return rc;
    d->tok[d->pos++] = token;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_decoder_step(cllm_decoder *d, int32_t token, float *logits) {
    CLLM_CHECK_PTR(d, "decoder");
    int rc = step(d, token);
    if (rc) return rc;
    if (logits) memcpy(logits, d->logits, sizeof(float) * (size_t)d->V);
    return CLLM_OK;
}

static int check_ids(const cllm_decoder *d, const int32_t *ids, int n) {
    for (int t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= d->V)
            return cllm_fail(CLLM_ERR_RANGE, "token id %d out of range [0, %d)", ids[t], d->V);
    return CLLM_OK;
}

/* Append ids (checked, n >= 1, room in the cache): one step for a single
 * token or with prefill off, else the batched prefill. */
static int append(cllm_decoder *d, const int32_t *ids, int n) {
    int rc = make_ready(d);
    if (rc) return rc;
    if (n == 1 || d->chunk == 0) {
        for (int t = 0; t < n && !rc; t++) rc = step(d, ids[t]);
        return rc;
    }
    return cllm_prefill_run(d, ids, n, NULL, NULL);
}

CLLM_EXPORT int cllm_decoder_feed(cllm_decoder *d, const int32_t *ids, int n) {
    CLLM_CHECK_PTR(d, "decoder"); CLLM_CHECK_PTR(ids, "ids");
    if (n < 1 || n > d->P)
        return cllm_fail(CLLM_ERR_RANGE, "decoder: feed needs 1..%d ids (context length), got %d", d->P, n);
    int rc = check_ids(d, ids, n);
    if (rc) return rc;
    d->pos = 0;
    return append(d, ids, n);
}

CLLM_EXPORT int cllm_decoder_extend(cllm_decoder *d, const int32_t *ids, int n, float *logits) {
    CLLM_CHECK_PTR(d, "decoder"); CLLM_CHECK_PTR(ids, "ids");
    if (n < 1 || n > d->P - d->pos)
        return cllm_fail(CLLM_ERR_RANGE, "decoder: extend needs 1..%d ids (room left in the context of %d), got %d",
                         d->P - d->pos, d->P, n);
    int rc = check_ids(d, ids, n);
    if (!rc) rc = append(d, ids, n);
    if (rc) return rc;
    if (logits) memcpy(logits, d->logits, sizeof(float) * (size_t)d->V);
    return CLLM_OK;
}

CLLM_EXPORT int cllm_decoder_prime(cllm_decoder *d, const int32_t *ids, int n, int *reused) {
    CLLM_CHECK_PTR(d, "decoder"); CLLM_CHECK_PTR(ids, "ids");
    if (n < 1 || n > d->P)
        return cllm_fail(CLLM_ERR_RANGE, "decoder: prime needs 1..%d ids (context length), got %d", d->P, n);
    int rc = check_ids(d, ids, n);
    if (rc) return rc;
    int k = 0;
    if (d->isa == cllm_isa_current())   /* a cache made on another ISA path is not reused */
        while (k < d->pos && k < n && d->tok[k] == ids[k]) k++;
    if (k == n && d->pos > n) k = n - 1;   /* the cache runs past the prompt: recompute its last logits */
    if (reused) *reused = k;
    if (k == n) return make_ready(d);       /* the cache holds exactly ids: their logits are current */
    d->pos = k;
    return append(d, ids + k, n - k);
}

CLLM_EXPORT int cllm_decoder_set_prefill_chunk(cllm_decoder *d, int rows) {
    CLLM_CHECK_PTR(d, "decoder");
    if (rows < 0) return cllm_fail(CLLM_ERR_RANGE, "decoder: prefill chunk must be >= 0 rows, got %d", rows);
    if (rows > d->P) rows = d->P;
    if (rows != d->chunk) {
        cllm_prefill_free(d);
        d->chunk = rows;
    }
    return CLLM_OK;
}

CLLM_GETTER(cllm_decoder_prefill_chunk, cllm_decoder, "decoder", int, h->chunk)

CLLM_EXPORT int cllm_decoder_logits(const cllm_decoder *d, float *out) {
    CLLM_CHECK_PTR(d, "decoder"); CLLM_CHECK_PTR(out, "out");
    if (d->pos == 0) return cllm_fail(CLLM_ERR_STATE, "decoder: no logits yet (feed a token first)");
    memcpy(out, d->logits, sizeof(float) * (size_t)d->V);
    return CLLM_OK;
}

static int banned(const cllm_decoder *d, int32_t id) {
    for (int i = 0; i < d->nban; i++)
        if (d->ban[i] == id) return 1;
    return 0;
}

CLLM_EXPORT int cllm_decoder_next(cllm_decoder *d, float temperature, int top_k, float top_p,
                                  const int32_t *allowed, int n_allowed, int32_t stop_id, int advance,
                                  uint64_t *rng, int32_t *out) {
    CLLM_CHECK_PTR(d, "decoder"); CLLM_CHECK_PTR(rng, "rng"); CLLM_CHECK_PTR(out, "out");
    if (d->pos == 0) return cllm_fail(CLLM_ERR_STATE, "decoder: no logits yet (feed the prompt first)");
    if (allowed && (n_allowed < 1 || n_allowed > d->V))
        return cllm_fail(CLLM_ERR_RANGE, "decoder: n_allowed must be in [1, %d], got %d", d->V, n_allowed);
    /* the banned ids' logits go to -inf for this draw only (unless every candidate is banned) */
    float saved[CLLM_DECODER_MAX_BAN];
    int nb = 0;
    if (d->nban) {
        int live = 0;
        if (allowed) {
            for (int i = 0; i < n_allowed && !live; i++) live = !banned(d, allowed[i]);
        } else {
            live = d->nsample > d->nban;
        }
        if (live)
            for (; nb < d->nban; nb++) {
                saved[nb] = d->logits[d->ban[nb]];
                d->logits[d->ban[nb]] = -INFINITY;
            }
    }
    int rc = cllm_sample_logits(d->logits, allowed ? d->V : d->nsample, temperature, top_k, top_p, allowed, n_allowed, rng, d->prob,
                                d->idx, out);
    for (int i = 0; i < nb; i++) d->logits[d->ban[i]] = saved[i];
    if (rc) return rc;
    if (advance && *out != stop_id && d->pos < d->P) return step(d, *out);
    return CLLM_OK;
}

CLLM_EXPORT int cllm_decoder_nll(cllm_decoder *d, const int32_t *ids, int n, double *nll_sum) {
    CLLM_CHECK_PTR(d, "decoder"); CLLM_CHECK_PTR(ids, "ids"); CLLM_CHECK_PTR(nll_sum, "nll_sum");
    if (n < 2 || n > d->P)
        return cllm_fail(CLLM_ERR_RANGE, "decoder: nll needs 2..%d ids (context length), got %d", d->P, n);
    int rc = check_ids(d, ids, n);
    if (!rc) rc = make_ready(d);
    if (rc) return rc;
    double total = 0.0;
    d->pos = 0;
    if (d->chunk > 0) rc = cllm_prefill_run(d, ids, n - 1, ids + 1, &total);
    for (int t = 0; d->chunk == 0 && t + 1 < n && !rc; t++) {   /* token by token */
        rc = step(d, ids[t]);
        if (!rc) total += row_nll(d->logits, d->V, ids[t + 1]);
    }
    if (rc) return rc;
    if (!isfinite(total)) return cllm_fail(CLLM_ERR_NUMERIC, "decoder: non-finite loss");
    *nll_sum = total;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_decoder_ban(cllm_decoder *d, const int32_t *ids, int n) {
    CLLM_CHECK_PTR(d, "decoder");
    if (n < 0 || n > CLLM_DECODER_MAX_BAN)
        return cllm_fail(CLLM_ERR_RANGE, "decoder: at most %d banned ids, got %d", CLLM_DECODER_MAX_BAN, n);
    if (n > 0) CLLM_CHECK_PTR(ids, "ids");
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= d->V)
            return cllm_fail(CLLM_ERR_RANGE, "decoder: banned id %d out of range [0, %d)", (int)ids[i], d->V);
    for (int i = 0; i < n; i++) d->ban[i] = ids[i];
    d->nban = n;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_decoder_limit_vocab(cllm_decoder *d, int n) {
    CLLM_CHECK_PTR(d, "decoder");
    if (n < 1 || n > d->V) return cllm_fail(CLLM_ERR_RANGE, "decoder: vocabulary limit must be in [1, %d], got %d", d->V, n);
    d->nsample = n;
    return CLLM_OK;
}

CLLM_GETTER(cllm_decoder_threads, cllm_decoder, "decoder", int, h->ns)

/* --------------------------------------------------- kernel test hooks */
CLLM_EXPORT int cllm_qmatvec_run(int dtype, int isa, const void *w, const float *scale, const float *x,
                                 const float *bias, float *y, int rows, int cols) {
    CLLM_CHECK_PTR(w, "w"); CLLM_CHECK_PTR(x, "x"); CLLM_CHECK_PTR(y, "y");
    if (rows < 1 || cols < 1 || cols > (1 << 24))
        return cllm_fail(CLLM_ERR_INVALID, "qmatvec: rows and cols must be >= 1 (cols <= 2^24), got %d x %d", rows, cols);
    if (isa != CLLM_ISA_SCALAR && isa != CLLM_ISA_AVX2 && isa != CLLM_ISA_AVX512)
        return cllm_fail(CLLM_ERR_INVALID, "qmatvec: isa must be SCALAR, AVX2 or AVX512, got %d", isa);
    int avx2 = 0, avx512 = 0;
    cllm_cpu_detect(&avx2, &avx512);
    if ((isa == CLLM_ISA_AVX2 && !avx2) || (isa == CLLM_ISA_AVX512 && !avx512))
        return cllm_fail(CLLM_ERR_UNSUPPORTED, "qmatvec: this CPU lacks the requested ISA");
    const cllm_qops *q = cllm_qops_for_isa(isa);
    int rc = CLLM_OK;
    if (dtype == CLLM_DTYPE_INT8) {
        CLLM_CHECK_PTR(scale, "scale");
        int8_t *xq = malloc((size_t)cols);
        int32_t *rs = malloc(sizeof(int32_t) * (size_t)rows);
        if (!xq || !rs) rc = cllm_fail(CLLM_ERR_NOMEM, "qmatvec: out of memory");
        else {
            const int8_t *qw = w;
            for (size_t k = 0; k < (size_t)rows * cols; k++)
                if (qw[k] == -128) { rc = cllm_fail(CLLM_ERR_INVALID, "qmatvec: int8 weights must be in [-127, 127]"); break; }
            if (!rc) {
                float xs;
                cllm_quantize_vec(xq, &xs, x, cols);
                cllm_q8_rowsums(rs, qw, rows, cols);
                q->q8_rows(y, qw, scale, rs, xq, xs, bias, cols, 0, rows);
            }
        }
        free(xq);
        free(rs);
    } else if (dtype == CLLM_DTYPE_BF16) {
        uint16_t *xb = malloc(sizeof(uint16_t) * (size_t)cols);
        if (!xb) return cllm_fail(CLLM_ERR_NOMEM, "qmatvec: out of memory");
        cllm_f32_to_bf16_n(isa, xb, x, (size_t)cols);
        q->bf16_rows(y, w, xb, bias, cols, 0, rows);
        free(xb);
    } else if (dtype == CLLM_DTYPE_F32) {
        q->f32_rows(y, w, x, bias, cols, 0, rows);
    } else {
        rc = cllm_fail(CLLM_ERR_INVALID, "qmatvec: dtype must be CLLM_DTYPE_INT8, _BF16 or _F32");
    }
    return rc;
}

CLLM_EXPORT int cllm_quantize_int8(const float *src, int rows, int cols, int transposed, int8_t *q, float *scale) {
    CLLM_CHECK_PTR(src, "src"); CLLM_CHECK_PTR(q, "q"); CLLM_CHECK_PTR(scale, "scale");
    if (rows < 1 || cols < 1) return cllm_fail(CLLM_ERR_INVALID, "quantize: rows and cols must be >= 1");
    int32_t *rs = malloc(sizeof(int32_t) * (size_t)rows);
    if (!rs) return cllm_fail(CLLM_ERR_NOMEM, "quantize: out of memory");
    /* transposed: src is (cols, rows), i.e. a Conv1D (in, out) weight */
    cllm_quantize_rows(q, scale, rs, src, rows, cols, transposed ? 1 : (size_t)cols, transposed ? (size_t)rows : 1);
    free(rs);
    return CLLM_OK;
}
