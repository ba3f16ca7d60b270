"""The report's run-level sections: ``overview`` (model, task, prompts, stages, headline numbers),
``behaviour`` (share of the positive label per group and by the top-SHAP features, failing
examples) and ``rules`` (the behaviour rules and their scores beside the fake-target control).

Each section function takes the run's artifacts and returns the section's HTML; a section whose
stage has not run says so (``html.not_run``) instead of failing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mecharule.errors import MecharuleError
from mecharule.report import plots
from mecharule.report.diagnostics import localization_warnings
from mecharule.report.html import (
    Raw,
    code,
    details,
    figures,
    heading,
    image,
    key_values,
    not_run,
    paragraph,
    section,
    table,
)
from mecharule.report.load import RunArtifacts
from mecharule.report.tables import accuracy_by_group, behaviour_rules_table, binned_accuracy, fmt

logger = logging.getLogger(__name__)

RESERVED_COLUMNS = ("prompt", "answer", "label", "split")


# -- overview ---------------------------------------------------------------------------------------
def _accuracy(behaviour: pd.DataFrame, split: str | None = None) -> str:
    rows = behaviour if split is None else behaviour[behaviour["split"] == split]
    return f"{rows['label'].mean():.3f} ({int(rows['label'].sum())}/{len(rows)})" if len(rows) else "—"


HEADLINE_LABELS = {
    "n_rules": "behaviour rules",
    "rules_test_mcc": "rule set: test MCC (held out)",
    "rules_control_test_mcc": "fake-target control: test MCC",
    "n_agonists": "distinct agonists (CHA)",
    "interventions": "CHA group evaluations (interventions)",
    "recall_all_units": "recall over every unit, by regime and effect bin",
    "shortlist_recall": "shortlist recall (candidates' share of the agonists), by regime and effect bin",
    "recall_in_shortlist": "recall within the shortlist (vs brute force)",
    "cost_ratio": "cost: CHA / brute-force evaluations",
    "cost_ratio_max": "cost: worst problem's CHA / brute-force ratio",
    "wall_time_ratio": "wall time: CHA / brute force",
    "n_anchored": "agonists anchored",
    "hq_neurons_test_0.70": "HQ anchored rules (test MCC ≥ 0.70)",
    "hq_neurons_fake_target_0.70": "HQ rules, fake-target control (≥ 0.70)",
    "hq_neurons_random_units_0.70": "HQ rules, random-unit control (≥ 0.70)",
    "wall_seconds": "wall seconds per stage",
}
HEADLINE_SKIP = (  # versions, and what the facts above already show
    "schema_version", "schema_version_of_inputs", "model", "task", "n_prompts", "accuracy", "recall_scope",
)  # fmt: skip
RECALL_SCOPE = (
    "Recall over every unit: CHA's agonists among every unit of the searched layers (sampled outside "
    "the shortlist when the layers are large), by observed effect bin; shortlist recall: the share of "
    "those agonists that were among the candidates; recall within the shortlist: against brute force "
    "over the candidates only."
)


def _edge(key: str) -> str:
    """A key of a per-effect-bin record ("0.5" → "effect ≥ 0.5"); other keys as they are."""
    try:
        return f"effect ≥ {float(key):g}"
    except ValueError:
        return key


def _readable(key: str, value: Any) -> Any:
    """A headline value for a reader: nested records flattened to "name value" phrases."""
    if isinstance(value, Mapping):
        if key == "wall_seconds":
            total = sum(float(v) for v in value.values() if isinstance(v, int | float))
            stages = ", ".join(f"{k} {fmt(v, 1)}" for k, v in value.items())
            return f"{stages} (total {total:.1f})"
        if any(isinstance(v, Mapping) for v in value.values()):
            return "; ".join(f"{k}: {_readable(k, v)}" for k, v in value.items())
        return ", ".join(f"{_edge(k)} {fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value


def headline_rows(summary: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``summary.json`` as (readable label, readable value) rows; unknown keys with spaces for "_"."""
    rows = []
    for key, value in summary.items():
        if key in HEADLINE_SKIP:
            continue
        rows.append((HEADLINE_LABELS.get(key, key.replace("_", " ")), _readable(key, value)))
    return rows


