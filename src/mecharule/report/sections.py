"""One function per report section: each takes the run's artifacts and returns the section's HTML.

A section whose stage has not run says so (``html.not_run``) instead of failing. Section ids are
stable: ``overview``, ``behaviour``, ``rules``, ``localization``, ``anchored-rules``, ``tables``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mecharule.errors import MecharuleError
from mecharule.report import plots
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
from mecharule.report.load import RunArtifacts, problem_folder
from mecharule.report.tables import (
    FLIP_TARGETS,
    accuracy_by_group,
    agonists_table,
    all_units_recall_table,
    behaviour_rules_table,
    binned_accuracy,
    cha_vs_bruteforce_table,
    compact_agonists,
    decision_counts,
    effect,
    flip_rates_table,
    fmt,
    hq_counts_table,
    pct,
    union_flip_coverage,
)

logger = logging.getLogger(__name__)

RESERVED_COLUMNS = ("prompt", "answer", "label", "split")
BIN_NOTE = (
    "Scopes: 'recall in shortlist' counts brute-force agonists among the attribution candidates only; "
    "'recall, all units' counts them among EVERY unit of the searched layers (all of them brute-forced "
    "when few, else the candidates plus a seeded sample of the others, scaled up with a 95 % "
    "Clopper–Pearson interval); 'shortlist recall' is the candidates' share of those. Effect = the "
    "observed flip rate of the unit ablated alone, the larger of its covered and unrelated slices; a "
    "bin '≥ 0.5' holds effects in [0.5, 1]. Cost = CHA group evaluations (audits included) / singleton "
    "ablations of the same candidates; 'CHA saves? no' when that ratio is ≥ 0.9 (dense agonists)."
)
MAX_AGONIST_ROWS = 25
MAX_ANCHORED_ROWS = 60


def _rate(value: Any) -> str:
    return fmt(value, 3)


# -- overview ---------------------------------------------------------------------------------------
def _accuracy(behaviour: pd.DataFrame, split: str | None = None) -> str:
    rows = behaviour if split is None else behaviour[behaviour["split"] == split]
    return f"{rows['label'].mean():.3f} ({int(rows['label'].sum())}/{len(rows)})" if len(rows) else "—"


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
    parts: list[str] = [key_values(facts)]
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
    if run.summary:
        headline = [
            (k, json.dumps(v) if isinstance(v, dict | list) else v)
            for k, v in run.summary.items()
            if k != "schema_version"
        ]
        parts += [heading("Headline numbers (summary.json)"), key_values(headline)]
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


# -- localization -----------------------------------------------------------------------------------
def _effect_text(agonist: Mapping[str, Any], side: str) -> str:
    e = effect(agonist, side)
    bounds = f"[{_rate(e.get('lower'))}, {_rate(e.get('upper'))}]"
    return f"{e.get('flips')}/{e.get('n')} = {_rate(e.get('rate'))} {bounds}"


def _agonist_display(agonists: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [
        {
            "unit": a.get("unit"),
            "covered flips (rate [CP lower, upper])": _effect_text(a, "covered"),
            "unrelated flips (rate [CP lower, upper])": _effect_text(a, "unrelated"),
            "max upper": a.get("max_upper"),
            "selectivity": a.get("selectivity"),
            "contrast lower": a.get("contrast_lower"),
            "score rank": a.get("score_rank"),
        }
        for a in agonists
    ]
    frame = pd.DataFrame(rows)
    return frame.sort_values("selectivity", ascending=False, kind="stable") if len(frame) else frame


def _suppression_parts(suppression: Mapping[str, Any]) -> list[str]:
    rows = []
    for side in ("covered", "unrelated"):
        entry = suppression.get(side) or {}
        if entry:
            before, after = entry.get("positive_rate_before"), entry.get("positive_rate_after")
            drop = (
                before - after if isinstance(before, float | int) and isinstance(after, float | int) else None
            )
            rows.append(
                {
                    "slice": side,
                    "prompts": entry.get("n"),
                    "positive rate before": before,
                    "positive rate after": after,
                    "drop": drop,
                }
            )
    if not rows:
        return []
    parts: list[str] = [
        heading(f"Joint suppression ({len(suppression.get('agonists') or [])} agonists ablated together)", 4),
        table(pd.DataFrame(rows)),
    ]
    union = suppression.get("union_flip_coverage") or {}
    if union:
        parts.append(
            paragraph(
                f"Union flip coverage: covered {_rate(union.get('covered'))}, unrelated "
                f"{_rate(union.get('unrelated'))}. {union.get('note', '')}",
                "note",
            )
        )
    return parts


def _problem_parts(run: RunArtifacts, problem: Mapping[str, Any]) -> list[str]:
    key = str(problem.get("key", ""))
    parts: list[str] = [heading(f"{key}: {problem.get('rule', '')}", 3, f"problem-{problem_folder(key)}")]
    if problem.get("skipped"):
        return [*parts, paragraph(f"Skipped: {problem['skipped']}", "skipped")]
    agonists = list(problem.get("agonists") or [])
    parts.append(
        key_values(
            [
                ("regime", problem.get("regime", "—")),
                (
                    "covered / unrelated prompts",
                    f"{problem.get('n_covered', '—')} / {problem.get('n_unrelated', '—')}",
                ),
                ("dropped (label not reproduced)", problem.get("dropped_unreproduced", "—")),
                ("candidate units", problem.get("n_candidates", "—")),
                ("group evaluations (interventions)", problem.get("group_evaluations", "—")),
                ("levels", problem.get("levels", "—")),
                ("agonists", len(agonists)),
                ("density k/N (agonists / candidates)", problem.get("density", "—")),
                (
                    "audited singletons / groups tested unit by unit / non-monotone splits",
                    f"{problem.get('audit_evaluations', '—')} / {problem.get('expanded_groups', '—')} / "
                    f"{problem.get('nonmonotone_splits', '—')}",
                ),
                ("catastrophic units", ", ".join(problem.get("catastrophic") or []) or "none"),
            ]
        )
    )
    if problem.get("cha_cannot_save"):
        parts.append(
            paragraph(
                "CHA cannot save here: it spent at least 0.9 of what brute force costs, because strong "
                "units are dense among the candidates (it then tests them one by one).",
                "note",
            )
        )
    if agonists:
        folder = problem_folder(key)
        parts += [
            heading("Agonists (by selectivity = covered rate − unrelated rate)", 4),
            table(
                _agonist_display(agonists),
                max_rows=MAX_AGONIST_ROWS,
                more_note=f"All agonists: localization/{folder}/agonists.csv.",
            ),
        ]
    parts += _suppression_parts(problem.get("suppression") or {})
    counts = decision_counts(run.traces.get(key) or [])
    if len(counts):
        parts.append(details("CHA decisions per level (from trace.jsonl)", [table(counts)]))
    return parts


def _validation_parts(run: RunArtifacts) -> list[str]:
    parts: list[str] = [heading("Search cost and recall versus brute force", 3, "cost-vs-brute-force")]
    validation = run.validation
    if validation is None:
        return [*parts, not_run("validate (brute force)", f"mecharule validate {run.path}")]
    wall, forwards = validation.get("wall_seconds") or {}, validation.get("forwards") or {}
    parts += [
        image(
            plots.plot_search_cost(validation),
            "CHA group evaluations vs brute-force singleton ablations per "
            "rule × regime, and recall of brute-force agonists by effect bin.",
            wide=True,
        ),
        table(cha_vs_bruteforce_table(validation)),
        heading("Recall over every unit of the searched layers", 4, "recall-all-units"),
        table(all_units_recall_table(validation)),
        paragraph(BIN_NOTE, "note"),
        key_values(
            [
                (
                    "wall seconds CHA / brute force",
                    f"{fmt(wall.get('cha'))} / {fmt(wall.get('brute_force'))}",
                ),
                (
                    "forward passes CHA / brute force",
                    f"{fmt(forwards.get('cha'))} / {fmt(forwards.get('brute_force'))}",
                ),
            ]
        ),
    ]
    note = (validation.get("cost") or {}).get("note")
    if note:
        parts.append(paragraph(str(note), "note"))
    return parts


def localization_section(run: RunArtifacts) -> Raw:
    summary = run.localization
    if summary is None:
        return section(
            "localization", "Localization (CHA)", [not_run("localize", f"mecharule localize {run.path}")]
        )
    parts: list[str] = [
        key_values(
            [
                ("distinct agonists", summary.get("n_agonists")),
                ("group evaluations", summary.get("group_evaluations")),
                ("oracle calls (levels batched)", summary.get("oracle_calls")),
                ("forward passes", summary.get("forwards")),
                ("rows generated after screening", summary.get("generated_rows")),
                ("wall seconds", summary.get("wall_seconds")),
                ("budget reached (truncated)", summary.get("truncated")),
            ]
        )
    ]
    problems = run.problems
    figs: list[str] = []
    if any(p.get("agonists") for p in problems):
        figs.append(
            image(plots.plot_agonists_per_layer(problems), "Agonists per layer for each rule × regime.")
        )
    if any((p.get("suppression") or {}).get("covered") for p in problems):
        figs.append(
            image(
                plots.plot_suppression(problems),
                "Positive rate on covered and unrelated prompts "
                "before and after ablating all of a problem's agonists together.",
            )
        )
    parts.append(figures(figs))
    for problem in problems:
        parts += _problem_parts(run, problem)
    parts += _validation_parts(run)
    return section("localization", "Localization (CHA)", parts)


# -- neuron-anchored rules --------------------------------------------------------------------------
def _anchored_rows(neuron_rules: Mapping[str, Any]) -> pd.DataFrame:
    rows = []
    for agonist in neuron_rules.get("agonists") or []:
        best = agonist.get("best") or {}
        rates = agonist.get("flip_rates") or {}
        rows.append(
            {
                "site": agonist.get("site"),
                "target": FLIP_TARGETS.get(str(best.get("target")), best.get("target")),
                "best anchored rule": best.get("readable") or "no rule (too few flips or low coverage)",
                "test MCC": best.get("test_mcc") if best.get("target") else None,
                "fake-target control test MCC": (agonist.get("best_control") or {}).get("test_mcc"),
                "all-rows MCC (descriptive)": best.get("all_mcc") if best.get("target") else None,
                "coverage": best.get("coverage") if best.get("target") else None,
                **{f"flip {label}": rates.get(key) for key, label in FLIP_TARGETS.items()},
                "HQ": agonist.get("hq"),
            }
        )
    frame = pd.DataFrame(rows)
    if len(frame):
        order = frame["test MCC"].astype(float).fillna(-2.0)
        frame = frame.loc[order.sort_values(ascending=False, kind="stable").index]
    return frame


def anchored_section(run: RunArtifacts) -> Raw:
    neuron_rules, flips = run.neuron_rules, run.flips
    if neuron_rules is None and flips is None:
        return section(
            "anchored-rules", "Neuron-anchored rules", [not_run("anchor", f"mecharule anchor {run.path}")]
        )
    parts: list[str] = []
    if neuron_rules is not None:
        parts.append(
            key_values(
                [
                    ("agonists anchored", neuron_rules.get("n_agonists")),
                    ("evaluated prompts", neuron_rules.get("n_eval")),
                    ("evaluation sample", neuron_rules.get("evaluation", "—")),
                    ("dropped (label not reproduced)", neuron_rules.get("dropped_unreproduced", "—")),
                    ("HQ threshold (test MCC)", neuron_rules.get("hq_threshold", "—")),
                ]
            )
        )
    if flips is not None and "baseline" in flips.columns:
        union = union_flip_coverage(flips)
        t2f, f2t = union["true_to_false"], union["false_to_true"]
        parts.append(
            paragraph(
                f"On {union['n_eval']} evaluated prompts, {pct(*t2f)} of the baseline-"
                f"{run.positive_label} prompts flip 1→0 and {pct(*f2t)} of the others flip 0→1 under at "
                f"least one of the {union['n_agonists']} agonists ablated alone (a union of single "
                "ablations, not a joint ablation)."
            )
        )
    figs: list[str] = []
    rates = flip_rates_table(neuron_rules, flips)
    if len(rates):
        figs.append(
            image(
                plots.plot_flip_rates(rates),
                "Flip rate of each agonist ablated alone on the "
                "evaluation sample, split into 1→0 and 0→1 flips.",
            )
        )
    if neuron_rules is None:
        return section(
            "anchored-rules",
            "Neuron-anchored rules",
            [*parts, figures(figs), not_run("anchored rule extraction", f"mecharule anchor {run.path}")],
        )
    hq = hq_counts_table(neuron_rules)
    if len(hq):
        figs.append(
            image(
                plots.plot_hq_counts(hq),
                "Agonists whose best anchored rule reaches MCC ≥ t, "
                "against the fake-target and random-neuron controls (dashed).",
            )
        )
    parts += [
        figures(figs),
        heading("Best anchored rule per agonist"),
        table(
            _anchored_rows(neuron_rules),
            max_rows=MAX_ANCHORED_ROWS,
            more_note="All agonists: neuron_rules.json and report/tables/agonists.csv.",
        ),
        paragraph(
            "Best rule = the flip target (any, 1→0, 0→1) whose rule has the highest held-out test "
            f"MCC among rules covering at least {fmt(neuron_rules.get('min_coverage'))} of the rows; "
            f"HQ = that test MCC ≥ {fmt(neuron_rules.get('hq_threshold', 0.7), 2)}. The control column "
            "reruns the same extraction on permuted flip labels.",
            "note",
        ),
    ]
    return section("anchored-rules", "Neuron-anchored rules", parts)


# -- paper-style tables -----------------------------------------------------------------------------
TABLE_TITLES = {
    "hq_counts": "High-quality neuron-anchored rules by MCC threshold (paper Table 2)",
    "cha_vs_bruteforce": "CHA versus brute force: budget and recall by effect bin (paper Table 3)",
    "behaviour_rules": "Behaviour rules",
    "agonists": "Agonists of every rule × regime",
}
TABLE_STAGES = {
    "hq_counts": ("anchor", "mecharule anchor"),
    "cha_vs_bruteforce": ("validate (brute force)", "mecharule validate"),
    "behaviour_rules": ("rules", "mecharule rules"),
    "agonists": ("localize", "mecharule localize"),
}


def report_tables(run: RunArtifacts) -> dict[str, pd.DataFrame]:
    """The paper-style tables the run's artifacts allow (missing stages give no table)."""
    tables: dict[str, pd.DataFrame] = {}
    if run.neuron_rules is not None:
        tables["hq_counts"] = hq_counts_table(run.neuron_rules)
    if run.validation is not None:
        tables["cha_vs_bruteforce"] = cha_vs_bruteforce_table(run.validation)
        tables["recall_all_units"] = all_units_recall_table(run.validation)
    if run.rules is not None:
        tables["behaviour_rules"] = behaviour_rules_table(run.rules)
    if run.localization is not None:
        tables["agonists"] = agonists_table(run.problems, run.neuron_rules)
    return tables


def tables_section(run: RunArtifacts, tables: Mapping[str, pd.DataFrame]) -> Raw:
    parts: list[str] = [
        paragraph("Each table is also written as Markdown and CSV under report/tables/.", "note")
    ]
    for name, title in TABLE_TITLES.items():
        parts.append(heading(title, 3, f"table-{name}"))
        if name not in tables:
            stage, command = TABLE_STAGES[name]
            parts.append(not_run(stage, f"{command} {run.path}"))
            continue
        parts.append(paragraph(f"Files: report/tables/{name}.md, report/tables/{name}.csv", "note"))
        shown = compact_agonists(tables[name]) if name == "agonists" else tables[name]
        parts.append(
            table(
                shown,
                max_rows=40 if name == "agonists" else None,
                more_note="The CSV holds every row.",
            )
        )
    return section("tables", "Tables", parts)
