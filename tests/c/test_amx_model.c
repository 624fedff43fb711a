/* test_amx_model.c - C driver for the AMX tile model (csrc/gemm/amx_model.c),
 * built and run by tests/test_amx.py: the instructions' data movement on a
 * ragged configuration, TDPBF16PS on a small hand-checked product, and
 * every check that makes the hardware fault, each run in a child process
 * that must abort with the model's one-line message.
 * Prints "OK: <n> failure(s)" and exits non-zero on any failure. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "gemm/amx_model.h"
#include "kernels/bf16.h"

static int g_fail;
#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            g_fail++;                                                      \
        }                                                                  \
    } while (0)

static amx_model_cfg cfg_all(int rows, int colsb) {
    amx_model_cfg c = {.palette_id = 1};
    for (int t = 0; t < AMX_MODEL_TILES; t++) {
        c.rows[t] = (uint8_t)rows;
        c.colsb[t] = (uint16_t)colsb;
    }
    return c;
}

/* tile 0: 3 rows x 12 bytes; loads read only that, stores write only that */
static void test_load_store_ragged(void) {
    amx_model_cfg c = cfg_all(16, 64);
    c.rows[0] = 3;
    c.colsb[0] = 12;
    amx_model_load_config(&c);
    uint8_t src[16 * 64], dst[5 * 20];
    for (int i = 0; i < (int)sizeof src; i++) src[i] = (uint8_t)(i * 7 + 1);
    memset(dst, 0xEE, sizeof dst);
    amx_model_loadd(0, src, 20);
    amx_model_stored(0, dst, 20);
    for (int r = 0; r < 5; r++)
        for (int b = 0; b < 20; b++) {
            int in = r < 3 && b < 12;
            CHECK(dst[r * 20 + b] == (in ? src[r * 20 + b] : 0xEE));
        }
    /* through a full-size tile: the bytes past the loaded block read as zero */
    amx_model_loadd(1, src, 4); /* overlapping rows: a stride is just an offset */
    uint8_t full[16 * 64];
    amx_model_stored(1, full, 64);
    for (int r = 0; r < 16; r++) CHECK(full[r * 64] == src[r * 4] && full[r * 64 + 63] == src[r * 4 + 63]);
    amx_model_zero(1);
    amx_model_stored(1, full, 64);
    for (int i = 0; i < 16 * 64; i++) CHECK(full[i] == 0);
    amx_model_release();
    CHECK(!amx_model_configured());
}

/* C[2x4] (tile 0: 2 rows x 16 bytes) += A[2 x 3 pairs] (tile 1: 2 x 12) x
 * B[3 pairs x 4] (tile 2: 3 rows x 16 bytes), against plain loops */
static void test_dpbf16ps_small(void) {
    amx_model_cfg c = {.palette_id = 1};
    c.rows[0] = 2, c.colsb[0] = 16;
    c.rows[1] = 2, c.colsb[1] = 12;
    c.rows[2] = 3, c.colsb[2] = 16;
    amx_model_load_config(&c);
    uint16_t A[2][6], B[3][8];
    float C[2][4], want[2][4];
    for (int m = 0; m < 2; m++)
        for (int k = 0; k < 6; k++) A[m][k] = cllm_bf16_from_f32((float)(m * 6 + k) - 5.0f);
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < 8; i++) B[p][i] = cllm_bf16_from_f32(0.5f * (float)(p * 8 + i) - 3.0f);
    for (int m = 0; m < 2; m++)
        for (int n = 0; n < 4; n++) {
            C[m][n] = (float)(m - n);
            float e = 0.0f, o = 0.0f;
            for (int p = 0; p < 3; p++) {
                e += cllm_bf16_to_f32(A[m][2 * p]) * cllm_bf16_to_f32(B[p][2 * n]);
                o += cllm_bf16_to_f32(A[m][2 * p + 1]) * cllm_bf16_to_f32(B[p][2 * n + 1]);
            }
            want[m][n] = C[m][n] + (e + o); /* small integers and halves: exact */
        }
    amx_model_loadd(0, C, sizeof C[0]);
    amx_model_loadd(1, A, sizeof A[0]);
    amx_model_loadd(2, B, sizeof B[0]);
    amx_model_dpbf16ps(0, 1, 2);
    float out[2][4];
    amx_model_stored(0, out, sizeof out[0]);
    for (int m = 0; m < 2; m++)
        for (int n = 0; n < 4; n++) CHECK(out[m][n] == want[m][n]);
    amx_model_release();
}

