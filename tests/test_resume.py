"""Ctrl-C saves a consistent checkpoint; resuming continues bit-identically."""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest

import cllm
from cllm.model.gpt import Model

KW = dict(max_steps=30, batch_size=4, seq_len=32, vocab_size=300, embed_dim=32, num_layers=1, num_heads=2,
          threads=2, progress=False, seed=5, warmup_steps=5)


def test_interrupt_then_resume_is_bit_identical(code_corpus, tmp_path, monkeypatch):
    full = cllm.train(code_corpus, out_dir=str(tmp_path / "full"), **KW)

    real = Model.train_step
    calls = {"n": 0}

    def interrupted(self, *a, **k):
        out = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 12:  # Ctrl-C arrives during step 12
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(Model, "train_step", interrupted)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        cllm.train(code_corpus, out_dir=str(out), **KW)
    monkeypatch.undo()
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 12
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

    resumed = cllm.train(out_dir=str(out), resume=True, progress=False)
    assert resumed.summary["steps"] == 30
    assert np.array_equal(resumed.params, full.params)
    assert np.array_equal(resumed.adam_m, full.adam_m) and np.array_equal(resumed.adam_v, full.adam_v)
    again = cllm.load(str(out))
    assert np.array_equal(again.params, full.params)


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="nothing to resume"):
        cllm.train(out_dir=str(tmp_path), resume=True, progress=False)
