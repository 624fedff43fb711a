"""Kill a training run with SIGKILL at random instants, resume it each time, and
check that it ends bit-identical to an uninterrupted run.

    python bench/kill_resume.py                 # 1,000 steps, --checkpoint-every 10, 20 kills
    python bench/kill_resume.py --steps 200 --kills 5    # a quick version

Both runs use the same tiny model, corpus (a few standard-library files),
seed and thread count. After every kill the run is continued with
``cllm train --resume --out DIR``; the final weights, AdamW moments and step
of the two runs are compared byte for byte. Prints a table; the exit status
is 0 only if they are identical. ``tests/test_faults.py`` runs a short
version of the same procedure.

The kill instants follow the run's own progress, so they land during
training on a fast machine as on a loaded one: the kills go to distinct
random checkpoint intervals spread uniformly over the run; for each, the
controller waits until the running process has published the checkpoint
that opens the interval (``latest``), then sleeps a random fraction of the
interval's duration, measured as seconds per step of the uninterrupted
reference run (``elapsed_s`` of its metrics.jsonl), and sends SIGKILL. The
first interval opens when training starts (metrics.jsonl appears), so a kill
there exercises a restart with nothing saved.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from lib import ROOT  # noqa: E402
from lib.machine import cpu_model  # noqa: E402

import cllm  # noqa: E402
from cllm.model import checkpoint as ck  # noqa: E402
from cllm.training import metrics as mx  # noqa: E402

TINY = ["--batch-size", "2", "--seq-len", "16", "--vocab-size", "257", "--embed-dim", "16", "--num-layers", "1",
        "--num-heads", "2", "--seed", "3", "--warmup-steps", "5", "-q", "--sample-tokens", "0"]
CORPUS_FILES = ("textwrap.py", "bisect.py", "colorsys.py", "heapq.py")


def make_corpus(d: str) -> str:
    """A few standard-library files copied into ``d``."""
    os.makedirs(d, exist_ok=True)
    src = cllm.data.corpus.default_corpus_path()
    for name in CORPUS_FILES:
        shutil.copy(os.path.join(src, name), os.path.join(d, name))
    return d


def train_cmd(corpus: str, out: str, steps: int, every: int, threads: int = 1) -> List[str]:
    """``cllm train`` of the tiny model."""
    return [sys.executable, "-m", "cllm", "train", corpus, "--out", out, "--max-steps", str(steps),
            "--checkpoint-every", str(every), "--threads", str(threads), *TINY]


def resume_cmd(out: str) -> List[str]:
    """``cllm train --resume`` of the run in ``out``."""
    return [sys.executable, "-m", "cllm", "train", "--resume", "--out", out, "-q", "--sample-tokens", "0"]


def saved_step(out: str) -> Optional[int]:
    """Step of the current checkpoint in ``out`` (None if there is none yet)."""
    if not (os.path.lexists(os.path.join(out, ck.LATEST)) or ck.list_checkpoints(out)):
        return None
    return int(ck.verify_checkpoint(ck.resolve_checkpoint(out))["step"])


def seconds_per_step(run_dir: str) -> float:
    """Training wall time per step of a finished run (its metrics.jsonl; saves
    and evaluations included)."""
    rows = [r for r in mx.read_metrics(run_dir) if "loss" in r and r.get("elapsed_s")]
    return float(rows[-1]["elapsed_s"]) / int(rows[-1]["step"]) if rows else 0.0


def progress(out: str) -> int:
    """How far the run in ``out`` has got, cheap enough to poll while it
    writes: -1 before training starts (no metrics.jsonl yet), else the step
    of the checkpoint ``out/latest`` points at (0 when there is none)."""
    if not os.path.exists(os.path.join(out, mx.METRICS_FILE)):
        return -1
    try:
        m = re.match(r"checkpoint-(\d+)", os.path.basename(os.readlink(os.path.join(out, ck.LATEST))))
    except OSError:
        return 0
    return int(m.group(1)) if m else 0


def kill_plan(steps: int, every: int, kills: int, seed: int) -> List[float]:
    """``kills`` kill points in steps, increasing: distinct checkpoint
    intervals chosen uniformly among the run's, a uniform point in each."""
    intervals = steps // every - (1 if steps % every == 0 else 0)  # those that end in a checkpoint
    if not 0 <= kills <= intervals:
        raise ValueError(f"{kills} kills need as many checkpoint intervals; {steps} steps with a checkpoint "
                         f"every {every} have {intervals}")
    rnd = random.Random(seed)
    return [every * (k + rnd.random()) for k in sorted(rnd.sample(range(intervals), kills))]


