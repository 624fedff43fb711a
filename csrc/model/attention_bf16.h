/* attention_bf16.h - causal attention on the BF16 GEMM (attention_bf16.c). */
#ifndef CLLM_ATTENTION_BF16_H
#define CLLM_ATTENTION_BF16_H
/* kernel: CLLM_BF16_KERNEL_*; gws: cllm_gemm_bf16_ws_bytes() of GEMM
 * workspace; aws: cllm_attention_ws_floats(T, C/NH) floats of attention
 * workspace. lse(B,NH,T) and the (sequence, head) units [u0, u1) as in the
 * attention_fwd registry op. */
void attention_fwd_bf16(int kernel, float *out, float *lse, const float *qkv, int B, int T, int C, int NH,
                        int u0, int u1, void *gws, float *aws);
void attention_bwd_bf16(int kernel, float *dqkv, const float *dout, const float *qkv, const float *lse, int B, int T,
                        int C, int NH, int u0, int u1, void *gws, float *aws);
#endif
