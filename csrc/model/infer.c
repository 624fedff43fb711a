/* infer.c - the training model's decoder (cllm_model_decoder): the same
 * FP32 cllm_decoder (decode.c) that cllm.load(..., dtype="fp32") builds,
 * with the model's parameters COPIED into its own weight arena (row-major
 * matrices, the row matvec kernels), running on the model's sphere pool.
 *
 * The copy is made on demand: cllm_model_decoder fills it when it is empty,
 * and whatever may change the parameters releases it (the arena is unmapped,
 * the decoder struct and so every handle to it stay valid): cllm_model_init,
 * and cllm_model_release_decoder, which callers that write params from
 * outside or train (the Python Model before each training call) invoke. */
#include "model.h"
#include "decode.h"

/* copy every parameter tensor into d (FP32, borrow = 0) */
static int fill(cllm_model *m, cllm_decoder *d) {
    for (int i = 0; i < m->ntensors; i++) {
        int rc = cllm_decoder_set_tensor(d, i, m->params + m->tensors[i].offset, CLLM_DTYPE_F32, 0);
        if (rc) { cllm_decoder_release_weights(d); return rc; }
    }
    return cllm_decoder_reset(d);
}

CLLM_EXPORT int cllm_model_decoder(cllm_model *m, cllm_decoder **out) {
    CLLM_CHECK_PTR(m, "model"); CLLM_CHECK_PTR(out, "out");
    *out = NULL;
    if (!m->dec) {
        int rc = cllm_decoder_new_on_pool(&m->cfg, CLLM_DTYPE_F32, m->pool, &m->dec);
        if (rc) return rc;
    }
    if (!cllm_decoder_has_weights(m->dec)) {
        int rc = fill(m, m->dec);
        if (rc) return rc;
    }
    *out = m->dec;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_model_release_decoder(cllm_model *m) {
    CLLM_CHECK_PTR(m, "model");
    return cllm_decoder_release_weights(m->dec);
}
