"""The run directory: which directory a run writes, and that no one else does.

A run writes only inside its own directory and never deletes or replaces
what it did not create:

- a new run into a directory that holds anything (another run, or any
  files) is refused with the ways out (``--resume``, a new ``--out``,
  ``--overwrite``); only the default location :data:`DEFAULT_OUT` is
  numbered instead (``runs/cllm``, ``runs/cllm-2``, ...), so a second plain
  ``cllm train`` never touches the first;
- ``--init-from`` refuses an output directory that is, or is inside, the
  checkpoint it starts from;
- the run holds ``OUT/.lock`` (:class:`~cllm.io.files.DirLock`) from the
  start to the end of its final save (rank 0 under MPI), so a second
  writer, in another process, container or MPI job, is refused at once with
  the holder's pid and host.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Optional

from ..errors import ConfigError
from ..io.files import DirLock, LockedError, has_content, inside

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_OUT", "claim", "prepare"]

#: ``cllm train``'s default output directory (numbered when taken).
DEFAULT_OUT = os.path.join("runs", "cllm")


def _is_default(out_dir: str) -> bool:
    return os.path.normpath(out_dir) == os.path.normpath(DEFAULT_OUT)


def prepare(d: str) -> None:
    """Create run directory ``d`` if needed; :class:`~cllm.ConfigError` when it
    cannot be created or written (every rank checks the one it will use)."""
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"out_dir {d}: cannot create it ({e.strerror or e})") from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise ConfigError(f"out_dir {d}: not writable")


def _lock(d: str) -> DirLock:
    prepare(d)
    lock = DirLock(d, "training")
    try:
        lock.__enter__()
    except LockedError as e:
        raise ConfigError(f"out_dir {d}: {e}; wait for it to finish or use another --out") from None
    return lock


@contextlib.contextmanager
def claim(out_dir: Optional[str], *, resume: bool = False, overwrite: bool = False,
          init_from: Optional[str] = None, writer: bool = True) -> Iterator[Optional[str]]:
    """``with claim(out) as d:`` the directory this run writes (None: nothing
    is written), locked for the life of the block when ``writer`` (rank 0).
    Raises :class:`~cllm.ConfigError` naming the problem and the way out."""
    if not out_dir:
        yield None
        return
    out_dir = os.fspath(out_dir)
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"out_dir {out_dir}: exists and is not a directory")
    if resume and not os.path.isdir(out_dir):
        raise ConfigError(f"resume: out_dir={out_dir!r} holds no run; nothing to resume")
    if init_from is not None and inside(out_dir, init_from):
        raise ConfigError(f"out_dir {out_dir} is inside the checkpoint --init-from {init_from} starts from; "
                          f"fine-tune into another directory")
    if not writer:
        yield out_dir
        return
    candidates: Any = [out_dir]
    if not resume and not overwrite and _is_default(out_dir):
        candidates = (out_dir if k == 1 else f"{out_dir}-{k}" for k in range(1, 100000))
    for d in candidates:
        if not resume and not overwrite and has_content(d):
            if _is_default(out_dir):
                continue
            raise ConfigError(f"out_dir {d} is not empty (it holds another run or other files): continue that "
                              f"run with --resume, choose a new --out, or pass --overwrite to write into it "
                              f"anyway (cllm still deletes nothing it did not create)")
        lock = _lock(d)
        try:
            if not resume and not overwrite and has_content(d):   # taken while we were locking it
                if _is_default(out_dir):
                    continue
                raise ConfigError(f"out_dir {d} was taken by another run")
            if d != out_dir:
                log.info("%s holds an earlier run: this run writes %s", out_dir, d)
            yield d
            return
        finally:
            lock.__exit__(None, None, None)
    raise ConfigError(f"out_dir {out_dir}: no free numbered directory")   # pragma: no cover
