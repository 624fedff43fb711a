"""StarCoder-family (``gpt_bigcode``) checkpoints in the decoder: small random
GPTBigCodeForCausalLM models made by transformers (multi-query and
multi-head attention, odd head sizes), saved with save_pretrained beside a
byte-level BPE tokenizer with StarCoder's FIM tokens, give transformers'
logits, greedy tokens and infills in every weight dtype, on the step and the
batched prefill paths; the paths that cannot handle them refuse by name."""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import numpy as np
import pytest

import cllm
from cllm.data.fim import infill_ban, infill_ids

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(cllm.__file__)))
SPECIALS = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]
TEXTS = [
    "def main(argv):\n    return 0  # it's fine, we'll see\n",
    "import os\nfor i in range(10):\n    print(i, os.getcwd())\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n",
]
#: (name, multi_query, n_embd, n_head, n_layer): K/V heads 1 or n_head, odd head sizes
SHAPES = [("mq4", True, 48, 4, 2), ("mh3", False, 30, 3, 3), ("mq2_odd", True, 42, 2, 1), ("mh2_odd", False, 34, 2, 2),
          ("mq3_odd", True, 33, 3, 2)]
CTX = 160
#: prefill vs the step, relative to the largest |logit| (as tests/test_prefill.py:
#: only the FP32 summation order differs, which can flip a BF16 rounding or an
#: int8 quantization boundary of a later layer's input)
PREFILL_TOL = {"fp32": 1e-5, "bf16": 5e-3, "int8": 5e-3}


@pytest.fixture(scope="module")
def bpe():
    from tokenizers import ByteLevelBPETokenizer
    b = ByteLevelBPETokenizer()
    b.train_from_iterator(TEXTS * 20, vocab_size=400, min_frequency=1, special_tokens=SPECIALS, show_progress=False)
    return b


@pytest.fixture(scope="module")
def models(bpe, tmp_path_factory):
    """name -> (transformers model, directory saved with save_pretrained)."""
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM, PreTrainedTokenizerFast
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", additional_special_tokens=SPECIALS[1:])
    root = tmp_path_factory.mktemp("bigcode")
    out = {}
    for k, (name, mq, C, NH, L) in enumerate(SHAPES):
        cfg = GPTBigCodeConfig(vocab_size=bpe.get_vocab_size(), n_positions=CTX, n_embd=C, n_layer=L, n_head=NH,
                               multi_query=mq, bos_token_id=0, eos_token_id=0)
        torch.manual_seed(k)
        model = GPTBigCodeForCausalLM(cfg).eval()
        with torch.no_grad():   # larger weights than the 0.02 init, so the logits are far from uniform
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        d = str(root / name)
        model.save_pretrained(d, safe_serialization=True)
        fast.save_pretrained(d)
        out[name] = (model, d)
    return out


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def hf_greedy(model, ids, n, suppress=None, eos=None):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=eos,
                             pad_token_id=0, attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             suppress_tokens=suppress)
    return out[0, len(ids):].tolist()


def prompt_ids(bpe, n):
    ids = bpe.encode("".join(TEXTS) * 4).ids
    return ids[:n]


@pytest.mark.parametrize("name", [s[0] for s in SHAPES])
def test_logits_and_greedy_tokens_match_transformers(models, bpe, name):
    model, d = models[name]
    im = cllm.load(d, dtype="fp32")   # for inference
    assert isinstance(im, cllm.InferenceModel) and im.dtype == "fp32"
    tm = cllm.load(d)   # trainable: the training model's forward, and generation from its weights
    assert isinstance(tm, cllm.Model)
    ids = prompt_ids(bpe, 70)
    ref = hf_logits(model, ids)
    spread = float(ref.max() - ref.min())
    prompt = bpe.encode("def main(argv):\n    return").ids
    ref_ids = hf_greedy(model, prompt, 24)
    for m in (im, tm):
        assert m.config.model_type == "gpt_bigcode"
        assert m.config.kv_heads == (1 if model.config.multi_query else model.config.n_head)
        assert np.abs(m.logits(ids) - ref).max() <= 1e-4 * spread
        assert list(m.generate_ids(prompt, max_new_tokens=24, temperature=0, stop_at_eot=False)) == ref_ids


