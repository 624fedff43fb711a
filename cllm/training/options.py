"""Training options, declared ONCE: :class:`TrainOptions`.

Each field carries its type (the annotation), default, help text, valid
range or choices and its ``cllm train`` flag (plus a short alias where one
exists). Everything else is generated from the fields:

- the keywords of :func:`cllm.train` (its ``__signature__`` and docstring),
- validation of types and ranges at the API boundary (``__post_init__``),
- the ``options`` saved in ``trainer_state.json`` (and read back by ``--resume``),
- the ``cllm train`` argparse flags (:meth:`TrainOptions.add_arguments`).

Adding an option is one field here (then use ``opts.<name>`` in the code
that needs it).
"""
import argparse
import dataclasses
import inspect
import math
import re
import numbers
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..config import C_INT_MAX
from ..data.corpus import MAX_FILE_BYTES
from .distributed import MODES as DISTRIBUTED_MODES
from ..errors import ConfigError, ConfigTypeError, StateError
from ..data.tokenizer import DEFAULT_PRETOKENIZER, DEFAULT_VOCAB_SIZE, PRETOKENIZERS

__all__ = ["TrainOptions", "option", "SCRATCH_LR", "SCRATCH_SEQ_LEN", "FINETUNE_LR", "FINETUNE_MAX_SEQ_LEN",
           "FINETUNE_WARMUP_FRACTION", "FINETUNE_MAX_WARMUP"]
_U64_MAX = 2**64 - 1

# The automatic defaults (an option left at None), resolved by TrainOptions.resolved and .warmup.
#: peak learning rate from scratch (chosen by bench/lr_sweep.py, docs/corpus.md)
SCRATCH_LR = 1e-3
#: tokens per training sequence from scratch (chosen by measurement, docs/training.md)
SCRATCH_SEQ_LEN = 512
#: peak learning rate of a run that starts from a trained model (init_from): a tenth of the
#: from-scratch rate, so the first steps adapt the weights rather than overwrite them
FINETUNE_LR = 1e-4
#: a fine-tuning run trains on the checkpoint's own context, at most this many tokens
FINETUNE_MAX_SEQ_LEN = 1024
#: a fine-tuning run warms up over this share of its steps ...
FINETUNE_WARMUP_FRACTION = 0.02
#: ... and at most this many steps
FINETUNE_MAX_WARMUP = 20


def option(default: Any, help: str, *, lo: Optional[float] = None, hi: Optional[float] = None,
           lo_open: bool = False, hi_open: bool = False, choices: Optional[Sequence[Any]] = None,
           flag: Optional[str] = None, short: Optional[str] = None, cli: bool = True,
           cli_default: Any = dataclasses.MISSING, cli_invert: bool = False, saved: bool = True,
           metavar: Optional[str] = None, cli_help: Optional[str] = None, group: str = "training") -> Any:
    """A :class:`TrainOptions` field.

    ``lo``/``hi`` bound numbers (inclusive unless ``lo_open``/``hi_open``);
    ``choices`` lists the allowed values; ``flag`` overrides the CLI flag
    (default ``--name-with-dashes``) and ``short`` adds an alias; ``cli=False``
    keeps an option API-only; ``cli_default`` is the flag's default when it
    differs from the API's; ``cli_invert`` makes a boolean a ``store_false``
    flag (``--quiet`` for ``progress``); ``saved=False`` leaves the option out
    of ``trainer_state.json`` (run-local options such as ``progress``);
    ``cli_help`` replaces ``help`` for the flag.
    """
    meta = dict(help=help, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, choices=choices, flag=flag,
                short=short, cli=cli, cli_default=cli_default, cli_invert=cli_invert, saved=saved,
                metavar=metavar, cli_help=cli_help or help, group=group)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s?)?")


