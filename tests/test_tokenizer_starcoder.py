"""StarCoder's pre-tokenizer (``Digits(individual_digits=true)`` then GPT-2's
``ByteLevel`` regex): cllm's C split, ids and decoding equal Hugging Face
``tokenizers``' on a tokenizer.json built the way StarCoder's is, the section
round-trips, variants cllm does not implement are refused, cllm trains such a
tokenizer, and a ``gpt_bigcode`` model with one loads and generates."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cllm
from cllm.data.corpus import default_corpus_path, load_documents
from cllm.data.tokenizer import Tokenizer, _to_hf, starcoder_pre_tokenizer_json
from cllm.errors import ConfigError

tokenizers = pytest.importorskip("tokenizers")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_tokenizer import c_pieces, range_edge_chars  # noqa: E402  (the C split in any mode)

HSET = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REPO = os.path.dirname(os.path.dirname(os.path.abspath(cllm.__file__)))
#: StarCoder's special tokens (the first ones of its vocabulary, in its order)
SPECIALS = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<filename>",
            "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>"]
#: StarCoder's tokenizer.json pre_tokenizer section, as it is written there
STARCODER_PRE = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
NUMBERS = [
    "x = 12345", "3.14", "0xFF", "1e-9", " 123", "  1", "\t\t7", "a  \n  2b", "x1y2  z", "abc def  ghi 1 ",
    "٣ ² ½ Ⅻ x² ①", "'s1 '1 1's", " \u00a02", "\u30002", "v2.0.1-rc3", "arr[0][12] += -7_000", "1\n\n 2 \n",
    "1 2  3   4", "99 bottles", "a" + " " * 40 + "9", "😀1😀 1", "", " ", "\n",
]
CODE = [
    "def main(argv):\n    return 0  # it's fine, we'll see\n",
    "import os\nfor i in range(10):\n    print(i, os.getcwd())\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n",
    "    if n <= 1:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "<fim_prefix>def f(x):\n    <fim_suffix>\n    return y<fim_middle>",
    "<filename>a.py\n<gh_stars>10-100\nprint(42)<|endoftext|>",
]


@pytest.fixture(scope="module")
def stdlib_docs():
    return load_documents(default_corpus_path(), exts=[".py"], max_bytes=400_000)


def hf_pre():
    from tokenizers import pre_tokenizers as P
    return P.Sequence([P.Digits(individual_digits=True), P.ByteLevel(add_prefix_space=False, use_regex=True)])


@pytest.fixture(scope="module")
def starcoder_json(stdlib_docs, tmp_path_factory):
    """A tokenizer.json trained by ``tokenizers`` with StarCoder's pre-tokenizer, decoder and special tokens."""
    from tokenizers import decoders, models, pre_tokenizers, trainers
    t = tokenizers.Tokenizer(models.BPE())
    t.pre_tokenizer = hf_pre()
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, min_frequency=2, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t.train_from_iterator([d.data.decode("utf-8", "replace") for d in stdlib_docs], trainer=trainer)
    path = str(tmp_path_factory.mktemp("starcoder") / "tokenizer.json")
    t.save(path)
    return path


@pytest.fixture(scope="module")
def pair(starcoder_json):
    return Tokenizer.load(starcoder_json), tokenizers.Tokenizer.from_file(starcoder_json)


def check_split(text: str) -> None:
    """cllm's pieces and their (character) offsets equal ``tokenizers``' pre_tokenize_str."""
    want = hf_pre().pre_tokenize_str(text)
    got, at = [], 0
    for p in c_pieces(text.encode(), mode="starcoder"):
        n = len(p.decode("utf-8"))
        got.append((_to_hf(p), (at, at + n)))
        at += n
    assert got == want


