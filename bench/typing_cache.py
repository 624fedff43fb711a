"""Infilling while the user types: the time to the first new token per keystroke, SPM against PSM.

    python bench/typing_cache.py                 # config-B-sized model, fp32, 1 and 2 threads
    python bench/typing_cache.py --model tiny --threads 1 --keys 8    # a smoke run

An editor asks for an infill on every pause in typing, sending the code
before the cursor and after it (llama.vscode: 256 lines before, 64 after).
This replays that: a cursor in the middle of a stdlib file, then a line of
code typed one character at a time; after each keystroke one infill request
(``InferenceModel.generate_ids`` on :func:`cllm.data.fim.infill_ids`, the
prompt cache warm from the previous request), timed to its first new
token. Two windows: the whole file around the cursor cut to the context
(the prefix trimmed from the left, the suffix from the right, 3:1) and a
short window that fits (30 lines before, 10 after). For each infill order:
the tokens of the prompt, the tokens the cache could not reuse (median per
keystroke) and the time to the first token (median and worst keystroke).
SPM puts the suffix first, so typing only appends to the prompt; PSM puts
it after the prefix, so every keystroke reruns it.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from typing import Any, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]
from lib.cli import comma_list, doc_parser  # noqa: E402
from lib.machine import cpu_model  # noqa: E402
from lib.tables import table  # noqa: E402
from prompt_rate import MODELS, _texts  # noqa: E402

TYPED = "        result = self._parse_known_args(arg_strings, namespace)"


def _common(a: List[int], b: List[int]) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def main() -> int:
    p = doc_parser(__doc__)
    p.add_argument("--model", choices=sorted(MODELS), default="B")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--threads", type=lambda s: comma_list(s, int), default=[1, 2])
    p.add_argument("--keys", type=int, default=len(TYPED), help="keystrokes per replay")
    p.add_argument("--answer", type=int, default=16, help="tokens kept for the answer (n_predict)")
    a = p.parse_args()
    import cllm
    from cllm.data.fim import infill_ids
    cfg = MODELS[a.model]
    texts = _texts()
    tok = cllm.Tokenizer.train(texts=texts, vocab_size=cfg["vocab_size"], progress=False)
    text = texts[0]
    lines = text.split("\n")
    at = len(lines) // 2
    windows = {"whole file, cut to the context": ("\n".join(lines[:at]) + "\n", "\n" + "\n".join(lines[at:])),
               "30 lines before, 10 after": ("\n".join(lines[at - 30:at]) + "\n",
                                             "\n" + "\n".join(lines[at:at + 10]))}
    ctx = cfg["context_len"]
    rows: List[List[Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "m")
        cllm.Model(cllm.ModelConfig(**cfg), tok, threads=1, seed=1).save(d)
        for th in a.threads:
            m = cllm.load(d, dtype=a.dtype, threads=th)
            for wname, (pre, suf) in windows.items():
                for order in ("spm", "psm"):
                    m._gen_decoder().reset()
                    prev: List[int] = []
                    ttft, fresh, sizes = [], [], []
                    for k in range(a.keys + 1):   # k = 0: the first request (cold cache), not counted
                        ids = infill_ids(tok, pre + TYPED[:k], suf, ctx, a.answer, order=order)
                        t = time.perf_counter()
                        next(m.generate_ids(ids, max_new_tokens=1, temperature=0, stop_at_eot=False))
                        dt = time.perf_counter() - t
                        if k:
                            ttft.append(dt)
                            fresh.append(len(ids) - _common(prev, ids))
                            sizes.append(len(ids))
                        prev = ids
                    rows.append([th, wname, order.upper(), f"{statistics.median(sizes):.0f}",
                                 f"{statistics.median(fresh):.0f}", f"{1000 * statistics.median(ttft):.1f} ms",
                                 f"{1000 * max(ttft):.1f} ms"])
    print(f"# Infilling while typing: {cpu_model()}, model {a.model} ({cfg['num_layers']} layers, embed "
          f"{cfg['embed_dim']}, vocab {cfg['vocab_size']}, context {ctx}), {a.dtype}, ISA {cllm.get_isa()}, "
          f"{a.keys} keystrokes")
    print(table(["threads", "window", "order", "prompt tokens", "tokens rerun per key (median)",
                 "first token (median)", "first token (worst key)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
