/* cpu.c - CPU feature detection (CPUID, XGETBV), the selected ISA
 * (CLLM_ISA env, cllm_set_isa), the usable CPU count and the data cache
 * sizes (CPUID leaf 4 / 0x8000001D, else sysfs). */
#define _GNU_SOURCE
#include <cpuid.h>
#include <pthread.h>
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

/* ------------------------------------------------------------ caches */
static pthread_once_t g_cache_once = PTHREAD_ONCE_INIT;
static cllm_cache_info g_cache;

/* Deterministic cache parameters (Intel leaf 4, AMD leaf 0x8000001D: same
 * layout). Fills levels 1..3 of data/unified caches; returns 1 if L1d and L2
 * were found. */
static int caches_from_cpuid(cllm_cache_info *ci) {
    unsigned int a, b, c, d, leaf = 4;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return 0;
    int amd = b == 0x68747541u /* "Auth"enticAMD */ || b == 0x6f677948u /* "Hygo"nGenuine */;
    if (amd) {
        unsigned int ext = __get_cpuid_max(0x80000000u, NULL);
        if (ext < 0x8000001Du || !__get_cpuid(0x80000001u, &a, &b, &c, &d) || !((c >> 22) & 1)) return 0;
        leaf = 0x8000001Du; /* needs the TopologyExtensions bit */
    } else if (a < 4) {
        return 0;
    }
    for (unsigned int i = 0; i < 16; i++) {
        __cpuid_count(leaf, i, a, b, c, d);
        int type = a & 31, level = (a >> 5) & 7;
        if (type == 0) break;
        if (type == 2) continue; /* instruction cache */
        int64_t size = (int64_t)(((b >> 22) & 1023) + 1) * (((b >> 12) & 1023) + 1) * ((b & 4095) + 1) * ((int64_t)c + 1);
        int sharing = (int)((a >> 14) & 4095) + 1;
        if (level == 1) ci->l1d = size;
        else if (level == 2) ci->l2 = size;
        else if (level == 3) { ci->l3 = size; ci->l3_sharing = sharing; }
    }
    return ci->l1d > 0 && ci->l2 > 0;
}

/* /sys/devices/system/cpu/cpu0/cache/index<i>/{level,type,size} */
static int caches_from_sysfs(cllm_cache_info *ci) {
    char path[96], buf[64];
    for (int i = 0; i < 8; i++) {
        int level = 0;
        int64_t size = 0;
        char type[32] = "";
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        FILE *f = fopen(path, "r");
        if (!f) break;
        if (fgets(buf, sizeof buf, f)) level = atoi(buf);
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", i);
        if ((f = fopen(path, "r"))) { if (!fgets(type, sizeof type, f)) type[0] = 0; fclose(f); }
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        if ((f = fopen(path, "r"))) {
            if (fgets(buf, sizeof buf, f)) {
                char *end;
                size = strtoll(buf, &end, 10);
                if (*end == 'K') size <<= 10;
                else if (*end == 'M') size <<= 20;
            }
            fclose(f);
        }
        if (!strncmp(type, "Instruction", 11) || size <= 0) continue;
        if (level == 1) ci->l1d = size;
        else if (level == 2) ci->l2 = size;
        else if (level == 3) ci->l3 = size;
    }
    return ci->l1d > 0 && ci->l2 > 0;
}

static void detect_caches(void) {
    cllm_cache_info ci = {0};
    ci.l3_sharing = 1;
    if (caches_from_cpuid(&ci)) ci.source = 1;
    else {
        cllm_cache_info s = {0};
        s.l3_sharing = 1;
        if (caches_from_sysfs(&s)) { ci = s; ci.source = 2; }
    }
    /* fill what is still unknown with common sizes */
    if (ci.l1d <= 0) ci.l1d = 32 << 10;
    if (ci.l2 <= 0) ci.l2 = 256 << 10;
    if (ci.l3 <= 0) { ci.l3 = 0; ci.l3_sharing = 1; }
    if (ci.l3_sharing < 1) ci.l3_sharing = 1;
    g_cache = ci;
}

const cllm_cache_info *cllm_caches(void) {
    pthread_once(&g_cache_once, detect_caches);
    return &g_cache;
}

CLLM_EXPORT int cllm_cache_sizes(cllm_cache_info *out) {
    CLLM_CHECK_PTR(out, "out");
    *out = *cllm_caches();
    return CLLM_OK;
}
