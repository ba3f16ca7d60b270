"""Turn behaviour rules into search problems: one per (rule, regime), with covered and unrelated
prompt slices drawn from TRAIN rows whose baseline label matches the regime.

Covered = the rule fires; unrelated = it does not. Prompts are never moved from one side to the
other (the reference's balancing contaminated the contrast); a side that is too small is reported
and the problem skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mecharule.rules.language import Rule

REGIME_LABEL = {"positive": True, "negative": False}
MIN_SLICE = 8


@dataclass(frozen=True)
class ProblemSpec:
    """Which rows make up one problem's slices (or why it was skipped)."""

    key: str
    rule_id: str
    regime: str
    covered_rows: np.ndarray
    unrelated_rows: np.ndarray
    skipped: str = ""


def behaviour_rules(
    rules_json: Mapping[str, Any], max_rules: int, min_coverage: float
) -> list[dict[str, Any]]:
    """The rules (disjuncts) carried to localization: best held-out MCC first."""
    disjuncts = [
        d for d in rules_json.get("disjuncts", []) if d["metrics"]["all"]["coverage"] >= min_coverage
    ]
    disjuncts.sort(key=lambda d: -(d["metrics"]["test"]["mcc"] or 0.0))
    return disjuncts[:max_rules]


def rule_mask(disjunct: Mapping[str, Any], features: pd.DataFrame) -> np.ndarray:
    return np.asarray(Rule.from_dict(disjunct["rule"]).evaluate(features), dtype=bool)


def sample_rows(candidates: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(candidates) <= n:
        return np.sort(candidates)
    return np.sort(rng.choice(candidates, size=n, replace=False))


def problem_specs(
    disjuncts: Sequence[Mapping[str, Any]],
    behaviour: pd.DataFrame,
    features: pd.DataFrame,
    regimes: Sequence[str],
    n_covered: int,
    n_unrelated: int,
    seed: int,
) -> list[ProblemSpec]:
    train = (behaviour["split"] == "train").to_numpy()
    labels = behaviour["label"].to_numpy(bool)
    specs: list[ProblemSpec] = []
    for disjunct in disjuncts:
        mask = rule_mask(disjunct, features)
        for regime in regimes:
            rng = np.random.default_rng([seed, len(specs)])
            eligible = train & (labels == REGIME_LABEL[regime])
            covered = sample_rows(np.flatnonzero(eligible & mask), n_covered, rng)
            unrelated = sample_rows(np.flatnonzero(eligible & ~mask), n_unrelated, rng)
            reason = ""
            if len(covered) < MIN_SLICE or len(unrelated) < MIN_SLICE:
                reason = (
                    f"too few prompts: {len(covered)} covered, {len(unrelated)} unrelated "
                    f"(need {MIN_SLICE} each) with baseline label {REGIME_LABEL[regime]}"
                )
            key = f"{disjunct['id']}/{regime}"
            specs.append(ProblemSpec(key, disjunct["id"], regime, covered, unrelated, reason))
    return specs
