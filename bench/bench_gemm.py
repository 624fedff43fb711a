"""Single-thread GEMM: cllm vs torch.mm (MKL / oneDNN), on every config-B shape.

Run from the project root::

    python bench/bench_gemm.py                         # config-B shapes, best ISA, fp32 + bf16
    python bench/bench_gemm.py --isa avx512,avx2 --reps 7 --shapes fwd_qkv,bwd_dw_qkv
    python bench/bench_gemm.py --shapes all            # also config A / C and batch-1 shapes
    python bench/bench_gemm.py --isa avx2 --torch-avx2 # AVX2 pair: torch.mm restricted to AVX2

Both sides run on one thread (torch.set_num_threads(1); the BLAS thread
variables are set before anything is imported) and are timed interleaved,
best (min) of ``--reps`` timed loops of ``--min-time`` seconds each. Every
GFLOP/s figure (2*M*N*K / time) is also given as a share of the peak measured
in this run: fp32 against the FMA peak of the ISA the cllm row uses (torch.mm
against the best FMA peak, it picks its own kernel), bf16 against the BF16
peak (AMX when the OS grants tiles, else vdpbf16ps). The bf16 columns compare
torch.mm on bf16 tensors with cllm_gemm_bf16 (B already BF16, as the model's
weight copies) when the CPU has a BF16 kernel. ``--torch-avx2`` restricts
torch (ATen, MKL, oneDNN) to AVX2 through the environment (set before torch is
imported), so ``--isa avx2 --torch-avx2`` is the AVX2-only pair of
``bench/train_throughput.py --sides cllm-avx2,torch-avx2``.
"""
from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import logging  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Callable, Dict, List, Optional, Tuple  # noqa: E402

import numpy as np  # noqa: E402

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]  # bench/; lib puts the repository root there too
from lib.cli import doc_parser  # noqa: E402
from lib.machine import (AVX2_ENV_TORCH, FP32_PEAK, Machine, measure_machine, remeasure_peaks,  # noqa: E402
                         torch_description)
from lib.tables import num, pct, ratio, table  # noqa: E402
from lib.timing import best_times  # noqa: E402
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


# Config B (d=384, 2048 tokens per step): forward, dX (trans_b), dW (trans_a) of
# the four block matmuls and the LM head (vocab 4096); then config A / C and
# batch-1 shapes (only with --shapes all).
SHAPES: List[Shape] = [
    Shape("fwd_qkv", 0, 0, 2048, 1152, 384),
    Shape("fwd_attn_out", 0, 0, 2048, 384, 384),
    Shape("fwd_fc", 0, 0, 2048, 1536, 384),
    Shape("fwd_proj", 0, 0, 2048, 384, 1536),
    Shape("bwd_dx_qkv", 0, 1, 2048, 384, 1152),
    Shape("bwd_dx_attn_out", 0, 1, 2048, 384, 384),
    Shape("bwd_dx_fc", 0, 1, 2048, 384, 1536),
    Shape("bwd_dx_proj", 0, 1, 2048, 1536, 384),
    Shape("bwd_dw_qkv", 1, 0, 384, 1152, 2048),
    Shape("bwd_dw_attn_out", 1, 0, 384, 384, 2048),
    Shape("bwd_dw_fc", 1, 0, 384, 1536, 2048),
    Shape("bwd_dw_proj", 1, 0, 1536, 384, 2048),
    Shape("lm_head_B", 0, 1, 2048, 4096, 384),
    Shape("lm_dx_B", 0, 0, 2048, 384, 4096),
    Shape("lm_dw_B", 1, 0, 4096, 384, 2048),
    Shape("lm_head_C", 0, 1, 256, 50257, 768),
    Shape("cfgA_fc", 0, 0, 768, 384, 128),
    # One token at generation time (small-M path, B streamed unpacked).
    Shape("gen_qkv", 0, 0, 1, 1152, 384),
    Shape("gen_lm_head_C", 0, 1, 1, 50257, 768),
]
CONFIG_B = [s.name for s in SHAPES if s.name.endswith("_B") or not (s.name.endswith("_C") or
                                                                    s.name.startswith(("cfgA", "gen")))]


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


def torch_call(s: Shape, A: np.ndarray, B: np.ndarray, C: np.ndarray,
               bf16: bool = False) -> Callable[[], None]:
    """A zero-argument callable running torch.mm (transposes as strided views,
    which MKL / oneDNN take as transpose flags); bf16 multiplies bf16 copies."""
    import torch
    tA, tB = torch.from_numpy(A), torch.from_numpy(B)
    if bf16:
        tA, tB = tA.to(torch.bfloat16), tB.to(torch.bfloat16)
    opA = tA.t() if s.ta else tA
    opB = tB.t() if s.tb else tB
    out = torch.from_numpy(C) if not bf16 else torch.empty(s.M, s.N, dtype=torch.bfloat16)

    def run() -> None:
        torch.mm(opA, opB, out=out)

    return run


