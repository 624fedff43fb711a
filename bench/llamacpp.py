"""cllm against llama.cpp on the same weights: pp512 and tg128, 1 and 2 threads.

    python bench/llamacpp.py                                   # config-B-sized model, every side, 1 and 2 threads
    python bench/llamacpp.py --models tiny --threads 1 --reps 1 --prompt-tokens 32 --gen-tokens 8   # smoke run

llama.cpp runs through llama-cpp-python (the ``bench`` extra), built from
source on this machine so ggml uses its native ISA:

    CMAKE_ARGS="-DGGML_NATIVE=ON" pip install --no-binary llama-cpp-python llama-cpp-python

Model: config-B size (6 layers, 6 heads, embed 384, vocab 4096, context 1024)
with random weights, and a BPE trained with the gpt2 pre-tokenizer on stdlib
code (the export needs a pre-tokenizer llama.cpp implements). ``cllm export``
writes it as f32 and q8_0 GGUF files, so both engines run the same numbers.

Sides, each in its own process (reps interleaved, best of --reps):
  cllm-fp32 / cllm-bf16 / cllm-int8   cllm.load(dir, dtype=...): the decoder's batched prefill (pp)
                                      and its single-token step (tg)
  llama-f32 / llama-q8_0             llama_cpp.Llama on the f32 / q8_0 export, its defaults otherwise
                                      (F16 KV cache); Llama.eval of the prompt as one batch (pp,
                                      n_batch = n_ubatch = the prompt) and of one token at a time (tg)

pp512: one 512-token prompt (random ids) from an empty cache, as a single
batch; tokens/s and MFU = FLOPs (2 x the layers' matrix weights per token +
causal attention + the LM head once) / seconds / the FP32 FMA peak measured in
this run on the same thread count (q8_0 and int8 do their products on
integers, bf16 on converted panels; their MFU is counted against the same
FP32 peak). tg128: 128 single-token forwards after a one-token prompt (fixed
token ids, no sampling), tokens/s and the bandwidth limit: read GB/s measured
in this run over a buffer the size of the side's weights / the bytes one
token reads (weight matrices and LM head at the side's bytes per weight: fp32
4, bf16 2, int8 1 + a 4-byte scale per row, q8_0 34 per 32 weights; plus the
mean KV cache, fp32 for cllm, fp16 for llama.cpp).
"""
from __future__ import annotations

import abc
import os
import random
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]
from decode import gpt2_weight_bytes, kv_bytes  # noqa: E402
from lib.cli import GridArgs  # noqa: E402
from lib.machine import FP32_PEAK, measure_machine, mfu  # noqa: E402
from lib.tables import num, pct, table  # noqa: E402
from lib.timing import interleave  # noqa: E402
from lib.workers import SideUnavailable, Worker, entry  # noqa: E402
from prompt_rate import MODELS, _texts, prompt_flops  # noqa: E402

SIDES = ["cllm-fp32", "cllm-bf16", "cllm-int8", "llama-f32", "llama-q8_0"]
#: the GGUF dtype of each llama.cpp side
GGUF_OF = {"llama-f32": "f32", "llama-q8_0": "q8_0"}
LLAMA_BUILD = 'CMAKE_ARGS="-DGGML_NATIVE=ON" pip install --no-binary llama-cpp-python llama-cpp-python'


def side_bytes(cfg: Dict[str, int], side: str, tokens: int) -> float:
    """Bytes one decoded token reads on ``side``: matrices and LM head at its
    bytes per weight, plus the mean KV cache of a ``tokens``-token generation."""
    if side.startswith("cllm-"):
        return gpt2_weight_bytes(cfg, side.split("-")[1]) + kv_bytes(cfg, tokens)
    n = gpt2_weight_bytes(cfg, "fp32") / 4.0
    per_weight = {"f32": 4.0, "q8_0": 34.0 / 32.0}[GGUF_OF[side]]
    return per_weight * n + kv_bytes(cfg, tokens) / 2.0      # F16 KV cache


