/*
 * cllm.h - THE C API of cllm. One header, one signature set.
 *
 * cffi reads exactly the text between the CLLM_CDEF_BEGIN / CLLM_CDEF_END
 * markers (preprocessor lines dropped), so Python and C cannot drift apart.
 *
 * Conventions
 *   - Every exported function returns int: 0 (CLLM_OK) or a negative error
 *     code; details via cllm_last_error() (a thread-local message).
 *   - Nothing a caller can influence aborts, exits or asserts: every size,
 *     index and pointer argument is validated.
 *   - Handles are opaque with explicit _new/_free.
 *   - Parameters, gradients and AdamW moments are each ONE contiguous float
 *     buffer (layout: cllm_model_tensor_info); Python views them zero-copy.
 */
#ifndef CLLM_H
#define CLLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CLLM_CDEF_BEGIN */

/* ---------------------------------------------------------------- errors */
enum {
    CLLM_OK = 0,
    CLLM_ERR_INVALID = -1,   /* bad argument / config                      */
    CLLM_ERR_NOMEM = -2,     /* allocation failed or memory limit exceeded */
    CLLM_ERR_RANGE = -3,     /* index / token id / size out of range       */
    CLLM_ERR_STATE = -4,     /* call out of order (e.g. backward w/o fwd)  */
    CLLM_ERR_NUMERIC = -5,   /* NaN / Inf detected                         */
    CLLM_ERR_THREAD = -6,    /* thread creation / pool failure             */
    CLLM_ERR_UNSUPPORTED = -7, /* e.g. ISA not available on this CPU       */
    CLLM_ERR_INTERNAL = -8
};

/* Message for the last error raised on the calling thread ("" if none). */
const char *cllm_last_error(void);
int cllm_version(int *major, int *minor, int *patch);

/* ------------------------------------------------------- cpu / dispatch */
enum { CLLM_ISA_AUTO = -1, CLLM_ISA_SCALAR = 0, CLLM_ISA_AVX2 = 1, CLLM_ISA_AVX512 = 2 };

/* What CPUID (and the OS, via XGETBV) says this machine supports. */
int cllm_cpu_detect(int *has_avx2_fma, int *has_avx512);
/* Force a kernel path (CLLM_ISA_AUTO = best available). Fails with
 * CLLM_ERR_UNSUPPORTED if the CPU lacks it. Env CLLM_ISA=scalar|avx2|avx512
 * sets the initial choice. */
int cllm_set_isa(int isa);
int cllm_get_isa(int *isa);
/* Number of CPUs in this process's affinity mask. */
int cllm_cpu_count(int *n);
/* Data cache sizes in bytes (detected once: CPUID leaf 4 on Intel,
 * 0x8000001D on AMD, else sysfs, else 32 KiB / 256 KiB defaults; l3 = 0 if
 * unknown), the logical CPUs sharing the L3, and where they came from
 * (source: 1 CPUID, 2 sysfs, 0 defaults). */
typedef struct {
    int64_t l1d, l2, l3;
    int l3_sharing, source;
} cllm_cache_info;
int cllm_cache_sizes(cllm_cache_info *out);

/* ------------------------------------------------ measured machine limits */
/* Multiply-add peak kinds (csrc/runtime/peak.c): register-only loops of
 * independent multiply-adds, bound by their issue throughput alone.
 *   FMA_AVX512  vfmadd231ps zmm (fp32)     FMA_AVX2  vfmadd231ps ymm (fp32)
 *   BF16_AVX512 vdpbf16ps zmm (bf16 pairs -> fp32; needs AVX512_BF16)
 *   AMX_BF16    tdpbf16ps (needs AMX-TILE + AMX-BF16 and the OS's grant)  */
enum { CLLM_PEAK_FMA_AVX512 = 0, CLLM_PEAK_FMA_AVX2 = 1, CLLM_PEAK_BF16_AVX512 = 2,
       CLLM_PEAK_AMX_BF16 = 3 };
/* *supported = 1 if this CPU and OS can run the kind (for AMX this asks
 * Linux for the tile-data permission), else 0. */
int cllm_peak_supported(int kind, int *supported);
/* Measured peak in GFLOP/s of `kind` on `threads` threads (0 = all CPUs of
 * the affinity mask), each running the loop for about seconds/3, best of 3
 * runs. seconds in (0, 60]. CLLM_ERR_UNSUPPORTED if the CPU lacks the kind. */
