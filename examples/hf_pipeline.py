"""Open a cllm checkpoint with Hugging Face transformers and generate with its pipeline.

    pip install transformers torch       # not cllm dependencies; only this example needs them
    python examples/hf_pipeline.py runs/cllm --prompt "def main(" --max-new-tokens 48

A cllm checkpoint directory is a GPT-2 model for transformers: config.json,
model.safetensors, tokenizer.json, tokenizer_config.json and
special_tokens_map.json (<|endoftext|> is eos and pad) and
generation_config.json (sampling defaults). No conversion step.
"""
from __future__ import annotations

import argparse

from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

import cllm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a directory written by `cllm train` or Model.save")
    ap.add_argument("--prompt", default="def ")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint)
    print(f"{type(model).__name__} with {model.num_parameters():,} parameters; "
          f"eos={tok.eos_token!r} pad={tok.pad_token!r}")

    # greedy decoding gives the same tokens in transformers and in cllm
    generate = pipeline("text-generation", model=model, tokenizer=tok)
    out = generate(args.prompt, max_new_tokens=args.max_new_tokens, do_sample=False)[0]["generated_text"]
    ours = args.prompt + cllm.load(args.checkpoint).generate(args.prompt, max_new_tokens=args.max_new_tokens,
                                                             temperature=0)
    print(f"--- transformers (greedy)\n{out}\n--- cllm (greedy)\n{ours}")
    print("same text" if out == ours[:len(out)] or ours == out[:len(ours)] else "texts differ")

    # sampling with the checkpoint's generation_config.json defaults
    sample = generate(args.prompt, max_new_tokens=args.max_new_tokens)[0]["generated_text"]
    print(f"--- transformers (sampled)\n{sample}")


if __name__ == "__main__":
    main()
