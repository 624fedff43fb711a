"""Tokenizer. For now byte-level (256 byte tokens + <|endoftext|>); the BPE
issue fills in a trained byte-level BPE behind the same class."""
from __future__ import annotations

import json
import os
from typing import Iterable, List, Sequence, Union

import numpy as np

EOT = "<|endoftext|>"


def _bytes_to_unicode() -> dict:
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


class Tokenizer:
    """Byte-level tokenizer: ids 0..255 are bytes, 256 is <|endoftext|>."""

    def __init__(self) -> None:
        self.eot_id = 256

    @classmethod
    def byte_level(cls) -> "Tokenizer":
        """The untrained byte-level tokenizer."""
        return cls()

    def __len__(self) -> int:
        return 257

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        return len(self)

    def encode(self, text: Union[str, bytes]) -> List[int]:
        """Token ids of ``text`` (str is UTF-8 encoded first)."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return list(data)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Bytes of ``ids`` (<|endoftext|> decodes to its literal text)."""
        out = bytearray()
        for i in ids:
            i = int(i)
            if 0 <= i < 256:
                out.append(i)
            elif i == self.eot_id:
                out += EOT.encode()
            else:
                raise ValueError(f"token id {i} out of range [0, {len(self)})")
        return bytes(out)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` (invalid UTF-8 is replaced)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def to_json(self) -> dict:
        """Hugging Face ``tokenizers`` JSON (byte-level BPE with no merges)."""
        b2u = _bytes_to_unicode()
        vocab = {b2u[b]: b for b in range(256)}
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [{"id": self.eot_id, "content": EOT, "single_word": False,
                              "lstrip": False, "rstrip": False, "normalized": False,
                              "special": True}],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                              "trim_offsets": False, "use_regex": False},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": False,
                        "trim_offsets": False, "use_regex": False},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": []},
        }

    def save(self, path: str) -> None:
        """Write ``tokenizer.json`` (a directory gets tokenizer.json inside)."""
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "Tokenizer":
        """Read a tokenizer.json written by :meth:`save`."""
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        try:
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"tokenizer file not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"corrupt tokenizer file {path}: {e}") from None
        if not isinstance(obj, dict) or obj.get("model", {}).get("type") != "BPE":
            raise ValueError(f"{path}: not a byte-level BPE tokenizer.json")
        return cls()

    def encode_documents(self, docs: Sequence[bytes]) -> np.ndarray:
        """Concatenate documents, each followed by <|endoftext|>, as uint16/32 ids."""
        dtype = np.uint16 if len(self) <= 65535 else np.uint32
        parts = []
        for d in docs:
            parts.append(np.asarray(self.encode(d), dtype=dtype))
            parts.append(np.asarray([self.eot_id], dtype=dtype))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
