"""Measured machine limits: multiply-add peak (GFLOP/s) and read bandwidth (GB/s).

Benchmarks state model FLOP utilisation against the peak measured on the
machine in the same run, and decoding speed against the measured bandwidth.
The loops are in the C core (``csrc/runtime/peak.c``):

>>> import cllm
>>> cllm.peak_kinds()                                   # doctest: +SKIP
{'fma_avx512': True, 'fma_avx2': True, 'bf16_avx512': True, 'amx_bf16': False}
>>> cllm.measure_peak("fma_avx512", threads=1)          # doctest: +SKIP
116.1
>>> cllm.measure_bandwidth(64 << 20, threads=2)         # doctest: +SKIP
23.0
"""
from __future__ import annotations

from typing import Dict

from ._native import check, ffi, lib
from .errors import ConfigError, ConfigTypeError

__all__ = ["PEAK_KINDS", "peak_kinds", "measure_peak", "measure_bandwidth"]

#: kind name -> (C enum, what the loop runs)
PEAK_KINDS: Dict[str, tuple] = {
    "fma_avx512": (lib.CLLM_PEAK_FMA_AVX512, "fp32 vfmadd231ps zmm"),
    "fma_avx2": (lib.CLLM_PEAK_FMA_AVX2, "fp32 vfmadd231ps ymm"),
    "bf16_avx512": (lib.CLLM_PEAK_BF16_AVX512, "bf16 vdpbf16ps zmm"),
    "amx_bf16": (lib.CLLM_PEAK_AMX_BF16, "bf16 AMX tdpbf16ps"),
}


def _kind(kind: str) -> int:
    if kind not in PEAK_KINDS:
        raise ConfigError(f"unknown peak kind {kind!r}; choose one of {sorted(PEAK_KINDS)}")
    return PEAK_KINDS[kind][0]


def peak_kinds() -> Dict[str, bool]:
    """Which peak kinds this CPU (and OS, for AMX tiles) can run."""
    out = {}
    for name in PEAK_KINDS:
        ok = ffi.new("int *")
        check(lib.cllm_peak_supported(_kind(name), ok), "peak_supported")
        out[name] = bool(ok[0])
    return out


def measure_peak(kind: str = "fma_avx512", threads: int = 1, seconds: float = 0.3) -> float:
    """Measured multiply-add peak in GFLOP/s of ``kind`` on ``threads`` threads.

    Each thread runs a register-only loop of independent multiply-adds for
    about ``seconds / 3``; the best of three runs is returned. ``threads=0``
    means every CPU of the affinity mask. Raises :class:`cllm.UnsupportedError`
    when the CPU lacks ``kind``.
    """
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise ConfigTypeError(f"threads must be an integer, got {threads!r}")
    g = ffi.new("double *")
    check(lib.cllm_measure_peak(_kind(kind), threads, float(seconds), g), "measure_peak")
    return float(g[0])


def measure_bandwidth(nbytes: int, threads: int = 1, seconds: float = 0.3) -> float:
    """Measured read bandwidth in GB/s (1e9 bytes/s) over a buffer of ``nbytes``.

    ``threads`` threads each read a contiguous slice of the buffer, repeatedly
    for about ``seconds`` in all, with every load loop the CPU supports (the
    fastest differs between cores); the best rate is returned.
    A buffer that fits the caches measures cache bandwidth; one several times
    the last-level cache measures DRAM.
    """
    for name, v in (("nbytes", nbytes), ("threads", threads)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigTypeError(f"{name} must be an integer, got {v!r}")
    if nbytes < 0:
        raise ConfigError(f"nbytes must be positive, got {nbytes}")
    g = ffi.new("double *")
    check(lib.cllm_measure_bandwidth(nbytes, threads, float(seconds), g), "measure_bandwidth")
    return float(g[0])
