/* profile.h - the training step's per-op profiler: the op buckets (also
 * sizing the model's counters), the PROF timing macro and the per-step
 * decision of which sphere records. The public calls
 * (cllm_model_profile_enable / _read) are in profile.c. Includes no other
 * model header: model.h includes this one. */
#ifndef CLLM_MODEL_PROFILE_H
#define CLLM_MODEL_PROFILE_H

/* op buckets, in the order cllm_model_profile_read lists them */
enum {
    P_GEMM_FWD, P_LMHEAD_FWD, P_GEMM_BWD, P_LMHEAD_BWD, P_ATTN_FWD, P_ATTN_BWD, P_LAYERNORM,
    P_GELU, P_XENT, P_EMBED, P_BIAS_GRAD, P_REDUCE, P_ADAMW, P_COUNT
};

/* Only sphere PROF_SPH records (0; build with -DPROF_SPH=1 to see another
 * shard's side of a barrier), so the figures are one shard's wall time and
 * no lock is needed. */
#ifndef PROF_SPH
#define PROF_SPH 0
#endif

/* Time `stmt` into bucket k of model m when `on` (a sphere's prof flag,
 * see profile_arm, or the model's prof_on for the phases the calling
 * thread times whole). */
#define PROF(on, m, k, stmt) do { \
        if (on) { double t0_ = cllm_now_s(); stmt; (m)->prof_sec[k] += cllm_now_s() - t0_; (m)->prof_calls[k]++; } \
        else { stmt; } } while (0)

struct cllm_model;
/* Decide, once per call before the pool runs, which spheres record: each
 * sphere's `prof` flag is set (PROF_SPH while profiling is on) or cleared. */
void profile_arm(struct cllm_model *m);

#endif
