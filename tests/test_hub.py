"""Hub ids (``owner/name[@revision]``) wherever a model is opened, with no network:
a tiny GPT-2 stands in for a hub model, laid out in a Hugging Face cache
(``models--owner--name/{blobs,refs,snapshots}``) that huggingface_hub itself
resolves under ``HF_HUB_OFFLINE=1``; the online path runs against a patched
``snapshot_download`` that records its arguments. Also the fine-tuning defaults
a run with ``init_from`` gets, and that a from-scratch run's are unchanged."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

import cllm
from cllm.io import hub
from cllm.model.checkpoint import resolve_checkpoint
from cllm.training.options import FINETUNE_LR, SCRATCH_LR, SCRATCH_SEQ_LEN, TrainOptions

huggingface_hub = pytest.importorskip("huggingface_hub")

TINY = dict(batch_size=4, seq_len=32, vocab_size=300, embed_dim=32, num_layers=1, num_heads=2, threads=1,
            progress=False, seed=5)
REPO = "owner/tiny-gpt2"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def standin(code_corpus, tmp_path_factory) -> str:
    """A tiny GPT-2 directory holding just the files a hub model has (no cllm
    manifest, optimizer or trainer state): what the hub would serve."""
    out = tmp_path_factory.mktemp("trained")
    cllm.train(code_corpus, out_dir=str(out), max_steps=3, **TINY)
    src = resolve_checkpoint(str(out))
    d = tmp_path_factory.mktemp("standin")
    for name in hub.MODEL_FILES:
        shutil.copy(os.path.join(src, name), d / name)
    return str(d)


def make_cache(cache: Path, repo: str, files_from: str, commit: str = COMMIT, ref: str = "main") -> Path:
    """A Hugging Face hub cache holding ``repo`` at ``commit`` (files from
    ``files_from``) in huggingface_hub's layout: content-addressed blobs, the
    ref naming the commit, and a snapshot of symlinks into the blobs."""
    owner, name = repo.split("/")
    root = cache / f"models--{owner}--{name}"
    snap = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    snap.mkdir(parents=True)
    for f in os.listdir(files_from):
        data = Path(files_from, f).read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f).symlink_to(os.path.relpath(blob, snap))
    (root / "refs" / ref).write_text(commit)
    return snap


def tree(d: Path) -> Dict[str, bytes]:
    """Every file under ``d`` and its bytes (to check a run wrote nothing there)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def hub_env(cache: Path, offline: bool = True) -> Dict[str, str]:
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("HF_HOME", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run_cli(args: List[str], env: Dict[str, str], cwd: str, pre: str = "pass") -> subprocess.CompletedProcess:
    """``cllm ARGS`` in a fresh interpreter (``pre``: Python run first, e.g. to hide a module)."""
    code = f"import sys; {pre}; from cllm.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


@pytest.fixture
def offline_cache(monkeypatch, tmp_path, standin) -> Path:
    """This process's huggingface_hub pointed at a cache holding REPO, offline."""
    from huggingface_hub import constants
    cache = tmp_path / "hf-cache"
    make_cache(cache, REPO, standin)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


# ------------------------------------------------------------------ names

@pytest.mark.parametrize("text,want", [
    ("codeparrot/codeparrot-small", ("codeparrot/codeparrot-small", None)),
    ("bigcode/tiny_starcoder_py@main", ("bigcode/tiny_starcoder_py", "main")),
    ("o/n@refs/pr/3", ("o/n", "refs/pr/3")),
    (f"o/n.v2@{COMMIT}", ("o/n.v2", COMMIT)),
    ("runs/demo", ("runs/demo", None)),
    ("gpt2", None), ("/abs/path", None), ("./o/n", None), ("../o/n", None), ("a/b/c", None),
    ("o/../n", None), ("-o/n", None), ("o/n@", None), ("o/n@@x", None), ("o--x/n", None), ("", None),
])
def test_what_counts_as_a_hub_id(text, want):
    assert hub.parse_hub_id(text) == want


def test_a_local_directory_is_never_sent_to_the_hub(standin, tmp_path, monkeypatch):
    # even one named like a hub id, even with huggingface_hub unimportable
    monkeypatch.chdir(tmp_path)
    shutil.copytree(standin, tmp_path / "owner" / "tiny-gpt2")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    assert hub.resolve_model_path(REPO) == REPO
    ref = cllm.load(standin, threads=1)
    m = cllm.load(REPO, threads=1)
    ids = ref.tokenize("def f(x):\n    return x")
    assert (m.logits(ids) == ref.logits(ids)).all()


def test_a_path_that_is_no_directory_and_no_hub_id(tmp_path):
    for bad in (str(tmp_path / "nope"), "nope"):
        with pytest.raises(cllm.CheckpointError, match="checkpoint directory not found .no such directory"):
            cllm.load(bad)


# ------------------------------------------------------------------ the cache, offline

def test_offline_hub_id_resolves_to_the_cached_snapshot(offline_cache, standin):
    path = hub.resolve_model_path(REPO)
    assert Path(path) == offline_cache / f"models--owner--tiny-gpt2/snapshots/{COMMIT}"
    m, ref = cllm.load(REPO, threads=1), cllm.load(standin, threads=1)
    ids = ref.tokenize("import os\n")
    assert (m.logits(ids) == ref.logits(ids)).all()
    eng = cllm.InferenceModel.load(f"{REPO}@main", threads=1)
    assert eng.generate("def ", max_new_tokens=8, temperature=0) == ref.generate("def ", max_new_tokens=8,
                                                                                 temperature=0)


def test_offline_and_not_cached_names_the_id_and_the_cache(offline_cache):
    with pytest.raises(cllm.CheckpointError, match=rf"owner/absent: not in the Hugging Face cache at "
                                                   rf"{offline_cache}.*HF_HUB_OFFLINE"):
        cllm.load("owner/absent")
    with pytest.raises(cllm.CheckpointError, match="not in the Hugging Face cache"):
        cllm.load(f"{REPO}@v9")   # a revision the cache has no ref for


def test_another_architecture_fails_by_name_after_the_download(offline_cache, standin, tmp_path):
    files = tmp_path / "llama"
    shutil.copytree(standin, files)
    cfg = json.loads((files / "config.json").read_text())
    cfg.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (files / "config.json").write_text(json.dumps(cfg))
    make_cache(offline_cache, "meta/tiny", str(files))
    with pytest.raises(cllm.CheckpointError, match="architecture llama is not supported yet"):
        cllm.load("meta/tiny")


# ------------------------------------------------------------------ the online call, patched

@pytest.fixture
def online(monkeypatch, tmp_path, standin) -> List[dict]:
    """``snapshot_download`` replaced by a recorder that returns the stand-in;
    online mode and an empty cache."""
    from huggingface_hub import constants
    calls: List[dict] = []

    def fake(repo_id, **kw):
        calls.append(dict(kw, repo_id=repo_id))
        return standin
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return calls


def test_online_download_asks_for_only_what_cllm_reads(online, caplog, tmp_path, standin):
    with caplog.at_level("INFO", logger="cllm.io.hub"):
        assert hub.resolve_model_path(f"{REPO}@v2") == standin
    call = online[0]
    assert call["repo_id"] == REPO and call["revision"] == "v2" and call["local_files_only"] is False
    assert sorted(call["allow_patterns"]) == sorted(["config.json", "model.safetensors", "tokenizer.json",
                                                     "tokenizer_config.json", "special_tokens_map.json",
                                                     "generation_config.json"])
    assert f"downloading {REPO} (revision v2) to {tmp_path / 'empty-cache'}" in caplog.text
    cllm.load(REPO, threads=1)
    assert online[1]["revision"] is None


def test_progress_bars_only_on_a_terminal(online, monkeypatch):
    from huggingface_hub import utils
    seen = []
    real = huggingface_hub.snapshot_download

    def record(repo_id, **kw):
        seen.append(utils.are_progress_bars_disabled())
        return real(repo_id, **kw)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", record)
    before = utils.are_progress_bars_disabled()
    hub.resolve_model_path(REPO)          # pytest captures stderr: not a terminal
    assert seen == [True] and utils.are_progress_bars_disabled() == before


def _http_error(cls: type, msg: str) -> Exception:
    e = cls.__new__(cls)       # the HTTP errors want a response object; the message is all cllm reads
    Exception.__init__(e, msg)
    return e


@pytest.mark.parametrize("exc,match", [
    ("RepositoryNotFoundError", "no such directory, and no model owner/tiny-gpt2 on the Hugging Face hub"),
    ("GatedRepoError", "owner/tiny-gpt2 is gated: accept its terms"),
    ("RevisionNotFoundError", "has no revision 'v3'"),
    ("LocalEntryNotFoundError", "could not reach the Hugging Face hub, and owner/tiny-gpt2 .revision v3. is not "
                                "in the cache"),
    ("HfHubHTTPError", "the Hugging Face hub refused the download: 500 Server Error"),
])
def test_hub_failures_are_one_line_errors(online, monkeypatch, exc, match):
    from huggingface_hub import utils
    cls = getattr(utils, exc)

    def fail(repo_id, **kw):
        raise (cls("gone") if exc == "LocalEntryNotFoundError" else _http_error(cls, "500 Server Error\nmore"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    with pytest.raises(cllm.CheckpointError, match=match) as ei:
        cllm.load(f"{REPO}@v3")
    assert "\n" not in str(ei.value)


def test_without_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(cllm.UnsupportedError, match=r"owner/tiny-gpt2: no such directory; .*pip install "
                                                    r"'cllm\[hub\]'"):
        cllm.load(REPO)


# ------------------------------------------------------------------ the command line

def test_cli_generate_a_hub_id_offline(standin, tmp_path, code_corpus):
    cache = tmp_path / "cache"
    make_cache(cache, REPO, standin)
    args = ["-p", "def ", "-n", "12", "-t", "0", "--threads", "1"]
    r = run_cli(["generate", REPO, *args], hub_env(cache), str(tmp_path))
    local = run_cli(["generate", standin, *args], hub_env(cache), str(tmp_path))
    assert r.returncode == 0 and local.returncode == 0, r.stderr + local.stderr
    assert r.stdout == local.stdout and r.stdout.startswith("def ")
    r = run_cli(["info", REPO], hub_env(cache), str(tmp_path))
    assert r.returncode == 0 and f"snapshots/{COMMIT}" in r.stdout, r.stderr
    r = run_cli(["eval", f"{REPO}@main", code_corpus, "--max-bytes", "20000", "-q", "--threads", "1"],
                hub_env(cache), str(tmp_path))
    assert r.returncode == 0 and "bits/byte" in r.stdout, r.stderr


def test_serve_builds_from_a_hub_id(offline_cache):
    pytest.importorskip("starlette")
    from cllm.server.run import build
    app = build(REPO, threads=1)
    try:
        assert app.state.cllm.model_name == "tiny-gpt2"
        assert app.state.cllm.engine.model.config.context_len == 32
    finally:
        app.state.cllm.engine.close(wait=1)


def test_cli_errors_offline_uncached_and_without_the_extra(tmp_path):
    env = hub_env(tmp_path / "empty")
    r = run_cli(["generate", "owner/absent", "-p", "x"], env, str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "owner/absent: not in the Hugging Face cache at" in r.stderr
    r = run_cli(["train", str(tmp_path), "--init-from", "owner/absent"], env, str(tmp_path),
                pre="sys.modules['huggingface_hub'] = None")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "pip install 'cllm[hub]'" in r.stderr.splitlines()[-1]


def test_cli_fine_tunes_from_a_hub_id(standin, tmp_path, code_corpus):
    """``cllm train --init-from owner/name`` end to end: the model comes from the
    cache (which the run leaves untouched), the run writes only its --out, and
    the fine-tuning defaults apply to the options not given."""
    cache = tmp_path / "cache"
    make_cache(cache, REPO, standin)
    before = tree(cache)
    out = tmp_path / "tuned"
    r = run_cli(["train", code_corpus, "--init-from", REPO, "--out", str(out), "--max-steps", "3",
                 "--batch-size", "4", "--threads", "1", "-q", "--sample-tokens", "4"], hub_env(cache), str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "fine-tuning defaults (set the options to change them): learning rate 0.0001, warm-up 2% of the " \
           "steps (at most 20), seq_len 32 (the checkpoint's context, at most 1024)" in r.stderr
    assert f"fine-tuned from {REPO}" in r.stdout
    assert tree(cache) == before
    state = json.loads((out / "trainer_state.json").read_text())
    o = state["options"]
    assert o["init_from"] == REPO and o["learning_rate"] == FINETUNE_LR
    assert o["seq_len"] == 32 and o["warmup_steps"] is None     # the stand-in's context; warm-up by the rule
    assert state["model_config"]["context_len"] == 32
    assert sorted(os.listdir(tmp_path)) == sorted(["cache", "tuned"])  # nothing else written beside them


# ------------------------------------------------------------------ fine-tuning defaults

def test_from_scratch_defaults_are_unchanged():
    o = TrainOptions().resolved()
    assert (o.learning_rate, o.seq_len, o.warmup_steps, o.min_lr_ratio) == (1e-3, 512, None, 0.1)
    assert (SCRATCH_LR, SCRATCH_SEQ_LEN) == (1e-3, 512)
    for total in (1, 7, 50, 1000, 10_000):
        warm = min(100, max(1, total // 20))   # the rule before fine-tuning defaults existed
        assert o.warmup(total) == warm
        for step in (1, warm, total // 2, total):
            assert o.lr_at(step, total) == TrainOptions(learning_rate=1e-3).lr_at(step, total)
    assert TrainOptions(seq_len=64, learning_rate=3e-4).resolved().kwargs() == \
        TrainOptions(seq_len=64, learning_rate=3e-4).kwargs()


def test_fine_tuning_defaults_unless_given():
    o = TrainOptions(init_from="o/n")
    assert o.finetune_defaults(2048) == ["learning rate 0.0001", "warm-up 2% of the steps (at most 20)",
                                         "seq_len 1024 (the checkpoint's context, at most 1024)"]
    assert TrainOptions().finetune_defaults(2048) == []
    r = o.resolved(context_len=2048)
    assert (r.learning_rate, r.seq_len) == (1e-4, 1024)
    assert o.resolved(context_len=128).seq_len == 128
    assert (r.warmup(10_000), r.warmup(500), r.warmup(100), r.warmup(10)) == (20, 10, 2, 1)
    given = TrainOptions(init_from="o/n", learning_rate=5e-4, seq_len=64, warmup_steps=7)
    g = given.resolved(context_len=2048)
    assert (g.learning_rate, g.seq_len, g.warmup(10_000)) == (5e-4, 64, 7) and given.finetune_defaults(2048) == []
    with pytest.raises(cllm.StateError, match="context_len"):
        o.resolved()
    with pytest.raises(cllm.StateError, match="not resolved"):
        o.lr_at(1, 10)


def test_a_default_run_saves_the_same_options_as_before(code_corpus, tmp_path):
    out = tmp_path / "run"
    m = cllm.train(code_corpus, out_dir=str(out), max_steps=1, vocab_size=257, embed_dim=16, num_layers=1,
                   num_heads=2, batch_size=1, threads=1, progress=False)
    o = json.loads((out / "trainer_state.json").read_text())["options"]
    assert (o["learning_rate"], o["seq_len"], o["warmup_steps"]) == (1e-3, 512, None)
    assert m.config.context_len == 512


def test_fine_tuning_an_explicit_seq_len_above_the_context_is_refused(offline_cache, code_corpus):
    with pytest.raises(cllm.ConfigError, match="exceeds the context length 32"):
        cllm.train(code_corpus, init_from=REPO, max_steps=1, seq_len=64, threads=1, progress=False)


def test_train_help_states_the_fine_tuning_defaults():
    from cllm.cli.main import build_parser
    train_p = build_parser()._subparsers._group_actions[0].choices["train"]
    text = " ".join(train_p.format_help().split())
    assert "with init_from: 2% of the steps, at most 20" in text and "at most 1024" in text
    assert "a hub id such as codeparrot/codeparrot-small (needs cllm[hub])" in text
