"""Byte-level BPE: exactness against Hugging Face tokenizers, round trips, training, errors."""
from __future__ import annotations

import json
import os
import threading
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cllm.data.corpus import default_corpus_path, iter_files, load_documents
from cllm.data.tokenizer import EOT, GPT2_REGEX, PRETOKENIZER_REGEX, Tokenizer

tokenizers = pytest.importorskip("tokenizers")

HSET = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def stdlib_docs():
    return load_documents(default_corpus_path(), exts=[".py"], max_bytes=1_500_000)


@pytest.fixture(scope="module")
def trained(stdlib_docs, tmp_path_factory):
    tok = Tokenizer.train([d.data for d in stdlib_docs], vocab_size=2048, progress=False)
    path = tok.save(str(tmp_path_factory.mktemp("tok")))
    return tok, tokenizers.Tokenizer.from_file(path), path


def hf_pieces(text: str, mode: str = "cllm"):
    regex = PRETOKENIZER_REGEX if mode == "cllm" else GPT2_REGEX
    pre = tokenizers.pre_tokenizers.Split(tokenizers.Regex(regex), behavior="isolated")
    return [p for p, _ in pre.pre_tokenize_str(text)]


def c_pieces(data: bytes, mode: str = "cllm"):
    from cllm._cllm import ffi, lib
    ends = np.zeros(max(1, len(data)), dtype=np.uint64)
    n = ffi.new("size_t *")
    m = getattr(lib, "CLLM_PRETOK_" + mode.upper())   # cllm, gpt2 or starcoder
    assert lib.cllm_tokenizer_pretokenize(m, data, len(data), ffi.cast("uint64_t *", ends.ctypes.data),
                                          len(ends), n) == 0
    out, start = [], 0
    for e in ends[:n[0]]:
        out.append(data[start:int(e)])
        start = int(e)
    assert start == len(data)
    return out


TRICKY = [
    "", " ", "  ", "\n", "\r\n", "a\r\nb\r\n\r\n", "\t\tx = 1\n", "x\x00y\x00\x00", "😀🎉 emoji 😀x",
    "def f(x):\n    return x  \n\n\n    \n", "  leading\n", "trailing   ", "a  b   c", "\n\n    def",
    "foo<|endoftext|>bar", "<|endoftext|>", "<|endoftext|><|endoftext|>", "<|endoftext|", " <|endoftext|> x",
    "é1 ü_2 日本語 ident", "0x1F 123456789 3.14e-5", "a\x0bb\x0cc", "\u00a0nbsp\u2028ls\u3000",
    "===---+++***", " (( )) ", "x" * 300, " " * 500 + "y", "ab" * 400, "\t" * 200,
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\x7f\x01\x1b[0m", "'\"`", "a_b_c__d", "__init__", "élan vital",
]


@pytest.mark.parametrize("text", TRICKY)
def test_pretokenizer_matches_hf_regex(text):
    assert [p.decode("utf-8") for p in c_pieces(text.encode())] == hf_pieces(text)


@HSET
@given(st.text())
def test_pretokenizer_matches_hf_hypothesis(text):
    assert [p.decode("utf-8") for p in c_pieces(text.encode())] == hf_pieces(text)


@HSET
@given(st.text(alphabet=st.sampled_from(list(" \t\n\r\x0b\x0caZ_09.(é😀\x00"))))
def test_pretokenizer_matches_hf_dense_alphabet(text):
    assert [p.decode("utf-8") for p in c_pieces(text.encode())] == hf_pieces(text)


@pytest.mark.parametrize("text", TRICKY)
def test_ids_match_hf_tricky(trained, text):
    tok, hf, _ = trained
    ids = tok.encode(text)
    assert ids == hf.encode(text).ids
    assert tok.decode(ids) == text
    assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False)


@HSET
@given(st.text())
def test_ids_match_hf_hypothesis_text(trained, text):
    tok, hf, _ = trained
    ids = tok.encode(text)
    assert ids == hf.encode(text).ids
    assert tok.decode(ids) == text


