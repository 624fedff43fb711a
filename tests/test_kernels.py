"""Every kernel op under every ISA this CPU supports, against the scalar path.

Run one op under one ISA through ``cllm_kernel_run`` (the kernel test harness)
on random inputs of ragged and model-like shapes; require relative error
<= 1e-5 (max-norm relative per output tensor, and per element with a small
absolute floor where values pass through zero). Plus hand-checked values.
"""
from __future__ import annotations

import math
import os
import sys
import zlib
from typing import List, Sequence, Tuple

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from kernel_cases import OPS, SPECS, KernelError, isa_supported, make_case, run, run_copy  # noqa: E402

SIMD = [pytest.param(i, marks=pytest.mark.skipif(not isa_supported(i), reason=f"CPU lacks {i}"))
        for i in ("avx2", "avx512")]
RAGGED = (1, 7, 17, 33, 65)

SHAPES = {
    "layernorm_fwd": [(n, c) for n in (1, 3) for c in RAGGED] + [(64, 128), (16, 384), (4, 768)],
    "layernorm_bwd": [(n, c) for n in (1, 3) for c in RAGGED] + [(64, 128), (16, 384), (4, 768)],
    "residual_layernorm_fwd": [(n, c) for n in (1, 3) for c in RAGGED] + [(64, 128), (8, 768)],
    "residual_fwd": [(n,) for n in RAGGED + (1000, 4099)],
    "gelu_fwd": [(n,) for n in RAGGED + (1000, 4099, 65536)],
    "gelu_bwd": [(n,) for n in RAGGED + (1000, 4099, 65536)],
    "attention_fwd": [(1, 1, 4, 1), (1, 7, 14, 2), (2, 17, 33, 3), (1, 33, 64, 4), (1, 65, 40, 5),
                      (2, 64, 128, 4), (1, 100, 384, 6), (1, 64, 768, 12), (1, 256, 384, 6),
                      (1, 129, 128, 2)],
    "attention_bwd": [(1, 1, 4, 1), (1, 7, 14, 2), (2, 17, 33, 3), (1, 33, 64, 4), (1, 65, 40, 5),
                      (2, 64, 128, 4), (1, 100, 384, 6), (1, 64, 768, 12), (1, 256, 384, 6),
                      (1, 129, 128, 2)],
    "crossentropy_fused": [(n, v) for n in (1, 6) for v in RAGGED] + [(12, 4096), (3, 50257)],
    "embed_fwd": [(1, 1, 1, 3), (2, 7, 17, 5), (3, 5, 33, 65), (2, 64, 128, 65)],
    "embed_bwd": [(1, 1, 1, 3), (2, 7, 17, 5), (3, 5, 33, 65), (2, 64, 128, 65)],
    "bias_grad": [(n, oc) for n in (1, 9) for oc in RAGGED] + [(768, 384), (100, 1536)],
    "add_into": [(n,) for n in RAGGED + (1000, 4099)],
    "sumsq": [(n,) for n in RAGGED + (1000, 100003)],
    "adamw": [(n,) for n in RAGGED + (1000, 4099)],
    "attention_step": [(1, 1, 1), (7, 17, 14), (17, 33, 33), (65, 128, 64), (64, 64, 64), (200, 256, 64),
                       (129, 256, 96), (33, 40, 17), (256, 256, 128)],
    "gelu_bwd_bias": [(n, oc) for n in (1, 5) for oc in RAGGED] + [(256, 512), (64, 1536)],
    "softmax_causal": [(1, 1, 1), (3, 5, 7), (7, 1, 7), (5, 33, 40), (17, 40, 56), (64, 100, 163),
                       (64, 1000, 1100)],
}
assert set(SHAPES) <= set(OPS)


def shapes_of(op: str) -> List[Tuple[int, ...]]:
    """Test shapes of ``op``: its SHAPES entry, else every dim at each ragged size."""
    return SHAPES.get(op) or [(v,) * len(OPS[op][0]) for v in RAGGED]

ELEMENTWISE = {"residual_fwd", "gelu_fwd", "gelu_bwd", "add_into", "adamw", "embed_fwd", "embed_bwd"}


