"""Data-parallel training: the C core's global-batch loss normalisation, the
one-process World, and (under ``mpirun -n 2 --oversubscribe``) equality with a
single process, resume across rank counts, and a failing rank ending the job."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from cllm.training import distributed
from cllm.errors import ConfigError
from cllm.config import ModelConfig
from cllm.model.gpt import Model

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "mpi_worker.py")
CFG = ModelConfig(vocab_size=257, context_len=16, num_layers=2, num_heads=2, embed_dim=32)

_MISSING = [what for what, ok in (("mpi4py", importlib.util.find_spec("mpi4py") is not None),
                                  ("mpirun", distributed.find_mpirun() is not None)) if not ok]
needs_mpi = pytest.mark.skipif(bool(_MISSING), reason=f"{' and '.join(_MISSING)} not installed: "
                                                      f"pip install \".[mpi]\" to run the MPI tests")
MPI_TIMEOUT = 240  # seconds: a hang fails the test instead of blocking CI


def _clean_env() -> dict:
    """This environment without any MPI launcher variables (pytest itself may run under one)."""
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_ENV
           and not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    return env


def mpirun(n: int, args: list, timeout: float = MPI_TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``python args...`` on ``n`` ranks; fails the test on timeout (a hang)."""
    cmd = distributed.mpirun_command(n) + [sys.executable] + args
    try:
        return subprocess.run(cmd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"mpirun -n {n} hung for {timeout}s: {e.stderr!r}")


def python(args: list, timeout: float = MPI_TIMEOUT, **env: str) -> subprocess.CompletedProcess:
    """Run ``python args...`` as one plain process (no MPI), with extra environment ``env``."""
    return subprocess.run([sys.executable] + args, env={**_clean_env(), **env}, capture_output=True, text=True,
                          timeout=timeout)


def _ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"


# ---------------------------------------------------------------- no MPI needed
@pytest.mark.parametrize("deterministic", [True, False])
def test_loss_tokens_shards_sum_to_the_full_batch(rng, deterministic):
    """Two half batches normalised by the full batch's token count give losses
    and gradients that sum to the full batch's: bit for bit when the 2-thread
    run is deterministic (every gradient per shard: it splits rows the same
    way and sums shard gradients in the same order), to rounding when it
    computes some batch-wide (the default mode for these short shards)."""
    x = rng.integers(0, 257, (4, 16))
    y = rng.integers(0, 257, (4, 16))
    y[1, 5:9] = -1
    n = int((y >= 0).sum())
    full = Model.create(CFG, batch_size=4, seq_len=16, threads=2, seed=3, deterministic=deterministic)
    loss = full.forward(x, y)
    full.backward()
    half = Model.create(CFG, batch_size=2, seq_len=16, threads=1, seed=3)
    parts, grads = [], np.zeros_like(full.grads)
    for r in range(2):
        parts.append(half.forward(x[2 * r:2 * r + 2], y[2 * r:2 * r + 2], loss_tokens=n))
        half.backward()
        grads += half.grads
    if deterministic:
        assert np.array_equal(grads, full.grads)
    else:
        np.testing.assert_allclose(grads, full.grads, rtol=1e-4, atol=1e-7)
    assert sum(parts) == pytest.approx(loss, rel=1e-6)
    # loss_tokens is per call: the default forward is the block's own mean again
    own = half.forward(x[:2], y[:2])
    assert own == pytest.approx(parts[0] * n / int((y[:2] >= 0).sum()), rel=1e-6)


def test_loss_tokens_validation(rng):
    m = Model.create(CFG, batch_size=2, seq_len=16, threads=1, seed=3)
    x = rng.integers(0, 257, (2, 16))
    with pytest.raises(ConfigError, match="loss tokens must be >= 0"):
        m.forward(x, x, loss_tokens=-1)
    with pytest.raises(ConfigError, match="more than the 10"):
        m.forward(x, x, loss_tokens=10)
    # train_step always normalises by its own block
    m.forward(x, x, loss_tokens=64)
    loss, _ = m.train_step(x, x, 1, 1e-3)
    ref = Model.create(CFG, batch_size=2, seq_len=16, threads=1, seed=3)
    assert loss == ref.train_step(x, x, 1, 1e-3)[0]


