"""cllm: train small GPT-style language models on a code repository, on CPUs."""
from __future__ import annotations

__version__ = "0.1.0"
