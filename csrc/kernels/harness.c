/* kernel_harness.c - run one kernel op under one ISA (tests and benchmarks).
 *
 * cllm_kernel_run(op, isa, reps, bufs, nbufs, dims, ndims). Buffers follow the
 * op's signature in kernels.h; int32 tensors are passed as float* that point
 * at int32 data; float scalars go in a trailing "params" buffer.
 *
 *   op                      bufs                                        dims
 *   layernorm_fwd           out mean rstd x w b                         N C
 *   layernorm_bwd           dx dw db dout x w mean rstd                 N C
 *   residual_layernorm_fwd  res out mean rstd a b w bias                N C
 *   residual_fwd            out a b                                     n
 *   gelu_fwd                out x                                       n
 *   gelu_bwd                dx x dout                                   n
 *   attention_fwd           out att qkv                                 B T C NH
 *   attention_bwd           dqkv datt dout qkv att                      B T C NH
 *   crossentropy_fused      logits losses targets(i32) params[dscale]   N V
 *   embed_fwd               out ids(i32) wte wpe                        B T C V
 *   embed_bwd               dwte dwpe dout ids(i32)                     B T C V
 *   bias_grad               db dout                                     N OC
 *   add_into                dst src                                     n
 *   sumsq                   x out(one double = 2 floats)                n
 *   adamw                   p g m v params[lr b1 b2 eps wd bc1 bc2 gs]  n
 *   matvec                  y x W bias(may be NULL)                     in ldw lo hi
 *   matvec_t                y x W                                       C lo hi
 *   attention_step          out q kc vc                                 len ldc C NH
 *   gelu_bwd_bias           dx db x dout                                N OC
 *   f32_to_bf16             dst(u16) src                                n
 *   bf16_to_f32             dst src(u16)                                n
 *
 * Scratch (attention ws, attention_step scratch) is allocated here once,
 * outside the repetitions, so timing a run with many reps measures the op.
 */
#include <string.h>
#include "runtime/internal.h"
#include "kernels.h"
#include "bf16.h"

typedef struct {
    const char *name;
    int nbufs;
    int ndims;
} harness_op;

static const harness_op g_ops[] = {
    {"layernorm_fwd", 6, 2},      {"layernorm_bwd", 8, 2},
    {"residual_layernorm_fwd", 8, 2}, {"residual_fwd", 3, 1},
    {"gelu_fwd", 2, 1},           {"gelu_bwd", 3, 1},
    {"attention_fwd", 3, 4},      {"attention_bwd", 5, 4},
    {"crossentropy_fused", 4, 2}, {"embed_fwd", 4, 4},
    {"embed_bwd", 4, 4},          {"bias_grad", 2, 2},
    {"add_into", 2, 1},           {"sumsq", 2, 1},
    {"adamw", 5, 1},              {"matvec", 4, 4},
    {"matvec_t", 3, 3},           {"attention_step", 4, 4},
    {"gelu_bwd_bias", 4, 2},
    {"f32_to_bf16", 2, 1},        {"bf16_to_f32", 2, 1},
};
#define N_OPS ((int)(sizeof g_ops / sizeof g_ops[0]))

CLLM_EXPORT int cllm_kernel_op_name(int i, const char **name) {
    CLLM_CHECK_PTR(name, "name");
    if (i < 0 || i >= N_OPS) return cllm_fail(CLLM_ERR_RANGE, "kernel_op_name: index %d out of range", i);
    *name = g_ops[i].name;
    return CLLM_OK;
}

static int isa_ok(int isa) {
    int a2 = 0, a5 = 0;
    cllm_cpu_detect(&a2, &a5);
    if (isa == CLLM_ISA_SCALAR) return 1;
    if (isa == CLLM_ISA_AVX2) return a2;
    if (isa == CLLM_ISA_AVX512) return a5;
    return 0;
}

