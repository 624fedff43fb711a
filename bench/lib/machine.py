"""What machine a benchmark ran on, and its limits measured in the same run.

The CPU model and vector ISA flags come from ``/proc/cpuinfo``, the cache
sizes from sysfs; the multiply-add peaks (``cllm.measure_peak``) and the read
bandwidth (``cllm.measure_bandwidth``) are measured by the C core, on the
thread counts the benchmark uses, so every "% of peak" and MFU figure is
against this machine as it was during the run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .tables import fmt_bytes

#: the FP32 peak kind of each kernel ISA (``cllm.get_isa()``)
FP32_PEAK = {"avx512": "fma_avx512", "avx2": "fma_avx2"}
#: environment restricting PyTorch (ATen kernels, MKL, oneDNN) to AVX2; set before torch is imported
AVX2_ENV_TORCH = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                  "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}
#: the BF16 peak kinds, in order of preference
BF16_PEAKS = ("amx_bf16", "bf16_avx512")
#: what each peak kind's loop runs
PEAK_DESC = {"fma_avx512": "fp32 FMA zmm", "fma_avx2": "fp32 FMA ymm",
             "bf16_avx512": "vdpbf16ps zmm", "amx_bf16": "AMX tdpbf16ps"}


def _cpuinfo_field(name: str) -> Optional[str]:
    """The value of the first ``name`` line of /proc/cpuinfo (None elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU model string of /proc/cpuinfo (``"unknown"`` elsewhere)."""
    return _cpuinfo_field("model name") or "unknown"


def cpu_flags() -> List[str]:
    """The vector ISA flags of /proc/cpuinfo that matter here."""
    want = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni",
            "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
    have = set((_cpuinfo_field("flags") or "").split())
    return [w for w in want if w in have]


def cache_sizes() -> Dict[str, int]:
    """Per-level data/unified cache sizes in bytes of CPU 0 (sysfs): L1d, L2, L3."""
    out: Dict[str, int] = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return out

    def read(entry: str, name: str) -> str:
        with open(os.path.join(base, entry, name), encoding="ascii") as f:
            return f.read().strip()

    for e in entries:
        if not e.startswith("index"):
            continue
        try:
            level, typ, size = read(e, "level"), read(e, "type"), read(e, "size")
        except OSError:
            continue
        if typ == "Instruction":
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        out["L1d" if level == "1" else f"L{level}"] = int(size.rstrip("KMG")) * mult
    return out


def _thread_header(threads: Sequence[int]) -> str:
    return " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads)


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
        """The measured peak of ``kind`` at ``threads`` in GFLOP/s (None if not measured)."""
        return self.peaks.get((kind, threads))

    def bf16_kind(self) -> Optional[str]:
        """The bf16 peak kind that applies here: AMX when granted, else AVX512-BF16."""
        for k in BF16_PEAKS:
            if any(kk == k for kk, _ in self.peaks):
                return k
        return None

    def header_lines(self) -> List[str]:
        """The CPU, its flags and the measured peaks and bandwidths, as lines
        of text and Markdown tables (the header of every bench report)."""
        c = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in self.caches.items())
        lines = [f"CPU: {self.model} ({self.cpus} CPUs usable; caches per core/shared: {c or 'unknown'})",
                 f"ISA flags: {' '.join(self.flags) or 'none found'}"]
        if self.peaks:
            ths = sorted({t for _, t in self.peaks})
            when = ("the higher of a measurement before and one after the timings"
                    if self.peaks_remeasured else "best of 3")
            lines.append(f"Peak measured in this run (register-only multiply-add loops; {when}), GFLOP/s:")
            lines.append("| kind | " + _thread_header(ths) + " |")
            lines.append("|---|" + "---:|" * len(ths))
            for kind in dict.fromkeys(k for k, _ in self.peaks):
                cells = [f"{self.peaks[(kind, t)]:,.1f}" if (kind, t) in self.peaks else "-" for t in ths]
                lines.append(f"| {kind} ({PEAK_DESC.get(kind, '')}) | " + " | ".join(cells) + " |")
        if self.bandwidth:
            ths = sorted({t for _, t in self.bandwidth})
            lines.append("Read bandwidth measured in this run (threads read slices of one buffer; best load loop, "
                         "best of 3), GB/s:")
            lines.append("| buffer | " + _thread_header(ths) + " |")
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


def measure_machine(threads: Iterable[int], kinds: Optional[Sequence[str]] = None,
                    bandwidth_sizes: Sequence[int] = (), seconds: float = 0.3) -> Machine:
    """Detect the CPU and measure its peaks (and read bandwidths over buffers
    of ``bandwidth_sizes`` bytes) for each thread count. ``kinds``: the peak
    kinds to measure (None: every kind this CPU runs; kinds it cannot run are
    left out)."""
    import cllm
    threads = list(threads)
    m = Machine(cpu_model(), cpu_flags(), cache_sizes(), cllm.cpu_info()["cpus"])
    avail = cllm.peak_kinds()
    for k in (list(avail) if kinds is None else kinds):
        if avail.get(k):
            for t in threads:
                m.peaks[(k, t)] = cllm.measure_peak(k, threads=t, seconds=seconds)
    for nb in bandwidth_sizes:
        for t in threads:
            m.bandwidth[(nb, t)] = cllm.measure_bandwidth(int(nb), threads=t, seconds=seconds)
    return m


def remeasure_peaks(m: Machine, seconds: float = 0.3) -> None:
    """Measure every peak again and keep the higher figure (on a busy machine a
    single measurement can come out low, which would inflate MFU)."""
    import cllm
    for (k, t) in list(m.peaks):
        m.peaks[(k, t)] = max(m.peaks[(k, t)], cllm.measure_peak(k, threads=t, seconds=seconds))
    m.peaks_remeasured = True


def mfu(tokens_per_s: Optional[float], flops_per_token: float, peak_gflops: Optional[float]) -> Optional[float]:
    """Model FLOP utilisation: achieved FLOP/s (tokens/s x FLOPs per token) as
    a fraction of a peak in GFLOP/s; None when either figure is missing."""
    if not tokens_per_s or not peak_gflops:
        return None
    return tokens_per_s * flops_per_token / (peak_gflops * 1e9)


def torch_description() -> str:
    """torch version, its CPU capability and BLAS backends (torch is an
    optional reference: without it, says so)."""
    try:
        import torch
    except ImportError:
        return "torch: not installed (the torch sides are n/a)"
    cap = torch.backends.cpu.get_cpu_capability()
    return (f"torch {torch.__version__} (ATen CPU capability {cap}, MKL "
            f"{'yes' if torch.backends.mkl.is_available() else 'no'}, oneDNN "
            f"{'yes' if torch.backends.mkldnn.is_available() else 'no'})")
