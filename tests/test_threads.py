"""Data-parallel training over kissing-sphere threads: deterministic, never
hangs, correct with odd shapes; parallel inference gives identical logits."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pytest

import cllm
from cllm.config import ModelConfig
from cllm.model.gpt import Model
from cllm.data.tokenizer import Tokenizer

MC = ModelConfig(vocab_size=300, context_len=16, num_layers=2, num_heads=2, embed_dim=32)
B, T = 26, 16


def run_steps(threads: int, steps: int = 4, batch: int = B, seed: int = 11):
    m = Model(MC, Tokenizer.byte_level(), batch_size=batch, seq_len=T, threads=threads, seed=seed)
    rng = np.random.default_rng(0)
    losses = []
    for s in range(1, steps + 1):
        x = rng.integers(0, MC.vocab_size, (batch, T))
        y = rng.integers(0, MC.vocab_size, (batch, T))
        losses.append(m.train_step(x, y, s, 1e-3)[0])
    return losses, m.params.copy(), m


@pytest.mark.parametrize("threads", [1, 2, 3, 13, 25])
def test_same_seed_same_threads_is_bit_identical(threads):
    l1, p1, m = run_steps(threads)
    l2, p2, _ = run_steps(threads)
    assert m.threads == threads
    assert l1 == l2
    assert np.array_equal(p1, p2)


def test_step1_loss_agrees_across_thread_counts():
    ref = run_steps(1, steps=1)[0][0]
    for t in (2, 3, 13, 25):
        assert abs(run_steps(t, steps=1)[0][0] - ref) / ref < 1e-5
    # weights after a few steps stay close too (only summation order differs)
    p1, p3 = run_steps(1)[1], run_steps(3)[1]
    assert np.abs(p1 - p3).max() < 1e-4


def test_batch_smaller_than_thread_count():
    losses, _, m = run_steps(13, steps=3, batch=4)
    assert all(np.isfinite(losses))
    ref = run_steps(1, steps=3, batch=4)[0]
    assert abs(losses[0] - ref[0]) / ref[0] < 1e-5
    stats = m.sphere_stats()
    assert len(stats) == 13


def test_threads_far_above_core_count():
    losses, _, m = run_steps(64, steps=2)
    assert m.threads == 64 and all(np.isfinite(losses))


def test_threads_zero_means_affinity_mask():
    import os
    m = Model(MC, Tokenizer.byte_level(), batch_size=2, seq_len=T, threads=0)
    assert m.threads == len(os.sched_getaffinity(0))


def test_many_create_destroy_cycles():
    for i in range(40):
        m = Model(MC, Tokenizer.byte_level(), batch_size=3, seq_len=T, threads=1 + i % 5)
        m.train_step(np.ones((3, T), int), np.ones((3, T), int), 1, 1e-3)
        del m


def test_parallel_inference_matches_single_thread():
    _, p, _ = run_steps(1, steps=2)
    outs = []
    for threads in (1, 2, 5):
        m = Model(MC, Tokenizer.byte_level(), batch_size=1, seq_len=4, threads=threads)
        m.params[:] = p
        ids = list(range(1, 15))
        # ids, not text: the model's vocabulary is larger than the byte tokenizer's
        outs.append((m.logits(ids), list(m.generate_ids(ids, max_new_tokens=12, temperature=0.9, seed=2,
                                                        stop_at_eot=False))))
    for lg, g in outs[1:]:
        assert np.array_equal(lg, outs[0][0]) and g == outs[0][1]


def test_sphere_stats_after_training():
    _, _, m = run_steps(3, steps=3)
    st = m.sphere_stats()
    assert [s["sphere"] for s in st] == [0, 1, 2]
    assert [s["parent"] for s in st] == [-1, 0, 0]
    assert all(s["tasks"] >= 3 for s in st)
    assert all(0.0 <= s["busy_fraction"] <= 1.0 and s["busy_seconds"] > 0 for s in st)


def test_dataset_smaller_than_one_batch_uses_fewer_rows(code_corpus, tmp_path):
    (tmp_path / "small.py").write_text("def f(x):\n    return x * 2\n" * 8)
    m = cllm.train(str(tmp_path), batch_size=64, seq_len=16, vocab_size=257, embed_dim=16, num_layers=1,
                   num_heads=2, threads=3, max_steps=3, progress=False)
    assert m.summary["steps"] == 3 and np.isfinite(m.summary["train_loss"])
    assert m.batch_size < 64


def test_verbose_cli_prints_sphere_stats(code_corpus, tmp_path):
    import subprocess, sys, os
    r = subprocess.run([sys.executable, "-m", "cllm", "train", code_corpus, "--max-steps", "3", "--batch-size", "4",
                        "--seq-len", "16", "--vocab-size", "257", "--embed-dim", "16", "--num-layers", "1",
                        "--num-heads", "2", "--threads", "2", "--out", str(tmp_path / "o"), "-q", "-v",
                        "--sample-tokens", "0"], capture_output=True, text=True, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(cllm.__file__)))
    assert r.returncode == 0, r.stderr
    assert "sphere   0 (parent  -1)" in r.stdout and "sphere   1 (parent   0)" in r.stdout


# ------------------------------------------------ batch-wide (column-sliced) GEMMs
MC_SPLIT = ModelConfig(vocab_size=301, context_len=12, num_layers=2, num_heads=3, embed_dim=36)


def _assert_short_shards(rows: int, threads: int, T: int) -> None:
    """The default mode runs the layers' GEMMs batch-wide only for shards
    shorter than the GEMM's row block (MC): the tests below rely on it."""
    shard = -(-rows // threads) * T
    assert shard < cllm.gemm_blocking()["mc"], f"{shard}-row shards are not short on this machine"


def _run_block_shapes(threads: int, precision: str, deterministic: bool, batch: int = 5):
    """Three train steps then a separate forward + backward on a shorter block
    and a (B, T, V) logits call, in deterministic mode (every product per
    shard) or not. Ragged on purpose: V and 4C are not multiples of the
    16-float column slices, the batch does not split evenly over the spheres,
    the last block is shorter."""
    m = Model(MC_SPLIT, Tokenizer.byte_level(), batch_size=batch, seq_len=12, threads=threads, seed=7,
              precision=precision, deterministic=deterministic)
    assert m.deterministic is deterministic
    rng = np.random.default_rng(1)
    out = []
    for s in range(1, 4):
        x, y = rng.integers(0, 301, (batch, 12)), rng.integers(0, 301, (batch, 12))
        y[0, :3] = -1
        out.append(np.array(m.train_step(x, y, s, 1e-3)))
    rows = max(1, batch - 1)
    x, y = rng.integers(0, 301, (rows, 9)), rng.integers(0, 301, (rows, 9))
    out.append(np.array([m.forward(x, y)]))
    m.backward()
    out += [m.grads.copy(), m.params.copy(), m.logits(rng.integers(0, 301, (min(3, batch), 7)))]
    return out


def _needs_bf16(precision: str) -> None:
    """BF16 training runs on AVX512-BF16 / AMX, or anywhere on the scalar
    reference kernel (CLLM_ISA=scalar)."""
    info = cllm.cpu_info()
    if precision == "bf16" and cllm.get_isa() != "scalar" and not (info["avx512_bf16"] or info["amx_bf16"]):
        pytest.skip("CPU has neither AVX512-BF16 nor AMX-BF16 (CLLM_ISA=scalar runs the reference kernel)")


@pytest.mark.parametrize("threads, batch", [(2, 5), (3, 5), (3, 2)])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batch_wide_gemms_match_per_shard(threads, batch, precision):
    """Deterministic mode (every product per shard) and the default mode train
    the same model: losses, gradients, weights and logits agree to rounding
    (a batch-wide weight gradient is one K = all-rows sum, the per-shard one
    a sum of shard sums), for FP32 and BF16 training, on ragged shapes. With
    5 rows the shards are short, so the default runs the layers' GEMMs
    batch-wide as well as the LM head; with 2 rows on 3 spheres not every
    sphere holds a shard, so only the LM head and the embedding gradients are
    batch-wide."""
    _needs_bf16(precision)
    _assert_short_shards(batch, threads, 12)
    ref = _run_block_shapes(threads, precision, True, batch)
    got = _run_block_shapes(threads, precision, False, batch)
    tol = 1e-5 if precision == "fp32" else 1e-2  # BF16: operands rounded, AdamW amplifies its noise
    assert not all(np.array_equal(a, b) for a, b in zip(ref, got)), "the modes computed the same sums"
    for a, b in zip(ref, got):
        assert np.linalg.norm(a - b) <= tol * np.linalg.norm(a), (a, b)


def test_deterministic_option_is_checked_and_loaded(tmp_path):
    m = Model(MC_SPLIT, Tokenizer.byte_level(), batch_size=2, seq_len=12, threads=2)
    assert m.deterministic is False and "deterministic" not in repr(m)
    with pytest.raises(cllm.ConfigError, match="deterministic"):
        m.deterministic = 1
    m.deterministic = True
    assert m.deterministic is True
    m.save(str(tmp_path / "ck"))
    loaded = Model.load(str(tmp_path / "ck"), threads=2, batch_size=2, seq_len=12, deterministic=True)
    assert loaded.deterministic is True and "deterministic=True" in repr(loaded)


def _one_backward(threads: int, precision: str, T: int = 11):
    """Loss and named gradients of one forward + backward from the seed's weights."""
    m = Model(MC_SPLIT, Tokenizer.byte_level(), batch_size=5, seq_len=12, threads=threads, seed=7,
              precision=precision)
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 301, (5, T)), rng.integers(0, 301, (5, T))
    y[1, :T // 2] = -1
    loss = m.forward(x, y)
    m.backward()
    return loss, {k: v.copy() for k, v in m.named_grads()}


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("T", [11, 2])
def test_batch_wide_gradients_are_bit_identical_to_one_sphere(threads, precision, T):
    """With every GEMM batch-wide (the default mode, the shards being short),
    the weight matrices', wte's and wpe's gradients are computed over all rows
    at once, as one sphere computes them: bit for bit the single-thread
    gradients (the per-shard LayerNorm and bias gradients, summed shard by
    shard, agree to rounding). T = 11: the LM head's input gradient per
    shard; T = 2: batch-wide."""
    _needs_bf16(precision)
    _assert_short_shards(5, threads, T)
    loss1, g1 = _one_backward(1, precision, T)
    lossn, gn = _one_backward(threads, precision, T)
    assert loss1 == pytest.approx(lossn, rel=1e-6)
    whole = [k for k in g1 if k.endswith(("wte.weight", "wpe.weight", "c_attn.weight", "c_proj.weight", "c_fc.weight"))]
    assert len(whole) == 2 + 4 * 2
    for k in g1:
        if k in whole:
            assert np.array_equal(g1[k], gn[k]), k
        else:
            np.testing.assert_allclose(g1[k], gn[k], rtol=1e-4, atol=1e-7, err_msg=k)


# ------------------------------------------------ token-row shards (batch < threads)
def _row_shard_backward(threads: int, precision: str, B: int, T: int, NH: int = 3, KV: Optional[int] = None):
    """Loss and named gradients of one forward + backward of B sequences of T
    tokens: with fewer sequences than spheres (or a number that does not
    divide evenly) the shards are token rows. KV: grouped K/V heads."""
    mc = ModelConfig(vocab_size=301, context_len=T, num_layers=2, num_heads=NH, embed_dim=12 * NH, n_kv_heads=KV)
    m = Model(mc, Tokenizer.byte_level(), batch_size=B, seq_len=T, threads=threads, seed=7, precision=precision)
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, 301, (B, T)), rng.integers(0, 301, (B, T))
    y[0, 1:4] = -1
    loss = m.forward(x, y)
    m.backward()
    return loss, {k: v.copy() for k, v in m.named_grads()}


