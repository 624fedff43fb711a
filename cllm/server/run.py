"""``cllm.serve()``: load a checkpoint once and serve it with uvicorn until
SIGINT or SIGTERM. On the signal, queued requests end at once and the one
being generated ends after its current token, each with a properly closed
response (a stream gets its last event and ``data: [DONE]``); then the
server exits."""
from __future__ import annotations

import logging
import sys
from typing import Any, Optional

from ..errors import ConfigError, UnsupportedError

log = logging.getLogger("cllm.server")

__all__ = ["serve", "build"]


def _imports() -> Any:
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise UnsupportedError('cllm serve needs the serve extra: pip install "cllm[serve]" '
                               "(Starlette and uvicorn)") from None
    return uvicorn


def build(checkpoint: str, *, dtype: Optional[str] = None, threads: int = 0, api_key: Optional[str] = None,
          max_queue: int = 16, max_tokens: Optional[int] = None, ctx: Optional[int] = None,
          max_body: Optional[int] = None, infill_order: Optional[str] = None) -> Any:
    """The application for ``checkpoint`` (model loaded, engine running):
    what :func:`serve` runs, and what tests drive in-process."""
    _imports()
    from ..inference.engine import InferenceModel
    from .app import MAX_BODY, ServerState, create_app, model_name
    from .engine import Engine
    for name, v, lo in (("max_queue", max_queue, 1), ("max_tokens", max_tokens, 1), ("ctx", ctx, 2),
                        ("threads", threads, 0), ("max_body", max_body, 1024)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
    model = InferenceModel.load(checkpoint, dtype=dtype, threads=threads)
    if ctx is not None and ctx > model.config.context_len:
        raise ConfigError(f"ctx {ctx} is above the model's context length {model.config.context_len}")
    engine = Engine(model, max_queue=max_queue, max_tokens=max_tokens, ctx=ctx, infill_order=infill_order)
    state = ServerState(engine, model_name(checkpoint), api_key=api_key, max_body=max_body or MAX_BODY,
                        model_path=checkpoint)
    return create_app(state)


def serve(checkpoint: str, *, host: str = "127.0.0.1", port: int = 8080, dtype: Optional[str] = None,
          threads: int = 0, api_key: Optional[str] = None, max_queue: int = 16, max_tokens: Optional[int] = None,
          ctx: Optional[int] = None, max_body: Optional[int] = None, log_level: str = "info",
          infill_order: Optional[str] = None) -> None:
    """Serve ``checkpoint`` (any checkpoint :func:`cllm.load` opens, quantized
    ones too) on ``http://host:port`` until SIGINT/SIGTERM. Routes, errors
    and limits: :mod:`cllm.server.app`. Listens on 127.0.0.1 unless told."""
    uvicorn = _imports()
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"port must be an integer in [0, 65535], got {port!r}")
    app = build(checkpoint, dtype=dtype, threads=threads, api_key=api_key, max_queue=max_queue,
                max_tokens=max_tokens, ctx=ctx, max_body=max_body, infill_order=infill_order)
    engine = app.state.cllm.engine

    class _Server(uvicorn.Server):   # type: ignore[misc, name-defined]
        def handle_exit(self, sig: int, frame: Any) -> None:
            engine.close(wait=0)      # end queued and running generations; responses close cleanly
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=10, lifespan="off")
    m = engine.model
    print(f"cllm serve: {app.state.cllm.model_name} ({m.dtype}, {m.config.num_layers} layers, context "
          f"{engine.ctx}, {m.threads} threads) on http://{host}:{port}  (Ctrl-C to stop)", file=sys.stderr,
          flush=True)
    try:
        _Server(config).run()
    finally:
        engine.close(wait=5)
