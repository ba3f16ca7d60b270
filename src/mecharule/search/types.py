"""What CHA searches over and with: units, queries and their counts, problems, the configuration.

A *problem* is one rule in one baseline regime: candidate units, optional signed attribution scores,
and two prompt slices (covered by the rule, unrelated to it) held by the oracle. The oracle ablates a
group of units jointly and returns flip counts on both slices (:class:`SliceCounts`). Imports no torch.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from mecharule.errors import ConfigError, DataError
from mecharule.registry import Registry

__all__ = [
    "PREDICATES",
    "Memo",
    "Oracle",
    "Predicate",
    "PruneOn",
    "Query",
    "SearchConfig",
    "SearchProblem",
    "SliceCounts",
    "Unit",
]

Predicate = str  # a name in PREDICATES
# The predicates, by name; each is defined and registered in one place, search/predicates.py (or by
# another package through the ``mecharule.predicates`` entry-point group).
PREDICATES: Registry[Callable[..., tuple[bool, bool]]] = Registry(
    "predicate", builtin="mecharule.search.predicates", entry_points="mecharule.predicates"
)
PruneOn = Literal["changes", "flips"]


@runtime_checkable
class Unit(Protocol):
    """An ablatable unit: any hashable object with an integer ``layer`` (e.g. the ``Site`` dataclass).

    ``str(unit)`` is its display and serialisation name (``"L3.mlp[17]"``).
    """

    @property
    def layer(self) -> int: ...

    def __hash__(self) -> int: ...


@dataclass(frozen=True)
class Query:
    """Ablate ``units`` jointly on the prompt slices of ``problem``."""

    problem: Hashable
    units: tuple[Unit, ...]


@dataclass(frozen=True)
class SliceCounts:
    """Flips under one ablation: on the covered slice and on the unrelated slice."""

    covered_flips: int
    covered_n: int
    unrelated_flips: int
    unrelated_n: int
    covered_changed: int | None = None
    unrelated_changed: int | None = None

    def __post_init__(self) -> None:
        for name in ("covered_flips", "covered_n", "unrelated_flips", "unrelated_n"):
            try:
                object.__setattr__(self, name, operator.index(getattr(self, name)))
            except TypeError as exc:
                raise DataError(f"SliceCounts.{name} must be an int; got {getattr(self, name)!r}") from exc
        for flips, n, slice_name in (
            (self.covered_flips, self.covered_n, "covered"),
            (self.unrelated_flips, self.unrelated_n, "unrelated"),
        ):
            if not 0 <= flips <= n:
                raise DataError(f"{slice_name} flips must satisfy 0 <= flips <= n; got {flips} of {n}")
        for name, flips, n in (
            ("covered_changed", self.covered_flips, self.covered_n),
            ("unrelated_changed", self.unrelated_flips, self.unrelated_n),
        ):
            value = getattr(self, name)
            if value is None:
                continue
            object.__setattr__(self, name, operator.index(value))
            if not flips <= value <= n:
                raise DataError(
                    f"SliceCounts.{name} must satisfy flips <= changed <= n (a flip changes the "
                    f"answer); got {value} with {flips} flips of {n}"
                )

    @property
    def covered_changes(self) -> int:
        """Covered prompts whose answer changed (a superset of the flips; the flips if not measured)."""
        return self.covered_flips if self.covered_changed is None else self.covered_changed

    @property
    def unrelated_changes(self) -> int:
        """Unrelated prompts whose answer changed (the flips if not measured)."""
        return self.unrelated_flips if self.unrelated_changed is None else self.unrelated_changed

    @property
    def catastrophic(self) -> bool:
        """Every prompt of both slices flips (and at least one prompt was evaluated)."""
        return (
            self.covered_n + self.unrelated_n > 0
            and self.covered_flips == self.covered_n
            and self.unrelated_flips == self.unrelated_n
        )


Oracle = Callable[[Sequence[Query]], Sequence[SliceCounts]]
Memo = dict[tuple[Hashable, Unit], SliceCounts]


@dataclass(frozen=True)
class SearchProblem:
    """One rule × regime: the candidate units and their signed attribution scores (optional).

    A candidate missing from ``scores`` gets score 0 (sign ≥ 0), as in the reference.
    """

    key: Hashable
    candidates: Sequence[Unit]
    scores: Mapping[Unit, float] | None = None

    def __post_init__(self) -> None:
        units = tuple(self.candidates)
        for unit in units:
            if not isinstance(getattr(unit, "layer", None), int):
                raise ConfigError(f"problem {self.key!r}: unit {unit!r} needs an int .layer attribute")
        if len(set(units)) != len(units):
            dupes = sorted({str(u) for u in units if units.count(u) > 1})[:5]
            raise ConfigError(f"problem {self.key!r}: duplicate candidates {dupes}; pass each unit once")
        object.__setattr__(self, "candidates", units)
        if self.scores is not None:
            scores = {u: float(s) for u, s in self.scores.items()}
            if not all(math.isfinite(s) for s in scores.values()):
                raise ConfigError(f"problem {self.key!r}: scores must be finite; NaN/inf found")
            object.__setattr__(self, "scores", scores)

    def score(self, unit: Unit) -> float | None:
        """The unit's attribution score; 0.0 if scores exist but not for this unit; None without scores."""
        return None if self.scores is None else self.scores.get(unit, 0.0)

    def score_ranks(self) -> dict[Unit, int]:
        """1-based rank of each candidate by |score| (ties keep candidate order); empty without scores."""
        if self.scores is None:
            return {}
        ordered = sorted(self.candidates, key=lambda u: -abs(self.score(u) or 0.0))
        return {unit: rank for rank, unit in enumerate(ordered, start=1)}


