/* sample.c - next-token sampling from logits by partial selection.
 *
 * Candidates are all V ids, or a caller-given subset (token healing). The
 * candidates are ordered by (probability desc, id asc), a strict total order,
 * so every selection below is unique whatever the pivots:
 *   greedy (temperature <= 0 or top_k == 1): one O(n) argmax scan;
 *   top-k: quickselect moves the k best candidates to the front, O(n);
 *   top-p: a mass-guided quickselect finds the smallest prefix (in that
 *     order) whose probability mass reaches top_p, O(n) expected;
 *   then one uniform draw walks the kept candidates.
 * No sort of the vocabulary and no allocation (the caller owns scratch).
 */
#include <math.h>
#include "runtime/internal.h"
#include "rng.h"
#include "sample.h"

/* a strictly before b in (prob desc, id asc) */
static inline int before(const float *p, const int32_t *id, int a, int b) {
    return p[a] > p[b] || (p[a] == p[b] && id[a] < id[b]);
}

static inline void swap2(float *p, int32_t *id, int a, int b) {
    float t = p[a]; p[a] = p[b]; p[b] = t;
    int32_t u = id[a]; id[a] = id[b]; id[b] = u;
}

/* Partition [lo, hi) around a median-of-three pivot: returns m with
 * [lo, m) before the pivot, the pivot at m, (m, hi) after it. */
static int partition(float *p, int32_t *id, int lo, int hi) {
    int mid = lo + (hi - lo) / 2, last = hi - 1;
    if (before(p, id, mid, lo)) swap2(p, id, mid, lo);
    if (before(p, id, last, lo)) swap2(p, id, last, lo);
    if (before(p, id, last, mid)) swap2(p, id, last, mid);
    swap2(p, id, mid, last);   /* median to the end */
    int store = lo;
    for (int i = lo; i < last; i++)
        if (before(p, id, i, last)) swap2(p, id, i, store++);
    swap2(p, id, store, last);
    return store;
}

/* Reorder so that [0, k) holds the k first candidates (any order). */
static void select_top_k(float *p, int32_t *id, int n, int k) {
    int lo = 0, hi = n;
    while (hi - lo > 1) {
        int m = partition(p, id, lo, hi);
        if (m < k) lo = m + 1;
        else if (m > k) hi = m;
        else return;
    }
}

/* Smallest prefix (in candidate order) with mass >= need; reorders so that
 * prefix is [0, result). */
static int select_mass(float *p, int32_t *id, int n, double need) {
    int lo = 0, hi = n;
    while (lo < hi) {
        if (hi - lo == 1) return lo + 1;
        int m = partition(p, id, lo, hi);
        double upper = 0.0;
        for (int i = lo; i < m; i++) upper += p[i];
        if (upper >= need) { hi = m; continue; }   /* answer lies within [lo, m) */
        upper += p[m];
        if (upper >= need) return m + 1;
        need -= upper;
        lo = m + 1;
    }
    return lo > 0 ? lo : 1;
}

int cllm_sample_logits(const float *logits, int V, float temperature, int top_k, float top_p,
                       const int32_t *allowed, int n_allowed, uint64_t *rng, float *prob, int32_t *idx,
                       int32_t *out) {
    if (isnan(temperature) || isnan(top_p))
        return cllm_fail(CLLM_ERR_INVALID, "sample: temperature and top_p must not be NaN");
    if (top_p <= 0.0f) return cllm_fail(CLLM_ERR_INVALID, "sample: top_p must be > 0, got %g", top_p);
    if (top_k < 0) return cllm_fail(CLLM_ERR_INVALID, "sample: top_k must be >= 0, got %d", top_k);
    int n = allowed ? n_allowed : V;
    if (n <= 0) return cllm_fail(CLLM_ERR_INVALID, "sample: no candidate tokens");
    for (int j = 0; j < n; j++) {
        int32_t t = allowed ? allowed[j] : j;
        if (t < 0 || t >= V) return cllm_fail(CLLM_ERR_RANGE, "sample: allowed token id %d out of range [0, %d)", t, V);
        if (isnan(logits[t])) return cllm_fail(CLLM_ERR_NUMERIC, "sample: logits contain NaN");
        idx[j] = t;
    }
    int best = 0;
    for (int j = 1; j < n; j++)
        if (logits[idx[j]] > logits[idx[best]] || (logits[idx[j]] == logits[idx[best]] && idx[j] < idx[best]))
            best = j;
    if (temperature <= 0.0f || top_k == 1 || n == 1) { *out = idx[best]; return CLLM_OK; }
    float mx = logits[idx[best]], invt = 1.0f / temperature;
    for (int j = 0; j < n; j++) prob[j] = expf((logits[idx[j]] - mx) * invt);
    if (top_k > 0 && top_k < n) {
        select_top_k(prob, idx, n, top_k);
        n = top_k;
    }
    double mass = 0.0;
    for (int j = 0; j < n; j++) mass += prob[j];
    if (top_p < 1.0f) {
        n = select_mass(prob, idx, n, (double)top_p * mass);
        mass = 0.0;
        for (int j = 0; j < n; j++) mass += prob[j];
    }
    double r = rng_uniform(rng) * mass, cum = 0.0;
    for (int j = 0; j < n; j++) {
        cum += prob[j];
        if (r < cum) { *out = idx[j]; return CLLM_OK; }
    }
    *out = idx[n - 1];
    return CLLM_OK;
}

/* Standalone sampling (tests; the decoder calls cllm_sample_logits). */
CLLM_EXPORT int cllm_sample(const float *logits, int V, float temperature, int top_k, float top_p,
                            const int32_t *allowed, int n_allowed, uint64_t *rng, float *prob_scratch,
                            int32_t *idx_scratch, int32_t *out) {
    CLLM_CHECK_PTR(logits, "logits"); CLLM_CHECK_PTR(rng, "rng"); CLLM_CHECK_PTR(out, "out");
    CLLM_CHECK_PTR(prob_scratch, "prob_scratch"); CLLM_CHECK_PTR(idx_scratch, "idx_scratch");
    if (V < 1) return cllm_fail(CLLM_ERR_INVALID, "sample: V must be >= 1, got %d", V);
    if (allowed && (n_allowed < 1 || n_allowed > V))
        return cllm_fail(CLLM_ERR_RANGE, "sample: n_allowed must be in [1, %d], got %d", V, n_allowed);
    return cllm_sample_logits(logits, V, temperature, top_k, top_p, allowed, n_allowed, rng, prob_scratch,
                              idx_scratch, out);
}
