"""Recomposition: how the agonists of a problem work together, not only alone.

The effect of a set ``S`` of units on a problem is ``e(S)``, the share of the problem's *covered*
prompts whose label flips when every unit of ``S`` is ablated jointly; the share of *unrelated*
prompts flipped is reported beside it (selectivity). All sets are measured on the same prompts (the
problem's eligible prompts), so per-prompt comparisons are paired.

* **Composition of the whole set** ``A``: per covered prompt ``d_p = joint_p − Σ_i alone_ip``. The
  set is *synergistic* when ``e(A) > Σ e({i})`` and an exact two-sided binomial sign test on the
  nonzero ``d_p`` gives ``p < alpha``, *redundant* when ``e(A) < Σ e({i})`` with ``p < alpha``, and
  *additive* otherwise. A redundant set is *cancelling* when, beyond overlapping, ablating it
  jointly undoes flips its members cause alone: the same sign test on ``joint_p − any_alone_p``
  (``any_alone_p``: some member alone flips prompt ``p``) finds fewer joint flips, ``p < alpha``.
* **Pairs** (among the top ``pair_units`` agonists by alone effect), with
  ``interaction = e(ab) − e(a) − e(b)`` and the same sign test on ``d_p = j_p − a_p − b_p``,
  Holm-adjusted over all pairs of the problem. *Redundant* (interaction < 0): the two carry the same
  flips — together they flip no more than either does alone. *Synergistic* (interaction > 0):
  together they flip prompts that neither flips alone — backup units, where ablating one is
  compensated by the other. *Cancelling*: the pair flips fewer prompts than the union of its
  members' flips alone (sign test on ``j_p − (a_p or b_p)``, Holm-adjusted likewise).
* **Greedy**: the smallest set reaching a share of the joint effect. From ``∅``, each step adds the
  candidate whose union has the largest effect (ties: larger alone effect, then name). Known
  limitation: a synergistic pair whose members flip nothing alone is invisible to greedy until one
  of them is already in the set, so greedy may need more units than the true minimum; the pairs
  section shows such pairs.

Each step issues one ``flips`` call with every group it needs; a set already measured (a singleton,
a pair, the whole set) is never evaluated again, and ``evaluations`` counts the groups sent.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mecharule.errors import ConfigError, DataError
from mecharule.models.sites import Site
from mecharule.recomposition.measure import (
    FlipOracle,
    SetMeter,
    TickingOracle,
    Units,
    holm,
    kind_of,
    one,
    sign_test,
)
from mecharule.recomposition.overlap import overlap_matrix, shared_agonists

SCHEMA_VERSION = 1
SIGN_TEST = "exact binomial sign test on per-prompt joint − Σ alone (two-sided)"
NO_JOINT_EFFECT = "joint ablation flips nothing on covered prompts"
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class RecompositionSettings:
    """``pair_units``: the top agonists (by alone effect) whose pairs are measured; ``shares``: the
    shares of the joint effect greedy must reach; ``max_units``: greedy's candidates (the strongest
    alone); ``alpha``: the level of the sign tests (Holm-adjusted for pairs)."""

    pair_units: int = 8
    shares: tuple[float, ...] = (0.5, 0.8, 0.9)
    max_units: int = 16
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if self.pair_units < 0 or self.max_units < 1:
            raise ConfigError(
                f"pair_units must be >= 0 and max_units >= 1; got pair_units={self.pair_units}, "
                f"max_units={self.max_units}"
            )
        if not self.shares or any(not 0.0 < s <= 1.0 for s in self.shares):
            raise ConfigError(f"shares must be a non-empty tuple of values in (0, 1]; got {self.shares!r}")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"alpha must be in (0, 1); got {self.alpha!r}. Typical: 0.05")


def _summary(meter: SetMeter, ranked: Sequence[Site], whole: Units) -> dict[str, Any]:
    """Agonists alone, the joint effect, the sum and union of alone effects."""
    alone = np.stack([meter.covered(one(u)) for u in ranked])  # [units, covered] bool
    n_covered = alone.shape[1]
    return {
        "agonists": [
            {"unit": str(u), "alone": meter.effect(one(u)), "alone_unrelated": meter.unrelated(one(u))}
            for u in ranked
        ],
        "joint": {"covered": meter.effect(whole), "unrelated": meter.unrelated(whole)},
        "sum_alone": round(int(alone.sum()) / n_covered, 4),
        "union_alone": round(int(alone.any(axis=0).sum()) / n_covered, 4),
    }


def _composition(meter: SetMeter, ranked: Sequence[Site], whole: Units, alpha: float) -> dict[str, Any]:
    """Classify the whole set from per-covered-prompt ``joint − Σ alone``."""
    if len(ranked) == 1:
        return {"kind": "single"}
    alone = np.stack([meter.covered(one(u)) for u in ranked])  # [units, covered] bool
    joint = meter.covered(whole)  # [covered] bool
    diff = joint.astype(int) - alone.sum(axis=0)
    p_value = sign_test(diff)
    any_alone = alone.any(axis=0)
    undone = joint.astype(int) - any_alone.astype(int)
    cancel_p = sign_test(undone) if undone.sum() < 0 else 1.0
    kind = kind_of(diff, p_value, alpha)
    if kind == "redundant" and undone.sum() < 0 and cancel_p < alpha:
        kind = "cancelling"
    return {
        "kind": kind,
        "sign_p": p_value,
        "cancel_p": cancel_p,
        "joint_only": int((joint & ~any_alone).sum()),
        "alone_only": int((any_alone & ~joint).sum()),
        "test": SIGN_TEST,
    }


def _pair(meter: SetMeter, a: Site, b: Site) -> tuple[np.ndarray, dict[str, Any]]:
    """One pair's measurements and its per-covered-prompt differences ``j − a − b``."""
    both = meter.covered(frozenset({a, b})).astype(int)
    alone_a, alone_b = meter.covered(one(a)), meter.covered(one(b))
    diff = both - alone_a.astype(int) - alone_b.astype(int)
    undone = both - (alone_a | alone_b).astype(int)
    n_covered = diff.size
    row = {
        "units": [str(a), str(b)],
        "alone": [meter.effect(one(a)), meter.effect(one(b))],
        "joint": meter.effect(frozenset({a, b})),
        "interaction": round(int(diff.sum()) / n_covered, 4),
        "sign_p": sign_test(diff),
        "cancel_p": sign_test(undone) if undone.sum() < 0 else 1.0,
    }
    return diff, row


