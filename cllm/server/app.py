"""The ``cllm serve`` HTTP application (Starlette, served by uvicorn).

Routes (request and response fields as the clients read them):

- OpenAI: ``POST /v1/completions`` (``suffix`` for infilling, ``stream``
  as server-sent events ending with ``data: [DONE]``), ``GET /v1/models``;
- llama.cpp: ``POST /completion``, ``POST /infill``, ``POST /tokenize``,
  ``POST /detokenize``, ``GET /health``, ``GET /props``;
- ``GET /metrics`` (Prometheus text).

Every error is a JSON ``{"error": {"message", "type", "param", "code"}}``
with a 4xx/5xx status, never a traceback: malformed JSON, wrong types,
unknown fields, ids out of range and prompts over the context are 400, a
body over ``max_body`` bytes 413, a missing or wrong API key 401, a full
queue 503 with ``Retry-After``, infilling on a model without
fill-in-the-middle tokens 501. A client that disconnects cancels its
generation. One log line per request names the route, the prompt and
generated tokens, the time to the first token and the total time.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from ..errors import CllmError
from ..data.fim import infill_ban
from .engine import Engine, Event, Job, NoInfill, PromptTooLong, QueueFull, Sampling, infill_ids
from .metrics import ServerMetrics
from .protocol import (DETOKENIZE, LLAMA_COMPLETION, LLAMA_INFILL, OPENAI_COMPLETION, TOKENIZE, ApiError,
                       check_ids, parse, stops)

log = logging.getLogger("cllm.server")

__all__ = ["create_app", "ServerState"]

#: the largest request body accepted (bytes) unless configured
MAX_BODY = 8 << 20


class ServerState:
    """What the routes share: the engine, the model's name, options, metrics."""

    def __init__(self, engine: Engine, model_name: str, api_key: Optional[str] = None,
                 max_body: int = MAX_BODY, model_path: str = "") -> None:
        self.engine = engine
        self.model_name = model_name
        self.api_key = api_key
        self.max_body = max_body
        self.model_path = model_path
        self.metrics = ServerMetrics()
        self.created = int(time.time())


