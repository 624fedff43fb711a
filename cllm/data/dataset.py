"""Token-id cache of a corpus: one memory-mapped ``.bin`` per (files, tokenizer).

File layout (little endian)::

    offset  size  field
    0       8     magic  b"CLLMTOK\\0"
    8       4     version (1)
    12      4     itemsize: 2 (uint16 ids) or 4 (uint32 ids)
    16      8     count: number of ids
    24      32    key: sha256 of the file list (paths, sizes, mtimes) and the tokenizer
    56      32    blake2b-256 digest of the id bytes
    88      40    zero padding (header is 128 bytes)
    128     ...   count ids, each document followed by <|endoftext|>

The cache is reused only when magic, version, key, size and digest all check
out; anything else (a changed file, another tokenizer, a truncated or
corrupt file) rebuilds it. Writes are atomic (:func:`cllm.io.files.atomic_open`).
"""
from __future__ import annotations

import hashlib
import logging
import os
import struct
from typing import List, Optional, Sequence, Union

import numpy as np

from .corpus import Document, read_document
from ..errors import CorpusError
from ..io.files import atomic_open, remove_stale_temps
from ..progress import progress_bar
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

MAGIC = b"CLLMTOK\0"
VERSION = 1
HEADER_BYTES = 128
_HDR = struct.Struct("<8sIIQ32s32s")

FileLike = Union[str, "os.PathLike[str]", Document]


def _path_of(f: FileLike) -> str:
    return f.path if isinstance(f, Document) else os.fspath(f)


def _read(f: FileLike) -> bytes:
    data, why = read_document(_path_of(f))
    if data is None:
        raise CorpusError(f"{_path_of(f)}: cannot be tokenized ({why})")
    return data


def cache_key(files: Sequence[FileLike], tokenizer: Tokenizer) -> bytes:
    """sha256 over (path, size, mtime_ns) of every file, in order, and the tokenizer."""
    h = hashlib.sha256()
    h.update(b"cllm-dataset-v%d\0" % VERSION)
    for f in files:
        p = os.path.abspath(_path_of(f))
        st = os.stat(p)
        h.update(p.encode("utf-8", "surrogateescape") + b"\0%d\0%d\0" % (st.st_size, st.st_mtime_ns))
    h.update(tokenizer.fingerprint().encode())
    return h.digest()


def _dtype_for(tokenizer: Tokenizer) -> np.dtype:
    return np.dtype(np.uint16) if len(tokenizer) <= 65536 else np.dtype(np.uint32)


def _digest(arr: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=32)
    h.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return h.digest()


def read_cache(path: str, key: Optional[bytes] = None, verify: bool = True) -> Optional[np.memmap]:
    """The ids in ``path`` as a read-only memmap, or None if the file is
    missing, truncated, corrupt or built for another ``key``."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError:
        return None
    if len(head) < HEADER_BYTES:
        log.warning("token cache %s: truncated header, rebuilding", path)
        return None
    magic, version, itemsize, count, fkey, digest = _HDR.unpack_from(head)
    if magic != MAGIC or version != VERSION or itemsize not in (2, 4):
        log.warning("token cache %s: bad magic/version/dtype, rebuilding", path)
        return None
    if key is not None and fkey != key:
        return None
    if size != HEADER_BYTES + count * itemsize:
        log.warning("token cache %s: size %d does not match %d ids, rebuilding", path, size, count)
        return None
    dtype = np.uint16 if itemsize == 2 else np.uint32
    if count == 0:  # every document ends with <|endoftext|>: never empty
        log.warning("token cache %s: holds no ids, rebuilding", path)
        return None
    mm = np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(count,))
    if verify and _digest(mm) != digest:
        log.warning("token cache %s: checksum mismatch, rebuilding", path)
        return None
    return mm


def load_or_build(files: Sequence[FileLike], tokenizer: Tokenizer, cache_dir: str,
                  progress: bool = True) -> np.memmap:
    """Ids of ``files`` (each document followed by ``<|endoftext|>``), cached.

    ``files`` are paths or :class:`~cllm.data.corpus.Document` objects (whose
    ``data`` is used, keyed by their path's size and mtime). The cache lives
    in ``cache_dir/tokens-<key>.bin`` and is rebuilt when the file list, a
    size, an mtime or the tokenizer changed, or when it is corrupt.
    """
    files = list(files)
    if not files:
        raise ValueError("load_or_build: no files given")
    if tokenizer.eot_id < 0:
        raise ValueError("load_or_build: tokenizer has no <|endoftext|> token")
    key = cache_key(files, tokenizer)
    os.makedirs(cache_dir, exist_ok=True)
    remove_stale_temps(cache_dir)  # of builds that were killed
    path = os.path.join(cache_dir, f"tokens-{key.hex()[:16]}.bin")
    mm = read_cache(path, key)
    if mm is not None:
        log.info("token cache hit: %s (%d ids)", path, len(mm))
        return mm
    _build(files, tokenizer, path, key, progress)
    mm = read_cache(path, key)
    if mm is None:  # pragma: no cover - would mean the writer is broken
        raise RuntimeError(f"token cache {path} unreadable right after writing it")
    return mm


def _build(files: List[FileLike], tokenizer: Tokenizer, path: str, key: bytes,
           progress: bool) -> None:
    dtype = _dtype_for(tokenizer)
    sizes = [len(f.data) if isinstance(f, Document) else os.path.getsize(_path_of(f)) for f in files]
    h = hashlib.blake2b(digest_size=32)
    count = 0
    bar = progress_bar(progress, desc="tokenizing", total=sum(sizes), unit="B", unit_scale=True)
    try:
        with atomic_open(path) as out:
            out.write(b"\0" * HEADER_BYTES)
            batch: List[bytes] = []
            batch_bytes = 0

            def flush() -> None:
                nonlocal count, batch_bytes
                if not batch:
                    return
                ids = np.ascontiguousarray(tokenizer.encode_documents(batch), dtype=dtype)
                buf = memoryview(ids).cast("B")
                out.write(buf)
                h.update(buf)
                count += len(ids)
                bar.update(batch_bytes)
                batch.clear()
                batch_bytes = 0

            for f, sz in zip(files, sizes):
                data = f.data if isinstance(f, Document) else _read(f)
                batch.append(data)
                batch_bytes += sz
                if batch_bytes >= (4 << 20):
                    flush()
            flush()
            out.seek(0)
            out.write(_HDR.pack(MAGIC, VERSION, dtype.itemsize, count, key, h.digest()))
    finally:
        bar.close()
    log.info("token cache built: %s (%d ids, %s)", path, count, dtype.name)