int cllm_measure_peak(int kind, int threads, double seconds, double *gflops);
/* Measured read bandwidth in GB/s (1e9 bytes/s): `threads` threads each read
 * their contiguous slice of one buffer of `bytes` bytes (4096 .. 2^40),
 * repeatedly for about `seconds` in all, with every load loop the CPU
 * supports (zmm / ymm / xmm loads, one load per line), best rate of 3 runs
 * each. A buffer that fits the caches measures cache bandwidth. */
int cllm_measure_bandwidth(size_t bytes, int threads, double seconds, double *gbytes_per_s);

/* ----------------------------------------------------------------- gemm */
/* C[M,N] = alpha * op(A) @ op(B) + beta * C (+ bias[N] broadcast over rows
 * if bias != NULL), row-major. op(A) is M x K: A is M x K (lda >= K) when
 * trans_a == 0, else K x M (lda >= M). op(B) is K x N: B is K x N (ldb >= N)
 * when trans_b == 0, else N x K (ldb >= K). beta == 0 never reads C.
 * Single-threaded, current ISA; allocates its own packing workspace (the
 * model uses an internal variant with a pre-sized arena instead). */
int cllm_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta,
              float *C, int ldc, const float *bias);
/* The FP32 GEMM blocking of `isa` (CLLM_ISA_SCALAR/AVX2/AVX512): register
 * block MR x NR (fixed per micro-kernel) and cache blocks MC, KC, NC, derived
 * once per process from the cache sizes (csrc/gemm/blocking.c: a KC x NR
 * sliver of B ~ 1/8 of the L2, an MC x KC block of A ~ 1/2 of the L2, a
 * KC x NC panel of B ~ 1/2 of this CPU's share of the L3). Env CLLM_GEMM_MC,
 * CLLM_GEMM_KC, CLLM_GEMM_NC override them for experiments (read once;
 * rounded to multiples of MR, 8 and NR). */
int cllm_gemm_blocking(int isa, int *mr, int *nr, int *mc, int *kc, int *nc);
/* cllm_gemm under an explicit ISA and cache blocking (mc, kc, nc >= 1, each
 * at most 65536, rounded as above; 0 = the process default), with its own
 * workspace: for tests and blocking experiments. */
int cllm_gemm_blocked(int isa, int mc, int kc, int nc, int trans_a, int trans_b, int M, int N, int K,
                      float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc, const float *bias);

/* ------------------------------------------------------------ bf16 */
/* Matrix / low-precision features: AVX512_BF16 and AVX512_VNNI as CPUID
 * reports them (with the OS's AVX-512 state); AMX-BF16 / AMX-INT8 only when
 * CPUID, XCR0's tile bits and the OS permission (Linux ARCH_REQ_XCOMP_PERM,
 * requested on first call) all agree. Each out-pointer may be NULL. */
int cllm_cpu_matrix_features(int *avx512_bf16, int *avx512_vnni, int *amx_bf16, int *amx_int8);

/* element types (CLLM_DTYPE_INT8 / _F16: inference weights, cllm_decoder_*) */
enum { CLLM_DTYPE_F32 = 0, CLLM_DTYPE_BF16 = 1, CLLM_DTYPE_INT8 = 2, CLLM_DTYPE_F16 = 3 };
/* FP32 <-> BF16 (round to nearest even, NaN stays NaN) of n elements:
 * to_bf16 != 0: src float[n] -> dst uint16[n]; else uint16 -> float.
 * isa: CLLM_ISA_SCALAR / AVX2 (scalar loop) / AVX512 / AUTO (current). */
int cllm_convert_bf16(int isa, int to_bf16, const void *src, void *dst, size_t n);

/* BF16 GEMM kernels: SCALAR = plain reference loops (any CPU), AVX512 =
 * vdpbf16ps (AVX512_BF16), AMX = tdpbf16ps tiles; AUTO = the fastest usable
 * one under the current ISA (AMX, AVX512 only when the ISA is avx512).
 * AMX_EMUL = the AMX kernel's source run on a software model of the tile
 * instructions with portable packers (any CPU, slow): for testing the AMX
 * kernel on hosts without AMX, never chosen by AUTO. */
enum { CLLM_BF16_KERNEL_AUTO = -1, CLLM_BF16_KERNEL_SCALAR = 0, CLLM_BF16_KERNEL_AVX512 = 1,
       CLLM_BF16_KERNEL_AMX = 2, CLLM_BF16_KERNEL_AMX_EMUL = 3 };
