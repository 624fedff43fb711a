/* prefill.c - a run of tokens (a prompt, an evaluation window) through the
 * decoder in one pass per layer.
 *
 * The per-token step (decode.c) reads every weight once per token through
 * matvecs; a prompt of T tokens in chunks of R rows instead reads them once
 * per chunk through GEMMs, with the chunk's activations as (R, C) row-major
 * matrices. One sphere-pool run per chunk, phases separated by barriers:
 *
 *   rows     embed; ln_1 (and the rounding / quantization of the input)
 *   columns  qkv = c_attn(ln)                      (GEMM, N split by spheres)
 *   heads    keys and values of every row into the cache (per K/V head)
 *   blocks   causal attention of the chunk's queries over the cache, per
 *            (head, block of up to CLLM_PREFILL_ATT_ROWS query rows), the
 *            pairs dealt round-robin to the spheres: S = Q K^T / sqrt(hs)
 *            (GEMM over the transposed keys), a causal softmax of each row
 *            over its own prefix (softmax_causal), att = S V (GEMM); a block
 *            of fewer than CLLM_PREFILL_ATT_MIN_ROWS rows runs each row
 *            through attention_step, the per-token kernel
 *   columns  tmp = c_proj(att)       rows  x += tmp, ln_2
 *   columns  fc = gelu(c_fc(ln))     columns  tmp = c_proj(fc)
 *   rows     x += tmp
 *
 * then the LM head: for the last row only, by the step's own code (the
 * biggest matmul, skipped for the rows nobody samples from), or for every
 * row when a loss is wanted (cllm_decoder_nll), in groups of rows bounded
 * by the logits buffer.
 *
 * Weights are the decoder's (out, in) storage, the transposed B operand of
 * cllm_sgemm. FP32 uses them in place. BF16 uses the BF16 GEMM when a BF16
 * kernel is usable, else converts panels of PANEL weight rows to FP32. INT8
 * converts panels of q to FP32 integers and multiplies them with the input
 * quantized per row exactly as the step quantizes its vector, then applies
 * the step's epilogue y = acc * (xs * scale) + bias: integer products and
 * sums below 2^24 are exact in FP32, so this is the step's int8 arithmetic.
 * Likewise the BF16 path rounds each input row to BF16 first, as the step
 * does. What remains different from the step is the FP32 summation order.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/internal.h"
#include "gemm/gemm.h"
#include "gemm/gemm_bf16.h"
#include "model/decode_impl.h"
#include "model/prefill.h"

#define COL_UNIT 64                          /* split granularity of GEMM output columns */
#define PANEL 64                             /* weight rows converted to FP32 per sgemm (bf16 / int8) */
#define NLL_LOGITS_FLOATS ((size_t)1 << 23)  /* bound of the nll logits buffer (32 MiB) */

typedef struct {
    cllm_decoder *d;
    const int32_t *ids, *tgt;   /* this chunk's ids; targets (nll) or NULL */
    int n, pos0;                /* rows; position of the first */
    int bf16_kernel;            /* BF16 GEMM kernel, or SCALAR: FP32 panels */
} Job;

void cllm_prefill_free(cllm_decoder *d) {
    Prefill *p = &d->pf;
    cllm_aligned_free(p->base);
    cllm_aligned_free(p->logits);
    cllm_aligned_free(p->nll);
    if (d->sph)
        for (int i = 0; i < d->ns; i++) {
            cllm_aligned_free(d->sph[i].gws);
            cllm_aligned_free(d->sph[i].panel);
            cllm_aligned_free(d->sph[i].att_s);
            d->sph[i].gws = d->sph[i].panel = d->sph[i].att_s = NULL;
        }
    memset(p, 0, sizeof *p);
}

/* The scratch for d->chunk rows (and the nll buffers when nll), allocated
 * once and kept. */