# ----------------------------------------------------------------- workers
class Side(abc.ABC):
    """One engine: :meth:`prefill` runs the prompt from an empty cache, :meth:`start`
    empties the cache and runs one token, :meth:`step` one more token."""

    prompt: List[int]
    gen: List[int]

    @abc.abstractmethod
    def prefill(self) -> None:
        """Run the whole prompt as one batch, from an empty cache."""

    @abc.abstractmethod
    def start(self, token: int) -> None:
        """Empty the cache and run ``token``."""

    @abc.abstractmethod
    def step(self, token: int) -> None:
        """Run one more token (its logits computed)."""

    def run(self, n: int, mode: str) -> Dict[str, float]:
        """``n`` reps of pp (the prompt) or tg (the generation's tokens after the first), in seconds."""
        total = 0.0
        for _ in range(n):
            if mode == "pp":
                t0 = time.perf_counter()
                self.prefill()
            else:
                self.start(self.gen[0])
                t0 = time.perf_counter()
                for t in self.gen[1:]:
                    self.step(t)
            total += time.perf_counter() - t0
        return {"seconds": total}


class CllmSide(Side):
    """cllm.load(dir, dtype=...) and its decoder."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        import numpy as np

        import cllm
        try:
            self.m = cllm.load(spec["ckpt"], dtype=spec["dtype"], threads=spec["threads"])
        except cllm.UnsupportedError as e:
            raise SideUnavailable(f"n/a ({e})")
        self.dec = self.m._gen_decoder()
        self.prompt, self.gen = spec["prompt"], spec["gen"]
        self.out = np.empty(self.m.config.vocab_size, dtype=np.float32)
        self.info = {"threads": self.m.threads}
        self.run(1, "pp")
        self.run(1, "tg")

    def prefill(self) -> None:
        self.dec.feed(self.prompt)

    def start(self, token: int) -> None:
        self.dec.feed([token])

    def step(self, token: int) -> None:
        self.dec.step(token, self.out)


class LlamaSide(Side):
    """llama_cpp.Llama on a GGUF export."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise SideUnavailable(f"n/a (llama-cpp-python is not installed: {LLAMA_BUILD})")
        n = len(spec["prompt"])
        self.llm = llama_cpp.Llama(model_path=spec["gguf"], n_ctx=spec["context_len"], n_batch=n, n_ubatch=n,
                                   n_threads=spec["threads"], n_threads_batch=spec["threads"], verbose=False)
        self.prompt, self.gen = spec["prompt"], spec["gen"]
        self.info = {"threads": spec["threads"], "llama_cpp": llama_cpp.__version__}
        self.run(1, "pp")
        self.run(1, "tg")

    def prefill(self) -> None:
        self.llm.reset()
        self.llm.eval(self.prompt)

    def start(self, token: int) -> None:
        self.llm.reset()
        self.llm.eval([token])

    def step(self, token: int) -> None:
        self.llm.eval([token])


def build(spec: Dict[str, Any]) -> Any:
    return CllmSide(spec) if spec["kind"] == "cllm" else LlamaSide(spec)