/* As cllm_gemm, but op(A) and op(B) are rounded to BF16 and multiplied with
 * FP32 accumulation. A / B are float (CLLM_DTYPE_F32, converted while
 * packed) or BF16 bits (CLLM_DTYPE_BF16, uint16). C, bias: float. Fails
 * with CLLM_ERR_UNSUPPORTED if the kernel is not usable on this CPU. */
int cllm_gemm_bf16(int kernel, int trans_a, int trans_b, int M, int N, int K, float alpha,
                   const void *A, int a_dtype, int lda, const void *B, int b_dtype, int ldb,
                   float beta, float *C, int ldc, const float *bias);
/* One BF16 GEMM packing step, for tests: packs the rows x cols block of
 * op(X) at row r0, column c0 (op(X) = X, or X transposed when trans), its
 * K padded with zeros to kcp (even, >= the block's K), in the layouts of
 * gemm/gemm_bf16_impl.h. side 0: X is A (rows = mc, cols = kc) into
 * slivers of block rows; side 1: X is B (rows = kc, cols = nc) into
 * slivers of block columns (a multiple of 16) in the VNNI pair layout.
 * x_dtype: CLLM_DTYPE_F32 / _BF16; block in 1..64. impl 0 = the portable
 * packers, 1 = the AVX-512 ones (CLLM_ERR_UNSUPPORTED without AVX-512).
 * dst: uint16[ceil(rows / block) * block * kcp] (side 0) or
 * uint16[ceil(cols / block) * block * kcp] (side 1). */
int cllm_bgemm_pack(int impl, int side, int trans, const void *X, int x_dtype, int ld, int r0, int c0,
                    int rows, int cols, int kcp, int block, uint16_t *dst);

/* ------------------------------------------------------------- spheres */
/* Kissing-sphere thread pool: the calling thread is the control sphere,
 * it touches up to 12 worker spheres, each of which coordinates up to 12
 * of its own (fan-out 12 at every level). Idle workers sleep. */
typedef struct cllm_spheres cllm_spheres;
typedef struct {
    int sphere;          /* sphere id (0 = control sphere, the caller)     */
    int parent;          /* parent sphere id (-1 for the control sphere)   */
    uint64_t tasks;      /* tasks (shards) this sphere completed            */
    double busy_seconds; /* wall time spent running tasks                   */
    double busy_fraction;/* busy_seconds / wall time since creation/reset   */
} cllm_sphere_stats;

/* threads == 0: all CPUs in the affinity mask. threads - 1 workers are
 * created; the caller is sphere 0. */
int cllm_spheres_new(int threads, cllm_spheres **out);
int cllm_spheres_free(cllm_spheres *s);
int cllm_spheres_count(const cllm_spheres *s, int *n);
/* Fill up to cap entries (one per sphere); *n receives the sphere count. */
int cllm_spheres_stats(const cllm_spheres *s, cllm_sphere_stats *out, int cap, int *n);
int cllm_spheres_reset_stats(cllm_spheres *s);

/* --------------------------------------------------------------- model */
typedef struct {
    int vocab_size;   /* V                                                  */
    int context_len;  /* n_positions: rows of the position embedding       */
    int num_layers;   /* L                                                  */
    int num_heads;    /* NH (embed_dim % num_heads == 0)                    */
    int embed_dim;    /* C                                                  */
    int batch_size;   /* max batch rows per training/eval call (arena size) */
    int seq_len;      /* max sequence length per call (<= context_len)      */
    int threads;      /* spheres: 0 = all usable CPUs                       */
    uint64_t seed;    /* initialisation seed                                */
    double max_memory_gb; /* refuse configs needing more than this (<=0: 16)*/
    int precision;    /* CLLM_PRECISION_FP32 (0) or CLLM_PRECISION_BF16     */
    int n_kv_heads;   /* K/V heads (decoder only): divides num_heads; 1 =   */
                      /* multi-query; 0 = num_heads (plain multi-head).     */
                      /* Training models refuse any other than num_heads.   */
    int linear_weights; /* decoder only: layer matrices arrive as nn.Linear */
                      /* (out, in) (gpt_bigcode), not GPT-2's Conv1D (in,   */
                      /* out); 0 = Conv1D. Training models refuse 1.        */
} cllm_config;

