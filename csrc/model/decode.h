/* decode.h - private decoder entry points (see decode.c). */
#ifndef CLLM_MODEL_DECODE_H
#define CLLM_MODEL_DECODE_H
#include "cllm.h"
#include "runtime/spheres.h"

/* A decoder that runs on an existing pool (not owned: free the decoder
 * before the pool). */
int cllm_decoder_new_on_pool(const cllm_config *cfg, int dtype, cllm_spheres *pool, cllm_decoder **out);
#endif
