"""File primitives shared by the whole package: the one atomic writer
(:func:`atomic_open` / :func:`atomic_write` / :func:`atomic_write_json`) and
the one JSON reader (:func:`read_json`).

An atomic write goes to a hidden temp file in the target's directory
(``.NAME.tmp.PID.RANDOM``, created with ``O_EXCL | O_NOFOLLOW`` so a
planted file or link is never written through), is flushed and fsynced,
given the mode of the file it replaces, renamed over the target and the
directory is fsynced, so readers see the old file or the new one, never a
torn one. :func:`remove_stale_temps` deletes temp files that a killed
process left behind.

:class:`DirLock` is the one writer lock of a directory (``DIR/.lock``, an
``fcntl`` lock held for the life of a run, a save or a quantize).
:func:`read_json` reads untrusted JSON with a size limit, refusing deep
nesting and non-finite numbers.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
from typing import IO, Any, Dict, Iterable, Iterator, Optional

__all__ = ["atomic_open", "atomic_write", "atomic_write_json", "atomic_symlink", "read_json", "fsync_dir",
           "remove_stale_temps", "temp_name", "sha256_file", "TEMP_PATTERN", "DirLock", "LockedError",
           "LOCK_FILE", "MAX_JSON_BYTES", "holds_lock", "has_content", "inside"]

#: Names of the temp files and directories cllm creates (``.NAME.tmp.PID.RANDOM``).
TEMP_PATTERN = re.compile(r"^\..+\.tmp\.(\d+)(?:\.[0-9a-f]+)?$")
#: The writer lock of a directory.
LOCK_FILE = ".lock"
#: The largest JSON file :func:`read_json` reads (a checkpoint's are far smaller).
MAX_JSON_BYTES = 256 << 20


def temp_name(path: str, tag: str = "") -> str:
    """A fresh hidden temp sibling of ``path`` owned by this process (matches
    :data:`TEMP_PATTERN`; the random part makes the name unpredictable)."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}{tag}.tmp.{os.getpid()}.{os.urandom(6).hex()}")


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
        old = os.lstat(path)
        mode = stat.S_IMODE(old.st_mode) if stat.S_ISREG(old.st_mode) else None
    except OSError:
        mode = None
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0), 0o666)
            with os.fdopen(fd, "wb") as f:
                if mode is not None:
                    os.fchmod(f.fileno(), mode)   # the replaced file's mode is kept
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


def _finite(text: str) -> float:
    v = float(text)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return v


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: str, corrupt: type = ValueError, missing: type = FileNotFoundError,
              max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Load a JSON file; a missing file raises ``missing`` and a corrupt one
    ``corrupt``, both naming ``path``. Untrusted input is bounded: a file over
    ``max_bytes``, nesting deeper than Python's recursion limit, ``NaN``,
    ``Infinity`` and numbers that overflow a float are corrupt too."""
    if not os.path.isfile(path):
        raise missing(f"{path}: file not found")
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise corrupt(f"{path}: {size:,} bytes is above the {max_bytes:,}-byte limit for a JSON file")
        with open(path, encoding="utf-8") as f:
            return json.load(f, parse_float=_finite, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise corrupt(f"{path}: corrupt JSON ({e})") from None
    except RecursionError:
        raise corrupt(f"{path}: corrupt JSON (nested too deeply)") from None
    except ValueError as e:
        if isinstance(e, corrupt):
            raise
        raise corrupt(f"{path}: corrupt JSON ({e})") from None


def atomic_symlink(target: str, link: str) -> None:
    """Make ``link`` a symlink to ``target``, replacing whatever is there atomically."""
    tmp = temp_name(link)
    os.symlink(target, tmp)   # fails rather than follows if the fresh name exists
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


def remove_stale_temps(d: str, all_dead: bool = False) -> int:
    """Delete temp files and directories that killed processes left in ``d``
    (those of live processes on this host are kept, unless ``all_dead``: the
    caller holds the directory's :class:`DirLock`, so no other writer is
    alive anywhere); returns how many were removed."""
    n = 0
    try:
        names = os.listdir(d)
    except OSError:
        return 0
    for name in names:
        m = TEMP_PATTERN.match(name)
        if not m or (not all_dead and _alive(int(m.group(1)))):
            continue
        p = os.path.join(d, name)
        with contextlib.suppress(OSError):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
            n += 1
    return n


class LockedError(OSError):
    """The directory's lock is held by another process (``holder`` says which)."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(errno.EBUSY, f"{path} is in use by another cllm process ({holder})")
        self.path = path
        self.holder = holder


def _holder(fd: int, wait_s: float = 1.0) -> str:
    """What the lock file says of its holder. A holder writes it right after
    taking the lock, so a writer refused in that instant waits a moment."""
    import time
    deadline = time.monotonic() + wait_s
    while True:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        if text or time.monotonic() >= deadline:
            return text or "holder unknown"
        time.sleep(0.01)


#: locks this process holds: real path of the directory -> [fd, depth]
_HELD: Dict[str, list] = {}


class DirLock:
    """``with DirLock(d, what="training"):`` holds ``d/.lock`` (``fcntl.flock``,
    exclusive, non-blocking) and records this process's pid, host and task in
    it. A second process is refused at once with :class:`LockedError` naming
    the holder; the same process may nest locks on one directory. The lock is
    the kernel's, so it is released when the process dies, however it dies,
    and it works across containers sharing the directory (on file systems
    where ``flock`` does: local ones, and NFS v4)."""

    def __init__(self, path: str, what: str = "writing") -> None:
        self.path = os.fspath(path)
        self.what = what
        self._key: Optional[str] = None

    def __enter__(self) -> "DirLock":
        key = os.path.realpath(self.path)
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
            self._key = key
            return self
        import fcntl
        lp = os.path.join(key, LOCK_FILE)
        fd = os.open(lp, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                     0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
            holder = _holder(fd)
            os.close(fd)
            raise LockedError(self.path, holder) from None
        info = f"pid {os.getpid()} on host {socket.gethostname()}, {self.what}\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        _HELD[key] = [fd, 1]
        self._key = key
        return self

    def __exit__(self, *exc: Any) -> None:
        key, self._key = self._key, None
        if key is None:
            return
        held = _HELD[key]
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            with contextlib.suppress(OSError):
                os.ftruncate(held[0], 0)   # no stale holder for the next refused writer to report
            os.close(held[0])   # closing the only descriptor releases the flock


def has_content(d: str) -> bool:
    """Whether directory ``d`` exists and holds anything but a lock file."""
    try:
        return any(n != LOCK_FILE for n in os.listdir(d))
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return True


def inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (links resolved)."""
    p, r = os.path.realpath(path), os.path.realpath(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def holds_lock(path: str) -> bool:
    """Whether this process holds the :class:`DirLock` of ``path``."""
    return os.path.realpath(path) in _HELD
