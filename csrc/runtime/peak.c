/* peak.c - measured machine limits: multiply-add peak and read bandwidth.
 *
 * Benchmarks state model FLOP utilisation against the peak MEASURED on the
 * machine in the same run, not a datasheet figure, and decoding speed
 * against the measured read bandwidth. This file provides both.
 *
 * Peak. Every thread (the sphere pool: the caller is sphere 0) runs a
 * register-only loop of independent multiply-adds: no loads or stores inside
 * the loop, and more independent accumulators than (latency x issue ports)
 * of any current x86 core, so the loop is bound by multiply-add throughput
 * alone. Kinds:
 *   FMA_AVX512  vfmadd231ps zmm   24 accumulators x 16 lanes x 2 flops
 *   FMA_AVX2    vfmadd231ps ymm   12 accumulators x  8 lanes x 2 flops
 *   BF16_AVX512 vdpbf16ps zmm     24 accumulators x 32 pairs x 2 flops
 *   AMX_BF16    tdpbf16ps         4 accumulator tiles (16x16 fp32) fed by
 *                                 2 A tiles (16x32 bf16) and 2 B tiles:
 *                                 16*16*32*2 flops per instruction
 * The accumulators converge to a fixed point (x <- x*b + c with |b| < 1), so
 * no denormal or overflow slows a long run down.
 *
 * Timing. The iteration count is calibrated on the calling thread so that
 * one run lasts about seconds / 3; then three runs on all threads, each
 * timed by the caller's wall clock (it includes the wake-up of the pool,
 * microseconds against ~0.1 s), and the best is reported:
 *   GFLOP/s = threads * iterations * flops per iteration / wall seconds.
 *
 * Bandwidth. One buffer of `bytes` bytes, split into equal contiguous
 * slices, one per thread (as a batch-1 matrix-vector product splits the
 * weight rows); every thread reads its slice `passes` times, with each of
 * several load loops (see below), best of all. GB/s = bytes * passes / wall.
 * A buffer that fits the last-level cache measures cache bandwidth; a
 * larger one measures DRAM.
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include "internal.h"
#include "cpu_features.h"
#include "spheres.h"

#define PEAK_MAX_THREADS 4096
#define PEAK_MAX_SECONDS 60.0
#define PEAK_RUNS 3

/* ------------------------------------------------------ feature checks */
static int kind_supported(int kind) {
    const cllm_cpu_features *f = cllm_cpu_features_get();
    switch (kind) {
    case CLLM_PEAK_FMA_AVX2: return f->avx2_fma;
    case CLLM_PEAK_FMA_AVX512: return f->avx512;
    case CLLM_PEAK_BF16_AVX512: return f->avx512 && f->avx512_bf16;
    case CLLM_PEAK_AMX_BF16: return f->amx_bf16;  /* CPU + XCR0 + the OS's permission */
    default: return 0;
    }
}

CLLM_EXPORT int cllm_peak_supported(int kind, int *supported) {
    CLLM_CHECK_PTR(supported, "supported");
    if (kind < CLLM_PEAK_FMA_AVX512 || kind > CLLM_PEAK_AMX_BF16)
        return cllm_fail(CLLM_ERR_INVALID, "peak: unknown kind %d", kind);
    *supported = kind_supported(kind);
    return CLLM_OK;
}

/* ------------------------------------------------------------- loops */
/* Each loop returns a value derived from every accumulator, which the
 * caller stores to a volatile sink, so no accumulator can be dropped. */

#define REP4(M, o) M(o + 0) M(o + 1) M(o + 2) M(o + 3)
#define REP12(M) REP4(M, 0) REP4(M, 4) REP4(M, 8)
#define REP24(M) REP12(M) REP4(M, 12) REP4(M, 16) REP4(M, 20)

/* The FP32 loops (FMA peak and the bandwidth reads) are written once over
 * GCC vector types; each use names the vector width and the target. */
typedef float f32x4 __attribute__((vector_size(16)));
typedef float f32x8 __attribute__((vector_size(32)));
typedef float f32x16 __attribute__((vector_size(64)));
#define LANES(V) ((int)(sizeof(V) / sizeof(float)))

#define ACC_INIT(V, NACC) \
    for (int i_ = 0; i_ < (NACC); i_++) acc[i_] = (V){0} + 0.01f * (float)i_
