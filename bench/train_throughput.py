"""Training throughput: cllm vs PyTorch eager, side by side in one run.

    python bench/train_throughput.py --threads 1 --configs A,B,C

Tokens/s of a full step (forward, backward, optimizer). PyTorch runs at its
best eager settings: fp32, fused AdamW, scaled_dot_product_attention,
torch.set_num_threads(N). Prints one line per config:
  config=A threads=N cllm_tok_s=... torch_tok_s=... ratio=...
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

CONFIGS = {
    "A": dict(vocab_size=65, num_layers=4, num_heads=4, embed_dim=128, seq_len=64, batch_size=12),
    "B": dict(vocab_size=4096, num_layers=6, num_heads=6, embed_dim=384, seq_len=256, batch_size=8),
    "C": dict(vocab_size=50257, num_layers=12, num_heads=12, embed_dim=768, seq_len=64, batch_size=4),
}


def bench_cllm(cfg: dict, threads: int, steps: int, warmup: int) -> float:
    from cllm.config import ModelConfig
    from cllm.model import Model

    class _Tok:  # the model only needs a length and an eot id here
        eot_id = 0

        def __len__(self) -> int:
            return 1

    mc = ModelConfig(cfg["vocab_size"], cfg["seq_len"], cfg["num_layers"], cfg["num_heads"], cfg["embed_dim"])
    m = Model(mc, _Tok(), batch_size=cfg["batch_size"], seq_len=cfg["seq_len"], threads=threads, seed=1)
    rng = np.random.default_rng(0)
    B, T = cfg["batch_size"], cfg["seq_len"]
    x = rng.integers(0, cfg["vocab_size"], (B, T)).astype(np.int32)
    y = rng.integers(0, cfg["vocab_size"], (B, T)).astype(np.int32)
    for i in range(warmup):
        m.train_step(x, y, i + 1, 1e-4)
    best = float("inf")
    for rep in range(3):
        t0 = time.perf_counter()
        for i in range(steps):
            m.train_step(x, y, warmup + rep * steps + i + 1, 1e-4)
        best = min(best, (time.perf_counter() - t0) / steps)
    return B * T / best


def bench_torch(cfg: dict, threads: int, steps: int, warmup: int) -> float:
    import torch
    from torch_ref import TorchGPT2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = TorchGPT2(cfg["vocab_size"], cfg["seq_len"], cfg["num_layers"], cfg["num_heads"], cfg["embed_dim"])
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    try:
        opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-4, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-4, foreach=True)
    B, T = cfg["batch_size"], cfg["seq_len"]
    x = torch.randint(0, cfg["vocab_size"], (B, T))
    y = torch.randint(0, cfg["vocab_size"], (B, T))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        _, loss = model(x, y, attn="sdpa")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(warmup):
        step()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - t0) / steps)
    return B * T / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", default="A,B,C")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per repetition (0: per-config default)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-torch", action="store_true")
    a = ap.parse_args()
    default_steps = {"A": 20, "B": 3, "C": 2}
    try:
        import torch  # noqa: F401
        have_torch = not a.no_torch
    except ImportError:
        have_torch = False
    for name in a.configs.split(","):
        name = name.strip().upper()
        cfg = CONFIGS[name]
        steps = a.steps or default_steps[name]
        c = bench_cllm(cfg, a.threads, steps, a.warmup)
        line = f"config={name} threads={a.threads} cllm_tok_s={c:,.0f}"
        if have_torch:
            t = bench_torch(cfg, a.threads, steps, a.warmup)
            line += f" torch_tok_s={t:,.0f} ratio={c / t:.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
