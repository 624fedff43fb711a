"""cllm: train small GPT-style language models on a code repository, on CPUs.

>>> import cllm
>>> model = cllm.train("path/to/repo", epochs=1, out_dir="runs/x")   # doctest: +SKIP
>>> model.generate("def main(", max_new_tokens=64)                    # doctest: +SKIP

This module is the public API. The implementation lives in subpackages, one
layer each, lowest first (a package never imports a higher one):

- base modules: :mod:`cllm.errors`, :mod:`cllm.config`, :mod:`cllm.precision`,
  :mod:`cllm.hardware`, :mod:`cllm.progress` and the C binding
  :mod:`cllm._native`;
- :mod:`cllm.io`: crash-consistent file writes, bounded JSON, safetensors;
- :mod:`cllm.data`: corpus, tokenizer, token datasets;
- :mod:`cllm.model`: the model held by the C core, its decoder, checkpoints;
- :mod:`cllm.training` and :mod:`cllm.inference`: the training loop (with
  options, MPI, metrics, plots) and inference-only models, quantization,
  evaluation;
- :mod:`cllm.server`: the HTTP server (``cllm serve``; the ``serve`` extra);
- :mod:`cllm.cli`: the ``cllm`` command.

Public names from the heavier modules are imported on first use (PEP 562), so
``cllm generate`` starts without numpy, tqdm or the trainer.
"""
from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any, Optional, Union

from .errors import (CheckpointError, CllmError, CllmMemoryError, ConfigError, ConfigTypeError, CorpusError,
                     DivergenceError, NumericError, StateError, UnsupportedError)
from .hardware import cache_sizes, cpu_info, gemm_blocking, get_isa, set_isa

if TYPE_CHECKING:
    from .config import ModelConfig
    from .data.tokenizer import Tokenizer
    from .hardware import measure_bandwidth, measure_peak, peak_kinds
    from .inference.engine import InferenceModel, quantize
    from .inference.evaluation import evaluate
    from .inference.gguf import export
    from .model.checkpoint import Checkpoint
    from .model.gpt import Model
    from .training.loop import train
    from .server.run import serve
    from .training.options import TrainOptions

__version__ = "0.1.0"

#: public name -> the module (below ``cllm``) that defines it
_LAZY = {"Model": "model.gpt", "ModelConfig": "config", "TrainOptions": "training.options",
         "Tokenizer": "data.tokenizer", "train": "training.loop", "InferenceModel": "inference.engine",
         "quantize": "inference.engine", "evaluate": "inference.evaluation", "measure_bandwidth": "hardware",
         "measure_peak": "hardware", "peak_kinds": "hardware", "serve": "server.run", "export": "inference.gguf"}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'cllm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["train", "load", "serve", "quantize", "export", "evaluate", "InferenceModel", "Model", "Tokenizer", "ModelConfig",
           "TrainOptions", "set_isa", "cache_sizes", "gemm_blocking", "get_isa", "cpu_info", "measure_peak",
           "measure_bandwidth", "peak_kinds", "CllmError", "ConfigError", "ConfigTypeError", "CllmMemoryError",
           "NumericError", "DivergenceError", "StateError", "UnsupportedError", "CheckpointError", "CorpusError",
           "__version__"]


def load(path: Union[str, "os.PathLike[str]", "Checkpoint"], *, dtype: Optional[str] = None, threads: int = 0, batch_size: int = 1,
         seq_len: Optional[int] = None) -> Union["Model", "InferenceModel"]:
    """Load a checkpoint directory: one written by :meth:`Model.save`,
    :func:`train` or :func:`quantize`, or a Hugging Face GPT-2 directory
    (``save_pretrained``), opened and verified once by
    :func:`cllm.model.checkpoint.open_checkpoint`. A path that does not exist
    but reads ``owner/name[@revision]`` is a Hugging Face hub id, downloaded into
    the Hugging Face cache (the ``hub`` extra; :mod:`cllm.io.hub`).

    ``dtype=None`` on a full-precision checkpoint (GPT-2 or StarCoder-family
    ``gpt_bigcode``) gives a trainable :class:`Model` (this is
    :meth:`Model.load`). ``dtype="fp32"``, ``"bf16"``
    or ``"int8"`` (or a quantized checkpoint) gives an :class:`InferenceModel`:
    generation only, weights memory-mapped or converted at load. Both generate
    through the same C decoder (``generate``, ``generate_ids``, ``stream``,
    ``predict_next_token``, ``logits``); :func:`cllm.evaluate` measures either."""
    from .model.checkpoint import open_checkpoint
    ck = open_checkpoint(path)
    if dtype is not None or ck.quantization:
        from .inference.engine import InferenceModel
        return InferenceModel.load(ck, dtype=dtype, threads=threads)
    from .model.gpt import Model
    return Model.load(ck, threads=threads, batch_size=batch_size, seq_len=seq_len)
