"""Inference-only models: :class:`InferenceModel` (:func:`cllm.load` with
``dtype=``), quantized checkpoints (:func:`quantize`) and evaluation.

Loading maps ``model.safetensors`` read-only and hands the mapped bytes to
the C decoder: FP32 vectors are used in place (zero copy); every matrix is
copied (transposed to (out, in) for FP32, converted from F16/BF16, quantized
to int8 or converted to BF16) in C into the decoder's weight arena, one
mapping with huge pages requested, which decodes about twice as fast as
reading the file mapping's 4 KiB pages. A quantized checkpoint (written by
:func:`quantize`) is copied into the arena as stored.
Nothing here imports numpy, tqdm or the trainer on the generation path.

Quantized checkpoint format (a directory like any checkpoint):
  config.json        the source's, plus ``"cllm_quantization": {"dtype": D, "format": 1}``
  tokenizer.json     copied
  model.safetensors  ``__metadata__`` ``{"format": "cllm-quantized", "cllm_dtype": D}``;
                     every matrix (``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``,
                     ``mlp.c_proj`` weights and the tied ``transformer.wte.weight``)
                     stored BY OUTPUT ROW as ``<name>.q8`` (I8, (out, in), values in
                     [-127, 127]) + ``<name>.scale`` (F32, (out,): W ~= scale * q) for
                     int8, or ``<name>.bf16`` (BF16, (out, in)) for bf16; every other
                     tensor (LayerNorms, biases, ``wpe``) F32 under its usual name.
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Iterable, List, Optional, Tuple, Union

from .._native import check, ffi, lib
from ..config import ModelConfig
from ..model.checkpoint import CONFIG_FILE, MODEL_FILE, QUANT_KEY, TOKENIZER_FILE, Checkpoint, infill_order, open_checkpoint
from ..model.decoder import DTYPES, Decoder, GenerationMixin
from ..model.layout import head_major_qkv, qkv_regrouped
from ..errors import CheckpointError, ConfigError
from ..io.files import DirLock, LockedError, atomic_write, atomic_write_json, has_content, inside, read_json
from ..io.safetensors import DTYPE_SIZE, map_safetensors, write_tensors

log = logging.getLogger(__name__)

__all__ = ["InferenceModel", "quantize"]

_SRC_DTYPE = {"F32": lib.CLLM_DTYPE_F32, "F16": lib.CLLM_DTYPE_F16, "BF16": lib.CLLM_DTYPE_BF16}
_QSUFFIX = {"int8": ".q8", "bf16": ".bf16"}
#: HF GPT-2 buffers / duplicates that are not parameters cllm reads
_IGNORED = (".attn.bias", ".attn.masked_bias", "lm_head.weight")


class InferenceModel(GenerationMixin):
    """A GPT-2 (or StarCoder-family ``gpt_bigcode``) model for generation and
    evaluation only, with weights stored as
    ``"fp32"``, ``"bf16"`` or ``"int8"`` (see :func:`cllm.load`).

    Shares :class:`~cllm.model.decoder.GenerationMixin` (``generate``,
    ``generate_ids``, ``stream``, ``predict_next_token``, ``tokenize``,
    ``detokenize``) with :class:`cllm.Model`."""

    def __init__(self, config: ModelConfig, tokenizer: Any, decoder: Decoder, dtype: str, path: str = "") -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.dtype = dtype
        self.path = path
        self._dec = decoder

    def _decoder(self) -> Decoder:
        return self._dec

    @property
    def threads(self) -> int:
        """Threads (spheres) the decoder runs on."""
        return self._dec.threads

    @classmethod
    def load(cls, path: Union[str, Checkpoint], dtype: Optional[str] = None, threads: int = 0) -> "InferenceModel":
        """Open checkpoint directory ``path`` (or an opened
        :class:`~cllm.model.checkpoint.Checkpoint`) with weights stored as
        ``dtype`` (default: the checkpoint's own format, fp32 for a
        full-precision one). The checkpoint is read and verified as
        :meth:`cllm.Model.load` reads it."""
        ck = open_checkpoint(path)
        qdtype = ck.quantization
        if dtype is None:
            dtype = qdtype or "fp32"
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        if qdtype and dtype != qdtype:
            raise ConfigError(f"{ck.path} holds {qdtype} weights (quantized); load it with dtype={qdtype!r} or "
                              f"load the full-precision checkpoint it was made from")
        st = map_safetensors(ck.model_file)
        dec = Decoder.create(ck.config, dtype, threads)
        dec._keep = st
        _fill(dec, st, qdtype, ck.config)
        dec.reset()
        im = cls(ck.config, ck.tokenizer, dec, dtype, ck.path)
        im.infill_order = infill_order(ck)
        return im

    def logits(self, ids: Any) -> Any:
        """Next-token logits at every position of ``ids`` (T, V), float32 numpy."""
        return self.decode_logits(ids)

    def __repr__(self) -> str:
        c = self.config
        return (f"InferenceModel(vocab_size={c.vocab_size}, context_len={c.context_len}, "
                f"num_layers={c.num_layers}, num_heads={c.num_heads}, embed_dim={c.embed_dim}, {c.arch_repr()}"
                f"dtype={self.dtype!r}, threads={self.threads})")


def _entry(st: Any, name: str, dtypes: Iterable[str], shape: Tuple[int, ...]) -> str:
    """The key of tensor ``name`` (HF names with or without ``transformer.``),
    checked for dtype and shape."""
    key = name
    if key not in st.entries and name.startswith("transformer."):
        key = name[len("transformer."):]
    if key not in st.entries:
        raise CheckpointError(f"{st.path}: missing tensor {name!r}")
    e = st.entries[key]
    if e.dtype not in dtypes:
        raise CheckpointError(f"{st.path}: tensor {key!r} has dtype {e.dtype}, expected {' or '.join(dtypes)}")
    if tuple(e.shape) != tuple(shape):
        raise CheckpointError(f"{st.path}: tensor {key!r} has shape {tuple(e.shape)}, config.json implies "
                              f"{tuple(shape)}")
    return key


def _fill(dec: Decoder, st: Any, qdtype: Optional[str], config: Optional[ModelConfig] = None) -> None:
    """Hand every tensor of mapped file ``st`` to ``dec`` (in place when
    possible). A multi-head gpt_bigcode's c_attn rows (``config``) are
    reordered on the way; a quantized checkpoint holds them reordered."""
    used = set()
    for i, (name, shape, rows, cols) in enumerate(dec.tensors()):
        if qdtype and rows:
            key = _entry(st, name + _QSUFFIX[qdtype], ("I8",) if qdtype == "int8" else ("BF16",), (rows, cols))
            skey = _entry(st, name + ".scale", ("F32",), (rows,)) if qdtype == "int8" else None
            sc = ffi.cast("float *", ffi.from_buffer(st.view(skey))) if skey else ffi.NULL
            # borrow=0: matrices are copied into the decoder's huge-page weight
            # arena (twice the decode speed of reading the 4 KiB-paged mapping)
            check(lib.cllm_decoder_set_quantized(dec._h, i, ffi.from_buffer(st.view(key)), sc, 0), st.path)
            used.update((key, skey))
            continue
        key = _entry(st, name, tuple(_SRC_DTYPE), shape)
        e = st.entries[key]
        borrow = e.dtype == "F32" and st.aligned(key) and not rows   # vectors in place, matrices copied
        src = st.view(key)
        if not qdtype and config is not None and qkv_regrouped(config, name):   # quantized files hold them regrouped
            src, borrow = head_major_qkv(src, config.kv_heads, config.embed_dim // config.num_heads), False
        check(lib.cllm_decoder_set_tensor(dec._h, i, ffi.from_buffer(src), _SRC_DTYPE[e.dtype], int(borrow)),
              st.path)
        used.add(key)
    extra = [k for k in st.entries if k not in used and not k.endswith(_IGNORED)]
    if extra:
        log.warning("%s: ignoring %d tensor(s) cllm does not use, e.g. %s", st.path, len(extra), extra[0])


def quantize(checkpoint: str, out_dir: str, dtype: str = "int8") -> str:
    """Write a quantized copy of ``checkpoint`` to ``out_dir`` (``dtype``
    ``"int8"`` or ``"bf16"``; format in this module's docstring) that
    :func:`cllm.load` opens without re-quantizing. Returns ``out_dir``."""
    if dtype not in _QSUFFIX:
        raise ConfigError(f"quantize: dtype must be one of {', '.join(_QSUFFIX)}; got {dtype!r}")
    ck = open_checkpoint(checkpoint)
    for src in (checkpoint, ck.path):
        if inside(out_dir, src) or inside(src, out_dir):
            raise ConfigError(f"quantize: the output {out_dir} and the checkpoint {src} overlap (one is, or is "
                              f"inside, the other); write the quantized copy to a directory of its own")
    if ck.quantization:
        raise ConfigError(f"{checkpoint} is already quantized; quantize the full-precision checkpoint")
    if has_content(out_dir) and not (os.path.isfile(os.path.join(out_dir, CONFIG_FILE))
                                     and QUANT_KEY in _config_keys(os.path.join(out_dir, CONFIG_FILE))):
        raise ConfigError(f"quantize: {out_dir} is not empty and holds no quantized checkpoint; "
                          f"choose a new directory")
    os.makedirs(out_dir, exist_ok=True)
    try:
        with DirLock(out_dir, "quantizing"):
            return _quantize_locked(ck, out_dir, dtype)
    except LockedError as e:
        raise ConfigError(f"quantize: {e}") from None


def _config_keys(path: str) -> Any:
    try:
        raw = read_json(path)
    except ValueError:
        return {}
    return raw if isinstance(raw, dict) else {}


def _quantize_locked(ck: Checkpoint, out_dir: str, dtype: str) -> str:
    checkpoint = ck.path
    t0 = time.perf_counter()
    m = InferenceModel.load(ck, dtype=dtype, threads=1)
    dec = m._dec
    items: List[Tuple[str, str, Tuple[int, ...], Any]] = []
    w, sc = ffi.new("void **"), ffi.new("float **")
    for i, (name, shape, rows, cols) in enumerate(dec.tensors()):
        check(lib.cllm_decoder_get_tensor(dec._h, i, ffi.cast("const void **", w), ffi.cast("const float **", sc)))
        if rows:
            if dtype == "int8":
                items.append((name + ".q8", "I8", (rows, cols), ffi.buffer(ffi.cast("char *", w[0]), rows * cols)))
                items.append((name + ".scale", "F32", (rows,), ffi.buffer(ffi.cast("char *", sc[0]), 4 * rows)))
            else:
                items.append((name + ".bf16", "BF16", (rows, cols),
                              ffi.buffer(ffi.cast("char *", w[0]), 2 * rows * cols)))
        else:
            n = math.prod(shape)
            items.append((name, "F32", shape, ffi.buffer(ffi.cast("char *", w[0]), 4 * n)))
    write_tensors(os.path.join(out_dir, MODEL_FILE), items,
                  {"format": "cllm-quantized", "cllm_dtype": dtype, "producer": "cllm"})
    raw = dict(ck.hf_config)
    raw[QUANT_KEY] = {"dtype": dtype, "format": 1}
    atomic_write_json(os.path.join(out_dir, CONFIG_FILE), raw)
    with open(ck.file(TOKENIZER_FILE), "rb") as f:
        atomic_write(os.path.join(out_dir, TOKENIZER_FILE), [f.read()])
    size = sum(DTYPE_SIZE[d] * math.prod(s) for _, d, s, _ in items)
    log.info("quantized %s -> %s (%s, %.1f MB of tensors) in %.2fs", checkpoint, out_dir, dtype, size / 1e6,
             time.perf_counter() - t0)
    return out_dir
