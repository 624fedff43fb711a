"""Batched prefill and the prompt cache of the C decoder.

The reference is the per-token step (``Decoder.step``, or prefill chunk 0).
Tolerances, relative to the largest |logit| of the reference (measured on
these models: fp32 <= 6.1e-7 on avx2 and 2.7e-7 on scalar; bf16 0 on both
here, up to 1.1e-3 seen; int8 <= 1.3e-7 on avx2 and 0 on scalar):

* fp32: 1e-5. Only the FP32 summation order differs (GEMMs vs matvecs, in
  the projections and in the attention's scores and weighted sums).
* bf16: 5e-3. The batched path rounds each input row to BF16 like the step,
  so a last-bit difference in a sum can flip one activation's BF16 rounding
  (2^-8 relative) in the next layer.
* int8: 5e-3. Products and sums are exact integers on both paths (FP32
  integers below 2^24), the epilogue is the step's; a quantization boundary
  can still flip where an FP32 sum (LayerNorm input) differs.
"""
from __future__ import annotations

import logging
from typing import Any, List

import numpy as np
import pytest

import cllm
from cllm._native import ffi, lib
from cllm.config import ModelConfig
from cllm.data.tokenizer import Tokenizer
from cllm.inference.evaluation import evaluate
from cllm.model.decoder import Decoder
from cllm.model.gpt import Model

TOL = {"fp32": 1e-5, "bf16": 5e-3, "int8": 5e-3}
CFG = ModelConfig(vocab_size=300, context_len=320, num_layers=2, num_heads=3, embed_dim=48)


def _isas() -> List[str]:
    a, b = ffi.new("int *"), ffi.new("int *")
    lib.cllm_cpu_detect(a, b)
    return ["scalar"] + (["avx2"] if a[0] else [])


@pytest.fixture
def isa(request):
    """Run the test under one kernel ISA, restoring the previous one."""
    before = cllm.get_isa()
    cllm.set_isa(request.param)
    yield request.param
    cllm.set_isa(before)


def make_decoder(cfg: ModelConfig, dtype: str, threads: int = 2, seed: int = 0) -> Decoder:
    """A decoder with random GPT-2-like weights (LayerNorm gains near 1)."""
    dec = Decoder.create(cfg, dtype, threads)
    rng = np.random.default_rng(seed)
    keep = []
    for i, (name, shape, _, _) in enumerate(dec.tensors()):
        if name.endswith((".weight",)) and len(shape) == 1:
            a = 1.0 + rng.normal(0, 0.1, shape)
        else:
            a = rng.normal(0, 0.05 if len(shape) == 1 else 0.08, shape)
        a = np.ascontiguousarray(a, dtype=np.float32)
        keep.append(a)
        assert lib.cllm_decoder_set_tensor(dec._h, i, ffi.from_buffer(a), lib.CLLM_DTYPE_F32, 0) == 0
    dec._keep = keep
    return dec


def current_logits(dec: Decoder) -> np.ndarray:
    out = np.empty(dec.vocab_size, dtype=np.float32)
    assert lib.cllm_decoder_logits(dec._h, ffi.cast("float *", ffi.from_buffer(out))) == 0
    return out


def step_logits(dec: Decoder, ids: List[int], reset: bool = True) -> np.ndarray:
    """Logits after ids, token by token through the step."""
    if reset:
        dec.reset()
    out = np.empty(dec.vocab_size, dtype=np.float32)
    for t in ids:
        dec.step(t, out)
    return out


def assert_close(got: np.ndarray, ref: np.ndarray, dtype: str) -> None:
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err <= TOL[dtype], f"{dtype}: max |diff| / max |logit| = {err:.3g} > {TOL[dtype]}"


IDS = [int(i) for i in np.random.default_rng(1).integers(0, CFG.vocab_size, 320)]


# ------------------------------------------------------------- equality
@pytest.mark.parametrize("isa", _isas(), indirect=True)
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_prefill_logits_equal_the_steps(isa, dtype):
    """feed (chunked: 7 and the default 256 rows; unchunked: one pass) gives
    the step path's logits, and its keys / values are right at every
    position: the next step after it gives the step path's next logits."""
    dec = make_decoder(CFG, dtype)
    assert dec.prefill_chunk == 256
    for n in (1, 7, 64, 300):
        ref = step_logits(dec, IDS[:n])
        ref_next = step_logits(dec, [IDS[n]], reset=False)
        for chunk in (7, 256, CFG.context_len):
            dec.prefill_chunk = chunk
            dec.feed(IDS[:n])
            assert dec.pos == n
            assert_close(current_logits(dec), ref, dtype)
            nxt = np.empty(CFG.vocab_size, dtype=np.float32)
            dec.step(IDS[n], nxt)
            assert_close(nxt, ref_next, dtype)
        dec.prefill_chunk = 256


