/* attention_bf16.c - causal multi-head attention for BF16 training: the
 * four products (S = Q K^T, O = P V; backward dP = dO V^T, dQ = dS K,
 * dK = dS^T Q, dV = P^T dO) run on the BF16 GEMM (operands rounded to BF16
 * while packed, FP32 accumulation), the softmax and its backward in FP32.
 * Same contract as the attention_fwd / attention_bwd registry ops
 * (kernels/ops_list.h): qkv(B,T,3C) -> out(B,T,C), att(B,NH,T,T) holds the
 * probabilities with zeros above the diagonal; dqkv overwritten, datt
 * scratch. Query rows go in blocks of ATT_RB so each block's products stop
 * at its last row's diagonal (the causal triangle is skipped per block). */
#include <math.h>
#include <string.h>
#include "model.h"
#include "kernels/bf16_simd.h"
#include "gemm/gemm_bf16.h"
#include "attention_bf16.h"
/* v_exp, the exp of the FP32 kernels, at 16 lanes */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
#define SIMD_W 16
#include "kernels/simd_vec.h"
#pragma GCC pop_options

#define ATT_RB 64

/* ------------------------------------------------------ FP32 row helpers */
static inline __mmask16 tail16(int n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u); }

/* row[0..n) = softmax(row[0..n)), row[n..T) = 0 */
BF16_AVX512 static void softmax_row_avx512(float *row, int n, int T) {
    __m512 vm = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < n; j += 16) vm = _mm512_max_ps(vm, _mm512_mask_loadu_ps(vm, tail16(n - j), row + j));
    __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vm)), vs = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = tail16(n - j);
        __m512 e = v_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + j), mx));
        vs = _mm512_add_ps(vs, _mm512_maskz_mov_ps(m, e));
        _mm512_mask_storeu_ps(row + j, m, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vs));
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = tail16(n - j);
        _mm512_mask_storeu_ps(row + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + j), inv));
    }
    if (T > n) memset(row + n, 0, sizeof(float) * (size_t)(T - n));
}

static void softmax_row_scalar(float *row, int n, int T) {
    float mx = row[0];
    for (int j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.0f;
    for (int j = 0; j < n; j++) { row[j] = expf(row[j] - mx); sum += row[j]; }
    float inv = 1.0f / sum;
    for (int j = 0; j < n; j++) row[j] *= inv;
    if (T > n) memset(row + n, 0, sizeof(float) * (size_t)(T - n));
}

/* d[0..n) = p * (d - <p, d>) * scale, d[n..T) = 0 (softmax backward) */
BF16_AVX512 static void softmax_bwd_row_avx512(float *d, const float *p, int n, int T, float scale) {
    __m512 acc = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = tail16(n - j);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, p + j), _mm512_maskz_loadu_ps(m, d + j), acc);
    }
    __m512 dot = _mm512_set1_ps(_mm512_reduce_add_ps(acc)), vs = _mm512_set1_ps(scale);
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = tail16(n - j);
        __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, p + j),
                                               _mm512_sub_ps(_mm512_maskz_loadu_ps(m, d + j), dot)), vs);
        _mm512_mask_storeu_ps(d + j, m, v);
    }
    if (T > n) memset(d + n, 0, sizeof(float) * (size_t)(T - n));
}

static void softmax_bwd_row_scalar(float *d, const float *p, int n, int T, float scale) {
    float dot = 0.0f;
    for (int j = 0; j < n; j++) dot += p[j] * d[j];
    for (int j = 0; j < n; j++) d[j] = p[j] * (d[j] - dot) * scale;
    if (T > n) memset(d + n, 0, sizeof(float) * (size_t)(T - n));
}

/* the AVX-512 row helpers need only AVX-512F, which every BF16 kernel implies */
static int rows_simd(int kernel) { return kernel != CLLM_BF16_KERNEL_SCALAR; }

