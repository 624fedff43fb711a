/* cpu_features.c - matrix / low-precision CPU features (AVX512-BF16,
 * AVX512-VNNI, AMX) and the AMX tile state: the OS permission request
 * (Linux arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), once per
 * process) and the tile configuration (once per thread).
 *
 * Detection (Intel SDM vol. 2, CPUID leaf 7):
 *   leaf 7 sub 0: ECX bit 11 AVX512_VNNI; EDX bit 22 AMX-BF16, 24 AMX-TILE,
 *                 25 AMX-INT8
 *   leaf 7 sub 1: EAX bit 5 AVX512_BF16
 * and XCR0 (XGETBV 0): bits 5-7 opmask/ZMM state for AVX-512, bits 17
 * (XTILECFG) and 18 (XTILEDATA) for AMX. AMX is reported usable only when
 * the CPU has it, XCR0 enables both tile components and the kernel granted
 * this process the XTILEDATA permission. */
#define _GNU_SOURCE
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "runtime/internal.h"
#include "runtime/cpu_features.h"

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static cllm_cpu_features g_feat;
static pthread_once_t g_feat_once = PTHREAD_ONCE_INIT;

static unsigned long long xcr0_read(void) {
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

/* Ask Linux for the AMX tile data state; 1 if granted. */
static int amx_request_permission(void) {
#if defined(__linux__) && defined(SYS_arch_prctl)
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return 0;
#endif
}

static void detect_features(void) {
    cllm_cpu_features f;
    memset(&f, 0, sizeof f);
    cllm_cpu_detect(&f.avx2_fma, &f.avx512);
    unsigned int a, b, c, d;
    unsigned long long xcr0 = 0;
    if (__get_cpuid(1, &a, &b, &c, &d) && ((c >> 27) & 1)) xcr0 = xcr0_read();
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        f.avx512_vnni = f.avx512 && ((c >> 11) & 1);
        int amx_tile = (d >> 24) & 1, amx_bf16 = (d >> 22) & 1, amx_int8 = (d >> 25) & 1;
        int tiles_os = (xcr0 & (3ull << 17)) == (3ull << 17);
        f.amx_cpu = amx_tile && (amx_bf16 || amx_int8);
        if (amx_tile && tiles_os && f.avx512 && amx_request_permission()) {
            f.amx_bf16 = amx_bf16;
            f.amx_int8 = amx_int8;
        }
        if (a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512_bf16 = f.avx512 && ((a >> 5) & 1);
    }
    g_feat = f;
}

const cllm_cpu_features *cllm_cpu_features_get(void) {
    pthread_once(&g_feat_once, detect_features);
    return &g_feat;
}

CLLM_EXPORT int cllm_cpu_matrix_features(int *avx512_bf16, int *avx512_vnni, int *amx_bf16, int *amx_int8) {
    const cllm_cpu_features *f = cllm_cpu_features_get();
    if (avx512_bf16) *avx512_bf16 = f->avx512_bf16;
    if (avx512_vnni) *avx512_vnni = f->avx512_vnni;
    if (amx_bf16) *amx_bf16 = f->amx_bf16;
    if (amx_int8) *amx_int8 = f->amx_int8;
    return CLLM_OK;
}

/* ------------------------------------------------------ tile configuration */
/* One layout serves every AMX kernel in cllm: palette 1, all eight tiles
 * 16 rows x 64 bytes (16x16 FP32 / INT32 accumulators, 16x32 BF16 or
 * 16x64 INT8 operands). Loaded once per thread, on first use. */
typedef struct {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_tilecfg;

static _Thread_local int g_tiles_configured;

__attribute__((target("amx-tile"))) static void tiles_load_config(void) {
    amx_tilecfg cfg __attribute__((aligned(64)));
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
}

int cllm_amx_tiles_ready(void) {
    if (g_tiles_configured) return 1;
    if (!cllm_cpu_features_get()->amx_bf16 && !cllm_cpu_features_get()->amx_int8) return 0;
    tiles_load_config();
    g_tiles_configured = 1;
    return 1;
}
