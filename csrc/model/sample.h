/* sample.h - next-token sampling by partial selection (sample.c). Below the
 * decoder (decode.c calls it); depends on nothing else in csrc/model/. */
#ifndef CLLM_MODEL_SAMPLE_H
#define CLLM_MODEL_SAMPLE_H
#include <stdint.h>

/* Sample from logits[V]: temperature <= 0 (or top_k == 1) -> argmax (lowest
 * id on ties); top_k <= 0 disables top-k; top_p >= 1 disables nucleus.
 * allowed (n_allowed ids, may be NULL) restricts the candidates. prob and
 * idx are caller scratch of V entries each (n_allowed <= V). */
int cllm_sample_logits(const float *logits, int V, float temperature, int top_k, float top_p,
                       const int32_t *allowed, int n_allowed, uint64_t *rng, float *prob, int32_t *idx,
                       int32_t *out);
#endif
