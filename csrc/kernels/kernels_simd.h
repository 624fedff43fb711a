/* kernels_simd.h - hand-vectorised ops, written once over the vector
 * abstraction of simd_vec.h (vf, v_*) and included by kernels_avx2.c (8 lanes) and kernels_avx512.c
 * (16 lanes) after their `#pragma GCC target`. Before including, the ISA file
 * defines SIMD_W (8 or 16), KSFX, KNAME and KISA; this file defines the
 * S(name) bodies of the ops marked simd = 1 in ops_list.h and the ISA's table
 * cllm_ops_<KSFX> (other ops point at the scalar reference).
 *
 * Ragged tails (sizes not a multiple of SIMD_W) use masked loads/stores.
 * Accuracy: exp (v_exp in simd_vec.h) is a range-reduced polynomial (max relative error 7.7e-8,
 * ~1.3 ulp, measured over 4M points in [-87, 88]); sigmoid/GELU add one
 * division; everything else is plain fp32 arithmetic in a different
 * summation order than the scalar reference (tests: <= 1e-5 relative).
 */
/* No implicit a*b+c contraction: FMAs appear only where written
 * (v_fmadd/v_fnmadd), so e.g. (w*dy) - mean(w*dy) cancels exactly as in the
 * scalar reference. */
#pragma GCC optimize("fp-contract=off")
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "cllm.h"
#include "kernels.h"
#include "simd_vec.h"
#include "qmatvec.h"

#define SCAT2(a, b) a##_##b
#define SCAT(a, b) SCAT2(a, b)
#define S(name) SCAT(simd_##name, KSFX)
#define SOP static __attribute__((unused))

/* ------------------------------------------------------------ elementwise */
SOP void S(residual_fwd)(float *out, const float *a, const float *b, size_t n) {
    size_t i = 0;
    for (; i + VW <= n; i += VW) v_store(out + i, v_add(v_load(a + i), v_load(b + i)));
    if (i < n) { int r = (int)(n - i); v_storen(out + i, v_add(v_loadn(a + i, r), v_loadn(b + i, r)), r); }
}

SOP void S(add_into)(float *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 2 * VW <= n; i += 2 * VW) {
        v_store(dst + i, v_add(v_load(dst + i), v_load(src + i)));
        v_store(dst + i + VW, v_add(v_load(dst + i + VW), v_load(src + i + VW)));
    }
    for (; i + VW <= n; i += VW) v_store(dst + i, v_add(v_load(dst + i), v_load(src + i)));
    if (i < n) { int r = (int)(n - i); v_storen(dst + i, v_add(v_loadn(dst + i, r), v_loadn(src + i, r)), r); }
}

SOP double S(sumsq)(const float *x, size_t n) {
    vd a0 = vd_zero(), a1 = vd_zero();
    size_t i = 0;
    for (; i + 2 * VW <= n; i += 2 * VW) {
        a0 = v_sq_d_acc(a0, v_load(x + i));
        a1 = v_sq_d_acc(a1, v_load(x + i + VW));
    }
    for (; i + VW <= n; i += VW) a0 = v_sq_d_acc(a0, v_load(x + i));
    if (i < n) a1 = v_sq_d_acc(a1, v_loadn(x + i, (int)(n - i)));
    return vd_hsum(vd_add(a0, a1));
}

/* add_into, then sumsq of the result with sumsq's exact accumulation order */
SOP double S(add_into_sumsq)(float *dst, const float *src, size_t n) {
    vd a0 = vd_zero(), a1 = vd_zero();
    size_t i = 0;
    for (; i + 2 * VW <= n; i += 2 * VW) {
        vf x0 = v_add(v_load(dst + i), v_load(src + i)), x1 = v_add(v_load(dst + i + VW), v_load(src + i + VW));
        v_store(dst + i, x0);
        v_store(dst + i + VW, x1);
        a0 = v_sq_d_acc(a0, x0);
        a1 = v_sq_d_acc(a1, x1);
    }
    for (; i + VW <= n; i += VW) {
        vf x0 = v_add(v_load(dst + i), v_load(src + i));
        v_store(dst + i, x0);
        a0 = v_sq_d_acc(a0, x0);
    }
    if (i < n) {
        int r = (int)(n - i);
        vf x0 = v_add(v_loadn(dst + i, r), v_loadn(src + i, r));
        v_storen(dst + i, x0, r);
        a1 = v_sq_d_acc(a1, x0);
    }
    return vd_hsum(vd_add(a0, a1));
}

#define GELU_SCALE_S 0.7978845608028654f /* sqrt(2/pi) */
/* GELU (tanh form) via 0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + e^{-2u}):
 * no cancellation for large negative x, saturates cleanly for large |x|.
 * e^{-2u} is capped at e^80 so that s = 1/(1+e) stays a normal float
 * (>= 1.8e-35) for very negative x: denormals would cost a microcode assist
 * per lane; the values affected are < 1e-30 in magnitude either way. */
#define GELU_EXP_CAP 80.0f
SFN vf v_gelu_u(vf x) {
    vf x2 = v_mul(x, x);
    return v_mul(v_mul(v_set1(GELU_SCALE_S), x), v_fmadd(v_set1(0.044715f), x2, v_set1(1.0f)));
}
SFN vf v_gelu(vf x) {
    vf e = v_exp(v_min(v_mul(v_set1(-2.0f), v_gelu_u(x)), v_set1(GELU_EXP_CAP)));
    return v_div(x, v_add(v_set1(1.0f), e));
}

/* gelu_fwd, gelu_bwd_bias: four vectors per iteration, so four independent
 * exp/divide chains are in flight (one chain is latency-bound; measured on
 * the AVX2 path, Zen 4: -12% gelu_fwd, -19% gelu_bwd_bias per call) */
