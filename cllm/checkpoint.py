"""Checkpoints: a directory that IS a Hugging Face GPT-2 model.

  model.safetensors      weights (HF GPT-2 names, float32)
  config.json            GPT2Config keys
  tokenizer.json         HF ``tokenizers`` format
  optimizer.safetensors  AdamW moments (``adam_m.<name>``, ``adam_v.<name>``), optional
  trainer_state.json     step, data position, RNG state, training options, optional

This module owns the file names and the writing (:func:`save_checkpoint`)
and reading of the parts (:func:`read_model_files`,
:func:`load_optimizer_state`). It knows the model only by duck typing, so it
imports nothing from :mod:`cllm.model`; :meth:`cllm.Model.load` (which is
:func:`cllm.load`) assembles a model from the parts. Every file is
written atomically and validated on load before any byte is copied into the
model.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Tuple

from .config import ModelConfig
from .errors import CheckpointError
from .fileio import atomic_write_json, read_json as _read_json
from .safetensors_io import read_safetensors, write_safetensors
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

__all__ = ["MODEL_FILE", "CONFIG_FILE", "TOKENIZER_FILE", "OPTIMIZER_FILE", "STATE_FILE",
           "CheckpointError", "save_checkpoint", "read_model_files", "read_state",
           "load_optimizer_state", "read_json", "read_safetensors", "write_safetensors"]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"


def read_json(path: str) -> Any:
    """Load a checkpoint JSON file (:class:`CheckpointError` naming it if missing or corrupt)."""
    return _read_json(path, corrupt=CheckpointError, missing=CheckpointError)


def save_checkpoint(model: Any, path: str, trainer_state: Optional[Dict[str, Any]] = None,
                    save_optimizer: bool = True) -> str:
    """Write ``model`` (and optionally its optimizer/trainer state) to ``path``."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CheckpointError(f"{path}: exists and is not a directory")
    os.makedirs(path, exist_ok=True)
    write_safetensors(os.path.join(path, MODEL_FILE), model.named_parameters(),
                      {"format": "pt", "producer": "cllm"})
    atomic_write_json(os.path.join(path, CONFIG_FILE), model.config.to_hf(model.tokenizer.eot_id))
    model.tokenizer.save(os.path.join(path, TOKENIZER_FILE))
    if trainer_state is not None:
        if save_optimizer:
            opt = []
            for t in model.tensor_info():
                a, n = t["offset"], t["numel"]
                opt.append(("adam_m." + t["name"], model.adam_m[a:a + n].reshape(t["shape"])))
                opt.append(("adam_v." + t["name"], model.adam_v[a:a + n].reshape(t["shape"])))
            write_safetensors(os.path.join(path, OPTIMIZER_FILE), opt, {"producer": "cllm"})
        atomic_write_json(os.path.join(path, STATE_FILE), trainer_state)
    log.info("saved checkpoint to %s", path)
    return path


def read_model_files(path: str) -> Tuple[ModelConfig, Tokenizer, Dict[str, Any]]:
    """(config, tokenizer, tensors) of the checkpoint directory ``path``, each validated."""
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: checkpoint directory not found")
    cfg_path = os.path.join(path, CONFIG_FILE)
    cfg_raw = read_json(cfg_path)
    if not isinstance(cfg_raw, dict):
        raise CheckpointError(f"{cfg_path}: not a JSON object")
    try:
        cfg = ModelConfig.from_hf(cfg_raw)
    except ValueError as e:
        raise CheckpointError(f"{cfg_path}: {e}") from None
    tok_path = os.path.join(path, TOKENIZER_FILE)
    if not os.path.isfile(tok_path):
        raise CheckpointError(f"{tok_path}: file not found")
    try:
        tok = Tokenizer.load(tok_path)
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{tok_path}: {e}") from None
    tensors, _ = read_safetensors(os.path.join(path, MODEL_FILE))
    return cfg, tok, tensors


def read_state(path: str) -> Dict[str, Any]:
    """The ``trainer_state.json`` of checkpoint ``path`` (a JSON object)."""
    sp = os.path.join(path, STATE_FILE)
    st = read_json(sp)
    if not isinstance(st, dict):
        raise CheckpointError(f"{sp}: not a JSON object")
    return st


def load_optimizer_state(model: Any, path: str) -> None:
    """Copy AdamW moments from ``optimizer.safetensors`` into ``model``."""
    of = os.path.join(path, OPTIMIZER_FILE)
    tensors, _ = read_safetensors(of)
    for t in model.tensor_info():
        for prefix in ("adam_m.", "adam_v."):
            key = prefix + t["name"]
            if key not in tensors:
                raise CheckpointError(f"{of}: missing tensor {key!r}")
            if tuple(tensors[key].shape) != tuple(t["shape"]):
                raise CheckpointError(f"{of}: tensor {key!r} has shape {tuple(tensors[key].shape)}, expected {t['shape']}")
    for t in model.tensor_info():
        a, n = t["offset"], t["numel"]
        model.adam_m[a:a + n] = tensors["adam_m." + t["name"]].reshape(-1)
        model.adam_v[a:a + n] = tensors["adam_v." + t["name"]].reshape(-1)
