"""Bad input raises a clear Python exception, never a crash."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cllm
from cllm.model.checkpoint import CheckpointError
from cllm.config import ModelConfig
from cllm.model.gpt import Model
from cllm.data.tokenizer import Tokenizer


def tiny(**kw) -> Model:
    mc = ModelConfig(vocab_size=300, context_len=16, num_layers=1, num_heads=2, embed_dim=16)
    return Model(mc, Tokenizer.byte_level(), batch_size=2, seq_len=16, threads=1, **kw)


@pytest.mark.parametrize("kw,msg", [
    (dict(embed_dim=30, num_heads=4), "divisible"),
    (dict(num_layers=0), "num_layers"),
    (dict(num_heads=-1), "num_heads"),
    (dict(seq_len=300, context_len=256), "seq_len"),
    (dict(vocab_size=100), "vocab_size"),
    (dict(batch_size=0), "batch_size"),
    (dict(learning_rate=float("nan")), "learning_rate"),
    (dict(threads=-3), "threads"),
])
def test_bad_train_configs(code_corpus, kw, msg):
    with pytest.raises(ValueError, match=msg):
        cllm.train(code_corpus, progress=False, max_steps=1, **kw)


def test_absurd_memory_config_is_refused():
    mc = ModelConfig(vocab_size=50000, context_len=8192, num_layers=96, num_heads=96, embed_dim=12288)
    with pytest.raises(MemoryError, match="GB"):
        Model(mc, Tokenizer.byte_level(), batch_size=64, seq_len=8192, threads=1)


def test_model_rejects_out_of_range_ids():
    m = tiny()
    with pytest.raises(ValueError, match="out of range|outside"):
        m.logits([1, 2, 300])
    with pytest.raises(ValueError, match="outside"):
        m.forward(np.array([[1, 2, -5]]), np.array([[1, 2, 3]]))
    with pytest.raises(ValueError):
        m.train_step(np.zeros((3, 4), int), np.zeros((3, 4), int), 1, 1e-3)  # batch 3 > 2
    with pytest.raises(ValueError):
        m.train_step(np.zeros((2, 17), int), np.zeros((2, 17), int), 1, 1e-3)  # seq 17 > 16
    with pytest.raises(ValueError, match="shape"):
        m.train_step(np.zeros((2, 4), int), np.zeros((2, 5), int), 1, 1e-3)
    with pytest.raises(ValueError, match="integer"):
        m.logits(np.array([0.5, 1.5]))


def test_bad_sampling_args():
    m = tiny()
    with pytest.raises(ValueError, match="temperature"):
        m.generate("a", temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        m.generate("a", top_p=0)
    with pytest.raises(ValueError, match="top_k"):
        m.predict_next_token("a", top_k=-2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        m.generate("a", max_new_tokens=-1)


def test_backward_without_forward_is_a_state_error():
    m = tiny()
    with pytest.raises(cllm.StateError, match="forward"):
        m.backward()


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(cllm.CorpusError, match="does not exist"):
        cllm.train(str(tmp_path / "nope"), progress=False)
    with pytest.raises(cllm.CorpusError, match="no usable text"):
        cllm.train(str(tmp_path), progress=False)
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "empty.py").write_bytes(b"")
    with pytest.raises(cllm.CorpusError, match="no usable text"):
        cllm.train(str(tmp_path), progress=False)


def test_tiny_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    with pytest.raises(cllm.CorpusError, match="seq_len"):
        cllm.train(str(tmp_path), seq_len=64, vocab_size=257, progress=False)


def _ckpt(tmp_path):
    m = tiny()
    d = tmp_path / "ck"
    m.save(str(d))
    return m, d


def _plain(tmp_path):
    """A plain HF directory (real files, no cllm manifest) of a tiny model."""
    m, d = _ckpt(tmp_path)
    plain = tmp_path / "plain"
    shutil.copytree(d / "latest", plain)
    os.remove(plain / "checkpoint.json")
    return m, plain


def test_truncated_and_corrupt_checkpoints(tmp_path):
    m, d = _plain(tmp_path)
    st = d / "model.safetensors"
    good = st.read_bytes()
    for bad in (good[:5], good[:100], good[:-7], b"\xff" * 8 + good[8:]):
        st.write_bytes(bad)
        with pytest.raises(CheckpointError, match="model.safetensors"):
            cllm.load(str(d))
    st.write_bytes(good)
    cllm.load(str(d))  # the good one still loads
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        cllm.load(str(d))
    cfg = m.config.to_hf(m.tokenizer.eot_id)
    cfg["n_embd"] = 32
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        cllm.load(str(d))
    with pytest.raises(CheckpointError, match="not found"):
        cllm.load(str(tmp_path / "missing"))
    os.remove(d / "tokenizer.json")
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        cllm.load(str(d))


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    m, d = _ckpt(tmp_path)
    before = (d / "model.safetensors").read_bytes()
    with pytest.raises(TypeError):
        from cllm.model.checkpoint import write_safetensors
        write_safetensors(str(d / "model.safetensors"), [("a", np.zeros(3, np.float32)), ("b", object())])
    assert (d / "model.safetensors").read_bytes() == before
    assert not [f for f in os.listdir(d) if ".tmp" in f]


def test_set_isa_validation():
    with pytest.raises(ValueError, match="unknown ISA"):
        cllm.set_isa("sse9")


def run_cli(*args):
    # run outside the source tree so the installed package is what gets imported
    return subprocess.run([sys.executable, "-m", "cllm", *args], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(cllm.__file__)), timeout=300)


def test_cli_errors_are_messages_not_tracebacks(tmp_path):
    r = run_cli("train", str(tmp_path / "nope"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", str(tmp_path), "--embed-dim", "30", "--num-heads", "4")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run_cli("generate", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not found" in r.stderr
