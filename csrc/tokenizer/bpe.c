/* bpe.c - byte-level BPE tokenizer: pre-tokenizer, trainer, encoder, decoder.
 *
 * Layout
 *   strmap      byte-string -> dense index hash set (insertion ordered)
 *   pairmap     uint64 (a << 32 | b) -> int32 hash map
 *   pretokenize the code-aware splitter (see cllm.h for the grammar)
 *   tokenizer   vocabulary, merges (pair -> rank), specials, encode cache
 *   trainer     unique pre-token counts, per-pair counts and word lists,
 *               a max-heap with lazy deletion; each merge updates only the
 *               words that contain the merged pair (no recount per merge)
 *   encode      specials split, pre-tokenize, per-word merges by rank
 *               (rank scan for short words, a heap for long ones), cached
 */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/internal.h"

/* *p = realloc(*p, n * elem); -1 (leaving *p valid) when out of memory */
static int grow_array(void **p, size_t n, size_t elem) {
    void *q = realloc(*p, n * elem);
    if (!q) return -1;
    *p = q;
    return 0;
}

/* Every growable array here grows the same way: to hold `need` elements,
 * capacity `cap` becomes the first of 2 cap, 4 cap, ... (of first, 2 first,
 * ... when empty) that does. Returns that capacity, or 0 if cap suffices. */
static size_t grown_cap(size_t cap, size_t need, size_t first) {
    if (need <= cap) return 0;
    size_t c = cap ? cap * 2 : first;
    while (c < need) c *= 2;
    return c;
}

/* Capacity for `need` elements of size `elem` in the array *p of capacity
 * *cap (grown as grown_cap says). -1 when out of memory (*p unchanged). */
static int reserve(void **p, size_t *cap, size_t need, size_t first, size_t elem) {
    size_t c = grown_cap(*cap, need, first);
    if (!c) return 0;
    if (grow_array(p, c, elem)) return -1;
    *cap = c;
    return 0;
}

/* reserve for three parallel arrays sharing the capacity *cap (-1 when out
 * of memory: the arrays that did grow keep their new size, *cap the old). */
static int reserve3(size_t *cap, size_t need, size_t first, void **a, size_t ea, void **b, size_t eb, void **c,
                    size_t ec) {
    size_t k = grown_cap(*cap, need, first);
    if (!k) return 0;
    if (grow_array(a, k, ea) || grow_array(b, k, eb) || grow_array(c, k, ec)) return -1;
    *cap = k;
    return 0;
}

/* ------------------------------------------------------------ hashing */
static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 33; h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static inline uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0x100000001b3ull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
        p += 8; n -= 8;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    h = (h ^ v) * 0x94d049bb133111ebull;
    return mix64(h);
}

/* ------------------------------------------------------------- strmap */
/* Open-addressed set of byte strings; entries are dense indices 0..n-1 in
 * insertion order, their bytes in one arena. */
typedef struct {
    int32_t *slots;     /* -1 empty, else entry index                */
    size_t nslots;      /* power of two                              */
    uint64_t *hash;     /* per entry                                 */
    uint64_t *off;      /* per entry, into arena                     */
    uint32_t *len;      /* per entry                                 */
    size_t n, cap;
    uint8_t *arena;
    size_t arena_len, arena_cap;
} strmap;

static void strmap_free(strmap *m) {
    free(m->slots); free(m->hash); free(m->off); free(m->len); free(m->arena);
    memset(m, 0, sizeof *m);
}

static int strmap_init(strmap *m, size_t nslots) {
    memset(m, 0, sizeof *m);
    size_t s = 16;
    while (s < nslots) s <<= 1;
    m->slots = malloc(s * sizeof *m->slots);
    if (!m->slots) return -1;
    memset(m->slots, 0xff, s * sizeof *m->slots);
    m->nslots = s;
    return 0;
}

static int strmap_grow_slots(strmap *m) {
    size_t s = m->nslots * 2;
    int32_t *ns = malloc(s * sizeof *ns);
    if (!ns) return -1;
    memset(ns, 0xff, s * sizeof *ns);
    for (size_t i = 0; i < m->n; i++) {
        size_t j = m->hash[i] & (s - 1);
        while (ns[j] >= 0) j = (j + 1) & (s - 1);
        ns[j] = (int32_t)i;
    }
    free(m->slots);
    m->slots = ns;
    m->nslots = s;
    return 0;
}

static inline int64_t strmap_find_h(const strmap *m, const uint8_t *p, size_t n, uint64_t h) {
    size_t j = h & (m->nslots - 1);
    for (;;) {
        int32_t e = m->slots[j];
        if (e < 0) return -1;
        if (m->hash[e] == h && m->len[e] == n && memcmp(m->arena + m->off[e], p, n) == 0) return e;
        j = (j + 1) & (m->nslots - 1);
    }
}

static inline int64_t strmap_find(const strmap *m, const uint8_t *p, size_t n) {
    return strmap_find_h(m, p, n, hash_bytes(p, n));
}

/* Index of p (added if absent; *added set). -1 on allocation failure. */
static int64_t strmap_add_h(strmap *m, const uint8_t *p, size_t n, uint64_t h, int *added) {
    size_t j = h & (m->nslots - 1);
    for (;;) {
        int32_t e = m->slots[j];
        if (e < 0) break;
        if (m->hash[e] == h && m->len[e] == n && memcmp(m->arena + m->off[e], p, n) == 0) {
            if (added) *added = 0;
            return e;
        }
        j = (j + 1) & (m->nslots - 1);
    }
    if (m->n >= INT32_MAX - 1 || n > UINT32_MAX) return -1;
    if (reserve3(&m->cap, m->n + 1, 1024, (void **)&m->hash, sizeof *m->hash, (void **)&m->off, sizeof *m->off,
                 (void **)&m->len, sizeof *m->len) ||
        reserve((void **)&m->arena, &m->arena_cap, m->arena_len + n, 4096, 1))
        return -1;
    if (n) memcpy(m->arena + m->arena_len, p, n);
    size_t e = m->n++;
    m->hash[e] = h;
    m->off[e] = m->arena_len;
    m->len[e] = (uint32_t)n;
    m->arena_len += n;
    m->slots[j] = (int32_t)e;
    if (m->n * 2 > m->nslots && strmap_grow_slots(m) != 0) return -1;
    if (added) *added = 1;
    return (int64_t)e;
}

/* ------------------------------------------------------------ pairmap */
#define PAIR_EMPTY UINT64_MAX
typedef struct {
    uint64_t *keys;
    int32_t *vals;
    size_t nslots, n;
} pairmap;

static inline uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static void pairmap_free(pairmap *m) { free(m->keys); free(m->vals); memset(m, 0, sizeof *m); }

static int pairmap_init(pairmap *m, size_t nslots) {
    size_t s = 16;
    while (s < nslots) s <<= 1;
    m->keys = malloc(s * sizeof *m->keys);
    m->vals = malloc(s * sizeof *m->vals);
    if (!m->keys || !m->vals) { pairmap_free(m); return -1; }
    memset(m->keys, 0xff, s * sizeof *m->keys);
    m->nslots = s;
    m->n = 0;
    return 0;
}

