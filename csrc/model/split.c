/* split.c - the parallel split policy of a training call (split.h): which
 * GEMMs run batch-wide, every sphere multiplying every row of the batch by
 * its slice of the weight's columns instead of all of the weight by its
 * shard's rows, and the deterministic mode that turns them off
 * (cllm_model_set_deterministic).
 *
 * A batch-wide product is bit-identical to the per-shard one (each output
 * is the same K-long sum), but with it the matching weight gradients are
 * batch-wide too (batch_dwte, embed_grads, weight_grad in step.c), which
 * changes their summation order from that of a sum of shard sums to that of
 * one sphere running the whole batch. Deterministic mode keeps every product
 * per shard, so the gradients are the shard sums added in shard order
 * whatever the layout: 2 MPI ranks x 1 thread give bit for bit what
 * 1 process x 2 threads gives. */
#include "split.h"
#include "gemm/gemm.h"

/* The plan (split.h):
 *   rows:   token-row shards (split_row_shards, chosen by the call);
 *   lm:     whenever the batch is spread over several spheres (wte is the
 *           largest operand);
 *   dlnf:   with lm, when column slices pack less than per-shard rows;
 *   layers: when the shards are shorter than the GEMM's MC (a sphere packing
 *           all of a weight for its few rows costs more than it computes)
 *           or are token rows, and every sphere of the pool holds a shard
 *           (they all run the layers). Token-row shards of GPT-2 small at
 *           T=1024, B=1 on 2 spheres are 512 rows, past MC, and ran as fast
 *           either way (5,319 / 5,315 ms per step per shard, 5,312 / 5,300
 *           batch-wide, AVX2, alternated); batch-wide, the spheres' own
 *           gradient buffers hold only the LayerNorm and bias gradients, and
 *           the weight matrices' gradients are the single-sphere ones.
 * All off in deterministic mode. */
int split_row_shards(const cllm_model *m, int B, int T) {
    return m->nspheres > 1 && !m->deterministic && B % m->nspheres != 0 && (long)B * T >= m->nspheres;
}

void split_plan(const cllm_model *m, SplitPlan *p) {
    long all_rows = (long)m->last_B * m->last_T;
    int rows = m->row_shards ? (int)((all_rows + m->active - 1) / m->active)
                             : (m->last_B + m->active - 1) / m->active * m->last_T;
    p->rows = m->row_shards;
    p->lm = m->active > 1 && !m->deterministic;
    /* dlnf(rows, C) = dlogits(rows, V) @ wte(V, C): each sphere packs its
     * A rows and B columns, V floats each, so per shard it packs rows + C,
     * batch-wide by column slice all rows + C / spheres (every sphere reads
     * all of the V-wide dlogits); the smaller wins. Measured (default model,
     * BF16, 2 threads: 1024-row shards, C = 256): 288 / 291 / 284 ms per step
     * per shard against 309 / 306 / 305 ms column-sliced, alternated. */
    p->dlnf = p->lm && all_rows + m->C / m->active < (long)rows + m->C;
    p->layers = m->active > 1 && m->active == m->nspheres && !m->deterministic &&
                (rows < cllm_sgemm_mc(m->isa) || p->rows);
}

void split_columns(int n, int i, int parts, int *lo, int *hi) {
    long a, b;
    cllm_split((n + 15) / 16, i, parts, &a, &b);
    *lo = (int)(a * 16 < n ? a * 16 : n);
    *hi = (int)(b * 16 < n ? b * 16 : n);
}

int split_summed_over_shards(const SplitPlan *p, int grad_kind) {
    switch (grad_kind) {
    case GRAD_LM: return !p->lm;
    case GRAD_LAYER: return !p->layers;
    default: return 1;
    }
}

CLLM_EXPORT int cllm_model_set_deterministic(cllm_model *m, int on) {
    CLLM_CHECK_PTR(m, "model");
    m->deterministic = on != 0;
    return CLLM_OK;
}

CLLM_GETTER(cllm_model_get_deterministic, cllm_model, "model", int, h->deterministic)
