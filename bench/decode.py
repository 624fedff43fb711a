"""Decoding throughput: batch 1, greedy, N new tokens; cllm vs llama2.c vs Hugging Face.

    python bench/decode.py --llama2c /path/to/llama2.c/run          # model B, 1 and 2 threads
    python bench/decode.py --models B,S --threads 1 --reps 3 --tokens 200

llama2.c is not part of this repository: fetch karpathy/llama2.c somewhere
outside it and build its run.c exactly as

    gcc -Ofast -march=native -fopenmp run.c -lm -o run

then pass the binary with --llama2c (without it that column is skipped).

Models (random weights; nothing is trained):
  B  config-B size: vocab 4096, 6 layers, 6 heads, embed 384, context 256
  S  GPT-2 small size: vocab 50257, 12 layers, 12 heads, embed 768, context 256
Sides (each in its own process; reps interleaved, best reported):
  cllm-fp32 / cllm-bf16 / cllm-int8   cllm.load(dir, dtype=...) (an InferenceModel) + generate_ids,
                                      greedy
  llama2c    run.c on the same dim / layers / heads / vocab / seq_len, random weights in
             its legacy .bin format and a tokenizer.bin written by this script. llama2.c is
             a Llama, not a GPT-2: RMSNorm, RoPE, and a SwiGLU MLP of three matrices; with
             --llama-hidden 0 (default) hidden_dim = 4*dim, so each layer holds 16*dim^2
             weights against GPT-2's 12*dim^2 (use --llama-hidden to change it).
             Threads: OMP_NUM_THREADS. Speed: its own "achieved tok/s" (timer starts after
             the first token, so N tokens are timed over N forwards).
  hf         transformers GPT2LMHeadModel.from_pretrained(the same cllm checkpoint),
             generate(do_sample=False, min_new_tokens=N), torch.set_num_threads(T)
cllm and hf are timed around the whole call: the prompt (1 token) + N new tokens.

Bandwidth limit: a decoded token reads every weight matrix once (GPT-2: 12*L*C^2 +
the V*C LM head; llama2.c: 4*L*C^2 + 3*L*C*H + V*C) at the side's bytes per weight
(fp32 4, bf16 2, int8 1 + a 4-byte scale per output row), plus the KV cache
(2*L*C*4 bytes per cached position, mean N/2 positions). limit tok/s = read bandwidth
/ bytes per token, with the bandwidth MEASURED in this run over a buffer as large as
that side's weights, on the same thread count (so it is L3 bandwidth when the weights
fit the L3 and DRAM bandwidth when not; the table says which).
"""
from __future__ import annotations

import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]
from lib.cli import GridArgs  # noqa: E402
from lib.machine import cache_sizes, measure_machine  # noqa: E402
from lib.tables import num, pct, ratio, table  # noqa: E402
from lib.timing import interleave  # noqa: E402
from lib.workers import SideUnavailable, Worker, entry  # noqa: E402

MODELS: Dict[str, Dict[str, int]] = {
    "B": dict(vocab_size=4096, num_layers=6, num_heads=6, embed_dim=384, context_len=256),
    "S": dict(vocab_size=50257, num_layers=12, num_heads=12, embed_dim=768, context_len=256),
}
SIDES = ["cllm-fp32", "cllm-bf16", "cllm-int8", "llama2c", "hf"]
LLAMA2C_BUILD = "gcc -Ofast -march=native -fopenmp run.c -lm -o run"
PROMPT_ID = 1


# ------------------------------------------------------------- byte counts

def gpt2_weight_bytes(m: Dict[str, int], dtype: str) -> float:
    """Bytes of the matrices one decoded token multiplies (blocks + LM head)."""
    L, C, V = m["num_layers"], m["embed_dim"], m["vocab_size"]
    rows = L * (3 * C + C + 4 * C + C) + V          # output rows of all matrices
    n = L * 12 * C * C + V * C
    return {"fp32": 4.0 * n, "bf16": 2.0 * n, "int8": 1.0 * n + 4.0 * rows}[dtype]


def llama_weight_bytes(m: Dict[str, int], hidden: int) -> float:
    L, C, V = m["num_layers"], m["embed_dim"], m["vocab_size"]
    return 4.0 * (L * (4 * C * C + 3 * C * hidden) + V * C)


