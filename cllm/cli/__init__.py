"""The ``cllm`` command: :mod:`~cllm.cli.main` (the parser and the
commands), :mod:`~cllm.cli.corpus`, :mod:`~cllm.cli.tokenize` and
:mod:`~cllm.cli.errors` (one-line errors, exit codes). The top layer: it may
import any other package; nothing imports it."""
