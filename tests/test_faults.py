"""Bad input and faults, as a hostile user would try them.

Every case must end in a clear error (API: a ``cllm`` error class or a
standard ``ValueError``/``TypeError``/``FileNotFoundError``; CLI: one line on
stderr, exit code 1 or 2, no traceback) or in a correct result -- never a
crash, a traceback or a silent wrong answer. Kills (SIGKILL) at every
file-system step of a save and at random instants of a run must leave a
loadable checkpoint from which ``--resume`` ends bit-identical to an
uninterrupted run.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import cllm
from conftest import signal_at_step
from cllm.model import checkpoint as ck
from cllm.io import files as fileio
from cllm.config import ModelConfig
from cllm.model.gpt import Model
from cllm.data.tokenizer import Tokenizer

KW = dict(max_steps=6, batch_size=2, seq_len=16, vocab_size=257, embed_dim=16, num_layers=1, num_heads=2,
          threads=1, progress=False, seed=3, warmup_steps=2)
CLI_TINY = ["--max-steps", "6", "--batch-size", "2", "--seq-len", "16", "--vocab-size", "257", "--embed-dim", "16",
            "--num-layers", "1", "--num-heads", "2", "--threads", "1", "--seed", "3", "-q", "--sample-tokens", "0"]
ROOT = os.geteuid() == 0


def tiny_model(seed: int = 1) -> Model:
    mc = ModelConfig(vocab_size=257, context_len=16, num_layers=1, num_heads=2, embed_dim=16)
    return Model(mc, Tokenizer.byte_level(), batch_size=2, seq_len=16, threads=1, seed=seed)


def run_cli(*args, stdin=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "cllm", *map(str, args)], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(cllm.__file__)), timeout=timeout, input=stdin)


def assert_clean_cli_error(r, pattern: str = "") -> None:
    """Exit code 1-2, no traceback, and the last stderr line is the one-line error."""
    assert r.returncode in (1, 2), (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("cllm: error:"), r.stderr
    assert pattern.lower() in last.lower(), (pattern, r.stderr)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("faultcorpus")
    src = cllm.data.corpus.default_corpus_path()
    for name in ("textwrap.py", "bisect.py", "colorsys.py"):
        shutil.copy(os.path.join(src, name), d / name)
    return str(d)


# --------------------------------------------------------------- API: options
@pytest.mark.parametrize("kw,exc,msg", [
    (dict(vocab_size="4096"), TypeError, "vocab_size must be an integer"),
    (dict(vocab_size=4096.0), TypeError, "vocab_size"),
    (dict(embed_dim=2**31), ValueError, "embed_dim"),
    (dict(embed_dim=4294967296), ValueError, "embed_dim"),
    (dict(num_layers=-1), ValueError, "num_layers"),
    (dict(batch_size=1.5), TypeError, "batch_size"),
    (dict(seq_len=0), ValueError, "seq_len"),
    (dict(learning_rate="1e-3"), TypeError, "learning_rate"),
    (dict(learning_rate=float("inf")), ValueError, "learning_rate"),
    (dict(learning_rate=0), ValueError, "learning_rate"),
    (dict(beta2=1.0), ValueError, "beta2"),
    (dict(grad_clip=-1), ValueError, "grad_clip"),
    (dict(val_fraction=0.5), ValueError, "val_fraction"),
    (dict(keep_checkpoints=0), ValueError, "keep_checkpoints"),
    (dict(max_steps=0), ValueError, "max_steps"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=2**64), ValueError, "seed"),
    (dict(exts=5), TypeError, "exts"),
    (dict(out_dir=5), TypeError, "out_dir"),
    (dict(threads=None), TypeError, "threads"),
    (dict(max_memory_gb=float("nan")), ValueError, "max_memory_gb"),
    (dict(learing_rate=1e-3), TypeError, "did you mean 'learning_rate'"),
])
def test_bad_option_values(corpus, kw, exc, msg):
    with pytest.raises(exc, match=msg) as ei:
        cllm.train(corpus, **{**KW, **kw})
    assert isinstance(ei.value, cllm.CllmError)


def test_bad_path_type(corpus):
    with pytest.raises(cllm.ConfigError, match="path"):
        cllm.train(123, **KW)


# ---------------------------------------------------------------- API: corpus
def test_missing_corpus(tmp_path):
    with pytest.raises(cllm.CorpusError, match="does not exist"):
        cllm.train(str(tmp_path / "nope"), **KW)


def test_empty_and_binary_corpus(tmp_path):
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "empty.py").write_bytes(b"")
    with pytest.raises(cllm.CorpusError, match="no usable text"):
        cllm.train(str(tmp_path), **KW)


def test_fifo_corpus(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(cllm.CorpusError):
        cllm.train(str(fifo), **KW)  # must not block reading the FIFO
    with pytest.raises(cllm.CorpusError, match="no usable text"):
        cllm.train(str(tmp_path), **KW)


def test_symlink_loop_corpus(tmp_path):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    with pytest.raises(cllm.CorpusError):
        cllm.train(str(tmp_path / "loop"), **KW)


def test_symlink_loop_inside_a_good_tree_is_skipped(tmp_path, corpus):
    d = tmp_path / "tree"
    shutil.copytree(corpus, d)
    os.symlink(d / "self", d / "self")
    os.symlink(d, d / "up")  # a directory cycle (os.walk does not follow it)
    m = cllm.train(str(d), **KW)
    assert m.summary["corpus_files"] == 3


def test_tiny_corpus(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    with pytest.raises(cllm.CorpusError, match="seq_len"):
        cllm.train(str(tmp_path), **{**KW, "seq_len": 64})


# ---------------------------------------------------------- API: out_dir
def test_out_dir_is_a_regular_file(tmp_path, corpus):
    f = tmp_path / "file"
    f.write_text("x")
    t0 = time.perf_counter()
    with pytest.raises(cllm.ConfigError, match="not a directory"):
        cllm.train(corpus, out_dir=str(f), **KW)
    assert time.perf_counter() - t0 < 5  # refused before any work


def test_out_dir_parent_not_writable(tmp_path, corpus):
    if ROOT:
        target = "/sys/cllm-test-out/run"  # sysfs refuses mkdir even for root
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = str(ro / "run")
    with pytest.raises(cllm.ConfigError, match="cannot create"):
        cllm.train(corpus, out_dir=target, **KW)


# ------------------------------------------------------------- API: tokenizer
def test_tokenizer_train_on_missing_dir():
    with pytest.raises(FileNotFoundError, match="no such file"):
        Tokenizer.train(["/no/such/dir"], vocab_size=300, progress=False)


def test_tokenizer_str_is_a_path_not_text():
    with pytest.raises(FileNotFoundError, match="texts="):
        Tokenizer.train("def f(): return 1", vocab_size=300, progress=False)
    tok = Tokenizer.train(texts="def f(): return 1\n" * 20, vocab_size=270, progress=False)
    assert len(tok) > 257


@pytest.mark.parametrize("kw,exc", [
    (dict(vocab_size="300"), TypeError), (dict(vocab_size=2**40), ValueError),
    (dict(min_frequency=0), ValueError), (dict(vocab_size=300, texts=[1.5]), TypeError),
])
def test_tokenizer_bad_args(kw, exc):
    kw = {"texts": ["abc abc"], **kw}
    with pytest.raises(exc) as ei:
        Tokenizer.train(progress=False, **kw)
    assert isinstance(ei.value, cllm.CllmError)


def test_tokenizer_errors_are_cllm_errors(tmp_path):
    tok = Tokenizer.byte_level()
    with pytest.raises(cllm.CllmError):
        tok.decode([10**9])
    bad = tmp_path / "tok.json"
    bad.write_text("{")
    with pytest.raises(cllm.CllmError, match="corrupt"):
        Tokenizer.load(str(bad))


# ----------------------------------------------------------------- API: model
def test_generate_rejects_2d_ids():
    m = tiny_model()
    with pytest.raises(cllm.ConfigError, match="1-D"):
        m.generate(np.array([[1, 2], [3, 4]]), max_new_tokens=2)
    with pytest.raises(cllm.ConfigError, match="1-D"):
        m.predict_next_token([[1, 2, 3]])
    with pytest.raises(cllm.ConfigError, match="1-D"):
        m.logits(np.zeros((1, 2, 3), dtype=np.int64))  # 2-D is a batch; 3-D is nothing


def test_generate_rejects_float_and_out_of_range_ids():
    m = tiny_model()
    with pytest.raises(cllm.ConfigError, match="integers"):
        m.generate([1.5, 2.0], max_new_tokens=2)
    with pytest.raises(cllm.ConfigError, match="out of range"):
        m.generate([1, 999], max_new_tokens=2)


def test_nan_weights_give_one_clear_sampling_error():
    m = tiny_model()
    m.params[:] = np.nan
    with pytest.raises(cllm.NumericError) as ei:
        m.generate("ab", max_new_tokens=2)
    assert str(ei.value).count("sample:") == 1


def test_write_errors_name_the_users_file_not_a_temp_file(tmp_path):
    target = "/sys/cllm-test.json" if ROOT else str(tmp_path / "ro" / "tok.json")
    if not ROOT:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o500)
    with pytest.raises(OSError) as ei:
        Tokenizer.byte_level().save(target)
    assert target in str(ei.value) and ".tmp." not in str(ei.value)


# -------------------------------------------------------- API: checkpoint files
@pytest.fixture
def saved(tmp_path):
    m = tiny_model()
    d = tmp_path / "ck"
    m.save(str(d))
    return m, d


def _plain_copy(d, dst):
    shutil.copytree(d / "latest", dst)
    os.remove(dst / "checkpoint.json")
    return dst


def test_load_missing_and_not_a_dir(tmp_path):
    with pytest.raises(cllm.CheckpointError, match="not found"):
        cllm.load(str(tmp_path / "missing"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(cllm.CheckpointError, match="not a checkpoint directory"):
        cllm.load(str(tmp_path / "f"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(cllm.CheckpointError, match="config.json"):
        cllm.load(str(tmp_path / "empty"))


def test_bit_flip_is_detected_by_the_manifest(saved):
    m, d = saved
    f = d / "latest" / "model.safetensors"
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0x10
    f.write_bytes(bytes(b))
    with pytest.raises(cllm.CheckpointError, match=r"model\.safetensors.*SHA-256"):
        cllm.load(str(d))


def test_truncated_file_is_detected_by_the_manifest(saved):
    m, d = saved
    f = d / "latest" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(cllm.CheckpointError, match=r"model\.safetensors has \d+ bytes"):
        cllm.load(str(d))


def test_trailing_bytes_after_the_last_tensor_are_rejected(saved, tmp_path):
    m, d = saved
    p = _plain_copy(d, tmp_path / "plain")
    with open(p / "model.safetensors", "ab") as f:
        f.write(b"\0" * 64)
    with pytest.raises(cllm.CheckpointError, match=r"plain/model\.safetensors.*extra bytes"):
        cllm.load(str(p))


def test_nan_weights_warn_naming_the_tensor(saved, tmp_path, caplog):
    m, d = saved
    m.params[:] = np.asarray(m.params)
    name, view = next(iter(m.named_parameters()))
    view.flat[3] = np.nan
    p = tmp_path / "nan"
    m.save(str(p))
    with caplog.at_level(logging.WARNING, logger="cllm"):
        cllm.load(str(p))
    assert any(name in r.getMessage() and "NaN" in r.getMessage() for r in caplog.records)


def test_mixed_checkpoint_without_manifest_is_refused(corpus, tmp_path):
    """The issue's scenario: model.safetensors of one step beside the optimizer
    and trainer state of an earlier one (as an older cllm could leave it)."""
    out = tmp_path / "run"
    cllm.train(corpus, out_dir=str(out), checkpoint_every=2, keep_checkpoints=3, **KW)
    ckpts = {man["step"]: dd for _, dd, man in ck.list_checkpoints(str(out))}
    assert sorted(ckpts) == [2, 4, 6]
    mixed = tmp_path / "mixed"
    shutil.copytree(ckpts[4], mixed)
    shutil.copy(os.path.join(ckpts[6], "model.safetensors"), mixed / "model.safetensors")
    os.remove(mixed / "checkpoint.json")
    with pytest.raises(cllm.CheckpointError, match="step 6.*step 4|step 4.*step 6"):
        cllm.load(str(mixed))
    with pytest.raises(cllm.CheckpointError, match="step"):
        cllm.train(out_dir=str(mixed), resume=True, progress=False)


def test_mixed_checkpoint_with_manifest_is_refused_by_resume(corpus, tmp_path):
    out = tmp_path / "run"
    cllm.train(corpus, out_dir=str(out), checkpoint_every=2, keep_checkpoints=2, **KW)
    (six, four) = [dd for _, dd, _ in reversed(ck.list_checkpoints(str(out)))]
    shutil.copy(os.path.join(four, "optimizer.safetensors"), os.path.join(six, "optimizer.safetensors"))
    with pytest.raises(cllm.CheckpointError, match=r"optimizer\.safetensors.*step 6") as ei:
        cllm.train(out_dir=str(out), resume=True, progress=False)
    assert "checkpoint-4" in str(ei.value)  # points at the earlier complete checkpoint


def test_resume_refuses_a_changed_corpus(corpus, tmp_path, monkeypatch):
    d = tmp_path / "corpus"
    shutil.copytree(corpus, d)
    out = tmp_path / "run"
    signal_at_step(monkeypatch, signal.SIGINT, 3)       # an unfinished run (a finished one has nothing to resume)
    with pytest.raises(KeyboardInterrupt):
        cllm.train(str(d), out_dir=str(out), **KW)
    monkeypatch.undo()
    os.remove(d / "bisect.py")
    with pytest.raises(cllm.CheckpointError, match="corpus"):
        cllm.train(out_dir=str(out), resume=True, progress=False)


def test_resume_nothing(tmp_path):
    with pytest.raises(cllm.ConfigError, match="nothing to resume"):
        cllm.train(out_dir=str(tmp_path / "none"), resume=True, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(cllm.ConfigError, match="nothing to resume"):
        cllm.train(out_dir=str(tmp_path / "empty"), resume=True, progress=False)


def test_keep_checkpoints_and_layout(corpus, tmp_path):
    out = tmp_path / "run"
    m = cllm.train(corpus, out_dir=str(out), checkpoint_every=1, keep_checkpoints=2, **KW)
    names = sorted(n for n in os.listdir(out) if n.startswith("checkpoint-"))
    assert names == ["checkpoint-5", "checkpoint-6"]
    assert os.readlink(out / "latest") == "checkpoint-6"
    for f in ("model.safetensors", "config.json", "tokenizer.json", "optimizer.safetensors",
              "trainer_state.json", "checkpoint.json"):
        assert os.path.islink(out / f) and os.readlink(out / f) == f"latest/{f}"
    assert not [n for n in os.listdir(out) if ".tmp." in n]
    assert np.array_equal(cllm.load(str(out)).params, m.params)
    assert not np.array_equal(cllm.load(str(out / "checkpoint-5")).params, m.params)


# ------------------------------------------------------------ API: divergence
def test_divergence_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path):
    """``learning_rate=10`` blows the loss up: the run stops with a clear error
    instead of saving the diverged weights; a checkpoint saved before stays."""
    out = tmp_path / "run"
    kw = {**KW, "max_steps": 40, "warmup_steps": 0}
    with pytest.raises(cllm.DivergenceError, match="diverged at step") as ei:
        cllm.train(corpus, out_dir=str(out), learning_rate=10.0, checkpoint_every=1, **kw)
    assert isinstance(ei.value, cllm.NumericError) and "--learning-rate" in str(ei.value)
    step = int(str(ei.value).split("diverged at step ")[1].split(":")[0])
    if step > 1:
        state = json.loads((out / "trainer_state.json").read_text())
        assert state["step"] == step - 1 and f"step {step - 1}" in str(ei.value)
        m = cllm.load(str(out))
        assert np.isfinite(m.params).all()


# ------------------------------------------------------------------------ CLI
def test_cli_out_is_a_regular_file(tmp_path, corpus):
    f = tmp_path / "file"
    f.write_text("x")
    assert_clean_cli_error(run_cli("train", corpus, "--out", f, *CLI_TINY), "not a directory")


def test_cli_out_parent_not_writable(tmp_path, corpus):
    target = "/sys/cllm-test-out/run" if ROOT else None
    if target is None:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "run"
    assert_clean_cli_error(run_cli("train", corpus, "--out", target, *CLI_TINY), "cannot create")


@pytest.mark.parametrize("args,msg", [
    (["--embed-dim", "4294967296"], "embed_dim"),
    (["--embed-dim", "30", "--num-heads", "4"], "divisible"),
    (["--learning-rate", "nan"], "learning_rate"),
    (["--beta1", "1.5"], "beta1"),
    (["--keep-checkpoints", "0"], "keep_checkpoints"),
])
def test_cli_bad_values(corpus, tmp_path, args, msg):
    assert_clean_cli_error(run_cli("train", corpus, "--out", tmp_path / "o", *CLI_TINY, *args), msg)


def test_cli_unparseable_number_is_a_usage_error(corpus):
    r = run_cli("train", corpus, "--vocab-size", "many")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "invalid int value" in r.stderr


def test_cli_missing_corpus_and_checkpoint(tmp_path):
    assert_clean_cli_error(run_cli("train", tmp_path / "nope", *CLI_TINY), "does not exist")
    assert_clean_cli_error(run_cli("generate", tmp_path / "missing"), "not found")
    assert_clean_cli_error(run_cli("info", tmp_path / "missing"), "not found")


def test_cli_corrupt_checkpoint(saved):
    m, d = saved
    f = d / "latest" / "config.json"
    f.write_text(f.read_text().replace("gelu_new", "relu"))
    assert_clean_cli_error(run_cli("generate", d, "-n", "2"), "config.json")


def test_cli_bad_generate_args(saved):
    m, d = saved
    assert_clean_cli_error(run_cli("generate", d, "-n", "-1"), "max_new_tokens")
    assert_clean_cli_error(run_cli("generate", d, "-t", "-1"), "temperature")


def test_cli_resume_nothing(tmp_path):
    assert_clean_cli_error(run_cli("train", "--resume", "--out", tmp_path / "none", "-q"), "nothing to resume")


def test_cli_resume_refuses_a_mixed_checkpoint(corpus, tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", corpus, "--out", out, *CLI_TINY, "--checkpoint-every", "2", "--keep-checkpoints", "2")
    assert r.returncode == 0, r.stderr
    shutil.copy(out / "checkpoint-4" / "trainer_state.json", out / "checkpoint-6" / "trainer_state.json")
    assert_clean_cli_error(run_cli("train", "--resume", "--out", out, "-q"), "trainer_state.json")
    r = run_cli("train", "--resume", "--out", out, "-q")
    assert "step 6" in r.stderr and "checkpoint-4" in r.stderr


def test_cli_divergence(corpus, tmp_path):
    r = run_cli("train", corpus, "--out", tmp_path / "o", *CLI_TINY, "--max-steps", "40", "--warmup-steps", "0",
                "--learning-rate", "10")
    assert_clean_cli_error(r, "diverged")


def test_cli_verbose_shows_the_traceback(tmp_path):
    r = run_cli("generate", tmp_path / "missing", "-v")
    assert r.returncode == 2 and "Traceback" in r.stderr and "not found" in r.stderr


def test_cli_tokenize_into_a_closed_pipe(corpus):
    """``cllm tokenize ... | head -c 10``: no BrokenPipeError traceback."""
    cmd = (f"{sys.executable} -m cllm tokenize {corpus} --vocab-size 300 -q --file {corpus}/textwrap.py "
           f"--show pieces | head -c 10")
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(cllm.__file__)))
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    assert len(r.stdout) == 10 and r.returncode in (0, 1)


def test_cli_tokenize_missing_file(corpus, tmp_path):
    assert_clean_cli_error(run_cli("tokenize", "--load", tmp_path / "nope.json"), "not found")
    assert_clean_cli_error(run_cli("tokenize", corpus, "--vocab-size", "300", "-q", "--file", tmp_path / "nope"),
                           "nope")


# ----------------------------------------------------- kills during a save
_EVENTS = ("replace", "rename", "symlink", "fsync", "unlink", "makedirs", "mkdir")


def _save_killed_at(model: Model, out: str, state: dict, k: int, keep: int = 1) -> bool:
    """Save in a forked child that SIGKILLs itself at its k-th file-system
    event (each chunk written, fsync, rename, symlink, unlink, mkdir);
    True if it was killed, False if the save completed first."""
    pid = os.fork()
    if pid == 0:  # child
        try:
            count = [0]

            def tick():
                count[0] += 1
                if count[0] == k:
                    os.kill(os.getpid(), signal.SIGKILL)

            def wrap(fn):
                def w(*a, **kw):
                    tick()
                    return fn(*a, **kw)
                return w
            for name in _EVENTS:
                setattr(os, name, wrap(getattr(os, name)))
            shutil.rmtree = wrap(shutil.rmtree)
            orig_open = fileio.atomic_open

            class CountingFile:
                def __init__(self, f):
                    self._f = f

                def write(self, b):
                    tick()
                    return self._f.write(b)

                def __getattr__(self, n):
                    return getattr(self._f, n)

            @contextlib.contextmanager
            def counting_open(path):
                with orig_open(path) as f:
                    yield CountingFile(f)
            fileio.atomic_open = counting_open
            model.save(out, trainer_state=state, keep=keep)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.fixture
def no_fsync(monkeypatch):
    """fsync as a no-op: SIGKILL does not lose the page cache, so durability is
    not what these tests check, and real fsyncs make them slow."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def test_sigkill_at_every_step_of_a_save(tmp_path, no_fsync):
    """A save killed at each of its file-system steps leaves the previous
    complete checkpoint or the new one -- never a mix -- and the next save
    removes the debris."""
    old, new = tiny_model(seed=1), tiny_model(seed=2)
    for m in (old, new):
        m.adam_m[:] = m.params * 0.5
        m.adam_v[:] = m.params ** 2
    st = lambda s: {"step": s, "options": {}, "run_id": "r"}  # noqa: E731
    killed = 0
    k = 1
    while True:
        out = str(tmp_path / f"k{k}")
        old.save(out, trainer_state=st(10))
        if not _save_killed_at(new, out, st(20), k):
            break
        killed += 1
        got = cllm.load(out)
        d = ck.resolve_checkpoint(out)
        step = ck.verify_checkpoint(d)["step"]
        ref = old if step == 10 else new
        assert step in (10, 20)
        assert np.array_equal(got.params, ref.params), f"kill at event {k}: weights of neither save"
        state = ck.read_state(d)
        assert state["step"] == step
        ck.load_optimizer_state(got, d)
        assert np.array_equal(got.adam_m, ref.adam_m) and np.array_equal(got.adam_v, ref.adam_v)
        new.save(out, trainer_state=st(30))  # the next save removes whatever the kill left
        left = [n for n in os.listdir(out) if ".tmp." in n]
        assert not left, (k, left)
        assert sorted(n for n in os.listdir(out) if n.startswith("checkpoint-")) == ["checkpoint-30"]
        shutil.rmtree(out)
        k += 1
    assert killed >= 20, killed  # every chunk, fsync, rename and switch of a save was a kill point
    print(f"{killed} kill points in one save")


