/* profile_ops.h - the training step's profiler buckets (which also size
 * the model's counters) and the PROF timing macro. Header-only and
 * includes nothing, so model.h can include it; the profiler's functions
 * are declared in profile.h. */
#ifndef CLLM_MODEL_PROFILE_OPS_H
#define CLLM_MODEL_PROFILE_OPS_H

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

#endif
