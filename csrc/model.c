/* model.c - STUB: replaced by the real model. */
#include "internal.h"
CLLM_EXPORT int cllm_config_validate(const cllm_config *cfg) { return cllm_fail(CLLM_ERR_STATE, "cllm_config_validate: not implemented yet"); }
CLLM_EXPORT int cllm_config_memory(const cllm_config *cfg, double *bytes) { return cllm_fail(CLLM_ERR_STATE, "cllm_config_memory: not implemented yet"); }
CLLM_EXPORT int cllm_model_new(const cllm_config *cfg, cllm_model **out) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_new: not implemented yet"); }
CLLM_EXPORT int cllm_model_free(cllm_model *m) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_free: not implemented yet"); }
CLLM_EXPORT int cllm_model_get_config(const cllm_model *m, cllm_config *out) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_get_config: not implemented yet"); }
CLLM_EXPORT int cllm_model_init(cllm_model *m, uint64_t seed) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_init: not implemented yet"); }
CLLM_EXPORT int cllm_model_num_params(const cllm_model *m, size_t *n) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_num_params: not implemented yet"); }
CLLM_EXPORT int cllm_model_num_tensors(const cllm_model *m, int *n) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_num_tensors: not implemented yet"); }
CLLM_EXPORT int cllm_model_tensor_info(const cllm_model *m, int index, cllm_tensor_info *out) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_tensor_info: not implemented yet"); }
CLLM_EXPORT int cllm_model_buffers(cllm_model *m, float **params, float **grads,
                       float **adam_m, float **adam_v) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_buffers: not implemented yet"); }
CLLM_EXPORT int cllm_model_spheres(cllm_model *m, cllm_spheres **out) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_spheres: not implemented yet"); }
CLLM_EXPORT int cllm_model_forward(cllm_model *m, const int32_t *inputs,
                       const int32_t *targets, int B, int T, float *loss) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_forward: not implemented yet"); }
CLLM_EXPORT int cllm_model_backward(cllm_model *m) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_backward: not implemented yet"); }
CLLM_EXPORT int cllm_model_grad_norm(cllm_model *m, float *norm) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_grad_norm: not implemented yet"); }
CLLM_EXPORT int cllm_model_adamw(cllm_model *m, const cllm_adamw *opt, int t, float *grad_norm) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_adamw: not implemented yet"); }
CLLM_EXPORT int cllm_model_train_step(cllm_model *m, const int32_t *inputs,
                          const int32_t *targets, int B, int T,
                          const cllm_adamw *opt, int t, float *loss,
                          float *grad_norm) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_train_step: not implemented yet"); }
CLLM_EXPORT int cllm_model_logits(cllm_model *m, const int32_t *inputs, int B, int T,
                      float *out) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_logits: not implemented yet"); }
CLLM_EXPORT int cllm_model_infer_reset(cllm_model *m) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_infer_reset: not implemented yet"); }
CLLM_EXPORT int cllm_model_infer_step(cllm_model *m, int32_t token, float *logits) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_infer_step: not implemented yet"); }
CLLM_EXPORT int cllm_model_infer_pos(const cllm_model *m, int *pos) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_infer_pos: not implemented yet"); }
CLLM_EXPORT int cllm_model_sample(cllm_model *m, const float *logits, float temperature,
                      int top_k, float top_p, uint64_t *rng_state,
                      int32_t *out) { return cllm_fail(CLLM_ERR_STATE, "cllm_model_sample: not implemented yet"); }
