"""pytest-benchmark: every kernel op under scalar, avx2 and avx512 at the
model's real shapes (configs A, B, C; see bench/kernel_cases.py).

    python -m pytest bench/test_bench_kernels.py --benchmark-only \
        --benchmark-group-by=param:op

prints one comparison table per op (rows: config x ISA). Select with -k, e.g.
``-k "gelu and B"``. Each benchmark call runs the op ``reps`` times through
the C harness (one Python call), so the reported time is ``reps`` ops.
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernel_cases import CONFIGS, OPS, bench_dims, isa_supported, make_case, run  # noqa: E402

ISA_PARAMS = [pytest.param(i, marks=pytest.mark.skipif(not isa_supported(i), reason=f"CPU lacks {i}"))
              for i in ("scalar", "avx2", "avx512")]


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("cfg", list(CONFIGS))
@pytest.mark.parametrize("op", list(OPS))
def test_kernel(benchmark, op: str, cfg: str, isa: str) -> None:
    dims = bench_dims(op, cfg)
    arrays = make_case(op, dims, seed=0)
    benchmark.extra_info["dims"] = "x".join(map(str, dims))
    benchmark.pedantic(run, args=(op, isa, arrays, dims, 1), rounds=5, iterations=1, warmup_rounds=1)
