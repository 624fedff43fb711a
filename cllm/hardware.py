"""The machine as the C core sees it: the kernel path (ISA), CPU features,
cache sizes and GEMM blocking, and measured limits: multiply-add peak
(GFLOP/s) and read bandwidth (GB/s).

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

from typing import Any, Dict, Optional

from ._native import check, ffi, lib
from .errors import ConfigError, ConfigTypeError

__all__ = ["PEAK_KINDS", "peak_kinds", "measure_peak", "measure_bandwidth", "set_isa", "get_isa", "cpu_info",
           "cache_sizes", "gemm_blocking"]

#: kernel paths (``CLLM_ISA`` / :func:`set_isa`) -> C value
ISA_NAMES = {"scalar": 0, "avx2": 1, "avx512": 2, "auto": -1}

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


def set_isa(isa: str) -> None:
    """Force the kernel path: ``"scalar"``, ``"avx2"``, ``"avx512"`` or ``"auto"``."""
    if isa not in ISA_NAMES:
        raise ConfigError(f"unknown ISA {isa!r}; choose one of {sorted(ISA_NAMES)}")
    check(lib.cllm_set_isa(ISA_NAMES[isa]), "set_isa")


def get_isa() -> str:
    """The kernel path in use (``"scalar"``, ``"avx2"`` or ``"avx512"``)."""
    p = ffi.new("int *")
    check(lib.cllm_get_isa(p))
    return {v: k for k, v in ISA_NAMES.items()}[p[0]]


def cpu_info() -> Dict[str, Any]:
    """What CPUID detected (incl. AMX / AVX512-BF16 / VNNI, usable only with OS
    support), the chosen kernel path, the precision ``"auto"`` picks and the
    usable CPU count."""
    a, b, n = ffi.new("int *"), ffi.new("int *"), ffi.new("int *")
    check(lib.cllm_cpu_detect(a, b))
    check(lib.cllm_cpu_count(n))
    f = [ffi.new("int *") for _ in range(4)]
    check(lib.cllm_cpu_matrix_features(*f))
    from .precision import auto_precision
    isa = get_isa()
    return {"avx2_fma": bool(a[0]), "avx512": bool(b[0]), "avx512_bf16": bool(f[0][0]),
            "avx512_vnni": bool(f[1][0]), "amx_bf16": bool(f[2][0]), "amx_int8": bool(f[3][0]),
            "isa": isa, "precision_auto": auto_precision(), "cpus": int(n[0]),
            "caches": cache_sizes(), "gemm_blocking": gemm_blocking(isa)}


def cache_sizes() -> Dict[str, Any]:
    """Data cache sizes in bytes as the C core detected them (``l1d``, ``l2``,
    ``l3``; 0 if unknown), the CPUs sharing the L3 and the ``source``
    (``"cpuid"``, ``"sysfs"`` or ``"defaults"``)."""
    c = ffi.new("cllm_cache_info *")
    check(lib.cllm_cache_sizes(c))
    return {"l1d": int(c.l1d), "l2": int(c.l2), "l3": int(c.l3), "l3_sharing": int(c.l3_sharing),
            "source": {1: "cpuid", 2: "sysfs"}.get(c.source, "defaults")}


def gemm_blocking(isa: Optional[str] = None) -> Dict[str, int]:
    """The FP32 GEMM blocking of ``isa`` (default: the current kernel path):
    micro-kernel ``mr`` x ``nr`` and cache blocks ``mc``, ``kc``, ``nc``,
    derived from the cache sizes (env CLLM_GEMM_MC/KC/NC override)."""
    if isa in (None, "auto"):
        isa = get_isa()
    if isa not in ISA_NAMES:
        raise ConfigError(f"unknown ISA {isa!r}; choose one of {sorted(ISA_NAMES)}")
    v = [ffi.new("int *") for _ in range(5)]
    check(lib.cllm_gemm_blocking(ISA_NAMES[isa], *v), "gemm_blocking")
    return dict(zip(("mr", "nr", "mc", "kc", "nc"), (int(x[0]) for x in v)))
