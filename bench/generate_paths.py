"""Greedy decoding speed of a trainable Model against an InferenceModel (one decoder).

    python bench/generate_paths.py                         # config-B size at 1 and 2 threads
    python bench/generate_paths.py --threads 1 --reps 9 --tokens 200 --prompt-tokens 16
    python bench/generate_paths.py --models tiny --threads 1 --reps 1 --tokens 4   # a smoke run

Every side generates through the same C decoder (``cllm_decoder``) and
weight layout: a :class:`cllm.Model`'s copies the training weights into the
decoder's own arena on first use (released when training resumes) and runs
on the model's threads; an :class:`cllm.InferenceModel`'s is filled from the
checkpoint file. This bench says whether generating from a trainable model
costs decode speed; the target is Model / InferenceModel >= 0.95x at every
thread count.

Models (random GPT-2-init weights, saved once to a temporary checkpoint with
``Model.save``; nothing is trained but the one step of ``model-trained``):
  B     config-B size: vocab 4096, 6 layers, 6 heads, embed 384, context 1024
  TINY  vocab 512, 2 layers, 2 heads, embed 64, context 128 (smoke runs)
Sides (each in its own worker process; reps interleaved, best of --reps reported):
  model-load     cllm.load(dir): a trainable Model, as a user loads a checkpoint
  model-trained  cllm.Model.create(config) with the checkpoint's seed (the same
                 weights), then one train_step on a random (1, 64) batch: the model a
                 training run samples from
  inference      cllm.load(dir, dtype="fp32"): an InferenceModel
Each generation is ``generate_ids(prompt, max_new_tokens=N, temperature=0,
stop_at_eot=False)`` from the same --prompt-tokens random token ids, so every
side decodes exactly N tokens; tok/s = N / wall time of the whole call (the
prompt's prefill included). The peak shown is the FP32 FMA peak of the
kernel ISA, measured in this run (decoding is bound by memory reads, not by
it: it is there to compare machines).
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]  # bench/ (lib puts the repository root on sys.path too)
from lib.cli import GridArgs  # noqa: E402
from lib.machine import FP32_PEAK, measure_machine  # noqa: E402
from lib.tables import num, ratio, table  # noqa: E402
from lib.timing import interleave  # noqa: E402
from lib.workers import Worker, entry  # noqa: E402

MODELS: Dict[str, Dict[str, int]] = {
    "B": dict(vocab_size=4096, num_layers=6, num_heads=6, embed_dim=384, context_len=1024),
    "TINY": dict(vocab_size=512, num_layers=2, num_heads=2, embed_dim=64, context_len=128),
}
SIDES = ["model-load", "model-trained", "inference"]
#: the Model sides, each compared with the InferenceModel
MODEL_SIDES = ("model-load", "model-trained")
TARGET = 0.95
SEED = 1
#: rows x tokens of the one training step of ``model-trained``
TRAIN_BATCH = (1, 64)
#: prompt ids are drawn from the byte tokens every byte-level BPE spells
PROMPT_VOCAB = 256


def model_config(m: Dict[str, int]) -> Any:
    """The :class:`cllm.ModelConfig` of a MODELS entry."""
    import cllm
    return cllm.ModelConfig(vocab_size=m["vocab_size"], context_len=m["context_len"], num_layers=m["num_layers"],
                            num_heads=m["num_heads"], embed_dim=m["embed_dim"])


def make_checkpoint(path: str, m: Dict[str, int]) -> None:
    """A random-weight checkpoint (GPT-2 init from SEED) of model size ``m``."""
    import cllm
    seq = min(TRAIN_BATCH[1], m["context_len"])  # the training arena is not used: keep it small
    cllm.Model.create(model_config(m), threads=1, seed=SEED, seq_len=seq).save(path)


def prompt_ids(n: int, seed: int = 0) -> List[int]:
    """``n`` random byte-token ids (the same prompt for every side)."""
    import numpy as np
    return [int(i) for i in np.random.default_rng(seed).integers(0, PROMPT_VOCAB, n)]


# ------------------------------------------------------------------ workers

class GenerateSide:
    """One way to hold the model, generating greedily from a fixed prompt."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        import numpy as np

        import cllm
        side, threads = spec["side"], int(spec["threads"])
        if side == "model-load":
            self.m: Any = cllm.load(spec["ckpt"], threads=threads)
        elif side == "model-trained":
            m = spec["model"]
            rows, cols = TRAIN_BATCH[0], min(TRAIN_BATCH[1], m["context_len"])
            self.m = cllm.Model.create(model_config(m), threads=threads, seed=SEED, batch_size=rows, seq_len=cols)
            rng = np.random.default_rng(SEED)
            x = rng.integers(0, m["vocab_size"], (rows, cols)).astype(np.int32)
            y = rng.integers(0, m["vocab_size"], (rows, cols)).astype(np.int32)
            self.m.train_step(x, y, 1, 1e-4)
        elif side == "inference":
            self.m = cllm.load(spec["ckpt"], dtype="fp32", threads=threads)
        else:
            raise ValueError(f"unknown side {side!r}")
        self.prompt: List[int] = list(spec["prompt"])
        self.tokens = int(spec["tokens"])
        ids = self._generate()  # warm-up: weight copies, KV cache, thread pool
        self.info = {"class": type(self.m).__name__, "threads": self.m.threads, "isa": cllm.get_isa(),
                     "ids": ids}

    def _generate(self) -> List[int]:
        """One greedy generation of exactly ``tokens`` ids."""
        ids = list(self.m.generate_ids(self.prompt, max_new_tokens=self.tokens, temperature=0.0,
                                       stop_at_eot=False))
        if len(ids) != self.tokens:
            raise RuntimeError(f"generated {len(ids)} of {self.tokens} tokens")
        return ids

    def run(self, n: int, mode: str = "") -> Dict[str, float]:
        """Wall seconds of ``n`` generations (the worker protocol's reply)."""
        total = 0.0
        for _ in range(n):
            t0 = time.perf_counter()
            self._generate()
            total += time.perf_counter() - t0
        return {"seconds": total}


