/* harness.c - run one kernel op under one ISA (tests and benchmarks),
 * generated from the op registry (ops_list.h).
 *
 * cllm_kernel_run(op, isa, reps, bufs, nbufs, dims, ndims): buffers follow the
 * registry's `bufs` spec of the op (int32 tensors are passed as float* that
 * point at int32 data; float scalars go in a trailing "params" buffer; a
 * double result goes into the last buffer), dims its `dims` spec.
 * cllm_kernel_op_info(i, ...) lists the registry for Python.
 *
 * Scratch (attention ws, attention_step scratch) is allocated here once,
 * outside the repetitions, so timing a run with many reps measures the op.
 */
#include <string.h>
#include "runtime/internal.h"
#include "kernels.h"

static int isa_ok(int isa) {
    int a2 = 0, a5 = 0;
    cllm_cpu_detect(&a2, &a5);
    if (isa == CLLM_ISA_SCALAR) return 1;
    if (isa == CLLM_ISA_AVX2) return a2;
    if (isa == CLLM_ISA_AVX512) return a5;
    return 0;
}

/* every dim positive (those flagged in zero_ok may be 0) and below 2^31 */
static int dims_positive(const int64_t *d, int n, unsigned zero_ok, const char *op) {
    for (int i = 0; i < n; i++)
        if (d[i] < ((zero_ok >> i & 1u) ? 0 : 1) || d[i] > ((int64_t)1 << 31) - 1)
            return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): dim %d = %lld must be in [1, 2^31)",
                             op, i, (long long)d[i]);
    return CLLM_OK;
}

static int check_ids(const int32_t *ids, int64_t n, int64_t lo, int64_t hi, const char *op, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < lo || ids[i] >= hi)
            return cllm_fail(CLLM_ERR_RANGE, "kernel_run(%s): %s[%lld] = %d outside [%lld, %lld)", op, what,
                             (long long)i, ids[i], (long long)lo, (long long)hi);
    return CLLM_OK;
}

/* ---------------------------------------------- per-op checks (registry) */
/* check(op, bufs, dims, &ws_floats): op-specific validation beyond "every
 * dim >= 1"; sets the scratch floats the op needs (HWS), 0 if none. */
typedef int (*harness_check)(const char *op, float *const *b, const int64_t *d, size_t *ws);

static int hc_none(const char *op, float *const *b, const int64_t *d, size_t *ws) {
    (void)op; (void)b; (void)d; (void)ws;
    return CLLM_OK;
}

/* dims B T C NH */
static int hc_attention(const char *op, float *const *b, const int64_t *d, size_t *ws) {
    (void)b;
    if (d[2] % d[3]) return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): C=%d not divisible by NH=%d", op, (int)d[2], (int)d[3]);
    *ws = cllm_attention_ws_floats((int)d[1], (int)(d[2] / d[3]));
    return CLLM_OK;
}

/* targets (buffer 2) below V (dim 1); negative = ignored row */
static int hc_crossentropy(const char *op, float *const *b, const int64_t *d, size_t *ws) {
    (void)ws;
    return check_ids((const int32_t *)(const void *)b[2], d[0], -0x7fffffff, d[1], op, "targets");
}

/* ids (buffer `which`, B x T) in [0, V) */
static int check_embed_ids(const char *op, const float *ids, const int64_t *d) {
    return check_ids((const int32_t *)(const void *)ids, d[0] * d[1], 0, d[3], op, "ids");
}
static int hc_embed_fwd(const char *op, float *const *b, const int64_t *d, size_t *ws) {
    (void)ws;
    return check_embed_ids(op, b[1], d);
}
static int hc_embed_bwd(const char *op, float *const *b, const int64_t *d, size_t *ws) {
    (void)ws;
    return check_embed_ids(op, b[3], d);
}

/* dims len ldk hs */
static int hc_attention_step(const char *op, float *const *b, const int64_t *d, size_t *ws) {
    (void)b;
    if (d[1] < d[0])
        return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): need ldk >= len", op);
    *ws = (size_t)d[0] + 16;
    return CLLM_OK;
}

/* dims m len0 ld */
static int hc_softmax_causal(const char *op, float *const *b, const int64_t *d, size_t *ws) {
    (void)b;
    (void)ws;
    if (d[2] < d[1] + d[0] - 1)
        return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): need ld >= len0 + m - 1", op);
    return CLLM_OK;
}

/* ------------------------------------------------------ the generated table */
/* one harness entry per registry line: spec strings, check and a runner
 * that calls the op `reps` times with arguments decoded from bufs/dims */
typedef void (*harness_runner)(const cllm_ops *o, int reps, float *const *b, const int64_t *d, float *ws, int nbufs);