@dataclass(frozen=True)
class SearchConfig:
    """How CHA decides and splits. Defaults follow the reference except ``order_by_score``.

    ``tau``/``alpha_slice``: strength threshold on the CP upper bound and its per-slice level.
    ``adjust_tau``: apply the reference's :func:`~.stats.adjusted_epsilon` for slices ≠ ``n_ref``
    prompts (a no-op at 64 + 64). ``contrast_margin``: minimum selectivity lower bound accepted by
    the contrastive predicate. ``order_by_score``: halves follow the |score| order (agonists with
    large scores end up together) instead of a seeded shuffle (the reference); without scores the
    shuffle is used. ``budget``: cap on group evaluations; when reached the search stops and the
    result is marked truncated. ``seed`` seeds every shuffle (one stream per root).

    ``prune_on``: the statistic that prunes groups. ``"changes"`` (default) counts prompts whose
    answer changed at all, a superset of the flips that stays monotone where flips are not (ablating
    a whole layer turns a wrong answer into another wrong one, while single units fix it);
    ``"flips"`` is the reference. Singletons are always accepted on flips. ``audit``: singletons
    drawn per root (seeded) and tested with it, to estimate how dense strong units are and to catch
    a pruned group holding an accepted unit (non-monotone effects); ``expand_dense``: test a strong
    group's units one by one when halving is not expected to be cheaper (:mod:`.density`).
    """

    predicate: Predicate = "ucb"
    tau: float = 0.2
    alpha_slice: float = 0.025
    adjust_tau: bool = True
    n_ref: int = 64
    contrast_margin: float = 0.0
    sign_split_first: bool = True
    order_by_score: bool = True
    group_across_layers: bool = False
    budget: int | None = None
    seed: int = 0
    prune_on: PruneOn = "changes"
    audit: int = 16
    expand_dense: bool = True

    def __post_init__(self) -> None:
        if self.predicate not in PREDICATES:
            raise ConfigError(PREDICATES.unknown_message(self.predicate))
        if self.prune_on not in ("changes", "flips"):
            raise ConfigError(f"prune_on must be 'changes' or 'flips'; got {self.prune_on!r}")
        if not isinstance(self.audit, int) or self.audit < 0:
            raise ConfigError(f"audit must be a count of singletons per root (>= 0); got {self.audit!r}")
        if not 0.0 < self.tau < 1.0:
            raise ConfigError(f"tau must lie in (0, 1); got {self.tau!r} (reference: 0.2)")
        if not 0.0 < self.alpha_slice < 0.5:
            raise ConfigError(f"alpha_slice must lie in (0, 0.5); got {self.alpha_slice!r} (reference 0.025)")
        if not -1.0 <= self.contrast_margin < 1.0:
            raise ConfigError(f"contrast_margin must lie in [-1, 1); got {self.contrast_margin!r}")
        if self.n_ref < 1:
            raise ConfigError(f"n_ref must be >= 1; got {self.n_ref!r}")
        if self.budget is not None and (not isinstance(self.budget, int) or self.budget < 1):
            raise ConfigError(f"budget must be None or a positive number of evaluations; got {self.budget!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative int; got {self.seed!r}")
