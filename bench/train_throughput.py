"""Training throughput: cllm vs a PyTorch reference of the same model, side by side in one run.

    python bench/train_throughput.py                       # configs A,B,C at 1 and 2 threads
    python bench/train_throughput.py --configs B --threads 1,2 --reps 5
    python bench/train_throughput.py --sides cllm-fp32,torch-fp32 --configs A
    python bench/train_throughput.py --configs D,E --sides cllm-fp32,cllm-bf16,torch-fp32,torch-bf16
    python bench/train_throughput.py --configs S --threads 1,2 --sides cllm-fp32,torch-fp32,torch-bf16
    python bench/train_throughput.py --configs s --reps 1 --warmup 0   # smoke run of the StarCoder path

Configs (V vocabulary, L layers, NH heads, C width, T sequence length, B batch):
  A  GPT-2   V 65, L 4, NH 4, C 128, T 64, B 12 (character-level toy)
  B  GPT-2   V 4096, L 6, NH 6, C 384, T 256, B 8
  C  GPT-2   V 50257, L 12, NH 12, C 768, T 64, B 4 (GPT-2 small, short rows)
  D  GPT-2   V 50257, L 12, NH 12, C 768, T 1024, B 1 (GPT-2 small, full context)
  E  GPT-2   V 4096, L 6, NH 6, C 384, T 1024, B 2
  S  gpt_bigcode, the shape of bigcode/tiny_starcoder_py (its config.json: V 49152,
     L 20, NH 12, C 768, n_positions 8192, n_inner 3072, gelu_pytorch_tanh,
     multi-query attention: one K/V head; 164.1M parameters) fine-tuned at
     T 1024, B 1
  s  gpt_bigcode, small (V 4096, L 4, NH 4, C 256, multi-query, context 512,
     T 256, B 2): the smoke test of S's code paths
Config names are case-sensitive where two differ only in case (s, S).

Configs D, E and S train at full fine-tuning length with fewer sequences than
a many-core machine has cores (how a code model is fine-tuned within memory),
so cllm's spheres split sequences by token rows.

Sides (each in its own worker process; every measured rep of every side is
interleaved with the others, best of --reps is reported):
  cllm-fp32     cllm's FP32 step (best ISA of this CPU)
  cllm-bf16     cllm with precision="bf16" (n/a on a CPU without AMX-BF16 or AVX512-BF16)
  cllm-avx2     cllm FP32 with CLLM_ISA=avx2
  torch-fp32    GPT-2 configs: PyTorch GPT-2 as nanoGPT writes it (bench/_torch_gpt.py):
                nn.Linear, SDPA(is_causal=True), tied head.
                gpt_bigcode configs: transformers' own GPTBigCodeForCausalLM
                (bench/_torch_bigcode.py): random init, dropout 0, no KV cache,
                attn_implementation="sdpa", tied head, loss = cross-entropy of
                its logits against the same next-token targets cllm gets.
                Both: AdamW fused=True (else foreach)
  torch-bf16    the same model and optimizer, forward under
                torch.autocast("cpu", dtype=torch.bfloat16), backward outside it
  torch-avx2    torch-fp32 restricted to AVX2: ATEN_CPU_CAPABILITY=avx2,
                MKL_ENABLE_INSTRUCTIONS=AVX2, ONEDNN_MAX_CPU_ISA=AVX2
A step is the full training step: forward, backward, global-norm clip (1.0),
AdamW; same shapes and random token ids on every side; torch.set_num_threads(N).
Every side runs in its own process; the tables report each process's peak RSS
(ru_maxrss: weights, gradients, optimizer state, activations, the runtime).

Model FLOPs per token (the nanoGPT / PaLM convention): 6*N + 12*L*C*T, where
N = parameters excluding the position embedding (all n_positions rows of it,
whatever T is; the tied token embedding counts once, as the LM head matmul)
and the attention term counts the full T x T score and value products (no
causal halving). With KVD = n_kv_heads * C / NH K/V columns (multi-query: one
head, KVD = C / NH) c_attn is C x (C + 2*KVD) plus its bias; the attention
term is unchanged (every query head still scores all T keys). MFU = tok/s x FLOPs/token /
peak measured in this run on the same thread count: FP32 sides against the FMA
peak of their ISA (zmm for the best path, ymm for the AVX2 sides), BF16 sides
against the BF16 peak (AMX tdpbf16ps when the OS grants tiles, else vdpbf16ps).
"""
from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]
from lib.cli import GridArgs  # noqa: E402
from lib.machine import (AVX2_ENV_TORCH, FP32_PEAK, Machine, measure_machine, mfu,  # noqa: E402
                         remeasure_peaks, torch_description)
