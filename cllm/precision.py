"""Training precision: ``"fp32"``, ``"bf16"`` or ``"auto"``.

``bf16`` runs every matmul (forward, dX, dW, LM head, attention's QK^T and
PV and their gradients) as BF16 x BF16 -> FP32 on the CPU's BF16 engine
(AMX-BF16 tiles, else AVX512-BF16 ``vdpbf16ps``), with FP32 master weights,
gradients, AdamW, LayerNorm, softmax, GELU, loss and norms. ``auto`` resolves to ``bf16`` when such a kernel
is usable under the selected kernel path (so ``CLLM_ISA=avx2`` gives
``fp32``), else ``fp32``; see docs/precision.md.
"""
from __future__ import annotations

from ._native import check, ffi, lib
from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
_C_VALUE = {"fp32": 0, "bf16": 1}


def auto_precision() -> str:
    """What ``precision="auto"`` picks on this CPU under the current kernel path."""
    p = ffi.new("int *")
    check(lib.cllm_precision_auto(p))
    return "bf16" if p[0] == lib.CLLM_PRECISION_BF16 else "fp32"


def resolve_precision(precision: str) -> str:
    """Validate ``precision`` and resolve ``"auto"``; returns ``"fp32"`` or ``"bf16"``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return auto_precision() if precision == "auto" else precision


def c_precision(precision: str) -> int:
    """The C enum value of a resolved precision."""
    return _C_VALUE[precision]