def kill_and_resume(corpus: str, out: str, steps: int, every: int, kills: int, seed: int,
                    step_s: float, threads: int = 1) -> List[Optional[int]]:
    """Start the run, SIGKILL it at the next point of :func:`kill_plan`,
    continue it with ``--resume`` (or restart it if nothing was saved yet),
    ``kills`` times; then let it finish. ``step_s`` is the seconds per step
    of an uninterrupted run (:func:`seconds_per_step`). Returns the
    checkpoint step found after each kill that landed while the process was
    running. Raises ``RuntimeError`` on a traceback or a failed exit."""
    found: List[Optional[int]] = []
    for i, at in enumerate(kill_plan(steps, every, kills, seed) + [None]):
        step = saved_step(out)
        cmd = train_cmd(corpus, out, steps, every, threads) if step is None else resume_cmd(out)
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        landed = False
        if at is not None:
            opens = every * int(at // every)  # the checkpoint (0: the start) that opens the kill's interval
            target = opens if step is None else max(opens, step + 1)  # reached in this process's life
            while p.poll() is None and progress(out) < target:
                time.sleep(0.002)
            time.sleep((at - opens) * step_s)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                landed = True
        _, err = p.communicate(timeout=3600)
        if "Traceback" in err or p.returncode not in ((0, -signal.SIGKILL) if landed else (0,)):
            raise RuntimeError(f"run {i} exited with {p.returncode}:\n{err}")
        if landed:
            found.append(saved_step(out))
    return found


def identical(a_dir: str, b_dir: str) -> bool:
    """Same step, weights and AdamW moments, byte for byte."""
    a, b = cllm.load(a_dir), cllm.load(b_dir)
    da, db = ck.resolve_checkpoint(a_dir), ck.resolve_checkpoint(b_dir)
    ck.load_optimizer_state(a, da)
    ck.load_optimizer_state(b, db)
    return (ck.read_state(da)["step"] == ck.read_state(db)["step"]
            and all(np.array_equal(x, y) for x, y in ((a.params, b.params), (a.adam_m, b.adam_m),
                                                     (a.adam_v, b.adam_v))))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=10, help="--checkpoint-every")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2026, help="seed of the kill instants")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    a = ap.parse_args(argv)
    try:
        plan = kill_plan(a.steps, a.every, a.kills, a.seed)
    except ValueError as e:
        ap.error(str(e))
    work = tempfile.mkdtemp(prefix="cllm-kill-resume-")
    try:
        corpus = make_corpus(os.path.join(work, "corpus"))
        ref, run = os.path.join(work, "reference"), os.path.join(work, "killed")
        t0 = time.perf_counter()
        subprocess.run(train_cmd(corpus, ref, a.steps, a.every, a.threads), cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_ref = time.perf_counter() - t0
        step_s = seconds_per_step(ref)
        t0 = time.perf_counter()
        found = kill_and_resume(corpus, run, a.steps, a.every, a.kills, a.seed, step_s, a.threads)
        t_run = time.perf_counter() - t0
        same = identical(ref, run)
        rows = [("CPU", cpu_model()),
                ("run", f"{a.steps} steps, --checkpoint-every {a.every}, {a.threads} thread(s), tiny model"),
                ("uninterrupted run", f"{t_ref:.1f} s ({1e3 * step_s:.2f} ms per training step)"),
                ("kills requested / landed during training",
                 f"{a.kills} / {sum(s is None or s < a.steps for s in found)}"),
                ("kill points (step of the run)", ", ".join(f"{x:.1f}" for x in plan)),
                ("checkpoint step after each kill", ", ".join("-" if s is None else str(s) for s in found)),
                ("killed + resumed runs", f"{t_run:.1f} s in total"),
                ("final step, weights, AdamW moments", "IDENTICAL (bit for bit)" if same else "DIFFERENT")]
        w = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{w}}  {v}")
        return 0 if same else 1
    finally:
        if a.keep:
            print(f"run directories kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
