"""``cllm eval`` speed: the batched path against token-by-token, in one run.

    python bench/eval_rate.py                        # the default model's shape, 200 KB of stdlib code
    python bench/eval_rate.py --max-bytes 20000 --reps 1 --threads 1   # a smoke run

:func:`cllm.evaluate` scores text in context-length windows through the
decoder's negative log-likelihood (``cllm_decoder_nll``). With batched
prefill a window is GEMMs per layer with the LM head for every row; with
``prefill_chunk = 0`` it is one matrix-vector step per token (how cllm eval
ran before). Same model (the default run's shape: vocab 16384, 4 layers,
4 heads, embed 256, context 512; random weights, a BPE trained on the
text), same text, sides interleaved, best of --reps; tokens/s and the ratio,
and the loss of both sides (they must agree).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]
from lib.cli import comma_list, doc_parser  # noqa: E402
from lib.machine import cpu_model  # noqa: E402
from lib.tables import table  # noqa: E402


def main() -> int:
    p = doc_parser(__doc__)
    p.add_argument("--max-bytes", type=int, default=200_000)
    p.add_argument("--threads", type=lambda s: comma_list(s, int), default=[1, 2])
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    import cllm
    from cllm.data.corpus import default_corpus_path, load_documents
    docs = [d.data for d in load_documents(default_corpus_path(), [".py"], a.max_bytes)]
    tok = cllm.Tokenizer.train(texts=docs, vocab_size=16384, progress=False)
    rows: List[List[Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "m")
        cllm.Model(cllm.ModelConfig(16384, 512, 4, 4, 256), tok, threads=1, seed=1).save(d)
        for th in a.threads:
            m = cllm.load(d, dtype="fp32", threads=th)
            dec = m._decoder()
            chunk = dec.prefill_chunk
            res = {}
            for _ in range(a.reps):
                for side, c in (("batched", chunk), ("per-token", 0)):
                    dec.prefill_chunk = c
                    t = time.perf_counter()
                    r = cllm.evaluate(m, docs)
                    dt = time.perf_counter() - t
                    if side not in res or dt < res[side][0]:
                        res[side] = (dt, r)
            dec.prefill_chunk = chunk
            n = res["batched"][1]["tokens"]
            rows.append([th, f"{int(n):,}", f"{n / res['per-token'][0]:,.0f}", f"{n / res['batched'][0]:,.0f}",
                         f"{res['per-token'][0] / res['batched'][0]:.1f}x",
                         f"{res['per-token'][1]['loss']:.5f}", f"{res['batched'][1]['loss']:.5f}"])
    print(f"# cllm eval: {cpu_model()}, ISA {cllm.get_isa()}, default model shape, {a.max_bytes:,} bytes of code")
    print(table(["threads", "tokens", "per-token tok/s (before)", "batched tok/s", "speed-up", "loss before",
                 "loss batched"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
