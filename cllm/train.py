"""Training: corpus -> tokenizer -> token ids -> batches -> C train steps.

:func:`train` is a short sequence of named steps: :func:`prepare_data` /
:func:`split_data` (corpus, tokenizer, ids, train/val batches),
:func:`build_model` or :func:`restore_model` (``--resume``), :func:`run_loop`
(the steps, SIGINT, periodic evaluation and checkpoints), :func:`evaluate`,
:func:`summarize` and the final save. Every option comes from
:class:`~cllm.options.TrainOptions`.
"""
from __future__ import annotations

import dataclasses
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

from . import dataset, distributed
from .checkpoint import new_run_id, read_state, resolve_checkpoint, verify_checkpoint
from .config import ModelConfig
from .corpus import DEFAULT_CORPUS_BYTES, Document, default_corpus_path, load_documents
from .distributed import World
from .errors import CheckpointError, ConfigError, CorpusError, DivergenceError, NumericError, StateError
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
    loop can finish its step and save; a second one interrupts at once.
    Under MPI, SIGUSR1 (which ``mpirun`` forwards to every rank) does the same."""

    def __init__(self, world: Optional[World] = None) -> None:
        self.set = False
        self._old: Any = None
        self._old_usr1: Any = None
        self._usr1 = world is not None and world.distributed and hasattr(signal, "SIGUSR1")

    def _handler(self, signum: int, frame: Any) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        log.warning("interrupt: finishing this step and saving (Ctrl-C again to abort at once)")

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
            if self._usr1:
                self._old_usr1 = signal.signal(signal.SIGUSR1, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        if self._old_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._old_usr1)


def _token_byte_lengths(tokenizer: Any) -> np.ndarray:
    """Bytes each token id stands for (<|endoftext|> counts as one separator byte)."""
    n = len(tokenizer)
    out = np.ones(n, dtype=np.int64)
    for i in range(n):
        if i != tokenizer.eot_id:
            out[i] = len(tokenizer.decode_bytes([i]))
    return out


def evaluate(model: Model, batches: Batches, batch_size: int, max_batches: int,
             byte_lens: Optional[np.ndarray] = None, world: Optional[World] = None) -> Dict[str, float]:
    """Mean loss (nats/token) over up to ``max_batches`` batches of ``batches``
    (evenly spread over the split) and bits per byte when ``byte_lens`` is given.
    Under MPI each rank evaluates every ``world.size``-th sequence and the sums
    are combined (every rank gets the result)."""
    n = len(batches)
    if n == 0:
        return {}
    take = min(n, max_batches * batch_size)
    sel = batches.starts[np.linspace(0, n - 1, take).round().astype(np.int64)]
    if world is not None and world.distributed:
        sel = sel[world.rank::world.size]
    rows = min(batch_size, model.batch_size)
    tot, ntok, nbytes = 0.0, 0, 0
    for i in range(0, len(sel), rows):
        x, y = batches.block(sel[i:i + rows])
        loss = model.forward(x, y)
        tot += float(loss) * y.size
        ntok += y.size
        if byte_lens is not None:
            nbytes += int(byte_lens[y].sum())
    if world is not None and world.distributed:
        tot, ntok, nbytes = world.sum([tot, ntok, nbytes]).tolist()
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
    ranks: int = 1  #: MPI ranks sharing each batch: each runs ``batch // ranks`` rows

    @property
    def rows(self) -> int:
        """Rows of each batch that one rank runs (the model's batch size)."""
        return self.batch // self.ranks


def split_data(docs: List[Document], tok: Any, ids: np.ndarray, opts: TrainOptions, ranks: int = 1) -> Data:
    """Hold out the last ``val_fraction`` of the ids and cut both splits into sequences.

    A step takes a global batch of ``ranks x batch_size`` sequences."""
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
    B = opts.batch_size * ranks
    if len(train_b) < B:
        fit = len(train_b) // ranks * ranks
        if fit == 0:
            raise CorpusError(f"the training split holds only {len(train_b)} sequences of {T} tokens, fewer "
                              f"than the {ranks} ranks (lower --seq-len or add files)")
        log.warning("the training split holds only %d sequences of %d tokens; using batches of %d",
                    len(train_b), T, fit)
        B = fit
    return Data(docs, tok, n, train_b, val_b, B, len(train_b) // B, _token_byte_lengths(tok), ranks)


def build_model(opts: TrainOptions, data: Data, world: Optional[World] = None) -> Model:
    """A freshly initialised model for ``data``'s tokenizer (under MPI: one
    rank's share of the batch; every rank draws the same initial weights)."""
    world = world or World()
    mcfg = ModelConfig(vocab_size=len(data.tokenizer), context_len=opts.context_len or opts.seq_len,
                       num_layers=opts.num_layers, num_heads=opts.num_heads, embed_dim=opts.embed_dim)
    return Model(mcfg, data.tokenizer, batch_size=data.rows, seq_len=opts.seq_len,
                 threads=world.threads_per_rank(opts.threads), seed=opts.seed, max_memory_gb=opts.max_memory_gb,
                 precision=opts.precision)


def restore_model(opts: TrainOptions, data: Data, state0: Dict[str, Any], ckpt: str,
                  world: Optional[World] = None) -> Model:
    """The model and optimizer of checkpoint directory ``ckpt`` (via
    :meth:`Model.load`), checked to continue the same run: same corpus and
    global batch. Another layout (thread count, or rank count under MPI)
    continues the same run, only not bit-identically (the sums split
    differently), with a warning."""
    world = world or World()
    model = Model.load(ckpt, threads=world.threads_per_rank(opts.threads), batch_size=data.rows,
                       seq_len=opts.seq_len, load_optimizer=True, max_memory_gb=opts.max_memory_gb,
                       precision=opts.precision)
    data0 = state0.get("data", {})
    if data0.get("tokens") != data.n_tokens or state0.get("batch") != data.batch:
        raise CheckpointError(
            f"resume: the run in {opts.out_dir} had {data0.get('tokens')} corpus tokens and a global batch "
            f"of {state0.get('batch')}; now {data.n_tokens} and {data.batch} (the corpus changed, so the "
            f"run cannot continue)")
    was = (state0.get("ranks", 1), state0.get("threads"))
    if was != (world.size, model.threads):
        log.warning("resume: the run was trained on %s rank(s) x %s thread(s), now %d x %d: it continues "
                    "with the same global batch, data order and schedule, but not bit-identically",
                    was[0], was[1], world.size, model.threads)
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
             save: Callable[[int], None], saved: Optional[List[int]] = None,
             world: Optional[World] = None) -> LoopResult:
    """Train from step ``start`` to ``total``; ``save(step)`` writes a checkpoint
    (and appends the step to ``saved``).

    The first SIGINT ends the loop after the current step (``interrupted``). A
    non-finite loss or gradient, or a loss above ``divergence_factor`` times
    max(first loss, ln vocab), raises :class:`~cllm.DivergenceError` without saving.
    Under MPI every rank runs this loop on the same global batches (each
    computes its rows, see :func:`~cllm.distributed.data_parallel_step`);
    the ranks agree after every step whether one of them was interrupted,
    so they all stop after the same step; only rank 0 shows progress."""
    world = world or World()
    saved = [] if saved is None else saved
    floor = math.log(max(2, len(data.tokenizer)))
    B, spe = data.batch, data.steps_per_epoch
    bar = None
    if opts.progress and world.is_root:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
    losses: List[float] = []
    ema = None
    step = start
    t_train = time.perf_counter()
    tokens_done = 0
    stop = _StopFlag(world)
    stopping = False  # stop.set as agreed by all ranks after the last step
    try:
        with stop:
            while step < total and not stopping:
                epoch = step // spe
                order = np.random.default_rng(opts.seed + epoch).permutation(len(data.train))
                for i in range((step % spe) * B, spe * B, B):
                    if step >= total or stopping:
                        break
                    x, y = data.train.block(data.train.starts[order[i:i + B]])
                    lr = opts.lr_at(step + 1, total)
                    try:
                        loss, gnorm = distributed.data_parallel_step(
                            model, world, x, y, step + 1, lr, beta1=opts.beta1, beta2=opts.beta2, eps=opts.eps,
                            weight_decay=opts.weight_decay, grad_clip=opts.grad_clip)
                    except NumericError as e:
                        raise _diverged(opts, step + 1, lr, str(e), saved[-1] if saved else None) from None
                    ref = max(losses[0] if losses else loss, floor)
                    if opts.divergence_factor and (not math.isfinite(loss) or loss > opts.divergence_factor * ref):
                        raise _diverged(opts, step + 1, lr, f"loss {loss:.4g} exceeds {opts.divergence_factor:g} x "
                                        f"{ref:.4g}", saved[-1] if saved else None)
                    stopping = world.any(stop.set) if world.distributed else stop.set
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
                        ev = evaluate(model, data.val, B, opts.eval_batches, data.byte_lens, world)
                        log.info("step %d val_loss %.4f val_bpb %.4f", step, ev["val_loss"],
                                 ev.get("val_bpb", float("nan")))
                    if opts.checkpoint_every and step % opts.checkpoint_every == 0 and step < total:
                        save(step)  # (the last step is saved after the final evaluation)
    finally:
        if bar is not None:
            bar.close()
    return LoopResult(step, losses, tokens_done, time.perf_counter() - t_train, stopping)


def summarize(model: Model, opts: TrainOptions, data: Data, res: LoopResult, t0: float,
              world: Optional[World] = None) -> Dict[str, Any]:
    """Final evaluation and the run's summary (``model.summary``; tokens are
    global: all ranks together)."""
    world = world or World()
    ev = evaluate(model, data.val, data.batch, opts.eval_batches, data.byte_lens, world) if len(data.val) else {}
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
        "ranks": world.size, "batch": data.batch,
        **ev, "total_seconds": time.perf_counter() - t0,
    }
    log.info("done: %d steps, train loss %.4f, val loss %s, %.0f tok/s", res.step,
             s["train_loss"] or float("nan"), ev.get("val_loss"), s["tokens_per_sec"])
    if opts.verbose and world.is_root:
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


