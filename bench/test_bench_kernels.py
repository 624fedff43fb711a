"""pytest-benchmark: every kernel op under scalar, avx2 and avx512 at the
model's real shapes (configs A, B, C; see bench/kernel_cases.py).

    python -m pytest bench/test_bench_kernels.py --benchmark-only \
        --benchmark-group-by=param:op

prints one comparison table per op (rows: config x ISA). Select with -k, e.g.
``-k "gelu_fwd-B"``. Each timed round runs the op ``reps`` times inside the C
harness (one Python call; ``reps`` is in extra_info and is the same for the
three ISAs of an op and config), so compare times within a group.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Dict, Tuple

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
    reps = _reps(op, cfg, arrays, dims)
    benchmark.extra_info["dims"] = "x".join(map(str, dims))
    benchmark.extra_info["reps"] = reps
    benchmark.pedantic(run, args=(op, isa, arrays, dims, reps), rounds=7, iterations=1, warmup_rounds=1)


_REPS: Dict[Tuple[str, str], int] = {}


def _reps(op: str, cfg: str, arrays, dims) -> int:
    """Calls per timed round, the same for every ISA of (op, cfg): enough
    that one scalar round takes ~2 ms, so the ~5 us Python/cffi call cost
    does not hide the tiny ops (the C harness loops, not Python)."""
    if (op, cfg) not in _REPS:
        work = [a.copy() for a in arrays]
        t0 = time.perf_counter()
        run(op, "scalar", work, dims, 1)
        one = time.perf_counter() - t0
        _REPS[(op, cfg)] = max(1, min(1000, int(2e-3 / max(one, 1e-7))))
    return _REPS[(op, cfg)]
