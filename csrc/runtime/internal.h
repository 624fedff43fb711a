/* internal.h - helpers shared by the C core (never read by cffi). */
#ifndef CLLM_INTERNAL_H
#define CLLM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "cllm.h"

#define CLLM_EXPORT __attribute__((visibility("default")))
#define CLLM_ALIGN 64

/* Set the thread-local error message; returns code so callers can
 * `return cllm_fail(CLLM_ERR_INVALID, "...", ...)`. */
int cllm_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cllm_clear_error(void);
/* Copy/restore a message across threads (spheres carry worker errors back). */
void cllm_error_copy(char *dst, size_t cap);
void cllm_error_set_raw(const char *msg);

void *cllm_aligned_alloc(size_t bytes);   /* zeroed, 64-byte aligned, NULL on failure */
void cllm_aligned_free(void *p);

/* ISA currently selected (CLLM_ISA_SCALAR/AVX2/AVX512). */
int cllm_isa_current(void);

/* Data cache sizes in bytes of the core we run on, detected once (cpu.c).
 * l3 = 0 if unknown; l3_sharing = logical CPUs sharing the L3;
 * source: 1 CPUID, 2 sysfs, 0 defaults. */
typedef struct {
    int64_t l1d, l2, l3;
    int l3_sharing, source;
} cllm_cache_info;
const cllm_cache_info *cllm_caches(void);

#define CLLM_CHECK_PTR(p, name) \
    do { if (!(p)) return cllm_fail(CLLM_ERR_INVALID, "%s: %s is NULL", __func__, name); } while (0)

#endif
