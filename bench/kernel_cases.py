"""Input builders and a runner for the C kernel harness (``cllm_kernel_run``).

Shared by ``tests/test_kernels.py`` (correctness, each ISA vs scalar) and the
kernel benchmarks (``bench/test_bench_kernels.py``, ``bench/kernels_table.py``).
Each op takes its buffers in the order of ``csrc/kernels/harness.c``; int32
tensors (targets, ids) and uint16 (BF16) ones travel as ``float*`` pointing at
their data.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from cllm._cllm import ffi, lib

ISAS: Dict[str, int] = {"scalar": lib.CLLM_ISA_SCALAR, "avx2": lib.CLLM_ISA_AVX2,
                        "avx512": lib.CLLM_ISA_AVX512}

# op -> (dims names, indices of the output buffers to compare)
OPS: Dict[str, Tuple[Tuple[str, ...], Tuple[int, ...]]] = {
    "layernorm_fwd": (("N", "C"), (0, 1, 2)),
    "layernorm_bwd": (("N", "C"), (0, 1, 2)),
    "residual_layernorm_fwd": (("N", "C"), (0, 1, 2, 3)),
    "residual_fwd": (("n",), (0,)),
    "gelu_fwd": (("n",), (0,)),
    "gelu_bwd": (("n",), (0,)),
    "attention_fwd": (("B", "T", "C", "NH"), (0, 1)),
    "attention_bwd": (("B", "T", "C", "NH"), (0,)),
    "crossentropy_fused": (("N", "V"), (0, 1)),
    "embed_fwd": (("B", "T", "C", "V"), (0,)),
    "embed_bwd": (("B", "T", "C", "V"), (0, 1)),
    "bias_grad": (("N", "OC"), (0,)),
    "add_into": (("n",), (0,)),
    "sumsq": (("n",), (1,)),
    "adamw": (("n",), (0, 2, 3)),
    "matvec": (("in", "ldw", "lo", "hi"), (0,)),
    "matvec_t": (("C", "lo", "hi"), (0,)),
    "attention_step": (("len", "ldc", "C", "NH"), (0,)),
    "gelu_bwd_bias": (("N", "OC"), (0, 1)),
    "f32_to_bf16": (("n",), (0,)),
    "bf16_to_f32": (("n",), (0,)),
}


def isa_supported(name: str) -> bool:
    """True if this CPU can run the ISA ``name``."""
    a2 = ffi.new("int*")
    a5 = ffi.new("int*")
    lib.cllm_cpu_detect(a2, a5)
    return {"scalar": True, "avx2": bool(a2[0]), "avx512": bool(a5[0])}[name]


def _f(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _z(*shape: int) -> np.ndarray:
    return np.zeros(shape, np.float32)


def _causal_softmax(qkv: np.ndarray, B: int, T: int, C: int, NH: int) -> np.ndarray:
    hs = C // NH
    q = qkv[:, :, :C].reshape(B, T, NH, hs).transpose(0, 2, 1, 3).astype(np.float64)
    k = qkv[:, :, C:2 * C].reshape(B, T, NH, hs).transpose(0, 2, 1, 3).astype(np.float64)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    s = np.exp(s - s.max(-1, keepdims=True))
    return (s / s.sum(-1, keepdims=True)).astype(np.float32)


def make_case(op: str, dims: Sequence[int], seed: int = 0) -> List[np.ndarray]:
    """Random input/output buffers for ``op`` at ``dims`` (see OPS for names)."""
    rng = np.random.default_rng(seed)
    d = list(dims)
    if op == "layernorm_fwd":
        N, C = d
        return [_z(N, C), _z(N), _z(N), _f(rng, N, C, scale=2.0) + 0.5, _f(rng, C), _f(rng, C)]
    if op == "layernorm_bwd":
        N, C = d
        x = _f(rng, N, C, scale=2.0) + 0.5
        mean = x.mean(1, dtype=np.float64)
        rstd = 1.0 / np.sqrt(x.var(1, dtype=np.float64) + 1e-5)
        return [_f(rng, N, C), _z(C), _z(C), _f(rng, N, C), x, _f(rng, C),
                mean.astype(np.float32), rstd.astype(np.float32)]
    if op == "residual_layernorm_fwd":
        N, C = d
        return [_z(N, C), _z(N, C), _z(N), _z(N), _f(rng, N, C), _f(rng, N, C) + 0.3,
                _f(rng, C), _f(rng, C)]
    if op == "residual_fwd":
        (n,) = d
        return [_z(n), _f(rng, n), _f(rng, n)]
    if op in ("gelu_fwd", "gelu_bwd"):
        (n,) = d
        x = _f(rng, n, scale=3.0)
        x[::11] *= 5.0  # some large |x| (saturated tanh)
        return [_z(n), x] if op == "gelu_fwd" else [_z(n), x, _f(rng, n)]
    if op == "attention_fwd":
        B, T, C, NH = d
        # outputs start as garbage: the op must overwrite all of them
        return [_f(rng, B, T, C), _f(rng, B, NH, T, T), _f(rng, B, T, 3 * C)]
    if op == "attention_bwd":
        B, T, C, NH = d
        qkv = _f(rng, B, T, 3 * C)
        return [_f(rng, B, T, 3 * C), _f(rng, B, NH, T, T), _f(rng, B, T, C), qkv,
                _causal_softmax(qkv, B, T, C, NH)]
    if op == "crossentropy_fused":
        N, V = d
        tg = rng.integers(0, V, N).astype(np.int32)
        tg[::5] = -1  # ignored rows
        return [_f(rng, N, V, scale=3.0), _z(N), tg, np.array([1.0 / N], np.float32)]
    if op in ("embed_fwd", "embed_bwd"):
        B, T, C, V = d
        ids = rng.integers(0, V, (B, T)).astype(np.int32)
        if op == "embed_fwd":
            return [_z(B, T, C), ids, _f(rng, V, C), _f(rng, T, C)]
        return [_f(rng, V, C), _f(rng, T, C), _f(rng, B, T, C), ids]
    if op == "bias_grad":
        N, OC = d
        return [_z(OC), _f(rng, N, OC)]
    if op == "add_into":
        (n,) = d
        return [_f(rng, n), _f(rng, n)]
    if op == "sumsq":
        (n,) = d
        return [_f(rng, n), _z(2)]
    if op == "adamw":
        (n,) = d
        hyper = np.array([1e-3, 0.9, 0.95, 1e-8, 0.1, 1 - 0.9 ** 3, 1 - 0.95 ** 3, 0.7], np.float32)
        return [_f(rng, n), _f(rng, n), _f(rng, n, scale=0.1), np.abs(_f(rng, n, scale=0.01)), hyper]
    if op == "matvec":
        n_in, ldw, lo, hi = d
        return [_z(ldw), _f(rng, n_in), _f(rng, n_in, ldw), _f(rng, ldw)]
    if op == "matvec_t":
        C, lo, hi = d
        return [_z(hi), _f(rng, C), _f(rng, hi, C)]
    if op == "attention_step":
        n, ldc, C, NH = d
        return [_z(C), _f(rng, C), _f(rng, n, ldc), _f(rng, n, ldc)]
    if op == "f32_to_bf16":
        (n,) = d
        x = _f(rng, n, scale=10.0)
        x[::7] = np.float32(np.nan)
        x[1::9] = np.float32(np.inf)
        x[2::13] = np.float32(3e38)  # rounds up to inf
        return [np.zeros(n, np.uint16), x]
    if op == "bf16_to_f32":
        (n,) = d
        return [_z(n), rng.integers(0, 65536, n).astype(np.uint16)]
    if op == "gelu_bwd_bias":
        N, OC = d
        x = _f(rng, N, OC, scale=3.0)
        return [_f(rng, N, OC), _f(rng, OC), x, _f(rng, N, OC)]
    raise ValueError(f"unknown op {op!r}")


class KernelError(RuntimeError):
    """A non-zero return code from cllm_kernel_run."""


def run(op: str, isa: str, arrays: Sequence[np.ndarray], dims: Sequence[int], reps: int = 1,
        null: Sequence[int] = ()) -> None:
    """Run ``op`` under ``isa`` on ``arrays`` in place (buffers listed in ``null`` pass NULL)."""
    for a in arrays:
        if not a.flags.c_contiguous or a.dtype not in (np.float32, np.int32, np.uint16):
            raise ValueError("buffers must be C-contiguous float32/int32/uint16 (bf16)")
    ptrs = [ffi.NULL if i in null else ffi.cast("float *", a.ctypes.data) for i, a in enumerate(arrays)]
    bufs = ffi.new("float *[]", ptrs)
    dd = ffi.new("int64_t[]", [int(x) for x in dims])
    rc = lib.cllm_kernel_run(op.encode(), ISAS[isa], reps, bufs, len(ptrs), dd, len(dims))
    if rc != 0:
        raise KernelError(f"{op}/{isa}: rc={rc}: {ffi.string(lib.cllm_last_error()).decode()}")


def run_copy(op: str, isa: str, arrays: Sequence[np.ndarray], dims: Sequence[int],
             null: Sequence[int] = ()) -> List[np.ndarray]:
    """Run on copies of ``arrays``; return the copies (outputs filled in)."""
    cp = [a.copy() for a in arrays]
    run(op, isa, cp, dims, 1, null)
    return cp


# ------------------------------------------------------------- bench shapes
CONFIGS: Dict[str, Dict[str, int]] = {
    "A": dict(V=65, L=4, NH=4, C=128, T=64, B=12),
    "B": dict(V=4096, L=6, NH=6, C=384, T=256, B=8),
    "C": dict(V=50257, L=12, NH=12, C=768, T=64, B=4),
}
ADAMW_CAP = 16 * 1024 * 1024  # AdamW / sumsq elements, capped (config C has 124M params)


def n_params(c: Dict[str, int]) -> int:
    """GPT-2 parameter count for a config (tied LM head)."""
    C = c["C"]
    per_layer = 12 * C * C + 13 * C
    return c["V"] * C + c["T"] * C + c["L"] * per_layer + 2 * C


def bench_dims(op: str, cfg: str) -> Tuple[int, ...]:
    """The dims ``op`` runs at in one training / inference step of config ``cfg``."""
    c = CONFIGS[cfg]
    B, T, C, NH, V = c["B"], c["T"], c["C"], c["NH"], c["V"]
    N = B * T
    table = {
        "layernorm_fwd": (N, C), "layernorm_bwd": (N, C), "residual_layernorm_fwd": (N, C),
        "residual_fwd": (N * C,), "add_into": (N * C,),
        "gelu_fwd": (N * 4 * C,), "gelu_bwd": (N * 4 * C,),
        "attention_fwd": (B, T, C, NH), "attention_bwd": (B, T, C, NH),
        "crossentropy_fused": (N, V),
        "embed_fwd": (B, T, C, V), "embed_bwd": (B, T, C, V),
        "bias_grad": (N, 4 * C),
        "sumsq": (min(n_params(c), ADAMW_CAP),), "adamw": (min(n_params(c), ADAMW_CAP),),
        "matvec": (C, 3 * C, 0, 3 * C), "matvec_t": (C, 0, V),
        "attention_step": (T, C, C, NH),
        "gelu_bwd_bias": (N, 4 * C),
        # bf16 training: AdamW refreshes the BF16 weight copies
        "f32_to_bf16": (min(n_params(c), ADAMW_CAP),), "bf16_to_f32": (min(n_params(c), ADAMW_CAP),),
    }
    return table[op]


def time_op(op: str, isa: str, arrays: Sequence[np.ndarray], dims: Sequence[int],
            repeats: int = 5, budget: float = 0.25) -> float:
    """Best (min) seconds per call over ``repeats`` timed batches of calls."""
    import time
    t0 = time.perf_counter()
    run(op, isa, arrays, dims, 1)
    one = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, min(1000, int(budget / repeats / one)))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(op, isa, arrays, dims, reps)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best
