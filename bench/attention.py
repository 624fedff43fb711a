"""Causal attention, forward and backward: cllm's kernel vs torch SDPA.

Run from the project root::

    python bench/attention.py                       # configs A, B, C at 1 and 2 threads
    python bench/attention.py --configs B --threads 1 --reps 9
    python bench/attention.py --configs 2x32x64x2   # any BxTxCxNH shape

cllm runs the ``attention_fwd`` / ``attention_bwd`` ops of its kernel
registry (the ones training calls, at the ISA ``cllm.get_isa()`` picks); with
n threads the batch is split into n shards run concurrently, one per thread,
as the training step's spheres split it. torch runs
``scaled_dot_product_attention(q, k, v, is_causal=True)`` on (B, NH, T, hs)
float32 tensors with ``torch.set_num_threads(n)``: forward under
``no_grad``, backward as (forward + backward with autograd) - forward.

Each side lives in its own worker process; sides are timed interleaved, best
of ``--reps`` timed batches. FLOPs count the causal triangle's products only
(the diagonal included): forward 2 products (QK^T, PV), backward 4 (dP, dQ,
dK, dV) - recomputing P in backward is not counted as useful work, on either
side. % peak is against the FMA peak of the cllm ISA measured in this run at
the same thread count.
"""
from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any, Dict, List, Optional, Tuple  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]  # bench/ (lib puts the repository root on sys.path too)
from lib.cli import comma_list, doc_parser  # noqa: E402
from lib.machine import FP32_PEAK, measure_machine, remeasure_peaks, torch_description  # noqa: E402
from lib.tables import num, pct, ratio, table  # noqa: E402
from lib.timing import interleave  # noqa: E402
from lib.workers import SideUnavailable, Worker, entry  # noqa: E402

#: (B, T, C, NH) of the training benchmark configs (bench/train_throughput.py)
CONFIGS: Dict[str, Tuple[int, int, int, int]] = {
    "A": (12, 64, 128, 4),
    "B": (8, 256, 384, 6),
    "C": (4, 64, 768, 12),
}


def parse_shape(name: str) -> Tuple[int, int, int, int]:
    """A config letter or a ``BxTxCxNH`` shape (C divisible by NH)."""
    if name in CONFIGS:
        return CONFIGS[name]
    try:
        B, T, C, NH = (int(x) for x in name.lower().split("x"))
    except ValueError:
        raise ValueError(f"{name!r}: expected one of {', '.join(CONFIGS)} or BxTxCxNH") from None
    if min(B, T, C, NH) < 1 or C % NH:
        raise ValueError(f"{name!r}: sizes must be >= 1 and C divisible by NH")
    return B, T, C, NH


