/* spheres.c - PLACEHOLDER: runs every sphere's task on the calling thread in
 * order. The real kissing-sphere pthread pool replaces this file. */
#include <stdlib.h>
#include "internal.h"
#include "spheres.h"

struct cllm_spheres { int n; };

CLLM_EXPORT int cllm_spheres_new(int threads, cllm_spheres **out) {
    CLLM_CHECK_PTR(out, "out");
    *out = NULL;
    if (threads < 0) return cllm_fail(CLLM_ERR_INVALID, "spheres: threads must be >= 0, got %d", threads);
    if (threads == 0) cllm_cpu_count(&threads);
    cllm_spheres *s = calloc(1, sizeof *s);
    if (!s) return cllm_fail(CLLM_ERR_NOMEM, "spheres: out of memory");
    s->n = threads;
    *out = s;
    return CLLM_OK;
}
CLLM_EXPORT int cllm_spheres_free(cllm_spheres *s) { free(s); return CLLM_OK; }
CLLM_EXPORT int cllm_spheres_count(const cllm_spheres *s, int *n) {
    CLLM_CHECK_PTR(s, "s"); CLLM_CHECK_PTR(n, "n");
    *n = s->n; return CLLM_OK;
}
CLLM_EXPORT int cllm_spheres_stats(const cllm_spheres *s, cllm_sphere_stats *out, int cap, int *n) {
    CLLM_CHECK_PTR(s, "s"); CLLM_CHECK_PTR(n, "n");
    *n = s->n;
    for (int i = 0; i < s->n && i < cap; i++) {
        out[i].sphere = i; out[i].parent = i ? (i - 1) / 12 : -1;
        out[i].tasks = 0; out[i].busy_seconds = 0; out[i].busy_fraction = 0;
    }
    return CLLM_OK;
}
CLLM_EXPORT int cllm_spheres_reset_stats(cllm_spheres *s) { CLLM_CHECK_PTR(s, "s"); return CLLM_OK; }
int cllm_spheres_run(cllm_spheres *s, cllm_sphere_fn fn, void *arg) {
    int first = 0;
    for (int i = 0; i < s->n; i++) {
        int rc = fn(arg, i, s->n);
        if (rc && !first) first = rc;
    }
    return first;
}