#define HB(i) b[i]
#define HI(i) ((const int32_t *)(const void *)b[i])
#define HP(i, j) b[i][j]
#define HD(i) ((int)d[i])
#define HZ(i) ((size_t)d[i])
#define HWS ws
#define HCALL_void(call) for (int r = 0; r < reps; r++) call;
#define HCALL_double(call) { double v_ = 0.0; for (int r = 0; r < reps; r++) v_ = call; memcpy(b[nbufs - 1], &v_, sizeof v_); }
#define OP(name, simd, ret, params, call, check, bufs, dims)                                      \
    static void hr_##name(const cllm_ops *o, int reps, float *const *b, const int64_t *d, float *ws, int nbufs) { \
        (void)d; (void)ws; (void)nbufs;                                                           \
        HCALL_##ret(o->name call)                                                                 \
    }
#include "ops_list.h"
#undef OP

typedef struct {
    const char *name, *bufs, *dims;
    int simd;
    harness_check check;
    harness_runner run;
} harness_op;

static const harness_op g_ops[] = {
#define OP(name, simd, ret, params, call, check, bufs, dims) {#name, bufs, dims, simd, check, hr_##name},
#include "ops_list.h"
#undef OP
};
#define N_OPS ((int)(sizeof g_ops / sizeof g_ops[0]))

/* words in a spec string; *flagged gets a bitmask of the words containing '?' */
static int spec_words(const char *spec, unsigned *flagged) {
    int n = 0, in = 0;
    *flagged = 0;
    for (const char *p = spec; *p; p++) {
        if (*p == ' ') { in = 0; continue; }
        if (!in) { n++; in = 1; }
        if (*p == '?' && n <= 32) *flagged |= 1u << (n - 1);
    }
    return n;
}

CLLM_EXPORT int cllm_kernel_op_name(int i, const char **name) {
    CLLM_CHECK_PTR(name, "name");
    if (i < 0 || i >= N_OPS) return cllm_fail(CLLM_ERR_RANGE, "kernel_op_name: index %d out of range", i);
    *name = g_ops[i].name;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_kernel_op_info(int i, const char **name, const char **bufs, const char **dims, int *simd) {
    if (i < 0 || i >= N_OPS) return cllm_fail(CLLM_ERR_RANGE, "kernel_op_info: index %d out of range", i);
    if (name) *name = g_ops[i].name;
    if (bufs) *bufs = g_ops[i].bufs;
    if (dims) *dims = g_ops[i].dims;
    if (simd) *simd = g_ops[i].simd;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_kernel_run(const char *op, int isa, int reps, float *const *bufs, int nbufs,
                                const int64_t *dims, int ndims) {
    CLLM_CHECK_PTR(op, "op");
    CLLM_CHECK_PTR(bufs, "bufs");
    CLLM_CHECK_PTR(dims, "dims");
    const harness_op *h = NULL;
    for (int i = 0; i < N_OPS; i++)
        if (!strcmp(op, g_ops[i].name)) { h = &g_ops[i]; break; }
    if (!h) return cllm_fail(CLLM_ERR_INVALID, "kernel_run: unknown op '%s'", op);
    if (isa < CLLM_ISA_SCALAR || isa > CLLM_ISA_AVX512)
        return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): unknown ISA %d", op, isa);
    if (!isa_ok(isa)) return cllm_fail(CLLM_ERR_UNSUPPORTED, "kernel_run(%s): ISA %d not supported by this CPU", op, isa);
    if (reps < 1) return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): reps = %d < 1", op, reps);
    unsigned nullable, zero_ok;
    int want_bufs = spec_words(h->bufs, &nullable), want_dims = spec_words(h->dims, &zero_ok);
    if (nbufs != want_bufs)
        return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): needs %d buffers, got %d", op, want_bufs, nbufs);
    if (ndims != want_dims)
        return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): needs %d dims, got %d", op, want_dims, ndims);
    for (int i = 0; i < nbufs; i++)
        if (!bufs[i] && !(nullable >> i & 1u))
            return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): buffer %d is NULL", op, i);
    int rc = dims_positive(dims, ndims, zero_ok, op);
    if (rc) return rc;
    size_t ws_floats = 0;
    if ((rc = h->check(op, bufs, dims, &ws_floats))) return rc;
    cllm_clear_error();
    float *ws = NULL;
    if (ws_floats) {
        ws = cllm_aligned_alloc(sizeof(float) * ws_floats);
        if (!ws) return cllm_fail(CLLM_ERR_NOMEM, "kernel_run(%s): cannot allocate scratch", op);
    }
    h->run(cllm_ops_for_isa(isa), reps, bufs, dims, ws, nbufs);
    cllm_aligned_free(ws);
    return CLLM_OK;
}
