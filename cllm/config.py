"""The model shape (:class:`ModelConfig`) and its Hugging Face GPT2Config mapping."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict

from .errors import ConfigError, ConfigTypeError

#: Largest value a C ``int`` field of the core accepts.
C_INT_MAX = 2**31 - 1


@dataclass
class ModelConfig:
    """Shape of a GPT-2 model (names follow the cllm API and CLI)."""

    vocab_size: int = 4096
    context_len: int = 256
    num_layers: int = 4
    num_heads: int = 4
    embed_dim: int = 256

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

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict of the fields."""
        return asdict(self)

    def to_hf(self, eot_id: int) -> Dict[str, Any]:
        """Hugging Face ``config.json`` (GPT2Config keys)."""
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": self.vocab_size,
            "n_positions": self.context_len,
            "n_ctx": self.context_len,
            "n_embd": self.embed_dim,
            "n_layer": self.num_layers,
            "n_head": self.num_heads,
            "n_inner": None,
            "activation_function": "gelu_new",
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "layer_norm_epsilon": 1e-5,
            "initializer_range": 0.02,
            "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False,
            "tie_word_embeddings": True,
            "use_cache": True,
            "bos_token_id": eot_id,
            "eos_token_id": eot_id,
            "torch_dtype": "float32",
            "cllm": self.to_dict(),
        }

    @classmethod
    def from_hf(cls, d: Dict[str, Any]) -> "ModelConfig":
        """Read a GPT2Config-style dict (as written by :meth:`to_hf`)."""
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
            cfg = cls(vocab_size=vals["vocab_size"], context_len=vals["n_positions"],
                      num_layers=vals["n_layer"], num_heads=vals["n_head"], embed_dim=vals["n_embd"])
        except KeyError as e:
            raise ConfigError(f"config.json lacks the key {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"config.json has a malformed value: {e}") from None
        cfg.validate()
        return cfg
