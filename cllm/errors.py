"""Every exception class cllm raises (one hierarchy, rooted at :class:`CllmError`).

The C core's error codes map onto these classes in :mod:`cllm._native`
(the one translation table); Python-side checks raise the same classes.
Each class also derives from the matching standard exception, so
``except ValueError`` keeps working for callers that do not know cllm.
"""
from __future__ import annotations

__all__ = ["CllmError", "ConfigError", "ConfigTypeError", "CllmMemoryError", "NumericError",
           "StateError", "UnsupportedError", "CheckpointError", "CorpusError", "DivergenceError"]


class CllmError(RuntimeError):
    """Base class of every error cllm raises on purpose."""


class ConfigError(CllmError, ValueError):
    """An argument or configuration is invalid (bad size, id out of range, ...)."""


class ConfigTypeError(ConfigError, TypeError):
    """An argument has the wrong type (e.g. ``vocab_size="4096"``)."""


class CllmMemoryError(CllmError, MemoryError):
    """An allocation failed or a configuration exceeds the memory limit."""


class NumericError(CllmError, FloatingPointError):
    """A loss or gradient became NaN/Inf (weights were not updated)."""


class DivergenceError(NumericError):
    """Training diverged (the loss became non-finite or grew by orders of magnitude)."""


class StateError(CllmError):
    """A call was made out of order."""


class UnsupportedError(CllmError):
    """The CPU lacks a requested feature (e.g. forcing AVX-512)."""


class CheckpointError(CllmError, ValueError):
    """A checkpoint file is missing, truncated, corrupt or does not fit the model."""


class CorpusError(CllmError, ValueError):
    """The corpus path is missing, empty, or holds no usable text."""