def _headline_parts(run: RunArtifacts) -> list[str]:
    if not run.summary:
        return []
    rows = headline_rows(run.summary)
    parts: list[str] = [heading("Headline numbers"), key_values(rows)]
    if "recall_all_units" in run.summary:
        parts.append(paragraph(RECALL_SCOPE, "note"))
    return parts


def _warning_count(run: RunArtifacts) -> list[str]:
    """One line pointing at the localization warnings, when there are any."""
    n = len(localization_warnings(run))
    if not n:
        return []
    return [
        Raw(
            f'<p><span class="warn-count">{n} warning{"s" if n > 1 else ""}</span> about the localization: '
            'see <a href="#localization-warnings">Localization, warnings</a>.</p>'
        )
    ]


def overview_section(run: RunArtifacts) -> Raw:
    behaviour = run.behaviour
    model = run.manifest.get("model") or {}
    n_train = int((behaviour["split"] == "train").sum())
    facts = [
        ("model", run.model_name),
        ("model path", model.get("path") or "—"),
        ("task", run.task_name),
        ("task options", json.dumps(run.task_options, sort_keys=True) if run.task_options else "—"),
        ("positive behaviour (label True)", run.positive_label),
        ("prompts", f"{len(behaviour)} ({n_train} train, {len(behaviour) - n_train} test)"),
        (f"share {run.positive_label}, all prompts", _accuracy(behaviour)),
        (f"share {run.positive_label}, test prompts", _accuracy(behaviour, "test")),
        ("seed", run.manifest.get("seed", "—")),
        ("mecharule version", run.manifest.get("package_version", "—")),
    ]
    parts: list[str] = [key_values(facts), *_warning_count(run), *_headline_parts(run)]
    stages = run.manifest.get("stages") or {}
    if stages:
        frame = pd.DataFrame(
            [
                {
                    "stage": name,
                    "wall seconds": record.get("wall_seconds"),
                    "finished at": record.get("finished_at"),
                    "config hash": record.get("config_hash"),
                    "outputs": ", ".join(record.get("outputs") or []),
                }
                for name, record in stages.items()
            ]
        )
        parts += [heading("Stages"), table(frame)]
    return section("overview", "Overview", parts)


# -- behaviour --------------------------------------------------------------------------------------
def group_column(run: RunArtifacts) -> str | None:
    """The task's group column (from the task registry), else a low-cardinality metadata column."""
    from mecharule.tasks.base import make_task

    try:
        column = make_task(run.task_name, run.task_options).group_column
    except (MecharuleError, TypeError, ValueError, KeyError, OSError) as exc:
        logger.info("task %r not rebuilt for the report (%s); guessing its group column", run.task_name, exc)
        column = None
    if column and column in run.behaviour.columns:
        return str(column)
    for name in run.behaviour.columns:
        values = run.behaviour[name]
        if name not in RESERVED_COLUMNS and values.dtype == object and 1 < values.nunique() <= 20:
            return str(name)
    return None


def top_shap_features(run: RunArtifacts, k: int = 2) -> list[str]:
    """The k most important features by SHAP that have more than two distinct values (binary
    features usually restate the group column)."""
    if run.rules is None or run.features is None:
        return []
    importance = sorted(run.rules.get("shap_importance") or [], key=lambda r: -float(r.get("mean_abs") or 0))
    chosen: list[str] = []
    for record in importance:
        name = str(record.get("feature"))
        if name in run.features.columns and run.features[name].nunique() > 2:
            chosen.append(name)
        if len(chosen) == k:
            break
    return chosen


def _examples(behaviour: pd.DataFrame, n: int = 8) -> pd.DataFrame:
    """A seeded sample of failing prompts (test rows when there are any), in table order."""
    failing = behaviour[~behaviour["label"]]
    if (failing["split"] == "test").any():
        failing = failing[failing["split"] == "test"]
    sample = failing.sample(min(n, len(failing)), random_state=0).sort_index()
    columns = [c for c in behaviour.columns if c not in ("label", "split")][:8]
    out = sample[columns].copy()
    for column in ("prompt", "answer"):
        if column in out.columns:
            out[column] = out[column].astype(str).map(lambda s: s if len(s) <= 160 else s[:157] + "...")
    return out