from lib.tables import num, pct, ratio, table  # noqa: E402
from lib.timing import interleave  # noqa: E402
from lib.workers import SideUnavailable, Worker, entry  # noqa: E402

#: model shapes; optional keys: context_len (position-embedding rows, default
#: seq_len), model_type ("gpt2" default, or "gpt_bigcode"), n_kv_heads
#: (default num_heads; 1 is multi-query)
CONFIGS: Dict[str, Dict[str, Any]] = {
    "A": dict(vocab_size=65, num_layers=4, num_heads=4, embed_dim=128, seq_len=64, batch_size=12),
    "B": dict(vocab_size=4096, num_layers=6, num_heads=6, embed_dim=384, seq_len=256, batch_size=8),
    "C": dict(vocab_size=50257, num_layers=12, num_heads=12, embed_dim=768, seq_len=64, batch_size=4),
    "D": dict(vocab_size=50257, num_layers=12, num_heads=12, embed_dim=768, seq_len=1024, batch_size=1),
    "E": dict(vocab_size=4096, num_layers=6, num_heads=6, embed_dim=384, seq_len=1024, batch_size=2),
    "S": dict(vocab_size=49152, num_layers=20, num_heads=12, embed_dim=768, seq_len=1024, batch_size=1,
              context_len=8192, model_type="gpt_bigcode", n_kv_heads=1),
    "s": dict(vocab_size=4096, num_layers=4, num_heads=4, embed_dim=256, seq_len=256, batch_size=2,
              context_len=512, model_type="gpt_bigcode", n_kv_heads=1),
}
#: timed steps per rep (each rep of each side lasts roughly 0.2 - 10 s)
STEPS = {"A": 20, "B": 3, "C": 2, "D": 1, "E": 1, "S": 1, "s": 3}
SIDES = ["cllm-fp32", "cllm-bf16", "cllm-avx2", "torch-fp32", "torch-bf16", "torch-avx2"]


def flops_per_token(cfg: Dict[str, Any]) -> float:
    """6*N + 12*L*C*T with N = all parameters but the position embedding;
    c_attn maps C to C + 2*KVD (KVD = n_kv_heads * C / num_heads: 2*C with
    one K/V head per query head, as in GPT-2)."""
    V, L, C, T = cfg["vocab_size"], cfg["num_layers"], cfg["embed_dim"], cfg["seq_len"]
    kvd = cfg.get("n_kv_heads", cfg["num_heads"]) * (C // cfg["num_heads"])
    qkv = C + 2 * kvd
    per_layer = 4 * C + (C * qkv + qkv) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C)
    n = V * C + L * per_layer + 2 * C
    return 6.0 * n + 12.0 * L * C * T


def model_type(cfg: Dict[str, Any]) -> str:
    """The config's Hugging Face model_type ("gpt2" unless it says otherwise)."""
    return str(cfg.get("model_type", "gpt2"))


# ------------------------------------------------------------------ workers

