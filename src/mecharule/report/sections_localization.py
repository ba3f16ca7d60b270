"""The report's ``localization`` section: the CHA search summary, each rule × regime problem (its
agonists, joint suppression and CHA decisions) and the search cost and recall versus brute force
(the validate stage).

A part whose stage has not run says so (``html.not_run``) instead of failing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from mecharule.report import plots
from mecharule.report import plots_localization as lplots
from mecharule.report.diagnostics import localization_warnings
from mecharule.report.html import (
    Raw,
    details,
    figures,
    heading,
    image,
    key_values,
    not_run,
    paragraph,
    section,
    table,
    warning_box,
)
from mecharule.report.load import RunArtifacts, problem_folder
from mecharule.report.tables import (
    all_units_recall_table,
    cha_vs_bruteforce_table,
    decision_counts,
    effect,
    fmt,
)

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


def _rate(value: Any) -> str:
    return fmt(value, 3)


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


def _problem_facts(problem: Mapping[str, Any], n_agonists: int) -> Raw:
    """The counts of one rule × regime search: prompts, candidates, evaluations, agonists."""
    return key_values(
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
            ("agonists", n_agonists),
            ("density k/N (agonists / candidates)", problem.get("density", "—")),
            (
                "audited singletons / groups tested unit by unit / non-monotone splits",
                f"{problem.get('audit_evaluations', '—')} / {problem.get('expanded_groups', '—')} / "
                f"{problem.get('nonmonotone_splits', '—')}",
            ),
            ("catastrophic units", ", ".join(problem.get("catastrophic") or []) or "none"),
        ]
    )


def _selectivity_figure(run: RunArtifacts, problem: Mapping[str, Any], key: str) -> list[str]:
    frame = lplots.singletons_frame(problem, run.traces.get(key) or [])
    if not len(frame):
        return []
    return [
        image(
            lplots.plot_selectivity(frame, run.tau, key),
            "How to read: one dot per unit ablated alone; right = it flips the rule's covered prompts, up = "
            "it flips unrelated ones. Agonists are coloured by layer, units tested and rejected are grey. "
            f"Dashed lines: τ = {run.tau:g}; below the dotted diagonal a unit is selective for the rule.",
        )
    ]


def _score_figure(run: RunArtifacts, problem: Mapping[str, Any], key: str) -> list[str]:
    frame = lplots.scored_agonists(problem)
    if not len(frame):
        return []
    scope = (
        " validation.json names the brute-force agonists without their attribution scores (and, inside "
        "the shortlist, without their effects), so only CHA's agonists are plotted."
        if run.validation is not None
        else ""
    )
    return [
        image(
            lplots.plot_score_vs_effect(frame, run.tau, key),
            "How to read: one marker per agonist; right = attribution scored it high, up = ablating it "
            "flips more covered prompts. A rising cloud (ρ > 0) means the attribution ranking predicts the "
            f"ablation effect; strong agonists at the far left were nearly left out of the shortlist.{scope}",
        )
    ]


def _map_figure(run: RunArtifacts, problem: Mapping[str, Any], key: str) -> list[str]:
    widths = lplots.layer_widths(problem, run.traces.get(key) or [])
    if not problem.get("agonists") or not widths:
        return []
    grid, layers, bin_size = lplots.effect_grid(problem, widths)
    cells = "unit" if bin_size == 1 else f"bin of {bin_size} units (its largest effect)"
    return [
        image(
            lplots.plot_effect_heatmap(grid, layers, bin_size, key),
            f"How to read: one row per layer, one column per {cells}; colour = covered flip rate of the "
            "agonist ablated alone, white = no agonist (or not searched). Clusters show where the rule is "
            "carried.",
        )
    ]


def _tree_figure(run: RunArtifacts, key: str) -> list[str]:
    counts = lplots.decision_table(run.traces.get(key) or [])
    if not len(counts):
        return []
    return [
        image(
            lplots.plot_search_tree(counts, key),
            "How to read: group evaluations per level of the search (from trace.jsonl), stacked by "
            "decision: blue groups were strong and split, grey ones pruned, green single units accepted, "
            "orange ones rejected. Above each bar: its total and the largest group (≤ n units). Tall "
            "single-unit bars mean CHA tested units one by one.",
        )
    ]


def _problem_figures(run: RunArtifacts, problem: Mapping[str, Any]) -> Raw:
    """The problem's plots, each only when its data exists."""
    key = str(problem.get("key", ""))
    return figures(
        [
            *_selectivity_figure(run, problem, key),
            *_score_figure(run, problem, key),
            *_map_figure(run, problem, key),
            *_tree_figure(run, key),
        ]
    )


def _warning_parts(run: RunArtifacts) -> list[str]:
    """A box per warning of the run's localization (``report.diagnostics``), or a note that there is none."""
    findings = localization_warnings(run)
    if not findings:
        return [paragraph("No warnings: the searches look sparse, monotone and selective.", "note")]
    return [
        heading(f"Warnings ({len(findings)})", 3, "localization-warnings"),
        *(warning_box(f.title, f.meaning, f.action, f.problem, f.anchor) for f in findings),
    ]


def _problem_parts(run: RunArtifacts, problem: Mapping[str, Any]) -> list[str]:
    key = str(problem.get("key", ""))
    parts: list[str] = [heading(f"{key}: {problem.get('rule', '')}", 3, f"problem-{problem_folder(key)}")]
    if problem.get("skipped"):
        return [*parts, paragraph(f"Skipped: {problem['skipped']}", "skipped")]
    agonists = list(problem.get("agonists") or [])
    parts += [_problem_facts(problem, len(agonists)), _problem_figures(run, problem)]
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
    parts += _warning_parts(run)
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