/* every dim positive (index zero_ok may be 0) and below 2^31 */
static int dims_positive(const int64_t *d, int n, int zero_ok, const char *op) {
    for (int i = 0; i < n; i++)
        if (d[i] < (i == zero_ok ? 0 : 1) || d[i] > ((int64_t)1 << 31) - 1)
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

CLLM_EXPORT int cllm_kernel_run(const char *op, int isa, int reps, float *const *bufs, int nbufs,
                                const int64_t *dims, int ndims) {
    CLLM_CHECK_PTR(op, "op");
    CLLM_CHECK_PTR(bufs, "bufs");
    CLLM_CHECK_PTR(dims, "dims");
    int k = -1;
    for (int i = 0; i < N_OPS; i++)
        if (!strcmp(op, g_ops[i].name)) { k = i; break; }
    if (k < 0) return cllm_fail(CLLM_ERR_INVALID, "kernel_run: unknown op '%s'", op);
    if (isa < CLLM_ISA_SCALAR || isa > CLLM_ISA_AVX512)
        return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): unknown ISA %d", op, isa);
    if (!isa_ok(isa)) return cllm_fail(CLLM_ERR_UNSUPPORTED, "kernel_run(%s): ISA %d not supported by this CPU", op, isa);
    if (reps < 1) return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): reps = %d < 1", op, reps);
    if (nbufs != g_ops[k].nbufs)
        return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): needs %d buffers, got %d", op, g_ops[k].nbufs, nbufs);
    if (ndims != g_ops[k].ndims)
        return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): needs %d dims, got %d", op, g_ops[k].ndims, ndims);
    int nullable = !strcmp(op, "matvec") ? 3 : -1; /* matvec's bias may be NULL */
    for (int i = 0; i < nbufs; i++)
        if (!bufs[i] && i != nullable) return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): buffer %d is NULL", op, i);
    /* the `lo` row index of matvec / matvec_t may be 0 */
    int zero_ok = k == 15 ? 2 : k == 16 ? 1 : -1;
    int rc = dims_positive(dims, ndims, zero_ok, op);
    if (rc) return rc;
    cllm_clear_error();

    const cllm_ops *o = cllm_ops_for_isa(isa);
    float *const *b = bufs;
    const int64_t *d = dims;
    float *ws = NULL;
    rc = CLLM_OK;

    switch (k) {
    case 0: for (int r = 0; r < reps; r++) o->layernorm_fwd(b[0], b[1], b[2], b[3], b[4], b[5], (int)d[0], (int)d[1]); break;
    case 1: for (int r = 0; r < reps; r++) o->layernorm_bwd(b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], (int)d[0], (int)d[1]); break;
    case 2: for (int r = 0; r < reps; r++) o->residual_layernorm_fwd(b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], (int)d[0], (int)d[1]); break;
    case 3: for (int r = 0; r < reps; r++) o->residual_fwd(b[0], b[1], b[2], (size_t)d[0]); break;
    case 4: for (int r = 0; r < reps; r++) o->gelu_fwd(b[0], b[1], (size_t)d[0]); break;
    case 5: for (int r = 0; r < reps; r++) o->gelu_bwd(b[0], b[1], b[2], (size_t)d[0]); break;
    case 6: case 7: {
        int B = (int)d[0], T = (int)d[1], C = (int)d[2], NH = (int)d[3];
        if (C % NH) return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): C=%d not divisible by NH=%d", op, C, NH);
        ws = cllm_aligned_alloc(sizeof(float) * cllm_attention_ws_floats(T, C / NH));
        if (!ws) return cllm_fail(CLLM_ERR_NOMEM, "kernel_run(%s): cannot allocate workspace", op);
        for (int r = 0; r < reps; r++) {
            if (k == 6) o->attention_fwd(b[0], b[1], b[2], B, T, C, NH, ws);
            else o->attention_bwd(b[0], b[1], b[2], b[3], b[4], B, T, C, NH, ws);
        }
        break;
    }
    case 8: {
        int N = (int)d[0], V = (int)d[1];
        const int32_t *tg = (const int32_t *)(const void *)b[2];
        if ((rc = check_ids(tg, N, -0x7fffffff, V, op, "targets"))) return rc;
        for (int r = 0; r < reps; r++) o->crossentropy_fused(b[0], b[1], tg, N, V, b[3][0]);
        break;
    }
    case 9: case 10: {
        int B = (int)d[0], T = (int)d[1], C = (int)d[2];
        const int32_t *ids = (const int32_t *)(const void *)(k == 9 ? b[1] : b[3]);
        if ((rc = check_ids(ids, (int64_t)B * T, 0, d[3], op, "ids"))) return rc;
        for (int r = 0; r < reps; r++) {
            if (k == 9) o->embed_fwd(b[0], ids, b[2], b[3], B, T, C);
            else o->embed_bwd(b[0], b[1], b[2], ids, B, T, C);
        }
        break;
    }
    case 11: for (int r = 0; r < reps; r++) o->bias_grad(b[0], b[1], (int)d[0], (int)d[1]); break;
    case 12: for (int r = 0; r < reps; r++) o->add_into(b[0], b[1], (size_t)d[0]); break;
    case 13: {
        double acc = 0.0;
        for (int r = 0; r < reps; r++) acc = o->sumsq(b[0], (size_t)d[0]);
        memcpy(b[1], &acc, sizeof acc);
        break;
    }
    case 14: {
        const float *h = b[4];
        for (int r = 0; r < reps; r++)
            o->adamw(b[0], b[1], b[2], b[3], (size_t)d[0], h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]);
        break;
    }
    case 15: {
        int in = (int)d[0], ldw = (int)d[1], lo = (int)d[2], hi = (int)d[3];
        if (lo > hi || hi > ldw) return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): need 0 <= lo <= hi <= ldw", op);
        (void)in;
        for (int r = 0; r < reps; r++) o->matvec(b[0], b[1], b[2], b[3], in, ldw, lo, hi);
        break;
    }
    case 16: {
        int C = (int)d[0], lo = (int)d[1], hi = (int)d[2];
        if (lo > hi) return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): lo > hi", op);
        for (int r = 0; r < reps; r++) o->matvec_t(b[0], b[1], b[2], C, lo, hi);
        break;
    }
    case 17: {
        int len = (int)d[0], ldc = (int)d[1], C = (int)d[2], NH = (int)d[3];
        if (C % NH || ldc < C) return cllm_fail(CLLM_ERR_INVALID, "kernel_run(%s): need C %% NH == 0 and ldc >= C", op);
        ws = cllm_aligned_alloc(sizeof(float) * ((size_t)len + 16));
        if (!ws) return cllm_fail(CLLM_ERR_NOMEM, "kernel_run(%s): cannot allocate scratch", op);
        for (int r = 0; r < reps; r++) o->attention_step(b[0], b[1], b[2], b[3], len, ldc, C, NH, ws);
        break;
    }
    case 18: for (int r = 0; r < reps; r++) o->gelu_bwd_bias(b[0], b[1], b[2], b[3], (int)d[0], (int)d[1]); break;
    /* BF16 conversion: uint16 buffers travel as float* like the int32 ones */
    case 19: for (int r = 0; r < reps; r++) cllm_f32_to_bf16_n(isa, (uint16_t *)(void *)b[0], b[1], (size_t)d[0]); break;
    case 20: for (int r = 0; r < reps; r++) cllm_bf16_to_f32_n(isa, b[0], (const uint16_t *)(const void *)b[1], (size_t)d[0]); break;
    default: rc = cllm_fail(CLLM_ERR_INTERNAL, "kernel_run: op table out of sync");
    }
    cllm_aligned_free(ws);
    return rc;
}
