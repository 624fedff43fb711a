/* amx_model.h - a software model of the AMX tile state and of the four tile
 * instructions the AMX-BF16 GEMM kernel uses (TILEZERO, TILELOADD,
 * TILESTORED, TDPBF16PS), in plain C, for running that kernel's source on
 * CPUs without AMX (gemm_amx_emul.c). Private to csrc/gemm/.
 *
 * State: per thread, like the hardware's: eight 1 KiB tile registers and the
 * palette-1 configuration (rows, bytes per row of each tile). A use the
 * hardware rejects with #UD (an unconfigured tile, shapes TDPBF16PS cannot
 * multiply, repeated registers) or a configuration LDTILECFG rejects with
 * #GP is a programming error here too: the model prints one line naming
 * the check and aborts, as the real instruction would fault. */
#ifndef CLLM_AMX_MODEL_H
#define CLLM_AMX_MODEL_H
#include <stddef.h>
#include <stdint.h>

#define AMX_MODEL_TILES 8     /* palette 1: tmm0..tmm7                 */
#define AMX_MODEL_MAX_ROWS 16 /* palette 1: max_rows                   */
#define AMX_MODEL_MAX_COLSB 64 /* palette 1: bytes_per_row             */

/* The LDTILECFG operand's fields that palette 1 uses. */
typedef struct {
    uint8_t palette_id;
    uint8_t rows[AMX_MODEL_TILES];
    uint16_t colsb[AMX_MODEL_TILES];
} amx_model_cfg;

/* LDTILECFG: checks and installs cfg for this thread (palette 1 only,
 * rows <= 16, colsb <= 64, a tile has both rows and colsb or neither) and
 * zeroes every tile. */
void amx_model_load_config(const amx_model_cfg *cfg);
/* 1 once this thread has loaded a configuration. */
int amx_model_configured(void);
/* TILERELEASE: back to the unconfigured state. */
void amx_model_release(void);

/* TILEZERO tmm[t] */
void amx_model_zero(int t);
/* TILELOADD tmm[t], [base + stride*r]: rows x colsb bytes; the rest of the
 * register (bytes past colsb, rows past rows) reads as zero. */
void amx_model_loadd(int t, const void *base, long stride);
/* TILESTORED [base + stride*r], tmm[t]: rows x colsb bytes. */
void amx_model_stored(int t, void *base, long stride);
/* TDPBF16PS tmm[c], tmm[a], tmm[b] (see amx_model.c for the arithmetic). */
void amx_model_dpbf16ps(int c, int a, int b);
#endif
