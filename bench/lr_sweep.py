"""Choose the default learning rate by measurement.

For each peak learning rate train the default model on the default corpus
(the running interpreter's standard library, as ``cllm train`` with no PATH)
for the same number of optimizer steps (default: one epoch, i.e. exactly the
default run) with the default warm-up and cosine schedule, and compare
held-out bits per byte (``val_bpb``; the split is whole documents chosen by
a hash of their path). The first run trains the tokenizer as ``cllm train``
does; the others reuse it, so only the learning rate differs. Prints a
Markdown table for docs/benchmarks.md.

    python bench/lr_sweep.py                          # 4 rates x one epoch (~8 min on 2 cores)
    python bench/lr_sweep.py --max-steps 100          # quicker, noisier
    python bench/lr_sweep.py --rates 3e-4,1e-3 --path src/ -e .py
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]  # bench/ (lib puts the repository root on sys.path too)
from lib.machine import cpu_flags, cpu_model  # noqa: E402
from lib.tables import table  # noqa: E402


def sweep(rates: List[float], path: Optional[str], exts: Optional[List[str]], max_steps: Optional[int],
          threads: int, seed: int, eval_batches: int, precision: str,
          progress: bool) -> List[Tuple[float, dict, float]]:
    """Train once per rate; returns (rate, model.summary, wall seconds) per rate."""
    import cllm
    rows = []
    tok = None
    for lr in rates:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            model = cllm.train(path, exts=exts, learning_rate=lr, max_steps=max_steps, threads=threads,
                               seed=seed, eval_interval=0, eval_batches=eval_batches, precision=precision,
                               tokenizer=tok, out_dir=out, progress=progress)
            dt = time.perf_counter() - t0
        tok = model.tokenizer
        s = model.summary
        rows.append((lr, s, dt))
        print(f"lr {lr:.0e}: train loss {s['train_loss']:.4f}  val loss {s['val_loss']:.4f}  "
              f"val bits/byte {s['val_bpb']:.4f}  ({dt:.0f} s)", flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="3e-4,6e-4,1e-3,2e-3", help="comma-separated peak learning rates")
    ap.add_argument("--path", default=None, help="corpus (default: the default corpus of `cllm train`)")
    ap.add_argument("-e", "--ext", action="append", default=None, help="extensions, as cllm train -e")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="optimizer steps per rate (default: one epoch, as the default run)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--eval-batches", type=int, default=32, help="validation batches per measurement")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="matmul precision, as cllm train --precision (default auto: bf16 where the CPU has it)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        ap.error(f"--rates: not a comma-separated list of numbers: {args.rates!r}")
    if not rates:
        ap.error("--rates is empty")
    import cllm
    from cllm.precision import resolve_precision
    t0 = time.perf_counter()
    rows = sweep(rates, args.path, args.ext, args.max_steps, args.threads, args.seed, args.eval_batches,
                 args.precision, not args.quiet)
    best = min(rows, key=lambda r: r[1]["val_bpb"])
    s0 = rows[0][1]
    cmd = "python bench/lr_sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print()
    print(f"CPU: {cpu_model()} ({', '.join(cpu_flags())}), {s0['threads']} thread(s), kernels "
          f"{cllm.get_isa()}, precision {resolve_precision(args.precision)}; command: `{cmd.strip()}`")
    print(f"corpus: {args.path or 'default (stdlib .py, first 4 MB)'}: {s0['corpus_files']} files, "
          f"{s0['corpus_tokens']:,} tokens, vocab {s0['vocab_size']}; {s0['steps']} steps per rate; "
          f"total {time.perf_counter() - t0:.0f} s")
    print()
    print(table(["peak learning rate", "train loss", "val loss (nats/token)", "val bits/byte", "vs best",
                    "time (s)"],
                   [[f"{lr:g}", f"{s['train_loss']:.4f}", f"{s['val_loss']:.4f}",
                     f"{s['val_bpb']:.4f}" + (" **best**" if lr == best[0] else ""),
                     f"{s['val_bpb'] / best[1]['val_bpb'] - 1:+.1%}", f"{dt:.0f}"] for lr, s, dt in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
