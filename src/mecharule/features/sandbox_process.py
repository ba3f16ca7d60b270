"""Wall 2 of the feature sandbox: launch the confined worker, hold it to its limits, read its result.

Each feature runs in its own ``python -I -S sandbox_worker.py`` process, started in a session (and
so a process group) of its own. The parent reads its stdout until EOF, the wall-clock limit (or the
end of the round's time budget, whichever comes first) or an output cap, then SIGKILLs the whole
group and reaps the worker with :func:`os.wait4`, whose CPU time tells a kill at the CPU limit
from any other kill. The worker reports which process protections hold (:func:`probe_sandbox`
asks for them without running a feature); the worker's own docstring lists them.

Why a run failed is said precisely: "exceeded the CPU limit of 2 s (killed by SIGXCPU ...)",
"killed by signal SIGSEGV", "exceeded the wall-clock limit of 20 s", "round time budget
exhausted", "raised on 3 of 4 rows ...; first: MemoryError ... (memory limit 256 MB)", "returned
no number on any of the 4 rows: returned non-finite values on 4 of 4 rows".
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mecharule.errors import ConfigError, SandboxError

logger = logging.getLogger(__name__)

WORKER_PATH = Path(__file__).with_name("sandbox_worker.py")
ROUND_BUDGET_EXHAUSTED = "round time budget exhausted"
PROTECTIONS = ("own_session", "non_root", "not_dumpable", "no_new_privs", "seccomp")


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for ONE feature's worker process (all rows of the table), and for one round.

    ``cpu_seconds`` defaults to ``ceil(wall_seconds)``; ``memory_mb`` is added to the worker's
    start-up size; a feature raising on more than ``max_error_fraction`` of rows is rejected;
    ``n_jobs`` workers run at once (default: the number of CPUs). ``round_seconds`` is the wall
    time of ALL proposals of one proposal round together (None: no budget); proposals still
    waiting or running when it ends are rejected with "round time budget exhausted".
    """

    wall_seconds: float = 20.0
    cpu_seconds: int | None = None
    memory_mb: int = 256
    recursion_limit: int = 200
    max_error_fraction: float = 0.5
    n_jobs: int | None = None
    round_seconds: float | None = 120.0

    def __post_init__(self) -> None:
        checks = [
            ("wall_seconds", self.wall_seconds > 0, "> 0"),
            ("cpu_seconds", self.cpu_seconds is None or self.cpu_seconds >= 1, "None or >= 1"),
            ("memory_mb", self.memory_mb >= 16, ">= 16"),
            ("recursion_limit", 50 <= self.recursion_limit <= 10_000, "between 50 and 10000"),
            ("max_error_fraction", 0.0 <= self.max_error_fraction <= 1.0, "between 0 and 1"),
            ("n_jobs", self.n_jobs is None or self.n_jobs >= 1, "None or >= 1"),
            ("round_seconds", self.round_seconds is None or self.round_seconds > 0, "None or > 0"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"SandboxLimits.{name} must be {allowed}, got {getattr(self, name)!r}")

    @property
    def cpu_limit(self) -> int:
        return self.cpu_seconds if self.cpu_seconds is not None else max(1, math.ceil(self.wall_seconds))


@dataclass(frozen=True)
class SandboxRun:
    """Raw outcome of one worker: ``values`` (NaN = not applicable) or None with ``error`` set.

    ``n_errors`` rows raised (``error`` is the first message), ``n_non_numeric`` returned a
    non-number (of ``non_numeric_types``), ``n_non_finite`` returned NaN or ±inf.
    """

    values: np.ndarray | None
    n_errors: int = 0
    n_non_numeric: int = 0
    error: str = ""
    n_non_finite: int = 0
    non_numeric_types: tuple[str, ...] = ()
    protections: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class SandboxProbe:
    """Which process protections a worker on this system gets (``protections``: name → holds;
    ``missing``: a readable line for each that does not)."""

    protections: Mapping[str, bool]
    missing: tuple[str, ...] = ()

    @property
    def active(self) -> list[str]:
        return [name for name in PROTECTIONS if self.protections.get(name)]

    def to_json(self) -> dict[str, Any]:
        return {"protections": dict(self.protections), "active": self.active,
                "missing": list(self.missing)}  # fmt: skip


def worker_spec(
    source: str, function: str, limits: SandboxLimits, *, disable: Collection[str] = ()
) -> dict[str, Any]:
    """The JSON spec the worker reads; ``disable`` (tests only) leaves protections off."""
    return {
        "source": source,
        "function": function,
        "cpu_seconds": limits.cpu_limit,
        "memory_mb": limits.memory_mb,
        "recursion_limit": limits.recursion_limit,
        "disable": sorted(disable),
    }


def worker_command(spec: Mapping[str, Any]) -> list[str]:
    return [sys.executable, "-I", "-S", str(WORKER_PATH), json.dumps(spec)]


@dataclass(frozen=True)
class RowsFile:
    """The JSON file of ``[[prompt, info], ...]`` rows a worker reads on its stdin, and how many
    rows it holds (the worker must return one value per row)."""

    path: Path
    n_rows: int


def run_worker(
    source: str,
    function: str,
    rows: RowsFile,
    limits: SandboxLimits,
    *,
    deadline: float | None = None,
) -> SandboxRun:
    """Run ``function`` from ``source`` on the JSON rows in ``rows.path`` in a confined worker.

    ``deadline`` (a :func:`time.monotonic` time) ends the round's budget: the worker is not
    started after it, and is killed at it. Failures come back as ``values=None`` and the reason.
    """
    if os.name != "posix":
        raise SandboxError("the feature sandbox needs a POSIX system (Linux, macOS) for its process limits")
    timeout, budget_cut = limits.wall_seconds, False
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return SandboxRun(None, error=ROUND_BUDGET_EXHAUSTED)
        timeout, budget_cut = min(timeout, remaining), remaining < timeout
    with open(rows.path, "rb") as stdin:
        process = subprocess.Popen(
            worker_command(worker_spec(source, function, limits)), stdin=stdin, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, cwd=rows.path.parent, env={"PATH": os.defpath, "LC_ALL": "C.UTF-8"},
            start_new_session=True, close_fds=True,
        )  # fmt: skip
    try:
        output, failure = _collect_output(process, timeout, max_bytes=32 * rows.n_rows + 8192)
    finally:
        cpu_seconds = _kill_and_reap(process)
    if failure == "timeout":
        reason = ROUND_BUDGET_EXHAUSTED if budget_cut else f"exceeded the wall-clock limit of {timeout:g} s"
        return SandboxRun(None, error=reason)
    if failure:
        return SandboxRun(None, error=failure)
    assert process.returncode is not None  # reaped above
    return _parse_worker_output(output, process.returncode, cpu_seconds, limits, rows.n_rows)


def _collect_output(process: subprocess.Popen[bytes], timeout: float, max_bytes: int) -> tuple[bytes, str]:
    """Read the worker's stdout until EOF, the deadline or ``max_bytes``; returns (bytes, failure)."""
    assert process.stdout is not None  # we created the pipe
    deadline = time.monotonic() + timeout
    fd = process.stdout.fileno()
    chunks: list[bytes] = []
    size = 0
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return b"", "timeout"
            if not selector.select(remaining):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks), ""
            size += len(chunk)
            if size > max_bytes:
                return b"", f"wrote more than {max_bytes} bytes of output"
            chunks.append(chunk)


