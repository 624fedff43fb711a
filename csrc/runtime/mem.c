/* mem.c - 64-byte aligned, zeroed allocation used for every large buffer. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

void *cllm_aligned_alloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = CLLM_ALIGN;
    if (posix_memalign(&p, CLLM_ALIGN, bytes) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}
void cllm_aligned_free(void *p) { free(p); }
