"""Run LLM-proposed feature functions safely, and turn them into :class:`Feature` objects.

A proposed feature is Python source defining ``def my_feature(prompt: str, info: dict) -> float |
None``. It crosses two walls before its values are used:

1. :func:`validate_feature_source` parses it (never executes it) and accepts only an allow-list of
   syntax: one top-level function with arguments ``(prompt, info)``, no imports, no class, ``with``,
   ``global``, ``yield`` or ``await``, no name or attribute that starts with ``_`` (so no dunder
   chain such as ``().__class__.__bases__``), no frame/generator introspection attributes, and no
   reference to ``eval``, ``exec``, ``open``, ``getattr``, ``type`` and friends.
2. The function runs in a separate, short-lived process (``sandbox_worker.py`` under
   ``python -I -S``) that drops root, forbids fork, file writes and new file descriptors (so no
   sockets), caps CPU time and memory, sees only a small table of builtins plus ``math`` and ``re``
   functions, and is killed with its whole process group after ``wall_seconds``. Each feature gets
   its own process, so one bad feature never costs the others their results.

Values come back as JSON and are sanitised: bool → 0/1, None or a non-number → NaN ("not
applicable"), non-finite → NaN, |x| > 1e12 → clipped. A feature that fails on too many rows, or
yields no number at all, is rejected with its reason.

Proposed features are evaluated in the sandbox ONCE per prompt table: the :class:`Feature`
returned by :func:`score_proposed_features` carries those precomputed values, and its ``compute``
refuses any other table (call :func:`score_proposed_features` again for a new table).
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mecharule.errors import ConfigError, DataError, SandboxError
from mecharule.features.base import Feature, FeatureKind

logger = logging.getLogger(__name__)

WORKER_PATH = Path(__file__).with_name("sandbox_worker.py")
MAX_SOURCE_CHARS = 4000
MAX_SOURCE_LINES = 60
MAX_AST_NODES = 1000
FUNCTION_ARGS = ("prompt", "info")

_OPERATORS = (
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift,
    ast.BitOr, ast.BitXor, ast.BitAnd, ast.And, ast.Or, ast.Not, ast.Invert, ast.UAdd, ast.USub,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Is, ast.IsNot, ast.In, ast.NotIn,
)  # fmt: skip
ALLOWED_NODES: frozenset[type[ast.AST]] = frozenset({
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign, ast.AugAssign,
    ast.AnnAssign, ast.For, ast.While, ast.If, ast.Break, ast.Continue, ast.Pass, ast.Expr, ast.Try,
    ast.ExceptHandler, ast.Raise, ast.Assert, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare,
    ast.IfExp, ast.Call, ast.keyword, ast.Constant, ast.Name, ast.Load, ast.Store, ast.Attribute,
    ast.Subscript, ast.Slice, ast.List, ast.Tuple, ast.Dict, ast.Set, ast.ListComp, ast.SetComp,
    ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.JoinedStr, ast.FormattedValue,
    ast.Starred, ast.Lambda, ast.NamedExpr, *_OPERATORS,
})  # fmt: skip
FORBIDDEN_NAMES = frozenset({
    "exec", "eval", "open", "compile", "globals", "locals", "vars", "getattr", "setattr", "delattr",
    "hasattr", "input", "breakpoint", "help", "memoryview", "type", "object", "super", "dir", "id",
    "print", "exit", "quit", "classmethod", "staticmethod", "property", "builtins", "os", "sys",
    "subprocess", "socket", "importlib", "ctypes",
})  # fmt: skip
# Attributes that reach frames, code objects or the class hierarchy without a leading underscore.
FORBIDDEN_ATTRIBUTE_PREFIXES = ("gi_", "cr_", "ag_", "f_", "tb_", "co_")
FORBIDDEN_ATTRIBUTES = frozenset({"mro", "format", "format_map", "func_globals", "func_code"})


@dataclass(frozen=True)
class ProposedFeature:
    """A feature proposed by an LLM: readable label and description, source, proposal round."""

    label: str
    description: str
    python_src: str
    round: int = 0


@dataclass(frozen=True)
class Rejection:
    """Why a proposed feature was not accepted (``stage``: which wall stopped it)."""

    label: str
    stage: Literal["validation", "execution"]
    reason: str


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for ONE feature's worker process (all rows of the table).

    ``cpu_seconds`` defaults to ``ceil(wall_seconds)``; ``memory_mb`` is added to the worker's
    start-up size; a feature raising on more than ``max_error_fraction`` of rows is rejected;
    ``n_jobs`` workers run at once (default: the number of CPUs).
    """

    wall_seconds: float = 20.0
    cpu_seconds: int | None = None
    memory_mb: int = 256
    recursion_limit: int = 200
    max_error_fraction: float = 0.5
    n_jobs: int | None = None

    def __post_init__(self) -> None:
        checks = [
            ("wall_seconds", self.wall_seconds > 0, "> 0"),
            ("cpu_seconds", self.cpu_seconds is None or self.cpu_seconds >= 1, "None or >= 1"),
            ("memory_mb", self.memory_mb >= 16, ">= 16"),
            ("recursion_limit", 50 <= self.recursion_limit <= 10_000, "between 50 and 10000"),
            ("max_error_fraction", 0.0 <= self.max_error_fraction <= 1.0, "between 0 and 1"),
            ("n_jobs", self.n_jobs is None or self.n_jobs >= 1, "None or >= 1"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"SandboxLimits.{name} must be {allowed}, got {getattr(self, name)!r}")

    @property
    def cpu_limit(self) -> int:
        return self.cpu_seconds if self.cpu_seconds is not None else max(1, math.ceil(self.wall_seconds))


@dataclass(frozen=True)
class SandboxRun:
    """Raw outcome of one worker: ``values`` (NaN = not applicable) or None with ``error`` set."""

    values: np.ndarray | None
    n_errors: int = 0
    n_non_numeric: int = 0
    error: str = ""


# -- wall 1: static validation ----------------------------------------------------------------------


def validate_feature_source(source: str) -> str:
    """Check proposed source against the allow-list without running it; return the function name.

    Raises :class:`SandboxError` naming the first offending construct and its line.
    """
    if not isinstance(source, str):
        raise SandboxError(f"feature source must be a str, got {type(source).__name__}")
    if len(source) > MAX_SOURCE_CHARS:
        raise SandboxError(f"source has {len(source)} characters; at most {MAX_SOURCE_CHARS} are allowed")
    if len(source.splitlines()) > MAX_SOURCE_LINES:
        raise SandboxError(f"source has more than {MAX_SOURCE_LINES} lines; keep the function short")
    try:
        tree = ast.parse(source, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise SandboxError(f"source does not parse: {exc}") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_AST_NODES:
        raise SandboxError(f"source has {len(nodes)} syntax nodes; at most {MAX_AST_NODES} are allowed")
    function = _single_function(tree)
    for node in nodes:
        reason = _node_violation(node)
        if reason:
            raise SandboxError(f"line {getattr(node, 'lineno', '?')}: {reason}")
    return function.name


def _single_function(tree: ast.Module) -> ast.FunctionDef:
    body = list(tree.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # a module docstring
    if len(body) != 1 or not isinstance(body[0], ast.FunctionDef):
        kinds = ", ".join(type(node).__name__ for node in body) or "nothing"
        raise SandboxError(f"source must define exactly one top-level function and nothing else; got {kinds}")
    function = body[0]
    args = function.args
    names = tuple(arg.arg for arg in args.args)
    if names != FUNCTION_ARGS or args.posonlyargs or args.vararg or args.kwonlyargs or args.kwarg:
        raise SandboxError(
            f"function {function.name!r} must take exactly (prompt, info); got ({ast.unparse(args)})"
        )
    if args.defaults:
        raise SandboxError(f"function {function.name!r} must not have default argument values")
    return function


def _node_violation(node: ast.AST) -> str:
    """Why ``node`` is not allowed, or '' if it is."""
    if type(node) not in ALLOWED_NODES:
        return f"{type(node).__name__} is not allowed in a feature function"
    if isinstance(node, ast.FunctionDef | ast.Lambda) and getattr(node, "decorator_list", None):
        return "decorators are not allowed"
    if isinstance(node, ast.Name):
        return _name_violation(node.id)
    if isinstance(node, ast.arg | ast.FunctionDef):
        return _name_violation(node.arg if isinstance(node, ast.arg) else node.name)
    if isinstance(node, ast.ExceptHandler) and node.name:
        return _name_violation(node.name)
    if isinstance(node, ast.keyword) and node.arg:
        return _name_violation(node.arg)
    if isinstance(node, ast.Attribute):
        attr = node.attr
        if attr.startswith("_"):
            return f"attribute {attr!r} starts with '_' (no private or dunder access)"
        if attr.startswith(FORBIDDEN_ATTRIBUTE_PREFIXES) or attr in FORBIDDEN_ATTRIBUTES:
            return f"attribute {attr!r} is not allowed (introspection)"
    return ""


def _name_violation(name: str) -> str:
    if name.startswith("_") and name != "_":
        return f"name {name!r} starts with '_' (no private or dunder names)"
    if name in FORBIDDEN_NAMES:
        return f"name {name!r} is not available (no eval/exec/open/getattr/type/imports)"
    return ""


# -- wall 2: the confined worker process ------------------------------------------------------------


def run_feature_source(
    source: str, rows_path: Path, n_rows: int, limits: SandboxLimits, *, _unchecked: bool = False
) -> SandboxRun:
    """Run one feature on the JSON rows in ``rows_path`` (``[[prompt, info], ...]``) in a worker.

    Validation errors raise :class:`SandboxError`; failures inside the worker are returned as a
    :class:`SandboxRun` with ``values=None`` and the reason. ``_unchecked`` skips the AST check
    (tests use it to show that the process limits hold on their own); never use it otherwise.
    """
    if os.name != "posix":
        raise SandboxError("the feature sandbox needs a POSIX system (Linux, macOS) for its process limits")
    function = _function_name_unchecked(source) if _unchecked else validate_feature_source(source)
    spec = {
        "source": source,
        "function": function,
        "cpu_seconds": limits.cpu_limit,
        "memory_mb": limits.memory_mb,
        "recursion_limit": limits.recursion_limit,
    }
    command = [sys.executable, "-I", "-S", str(WORKER_PATH), json.dumps(spec)]
    with open(rows_path, "rb") as stdin:
        process = subprocess.Popen(
            command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=rows_path.parent, env={"PATH": os.defpath, "LC_ALL": "C.UTF-8"},
            process_group=0, close_fds=True,
        )  # fmt: skip
    try:
        output, failure = _collect_output(process, limits.wall_seconds, max_bytes=32 * n_rows + 8192)
    finally:
        _kill_process_group(process)
    if failure:
        return SandboxRun(None, error=failure)
    return _parse_worker_output(output, process.returncode, limits, n_rows)


def _function_name_unchecked(source: str) -> str:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "my_feature"
    names = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    return names[0] if names else "my_feature"


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
                return b"", f"exceeded the wall-clock limit of {timeout:g} s"
            if not selector.select(remaining):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks), ""
            size += len(chunk)
            if size > max_bytes:
                return b"", f"wrote more than {max_bytes} bytes of output"
            chunks.append(chunk)


def _kill_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's process group (it is the leader), then reap the worker."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # the unreaped leader keeps the group id reserved
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _parse_worker_output(output: bytes, returncode: int, limits: SandboxLimits, n_rows: int) -> SandboxRun:
    try:
        message = json.loads(output) if output else None
    except ValueError:
        message = None
    if not isinstance(message, dict):
        return SandboxRun(None, error=_death_reason(returncode, limits))
    _warn_if_weakened(message)
    if not message.get("ok"):
        return SandboxRun(None, error=str(message.get("error", "unknown worker error"))[:300])
    values = message.get("values")
    if not isinstance(values, list) or len(values) != n_rows:
        return SandboxRun(None, error="worker returned a malformed result")
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return SandboxRun(
        array,
        n_errors=int(message.get("n_errors", 0)),
        n_non_numeric=int(message.get("n_non_numeric", 0)),
        error=str(message.get("error", ""))[:300],
    )


_warned: set[str] = set()


def _warn_if_weakened(message: dict[str, Any]) -> None:
    """Log once per process if a worker could not apply a limit or still runs as root."""
    problems = [str(p) for p in message.get("unenforced", [])]
    if message.get("uid") == 0:
        problems.append("the worker runs as root")
    for problem in problems:
        if problem not in _warned:
            _warned.add(problem)
            logger.warning("feature sandbox weakened on this system: %s", problem)


def _death_reason(returncode: int, limits: SandboxLimits) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        if -returncode == signal.SIGXCPU:
            return f"exceeded the CPU limit of {limits.cpu_limit} s ({name})"
        return f"worker was killed by {name} (CPU limit {limits.cpu_limit} s or memory limit)"
    return f"worker exited with status {returncode} without a result"


# -- from proposals to Features --------------------------------------------------------------------


def score_proposed_features(
    sources: Sequence[ProposedFeature],
    prompts: pd.DataFrame,
    info_columns: Sequence[str] | None = None,
    *,
    limits: SandboxLimits | None = None,
    taken_names: Collection[str] = (),
    _unchecked: bool = False,
) -> tuple[list[Feature], list[Rejection]]:
    """Validate and run every proposal in the sandbox on ``prompts``; return (accepted, rejected).

    ``info`` for each row is a dict of the ``info_columns`` (default: every column but
    ``prompt``) with JSON values. Accepted features keep the proposal order; their names are the
    labels made identifier-like and unique (also against ``taken_names``, e.g. the seed
    features). Their ``compute`` returns the values computed here, for this table only.
    """
    limits = limits or SandboxLimits()
    rows = build_rows(prompts, info_columns)
    names = _unique_names([p.label for p in sources], taken_names)
    rejected: dict[int, Rejection] = {}
    runnable: list[int] = []
    for i, proposal in enumerate(sources):
        try:
            if not _unchecked:
                validate_feature_source(proposal.python_src)
            runnable.append(i)
        except SandboxError as exc:
            rejected[i] = Rejection(proposal.label, "validation", str(exc))
    runs = _run_all([sources[i].python_src for i in runnable], rows, limits, _unchecked)
    accepted: list[Feature] = []
    for i, run in zip(runnable, runs, strict=True):
        reason = _execution_problem(run, len(rows), limits)
        if reason:
            rejected[i] = Rejection(sources[i].label, "execution", reason)
            continue
        assert run.values is not None  # _execution_problem checked it
        accepted.append(_make_feature(sources[i], names[i], run.values, prompts))
    for i in sorted(rejected):
        logger.info("rejected proposed feature %r (%s): %s", rejected[i].label, rejected[i].stage,
                    rejected[i].reason)  # fmt: skip
    return accepted, [rejected[i] for i in sorted(rejected)]


def build_rows(prompts: pd.DataFrame, info_columns: Sequence[str] | None) -> list[list[Any]]:
    """``[[prompt, info], ...]`` with JSON-safe info values (NaN/NA → None, numpy → Python)."""
    if "prompt" not in prompts.columns:
        raise DataError(f"the prompt table needs a 'prompt' column; it has {list(prompts.columns)}")
    columns = [c for c in prompts.columns if c != "prompt"] if info_columns is None else list(info_columns)
    missing = [c for c in columns if c not in prompts.columns]
    if missing:
        available = list(prompts.columns)
        raise DataError(f"info_columns {missing} are not in the prompt table; available: {available}")
    texts = [str(p) for p in prompts["prompt"]]
    records = prompts[columns].to_dict(orient="records") if columns else [{} for _ in texts]
    return [
        [text, {str(k): _json_safe(v) for k, v in record.items()}]
        for text, record in zip(texts, records, strict=True)
    ]


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_safe(v) for v in value]
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def _run_all(
    sources: list[str], rows: list[list[Any]], limits: SandboxLimits, unchecked: bool
) -> list[SandboxRun]:
    if not sources:
        return []
    with tempfile.TemporaryDirectory(prefix="mecharule-sandbox-") as tmp:
        rows_path = Path(tmp) / "rows.json"
        rows_path.write_text(json.dumps(rows, ensure_ascii=False, allow_nan=False), encoding="utf-8")
        n_jobs = limits.n_jobs or os.cpu_count() or 1

        def run(source: str) -> SandboxRun:
            return run_feature_source(source, rows_path, len(rows), limits, _unchecked=unchecked)

        with ThreadPoolExecutor(max_workers=min(n_jobs, len(sources))) as pool:
            return list(pool.map(run, sources))


def _execution_problem(run: SandboxRun, n_rows: int, limits: SandboxLimits) -> str:
    if run.values is None:
        return run.error
    if n_rows and run.n_errors > limits.max_error_fraction * n_rows:
        return f"raised on {run.n_errors} of {n_rows} rows; first: {run.error}"
    if n_rows and np.isnan(run.values).all():
        detail = f" ({run.error})" if run.error else " (returned None everywhere)"
        return f"returned no number on any of the {n_rows} rows{detail}"
    return ""


def _make_feature(proposal: ProposedFeature, name: str, values: np.ndarray, prompts: pd.DataFrame) -> Feature:
    values.setflags(write=False)
    not_applicable = "the proposed function returned None (or failed)" if np.isnan(values).any() else ""
    return Feature(
        name=name,
        description=proposal.description or proposal.label,
        compute=PrecomputedValues(name, values, tuple(str(p) for p in prompts["prompt"]), proposal),
        kind=_infer_kind(values),
        not_applicable=not_applicable,
        origin="proposed",
    )


@dataclass(frozen=True)
class PrecomputedValues:
    """A Feature ``compute`` that returns sandbox results for the one table they were computed on.

    ``proposal`` keeps the source, so a run can store it beside the feature definitions.
    """

    name: str
    values: np.ndarray
    prompts: tuple[str, ...]
    proposal: ProposedFeature

    def __call__(self, table: pd.DataFrame) -> np.ndarray:
        same = len(table) == len(self.prompts) and tuple(str(p) for p in table["prompt"]) == self.prompts
        if not same:
            raise DataError(
                f"proposed feature {self.name!r} was evaluated in the sandbox on another prompt table "
                f"({len(self.prompts)} rows); call score_proposed_features on this table to compute it"
            )
        return self.values.copy()


def _infer_kind(values: np.ndarray) -> FeatureKind:
    finite = values[~np.isnan(values)]
    if finite.size and np.isin(finite, (0.0, 1.0)).all():
        return "binary"
    if finite.size and (finite >= 0).all() and (finite == np.round(finite)).all():
        return "count"
    return "numeric"


def feature_name(label: str) -> str:
    """Identifier-like column name for a label: lowercase, non-alphanumeric runs → '_'."""
    name = re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_") or "feature"
    return f"f_{name}" if name[0].isdigit() else name


def _unique_names(labels: Sequence[str], taken: Collection[str]) -> list[str]:
    used = set(taken)
    names = []
    for label in labels:
        base = name = feature_name(label)
        k = 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        names.append(name)
    return names
