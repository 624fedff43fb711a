"""BF16 vs FP32 training quality: the default model on the default corpus.

Run from the project root (takes ~2 x the default run's time per 500 steps)::

    python bench/bf16_quality.py                 # 500 steps each, all CPUs
    python bench/bf16_quality.py --steps 40      # quick check

Trains the default model (``cllm train`` defaults: the standard-library
corpus, 4 layers, 4 heads, embed 256, seq 128, batch 16) for ``--steps``
steps twice from the same seed, data order and tokenizer: once with
``precision="fp32"`` and once with ``precision="bf16"``, then prints a
table with each run's final train loss, validation loss (the same
``--eval-batches`` held-out batches), tokens/s and the relative val-loss
difference ``|bf16 - fp32| / fp32``. The acceptance bar for making bf16 the
``auto`` default is a relative difference below 1%.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]  # bench/ (lib puts the repository root there too)
from lib.machine import cpu_model  # noqa: E402
import cllm  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path", nargs="?", default=None, help="corpus (default: the default run's corpus)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--eval-batches", type=int, default=32)
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    info = cllm.cpu_info()
    if not (info["avx512_bf16"] or info["amx_bf16"]):
        print("this CPU has neither AVX512-BF16 nor AMX-BF16: nothing to compare")
        return 0
    common = dict(max_steps=args.steps, epochs=1000, threads=args.threads, seed=args.seed,
                  eval_batches=args.eval_batches, progress=sys.stderr.isatty())
    rows = []
    tok = None
    for prec in ("fp32", "bf16"):
        m = cllm.train(args.path, precision=prec, tokenizer=tok, **common)
        tok = m.tokenizer  # the second run reuses the same tokenizer (same ids, same batches)
        rows.append((prec, m.summary))
    print(f"cpu: {cpu_model()}  amx_bf16={info['amx_bf16']} avx512_bf16={info['avx512_bf16']}  "
          f"threads={rows[0][1]['threads']}  steps={args.steps}")
    print(f"{'precision':9s} {'train_loss':>10s} {'val_loss':>9s} {'val_bpb':>8s} {'tok/s':>8s}")
    for prec, s in rows:
        print(f"{prec:9s} {s['train_loss']:10.4f} {s['val_loss']:9.4f} {s.get('val_bpb', float('nan')):8.4f} "
              f"{s['tokens_per_sec']:8.0f}")
    v32, v16 = rows[0][1]["val_loss"], rows[1][1]["val_loss"]
    rel = abs(v16 - v32) / v32
    print(f"val loss relative difference |bf16 - fp32| / fp32 = {100 * rel:.3f}% "
          f"({'within' if rel < 0.01 else 'OUTSIDE'} the 1% bar)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
