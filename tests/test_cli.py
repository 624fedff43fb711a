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


def test_generate_prompt_sources_stop_samples_and_verbose(ckpt, tmp_path):
    base = ["generate", ckpt, "-n", "24", "-t", "0.9", "-s", "7"]
    a = run(base + ["-p", "def "])
    pf = tmp_path / "prompt.txt"
    pf.write_text("def ")
    assert run(base + ["--prompt-file", str(pf)]).stdout == a.stdout
    r = subprocess.run([sys.executable, "-m", "cllm"] + base + ["-p", "-"], input="def ", capture_output=True,
                       text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(cllm.__file__)))
    assert r.returncode == 0 and r.stdout == a.stdout
    text = a.stdout[len("def "):-1]
    stop = text[3:5]
    if stop.strip():
        s = run(base + ["-p", "def ", "--stop", stop, "--stop", "@@never@@"])
        assert s.stdout == "def " + text[:text.index(stop)] + "\n"
    two = run(base + ["-p", "def ", "--num-samples", "2"])
    first, second = two.stdout.split("\n" + "-" * 40 + "\n")
    assert first == a.stdout and second.startswith("def ")
    v = run(base + ["-p", "def ", "-v"])
    assert v.returncode == 0 and "time to first token" in v.stderr and "tokens/s" in v.stderr
    nh = run(base + ["-p", "def ", "--no-heal"])
    assert nh.returncode == 0 and nh.stdout.startswith("def ")


def test_quantize_generate_and_eval(ckpt, code_corpus, tmp_path):
    q = str(tmp_path / "q8")
    r = run(["quantize", ckpt, q, "--dtype", "int8"])
    assert r.returncode == 0, r.stderr
    a = run(["generate", q, "-p", "def ", "-n", "16", "-t", "0"])
    b = run(["generate", ckpt, "-p", "def ", "-n", "16", "-t", "0", "--dtype", "int8"])
    assert a.returncode == 0 and a.stdout == b.stdout
    outs = {}
    for src, dt in ((ckpt, "fp32"), (ckpt, "bf16"), (q, "int8")):
        e = run(["eval", src, code_corpus, "--dtype", dt, "--max-bytes", "20000", "-q"])
        assert e.returncode == 0, e.stderr
        outs[dt] = float(e.stdout.split("nats/token, ")[1].split(" bits/byte")[0])
    assert abs(outs["bf16"] / outs["fp32"] - 1) < 0.01 and abs(outs["int8"] / outs["fp32"] - 1) < 0.03
    bad = run(["generate", q, "--dtype", "fp32", "-p", "x"])
    assert bad.returncode == 2 and "int8" in bad.stderr and "Traceback" not in bad.stderr
