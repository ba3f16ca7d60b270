"""The report's ``agonists`` section: one card per anchored agonist.

A card gathers what is known of one unit: where it sits; its effect on covered and unrelated
prompts in every problem that accepted it (flip rates with their confidence bounds, selectivity,
attribution score and rank); its neuron-anchored rule, one disjunct per line, against the controls;
prompts that flip when it is ablated, with the answers before and after, both ways; its activation
on covered vs unrelated prompts; and the tokens its output direction promotes through the
unembedding (``agonist_cards.json``, written by the anchor stage). Any table naming a unit can link
to its card with :func:`card_link`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mecharule.io.rundir import RunDir, read_json
from mecharule.report.html import Raw, esc, heading, image, key_values, not_run, paragraph, section, table
from mecharule.report.load import RunArtifacts

CARDS_FILE = "agonist_cards.json"
CARD_CSS = (
    ".card{border:1px solid #ddd;border-radius:6px;padding:0.6em 1em;margin:1em 0;background:#fcfcfc}"
    ".card ul.rule li,.card ul.examples li{margin:0.15em 0}.card .muted{color:#777}"
)
DIRECTIONS = {"right_to_wrong": "right → wrong", "wrong_to_right": "wrong → right"}


def card_anchor(unit: str) -> str:
    """The HTML id of a unit's card (``L1.mlp[46]`` → ``card-L1-mlp-46``)."""
    return "card-" + re.sub(r"[^A-Za-z0-9]+", "-", unit).strip("-")


def card_link(unit: str) -> Raw:
    return Raw(f'<a href="#{card_anchor(unit)}">{esc(unit)}</a>')


UNIT_CELL = re.compile(r"<td([^>]*)>(L\d+\.(?:mlp|mlp_out)\[\d+\])</td>")


def link_unit_cells(document: str, units: set[str]) -> str:
    """Every table cell that is just the name of a unit with a card becomes a link to that card."""

    def linked(match: re.Match[str]) -> str:
        attrs, unit = match.group(1), match.group(2)
        return f"<td{attrs}>{card_link(unit)}</td>" if unit in units else match.group(0)

    return UNIT_CELL.sub(linked, document)


def carded_units(run: RunArtifacts) -> set[str]:
    return {str(a["site"]) for a in (run.neuron_rules or {}).get("agonists", [])}


def cards_section(run: RunArtifacts) -> Raw:
    neuron_rules = run.neuron_rules
    if not neuron_rules:
        return section("agonists", "Agonist cards", [not_run("anchor", f"mecharule anchor {run.path}")])
    cards = _cards_file(run)
    parts: list[str] = [
        Raw(f"<style>{CARD_CSS}</style>"),
        paragraph(
            "One card per anchored agonist (the strongest by effect), in the order of the anchored-rules "
            "table. Flip rates are over the problem's prompts with one-sided Clopper-Pearson bounds."
        ),
    ]
    if cards is None:
        parts.append(
            paragraph(
                "This run's anchor stage wrote no agonist_cards.json (made by an older "
                "mecharule): re-run `mecharule anchor` for examples, activations and tokens."
            )
        )
    for entry in neuron_rules.get("agonists", []):
        unit = str(entry["site"])
        parts.append(agonist_card(unit, entry, _effects(run, unit), (cards or {}).get(unit, {})))
    return section("agonists", "Agonist cards", parts)


def agonist_card(
    unit: str, anchored: Mapping[str, Any], effects: list[dict[str, Any]], card: Mapping[str, Any]
) -> Raw:
    layer = unit.split(".")[0].removeprefix("L")
    kind = unit.split(".")[1].split("[")[0] if "." in unit else "?"
    parts: list[str] = [
        heading(unit, 3, anchor=card_anchor(unit)),
        key_values(
            [
                ("site", f"layer {layer}, {kind} unit {unit.split('[')[-1].rstrip(']')}"),
                ("behaviour rule of its strongest problem", card.get("rule_id") or "n/a"),
            ]
        ),
    ]
    if effects:
        parts.append(table(_effects_frame(effects)))
    parts += _rule_parts(anchored)
    parts += _example_parts(card.get("examples") or [])
    parts += _activation_parts(unit, card.get("activations") or {})
    parts += _token_parts(card.get("promoted_tokens") or {})
    return Raw(f'<div class="card">{"".join(parts)}</div>')


