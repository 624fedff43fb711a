"""Fill-in-the-middle (FIM): the special tokens, the training transform and
the infill prompt.

Every tokenizer cllm trains has StarCoder's FIM tokens (the names llama.cpp,
Continue and Tabby recognise) besides ``<|endoftext|>``: ``<fim_prefix>``,
``<fim_middle>``, ``<fim_suffix>``, ``<fim_pad>``.

Training (Bavarian et al. 2022, "Efficient Training of Language Models to
Fill in the Middle"; bigcode's implementation): each training document is,
before packing, cut at line ends into pieces that fit a training sequence
(a whole file of thousands of tokens would put its prefix, suffix and
middle in different sequences, where the model never sees them together);
each piece is with probability ``rate`` split at two random character
positions into prefix P, middle M and suffix S and emitted as

- PSM: ``<fim_prefix> P <fim_suffix> S <fim_middle> M <|endoftext|>``, or
- SPM (with probability ``spm_rate``): ``<fim_prefix> <fim_suffix> S
  <fim_middle> P M <|endoftext|>`` (bigcode's SPM variant: the model
  continues the prefix with the middle).

The random choices of a document come from a generator seeded with the run's
seed and the document's path, so they do not depend on the order, the
thread or the MPI rank that processes it. Validation documents are never
transformed (left-to-right loss stays comparable across runs).

Infilling (:func:`infill_ids`) builds the SPM prompt (typing at the cursor
then only appends to it: the prompt cache reruns just the new tokens) or the
PSM one, and trims an input that exceeds the context: the prefix from the
left, the suffix from the right, the suffix keeping at most a quarter of the
room (llama.cpp's 3:1), in steps that hold still while the user types.
"""
from __future__ import annotations

import hashlib
import logging
import random
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError
from .tokenizer import FIM_MIDDLE, FIM_PAD, FIM_PREFIX, FIM_SUFFIX, FIM_TOKENS

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

__all__ = ["FIM_PREFIX", "FIM_MIDDLE", "FIM_SUFFIX", "FIM_PAD", "FIM_TOKENS", "FILE_SEP", "INFILL_ORDERS", "TRIM_STEP", "NoInfill", "infill_ban",
           "check_infill_order", "answer_room",
           "fim_token_ids", "encode_text", "infill_ids", "fim_document", "apply_fim", "document_rng", "split_lines"]

#: the orders :func:`infill_ids` builds (see there); the first is the default
INFILL_ORDERS = ("spm", "psm")
#: tokens by which an infill prompt's cuts move (:func:`infill_ids`)
TRIM_STEP = 32

#: optional repository-context token (StarCoder2): ``<file_sep>filename\\ntext``
FILE_SEP = "<file_sep>"


class NoInfill(ConfigError):
    """The model's tokenizer has no fill-in-the-middle tokens."""

    def __init__(self) -> None:
        super().__init__("this model has no fill-in-the-middle tokens (<fim_prefix>, <fim_suffix>, "
                         "<fim_middle>): it was not trained for infilling")


def fim_token_ids(tokenizer: Any) -> Optional[Dict[str, int]]:
    """``{"prefix", "middle", "suffix"}`` -> id when the tokenizer has all three
    as special tokens, else None."""
    special = set(tokenizer.special_ids())
    out = {}
    for key, name in (("prefix", FIM_PREFIX), ("middle", FIM_MIDDLE), ("suffix", FIM_SUFFIX)):
        i = tokenizer.token_to_id(name)
        if i is None or i not in special:
            return None
        out[key] = i
    return out


def check_infill_order(order: str) -> str:
    """``order`` if it is one of :data:`INFILL_ORDERS`, else :class:`ConfigError`."""
    if order not in INFILL_ORDERS:
        raise ConfigError(f"infill order must be one of {', '.join(INFILL_ORDERS)}; got {order!r}")
    return order


