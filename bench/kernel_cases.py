"""Input builders and a runner for the C kernel harness (``cllm_kernel_run``).

Shared by ``tests/test_kernels.py`` (correctness, each ISA vs scalar) and the
kernel benchmarks (``bench/test_bench_kernels.py``, ``bench/kernels_table.py``).
The op list, each op's buffers (in signature order) and dims come from the C
registry (``csrc/kernels/ops_list.h``, via ``cllm_kernel_op_info``); int32
tensors (targets, ids) travel as ``float*`` pointing at int32 data. Ops with
special input needs (consistent LayerNorm statistics, softmax rows, id
ranges, AdamW hyper-parameters) have builders here; any other op gets random
buffers shaped by its spec.
"""
from __future__ import annotations

import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from cllm._cllm import ffi, lib

ISAS: Dict[str, int] = {"scalar": lib.CLLM_ISA_SCALAR, "avx2": lib.CLLM_ISA_AVX2,
                        "avx512": lib.CLLM_ISA_AVX512}



class BufSpec(NamedTuple):
    """One harness buffer of an op, parsed from the registry's ``bufs`` spec."""

    name: str
    shape: Tuple[str, ...]   # factors over the op's dims, e.g. ("B", "T", "3*C")
    output: bool             # '+': an output the tests compare
    nullable: bool           # '?': may be NULL
    int32: bool              # ':i32'
    bound: Optional[str]     # '<D': int32 values below dim D
    f64: bool = False        # ':f64': float64 data (travels as 2 floats per value)


class OpSpec(NamedTuple):
    """One op of the C registry (csrc/kernels/ops_list.h)."""

    name: str
    bufs: Tuple[BufSpec, ...]
    dims: Tuple[str, ...]
    simd: bool


_BUF_RE = re.compile(r"^(\+?)(\w+)(\??)\[([^\]]*)\](:i32|:f64)?(?:<(\w+))?$")


def _parse_buf(word: str) -> BufSpec:
    m = _BUF_RE.match(word)
    if not m:
        raise ValueError(f"bad buffer spec {word!r} in the kernel registry")
    out, name, null, shape, dtype, bound = m.groups()
    return BufSpec(name, tuple(x.strip() for x in shape.split(",")), bool(out), bool(null), dtype == ":i32", bound,
                   dtype == ":f64")


def _registry() -> Dict[str, OpSpec]:
    specs: Dict[str, OpSpec] = {}
    name, bufs, dims = ffi.new("const char **"), ffi.new("const char **"), ffi.new("const char **")
    simd = ffi.new("int *")
    i = 0
    while lib.cllm_kernel_op_info(i, name, bufs, dims, simd) == 0:
        op = ffi.string(name[0]).decode()
        specs[op] = OpSpec(op, tuple(_parse_buf(w) for w in ffi.string(bufs[0]).decode().split()),
                           tuple(d.rstrip("?") for d in ffi.string(dims[0]).decode().split()), bool(simd[0]))
        i += 1
    return specs


# every op of the C registry, in registry order
SPECS: Dict[str, OpSpec] = _registry()
# op -> (dims names, indices of the output buffers to compare)
OPS: Dict[str, Tuple[Tuple[str, ...], Tuple[int, ...]]] = {
    op: (s.dims, tuple(i for i, b in enumerate(s.bufs) if b.output)) for op, s in SPECS.items()}


def buffer_shape(buf: BufSpec, dims: Dict[str, int]) -> Tuple[int, ...]:
    """The concrete shape of ``buf`` for named ``dims`` (factors like ``3*C``)."""
    shape = []
    for expr in buf.shape:
        n = 1
        for f in expr.split("*"):
            f = f.strip()
            n *= int(f) if f.isdigit() else dims[f]
        shape.append(n)
    return tuple(shape)


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


