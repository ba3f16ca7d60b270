"""The ``rules`` stage: behaviour + features of a run directory → ``rules.json`` and plots.

Target. By default the rules describe FAILURES (``target="fail"``: rows with ``label == False``),
because the point of the method is to say *when* the model goes wrong and then find the neurons
that carry it; ``target="success"`` describes ``label == True`` instead. Either way the target is
binary and the rules predict target = True.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mecharule.errors import ConfigError, DataError
from mecharule.io.rundir import BEHAVIOUR_COLUMNS, RunDir, read_json, read_parquet, write_json
from mecharule.rules.plots import plot_coverage_precision, plot_shap_importance, save_figure
from mecharule.rules.scoring import RuleReport, extract_and_score
from mecharule.rules.text import Glossary

logger = logging.getLogger(__name__)

TARGETS = {"fail": "label == False (the model fails)", "success": "label == True (the model succeeds)"}
PLOTS_DIR = "rules_plots"


def load_rule_inputs(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict[str, Any]]]:
    """Read behaviour.parquet, features.parquet and features.json; check they agree."""
    run = RunDir(run_dir)
    run.require("behaviour.parquet", "features.parquet", stage="measure` and `mecharule measure")
    behaviour = read_parquet(run.file("behaviour.parquet"), columns=BEHAVIOUR_COLUMNS)
    features = read_parquet(run.file("features.parquet"))
    defs: dict[str, dict[str, Any]] = {}
    if run.file("features.json").exists():
        listed = read_json(run.file("features.json"), required=("features",))["features"]
        if not isinstance(listed, list) or not all(isinstance(d, dict) and "name" in d for d in listed):
            raise DataError(
                f"{run.file('features.json')} is damaged ('features' is not a list of named definitions); "
                "re-run `mecharule measure` on the run directory"
            )
        defs = {d["name"]: d for d in listed}
    missing_cols = [c for c in ("label", "split") if c not in behaviour.columns]
    if missing_cols:
        raise DataError(f"behaviour.parquet lacks columns {missing_cols}; it needs label (bool) and split")
    if len(behaviour) != len(features):
        raise DataError(
            f"behaviour.parquet has {len(behaviour)} rows but features.parquet has {len(features)}; "
            "they must describe the same prompts in the same order"
        )
    splits = set(behaviour["split"].unique()) - {"train", "test"}
    if splits:
        raise DataError(f"split must be 'train' or 'test'; found {sorted(map(str, splits))}")
    undescribed = [c for c in features.columns if c not in defs]
    if defs and undescribed:
        logger.warning("features without a definition in features.json: %s", undescribed)
    return behaviour, features, defs


def behaviour_target(label: pd.Series, target: str) -> np.ndarray:
    if target not in TARGETS:
        raise ConfigError(f"target={target!r} is invalid; allowed: {', '.join(TARGETS)}")
    values = label.to_numpy()
    if values.dtype != bool:
        raise DataError(f"behaviour.parquet label must be bool, got dtype {values.dtype}")
    return ~values if target == "fail" else values


def feature_glossary(defs: Mapping[str, Mapping[str, Any]], features: pd.DataFrame) -> Glossary:
    """Descriptions and kinds from features.json; features that can be NaN are those declared
    with a ``not_applicable`` condition or holding a NaN in the table."""
    has_nan = features.isna().any(axis=0)
    missing = {
        str(c) for c in features.columns if has_nan[c] or (defs.get(str(c)) or {}).get("not_applicable")
    }
    return Glossary(
        descriptions={n: str(d.get("description") or n) for n, d in defs.items()},
        kinds={n: str(d.get("kind") or "numeric") for n, d in defs.items()},
        missing_features=frozenset(missing),
    )


def report_payload(report: RuleReport, glossary: Glossary, target: str, y: np.ndarray) -> dict[str, Any]:
    """The rules.json body (without schema_version)."""
    body = report.to_dict(glossary)
    for i, item in enumerate(body["disjuncts"], start=1):
        item["id"] = f"R{i}"
    importance = report.shap_importance
    return {
        "stage": "rules",
        "target": {"name": target, "definition": TARGETS[target], "prevalence": float(y.mean())},
        "n_rows": len(y),
        **body,
        "shap_importance": [] if importance is None else importance.reset_index().to_dict(orient="records"),
        "plots": [f"{PLOTS_DIR}/shap_importance.png", f"{PLOTS_DIR}/coverage_precision.png"],
    }


def extract_behaviour_rules(
    run_dir: Path,
    *,
    seed: int = 0,
    extractor: str = "ruleshap",
    options: dict[str, Any] | None = None,
    target: str = "fail",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Extract behaviour rules for a run directory; write rules.json and rules_plots/; return the
    rules.json content. ``options`` are the extractor's parameters. ``progress`` is ticked after
    each of the :data:`STEPS` (inputs read, rules and their control fitted, plots and file written)."""
    tick = progress or (lambda n: None)
    run_dir = Path(run_dir)
    behaviour, features, defs = load_rule_inputs(run_dir)
    y = behaviour_target(behaviour["label"], target)
    is_test = (behaviour["split"] == "test").to_numpy()
    tick(1)
    report = extract_and_score(features, y, is_test, extractor=extractor, seed=seed, options=options)
    tick(1)
    glossary = feature_glossary(defs, features)
    payload = report_payload(report, glossary, target, y)
    write_rule_plots(run_dir / PLOTS_DIR, report, payload, glossary)
    write_json(run_dir / "rules.json", payload)
    tick(1)
    return read_json(run_dir / "rules.json")


