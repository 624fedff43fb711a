"""GGUF export (cllm.export / ``cllm export``): the file read back with
``gguf.GGUFReader`` holds the checkpoint's tensors in llama.cpp's layout and
the metadata llama.cpp's GPT-2 loader reads; bad requests are refused in one
line without touching existing files; and, where llama-cpp-python is
installed (the ``bench`` extra), llama.cpp loads the export, computes cllm's
logits and tokenizes code to cllm's ids."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import cllm
from cllm.config import ModelConfig
from cllm.data.tokenizer import Tokenizer
from cllm.errors import CheckpointError, ConfigError
from cllm.model.gpt import Model

gguf = pytest.importorskip("gguf")

CFG = ModelConfig(vocab_size=640, context_len=128, num_layers=2, num_heads=2, embed_dim=64)

#: code with the things tokenizers get wrong: Unicode, tabs, long identifiers, numbers, contractions, FIM tokens
SNIPPETS = [
    "def main(argv):\n    return 0  # it's fine, we'll see\n",
    "class Très_Long_Identifier_With_Ünïcödé_ñame_1234567890:\n\tpass\n",
    "x = 3.14159e-10 + 0x1F_FF - 1_000_000  # ½ ⅔ Ⅻ\n",
    "s = '日本語のテキスト、中文文本' + \"한국어\"  # Ελληνικά русский 🙂🚀\n",
    "if a:\n\t\tb = [1,2 ,3]\r\n   \n\u00a0 nbsp\u2003em\u3000ideo   \n\n\n",
    "<fim_prefix>def add(a, b):\n    <fim_suffix>\n    return c<fim_middle>c = a + b<|endoftext|>",
    "# DON'T PANIC: IT'S fine, isn't it? we'LL see\n",
    "    } else {\n        fprintf(stderr, \"%s: %d\\n\", argv[0], errno);\n    }\n",
]


def _checkpoint(root, corpus: str, pretokenizer: str) -> str:
    """A saved model with a BPE trained on ``corpus`` and random weights large
    enough that the logits are far from uniform (config vocab > tokenizer
    size, so the export pads the vocabulary)."""
    tok = Tokenizer.train(corpus, vocab_size=600, progress=False, pretokenizer=pretokenizer)
    m = Model(CFG, tok, seq_len=CFG.context_len, threads=1, seed=5)
    rng = np.random.default_rng(0)
    for _, view in m.named_parameters():
        view += rng.standard_normal(view.shape).astype(np.float32) * 0.1
    d = str(root / f"ck-{pretokenizer}")
    m.save(d)
    return d


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, code_corpus):
    root = tmp_path_factory.mktemp("gguf")
    return {p: _checkpoint(root, code_corpus, p) for p in ("gpt2", "cllm")}


@pytest.fixture(scope="module")
def exports(ckpts, tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf-out")
    return {dt: cllm.export(ckpts["gpt2"], str(root / f"m-{dt}.gguf"), dtype=dt) for dt in ("f32", "f16", "bf16", "q8_0")}


def _fields(reader) -> dict:
    out = {}
    for name, f in reader.fields.items():
        if not f.types:
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            out[name] = [f.parts[i].tolist()[0] if f.types[-1] != gguf.GGUFValueType.STRING
                         else bytes(f.parts[i]).decode("utf-8") for i in f.data]
        elif f.types[0] == gguf.GGUFValueType.STRING:
            out[name] = bytes(f.parts[-1]).decode("utf-8")
        else:
            out[name] = f.parts[-1].tolist()[0]
    return out


def _expected_tensors(ckpt: str) -> dict:
    """The checkpoint's tensors renamed and transposed as llama.cpp expects."""
    sd = cllm.Model.load(ckpt, threads=1).state_dict()
    sd = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in sd.items()}
    out = {"token_embd.weight": sd["wte.weight"], "position_embd.weight": sd["wpe.weight"],
           "output_norm.weight": sd["ln_f.weight"], "output_norm.bias": sd["ln_f.bias"]}
    for i in range(CFG.num_layers):
        for src, dst in (("ln_1", "attn_norm"), ("attn.c_attn", "attn_qkv"), ("attn.c_proj", "attn_output"),
                         ("ln_2", "ffn_norm"), ("mlp.c_fc", "ffn_up"), ("mlp.c_proj", "ffn_down")):
            w = sd[f"h.{i}.{src}.weight"]
            out[f"blk.{i}.{dst}.weight"] = w.T if w.ndim == 2 else w
            out[f"blk.{i}.{dst}.bias"] = sd[f"h.{i}.{src}.bias"]
    return out


