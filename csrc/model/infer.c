/* infer.c - the training model's batch-1 inference API (cllm_model_infer_*,
 * cllm_model_decoder): an FP32 cllm_decoder (decode.c) that borrows the
 * model's parameter buffer (so it sees every training update) and runs on
 * the model's own sphere pool. */
#include <stdio.h>
#include "model.h"
#include "decode.h"

CLLM_EXPORT int cllm_model_decoder(cllm_model *m, cllm_decoder **out) {
    CLLM_CHECK_PTR(m, "model"); CLLM_CHECK_PTR(out, "out");
    if (!m->dec) {
        cllm_decoder *d = NULL;
        int rc = cllm_decoder_new_on_pool(&m->cfg, CLLM_DTYPE_F32, m->pool, &d);
        if (rc) return rc;
        for (int i = 0; i < m->ntensors; i++) {
            rc = cllm_decoder_set_tensor(d, i, m->params + m->tensors[i].offset, CLLM_DTYPE_F32, 1);
            if (rc) { cllm_decoder_free(d); return rc; }
        }
        m->dec = d;
    }
    *out = m->dec;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_model_infer_reset(cllm_model *m) {
    cllm_decoder *d;
    int rc = cllm_model_decoder(m, &d);
    return rc ? rc : cllm_decoder_reset(d);
}

CLLM_EXPORT int cllm_model_infer_pos(const cllm_model *m, int *pos) {
    CLLM_CHECK_PTR(m, "model"); CLLM_CHECK_PTR(pos, "pos");
    *pos = 0;
    return m->dec ? cllm_decoder_pos(m->dec, pos) : CLLM_OK;
}

CLLM_EXPORT int cllm_model_infer_step(cllm_model *m, int32_t token, float *logits) {
    CLLM_CHECK_PTR(logits, "logits");
    cllm_decoder *d;
    int rc = cllm_model_decoder(m, &d);
    return rc ? rc : cllm_decoder_step(d, token, logits);
}
