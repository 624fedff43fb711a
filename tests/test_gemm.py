"""Correctness tests for the C SGEMM (``cllm_gemm``) under every ISA the CPU has.

Each case is checked against a float64 numpy reference:
``max|C - ref| / max|ref| <= 1e-5`` (for outputs with fewer than 16 elements,
which can cancel to ~0, the scale is the magnitude of the summed terms).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cllm._cllm import ffi, lib

TOL = 1e-5


def _supported_isas() -> List[int]:
    """ISA ids this CPU (and OS) can run."""
    avx2 = ffi.new("int *")
    avx512 = ffi.new("int *")
    assert lib.cllm_cpu_detect(avx2, avx512) == 0
    isas = [lib.CLLM_ISA_SCALAR]
    if avx2[0]:
        isas.append(lib.CLLM_ISA_AVX2)
    if avx512[0]:
        isas.append(lib.CLLM_ISA_AVX512)
    return isas


ISAS = _supported_isas()
ISA_NAMES = {lib.CLLM_ISA_SCALAR: "scalar", lib.CLLM_ISA_AVX2: "avx2", lib.CLLM_ISA_AVX512: "avx512"}


@contextlib.contextmanager
def isa_forced(isa: int) -> Iterator[None]:
    """Force a kernel path for the duration of the block, then restore the old one."""
    old = ffi.new("int *")
    assert lib.cllm_get_isa(old) == 0
    assert lib.cllm_set_isa(isa) == 0, ffi.string(lib.cllm_last_error())
    try:
        cur = ffi.new("int *")
        assert lib.cllm_get_isa(cur) == 0 and cur[0] == isa
        yield
    finally:
        assert lib.cllm_set_isa(old[0]) == 0


def _fp(a: Optional[np.ndarray]):
    """float* for a float32 array (or NULL)."""
    if a is None:
        return ffi.NULL
    assert a.dtype == np.float32
    return ffi.cast("float *", a.ctypes.data)


def _strided(rng: np.random.Generator, rows: int, cols: int, pad: int) -> np.ndarray:
    """A rows x (cols+pad) float32 buffer with random values (pad columns too)."""
    return rng.standard_normal((rows, cols + pad)).astype(np.float32)


def run_case(rng: np.random.Generator, ta: int, tb: int, M: int, N: int, K: int,
             alpha: float = 1.0, beta: float = 0.0, use_bias: bool = False,
             pad: int = 0, nan_c: bool = False, blocked: Optional[tuple] = None) -> float:
    """Run one cllm_gemm call (or cllm_gemm_blocked with ``blocked`` =
    (isa, mc, kc, nc)) and return its relative max error vs float64."""
    a_rows, a_cols = (K, M) if ta else (M, K)
    b_rows, b_cols = (N, K) if tb else (K, N)
    A = _strided(rng, a_rows, a_cols, pad)
    B = _strided(rng, b_rows, b_cols, pad + 3 if pad else 0)
    C = _strided(rng, M, N, pad)
    if nan_c:
        C[:, :N] = np.nan
    C_before = C.copy()
    bias = rng.standard_normal(N).astype(np.float32) if use_bias else None

    opA = A[:, :a_cols].astype(np.float64)
    opB = B[:, :b_cols].astype(np.float64)
    opA = opA.T if ta else opA
    opB = opB.T if tb else opB
    ref = alpha * (opA @ opB)
    if beta != 0.0:
        ref = ref + beta * C_before[:, :N].astype(np.float64)
    if bias is not None:
        ref = ref + bias.astype(np.float64)[None, :]

    args = (ta, tb, M, N, K, alpha, _fp(A), A.shape[1], _fp(B), B.shape[1], beta, _fp(C), C.shape[1], _fp(bias))
    rc = lib.cllm_gemm_blocked(*blocked, *args) if blocked else lib.cllm_gemm(*args)
    assert rc == 0, ffi.string(lib.cllm_last_error())
    # Padding columns of C must be untouched.
    np.testing.assert_array_equal(C[:, N:], C_before[:, N:])
    got = C[:, :N].astype(np.float64)
    assert np.all(np.isfinite(got))
    scale = float(np.max(np.abs(ref)))
    if M * N < 16:
        # A handful of outputs can cancel to ~0 (e.g. 1x1 with beta and bias);
        # then measure against the magnitude of the summed terms instead.
        terms = abs(alpha) * (np.abs(opA) @ np.abs(opB))
        if beta != 0.0:
            terms = terms + abs(beta) * np.abs(C_before[:, :N].astype(np.float64))
        if bias is not None:
            terms = terms + np.abs(bias.astype(np.float64))[None, :]
        scale = float(np.max(terms))
    return float(np.max(np.abs(got - ref))) / max(scale, 1e-30)


RAGGED = [1, 7, 17, 33, 65, 130]


@pytest.mark.parametrize("isa", ISAS, ids=lambda i: ISA_NAMES[i])
@pytest.mark.parametrize("ta", [0, 1])
@pytest.mark.parametrize("tb", [0, 1])
def test_ragged_sizes_all_transposes(isa: int, ta: int, tb: int) -> None:
    rng = np.random.default_rng(1234 + 2 * ta + tb)
    with isa_forced(isa):
        for M in RAGGED:
            for N in RAGGED:
                K = RAGGED[(M + N) % len(RAGGED)]
                err = run_case(rng, ta, tb, M, N, K)
                assert err <= TOL, (M, N, K, err)


@pytest.mark.parametrize("isa", ISAS, ids=lambda i: ISA_NAMES[i])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 300, 513), (300, 1, 257), (29, 45, 1),
                                   (200, 70, 600), (17, 1000, 31), (257, 129, 1030),
                                   (500, 97, 12), (13, 4100, 40), (3, 8200, 9),
                                   (7, 4100, 800)])
def test_odd_shapes_crossing_blocks(isa: int, shape) -> None:
    M, N, K = shape
    rng = np.random.default_rng(M * 7 + N * 13 + K)
    with isa_forced(isa):
        for ta in (0, 1):
            for tb in (0, 1):
                err = run_case(rng, ta, tb, M, N, K, pad=5)
                assert err <= TOL, (ta, tb, shape, err)


@pytest.mark.parametrize("isa", ISAS, ids=lambda i: ISA_NAMES[i])
@settings(max_examples=40, deadline=None)
@given(M=st.integers(1, 90), N=st.integers(1, 150), K=st.integers(1, 420),
       ta=st.integers(0, 1), tb=st.integers(0, 1), pad=st.integers(0, 4),
       beta=st.sampled_from([0.0, 1.0, -0.5]), use_bias=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_random_shapes(isa: int, M: int, N: int, K: int, ta: int, tb: int, pad: int,
                       beta: float, use_bias: bool, seed: int) -> None:
    """Random shapes/transposes/strides/epilogues (hypothesis) against float64."""
    rng = np.random.default_rng(seed)
    with isa_forced(isa):
        err = run_case(rng, ta, tb, M, N, K, alpha=0.75, beta=beta, use_bias=use_bias,
                       pad=pad, nan_c=(beta == 0.0))
    assert err <= TOL, err


@pytest.mark.parametrize("isa", ISAS, ids=lambda i: ISA_NAMES[i])
@pytest.mark.parametrize("alpha,beta,use_bias", [(1.0, 0.0, True), (0.5, 1.0, False),
                                                (-1.5, 0.25, True), (2.0, -1.0, True),
                                                (0.0, 0.5, True), (1.0, 1.0, True)])
def test_alpha_beta_bias(isa: int, alpha: float, beta: float, use_bias: bool) -> None:
    rng = np.random.default_rng(99)
    with isa_forced(isa):
        for (M, N, K) in [(33, 65, 17), (130, 47, 900), (64, 96, 128)]:
            for ta, tb in [(0, 0), (1, 0), (0, 1), (1, 1)]:
                err = run_case(rng, ta, tb, M, N, K, alpha=alpha, beta=beta,
                               use_bias=use_bias, pad=2)
                assert err <= TOL, (M, N, K, ta, tb, err)


@pytest.mark.parametrize("isa", ISAS, ids=lambda i: ISA_NAMES[i])
def test_small_m_path(isa: int) -> None:
    """M <= 4 streams B without packing; M = 5 goes through the packed path."""
    rng = np.random.default_rng(21)
    with isa_forced(isa):
        for M in (1, 2, 3, 4, 5):
            for (N, K) in [(1, 1), (63, 15), (64, 16), (65, 17), (200, 700), (130, 33)]:
                for ta, tb in [(0, 0), (1, 0), (0, 1), (1, 1)]:
                    for beta, use_bias in [(0.0, True), (1.0, False), (-0.5, True)]:
                        err = run_case(rng, ta, tb, M, N, K, alpha=1.25, beta=beta,
                                       use_bias=use_bias, pad=3, nan_c=(beta == 0.0))
                        assert err <= TOL, (M, N, K, ta, tb, beta, err)


@pytest.mark.parametrize("isa", ISAS, ids=lambda i: ISA_NAMES[i])
def test_beta_zero_never_reads_nan_c(isa: int) -> None:
    rng = np.random.default_rng(7)
    with isa_forced(isa):
        for (M, N, K) in [(7, 17, 33), (65, 130, 300), (200, 40, 700)]:
            for ta, tb in [(0, 0), (1, 1), (0, 1), (1, 0)]:
                err = run_case(rng, ta, tb, M, N, K, beta=0.0, nan_c=True, use_bias=True, pad=1)
                assert err <= TOL


@pytest.mark.parametrize("isa", ISAS, ids=lambda i: ISA_NAMES[i])
def test_k_zero_scales_c(isa: int) -> None:
    """K == 0: C = beta*C + bias (A and B are not read, may be NULL)."""
    rng = np.random.default_rng(3)
    C = rng.standard_normal((5, 9)).astype(np.float32)
    bias = rng.standard_normal(9).astype(np.float32)
    expect = 0.5 * C.astype(np.float64) + bias
    with isa_forced(isa):
        rc = lib.cllm_gemm(0, 0, 5, 9, 0, 1.0, ffi.NULL, 1, ffi.NULL, 9, 0.5, _fp(C), 9, _fp(bias))
    assert rc == 0
    np.testing.assert_allclose(C, expect, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("isa", ISAS, ids=lambda i: ISA_NAMES[i])
def test_model_shapes(isa: int) -> None:
    """A few real model shapes (forward, dInput with trans_b, dW with trans_a)."""
    rng = np.random.default_rng(11)
    with isa_forced(isa):
        for (ta, tb, M, N, K) in [(0, 0, 256, 1152, 384), (0, 1, 256, 384, 1152),
                                  (1, 0, 384, 1152, 256), (0, 1, 64, 4096, 384)]:
            err = run_case(rng, ta, tb, M, N, K, beta=1.0 if ta else 0.0, use_bias=not ta)
            assert err <= TOL, (ta, tb, M, N, K, err)


@pytest.mark.parametrize("isa", ISAS[1:], ids=lambda i: ISA_NAMES[i])
def test_simd_matches_scalar(isa: int) -> None:
    """Each SIMD path agrees with the scalar reference path."""
    rng = np.random.default_rng(5)
    M, N, K = 97, 131, 259
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((N, K)).astype(np.float32)
    out = {}
    for which in (lib.CLLM_ISA_SCALAR, isa):
        C = np.empty((M, N), np.float32)
        with isa_forced(which):
            assert lib.cllm_gemm(0, 1, M, N, K, 1.0, _fp(A), K, _fp(B), K, 0.0, _fp(C), N,
                                 ffi.NULL) == 0
        out[which] = C
    ref = out[lib.CLLM_ISA_SCALAR]
    assert np.max(np.abs(out[isa] - ref)) / np.max(np.abs(ref)) <= TOL


def _err_msg() -> str:
    return ffi.string(lib.cllm_last_error()).decode()


def test_error_cases() -> None:
    A = np.ones((4, 4), np.float32)
    B = np.ones((4, 4), np.float32)
    C = np.zeros((4, 4), np.float32)
    pa, pb, pc = _fp(A), _fp(B), _fp(C)
    cases = [
        ((0, 0, -1, 4, 4, 1.0, pa, 4, pb, 4, 0.0, pc, 4, ffi.NULL), "negative"),
        ((0, 0, 4, 4, -2, 1.0, pa, 4, pb, 4, 0.0, pc, 4, ffi.NULL), "negative"),
        ((0, 0, 4, 4, 4, 1.0, pa, 3, pb, 4, 0.0, pc, 4, ffi.NULL), "lda"),
        ((1, 0, 4, 4, 2, 1.0, pa, 3, pb, 4, 0.0, pc, 4, ffi.NULL), "lda"),
        ((0, 0, 4, 4, 4, 1.0, pa, 4, pb, 3, 0.0, pc, 4, ffi.NULL), "ldb"),
        ((0, 1, 4, 2, 4, 1.0, pa, 4, pb, 3, 0.0, pc, 4, ffi.NULL), "ldb"),
        ((0, 0, 4, 4, 4, 1.0, pa, 4, pb, 4, 0.0, pc, 3, ffi.NULL), "ldc"),
        ((0, 0, 4, 4, 4, 1.0, ffi.NULL, 4, pb, 4, 0.0, pc, 4, ffi.NULL), "A is NULL"),
        ((0, 0, 4, 4, 4, 1.0, pa, 4, ffi.NULL, 4, 0.0, pc, 4, ffi.NULL), "B is NULL"),
        ((0, 0, 4, 4, 4, 1.0, pa, 4, pb, 4, 0.0, ffi.NULL, 4, ffi.NULL), "C is NULL"),
    ]
    for args, needle in cases:
        C[:] = 7.0
        rc = lib.cllm_gemm(*args)
        assert rc != 0, needle
        assert rc == lib.CLLM_ERR_INVALID
        assert needle in _err_msg(), (needle, _err_msg())
        assert np.all(C == 7.0), "a failed call must not write C"


def test_empty_sizes_are_noops() -> None:
    C = np.full((3, 3), 5.0, np.float32)
    assert lib.cllm_gemm(0, 0, 0, 3, 3, 1.0, ffi.NULL, 3, ffi.NULL, 3, 0.0, _fp(C), 3, ffi.NULL) == 0
    assert lib.cllm_gemm(0, 0, 3, 0, 3, 1.0, ffi.NULL, 3, ffi.NULL, 3, 0.0, _fp(C), 3, ffi.NULL) == 0
    assert np.all(C == 5.0)


# ------------------------------------------------------- cache blocking
def _blocking(isa: int) -> tuple:
    v = [ffi.new("int *") for _ in range(5)]
    assert lib.cllm_gemm_blocking(isa, *v) == 0
    return tuple(x[0] for x in v)


@pytest.mark.parametrize("isa", ISAS, ids=lambda i: ISA_NAMES[i])
def test_default_blocking_is_consistent(isa: int) -> None:
    """The cache-derived blocking respects the driver's multiples and bounds."""
    mr, nr, mc, kc, nc = _blocking(isa)
    assert mc % mr == 0 and kc % 8 == 0 and nc % nr == 0
    assert mr <= mc <= 1024 and 128 <= kc <= 512 and 4 * nr <= nc <= 4096
    c = ffi.new("cllm_cache_info *")
    assert lib.cllm_cache_sizes(c) == 0
    assert 4096 <= c.l1d <= c.l2 and c.l3 >= 0 and c.l3_sharing >= 1 and c.source in (0, 1, 2)
    assert lib.cllm_cache_sizes(ffi.NULL) == lib.CLLM_ERR_INVALID
    # A block within half the L2 (unless clamped at MR)
    assert mc == mr or mc * kc * 4 <= c.l2 // 2