def _kill_and_reap(process: subprocess.Popen[bytes]) -> float:
    """SIGKILL the worker's process group (it leads it), reap it; return the CPU seconds it used."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # the unreaped leader keeps the group id reserved
    cpu_seconds = math.nan
    try:
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        cpu_seconds = usage.ru_utime + usage.ru_stime
    except ChildProcessError:  # reaped elsewhere; the status is all there is
        process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return cpu_seconds


def _parse_worker_output(
    output: bytes, returncode: int, cpu_seconds: float, limits: SandboxLimits, n_rows: int
) -> SandboxRun:
    try:
        message = json.loads(output) if output else None
    except ValueError:
        message = None
    if not isinstance(message, dict):
        return SandboxRun(None, error=death_reason(returncode, cpu_seconds, limits))
    _warn_if_weakened(message)
    protections = message.get("protections")
    protections = {str(k): bool(v) for k, v in protections.items()} if isinstance(protections, dict) else {}
    if not message.get("ok"):
        error = str(message.get("error", "unknown worker error"))[:300]
        return SandboxRun(None, error=error, protections=protections)
    values = message.get("values")
    if not isinstance(values, list) or len(values) != n_rows:
        return SandboxRun(None, error="worker returned a malformed result", protections=protections)
    types = message.get("non_numeric_types")
    return SandboxRun(
        np.array([np.nan if v is None else v for v in values], dtype=np.float64),
        n_errors=int(message.get("n_errors", 0)),
        n_non_numeric=int(message.get("n_non_numeric", 0)),
        error=str(message.get("error", ""))[:300],
        n_non_finite=int(message.get("n_non_finite", 0)),
        non_numeric_types=tuple(str(t) for t in types) if isinstance(types, list) else (),
        protections=protections,
    )


_warned: set[str] = set()


def _warn_if_weakened(message: dict[str, Any]) -> None:
    """Log once per process if a worker could not apply a limit or a protection, or runs as root."""
    problems = [str(p) for p in message.get("unenforced", [])]
    if message.get("uid") == 0:
        problems.append("the worker runs as root")
    protections = message.get("protections")
    if isinstance(protections, dict):
        problems += [f"no {name} protection" for name in PROTECTIONS if not protections.get(name, True)]
    for problem in problems:
        if problem not in _warned:
            _warned.add(problem)
            logger.warning("feature sandbox weakened on this system: %s", problem)


def death_reason(returncode: int, cpu_seconds: float, limits: SandboxLimits) -> str:
    """Why a worker ended without a result, from its exit status and the CPU time it used."""
    if returncode >= 0:
        return f"worker exited with status {returncode} without a result"
    number = -returncode
    name = signal.Signals(number).name if number in signal.valid_signals() else f"signal {number}"
    used = f"{cpu_seconds:.1f} s of CPU time" if math.isfinite(cpu_seconds) else "unknown CPU time"
    at_cpu_limit = math.isfinite(cpu_seconds) and cpu_seconds >= limits.cpu_limit - 0.05
    if number == signal.SIGXCPU or (number == signal.SIGKILL and at_cpu_limit):
        return f"exceeded the CPU limit of {limits.cpu_limit} s (killed by {name} after {used})"
    if number == signal.SIGKILL:  # not the CPU limit: the system's OOM killer, an operator, ...
        return f"killed by signal {name} (after {used}, below the CPU limit of {limits.cpu_limit} s)"
    return f"killed by signal {name}"


def run_problem(run: SandboxRun, n_rows: int, limits: SandboxLimits) -> str:
    """Why a run's values are not usable, or '' if they are."""
    if run.values is None:
        return run.error
    if n_rows and run.n_errors > limits.max_error_fraction * n_rows:
        share = f"more than {limits.max_error_fraction:.0%}"
        return f"raised on {run.n_errors} of {n_rows} rows ({share}); first: {_error_text(run.error, limits)}"
    if n_rows and np.isnan(run.values).all():
        causes = "; ".join(_nan_causes(run, n_rows, limits))
        return f"returned no number on any of the {n_rows} rows: {causes}"
    return ""