def _maxrss_mb() -> float:
    """This process's peak resident set so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _IdsOnly:
    """Stands in for a tokenizer: the step only sees token ids."""

    eot_id = 0

    def __len__(self) -> int:
        return 1


class CllmSide:
    """cllm's own training step on random ids (one process, one model)."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        import numpy as np

        import cllm
        from cllm import Model, ModelConfig

        cfg = spec["config"]
        mc = ModelConfig(cfg["vocab_size"], cfg.get("context_len", cfg["seq_len"]), cfg["num_layers"],
                         cfg["num_heads"], cfg["embed_dim"], model_type=model_type(cfg),
                         n_kv_heads=cfg.get("n_kv_heads"))
        try:
            self.m = Model(mc, _IdsOnly(), batch_size=cfg["batch_size"], seq_len=cfg["seq_len"],
                           threads=spec["threads"], seed=1, precision=spec["precision"])
        except cllm.UnsupportedError as e:
            raise SideUnavailable(f"n/a ({e})")
        except cllm.ConfigError as e:
            if mc.trainable:  # a GPT-2 shape cllm refuses is a bug of the config table
                raise
            raise SideUnavailable(f"n/a ({e})")  # cllm does not train this architecture (yet)
        rng = np.random.default_rng(0)
        B, T = cfg["batch_size"], cfg["seq_len"]
        self.x = rng.integers(0, cfg["vocab_size"], (B, T)).astype(np.int32)
        self.y = rng.integers(0, cfg["vocab_size"], (B, T)).astype(np.int32)
        self.t = 0
        self.info = {"isa": cllm.get_isa(), "params": self.m.num_params, "threads": self.m.threads,
                     "precision": self.m.precision}
        self.run(spec["warmup"])

    def run(self, n: int, mode: str = "") -> Dict[str, float]:
        t0 = time.perf_counter()
        for _ in range(n):
            self.t += 1
            self.m.train_step(self.x, self.y, self.t, 1e-4)
        return {"seconds": time.perf_counter() - t0, "maxrss_mb": _maxrss_mb()}


def torch_model(cfg: Dict[str, Any]) -> Tuple[Any, str]:
    """(the PyTorch reference of ``cfg``: a module with ``forward(idx,
    targets) -> loss``, which one it is). GPT-2 configs get the nanoGPT-style
    GPT of bench/_torch_gpt.py, gpt_bigcode configs transformers'
    GPTBigCodeForCausalLM (bench/_torch_bigcode.py). SideUnavailable when
    torch or transformers is missing or cannot express the shape."""
    try:
        import torch
    except ImportError as e:
        raise SideUnavailable(f"n/a (torch not installed: {e})")
    torch.manual_seed(0)
    if model_type(cfg) == "gpt_bigcode":
        import _torch_bigcode
        try:
            return _torch_bigcode.build(cfg)
        except ImportError as e:
            raise SideUnavailable(f"n/a (transformers not installed: {e})")
        except ValueError as e:
            raise SideUnavailable(f"n/a ({e})")
    from _torch_gpt import GPT
    gpt = GPT(cfg["vocab_size"], cfg.get("context_len", cfg["seq_len"]), cfg["num_layers"], cfg["num_heads"],
              cfg["embed_dim"])
    return gpt, "nanoGPT-style GPT (bench/_torch_gpt.py, SDPA)"


