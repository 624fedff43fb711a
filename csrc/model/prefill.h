/* prefill.h - a run of tokens through the decoder in one pass per layer
 * (GEMMs over the chunk's rows) instead of one step per token; see
 * prefill.c. Private to the decoder (decode.c). */
#ifndef CLLM_MODEL_PREFILL_H
#define CLLM_MODEL_PREFILL_H
#include <stdint.h>
#include "cllm.h"

/* default rows per prefill pass (bounded by the context length) */
#define CLLM_PREFILL_CHUNK 256
/* query rows per attention block of the prefill: scores S = Q K^T and the
 * output S V as GEMMs over the cache (fewer rows go one by one) */
#define CLLM_PREFILL_ATT_ROWS 64
#define CLLM_PREFILL_ATT_MIN_ROWS 4

/* Append ids[0..n) at positions d->pos.. (the caller has checked n >= 1,
 * d->pos + n <= context_len, every id in range and the weights ready), in
 * chunks of d->chunk rows, writing keys and values for every position and
 * the ids to d->tok. Without targets the LM head runs for the last position
 * only (into d->logits, by the per-token step's code); with targets (n of
 * them) it runs for every position and *nll_sum receives the sum over t of
 * -log p(targets[t] | ..ids[t]) (natural log), d->logits the last row. */
int cllm_prefill_run(cllm_decoder *d, const int32_t *ids, int n, const int32_t *targets, double *nll_sum);
/* Free the prefill scratch (a no-op when there is none); the next run
 * allocates it again for the decoder's current chunk size. */
void cllm_prefill_free(cllm_decoder *d);
#endif