def prepare_data_on_ranks(world: World, path: Optional[str], opts: TrainOptions, tokenizer: Any,
                          cache_dir: Optional[str]) -> tuple:
    """:func:`prepare_data` under MPI: rank 0 first (it trains the tokenizer
    and writes the token cache), then the others with rank 0's tokenizer
    (reading the cache on a shared file system, building their own
    otherwise; cache writes are atomic). A world of one just prepares."""
    if world.is_root:
        docs, tok, ids = prepare_data(path, opts.exts, opts.max_bytes, opts.vocab_size, tokenizer, cache_dir,
                                      opts.progress)
    tok_json = world.bcast(tok.to_json() if world.is_root else None)
    if not world.is_root:
        docs, tok, ids = prepare_data(path, opts.exts, opts.max_bytes, opts.vocab_size,
                                      Tokenizer.from_json(tok_json), cache_dir, False)
    return docs, tok, ids


def train(path: Optional[str] = None, **options: Any) -> Model:
    opts = TrainOptions.from_kwargs(options)
    world = distributed.init(opts.distributed)
    with world.fail_fast():
        return _train(path, opts, world)


def _train(path: Optional[str], opts: TrainOptions, world: World) -> Model:
    """The steps of :func:`train` (every rank runs them under MPI)."""
    t0 = time.perf_counter()
    state0: Optional[Dict[str, Any]] = None
    ckpt = ""
    if opts.resume:
        opts, path, state0, ckpt = _resume_options(opts)
        gb = int(state0.get("batch", opts.batch_size))
        if gb % world.size:
            raise ConfigError(f"resume: the run's global batch of {gb} sequences does not split over "
                              f"{world.size} ranks; use a rank count that divides it")
        opts = dataclasses.replace(opts, batch_size=gb // world.size)
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"path must be a file or directory path, got {type(path).__name__} {path!r}")
        path = os.fspath(path)
        if not os.path.exists(path):
            raise CorpusError(f"corpus path does not exist: {path!r}")
    check_out_dir(opts.out_dir)
    tokenizer = Tokenizer.load(ckpt) if state0 is not None else opts.tokenizer
    cache_dir = os.path.join(opts.out_dir, "cache") if opts.out_dir else None
    docs, tok, ids = prepare_data_on_ranks(world, path, opts, tokenizer, cache_dir)
    data = split_data(docs, tok, ids, opts, world.size)
    if state0 is None:
        model = build_model(opts, data, world)
        start = 0
        total = opts.max_steps if opts.max_steps is not None else opts.epochs * data.steps_per_epoch
    else:
        model = restore_model(opts, data, state0, ckpt, world)
        start, total = int(state0["step"]), int(state0["total_steps"])
    log.info("%r; %d train sequences, %d val sequences; %d steps of %d x %d%s", model, len(data.train),
             len(data.val), total, data.batch, opts.seq_len,
             f" over {world.size} ranks ({data.rows} rows each)" if world.distributed else "")

    run_id = state0.get("run_id") if state0 is not None else None
    run_id = run_id or new_run_id()
    saved: List[int] = []

    def save(step: int) -> None:
        if opts.out_dir and world.distributed and not world.in_sync(model.params):
            raise StateError(f"the ranks' weights differ at step {step}: not saving (ranks must run "
                             f"the same cllm build on the same kind of CPU)")
        if opts.out_dir and world.is_root:
            model.save(opts.out_dir, keep=opts.keep_checkpoints, trainer_state={
                "step": step, "epoch": step // data.steps_per_epoch, "total_steps": total, "run_id": run_id,
                "options": opts.saved(), "model_config": model.config.to_dict(), "summary": model.summary,
                "threads": model.threads, "ranks": world.size, "batch": data.batch,
                "data": {"path": path, "tokens": data.n_tokens, "train_tokens": len(data.train.data)}})
        if opts.out_dir:
            saved.append(step)

    res = run_loop(model, opts, data, start, total, save, saved, world)
    if res.interrupted:
        model.summary = {"interrupted_at": res.step}
        if not saved or saved[-1] != res.step:
            save(res.step)
        if opts.out_dir and world.is_root:
            log.warning("interrupted after step %d: checkpoint saved to %s (continue with "
                        "`cllm train --resume --out %s`)", res.step, opts.out_dir, opts.out_dir)
        world.barrier()  # rank 0 has written the checkpoint
        raise distributed.AgreedStop
    model.summary = summarize(model, opts, data, res, t0, world)
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
