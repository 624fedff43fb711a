"""Loss curves from ``metrics.jsonl``: ``cllm plot RUN [RUN ...] [-o loss.png]``.

matplotlib is an optional extra (``pip install "cllm[plot]"``); without it
:func:`plot_runs` raises :class:`PlotUnavailable` with that hint.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

from ..io.files import temp_name
from .metrics import read_metrics, split_rows

log = logging.getLogger(__name__)

__all__ = ["PlotUnavailable", "plot_runs", "have_matplotlib", "register"]

INSTALL_HINT = 'matplotlib is not installed: pip install "cllm[plot]" (or pip install matplotlib)'


class PlotUnavailable(ImportError):
    """matplotlib is missing."""


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _ema(values: Sequence[float], alpha: float) -> List[float]:
    out, m = [], None
    for v in values:
        m = v if m is None else (1 - alpha) * m + alpha * v
        out.append(m)
    return out


def _label(run: str) -> str:
    run = os.path.normpath(run)
    if os.path.basename(run) == "metrics.jsonl":
        run = os.path.dirname(run)
    return os.path.basename(run) or run


def plot_runs(runs: Sequence[str], out: str, *, labels: Optional[Sequence[str]] = None,
              smooth: float = 0.1, title: Optional[str] = None) -> str:
    """Draw train and val loss of each run (a run directory or a ``metrics.jsonl``)
    against training tokens into the image ``out`` (replaced atomically), in
    bits per byte (comparable across tokenizers) when the runs logged it,
    else in nats per token.

    Train loss is shown raw (faint) and as an exponential moving average with
    weight ``smooth`` (1 = no smoothing); val loss as markers. Returns ``out``.
    """
    if not runs:
        raise ValueError("plot_runs: no runs given")
    if not 0 < smooth <= 1:
        raise ValueError(f"smooth must be in (0, 1], got {smooth}")
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
    data: List[Dict[str, Any]] = []
    for i, r in enumerate(runs):
        tr, ev = split_rows(read_metrics(r))
        if not tr and not ev:
            raise ValueError(f"{r}: the metrics log holds no rows yet")
        data.append({"label": labels[i] if labels else _label(r), "train": tr, "eval": ev})
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None
    # bits per byte when every run logged it (comparable across tokenizers), else nats per token
    bpb = all(all("bits_per_byte" in r for r in d["train"]) and all("val_bits_per_byte" in r for r in d["eval"])
              for d in data)
    tkey, vkey = ("bits_per_byte", "val_bits_per_byte") if bpb else ("loss", "val_loss")
    fig, ax = plt.subplots(1, 1, figsize=(9, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, d in enumerate(data):
        c = colors[i % len(colors)]
        tr = [r for r in d["train"] if "tokens" in r and r.get(tkey) is not None]
        if tr:
            x = [r["tokens"] for r in tr]
            y = [r[tkey] for r in tr]
            ax.plot(x, y, color=c, alpha=0.2, linewidth=0.8)
            ax.plot(x, _ema(y, smooth), color=c, linewidth=1.6, label=f"{d['label']} train")
        ev = [r for r in d["eval"] if "tokens" in r and r.get(vkey) is not None]
        if ev:
            ax.plot([r["tokens"] for r in ev], [r[vkey] for r in ev], color=c, marker="o", linestyle="--",
                    linewidth=1.2, markersize=4, label=f"{d['label']} val")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("bits per byte" if bpb else "loss (nats/token)")
    last = max((r.get("step", 0) for d in data for r in d["train"]), default=0)
    if len(data) == 1 and last:
        ax.set_title(f"{last:,} steps", fontsize="small")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.suptitle(title or "cllm: " + ", ".join(d["label"] for d in data))
    fig.tight_layout()
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = temp_name(out)
    try:
        fig.savefig(tmp, dpi=110, format=os.path.splitext(out)[1].lstrip(".") or "png")
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("wrote %s", out)
    return out


def cmd_plot(a: argparse.Namespace) -> int:
    """Run ``cllm plot``."""
    out = a.output or (os.path.join(a.runs[0], "loss.png") if len(a.runs) == 1 and os.path.isdir(a.runs[0])
                       else "loss.png")
    try:
        plot_runs(a.runs, out, labels=a.label, smooth=a.smooth, title=a.title)
    except PlotUnavailable as e:
        raise ValueError(str(e)) from None
    print(out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``plot`` sub-command."""
    p = sub.add_parser("plot", help="plot train/val loss of one or more runs (needs matplotlib)",
                       description="Plot train and val loss against steps and tokens from each run's "
                                   "metrics.jsonl (needs matplotlib: pip install \"cllm[plot]\").")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directory (or its metrics.jsonl)")
    p.add_argument("-o", "--output", default=None,
                   help="image file (default: RUN/loss.png for one run, ./loss.png for several)")
    p.add_argument("--label", action="append", default=None, help="legend label per run (repeatable)")
    p.add_argument("--smooth", type=float, default=0.1, help="EMA weight of the train-loss curve (1: raw)")
    p.add_argument("--title", default=None)
    p.set_defaults(func=cmd_plot)