/* Training precision. BF16: every matmul (forward, dX, dW, LM head) is
 * BF16 x BF16 -> FP32 on the best BF16 kernel (AMX, else AVX512-BF16; the
 * scalar reference kernel under CLLM_ISA=scalar), attention's QK^T / PV and
 * their backward products too; master weights, gradients, AdamW, LayerNorm,
 * softmax, GELU, loss and norms stay FP32.
 * AdamW also refreshes the BF16 weight copies in the same pass. Forward
 * without targets (cllm_model_logits) and the model's decoder
 * (cllm_model_decoder) use the FP32 master weights in either precision. Validation
 * fails with CLLM_ERR_UNSUPPORTED when the CPU (or forced ISA) has no BF16
 * kernel. */
enum { CLLM_PRECISION_FP32 = 0, CLLM_PRECISION_BF16 = 1 };
/* The precision "auto" resolves to on this CPU under the current ISA. */
int cllm_precision_auto(int *precision);

typedef struct {
    char name[64];    /* Hugging Face GPT-2 name, e.g. "transformer.h.0.attn.c_attn.weight" */
    size_t offset;    /* in floats, into the params/grads/m/v buffers       */
    size_t numel;
    int ndim;         /* 1 or 2                                             */
    int shape[2];     /* HF shape (Conv1D weights are (in, out))            */
    int decay;        /* 1 if AdamW weight decay applies                    */
} cllm_tensor_info;

typedef struct {
    float lr;
    float beta1;
    float beta2;
    float eps;
    float weight_decay;
    float grad_clip;  /* global-norm clip; <= 0 disables                    */
} cllm_adamw;

typedef struct cllm_model cllm_model;

/* Validates sizes, divisibility, seq_len <= context_len and the memory the
 * config needs (params, grads, moments, activation arenas per sphere). */
int cllm_config_validate(const cllm_config *cfg);
/* Bytes the model would allocate for this config (validation not implied). */
int cllm_config_memory(const cllm_config *cfg, double *bytes);

int cllm_model_new(const cllm_config *cfg, cllm_model **out);
int cllm_model_free(cllm_model *m);
int cllm_model_get_config(const cllm_model *m, cllm_config *out);
/* GPT-2 init: N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)),
 * biases 0, LayerNorm weight 1; from a seeded RNG. Zeroes AdamW moments. */
int cllm_model_init(cllm_model *m, uint64_t seed);

int cllm_model_num_params(const cllm_model *m, size_t *n);
int cllm_model_num_tensors(const cllm_model *m, int *n);
int cllm_model_tensor_info(const cllm_model *m, int index, cllm_tensor_info *out);
/* Each out-pointer may be NULL. All four buffers hold num_params floats. */
int cllm_model_buffers(cllm_model *m, float **params, float **grads,
                       float **adam_m, float **adam_v);
/* Call after writing params from outside (load, set): BF16 models
 * recompute their BF16 weight copies from the FP32 params buffer (init and
 * AdamW keep them current themselves), and the model's decoder drops its
 * copy of the parameters (as cllm_model_release_decoder). */
int cllm_model_sync_weights(cllm_model *m);
/* Spheres (threads) of this model. */
int cllm_model_spheres(cllm_model *m, cllm_spheres **out);

/* Forward over a (B, T) block of token ids. With targets (same shape,
 * -1 = ignore) the mean cross-entropy over non-ignored targets is written
 * to *loss and backward may follow. B <= batch_size, T <= seq_len. */
int cllm_model_forward(cllm_model *m, const int32_t *inputs,
                       const int32_t *targets, int B, int T, float *loss);
/* Data-parallel training: normalise the loss (and so its gradient) of every
 * following forward by n tokens -- the valid targets of the GLOBAL batch over
 * all ranks -- instead of the block's own count, so the ranks' losses and
 * gradients SUM to the global mean's. n = 0 restores the default; a block
 * with more valid targets than n is refused. */
int cllm_model_set_loss_tokens(cllm_model *m, int64_t n);
/* Deterministic mode (on != 0; off by default): every product of a
 * training step runs per shard of the batch and the shards' gradients are
 * summed in shard order, so the weights are bit for bit the same for every
 * layout of the same shards: 2 MPI ranks x 1 thread == 1 process x 2
 * threads (cllm/distributed.py turns it on for data-parallel runs). Off,
 * the LM head (and, for shards shorter than the GEMM's row block, the
 * layers' GEMMs) run batch-wide, column-sliced over the threads: faster, and
 * still bit-identical run to run for a given thread count, but the weight
 * gradients computed that way are one sum over all rows instead of a sum of
 * shard sums, so they differ in rounding from a multi-rank run. Takes effect
 * from the next forward / backward / train_step. */
