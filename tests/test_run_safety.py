"""A run never destroys another: output-directory ownership, the directory
lock, signals, real-directory copies, corpus links, quantize outputs and
untrusted checkpoint files. Each test reproduces a way data used to be lost
(or a hostile file used to get through) and checks that it no longer is."""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cllm
from conftest import signal_at_step
from cllm.config import ModelConfig
from cllm.data import corpus as C
from cllm.data.tokenizer import Tokenizer
from cllm.io import files
from cllm.model import checkpoint as ck
from cllm.model.gpt import Model
from cllm.training import metrics as mx

KW = dict(max_steps=4, batch_size=2, seq_len=16, vocab_size=257, embed_dim=16, num_layers=1, num_heads=2,
          threads=1, progress=False, seed=3, warmup_steps=1)
REPO = os.path.dirname(os.path.dirname(cllm.__file__))


def tiny() -> Model:
    return Model(ModelConfig(257, 16, 1, 2, 16), Tokenizer.byte_level(), batch_size=2, seq_len=16, threads=1)


def tree(d) -> dict:
    """path -> bytes (or link target) of everything under d."""
    out = {}
    for dp, dn, fn in os.walk(d):
        for n in dn + fn:
            p = os.path.join(dp, n)
            rel = os.path.relpath(p, d)
            if rel == files.LOCK_FILE:     # the lock file records its last holder
                continue
            if os.path.islink(p):
                out[rel] = "-> " + os.readlink(p)
            elif os.path.isfile(p):
                out[rel] = open(p, "rb").read()
    return out


# ------------------------------------------------------------ ownership
def test_a_second_run_into_a_used_directory_is_refused(code_corpus, tmp_path):
    out = str(tmp_path / "run")
    cllm.train(code_corpus, out_dir=out, **KW)
    before = tree(out)
    with pytest.raises(cllm.ConfigError, match="--resume.*--out.*--overwrite"):
        cllm.train(code_corpus, out_dir=out, **KW)
    assert tree(out) == before                                   # nothing of the first run changed


