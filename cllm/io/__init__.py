"""File formats and crash-consistent writes: :mod:`~cllm.io.files` (atomic
replace, fsync, bounded JSON reading, stale-temp cleanup) and
:mod:`~cllm.io.safetensors` (the safetensors format, read, written and
memory-mapped). Imports only the base modules."""