@pytest.mark.parametrize("isa", _isas(), indirect=True)
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_extend_appends_to_a_cache_that_holds_tokens(isa, dtype):
    dec = make_decoder(CFG, dtype)
    ref = step_logits(dec, IDS[:230])
    for chunk in (256, 13):
        dec.prefill_chunk = chunk
        dec.reset()
        for t in IDS[:50]:            # a cache filled by steps, then chunks appended
            dec.step(t)
        out = np.empty(CFG.vocab_size, dtype=np.float32)
        dec.extend(IDS[50:60])
        dec.extend(IDS[60:230], out)
        assert dec.pos == 230
        assert_close(out, ref, dtype)
        assert np.array_equal(out, current_logits(dec))


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_prefill_is_bit_identical_across_thread_counts(dtype):
    outs = []
    for threads in (1, 2, 3):
        dec = make_decoder(CFG, dtype, threads)
        dec.prefill_chunk = 100
        dec.feed(IDS[:250])
        outs.append((current_logits(dec), dec.nll(IDS[:250])))
    for lg, nll in outs[1:]:
        assert np.array_equal(lg, outs[0][0]) and nll == outs[0][1]


@pytest.mark.parametrize("isa", _isas(), indirect=True)
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_nll_batched_equals_token_by_token(isa, dtype):
    dec = make_decoder(CFG, dtype)
    for n, chunk in ((2, 256), (64, 256), (300, 256), (300, 40)):
        dec.prefill_chunk = 0
        ref = dec.nll(IDS[:n])
        ref_logits = current_logits(dec)
        dec.prefill_chunk = chunk
        got = dec.nll(IDS[:n])
        assert abs(got - ref) <= TOL[dtype] * abs(ref), (n, chunk, got, ref)
        assert dec.pos == n - 1                  # the cache holds the inputs; their last logits are current
        assert_close(current_logits(dec), ref_logits, dtype)


def test_nll_lm_head_in_row_groups_for_a_large_vocabulary():
    """With a large vocabulary the LM head of a chunk runs in groups of rows
    (the logits buffer is bounded); the loss and last logits are unchanged."""
    cfg = ModelConfig(vocab_size=40000, context_len=300, num_layers=1, num_heads=2, embed_dim=16)
    dec = make_decoder(cfg, "fp32")
    ids = [int(i) for i in np.random.default_rng(2).integers(0, cfg.vocab_size, 300)]
    dec.prefill_chunk = 0
    ref = dec.nll(ids)
    ref_logits = current_logits(dec)
    dec.prefill_chunk = 256
    got = dec.nll(ids)
    assert abs(got - ref) <= 1e-5 * abs(ref)
    assert_close(current_logits(dec), ref_logits, "fp32")


def test_prefill_rejects_bad_input_and_keeps_the_cache():
    dec = make_decoder(CFG, "fp32")
    dec.feed(IDS[:10])
    ids = ffi.new("int32_t[]", [1, 2, CFG.vocab_size])
    assert lib.cllm_decoder_extend(dec._h, ids, 3, ffi.NULL) == lib.CLLM_ERR_RANGE
    assert lib.cllm_decoder_extend(dec._h, ids, 0, ffi.NULL) == lib.CLLM_ERR_RANGE
    assert lib.cllm_decoder_prime(dec._h, ids, 3, ffi.NULL) == lib.CLLM_ERR_RANGE
    assert dec.pos == 10
    with pytest.raises(cllm.CllmError):
        dec.extend(IDS[:CFG.context_len - 9])         # one more than the room left
    dec.extend(IDS[:CFG.context_len - 10])             # exactly the room left
    assert dec.pos == CFG.context_len
    assert lib.cllm_decoder_set_prefill_chunk(dec._h, -1) == lib.CLLM_ERR_RANGE
    dec.prefill_chunk = 10**6
    assert dec.prefill_chunk == CFG.context_len        # clamped to the context
    with pytest.raises(cllm.ConfigError):
        dec.prefill_chunk = -3


