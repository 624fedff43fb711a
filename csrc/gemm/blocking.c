/* blocking.c - the FP32 GEMM cache blocking (MC, KC, NC) of each ISA,
 * derived once per process from the detected cache sizes (runtime/cpu.c)
 * and the micro-kernel's register block, with CLLM_GEMM_MC/KC/NC overrides.
 *
 * Goto/BLIS layering (gemm_impl.h): the macro-kernel reuses one KC x NR
 * sliver of packed B across the MR x KC slivers of the MC x KC packed A block;
 * the KC x NC packed B panel lives in L3. The textbook rule keeps the B
 * sliver in L1 (KC*NR*4 <= L1d/2), but with the 6x64 AVX-512 kernel and a
 * 32 KiB L1d that gives KC = 64, and measured (bench/gemm_blocking.py, this
 * project's Zen 4 host) that runs 15-25% slower than KC = 256..512: at
 * 24 FMAs per 280 bytes of A and B the slivers stream from L2 well within its
 * bandwidth, and a short KC pays the C micro-tile load/store too often. So
 * the slivers are sized against L2:
 *   KC = multiple of 8 with KC*NR*4 ~ L2/8, clamped to [128, 512]
 *   MC = largest multiple of MR with MC*KC*4 <= L2/2, clamped to [MR, 1024]
 *   NC = largest multiple of NR with KC*NC*4 <= (L3 / CPUs sharing it)/2,
 *        clamped to [4*NR, 4096] (4096 when the L3 is unknown)
 * leaving room in each level for C, the streams and the prefetchers. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include "runtime/internal.h"
#include "gemm_isa.h"

#define N_ISA 3
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static gemm_blocking g_blocking[N_ISA];

static int clampi(int64_t v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : (int)v; }
static int round_up(int v, int q) { return (v + q - 1) / q * q; }
static int round_down(int v, int q) { return v / q * q > 0 ? v / q * q : q; }

static void regblock(int isa, int *mr, int *nr) {
    switch (isa) {
    case CLLM_ISA_AVX512: gemm_regblock_avx512(mr, nr); break;
    case CLLM_ISA_AVX2: gemm_regblock_avx2(mr, nr); break;
    default: gemm_regblock_scalar(mr, nr); break;
    }
}

/* cache-derived blocking of an ISA (no overrides) */
static gemm_blocking derive(int isa) {
    const cllm_cache_info *c = cllm_caches();
    gemm_blocking b;
    regblock(isa, &b.mr, &b.nr);
    b.kc = round_down(clampi(c->l2 / 8 / ((int64_t)b.nr * 4), 128, 512), 8);
    b.mc = round_down(clampi(c->l2 / 2 / ((int64_t)b.kc * 4), b.mr, 1024), b.mr);
    int64_t l3 = c->l3 > 0 ? c->l3 / c->l3_sharing : 0;
    b.nc = l3 > 0 ? round_down(clampi(l3 / 2 / ((int64_t)b.kc * 4), 4 * b.nr, 4096), b.nr) : round_down(4096, b.nr);
    return b;
}

/* explicit values (0 = keep b's), rounded up to their multiples and clamped */
static void apply(gemm_blocking *b, int mc, int kc, int nc) {
    if (kc > 0) b->kc = round_up(clampi(kc, 8, 65536), 8);
    if (mc > 0) b->mc = round_up(clampi(mc, b->mr, 65536), b->mr);
    if (nc > 0) b->nc = round_up(clampi(nc, b->nr, 65536), b->nr);
}

/* CLLM_GEMM_<what>: a positive integer, or 0 when unset/invalid (warned) */
static int env_block(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < 1 || x > 65536) {
        fprintf(stderr, "cllm: ignoring %s=%s (expected an integer in [1, 65536])\n", name, v);
        return 0;
    }
    return (int)x;
}

static void init_blocking(void) {
    int mc = env_block("CLLM_GEMM_MC"), kc = env_block("CLLM_GEMM_KC"), nc = env_block("CLLM_GEMM_NC");
    for (int isa = 0; isa < N_ISA; isa++) {
        g_blocking[isa] = derive(isa);
        apply(&g_blocking[isa], mc, kc, nc);
    }
}

const gemm_blocking *gemm_blocking_for(int isa) {
    pthread_once(&g_once, init_blocking);
    return &g_blocking[isa >= 0 && isa < N_ISA ? isa : 0];
}

gemm_blocking gemm_blocking_make(int isa, int mc, int kc, int nc) {
    gemm_blocking b = *gemm_blocking_for(isa);
    apply(&b, mc, kc, nc);
    return b;
}

CLLM_EXPORT int cllm_gemm_blocking(int isa, int *mr, int *nr, int *mc, int *kc, int *nc) {
    if (isa < CLLM_ISA_SCALAR || isa > CLLM_ISA_AVX512)
        return cllm_fail(CLLM_ERR_INVALID, "gemm_blocking: unknown ISA %d", isa);
    const gemm_blocking *b = gemm_blocking_for(isa);
    if (mr) *mr = b->mr;
    if (nr) *nr = b->nr;
    if (mc) *mc = b->mc;
    if (kc) *kc = b->kc;
    if (nc) *nc = b->nc;
    return CLLM_OK;
}