def test_the_file_has_starcoder_s_section(starcoder_json):
    with open(starcoder_json, encoding="utf-8") as f:
        obj = json.load(f)
    assert obj["pre_tokenizer"] == STARCODER_PRE
    assert obj["normalizer"] is None and obj["decoder"]["type"] == "ByteLevel"
    assert [a["content"] for a in obj["added_tokens"]] == SPECIALS and all(a["special"] for a in obj["added_tokens"])


@pytest.mark.parametrize("text", NUMBERS + CODE)
def test_split_matches_tokenizers(text):
    check_split(text)


@HSET
@given(st.text(st.characters(blacklist_categories=("Cs", "Cn"))))
def test_split_matches_tokenizers_hypothesis(text):
    # characters unassigned in this Python's Unicode (which made cllm's tables) may be
    # letters or numbers in the newer tables of tokenizers: they are not comparable
    check_split(text)


def test_split_at_every_number_range_edge():
    """Rust's ``char::is_numeric`` (Digits) and cllm's \\p{N} table agree at every edge of
    every number range, in letter, space and punctuation context."""
    chars = range_edge_chars("N")
    assert len(chars) > 200
    for i in range(0, len(chars), 100):
        check_split("".join(f"a{c}{c} {c}.{c}  {c}" for c in chars[i:i + 100]))


@HSET
@given(st.text(alphabet=st.sampled_from(list(" \t\n\r\x0b\x0c\u00a0aZ_09.'s(é😀٣²½Ⅻ\x00"))))
def test_split_matches_tokenizers_dense_alphabet(text):
    check_split(text)


def test_ids_and_decoding_match_tokenizers(pair, stdlib_docs):
    ours, hf = pair
    assert ours.pretokenizer == "starcoder"
    texts = NUMBERS + CODE + [d.data.decode("utf-8") for d in stdlib_docs[:12]]
    assert sum(len(t) for t in texts) > 20_000
    for text in texts:
        ids = ours.encode(text)
        assert ids == hf.encode(text).ids, text[:80]
        assert ours.decode(ids) == text
    docs = [CODE[0], NUMBERS[0]]
    flat = ours.encode_documents(docs).tolist()
    assert flat == hf.encode(docs[0]).ids + [ours.eot_id] + hf.encode(docs[1]).ids + [ours.eot_id]


@HSET
@given(st.text(alphabet=st.sampled_from(list(" \t\n0123456789.xe-+_=()'abc٣²"))))
def test_ids_match_tokenizers_hypothesis(pair, text):
    ours, hf = pair
    assert ours.encode(text) == hf.encode(text).ids


def test_saves_back_the_same_section(pair, starcoder_json, tmp_path):
    ours, _ = pair
    assert ours.to_json()["pre_tokenizer"] == STARCODER_PRE
    again = Tokenizer.load(ours.save(str(tmp_path)))
    assert again.pretokenizer == "starcoder" and again.to_json()["pre_tokenizer"] == STARCODER_PRE
    assert again.encode(NUMBERS[0]) == ours.encode(NUMBERS[0])
    assert tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(CODE[3]).ids == ours.encode(CODE[3])
    gpt2 = copy.deepcopy(ours.to_json())
    gpt2["pre_tokenizer"] = STARCODER_PRE["pretokenizers"][1]
    assert Tokenizer.from_json(gpt2).fingerprint() != ours.fingerprint()


@pytest.mark.parametrize("pre, what", [
    ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": False},
                                            STARCODER_PRE["pretokenizers"][1]]}, "individual_digits=false"),
    ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                            dict(STARCODER_PRE["pretokenizers"][1], add_prefix_space=True)]},
     "add_prefix_space=true"),
    ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                            dict(STARCODER_PRE["pretokenizers"][1], use_regex=False)]},
     "unsupported pre_tokenizer"),
    ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}]},
     "unsupported pre_tokenizer"),
    ({"type": "Sequence", "pretokenizers": [STARCODER_PRE["pretokenizers"][1],
                                            {"type": "Digits", "individual_digits": True}]},
     "unsupported pre_tokenizer"),
])
def test_variants_it_does_not_implement_are_refused(starcoder_json, tmp_path, pre, what):
    with open(starcoder_json, encoding="utf-8") as f:
        obj = json.load(f)
    obj["pre_tokenizer"] = pre
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match="not a usable byte-level BPE") as e:
        Tokenizer.load(str(path))
    assert what in str(e.value) and "StarCoder's" in str(e.value) and "\n" not in str(e.value)