@pytest.mark.parametrize("name", ["mq4", "mh3", "mq3_odd"])
def test_prefill_matches_the_step_and_threads_are_bit_identical(models, bpe, name):
    model, d = models[name]
    ids = prompt_ids(bpe, 150)   # several prefill chunks and attention blocks
    ref = hf_logits(model, ids)[-1]
    for dtype in ("fp32", "bf16", "int8"):
        last = {}
        for threads in (1, 2):
            im = cllm.load(d, dtype=dtype, threads=threads)
            dec = im._decoder()
            for chunk in (0, 7, 64, 256):   # 0: every token through the step
                dec.prefill_chunk = chunk
                lg = np.empty(im.config.vocab_size, dtype=np.float32)
                dec.reset()
                dec.extend(ids, lg)
                last[(threads, chunk)] = lg
            # nll through the prefill equals nll token by token
            dec.prefill_chunk = 0
            a = dec.nll(ids)
            dec.prefill_chunk = 32
            assert abs(dec.nll(ids) - a) <= PREFILL_TOL[dtype] * abs(a)
        step = last[(1, 0)]
        assert np.array_equal(last[(2, 0)], step)              # the step: bit-identical across threads
        for chunk in (7, 64, 256):
            assert np.array_equal(last[(2, chunk)], last[(1, chunk)])
            assert np.abs(last[(1, chunk)] - step).max() <= PREFILL_TOL[dtype] * float(np.abs(step).max()), dtype
        spread = float(ref.max() - ref.min())
        tol = {"fp32": 1e-4, "bf16": 0.02, "int8": 0.05}[dtype]
        assert np.abs(step - ref).max() <= tol * spread, dtype


@pytest.mark.parametrize("name", ["mq4", "mh3"])
def test_prompt_cache_reuses_the_grouped_cache(models, bpe, name):
    from cllm._native import check, ffi, lib
    _, d = models[name]
    ids = prompt_ids(bpe, 120)
    for dtype in ("fp32", "int8"):
        dec = cllm.load(d, dtype=dtype, threads=2)._decoder()
        fresh = np.empty(dec.vocab_size, dtype=np.float32)
        dec.extend(ids, fresh)             # the whole prompt at once
        dec.reset()
        assert dec.prime(ids[:90]) == 0
        assert dec.prime(ids[:90] + [5, 6]) == 90     # a different tail: the common prefix is kept
        assert dec.prime(ids) == 90                   # only the last 30 ids run, over the cached 90
        assert dec.pos == len(ids)
        out = np.empty(dec.vocab_size, dtype=np.float32)
        check(lib.cllm_decoder_logits(dec._h, ffi.cast("float *", ffi.from_buffer(out))))
        assert np.abs(out - fresh).max() <= PREFILL_TOL[dtype] * float(np.abs(fresh).max())


@pytest.mark.parametrize("name", ["mq4", "mh2_odd"])
def test_low_precision_and_quantized_checkpoints(models, bpe, name, tmp_path):
    model, d = models[name]
    ids = prompt_ids(bpe, 40)
    ref = cllm.load(d, dtype="fp32").logits(ids)
    scale = float(np.abs(ref).max())
    for dtype, tol in (("bf16", 0.02), ("int8", 0.05)):
        got = cllm.load(d, dtype=dtype).logits(ids)
        assert np.abs(got - ref).max() < tol * scale, dtype
        q = cllm.quantize(d, str(tmp_path / dtype), dtype=dtype)   # stored as the decoder holds it
        again = cllm.load(q)
        assert again.dtype == dtype and again.config.kv_heads == cllm.load(d, dtype=dtype).config.kv_heads
        assert np.array_equal(again.logits(ids), got)
    for dtype in ("bf16", "int8"):
        a = list(cllm.load(d, dtype=dtype, threads=1).generate_ids(ids, max_new_tokens=20, temperature=0,
                                                                     stop_at_eot=False))
        assert a == list(cllm.load(d, dtype=dtype, threads=2).generate_ids(ids, max_new_tokens=20, temperature=0,
                                                                             stop_at_eot=False))


