"""Train two short runs with different learning rates and plot their loss curves.

    pip install "cllm[plot]"                 # matplotlib
    python examples/plot_runs.py ~/src/myrepo --steps 300 -o lr.png

Every run writes OUT/metrics.jsonl (one JSON object per step or evaluation)
and, with matplotlib installed, OUT/loss.png. The same from the command line:

    cllm plot runs/a runs/b -o lr.png
"""
from __future__ import annotations

import argparse
import os

import cllm
from cllm.training.options import TrainOptions
from cllm.training.plot import plot_runs

HERE = os.path.dirname(os.path.abspath(__file__))
#: model and batch shape: the `cllm train` flags of these options, with these defaults
SHAPE = {"vocab_size": 4096, "embed_dim": 256, "num_layers": 4, "seq_len": 128, "batch_size": 16}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", default=os.path.dirname(HERE), help="repository (default: this checkout)")
    ap.add_argument("--rates", default="3e-4,1e-3")
    ap.add_argument("--steps", type=int, default=300)
    TrainOptions.add_arguments(ap, only=SHAPE, defaults=SHAPE)
    ap.add_argument("--runs", default="runs/plot-example", help="parent directory of the runs")
    ap.add_argument("-o", "--output", default="loss.png")
    args = ap.parse_args()

    dirs = []
    tok = None
    for lr in (float(r) for r in args.rates.split(",")):
        out = os.path.join(args.runs, f"lr{lr:g}")
        model = cllm.train(args.path, learning_rate=lr, max_steps=args.steps, eval_interval=max(1, args.steps // 5),
                           tokenizer=tok, out_dir=out, **{k: getattr(args, k) for k in SHAPE})
        tok = model.tokenizer  # same tokenizer for both runs: only the rate differs
        print(f"lr {lr:g}: val loss {model.summary['val_loss']:.3f}")
        dirs.append(out)
    print("wrote", plot_runs(dirs, args.output, labels=[os.path.basename(d) for d in dirs]))


if __name__ == "__main__":
    main()
