/* cpu_features.h - matrix / low-precision CPU features and AMX tile state
 * (private to the C core; cllm_cpu_matrix_features in cllm.h is the public
 * view). */
#ifndef CLLM_CPU_FEATURES_H
#define CLLM_CPU_FEATURES_H

typedef struct {
    int avx2_fma, avx512;   /* as cllm_cpu_detect                              */
    int avx512_bf16;        /* vdpbf16ps / vcvtne2ps2bf16 usable               */
    int avx512_vnni;        /* vpdpbusd usable                                 */
    int amx_cpu;            /* CPUID reports AMX (may still be unusable)       */
    int amx_bf16, amx_int8; /* usable: CPU + XCR0 tile state + OS permission   */
} cllm_cpu_features;

/* Detected once per process (thread-safe); also requests AMX permission. */
const cllm_cpu_features *cllm_cpu_features_get(void);

/* Configure this thread's AMX tiles (once per thread; every tile 16 rows x
 * 64 bytes). Returns 0 when AMX is not usable. */
int cllm_amx_tiles_ready(void);
#endif
