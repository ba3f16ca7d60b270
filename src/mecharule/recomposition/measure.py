"""Measuring sets of units on one problem: the oracle protocol, a caching meter, the kinds.

A :class:`SetMeter` evaluates each set of units at most once and issues one oracle call per
:meth:`SetMeter.measure`; ``evaluations`` counts the groups sent. Effects are shares of the
problem's covered prompts; the unrelated share is reported beside them (selectivity).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from mecharule.errors import DataError
from mecharule.models.sites import Site
from mecharule.paired_stats import holm, sign_test

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


def kind_of(diff: np.ndarray, p_value: float, alpha: float) -> str:
    """Synergistic / redundant when the test rejects and more per-prompt differences are positive /
    negative (the direction the sign test itself measures), else additive."""
    balance = int(np.count_nonzero(diff > 0)) - int(np.count_nonzero(diff < 0))
    if p_value < alpha and balance > 0:
        return "synergistic"
    if p_value < alpha and balance < 0:
        return "redundant"
    return "additive"


def one(unit: Site) -> Units:
    """The singleton set of ``unit``."""
    return frozenset({unit})


__all__ = ["FlipOracle", "SetMeter", "TickingOracle", "Units", "holm", "kind_of", "one", "sign_test"]
