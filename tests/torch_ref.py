"""A plain PyTorch GPT-2 (pre-LN, tanh-GELU, tied head) built from a cllm
model's parameters, used as the reference in tests and benchmarks."""
from __future__ import annotations

import math
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F


class TorchGPT2(torch.nn.Module):
    """GPT-2 with parameters named exactly as Hugging Face's GPT2LMHeadModel.
    ``n_kv_heads`` (None: ``num_heads``) K/V heads shared by the query heads:
    c_attn outputs the queries, then ``n_kv_heads`` key and value heads, and
    query head h attends with K/V head h // (num_heads // n_kv_heads)."""

    def __init__(self, vocab_size: int, context_len: int, num_layers: int, num_heads: int,
                 embed_dim: int, n_kv_heads: int = None) -> None:
        super().__init__()
        C = embed_dim
        self.V, self.P, self.L, self.NH, self.C = vocab_size, context_len, num_layers, num_heads, C
        self.NKV = num_heads if n_kv_heads is None else n_kv_heads
        KVD = self.NKV * (C // num_heads)
        p = torch.nn.ParameterDict()
        def add(name: str, *shape: int) -> None:
            p[name.replace(".", "__")] = torch.nn.Parameter(torch.zeros(*shape))
        add("transformer.wte.weight", vocab_size, C)
        add("transformer.wpe.weight", context_len, C)
        for i in range(num_layers):
            h = f"transformer.h.{i}."
            add(h + "ln_1.weight", C); add(h + "ln_1.bias", C)
            add(h + "attn.c_attn.weight", C, C + 2 * KVD); add(h + "attn.c_attn.bias", C + 2 * KVD)
            add(h + "attn.c_proj.weight", C, C); add(h + "attn.c_proj.bias", C)
            add(h + "ln_2.weight", C); add(h + "ln_2.bias", C)
            add(h + "mlp.c_fc.weight", C, 4 * C); add(h + "mlp.c_fc.bias", 4 * C)
            add(h + "mlp.c_proj.weight", 4 * C, C); add(h + "mlp.c_proj.bias", C)
        add("transformer.ln_f.weight", C); add("transformer.ln_f.bias", C)
        self.p = p

    def named(self) -> Dict[str, torch.nn.Parameter]:
        return {k.replace("__", "."): v for k, v in self.p.items()}

    def load_numpy(self, sd: Dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for k, v in self.named().items():
                v.copy_(torch.from_numpy(np.array(sd[k], dtype=np.float32)))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor = None, attn: str = "sdpa"):
        w = self.named()
        B, T = idx.shape
        C, NH = self.C, self.NH
        x = w["transformer.wte.weight"][idx] + w["transformer.wpe.weight"][:T]
        for i in range(self.L):
            h = f"transformer.h.{i}."
            y = F.layer_norm(x, (C,), w[h + "ln_1.weight"], w[h + "ln_1.bias"], 1e-5)
            qkv = y @ w[h + "attn.c_attn.weight"] + w[h + "attn.c_attn.bias"]
            hs, NKV = C // NH, self.NKV
            q, k, v = qkv.split([C, NKV * hs, NKV * hs], dim=2)
            q = q.view(B, T, NH, hs).transpose(1, 2)
            k = k.view(B, T, NKV, hs).transpose(1, 2).repeat_interleave(NH // NKV, dim=1)
            v = v.view(B, T, NKV, hs).transpose(1, 2).repeat_interleave(NH // NKV, dim=1)
            if attn == "sdpa":
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                att = (q @ k.transpose(-2, -1)) / math.sqrt(C // NH)
                mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
                att = att.masked_fill(mask, float("-inf")).softmax(-1)
                o = att @ v
            o = o.transpose(1, 2).contiguous().view(B, T, C)
            x = x + (o @ w[h + "attn.c_proj.weight"] + w[h + "attn.c_proj.bias"])
            y = F.layer_norm(x, (C,), w[h + "ln_2.weight"], w[h + "ln_2.bias"], 1e-5)
            y = F.gelu(y @ w[h + "mlp.c_fc.weight"] + w[h + "mlp.c_fc.bias"], approximate="tanh")
            x = x + (y @ w[h + "mlp.c_proj.weight"] + w[h + "mlp.c_proj.bias"])
        x = F.layer_norm(x, (C,), w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], 1e-5)
        logits = x @ w["transformer.wte.weight"].T
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, self.V), targets.view(-1), ignore_index=-1)
        return logits, loss

    def param_groups(self, weight_decay: float):
        decay, no = [], []
        for k, v in self.named().items():
            (decay if (v.dim() == 2 and ".h." in k) else no).append(v)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no, "weight_decay": 0.0}]
