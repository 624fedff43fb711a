"""Training: corpus -> tokenizer -> token ids -> batches -> C train steps.

:func:`train` is a short sequence of named steps: :func:`prepare_data` /
:func:`split_data` (corpus, tokenizer, ids, train/val batches),
:func:`build_model` or :func:`restore_model` (``--resume``), :func:`run_loop`
(the steps, SIGINT, periodic evaluation and checkpoints), :func:`validation_loss`,
:func:`summarize` and the final save. Every option comes from
:class:`~cllm.training.options.TrainOptions`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data import dataset
from . import distributed, rundir
from ..model.checkpoint import STATE_FILE, Checkpoint, new_run_id, open_checkpoint, resolve_checkpoint
from ..config import ModelConfig
from ..data.fim import apply_fim, fim_token_ids
from ..model.infill_eval import score_infilling
from ..data.corpus import DEFAULT_CORPUS_BYTES, Document, default_corpus_path, load_documents, split_documents
from .distributed import World
from ..errors import CheckpointError, ConfigError, CorpusError, DivergenceError, NumericError, StateError
from ..io.hub import resolve_model_path
from .metrics import MetricsLog
from ..model.gpt import Model
from .options import TrainOptions, parse_duration
from ..progress import fmt_count, fmt_duration, progress_bar
from ..data.tokenizer import Tokenizer

log = logging.getLogger(__name__)


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
    """While active, the first SIGINT (Ctrl-C) or SIGTERM (``docker stop``,
    Slurm, systemd) only sets :attr:`set`, so the loop can finish its step,
    a final evaluation is cut short and the checkpoint is saved whole; a
    second signal interrupts at once. Under MPI, SIGUSR1 (which ``mpirun``
    forwards to every rank) does the same. Active from the first step to the
    end of the final save."""

    def __init__(self, world: Optional[World] = None) -> None:
        self.set = False
        self.signal_name = ""
        self._old: Dict[int, Any] = {}
        self._signals = [signal.SIGINT, signal.SIGTERM]
        if world is not None and world.distributed and hasattr(signal, "SIGUSR1"):
            self._signals.append(signal.SIGUSR1)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        self.signal_name = signal.Signals(signum).name
        log.warning("%s: finishing this step and saving (Ctrl-C again to abort at once)", self.signal_name)

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def _token_byte_lengths(tokenizer: Any) -> np.ndarray:
    """Bytes each token id stands for (a special token, <|endoftext|> or a
    fill-in-the-middle marker, counts as one separator byte)."""
    n = len(tokenizer)
    out = np.ones(n, dtype=np.int64)
    special = set(tokenizer.special_ids())
    for i in range(n):
        if i not in special:
            out[i] = len(tokenizer.decode_bytes([i]))
    return out


def validation_loss(model: Model, batches: Batches, batch_size: int, max_batches: int,
                    byte_lens: Optional[np.ndarray] = None, world: Optional[World] = None,
                    stop: Optional["_StopFlag"] = None) -> Dict[str, float]:
    """Mean loss (nats/token) over up to ``max_batches`` batches of ``batches``
    (evenly spread over the split) and bits per byte when ``byte_lens`` is given.
    Under MPI each rank evaluates every ``world.size``-th sequence and the sums
    are combined (every rank gets the result). A single process stops early
    (returning ``{}``) once ``stop`` is set: a signal cuts the evaluation short."""
    n = len(batches)
    if n == 0:
        return {}
    take = min(n, max_batches * batch_size)
    sel = batches.starts[np.linspace(0, n - 1, take).round().astype(np.int64)]
    if world is not None and world.distributed:
        sel = sel[world.rank::world.size]
    rows = min(batch_size, model.batch_size)
    tot, ntok, nbytes = 0.0, 0, 0
    cut = stop is not None and (world is None or not world.distributed)
    for i in range(0, len(sel), rows):
        if cut and stop.set:
            log.warning("evaluation cut short by %s", stop.signal_name)
            return {}
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


def corpus_split(path: Optional[str], opts: TrainOptions) -> Tuple[List[Document], List[Document]]:
    """(training, held-out) documents of the corpus at ``path`` (None: the
    default corpus) under ``opts``: exactly the split a run with these
    options trains and validates on."""
    exts, max_bytes = opts.exts, opts.max_bytes
    if path is None:
        path = default_corpus_path()
        if exts is None:
            exts = [".py"]
        if max_bytes is None:
            max_bytes = DEFAULT_CORPUS_BYTES
        log.info("no PATH given: training on the Python standard library at %s (first %s bytes of .py files)",
                 path, f"{max_bytes:,}")
    docs = load_documents(path, exts, max_bytes, include=opts.include, exclude=opts.exclude,
                          keep_vendored=opts.keep_vendored, max_file_bytes=opts.max_file_bytes,
                          skip_dirs=[d for d in (opts.out_dir,) if d])
    return split_documents(docs, opts.val_fraction)


def run_split(run: str, split: str) -> List[Document]:
    """The ``"train"`` or ``"val"`` documents of the run saved in ``run`` (its
    corpus read again with its saved options: ``cllm eval RUN --split val``)."""
    if split not in ("train", "val"):
        raise ConfigError(f"split must be 'train' or 'val', got {split!r}")
    ck = open_checkpoint(run)
    if not ck.has_state():
        raise ConfigError(f"{run}: not a training run (no trainer_state.json), so it has no {split} split")
    st = ck.state()
    saved = st.get("options")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{ck.path}/trainer_state.json: no saved training options")
    opts = TrainOptions.from_saved(saved, out_dir=os.path.dirname(ck.path) if os.path.basename(ck.path).startswith(
        "checkpoint-") else ck.path, progress=False)
    data = st.get("data") if isinstance(st.get("data"), dict) else {}
    path = data.get("path")
    if path is not None and not os.path.exists(path):
        raise CorpusError(f"{run}: its corpus {path} is gone")
    train, val = corpus_split(path, opts)
    return val if split == "val" else train


def prepare_data(path: Optional[str], opts: TrainOptions, tokenizer: Any = None,
                 cache_dir: Optional[str] = None) -> tuple:
    """Load the corpus, hold out whole documents, train (or reuse) a tokenizer
    on the training documents and encode the corpus.

    Returns (documents, tokenizer, ids, n_train_ids): the ids hold the training
    documents first, then the held-out ones (each followed by ``<|endoftext|>``),
    so ``ids[:n_train_ids]`` is the training split."""
    opts = opts.resolved()
    train_docs, val_docs = corpus_split(path, opts)
    if val_docs:
        docs = train_docs + val_docs
        log.info("held out %d of %d files (%s of %s bytes) for validation, chosen by a hash of their path",
                 len(val_docs), len(docs), f"{sum(len(d.data) for d in val_docs):,}",
                 f"{sum(len(d.data) for d in docs):,}")
    if tokenizer is None:
        if opts.vocab_size == 257:
            tokenizer = Tokenizer.byte_level()
        else:
            tokenizer = Tokenizer.train([d.data for d in train_docs], vocab_size=opts.vocab_size,
                                        progress=opts.progress, pretokenizer=opts.pretokenizer)
    ordered = train_docs + val_docs
    if cache_dir is not None:
        ids = dataset.load_or_build(ordered, tokenizer, cache_dir, progress=opts.progress)
    else:
        ids = tokenizer.encode_documents([d.data for d in ordered])
    # fill-in-the-middle examples from the training files (held-out files stay left to right)
    # pieces of about a training sequence (measured bytes per token of this corpus), so a FIM example's
    # prefix, suffix and middle are seen together
    bpt = sum(len(d.data) for d in ordered) / max(1, len(ids))
    ids, n_train = apply_fim(ordered, ids, len(train_docs), tokenizer, opts.fim_rate, opts.fim_spm_rate, opts.seed,
                             max_chars=int(0.9 * opts.seq_len * bpt))
    if not val_docs:
        n_train = len(ids)
    if opts.fim_rate > 0 and fim_token_ids(tokenizer) is None:
        log.info("no fill-in-the-middle examples: the tokenizer has no FIM tokens (vocab_size 257 is bytes only)")
    return ordered, tokenizer, ids, n_train


@dataclass
class Data:
    """The prepared corpus: documents, tokenizer, ids and the train/val batches.

    ``batch`` is the micro-batch (sequences per forward/backward) and
    ``accum`` the micro-batches per optimizer step."""

    docs: List[Document]
    tokenizer: Any
    n_tokens: int
    train: Batches
    val: Batches
    batch: int
    accum: int
    steps_per_epoch: int
    byte_lens: np.ndarray
    ranks: int = 1  #: MPI ranks sharing each batch: each runs ``batch // ranks`` rows
    #: the held-out documents (the text the end-of-run infilling evaluation cuts its cases from)
    val_docs: List[Document] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows of each batch that one rank runs (the model's batch size)."""
        return self.batch // self.ranks