@HSET
@given(st.lists(st.sampled_from(["def", " self", "(", "):", "\n    ", " return", "<|endoftext|>",
                                 " ", "\r\n", "\t", "x1", " 42", "😀", "\x00", "__", "é"]), max_size=40))
def test_ids_match_hf_code_like(trained, parts):
    tok, hf, _ = trained
    text = "".join(parts)
    assert tok.encode(text) == hf.encode(text).ids


@HSET
@given(st.binary())
def test_bytes_round_trip(trained, data):
    tok, hf, _ = trained
    ids = tok.encode(data)
    assert tok.decode_bytes(ids) == data
    assert all(0 <= i < len(tok) for i in ids)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # HF takes str only
    assert ids == hf.encode(text).ids


@HSET
@given(st.lists(st.integers(min_value=0, max_value=2047), max_size=30))
def test_decode_matches_hf_on_any_ids(trained, ids):
    tok, hf, _ = trained
    assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False)


def test_real_code_files_match_hf(trained):
    tok, hf, _ = trained
    files = list(iter_files(os.path.join(default_corpus_path(), "email"), exts=[".py"]))[:40]
    assert len(files) > 10
    for fp in files:
        text = open(fp, encoding="utf-8", errors="replace").read()
        crlf = text.replace("\n", "\r\n")
        for t in (text, crlf):
            ids = tok.encode(t)
            assert ids == hf.encode(t).ids, fp
            assert tok.decode(ids) == t


def test_encode_np_and_documents(trained):
    tok, _, _ = trained
    docs = [b"def a():\n    pass\n", "x = 'é'\n", b""]
    arr = tok.encode_documents(docs)
    assert arr.dtype == np.uint16
    expect = []
    for d in docs:
        expect += tok.encode(d) + [tok.eot_id]
    assert arr.tolist() == expect
    assert tok.encode_np("abc").dtype == np.int32
    assert tok.encode_np("abc").tolist() == tok.encode("abc")


def test_special_token_inside_text(trained):
    tok, hf, _ = trained
    ids = tok.encode("a<|endoftext|>b")
    assert tok.eot_id == 256
    assert ids.count(256) == 1 and ids == hf.encode("a<|endoftext|>b").ids
    assert tok.token_to_id(EOT) == 256 and tok.id_to_token(256) == EOT


def test_compression_and_vocab(trained, stdlib_docs):
    tok, _, _ = trained
    assert len(tok) == 2048 and tok.vocab_size == 2048 and tok.num_merges == 2048 - 261  # bytes, EOT, 4 FIM
    data = b"".join(d.data for d in stdlib_docs[:50])
    ids = tok.encode_np(data)
    assert len(data) / len(ids) > 3.0   # code compresses well at 2k
    # every learned token is reachable as the concatenation of its merge
    for a, b in tok.merges()[:200]:
        assert tok.token_to_id(tok.id_to_token(a) + tok.id_to_token(b)) is not None
    assert tok.token_to_id("Ġreturn") is not None
    assert tok.id_to_token(tok.token_to_id("Ġreturn")) == "Ġreturn"
    assert tok.id_to_token(10 ** 6) is None


def test_save_load_round_trip(trained, tmp_path):
    tok, _, path = trained
    tok2 = Tokenizer.load(path)
    tok3 = Tokenizer.load(os.path.dirname(path))
    assert tok2.to_json() == tok.to_json() == tok3.to_json()
    text = open(os.path.join(default_corpus_path(), "ast.py"), encoding="utf-8").read()
    assert tok2.encode(text) == tok.encode(text)
    assert tok2.fingerprint() == tok.fingerprint()
    p = tok2.save(str(tmp_path / "t.json"))
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
    assert json.load(open(p))["model"]["type"] == "BPE"


def test_byte_level_tokenizer_matches_hf(tmp_path):
    tok = Tokenizer.byte_level()
    assert len(tok) == 257 and tok.eot_id == 256
    assert tok.encode(b"\x00\xff ab") == [0, 255, 32, 97, 98]
    hf = tokenizers.Tokenizer.from_file(tok.save(str(tmp_path)))
    for t in TRICKY:
        assert tok.encode(t) == hf.encode(t).ids