def causal_attention(qkv: np.ndarray, B: int, T: int, C: int, NH: int
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 causal attention of ``qkv`` (B, T, 3C): the probabilities
    (B, NH, T, T; zero above the diagonal), the output (B, T, C) and each
    row's log-sum-exp of the scaled scores (B, NH, T)."""
    hs = C // NH
    q, k, v = (qkv[:, :, i * C:(i + 1) * C].reshape(B, T, NH, hs).transpose(0, 2, 1, 3).astype(np.float64)
               for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    mx = s.max(-1, keepdims=True)
    e = np.exp(s - mx)
    tot = e.sum(-1, keepdims=True)
    p = e / tot
    lse = (mx + np.log(tot))[..., 0]
    return p, (p @ v).transpose(0, 2, 1, 3).reshape(B, T, C), lse


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
        return [_f(rng, B, T, C), _f(rng, B, NH, T), _f(rng, B, T, 3 * C)]
    if op == "attention_bwd":
        B, T, C, NH = d
        qkv = _f(rng, B, T, 3 * C)
        lse = causal_attention(qkv, B, T, C, NH)[2]
        return [_f(rng, B, T, 3 * C), _f(rng, B, T, C), qkv, lse.astype(np.float32)]
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
    if op == "attention_step":
        n, ldk, hs = d
        return [_z(hs), _f(rng, hs), _f(rng, hs, ldk), _f(rng, n, hs)]
    if op == "gelu_bwd_bias":
        N, OC = d
        x = _f(rng, N, OC, scale=3.0)
        return [_f(rng, N, OC), _f(rng, OC), x, _f(rng, N, OC)]
    return generic_case(op, d, rng)


def generic_case(op: str, dims: Sequence[int], rng: np.random.Generator) -> List[np.ndarray]:
    """Buffers for an op without a hand-written builder, from its registry
    spec: N(0, 1) floats (outputs too: the op must overwrite or accumulate
    them the same way on every ISA), int32 data in [0, bound)."""
    spec = SPECS.get(op)
    if spec is None:
        raise ValueError(f"unknown op {op!r}")
    named = dict(zip(spec.dims, (int(x) for x in dims)))
    out: List[np.ndarray] = []
    for b in spec.bufs:
        shape = buffer_shape(b, named)
        if b.int32:
            hi = named[b.bound] if b.bound else 2
            out.append(rng.integers(0, hi, shape).astype(np.int32))
        elif b.f64:
            out.append(np.zeros(shape, np.float64).view(np.float32).copy())
        else:
            out.append(_f(rng, *shape))
    return out


class KernelError(RuntimeError):
    """A non-zero return code from cllm_kernel_run."""


def run(op: str, isa: str, arrays: Sequence[np.ndarray], dims: Sequence[int], reps: int = 1,
        null: Sequence[int] = ()) -> None:
    """Run ``op`` under ``isa`` on ``arrays`` in place (buffers listed in ``null`` pass NULL)."""
    for a in arrays:
        if not a.flags.c_contiguous or a.dtype not in (np.float32, np.int32):
            raise ValueError("buffers must be C-contiguous float32/int32")
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
        "add_into_sumsq": (min(n_params(c), ADAMW_CAP),),
        "attention_step": (T, T, C // NH),
        "gelu_bwd_bias": (N, 4 * C),
        "softmax_causal": (64, T, T + 63),
    }
    if op in table:
        return table[op]
    # an op without an entry: its dims by name at this config's sizes
    by_name = {"B": B, "T": T, "C": C, "NH": NH, "V": V, "N": N, "n": N * C, "OC": 4 * C,
               "len": T, "ldc": C, "in": C, "ldw": 3 * C, "lo": 0, "hi": 3 * C}
    missing = [d for d in SPECS[op].dims if d not in by_name]
    if missing:
        raise KeyError(f"bench_dims: add {op!r} to the table (dims {missing} have no default)")
    return tuple(by_name[d] for d in SPECS[op].dims)


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