SOP void S(gelu_fwd)(float *out, const float *x, size_t n) {
    size_t i = 0;
    for (; i + 4 * VW <= n; i += 4 * VW) {
        vf a0 = v_gelu(v_load(x + i)), a1 = v_gelu(v_load(x + i + VW));
        vf a2 = v_gelu(v_load(x + i + 2 * VW)), a3 = v_gelu(v_load(x + i + 3 * VW));
        v_store(out + i, a0);
        v_store(out + i + VW, a1);
        v_store(out + i + 2 * VW, a2);
        v_store(out + i + 3 * VW, a3);
    }
    for (; i + VW <= n; i += VW) v_store(out + i, v_gelu(v_load(x + i)));
    if (i < n) { int r = (int)(n - i); v_storen(out + i, v_gelu(v_loadn(x + i, r)), r); }
}

/* d/dx [x s(2u)] = s + 2 x s (1 - s) u',  s = 1/(1+e), 1 - s = e s, e = e^{-2u} */
SFN vf v_gelu_grad(vf x, vf dy) {
    vf e = v_exp(v_min(v_mul(v_set1(-2.0f), v_gelu_u(x)), v_set1(GELU_EXP_CAP)));
    vf s = v_div(v_set1(1.0f), v_add(v_set1(1.0f), e));
    vf oms = v_mul(e, s);
    vf du = v_mul(v_set1(GELU_SCALE_S), v_fmadd(v_set1(3.0f * 0.044715f), v_mul(x, x), v_set1(1.0f)));
    vf g = v_fmadd(v_mul(v_mul(v_set1(2.0f), x), v_mul(s, oms)), du, s);
    return v_mul(g, dy);
}

SOP void S(gelu_bwd)(float *dx, const float *x, const float *dout, size_t n) {
    size_t i = 0;
    for (; i + VW <= n; i += VW) v_store(dx + i, v_gelu_grad(v_load(x + i), v_load(dout + i)));
    if (i < n) {
        int r = (int)(n - i);
        v_storen(dx + i, v_gelu_grad(v_loadn(x + i, r), v_loadn(dout + i, r)), r);
    }
}

/* AdamW, same operation order as the reference */
SOP void S(adamw)(float *p, const float *g, float *m, float *v, size_t n,
                  float lr, float b1, float b2, float eps, float wd,
                  float bc1, float bc2, float gscale) {
    const vf step = v_set1(lr / bc1), sbc2 = v_set1(sqrtf(bc2)), decay = v_set1(1.0f - lr * wd);
    const vf omb1 = v_set1(1.0f - b1), vb2 = v_set1(b2), omb2 = v_set1(1.0f - b2);
    const vf gs = v_set1(gscale), veps = v_set1(eps);
    size_t i = 0;
    for (; i < n; i += VW) {
        int r = n - i >= (size_t)VW ? VW : (int)(n - i);
        vf gi, mi, vi, pi;
        if (r == VW) { gi = v_load(g + i); mi = v_load(m + i); vi = v_load(v + i); pi = v_load(p + i); }
        else { gi = v_loadn(g + i, r); mi = v_loadn(m + i, r); vi = v_loadn(v + i, r); pi = v_loadn(p + i, r); }
        gi = v_mul(gi, gs);
        mi = v_fmadd(omb1, v_sub(gi, mi), mi);
        vi = v_fmadd(v_mul(omb2, gi), gi, v_mul(vb2, vi));
        pi = v_mul(pi, decay);
        vf den = v_add(v_div(v_sqrt(vi), sbc2), veps);
        pi = v_sub(pi, v_div(v_mul(step, mi), den));
        if (r == VW) { v_store(m + i, mi); v_store(v + i, vi); v_store(p + i, pi); }
        else { v_storen(m + i, mi, r); v_storen(v + i, vi, r); v_storen(p + i, pi, r); }
    }
}

/* ------------------------------------------------------------- layernorm */
SFN float row_sum(const float *x, int C) {
    vf a0 = v_zero(), a1 = v_zero();
    int j = 0;
    for (; j + 2 * VW <= C; j += 2 * VW) { a0 = v_add(a0, v_load(x + j)); a1 = v_add(a1, v_load(x + j + VW)); }
    for (; j + VW <= C; j += VW) a0 = v_add(a0, v_load(x + j));
    if (j < C) a1 = v_add(a1, v_loadn(x + j, C - j));
    return v_hsum(v_add(a0, a1));
}

/* normalise one row whose sum is known: mean, var (two-pass), write out */
SFN void ln_row(float *o, float *mean, float *rstd, const float *x, const float *w,
                const float *b, int C, float sum) {
    float m = sum / (float)C;
    vf vm = v_set1(m), a0 = v_zero(), a1 = v_zero();
    int j = 0;
    for (; j + 2 * VW <= C; j += 2 * VW) {
        vf d0 = v_sub(v_load(x + j), vm), d1 = v_sub(v_load(x + j + VW), vm);
        a0 = v_fmadd(d0, d0, a0);
        a1 = v_fmadd(d1, d1, a1);
    }
    for (; j + VW <= C; j += VW) { vf d = v_sub(v_load(x + j), vm); a0 = v_fmadd(d, d, a0); }
    if (j < C) { /* lanes past C load m, so they add (m - m)^2 = 0 */
        vf d = v_sub(v_loadn_fill(x + j, C - j, m), vm);
        a1 = v_fmadd(d, d, a1);
    }
    float var = v_hsum(v_add(a0, a1)) / (float)C;
    float s = 1.0f / sqrtf(var + 1e-5f);
    vf vs = v_set1(s);
    for (j = 0; j + VW <= C; j += VW)
        v_store(o + j, v_fmadd(v_mul(v_sub(v_load(x + j), vm), vs), v_load(w + j), v_load(b + j)));
    if (j < C) {
        int r = C - j;
        v_storen(o + j, v_fmadd(v_mul(v_sub(v_loadn(x + j, r), vm), vs), v_loadn(w + j, r), v_loadn(b + j, r)), r);
    }
    *mean = m;
    *rstd = s;
}