def _pairs(meter: SetMeter, ranked: Sequence[Site], settings: RecompositionSettings) -> list[dict[str, Any]]:
    """Every pair among the top ``pair_units`` agonists, Holm-adjusted, by |interaction| descending."""
    pairs = list(itertools.combinations(ranked[: settings.pair_units], 2))
    meter.measure([frozenset(pair) for pair in pairs])
    measured = [_pair(meter, a, b) for a, b in pairs]
    adjusted = holm([row["sign_p"] for _, row in measured])
    cancel = holm([row["cancel_p"] for _, row in measured])
    for (diff, row), p_holm, cancel_holm in zip(measured, adjusted, cancel, strict=True):
        row["sign_p_holm"] = p_holm
        row["cancel_p_holm"] = cancel_holm
        row["kind"] = kind_of(diff, p_holm, settings.alpha)
        if row["kind"] == "redundant" and cancel_holm < settings.alpha:
            row["kind"] = "cancelling"
    measured.sort(key=lambda item: (-abs(int(item[0].sum())), item[1]["units"]))
    return [row for _, row in measured]


def _greedy(
    meter: SetMeter, ranked: Sequence[Site], whole: Units, settings: RecompositionSettings
) -> dict[str, Any]:
    """Greedy forward selection up to ``max(shares)`` of the joint effect; curve and smallest sizes."""
    candidates = list(ranked[: settings.max_units])
    header = {"candidates": len(candidates), "target_share": max(settings.shares)}
    total = meter.hits(whole)
    if total == 0:
        none: dict[str, int | None] = {str(s): None for s in settings.shares}
        return {"greedy": {**header, "curve": [], "note": NO_JOINT_EFFECT}, "smallest_set": none}
    chosen: Units = frozenset()
    curve: list[dict[str, Any]] = []
    reached: list[float] = []  # exact share after each step
    while candidates and (not reached or reached[-1] < max(settings.shares) - _TOLERANCE):
        meter.measure([chosen | {u} for u in candidates])
        best = min(candidates, key=lambda u: (-meter.hits(chosen | {u}), -meter.hits(one(u)), str(u)))
        candidates.remove(best)
        chosen = chosen | {best}
        reached.append(meter.hits(chosen) / total)
        curve.append(
            {
                "size": len(chosen),
                "added": str(best),
                "effect": meter.effect(chosen),
                "share": round(reached[-1], 4),
            }
        )
    smallest = {
        str(s): next((k + 1 for k, got in enumerate(reached) if got >= s - _TOLERANCE), None)
        for s in settings.shares
    }
    return {"greedy": {**header, "curve": curve}, "smallest_set": smallest}