# (mc, kc, nc) asked for; the library rounds them up to multiples of MR, 8, NR
SMALL_BLOCKINGS = [(1, 1, 1), (7, 13, 65), (0, 24, 0), (13, 520, 130), (2000, 0, 3)]


@pytest.mark.parametrize("isa", ISAS, ids=lambda i: ISA_NAMES[i])
@pytest.mark.parametrize("blk", SMALL_BLOCKINGS, ids=lambda b: "x".join(map(str, b)))
def test_any_blocking_gives_the_same_product(isa: int, blk) -> None:
    """Tiny and odd blockings make every edge of the driver fire (ragged
    MC/KC/NC blocks, the whole-K panel path, beta and bias on the right K
    block); scalar and SIMD agree with float64 on ragged shapes."""
    rng = np.random.default_rng(sum(blk) + isa)
    for (M, N, K) in [(1, 1, 1), (7, 17, 33), (33, 65, 17), (65, 130, 300), (130, 33, 1030), (5, 200, 70)]:
        for ta in (0, 1):
            for tb in (0, 1):
                err = run_case(rng, ta, tb, M, N, K, alpha=0.5, beta=-0.5, use_bias=True, pad=3,
                               blocked=(isa, *blk))
                assert err <= TOL, (blk, M, N, K, ta, tb, err)