def _effects(run: RunArtifacts, unit: str) -> list[dict[str, Any]]:
    found = []
    for problem in run.problems:
        for entry in problem.get("agonists") or []:
            if entry.get("unit") == unit:
                found.append({"problem": problem["key"], **entry})
    return found


def _effects_frame(effects: Sequence[Mapping[str, Any]]) -> Any:
    import pandas as pd

    def rate(e: Mapping[str, Any], side: str) -> str:
        low, high = e.get(f"{side}_lower", 0), e.get(f"{side}_upper", 0)
        counts = f"{e.get(f'{side}_flips', '?')}/{e.get(f'{side}_n', '?')}"
        return f"{e.get(f'{side}_rate', 0):.2f} [{low:.2f}, {high:.2f}] ({counts})"

    return pd.DataFrame(
        [
            {
                "problem": e["problem"],
                "covered flips": rate(e, "covered"),
                "unrelated flips": rate(e, "unrelated"),
                "selectivity": round(float(e.get("selectivity") or 0.0), 3),
                "attribution score": e.get("score"),
                "score rank": e.get("score_rank"),
            }
            for e in effects
        ]
    )


def _rule_parts(anchored: Mapping[str, Any]) -> list[str]:
    best, control = anchored.get("best") or {}, anchored.get("best_control") or {}
    if not best.get("target"):
        return [paragraph("No anchored rule reached the minimum coverage for any flip target.")]
    disjuncts = [d.strip() for d in str(best.get("readable", "")).split(" OR ")]
    lines = "".join(f"<li>{esc(d)}</li>" for d in disjuncts)
    rates = anchored.get("flip_rates") or {}
    return [
        paragraph(
            f"Anchored rule for flips '{best['target']}' (flip rate {rates.get(best['target'], 0):.3f}): "
            f"test MCC {best.get('test_mcc', 0):.3f}, coverage {best.get('coverage', 0):.3f}; "
            f"the same extraction on permuted flips: test MCC {control.get('test_mcc', 0):.3f}."
        ),
        Raw(f'<ul class="rule">{lines}</ul>'),
    ]


def _example_parts(examples: Sequence[Mapping[str, Any]]) -> list[str]:
    if not examples:
        return []
    rows = "".join(
        f"<li><code>{esc(e['prompt'])}{esc(e['answer'])}</code> → <code>{esc(e['ablated_answer'])}</code> "
        f'<span class="muted">({DIRECTIONS.get(e["direction"], e["direction"])})</span></li>'
        for e in examples
    )
    return [
        paragraph("Prompts that flip when this unit alone is ablated (answer → answer under ablation):"),
        Raw(f'<ul class="examples">{rows}</ul>'),
    ]


def _activation_parts(unit: str, activations: Mapping[str, Any]) -> list[str]:
    if not activations.get("edges"):
        return []
    edges = np.asarray(activations["edges"], dtype=float)
    fig = Figure(figsize=(4.6, 2.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    for side, colour in (("covered", "#c0392b"), ("unrelated", "#7f8c8d")):
        counts = np.asarray(activations.get(side) or [0] * len(centers), dtype=float)
        share = counts / counts.sum() if counts.sum() else counts
        ax.bar(
            centers,
            share,
            width=width,
            alpha=0.55,
            color=colour,
            label=f"{side} (mean {activations.get(f'{side}_mean')})",
        )
    ax.set_xlabel(f"{unit} activation at the last prompt token", fontsize=8)
    ax.set_ylabel("share of prompts", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return [image(fig, f"{unit}: activation on prompts its rule covers vs unrelated prompts (TRAIN rows)")]


def _token_parts(tokens: Mapping[str, Any]) -> list[str]:
    if not tokens:
        return []

    def listed(items: Sequence[Sequence[Any]]) -> str:
        return ", ".join(f"<code>{esc(repr(t))}</code> {v:+.3f}" for t, v in items)

    return [
        Raw(
            '<p class="tokens">Direct logit effect of its output direction (final norm left out): promotes '
            f"{listed(tokens.get('up') or [])}; suppresses {listed(tokens.get('down') or [])}.</p>"
        )
    ]


def _cards_file(run: RunArtifacts) -> dict[str, Any] | None:
    rundir = RunDir(run.path)
    if not rundir.trusted(CARDS_FILE):
        return None
    data = read_json(rundir.file(CARDS_FILE))
    agonists = data.get("agonists")
    return agonists if isinstance(agonists, dict) else None


__all__ = ["agonist_card", "card_anchor", "card_link", "carded_units", "cards_section", "link_unit_cells"]
