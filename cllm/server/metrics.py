"""Server metrics in the Prometheus text exposition format (version 0.0.4):
request counters by route and status, token counters, histograms of the
time to first token and the total request time, and the queue length."""
from __future__ import annotations

import threading
from typing import Dict, List, Sequence, Tuple

__all__ = ["Histogram", "ServerMetrics"]

#: latency buckets in seconds (upper bounds)
BUCKETS: Tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    """A cumulative histogram of observed values (seconds)."""

    def __init__(self, buckets: Sequence[float] = BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        """Record one value."""
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
        self.total += 1
        self.sum += v

    def lines(self, name: str, labels: str = "") -> List[str]:
        """The ``_bucket``, ``_sum`` and ``_count`` sample lines."""
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{b:g}"}} {c}' for b, c in zip(self.buckets, self.counts)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        lab = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{lab} {self.sum:.6f}", f"{name}_count{lab} {self.total}"]
        return out


class ServerMetrics:
    """Everything ``GET /metrics`` reports (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Dict[Tuple[str, int], int] = {}
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.ttft: Dict[str, Histogram] = {}
        self.duration: Dict[str, Histogram] = {}
        self.rejected_full = 0
        self.cancelled = 0

    def request(self, route: str, status: int, duration_s: float, ttft_s: float = -1.0, prompt_tokens: int = 0,
                generated: int = 0) -> None:
        """Record one finished request."""
        with self._lock:
            self.requests[(route, status)] = self.requests.get((route, status), 0) + 1
            self.prompt_tokens += prompt_tokens
            self.generated_tokens += generated
            self.duration.setdefault(route, Histogram()).observe(duration_s)
            if ttft_s >= 0:
                self.ttft.setdefault(route, Histogram()).observe(ttft_s)
            if status == 503:
                self.rejected_full += 1

    def render(self, queue_length: int, in_flight: int) -> str:
        """The exposition text."""
        with self._lock:
            out = ["# HELP cllm_requests_total HTTP requests by route and status.",
                   "# TYPE cllm_requests_total counter"]
            out += [f'cllm_requests_total{{route="{r}",status="{s}"}} {n}'
                    for (r, s), n in sorted(self.requests.items())]
            out += ["# HELP cllm_prompt_tokens_total Prompt tokens evaluated.",
                    "# TYPE cllm_prompt_tokens_total counter", f"cllm_prompt_tokens_total {self.prompt_tokens}",
                    "# HELP cllm_generated_tokens_total Tokens generated.",
                    "# TYPE cllm_generated_tokens_total counter",
                    f"cllm_generated_tokens_total {self.generated_tokens}",
                    "# HELP cllm_time_to_first_token_seconds Time from a request to its first generated token.",
                    "# TYPE cllm_time_to_first_token_seconds histogram"]
            for r, h in sorted(self.ttft.items()):
                out += h.lines("cllm_time_to_first_token_seconds", f'route="{r}"')
            out += ["# HELP cllm_request_duration_seconds Time from a request to its last byte.",
                    "# TYPE cllm_request_duration_seconds histogram"]
            for r, h in sorted(self.duration.items()):
                out += h.lines("cllm_request_duration_seconds", f'route="{r}"')
            out += ["# HELP cllm_queue_length Generation requests waiting for the model.",
                    "# TYPE cllm_queue_length gauge", f"cllm_queue_length {queue_length}",
                    "# HELP cllm_requests_in_flight Generation requests being served.",
                    "# TYPE cllm_requests_in_flight gauge", f"cllm_requests_in_flight {in_flight}"]
        return "\n".join(out) + "\n"
