/* layout.h - THE table of the model's memory layout, private to csrc/model/.
 *
 * Parameters. Each X(field, name, d0, d1, decay, init) declares one tensor of
 * the parameter buffer, in buffer order (gradients and both AdamW moments use
 * the same layout in their own buffers):
 *   field   pointer field in Weights / LayerW
 *   name    Hugging Face name (per-layer names get "transformer.h.<i>." prepended)
 *   d0, d1  shape in terms of V (vocab), P (context_len), C (embed dim) and
 *           QKV = C + 2 * KVD, the width of c_attn's output: the queries of
 *           every head, then the keys and the values of the KVD = n_kv_heads
 *           * head size K/V columns (KVD = C unless the K/V heads are
 *           grouped); d1 = 0 for a vector. Conv1D weights are (in, out):
 *           y = x @ W + b.
 *   decay   1 if AdamW weight decay applies
 *   init    INIT_NORMAL (N(0, 0.02)), INIT_PROJ (N(0, 0.02/sqrt(2L)), residual
 *           projections), INIT_ONE, INIT_ZERO
 * The buffer holds PARAMS_HEAD, then PARAMS_LAYER once per layer, then
 * PARAMS_TAIL. Everything else (tensor table, parameter count, the pointer
 * structs, initialisation) is generated from these lists.
 *
 * Activations. Each X(field, floats) declares one activation buffer, sized in
 * terms of N (= rows * T tokens), C, V, NH (attention keeps one
 * log-sum-exp per token and head, not the T x T probabilities: backward
 * recomputes them) and QKVC (QKV when the K/V heads are grouped, else 0).
 * Attention always reads a layer's qkv with one K/V head per query head
 * (3 C wide): with grouped K/V heads, c_attn writes its QKV-wide output to
 * the scratch qkvc, which is expanded into qkv (each group's K/V head
 * copied to each query head of the group); backward sums the expanded
 * dK/dV of a group's heads back into qkvc, in head order, for c_attn's
 * gradients (step.c). The model holds them once for the whole batch (N = batch_size
 * * seq_len rows: ACTS_HEAD, ACTS_LAYER once per layer, then ACTS_TAIL, which
 * ends with the backward scratch); act_floats() and carve() both expand these
 * lists, so the size and the carving cannot disagree. Each sphere's fields of
 * the same names point at its shard's rows, so a sphere works on its shard,
 * and with several spheres a GEMM can also run over every row of the batch,
 * each sphere taking a slice of the output columns (step.c: the LM head, and
 * the forward / input-gradient GEMMs when the shards are short).
 */
#ifndef CLLM_MODEL_LAYOUT_H
#define CLLM_MODEL_LAYOUT_H
#include "cllm.h"

/* K/V heads of a config (n_kv_heads, 0 = num_heads), or 0 when they do not
 * divide num_heads; KVD and QKV of a config whose K/V heads do */
static inline int layout_kv_heads(const cllm_config *c) {
    int nh = c->num_heads, kv = c->n_kv_heads ? c->n_kv_heads : nh;
    return kv >= 1 && kv <= nh && nh % kv == 0 ? kv : 0;
}
static inline int layout_kvd(const cllm_config *c) { return layout_kv_heads(c) * (c->embed_dim / c->num_heads); }
static inline int layout_qkv(const cllm_config *c) { return c->embed_dim + 2 * layout_kvd(c); }

#define CLLM_PARAMS_HEAD(X)                                            \
    X(wte, "transformer.wte.weight", V, C, 0, INIT_NORMAL)             \
    X(wpe, "transformer.wpe.weight", P, C, 0, INIT_NORMAL)

#define CLLM_PARAMS_LAYER(X)                                           \
    X(ln1w, "ln_1.weight", C, 0, 0, INIT_ONE)                          \
    X(ln1b, "ln_1.bias", C, 0, 0, INIT_ZERO)                           \
    X(qkvw, "attn.c_attn.weight", C, QKV, 1, INIT_NORMAL)              \
    X(qkvb, "attn.c_attn.bias", QKV, 0, 0, INIT_ZERO)                  \
    X(projw, "attn.c_proj.weight", C, C, 1, INIT_PROJ)                 \
    X(projb, "attn.c_proj.bias", C, 0, 0, INIT_ZERO)                   \
    X(ln2w, "ln_2.weight", C, 0, 0, INIT_ONE)                          \
    X(ln2b, "ln_2.bias", C, 0, 0, INIT_ZERO)                           \
    X(fcw, "mlp.c_fc.weight", C, 4 * C, 1, INIT_NORMAL)                \
    X(fcb, "mlp.c_fc.bias", 4 * C, 0, 0, INIT_ZERO)                    \
    X(fcprojw, "mlp.c_proj.weight", 4 * C, C, 1, INIT_PROJ)            \
    X(fcprojb, "mlp.c_proj.bias", C, 0, 0, INIT_ZERO)

