"""Load on ``cllm serve``: concurrent editor-like clients, loopback only.

    python bench/serve_load.py                               # config-B-sized model, 1/4/8 clients x 50 requests
    python bench/serve_load.py --clients 1,2 --requests 4 --model tiny   # a smoke run

A server (``python -m cllm serve``, its own process, 127.0.0.1, a free port)
serves a model with fill-in-the-middle tokens (random weights: the speed and
the server's behaviour do not depend on them). Each client sends its
requests one after another, alternating llama.cpp ``/infill`` (prefix and
suffix cut from a real source file around a random cursor, as llama.vscode
sends them) and OpenAI ``/v1/completions`` with ``suffix``, both streamed;
every fifth request disconnects after its first event. Reported per client
count: requests, failures (anything but 200, or a deliberate 503 from a full
queue), p50/p95 time to the first generated text and total latency of the
completed requests, requests/s; then the server's RSS before and after all
runs (flat: within 5%). Bounded: --requests per client, --tokens per
request, --max-seconds in all.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]
from lib.cli import comma_list, doc_parser  # noqa: E402
from lib.machine import cpu_model  # noqa: E402
from lib.tables import table  # noqa: E402

ROOT = os.path.dirname(HERE)
MODELS = {"B": dict(vocab_size=4096, context_len=1024, num_layers=6, num_heads=6, embed_dim=384),
          "tiny": dict(vocab_size=512, context_len=256, num_layers=2, num_heads=2, embed_dim=64)}
FIM = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]


def _source_texts() -> List[str]:
    import cllm
    from cllm.data.corpus import default_corpus_path
    root = default_corpus_path()
    out = []
    for name in ("textwrap.py", "argparse.py", "shlex.py", "string.py", "bisect.py", "heapq.py"):
        p = os.path.join(root, name)
        if os.path.isfile(p):
            out.append(open(p, encoding="utf-8").read())
    assert out, f"no stdlib sources under {root} ({cllm.__version__})"
    return out


def make_checkpoint(d: str, size: str) -> str:
    """A checkpoint of ``size`` with a FIM tokenizer trained on stdlib code."""
    import cllm
    texts = _source_texts()
    cfg = MODELS[size]
    tok = cllm.Tokenizer.train(texts=texts, vocab_size=cfg["vocab_size"], special_tokens=FIM, progress=False)
    cllm.Model(cllm.ModelConfig(**cfg), tok, threads=1, seed=1).save(d)
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _cursor_request(texts: List[str], rng: random.Random, kind: str, tokens: int) -> Tuple[str, Dict[str, Any]]:
    t = rng.choice(texts)
    cut = rng.randrange(len(t) // 4, 3 * len(t) // 4)
    prefix, suffix = t[max(0, cut - 1500):cut], t[cut:cut + 500]
    if kind == "infill":
        return "/infill", {"input_prefix": prefix, "input_suffix": suffix, "n_predict": tokens, "stream": True,
                           "temperature": 0.2, "top_k": 40, "top_p": 0.99, "cache_prompt": True,
                           "t_max_predict_ms": 1000, "samplers": ["top_k", "top_p", "infill"]}
    return "/v1/completions", {"model": "bench", "prompt": prefix, "suffix": suffix, "max_tokens": tokens,
                               "temperature": 0.2, "stream": True}


def client(url: str, texts: List[str], n: int, tokens: int, seed: int, deadline: float,
           out: List[Dict[str, Any]]) -> None:
    """Send ``n`` requests one after another; append one record per request."""
    import httpx
    rng = random.Random(seed)
    with httpx.Client(timeout=120) as c:
        for i in range(n):
            if time.time() > deadline:
                return
            route, body = _cursor_request(texts, rng, "infill" if i % 2 == 0 else "openai", tokens)
            leave = i % 5 == 4
            rec: Dict[str, Any] = {"route": route, "left": leave, "status": None, "ttft": None, "total": None}
            t0 = time.perf_counter()
            try:
                with c.stream("POST", url + route, json=body) as r:
                    rec["status"] = r.status_code
                    if r.status_code == 200:
                        for line in r.iter_lines():
                            if line.startswith("data: ") and rec["ttft"] is None and '"content": ""' not in line \
                                    and '"text": ""' not in line:
                                rec["ttft"] = time.perf_counter() - t0
                                if leave:
                                    break
                    else:
                        r.read()
                rec["total"] = time.perf_counter() - t0
            except Exception as e:     # a transport failure is a failure
                rec["error"] = f"{type(e).__name__}: {e}"
            out.append(rec)


def pctl(xs: List[float], q: float) -> Optional[float]:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> int:
    p = doc_parser(__doc__)
    p.add_argument("--model", choices=sorted(MODELS), default="B")
    p.add_argument("--clients", type=lambda s: comma_list(s, int), default=[1, 4, 8])
    p.add_argument("--requests", type=int, default=50, help="requests per client")
    p.add_argument("--tokens", type=int, default=32, help="tokens generated per request")
    p.add_argument("--threads", type=int, default=0, help="server threads (0: all CPUs)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "int8"])
    p.add_argument("--max-queue", type=int, default=16)
    p.add_argument("--max-seconds", type=float, default=1500, help="stop sending after this long")
    a = p.parse_args()
    import httpx
    texts = _source_texts()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(os.path.join(tmp, "model"), a.model)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, "-m", "cllm", "serve", ckpt, "--port", str(port), "--threads",
                                 str(a.threads), "--dtype", a.dtype, "--max-queue", str(a.max_queue)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            t_up = time.time() + 120
            while True:
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > t_up or proc.poll() is not None:
                    raise SystemExit("the server did not start: " + (proc.stderr.read() if proc.poll() else ""))
                time.sleep(0.2)
            client(url, texts, 2, a.tokens, 0, time.time() + 60, [])          # warm-up
            rss0 = _rss_kb(proc.pid)
            deadline = time.time() + a.max_seconds
            rows, failures_all = [], 0
            for nc in a.clients:
                recs: List[Dict[str, Any]] = []
                ts = [threading.Thread(target=client, args=(url, texts, a.requests, a.tokens, 1000 * nc + k,
                                                            deadline, recs)) for k in range(nc)]
                t0 = time.perf_counter()
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                wall = time.perf_counter() - t0
                fails = [r for r in recs if "error" in r or r["status"] not in (200, 503)]
                busy = sum(1 for r in recs if r["status"] == 503)
                done = [r for r in recs if r["status"] == 200 and not r["left"] and r["total"] is not None]
                ttft = [r["ttft"] for r in recs if r["status"] == 200 and r["ttft"] is not None]
                tot = [r["total"] for r in done]
                failures_all += len(fails)
                rows.append([nc, len(recs), len(fails), busy, sum(r["left"] for r in recs),
                             _ms(pctl(ttft, 0.5)), _ms(pctl(ttft, 0.95)), _ms(pctl(tot, 0.5)), _ms(pctl(tot, 0.95)),
                             f"{len(recs) / wall:.2f}"])
                for r in fails[:3]:
                    print(f"  failure: {r}", file=sys.stderr)
            rss1 = _rss_kb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    m = MODELS[a.model]
    print(f"# cllm serve under load: {cpu_model()}, model {a.model} ({m['num_layers']} layers, embed "
          f"{m['embed_dim']}, vocab {m['vocab_size']}, context {m['context_len']}), {a.dtype}, server threads "
          f"{a.threads or os.cpu_count()}, {a.tokens} tokens a request, loopback")
    print(table(["clients", "requests", "failures", "503 (queue full)", "left early", "TTFT p50", "TTFT p95",
                 "total p50", "total p95", "req/s"], rows))
    growth = 100.0 * (rss1 - rss0) / rss0 if rss0 > 0 else float("nan")
    print(f"\nserver RSS: {rss0 / 1024:.1f} MB after warm-up, {rss1 / 1024:.1f} MB after all runs "
          f"({growth:+.1f}%; flat means within 5%)")
    print(f"failures other than deliberate 503s: {failures_all}")
    return 1 if failures_all or not abs(growth) <= 5.0 else 0


def _ms(x: Optional[float]) -> str:
    return "-" if x is None else f"{1000 * x:.0f} ms"


if __name__ == "__main__":
    sys.exit(main())
