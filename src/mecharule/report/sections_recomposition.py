"""The report's ``recomposition`` section: how each rule's agonists work together.

Per rule: the joint effect of all its agonists against the sum and the union of their effects
alone (and the composition this makes, with its sign test), the smallest greedy set reaching each
share of the joint effect, and its curve; the pairs with the largest interactions; the agonists
shared by several rules (``recomposition.json``, written by the recompose stage).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from mecharule.report.html import Raw, figures, image, not_run, paragraph, section, table
from mecharule.report.load import RunArtifacts

PAIRS_SHOWN = 5  # per rule, by |interaction|
MEANING = (
    "Each rule's agonists ablated alone, all together and in pairs, on the rule's own prompts "
    "(effect = share of covered prompts whose label flips). redundant: together they flip "
    "fewer prompts than the sum of their effects alone (they carry the same flips); "
    "cancelling: together they undo flips some member causes alone; synergistic: "
    "together they flip prompts no member flips alone (backups); additive: no difference the "
    "sign test can tell; the two counts of prompts show what a kind sums up (a set can both overlap "
    "and need several units on other prompts). Greedy sets add, at each step, the agonist that "
    "raises the joint effect most; an agonist whose effect appears only with a partner is found "
    "late (see the pairs)."
)


def recomposition_section(run: RunArtifacts) -> Raw:
    data = run.recomposition
    if data is None:
        return section(
            "recomposition", "Recomposition", [not_run("recompose", f"mecharule recompose {run.path}")]
        )
    problems = {k: v for k, v in data.get("problems", {}).items() if not v.get("skipped")}
    if not problems:
        return section("recomposition", "Recomposition", [paragraph("No rule has agonists to recompose.")])
    body: list[str] = [
        paragraph(MEANING),
        table(rules_table(problems, data.get("settings", {}))),
        figures([image(greedy_plot(problems), "greedy sets: share of the joint effect by set size")]),
        paragraph(
            f"Pairs with the largest interactions (up to {PAIRS_SHOWN} per rule; "
            "p Holm-adjusted over a rule's pairs)."
        ),
        table(pairs_table(problems)),
    ]
    shared = pd.DataFrame(data.get("shared_agonists") or [])
    if len(shared):
        shared["problems"] = shared["problems"].map(", ".join)
        body += [paragraph("Agonists of two or more rules."), table(shared, max_rows=30)]
    else:
        body.append(paragraph("No agonist is shared by two rules."))
    body.append(paragraph(f"{data.get('evaluations', 0):,} group evaluations."))
    return section("recomposition", "Recomposition", body)


def rules_table(problems: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any]) -> pd.DataFrame:
    rows = []
    for key, entry in problems.items():
        composition = entry.get("composition") or {}
        row = {
            "problem": key,
            "rule": entry.get("rule", ""),
            "agonists": len(entry.get("agonists") or []),
            "best alone": max((a["alone"] for a in entry.get("agonists") or []), default=None),
            "joint (covered)": (entry.get("joint") or {}).get("covered"),
            "joint (unrelated)": (entry.get("joint") or {}).get("unrelated"),
            "sum alone": entry.get("sum_alone"),
            "union alone": entry.get("union_alone"),
            "flipped only together": composition.get("joint_only"),
            "flipped alone, not together": composition.get("alone_only"),
            "composition": composition.get("kind"),
            "p (exact sign test)": _p(composition.get("sign_p")),
        }
        for share in settings.get("shares") or []:
            size = (entry.get("smallest_set") or {}).get(str(share))
            row[f"units for {share:.0%}"] = "—" if size is None else size
        rows.append(row)
    return pd.DataFrame(rows)


def pairs_table(problems: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for key, entry in problems.items():
        for pair in (entry.get("pairs") or [])[:PAIRS_SHOWN]:
            rows.append(
                {
                    "problem": key,
                    "unit A": pair["units"][0],
                    "unit B": pair["units"][1],
                    "A alone": pair["alone"][0],
                    "B alone": pair["alone"][1],
                    "together": pair["joint"],
                    "interaction": pair["interaction"],
                    "kind": pair["kind"],
                    "p Holm (sign test)": _p(pair.get("sign_p_holm")),
                }
            )
    return pd.DataFrame(rows)


def greedy_plot(problems: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Each problem's greedy curve: the share of the joint effect by set size (1 = the whole set)."""
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(4.6, 2.8), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    top = 1.0
    for key, entry in problems.items():
        curve = (entry.get("greedy") or {}).get("curve") or []
        if curve:
            shares = [0.0] + [c["share"] for c in curve]
            ax.plot([0] + [c["size"] for c in curve], shares, marker="o", label=key)
            top = max(top, *shares)
    ax.axhline(1.0, color="#999999", linestyle="--", linewidth=0.8)  # the whole set's joint effect
    ax.set_xlabel("units ablated together (greedy order)", fontsize=8)
    ax.set_ylabel("share of the joint effect", fontsize=8)
    ax.set_ylim(0, top * 1.05)  # a set without a cancelling unit can flip more than all of them
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def _p(value: Any) -> str | None:
    return None if value is None else f"{float(value):.2g}"


__all__ = ["pairs_table", "recomposition_section", "rules_table"]
