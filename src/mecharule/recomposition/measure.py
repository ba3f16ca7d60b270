"""Measuring sets of units on one problem: the oracle protocol, a caching meter, the sign test.

A :class:`SetMeter` evaluates each set of units at most once and issues one oracle call per
:meth:`SetMeter.measure`; ``evaluations`` counts the groups sent. Effects are shares of the
problem's covered prompts; the unrelated share is reported beside them (selectivity).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.stats import binomtest

from mecharule.errors import DataError
from mecharule.models.sites import Site

Units = frozenset[Site]


class FlipOracle(Protocol):
    """Ablates each group of units jointly; which of the problem's eligible prompts flipped."""

    def flips(self, key: str, groups: Sequence[Sequence[Site]]) -> np.ndarray:  # [groups, prompts] bool
        ...


@dataclass
class SetMeter:
    """Measures sets of units on one problem, each set at most once, one oracle call per step."""

    oracle: FlipOracle
    key: str
    is_covered: np.ndarray  # [prompts] bool
    cache: dict[Units, np.ndarray] = field(default_factory=dict)  # set -> [prompts] bool
    evaluations: int = 0

    def measure(self, sets: Sequence[Units]) -> None:
        """Evaluate, in one oracle call, every set of ``sets`` not measured yet."""
        missing = list(dict.fromkeys(s for s in sets if s not in self.cache))
        if not missing:
            return
        groups = [sorted(s) for s in missing]
        rows = np.asarray(self.oracle.flips(self.key, groups), dtype=bool)  # [groups, prompts]
        if rows.shape != (len(groups), self.is_covered.size):
            raise DataError(
                f"oracle returned flips of shape {rows.shape} for problem {self.key!r}; expected "
                f"{(len(groups), self.is_covered.size)} (one row per group, one column per eligible prompt)"
            )
        self.cache.update(zip(missing, rows, strict=True))
        self.evaluations += len(groups)

    def covered(self, units: Units) -> np.ndarray:  # [covered] bool
        """Which covered prompts ablating ``units`` flips."""
        return self.cache[units][self.is_covered]

    def hits(self, units: Units) -> int:
        """How many covered prompts ablating ``units`` flips."""
        return int(self.covered(units).sum())

    def effect(self, units: Units) -> float:
        """``e(units)``: the share of covered prompts flipped, rounded to 4 places."""
        return round(self.hits(units) / int(self.is_covered.sum()), 4)

    def unrelated(self, units: Units) -> float | None:
        """The share of unrelated prompts flipped (``None`` without unrelated prompts)."""
        other = self.cache[units][~self.is_covered]
        return round(float(other.mean()), 4) if other.size else None


@dataclass(frozen=True)
class TickingOracle:
    """An oracle that reports the number of groups of every call to ``progress``."""

    oracle: FlipOracle
    progress: Callable[[int], None]

    def flips(self, key: str, groups: Sequence[Sequence[Site]]) -> np.ndarray:
        rows = self.oracle.flips(key, groups)
        self.progress(len(groups))
        return rows


def sign_test(diff: np.ndarray) -> float:
    """Exact two-sided binomial sign test on the nonzero per-prompt differences (1.0 if none)."""
    nonzero = int(np.count_nonzero(diff))
    if nonzero == 0:
        return 1.0
    return float(binomtest(int((diff > 0).sum()), nonzero, 0.5).pvalue)


def kind_of(delta: int, p_value: float, alpha: float) -> str:
    """Synergistic / redundant when the summed difference has that sign and the test rejects."""
    if p_value < alpha and delta > 0:
        return "synergistic"
    if p_value < alpha and delta < 0:
        return "redundant"
    return "additive"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def one(unit: Site) -> Units:
    """The singleton set of ``unit``."""
    return frozenset({unit})


__all__ = ["FlipOracle", "SetMeter", "TickingOracle", "Units", "holm", "kind_of", "one", "sign_test"]
