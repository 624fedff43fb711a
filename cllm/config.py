"""The model shape (:class:`ModelConfig`) and its Hugging Face config mapping
(GPT2Config, GPTBigCodeConfig)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from .errors import ConfigError, ConfigTypeError

#: Largest value a C ``int`` field of the core accepts.
C_INT_MAX = 2**31 - 1
#: Hugging Face ``model_type`` values cllm reads and writes: GPT-2, and
#: StarCoder-family ``gpt_bigcode`` (GPT-2 with nn.Linear weights and
#: multi-query attention).
MODEL_TYPES = ("gpt2", "gpt_bigcode")


@dataclass
class ModelConfig:
    """Shape of a GPT-2 model (names follow the cllm API and CLI).

    ``n_kv_heads`` K/V heads are shared by the query heads (None means
    ``num_heads``; 1: multi-query; query head h attends with K/V head
    h // (num_heads // n_kv_heads)). ``model_type`` ``"gpt_bigcode"``
    (StarCoder family) is a GPT-2 whose checkpoint stores the layer matrices
    as nn.Linear (out, in), with one K/V head (``multi_query``) or
    ``num_heads``. The C core trains and runs any divisor; a checkpoint can
    hold the shapes its architecture has (:meth:`check_savable`)."""

    vocab_size: int = 4096
    context_len: int = 256
    num_layers: int = 4
    num_heads: int = 4
    embed_dim: int = 256
    model_type: str = "gpt2"
    n_kv_heads: Optional[int] = None

    @property
    def kv_heads(self) -> int:
        """K/V heads of the attention (``num_heads`` unless grouped)."""
        return self.num_heads if self.n_kv_heads is None else self.n_kv_heads

    def arch_repr(self) -> str:
        """``"model_type=..., n_kv_heads=..., "`` for a repr, empty for plain GPT-2."""
        if self.model_type == "gpt2" and self.kv_heads == self.num_heads:
            return ""
        return f"model_type={self.model_type!r}, n_kv_heads={self.kv_heads}, "

    def check_savable(self) -> None:
        """Raise :class:`ConfigError` unless a Hugging Face ``config.json``
        describes this shape: GPT-2 has one K/V head per query head,
        gpt_bigcode one K/V head or ``num_heads``."""
        kv, nh = self.kv_heads, self.num_heads
        if self.model_type == "gpt2" and kv != nh:
            raise ConfigError(f"a GPT-2 checkpoint cannot hold {kv} K/V heads for {nh} query heads; "
                              f"use model_type 'gpt_bigcode' with n_kv_heads 1 or {nh}")
        if self.model_type == "gpt_bigcode" and kv not in (1, nh):
            raise ConfigError(f"a gpt_bigcode checkpoint holds 1 K/V head (multi_query) or {nh}, not {kv}")

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a clear message if a field is invalid."""
        for name in ("vocab_size", "context_len", "num_layers", "num_heads", "embed_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigTypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
            if not 1 <= v <= C_INT_MAX:
                raise ConfigError(f"{name} must be in [1, {C_INT_MAX}], got {v}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got {self.model_type!r}")
        kv = self.n_kv_heads
        if kv is not None and (isinstance(kv, bool) or not isinstance(kv, int) or kv < 1 or self.num_heads % kv):
            raise ConfigError(f"n_kv_heads ({kv!r}) must be a positive divisor of num_heads ({self.num_heads})")

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict of the fields (``model_type`` and ``n_kv_heads`` only
        when they differ from GPT-2's)."""
        d = asdict(self)
        if self.model_type == "gpt2":
            del d["model_type"]
        if self.n_kv_heads is None:
            del d["n_kv_heads"]
        return d

    def to_hf(self, eot_id: int) -> Dict[str, Any]:
        """Hugging Face ``config.json``: GPT2Config keys, or GPTBigCodeConfig
        ones for ``model_type`` ``gpt_bigcode`` (:meth:`check_savable`)."""
        self.check_savable()
        common = {
            "vocab_size": self.vocab_size,
            "n_positions": self.context_len,
            "n_embd": self.embed_dim,
            "n_layer": self.num_layers,
            "n_head": self.num_heads,
            "n_inner": None,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "layer_norm_epsilon": 1e-5,
            "initializer_range": 0.02,
            "scale_attn_weights": True,
            "tie_word_embeddings": True,
            "use_cache": True,
            "bos_token_id": eot_id,
            "eos_token_id": eot_id,
            "torch_dtype": "float32",
        }
        if self.model_type == "gpt_bigcode":
            return {"architectures": ["GPTBigCodeForCausalLM"], "model_type": "gpt_bigcode", **common,
                    "activation_function": "gelu_pytorch_tanh", "multi_query": self.kv_heads == 1,
                    "attention_softmax_in_fp32": True, "scale_attention_softmax_in_fp32": True,
                    "cllm": self.to_dict()}
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", **common, "n_ctx": self.context_len,
                "activation_function": "gelu_new", "scale_attn_by_inverse_layer_idx": False,
                "reorder_and_upcast_attn": False, "cllm": self.to_dict()}

    @classmethod
    def from_hf(cls, d: Dict[str, Any]) -> "ModelConfig":
        """Read a GPT2Config-style dict (as written by :meth:`to_hf`), or a
        GPTBigCodeConfig one (``model_type`` ``gpt_bigcode``: ``multi_query``,
        true by default, gives one K/V head)."""
        try:
            if d.get("n_inner") not in (None, 4 * d["n_embd"]):
                raise ConfigError(f"unsupported n_inner={d['n_inner']} (cllm uses 4 * n_embd)")
            act = d.get("activation_function", "gelu_new")
            if act not in ("gelu_new", "gelu_pytorch_tanh"):
                raise ConfigError(f"unsupported activation_function {act!r} (cllm uses tanh-GELU)")
            vals = {}
            for key in ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd"):
                v = d[key]
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ConfigError(f"config.json: {key} must be an integer, got {v!r}")
                vals[key] = v
            model_type = d.get("model_type", "gpt2")
            n_kv: Optional[int] = None
            if model_type == "gpt_bigcode":
                mq = d.get("multi_query", True)
                if not isinstance(mq, bool):
                    raise ConfigError(f"config.json: multi_query must be true or false, got {mq!r}")
                n_kv = 1 if mq else vals["n_head"]
            cfg = cls(vocab_size=vals["vocab_size"], context_len=vals["n_positions"],
                      num_layers=vals["n_layer"], num_heads=vals["n_head"], embed_dim=vals["n_embd"],
                      model_type=model_type, n_kv_heads=n_kv)
        except KeyError as e:
            raise ConfigError(f"config.json lacks the key {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"config.json has a malformed value: {e}") from None
        cfg.validate()
        return cfg
