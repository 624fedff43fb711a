"""Prompt processing: the batched prefill against token-by-token, and the prompt cache.

    python bench/prompt_rate.py                         # config-B-sized model, fp32/bf16/int8, 1 and 2 threads
    python bench/prompt_rate.py --model tiny --dtypes fp32 --threads 1 --reps 1   # a smoke run

One run, sides interleaved, best of --reps. For each weight format and
thread count, on a config-B-sized model (6 layers, 6 heads, embed 384,
vocab 4096, context 1024; random weights, a BPE trained on stdlib code):

- prompt rate: a --prompt-tokens prompt (random ids) through the batched
  prefill (``Decoder.feed``) and through the per-token step path
  (``prefill_chunk = 0``: what cllm did before), tokens/s and MFU against
  the FP32 FMA peak measured in this run (bf16 and int8 weights are
  converted to fp32 panels for the GEMMs where the CPU has no BF16 dot
  product, so their MFU is counted against the same peak);
- time to the first new token of a 1,000-token text prompt (cold cache);
- warm cache: the same text with 10 more characters at its end (an editor
  after a few keystrokes), time to the first new token.

FLOPs per prompt token: 2 x (the layers' matrix parameters) + 4 x layers x
embed x (position + 1) / 2 on average for attention; the LM head runs once.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]
from lib.cli import comma_list, doc_parser  # noqa: E402
from lib.machine import cpu_model  # noqa: E402
from lib.tables import table  # noqa: E402

MODELS = {"B": dict(vocab_size=4096, context_len=1024, num_layers=6, num_heads=6, embed_dim=384),
          "tiny": dict(vocab_size=512, context_len=256, num_layers=2, num_heads=2, embed_dim=64)}


def _texts() -> List[str]:
    from cllm.data.corpus import default_corpus_path
    root = default_corpus_path()
    out = []
    for name in ("argparse.py", "textwrap.py", "shlex.py", "string.py"):
        p = os.path.join(root, name)
        if os.path.isfile(p):
            out.append(open(p, encoding="utf-8").read())
    return out


def prompt_flops(cfg: Dict[str, int], n: int) -> float:
    """Multiply-add FLOPs of an ``n``-token prompt (LM head once)."""
    L, C, V = cfg["num_layers"], cfg["embed_dim"], cfg["vocab_size"]
    mats = L * 12 * C * C
    attn = sum(4 * L * C * (t + 1) for t in range(n))
    return 2.0 * mats * n + attn + 2.0 * V * C


def best(fn: Any, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main() -> int:
    p = doc_parser(__doc__)
    p.add_argument("--model", choices=sorted(MODELS), default="B")
    p.add_argument("--dtypes", type=comma_list, default=["fp32", "bf16", "int8"])
    p.add_argument("--threads", type=lambda s: comma_list(s, int), default=[1, 2])
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--long-tokens", type=int, default=1000, help="text prompt for the time to first token")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    import random

    import cllm
    cfg = MODELS[a.model]
    texts = _texts()
    tok = cllm.Tokenizer.train(texts=texts, vocab_size=cfg["vocab_size"], progress=False)
    long_ids = tok.encode("\n".join(texts))
    n_long = min(a.long_tokens, cfg["context_len"] - 8)
    text = tok.decode(long_ids[:n_long])
    rng = random.Random(0)
    prompt = [rng.randrange(256, len(tok)) for _ in range(min(a.prompt_tokens, cfg["context_len"] - 1))]
    peaks = {t: cllm.measure_peak("fma_avx512" if cllm.get_isa() == "avx512" else "fma_avx2", threads=t)
             for t in a.threads}
    rows: List[List[Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "m")
        cllm.Model(cllm.ModelConfig(**cfg), tok, threads=1, seed=1).save(d)
        for dtype in a.dtypes:
            for th in a.threads:
                m = cllm.load(d, dtype=dtype, threads=th)
                dec = m._gen_decoder()
                chunk = dec.prefill_chunk

                def batched() -> None:
                    dec.prefill_chunk = chunk
                    dec.feed(prompt)

                def stepwise() -> None:
                    dec.prefill_chunk = 0
                    dec.feed(prompt)
                t_b = t_s = float("inf")
                for _ in range(a.reps):            # interleaved
                    t_b = min(t_b, best(batched, 1))
                    t_s = min(t_s, best(stepwise, 1))
                dec.prefill_chunk = chunk
                fl = prompt_flops(cfg, len(prompt))

                def cold() -> None:
                    dec.reset()
                    next(m.generate_ids(text, max_new_tokens=1, temperature=0, stop_at_eot=False))
                t_cold = best(cold, a.reps)

                def warm() -> None:
                    dec.reset()
                    next(m.generate_ids(text, max_new_tokens=1, temperature=0, stop_at_eot=False))
                    t = time.perf_counter()
                    next(m.generate_ids(text + "\n    retu", max_new_tokens=1, temperature=0, stop_at_eot=False))
                    warm.t = time.perf_counter() - t   # type: ignore[attr-defined]
                ws = []
                for _ in range(a.reps):
                    warm()
                    ws.append(warm.t)              # type: ignore[attr-defined]
                n = len(prompt)
                rows.append([dtype, th, f"{n / t_b:,.0f}", f"{100 * fl / t_b / 1e9 / peaks[th]:.1f}%",
                             f"{n / t_s:,.0f}", f"{100 * fl / t_s / 1e9 / peaks[th]:.1f}%", f"{t_s / t_b:.1f}x",
                             f"{1000 * t_cold:.0f} ms", f"{1000 * min(ws):.1f} ms"])
    print(f"# Prompt processing: {cpu_model()}, model {a.model} ({cfg['num_layers']} layers, embed "
          f"{cfg['embed_dim']}, vocab {cfg['vocab_size']}, context {cfg['context_len']}), ISA {cllm.get_isa()}")
    print("FP32 FMA peak measured in this run: " + ", ".join(f"{t} thread(s) {peaks[t]:.1f} GFLOP/s"
                                                             for t in a.threads))
    print(table(["dtype", "threads", f"batched {len(prompt)}-token prompt tok/s", "MFU", "per-token tok/s", "MFU",
                 "speed-up", f"first token, {n_long}-token prompt", "first token, +10 chars (warm cache)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
