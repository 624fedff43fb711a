/* cpu.c - CPU feature detection (CPUID, XGETBV), the selected ISA
 * (CLLM_ISA env, cllm_set_isa) and the usable CPU count. */
#define _GNU_SOURCE
#include <cpuid.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"

/* ------------------------------------------------------------ cpuid */
static int g_has_avx2 = -1, g_has_avx512 = 0;

static unsigned long long xgetbv0(void) {
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static void detect(void) {
    if (g_has_avx2 >= 0) return;
    unsigned int a, b, c, d;
    int avx2 = 0, avx512 = 0;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
        if (osxsave && avx) {
            unsigned long long xcr0 = xgetbv0();
            int ymm_ok = (xcr0 & 0x6) == 0x6;
            int zmm_ok = (xcr0 & 0xe6) == 0xe6;
            if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
                int has_avx2 = (b >> 5) & 1;
                int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
                avx2 = ymm_ok && has_avx2 && fma;
                avx512 = avx2 && zmm_ok && f && dq && bw && vl;
            }
        }
    }
    g_has_avx512 = avx512;
    g_has_avx2 = avx2;
}

CLLM_EXPORT int cllm_cpu_detect(int *has_avx2_fma, int *has_avx512) {
    detect();
    if (has_avx2_fma) *has_avx2_fma = g_has_avx2;
    if (has_avx512) *has_avx512 = g_has_avx512;
    return CLLM_OK;
}

static int g_isa = -2; /* -2: not chosen yet */

static int best_isa(void) {
    detect();
    return g_has_avx512 ? CLLM_ISA_AVX512 : g_has_avx2 ? CLLM_ISA_AVX2 : CLLM_ISA_SCALAR;
}

static int isa_supported(int isa) {
    detect();
    switch (isa) {
    case CLLM_ISA_SCALAR: return 1;
    case CLLM_ISA_AVX2: return g_has_avx2;
    case CLLM_ISA_AVX512: return g_has_avx512;
    default: return 0;
    }
}

static void choose_initial(void) {
    if (g_isa != -2) return;
    int isa = best_isa();
    const char *env = getenv("CLLM_ISA");
    if (env && *env) {
        int want = -3;
        if (!strcmp(env, "scalar")) want = CLLM_ISA_SCALAR;
        else if (!strcmp(env, "avx2")) want = CLLM_ISA_AVX2;
        else if (!strcmp(env, "avx512")) want = CLLM_ISA_AVX512;
        else if (!strcmp(env, "auto")) want = isa;
        if (want >= 0 && isa_supported(want)) isa = want;
        else fprintf(stderr, "cllm: ignoring CLLM_ISA=%s (unknown or not supported by this CPU)\n", env);
    }
    g_isa = isa;
}

CLLM_EXPORT int cllm_set_isa(int isa) {
    if (isa == CLLM_ISA_AUTO) { g_isa = best_isa(); return CLLM_OK; }
    if (isa < CLLM_ISA_SCALAR || isa > CLLM_ISA_AVX512)
        return cllm_fail(CLLM_ERR_INVALID, "set_isa: unknown ISA %d", isa);
    if (!isa_supported(isa))
        return cllm_fail(CLLM_ERR_UNSUPPORTED, "set_isa: %s is not supported by this CPU",
                         isa == CLLM_ISA_AVX2 ? "avx2" : "avx512");
    g_isa = isa;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_get_isa(int *isa) {
    CLLM_CHECK_PTR(isa, "isa");
    choose_initial();
    *isa = g_isa;
    return CLLM_OK;
}

int cllm_isa_current(void) {
    choose_initial();
    return g_isa;
}

CLLM_EXPORT int cllm_cpu_count(int *n) {
    CLLM_CHECK_PTR(n, "n");
    cpu_set_t set;
    CPU_ZERO(&set);
    int c = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0) c = CPU_COUNT(&set);
    if (c <= 0) {
        long s = sysconf(_SC_NPROCESSORS_ONLN);
        c = s > 0 ? (int)s : 1;
    }
    *n = c;
    return CLLM_OK;
}