int cllm_model_set_deterministic(cllm_model *m, int on);
int cllm_model_get_deterministic(const cllm_model *m, int *on);
/* Gradients of the last forward's loss into the grads buffer (overwrite). */
int cllm_model_backward(cllm_model *m);
/* Global gradient L2 norm of the grads buffer. */
int cllm_model_grad_norm(cllm_model *m, float *norm);
/* One AdamW step (t = 1-based step count) with global-norm clipping; the
 * pre-clip norm goes to *grad_norm (may be NULL). */
int cllm_model_adamw(cllm_model *m, const cllm_adamw *opt, int t, float *grad_norm);
/* forward + backward + clip + AdamW in one call (no GIL, no allocation). */
int cllm_model_train_step(cllm_model *m, const int32_t *inputs,
                          const int32_t *targets, int B, int T,
                          const cllm_adamw *opt, int t, float *loss,
                          float *grad_norm);
/* Forward without targets; copies all B*T*V logits to out (row-major). */
int cllm_model_logits(cllm_model *m, const int32_t *inputs, int B, int T,
                      float *out);

/* Per-op profile: wall seconds of each op family on sphere 0 (one shard),
 * plus the reduce and AdamW phases, accumulated while enabled. enable
 * (on != 0) or disable; either resets the counters. read: entry index in
 * [0, n) with its name; returns CLLM_ERR_RANGE past the last entry. */
int cllm_model_profile_enable(cllm_model *m, int on);
int cllm_model_profile_read(const cllm_model *m, int index, char *name, size_t cap,
                            double *seconds, uint64_t *calls);

/* The model's FP32 decoder (owned by the model, freed with it; runs on its
 * sphere pool) for batch-1 generation (cllm_decoder_*): the same decoder as a
 * standalone F32 one, holding a COPY of the parameters in its own weight
 * arena, made here when it holds none. The handle stays the same for the
 * model's lifetime. cllm_model_init releases the copy; so must anyone who
 * changes params otherwise (cllm_model_train_step, cllm_model_adamw; writes
 * from outside: cllm_model_sync_weights releases it too): call
 * cllm_model_release_decoder first, then
 * cllm_model_decoder again before decoding (a released decoder fails with
 * CLLM_ERR_STATE). */
struct cllm_decoder;
int cllm_model_decoder(cllm_model *m, struct cllm_decoder **out);
/* Free the decoder's copy of the parameters (its weight arena and KV
 * cache); a no-op when there is none. */
int cllm_model_release_decoder(cllm_model *m);

/* --------------------------------------------------------------- decoder */
/* Batch-1 generation engine (csrc/model/decode.c): weights in one storage
 * dtype, a KV cache, one sphere-pool run per token (all layers, final
 * LayerNorm and LM head), results bit-identical for any thread count;
 * prompts run as batched prefill chunks (csrc/model/prefill.c). */
typedef struct cllm_decoder cllm_decoder;

/* Uses cfg's vocab_size, context_len, num_layers, num_heads, embed_dim,
 * n_kv_heads, linear_weights, threads (0 = all CPUs) and max_memory_gb;
 * dtype: F32, BF16 or INT8. With KV = n_kv_heads K/V heads of hs =
 * embed_dim / num_heads each, c_attn outputs embed_dim + 2 * KV * hs (q, k,
 * v), the KV cache holds KV * hs floats per position, layer and K/V side,
 * and query head h attends with K/V head h / (num_heads / KV). */
int cllm_decoder_new(const cllm_config *cfg, int dtype, cllm_decoder **out);
int cllm_decoder_free(cllm_decoder *d);
int cllm_decoder_threads(const cllm_decoder *d, int *n);
/* Bytes of the KV cache (keys and values of every layer and position). */
int cllm_decoder_kv_bytes(const cllm_decoder *d, size_t *bytes);
/* Tensors, in the model's order (Hugging Face names and shapes). rows/cols
 * (may be NULL) receive a matrix's output rows / input cols (0 for vectors
 * and tables stored as FP32: LayerNorms, biases, wpe). */