@pytest.mark.parametrize("threads, B, NH, KV", [(2, 1, 3, None), (3, 1, 2, None), (3, 2, 3, None), (4, 3, 3, None),
                                               (2, 1, 4, 1), (3, 2, 4, 2)])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_token_row_shards_match_one_sphere(threads, B, NH, KV, precision):
    """One sequence on 2 or 3 spheres (and 2 on 3, 3 on 4): every sphere takes
    a run of token rows, attention is split by (sequence, head) units (with
    NH=2 on 3 spheres one sphere has no unit). The shards being short, the
    weight matrices', wte's and wpe's gradients are all-rows products: bit
    for bit the single-sphere ones; LayerNorm and bias gradients (shard sums
    added in sphere order) and the loss agree to rounding. With grouped K/V
    heads (multi-query, 2 groups) the query heads of a group sit in
    different spheres' units, and their K/V gradients are still summed in
    head order: c_attn's gradient is bit for bit the single-sphere one."""
    _needs_bf16(precision)
    T = 13
    _assert_short_shards(B, threads, T)
    loss1, g1 = _row_shard_backward(1, precision, B, T, NH, KV)
    lossn, gn = _row_shard_backward(threads, precision, B, T, NH, KV)
    assert lossn == pytest.approx(loss1, rel=1e-6)
    whole = ("wte.weight", "wpe.weight", "c_attn.weight", "c_proj.weight", "c_fc.weight")
    for k in g1:
        if k.endswith(whole):
            assert np.array_equal(g1[k], gn[k]), k
        else:
            np.testing.assert_allclose(gn[k], g1[k], rtol=1e-4, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("threads", [2, 3])
def test_token_row_shards_are_deterministic(threads):
    """Same seed and thread count: bit-identical training with one sequence
    per step, as with whole-sequence shards."""
    a = run_steps(threads, steps=3, batch=1)
    b = run_steps(threads, steps=3, batch=1)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    ref = run_steps(1, steps=3, batch=1)
    assert np.abs(a[1] - ref[1]).max() < 1e-4


def test_deterministic_mode_keeps_whole_sequences():
    """Deterministic mode keeps whole-sequence shards (what MPI ranks hold),
    so 1 sequence on 2 spheres is then the 1-sphere computation exactly."""
    mc = ModelConfig(vocab_size=301, context_len=13, num_layers=2, num_heads=3, embed_dim=36)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 301, (1, 13)), rng.integers(0, 301, (1, 13))
    out = []
    for threads in (1, 2):
        m = Model(mc, Tokenizer.byte_level(), batch_size=1, seq_len=13, threads=threads, seed=3,
                  deterministic=True)
        out.append((m.forward(x, y), m.backward(), m.grads.copy()))
    assert out[0][0] == out[1][0] and np.array_equal(out[0][2], out[1][2])


