"""Plain Markdown tables and the number formats of their cells.

Every formatter takes None for a figure that was not measured and prints
``n/a`` for it, so a row of a side that could not run keeps its columns.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Optional[Sequence[bool]] = None) -> str:
    """A Markdown table; every column but the first right-aligned unless
    ``right`` (one flag per column) says otherwise."""
    cells = [[str(c) for c in r] for r in rows]
    if right is None:
        right = [i > 0 for i in range(len(headers))]
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(out)


def fmt_bytes(n: float) -> str:
    """A byte count in binary units: 1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def pct(x: Optional[float]) -> str:
    """A fraction as a percentage: 0.1234 -> '12.3%'."""
    return "n/a" if x is None else f"{100 * x:.1f}%"


def num(x: Optional[float], digits: int = 0) -> str:
    """A number with thousands separators and ``digits`` decimals."""
    return "n/a" if x is None else f"{x:,.{digits}f}"


def ratio(a: Optional[float], b: Optional[float]) -> str:
    """``a / b`` as '1.23x' (n/a when either is missing or zero)."""
    return "n/a" if not a or not b else f"{a / b:.2f}x"