def behaviour_section(run: RunArtifacts) -> Raw:
    parts: list[str] = []
    figs: list[str] = []
    column = group_column(run)
    group_table = Raw("")
    if column:
        by_group = accuracy_by_group(run.behaviour, column)
        figs.append(
            image(
                plots.plot_accuracy_by_group(by_group, column, run.positive_label),
                f"Share {run.positive_label} per {column}, train and test rows (n = prompts per group).",
            )
        )
        group_table = table(by_group.rename(columns={"group": column}))
    features = top_shap_features(run)
    table_of_features = run.features if run.features is not None else pd.DataFrame()
    for name in features:
        description = str((run.feature_defs.get(name) or {}).get("description") or name)
        binned = binned_accuracy(table_of_features[name], run.behaviour["label"])
        figs.append(
            image(
                plots.plot_binned_accuracy(binned, f"{description} ({name})", run.positive_label),
                f"Share {run.positive_label} by a top-SHAP feature: {description} ({name}); "
                "all prompts, values or quantile bins; — = not applicable.",
            )
        )
    parts += [figures(figs), group_table]
    if not features:
        parts.append(
            paragraph(
                "Behaviour by the most important features appears once the rules stage has "
                "run (it ranks the features by SHAP importance).",
                "note",
            )
        )
    if (~run.behaviour["label"]).any():
        parts += [
            heading(f"Examples where the model is not {run.positive_label}"),
            table(_examples(run.behaviour)),
        ]
    return section("behaviour", "Behaviour", parts)


# -- behaviour rules --------------------------------------------------------------------------------
def _scope_rows(metrics: Mapping[str, Any], control: Mapping[str, Any] | None) -> pd.DataFrame:
    notes = {"test": "held out (primary)", "train": "in-sample", "all": "descriptive, not held out"}
    rows = []
    for scope, note in notes.items():
        m = metrics.get(scope) or {}
        c = ((control or {}).get("metrics") or {}).get(scope) or {}
        rows.append(
            {
                "scope": f"{scope}: {note}",
                "rows": m.get("n"),
                "coverage": m.get("coverage"),
                "precision": m.get("precision"),
                "recall": m.get("recall"),
                "F1": m.get("f1"),
                "MCC": m.get("mcc"),
                "fake-target control MCC": c.get("mcc") if control else None,
            }
        )
    return pd.DataFrame(rows)


def rules_section(run: RunArtifacts) -> Raw:
    rules = run.rules
    if rules is None:
        return section("rules", "Behaviour rules", [not_run("rules", f"mecharule rules {run.path}")])
    target = rules.get("target") or {}
    parts: list[str] = [
        key_values(
            [
                ("target (the rules predict)", target.get("definition") or target.get("name") or "—"),
                ("target prevalence", target.get("prevalence")),
                ("extractor", rules.get("extractor", "—")),
                ("train / test rows", f"{rules.get('n_train', '—')} / {rules.get('n_test', '—')}"),
            ]
        )
    ]
    if rules.get("reason"):
        parts.append(paragraph(f"Extractor note: {rules['reason']}", "note"))
    parts += [
        heading("Rule set (OR of the rules) by scope, beside the fake-target control"),
        table(_scope_rows(rules.get("metrics") or {}, rules.get("control"))),
        paragraph(
            "Test rows are held out: the rules were fitted and selected on train rows only. Train and "
            "all-rows scores are descriptive, not held out. The control reruns the same pipeline on "
            "labels permuted with the run seed; its MCC should be near 0.",
            "note",
        ),
        heading("Rules"),
        table(behaviour_rules_table(rules)),
    ]
    canonical = [
        f"<li>{code(str(d.get('id', '')))} {code(str(d.get('text', '')))}</li>"
        for d in rules.get("disjuncts") or []
    ]
    if canonical:
        parts.append(details("Exact rule text (canonical thresholds)", [f"<ul>{''.join(canonical)}</ul>"]))
    captions = {
        "shap_importance": "Feature importance (SHAP) on the training rows",
        "coverage_precision": "Coverage vs precision of each rule on the test rows",
    }
    figs = [
        image((run.path / str(plot)).read_bytes(), f"{captions.get(Path(plot).stem, plot)} ({plot})")
        for plot in rules.get("plots") or []
        if (run.path / str(plot)).exists()
    ]
    parts.insert(1, figures(figs))
    return section("rules", "Behaviour rules", parts)
