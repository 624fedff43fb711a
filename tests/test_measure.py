"""Measured machine limits (csrc/runtime/peak.c): peak GFLOP/s and read bandwidth."""
from __future__ import annotations

import math

import pytest

import cllm

SECONDS = 0.03


def test_kinds_report_what_cpuid_says() -> None:
    kinds = cllm.peak_kinds()
    assert set(kinds) == {"fma_avx512", "fma_avx2", "bf16_avx512", "amx_bf16"}
    info = cllm.cpu_info()
    assert kinds["fma_avx2"] == info["avx2_fma"]
    assert kinds["fma_avx512"] == info["avx512"]
    assert kinds["bf16_avx512"] == (info["avx512"] and info["avx512_bf16"])
    assert kinds["amx_bf16"] == info["amx_bf16"]


@pytest.mark.parametrize("kind", ["fma_avx512", "fma_avx2", "bf16_avx512", "amx_bf16"])
def test_peak_supported_kinds_measure_a_plausible_rate(kind: str) -> None:
    if not cllm.peak_kinds()[kind]:
        with pytest.raises(cllm.UnsupportedError):
            cllm.measure_peak(kind, threads=1, seconds=SECONDS)
        return
    g = cllm.measure_peak(kind, threads=1, seconds=SECONDS)
    # one core: more than 1 GFLOP/s (any vector unit at any clock) and less
    # than 100 TFLOP/s (would mean the loop was optimised away)
    assert math.isfinite(g) and 1.0 < g < 1e5


def test_peak_on_two_threads_runs() -> None:
    g = cllm.measure_peak("fma_avx2", threads=2, seconds=SECONDS)
    assert math.isfinite(g) and g > 1.0


def test_bandwidth_plausible() -> None:
    for nbytes, threads in ((1 << 16, 1), (3 << 20, 2)):
        g = cllm.measure_bandwidth(nbytes, threads=threads, seconds=SECONDS)
        assert math.isfinite(g) and 0.1 < g < 1e5


@pytest.mark.parametrize("call", [
    lambda: cllm.measure_peak("fma_avx3"),
    lambda: cllm.measure_peak("fma_avx2", threads=-1),
    lambda: cllm.measure_peak("fma_avx2", threads=1.5),
    lambda: cllm.measure_peak("fma_avx2", seconds=0.0),
    lambda: cllm.measure_peak("fma_avx2", seconds=float("nan")),
    lambda: cllm.measure_peak("fma_avx2", seconds=1e9),
    lambda: cllm.measure_bandwidth(100),
    lambda: cllm.measure_bandwidth(-5),
    lambda: cllm.measure_bandwidth(1 << 20, threads=100000),
])
def test_bad_arguments_raise_config_error(call) -> None:
    with pytest.raises(cllm.ConfigError):
        call()


def test_c_level_argument_checks() -> None:
    from cllm._cllm import ffi, lib
    ok = ffi.new("int *")
    assert lib.cllm_peak_supported(7, ok) == lib.CLLM_ERR_INVALID
    assert lib.cllm_peak_supported(0, ffi.NULL) == lib.CLLM_ERR_INVALID
    assert lib.cllm_measure_peak(0, 1, 0.01, ffi.NULL) == lib.CLLM_ERR_INVALID
    assert lib.cllm_measure_bandwidth(1 << 20, 1, 0.01, ffi.NULL) == lib.CLLM_ERR_INVALID
