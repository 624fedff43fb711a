"""Generation on the C decoder (``csrc/model/decode.c``).

:class:`Decoder` wraps one ``cllm_decoder``: weights in one storage dtype,
a KV cache, and one sphere-pool run per token. The per-token loop here only
calls ``cllm_decoder_next`` (sample from the current logits, then run the
next step) and yields the id: no Python work per layer or per op. Prompts
run as a batched prefill (GEMMs per layer over chunks of rows), and the
decoder is a prompt cache: :meth:`Decoder.prime` keeps the longest common
prefix of the ids it holds and the new prompt and runs only the rest (an
editor sending the same file with a few more characters).

:class:`GenerationMixin` is the text side shared by :class:`cllm.Model` and
:class:`cllm.InferenceModel`: prompts, token healing, stop strings and
:class:`TextStream`, the incremental detokenizer (O(new bytes) per token,
emits only complete UTF-8).

This module imports neither numpy nor the trainer (``cllm generate`` starts
fast); :meth:`GenerationMixin.logits` imports numpy when called.
"""
from __future__ import annotations

import codecs
import logging
import os
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

from .._native import check, ffi, lib
from ..errors import ConfigError, ConfigTypeError

log = logging.getLogger(__name__)

__all__ = ["DTYPES", "Decoder", "GenerationMixin", "TextStream", "seed_state", "check_sampling", "log_softmax"]

#: storage formats of the decoder's weights (``--dtype`` / ``dtype=``)
DTYPES = {"fp32": lib.CLLM_DTYPE_F32, "bf16": lib.CLLM_DTYPE_BF16, "int8": lib.CLLM_DTYPE_INT8}

Prompt = Union[str, bytes, Sequence[int]]


def seed_state(seed: Optional[int]) -> Any:
    """A C ``uint64_t`` RNG state from ``seed`` (random when None)."""
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise ConfigTypeError(f"seed must be an integer or None, got {seed!r}")
    st = ffi.new("uint64_t *")
    st[0] = int(seed) & 0xFFFFFFFFFFFFFFFF
    return st


def _is_int(v: Any) -> bool:
    return not isinstance(v, bool) and hasattr(v, "__index__")


def check_sampling(temperature: float, top_k: Optional[int], top_p: float, max_new_tokens: int = 0) -> None:
    """Raise :class:`ConfigError` for out-of-range sampling settings."""
    try:
        t = float(temperature)
        p = float(top_p)
    except (TypeError, ValueError):
        raise ConfigTypeError(f"temperature and top_p must be numbers, got {temperature!r}, {top_p!r}") from None
    if not (t >= 0.0 and t < float("inf")):
        raise ConfigError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise ConfigError(f"top_k must be a non-negative integer, got {top_k!r}")
    if not (0.0 < p <= 1.0):
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")


def log_softmax(logits: Any) -> Any:
    """log p of each id for a row of logits, in float64 (numpy)."""
    import numpy as np
    z = np.asarray(logits, dtype=np.float64)
    m = float(z.max())
    return z - (m + float(np.log(np.sum(np.exp(z - m)))))


