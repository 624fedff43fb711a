"""Tests of the kissing-sphere thread pool (csrc/runtime/spheres.c) through cffi.

The task-running entry point (``cllm_spheres_run``) is internal to the C core;
it is exercised by the C driver in ``tests/c`` (normal, ThreadSanitizer and
ASan/UBSan builds), which the last test here builds and runs.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import time
from typing import Iterator, List

import pytest

from cllm._cllm import ffi, lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _threads_of_this_process() -> int:
    """Number of OS threads in this process (from /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError("no Threads: line in /proc/self/status")


def _error() -> str:
    return ffi.string(lib.cllm_last_error()).decode("utf-8", "replace")


def _new(threads: int):
    out = ffi.new("cllm_spheres **")
    rc = lib.cllm_spheres_new(threads, out)
    assert rc == 0, f"cllm_spheres_new({threads}) -> {rc}: {_error()}"
    assert out[0] != ffi.NULL
    return out[0]


def _free(pool) -> None:
    assert lib.cllm_spheres_free(pool) == 0, _error()


@pytest.fixture
def pool4() -> Iterator:
    pool = _new(4)
    yield pool
    _free(pool)


def _count(pool) -> int:
    n = ffi.new("int *")
    assert lib.cllm_spheres_count(pool, n) == 0, _error()
    return n[0]


def _stats(pool, cap: int) -> List[dict]:
    buf = ffi.new("cllm_sphere_stats[]", max(cap, 1))
    n = ffi.new("int *")
    assert lib.cllm_spheres_stats(pool, buf, cap, n) == 0, _error()
    return [
        {
            "sphere": buf[i].sphere,
            "parent": buf[i].parent,
            "tasks": buf[i].tasks,
            "busy_seconds": buf[i].busy_seconds,
            "busy_fraction": buf[i].busy_fraction,
        }
        for i in range(min(n[0], cap))
    ]


@pytest.mark.parametrize("threads", [2, 4])
def test_idle_pool_uses_no_cpu(threads: int) -> None:
    pool = _new(threads)
    try:
        assert _threads_of_this_process() >= threads  # the workers exist
        time.sleep(0.05)  # let the workers reach their blocking wait
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(1.0)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        assert wall >= 0.99
        # process_time covers every thread of the process, workers included
        assert cpu < 0.05, f"idle pool of {threads} used {cpu:.3f} s CPU in {wall:.2f} s"
    finally:
        _free(pool)


def test_threads_zero_is_affinity_mask() -> None:
    pool = _new(0)
    try:
        assert _count(pool) == len(os.sched_getaffinity(0))
    finally:
        _free(pool)
    n = ffi.new("int *")
    assert lib.cllm_cpu_count(n) == 0 and n[0] == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("threads", [1, 2, 3, 13, 14, 25, 157, 200])
def test_stats_tree_shape(threads: int) -> None:
    before = _threads_of_this_process()
    pool = _new(threads)
    try:
        assert _count(pool) == threads
        assert _threads_of_this_process() == before + threads - 1  # caller is sphere 0
        stats = _stats(pool, threads + 5)
        assert len(stats) == threads
        for i, s in enumerate(stats):
            assert s["sphere"] == i
            assert s["parent"] == (-1 if i == 0 else (i - 1) // 12)
            assert s["tasks"] == 0 and s["busy_seconds"] == 0.0 and s["busy_fraction"] == 0.0
        # fan-out 12: nobody has more than 12 children; the control sphere has min(12, n-1)
        children = [0] * threads
        for s in stats[1:]:
            children[s["parent"]] += 1
        assert max(children) <= 12
        assert children[0] == min(12, threads - 1)
        # a smaller cap fills only cap entries but still reports the count
        buf = ffi.new("cllm_sphere_stats[]", 1)
        n = ffi.new("int *")
        assert lib.cllm_spheres_stats(pool, buf, 1, n) == 0 and n[0] == threads
        assert buf[0].sphere == 0 and buf[0].parent == -1
        assert lib.cllm_spheres_reset_stats(pool) == 0
    finally:
        _free(pool)
    assert _threads_of_this_process() == before  # free joined every worker


def test_create_free_cycles() -> None:
    before = _threads_of_this_process()
    for k in range(200):
        pool = _new(1 + k % 9)
        _free(pool)
    assert _threads_of_this_process() == before


@pytest.mark.parametrize("threads", [-1, -1000, 4097, 100000, 2**31 - 1])
def test_bad_thread_counts(threads: int) -> None:
    out = ffi.new("cllm_spheres **")
    rc = lib.cllm_spheres_new(threads, out)
    assert rc == lib.CLLM_ERR_INVALID
    assert out[0] == ffi.NULL
    msg = _error()
    assert "threads" in msg and str(threads) in msg


def test_null_arguments(pool4) -> None:
    n = ffi.new("int *")
    assert lib.cllm_spheres_new(2, ffi.NULL) == lib.CLLM_ERR_INVALID
    assert _error()
    assert lib.cllm_spheres_count(ffi.NULL, n) == lib.CLLM_ERR_INVALID
    assert lib.cllm_spheres_count(pool4, ffi.NULL) == lib.CLLM_ERR_INVALID
    assert lib.cllm_spheres_stats(ffi.NULL, ffi.NULL, 0, n) == lib.CLLM_ERR_INVALID
    assert lib.cllm_spheres_stats(pool4, ffi.NULL, 4, n) == lib.CLLM_ERR_INVALID
    assert lib.cllm_spheres_stats(pool4, ffi.NULL, -1, n) == lib.CLLM_ERR_INVALID
    assert lib.cllm_spheres_stats(pool4, ffi.NULL, 0, n) == 0 and n[0] == 4
    assert lib.cllm_spheres_reset_stats(ffi.NULL) == lib.CLLM_ERR_INVALID
    assert lib.cllm_spheres_free(ffi.NULL) == 0


def test_c_driver_normal_tsan_asan() -> None:
    """Build tests/c/test_spheres.c three ways (plain, TSan, ASan+UBSan) and run them."""
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", str(ROOT / "tests" / "c" / "run.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "ThreadSanitizer" not in out and "AddressSanitizer" not in out and "runtime error" not in out
    assert out.count("OK: 0 failure(s)") == 3, out[-3000:]
    assert "all C pool checks passed (normal tsan asan)" in out
    assert time.monotonic() - t0 < 900
