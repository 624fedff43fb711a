"""BF16 kernels: FP32 <-> BF16 conversion and the BF16 x BF16 -> FP32 GEMM.

Conversion is checked bit-exactly against an independent numpy
round-to-nearest-even (plus NaN, Inf, overflow, denormal and tie cases), on
every ISA the CPU has. The GEMM kernels (AVX512-BF16, AMX-BF16 and its
emulated build, which runs on any CPU) are checked
against the scalar reference kernel on ragged shapes (odd K, M/N not
multiples of the register block, several cache blocks, every transpose,
FP32 or BF16 operands, alpha/beta/bias): both multiply the same BF16-rounded
values exactly and accumulate in FP32, so they differ only by summation
order: |C - ref| <= 1e-5 * sum_k |a_k b_k| (+1e-30). Against an FP32 GEMM
the difference is BF16 rounding of the inputs: <= 2^-7 * sum_k |a_k b_k|.
Kernels the CPU lacks are skipped with the reason.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pytest

from cllm._cllm import ffi, lib

def _features() -> dict:
    v = [ffi.new("int *") for _ in range(4)]
    assert lib.cllm_cpu_matrix_features(*v) == 0
    return dict(zip(["avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"], (x[0] for x in v)))


FEAT = _features()
_A2, _A5 = ffi.new("int *"), ffi.new("int *")
lib.cllm_cpu_detect(_A2, _A5)
CONVERT_ISAS = [lib.CLLM_ISA_SCALAR] + ([lib.CLLM_ISA_AVX2] if _A2[0] else []) + (
    [lib.CLLM_ISA_AVX512] if _A5[0] else [])

KERNELS = [
    pytest.param(lib.CLLM_BF16_KERNEL_AVX512, id="avx512_bf16", marks=pytest.mark.skipif(
        not FEAT["avx512_bf16"], reason="CPU lacks AVX512_BF16 (vdpbf16ps)")),
    pytest.param(lib.CLLM_BF16_KERNEL_AMX, id="amx_bf16", marks=pytest.mark.skipif(
        not FEAT["amx_bf16"], reason="AMX-BF16 not usable here (CPU, XCR0 tile state or OS permission)")),
    # the AMX kernel's source on the tile model (any CPU; tests/test_amx.py)
    pytest.param(lib.CLLM_BF16_KERNEL_AMX_EMUL, id="amx_emul"),
]


def ref_bf16(x: np.ndarray) -> np.ndarray:
    """Independent round-to-nearest-even FP32 -> BF16 bits (uint16)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def bf16_to_f32(h: np.ndarray) -> np.ndarray:
    return (h.astype(np.uint32) << 16).view(np.float32)


def convert(isa: int, x: np.ndarray, to_bf16: bool) -> np.ndarray:
    out = np.empty(x.shape, np.uint16 if to_bf16 else np.float32)
    rc = lib.cllm_convert_bf16(isa, int(to_bf16), ffi.from_buffer(x), ffi.from_buffer(out), x.size)
    assert rc == 0, ffi.string(lib.cllm_last_error())
    return out


def _special_values() -> np.ndarray:
    bits = np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001,
                     0x7F800001, 0x7FBFFFFF, 0x7F7FFFFF, 0xFF7FFFFF, 0x3F808000, 0x3F818000,
                     0x3F808001, 0x3F807FFF, 0x00000001, 0x00008000, 0x00018000, 0x007FFFFF,
                     0x80008000, 0x7F7F8000, 0x7F7F7FFF], dtype=np.uint32)
    return bits.view(np.float32)


@pytest.mark.parametrize("isa", CONVERT_ISAS)
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 33, 1000])
def test_convert_matches_rne(isa: int, n: int) -> None:
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * np.exp(rng.uniform(-40, 40, n))).astype(np.float32)
    sp = _special_values()
    x[: min(n, sp.size)] = sp[: min(n, sp.size)]
    h = convert(isa, x, True)
    np.testing.assert_array_equal(h, ref_bf16(x))
    back = convert(isa, h, False)
    np.testing.assert_array_equal(back.view(np.uint32), h.astype(np.uint32) << 16)


