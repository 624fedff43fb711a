"""File formats and crash-consistent writes: :mod:`~cllm.io.files` (atomic
replace, fsync, bounded JSON reading, stale-temp cleanup),
:mod:`~cllm.io.safetensors` (the safetensors format, read, written and
memory-mapped) and :mod:`~cllm.io.hub` (a Hugging Face hub id to its
downloaded directory; the ``hub`` extra). Imports only the base modules."""