SOP void S(layernorm_fwd)(float *out, float *mean, float *rstd, const float *x,
                          const float *w, const float *b, int N, int C) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        ln_row(out + (size_t)i * C, mean + i, rstd + i, xi, w, b, C, row_sum(xi, C));
    }
}

/* res = a + b and its row sum in the same pass, then LN from the hot row */
SOP void S(residual_layernorm_fwd)(float *res, float *out, float *mean, float *rstd,
                                   const float *a, const float *b, const float *w,
                                   const float *bias, int N, int C) {
    for (int i = 0; i < N; i++) {
        size_t o = (size_t)i * C;
        const float *ai = a + o, *bi = b + o;
        float *ri = res + o;
        vf s0 = v_zero();
        int j = 0;
        for (; j + VW <= C; j += VW) {
            vf r = v_add(v_load(ai + j), v_load(bi + j));
            v_store(ri + j, r);
            s0 = v_add(s0, r);
        }
        if (j < C) {
            int rr = C - j;
            vf r = v_add(v_loadn(ai + j, rr), v_loadn(bi + j, rr));
            v_storen(ri + j, r, rr);
            s0 = v_add(s0, r);
        }
        ln_row(out + o, mean + i, rstd + i, ri, w, bias, C, v_hsum(s0));
    }
}

/* dx += ..., dw, db overwritten; dw/db accumulate in place across rows */
SOP void S(layernorm_bwd)(float *dx, float *dw, float *db, const float *dout,
                          const float *x, const float *w, const float *mean,
                          const float *rstd, int N, int C) {
    memset(dw, 0, sizeof(float) * (size_t)C);
    memset(db, 0, sizeof(float) * (size_t)C);
    for (int i = 0; i < N; i++) {
        const float *dy = dout + (size_t)i * C, *xi = x + (size_t)i * C;
        float *dxi = dx + (size_t)i * C;
        vf vm = v_set1(mean[i]), vs = v_set1(rstd[i]);
        vf a_dn = v_zero(), a_dnn = v_zero();
        int j = 0;
        for (; j + VW <= C; j += VW) {
            vf n = v_mul(v_sub(v_load(xi + j), vm), vs);
            vf dn = v_mul(v_load(w + j), v_load(dy + j));
            a_dn = v_add(a_dn, dn);
            a_dnn = v_fmadd(dn, n, a_dnn);
        }
        if (j < C) {
            int r = C - j;
            vf n = v_mul(v_sub(v_loadn(xi + j, r), vm), vs);
            vf dn = v_mul(v_loadn(w + j, r), v_loadn(dy + j, r)); /* 0 past C */
            a_dn = v_add(a_dn, dn);
            a_dnn = v_fmadd(dn, n, a_dnn);
        }
        vf dmean = v_set1(v_hsum(a_dn) / (float)C);
        vf dnmean = v_set1(v_hsum(a_dnn) / (float)C);
        for (j = 0; j < C; j += VW) {
            int r = C - j >= VW ? VW : C - j;
            vf xv, dyv, wv, dbv, dwv, dxv;
            if (r == VW) { xv = v_load(xi + j); dyv = v_load(dy + j); wv = v_load(w + j);
                          dbv = v_load(db + j); dwv = v_load(dw + j); dxv = v_load(dxi + j); }
            else { xv = v_loadn(xi + j, r); dyv = v_loadn(dy + j, r); wv = v_loadn(w + j, r);
                   dbv = v_loadn(db + j, r); dwv = v_loadn(dw + j, r); dxv = v_loadn(dxi + j, r); }
            vf n = v_mul(v_sub(xv, vm), vs);
            vf dn = v_mul(wv, dyv);
            dbv = v_add(dbv, dyv);
            dwv = v_fmadd(n, dyv, dwv);
            dxv = v_fmadd(v_fnmadd(n, dnmean, v_sub(dn, dmean)), vs, dxv);
            if (r == VW) { v_store(db + j, dbv); v_store(dw + j, dwv); v_store(dxi + j, dxv); }
            else { v_storen(db + j, dbv, r); v_storen(dw + j, dwv, r); v_storen(dxi + j, dxv, r); }
        }
    }
}


/* ---------------------------------------------------- softmax + x-entropy */
SFN float row_max(const float *x, int n) {
    vf m0 = v_set1(-INFINITY), m1 = v_set1(-INFINITY);
    int j = 0;
    for (; j + 2 * VW <= n; j += 2 * VW) { m0 = v_max(m0, v_load(x + j)); m1 = v_max(m1, v_load(x + j + VW)); }
    for (; j + VW <= n; j += VW) m0 = v_max(m0, v_load(x + j));
    if (j < n) m1 = v_max(m1, v_loadn_fill(x + j, n - j, -INFINITY));
    return v_hmax(v_max(m0, m1));
}

