/* internal.h - helpers shared by the C core (never read by cffi). */
#ifndef CLLM_INTERNAL_H
#define CLLM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "cllm.h"

#define CLLM_EXPORT __attribute__((visibility("default")))
#define CLLM_ALIGN 64

/* The monotonic clock, in nanoseconds and in seconds. */
static inline uint64_t cllm_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
static inline double cllm_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Set the thread-local error message; returns code so callers can
 * `return cllm_fail(CLLM_ERR_INVALID, "...", ...)`. */
int cllm_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cllm_clear_error(void);
/* Copy/restore a message across threads (spheres carry worker errors back). */
void cllm_error_copy(char *dst, size_t cap);
void cllm_error_set_raw(const char *msg);

void *cllm_aligned_alloc(size_t bytes);   /* zeroed, 64-byte aligned, NULL on failure */
void cllm_aligned_free(void *p);
/* FREE_EACH(free, a, b, ...): free(a); free(b); ... (any release function) */
#define FREE_EACH(release, ...)                                                   \
    do {                                                                          \
        void *each_[] = {__VA_ARGS__};                                            \
        for (size_t i_ = 0; i_ < sizeof each_ / sizeof each_[0]; i_++) release(each_[i_]); \
    } while (0)
/* Per-thread scratch buffer `slot` of at least `bytes` (64-byte aligned, not
 * zeroed, grown on demand, freed at thread exit); NULL on failure. */
enum { CLLM_SCRATCH_SGEMM = 0, CLLM_SCRATCH_BGEMM = 1, CLLM_SCRATCH_SLOTS = 2 };
void *cllm_thread_scratch(int slot, size_t bytes);

/* ISA currently selected (CLLM_ISA_SCALAR/AVX2/AVX512). */
int cllm_isa_current(void);

/* Data cache sizes of the core we run on (cllm_cache_info, cllm.h),
 * detected once (cpu.c). */
const cllm_cache_info *cllm_caches(void);

#define CLLM_CHECK_PTR(p, name) \
    do { if (!(p)) return cllm_fail(CLLM_ERR_INVALID, "%s: %s is NULL", __func__, name); } while (0)

/* Defines the exported accessor `int NAME(const HTYPE *h, OTYPE *out)`:
 * both pointers checked (CLLM_ERR_INVALID naming the NULL one), then
 * *out = EXPR, an expression of the handle h. */
#define CLLM_GETTER(NAME, HTYPE, HNAME, OTYPE, EXPR)        \
    CLLM_EXPORT int NAME(const HTYPE *h, OTYPE *out) {      \
        CLLM_CHECK_PTR(h, HNAME);                           \
        CLLM_CHECK_PTR(out, "out");                         \
        *out = (EXPR);                                      \
        return CLLM_OK;                                     \
    }

#endif
