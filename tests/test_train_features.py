"""Training features: metrics.jsonl (across --resume), loss.png, the document split,
gradient accumulation, fine-tuning (init_from) and non-terminal progress output."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cllm
from cllm.training.metrics import read_metrics, split_rows
from cllm.model.gpt import Model
from cllm.training.options import TrainOptions
from cllm.training.loop import prepare_data

TINY = dict(batch_size=4, seq_len=32, vocab_size=300, embed_dim=32, num_layers=1, num_heads=2, threads=2,
            progress=False, seed=5)


def test_metrics_log_and_plot(code_corpus, tmp_path):
    out = tmp_path / "run"
    m = cllm.train(code_corpus, out_dir=str(out), max_steps=40, **TINY)
    tr, ev = split_rows(read_metrics(str(out)))
    assert [r["step"] for r in tr] == list(range(1, 41))
    for r in tr:
        assert set(r) == {"step", "tokens", "loss", "bits_per_byte", "lr", "grad_norm", "tokens_per_s", "elapsed_s"}
        assert r["tokens"] == r["step"] * 4 * 32 and math.isfinite(r["loss"]) and r["grad_norm"] > 0
    assert [r["elapsed_s"] for r in tr] == sorted(r["elapsed_s"] for r in tr)
    # about 10 evaluations by default: every 4 steps, the last one being the final evaluation
    assert [r["step"] for r in ev] == list(range(4, 41, 4))
    assert set(ev[0]) == {"step", "tokens", "val_loss", "val_bits_per_byte", "elapsed_s"}
    assert ev[-1]["val_loss"] == pytest.approx(m.summary["val_loss"], rel=1e-6)
    assert ev[-1]["val_bits_per_byte"] == pytest.approx(m.summary["val_bpb"], rel=1e-6)
    if shutil.which("python") and _have_matplotlib():
        with open(out / "loss.png", "rb") as f:
            assert f.read(4) == b"\x89PNG"
    m = cllm.train(code_corpus, out_dir=str(out), max_steps=6, eval_interval=0, overwrite=True, **TINY)
    tr, ev = split_rows(read_metrics(str(out)))  # a new run in the same directory: a new log
    assert [r["step"] for r in tr] == list(range(1, 7)) and [r["step"] for r in ev] == [6]


def _have_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def test_metrics_continue_across_resume_without_duplicates(code_corpus, tmp_path, monkeypatch):
    kw = dict(max_steps=30, checkpoint_every=10, eval_interval=10, **TINY)
    full = tmp_path / "full"
    cllm.train(code_corpus, out_dir=str(full), **kw)
    real = Model.train_step
    calls = {"n": 0}

    def dies(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 15:  # the process dies during step 15; the checkpoint is from step 10
            raise RuntimeError("killed")
        return real(self, *a, **k)

    monkeypatch.setattr(Model, "train_step", dies)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="killed"):
        cllm.train(code_corpus, out_dir=str(out), **kw)
    monkeypatch.undo()
    assert max(r["step"] for r in read_metrics(str(out))) == 14
    cllm.train(out_dir=str(out), resume=True, progress=False)
    rows = read_metrics(str(out))
    tr, ev = split_rows(rows)
    assert [r["step"] for r in tr] == list(range(1, 31))
    assert [r["step"] for r in ev] == [10, 20, 30]
    # the resumed run is bit-identical, so are its losses
    ftr, fev = split_rows(read_metrics(str(full)))
    assert [r["loss"] for r in tr] == [r["loss"] for r in ftr]
    assert [r["val_loss"] for r in ev] == [r["val_loss"] for r in fev]


def test_split_holds_out_whole_documents(code_corpus):
    opts = TrainOptions(vocab_size=257, val_fraction=0.2, progress=False)
    docs, tok, ids, n_train = prepare_data(code_corpus, opts)
    eot = tok.eot_id
    n_docs_train = int((np.asarray(ids[:n_train]) == eot).sum())
    train_docs, val_docs = docs[:n_docs_train], docs[n_docs_train:]
    assert val_docs and train_docs
    assert bytes(tok.decode_bytes(ids[n_train:])) == b"".join(d.data + b"<|endoftext|>" for d in val_docs)
    frac = sum(len(d.data) for d in val_docs) / sum(len(d.data) for d in docs)
    assert 0.1 < frac < 0.35
    # the held-out files are not the last files of the corpus
    names = sorted(os.listdir(code_corpus))
    assert [os.path.basename(d.path) for d in val_docs] != names[-len(val_docs):]
    # deterministic
    again = prepare_data(code_corpus, opts)
    assert [d.relpath for d in again[0]] == [d.relpath for d in docs] and again[3] == n_train


@pytest.mark.parametrize("threads, micro", [(1, 2), (2, 2), (2, 1)])
def test_grad_accum_equals_a_larger_batch(code_corpus, threads, micro):
    """Micro-batches of 2 sequences, or of 1 on 2 threads (every micro-batch
    then split into token-row shards), accumulate to the 6-sequence batch."""
    kw = dict(TINY, threads=threads, max_steps=4, warmup_steps=1, eval_interval=0, learning_rate=1e-3,
              precision="fp32")
    big = cllm.train(code_corpus, **dict(kw, batch_size=6, grad_accum=1))
    acc = cllm.train(code_corpus, **dict(kw, batch_size=micro, grad_accum=6 // micro))
    assert acc.batch_size == micro and acc.summary["grad_accum"] == 6 // micro
    assert acc.summary["tokens"] == big.summary["tokens"] == 4 * 6 * 32
    assert acc.summary["train_loss"] == pytest.approx(big.summary["train_loss"], rel=1e-5)
    np.testing.assert_allclose(acc.params, big.params, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(acc.adam_m, big.adam_m, rtol=1e-3, atol=1e-7)
    assert acc.summary["val_loss"] == pytest.approx(big.summary["val_loss"], rel=1e-4)
    # and not the same as the small batch alone
    small = cllm.train(code_corpus, **dict(kw, batch_size=micro, grad_accum=1))
    assert not np.allclose(small.params, big.params, rtol=1e-4, atol=2e-5)


def test_grad_accum_gradient_matches_in_bf16(code_corpus):
    """BF16 matmuls round inputs to 8 bits of mantissa, so AdamW (which normalises
    tiny gradients to unit steps) amplifies the differences; compare the averaged
    gradient of the first step instead of weights after several."""
    from cllm.precision import auto_precision
    if auto_precision() != "bf16":
        pytest.skip("no BF16 matmuls on this CPU")
    kw = dict(TINY, max_steps=1, warmup_steps=1, eval_interval=0, precision="bf16", grad_clip=0.0)
    big = cllm.train(code_corpus, **dict(kw, batch_size=6))
    acc = cllm.train(code_corpus, **dict(kw, batch_size=2, grad_accum=3))
    assert acc.summary["train_loss"] == pytest.approx(big.summary["train_loss"], rel=1e-4)
    # after one step adam_m = (1 - beta1) * g: the averaged gradients agree to bf16 accuracy
    g_big, g_acc = big.adam_m / 0.1, acc.adam_m / 0.1
    assert np.linalg.norm(g_acc - g_big) <= 2e-2 * np.linalg.norm(g_big)


def test_optimizer_options_reach_the_optimizer(code_corpus):
    kw = dict(TINY, max_steps=3, eval_interval=0)
    a = cllm.train(code_corpus, **kw)
    b = cllm.train(code_corpus, **dict(kw, beta1=0.5, beta2=0.9))
    assert not np.array_equal(a.params, b.params)
    # beta1 = 0.5: after one step m = 0.5 * g exactly
    one = cllm.train(code_corpus, **dict(kw, max_steps=1, beta1=0.5, grad_clip=0.0))
    assert np.allclose(one.adam_m, 0.5 * one.grads, atol=1e-9)
    opts = TrainOptions(learning_rate=1.0, min_lr_ratio=0.25, warmup_steps=0)
    assert opts.lr_at(100, 100) == pytest.approx(0.25)


def test_init_from_fine_tunes(code_corpus, tmp_path):
    base_dir = tmp_path / "base"
    base = cllm.train(code_corpus, out_dir=str(base_dir), max_steps=60, learning_rate=3e-3, **TINY)
    other = tmp_path / "other"
    other.mkdir()
    for name in sorted(os.listdir(code_corpus))[:4]:  # "another directory": part of the code, edited
        src = open(os.path.join(code_corpus, name)).read()
        (other / ("ft_" + name)).write_text(src.replace("def ", "def  "))
    ft_dir = tmp_path / "ft"
    ft = cllm.train(str(other), init_from=str(base_dir), out_dir=str(ft_dir), max_steps=20, learning_rate=1e-3,
                    **dict(TINY, vocab_size=4096, embed_dim=64))  # shape options are the checkpoint's
    assert ft.config == base.config
    assert ft.tokenizer.fingerprint() == base.tokenizer.fingerprint()
    s = ft.summary
    assert s["steps"] == 20
    # starts from the base weights (far better than a fresh model's ln(V)) and improves on the new code
    assert s["init_val_loss"] < math.log(len(base.tokenizer)) - 1
    assert s["val_loss"] < s["init_val_loss"]
    state = json.loads((ft_dir / "trainer_state.json").read_text())
    assert state["step"] == 20 and state["options"]["init_from"] == str(base_dir)
    tr, ev = split_rows(read_metrics(str(ft_dir)))
    assert ev[0]["step"] == 0 and ev[0]["val_loss"] == pytest.approx(s["init_val_loss"])
    # fresh optimizer: the moments after 1 fine-tuning step hold that step's gradient only
    one = cllm.train(str(other), init_from=str(base_dir), max_steps=1, grad_clip=0.0,
                     **dict(TINY, eval_interval=0))
    assert np.allclose(one.adam_m, 0.1 * one.grads, atol=1e-9)


def test_init_from_a_transformers_directory(code_corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    base_dir = tmp_path / "base"
    cllm.train(code_corpus, out_dir=str(base_dir), max_steps=5, **TINY)
    hf_dir = tmp_path / "hf"
    transformers.GPT2LMHeadModel.from_pretrained(str(base_dir)).save_pretrained(str(hf_dir))
    shutil.copy(base_dir / "tokenizer.json", hf_dir / "tokenizer.json")
    ft = cllm.train(code_corpus, init_from=str(hf_dir), max_steps=2, **dict(TINY, eval_interval=0))
    assert ft.summary["steps"] == 2 and "init_val_loss" in ft.summary


def test_init_from_errors(code_corpus, tmp_path):
    with pytest.raises(cllm.CheckpointError, match="not a checkpoint directory"):
        cllm.train(code_corpus, init_from=str(tmp_path), max_steps=1, **TINY)
    base_dir = tmp_path / "base"
    cllm.train(code_corpus, out_dir=str(base_dir), max_steps=1, **TINY)
    with pytest.raises(ValueError, match="exceeds the context length 32"):
        cllm.train(code_corpus, init_from=str(base_dir), max_steps=1, **dict(TINY, seq_len=64))


def test_output_dir_inside_the_corpus_is_not_read(code_corpus, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(code_corpus, repo)
    a = cllm.train(str(repo), out_dir=str(repo / "out"), max_steps=2, **TINY)
    b = cllm.train(str(repo), out_dir=str(repo / "other-out"), max_steps=2, **TINY)
    assert a.summary["corpus_files"] == b.summary["corpus_files"] == len(os.listdir(code_corpus))
    assert a.summary["corpus_bytes"] == b.summary["corpus_bytes"]


def test_cli_progress_without_a_terminal_prints_lines(code_corpus, tmp_path):
    env = dict(os.environ, CLLM_PROGRESS_INTERVAL="0")
    r = subprocess.run([sys.executable, "-m", "cllm", "train", code_corpus, "--out", str(tmp_path / "o"),
                        "--max-steps", "5", "--batch-size", "4", "--seq-len", "32", "--vocab-size", "300",
                        "--embed-dim", "32", "--num-layers", "1", "--num-heads", "2", "--grad-accum", "2",
                        "--beta1", "0.8", "--min-lr-ratio", "0.2", "--exclude", "glob.py",
                        "--sample-tokens", "4"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    assert "train: 5/5 step (100%)" in r.stderr
    assert "x 2 micro-batches" in r.stdout and "metrics: " in r.stdout
    state = json.loads((tmp_path / "o" / "trainer_state.json").read_text())
    assert state["options"]["beta1"] == 0.8 and state["options"]["grad_accum"] == 2
    assert state["options"]["exclude"] == ["glob.py"]
    assert len(read_metrics(str(tmp_path / "o"))) >= 5


def test_transformers_auto_classes_and_pipeline(code_corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    out = tmp_path / "ckpt"
    m = cllm.train(code_corpus, out_dir=str(out), max_steps=30, learning_rate=3e-3, **TINY)
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert isinstance(tok, transformers.PreTrainedTokenizerFast)
    eot = m.tokenizer.eot_id
    assert tok.eos_token == tok.pad_token == tok.bos_token == "<|endoftext|>"
    assert tok.eos_token_id == tok.pad_token_id == eot
    text = open(os.path.join(code_corpus, "glob.py")).read()[:2000]
    assert tok(text)["input_ids"] == m.tokenize(text)
    assert tok.decode(m.tokenize(text)) == text  # spaces kept exactly
    gc = transformers.GenerationConfig.from_pretrained(str(out))
    assert gc.eos_token_id == gc.pad_token_id == eot and gc.do_sample and gc.top_k == 40
    # batched, padded encoding works (pad token known)
    batch = tok(["def f(x):", "import os\nimport sys\n"], padding=True)
    assert eot in batch["input_ids"][0] or eot in batch["input_ids"][1]
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    gen = transformers.pipeline("text-generation", model=hf, tokenizer=tok)
    got = gen("def ", max_new_tokens=12, do_sample=False)[0]["generated_text"]
    ours = "def " + m.generate("def ", max_new_tokens=12, temperature=0)
    assert got == ours or got.startswith(ours) or ours.startswith(got)


def test_grad_accum_under_mpi_matches_one_process(code_corpus, tmp_path):
    """2 ranks x batch 1 x 2 micro-batches = 1 process x batch 4 (FP32), and rank 0
    alone writes metrics.jsonl (each step once)."""
    from test_distributed import CLI, _MISSING, _ok, mpirun, python
    if _MISSING:
        pytest.skip(f"{' and '.join(_MISSING)} not installed")
    cli = CLI + [code_corpus, "--precision", "fp32", "--eval-interval", "5"]
    _ok(mpirun(2, cli + ["--out", str(tmp_path / "mpi"), "--threads", "1", "--batch-size", "1",
                         "--grad-accum", "2"]))
    _ok(python(cli + ["--out", str(tmp_path / "one"), "--threads", "2", "--batch-size", "4"]))
    sm = json.loads((tmp_path / "mpi" / "trainer_state.json").read_text())
    so = json.loads((tmp_path / "one" / "trainer_state.json").read_text())
    assert (sm["ranks"], sm["batch"], sm["options"]["grad_accum"]) == (2, 2, 2)
    for key in ("first_loss", "train_loss", "val_loss"):
        assert sm["summary"][key] == pytest.approx(so["summary"][key], rel=1e-5), key
    np.testing.assert_allclose(cllm.load(str(tmp_path / "mpi")).params, cllm.load(str(tmp_path / "one")).params,
                               rtol=1e-4, atol=2e-5)
    tr, ev = split_rows(read_metrics(str(tmp_path / "mpi")))
    assert [r["step"] for r in tr] == list(range(1, 21)) and [r["step"] for r in ev] == [5, 10, 15, 20]
    assert tr[-1]["tokens"] == 20 * 4 * 32
