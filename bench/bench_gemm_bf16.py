"""Single-thread BF16 GEMM benchmark: cllm's BF16 kernels vs its FP32 SGEMM
(and torch's bf16 matmul when torch is installed), on the model's shapes.

Run from the project root::

    python bench/bench_gemm_bf16.py                  # every model shape
    python bench/bench_gemm_bf16.py --shapes fwd_fc,bwd_dw_fc --reps 7

One line per shape: GFLOP/s of cllm fp32 (AVX-512 SGEMM), cllm bf16 with
FP32 operands (converted while packing), cllm bf16 with the B operand
already BF16 (the model's weight copies), torch bf16 (1 thread), and the
bf16/fp32 ratio. Timed interleaved, best of ``--reps``.
"""
from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from typing import Callable, Dict, List, Optional  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_gemm import SHAPES, Shape, best_times, make_operands  # noqa: E402
from cllm._cllm import ffi, lib  # noqa: E402

KERNELS = {"avx512_bf16": lib.CLLM_BF16_KERNEL_AVX512, "amx_bf16": lib.CLLM_BF16_KERNEL_AMX}


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def to_bf16(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, np.uint16)
    assert lib.cllm_convert_bf16(lib.CLLM_ISA_AUTO, 1, ffi.from_buffer(x), ffi.from_buffer(out), x.size) == 0
    return out


def bf16_call(kernel: int, s: Shape, A: np.ndarray, B: np.ndarray, C: np.ndarray) -> Callable[[], None]:
    bdt = lib.CLLM_DTYPE_BF16 if B.dtype == np.uint16 else lib.CLLM_DTYPE_F32
    pa, pb = ffi.cast("void *", A.ctypes.data), ffi.cast("void *", B.ctypes.data)
    pc = ffi.cast("float *", C.ctypes.data)

    def run() -> None:
        rc = lib.cllm_gemm_bf16(kernel, s.ta, s.tb, s.M, s.N, s.K, 1.0, pa, lib.CLLM_DTYPE_F32, A.shape[1], pb, bdt,
                                B.shape[1], 0.0, pc, s.N, ffi.NULL)
        if rc != 0:
            raise RuntimeError(ffi.string(lib.cllm_last_error()).decode())

    return run


def fp32_call(s: Shape, A: np.ndarray, B: np.ndarray, C: np.ndarray) -> Callable[[], None]:
    pa, pb, pc = (ffi.cast("float *", X.ctypes.data) for X in (A, B, C))

    def run() -> None:
        lib.cllm_gemm(s.ta, s.tb, s.M, s.N, s.K, 1.0, pa, A.shape[1], pb, B.shape[1], 0.0, pc, s.N, ffi.NULL)

    return run


def torch_call(s: Shape, A: np.ndarray, B: np.ndarray) -> Optional[Callable[[], None]]:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    ta = torch.from_numpy(A).bfloat16()
    tb = torch.from_numpy(B).bfloat16()
    opa, opb = (ta.t() if s.ta else ta), (tb.t() if s.tb else tb)
    return lambda: torch.matmul(opa, opb)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="all", help="comma list of shape names or 'all'")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.05)
    args = p.parse_args(argv)
    f = [ffi.new("int *") for _ in range(4)]
    lib.cllm_cpu_matrix_features(*f)
    kernels = [k for k, flag in (("amx_bf16", f[2][0]), ("avx512_bf16", f[0][0])) if flag]
    print(f"cpu: {cpu_model()}  avx512_bf16={f[0][0]} amx_bf16={f[2][0]}  (1 thread, GFLOP/s, best of {args.reps})")
    if not kernels:
        print("no BF16 GEMM kernel usable on this CPU")
        return 0
    lib.cllm_set_isa(lib.CLLM_ISA_AUTO)
    shapes = [s for s in SHAPES if s.M > 4 and (args.shapes == "all" or s.name in args.shapes.split(","))]
    head = f"{'shape':44s} {'fp32':>7s}" + "".join(f" {k + '(f32 in)':>18s} {k + '(B bf16)':>18s}" for k in kernels)
    print(head + f" {'torch bf16':>10s} {'bf16/fp32':>9s}")
    for s in shapes:
        A, B, C = make_operands(s)
        Bh = to_bf16(B)
        fns: Dict[str, Callable[[], None]] = {"fp32": fp32_call(s, A, B, C)}
        for k in kernels:
            fns[k + "_f"] = bf16_call(KERNELS[k], s, A, B, C)
            fns[k + "_h"] = bf16_call(KERNELS[k], s, A, Bh, C)
        tc = torch_call(s, A, B)
        if tc:
            fns["torch"] = tc
        t = best_times(fns, args.reps, args.min_time)
        g = {k: s.flops / v / 1e9 for k, v in t.items()}
        line = f"{s.label():44s} {g['fp32']:7.1f}" + "".join(f" {g[k + '_f']:18.1f} {g[k + '_h']:18.1f}" for k in kernels)
        best = max(g[k + '_h'] for k in kernels)
        print(line + f" {g.get('torch', float('nan')):10.1f} {best / g['fp32']:9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
