/* decode.h - private decoder entry points (see decode.c) for the training
 * model's decoder (infer.c) and the model's lifecycle (model.c). */
#ifndef CLLM_MODEL_DECODE_H
#define CLLM_MODEL_DECODE_H
#include "cllm.h"
#include "runtime/spheres.h"

/* A decoder that runs on an existing pool (not owned: free the decoder
 * before the pool). */
int cllm_decoder_new_on_pool(const cllm_config *cfg, int dtype, cllm_spheres *pool, cllm_decoder **out);
/* Drop every tensor and unmap the weight arena (KV cache included, and the
 * prefill scratch; the cached ids are forgotten); the
 * decoder itself stays valid and takes tensors again (cllm_decoder_set_*
 * maps a new arena). NULL is a no-op. */
int cllm_decoder_release_weights(cllm_decoder *d);
/* 1 if every tensor is set, else 0. */
int cllm_decoder_has_weights(const cllm_decoder *d);
#endif
