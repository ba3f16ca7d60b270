"""Turn behaviour rules into search problems: one per (rule, regime), with covered and unrelated
prompt slices drawn from TRAIN rows whose baseline label matches the regime.

Covered = the rule fires; unrelated = it does not. Prompts are never moved from one side to the
other (the reference's balancing contaminated the contrast); a side that is too small is reported
and the problem skipped. With ``sampling="spectral"`` both sides are stratified across k-center
clusters of the last-token hidden states (one medoid per cluster first), else drawn uniformly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mecharule.config import SearchSettings
from mecharule.errors import DataError
from mecharule.random_streams import stream, stream_entropy
from mecharule.rules.language import Rule
from mecharule.sampling.slices import Clustering, covered_unrelated

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
    check_rules_json(rules_json)
    disjuncts = [
        d for d in rules_json.get("disjuncts", []) if d["metrics"]["all"]["coverage"] >= min_coverage
    ]
    disjuncts.sort(key=lambda d: -(d["metrics"]["test"]["mcc"] or 0.0))
    return disjuncts[:max_rules]


def check_rules_json(rules_json: Mapping[str, Any]) -> None:
    """Raise DataError unless ``rules_json`` holds disjuncts with an id, a rule and their metrics."""
    disjuncts = rules_json.get("disjuncts")
    problem = None
    if not isinstance(disjuncts, list):
        problem = f"'disjuncts' is {type(disjuncts).__name__}, not a list"
    else:
        for d in disjuncts:
            try:
                ok = isinstance(d["id"], str) and isinstance(d["rule"], Mapping)
                ok = ok and isinstance(d["metrics"]["all"]["coverage"], int | float)
                ok = ok and "mcc" in d["metrics"]["test"]
            except (KeyError, TypeError):
                ok = False
            if not ok:
                problem = f"a disjunct lacks id, rule or metrics: {str(d)[:80]}"
                break
    if problem:
        raise DataError(f"rules.json is damaged ({problem}); re-run `mecharule rules` on the run directory")


def rule_mask(disjunct: Mapping[str, Any], features: pd.DataFrame) -> np.ndarray:
    return np.asarray(Rule.from_dict(disjunct["rule"]).evaluate(features), dtype=bool)


def problem_specs(
    disjuncts: Sequence[Mapping[str, Any]],
    behaviour: pd.DataFrame,
    features: pd.DataFrame,
    settings: SearchSettings,
    seed: int,
    spectral: tuple[np.ndarray, Clustering] | None = None,
) -> list[ProblemSpec]:
    """Covered/unrelated rows per (rule, regime in ``settings.regimes``), ``settings.n_covered`` and
    ``n_unrelated`` of them, drawn from the ``spectral`` pool (default: every TRAIN row) and
    stratified across its clusters when it is given."""
    pool, clustering = spectral if spectral is not None else (None, None)
    regimes, n_covered, n_unrelated = settings.regimes, settings.n_covered, settings.n_unrelated
    if pool is None:
        pool = np.flatnonzero((behaviour["split"] == "train").to_numpy())
    labels = behaviour["label"].to_numpy(bool)[pool]
    specs: list[ProblemSpec] = []
    for disjunct in disjuncts:
        mask = rule_mask(disjunct, features)[pool]
        for regime in regimes:
            chosen = covered_unrelated(
                mask,
                labels,
                regime,
                n_covered,
                n_unrelated,
                stream_entropy(seed, "search.slices", len(specs)),
                clustering,
            )
            covered, unrelated = np.sort(pool[chosen.covered]), np.sort(pool[chosen.unrelated])
            reason = ""
            if len(covered) < MIN_SLICE or len(unrelated) < MIN_SLICE:
                reason = (
                    f"too few prompts: {len(covered)} covered, {len(unrelated)} unrelated "
                    f"(need {MIN_SLICE} each) with baseline label {REGIME_LABEL[regime]}"
                )
            key = f"{disjunct['id']}/{regime}"
            specs.append(ProblemSpec(key, disjunct["id"], regime, covered, unrelated, reason))
    return specs


def spectral_pool(
    handle: Any, behaviour: pd.DataFrame, pool_size: int, n_clusters: int, seed: int
) -> tuple[np.ndarray, Clustering]:
    """A seeded subset of TRAIN rows and the k-center clusters of their last-token states."""
    from mecharule.sampling.spectral import kcenter, last_token_states, spectral_embedding

    train = np.flatnonzero((behaviour["split"] == "train").to_numpy())
    rng = stream(seed, "search.pool")
    pool = np.sort(rng.choice(train, size=min(pool_size, len(train)), replace=False))
    states = last_token_states(handle, behaviour["prompt"].iloc[pool].tolist())
    Z = spectral_embedding(states, dim=min(32, states.shape[1], len(pool)), seed=seed)
    centers, assignment = kcenter(Z, min(n_clusters, len(pool)), seed)
    return pool, Clustering(Z, centers, assignment)
