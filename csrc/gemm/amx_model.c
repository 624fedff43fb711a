/* amx_model.c - the AMX tile model (amx_model.h).
 *
 * TDPBF16PS arithmetic, as Intel's SDM (vol. 2, TDPBF16PS "Operation")
 * defines it, for each row m of the destination and column n:
 *   t_even = t_odd = +0
 *   for k = 0 .. a.colsb/4 - 1 (the BF16 pairs of row m of A, in order):
 *       t_even = fma(A[m].bf16[2k],   B[k].bf16[2n],   t_even)
 *       t_odd  = fma(A[m].bf16[2k+1], B[k].bf16[2n+1], t_odd)
 *   C[m][n] = C[m][n] + (t_even + t_odd)
 * Every operation is FP32, round to nearest even whatever MXCSR says (MXCSR
 * is neither read nor written), with input denormals treated as zero (DAZ:
 * the BF16 inputs and C) and denormal results flushed to zero (FTZ: each
 * fma and each add). A BF16 x BF16 product is exact in FP32 (8-bit x 8-bit
 * significands) unless it underflows, so each fma is one rounding of the
 * running sum. The intrinsics guide writes the same loop as one running sum
 * per element (even then odd product added in turn); the SDM's two partial
 * sums are modelled here, and the tests of the real kernel allow any order
 * (tests/test_amx.py). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/bf16.h"
#include "amx_model.h"

typedef struct {
    int configured;
    amx_model_cfg cfg;
    uint8_t reg[AMX_MODEL_TILES][AMX_MODEL_MAX_ROWS * AMX_MODEL_MAX_COLSB];
} amx_model_state;

static _Thread_local amx_model_state g_tiles;

__attribute__((noreturn)) static void amx_fault(const char *insn, const char *why, int t) {
    fprintf(stderr, "cllm: AMX model: %s tmm%d: %s (the hardware faults here)\n", insn, t, why);
    abort();
}

void amx_model_load_config(const amx_model_cfg *cfg) {
    if (cfg->palette_id != 1) amx_fault("ldtilecfg", "palette other than 1", 0);
    for (int t = 0; t < AMX_MODEL_TILES; t++) {
        if (cfg->rows[t] > AMX_MODEL_MAX_ROWS) amx_fault("ldtilecfg", "more than 16 rows", t);
        if (cfg->colsb[t] > AMX_MODEL_MAX_COLSB) amx_fault("ldtilecfg", "more than 64 bytes per row", t);
        if ((cfg->rows[t] == 0) != (cfg->colsb[t] == 0)) amx_fault("ldtilecfg", "rows or colsb zero, not both", t);
    }
    g_tiles.cfg = *cfg;
    memset(g_tiles.reg, 0, sizeof g_tiles.reg);
    g_tiles.configured = 1;
}

int amx_model_configured(void) { return g_tiles.configured; }

void amx_model_release(void) { memset(&g_tiles, 0, sizeof g_tiles); }

/* a valid, configured tile register (#UD otherwise) */
static void check_tile(const char *insn, int t) {
    if (t < 0 || t >= AMX_MODEL_TILES) amx_fault(insn, "no such tile register", t);
    if (!g_tiles.configured) amx_fault(insn, "tiles not configured (no ldtilecfg)", t);
    if (g_tiles.cfg.rows[t] == 0) amx_fault(insn, "tile not configured (0 rows)", t);
}

void amx_model_zero(int t) {
    check_tile("tilezero", t);
    memset(g_tiles.reg[t], 0, sizeof g_tiles.reg[t]);
}

void amx_model_loadd(int t, const void *base, long stride) {
    check_tile("tileloadd", t);
    int rows = g_tiles.cfg.rows[t], colsb = g_tiles.cfg.colsb[t];
    memset(g_tiles.reg[t], 0, sizeof g_tiles.reg[t]);
    for (int r = 0; r < rows; r++)
        memcpy(g_tiles.reg[t] + (size_t)r * AMX_MODEL_MAX_COLSB, (const uint8_t *)base + (ptrdiff_t)r * stride,
               (size_t)colsb);
}

void amx_model_stored(int t, void *base, long stride) {
    check_tile("tilestored", t);
    int rows = g_tiles.cfg.rows[t], colsb = g_tiles.cfg.colsb[t];
    for (int r = 0; r < rows; r++)
        memcpy((uint8_t *)base + (ptrdiff_t)r * stride, g_tiles.reg[t] + (size_t)r * AMX_MODEL_MAX_COLSB,
               (size_t)colsb);
}

/* denormal -> zero of the same sign (DAZ on inputs, FTZ on results) */
static inline float flush(float x) { return fpclassify(x) == FP_SUBNORMAL ? copysignf(0.0f, x) : x; }

static inline float reg_f32(int t, int row, int col) {
    float v;
    memcpy(&v, g_tiles.reg[t] + (size_t)row * AMX_MODEL_MAX_COLSB + 4 * (size_t)col, sizeof v);
    return v;
}

static inline float reg_bf16(int t, int row, int idx) {
    uint16_t h;
    memcpy(&h, g_tiles.reg[t] + (size_t)row * AMX_MODEL_MAX_COLSB + 2 * (size_t)idx, sizeof h);
    return flush(cllm_bf16_to_f32(h));
}

void amx_model_dpbf16ps(int c, int a, int b) {
    static const char insn[] = "tdpbf16ps";
    check_tile(insn, c);
    check_tile(insn, a);
    check_tile(insn, b);
    if (c == a || c == b || a == b) amx_fault(insn, "source and destination registers must differ", c);
    const amx_model_cfg *g = &g_tiles.cfg;
    int M = g->rows[c], N = g->colsb[c] / 4, K = g->colsb[a] / 4;
    if (g->colsb[c] % 4 || g->colsb[a] % 4 || g->colsb[b] % 4)
        amx_fault(insn, "bytes per row not a multiple of 4", c);
    if (g->rows[a] != M) amx_fault(insn, "rows of A differ from rows of C", a);
    if (g->colsb[b] != g->colsb[c]) amx_fault(insn, "bytes per row of B differ from C's", b);
    if (g->rows[b] != K) amx_fault(insn, "rows of B differ from the pairs per row of A", b);
    float out[AMX_MODEL_MAX_COLSB / 4];
    for (int m = 0; m < M; m++) {
        for (int n = 0; n < N; n++) {
            float te = 0.0f, to = 0.0f;
            for (int k = 0; k < K; k++) {
                te = flush(fmaf(reg_bf16(a, m, 2 * k), reg_bf16(b, k, 2 * n), te));
                to = flush(fmaf(reg_bf16(a, m, 2 * k + 1), reg_bf16(b, k, 2 * n + 1), to));
            }
            out[n] = flush(flush(reg_f32(c, m, n)) + flush(te + to));
        }
        /* write_row_and_zero: the row's bytes past colsb become zero */
        uint8_t *row = g_tiles.reg[c] + (size_t)m * AMX_MODEL_MAX_COLSB;
        memset(row, 0, AMX_MODEL_MAX_COLSB);
        memcpy(row, out, sizeof(float) * (size_t)N);
    }
    /* zero_upper_rows */
    memset(g_tiles.reg[c] + (size_t)M * AMX_MODEL_MAX_COLSB, 0, (size_t)(AMX_MODEL_MAX_ROWS - M) * AMX_MODEL_MAX_COLSB);
}