static int scratch(cllm_decoder *d, int nll) {
    Prefill *p = &d->pf;
    size_t R = (size_t)d->chunk, C = (size_t)d->C, V = (size_t)d->V;
    if (p->rows != d->chunk) {
        cllm_prefill_free(d);
        /* x, ln, att, tmp: C; qkv 3C (room for C + 2 * KVD); fc 4C */
        p->base = cllm_aligned_alloc(sizeof(float) * (R * 11 * C + R));
        if (!p->base) goto nomem;
        p->x = p->base;
        p->ln = p->x + R * C;
        p->qkv = p->ln + R * C;
        p->att = p->qkv + 3 * R * C;
        p->fc = p->att + R * C;
        p->tmp = p->fc + 4 * R * C;
        p->xs = p->tmp + R * C;
        for (int i = 0; i < d->ns; i++) {
            DSphere *s = &d->sph[i];
            s->gws = cllm_aligned_alloc(sizeof(float) * cllm_gemm_any_ws_floats());
            s->att_s = cllm_aligned_alloc(sizeof(float) * CLLM_PREFILL_ATT_ROWS * (size_t)d->P);
            if (!s->gws || !s->att_s) goto nomem;
            if (d->dtype != CLLM_DTYPE_F32) {
                s->panel = cllm_aligned_alloc(sizeof(float) * PANEL * 4 * C);
                if (!s->panel) goto nomem;
            }
        }
        p->rows = d->chunk;
    }
    if (nll && !p->logits) {
        size_t g = NLL_LOGITS_FLOATS / V;
        g = g < 1 ? 1 : g > R ? R : g;
        p->logits = cllm_aligned_alloc(sizeof(float) * g * V);
        p->nll = cllm_aligned_alloc(sizeof(double) * R);
        if (!p->logits || !p->nll) goto nomem;
        p->lrows = (int)g;
    }
    return CLLM_OK;
nomem:
    cllm_prefill_free(d);
    return cllm_fail(CLLM_ERR_NOMEM, "decoder: out of memory for the prefill scratch (%d rows)", d->chunk);
}

/* Rows [r0, r1) of buf (row stride K) in the storage's input format, as the
 * step's prep does for its vector, kept as FP32: BF16-rounded, or int8
 * integers with the row's scale in xs[r]. FP32: unchanged. */
static void prep_rows(const cllm_decoder *d, DSphere *s, float *buf, int K, float *xs, long r0, long r1) {
    for (long r = r0; r < r1; r++) {
        float *row = buf + (size_t)r * K;
        if (d->dtype == CLLM_DTYPE_INT8) {
            cllm_quantize_vec(s->xq, &xs[r], row, K);
            for (int i = 0; i < K; i++) row[i] = (float)s->xq[i];
        } else if (d->dtype == CLLM_DTYPE_BF16) {
            cllm_f32_to_bf16_n(d->isa, s->xbf, row, (size_t)K);
            cllm_bf16_to_f32_n(d->isa, row, s->xbf, (size_t)K);
        }
    }
}

/* Columns [c0, c1) of Y (n rows, stride ldy) = X M^T (+ bias): X (n, K =
 * M->cols) prepared by prep_rows (int8 row scales xs), M (rows, K) by
 * output row. */
