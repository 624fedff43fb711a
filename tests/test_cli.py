"""The command line: `cllm` and `python -m cllm` behave the same."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import cllm


def run(args, exe=None):
    cmd = [exe] if exe else [sys.executable, "-m", "cllm"]
    # run from the directory holding the imported package (installed or in-place build)
    return subprocess.run(cmd + args, capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(cllm.__file__)))


@pytest.fixture(scope="module")
def ckpt(code_corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli") / "run")
    r = run(["train", code_corpus, "--out", out, "--max-steps", "40", "--batch-size", "4", "--seq-len", "32",
             "--vocab-size", "257", "--embed-dim", "32", "--num-layers", "1", "--num-heads", "2",
             "--threads", "2", "--seed", "3", "-q", "--sample-tokens", "20"])
    assert r.returncode == 0, r.stderr
    assert "val loss" in r.stdout and "sample:" in r.stdout and "tokens/s" in r.stdout
    return out


def test_generate_cli_reproducible(ckpt):
    a = run(["generate", ckpt, "-p", "def ", "-n", "20", "-t", "0.8", "-k", "10", "-s", "5"])
    b = run(["generate", ckpt, "-p", "def ", "-n", "20", "-t", "0.8", "-k", "10", "-s", "5"])
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("def ")
    m = cllm.load(ckpt)
    assert a.stdout == "def " + m.generate("def ", max_new_tokens=20, temperature=0.8, top_k=10, seed=5) + "\n"


@pytest.mark.skipif(shutil.which("cllm") is None, reason="package not installed (no `cllm` entry point)")
def test_entry_point_matches_module(ckpt):
    args = ["generate", ckpt, "-p", "x = ", "-n", "12", "-t", "0", "--top-p", "0.9"]
    assert run(args).stdout == run(args, exe=shutil.which("cllm")).stdout
    assert run(["info", "--system"]).stdout == run(["info", "--system"], exe=shutil.which("cllm")).stdout


def test_info(ckpt):
    r = run(["info", "--system"])
    assert r.returncode == 0 and "kernel path" in r.stdout
    g = cllm.gemm_blocking()
    assert f"MC={g['mc']} KC={g['kc']} NC={g['nc']}" in r.stdout and "caches: L1d" in r.stdout
    r = run(["info", ckpt])
    assert r.returncode == 0 and "params=" in r.stdout
