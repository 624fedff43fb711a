"""The PyTorch reference for the training benchmark's ``gpt_bigcode``
(StarCoder-family) configs: transformers' own ``GPTBigCodeForCausalLM``,
randomly initialised, dropout off, no KV cache, attention through
``torch.nn.functional.scaled_dot_product_attention`` (transformers' "sdpa"
implementation, the best it offers on a CPU), LM head tied to the token
embedding as in the published StarCoder checkpoints.

The loss is cross-entropy of the logits against the given targets (they are
the next tokens already, as cllm's are), so both sides do the same work: one
forward over B x T tokens and a loss over B x T targets. transformers'
``labels=`` would shift the targets itself and drop the last position.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

#: the attention implementation asked of transformers
ATTENTION = "sdpa"


class BigCodeLoss(nn.Module):
    """``forward(idx, targets)`` -> mean cross-entropy of a
    ``GPTBigCodeForCausalLM``'s logits against ``targets`` (same call as the
    nanoGPT-style model of ``_torch_gpt``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=idx).logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def bigcode_config(cfg: Dict[str, Any]) -> Any:
    """The ``GPTBigCodeConfig`` of a benchmark config dict (vocab_size,
    num_layers, num_heads, embed_dim, context_len (default seq_len),
    n_kv_heads (default num_heads)); ValueError when transformers cannot
    express its K/V heads (it has multi-query, 1, or one per query head)."""
    from transformers import GPTBigCodeConfig

    nh = cfg["num_heads"]
    kv = cfg.get("n_kv_heads", nh)
    if kv not in (1, nh):
        raise ValueError(f"transformers' GPTBigCode has 1 or num_heads ({nh}) K/V heads, not {kv}")
    C = cfg["embed_dim"]
    return GPTBigCodeConfig(
        vocab_size=cfg["vocab_size"], n_positions=cfg.get("context_len", cfg["seq_len"]), n_embd=C,
        n_layer=cfg["num_layers"], n_head=nh, n_inner=4 * C, activation_function="gelu_pytorch_tanh",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, multi_query=kv == 1, use_cache=False,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=True, attn_implementation=ATTENTION)


def build(cfg: Dict[str, Any]) -> Tuple[nn.Module, str]:
    """(the loss module around a fresh ``GPTBigCodeForCausalLM``, a one-line
    description naming the class, transformers' version and the attention
    implementation it actually took). RuntimeError if transformers did not
    keep the requested attention implementation."""
    import transformers
    from transformers import GPTBigCodeForCausalLM

    model = GPTBigCodeForCausalLM(bigcode_config(cfg))
    impl = model.config._attn_implementation
    if impl != ATTENTION:
        raise RuntimeError(f"transformers chose attention {impl!r}, not {ATTENTION!r}")
    model.train()
    return BigCodeLoss(model), f"transformers {transformers.__version__} GPTBigCodeForCausalLM ({impl})"