def rel_err(got: np.ndarray, ref: np.ndarray, floor: float = 1e-6) -> float:
    """max |got - ref| / max |ref| (norm-relative, for reductions).

    The scale is floored at 1e-6: a reference that is all zeros (e.g. the
    scalar GELU of a very negative x, which rounds to 0 where the true value
    is ~1e-30) must not turn a 1e-30 difference into a failure."""
    g = got.astype(np.float64)
    r = ref.astype(np.float64)
    scale = max(np.max(np.abs(r)), floor)
    return float(np.max(np.abs(g - r)) / scale)


def compare(op: str, got: List[np.ndarray], ref: List[np.ndarray], tol: float = 1e-5,
            floor: float = 1e-6) -> None:
    """Assert every output buffer of ``op`` matches the reference.

    ``floor`` bounds the norm used for relative errors from below: a row mean
    that happens to be ~1e-5 is judged against the magnitude of its inputs,
    not against itself (float rounding of the sum is relative to the inputs)."""
    for i in OPS[op][1]:
        g, r = got[i], ref[i]
        if SPECS[op].bufs[i].f64:
            g, r = g.view(np.float64), r.view(np.float64)
        assert np.all(np.isfinite(g)), f"{op} out[{i}] has non-finite values"
        e = rel_err(g, r, floor)
        assert e <= tol, f"{op} out[{i}]: max-norm relative error {e:.3g} > {tol}"
        if op in ELEMENTWISE:
            gd, rd = g.astype(np.float64), r.astype(np.float64)
            efloor = 1e-6 * max(np.max(np.abs(rd)), 1e-30)
            bad = np.abs(gd - rd) > tol * np.abs(rd) + efloor
            assert not bad.any(), f"{op} out[{i}]: {bad.sum()} elements beyond elementwise rtol {tol}"


def cases():
    for op in OPS:
        shapes = shapes_of(op)
        for shp in shapes:
            yield pytest.param(op, shp, id=f"{op}-{'x'.join(map(str, shp))}")


@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("op,dims", list(cases()))
def test_op_matches_scalar(op: str, dims: Sequence[int], isa: str) -> None:
    arrays = make_case(op, dims, seed=zlib.crc32(repr((op, tuple(dims))).encode()))
    ref = run_copy(op, "scalar", arrays, dims)
    got = run_copy(op, isa, arrays, dims)
    if op in ("gelu_fwd", "gelu_bwd"):
        # The scalar tanh form cancels (1 + tanh(u) for u << 0, 1 - tanh^2):
        # there both paths are judged against float64 truth instead.
        check_gelu_truth(op, arrays, ref)
        check_gelu_truth(op, arrays, got)
    elif op == "gelu_bwd_bias":
        check_gelu_bwd_bias(arrays, ref, dims, db_tol=1e-4)
        check_gelu_bwd_bias(arrays, got, dims, db_tol=1e-5)
        # same dx as the unfused op, and db bit-equal to bias_grad of that dx
        N, OC = dims
        dx = run_copy("gelu_bwd", isa, [arrays[0], arrays[2], arrays[3]], [N * OC])[0]
        assert np.array_equal(got[0], dx)
        db = run_copy("bias_grad", isa, [arrays[1], dx], [N, OC])[0]
        assert np.array_equal(got[1], db)
    elif op == "crossentropy_fused" and dims[1] > 10000:
        # Over 50k logits the scalar path's sequential float sum drifts
        # ~1e-5; judge both against float64 (the SIMD path to 1e-5).
        truth = crossentropy64(arrays)
        assert rel_err(ref[0], truth) <= 1e-4
        assert rel_err(got[0], truth) <= 1e-5
        assert rel_err(got[1], ref[1]) <= 1e-5
    else:
        compare(op, got, ref)


def check_gelu_bwd_bias(arrays: List[np.ndarray], out: List[np.ndarray], dims: Sequence[int],
                        db_tol: float) -> None:
    """dx against float64 truth (as for gelu_bwd), db against its column sums."""
    x, dy = arrays[2], arrays[3]
    check_gelu_truth("gelu_bwd", [None, x.ravel(), dy.ravel()], [out[0].ravel()])
    truth_db = (gelu64(x)[1] * dy.astype(np.float64)).sum(0)
    assert rel_err(out[1], truth_db) <= db_tol