def test_the_default_location_is_numbered_not_reused(code_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = cllm.train(code_corpus, out_dir=os.path.join("runs", "cllm"), **KW)
    first = tree("runs/cllm")
    b = cllm.train(code_corpus, out_dir=os.path.join("runs", "cllm"), **KW)
    assert a.summary["out_dir"] == os.path.join("runs", "cllm")
    assert b.summary["out_dir"] == os.path.join("runs", "cllm-2")
    assert tree("runs/cllm") == first
    assert ck.open_checkpoint("runs/cllm-2").manifest["step"] == 4


def test_foreign_files_and_checkpoints_survive(code_corpus, tmp_path):
    hf = tmp_path / "hf"
    (hf / "checkpoint-500").mkdir(parents=True)
    (hf / "checkpoint-500" / "weights.bin").write_bytes(b"theirs")
    (hf / "config.json").write_text("mine")
    with pytest.raises(cllm.ConfigError, match="not empty"):
        cllm.train(code_corpus, out_dir=str(hf), **KW)
    assert (hf / "config.json").read_text() == "mine"
    # Model.save, too, refuses to replace a file it did not write
    with pytest.raises(cllm.CheckpointError, match="config.json was not written by cllm"):
        tiny().save(str(hf))
    assert (hf / "config.json").read_text() == "mine" and not (hf / "latest").exists()
    # --overwrite writes the run, and still deletes no checkpoint it did not create
    cllm.train(code_corpus, out_dir=str(hf), overwrite=True, keep_checkpoints=1, checkpoint_every=1, **KW)
    assert (hf / "checkpoint-500" / "weights.bin").read_bytes() == b"theirs"


def test_keep_checkpoints_prunes_only_this_runs_own(code_corpus, tmp_path):
    other = tmp_path / "other"
    cllm.train(code_corpus, out_dir=str(other), checkpoint_every=2, keep_checkpoints=5, **KW)
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(other / "checkpoint-2", out / "checkpoint-2")      # another run's checkpoint
    cllm.train(code_corpus, out_dir=str(out), overwrite=True, checkpoint_every=1, keep_checkpoints=1,
               **{**KW, "seed": 9})
    names = sorted(n for n in os.listdir(out) if n.startswith("checkpoint-"))
    assert names == ["checkpoint-2", "checkpoint-4"], names
    assert ck.verify_checkpoint(str(out / "checkpoint-2"))["run_id"] != ck.open_checkpoint(str(out)).manifest["run_id"]


def test_init_from_refuses_an_out_dir_inside_its_source(code_corpus, tmp_path):
    src = str(tmp_path / "src")
    cllm.train(code_corpus, out_dir=src, **KW)
    before = tree(src)
    for out in (src, os.path.join(src, "sub")):
        with pytest.raises(cllm.ConfigError, match="inside the checkpoint --init-from"):
            cllm.train(code_corpus, init_from=src, out_dir=out, max_steps=2, progress=False, batch_size=2,
                       seq_len=16)
    assert tree(src) == before


def test_interrupt_of_a_forgotten_resume_keeps_the_old_run(code_corpus, tmp_path, monkeypatch):
    """`cllm train --out X` (without --resume) on a finished run, then Ctrl-C:
    the run is refused before any work, so the old run cannot be pruned."""
    out = str(tmp_path / "run")
    cllm.train(code_corpus, out_dir=out, checkpoint_every=1, keep_checkpoints=3, **KW)
    before = tree(out)
    with pytest.raises(cllm.ConfigError):
        cllm.train(code_corpus, out_dir=out, **KW)
    assert tree(out) == before


# ------------------------------------------------------------------ lock
HOLD = textwrap.dedent("""
    import sys, time
    from cllm.io.files import DirLock
    with DirLock(sys.argv[1], "a test holder"):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def test_a_second_writer_is_refused_with_the_holders_pid_and_host(code_corpus, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out), "60"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(cllm.ConfigError, match=f"pid {p.pid} on host .*a test holder"):
            cllm.train(code_corpus, out_dir=str(out), overwrite=True, **KW)
        with pytest.raises(cllm.CheckpointError, match=f"pid {p.pid}"):
            tiny().save(str(out))
        src = str(tmp_path / "src")
        tiny().save(src)
        with pytest.raises(cllm.ConfigError, match=f"pid {p.pid}"):
            cllm.quantize(src, str(out))
    finally:
        p.kill()
        p.wait()
    assert not any(n.startswith("checkpoint-") for n in os.listdir(out))


WRITER = textwrap.dedent("""
    import os, sys, time
    from cllm.config import ModelConfig
    from cllm.data.tokenizer import Tokenizer
    from cllm.io.files import DirLock, LockedError
    from cllm.model.gpt import Model
    out, n, run, gate = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    m = Model(ModelConfig(257, 16, 1, 2, 16), Tokenizer.byte_level(), threads=1)
    # both writers start together (however long each takes to import): a
    # writer that finished before the other began would not be concurrent
    open(os.path.join(gate, run), "w").close()
    while len(os.listdir(gate)) < 2:
        time.sleep(0.001)
    try:
        with DirLock(out, "writer " + run):
            print("locked", flush=True)
            for step in range(1, n + 1):
                m.params[0] = step
                m.save(out, trainer_state={"step": step, "run_id": run}, keep=3)
    except LockedError as e:
        print("refused:", e, flush=True)
        sys.exit(3)
""")


@pytest.mark.parametrize("n", [pytest.param(40, id="40-saves"), pytest.param(500, id="500-saves", marks=pytest.mark.slow)])
def test_two_concurrent_writers_one_refused_the_others_checkpoints_intact(tmp_path, n):
    out = tmp_path / "shared"
    out.mkdir()
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(n), run, str(gate)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO) for run in ("a", "b")]
    res = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in res)
    assert codes == [0, 3], res
    winner = "a" if res[0][0] == 0 else "b"
    loser = res[1] if winner == "a" else res[0]
    assert "refused:" in loser[1] and "pid" in loser[1]
    kept = [(name, man) for name, _, man in ck.list_checkpoints(str(out))]
    assert [m["step"] for _, m in kept] == [n - 2, n - 1, n]
    assert all(m["run_id"] == winner for _, m in kept)
    for name, _ in kept:
        ck.verify_checkpoint(str(out / name))
    assert float(Model.load(str(out), threads=1).params[0]) == n


# --------------------------------------------------- real-directory copies
def test_a_copy_with_links_followed_loads_resumes_and_saves(code_corpus, tmp_path):
    out = tmp_path / "run"
    cllm.train(code_corpus, out_dir=str(out), **{**KW, "max_steps": 6, "checkpoint_every": 3})
    # stop after step 3: make the step-3 checkpoint the current one, as an interrupted run leaves it
    ref = cllm.train(code_corpus, out_dir=str(tmp_path / "ref"), **{**KW, "max_steps": 6})
    part = tmp_path / "part"
    cllm.train(code_corpus, out_dir=str(part), **{**KW, "max_steps": 6, "checkpoint_every": 3, "keep_checkpoints": 3})
    copy = tmp_path / "copy"
    shutil.copytree(part, copy)                       # `latest` and the top-level files become real copies
    assert not os.path.islink(copy / "latest") and not os.path.islink(copy / "config.json")
    m = cllm.load(str(copy))
    assert np.array_equal(m.params, ref.params)
    resumed = cllm.train(out_dir=str(copy), resume=True, progress=False, max_steps=8)   # saves into the copy
    assert os.path.islink(copy / "latest") and ck.open_checkpoint(str(copy)).manifest["step"] == resumed.summary["steps"]
    # the old real `latest` was moved aside, not deleted or overwritten
    assert any(man.get("step") == 6 for _, _, man in ck.list_checkpoints(str(copy)))


# --------------------------------------------------------------- signals
def test_sigterm_saves_like_the_first_ctrl_c(code_corpus, tmp_path, monkeypatch):
    signal_at_step(monkeypatch, signal.SIGTERM, 3)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        cllm.train(code_corpus, out_dir=str(out), **{**KW, "max_steps": 10})
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 3
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL          # handler restored


def test_a_signal_during_the_final_evaluation_cuts_it_short_and_the_save_completes(code_corpus, tmp_path,
                                                                                   monkeypatch):
    real = Model.forward
    seen = {"n": 0}

    def forward(self, *a, **k):    # the final evaluation's forward passes (no training step follows)
        seen["n"] += 1
        if seen["n"] == 2:
            signal.raise_signal(signal.SIGINT)
        return real(self, *a, **k)
    monkeypatch.setattr(Model, "forward", forward)
    out = tmp_path / "run"
    m = cllm.train(code_corpus, out_dir=str(out), eval_interval=0, eval_batches=8, **{**KW, "max_steps": 5})
    assert m.summary["steps"] == 5 and "val_loss" not in m.summary
    assert ck.open_checkpoint(str(out)).manifest["step"] == 5


# ---------------------------------------------------------------- corpus
def test_links_out_of_the_corpus_are_skipped_and_named(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("PRIVATE KEY MATERIAL\n" * 4)
    repo = tmp_path / "r"
    repo.mkdir()
    (repo / "a.py").write_text("def f():\n    return 1\n")
    (repo / "k.py").symlink_to(secret)
    (repo / "b.py").symlink_to(repo / "a.py")              # a link inside the tree is fine (a duplicate here)
    c = C.scan(str(repo), use_git=False)
    assert [d.relpath for d in c.documents] == ["a.py"]
    assert ("k.py", "outside-root") in {(s.relpath, s.reason) for s in c.skipped}
    assert all(b"PRIVATE" not in d.data for d in c.documents)
    r = subprocess.run([sys.executable, "-m", "cllm", "corpus", str(repo)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "outside" in r.stdout, r.stdout + r.stderr


# -------------------------------------------------------------- quantize
def test_quantize_refuses_an_output_overlapping_its_input(tmp_path):
    d = str(tmp_path / "m")
    tiny().save(d)
    before = tree(d)
    for out in (d, os.path.join(d, "latest"), os.path.join(d, "q"), str(tmp_path)):
        with pytest.raises(cllm.ConfigError, match="overlap"):
            cllm.quantize(d, out)
    with pytest.raises(cllm.ConfigError, match="overlap"):
        cllm.quantize(os.path.join(d, "latest"), d)
    assert tree(d) == before
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(cllm.ConfigError, match="not empty"):
        cllm.quantize(d, str(busy))
    q = cllm.quantize(d, str(tmp_path / "q8"))
    cllm.quantize(d, q)                               # re-quantizing into its own output is fine


# ------------------------------------------------- untrusted checkpoints
@pytest.fixture
def saved(tmp_path) -> str:
    d = str(tmp_path / "m")
    tiny().save(d)
    return d


def _edit_config(d: str, **kv) -> None:
    p = os.path.join(d, "latest", "config.json")
    cfg = json.load(open(p))
    cfg.update(kv)
    os.unlink(p)
    open(p, "w").write(json.dumps(cfg))
    os.unlink(os.path.join(d, "latest", ck.MANIFEST_FILE))      # a plain HF directory: nothing to hash against


@pytest.mark.parametrize("loader", ["load", "fp32"])
def test_a_huge_config_is_refused_before_anything_is_allocated(saved, loader):
    _edit_config(saved, n_positions=2_000_000_000, n_embd=1, n_head=1)
    with pytest.raises(cllm.CheckpointError, match="wpe.*config.json implies"):
        cllm.load(saved, threads=1) if loader == "load" else cllm.load(saved, dtype="fp32", threads=1)


@pytest.mark.parametrize("value", [64.9, True, "64", 1e300])
def test_non_integer_sizes_are_refused_not_truncated(saved, value):
    _edit_config(saved, vocab_size=value)
    with pytest.raises(cllm.CheckpointError, match="vocab_size must be an integer"):
        cllm.load(saved, threads=1)


@pytest.mark.parametrize("text,what", [
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"vocab_size": 1e999}', "out of range"),
    ('{"vocab_size": NaN}', "not a JSON number"),
])
def test_malformed_json_is_a_checkpoint_error_naming_the_file(saved, text, what):
    p = os.path.join(saved, "latest", "config.json")
    os.unlink(p)
    open(p, "w").write(text)
    os.unlink(os.path.join(saved, "latest", ck.MANIFEST_FILE))
    with pytest.raises(cllm.CheckpointError, match=f"config.json.*{what}"):
        cllm.load(saved, threads=1)


@pytest.mark.parametrize("edit,what", [
    (lambda m: m["files"].update({"../../x": {"bytes": 1, "sha256": "0"}}), "not a checkpoint file name"),
    (lambda m: m["files"].update({"config.json": "yes"}), "must be an object"),
    (lambda m: m.update({"step": 1.5}), "'step' must be an integer"),
])
def test_malformed_manifests_are_refused(saved, edit, what):
    p = os.path.join(saved, "latest", ck.MANIFEST_FILE)
    man = json.load(open(p))
    edit(man)
    os.unlink(p)
    open(p, "w").write(json.dumps(man))
    with pytest.raises(cllm.CheckpointError, match=what):
        cllm.load(saved, dtype="fp32", threads=1)


def test_latest_must_name_a_checkpoint_of_the_run(saved, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(os.path.join(saved, "latest"), elsewhere)
    os.unlink(os.path.join(saved, "latest"))
    os.symlink(str(elsewhere), os.path.join(saved, "latest"))
    with pytest.raises(cllm.CheckpointError, match="refusing to follow"):
        cllm.load(saved, threads=1)


def test_cllm_info_verifies_what_it_reports(saved):
    f = os.path.join(saved, "latest", "model.safetensors")
    data = open(f, "rb").read()
    open(f, "wb").write(data[:len(data) // 2])
    r = subprocess.run([sys.executable, "-m", "cllm", "info", saved], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0 and "model.safetensors" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------- metrics
def test_a_malformed_metrics_row_is_kept_aside_not_the_history_dropped(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    rows = [json.dumps({"step": i, "loss": 1.0}) for i in range(1, 6)]
    (out / "metrics.jsonl").write_text("\n".join(rows[:2] + ["{garbage"] + rows[2:]) + "\n")
    with mx.MetricsLog(str(out), resume_step=4):
        pass
    assert [r["step"] for r in mx.read_metrics(str(out))] == [1, 2, 3, 4]
    assert (out / "metrics.jsonl.bad").read_text() == "{garbage\n"


# ------------------------------------------------------------ temp files
def test_atomic_writes_keep_the_mode_and_use_unpredictable_names(tmp_path):
    p = tmp_path / "f.json"
    p.write_text("{}")
    os.chmod(p, 0o600)
    files.atomic_write_json(str(p), {"a": 1})
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600 and json.loads(p.read_text()) == {"a": 1}
    a, b = files.temp_name(str(p)), files.temp_name(str(p))
    assert a != b and files.TEMP_PATTERN.match(os.path.basename(a))


def test_a_planted_link_at_a_temp_name_is_never_written_through(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    p = tmp_path / "out.json"
    planted = str(tmp_path / ".out.json.tmp.1.planted")
    os.symlink(victim, planted)
    monkeypatch.setattr(files, "temp_name", lambda path, tag="": planted)   # as if the name were guessed
    with pytest.raises(OSError):
        files.atomic_write_json(str(p), {"x": 1})
    assert victim.read_text() == "precious"
