"""Where a Hugging Face checkpoint's tensors and the C core's differ.

The C core holds every layer matrix as GPT-2's Conv1D, (in, out) with
``y = x @ W + b``, and c_attn's output as all queries | all keys | all
values. A GPT-2 checkpoint stores them that way. A StarCoder-family
(``gpt_bigcode``) checkpoint stores nn.Linear matrices, (out, in); and with
one K/V head per query head (``multi_query`` false) its c_attn rows go head
by head (q_h, k_h, v_h). :func:`tensor_from_hf` and :func:`tensor_to_hf`
convert one tensor each way; the training model loads and saves through
them, so a fine-tuned model is saved as the architecture it came from."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..config import ModelConfig

#: the layer matrices (name suffixes): Conv1D in GPT-2, nn.Linear in gpt_bigcode
MATRIX_SUFFIXES = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")


def head_major_qkv(buf: Any, heads: int, head_size: int) -> Any:
    """Rows of a multi-head gpt_bigcode c_attn weight or bias (3 * heads *
    head_size rows, head by head: q_h, k_h, v_h) reordered into cllm's and
    llama.cpp's (all q | all k | all v). ``buf``: raw bytes (reordered as
    bytes) or a numpy array (reordered keeping its dtype and shape)."""
    a = buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, dtype=np.uint8).reshape(3 * heads * head_size, -1)
    return np.ascontiguousarray(a.reshape(heads, 3, head_size, -1).transpose(1, 0, 2, 3)).reshape(a.shape)


def qkv_head_major(a: np.ndarray, heads: int, head_size: int) -> np.ndarray:
    """The inverse of :func:`head_major_qkv` on a numpy array: rows all q |
    all k | all v back into gpt_bigcode's head-by-head order."""
    return np.ascontiguousarray(a.reshape(3, heads, head_size, -1).transpose(1, 0, 2, 3)).reshape(a.shape)


def qkv_regrouped(cfg: ModelConfig, name: str) -> bool:
    """Whether checkpoint tensor ``name`` of a ``cfg`` model is a c_attn weight
    or bias stored head by head (a multi-head gpt_bigcode's)."""
    return cfg.model_type == "gpt_bigcode" and cfg.kv_heads > 1 and ".attn.c_attn." in name


def tensor_from_hf(cfg: ModelConfig, name: str, a: np.ndarray) -> np.ndarray:
    """Checkpoint tensor ``name`` of a ``cfg`` model in the C core's layout
    (the array itself when nothing changes)."""
    if cfg.model_type != "gpt_bigcode":
        return a
    if qkv_regrouped(cfg, name):
        a = head_major_qkv(a, cfg.kv_heads, cfg.embed_dim // cfg.num_heads)
    return a.T if name.endswith(MATRIX_SUFFIXES) else a


def tensor_to_hf(cfg: ModelConfig, name: str, a: np.ndarray) -> np.ndarray:
    """The C core's tensor ``name`` of a ``cfg`` model as its checkpoint
    stores it (the inverse of :func:`tensor_from_hf`)."""
    if cfg.model_type != "gpt_bigcode":
        return a
    if name.endswith(MATRIX_SUFFIXES):
        a = a.T
    if qkv_regrouped(cfg, name):
        a = qkv_head_major(a, cfg.kv_heads, cfg.embed_dim // cfg.num_heads)
    return np.ascontiguousarray(a)


def hf_shape(cfg: ModelConfig, name: str, shape: tuple) -> tuple:
    """The shape a checkpoint stores the C core's tensor ``name`` of ``shape`` in."""
    linear = cfg.model_type == "gpt_bigcode" and name.endswith(MATRIX_SUFFIXES)
    return tuple(reversed(shape)) if linear else tuple(shape)