def answer_room(ctx: int, max_new_tokens: int) -> int:
    """Tokens a prompt leaves free for the answer in a context of ``ctx``:
    ``max_new_tokens``, at most a quarter of the context."""
    return min(int(max_new_tokens), ctx // 4)


def infill_ban(tokenizer: Any) -> List[int]:
    """The ids an infill must never generate: the tokenizer's special tokens
    other than ``<|endoftext|>`` (the FIM control tokens, ``<file_sep>``)."""
    eot = tokenizer.eot_id
    return [i for i in tokenizer.special_ids() if i != eot][:16]


def encode_text(tokenizer: Any, text: str) -> List[int]:
    """Token ids of untrusted ``text`` in which the spelling of a special
    token (``<fim_middle>`` written in a source file) stays text: it is
    encoded in two pieces, so it can never act as the token itself."""
    names = [tokenizer.token_bytes(i).decode("utf-8", "replace") for i in tokenizer.special_ids()]
    names = [n for n in names if n and n in text]
    if not names:
        return tokenizer.encode(text)
    out: List[int] = []
    i = 0
    while i < len(text):
        hits = [(text.find(n, i), n) for n in names]
        hits = [(k, n) for k, n in hits if k >= 0]
        if not hits:
            out += tokenizer.encode(text[i:])
            break
        k, n = min(hits)
        out += tokenizer.encode(text[i:k]) if k > i else []
        out += tokenizer.encode(n[:1]) + tokenizer.encode(n[1:])
        i = k + len(n)
    return out


def infill_ids(tokenizer: Any, prefix: str, suffix: str, ctx: int, reserve: int, prompt: str = "",
               extra: Sequence[Tuple[str, str]] = (), order: str = "spm") -> List[int]:
    """The ids of an infill prompt, the model to continue with the middle:

    - ``"spm"`` (default): ``<fim_prefix><fim_suffix>S<fim_middle>P``, the
      suffix first and the code before the cursor last, so that typing at the
      cursor only appends to the prompt and the decoder's prompt cache reruns
      just the new tokens (bigcode's SPM variant, which cllm trains on);
    - ``"psm"``: ``<fim_prefix>P<fim_suffix>S<fim_middle>``, the order every
      FIM model knows; typing at the cursor reruns the whole suffix.

    ``prompt`` is text already written after the cursor, which the model
    continues. ``extra`` (filename, text) chunks of other files come first, as
    ``<file_sep>name\\ntext``, when the model has that token. ``reserve``:
    room kept for the answer (the requested tokens; at most a quarter of the
    context, :func:`answer_room`). When everything exceeds ``ctx - reserve``
    tokens the prefix is trimmed from the left and the suffix from the right, the
    suffix keeping at most a quarter of the room. Cuts move in steps of
    :data:`TRIM_STEP` tokens, so that they hold still while the user types
    (every shift of a cut would change the prompt before the cursor and cost
    a full prefill). Raises :class:`NoInfill` for a model without FIM tokens."""
    check_infill_order(order)
    reserve = answer_room(ctx, reserve)
    tid = fim_token_ids(tokenizer)
    if tid is None:
        raise NoInfill()
    pre, suf, mid = (encode_text(tokenizer, prefix), encode_text(tokenizer, suffix),
                     encode_text(tokenizer, prompt))
    ext: List[int] = []
    sep = tokenizer.token_to_id(FILE_SEP)
    if extra and sep is not None and sep in set(tokenizer.special_ids()):
        for name, text in extra:
            ext += [sep] + encode_text(tokenizer, f"{name}\n{text}")
    room = ctx - reserve - 3 - len(mid)
    if room < 1:
        raise ConfigError(f"the infill prompt's text after the cursor ({len(mid)} tokens) and the "
                          f"{reserve} tokens kept for the answer leave no room in the context of {ctx}")
    n_pre, n_suf, n_ext = _fit(len(pre), len(suf), len(ext), room)
    ext, pre, suf = ext[len(ext) - n_ext:], pre[len(pre) - n_pre:], suf[:n_suf]
    if order == "spm":
        return ext + [tid["prefix"], tid["suffix"]] + suf + [tid["middle"]] + pre + mid
    return ext + [tid["prefix"]] + pre + [tid["suffix"]] + suf + [tid["middle"]] + mid


def _fit(n_pre: int, n_suf: int, n_ext: int, room: int) -> Tuple[int, int, int]:
    """How many prefix, suffix and other-file tokens an infill prompt keeps in
    ``room``: all when they fit; else the suffix at most a quarter, the
    prefix the rest (its left cut rounded out to a multiple of
    :data:`TRIM_STEP`), and what is left (in whole steps) to the rest of the
    suffix, then to the other files."""
    if n_pre + n_suf + n_ext <= room:
        return n_pre, n_suf, n_ext
    s = min(n_suf, room // 4)
    p = min(n_pre, room - s)
    if p < n_pre:
        drop = -(-(n_pre - p) // TRIM_STEP) * TRIM_STEP
        p = max(0, n_pre - drop)
    s += min(n_suf - s, (room - p - s) // TRIM_STEP * TRIM_STEP)
    e = min(n_ext, (room - p - s) // TRIM_STEP * TRIM_STEP)
    return p, s, e


def document_rng(seed: int, key: str) -> random.Random:
    """The FIM random generator of one document (``key``: its path)."""
    h = hashlib.sha256(f"cllm-fim\0{seed}\0{key}".encode("utf-8", "surrogateescape")).digest()
    return random.Random(int.from_bytes(h[:8], "little"))


def fim_document(tokenizer: Any, text: str, tid: Dict[str, int], rng: random.Random,
                 spm_rate: float) -> List[int]:
    """The ids of ``text`` as one FIM example (PSM, or SPM with probability
    ``spm_rate``), without the closing ``<|endoftext|>``."""
    a, b = sorted(rng.randrange(len(text) + 1) for _ in range(2))
    p, m, s = text[:a], text[a:b], text[b:]
    enc = [encode_text(tokenizer, x) for x in (p, m, s)]
    if rng.random() < spm_rate:
        return [tid["prefix"], tid["suffix"]] + enc[2] + [tid["middle"]] + enc[0] + enc[1]
    return [tid["prefix"]] + enc[0] + [tid["suffix"]] + enc[2] + [tid["middle"]] + enc[1]


def split_lines(text: str, max_chars: int) -> List[str]:
    """``text`` cut at line ends into pieces of at most about ``max_chars``
    characters (a longer line is a piece of its own); they join back to ``text``."""
    if max_chars <= 0 or len(text) <= max_chars:
        return [text]
    out, cur, n = [], [], 0
    for line in text.splitlines(keepends=True):
        if n and n + len(line) > max_chars:
            out.append("".join(cur))
            cur, n = [], 0
        cur.append(line)
        n += len(line)
    if cur:
        out.append("".join(cur))
    return out


def apply_fim(docs: Sequence[Any], ids: "np.ndarray", n_docs: int, tokenizer: Any, rate: float, spm_rate: float,
              seed: int, max_chars: int = 0) -> Tuple["np.ndarray", int]:
    """The token stream ``ids`` (each document followed by ``<|endoftext|>``)
    with the first ``n_docs`` documents (the training split) made into FIM
    examples. A document is first cut at line ends into pieces of at most
    ``max_chars`` characters (0: whole documents), so that an example's
    prefix, suffix and middle fit in one training sequence together; each
    piece becomes an example with probability ``rate``. Returns (ids, length
    of the transformed training part). A tokenizer without FIM tokens
    leaves the stream as is."""
    import numpy as np
    tid = fim_token_ids(tokenizer)
    eot = tokenizer.eot_id
    ends = np.flatnonzero(np.asarray(ids) == eot)
    if len(ends) < n_docs:
        raise ConfigError("the token stream has fewer documents than the corpus")
    n_train = int(ends[n_docs - 1]) + 1 if n_docs else 0
    if tid is None or rate <= 0 or n_docs == 0:
        return ids, n_train
    parts, start, changed, pieces_all = [], 0, 0, 0
    for k in range(n_docs):
        end = int(ends[k]) + 1
        rng = document_rng(seed, getattr(docs[k], "relpath", "") or getattr(docs[k], "path", str(k)))
        text = docs[k].data.decode("utf-8", "surrogateescape")
        pieces = split_lines(text, max_chars)
        pieces_all += len(pieces)
        picks = [rng.random() < rate for _ in pieces]
        if not any(picks):
            parts.append(np.asarray(ids[start:end]))
        else:
            out: List[int] = []
            for piece, pick in zip(pieces, picks):
                out += fim_document(tokenizer, piece, tid, rng, spm_rate) if pick else encode_text(tokenizer, piece)
            parts.append(np.asarray(out + [eot], dtype=ids.dtype))
            changed += sum(picks)
        start = end
    head = np.concatenate(parts) if parts else np.asarray(ids[:0])
    log.info("fill-in-the-middle: %d of %d pieces of %d training documents made into examples (rate %g, SPM %g)",
             changed, pieces_all, n_docs, rate, spm_rate)
    return np.concatenate([head, np.asarray(ids[n_train:])]), len(head)
