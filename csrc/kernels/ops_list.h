/* ops_list.h - THE kernel op registry: one OP(...) line per op. No include
 * guard: each user defines OP, includes this file and undefines OP. From it
 * come the dispatch struct cllm_ops (kernels.h), the per-ISA tables
 * (kernels_scalar.c, kernels_avx2.c, kernels_avx512.c), the harness that runs
 * one op (harness.c) and cllm_kernel_op_info, which the Python tests and
 * benchmarks iterate (bench/kernel_cases.py parses bufs and dims).
 *
 * OP(name, simd, ret, params, call, check, bufs, dims)
 *   name    op name: cllm_ops field, harness and Python name
 *   simd    1: kernels_simd.h has an AVX2/AVX-512 body S(name);
 *           0: every ISA runs the scalar reference cllm_ref_<name>
 *   ret     return type (void or double; a double is stored into the last
 *           harness buffer, which then holds 2 floats)
 *   params  the C parameter list
 *   call    the harness's arguments: HB(i) float buffer i, HI(i) int32
 *           buffer i, HP(i, j) float j of buffer i, HD(i) dim i as int,
 *           HZ(i) dim i as size_t, HWS scratch sized by `check`
 *   check   harness validation beyond "every dim >= 1": hc_none or an
 *           hc_* function in harness.c (ranges, divisibility, scratch size)
 *   bufs    the harness buffers: name[shape over dims] words; prefix '+' =
 *           output (tests compare it), suffix '?' on the name = may be NULL,
 *           ':i32' = int32 data, '<D' = int32 values below dim D, ':f64' =
 *           float64 data (the double result)
 *   dims    dim names; suffix '?' = may be 0
 * All tensors are row-major and contiguous; "acc" outputs accumulate (+=),
 * the others are overwritten.
 *
 * Adding an op: write cllm_ref_<name> in kernels_scalar.c (and, if it pays,
 * S(name) in kernels_simd.h with simd = 1), then add one line here.
 */

/* out(N,C) = LN(x)(N,C)*w(C)+b(C); mean,rstd (N) saved for backward */
OP(layernorm_fwd, 1, void,
   (float *out, float *mean, float *rstd, const float *x, const float *w, const float *b, int N, int C),
   (HB(0), HB(1), HB(2), HB(3), HB(4), HB(5), HD(0), HD(1)), hc_none,
   "+out[N,C] +mean[N] +rstd[N] x[N,C] w[C] b[C]", "N C")
/* dx(N,C) acc; dw,db(C) overwritten */
OP(layernorm_bwd, 1, void,
   (float *dx, float *dw, float *db, const float *dout, const float *x, const float *w, const float *mean,
    const float *rstd, int N, int C),
   (HB(0), HB(1), HB(2), HB(3), HB(4), HB(5), HB(6), HB(7), HD(0), HD(1)), hc_none,
   "+dx[N,C] +dw[C] +db[C] dout[N,C] x[N,C] w[C] mean[N] rstd[N]", "N C")
/* res(N,C) = a + b, then out = LN(res) (fused residual + LayerNorm) */
OP(residual_layernorm_fwd, 1, void,
   (float *res, float *out, float *mean, float *rstd, const float *a, const float *b, const float *w,
    const float *bias, int N, int C),
   (HB(0), HB(1), HB(2), HB(3), HB(4), HB(5), HB(6), HB(7), HD(0), HD(1)), hc_none,
   "+res[N,C] +out[N,C] +mean[N] +rstd[N] a[N,C] b[N,C] w[C] bias[C]", "N C")
/* out(n) = a + b */
OP(residual_fwd, 1, void, (float *out, const float *a, const float *b, size_t n),
   (HB(0), HB(1), HB(2), HZ(0)), hc_none, "+out[n] a[n] b[n]", "n")
/* tanh-GELU: out(n) = gelu(x) */
OP(gelu_fwd, 1, void, (float *out, const float *x, size_t n),
   (HB(0), HB(1), HZ(0)), hc_none, "+out[n] x[n]", "n")
/* dx(n) = gelu'(x) * dout (overwrite) */
OP(gelu_bwd, 1, void, (float *dx, const float *x, const float *dout, size_t n),
   (HB(0), HB(1), HB(2), HZ(0)), hc_none, "+dx[n] x[n] dout[n]", "n")
/* Causal multi-head attention. qkv(B,T,3C) -> out(B,T,C); lse(B,NH,T)
 * receives each query row's log-sum-exp of its scaled scores
 * (s_tj = q_t.k_j / sqrt(hs), j <= t), so that P = exp(s - lse): backward
 * recomputes the probabilities instead of keeping a T x T tensor.
 * Only the (sequence, head) units [u0, u1) of the B * NH, sequence-major
 * (unit u = b * NH + h), are computed and written: spheres share one batch
 * by units (the harness runs all of them).
 * ws: scratch of cllm_attention_ws_floats(T, C/NH) floats. */
OP(attention_fwd, 1, void,
   (float *out, float *lse, const float *qkv, int B, int T, int C, int NH, int u0, int u1, float *ws),
   (HB(0), HB(1), HB(2), HD(0), HD(1), HD(2), HD(3), 0, HD(0) * HD(3), HWS), hc_attention,
   "+out[B,T,C] +lse[B,NH,T] qkv[B,T,3*C]", "B T C NH")
/* dqkv(B,T,3C) overwritten, from dout(B,T,C) and the forward's qkv and
 * lse; units [u0, u1) as above (only their Q, K, V columns of dqkv) */
