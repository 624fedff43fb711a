"""Byte-level BPE tokenizer (the C core does the work; this is the wrapper).

Ids 0..255 are the 256 bytes, then the special tokens (``<|endoftext|>`` is
256), then the learned merges in rank order. Training, encoding and decoding
run in C (``csrc/tokenizer/bpe.c``) with the GIL released. The saved ``tokenizer.json``
is a Hugging Face ``tokenizers`` file: a ``Split`` regex (the code-aware
pre-tokenizer, see :data:`PRETOKENIZER_REGEX`) followed by ``ByteLevel``,
a BPE model and a ``ByteLevel`` decoder, so
``tokenizers.Tokenizer.from_file(path).encode(text).ids`` gives the same ids.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from . import corpus as _corpus
from .._native import check, ffi, lib
from ..config import C_INT_MAX
from ..errors import ConfigError, ConfigTypeError
from ..io.files import atomic_write_json, read_json
from ..progress import progress_bar

if TYPE_CHECKING:  # numpy is imported lazily: `cllm generate` never needs it
    import numpy as np

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"
#: fill-in-the-middle tokens (StarCoder's names), special in every tokenizer :meth:`Tokenizer.train` makes
FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD = "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"
FIM_TOKENS = (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD)
#: the special tokens of a trained tokenizer, in id order after the 256 bytes
DEFAULT_SPECIAL_TOKENS = (EOT,) + FIM_TOKENS

#: Code-aware pre-tokenizer, ASCII classes only (every non-ASCII code point
#: counts as a letter, so no Unicode table can differ between the C splitter
#: and ``tokenizers``' regex engine). In order, leftmost alternative wins:
#: identifiers (letters, digits, ``_``) with an optional leading space;
#: digit runs with an optional leading space; punctuation runs with an
#: optional leading space; whitespace runs except their last character when
#: a word follows (GPT-2's ``\s+(?!\S)``, so indentation ``"\n   "`` and the
#: word ``" return"`` are separate pieces); any other whitespace run.
_L = r"A-Za-z_\x{80}-\x{10FFFF}"
_W = r"\t\n\x0b\x0c\r "
PRETOKENIZER_REGEX = (
    rf" ?[{_L}][{_L}0-9]*| ?[0-9]+| ?[^{_L}0-9{_W}]+|[{_W}]+(?![^{_W}])|[{_W}]+"
)

def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map (as HF ByteLevel uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_B2U = _bytes_to_unicode()
_U2B = {u: b for b, u in _B2U.items()}


def _to_hf(b: bytes) -> str:
    return "".join(_B2U[x] for x in b)


_U2L = {ord(u): b for u, b in _U2B.items()}   # str.translate table: byte-level char -> latin-1 char


def _from_hf(s: str) -> bytes:
    try:
        return s.translate(_U2L).encode("latin-1")
    except UnicodeEncodeError as e:
        raise ValueError(f"token {s!r} has a character outside the byte-level alphabet") from e


#: GPT-2's pre-tokenizer regex (Hugging Face ``ByteLevel(use_regex=True)``)
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

SUPPORTED_TOKENIZERS = ("byte-level BPE tokenizer.json (Hugging Face tokenizers format) with no normalizer and "
                        "cllm's code-aware pre-tokenizer, GPT-2's (ByteLevel with add_prefix_space false, or "
                        "Split on GPT-2's regex followed by ByteLevel) or StarCoder's (Digits with "
                        "individual_digits true followed by that ByteLevel)")


def _byte_level_regex_mode(bl: dict) -> str:
    """"gpt2" for a ``ByteLevel`` pre-tokenizer that applies GPT-2's regex; raises
    ValueError for ``add_prefix_space=true`` (cllm never adds a space)."""
    if bl.get("add_prefix_space", False):
        raise ValueError("ByteLevel pre-tokenizer with add_prefix_space=true is not supported; "
                         f"cllm reads a {SUPPORTED_TOKENIZERS}")
    return "gpt2"


def _pretokenizer_mode(pre: object) -> str:
    """"cllm", "gpt2" or "starcoder" for a tokenizer.json ``pre_tokenizer`` section;
    raises ValueError (saying what is supported) for anything else."""
    if pre == pre_tokenizer_json():
        return "cllm"
    if isinstance(pre, dict):
        if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
            return _byte_level_regex_mode(pre)
        seq = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
        if isinstance(seq, list) and len(seq) == 2 and isinstance(seq[0], dict) and isinstance(seq[1], dict):
            first, bl = seq
            if (first.get("type") == "Split" and first.get("pattern") == {"Regex": GPT2_REGEX}
                    and first.get("behavior") == "Isolated" and not first.get("invert")
                    and bl.get("type") == "ByteLevel" and not bl.get("use_regex", True)
                    and not bl.get("add_prefix_space", False)):
                return "gpt2"
            if first.get("type") == "Digits" and bl.get("type") == "ByteLevel" and bl.get("use_regex", True):
                if not first.get("individual_digits", False):
                    raise ValueError("Digits pre-tokenizer with individual_digits=false is not supported; "
                                     f"cllm reads a {SUPPORTED_TOKENIZERS}")
                _byte_level_regex_mode(bl)
                return "starcoder"
    raise ValueError(f"unsupported pre_tokenizer {str(pre)[:200]}; cllm reads a {SUPPORTED_TOKENIZERS}")


#: the pre-tokenizers a tokenizer can be trained with: cllm's code-aware splitter, GPT-2's regex and
#: StarCoder's (GPT-2's regex with every numeric character alone)
PRETOKENIZERS = ("cllm", "gpt2", "starcoder")
#: the pre-tokenizer of trained tokenizers: GPT-2's split, which llama.cpp implements (so a
#: trained model exports to GGUF) and which measured no worse than cllm's own split on code
#: (docs/gguf.md)
DEFAULT_PRETOKENIZER = "gpt2"


def gpt2_pre_tokenizer_json() -> dict:
    """The ``pre_tokenizer`` section of GPT-2's own tokenizer.json (GPT-2's regex)."""
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def starcoder_pre_tokenizer_json() -> dict:
    """The ``pre_tokenizer`` section of StarCoder's tokenizer.json (every numeric character alone, then
    GPT-2's regex)."""
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, gpt2_pre_tokenizer_json()]}


