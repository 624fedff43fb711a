"""Progress output: a tqdm bar on a terminal, a plain line every few seconds otherwise.

Redirected to a file or a CI log, a carriage-return progress bar turns into
one huge line; :func:`progress_bar` then returns :class:`LineProgress`,
which writes ``desc: n/total unit (pct) key=value ... [elapsed, ETA]`` as a
new line at most every ``CLLM_PROGRESS_INTERVAL`` seconds (default 30) and
once at the end.
"""
from __future__ import annotations

import os
import sys
import time
from typing import IO, Any, Dict, Optional

__all__ = ["progress_bar", "LineProgress", "fmt_duration", "fmt_count"]

DEFAULT_INTERVAL = 30.0


def fmt_duration(seconds: float) -> str:
    """``"42s"``, ``"3m05s"`` or ``"1h02m"``."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt_count(n: float, scale: bool = False) -> str:
    """``12,345`` (or ``12.3k``/``4.5M``/``1.2G`` with ``scale``)."""
    if scale:
        for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(n) >= div:
                return f"{n / div:.1f}{suf}"
    return f"{n:,.0f}"


def _interval() -> float:
    try:
        v = float(os.environ.get("CLLM_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
        return v if v >= 0 else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL


class LineProgress:
    """The subset of the tqdm API cllm uses, printing whole lines (no carriage returns)."""

    def __init__(self, *, desc: str = "", total: Optional[float] = None, unit: str = "it",
                 unit_scale: bool = False, initial: float = 0, interval: Optional[float] = None,
                 file: Optional[IO[str]] = None, **_: Any) -> None:
        self.desc, self.total, self.unit, self.unit_scale = desc, total, unit, unit_scale
        self.n = self._n0 = initial
        self.interval = _interval() if interval is None else interval
        self.file = file
        self._postfix: Dict[str, str] = {}
        self._t0 = self._last = time.monotonic()
        self._closed = False
        self._dirty = False

    def update(self, n: float = 1) -> None:
        """Advance by ``n``; print a line if the interval has passed."""
        self.n += n
        self._dirty = True
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._print(now)

    def set_postfix(self, ordered_dict: Optional[Dict[str, Any]] = None, refresh: bool = True,
                    **kw: Any) -> None:
        """Values shown after the counts (as tqdm)."""
        self._postfix = {k: str(v) for k, v in {**(ordered_dict or {}), **kw}.items()}
        self._dirty = True

    def write(self, msg: str) -> None:
        """Print a message line."""
        print(msg, file=self.file or sys.stderr, flush=True)

    def _print(self, now: float) -> None:
        el = now - self._t0
        n = fmt_count(self.n, self.unit_scale)
        parts = [f"{self.desc}: " if self.desc else ""]
        if self.total:
            parts.append(f"{n}/{fmt_count(self.total, self.unit_scale)} {self.unit} "
                         f"({100 * self.n / self.total:.0f}%)")
        else:
            parts.append(f"{n} {self.unit}")
        parts += [f" {k}={v}" for k, v in self._postfix.items()]
        eta = ""
        done = self.n - self._n0
        if self.total and done > 0 and self.n < self.total:
            eta = f", ETA {fmt_duration(el / done * (self.total - self.n))}"
        parts.append(f" [{fmt_duration(el)}{eta}]")
        self.write("".join(parts))
        self._dirty = False

    def close(self) -> None:
        """Print the final line (once)."""
        if not self._closed:
            self._closed = True
            if self._dirty:
                self._print(time.monotonic())

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(enabled: bool = True, **kw: Any) -> Any:
    """A tqdm bar when stderr is a terminal, a :class:`LineProgress` otherwise,
    a disabled (silent) tqdm when ``enabled`` is false."""
    from tqdm.auto import tqdm
    if not enabled:
        return tqdm(disable=True, **kw)
    if getattr(sys.stderr, "isatty", lambda: False)():
        return tqdm(dynamic_ncols=True, **kw)
    return LineProgress(**kw)