def test_cllm_trains_a_starcoder_split_tokenizer(stdlib_docs, tmp_path):
    tok = Tokenizer.train([d.data for d in stdlib_docs[:40]], vocab_size=800, progress=False, pretokenizer="starcoder")
    assert tok.pretokenizer == "starcoder" and tok.to_json()["pre_tokenizer"] == starcoder_pre_tokenizer_json()
    assert not any(any(c.isdigit() for c in tok.token_bytes(i).decode("utf-8", "replace")) and
                   len(tok.token_bytes(i)) > 1 for i in range(256, len(tok)) if i not in tok.special_ids())
    hf = tokenizers.Tokenizer.from_file(tok.save(str(tmp_path)))
    for text in NUMBERS + CODE + [d.data.decode("utf-8") for d in stdlib_docs[40:44]]:
        assert tok.encode(text) == hf.encode(text).ids
    from cllm.inference.gguf import _pre_tokenizer
    assert _pre_tokenizer(tok) == "starcoder"


@pytest.fixture(scope="module")
def bigcode_dir(starcoder_json, tmp_path_factory):
    """(transformers GPTBigCode model, its save_pretrained directory with the StarCoder-style tokenizer)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_tok = tokenizers.Tokenizer.from_file(starcoder_json)
    cfg = transformers.GPTBigCodeConfig(vocab_size=hf_tok.get_vocab_size(), n_positions=96, n_embd=32, n_layer=2,
                                        n_head=4, multi_query=True, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPTBigCodeForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    d = str(tmp_path_factory.mktemp("bigcode"))
    model.save_pretrained(d, safe_serialization=True)
    transformers.PreTrainedTokenizerFast(tokenizer_object=hf_tok, eos_token="<|endoftext|>",
                                         bos_token="<|endoftext|>").save_pretrained(d)
    return model, d


def test_gpt_bigcode_model_with_a_starcoder_tokenizer(starcoder_json, bigcode_dir):
    from test_gpt_bigcode import hf_greedy
    model, d = bigcode_dir
    hf_tok = tokenizers.Tokenizer.from_file(starcoder_json)
    im = cllm.load(d)
    assert im.tokenizer.pretokenizer == "starcoder" and im.tokenizer.eot_id == 0
    prompt = "for i in range(100):\n    x = 12"
    ids = im.tokenizer.encode(prompt)
    assert ids == hf_tok.encode(prompt).ids
    ref = hf_greedy(model, ids, 10)
    assert list(im.generate_ids(ids, max_new_tokens=10, temperature=0, stop_at_eot=False)) == ref
    r = subprocess.run([sys.executable, "-m", "cllm", "generate", d, "-p", prompt, "-n", "6", "-t", "0",
                        "--threads", "1"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(prompt)


def test_llama_cpp_splits_the_export_like_cllm(bigcode_dir, stdlib_docs, tmp_path):
    """The GGUF export says ``tokenizer.ggml.pre = "starcoder"``, and llama.cpp's tokens
    for it are cllm's (numbers, code, whole standard library files)."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (the bench extra)")
    _, d = bigcode_dir
    out = str(tmp_path / "m.gguf")
    cllm.export(d, out, dtype="f32")
    tok = cllm.load(d).tokenizer
    llm = llama_cpp.Llama(model_path=out, vocab_only=True, verbose=False)
    assert llm.metadata["tokenizer.ggml.pre"] == "starcoder"
    for text in NUMBERS + CODE + [d.data.decode("utf-8") for d in stdlib_docs[:6]]:
        assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == tok.encode(text), text[:80]
