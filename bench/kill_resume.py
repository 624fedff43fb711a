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
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import cllm  # noqa: E402
from cllm import checkpoint as ck  # noqa: E402

TINY = ["--batch-size", "2", "--seq-len", "16", "--vocab-size", "257", "--embed-dim", "16", "--num-layers", "1",
        "--num-heads", "2", "--seed", "3", "--warmup-steps", "5", "-q", "--sample-tokens", "0"]
CORPUS_FILES = ("textwrap.py", "bisect.py", "colorsys.py", "heapq.py")


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo when available)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_corpus(d: str) -> str:
    """A few standard-library files copied into ``d``."""
    os.makedirs(d, exist_ok=True)
    src = cllm.corpus.default_corpus_path()
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


def kill_and_resume(corpus: str, out: str, steps: int, every: int, kills: int, seed: int,
                    t_run: float = 3.0, threads: int = 1) -> List[Optional[int]]:
    """Start the run, SIGKILL it at a random instant, continue it with
    ``--resume`` (or restart it if nothing was saved yet), ``kills`` times;
    then let it finish. ``t_run`` (seconds an uninterrupted run takes) spreads
    the instants so each life gets about 1/(kills left + 1) of the remaining
    steps done. Returns the checkpoint step found after each kill that landed.
    Raises ``RuntimeError`` on a traceback or a failed exit."""
    rnd = random.Random(seed)
    found: List[Optional[int]] = []
    for i in range(kills + 1):
        step = saved_step(out)
        left = (steps - (step or 0)) / steps
        delays = (0.2, 0.6 + 2.0 * t_run * left / (kills - i + 1))
        cmd = train_cmd(corpus, out, steps, every, threads) if step is None else resume_cmd(out)
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        landed = False
        if i < kills:
            time.sleep(rnd.uniform(*delays))
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
    work = tempfile.mkdtemp(prefix="cllm-kill-resume-")
    try:
        corpus = make_corpus(os.path.join(work, "corpus"))
        ref, run = os.path.join(work, "reference"), os.path.join(work, "killed")
        t0 = time.perf_counter()
        subprocess.run(train_cmd(corpus, ref, a.steps, a.every, a.threads), cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        found = kill_and_resume(corpus, run, a.steps, a.every, a.kills, a.seed, t_ref, a.threads)
        t_run = time.perf_counter() - t0
        same = identical(ref, run)
        rows = [("CPU", cpu_model()),
                ("run", f"{a.steps} steps, --checkpoint-every {a.every}, {a.threads} thread(s), tiny model"),
                ("uninterrupted run", f"{t_ref:.1f} s"),
                ("kills requested / landed", f"{a.kills} / {len(found)}"),
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
