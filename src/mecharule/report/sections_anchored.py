"""The report's ``anchored-rules`` section: the flips of each agonist ablated alone and the best
neuron-anchored rule per agonist (the anchor stage), beside the fake-target and random-neuron
controls.

A part whose stage has not run says so (``html.not_run``) instead of failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from mecharule.report import plots
from mecharule.report.html import (
    Raw,
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
from mecharule.report.tables import (
    FLIP_TARGETS,
    count_at,
    flip_rates_table,
    fmt,
    hq_counts_table,
    is_missing,
    pct,
    union_flip_coverage,
)

MAX_ANCHORED_ROWS = 60


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


def _anchoring_facts(neuron_rules: Mapping[str, Any] | None) -> list[str]:
    """The anchor stage's counts and settings, when its rules were extracted."""
    if neuron_rules is None:
        return []
    return [
        key_values(
            [
                ("agonists anchored", neuron_rules.get("n_agonists")),
                ("evaluated prompts", neuron_rules.get("n_eval")),
                ("evaluation sample", neuron_rules.get("evaluation", "—")),
                ("dropped (label not reproduced)", neuron_rules.get("dropped_unreproduced", "—")),
                ("HQ threshold (test MCC)", neuron_rules.get("hq_threshold", "—")),
            ]
        )
    ]


def _union_flip_parts(flips: pd.DataFrame | None, positive_label: str) -> list[str]:
    """The share of prompts that flip under at least one agonist ablated alone (paper Table 1)."""
    if flips is None or "baseline" not in flips.columns:
        return []
    union = union_flip_coverage(flips)
    t2f, f2t = union["true_to_false"], union["false_to_true"]
    return [
        paragraph(
            f"On {union['n_eval']} evaluated prompts, {pct(*t2f)} of the baseline-"
            f"{positive_label} prompts flip 1→0 and {pct(*f2t)} of the others flip 0→1 under at "
            f"least one of the {union['n_agonists']} agonists ablated alone (a union of single "
            "ablations, not a joint ablation)."
        )
    ]


def _flip_rate_figures(neuron_rules: Mapping[str, Any] | None, flips: pd.DataFrame | None) -> list[str]:
    """The flip-rate plot of the agonists ablated alone, when there are rates to plot."""
    rates = flip_rates_table(neuron_rules, flips)
    if not len(rates):
        return []
    return [
        image(
            plots.plot_flip_rates(rates),
            "Flip rate of each agonist ablated alone on the evaluation sample, split into 1→0 and 0→1 flips.",
        )
    ]


def _all_zero(hq: pd.DataFrame) -> bool:
    """Every HQ count of the table (agonists and controls, every scope and threshold) is 0 or missing."""
    counts = hq[[c for c in hq.columns if str(c).startswith("t = ")]].to_numpy().ravel().tolist()
    return all(is_missing(v) or float(v) == 0 for v in counts)


def _mcc_rows(neuron_rules: Mapping[str, Any]) -> list[tuple[str, list[float] | None, str]]:
    """Strips of ``plots.plot_mcc_against_controls``: agonists, permuted flips, random units."""
    agonists = list(neuron_rules.get("agonists") or [])
    ruled = [a for a in agonists if (a.get("best") or {}).get("target")]
    best = [float(a["best"]["test_mcc"]) for a in ruled if not is_missing(a["best"].get("test_mcc"))]
    control = [
        float(c["test_mcc"])
        for c in ((a.get("best_control") or {}) for a in ruled)
        if c.get("target") and not is_missing(c.get("test_mcc"))
    ]
    random = (neuron_rules.get("controls") or {}).get("random_neurons") or {}
    at_threshold = count_at((random.get("hq_counts") or {}).get("test"), 0.70)
    n_random = len(random.get("units") or [])
    random_note = (
        f"no per-unit MCC stored; {fmt(at_threshold)} of {n_random} units reach 0.70" if random else "not run"
    )
    no_rule = len(agonists) - len(ruled)
    return [
        (f"agonists ({len(best)})", best, f"{no_rule} without a rule" if no_rule else ""),
        (f"permuted flips ({len(control)})", control, "" if control else "no control rule"),
        (f"random units ({n_random})", None, random_note),
    ]


def _mcc_figure(neuron_rules: Mapping[str, Any]) -> list[str]:
    rows = _mcc_rows(neuron_rules)
    if not rows[0][1] and not rows[1][1]:
        return []
    threshold = float(neuron_rules.get("hq_threshold") or 0.7)
    return [
        image(
            plots.plot_mcc_against_controls(rows, threshold),
            "How to read: no agonist reaches an HQ rule, so this shows how far each falls short: one dot "
            "per unit, its best rule's held-out test MCC; agonists (top) against the same extraction on "
            "permuted flips and on random units. Agonists clearly right of the controls still carry a "
            "rule-like signal; overlapping strips mean none.",
        )
    ]


def _hq_count_figures(neuron_rules: Mapping[str, Any]) -> list[str]:
    """The plot of high-quality anchored rules by MCC threshold, when there are counts to plot; when
    every count is 0, the distribution of the best test MCC against the controls instead."""
    hq = hq_counts_table(neuron_rules)
    if not len(hq):
        return []
    if _all_zero(hq):
        return _mcc_figure(neuron_rules)
    return [
        image(
            plots.plot_hq_counts(hq),
            "Agonists whose best anchored rule reaches MCC ≥ t, "
            "against the fake-target and random-neuron controls (dashed).",
        )
    ]


def _best_rule_parts(neuron_rules: Mapping[str, Any]) -> list[str]:
    """The table of the best anchored rule per agonist and the note that defines it."""
    return [
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


def anchored_section(run: RunArtifacts) -> Raw:
    neuron_rules, flips = run.neuron_rules, run.flips
    if neuron_rules is None and flips is None:
        return section(
            "anchored-rules", "Neuron-anchored rules", [not_run("anchor", f"mecharule anchor {run.path}")]
        )
    parts = [*_anchoring_facts(neuron_rules), *_union_flip_parts(flips, run.positive_label)]
    figs = _flip_rate_figures(neuron_rules, flips)
    if neuron_rules is None:
        extraction_not_run = not_run("anchored rule extraction", f"mecharule anchor {run.path}")
        return section("anchored-rules", "Neuron-anchored rules", [*parts, figures(figs), extraction_not_run])
    figs += _hq_count_figures(neuron_rules)
    parts += [figures(figs), *_best_rule_parts(neuron_rules)]
    return section("anchored-rules", "Neuron-anchored rules", parts)
