"""``cllm serve`` driven as editors and tools drive it: a real uvicorn server
on 127.0.0.1 in its own process, the real ``openai`` client for the OpenAI
routes and ``httpx`` for llama.cpp's, every error case answered as a JSON
error object (never a traceback or a dead server), a client that leaves
cancelling its generation, and SIGTERM during a streamed response."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator, List

import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import cllm  # noqa: E402
from cllm.config import ModelConfig  # noqa: E402
from cllm.data.tokenizer import Tokenizer  # noqa: E402
from cllm.model.gpt import Model  # noqa: E402
from cllm.data.fim import TRIM_STEP, encode_text, infill_ids  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIM = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]
CODE = "def add(a, b):\n    return a + b\n\n\nclass Point:\n    x: int = 0\n    y: int = 0\n" * 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _checkpoint(d: str, fim: bool, ctx: int = 64) -> str:
    specials = FIM if fim else ["<|endoftext|>"]
    tok = Tokenizer.train(texts=[CODE], vocab_size=320, special_tokens=specials, progress=False)
    m = Model(ModelConfig(320, ctx, 1, 2, 32), tok, threads=1, seed=7)
    m.save(d)
    return d


class Server:
    """``python -m cllm serve CKPT`` on a free loopback port."""

    def __init__(self, ckpt: str, *args: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "cllm", "serve", ckpt, "--port", str(self.port),
                                      "--threads", "1", *args], cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("server did not start")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stderr.read()


@pytest.fixture(scope="module")
def fim_ckpt(tmp_path_factory) -> str:
    return _checkpoint(str(tmp_path_factory.mktemp("serve") / "fim"), fim=True)


@pytest.fixture(scope="module")
def plain_ckpt(tmp_path_factory) -> str:
    return _checkpoint(str(tmp_path_factory.mktemp("serve") / "plain"), fim=False)


@pytest.fixture(scope="module")
def server(fim_ckpt) -> Iterator[Server]:
    s = Server(fim_ckpt, "--max-tokens", "48")
    yield s
    err = s.stop()
    assert "Traceback" not in err, err


@pytest.fixture(scope="module")
def client(server) -> "openai.OpenAI":
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def _sse(lines: Iterator[str]) -> List[str]:
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


# ------------------------------------------------------------- OpenAI
def test_openai_completion(client):
    r = client.completions.create(model="fim", prompt="def add(", max_tokens=8, temperature=0, seed=1)
    c = r.choices[0]
    assert isinstance(c.text, str) and c.finish_reason in ("stop", "length") and c.index == 0
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    again = client.completions.create(model="fim", prompt="def add(", max_tokens=8, temperature=0, seed=1)
    assert again.choices[0].text == c.text                     # greedy is deterministic


def test_openai_stream_ends_with_done(client, server):
    chunks = list(client.completions.create(model="fim", prompt="class Point", max_tokens=10, temperature=0.8,
                                            seed=3, stream=True))
    assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")
    text = "".join(ch.choices[0].text for ch in chunks)
    plain = client.completions.create(model="fim", prompt="class Point", max_tokens=10, temperature=0.8, seed=3)
    assert text == plain.choices[0].text
    with httpx.stream("POST", server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 3,
                                                                     "stream": True}) as r:
        data = _sse(r.iter_lines())
    assert data[-1] == "[DONE]" and all(json.loads(d)["object"] == "text_completion" for d in data[:-1])


def test_openai_suffix_infills_with_the_fim_tokens(client, fim_ckpt):
    r = client.completions.create(model="fim", prompt="def add(a, b):\n    return ", suffix="\n\nclass Point:",
                                  max_tokens=6, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
    chunks = list(client.completions.create(model="fim", prompt="def add(", suffix="):", max_tokens=4,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == client.completions.create(
        model="fim", prompt="def add(", suffix="):", max_tokens=4, temperature=0).choices[0].text
    # the server's infill is the model's (SPM prompts by default; --infill-order psm for the other)
    im = cllm.load(fim_ckpt, dtype="fp32")
    for order in ("spm", "psm"):
        want = im.infill("def add(a, b):\n    return ", "\n\nclass Point:", max_new_tokens=6, temperature=0,
                         top_k=None, order=order)
        if order == "spm":
            assert r.choices[0].text == want
        else:
            s = Server(fim_ckpt, "--infill-order", "psm")
            try:
                body = {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n\nclass Point:",
                        "n_predict": 6, "temperature": 0}
                assert httpx.get(s.url + "/props").json()["infill_order"] == "psm"
                assert httpx.post(s.url + "/infill", json=body, timeout=30).json()["content"] == want
            finally:
                s.stop()


def test_openai_options(client, fim_ckpt):
    tok = Tokenizer.load(os.path.join(fim_ckpt, "tokenizer.json"))
    r = client.completions.create(model="fim", prompt=["def ", "class "], n=2, max_tokens=3, temperature=1.0,
                                  seed=5, echo=True, logprobs=2, stop=["\n\n"])
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    for c in r.choices:
        assert c.text.startswith("def " if c.index < 2 else "class ")
        assert len(c.logprobs.tokens) == len(c.logprobs.token_logprobs) <= 3
        assert all(lp <= 0 for lp in c.logprobs.token_logprobs)
        assert all(len(t) <= 2 for t in c.logprobs.top_logprobs)
    ids = tok.encode("def add")
    r = client.completions.create(model="fim", prompt=ids, max_tokens=2, temperature=0)
    assert r.usage.prompt_tokens == len(ids)
    models = client.models.list()
    assert [m.id for m in models.data] == ["fim"]


def test_openai_suffix_without_fim_tokens_is_501(plain_ckpt):
    s = Server(plain_ckpt)
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as ei:
            c.completions.create(model="plain", prompt="def f(", suffix="):", max_tokens=4)
        assert ei.value.status_code == 501 and "fill-in-the-middle" in ei.value.message
        r = httpx.post(s.url + "/infill", json={"input_prefix": "def f(", "input_suffix": "):"})
        assert r.status_code == 501 and r.json()["error"]["code"] == "no_infill"
        assert c.completions.create(model="plain", prompt="def f(", max_tokens=2).choices   # still serving
    finally:
        assert "Traceback" not in s.stop()


# ---------------------------------------------------------- llama.cpp
def test_llama_completion_and_stream(server):
    body = {"prompt": "def add(", "n_predict": 6, "temperature": 0, "cache_prompt": True, "n_indent": 4,
            "samplers": ["top_k", "top_p"], "t_max_prompt_ms": 500}
    r = httpx.post(server.url + "/completion", json=body, timeout=30).json()
    assert r["stop"] is True and r["tokens_predicted"] <= 6 and r["tokens_evaluated"] > 0
    assert set(r["timings"]) >= {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_second"}
    assert r["stop_type"] in ("eos", "limit", "word")
    with httpx.stream("POST", server.url + "/completion", json={**body, "stream": True}, timeout=30) as s:
        events = [json.loads(d) for d in _sse(s.iter_lines())]
    assert events[-1]["stop"] is True and all(e["stop"] is False for e in events[:-1])
    assert "".join(e["content"] for e in events) == r["content"]


def test_llama_infill_with_extra_context(server):
    body = {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n\nclass Point:\n",
            "input_extra": [{"filename": "util.py", "text": "def sub(a, b):\n    return a - b\n"}],
            "prompt": "", "n_predict": 5, "temperature": 0, "t_max_predict_ms": 200, "stream": False}
    r = httpx.post(server.url + "/infill", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["tokens_predicted"] <= 5 and isinstance(out["content"], str)


def test_infill_prompt_layout_and_trimming(fim_ckpt):
    tok = Tokenizer.load(os.path.join(fim_ckpt, "tokenizer.json"))
    pre, suf, mid = (tok.token_to_id(t) for t in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
    ids = infill_ids(tok, "def f(", "):", ctx=64, reserve=8, order="psm")
    assert ids[0] == pre and ids[-1] == mid and suf in ids
    ids = infill_ids(tok, "def f(", "):", ctx=64, reserve=8)
    assert ids[:2] == [pre, suf] and tok.decode(ids[ids.index(mid) + 1:]) == "def f("
    long_pre, long_suf = "a = 1\n" * 200, "b = 2\n" * 200
    for ctx in (64, 300):
        ids = infill_ids(tok, long_pre, long_suf, ctx=ctx, reserve=8, order="psm")
        assert len(ids) <= ctx - 8
        n_pre, n_suf = ids.index(suf) - 1, ids.index(mid) - ids.index(suf) - 1
        assert n_suf == (ctx - 8 - 3) // 4                                  # the 3:1 split ...
        assert ctx - 8 - 3 - n_suf - TRIM_STEP < n_pre <= ctx - 8 - 3 - n_suf  # ... the prefix cut in whole steps
        assert tok.decode(ids[1:1 + n_pre]) == tok.decode(tok.encode(long_pre))[-len(tok.decode(ids[1:1 + n_pre])):]
        spm = infill_ids(tok, long_pre, long_suf, ctx=ctx, reserve=8)
        assert sorted(spm) == sorted(ids) and spm[ids.index(mid) - n_pre + 1:] == ids[1:1 + n_pre]
    # source text that spells a special token stays text
    assert mid not in encode_text(tok, "x = '<fim_middle>'")


def test_tokenize_detokenize_health_props_metrics(server):
    t = httpx.post(server.url + "/tokenize", json={"content": "def add(a, b):"}).json()["tokens"]
    assert httpx.post(server.url + "/detokenize", json={"tokens": t}).json()["content"] == "def add(a, b):"
    pieces = httpx.post(server.url + "/tokenize", json={"content": "def", "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == "def"
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    props = httpx.get(server.url + "/props").json()
    assert props["n_ctx"] == 64 and props["infill"] is True and props["total_slots"] == 1
    assert props["infill_order"] == "spm"
    m = httpx.get(server.url + "/metrics").text
    assert 'cllm_requests_total{route="/completion",status="200"}' in m
    assert "cllm_time_to_first_token_seconds_bucket" in m and "cllm_queue_length 0" in m


# -------------------------------------------------------------- errors
@pytest.mark.parametrize("route,body,status,param", [
    ("/v1/completions", b"{not json", 400, None),
    ("/v1/completions", {"prompt": "x", "max_tokens": "ten"}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "temperature": 9}, 400, "temperature"),
    ("/v1/completions", {"prompt": "x", "bogus": 1}, 400, "bogus"),
    ("/v1/completions", {"prompt": [1, 2, 99999]}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "presence_penalty": 1.5}, 400, "presence_penalty"),
    ("/v1/completions", {"prompt": "def add(a, b):\n" * 40}, 400, "prompt"),
    ("/v1/completions", [1, 2], 400, None),
    ("/completion", {"prompt": "x", "n_predict": 1.5}, 400, "n_predict"),
    ("/completion", {"prompt": "x", "repeat_penalty": 1.3}, 400, "repeat_penalty"),
    ("/infill", {"input_prefix": 3}, 400, "input_prefix"),
    ("/detokenize", {"tokens": [-1]}, 400, "tokens"),
    ("/tokenize", {"content": None}, 400, "content"),
])
def test_bad_requests_get_error_objects(server, route, body, status, param):
    kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) \
        else {"json": body}
    r = httpx.post(server.url + route, timeout=30, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"] and "Traceback" not in r.text
    if param:
        assert err["param"] == param
    assert httpx.get(server.url + "/health").status_code == 200       # the server lives on


def test_unknown_routes_methods_and_oversized_bodies(server):
    r = httpx.get(server.url + "/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(server.url + "/completion")
    assert r.status_code == 405 and "error" in r.json()
    r = httpx.post(server.url + "/completion", content=b"x" * (9 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_api_key(fim_ckpt):
    s = Server(fim_ckpt, "--api-key", "sekret")
    try:
        assert httpx.post(s.url + "/completion", json={"prompt": "x", "n_predict": 1}).status_code == 401
        bad = openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.completions.create(model="fim", prompt="x", max_tokens=1)
        good = openai.OpenAI(base_url=s.url + "/v1", api_key="sekret", max_retries=0)
        assert good.completions.create(model="fim", prompt="x", max_tokens=1).choices
        assert httpx.get(s.url + "/health").status_code == 200          # open to load balancers
    finally:
        s.stop()


def test_a_full_queue_answers_503_with_retry_after(tmp_path):
    # a model slow enough (about 2 ms a token, 1,000 tokens a request) that six
    # clients arriving together find one request running and one waiting
    tok = Tokenizer.train(texts=[CODE], vocab_size=320, progress=False)
    d = str(tmp_path / "slow")
    Model(ModelConfig(320, 1024, 6, 6, 384), tok, threads=1, seed=1).save(d)
    s = Server(d, "--max-queue", "1")
    try:
        body = {"prompt": "def", "n_predict": 1000, "temperature": 1.0, "ignore_eos": True, "stream": True}
        statuses: List[int] = []
        headers: List[str] = []

        def hold() -> None:
            with httpx.stream("POST", s.url + "/completion", json=body, timeout=60) as r:
                statuses.append(r.status_code)
                if r.status_code == 503:
                    headers.append(r.headers.get("retry-after", ""))
                for _ in r.iter_lines():
                    pass
        ts = [threading.Thread(target=hold) for _ in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert 503 in statuses and 200 in statuses, statuses
        assert all(h == "1" for h in headers)
    finally:
        assert "Traceback" not in s.stop()


def test_a_client_that_leaves_cancels_its_generation(server):
    body = {"prompt": "def", "n_predict": 48, "temperature": 1.0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.url + "/completion", json=body, timeout=30) as r:
        next(r.iter_lines())
    deadline = time.time() + 10
    while time.time() < deadline:
        if "cllm_requests_in_flight 0" in httpx.get(server.url + "/metrics").text:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the abandoned generation kept running")
    assert httpx.post(server.url + "/completion", json={"prompt": "x", "n_predict": 2}).status_code == 200


def test_sigterm_during_a_stream_closes_it_cleanly(fim_ckpt):
    s = Server(fim_ckpt)
    body = {"prompt": "def", "max_tokens": 60, "temperature": 1.0, "stream": True}
    got: List[str] = []
    with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=30) as r:
        for i, line in enumerate(r.iter_lines()):
            if line.startswith("data: "):
                got.append(line[6:])
                if len(got) == 2:
                    s.proc.send_signal(signal.SIGTERM)
    assert got[-1] == "[DONE]", got
    assert s.proc.wait(20) in (0, -signal.SIGTERM)      # uvicorn re-raises the signal once it has shut down
    assert "Traceback" not in s.proc.stderr.read()
