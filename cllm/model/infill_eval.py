"""Infilling quality: single-line and random-span fill-in-the-middle cases
cut from held-out text, scored by exact match of the greedy middle and bits
per byte of the true middle. Used by ``cllm eval --fim``
(:func:`cllm.inference.evaluation.evaluate_fim`) and at the end of a
training run (``metrics.jsonl``)."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError

__all__ = ["FIM_MODES", "fim_cases", "score_infilling"]

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


def score_infilling(model: Any, docs: Sequence[bytes], *, mode: str = "line", samples: int = 200, seed: int = 0,
                    max_new_tokens: int = 48, use_suffix: bool = True, order: Optional[str] = None,
                    progress: bool = False, stop_early: Optional[Callable[[], bool]] = None,
                    context: Optional[int] = None) -> Dict[str, float]:
    """Infilling quality of ``model`` (a :class:`~cllm.Model` or
    :class:`~cllm.InferenceModel`) on the texts ``docs``.

    ``samples`` cases from :func:`fim_cases`; each middle is generated
    greedily (a line case stops at the line's end) and compared with the
    original: ``exact_match`` is the share of cases whose generated middle
    equals it (surrounding white space ignored). For a model with FIM tokens
    and ``use_suffix`` the prompt is the infill prompt (in ``order``, default
    the model's ``infill_order``); otherwise the model sees the prefix only
    (how a left-to-right model completes the same cursor).
    ``middle_bits_per_byte`` (infill prompts only) is the negative
    log-likelihood of the original middle and the closing ``<|endoftext|>``
    given the prompt, per UTF-8 byte of the middle. ``stop_early``: checked
    before each case; when it returns true the evaluation ends and ``{}``
    is returned (a run being stopped does not wait for it). ``context``: the
    most tokens a prompt and its answer take (default, and at most, the
    model's context)."""
    from ..data.fim import answer_room, fim_token_ids, infill_ban, infill_ids
    from ..progress import progress_bar
    cases = fim_cases(docs, mode, samples, seed)
    if not cases:
        raise ConfigError(f"infilling evaluation: no {mode} cases in the text")
    tok = model.tokenizer
    infill = use_suffix and fim_token_ids(tok) is not None
    P = model.config.context_len if context is None else max(1, min(int(context), model.config.context_len))
    stop = ["\n"] if mode == "line" else []
    ban = infill_ban(tok)
    t0 = time.perf_counter()
    hits, nll, nbytes = 0, 0.0, 0
    dec = model._decoder()
    bar = progress_bar(progress, total=len(cases), desc="fim eval", unit="case")
    for pre, mid, suf in cases:
        if stop_early is not None and stop_early():
            bar.close()
            return {}
        if infill:
            ids = infill_ids(tok, pre, suf, P, max_new_tokens,
                             order=getattr(model, "infill_order", "spm") if order is None else order)
            out = "".join(model.stream(ids, max_new_tokens, 0.0, None, 1.0, 0, stop, True, False, ban=ban))
            target = tok.encode(mid) + [tok.eot_id]
            if len(ids) + len(target) <= P:
                nll += dec.continuation_nll(ids, target)
                nbytes += len(mid.encode("utf-8"))
        else:   # the prefix's last tokens that leave room for the answer, as a left-to-right prompt
            ids = tok.encode(pre)[-(P - answer_room(P, max_new_tokens)):] or [tok.eot_id]
            out = "".join(model.stream(ids, max_new_tokens, 0.0, None, 1.0, 0, stop, True, False))
        hits += out.strip() == mid.strip()
        bar.update(1)
    bar.close()
    res = {"exact_match": hits / len(cases), "cases": float(len(cases)), "seconds": time.perf_counter() - t0,
           "infill": float(infill)}
    if nbytes:
        res["middle_bits_per_byte"] = nll / math.log(2) / nbytes
    return res
