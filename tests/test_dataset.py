"""Token-id cache: reuse, invalidation, corruption handling, dtype."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cllm.data import dataset
from cllm.data.corpus import Document
from cllm.data.tokenizer import Tokenizer, _to_hf


@pytest.fixture()
def corpus(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    files = []
    for i in range(5):
        p = d / f"m{i}.py"
        p.write_text(f"def f{i}(x):\n    return x * {i}\n\n" * (20 + i))
        files.append(str(p))
    return files


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(texts=["def f(x):\n    return x * 2\n" * 50], vocab_size=300, progress=False)


def count_builds(monkeypatch):
    calls = []
    orig = dataset._build

    def wrapped(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    monkeypatch.setattr(dataset, "_build", wrapped)
    return calls


def only_bin(cache):
    bins = [f for f in os.listdir(cache) if f.endswith(".bin")]
    assert len(bins) == 1 and not [f for f in os.listdir(cache) if ".tmp" in f]
    return os.path.join(cache, bins[0])


def test_build_and_reuse(corpus, tok, tmp_path, monkeypatch):
    calls = count_builds(monkeypatch)
    cache = str(tmp_path / "cache")
    ids = dataset.load_or_build(corpus, tok, cache, progress=False)
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint16
    expect = tok.encode_documents([open(f, "rb").read() for f in corpus])
    assert np.array_equal(ids, expect)
    assert int((ids == tok.eot_id).sum()) == len(corpus)
    again = dataset.load_or_build(corpus, tok, cache, progress=False)
    assert np.array_equal(again, expect)
    assert len(calls) == 1
    path = only_bin(cache)
    head = open(path, "rb").read(dataset.HEADER_BYTES)
    assert head[:8] == dataset.MAGIC
    assert int.from_bytes(head[12:16], "little") == 2
    assert int.from_bytes(head[16:24], "little") == len(expect)
    assert os.path.getsize(path) == dataset.HEADER_BYTES + 2 * len(expect)


def test_rebuild_on_change(corpus, tok, tmp_path, monkeypatch):
    calls = count_builds(monkeypatch)
    cache = str(tmp_path / "cache")
    dataset.load_or_build(corpus, tok, cache, progress=False)
    # file content (size) changes
    with open(corpus[0], "a") as f:
        f.write("y = 1\n")
    ids = dataset.load_or_build(corpus, tok, cache, progress=False)
    assert len(calls) == 2
    assert np.array_equal(ids, tok.encode_documents([open(f, "rb").read() for f in corpus]))
    # same size, new mtime
    st = os.stat(corpus[1])
    os.utime(corpus[1], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    dataset.load_or_build(corpus, tok, cache, progress=False)
    assert len(calls) == 3
    # file list changes
    dataset.load_or_build(corpus[:-1], tok, cache, progress=False)
    assert len(calls) == 4
    # tokenizer changes
    other = Tokenizer.train(texts=["completely different text " * 30], vocab_size=290, progress=False)
    ids2 = dataset.load_or_build(corpus, other, cache, progress=False)
    assert len(calls) == 5
    assert np.array_equal(ids2, other.encode_documents([open(f, "rb").read() for f in corpus]))
    # and all of these are now cached
    dataset.load_or_build(corpus, tok, cache, progress=False)
    dataset.load_or_build(corpus, other, cache, progress=False)
    assert len(calls) == 5


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "empty", "magic", "count"])
def test_corrupt_cache_is_rebuilt(corpus, tok, tmp_path, monkeypatch, damage):
    calls = count_builds(monkeypatch)
    cache = str(tmp_path / "cache")
    good = np.array(dataset.load_or_build(corpus, tok, cache, progress=False))
    path = only_bin(cache)
    raw = bytearray(open(path, "rb").read())
    if damage == "truncate":
        raw = raw[:-3]
    elif damage == "flip":
        raw[dataset.HEADER_BYTES + 10] ^= 0x01
    elif damage == "header":
        raw = raw[:40]
    elif damage == "empty":
        raw = bytearray()
    elif damage == "magic":
        raw[0:8] = b"NOTCLLM\0"
    elif damage == "count":
        raw[16:24] = (10 ** 12).to_bytes(8, "little")
    open(path, "wb").write(bytes(raw))
    ids = dataset.load_or_build(corpus, tok, cache, progress=False)
    assert len(calls) == 2
    assert np.array_equal(ids, good)


def test_uint32_for_large_vocab(corpus, tmp_path):
    base = Tokenizer.byte_level().to_json()
    vocab = base["model"]["vocab"]
    vocab["<|endoftext|>"] = 256
    for k in range(70000):
        vocab[_to_hf(b"zz%d" % k)] = 257 + k
    p = tmp_path / "big.json"
    p.write_text(json.dumps(base))
    big = Tokenizer.load(str(p))
    assert len(big) == 70257 and big.eot_id == 256
    ids = dataset.load_or_build(corpus[:2], big, str(tmp_path / "c"), progress=False)
    assert ids.dtype == np.uint32
    assert int(ids[-1]) == 256
    assert bytes(big.decode_bytes(ids[:-1])).endswith(b"\n")


def test_documents_and_errors(corpus, tok, tmp_path):
    docs = [Document(f, open(f, "rb").read()) for f in corpus]
    ids = dataset.load_or_build(docs, tok, str(tmp_path / "c"), progress=False)
    assert np.array_equal(ids, tok.encode_documents([d.data for d in docs]))
    with pytest.raises(ValueError):
        dataset.load_or_build([], tok, str(tmp_path / "c"), progress=False)
    with pytest.raises(FileNotFoundError):
        dataset.load_or_build([str(tmp_path / "nope.py")], tok, str(tmp_path / "c"), progress=False)
    assert dataset.read_cache(str(tmp_path / "absent.bin")) is None