static void linear(const Job *j, DSphere *s, const Slot *M, const float *X, int n, float *Y, int ldy,
                   const float *bias, const float *xs, int c0, int c1) {
    const cllm_decoder *d = j->d;
    int K = M->cols, isa = d->isa;
    if (c0 >= c1) return;
    if (d->dtype == CLLM_DTYPE_F32) {
        cllm_sgemm(isa, 0, 1, n, c1 - c0, K, 1.0f, X, K, (const float *)M->data + (size_t)c0 * K, K, 0.0f, Y + c0,
                   ldy, bias ? bias + c0 : NULL, s->gws);
        return;
    }
    if (d->dtype == CLLM_DTYPE_BF16 && j->bf16_kernel != CLLM_BF16_KERNEL_SCALAR) {
        cllm_bgemm(j->bf16_kernel, 0, 1, n, c1 - c0, K, 1.0f, X, 0, K, (const uint16_t *)M->data + (size_t)c0 * K, 1,
                   K, 0.0f, Y + c0, ldy, bias ? bias + c0 : NULL, s->gws);
        return;
    }
    for (int j0 = c0; j0 < c1; j0 += PANEL) {
        int nb = c1 - j0 < PANEL ? c1 - j0 : PANEL;
        size_t cnt = (size_t)nb * K;
        if (d->dtype == CLLM_DTYPE_BF16) {
            cllm_bf16_to_f32_n(isa, s->panel, (const uint16_t *)M->data + (size_t)j0 * K, cnt);
            cllm_sgemm(isa, 0, 1, n, nb, K, 1.0f, X, K, s->panel, K, 0.0f, Y + j0, ldy, bias ? bias + j0 : NULL, s->gws);
            continue;
        }
        const int8_t *q = (const int8_t *)M->data + (size_t)j0 * K;
        for (size_t k = 0; k < cnt; k++) s->panel[k] = (float)q[k];
        cllm_sgemm(isa, 0, 1, n, nb, K, 1.0f, X, K, s->panel, K, 0.0f, Y + j0, ldy, NULL, s->gws);
        for (int r = 0; r < n; r++) {   /* the int8 matvec's epilogue (one fused multiply-add) */
            float *y = Y + (size_t)r * ldy + j0;
            for (int c = 0; c < nb; c++) y[c] = fmaf(y[c], xs[r] * M->scale[j0 + c], bias ? bias[j0 + c] : 0.0f);
        }
    }
}

/* ln = LayerNorm(x) (w, b) for rows [r0, r1), prepared as a GEMM input;
 * then the barrier before the GEMM that reads every row. */
static void norm_rows(cllm_decoder *d, DSphere *s, const float *w, const float *b, long r0, long r1) {
    Prefill *p = &d->pf;
    int C = d->C;
    float mean, rstd;
    for (long r = r0; r < r1; r++)
        d->ops->layernorm_fwd(p->ln + (size_t)r * C, &mean, &rstd, p->x + (size_t)r * C, w, b, 1, C);
    prep_rows(d, s, p->ln, C, p->xs, r0, r1);
    cllm_spheres_barrier(d->pool);
}

/* Every row's loss: ln_f (rows), the LM head over groups of rows (columns),
 * then each row's -log p of its target (rows). */
static void nll_head(const Job *j, DSphere *s, int sp, int ns, long r0, long r1) {
    cllm_decoder *d = j->d;
    Prefill *p = &d->pf;
    int C = d->C, V = d->V, lo, hi;
    norm_rows(d, s, d->slot[d->nslots - 2].data, d->slot[d->nslots - 1].data, r0, r1);
    rows_of(V, COL_UNIT, sp, ns, &lo, &hi);
    for (int g0 = 0; g0 < j->n; g0 += p->lrows) {
        int gn = j->n - g0 < p->lrows ? j->n - g0 : p->lrows;
        long a, b;
        linear(j, s, &d->slot[0], p->ln + (size_t)g0 * C, gn, p->logits, V, NULL, p->xs + g0, lo, hi);
        cllm_spheres_barrier(d->pool);
        cllm_split(gn, sp, ns, &a, &b);
        for (long r = a; r < b; r++) p->nll[g0 + r] = row_nll(p->logits + (size_t)r * V, V, j->tgt[g0 + r]);
        cllm_spheres_barrier(d->pool);
    }
}

/* x += M in + bias (a residual projection): in (rows of M->cols floats,
 * written by all spheres) prepared by rows, the GEMM by output columns into
 * tmp, then the sum by rows [r0, r1). */