/* x[j] = exp(x[j] - m) in place; returns the sum */
SFN float row_exp_sum(float *x, int n, float m) {
    vf vm = v_set1(m), s0 = v_zero(), s1 = v_zero();
    int j = 0;
    /* four independent exps in flight; the sums in the order of the loop below */
    for (; j + 4 * VW <= n; j += 4 * VW) {
        vf e0 = v_exp(v_sub(v_load(x + j), vm)), e1 = v_exp(v_sub(v_load(x + j + VW), vm));
        vf e2 = v_exp(v_sub(v_load(x + j + 2 * VW), vm)), e3 = v_exp(v_sub(v_load(x + j + 3 * VW), vm));
        v_store(x + j, e0);
        v_store(x + j + VW, e1);
        v_store(x + j + 2 * VW, e2);
        v_store(x + j + 3 * VW, e3);
        s0 = v_add(v_add(s0, e0), e2);
        s1 = v_add(v_add(s1, e1), e3);
    }
    for (; j + 2 * VW <= n; j += 2 * VW) {
        vf e0 = v_exp(v_sub(v_load(x + j), vm)), e1 = v_exp(v_sub(v_load(x + j + VW), vm));
        v_store(x + j, e0);
        v_store(x + j + VW, e1);
        s0 = v_add(s0, e0);
        s1 = v_add(s1, e1);
    }
    for (; j + VW <= n; j += VW) { vf e = v_exp(v_sub(v_load(x + j), vm)); v_store(x + j, e); s0 = v_add(s0, e); }
    if (j < n) {
        int r = n - j;
        vf e = v_exp(v_sub(v_loadn_fill(x + j, r, -INFINITY), vm)); /* exp(-inf) -> 0 */
        v_storen(x + j, e, r);
        s1 = v_add(s1, e);
    }
    return v_hsum(v_add(s0, s1));
}

SFN void row_scale(float *x, int n, float s) {
    vf vs = v_set1(s);
    int j = 0;
    for (; j + VW <= n; j += VW) v_store(x + j, v_mul(v_load(x + j), vs));
    if (j < n) v_storen(x + j, v_mul(v_loadn(x + j, n - j), vs), n - j);
}

SFN void row_zero(float *x, int n) { if (n > 0) memset(x, 0, sizeof(float) * (size_t)n); }

/* max pass, then exp written in place with its sum (one exp per logit, the
 * reference takes two), then one scaling pass: the row stays in L1/L2. */
SOP void S(crossentropy_fused)(float *logits, float *losses, const int32_t *targets,
                               int N, int V, float dscale) {
    for (int i = 0; i < N; i++) {
        float *l = logits + (size_t)i * V;
        int tgt = targets[i];
        if (tgt < 0) { losses[i] = 0.0f; row_zero(l, V); continue; }
        float lt = l[tgt];
        float m = row_max(l, V);
        float sum = row_exp_sum(l, V, m);
        losses[i] = m + logf(sum) - lt;
        row_scale(l, V, dscale / sum);
        l[tgt] -= dscale;
    }
}

/* ------------------------------------------------------------- embedding */
SOP void S(embed_fwd)(float *out, const int32_t *ids, const float *wte,
                      const float *wpe, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t r = (size_t)b * T + t;
            S(residual_fwd)(out + r * C, wte + (size_t)ids[r] * C, wpe + (size_t)t * C, (size_t)C);
        }
}

SOP void S(embed_bwd)(float *dwte, float *dwpe, const float *dout,
                      const int32_t *ids, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t r = (size_t)b * T + t;
            const float *d = dout + r * C;
            float *de = dwte + (size_t)ids[r] * C, *dp = dwpe + (size_t)t * C;
            int j = 0;
            for (; j + VW <= C; j += VW) {
                vf g = v_load(d + j);
                v_store(de + j, v_add(v_load(de + j), g));
                v_store(dp + j, v_add(v_load(dp + j), g));
            }
            if (j < C) {
                int rr = C - j;
                vf g = v_loadn(d + j, rr);
                v_storen(de + j, v_add(v_loadn(de + j, rr), g), rr);
                v_storen(dp + j, v_add(v_loadn(dp + j, rr), g), rr);
            }
        }
}

/* -------------------------------------------------------------- bias grad */
/* column blocks of 4 vectors stay in registers over all N rows */
SOP void S(bias_grad)(float *db, const float *dout, int N, int OC) {
    int j = 0;
    for (; j + 4 * VW <= OC; j += 4 * VW) {
        vf a0 = v_zero(), a1 = v_zero(), a2 = v_zero(), a3 = v_zero();
        const float *d = dout + j;
        for (int i = 0; i < N; i++, d += OC) {
            a0 = v_add(a0, v_load(d));
            a1 = v_add(a1, v_load(d + VW));
            a2 = v_add(a2, v_load(d + 2 * VW));
            a3 = v_add(a3, v_load(d + 3 * VW));
        }
        v_store(db + j, a0); v_store(db + j + VW, a1);
        v_store(db + j + 2 * VW, a2); v_store(db + j + 3 * VW, a3);
    }
    for (; j < OC; j += VW) {
        int r = OC - j >= VW ? VW : OC - j;
        vf a = v_zero();
        const float *d = dout + j;
        for (int i = 0; i < N; i++, d += OC) a = v_add(a, r == VW ? v_load(d) : v_loadn(d, r));
        if (r == VW) v_store(db + j, a); else v_storen(db + j, a, r);
    }
}

/* ------------------------------------------------------------ inference */
SFN float dot_row(const float *a, const float *b, int n) {
    vf s0 = v_zero(), s1 = v_zero();
    int j = 0;
    for (; j + 2 * VW <= n; j += 2 * VW) {
        s0 = v_fmadd(v_load(a + j), v_load(b + j), s0);
        s1 = v_fmadd(v_load(a + j + VW), v_load(b + j + VW), s1);
    }
    for (; j + VW <= n; j += VW) s0 = v_fmadd(v_load(a + j), v_load(b + j), s0);
    if (j < n) s1 = v_fmadd(v_loadn(a + j, n - j), v_loadn(b + j, n - j), s1);
    return v_hsum(v_add(s0, s1));
}



/* a[k] += s * p[k*VW ...], k < 4 (full vectors; masked: n[k] lanes) */
SFN void fma4(vf a[4], vf s, const float *p) {
    for (int k = 0; k < 4; k++) a[k] = v_fmadd(s, v_load(p + k * VW), a[k]);
}
SFN void fma4n(vf a[4], vf s, const float *p, const int n[4]) {
    for (int k = 0; k < 4; k++) a[k] = v_fmadd(s, v_loadn(p + k * VW, n[k]), a[k]);
}
SFN int att_clamp(int n) { return n < 0 ? 0 : n > VW ? VW : n; }

