"""The metrics log of a run: ``OUT/metrics.jsonl``, one JSON object per line.

Rows (every key but ``step`` is optional; readers must ignore unknown keys)::

    {"step": 10, "tokens": 20480, "loss": 5.12, "lr": 0.0006, "grad_norm": 1.9,
     "tokens_per_s": 8210.5, "elapsed_s": 2.49}                       # a training step
    {"step": 100, "tokens": 204800, "val_loss": 4.31, "val_bits_per_byte": 1.87,
     "elapsed_s": 25.1}                                               # an evaluation

``tokens`` counts training tokens seen so far (the x axis of ``cllm plot
--x tokens``); ``elapsed_s`` is training wall time since the run began,
carried across ``--resume``. When a run resumes from the checkpoint of step
S, rows past S (written after that checkpoint, before the interruption) are
dropped first, so the file never holds a step twice.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import IO, Any, Dict, List, Optional

from ..io.files import atomic_write

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"

__all__ = ["METRICS_FILE", "MetricsLog", "read_metrics", "split_rows"]


def _clean(v: Any) -> Any:
    """JSON-ready value: floats to 7 significant digits, non-finite floats to None."""
    if isinstance(v, float) or hasattr(v, "dtype"):
        v = float(v)
        return float(f"{v:.7g}") if math.isfinite(v) else None
    return v


def read_metrics(path: str, bad: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` file, or of the one inside run directory ``path``.

    A torn last line (a run killed mid-write) is ignored; any other bad line
    raises ``ValueError`` naming the file and line, or, when a list ``bad`` is
    given, is appended to it (the other rows are still returned).
    """
    if os.path.isdir(path):
        path = os.path.join(path, METRICS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no metrics log (runs write {METRICS_FILE} in their output directory)")
    rows: List[Dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("not an object with an integer 'step'")
        except ValueError as e:
            if i == len(lines) - 1:  # unterminated last line: a write cut short
                log.warning("%s: ignoring the torn last line", path)
                break
            if bad is None:
                raise ValueError(f"{path}:{i + 1}: malformed metrics row ({e})") from None
            bad.append(line)
            continue
        rows.append(row)
    return rows


def split_rows(rows: List[Dict[str, Any]]) -> tuple:
    """(training rows, evaluation rows) of :func:`read_metrics` output."""
    return [r for r in rows if "loss" in r], [r for r in rows if "val_loss" in r]


class MetricsLog:
    """Appends rows to ``OUT/metrics.jsonl`` (``out_dir=None``: keeps nothing).

    ``resume_step``: continuing a run from the checkpoint of that step; rows
    after it are removed (the file is rewritten atomically) and
    :attr:`elapsed0` is the training time already spent. A malformed row is
    kept aside in ``metrics.jsonl.bad`` (with a warning) and the rest of the
    history is kept. Without ``resume_step`` an existing file is replaced (a
    new run in a directory it may write).
    """

    def __init__(self, out_dir: Optional[str], resume_step: Optional[int] = None) -> None:
        self.path = os.path.join(out_dir, METRICS_FILE) if out_dir else None
        self.elapsed0 = 0.0
        #: the run's first training loss when continuing a run (None: not known)
        self.first_loss: Optional[float] = None
        self._f: Optional[IO[str]] = None
        if self.path is None:
            return
        os.makedirs(out_dir, exist_ok=True)  # type: ignore[arg-type]
        keep: List[Dict[str, Any]] = []
        if resume_step is not None and os.path.isfile(self.path):
            bad: List[str] = []
            keep = [r for r in read_metrics(self.path, bad) if r["step"] <= resume_step]
            if bad:
                aside = self.path + ".bad"
                with open(aside, "a", encoding="utf-8") as f:
                    f.write("".join(b + "\n" for b in bad))
                    f.flush()
                    os.fsync(f.fileno())
                log.warning("%s: %d malformed row(s) moved to %s; the other %d rows are kept", self.path,
                            len(bad), aside, len(keep))
            self.elapsed0 = max((float(r.get("elapsed_s") or 0.0) for r in keep), default=0.0)
            self.first_loss = next((float(r["loss"]) for r in keep if r.get("loss") is not None), None)
        atomic_write(self.path, [(json.dumps(r) + "\n").encode("utf-8") for r in keep])
        self._f = open(self.path, "a", encoding="utf-8")

    def log(self, step: int, **values: Any) -> None:
        """Append one row (``elapsed_s`` is offset by the time of earlier sessions)."""
        if self._f is None:
            return
        if "elapsed_s" in values:
            values["elapsed_s"] = values["elapsed_s"] + self.elapsed0
        row = {"step": int(step), **{k: _clean(v) for k, v in values.items()}}
        self._f.write(json.dumps(row) + "\n")

    def flush(self) -> None:
        """Push buffered rows to the file (done at evaluations, checkpoints and the end)."""
        if self._f is not None:
            self._f.flush()

    def sync(self) -> None:
        """Flush and fsync: done before a checkpoint that covers the rows is committed."""
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())

    def close(self) -> None:
        """Flush and close."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