def reference_train(texts, vocab_size, min_frequency, mode="cllm"):
    """Slow reference BPE trainer (recounts every pair each merge) on HF's splits
    (``mode``: cllm's pre-tokenizer regex or GPT-2's)."""
    words = Counter()
    for t in texts:
        for seg in t.split(EOT):
            for p in hf_pieces(seg, mode):
                words[tuple(p.encode("utf-8"))] += 1
    toks = [bytes([b]) for b in range(256)] + [EOT.encode()]
    index = {t: i for i, t in enumerate(toks)}
    merges = []
    words = {w: c for w, c in words.items()}
    while len(toks) < vocab_size:
        pairs = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), cnt = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if cnt < min_frequency:
            break
        s = toks[a] + toks[b]
        if s not in index:
            index[s] = len(toks)
            toks.append(s)
        x = index[s]
        merges.append((a, b))
        new = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(x)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        words = new
    return toks, merges


@pytest.mark.parametrize("mode", ["gpt2", "cllm"])
@pytest.mark.parametrize("vocab,minf", [(400, 2), (700, 1), (5000, 3)])
def test_training_matches_reference_trainer(vocab, minf, mode):
    texts = [open(os.path.join(default_corpus_path(), f), encoding="utf-8").read()
             for f in ("bisect.py", "colorsys.py")]
    texts.append("aaaaaaa aaaa<|endoftext|>aaa bbbbbb ab ab abab\n\n\n")
    toks, merges = reference_train(texts, vocab, minf, mode)
    tok = Tokenizer.train(texts=texts, vocab_size=vocab, min_frequency=minf, special_tokens=[EOT], progress=False,
                          pretokenizer=mode)
    assert tok.merges() == merges
    assert [tok.token_bytes(i) for i in range(len(tok))] == toks
    if vocab == 5000:
        assert len(tok) < 5000  # stopped by min_frequency


def test_multiple_special_tokens_leftmost_longest(tmp_path):
    specials = [EOT, "<|end", "<|pad|>", "<|e"]
    tok = Tokenizer.train(texts=["hello world <|end x <|pad|> y " * 20], vocab_size=300,
                          special_tokens=specials, progress=False)
    hf = tokenizers.Tokenizer.from_file(tok.save(str(tmp_path)))
    for t in ["<|endoftext|>", "<|end", "<|e<|end<|endoftext|>", "a<|pad|><|pad|>b", "<|<|e|>",
              "x <|endoftext", "<|endoftext|>oftext|>"]:
        assert tok.encode(t) == hf.encode(t).ids, t
        assert tok.decode(tok.encode(t)) == t
    # specials never take part in merges
    assert all(tok.token_bytes(i) not in (s.encode() for s in specials) for i in range(261, len(tok)))


def test_training_inputs_paths_texts_bytes(tmp_path):
    (tmp_path / "a.py").write_text("def foo():\n    return foo\n" * 30)
    (tmp_path / "b.txt").write_text("ignored ignored ignored\n" * 30)
    t1 = Tokenizer.train([str(tmp_path)], vocab_size=280, exts=["py"], progress=False)
    t2 = Tokenizer.train(texts=["def foo():\n    return foo\n" * 30], vocab_size=280, progress=False)
    t3 = Tokenizer.train([b"def foo():\n    return foo\n" * 30], vocab_size=280, progress=False)
    assert t1.merges() == t2.merges() == t3.merges()
    assert Tokenizer.train(str(tmp_path / "a.py"), vocab_size=280, progress=False).merges() == t1.merges()


