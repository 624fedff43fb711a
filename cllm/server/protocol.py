"""Request validation for ``cllm serve``: each route's fields with their
types and ranges, as OpenAI's completions API and llama.cpp's server
document them. A wrong type, an out-of-range value or an unknown field is an
:class:`ApiError` (HTTP 400) naming the field; fields of the other server's
API that cllm does not implement but editors send by default (llama.cpp's
``n_indent``, ``samplers``, ``cache_prompt`` ...) are accepted and ignored
when they keep their neutral value."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["ApiError", "Field", "parse", "OPENAI_COMPLETION", "LLAMA_COMPLETION", "LLAMA_INFILL", "TOKENIZE",
           "DETOKENIZE"]


class ApiError(Exception):
    """A request the server answers with ``status`` and an error object."""

    def __init__(self, message: str, status: int = 400, type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.message, self.status, self.type, self.param, self.code = message, status, type, param, code
        self.headers = headers or {}

    def body(self) -> Dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}`` (OpenAI's shape, which llama.cpp uses too)."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code if self.code is not None else self.status}}


class Field:
    """One request field: its kinds, range and default."""

    def __init__(self, kinds: Tuple[str, ...], default: Any = None, lo: Optional[float] = None,
                 hi: Optional[float] = None, max_items: Optional[int] = None, ignored: bool = False,
                 neutral: Any = None) -> None:
        self.kinds, self.default, self.lo, self.hi = kinds, default, lo, hi
        self.max_items, self.ignored, self.neutral = max_items, ignored, neutral


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(float(v))


def _kind_ok(kind: str, v: Any) -> bool:
    if kind == "null":
        return v is None
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "int":
        return _is_int(v)
    if kind == "num":
        return _is_num(v)
    if kind == "str":
        return isinstance(v, str)
    if kind == "strs":
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    if kind == "ints":
        return isinstance(v, list) and all(_is_int(x) for x in v)
    if kind == "intss":
        return isinstance(v, list) and all(isinstance(x, list) and all(_is_int(y) for y in x) for x in v)
    if kind == "mixed":   # llama.cpp: a list of strings and token ids
        return isinstance(v, list) and all(isinstance(x, str) or _is_int(x) for x in v)
    if kind == "extra":   # llama.cpp input_extra: [{"filename": str, "text": str}]
        return isinstance(v, list) and all(isinstance(x, dict) and isinstance(x.get("text", ""), str)
                                           and isinstance(x.get("filename", ""), str) for x in v)
    if kind == "any":
        return True
    raise AssertionError(kind)


_KIND_NAMES = {"null": "null", "bool": "a boolean", "int": "an integer", "num": "a number", "str": "a string",
               "strs": "a list of strings", "ints": "a list of token ids", "intss": "a list of lists of token ids",
               "mixed": "a list of strings and token ids", "extra": "a list of {filename, text} objects",
               "any": "any value"}


def parse(body: Any, spec: Mapping[str, Field], route: str) -> Dict[str, Any]:
    """The validated fields of JSON ``body`` (defaults filled in)."""
    if not isinstance(body, dict):
        raise ApiError(f"{route}: the request body must be a JSON object")
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise ApiError(f"{route}: unknown field {unknown[0]!r}", param=unknown[0])
    out: Dict[str, Any] = {}
    for name, f in spec.items():
        if name not in body:
            out[name] = f.default
            continue
        v = body[name]
        if not any(_kind_ok(k, v) for k in f.kinds):
            want = " or ".join(_KIND_NAMES[k] for k in f.kinds)
            raise ApiError(f"{route}: {name} must be {want}, got {type(v).__name__} {_short(v)}", param=name)
        if _is_num(v) and not isinstance(v, bool):
            if (f.lo is not None and v < f.lo) or (f.hi is not None and v > f.hi):
                raise ApiError(f"{route}: {name} must be in [{_g(f.lo)}, {_g(f.hi)}], got {v}", param=name)
        if f.max_items is not None and isinstance(v, list) and len(v) > f.max_items:
            raise ApiError(f"{route}: {name} has {len(v)} items; at most {f.max_items}", param=name)
        if f.ignored and f.neutral is not None and v != f.neutral and v is not None:
            raise ApiError(f"{route}: {name}={_short(v)} is not supported by this server (only {f.neutral!r})",
                           param=name)
        out[name] = v
    return out


def _g(v: Optional[float]) -> str:
    return "-inf" if v is None else f"{v:g}"


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def stops(v: Any) -> List[str]:
    """A ``stop`` field as a list of non-empty strings."""
    if v is None:
        return []
    return [s for s in ([v] if isinstance(v, str) else v) if s]


#: OpenAI ``POST /v1/completions``
OPENAI_COMPLETION: Dict[str, Field] = {
    "model": Field(("str", "null")),
    "prompt": Field(("str", "strs", "ints", "intss"), default="<|endoftext|>"),
    "suffix": Field(("str", "null")),
    "max_tokens": Field(("int", "null"), default=16, lo=0),
    "temperature": Field(("num", "null"), default=1.0, lo=0, hi=2),
    "top_p": Field(("num", "null"), default=1.0, lo=0, hi=1),
    "n": Field(("int", "null"), default=1, lo=1, hi=16),
    "stream": Field(("bool", "null"), default=False),
    "stream_options": Field(("any",)),
    "logprobs": Field(("int", "null"), lo=0, hi=5),
    "echo": Field(("bool", "null"), default=False),
    "stop": Field(("str", "strs", "null"), max_items=4),
    "seed": Field(("int", "null")),
    "user": Field(("str", "null")),
    "best_of": Field(("int", "null"), lo=1, hi=1, ignored=True, neutral=1),
    "presence_penalty": Field(("num", "null"), lo=-2, hi=2, ignored=True, neutral=0),
    "frequency_penalty": Field(("num", "null"), lo=-2, hi=2, ignored=True, neutral=0),
    "logit_bias": Field(("any",), ignored=True, neutral={}),
    # not OpenAI's, but llama.cpp's OpenAI route and some clients send it
    "top_k": Field(("int", "null"), lo=0),
}

# llama.cpp ``POST /completion`` fields; those marked ignored are accepted
# (editors send them by default) while they keep their neutral value.
_LLAMA_IGNORED = {
    "cache_prompt": Field(("bool",), ignored=True), "n_keep": Field(("int",), ignored=True),
    "n_indent": Field(("int",), ignored=True), "samplers": Field(("strs",), ignored=True),
    "min_p": Field(("num",), ignored=True), "typical_p": Field(("num",), ignored=True, neutral=1),
    "repeat_penalty": Field(("num",), ignored=True, neutral=1), "repeat_last_n": Field(("int",), ignored=True),
    "presence_penalty": Field(("num",), ignored=True, neutral=0),
    "frequency_penalty": Field(("num",), ignored=True, neutral=0),
    "mirostat": Field(("int",), ignored=True, neutral=0), "mirostat_tau": Field(("num",), ignored=True),
    "mirostat_eta": Field(("num",), ignored=True), "t_max_prompt_ms": Field(("int", "num"), ignored=True),
    "id_slot": Field(("int",), ignored=True), "response_fields": Field(("strs",), ignored=True),
    "return_tokens": Field(("bool",), ignored=True), "timings_per_token": Field(("bool",), ignored=True),
    "post_sampling_probs": Field(("bool",), ignored=True), "min_keep": Field(("int",), ignored=True),
    "dynatemp_range": Field(("num",), ignored=True, neutral=0), "dynatemp_exponent": Field(("num",), ignored=True),
    "xtc_probability": Field(("num",), ignored=True, neutral=0), "xtc_threshold": Field(("num",), ignored=True),
    "dry_multiplier": Field(("num",), ignored=True, neutral=0), "dry_base": Field(("num",), ignored=True),
    "dry_allowed_length": Field(("int",), ignored=True), "dry_penalty_last_n": Field(("int",), ignored=True),
    "top_n_sigma": Field(("num",), ignored=True, neutral=-1), "ignore_eos": Field(("bool",)),
    "logit_bias": Field(("any",), ignored=True, neutral=[]), "lora": Field(("any",), ignored=True, neutral=[]),
    "n_probs": Field(("int",), default=0, lo=0, hi=20),
}

LLAMA_COMPLETION: Dict[str, Field] = {
    "prompt": Field(("str", "mixed", "ints"), default=""),
    "n_predict": Field(("int",), default=-1, lo=-1),
    "temperature": Field(("num",), default=0.8, lo=0),
    "top_k": Field(("int",), default=40, lo=0),
    "top_p": Field(("num",), default=0.95, lo=0, hi=1),
    "stop": Field(("strs", "str", "null"), max_items=16),
    "seed": Field(("int",), default=-1),
    "stream": Field(("bool",), default=False),
    "t_max_predict_ms": Field(("int", "num"), default=0, lo=0),
    **_LLAMA_IGNORED,
}

LLAMA_INFILL: Dict[str, Field] = {
    **LLAMA_COMPLETION,
    "input_prefix": Field(("str",), default=""),
    "input_suffix": Field(("str",), default=""),
    "input_extra": Field(("extra",), default=[]),
}

TOKENIZE: Dict[str, Field] = {
    "content": Field(("str",), default=""),
    "add_special": Field(("bool",), default=False),
    "with_pieces": Field(("bool",), default=False),
}

DETOKENIZE: Dict[str, Field] = {"tokens": Field(("ints",), default=[])}


def check_ids(ids: Sequence[int], vocab: int, param: str = "prompt") -> None:
    """Every id in ``[0, vocab)`` (else :class:`ApiError` naming the first bad one)."""
    for i in ids:
        if not 0 <= i < vocab:
            raise ApiError(f"token id {i} in {param} is out of range [0, {vocab})", param=param)