def parse_duration(text: Any) -> float:
    """Seconds of a duration: ``90``, ``90s``, ``10m``, ``1h``, ``1h30m``, ``2.5m``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        secs = float(text)
    elif isinstance(text, str) and text.strip():
        m = _DURATION.fullmatch(text.strip().lower())
        if m is None or not any(m.groups()):
            raise ConfigError(f"time must be a duration like 90s, 10m or 1h30m, got {text!r}")
        h, mi, se = (float(g) if g else 0.0 for g in m.groups())
        secs = 3600 * h + 60 * mi + se
    else:
        raise ConfigTypeError(f"time must be a duration like 90s, 10m or 1h30m, got {text!r}")
    if not (secs > 0 and math.isfinite(secs)):
        raise ConfigError(f"time must be a positive duration, got {text!r}")
    return secs


def _base_type(tp: Any) -> Tuple[Any, bool]:
    """(the non-None type, whether None is allowed) of an annotation."""
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True
    return tp, False


@dataclass
class TrainOptions:
    """Every setting of a training run (names are the :func:`cllm.train` keywords;
    the ``cllm train`` flags are the same names with dashes)."""

    # -- model shape
    vocab_size: int = option(DEFAULT_VOCAB_SIZE, f"BPE vocabulary size, the 256 bytes, <|endoftext|> and the 4 "
                             f"fill-in-the-middle tokens included (default {DEFAULT_VOCAB_SIZE}, chosen by "
                             f"measurement, docs/corpus.md; 257 = bytes and <|endoftext|> only, no infilling)",
                             lo=257, hi=C_INT_MAX, group="model")
    embed_dim: int = option(256, "embedding width (a multiple of num_heads)", lo=1, hi=C_INT_MAX, group="model")
    num_layers: int = option(4, "transformer blocks", lo=1, hi=C_INT_MAX, group="model")
    num_heads: int = option(4, "attention heads", lo=1, hi=C_INT_MAX, group="model")
    context_len: Optional[int] = option(None, "position embeddings (default: seq_len)", lo=1, hi=C_INT_MAX,
                                        group="model")
    # -- data
    seq_len: Optional[int] = option(None, f"tokens per training sequence: the context the model sees (editors "
                                    f"send a few hundred lines around the cursor; default {SCRATCH_SEQ_LEN}, chosen "
                                    f"by measurement, docs/training.md; with init_from: the checkpoint's context, at "
                                    f"most {FINETUNE_MAX_SEQ_LEN})", lo=1, hi=C_INT_MAX, group="data")
    exts: Optional[List[str]] = option(None, "only files with these extensions (CLI: repeatable or a comma "
                                       "list, e.g. -e .py,.c)", flag="--ext", short="-e", metavar="EXT",
                                       group="data")
    include: Optional[List[str]] = option(None, "only paths matching these gitignore-style globs (CLI: "
                                          "repeatable, e.g. --include 'src/' --include '*.py')",
                                          metavar="GLOB", group="data")
    exclude: Optional[List[str]] = option(None, "leave out paths matching these gitignore-style globs "
                                          "(CLI: repeatable)", metavar="GLOB", group="data")
    max_bytes: Optional[int] = option(None, "cap on corpus bytes", lo=1, group="data")
    keep_vendored: bool = option(False, "also train on vendored code (files under _vendor/, vendor/, "
                                 "third_party/, node_modules/ ..., skipped by default)", group="data")
    max_file_bytes: int = option(MAX_FILE_BYTES, "skip (and name in a warning) files larger than this",
                                 lo=1, group="data")
    val_fraction: float = option(0.05, "share of the corpus bytes held out for validation: whole files "
                                 "chosen by a hash of their path", lo=0, hi=0.5, hi_open=True, group="data")
    pretokenizer: str = option(DEFAULT_PRETOKENIZER, "how text is split before BPE merges, for the tokenizer a "
                               "run trains: gpt2 (GPT-2's regex, which llama.cpp implements: needed for `cllm "
                               "export` to GGUF; chosen by measurement, docs/gguf.md), starcoder (GPT-2's regex with every "
                               "digit a piece of its own, as StarCoder's tokenizer) or cllm (code-aware: "
                               "identifiers, digit runs, punctuation runs, indentation)",
                               choices=PRETOKENIZERS, metavar="NAME", group="data")
    fim_rate: float = option(0.5, "share of training files turned into fill-in-the-middle examples "
                             "(prefix/suffix/middle split at two random points), so the model can complete at a "
                             "cursor; 0: left-to-right only", lo=0, hi=1, group="data")
    fim_spm_rate: float = option(0.5, "share of those in suffix-prefix-middle order (the rest: "
                                 "prefix-suffix-middle)", lo=0, hi=1, group="data")
    # -- optimisation
    epochs: int = option(1, "passes over the training split", lo=1, hi=C_INT_MAX)
    max_steps: Optional[int] = option(None, "stop after N steps (overrides epochs)", lo=1, hi=C_INT_MAX)
    time: Optional[str] = option(None, "time budget for the whole run, e.g. 90s, 10m, 1h30m: the run times a "
                                 "few steps, sets the step count so the learning-rate schedule ends on time, "
                                 "and finishes (final evaluation and save included) within it; instead of "
                                 "epochs/max_steps", metavar="DURATION", saved=False)
    batch_size: int = option(4, "sequences per micro-batch (per rank under MPI)", lo=1, hi=C_INT_MAX)
    grad_accum: int = option(1, "micro-batches per optimizer step (a step sees grad_accum * batch_size "
                             "sequences; same result as a batch that large, in the memory of one micro-batch)",
                             lo=1, hi=C_INT_MAX)
    learning_rate: Optional[float] = option(None, f"peak AdamW learning rate (default {SCRATCH_LR:g}, chosen by "
                                            f"bench/lr_sweep.py, docs/corpus.md; with init_from: {FINETUNE_LR:g}, "
                                            f"docs/finetune.md)", lo=0, hi=10, lo_open=True)
    min_lr_ratio: float = option(0.1, "cosine decay ends at min_lr_ratio * learning_rate", lo=0, hi=1)
    warmup_steps: Optional[int] = option(None, f"linear warm-up steps (default: total/20, at most 100; with "
                                         f"init_from: {FINETUNE_WARMUP_FRACTION:.0%} of the steps, at most "
                                         f"{FINETUNE_MAX_WARMUP})", lo=0, hi=C_INT_MAX)
    weight_decay: float = option(0.1, "AdamW decoupled weight decay (matrices only)", lo=0)
    beta1: float = option(0.9, "AdamW first-moment decay", lo=0, hi=1, hi_open=True)
    beta2: float = option(0.95, "AdamW second-moment decay", lo=0, hi=1, hi_open=True)
    eps: float = option(1e-8, "AdamW epsilon", lo=0, lo_open=True)
    grad_clip: float = option(1.0, "clip the global gradient norm to this (0: no clipping)", lo=0)
    divergence_factor: float = option(10.0, "stop with DivergenceError when the loss exceeds this multiple of "
                                      "max(first loss, ln vocab) (0: never)", lo=0)
    seed: int = option(1337, "seed of the weight init and the data order", lo=0, hi=_U64_MAX)
    # -- evaluation and checkpoints
    eval_batches: int = option(16, "batches per evaluation", lo=1, hi=C_INT_MAX, group="evaluation")
    eval_interval: Optional[int] = option(None, "evaluate every N steps (default: about 10 evaluations per "
                                          "run; 0: at the end only)", lo=0, hi=C_INT_MAX, group="evaluation")
    fim_eval_samples: int = option(64, "single-line infilling cases from the held-out files scored at the end "
                                   "of a run that trains with FIM (exact match and middle bits per byte, in the "
                                   "summary and metrics.jsonl; 0: none)", lo=0, hi=C_INT_MAX, group="evaluation")
    out_dir: Optional[str] = option(None, "run directory: checkpoints, metrics, loss plot; a run writes "
                                    "nowhere else (cllm.train() saves nothing unless it is given)",
                                    flag="--out", cli_default="runs/cllm", saved=False, metavar="DIR",
                                    group="checkpoints")
    checkpoint_every: int = option(0, "save every N steps (0: at the end only)", lo=0, hi=C_INT_MAX,
                                   group="checkpoints")
    init_from: Optional[str] = option(None, "start from this model's weights and tokenizer with a fresh optimizer "
                                      "(fine-tuning; its own defaults for learning_rate, warmup_steps and seq_len): "
                                      "a cllm checkpoint, a GPT-2 directory, or a hub id such as "
                                      "codeparrot/codeparrot-small (needs cllm[hub])", metavar="CKPT",
                                      group="checkpoints")
    keep_checkpoints: int = option(1, "complete checkpoints kept in out_dir as checkpoint-STEP/ (the newest "
                                   "is also out_dir itself, through the `latest` symlink)", lo=1, hi=C_INT_MAX,
                                   group="checkpoints")
    resume: bool = option(False, "continue the run saved in out_dir with its saved options "
                          "(bit-identical continuation; the other options are ignored)", saved=False,
                          group="checkpoints")
    overwrite: bool = option(False, "start a new run in an out_dir that is not empty (otherwise refused; "
                             "runs/cllm itself is numbered instead: runs/cllm-2, ...); other runs' "
                             "checkpoints are still never deleted", saved=False, group="checkpoints")
    # -- machine
    threads: int = option(0, "worker spheres per process (0: all usable CPUs; under MPI, the CPUs of the "
                          "rank's affinity mask shared out among the ranks on its node)", lo=0, hi=C_INT_MAX,
                          group="machine")
    distributed: str = option("auto", "data parallelism over MPI: auto = when started by mpirun/mpiexec/srun, "
                              "mpi = always, none = never (batch_size is per rank; the global batch is "
                              "ranks x batch_size)", choices=DISTRIBUTED_MODES, saved=False, metavar="MODE",
                              group="machine")
    max_memory_gb: float = option(16.0, "refuse models whose buffers exceed this many GB", lo=0, lo_open=True,
                                  group="machine")
    precision: str = option("auto", "matmul precision: bf16 (BF16 x BF16 -> FP32 on AMX / AVX512-BF16, FP32 "
                            "master weights and optimizer), fp32, or auto (bf16 where the CPU has it)",
                            choices=("auto", "fp32", "bf16"), group="machine")
    deterministic: bool = option(False, "compute every product of a step per shard of the batch, so the "
                                 "weights are bit-identical across thread and rank layouts of the same shards "
                                 "(2 ranks x 1 thread == 1 process x 2 threads; always on under MPI); off, "
                                 "short shards run some GEMMs batch-wide (faster, differs in rounding)",
                                 group="machine")
    # -- run-local
    tokenizer: Any = option(None, "a trained Tokenizer to use instead of training one (API only)",
                            cli=False, saved=False, group="data")
    progress: bool = option(True, "show a progress bar", flag="--quiet", short="-q", cli_invert=True,
                            cli_help="no progress bar", saved=False, group="output")
    verbose: bool = option(False, "log details and per-sphere statistics", short="-v", saved=False,
                           group="output")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _check_field(f, getattr(self, f.name)))
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        # the seq_len a from-scratch run will have (a fine-tuning run's comes from its checkpoint)
        seq_len = self.seq_len if self.seq_len is not None else (None if self.init_from else SCRATCH_SEQ_LEN)
        if self.context_len is not None and seq_len is not None and self.context_len < seq_len:
            raise ConfigError(f"context_len ({self.context_len}) must be >= seq_len ({seq_len})")
        if self.time is not None:
            if self.max_steps is not None:
                raise ConfigError("time and max_steps are exclusive: a time budget sets the step count")
            parse_duration(self.time)

    # ----------------------------------------------------------- conversions
    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], what: str = "train") -> "TrainOptions":
        """Options from keywords; an unknown name is a ``TypeError`` like Python's own."""
        names = {f.name for f in dataclasses.fields(cls)}
        for k in kwargs:
            if k not in names:
                import difflib
                near = difflib.get_close_matches(k, names, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigTypeError(f"{what}() got an unexpected keyword argument {k!r}{hint}")
        return cls(**kwargs)

    def saved(self) -> Dict[str, Any]:
        """The options recorded in ``trainer_state.json`` (JSON-ready)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["saved"]}

    @classmethod
    def from_saved(cls, saved: Mapping[str, Any], **override: Any) -> "TrainOptions":
        """Options of a saved run (unknown keys of other versions are ignored), with ``override``."""
        keep = {f.name for f in dataclasses.fields(cls) if f.metadata["saved"]}
        return cls(**{k: v for k, v in saved.items() if k in keep}, **override)

    def kwargs(self) -> Dict[str, Any]:
        """All options as :func:`cllm.train` keywords."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    # ------------------------------------------------------ automatic defaults
    def resolved(self, context_len: Optional[int] = None) -> "TrainOptions":
        """These options with the automatic defaults (``None``) of ``learning_rate``
        and ``seq_len`` filled in, the one place they are decided: from scratch
        :data:`SCRATCH_LR` and :data:`SCRATCH_SEQ_LEN`; fine-tuning (``init_from``,
        whose checkpoint has ``context_len`` positions) :data:`FINETUNE_LR` and
        the checkpoint's context, at most :data:`FINETUNE_MAX_SEQ_LEN`. An
        option set by the caller is kept. (``warmup_steps`` stays ``None``: it
        depends on the step count, see :meth:`warmup`.)"""
        tuning = self.init_from is not None
        if tuning and context_len is None and self.seq_len is None:
            raise StateError("resolving a fine-tuning run's seq_len needs the checkpoint's context_len")
        lr = self.learning_rate if self.learning_rate is not None else (FINETUNE_LR if tuning else SCRATCH_LR)
        seq = self.seq_len
        if seq is None:
            seq = min(int(context_len), FINETUNE_MAX_SEQ_LEN) if tuning else SCRATCH_SEQ_LEN  # type: ignore[arg-type]
        return dataclasses.replace(self, learning_rate=lr, seq_len=seq)

    def finetune_defaults(self, context_len: int) -> List[str]:
        """The fine-tuning defaults a run with ``init_from`` (a checkpoint with
        ``context_len`` positions) gets, in words: one entry per option the
        caller left to its default (for the run's log)."""
        if self.init_from is None:
            return []
        out = []
        if self.learning_rate is None:
            out.append(f"learning rate {FINETUNE_LR:g}")
        if self.warmup_steps is None:
            out.append(f"warm-up {FINETUNE_WARMUP_FRACTION:.0%} of the steps (at most {FINETUNE_MAX_WARMUP})")
        if self.seq_len is None:
            out.append(f"seq_len {self.resolved(context_len).seq_len} (the checkpoint's context, at most "
                       f"{FINETUNE_MAX_SEQ_LEN})")
        return out

    # ------------------------------------------------------------ schedules
    def warmup(self, total: int) -> int:
        """Warm-up steps of a run of ``total`` steps: ``warmup_steps``, or by
        default total/20 (at least 1, at most 100) from scratch and
        :data:`FINETUNE_WARMUP_FRACTION` of the steps (at least 1, at most
        :data:`FINETUNE_MAX_WARMUP`) when fine-tuning: the weights are already
        trained, so the short warm-up only shields them from the fresh optimizer's
        first, noisy moments."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        if self.init_from is not None:
            return min(FINETUNE_MAX_WARMUP, max(1, round(FINETUNE_WARMUP_FRACTION * total)))
        return min(100, max(1, total // 20))

    def lr_at(self, step: int, total: int) -> float:
        """Linear warm-up (:meth:`warmup`), then cosine decay to
        ``min_lr_ratio * learning_rate`` (options :meth:`resolved` first)."""
        if self.learning_rate is None:
            raise StateError("learning_rate is not resolved: call TrainOptions.resolved() first")
        warm = self.warmup(total)
        if step <= warm and warm > 0:
            return self.learning_rate * step / warm
        frac = (step - warm) / max(1, total - warm)
        cos = 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        return self.learning_rate * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cos)

    # -------------------------------------------------------------- the CLI
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, only: Optional[Sequence[str]] = None,
                      defaults: Optional[Mapping[str, Any]] = None) -> None:
        """Add one ``cllm train`` flag per CLI option (grouped as in the class);
        ``only``: just these options (other commands and scripts share flags);
        ``defaults``: other defaults for some of them (the help says so)."""
        groups: Dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            m = f.metadata
            if not m["cli"] or (only is not None and f.name not in only):
                continue
            g = groups.get(m["group"])
            if g is None:
                g = groups[m["group"]] = parser.add_argument_group(f"{m['group']} options")
            names = [m["flag"] or "--" + f.name.replace("_", "-")]
            if m["short"]:
                names.insert(0, m["short"])
            default = f.default if m["cli_default"] is dataclasses.MISSING else m["cli_default"]
            here = defaults is not None and f.name in defaults
            default = defaults[f.name] if here else default  # type: ignore[index]
            tp, _ = _base_type(f.type)
            if tp is bool:
                g.add_argument(*names, dest=f.name, default=default, help=m["cli_help"],
                               action="store_false" if m["cli_invert"] else "store_true")
                continue
            metavar = m["metavar"] or {int: "N", float: "F"}.get(tp, "TEXT")
            kw: Dict[str, Any] = dict(dest=f.name, default=default, metavar=metavar,
                                      help=_cli_help(m, default, here))
            if typing.get_origin(tp) in (list, List):
                kw.update(action="append", type=str)
            else:
                kw.update(type=tp if tp in (int, float, str) else str)
            if m["choices"] is not None:
                kw["choices"] = list(m["choices"])
            g.add_argument(*names, **kw)

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> "TrainOptions":
        """Options from parsed ``cllm train`` arguments."""
        return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if f.metadata["cli"]})

    # -------------------------------------------------------------- the API
    @classmethod
    def parameters(cls) -> List[inspect.Parameter]:
        """Keyword-only :class:`inspect.Parameter` of every option (for signatures)."""
        return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                  default=f.default if f.default is not dataclasses.MISSING else f.default_factory(),
                                  annotation=f.type) for f in dataclasses.fields(cls)]

    @classmethod
    def doc(cls) -> str:
        """One docstring line per option: name, default, valid range, help."""
        lines = []
        for f in dataclasses.fields(cls):
            m = f.metadata
            d = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rng = _range_text(m)
            lines.append(f"    {f.name} (default {d!r}{'; ' + rng if rng else ''}): {m['help']}")
        return "\n".join(lines)


def _range_text(m: Mapping[str, Any]) -> str:
    if m["choices"] is not None:
        return "one of " + ", ".join(map(repr, m["choices"]))
    lo, hi = m["lo"], m["hi"]
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f"{'>' if m['lo_open'] else '>='} {lo}"
    if lo is None:
        return f"{'<' if m['hi_open'] else '<='} {hi}"
    return f"in {'(' if m['lo_open'] else '['}{lo}, {hi}{')' if m['hi_open'] else ']'}"


def _cli_help(m: Mapping[str, Any], default: Any, here: bool = False) -> str:
    """The flag's help: its text, default (``here``: the calling script's own) and range."""
    rng = _range_text(m)
    said = re.search(r"\(default\b", m["cli_help"]) is not None   # the text gives the default itself
    extra = [f"default {'here ' if here else ''}{default}"] if default is not None and not said else []
    if rng and m["hi"] != C_INT_MAX:
        extra.append(rng)
    text = m["cli_help"] + (f" ({'; '.join(extra)})" if extra else "")
    return text.replace("%", "%%")   # argparse formats help with %: a literal one ("2% of the steps") is %%


def _check_field(f: "dataclasses.Field[Any]", v: Any) -> Any:
    """``v`` converted to the field's type, or a :class:`ConfigError` naming the field."""
    m = f.metadata
    tp, nullable = _base_type(f.type)
    name = f.name
    if v is None:
        if nullable or tp is Any:
            return None
        raise ConfigTypeError(f"{name} must not be None")
    if tp is Any:
        return v
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigTypeError(f"{name} must be True or False, got {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ConfigTypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
        v = int(v)
    elif tp is float:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ConfigTypeError(f"{name} must be a number, got {type(v).__name__} {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise ConfigError(f"{name} must be finite, got {v!r}")
    elif tp is str:
        import os
        if not isinstance(v, (str, os.PathLike)):
            raise ConfigTypeError(f"{name} must be a string or path, got {type(v).__name__} {v!r}")
        v = os.fspath(v)
    elif typing.get_origin(tp) in (list, List):
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            raise ConfigTypeError(f"{name} must be a list of strings, got {v!r}")
        v = list(v)
    if m["choices"] is not None and v not in m["choices"]:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, m['choices']))}; got {v!r}")
    lo, hi = m["lo"], m["hi"]
    if (lo is not None and (v <= lo if m["lo_open"] else v < lo)) or \
            (hi is not None and (v >= hi if m["hi_open"] else v > hi)):
        raise ConfigError(f"{name} must be {_range_text(m)}, got {v!r}")
    return v