static inline int32_t pairmap_get(const pairmap *m, uint64_t k) {
    size_t j = mix64(k) & (m->nslots - 1);
    for (;;) {
        uint64_t kk = m->keys[j];
        if (kk == k) return m->vals[j];
        if (kk == PAIR_EMPTY) return -1;
        j = (j + 1) & (m->nslots - 1);
    }
}

static int pairmap_grow(pairmap *m) {
    pairmap n2;
    if (pairmap_init(&n2, m->nslots * 2) != 0) return -1;
    for (size_t i = 0; i < m->nslots; i++) {
        if (m->keys[i] == PAIR_EMPTY) continue;
        size_t j = mix64(m->keys[i]) & (n2.nslots - 1);
        while (n2.keys[j] != PAIR_EMPTY) j = (j + 1) & (n2.nslots - 1);
        n2.keys[j] = m->keys[i];
        n2.vals[j] = m->vals[i];
    }
    n2.n = m->n;
    pairmap_free(m);
    *m = n2;
    return 0;
}

/* Value slot for k (inserted with value `init` if absent); NULL on OOM. */
static inline int32_t *pairmap_slot(pairmap *m, uint64_t k, int32_t init, int *added) {
    if ((m->n + 1) * 2 > m->nslots && pairmap_grow(m) != 0) return NULL;
    size_t j = mix64(k) & (m->nslots - 1);
    for (;;) {
        uint64_t kk = m->keys[j];
        if (kk == k) { if (added) *added = 0; return &m->vals[j]; }
        if (kk == PAIR_EMPTY) break;
        j = (j + 1) & (m->nslots - 1);
    }
    m->keys[j] = k;
    m->vals[j] = init;
    m->n++;
    if (added) *added = 1;
    return &m->vals[j];
}

/* --------------------------------------------------------- pretokenize */
/* Character classes over bytes: every byte >= 0x80 is a letter (it belongs
 * to a non-ASCII code point, all of which the regex puts in L). */
enum { C_W = 0, C_L = 1, C_D = 2, C_P = 3 };
static uint8_t g_cls[256];
static pthread_once_t g_cls_once = PTHREAD_ONCE_INIT;

/* \p{L} / \p{N} as sorted inclusive code point ranges, expanded from the
 * generated run-length strings by cls_init (every path to the pre-tokenizers
 * runs it first). */
#include "unicode_tables.h"
static uint32_t g_uni_letter[CLLM_UNI_LETTER_RANGES][2], g_uni_number[CLLM_UNI_NUMBER_RANGES][2];

static uint32_t rle_number(const char **s) {
    uint32_t v = 0;
    for (;;) {
        const char *d = strchr(CLLM_UNI_DIGITS, *(*s)++);
        int x = d ? (int)(d - CLLM_UNI_DIGITS) : 0;  /* generated text: always a digit */
        v = v * 32 + (uint32_t)(x & 31);
        if (x < 32) return v;
    }
}

static void rle_expand(const char *s, uint32_t (*r)[2], size_t n) {
    uint32_t next = 0;
    for (size_t i = 0; i < n; i++) {
        r[i][0] = next + rle_number(&s);
        r[i][1] = r[i][0] + rle_number(&s);
        next = r[i][1] + 1;
    }
}

static void cls_init(void) {
    rle_expand(cllm_uni_letter_rle, g_uni_letter, CLLM_UNI_LETTER_RANGES);
    rle_expand(cllm_uni_number_rle, g_uni_number, CLLM_UNI_NUMBER_RANGES);
    for (int c = 0; c < 256; c++) {
        uint8_t k = C_P;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r') k = C_W;
        else if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c >= 0x80) k = C_L;
        else if (c >= '0' && c <= '9') k = C_D;
        g_cls[c] = k;
    }
}

/* End of the pre-token starting at i (< n). Mirrors, alternative by
 * alternative, the regex  ` ?L[LD]*| ?D+| ?P+|W+(?!\S)|W+`. */
static inline size_t pretok_next(const uint8_t *s, size_t i, size_t n) {
    const uint8_t *cls = g_cls;
    size_t j = i;
    int k = cls[s[i]];
    if (s[i] == ' ' && i + 1 < n && cls[s[i + 1]] != C_W) {
        j = i + 1;
        k = cls[s[j]];
    }
    if (k == C_L) {
        j++;
        while (j < n && (cls[s[j]] == C_L || cls[s[j]] == C_D)) j++;
        return j;
    }
    if (k == C_D || k == C_P) {
        j++;
        while (j < n && cls[s[j]] == k) j++;
        return j;
    }
    /* whitespace run [i, j) */
    j = i + 1;
    while (j < n && cls[s[j]] == C_W) j++;
    if (j == n || j - i == 1) return j;  /* at end, or W+ (single char) */
    return j - 1;                        /* W+(?!\S): leave the last one */
}

/* GPT-2's pre-tokenizer (the regex of its byte-level BPE, as in Hugging
 * Face tokenizers' ByteLevel(use_regex=True)):
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * over Unicode code points decoded from UTF-8 (a byte that does not start a
 * valid sequence is one "other" character). \p{L} / \p{N} come from the
 * generated range tables (g_uni_*); \s is Unicode White_Space.
 * With `digits` (CLLM_PRETOK_STARCODER) it is StarCoder's pre-tokenizer,
 * tokenizers' Digits(individual_digits=true) then the same regex: every
 * \p{N} character is a pre-token of its own and the regex runs inside each
 * stretch between them, so a digit ends a stretch like the end of the text
 * does (no ` ?` before it, and `\s+(?!\S)` takes the whole run before it). */

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

static int is_white_space(uint32_t c) {
    return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* class (C_W, C_L, C_D = \p{N}, C_P) and byte length of the character at s[i] */
static int u_class(const uint8_t *s, size_t i, size_t n, size_t *len) {
    uint32_t c = s[i];
    size_t k = 1;
    if (c >= 0x80) {
        size_t need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
        uint32_t v = need == 4 ? c & 7 : need == 3 ? c & 15 : c & 31;
        size_t m = 1;
        while (m < need && i + m < n && (s[i + m] & 0xC0) == 0x80) v = (v << 6) | (s[i + m++] & 0x3F);
        int ok = need && m == need && !(need == 3 && (v < 0x800 || (v >= 0xD800 && v <= 0xDFFF))) &&
                 !(need == 4 && (v < 0x10000 || v > 0x10FFFF));
        if (!ok) { *len = 1; return C_P; }
        c = v;
        k = need;
    }
    *len = k;
    if (is_white_space(c)) return C_W;
    if (c < 0x80) {
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) return C_L;
        return c >= '0' && c <= '9' ? C_D : C_P;
    }
    if (in_ranges(g_uni_letter, CLLM_UNI_LETTER_RANGES, c)) return C_L;
    if (in_ranges(g_uni_number, CLLM_UNI_NUMBER_RANGES, c)) return C_D;
    return C_P;
}