def test_bad_inputs_raise_clean_errors(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(texts=["abc abc"], vocab_size=256, progress=False)
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(texts=["abc abc"], vocab_size=100, progress=False)
    with pytest.raises(ValueError, match="empty"):
        Tokenizer.train([], vocab_size=300, progress=False)
    with pytest.raises(ValueError, match="empty"):
        Tokenizer.train(texts=["", b""], vocab_size=300, progress=False)
    with pytest.raises(ValueError, match="empty"):
        Tokenizer.train(texts=["<|endoftext|><|endoftext|>"], vocab_size=300, progress=False)
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        Tokenizer.train([str(empty)], vocab_size=300, progress=False)
    with pytest.raises(ValueError, match="min_frequency"):
        Tokenizer.train(texts=["abc"], vocab_size=300, min_frequency=0, progress=False)
    with pytest.raises(TypeError):
        Tokenizer.train([123], vocab_size=300, progress=False)
    with pytest.raises(FileNotFoundError, match="texts="):  # a str is a path; it must exist
        Tokenizer.train([str(tmp_path / "no" / "such" / "dir")], vocab_size=300, progress=False)
    with pytest.raises(FileNotFoundError):
        Tokenizer.train(["def f(): pass"], vocab_size=300, progress=False)
    with pytest.raises(FileNotFoundError):
        Tokenizer.load(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        Tokenizer.load(str(bad))
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError):
        Tokenizer.load(str(bad))
    bad.write_text(json.dumps({"model": {"type": "WordPiece"}}))
    with pytest.raises(ValueError, match="BPE"):
        Tokenizer.load(str(bad))
    good = Tokenizer.train(texts=["abc abc abd abd"] * 3, vocab_size=264, progress=False)
    obj = good.to_json()
    obj["model"]["merges"].append("zz qq")
    bad.write_text(json.dumps(obj))
    with pytest.raises(ValueError, match="merge"):
        Tokenizer.load(str(bad))
    obj = good.to_json()
    del obj["model"]["vocab"]["Ā"]  # byte 0x00 missing
    bad.write_text(json.dumps(obj))
    with pytest.raises(ValueError):
        Tokenizer.load(str(bad))
    obj = good.to_json()
    obj["pre_tokenizer"] = {"type": "Whitespace"}
    bad.write_text(json.dumps(obj))
    with pytest.raises(ValueError, match="pre_tokenizer"):
        Tokenizer.load(str(bad))
    with pytest.raises(ValueError, match="out of range"):
        good.decode([0, len(good)])
    with pytest.raises(ValueError, match="out of range"):
        good.decode([-1])
    with pytest.raises(UnicodeEncodeError):
        good.encode("\ud800")


def test_c_api_validates_arguments():
    from cllm._cllm import ffi, lib
    n = ffi.new("size_t *")
    assert lib.cllm_tokenizer_encode(ffi.NULL, b"a", 1, ffi.NULL, 0, n) == lib.CLLM_ERR_INVALID
    assert lib.cllm_tokenizer_free(ffi.NULL) == 0
    out = ffi.new("cllm_tokenizer **")
    assert lib.cllm_tokenizer_new(out) == 0
    t = out[0]
    buf = ffi.new("int32_t[]", 4)
    assert lib.cllm_tokenizer_encode(t, b"abcdef", 6, buf, 4, n) == lib.CLLM_ERR_RANGE
    assert lib.cllm_tokenizer_decode(t, ffi.new("int32_t[]", [300]), 1, ffi.NULL, 0, n) == lib.CLLM_ERR_RANGE
    assert b"out of range" in ffi.string(lib.cllm_last_error())
    nm, fin = ffi.new("int32_t *"), ffi.new("int *")
    assert lib.cllm_tokenizer_train_merges(t, 300, 2, 0, nm, fin) == lib.CLLM_ERR_STATE
    assert lib.cllm_tokenizer_train_feed(t, b"ab ab ab", 8) == 0
    assert lib.cllm_tokenizer_train_merges(t, 100, 2, 0, nm, fin) == lib.CLLM_ERR_INVALID
    idp = ffi.new("int32_t *")
    assert lib.cllm_tokenizer_add_special(t, b"", 0, idp) == lib.CLLM_ERR_INVALID
    assert lib.cllm_tokenizer_get_merge(t, 0, idp, idp, idp) == lib.CLLM_ERR_RANGE
    assert lib.cllm_tokenizer_free(t) == 0


def test_encode_is_thread_safe(trained, stdlib_docs):
    tok, _, _ = trained
    docs = [d.data for d in stdlib_docs[:40]]
    expect = [tok.encode(d) for d in docs]
    fresh = Tokenizer.load(trained[2])
    results = [None] * 4

    def work(k):
        results[k] = [fresh.encode(d) for d in docs]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(r == expect for r in results)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet=st.sampled_from(list("ab c\n\t_1(é")), max_size=60), min_size=1,
                max_size=6),
       st.integers(min_value=257, max_value=330), st.integers(min_value=1, max_value=3),
       st.sampled_from(["gpt2", "cllm"]))