class TorchSide:
    """The PyTorch reference step (see :func:`torch_model`); mode "fp32" or "bf16" (autocast)."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        cfg = spec["config"]
        self.model, reference = torch_model(cfg)
        import torch

        from _torch_gpt import make_optimizer

        torch.set_num_threads(spec["threads"])
        self.torch = torch
        self.opt, impl = make_optimizer(self.model)
        self.step_fn = torch.compile(self.model) if spec.get("compile") else self.model
        B, T = cfg["batch_size"], cfg["seq_len"]
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, cfg["vocab_size"], (B, T), generator=g)
        self.y = torch.randint(0, cfg["vocab_size"], (B, T), generator=g)
        self.info = {"adamw": impl, "capability": torch.backends.cpu.get_cpu_capability(), "reference": reference,
                     "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "compiled": bool(spec.get("compile"))}
        for mode in spec["modes"]:
            self.run(spec["warmup"], mode)

    def _step(self, bf16: bool) -> None:
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        if bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = self.step_fn(self.x, self.y)
        else:
            loss = self.step_fn(self.x, self.y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()

    def run(self, n: int, mode: str = "fp32") -> Dict[str, float]:
        t0 = time.perf_counter()
        for _ in range(n):
            self._step(mode == "bf16")
        return {"seconds": time.perf_counter() - t0, "maxrss_mb": _maxrss_mb()}


def build(spec: Dict[str, Any]) -> Any:
    return CllmSide(spec) if spec["kind"] == "cllm" else TorchSide(spec)


# --------------------------------------------------------------- controller

def start_workers(cfg: Dict[str, Any], threads: int, sides: List[str], warmup: int,
                  compile_torch: bool) -> Dict[str, Any]:
    """One process per side (so each one's peak RSS is its own): cllm-fp32,
    cllm-bf16, cllm-avx2, torch-fp32, torch-bf16, torch-avx2. All start (and
    warm up) at once."""
    script = os.path.abspath(__file__)
    base = dict(config=cfg, threads=threads, warmup=warmup)
    procs: Dict[str, Worker] = {}
    pending: Dict[str, Any] = {}   # side -> (worker, mode)
    for side, prec, env in (("cllm-fp32", "fp32", {}), ("cllm-bf16", "bf16", {}),
                            ("cllm-avx2", "fp32", {"CLLM_ISA": "avx2"})):
        if side in sides:
            procs[side] = Worker(side, script, dict(base, kind="cllm", precision=prec), env)
            pending[side] = (procs[side], "")
    for m in ("fp32", "bf16"):
        side = f"torch-{m}"
        if side in sides:
            procs[side] = Worker(side, script, dict(base, kind="torch", modes=[m], compile=compile_torch))
            pending[side] = (procs[side], m)
    if "torch-avx2" in sides:
        procs["torch-avx2"] = Worker("torch-avx2", script,
                                        dict(base, kind="torch", modes=["fp32"], compile=compile_torch),
                                        AVX2_ENV_TORCH)
        pending["torch-avx2"] = (procs["torch-avx2"], "fp32")
    # side -> (worker, mode), or the reason it cannot run
    cols = {s: (wm if wm[0].ok else wm[0].error) for s, wm in pending.items()}
    return {"procs": procs, "cols": cols}


def peak_kind(side: str, machine: Machine, best_isa: str) -> Optional[str]:
    if side.endswith("bf16"):
        return machine.bf16_kind()
    if side.endswith("avx2"):
        return "fma_avx2"
    return FP32_PEAK.get(best_isa)


def main(argv: Optional[List[str]] = None) -> int:
    g = GridArgs(__doc__, "configs", list(CONFIGS), "A,B,C", SIDES)
    ap = g.ap
    ap.add_argument("--reps", type=int, default=3, help="measured reps per side (best is reported)")
    ap.add_argument("--steps", type=int, default=0,
                    help="steps per rep (0: " + ", ".join(f"{k}={v}" for k, v in STEPS.items()) + ")")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    ap.add_argument("--peak-seconds", type=float, default=0.5, help="seconds per peak measurement")
    ap.add_argument("--torch-compile", action="store_true",
                    help="also torch.compile the PyTorch model (slow start; off: eager)")
    a, configs, threads, sides = g.parse(argv, positive=("reps",), non_negative=("warmup", "steps"))

    import cllm
    t_start = time.perf_counter()
    machine = measure_machine(threads, seconds=a.peak_seconds)
    best_isa = cllm.get_isa()

    results: Dict[tuple, Dict[str, Any]] = {}   # (config, threads, side) -> row
    notes: Dict[str, str] = {}
    references: Dict[str, str] = {}   # config -> the torch side's model, as its worker built it
    for name in configs:
        cfg = CONFIGS[name]
        steps = a.steps or STEPS[name]
        fpt = flops_per_token(cfg)
        tokens = cfg["batch_size"] * cfg["seq_len"]
        for th in threads:
            ws = start_workers(cfg, th, sides, a.warmup, a.torch_compile)
            try:
                live = [(s, c[0], c[1]) for s, c in ws["cols"].items() if not isinstance(c, str)]
                times = interleave(live, {s: steps for s, _, _ in live}, a.reps)
                rss = {s: (w.run(0, mode) or {}).get("maxrss_mb") for s, w, mode in live}
                for s in sides:
                    c = ws["cols"].get(s)
                    row: Dict[str, Any] = {"tok_s": None, "ms": None, "median_tok_s": None, "mfu": None,
                                           "peak": None, "note": "", "rss": None}
                    if isinstance(c, str) or c is None:
                        row["note"] = c or "not run"
                    elif not times.get(s):
                        row["note"] = f"failed: {c[0].error}"
                    else:
                        best = min(times[s])
                        row["tok_s"] = tokens / best
                        row["median_tok_s"] = tokens / statistics.median(times[s])
                        row["ms"] = best * 1e3
                        row["rss"] = rss.get(s)
                        kind = peak_kind(s, machine, best_isa)
                        pk = machine.peak(kind, th) if kind else None
                        row["peak"] = kind
                        row["mfu"] = mfu(row["tok_s"], fpt, pk)
                        info = c[0].info
                        if "reference" in info:
                            references[name] = info["reference"]
                        if "adamw" in info:
                            notes["torch AdamW"] = info["adamw"] + (", torch.compile" if info.get("compiled") else ", eager")
                            notes[f"{s} ATen capability"] = info["capability"]
                        if "isa" in info:
                            notes[f"{s} ISA"] = f"{info['isa']} ({info['precision']})"
                    results[(name, th, s)] = row
                    cell = f"{row['tok_s']:,.0f} tok/s" if row["tok_s"] else row["note"]
                    print(f"  config {name}, {th} thread(s), {s}: {cell}", file=sys.stderr, flush=True)
            finally:
                for w in ws["procs"].values():
                    w.close()

    remeasure_peaks(machine, a.peak_seconds)
    for (name, th, s), row in results.items():  # MFU against the final (higher) peak
        if row["tok_s"] and row["peak"]:
            row["mfu"] = mfu(row["tok_s"], flops_per_token(CONFIGS[name]), machine.peak(row["peak"], th))

    # ------------------------------------------------------------ tables
    print("# Training throughput: cllm vs a PyTorch reference (one run, sides interleaved)\n")
    print("\n".join(machine.header_lines()))
    if any(s.startswith("torch") for s in sides):
        print(torch_description())
        for name in configs:
            print(f"torch side, config {name} ({model_type(CONFIGS[name])}): "
                  f"{references.get(name, 'not run')}")
    print(f"cllm {cllm.__version__}, best ISA here: {best_isa}; reps {a.reps} (best reported), "
          f"warm-up {a.warmup} steps\n")
    print("## Throughput and MFU\n")
    print("FLOPs/token = 6*N + 12*L*C*T (N: parameters without the position embedding; c_attn "
          "C x (C + 2*KVD), KVD = K/V heads x C/NH); MFU against the peak of the kind shown, "
          "same thread count.\n")
    rows = []
    for name in configs:
        fpt = flops_per_token(CONFIGS[name])
        for th in threads:
            for s in sides:
                r = results[(name, th, s)]
                rows.append([name, th, s, num(r["tok_s"]), num(r["median_tok_s"]), num(r["ms"], 1),
                             f"{fpt / 1e6:,.1f}", pct(r["mfu"]), r["peak"] or "-", num(r["rss"]), r["note"]])
    print(table(["config", "threads", "side", "tok/s (best)", "tok/s (median)", "ms/step",
                    "MFLOP/token", "MFU", "peak kind", "peak RSS MiB", "note"], rows,
                   [False, True, False, True, True, True, True, True, False, True, False]))
    print("\n## Ratios (same run)\n")
    pairs = [("cllm-fp32", "torch-fp32"), ("cllm-bf16", "torch-bf16"), ("cllm-avx2", "torch-avx2"),
             ("cllm-bf16", "cllm-fp32"), ("torch-bf16", "torch-fp32")]
    pairs = [p for p in pairs if p[0] in sides and p[1] in sides]
    rows = []
    for name in configs:
        for th in threads:
            rows.append([name, th] + [ratio(results[(name, th, x)]["tok_s"], results[(name, th, y)]["tok_s"])
                                      for x, y in pairs])
    print(table(["config", "threads"] + [f"{x} / {y}" for x, y in pairs], rows))
    if len(threads) > 1:
        t1, tn = threads[0], threads[-1]
        print(f"\n## Thread scaling ({tn} threads / {t1} thread{'s' if t1 > 1 else ''}, same run)\n")
        rows = [[name] + [ratio(results[(name, tn, s)]["tok_s"], results[(name, t1, s)]["tok_s"])
                          for s in sides] for name in configs]
        print(table(["config"] + sides, rows))
    if notes:
        print("\n" + "\n".join(f"- {k}: {v}" for k, v in sorted(notes.items())))
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(entry(main, build))