def build(spec: Dict[str, Any]) -> GenerateSide:
    """The worker's side (see :func:`lib.workers.serve`)."""
    return GenerateSide(spec)


# --------------------------------------------------------------- controller

def run_grid(mname: str, ckpt: str, threads: List[int], sides: List[str], tokens: int, prompt: List[int],
             reps: int) -> Tuple[Dict[Tuple[int, str], Dict[str, Any]], List[str]]:
    """Time every side at every thread count (sides interleaved per thread
    count). Returns ``{(threads, side): row}`` and notes (greedy agreement)."""
    script = os.path.abspath(__file__)
    results: Dict[Tuple[int, str], Dict[str, Any]] = {}
    notes: List[str] = []
    for th in threads:
        procs = {s: Worker(s, script, dict(side=s, ckpt=ckpt, model=MODELS[mname], threads=th, tokens=tokens,
                                           prompt=prompt)) for s in sides}
        try:
            live = [(s, w, "") for s, w in procs.items() if w.ok]
            times = interleave(live, {s: 1 for s, _, _ in live}, reps)
        finally:
            for w in procs.values():
                w.close()
        for s, w in procs.items():
            row: Dict[str, Any] = {"tok_s": None, "median": None, "note": ""}
            if times.get(s):
                row["tok_s"] = tokens / min(times[s])
                row["median"] = tokens / statistics.median(times[s])
                row["note"] = f"{w.info.get('class')}, {w.info.get('threads')} thread(s)"
            else:
                row["note"] = w.error or "failed"
            results[(th, s)] = row
            cell = f"{row['tok_s']:,.0f} tok/s" if row["tok_s"] else row["note"]
            print(f"  model {mname}, {th} thread(s), {s}: {cell}", file=sys.stderr, flush=True)
        ref = procs.get("inference")
        load = procs.get("model-load")
        if ref is not None and load is not None and "ids" in ref.info and "ids" in load.info:
            same = ref.info["ids"] == load.info["ids"]
            notes.append(f"model {mname}, {th} thread(s): greedy ids of model-load "
                         f"{'==' if same else '!='} inference ({tokens} tokens)")
    return results, notes


