"""The Model: a GPT-2 held by the C core (weights, gradients and AdamW
moments as zero-copy numpy views), with training steps, tokenization,
generation, and saving/loading through :mod:`cllm.model.checkpoint`."""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._native import check, ffi, fptr, iptr, lib
from .checkpoint import Checkpoint, infill_order, load_optimizer_state, open_checkpoint, save_checkpoint
from ..config import ModelConfig
from .decoder import Decoder, GenerationMixin
from ..errors import CheckpointError, ConfigError
from ..io.safetensors import read_safetensors
from .layout import hf_shape, tensor_from_hf
from ..precision import c_precision, resolve_precision
from ..data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

Prompt = Union[str, bytes, Sequence[int], np.ndarray]


class _CBuffer:
    """The base of a zero-copy float32 view of a C model buffer: it holds the
    model's handle, so the memory outlives the :class:`Model` while a view
    (``m.params`` kept after ``m`` is dropped) still refers to it."""

    def __init__(self, handle: Any, ptr: Any, n: int) -> None:
        self._handle = handle
        self.__array_interface__ = {"version": 3, "shape": (int(n),), "typestr": "<f4",
                                    "data": (int(ffi.cast("uintptr_t", ptr)), False)}


class Model(GenerationMixin):
    """A GPT-2 language model whose weights, gradients and AdamW moments live
    in the C core (exposed here as zero-copy numpy views).

    Create one with :func:`cllm.train`, :func:`cllm.load` or
    :meth:`Model.create`.
    """

    def __init__(self, config: ModelConfig, tokenizer: Any, *, batch_size: int = 1,
                 seq_len: Optional[int] = None, threads: int = 0, seed: int = 1337,
                 max_memory_gb: float = 16.0, precision: str = "fp32", deterministic: bool = False) -> None:
        """``precision``: ``"fp32"`` (default), ``"bf16"`` (BF16 matmuls with FP32
        master weights; needs AMX-BF16 or AVX512-BF16) or ``"auto"``.

        ``deterministic``: compute every product of a training step per shard
        of the batch and sum the shards' gradients in shard order, so that the
        weights are bit for bit the same for every layout of the same shards
        (2 MPI ranks x 1 thread == 1 process x 2 threads; the MPI
        data-parallel path turns it on itself). Off (the default), the LM head
        and, for short shards, the layers' GEMMs run batch-wide over the
        threads: faster, bit-identical run to run for a given thread count,
        but some weight gradients then differ in rounding from a multi-rank
        run's. Settable later through :attr:`deterministic`."""
        config.validate()
        if len(tokenizer) > config.vocab_size:
            raise ConfigError(f"tokenizer has {len(tokenizer)} tokens but vocab_size is {config.vocab_size}")
        self.config = config
        self.tokenizer = tokenizer
        self.summary: Dict[str, Any] = {}
        seq_len = config.context_len if seq_len is None else seq_len
        for name, v in (("batch_size", batch_size), ("seq_len", seq_len), ("threads", threads)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ConfigError(f"{name} must be an integer, got {v!r}")
        c = ffi.new("cllm_config *")
        c.vocab_size = config.vocab_size
        c.context_len = config.context_len
        c.num_layers = config.num_layers
        c.num_heads = config.num_heads
        c.embed_dim = config.embed_dim
        c.n_kv_heads = config.kv_heads
        c.batch_size = int(batch_size)
        c.seq_len = int(seq_len)
        c.threads = int(threads)
        c.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        c.max_memory_gb = float(max_memory_gb)
        #: resolved training precision, ``"fp32"`` or ``"bf16"``
        self.precision = resolve_precision(precision)
        c.precision = c_precision(self.precision)
        self._weights_dirty = False
        h = ffi.new("cllm_model **")
        check(lib.cllm_model_new(c, h), "cannot create model")
        self._h = ffi.gc(h[0], lib.cllm_model_free)
        self.batch_size = int(batch_size)
        self.seq_len = int(seq_len)
        n = ffi.new("size_t *")
        check(lib.cllm_model_num_params(self._h, n))
        self.num_params = int(n[0])
        bufs = [ffi.new("float **") for _ in range(4)]
        check(lib.cllm_model_buffers(self._h, *bufs))
        views = [np.asarray(_CBuffer(self._h, b[0], self.num_params)) for b in bufs]
        #: flat parameter buffer (zero-copy view of C memory)
        self.params, self.grads, self.adam_m, self.adam_v = views
        self._tensors = self._read_tensor_table()
        sp = ffi.new("cllm_spheres **")
        check(lib.cllm_model_spheres(self._h, sp))
        cnt = ffi.new("int *")
        check(lib.cllm_spheres_count(sp[0], cnt))
        self.threads = int(cnt[0])
        self._dec: Optional[Decoder] = None
        self._loss_tokens = 0
        self.deterministic = deterministic

    @property
    def deterministic(self) -> bool:
        """Deterministic mode (see the constructor): every product per shard,
        weights bit-identical across thread and rank layouts."""
        on = ffi.new("int *")
        check(lib.cllm_model_get_deterministic(self._h, on))
        return bool(on[0])

    @deterministic.setter
    def deterministic(self, on: bool) -> None:
        if not isinstance(on, (bool, np.bool_)):
            raise ConfigError(f"deterministic must be a bool, got {on!r}")
        check(lib.cllm_model_set_deterministic(self._h, int(bool(on))))

    # ------------------------------------------------------------ basics
    @classmethod
    def create(cls, config: ModelConfig, tokenizer: Any = None, **kw: Any) -> "Model":
        """A freshly initialised model (GPT-2 init from ``seed``)."""
        if tokenizer is None:
            tokenizer = Tokenizer.byte_level()
        return cls(config, tokenizer, **kw)

    def _read_tensor_table(self) -> List[Dict[str, Any]]:
        n = ffi.new("int *")
        check(lib.cllm_model_num_tensors(self._h, n))
        info = ffi.new("cllm_tensor_info *")
        out = []
        for i in range(n[0]):
            check(lib.cllm_model_tensor_info(self._h, i, info))
            shape = tuple(info.shape[k] for k in range(info.ndim))
            out.append({"name": ffi.string(info.name).decode(), "offset": int(info.offset),
                        "numel": int(info.numel), "shape": shape, "decay": bool(info.decay)})
        return out

    def tensor_info(self) -> List[Dict[str, Any]]:
        """Name, offset, shape and weight-decay flag of every parameter tensor."""
        return [dict(t) for t in self._tensors]

    def _view(self, flat: np.ndarray, t: Dict[str, Any]) -> np.ndarray:
        return flat[t["offset"]:t["offset"] + t["numel"]].reshape(t["shape"])

    def sync_weights(self) -> None:
        """Refresh what is derived from :attr:`params`: the BF16 weight copies
        (bf16 models) and the generation decoder's weight copy (released here,
        copied again at the next generation).

        Needed only after writing :attr:`params` directly; views handed out by
        :meth:`named_parameters` / :meth:`state_dict` are synced automatically
        before the next forward, training step or generation."""
        check(lib.cllm_model_sync_weights(self._h), "sync_weights")
        self._weights_dirty = False

    def _release_decoder(self) -> None:
        """Free the decoder's copy of the weights (they are about to change)."""
        check(lib.cllm_model_release_decoder(self._h), "release decoder")

    def _sync_if_dirty(self) -> None:
        if self._weights_dirty:
            self.sync_weights()

    def named_parameters(self) -> Iterator[Tuple[str, np.ndarray]]:
        """(Hugging Face name, zero-copy view) for every parameter tensor."""
        self._weights_dirty = self.precision == "bf16"  # views may be written
        self._release_decoder()
        for t in self._tensors:
            yield t["name"], self._view(self.params, t)

    def named_grads(self) -> Iterator[Tuple[str, np.ndarray]]:
        """(name, gradient view) in the same order as :meth:`named_parameters`."""
        for t in self._tensors:
            yield t["name"], self._view(self.grads, t)

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Name -> parameter view (zero-copy)."""
        return dict(self.named_parameters())

    def load_state_dict(self, sd: Dict[str, np.ndarray]) -> None:
        """Copy parameters in by name; shapes must match exactly."""
        for name, view in self.named_parameters():
            if name not in sd:
                raise ConfigError(f"state dict lacks {name}")
            arr = np.asarray(sd[name], dtype=np.float32)
            if arr.shape != view.shape:
                raise ConfigError(f"{name}: shape {arr.shape} does not match the model's {view.shape}")
            view[...] = arr

    def init_weights(self, seed: int) -> None:
        """Re-initialise with GPT-2 init from ``seed`` (zeroes AdamW moments)."""
        check(lib.cllm_model_init(self._h, int(seed) & 0xFFFFFFFFFFFFFFFF))

    # ------------------------------------------------------------ tokens
    def _ids(self, prompt: Prompt) -> np.ndarray:
        if isinstance(prompt, (str, bytes)):
            ids = self.tokenize(prompt)
        else:
            ids = prompt
        arr = np.asarray(ids)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ConfigError(f"token ids must be integers, got dtype {arr.dtype}")
        if arr.ndim > 1:
            raise ConfigError(f"a prompt of token ids must be 1-D, got shape {arr.shape} "
                              f"(generate one sequence at a time)")
        arr = arr.astype(np.int64).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= self.config.vocab_size):
            bad = arr[(arr < 0) | (arr >= self.config.vocab_size)][0]
            raise ConfigError(f"token id {bad} out of range [0, {self.config.vocab_size})")
        return arr.astype(np.int32)

    # ---------------------------------------------------------- training
    def _block(self, a: Any, name: str, allow_ignore: bool = False) -> np.ndarray:
        arr = np.asarray(a)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ConfigError(f"{name} must have shape (batch, seq), got {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ConfigError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
        lo = -1 if allow_ignore else 0
        if arr.size and (arr.min() < lo or arr.max() >= self.config.vocab_size):
            raise ConfigError(f"{name} holds ids outside [{lo}, {self.config.vocab_size})")
        return np.ascontiguousarray(arr, dtype=np.int32)

    def forward(self, inputs: Any, targets: Any = None, *, loss_tokens: int = 0) -> Optional[float]:
        """Forward over a (B, T) block; returns the mean loss when targets are given.

        ``loss_tokens > 0`` (data-parallel training) normalises the loss and the
        gradient of the following :meth:`backward` by that many tokens (the
        global batch's valid targets) instead of this block's own count, so
        the ranks' losses and gradients sum to those of the global mean."""
        x = self._block(inputs, "inputs")
        y = None if targets is None else self._block(targets, "targets", allow_ignore=True)
        if y is not None and y.shape != x.shape:
            raise ConfigError(f"targets shape {y.shape} != inputs shape {x.shape}")
        self._set_loss_tokens(loss_tokens)
        loss = ffi.new("float *")
        self._sync_if_dirty()
        check(lib.cllm_model_forward(self._h, iptr(x), ffi.NULL if y is None else iptr(y),
                                     x.shape[0], x.shape[1], loss), "forward")
        return float(loss[0]) if y is not None else None

    def _set_loss_tokens(self, n: int) -> None:
        if n != self._loss_tokens:
            check(lib.cllm_model_set_loss_tokens(self._h, int(n)), "loss_tokens")
            self._loss_tokens = int(n)

    def backward(self) -> None:
        """Gradients of the last forward's loss into :attr:`grads`."""
        check(lib.cllm_model_backward(self._h), "backward")

    def adamw_step(self, step: int, lr: float, *, beta1: float = 0.9, beta2: float = 0.95,
                   eps: float = 1e-8, weight_decay: float = 0.1, grad_clip: float = 1.0) -> float:
        """One AdamW update from :attr:`grads`; returns the pre-clip gradient norm."""
        opt = self._opt(lr, beta1, beta2, eps, weight_decay, grad_clip)
        gn = ffi.new("float *")
        self._release_decoder()
        check(lib.cllm_model_adamw(self._h, opt, int(step), gn), "adamw")
        return float(gn[0])

    @staticmethod
    def _opt(lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
             grad_clip: float) -> Any:
        o = ffi.new("cllm_adamw *")
        o.lr, o.beta1, o.beta2, o.eps = lr, beta1, beta2, eps
        o.weight_decay, o.grad_clip = weight_decay, grad_clip
        return o

    def train_step(self, inputs: Any, targets: Any, step: int, lr: float, *, beta1: float = 0.9,
                   beta2: float = 0.95, eps: float = 1e-8, weight_decay: float = 0.1,
                   grad_clip: float = 1.0) -> Tuple[float, float]:
        """Forward + backward + clip + AdamW in one C call. Returns (loss, grad_norm)."""
        x = self._block(inputs, "inputs")
        y = self._block(targets, "targets", allow_ignore=True)
        if y.shape != x.shape:
            raise ConfigError(f"targets shape {y.shape} != inputs shape {x.shape}")
        opt = self._opt(lr, beta1, beta2, eps, weight_decay, grad_clip)
        self._set_loss_tokens(0)
        loss, gn = ffi.new("float *"), ffi.new("float *")
        self._sync_if_dirty()
        self._release_decoder()
        check(lib.cllm_model_train_step(self._h, iptr(x), iptr(y), x.shape[0], x.shape[1], opt,
                                        int(step), loss, gn), f"train step {step}")
        return float(loss[0]), float(gn[0])

    # --------------------------------------------------------- inference
    def logits(self, ids: Prompt) -> np.ndarray:
        """Next-token logits at every position: (T, V) for one sequence, or
        (B, T, V) for a 2-D batch of ids."""
        if not isinstance(ids, (str, bytes)) and np.asarray(ids).ndim == 2:
            x = self._block(ids, "ids")
            B, T = x.shape
            if B > self.batch_size or T > self.seq_len:
                return np.stack([self.logits(row) for row in x])
            out = np.empty((B, T, self.config.vocab_size), dtype=np.float32)
            self._sync_if_dirty()
            check(lib.cllm_model_logits(self._h, iptr(x), B, T, fptr(out)), "logits")
            return out
        arr = self._ids(ids)
        T = arr.size
        if T == 0:
            raise ConfigError("logits: empty prompt")
        if T > self.config.context_len:
            raise ConfigError(f"logits: {T} tokens exceed the context length {self.config.context_len}")
        out = np.empty((T, self.config.vocab_size), dtype=np.float32)
        if T <= self.seq_len:
            x = np.ascontiguousarray(arr[None, :])
            self._sync_if_dirty()
            check(lib.cllm_model_logits(self._h, iptr(x), 1, T, fptr(out)), "logits")
        else:  # longer than the training arena: the decoder, one token at a time
            dec = self._decoder()
            dec.reset()
            for t in range(T):
                dec.step(int(arr[t]), out[t])
        return out

    def _decoder(self) -> Decoder:
        """The model's FP32 decoder: C-owned, running on the model's spheres,
        with a copy of :attr:`params` in its own weight arena (the layout and
        kernels of ``cllm.load(d, dtype="fp32")``). The copy is made here when
        the decoder holds none; training calls and writable views release it."""
        h = ffi.new("cllm_decoder **")
        self._sync_if_dirty()
        check(lib.cllm_model_decoder(self._h, h), "decoder")
        if self._dec is None or self._dec._h != h[0]:
            self._dec = Decoder(h[0], self.config.vocab_size, self.config.context_len, keep=self._h)
        return self._dec

    # --------------------------------------------------------- threads
    def sphere_stats(self) -> List[Dict[str, Any]]:
        """Per-sphere statistics: tasks done, busy seconds and busy fraction."""
        sp = ffi.new("cllm_spheres **")
        check(lib.cllm_model_spheres(self._h, sp))
        st = ffi.new("cllm_sphere_stats[]", self.threads)
        n = ffi.new("int *")
        check(lib.cllm_spheres_stats(sp[0], st, self.threads, n))
        return [{"sphere": s.sphere, "parent": s.parent, "tasks": int(s.tasks),
                 "busy_seconds": float(s.busy_seconds), "busy_fraction": float(s.busy_fraction)}
                for s in st[0:min(n[0], self.threads)]]

    def profile(self, enable: Optional[bool] = None) -> Dict[str, Dict[str, float]]:
        """Per-op profile of one shard (sphere 0): ``{op: {"seconds", "calls"}}``.

        ``profile(True)`` resets and starts recording, ``profile(False)`` stops
        (and resets); ``profile()`` reads the figures recorded so far."""
        if enable is not None:
            check(lib.cllm_model_profile_enable(self._h, int(bool(enable))))
        out: Dict[str, Dict[str, float]] = {}
        name = ffi.new("char[64]")
        sec, calls = ffi.new("double *"), ffi.new("uint64_t *")
        i = 0
        while lib.cllm_model_profile_read(self._h, i, name, 64, sec, calls) == 0:
            out[ffi.string(name).decode()] = {"seconds": float(sec[0]), "calls": int(calls[0])}
            i += 1
        return out

    # ------------------------------------------------------------ files
    def save(self, path: str, trainer_state: Optional[Dict[str, Any]] = None, keep: int = 1,
             overwrite: bool = False) -> str:
        """Write a Hugging Face-compatible checkpoint directory, crash-consistently
        (see :mod:`cllm.model.checkpoint`); returns ``path``. Files at the
        checkpoint's names that cllm did not write are refused unless
        ``overwrite``; other runs' checkpoints are never deleted."""
        save_checkpoint(self, path, trainer_state=trainer_state, keep=keep, overwrite=overwrite)
        return path

    @classmethod
    def load(cls, path: Union[str, Checkpoint], *, threads: int = 0, batch_size: int = 1,
             seq_len: Optional[int] = None, load_optimizer: bool = False, max_memory_gb: float = 16.0,
             precision: str = "fp32", deterministic: bool = False) -> "Model":
        """Load a checkpoint directory written by :meth:`save` or :func:`cllm.train`
        (or any HF GPT-2 directory with a byte-level BPE tokenizer.json), or a
        :class:`~cllm.model.checkpoint.Checkpoint` already opened. This is
        :func:`cllm.load`, and ``--resume`` uses it with ``load_optimizer=True``.
        A partial or mixed checkpoint raises :class:`~cllm.CheckpointError`. The
        file holds FP32 weights whatever ``precision`` the model trains in.
        ``deterministic``: as for the constructor."""
        ck = open_checkpoint(path)
        if ck.quantization:
            raise CheckpointError(f"{ck.path} holds {ck.quantization} weights (quantized) for inference only; "
                                  f"open it with cllm.load(path) or cllm.InferenceModel.load(path)")
        cfg, tok, path = ck.config, ck.tokenizer, ck.path
        tensors, _ = read_safetensors(ck.model_file, half=True)   # half-precision files train in FP32
        if seq_len is None:
            seq_len = min(cfg.context_len, 256)
        model = cls(cfg, tok, batch_size=batch_size, seq_len=seq_len, threads=threads,
                    max_memory_gb=max_memory_gb, precision=precision, deterministic=deterministic)
        mf = ck.model_file
        for name, view in model.named_parameters():
            if name not in tensors:
                alt = name[len("transformer."):] if name.startswith("transformer.") else None
                if alt not in tensors:
                    raise CheckpointError(f"{mf}: missing tensor {name!r}")
                tensors[name] = tensors.pop(alt)
            want = hf_shape(cfg, name, tuple(view.shape))
            if tuple(tensors[name].shape) != want:
                raise CheckpointError(f"{mf}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                                      f"config.json implies {want}")
            tensors[name] = tensor_from_hf(cfg, name, tensors[name])
        for name, view in model.named_parameters():
            view[...] = tensors[name]
            if not np.isfinite(view).all():
                log.warning("%s: tensor %r holds %d NaN/Inf values (the model will produce NaN)", mf, name,
                            int(np.size(view) - np.isfinite(view).sum()))
        wte = tensors["transformer.wte.weight"]
        if "lm_head.weight" in tensors and not np.array_equal(tensors["lm_head.weight"], wte):
            log.warning("%s: lm_head.weight differs from transformer.wte.weight; cllm ties them (using wte)", mf)
        model.infill_order = infill_order(ck)
        if load_optimizer:
            load_optimizer_state(model, path)
        return model

    def __repr__(self) -> str:
        c = self.config
        return (f"Model(vocab_size={c.vocab_size}, context_len={c.context_len}, num_layers={c.num_layers}, "
                f"num_heads={c.num_heads}, embed_dim={c.embed_dim}, {c.arch_repr()}params={self.num_params:,}, "
                f"precision={self.precision}, {'deterministic=True, ' if self.deterministic else ''}"
                f"threads={self.threads})")
