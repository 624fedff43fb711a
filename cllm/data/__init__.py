"""What a model is trained on: :mod:`~cllm.data.corpus` (which files of a
source tree are read), :mod:`~cllm.data.tokenizer` (the byte-level BPE in C)
and :mod:`~cllm.data.dataset` (the token stream cached on disk, batches).
Imports the base modules and :mod:`cllm.io`."""