@pytest.mark.parametrize("name", ["mq4", "mh3"])
def test_half_precision_files(models, bpe, name, tmp_path):
    import json
    model, _ = models[name]
    ids = prompt_ids(bpe, 50)
    for dt in (torch.float16, torch.bfloat16):
        d = str(tmp_path / str(dt))
        copy.deepcopy(model).to(dt).save_pretrained(d, safe_serialization=True)
        bpe.save(os.path.join(d, "tokenizer.json"))
        ref = hf_logits(copy.deepcopy(model).to(dt).to(torch.float32), ids)   # the weights rounded as saved
        assert np.abs(cllm.load(d).logits(ids) - ref).max() <= 1e-4 * float(ref.max() - ref.min())
    cfg = json.loads(open(os.path.join(d, "config.json")).read())
    cfg["tie_word_embeddings"] = False
    open(os.path.join(d, "config.json"), "w").write(json.dumps(cfg))
    with pytest.raises(cllm.CheckpointError, match="untied LM head"):
        cllm.load(d)


def test_kv_cache_is_one_nth_for_multi_query(models):
    model, d = models["mq4"]
    mq = cllm.load(d)._decoder().kv_bytes
    c = model.config
    assert mq == 2 * c.n_layer * CTX * (c.n_embd // c.n_head) * 4
    gpt2 = cllm.ModelConfig(c.vocab_size, CTX, c.n_layer, c.n_head, c.n_embd)
    from cllm.model.decoder import Decoder
    assert Decoder.create(gpt2).kv_bytes == c.n_head * mq


def test_infill_with_starcoder_fim_tokens_matches_transformers(models):
    model, d = models["mq4"]
    im = cllm.load(d)
    tok = im.tokenizer
    assert tok.eot_id == 0
    prefix, suffix = "def main(argv):\n    ", "\n    return 0\n"
    for order in ("psm", "spm"):
        ids = infill_ids(tok, prefix, suffix, CTX, 20, order=order)
        assert ids[0] == tok.token_to_id("<fim_prefix>")
        ref = hf_greedy(model, ids, 20, suppress=infill_ban(tok), eos=tok.eot_id)
        if ref and ref[-1] == tok.eot_id:
            ref = ref[:-1]
        got = im.infill(prefix, suffix, max_new_tokens=20, temperature=0, order=order)
        assert got == tok.decode(ref)


def test_generate_and_serve_through_the_cli(models):
    import httpx
    _, d = models["mh3"]
    r = subprocess.run([sys.executable, "-m", "cllm", "generate", d, "-p", "def main", "-n", "8", "-t", "0",
                        "--dtype", "int8", "--threads", "1"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("def main")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_serve import Server
    s = Server(d)
    try:
        body = {"prompt": "def main", "max_tokens": 6, "temperature": 0}
        res = httpx.post(s.url + "/v1/completions", json=body, timeout=60).json()
        want = cllm.load(d, threads=1).generate("def main", max_new_tokens=6, temperature=0)
        assert res["choices"][0]["text"] == want
    finally:
        s.stop()


def _hf_loss_and_grads(model, x, y):
    """transformers' loss over the given next-token targets (-1 ignored) and
    its parameter gradients, by name."""
    m = copy.deepcopy(model)
    logits = m(torch.from_numpy(x).long()).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(y).long().reshape(-1),
                                             ignore_index=-1)
    loss.backward()
    return loss.item(), {k: p.grad.numpy() for k, p in m.named_parameters()}


def _rel(a, b):
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


#: (model, rows, threads): token-row shards (1 or 3 sequences on 2 spheres), whole sequences
STEP_CASES = [("mq4", 1, 2), ("mh3", 3, 2), ("mq3_odd", 2, 1), ("mh2_odd", 2, 2)]


@pytest.mark.parametrize("name, rows, threads", STEP_CASES)
def test_training_step_gradients_match_transformers(models, name, rows, threads, rng):
    """One forward + backward of the training model loaded from a gpt_bigcode
    checkpoint: the loss and every parameter's gradient equal transformers'
    (the gradients of nn.Linear matrices compared transposed, a multi-head
    c_attn's rows regrouped), within the GPT-2 tests' tolerance."""
    from cllm.model.layout import tensor_from_hf
    torch.set_num_threads(1)
    model, d = models[name]
    T = 37
    m = cllm.Model.load(d, batch_size=rows, seq_len=T, threads=threads)
    x = rng.integers(0, m.config.vocab_size, (rows, T))
    y = rng.integers(0, m.config.vocab_size, (rows, T))
    y[0, :3] = -1
    loss = m.forward(x, y)
    m.backward()
    ref_loss, ref = _hf_loss_and_grads(model, x, y)
    assert abs(loss - ref_loss) <= 1e-5 * ref_loss
    checked = 0
    for k, g in m.named_grads():
        want = tensor_from_hf(m.config, k, ref[k])
        assert np.abs(want).max() > 0, k
        assert _rel(g, want) < 1e-4, f"{k}: rel err {_rel(g, want):.2e}"
        checked += 1
    assert checked == len(ref) == 4 + 12 * m.config.num_layers


@pytest.mark.parametrize("name", ["mq4", "mh3"])
def test_fine_tuned_model_saves_back_as_gpt_bigcode(models, name, rng, tmp_path):
    """Train a gpt_bigcode checkpoint a few steps and save it: transformers
    opens the result as GPTBigCodeForCausalLM with cllm's logits, and cllm
    loads it back bit for bit."""
    from transformers import GPTBigCodeForCausalLM
    _, d = models[name]
    m = cllm.Model.load(d, batch_size=2, seq_len=32, threads=2)
    before = m.params.copy()
    for step in range(1, 4):
        x = rng.integers(0, m.config.vocab_size, (2, 32))
        m.train_step(x, np.roll(x, -1, axis=1), step, 3e-3)
    assert not np.array_equal(m.params, before)
    out = str(tmp_path / "tuned")
    m.save(out)
    hf = GPTBigCodeForCausalLM.from_pretrained(out).eval()
    assert hf.config.model_type == "gpt_bigcode" and hf.config.multi_query == (m.config.kv_heads == 1)
    ids = list(rng.integers(0, m.config.vocab_size, 40))
    ref = hf_logits(hf, ids)
    assert np.abs(m.logits(np.array([ids]))[0] - ref).max() <= 1e-4 * float(ref.max() - ref.min())
    again = cllm.Model.load(out, batch_size=2, seq_len=32)
    assert again.config == m.config and np.array_equal(again.params, m.params)
    exported = cllm.load(out, dtype="fp32")   # the inference loader reads it too
    assert np.abs(exported.logits(ids) - ref).max() <= 1e-4 * float(ref.max() - ref.min())


def test_cli_fine_tunes_a_gpt_bigcode_model(models, tmp_path):
    """`cllm train --init-from` a gpt_bigcode directory: the run's checkpoint is
    a gpt_bigcode one transformers loads, with the source's tokenizer."""
    import json
    from transformers import GPTBigCodeForCausalLM
    _, d = models["mq4"]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("".join(TEXTS) * 40)
    out = tmp_path / "tuned"
    r = subprocess.run([sys.executable, "-m", "cllm", "train", str(src), "--init-from", d, "--out", str(out),
                        "--max-steps", "2", "--seq-len", "32", "--batch-size", "2", "--threads", "2"],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr
    tuned = cllm.load(str(out))
    assert tuned.config.model_type == "gpt_bigcode" and tuned.config.kv_heads == 1
    ck = cllm.model.checkpoint.open_checkpoint(str(out))
    raw = json.loads(open(os.path.join(ck.path, "config.json")).read())
    assert raw["model_type"] == "gpt_bigcode" and raw["multi_query"] is True
    hf = GPTBigCodeForCausalLM.from_pretrained(ck.path).eval()
    ids = tuned.tokenizer.encode("def main(argv):\n")
    ref = hf_logits(hf, ids)
    assert np.abs(tuned.logits(np.array([ids]))[0] - ref).max() <= 1e-4 * float(ref.max() - ref.min())


def test_interrupted_fine_tune_resumes_bit_identically(models, tmp_path, monkeypatch):
    """A multi-head gpt_bigcode fine-tune (c_attn regrouped and transposed on
    every save and load) stopped by Ctrl-C and resumed ends with the weights
    and AdamW moments of an uninterrupted run, bit for bit."""
    import signal
    _, d = models["mh3"]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("".join(TEXTS) * 40)
    kw = dict(init_from=d, max_steps=6, batch_size=2, seq_len=32, threads=2, progress=False, seed=3,
              fim_eval_samples=0)
    full = cllm.train(str(src), out_dir=str(tmp_path / "full"), **kw)
    real = cllm.Model.train_step
    calls = {"n": 0}

    def interrupted(self, *a, **k):
        out = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 3:
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(cllm.Model, "train_step", interrupted)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        cllm.train(str(src), out_dir=str(out), **kw)
    monkeypatch.undo()
    resumed = cllm.train(out_dir=str(out), resume=True, progress=False)
    assert resumed.summary["steps"] == 6 and resumed.config.model_type == "gpt_bigcode"
    assert np.array_equal(resumed.params, full.params)
    assert np.array_equal(resumed.adam_m, full.adam_m) and np.array_equal(resumed.adam_v, full.adam_v)


def test_shapes_a_checkpoint_cannot_hold_are_refused(tmp_path):
    """The C core trains any number of K/V heads dividing the query heads,
    but a GPT-2 config.json has one per query head and gpt_bigcode's 1 or all:
    saving another shape is refused by name, before anything is written."""
    from cllm.config import ModelConfig
    with pytest.raises(cllm.ConfigError, match="gpt_bigcode checkpoint holds 1 K/V head .* not 2"):
        ModelConfig(num_heads=4, embed_dim=32, n_kv_heads=2, model_type="gpt_bigcode").to_hf(0)
    m = cllm.Model(ModelConfig(vocab_size=300, context_len=16, num_layers=1, num_heads=4, embed_dim=32, n_kv_heads=2),
                   cllm.Tokenizer.byte_level(), seq_len=16, threads=1)
    out = tmp_path / "ck"
    with pytest.raises(cllm.ConfigError, match="GPT-2 checkpoint cannot hold 2 K/V heads for 4 query heads"):
        m.save(str(out))
    assert not out.exists() or not any(out.iterdir())
    r = repr(m)
    assert "n_kv_heads=2" in r


def test_config_mapping_and_bad_values(models):
    from cllm.config import ModelConfig
    hf = dict(models["mq4"][0].config.to_dict())
    assert ModelConfig.from_hf(hf).n_kv_heads == 1
    hf["multi_query"] = False
    assert ModelConfig.from_hf(hf).n_kv_heads == ModelConfig.from_hf(hf).num_heads
    hf["multi_query"] = "yes"
    with pytest.raises(cllm.ConfigError, match="multi_query must be true or false"):
        ModelConfig.from_hf(hf)
    with pytest.raises(cllm.ConfigError, match="n_kv_heads .* divisor"):
        ModelConfig(num_heads=4, embed_dim=32, n_kv_heads=3).validate()
    assert "n_kv_heads" not in ModelConfig().to_dict() and "model_type" not in ModelConfig().to_dict()
    c = ModelConfig(num_heads=4, embed_dim=32, n_kv_heads=2, model_type="gpt_bigcode")
    from cllm.model.decoder import Decoder
    assert Decoder.create(c).kv_bytes * 2 == Decoder.create(ModelConfig(num_heads=4, embed_dim=32)).kv_bytes
    with pytest.raises(cllm.ConfigError, match="model_type must be one of"):
        ModelConfig(model_type="llama").validate()


def _c_config(**kw):
    from cllm._native import ffi
    c = ffi.new("cllm_config *")
    c.vocab_size, c.context_len, c.num_layers, c.num_heads, c.embed_dim = 50, 16, 1, 4, 32
    c.batch_size, c.seq_len, c.threads, c.max_memory_gb = 1, 16, 1, 1.0
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_c_api_validates_kv_heads():
    from cllm._native import ffi, lib
    dec = ffi.new("cllm_decoder **")
    for kv in (3, 5, -1):
        assert lib.cllm_decoder_new(_c_config(n_kv_heads=kv), lib.CLLM_DTYPE_F32, dec) == lib.CLLM_ERR_INVALID
        assert "n_kv_heads %d must divide num_heads 4" % kv in ffi.string(lib.cllm_last_error()).decode()
    assert lib.cllm_decoder_new(_c_config(linear_weights=2), lib.CLLM_DTYPE_F32, dec) == lib.CLLM_ERR_INVALID
    for kv in (0, 1, 2, 4):
        assert lib.cllm_decoder_new(_c_config(n_kv_heads=kv, linear_weights=1), lib.CLLM_DTYPE_INT8, dec) == 0
        n = ffi.new("size_t *")
        assert lib.cllm_decoder_kv_bytes(dec[0], n) == 0 and n[0] == 2 * 16 * (kv or 4) * 8 * 4
        info, rows, cols = ffi.new("cllm_tensor_info *"), ffi.new("int *"), ffi.new("int *")
        assert lib.cllm_decoder_tensor_info(dec[0], 4, info, rows, cols) == 0   # layer 0's c_attn weight
        assert ffi.string(info.name) == b"transformer.h.0.attn.c_attn.weight"
        assert (info.shape[0], info.shape[1], rows[0], cols[0]) == (32 + 16 * (kv or 4), 32, 32 + 16 * (kv or 4), 32)
        lib.cllm_decoder_free(dec[0])
    m = ffi.new("cllm_model **")
    for kv in (3, 5, -1):
        assert lib.cllm_model_new(_c_config(n_kv_heads=kv), m) == lib.CLLM_ERR_INVALID
        assert "n_kv_heads %d must divide num_heads 4" % kv in ffi.string(lib.cllm_last_error()).decode()
    assert lib.cllm_model_new(_c_config(linear_weights=1), m) == lib.CLLM_ERR_INVALID
    assert "linear_weights must be 0" in ffi.string(lib.cllm_last_error()).decode()
    for kv in (0, 1, 2, 4):   # the training model's c_attn is C + 2 * KV * hs wide
        assert lib.cllm_model_new(_c_config(n_kv_heads=kv), m) == 0
        info = ffi.new("cllm_tensor_info *")
        assert lib.cllm_model_tensor_info(m[0], 4, info) == 0
        assert ffi.string(info.name) == b"transformer.h.0.attn.c_attn.weight"
        assert (info.shape[0], info.shape[1]) == (32, 32 + 16 * (kv or 4))
        lib.cllm_model_free(m[0])


# ------------------------------------------------------------------ GGUF (llama.cpp's starcoder)
@pytest.mark.parametrize("name", ["mq4", "mh3"])
def test_gguf_export_is_llama_cpp_starcoder(models, name, tmp_path):
    """`cllm export` writes a gpt_bigcode checkpoint as llama.cpp's starcoder
    architecture: the K/V head count in the header, the Linear matrices as
    they are, a multi-head c_attn regrouped (all q | all k | all v)."""
    gguf = pytest.importorskip("gguf")
    model, d = models[name]
    out = str(tmp_path / "m.gguf")
    r = subprocess.run([sys.executable, "-m", "cllm", "export", d, "-o", out, "--dtype", "f32"], capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    rd = gguf.GGUFReader(out)
    f = {k: v.contents() for k, v in rd.fields.items() if not k.startswith("tokenizer.ggml.")}
    cfg = model.config
    assert f["general.architecture"] == "starcoder"
    assert f["starcoder.attention.head_count"] == cfg.n_head
    assert f["starcoder.attention.head_count_kv"] == (1 if cfg.multi_query else cfg.n_head)
    t = {x.name: np.array(x.data).reshape([int(n) for n in reversed(x.shape)]) for x in rd.tensors}
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    hs, kvd = cfg.n_embd // cfg.n_head, (1 if cfg.multi_query else cfg.n_head) * (cfg.n_embd // cfg.n_head)
    for i in range(cfg.n_layer):
        w = sd[f"transformer.h.{i}.attn.c_attn.weight"]   # (C + 2 kvd, C)
        if not cfg.multi_query:   # head by head -> all q | all k | all v
            w = w.reshape(cfg.n_head, 3, hs, -1).transpose(1, 0, 2, 3).reshape(w.shape)
        assert np.array_equal(t[f"blk.{i}.attn_qkv.weight"], w)
        assert t[f"blk.{i}.attn_qkv.weight"].shape == (cfg.n_embd + 2 * kvd, cfg.n_embd)
        assert np.array_equal(t[f"blk.{i}.ffn_up.weight"], sd[f"transformer.h.{i}.mlp.c_fc.weight"])
        assert np.array_equal(t[f"blk.{i}.attn_output.weight"], sd[f"transformer.h.{i}.attn.c_proj.weight"])
    assert np.array_equal(t["token_embd.weight"], sd["transformer.wte.weight"])


def _assert_llama_cpp_matches(hf_model, checkpoint: str, ids, tmp_path) -> None:
    """`cllm export` of ``checkpoint`` at f32 run in llama.cpp: logits equal
    transformers' (``hf_model``) to within llama.cpp's FP16 GELU table (as
    tests/test_gguf.py bounds them), same argmax."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (the bench extra)")
    out = str(tmp_path / "m.gguf")
    cllm.export(checkpoint, out, dtype="f32")
    llm = llama_cpp.Llama(model_path=out, n_ctx=CTX, n_batch=CTX, logits_all=True, n_threads=1,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, verbose=False)
    llm.reset()
    llm.eval(ids)
    got = np.array(llm.scores[:len(ids)], dtype=np.float32)
    want = hf_logits(hf_model, ids)
    assert np.abs(got - want).max() <= 5e-4 * float(want.max() - want.min())
    assert (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.parametrize("name", ["mq4", "mh3"])
def test_llama_cpp_runs_the_starcoder_export(models, bpe, name, tmp_path):
    model, d = models[name]
    _assert_llama_cpp_matches(model, d, prompt_ids(bpe, 60), tmp_path)


def test_llama_cpp_runs_a_fine_tuned_export(models, bpe, rng, tmp_path):
    """A model cllm fine-tuned and saved (multi-head: c_attn transposed and
    regrouped back) exports to llama.cpp with transformers' logits for it."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (the bench extra)")
    from transformers import GPTBigCodeForCausalLM
    _, d = models["mh3"]
    m = cllm.Model.load(d, batch_size=2, seq_len=32, threads=2)
    for step in range(1, 3):
        x = rng.integers(0, m.config.vocab_size, (2, 32))
        m.train_step(x, np.roll(x, -1, axis=1), step, 3e-3)
    tuned = str(tmp_path / "tuned")
    m.save(tuned)
    _assert_llama_cpp_matches(GPTBigCodeForCausalLM.from_pretrained(tuned).eval(), tuned, prompt_ids(bpe, 60), tmp_path)