int cllm_decoder_num_tensors(const cllm_decoder *d, int *n);
int cllm_decoder_tensor_info(const cllm_decoder *d, int i, cllm_tensor_info *out, int *rows, int *cols);
/* Tensor i from src in its Hugging Face layout and src_dtype (F32, F16 or
 * BF16), converted / quantized into the decoder's storage. borrow != 0 with
 * an F32 source keeps the pointer instead of copying (the caller keeps that
 * memory alive) for the tensors stored as FP32 in their HF layout: vectors,
 * wpe, and wte in an F32 decoder; layer matrices are always copied. */
int cllm_decoder_set_tensor(cllm_decoder *d, int i, const void *src, int src_dtype, int borrow);
/* A matrix already in storage form, (rows, cols) by output row: INT8 q in
 * [-127, 127] with scale[rows], or BF16 bits (scale NULL). borrow as above. */
int cllm_decoder_set_quantized(cllm_decoder *d, int i, const void *w, const float *scale, int borrow);
/* Storage of tensor i (FP32 in HF layout, or the quantized form above). */
int cllm_decoder_get_tensor(const cllm_decoder *d, int i, const void **w, const float **scale);
/* reset: empty KV cache (fails if a tensor is missing). step: append token
 * at position pos and (logits != NULL) copy the next-token logits (V).
 * feed: reset + append ids (1 <= n <= context_len). extend: append ids
 * (1 <= n <= context_len - pos) to the cache as it is, then copy the logits
 * after the last one (logits may be NULL). feed and extend run several ids
 * as one batched prefill (GEMMs per layer over chunks of rows, the LM head
 * for the last position only); the logits equal the step-by-step ones to
 * FP32 rounding (the summation order differs). */
int cllm_decoder_reset(cllm_decoder *d);
int cllm_decoder_step(cllm_decoder *d, int32_t token, float *logits);
int cllm_decoder_feed(cllm_decoder *d, const int32_t *ids, int n);
int cllm_decoder_extend(cllm_decoder *d, const int32_t *ids, int n, float *logits);
/* Prompt cache: the decoder remembers the ids whose keys and values it holds
 * (emptied when a tensor is set or the weights are released). prime leaves
 * the cache holding exactly ids (1 <= n <= context_len) with their
 * next-token logits current, reusing the longest common prefix of the
 * cached ids and ids (not across an ISA change) and running only the rest;
 * *reused (may be NULL) receives the positions kept. */
int cllm_decoder_prime(cllm_decoder *d, const int32_t *ids, int n, int *reused);
/* Rows per batched prefill pass (default 256, at most context_len; 0 runs
 * every token through step). The scratch is sized for it at the next pass. */
int cllm_decoder_set_prefill_chunk(cllm_decoder *d, int rows);
int cllm_decoder_prefill_chunk(const cllm_decoder *d, int *rows);
int cllm_decoder_pos(const cllm_decoder *d, int *pos);
int cllm_decoder_logits(const cllm_decoder *d, float *out);
/* Sample the next token from the current logits (as cllm_sample; allowed:
 * optional candidate ids), then, if advance != 0, the token is not stop_id
 * and the cache is not full, step on it so the next call can sample again. */
int cllm_decoder_next(cllm_decoder *d, float temperature, int top_k, float top_p,
                      const int32_t *allowed, int n_allowed, int32_t stop_id, int advance,
                      uint64_t *rng, int32_t *out);
/* Never sample ids >= n (a tokenizer smaller than the model's vocabulary). */
int cllm_decoder_limit_vocab(cllm_decoder *d, int n);
enum { CLLM_DECODER_MAX_BAN = 16 };
/* Never sample these n ids (0 <= n <= CLLM_DECODER_MAX_BAN; n = 0 clears):
 * e.g. the fill-in-the-middle control tokens while generating a middle. The
 * logits themselves are unchanged; a sampling call whose candidates would all
 * be banned ignores the ban. */
int cllm_decoder_ban(cllm_decoder *d, const int32_t *ids, int n);
/* Sum over t of -log p(ids[t+1] | ids[..t]) (natural log), 2 <= n <= context_len,
 * by the batched prefill with the LM head for every position (token by token
 * with prefill chunk 0). Leaves ids[..n-1] in the cache. */
int cllm_decoder_nll(cllm_decoder *d, const int32_t *ids, int n, double *nll_sum);

