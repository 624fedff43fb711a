"""The safetensors file format: write atomically, read with every check
safetensors itself makes (header length, JSON, dtypes, shapes, offsets,
overlaps) before any byte is used. Errors are :class:`~cllm.CheckpointError`
naming the file.

Two readers share one header validator: :func:`read_safetensors` (float32
tensors as numpy arrays, for training checkpoints) and :func:`map_safetensors`
(any of F32/F16/BF16/I8, memory-mapped, numpy-free: the fast path of
``cllm generate``, which hands the mapped bytes to the C core).
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import CheckpointError
from .files import atomic_write

MAX_HEADER = 64 * 1024 * 1024
#: bytes per element of the dtypes cllm reads
DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1}


class TensorEntry(tuple):
    """(dtype, shape, start, end) of one tensor; start/end are byte offsets
    into the data section."""

    @property
    def dtype(self) -> str:
        return self[0]

    @property
    def shape(self) -> Tuple[int, ...]:
        return self[1]

    @property
    def start(self) -> int:
        return self[2]

    @property
    def nbytes(self) -> int:
        return self[3] - self[2]


def _parse_header(path: str, raw: bytes, size: int, dtypes: Sequence[str]) -> Tuple[Dict[str, TensorEntry], Dict[str, str], int]:
    """Validate the header; returns (entries, metadata, data offset)."""
    if len(raw) < 8:
        raise CheckpointError(f"{path}: truncated (only {size} bytes; no safetensors header)")
    (hlen,) = struct.unpack("<Q", raw[:8])
    if hlen == 0 or hlen > MAX_HEADER or 8 + hlen > size:
        raise CheckpointError(f"{path}: corrupt or truncated header (header length {hlen}, file size {size})")
    if len(raw) < 8 + hlen:
        raise CheckpointError(f"{path}: truncated header")
    try:
        header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt header JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: __metadata__ is not a JSON object")
    data_len = size - 8 - hlen
    entries: Dict[str, TensorEntry] = {}
    for name, ent in header.items():
        try:
            dtype, shape, (a, b) = ent["dtype"], ent["shape"], ent["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed entry for tensor {name!r}") from None
        if dtype not in dtypes:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype}, expected "
                                  f"{' or '.join(dtypes)}")
        if (not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape)
                or not isinstance(a, int) or not isinstance(b, int)):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed shape or offsets")
        n = 1
        for s in shape:
            n *= s
        if b - a != DTYPE_SIZE[dtype] * n or a < 0 or b > data_len:
            raise CheckpointError(f"{path}: tensor {name!r} offsets [{a}, {b}) do not fit its shape "
                                  f"{shape} or the file's {data_len} data bytes (truncated?)")
        entries[name] = TensorEntry((dtype, tuple(shape), a, b))
    spans = sorted((e[2], e[3], n) for n, e in entries.items())
    for (a0, b0, n0), (a1, _, n1) in zip(spans, spans[1:]):
        if a1 < b0:
            raise CheckpointError(f"{path}: tensors {n0!r} and {n1!r} overlap")
        if a1 > b0:
            raise CheckpointError(f"{path}: {a1 - b0} unused bytes between tensors {n0!r} and {n1!r}")
    end = spans[-1][1] if spans else 0
    if (spans and spans[0][0] != 0) or end != data_len:
        raise CheckpointError(f"{path}: the tensors cover bytes [{spans[0][0] if spans else 0}, {end}) of "
                              f"the {data_len} data bytes (extra bytes after the last tensor, or a gap); "
                              f"not a valid safetensors file")
    return entries, {str(k): str(v) for k, v in meta.items()}, 8 + hlen


def _header_bytes(path: str, f: Any, size: int) -> bytes:
    raw = f.read(8)
    if len(raw) == 8:
        (hlen,) = struct.unpack("<Q", raw)
        if 0 < hlen <= MAX_HEADER:
            raw += f.read(hlen)
    return raw


def read_entries(path: str, dtypes: Sequence[str] = tuple(DTYPE_SIZE)) -> Dict[str, TensorEntry]:
    """Name -> (dtype, shape, offsets) of every tensor of a safetensors file,
    from its header alone (checked against the file size; no data is read)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: file not found")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = _header_bytes(path, f, size)
    return _parse_header(path, raw, size, dtypes)[0]


