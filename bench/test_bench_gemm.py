"""pytest-benchmark comparison of the SGEMM paths (scalar / avx2 / avx512) and numpy.

Run from the project root::

    python -m pytest bench/test_bench_gemm.py --benchmark-only

Each benchmark's ``extra_info`` holds the GFLOP/s; the group is the shape, so
the table pytest-benchmark prints compares the ISAs and numpy side by side.
Single-threaded on both sides (BLAS thread variables are set before numpy).
"""
from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import sys  # noqa: E402
from typing import Iterator  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_gemm as bg  # noqa: E402
from cllm._cllm import ffi, lib  # noqa: E402

# A few representative config-B shapes (forward, dInput via trans_b, dW via trans_a)
# and config A's small product.
SHAPES = [s for s in bg.SHAPES if s.name in ("fwd_qkv", "fwd_proj", "bwd_dx_qkv", "bwd_dw_qkv",
                                             "cfgA_fc")]
ISAS = bg.supported_isas()


@pytest.fixture
def restore_isa() -> Iterator[None]:
    old = ffi.new("int *")
    lib.cllm_get_isa(old)
    yield
    lib.cllm_set_isa(old[0])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
@pytest.mark.parametrize("isa", ISAS)
def test_cllm_gemm(benchmark, restore_isa, shape: bg.Shape, isa: str) -> None:
    benchmark.group = shape.label()
    A, B, C = bg.make_operands(shape)
    bg.set_isa(isa)
    run = bg.cllm_call(shape, A, B, C)
    rounds = 1 if isa == "scalar" else 5
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info["gflops"] = shape.flops / benchmark.stats.stats.min / 1e9
    ref = (A.T if shape.ta else A).astype(np.float64) @ (B.T if shape.tb else B).astype(np.float64)
    assert np.max(np.abs(C - ref)) / np.max(np.abs(ref)) <= 1e-5


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_numpy_matmul(benchmark, shape: bg.Shape) -> None:
    benchmark.group = shape.label()
    A, B, C = bg.make_operands(shape)
    run = bg.numpy_call(shape, A, B, C)
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["gflops"] = shape.flops / benchmark.stats.stats.min / 1e9
