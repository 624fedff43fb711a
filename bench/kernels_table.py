"""Print a markdown table of kernel timings: op, shape, scalar / avx2 /
avx512 ms per call (best of 5 batches) and the speed-up of the best SIMD
path over scalar.

    python bench/kernels_table.py [--configs A,B,C] [--ops gelu_fwd,...]
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]  # bench/ (lib puts the repository root on sys.path too)
from lib.machine import measure_machine  # noqa: E402
from kernel_cases import OPS, bench_dims, isa_supported, make_case, time_op  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="A,B,C")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--budget", type=float, default=0.25, help="seconds per (op, ISA) measurement")
    args = ap.parse_args()
    isas = [i for i in ("scalar", "avx2", "avx512") if isa_supported(i)]
    print("\n".join(measure_machine([1]).header_lines()) + "\n")
    print("| op | config | dims | " + " | ".join(f"{i} ms" for i in isas) + " | avx2 x | avx512 x |")
    print("|---|---|---|" + "---:|" * (len(isas) + 2))
    for op in args.ops.split(","):
        for cfg in args.configs.split(","):
            dims = bench_dims(op, cfg)
            arrays = make_case(op, dims, seed=0)
            t = {}
            for isa in isas:
                work = [a.copy() for a in arrays]
                t[isa] = time_op(op, isa, work, dims, repeats=7, budget=args.budget)
            sp = [f"{t['scalar'] / t[i]:.1f}" if i in t else "-" for i in ("avx2", "avx512")]
            cells = " | ".join(f"{t[i] * 1e3:.3f}" for i in isas)
            print(f"| {op} | {cfg} | {'x'.join(map(str, dims))} | {cells} | {sp[0]} | {sp[1]} |", flush=True)


if __name__ == "__main__":
    main()
