"""The decoder: int8/BF16/FP32 inference kernels against their scalar
references on ragged shapes, the quantizers, sampling by partial selection,
whole-step decoding (vs the training forward; bit-identical across thread
counts), quantized checkpoints, token healing and streaming detokenization."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import cllm
from cllm._native import ffi, lib
from cllm.config import ModelConfig
from cllm.model.decoder import TextStream
from cllm.model.gpt import Model
from cllm.data.tokenizer import Tokenizer

ISAS = {"scalar": lib.CLLM_ISA_SCALAR, "avx2": lib.CLLM_ISA_AVX2, "avx512": lib.CLLM_ISA_AVX512}
SHAPES = [(1, 1), (3, 5), (4, 64), (5, 63), (7, 65), (13, 100), (16, 384), (33, 129), (9, 1000)]


def _available():
    a, b = ffi.new("int *"), ffi.new("int *")
    lib.cllm_cpu_detect(a, b)
    return [k for k, ok in (("scalar", True), ("avx2", a[0]), ("avx512", b[0])) if ok]


def f(a):
    return ffi.cast("float *", ffi.from_buffer(a))


def quantize_rows(w):
    """(q, scale) from the C quantizer (w is (rows, cols))."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    q = np.empty(w.shape, dtype=np.int8)
    s = np.empty(w.shape[0], dtype=np.float32)
    assert lib.cllm_quantize_int8(f(w), w.shape[0], w.shape[1], 0, ffi.cast("int8_t *", ffi.from_buffer(q)), f(s)) == 0
    return q, s


def to_bf16(x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=np.uint16)
    assert lib.cllm_convert_bf16(lib.CLLM_ISA_SCALAR, 1, f(x), ffi.from_buffer(out), x.size) == 0
    return out