def have_cllm_bf16() -> bool:
    """Whether cllm_gemm_bf16's AUTO kernel runs on this CPU under the current ISA."""
    a = np.ones((16, 16), np.float32)
    c = np.empty((16, 16), np.float32)
    rc = lib.cllm_gemm_bf16(lib.CLLM_BF16_KERNEL_AUTO, 0, 0, 16, 16, 16, 1.0, ffi.from_buffer(a),
                            lib.CLLM_DTYPE_F32, 16, ffi.from_buffer(a), lib.CLLM_DTYPE_F32, 16, 0.0,
                            ffi.cast("float *", ffi.from_buffer(c)), 16, ffi.NULL)
    return rc == 0


def cllm_bf16_call(s: Shape, A: np.ndarray, B: np.ndarray, C: np.ndarray) -> Callable[[], None]:
    """cllm_gemm_bf16 with A in fp32 (rounded while packed) and B already bf16."""
    Bb = np.empty(B.shape, np.uint16)
    rc = lib.cllm_convert_bf16(lib.CLLM_ISA_AUTO, 1, ffi.from_buffer(B), ffi.from_buffer(Bb), B.size)
    if rc != 0:
        raise RuntimeError(ffi.string(lib.cllm_last_error()).decode())
    pa, pb = ffi.cast("void *", A.ctypes.data), ffi.cast("void *", Bb.ctypes.data)
    pc = ffi.cast("float *", C.ctypes.data)

    def run() -> None:
        rc = lib.cllm_gemm_bf16(lib.CLLM_BF16_KERNEL_AUTO, s.ta, s.tb, s.M, s.N, s.K, 1.0, pa,
                                lib.CLLM_DTYPE_F32, A.shape[1], pb, lib.CLLM_DTYPE_BF16, Bb.shape[1],
                                0.0, pc, s.N, ffi.NULL)
        if rc != 0:
            raise RuntimeError(ffi.string(lib.cllm_last_error()).decode())

    run.keep = Bb  # type: ignore[attr-defined]  # keep the bf16 copy alive
    return run