/* Scores for 4*VW positions at a time from the transposed keys, 8
 * independent FMA chains (even / odd d) and no horizontal sums; the last,
 * partial block uses masked loads. The output keeps up to 4 vectors of it in
 * registers over all positions (8 chains: even / odd t). */
SOP void S(attention_step)(float *out, const float *q, const float *kt, const float *v, int len, int ldk,
                           int hs, float *scratch) {
    const vf vs = v_set1(1.0f / sqrtf((float)hs));
    for (int t = 0; t < len; t += 4 * VW) {
        vf a[4] = {v_zero(), v_zero(), v_zero(), v_zero()}, b[4] = {v_zero(), v_zero(), v_zero(), v_zero()};
        const float *k = kt + t;
        int n[4] = {att_clamp(len - t), att_clamp(len - t - VW), att_clamp(len - t - 2 * VW),
                    att_clamp(len - t - 3 * VW)};
        if (n[3] == VW) {
            int d = 0;
            for (; d + 2 <= hs; d += 2, k += 2 * (size_t)ldk) {
                fma4(a, v_set1(q[d]), k);
                fma4(b, v_set1(q[d + 1]), k + ldk);
            }
            if (d < hs) fma4(a, v_set1(q[d]), k);
        } else {
            for (int d = 0; d < hs; d++, k += ldk) fma4n(a, v_set1(q[d]), k, n);
        }
        for (int j = 0; j < 4; j++) v_storen(scratch + t + j * VW, v_mul(v_add(a[j], b[j]), vs), n[j]);
    }
    float m = row_max(scratch, len);
    float inv = 1.0f / row_exp_sum(scratch, len, m);
    for (int c = 0; c < hs; c += 4 * VW) {
        vf a[4] = {v_zero(), v_zero(), v_zero(), v_zero()}, b[4] = {v_zero(), v_zero(), v_zero(), v_zero()};
        int n[4] = {att_clamp(hs - c), att_clamp(hs - c - VW), att_clamp(hs - c - 2 * VW), att_clamp(hs - c - 3 * VW)};
        const float *vr = v + c;
        if (n[3] == VW) {
            int j = 0;
            for (; j + 2 <= len; j += 2, vr += 2 * (size_t)hs) {
                fma4(a, v_set1(scratch[j] * inv), vr);
                fma4(b, v_set1(scratch[j + 1] * inv), vr + hs);
            }
            if (j < len) fma4(a, v_set1(scratch[j] * inv), vr);
        } else {
            for (int j = 0; j < len; j++, vr += hs) fma4n(a, v_set1(scratch[j] * inv), vr, n);
        }
        for (int j = 0; j < 4; j++) v_storen(out + c + j * VW, v_add(a[j], b[j]), n[j]);
    }
}


/* the same per row as attention_step's softmax (row_max, row_exp_sum) */
SOP void S(softmax_causal)(float *s, int m, int len0, int ld) {
    int end = len0 + m - 1;
    for (int i = 0; i < m; i++) {
        float *r = s + (size_t)i * ld;
        int len = len0 + i, t = 0;
        float mx = row_max(r, len);
        vf inv = v_set1(1.0f / row_exp_sum(r, len, mx));
        for (; t + VW <= len; t += VW) v_store(r + t, v_mul(v_load(r + t), inv));
        if (t < len) v_storen(r + t, v_mul(v_loadn(r + t, len - t), inv), len - t);
        for (t = len; t < end; t++) r[t] = 0.0f;
    }
}

/* ------------------------------------------------------------- attention */
/* Causal attention, flash-style: per (batch, head), query rows go in strips
 * of ATT_MR; a strip's scores against keys 0..(its last row) are computed
 * into a small L1/L2-resident tile (fully masked key panels are never
 * touched), softmaxed while hot and multiplied into V. Only each row's
 * log-sum-exp leaves the kernel; backward recomputes P = exp(s - lse) per
 * strip instead of reading a stored T x T tensor. A whole score row of one
 * strip fits in cache at any context this project trains (T <= a few
 * thousand: 8 rows x T floats), so each row is softmaxed exactly in one go:
 * no running-max rescaling of the output is needed.
 *
 * The products run on a small register-blocked kernel instead of the
 * general GEMM: they are small (T x T x hs) and strided inside qkv, and the
 * causal triangle is skipped at strip granularity.
 *
 * strip: C[0:mr, 0:N] = alpha * sum_k A(r, k) B[k, 0:N], overwriting C, where
 * A(r, k) = A[r*a_rs + k*a_cs] (so A may be read transposed) and B is
 * row-major with row stride ldb. Columns go 2 vectors at a time with mr x 2
 * accumulators in registers; the ragged last block uses masked loads/stores. */
#if VW == 16
#ifndef ATT_MR_512
#define ATT_MR_512 8
#endif
#define ATT_MR ATT_MR_512
#else
#ifndef ATT_MR_256
#define ATT_MR_256 6
#endif
#define ATT_MR ATT_MR_256
#endif

