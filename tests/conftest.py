"""Shared fixtures: a small real corpus (built from the stdlib) and tiny configs."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from cllm.data.corpus import default_corpus_path  # noqa: E402

STDLIB_FILES = ["textwrap.py", "string.py", "bisect.py", "heapq.py", "keyword.py", "colorsys.py",
                "fnmatch.py", "glob.py", "shlex.py", "queue.py", "sched.py", "numbers.py"]


@pytest.fixture(scope="session")
def code_corpus(tmp_path_factory) -> str:
    """A directory of real Python source (about 150 KB) copied from the stdlib."""
    d = tmp_path_factory.mktemp("corpus")
    src = default_corpus_path()
    n = 0
    for name in STDLIB_FILES:
        p = os.path.join(src, name)
        if os.path.exists(p):
            with open(p, "rb") as f, open(d / name, "wb") as g:
                g.write(f.read())
            n += 1
    assert n >= 6, "stdlib files missing"
    return str(d)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def signal_at_step(monkeypatch, sig: int, n: int) -> None:
    """Make the ``n``-th ``Model.train_step`` call raise signal ``sig`` right
    after it returns (as a Ctrl-C or a ``docker stop`` arriving mid-run)."""
    import signal
    from cllm.model.gpt import Model
    real = Model.train_step
    calls = {"n": 0}

    def step(self, *a, **k):
        out = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == n:
            signal.raise_signal(sig)
        return out
    monkeypatch.setattr(Model, "train_step", step)