def crossentropy64(arrays: List[np.ndarray]) -> np.ndarray:
    """dlogits = (softmax - onehot) * dscale in float64 (ignored rows zero)."""
    logits, _, tg, params = arrays
    l = logits.astype(np.float64)
    p = np.exp(l - l.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p *= params[0]
    for i, t in enumerate(tg):
        if t >= 0:
            p[i, t] -= params[0]
        else:
            p[i] = 0.0
    return p


def gelu64(x: np.ndarray) -> np.ndarray:
    """tanh-GELU and its derivative in float64."""
    x = x.astype(np.float64)
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
    t = np.tanh(u)
    du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x ** 2)
    return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du


def check_gelu_truth(op: str, arrays: List[np.ndarray], out: List[np.ndarray]) -> None:
    """Elementwise rtol 1e-5 vs float64, absolute floor 1e-6 * |x| (* |dout|)."""
    x = arrays[1]
    f, df = gelu64(x)
    if op == "gelu_fwd":
        truth, floor = f, 1e-6 * np.abs(x)
    else:
        dy = arrays[2].astype(np.float64)
        truth, floor = df * dy, 1e-6 * (1 + np.abs(x)) * np.abs(dy)
    err = np.abs(out[0].astype(np.float64) - truth)
    bad = err > 1e-5 * np.abs(truth) + floor + 1e-30
    assert not bad.any(), f"{op}: {bad.sum()} elements off, worst x={x[np.argmax(err - floor)]}"


# ------------------------------------------------------ hand-checked values
@pytest.mark.parametrize("isa", ["scalar"] + SIMD)
def test_gelu_known_values(isa: str) -> None:
    x = np.array([0.0, 1.0, -1.0, 2.0, 30.0, -30.0, 1e4, -1e4, 0.5], np.float32)
    out = np.zeros_like(x)
    run("gelu_fwd", isa, [out, x], [x.size])

    def g(v: float) -> float:
        return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
    expect = np.array([g(float(v)) for v in x])
    assert out[0] == 0.0
    assert np.allclose(out, expect, rtol=1e-6, atol=1e-7)
    assert out[4] == 30.0 and out[6] == 1e4 and abs(out[5]) < 1e-30 and abs(out[7]) < 1e-30
    # derivative by central differences in float64 at a few points
    xs = np.array([-3.0, -0.7, 0.0, 0.3, 1.5, 4.0, 20.0, -20.0], np.float32)
    dx = np.zeros_like(xs)
    run("gelu_bwd", isa, [dx, xs, np.ones_like(xs)], [xs.size])
    h = 1e-6
    num = np.array([(g(float(v) + h) - g(float(v) - h)) / (2 * h) for v in xs])
    assert np.allclose(dx, num, rtol=1e-5, atol=1e-6)
    assert dx[2] == pytest.approx(0.5)


@pytest.mark.parametrize("isa", ["scalar"] + SIMD)
def test_layernorm_constant_row(isa: str) -> None:
    N, C = 3, 37
    x = np.full((N, C), 4.25, np.float32)
    w = np.linspace(-1, 1, C).astype(np.float32)
    b = np.linspace(0, 2, C).astype(np.float32)
    out, mean, rstd = np.zeros((N, C), np.float32), np.zeros(N, np.float32), np.zeros(N, np.float32)
    run("layernorm_fwd", isa, [out, mean, rstd, x, w, b], [N, C])
    assert np.all(mean == 4.25)
    assert np.allclose(rstd, 1 / math.sqrt(1e-5), rtol=1e-6)
    assert np.array_equal(out, np.broadcast_to(b, (N, C)))  # (x - mean) == 0 exactly -> out = b


@pytest.mark.parametrize("isa", ["scalar"] + SIMD)
def test_layernorm_matches_numpy(isa: str) -> None:
    arrays = make_case("layernorm_fwd", (5, 65), seed=3)
    out = run_copy("layernorm_fwd", isa, arrays, (5, 65))
    x = arrays[3].astype(np.float64)
    ref = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5) * arrays[4] + arrays[5]
    assert rel_err(out[0], ref) < 1e-5


