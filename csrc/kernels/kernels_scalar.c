/* kernels_scalar.c - the plain scalar reference of every op in the registry
 * (ops_list.h), compiled without vectorisation, and the scalar table. The
 * SIMD tables fall back to these bodies for ops without an S(name) body.
 * Everything is row-major; shapes are documented in ops_list.h. */
#pragma GCC optimize("no-tree-vectorize")
#include <math.h>
#include <string.h>
#include "cllm.h"
#include "kernels.h"

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

/* out(N,C) = (x - mean) * rstd * w + b */
void cllm_ref_layernorm_fwd(float *out, float *mean, float *rstd, const float *x,
                            const float *w, const float *b, int N, int C) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        float *oi = out + (size_t)i * C;
        float m = 0.0f;
        for (int j = 0; j < C; j++) m += xi[j];
        m /= (float)C;
        float var = 0.0f;
        for (int j = 0; j < C; j++) { float d = xi[j] - m; var += d * d; }
        var /= (float)C;
        float s = 1.0f / sqrtf(var + 1e-5f);
        for (int j = 0; j < C; j++) oi[j] = (xi[j] - m) * s * w[j] + b[j];
        mean[i] = m;
        rstd[i] = s;
    }
}

/* dx(N,C) += ..., dw(C), db(C) overwritten */
void cllm_ref_layernorm_bwd(float *dx, float *dw, float *db, const float *dout,
                            const float *x, const float *w, const float *mean,
                            const float *rstd, int N, int C) {
    memset(dw, 0, sizeof(float) * (size_t)C);
    memset(db, 0, sizeof(float) * (size_t)C);
    for (int i = 0; i < N; i++) {
        const float *dy = dout + (size_t)i * C;
        const float *xi = x + (size_t)i * C;
        float *dxi = dx + (size_t)i * C;
        float m = mean[i], s = rstd[i];
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
        for (int j = 0; j < C; j++) {
            float n = (xi[j] - m) * s;
            float dn = w[j] * dy[j];
            dnorm_mean += dn;
            dnorm_norm_mean += dn * n;
        }
        dnorm_mean /= (float)C;
        dnorm_norm_mean /= (float)C;
        for (int j = 0; j < C; j++) {
            float n = (xi[j] - m) * s;
            float dn = w[j] * dy[j];
            db[j] += dy[j];
            dw[j] += n * dy[j];
            dxi[j] += (dn - dnorm_mean - n * dnorm_norm_mean) * s;
        }
    }
}

void cllm_ref_residual_layernorm_fwd(float *res, float *out, float *mean, float *rstd,
                                     const float *a, const float *b, const float *w,
                                     const float *bias, int N, int C) {
    for (int i = 0; i < N; i++) {
        size_t o = (size_t)i * C;
        for (int j = 0; j < C; j++) res[o + j] = a[o + j] + b[o + j];
        cllm_ref_layernorm_fwd(out + o, mean + i, rstd + i, res + o, w, bias, 1, C);
    }
}

void cllm_ref_residual_fwd(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void cllm_ref_gelu_fwd(float *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float u = GELU_SCALE * (v + 0.044715f * v * v * v);
        out[i] = 0.5f * v * (1.0f + tanhf(u));
    }
}

void cllm_ref_gelu_bwd(float *dx, const float *x, const float *dout, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float u = GELU_SCALE * (v + 0.044715f * v * v * v);
        float t = tanhf(u);
        float sech2 = 1.0f - t * t;
        float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * v * v);
        dx[i] = (0.5f * (1.0f + t) + 0.5f * v * sech2 * du) * dout[i];
    }
}

/* a(n) = softmax(scale * q . k_j) over the n rows k_j = k + j*ldk (hs floats
 * each); returns the log-sum-exp of the scaled scores (a = exp(s - lse)) */
static float softmax_scores(float *a, const float *q, const float *k, size_t ldk, int n, int hs, float scale) {
    float maxv = -INFINITY;
    for (int j = 0; j < n; j++) {
        const float *kj = k + (size_t)j * ldk;
        float d = 0.0f;
        for (int i = 0; i < hs; i++) d += q[i] * kj[i];
        d *= scale;
        a[j] = d;
        if (d > maxv) maxv = d;
    }
    float sum = 0.0f;
    for (int j = 0; j < n; j++) { float e = expf(a[j] - maxv); a[j] = e; sum += e; }
    float inv = 1.0f / sum;
    for (int j = 0; j < n; j++) a[j] *= inv;
    return maxv + logf(sum);
}

