"""Synthetic oracles with planted agonists, for the group-testing tests (no model, no torch).

``PlantedOracle`` is monotone and saturating: a group's flip rate on a slice is
``1 − Π(1 − e_u)`` over the planted units ``u`` in the group (units not planted have e = 0).

* ``mode="expected"``: counts = ``round(rate · n)`` — deterministic; rounding keeps monotonicity.
* ``mode="coupled"``: each planted unit flips a fixed seeded Bernoulli(e_u) subset of the n prompts
  of each slice, and a group flips the UNION of its members' subsets. Counts are binomial per unit
  and exactly monotone in the group (the realistic case: shared prompts, noisy rates).

``CancellingOracle`` is NOT monotone: a group flips the symmetric difference (XOR) of its members'
subsets, so two units with the same subset cancel each other inside a group.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mecharule.search import Query, SliceCounts


@dataclass(frozen=True, order=True)
class U:
    """A tiny unit: layer and index, displayed like a site name."""

    layer: int
    index: int

    def __str__(self) -> str:
        return f"L{self.layer}.mlp[{self.index}]"


Effects = Mapping[Hashable, Mapping[U, tuple[float, float]]]  # problem → unit → (covered, unrelated)


class PlantedOracle:
    """Monotone saturating oracle; records every call (list of queries) in ``calls``."""

    def __init__(
        self, effects: Effects, n: int = 64, mode: Literal["expected", "coupled"] = "expected", seed: int = 0
    ) -> None:
        self.effects = effects
        self.n = n
        self.mode = mode
        self.calls: list[list[Query]] = []
        rng = np.random.default_rng(seed)
        self.masks = {
            (problem, unit): (rng.random(n) < e_cov, rng.random(n) < e_unr)
            for problem, planted in effects.items()
            for unit, (e_cov, e_unr) in sorted(planted.items())
        }

    def _counts(self, query: Query) -> SliceCounts:
        planted = self.effects.get(query.problem, {})
        hits = [u for u in query.units if u in planted]
        if self.mode == "expected":
            cov = 1.0 - float(np.prod([1.0 - planted[u][0] for u in hits]))
            unr = 1.0 - float(np.prod([1.0 - planted[u][1] for u in hits]))
            return SliceCounts(round(cov * self.n), self.n, round(unr * self.n), self.n)
        cov_mask = np.zeros(self.n, bool)
        unr_mask = np.zeros(self.n, bool)
        for u in hits:
            cov_mask |= self.masks[(query.problem, u)][0]
            unr_mask |= self.masks[(query.problem, u)][1]
        return SliceCounts(int(cov_mask.sum()), self.n, int(unr_mask.sum()), self.n)

    def __call__(self, queries: Sequence[Query]) -> list[SliceCounts]:
        self.calls.append(list(queries))
        return [self._counts(q) for q in queries]

    def queried_singletons(self) -> list[tuple[Hashable, U]]:
        """Every (problem, unit) queried alone, with repetitions."""
        return [(q.problem, q.units[0]) for call in self.calls for q in call if len(q.units) == 1]


class CancellingOracle(PlantedOracle):
    """Non-monotone: a group flips the XOR of its members' flip subsets (``coupled`` masks)."""

    def _counts(self, query: Query) -> SliceCounts:
        planted = self.effects.get(query.problem, {})
        cov_mask = np.zeros(self.n, bool)
        unr_mask = np.zeros(self.n, bool)
        for u in (u for u in query.units if u in planted):
            cov_mask ^= self.masks[(query.problem, u)][0]
            unr_mask ^= self.masks[(query.problem, u)][1]
        return SliceCounts(int(cov_mask.sum()), self.n, int(unr_mask.sum()), self.n)


def layer_units(n: int, layer: int = 0) -> list[U]:
    """``n`` units of one layer."""
    return [U(layer, i) for i in range(n)]


def plant(
    units: Sequence[U], k: int, seed: int, low: float = 0.3, high: float = 0.9, unrelated: float = 0.0
) -> dict[U, tuple[float, float]]:
    """Pick ``k`` units at random and give each a covered effect in [low, high)."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(units), size=k, replace=False)
    return {units[i]: (float(rng.uniform(low, high)), unrelated) for i in sorted(chosen)}


class DestructiveOracle(PlantedOracle):
    """The negative regime's shape: flips are NOT monotone in the group, answer changes are.

    Each planted unit flips a seeded Bernoulli(e_u) subset of prompts (as ``coupled``) and changes the
    answer on a superset of it (its flips plus a Bernoulli(``change``) subset). A group of at least
    ``destroy`` units breaks the model: every answer changes, none is fixed (ablating a whole layer
    turns a wrong answer into another wrong one); a smaller group flips the union of its members'
    flips and changes the union of their changes.
    """

    def __init__(
        self, effects: Effects, destroy: int, change: float = 0.3, n: int = 64, seed: int = 0
    ) -> None:
        super().__init__(effects, n=n, mode="coupled", seed=seed)
        rng = np.random.default_rng(seed + 1)
        self.destroy = destroy
        self.changes = {
            key: (cov | (rng.random(n) < change), unr | (rng.random(n) < change))
            for key, (cov, unr) in self.masks.items()
        }

    def _counts(self, query: Query) -> SliceCounts:
        if len(query.units) >= self.destroy:
            return SliceCounts(0, self.n, 0, self.n, self.n, self.n)
        planted = self.effects.get(query.problem, {})
        masks = [np.zeros(self.n, bool) for _ in range(4)]
        for u in (u for u in query.units if u in planted):
            for i, mask in enumerate((*self.masks[(query.problem, u)], *self.changes[(query.problem, u)])):
                masks[i] |= mask
        cov, unr, cov_changed, unr_changed = (int(m.sum()) for m in masks)
        return SliceCounts(cov, self.n, unr, self.n, cov_changed, unr_changed)