# ------------------------------------------------ the kernels follow cllm.set_isa
def _train_under(isas, precision: str, steps: int = 3) -> np.ndarray:
    """Weights after `steps` train steps of a model created under isas[0],
    whose forward (to resolve its kernels) runs under each following ISA in
    turn, and whose steps run under the last one."""
    cllm.set_isa(isas[0])
    m = Model(MC_SPLIT, Tokenizer.byte_level(), batch_size=3, seq_len=12, threads=2, seed=4, precision=precision)
    rng = np.random.default_rng(9)
    x, y = rng.integers(0, 301, (3, 12)), rng.integers(0, 301, (3, 12))
    for isa in isas[1:]:
        cllm.set_isa(isa)
        m.forward(x, y)
    for s in range(1, steps + 1):
        m.train_step(x, y, s, 1e-3)
    return m.params.copy()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_model_follows_an_isa_change(precision):
    """A model resolves its kernels (and BF16 kernel) when created and again
    whenever cllm.set_isa changed the ISA since: trained after a switch, it is
    bit for bit the model created and trained under the new ISA, and the two
    ISAs do train different bits (so the switch is observable). BF16 runs on
    the scalar reference kernel, so the scalar ISA is its starting point."""
    if not cllm.cpu_info()["avx2_fma"]:
        pytest.skip("CPU lacks AVX2")
    before = cllm.get_isa()
    try:
        if precision == "fp32":
            switched = _train_under(["avx2", "scalar"], precision)
            assert np.array_equal(switched, _train_under(["scalar"], precision))
            assert not np.array_equal(switched, _train_under(["avx2"], precision))
        else:
            there_and_back = _train_under(["scalar", "avx2", "scalar"], precision)
            assert np.array_equal(there_and_back, _train_under(["scalar"], precision))
            assert not np.array_equal(there_and_back, _train_under(["scalar", "avx2"], precision))
    finally:
        cllm.set_isa(before)