def bf16_to_f32(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def qmatvec(dtype, isa, w, scale, x, bias, rows, cols):
    y = np.full(rows, np.nan, dtype=np.float32)
    sp = f(scale) if scale is not None else ffi.NULL
    bp = f(bias) if bias is not None else ffi.NULL
    rc = lib.cllm_qmatvec_run(dtype, ISAS[isa], ffi.from_buffer(w), sp, f(x), bp, f(y), rows, cols)
    assert rc == 0, ffi.string(lib.cllm_last_error())
    return y


def round_away(v):
    return np.trunc(v + np.copysign(0.5, v)).astype(np.int64)


# ------------------------------------------------------------- kernels
@pytest.mark.parametrize("rows,cols", SHAPES)
def test_int8_kernels_exact_on_every_path(rows, cols, rng):
    w = rng.normal(0, 0.05, (rows, cols)).astype(np.float32)
    x = rng.normal(0, 1, cols).astype(np.float32)
    bias = rng.normal(0, 1, rows).astype(np.float32)
    q, s = quantize_rows(w)
    assert q.min() >= -127
    ref = qmatvec(lib.CLLM_DTYPE_INT8, "scalar", q, s, x, bias, rows, cols)
    # the scalar reference is the exact integer dot product of the quantized vectors
    m = np.abs(x).max()
    xq = round_away(x.astype(np.float32) * np.float32(127.0 / m))
    xs = np.float32(m / np.float32(127.0))
    acc = (q.astype(np.int64) @ xq).astype(np.float32)
    assert np.allclose(ref, acc * (xs * s) + bias, rtol=1e-6, atol=1e-6)
    assert np.abs(ref - (w @ x + bias)).max() < 0.02 * (np.abs(w) @ np.abs(x)).max() + 1e-6
    for isa in _available():
        assert np.array_equal(qmatvec(lib.CLLM_DTYPE_INT8, isa, q, s, x, bias, rows, cols), ref), isa


@pytest.mark.parametrize("rows,cols", SHAPES)
def test_bf16_kernels_match_scalar(rows, cols, rng):
    w = to_bf16(rng.normal(0, 0.05, (rows, cols)))
    x = rng.normal(0, 1, cols).astype(np.float32)
    ref = qmatvec(lib.CLLM_DTYPE_BF16, "scalar", w, None, x, None, rows, cols)
    exact = bf16_to_f32(w).astype(np.float64) @ bf16_to_f32(to_bf16(x)).astype(np.float64)
    bound = 1e-5 * (np.abs(bf16_to_f32(w)) @ np.abs(x)) + 1e-7
    assert np.all(np.abs(ref - exact) <= bound)
    for isa in _available():
        assert np.all(np.abs(qmatvec(lib.CLLM_DTYPE_BF16, isa, w, None, x, None, rows, cols) - exact) <= bound), isa


@pytest.mark.parametrize("rows,cols", SHAPES + [(5, 16), (3, 80), (2, 127), (3, 1536)])
def test_f32_row_kernels_match_exact(rows, cols, rng):
    w = rng.normal(0, 0.05, (rows, cols)).astype(np.float32)    # (out, in), as the decoder stores it
    x = rng.normal(0, 1, cols).astype(np.float32)
    bias = rng.normal(0, 1, rows).astype(np.float32)
    exact = w.astype(np.float64) @ x.astype(np.float64) + bias
    bound = 4e-7 * (cols + 1) * (np.abs(w) @ np.abs(x) + np.abs(bias)) + 1e-7
    for isa in ["scalar"] + _available():
        y = qmatvec(lib.CLLM_DTYPE_F32, isa, w, None, x, bias, rows, cols)
        assert np.all(np.abs(y - exact) <= bound), isa
        nob = qmatvec(lib.CLLM_DTYPE_F32, isa, w, None, x, None, rows, cols)   # no bias
        assert np.all(np.abs(nob - (exact - bias)) <= bound), isa


def test_quantizer_matches_reference_and_transposed(rng):
    w = rng.normal(0, 0.1, (37, 70)).astype(np.float32)
    w[3] = 0.0                                    # an all-zero row
    q, s = quantize_rows(w)
    m = np.abs(w).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(m > 0, np.float32(127.0) / m.astype(np.float32), 0).astype(np.float32)
    assert np.array_equal(q, round_away(w * inv[:, None]))
    assert np.allclose(s, m / 127.0) and s[3] == 0 and not q[3].any()
    wt = np.ascontiguousarray(w.T)                # the same matrix given as (cols, rows)
    q2 = np.empty_like(q)
    s2 = np.empty_like(s)
    assert lib.cllm_quantize_int8(f(wt), 37, 70, 1, ffi.cast("int8_t *", ffi.from_buffer(q2)), f(s2)) == 0
    assert np.array_equal(q, q2) and np.array_equal(s, s2)


# ------------------------------------------------------------ sampling
def sample(logits, temperature=1.0, top_k=0, top_p=1.0, allowed=None, seed=0):
    V = logits.size
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    prob, idx = ffi.new("float[]", V), ffi.new("int32_t[]", V)
    rng = ffi.new("uint64_t *", seed)
    out = ffi.new("int32_t *")
    al = ffi.new("int32_t[]", list(allowed)) if allowed is not None else ffi.NULL
    rc = lib.cllm_sample(f(logits), V, temperature, top_k, top_p, al, len(allowed) if allowed is not None else 0,
                         rng, prob, idx, out)
    assert rc == 0, ffi.string(lib.cllm_last_error())
    return out[0]


def nucleus(logits, temperature, top_k, top_p):
    order = sorted(range(logits.size), key=lambda i: (-logits[i], i))
    if top_k:
        order = order[:top_k]
    p = np.exp((logits[order] - logits[order].max()) / temperature)
    c = np.cumsum(p / p.sum())
    n = int(np.searchsorted(c, top_p - 1e-6) + 1) if top_p < 1 else len(order)
    return set(order[:n]), set(order[:max(0, n - 2)])   # (superset, definitely-in)


@settings(max_examples=25, deadline=None)
@given(V=st.integers(2, 300), seed=st.integers(0, 2**32), k=st.integers(0, 50), p=st.floats(0.05, 1.0),
       t=st.floats(0.3, 2.0))
def test_sampling_stays_in_the_top_k_nucleus(V, seed, k, p, t):
    logits = np.random.default_rng(seed).normal(0, 3, V).astype(np.float32)
    logits[V // 2] = logits[0]                    # a tie
    sup, _ = nucleus(logits, t, k, p)
    for s in range(20):
        assert sample(logits, t, k, p, seed=seed + s) in sup


def test_sampling_greedy_allowed_and_frequencies():
    logits = np.array([0.5, 2.0, 2.0, -1.0, 1.0], dtype=np.float32)
    assert sample(logits, 0.0) == 1                       # lowest id among ties
    assert sample(logits, 0.0, allowed=[0, 3, 4]) == 4
    assert all(sample(logits, 1.0, allowed=[0, 3], seed=s) in (0, 3) for s in range(50))
    counts = np.bincount([sample(logits, 1.0, seed=s) for s in range(20000)], minlength=5) / 20000
    p = np.exp(logits - logits.max())
    assert np.abs(counts - p / p.sum()).max() < 0.015
    counts = np.bincount([sample(logits, 1.0, top_k=2, seed=s) for s in range(4000)], minlength=5)
    assert counts[1] > 1500 and counts[2] > 1500 and counts.sum() == counts[1] + counts[2]


def test_sampling_rejects_bad_input():
    lg = np.zeros(4, dtype=np.float32)
    prob, idx, rng, out = ffi.new("float[4]"), ffi.new("int32_t[4]"), ffi.new("uint64_t *"), ffi.new("int32_t *")
    assert lib.cllm_sample(f(lg), 4, 1.0, 0, 0.0, ffi.NULL, 0, rng, prob, idx, out) == lib.CLLM_ERR_INVALID
    assert lib.cllm_sample(f(lg), 4, 1.0, 0, 1.0, ffi.new("int32_t[]", [7]), 1, rng, prob, idx, out) == lib.CLLM_ERR_RANGE
    lg[2] = np.nan
    assert lib.cllm_sample(f(lg), 4, 1.0, 0, 1.0, ffi.NULL, 0, rng, prob, idx, out) == lib.CLLM_ERR_NUMERIC


# ------------------------------------------------------------- decoding
CFG = ModelConfig(vocab_size=300, context_len=48, num_layers=2, num_heads=3, embed_dim=48)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tok = Tokenizer.train([b"def foo(x):\n    return x + 1\n" * 40, b"import os\nprint('h\xc3\xa9llo')\n" * 30],
                          vocab_size=300)
    m = Model.create(CFG, tok, threads=1, seed=7)
    m.params[:] += np.random.default_rng(3).normal(0, 0.05, m.params.size).astype(np.float32)
    d = str(tmp_path_factory.mktemp("dec") / "ck")
    m.save(d)
    return m, d


def test_decoder_logits_match_forward_and_threads_bit_identical(saved):
    m, d = saved
    ids = list(np.random.default_rng(0).integers(0, CFG.vocab_size, 30))
    ref = m.logits(ids)
    outs = {}
    for dtype in ("fp32", "bf16", "int8"):
        per = [cllm.load(d, dtype=dtype, threads=t).logits(ids) for t in (1, 2, 3)]
        assert all(np.array_equal(per[0], p) for p in per[1:]), dtype
        outs[dtype] = per[0]
    scale = np.abs(ref).max()
    assert np.abs(outs["fp32"] - ref).max() < 1e-5 * scale
    assert np.abs(outs["bf16"] - ref).max() < 0.02 * scale
    assert np.abs(outs["int8"] - ref).max() < 0.05 * scale


def test_decoder_nll_matches_logits(saved):
    m, d = saved
    im = cllm.load(d, dtype="int8", threads=2)
    ids = list(np.random.default_rng(1).integers(0, CFG.vocab_size, 20))
    lg = im.logits(ids[:-1]).astype(np.float64)
    lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
    ref = float((lse - lg[np.arange(19), ids[1:]]).sum())
    assert abs(im._decoder().nll(ids) - ref) < 1e-4 * abs(ref)


def test_generation_same_across_threads_and_model_vs_inference(saved):
    m, d = saved
    kw = dict(max_new_tokens=60, temperature=0.9, top_k=20, top_p=0.95, seed=11, stop_at_eot=False)
    base = list(cllm.load(d, dtype="fp32", threads=1).generate_ids("def foo", **kw))
    assert len(base) == 60                         # crosses the full context (48): re-feed path
    assert list(cllm.load(d, dtype="fp32", threads=3).generate_ids("def foo", **kw)) == base
    assert list(m.generate_ids("def foo", **kw)) == base   # the training model's decoder
    for dtype in ("bf16", "int8"):
        a = list(cllm.load(d, dtype=dtype, threads=1).generate_ids("def foo", **kw))
        assert a == list(cllm.load(d, dtype=dtype, threads=2).generate_ids("def foo", **kw))


def test_model_decoder_is_the_inference_decoder_and_follows_training(saved, tmp_path):
    """The training Model generates through the same FP32 decoder as
    InferenceModel (weights copied into its arena: same greedy tokens, logits
    bit-identical), keeps one decoder handle, releases the copy when training
    changes the weights and copies the new weights at the next generation."""
    _, d = saved
    m = cllm.load(d, threads=2, seq_len=16)
    kw = dict(max_new_tokens=20, temperature=0.0, seed=0, stop_at_eot=False)
    prompt = "def foo"
    assert list(m.generate_ids(prompt, **kw)) == list(cllm.load(d, dtype="fp32", threads=2).generate_ids(prompt, **kw))
    ids = list(np.random.default_rng(4).integers(0, CFG.vocab_size, 40))   # T = 40 > seq_len = 16: the decoder
    assert np.array_equal(m.logits(ids), cllm.load(d, dtype="fp32", threads=1).logits(ids))
    h = m._decoder()._h
    x = np.random.default_rng(5).integers(0, CFG.vocab_size, (1, 16))
    m.train_step(x, np.roll(x, -1, axis=1), step=1, lr=5e-2)
    assert lib.cllm_decoder_reset(h) == lib.CLLM_ERR_STATE   # released: the copy is stale
    assert "released" in ffi.string(lib.cllm_last_error()).decode()
    after = list(m.generate_ids(prompt, **kw))
    assert m._decoder()._h == h                               # the same handle, refilled
    d2 = str(tmp_path / "trained")
    m.save(d2)
    assert after == list(cllm.load(d2, dtype="fp32", threads=2).generate_ids(prompt, **kw))
    assert np.array_equal(m.logits(ids), cllm.load(d2, dtype="fp32", threads=1).logits(ids))
    before = m.logits(ids)
    for name, view in m.named_parameters():                   # a write through a view is seen too
        if name == "transformer.ln_f.bias":
            view += 0.5
    lg = m.logits(ids)                                        # decoder (T > seq_len)
    ref = m.logits(ids[:16])                                  # the training forward (T <= seq_len)
    assert not np.array_equal(lg, before)
    assert np.abs(lg[:16] - ref).max() < 1e-5 * np.abs(ref).max()


def test_quantized_checkpoint_roundtrip(saved, tmp_path):
    _, d = saved
    ids = [5, 9, 44, 2, 100]
    for dtype in ("int8", "bf16"):
        out = str(tmp_path / dtype)
        cllm.quantize(d, out, dtype=dtype)
        a = cllm.load(out)
        assert a.dtype == dtype
        assert np.array_equal(a.logits(ids), cllm.load(d, dtype=dtype).logits(ids))
        with pytest.raises(cllm.ConfigError, match="quantized"):
            cllm.load(out, dtype="fp32")
        with pytest.raises(cllm.ConfigError, match="already quantized"):
            cllm.quantize(out, str(tmp_path / "again"), dtype=dtype)
    with pytest.raises(cllm.ConfigError):
        cllm.quantize(d, str(tmp_path / "x"), dtype="fp32")


def test_corrupt_and_mismatched_checkpoints_are_clear_errors(saved, tmp_path):
    _, d = saved
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(d, bad)   # symlinks followed: `latest` and the top-level files become real copies
    for f in (bad / "model.safetensors", bad / "latest" / "model.safetensors"):
        data = f.read_bytes()
        f.write_bytes(data[:len(data) // 2])
    with pytest.raises(cllm.CheckpointError, match="model.safetensors"):
        cllm.load(str(bad), dtype="int8")
    with pytest.raises(cllm.ConfigError, match="dtype"):
        cllm.load(d, dtype="int4")


# ---------------------------------------------------- text: healing, stream
def test_token_healing_extends_the_prompts_last_token(saved):
    m, d = saved
    im = cllm.load(d, dtype="fp32", threads=1)
    prompt = "def fo"
    ids = im.tokenize(prompt)
    last = im.tokenizer.token_bytes(ids[-1])
    toks = list(im.generate_ids(prompt, max_new_tokens=8, temperature=0.8, seed=1, stop_at_eot=False))
    assert im.tokenizer.token_bytes(toks[0]).startswith(last)
    text = im.generate(prompt, max_new_tokens=8, temperature=0.8, seed=1, stop_at_eot=False)
    full = im.tokenizer.decode_bytes(ids[:-1] + toks).decode("utf-8", "replace")
    assert prompt + text == full
    unhealed = list(im.generate_ids(prompt, max_new_tokens=8, temperature=0.8, seed=1, stop_at_eot=False,
                                    heal=False))
    assert unhealed == list(im.generate_ids(ids, max_new_tokens=8, temperature=0.8, seed=1, stop_at_eot=False))


def test_text_stream_emits_complete_utf8_and_stops():
    tok = [bytes([b]) for b in range(256)]
    data = "héllo wörld — 你好\n".encode()
    ts = TextStream(tok)
    pieces = [ts.push(b) for b in data] + [ts.flush()]
    assert "".join(pieces) == data.decode()
    assert all("\ufffd" not in p for p in pieces)
    assert pieces[1] == "" and pieces[2] == "é"    # 0xC3 waits for 0xA9
    ts = TextStream(tok, stops=["wör", "\n"])
    out = "".join(ts.push(b) for b in data) + ts.flush()
    assert out == "héllo " and ts.stopped
    ts = TextStream(tok, skip=b"h\xc3")           # healed prefix (ends mid-character)
    assert "".join(ts.push(b) for b in data) + ts.flush() == data[2:].decode("utf-8", "replace")


def test_stop_strings_in_generate(saved):
    _, d = saved
    im = cllm.load(d, dtype="fp32", threads=1)
    full = im.generate("def ", max_new_tokens=40, temperature=1.0, seed=3, stop_at_eot=False)
    for stop in {full[5:7], full[12:13]}:
        if stop:
            cut = im.generate("def ", max_new_tokens=40, temperature=1.0, seed=3, stop_at_eot=False, stop=[stop])
            assert cut == full[:full.index(stop)]


def test_int8_refuses_non_finite_weights(saved, tmp_path):
    m, _ = saved
    bad = Model.create(CFG, m.tokenizer, threads=1, seed=1)
    bad.params[:] = m.params
    bad.params[bad.tensor_info()[2]["offset"] + 3] = np.nan   # ln_1.weight is FP32: fine
    bad.params[bad.tensor_info()[4]["offset"] + 5] = np.inf   # attn.c_attn.weight is quantized
    d = str(tmp_path / "nan")
    bad.save(d)
    with pytest.raises(cllm.NumericError, match="c_attn.weight holds NaN or Inf"):
        cllm.load(d, dtype="int8")


def test_fp32_matrices_are_stored_transposed_exactly(tmp_path):
    """cllm.load copies every FP32 matrix into the arena by output row: the
    Conv1D (in, out) weights transposed (16 x 16 register tiles plus ragged
    edges on AVX-512, a plain loop otherwise), wte as is, bit for bit."""
    cfg = ModelConfig(vocab_size=263, context_len=8, num_layers=1, num_heads=2, embed_dim=22)
    tok = Tokenizer.train([b"abc def ghi " * 20], vocab_size=263)
    m = Model.create(cfg, tok, threads=1, seed=2)
    d = str(tmp_path / "ck")
    m.save(d)
    src = {t["name"]: m.params[t["offset"]:t["offset"] + t["numel"]].reshape(t["shape"]) for t in m.tensor_info()}
    old = cllm.get_isa()
    try:
        for isa in _available():
            cllm.set_isa(isa)
            dec = cllm.load(d, dtype="fp32", threads=1)._decoder()
            w = ffi.new("void **")
            for i, (name, shape, rows, cols) in enumerate(dec.tensors()):
                if not rows:
                    continue
                assert lib.cllm_decoder_get_tensor(dec._h, i, ffi.cast("const void **", w), ffi.NULL) == 0
                got = np.frombuffer(ffi.buffer(ffi.cast("float *", w[0]), 4 * rows * cols), np.float32)
                ref = src[name]
                ref = ref if name.endswith("wte.weight") else ref.T        # Conv1D (in, out) -> (out, in)
                assert np.array_equal(got.reshape(rows, cols), ref), (isa, name)
    finally:
        cllm.set_isa(old)
