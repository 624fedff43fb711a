"""Fill-in-the-middle for free? The default run at several --fim-rate values.

    python bench/fim_sweep.py                         # rates 0, 0.5, 0.9 on the default corpus and model
    python bench/fim_sweep.py --rates 0,0.5 --max-steps 20 --samples 20   # a smoke run

Each rate trains the default model on the default corpus (the running
interpreter's standard library, capped) for the same number of steps with
the same seed, then measures on the run's held-out files:

- left-to-right validation loss and bits per byte (the run's own final
  evaluation: held-out files are never FIM-transformed);
- single-line infilling (one whole line masked, prefix and suffix from the
  file around it, as bigcode's santacoder_fim task): exact match of the
  greedy middle with the suffix shown (infill prompt) and with the prefix
  only (how a left-to-right model completes the same cursor), and the bits
  per byte of the true middle under the infill prompt.

The claims checked: left-to-right bits per byte with FIM within 2% of
``--fim-rate 0``, and the FIM model's single-line exact match at least 3x
the left-to-right model's (given the same prefix).
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


def held_out(opts: Any) -> List[bytes]:
    """The held-out documents of a default-corpus run (the same split the run used)."""
    from cllm.data.corpus import DEFAULT_CORPUS_BYTES, default_corpus_path, load_documents, split_documents
    docs = load_documents(default_corpus_path(), [".py"], opts.max_bytes or DEFAULT_CORPUS_BYTES)
    return [d.data for d in split_documents(docs, opts.val_fraction)[1]]


def run(rate: float, a: Any, tmp: str) -> Dict[str, Any]:
    import cllm
    from cllm.inference.evaluation import evaluate_fim
    kw: Dict[str, Any] = dict(out_dir=os.path.join(tmp, f"fim-{rate:g}"), fim_rate=rate, seed=a.seed,
                              progress=False)
    if a.max_steps:
        kw["max_steps"] = a.max_steps
    for k in ("seq_len", "batch_size"):
        if getattr(a, k):
            kw[k] = getattr(a, k)
    t0 = time.perf_counter()
    m = cllm.train(None, **kw)
    train_s = time.perf_counter() - t0
    opts = cllm.TrainOptions.from_kwargs(kw)
    val = held_out(opts)
    im = cllm.load(kw["out_dir"], dtype="fp32")
    inf = evaluate_fim(im, val, mode="line", samples=a.samples, seed=a.seed)
    pre = evaluate_fim(im, val, mode="line", samples=a.samples, seed=a.seed, use_suffix=False)
    return {"rate": rate, "steps": m.summary["steps"], "val_loss": m.summary.get("val_loss"),
            "val_bpb": m.summary.get("val_bpb"), "em_infill": inf["exact_match"] if inf["infill"] else None,
            "em_prefix": pre["exact_match"], "mid_bpb": inf.get("middle_bits_per_byte"), "train_s": train_s}


def main() -> int:
    p = doc_parser(__doc__)
    p.add_argument("--rates", type=lambda s: comma_list(s, float), default=[0.0, 0.5, 0.9])
    p.add_argument("--samples", type=int, default=300, help="single-line cases per model")
    p.add_argument("--max-steps", type=int, default=None, help="(default: the default run's one epoch)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--seq-len", type=int, default=None, help="(default: the default run's)")
    p.add_argument("--batch-size", type=int, default=None, help="(default: the default run's)")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        res = [run(r, a, tmp) for r in a.rates]
    base = next((r for r in res if r["rate"] == 0.0), None)
    for r in res:
        rel = (f"{100 * (r['val_bpb'] / base['val_bpb'] - 1):+.2f}%" if base and r["val_bpb"] and base["val_bpb"]
               else "-")
        em = "-" if r["em_infill"] is None else f"{100 * r['em_infill']:.1f}%"
        ratio = (f"{r['em_infill'] / base['em_prefix']:.1f}x" if base and r["em_infill"] is not None
                 and base["em_prefix"] > 0 else "-")
        rows.append([f"{r['rate']:g}", r["steps"], f"{r['val_loss']:.4f}", f"{r['val_bpb']:.4f}", rel, em,
                     f"{100 * r['em_prefix']:.1f}%", ratio,
                     "-" if r["mid_bpb"] is None else f"{r['mid_bpb']:.3f}", f"{r['train_s']:.0f} s"])
    shape = ", ".join(f"{k} {getattr(a, k)}" for k in ("seq_len", "batch_size") if getattr(a, k))
    print(f"# FIM sweep: default corpus and model{' (' + shape + ')' if shape else ''}, {cpu_model()}, "
          f"{a.samples} single-line cases per model")
    print(table(["fim rate", "steps", "val loss", "val bits/byte", "vs rate 0", "line EM (infill)",
                 "line EM (prefix only)", "infill EM / rate-0 prefix EM", "middle bits/byte", "train time"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