def _check_covered(is_covered: np.ndarray, key: str) -> np.ndarray:
    covered = np.asarray(is_covered)
    if covered.ndim != 1 or covered.dtype != bool:
        raise DataError(
            f"is_covered of problem {key!r} must be a 1-D bool array over the eligible prompts; "
            f"got dtype {covered.dtype} and shape {covered.shape}"
        )
    return covered


def recompose_problem(
    oracle: FlipOracle,
    key: str,
    is_covered: np.ndarray,
    agonists: Sequence[Site],
    settings: RecompositionSettings | None = None,
) -> dict[str, Any]:
    """Alone, joint, pairwise and greedy effects of one problem's agonists (a JSON-ready dict)."""
    settings = settings or RecompositionSettings()
    covered = _check_covered(is_covered, key)
    units = sorted(set(agonists))
    if not units:
        return {"skipped": "no agonists"}
    if not covered.any():
        return {"skipped": "no covered prompts"}
    meter = SetMeter(oracle, key, covered)
    whole = frozenset(units)
    meter.measure([one(u) for u in units] + [whole])
    ranked = sorted(units, key=lambda u: (-meter.hits(one(u)), str(u)))
    return {
        "prompts": {"covered": int(covered.sum()), "unrelated": int((~covered).sum())},
        **_summary(meter, ranked, whole),
        "composition": _composition(meter, ranked, whole, settings.alpha),
        "pairs": _pairs(meter, ranked, settings),
        **_greedy(meter, ranked, whole, settings),
        "evaluations": meter.evaluations,
    }


def recompose(
    oracle: FlipOracle,
    problems: Sequence[tuple[str, np.ndarray, Sequence[Site]]],
    settings: RecompositionSettings | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Recompose every problem; shared agonists and overlaps across problems; total evaluations."""
    settings = settings or RecompositionSettings()
    keys = [key for key, _, _ in problems]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"problem keys must be unique; got {keys!r}")
    measured: FlipOracle = oracle if progress is None else TickingOracle(oracle, progress)
    results = {
        key: recompose_problem(measured, key, covered, units, settings) for key, covered, units in problems
    }
    units_of = {key: [str(u) for u in units] for key, _, units in problems if units}
    return {
        "schema_version": SCHEMA_VERSION,
        "settings": {**asdict(settings), "shares": list(settings.shares)},
        "problems": results,
        "shared_agonists": shared_agonists(units_of),
        "overlap": overlap_matrix(units_of),
        "evaluations": sum(result.get("evaluations", 0) for result in results.values()),
    }


__all__ = [
    "NO_JOINT_EFFECT",
    "SCHEMA_VERSION",
    "SIGN_TEST",
    "RecompositionSettings",
    "recompose",
    "recompose_problem",
]