OP(attention_bwd, 1, void,
   (float *dqkv, const float *dout, const float *qkv, const float *lse, int B, int T, int C, int NH, int u0, int u1,
    float *ws),
   (HB(0), HB(1), HB(2), HB(3), HD(0), HD(1), HD(2), HD(3), 0, HD(0) * HD(3), HWS), hc_attention,
   "+dqkv[B,T,3*C] dout[B,T,C] qkv[B,T,3*C] lse[B,NH,T]", "B T C NH")
/* Row-wise softmax cross-entropy fused with its gradient: logits(N,V) are
 * replaced by dlogits = (softmax - onehot(target)) * dscale; rows with
 * target < 0 get loss 0 and zero gradient. losses(N). params = [dscale]. */
OP(crossentropy_fused, 1, void,
   (float *logits, float *losses, const int32_t *targets, int N, int V, float dscale),
   (HB(0), HB(1), HI(2), HD(0), HD(1), HP(3, 0)), hc_crossentropy,
   "+logits[N,V] +losses[N] targets[N]:i32<V params[1]", "N V")
/* out(B,T,C) = wte[ids] + wpe[t] */
OP(embed_fwd, 1, void, (float *out, const int32_t *ids, const float *wte, const float *wpe, int B, int T, int C),
   (HB(0), HI(1), HB(2), HB(3), HD(0), HD(1), HD(2)), hc_embed_fwd,
   "+out[B,T,C] ids[B,T]:i32<V wte[V,C] wpe[T,C]", "B T C V")
/* dwte(V,C) acc rows ids; dwpe(T,C) acc */
OP(embed_bwd, 1, void, (float *dwte, float *dwpe, const float *dout, const int32_t *ids, int B, int T, int C),
   (HB(0), HB(1), HB(2), HI(3), HD(0), HD(1), HD(2)), hc_embed_bwd,
   "+dwte[V,C] +dwpe[T,C] dout[B,T,C] ids[B,T]:i32<V", "B T C V")
/* db(OC) = sum over N rows of dout(N,OC) (overwrite) */
OP(bias_grad, 1, void, (float *db, const float *dout, int N, int OC),
   (HB(0), HB(1), HD(0), HD(1)), hc_none, "+db[OC] dout[N,OC]", "N OC")
/* dst(n) += src(n) */
OP(add_into, 1, void, (float *dst, const float *src, size_t n),
   (HB(0), HB(1), HZ(0)), hc_none, "+dst[n] src[n]", "n")
/* sum of squares, accumulated in double */
OP(sumsq, 1, double, (const float *x, size_t n),
   (HB(0), HZ(0)), hc_none, "x[n] +out[1]:f64", "n")
/* dst(n) += src(n), returning the sum of squares of the new dst (accumulated
 * in double exactly as sumsq does): the last step of the gradient reduce
 * fused with the norm, one pass over memory */
OP(add_into_sumsq, 1, double, (float *dst, const float *src, size_t n),
   (HB(0), HB(1), HZ(0)), hc_none, "+dst[n] src[n] +out[1]:f64", "n")
/* AdamW on n elements (torch.optim.AdamW semantics): g *= gscale;
 * m = lerp(m, g, 1-b1); v = b2 v + (1-b2) g^2; p *= 1 - lr*wd;
 * p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps).
 * params = [lr b1 b2 eps wd bc1 bc2 gscale] */
OP(adamw, 1, void,
   (float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2, float eps, float wd,
    float bc1, float bc2, float gscale),
   (HB(0), HB(1), HB(2), HB(3), HZ(0), HP(4, 0), HP(4, 1), HP(4, 2), HP(4, 3), HP(4, 4), HP(4, 5), HP(4, 6),
    HP(4, 7)), hc_none,
   "+p[n] g[n] +m[n] +v[n] params[8]", "n")
/* one head of single-query attention over a decoder's KV cache:
 * out(hs) = softmax(q.k_t / sqrt(hs)) weighted sum of v_t, t < len, with the
 * keys stored TRANSPOSED, kt[d*ldk + t] (hs, ldk >= len), and the values
 * v[t*hs + d] (len, hs); scratch >= len + 16 floats */
OP(attention_step, 1, void,
   (float *out, const float *q, const float *kt, const float *v, int len, int ldk, int hs, float *scratch),
   (HB(0), HB(1), HB(2), HB(3), HD(0), HD(1), HD(2), HWS), hc_attention_step,
   "+out[hs] q[hs] kt[hs,ldk] v[len,hs]", "len ldk hs")
/* causal softmax of m score rows in place, for a block of query rows over
 * a cache: row i holds len0 + i valid scores (0 < len0), which become their
 * softmax; the rest of the block's columns, up to len0 + m - 1, become 0
 * (so the block multiplies into V as one GEMM); s(m, ld >= len0 + m - 1) */
OP(softmax_causal, 1, void, (float *s, int m, int len0, int ld),
   (HB(0), HD(0), HD(1), HD(2)), hc_softmax_causal, "+s[m,ld]", "m len0 ld")
/* fused MLP backward step: dx(N,OC) = gelu'(x) * dout (overwrite) and
 * db(OC) = column sums of dx (overwrite): gelu_bwd + bias_grad in one pass */
OP(gelu_bwd_bias, 1, void, (float *dx, float *db, const float *x, const float *dout, int N, int OC),
   (HB(0), HB(1), HB(2), HB(3), HD(0), HD(1)), hc_none, "+dx[N,OC] +db[OC] x[N,OC] dout[N,OC]", "N OC")