/* --------------------------------------------------------------- forward */
void attention_fwd_bf16(int kernel, float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                        void *gws) {
    int hs = C / NH, ld = 3 * C, simd = rows_simd(kernel);
    float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *Q = qkv + (size_t)b * T * ld + (size_t)h * hs;
            const float *K = Q + C, *V = Q + 2 * (size_t)C;
            float *A = att + ((size_t)b * NH + h) * T * T;
            float *O = out + (size_t)b * T * C + (size_t)h * hs;
            for (int i0 = 0; i0 < T; i0 += ATT_RB) {
                int mr = T - i0 < ATT_RB ? T - i0 : ATT_RB, jn = i0 + mr;
                float *Ai = A + (size_t)i0 * T;
                cllm_bgemm(kernel, 0, 1, mr, jn, hs, scale, Q + (size_t)i0 * ld, 0, ld, K, 0, ld, 0.0f, Ai, T,
                           NULL, gws);
                for (int t = i0; t < jn; t++) {
                    if (simd) softmax_row_avx512(A + (size_t)t * T, t + 1, T);
                    else softmax_row_scalar(A + (size_t)t * T, t + 1, T);
                }
                cllm_bgemm(kernel, 0, 0, mr, hs, jn, 1.0f, Ai, 0, T, V, 0, ld, 0.0f, O + (size_t)i0 * C, C, NULL,
                           gws);
            }
        }
}

/* -------------------------------------------------------------- backward */
void attention_bwd_bf16(int kernel, float *dqkv, float *datt, const float *dout, const float *qkv,
                        const float *att, int B, int T, int C, int NH, void *gws) {
    int hs = C / NH, ld = 3 * C, simd = rows_simd(kernel);
    float scale = 1.0f / sqrtf((float)hs);
    size_t tt = (size_t)T * T;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            size_t off = (size_t)b * T * ld + (size_t)h * hs;
            const float *Q = qkv + off, *K = Q + C, *V = Q + 2 * (size_t)C;
            float *dQ = dqkv + off, *dK = dQ + C, *dV = dQ + 2 * (size_t)C;
            const float *P = att + ((size_t)b * NH + h) * tt;
            float *D = datt + ((size_t)b * NH + h) * tt;
            const float *dO = dout + (size_t)b * T * C + (size_t)h * hs;
            /* query blocks: dP = dO V^T, dS in place (zeros above the
             * diagonal), dQ = dS K */
            for (int i0 = 0; i0 < T; i0 += ATT_RB) {
                int mr = T - i0 < ATT_RB ? T - i0 : ATT_RB, jn = i0 + mr;
                float *Di = D + (size_t)i0 * T;
                cllm_bgemm(kernel, 0, 1, mr, jn, hs, 1.0f, dO + (size_t)i0 * C, 0, C, V, 0, ld, 0.0f, Di, T, NULL,
                           gws);
                for (int t = i0; t < jn; t++) {
                    if (simd) softmax_bwd_row_avx512(D + (size_t)t * T, P + (size_t)t * T, t + 1, T, scale);
                    else softmax_bwd_row_scalar(D + (size_t)t * T, P + (size_t)t * T, t + 1, T, scale);
                }
                cllm_bgemm(kernel, 0, 0, mr, hs, jn, 1.0f, Di, 0, T, K, 0, ld, 0.0f, dQ + (size_t)i0 * ld, ld, NULL,
                           gws);
            }
            /* key blocks j0..: only query rows >= j0 see them */
            for (int j0 = 0; j0 < T; j0 += ATT_RB) {
                int mk = T - j0 < ATT_RB ? T - j0 : ATT_RB, m = T - j0;
                size_t pj = (size_t)j0 * T + j0;
                cllm_bgemm(kernel, 1, 0, mk, hs, m, 1.0f, P + pj, 0, T, dO + (size_t)j0 * C, 0, C, 0.0f,
                           dV + (size_t)j0 * ld, ld, NULL, gws);
                cllm_bgemm(kernel, 1, 0, mk, hs, m, 1.0f, D + pj, 0, T, Q + (size_t)j0 * ld, 0, ld, 0.0f,
                           dK + (size_t)j0 * ld, ld, NULL, gws);
            }
        }
}