SFN void strip_kernel(const int mr, int N, int K, float alpha, const float *A, size_t a_rs,
                      size_t a_cs, const float *Bm, size_t ldb, float *Cm, size_t ldc) {
    const vf va = v_set1(alpha);
    for (int j = 0; j < N; j += 2 * VW) {
        int nv = N - j;
        vf acc0[ATT_MR], acc1[ATT_MR];
        for (int r = 0; r < mr; r++) acc0[r] = acc1[r] = v_zero();
        const float *b = Bm + j, *a = A;
        if (nv >= 2 * VW) {
            for (int k = 0; k < K; k++, b += ldb, a += a_cs) {
                vf b0 = v_load(b), b1 = v_load(b + VW);
                for (int r = 0; r < mr; r++) {
                    vf ar = v_set1(a[r * a_rs]);
                    acc0[r] = v_fmadd(ar, b0, acc0[r]);
                    acc1[r] = v_fmadd(ar, b1, acc1[r]);
                }
            }
            for (int r = 0; r < mr; r++) {
                v_store(Cm + r * ldc + j, v_mul(acc0[r], va));
                v_store(Cm + r * ldc + j + VW, v_mul(acc1[r], va));
            }
        } else if (nv <= VW) { /* one ragged vector: no FMAs on an empty second one */
            for (int k = 0; k < K; k++, b += ldb, a += a_cs) {
                vf b0 = v_loadn(b, nv);
                for (int r = 0; r < mr; r++) acc0[r] = v_fmadd(v_set1(a[r * a_rs]), b0, acc0[r]);
            }
            for (int r = 0; r < mr; r++) v_storen(Cm + r * ldc + j, v_mul(acc0[r], va), nv);
        } else {
            int n0 = VW, n1 = nv - n0;
            for (int k = 0; k < K; k++, b += ldb, a += a_cs) {
                vf b0 = v_loadn(b, n0), b1 = v_loadn(b + VW, n1);
                for (int r = 0; r < mr; r++) {
                    vf ar = v_set1(a[r * a_rs]);
                    acc0[r] = v_fmadd(ar, b0, acc0[r]);
                    acc1[r] = v_fmadd(ar, b1, acc1[r]);
                }
            }
            for (int r = 0; r < mr; r++) {
                v_storen(Cm + r * ldc + j, v_mul(acc0[r], va), n0);
                if (n1 > 0) v_storen(Cm + r * ldc + j + VW, v_mul(acc1[r], va), n1);
            }
        }
    }
}

#define STRIP_CASE(m) case m: strip_kernel(m, N, K, alpha, A, a_rs, a_cs, Bm, ldb, Cm, ldc); break;
static void S(strip)(int mr, int N, int K, float alpha, const float *A, size_t a_rs, size_t a_cs,
                     const float *Bm, size_t ldb, float *Cm, size_t ldc) {
    switch (mr) {
        STRIP_CASE(1) STRIP_CASE(2) STRIP_CASE(3) STRIP_CASE(4) STRIP_CASE(5) STRIP_CASE(6)
#if ATT_MR > 6
        STRIP_CASE(7) STRIP_CASE(8)
#endif
#if ATT_MR > 8
        STRIP_CASE(9) STRIP_CASE(10) STRIP_CASE(11) STRIP_CASE(12)
#endif
    default: break;
    }
}
#undef STRIP_CASE

/* key panels: ATT_NB keys wide, the transposed operand of S = Q K^T and
 * dP = dO V^T; panel p holds dst[p*hs*NB + k*NB + c] = src[(p*NB + c)*ld + k]
 * (hs rows of NB contiguous keys, zero past T), so the product streams one
 * dense hs*NB*4-byte block per panel */
#define ATT_NB (2 * VW)

/* dst[i*ldd + c] = src[c*ld + i] for an 8 x 8 block (AVX shuffles: both
 * ISAs of this file have them) */
SFN void tr8x8(const float *src, size_t ld, float *dst, size_t ldd) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ld), r2 = _mm256_loadu_ps(src + 2 * ld),
           r3 = _mm256_loadu_ps(src + 3 * ld), r4 = _mm256_loadu_ps(src + 4 * ld),
           r5 = _mm256_loadu_ps(src + 5 * ld), r6 = _mm256_loadu_ps(src + 6 * ld),
           r7 = _mm256_loadu_ps(src + 7 * ld);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* pack the T x hs head operand src (rows strided by ld) into key panels */
SFN void pack_key_panels(float *dst, const float *src, int T, int hs, size_t ld) {
    int np = (T + ATT_NB - 1) / ATT_NB;
    for (int p = 0; p < np; p++) {
        float *d = dst + (size_t)p * hs * ATT_NB;
        int c0 = p * ATT_NB, nc = T - c0 < ATT_NB ? T - c0 : ATT_NB;
        const float *sp = src + (size_t)c0 * ld;
        int c = 0;
        for (; c + 8 <= nc; c += 8) {
            int k = 0;
            for (; k + 8 <= hs; k += 8) tr8x8(sp + (size_t)c * ld + k, ld, d + (size_t)k * ATT_NB + c, ATT_NB);
            for (; k < hs; k++)
                for (int i = 0; i < 8; i++) d[(size_t)k * ATT_NB + c + i] = sp[(size_t)(c + i) * ld + k];
        }
        for (; c < nc; c++)
            for (int k = 0; k < hs; k++) d[(size_t)k * ATT_NB + c] = sp[(size_t)c * ld + k];
        if (nc < ATT_NB)
            for (int k = 0; k < hs; k++) memset(d + (size_t)k * ATT_NB + nc, 0, sizeof(float) * (size_t)(ATT_NB - nc));
    }
}

/* Sc[0:mr, 0:jn) (row stride ldc) = alpha * A Kp^T over the panels covering
 * keys 0..jn-1 (the last one cut at jn, to the vector); A rows strided by lda */
SFN void scores_strip(int mr, int jn, int hs, float alpha, const float *A, size_t lda, const float *Kp,
                      float *Sc, size_t ldc) {
    for (int p = 0; p * ATT_NB < jn; p++) {
        int nc = jn - p * ATT_NB < ATT_NB ? jn - p * ATT_NB : ATT_NB;
        S(strip)(mr, nc, hs, alpha, A, lda, 1, Kp + (size_t)p * hs * ATT_NB, ATT_NB, Sc + p * ATT_NB, ldc);
    }
}

