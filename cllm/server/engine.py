"""The generation engine behind ``cllm serve``: one model, one worker thread.

Requests become :class:`Job` objects on a bounded queue (:class:`QueueFull`
when it is full, answered 503); the worker runs them one at a time on the
C decoder (which runs on its own threads, without the GIL), and hands
every new piece of text to the job's asyncio queue as an :class:`Event`. A
job stops at ``<|endoftext|>``, a stop string, its token limit, its time
limit (``t_max_predict_ms``: llama.cpp's rule, after a new line), a
cancellation (client gone) or the server's shutdown.

Infill prompts (:func:`cllm.data.fim.infill_ids`) use the model's
fill-in-the-middle tokens, in the engine's :attr:`Engine.infill_order`
(suffix-prefix-middle unless told or the model was trained without it: an
editor's request after a few more characters typed then reuses the cached
prompt up to the cursor); a model
without them gets :class:`~cllm.data.fim.NoInfill` (answered 501, as
llama.cpp does).
"""
from __future__ import annotations

import asyncio
import logging
import math
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..data.fim import NoInfill, check_infill_order, infill_ids
from ..errors import ConfigError
from ..model.decoder import TextStream, check_sampling, log_softmax, seed_state

log = logging.getLogger(__name__)

__all__ = ["Engine", "Job", "Event", "Sampling", "QueueFull", "NoInfill", "PromptTooLong", "infill_ids"]

class QueueFull(Exception):
    """The request queue is full (HTTP 503 with Retry-After)."""


class PromptTooLong(ConfigError):
    """The prompt does not fit the context (HTTP 400)."""

    def __init__(self, n: int, ctx: int) -> None:
        super().__init__(f"the prompt is {n} tokens long; this server's context is {ctx} tokens "
                         f"(shorten the prompt)")
        self.n, self.ctx = n, ctx


@dataclass
class Sampling:
    """What one completion samples and when it stops."""
    max_tokens: int
    temperature: float = 0.8
    top_k: Optional[int] = 40
    top_p: float = 1.0
    seed: Optional[int] = None
    stop: Sequence[str] = ()
    #: top alternatives to report per token (None: no log-probabilities)
    logprobs: Optional[int] = None
    #: llama.cpp's ``t_max_predict_ms``: stop after this long once a new line was generated
    t_max_predict_ms: Optional[float] = None
    stop_at_eot: bool = True


@dataclass
class Event:
    """A piece of a completion (``kind="token"``) or its end (``kind="done"``)."""
    kind: str
    text: str = ""
    token: int = -1
    #: log-probability of the token and the top alternatives ``{text: logprob}``
    logprob: Optional[float] = None
    top: Optional[Dict[str, float]] = None
    #: "stop" (end of text or a stop string), "length", "cancelled", "shutdown" or "error"
    finish: str = ""
    stop_word: str = ""
    error: str = ""


