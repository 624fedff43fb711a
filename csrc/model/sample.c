/* sample.c - next-token sampling from logits: greedy, temperature, top-k
 * and top-p (nucleus), driven by the caller's splitmix64 state. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

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
