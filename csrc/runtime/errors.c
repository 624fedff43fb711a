/* errors.c - the thread-local error message behind cllm_last_error(), the
 * helpers that set and copy it (cllm_fail, ...), and cllm_version. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "internal.h"

static _Thread_local char g_err[512];

int cllm_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return code;
}
void cllm_clear_error(void) { g_err[0] = 0; }
void cllm_error_copy(char *dst, size_t cap) {
    if (cap) { strncpy(dst, g_err, cap - 1); dst[cap - 1] = 0; }
}
void cllm_error_set_raw(const char *msg) {
    strncpy(g_err, msg ? msg : "", sizeof g_err - 1);
    g_err[sizeof g_err - 1] = 0;
}
CLLM_EXPORT const char *cllm_last_error(void) { return g_err; }

CLLM_EXPORT int cllm_version(int *major, int *minor, int *patch) {
    if (major) *major = 0;
    if (minor) *minor = 1;
    if (patch) *patch = 0;
    return CLLM_OK;
}