static void add_projection(const Job *j, DSphere *s, int sp, int ns, const Slot *M, const float *bias, float *in,
                           long r0, long r1) {
    cllm_decoder *d = j->d;
    Prefill *p = &d->pf;
    int C = d->C, lo, hi;
    if (d->dtype != CLLM_DTYPE_F32) {
        prep_rows(d, s, in, M->cols, p->xs, r0, r1);
        cllm_spheres_barrier(d->pool);
    }
    rows_of(C, COL_UNIT, sp, ns, &lo, &hi);
    linear(j, s, M, in, j->n, p->tmp, C, bias, p->xs, lo, hi);
    cllm_spheres_barrier(d->pool);
    for (long r = r0; r < r1; r++) {
        float *x = p->x + (size_t)r * C;
        const float *t = p->tmp + (size_t)r * C;
        for (int i = 0; i < C; i++) x[i] += t[i];
    }
}

/* Attention of rows [t0, t0 + m) of the chunk for head h over the cache
 * (kt: the head's transposed keys, vh: its values; row t sees positions
 * < pos0 + t + 1) into p->att. */
static void attend_block(const Job *j, DSphere *s, int h, int t0, int m, const float *kt, const float *vh) {
    const cllm_decoder *d = j->d;
    const Prefill *p = &d->pf;
    int C = d->C, P = d->P, hs = C / d->NH, QKV = d->QKV, len0 = j->pos0 + t0 + 1, L = len0 + m - 1;
    const float *q = p->qkv + (size_t)t0 * QKV + h * hs;
    float *out = p->att + (size_t)t0 * C + h * hs;
    if (m < CLLM_PREFILL_ATT_MIN_ROWS) {
        for (int i = 0; i < m; i++)
            d->ops->attention_step(out + (size_t)i * C, q + (size_t)i * QKV, kt, vh, len0 + i, P, hs, s->scratch);
        return;
    }
    cllm_sgemm(d->isa, 0, 0, m, L, hs, 1.0f / sqrtf((float)hs), q, QKV, kt, P, 0.0f, s->att_s, P, NULL, s->gws);
    d->ops->softmax_causal(s->att_s, m, len0, P);
    cllm_sgemm(d->isa, 0, 0, m, hs, L, 1.0f, s->att_s, P, vh, hs, 0.0f, out, C, NULL, s->gws);
}