def test_sigkill_with_keep_checkpoints_never_loses_the_last_good(tmp_path, no_fsync):
    m = tiny_model(seed=4)
    for k in range(1, 60, 7):
        out = str(tmp_path / f"k{k}")
        m.save(out, trainer_state={"step": 1, "run_id": "r"}, keep=2)
        m.save(out, trainer_state={"step": 2, "run_id": "r"}, keep=2)
        _save_killed_at(m, out, {"step": 3, "run_id": "r"}, k, keep=2)
        steps = [man["step"] for _, _, man in ck.list_checkpoints(out) if man]
        assert 2 in steps
        ck.verify_checkpoint(ck.resolve_checkpoint(out))


# -------------------------------------------- kills at random instants of a run
def test_sigkill_at_random_instants_then_resume_is_bit_identical(corpus, tmp_path):
    """A short version of ``bench/kill_resume.py`` (which does 20 kills over 1,000 steps)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    import kill_resume
    ref, out = str(tmp_path / "ref"), str(tmp_path / "run")
    subprocess.run(kill_resume.train_cmd(corpus, ref, 120, 5), cwd=kill_resume.ROOT, check=True,
                   capture_output=True)
    found = kill_resume.kill_and_resume(corpus, out, 120, 5, kills=3, seed=11,
                                        step_s=kill_resume.seconds_per_step(ref))
    assert len(found) == 3 and all(s is None or s < 120 for s in found), f"kills landing mid-run: {found}"
    assert kill_resume.identical(ref, out), f"kills at checkpoint steps {found}: differs from the uninterrupted run"
