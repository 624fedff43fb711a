"""Training: corpus -> tokenizer -> token ids -> batches -> C train steps.

:func:`train` is a short sequence of named steps: :func:`prepare_data` /
:func:`split_data` (corpus, tokenizer, ids, train/val batches),
:func:`build_model` or :func:`restore_model` (``--resume``), :func:`run_loop`
(the steps, SIGINT, periodic evaluation and checkpoints), :func:`evaluate`,
:func:`summarize` and the final save. Every option comes from
:class:`~cllm.options.TrainOptions`.
"""
from __future__ import annotations

import inspect
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from . import dataset
from .checkpoint import new_run_id, read_state, resolve_checkpoint, verify_checkpoint
from .config import ModelConfig
from .corpus import DEFAULT_CORPUS_BYTES, Document, default_corpus_path, load_documents
from .errors import CheckpointError, ConfigError, CorpusError, DivergenceError, NumericError
from .model import Model
from .options import TrainOptions
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

#: Kept for callers of earlier versions: the options dataclass.
TrainConfig = TrainOptions


@dataclass
class Batches:
    """Non-overlapping (seq_len + 1)-token windows of a token array."""

    data: np.ndarray
    seq_len: int
    starts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = (len(self.data) - 1) // self.seq_len
        self.starts = np.arange(n, dtype=np.int64) * self.seq_len

    def __len__(self) -> int:
        return len(self.starts)

    def block(self, starts: np.ndarray) -> tuple:
        """(inputs, targets) int32 arrays of shape (len(starts), seq_len)."""
        idx = starts[:, None] + np.arange(self.seq_len, dtype=np.int64)[None, :]
        return (np.ascontiguousarray(self.data[idx], dtype=np.int32),
                np.ascontiguousarray(self.data[idx + 1], dtype=np.int32))


class _StopFlag:
    """While active, the first SIGINT (Ctrl-C) only sets :attr:`set`, so the
    loop can finish its step and save; a second one interrupts at once."""

    def __init__(self) -> None:
        self.set = False
        self._old: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        log.warning("interrupt: finishing this step and saving (Ctrl-C again to abort at once)")

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _token_byte_lengths(tokenizer: Any) -> np.ndarray:
    """Bytes each token id stands for (<|endoftext|> counts as one separator byte)."""
    n = len(tokenizer)
    out = np.ones(n, dtype=np.int64)
    for i in range(n):
        if i != tokenizer.eot_id:
            out[i] = len(tokenizer.decode_bytes([i]))
    return out