/* the sum of all lanes of the NACC accumulators acc[] of vector type V */
#define ACC_REDUCE(V, NACC, out)                            \
    do {                                                    \
        V s_ = acc[0];                                      \
        for (int i_ = 1; i_ < (NACC); i_++) s_ += acc[i_];  \
        float r_ = 0.0f;                                    \
        for (int l_ = 0; l_ < LANES(V); l_++) r_ += s_[l_]; \
        (out) = r_;                                         \
    } while (0)

/* NACC accumulators x <- x * 0.999 + 1e-3: one vfmadd231ps each (the
 * translation unit is gnu11, whose default -ffp-contract=fast makes a*b+c
 * one FMA). */
#define FMA_STEP(i) acc[i] = acc[i] * b + c;
#define FMA_PEAK_LOOP(NAME, TARGET, V, NACC, REPN)                     \
    __attribute__((target(TARGET))) static float NAME(long iters) {  \
        V acc[NACC];                                                 \
        const V b = (V){0} + 0.999f, c = (V){0} + 1e-3f;             \
        ACC_INIT(V, NACC);                                           \
        for (long it = 0; it < iters; it++) { REPN(FMA_STEP) }       \
        float out;                                                   \
        ACC_REDUCE(V, NACC, out);                                    \
        return out;                                                  \
    }
FMA_PEAK_LOOP(loop_fma_avx2, "avx2,fma", f32x8, 12, REP12)
FMA_PEAK_LOOP(loop_fma_avx512, "avx512f", f32x16, 24, REP24)

__attribute__((target("avx512f,avx512bf16"))) static float loop_bf16_avx512(long iters) {
    f32x16 acc[24];
    /* a = 0.5, b = -1e-3 as bf16 pairs: acc <- acc - 32 * 5e-4, balanced by
     * alternating the sign of b every iteration, so acc stays bounded. */
    const __m512bh ap = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.5f));
    const __m512bh bp = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    const __m512bh bn = _mm512_cvtne2ps_pbh(_mm512_set1_ps(-1e-3f), _mm512_set1_ps(-1e-3f));
    ACC_INIT(f32x16, 24);
    for (long it = 0; it < iters; it++) {
#define STEP(i) acc[i] = _mm512_dpbf16_ps(acc[i], ap, bp);
        REP24(STEP)
#undef STEP
#define STEP(i) acc[i] = _mm512_dpbf16_ps(acc[i], ap, bn);
        REP24(STEP)
#undef STEP
    }
    float out;
    ACC_REDUCE(f32x16, 24, out);
    return out;
}

__attribute__((target("amx-tile,amx-bf16"))) static float loop_amx_bf16(long iters) {
    _Alignas(64) uint16_t src[16 * 32];
    _Alignas(64) float out[16 * 16];
    for (int i = 0; i < 16 * 32; i++) src[i] = 0x3a83; /* bf16 ~1e-3 */
    if (!cllm_amx_tiles_ready()) return 0.0f;  /* every tile 16 rows x 64 bytes */
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, src, 64); _tile_loadd(5, src, 64);
    _tile_loadd(6, src, 64); _tile_loadd(7, src, 64);
    for (long it = 0; it < iters; it++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    float s = 0.0f;
    _tile_stored(0, out, 64); s += out[0];
    _tile_stored(1, out, 64); s += out[17];
    _tile_stored(2, out, 64); s += out[34];
    _tile_stored(3, out, 64); s += out[255];
    return s;
}

/* flops done by one iteration of each loop */
static double flops_per_iter(int kind) {
    switch (kind) {
    case CLLM_PEAK_FMA_AVX512: return 24.0 * 16 * 2;
    case CLLM_PEAK_FMA_AVX2: return 12.0 * 8 * 2;
    case CLLM_PEAK_BF16_AVX512: return 2 * 24.0 * 32 * 2;
    case CLLM_PEAK_AMX_BF16: return 4 * 16.0 * 16 * 32 * 2;
    default: return 0.0;
    }
}

static float run_loop(int kind, long iters) {
    switch (kind) {
    case CLLM_PEAK_FMA_AVX512: return loop_fma_avx512(iters);
    case CLLM_PEAK_FMA_AVX2: return loop_fma_avx2(iters);
    case CLLM_PEAK_BF16_AVX512: return loop_bf16_avx512(iters);
    case CLLM_PEAK_AMX_BF16: return loop_amx_bf16(iters);
    default: return 0.0f;
    }
}

