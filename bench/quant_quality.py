"""Quality of the inference weight formats: bits per byte on held-out text for
fp32 / bf16 / int8 weights of a trained checkpoint, and whether greedy output
of fp32 and bf16 (and int8) agrees for the first 32 tokens.

    python bench/quant_quality.py --checkpoint runs/cllm --data HELD_OUT_DIR
    python bench/quant_quality.py                 # trains a model first (minutes)
    python bench/quant_quality.py --quick         # tiny model, small eval: a smoke run

Without --checkpoint a model is trained on the first half of the Python
standard library's top-level modules (sorted by name) and evaluated on files
of the other half, which it never saw. Bits per byte come from
cllm.evaluate (the same C decoder for every dtype; windows of context_len
tokens). Limits: int8 within 1% of fp32, bf16 within 0.2%.
Greedy: for each prompt, 32 tokens at temperature 0 (token healing on); a
divergence is reported with the fp32 margin between the top two logits at
that step (a near-tie explains a flip).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]  # bench/ (lib puts the repository root on sys.path too)

from lib.cli import doc_parser  # noqa: E402

LIMITS = {"fp32": 0.0, "bf16": 0.002, "int8": 0.01}
PROMPTS = ["def ", "import ", "class ", "    return ", "if __name__", "for i in ", "# ", "self."]


def split_stdlib(root: str) -> List[List[str]]:
    from cllm.data.corpus import default_corpus_path
    src = default_corpus_path()
    files = sorted(f for f in os.listdir(src) if f.endswith(".py"))
    half = len(files) // 2
    out = []
    for name, part in (("train", files[:half]), ("heldout", files[half:])):
        d = os.path.join(root, name)
        os.makedirs(d)
        for f in part:
            shutil.copyfile(os.path.join(src, f), os.path.join(d, f))
        out.append(d)
    return out


def first_divergence(a: List[int], b: List[int]) -> Optional[int]:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main(argv: Optional[List[str]] = None) -> int:
    ap = doc_parser(__doc__)
    ap.add_argument("--checkpoint", help="trained full-precision checkpoint")
    ap.add_argument("--data", help="held-out text (file or directory)")
    ap.add_argument("--max-bytes", type=int, default=400_000, help="evaluate at most N bytes")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1500, help="training steps when no --checkpoint")
    ap.add_argument("--quick", action="store_true", help="tiny model and evaluation (smoke run)")
    a = ap.parse_args(argv)
    import numpy as np

    import cllm
    tmp = tempfile.TemporaryDirectory(prefix="cllm-qq-")
    ckpt, data = a.checkpoint, a.data
    if a.quick:
        a.max_bytes = min(a.max_bytes, 30_000)
    if ckpt is None:
        train_dir, heldout = split_stdlib(tmp.name)
        data = data or heldout
        ckpt = os.path.join(tmp.name, "ckpt")
        kw = (dict(max_steps=60, batch_size=8, seq_len=64, vocab_size=1024, embed_dim=64, num_layers=2,
                   num_heads=2, max_bytes=400_000) if a.quick else
              dict(max_steps=a.steps, batch_size=16, seq_len=128, vocab_size=4096, embed_dim=256, num_layers=4,
                   num_heads=4, max_bytes=4_000_000))
        t0 = time.perf_counter()
        cllm.train(train_dir, out_dir=ckpt, threads=a.threads, progress=False, seed=1, **kw)
        print(f"trained {ckpt} in {time.perf_counter() - t0:.0f}s: {kw}")
    if data is None:
        ap.error("--data is required with --checkpoint (held-out text the model was not trained on)")

    models = {dt: cllm.load(ckpt, dtype=dt, threads=a.threads) for dt in ("fp32", "bf16", "int8")}
    print(f"checkpoint {ckpt}: {models['fp32']!r}; held-out data {data} (at most {a.max_bytes:,} bytes)")
    res = {dt: cllm.evaluate(m, data, max_bytes=a.max_bytes) for dt, m in models.items()}
    base = res["fp32"]["bits_per_byte"]
    print(f"\n{'dtype':<6} {'bits/byte':>10} {'loss':>8} {'vs fp32':>9} {'limit':>7}  ok   ({int(res['fp32']['tokens']):,} "
          f"tokens, {int(res['fp32']['bytes']):,} bytes)")
    for dt, r in res.items():
        rel = r["bits_per_byte"] / base - 1.0
        ok = abs(rel) <= LIMITS[dt] if dt != "fp32" else True
        print(f"{dt:<6} {r['bits_per_byte']:>10.5f} {r['loss']:>8.4f} {100 * rel:>+8.3f}% {100 * LIMITS[dt]:>6.1f}%  "
              f"{'yes' if ok else 'NO'}")

    print("\ngreedy, 32 tokens: fp32 vs bf16 / int8 (first differing step; fp32 top-2 logit margin there)")
    fp = models["fp32"]
    for p in PROMPTS:
        ref = list(fp.generate_ids(p, max_new_tokens=32, temperature=0, stop_at_eot=False))
        cells = []
        for dt in ("bf16", "int8"):
            got = list(models[dt].generate_ids(p, max_new_tokens=32, temperature=0, stop_at_eot=False))
            i = first_divergence(ref, got)
            if i is None:
                cells.append(f"{dt}: identical")
            else:
                ctx, _, _ = fp._prompt(p, True)
                seq = (ctx + ref[:i])[-fp.config.context_len:]
                lg = np.sort(fp.logits(seq)[-1])
                cells.append(f"{dt}: differs at {i} (margin {lg[-1] - lg[-2]:.4f})")
        print(f"  {p!r:<16} " + "; ".join(cells))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
