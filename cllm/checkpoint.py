"""Checkpoints: a directory that IS a Hugging Face GPT-2 model.

  model.safetensors      weights (HF GPT-2 names, float32)
  config.json            GPT2Config keys
  tokenizer.json         HF ``tokenizers`` format
  optimizer.safetensors  AdamW moments (``adam_m.<name>``, ``adam_v.<name>``), optional
  trainer_state.json     step, data position, RNG state, training config, optional

Every file is written atomically (temp file, fsync, rename) so a crash never
leaves a half-written checkpoint, and every file is validated on load
(header length, JSON, dtypes, shapes, offsets, file size) before any byte is
copied into the model.
"""
from __future__ import annotations

import json
import logging
import os
import struct
from typing import Any, Dict, Iterable, Optional, Tuple

import numpy as np

from ._native import CllmError
from .config import ModelConfig

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
MAX_HEADER = 64 * 1024 * 1024


class CheckpointError(CllmError, ValueError):
    """A checkpoint file is missing, truncated, corrupt or does not fit the model."""


# ------------------------------------------------------------ atomic io
def atomic_write(path: str, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` via a temp file + fsync + rename."""
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename durable
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write_json(path: str, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write(path, [json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8")])


# ---------------------------------------------------------- safetensors
def write_safetensors(path: str, tensors: Iterable[Tuple[str, np.ndarray]],
                      metadata: Optional[Dict[str, str]] = None) -> None:
    """Write float32 tensors in the safetensors format (atomically)."""
    items = [(n, np.ascontiguousarray(a, dtype=np.float32)) for n, a in tensors]
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    off = 0
    for name, a in items:
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    atomic_write(path, [struct.pack("<Q", len(hb)), hb] + [memoryview(a).cast("B") for _, a in items])


def read_safetensors(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read and validate a safetensors file of float32 tensors.

    Raises :class:`CheckpointError` naming the file for any truncation or
    inconsistency; nothing is returned unless the whole file checks out."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: file not found")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: truncated (only {size} bytes; no safetensors header)")
        (hlen,) = struct.unpack("<Q", raw)
        if hlen == 0 or hlen > MAX_HEADER or 8 + hlen > size:
            raise CheckpointError(f"{path}: corrupt or truncated header (header length {hlen}, file size {size})")
        try:
            header = json.loads(f.read(hlen).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt header JSON ({e})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: header is not a JSON object")
        meta = header.pop("__metadata__", {}) or {}
        data_len = size - 8 - hlen
        spans = []
        for name, ent in header.items():
            try:
                dtype, shape, (a, b) = ent["dtype"], ent["shape"], ent["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{path}: malformed entry for tensor {name!r}") from None
            if dtype != "F32":
                raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype}, expected F32")
            if (not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape)
                    or not isinstance(a, int) or not isinstance(b, int)):
                raise CheckpointError(f"{path}: tensor {name!r} has a malformed shape or offsets")
            n = int(np.prod(shape)) if shape else 1
            if b - a != 4 * n or a < 0 or b > data_len:
                raise CheckpointError(f"{path}: tensor {name!r} offsets [{a}, {b}) do not fit its shape "
                                      f"{shape} or the file's {data_len} data bytes (truncated?)")
            spans.append((a, b, name, shape))
        spans.sort()
        for (a0, b0, n0, _), (a1, _, n1, _) in zip(spans, spans[1:]):
            if a1 < b0:
                raise CheckpointError(f"{path}: tensors {n0!r} and {n1!r} overlap")
        data = f.read(data_len)
        if len(data) != data_len:
            raise CheckpointError(f"{path}: truncated while reading tensor data")
    out = {name: np.frombuffer(data, dtype="<f4", count=(b - a) // 4, offset=a).reshape(shape)
           for a, b, name, shape in spans}
    return out, meta


# ---------------------------------------------------------- save / load
def save_checkpoint(model: Any, path: str, trainer_state: Optional[Dict[str, Any]] = None,
                    save_optimizer: bool = True) -> str:
    """Write ``model`` (and optionally its optimizer/trainer state) to ``path``."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CheckpointError(f"{path}: exists and is not a directory")
    os.makedirs(path, exist_ok=True)
    tensors = list(model.named_parameters())
    write_safetensors(os.path.join(path, MODEL_FILE), tensors, {"format": "pt", "producer": "cllm"})
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


def read_json(path: str) -> Any:
    """Load a JSON file with errors that name it."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt JSON ({e})") from None


def load_checkpoint(path: str, *, threads: int = 0, batch_size: int = 1,
                    seq_len: Optional[int] = None, load_optimizer: bool = False) -> Any:
    """Load a checkpoint directory written by :func:`save_checkpoint` (or any
    HF GPT-2 directory with a byte-level BPE tokenizer.json)."""
    from .model import Model
    from .tokenizer import Tokenizer

    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: checkpoint directory not found")
    cfg_raw = read_json(os.path.join(path, CONFIG_FILE))
    if not isinstance(cfg_raw, dict):
        raise CheckpointError(f"{os.path.join(path, CONFIG_FILE)}: not a JSON object")
    try:
        cfg = ModelConfig.from_hf(cfg_raw)
    except ValueError as e:
        raise CheckpointError(f"{os.path.join(path, CONFIG_FILE)}: {e}") from None
    tok_path = os.path.join(path, TOKENIZER_FILE)
    if not os.path.isfile(tok_path):
        raise CheckpointError(f"{tok_path}: file not found")
    try:
        tok = Tokenizer.load(tok_path)
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{tok_path}: {e}") from None
    tensors, _ = read_safetensors(os.path.join(path, MODEL_FILE))
    if seq_len is None:
        seq_len = min(cfg.context_len, 256)
    model = Model(cfg, tok, batch_size=batch_size, seq_len=seq_len, threads=threads)
    expected = {n: v.shape for n, v in model.named_parameters()}
    mf = os.path.join(path, MODEL_FILE)
    for name, shape in expected.items():
        if name not in tensors:
            alt = name[len("transformer."):] if name.startswith("transformer.") else None
            if alt in tensors:
                tensors[name] = tensors.pop(alt)
            else:
                raise CheckpointError(f"{mf}: missing tensor {name!r}")
        if tuple(tensors[name].shape) != tuple(shape):
            raise CheckpointError(f"{mf}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                                  f"config.json implies {tuple(shape)}")
    for name, view in model.named_parameters():
        view[...] = tensors[name]
    if "lm_head.weight" in tensors and not np.array_equal(tensors["lm_head.weight"], tensors["transformer.wte.weight"]):
        log.warning("%s: lm_head.weight differs from transformer.wte.weight; cllm ties them (using wte)", mf)
    if load_optimizer:
        load_optimizer_state(model, path)
    return model


def load_optimizer_state(model: Any, path: str) -> None:
    """Copy AdamW moments from ``optimizer.safetensors`` into ``model``."""
    of = os.path.join(path, OPTIMIZER_FILE)
    tensors, _ = read_safetensors(of)
    for t in model.tensor_info():
        for prefix, buf in (("adam_m.", model.adam_m), ("adam_v.", model.adam_v)):
            key = prefix + t["name"]
            if key not in tensors:
                raise CheckpointError(f"{of}: missing tensor {key!r}")
            if tuple(tensors[key].shape) != tuple(t["shape"]):
                raise CheckpointError(f"{of}: tensor {key!r} has shape {tuple(tensors[key].shape)}, expected {t['shape']}")
    for t in model.tensor_info():
        a, n = t["offset"], t["numel"]
        model.adam_m[a:a + n] = tensors["adam_m." + t["name"]].reshape(-1)
        model.adam_v[a:a + n] = tensors["adam_v." + t["name"]].reshape(-1)
