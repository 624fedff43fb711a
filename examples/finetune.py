"""Fine-tune a trained checkpoint on another directory of code.

    python examples/finetune.py runs/cllm ~/src/myproject --steps 200 --out runs/myproject-ft

Starts from the checkpoint's weights and tokenizer (a cllm checkpoint, any
GPT-2 directory `cllm.load` opens, or a hub id such as codeparrot/codeparrot-small
with the hub extra) with a fresh optimizer and learning-rate schedule, trains on
the new code, and compares held-out loss on the new code before and after (a run
with init_from evaluates at step 0 too). Learning rate, warm-up and sequence
length default to the fine-tuning ones (docs/finetune.md). The same from the
command line:

    cllm train ~/src/myproject --init-from runs/cllm --max-steps 200 --out runs/ft
"""
from __future__ import annotations

import argparse

import cllm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="the model to start from")
    ap.add_argument("path", help="directory of code to fine-tune on")
    ap.add_argument("-e", "--ext", action="append", default=None)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--learning-rate", type=float, default=None, help="default: the fine-tuning one (1e-4)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=None,
                    help="default: the checkpoint's context length, at most 1024")
    ap.add_argument("--out", default="runs/finetuned")
    args = ap.parse_args()

    model = cllm.train(args.path, init_from=args.checkpoint, exts=args.ext, max_steps=args.steps,
                       learning_rate=args.learning_rate, batch_size=args.batch_size, seq_len=args.seq_len,
                       out_dir=args.out)
    s = model.summary  # a run started with init_from also evaluates before its first step
    print(f"held-out loss on {args.path}: {s['init_val_loss']:.3f} before, {s['val_loss']:.3f} after "
          f"{s['steps']} steps ({s['init_val_bpb']:.3f} -> {s['val_bpb']:.3f} bits/byte)")
    print("--- sample\n" + "def " + model.generate("def ", max_new_tokens=64, temperature=0.8, top_k=40, seed=1))


if __name__ == "__main__":
    main()
