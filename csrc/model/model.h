/*
 * model.h - private to csrc/model/: the parameter layout, the model and
 * per-sphere structs shared by model.c, train.c, infer.c and sample.c.
 *
 * Layout of the parameter buffer (floats, in this order; Hugging Face names):
 *   transformer.wte.weight            (V, C)
 *   transformer.wpe.weight            (P, C)          P = context_len
 *   for each layer i, contiguous:
 *     transformer.h.i.ln_1.weight     (C)    .ln_1.bias (C)
 *     transformer.h.i.attn.c_attn.weight (C, 3C)  .c_attn.bias (3C)
 *     transformer.h.i.attn.c_proj.weight (C, C)   .c_proj.bias (C)
 *     transformer.h.i.ln_2.weight     (C)    .ln_2.bias (C)
 *     transformer.h.i.mlp.c_fc.weight (C, 4C)     .c_fc.bias (4C)
 *     transformer.h.i.mlp.c_proj.weight (4C, C)   .c_proj.bias (C)
 *   transformer.ln_f.weight (C)   transformer.ln_f.bias (C)
 * Conv1D weights are (in, out): y = x @ W + b. Gradients and the two AdamW
 * moments use the same layout in their own buffers.
 */
#ifndef CLLM_MODEL_MODEL_H
#define CLLM_MODEL_MODEL_H
#include <math.h>
#include <stdint.h>
#include "runtime/internal.h"
#include "runtime/spheres.h"

#define NTENS_PER_LAYER 12

typedef struct {
    float *ln1w, *ln1b, *qkvw, *qkvb, *projw, *projb;
    float *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb;
} LayerW;

typedef struct {
    float *wte, *wpe, *lnfw, *lnfb;
    LayerW *h; /* L entries */
} Weights;

typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *att, *attproj, *res2;
    float *ln2, *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *fcproj, *res3;
} LayerAct;

/* One sphere's context: its shard, arena and gradient accumulators. */
typedef struct {
    int b0, bs;            /* shard: batch rows [b0, b0+bs) of the last call  */
    float *grads_buf;      /* NULL for sphere 0 (uses the model's grads)       */
    Weights g;             /* pointers into this sphere's gradient buffer      */
    float *arena;          /* activations + backward scratch                  */
    float *encoded, *lnf, *lnf_mean, *lnf_rstd, *logits, *losses;
    LayerAct *act;         /* L entries                                        */
    float *dres, *dtmp, *dqkv, *datt, *dfch;
    float *gemm_ws, *att_ws;
    double loss_sum;       /* sum of this shard's token losses                 */
    double sumsq;          /* partial grad sum of squares (reduce phase)       */
} Sphere;

struct cllm_model {
    cllm_config cfg;
    int V, P, L, NH, C, Bmax, Tmax;
    size_t nparams;
    int ntensors;
    cllm_tensor_info *tensors;
    float *params, *grads, *adam_m, *adam_v;
    uint16_t *params_bf16;     /* BF16 copy of params (precision BF16 only)  */
    Weights w, gw;
    cllm_spheres *pool;
    int nspheres;
    Sphere *sph;
    /* last forward */
    int32_t *inputs, *targets; /* copies, Bmax*Tmax */
    int last_B, last_T, have_fwd, fwd_targets, active;
    long valid_count;
    /* inference: an FP32 decoder borrowing params and sharing the pool,
     * created on the first cllm_model_infer_reset / cllm_model_decoder */
    struct cllm_decoder *dec;
    /* per-op profile of sphere 0 (cllm_model_profile_*) */
    int prof_on;
    double prof_sec[16];
    uint64_t prof_calls[16];
    /* sampling scratch */
    float *sprob;
    int32_t *sidx;
};

/* ----------------------------------------------------------------- rng */
static inline uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline double rng_uniform(uint64_t *s) { return (double)(splitmix64(s) >> 11) * (1.0 / 9007199254740992.0); }
static inline float rng_normal(uint64_t *s) {
    double u1 = rng_uniform(s), u2 = rng_uniform(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* BF16 copies of params[lo, hi) (precision BF16), on the given ISA */
void model_sync_bf16_range(cllm_model *m, int isa, size_t lo, size_t hi);
/* 0 if precision p is usable under ISA isa, else fails (sets the error) */
int model_check_precision(int p, int isa);

#endif
