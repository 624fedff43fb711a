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
import errno
import hashlib
import json
import os
import re
import shutil
from typing import IO, Any, Iterable, Iterator

__all__ = ["atomic_open", "atomic_write", "atomic_write_json", "atomic_symlink", "read_json", "fsync_dir",
           "remove_stale_temps", "temp_name", "sha256_file", "TEMP_PATTERN"]

#: Names of the temp files and directories cllm creates (``.NAME.tmp.PID``).
TEMP_PATTERN = re.compile(r"^\..+\.tmp\.(\d+)$")


def temp_name(path: str, tag: str = "") -> str:
    """The hidden temp sibling of ``path`` owned by this process (matches :data:`TEMP_PATTERN`)."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}{tag}.tmp.{os.getpid()}")


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
    tmp = temp_name(path)
    try:
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:  # name the user's file, not the temp file
            raise type(e)(e.errno, f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))


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


def atomic_symlink(target: str, link: str) -> None:
    """Make ``link`` a symlink to ``target``, replacing whatever is there atomically."""
    tmp = temp_name(link)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(link)))


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def remove_stale_temps(d: str) -> int:
    """Delete temp files and directories that killed processes left in ``d``
    (those of live processes are kept); returns how many were removed."""
    n = 0
    try:
        names = os.listdir(d)
    except OSError:
        return 0
    for name in names:
        m = TEMP_PATTERN.match(name)
        if not m or _alive(int(m.group(1))):
            continue
        p = os.path.join(d, name)
        with contextlib.suppress(OSError):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
            n += 1
    return n
