/*
 * model.h - private to csrc/model/: the model and
 * per-sphere structs shared by model.c, the training step's files (step.c,
 * split.c, optim.c, profile.c, precision.c), attention_bf16.c and infer.c.
 *
 * The parameter and activation layout is declared once, in layout.h.
 */
#ifndef CLLM_MODEL_MODEL_H
#define CLLM_MODEL_MODEL_H
#include <math.h>
#include <stdint.h>
#include "runtime/internal.h"
#include "runtime/spheres.h"
#include "layout.h"
#include "profile_ops.h"
#include "rng.h"

struct cllm_ops;
struct ModelPrecision;

/* One sphere's context: its shard, activation views and gradient accumulators. */
typedef struct {
    int r0, n;             /* shard: token rows [r0, r0+n) of the last call's
                              B x T block (whole sequences unless the plan
                              splits them: SplitPlan.rows)                  */
    float *grads_buf;      /* NULL for sphere 0 (uses the model's grads)       */
    Weights g;             /* pointers into this sphere's gradient buffer      */
    /* this shard's rows of the batch-wide activations (the model's `all`) */
    CLLM_ACTS_HEAD(CLLM_X_FIELD)
    LayerAct *act;         /* L entries                                        */
    CLLM_ACTS_TAIL(CLLM_X_FIELD)
    float *gemm_ws, *att_ws;
    double loss_sum;       /* sum of this shard's token losses                 */
    double sumsq;          /* partial grad sum of squares (reduce phase)       */
    int prof;              /* this sphere records the profile (profile_arm)    */
} Sphere;

struct cllm_model {
    cllm_config cfg;
    int V, P, L, NH, C, Bmax, Tmax;
    int NKV, KVD, QKV;         /* K/V heads, their width (NKV * C / NH) and
                                  c_attn's output width C + 2 KVD (layout.h) */
    int QKVC;                  /* QKV when the K/V heads are grouped (the
                                  qkvc scratch), else 0                       */
    size_t nparams;
    int ntensors;
    cllm_tensor_info *tensors;
    unsigned char *init_kind;  /* INIT_* of each tensor (layout.h) */
    unsigned char *grad_kind;  /* GRAD_* of each tensor: how the step computes
                                  its gradient when the batch is spread over
                                  several spheres                             */
    float *params, *grads, *adam_m, *adam_v;
    uint16_t *params_bf16;     /* BF16 copy of params (precision BF16 only)  */
    /* how the step runs, resolved by model_exec_sync (precision.c) for the
     * ISA in force: the precision's table of operations (chosen by the
     * config's precision, fixed), the FP32 kernel registry and the BF16
     * GEMM kernel (-1 for FP32 models) of that ISA */
    const struct ModelPrecision *prec;
    const struct cllm_ops *ops;
    int isa, bf16_kernel;
    int deterministic;         /* cllm_model_set_deterministic (split.c)     */
    Weights w, gw;
    cllm_spheres *pool;
    int nspheres;
    Sphere *sph;
    Sphere all;                /* batch-wide activations (layout.h; only its
                                  activation fields are used), carved from ... */
    float *arena;              /* ... this one block                          */
    /* last forward */
    int32_t *inputs, *targets; /* copies, Bmax*Tmax */
    int last_B, last_T, have_fwd, fwd_targets, active;
    int row_shards;            /* the last call's shards are token rows that
                                  may split sequences (split_row_shards)      */
    long valid_count;
    long loss_tokens;  /* cllm_model_set_loss_tokens: 0 = the block's own count */
    long loss_denom;   /* tokens the last forward's loss was normalised by     */
    /* generation: an FP32 decoder on this model's pool, created by the
     * first cllm_model_decoder (infer.c), holding a COPY of params in its
     * own weight arena; released (decode.h) whenever params may change */
    struct cllm_decoder *dec;
    /* per-op profile of sphere PROF_SPH (profile.h, cllm_model_profile_*) */
    int prof_on;
    double prof_sec[P_COUNT];
    uint64_t prof_calls[P_COUNT];
};

/* grad_kind: GRAD_SHARD tensors get one gradient per shard, summed by the
 * reduce phase; with several spheres the others are computed batch-wide
 * straight into the model's gradient buffer, each sphere a slice of them,
 * and the reduce phase only adds them to the norm:
 *   GRAD_LM     wte, wpe: when the LM head is batch-wide (SplitPlan.lm, split.h);
 *   GRAD_LAYER  the layers' weight matrices: when the layer GEMMs are (SplitPlan.layers). */
enum { GRAD_SHARD, GRAD_LM, GRAD_LAYER };

/* BF16 copies of params[lo, hi) (precision BF16), on the given ISA (model.c) */
void model_sync_bf16_range(cllm_model *m, int isa, size_t lo, size_t hi);

#endif
