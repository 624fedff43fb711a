"""The model: :mod:`~cllm.model.gpt` (:class:`~cllm.model.gpt.Model`, a GPT-2
whose weights, gradients and AdamW moments live in the C core),
:mod:`~cllm.model.decoder` (the one C decoder every generation path runs on,
sampling and streaming) and :mod:`~cllm.model.checkpoint` (the one checkpoint
reader and writer). Imports the base modules, :mod:`cllm.io` and
:mod:`cllm.data`."""