def test_world_of_one_is_the_plain_train_step(rng):
    w = distributed.World()
    assert (w.rank, w.size, w.is_root, w.distributed) == (0, 1, True, False)
    buf = np.arange(5, dtype=np.float32)
    assert w.allreduce_(buf) is buf and np.array_equal(buf, np.arange(5))
    assert w.sum([1.5, 2.0]).tolist() == [1.5, 2.0] and w.any(True) and not w.any(False)
    assert w.bcast({"a": 1}) == {"a": 1} and w.in_sync(buf)
    x = rng.integers(0, 257, (4, 16))
    a = Model.create(CFG, batch_size=4, seq_len=16, threads=1, seed=3)
    b = Model.create(CFG, batch_size=4, seq_len=16, threads=1, seed=3)
    assert distributed.data_parallel_step(a, w, x, x, 1, 1e-3) == b.train_step(x, x, 1, 1e-3)
    assert np.array_equal(a.params, b.params)
    with pytest.raises(ValueError, match="one"):
        with w.fail_fast():
            raise ValueError("one rank alone re-raises unchanged")


def test_launcher_detection_and_modes(monkeypatch):
    assert distributed.launcher_env({}) is None
    assert distributed.launcher_env({"OMPI_COMM_WORLD_SIZE": "2"}) == "OMPI_COMM_WORLD_SIZE"
    assert distributed.launcher_env({"PMI_SIZE": "4"}) == "PMI_SIZE"
    with pytest.raises(ConfigError, match="distributed must be one of"):
        distributed.init("yes")
    monkeypatch.setattr(distributed, "_WORLD", None)
    for var in distributed.LAUNCHER_ENV:
        monkeypatch.delenv(var, raising=False)
    assert distributed.init("auto").size == 1  # no launcher: never imports MPI


def test_missing_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(distributed, "_WORLD", None)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"launched by MPI \(OMPI_COMM_WORLD_SIZE is set\).*cllm\[mpi\]"):
        distributed.init("auto")


def test_shard_splits_rows_like_the_spheres():
    class W:
        rank, size = 1, 2
    blk = np.arange(8).reshape(4, 2)
    assert distributed.shard(blk, W()).tolist() == [[4, 5], [6, 7]]
    with pytest.raises(ConfigError, match="does not split evenly"):
        distributed.shard(np.zeros((3, 2)), W())


def test_model_options_make_a_data_parallel_model_deterministic():
    """The ranks of a data-parallel world create their models in
    deterministic mode whatever is asked; a world of one only when asked."""
    one = distributed.World()
    assert one.model_options(2) == {"threads": 2, "deterministic": False}
    assert one.model_options(2, deterministic=True) == {"threads": 2, "deterministic": True}
    two = distributed.World()
    two.size = 2  # as a 2-rank communicator would set it (no MPI needed for the options)
    assert two.model_options(1) == {"threads": 1, "deterministic": True}
    m = Model.create(CFG, batch_size=2, seq_len=16, seed=3, **two.model_options(1))
    assert m.deterministic and m.threads == 1


