"""Shared pieces of the benchmark scripts under bench/.

- what machine this is: CPU model (/proc/cpuinfo), ISA flags, cache sizes (sysfs);
- its limits MEASURED in the same run: multiply-add peaks (``cllm.measure_peak``)
  and read bandwidth (``cllm.measure_bandwidth``);
- side-by-side timing: every side of a comparison lives in its own worker
  process (so thread pools, ``ATEN_CPU_CAPABILITY`` or ``CLLM_ISA`` of one
  side cannot touch another), and the controller interleaves the sides:
  rep 1 of every side, then rep 2 of every side, ... and keeps the best;
- plain Markdown tables.

Worker protocol: the controller starts ``python SCRIPT --worker JSON``; the
worker builds its side from the JSON spec, answers ``{"ready": ..., "info":
{...}}`` (or ``{"error": msg}``), then serves ``{"op": "run", "n": k, "mode":
m}`` requests with ``{"seconds": t, ...}`` until ``{"op": "quit"}`` or EOF.
One JSON object per line, on a private copy of the worker's stdout (fd 1 is
redirected to stderr so no library print can corrupt the protocol).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # the in-place build of the repository
    sys.path.insert(0, ROOT)

# ----------------------------------------------------------------- machine

#: peak kinds used for fp32 sides by ISA, and the bf16 kinds in order of preference
FP32_PEAK = {"avx512": "fma_avx512", "avx2": "fma_avx2"}
#: environment restricting PyTorch (ATen kernels, MKL, oneDNN) to AVX2; set before torch is imported
AVX2_ENV_TORCH = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                  "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}
BF16_PEAKS = ("amx_bf16", "bf16_avx512")


def cpu_model() -> str:
    """The CPU model string of /proc/cpuinfo (``"unknown"`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def cpu_flags() -> List[str]:
    """The vector ISA flags of /proc/cpuinfo that matter here."""
    want = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni",
            "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in want if w in have]
    except OSError:
        pass
    return []


def cache_sizes() -> Dict[str, int]:
    """Per-level data/unified cache sizes in bytes of CPU 0 (sysfs): L1d, L2, L3."""
    out: Dict[str, int] = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return out
    for e in entries:
        if not e.startswith("index"):
            continue
        try:
            def rd(name: str) -> str:
                with open(os.path.join(base, e, name), encoding="ascii") as f:
                    return f.read().strip()
            level, typ, size = rd("level"), rd("type"), rd("size")
        except OSError:
            continue
        if typ == "Instruction":
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        n = int(size.rstrip("KMG")) * mult
        out["L1d" if level == "1" else f"L{level}"] = n
    return out


def fmt_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@dataclass
class Machine:
    """The machine and its limits measured in this run."""

    model: str
    flags: List[str]
    caches: Dict[str, int]
    cpus: int
    peaks: Dict[Tuple[str, int], float] = field(default_factory=dict)   # (kind, threads) -> GFLOP/s
    bandwidth: Dict[Tuple[int, int], float] = field(default_factory=dict)  # (bytes, threads) -> GB/s
    peaks_remeasured: bool = False

    def peak(self, kind: str, threads: int) -> Optional[float]:
        return self.peaks.get((kind, threads))

    def bf16_kind(self) -> Optional[str]:
        """The bf16 peak kind that applies here: AMX when granted, else AVX512-BF16."""
        for k in BF16_PEAKS:
            if any(kk == k for kk, _ in self.peaks):
                return k
        return None

    def header_lines(self) -> List[str]:
        c = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in self.caches.items())
        lines = [f"CPU: {self.model} ({self.cpus} CPUs usable; caches per core/shared: {c or 'unknown'})",
                 f"ISA flags: {' '.join(self.flags) or 'none found'}"]
        if self.peaks:
            ths = sorted({t for _, t in self.peaks})
            when = ("the higher of a measurement before and one after the timings"
                    if self.peaks_remeasured else "best of 3")
            lines.append(f"Peak measured in this run (register-only multiply-add loops; {when}), GFLOP/s:")
            lines.append("| kind | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in ths) + " |")
            lines.append("|---|" + "---:|" * len(ths))
            for kind in dict.fromkeys(k for k, _ in self.peaks):
                cells = [f"{self.peaks[(kind, t)]:,.1f}" if (kind, t) in self.peaks else "-" for t in ths]
                lines.append(f"| {kind} ({PEAK_DESC.get(kind, '')}) | " + " | ".join(cells) + " |")
        if self.bandwidth:
            ths = sorted({t for _, t in self.bandwidth})
            lines.append("Read bandwidth measured in this run (threads read slices of one buffer; best load loop, best of 3), GB/s:")
            lines.append("| buffer | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in ths) + " |")
            lines.append("|---|" + "---:|" * len(ths))
            for nb in sorted({b for b, _ in self.bandwidth}):
                cells = [f"{self.bandwidth[(nb, t)]:,.1f}" if (nb, t) in self.bandwidth else "-" for t in ths]
                lines.append(f"| {fmt_bytes(nb)} ({self.where(nb)}) | " + " | ".join(cells) + " |")
        return lines

    def where(self, nbytes: int) -> str:
        """Which memory level a buffer of nbytes streams from (by the cache sizes)."""
        l2, l3 = self.caches.get("L2", 0), self.caches.get("L3", 0)
        if l2 and nbytes <= l2 // 2:
            return "fits L2"
        if l3 and nbytes <= (3 * l3) // 4:
            return "fits L3"
        return "DRAM" if l3 else "size unknown"


PEAK_DESC = {"fma_avx512": "fp32 FMA zmm", "fma_avx2": "fp32 FMA ymm",
             "bf16_avx512": "vdpbf16ps zmm", "amx_bf16": "AMX tdpbf16ps"}


def remeasure_peaks(m: Machine, seconds: float = 0.3) -> None:
    """Measure every peak again and keep the higher figure (on a busy machine a
    single measurement can come out low, which would inflate MFU)."""
    import cllm
    for (k, t) in list(m.peaks):
        m.peaks[(k, t)] = max(m.peaks[(k, t)], cllm.measure_peak(k, threads=t, seconds=seconds))
    m.peaks_remeasured = True


def measure_machine(threads: Iterable[int], kinds: Optional[Sequence[str]] = None,
                    bandwidth_sizes: Sequence[int] = (), seconds: float = 0.3) -> Machine:
    """Detect the CPU and measure its peaks (and bandwidths) for each thread count."""
    import cllm
    m = Machine(cpu_model(), cpu_flags(), cache_sizes(), cllm.cpu_info()["cpus"])
    avail = cllm.peak_kinds()
    kinds = [k for k in (kinds or list(avail)) if avail.get(k)]
    for k in kinds:
        for t in threads:
            m.peaks[(k, t)] = cllm.measure_peak(k, threads=t, seconds=seconds)
    for nb in bandwidth_sizes:
        for t in threads:
            m.bandwidth[(nb, t)] = cllm.measure_bandwidth(int(nb), threads=t, seconds=seconds)
    return m


def torch_description() -> str:
    """torch version, its CPU capability and BLAS backends (imports torch)."""
    import torch
    cap = torch.backends.cpu.get_cpu_capability()
    return (f"torch {torch.__version__} (ATen CPU capability {cap}, MKL "
            f"{'yes' if torch.backends.mkl.is_available() else 'no'}, oneDNN "
            f"{'yes' if torch.backends.mkldnn.is_available() else 'no'})")


# ------------------------------------------------------------------ tables

def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Optional[Sequence[bool]] = None) -> str:
    """A Markdown table; numbers right-aligned unless ``right`` says otherwise."""
    rows = [[str(c) for c in r] for r in rows]
    if right is None:
        right = [i > 0 for i in range(len(headers))]
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def comma_list(text: str, cast: Callable[[str], Any] = str) -> List[Any]:
    """``"a, b,,c"`` -> ``[cast("a"), cast("b"), cast("c")]`` (a --flag's comma list)."""
    return [cast(x.strip()) for x in text.split(",") if x.strip()]


# ------------------------------------------------------------ command line
def doc_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose help is the script's docstring ``doc``: its
    first paragraph as the description, all of it (as written) after the flags."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


class GridArgs:
    """The command line of a side-by-side bench over a grid: ``--WHAT`` (a
    comma list of ``names``, e.g. model configurations), ``--threads`` (a
    comma list of counts) and ``--sides`` (a comma list of ``sides``, default
    all), with the script's docstring ``doc`` as help. Add the script's own
    flags to :attr:`ap`, then :meth:`parse`."""

    def __init__(self, doc: str, what: str, names: Sequence[str], default: str, sides: Sequence[str]) -> None:
        self.what, self.names, self.sides = what, list(names), list(sides)
        self.ap = doc_parser(doc)
        self.ap.add_argument(f"--{what}", default=default, help="comma list of " + ",".join(self.names))
        self.ap.add_argument("--threads", default="1,2", help="comma list of thread counts")
        self.ap.add_argument("--sides", default=",".join(self.sides), help="comma list of " + ",".join(self.sides))

    def parse(self, argv: Optional[Sequence[str]], positive: Sequence[str] = (), non_negative: Sequence[str] = ()
              ) -> Tuple[argparse.Namespace, List[str], List[int], List[str]]:
        """(namespace, the ``--WHAT`` names upper-cased, thread counts, sides).
        Unknown names or sides, a thread count that is not an integer >= 1,
        an option of ``positive`` < 1 or of ``non_negative`` < 0 end in one
        usage error naming them."""
        a = self.ap.parse_args(argv)
        chosen = comma_list(getattr(a, self.what), str.upper)
        picked = comma_list(a.sides)
        bad = [f"--{self.what} {x}" for x in chosen if x not in self.names]
        bad += [f"--sides {s}" for s in picked if s not in self.sides]
        try:
            threads = comma_list(a.threads, int)
        except ValueError:
            threads = []
        if not threads or min(threads) < 1:
            bad.append(f"--threads {a.threads}")
        bad += [f"--{o.replace('_', '-')} {getattr(a, o)}" for o in positive if getattr(a, o) < 1]
        bad += [f"--{o.replace('_', '-')} {getattr(a, o)}" for o in non_negative if getattr(a, o) < 0]
        if bad:
            self.ap.error("bad " + ", ".join(bad))
        return a, chosen, threads, picked


def pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def num(x: Optional[float], digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return "n/a" if not a or not b else f"{a / b:.2f}x"


# ----------------------------------------------------------------- workers

class SideUnavailable(Exception):
    """A side cannot run here (missing option, CPU feature, binary); the message says why."""


class Worker:
    """One side of a comparison, living in its own process (see module docstring)."""

    def __init__(self, name: str, script: str, spec: Dict[str, Any],
                 env: Optional[Dict[str, str]] = None, timeout: float = 900.0) -> None:
        self.name = name
        self.info: Dict[str, Any] = {}
        self.error: Optional[str] = None
        self.timeout = timeout
        e = dict(os.environ)
        e.update(env or {})
        e["PYTHONPATH"] = ROOT + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, script, "--worker", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                     env=e, text=True, bufsize=1)
        self._ready = False

    def wait_ready(self) -> "Worker":
        """Wait for the worker's first message (it has built and warmed up its side)."""
        if self._ready or self.error:
            return self
        self._ready = True
        msg = self._read()
        if msg is None or "error" in msg:
            self.error = (msg or {}).get("error") or self._stderr_tail() or "worker exited"
            self.close()
        else:
            self.info = msg.get("info", {})
        return self

    @property
    def ok(self) -> bool:
        return self.wait_ready().error is None

    def _stderr_tail(self) -> str:
        try:
            self._err.seek(0)
            lines = [l.strip() for l in self._err.read().splitlines() if l.strip()]
            return lines[-1] if lines else ""
        except (OSError, ValueError):
            return ""

    def _read(self) -> Optional[Dict[str, Any]]:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.proc.wait(timeout=30)
            return None
        return json.loads(line)

    def run(self, n: int, mode: str = "") -> Optional[Dict[str, Any]]:
        """Ask the worker to run n units in ``mode``; its reply or None (it died)."""
        if not self.ok:
            return None
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"op": "run", "n": n, "mode": mode}) + "\n")
            self.proc.stdin.flush()
            msg = self._read()
        except (BrokenPipeError, OSError, ValueError) as e:
            msg = {"error": str(e)}
        if msg is None or "error" in msg:
            self.error = (msg or {}).get("error") or self._stderr_tail() or "worker died"
            self.close()
            return None
        return msg

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._err.close()


def serve(build: Callable[[Dict[str, Any]], Any]) -> int:
    """Worker main loop: ``build(spec)`` returns an object with ``info`` (dict)
    and ``run(n, mode) -> dict`` (holding at least ``seconds``)."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed by libraries goes to stderr
    spec = json.loads(sys.argv[sys.argv.index("--worker") + 1])
    try:
        side = build(spec)
    except SideUnavailable as e:
        proto.write(json.dumps({"error": str(e)}) + "\n")
        return 0
    except Exception as e:  # report the reason to the controller, as one line
        proto.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
        return 1
    proto.write(json.dumps({"ready": True, "info": getattr(side, "info", {})}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("op") != "run":
            break
        try:
            res = side.run(int(req["n"]), req.get("mode", ""))
        except Exception as e:
            proto.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
            return 1
        proto.write(json.dumps(res) + "\n")
    return 0


def is_worker() -> bool:
    return "--worker" in sys.argv


def entry(main: Callable[[], int], build: Callable[[Dict[str, Any]], Any]) -> int:
    """A bench script's __main__: serve as a worker when started as one, else run main()."""
    return serve(build) if is_worker() else main()


def interleave(columns: Sequence[Tuple[str, Worker, str]], n: Dict[str, int], reps: int,
               pause: float = 0.05) -> Dict[str, List[float]]:
    """Time every column (name, worker, mode) ``reps`` times, interleaved: one
    rep of each column in turn (the starting column rotates), sleeping
    ``pause`` s between columns so a spinning thread pool of the previous side
    has gone idle. Returns the seconds per unit of each rep, per column."""
    out: Dict[str, List[float]] = {c[0]: [] for c in columns}
    for r in range(reps):
        order = list(columns[r % len(columns):]) + list(columns[:r % len(columns)]) if columns else []
        for name, w, mode in order:
            res = w.run(n[name], mode)
            if res is not None:
                out[name].append(res["seconds"] / n[name])
            time.sleep(pause)
    return out


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