class Decoder:
    """One ``cllm_decoder`` (owned, or borrowed from a training model)."""

    def __init__(self, handle: Any, vocab_size: int, context_len: int, keep: Any = None) -> None:
        self._h = handle
        self._keep = keep           # whatever owns borrowed weights (mmap, model)
        self.vocab_size = int(vocab_size)
        self.context_len = int(context_len)
        self.sample_limit = self.vocab_size
        self._out = ffi.new("int32_t *")

    @classmethod
    def create(cls, config: Any, dtype: str = "fp32", threads: int = 0) -> "Decoder":
        """A new decoder for ``config`` (a :class:`~cllm.ModelConfig`) with no weights yet."""
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        if not _is_int(threads) or threads < 0:
            raise ConfigError(f"threads must be a non-negative integer (0 = all CPUs), got {threads!r}")
        c = ffi.new("cllm_config *")
        c.vocab_size, c.context_len, c.num_layers = config.vocab_size, config.context_len, config.num_layers
        c.num_heads, c.embed_dim, c.threads = config.num_heads, config.embed_dim, int(threads)
        c.n_kv_heads = config.kv_heads
        c.linear_weights = int(config.model_type == "gpt_bigcode")   # nn.Linear (out, in) matrices
        h = ffi.new("cllm_decoder **")
        check(lib.cllm_decoder_new(c, DTYPES[dtype], h), "cannot create the decoder")
        return cls(ffi.gc(h[0], lib.cllm_decoder_free), config.vocab_size, config.context_len)

    @property
    def kv_bytes(self) -> int:
        """Bytes of the KV cache (every layer and position)."""
        n = ffi.new("size_t *")
        check(lib.cllm_decoder_kv_bytes(self._h, n))
        return int(n[0])

    @property
    def threads(self) -> int:
        """Spheres (threads) the decoder runs on."""
        n = ffi.new("int *")
        check(lib.cllm_decoder_threads(self._h, n))
        return int(n[0])

    def tensors(self) -> List[Tuple[str, Tuple[int, ...], int, int]]:
        """(HF name, HF shape, rows, cols) of every tensor; rows = cols = 0 for
        tensors kept in FP32 (LayerNorms, biases, wpe)."""
        n = ffi.new("int *")
        check(lib.cllm_decoder_num_tensors(self._h, n))
        info, r, c = ffi.new("cllm_tensor_info *"), ffi.new("int *"), ffi.new("int *")
        out = []
        for i in range(n[0]):
            check(lib.cllm_decoder_tensor_info(self._h, i, info, r, c))
            out.append((ffi.string(info.name).decode(), tuple(info.shape[k] for k in range(info.ndim)),
                        int(r[0]), int(c[0])))
        return out

    # ------------------------------------------------------------ steps
    def _ids(self, ids: Sequence[int]) -> Any:
        return ffi.new("int32_t[]", [int(i) for i in ids])

    def feed(self, ids: Sequence[int]) -> None:
        """Reset the KV cache and run ``ids`` (1..context_len tokens) as a
        batched prefill."""
        check(lib.cllm_decoder_feed(self._h, self._ids(ids), len(ids)), "decode")

    def extend(self, ids: Sequence[int], out: Any = None) -> None:
        """Append ``ids`` to the cache as it is (batched prefill); copy the
        logits after the last one into ``out`` (float32, vocab_size) when given."""
        ptr = ffi.cast("float *", ffi.from_buffer(out)) if out is not None else ffi.NULL
        check(lib.cllm_decoder_extend(self._h, self._ids(ids), len(ids), ptr), "decode")

    def prime(self, ids: Sequence[int]) -> int:
        """Make the cache hold exactly ``ids`` (1..context_len tokens) with
        their next-token logits current, reusing the longest common prefix of
        the cached ids and ``ids``; returns how many positions were reused.
        The cache forgets its ids when the weights change."""
        reused = ffi.new("int *")
        check(lib.cllm_decoder_prime(self._h, self._ids(ids), len(ids), reused), "decode")
        log.debug("prompt cache: reused %d of %d tokens", reused[0], len(ids))
        return int(reused[0])

    @property
    def prefill_chunk(self) -> int:
        """Rows per batched prefill pass (0: every token through the step)."""
        n = ffi.new("int *")
        check(lib.cllm_decoder_prefill_chunk(self._h, n))
        return int(n[0])

    @prefill_chunk.setter
    def prefill_chunk(self, rows: int) -> None:
        if not _is_int(rows) or rows < 0:
            raise ConfigError(f"prefill_chunk must be a non-negative integer, got {rows!r}")
        check(lib.cllm_decoder_set_prefill_chunk(self._h, int(rows)))

    @property
    def pos(self) -> int:
        """Tokens in the KV cache."""
        n = ffi.new("int *")
        check(lib.cllm_decoder_pos(self._h, n))
        return int(n[0])

    def step(self, token: int, out: Any = None) -> None:
        """Append ``token``; copy the next-token logits into ``out`` (a float32
        buffer of vocab_size) when given."""
        ptr = ffi.cast("float *", ffi.from_buffer(out)) if out is not None else ffi.NULL
        check(lib.cllm_decoder_step(self._h, int(token), ptr), "decode")

    def reset(self) -> None:
        """Empty the KV cache."""
        check(lib.cllm_decoder_reset(self._h))

    def nll(self, ids: Sequence[int]) -> float:
        """Sum of -log p(ids[t+1] | ids[:t+1]) in nats (2..context_len ids)."""
        s = ffi.new("double *")
        check(lib.cllm_decoder_nll(self._h, self._ids(ids), len(ids), s), "nll")
        return float(s[0])

    def continuation_nll(self, ids: Sequence[int], target: Sequence[int]) -> float:
        """Sum of -log p(target[k] | ids + target[:k]) in nats: ``ids`` through
        the prompt cache (:meth:`prime`), then ``target`` token by token. For a
        short continuation of a long prompt (an infill's middle) this costs
        the new tokens only, where :meth:`nll` of both would run the whole
        prompt with the LM head at every position, twice."""
        import numpy as np
        target = [int(t) for t in target]
        if not target:
            return 0.0
        if not ids or len(ids) + len(target) - 1 > self.context_len:
            raise ConfigError(f"continuation_nll: {len(ids)} + {len(target)} tokens do not fit the context "
                              f"length {self.context_len} (or the prompt is empty)")
        out = np.empty(self.vocab_size, dtype=np.float32)
        self.prime(ids)
        check(lib.cllm_decoder_logits(self._h, ffi.cast("float *", ffi.from_buffer(out))))
        total = 0.0
        for k, t in enumerate(target):
            total -= float(log_softmax(out)[t])
            if k + 1 < len(target):
                self.step(t, out)
        return total

    def next_token(self, temperature: float, top_k: Optional[int], top_p: float, rng: Any,
                   allowed: Any = None, stop_id: int = -1, advance: bool = True) -> int:
        """Sample from the current logits; then step on the token when
        ``advance`` (unless it is ``stop_id`` or the cache is full)."""
        al, nal = (allowed, len(allowed)) if allowed is not None else (ffi.NULL, 0)
        check(lib.cllm_decoder_next(self._h, float(temperature), int(top_k or 0), float(top_p), al, nal,
                                    int(stop_id), int(bool(advance)), rng, self._out), "sample")
        return int(self._out[0])

    def ban(self, ids: Sequence[int]) -> None:
        """Never sample ``ids`` (at most ``CLLM_DECODER_MAX_BAN``; empty clears)
        until the next call; the logits are left as they are."""
        ids = [int(i) for i in ids]
        arr = ffi.new("int32_t[]", ids) if ids else ffi.NULL
        check(lib.cllm_decoder_ban(self._h, arr, len(ids)), "decode")

    def generate(self, ids: Sequence[int], max_new_tokens: int, temperature: float, top_k: Optional[int],
                 top_p: float, rng: Any, stop_id: int = -1, allowed: Optional[Sequence[int]] = None,
                 ban: Sequence[int] = ()) -> Iterator[int]:
        """Yield up to ``max_new_tokens`` sampled ids after ``ids`` (stops
        before ``stop_id``). ``allowed`` constrains the FIRST token; ``ban``
        ids are never sampled (while this generator runs). The prompt reuses
        what the cache already holds of it (:meth:`prime`). When the cache
        fills, the most recent half of the context is re-fed."""
        if ban:
            self.ban(ban)
            try:
                yield from self.generate(ids, max_new_tokens, temperature, top_k, top_p, rng, stop_id, allowed)
            finally:
                self.ban(())
            return
        P = self.context_len
        ctx = [int(i) for i in ids][-P:]
        self.prime(ctx)
        pos = len(ctx)
        al = ffi.new("int32_t[]", list(allowed)) if allowed else None
        for n in range(int(max_new_tokens)):
            advance = n + 1 < max_new_tokens
            tok = self.next_token(temperature, top_k, top_p, rng, al, stop_id, advance)
            if tok == stop_id:
                return
            yield tok
            al = None
            if advance:
                ctx.append(tok)
                if pos < P:
                    pos += 1
                else:  # the cache was full: C did not step; keep the recent half
                    ctx = ctx[-(P // 2 or 1):]
                    self.feed(ctx)
                    pos = len(ctx)


class TextStream:
    """Incremental detokenization: :meth:`push` takes one token id and returns
    the new text, only complete UTF-8 characters (a partial sequence waits for
    the next token), in O(bytes of that token). ``skip`` bytes at the start
    are dropped (the prompt's tail re-emitted by token healing). With ``stops``
    the text is cut before the first stop string and :attr:`stopped` set; up
    to ``max(len(stop)) - 1`` characters are held back until they cannot
    start a stop string."""

    def __init__(self, token_bytes: Sequence[bytes], skip: bytes = b"", stops: Sequence[str] = ()) -> None:
        self._tok = token_bytes
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._skip = skip
        self._stops = [s for s in stops if s]
        self._keep = max((len(s) for s in self._stops), default=1) - 1
        self._hold = ""
        self.stopped = False

    def _emit(self, text: str, final: bool) -> str:
        if not self._stops:
            return text
        text = self._hold + text
        cut = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._hold = ""
            return text[:cut]
        n = len(text) if final else max(0, len(text) - self._keep)
        self._hold = text[n:]
        return text[:n]

    def push(self, token: int) -> str:
        """New text after ``token`` ("" once stopped)."""
        if self.stopped:
            return ""
        b = self._tok[token]
        if self._skip:
            k = min(len(self._skip), len(b))
            b, self._skip = b[k:], self._skip[k:]
        return self._emit(self._dec.decode(b), False)

    def flush(self) -> str:
        """The rest (an incomplete UTF-8 tail becomes U+FFFD)."""
        if self.stopped:
            return ""
        return self._emit(self._dec.decode(b"", final=True), True)


class GenerationMixin:
    """Text generation for a class with ``config``, ``tokenizer`` and a
    ``_decoder()`` method returning a :class:`Decoder`."""

    config: Any
    tokenizer: Any
    #: tokens generated by the last :meth:`stream` / :meth:`generate` call
    last_generated: int = 0
    #: the order of infill prompts (:data:`cllm.data.fim.INFILL_ORDERS`): "spm", whose
    #: prompts the cache reuses while the user types, unless the model was trained
    #: without SPM examples (set when a checkpoint is loaded)
    infill_order: str = "spm"

    def _decoder(self) -> Decoder:  # pragma: no cover - provided by the class
        raise NotImplementedError

    def _gen_decoder(self) -> Decoder:
        """The decoder, never sampling ids the tokenizer cannot spell."""
        dec = self._decoder()
        n = min(len(self.tokenizer), self.config.vocab_size)
        if dec.sample_limit != n:
            check(lib.cllm_decoder_limit_vocab(dec._h, n))
            dec.sample_limit = n
        return dec

    # ----------------------------------------------------------- tokens
    def tokenize(self, text: Union[str, bytes]) -> List[int]:
        """Token ids of ``text``."""
        return self.tokenizer.encode(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of token ids."""
        return self.tokenizer.decode([int(i) for i in ids])

    def _prompt(self, prompt: Prompt, heal: bool) -> Tuple[List[int], Optional[List[int]], bytes]:
        """(context ids, allowed first tokens or None, healed prefix bytes).

        Token healing (text prompts only): the prompt's last token is taken
        back and the first generated token must start with its bytes, so a
        prompt ending mid-token (``"def "``, ``"x = re.comp"``) continues with
        the tokens the model saw in training instead of the fragment."""
        V = self.config.vocab_size
        if isinstance(prompt, (str, bytes, bytearray)):
            ids = self.tokenize(prompt)
        else:
            if isinstance(prompt, (int, float)) or not hasattr(prompt, "__iter__"):
                raise ConfigTypeError(f"prompt must be text or a sequence of token ids, got {type(prompt).__name__}")
            if getattr(prompt, "ndim", 1) != 1:
                raise ConfigError(f"token ids must be 1-D, got shape {getattr(prompt, 'shape', '?')}")
            ids = []
            for i in prompt:
                if hasattr(i, "__len__"):
                    raise ConfigError("token ids must be a 1-D sequence of integers (got a nested sequence)")
                if not _is_int(i):
                    raise ConfigTypeError(f"token ids must be integers, got {i!r}")
                if not 0 <= int(i) < V:
                    raise ConfigError(f"token id {int(i)} out of range [0, {V})")
                ids.append(int(i))
            heal = False
        allowed, prefix = None, b""
        special = set(self.tokenizer.special_ids()) if heal and ids else set()
        if heal and ids and ids[-1] not in special:
            toks = self.tokenizer.token_bytes_list()
            prefix = toks[ids[-1]]
            allowed = [i for i, b in enumerate(toks) if i < V and b.startswith(prefix) and i not in special]
            ids = ids[:-1]
        if not ids:
            eot = self.tokenizer.eot_id
            if eot < 0:
                raise ConfigError("empty prompt and the tokenizer has no <|endoftext|> token to start from")
            ids = [eot]
        P = self.config.context_len
        if len(ids) > P:
            log.warning("the prompt is %d tokens long, more than the context of %d: its first %d tokens are "
                        "dropped", len(ids), P, len(ids) - P)
        return ids[-P:], allowed, prefix

    # ------------------------------------------------------- generation
    def generate_ids(self, prompt: Prompt, max_new_tokens: int = 64, temperature: float = 0.8,
                     top_k: Optional[int] = 40, top_p: float = 1.0, seed: Optional[int] = None,
                     stop_at_eot: bool = True, heal: bool = True, ban: Sequence[int] = ()) -> Iterator[int]:
        """Yield sampled token ids one by one (KV cache; the whole step, the
        sampling and the next step run in C per token).

        A text prompt is token-healed when ``heal`` (see :meth:`stream`): the
        first id then re-spells the prompt's last bytes. Ids prompts are used
        as given. ``ban``: ids never sampled (the infill methods ban the
        fill-in-the-middle control tokens, which cannot occur in a middle)."""
        check_sampling(temperature, top_k, top_p, max_new_tokens)
        ids, allowed, _ = self._prompt(prompt, heal)
        stop = self.tokenizer.eot_id if stop_at_eot else -1
        yield from self._gen_decoder().generate(ids, int(max_new_tokens), temperature, top_k, top_p,
                                            seed_state(seed), stop, allowed, ban)

    def stream(self, prompt: Prompt, max_new_tokens: int = 64, temperature: float = 0.8,
               top_k: Optional[int] = 40, top_p: float = 1.0, seed: Optional[int] = None,
               stop: Sequence[str] = (), stop_at_eot: bool = True, heal: bool = True,
               ban: Sequence[int] = ()) -> Iterator[str]:
        """Yield the completion as text pieces (complete UTF-8 only), ending
        before the first of the ``stop`` strings. With token healing the text
        continues the prompt exactly: ``prompt + "".join(stream(prompt))``.
        ``ban``: ids never sampled (as :meth:`generate_ids`)."""
        if isinstance(stop, str):
            stop = [stop]
        ids, allowed, prefix = self._prompt(prompt, heal)
        check_sampling(temperature, top_k, top_p, max_new_tokens)
        ts = TextStream(self.tokenizer.token_bytes_list(), prefix, stop)
        gen = self._gen_decoder().generate(ids, int(max_new_tokens), temperature, top_k, top_p, seed_state(seed),
                                       self.tokenizer.eot_id if stop_at_eot else -1, allowed, ban)
        self.last_generated = 0
        for tok in gen:
            self.last_generated += 1
            piece = ts.push(tok)
            if piece:
                yield piece
            if ts.stopped:
                gen.close()
                return
        tail = ts.flush()
        if tail:
            yield tail

    def generate(self, prompt: Prompt, max_new_tokens: int = 64, temperature: float = 0.8,
                 top_k: Optional[int] = 40, top_p: float = 1.0, seed: Optional[int] = None,
                 stop_at_eot: bool = True, stop: Sequence[str] = (), heal: bool = True,
                 return_full_text: bool = False) -> str:
        """Complete ``prompt`` (see :meth:`stream`). Returns only the generated
        continuation, so ``prompt + model.generate(prompt)`` is the full text;
        ``return_full_text=True`` returns that whole text (as Hugging Face
        pipelines do by default; the prompt decoded when it is token ids)."""
        out = "".join(self.stream(prompt, max_new_tokens, temperature, top_k, top_p, seed, stop, stop_at_eot, heal))
        if not return_full_text:
            return out
        if isinstance(prompt, bytes):
            return prompt.decode("utf-8", "replace") + out
        return (prompt if isinstance(prompt, str) else self.detokenize(prompt)) + out

    def infill_stream(self, prefix: str, suffix: str, max_new_tokens: int = 64, temperature: float = 0.8,
                      top_k: Optional[int] = 40, top_p: float = 1.0, seed: Optional[int] = None,
                      stop: Sequence[str] = (), order: Optional[str] = None) -> Iterator[str]:
        """Yield the text that belongs between ``prefix`` and ``suffix``
        (fill-in-the-middle: the code before and after an editor's cursor),
        ending at ``<|endoftext|>``, a ``stop`` string or ``max_new_tokens``.

        ``order`` (default :attr:`infill_order`): ``"spm"`` builds the prompt
        ``<fim_prefix><fim_suffix>suffix<fim_middle>prefix``, so a request that
        only adds text at the cursor reuses the cached prompt up to there;
        ``"psm"`` builds ``<fim_prefix>prefix<fim_suffix>suffix<fim_middle>``.
        The fill-in-the-middle control tokens are never sampled (they cannot
        occur in a middle; a small model trained on both orders otherwise
        sometimes opens an SPM middle with ``<fim_middle>``).
        When the prompt does not fit the context (less room for the answer)
        the prefix is trimmed from the left and the suffix from the right,
        3:1 (:func:`cllm.data.fim.infill_ids`). A model whose tokenizer has no
        FIM tokens raises :class:`~cllm.data.fim.NoInfill` (a ``ConfigError``)."""
        from ..data.fim import infill_ban, infill_ids
        for name, v in (("prefix", prefix), ("suffix", suffix)):
            if not isinstance(v, str):
                raise ConfigTypeError(f"{name} must be a string, got {type(v).__name__}")
        check_sampling(temperature, top_k, top_p, max_new_tokens)
        P = self.config.context_len
        ids = infill_ids(self.tokenizer, prefix, suffix, P, int(max_new_tokens),
                         order=self.infill_order if order is None else order)
        yield from self.stream(ids, max_new_tokens, temperature, top_k, top_p, seed, stop, True, False,
                               ban=infill_ban(self.tokenizer))

    def infill(self, prefix: str, suffix: str, max_new_tokens: int = 64, temperature: float = 0.8,
               top_k: Optional[int] = 40, top_p: float = 1.0, seed: Optional[int] = None,
               stop: Sequence[str] = (), order: Optional[str] = None) -> str:
        """The middle between ``prefix`` and ``suffix`` (see :meth:`infill_stream`):
        ``prefix + model.infill(prefix, suffix) + suffix`` is the completed text."""
        return "".join(self.infill_stream(prefix, suffix, max_new_tokens, temperature, top_k, top_p, seed, stop,
                                          order))

    def predict_next_token(self, prompt: Prompt, temperature: float = 1.0, top_k: Optional[int] = None,
                           top_p: float = 1.0, seed: Optional[int] = None) -> int:
        """Sample the next token id after ``prompt`` (text or ids, no healing);
        temperature 0 returns the argmax of the last logits row."""
        check_sampling(temperature, top_k, top_p)
        ids, _, _ = self._prompt(prompt, heal=False)
        dec = self._gen_decoder()
        dec.prime(ids)
        return dec.next_token(temperature, top_k, top_p, seed_state(seed), advance=False)

    def decode_logits(self, ids: Prompt) -> Any:
        """Next-token logits at every position of ``ids`` through the decoder
        (its dtype), shape (T, V) float32; T <= context_len."""
        import numpy as np
        raw = self.tokenize(ids) if isinstance(ids, (str, bytes, bytearray)) else list(ids)
        if not raw:
            raise ConfigError("logits: empty prompt")
        if len(raw) > self.config.context_len:
            raise ConfigError(f"logits: {len(raw)} tokens exceed the context length {self.config.context_len}")
        seq, _, _ = self._prompt(raw, heal=False)
        dec = self._decoder()
        dec.reset()
        out = np.empty((len(seq), self.config.vocab_size), dtype=np.float32)
        for t, tok in enumerate(seq):
            dec.step(tok, out[t])
        return out
