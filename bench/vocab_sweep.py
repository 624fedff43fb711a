"""Choose the default vocabulary size by measurement.

For each vocabulary size (default 2k/4k/8k/16k) train a short model on the
default corpus (the running interpreter's stdlib) with the same budget in
optimizer steps and compare validation bits per byte (``val_bpb``): bits per
byte, unlike per-token loss, is comparable across vocabularies. Prints a
Markdown table for docs/benchmarks.md. Uses the public API::

    model = cllm.train(path, vocab_size=V, max_steps=..., ...)
    model.summary["val_loss"], model.summary["val_bpb"]

Example: ``python bench/vocab_sweep.py --max-steps 300 --sizes 2048,4096,8192,16384``
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]  # bench/ (lib puts the repository root there too)
import lib  # noqa: E402,F401

#: the other `cllm train` options of every run, with their defaults here
SWEPT_WITH = {"max_steps": 300, "batch_size": 16, "seq_len": 128, "embed_dim": 256, "num_layers": 4, "num_heads": 4,
              "learning_rate": 3e-4, "threads": 0, "seed": 1234}


def main(argv=None) -> int:
    import cllm
    from cllm.training.options import TrainOptions

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", default=None, help="corpus (default: the default corpus of `cllm train`)")
    ap.add_argument("--sizes", default="2048,4096,8192,16384",
                    help="comma-separated vocabulary sizes")
    TrainOptions.add_arguments(ap, only=SWEPT_WITH, defaults=SWEPT_WITH)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    rows = []
    for v in sizes:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            model = cllm.train(args.path, vocab_size=v, out_dir=out, **{k: getattr(args, k) for k in SWEPT_WITH})
            dt = time.perf_counter() - t0
        s = model.summary
        rows.append((v, float(s["val_loss"]), float(s["val_bpb"]), dt))
        print(f"vocab {v:6d}: val_loss {s['val_loss']:.4f}  val_bpb {s['val_bpb']:.4f}  ({dt:.0f} s)",
              flush=True)

    best = min(rows, key=lambda r: r[2])
    print()
    print(f"{args.max_steps} steps, batch {args.batch_size} x {args.seq_len}, "
          f"{args.num_layers} layers x {args.embed_dim}, corpus {args.path}")
    print()
    print("| vocab size | val loss (nats/token) | val bits/byte | train time (s) |")
    print("|-----------:|----------------------:|--------------:|---------------:|")
    for v, loss, bpb, dt in rows:
        mark = " **best**" if v == best[0] else ""
        print(f"| {v} | {loss:.4f} | {bpb:.4f}{mark} | {dt:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
