"""Training: corpus -> tokenizer -> token ids -> batches -> C train steps."""
from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from . import dataset
from ._native import ConfigError
from .config import ModelConfig
from .corpus import DEFAULT_CORPUS_BYTES, CorpusError, default_corpus_path, load_documents
from .model import Model
from .tokenizer import DEFAULT_VOCAB_SIZE

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation and data settings (names match the CLI flags)."""

    epochs: int = 1
    max_steps: Optional[int] = None
    batch_size: int = 16
    seq_len: int = 128
    learning_rate: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: Optional[int] = None
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    threads: int = 0
    seed: int = 1337
    val_fraction: float = 0.05
    eval_batches: int = 16
    eval_interval: int = 0
    checkpoint_every: int = 0

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot work."""
        ints = {"epochs": 1, "batch_size": 1, "seq_len": 1, "threads": 0, "eval_batches": 1,
                "eval_interval": 0, "checkpoint_every": 0}
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ConfigError(f"max_steps must be a positive integer, got {self.max_steps!r}")
        if self.warmup_steps is not None and (not isinstance(self.warmup_steps, int) or self.warmup_steps < 0):
            raise ConfigError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and 0 < self.learning_rate <= 10):
            raise ConfigError(f"learning_rate must be in (0, 10], got {self.learning_rate!r}")
        if not 0 <= self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in [0, 0.5), got {self.val_fraction}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def lr_at(self, step: int, total: int) -> float:
        """Linear warm-up, then cosine decay to ``min_lr_ratio * learning_rate``."""
        warm = self.warmup_steps if self.warmup_steps is not None else min(100, max(1, total // 20))
        if step <= warm and warm > 0:
            return self.learning_rate * step / warm
        frac = (step - warm) / max(1, total - warm)
        cos = 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        return self.learning_rate * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cos)


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
    from .tokenizer import Tokenizer
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
        if vocab_size < 257:
            raise ConfigError(f"vocab_size must be >= 257 (256 bytes + <|endoftext|>), got {vocab_size}")
        if vocab_size == 257:
            tokenizer = Tokenizer.byte_level()
        else:
            tokenizer = Tokenizer.train([d.data for d in docs], vocab_size=vocab_size, progress=progress)
    if cache_dir is not None:
        ids = dataset.load_or_build([d.path for d in docs], tokenizer, cache_dir, progress=progress)
    else:
        ids = tokenizer.encode_documents([d.data for d in docs])
    return docs, tokenizer, ids


def train(path: Optional[str] = None, *, epochs: int = 1, max_steps: Optional[int] = None,
          batch_size: int = 16, seq_len: int = 128, learning_rate: float = 3e-4, threads: int = 0,
          vocab_size: int = DEFAULT_VOCAB_SIZE, embed_dim: int = 256, num_layers: int = 4, num_heads: int = 4,
          context_len: Optional[int] = None, out_dir: Optional[str] = None, seed: int = 1337,
          exts: Optional[Sequence[str]] = None, max_bytes: Optional[int] = None,
          weight_decay: float = 0.1, grad_clip: float = 1.0, warmup_steps: Optional[int] = None,
          val_fraction: float = 0.05, eval_batches: int = 16, eval_interval: int = 0,
          checkpoint_every: int = 0, tokenizer: Any = None, progress: bool = True,
          verbose: bool = False, max_memory_gb: float = 16.0, resume: bool = False) -> Model:
    """Train a GPT-2 on the source tree at ``path`` and return the :class:`Model`.

    With ``path=None`` the running interpreter's standard library is used
    (capped, so the run takes minutes). The model's vocabulary is the trained
    tokenizer's size (at most ``vocab_size``). When ``out_dir`` is given the
    checkpoint (weights, config, tokenizer, optimizer and trainer state) is
    written there at the end (and every ``checkpoint_every`` steps); a run
    that fails keeps the last checkpoint intact. ``model.summary`` holds the
    train/val loss, val bits per byte, tokens/s and timings.

    Ctrl-C (SIGINT) finishes the current step, saves a consistent checkpoint
    to ``out_dir`` and raises :class:`KeyboardInterrupt`. ``resume=True``
    continues the run saved in ``out_dir`` with its saved settings (the other
    arguments are ignored), bit-identically to an uninterrupted run.
    """
    args = {k: v for k, v in locals().items() if k not in ("tokenizer", "progress", "verbose", "resume")}
    state0: Optional[Dict[str, Any]] = None
    if resume:
        from .checkpoint import STATE_FILE, read_json
        if not out_dir or not os.path.isfile(os.path.join(out_dir, STATE_FILE)):
            raise ConfigError(f"resume: no {STATE_FILE} in out_dir={out_dir!r}; nothing to resume")
        state0 = read_json(os.path.join(out_dir, STATE_FILE))
        saved = state0.get("train_args") if isinstance(state0, dict) else None
        if not isinstance(saved, dict):
            raise ConfigError(f"resume: {os.path.join(out_dir, STATE_FILE)} lacks the saved training arguments")
        saved = dict(saved, out_dir=out_dir)
        log.info("resuming %s at step %s with its saved settings", out_dir, state0.get("step"))
        from .tokenizer import Tokenizer
        return _train(tokenizer=Tokenizer.load(out_dir), progress=progress, verbose=verbose, state0=state0,
                      **saved)
    return _train(tokenizer=tokenizer, progress=progress, verbose=verbose, state0=None, **args)


def _train(path: Optional[str], *, epochs: int, max_steps: Optional[int], batch_size: int, seq_len: int,
           learning_rate: float, threads: int, vocab_size: int, embed_dim: int, num_layers: int,
           num_heads: int, context_len: Optional[int], out_dir: Optional[str], seed: int,
           exts: Optional[Sequence[str]], max_bytes: Optional[int], weight_decay: float, grad_clip: float,
           warmup_steps: Optional[int], val_fraction: float, eval_batches: int, eval_interval: int,
           checkpoint_every: int, tokenizer: Any, progress: bool, verbose: bool, max_memory_gb: float,
           state0: Optional[Dict[str, Any]]) -> Model:
    """The training run behind :func:`train` (``state0``: a saved trainer state to continue)."""
    args = {k: v for k, v in locals().items() if k not in ("tokenizer", "progress", "verbose", "state0")}
    if exts is not None:
        args["exts"] = list(exts)
    tc = TrainConfig(epochs=epochs, max_steps=max_steps, batch_size=batch_size, seq_len=seq_len,
                     learning_rate=learning_rate, warmup_steps=warmup_steps, weight_decay=weight_decay,
                     grad_clip=grad_clip, threads=threads, seed=seed, val_fraction=val_fraction,
                     eval_batches=eval_batches, eval_interval=eval_interval,
                     checkpoint_every=checkpoint_every)
    tc.validate()
    ModelConfig(vocab_size=max(vocab_size, 1), context_len=context_len or seq_len, num_layers=num_layers,
                num_heads=num_heads, embed_dim=embed_dim).validate()
    if context_len is not None and context_len < seq_len:
        raise ConfigError(f"context_len ({context_len}) must be >= seq_len ({seq_len})")
    if path is not None and not os.path.exists(path):
        raise CorpusError(f"corpus path does not exist: {path!r}")
    t0 = time.perf_counter()
    cache_dir = os.path.join(out_dir, "cache") if out_dir else None
    docs, tok, ids = prepare_data(path, exts, max_bytes, vocab_size, tokenizer, cache_dir, progress)
    n = len(ids)
    T = seq_len
    if n < T + 2:
        raise CorpusError(f"the corpus has only {n} tokens; a training sequence needs seq_len + 1 = {T + 1} "
                          f"(lower --seq-len or add files)")
    n_val = int(n * val_fraction)
    if val_fraction > 0:
        n_val = max(n_val, T + 1)
    if n - n_val < T + 1:
        log.warning("corpus too small for a held-out split of %d tokens: evaluating on the training data", n_val)
        train_ids, val_ids = ids, ids
    else:
        train_ids, val_ids = ids[:n - n_val], ids[n - n_val:] if n_val else ids[:0]
    train_b, val_b = Batches(train_ids, T), Batches(val_ids, T)
    B = batch_size
    if len(train_b) < B:
        log.warning("the training split holds only %d sequences of %d tokens; using batches of %d",
                    len(train_b), T, len(train_b))
        B = len(train_b)
    steps_per_epoch = len(train_b) // B
    total = tc.max_steps if tc.max_steps is not None else tc.epochs * steps_per_epoch
    mcfg = ModelConfig(vocab_size=len(tok), context_len=context_len or T, num_layers=num_layers,
                       num_heads=num_heads, embed_dim=embed_dim)
    model = Model(mcfg, tok, batch_size=B, seq_len=T, threads=threads, seed=seed, max_memory_gb=max_memory_gb)
    log.info("%r; %d train tokens (%d sequences), %d val tokens; %d steps of %d x %d", model,
             len(train_ids), len(train_b), len(val_ids), total, B, T)
    byte_lens = _token_byte_lengths(tok)
    start = 0
    if state0 is not None:
        from .checkpoint import MODEL_FILE, CheckpointError, load_optimizer_state, read_safetensors
        data0 = state0.get("data", {})
        if data0.get("tokens") != n or state0.get("threads") != model.threads or state0.get("batch") != B:
            raise CheckpointError(
                f"resume: the run in {out_dir} had {data0.get('tokens')} corpus tokens, "
                f"{state0.get('threads')} threads and batch {state0.get('batch')}; now {n}, {model.threads}, {B} "
                f"(the corpus or the machine changed, so the run cannot continue identically)")
        tensors, _ = read_safetensors(os.path.join(out_dir, MODEL_FILE))
        model.load_state_dict(tensors)
        load_optimizer_state(model, out_dir)
        start = int(state0["step"])
        total = int(state0["total_steps"])

    def state(step: int, epoch: int) -> Dict[str, Any]:
        return {"step": step, "epoch": epoch, "total_steps": total, "train_config": asdict(tc),
                "model_config": mcfg.to_dict(), "summary": model.summary, "threads": model.threads,
                "batch": B, "train_args": args,
                "data": {"path": path, "tokens": n, "train_tokens": len(train_ids)}}

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
    losses: List[float] = []
    ema = None
    step = start
    t_train = time.perf_counter()
    tokens_done = 0
    stop = _StopFlag()
    with stop:
        while step < total and not stop.set:
            epoch = step // steps_per_epoch
            order = np.random.default_rng(seed + epoch).permutation(len(train_b))
            for i in range((step % steps_per_epoch) * B, steps_per_epoch * B, B):
                if step >= total or stop.set:
                    break
                x, y = train_b.block(train_b.starts[order[i:i + B]])
                lr = tc.lr_at(step + 1, total)
                loss, gnorm = model.train_step(x, y, step + 1, lr, beta1=tc.beta1, beta2=tc.beta2, eps=tc.eps,
                                               weight_decay=tc.weight_decay, grad_clip=tc.grad_clip)
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
                if tc.eval_interval and step % tc.eval_interval == 0 and len(val_b):
                    ev = evaluate(model, val_b, B, tc.eval_batches, byte_lens)
                    log.info("step %d val_loss %.4f val_bpb %.4f", step, ev["val_loss"], ev.get("val_bpb", float("nan")))
                if out_dir and tc.checkpoint_every and step % tc.checkpoint_every == 0:
                    model.save(out_dir, trainer_state=state(step, step // steps_per_epoch))
    if stop.set:
        if bar is not None:
            bar.close()
        model.summary = {"interrupted_at": step}
        if out_dir:
            model.save(out_dir, trainer_state=state(step, step // steps_per_epoch))
            log.warning("interrupted after step %d: checkpoint saved to %s (continue with "
                        "`cllm train --resume --out %s`)", step, out_dir, out_dir)
        raise KeyboardInterrupt
    epoch = step // steps_per_epoch
    if bar is not None:
        bar.close()
    train_time = time.perf_counter() - t_train
    ev = evaluate(model, val_b, B, tc.eval_batches, byte_lens) if len(val_b) else {}
    k = max(1, min(20, len(losses) // 10 or 1))
    model.summary = {
        "steps": step, "epochs": epoch, "tokens": tokens_done, "train_seconds": train_time,
        "tokens_per_sec": tokens_done / train_time if train_time > 0 else 0.0,
        "first_loss": losses[0] if losses else None,
        "train_loss": float(np.mean(losses[-k:])) if losses else None,
        "corpus_files": len(docs), "corpus_bytes": sum(len(d.data) for d in docs),
        "corpus_tokens": n, "vocab_size": len(tok), "threads": model.threads,
        **ev, "total_seconds": time.perf_counter() - t0,
    }
    log.info("done: %d steps, train loss %.4f, val loss %s, %.0f tok/s", step,
             model.summary["train_loss"] or float("nan"), ev.get("val_loss"), model.summary["tokens_per_sec"])
    if verbose:
        for s in model.sphere_stats():
            log.info("sphere %d (parent %d): %d tasks, busy %.2fs (%.0f%%)", s["sphere"], s["parent"],
                     s["tasks"], s["busy_seconds"], 100 * s["busy_fraction"])
    if out_dir:
        model.save(out_dir, trainer_state=state(step, epoch))
    return model