#define CLLM_PARAMS_TAIL(X)                                            \
    X(lnfw, "transformer.ln_f.weight", C, 0, 0, INIT_ONE)              \
    X(lnfb, "transformer.ln_f.bias", C, 0, 0, INIT_ZERO)

enum { INIT_NORMAL, INIT_PROJ, INIT_ONE, INIT_ZERO };

#define CLLM_ACTS_HEAD(X) X(encoded, N * C)

#define CLLM_ACTS_LAYER(X)                                             \
    X(ln1, N * C) X(ln1_mean, N) X(ln1_rstd, N)                        \
    X(qkv, N * 3 * C) X(atty, N * C) X(lse, N * NH)                     \
    X(attproj, N * C) X(res2, N * C)                                   \
    X(ln2, N * C) X(ln2_mean, N) X(ln2_rstd, N)                        \
    X(fch, N * 4 * C) X(fch_gelu, N * 4 * C) X(fcproj, N * C) X(res3, N * C)

/* final LayerNorm, LM head (logits are replaced in place by dlogits),
 * losses, then the backward scratch (dlnf = dlogits @ wte) */
#define CLLM_ACTS_TAIL(X)                                              \
    X(lnf, N * C) X(lnf_mean, N) X(lnf_rstd, N)                        \
    X(logits, N * V) X(losses, N) X(dlnf, N * C)                       \
    X(dres, N * C) X(dtmp, N * C) X(dqkv, N * 3 * C)                   \
    X(dfch, N * 4 * C) X(qkvc, N * QKVC)

/* Expand X_TOP over the head list, X_LAYER over the layer list once per
 * layer (with `l` the layer index), then X_TOP over the tail list: the order
 * of the parameter buffer / the activation arena. */
#define CLLM_PARAMS_WALK(L, X_TOP, X_LAYER) \
    CLLM_PARAMS_HEAD(X_TOP) for (int l = 0; l < (L); l++) { CLLM_PARAMS_LAYER(X_LAYER) } CLLM_PARAMS_TAIL(X_TOP)
#define CLLM_ACTS_WALK(L, X_TOP, X_LAYER) \
    CLLM_ACTS_HEAD(X_TOP) for (int l = 0; l < (L); l++) { CLLM_ACTS_LAYER(X_LAYER) } CLLM_ACTS_TAIL(X_TOP)

/* -------------------------------------------------- generated pieces */
#define CLLM_X_FIELD(f, ...) float *f;
#define CLLM_X_ONE(...) +1

typedef struct { CLLM_PARAMS_LAYER(CLLM_X_FIELD) } LayerW;
typedef struct {
    CLLM_PARAMS_HEAD(CLLM_X_FIELD)
    CLLM_PARAMS_TAIL(CLLM_X_FIELD)
    LayerW *h; /* L entries */
} Weights;
typedef struct { CLLM_ACTS_LAYER(CLLM_X_FIELD) } LayerAct;

enum {
    NTENS_HEAD = 0 CLLM_PARAMS_HEAD(CLLM_X_ONE),
    NTENS_PER_LAYER = 0 CLLM_PARAMS_LAYER(CLLM_X_ONE),
    NTENS_TAIL = 0 CLLM_PARAMS_TAIL(CLLM_X_ONE),
};
/* the structs hold exactly one pointer per declared tensor / buffer */
_Static_assert(sizeof(LayerW) == NTENS_PER_LAYER * sizeof(float *), "LayerW out of sync with CLLM_PARAMS_LAYER");
_Static_assert(sizeof(Weights) == (NTENS_HEAD + NTENS_TAIL + 1) * sizeof(float *),
               "Weights out of sync with CLLM_PARAMS_HEAD/TAIL");
_Static_assert(sizeof(LayerAct) == (0 CLLM_ACTS_LAYER(CLLM_X_ONE)) * sizeof(float *),
               "LayerAct out of sync with CLLM_ACTS_LAYER");

#endif
