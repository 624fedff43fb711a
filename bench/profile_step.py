"""Where a training step's time goes: a per-op profile of one shard.

    python bench/profile_step.py --config B --threads 1 --steps 5 [--precision bf16] [--deterministic]

Uses the C core's built-in profiler (sphere 0's wall time per op family, plus
the gradient-reduce and AdamW phases) and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lib.machine import FP32_PEAK, measure_machine, mfu  # noqa: E402
from lib.tables import pct  # noqa: E402
from train_throughput import CONFIGS, _IdsOnly, flops_per_token  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="B", choices=sorted(CONFIGS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"),
                    help="training precision (bf16: matmuls on the BF16 GEMM)")
    ap.add_argument("--deterministic", action="store_true",
                    help="every product per shard (no batch-wide GEMMs): the A/B against the default split")
    a = ap.parse_args()
    import cllm
    from cllm import Model, ModelConfig

    cfg = CONFIGS[a.config]
    mc = ModelConfig(cfg["vocab_size"], cfg["seq_len"], cfg["num_layers"], cfg["num_heads"], cfg["embed_dim"])
    B, T = cfg["batch_size"], cfg["seq_len"]
    m = Model(mc, _IdsOnly(), batch_size=B, seq_len=T, threads=a.threads, seed=1, precision=a.precision,
              deterministic=a.deterministic)
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg["vocab_size"], (B, T)).astype(np.int32)
    y = rng.integers(0, cfg["vocab_size"], (B, T)).astype(np.int32)
    m.train_step(x, y, 1, 1e-4)  # warm-up
    m.profile(True)
    t0 = time.perf_counter()
    for i in range(a.steps):
        m.train_step(x, y, i + 2, 1e-4)
    wall = (time.perf_counter() - t0) / a.steps
    prof = m.profile()
    m.profile(False)
    total = sum(v["seconds"] for v in prof.values()) / a.steps
    machine = measure_machine([a.threads])
    print("\n".join(machine.header_lines()))
    kind = machine.bf16_kind() if m.precision == "bf16" else FP32_PEAK.get(cllm.get_isa())
    peak = machine.peak(kind, a.threads) if kind else None
    util = f", MFU {pct(mfu(B * T / wall, flops_per_token(cfg), peak))} of {kind}" if peak else ""
    print(f"\nconfig {a.config}, {a.threads} thread(s), isa {cllm.get_isa()}, precision {m.precision}: "
          f"{wall * 1e3:.1f} ms/step, {B * T / wall:,.0f} tokens/s{util}\n")
    print("| op | ms/step | share of step |")
    print("|---|---:|---:|")
    for name, v in sorted(prof.items(), key=lambda kv: -kv[1]["seconds"]):
        ms = v["seconds"] / a.steps * 1e3
        print(f"| {name} | {ms:.2f} | {100 * ms / (wall * 1e3):.1f}% |")
    print(f"| (other: python, batching, waits) | {(wall - total) * 1e3:.2f} | {100 * (wall - total) / wall:.1f}% |")


if __name__ == "__main__":
    main()