def main(argv: Optional[List[str]] = None) -> int:
    g = GridArgs(__doc__, "models", list(MODELS), "B", SIDES)
    ap = g.ap
    for flag, default, what in (("--tokens", 200, "new tokens per generation"),
                                ("--prompt-tokens", 16, "token ids in the prompt"),
                                ("--reps", 5, "generations per side (best reported)")):
        ap.add_argument(flag, type=int, default=default, help=what)
    ap.add_argument("--peak-seconds", type=float, default=0.3, help="seconds per peak measurement")
    a, models, threads, sides = g.parse(argv, positive=("reps", "tokens", "prompt_tokens"))
    too_long = [m for m in models if a.prompt_tokens + a.tokens > MODELS[m]["context_len"]]
    if too_long:
        ap.error(f"--prompt-tokens + --tokens = {a.prompt_tokens + a.tokens} exceeds the context length of "
                 + ", ".join(f"model {m} ({MODELS[m]['context_len']})" for m in too_long))

    import cllm
    t_start = time.perf_counter()
    isa = cllm.get_isa()
    kind = FP32_PEAK.get(isa)
    machine = measure_machine(threads, kinds=[kind] if kind else [], seconds=a.peak_seconds)
    prompt = prompt_ids(a.prompt_tokens)
    results: Dict[Tuple[str, int, str], Dict[str, Any]] = {}
    notes: List[str] = []
    with tempfile.TemporaryDirectory(prefix="cllm-generate-paths-") as tmp:
        for mname in models:
            ckpt = os.path.join(tmp, f"ckpt-{mname}")
            make_checkpoint(ckpt, MODELS[mname])
            res, nt = run_grid(mname, ckpt, threads, sides, a.tokens, prompt, a.reps)
            results.update({(mname, th, s): r for (th, s), r in res.items()})
            notes += nt

    print("# Greedy decoding: Model vs InferenceModel on the one decoder (sides interleaved)\n")
    print("\n".join(machine.header_lines()))
    print(f"cllm {cllm.__version__}, ISA {isa}; {a.tokens} new tokens per generation from a "
          f"{a.prompt_tokens}-token prompt; best of {a.reps} generations per side\n")
    def side_row(mname: str, th: int, s: str) -> List[Any]:
        r, ref = results[(mname, th, s)], results.get((mname, th, "inference"), {}).get("tok_s")
        return [mname, th, s, num(r["tok_s"]), num(r["median"]), ratio(r["tok_s"], ref), r["note"]]

    rows = [side_row(mname, th, s) for mname in models for th in threads for s in sides]
    print(table(["model", "threads", "side", "tok/s (best)", "tok/s (median)", "vs inference", "note"], rows,
                [False, True, False, True, True, True, False]))
    pairs = [s for s in MODEL_SIDES if s in sides and "inference" in sides]
    if pairs:
        print(f"\n## Model / InferenceModel (target >= {TARGET:.2f}x)\n")
        rows = []
        for mname in models:
            for th in threads:
                pk = machine.peak(kind, th) if kind else None
                ref = results[(mname, th, "inference")]["tok_s"]
                cells = []
                for s in pairs:
                    x = results[(mname, th, s)]["tok_s"]
                    met = "n/a" if not x or not ref else ("met" if x / ref >= TARGET else "NOT met")
                    cells.append(f"{ratio(x, ref)} ({met})")
                rows.append([mname, th, f"{num(pk, 1)} ({kind})" if pk else "n/a", *cells])
        print(table(["model", "threads", "FMA peak GFLOP/s"] + [f"{s} / inference" for s in pairs], rows,
                    [False, True, True] + [True] * len(pairs)))
    if notes:
        print("\n" + "\n".join(f"- {n}" for n in notes))
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(entry(main, build))