/* Sampling by partial selection (no sort): temperature <= 0 or top_k == 1 ->
 * argmax (lowest id on ties); top_k <= 0 disables top-k; top_p >= 1 disables
 * nucleus; allowed (n_allowed ids) restricts the candidates when not NULL.
 * prob_scratch / idx_scratch hold V entries. rng advances per call. */
int cllm_sample(const float *logits, int V, float temperature, int top_k, float top_p,
                const int32_t *allowed, int n_allowed, uint64_t *rng, float *prob_scratch,
                int32_t *idx_scratch, int32_t *out);

/* Inference kernels (tests / benchmarks): y = W x (+ bias) with W (rows,
 * cols) by output row, as INT8 (+ scale[rows]), BF16 or FP32, on one ISA
 * path. */
int cllm_qmatvec_run(int dtype, int isa, const void *w, const float *scale, const float *x,
                     const float *bias, float *y, int rows, int cols);
/* Per-row symmetric int8 quantization of src (rows, cols), or of src given
 * as (cols, rows) when transposed != 0 (a Conv1D (in, out) weight). */
int cllm_quantize_int8(const float *src, int rows, int cols, int transposed, int8_t *q, float *scale);

/* ----------------------------------------------------------- tokenizer */
/* Byte-level BPE (csrc/tokenizer/bpe.c). Ids 0..255 of a fresh tokenizer are the 256
 * bytes; special tokens (e.g. "<|endoftext|>") and merges get the next ids.
 * Pre-tokenizer (identical to the Split regex written in tokenizer.json):
 *   ' ?' L (L|D)* | ' ?' D+ | ' ?' P+ | W+ (?!non-W) | W+
 * with W = ASCII whitespace (\t \n \v \f \r space), D = 0-9,
 * L = A-Z a-z _ and every byte >= 0x80 (every non-ASCII code point),
 * P = every other byte. Special tokens are matched literally (leftmost,
 * longest) in text before pre-tokenization, as Hugging Face does.
 * One thread at a time may train; encode/decode are thread-safe. */
typedef struct cllm_tokenizer cllm_tokenizer;

/* New byte-level tokenizer: 256 byte tokens, no merges, no specials. */
int cllm_tokenizer_new(cllm_tokenizer **out);
int cllm_tokenizer_free(cllm_tokenizer *t);
/* Build from an explicit vocabulary: token i has bytes
 * blob[offsets[i] .. offsets[i+1]) (offsets has n_tokens+1 entries),
 * is_special[i] != 0 for special (added) tokens, and n_merges merges
 * (merges[2r], merges[2r+1]) of rank r whose result is the token spelled by
 * the concatenation. Every byte must have a single-byte (non-special) token. */
int cllm_tokenizer_from_vocab(const uint8_t *blob, const uint64_t *offsets,
                              const uint8_t *is_special, int32_t n_tokens,
                              const int32_t *merges, int32_t n_merges,
                              cllm_tokenizer **out);
/* Add a special token (matched literally in text); its id goes to *id. */
int cllm_tokenizer_add_special(cllm_tokenizer *t, const uint8_t *s, size_t len, int32_t *id);

int cllm_tokenizer_vocab_size(const cllm_tokenizer *t, int32_t *n);
int cllm_tokenizer_num_merges(const cllm_tokenizer *t, int32_t *n);
/* Merge of rank r: (a, b) -> out. */
int cllm_tokenizer_get_merge(const cllm_tokenizer *t, int32_t rank, int32_t *a,
                             int32_t *b, int32_t *out);
/* Bytes of token id: *len receives its length; copies min(len, cap) bytes
 * (buf may be NULL when cap is 0). *is_special may be NULL. */
int cllm_tokenizer_token_bytes(const cllm_tokenizer *t, int32_t id, uint8_t *buf,
                               size_t cap, size_t *len, int *is_special);
/* Id of the token spelled by s (-1 if none). */
int cllm_tokenizer_token_to_id(const cllm_tokenizer *t, const uint8_t *s, size_t len,
                               int32_t *id);
int cllm_tokenizer_max_token_len(const cllm_tokenizer *t, size_t *len);

/* Training: feed text any number of times (pre-tokenized and counted), then
 * call train_merges until *finished: each call learns at most max_merges
 * merges (<= 0: no limit) toward vocab_size tokens (specials included),
 * stopping early when the best pair occurs fewer than min_frequency times.
 * *n_merges receives the total number of merges so far. The tokenizer must
 * have no merges when the first feed happens. train_reset drops the counts. */
