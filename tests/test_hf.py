"""A cllm checkpoint directory IS a Hugging Face model: transformers loads it
and gives the same logits; tokenizers gives the same ids."""
from __future__ import annotations

import numpy as np
import pytest

import cllm

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def ckpt(code_corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hf"))
    m = cllm.train(code_corpus, max_steps=15, batch_size=4, seq_len=48, vocab_size=700, embed_dim=48,
                   num_layers=2, num_heads=3, threads=1, out_dir=out, progress=False)
    return m, out


def test_transformers_loads_checkpoint_with_same_logits(ckpt):
    m, out = ckpt
    hf = transformers.GPT2LMHeadModel.from_pretrained(out)
    hf.eval()
    ids = m.tokenize("def add(a, b):\n    return a + b\n")[:40]
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    ours = m.logits(ids)
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-4


def test_tokenizers_loads_tokenizer_with_same_ids(ckpt):
    m, out = ckpt
    tok = tokenizers.Tokenizer.from_file(out + "/tokenizer.json")
    for text in ["import os\n\nclass A:\n\tpass\r\n", "x = 'ünïcode ✓ 🎉' # <|endoftext|> y"]:
        assert tok.encode(text).ids == m.tokenize(text)
