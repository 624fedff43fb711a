"""``cllm corpus PATH``: show which files a training run on PATH would use, and why others are skipped.

Examples::

    cllm corpus .                       # files and bytes by extension, skips by reason
    cllm corpus src/ -e py --list       # every file, used (+) or skipped (-) with its reason
    cllm corpus . --exclude 'tests/' --include '*.py' --include '*.c'
"""
from __future__ import annotations

import argparse

from ..data import corpus as _corpus


#: The ``cllm train`` options that choose the corpus (``cllm corpus`` takes the same flags).
CORPUS_OPTIONS = ("exts", "include", "exclude", "max_bytes", "max_file_bytes", "keep_vendored")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of the ``corpus`` command: PATH, the corpus flags of ``cllm train`` and ``--list``."""
    from ..training.options import TrainOptions
    p.add_argument("path", nargs="?", default=None,
                   help="source tree or file (default: the Python standard library, .py files, capped)")
    TrainOptions.add_arguments(p, only=CORPUS_OPTIONS)
    p.add_argument("--out", default="runs/cllm",
                   help="the run's output directory, left out of the corpus as `cllm train --out` does "
                        "(default: runs/cllm)")
    p.add_argument("--list", action="store_true", help="list every file: + used, - skipped [reason]")
    p.add_argument("--split", choices=["val", "train"], default=None,
                   help="PATH is a run: list the files of its held-out (val) or training split")


def cmd_corpus(a: argparse.Namespace) -> int:
    """Run ``cllm corpus``: print the corpus report to stdout."""
    if a.split is not None:
        from ..training.loop import run_split
        if a.path is None:
            raise ValueError("cllm corpus --split: give the run directory as PATH")
        docs = run_split(a.path, a.split)
        for d in docs:
            print(d.relpath)
        print(f"{len(docs):,} files, {sum(len(d.data) for d in docs):,} bytes in the {a.split} split of {a.path}")
        return 0
    path, exts, max_bytes = a.path, a.exts, a.max_bytes
    if path is None:
        path = _corpus.default_corpus_path()
        exts = exts or [".py"]
        max_bytes = max_bytes if max_bytes is not None else _corpus.DEFAULT_CORPUS_BYTES
    c = _corpus.scan(path, exts, include=a.include, exclude=a.exclude, max_bytes=max_bytes,
                     max_file_bytes=a.max_file_bytes, skip_dirs=[a.out] if a.out else (),
                     keep_vendored=a.keep_vendored)
    print(c.report(list_files=a.list))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``corpus`` sub-command."""
    p = sub.add_parser("corpus", help="show the files a training run would use, and what is skipped",
                       description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=cmd_corpus)
