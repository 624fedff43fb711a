/*
 * model.h - private to csrc/model/: the model and
 * per-sphere structs shared by model.c, train.c, precision.c,
 * attention_bf16.c and infer.c.
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
#include "rng.h"

/* One sphere's context: its shard, activation views and gradient accumulators. */
typedef struct {
    int b0, bs;            /* shard: batch rows [b0, b0+bs) of the last call  */
    float *grads_buf;      /* NULL for sphere 0 (uses the model's grads)       */
    Weights g;             /* pointers into this sphere's gradient buffer      */
    /* this shard's rows of the batch-wide activations (the model's `all`) */
    CLLM_ACTS_HEAD(CLLM_X_FIELD)
    LayerAct *act;         /* L entries                                        */
    CLLM_ACTS_TAIL(CLLM_X_FIELD)
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
    unsigned char *init_kind;  /* INIT_* of each tensor (layout.h) */
    unsigned char *grad_kind;  /* GRAD_* of each tensor: how train.c computes
                                  its gradient when the batch is spread over
                                  several spheres                             */
    float *params, *grads, *adam_m, *adam_v;
    uint16_t *params_bf16;     /* BF16 copy of params (precision BF16 only)  */
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
    int dlogits_bf16;  /* the last forward left dlogits as BF16 (train.c)    */
    long valid_count;
    long loss_tokens;  /* cllm_model_set_loss_tokens: 0 = the block's own count */
    long loss_denom;   /* tokens the last forward's loss was normalised by     */
    /* generation: an FP32 decoder on this model's pool, created by the
     * first cllm_model_decoder (infer.c), holding a COPY of params in its
     * own weight arena; released (decode.h) whenever params may change */
    struct cllm_decoder *dec;
    /* per-op profile of sphere 0 (cllm_model_profile_*) */
    int prof_on;
    double prof_sec[16];
    uint64_t prof_calls[16];
};

/* grad_kind: GRAD_SHARD tensors get one gradient per shard, summed by the
 * reduce phase; with several spheres the others are computed batch-wide
 * straight into the model's gradient buffer, each sphere a slice of them,
 * and the reduce phase only adds them to the norm:
 *   GRAD_LM     wte, wpe: when the LM head is batch-wide (split_lm);
 *   GRAD_LAYER  the layers' weight matrices: when the layer GEMMs are (split). */
enum { GRAD_SHARD, GRAD_LM, GRAD_LAYER };

/* BF16 copies of params[lo, hi) (precision BF16), on the given ISA (model.c) */
void model_sync_bf16_range(cllm_model *m, int isa, size_t lo, size_t hi);

#endif