@dataclass
class Job:
    """One completion request, as the worker runs it."""
    ids: List[int]
    sampling: Sampling
    allowed: Optional[List[int]] = None
    #: ids never sampled (an infill bans the fill-in-the-middle control tokens)
    ban: List[int] = field(default_factory=list)
    skip: bytes = b""
    events: "asyncio.Queue[Event]" = field(default_factory=asyncio.Queue)
    loop: Optional[asyncio.AbstractEventLoop] = None
    cancel: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    first_token: float = 0.0
    finished: float = 0.0
    generated: int = 0

    def emit(self, ev: Event) -> None:
        """Hand ``ev`` to the request's coroutine (thread-safe)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.events.put_nowait, ev)
        else:
            self.events.put_nowait(ev)

    @property
    def prompt_ms(self) -> float:
        return 1000.0 * max(0.0, (self.first_token or self.finished) - self.started) if self.started else 0.0

    @property
    def predicted_ms(self) -> float:
        return 1000.0 * max(0.0, self.finished - self.first_token) if self.first_token else 0.0


class Engine:
    """Owns ``model`` (an :class:`~cllm.InferenceModel` or :class:`~cllm.Model`)
    and runs :class:`Job` objects one at a time on a worker thread."""

    def __init__(self, model: Any, max_queue: int = 16, max_tokens: Optional[int] = None,
                 ctx: Optional[int] = None, infill_order: Optional[str] = None) -> None:
        #: the order of infill prompts (:func:`cllm.data.fim.infill_ids`)
        self.infill_order: str = check_infill_order(
            getattr(model, "infill_order", "spm") if infill_order is None else infill_order)
        self.model = model
        self.tokenizer = model.tokenizer
        self.ctx = min(int(ctx or model.config.context_len), model.config.context_len)
        self.max_tokens = max_tokens
        self.max_queue = max_queue
        self._q: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._current: Optional[Job] = None
        self._closing = threading.Event()
        self._token_bytes = self.tokenizer.token_bytes_list()
        self._thread = threading.Thread(target=self._run, name="cllm-serve-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ queue
    @property
    def queue_length(self) -> int:
        """Jobs waiting for the model."""
        return self._waiting

    @property
    def in_flight(self) -> int:
        """Jobs being generated (0 or 1)."""
        return 1 if self._current is not None else 0

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises :class:`QueueFull` when ``max_queue`` jobs wait."""
        if self._closing.is_set():
            raise QueueFull("the server is shutting down")
        with self._lock:
            if self._waiting >= self.max_queue:
                raise QueueFull(f"{self._waiting} requests are waiting (--max-queue {self.max_queue})")
            self._waiting += 1
        try:
            job.loop = asyncio.get_running_loop()
        except RuntimeError:
            job.loop = None
        self._q.put(job)

    def close(self, wait: float = 5.0) -> None:
        """Stop: queued jobs end with ``finish="shutdown"``, the running one
        after its current token; waits up to ``wait`` seconds for the worker."""
        self._closing.set()
        cur = self._current
        if cur is not None:
            cur.cancel.set()
        self._q.put(None)
        self._thread.join(wait)

    # ------------------------------------------------------------ prompts
    def cap(self, requested: Optional[int]) -> int:
        """Tokens to generate: the request's, at most the server's cap (and the context)."""
        n = self.ctx if requested is None or requested < 0 else int(requested)
        if self.max_tokens is not None:
            n = min(n, self.max_tokens)
        return max(0, min(n, self.ctx))

    def prompt(self, prompt: Any, heal: bool = True) -> Tuple[List[int], Optional[List[int]], bytes]:
        """(ids, allowed first tokens, healed bytes) of a text or id prompt;
        :class:`PromptTooLong` when it does not fit the context."""
        raw = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if len(raw) >= self.ctx:
            raise PromptTooLong(len(raw), self.ctx)
        return self.model._prompt(prompt if isinstance(prompt, str) else raw, heal)

    # ------------------------------------------------------------ worker
    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                break
            with self._lock:
                self._waiting -= 1
            if self._closing.is_set():
                job.finished = time.perf_counter()
                job.emit(Event("done", finish="shutdown"))
                continue
            if job.cancel.is_set():
                job.finished = time.perf_counter()
                job.emit(Event("done", finish="cancelled"))
                continue
            self._current = job
            try:
                self._generate(job)
            except Exception as e:   # a bad job never kills the worker
                log.exception("generation failed")
                job.finished = time.perf_counter()
                job.emit(Event("done", finish="error", error=str(e)))
            finally:
                self._current = None
        # drain what is left after a shutdown
        while True:
            try:
                job = self._q.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.emit(Event("done", finish="shutdown"))

    def _limits(self, job: Job, text: str) -> str:
        """"" to go on, else the finish reason."""
        if job.cancel.is_set():
            return "shutdown" if self._closing.is_set() else "cancelled"
        t = job.sampling.t_max_predict_ms
        if t is not None and t > 0 and job.first_token and "\n" in text:
            if 1000.0 * (time.perf_counter() - job.first_token) > t:
                return "length"
        return ""

    def _generate(self, job: Job) -> None:
        s = job.sampling
        check_sampling(s.temperature, s.top_k, s.top_p, s.max_tokens)
        job.started = time.perf_counter()
        eot = self.tokenizer.eot_id if s.stop_at_eot else -1
        ts = TextStream(self._token_bytes, job.skip, list(s.stop))
        finish, text_so_far = "", ""
        if s.max_tokens == 0:
            finish = "length"
        elif s.logprobs is None:
            dec = self.model._gen_decoder()
            gen = dec.generate(job.ids, s.max_tokens, s.temperature, s.top_k, s.top_p, seed_state(s.seed), eot,
                               job.allowed, job.ban)
            for tok in gen:
                finish, text_so_far = self._push(job, ts, tok, None, None, text_so_far)
                if finish:
                    gen.close()
                    break
        else:
            finish, text_so_far = self._generate_with_logprobs(job, ts, eot)
        if not finish:
            finish = "length" if job.generated >= s.max_tokens else "stop"
        tail = ts.flush() if finish in ("stop", "length") and not ts.stopped else ""
        if tail:
            job.emit(Event("token", text=tail))
        job.finished = time.perf_counter()
        stop_word = ""
        if ts.stopped:
            stop_word = next((w for w in s.stop if w), "")
        job.emit(Event("done", finish=finish, stop_word=stop_word))

    def _push(self, job: Job, ts: TextStream, tok: int, lp: Optional[float], top: Optional[Dict[str, float]],
              text_so_far: str) -> Tuple[str, str]:
        if not job.first_token:
            job.first_token = time.perf_counter()
        job.generated += 1
        piece = ts.push(tok)
        job.emit(Event("token", text=piece, token=tok, logprob=lp, top=top))
        text_so_far += piece
        if ts.stopped:
            return "stop", text_so_far
        return self._limits(job, text_so_far), text_so_far

    def _generate_with_logprobs(self, job: Job, ts: TextStream, eot: int) -> Tuple[str, str]:
        """The per-token path that also reports log-probabilities: logits come
        back to Python each step and are sampled with numpy."""
        import numpy as np
        s = job.sampling
        dec = self.model._gen_decoder()
        V = dec.sample_limit
        logits = np.empty(self.model.config.vocab_size, dtype=np.float32)
        ids = job.ids
        if len(ids) > 1:
            dec.prime(ids[:-1])      # the prompt cache: only what the cache lacks runs
        else:
            dec.reset()
        dec.step(ids[-1], logits)
        pos = len(ids)
        rng = np.random.default_rng(s.seed if s.seed is not None else random.getrandbits(63))
        allowed = np.asarray(job.allowed, dtype=np.int64) if job.allowed else None
        text = ""
        for n in range(s.max_tokens):
            logp = log_softmax(logits[:V])
            cand = logp.copy()
            if allowed is not None:
                mask = np.full(V, -np.inf)
                mask[allowed[allowed < V]] = 0.0
                cand = cand + mask
            if job.ban:
                cand[[i for i in job.ban if i < V]] = -np.inf
            tok = _sample(cand, s, rng)
            if tok == eot:
                return "stop", text
            k = int(s.logprobs or 0)
            top = None
            if k > 0:
                best = np.argsort(-logp)[:k]
                top = {self.tokenizer.decode([int(i)]): float(logp[i]) for i in best}
            allowed = None
            finish, text = self._push(job, ts, tok, float(logp[tok]), top, text)
            if finish:
                return finish, text
            if n + 1 < s.max_tokens:
                if pos >= self.model.config.context_len:
                    return "length", text
                dec.step(tok, logits)
                pos += 1
        return "", text


def _sample(logp: Any, s: Sampling, rng: Any) -> int:
    """A token from log-probabilities ``logp`` under temperature, top-k and top-p."""
    import numpy as np
    if s.temperature <= 0 or s.top_k == 1:
        return int(np.argmax(logp))
    z = logp / s.temperature
    order = np.argsort(-z)
    if s.top_k:
        order = order[:int(s.top_k)]
    z = z[order]
    p = np.exp(z - z[0])
    p /= p.sum()
    if s.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), s.top_p) + 1)
        p = p[:keep] / p[:keep].sum()
        order = order[:keep]
    return int(order[rng.choice(len(p), p=p)]) if math.isfinite(float(p.sum())) else int(order[0])
