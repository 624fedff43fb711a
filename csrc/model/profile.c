/* profile.c - the training step's per-op profiler: its public calls
 * (enable / read, with the bucket names) and profile_arm, which decides once
 * per call which sphere records (profile.h). */
#include <stdio.h>
#include <string.h>
#include "model.h"
#include "profile.h"

static const char *const prof_names[P_COUNT] = {
    "matmul fwd", "lm head fwd", "matmul bwd", "lm head bwd", "attention fwd", "attention bwd",
    "layernorm (+residual)", "gelu fwd+bwd (+fc bias grad)", "softmax+cross-entropy", "embedding fwd+bwd",
    "bias grads", "grad reduce + norm", "adamw"};

void profile_arm(cllm_model *m) {
    for (int i = 0; i < m->nspheres; i++) m->sph[i].prof = m->prof_on && i == PROF_SPH;
}

CLLM_EXPORT int cllm_model_profile_enable(cllm_model *m, int on) {
    CLLM_CHECK_PTR(m, "model");
    m->prof_on = on != 0;
    memset(m->prof_sec, 0, sizeof m->prof_sec);
    memset(m->prof_calls, 0, sizeof m->prof_calls);
    return CLLM_OK;
}

CLLM_EXPORT int cllm_model_profile_read(const cllm_model *m, int index, char *name, size_t cap, double *seconds,
                                        uint64_t *calls) {
    CLLM_CHECK_PTR(m, "model");
    if (index < 0 || index >= P_COUNT) return cllm_fail(CLLM_ERR_RANGE, "profile index %d out of range [0, %d)", index, P_COUNT);
    if (name && cap) snprintf(name, cap, "%s", prof_names[index]);
    if (seconds) *seconds = m->prof_sec[index];
    if (calls) *calls = m->prof_calls[index];
    return CLLM_OK;
}
