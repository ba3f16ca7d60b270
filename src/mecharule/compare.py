"""``mecharule compare RUN_DIR...``: runs of different models, tasks, seeds or settings side by side.

Per run, from the files whose stage records stand: model, task, seed, accuracy, the behaviour
rules' held-out MCC against the permuted-label control, agonists and their share of the candidates
(sparsity), CHA's group evaluations, recall and cost against brute force when validated, HQ
anchored rules against both controls, and wall time. For every pair of runs of the same model, the
overlap of their agonist sets (Jaccard) with the shared units named. Writes ``comparison/``:
``runs.{md,csv}``, ``overlap.{md,csv}`` and ``index.html`` (tables and plots in the report's style).
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from mecharule.errors import RunDirError
from mecharule.io.rundir import RunDir, atomic_path, read_json
from mecharule.recomposition.text import kinds_text

SHARED_SHOWN = 12


def run_row(path: Path) -> dict[str, Any]:
    """The headline figures of one run directory (``None`` where its stage has not run)."""
    rundir = RunDir(path)
    if not rundir.file("summary.json").exists():
        raise RunDirError(f"{path} has no summary.json: finish the run (`mecharule run --out {path}`) first")
    summary = read_json(rundir.file("summary.json"))
    config = rundir.manifest().get("config") or {}
    localization = trusted_json(rundir, "localization/summary.json")
    candidates = sum(int(p.get("n_candidates") or 0) for p in (localization or {}).get("problems", []))
    accepted = sum(len(p.get("agonists") or []) for p in (localization or {}).get("problems", []))
    walls = summary.get("wall_seconds") or {}
    return {
        "run": path.name,
        "model": summary.get("model"),
        "task": summary.get("task"),
        "seed": config.get("seed"),
        "accuracy": summary.get("accuracy"),
        "rules": summary.get("n_rules"),
        "rules test MCC": _round(summary.get("rules_test_mcc")),
        "control test MCC": _round(summary.get("rules_control_test_mcc")),
        "agonists": summary.get("n_agonists"),
        "agonists / candidates": _round(accepted / candidates) if candidates else None,
        "group evaluations": summary.get("interventions"),
        "recall (all units)": _recall(summary.get("recall_all_units")),
        "cost vs brute force": _round(summary.get("cost_ratio")),
        "HQ rules": summary.get("hq_neurons_test_0.70"),
        "HQ, permuted control": summary.get("hq_neurons_fake_target_0.70"),
        "HQ, random units": summary.get("hq_neurons_random_units_0.70"),
        "recomposition": kinds_text(summary.get("recomposition") or {}) or None,
        "wall seconds": round(sum(float(v or 0) for v in walls.values()), 1),
    }


def agonist_set(path: Path) -> set[str]:
    localization = trusted_json(RunDir(path), "localization/summary.json") or {}
    return {str(a["unit"]) for p in localization.get("problems", []) for a in p.get("agonists") or []}


def overlap_rows(paths: Sequence[Path], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jaccard overlap of the agonist sets of every pair of runs of the same model."""
    sets = {path: agonist_set(path) for path in paths}
    out = []
    for (a, row_a), (b, row_b) in itertools.combinations(zip(paths, rows, strict=True), 2):
        if row_a["model"] != row_b["model"]:
            continue
        union, shared = sets[a] | sets[b], sorted(sets[a] & sets[b], key=_site_order)
        out.append(
            {
                "run A": a.name,
                "run B": b.name,
                "agonists A": len(sets[a]),
                "agonists B": len(sets[b]),
                "shared": len(shared),
                "Jaccard": round(len(shared) / len(union), 4) if union else None,
                "shared units": ", ".join(shared[:SHARED_SHOWN])
                + (" ..." if len(shared) > SHARED_SHOWN else ""),
            }
        )
    return out


def compare_runs(paths: Sequence[Path], out: Path) -> dict[str, pd.DataFrame]:
    """Write ``out/`` (tables and page) for the run directories ``paths``; returns the tables."""
    if len(paths) < 2:
        raise RunDirError("compare needs at least two run directories")
    rows = [run_row(Path(p)) for p in paths]
    tables = {
        "runs": pd.DataFrame(rows),
        "overlap": pd.DataFrame(
            overlap_rows([Path(p) for p in paths], rows),
            columns=["run A", "run B", "agonists A", "agonists B", "shared", "Jaccard", "shared units"],
        ),
    }
    from mecharule.report.tables import write_tables

    out.mkdir(parents=True, exist_ok=True)
    write_tables(tables, out)
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(comparison_page(tables), encoding="utf-8")
        tmp.chmod(0o644)
    return tables


def comparison_page(tables: dict[str, pd.DataFrame]) -> str:
    from mecharule.report.html import image, page, paragraph, section, table

    runs = tables["runs"]
    plots = [
        image(_bars(runs, column), f"{column} per run")
        for column in ("accuracy", "agonists", "rules test MCC")
    ]
    overlap = tables["overlap"]
    sections = [
        ("runs", "Runs", section("runs", "Runs", [table(runs), *plots])),
        (
            "overlap",
            "Agonist overlap",
            section(
                "overlap",
                "Agonist overlap (runs of the same model)",
                [table(overlap) if len(overlap) else paragraph("No two runs share a model.")],
            ),
        ),
    ]
    footer = f"Generated by mecharule compare on {time.strftime('%Y-%m-%d %H:%M:%S')}."
    return page("mecharule comparison", f"{len(runs)} runs", sections, footer)


def _bars(runs: pd.DataFrame, column: str) -> Figure:
    fig = Figure(figsize=(max(3.5, 0.9 * len(runs) + 1.5), 2.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    values = pd.to_numeric(runs[column], errors="coerce").fillna(0.0)
    ax.bar(runs["run"].astype(str), values, color="#4c72b0")
    ax.set_ylabel(column, fontsize=8)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def _site_order(unit: str) -> tuple[int, str, int]:
    """``L1.mlp[46]`` → (1, "mlp", 46): units in layer, then index order."""
    match = re.match(r"L(\d+)\.(\w+)\[(\d+)\]", unit)
    return (int(match.group(1)), match.group(2), int(match.group(3))) if match else (10**9, unit, 0)


def trusted_json(rundir: RunDir, name: str) -> dict[str, Any] | None:
    """A JSON artifact of the run when its stage record stands with it intact, else None."""
    return read_json(rundir.file(name)) if rundir.trusted(name) else None


def _recall(value: Any) -> Any:
    if isinstance(value, dict):  # by effect bin: "bin: recall" pairs
        return ", ".join(f"{k}: {v.get('recall')}" for k, v in value.items() if isinstance(v, dict))
    return value


def _round(value: Any, digits: int = 3) -> Any:
    return None if value is None else round(float(value), digits)


__all__ = ["agonist_set", "compare_runs", "overlap_rows", "run_row", "trusted_json"]
