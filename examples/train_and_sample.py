"""Train a small model on a repository and complete some code with it.

    python examples/train_and_sample.py                # this checkout of cllm, ~2 minutes on 2 cores
    python examples/train_and_sample.py ~/src/myrepo -e .py --steps 600 --out runs/myrepo

The corpus is exactly what git would take from the repository (tracked and
untracked-but-not-ignored files) minus lock files, minified, vendored/generated,
binary and duplicate files and cllm's own output; `cllm corpus PATH` shows it.
"""
from __future__ import annotations

import argparse
import os

import cllm
from cllm.training.options import TrainOptions

HERE = os.path.dirname(os.path.abspath(__file__))
#: model and batch shape: the `cllm train` flags of these options, with these defaults
SHAPE = {"vocab_size": 4096, "embed_dim": 256, "num_layers": 4, "seq_len": 128, "batch_size": 16}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", default=os.path.dirname(HERE), help="repository (default: this checkout)")
    ap.add_argument("-e", "--ext", action="append", default=None, help="only these extensions (e.g. -e .py)")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps")
    TrainOptions.add_arguments(ap, only=SHAPE, defaults=SHAPE)
    ap.add_argument("--out", default="runs/example", help="checkpoint directory")
    ap.add_argument("--prompt", default="def ")
    args = ap.parse_args()

    model = cllm.train(args.path, exts=args.ext, max_steps=args.steps, num_heads=4, learning_rate=1e-3,
                       out_dir=args.out, **{k: getattr(args, k) for k in SHAPE})
    s = model.summary
    print(f"{s['corpus_files']} files, {s['corpus_tokens']:,} tokens; {s['steps']} steps at "
          f"{s['tokens_per_sec']:,.0f} tokens/s; val loss {s['val_loss']:.3f} "
          f"({s['val_bpb']:.3f} bits/byte)")

    # the checkpoint directory reloads as-is (and is a Hugging Face GPT-2 model)
    model = cllm.load(args.out)
    for seed in (1, 2):
        text = model.generate(args.prompt, max_new_tokens=64, temperature=0.8, top_k=40, seed=seed)
        print(f"--- sample {seed}\n{args.prompt}{text}")


if __name__ == "__main__":
    main()