def test_gemm_blocked_validates() -> None:
    A = np.ones((4, 4), np.float32)
    args = (0, 0, 4, 4, 4, 1.0, _fp(A), 4, _fp(A), 4, 0.0, _fp(A), 4, ffi.NULL)
    assert lib.cllm_gemm_blocked(7, 0, 0, 0, *args) == lib.CLLM_ERR_INVALID
    assert lib.cllm_gemm_blocked(lib.CLLM_ISA_SCALAR, -1, 0, 0, *args) == lib.CLLM_ERR_INVALID
    assert b"65536" in ffi.string(lib.cllm_last_error())
    assert lib.cllm_gemm_blocked(lib.CLLM_ISA_SCALAR, 0, 70000, 0, *args) == lib.CLLM_ERR_INVALID
    assert lib.cllm_gemm_blocked(lib.CLLM_ISA_SCALAR, 0, 0, 0, 0, 0, 4, 4, 4, 1.0, _fp(A), 3, _fp(A), 4, 0.0,
                                 _fp(A), 4, ffi.NULL) == lib.CLLM_ERR_INVALID
    assert lib.cllm_gemm_blocking(9, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL) == lib.CLLM_ERR_INVALID


def test_blocking_env_override() -> None:
    """CLLM_GEMM_MC/KC/NC override the derived blocking (rounded up to the
    driver's multiples); an invalid value is ignored with a warning."""
    import os
    import subprocess
    import sys
    code = ("from cllm._cllm import ffi, lib\n"
            "v = [ffi.new('int *') for _ in range(5)]\n"
            "lib.cllm_gemm_blocking(lib.CLLM_ISA_SCALAR, *v)\n"
            "print(*[x[0] for x in v])\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, CLLM_GEMM_KC="100", CLLM_GEMM_NC="20", CLLM_GEMM_MC="abc")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    mr, nr, mc, kc, nc = map(int, r.stdout.split())
    assert kc == 104 and nc == 24 and (mr, nr) == (4, 8)
    assert mc == _blocking(lib.CLLM_ISA_SCALAR)[2]  # the invalid MC left the derived one
    assert "ignoring CLLM_GEMM_MC=abc" in r.stderr
