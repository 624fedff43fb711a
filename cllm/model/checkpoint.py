"""Checkpoints: crash-consistent directories that ARE Hugging Face GPT-2 models.

One checkpoint is one directory of files::

  model.safetensors      weights (HF GPT-2 names, float32)
  config.json            GPT2Config keys
  tokenizer.json         HF ``tokenizers`` format
  tokenizer_config.json  for ``AutoTokenizer``: PreTrainedTokenizerFast, <|endoftext|> as bos/eos/unk/pad
  special_tokens_map.json  the same special tokens
  generation_config.json   eos/pad ids and cllm's sampling defaults for ``generate`` / pipelines
  optimizer.safetensors  AdamW moments (``adam_m.<name>``, ``adam_v.<name>``), training only
  trainer_state.json     step, data position, training options, training only
  checkpoint.json        the manifest, written last: step, run id, and each file's
                         size and SHA-256

:func:`save_checkpoint` never writes into a live checkpoint. A save to ``OUT``:

1. writes every file into a hidden sibling ``OUT/.checkpoint-STEP.tmp.PID/`` (each
   file fsynced, the manifest last, then the directory fsynced);
2. renames it to ``OUT/checkpoint-STEP`` (atomic; a free name is picked if a
   checkpoint of the same step exists);
3. switches the symlink ``OUT/latest`` to it (atomic ``rename`` of a new symlink) --
   this is the commit point;
4. makes the top-level names ``OUT/model.safetensors``, ``OUT/config.json``, ...
   symlinks to ``latest/<name>`` (so ``OUT`` itself is a plain HF model directory
   for ``transformers``), and
5. deletes all but the newest ``keep`` checkpoints of the run (renamed to a temp
   name first) and temp files/directories that killed processes left behind.

A kill at any instant therefore leaves ``latest`` on the previous complete
checkpoint or on the new complete one. :func:`resolve_checkpoint` follows
``latest`` (or, if a kill happened before the first switch, picks the newest
complete ``checkpoint-*``), and :func:`verify_checkpoint` checks every file
against the manifest (size, SHA-256, step), so a partial or mixed checkpoint --
e.g. one assembled by hand or written by an older version -- is refused with a
message naming the files and steps. Directories without a manifest (plain HF
models) are loaded as they are, after checking that the ``step`` recorded in the
safetensors metadata agrees with ``trainer_state.json``.

:func:`open_checkpoint` is the one reader: every loader (:meth:`cllm.Model.load`,
:class:`cllm.InferenceModel`, ``--init-from``, ``--resume``, ``cllm info``,
:func:`cllm.quantize`) opens a checkpoint through it, so one set of checks applies.
This module knows the model only by duck typing and imports nothing from
:mod:`cllm.model.gpt`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from ..config import MODEL_TYPES, ModelConfig
from ..errors import CheckpointError
from ..io.files import (DirLock, LockedError, atomic_symlink, atomic_write_json, fsync_dir,
                        read_json as _read_json, remove_stale_temps, sha256_file, temp_name)
from ..io.hub import resolve_model_path
from ..io.safetensors import read_entries, read_metadata, read_safetensors, write_safetensors
from ..data.tokenizer import EOT, Tokenizer
from .layout import tensor_to_hf

log = logging.getLogger(__name__)

__all__ = ["MODEL_FILE", "CONFIG_FILE", "TOKENIZER_FILE", "OPTIMIZER_FILE", "STATE_FILE", "MANIFEST_FILE",
           "LATEST", "CheckpointError", "save_checkpoint", "resolve_checkpoint", "verify_checkpoint",
           "list_checkpoints", "Checkpoint", "open_checkpoint", "infill_order", "QUANT_KEY", "QUANT_DTYPES", "read_state", "load_optimizer_state", "read_json",
           "read_safetensors", "write_safetensors", "new_run_id", "TOKENIZER_CONFIG_FILE", "SPECIAL_TOKENS_FILE",
           "GENERATION_CONFIG_FILE", "hf_tokenizer_files"]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
#: Hugging Face files beside tokenizer.json so AutoTokenizer / pipelines work as-is.
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
GENERATION_CONFIG_FILE = "generation_config.json"
_HF_FILES = (TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE, GENERATION_CONFIG_FILE)
MANIFEST_FILE = "checkpoint.json"
LATEST = "latest"
FORMAT = "cllm-checkpoint-1"
_ALL_FILES = (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE, *_HF_FILES, OPTIMIZER_FILE, STATE_FILE, MANIFEST_FILE)
_CKPT_RE = re.compile(r"^checkpoint-(\d+)(?:\.(\d+))?$")


def read_json(path: str) -> Any:
    """Load a checkpoint JSON file (:class:`CheckpointError` naming it if missing or corrupt)."""
    return _read_json(path, corrupt=CheckpointError, missing=CheckpointError)


def new_run_id() -> str:
    """A fresh id for a training run (kept across ``--resume``)."""
    return uuid.uuid4().hex


# ------------------------------------------------------------------ saving
def _write_files(model: Any, d: str, trainer_state: Optional[Dict[str, Any]], save_optimizer: bool) -> None:
    """Every file of a checkpoint into directory ``d``; the manifest last."""
    step = trainer_state.get("step") if trainer_state is not None else None
    meta = {"format": "pt", "producer": "cllm"}
    if step is not None:
        meta["step"] = str(step)
    cfg = model.config
    write_safetensors(os.path.join(d, MODEL_FILE),
                      ((name, tensor_to_hf(cfg, name, v)) for name, v in model.named_parameters()), meta)
    atomic_write_json(os.path.join(d, CONFIG_FILE), model.config.to_hf(model.tokenizer.eot_id))
    model.tokenizer.save(os.path.join(d, TOKENIZER_FILE))
    for name, obj in hf_tokenizer_files(model.tokenizer, model.config.context_len).items():
        atomic_write_json(os.path.join(d, name), obj)
    files = [MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE, *_HF_FILES]
    if trainer_state is not None:
        if save_optimizer:
            opt = []
            for t in model.tensor_info():
                a, n = t["offset"], t["numel"]
                opt.append(("adam_m." + t["name"], model.adam_m[a:a + n].reshape(t["shape"])))
                opt.append(("adam_v." + t["name"], model.adam_v[a:a + n].reshape(t["shape"])))
            write_safetensors(os.path.join(d, OPTIMIZER_FILE), opt, dict(meta, format="cllm-adamw"))
            files.append(OPTIMIZER_FILE)
        atomic_write_json(os.path.join(d, STATE_FILE), trainer_state)
        files.append(STATE_FILE)
    manifest = {
        "format": FORMAT, "step": step,
        "run_id": trainer_state.get("run_id") if trainer_state is not None else None,
        "saved_ns": time.time_ns(),
        "files": {f: {"bytes": os.path.getsize(os.path.join(d, f)), "sha256": sha256_file(os.path.join(d, f))}
                  for f in files},
    }
    atomic_write_json(os.path.join(d, MANIFEST_FILE), manifest)
    fsync_dir(d)


def hf_tokenizer_files(tokenizer: Any, context_len: int) -> Dict[str, Dict[str, Any]]:
    """``{file name: JSON}`` of tokenizer_config.json, special_tokens_map.json and
    generation_config.json: ``<|endoftext|>`` is bos, eos, unk and pad (as in GPT-2,
    plus pad so batched pipelines work); every other special token (the
    fill-in-the-middle ones) is an additional special token, so
    ``transformers`` never splits or skips it differently from cllm; decoding
    keeps spaces exactly; sampling defaults are those of ``cllm generate``
    (temperature 0.8, top-k 40)."""
    eot_id = tokenizer.eot_id
    specials: Dict[str, Any] = {k: EOT for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    names = {i: tokenizer.token_bytes(i).decode("utf-8") for i in tokenizer.special_ids()}
    extra = [n for i, n in sorted(names.items()) if n != EOT]
    if extra:
        specials["additional_special_tokens"] = extra
    return {
        TOKENIZER_CONFIG_FILE: {
            "tokenizer_class": "PreTrainedTokenizerFast", **specials, "model_max_length": context_len,
            "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False,
            "added_tokens_decoder": {str(i): {"content": n, "lstrip": False, "normalized": False,
                                              "rstrip": False, "single_word": False, "special": True}
                                     for i, n in sorted(names.items())},
        },
        SPECIAL_TOKENS_FILE: specials,
        GENERATION_CONFIG_FILE: {
            "bos_token_id": eot_id, "eos_token_id": eot_id, "pad_token_id": eot_id,
            "do_sample": True, "temperature": 0.8, "top_k": 40, "max_new_tokens": 128,
        },
    }


def _free_name(out: str, step: int) -> str:
    name, k = f"checkpoint-{step}", 0
    while os.path.lexists(os.path.join(out, name)):
        k += 1
        name = f"checkpoint-{step}.{k}"
    return name


def save_checkpoint(model: Any, path: str, trainer_state: Optional[Dict[str, Any]] = None,
                    save_optimizer: bool = True, keep: int = 1, overwrite: bool = False) -> str:
    """Write ``model`` (and, with ``trainer_state``, its optimizer and trainer
    state) as a new checkpoint of directory ``path``, crash-consistently (see
    the module docstring), holding ``path/.lock``; keeps the newest ``keep``
    checkpoints of this run (others' are never touched). A file at one of the
    top-level names that cllm did not write (not a link into ``latest`` and
    not a copy of the current checkpoint's file) is refused unless
    ``overwrite``. Returns the new checkpoint's directory."""
    path = os.fspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise CheckpointError(f"{path}: exists and is not a directory")
    if keep < 1:
        raise CheckpointError(f"keep must be >= 1, got {keep}")
    model.config.check_savable()
    os.makedirs(path, exist_ok=True)
    try:
        with DirLock(path, "saving a checkpoint"):
            return _save_locked(model, path, trainer_state, save_optimizer, keep, overwrite)
    except LockedError as e:
        raise CheckpointError(f"cannot save: {e}") from None


def _save_locked(model: Any, path: str, trainer_state: Optional[Dict[str, Any]], save_optimizer: bool,
                 keep: int, overwrite: bool) -> str:
    real_latest = _check_top_level(path, overwrite)
    remove_stale_temps(path, all_dead=True)   # the lock is ours: no other writer is alive
    step = int(trainer_state["step"]) if trainer_state is not None else 0
    tmp = temp_name(os.path.join(path, f"checkpoint-{step}"))
    os.makedirs(tmp)
    try:
        _write_files(model, tmp, trainer_state, save_optimizer)
        if real_latest:   # a copy made with links followed: `latest` is a real checkpoint directory
            man = _manifest_or_none(os.path.join(path, LATEST))
            os.rename(os.path.join(path, LATEST), os.path.join(path, _free_name(path, int(man.get("step") or 0))))
        name = _free_name(path, step)
        os.rename(tmp, os.path.join(path, name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path)
    atomic_symlink(name, os.path.join(path, LATEST))  # the commit point
    present = set(os.listdir(os.path.join(path, name)))
    for f in _ALL_FILES:
        link = os.path.join(path, f)
        if f in present:
            if not (os.path.islink(link) and os.readlink(link) == f"{LATEST}/{f}"):
                atomic_symlink(f"{LATEST}/{f}", link)
        elif os.path.islink(link) and os.readlink(link) == f"{LATEST}/{f}":
            os.unlink(link)
    _prune(path, name, keep)
    log.debug("saved checkpoint %s", os.path.join(path, name))
    return os.path.join(path, name)


def _check_top_level(path: str, overwrite: bool) -> bool:
    """Refuse (before anything is written) to replace top-level files of
    ``path`` that cllm did not write; returns whether ``latest`` is a real
    checkpoint directory (a copy made with links followed) to move aside."""
    latest = os.path.join(path, LATEST)
    real_latest = os.path.lexists(latest) and not os.path.islink(latest)
    if real_latest and not (os.path.isdir(latest) and _manifest_or_none(latest)):
        raise CheckpointError(f"{latest}: not a link to a checkpoint and not a checkpoint cllm wrote; "
                              f"move it away or save to another directory")
    current = resolve_checkpoint(path) if os.path.lexists(latest) else None
    foreign = []
    for f in _ALL_FILES:
        p = os.path.join(path, f)
        if not os.path.lexists(p) or (os.path.islink(p) and os.readlink(p) == f"{LATEST}/{f}"):
            continue
        if os.path.isdir(p) and not os.path.islink(p):
            foreign.append(f"{p} is a directory")
            continue
        mine = os.path.join(current, f) if current else ""
        same = (bool(mine) and os.path.isfile(mine) and os.path.isfile(p) and not os.path.islink(p)
                and os.path.getsize(p) == os.path.getsize(mine) and sha256_file(p) == sha256_file(mine))
        if not same and not overwrite:
            foreign.append(f"{p} was not written by cllm")
    if foreign:
        raise CheckpointError(f"{path}: refusing to replace files cllm did not write: " + "; ".join(foreign)
                              + " (move them away, save to a new directory, or overwrite explicitly)")
    return real_latest


def _prune(out: str, current: str, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints of the run that wrote
    ``current`` (``current`` always stays); other runs' checkpoints, and
    directories without a readable manifest, are never deleted."""
    run_id = _manifest_or_none(os.path.join(out, current)).get("run_id")
    if run_id is None:
        return
    mine = [(name, d, man) for name, d, man in list_checkpoints(out)
            if name != current and man.get("run_id") == run_id]
    mine.sort(key=lambda x: (x[2].get("step") or 0, x[2].get("saved_ns") or 0), reverse=True)
    doomed = mine[keep - 1:]
    for name, d, _ in doomed:
        dead = temp_name(d, ".del")
        with contextlib.suppress(OSError):
            os.rename(d, dead)
            shutil.rmtree(dead, ignore_errors=True)
    if doomed:
        fsync_dir(out)


# ----------------------------------------------------------------- loading
def _manifest_or_none(d: str) -> Dict[str, Any]:
    try:
        m = _read_json(os.path.join(d, MANIFEST_FILE))
    except (OSError, ValueError):
        return {}
    return m if isinstance(m, dict) else {}


def list_checkpoints(out: str) -> List[Tuple[str, str, Dict[str, Any]]]:
    """(name, directory, manifest) of every ``checkpoint-*`` directory in ``out``
    (manifest ``{}`` when missing or unreadable), oldest first."""
    res = []
    try:
        names = os.listdir(out)
    except OSError:
        return []
    for name in names:
        d = os.path.join(out, name)
        if _CKPT_RE.match(name) and os.path.isdir(d) and not os.path.islink(d):
            res.append((name, d, _manifest_or_none(d)))
    res.sort(key=lambda x: (x[2].get("step") or 0, x[2].get("saved_ns") or 0))
    return res


def resolve_checkpoint(path: str) -> str:
    """The directory holding the current checkpoint of ``path``: the target of
    ``path/latest``; else (a save killed before its first switch, or a dangling
    ``latest``) the newest ``checkpoint-*`` with a manifest; else ``path``."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        if os.path.lexists(path):
            raise CheckpointError(f"{path}: is not a checkpoint directory")
        raise CheckpointError(f"{path}: checkpoint directory not found")
    latest = os.path.join(path, LATEST)
    if os.path.islink(latest):
        target = os.readlink(latest)
        if not _CKPT_RE.match(target):
            raise CheckpointError(f"{latest} points to {target!r}, not to a checkpoint-STEP directory of "
                                  f"this run: refusing to follow it")
    if os.path.isdir(latest):
        return os.path.join(path, os.readlink(latest)) if os.path.islink(latest) else latest
    complete = [d for _, d, man in list_checkpoints(path) if man]
    if complete:
        if os.path.lexists(latest):
            log.warning("%s points to a missing checkpoint; using %s", latest, complete[-1])
        return complete[-1]
    return path


def verify_checkpoint(d: str) -> Dict[str, Any]:
    """Check checkpoint directory ``d`` against its manifest (every listed file's
    size and SHA-256; the steps in the manifest, trainer state and safetensors
    metadata agree). Returns the manifest (``{}`` for a directory without one).
    Raises :class:`CheckpointError` naming the files and steps."""
    mpath = os.path.join(d, MANIFEST_FILE)
    if not os.path.lexists(mpath):
        _check_legacy_steps(d)
        return {}
    man = read_json(mpath)
    files = man.get("files") if isinstance(man, dict) else None
    if not isinstance(files, dict) or man.get("format") != FORMAT:
        raise CheckpointError(f"{mpath}: not a cllm checkpoint manifest")
    step = man.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise CheckpointError(f"{mpath}: field 'step' must be an integer, got {step!r}")
    bad = []
    for f, ent in files.items():
        if f not in _ALL_FILES:
            raise CheckpointError(f"{mpath}: lists {f!r}, which is not a checkpoint file name")
        if not isinstance(ent, dict):
            raise CheckpointError(f"{mpath}: the entry of {f} must be an object, got {ent!r}")
        fp = os.path.join(d, f)
        if not os.path.isfile(fp):
            bad.append(f"{fp} is missing")
        elif os.path.getsize(fp) != ent.get("bytes"):
            bad.append(f"{fp} has {os.path.getsize(fp)} bytes, the manifest says {ent.get('bytes')}")
        elif sha256_file(fp) != ent.get("sha256"):
            bad.append(f"{fp} differs from the file saved at step {step} (SHA-256 mismatch)")
    for f in (OPTIMIZER_FILE, STATE_FILE):
        if f not in files and os.path.exists(os.path.join(d, f)):
            bad.append(f"{os.path.join(d, f)} is not part of the checkpoint saved at step {step}")
    if bad:
        raise CheckpointError(f"{d}: partial or mixed checkpoint (manifest {mpath}, step {step}): "
                              + "; ".join(bad) + _earlier_hint(d))
    return man


def _earlier_hint(d: str) -> str:
    out = os.path.dirname(os.path.abspath(d))
    others = [n for n, dd, man in list_checkpoints(out) if man and os.path.abspath(dd) != os.path.abspath(d)]
    if not others:
        return ""
    return f" (earlier checkpoints in {out}: {', '.join(others)})"


def _check_legacy_steps(d: str) -> None:
    """Without a manifest: the steps in trainer_state.json and the safetensors
    metadata must agree (catches files of different saves side by side)."""
    steps: Dict[str, Any] = {}
    sp = os.path.join(d, STATE_FILE)
    if os.path.isfile(sp):
        st = read_json(sp)
        if isinstance(st, dict) and "step" in st:
            steps[sp] = str(st["step"])
    for f in (MODEL_FILE, OPTIMIZER_FILE):
        fp = os.path.join(d, f)
        if os.path.isfile(fp):
            s = read_metadata(fp).get("step")
            if s is not None:
                steps[fp] = s
    if len(set(steps.values())) > 1:
        raise CheckpointError(f"{d}: mixed checkpoint: " + ", ".join(f"{f} is from step {s}" for f, s in steps.items()))


#: config.json key of a quantized checkpoint (``{"dtype": "int8"|"bf16", "format": 1}``)
QUANT_KEY = "cllm_quantization"
#: storage formats a quantized checkpoint may hold
QUANT_DTYPES = ("int8", "bf16")


@dataclass(frozen=True)
class Checkpoint:
    """One opened and verified checkpoint: what every loader reads first.

    :func:`open_checkpoint` is the only reader of a checkpoint's config and
    tokenizer, so :meth:`cllm.Model.load`, :class:`cllm.InferenceModel`,
    ``--init-from``, ``--resume``, ``cllm info`` and :func:`cllm.quantize` apply
    the same checks."""

    #: the directory holding the current checkpoint (``latest`` followed)
    path: str
    #: the model shape from ``config.json``
    config: ModelConfig
    #: ``config.json`` as read (Hugging Face ``GPT2Config`` keys)
    hf_config: Dict[str, Any]
    #: the tokenizer from ``tokenizer.json``
    tokenizer: Tokenizer
    #: the manifest (``{}`` for a directory without one: a plain HF model)
    manifest: Dict[str, Any]
    #: ``"int8"`` or ``"bf16"`` for a quantized checkpoint, else None
    quantization: Optional[str]

    def file(self, name: str) -> str:
        """The path of file ``name`` of this checkpoint."""
        return os.path.join(self.path, name)

    @property
    def model_file(self) -> str:
        """The path of ``model.safetensors``."""
        return self.file(MODEL_FILE)

    def has_state(self) -> bool:
        """Whether the checkpoint holds a ``trainer_state.json`` (a training run's)."""
        return os.path.lexists(self.file(STATE_FILE))

    def state(self) -> Dict[str, Any]:
        """The ``trainer_state.json`` (:class:`CheckpointError` if missing or not an object)."""
        return read_state(self.path)


def infill_order(ck: Checkpoint) -> str:
    """The infill prompt order (:data:`cllm.data.fim.INFILL_ORDERS`) for the
    model of ``ck``: ``"psm"`` when its training run made no SPM examples
    (``fim_spm_rate`` 0 in ``trainer_state.json``), else ``"spm"``, the order
    whose prompts the cache reuses while the user types (StarCoder-family
    models are trained on both)."""
    if ck.has_state():
        try:
            rate = ck.state().get("options", {}).get("fim_spm_rate")
        except (CheckpointError, AttributeError):
            rate = None
        if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate == 0:
            return "psm"
    return "spm"


def _model_config(cfg_path: str, raw: Any) -> ModelConfig:
    """The :class:`ModelConfig` of a ``config.json`` object (GPT-2, or
    gpt_bigcode), refusing variants cllm does not run (another LayerNorm
    epsilon or attention scaling, cross-attention)."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{cfg_path}: not a JSON object")
    arch = raw.get("model_type", "gpt2")
    if arch not in MODEL_TYPES:
        raise CheckpointError(f"{cfg_path}: architecture {arch} is not supported yet (cllm runs GPT-2 models, "
                              f"model_type gpt2, and StarCoder-family gpt_bigcode ones for inference)")
    eps = raw.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or abs(float(eps) - 1e-5) > 1e-9:
        raise CheckpointError(f"{cfg_path}: layer_norm_epsilon {eps!r} is not supported (cllm uses 1e-5, as GPT-2)")
    if raw.get("scale_attn_by_inverse_layer_idx") or raw.get("scale_attn_weights") is False:
        raise CheckpointError(f"{cfg_path}: only GPT-2's attention scaling 1/sqrt(head_dim) is supported")
    if raw.get("add_cross_attention"):
        raise CheckpointError(f"{cfg_path}: cross-attention is not supported")
    if raw.get("tie_word_embeddings") is False:
        raise CheckpointError(f"{cfg_path}: an untied LM head (tie_word_embeddings false) is not supported "
                              f"(cllm's LM head is the token embedding)")
    try:
        return ModelConfig.from_hf(raw)
    except ValueError as e:
        raise CheckpointError(f"{cfg_path}: {e}") from None


def _quantization(cfg_path: str, raw: Dict[str, Any]) -> Optional[str]:
    q = raw.get(QUANT_KEY)
    if q is None:
        return None
    dtype = q.get("dtype") if isinstance(q, dict) else None
    if dtype not in QUANT_DTYPES:
        raise CheckpointError(f"{cfg_path}: unknown {QUANT_KEY} {q!r}")
    return dtype


def open_checkpoint(path: Union[str, "os.PathLike[str]", Checkpoint]) -> Checkpoint:
    """Open the current checkpoint of ``path`` (a directory, or a Hugging Face
    hub id fetched by :func:`cllm.io.hub.resolve_model_path`; then
    :func:`resolve_checkpoint`):
    verified against its manifest (:func:`verify_checkpoint`), ``config.json``
    checked, ``tokenizer.json`` loaded and checked against the vocabulary
    size. An already opened :class:`Checkpoint` is returned as it is. Raises
    :class:`CheckpointError` naming the file and the problem."""
    if isinstance(path, Checkpoint):
        return path
    d = resolve_checkpoint(resolve_model_path(path))
    cfg_path = os.path.join(d, CONFIG_FILE)
    if not os.path.lexists(cfg_path):
        raise CheckpointError(f"{os.fspath(path)}: not a checkpoint directory (no {CONFIG_FILE})")
    manifest = verify_checkpoint(d)
    raw = read_json(cfg_path)
    cfg = _model_config(cfg_path, raw)
    quant = _quantization(cfg_path, raw)
    tok_path = os.path.join(d, TOKENIZER_FILE)
    if not os.path.isfile(tok_path):
        raise CheckpointError(f"{tok_path}: file not found (cllm needs a tokenizers-format tokenizer.json; "
                              "save the tokenizer with save_pretrained from a fast tokenizer)")
    try:
        tok = Tokenizer.load(tok_path)
    except (ValueError, OSError) as e:
        raise CheckpointError(str(e) if tok_path in str(e) else f"{tok_path}: {e}") from None
    if len(tok) > cfg.vocab_size:
        raise CheckpointError(f"{d}: tokenizer has {len(tok)} tokens but vocab_size is {cfg.vocab_size}")
    model_file = os.path.join(d, MODEL_FILE)
    if not os.path.isfile(model_file):
        raise CheckpointError(f"{model_file}: file not found (cllm reads safetensors weights only: convert a "
                              f"pytorch_model.bin with transformers' save_pretrained(..., safe_serialization=True))")
    _check_shapes(model_file, cfg, quant)
    return Checkpoint(d, cfg, raw, tok, manifest, quant)


def _check_shapes(model_file: str, cfg: ModelConfig, quant: Optional[str]) -> None:
    """Every size ``config.json`` implies against the tensor shapes in the
    safetensors header (which the file's size bounds), before anything is
    allocated: a small hostile config cannot make a loader reserve gigabytes."""
    entries = read_entries(model_file)
    C, V, P, L = cfg.embed_dim, cfg.vocab_size, cfg.context_len, cfg.num_layers

    def shape(name: str, suffixes: Tuple[str, ...] = ("",)) -> Optional[Tuple[int, ...]]:
        for key in (name, name[len("transformer."):]):
            for sfx in suffixes:
                if key + sfx in entries:
                    return tuple(entries[key + sfx].shape)
        return None

    mat = (".q8", ".bf16", "") if quant else ("",)
    want = {"transformer.wpe.weight": ((P, C), ("",)), "transformer.wte.weight": ((V, C), mat),
            "transformer.ln_f.weight": ((C,), ("",)), f"transformer.h.{L - 1}.ln_1.weight": ((C,), ("",))}
    for name, (shp, sfx) in want.items():
        got = shape(name, sfx)
        if got != shp:
            raise CheckpointError(f"{model_file}: tensor {name!r} has shape {got}, but config.json implies {shp} "
                                  f"(vocab_size {V}, n_positions {P}, n_embd {C}, n_layer {L})"
                                  if got is not None else
                                  f"{model_file}: missing tensor {name!r} (config.json has n_layer {L})")
    if shape(f"transformer.h.{L}.ln_1.weight") is not None:
        raise CheckpointError(f"{model_file}: holds more than the {L} layers config.json says (n_layer)")


def read_state(path: str) -> Dict[str, Any]:
    """The ``trainer_state.json`` of checkpoint ``path`` (a JSON object)."""
    sp = os.path.join(path, STATE_FILE)
    st = read_json(sp)
    if not isinstance(st, dict):
        raise CheckpointError(f"{sp}: not a JSON object")
    return st


def load_optimizer_state(model: Any, path: str) -> None:
    """Copy AdamW moments from ``optimizer.safetensors`` into ``model``."""
    of = os.path.join(path, OPTIMIZER_FILE)
    tensors, _ = read_safetensors(of)
    for t in model.tensor_info():
        for prefix in ("adam_m.", "adam_v."):
            key = prefix + t["name"]
            if key not in tensors:
                raise CheckpointError(f"{of}: missing tensor {key!r}")
            if tuple(tensors[key].shape) != tuple(t["shape"]):
                raise CheckpointError(f"{of}: tensor {key!r} has shape {tuple(tensors[key].shape)}, expected {t['shape']}")
    for t in model.tensor_info():
        a, n = t["offset"], t["numel"]
        model.adam_m[a:a + n] = tensors["adam_m." + t["name"]].reshape(-1)
        model.adam_v[a:a + n] = tensors["adam_v." + t["name"]].reshape(-1)