# ---------------------------------------------------------- prompt cache
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_prime_reuses_the_common_prefix(dtype):
    dec = make_decoder(CFG, dtype)
    fresh = make_decoder(CFG, dtype)

    def check(ids: List[int], reused: int) -> None:
        assert dec.prime(ids) == reused
        assert dec.pos == len(ids)
        fresh.feed(ids)
        assert_close(current_logits(dec), current_logits(fresh), dtype)

    check(IDS[:200], 0)
    check(IDS[:200], 200)                      # the same prompt: nothing to run
    check(IDS[:230], 200)                      # the editor case: a few more tokens
    check(IDS[:120] + IDS[300:310], 120)       # an edit in the middle: the prefix before it
    check(IDS[:60], 59)                        # a prefix of the cache: its last position is recomputed
    check([IDS[5]] + IDS[1:60], 0)             # a different first token: nothing reused


def _prompt_model(tmp_path_factory: Any) -> str:
    tok = Tokenizer.train([b"def foo(x):\n    return x + 1\n" * 40, b"import os\nprint('h\xc3\xa9llo')\n" * 30],
                          vocab_size=300)
    cfg = ModelConfig(vocab_size=300, context_len=96, num_layers=2, num_heads=3, embed_dim=48)
    m = Model.create(cfg, tok, threads=1, seed=7)
    m.params[:] += np.random.default_rng(3).normal(0, 0.05, m.params.size).astype(np.float32)
    d = str(tmp_path_factory.mktemp("prefill") / "ck")
    m.save(d)
    return d


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return _prompt_model(tmp_path_factory)


TEXT = "def foo(x):\n    return x + 1\nimport os\nprint('h\xe9llo')\ndef foo(x):\n    return x"


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_greedy_generation_after_batched_prefill_matches_token_by_token(saved, dtype):
    kw = dict(max_new_tokens=30, temperature=0.0, seed=0, stop_at_eot=False)
    stepped = cllm.load(saved, dtype=dtype, threads=2)
    stepped._decoder().prefill_chunk = 0
    batched = cllm.load(saved, dtype=dtype, threads=2)
    assert list(batched.generate_ids(TEXT, **kw)) == list(stepped.generate_ids(TEXT, **kw))
    batched._decoder().prefill_chunk = 5
    assert list(batched.generate_ids(TEXT + "\n", **kw)) == list(stepped.generate_ids(TEXT + "\n", **kw))


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_generation_after_a_cached_prefix_equals_a_fresh_feed(saved, dtype, caplog):
    """Growing prompts (the editor case) through one model reuse its cache and
    sample exactly what a fresh model samples, also across a generation that
    slid the window (the cache then holds the re-fed tail, not the prompt)."""
    kw = dict(max_new_tokens=12, temperature=0.8, top_k=20, seed=5, stop_at_eot=False)
    cached = cllm.load(saved, dtype=dtype, threads=2)
    dec = cached._decoder()
    for k in range(4):
        prompt = TEXT + " + 1" * k
        n = len(cached.tokenize(prompt)) - 1         # token healing primes all but the last token
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="cllm.model.decoder"):
            got = list(cached.generate_ids(prompt, **kw))
        reused = [r.args[0] for r in caplog.records if r.msg.startswith("prompt cache")]
        if k == 0:
            assert reused == [0]
        else:                                         # all but the few new tokens came from the cache
            assert len(reused) == 1 and n - 8 < reused[0] < n
        assert got == list(cllm.load(saved, dtype=dtype, threads=2).generate_ids(prompt, **kw))
    long = dict(kw, max_new_tokens=90)                # past the context of 96: the window slides
    assert list(cached.generate_ids(TEXT, **long)) == list(cllm.load(saved, dtype=dtype, threads=2)
                                                          .generate_ids(TEXT, **long))
    assert dec.prime(cached.tokenize(TEXT)[:-1]) < len(cached.tokenize(TEXT)) - 1
    assert cached.predict_next_token(TEXT, temperature=0.0) == \
        cllm.load(saved, dtype=dtype, threads=2).predict_next_token(TEXT, temperature=0.0)