def _read_tensors(path: str) -> dict:
    r = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type, gguf.quants.dequantize(t.data, t.tensor_type).reshape(
        [int(n) for n in reversed(t.shape)])) for t in r.tensors}


def test_f32_tensors_read_back_equal(ckpts, exports):
    want = _expected_tensors(ckpts["gpt2"])
    got = _read_tensors(exports["f32"])
    assert set(got) == set(want)   # no output.weight: tied to token_embd
    for name, a in want.items():
        t, b = got[name]
        assert t == gguf.GGMLQuantizationType.F32, name
        assert b.shape == a.shape, name
        np.testing.assert_array_equal(b, a, err_msg=name)
    assert got["blk.0.attn_qkv.weight"][1].shape == (3 * CFG.embed_dim, CFG.embed_dim)
    assert got["blk.0.ffn_up.weight"][1].shape == (4 * CFG.embed_dim, CFG.embed_dim)
    assert got["blk.0.ffn_down.weight"][1].shape == (CFG.embed_dim, 4 * CFG.embed_dim)


@pytest.mark.parametrize("dtype,qtype,rtol", [("f16", "F16", 1e-3), ("bf16", "BF16", 8e-3), ("q8_0", "Q8_0", 1e-2)])
def test_reduced_dtypes(ckpts, exports, dtype, qtype, rtol):
    want = _expected_tensors(ckpts["gpt2"])
    got = _read_tensors(exports[dtype])
    for name, a in want.items():
        t, b = got[name]
        keep_f32 = a.ndim == 1 or name == "position_embd.weight"
        assert t == (gguf.GGMLQuantizationType.F32 if keep_f32 else gguf.GGMLQuantizationType[qtype]), name
        err = np.abs(b - a).max() / np.abs(a).max()
        assert err <= (0 if keep_f32 else rtol), (name, err)
    assert os.path.getsize(exports[dtype]) < os.path.getsize(exports["f32"])