static volatile float g_peak_sink;

typedef struct {
    int kind;
    long iters;
} peak_task;

static int peak_run_task(void *arg, int sphere, int nspheres) {
    (void)sphere; (void)nspheres;
    const peak_task *t = arg;
    g_peak_sink = run_loop(t->kind, t->iters);
    return CLLM_OK;
}

static int check_args(int threads, double seconds, double *out, const char *what) {
    CLLM_CHECK_PTR(out, "out");
    if (threads < 0 || threads > PEAK_MAX_THREADS)
        return cllm_fail(CLLM_ERR_INVALID, "%s: threads must be in [0, %d] (0 = all CPUs), got %d",
                         what, PEAK_MAX_THREADS, threads);
    if (!(seconds > 0.0) || seconds > PEAK_MAX_SECONDS)
        return cllm_fail(CLLM_ERR_INVALID, "%s: seconds must be in (0, %g], got %g", what,
                         PEAK_MAX_SECONDS, seconds);
    return CLLM_OK;
}

/* Iterations of loop `kind` that last about `target` seconds on this thread. */
static long calibrate(int kind, double target) {
    long iters = 1024;
    for (;;) {
        double t0 = cllm_now_s();
        g_peak_sink = run_loop(kind, iters);
        double dt = cllm_now_s() - t0;
        if (dt >= 0.02 || iters >= (1L << 40)) {
            double want = (double)iters * target / (dt > 1e-9 ? dt : 1e-9);
            if (want < 1.0) want = 1.0;
            if (want > 1e13) want = 1e13;
            return (long)want;
        }
        iters *= 4;
    }
}

CLLM_EXPORT int cllm_measure_peak(int kind, int threads, double seconds, double *gflops) {
    int rc = check_args(threads, seconds, gflops, "measure_peak");
    if (rc) return rc;
    *gflops = 0.0;
    if (kind < CLLM_PEAK_FMA_AVX512 || kind > CLLM_PEAK_AMX_BF16)
        return cllm_fail(CLLM_ERR_INVALID, "measure_peak: unknown kind %d", kind);
    if (!kind_supported(kind))
        return cllm_fail(CLLM_ERR_UNSUPPORTED, "measure_peak: kind %d is not supported by this CPU/OS", kind);
    cllm_spheres *pool = NULL;
    rc = cllm_spheres_new(threads, &pool);
    if (rc) return rc;
    int n = 1;
    cllm_spheres_count(pool, &n);
    peak_task task = {kind, calibrate(kind, seconds / PEAK_RUNS)};
    double best = 0.0;
    for (int r = 0; r < PEAK_RUNS && rc == CLLM_OK; r++) {
        double t0 = cllm_now_s();
        rc = cllm_spheres_run(pool, peak_run_task, &task);
        double dt = cllm_now_s() - t0;
        double g = (double)n * (double)task.iters * flops_per_iter(kind) / (dt > 1e-9 ? dt : 1e-9) / 1e9;
        if (g > best) best = g;
    }
    cllm_spheres_free(pool);
    if (rc) return rc;
    *gflops = best;
    return CLLM_OK;
}

/* --------------------------------------------------------- bandwidth */
/* Which loop reads memory fastest differs between cores (on some, fewer and
 * wider loads per cache line let the prefetchers fall behind), so every
 * variant the CPU supports is run and the best rate is reported:
 * one zmm / two ymm / four xmm loads per line into 8 accumulators, or one
 * scalar load per line (touches every line, the line fill is the cost). */
#define BW_CHUNK 512 /* bytes per unrolled loop iteration; slices are multiples */
enum { BW_TOUCH, BW_SSE, BW_AVX2, BW_AVX512, BW_NVARIANTS };

/* eight accumulators of vector type V, one aligned load each per step */
#define READ_LOOP(NAME, TARGET, V)                                                        \
    __attribute__((target(TARGET))) static float NAME(const float *p, size_t bytes, long passes) { \
        V acc[8];                                                                         \
        for (int j = 0; j < 8; j++) acc[j] = (V){0};                                      \
        size_t n = bytes / sizeof(float);                                                 \
        for (long r = 0; r < passes; r++)                                                 \
            for (size_t i = 0; i < n; i += 8 * LANES(V))                                  \
                for (int j = 0; j < 8; j++) acc[j] += *(const V *)(p + i + LANES(V) * j); \
        float out;                                                                        \
        ACC_REDUCE(V, 8, out);                                                            \
        return out;                                                                       \
    }
