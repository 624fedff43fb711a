/* profile.h - the training step's per-op profiler: the per-step decision
 * of which sphere records (profile_arm). The buckets and the PROF macro are
 * in profile_ops.h (model.h includes it); the public calls
 * (cllm_model_profile_enable / _read) are in profile.c. */
#ifndef CLLM_MODEL_PROFILE_H
#define CLLM_MODEL_PROFILE_H
#include "profile_ops.h"

struct cllm_model;
/* Decide, once per call before the pool runs, which spheres record: each
 * sphere's `prof` flag is set (PROF_SPH while profiling is on) or cleared. */
void profile_arm(struct cllm_model *m);

#endif
