"""Fill-in-the-middle: the tokens every trained tokenizer has (and what
Hugging Face tools see of them), the training transform (PSM / SPM,
deterministic per document), infilling through the API and the CLI, and
the same greedy infill in ``transformers``."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cllm
import cllm.inference.evaluation
from cllm.config import ModelConfig
from cllm.data import fim
from cllm.data.corpus import Document
from cllm.data.tokenizer import EOT, FIM_TOKENS, Tokenizer
from cllm.model.gpt import Model

CODE = ("def add(a, b):\n    return a + b\n\n\nclass Point:\n    def __init__(self, x, y):\n"
        "        self.x = x\n        self.y = y\n") * 30
REPO = os.path.dirname(os.path.dirname(cllm.__file__))


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(texts=[CODE], vocab_size=320, progress=False)


def test_every_trained_tokenizer_has_the_fim_tokens(tok):
    ids = [tok.token_to_id(t) for t in (EOT,) + FIM_TOKENS]
    assert ids == [256, 257, 258, 259, 260] and set(ids) <= set(tok.special_ids())
    assert fim.fim_token_ids(tok) == {"prefix": 257, "middle": 258, "suffix": 259}
    assert fim.fim_token_ids(Tokenizer.byte_level()) is None


def test_hugging_face_files_name_them_special(tok, tmp_path):
    m = Model(ModelConfig(320, 64, 1, 2, 16), tok, threads=1)
    d = m.save(str(tmp_path / "m"))
    cfg = json.load(open(os.path.join(d, "tokenizer_config.json")))
    spm = json.load(open(os.path.join(d, "special_tokens_map.json")))
    assert spm["additional_special_tokens"] == list(FIM_TOKENS) == cfg["additional_special_tokens"]
    assert {v["content"] for v in cfg["added_tokens_decoder"].values()} == {EOT, *FIM_TOKENS}
    assert all(v["special"] for v in json.load(open(os.path.join(d, "tokenizer.json")))["added_tokens"])
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(d)
    assert set(FIM_TOKENS) <= set(hf.all_special_tokens)
    assert hf.encode("<fim_prefix>def<fim_suffix>") == tok.encode("<fim_prefix>def<fim_suffix>")


def _docs(n: int) -> list:
    return [Document(f"/r/f{i}.py", (CODE[: 200 + 37 * i]).encode(), f"f{i}.py") for i in range(n)]


def _stream(tok, docs):
    return np.asarray(tok.encode_documents([d.data for d in docs]))


def test_fim_transform_psm_spm_and_determinism(tok):
    docs = _docs(12)
    ids = _stream(tok, docs)
    t = fim.fim_token_ids(tok)
    out, n = fim.apply_fim(docs, ids, 10, tok, rate=1.0, spm_rate=0.0, seed=3)
    ends = np.flatnonzero(out == tok.eot_id)
    assert n == ends[9] + 1 and np.array_equal(out[n:], ids[np.flatnonzero(ids == tok.eot_id)[9] + 1:])
    start = 0
    for k in range(10):                       # every training document: PSM, and it reassembles exactly
        seg = list(out[start:ends[k]])
        start = ends[k] + 1
        assert seg[0] == t["prefix"] and seg.count(t["suffix"]) == 1 and seg.count(t["middle"]) == 1
        i, j = seg.index(t["suffix"]), seg.index(t["middle"])
        p, s_, m = tok.decode(seg[1:i]), tok.decode(seg[i + 1:j]), tok.decode(seg[j + 1:])
        assert p + m + s_ == docs[k].data.decode()
    spm, _ = fim.apply_fim(docs, ids, 10, tok, rate=1.0, spm_rate=1.0, seed=3)
    assert list(spm[:2]) == [t["prefix"], t["suffix"]]
    again, _ = fim.apply_fim(docs, ids, 10, tok, rate=0.5, spm_rate=0.5, seed=3)
    assert np.array_equal(again, fim.apply_fim(docs, ids, 10, tok, rate=0.5, spm_rate=0.5, seed=3)[0])
    other, _ = fim.apply_fim(docs, ids, 10, tok, rate=0.5, spm_rate=0.5, seed=4)
    assert not np.array_equal(again, other)
    # a document's examples depend on the seed and its path only, not on the order
    rev = docs[:10][::-1] + docs[10:]
    a, _ = fim.apply_fim(rev, _stream(tok, rev), 10, tok, rate=0.5, spm_rate=0.5, seed=3)
    seg_of = lambda arr, k: list(arr[(np.flatnonzero(arr == tok.eot_id)[k - 1] + 1) if k else 0:
                                     np.flatnonzero(arr == tok.eot_id)[k]])
    assert seg_of(a, 9) == seg_of(again, 0)
    none, n0 = fim.apply_fim(docs, ids, 10, tok, rate=0.0, spm_rate=0.5, seed=3)
    assert none is ids and n0 == np.flatnonzero(ids == tok.eot_id)[9] + 1


def test_infill_prompt_keeps_a_special_spelled_in_the_source_as_text(tok):
    t = fim.fim_token_ids(tok)
    ids = fim.infill_ids(tok, "s = '<fim_middle>'\n", "\n", ctx=64, reserve=4, order="psm")
    assert ids.count(t["middle"]) == 1 and ids[-1] == t["middle"]
    ids = fim.infill_ids(tok, "s = '<fim_middle>'\n", "\n", ctx=64, reserve=4)      # SPM, the default
    assert ids.count(t["middle"]) == 1 and ids[:2] == [t["prefix"], t["suffix"]]
    assert ids[ids.index(t["middle"]) + 1:] == fim.encode_text(tok, "s = '<fim_middle>'\n")
    with pytest.raises(cllm.ConfigError, match="infill order"):
        fim.infill_ids(tok, "a", "b", ctx=64, reserve=4, order="pms")
    with pytest.raises(fim.NoInfill):
        fim.infill_ids(Tokenizer.byte_level(), "a", "b", ctx=64, reserve=4)


@pytest.fixture(scope="module")
def fim_run(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("fimcorpus")
    for i in range(8):
        (d / f"m{i}.py").write_text(CODE[: 600 + 50 * i])
    out = str(tmp_path_factory.mktemp("fimrun") / "run")
    cllm.train(str(d), out_dir=out, max_steps=30, batch_size=4, seq_len=64, vocab_size=320, embed_dim=32,
               num_layers=1, num_heads=2, threads=1, progress=False, fim_rate=0.9, val_fraction=0.2,
               warmup_steps=2, learning_rate=3e-3)
    return out


def test_training_with_fim_and_infill_through_the_api(fim_run):
    m = cllm.load(fim_run)
    st = json.load(open(os.path.join(fim_run, "trainer_state.json")))
    assert st["options"]["fim_rate"] == 0.9 and st["options"]["fim_spm_rate"] == 0.5
    mid = m.infill("def add(a, b):\n    return ", "\n\n\nclass Point:\n", max_new_tokens=8, temperature=0)
    im = cllm.load(fim_run, dtype="fp32")
    assert im.infill("def add(a, b):\n    return ", "\n\n\nclass Point:\n", max_new_tokens=8, temperature=0) == mid
    pieces = list(im.infill_stream("def add(", "):", max_new_tokens=5, temperature=0))
    assert "".join(pieces) == im.infill("def add(", "):", max_new_tokens=5, temperature=0)
    with pytest.raises(cllm.ConfigError, match="fill-in-the-middle"):
        Model(ModelConfig(257, 32, 1, 2, 16), Tokenizer.byte_level(), threads=1).infill("a", "b")


def test_a_fim_run_scores_infilling_at_its_end(fim_run):
    """The end of a run that trains with FIM: single-line infilling on the
    held-out files, in the last metrics row and the saved summary."""
    from cllm.training.metrics import read_metrics
    last = read_metrics(os.path.join(fim_run, "metrics.jsonl"))[-1]
    assert last["step"] == 30 and "val_loss" in last
    assert 0 <= last["fim_line_exact_match"] <= 1 and last["fim_line_middle_bpb"] > 0
    assert 0 < last["fim_line_cases"] <= 64
    summary = json.load(open(os.path.join(fim_run, "trainer_state.json")))["summary"]
    assert summary["fim_line_exact_match"] == last["fim_line_exact_match"]
    from cllm.model.infill_eval import score_infilling
    docs = [CODE.encode()]
    calls = []
    assert score_infilling(cllm.load(fim_run), docs, samples=5, stop_early=lambda: calls.append(1) or True) == {}
    assert calls == [1]                           # a stopping run does not wait for the cases
    assert score_infilling(cllm.load(fim_run), docs, samples=5)["cases"] == 5


def test_infilling_prompts_fit_the_given_context(fim_run, monkeypatch):
    """``context`` bounds every prompt and its answer (a run scores at its
    sequence length, below a pretrained model's context); by default the
    model's context does."""
    from cllm.model import infill_eval
    m = cllm.load(fim_run)
    seen = []
    real = type(m).stream

    def stream(self, ids, n, *a, **kw):
        seen.append(len(ids) + n)
        return real(self, ids, n, *a, **kw)

    monkeypatch.setattr(type(m), "stream", stream)
    docs = [(CODE * 20).encode()]
    infill_eval.score_infilling(m, docs, samples=4, max_new_tokens=8, context=40)
    assert seen and max(seen) <= 40
    seen.clear()
    infill_eval.score_infilling(m, docs, samples=4, max_new_tokens=8)
    assert max(seen) <= m.config.context_len and max(seen) > 40


def test_infill_on_the_command_line(fim_run, tmp_path):
    (tmp_path / "pre.py").write_text("def add(a, b):\n    return ")
    (tmp_path / "suf.py").write_text("\n")
    r = subprocess.run([sys.executable, "-m", "cllm", "generate", fim_run, "--prefix-file", str(tmp_path / "pre.py"),
                        "--suffix-file", str(tmp_path / "suf.py"), "-n", "6", "-t", "0"], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    mid = cllm.load(fim_run, dtype="fp32").infill("def add(a, b):\n    return ", "\n", max_new_tokens=6,
                                                  temperature=0)
    assert r.stdout == mid + "\n"
    r = subprocess.run([sys.executable, "-m", "cllm", "generate", fim_run, "--prefix-file", str(tmp_path / "pre.py"),
                        "--suffix-file", str(tmp_path / "suf.py"), "-n", "6", "-t", "0", "--infill-order", "psm"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout == cllm.load(fim_run, dtype="fp32").infill(
        "def add(a, b):\n    return ", "\n", max_new_tokens=6, temperature=0, order="psm") + "\n", r.stderr
    r = subprocess.run([sys.executable, "-m", "cllm", "generate", fim_run, "-p", "def add(", "--suffix", "):",
                        "-n", "4", "-t", "0"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "def add(" not in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("order, prompt", [
    ("psm", "<fim_prefix>def add(a, b):\n    return <fim_suffix>\n\n\nclass Point:\n<fim_middle>"),
    ("spm", "<fim_prefix><fim_suffix>\n\n\nclass Point:\n<fim_middle>def add(a, b):\n    return ")])
def test_transformers_gives_the_same_greedy_infill(fim_run, order, prompt):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    im = cllm.load(fim_run, dtype="fp32")
    hf_tok = transformers.AutoTokenizer.from_pretrained(fim_run)
    ids = hf_tok(prompt, return_tensors="pt").input_ids
    assert ids[0].tolist() == fim.infill_ids(im.tokenizer, "def add(a, b):\n    return ", "\n\n\nclass Point:\n",
                                             ctx=im.config.context_len, reserve=8, order=order)
    hf = transformers.GPT2LMHeadModel.from_pretrained(fim_run)
    with torch.no_grad():
        out = hf.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=im.tokenizer.eot_id,
                          pad_token_id=im.tokenizer.eot_id)
    hf_new = [t for t in out[0, ids.shape[1]:].tolist()]
    if im.tokenizer.eot_id in hf_new:
        hf_new = hf_new[:hf_new.index(im.tokenizer.eot_id)]
    ours = list(im.generate_ids(ids[0].tolist(), max_new_tokens=8, temperature=0))
    assert ours == hf_new


def test_fim_cases_are_deterministic_and_cut_the_text():
    docs = [CODE.encode()]
    for mode in ("line", "span"):
        cases = cllm.inference.evaluation.fim_cases(docs, mode, 20, seed=1)
        assert cases == cllm.inference.evaluation.fim_cases(docs, mode, 20, seed=1) and len(cases) == 20
        assert all(p + m + s == CODE for p, m, s in cases)
        if mode == "line":
            assert all("\n" not in m and m.strip() and (not p or p.endswith("\n")) for p, m, s in cases)


def test_eval_fim_api_and_cli(fim_run, tmp_path):
    from cllm.inference.evaluation import evaluate_fim
    (tmp_path / "held.py").write_text(CODE[:1500])
    r = evaluate_fim(fim_run, str(tmp_path), mode="line", samples=10, threads=1)
    assert 0.0 <= r["exact_match"] <= 1.0 and r["cases"] == 10 and r["infill"] == 1.0
    assert r["middle_bits_per_byte"] > 0
    r2 = evaluate_fim(fim_run, str(tmp_path), mode="span", samples=5, threads=1, use_suffix=False)
    assert r2["infill"] == 0.0 and "middle_bits_per_byte" not in r2
    out = subprocess.run([sys.executable, "-m", "cllm", "eval", fim_run, str(tmp_path), "--fim", "line",
                          "--samples", "5", "-q"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "exact match" in out.stdout and "bits/byte" in out.stdout, out.stderr


def test_long_documents_become_several_examples_that_fit_a_sequence(tok):
    docs = [Document("/r/big.py", CODE.encode(), "big.py")]
    ids = _stream(tok, docs)
    t = fim.fim_token_ids(tok)
    out, n = fim.apply_fim(docs, ids, 1, tok, rate=1.0, spm_rate=0.0, seed=2, max_chars=300)
    seg = list(out[:n - 1])
    pieces = fim.split_lines(CODE, 300)
    assert len(pieces) > 5 and "".join(pieces) == CODE and all(len(p) <= 300 for p in pieces)
    assert seg.count(t["prefix"]) == seg.count(t["middle"]) == len(pieces)
    text = []
    starts = [i for i, x in enumerate(seg) if x == t["prefix"]] + [len(seg)]
    for a, b in zip(starts, starts[1:]):
        ex = seg[a:b]
        i, j = ex.index(t["suffix"]), ex.index(t["middle"])
        text.append(tok.decode(ex[1:i]) + tok.decode(ex[j + 1:]) + tok.decode(ex[i + 1:j]))
    assert "".join(text) == CODE


def test_typing_at_the_cursor_only_appends_to_an_spm_prompt(tok):
    """The editor case: the same file, a few characters more at the cursor
    each request. In SPM order the new prompt extends the old one but for the
    last tokens before the cursor (re-tokenized), also when the file exceeds
    the context and the prefix is cut: the cut moves in steps of TRIM_STEP
    tokens, so it moves rarely; in PSM order the suffix after the cursor is
    always rerun."""
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(60))
    cur = len(text) // 2
    pre0, suf = text[:cur], text[cur:]
    typed = "    value = compute(alpha, beta)  # typed at the cursor\n" * 4

    def common(a, b):
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        return k

    for ctx in (2048, 256):          # fits the context / prefix and suffix cut
        for order in ("spm", "psm"):
            prev = fim.infill_ids(tok, pre0, suf, ctx=ctx, reserve=16, order=order)
            rerun, full = [], 0
            for n in range(1, len(typed) + 1):
                ids = fim.infill_ids(tok, pre0 + typed[:n], suf, ctx=ctx, reserve=16, order=order)
                assert len(ids) <= ctx - 16
                k = common(prev, ids)
                rerun.append(len(ids) - k)
                full += k < len(ids) // 2
                prev = ids
            if order == "spm":
                assert max(sorted(rerun)[:int(0.9 * len(rerun))]) <= 4, rerun   # a few tokens per keystroke
                assert full <= (len(tok.encode(typed)) // fim.TRIM_STEP + 1 if ctx == 256 else 0), full
            else:
                assert min(rerun) > len(tok.encode(suf[:200])) // 2 if ctx == 2048 else min(rerun) > 40


def test_the_infill_order_follows_what_the_model_was_trained_on(fim_run, tmp_path):
    assert cllm.load(fim_run).infill_order == "spm" == cllm.load(fim_run, dtype="int8").infill_order
    for i in range(4):
        (tmp_path / f"m{i}.py").write_text(CODE[: 600 + 50 * i])
    out = str(tmp_path / "psm")      # a run that makes PSM examples only
    trained = cllm.train(str(tmp_path), out_dir=out, max_steps=2, batch_size=2, seq_len=64, vocab_size=300,
                         embed_dim=32, num_layers=1, num_heads=2, threads=1, progress=False, fim_rate=0.9,
                         fim_spm_rate=0.0, val_fraction=0.0, warmup_steps=1)
    for m in (trained, cllm.load(out), cllm.load(out, dtype="fp32")):
        assert m.infill_order == "psm"
        a = m.infill("def add(a, b):\n    return ", "\n", max_new_tokens=6, temperature=0)
        assert a == m.infill("def add(a, b):\n    return ", "\n", max_new_tokens=6, temperature=0, order="psm")


def test_cllm_train_prints_the_infilling_score(tmp_path):
    for i in range(6):
        (tmp_path / f"m{i}.py").write_text(CODE[: 600 + 50 * i])
    base = [sys.executable, "-m", "cllm", "train", str(tmp_path), "--max-steps", "3", "--batch-size", "2",
            "--seq-len", "64", "--vocab-size", "300", "--embed-dim", "32", "--num-layers", "1", "--num-heads", "2",
            "--threads", "1", "-q", "--sample-tokens", "4", "--val-fraction", "0.3"]
    r = subprocess.run(base + ["--out", str(tmp_path / "a")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^infilling: exact match \d+\.\d% of \d+ held-out lines, middle [\d.]+ bits/byte$",
                     r.stdout, re.M), r.stdout
    r = subprocess.run(base + ["--out", str(tmp_path / "b"), "--fim-eval-samples", "0"], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 0 and "infilling:" not in r.stdout, r.stdout + r.stderr


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 3000), st.integers(0, 3000), st.integers(1, 2048))
def test_infill_cuts_fit_the_room(n_pre, n_suf, n_ext, room):
    """Whatever the lengths: the kept parts fit the room, the suffix keeps at
    least its quarter share when it has that much, and a prompt that fits is
    kept whole."""
    p, s, e = fim._fit(n_pre, n_suf, n_ext, room)
    assert 0 <= p <= n_pre and 0 <= s <= n_suf and 0 <= e <= n_ext and p + s + e <= room
    if n_pre + n_suf + n_ext <= room:
        assert (p, s, e) == (n_pre, n_suf, n_ext)
    else:
        assert s >= min(n_suf, room // 4)
        assert p >= min(n_pre, room - s) - fim.TRIM_STEP + 1 or p == min(n_pre, room - s)
