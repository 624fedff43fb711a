/* optim.h - the optimizer side of a training step (optim.c): the
 * deterministic gradient reduce over the shards with the global norm, and
 * AdamW. */
#ifndef CLLM_MODEL_OPTIM_H
#define CLLM_MODEL_OPTIM_H
#include "model.h"
#include "split.h"

/* Sum the spheres' shard gradients into the model's grads (the tensors plan
 * p left per shard; slice by slice, shards in fixed order 0,1,2,...) and,
 * when norm is not NULL, return the global gradient norm in *norm. */
int optim_reduce(cllm_model *m, const SplitPlan *p, float *norm);
/* 0 if the AdamW options and step t are valid, else fails (sets the error) */
int optim_check(const cllm_adamw *opt, int t);
/* One AdamW step t over the model's grads, clipped by the global norm
 * `norm` (refused when it is not finite); refreshes the weight copies of
 * the model's precision as it goes. */
int optim_adamw(cllm_model *m, const cllm_adamw *opt, int t, float norm);

#endif