def bench(shapes: List[Shape], isas: List[str], reps: int, min_time: float, machine: Machine,
          bf16: bool, torch_isa: str) -> List[Dict[str, object]]:
    """Time each shape: cllm per ISA and torch.mm (fp32; its peak is that of
    ``torch_isa``), and the bf16 pair."""
    import torch
    torch.set_num_threads(1)
    best_isa = supported_isas()[-1]
    best_fp32 = FP32_PEAK.get(torch_isa, "fma_avx512")
    bf16_kind = machine.bf16_kind()
    cllm_bf16 = bf16 and have_cllm_bf16()
    rows = []
    for s in shapes:
        A, B, C = make_operands(s)
        C2, C3 = np.empty_like(C), np.empty_like(C)
        fns: Dict[str, Callable[[], None]] = {"torch": torch_call(s, A, B, C2)}
        if bf16 and bf16_kind:
            fns["torch_bf16"] = torch_call(s, A, B, C2, bf16=True)
            if cllm_bf16:
                fb = cllm_bf16_call(s, A, B, C3)
                fns["cllm_bf16"] = (lambda f=fb: (set_isa(best_isa), f()))  # AUTO kernel follows the ISA
        for isa in isas:
            fns[f"cllm_{isa}"] = (lambda isa=isa, f=cllm_call(s, A, B, C): (set_isa(isa), f()))
        t = best_times(fns, reps, min_time)
        g = {k: s.flops / v / 1e9 for k, v in t.items()}
        pk_t = machine.peak(best_fp32, 1)
        for isa in isas:
            pk = machine.peak(FP32_PEAK.get(isa, ""), 1)
            row = dict(shape=s.name, dims=f"{s.M}x{s.N}x{s.K}", op=s.label().split(":", 1)[1], isa=isa,
                       cllm=g[f"cllm_{isa}"], cllm_pct=g[f"cllm_{isa}"] / pk if pk else None,
                       torch=g["torch"], torch_pct=g["torch"] / pk_t if pk_t else None,
                       ratio=g[f"cllm_{isa}"] / g["torch"])
            pb = machine.peak(bf16_kind, 1) if bf16_kind else None
            row["torch_bf16"] = g.get("torch_bf16")
            row["cllm_bf16"] = g.get("cllm_bf16")
            row["torch_bf16_pct"] = g["torch_bf16"] / pb if pb and "torch_bf16" in g else None
            row["cllm_bf16_pct"] = g["cllm_bf16"] / pb if pb and "cllm_bf16" in g else None
            rows.append(row)
            print(f"  {s.name} {isa}: cllm {row['cllm']:.1f} torch {row['torch']:.1f} GFLOP/s",
                  file=sys.stderr, flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = doc_parser(__doc__)
    p.add_argument("--isa", default="best", help="comma list of scalar,avx2,avx512, 'best' or 'all'")
    p.add_argument("--shapes", default="B", help="comma list of shape names, 'B' (config B) or 'all'")
    p.add_argument("--reps", type=int, default=5, help="repetitions (best of)")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per timed repetition")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 columns")
    p.add_argument("--peak-seconds", type=float, default=0.5, help="seconds per peak measurement")
    p.add_argument("--torch-avx2", action="store_true",
                   help="restrict torch to AVX2 (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, oneDNN)")
    args = p.parse_args(argv)
    if args.torch_avx2:
        if "torch" in sys.modules:
            p.error("--torch-avx2 must be given before torch is imported")
        os.environ.update(AVX2_ENV_TORCH)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    old = ffi.new("int *")
    lib.cllm_get_isa(old)
    avail = supported_isas()
    best = avail[-1]
    isas = {"best": [best], "all": avail}.get(args.isa, args.isa.split(","))
    bad = [i for i in isas if i not in avail]
    names = {"B": CONFIG_B, "all": [s.name for s in SHAPES]}.get(args.shapes, args.shapes.split(","))
    bad += [n for n in names if n not in {s.name for s in SHAPES}]
    if bad or args.reps < 1 or args.min_time <= 0:
        p.error(f"unknown or unsupported: {', '.join(bad) or 'reps/min-time'}")
    shapes = [s for s in SHAPES if s.name in names]
    machine = measure_machine([1], seconds=args.peak_seconds)
    torch_isa = "avx2" if args.torch_avx2 else best
    try:
        rows = bench(shapes, isas, args.reps, args.min_time, machine, not args.no_bf16 and not args.torch_avx2,
                     torch_isa)
    finally:
        lib.cllm_set_isa(old[0])
    remeasure_peaks(machine, args.peak_seconds)
    for r in rows:  # shares of the final (higher) peaks
        pk = machine.peak(FP32_PEAK.get(r["isa"], ""), 1)
        pk_t = machine.peak(FP32_PEAK.get(torch_isa, ""), 1)
        pb = machine.peak(machine.bf16_kind() or "", 1)
        r["cllm_pct"] = r["cllm"] / pk if pk else None
        r["torch_pct"] = r["torch"] / pk_t if pk_t else None
        r["torch_bf16_pct"] = r["torch_bf16"] / pb if pb and r["torch_bf16"] else None
        r["cllm_bf16_pct"] = r["cllm_bf16"] / pb if pb and r["cllm_bf16"] else None

    import torch
    print("# GEMM, one thread: cllm vs torch.mm (same run, interleaved, best of "
          f"{args.reps} x {args.min_time:.2f} s)\n")
    print("\n".join(machine.header_lines()))
    print(torch_description() + f", torch threads {torch.get_num_threads()}\n")
    head = ["shape", "op (MxK @ KxN)", "cllm ISA", "cllm GFLOP/s", "% peak", "torch.mm GFLOP/s", "% peak",
            "cllm / torch"]
    with_bf16 = any(r["torch_bf16"] for r in rows)
    if with_bf16:
        head += ["torch bf16 GFLOP/s", "% bf16 peak", "cllm bf16 GFLOP/s", "% bf16 peak", "cllm / torch (bf16)"]
    out = []
    for r in rows:
        line = [r["shape"], r["op"], r["isa"], num(r["cllm"], 1), pct(r["cllm_pct"]), num(r["torch"], 1),
                pct(r["torch_pct"]), f"{r['ratio']:.2f}x"]
        if with_bf16:
            line += [num(r["torch_bf16"], 1), pct(r["torch_bf16_pct"]), num(r["cllm_bf16"], 1),
                     pct(r["cllm_bf16_pct"]), ratio(r["cllm_bf16"], r["torch_bf16"])]
        out.append(line)
    print(table(head, out, [False, False, False] + [True] * (len(head) - 3)))
    print()
    for isa in isas:
        rs = [r["ratio"] for r in rows if r["isa"] == isa]
        if rs:
            print(f"- cllm {isa} / torch.mm: min {min(rs):.2f}x, geomean {float(np.exp(np.mean(np.log(rs)))):.2f}x "
                  f"over {len(rs)} shapes")
    if with_bf16 and not any(r["cllm_bf16"] for r in rows):
        print("- cllm bf16: n/a (no BF16 kernel of cllm_gemm_bf16 runs on this CPU)")
    pk = machine.peak(machine.bf16_kind() or "", 1)
    if with_bf16 and pk:
        print(f"- bf16 peak used: {machine.bf16_kind()} {pk:,.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
