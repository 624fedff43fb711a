"""The compiled C core (``ffi``, ``lib``) and THE translation of its error
codes into :mod:`cllm.errors` classes (:func:`check`), used by every C call
(model, tokenizer, runtime)."""
from __future__ import annotations

from typing import Any

from .errors import (CllmError, CllmMemoryError, ConfigError, NumericError, StateError,
                     UnsupportedError)


def _missing_build_message() -> str:
    """Why ``cllm._cllm`` is missing, in one line: this is a source folder
    (a checkout, or a folder named ``cllm`` in the working directory) that
    shadows an installed cllm, or the package was never built."""
    import importlib.machinery
    import os
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    parent = os.path.dirname(here)
    others = [p for p in sys.path if os.path.abspath(p or os.curdir) != parent]
    for finder in sys.meta_path:   # the path finder, and an editable install's hook
        try:
            if finder is importlib.machinery.PathFinder:
                spec = finder.find_spec("cllm", others)
            else:
                spec = finder.find_spec("cllm", None)  # type: ignore[call-arg]
        except Exception:  # noqa: BLE001 - a foreign finder: no opinion
            continue
        where = getattr(spec, "origin", None)
        if where and os.path.dirname(os.path.abspath(where)) != here:
            return (f"the folder {here} (cllm's source, without its built C extension) shadows "
                    f"the installed cllm at {os.path.dirname(where)}: run Python from another "
                    "directory, or install this checkout with `pip install -e .`")
    return ("cllm's C extension (cllm._cllm) is not built. Install the package with "
            "`pip install .` (or `python setup.py build_ext --inplace` in a checkout).")


try:
    from ._cllm import ffi, lib  # type: ignore[attr-defined]
except ImportError as e:  # pragma: no cover - only when the build is missing
    raise ImportError(_missing_build_message()) from e

__all__ = ["ffi", "lib", "check", "CllmError", "ConfigError", "NumericError",
           "CllmMemoryError", "StateError", "UnsupportedError", "last_error"]


_CODE_TO_EXC = {
    lib.CLLM_ERR_INVALID: ConfigError,
    lib.CLLM_ERR_RANGE: ConfigError,
    lib.CLLM_ERR_NOMEM: CllmMemoryError,
    lib.CLLM_ERR_STATE: StateError,
    lib.CLLM_ERR_NUMERIC: NumericError,
    lib.CLLM_ERR_UNSUPPORTED: UnsupportedError,
}


def last_error() -> str:
    """The C core's last error message on this thread."""
    return ffi.string(lib.cllm_last_error()).decode("utf-8", errors="replace")


def check(rc: int, what: str = "") -> None:
    """Raise the matching exception if a C call returned a non-zero code."""
    if rc == 0:
        return
    msg = last_error() or f"error code {rc}"
    if what and not msg.startswith(f"{what}:"):  # the C message may name the call already
        msg = f"{what}: {msg}"
    raise _CODE_TO_EXC.get(rc, CllmError)(msg)


def fptr(arr: Any) -> Any:
    """float* to the data of a C-contiguous float32 numpy array."""
    return ffi.cast("float *", ffi.from_buffer(arr))


def iptr(arr: Any) -> Any:
    """int32_t* to the data of a C-contiguous int32 numpy array."""
    return ffi.cast("int32_t *", ffi.from_buffer(arr))