def test_cache_is_invalidated_when_weights_change(saved):
    im = cllm.load(saved, dtype="fp32", threads=2)
    dec = im._decoder()
    ids = im.tokenize(TEXT)
    assert dec.prime(ids) == 0
    assert dec.prime(ids) == len(ids)
    w = np.zeros(CFG.embed_dim, dtype=np.float32)
    n = len(dec.tensors())
    assert lib.cllm_decoder_set_tensor(dec._h, n - 1, ffi.from_buffer(w), lib.CLLM_DTYPE_F32, 0) == 0   # ln_f.bias
    assert dec.pos == 0
    assert dec.prime(ids) == 0
    before = cllm.get_isa()
    other = "scalar" if before != "scalar" else _isas()[-1]
    if other != before:                       # a cache made on another ISA path is not reused
        cllm.set_isa(other)
        try:
            assert dec.prime(ids) == 0
            assert dec.prime(ids) == len(ids)
        finally:
            cllm.set_isa(before)

    m = cllm.load(saved, threads=2, seq_len=16)       # the training model's decoder
    mdec = m._decoder()
    assert mdec.prime(ids) == 0
    assert mdec.prime(ids) == len(ids)
    x = np.random.default_rng(5).integers(0, CFG.vocab_size, (1, 16))
    m.train_step(x, np.roll(x, -1, axis=1), step=1, lr=5e-2)
    mdec = m._decoder()                               # weights copied again: the old cache is gone
    assert mdec.pos == 0
    assert mdec.prime(ids) == 0


# ------------------------------------------------------------ evaluation
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_evaluate_results_unchanged_by_the_batched_path(saved, dtype):
    texts = [TEXT * 6, "import os\nprint(os.getcwd())\n" * 8]
    ref_model = cllm.load(saved, dtype=dtype, threads=2)
    ref_model._decoder().prefill_chunk = 0
    ref = evaluate(ref_model, texts)
    got = evaluate(cllm.load(saved, dtype=dtype, threads=2), texts)
    assert got["tokens"] == ref["tokens"] > 96        # several windows
    assert abs(got["loss"] - ref["loss"]) <= TOL[dtype] * ref["loss"]
    assert abs(got["bits_per_byte"] - ref["bits_per_byte"]) <= TOL[dtype] * ref["bits_per_byte"]


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_continuation_nll_is_the_nll_of_the_target_given_the_prompt(dtype):
    """What the infilling evaluation scores a middle with: the prompt through
    the cache, the target token by token; equal to the difference of the
    window NLLs with and without the target."""
    dec = make_decoder(CFG, dtype)
    ids, tgt = IDS[:200], IDS[200:215]
    got = dec.continuation_nll(ids, tgt)
    assert got == pytest.approx(dec.nll(ids + tgt) - dec.nll(ids), rel=1e-4)
    assert dec.continuation_nll(ids, tgt[:1]) == pytest.approx(dec.nll(ids + tgt[:1]) - dec.nll(ids), rel=1e-4)
    assert dec.continuation_nll(ids, []) == 0.0
    with pytest.raises(cllm.ConfigError, match="context"):
        dec.continuation_nll(IDS[:310], IDS[:20])


def test_banned_ids_are_never_sampled_and_the_logits_stay():
    """cllm_decoder_ban: greedy takes the best id that is not banned; the
    logits are untouched; an allowed set made only of banned ids ignores the
    ban; bad lists are refused."""
    from cllm.model.decoder import seed_state
    dec = make_decoder(CFG, "fp32")
    dec.feed(IDS[:50])
    before = current_logits(dec)
    order = np.argsort(-before)
    dec.ban([int(order[0]), int(order[1])])
    assert dec.next_token(0.0, None, 1.0, seed_state(1), advance=False) == order[2]
    assert np.array_equal(current_logits(dec), before)
    for _ in range(20):   # sampling too
        assert dec.next_token(1.0, None, 1.0, seed_state(_), advance=False) not in order[:2]
    allowed = ffi.new("int32_t[]", [int(order[0])])
    assert dec.next_token(0.0, None, 1.0, seed_state(1), allowed=allowed, advance=False) == order[0]
    dec.ban([])
    assert dec.next_token(0.0, None, 1.0, seed_state(1), advance=False) == order[0]
    with pytest.raises(cllm.ConfigError, match="out of range"):
        dec.ban([CFG.vocab_size])
    with pytest.raises(cllm.ConfigError, match="at most"):
        dec.ban(list(range(17)))