/* o(hs) = sum_j p[j] * v_j over the n rows v_j = v + j*ldv */
static void weighted_rows(float *o, const float *p, const float *v, size_t ldv, int n, int hs) {
    for (int i = 0; i < hs; i++) o[i] = 0.0f;
    for (int j = 0; j < n; j++) {
        const float *vj = v + (size_t)j * ldv;
        for (int i = 0; i < hs; i++) o[i] += p[j] * vj[i];
    }
}

/* qkv(B,T,3C): q | k | v per row, head h at columns h*hs..; out(B,T,C);
 * lse(B,NH,T) log-sum-exp of each row's scaled scores. One query row at a
 * time: its T probabilities live in ws only while the row is computed. */
void cllm_ref_attention_fwd(float *out, float *lse, const float *qkv, int B, int T,
                            int C, int NH, int u0, int u1, float *ws) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = (size_t)C * 3;
    (void)B;
    for (int u = u0; u < u1; u++)
        for (int b = u / NH, h = u % NH, t = 0; t < T; t++) {
            const float *row0 = qkv + (size_t)b * T * C3 + (size_t)h * hs;
            lse[((size_t)b * NH + h) * T + t] = softmax_scores(ws, row0 + (size_t)t * C3, row0 + C, C3, t + 1, hs, scale);
            weighted_rows(out + ((size_t)b * T + t) * C + (size_t)h * hs, ws, row0 + 2 * (size_t)C, C3, t + 1, hs);
        }
}

/* Backward, one query row t at a time: p_j = exp(s_tj - lse_t) recomputed
 * and dp_j = dy . v_j into ws (2 T floats), D = sum_j p_j dp_j,
 * ds_j = p_j (dp_j - D) scale; dq_t += ds_j k_j, dk_j += ds_j q_t,
 * dv_j += p_j dy. */
void cllm_ref_attention_bwd(float *dqkv, const float *dout, const float *qkv, const float *lse, int B, int T,
                            int C, int NH, int u0, int u1, float *ws) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = (size_t)C * 3;
    float *pr = ws, *dpr = ws + T;
    (void)B;
    for (int u = u0; u < u1; u++)
        for (int t = 0; t < T; t++) /* this unit's Q, K, V gradient columns */
            for (int part = 0; part < 3; part++)
                memset(dqkv + ((size_t)(u / NH) * T + t) * C3 + (size_t)part * C + (size_t)(u % NH) * hs, 0,
                       sizeof(float) * (size_t)hs);
    for (int u = u0; u < u1; u++)
        for (int b = u / NH, h = u % NH, t = 0; t < T; t++) {
            const float *dy = dout + ((size_t)b * T + t) * C + (size_t)h * hs;
            const float *q = qkv + ((size_t)b * T + t) * C3 + (size_t)h * hs;
            float *dq = dqkv + ((size_t)b * T + t) * C3 + (size_t)h * hs;
            float l = lse[((size_t)b * NH + h) * T + t], D = 0.0f;
            for (int t2 = 0; t2 <= t; t2++) {
                size_t r2 = ((size_t)b * T + t2) * C3 + (size_t)h * hs;
                const float *k = qkv + r2 + C, *v = qkv + r2 + 2 * (size_t)C;
                float s = 0.0f, dp = 0.0f;
                for (int i = 0; i < hs; i++) { s += q[i] * k[i]; dp += dy[i] * v[i]; }
                pr[t2] = expf(s * scale - l);
                dpr[t2] = dp;
                D += pr[t2] * dp;
            }
            for (int t2 = 0; t2 <= t; t2++) {
                size_t r2 = ((size_t)b * T + t2) * C3 + (size_t)h * hs;
                const float *k = qkv + r2 + C;
                float *dk = dqkv + r2 + C, *dv = dqkv + r2 + 2 * (size_t)C;
                float p = pr[t2], ds = p * (dpr[t2] - D) * scale;
                for (int i = 0; i < hs; i++) {
                    dv[i] += p * dy[i];
                    dq[i] += ds * k[i];
                    dk[i] += ds * q[i];
                }
            }
        }
}

