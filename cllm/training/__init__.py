"""Training: :mod:`~cllm.training.options` (the options table behind
:func:`cllm.train`, the CLI and the saved state), :mod:`~cllm.training.loop`
(:func:`cllm.train`), :mod:`~cllm.training.distributed` (MPI data
parallelism), :mod:`~cllm.training.metrics` and :mod:`~cllm.training.plot`.
Imports the layers below it (base, io, data, model), never
:mod:`cllm.inference` or :mod:`cllm.cli`."""
