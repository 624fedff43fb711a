"""The AMX-BF16 GEMM micro-kernel, checked on every host.

The kernel's source (csrc/gemm/gemm_amx_body.h) is built twice: on the real
tile instructions (CLLM_BF16_KERNEL_AMX, runs only where CPUID, XCR0 and the
OS grant AMX) and on a plain-C model of them (CLLM_BF16_KERNEL_AMX_EMUL,
csrc/gemm/amx_model.c, with portable packers: runs anywhere). The emulated
build runs the same tile loads, strides, K loop and tile indices, so these
tests check the kernel's indexing and arithmetic on hosts without AMX:

* bit for bit against an independent numpy model of TDPBF16PS's documented
  accumulation order (per 16x16 tile element and K step of 32: the even and
  the odd products summed separately from zero, in K order, then
  C += even + odd; the driver's K blocks of at most 768 and the epilogue's
  fused multiply-adds on top), with power-of-two alpha / beta so that
  every step is one FP32 rounding numpy can reproduce;
* exactly equal to the scalar reference on integer-valued operands (every
  partial sum is exact, so any order gives the same value): a wrong index,
  stride or edge shows up as a wrong number, not as a rounding difference;
* against the scalar reference on random operands within the bound the two
  orders imply: both sum the same exact BF16 products (an 8-bit by 8-bit
  significand product fits FP32) with at most n = K + 20 roundings on any
  term's path (the reference K + 3; the tile order at most 16 in a pair
  chain, 1 for even + odd, one per K step of 32 and 2 per K block), so
  each differs from the exact value by at most gamma_n * S, with
  gamma_n = n u / (1 - n u), u = 2^-24 and S = |alpha| sum |a_k b_k| +
  |bias| + |beta C|: |C - ref| <= 2 gamma_n S. Any order of the products
  inside a K block keeps every term's path under K + 20 roundings for the
  at most three K blocks here, so the bound is also the test of the real
  kernel, whose hardware order Intel does not promise beyond the
  pseudocode;
* the portable packers against the packed layout built in numpy, and byte
  for byte against the AVX-512 packers the real kernel uses where AVX-512
  runs (skipped, saying so, elsewhere).

The tile model itself (data movement on ragged tile shapes, TDPBF16PS on a
hand-checked product, every configuration and operand check that faults on
the hardware) has a C driver, tests/c/test_amx_model.c, run here plain and
under ASan + UBSan. Where real AMX is usable, the same GEMM tests run the
real kernel as well.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import pytest

from cllm._cllm import ffi, lib
from test_bf16 import FEAT, _operand, bf16_to_f32, gemm_bf16, ref_bf16

ROOT = Path(__file__).resolve().parent.parent
EMUL = lib.CLLM_BF16_KERNEL_AMX_EMUL
_A2, _A5 = ffi.new("int *"), ffi.new("int *")
lib.cllm_cpu_detect(_A2, _A5)
HAS_AVX512 = bool(_A5[0])

#: the emulated kernel everywhere, the real one where AMX is usable
AMX_KERNELS = [
    pytest.param(EMUL, id="amx_emul"),
    pytest.param(lib.CLLM_BF16_KERNEL_AMX, id="amx_bf16", marks=pytest.mark.skipif(
        not FEAT["amx_bf16"], reason="AMX-BF16 not usable here (CPU, XCR0 tile state or OS permission)")),
]

#: M, N, K: one element; edges below, at and above the 32 x 32 register
#: block and the 32-deep K step (odd K pairs its last element with a zero);
#: several 192-row M blocks; two and three 768-deep K blocks
SHAPES = [(1, 1, 1), (5, 17, 2), (31, 33, 31), (32, 32, 32), (33, 31, 33), (16, 48, 64), (47, 65, 95),
          (200, 40, 97), (37, 70, 800), (20, 45, 1537)]

KC, KQ = 768, 32  # the driver's K block cap (BGEMM_KC) and the AMX K step


def _k_blocks(K: int) -> List[Tuple[int, int]]:
    """The driver's K blocks (start, length): bgemm_block(K, KC, KQ)."""
    nb = (K + KC - 1) // KC
    b = (K + nb - 1) // nb
    b = min((b + KQ - 1) // KQ * KQ, KC)
    return [(p, min(b, K - p)) for p in range(0, K, b)]


def _bf16_values(X: np.ndarray) -> np.ndarray:
    """X's values after the BF16 rounding the GEMM applies, as float32."""
    return bf16_to_f32(X) if X.dtype == np.uint16 else bf16_to_f32(ref_bf16(X)).reshape(X.shape)


def tile_order_model(opa: np.ndarray, opb: np.ndarray, alpha: float, beta: float, C0: np.ndarray,
                     bias: Optional[np.ndarray]) -> np.ndarray:
    """C as the AMX kernel computes it, in float32 numpy, one rounding per
    step (products of BF16 values are exact in float32): per K block the
    tile accumulators start at zero; per K step of 32, even and odd products
    are summed separately from zero, then acc += even + odd; the epilogue
    rounds alpha * acc + bias once and then cs * C + that once (cs = beta
    on the first K block, 1 after; C is not read when cs is 0)."""
    M, K = opa.shape
    N = opb.shape[1]
    f = np.float32
    C = C0.astype(f).copy()
    blocks = _k_blocks(K)
    for bi, (p0, kc) in enumerate(blocks):
        kcp = (kc + KQ - 1) // KQ * KQ
        a = np.zeros((M, kcp), f)
        b = np.zeros((kcp, N), f)
        a[:, :kc] = opa[:, p0:p0 + kc]
        b[:kc] = opb[p0:p0 + kc]
        acc = np.zeros((M, N), f)
        for k0 in range(0, kcp, KQ):
            even = np.zeros((M, N), f)
            odd = np.zeros((M, N), f)
            for q in range(KQ // 2):
                k = k0 + 2 * q
                even = even + a[:, k, None] * b[None, k, :]
                odd = odd + a[:, k + 1, None] * b[None, k + 1, :]
            acc = acc + (even + odd)
        last = bi == len(blocks) - 1
        add = bias[None, :].astype(f) if (last and bias is not None) else f(0.0)
        r = f(alpha) * acc + add
        cs = beta if bi == 0 else 1.0
        C = f(cs) * C + r if cs != 0.0 else r
    return C


def _case(rng: np.random.Generator, M: int, N: int, K: int, ta: int, tb: int, a_bf: bool, b_bf: bool,
          integer: bool = False) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A, B (stored transposed when ta / tb), C0 and bias; integer-valued
    (small enough that every sum is exact) when integer."""
    if integer:
        def draw(r: int, c: int, bf: bool) -> np.ndarray:
            x = rng.integers(-4, 5, (r, c)).astype(np.float32)
            return ref_bf16(x).reshape(r, c) if bf else x
        A, B = draw(K if ta else M, M if ta else K, a_bf), draw(N if tb else K, K if tb else N, b_bf)
        return A, B, rng.integers(-8, 9, (M, N)).astype(np.float32), rng.integers(-8, 9, N).astype(np.float32)
    A = _operand(rng, K if ta else M, M if ta else K, a_bf)
    B = _operand(rng, N if tb else K, K if tb else N, b_bf)
    return A, B, rng.standard_normal((M, N)).astype(np.float32), rng.standard_normal(N).astype(np.float32)


def _ops(A: np.ndarray, B: np.ndarray, ta: int, tb: int) -> Tuple[np.ndarray, np.ndarray]:
    a, b = _bf16_values(A), _bf16_values(B)
    return (a.T if ta else a), (b.T if tb else b)


def _run(kernel: int, ta: int, tb: int, A: np.ndarray, B: np.ndarray, C0: np.ndarray, alpha: float,
         beta: float, bias: Optional[np.ndarray]) -> np.ndarray:
    C = C0.copy()
    rc = gemm_bf16(kernel, ta, tb, A, B, C, alpha, beta, bias)
    assert rc == 0, ffi.string(lib.cllm_last_error()).decode()
    return C


@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_emulated_kernel_bit_exact_vs_tile_order_model(ta: int, tb: int, M: int, N: int, K: int) -> None:
    rng = np.random.default_rng(M * 1009 + N * 31 + K + 7 * ta + 3 * tb)
    for (a_bf, b_bf), (alpha, beta, use_bias) in zip(
            [(False, False), (True, True), (False, True), (True, False)],
            [(0.5, 0.25, True), (1.0, 0.0, False), (2.0, 1.0, True), (0.25, 0.0, True)]):
        A, B, C0, bias = _case(rng, M, N, K, ta, tb, a_bf, b_bf)
        b = bias if use_bias else None
        got = _run(EMUL, ta, tb, A, B, C0, alpha, beta, b)
        opa, opb = _ops(A, B, ta, tb)
        want = tile_order_model(opa, opb, alpha, beta, C0, b)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32),
                                      err_msg=f"a_bf16={a_bf} b_bf16={b_bf} alpha={alpha} beta={beta}")


@pytest.mark.parametrize("kernel", AMX_KERNELS)
@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_amx_kernel_exact_on_integer_operands(kernel: int, ta: int, tb: int, M: int, N: int, K: int) -> None:
    rng = np.random.default_rng(M * 7 + N * 131 + K)
    for a_bf, b_bf in [(False, False), (True, True), (False, True), (True, False)]:
        A, B, C0, bias = _case(rng, M, N, K, ta, tb, a_bf, b_bf, integer=True)
        for alpha, beta, b in [(0.5, 0.25, bias), (1.0, 0.0, None), (-3.0, 2.0, bias)]:
            got = _run(kernel, ta, tb, A, B, C0, alpha, beta, b)
            ref = _run(lib.CLLM_BF16_KERNEL_SCALAR, ta, tb, A, B, C0, alpha, beta, b)
            np.testing.assert_array_equal(got, ref)


def _order_bound(K: int) -> float:
    """2 gamma_n for n = K + 20 roundings (see the module docstring)."""
    nu = (K + 20) * 2.0 ** -24
    return 2.0 * nu / (1.0 - nu)


@pytest.mark.parametrize("kernel", AMX_KERNELS)
@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 1)])
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_amx_kernel_vs_reference_within_order_bound(kernel: int, ta: int, tb: int, M: int, N: int, K: int) -> None:
    rng = np.random.default_rng(M + N * 3 + K * 5)
    for a_bf, b_bf in [(False, True), (True, False)]:
        A, B, C0, bias = _case(rng, M, N, K, ta, tb, a_bf, b_bf)
        alpha, beta = 0.7, -1.3
        got = _run(kernel, ta, tb, A, B, C0, alpha, beta, bias)
        ref = _run(lib.CLLM_BF16_KERNEL_SCALAR, ta, tb, A, B, C0, alpha, beta, bias)
        opa, opb = _ops(A, B, ta, tb)
        S = abs(alpha) * (np.abs(opa).astype(np.float64) @ np.abs(opb)) + np.abs(beta * C0) + np.abs(bias)
        assert np.all(np.abs(got.astype(np.float64) - ref) <= _order_bound(K) * S)


def test_emulated_kernel_treats_denormal_inputs_as_zero() -> None:
    """TDPBF16PS reads denormal BF16 inputs as zero (DAZ) and flushes
    denormal sums (FTZ); the scalar reference does neither."""
    A = np.full((3, 2), 0x0001, np.uint16)  # the smallest denormal BF16
    A[1] = ref_bf16(np.array([1.0, 1.0], np.float32))
    B = ref_bf16(np.full((2, 4), 1.0, np.float32)).reshape(2, 4)
    got = _run(EMUL, 0, 0, A, B, np.zeros((3, 4), np.float32), 1.0, 0.0, None)
    ref = _run(lib.CLLM_BF16_KERNEL_SCALAR, 0, 0, A, B, np.zeros((3, 4), np.float32), 1.0, 0.0, None)
    assert np.all(got[0] == 0.0) and np.all(got[2] == 0.0) and np.all(got[1] == 2.0)
    assert np.all(ref[0] > 0.0)  # the reference keeps the denormals
    tiny = ref_bf16(np.array([[2.0 ** -70, 2.0 ** -70]], np.float32)).reshape(1, 2)
    assert np.all(_run(EMUL, 0, 0, tiny, tiny.T.copy(), np.zeros((1, 1), np.float32), 1.0, 0.0, None) == 0.0)


def test_emulated_kernel_runs_on_every_host_and_only_when_asked() -> None:
    """AMX_EMUL is the last kernel id and usable everywhere; AUTO resolves
    through cllm_bf16_kernel_best, which returns only AMX, AVX512 or
    SCALAR (csrc/gemm/gemm_bf16.c)."""
    assert lib.cllm_gemm_bf16(EMUL + 1, 0, 0, 1, 1, 1, 1.0, ffi.NULL, 0, 1, ffi.NULL, 0, 1, 0.0, ffi.NULL, 1,
                              ffi.NULL) == lib.CLLM_ERR_INVALID
    x = np.ones((2, 3), np.float32)
    C = np.zeros((2, 2), np.float32)
    assert gemm_bf16(EMUL, 0, 1, x, x, C) == 0
    np.testing.assert_array_equal(C, np.full((2, 2), 3.0, np.float32))


# ----------------------------------------------------------------- packers
def pack(impl: int, side: int, trans: int, X: np.ndarray, r0: int, c0: int, rows: int, cols: int, kcp: int,
         block: int) -> np.ndarray:
    """cllm_bgemm_pack into a fresh buffer (filled with 0xAAAA first, so
    unwritten elements show)."""
    n = (-(-rows // block) * block if side == 0 else -(-cols // block) * block) * kcp
    dst = np.full(n, 0xAAAA, np.uint16)
    dt = lib.CLLM_DTYPE_BF16 if X.dtype == np.uint16 else lib.CLLM_DTYPE_F32
    rc = lib.cllm_bgemm_pack(impl, side, trans, ffi.cast("void *", X.ctypes.data), dt, X.strides[0] // X.itemsize,
                             r0, c0, rows, cols, kcp, block, ffi.cast("uint16_t *", dst.ctypes.data))
    assert rc == 0, ffi.string(lib.cllm_last_error()).decode()
    return dst


def expected_panel(side: int, trans: int, X: np.ndarray, r0: int, c0: int, rows: int, cols: int, kcp: int,
                   block: int) -> np.ndarray:
    """The packed layout of gemm_bf16_impl.h, built in numpy."""
    h = X if X.dtype == np.uint16 else ref_bf16(X).reshape(X.shape)
    op = h.T if trans else h
    blk = op[r0:r0 + rows, c0:c0 + cols]
    if side == 0:  # rows padded to slivers of `block`, K (columns) to kcp
        out = np.zeros((-(-rows // block) * block, kcp), np.uint16)
        out[:rows, :cols] = blk
        return out.ravel()
    ncp = -(-cols // block) * block  # B: K = rows, padded to kcp
    full = np.zeros((kcp, ncp), np.uint16)
    full[:rows, :cols] = blk
    # [pair p][e][sliver t][column j] -> [t][p][j][e]
    return full.reshape(kcp // 2, 2, ncp // block, block).transpose(2, 0, 3, 1).ravel()


PACK_CASES = [  # side, rows, cols, kcp, block
    (0, 1, 1, 32, 32), (0, 33, 70, 96, 32), (0, 6, 31, 32, 6), (0, 17, 40, 40, 6), (0, 64, 100, 128, 32),
    (1, 1, 1, 32, 32), (1, 31, 33, 32, 32), (1, 70, 65, 96, 32), (1, 9, 130, 10, 64), (1, 64, 16, 64, 16),
]


def _pack_source(rng: np.random.Generator, side: int, trans: int, rows: int, cols: int,
                 bf16: bool) -> Tuple[np.ndarray, int, int]:
    """A strided source holding op(X)'s block at an offset, with NaN, Inf,
    denormal and tie values among the normal ones; returns X, r0, c0."""
    r0, c0 = 3, 5
    R, Cc = r0 + rows + 2, c0 + cols + 3
    x = rng.standard_normal((Cc, R) if trans else (R, Cc)).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, 1e-41, -0.0, 1.00390625, 1.01171875, 3.4e38], np.float32)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, min(flat.size, 3 * special.size), replace=False)] = np.resize(special, min(
        flat.size, 3 * special.size))
    big = np.zeros((x.shape[0], x.shape[1] + 4), np.float32)
    big[:, :x.shape[1]] = x
    X = big[:, :x.shape[1]]  # row stride larger than the row
    if bf16:
        hb = np.zeros(big.shape, np.uint16)
        hb[:, :x.shape[1]] = ref_bf16(x).reshape(x.shape)
        X = hb[:, :x.shape[1]]
    return X, r0, c0


def _over_pack_cases(fn: Callable[..., None]) -> Callable[..., None]:
    """Parametrize a packer test over PACK_CASES x transposes x source dtypes."""
    for mark in (pytest.mark.parametrize("side,rows,cols,kcp,block", PACK_CASES),
                 pytest.mark.parametrize("trans", [0, 1]),
                 pytest.mark.parametrize("bf16", [False, True], ids=["f32", "bf16"])):
        fn = mark(fn)
    return fn


@_over_pack_cases
def test_portable_packers_give_the_documented_layout(bf16: bool, trans: int, side: int, rows: int, cols: int,
                                                     kcp: int, block: int) -> None:
    X, r0, c0 = _pack_source(np.random.default_rng(rows * 17 + cols + kcp + side), side, trans, rows, cols, bf16)
    np.testing.assert_array_equal(pack(0, side, trans, X, r0, c0, rows, cols, kcp, block),
                                  expected_panel(side, trans, X, r0, c0, rows, cols, kcp, block))


@pytest.mark.skipif(not HAS_AVX512, reason="no AVX-512 on this CPU: the AVX-512 packers cannot run here "
                                            "(the portable ones are checked against the layout above)")
@_over_pack_cases
def test_portable_packers_match_avx512_byte_for_byte(bf16: bool, trans: int, side: int, rows: int, cols: int,
                                                     kcp: int, block: int) -> None:
    X, r0, c0 = _pack_source(np.random.default_rng(rows * 13 + cols + kcp + side), side, trans, rows, cols, bf16)
    np.testing.assert_array_equal(pack(0, side, trans, X, r0, c0, rows, cols, kcp, block),
                                  pack(1, side, trans, X, r0, c0, rows, cols, kcp, block))


def test_pack_rejects_bad_arguments() -> None:
    x = np.zeros((4, 4), np.float32)
    dst = np.zeros(256, np.uint16)
    p, d = ffi.cast("void *", x.ctypes.data), ffi.cast("uint16_t *", dst.ctypes.data)
    bad = [(2, 0, 0, p, 0, 4, 0, 0, 4, 4, 4, 4, d),     # impl
           (0, 2, 0, p, 0, 4, 0, 0, 4, 4, 4, 4, d),     # side
           (0, 0, 0, p, 9, 4, 0, 0, 4, 4, 4, 4, d),     # dtype
           (0, 0, 0, ffi.NULL, 0, 4, 0, 0, 4, 4, 4, 4, d),
           (0, 0, 0, p, 0, 3, 0, 0, 4, 4, 4, 4, d),     # ld < block's columns
           (0, 0, 0, p, 0, 4, 0, 0, 4, 4, 3, 4, d),     # kcp odd / < kc
           (0, 1, 0, p, 0, 4, 0, 0, 4, 4, 4, 8, d),     # B block not a multiple of 16
           (0, 0, 0, p, 0, 4, 0, 0, 0, 4, 4, 4, d)]     # empty block
    for args in bad:
        assert lib.cllm_bgemm_pack(*args) == lib.CLLM_ERR_INVALID, args
        assert ffi.string(lib.cllm_last_error()).startswith(b"bgemm_pack: ")
    if not HAS_AVX512:
        assert lib.cllm_bgemm_pack(1, 0, 0, p, 0, 4, 0, 0, 4, 4, 4, 4, d) == lib.CLLM_ERR_UNSUPPORTED


# --------------------------------------------------------- the tile model in C
@pytest.mark.parametrize("flags", [["-O2"], ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]],
                         ids=["plain", "asan_ubsan"])
def test_tile_model_c_driver(tmp_path: Path, flags: List[str]) -> None:
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler {cc!r} on PATH to build tests/c/test_amx_model.c")
    exe = tmp_path / "test_amx_model"
    # the driver links its own sanitizers: none preloaded (tests/sanitize.sh) into the compiler or the driver
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    build = subprocess.run([cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", *flags, "-I", str(ROOT / "csrc"),
                            str(ROOT / "tests" / "c" / "test_amx_model.c"), str(ROOT / "csrc" / "gemm" / "amx_model.c"),
                            "-lm", "-o", str(exe)], capture_output=True, text=True, timeout=300, env=env)
    assert build.returncode == 0, build.stderr[-4000:]
    env["ASAN_OPTIONS"] = "detect_leaks=1:halt_on_error=1"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300, env=env)
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "OK: 0 failure(s)" in run.stdout, out[-4000:]
    assert "runtime error" not in out and "AddressSanitizer" not in out