# ------------------------------------------------------------------ helpers
def _error(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def _json_body(request: Request, state: ServerState) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > state.max_body:
        raise ApiError(f"request body of {int(declared):,} bytes is over the {state.max_body:,}-byte limit",
                       status=413, code="request_too_large")
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > state.max_body:
            raise ApiError(f"request body is over the {state.max_body:,}-byte limit", status=413,
                           code="request_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ApiError(f"the request body is not valid JSON ({str(e)[:120]})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _submit(state: ServerState, job: Job) -> None:
    try:
        state.engine.submit(job)
    except QueueFull as e:
        raise ApiError(f"the server is busy: {e}; retry shortly", status=503, type="server_error",
                       code="queue_full", headers={"Retry-After": "1"}) from None


async def _watch_disconnect(request: Request, job: Job) -> None:
    """Cancel ``job`` when the client goes away (non-streaming requests)."""
    while not job.finished:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            job.cancel.set()
            return


async def _collect(request: Request, job: Job) -> Tuple[List[Event], Event]:
    """All events of a non-streamed job (cancelled if the client leaves)."""
    watcher = asyncio.ensure_future(_watch_disconnect(request, job))
    out: List[Event] = []
    try:
        while True:
            ev = await job.events.get()
            if ev.kind == "done":
                return out, ev
            out.append(ev)
    finally:
        watcher.cancel()


def _sampling_seed(seed: Optional[int]) -> Optional[int]:
    return None if seed is None or seed < 0 else int(seed)


def _prompt_job(state: ServerState, prompt: Any, sampling: Sampling) -> Job:
    eng = state.engine
    if isinstance(prompt, list):
        check_ids(prompt, eng.model.config.vocab_size)
    ids, allowed, skip = eng.prompt(prompt, heal=isinstance(prompt, str))
    return Job(ids=ids, sampling=sampling, allowed=allowed, skip=skip)


def _log(state: ServerState, route: str, status: int, t0: float, job: Optional[Job] = None,
         prompt_tokens: int = 0) -> None:
    total = time.perf_counter() - t0
    gen = job.generated if job else 0
    ttft = (job.first_token - t0) if job and job.first_token else -1.0
    state.metrics.request(route, status, total, ttft, prompt_tokens, gen)
    log.info("%s %d prompt=%d generated=%d ttft=%s total=%.1fms", route, status, prompt_tokens, gen,
             f"{1000 * ttft:.1f}ms" if ttft >= 0 else "-", 1000 * total)


def _handler(route: str, fn: Callable[[Request, ServerState, float], Any]) -> Callable[[Request], Any]:
    """Wrap a route: auth, errors as JSON objects, the request log line."""
    async def endpoint(request: Request) -> Response:
        state: ServerState = request.app.state.cllm
        t0 = time.perf_counter()
        try:
            if state.api_key and route not in ("/health",):
                auth = request.headers.get("authorization", "")
                if auth != f"Bearer {state.api_key}":
                    raise ApiError("invalid or missing API key (send Authorization: Bearer KEY)", status=401,
                                   type="authentication_error", code="invalid_api_key")
            return await fn(request, state, t0)
        except ApiError as e:
            _log(state, route, e.status, t0)
            return _error(e)
        except NoInfill as e:
            _log(state, route, 501, t0)
            return _error(ApiError(str(e), status=501, type="not_supported_error", code="no_infill"))
        except PromptTooLong as e:
            _log(state, route, 400, t0)
            return _error(ApiError(str(e), param="prompt", code="context_length_exceeded"))
        except CllmError as e:
            _log(state, route, 400, t0)
            return _error(ApiError(str(e)))
    return endpoint


# ------------------------------------------------------------------ OpenAI
def _openai_prompts(prompt: Any) -> List[Any]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
        return list(prompt)
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return list(prompt) or [""]
    return [prompt]          # a list of token ids


def _logprobs_obj(tokens: List[str], lps: List[Optional[float]], tops: List[Optional[Dict[str, float]]],
                  start: int) -> Dict[str, Any]:
    offs, pos = [], start
    for t in tokens:
        offs.append(pos)
        pos += len(t)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs}


async def openai_completions(request: Request, state: ServerState, t0: float) -> Response:
    req = parse(await _json_body(request, state), OPENAI_COMPLETION, "/v1/completions")
    eng = state.engine
    n = req["n"] or 1
    temperature = 1.0 if req["temperature"] is None else float(req["temperature"])
    sampling_kw = dict(max_tokens=eng.cap(16 if req["max_tokens"] is None else req["max_tokens"]),
                       temperature=temperature, top_k=req["top_k"] or None,
                       top_p=1.0 if req["top_p"] is None else float(req["top_p"]), stop=stops(req["stop"]),
                       logprobs=req["logprobs"])
    prompts = _openai_prompts(req["prompt"])
    jobs: List[Tuple[int, Any, Job]] = []
    for pi, p in enumerate(prompts):
        for k in range(n):
            seed = None if req["seed"] is None else int(req["seed"]) + k
            s = Sampling(seed=seed, **sampling_kw)
            if req["suffix"] is not None:
                if not isinstance(p, str):
                    raise ApiError("suffix needs a text prompt", param="suffix")
                ids = infill_ids(eng.tokenizer, p, req["suffix"], eng.ctx, s.max_tokens, order=eng.infill_order)
                job = Job(ids=ids, sampling=s, ban=infill_ban(eng.tokenizer))
            else:
                job = _prompt_job(state, p, s)
            jobs.append((pi * n + k, p, job))
    created = int(time.time())
    cid = "cmpl-" + uuid.uuid4().hex[:24]
    prompt_tokens = sum(len(j.ids) for _, _, j in jobs[::n])
    echo = bool(req["echo"])

    def prompt_text(p: Any) -> str:
        return p if isinstance(p, str) else eng.tokenizer.decode(p)

    if req["stream"]:
        for _, _, job in jobs[:1]:
            _submit(state, job)

        async def events() -> AsyncIterator[bytes]:
            completion = 0
            try:
                for idx, (i, p, job) in enumerate(jobs):
                    if idx > 0:
                        _submit(state, job)
                    if echo:
                        yield _sse({"id": cid, "object": "text_completion", "created": created,
                                    "model": state.model_name, "choices": [{"text": prompt_text(p), "index": i,
                                                                            "logprobs": None,
                                                                            "finish_reason": None}]})
                    while True:
                        ev = await job.events.get()
                        if ev.kind == "done":
                            break
                        if not ev.text and ev.logprob is None:
                            continue
                        lp = (_logprobs_obj([ev.text], [ev.logprob], [ev.top], 0)
                              if req["logprobs"] is not None else None)
                        yield _sse({"id": cid, "object": "text_completion", "created": created,
                                    "model": state.model_name,
                                    "choices": [{"text": ev.text, "index": i, "logprobs": lp,
                                                 "finish_reason": None}]})
                    completion += job.generated
                    yield _sse({"id": cid, "object": "text_completion", "created": created,
                                "model": state.model_name,
                                "choices": [{"text": "", "index": i, "logprobs": None,
                                             "finish_reason": _openai_finish(ev)}]})
                if isinstance(req["stream_options"], dict) and req["stream_options"].get("include_usage"):
                    yield _sse({"id": cid, "object": "text_completion", "created": created,
                                "model": state.model_name, "choices": [],
                                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                                          "total_tokens": prompt_tokens + completion}})
                yield b"data: [DONE]\n\n"
            finally:
                for _, _, job in jobs:
                    job.cancel.set()       # a client that left stops its generation
                _log(state, "/v1/completions", 200, t0, jobs[0][2], prompt_tokens)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    choices: List[Dict[str, Any]] = []
    completion = 0
    for i, p, job in jobs:
        _submit(state, job)
        evs, done = await _collect(request, job)
        if done.finish == "cancelled":
            _log(state, "/v1/completions", 499, t0, job, prompt_tokens)
            return Response(status_code=499)
        text = "".join(e.text for e in evs)
        lp = None
        if req["logprobs"] is not None:
            toks = [e for e in evs if e.logprob is not None]
            lp = _logprobs_obj([eng.tokenizer.decode([e.token]) for e in toks], [e.logprob for e in toks],
                               [e.top for e in toks], len(prompt_text(p)) if echo else 0)
        if echo:
            text = prompt_text(p) + text
        completion += job.generated
        choices.append({"text": text, "index": i, "logprobs": lp, "finish_reason": _openai_finish(done)})
    _log(state, "/v1/completions", 200, t0, jobs[0][2], prompt_tokens)
    return JSONResponse({"id": cid, "object": "text_completion", "created": created, "model": state.model_name,
                         "choices": choices,
                         "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                                   "total_tokens": prompt_tokens + completion}})


def _openai_finish(ev: Event) -> str:
    return "length" if ev.finish == "length" else "stop"


def _sse(obj: Dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def openai_models(request: Request, state: ServerState, t0: float) -> Response:
    _log(state, "/v1/models", 200, t0)
    return JSONResponse({"object": "list", "data": [{"id": state.model_name, "object": "model",
                                                      "created": state.created, "owned_by": "cllm"}]})


# --------------------------------------------------------------- llama.cpp
def _llama_sampling(req: Dict[str, Any], eng: Engine) -> Sampling:
    return Sampling(max_tokens=eng.cap(req["n_predict"]), temperature=float(req["temperature"]),
                    top_k=int(req["top_k"]) or None, top_p=float(req["top_p"]), seed=_sampling_seed(req["seed"]),
                    stop=stops(req["stop"]), logprobs=(req["n_probs"] or None),
                    t_max_predict_ms=float(req["t_max_predict_ms"] or 0) or None,
                    stop_at_eot=not req.get("ignore_eos"))


def _llama_prompt(prompt: Any, eng: Engine) -> Any:
    """llama.cpp prompts: text, token ids, or a list mixing both (joined)."""
    if isinstance(prompt, str):
        return prompt
    if all(isinstance(p, int) for p in prompt):
        return list(prompt)
    ids: List[int] = []
    for p in prompt:
        ids += eng.tokenizer.encode(p) if isinstance(p, str) else [p]
    return ids


def _timings(job: Job) -> Dict[str, float]:
    pn, gn = len(job.ids), job.generated
    pm, gm = job.prompt_ms, job.predicted_ms
    return {"prompt_n": pn, "prompt_ms": pm, "prompt_per_token_ms": pm / pn if pn else 0.0,
            "prompt_per_second": 1000.0 * pn / pm if pm else 0.0, "predicted_n": gn, "predicted_ms": gm,
            "predicted_per_token_ms": gm / gn if gn else 0.0,
            "predicted_per_second": 1000.0 * gn / gm if gm else 0.0}


def _llama_final(state: ServerState, job: Job, done: Event, content: str, req: Dict[str, Any]) -> Dict[str, Any]:
    stop_type = {"stop": "word" if done.stop_word else "eos", "length": "limit"}.get(done.finish, "none")
    return {"content": content, "id_slot": 0, "stop": True, "model": state.model_name,
            "tokens_predicted": job.generated, "tokens_evaluated": len(job.ids), "tokens_cached": 0,
            "truncated": False, "stop_type": stop_type, "stopping_word": done.stop_word,
            "has_new_line": "\n" in content, "timings": _timings(job),
            "generation_settings": {"n_predict": job.sampling.max_tokens, "temperature": job.sampling.temperature,
                                    "top_k": job.sampling.top_k or 0, "top_p": job.sampling.top_p,
                                    "seed": job.sampling.seed if job.sampling.seed is not None else -1,
                                    "stop": list(job.sampling.stop), "n_ctx": state.engine.ctx}}


async def _llama_run(request: Request, state: ServerState, t0: float, route: str, job: Job,
                     req: Dict[str, Any]) -> Response:
    _submit(state, job)
    if req["stream"]:
        async def events() -> AsyncIterator[bytes]:
            content = ""
            try:
                while True:
                    ev = await job.events.get()
                    if ev.kind == "done":
                        yield _sse(_llama_final(state, job, ev, "", req))
                        return
                    if ev.text:
                        content += ev.text
                        chunk: Dict[str, Any] = {"content": ev.text, "stop": False, "id_slot": 0,
                                                 "tokens": [ev.token] if ev.token >= 0 else []}
                        if ev.top is not None:
                            chunk["completion_probabilities"] = [
                                {"id": ev.token, "token": ev.text, "logprob": ev.logprob,
                                 "top_logprobs": [{"token": t, "logprob": v} for t, v in ev.top.items()]}]
                        yield _sse(chunk)
            finally:
                job.cancel.set()
                _log(state, route, 200, t0, job, len(job.ids))
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    evs, done = await _collect(request, job)
    if done.finish == "cancelled":
        _log(state, route, 499, t0, job, len(job.ids))
        return Response(status_code=499)
    content = "".join(e.text for e in evs)
    out = _llama_final(state, job, done, content, req)
    out["tokens"] = [e.token for e in evs if e.token >= 0]
    if req["n_probs"]:
        out["completion_probabilities"] = [
            {"id": e.token, "token": e.text, "logprob": e.logprob,
             "top_logprobs": [{"token": t, "logprob": v} for t, v in (e.top or {}).items()]}
            for e in evs if e.logprob is not None]
    _log(state, route, 200, t0, job, len(job.ids))
    return JSONResponse(out)


async def llama_completion(request: Request, state: ServerState, t0: float) -> Response:
    req = parse(await _json_body(request, state), LLAMA_COMPLETION, "/completion")
    prompt = _llama_prompt(req["prompt"], state.engine)
    job = _prompt_job(state, prompt, _llama_sampling(req, state.engine))
    return await _llama_run(request, state, t0, "/completion", job, req)


async def llama_infill(request: Request, state: ServerState, t0: float) -> Response:
    req = parse(await _json_body(request, state), LLAMA_INFILL, "/infill")
    eng = state.engine
    s = _llama_sampling(req, eng)
    prompt = req["prompt"]
    if not isinstance(prompt, str):
        prompt = eng.tokenizer.decode(_llama_prompt(prompt, eng))
    extra = [(x.get("filename", ""), x.get("text", "")) for x in req["input_extra"]]
    ids = infill_ids(eng.tokenizer, req["input_prefix"], req["input_suffix"], eng.ctx, s.max_tokens, prompt, extra,
                     order=eng.infill_order)
    return await _llama_run(request, state, t0, "/infill", Job(ids=ids, sampling=s, ban=infill_ban(eng.tokenizer)),
                            req)


async def llama_tokenize(request: Request, state: ServerState, t0: float) -> Response:
    req = parse(await _json_body(request, state), TOKENIZE, "/tokenize")
    tok = state.engine.tokenizer
    ids = tok.encode(req["content"])
    _log(state, "/tokenize", 200, t0)
    if req["with_pieces"]:
        return JSONResponse({"tokens": [{"id": i, "piece": tok.decode([i])} for i in ids]})
    return JSONResponse({"tokens": ids})


async def llama_detokenize(request: Request, state: ServerState, t0: float) -> Response:
    req = parse(await _json_body(request, state), DETOKENIZE, "/detokenize")
    check_ids(req["tokens"], state.engine.model.config.vocab_size, "tokens")
    _log(state, "/detokenize", 200, t0)
    return JSONResponse({"content": state.engine.tokenizer.decode(req["tokens"])})


async def health(request: Request, state: ServerState, t0: float) -> Response:
    return JSONResponse({"status": "ok"})


async def props(request: Request, state: ServerState, t0: float) -> Response:
    eng = state.engine
    tok = eng.tokenizer
    from ..data.fim import fim_token_ids
    _log(state, "/props", 200, t0)
    return JSONResponse({
        "default_generation_settings": {"n_ctx": eng.ctx, "params": {"n_predict": -1, "temperature": 0.8,
                                                                       "top_k": 40, "top_p": 0.95, "seed": -1}},
        "total_slots": 1, "model_path": state.model_path, "model_alias": state.model_name,
        "n_ctx": eng.ctx, "vocab_size": eng.model.config.vocab_size,
        "infill": fim_token_ids(tok) is not None, "infill_order": eng.infill_order, "max_queue": eng.max_queue,
        "build_info": f"cllm {__version__}"})


async def metrics(request: Request, state: ServerState, t0: float) -> Response:
    return PlainTextResponse(state.metrics.render(state.engine.queue_length, state.engine.in_flight),
                             media_type="text/plain; version=0.0.4")


async def _not_found(request: Request, exc: Exception) -> Response:
    code = getattr(exc, "status_code", 404)
    msg = "no such route" if code == 404 else "method not allowed"
    return _error(ApiError(f"{request.method} {request.url.path}: {msg}", status=code,
                           code="not_found" if code == 404 else "method_not_allowed"))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s: %s", request.url.path, exc)
    return _error(ApiError("internal server error", status=500, type="server_error", code="internal_error"))


def create_app(state: ServerState) -> Starlette:
    """The Starlette application over ``state`` (routes in the module docstring)."""
    routes = [
        Route("/v1/completions", _handler("/v1/completions", openai_completions), methods=["POST"]),
        Route("/v1/models", _handler("/v1/models", openai_models), methods=["GET"]),
        Route("/completion", _handler("/completion", llama_completion), methods=["POST"]),
        Route("/completions", _handler("/completion", llama_completion), methods=["POST"]),
        Route("/infill", _handler("/infill", llama_infill), methods=["POST"]),
        Route("/tokenize", _handler("/tokenize", llama_tokenize), methods=["POST"]),
        Route("/detokenize", _handler("/detokenize", llama_detokenize), methods=["POST"]),
        Route("/health", _handler("/health", health), methods=["GET"]),
        Route("/props", _handler("/props", props), methods=["GET"]),
        Route("/metrics", _handler("/metrics", metrics), methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found, 500: _server_error,
                                                       Exception: _server_error})
    app.state.cllm = state
    return app


def model_name(path: str) -> str:
    """The model's id in ``/v1/models``: the checkpoint directory's name."""
    return os.path.basename(os.path.normpath(os.path.abspath(path))) or "cllm"
