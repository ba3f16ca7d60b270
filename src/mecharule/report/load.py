"""Read a run directory for the report, tolerating every stage after ``measure`` being absent.

Only ``behaviour.parquet`` is required. Every other artifact loads as ``None`` (or empty) when its
file is missing, so each report section can say "not run yet" instead of failing.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mecharule.errors import MecharuleError, RunDirError
from mecharule.io.rundir import RunDir, read_json, read_parquet

logger = logging.getLogger(__name__)

TRACE_FIELDS = (
    "level", "depth", "root", "size", "decision", "split_strategy", "memo_hit", "audit", "tau", "strong",
    "covered_rate", "unrelated_rate", "covered_changed", "covered_n", "unrelated_changed", "unrelated_n",
)  # fmt: skip
UNIT_INDEX = re.compile(r"\[(\d+)\]$")
DEFAULT_TAU = 0.2


@dataclass(frozen=True)
class RunArtifacts:
    """Everything the report reads from one run directory (``None`` = that stage has not run)."""

    path: Path
    manifest: dict[str, Any]
    behaviour: pd.DataFrame
    behaviour_meta: dict[str, Any]
    features: pd.DataFrame | None = None
    feature_defs: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, Any] | None = None
    localization: dict[str, Any] | None = None
    traces: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    validation: dict[str, Any] | None = None
    flips: pd.DataFrame | None = None
    neuron_rules: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    recomposition: dict[str, Any] | None = None

    @property
    def task_name(self) -> str:
        return str(self.behaviour_meta.get("task") or self._task_config.get("name") or "?")

    @property
    def task_options(self) -> dict[str, Any]:
        options = self.behaviour_meta.get("task_options")
        if options is None:
            options = self._task_config.get("options")
        return dict(options or {})

    @property
    def _task_config(self) -> dict[str, Any]:
        from mecharule.config import saved_section

        return saved_section(self.manifest.get("config") or {}, "task")

    @property
    def positive_label(self) -> str:
        return str(self.behaviour_meta.get("positive_label") or "positive")

    @property
    def model_name(self) -> str:
        model = self.manifest.get("model") or {}
        return str(model.get("name") or self.behaviour_meta.get("model") or "?")

    @property
    def problems(self) -> list[dict[str, Any]]:
        return list((self.localization or {}).get("problems") or [])

    def config_value(self, dotted: str, default: Any = None) -> Any:
        """A value of the saved config by its dotted key (``search.tau``), or ``default``."""
        node: Any = self.manifest.get("config") or {}
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def tau(self) -> float:
        """The search's τ: ``search.tau``, else the legacy ``localize.tau``, else 0.2."""
        for key in ("search.tau", "localize.tau"):
            value = self.config_value(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        return DEFAULT_TAU


def _optional_json(rundir: RunDir, name: str) -> dict[str, Any] | None:
    """A stage's JSON artifact, or None when its stage has not run or its record does not stand
    (an interrupted re-run's files are not shown as results)."""
    if not rundir.trusted(name):
        if rundir.file(name).exists():
            logger.warning("%s is not from a finished stage (see run.json); its section is skipped", name)
        return None
    return read_json(rundir.file(name))


def _optional_parquet(rundir: RunDir, name: str) -> pd.DataFrame | None:
    return read_parquet(rundir.file(name)) if rundir.trusted(name) else None


def parquet_provenance(path: Path) -> dict[str, Any]:
    """The JSON stored under the ``mecharule`` key of a Parquet file's schema metadata ({} if none)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"mecharule")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _compact(record: Mapping[str, Any]) -> dict[str, Any]:
    """The report's fields of one trace record: a singleton keeps its unit, a root the largest unit
    index it holds (how wide its layer is at least); other unit lists are dropped (they can be huge)."""
    out = {k: record.get(k) for k in TRACE_FIELDS}
    units = record.get("units") or []
    if len(units) == 1:
        out["unit"] = str(units[0])
    if record.get("depth") == 0 or len(units) == 1:
        indices = [int(m.group(1)) for m in map(UNIT_INDEX.search, map(str, units)) if m]
        out["max_index"] = max(indices, default=None)
    return out


def read_trace(path: Path) -> list[dict[str, Any]]:
    """The compact fields of a CHA query trace (``_compact``)."""
    records = []
    with path.open() as handle:
        for line in handle:
            if line.strip():
                records.append(_compact(json.loads(line)))
    return records


def problem_folder(key: str) -> str:
    """The localization sub-folder of a problem key ("R1/positive" → "R1_positive")."""
    return key.replace("/", "_")


def _traces(run_dir: Path, localization: Mapping[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    traces = {}
    for problem in (localization or {}).get("problems") or []:
        key = str(problem.get("key", ""))
        path = run_dir / "localization" / problem_folder(key) / "trace.jsonl"
        if key and path.exists():
            traces[key] = read_trace(path)
    return traces


def load_run(run_dir: Path) -> RunArtifacts:
    """Load every artifact of ``run_dir``; only ``behaviour.parquet`` (the measure stage) is required."""
    run_dir = Path(run_dir)
    behaviour_path = run_dir / "behaviour.parquet"
    if not behaviour_path.exists():
        raise RunDirError(
            f"{run_dir} has no behaviour.parquet; run `mecharule measure` (or `mecharule run`) "
            "with --out pointing at it before `mecharule report`"
        )
    rundir = RunDir(run_dir)
    manifest = rundir.manifest() if rundir.file("run.json").exists() else {}
    features_json = _optional_json(rundir, "features.json") or {}
    localization = _optional_json(rundir, "localization/summary.json")
    try:
        traces = _traces(run_dir, localization)
    except (OSError, json.JSONDecodeError, MecharuleError) as exc:
        logger.warning("could not read a localization trace (%s); decision counts are skipped", exc)
        traces = {}
    return RunArtifacts(
        path=run_dir,
        manifest=manifest,
        behaviour=read_parquet(behaviour_path, columns={"label": "b"}),
        behaviour_meta=parquet_provenance(behaviour_path),
        features=_optional_parquet(rundir, "features.parquet"),
        feature_defs={str(d.get("name")): d for d in features_json.get("features") or []},
        rules=_optional_json(rundir, "rules.json"),
        localization=localization,
        traces=traces,
        validation=_optional_json(rundir, "validation.json"),
        flips=_optional_parquet(rundir, "flips.parquet"),
        neuron_rules=_optional_json(rundir, "neuron_rules.json"),
        summary=_optional_json(rundir, "summary.json"),
        recomposition=_optional_json(rundir, "recomposition.json"),
    )