# ---------------------------------------------------------------- under mpirun
@needs_mpi
def test_two_ranks_match_one_process_with_two_threads(tmp_path):
    """2 ranks x 1 thread x batch 2 == 1 process x 2 threads x batch 4 with
    per-shard gradients (deterministic mode: each thread's rows summed as
    each rank's): weights bit-identical after 20 steps, losses within 1e-6.
    Within rounding of the default 2-thread run (batch-wide weight gradients
    for its short shards) and of 1 thread x batch 4."""
    r = mpirun(2, [WORKER, "steps", str(tmp_path / "mpi.npz"), "--threads", "1"])
    _ok(r)
    _ok(python([WORKER, "steps", str(tmp_path / "t2.npz"), "--threads", "2", "--deterministic"]))
    _ok(python([WORKER, "steps", str(tmp_path / "t2s.npz"), "--threads", "2"]))
    _ok(python([WORKER, "steps", str(tmp_path / "t1.npz"), "--threads", "1"]))
    mpi, t2, t2s, t1 = (np.load(tmp_path / f) for f in ("mpi.npz", "t2.npz", "t2s.npz", "t1.npz"))
    assert np.abs(mpi["losses"] - t2s["losses"]).max() < 1e-5
    assert int(mpi["ranks"]) == 2 and bool(mpi["synced"])
    assert len(mpi["losses"]) == 20
    assert np.abs(mpi["losses"] - t2["losses"]).max() < 1e-6
    assert np.array_equal(mpi["norms"], t2["norms"])
    assert np.array_equal(mpi["params"], t2["params"])
    assert np.abs(mpi["losses"] - t1["losses"]).max() < 1e-5
    assert mpi["losses"][-1] < mpi["losses"][0]


@needs_mpi
def test_a_rank_that_raises_ends_the_job_with_its_message():
    r = mpirun(2, [WORKER, "raise"], timeout=120)
    assert r.returncode != 0
    assert "rank 1/2: error: injected failure on rank 1 at step 3" in r.stderr


# ------------------------------------------------------- the trainer under mpirun
# FP32: the resume-on-another-layout check compares weights within a float
# tolerance, and under BF16 matmuls the key bias (whose gradient is exactly
# zero in exact arithmetic: softmax ignores a per-row shift) gets
# rounding-noise gradients that AdamW normalises into lr-sized random steps,
# so two layouts drift apart by ~1e-5 there for no fault of either
TRAIN = dict(max_steps=20, seq_len=32, vocab_size=300, embed_dim=32, num_layers=1, num_heads=2, seed=5,
             warmup_steps=5, precision="fp32")
CLI = ["-m", "cllm", "train", "-q", "--sample-tokens", "0"] + [
    a for k, v in TRAIN.items() for a in ("--" + k.replace("_", "-"), str(v))]


def _state(d) -> dict:
    import json
    return json.loads((d / "trainer_state.json").read_text())


@pytest.fixture(scope="module")
def two_rank_run(code_corpus, tmp_path_factory):
    """``mpirun -n 2 cllm train`` (1 thread, batch 2 each) and ``cllm train``
    (2 threads, batch 4, per-shard gradients as the ranks': --deterministic)
    on the same corpus."""
    if _MISSING:
        pytest.skip(f"{' and '.join(_MISSING)} not installed")
    d = tmp_path_factory.mktemp("mpi_train")
    _ok(mpirun(2, CLI + [code_corpus, "--out", str(d / "mpi"), "--threads", "1", "--batch-size", "2"]))
    _ok(python(CLI + [code_corpus, "--out", str(d / "one"), "--threads", "2", "--batch-size", "4",
                      "--deterministic"]))
    return d


@needs_mpi
def test_cli_two_ranks_match_one_process_with_the_doubled_batch(two_rank_run):
    import cllm
    mpi, one = two_rank_run / "mpi", two_rank_run / "one"
    sm, so = _state(mpi), _state(one)
    assert (sm["ranks"], sm["threads"], sm["batch"], sm["step"]) == (2, 1, 4, 20)
    assert (so["ranks"], so["threads"], so["batch"]) == (1, 2, 4)
    for key in ("first_loss", "train_loss", "val_loss"):
        assert abs(sm["summary"][key] - so["summary"][key]) < 1e-5, key
    assert np.array_equal(cllm.load(str(mpi)).params, cllm.load(str(one)).params)
    assert sorted(os.listdir(mpi)) == sorted(os.listdir(one))  # rank 0 alone wrote, the same files


