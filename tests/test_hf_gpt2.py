"""Any GPT-2 checkpoint: a tiny GPT2LMHeadModel made with transformers and a
tokenizers ByteLevel BPE, saved with save_pretrained (F32, F16, BF16), gives
the same logits and the same greedy tokens in cllm, and the same token ids
as tokenizers on varied Unicode text (GPT-2's regex pre-tokenizer in C)."""
from __future__ import annotations

import copy
import json
import os
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import cllm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TEXTS = [
    "def main(argv):\n    return 0  # it's fine, we'll see\n",
    "Héllo wörld! Ünïcödé — naïve café, 123 456.7 and ½ ⅔ Ⅻ\n",
    "日本語のテキスト、中文文本，한국어 텍스트. Ελληνικά κείμενα; русский текст\n",
    "x=1\t\ty = x**2\r\n   \n\u00a0 nbsp\u2003em\u3000ideo 🙂🚀 emoji\n",
]


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS * 20, vocab_size=420, min_frequency=1, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>")
    cfg = GPT2Config(vocab_size=bpe.get_vocab_size(), n_positions=64, n_embd=48, n_layer=2, n_head=4,
                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():   # larger weights than the 0.02 init, so the logits are far from uniform
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    root = tmp_path_factory.mktemp("hf")
    dirs = {}
    for name, dt in (("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)):
        d = str(root / name)
        copy.deepcopy(model).to(dt).save_pretrained(d, safe_serialization=True)
        fast.save_pretrained(d)
        dirs[name] = d
    return model, bpe, dirs


def hf_logits(model, ids, dtype=torch.float32):
    m = copy.deepcopy(model).to(dtype).to(torch.float32)   # the weights rounded as saved
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].numpy()


def test_same_logits_as_transformers(hf_dirs):
    model, bpe, dirs = hf_dirs
    ids = bpe.encode(TEXTS[0] + TEXTS[1][:30]).ids[:60]
    ref = hf_logits(model, ids)
    assert np.abs(cllm.load(dirs["f32"], dtype="fp32").logits(ids) - ref).max() < 1e-4 * np.abs(ref).max()
    assert np.abs(cllm.load(dirs["f32"]).logits(ids) - ref).max() < 1e-4 * np.abs(ref).max()  # trainable Model
    for name, dt in (("f16", torch.float16), ("bf16", torch.bfloat16)):
        r = hf_logits(model, ids, dt)
        assert np.abs(cllm.load(dirs[name], dtype="fp32").logits(ids) - r).max() < 1e-4 * np.abs(r).max()


def test_same_greedy_tokens_as_transformers(hf_dirs):
    model, bpe, dirs = hf_dirs
    ids = bpe.encode("def main(argv):\n    return").ids
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, eos_token_id=None,
                             pad_token_id=0, attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    ref = out[0, len(ids):].tolist()
    got = list(cllm.load(dirs["f32"], dtype="fp32").generate_ids(ids, max_new_tokens=24, temperature=0,
                                                                 stop_at_eot=False))
    assert got == ref


def _assigned(c: str) -> bool:
    # characters unassigned in Python's Unicode version may be assigned in the
    # (newer) tables of tokenizers' regex engine: they are not comparable
    return unicodedata.category(c) not in ("Cn", "Cs")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(TEXTS), st.text(st.characters(blacklist_categories=("Cs", "Cn")),
                                                          max_size=40),
                          st.sampled_from([" ", "  ", "\n", "\t", "'s", "'ll", "'re", " '", "''", "\u00a0",
                                           "\u2028", "\x1c", "\u200b", "\u0085", "1 ", " ½", "_x", "x_y"])),
                max_size=8))
def test_same_ids_as_tokenizers(hf_dirs, parts):
    _, bpe, dirs = hf_dirs
    text = "".join(parts)
    if not all(_assigned(c) for c in text):
        return
    tok = cllm.load(dirs["f32"], dtype="fp32").tokenizer if not hasattr(test_same_ids_as_tokenizers, "tok") \
        else test_same_ids_as_tokenizers.tok
    test_same_ids_as_tokenizers.tok = tok
    assert tok.pretokenizer == "gpt2"
    assert tok.encode(text) == bpe.encode(text).ids
    assert tok.decode(tok.encode(text)) == text


def test_cli_generate_on_hf_directory(hf_dirs):
    import subprocess
    import sys
    _, _, dirs = hf_dirs
    r = subprocess.run([sys.executable, "-m", "cllm", "generate", dirs["bf16"], "-p", "def main", "-n", "8", "-t", "0",
                        "--dtype", "int8"], capture_output=True, text=True, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(cllm.__file__)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("def main")


def test_unsupported_tokenizer_is_a_clear_error(hf_dirs, tmp_path):
    import shutil
    from tokenizers import Tokenizer, models, pre_tokenizers
    _, _, dirs = hf_dirs
    d = tmp_path / "wp"
    shutil.copytree(dirs["f32"], d)
    wp = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.Whitespace()
    wp.save(str(d / "tokenizer.json"))
    with pytest.raises(cllm.CheckpointError, match="WordPiece.*not supported.*byte-level BPE"):
        cllm.load(str(d), dtype="fp32")
    obj = json.loads((tmp_path / "wp" / "tokenizer.json").read_text())
    assert obj["model"]["type"] == "WordPiece"
