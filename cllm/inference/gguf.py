"""Export a checkpoint to GGUF, the file format of llama.cpp, Ollama and LM Studio.

:func:`export` writes a GPT-2 checkpoint as architecture ``gpt2`` and a
StarCoder-family one (``gpt_bigcode``) as ``starcoder``, as llama.cpp's
loaders read them. For ``gpt2``: the hyper-parameters under
``gpt2.*``, the tensors under llama.cpp's names with its layout (the Conv1D
matrices of a cllm / Hugging Face GPT-2 checkpoint are stored (in, out), so
they are transposed to (out, in) rows), and no ``output.weight``: the LM head
is tied to the token embedding, which llama.cpp then reuses as the output
matrix. The tokenizer goes in as a ``gpt2`` (byte-level BPE) vocabulary with
its merges, ``<|endoftext|>`` as bos/eos/eot/pad and the fill-in-the-middle
tokens under ``tokenizer.ggml.fim_*_token_id``.

``starcoder`` differs in three ways: its K/V head count goes in
``starcoder.attention.head_count_kv`` (1 for multi-query); its matrices are
``nn.Linear`` (out, in) already, so none is transposed; and the c_attn rows of
a multi-head model, stored head by head (q_h, k_h, v_h), are regrouped into
llama.cpp's (all q | all k | all v).

llama.cpp only tokenizes like cllm when it knows the pre-tokenizer: a
tokenizer trained with GPT-2's regex (``--pretokenizer gpt2``) is exported as
``tokenizer.ggml.pre = "gpt-2"``; cllm's code-aware splitter has no
llama.cpp counterpart, so such an export is refused.

Beside ``model.gguf`` goes ``model.Modelfile`` for ``ollama create``. The
writer is the ``gguf`` package (llama.cpp's own, the ``gguf`` extra); files
are written to a temporary sibling and renamed into place, and an existing
file is only replaced with ``overwrite=True``.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Tuple, Union

from ..data.tokenizer import EOT, FIM_MIDDLE, FIM_PAD, FIM_PREFIX, FIM_SUFFIX, Tokenizer
from ..errors import CheckpointError, ConfigError
from ..io.files import fsync_dir, temp_name
from ..io.safetensors import read_safetensors
from ..model.checkpoint import Checkpoint, open_checkpoint
from ..model.layout import tensor_from_hf

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

__all__ = ["export", "GGUF_ARCH", "GGUF_DTYPES", "LLAMA_CPP_PRE", "gguf_tensors", "modelfile_text"]

#: the ``dtype`` values :func:`export` writes (llama.cpp's names for them)
GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")
#: ``tokenizer.ggml.pre`` for each cllm pre-tokenizer llama.cpp implements
LLAMA_CPP_PRE = {"gpt2": "gpt-2", "starcoder": "starcoder"}
#: sampling defaults of ``cllm generate``, repeated in the Modelfile
_SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 1.0, "repeat_penalty": 1.0}


def _gguf() -> Any:
    """The ``gguf`` package, or a one-line error saying how to install it."""
    try:
        import gguf
    except ImportError:
        raise ConfigError('exporting to GGUF needs the gguf package: pip install "cllm[gguf]"') from None
    return gguf


def _ftypes(gguf: Any) -> Dict[str, Tuple[Any, Any]]:
    """dtype -> (GGML tensor type of the matrices, the file type recorded in the header)."""
    Q, F = gguf.GGMLQuantizationType, gguf.LlamaFileType
    return {"f32": (Q.F32, F.ALL_F32), "f16": (Q.F16, F.MOSTLY_F16), "bf16": (Q.BF16, F.MOSTLY_BF16),
            "q8_0": (Q.Q8_0, F.MOSTLY_Q8_0)}


def _checkpoint_tensors(ck: Checkpoint) -> Dict[str, "np.ndarray"]:
    """The float32 tensors of ``ck`` under their ``transformer.``-less Hugging Face names."""
    if ck.quantization:
        raise CheckpointError(f"{ck.path} holds {ck.quantization} weights; export the full-precision checkpoint "
                              f"it was quantized from (the GGUF dtype is chosen with --dtype)")
    tensors, _ = read_safetensors(ck.model_file)
    return {(k[len("transformer."):] if k.startswith("transformer.") else k): v for k, v in tensors.items()}


#: the GGUF architecture of each checkpoint model_type
GGUF_ARCH = {"gpt2": "gpt2", "gpt_bigcode": "starcoder"}


def gguf_tensors(ck: Checkpoint, tensors: Dict[str, "np.ndarray"]) -> Iterator[Tuple[str, "np.ndarray"]]:
    """(llama.cpp name, float32 array in llama.cpp's layout) for every tensor
    llama.cpp's GPT-2 / StarCoder reads, in its order. A numpy shape is the
    reverse of ggml's ``ne``: ``token_embd.weight`` is (n_vocab, n_embd), and the
    (in, out) Conv1D matrices of a GPT-2 become (out, in); gpt_bigcode's
    nn.Linear ones are (out, in) already."""
    import numpy as np
    mf = ck.model_file

    def get(name: str, transpose: bool = False) -> "np.ndarray":
        if name not in tensors:
            raise CheckpointError(f"{mf}: missing tensor {name!r}")
        a = tensor_from_hf(ck.config, name, tensors[name])   # the core's layout: Conv1D, all q | all k | all v
        return np.ascontiguousarray(a.T if transpose else a, dtype=np.float32)

    if "lm_head.weight" in tensors and not np.array_equal(tensors["lm_head.weight"], tensors.get("wte.weight")):
        log.warning("%s: lm_head.weight differs from wte.weight; cllm ties them, and so does the export (wte)", mf)
    yield "token_embd.weight", get("wte.weight")
    yield "position_embd.weight", get("wpe.weight")
    yield "output_norm.weight", get("ln_f.weight")
    yield "output_norm.bias", get("ln_f.bias")
    for i in range(ck.config.num_layers):
        h = f"h.{i}."
        for src, dst, tr in (("ln_1", "attn_norm", False), ("attn.c_attn", "attn_qkv", True),
                             ("attn.c_proj", "attn_output", True), ("ln_2", "ffn_norm", False),
                             ("mlp.c_fc", "ffn_up", True), ("mlp.c_proj", "ffn_down", True)):
            yield f"blk.{i}.{dst}.weight", get(h + src + ".weight", tr)
            yield f"blk.{i}.{dst}.bias", get(h + src + ".bias")


def _token_table(tok: Tokenizer, n_vocab: int, gguf: Any) -> Tuple[List[str], List[int]]:
    """Token strings (byte-level alphabet, special tokens verbatim) and types:
    special tokens CONTROL, the rest NORMAL, unused rows up to the model's
    vocabulary size ``[PAD<id>]`` / UNUSED (as llama.cpp's converter does)."""
    T = gguf.TokenType
    special = set(tok.special_ids())
    tokens: List[str] = []
    types: List[int] = []
    for i in range(n_vocab):
        if i < len(tok):
            tokens.append(tok.id_to_token(i) or "")
            types.append(int(T.CONTROL if i in special else T.NORMAL))
        else:
            tokens.append(f"[PAD{i}]")
            types.append(int(T.UNUSED))
    return tokens, types


def _pre_tokenizer(tok: Tokenizer) -> str:
    """``tokenizer.ggml.pre`` for ``tok``, or :class:`ConfigError` if llama.cpp
    would split text differently (a tokenizer without merges splits nowhere)."""
    if tok.num_merges == 0:
        return LLAMA_CPP_PRE["gpt2"]
    pre = LLAMA_CPP_PRE.get(tok.pretokenizer)
    if pre is None:
        raise ConfigError("this tokenizer uses cllm's code-aware pre-tokenizer, which llama.cpp does not implement "
                          "(it would tokenize text differently); train with --pretokenizer gpt2 to export")
    return pre


def _add_metadata(w: Any, ck: Checkpoint, name: str, ftype: Any, gguf: Any) -> None:
    cfg, tok = ck.config, ck.tokenizer
    w.add_name(name)
    w.add_context_length(cfg.context_len)
    w.add_embedding_length(cfg.embed_dim)
    w.add_block_count(cfg.num_layers)
    w.add_feed_forward_length(4 * cfg.embed_dim)
    w.add_head_count(cfg.num_heads)
    if cfg.model_type == "gpt_bigcode":
        w.add_head_count_kv(cfg.kv_heads)
    w.add_layer_norm_eps(1e-5)
    w.add_file_type(int(ftype))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(_pre_tokenizer(tok))
    tokens, types = _token_table(tok, cfg.vocab_size, gguf)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{tok.id_to_token(a)} {tok.id_to_token(b)}" for a, b in tok.merges()])
    if tok.eot_id < 0:
        raise CheckpointError(f"{ck.path}: the tokenizer has no {EOT} token")
    for add in (w.add_bos_token_id, w.add_eos_token_id, w.add_eot_token_id, w.add_pad_token_id):
        add(tok.eot_id)
    w.add_add_bos_token(False)   # cllm prompts start with the text itself
    w.add_add_eos_token(False)
    fim = {FIM_PREFIX: gguf.Keys.Tokenizer.FIM_PRE_ID, FIM_SUFFIX: gguf.Keys.Tokenizer.FIM_SUF_ID,
           FIM_MIDDLE: gguf.Keys.Tokenizer.FIM_MID_ID, FIM_PAD: gguf.Keys.Tokenizer.FIM_PAD_ID}
    for text, key in fim.items():
        i = tok.token_to_id(text)
        if i is not None and i in tok.special_ids():
            w.add_uint32(key, i)


def _encode(name: str, a: "np.ndarray", qtype: Any, gguf: Any) -> Tuple["np.ndarray", Any]:
    """``a`` in the GGML type this tensor gets: F32 for 1-D tensors and the
    position embeddings (as llama.cpp's converter keeps them), ``qtype`` for
    the rest; Q8_0 falls back to F16 for rows that are not a multiple of 32."""
    Q = gguf.GGMLQuantizationType
    if a.ndim == 1 or name == "position_embd.weight" or qtype == Q.F32:
        return a, Q.F32
    if qtype == Q.Q8_0 and a.shape[-1] % 32:
        log.warning("%s: rows of %d values are not a multiple of 32 (Q8_0 blocks): stored as F16", name,
                    a.shape[-1])
        qtype = Q.F16
    return gguf.quants.quantize(a, qtype), qtype


def modelfile_text(gguf_name: str, ck: Checkpoint) -> str:
    """An Ollama Modelfile for the GGUF file ``gguf_name`` (beside it): plain
    completion, or fill-in-the-middle (prefix-suffix-middle) when Ollama is
    given a suffix and the tokenizer has the FIM tokens."""
    tok = ck.tokenizer
    has_fim = all(tok.token_to_id(t) is not None for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE))
    template = (f"{{{{ if .Suffix }}}}{FIM_PREFIX}{{{{ .Prompt }}}}{FIM_SUFFIX}{{{{ .Suffix }}}}{FIM_MIDDLE}"
                f"{{{{ else }}}}{{{{ .Prompt }}}}{{{{ end }}}}" if has_fim else "{{ .Prompt }}")
    lines = [f"# Ollama model file for {gguf_name}, written by cllm export.",
             f"# Create the model with: ollama create NAME -f {os.path.splitext(gguf_name)[0]}.Modelfile",
             f"FROM ./{gguf_name}",
             f'TEMPLATE """{template}"""',
             f'PARAMETER stop "{EOT}"']
    if has_fim:
        lines.append(f'PARAMETER stop "{FIM_PREFIX}"')
    lines.append(f"PARAMETER num_ctx {ck.config.context_len}")
    lines += [f"PARAMETER {k} {v}" for k, v in _SAMPLING.items()]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _publish(path: str, overwrite: bool) -> Iterator[str]:
    """Yield a temporary sibling of ``path`` to write; on success it becomes
    ``path`` in one step (a hard link, which fails if ``path`` appeared
    meanwhile, or a rename when ``overwrite``); on failure it is removed."""
    tmp = temp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ConfigError(f"{path} already exists (pass overwrite=True / --force to replace it)") from None
            except OSError:   # a file system without hard links
                if os.path.lexists(path):
                    raise ConfigError(f"{path} already exists (pass overwrite=True / --force to replace it)") \
                        from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def export(checkpoint: Union[str, "os.PathLike[str]", Checkpoint], path: Union[str, "os.PathLike[str]"], *,
           dtype: str = "f16", overwrite: bool = False, modelfile: bool = True) -> str:
    """Write the model of ``checkpoint`` as a GGUF file at ``path`` for
    llama.cpp, Ollama and LM Studio; returns ``path``.

    ``dtype`` stores the matrices and the token embedding as ``"f32"``,
    ``"f16"``, ``"bf16"`` or ``"q8_0"`` (llama.cpp's 8-bit blocks); norms,
    biases and position embeddings stay F32. ``modelfile`` also writes an
    Ollama ``Modelfile`` beside it (``model.gguf`` -> ``model.Modelfile``).
    Existing files are refused unless ``overwrite``. Raises
    :class:`~cllm.ConfigError` for a bad dtype, an existing output or a
    tokenizer llama.cpp cannot reproduce (cllm's code-aware pre-tokenizer:
    train with ``pretokenizer="gpt2"``), :class:`~cllm.CheckpointError` for
    an unusable checkpoint.
    """
    if dtype not in GGUF_DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(GGUF_DTYPES)}, got {dtype!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ConfigError(f"{path} is a directory; give the GGUF file name, e.g. {os.path.join(path, 'model.gguf')}")
    mf_path = os.path.splitext(path)[0] + ".Modelfile"
    for p in (path, mf_path) if modelfile else (path,):
        if os.path.lexists(p) and not overwrite:
            raise ConfigError(f"{p} already exists (pass overwrite=True / --force to replace it)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(f"{parent}: no such directory for the GGUF file")
    ck = open_checkpoint(checkpoint)
    arch = GGUF_ARCH.get(ck.config.model_type)
    if arch is None:
        raise ConfigError(f"GGUF export of {ck.config.model_type} models is not supported")
    gguf = _gguf()
    # the name the user gave (a run directory), not the checkpoint-STEP it resolves to
    name = os.path.basename(os.path.normpath(ck.path if isinstance(checkpoint, Checkpoint) else
                                             os.fspath(checkpoint))) or "cllm"
    qtype, ftype = _ftypes(gguf)[dtype]
    _pre_tokenizer(ck.tokenizer)            # refuse before reading the weights
    tensors = _checkpoint_tensors(ck)
    with _publish(path, overwrite) as tmp:
        w = gguf.GGUFWriter(tmp, arch)
        try:
            _add_metadata(w, ck, name, ftype, gguf)
            for name, a in gguf_tensors(ck, tensors):
                data, t = _encode(name, a, qtype, gguf)
                w.add_tensor(name, data, raw_dtype=t)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
        finally:
            w.close()
    if modelfile:
        with _publish(mf_path, overwrite) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(modelfile_text(os.path.basename(path), ck))
    log.info("exported %s to %s (%s)", ck.path, path, dtype)
    return path