@needs_mpi
def test_stop_on_sigusr1_then_resume_on_two_ranks_or_one(two_rank_run, code_corpus, tmp_path):
    """Rank 1 gets SIGUSR1 (what mpirun forwards) during step 7: both ranks stop
    after step 7 and rank 0 saves. Resuming on 2 ranks gives the uninterrupted
    run's weights bit for bit; on 1 process (same global batch 4) the same run
    continues within float tolerance; 3 ranks cannot split the batch."""
    import json
    import shutil

    import cllm
    out = tmp_path / "run"
    kw = dict(TRAIN, path=code_corpus, progress=False, threads=1, batch_size=2)
    r = mpirun(2, [WORKER, "train", str(out), "--kwargs", json.dumps(kw), "--usr1-at", "7"])
    assert r.returncode != 0 and "MPI_ABORT" not in r.stderr, r.stderr  # a clean stop, not an abort
    assert _state(out)["step"] == 7 and "interrupted after step 7" in r.stderr
    one = tmp_path / "one"
    shutil.copytree(out, one, symlinks=True)
    _ok(mpirun(2, ["-m", "cllm", "train", "--resume", "--out", str(out), "-q", "--sample-tokens", "0"]))
    ref = cllm.load(str(two_rank_run / "mpi")).params
    assert _state(out)["step"] == 20
    assert np.array_equal(cllm.load(str(out)).params, ref)
    r = python(["-m", "cllm", "train", "--resume", "--out", str(one), "-q", "--sample-tokens", "0"])
    _ok(r)
    assert "not bit-identically" in r.stderr
    st = _state(one)
    assert (st["step"], st["ranks"], st["batch"]) == (20, 1, 4)
    assert np.allclose(cllm.load(str(one)).params, ref, rtol=0, atol=1e-5)
    r = mpirun(3, ["-m", "cllm", "train", "--resume", "--out", str(one), "-q", "--sample-tokens", "0"])
    assert r.returncode != 0 and "global batch of 4 sequences does not split over 3 ranks" in r.stderr


# -------------------------------------------------- ranks must read one corpus
DIFFERENT_CORPUS = """
import os, sys
from cllm.training.loop import train
rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
base = sys.argv[1]
train(os.path.join(base, "c%d" % rank), max_steps=2, batch_size=2, seq_len=16, vocab_size=257, embed_dim=16,
      num_layers=1, num_heads=2, threads=1, progress=False, distributed="mpi")
"""


@needs_mpi
def test_ranks_with_different_corpora_stop_before_the_first_step(tmp_path):
    for r, extra in ((0, ""), (1, "# only rank 1 sees this line\n")):
        d = tmp_path / f"c{r}"
        d.mkdir()
        (d / "a.py").write_text("def f(x):\n    return x + 1\n" * 40 + extra)
    script = tmp_path / "w.py"
    script.write_text(DIFFERENT_CORPUS)
    r = mpirun(2, [str(script), str(tmp_path)])
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "rank 1 read a different corpus than rank 0" in out and "bytes" in out, out


def test_the_corpus_check_names_the_rank_and_the_difference():
    from cllm.data.corpus import Document
    from cllm.errors import CorpusError
    from cllm.training.loop import check_same_data, corpus_digest

    class Rank1:
        rank, is_root = 1, False

        def bcast(self, obj):
            return ref

    docs = [Document("/x/a.py", b"abc", "a.py")]
    ids = np.arange(10, dtype=np.int32)
    ref = corpus_digest(docs, ids, 8)
    check_same_data(Rank1(), corpus_digest(docs, ids.copy(), 8))          # the same data passes
    with pytest.raises(CorpusError, match=r"rank 1 .*token ids .* \(rank 0: "):
        check_same_data(Rank1(), corpus_digest(docs, ids[::-1].copy(), 8))
