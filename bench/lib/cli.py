"""Command-line parsing shared by the bench scripts.

A script's ``--help`` is its module docstring (which documents the commands
and the output), and a side-by-side bench over a grid (configurations x
thread counts x sides) takes the same three comma-list flags everywhere.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, List, Optional, Sequence, Tuple


def comma_list(text: str, cast: Callable[[str], Any] = str) -> List[Any]:
    """``"a, b,,c"`` -> ``[cast("a"), cast("b"), cast("c")]`` (a --flag's comma list)."""
    return [cast(x.strip()) for x in text.split(",") if x.strip()]


def doc_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose help is the script's docstring ``doc``: its
    first paragraph as the description, all of it (as written) after the flags."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


class GridArgs:
    """The command line of a side-by-side bench over a grid: ``--WHAT`` (a
    comma list of ``names``, e.g. model configurations), ``--threads`` (a
    comma list of counts) and ``--sides`` (a comma list of ``sides``, default
    all), with the script's docstring ``doc`` as help. Add the script's own
    flags to :attr:`ap`, then :meth:`parse`."""

    def __init__(self, doc: str, what: str, names: Sequence[str], default: str, sides: Sequence[str]) -> None:
        self.what, self.names, self.sides = what, list(names), list(sides)
        self.ap = doc_parser(doc)
        self.ap.add_argument(f"--{what}", default=default, help="comma list of " + ",".join(self.names))
        self.ap.add_argument("--threads", default="1,2", help="comma list of thread counts")
        self.ap.add_argument("--sides", default=",".join(self.sides), help="comma list of " + ",".join(self.sides))

    def _name(self, text: str) -> str:
        """``text`` as one of :attr:`names` spells it (exactly, else the only
        name equal to it ignoring case); unchanged when there is none."""
        if text in self.names:
            return text
        folded = [n for n in self.names if n.casefold() == text.casefold()]
        return folded[0] if len(folded) == 1 else text

    def parse(self, argv: Optional[Sequence[str]], positive: Sequence[str] = (), non_negative: Sequence[str] = ()
              ) -> Tuple[argparse.Namespace, List[str], List[int], List[str]]:
        """(namespace, the ``--WHAT`` names as :attr:`names` spells them, thread
        counts, sides). A name matches exactly, else ignoring case when that
        is unambiguous (``b`` is ``B`` unless ``b`` is a name of its own).
        Unknown names or sides, a thread count that is not an integer >= 1,
        an option of ``positive`` < 1 or of ``non_negative`` < 0 end in one
        usage error naming them."""
        a = self.ap.parse_args(argv)
        chosen = comma_list(getattr(a, self.what), self._name)
        picked = comma_list(a.sides)
        bad = [f"--{self.what} {x}" for x in chosen if x not in self.names]
        bad += [f"--sides {s}" for s in picked if s not in self.sides]
        try:
            threads = comma_list(a.threads, int)
        except ValueError:
            threads = []
        if not threads or min(threads) < 1:
            bad.append(f"--threads {a.threads}")
        bad += [f"--{o.replace('_', '-')} {getattr(a, o)}" for o in positive if getattr(a, o) < 1]
        bad += [f"--{o.replace('_', '-')} {getattr(a, o)}" for o in non_negative if getattr(a, o) < 0]
        if bad:
            self.ap.error("bad " + ", ".join(bad))
        return a, chosen, threads, picked
