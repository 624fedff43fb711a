/* attention_bf16.c - causal multi-head attention for BF16 training: the
 * four products (S = Q K^T, O = P V; backward dP = dO V^T, dQ = dS K,
 * dK = dS^T Q, dV = P^T dO) run on the BF16 GEMM (operands rounded to BF16
 * while packed, FP32 accumulation), the softmax and its backward in FP32.
 * Same contract as the attention_fwd / attention_bwd registry ops
 * (kernels/ops_list.h): qkv(B,T,3C) -> out(B,T,C) and lse(B,NH,T), the
 * log-sum-exp of each query row's scaled scores; backward recomputes
 * P = exp(s - lse) per (batch, head) into a T x Tp tile of the attention
 * workspace (cllm_attention_ws_floats) instead of reading a stored T x T
 * tensor per layer; dqkv overwritten. Query rows go in blocks of ATT_RB so
 * each block's products stop at its last row's diagonal (the causal
 * triangle is skipped per block). */
#include <math.h>
#include <string.h>
#include "model.h"
#include "kernels/bf16_simd.h"
#include "gemm/gemm_bf16.h"
#include "attention_bf16.h"
#include "kernels/kernels.h"
/* v_exp, the exp of the FP32 kernels, at 16 lanes */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
#define SIMD_W 16
#include "kernels/simd_vec.h"
#pragma GCC pop_options

#define ATT_RB CLLM_ATT_BF16_RB

/* ------------------------------------------------------ FP32 row helpers */
static inline __mmask16 tail16(int n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u); }

/* row[0..n) = softmax(row[0..n)), row[n..jn) = 0; returns the log-sum-exp */
BF16_AVX512 static float softmax_row_avx512(float *row, int n, int jn) {
    __m512 vm = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < n; j += 16) vm = _mm512_max_ps(vm, _mm512_mask_loadu_ps(vm, tail16(n - j), row + j));
    float mxs = _mm512_reduce_max_ps(vm);
    __m512 mx = _mm512_set1_ps(mxs), vs = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = tail16(n - j);
        __m512 e = v_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + j), mx));
        vs = _mm512_add_ps(vs, _mm512_maskz_mov_ps(m, e));
        _mm512_mask_storeu_ps(row + j, m, e);
    }
    float sum = _mm512_reduce_add_ps(vs);
    __m512 inv = _mm512_set1_ps(1.0f / sum);
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = tail16(n - j);
        _mm512_mask_storeu_ps(row + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + j), inv));
    }
    if (jn > n) memset(row + n, 0, sizeof(float) * (size_t)(jn - n));
    return mxs + logf(sum);
}

static float softmax_row_scalar(float *row, int n, int jn) {
    float mx = row[0];
    for (int j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.0f;
    for (int j = 0; j < n; j++) { row[j] = expf(row[j] - mx); sum += row[j]; }
    float inv = 1.0f / sum;
    for (int j = 0; j < n; j++) row[j] *= inv;
    if (jn > n) memset(row + n, 0, sizeof(float) * (size_t)(jn - n));
    return mx + logf(sum);
}

/* p[0..n) = exp(s - lse) in place, d[0..n) = p (d - <p, d>) scale (softmax
 * backward from dP), both zero over [n, jn) */
BF16_AVX512 static void bwd_row_avx512(float *p, float *d, int n, int jn, float lse, float scale) {
    __m512 vl = _mm512_set1_ps(lse), acc = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = tail16(n - j);
        __m512 pv = v_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p + j), vl));
        _mm512_mask_storeu_ps(p + j, m, pv);
        acc = _mm512_fmadd_ps(_mm512_maskz_mov_ps(m, pv), _mm512_maskz_loadu_ps(m, d + j), acc);
    }
    __m512 vD = _mm512_set1_ps(_mm512_reduce_add_ps(acc)), vs = _mm512_set1_ps(scale);
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = tail16(n - j);
        __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, p + j),
                                               _mm512_sub_ps(_mm512_maskz_loadu_ps(m, d + j), vD)), vs);
        _mm512_mask_storeu_ps(d + j, m, v);
    }
    if (jn > n) {
        memset(p + n, 0, sizeof(float) * (size_t)(jn - n));
        memset(d + n, 0, sizeof(float) * (size_t)(jn - n));
    }
}

static void bwd_row_scalar(float *p, float *d, int n, int jn, float lse, float scale) {
    float D = 0.0f;
    for (int j = 0; j < n; j++) {
        p[j] = expf(p[j] - lse);
        D += p[j] * d[j];
    }
    for (int j = 0; j < n; j++) d[j] = p[j] * (d[j] - D) * scale;
    if (jn > n) {
        memset(p + n, 0, sizeof(float) * (size_t)(jn - n));
        memset(d + n, 0, sizeof(float) * (size_t)(jn - n));
    }
}

/* the AVX-512 row helpers need only AVX-512F, which every BF16 kernel implies */
static int rows_simd(int kernel) { return kernel != CLLM_BF16_KERNEL_SCALAR; }

