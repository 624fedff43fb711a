"""Every script under examples/ (and bench/lr_sweep.py) runs as written, at small sizes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX = os.path.join(ROOT, "examples")
TINY = ["--vocab-size", "300", "--embed-dim", "32", "--num-layers", "1", "--seq-len", "32", "--batch-size", "4"]


def run(args, cwd, env=None, timeout=600):
    e = dict(os.environ, PYTHONPATH=ROOT, CLLM_PROGRESS_INTERVAL="3600", **(env or {}))
    r = subprocess.run([sys.executable, *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r.stdout


def test_train_and_sample(code_corpus, tmp_path):
    out = run([os.path.join(EX, "train_and_sample.py"), code_corpus, "--steps", "6", *TINY,
               "--out", str(tmp_path / "run")], cwd=tmp_path)
    assert "tokens/s" in out and out.count("--- sample") == 2
    assert os.path.isfile(tmp_path / "run" / "model.safetensors")


def test_train_and_sample_defaults_to_this_checkout(tmp_path):
    """No PATH: the example trains on the repository it lives in (git-aware corpus)."""
    out = run([os.path.join(EX, "train_and_sample.py"), "--steps", "2", *TINY, "--out", str(tmp_path / "r")],
              cwd=tmp_path)
    assert "files" in out and "--- sample 1" in out


def test_benchmark_isa():
    out = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.join(EX, "benchmark_isa.py"),
               "--benchmark-min-rounds=1", "--benchmark-max-time=0.01", "--benchmark-warmup=off"],
              cwd=ROOT, env={"CLLM_EXAMPLE_SIZE": "tiny"})
    assert "passed" in out and "test_train_step[scalar]" in out


def test_lr_sweep_tiny(code_corpus):
    out = run([os.path.join(ROOT, "bench", "lr_sweep.py"), "--path", code_corpus, "--max-steps", "2",
               "--rates", "1e-3,3e-3", "--threads", "1", "--eval-batches", "1", "-q"], cwd=ROOT)
    assert "| peak learning rate |" in out and "**best**" in out
    assert "| 0.001 |" in out and "| 0.003 |" in out and "CPU:" in out


@pytest.fixture(scope="module")
def base_ckpt(code_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ex") / "base"
    run([os.path.join(EX, "train_and_sample.py"), code_corpus, "--steps", "30", *TINY, "--out", str(out)],
        cwd=str(out.parent))
    return str(out)


def test_finetune(base_ckpt, code_corpus, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for name in sorted(os.listdir(code_corpus))[:3]:
        (other / name).write_text(open(os.path.join(code_corpus, name)).read())
    out = run([os.path.join(EX, "finetune.py"), base_ckpt, str(other), "--steps", "5", "--batch-size", "4",
               "--out", str(tmp_path / "ft")], cwd=tmp_path)
    assert "before," in out and "after 5 steps" in out and "--- sample" in out


def test_hf_pipeline(base_ckpt, tmp_path):
    pytest.importorskip("transformers")
    out = run([os.path.join(EX, "hf_pipeline.py"), base_ckpt, "--max-new-tokens", "8"], cwd=tmp_path)
    assert "GPT2LMHeadModel" in out and "eos='<|endoftext|>'" in out and "same text" in out


def test_plot_runs(code_corpus, tmp_path):
    pytest.importorskip("matplotlib")
    out = run([os.path.join(EX, "plot_runs.py"), code_corpus, "--steps", "6", *TINY, "--runs", str(tmp_path / "r"),
               "-o", str(tmp_path / "lr.png")], cwd=tmp_path)
    assert "wrote" in out and os.path.isfile(tmp_path / "lr.png")
    assert os.path.isfile(tmp_path / "r" / "lr0.001" / "metrics.jsonl")
