"""XGBoost trees → candidate rules, with XGBoost's split semantics reproduced exactly.

XGBoost stores features and split thresholds as float32 and sends a row down the "yes" branch iff
``float32(x) < t`` (``t`` a float32), and NaN down the node's default ("missing") branch. A naive
float64 condition ``x < t`` disagrees for float64 values that round up to ``t``. We therefore
translate every split into the float64 boundary ``m`` = midpoint between ``t`` and the float32 just
below it: ``float32(x) < t`` ⇔ ``x < m`` (or ``x <= m`` when ``m`` itself rounds down, by
round-half-to-even). The yes branch is that condition with ``missing = (default is yes)``, the no
branch its complement with ``missing = (default is no)``. So the rule of a root-to-leaf path fires
on exactly the rows that ``Booster.predict(..., pred_leaf=True)`` puts in that leaf (tested).

Thresholds hence look like ``49.99999809265137`` in the canonical text; the readable form shows
``a <= 49`` for count features and ``50`` (6 significant digits) otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mecharule.rules.language import Condition, Rule

_LOWER = (">", ">=")
_UPPER = ("<", "<=")


def split_conditions(feature: str, threshold: float, default_yes: bool) -> tuple[Condition, Condition]:
    """The (yes, no) conditions of an XGBoost split ``float32(x) < float32(threshold)``."""
    t32 = np.float32(threshold)
    below = np.nextafter(t32, np.float32(-np.inf))
    boundary = (float(below) + float(t32)) / 2.0  # exact in float64
    boundary_rounds_down = np.float32(boundary) == below
    if boundary_rounds_down:
        return (
            Condition(feature, "<=", boundary, default_yes),
            Condition(feature, ">", boundary, not default_yes),
        )
    return Condition(feature, "<", boundary, default_yes), Condition(feature, ">=", boundary, not default_yes)


def _tighter(a: Condition, b: Condition) -> Condition:
    """The tighter of two bounds in the same direction (ties: strict beats non-strict)."""
    if a.op in _LOWER:
        if a.threshold != b.threshold:
            return a if a.threshold > b.threshold else b
        return a if a.op == ">" else b
    if a.threshold != b.threshold:
        return a if a.threshold < b.threshold else b
    return a if a.op == "<" else b


def merge_conditions(conditions: Sequence[Condition]) -> tuple[Condition, ...]:
    """Merge redundant bounds per feature: keep the tightest lower and upper bound.

    NaN satisfies a conjunction iff it satisfies every condition on its feature, so the merged
    conditions of a feature carry ``missing`` = AND of the flags of all its original conditions.
    Equality conditions are kept as they are (with the same flag).
    """
    by_feature: dict[str, list[Condition]] = {}
    for cond in conditions:
        by_feature.setdefault(cond.feature, []).append(cond)
    merged: list[Condition] = []
    for feature, conds in by_feature.items():
        missing = all(c.missing for c in conds)
        kept: dict[str, Condition] = {}
        others: list[Condition] = []
        for cond in conds:
            side = "lower" if cond.op in _LOWER else "upper" if cond.op in _UPPER else ""
            if not side:
                others.append(cond)
            else:
                kept[side] = _tighter(kept[side], cond) if side in kept else cond
        for cond in [*kept.values(), *others]:
            merged.append(Condition(feature, cond.op, cond.threshold, missing))
    return tuple(merged)


@dataclass(frozen=True)
class LeafPath:
    """One root-to-leaf path of one tree: its merged rule and bookkeeping from the dump."""

    tree: int
    leaf: int
    rule: Rule
    gain_sum: float
    gain_max: float


def _walk(
    node: dict[str, Any], names: Sequence[str], path: tuple[Condition, ...], gains: tuple[float, ...]
) -> Iterator[tuple[int, tuple[Condition, ...], tuple[float, ...]]]:
    if "leaf" in node:
        yield int(node["nodeid"]), path, gains
        return
    feature = names[int(str(node["split"]).lstrip("f"))]
    yes, no = split_conditions(feature, float(node["split_condition"]), node["missing"] == node["yes"])
    children = {int(child["nodeid"]): child for child in node["children"]}
    gain = (*gains, float(node.get("gain", 0.0)))
    yield from _walk(children[int(node["yes"])], names, (*path, yes), gain)
    yield from _walk(children[int(node["no"])], names, (*path, no), gain)


def booster_paths(booster: Any, feature_names: Sequence[str]) -> list[LeafPath]:
    """Every root-to-leaf path of every tree of a booster trained on an unnamed numpy matrix
    (splits are named ``f<column index>``), as merged rules in tree then leaf order."""
    paths: list[LeafPath] = []
    for tree, dump in enumerate(booster.get_dump(dump_format="json", with_stats=True)):
        for leaf, conditions, gains in _walk(json.loads(dump), feature_names, (), ()):
            paths.append(
                LeafPath(
                    tree=tree,
                    leaf=leaf,
                    rule=Rule(merge_conditions(conditions)),
                    gain_sum=float(sum(gains)),
                    gain_max=float(max(gains, default=0.0)),
                )
            )
    return paths
