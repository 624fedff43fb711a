"""Evaluation: loss and bits per byte of a checkpoint (any dtype) on text.

The text files under a path (or given strings) are tokenized like training
data (each document followed by ``<|endoftext|>``) into one stream, cut into
windows of ``context_len`` tokens that overlap by one token, so every token
but the first is predicted exactly once, from the tokens before it in its
window (the context restarts at each window). Each window runs in C through
the decoder (``cllm_decoder_nll``: the batched prefill, GEMMs per layer over
chunks of the window with the LM head for every position), so fp32, bf16
and int8 are measured by the same code.

  loss           = total negative log-likelihood (nats) / predicted tokens
  bits_per_byte  = total NLL / ln 2 / UTF-8 bytes of the documents
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import ConfigError

__all__ = ["evaluate", "evaluate_fim", "fim_cases", "FIM_MODES"]


def _documents(source: Any, exts: Optional[Sequence[str]], max_bytes: Optional[int]) -> List[bytes]:
    from ..data.corpus import iter_documents
    if isinstance(source, (bytes, bytearray)):
        docs = [bytes(source)]
    elif isinstance(source, str) and not os.path.exists(source):
        raise ConfigError(f"evaluate: {source}: no such file or directory")
    elif isinstance(source, (str, os.PathLike)):
        docs = [d.data for d in iter_documents(os.fspath(source), exts)]
    else:
        docs = [d.encode("utf-8") if isinstance(d, str) else bytes(d) for d in source]
    if max_bytes is not None:
        out, total = [], 0
        for d in docs:
            if total >= max_bytes:
                break
            out.append(d[:max_bytes - total])
            total += len(out[-1])
        docs = out
    if not any(docs):
        raise ConfigError("evaluate: no text to evaluate")
    return docs


def evaluate(model: Union[str, Any], source: Any, *, dtype: Optional[str] = None, threads: int = 0,
             exts: Optional[Sequence[str]] = None, max_bytes: Optional[int] = None,
             progress: bool = False) -> Dict[str, float]:
    """Loss and bits per byte of ``model`` (a model object or a checkpoint
    path, loaded with ``dtype``) on ``source``: a file or directory path,
    bytes, or a list of texts. Returns ``{"loss", "bits_per_byte", "tokens",
    "bytes", "seconds"}``."""
    if isinstance(model, (str, os.PathLike)):
        from .engine import InferenceModel
        model = InferenceModel.load(os.fspath(model), dtype=dtype, threads=threads)
    docs = _documents(source, exts, max_bytes)
    tok = model.tokenizer
    stream: List[int] = []
    for d in docs:
        stream.extend(tok.encode(d))
        if tok.eot_id >= 0:
            stream.append(tok.eot_id)
    nbytes = sum(len(d) for d in docs)
    P = model.config.context_len
    if P < 2:
        raise ConfigError("evaluate: context_len must be >= 2")
    starts = list(range(0, max(1, len(stream) - 1), P - 1))
    dec = model._decoder()
    t0 = time.perf_counter()
    nll, n = 0.0, 0
    from ..progress import progress_bar
    bar = progress_bar(progress, total=max(0, len(stream) - 1), unit="tok", desc="eval")
    for s in starts:
        w = stream[s:s + P]
        if len(w) < 2:
            break
        nll += dec.nll(w)
        n += len(w) - 1
        bar.update(len(w) - 1)
    bar.close()
    if n == 0:
        raise ConfigError("evaluate: the text is shorter than two tokens")
    return {"loss": nll / n, "bits_per_byte": nll / math.log(2) / nbytes, "tokens": float(n),
            "bytes": float(nbytes), "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------ infilling
FIM_MODES = ("line", "span")


def fim_cases(docs: Sequence[bytes], mode: str, n: int, seed: int = 0,
              max_middle_chars: int = 200) -> List[Tuple[str, str, str]]:
    """``n`` (prefix, middle, suffix) cases cut from ``docs``, deterministic for
    ``seed``. ``"line"``: one whole non-blank line is the middle (bigcode's
    single-line infilling: the prefix ends with the previous line's newline,
    the suffix starts with this line's); ``"span"``: a random span of 1 to
    ``max_middle_chars`` characters."""
    import random
    if mode not in FIM_MODES:
        raise ConfigError(f"fim mode must be one of {', '.join(FIM_MODES)}; got {mode!r}")
    texts = [d.decode("utf-8", "replace") for d in docs if d]
    rng = random.Random(f"cllm-fim-eval\0{seed}\0{mode}")
    cases: List[Tuple[str, str, str]] = []
    if mode == "line":
        pool = []
        for ti, t in enumerate(texts):
            pos = 0
            for line in t.split("\n"):
                if len(line.strip()) >= 4:
                    pool.append((ti, pos, pos + len(line)))
                pos += len(line) + 1
        rng.shuffle(pool)
        for ti, a, b in pool[:n]:
            t = texts[ti]
            cases.append((t[:a], t[a:b], t[b:]))
    else:
        for _ in range(n):
            t = rng.choice(texts)
            if len(t) < 2:
                continue
            a = rng.randrange(len(t) - 1)
            b = min(len(t), a + rng.randint(1, max_middle_chars))
            cases.append((t[:a], t[a:b], t[b:]))
    return cases


def evaluate_fim(model: Union[str, Any], source: Any, *, mode: str = "line", samples: int = 200, seed: int = 0,
                 dtype: Optional[str] = None, threads: int = 0, exts: Optional[Sequence[str]] = None,
                 max_bytes: Optional[int] = None, max_new_tokens: int = 48, use_suffix: bool = True,
                 order: Optional[str] = None, progress: bool = False) -> Dict[str, float]:
    """Infilling quality of ``model`` on ``source`` (as :func:`evaluate`).

    ``samples`` cases from :func:`fim_cases`; each middle is generated
    greedily (a line case stops at the line's end) and compared with the
    original: ``exact_match`` is the share of cases whose generated middle
    equals it (surrounding white space ignored). For a model with FIM tokens
    and ``use_suffix`` the prompt is the infill prompt (in ``order``, default
    the model's :attr:`infill_order`); otherwise the model
    sees the prefix only (how a left-to-right model completes the same
    cursor). ``middle_bits_per_byte`` (infill prompts only) is the negative
    log-likelihood of the original middle and the closing ``<|endoftext|>``
    given the prompt, per UTF-8 byte of the middle."""
    from ..data.fim import fim_token_ids, infill_ids
    from ..progress import progress_bar
    if isinstance(model, (str, os.PathLike)):
        from .engine import InferenceModel
        model = InferenceModel.load(os.fspath(model), dtype=dtype, threads=threads)
    cases = fim_cases(_documents(source, exts, max_bytes), mode, samples, seed)
    if not cases:
        raise ConfigError("evaluate_fim: no infilling cases in the text")
    tok = model.tokenizer
    infill = use_suffix and fim_token_ids(tok) is not None
    P = model.config.context_len
    stop = ["\n"] if mode == "line" else []
    t0 = time.perf_counter()
    hits, nll, nbytes = 0, 0.0, 0
    dec = model._decoder()
    bar = progress_bar(progress, total=len(cases), desc="fim eval", unit="case")
    for pre, mid, suf in cases:
        if infill:
            ids = infill_ids(tok, pre, suf, P, min(max_new_tokens, P // 4),
                             order=getattr(model, "infill_order", "spm") if order is None else order)
            out = "".join(model.stream(ids, max_new_tokens, 0.0, None, 1.0, 0, stop, True, False))
            target = tok.encode(mid) + [tok.eot_id]
            if len(ids) + len(target) <= P:
                nll += dec.nll(ids + target) - (dec.nll(ids) if len(ids) > 1 else 0.0)
                nbytes += len(mid.encode("utf-8"))
        else:   # the prefix's last tokens that leave room for the answer, as a left-to-right prompt
            ids = tok.encode(pre)[-(P - min(max_new_tokens, P // 4)):] or [tok.eot_id]
            out = "".join(model.stream(ids, max_new_tokens, 0.0, None, 1.0, 0, stop, True, False))
        hits += out.strip() == mid.strip()
        bar.update(1)
    bar.close()
    res = {"exact_match": hits / len(cases), "cases": float(len(cases)), "seconds": time.perf_counter() - t0,
           "infill": float(infill)}
    if nbytes:
        res["middle_bits_per_byte"] = nll / math.log(2) / nbytes
    return res