int cllm_tokenizer_train_feed(cllm_tokenizer *t, const uint8_t *text, size_t len);
int cllm_tokenizer_train_merges(cllm_tokenizer *t, int32_t vocab_size,
                                int64_t min_frequency, int32_t max_merges,
                                int32_t *n_merges, int *finished);
int cllm_tokenizer_train_reset(cllm_tokenizer *t);
/* Unique pre-tokens counted so far and total pre-tokens fed. */
int cllm_tokenizer_train_stats(const cllm_tokenizer *t, int64_t *unique_words,
                               int64_t *total_words);

/* Pre-tokenizer used by encode (and training): CLLM_PRETOK_CLLM, the
 * code-aware splitter above (the default), or CLLM_PRETOK_GPT2, GPT-2's regex
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * over UTF-8 code points (Unicode classes from a generated table,
 * csrc/tokenizer/unicode_tables.h; \s = White_Space), or
 * CLLM_PRETOK_STARCODER, StarCoder's: every \p{N} character alone, GPT-2's
 * regex inside each stretch between them (tokenizers' Sequence of
 * Digits(individual_digits=true) and ByteLevel(use_regex=true)). */
enum { CLLM_PRETOK_CLLM = 0, CLLM_PRETOK_GPT2 = 1, CLLM_PRETOK_STARCODER = 2 };
int cllm_tokenizer_set_pretokenizer(cllm_tokenizer *t, int mode);

/* Encode len bytes; out must hold cap >= len ids (a token is >= 1 byte). */
int cllm_tokenizer_encode(cllm_tokenizer *t, const uint8_t *text, size_t len,
                          int32_t *out, size_t cap, size_t *n_out);
/* Encode n_docs documents data[offsets[i] .. offsets[i+1]), appending
 * eot_id after each; cap >= offsets[n_docs] - offsets[0] + n_docs. */
int cllm_tokenizer_encode_docs(cllm_tokenizer *t, const uint8_t *data,
                               const uint64_t *offsets, size_t n_docs,
                               int32_t eot_id, int32_t *out, size_t cap,
                               size_t *n_out);
/* Pre-tokenize only, with pre-tokenizer mode (CLLM_PRETOK_*, below):
 * writes the end offset of each pre-token (testing). */
int cllm_tokenizer_pretokenize(int mode, const uint8_t *text, size_t len, uint64_t *ends,
                               size_t cap, size_t *n_out);
/* Bytes of ids: *n_out receives the full length; fails with CLLM_ERR_RANGE
 * (and writes nothing) when cap is too small or an id is out of range. */
int cllm_tokenizer_decode(const cllm_tokenizer *t, const int32_t *ids, size_t n,
                          uint8_t *out, size_t cap, size_t *n_out);

/* ------------------------------------------------- kernel test harness */
/* Run ONE kernel op (by name, e.g. "gelu_fwd"; the registry
 * csrc/kernels/ops_list.h lists each op's buffers and dims) under ONE ISA (CLLM_ISA_SCALAR,
 * AVX2 or AVX512; not AUTO), reps >= 1 times, for tests and benchmarks.
 * bufs: the op's tensor arguments in signature order, as float pointers; int32
 * tensors (targets, ids) are passed as float* pointing at int32 data; scalar
 * float arguments travel in one trailing "params" buffer. The caller sizes
 * every buffer (the harness cannot see sizes); dims are validated, and ids /
 * targets are range-checked. Scratch (attention ws) is allocated here, once,
 * outside the timed repetitions. */
int cllm_kernel_run(const char *op, int isa, int reps, float *const *bufs, int nbufs,
                    const int64_t *dims, int ndims);
/* *name = the i-th harness op (0-based); CLLM_ERR_RANGE past the end. */
int cllm_kernel_op_name(int i, const char **name);
/* The i-th registry op: its name, buffer spec ("+out[N,C] x[N,C] ...":
 * '+' output, '?' may be NULL, ':i32' int32 data, '<D' values below dim D,
 * ':f64' float64 data),
 * dims spec ("N C"; '?' may be 0) and whether it has a SIMD body (simd = 1)
 * or runs the scalar reference on every ISA. Any out pointer may be NULL.
 * CLLM_ERR_RANGE past the end. */
int cllm_kernel_op_info(int i, const char **name, const char **bufs, const char **dims, int *simd);

/* CLLM_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* CLLM_H */
