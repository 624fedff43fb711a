"""FP32 GEMM cache blocking: the cache-derived default against other MC/KC/NC.

Run from the project root::

    python bench/gemm_blocking.py                               # config-B shapes, best ISA
    python bench/gemm_blocking.py --blockings 192:384:4096,0:128:0 --isa avx2
    python bench/gemm_blocking.py --shapes fwd_qkv,bwd_dw_qkv --reps 7

Each column is one blocking ``MC:KC:NC`` (0 keeps the default's value; the
first column is always the default ``cllm_gemm_blocking`` derives from the
cache sizes, or the CLLM_GEMM_* overrides). Every cell is GFLOP/s of
``cllm_gemm_blocked`` on one thread and its share of the FMA peak measured in
this run; the columns are timed interleaved, best (min) of ``--reps`` loops.
"""
from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Callable, Dict, List, Optional, Tuple  # noqa: E402

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]  # bench/; lib puts the repository root there too
from lib.machine import FP32_PEAK, measure_machine  # noqa: E402
from lib.tables import fmt_bytes, num, pct, table  # noqa: E402
from lib.timing import best_times  # noqa: E402
from bench_gemm import CONFIG_B, ISA_IDS, SHAPES, Shape, make_operands, supported_isas  # noqa: E402
from cllm._cllm import ffi, lib  # noqa: E402

Blocking = Tuple[int, int, int]


def default_blocking(isa: str) -> Tuple[int, int, Blocking]:
    """(MR, NR, (MC, KC, NC)) the library uses for ``isa``."""
    v = [ffi.new("int *") for _ in range(5)]
    if lib.cllm_gemm_blocking(ISA_IDS[isa], *v) != 0:
        raise RuntimeError(ffi.string(lib.cllm_last_error()).decode())
    mr, nr, mc, kc, nc = (x[0] for x in v)
    return mr, nr, (mc, kc, nc)


def blocked_call(isa: str, blk: Blocking, s: Shape, A, B, C) -> Callable[[], None]:
    """A zero-argument callable running cllm_gemm_blocked with ``blk``."""
    pa, pb, pc = (ffi.cast("float *", x.ctypes.data) for x in (A, B, C))
    lda, ldb = A.shape[1], B.shape[1]
    mc, kc, nc = blk

    def run() -> None:
        rc = lib.cllm_gemm_blocked(ISA_IDS[isa], mc, kc, nc, s.ta, s.tb, s.M, s.N, s.K, 1.0, pa, lda, pb, ldb,
                                   0.0, pc, s.N, ffi.NULL)
        if rc != 0:
            raise RuntimeError(ffi.string(lib.cllm_last_error()).decode())

    return run


def parse_blockings(text: str) -> List[Blocking]:
    out = []
    for item in filter(None, text.split(",")):
        parts = item.split(":")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise SystemExit(f"bad blocking {item!r}: expected MC:KC:NC (0 = default)")
        out.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--isa", default="best", help="scalar, avx2 or avx512 ('best' = the widest supported)")
    ap.add_argument("--blockings", default="192:384:4096,96:384:4096,0:256:0,0:64:0,0:0:2048",
                    help="comma list of MC:KC:NC to compare with the default (0 = default's value)")
    ap.add_argument("--shapes", default="B", help="comma list of shape names, or 'B' (config B)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.1)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="time by wall clock (quiet machine) or this thread's CPU time (shared machine: "
                         "leaves out the time spent waiting for a core, not other jobs' cache pollution)")
    a = ap.parse_args(argv)
    isa = supported_isas()[-1] if a.isa == "best" else a.isa
    if isa not in supported_isas():
        raise SystemExit(f"ISA {isa!r} is not supported by this CPU")
    names = CONFIG_B if a.shapes == "B" else a.shapes.split(",")
    shapes = [s for s in SHAPES if s.name in names]
    mr, nr, dflt = default_blocking(isa)
    cols: List[Blocking] = [(0, 0, 0)] + parse_blockings(a.blockings)
    labels = ["default " + ":".join(map(str, dflt))] + [":".join(map(str, b)) for b in cols[1:]]
    machine = measure_machine([1], kinds=[FP32_PEAK.get(isa, "fma_avx2")])
    # a wall-clock peak is no yardstick for CPU-clock timings
    peak = next(iter(machine.peaks.values()), None) if isa != "scalar" and a.clock == "wall" else None
    print(f"CPU: {machine.model}; caches {', '.join(f'{k} {fmt_bytes(v)}' for k, v in machine.caches.items())}")
    print(f"ISA {isa}: micro-kernel {mr}x{nr}; measured FMA peak (1 thread): "
          f"{num(peak, 1) if peak else 'n/a'} GFLOP/s; GFLOP/s (% of peak), best of {a.reps}, {a.clock} clock")
    rows = []
    for s in shapes:
        A, B, C = make_operands(s)
        fns: Dict[str, Callable[[], None]] = {lab: blocked_call(isa, b, s, A, B, C) for lab, b in zip(labels, cols)}
        t = best_times(fns, a.reps, a.min_time, clock=time.perf_counter if a.clock == "wall" else time.thread_time)
        g = {k: s.flops / v / 1e9 for k, v in t.items()}
        best = max(g, key=g.get)
        rows.append([s.label()] + [f"{g[k]:.0f} ({pct(g[k] / peak) if peak else '-'})" for k in labels]
                    + [best if best != labels[0] else "default"])
        sys.stdout.flush()
    print(table(["shape"] + labels + ["fastest"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
