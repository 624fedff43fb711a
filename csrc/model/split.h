/* split.h - the parallel split policy of a training call: which GEMMs run
 * per shard and which batch-wide, column-sliced over the spheres (split.c),
 * and which gradients that leaves to the reduce phase. */
#ifndef CLLM_MODEL_SPLIT_H
#define CLLM_MODEL_SPLIT_H
#include "model.h"

/* Every sphere that passes the step's barriers must see the same plan, so it
 * is made once per call, before the pool runs (split_plan). */
typedef struct {
    int rows;    /* the shards are token rows, not whole sequences (the
                    model's row_shards): attention runs over the whole
                    batch, by (sequence, head) units, between barriers     */
    int lm;      /* the LM head's logits and wte gradient batch-wide        */
    int dlnf;    /* with lm: the LM head's input gradient too               */
    int layers;  /* the layers' forward and input-gradient GEMMs (and with
                    them their weight gradients) batch-wide                 */
} SplitPlan;

/* the plan for the model's last (B, T) block over its active spheres, on
 * its ISA (m->last_B, m->last_T, m->active, m->isa, m->deterministic) */
void split_plan(const cllm_model *m, SplitPlan *p);

/* Are the shards of a B-sequence call of T tokens token rows rather than
 * whole sequences? When the sequences do not divide evenly among the
 * spheres (fewer sequences than spheres: a GPT-2-small fine-tune at full
 * context with batch 1), whole-sequence shards leave spheres idle; token
 * rows keep them all busy, every sphere then holds a shard. Needs at least
 * one row per sphere; never in deterministic mode. */
int split_row_shards(const cllm_model *m, int B, int T);

/* columns [*lo, *hi) of n for sphere i of `parts`, in units of 16 floats so
 * that no two spheres write the same cache line of a row */
void split_columns(int n, int i, int parts, int *lo, int *hi);

/* does the reduce phase sum a tensor of this grad_kind (GRAD_*) over the
 * shards under plan p (else it was computed batch-wide, straight into the
 * model's gradient) */
int split_summed_over_shards(const SplitPlan *p, int grad_kind);

#endif