def split_data(docs: List[Document], tok: Any, ids: np.ndarray, n_train: int, opts: TrainOptions,
               ranks: int = 1) -> Data:
    """Cut the training ids (``ids[:n_train]``) and the held-out ids into sequences.

    When the held-out documents are too short for one sequence (a tiny
    corpus) the last ``val_fraction`` of the tokens is held out instead. A
    micro-batch is ``ranks x batch_size`` sequences, a step ``grad_accum``
    micro-batches."""
    opts = opts.resolved()
    n, T = len(ids), opts.seq_len
    if n < T + 2:
        raise CorpusError(f"the corpus has only {n:,} tokens; a training sequence needs seq_len + 1 = {T + 1} "
                          f"(lower --seq-len or add files)")
    if opts.val_fraction > 0 and (n - n_train < T + 1 or n_train < T + 1):
        n_val = max(int(n * opts.val_fraction), T + 1)
        if n - n_val >= T + 1:
            log.info("held-out files are shorter than one sequence: holding out the last %s tokens instead",
                     f"{n_val:,}")
            n_train = n - n_val
        else:
            log.warning("corpus too small for a held-out split of %s tokens: evaluating on the training data",
                        f"{n_val:,}")
            n_train = n
    train_ids = ids[:n_train]
    val_ids = ids if n_train == n and opts.val_fraction > 0 else ids[n_train:]
    train_b, val_b = Batches(train_ids, T), Batches(val_ids, T)
    G, N = opts.batch_size * ranks, opts.grad_accum
    if len(train_b) < G * N:
        N = max(1, len(train_b) // G)
        if len(train_b) < G:
            G = len(train_b) // ranks * ranks
            if G == 0:
                raise CorpusError(f"the training split holds only {len(train_b)} sequences of {T} tokens, fewer "
                                  f"than the {ranks} ranks (lower --seq-len or add files)")
        log.warning("the training split holds only %d sequences of %d tokens; using %d micro-batch(es) of %d",
                    len(train_b), T, N, G)
    return Data(docs, tok, n, train_b, val_b, G, N, len(train_b) // (G * N), _token_byte_lengths(tok), ranks)


def build_model(opts: TrainOptions, data: Data, world: Optional[World] = None) -> Model:
    """A freshly initialised model for ``data``'s tokenizer (under MPI: one
    rank's share of the batch; every rank draws the same initial weights)."""
    opts = opts.resolved()
    world = world or World()
    mcfg = ModelConfig(vocab_size=len(data.tokenizer), context_len=opts.context_len or opts.seq_len,
                       num_layers=opts.num_layers, num_heads=opts.num_heads, embed_dim=opts.embed_dim)
    return Model(mcfg, data.tokenizer, batch_size=data.rows, seq_len=opts.seq_len, seed=opts.seed,
                 max_memory_gb=opts.max_memory_gb, precision=opts.precision,
                 **world.model_options(opts.threads, opts.deterministic))


def load_init(opts: TrainOptions, world: Optional[World] = None) -> Tuple[Model, TrainOptions]:
    """The model of ``opts.init_from`` (weights, tokenizer, shape; fresh optimizer),
    and ``opts`` resolved for fine-tuning it (:meth:`TrainOptions.resolved` with
    the checkpoint's context), the model sized for training micro-batches of
    ``batch_size`` x ``seq_len``. ``init_from`` may be a hub id
    (:func:`~cllm.io.hub.resolve_model_path`; under MPI rank 0 downloads it
    first, the others then find it in the cache)."""
    src = opts.init_from
    assert src is not None
    if opts.tokenizer is not None:
        raise ConfigError("init_from and tokenizer are exclusive: the checkpoint brings its own tokenizer")
    world = world or World()
    path = resolve_model_path(src) if world.is_root else None
    world.barrier()
    if not world.is_root:
        path = resolve_model_path(src)
    assert path is not None
    if not os.path.isdir(path):
        raise CheckpointError(f"init_from: {src!r} is not a checkpoint directory")
    ck = open_checkpoint(path)
    ctx = ck.config.context_len
    if opts.seq_len is not None and opts.seq_len > ctx:
        raise ConfigError(f"seq_len ({opts.seq_len}) exceeds the context length {ctx} of the checkpoint "
                          f"{src}; use --seq-len {ctx} or less")
    auto = opts.finetune_defaults(ctx)
    opts = opts.resolved(ctx)
    if auto and world.is_root:
        log.info("fine-tuning defaults (set the options to change them): %s", ", ".join(auto))
    model = Model.load(ck, batch_size=opts.batch_size, seq_len=opts.seq_len, max_memory_gb=opts.max_memory_gb,
                       precision=opts.precision, **world.model_options(opts.threads, opts.deterministic))
    log.info("fine-tuning from %s: %s parameters, vocabulary %s, context %d (model-shape options come "
             "from the checkpoint; the optimizer starts fresh)", src, f"{model.num_params:,}",
             f"{model.config.vocab_size:,}", model.config.context_len)
    return model, opts


def restore_model(opts: TrainOptions, data: Data, state0: Dict[str, Any], ckpt: Checkpoint,
                  world: Optional[World] = None) -> Model:
    """The model and optimizer of checkpoint ``ckpt`` (via
    :meth:`Model.load`), checked to continue the same run: same corpus and
    global batch. Another layout (thread count, or rank count under MPI)
    continues the same run, only not bit-identically (the sums split
    differently), with a warning."""
    world = world or World()
    model = Model.load(ckpt, batch_size=data.rows, seq_len=opts.seq_len, load_optimizer=True,
                       max_memory_gb=opts.max_memory_gb, precision=opts.precision,
                       **world.model_options(opts.threads, opts.deterministic))
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
    """What :func:`run_loop` did (``tokens``: training tokens of this session)."""

    step: int
    losses: List[float]
    tokens: int
    seconds: float
    interrupted: bool
    #: the time budget's deadline ended the loop before its last step
    timed_out: bool = False


def eval_interval(opts: TrainOptions, total: int) -> int:
    """Steps between evaluations: ``opts.eval_interval``, or about 10 per run by default (0: none)."""
    if opts.eval_interval is not None:
        return opts.eval_interval
    return max(1, round(total / 10))


class _Accumulator:
    """Gradient accumulation: the micro-batches of one optimizer step each run
    forward + backward (under MPI: this rank's rows of each), with the loss
    normalised by the whole step's target count so the gradients simply add
    up (in one float32 buffer) to those of the step's mean loss; then one
    allreduce under MPI and one AdamW step (clipped by the global norm)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.acc = np.empty_like(model.grads)

    def step(self, world: World, batches: Batches, starts: np.ndarray, rows: int, step: int, lr: float,
             opts: TrainOptions) -> tuple:
        """(mean loss, pre-clip gradient norm) of one optimizer step over the
        windows ``starts``, ``rows`` sequences (all ranks) per micro-batch."""
        m = self.model
        n = len(starts) // rows
        n_valid = n * rows * batches.seq_len  # training windows have no ignored targets
        loss = 0.0
        for k in range(n):
            x, y = batches.block(starts[k * rows:(k + 1) * rows])
            if world.distributed:
                x, y = distributed.shard(x, world), distributed.shard(y, world)
            loss += m.forward(x, y, loss_tokens=n_valid)
            m.backward()
            if k == 0:
                self.acc[...] = m.grads
            else:
                self.acc += m.grads
        m.grads[...] = self.acc
        if world.distributed:
            world.allreduce_(m.grads)
            loss = float(world.sum([loss])[0])
        if not math.isfinite(loss):
            raise NumericError(f"non-finite loss ({loss}) at step {step}: weights not updated")
        gnorm = m.adamw_step(step, lr, beta1=opts.beta1, beta2=opts.beta2, eps=opts.eps,
                             weight_decay=opts.weight_decay, grad_clip=opts.grad_clip)
        return loss, gnorm


def _diverged(opts: TrainOptions, step: int, lr: float, why: str, last_saved: Optional[int]) -> DivergenceError:
    kept = (f"the last good checkpoint (step {last_saved}) in {opts.out_dir} is kept" if last_saved is not None
            else "nothing was saved")
    return DivergenceError(f"training diverged at step {step}: {why} (learning rate {lr:.3g}); {kept}. "
                           f"Lower --learning-rate (now {opts.learning_rate:g}) or raise --warmup-steps")


def run_loop(model: Model, opts: TrainOptions, data: Data, start: int, total: int,
             save: Callable[[int], None], metrics: MetricsLog, saved: Optional[List[int]] = None,
             world: Optional[World] = None, stop: Optional[_StopFlag] = None,
             deadline: Optional[float] = None) -> LoopResult:
    """Train from step ``start`` to ``total``; ``save(step)`` writes a checkpoint
    (and appends the step to ``saved``).

    Every step appends a row to ``metrics`` (an evaluation row every
    :func:`eval_interval` steps). The first SIGINT ends the loop after the
    current step (``interrupted``). A non-finite loss or gradient, or a loss
    above ``divergence_factor`` times max(first loss, ln vocab), raises
    :class:`~cllm.DivergenceError` without saving. Under MPI every rank runs
    this loop on the same global batches (each computes its rows, see
    :func:`~cllm.training.distributed.data_parallel_step`); the ranks agree after every
    step whether one of them was interrupted, so they all stop after the same
    step; only rank 0 shows progress."""
    world = world or World()
    saved = [] if saved is None else saved
    floor = math.log(max(2, len(data.tokenizer)))
    G, N, spe = data.batch, data.accum, data.steps_per_epoch
    E = G * N  # sequences per optimizer step (all ranks)
    tokens_per_step = E * data.train.seq_len
    every = eval_interval(opts, total)
    accum = _Accumulator(model) if N > 1 else None
    show = opts.progress and world.is_root
    bar = progress_bar(show, total=total, initial=start, desc="train", unit="step")
    losses: List[float] = []
    ema = None
    step = start
    t_train = time.perf_counter()
    tokens_done = 0
    own_flag = stop is None
    stop = stop if stop is not None else _StopFlag(world)
    stopping = False  # stop.set as agreed by all ranks after the last step
    timed_out = False  # the time budget's deadline passed (agreed by all ranks)
    try:
        with (stop if own_flag else contextlib.nullcontext(stop)):
            while step < total and not stopping and not timed_out:
                epoch = step // spe
                order = np.random.default_rng(opts.seed + epoch).permutation(len(data.train))
                for i in range((step % spe) * E, spe * E, E):
                    if step >= total or stopping or timed_out:
                        break
                    starts = data.train.starts[order[i:i + E]]
                    lr = opts.lr_at(step + 1, total)
                    try:
                        if accum is None:
                            x, y = data.train.block(starts)
                            adamw = dict(beta1=opts.beta1, beta2=opts.beta2, eps=opts.eps,
                                         weight_decay=opts.weight_decay, grad_clip=opts.grad_clip)
                            if world.distributed:
                                loss, gnorm = distributed.data_parallel_step(model, world, x, y, step + 1, lr,
                                                                             **adamw)
                            else:   # one process: forward, backward and AdamW in one C call
                                loss, gnorm = model.train_step(x, y, step + 1, lr, **adamw)
                        else:
                            loss, gnorm = accum.step(world, data.train, starts, G, step + 1, lr, opts)
                    except NumericError as e:
                        raise _diverged(opts, step + 1, lr, str(e), saved[-1] if saved else None) from None
                    ref = max(losses[0] if losses else loss, floor)
                    if opts.divergence_factor and (not math.isfinite(loss) or loss > opts.divergence_factor * ref):
                        raise _diverged(opts, step + 1, lr, f"loss {loss:.4g} exceeds {opts.divergence_factor:g} x "
                                        f"{ref:.4g}", saved[-1] if saved else None)
                    stopping = world.any(stop.set) if world.distributed else stop.set
                    if deadline is not None and not stopping and step + 1 < total:
                        late = time.perf_counter() > deadline
                        timed_out = world.any(late) if world.distributed else late
                    step += 1
                    losses.append(loss)
                    tokens_done += tokens_per_step
                    ema = loss if ema is None else 0.9 * ema + 0.1 * loss
                    el = time.perf_counter() - t_train
                    tok_s = tokens_done / el if el > 0 else 0.0
                    tgt = data.train.data[starts[:, None] + 1 + np.arange(data.train.seq_len)[None, :]]
                    bpb = loss * tgt.size / math.log(2) / max(1, int(data.byte_lens[tgt].sum()))
                    metrics.log(step, tokens=step * tokens_per_step, loss=loss, bits_per_byte=bpb, lr=lr,
                                grad_norm=gnorm, tokens_per_s=tok_s, elapsed_s=el)
                    # the values first: a plain (non-terminal) line prints on update
                    bar.set_postfix(loss=f"{ema:.3f}", lr=f"{lr:.2e}", tok_s=fmt_count(tok_s), refresh=False)
                    bar.update(1)
                    if step % 50 == 0 or step == start + 1:
                        (log.debug if show else log.info)(
                            "step %s/%s loss %.4f grad norm %.3f lr %.2e %s tokens/s", f"{step:,}", f"{total:,}",
                            loss, gnorm, lr, fmt_count(tok_s))
                    if every and step % every == 0 and step < total and len(data.val):
                        ev = validation_loss(model, data.val, E, opts.eval_batches, data.byte_lens, world)
                        metrics.log(step, tokens=step * tokens_per_step, val_loss=ev["val_loss"],
                                    val_bits_per_byte=ev.get("val_bpb"), elapsed_s=time.perf_counter() - t_train)
                        metrics.flush()
                        msg = "step %d: val loss %.4f, %.3f bits/byte" % (
                            step, ev["val_loss"], ev.get("val_bpb", float("nan")))
                        if show:
                            bar.write(msg)  # above the bar, not through it
                        elif world.is_root:
                            log.info(msg)
                    if opts.checkpoint_every and step % opts.checkpoint_every == 0 and step < total:
                        metrics.flush()
                        save(step)  # (the last step is saved after the final evaluation)
    finally:
        bar.close()
        metrics.flush()
    return LoopResult(step, losses, tokens_done, time.perf_counter() - t_train, stopping, timed_out)


def end_of_run_infilling(model: Model, opts: TrainOptions, data: Data, world: World,
                         stop: Optional[_StopFlag] = None, quiet: bool = False) -> Dict[str, float]:
    """Single-line infilling on the held-out files (``opts.fim_eval_samples``
    cases, :func:`cllm.model.infill_eval.score_infilling`): ``fim_line_exact_match``,
    ``fim_line_middle_bpb`` and ``fim_line_cases``, for a run that trains with
    FIM (rank 0 only; ``{}`` otherwise or when the run is being stopped)."""
    if (opts.fim_eval_samples <= 0 or opts.fim_rate <= 0 or not data.val_docs or not world.is_root
            or fim_token_ids(data.tokenizer) is None or (stop is not None and stop.set)):
        return {}
    t = time.perf_counter()
    try:
        # prompts as long as the run's training sequences (a pretrained model's
        # context may be several times longer, and each prompt is prefilled)
        r = score_infilling(model, [d.data for d in data.val_docs], mode="line", samples=opts.fim_eval_samples,
                            seed=opts.seed, stop_early=(lambda: stop.set) if stop is not None else None,
                            context=data.train.seq_len)
    except ConfigError as e:      # held-out files without a line to mask
        log.info("no infilling evaluation: %s", e)
        return {}
    if not r:                     # cut short by a stop signal
        return {}
    out = {"fim_line_exact_match": r["exact_match"], "fim_line_cases": r["cases"]}
    if "middle_bits_per_byte" in r:
        out["fim_line_middle_bpb"] = r["middle_bits_per_byte"]
    (log.debug if quiet else log.info)("infilling, %d held-out lines: exact match %.1f%%, middle %.3f bits/byte "
                                       "(%.1fs)", int(r["cases"]), 100 * r["exact_match"],
                                       r.get("middle_bits_per_byte", float("nan")), time.perf_counter() - t)
    return out


def summarize(model: Model, opts: TrainOptions, data: Data, res: LoopResult, t0: float,
              metrics: MetricsLog, init_eval: Optional[Dict[str, float]] = None,
              world: Optional[World] = None, stop: Optional[_StopFlag] = None) -> Dict[str, Any]:
    """Final evaluation (logged to ``metrics``) and the run's summary
    (``model.summary``; tokens are global: all ranks together)."""
    world = world or World()
    step_rows = data.batch * data.accum  # evaluation batches are optimizer-step batches
    ev = (validation_loss(model, data.val, step_rows, opts.eval_batches, data.byte_lens, world, stop)
          if len(data.val) else {})
    tokens_per_step = step_rows * data.train.seq_len
    fim = end_of_run_infilling(model, opts, data, world, stop) if ev and not res.interrupted else {}
    if ev:
        metrics.log(res.step, tokens=res.step * tokens_per_step, val_loss=ev["val_loss"],
                    val_bits_per_byte=ev.get("val_bpb"), elapsed_s=res.seconds, **fim)
        metrics.flush()
    losses = res.losses
    k = max(1, min(20, len(losses) // 10 or 1))
    # steps, tokens, training time and the first loss count the whole run, across resumes;
    # tokens/s is this session's rate
    first = metrics.first_loss if metrics.first_loss is not None else (losses[0] if losses else None)
    s = {
        "steps": res.step, "epochs": res.step // data.steps_per_epoch, "tokens": res.step * tokens_per_step,
        "train_seconds": metrics.elapsed0 + res.seconds,
        "tokens_per_sec": res.tokens / res.seconds if res.seconds > 0 else 0.0,
        "first_loss": first,
        "train_loss": float(np.mean(losses[-k:])) if losses else None,
        "corpus_files": len(data.docs), "corpus_bytes": sum(len(d.data) for d in data.docs),
        "corpus_tokens": data.n_tokens, "vocab_size": len(data.tokenizer), "threads": model.threads,
        "ranks": world.size, "batch": data.batch, "grad_accum": data.accum,
        **ev, **fim, "total_seconds": time.perf_counter() - t0,
    }
    if init_eval:
        s["init_val_loss"] = init_eval["val_loss"]
        if "val_bpb" in init_eval:
            s["init_val_bpb"] = init_eval["val_bpb"]
    val = f", val loss {ev['val_loss']:.4f} ({ev.get('val_bpb', float('nan')):.3f} bits/byte)" if ev else ""
    log.info("done: %s steps in %s, train loss %.4f%s, %s tokens/s", f"{res.step:,}", fmt_duration(res.seconds),
             s["train_loss"] if s["train_loss"] is not None else float("nan"), val, fmt_count(s["tokens_per_sec"]))
    if opts.verbose and world.is_root:
        for st in model.sphere_stats():
            log.info("sphere %d (parent %d): %s tasks, busy %.2fs (%.0f%%)", st["sphere"], st["parent"],
                     f"{st['tasks']:,}", st["busy_seconds"], 100 * st["busy_fraction"])
    return s


def write_loss_plot(out_dir: Optional[str]) -> Optional[str]:
    """``out_dir/loss.png`` from the run's metrics when matplotlib is importable, else None."""
    if not out_dir:
        return None
    from .plot import PlotUnavailable, plot_runs
    try:
        return plot_runs([out_dir], os.path.join(out_dir, "loss.png"))
    except PlotUnavailable:
        log.info("no loss.png: matplotlib is not installed (pip install \"cllm[plot]\")")
    except (OSError, ValueError) as e:
        log.warning("could not write %s/loss.png: %s", out_dir, e)
    return None


def _resume_options(opts: TrainOptions) -> tuple:
    """(saved options, corpus path, saved state, opened checkpoint) of the
    run in ``opts.out_dir``; a partial or mixed checkpoint is refused."""
    if not opts.out_dir or not os.path.isdir(opts.out_dir):
        raise ConfigError(f"resume: out_dir={opts.out_dir!r} holds no run; nothing to resume")
    d = resolve_checkpoint(opts.out_dir)
    if not os.path.lexists(os.path.join(d, STATE_FILE)):
        raise ConfigError(f"resume: no {STATE_FILE} in out_dir={opts.out_dir!r}; nothing to resume")
    ckpt = open_checkpoint(d)
    state0 = ckpt.state()
    saved = state0.get("options", state0.get("train_args"))
    if not isinstance(saved, dict) or not isinstance(state0.get("step"), int):
        raise CheckpointError(f"resume: {ckpt.path}/trainer_state.json lacks the step or the saved training options")
    log.info("resuming %s at step %s with its saved options", ckpt.path, state0.get("step"))
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
        docs, tok, ids, n_train = prepare_data(path, opts, tokenizer, cache_dir)
    tok_json = world.bcast(tok.to_json() if world.is_root else None)
    if not world.is_root:
        docs, tok, ids, n_train = prepare_data(path, dataclasses.replace(opts, progress=False),
                                               Tokenizer.from_json(tok_json), cache_dir)
    if world.distributed:
        check_same_data(world, corpus_digest(docs, ids, n_train))
    return docs, tok, ids, n_train


def corpus_digest(docs: Sequence[Document], ids: np.ndarray, n_train: int) -> Dict[str, Any]:
    """What every rank must agree on before the first step: the file list,
    the byte count, the token ids (a hash) and the train/val split."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d.relpath.encode("utf-8", "surrogateescape") + b"\0")
    return {"files": len(docs), "file list": h.hexdigest()[:16], "bytes": sum(len(d.data) for d in docs),
            "tokens": int(len(ids)), "token ids": hashlib.sha256(np.ascontiguousarray(ids).tobytes()).hexdigest()[:16],
            "train tokens": int(n_train)}


def check_same_data(world: World, mine: Dict[str, Any]) -> None:
    """Rank 0 broadcasts its :func:`corpus_digest`; a rank whose own differs
    stops the whole job (before the first step) naming itself and the
    difference, instead of running mismatched collectives on different data."""
    ref = world.bcast(mine if world.is_root else None)
    diff = [f"{k} {mine[k]} (rank 0: {ref[k]})" for k in ref if mine.get(k) != ref[k]]
    if diff:
        raise CorpusError(f"rank {world.rank} read a different corpus than rank 0: " + ", ".join(diff)
                          + " (every rank must see the same files: a shared or identical copy of the tree)")


def train(path: Optional[str] = None, **options: Any) -> Model:
    opts = TrainOptions.from_kwargs(options)
    world = distributed.init(opts.distributed)
    with world.fail_fast():
        with rundir.claim(opts.out_dir, resume=opts.resume, overwrite=opts.overwrite, init_from=opts.init_from,
                          writer=world.is_root) as out_dir:
            if world.distributed:
                out_dir = world.bcast(out_dir)   # rank 0 chose (and locked) it
                if out_dir and not world.is_root:
                    rundir.prepare(out_dir)      # the others check it from where they run
            return _train(path, dataclasses.replace(opts, out_dir=out_dir), world)


def _infilling_cost(model: Model, opts: TrainOptions, data: "Data", world: World) -> float:
    """Seconds the end-of-run infilling evaluation will take (two cases timed, scaled)."""
    probe = dataclasses.replace(opts, fim_eval_samples=2)
    t = time.perf_counter()
    if not end_of_run_infilling(model, probe, data, world, quiet=True):
        return 0.0
    return (time.perf_counter() - t) / 2 * opts.fim_eval_samples


def plan_time_budget(model: Model, data: "Data", opts: TrainOptions, budget_s: float, t0: float,
                     world: World) -> Tuple[int, float]:
    """(total steps, training deadline) for a run that must end within
    ``budget_s`` seconds of ``t0`` (final evaluation and save included).

    Times one micro-batch's forward + backward (after a warm-up; weights are
    not changed) and a forward alone, then solves
    ``steps * step + evals * eval + final eval + save <= what is left``, so
    the learning-rate schedule reaches its minimum on the last step. The
    deadline is a guard: if the machine turns slower, the loop ends there
    (with a warning) and the final evaluation and save still fit."""
    if opts.out_dir:   # pay matplotlib's import now, not in the final save's loss plot
        from .plot import have_matplotlib
        have_matplotlib()
    E = data.batch * data.accum
    starts = data.train.starts[:data.rows]
    x, y = data.train.block(starts)
    model.forward(x, y)
    model.backward()
    ts: List[float] = []
    t_meas = time.perf_counter()
    while len(ts) < 3 or (len(ts) < 50 and time.perf_counter() - t_meas < 0.3):
        t = time.perf_counter()
        model.forward(x, y)
        model.backward()
        ts.append(time.perf_counter() - t)
    t = time.perf_counter()
    model.forward(x, y)
    t_fwd = time.perf_counter() - t
    # + AdamW and the gradient norm: a few passes over params, grads and moments (~1 GB/s of them)
    t_step = float(np.median(ts)) * data.accum * 1.04 + 1.6e-8 * model.num_params
    n_eval_batches = min(len(data.val), opts.eval_batches * E) / max(1, data.rows) if len(data.val) else 0
    t_eval = n_eval_batches * t_fwd
    t_save = 2.0 + 2e-9 * 16 * model.num_params        # weights, optimizer, hashes, loss plot
    t_save += _infilling_cost(model, opts, data, world)
    left = budget_s - (time.perf_counter() - t0) - t_eval - t_save - 0.03 * budget_s
    evals = 9 if opts.eval_interval is None else None
    if evals is None:
        total = int(left / t_step) if opts.eval_interval == 0 else int(left / (t_step + t_eval / opts.eval_interval))
    else:
        total = int((left - evals * t_eval) / t_step)
    total = int(world.bcast(total)) if world.distributed else total
    if total < 1:
        raise ConfigError(f"time budget {opts.time}: {time.perf_counter() - t0:.1f}s went to preparing the data "
                          f"and a step takes {t_step:.2f}s, so no step fits; give more time")
    deadline = t0 + budget_s - t_eval - t_save - 0.01 * budget_s
    log.info("time budget %s: a step takes %.3fs, an evaluation %.2fs: %s steps", opts.time, t_step, t_eval,
             f"{total:,}")
    return total, deadline


#: a periodic checkpoint redraws loss.png at most this often (the final and interrupt saves always do)
PLOT_EVERY_S = 30.0


def _finished_run(opts: TrainOptions, state0: Dict[str, Any], ckpt: Checkpoint, world: World) -> Model:
    """``--resume`` of a run that already ran all its steps: say so, change
    nothing (no save, no metrics row) and return the saved model with its
    saved summary."""
    step = int(state0["step"])
    if world.is_root:
        log.warning("the run in %s is already complete (step %d of %d): nothing to train; pass a larger "
                    "--max-steps to continue it", opts.out_dir, step, int(state0.get("total_steps", step)))
    model = Model.load(ckpt, batch_size=opts.batch_size, seq_len=opts.seq_len, max_memory_gb=opts.max_memory_gb,
                       precision=opts.precision, **world.model_options(opts.threads, opts.deterministic))
    model.summary = dict(state0.get("summary") or {}, out_dir=opts.out_dir, already_complete=True)
    return model


def _train(path: Optional[str], opts: TrainOptions, world: World) -> Model:
    """The steps of :func:`train` (every rank runs them under MPI)."""
    t0 = time.perf_counter()
    state0: Optional[Dict[str, Any]] = None
    ckpt: Optional[Checkpoint] = None
    asked_steps = opts.max_steps
    if opts.resume:
        opts, path, state0, ckpt = _resume_options(opts)
        gb = int(state0.get("batch", opts.batch_size))
        if gb % world.size:
            raise ConfigError(f"resume: the run's global batch of {gb} sequences does not split over "
                              f"{world.size} ranks; use a rank count that divides it")
        opts = dataclasses.replace(opts, batch_size=gb // world.size)
        done_step, total0 = int(state0["step"]), int(state0.get("total_steps", state0["step"]))
        if done_step >= total0 and not (asked_steps is not None and asked_steps > total0):
            return _finished_run(opts, state0, ckpt, world)
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"path must be a file or directory path, got {type(path).__name__} {path!r}")
        path = os.fspath(path)
        if not os.path.exists(path):
            raise CorpusError(f"corpus path does not exist: {path!r}")
    init_model: Optional[Model] = None
    if opts.init_from is not None and state0 is None:
        init_model, opts = load_init(opts, world)
    else:
        opts = opts.resolved()
    if ckpt is not None:
        tokenizer = ckpt.tokenizer
    else:
        tokenizer = init_model.tokenizer if init_model is not None else opts.tokenizer
    cache_dir = os.path.join(opts.out_dir, "cache") if opts.out_dir else None
    docs, tok, ids, n_train = prepare_data_on_ranks(world, path, opts, tokenizer, cache_dir)
    data = split_data(docs, tok, ids, n_train, opts, world.size)
    data.val_docs = split_documents(docs, opts.val_fraction)[1]
    deadline: Optional[float] = None
    if state0 is None:
        model = init_model if init_model is not None else build_model(opts, data, world)
        start = 0
        total = opts.max_steps if opts.max_steps is not None else opts.epochs * data.steps_per_epoch
        if opts.time is not None:
            total, deadline = plan_time_budget(model, data, opts, parse_duration(opts.time), t0, world)
    else:
        assert ckpt is not None
        model = restore_model(opts, data, state0, ckpt, world)
        start, total = int(state0["step"]), int(state0["total_steps"])
        if asked_steps is not None and asked_steps > total and start >= total:
            log.info("the run in %s finished at step %d: continuing it to step %d (--max-steps)", opts.out_dir,
                     start, asked_steps)
            total = asked_steps
    if opts.fim_rate > 0:   # the infill order this run trains for (as Model.load reads it back)
        model.infill_order = "psm" if opts.fim_spm_rate == 0 else "spm"
    log.info("%r; %s train sequences, %s val sequences; %s steps of %s x %d x %d tokens%s", model,
             f"{len(data.train):,}", f"{len(data.val):,}", f"{total:,}", data.accum, data.batch, opts.seq_len,
             f" over {world.size} ranks ({data.rows} rows each)" if world.distributed else "")
    metrics = MetricsLog(opts.out_dir if world.is_root else None,
                         resume_step=start if state0 is not None else None)
    init_eval = None
    if init_model is not None and len(data.val):  # where fine-tuning starts from (every rank evaluates)
        init_eval = validation_loss(model, data.val, data.batch * data.accum, opts.eval_batches, data.byte_lens, world)
        metrics.log(0, tokens=0, val_loss=init_eval["val_loss"], val_bits_per_byte=init_eval.get("val_bpb"),
                    elapsed_s=0.0)
        log.info("before fine-tuning: val loss %.4f (%.3f bits/byte)", init_eval["val_loss"],
                 init_eval.get("val_bpb", float("nan")))

    run_id = state0.get("run_id") if state0 is not None else None
    run_id = run_id or new_run_id()
    saved: List[int] = []

    def save(step: int, final: bool = False) -> None:
        if opts.out_dir and world.distributed and not world.in_sync(model.params):
            raise StateError(f"the ranks' weights differ at step {step}: not saving (ranks must run "
                             f"the same cllm build on the same kind of CPU)")
        if opts.out_dir and world.is_root:
            metrics.sync()   # the rows this checkpoint covers are on disk before it commits
            model.save(opts.out_dir, keep=opts.keep_checkpoints, overwrite=opts.overwrite, trainer_state={
                "step": step, "epoch": step // data.steps_per_epoch, "total_steps": total, "run_id": run_id,
                "options": opts.saved(), "model_config": model.config.to_dict(), "summary": model.summary,
                "threads": model.threads, "ranks": world.size, "batch": data.batch, "precision": model.precision,
                "data": {"path": path, "tokens": data.n_tokens, "train_tokens": len(data.train.data)}})
        if opts.out_dir:
            saved.append(step)
            if world.is_root and (final or time.perf_counter() - plotted[0] >= PLOT_EVERY_S):
                write_loss_plot(opts.out_dir)
                plotted[0] = time.perf_counter()

    plotted = [time.perf_counter()]
    stop = _StopFlag(world)
    with stop, metrics:
        res = run_loop(model, opts, data, start, total, save, metrics, saved, world, stop, deadline)
        if res.timed_out and world.is_root:
            log.warning("the time budget ran out at step %d of %d (the machine ran slower than measured): "
                        "finishing now, so the schedule ends above its minimum", res.step, total)
        if res.interrupted:
            model.summary = {"interrupted_at": res.step}
            if not saved or saved[-1] != res.step:
                save(res.step, final=True)
            elif world.is_root:
                write_loss_plot(opts.out_dir)
            if opts.out_dir and world.is_root:
                log.warning("interrupted after step %d: checkpoint saved to %s (continue with "
                            "`cllm train --resume --out %s`)", res.step, opts.out_dir, opts.out_dir)
            world.barrier()  # rank 0 has written the checkpoint
            raise distributed.AgreedStop
        model.summary = summarize(model, opts, data, res, t0, metrics, init_eval, world, stop)
        save(res.step, final=True)
        if stop.set and opts.out_dir and world.is_root:
            log.warning("%s during the final evaluation or save: the run is complete and saved to %s",
                        stop.signal_name, opts.out_dir)
    if opts.out_dir:
        model.summary["out_dir"] = opts.out_dir
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

Options (keyword-only; see :class:`~cllm.training.options.TrainOptions`):

""" + TrainOptions.doc()
train.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("path", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Optional[str])]
    + TrainOptions.parameters(), return_annotation=Model)
