"""Shared pieces of the benchmark scripts under ``bench/``, one module per job.

- :mod:`lib.machine`: what machine this is (CPU model, ISA flags, cache sizes)
  and its limits measured in the same run (multiply-add peaks through
  ``cllm.measure_peak``, read bandwidth through ``cllm.measure_bandwidth``),
  and model FLOP utilisation against those peaks;
- :mod:`lib.tables`: plain Markdown tables and the number formats of their cells;
- :mod:`lib.cli`: command-line parsing shared by the scripts (help from the
  script's docstring, comma lists, the grid of a side-by-side bench);
- :mod:`lib.workers`: the subprocess worker protocol (each side of a
  comparison in its own process);
- :mod:`lib.timing`: best-of and interleaved timing.

The scripts run as ``python bench/NAME.py``, so ``bench/`` is first on
``sys.path`` and this package imports as ``lib``. Importing it also puts the
repository root on ``sys.path``, so a checkout with an in-place build of the
C extension is used without installing it.
"""
from __future__ import annotations

import os
import sys

#: the ``bench/`` directory
BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the repository root (holds the ``cllm`` package)
ROOT = os.path.dirname(BENCH)
if ROOT not in sys.path:  # the in-place build of the repository
    sys.path.insert(0, ROOT)