/* dst(T, hs) contiguous = src(T, hs) with rows strided by ld: the products
 * then walk one dense 4*T*hs-byte panel instead of T rows 12*C bytes apart */
SFN void pack_head(float *dst, const float *src, int T, int hs, size_t ld) {
    for (int t = 0; t < T; t++) memcpy(dst + (size_t)t * hs, src + (size_t)t * ld, sizeof(float) * (size_t)hs);
}

/* Forward, per (batch, head), per strip of ATT_MR query rows i0..: scores
 * against keys 0..i0+mr-1 into the strip tile, per row max / exp / sum
 * (zeros up to the strip's last key), lse = max + log(sum), then O = P V over
 * the same keys and each O row scaled by 1/sum.
 * ws: K^T panels (hs x Tp), the strip tile (ATT_MR x Tp). */
SOP void S(attention_fwd)(float *out, float *lse, const float *qkv, int B, int T,
                          int C, int NH, int u0, int u1, float *ws) {
    int hs = C / NH;
    size_t ld = 3 * (size_t)C, tp = CLLM_ATT_TPAD(T);
    float scale = 1.0f / sqrtf((float)hs);
    float *Kp = ws, *Sb = ws + (size_t)hs * tp;
    (void)B;
    for (int u = u0; u < u1; u++) {
        int b = u / NH, h = u % NH;
        const float *Q = qkv + (size_t)b * T * ld + (size_t)h * hs;
        const float *Vp = Q + 2 * (size_t)C;
        float *O = out + (size_t)b * T * C + (size_t)h * hs;
        float *L = lse + ((size_t)b * NH + h) * T;
        pack_key_panels(Kp, Q + C, T, hs, ld);
        for (int i0 = 0; i0 < T; i0 += ATT_MR) {
            int mr = T - i0 < ATT_MR ? T - i0 : ATT_MR, jn = i0 + mr;
            float inv[ATT_MR];
            scores_strip(mr, jn, hs, scale, Q + i0 * ld, ld, Kp, Sb, tp);
            for (int r = 0; r < mr; r++) {
                float *x = Sb + (size_t)r * tp;
                int n = i0 + r + 1;
                float m = row_max(x, n), sum = row_exp_sum(x, n, m);
                row_zero(x + n, jn - n);
                L[i0 + r] = m + logf(sum);
                inv[r] = 1.0f / sum;
            }
            S(strip)(mr, hs, jn, 1.0f, Sb, tp, 1, Vp, ld, O + (size_t)i0 * C, (size_t)C);
            for (int r = 0; r < mr; r++) row_scale(O + (size_t)(i0 + r) * C, hs, inv[r]);
        }
    }
}

/* one backward row: p = exp(s - lse) over [0, n) in place, then
 * d = p (d - <p, d>) scale (dS from dP), both zero over [n, jn). <p, d> over
 * the row's own recomputed p (not dO . O): the first row (p = 1) gets dS = 0
 * exactly, as the softmax's constant shift demands. */
SFN void att_bwd_row(float *p, float *d, int n, int jn, float lse, float scale) {
    vf vl = v_set1(lse), acc = v_zero();
    int j = 0;
    for (; j + VW <= n; j += VW) {
        vf pv = v_exp(v_sub(v_load(p + j), vl));
        v_store(p + j, pv);
        acc = v_fmadd(pv, v_load(d + j), acc);
    }
    if (j < n) {
        int r = n - j;
        vf pv = v_exp(v_sub(v_loadn(p + j, r), vl));
        v_storen(p + j, pv, r);
        acc = v_fmadd(pv, v_loadn(d + j, r), acc);
    }
    vf vD = v_set1(v_hsum(acc)), vs = v_set1(scale);
    for (j = 0; j + VW <= n; j += VW)
        v_store(d + j, v_mul(v_mul(v_load(p + j), v_sub(v_load(d + j), vD)), vs));
    if (j < n) {
        int r = n - j;
        v_storen(d + j, v_mul(v_mul(v_loadn(p + j, r), v_sub(v_loadn(d + j, r), vD)), vs), r);
    }
    row_zero(p + n, jn - n);
    row_zero(d + n, jn - n);
}

/* Backward, per (batch, head). Query strips: P recomputed from the scores
 * and lse, dP = dO V^T, dS = P (dP - <P, dP>) scale, both into the
 * head's T x Tp tiles (zeros above the diagonal up to each strip's last
 * key), dQ = dS K. Key strips j0..: dV = P^T dO and dK = dS^T Q over query
 * rows >= j0 only (the tiles stay in L2 for the T this project trains).
 * ws: P, dS tiles (T x Tp each), K^T and V^T panels (hs x Tp each), and for
 * T >= 128 K and Q packed dense (T x hs each). */
