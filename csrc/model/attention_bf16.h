/* attention_bf16.h - causal attention on the BF16 GEMM (attention_bf16.c). */
#ifndef CLLM_ATTENTION_BF16_H
#define CLLM_ATTENTION_BF16_H
/* kernel: CLLM_BF16_KERNEL_*; gws: cllm_gemm_bf16_ws_bytes() of GEMM workspace */
void attention_fwd_bf16(int kernel, float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                        void *gws);
void attention_bwd_bf16(int kernel, float *dqkv, float *datt, const float *dout, const float *qkv,
                        const float *att, int B, int T, int C, int NH, void *gws);
#endif