static size_t pretok_next_gpt2(const uint8_t *s, size_t i, size_t n, int digits) {
    if (s[i] == '\'' && i + 1 < n) {
        uint8_t a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
    size_t len, j = i;
    int k = u_class(s, i, n, &len);
    if (digits && k == C_D) return i + len;   /* an isolated \p{N} character */
    if (s[i] == ' ' && i + 1 < n) {
        size_t l2;
        int k2 = u_class(s, i + 1, n, &l2);
        if (k2 != C_W && !(digits && k2 == C_D)) { j = i + 1; k = k2; len = l2; }
    }
    if (k != C_W) {   /* a run of one class, after the optional space */
        j += len;
        while (j < n && u_class(s, j, n, &len) == k) j += len;
        return j;
    }
    size_t last = i;   /* whitespace run [i, j); `last` = start of its last character */
    int next = C_W;    /* class of the character after the run */
    j = i;
    while (j < n && (next = u_class(s, j, n, &len)) == C_W) { last = j; j += len; }
    if (j == n || last == i || (digits && next == C_D)) return j;   /* at the end of the stretch, or one character */
    return last;                                                   /* \s+(?!\S): leave the last one */
}

static int pretok_mode_ok(int mode) {
    return mode == CLLM_PRETOK_CLLM || mode == CLLM_PRETOK_GPT2 || mode == CLLM_PRETOK_STARCODER;
}

static inline size_t pretok(int mode, const uint8_t *s, size_t i, size_t n) {
    return mode == CLLM_PRETOK_CLLM ? pretok_next(s, i, n) : pretok_next_gpt2(s, i, n, mode == CLLM_PRETOK_STARCODER);
}

CLLM_EXPORT int cllm_tokenizer_pretokenize(int mode, const uint8_t *text, size_t len, uint64_t *ends,
                                           size_t cap, size_t *n_out) {
    CLLM_CHECK_PTR(n_out, "n_out");
    if (!pretok_mode_ok(mode))
        return cllm_fail(CLLM_ERR_INVALID, "pretokenize: unknown pre-tokenizer mode %d", mode);
    if (len && !text) return cllm_fail(CLLM_ERR_INVALID, "pretokenize: text is NULL");
    if (cap && !ends) return cllm_fail(CLLM_ERR_INVALID, "pretokenize: ends is NULL");
    pthread_once(&g_cls_once, cls_init);
    size_t i = 0, k = 0;
    while (i < len) {
        size_t j = pretok(mode, text, i, len);
        if (k < cap) ends[k] = j;
        k++;
        i = j;
    }
    *n_out = k;
    if (k > cap) return cllm_fail(CLLM_ERR_RANGE, "pretokenize: %zu pre-tokens exceed cap %zu", k, cap);
    return CLLM_OK;
}

/* ------------------------------------------------------------- heap */
/* Trainer max-heap entry: higher count first, then smaller (a, b). */
typedef struct { int64_t count; int32_t a, b; } hent;

static inline int hent_before(const hent *x, const hent *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

typedef struct { hent *v; size_t n, cap; } heap;

static int heap_push(heap *h, hent e) {
    if (reserve((void **)&h->v, &h->cap, h->n + 1, 4096, sizeof *h->v)) return -1;
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hent_before(&e, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = e;
    return 0;
}

static hent heap_pop(heap *h) {
    hent top = h->v[0];
    hent last = h->v[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && hent_before(&h->v[c + 1], &h->v[c])) c++;
        if (!hent_before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (n) h->v[i] = last;
    return top;
}

/* ------------------------------------------------------------ trainer */
typedef struct {
    strmap words;        /* unique pre-tokens                        */
    uint64_t *wfreq;     /* per word                                 */
    size_t wfreq_cap;
    int64_t total_words;
    int merging;         /* 0 while feeding, 1 once merges started   */
    /* merge phase */
    int32_t *sym;        /* all words' symbols, word w at woff[w]    */
    uint64_t *woff;
    int32_t *wlen;
    uint32_t *wstamp;
    size_t nw;
    pairmap pmap;        /* pair key -> pair index                   */
    int32_t *pa, *pb;
    int64_t *pcount;
    int32_t **plist;     /* words that (may) contain the pair        */
    int32_t *plen, *pcap, *plast;
    uint32_t *pstamp;
    size_t np, pcap_n;
    heap hp;
    int32_t *touched;
    size_t ntouched, touched_cap;
    uint32_t step;
} trainer;

/* ---------------------------------------------------------- tokenizer */
#define CACHE_MAX_WORD 128
#define CACHE_MAX_ENTRIES (1u << 20)   /* bounded memory: the cache is cleared */
#define CACHE_MAX_IDS (1u << 23)       /* when either limit is reached          */

struct cllm_tokenizer {
    strmap toks;          /* token bytes -> entry (entry index == id)  */
    uint8_t *special;     /* per id                                    */
    size_t special_cap;
    int32_t byte_id[256];
    size_t max_len;
    /* merges */
    int32_t *ma, *mb, *mo;
    size_t nm, mcap;
    pairmap merges;       /* pair -> rank                              */
    /* specials in match order */
    int32_t *spec_ids;
    size_t nspec;
    /* encode cache */
    pthread_mutex_t lock;
    strmap cache;
    uint64_t *cache_off;  /* per cache entry, into cache_ids           */
    uint32_t *cache_len;
    size_t cache_cap;
    int32_t *cache_ids;
    size_t cache_ids_len, cache_ids_cap;
    trainer *tr;
    int pretok;           /* CLLM_PRETOK_*                             */
};

static inline const uint8_t *tok_ptr(const cllm_tokenizer *t, int32_t id) { return t->toks.arena + t->toks.off[id]; }
static inline size_t tok_len(const cllm_tokenizer *t, int32_t id) { return t->toks.len[id]; }

static int tok_add(cllm_tokenizer *t, const uint8_t *p, size_t n, int special, int32_t *id) {
    int added = 0;
    *id = -1;
    int64_t e = strmap_add_h(&t->toks, p, n, hash_bytes(p, n), &added);
    if (e < 0) return cllm_fail(CLLM_ERR_NOMEM, "tokenizer: out of memory adding a token");
    if (added) {
        if (reserve((void **)&t->special, &t->special_cap, (size_t)e + 1, 1024, 1))
            return cllm_fail(CLLM_ERR_NOMEM, "tokenizer: out of memory");
        t->special[e] = (uint8_t)(special != 0);
        if (n > t->max_len) t->max_len = n;
    }
    *id = (int32_t)e;
    return added ? 1 : 0;
}

static void cache_clear(cllm_tokenizer *t) {
    if (!t->cache.slots) return;
    memset(t->cache.slots, 0xff, t->cache.nslots * sizeof *t->cache.slots);
    t->cache.n = 0;
    t->cache.arena_len = 0;
    t->cache_ids_len = 0;
}

static void trainer_free(trainer *tr) {
    if (!tr) return;
    strmap_free(&tr->words);
    free(tr->wfreq); free(tr->sym); free(tr->woff); free(tr->wlen); free(tr->wstamp);
    pairmap_free(&tr->pmap);
    if (tr->plist) for (size_t i = 0; i < tr->np; i++) free(tr->plist[i]);
    free(tr->pa); free(tr->pb); free(tr->pcount); free(tr->plist); free(tr->plen);
    free(tr->pcap); free(tr->plast); free(tr->pstamp);
    free(tr->hp.v); free(tr->touched);
    free(tr);
}

static cllm_tokenizer *tok_alloc(void) {
    cllm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    if (strmap_init(&t->toks, 1024) != 0 || pairmap_init(&t->merges, 1024) != 0 ||
        strmap_init(&t->cache, 1 << 14) != 0 || pthread_mutex_init(&t->lock, NULL) != 0) {
        strmap_free(&t->toks); pairmap_free(&t->merges); strmap_free(&t->cache);
        free(t);
        return NULL;
    }
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    pthread_once(&g_cls_once, cls_init);
    return t;
}

CLLM_EXPORT int cllm_tokenizer_free(cllm_tokenizer *t) {
    if (!t) return CLLM_OK;
    strmap_free(&t->toks);
    free(t->special);
    free(t->ma); free(t->mb); free(t->mo);
    pairmap_free(&t->merges);
    free(t->spec_ids);
    strmap_free(&t->cache);
    free(t->cache_off); free(t->cache_len); free(t->cache_ids);
    trainer_free(t->tr);
    pthread_mutex_destroy(&t->lock);
    free(t);
    return CLLM_OK;
}

CLLM_EXPORT int cllm_tokenizer_new(cllm_tokenizer **out) {
    CLLM_CHECK_PTR(out, "out");
    *out = NULL;
    cllm_tokenizer *t = tok_alloc();
    if (!t) return cllm_fail(CLLM_ERR_NOMEM, "tokenizer_new: out of memory");
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        int32_t id;
        int rc = tok_add(t, &c, 1, 0, &id);
        if (rc < 0) { cllm_tokenizer_free(t); return rc; }
        t->byte_id[b] = id;
    }
    *out = t;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_tokenizer_add_special(cllm_tokenizer *t, const uint8_t *s, size_t len, int32_t *id) {
    CLLM_CHECK_PTR(t, "t");
    CLLM_CHECK_PTR(id, "id");
    if (!s || len == 0) return cllm_fail(CLLM_ERR_INVALID, "add_special: empty special token");
    if (len > 4096) return cllm_fail(CLLM_ERR_INVALID, "add_special: special token longer than 4096 bytes");
    if (t->tr) return cllm_fail(CLLM_ERR_STATE, "add_special: training in progress (add specials before feeding)");
    int64_t e = strmap_find(&t->toks, s, len);
    if (e >= 0) {
        if (!t->special[e]) return cllm_fail(CLLM_ERR_INVALID, "add_special: token already exists as a regular token");
        *id = (int32_t)e;
        return CLLM_OK;
    }
    int32_t *ns = realloc(t->spec_ids, (t->nspec + 1) * sizeof *ns);
    if (!ns) return cllm_fail(CLLM_ERR_NOMEM, "add_special: out of memory");
    t->spec_ids = ns;
    int rc = tok_add(t, s, len, 1, id);
    if (rc < 0) return rc;
    t->spec_ids[t->nspec++] = *id;
    cache_clear(t);
    return CLLM_OK;
}

static int merge_push(cllm_tokenizer *t, int32_t a, int32_t b, int32_t o) {
    if (reserve3(&t->mcap, t->nm + 1, 1024, (void **)&t->ma, sizeof *t->ma, (void **)&t->mb, sizeof *t->mb,
                 (void **)&t->mo, sizeof *t->mo))
        return -1;
    int added = 0;
    int32_t *v = pairmap_slot(&t->merges, pair_key(a, b), (int32_t)t->nm, &added);
    if (!v) return -1;
    /* a duplicate pair keeps its first (lowest) rank, as a map would */
    t->ma[t->nm] = a; t->mb[t->nm] = b; t->mo[t->nm] = o;
    t->nm++;
    return 0;
}

CLLM_EXPORT int cllm_tokenizer_from_vocab(const uint8_t *blob, const uint64_t *offsets,
                                          const uint8_t *is_special, int32_t n_tokens,
                                          const int32_t *merges, int32_t n_merges,
                                          cllm_tokenizer **out) {
    CLLM_CHECK_PTR(out, "out");
    *out = NULL;
    CLLM_CHECK_PTR(offsets, "offsets");
    CLLM_CHECK_PTR(is_special, "is_special");
    if (n_tokens < 256 || n_tokens > (1 << 30))
        return cllm_fail(CLLM_ERR_INVALID, "from_vocab: n_tokens=%d (need 256..2^30)", (int)n_tokens);
    if (n_merges < 0 || (n_merges > 0 && !merges))
        return cllm_fail(CLLM_ERR_INVALID, "from_vocab: bad merges (n_merges=%d)", (int)n_merges);
    if (offsets[n_tokens] > 0 && !blob) return cllm_fail(CLLM_ERR_INVALID, "from_vocab: blob is NULL");
    for (int32_t i = 0; i < n_tokens; i++)
        if (offsets[i + 1] < offsets[i] || offsets[i + 1] == offsets[i])
            return cllm_fail(CLLM_ERR_INVALID, "from_vocab: token %d is empty or has bad offsets", (int)i);
    cllm_tokenizer *t = tok_alloc();
    if (!t) return cllm_fail(CLLM_ERR_NOMEM, "from_vocab: out of memory");
    int rc = CLLM_OK;
    for (int32_t i = 0; i < n_tokens; i++) {
        const uint8_t *p = blob + offsets[i];
        size_t n = (size_t)(offsets[i + 1] - offsets[i]);
        int32_t id;
        int r = tok_add(t, p, n, is_special[i], &id);
        if (r < 0) { rc = r; goto fail; }
        if (r == 0 || id != i) {
            rc = cllm_fail(CLLM_ERR_INVALID, "from_vocab: token %d duplicates token %d", (int)i, (int)id);
            goto fail;
        }
        if (is_special[i]) {
            int32_t *ns = realloc(t->spec_ids, (t->nspec + 1) * sizeof *ns);
            if (!ns) { rc = cllm_fail(CLLM_ERR_NOMEM, "from_vocab: out of memory"); goto fail; }
            t->spec_ids = ns;
            t->spec_ids[t->nspec++] = i;
        } else if (n == 1) {
            t->byte_id[p[0]] = i;
        }
    }
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] < 0) {
            rc = cllm_fail(CLLM_ERR_INVALID, "from_vocab: byte 0x%02x has no token (not a byte-level vocabulary)", b);
            goto fail;
        }
    for (int32_t r = 0; r < n_merges; r++) {
        int32_t a = merges[2 * r], b = merges[2 * r + 1];
        if (a < 0 || a >= n_tokens || b < 0 || b >= n_tokens) {
            rc = cllm_fail(CLLM_ERR_RANGE, "from_vocab: merge %d has an id out of range (%d, %d)", (int)r, (int)a, (int)b);
            goto fail;
        }
        size_t la = tok_len(t, a), lb = tok_len(t, b);
        uint8_t stackbuf[512];
        uint8_t *buf = la + lb <= sizeof stackbuf ? stackbuf : malloc(la + lb);
        if (!buf) { rc = cllm_fail(CLLM_ERR_NOMEM, "from_vocab: out of memory"); goto fail; }
        memcpy(buf, tok_ptr(t, a), la);
        memcpy(buf + la, tok_ptr(t, b), lb);
        int64_t o = strmap_find(&t->toks, buf, la + lb);
        if (buf != stackbuf) free(buf);
        if (o < 0) {
            rc = cllm_fail(CLLM_ERR_INVALID, "from_vocab: merge %d (%d, %d) makes a token that is not in the vocabulary",
                           (int)r, (int)a, (int)b);
            goto fail;
        }
        if (merge_push(t, a, b, (int32_t)o) != 0) { rc = cllm_fail(CLLM_ERR_NOMEM, "from_vocab: out of memory"); goto fail; }
    }
    *out = t;
    return CLLM_OK;
fail:
    cllm_tokenizer_free(t);
    return rc;
}

CLLM_GETTER(cllm_tokenizer_vocab_size, cllm_tokenizer, "t", int32_t, (int32_t)h->toks.n)
CLLM_GETTER(cllm_tokenizer_num_merges, cllm_tokenizer, "t", int32_t, (int32_t)h->nm)

CLLM_EXPORT int cllm_tokenizer_get_merge(const cllm_tokenizer *t, int32_t rank, int32_t *a, int32_t *b, int32_t *o) {
    CLLM_CHECK_PTR(t, "t");
    if (rank < 0 || (size_t)rank >= t->nm)
        return cllm_fail(CLLM_ERR_RANGE, "get_merge: rank %d out of range [0, %zu)", (int)rank, t->nm);
    if (a) *a = t->ma[rank];
    if (b) *b = t->mb[rank];
    if (o) *o = t->mo[rank];
    return CLLM_OK;
}

CLLM_EXPORT int cllm_tokenizer_token_bytes(const cllm_tokenizer *t, int32_t id, uint8_t *buf, size_t cap,
                                           size_t *len, int *is_special) {
    CLLM_CHECK_PTR(t, "t");
    CLLM_CHECK_PTR(len, "len");
    if (id < 0 || (size_t)id >= t->toks.n)
        return cllm_fail(CLLM_ERR_RANGE, "token_bytes: id %d out of range [0, %zu)", (int)id, t->toks.n);
    if (cap && !buf) return cllm_fail(CLLM_ERR_INVALID, "token_bytes: buf is NULL");
    size_t n = tok_len(t, id);
    if (cap) memcpy(buf, tok_ptr(t, id), n < cap ? n : cap);
    *len = n;
    if (is_special) *is_special = t->special[id];
    return CLLM_OK;
}

CLLM_EXPORT int cllm_tokenizer_token_to_id(const cllm_tokenizer *t, const uint8_t *s, size_t len, int32_t *id) {
    CLLM_CHECK_PTR(t, "t");
    CLLM_CHECK_PTR(id, "id");
    if (len && !s) return cllm_fail(CLLM_ERR_INVALID, "token_to_id: s is NULL");
    int64_t e = len ? strmap_find(&t->toks, s, len) : -1;
    *id = (int32_t)e;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_tokenizer_max_token_len(const cllm_tokenizer *t, size_t *len) {
    CLLM_CHECK_PTR(t, "t");
    CLLM_CHECK_PTR(len, "len");
    *len = t->max_len;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_tokenizer_set_pretokenizer(cllm_tokenizer *t, int mode) {
    CLLM_CHECK_PTR(t, "t");
    if (!pretok_mode_ok(mode))
        return cllm_fail(CLLM_ERR_INVALID, "tokenizer: pre-tokenizer must be CLLM_PRETOK_CLLM, CLLM_PRETOK_GPT2 or "
                         "CLLM_PRETOK_STARCODER, got %d", mode);
    pthread_mutex_lock(&t->lock);
    t->pretok = mode;
    cache_clear(t);
    pthread_mutex_unlock(&t->lock);
    return CLLM_OK;
}

/* ------------------------------------------------------ special split */
/* Next special-token match at or after pos: leftmost start, then longest
 * (Hugging Face's added-vocabulary matcher is leftmost-longest). next[]
 * caches each special's next occurrence (SIZE_MAX: not searched yet,
 * SIZE_MAX - 1: no further occurrence). */
typedef struct { size_t start, len; int32_t id; } smatch;

static int next_special(const cllm_tokenizer *t, const uint8_t *s, size_t n, size_t pos, size_t *next, smatch *m) {
    int found = 0;
    m->start = SIZE_MAX;
    for (size_t k = 0; k < t->nspec; k++) {
        int32_t id = t->spec_ids[k];
        size_t L = tok_len(t, id);
        if (next[k] == SIZE_MAX || (next[k] != SIZE_MAX - 1 && next[k] < pos)) {
            const uint8_t *hit = pos < n ? memmem(s + pos, n - pos, tok_ptr(t, id), L) : NULL;
            next[k] = hit ? (size_t)(hit - s) : SIZE_MAX - 1;
        }
        if (next[k] >= SIZE_MAX - 1) continue;
        if (next[k] < m->start || (next[k] == m->start && L > m->len)) {
            m->start = next[k];
            m->len = L;
            m->id = id;
            found = 1;
        }
    }
    return found;
}

/* ------------------------------------------------------------ trainer */
static int trainer_count_segment(trainer *tr, int mode, const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t j = pretok(mode, s, i, n);
        int added = 0;
        int64_t e = strmap_add_h(&tr->words, s + i, j - i, hash_bytes(s + i, j - i), &added);
        if (e < 0) return cllm_fail(CLLM_ERR_NOMEM, "train_feed: out of memory");
        size_t old = tr->wfreq_cap;
        if (reserve((void **)&tr->wfreq, &tr->wfreq_cap, (size_t)e + 1, 1 << 16, sizeof *tr->wfreq))
            return cllm_fail(CLLM_ERR_NOMEM, "train_feed: out of memory");
        memset(tr->wfreq + old, 0, (tr->wfreq_cap - old) * sizeof *tr->wfreq);
        tr->wfreq[e]++;
        tr->total_words++;
        i = j;
    }
    return CLLM_OK;
}

CLLM_EXPORT int cllm_tokenizer_train_reset(cllm_tokenizer *t) {
    CLLM_CHECK_PTR(t, "t");
    trainer_free(t->tr);
    t->tr = NULL;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_tokenizer_train_stats(const cllm_tokenizer *t, int64_t *unique_words, int64_t *total_words) {
    CLLM_CHECK_PTR(t, "t");
    if (unique_words) *unique_words = t->tr ? (int64_t)t->tr->words.n : 0;
    if (total_words) *total_words = t->tr ? t->tr->total_words : 0;
    return CLLM_OK;
}

CLLM_EXPORT int cllm_tokenizer_train_feed(cllm_tokenizer *t, const uint8_t *text, size_t len) {
    CLLM_CHECK_PTR(t, "t");
    if (len && !text) return cllm_fail(CLLM_ERR_INVALID, "train_feed: text is NULL");
    if (t->nm) return cllm_fail(CLLM_ERR_STATE, "train_feed: tokenizer already has merges (train a fresh one)");
    if (!t->tr) {
        t->tr = calloc(1, sizeof *t->tr);
        if (!t->tr || strmap_init(&t->tr->words, 1 << 16) != 0) {
            free(t->tr);
            t->tr = NULL;
            return cllm_fail(CLLM_ERR_NOMEM, "train_feed: out of memory");
        }
    }
    trainer *tr = t->tr;
    if (tr->merging) return cllm_fail(CLLM_ERR_STATE, "train_feed: merges already started");
    size_t next[64];
    size_t *nx = t->nspec <= 64 ? next : malloc(t->nspec * sizeof *nx);
    if (!nx) return cllm_fail(CLLM_ERR_NOMEM, "train_feed: out of memory");
    for (size_t k = 0; k < t->nspec; k++) nx[k] = SIZE_MAX;
    size_t pos = 0;
    int rc = CLLM_OK;
    while (pos < len) {
        smatch m;
        size_t end = len;
        int has = next_special(t, text, len, pos, nx, &m);
        if (has) end = m.start;
        rc = trainer_count_segment(tr, t->pretok, text + pos, end - pos);
        if (rc) break;
        pos = has ? m.start + m.len : len;
    }
    if (nx != next) free(nx);
    return rc;
}

static int pair_new(trainer *tr, int32_t a, int32_t b, int32_t *idx) {
    int added = 0;
    int32_t *v = pairmap_slot(&tr->pmap, pair_key(a, b), (int32_t)tr->np, &added);
    if (!v) return -1;
    if (!added) { *idx = *v; return 0; }
    size_t c = grown_cap(tr->pcap_n, tr->np + 1, 1 << 16);
    if (c) {
#define GROW(f) do { if (grow_array((void **)&tr->f, c, sizeof *tr->f)) return -1; } while (0)
        GROW(pa); GROW(pb); GROW(pcount); GROW(plist); GROW(plen); GROW(pcap); GROW(plast); GROW(pstamp);
#undef GROW
        tr->pcap_n = c;
    }
    size_t p = tr->np++;
    tr->pa[p] = a; tr->pb[p] = b; tr->pcount[p] = 0;
    tr->plist[p] = NULL; tr->plen[p] = 0; tr->pcap[p] = 0; tr->plast[p] = -1; tr->pstamp[p] = 0;
    *idx = (int32_t)p;
    return 0;
}

static inline int pair_addword(trainer *tr, int32_t p, int32_t w) {
    if (tr->plast[p] == w) return 0;
    tr->plast[p] = w;
    if (tr->plen[p] == tr->pcap[p]) {
        int32_t c = tr->pcap[p] ? tr->pcap[p] * 2 : 4;
        int32_t *nl = realloc(tr->plist[p], (size_t)c * sizeof *nl);
        if (!nl) return -1;
        tr->plist[p] = nl;
        tr->pcap[p] = c;
    }
    tr->plist[p][tr->plen[p]++] = w;
    return 0;
}

static int trainer_start(cllm_tokenizer *t) {
    trainer *tr = t->tr;
    size_t nw = tr->words.n;
    tr->nw = nw;
    tr->woff = malloc((nw + 1) * sizeof *tr->woff);
    tr->wlen = malloc((nw + 1) * sizeof *tr->wlen);
    tr->wstamp = calloc(nw + 1, sizeof *tr->wstamp);
    tr->sym = malloc((tr->words.arena_len + 1) * sizeof *tr->sym);
    if (!tr->woff || !tr->wlen || !tr->wstamp || !tr->sym || pairmap_init(&tr->pmap, 1 << 16) != 0)
        return cllm_fail(CLLM_ERR_NOMEM, "train: out of memory");
    size_t o = 0;
    for (size_t w = 0; w < nw; w++) {
        const uint8_t *p = tr->words.arena + tr->words.off[w];
        uint32_t n = tr->words.len[w];
        tr->woff[w] = o;
        tr->wlen[w] = (int32_t)n;
        for (uint32_t i = 0; i < n; i++) tr->sym[o + i] = t->byte_id[p[i]];
        o += n;
    }
    /* the word strings are no longer needed */
    free(tr->words.arena); tr->words.arena = NULL;
    free(tr->words.slots); tr->words.slots = NULL;
    for (size_t w = 0; w < nw; w++) {
        const int32_t *s = tr->sym + tr->woff[w];
        int64_t f = (int64_t)tr->wfreq[w];
        for (int32_t i = 0; i + 1 < tr->wlen[w]; i++) {
            int32_t p;
            if (pair_new(tr, s[i], s[i + 1], &p) != 0 || pair_addword(tr, p, (int32_t)w) != 0)
                return cllm_fail(CLLM_ERR_NOMEM, "train: out of memory");
            tr->pcount[p] += f;
        }
    }
    for (size_t p = 0; p < tr->np; p++) {
        hent e = {tr->pcount[p], tr->pa[p], tr->pb[p]};
        if (e.count > 0 && heap_push(&tr->hp, e) != 0) return cllm_fail(CLLM_ERR_NOMEM, "train: out of memory");
    }
    tr->merging = 1;
    return CLLM_OK;
}

static inline int touch_inc(trainer *tr, int32_t p) {
    if (tr->pstamp[p] == tr->step) return 0;
    tr->pstamp[p] = tr->step;
    if (reserve((void **)&tr->touched, &tr->touched_cap, tr->ntouched + 1, 1024, sizeof *tr->touched)) return -1;
    tr->touched[tr->ntouched++] = p;
    return 0;
}

/* Pair (a, b) changes by delta in word w (registering w for increments). */
static inline int pair_delta(trainer *tr, int32_t a, int32_t b, int64_t delta, int32_t w) {
    int32_t p;
    if (delta > 0) {
        if (pair_new(tr, a, b, &p) != 0 || pair_addword(tr, p, w) != 0 || touch_inc(tr, p) != 0) return -1;
    } else {
        p = pairmap_get(&tr->pmap, pair_key(a, b));
        if (p < 0) return 0;
    }
    tr->pcount[p] += delta;
    return 0;
}

/* Merge every occurrence of pair index pi into token x. */
static int trainer_apply(trainer *tr, int32_t pi, int32_t x) {
    int32_t a = tr->pa[pi], b = tr->pb[pi];
    int32_t *list = tr->plist[pi];
    int32_t nlist = tr->plen[pi];
    tr->plist[pi] = NULL; tr->plen[pi] = 0; tr->pcap[pi] = 0; tr->plast[pi] = -1;
    tr->step++;
    tr->ntouched = 0;
    int rc = 0;
    for (int32_t k = 0; k < nlist && rc == 0; k++) {
        int32_t w = list[k];
        if (tr->wstamp[w] == tr->step) continue;
        tr->wstamp[w] = tr->step;
        int32_t *s = tr->sym + tr->woff[w];
        int32_t n = tr->wlen[w];
        int64_t f = (int64_t)tr->wfreq[w];
        int32_t i = 0;
        while (i + 1 < n) {
            if (s[i] != a || s[i + 1] != b) { i++; continue; }
            if (i > 0) {
                if (pair_delta(tr, s[i - 1], a, -f, w) || pair_delta(tr, s[i - 1], x, f, w)) { rc = -1; break; }
            }
            if (i + 2 < n) {
                if (pair_delta(tr, b, s[i + 2], -f, w) || pair_delta(tr, x, s[i + 2], f, w)) { rc = -1; break; }
            }
            tr->pcount[pi] -= f;
            s[i] = x;
            memmove(s + i + 1, s + i + 2, (size_t)(n - i - 2) * sizeof *s);
            n--;
            i++;
        }
        tr->wlen[w] = n;
    }
    free(list);
    if (rc) return cllm_fail(CLLM_ERR_NOMEM, "train: out of memory");
    for (size_t k = 0; k < tr->ntouched; k++) {
        int32_t p = tr->touched[k];
        hent e = {tr->pcount[p], tr->pa[p], tr->pb[p]};
        if (e.count > 0 && heap_push(&tr->hp, e) != 0) return cllm_fail(CLLM_ERR_NOMEM, "train: out of memory");
    }
    return CLLM_OK;
}

CLLM_EXPORT int cllm_tokenizer_train_merges(cllm_tokenizer *t, int32_t vocab_size, int64_t min_frequency,
                                            int32_t max_merges, int32_t *n_merges, int *finished) {
    CLLM_CHECK_PTR(t, "t");
    CLLM_CHECK_PTR(n_merges, "n_merges");
    CLLM_CHECK_PTR(finished, "finished");
    *finished = 0;
    *n_merges = (int32_t)t->nm;
    if (!t->tr || t->tr->words.n == 0)
        return cllm_fail(CLLM_ERR_STATE, "train_merges: no training text was fed (empty corpus?)");
    if (vocab_size < (int32_t)t->toks.n && !t->tr->merging)
        return cllm_fail(CLLM_ERR_INVALID, "train_merges: vocab_size %d is smaller than the %zu base tokens",
                         (int)vocab_size, t->toks.n);
    if (vocab_size > (1 << 30)) return cllm_fail(CLLM_ERR_INVALID, "train_merges: vocab_size %d too large", (int)vocab_size);
    if (min_frequency < 1) min_frequency = 1;
    trainer *tr = t->tr;
    if (!tr->merging) {
        int rc = trainer_start(t);
        if (rc) return rc;
    }
    int32_t done = 0;
    while ((int32_t)t->toks.n < vocab_size && (max_merges <= 0 || done < max_merges)) {
        if (tr->hp.n == 0) { *finished = 1; break; }
        hent top = heap_pop(&tr->hp);
        int32_t pi = pairmap_get(&tr->pmap, pair_key(top.a, top.b));
        if (pi < 0) continue;
        int64_t cur = tr->pcount[pi];
        if (cur != top.count) {
            if (cur > 0 && cur < top.count) {
                hent e = {cur, top.a, top.b};
                if (heap_push(&tr->hp, e) != 0) return cllm_fail(CLLM_ERR_NOMEM, "train: out of memory");
            }
            continue;
        }
        if (cur < min_frequency) { *finished = 1; break; }
        size_t la = tok_len(t, top.a), lb = tok_len(t, top.b);
        uint8_t *buf = malloc(la + lb);
        if (!buf) return cllm_fail(CLLM_ERR_NOMEM, "train: out of memory");
        memcpy(buf, tok_ptr(t, top.a), la);
        memcpy(buf + la, tok_ptr(t, top.b), lb);
        int32_t x;
        int r = tok_add(t, buf, la + lb, 0, &x);
        free(buf);
        if (r < 0) return r;
        if (merge_push(t, top.a, top.b, x) != 0) return cllm_fail(CLLM_ERR_NOMEM, "train: out of memory");
        r = trainer_apply(tr, pi, x);
        if (r) return r;
        done++;
    }
    if ((int32_t)t->toks.n >= vocab_size) *finished = 1;
    *n_merges = (int32_t)t->nm;
    if (*finished) {
        trainer_free(t->tr);
        t->tr = NULL;
        cache_clear(t);
    }
    return CLLM_OK;
}

/* ------------------------------------------------------------- encode */
static inline int32_t merge_rank(const cllm_tokenizer *t, int32_t a, int32_t b) {
    int32_t r = pairmap_get(&t->merges, pair_key(a, b));
    return r < 0 ? INT32_MAX : r;
}

/* BPE of one short word: repeatedly merge the lowest-rank adjacent pair
 * (leftmost on ties). Returns the number of ids written to out. */
static size_t bpe_short(const cllm_tokenizer *t, const uint8_t *p, size_t n, int32_t *out) {
    int32_t rank[CACHE_MAX_WORD];
    for (size_t i = 0; i < n; i++) out[i] = t->byte_id[p[i]];
    for (size_t i = 0; i + 1 < n; i++) rank[i] = merge_rank(t, out[i], out[i + 1]);
    while (n > 1) {
        size_t best = 0;
        int32_t br = rank[0];
        for (size_t i = 1; i + 1 < n; i++)
            if (rank[i] < br) { br = rank[i]; best = i; }
        if (br == INT32_MAX) break;
        out[best] = t->mo[br];
        memmove(out + best + 1, out + best + 2, (n - best - 2) * sizeof *out);
        memmove(rank + best + 1, rank + best + 2, (n > best + 3 ? n - best - 3 : 0) * sizeof *rank);
        n--;
        if (best > 0) rank[best - 1] = merge_rank(t, out[best - 1], out[best]);
        if (best + 1 < n) rank[best] = merge_rank(t, out[best], out[best + 1]);
    }
    return n;
}

/* BPE of a long word with a min-heap of (rank, position) over a linked
 * list of symbols: O(n log n). Same result as bpe_short. */
typedef struct { int32_t rank; int32_t pos; } wq;

static inline int wq_before(wq x, wq y) { return x.rank != y.rank ? x.rank < y.rank : x.pos < y.pos; }

static void wq_push(wq *h, size_t *n, wq e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!wq_before(e, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static wq wq_pop(wq *h, size_t *n) {
    wq top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && wq_before(h[c + 1], h[c])) c++;
        if (!wq_before(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static int64_t bpe_long(const cllm_tokenizer *t, const uint8_t *p, size_t n, int32_t *out) {
    int32_t *sym = malloc(n * sizeof *sym);
    int32_t *nxt = malloc(n * sizeof *nxt);
    int32_t *prv = malloc(n * sizeof *prv);
    wq *h = malloc(2 * n * sizeof *h);   /* each merge pushes <= 2 entries */
    if (!sym || !nxt || !prv || !h) { free(sym); free(nxt); free(prv); free(h); return -1; }
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[p[i]];
        nxt[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        prv[i] = (int32_t)i - 1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        int32_t r = merge_rank(t, sym[i], sym[i + 1]);
        if (r != INT32_MAX) wq_push(h, &hn, (wq){r, (int32_t)i});
    }
    while (hn) {
        wq e = wq_pop(h, &hn);
        int32_t i = e.pos;
        if (sym[i] < 0 || nxt[i] < 0) continue;
        int32_t j = nxt[i];
        if (merge_rank(t, sym[i], sym[j]) != e.rank) continue;
        sym[i] = t->mo[e.rank];
        sym[j] = -1;
        nxt[i] = nxt[j];
        if (nxt[j] >= 0) prv[nxt[j]] = i;
        if (prv[i] >= 0) {
            int32_t r = merge_rank(t, sym[prv[i]], sym[i]);
            if (r != INT32_MAX) wq_push(h, &hn, (wq){r, prv[i]});
        }
        if (nxt[i] >= 0) {
            int32_t r = merge_rank(t, sym[i], sym[nxt[i]]);
            if (r != INT32_MAX) wq_push(h, &hn, (wq){r, i});
        }
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = nxt[i]) out[k++] = sym[i];
    free(sym); free(nxt); free(prv); free(h);
    return (int64_t)k;
}

/* Ids of one pre-token (cached when use_cache). -1 on OOM. */
static inline int64_t encode_word(cllm_tokenizer *t, const uint8_t *p, size_t n, int32_t *out, int use_cache) {
    if (n == 1) { out[0] = t->byte_id[p[0]]; return 1; }
    if (n > CACHE_MAX_WORD) return bpe_long(t, p, n, out);
    if (!use_cache) return (int64_t)bpe_short(t, p, n, out);
    uint64_t h = hash_bytes(p, n);
    int64_t e = strmap_find_h(&t->cache, p, n, h);
    if (e >= 0) {
        uint32_t k = t->cache_len[e];
        const int32_t *src = t->cache_ids + t->cache_off[e];
        for (uint32_t i = 0; i < k; i++) out[i] = src[i];
        return k;
    }
    size_t k = bpe_short(t, p, n, out);
    if (t->cache.n >= CACHE_MAX_ENTRIES || t->cache_ids_len >= CACHE_MAX_IDS) cache_clear(t);
    if (reserve((void **)&t->cache_ids, &t->cache_ids_cap, t->cache_ids_len + k, 1 << 16, sizeof *t->cache_ids))
        return (int64_t)k;   /* caching is optional */
    int added = 0;
    e = strmap_add_h(&t->cache, p, n, h, &added);
    if (e < 0) { cache_clear(t); return (int64_t)k; }
    size_t c = grown_cap(t->cache_cap, (size_t)e + 1, 1 << 14);
    if (c) {
        if (grow_array((void **)&t->cache_off, c, sizeof *t->cache_off) ||
            grow_array((void **)&t->cache_len, c, sizeof *t->cache_len)) {
            cache_clear(t);
            return (int64_t)k;
        }
        t->cache_cap = c;
    }
    t->cache_off[e] = t->cache_ids_len;
    t->cache_len[e] = (uint32_t)k;
    memcpy(t->cache_ids + t->cache_ids_len, out, k * sizeof *out);
    t->cache_ids_len += k;
    return (int64_t)k;
}

static int encode_text(cllm_tokenizer *t, const uint8_t *s, size_t len, int32_t *out, size_t *n_out, int use_cache) {
    size_t next[64];
    size_t *nx = t->nspec <= 64 ? next : malloc(t->nspec * sizeof *nx);
    if (!nx) return cllm_fail(CLLM_ERR_NOMEM, "encode: out of memory");
    for (size_t k = 0; k < t->nspec; k++) nx[k] = SIZE_MAX;
    size_t pos = 0, k = 0;
    int rc = CLLM_OK;
    while (pos < len) {
        smatch m;
        int has = t->nspec ? next_special(t, s, len, pos, nx, &m) : 0;
        size_t end = has ? m.start : len;
        size_t i = pos;
        while (i < end) {
            size_t j = pretok(t->pretok, s, i, end);
            int64_t r = encode_word(t, s + i, j - i, out + k, use_cache);
            if (r < 0) { rc = cllm_fail(CLLM_ERR_NOMEM, "encode: out of memory"); goto done; }
            k += (size_t)r;
            i = j;
        }
        if (has) { out[k++] = m.id; pos = m.start + m.len; }
        else pos = len;
    }
done:
    if (nx != next) free(nx);
    *n_out = k;
    return rc;
}

CLLM_EXPORT int cllm_tokenizer_encode(cllm_tokenizer *t, const uint8_t *text, size_t len, int32_t *out,
                                      size_t cap, size_t *n_out) {
    CLLM_CHECK_PTR(t, "t");
    CLLM_CHECK_PTR(n_out, "n_out");
    *n_out = 0;
    if (len && !text) return cllm_fail(CLLM_ERR_INVALID, "encode: text is NULL");
    if (len && !out) return cllm_fail(CLLM_ERR_INVALID, "encode: out is NULL");
    if (cap < len) return cllm_fail(CLLM_ERR_RANGE, "encode: cap %zu < input length %zu", cap, len);
    int locked = pthread_mutex_trylock(&t->lock) == 0;
    int rc = encode_text(t, text, len, out, n_out, locked);
    if (locked) pthread_mutex_unlock(&t->lock);
    return rc;
}

CLLM_EXPORT int cllm_tokenizer_encode_docs(cllm_tokenizer *t, const uint8_t *data, const uint64_t *offsets,
                                           size_t n_docs, int32_t eot_id, int32_t *out, size_t cap,
                                           size_t *n_out) {
    CLLM_CHECK_PTR(t, "t");
    CLLM_CHECK_PTR(n_out, "n_out");
    *n_out = 0;
    if (n_docs == 0) return CLLM_OK;
    CLLM_CHECK_PTR(offsets, "offsets");
    CLLM_CHECK_PTR(out, "out");
    if (eot_id < 0 || (size_t)eot_id >= t->toks.n)
        return cllm_fail(CLLM_ERR_RANGE, "encode_docs: eot_id %d out of range", (int)eot_id);
    for (size_t d = 0; d < n_docs; d++)
        if (offsets[d + 1] < offsets[d]) return cllm_fail(CLLM_ERR_INVALID, "encode_docs: offsets decrease at %zu", d);
    uint64_t total = offsets[n_docs] - offsets[0];
    if (total && !data) return cllm_fail(CLLM_ERR_INVALID, "encode_docs: data is NULL");
    if (cap < total + n_docs) return cllm_fail(CLLM_ERR_RANGE, "encode_docs: cap %zu < %llu", cap,
                                               (unsigned long long)(total + n_docs));
    int locked = pthread_mutex_trylock(&t->lock) == 0;
    size_t k = 0;
    int rc = CLLM_OK;
    for (size_t d = 0; d < n_docs && rc == CLLM_OK; d++) {
        size_t m = 0;
        rc = encode_text(t, data + offsets[d], offsets[d + 1] - offsets[d], out + k, &m, locked);
        k += m;
        out[k++] = eot_id;
    }
    if (locked) pthread_mutex_unlock(&t->lock);
    *n_out = k;
    return rc;
}

/* ------------------------------------------------------------- decode */
CLLM_EXPORT int cllm_tokenizer_decode(const cllm_tokenizer *t, const int32_t *ids, size_t n, uint8_t *out,
                                      size_t cap, size_t *n_out) {
    CLLM_CHECK_PTR(t, "t");
    CLLM_CHECK_PTR(n_out, "n_out");
    *n_out = 0;
    if (n && !ids) return cllm_fail(CLLM_ERR_INVALID, "decode: ids is NULL");
    size_t total = 0, nt = t->toks.n;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= nt)
            return cllm_fail(CLLM_ERR_RANGE, "decode: token id %d at position %zu out of range [0, %zu)",
                             (int)ids[i], i, nt);
        total += tok_len(t, ids[i]);
    }
    *n_out = total;
    if (cap < total) return cllm_fail(CLLM_ERR_RANGE, "decode: cap %zu < %zu bytes", cap, total);
    if (total && !out) return cllm_fail(CLLM_ERR_INVALID, "decode: out is NULL");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t L = tok_len(t, ids[i]);
        memcpy(out + k, tok_ptr(t, ids[i]), L);
        k += L;
    }
    return CLLM_OK;
}
