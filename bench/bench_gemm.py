"""Single-thread SGEMM benchmark: cllm (per ISA) vs numpy ``matmul`` (its BLAS).

Run from the project root::

    python bench/bench_gemm.py                 # all model shapes, every ISA
    python bench/bench_gemm.py --isa avx512 --reps 7 --shapes fwd_qkv,bwd_dw_qkv

Prints one line per shape and ISA::

    shape=... isa=... cllm_gflops=... numpy_gflops=... ratio=...

Both sides run single-threaded (the BLAS thread variables are set before
numpy is imported) and are timed interleaved, best (min) of ``--reps``.
"""
from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Callable, Dict, List, Optional, Tuple  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cllm._cllm import ffi, lib  # noqa: E402

log = logging.getLogger("bench_gemm")

ISA_IDS = {"scalar": lib.CLLM_ISA_SCALAR, "avx2": lib.CLLM_ISA_AVX2, "avx512": lib.CLLM_ISA_AVX512}


@dataclass(frozen=True)
class Shape:
    """One GEMM: C[M,N] = op(A) @ op(B), op(A) M x K, op(B) K x N."""

    name: str
    ta: int
    tb: int
    M: int
    N: int
    K: int

    @property
    def flops(self) -> float:
        return 2.0 * self.M * self.N * self.K

    def label(self) -> str:
        a = f"({self.K}x{self.M})^T" if self.ta else f"({self.M}x{self.K})"
        b = f"({self.N}x{self.K})^T" if self.tb else f"({self.K}x{self.N})"
        return f"{self.name}:{a}@{b}"


# Config B (d=384, 2048 tokens per step) plus LM heads, config C's vocab head, config A.
SHAPES: List[Shape] = [
    Shape("fwd_qkv", 0, 0, 2048, 1152, 384),
    Shape("fwd_fc", 0, 0, 2048, 1536, 384),
    Shape("fwd_proj", 0, 0, 2048, 384, 1536),
    Shape("fwd_attn_out", 0, 0, 2048, 384, 384),
    Shape("bwd_dx_qkv", 0, 1, 2048, 384, 1152),
    Shape("bwd_dx_fc", 0, 1, 2048, 384, 1536),
    Shape("bwd_dx_proj", 0, 1, 2048, 1536, 384),
    Shape("bwd_dw_qkv", 1, 0, 384, 1152, 2048),
    Shape("bwd_dw_fc", 1, 0, 384, 1536, 2048),
    Shape("bwd_dw_proj", 1, 0, 1536, 384, 2048),
    Shape("lm_head_B", 0, 1, 2048, 4096, 384),
    Shape("lm_dx_B", 0, 0, 2048, 384, 4096),
    Shape("lm_head_C", 0, 1, 256, 50257, 768),
    Shape("cfgA_fc", 0, 0, 768, 384, 128),
    # One token at generation time (small-M path, B streamed unpacked).
    Shape("gen_qkv", 0, 0, 1, 1152, 384),
    Shape("gen_lm_head_C", 0, 1, 1, 50257, 768),
]


def make_operands(s: Shape, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random A, B (stored as the transposes say) and an output C."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((s.K, s.M) if s.ta else (s.M, s.K)).astype(np.float32)
    B = rng.standard_normal((s.N, s.K) if s.tb else (s.K, s.N)).astype(np.float32)
    C = np.empty((s.M, s.N), np.float32)
    return A, B, C


def cllm_call(s: Shape, A: np.ndarray, B: np.ndarray, C: np.ndarray) -> Callable[[], None]:
    """A zero-argument callable running cllm_gemm on the operands."""
    pa = ffi.cast("float *", A.ctypes.data)
    pb = ffi.cast("float *", B.ctypes.data)
    pc = ffi.cast("float *", C.ctypes.data)
    lda, ldb = A.shape[1], B.shape[1]

    def run() -> None:
        rc = lib.cllm_gemm(s.ta, s.tb, s.M, s.N, s.K, 1.0, pa, lda, pb, ldb, 0.0, pc, s.N, ffi.NULL)
        if rc != 0:
            raise RuntimeError(ffi.string(lib.cllm_last_error()).decode())

    return run


def numpy_call(s: Shape, A: np.ndarray, B: np.ndarray, C: np.ndarray) -> Callable[[], None]:
    """A zero-argument callable running numpy.matmul (transposes as views)."""
    opA = A.T if s.ta else A
    opB = B.T if s.tb else B

    def run() -> None:
        np.matmul(opA, opB, out=C)

    return run


def set_isa(name: str) -> None:
    rc = lib.cllm_set_isa(ISA_IDS[name])
    if rc != 0:
        raise RuntimeError(ffi.string(lib.cllm_last_error()).decode())


def supported_isas() -> List[str]:
    a2, a5 = ffi.new("int *"), ffi.new("int *")
    lib.cllm_cpu_detect(a2, a5)
    return ["scalar"] + (["avx2"] if a2[0] else []) + (["avx512"] if a5[0] else [])


def best_times(fns: Dict[str, Callable[[], None]], reps: int, min_time: float) -> Dict[str, float]:
    """Interleave the callables; per rep, loop each for >= min_time; keep min per call."""
    best = {k: float("inf") for k in fns}
    for f in fns.values():  # warm-up (page faults, caches)
        f()
    for _ in range(reps):
        for k, f in fns.items():
            n, t0 = 0, time.perf_counter()
            while True:
                f()
                n += 1
                dt = time.perf_counter() - t0
                if dt >= min_time:
                    break
            best[k] = min(best[k], dt / n)
    return best


def bench(shapes: List[Shape], isas: List[str], reps: int, min_time: float,
          scalar_reps: Optional[int] = None) -> List[Dict[str, object]]:
    """Benchmark each shape x ISA against numpy, printing one line each."""
    rows = []
    for s in shapes:
        A, B, C = make_operands(s)
        npf = numpy_call(s, A, B, C)
        for isa in isas:
            set_isa(isa)
            r = reps if isa != "scalar" or scalar_reps is None else scalar_reps
            t = best_times({"cllm": cllm_call(s, A, B, C), "numpy": npf}, r, min_time)
            g_c, g_n = s.flops / t["cllm"] / 1e9, s.flops / t["numpy"] / 1e9
            row = dict(shape=s.label(), isa=isa, cllm_gflops=g_c, numpy_gflops=g_n, ratio=g_c / g_n)
            rows.append(row)
            print(f"shape={row['shape']} isa={isa} cllm_gflops={g_c:.1f} "
                  f"numpy_gflops={g_n:.1f} ratio={g_c / g_n:.3f}", flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--isa", default="all", help="comma list of scalar,avx2,avx512 or 'all'")
    p.add_argument("--shapes", default="all", help="comma list of shape names or 'all'")
    p.add_argument("--reps", type=int, default=5, help="repetitions (best of)")
    p.add_argument("--scalar-reps", type=int, default=1, help="repetitions for the slow scalar path")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per timed repetition")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    isas = supported_isas() if args.isa == "all" else args.isa.split(",")
    shapes = SHAPES if args.shapes == "all" else [s for s in SHAPES if s.name in args.shapes.split(",")]
    old = ffi.new("int *")
    lib.cllm_get_isa(old)
    try:
        rows = bench(shapes, isas, args.reps, args.min_time, args.scalar_reps)
    finally:
        lib.cllm_set_isa(old[0])
    for isa in isas:
        rs = [r["ratio"] for r in rows if r["isa"] == isa]
        if rs:
            log.info("isa=%s ratio min=%.3f geomean=%.3f", isa, min(rs),
                     float(np.exp(np.mean(np.log(rs)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