void cllm_ref_crossentropy_fused(float *logits, float *losses, const int32_t *targets,
                                 int N, int V, float dscale) {
    for (int i = 0; i < N; i++) {
        float *l = logits + (size_t)i * V;
        int tgt = targets[i];
        if (tgt < 0) {
            losses[i] = 0.0f;
            memset(l, 0, sizeof(float) * (size_t)V);
            continue;
        }
        float maxv = -INFINITY;
        for (int j = 0; j < V; j++) if (l[j] > maxv) maxv = l[j];
        float sum = 0.0f;
        for (int j = 0; j < V; j++) sum += expf(l[j] - maxv);
        float lse = maxv + logf(sum);
        losses[i] = lse - l[tgt];
        float inv = 1.0f / sum;
        for (int j = 0; j < V; j++) l[j] = expf(l[j] - maxv) * inv * dscale;
        l[tgt] -= dscale;
    }
}

void cllm_ref_embed_fwd(float *out, const int32_t *ids, const float *wte,
                        const float *wpe, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *e = wte + (size_t)ids[b * T + t] * C;
            const float *p = wpe + (size_t)t * C;
            for (int i = 0; i < C; i++) o[i] = e[i] + p[i];
        }
}

void cllm_ref_embed_bwd(float *dwte, float *dwpe, const float *dout,
                        const int32_t *ids, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *d = dout + ((size_t)b * T + t) * C;
            float *de = dwte + (size_t)ids[b * T + t] * C;
            float *dp = dwpe + (size_t)t * C;
            for (int i = 0; i < C; i++) { de[i] += d[i]; dp[i] += d[i]; }
        }
}

void cllm_ref_bias_grad(float *db, const float *dout, int N, int OC) {
    memset(db, 0, sizeof(float) * (size_t)OC);
    for (int i = 0; i < N; i++) {
        const float *d = dout + (size_t)i * OC;
        for (int j = 0; j < OC; j++) db[j] += d[j];
    }
}

void cllm_ref_add_into(float *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

double cllm_ref_sumsq(const float *x, size_t n) {
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) acc += (double)x[i] * (double)x[i];
    return acc;
}

double cllm_ref_add_into_sumsq(float *dst, const float *src, size_t n) {
    cllm_ref_add_into(dst, src, n);
    return cllm_ref_sumsq(dst, n);
}

void cllm_ref_adamw(float *p, const float *g, float *m, float *v, size_t n,
                    float lr, float b1, float b2, float eps, float wd,
                    float bc1, float bc2, float gscale) {
    float step = lr / bc1;
    float sbc2 = sqrtf(bc2);
    float decay = 1.0f - lr * wd;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * gscale;
        float mi = m[i] + (1.0f - b1) * (gi - m[i]);
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float pi = p[i] * decay;
        p[i] = pi - step * mi / (sqrtf(vi) / sbc2 + eps);
    }
}

void cllm_ref_attention_step(float *out, const float *q, const float *kt, const float *v, int len, int ldk,
                             int hs, float *scratch) {
    float scale = 1.0f / sqrtf((float)hs), maxv = -INFINITY, sum = 0.0f;
    for (int t = 0; t < len; t++) {
        float d = 0.0f;
        for (int i = 0; i < hs; i++) d += q[i] * kt[(size_t)i * ldk + t];
        scratch[t] = d * scale;
        if (scratch[t] > maxv) maxv = scratch[t];
    }
    for (int t = 0; t < len; t++) { scratch[t] = expf(scratch[t] - maxv); sum += scratch[t]; }
    float inv = 1.0f / sum;
    for (int t = 0; t < len; t++) scratch[t] *= inv;
    weighted_rows(out, scratch, v, (size_t)hs, len, hs);
}

void cllm_ref_softmax_causal(float *s, int m, int len0, int ld) {
    int end = len0 + m - 1;
    for (int i = 0; i < m; i++) {
        float *r = s + (size_t)i * ld, maxv = -INFINITY, sum = 0.0f;
        int len = len0 + i;
        for (int t = 0; t < len; t++)
            if (r[t] > maxv) maxv = r[t];
        for (int t = 0; t < len; t++) { r[t] = expf(r[t] - maxv); sum += r[t]; }
        float inv = 1.0f / sum;
        for (int t = 0; t < len; t++) r[t] *= inv;
        for (int t = len; t < end; t++) r[t] = 0.0f;
    }
}

void cllm_ref_gelu_bwd_bias(float *dx, float *db, const float *x, const float *dout,
                            int N, int OC) {
    cllm_ref_gelu_bwd(dx, x, dout, (size_t)N * OC);
    cllm_ref_bias_grad(db, dx, N, OC);
}

#define OP(name, ...) .name = cllm_ref_##name,
const cllm_ops cllm_ops_scalar = {
    .name = "scalar",
    .isa = CLLM_ISA_SCALAR,
#include "ops_list.h"
};
#undef OP
