"""``cllm serve``: a model behind the HTTP APIs editors and tools speak.

- :mod:`~cllm.server.engine`: one generation worker that owns the model, a
  bounded queue, cancellation, time and token limits, infill prompts;
- :mod:`~cllm.server.protocol`: request validation and the two APIs'
  response shapes (OpenAI's ``/v1/completions`` and llama.cpp's server);
- :mod:`~cllm.server.metrics`: request counters and latency histograms in
  the Prometheus text format;
- :mod:`~cllm.server.app`: the Starlette application, with the API key,
  body-size limit and per-request log line;
- :mod:`~cllm.server.run`: :func:`cllm.serve` (uvicorn, signals).

Needs the ``serve`` extra (``pip install "cllm[serve]"``: Starlette and
uvicorn). Imports the layers below it, never :mod:`cllm.training` or
:mod:`cllm.cli`.
"""