def kv_bytes(m: Dict[str, int], tokens: int) -> float:
    """Mean KV-cache bytes read per token over a generation of `tokens` (fp32)."""
    return 2.0 * m["num_layers"] * m["embed_dim"] * 4 * (tokens / 2.0)


# ------------------------------------------------------------ llama2.c files

def write_llama2c(path: str, m: Dict[str, int], hidden: int, seed: int = 0) -> None:
    """Random N(0, 0.02) weights in llama2.c's legacy .bin layout (shared classifier).
    Token 1 (BOS, which stops run.c) gets a zero embedding row, so its logit is 0
    and greedy decoding never picks it over the other (random) logits."""
    C, L, H, V, P = m["embed_dim"], m["num_layers"], m["num_heads"], m["vocab_size"], m["context_len"]
    rng = np.random.default_rng(seed)
    hs = C // H

    def rnd(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))

    with open(path, "wb") as f:
        f.write(struct.pack("7i", C, hidden, L, H, H, V, P))
        emb = rnd(V, C)
        emb[1] = 0.0
        for a in (emb, np.ones((L, C), np.float32), rnd(L, C, C), rnd(L, C, C), rnd(L, C, C), rnd(L, C, C),
                  np.ones((L, C), np.float32), rnd(L, hidden, C), rnd(L, C, hidden), rnd(L, hidden, C),
                  np.ones(C, np.float32), np.zeros(P * hs // 2, np.float32), np.zeros(P * hs // 2, np.float32)):
            f.write(np.ascontiguousarray(a, dtype=np.float32).tobytes())


def write_llama2c_tokenizer(path: str, vocab: int) -> None:
    """tokenizer.bin: max_token_length, then (score, len, bytes) per token; piece i = "<i>"."""
    pieces = [f"<{i}>".encode() for i in range(vocab)]
    with open(path, "wb") as f:
        f.write(struct.pack("i", max(len(p) for p in pieces)))
        for p in pieces:
            f.write(struct.pack("fi", 0.0, len(p)) + p)


class Llama2cSide:
    """Runs the run.c binary once per rep (same interface as a Worker)."""

    def __init__(self, binary: str, model: str, tok: str, threads: int, tokens: int) -> None:
        self.info: Dict[str, Any] = {}
        self.error: Optional[str] = None
        self.argv = [binary, model, "-z", tok, "-n", str(tokens + 1), "-t", "0", "-s", "1"]
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        self.tokens = tokens
        if self.run(1) is None:  # warm-up (and a check that it works)
            return

    @property
    def ok(self) -> bool:
        return self.error is None

    def run(self, n: int, mode: str = "") -> Optional[Dict[str, float]]:
        total = 0.0
        for _ in range(n):
            p = subprocess.run(self.argv, env=self.env, capture_output=True, text=True, timeout=600)
            mt = re.search(r"achieved tok/s:\s*([0-9.]+)", p.stderr)
            got = p.stdout.count("<")
            if p.returncode != 0 or not mt:
                self.error = f"run.c failed (exit {p.returncode}): {p.stderr.strip()[-200:]}"
                return None
            if got < self.tokens:
                self.error = f"run.c stopped after {got} of {self.tokens} tokens"
                return None
            total += self.tokens / float(mt.group(1))
        return {"seconds": total}

    def close(self) -> None:
        pass


# ------------------------------------------------------------------ workers

class CllmSide:
    """cllm.load(dir, dtype=...) and greedy generate_ids from a one-token prompt."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        import cllm
        dtype = spec["dtype"]
        try:
            self.m = cllm.load(spec["ckpt"], dtype=dtype, threads=spec["threads"])
        except cllm.UnsupportedError as e:
            raise SideUnavailable(f"n/a ({e})")
        self.tokens = spec["tokens"]
        self.info = {"isa": cllm.get_isa(), "threads": self.m.threads, "dtype": dtype}
        self.run(1)

    def run(self, n: int, mode: str = "") -> Dict[str, float]:
        total = 0.0
        for _ in range(n):
            t0 = time.perf_counter()
            got = sum(1 for _ in self.m.generate_ids([PROMPT_ID], max_new_tokens=self.tokens, temperature=0.0,
                                                     stop_at_eot=False))
            total += time.perf_counter() - t0
            if got != self.tokens:
                raise RuntimeError(f"generated {got} of {self.tokens} tokens")
        return {"seconds": total}


class HfSide:
    """transformers' GPT2LMHeadModel.generate, greedy, on the same checkpoint."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        try:
            import torch
            from transformers import GPT2LMHeadModel
        except ImportError as e:
            raise SideUnavailable(f"n/a (the Hugging Face side needs torch and transformers: {e})")
        torch.set_num_threads(spec["threads"])
        self.torch = torch
        self.m = GPT2LMHeadModel.from_pretrained(spec["ckpt"], torch_dtype=torch.float32).eval()
        self.tokens = spec["tokens"]
        self.ids = torch.tensor([[PROMPT_ID]])
        self.info = {"threads": torch.get_num_threads(), "torch": torch.__version__}
        self.run(1)

    def run(self, n: int, mode: str = "") -> Dict[str, float]:
        torch = self.torch
        total = 0.0
        for _ in range(n):
            with torch.inference_mode():
                t0 = time.perf_counter()
                out = self.m.generate(self.ids, attention_mask=torch.ones_like(self.ids), do_sample=False,
                                      max_new_tokens=self.tokens, min_new_tokens=self.tokens,
                                      pad_token_id=0)
                total += time.perf_counter() - t0
            if out.shape[1] - 1 != self.tokens:
                raise RuntimeError(f"generated {out.shape[1] - 1} of {self.tokens} tokens")
        return {"seconds": total}


def build(spec: Dict[str, Any]) -> Any:
    return CllmSide(spec) if spec["kind"] == "cllm" else HfSide(spec)


# --------------------------------------------------------------- controller

def make_checkpoint(path: str, m: Dict[str, int]) -> None:
    """A random-weight cllm checkpoint (GPT-2 init) of model size m."""
    import cllm
    mc = cllm.ModelConfig(m["vocab_size"], m["context_len"], m["num_layers"], m["num_heads"], m["embed_dim"])
    cllm.Model.create(mc, threads=1, seed=1).save(path)


def main(argv: Optional[List[str]] = None) -> int:
    g = GridArgs(__doc__, "models", list(MODELS), "B", SIDES)
    ap = g.ap
    ap.add_argument("--tokens", type=int, default=200, help="new tokens per generation")
    ap.add_argument("--reps", type=int, default=5, help="generations per side (best reported)")
    ap.add_argument("--llama2c", default=None, metavar="RUN",
                    help=f"path to llama2.c's run binary, built as: {LLAMA2C_BUILD}")
    ap.add_argument("--llama-hidden", type=int, default=0, help="llama2.c hidden_dim (0: 4*dim)")
    ap.add_argument("--peak-seconds", type=float, default=0.3, help="seconds per bandwidth measurement")
    a, models, threads, sides = g.parse(argv, positive=("reps", "tokens"), non_negative=("llama_hidden",))
    llama_note = ""
    if "llama2c" in sides and not a.llama2c:
        llama_note = f"skipped: pass --llama2c /path/to/run (built outside this repo as: {LLAMA2C_BUILD})"
    elif "llama2c" in sides and not os.access(a.llama2c, os.X_OK):
        llama_note = f"skipped: {a.llama2c} is not an executable (build: {LLAMA2C_BUILD})"

    import cllm
    t_start = time.perf_counter()
    caches = cache_sizes()
    l2, l3 = caches.get("L2", 1 << 20), caches.get("L3", 32 << 20)
    machine = measure_machine(threads,
                                 bandwidth_sizes=[l2 // 2, l3 // 2, max(8 * l3, 256 << 20)],
                                 seconds=a.peak_seconds)
    results: Dict[tuple, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="cllm-decode-") as tmp:
        for mname in models:
            m = MODELS[mname]
            tokens = min(a.tokens, m["context_len"] - 1)
            hidden = a.llama_hidden or 4 * m["embed_dim"]
            ckpt = os.path.join(tmp, f"ckpt-{mname}")
            make_checkpoint(ckpt, m)
            lbin, ltok = os.path.join(tmp, f"llama-{mname}.bin"), os.path.join(tmp, f"tok-{mname}.bin")
            if "llama2c" in sides and not llama_note:
                write_llama2c(lbin, m, hidden)
                write_llama2c_tokenizer(ltok, m["vocab_size"])
            nbytes = {f"cllm-{d}": gpt2_weight_bytes(m, d) for d in ("fp32", "bf16", "int8")}
            nbytes["hf"] = nbytes["cllm-fp32"]
            nbytes["llama2c"] = llama_weight_bytes(m, hidden)
            for th in threads:
                script = os.path.abspath(__file__)
                procs: Dict[str, Any] = {}
                for s in sides:
                    if s.startswith("cllm"):
                        procs[s] = Worker(s, script, dict(kind="cllm", ckpt=ckpt, threads=th, tokens=tokens,
                                                             dtype=s.split("-")[1]))
                    elif s == "hf":
                        procs[s] = Worker(s, script, dict(kind="hf", ckpt=ckpt, threads=th, tokens=tokens))
                try:
                    if "llama2c" in sides and not llama_note:
                        procs["llama2c"] = Llama2cSide(a.llama2c, lbin, ltok, th, tokens)
                    live = [(s, w, "") for s, w in procs.items() if w.ok]
                    times = interleave(live, {s: 1 for s, _, _ in live}, a.reps)
                finally:
                    for w in procs.values():
                        w.close()
                for s in sides:
                    w = procs.get(s)
                    row: Dict[str, Any] = {"tok_s": None, "median": None, "note": ""}
                    if s == "llama2c" and llama_note:
                        row["note"] = llama_note
                    elif w is None or not times.get(s):
                        row["note"] = (w.error if w is not None else "not run") or "failed"
                    else:
                        row["tok_s"] = tokens / min(times[s])
                        row["median"] = tokens / statistics.median(times[s])
                        wb = int(nbytes[s])
                        bw = cllm.measure_bandwidth(max(wb, 4096), threads=th, seconds=a.peak_seconds)
                        row["bytes"] = wb + kv_bytes(m, tokens)
                        row["bw"] = bw
                        row["where"] = machine.where(wb)
                        row["limit"] = bw * 1e9 / row["bytes"]
                    results[(mname, th, s)] = row
                    cell = f"{row['tok_s']:,.0f} tok/s" if row["tok_s"] else row["note"]
                    print(f"  model {mname}, {th} thread(s), {s}: {cell}", file=sys.stderr, flush=True)

    print("# Decoding: batch 1, greedy, one run, sides interleaved\n")
    print("\n".join(machine.header_lines()))
    print(f"cllm {cllm.__version__}, ISA {cllm.get_isa()}; {a.tokens} new tokens per generation "
          f"from a 1-token prompt; best of {a.reps} generations per side")
    print(f"llama2.c: {a.llama2c or 'not given'} (must be built as: {LLAMA2C_BUILD}); a Llama with "
          f"the same dim/layers/heads/vocab/seq_len, hidden_dim = {a.llama_hidden or '4*dim'}, random weights\n")
    rows = []
    for mname in models:
        for th in threads:
            ref = results.get((mname, th, "llama2c"), {}).get("tok_s")
            for s in sides:
                r = results[(mname, th, s)]
                ok = r["tok_s"] is not None
                rows.append([mname, th, s, num(r["tok_s"]), num(r["median"]), ratio(r["tok_s"], ref),
                             f"{r['bytes'] / 1e6:,.1f}" if ok else "-",
                             f"{r['bw']:,.1f} ({r['where']})" if ok else "-",
                             num(r.get("limit")) if ok else "-",
                             pct(r["tok_s"] / r["limit"]) if ok else "-", r["note"]])
    print(table(["model", "threads", "side", "tok/s (best)", "tok/s (median)", "vs llama2.c",
                    "MB read/token", "read GB/s (where)", "limit tok/s", "of limit", "note"], rows,
                   [False, True, False, True, True, True, True, True, True, True, False]))
    print("\nMB read/token: weight matrices at the side's bytes per weight + mean fp32 KV cache; "
          "read GB/s: measured over a buffer the size of the side's weights, same thread count; "
          "limit = GB/s / MB per token.")
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(entry(main, build))