def read_metadata(path: str) -> Dict[str, str]:
    """The ``__metadata__`` of a safetensors file (header only; ``{}`` if none)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: file not found")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = _header_bytes(path, f, size)
    if len(raw) < 8 or len(raw) < 8 + struct.unpack("<Q", raw[:8])[0]:
        raise CheckpointError(f"{path}: corrupt or truncated header (file size {size})")
    try:
        header = json.loads(raw[8:].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt header JSON ({e})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def write_tensors(path: str, items: Iterable[Tuple[str, str, Sequence[int], Any]],
                  metadata: Optional[Dict[str, str]] = None) -> None:
    """Write (name, dtype, shape, buffer) tensors atomically; each buffer is
    any object exposing the buffer protocol with exactly the tensor's bytes
    (little-endian)."""
    rows: List[Tuple[str, str, Sequence[int], memoryview]] = []
    for name, dtype, shape, buf in items:
        mv = memoryview(buf).cast("B")
        n = 1
        for s in shape:
            n *= int(s)
        if dtype not in DTYPE_SIZE or mv.nbytes != n * DTYPE_SIZE[dtype]:
            raise CheckpointError(f"{path}: tensor {name!r}: {mv.nbytes} bytes do not fit {dtype} {list(shape)}")
        rows.append((name, dtype, shape, mv))
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    off = 0
    for name, dtype, shape, mv in rows:
        header[name] = {"dtype": dtype, "shape": [int(s) for s in shape], "data_offsets": [off, off + mv.nbytes]}
        off += mv.nbytes
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    atomic_write(path, [struct.pack("<Q", len(hb)), hb] + [mv for *_, mv in rows])


def write_safetensors(path: str, tensors: Iterable[Tuple[str, Any]],
                      metadata: Optional[Dict[str, str]] = None) -> None:
    """Write float32 tensors (numpy arrays) in the safetensors format (atomically)."""
    import numpy as np
    items = []
    for n, a in tensors:
        a = np.ascontiguousarray(a, dtype="<f4")
        items.append((n, "F32", a.shape, a))
    write_tensors(path, items, metadata)


def read_safetensors(path: str, half: bool = False) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Read and validate a safetensors file of float32 tensors (with ``half``,
    F16 and BF16 tensors too, widened to float32 exactly).

    Raises :class:`CheckpointError` naming the file for any truncation or
    inconsistency; nothing is returned unless the whole file checks out."""
    import numpy as np
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: file not found")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        entries, meta, start = _parse_header(path, _header_bytes(path, f, size), size,
                                             ("F32", "F16", "BF16") if half else ("F32",))
        data = f.read(size - start)
        if len(data) != size - start:
            raise CheckpointError(f"{path}: truncated while reading tensor data")
    out = {}
    for name, e in entries.items():
        if e.dtype == "F32":
            a = np.frombuffer(data, dtype="<f4", count=e.nbytes // 4, offset=e.start)
        elif e.dtype == "F16":
            a = np.frombuffer(data, dtype="<f2", count=e.nbytes // 2, offset=e.start).astype(np.float32)
        else:   # BF16: the high half of a float32
            a = (np.frombuffer(data, dtype="<u2", count=e.nbytes // 2, offset=e.start).astype(np.uint32)
                 << 16).view(np.float32)
        out[name] = a.reshape(e.shape)
    return out, meta


class MappedSafetensors:
    """A safetensors file mapped read-only: :attr:`entries` (name ->
    :class:`TensorEntry`), :attr:`metadata`, and :meth:`view` (a memoryview of
    one tensor's bytes, zero-copy). Keep the object alive while views are used."""

    def __init__(self, path: str, dtypes: Sequence[str] = tuple(DTYPE_SIZE)) -> None:
        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: file not found")
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self.entries, self.metadata, self._start = _parse_header(path, _header_bytes(path, f, size), size,
                                                                     tuple(dtypes))
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self._buf = memoryview(self._mm) if self._mm is not None else memoryview(b"")

    def view(self, name: str) -> memoryview:
        """The bytes of tensor ``name`` (read-only, zero-copy)."""
        e = self.entries[name]
        return self._buf[self._start + e.start:self._start + e.start + e.nbytes]

    def aligned(self, name: str) -> bool:
        """Whether the tensor's first byte is aligned to its element size."""
        e = self.entries[name]
        return (self._start + e.start) % DTYPE_SIZE[e.dtype] == 0


def map_safetensors(path: str, dtypes: Sequence[str] = tuple(DTYPE_SIZE)) -> MappedSafetensors:
    """Map ``path`` read-only after validating its header (no numpy)."""
    return MappedSafetensors(path, dtypes)
