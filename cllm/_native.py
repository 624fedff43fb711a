"""The compiled C core (``ffi``, ``lib``) and THE translation of its error
codes into :mod:`cllm.errors` classes (:func:`check`), used by every C call
(model, tokenizer, runtime)."""
from __future__ import annotations

from typing import Any

from .errors import (CllmError, CllmMemoryError, ConfigError, NumericError, StateError,
                     UnsupportedError)

try:
    from ._cllm import ffi, lib  # type: ignore[attr-defined]
except ImportError as e:  # pragma: no cover - only when the build is missing
    raise ImportError(
        "cllm's C extension (cllm._cllm) is not built. Install the package with "
        "`pip install .` (or `python setup.py build_ext --inplace` in a checkout)."
    ) from e

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