def pre_tokenizer_json() -> dict:
    """The ``pre_tokenizer`` section of tokenizer.json (matches the C splitter)."""
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": PRETOKENIZER_REGEX}, "behavior": "Isolated",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
    ]}


#: the tokenizer.json ``pre_tokenizer`` section a tokenizer trained with each pre-tokenizer gets
_PRE_JSON = {"cllm": pre_tokenizer_json, "gpt2": gpt2_pre_tokenizer_json, "starcoder": starcoder_pre_tokenizer_json}
#: what :meth:`Tokenizer.fingerprint` hashes for each pre-tokenizer
_FINGERPRINT_PRE = {"cllm": PRETOKENIZER_REGEX, "gpt2": GPT2_REGEX, "starcoder": "Digits(individual) " + GPT2_REGEX}

TextSource = Union[str, bytes, bytearray, memoryview, "os.PathLike[str]"]


#: Default vocabulary size, chosen by measurement (docs/corpus.md: "Choosing the default vocabulary size").
DEFAULT_VOCAB_SIZE = 16384

class Tokenizer:
    """Byte-level BPE tokenizer backed by the C core.

    Build one with :meth:`byte_level`, :meth:`train` or :meth:`load`.
    """

    def __init__(self, _handle=None, _vocab: Optional[List[Tuple[bytes, bool]]] = None) -> None:
        if _handle is None:
            out = ffi.new("cllm_tokenizer **")
            check(lib.cllm_tokenizer_new(out))
            _handle = out[0]
            idp = ffi.new("int32_t *")
            eot = EOT.encode()
            check(lib.cllm_tokenizer_add_special(_handle, eot, len(eot), idp))
        self._h = ffi.gc(_handle, lib.cllm_tokenizer_free)
        #: "cllm" (code-aware splitter) or "gpt2" (GPT-2's regex), and the
        #: tokenizer.json pre_tokenizer section it was read from
        self.pretokenizer = "cllm"
        self._pre_json: Optional[dict] = None
        self._refresh(_vocab)

    # ------------------------------------------------------------ internals
    def _refresh(self, vocab: Optional[List[Tuple[bytes, bool]]] = None) -> None:
        """Cache the vocabulary (bytes per id, specials) on the Python side;
        ``vocab`` ((bytes, special) per id, exactly what the C tokenizer was
        built from) skips asking the C core token by token."""
        if vocab is not None:
            self._tokens = [b for b, _ in vocab]
            self._special = {b: i for i, (b, sp) in enumerate(vocab) if sp}
            self._max_len = max(1, max((len(b) for b in self._tokens), default=1))
            self._hf_to_id = None
            self.eot_id = self._special.get(EOT.encode(), -1)
            return
        n = ffi.new("int32_t *")
        check(lib.cllm_tokenizer_vocab_size(self._h, n))
        ml = ffi.new("size_t *")
        check(lib.cllm_tokenizer_max_token_len(self._h, ml))
        buf = ffi.new("uint8_t[]", max(1, ml[0]))
        ln = ffi.new("size_t *")
        sp = ffi.new("int *")
        self._tokens: List[bytes] = []
        self._special: Dict[bytes, int] = {}
        for i in range(n[0]):
            check(lib.cllm_tokenizer_token_bytes(self._h, i, buf, ml[0], ln, sp))
            b = bytes(ffi.buffer(buf, ln[0]))
            self._tokens.append(b)
            if sp[0]:
                self._special[b] = i
        self._max_len = max(1, ml[0])
        self._hf_to_id: Optional[Dict[str, int]] = None
        eot = EOT.encode()
        self.eot_id: int = self._special.get(eot, -1)

    # ---------------------------------------------------------- constructors
    @classmethod
    def byte_level(cls) -> "Tokenizer":
        """The untrained tokenizer: 256 byte tokens and ``<|endoftext|>`` (id 256)."""
        return cls()

    @classmethod
    def train(cls, paths: Union[TextSource, Iterable[TextSource]] = (), vocab_size: int = DEFAULT_VOCAB_SIZE,
              min_frequency: int = 2, special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
              progress: bool = True, exts: Optional[Sequence[str]] = None, *,
              texts: Union[str, bytes, Iterable[Union[str, bytes]]] = (),
              pretokenizer: str = DEFAULT_PRETOKENIZER) -> "Tokenizer":
        """Train a byte-level BPE on files and directories (``paths``) and/or text (``texts``).

        What an item means is decided by its type, never by guessing: in
        ``paths`` a ``str`` or ``os.PathLike`` is a path that must exist
        (``FileNotFoundError`` otherwise; directories are walked like the
        corpus, optionally filtered by ``exts``), ``bytes`` are raw text and a
        :class:`~cllm.data.corpus.Document` gives its data; in ``texts`` a ``str``
        is text (UTF-8 encoded) and ``bytes`` raw text. ``vocab_size`` counts
        the 256 bytes and the special tokens; training stops early when no
        pair occurs ``min_frequency`` times. ``special_tokens`` default to
        ``<|endoftext|>`` and the fill-in-the-middle tokens
        (:data:`DEFAULT_SPECIAL_TOKENS`). ``pretokenizer`` splits the text
        before the merges, in training and in every later encode: ``"gpt2"``
        (the default: GPT-2's regex, which llama.cpp also implements, so such a
        model can be exported to GGUF) or ``"cllm"`` (the code-aware splitter,
        :data:`PRETOKENIZER_REGEX`). Raises :class:`~cllm.ConfigError` (a ``ValueError``)
        for a bad size, pre-tokenizer or an empty corpus.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise ConfigTypeError(f"vocab_size must be an integer, got {type(vocab_size).__name__} {vocab_size!r}")
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, int):
            raise ConfigTypeError(f"min_frequency must be an integer, got {min_frequency!r}")
        special_tokens = list(special_tokens)
        if EOT not in special_tokens:
            special_tokens.insert(0, EOT)
        base = 256 + len(special_tokens)
        if not base <= vocab_size <= C_INT_MAX:
            raise ConfigError(f"vocab_size must be an int in [{base}, {C_INT_MAX}] (256 bytes + "
                              f"{len(special_tokens)} special tokens at least), got {vocab_size!r}")
        if min_frequency < 1:
            raise ConfigError(f"min_frequency must be >= 1, got {min_frequency}")
        if pretokenizer not in PRETOKENIZERS:
            raise ConfigError(f"pretokenizer must be one of {', '.join(PRETOKENIZERS)}, got {pretokenizer!r}")
        out = ffi.new("cllm_tokenizer **")
        check(lib.cllm_tokenizer_new(out))
        h = out[0]
        try:
            check(lib.cllm_tokenizer_set_pretokenizer(h, getattr(lib, "CLLM_PRETOK_" + pretokenizer.upper())))
            nm = cls._train_into(h, _iter_sources(paths, texts, exts), vocab_size, min_frequency, special_tokens,
                                 progress, exts, base)
        except BaseException:
            lib.cllm_tokenizer_free(h)
            raise
        tok = cls(h)
        tok._set_pretokenizer(pretokenizer, _PRE_JSON[pretokenizer]())
        log.info("trained BPE: %d tokens (%d merges, %s pre-tokenizer)", len(tok), nm, pretokenizer)
        return tok

    @staticmethod
    def _train_into(h, sources: Iterator[bytes], vocab_size: int, min_frequency: int,
                    special_tokens: Sequence[str], progress: bool,
                    exts: Optional[Sequence[str]], base: int) -> int:
        """Feed the corpus and run the merges on the raw handle ``h``."""
        idp = ffi.new("int32_t *")
        for s in special_tokens:
            b = s.encode("utf-8")
            check(lib.cllm_tokenizer_add_special(h, b, len(b), idp))
        total = 0
        bar = progress_bar(progress, desc="bpe: counting", unit="B", unit_scale=True)
        try:
            for data in sources:
                if data:
                    check(lib.cllm_tokenizer_train_feed(h, ffi.from_buffer(data), len(data)))
                    total += len(data)
                    bar.update(len(data))
        finally:
            bar.close()
        uniq = ffi.new("int64_t *")
        check(lib.cllm_tokenizer_train_stats(h, uniq, ffi.NULL))
        if total == 0 or uniq[0] == 0:
            raise ConfigError("cannot train a tokenizer on an empty corpus "
                             "(no text besides special tokens)")
        nm = ffi.new("int32_t *")
        fin = ffi.new("int *")
        bar = progress_bar(progress, desc="bpe: merging", total=vocab_size - base, unit="merge")
        try:
            last = 0
            while True:
                check(lib.cllm_tokenizer_train_merges(h, vocab_size, min_frequency, 256, nm, fin))
                bar.update(nm[0] - last)
                last = nm[0]
                if fin[0]:
                    break
        finally:
            bar.close()
        return nm[0]

    # ---------------------------------------------------------------- basics
    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        return len(self._tokens)

    @property
    def num_merges(self) -> int:
        """Number of learned merges."""
        n = ffi.new("int32_t *")
        check(lib.cllm_tokenizer_num_merges(self._h, n))
        return n[0]

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of a token id."""
        if not 0 <= int(token_id) < len(self._tokens):
            raise ConfigError(f"token id {token_id} out of range [0, {len(self)})")
        return self._tokens[int(token_id)]

    def id_to_token(self, token_id: int) -> Optional[str]:
        """Token string as in tokenizer.json (byte-level alphabet; specials verbatim)."""
        if not 0 <= int(token_id) < len(self._tokens):
            return None
        b = self._tokens[int(token_id)]
        return b.decode("utf-8") if b in self._special else _to_hf(b)

    def token_to_id(self, token: str) -> Optional[int]:
        """Id of a token string as in tokenizer.json (e.g. ``"Ġreturn"``), or None."""
        if self._hf_to_id is None:
            self._hf_to_id = {self.id_to_token(i): i for i in range(len(self._tokens))}
        return self._hf_to_id.get(token)

    # ------------------------------------------------------------ encode/decode
    def encode_np(self, text: Union[str, bytes, bytearray, memoryview]) -> "np.ndarray":
        """Token ids of ``text`` as an int32 array (str is UTF-8 encoded)."""
        import numpy as np
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        out = np.empty(max(1, len(data)), dtype=np.int32)
        n = ffi.new("size_t *")
        check(lib.cllm_tokenizer_encode(self._h, ffi.from_buffer(data), len(data),
                                         ffi.cast("int32_t *", out.ctypes.data), len(out), n))
        return out[:n[0]].copy() if n[0] < len(out) // 2 else out[:n[0]]

    def encode(self, text: Union[str, bytes, bytearray, memoryview]) -> List[int]:
        """Token ids of ``text`` (str is UTF-8 encoded first)."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        out = ffi.new("int32_t[]", max(1, len(data)))
        n = ffi.new("size_t *")
        check(lib.cllm_tokenizer_encode(self._h, ffi.from_buffer(data), len(data), out, len(data), n))
        return ffi.unpack(out, n[0])

    def special_ids(self) -> List[int]:
        """Ids of the special (added) tokens."""
        return sorted(self._special.values())

    def token_bytes_list(self) -> List[bytes]:
        """The bytes of every token id (a shared list: do not modify)."""
        return self._tokens

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Exact bytes of ``ids`` (special tokens give their literal text)."""
        if hasattr(ids, "dtype"):  # a numpy array: range-check vectorised
            import numpy as np
            arr = np.ascontiguousarray(ids).reshape(-1)
            if arr.size and (arr.min() < 0 or arr.max() >= len(self._tokens)):
                bad = int(arr[(arr < 0) | (arr >= len(self._tokens))][0])
                raise ConfigError(f"token id {bad} out of range [0, {len(self)})")
            arr = np.ascontiguousarray(arr, dtype=np.int32)
            ptr, count = ffi.cast("int32_t *", ffi.from_buffer(arr)), arr.size
        else:
            lst = [int(i) for i in ids]
            nt = len(self._tokens)
            for i in lst:
                if not 0 <= i < nt:
                    raise ConfigError(f"token id {i} out of range [0, {nt})")
            ptr, count = ffi.new("int32_t[]", lst), len(lst)
        n = ffi.new("size_t *")
        # first pass: exact output length (C reports it with CLLM_ERR_RANGE)
        rc = lib.cllm_tokenizer_decode(self._h, ptr, count, ffi.NULL, 0, n)
        if rc != 0 and n[0] == 0:
            check(rc)
        if n[0] == 0:
            return b""
        out = bytearray(n[0])
        check(lib.cllm_tokenizer_decode(self._h, ptr, count, ffi.from_buffer(out), len(out), n))
        return bytes(out)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` (invalid UTF-8 replaced by U+FFFD, as Hugging Face does)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def encode_documents(self, docs: Sequence[Union[bytes, str]]) -> "np.ndarray":
        """Concatenated ids of ``docs``, each followed by ``<|endoftext|>``
        (uint16 when the vocabulary fits, else uint32)."""
        import numpy as np
        dtype = np.uint16 if len(self) <= 65536 else np.uint32
        if not docs:
            return np.zeros(0, dtype=dtype)
        if self.eot_id < 0:
            raise ConfigError("tokenizer has no <|endoftext|> token")
        parts = [d.encode("utf-8") if isinstance(d, str) else bytes(d) for d in docs]
        offsets = np.zeros(len(parts) + 1, dtype=np.uint64)
        np.cumsum([len(p) for p in parts], out=offsets[1:])
        blob = b"".join(parts)
        out = np.empty(len(blob) + len(parts), dtype=np.int32)
        n = ffi.new("size_t *")
        check(lib.cllm_tokenizer_encode_docs(
            self._h, ffi.from_buffer(blob) if blob else ffi.NULL,
            ffi.cast("uint64_t *", offsets.ctypes.data), len(parts), self.eot_id,
            ffi.cast("int32_t *", out.ctypes.data), len(out), n))
        return out[:n[0]].astype(dtype)

    # ------------------------------------------------------------------ files
    def merges(self) -> List[Tuple[int, int]]:
        """Learned merges (a, b) in rank order."""
        a, b, o = ffi.new("int32_t *"), ffi.new("int32_t *"), ffi.new("int32_t *")
        res = []
        for r in range(self.num_merges):
            check(lib.cllm_tokenizer_get_merge(self._h, r, a, b, o))
            res.append((a[0], b[0]))
        return res

    def to_json(self) -> dict:
        """Hugging Face ``tokenizers`` JSON (byte-level BPE)."""
        added = [{"id": i, "content": b.decode("utf-8"), "single_word": False, "lstrip": False,
                  "rstrip": False, "normalized": False, "special": True}
                 for b, i in sorted(self._special.items(), key=lambda kv: kv[1])]
        vocab = {self.id_to_token(i): i for i in range(len(self._tokens))}
        merges = [f"{self.id_to_token(a)} {self.id_to_token(b)}" for a, b in self.merges()]
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": self._pre_json if self._pre_json is not None else pre_tokenizer_json(),
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": False,
                        "trim_offsets": False, "use_regex": False},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": merges},
        }

    def fingerprint(self) -> str:
        """Stable hash of the vocabulary and merges (for caches)."""
        import hashlib
        h = hashlib.sha256()
        h.update(_FINGERPRINT_PRE[self.pretokenizer].encode())
        for i, b in enumerate(self._tokens):
            h.update(b"%d:%d:" % (i, b in self._special) + b + b"\x00")
        import numpy as np
        h.update(np.asarray(self.merges(), dtype=np.int32).tobytes())
        return h.hexdigest()

    def save(self, path: Union[str, "os.PathLike[str]"]) -> str:
        """Write ``tokenizer.json`` atomically (a directory gets it inside);
        returns the file path."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        atomic_write_json(path, self.to_json(), indent=None)
        return path

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "Tokenizer":
        """Read a tokenizer.json written by :meth:`save` (or a directory holding one).

        Raises ``FileNotFoundError`` if missing and :class:`~cllm.ConfigError` (a ``ValueError``) if corrupt or
        not a byte-level BPE with cllm's pre-tokenizer.
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        obj = read_json(path, corrupt=ConfigError)
        try:
            return cls.from_json(obj)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"{path}: not a usable byte-level BPE tokenizer.json: {e}") from None

    @classmethod
    def from_json(cls, obj: dict) -> "Tokenizer":
        """The tokenizer of a :meth:`to_json` dict (``ValueError`` if unusable)."""
        if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
            raise ValueError("no model section")
        model = obj["model"]
        if model.get("type") != "BPE":
            raise ValueError(f"model type {model.get('type')!r} is not supported; cllm reads a {SUPPORTED_TOKENIZERS}")
        for key in ("continuing_subword_prefix", "end_of_word_suffix", "dropout"):
            if model.get(key):
                raise ValueError(f"BPE option {key}={model[key]!r} is not supported; cllm reads a {SUPPORTED_TOKENIZERS}")
        if obj.get("normalizer") is not None:
            raise ValueError(f"a normalizer ({str(obj['normalizer'])[:80]}) is not supported; cllm reads a "
                             f"{SUPPORTED_TOKENIZERS}")
        vocab = model.get("vocab")
        merges = model.get("merges", [])
        if not isinstance(vocab, dict) or not isinstance(merges, list):
            raise ValueError("model.vocab / model.merges missing")
        mode = _pretokenizer_mode(obj.get("pre_tokenizer")) if merges else "cllm"
        by_id: Dict[int, Tuple[bytes, bool]] = {}
        specials = {}
        for t in obj.get("added_tokens") or []:
            specials[t["content"]] = int(t["id"])
            by_id[int(t["id"])] = (t["content"].encode("utf-8"), True)
        for s, i in vocab.items():
            i = int(i)
            if s in specials and specials[s] == i:
                continue
            if i in by_id:
                raise ValueError(f"id {i} used twice")
            by_id[i] = (_from_hf(s), False)
        n = len(by_id)
        if sorted(by_id) != list(range(n)):
            raise ValueError("token ids are not 0..n-1")
        toks = [by_id[i] for i in range(n)]
        offs = [0] * (n + 1)
        for k, (b, _) in enumerate(toks):
            offs[k + 1] = offs[k] + len(b)
        blob = b"".join(b for b, _ in toks)
        hf_to_id = {s: int(i) for s, i in vocab.items()}
        mids = [0] * (2 * max(1, len(merges)))
        for r, m in enumerate(merges):
            a, b = m.split(" ") if isinstance(m, str) else m
            if a not in hf_to_id or b not in hf_to_id:
                raise ValueError(f"merge {r} uses a token not in the vocabulary")
            mids[2 * r], mids[2 * r + 1] = hf_to_id[a], hf_to_id[b]
        out = ffi.new("cllm_tokenizer **")
        check(lib.cllm_tokenizer_from_vocab(
            ffi.from_buffer(blob), ffi.new("uint64_t[]", offs), ffi.new("uint8_t[]", [int(s) for _, s in toks]),
            n, ffi.new("int32_t[]", mids), len(merges), out))
        tok = cls(out[0], toks)
        tok._set_pretokenizer(mode, obj.get("pre_tokenizer"))
        return tok

    def _set_pretokenizer(self, mode: str, pre_json: Optional[dict]) -> None:
        """Split text with pre-tokenizer ``mode`` (a :data:`PRETOKENIZERS` name); ``pre_json`` is the
        tokenizer.json section :meth:`to_json` writes back (None: cllm's own)."""
        check(lib.cllm_tokenizer_set_pretokenizer(self._h, getattr(lib, "CLLM_PRETOK_" + mode.upper())))
        self.pretokenizer = mode
        self._pre_json = None if mode == "cllm" else pre_json


# ---------------------------------------------------------------- helpers
def _iter_sources(paths: Any, texts: Any, exts: Optional[Sequence[str]]) -> Iterator[bytes]:
    """Bytes of every item (see :meth:`Tokenizer.train` for what each type means)."""
    if isinstance(paths, (str, bytes, bytearray, memoryview, os.PathLike, _corpus.Document)):
        paths = [paths]
    if isinstance(texts, (str, bytes, bytearray, memoryview)):
        texts = [texts]
    for item in paths:
        if isinstance(item, _corpus.Document):
            yield item.data
        elif isinstance(item, (str, os.PathLike)):
            p = os.fspath(item)
            if not os.path.exists(p):
                raise FileNotFoundError(f"{p[:200]!r}: no such file or directory (Tokenizer.train reads a str "
                                        f"as a path; pass text as texts=[...] or as bytes)")
            yield from (d.data for d in _corpus.iter_documents(p, exts))
        elif isinstance(item, (bytes, bytearray, memoryview)):
            yield bytes(item)
        else:
            raise ConfigTypeError(f"cannot train on {type(item).__name__}: expected a path, bytes or a Document "
                                  f"(text goes in texts=[...])")
    for item in texts:
        if isinstance(item, str):
            yield item.encode("utf-8")
        elif isinstance(item, (bytes, bytearray, memoryview)):
            yield bytes(item)
        else:
            raise ConfigTypeError(f"cannot train on {type(item).__name__} text: expected str or bytes")
