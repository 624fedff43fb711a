"""How the ``cllm`` command ends: :func:`run_command` turns every exception
into one line on stderr and an exit code (2: bad input or environment,
1: a bug or a closed output pipe, 130: Ctrl-C); ``-v`` adds the traceback."""
from __future__ import annotations

import argparse
import os
import sys
import traceback


def run_command(a: argparse.Namespace) -> int:
    """Run a parsed command: a user error is one line on stderr and exit code 2,
    a bug one line and exit code 1; ``-v`` adds the traceback."""
    from ..errors import CllmError
    verbose = getattr(a, "verbose", False)
    try:
        return a.func(a)
    except KeyboardInterrupt:
        print("cllm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `cllm tokenize ... | head`: the reader went away
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 1
    except (CllmError, OSError, ValueError, MemoryError) as e:
        if verbose:
            traceback.print_exc()
        print(f"cllm: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug in cllm: still one line unless -v
        if verbose:
            traceback.print_exc()
        print(f"cllm: internal error: {type(e).__name__}: {_one_line(e)} (rerun with -v for the traceback)",
              file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    msg = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
        msg = f"{e.filename}: {msg}"
    return " ".join(msg.split())