def test_convert_special_cases() -> None:
    x = _special_values()
    h = convert(lib.CLLM_ISA_SCALAR, x, True)
    f = bf16_to_f32(h)
    assert np.isnan(f[4]) and np.isnan(f[5]) and np.isnan(f[6]) and np.isnan(f[7])  # NaN never -> Inf
    assert f[2] == np.inf and f[3] == -np.inf
    assert f[8] == np.inf and f[9] == -np.inf           # above max bf16 -> Inf
    assert h[10] == 0x3F80 and h[11] == 0x3F82          # ties to even (down / up)
    assert h[12] == 0x3F81 and h[13] == 0x3F80          # just above / below the tie
    assert h[14] == 0 and h[15] == 0 and h[16] == 2     # denormals round too (no DAZ)


def test_convert_rejects_bad_args() -> None:
    x = np.zeros(4, np.float32)
    assert lib.cllm_convert_bf16(7, 1, ffi.from_buffer(x), ffi.from_buffer(x), 4) == lib.CLLM_ERR_INVALID
    assert lib.cllm_convert_bf16(lib.CLLM_ISA_SCALAR, 1, ffi.NULL, ffi.from_buffer(x), 4) == lib.CLLM_ERR_INVALID


# ------------------------------------------------------------------ GEMM
def gemm_bf16(kernel: int, ta: bool, tb: bool, A: np.ndarray, B: np.ndarray, C: np.ndarray,
              alpha: float = 1.0, beta: float = 0.0, bias: Optional[np.ndarray] = None) -> int:
    M, N = C.shape
    K = A.shape[0] if ta else A.shape[1]
    dt = lambda X: lib.CLLM_DTYPE_BF16 if X.dtype == np.uint16 else lib.CLLM_DTYPE_F32  # noqa: E731
    ptr = lambda X: ffi.cast("void *", X.ctypes.data)  # noqa: E731  (row-strided views allowed)
    return lib.cllm_gemm_bf16(kernel, int(ta), int(tb), M, N, K, alpha, ptr(A), dt(A), A.strides[0] // A.itemsize,
                              ptr(B), dt(B), B.strides[0] // B.itemsize, beta,
                              ffi.cast("float *", ptr(C)), C.strides[0] // 4,
                              ffi.NULL if bias is None else ffi.cast("float *", ptr(bias)))


def _operand(rng: np.random.Generator, rows: int, cols: int, bf16: bool) -> np.ndarray:
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    return ref_bf16(x).reshape(rows, cols) if bf16 else x


def _as_f64(X: np.ndarray) -> np.ndarray:
    return (bf16_to_f32(X) if X.dtype == np.uint16 else bf16_to_f32(ref_bf16(X)).reshape(X.shape)).astype(np.float64)


SHAPES = [(1, 1, 1), (7, 5, 3), (6, 64, 2), (13, 70, 31), (33, 33, 33), (65, 129, 95), (200, 97, 769),
          (37, 300, 1537), (5, 17, 1)]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_gemm_bf16_vs_reference(kernel: int, ta: int, tb: int, M: int, N: int, K: int) -> None:
    rng = np.random.default_rng(M * 131 + N * 7 + K)
    for a_bf, b_bf in [(False, False), (True, True), (False, True), (True, False)]:
        A = _operand(rng, K if ta else M, M if ta else K, a_bf)
        B = _operand(rng, N if tb else K, K if tb else N, b_bf)
        bias = rng.standard_normal(N).astype(np.float32)
        C0 = rng.standard_normal((M, N)).astype(np.float32)
        got, ref = C0.copy(), C0.copy()
        assert gemm_bf16(kernel, ta, tb, A, B, got, 0.5, 0.25, bias) == 0, ffi.string(lib.cllm_last_error())
        assert gemm_bf16(lib.CLLM_BF16_KERNEL_SCALAR, ta, tb, A, B, ref, 0.5, 0.25, bias) == 0
        a64, b64 = _as_f64(A), _as_f64(B)
        opa, opb = (a64.T if ta else a64), (b64.T if tb else b64)
        scale = 0.5 * (np.abs(opa) @ np.abs(opb)) + 0.25 * np.abs(C0) + np.abs(bias)
        assert np.all(np.abs(got - ref) <= 1e-5 * scale + 1e-30), (a_bf, b_bf)
        exact = 0.5 * (opa @ opb) + 0.25 * C0 + bias
        assert np.all(np.abs(ref - exact) <= 1e-5 * scale + 1e-30)
        if not a_bf:  # an FP32 A is rounded while packed: the same bits as rounding it first
            pre = C0.copy()
            Ab = ref_bf16(A).reshape(A.shape)
            assert gemm_bf16(kernel, ta, tb, Ab, B, pre, 0.5, 0.25, bias) == 0
            assert np.array_equal(pre, got)