/* --------------------------------------------------------------- forward */
/* per block of ATT_RB query rows: S into the block tile (row stride Tp),
 * softmax rows (lse kept), O = P V. aws: the tile (ATT_RB x Tp). */
void attention_fwd_bf16(int kernel, float *out, float *lse, const float *qkv, int B, int T, int C, int NH,
                        int u0, int u1, void *gws, float *aws) {
    int hs = C / NH, ld = 3 * C, simd = rows_simd(kernel), tp = (int)CLLM_ATT_TPAD(T);
    float scale = 1.0f / sqrtf((float)hs);
    float *Sb = aws;
    (void)B;
    for (int u = u0; u < u1; u++) {
        int b = u / NH, h = u % NH;
        const float *Q = qkv + (size_t)b * T * ld + (size_t)h * hs;
        const float *K = Q + C, *V = Q + 2 * (size_t)C;
        float *O = out + (size_t)b * T * C + (size_t)h * hs;
        float *L = lse + ((size_t)b * NH + h) * T;
        for (int i0 = 0; i0 < T; i0 += ATT_RB) {
            int mr = T - i0 < ATT_RB ? T - i0 : ATT_RB, jn = i0 + mr;
            cllm_bgemm(kernel, 0, 1, mr, jn, hs, scale, Q + (size_t)i0 * ld, 0, ld, K, 0, ld, 0.0f, Sb, tp,
                       NULL, gws);
            for (int r = 0; r < mr; r++) {
                float *row = Sb + (size_t)r * tp;
                L[i0 + r] = simd ? softmax_row_avx512(row, i0 + r + 1, jn) : softmax_row_scalar(row, i0 + r + 1, jn);
            }
            cllm_bgemm(kernel, 0, 0, mr, hs, jn, 1.0f, Sb, 0, tp, V, 0, ld, 0.0f, O + (size_t)i0 * C, C, NULL,
                       gws);
        }
    }
}

/* -------------------------------------------------------------- backward */
/* aws: P and dS tiles of one (batch, head), T x Tp each */
void attention_bwd_bf16(int kernel, float *dqkv, const float *dout, const float *qkv, const float *lse, int B, int T,
                        int C, int NH, int u0, int u1, void *gws, float *aws) {
    int hs = C / NH, ld = 3 * C, simd = rows_simd(kernel), tp = (int)CLLM_ATT_TPAD(T);
    float scale = 1.0f / sqrtf((float)hs);
    size_t tt = (size_t)T * tp;
    float *P = aws, *D = P + tt;
    (void)B;
    for (int u = u0; u < u1; u++) {
        const cllm_att_head a = cllm_att_head_at(qkv, dqkv, dout, lse, u / NH, u % NH, T, C, NH);
        const float *Q = a.Q, *K = a.K, *V = a.V, *dO = a.dO, *L = a.L;
        float *dQ = a.dQ, *dK = a.dK, *dV = a.dV;
        /* query blocks: P recomputed, dP = dO V^T, dS in place (zeros
         * above the diagonal), dQ = dS K */
        for (int i0 = 0; i0 < T; i0 += ATT_RB) {
            int mr = T - i0 < ATT_RB ? T - i0 : ATT_RB, jn = i0 + mr;
            float *Pi = P + (size_t)i0 * tp, *Di = D + (size_t)i0 * tp;
            cllm_bgemm(kernel, 0, 1, mr, jn, hs, scale, Q + (size_t)i0 * ld, 0, ld, K, 0, ld, 0.0f, Pi, tp,
                       NULL, gws);
            cllm_bgemm(kernel, 0, 1, mr, jn, hs, 1.0f, dO + (size_t)i0 * C, 0, C, V, 0, ld, 0.0f, Di, tp, NULL,
                       gws);
            for (int r = 0; r < mr; r++) {
                float *p = Pi + (size_t)r * tp, *d = Di + (size_t)r * tp;
                if (simd) bwd_row_avx512(p, d, i0 + r + 1, jn, L[i0 + r], scale);
                else bwd_row_scalar(p, d, i0 + r + 1, jn, L[i0 + r], scale);
            }
            cllm_bgemm(kernel, 0, 0, mr, hs, jn, 1.0f, Di, 0, tp, K, 0, ld, 0.0f, dQ + (size_t)i0 * ld, ld, NULL,
                       gws);
        }
        /* key blocks j0..: only query rows >= j0 see them */
        for (int j0 = 0; j0 < T; j0 += ATT_RB) {
            int mk = T - j0 < ATT_RB ? T - j0 : ATT_RB, m = T - j0;
            size_t pj = (size_t)j0 * tp + j0;
            cllm_bgemm(kernel, 1, 0, mk, hs, m, 1.0f, P + pj, 0, tp, dO + (size_t)j0 * C, 0, C, 0.0f,
                       dV + (size_t)j0 * ld, ld, NULL, gws);
            cllm_bgemm(kernel, 1, 0, mk, hs, m, 1.0f, D + pj, 0, tp, Q + (size_t)j0 * ld, 0, ld, 0.0f,
                       dK + (size_t)j0 * ld, ld, NULL, gws);
        }
    }
}
