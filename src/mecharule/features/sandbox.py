"""Run LLM-proposed feature functions safely, and turn them into :class:`Feature` objects.

A proposed feature is Python source defining ``def my_feature(prompt: str, info: dict) -> float |
None``. It crosses two walls before its values are used:

1. :func:`validate_feature_source` parses it (never executes it) and accepts only an allow-list of
   syntax: one top-level function with arguments ``(prompt, info)``, no imports, no class, ``with``,
   ``global``, ``yield`` or ``await``, no name or attribute that starts with ``_`` (so no dunder
   chain such as ``().__class__.__bases__``), no frame/generator introspection attributes, and no
   reference to ``eval``, ``exec``, ``open``, ``getattr``, ``type`` and friends.
2. The function runs in a separate, short-lived process (``sandbox_worker.py`` under
   ``python -I -S``, started by :mod:`mecharule.features.sandbox_process` in a session of its own)
   that drops root, forbids fork, file writes and new file descriptors (so no sockets), caps CPU
   time and memory, cannot signal, ptrace or open a socket (seccomp, where Linux allows it), sees
   only a small table of builtins plus ``math`` and ``re`` functions, and is killed with its whole
   process group after ``wall_seconds``. Each feature gets its own process, so one bad feature
   never costs the others their results; all proposals of one round share ``round_seconds``.

Values come back as JSON and are sanitised: bool → 0/1, None or a non-number → NaN ("not
applicable"), non-finite → NaN, |x| > 1e12 → clipped. An exception costs only its row (NaN, and
counted); a feature that fails on more than ``max_error_fraction`` of rows, or yields no number
at all, is rejected with its reason (which rows raised, returned None, non-finite values or
non-numbers).

Proposed features are evaluated in the sandbox ONCE per prompt table: the :class:`Feature`
returned by :func:`score_proposed_features` carries those precomputed values, and its ``compute``
refuses any other table (call :func:`score_proposed_features` again for a new table).
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mecharule.errors import DataError, SandboxError
from mecharule.features.base import Feature, FeatureKind
from mecharule.features.sandbox_process import (
    ROUND_BUDGET_EXHAUSTED,
    WORKER_PATH,
    RowsFile,
    SandboxLimits,
    SandboxProbe,
    SandboxRun,
    probe_sandbox,
    run_problem,
    run_worker,
)

logger = logging.getLogger(__name__)

__all__ = ["ROUND_BUDGET_EXHAUSTED", "WORKER_PATH", "FeatureColumns", "ProposedFeature", "Rejection",
           "RowsFile", "SandboxLimits", "SandboxProbe", "SandboxRun", "build_rows", "feature_name",
           "probe_sandbox", "run_feature_source", "score_proposed_features",
           "validate_feature_source"]  # fmt: skip

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
    """Why a proposed feature was not accepted (``stage``: which wall stopped it; ``round``: its
    proposal round)."""

    label: str
    stage: Literal["validation", "execution"]
    reason: str
    round: int = 0


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
    source: str,
    rows: RowsFile,
    limits: SandboxLimits,
    *,
    deadline: float | None = None,
    _unchecked: bool = False,
) -> SandboxRun:
    """Run one feature on the JSON rows in ``rows.path`` (``[[prompt, info], ...]``) in a worker.

    Validation errors raise :class:`SandboxError`; failures inside the worker are returned as a
    :class:`SandboxRun` with ``values=None`` and the reason. ``deadline`` (:func:`time.monotonic`)
    is the end of the round's time budget. ``_unchecked`` skips the AST check (tests use it to
    show that the process limits hold on their own); never use it otherwise.
    """
    function = _function_name_unchecked(source) if _unchecked else validate_feature_source(source)
    return run_worker(source, function, rows, limits, deadline=deadline)


def _function_name_unchecked(source: str) -> str:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "my_feature"
    names = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    return names[0] if names else "my_feature"


# -- from proposals to Features --------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureColumns:
    """How proposed features meet the prompt table's columns: ``info_columns`` form each row's
    ``info`` dict (None: every column but ``prompt``), and ``taken_names`` are feature names
    already in use (e.g. the seed features), which the accepted features never reuse."""

    info_columns: Sequence[str] | None = None
    taken_names: Collection[str] = ()


def score_proposed_features(
    sources: Sequence[ProposedFeature],
    prompts: pd.DataFrame,
    columns: FeatureColumns | None = None,
    *,
    limits: SandboxLimits | None = None,
    _unchecked: bool = False,
) -> tuple[list[Feature], list[Rejection]]:
    """Validate and run every proposal in the sandbox on ``prompts``; return (accepted, rejected).

    Rounds run one after the other; the proposals of one round share ``limits.round_seconds``.

    ``info`` for each row is a dict of the ``columns.info_columns`` (default: every column but
    ``prompt``) with JSON values. Accepted features keep the proposal order; their names are the
    labels made identifier-like and unique (also against ``columns.taken_names``, e.g. the seed
    features). Their ``compute`` returns the values computed here, for this table only.
    """
    columns = columns or FeatureColumns()
    limits = limits or SandboxLimits()
    rows = build_rows(prompts, columns.info_columns)
    names = _unique_names([p.label for p in sources], columns.taken_names)
    rejected: dict[int, Rejection] = {}
    runnable: list[int] = []
    for i, proposal in enumerate(sources):
        try:
            if not _unchecked:
                validate_feature_source(proposal.python_src)
            runnable.append(i)
        except SandboxError as exc:
            rejected[i] = Rejection(proposal.label, "validation", str(exc), proposal.round)
    runs = _run_all([sources[i] for i in runnable], rows, limits, _unchecked)
    accepted: list[Feature] = []
    for i, run in zip(runnable, runs, strict=True):
        reason = run_problem(run, len(rows), limits)
        if reason:
            rejected[i] = Rejection(sources[i].label, "execution", reason, sources[i].round)
            continue
        assert run.values is not None  # run_problem checked it
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
    proposals: list[ProposedFeature], rows: list[list[Any]], limits: SandboxLimits, unchecked: bool
) -> list[SandboxRun]:
    """One run per proposal, in order; round by round, each round within its time budget."""
    if not proposals:
        return []
    runs: dict[int, SandboxRun] = {}
    with tempfile.TemporaryDirectory(prefix="mecharule-sandbox-") as tmp:
        rows_path = Path(tmp) / "rows.json"
        rows_path.write_text(json.dumps(rows, ensure_ascii=False, allow_nan=False), encoding="utf-8")
        rows_file = RowsFile(rows_path, len(rows))
        for round_index in sorted({p.round for p in proposals}):
            members = [i for i, p in enumerate(proposals) if p.round == round_index]
            sources = [proposals[i].python_src for i in members]
            results = _run_round(sources, rows_file, limits, unchecked)
            runs.update(zip(members, results, strict=True))
    return [runs[i] for i in range(len(proposals))]


def _run_round(
    sources: list[str], rows: RowsFile, limits: SandboxLimits, unchecked: bool
) -> list[SandboxRun]:
    """Run one round's sources, ``n_jobs`` at a time, all before the round's deadline."""
    deadline = None if limits.round_seconds is None else time.monotonic() + limits.round_seconds
    n_jobs = limits.n_jobs or os.cpu_count() or 1

    def run(source: str) -> SandboxRun:
        return run_feature_source(source, rows, limits, deadline=deadline, _unchecked=unchecked)

    with ThreadPoolExecutor(max_workers=min(n_jobs, len(sources))) as pool:
        return list(pool.map(run, sources))


def _make_feature(proposal: ProposedFeature, name: str, values: np.ndarray, prompts: pd.DataFrame) -> Feature:
    values.setflags(write=False)
    not_applicable = (
        "the proposed function returned None, a non-finite value or a non-number, or raised"
        if np.isnan(values).any()
        else ""
    )
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