SOP void S(attention_bwd)(float *dqkv, const float *dout, const float *qkv, const float *lse, int B, int T,
                          int C, int NH, int u0, int u1, float *ws) {
    int hs = C / NH;
    size_t ld = 3 * (size_t)C, tp = CLLM_ATT_TPAD(T), tt = (size_t)T * tp;
    float scale = 1.0f / sqrtf((float)hs);
    /* long sequences: K and Q rows are 12*C bytes apart and walked many
     * times; a dense copy measured ~10% faster at T=256, slower at T=64 */
    int pack = T >= 128;
    size_t ldp = pack ? (size_t)hs : ld;
    float *Pb = ws, *Db = Pb + tt, *Kp = Db + tt, *Vp = Kp + (size_t)hs * tp;
    float *kd = Vp + (size_t)hs * tp, *qd = kd + (size_t)T * hs;
    (void)B;
    for (int u = u0; u < u1; u++) {
        const cllm_att_head a = cllm_att_head_at(qkv, dqkv, dout, lse, u / NH, u % NH, T, C, NH);
        const float *Q = a.Q, *K = a.K, *V = a.V, *dO = a.dO, *L = a.L;
        float *dQ = a.dQ, *dK = a.dK, *dV = a.dV;
        pack_key_panels(Kp, K, T, hs, ld);
        pack_key_panels(Vp, V, T, hs, ld);
        const float *Kc = K, *Qc = Q;
        if (pack) {
            pack_head(kd, K, T, hs, ld);
            pack_head(qd, Q, T, hs, ld);
            Kc = kd;
            Qc = qd;
        }
        for (int i0 = 0; i0 < T; i0 += ATT_MR) {
            int mr = T - i0 < ATT_MR ? T - i0 : ATT_MR, jn = i0 + mr;
            float *Pi = Pb + (size_t)i0 * tp, *Di = Db + (size_t)i0 * tp;
            scores_strip(mr, jn, hs, scale, Q + i0 * ld, ld, Kp, Pi, tp);
            scores_strip(mr, jn, hs, 1.0f, dO + (size_t)i0 * C, (size_t)C, Vp, Di, tp);
            for (int r = 0; r < mr; r++)
                att_bwd_row(Pi + (size_t)r * tp, Di + (size_t)r * tp, i0 + r + 1, jn, L[i0 + r], scale);
            S(strip)(mr, hs, jn, 1.0f, Di, tp, 1, Kc, ldp, dQ + i0 * ld, ld);
        }
        for (int j0 = 0; j0 < T; j0 += ATT_MR) {
            int mr = T - j0 < ATT_MR ? T - j0 : ATT_MR, m = T - j0;
            size_t pj = (size_t)j0 * tp + j0;
            S(strip)(mr, hs, m, 1.0f, Pb + pj, 1, tp, dO + (size_t)j0 * C, (size_t)C, dV + j0 * ld, ld);
            S(strip)(mr, hs, m, 1.0f, Db + pj, 1, tp, Qc + j0 * ldp, ldp, dK + j0 * ld, ld);
        }
    }
}

/* gelu_bwd + bias_grad fused: each dx row is summed into db while in registers */
SOP void S(gelu_bwd_bias)(float *dx, float *db, const float *x, const float *dout,
                          int N, int OC) {
    memset(db, 0, sizeof(float) * (size_t)OC);
    for (int i = 0; i < N; i++) {
        size_t o = (size_t)i * OC;
        int j = 0;
        for (; j + 4 * VW <= OC; j += 4 * VW) {
            vf g0 = v_gelu_grad(v_load(x + o + j), v_load(dout + o + j));
            vf g1 = v_gelu_grad(v_load(x + o + j + VW), v_load(dout + o + j + VW));
            vf g2 = v_gelu_grad(v_load(x + o + j + 2 * VW), v_load(dout + o + j + 2 * VW));
            vf g3 = v_gelu_grad(v_load(x + o + j + 3 * VW), v_load(dout + o + j + 3 * VW));
            v_store(dx + o + j, g0);
            v_store(dx + o + j + VW, g1);
            v_store(dx + o + j + 2 * VW, g2);
            v_store(dx + o + j + 3 * VW, g3);
            v_store(db + j, v_add(v_load(db + j), g0));
            v_store(db + j + VW, v_add(v_load(db + j + VW), g1));
            v_store(db + j + 2 * VW, v_add(v_load(db + j + 2 * VW), g2));
            v_store(db + j + 3 * VW, v_add(v_load(db + j + 3 * VW), g3));
        }
        for (; j + VW <= OC; j += VW) {
            vf g = v_gelu_grad(v_load(x + o + j), v_load(dout + o + j));
            v_store(dx + o + j, g);
            v_store(db + j, v_add(v_load(db + j), g));
        }
        if (j < OC) {
            int r = OC - j;
            vf g = v_gelu_grad(v_loadn(x + o + j, r), v_loadn(dout + o + j, r));
            v_storen(dx + o + j, g, r);
            v_storen(db + j, v_add(v_loadn(db + j, r), g), r);
        }
    }
}

/* ------------------------------------------- decoder FP32 matvecs (qmatvec.h) */
/* f32_rows: y[r] = dot(x, W[r]) + bias[r], r in [lo, hi), one row per pass
 * (one sequential stream for the prefetchers) with four accumulators; the
 * ragged tail goes through a masked load into the second one. */
void SCAT(cllm_f32_rows, KSFX)(float *y, const float *W, const float *x, const float *bias, int cols, int lo,
                               int hi) {
    int n4 = cols / (4 * VW) * (4 * VW), n1 = cols / VW * VW, t = cols - n1;
    for (int r = lo; r < hi; r++) {
        const float *w = W + (size_t)r * cols;
        vf a0 = v_zero(), a1 = a0, a2 = a0, a3 = a0;
        int i = 0;
        for (; i < n4; i += 4 * VW) {
            a0 = v_fmadd(v_load(x + i), v_load(w + i), a0);
            a1 = v_fmadd(v_load(x + i + VW), v_load(w + i + VW), a1);
            a2 = v_fmadd(v_load(x + i + 2 * VW), v_load(w + i + 2 * VW), a2);
            a3 = v_fmadd(v_load(x + i + 3 * VW), v_load(w + i + 3 * VW), a3);
        }
        for (; i < n1; i += VW) a0 = v_fmadd(v_load(x + i), v_load(w + i), a0);
        if (t) a1 = v_fmadd(v_loadn(x + n1, t), v_loadn(w + n1, t), a1);
        y[r] = v_hsum(v_add(v_add(a0, a1), v_add(a2, a3))) + (bias ? bias[r] : 0.0f);
    }
}

/* ---------------------------------------------------- this ISA's op table */
const cllm_ops SCAT(cllm_ops, KSFX) = {
    .name = KNAME,
    .isa = KISA,
#define OP CLLM_OPS_SIMD_FIELD
#include "ops_list.h"
#undef OP
};
