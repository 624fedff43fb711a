/* spheres.h - internal task interface of the kissing-sphere pool. */
#ifndef CLLM_SPHERES_H
#define CLLM_SPHERES_H
#include "cllm.h"

/* A task runs once on every sphere: fn(arg, sphere, nspheres). It returns 0
 * or a negative cllm error code (after cllm_fail on its own thread). */
typedef int (*cllm_sphere_fn)(void *arg, int sphere, int nspheres);

/* Run fn on all spheres (sphere 0 on the caller) and wait for all of them.
 * Wake-up goes down the tree, completion comes back up it. Returns 0, or the
 * error of the lowest-numbered failing sphere, whose message is copied into
 * the caller's thread-local error. Not re-entrant: do not call from inside
 * a task. */
int cllm_spheres_run(cllm_spheres *s, cllm_sphere_fn fn, void *arg);

/* Barrier inside a running task: returns once every sphere of the pool has
 * called it (each sphere must call it the same number of times in a task, so
 * a task that uses barriers must not return early on some spheres). Spins
 * for a short bounded time, then sleeps on a futex. No-op with one sphere. */
void cllm_spheres_barrier(cllm_spheres *s);

/* Even split helper: [*lo, *hi) of n items for part i of parts. */
static inline void cllm_split(long n, int i, int parts, long *lo, long *hi) {
    long base = n / parts, rem = n % parts;
    *lo = (long)i * base + (i < rem ? i : rem);
    *hi = *lo + base + (i < rem ? 1 : 0);
}
#endif
