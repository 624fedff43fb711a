/* decode_impl.h - the decoder's state, private to decode.c (weights, the
 * per-token step, the API) and prefill.c (a chunk of tokens per pass).
 *
 * Besides the KV cache the decoder remembers the token ids it holds (tok,
 * pos of them) and keeps one invariant: with pos > 0, logits are the
 * next-token logits after tok[pos - 1]. Every path that appends to the
 * cache (step, prefill, nll) maintains it; anything that changes the
 * weights empties the cache (pos = 0).
 *
 * The helpers below are the per-token numerics both paths share, so the
 * batched path's last-row logits come out of the very same LM-head code. */
#ifndef CLLM_MODEL_DECODE_IMPL_H
#define CLLM_MODEL_DECODE_IMPL_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "cllm.h"
#include "kernels/bf16.h"
#include "kernels/kernels.h"
#include "kernels/qmatvec.h"
#include "model/layout.h"
#include "runtime/spheres.h"

#define ROW_UNIT 16     /* split granularity of matvec output rows */

/* slot kinds: FP32 vector/table, Conv1D (in,out), wte (V,C), nn.Linear (out,in) */
enum { K_VEC, K_CONV, K_WTE, K_LIN };

typedef struct {
    char name[64];
    int kind, ndim, shape[2];      /* HF shape */
    int rows, cols;                /* matrices: output rows, input cols */
    int set;
    size_t aoff;                   /* this matrix's place in the weight arena */
    const void *data;              /* storage the kernels read */
    const float *scale;            /* int8 per-row scales */
    int32_t *rowsum;               /* int8 per-row sums of q (owned) */
    void *owned, *owned_scale;     /* allocations owned by the slot */
} Slot;

typedef struct {
    float *xb, *tmp, *scratch;     /* LN output / residual partial (C), attention scratch (P) */
    int8_t *xq;                    /* quantized input (4C) */
    uint16_t *xbf;                 /* BF16 input (4C) */
    float xs;
    float *gws;                    /* prefill: GEMM workspace (cllm_gemm_any_ws_floats) */
    float *panel;                  /* prefill: weight rows converted to FP32 (bf16 / int8) */
    float *att_s;                  /* prefill: a block's attention scores (CLLM_PREFILL_ATT_ROWS, P) */
} DSphere;

/* Prefill scratch, allocated at the first batched call for `rows` rows per
 * chunk (and the nll buffers at the first nll), kept until the chunk size
 * changes or the decoder is freed. */
typedef struct {
    int rows;                      /* rows the buffers below hold (0: none yet) */
    float *base;                   /* one allocation: x, ln, qkv, att, fc, tmp, xs */
    float *x, *ln, *qkv, *att, *fc, *tmp, *xs;
    int lrows;                     /* rows of the nll logits buffer (0: none yet) */
    float *logits;                 /* nll: (lrows, V) */
    double *nll;                   /* nll: -log p per row of a chunk (rows) */
} Prefill;

struct cllm_decoder {
    int V, P, L, NH, C, dtype, nslots;
    int NKV, KVD, QKV;             /* K/V heads; their width KVD = NKV * hs; c_attn rows C + 2 * KVD */
    Slot *slot;
    unsigned char *arena;          /* owned matrices and the KV cache (NULL once released) */
    void *arena_map;               /* the mapping holding it (NULL: heap) */
    size_t arena_bytes, arena_map_bytes;
    cllm_spheres *pool;
    int ns, own_pool;
    DSphere *sph;
    float *kc, *vc;                /* per layer and K/V head: keys (hs, P), values (P, hs); in the arena */
    float *x, *qkv, *att, *fc, *logits;
    float *prob;                   /* sampling scratch (V) */
    int32_t *idx;
    int32_t *tok;                  /* the ids whose keys / values the cache holds (P; pos of them) */
    int pos, ready;
    int nsample;                   /* ids >= nsample are never sampled (tokenizer size) */
    int nban;                      /* ids never sampled (cllm_decoder_ban) */
    int32_t ban[CLLM_DECODER_MAX_BAN];
    int chunk;                     /* prefill rows per pass (0: token by token) */
    Prefill pf;
    const cllm_ops *ops;
    const cllm_qops *qops;
    int isa;                       /* the ISA of the last run (the cache's numerics) */
};

