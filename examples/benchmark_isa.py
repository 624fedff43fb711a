"""Compare kernel paths (scalar, AVX2, AVX-512) with pytest-benchmark.

    pytest examples/benchmark_isa.py                                  # table of all paths
    pytest examples/benchmark_isa.py --benchmark-group-by=func --benchmark-columns=min,mean,ops
    CLLM_EXAMPLE_SIZE=tiny pytest examples/benchmark_isa.py           # seconds, for a smoke test

One training step (forward, backward, AdamW) and one generated token of the
same model on each kernel path this CPU supports (`cllm.cpu_info()`); the
results must agree across paths within float tolerance, which the benchmark
checks too. Paths the CPU lacks are skipped.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import cllm
from cllm.config import ModelConfig

SIZES = {  # (vocab, embed, layers, heads, batch, seq)
    "tiny": (512, 64, 2, 2, 2, 32),
    "default": (4096, 256, 4, 4, 16, 128),
}
V, D, L, H, B, T = SIZES[os.environ.get("CLLM_EXAMPLE_SIZE", "default")]


def _paths():
    info = cllm.cpu_info()
    return ["scalar"] + (["avx2"] if info["avx2_fma"] else []) + (["avx512"] if info["avx512"] else [])


class _Vocab:
    """The model only needs a vocabulary size and an <|endoftext|> id here."""
    eot_id = 0

    def __len__(self) -> int:
        return V

    def token_bytes_list(self) -> list:
        """Bytes of every token (the decoder's token-healing table)."""
        return [b"<%d>" % i for i in range(V)]

    def special_ids(self) -> list:
        return [self.eot_id]


@pytest.fixture(params=_paths())
def isa(request):
    cllm.set_isa(request.param)
    yield request.param
    cllm.set_isa("auto")


def _model(threads=0, batch=B):
    return cllm.Model(ModelConfig(vocab_size=V, context_len=T, num_layers=L, num_heads=H, embed_dim=D),
                      _Vocab(), batch_size=batch, seq_len=T, threads=threads, seed=7)


def _batch():
    rng = np.random.default_rng(0)
    return rng.integers(0, V, (B, T), dtype=np.int32), rng.integers(0, V, (B, T), dtype=np.int32)


def test_train_step(benchmark, isa):
    model = _model()
    x, y = _batch()
    step = iter(range(1, 1 << 30))
    benchmark.extra_info["tokens_per_call"] = B * T
    loss, _ = benchmark(lambda: model.train_step(x, y, next(step), 1e-4))
    assert np.isfinite(loss)


def test_forward_matches_scalar(isa):
    x, y = _batch()
    got = _model().forward(x, y)
    cllm.set_isa("scalar")  # the fixture restores "auto" afterwards
    assert got == pytest.approx(_model().forward(x, y), rel=1e-4)


def test_next_token(benchmark, isa):
    model = _model(batch=1)
    prompt = list(range(1, T // 2))
    benchmark(lambda: model.predict_next_token(prompt, temperature=0))
