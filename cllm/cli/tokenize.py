"""``cllm tokenize``: train (or load) a BPE tokenizer and encode text with it.

Examples::

    cllm tokenize src/ --vocab-size 16384 -e py --out tok.json --text "def main():"
    cllm tokenize --load tok.json --file foo.py --show pieces
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import List, Optional, Sequence

from ..data import corpus as _corpus
from ..data.tokenizer import DEFAULT_PRETOKENIZER, DEFAULT_VOCAB_SIZE, PRETOKENIZERS, Tokenizer

log = logging.getLogger(__name__)


def _exts(values: Optional[Sequence[str]]) -> Optional[List[str]]:
    """Flatten repeated / comma-separated ``-e`` values."""
    if not values:
        return None
    out = [p.strip() for v in values for p in v.split(",") if p.strip()]
    return out or None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of the ``tokenize`` command."""
    p.add_argument("path", nargs="?", default=None,
                   help="corpus file or directory to train on (default: the Python standard "
                        "library, unless --load is given)")
    p.add_argument("--load", metavar="TOKENIZER",
                   help="use an existing tokenizer.json (or a directory holding one) instead of training")
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE,
                   help=f"target vocabulary size (default {DEFAULT_VOCAB_SIZE})")
    p.add_argument("--pretokenizer", choices=PRETOKENIZERS, default=DEFAULT_PRETOKENIZER,
                   help="split before merging: gpt2 (GPT-2's regex, which llama.cpp implements), starcoder "
                        "(GPT-2's regex with every digit alone) or cllm (code-aware) (default: %(default)s)")
    p.add_argument("--min-frequency", type=int, default=2,
                   help="stop merging when the best pair occurs fewer times (default 2)")
    p.add_argument("-e", "--ext", action="append", metavar="EXT",
                   help="only files with this extension (repeatable or comma list, e.g. -e py,pyi)")
    p.add_argument("--max-bytes", type=int, default=None, help="cap the corpus size in bytes")
    p.add_argument("--out", metavar="PATH", help="write the trained tokenizer.json here (file or directory)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help="text to encode")
    src.add_argument("--file", metavar="FILE", help="file to encode")
    p.add_argument("--show", choices=("ids", "pieces"), default="ids",
                   help="print token ids or token pieces (default ids)")
    p.add_argument("--no-stats", action="store_true", help="do not print corpus statistics")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``tokenize`` sub-command to an argparse sub-parser set."""
    p = subparsers.add_parser("tokenize", help="train a BPE tokenizer on a path and encode text",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def _pieces(tok: Tokenizer, ids: Sequence[int]) -> str:
    return " ".join(repr(tok.token_bytes(i).decode("utf-8", "backslashreplace")) for i in ids)


def run(args: argparse.Namespace) -> int:
    """Execute ``cllm tokenize`` with parsed ``args``; returns the exit status."""
    exts = _exts(args.ext)
    progress = not args.quiet and sys.stderr.isatty()
    docs = None
    if args.load:
        tok = Tokenizer.load(args.load)
        print(f"loaded {args.load}: {len(tok)} tokens")
    else:
        path = args.path or _corpus.default_corpus_path()
        max_bytes = args.max_bytes
        if args.path is None and max_bytes is None:
            max_bytes = _corpus.DEFAULT_CORPUS_BYTES
        docs = _corpus.load_documents(path, exts=exts, max_bytes=max_bytes)
        t0 = time.perf_counter()
        tok = Tokenizer.train([d.data for d in docs], vocab_size=args.vocab_size,
                              min_frequency=args.min_frequency, progress=progress, pretokenizer=args.pretokenizer)
        dt = time.perf_counter() - t0
        print(f"trained {len(tok)} tokens ({tok.num_merges} merges) on {path} in {dt:.2f}s")
        if args.out:
            print(f"wrote {tok.save(args.out)}")
    if args.path is not None and docs is None:
        docs = _corpus.load_documents(args.path, exts=exts, max_bytes=args.max_bytes)
    if docs is not None and not args.no_stats:
        nbytes = sum(len(d.data) for d in docs)
        t0 = time.perf_counter()
        ntok = len(tok.encode_documents([d.data for d in docs])) - len(docs)
        dt = time.perf_counter() - t0
        print(f"corpus: {len(docs)} files, {nbytes} bytes, {ntok} tokens, "
              f"{nbytes / max(1, ntok):.3f} bytes/token (encoded in {dt:.2f}s)")
    data = None
    if args.text is not None:
        data = args.text.encode("utf-8")
    elif args.file is not None:
        with open(args.file, "rb") as f:
            data = f.read()
    if data is not None:
        ids = tok.encode(data)
        print(_pieces(tok, ids) if args.show == "pieces" else " ".join(map(str, ids)))
        print(f"{len(data)} bytes -> {len(ids)} tokens", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``tokenize`` standalone (``python -m cllm.cli_tokenize ...``)."""
    p = argparse.ArgumentParser(prog="cllm tokenize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .errors import run_command
    args.func = run
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
