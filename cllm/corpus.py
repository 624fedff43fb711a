"""Corpus discovery: walk a source tree and yield its text documents.

File-system walking and file reading live here (never in C, and nowhere
else: the tokenizer reads paths through :func:`iter_documents` too). Files
are visited in sorted order so that the same tree always gives the same
corpus.
"""
from __future__ import annotations

import logging
import os
import sysconfig
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

from .errors import CorpusError

log = logging.getLogger(__name__)

SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv",
             ".tox", ".mypy_cache", ".pytest_cache", "build", "dist", "site-packages"}
MAX_FILE_BYTES = 2 * 1024 * 1024
#: Default cap for the default corpus (the running interpreter's stdlib).
DEFAULT_CORPUS_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Document:
    """One text file of the corpus."""
    path: str
    data: bytes


def default_corpus_path() -> str:
    """The Python standard library source of the running interpreter."""
    return sysconfig.get_paths()["stdlib"]


def _norm_exts(exts: Optional[Iterable[str]]) -> Optional[set]:
    if not exts:
        return None
    out = set()
    for e in exts:
        for part in str(e).split(","):
            part = part.strip()
            if part:
                out.add(part if part.startswith(".") else "." + part)
    return out or None


def is_text(data: bytes) -> bool:
    """Heuristic: no NUL byte in the first 8 KiB and valid UTF-8 (or mostly)."""
    head = data[:8192]
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as e:
        # a multi-byte character cut at the 8 KiB boundary is fine
        return e.start >= len(head) - 4


def iter_files(path: str, exts: Optional[Iterable[str]] = None) -> Iterator[str]:
    """Yield candidate file paths under ``path`` (a file or directory), sorted."""
    if not os.path.exists(path):
        raise CorpusError(f"corpus path does not exist: {path!r}")
    wanted = _norm_exts(exts)
    if os.path.isfile(path):
        yield path
        return
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            if wanted is not None and os.path.splitext(name)[1] not in wanted:
                continue
            yield os.path.join(root, name)


def read_document(fp: str) -> Tuple[Optional[bytes], str]:
    """``(data, "")`` for a usable text file, else ``(None, reason)`` (reason:
    ``"empty"``, ``"too large"``, ``"binary"``, ``"not a regular file"`` or
    the OS error). The one place a corpus file is read."""
    try:
        if not os.path.isfile(fp):
            return None, "not a regular file"
        size = os.stat(fp).st_size
        if size == 0:
            return None, "empty"
        if size > MAX_FILE_BYTES:
            return None, "too large"
        with open(fp, "rb") as f:
            data = f.read()
    except OSError as e:
        log.debug("skipping %s: %s", fp, e)
        return None, str(e)
    if not data:
        return None, "empty"
    if not is_text(data):
        return None, "binary"
    return data, ""


def iter_documents(path: str, exts: Optional[Sequence[str]] = None) -> Iterator[Document]:
    """Usable text documents under ``path`` in sorted order (see :func:`read_document`)."""
    for fp in iter_files(path, exts):
        data, _ = read_document(fp)
        if data is not None:
            yield Document(fp, data)


def load_documents(path: str, exts: Optional[Sequence[str]] = None,
                   max_bytes: Optional[int] = None) -> List[Document]:
    """Read the text documents under ``path``.

    Binary files (NUL bytes, invalid UTF-8), files over 2 MiB and empty files
    are skipped. ``max_bytes`` caps the total size (files are taken in sorted
    order until the cap). Raises :class:`CorpusError` if nothing usable is found.
    """
    docs: List[Document] = []
    total = 0
    skipped = 0
    for fp in iter_files(path, exts):
        data, _ = read_document(fp)
        if data is None:
            skipped += 1
            continue
        docs.append(Document(fp, data))
        total += len(data)
        if max_bytes is not None and total >= max_bytes:
            break
    if not docs:
        what = f" with extensions {sorted(_norm_exts(exts))}" if exts else ""
        raise CorpusError(f"no usable text files{what} found under {path!r} "
                          f"({skipped} skipped as empty, binary or too large)")
    log.info("corpus: %d files, %d bytes from %s (%d skipped)", len(docs), total, path, skipped)
    return docs