@pytest.mark.parametrize("isa", ["scalar"] + SIMD)
@pytest.mark.parametrize("B,T,C,NH", [(2, 19, 24, 3), (1, 70, 40, 2), (1, 257, 64, 1)])
def test_attention_fwd_matches_float64(isa: str, B: int, T: int, C: int, NH: int) -> None:
    """out = P V and lse = log sum exp of the scaled scores, against float64
    numpy, on ragged T (strip and key-panel tails) and head sizes."""
    from kernel_cases import causal_attention
    arrays = make_case("attention_fwd", (B, T, C, NH), seed=5)
    out = run_copy("attention_fwd", isa, arrays, (B, T, C, NH))
    _, o, lse = causal_attention(arrays[2], B, T, C, NH)
    assert rel_err(out[0], o) < 1e-5
    assert np.max(np.abs(out[1] - lse)) < 1e-5 * max(1.0, float(np.max(np.abs(lse))))
    # the first row attends to itself only: lse = its own scaled score
    q0, k0 = arrays[2][:, 0, :C], arrays[2][:, 0, C:2 * C]
    hs = C // NH
    s00 = (q0.reshape(B, NH, hs).astype(np.float64) * k0.reshape(B, NH, hs)).sum(-1) / np.sqrt(hs)
    assert np.allclose(out[1][:, :, 0], s00, rtol=1e-5, atol=1e-6)
    assert np.allclose(out[0][:, 0], arrays[2][:, 0, 2 * C:], rtol=1e-6, atol=1e-7)  # row 0: o = v_0