def test_metadata(ckpts, exports):
    tok = cllm.load(ckpts["gpt2"], threads=1).tokenizer
    f = _fields(gguf.GGUFReader(exports["q8_0"]))
    assert f["general.architecture"] == "gpt2" and f["general.name"] == "ck-gpt2"
    assert f["gpt2.context_length"] == CFG.context_len
    assert f["gpt2.embedding_length"] == CFG.embed_dim
    assert f["gpt2.block_count"] == CFG.num_layers
    assert f["gpt2.attention.head_count"] == CFG.num_heads
    assert f["gpt2.feed_forward_length"] == 4 * CFG.embed_dim
    assert f["gpt2.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
    assert f["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "gpt-2"
    tokens, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == CFG.vocab_size
    assert tokens[:len(tok)] == [tok.id_to_token(i) for i in range(len(tok))]
    assert tokens[len(tok):] == [f"[PAD{i}]" for i in range(len(tok), CFG.vocab_size)]
    specials = set(tok.special_ids())
    T = gguf.TokenType
    assert types == [int(T.CONTROL) if i in specials else int(T.NORMAL) if i < len(tok) else int(T.UNUSED)
                     for i in range(CFG.vocab_size)]
    assert f["tokenizer.ggml.merges"] == [f"{tok.id_to_token(a)} {tok.id_to_token(b)}" for a, b in tok.merges()]
    eot = tok.eot_id
    for key in ("bos", "eos", "eot", "padding"):
        assert f[f"tokenizer.ggml.{key}_token_id"] == eot
    assert f["tokenizer.ggml.add_bos_token"] is False
    for key, text in (("pre", "<fim_prefix>"), ("suf", "<fim_suffix>"), ("mid", "<fim_middle>"), ("pad", "<fim_pad>")):
        assert f[f"tokenizer.ggml.fim_{key}_token_id"] == tok.token_to_id(text)


def test_modelfile(exports):
    mf = os.path.splitext(exports["f16"])[0] + ".Modelfile"
    text = open(mf, encoding="utf-8").read()
    assert "FROM ./m-f16.gguf\n" in text
    assert 'PARAMETER stop "<|endoftext|>"' in text
    assert f"PARAMETER num_ctx {CFG.context_len}" in text
    assert "{{ .Prompt }}" in text and "<fim_prefix>{{ .Prompt }}<fim_suffix>{{ .Suffix }}<fim_middle>" in text


def test_refuses_cllm_pretokenizer(ckpts, tmp_path):
    out = tmp_path / "x.gguf"
    with pytest.raises(ConfigError, match="code-aware pre-tokenizer.*--pretokenizer gpt2"):
        cllm.export(ckpts["cllm"], str(out))
    assert os.listdir(tmp_path) == []


def test_refusals(ckpts, tmp_path):
    with pytest.raises(ConfigError, match="dtype must be one of f32, f16, bf16, q8_0"):
        cllm.export(ckpts["gpt2"], str(tmp_path / "x.gguf"), dtype="q4_0")
    with pytest.raises(CheckpointError):
        cllm.export(str(tmp_path / "missing"), str(tmp_path / "x.gguf"))
    with pytest.raises(ConfigError, match="is a directory"):
        cllm.export(ckpts["gpt2"], str(tmp_path))
    with pytest.raises(ConfigError, match="no such directory"):
        cllm.export(ckpts["gpt2"], str(tmp_path / "nodir" / "x.gguf"))
    assert os.listdir(tmp_path) == []


def test_never_replaces_a_file_unasked(ckpts, tmp_path):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"mine")
    with pytest.raises(ConfigError, match="already exists"):
        cllm.export(ckpts["gpt2"], str(out), dtype="f32")
    assert out.read_bytes() == b"mine" and sorted(os.listdir(tmp_path)) == ["m.gguf"]
    mf = tmp_path / "n.Modelfile"
    mf.write_text("mine")
    with pytest.raises(ConfigError, match="n.Modelfile already exists"):
        cllm.export(ckpts["gpt2"], str(tmp_path / "n.gguf"), dtype="f32")
    assert mf.read_text() == "mine" and not (tmp_path / "n.gguf").exists()
    cllm.export(ckpts["gpt2"], str(out), dtype="f32", overwrite=True)
    assert gguf.GGUFReader(str(out)).tensors[0].name == "token_embd.weight"
    assert sorted(os.listdir(tmp_path)) == ["m.Modelfile", "m.gguf", "n.Modelfile"]   # no temp files left


def test_quantized_checkpoint_is_refused(ckpts, tmp_path):
    q = cllm.quantize(ckpts["gpt2"], str(tmp_path / "q8"), dtype="int8")
    with pytest.raises(CheckpointError, match="full-precision"):
        cllm.export(q, str(tmp_path / "x.gguf"))


def test_cli_export_and_one_line_errors(ckpts, tmp_path):
    out = tmp_path / "cli.gguf"
    r = subprocess.run([sys.executable, "-m", "cllm", "export", ckpts["gpt2"], "-o", str(out), "--dtype", "q8_0",
                        "--no-modelfile"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "wrote q8_0 GGUF" in r.stdout and os.listdir(tmp_path) == ["cli.gguf"]
    for args, msg in (([ckpts["gpt2"], "-o", str(out)], "already exists"),
                      ([ckpts["cllm"], "-o", str(tmp_path / "c.gguf")], "code-aware pre-tokenizer")):
        r = subprocess.run([sys.executable, "-m", "cllm", "export", *args], capture_output=True, text=True)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_cli_dtypes_are_the_exports():
    from cllm.cli.main import build_parser
    from cllm.inference.gguf import GGUF_DTYPES
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    export = sub.choices["export"]
    assert tuple(next(a for a in export._actions if a.dest == "dtype").choices) == GGUF_DTYPES


def test_cli_tokenize_pretokenizer(code_corpus, tmp_path):
    for pre in ("gpt2", "cllm"):
        out = tmp_path / f"{pre}.json"
        r = subprocess.run([sys.executable, "-m", "cllm", "tokenize", code_corpus, "--vocab-size", "300", "-q",
                            "--no-stats", "--pretokenizer", pre, "--out", str(out)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert Tokenizer.load(str(out)).pretokenizer == pre


def test_pretokenizer_option(code_corpus):
    from cllm.training.options import TrainOptions
    with pytest.raises(ConfigError, match="pretokenizer"):
        TrainOptions(pretokenizer="bert")
    with pytest.raises(ConfigError, match="pretokenizer must be one of cllm, gpt2"):
        Tokenizer.train(code_corpus, vocab_size=300, progress=False, pretokenizer="bert")
    text = "def f(x):  return x+1  # it's 42\n"
    a = Tokenizer.train(code_corpus, vocab_size=400, progress=False)                  # gpt2, the default
    b = Tokenizer.train(code_corpus, vocab_size=400, progress=False, pretokenizer="cllm")
    assert (a.pretokenizer, b.pretokenizer) == ("gpt2", "cllm")
    assert TrainOptions().pretokenizer == "gpt2"
    assert a.merges() != b.merges()
    assert Tokenizer.from_json(a.to_json()).encode(text) == a.encode(text)
    assert Tokenizer.from_json(a.to_json()).pretokenizer == "gpt2"
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_str(__import__("json").dumps(a.to_json()))
    for s in SNIPPETS:
        assert hf.encode(s).ids == a.encode(s), s


# ------------------------------------------------------------- llama.cpp itself
def _llama(path: str, n_ctx: int = CFG.context_len):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install "
                                                        "\"cllm[bench]\" builds it)")
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, n_threads=1,
                           type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, verbose=False)


def _llama_logits(llm, ids) -> np.ndarray:
    llm.reset()
    llm.eval(list(ids))
    return np.array(llm.scores[:len(ids)], dtype=np.float32)


PROMPTS = ["def fibonacci(n):\n    if n < 2:\n        return n\n", "import os\nimport sys\n\n",
           "class Stack:\n\tdef push(self, x):\n\t\tself.items.append(x)", "x = [i * 2 for i in range(10)]"]


def test_llama_cpp_logits_match_fp32(ckpts, exports):
    """The f32 export's logits in llama.cpp equal cllm FP32's up to llama.cpp's
    own rounding. Its CPU GELU reads a table of FP16 values at the input
    rounded to FP16 (ggml's GGML_GELU_FP16): up to ~5e-4 relative error in each
    MLP activation, which moves these logits (spread ~6) by up to ~1.5e-3, while
    cllm matches a float64 reference to ~2e-6. So the bound is 5e-4 of the
    logits' spread (max - min), with the same argmax at every position."""
    llm = _llama(exports["f32"])
    model = cllm.Model.load(ckpts["gpt2"], threads=1, seq_len=CFG.context_len)
    for p in PROMPTS:
        ids = model.tokenizer.encode(p)
        want = model.logits(ids)
        got = _llama_logits(llm, ids)
        assert got.shape == want.shape
        spread = float(want.max() - want.min())
        err = float(np.abs(got - want).max())
        assert err <= 5e-4 * spread, (p, err, spread)
        assert (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_llama_cpp_runs_half_precision_exports(ckpts, exports, dtype):
    """f16 and bf16 exports load too; their logits stay within 2% of the spread of cllm FP32's."""
    llm = _llama(exports[dtype])
    model = cllm.Model.load(ckpts["gpt2"], threads=1, seq_len=CFG.context_len)
    ids = model.tokenizer.encode(PROMPTS[0])
    want = model.logits(ids)
    assert np.abs(_llama_logits(llm, ids) - want).max() <= 0.02 * float(want.max() - want.min())


def test_llama_cpp_tokenizes_like_cllm(ckpts, exports):
    llm = _llama(exports["f32"])
    tok = cllm.load(ckpts["gpt2"], threads=1).tokenizer
    for s in SNIPPETS + PROMPTS:
        assert llm.tokenize(s.encode("utf-8"), add_bos=False, special=True) == tok.encode(s), s
        assert llm.detokenize(tok.encode(s), special=True) == s.encode("utf-8"), s


def test_llama_cpp_tokenizes_source_files_like_cllm(ckpts, exports, code_corpus):
    llm = _llama(exports["f32"])
    tok = cllm.load(ckpts["gpt2"], threads=1).tokenizer
    for name in sorted(os.listdir(code_corpus)):
        data = open(os.path.join(code_corpus, name), "rb").read()
        assert llm.tokenize(data, add_bos=False, special=True) == tok.encode(data), name


def test_llama_cpp_q8_0_greedy_close(ckpts, exports):
    """The q8_0 export loads, and its greedy continuation (16 tokens after each
    prompt) is close to cllm FP32's: at every step the token llama.cpp picks is
    cllm's argmax or within 2% of the logits' spread of cllm's maximum, and at
    least 3 of 4 continuations are identical."""
    llm = _llama(exports["q8_0"])
    model = cllm.Model.load(ckpts["gpt2"], threads=1, seq_len=CFG.context_len)
    same = 0
    for p in PROMPTS:
        ids = model.tokenizer.encode(p)
        got = [t for _, t in zip(range(16), llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True))]
        seq = list(ids)
        mine = []
        for t in got:
            lg = model.logits(seq)[-1]
            assert lg.max() - lg[t] <= 0.02 * (lg.max() - lg.min()), (p, seq, t)
            mine.append(int(lg.argmax()))
            seq.append(t)
        same += mine == got
    assert same >= 3