# --------------------------------------------------------------- controller
def prepare(tmp: str, cfg: Dict[str, int], sides: List[str]) -> Dict[str, str]:
    """A random-weight checkpoint with a gpt2-pre-tokenizer BPE on stdlib code,
    and its GGUF exports for the llama.cpp sides; paths by side kind."""
    import cllm
    tok = cllm.Tokenizer.train(texts=_texts(), vocab_size=cfg["vocab_size"], progress=False, pretokenizer="gpt2")
    ckpt = os.path.join(tmp, "ckpt")
    cllm.Model(cllm.ModelConfig(**cfg), tok, threads=1, seed=1).save(ckpt)
    paths = {"ckpt": ckpt}
    for s in sides:
        if s in GGUF_OF:
            paths[s] = cllm.export(ckpt, os.path.join(tmp, f"m-{GGUF_OF[s]}.gguf"), dtype=GGUF_OF[s],
                                   modelfile=False)
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    g = GridArgs(__doc__, "models", [m.upper() for m in MODELS], "B", SIDES)
    ap = g.ap
    ap.add_argument("--prompt-tokens", type=int, default=512, help="pp: prompt length (default: %(default)s)")
    ap.add_argument("--gen-tokens", type=int, default=128, help="tg: generated tokens (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=5, help="runs per side and test (best reported)")
    ap.add_argument("--peak-seconds", type=float, default=0.3, help="seconds per peak / bandwidth measurement")
    a, models, threads, sides = g.parse(argv, positive=("reps", "prompt_tokens", "gen_tokens"))

    import cllm
    t_start = time.perf_counter()
    kind = FP32_PEAK.get(cllm.get_isa(), "fma_avx2")
    machine = measure_machine(threads, kinds=[kind], seconds=a.peak_seconds)
    rows: List[List[Any]] = []
    for mname in models:
        cfg = MODELS[mname] if mname in MODELS else MODELS[mname.lower()]   # prompt_rate's names: B, tiny
        n_pp = min(a.prompt_tokens, cfg["context_len"] - 1)
        n_tg = min(a.gen_tokens, cfg["context_len"] - 2)
        rng = random.Random(0)
        prompt = [rng.randrange(256, cfg["vocab_size"]) for _ in range(n_pp)]
        gen = [rng.randrange(256, cfg["vocab_size"]) for _ in range(n_tg + 1)]
        with tempfile.TemporaryDirectory(prefix="cllm-llamacpp-") as tmp:
            paths = prepare(tmp, cfg, sides)
            for th in threads:
                procs: Dict[str, Worker] = {}
                try:
                    for s in sides:
                        spec: Dict[str, Any] = dict(threads=th, prompt=prompt, gen=gen,
                                                    context_len=cfg["context_len"])
                        if s.startswith("cllm-"):
                            spec.update(kind="cllm", ckpt=paths["ckpt"], dtype=s.split("-")[1])
                        else:
                            spec.update(kind="llama", gguf=paths[s])
                        procs[s] = Worker(s, os.path.abspath(__file__), spec)
                    live = [(s, w) for s, w in procs.items() if w.ok]
                    cols = [(f"{s}/{m}", w, m) for s, w in live for m in ("pp", "tg")]
                    times = interleave(cols, {c: 1 for c, _, _ in cols}, a.reps)
                finally:
                    for w in procs.values():
                        w.close()
                fl = prompt_flops(cfg, n_pp)
                peak = machine.peak(kind, th)
                for s in sides:
                    w = procs[s]
                    pp, tg = times.get(f"{s}/pp"), times.get(f"{s}/tg")
                    if not pp or not tg:
                        rows.append([mname, th, s] + ["n/a"] * 7 + [w.error or "failed"])
                        continue
                    pp_s, tg_s = n_pp / min(pp), n_tg / min(tg)
                    nbytes = side_bytes(cfg, s, n_tg)
                    bw = cllm.measure_bandwidth(max(int(nbytes), 4096), threads=th, seconds=a.peak_seconds)
                    limit = bw * 1e9 / nbytes
                    rows.append([mname, th, s, num(pp_s), pct(mfu(pp_s, fl / n_pp, peak)), num(tg_s),
                                 f"{nbytes / 1e6:,.2f}", f"{bw:,.1f} ({machine.where(int(nbytes))})", num(limit),
                                 pct(tg_s / limit), ""])
                    print(f"  model {mname}, {th} thread(s), {s}: pp {pp_s:,.0f} tok/s, tg {tg_s:,.0f} tok/s",
                          file=sys.stderr, flush=True)
    print(f"# cllm vs llama.cpp: pp{a.prompt_tokens} and tg{a.gen_tokens}, one run, sides interleaved, best of "
          f"{a.reps}\n")
    print("\n".join(machine.header_lines()))
    print(f"cllm {cllm.__version__}, ISA {cllm.get_isa()}; llama.cpp built as: {LLAMA_BUILD}\n")
    print(table(["model", "threads", "side", f"pp{a.prompt_tokens} tok/s", "MFU (FP32 peak)",
                 f"tg{a.gen_tokens} tok/s", "MB read/token", "read GB/s (where)", "limit tok/s", "of limit",
                 "note"], rows, [False, True, False] + [True] * 7 + [False]))
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(entry(main, build))
