/* gemm_amx_emul.c - the AMX-BF16 micro-kernel (gemm_amx_body.h, the same
 * source as gemm_amx.c) compiled against the software tile model
 * (amx_model.h) with the portable packers and epilogue, so it runs on any
 * CPU. Selected only by asking for CLLM_BF16_KERNEL_AMX_EMUL (tests), never
 * automatically: it exists to check the AMX kernel's indexing and
 * arithmetic on hosts without AMX. */
#include "amx_model.h"
#include "gemm_bf16_impl.h"

/* this thread's tiles as cllm_amx_tiles_ready configures the real ones:
 * palette 1, all eight tiles 16 rows x 64 bytes */
static int emul_tiles_ready(void) {
    if (amx_model_configured()) return 1;
    amx_model_cfg cfg = {.palette_id = 1};
    for (int t = 0; t < AMX_MODEL_TILES; t++) {
        cfg.rows[t] = AMX_MODEL_MAX_ROWS;
        cfg.colsb[t] = AMX_MODEL_MAX_COLSB;
    }
    amx_model_load_config(&cfg);
    return 1;
}

#define AMX_UKERNEL_ATTR
#define AMX_UKERNEL_NAME ukernel_amx_emul
#define AMX_TILES_READY() emul_tiles_ready()
#define AMX_ZERO(t) amx_model_zero(t)
#define AMX_LOADD(t, base, s) amx_model_loadd(t, base, s)
#define AMX_STORED(t, base, s) amx_model_stored(t, base, s)
#define AMX_DPBF16PS(c, a, b) amx_model_dpbf16ps(c, a, b)
#define AMX_STORE_TILE bgemm_store_tile_portable
#include "gemm_amx_body.h"

const bgemm_kernel bgemm_kernel_amx_emul = {"amx_bf16_emul", AMX_MR, AMX_NR, AMX_KQ, bgemm_pack_a_portable,
                                            bgemm_pack_b_portable, ukernel_amx_emul};
