"""File primitives shared by the whole package: the one atomic writer
(:func:`atomic_open` / :func:`atomic_write` / :func:`atomic_write_json`) and
the one JSON reader (:func:`read_json`).

An atomic write goes to a hidden temp file in the target's directory
(``.NAME.tmp.PID``), is flushed and fsynced, renamed over the target and
the directory is fsynced, so readers see the old file or the new one, never
a torn one. :func:`remove_stale_temps` deletes temp files that a killed
process left behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from typing import IO, Any, Iterable, Iterator

__all__ = ["atomic_open", "atomic_write", "atomic_write_json", "read_json", "fsync_dir",
           "remove_stale_temps", "TEMP_PATTERN"]

#: Names of the temp files :func:`atomic_open` creates.
TEMP_PATTERN = re.compile(r"^\..+\.tmp\.\d+$")


def fsync_dir(d: str) -> None:
    """Make renames inside directory ``d`` durable (best effort on odd file systems)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str) -> Iterator[IO[bytes]]:
    """``with atomic_open(p) as f: f.write(...)`` replaces ``p`` atomically on
    success (temp file + fsync + rename + directory fsync); on any exception
    the temp file is removed and ``p`` is untouched."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(d)


def atomic_write(path: str, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` atomically."""
    with atomic_open(path) as f:
        for c in chunks:
            f.write(c)


def atomic_write_json(path: str, obj: Any, indent: Any = 2) -> None:
    """Atomically write ``obj`` as UTF-8 JSON."""
    atomic_write(path, [json.dumps(obj, indent=indent, ensure_ascii=False).encode("utf-8")])


def read_json(path: str, corrupt: type = ValueError, missing: type = FileNotFoundError) -> Any:
    """Load a JSON file; a missing file raises ``missing`` and a corrupt one
    ``corrupt``, both naming ``path``."""
    if not os.path.isfile(path):
        raise missing(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise corrupt(f"{path}: corrupt JSON ({e})") from None


def remove_stale_temps(d: str) -> int:
    """Delete temp files of interrupted atomic writes in ``d``; returns how many."""
    n = 0
    try:
        names = os.listdir(d)
    except OSError:
        return 0
    for name in names:
        if TEMP_PATTERN.match(name):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(d, name))
                n += 1
    return n