def flops(shape: Tuple[int, int, int, int]) -> Tuple[float, float]:
    """Useful FLOPs of (forward, backward) causal attention at ``shape``."""
    B, T, C, NH = shape
    pair = 2.0 * 2.0 * B * NH * (C // NH) * T * (T + 1) / 2.0  # two T x T x hs products, causal half
    return pair, 2.0 * pair


# ------------------------------------------------------------------ sides
class CllmSide:
    """cllm's registry ops on ``threads`` batch shards, one Python thread each
    (the cffi call releases the GIL)."""

    def __init__(self, shape: Tuple[int, int, int, int], threads: int) -> None:
        import numpy as np
        import cllm
        from kernel_cases import make_case, run
        self._run = run
        B, T, C, NH = shape
        self.isa = cllm.get_isa()
        n = max(1, min(threads, B))
        rows = [B // n + (1 if i < B % n else 0) for i in range(n)]
        self.shards: List[Dict[str, Any]] = []
        for i, b in enumerate(rows):
            dims = (b, T, C, NH)
            fwd = make_case("attention_fwd", dims, seed=i)
            # backward consumes this shard's own forward outputs
            self._run("attention_fwd", self.isa, fwd, dims, 1)
            dout = np.random.default_rng(100 + i).standard_normal((b, T, C)).astype(np.float32)
            bwd = [np.zeros((b, T, 3 * C), np.float32), dout, fwd[2], fwd[1].copy()]
            self.shards.append({"dims": dims, "fwd": fwd, "bwd": bwd})
        self.info = {"isa": self.isa, "threads": n}
        self.run(1, "fwd")
        self.run(1, "bwd")

    def run(self, n: int, mode: str = "") -> Dict[str, float]:
        op = "attention_bwd" if mode == "bwd" else "attention_fwd"
        key = "bwd" if mode == "bwd" else "fwd"
        work = [threading.Thread(target=self._run, args=(op, self.isa, s[key], s["dims"], n)) for s in self.shards]
        t0 = time.perf_counter()
        for w in work:
            w.start()
        for w in work:
            w.join()
        return {"seconds": time.perf_counter() - t0}


class TorchSide:
    """torch SDPA (is_causal=True) on (B, NH, T, hs) float32 tensors."""

    def __init__(self, shape: Tuple[int, int, int, int], threads: int) -> None:
        try:
            import torch
        except ImportError:
            raise SideUnavailable("torch not installed") from None
        torch.set_num_threads(threads)
        self.torch = torch
        B, T, C, NH = shape
        g = torch.Generator().manual_seed(0)
        self.q, self.k, self.v = (torch.randn(B, NH, T, C // NH, generator=g, requires_grad=True) for _ in range(3))
        self.dout = torch.randn(B, NH, T, C // NH, generator=g)
        self.info = {"threads": torch.get_num_threads(), "torch": torch.__version__}
        self.run(1, "fwd")
        self.run(1, "fwdbwd")

    def run(self, n: int, mode: str = "") -> Dict[str, float]:
        torch = self.torch
        sdpa = torch.nn.functional.scaled_dot_product_attention
        t0 = time.perf_counter()
        if mode == "fwdbwd":
            for _ in range(n):
                y = sdpa(self.q, self.k, self.v, is_causal=True)
                y.backward(self.dout)
        else:
            with torch.no_grad():
                for _ in range(n):
                    sdpa(self.q, self.k, self.v, is_causal=True)
        return {"seconds": time.perf_counter() - t0}


def build(spec: Dict[str, Any]) -> Any:
    shape = tuple(spec["shape"])
    return (CllmSide if spec["side"] == "cllm" else TorchSide)(shape, int(spec["threads"]))  # type: ignore[arg-type]


# ------------------------------------------------------------------ main
def batch_size(w: Worker, mode: str, min_time: float) -> int:
    """Calls per timed batch so one batch takes about ``min_time`` seconds."""
    res = w.run(1, mode)
    one = max(res["seconds"], 1e-6) if res else 1.0
    return max(1, min(10000, int(min_time / one)))


def main() -> int:
    ap = doc_parser(__doc__)
    ap.add_argument("--configs", default="A,B,C", help="comma list of A, B, C or BxTxCxNH shapes")
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts")
    ap.add_argument("--reps", type=int, default=7, help="timed batches per column (best of)")
    ap.add_argument("--min-time", type=float, default=0.1, help="seconds per timed batch")
    ap.add_argument("--peak-seconds", type=float, default=0.3, help="seconds per peak measurement")
    a = ap.parse_args()
    try:
        names = comma_list(a.configs)
        shapes = {n: parse_shape(n) for n in names}
        threads = comma_list(a.threads, int)
    except ValueError as e:
        ap.error(str(e))
    if a.reps < 1 or a.min_time <= 0 or not threads or min(threads) < 1:
        ap.error("--reps, --min-time and --threads must be positive")
    import cllm
    isa = cllm.get_isa()
    kind = FP32_PEAK.get(isa)
    machine = measure_machine(threads, kinds=[kind] if kind else [], seconds=a.peak_seconds)
    script = os.path.abspath(__file__)
    results: Dict[Tuple[str, int], Dict[str, Optional[float]]] = {}
    notes: List[str] = []
    for name in names:
        for th in threads:
            procs = {s: Worker(s, script, dict(side=s, shape=list(shapes[name]), threads=th))
                     for s in ("cllm", "torch")}
            try:
                cols = [("cllm fwd", procs["cllm"], "fwd"), ("cllm bwd", procs["cllm"], "bwd"),
                        ("torch fwd", procs["torch"], "fwd"), ("torch fwdbwd", procs["torch"], "fwdbwd")]
                live = [c for c in cols if c[1].ok]
                n = {c[0]: batch_size(c[1], c[2], a.min_time) for c in live}
                times = interleave(live, n, a.reps)
            finally:
                for w in procs.values():
                    if not w.ok and w.error:
                        notes.append(f"{name}, {th} thread(s), {w.name}: {w.error}")
                    w.close()
            best = {k: (min(v) if v else None) for k, v in times.items()}
            for k in ("cllm fwd", "cllm bwd", "torch fwd", "torch fwdbwd"):
                best.setdefault(k, None)
            tb = best["torch fwdbwd"]
            tf = best["torch fwd"]
            best["torch bwd"] = tb - tf if tb is not None and tf is not None and tb > tf else None
            results[(name, th)] = best
            print(f"  {name}, {th} thread(s): " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in best.items()
                                                          if v is not None), file=sys.stderr, flush=True)
    remeasure_peaks(machine, a.peak_seconds)

    print("# Causal attention: cllm kernel vs torch SDPA, forward and backward (sides interleaved, "
          f"best of {a.reps})\n")
    print("\n".join(machine.header_lines()))
    print(torch_description() + f"; cllm {cllm.__version__}, ISA {isa}\n")

    def gf(fl: float, t: Optional[float]) -> Optional[float]:
        return fl / t / 1e9 if t else None

    rows = []
    for name in names:
        ff, fb = flops(shapes[name])
        for th in threads:
            r = results[(name, th)]
            pk = machine.peak(kind, th) if kind else None
            g = {"cf": gf(ff, r["cllm fwd"]), "cb": gf(fb, r["cllm bwd"]),
                 "tf": gf(ff, r["torch fwd"]), "tb": gf(fb, r["torch bwd"])}
            c_tot = r["cllm fwd"] + r["cllm bwd"] if r["cllm fwd"] and r["cllm bwd"] else None
            t_tot = r["torch fwdbwd"]
            rows.append([name, "x".join(map(str, shapes[name])), th,
                         num(g["cf"], 1), pct(g["cf"] / pk if pk and g["cf"] else None),
                         num(g["tf"], 1), pct(g["tf"] / pk if pk and g["tf"] else None),
                         num(g["cb"], 1), pct(g["cb"] / pk if pk and g["cb"] else None),
                         num(g["tb"], 1), pct(g["tb"] / pk if pk and g["tb"] else None),
                         num(c_tot * 1e3 if c_tot else None, 3), num(t_tot * 1e3 if t_tot else None, 3),
                         ratio(t_tot, c_tot)])
    print(table(["config", "BxTxCxNH", "threads", "cllm fwd GFLOP/s", "% peak", "torch fwd GFLOP/s", "% peak",
                    "cllm bwd GFLOP/s", "% peak", "torch bwd GFLOP/s", "% peak", "cllm fwd+bwd ms",
                    "torch fwd+bwd ms", "cllm speed-up"], rows,
                   [False, False] + [True] * 12))
    print(f"\nFLOPs: forward 4*B*NH*hs*T(T+1)/2 (QK^T, PV over the causal triangle), backward twice that; "
          f"% peak against {kind or 'no'} FMA peak at the same thread count; speed-up = torch fwd+bwd time / "
          "cllm fwd+bwd time.")
    for n in notes:
        print(f"- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(entry(main, build))