STEPS = 3  # the steps extract_behaviour_rules ticks


def write_rule_plots(
    plots_dir: Path, report: RuleReport, payload: Mapping[str, Any], glossary: Glossary
) -> None:
    """Write the SHAP importance bar chart and the per-rule coverage/precision scatter."""
    descriptions = glossary.descriptions
    if report.shap_importance is not None:
        save_figure(
            plot_shap_importance(report.shap_importance, descriptions), plots_dir / "shap_importance.png"
        )
    save_figure(plot_coverage_precision(payload["disjuncts"]), plots_dir / "coverage_precision.png")


def _fmt(metrics: Mapping[str, Any] | None, key: str) -> str:
    return "  n/a" if not metrics else f"{metrics[key]:5.2f}"


def format_rules_table(rules_json: Mapping[str, Any], width: int = 70) -> str:
    """A plain-text table of the behaviour rules (for the CLI)."""
    target = rules_json.get("target", {})
    lines = [f"Behaviour rules for target: {target.get('definition', '?')}"]
    header = f"{'id':<4} {'rule':<{width}} {'cov':>5} {'prec':>5} {'rec':>5} {'MCC':>5} {'MCCall':>6}"
    lines += [header, "-" * len(header)]
    for item in rules_json.get("disjuncts", []):
        text = item["readable"]
        text = text if len(text) <= width else text[: width - 3] + "..."
        test, full = item["metrics"]["test"], item["metrics"]["all"]
        lines.append(
            f"{item['id']:<4} {text:<{width}} {_fmt(test, 'coverage')} {_fmt(test, 'precision')} "
            f"{_fmt(test, 'recall')} {_fmt(test, 'mcc')} {_fmt(full, 'mcc'):>6}"
        )
    if not rules_json.get("disjuncts"):
        lines.append(rules_json.get("reason") or "no rule selected")
    metrics = rules_json["metrics"]
    control = rules_json.get("control") or {}
    test, train, full = (_fmt(metrics[k], "mcc").strip() for k in ("test", "train", "all"))
    lines.append("-" * len(header))
    lines.append(f"rule set (OR): test MCC {test}, train MCC {train}, all rows (descriptive) {full}")
    if control:
        fake = _fmt(control["metrics"]["test"], "mcc").strip()
        lines.append(f"fake-target control (permuted labels): test MCC {fake}")
    lines.append("metrics columns are on held-out test rows; MCCall uses all rows (not held out)")
    return "\n".join(lines)