/* each case must abort with a message containing `expect` */
typedef void (*fault_fn)(void);
static void f_palette(void) { amx_model_cfg c = cfg_all(16, 64); c.palette_id = 0; amx_model_load_config(&c); }
static void f_rows(void) { amx_model_cfg c = cfg_all(17, 64); amx_model_load_config(&c); }
static void f_colsb(void) { amx_model_cfg c = cfg_all(16, 68); amx_model_load_config(&c); }
static void f_half(void) { amx_model_cfg c = cfg_all(16, 64); c.colsb[3] = 0; amx_model_load_config(&c); }
static void f_unconfigured(void) { amx_model_zero(0); }
static void f_tile_off(void) {
    amx_model_cfg c = cfg_all(16, 64);
    c.rows[5] = 0, c.colsb[5] = 0;
    amx_model_load_config(&c);
    uint8_t buf[16 * 64] = {0};
    amx_model_loadd(5, buf, 64);
}
static void f_bad_reg(void) { amx_model_cfg c = cfg_all(16, 64); amx_model_load_config(&c); amx_model_zero(8); }
static void f_same_reg(void) { amx_model_cfg c = cfg_all(16, 64); amx_model_load_config(&c); amx_model_dpbf16ps(0, 0, 1); }
/* tdpbf16ps tmm0, tmm1, tmm2 with every tile 16 x 64 but tile t rows x colsb */
static void dp_with_tile(int t, int rows, int colsb) {
    amx_model_cfg c = cfg_all(16, 64);
    c.rows[t] = (uint8_t)rows;
    c.colsb[t] = (uint16_t)colsb;
    amx_model_load_config(&c);
    amx_model_dpbf16ps(0, 1, 2);
}
static void f_m(void) { dp_with_tile(1, 8, 64); }
static void f_n(void) { dp_with_tile(2, 16, 32); }
static void f_k(void) { dp_with_tile(1, 16, 32); }
static void f_mult4(void) { dp_with_tile(0, 16, 62); }

static void expect_fault(const char *name, fault_fn fn, const char *expect) {
    int pipefd[2];
    if (pipe(pipefd)) { perror("pipe"); g_fail++; return; }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        fn();
        _exit(0); /* no fault: the parent reports it */
    }
    close(pipefd[1]);
    char msg[512] = {0};
    size_t got = 0;
    ssize_t n;
    while (got < sizeof msg - 1 && (n = read(pipefd[0], msg + got, sizeof msg - 1 - got)) > 0) got += (size_t)n;
    close(pipefd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    int aborted = WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
    if (!aborted || !strstr(msg, expect) || !strstr(msg, "cllm: AMX model: ")) {
        fprintf(stderr, "FAIL fault case %s: aborted=%d message=%s", name, aborted, msg);
        g_fail++;
    }
}

int main(void) {
    test_load_store_ragged();
    test_dpbf16ps_small();
    static const struct {
        const char *name;
        fault_fn fn;
        const char *expect;
    } faults[] = {
        {"palette", f_palette, "palette other than 1"},
        {"rows", f_rows, "more than 16 rows"},
        {"colsb", f_colsb, "more than 64 bytes per row"},
        {"half", f_half, "rows or colsb zero, not both"},
        {"unconfigured", f_unconfigured, "tiles not configured"},
        {"tile_off", f_tile_off, "tile not configured (0 rows)"},
        {"bad_reg", f_bad_reg, "no such tile register"},
        {"same_reg", f_same_reg, "registers must differ"},
        {"m", f_m, "rows of A differ from rows of C"},
        {"n", f_n, "bytes per row of B differ from C's"},
        {"k", f_k, "rows of B differ from the pairs per row of A"},
        {"mult4", f_mult4, "not a multiple of 4"},
    };
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++)
        expect_fault(faults[i].name, faults[i].fn, faults[i].expect);
    printf("OK: %d failure(s)\n", g_fail);
    return g_fail != 0;
}
