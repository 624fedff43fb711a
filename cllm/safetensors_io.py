"""The safetensors file format (float32 tensors only): write atomically, read
with every check safetensors itself makes (header length, JSON, dtypes,
shapes, offsets, overlaps, coverage) before any byte is used. Errors are
:class:`~cllm.CheckpointError` naming the file.
"""
from __future__ import annotations

import json
import math
import os
import struct
from typing import Any, Dict, Iterable, Optional, Tuple

import numpy as np

from .errors import CheckpointError
from .fileio import atomic_write

MAX_HEADER = 64 * 1024 * 1024


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


def _header(f: Any, path: str, size: int) -> Tuple[int, Dict[str, Any]]:
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
    return hlen, header


def read_metadata(path: str) -> Dict[str, str]:
    """The ``__metadata__`` of a safetensors file (header only; ``{}`` if none)."""
    with open(path, "rb") as f:
        _, header = _header(f, path, os.path.getsize(path))
    meta = header.get("__metadata__") or {}
    return meta if isinstance(meta, dict) else {}


def read_safetensors(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read and validate a safetensors file of float32 tensors.

    Raises :class:`CheckpointError` naming the file for any truncation or
    inconsistency; nothing is returned unless the whole file checks out."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: file not found")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        hlen, header = _header(f, path, size)
        meta = header.pop("__metadata__", {}) or {}
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: __metadata__ is not a JSON object")
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
            n = math.prod(shape)
            if b - a != 4 * n or a < 0 or b > data_len:
                raise CheckpointError(f"{path}: tensor {name!r} offsets [{a}, {b}) do not fit its shape "
                                      f"{shape} or the file's {data_len} data bytes (truncated?)")
            spans.append((a, b, name, shape))
        spans.sort()
        for (a0, b0, n0, _), (a1, _, n1, _) in zip(spans, spans[1:]):
            if a1 < b0:
                raise CheckpointError(f"{path}: tensors {n0!r} and {n1!r} overlap")
            if a1 > b0:
                raise CheckpointError(f"{path}: {a1 - b0} unused bytes between tensors {n0!r} and {n1!r}")
        end = spans[-1][1] if spans else 0
        if (spans and spans[0][0] != 0) or end != data_len:
            raise CheckpointError(f"{path}: the tensors cover bytes [{spans[0][0] if spans else 0}, {end}) of "
                                  f"the {data_len} data bytes (extra bytes after the last tensor, or a gap); "
                                  f"not a valid safetensors file")
        data = f.read(data_len)
        if len(data) != data_len:
            raise CheckpointError(f"{path}: truncated while reading tensor data")
    out = {name: np.frombuffer(data, dtype="<f4", count=(b - a) // 4, offset=a).reshape(shape)
           for a, b, name, shape in spans}
    return out, meta