def _error_text(error: str, limits: SandboxLimits) -> str:
    hint = f" (memory limit {limits.memory_mb} MB)" if error.startswith("MemoryError") else ""
    return f"{error}{hint}"


def _nan_causes(run: SandboxRun, n_rows: int, limits: SandboxLimits) -> list[str]:
    """What each row returned instead of a number: None, non-finite values, non-numbers, errors."""
    n_none = n_rows - run.n_errors - run.n_non_numeric - run.n_non_finite
    causes = []
    if run.n_non_finite:
        causes.append(f"returned non-finite values on {run.n_non_finite} of {n_rows} rows (NaN or inf)")
    if run.n_non_numeric:
        kinds = run.non_numeric_types or ("non-number",)
        kind = f"a {kinds[0]}" if len(kinds) == 1 else f"non-numbers ({', '.join(kinds)})"
        causes.append(f"returned {kind} on {run.n_non_numeric} of {n_rows} rows")
    if run.n_errors:
        causes.append(f"raised on {run.n_errors} of {n_rows} rows; first: {_error_text(run.error, limits)}")
    if n_none > 0:
        causes.append(f"returned None on {n_none} of {n_rows} rows")
    return causes


PROBE_SOURCE = "def probe(prompt, info):\n    return 1\n"


def probe_sandbox(limits: SandboxLimits | None = None) -> SandboxProbe:
    """Start one worker on a trivial function and report which protections it got."""
    with tempfile.TemporaryDirectory(prefix="mecharule-sandbox-") as tmp:
        rows_path = Path(tmp) / "rows.json"
        rows_path.write_text('[["", {}]]', encoding="utf-8")
        run = run_worker(
            PROBE_SOURCE, "probe", RowsFile(rows_path, 1), limits or SandboxLimits(wall_seconds=30.0)
        )
    if run.values is None:
        raise SandboxError(f"the sandbox worker does not start on this system: {run.error}")
    missing = tuple(f"no {name} protection" for name in PROTECTIONS if not run.protections.get(name))
    return SandboxProbe(run.protections, missing)
