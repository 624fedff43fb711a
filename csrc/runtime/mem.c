/* mem.c - 64-byte aligned, zeroed allocation used for every large buffer, and
 * the per-thread scratch buffers of the public single-call entries. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* calloc, aligned by hand (the block's own address is kept just below the
 * aligned one): large blocks come from fresh mmap'd pages, which calloc
 * knows are zero and does not write, so memory that is never used (a
 * sphere's gradient buffer for the tensors the step computes batch-wide)
 * never becomes resident. */
void *cllm_aligned_alloc(size_t bytes) {
    if (bytes == 0) bytes = CLLM_ALIGN;
    if (bytes > SIZE_MAX - CLLM_ALIGN - sizeof(void *)) return NULL;
    void *raw = calloc(1, bytes + CLLM_ALIGN + sizeof(void *));
    if (!raw) return NULL;
    uintptr_t a = ((uintptr_t)raw + sizeof(void *) + CLLM_ALIGN - 1) & ~(uintptr_t)(CLLM_ALIGN - 1);
    ((void **)a)[-1] = raw;
    return (void *)a;
}
void cllm_aligned_free(void *p) {
    if (p) free(((void **)p)[-1]);
}

/* Per-thread scratch: one pthread key holds a small table of (pointer, size)
 * slots; a slot grows on demand and everything is freed when the thread
 * exits. The public GEMM entries use it so that a call does not pay for a
 * fresh multi-megabyte block (page faults dominate small products). */
typedef struct { void *p[CLLM_SCRATCH_SLOTS]; size_t n[CLLM_SCRATCH_SLOTS]; } scratch_tab;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_scratch_key;
static int g_scratch_ok;

static void scratch_free(void *v) {
    scratch_tab *t = v;
    for (int i = 0; i < CLLM_SCRATCH_SLOTS; i++) free(t->p[i]);
    free(t);
}
static void scratch_key_init(void) { g_scratch_ok = pthread_key_create(&g_scratch_key, scratch_free) == 0; }

void *cllm_thread_scratch(int slot, size_t bytes) {
    if (slot < 0 || slot >= CLLM_SCRATCH_SLOTS) return NULL;
    pthread_once(&g_scratch_once, scratch_key_init);
    if (!g_scratch_ok) return NULL;
    scratch_tab *t = pthread_getspecific(g_scratch_key);
    if (!t) {
        if (!(t = calloc(1, sizeof *t))) return NULL;
        if (pthread_setspecific(g_scratch_key, t) != 0) { free(t); return NULL; }
    }
    if (t->n[slot] >= bytes && t->p[slot]) return t->p[slot];
    void *p = NULL; /* not zeroed: the users write every byte they read */
    if (posix_memalign(&p, CLLM_ALIGN, bytes ? bytes : CLLM_ALIGN) != 0 || !p) return NULL;
    free(t->p[slot]);
    t->p[slot] = p;
    t->n[slot] = bytes;
    return p;
}