@pytest.mark.parametrize("isa", ["scalar"] + SIMD)
@pytest.mark.parametrize("B,T,C,NH", [(2, 21, 40, 4), (1, 130, 48, 2)])
def test_attention_bwd_matches_torch(isa: str, B: int, T: int, C: int, NH: int) -> None:
    torch = pytest.importorskip("torch")
    arrays = make_case("attention_bwd", (B, T, C, NH), seed=9)
    out = run_copy("attention_bwd", isa, arrays, (B, T, C, NH))
    qkv = torch.tensor(arrays[2], dtype=torch.float64, requires_grad=True)
    q, k, v = qkv.split(C, dim=2)
    sh = lambda t: t.view(B, T, NH, C // NH).transpose(1, 2)  # noqa: E731
    y = torch.nn.functional.scaled_dot_product_attention(sh(q), sh(k), sh(v), is_causal=True)
    y = y.transpose(1, 2).reshape(B, T, C)
    y.backward(torch.tensor(arrays[1], dtype=torch.float64))
    assert rel_err(out[0], qkv.grad.numpy()) < 1e-5


@pytest.mark.parametrize("isa", ["scalar"] + SIMD)
def test_attention_fwd_then_bwd_chain(isa: str) -> None:
    """The op's own forward outputs (out, lse) feed its backward: the chain
    matches torch SDPA's gradient, and is bit-identical when run twice."""
    torch = pytest.importorskip("torch")
    B, T, C, NH = 2, 45, 36, 3
    fwd = make_case("attention_fwd", (B, T, C, NH), seed=11)
    o = run_copy("attention_fwd", isa, fwd, (B, T, C, NH))
    dout = np.random.default_rng(12).standard_normal((B, T, C)).astype(np.float32)
    bwd = [np.zeros((B, T, 3 * C), np.float32), dout, fwd[2], o[1]]
    g1 = run_copy("attention_bwd", isa, bwd, (B, T, C, NH))[0]
    g2 = run_copy("attention_bwd", isa, bwd, (B, T, C, NH))[0]
    assert np.array_equal(g1, g2)
    qkv = torch.tensor(fwd[2], dtype=torch.float64, requires_grad=True)
    q, k, v = qkv.split(C, dim=2)
    sh = lambda t: t.view(B, T, NH, C // NH).transpose(1, 2)  # noqa: E731
    y = torch.nn.functional.scaled_dot_product_attention(sh(q), sh(k), sh(v), is_causal=True)
    y.transpose(1, 2).reshape(B, T, C).backward(torch.tensor(dout, dtype=torch.float64))
    assert rel_err(g1, qkv.grad.numpy()) < 1e-5


@pytest.mark.parametrize("isa", ["scalar"] + SIMD)
def test_crossentropy_known(isa: str) -> None:
    N, V = 4, 37
    logits = np.zeros((N, V), np.float32)
    logits[1] = np.arange(V, dtype=np.float32) * 0.5
    logits[2, 5] = 1000.0  # huge logit: must not overflow
    tg = np.array([3, 36, 5, -1], np.int32)
    losses = np.zeros(N, np.float32)
    work = logits.copy()
    run("crossentropy_fused", isa, [work, losses, tg, np.array([0.5], np.float32)], [N, V])
    assert losses[0] == pytest.approx(math.log(V), rel=1e-6)
    l1 = logits[1].astype(np.float64)
    assert losses[1] == pytest.approx(np.log(np.exp(l1 - l1.max()).sum()) + l1.max() - l1[36], rel=1e-6)
    assert losses[2] == pytest.approx(0.0, abs=1e-6) and losses[3] == 0.0
    assert np.all(work[3] == 0.0)
    assert np.allclose(work[:3].sum(1), 0.0, atol=1e-6)  # (softmax - onehot) * dscale sums to 0
    assert work[0, 3] == pytest.approx(0.5 * (1 / V - 1), rel=1e-6)


@pytest.mark.parametrize("isa", ["scalar"] + SIMD)
def test_sumsq_and_adamw_known(isa: str) -> None:
    x = np.arange(1, 20, dtype=np.float32)
    out = np.zeros(2, np.float32)
    run("sumsq", isa, [x, out], [x.size])
    assert out.view(np.float64)[0] == float((np.arange(1, 20) ** 2).sum())
    # AdamW step 1 from zero moments moves every parameter by ~lr against the gradient sign
    n = 23
    p = np.ones(n, np.float32)
    g = np.linspace(-2, 2, n).astype(np.float32)
    g[n // 2] = 0.5
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    hyper = np.array([0.01, 0.9, 0.999, 1e-8, 0.0, 0.1, 0.001, 1.0], np.float32)
    run("adamw", isa, [p, g, m, v, hyper], [n])
    assert np.allclose(p, 1 - 0.01 * np.sign(g), rtol=1e-5)


@pytest.mark.parametrize("isa", ["scalar"] + SIMD)
def test_nan_propagates(isa: str) -> None:
    """A NaN must surface (the model's numeric checks rely on it), not vanish."""
    x = np.array([1.0, np.nan, -2.0, 0.5, 3.0, -1.0, 2.0, 0.1, np.nan, 1.0], np.float32)
    out = np.zeros_like(x)
    run("gelu_fwd", isa, [out, x], [x.size])
    assert np.array_equal(np.isnan(out), np.isnan(x))
    logits = np.zeros((2, 21), np.float32)
    logits[0, 7] = np.nan
    losses = np.zeros(2, np.float32)
    run("crossentropy_fused", isa, [logits, losses, np.array([3, 4], np.int32), np.array([1.0], np.float32)], [2, 21])
    assert np.isnan(losses[0]) and np.isfinite(losses[1])


# ------------------------------------------------------------ the harness
def test_harness_validates() -> None:
    arrays = make_case("gelu_fwd", (8,))
    with pytest.raises(KernelError, match="unknown op"):
        run("no_such_op", "scalar", arrays, [8])
    with pytest.raises(KernelError, match="needs 2 buffers"):
        run("gelu_fwd", "scalar", arrays + arrays, [8])
    with pytest.raises(KernelError, match="needs 1 dims"):
        run("gelu_fwd", "scalar", arrays, [8, 8])
    with pytest.raises(KernelError, match="dim 0"):
        run("gelu_fwd", "scalar", arrays, [0])
    with pytest.raises(KernelError, match="reps"):
        run("gelu_fwd", "scalar", arrays, [8], reps=0)
    ce = make_case("crossentropy_fused", (2, 5))
    ce[2][1] = 5
    with pytest.raises(KernelError, match="targets"):
        run("crossentropy_fused", "scalar", ce, [2, 5])
    em = make_case("embed_fwd", (1, 2, 3, 4))
    em[1][0, 1] = -1
    with pytest.raises(KernelError, match="ids"):
        run("embed_fwd", "scalar", em, [1, 2, 3, 4])
    at = make_case("attention_fwd", (1, 2, 6, 4))
    with pytest.raises(KernelError, match="divisible"):
        run("attention_fwd", "scalar", at, [1, 2, 6, 4])
    with pytest.raises(KernelError, match="buffer 1 is NULL"):
        run("gelu_fwd", "scalar", arrays, [8], null=(1,))


def test_op_names_listed() -> None:
    """cllm_kernel_op_name and cllm_kernel_op_info walk the same registry."""
    from cllm._cllm import ffi, lib
    names = []
    p = ffi.new("const char **")
    i = 0
    while lib.cllm_kernel_op_name(i, p) == 0:
        names.append(ffi.string(p[0]).decode())
        i += 1
    assert lib.cllm_kernel_op_name(-1, p) == lib.CLLM_ERR_RANGE
    assert lib.cllm_kernel_op_info(len(names), p, p, p, ffi.NULL) == lib.CLLM_ERR_RANGE
    assert names == list(OPS) and len(names) >= 17


@pytest.mark.parametrize("isa", ["scalar"] + SIMD)
def test_add_into_sumsq_is_add_into_then_sumsq(isa: str) -> None:
    """The fused reduce step gives bit for bit what the two ops give."""
    rng = np.random.default_rng(5)
    for n in (1, 7, 17, 33, 100003):
        dst, src = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
        d1, d2 = dst.copy(), dst.copy()
        o1, o2 = np.zeros(2, np.float32), np.zeros(2, np.float32)
        run("add_into_sumsq", isa, [d1, src, o1], [n])
        run("add_into", isa, [d2, src], [n])
        run("sumsq", isa, [d2, o2], [n])
        assert np.array_equal(d1, d2) and o1.view(np.float64)[0] == o2.view(np.float64)[0]


def test_registry_specs_consistent() -> None:
    """Every buffer shape and int32 bound of the registry names a declared dim
    and every op has an output buffer."""
    from kernel_cases import SPECS
    for op, spec in SPECS.items():
        assert len(set(spec.dims)) == len(spec.dims), op
        assert any(b.output for b in spec.bufs), f"{op}: no output buffer"
        for b in spec.bufs:
            for expr in b.shape:
                for f in expr.split("*"):
                    assert f.strip().isdigit() or f.strip() in spec.dims, f"{op}.{b.name}: unknown dim {f!r}"
            if b.bound:
                assert b.int32 and b.bound in spec.dims, f"{op}.{b.name}: bad bound {b.bound!r}"


# ------------------------------------------------- property-based shapes
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ISA_AVAILABLE = [i for i in ("avx2", "avx512") if isa_supported(i)]


@pytest.mark.skipif(not ISA_AVAILABLE, reason="no SIMD ISA on this CPU")
@settings(max_examples=100, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 40), hs=st.integers(1, 37), NH=st.integers(1, 4),
       seed=st.integers(0, 2**31 - 1), isa=st.sampled_from(ISA_AVAILABLE or ["scalar"]))
def test_attention_random_shapes(B: int, T: int, hs: int, NH: int, seed: int, isa: str) -> None:
    dims = (B, T, hs * NH, NH)
    for op in ("attention_fwd", "attention_bwd"):
        arrays = make_case(op, dims, seed=seed)
        compare(op, run_copy(op, isa, arrays, dims), run_copy(op, "scalar", arrays, dims))


@pytest.mark.skipif(not ISA_AVAILABLE, reason="no SIMD ISA on this CPU")
@settings(max_examples=100, deadline=None)
@given(N=st.integers(1, 9), C=st.integers(1, 200), seed=st.integers(0, 2**31 - 1),
       isa=st.sampled_from(ISA_AVAILABLE or ["scalar"]))
def test_rowwise_random_shapes(N: int, C: int, seed: int, isa: str) -> None:
    for op in ("layernorm_fwd", "layernorm_bwd", "residual_layernorm_fwd", "bias_grad"):
        arrays = make_case(op, (N, C), seed=seed)
        inputs = [a for i, a in enumerate(arrays) if i not in OPS[op][1]]  # row means are judged against these
        floor = max(float(np.max(np.abs(a))) for a in inputs) if op.startswith(("layernorm", "residual")) else 1e-6
        compare(op, run_copy(op, isa, arrays, (N, C)), run_copy(op, "scalar", arrays, (N, C)), floor=floor)
    arrays = make_case("crossentropy_fused", (N, C), seed=seed)
    compare("crossentropy_fused", run_copy("crossentropy_fused", isa, arrays, (N, C)),
            run_copy("crossentropy_fused", "scalar", arrays, (N, C)))