def evaluate(model: Model, batches: Batches, batch_size: int, max_batches: int,
             byte_lens: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Mean loss (nats/token) over up to ``max_batches`` batches of ``batches``
    (evenly spread over the split) and bits per byte when ``byte_lens`` is given."""
    n = len(batches)
    if n == 0:
        return {}
    take = min(n, max_batches * batch_size)
    sel = batches.starts[np.linspace(0, n - 1, take).round().astype(np.int64)]
    tot, ntok, nbytes = 0.0, 0, 0
    for i in range(0, take, batch_size):
        x, y = batches.block(sel[i:i + batch_size])
        loss = model.forward(x, y)
        tot += float(loss) * y.size
        ntok += y.size
        if byte_lens is not None:
            nbytes += int(byte_lens[y].sum())
    out = {"val_loss": tot / ntok, "val_tokens": float(ntok)}
    if nbytes:
        out["val_bpb"] = tot / nbytes / math.log(2)
    return out


def prepare_data(path: Optional[str], exts: Optional[Sequence[str]], max_bytes: Optional[int],
                 vocab_size: int, tokenizer: Any = None, cache_dir: Optional[str] = None,
                 progress: bool = True) -> tuple:
    """Load the corpus, train (or reuse) a tokenizer and encode the corpus.

    Returns (documents, tokenizer, ids)."""
    if path is None:
        path = default_corpus_path()
        if exts is None:
            exts = [".py"]
        if max_bytes is None:
            max_bytes = DEFAULT_CORPUS_BYTES
        log.info("no PATH given: training on the Python standard library at %s (first %d bytes of .py files)",
                 path, max_bytes)
    docs = load_documents(path, exts, max_bytes)
    if tokenizer is None:
        if vocab_size == 257:
            tokenizer = Tokenizer.byte_level()
        else:
            tokenizer = Tokenizer.train([d.data for d in docs], vocab_size=vocab_size, progress=progress)
    if cache_dir is not None:
        ids = dataset.load_or_build(docs, tokenizer, cache_dir, progress=progress)
    else:
        ids = tokenizer.encode_documents([d.data for d in docs])
    return docs, tokenizer, ids


@dataclass
class Data:
    """The prepared corpus: documents, tokenizer, ids and the train/val batches."""

    docs: List[Document]
    tokenizer: Any
    n_tokens: int
    train: Batches
    val: Batches
    batch: int
    steps_per_epoch: int
    byte_lens: np.ndarray


def split_data(docs: List[Document], tok: Any, ids: np.ndarray, opts: TrainOptions) -> Data:
    """Hold out the last ``val_fraction`` of the ids and cut both splits into sequences."""
    n, T = len(ids), opts.seq_len
    if n < T + 2:
        raise CorpusError(f"the corpus has only {n} tokens; a training sequence needs seq_len + 1 = {T + 1} "
                          f"(lower --seq-len or add files)")
    n_val = int(n * opts.val_fraction)
    if opts.val_fraction > 0:
        n_val = max(n_val, T + 1)
    if n - n_val < T + 1:
        log.warning("corpus too small for a held-out split of %d tokens: evaluating on the training data", n_val)
        train_ids, val_ids = ids, ids
    else:
        train_ids, val_ids = ids[:n - n_val], ids[n - n_val:] if n_val else ids[:0]
    train_b, val_b = Batches(train_ids, T), Batches(val_ids, T)
    B = opts.batch_size
    if len(train_b) < B:
        log.warning("the training split holds only %d sequences of %d tokens; using batches of %d",
                    len(train_b), T, len(train_b))
        B = len(train_b)
    return Data(docs, tok, n, train_b, val_b, B, len(train_b) // B, _token_byte_lengths(tok))


def build_model(opts: TrainOptions, data: Data) -> Model:
    """A freshly initialised model for ``data``'s tokenizer."""
    mcfg = ModelConfig(vocab_size=len(data.tokenizer), context_len=opts.context_len or opts.seq_len,
                       num_layers=opts.num_layers, num_heads=opts.num_heads, embed_dim=opts.embed_dim)
    return Model(mcfg, data.tokenizer, batch_size=data.batch, seq_len=opts.seq_len, threads=opts.threads,
                 seed=opts.seed, max_memory_gb=opts.max_memory_gb, precision=opts.precision)


def restore_model(opts: TrainOptions, data: Data, state0: Dict[str, Any], ckpt: str) -> Model:
    """The model and optimizer of checkpoint directory ``ckpt`` (via
    :meth:`Model.load`), checked to continue the same run."""
    model = Model.load(ckpt, threads=opts.threads, batch_size=data.batch, seq_len=opts.seq_len,
                       load_optimizer=True, max_memory_gb=opts.max_memory_gb, precision=opts.precision)
    data0 = state0.get("data", {})
    if data0.get("tokens") != data.n_tokens or state0.get("threads") != model.threads \
            or state0.get("batch") != data.batch:
        raise CheckpointError(
            f"resume: the run in {opts.out_dir} had {data0.get('tokens')} corpus tokens, "
            f"{state0.get('threads')} threads and batch {state0.get('batch')}; now {data.n_tokens}, "
            f"{model.threads}, {data.batch} (the corpus or the machine changed, so the run cannot "
            f"continue identically)")
    return model


@dataclass
class LoopResult:
    """What :func:`run_loop` did."""

    step: int
    losses: List[float]
    tokens: int
    seconds: float
    interrupted: bool


def _diverged(opts: TrainOptions, step: int, lr: float, why: str, last_saved: Optional[int]) -> DivergenceError:
    kept = (f"the last good checkpoint (step {last_saved}) in {opts.out_dir} is kept" if last_saved is not None
            else "nothing was saved")
    return DivergenceError(f"training diverged at step {step}: {why} (learning rate {lr:.3g}); {kept}. "
                           f"Lower --learning-rate (now {opts.learning_rate:g}) or raise --warmup-steps")


def run_loop(model: Model, opts: TrainOptions, data: Data, start: int, total: int,
             save: Callable[[int], None], saved: Optional[List[int]] = None) -> LoopResult:
    """Train from step ``start`` to ``total``; ``save(step)`` writes a checkpoint
    (and appends the step to ``saved``).

    The first SIGINT ends the loop after the current step (``interrupted``). A
    non-finite loss or gradient, or a loss above ``divergence_factor`` times
    max(first loss, ln vocab), raises :class:`~cllm.DivergenceError` without saving."""
    saved = [] if saved is None else saved
    floor = math.log(max(2, len(data.tokenizer)))
    B, spe = data.batch, data.steps_per_epoch
    bar = None
    if opts.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
    losses: List[float] = []
    ema = None
    step = start
    t_train = time.perf_counter()
    tokens_done = 0
    stop = _StopFlag()
    try:
        with stop:
            while step < total and not stop.set:
                epoch = step // spe
                order = np.random.default_rng(opts.seed + epoch).permutation(len(data.train))
                for i in range((step % spe) * B, spe * B, B):
                    if step >= total or stop.set:
                        break
                    x, y = data.train.block(data.train.starts[order[i:i + B]])
                    lr = opts.lr_at(step + 1, total)
                    try:
                        loss, gnorm = model.train_step(x, y, step + 1, lr, beta1=opts.beta1, beta2=opts.beta2,
                                                       eps=opts.eps, weight_decay=opts.weight_decay,
                                                       grad_clip=opts.grad_clip)
                    except NumericError as e:
                        raise _diverged(opts, step + 1, lr, str(e), saved[-1] if saved else None) from None
                    ref = max(losses[0] if losses else loss, floor)
                    if opts.divergence_factor and (not math.isfinite(loss) or loss > opts.divergence_factor * ref):
                        raise _diverged(opts, step + 1, lr, f"loss {loss:.4g} exceeds {opts.divergence_factor:g} x "
                                        f"{ref:.4g}", saved[-1] if saved else None)
                    step += 1
                    losses.append(loss)
                    tokens_done += x.size
                    ema = loss if ema is None else 0.9 * ema + 0.1 * loss
                    el = time.perf_counter() - t_train
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{ema:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_done / el:,.0f}")
                    if step % 50 == 0 or step == start + 1:
                        (log.debug if bar is not None else log.info)(
                            "step %d/%d loss %.4f gnorm %.3f lr %.2e %.0f tok/s", step, total, loss,
                            gnorm, lr, tokens_done / el)
                    if opts.eval_interval and step % opts.eval_interval == 0 and len(data.val):
                        ev = evaluate(model, data.val, B, opts.eval_batches, data.byte_lens)
                        log.info("step %d val_loss %.4f val_bpb %.4f", step, ev["val_loss"],
                                 ev.get("val_bpb", float("nan")))
                    if opts.checkpoint_every and step % opts.checkpoint_every == 0 and step < total:
                        save(step)  # (the last step is saved after the final evaluation)
    finally:
        if bar is not None:
            bar.close()
    return LoopResult(step, losses, tokens_done, time.perf_counter() - t_train, stop.set)


def summarize(model: Model, opts: TrainOptions, data: Data, res: LoopResult, t0: float) -> Dict[str, Any]:
    """Final evaluation and the run's summary (``model.summary``)."""
    ev = evaluate(model, data.val, data.batch, opts.eval_batches, data.byte_lens) if len(data.val) else {}
    losses = res.losses
    k = max(1, min(20, len(losses) // 10 or 1))
    s = {
        "steps": res.step, "epochs": res.step // data.steps_per_epoch, "tokens": res.tokens,
        "train_seconds": res.seconds,
        "tokens_per_sec": res.tokens / res.seconds if res.seconds > 0 else 0.0,
        "first_loss": losses[0] if losses else None,
        "train_loss": float(np.mean(losses[-k:])) if losses else None,
        "corpus_files": len(data.docs), "corpus_bytes": sum(len(d.data) for d in data.docs),
        "corpus_tokens": data.n_tokens, "vocab_size": len(data.tokenizer), "threads": model.threads,
        **ev, "total_seconds": time.perf_counter() - t0,
    }
    log.info("done: %d steps, train loss %.4f, val loss %s, %.0f tok/s", res.step,
             s["train_loss"] or float("nan"), ev.get("val_loss"), s["tokens_per_sec"])
    if opts.verbose:
        for st in model.sphere_stats():
            log.info("sphere %d (parent %d): %d tasks, busy %.2fs (%.0f%%)", st["sphere"], st["parent"],
                     st["tasks"], st["busy_seconds"], 100 * st["busy_fraction"])
    return s


def check_out_dir(out_dir: Optional[str]) -> None:
    """Fail fast (before any work) when ``out_dir`` cannot hold checkpoints."""
    if not out_dir:
        return
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"out_dir {out_dir}: exists and is not a directory")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"out_dir {out_dir}: cannot create it ({e.strerror or e})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"out_dir {out_dir}: not writable")


def _resume_options(opts: TrainOptions) -> tuple:
    """(saved options, corpus path, saved state, checkpoint directory) of the
    run in ``opts.out_dir``; a partial or mixed checkpoint is refused."""
    if not opts.out_dir or not os.path.isdir(opts.out_dir):
        raise ConfigError(f"resume: out_dir={opts.out_dir!r} holds no run; nothing to resume")
    ckpt = resolve_checkpoint(opts.out_dir)
    if not os.path.lexists(os.path.join(ckpt, "trainer_state.json")):
        raise ConfigError(f"resume: no trainer_state.json in out_dir={opts.out_dir!r}; nothing to resume")
    verify_checkpoint(ckpt)
    state0 = read_state(ckpt)
    saved = state0.get("options", state0.get("train_args"))
    if not isinstance(saved, dict) or not isinstance(state0.get("step"), int):
        raise CheckpointError(f"resume: {ckpt}/trainer_state.json lacks the step or the saved training options")
    log.info("resuming %s at step %s with its saved options", ckpt, state0.get("step"))
    ropts = TrainOptions.from_saved(saved, out_dir=opts.out_dir, resume=True, progress=opts.progress,
                                    verbose=opts.verbose)
    return ropts, state0.get("data", {}).get("path", saved.get("path")), state0, ckpt


def train(path: Optional[str] = None, **options: Any) -> Model:
    t0 = time.perf_counter()
    opts = TrainOptions.from_kwargs(options)
    state0: Optional[Dict[str, Any]] = None
    ckpt = ""
    if opts.resume:
        opts, path, state0, ckpt = _resume_options(opts)
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"path must be a file or directory path, got {type(path).__name__} {path!r}")
        path = os.fspath(path)
        if not os.path.exists(path):
            raise CorpusError(f"corpus path does not exist: {path!r}")
    check_out_dir(opts.out_dir)
    tokenizer = Tokenizer.load(ckpt) if state0 is not None else opts.tokenizer
    cache_dir = os.path.join(opts.out_dir, "cache") if opts.out_dir else None
    docs, tok, ids = prepare_data(path, opts.exts, opts.max_bytes, opts.vocab_size, tokenizer, cache_dir,
                                  opts.progress)
    data = split_data(docs, tok, ids, opts)
    if state0 is None:
        model = build_model(opts, data)
        start = 0
        total = opts.max_steps if opts.max_steps is not None else opts.epochs * data.steps_per_epoch
    else:
        model = restore_model(opts, data, state0, ckpt)
        start, total = int(state0["step"]), int(state0["total_steps"])
    log.info("%r; %d train sequences, %d val sequences; %d steps of %d x %d", model, len(data.train),
             len(data.val), total, data.batch, opts.seq_len)

    run_id = state0.get("run_id") if state0 is not None else None
    run_id = run_id or new_run_id()
    saved: List[int] = []

    def save(step: int) -> None:
        if opts.out_dir:
            model.save(opts.out_dir, keep=opts.keep_checkpoints, trainer_state={
                "step": step, "epoch": step // data.steps_per_epoch, "total_steps": total, "run_id": run_id,
                "options": opts.saved(), "model_config": model.config.to_dict(), "summary": model.summary,
                "threads": model.threads, "batch": data.batch,
                "data": {"path": path, "tokens": data.n_tokens, "train_tokens": len(data.train.data)}})
            saved.append(step)

    res = run_loop(model, opts, data, start, total, save, saved)
    if res.interrupted:
        model.summary = {"interrupted_at": res.step}
        if not saved or saved[-1] != res.step:
            save(res.step)
        if opts.out_dir:
            log.warning("interrupted after step %d: checkpoint saved to %s (continue with "
                        "`cllm train --resume --out %s`)", res.step, opts.out_dir, opts.out_dir)
        raise KeyboardInterrupt
    model.summary = summarize(model, opts, data, res, t0)
    save(res.step)
    return model


train.__doc__ = """Train a GPT-2 on the source tree at ``path`` and return the :class:`Model`.

With ``path=None`` the running interpreter's standard library is used
(capped, so the run takes minutes). The model's vocabulary is the trained
tokenizer's size (at most ``vocab_size``). When ``out_dir`` is given the
checkpoint (weights, config, tokenizer, optimizer and trainer state) is
written there at the end (and every ``checkpoint_every`` steps); a run
that fails keeps the last checkpoint intact. ``model.summary`` holds the
train/val loss, val bits per byte, tokens/s and timings.

Ctrl-C (SIGINT) finishes the current step, saves a consistent checkpoint
to ``out_dir`` and raises :class:`KeyboardInterrupt`. ``resume=True``
continues the run saved in ``out_dir`` with its saved options (the other
arguments are ignored), bit-identically to an uninterrupted run.

Every option is validated (type and range) before any work starts: a
wrong type raises :class:`~cllm.ConfigTypeError` (a ``TypeError``), a
value out of range :class:`~cllm.ConfigError` (a ``ValueError``).

Options (keyword-only; see :class:`~cllm.options.TrainOptions`):

""" + TrainOptions.doc()
train.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("path", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Optional[str])]
    + TrainOptions.parameters(), return_annotation=Model)
