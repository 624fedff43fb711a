"""Inference-only models: :mod:`~cllm.inference.engine`
(:class:`~cllm.inference.engine.InferenceModel` in fp32, bf16 or int8, and
:func:`~cllm.inference.engine.quantize`) and
:mod:`~cllm.inference.evaluation` (loss and bits per byte of any model on
text). Imports the layers below it (base, io, data, model), never
:mod:`cllm.training` or :mod:`cllm.cli`."""