/* slot indices: the model's parameter table (model/layout.h), in order */
#define X_ENUM(f, ...) SL_##f,
enum { CLLM_PARAMS_LAYER(X_ENUM) NLT };
#undef X_ENUM
static inline int s_layer(int l, int k) { return 2 + l * NLT + k; }
/* the K/V head query head h attends with */
static inline int kv_head(const cllm_decoder *d, int h) { return h / (d->NH / d->NKV); }

#define W(l, k) (&d->slot[s_layer(l, k)])
#define F(l, k) ((const float *)d->slot[s_layer(l, k)].data)

/* y[lo, hi) = M x (+ bias) with the input prepared by prep (int8: s->xq and
 * s->xs; bf16: s->xbf; fp32: xin). */
static inline void mat_rows(const cllm_decoder *d, const DSphere *s, const Slot *M, const float *xin,
                            const float *bias, float *y, int lo, int hi) {
    if (lo >= hi) return;
    if (d->dtype == CLLM_DTYPE_INT8)
        d->qops->q8_rows(y, M->data, M->scale, M->rowsum, s->xq, s->xs, bias, M->cols, lo, hi);
    else if (d->dtype == CLLM_DTYPE_BF16)
        d->qops->bf16_rows(y, M->data, s->xbf, bias, M->cols, lo, hi);
    else
        d->qops->f32_rows(y, M->data, xin, bias, M->cols, lo, hi);
}

/* The input of the next matvec(s), in the storage's input format. */
static inline void prep(const cllm_decoder *d, DSphere *s, const float *in, int n) {
    if (d->dtype == CLLM_DTYPE_INT8) cllm_quantize_vec(s->xq, &s->xs, in, n);
    else if (d->dtype == CLLM_DTYPE_BF16) cllm_f32_to_bf16_n(d->isa, s->xbf, in, (size_t)n);
}

/* This sphere's share [lo, hi) of n output rows, in units of `unit`. */
static inline void rows_of(int n, int unit, int sp, int ns, int *lo, int *hi) {
    long a, b, units = (n + unit - 1) / unit;
    cllm_split(units, sp, ns, &a, &b);
    *lo = (int)(a * unit);
    *hi = (int)(b * unit < n ? b * unit : n);
    if (*lo > n) *lo = n;
}

/* x (C) = wte[token] + wpe[pos] */
static inline void embed_row(const cllm_decoder *d, int32_t token, int pos, float *x) {
    int C = d->C;
    const Slot *e = &d->slot[0];
    const float *pe = (const float *)d->slot[1].data + (size_t)pos * C;
    if (d->dtype == CLLM_DTYPE_INT8) {
        const int8_t *q = (const int8_t *)e->data + (size_t)token * C;
        float sc = e->scale[token];
        for (int i = 0; i < C; i++) x[i] = (float)q[i] * sc + pe[i];
    } else if (d->dtype == CLLM_DTYPE_BF16) {
        const uint16_t *b = (const uint16_t *)e->data + (size_t)token * C;
        for (int i = 0; i < C; i++) x[i] = cllm_bf16_to_f32(b[i]) + pe[i];
    } else {
        const float *w = (const float *)e->data + (size_t)token * C;
        for (int i = 0; i < C; i++) x[i] = w[i] + pe[i];
    }
}

/* -log softmax(z)[target] (z: V logits), the loss of one position */
static inline double row_nll(const float *z, int V, int32_t target) {
    float mx = z[0];
    for (int k = 1; k < V; k++) mx = z[k] > mx ? z[k] : mx;
    double sum = 0.0;
    for (int k = 0; k < V; k++) sum += exp((double)z[k] - mx);
    return log(sum) + mx - z[target];
}

/* d->logits = wte @ ln_f(x), this sphere's share of the vocabulary rows
 * (every sphere computes the LayerNorm of x itself). */
static inline void lm_head_row(cllm_decoder *d, DSphere *s, int sp, int ns, const float *x) {
    int lo, hi;
    float mean, rstd;
    const float *lnfw = d->slot[d->nslots - 2].data, *lnfb = d->slot[d->nslots - 1].data;
    d->ops->layernorm_fwd(s->xb, &mean, &rstd, x, lnfw, lnfb, 1, d->C);
    prep(d, s, s->xb, d->C);
    rows_of(d->V, ROW_UNIT, sp, ns, &lo, &hi);
    mat_rows(d, s, &d->slot[0], s->xb, NULL, d->logits, lo, hi);
}
#endif
