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
from typing import Any, Dict, List, Optional, Sequence, Union

from ..errors import ConfigError
from ..model.infill_eval import FIM_MODES, fim_cases, score_infilling

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
def evaluate_fim(model: Union[str, Any], source: Any, *, mode: str = "line", samples: int = 200, seed: int = 0,
                 dtype: Optional[str] = None, threads: int = 0, exts: Optional[Sequence[str]] = None,
                 max_bytes: Optional[int] = None, max_new_tokens: int = 48, use_suffix: bool = True,
                 order: Optional[str] = None, progress: bool = False) -> Dict[str, float]:
    """Infilling quality of ``model`` (a checkpoint path or a loaded model) on
    ``source`` (as :func:`evaluate`): :func:`cllm.model.infill_eval.score_infilling`
    (exact match of the greedy middle, bits per byte of the true middle)."""
    if isinstance(model, (str, os.PathLike)):
        from .engine import InferenceModel
        model = InferenceModel.load(os.fspath(model), dtype=dtype, threads=threads)
    return score_infilling(model, _documents(source, exts, max_bytes), mode=mode, samples=samples, seed=seed,
                           max_new_tokens=max_new_tokens, use_suffix=use_suffix, order=order, progress=progress)
