"""Paper model of data-parallel training over MPI: step time and efficiency
at 8, 64 and 512 nodes on 25 and 100 Gb/s links, for configs B and C.

    python bench/scaling_model.py                       # measures the 1-node step here
    python bench/scaling_model.py --step-seconds B=0.40,C=0.58 --threads 2

Model (weak scaling: every node keeps its per-node batch, the global batch
grows with the node count K):

    bytes   = 4 x parameters (the FP32 gradient buffer, exact count from the model)
    T_comm  = 2 (K-1)/K x bytes / link  +  buckets x 2 (K-1) x latency
              (ring allreduce of each gradient bucket in turn, as the trainer does)
    T_step  = T_compute + T_comm                                  (no overlap)
    eff     = T_compute / T_step
    overlap = T_compute / (T_fwd + max(T_bwd, T_comm))             (bucketed allreduce
              started as the backward pass produces gradients; T_bwd = bwd_fraction x T_compute)
    accum   = micro-batches per step (gradient accumulation) that bring eff >= target
              without overlap: A x T_compute / (A x T_compute + T_comm) >= target

T_compute is the measured single-node step time (``--step-seconds`` overrides it);
``bwd_fraction`` defaults to the backward share of ``bench/profile_step.py``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]
from lib.machine import cpu_model  # noqa: E402
from lib.timing import timed  # noqa: E402
from cllm.training.distributed import BUCKET_FLOATS  # noqa: E402

NODES = (8, 64, 512)
LINKS_GBPS = (25.0, 100.0)


def ring_seconds(nbytes: float, nodes: int, gbps: float, latency: float, buckets: int = 1) -> float:
    """Ring allreduce time of ``nbytes`` over ``nodes`` at ``gbps`` Gb/s per
    link, sent as ``buckets`` allreduces one after the other."""
    if nodes < 2:
        return 0.0
    return 2 * (nodes - 1) / nodes * nbytes / (gbps * 1e9 / 8) + buckets * 2 * (nodes - 1) * latency


def accumulation_needed(t_compute: float, t_comm: float, target: float) -> int:
    """Smallest A with A*Tc / (A*Tc + Tcomm) >= target."""
    if t_comm <= 0:
        return 1
    return max(1, math.ceil(target / (1 - target) * t_comm / t_compute))


def measure_step(name: str, threads: int, reps: int = 3) -> float:
    """Seconds of one full training step (fwd+bwd+AdamW) of config ``name``
    on this node (best of ``reps`` after one warm-up step)."""
    import numpy as np

    from allreduce import config_model
    from train_throughput import CONFIGS
    c = CONFIGS[name]
    m = config_model(name, batch_size=c["batch_size"], threads=threads)
    rng = np.random.default_rng(0)
    x = rng.integers(0, c["vocab_size"], (c["batch_size"], c["seq_len"])).astype(np.int32)
    m.train_step(x, x, 1, 1e-4)
    return min(timed(lambda i=i: m.train_step(x, x, i + 2, 1e-4)) for i in range(reps))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--step-seconds", default="", help="per-config single-node step time, e.g. B=0.40,C=0.58 "
                                                        "(default: measure here)")
    ap.add_argument("--threads", type=int, default=0, help="threads for the measurement (0 = all CPUs)")
    ap.add_argument("--latency-us", type=float, default=20.0, help="per-message latency of one ring hop (µs)")
    ap.add_argument("--bucket-mb", type=float, default=BUCKET_FLOATS * 4 / 2**20,
                    help="allreduce bucket size (MiB; default: the trainer's)")
    ap.add_argument("--bwd-fraction", type=float, default=0.66, help="share of a step spent in backward")
    ap.add_argument("--target", type=float, default=0.9, help="efficiency target for the accumulation column")
    a = ap.parse_args()
    from allreduce import grad_floats
    params = grad_floats()
    given = dict(kv.split("=") for kv in a.step_seconds.split(",") if kv)
    import cllm
    threads = a.threads or cllm.cpu_info()["cpus"]
    print(f"cpu: {cpu_model()}; step times {'given' if given else f'measured at {threads} thread(s)'}; "
          f"latency {a.latency_us:g} µs/hop; buckets of {a.bucket_mb:g} MiB; "
          f"backward {a.bwd_fraction:.0%} of a step")
    from train_throughput import CONFIGS
    for name, p in params.items():
        tc = float(given[name]) if name in given else measure_step(name, threads)
        c = CONFIGS[name]
        nb = max(1, math.ceil(4 * p / (a.bucket_mb * 2**20)))
        print(f"\nconfig {name}: {p:,} params -> {4 * p:,} bytes allreduced per step ({nb} bucket(s)); "
              f"per-node batch {c['batch_size']}x{c['seq_len']}; T_compute {tc:.3f} s")
        print(f"{'nodes':>5} {'link':>8} {'T_comm s':>9} {'T_step s':>9} {'eff':>6} {'overlap eff':>12} "
              f"{'accum for ' + format(a.target, '.0%'):>14}")
        for gbps in LINKS_GBPS:
            for k in NODES:
                tcomm = ring_seconds(4 * p, k, gbps, a.latency_us * 1e-6, nb)
                step = tc + tcomm
                tb = a.bwd_fraction * tc
                ov = tc / (tc - tb + max(tb, tcomm))
                acc = accumulation_needed(tc, tcomm, a.target)
                print(f"{k:>5} {gbps:>5g}Gb/s {tcomm:>9.3f} {step:>9.3f} {tc / step:>6.1%} {ov:>12.1%} {acc:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