static int task_prefill(void *arg, int sp, int ns) {
    const Job *j = arg;
    cllm_decoder *d = j->d;
    Prefill *p = &d->pf;
    DSphere *s = &d->sph[sp];
    const cllm_ops *ops = d->ops;
    int C = d->C, P = d->P, hs = C / d->NH, KVD = d->KVD, QKV = d->QKV, n = j->n, pos0 = j->pos0, lo, hi;
    int nblk = (n + CLLM_PREFILL_ATT_ROWS - 1) / CLLM_PREFILL_ATT_ROWS;
    long r0, r1, g0, g1;
    cllm_split(n, sp, ns, &r0, &r1);
    cllm_split(d->NKV, sp, ns, &g0, &g1);
    for (long r = r0; r < r1; r++) embed_row(d, j->ids[r], pos0 + (int)r, p->x + (size_t)r * C);
    for (int l = 0; l < d->L; l++) {
        float *kc = d->kc + (size_t)l * P * KVD, *vc = d->vc + (size_t)l * P * KVD;
        /* ln = ln_1(x); qkv = c_attn(ln) */
        norm_rows(d, s, F(l, SL_ln1w), F(l, SL_ln1b), r0, r1);
        rows_of(QKV, COL_UNIT, sp, ns, &lo, &hi);
        linear(j, s, W(l, SL_qkvw), p->ln, n, p->qkv, QKV, F(l, SL_qkvb), p->xs, lo, hi);
        cllm_spheres_barrier(d->pool);
        /* per K/V head: the chunk's keys and values into the cache */
        for (long g = g0; g < g1; g++) {
            float *kt = kc + (size_t)g * hs * P, *vh = vc + (size_t)g * hs * P;
            for (int t = 0; t < n; t++) {
                const float *k = p->qkv + (size_t)t * QKV + C + g * hs, *v = k + KVD;
                for (int e = 0; e < hs; e++) kt[(size_t)e * P + pos0 + t] = k[e];
                memcpy(vh + (size_t)(pos0 + t) * hs, v, sizeof(float) * (size_t)hs);
            }
        }
        cllm_spheres_barrier(d->pool);
        /* each (block of query rows, query head) over its K/V head's cache up
         * to each row's own position */
        for (int k = sp; k < nblk * d->NH; k += ns) {
            int b = k / d->NH, h = k % d->NH, t0 = b * CLLM_PREFILL_ATT_ROWS;
            size_t kv = (size_t)kv_head(d, h) * hs * P;
            attend_block(j, s, h, t0, n - t0 < CLLM_PREFILL_ATT_ROWS ? n - t0 : CLLM_PREFILL_ATT_ROWS, kc + kv,
                         vc + kv);
        }
        cllm_spheres_barrier(d->pool);
        /* x += c_proj(att); ln = ln_2(x) */
        add_projection(j, s, sp, ns, W(l, SL_projw), F(l, SL_projb), p->att, r0, r1);
        norm_rows(d, s, F(l, SL_ln2w), F(l, SL_ln2b), r0, r1);
        /* fc = gelu(c_fc(ln)) */
        rows_of(4 * C, COL_UNIT, sp, ns, &lo, &hi);
        linear(j, s, W(l, SL_fcw), p->ln, n, p->fc, 4 * C, F(l, SL_fcb), p->xs, lo, hi);
        if (hi > lo)
            for (int t = 0; t < n; t++) {
                float *f = p->fc + (size_t)t * 4 * C + lo;
                ops->gelu_fwd(f, f, (size_t)(hi - lo));
            }
        cllm_spheres_barrier(d->pool);
        /* x += c_proj(fc) */
        add_projection(j, s, sp, ns, W(l, SL_fcprojw), F(l, SL_fcprojb), p->fc, r0, r1);
    }
    if (j->tgt) {
        nll_head(j, s, sp, ns, r0, r1);
        return CLLM_OK;
    }
    cllm_spheres_barrier(d->pool);   /* the last row's residual stream is complete */
    lm_head_row(d, s, sp, ns, p->x + (size_t)(n - 1) * C);
    return CLLM_OK;
}

int cllm_prefill_run(cllm_decoder *d, const int32_t *ids, int n, const int32_t *targets, double *nll_sum) {
    int rc = scratch(d, targets != NULL);
    if (rc) return rc;
    d->isa = cllm_isa_current();
    d->ops = cllm_ops_for_isa(d->isa);
    d->qops = cllm_qops_for_isa(d->isa);
    Job j = {.d = d, .bf16_kernel = CLLM_BF16_KERNEL_SCALAR};
    if (d->dtype == CLLM_DTYPE_BF16) j.bf16_kernel = cllm_bf16_kernel_best(d->isa);
    double total = 0.0;
    for (int c0 = 0; c0 < n; c0 += d->chunk) {
        j.n = n - c0 < d->chunk ? n - c0 : d->chunk;
        j.ids = ids + c0;
        j.tgt = targets ? targets + c0 : NULL;
        j.pos0 = d->pos;
        rc = d->ns > 1 ? cllm_spheres_run(d->pool, task_prefill, &j) : task_prefill(&j, 0, 1);
        if (rc) {
            d->pos = 0;   /* the cache and the logits are no longer consistent */
            return rc;
        }
        memcpy(d->tok + d->pos, j.ids, sizeof(int32_t) * (size_t)j.n);
        d->pos += j.n;
        for (int t = 0; targets && t < j.n; t++) total += d->pf.nll[t];
    }
    if (targets) {   /* the last row's logits, kept as the decoder's current ones */
        memcpy(d->logits, d->pf.logits + (size_t)((j.n - 1) % d->pf.lrows) * d->V, sizeof(float) * (size_t)d->V);
        *nll_sum = total;
    }
    return CLLM_OK;
}
