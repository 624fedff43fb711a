"""cllm: train small GPT-style language models on a code repository, on CPUs.

>>> import cllm
>>> model = cllm.train("path/to/repo", epochs=1, out_dir="runs/x")   # doctest: +SKIP
>>> model.generate("def main(", max_new_tokens=64)                    # doctest: +SKIP
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

from ._native import check, ffi, lib
from .errors import (CheckpointError, CllmError, CllmMemoryError, ConfigError, ConfigTypeError, CorpusError,
                     DivergenceError, NumericError, StateError, UnsupportedError)

if TYPE_CHECKING:
    from .config import ModelConfig
    from .inference import InferenceModel
    from .measure import measure_bandwidth, measure_peak, peak_kinds
    from .model import Model
    from .options import TrainOptions
    from .tokenizer import Tokenizer
    from .train import TrainConfig, train

__version__ = "0.1.0"

# Public names from heavier modules are imported on first use (PEP 562), so
# `cllm generate` starts without numpy, tqdm or the trainer.
_LAZY = {"Model": "model", "ModelConfig": "config", "TrainOptions": "options", "Tokenizer": "tokenizer",
         "TrainConfig": "train", "train": "train", "InferenceModel": "inference", "quantize": "inference",
         "evaluate": "evaluation", "measure_bandwidth": "measure", "measure_peak": "measure",
         "peak_kinds": "measure"}


class _Package(types.ModuleType):
    """The ``cllm`` module object. ``cllm.train`` names both the public
    function and the submodule that defines it; Python binds a package
    attribute to each submodule it imports, so that binding is redirected to
    the function: ``cllm.train`` is the function whatever was imported first
    (``from cllm.train import ...`` still reaches the module through
    ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "train" and isinstance(value, types.ModuleType) and hasattr(value, "train"):
            value = value.train
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'cllm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))

_ISA_NAMES = {"scalar": 0, "avx2": 1, "avx512": 2, "auto": -1}

__all__ = ["train", "load", "quantize", "evaluate", "InferenceModel", "Model", "Tokenizer", "ModelConfig", "TrainOptions", "TrainConfig", "set_isa",
           "cache_sizes", "gemm_blocking", "get_isa", "cpu_info", "measure_peak", "measure_bandwidth", "peak_kinds", "CllmError", "ConfigError",
           "ConfigTypeError", "CllmMemoryError", "NumericError", "DivergenceError", "StateError",
           "UnsupportedError", "CheckpointError", "CorpusError", "__version__"]


def load(path: str, *, dtype: Optional[str] = None, threads: int = 0, batch_size: int = 1,
         seq_len: Optional[int] = None) -> Union["Model", "InferenceModel"]:
    """Load a checkpoint directory: one written by :meth:`Model.save`,
    :func:`train` or :func:`quantize`, or a Hugging Face GPT-2 directory
    (``save_pretrained``).

    ``dtype=None`` on a full-precision checkpoint gives a trainable
    :class:`Model` (this is :meth:`Model.load`). ``dtype="fp32"``, ``"bf16"``
    or ``"int8"`` (or a quantized checkpoint) gives an :class:`InferenceModel`:
    generation only, weights memory-mapped or converted at load, with
    ``generate``, ``generate_ids``, ``predict_next_token``, ``logits`` and
    ``evaluate``."""
    from .inference import InferenceModel, is_quantized
    if dtype is not None or is_quantized(path):
        return InferenceModel.load(path, dtype=dtype, threads=threads)
    from .model import Model
    return Model.load(path, threads=threads, batch_size=batch_size, seq_len=seq_len)


def set_isa(isa: str) -> None:
    """Force the kernel path: ``"scalar"``, ``"avx2"``, ``"avx512"`` or ``"auto"``."""
    if isa not in _ISA_NAMES:
        raise ConfigError(f"unknown ISA {isa!r}; choose one of {sorted(_ISA_NAMES)}")
    check(lib.cllm_set_isa(_ISA_NAMES[isa]), "set_isa")


def get_isa() -> str:
    """The kernel path in use (``"scalar"``, ``"avx2"`` or ``"avx512"``)."""
    p = ffi.new("int *")
    check(lib.cllm_get_isa(p))
    return {v: k for k, v in _ISA_NAMES.items()}[p[0]]


def cpu_info() -> Dict[str, Any]:
    """What CPUID detected (incl. AMX / AVX512-BF16 / VNNI, usable only with OS
    support), the chosen kernel path, the precision ``"auto"`` picks and the
    usable CPU count."""
    a, b, n = ffi.new("int *"), ffi.new("int *"), ffi.new("int *")
    check(lib.cllm_cpu_detect(a, b))
    check(lib.cllm_cpu_count(n))
    f = [ffi.new("int *") for _ in range(4)]
    check(lib.cllm_cpu_matrix_features(*f))
    from .precision import auto_precision
    isa = get_isa()
    return {"avx2_fma": bool(a[0]), "avx512": bool(b[0]), "avx512_bf16": bool(f[0][0]),
            "avx512_vnni": bool(f[1][0]), "amx_bf16": bool(f[2][0]), "amx_int8": bool(f[3][0]),
            "isa": isa, "precision_auto": auto_precision(), "cpus": int(n[0]),
            "caches": cache_sizes(), "gemm_blocking": gemm_blocking(isa)}


def cache_sizes() -> Dict[str, Any]:
    """Data cache sizes in bytes as the C core detected them (``l1d``, ``l2``,
    ``l3``; 0 if unknown), the CPUs sharing the L3 and the ``source``
    (``"cpuid"``, ``"sysfs"`` or ``"defaults"``)."""
    c = ffi.new("cllm_cache_info *")
    check(lib.cllm_cache_sizes(c))
    return {"l1d": int(c.l1d), "l2": int(c.l2), "l3": int(c.l3), "l3_sharing": int(c.l3_sharing),
            "source": {1: "cpuid", 2: "sysfs"}.get(c.source, "defaults")}


def gemm_blocking(isa: Optional[str] = None) -> Dict[str, int]:
    """The FP32 GEMM blocking of ``isa`` (default: the current kernel path):
    micro-kernel ``mr`` x ``nr`` and cache blocks ``mc``, ``kc``, ``nc``,
    derived from the cache sizes (env CLLM_GEMM_MC/KC/NC override)."""
    if isa in (None, "auto"):
        isa = get_isa()
    if isa not in _ISA_NAMES:
        raise ConfigError(f"unknown ISA {isa!r}; choose one of {sorted(_ISA_NAMES)}")
    v = [ffi.new("int *") for _ in range(5)]
    check(lib.cllm_gemm_blocking(_ISA_NAMES[isa], *v), "gemm_blocking")
    return dict(zip(("mr", "nr", "mc", "kc", "nc"), (int(x[0]) for x in v)))