READ_LOOP(read_avx512, "avx512f", f32x16)
READ_LOOP(read_avx2, "avx2", f32x8)
READ_LOOP(read_sse, "sse2", f32x4)

static float read_touch(const float *p, size_t bytes, long passes) {
    float a = 0.0f, b = 0.0f;
    size_t n = bytes / sizeof(float);
    for (long r = 0; r < passes; r++)
        for (size_t i = 0; i < n; i += 32) { a += p[i]; b += p[i + 16]; }
    return a + b;
}

typedef struct {
    const float *buf;
    size_t chunks;  /* BW_CHUNK units in the whole buffer */
    long passes;
    int variant;
} bw_task;

static int bw_run_task(void *arg, int sphere, int nspheres) {
    const bw_task *t = arg;
    long lo, hi;
    cllm_split((long)t->chunks, sphere, nspheres, &lo, &hi);
    if (hi <= lo) return CLLM_OK;
    const float *p = t->buf + (size_t)lo * (BW_CHUNK / sizeof(float));
    size_t bytes = (size_t)(hi - lo) * BW_CHUNK;
    switch (t->variant) {
    case BW_AVX512: g_peak_sink = read_avx512(p, bytes, t->passes); break;
    case BW_AVX2: g_peak_sink = read_avx2(p, bytes, t->passes); break;
    case BW_SSE: g_peak_sink = read_sse(p, bytes, t->passes); break;
    default: g_peak_sink = read_touch(p, bytes, t->passes); break;
    }
    return CLLM_OK;
}

CLLM_EXPORT int cllm_measure_bandwidth(size_t bytes, int threads, double seconds, double *gbytes_per_s) {
    int rc = check_args(threads, seconds, gbytes_per_s, "measure_bandwidth");
    if (rc) return rc;
    *gbytes_per_s = 0.0;
    if (bytes < 4096 || bytes > ((size_t)1 << 40))
        return cllm_fail(CLLM_ERR_INVALID, "measure_bandwidth: bytes must be in [4096, 2^40], got %zu", bytes);
    int use[BW_NVARIANTS] = {1, 1, kind_supported(CLLM_PEAK_FMA_AVX2), kind_supported(CLLM_PEAK_FMA_AVX512)};
    int nvar = 0;
    for (int v = 0; v < BW_NVARIANTS; v++) nvar += use[v];
    cllm_spheres *pool = NULL;
    rc = cllm_spheres_new(threads, &pool);
    if (rc) return rc;
    size_t chunks = bytes / BW_CHUNK;
    float *buf = cllm_aligned_alloc(chunks * BW_CHUNK);
    if (!buf) {
        cllm_spheres_free(pool);
        return cllm_fail(CLLM_ERR_NOMEM, "measure_bandwidth: cannot allocate %zu bytes", bytes);
    }
    bw_task task[BW_NVARIANTS];
    double used = (double)chunks * BW_CHUNK, best = 0.0;
    /* one pass of each variant warms caches / TLB and calibrates its passes */
    for (int v = 0; v < BW_NVARIANTS && rc == CLLM_OK; v++) {
        task[v] = (bw_task){buf, chunks, 1, v};
        if (!use[v]) continue;
        double t0 = cllm_now_s();
        rc = cllm_spheres_run(pool, bw_run_task, &task[v]);
        double dt = cllm_now_s() - t0;
        double want = seconds / (PEAK_RUNS * nvar) / (dt > 1e-9 ? dt : 1e-9);
        task[v].passes = want < 1.0 ? 1 : want > 1e9 ? 1000000000L : (long)want;
    }
    for (int r = 0; r < PEAK_RUNS && rc == CLLM_OK; r++) {
        for (int v = 0; v < BW_NVARIANTS && rc == CLLM_OK; v++) {
            if (!use[v]) continue;
            double t0 = cllm_now_s();
            rc = cllm_spheres_run(pool, bw_run_task, &task[v]);
            double dt = cllm_now_s() - t0;
            double g = used * (double)task[v].passes / (dt > 1e-9 ? dt : 1e-9) / 1e9;
            if (g > best) best = g;
        }
    }
    cllm_aligned_free(buf);
    cllm_spheres_free(pool);
    if (rc) return rc;
    *gbytes_per_s = best;
    return CLLM_OK;
}
