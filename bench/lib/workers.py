"""The subprocess worker protocol: every side of a comparison lives in its
own process, so thread pools, ``ATEN_CPU_CAPABILITY`` or ``CLLM_ISA`` of one
side cannot touch another.

The controller starts ``python SCRIPT --worker JSON`` (:class:`Worker`); the
worker (:func:`serve`) builds its side from the JSON spec, answers
``{"ready": ..., "info": {...}}`` (or ``{"error": msg}``), then serves
``{"op": "run", "n": k, "mode": m}`` requests with ``{"seconds": t, ...}``
until ``{"op": "quit"}`` or EOF. One JSON object per line, on a private copy
of the worker's stdout (fd 1 is redirected to stderr so no library print can
corrupt the protocol). A script serves both roles through :func:`entry`.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from typing import Any, Callable, Dict, Optional

from . import ROOT

log = logging.getLogger(__name__)


class SideUnavailable(Exception):
    """A side cannot run here (missing option, CPU feature, binary); the message says why."""


class Worker:
    """One side of a comparison, living in its own process (see the module docstring)."""

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
            log.debug("worker %s not ready: %s", self.name, self.error)
            self.close()
        else:
            self.info = msg.get("info", {})
        return self

    @property
    def ok(self) -> bool:
        """The worker is up (waits for it to be ready) and has not failed."""
        return self.wait_ready().error is None

    def _stderr_tail(self) -> str:
        try:
            self._err.seek(0)
            lines = [ln.strip() for ln in self._err.read().splitlines() if ln.strip()]
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
            log.debug("worker %s failed: %s", self.name, self.error)
            self.close()
            return None
        return msg

    def close(self) -> None:
        """Ask the worker to quit (kill it if it does not) and release its files."""
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
    proto.write(json.dumps({"ready": True, "info": side.info}) + "\n")
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
    """This process was started as a worker (``--worker JSON`` on its command line)."""
    return "--worker" in sys.argv


def entry(main: Callable[[], int], build: Callable[[Dict[str, Any]], Any]) -> int:
    """A bench script's __main__: serve as a worker when started as one, else run main()."""
    return serve(build) if is_worker() else main()