def test_training_matches_reference_hypothesis(texts, vocab, minf, mode):
    if not any(texts):
        return
    toks, merges = reference_train(texts, vocab, minf, mode)
    tok = Tokenizer.train(texts=texts, vocab_size=vocab, min_frequency=minf, special_tokens=[EOT], progress=False,
                          pretokenizer=mode)
    assert tok.merges() == merges
    assert [tok.token_bytes(i) for i in range(len(tok))] == toks
    for t in texts:
        assert tok.decode(tok.encode(t)) == t


def test_cli_tokenize(tmp_path, capsys):
    from cllm.cli import tokenize as cli_tokenize
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("def main():\n    return 1\n" * 50)
    (src / "b.md").write_text("# title\n" * 50)
    out = tmp_path / "tok.json"
    assert cli_tokenize.main([str(src), "--vocab-size", "300", "-e", "py", "--out", str(out),
                              "--text", "def main():", "--show", "pieces", "-q"]) == 0
    text = capsys.readouterr().out
    assert "corpus: 1 files" in text and "bytes/token" in text and "'def'" in text
    tok = Tokenizer.load(str(out))
    assert 257 < len(tok) <= 300  # tiny corpus: merges run out before 300
    f = tmp_path / "x.py"
    f.write_text("def main():\n")
    assert cli_tokenize.main(["--load", str(out), "--file", str(f)]) == 0
    ids = capsys.readouterr().out.strip().splitlines()[-1]
    assert [int(x) for x in ids.split()] == tok.encode("def main():\n")
    assert cli_tokenize.main([str(src), "--vocab-size", "300", "-e", "py,md", "-q"]) == 0
    assert "corpus: 2 files" in capsys.readouterr().out
    assert cli_tokenize.main([str(tmp_path / "missing")]) == 2
    assert cli_tokenize.main(["--load", str(tmp_path / "missing.json")]) == 2
    assert cli_tokenize.main([str(src), "--vocab-size", "10"]) == 2
    import argparse
    parser = argparse.ArgumentParser(prog="cllm")
    sub = parser.add_subparsers(dest="cmd")
    cli_tokenize.register(sub)
    args = parser.parse_args(["tokenize", "--load", str(out), "--text", "x"])
    assert args.func(args) == 0


def range_edge_chars(majors: str) -> list:
    """The assigned characters at and just outside each end of every range of
    code points whose Unicode category starts with one of ``majors`` (ranges of
    each major class separately); unassigned (in this Python's Unicode) and
    surrogate code points are left out, as they are not comparable with
    tokenizers' newer tables."""
    import unicodedata
    edges, prev = set(), None
    for cp in range(0x110000):
        cat = unicodedata.category(chr(cp))
        cls = cat[0] if cat[0] in majors else "-"
        if cls != prev:
            edges.update((cp - 1, cp))
            prev = cls
    return [chr(c) for c in sorted(edges) if c >= 0 and unicodedata.category(chr(c)) not in ("Cn", "Cs")]


def test_gpt2_pretokenizer_at_every_letter_and_number_range_edge():
    """GPT-2's pre-tokenizer classifies code points with the \\p{L} / \\p{N}
    ranges of csrc/tokenizer/unicode_tables.h (run-length encoded, expanded at
    start-up): at every edge of every range (the code points at and just
    outside each end), in letter, number and punctuation context, its pieces
    are those of tokenizers' regex."""
    pre = tokenizers.pre_tokenizers.Split(tokenizers.Regex(GPT2_REGEX), behavior="isolated")
    chars = range_edge_chars("LN")
    assert len(chars) > 1000
    for i in range(0, len(chars), 100):
        text = "".join(f"a{c}1{c}.{c} " for c in chars[i:i + 100])
        want = [p.encode("utf-8") for p, _ in pre.pre_tokenize_str(text)]
        assert c_pieces(text.encode("utf-8"), mode="gpt2") == want