@pytest.mark.parametrize("kernel", KERNELS)
def test_gemm_bf16_strided_and_fp32_tolerance(kernel: int) -> None:
    rng = np.random.default_rng(3)
    M, N, K = 50, 90, 301
    Abig = rng.standard_normal((M, K + 9)).astype(np.float32)
    Bbig = rng.standard_normal((K, N + 5)).astype(np.float32)
    A, B = Abig[:, :K], Bbig[:, :N]
    Cbig = np.full((M, N + 3), 7.0, np.float32)
    assert gemm_bf16(kernel, 0, 0, A, B, Cbig[:, :N]) == 0
    assert np.all(Cbig[:, N:] == 7.0)  # ldc padding untouched
    exact = A.astype(np.float64) @ B.astype(np.float64)
    scale = np.abs(A).astype(np.float64) @ np.abs(B).astype(np.float64)
    assert np.all(np.abs(Cbig[:, :N] - exact) <= 2.0 ** -7 * scale)


@pytest.mark.parametrize("kernel", KERNELS)
def test_gemm_bf16_beta_zero_ignores_nan_and_k0(kernel: int) -> None:
    rng = np.random.default_rng(1)
    A = rng.standard_normal((9, 4)).astype(np.float32)
    B = rng.standard_normal((4, 20)).astype(np.float32)
    C = np.full((9, 20), np.nan, np.float32)
    assert gemm_bf16(kernel, 0, 0, A, B, C) == 0
    assert np.all(np.isfinite(C))
    bias = np.arange(20, dtype=np.float32)
    C2 = np.ones((9, 20), np.float32)
    assert lib.cllm_gemm_bf16(kernel, 0, 0, 9, 20, 0, 1.0, ffi.from_buffer(A), 0, 4, ffi.from_buffer(B), 0, 20,
                              2.0, ffi.cast("float *", ffi.from_buffer(C2)), 20,
                              ffi.cast("float *", ffi.from_buffer(bias))) == 0
    np.testing.assert_array_equal(C2, np.broadcast_to(2.0 + bias[None, :], C2.shape))


def test_gemm_bf16_validation() -> None:
    A = np.zeros((4, 4), np.float32)
    C = np.zeros((4, 4), np.float32)
    p, c = ffi.from_buffer(A), ffi.cast("float *", ffi.from_buffer(C))
    S = lib.CLLM_BF16_KERNEL_SCALAR
    assert lib.cllm_gemm_bf16(S, 0, 0, 4, 4, 4, 1.0, p, 0, 3, p, 0, 4, 0.0, c, 4, ffi.NULL) == lib.CLLM_ERR_INVALID
    assert lib.cllm_gemm_bf16(S, 0, 0, -1, 4, 4, 1.0, p, 0, 4, p, 0, 4, 0.0, c, 4, ffi.NULL) == lib.CLLM_ERR_INVALID
    assert lib.cllm_gemm_bf16(S, 0, 0, 4, 4, 4, 1.0, p, 5, 4, p, 0, 4, 0.0, c, 4, ffi.NULL) == lib.CLLM_ERR_INVALID
    assert lib.cllm_gemm_bf16(9, 0, 0, 4, 4, 4, 1.0, p, 0, 4, p, 0, 4, 0.0, c, 4, ffi.NULL) == lib.CLLM_ERR_INVALID
    assert lib.cllm_gemm_bf16(S, 0, 0, 4, 4, 4, 1.0, ffi.NULL, 0, 4, p, 0, 4, 0.0, c, 4, ffi.NULL) == lib.CLLM_ERR_INVALID
    if not FEAT["amx_bf16"]:
        rc = lib.cllm_gemm_bf16(lib.CLLM_BF16_KERNEL_AMX, 0, 0, 4, 4, 4, 1.0, p, 0, 4, p, 0, 4, 0.0, c, 4, ffi.NULL)
        assert rc == lib.CLLM_ERR_UNSUPPORTED


def test_features_consistent_with_cpuinfo() -> None:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    if "avx512_bf16" in flags.split():
        assert FEAT["avx512_bf16"] == 1
    if "amx_bf16" not in flags.split():
        assert FEAT["amx_bf16"] == 0
