"""Start-up: time from process start to the first generated token of
`cllm generate` on a config-B-sized checkpoint (vocab 4096, 6 layers, 6
heads, embed 384, context 256; random weights, a 4096-token BPE trained on
the Python standard library), over N runs.

    python bench/startup.py                 # 5 runs, fp32 (the default dtype)
    python bench/startup.py --runs 10 --dtype int8 --checkpoint DIR

Each run starts `python -m cllm generate CKPT -p "def " -n 1 -t 0` and
reads its stdout unbuffered; the clock starts just before the process is
spawned and stops when the first byte after the echoed prompt arrives (the
first token, detokenized). The same loop times `python -c pass` (the bare
interpreter) for reference. The page cache is warm (one untimed run first),
as it is for a user who runs the command twice, and the package's bytecode
is compiled first (`pip install` does that; a checkout run with
PYTHONDONTWRITEBYTECODE=1 would otherwise recompile every module each run).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]  # bench/ (lib puts the repository root on sys.path too)
from lib import ROOT  # noqa: E402
from lib.cli import doc_parser  # noqa: E402
from lib.machine import cpu_model  # noqa: E402

PROMPT = "def "
TARGET_MS = 150.0


def make_checkpoint(path: str) -> None:
    """A config-B-sized checkpoint with a 4096-token BPE trained on the stdlib."""
    import cllm
    from cllm.data.corpus import default_corpus_path
    src = default_corpus_path()
    files = sorted(os.path.join(src, f) for f in os.listdir(src) if f.endswith(".py"))[:120]
    tok = cllm.Tokenizer.train(files, vocab_size=4096)
    cfg = cllm.ModelConfig(vocab_size=4096, context_len=256, num_layers=6, num_heads=6, embed_dim=384)
    cllm.Model.create(cfg, tok, threads=1, seed=1).save(path)


def time_to_first_token(cmd: List[str], prompt_len: int) -> float:
    """Seconds from spawn to the first stdout byte after the echoed prompt."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, bufsize=0)
    got = b""
    assert p.stdout is not None
    while len(got) <= prompt_len:
        b = p.stdout.read(1)
        if not b:
            break
        got += b
    t = time.perf_counter() - t0
    p.communicate()
    if p.returncode != 0 or len(got) <= prompt_len:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc {p.returncode}): {got!r}")
    return t


def time_exit(cmd: List[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - t0


def main(argv: Optional[List[str]] = None) -> int:
    ap = doc_parser(__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dtype", default=None, choices=("fp32", "bf16", "int8"), help="--dtype of cllm generate")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--checkpoint", default=None, help="checkpoint to use (default: make a config-B one)")
    a = ap.parse_args(argv)
    tmp = None
    ckpt = a.checkpoint
    if ckpt is None:
        tmp = tempfile.TemporaryDirectory(prefix="cllm-startup-")
        ckpt = os.path.join(tmp.name, "ckB")
        make_checkpoint(ckpt)
    cmd = [sys.executable, "-m", "cllm", "generate", ckpt, "-p", PROMPT, "-n", "1", "-t", "0",
           "--threads", str(a.threads)]
    if a.dtype:
        cmd += ["--dtype", a.dtype]
    import compileall
    compileall.compile_dir(os.path.join(ROOT, "cllm"), quiet=1)
    time_to_first_token(cmd, len(PROMPT))            # warm the page cache
    ttft = [time_to_first_token(cmd, len(PROMPT)) for _ in range(a.runs)]
    bare = [time_exit([sys.executable, "-c", "pass"]) for _ in range(a.runs)]
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"cpu: {cpu_model()}; load average (1 min) {load:.1f}; checkpoint {ckpt}")
    print(f"command: {' '.join(cmd[1:])}")
    print(f"{'run':>4}  {'first token (ms)':>16}  {'python -c pass (ms)':>20}")
    for i, (t, b) in enumerate(zip(ttft, bare), 1):
        print(f"{i:>4}  {1e3 * t:>16.1f}  {1e3 * b:>20.1f}")
    med = 1e3 * statistics.median(ttft)
    print(f"median {med:.1f} ms, min {1e3 * min(ttft):.1f}, max {1e3 * max(ttft):.1f} "
          f"(bare interpreter median {1e3 * statistics.median(bare):.1f} ms); target {TARGET_MS:.0f} ms: "
          f"{'met' if med <= TARGET_MS else 'NOT met'}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
