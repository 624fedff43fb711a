"""Allreduce bandwidth between MPI ranks on this machine (default: 2 local ranks).

    python bench/allreduce.py                 # launches itself with mpirun -n 2
    mpirun -n 2 python bench/allreduce.py     # or under your own launcher

Times ``World.allreduce_`` (the in-place, bucketed FP32 sum cllm's trainer
uses on ``model.grads``) on buffers from 1 MiB up to the gradient sizes of
configs B and C, best of ``--reps``. Prints one row per size:

    algbw  = bytes / time                  (what a step waits for)
    busbw  = 2 (K-1)/K x bytes / time      (the ring-allreduce link rate,
                                            comparable across rank counts)

and the machine's CPU model. Needs the ``cllm[mpi]`` extra.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]
from lib.machine import cpu_model  # noqa: E402


def config_model(name: str, batch_size: int = 1, threads: int = 1) -> "object":
    """A cllm Model of bench config ``name`` (see ``train_throughput.CONFIGS``)."""
    from cllm import Model, ModelConfig
    from train_throughput import CONFIGS, _IdsOnly
    c = CONFIGS[name]
    mc = ModelConfig(c["vocab_size"], c["seq_len"], c["num_layers"], c["num_heads"], c["embed_dim"])
    return Model(mc, _IdsOnly(), batch_size=batch_size, seq_len=c["seq_len"], threads=threads, seed=1)


def grad_floats() -> dict:
    """Exact parameter counts (= gradient floats) of configs B and C, read
    from the C core's tensor table (the models are built at batch 1)."""
    return {name: int(config_model(name).num_params) for name in ("B", "C")}


def run(reps: int, bucket_mb: float, max_mb: float) -> None:
    from cllm.training import distributed

    world = distributed.init("mpi")
    if world.size < 2:
        raise SystemExit("bench/allreduce.py needs at least 2 ranks")
    sizes = [(f"{mb} MiB", int(mb * (1 << 20)) // 4) for mb in (1, 4, 16, 64, 256) if mb <= max_mb]
    counts = grad_floats() if world.is_root else None
    counts = world.bcast(counts)
    sizes += [(f"config {k} grads", v) for k, v in counts.items() if v * 4 <= max_mb * (1 << 20)]
    bucket = max(1, int(bucket_mb * (1 << 20)) // 4)
    K = world.size
    if world.is_root:
        print(f"cpu: {cpu_model()}; {os.cpu_count()} cpus; ranks {K} "
              f"(local {world.local_size}); bucket {bucket_mb:g} MiB; best of {reps}")
        print(f"{'buffer':<18} {'bytes':>13} {'time ms':>9} {'algbw GB/s':>11} {'busbw GB/s':>11}")
    for label, n in sizes:
        buf = np.ones(n, dtype=np.float32)
        world.allreduce_(buf, bucket)  # warm-up (page faults, connections)
        best = float("inf")
        for _ in range(reps):
            world.barrier()
            t0 = time.perf_counter()
            world.allreduce_(buf, bucket)
            dt = world.sum([time.perf_counter() - t0])[0] / K  # mean over ranks
            best = min(best, dt)
        if not np.all(buf == np.float32(K ** (reps + 1))) and world.is_root:
            print(f"warning: wrong sum in {label}")
        nbytes = n * 4
        if world.is_root:
            alg = nbytes / best / 1e9
            print(f"{label:<18} {nbytes:>13,} {best * 1e3:>9.2f} {alg:>11.2f} {alg * 2 * (K - 1) / K:>11.2f}")
        del buf


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--ranks", type=int, default=2, help="ranks when launching itself (default 2)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--bucket-mb", type=float, default=64.0, help="allreduce bucket size (MiB)")
    ap.add_argument("--max-mb", type=float, default=600.0, help="skip buffers larger than this")
    a = ap.parse_args()
    from cllm.training.distributed import launcher_env, mpirun_command
    if launcher_env() is None:
        cmd = mpirun_command(a.ranks) + [sys.executable, os.path.abspath(__file__), "--reps", str(a.reps),
                                         "--bucket-mb", str(a.bucket_mb), "--max-mb", str(a.max_mb)]
        return subprocess.call(cmd)
    run(a.reps, a.bucket_mb, a.max_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
