"""Programs the MPI tests launch under ``mpirun -n K`` (and once without it).

    python tests/mpi_worker.py steps OUT.npz [--threads N] [--deterministic]
        20 data-parallel steps of a tiny model on a fixed random global batch
        stream; rank 0 writes losses, grad norms and final weights to OUT.npz.
        The model comes from World.model_options: deterministic under MPI,
        and in one process when --deterministic is given.
    python tests/mpi_worker.py raise
        rank 1 raises at step 3 inside World.fail_fast(); the job must end
        non-zero with its message instead of hanging.
    python tests/mpi_worker.py train OUT_DIR --kwargs JSON [--usr1-at STEP]
        cllm.train(**kwargs, out_dir=OUT_DIR); with --usr1-at, the last rank
        sends itself SIGUSR1 during that step (as ``kill -USR1 <mpirun>``
        would): every rank must stop after it and rank 0 save.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cllm.training import distributed  # noqa: E402
from cllm.config import ModelConfig  # noqa: E402
from cllm.model.gpt import Model  # noqa: E402

GLOBAL_BATCH, SEQ, STEPS = 4, 16, 20
CFG = ModelConfig(vocab_size=257, context_len=SEQ, num_layers=2, num_heads=2, embed_dim=32)


def steps(out: str, threads: int, fail_rank: int = -1, deterministic: bool = False) -> None:
    """Train STEPS steps; rank ``fail_rank`` raises at step 3."""
    world = distributed.init("auto")
    with world.fail_fast():
        rows = GLOBAL_BATCH // world.size
        model = Model.create(CFG, batch_size=rows, seq_len=SEQ, seed=3, **world.model_options(threads, deterministic))
        assert model.deterministic == (deterministic or world.distributed)
        rng = np.random.default_rng(0)
        losses, norms = [], []
        for step in range(1, STEPS + 1):
            x = rng.integers(0, CFG.vocab_size, (GLOBAL_BATCH, SEQ))
            y = rng.integers(0, CFG.vocab_size, (GLOBAL_BATCH, SEQ))
            y[0, :3] = -1  # ignored targets: the global token count must be used
            if step == 3 and world.rank == fail_rank:
                raise RuntimeError(f"injected failure on rank {world.rank} at step {step}")
            loss, gnorm = distributed.data_parallel_step(model, world, x, y, step, 1e-3)
            losses.append(loss)
            norms.append(gnorm)
        synced = world.in_sync(model.params)
        if world.is_root:
            np.savez(out, losses=np.array(losses), norms=np.array(norms), params=model.params,
                     synced=synced, ranks=world.size)


def train(out: str, kwargs: dict, usr1_at: int) -> int:
    """``cllm.train`` on every rank; the last rank signals itself at step ``usr1_at``."""
    import cllm
    world = distributed.init("auto")
    if usr1_at > 0 and world.rank == world.size - 1:
        real = distributed.data_parallel_step

        def step_then_signal(model, w, x, y, step, lr, **kw):
            out = real(model, w, x, y, step, lr, **kw)
            if step == usr1_at:
                signal.raise_signal(signal.SIGUSR1 if w.distributed else signal.SIGINT)
            return out
        distributed.data_parallel_step = step_then_signal
    try:
        cllm.train(out_dir=out, **kwargs)
    except distributed.AgreedStop:
        return 130
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["steps", "raise", "train"])
    ap.add_argument("out", nargs="?", default=os.devnull)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--deterministic", action="store_true", help="per-shard products (always on under MPI)")
    ap.add_argument("--kwargs", default="{}", help="cllm.train keywords (JSON)")
    ap.add_argument("--usr1-at", type=int, default=0)
    a = ap.parse_args()
    if a.mode == "train":
        return train(a.out, json.loads(a.kwargs), a.usr1_at)
    steps(a.out, a.threads, fail_rank=1 if a.mode == "raise" else -1, deterministic=a.deterministic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
