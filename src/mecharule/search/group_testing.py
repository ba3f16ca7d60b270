"""Contrastive Hierarchical Ablation (CHA): adaptive group testing for agonist units. Imports no torch.

A *problem* is one rule in one baseline regime: candidate units, optional signed attribution scores,
and two prompt slices (covered by the rule, unrelated to it) held by the oracle. The oracle ablates a
group of units jointly and returns flip counts on both slices (:class:`SliceCounts`).

The search ablates whole groups and only splits the groups that matter:

1. Roots: one group per layer (default) or all candidates at once; each root's units are ordered by
   |score| (``order_by_score``, when scores exist) or by a seeded shuffle.
2. Level by level, the whole frontier — every open group of every layer of every problem — goes to
   the oracle in ONE call. Singletons already known (``memo``) are not re-evaluated.
3. A group that is not *strong* is pruned; a strong group is split in two: at the root by the sign of
   the attribution score (``sign_split_first``), otherwise into halves of its ordered units.
4. A singleton is an *agonist* if it is accepted by the predicate and not *catastrophic* (it flips
   every prompt of both slices); catastrophic units are reported apart.

Predicates (``SearchConfig.predicate``); ``U``/``L`` are one-sided Clopper–Pearson bounds at α_slice:

* ``"ucb"`` (reference parity): strong iff ``U(covered) ≥ τ`` OR ``U(unrelated) ≥ τ``. The same
  statistic prunes groups and accepts singletons. A unit that only flips unrelated prompts counts.
* ``"observed"``: a singleton is ACCEPTED iff its observed flip rate reaches τ on a slice (no unit
  that flips 12 % of prompts is reported because its upper bound touched 0.2), and a group is
  strong iff its observed change rate reaches τ on a slice: under monotonicity a weaker group
  holds no unit that could be accepted, so the bound's slack is not needed for pruning.
* ``"contrastive"``: PRUNING uses the covered slice only — a group is strong iff ``U(covered) ≥ τ``.
  ACCEPTANCE of a singleton needs that AND ``L(covered) − U(unrelated) ≥ contrast_margin`` (the
  Bonferroni-box lower bound on selectivity, 95 % at α_slice = 0.025; see :mod:`.stats`). The contrast
  is not used to prune because it is not monotone: a group holding a selective agonist and an
  unselective unit can have a lower contrast than the agonist alone.

Guarantee. If flips are monotone in the group (a group flips every prompt any member flips — e.g.
a saturating effect ``1 − Π(1 − e_u)`` realised on shared prompts), a group's flip counts are ≥ each
member's on both slices, so its pruning statistic is ≥ each member's: a pruned group holds no unit
that would have been accepted, and CHA finds every brute-force agonist. With k agonists among N
units in one root the cost is at most about ``2k·log2(N/k) + 2k + 1`` evaluations (:func:`bound`).
Non-monotone effects (two units that cancel) break the guarantee: the group looks inert and is pruned.

Validation lives in :mod:`.brute_force` (every candidate alone, same predicate; recall by effect
bin) and :mod:`.population` (recall over every unit of the searched layers).
"""

from __future__ import annotations

import logging
import math
import operator
import zlib
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from mecharule.errors import ConfigError, DataError
from mecharule.search.density import (
    audit_is_decisive,
    audit_size,
    density_from_audit,
    density_from_groups,
    should_expand,
)
from mecharule.search.stats import adjusted_epsilon, cp_lower, cp_upper

__all__ = [
    "Agonist",
    "CatastrophicUnit",
    "Evaluation",
    "Oracle",
    "ProblemStats",
    "Query",
    "SearchConfig",
    "SearchProblem",
    "SearchResult",
    "SliceCounts",
    "SliceEffect",
    "TraceRecord",
    "Unit",
    "bound",
    "evaluate_counts",
    "search",
]

logger = logging.getLogger(__name__)

Predicate = Literal["ucb", "contrastive", "observed"]
PruneOn = Literal["changes", "flips"]
Decision = Literal["split", "prune", "agonist", "catastrophic", "leaf_weak"]
SplitStrategy = Literal["score_sign", "bisect_fallback", "bisect", "singletons", "nonmonotone"]


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
        if self.predicate not in ("ucb", "contrastive", "observed"):
            raise ConfigError(f"predicate must be 'ucb', 'contrastive' or 'observed'; got {self.predicate!r}")
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


@dataclass(frozen=True)
class SliceEffect:
    """Flip rate on one slice: point estimate and one-sided CP bounds at α_slice."""

    flips: int
    n: int
    rate: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Evaluation:
    """Every statistic the predicates use, for one :class:`SliceCounts`.

    ``strong`` is the pruning statistic's verdict (a group is split iff strong; on answer changes by
    default, see :class:`SearchConfig`); ``accepted`` is the
    singleton acceptance verdict (before the catastrophic check). ``max_upper`` is the reference's
    ``max_effect``: the max over non-empty slices of the CP upper bound.
    """

    covered: SliceEffect
    unrelated: SliceEffect
    tau: float
    max_upper: float
    contrast_lower: float
    strong: bool
    accepted: bool
    catastrophic: bool

    @property
    def selectivity(self) -> float:
        """Covered flip rate minus unrelated flip rate (point estimates)."""
        return self.covered.rate - self.unrelated.rate


@lru_cache(maxsize=65536)
def _slice_effect(flips: int, n: int, alpha: float) -> SliceEffect:
    """Point estimate and CP bounds of one slice (cached: counts repeat a lot)."""
    rate = flips / n if n else 0.0
    return SliceEffect(flips, n, rate, float(cp_lower(flips, n, alpha)), float(cp_upper(flips, n, alpha)))


@lru_cache(maxsize=4096)
def _effective_tau(tau: float, sizes: tuple[int, ...], n_ref: int, alpha: float, adjust: bool) -> float:
    """τ after the reference's slice-size adjustment (cached per slice sizes)."""
    return adjusted_epsilon(tau, sizes, n_ref=n_ref, alpha=alpha) if adjust else tau


def evaluate_counts(counts: SliceCounts, config: SearchConfig) -> Evaluation:
    """Apply ``config``'s predicate to one group's counts. Empty slices (n = 0) never make a group strong."""
    covered = _slice_effect(counts.covered_flips, counts.covered_n, config.alpha_slice)
    unrelated = _slice_effect(counts.unrelated_flips, counts.unrelated_n, config.alpha_slice)
    sizes = tuple(n for n in (counts.covered_n, counts.unrelated_n) if n > 0)
    tau = _effective_tau(config.tau, sizes, config.n_ref, config.alpha_slice, config.adjust_tau)
    covered_strong = covered.n > 0 and covered.upper >= tau
    unrelated_strong = unrelated.n > 0 and unrelated.upper >= tau
    contrast = covered.lower - unrelated.upper
    changed_cov = _slice_effect(counts.covered_changes, counts.covered_n, config.alpha_slice)
    changed_unr = _slice_effect(counts.unrelated_changes, counts.unrelated_n, config.alpha_slice)
    if config.prune_on == "changes":
        prune_cov = changed_cov.n > 0 and changed_cov.upper >= tau
        prune_unr = changed_unr.n > 0 and changed_unr.upper >= tau
    else:
        prune_cov, prune_unr = covered_strong, unrelated_strong
    if config.predicate == "ucb":
        accepted = covered_strong or unrelated_strong
        strong = prune_cov or prune_unr
    elif config.predicate == "observed":
        # Observed rates against τ itself (the slice-size adjustment of τ is for bounds). Under
        # monotonicity a group changes at least the answers each member flips, so a group whose
        # observed change (or flip) rate is below τ on both slices holds no unit this accepts.
        accepted = any(s.n > 0 and s.rate >= config.tau for s in (covered, unrelated))
        pruning = (changed_cov, changed_unr) if config.prune_on == "changes" else (covered, unrelated)
        strong = any(s.n > 0 and s.rate >= config.tau for s in pruning)
    else:
        strong = prune_cov
        accepted = covered_strong and contrast >= config.contrast_margin
    uppers = [s.upper for s in (covered, unrelated) if s.n > 0]
    return Evaluation(
        covered, unrelated, tau, max(uppers, default=0.0), contrast, strong, accepted, counts.catastrophic
    )


@dataclass(frozen=True)
class TraceRecord:
    """One evaluated group: where it sat in the tree, its counts and statistics, and what was decided.

    ``level`` is the oracle round (= depth, as all roots start together). ``memo_hit`` marks a
    singleton answered from the memo (not an intervention). ``split_strategy`` is set for splits.
    """

    problem: Hashable
    level: int
    depth: int
    root: str
    units: tuple[Unit, ...]
    counts: SliceCounts
    evaluation: Evaluation
    decision: Decision
    split_strategy: SplitStrategy | None = None
    memo_hit: bool = False
    audit: bool = False

    @property
    def size(self) -> int:
        return len(self.units)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (units and problem via ``str``)."""
        ev = self.evaluation
        return {
            "problem": str(self.problem),
            "level": self.level,
            "depth": self.depth,
            "root": self.root,
            "units": [str(u) for u in self.units],
            "size": self.size,
            "covered_flips": self.counts.covered_flips,
            "covered_n": self.counts.covered_n,
            "unrelated_flips": self.counts.unrelated_flips,
            "unrelated_n": self.counts.unrelated_n,
            "covered_changed": self.counts.covered_changes,
            "unrelated_changed": self.counts.unrelated_changes,
            "covered_rate": ev.covered.rate,
            "covered_lower": ev.covered.lower,
            "covered_upper": ev.covered.upper,
            "unrelated_rate": ev.unrelated.rate,
            "unrelated_lower": ev.unrelated.lower,
            "unrelated_upper": ev.unrelated.upper,
            "max_upper": ev.max_upper,
            "contrast_lower": ev.contrast_lower,
            "selectivity": ev.selectivity,
            "tau": ev.tau,
            "strong": ev.strong,
            "decision": self.decision,
            "split_strategy": self.split_strategy,
            "memo_hit": self.memo_hit,
            "audit": self.audit,
        }


AGONIST_COLUMNS = (
    "problem",
    "unit",
    "layer",
    *(
        f"{side}_{field}"
        for side in ("covered", "unrelated")
        for field in ("flips", "n", "rate", "lower", "upper")
    ),
    "max_upper",
    "contrast_lower",
    "selectivity",
    "score",
    "score_rank",
)  # the keys of Agonist.to_dict, in order: the header of an agonists.csv, also an empty one


@dataclass(frozen=True)
class Agonist:
    """A strong, non-catastrophic singleton: its effects, selectivity and attribution score/rank."""

    problem: Hashable
    unit: Unit
    covered: SliceEffect
    unrelated: SliceEffect
    max_upper: float
    contrast_lower: float
    score: float | None
    score_rank: int | None

    @property
    def selectivity(self) -> float:
        """Covered flip rate minus unrelated flip rate (point estimates)."""
        return self.covered.rate - self.unrelated.rate

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (one row of ``agonists.csv``)."""
        row: dict[str, Any] = {"problem": str(self.problem), "unit": str(self.unit), "layer": self.unit.layer}
        for name, eff in (("covered", self.covered), ("unrelated", self.unrelated)):
            row |= {
                f"{name}_flips": eff.flips,
                f"{name}_n": eff.n,
                f"{name}_rate": eff.rate,
                f"{name}_lower": eff.lower,
                f"{name}_upper": eff.upper,
            }
        return row | {
            "max_upper": self.max_upper,
            "contrast_lower": self.contrast_lower,
            "selectivity": self.selectivity,
            "score": self.score,
            "score_rank": self.score_rank,
        }


@dataclass(frozen=True)
class CatastrophicUnit:
    """A singleton whose ablation flips every prompt of both slices (breaks the model, not the rule)."""

    problem: Hashable
    unit: Unit
    counts: SliceCounts


@dataclass(frozen=True)
class ProblemStats:
    """Per-problem cost and outcome of one search.

    ``group_evaluations`` counts oracle-evaluated groups (interventions, audits included);
    ``memo_hits`` singletons answered from the memo; ``levels`` the oracle rounds the problem took
    part in (tree depth + 1); ``audit_evaluations`` the audited singletons; ``expanded_groups`` the
    strong groups tested unit by unit because halving would not have been cheaper;
    ``nonmonotone_splits`` the weak groups split anyway because they hold an accepted unit.
    """

    problem: Hashable
    n_candidates: int
    group_evaluations: int
    memo_hits: int
    levels: int
    n_agonists: int
    n_catastrophic: int
    audit_evaluations: int = 0
    expanded_groups: int = 0
    nonmonotone_splits: int = 0

    @property
    def density(self) -> float | None:
        """k/N: agonists found per candidate (None without candidates)."""
        return self.n_agonists / self.n_candidates if self.n_candidates else None


@dataclass(frozen=True)
class SearchResult:
    """Agonists, catastrophic units, the full query trace and the cost of one search."""

    agonists: tuple[Agonist, ...]
    catastrophic: tuple[CatastrophicUnit, ...]
    trace: tuple[TraceRecord, ...]
    problems: tuple[ProblemStats, ...]
    group_evaluations: int
    oracle_calls: int
    truncated: bool = False
    unexplored: tuple[Query, ...] = ()

    def agonists_for(self, problem: Hashable) -> tuple[Agonist, ...]:
        """The agonists found for one problem key."""
        return tuple(a for a in self.agonists if a.problem == problem)

    def trace_json(self) -> list[dict[str, Any]]:
        """The query trace as JSON-serialisable dicts (one per evaluated group, in evaluation order)."""
        return [record.to_dict() for record in self.trace]

    def summary(self) -> dict[str, Any]:
        """Headline numbers as a JSON-serialisable dict."""
        return {
            "group_evaluations": self.group_evaluations,
            "oracle_calls": self.oracle_calls,
            "truncated": self.truncated,
            "n_unexplored_groups": len(self.unexplored),
            "n_agonists": len(self.agonists),
            "n_catastrophic": len(self.catastrophic),
            "problems": [{**vars(p), "problem": str(p.problem)} for p in self.problems],
        }


# ----------------------------------------------------------------------------------------------
# The search


@dataclass(frozen=True)
class _Node:
    """An open group: which problem, which root, how deep, which units (in their fixed order).

    ``audit`` marks a singleton drawn at level 0 to estimate the root's density (:mod:`.density`).
    """

    problem_index: int
    root: str
    depth: int
    units: tuple[Unit, ...]
    audit: bool = False


@dataclass
class _State:
    """Mutable accumulators of one search run."""

    records: list[TraceRecord] = field(default_factory=list)
    evaluations: list[int] = field(default_factory=list)
    memo_hits: list[int] = field(default_factory=list)
    audits: list[int] = field(default_factory=list)
    expanded: list[int] = field(default_factory=list)
    rescued: list[int] = field(default_factory=list)
    oracle_calls: int = 0
    # singletons decided in THIS search, per problem: never queued (or recorded) twice
    decided: set[tuple[int, Unit]] = field(default_factory=set)
    # per (problem, root): audited singletons so far [strong, audited], and the density they imply
    audit_tally: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    audit_density: dict[tuple[int, str], float] = field(default_factory=dict)
    root_audit: dict[tuple[int, str], int] = field(default_factory=dict)  # audit size per round

    @classmethod
    def for_problems(cls, n: int) -> _State:
        return cls(evaluations=[0] * n, memo_hits=[0] * n, audits=[0] * n, expanded=[0] * n, rescued=[0] * n)


def _check_problems(problems: Sequence[SearchProblem]) -> tuple[SearchProblem, ...]:
    """Validate a batch of problems: SearchProblem instances with distinct keys."""
    problems = tuple(problems)
    for problem in problems:
        if not isinstance(problem, SearchProblem):
            raise ConfigError(f"expected SearchProblem instances; got {type(problem).__name__}")
    keys = [p.key for p in problems]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"problem keys must be distinct; got {keys!r}")
    return problems


def _root_rng(config: SearchConfig, problem: SearchProblem, root: str, salt: int = 0) -> np.random.Generator:
    """One independent stream per (seed, problem key, root name[, salt]), stable across processes,
    batches and the presence of other layers."""
    spawn_key = (zlib.crc32(str(problem.key).encode()), zlib.crc32(root.encode()), salt)
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=spawn_key))


def _ordered(
    units: Sequence[Unit], problem: SearchProblem, config: SearchConfig, rng: np.random.Generator
) -> tuple[Unit, ...]:
    """Units by |score| descending (stable) if ``order_by_score`` and scores exist, else shuffled."""
    if config.order_by_score and problem.scores is not None:
        return tuple(sorted(units, key=lambda u: -abs(problem.score(u) or 0.0)))
    return tuple(units[i] for i in rng.permutation(len(units)))


def _roots(index: int, problem: SearchProblem, config: SearchConfig) -> list[_Node]:
    """The level-0 nodes of one problem: one group per layer (ascending) or one over all layers, each
    with its audit singletons. A root no larger than its audit + 1 is tested unit by unit instead."""
    if config.group_across_layers:
        groups = {"all": problem.candidates} if problem.candidates else {}
    else:
        layers = sorted({u.layer for u in problem.candidates})
        groups = {f"L{layer}": tuple(u for u in problem.candidates if u.layer == layer) for layer in layers}
    nodes = []
    for name, units in groups.items():
        ordered = _ordered(units, problem, config, _root_rng(config, problem, name))
        audit = audit_size(len(ordered), config.audit)
        if audit and len(ordered) <= audit + 1:
            nodes += [_Node(index, name, 1, (u,), audit=True) for u in ordered]
            continue
        nodes.append(_Node(index, name, 0, ordered))
        if audit:
            rng = _root_rng(config, problem, name, salt=1)
            pick = sorted(rng.choice(len(ordered), audit, replace=False))
            nodes += [_Node(index, name, 1, (ordered[i],), audit=True) for i in pick]
    return nodes


def _split(node: _Node, problem: SearchProblem, config: SearchConfig) -> tuple[SplitStrategy, list[_Node]]:
    """Children of a strong group: by attribution sign at the root (if asked and possible), else halves."""
    units = node.units
    strategy: SplitStrategy = "bisect"
    if node.depth == 0 and config.sign_split_first and problem.scores is not None:
        left = tuple(u for u in units if (problem.score(u) or 0.0) >= 0.0)
        right = tuple(u for u in units if (problem.score(u) or 0.0) < 0.0)
        if left and right:
            return "score_sign", [_child(node, left), _child(node, right)]
        strategy = "bisect_fallback"
    mid = len(units) // 2
    return strategy, [_child(node, units[:mid]), _child(node, units[mid:])]


def _child(node: _Node, units: tuple[Unit, ...]) -> _Node:
    return _Node(node.problem_index, node.root, node.depth + 1, units)


def _decide(units: tuple[Unit, ...], evaluation: Evaluation) -> Decision:
    """Singletons become agonist / catastrophic / leaf_weak; larger groups split or prune."""
    if len(units) == 1:
        if evaluation.catastrophic:
            return "catastrophic"
        return "agonist" if evaluation.accepted else "leaf_weak"
    return "split" if evaluation.strong else "prune"


def _call_oracle(oracle: Oracle, queries: Sequence[Query]) -> list[SliceCounts]:
    """Call the oracle once and check it answered every query with valid counts."""
    answers = list(oracle(queries))
    if len(answers) != len(queries):
        raise DataError(f"oracle returned {len(answers)} results for {len(queries)} queries; need one each")
    checked = []
    for answer in answers:
        if not isinstance(answer, SliceCounts):
            if not (isinstance(answer, Sequence) and len(answer) in (4, 6)):
                raise DataError(f"oracle results must be SliceCounts; got {answer!r}")
            answer = SliceCounts(*answer)
        checked.append(answer)
    return checked


def _evaluate_level(
    frontier: list[_Node],
    problems: tuple[SearchProblem, ...],
    oracle: Oracle,
    memo: Memo,
    remaining: int | None,
    state: _State,
) -> dict[int, tuple[SliceCounts, bool]]:
    """Counts for the frontier nodes this level can afford: memo hits plus ONE oracle call.

    Returns ``{frontier position: (counts, memo_hit)}``; positions beyond the budget are absent.
    """
    answered: dict[int, tuple[SliceCounts, bool]] = {}
    pending: list[int] = []
    for pos, node in enumerate(frontier):
        key = (problems[node.problem_index].key, node.units[0])
        if len(node.units) == 1 and key in memo:
            answered[pos] = (memo[key], True)
        else:
            pending.append(pos)
    if remaining is not None:
        pending = pending[:remaining]
    if pending:
        queries = [Query(problems[frontier[p].problem_index].key, frontier[p].units) for p in pending]
        state.oracle_calls += 1
        for pos, counts in zip(pending, _call_oracle(oracle, queries), strict=True):
            answered[pos] = (counts, False)
            node = frontier[pos]
            if len(node.units) == 1:
                memo[(problems[node.problem_index].key, node.units[0])] = counts
    return answered


@dataclass
class _LevelView:
    """What one level tells about each root: its strong groups and its audited singletons."""

    groups: Counter[tuple[int, str]] = field(default_factory=Counter)
    strong: Counter[tuple[int, str]] = field(default_factory=Counter)
    sizes: Counter[tuple[int, str]] = field(default_factory=Counter)
    audited: Counter[tuple[int, str]] = field(default_factory=Counter)
    audited_strong: Counter[tuple[int, str]] = field(default_factory=Counter)

    def add(self, node: _Node, evaluation: Evaluation) -> None:
        root = (node.problem_index, node.root)
        if len(node.units) > 1:
            self.groups[root] += 1
            self.strong[root] += evaluation.strong
            self.sizes[root] += len(node.units)
        elif node.audit:
            self.audited[root] += 1
            self.audited_strong[root] += evaluation.strong

    def group_density(self, root: tuple[int, str]) -> float:
        """Unit density implied by the share of this level's groups of the root that are strong."""
        if self.groups[root] <= 1:
            return 0.0
        return density_from_groups(self.strong[root], self.groups[root], self.sizes[root] / self.groups[root])

    def density(self, root: tuple[int, str], state: _State) -> float:
        """The root's unit density: the larger of the audit's and this level's group estimate."""
        return max(state.audit_density.get(root, 0.0), self.group_density(root))


def _process_level(
    level: int,
    frontier: list[_Node],
    answered: dict[int, tuple[SliceCounts, bool]],
    problems: tuple[SearchProblem, ...],
    config: SearchConfig,
    state: _State,
    memo: Memo,
) -> tuple[list[_Node], list[_Node]]:
    """Record a decision for every answered node; return (next frontier, unanswered nodes)."""
    evaluations = {pos: evaluate_counts(counts, config) for pos, (counts, _hit) in answered.items()}
    view = _LevelView()
    for pos, evaluation in evaluations.items():
        view.add(frontier[pos], evaluation)
    for root, n in view.audited.items():
        tally = state.audit_tally.setdefault(root, [0, 0])
        tally[0] += view.audited_strong[root]
        tally[1] += n
        state.audit_density[root] = density_from_audit(*tally)
    state.decided |= {
        (frontier[pos].problem_index, frontier[pos].units[0])
        for pos in answered
        if len(frontier[pos].units) == 1
    }
    next_frontier: list[_Node] = []
    unanswered: list[_Node] = []
    for pos, node in enumerate(frontier):
        if pos not in answered:
            unanswered.append(node)
            continue
        counts, memo_hit = answered[pos]
        problem = problems[node.problem_index]
        evaluation = evaluations[pos]
        decision = _decide(node.units, evaluation)
        strategy: SplitStrategy | None = None
        if decision == "prune" and _holds_accepted(node, problem, config, memo):
            decision, strategy = "split", "nonmonotone"
            state.rescued[node.problem_index] += 1
        if decision == "split":
            strategy, children = _children(node, problem, config, state, view, memo, strategy)
            next_frontier.extend(
                c for c in children if len(c.units) > 1 or (c.problem_index, c.units[0]) not in state.decided
            )
        if node.audit and not memo_hit:
            state.audits[node.problem_index] += 1
        counter = state.memo_hits if memo_hit else state.evaluations
        counter[node.problem_index] += 1
        state.records.append(
            TraceRecord(
                problem.key,
                level,
                node.depth,
                node.root,
                node.units,
                counts,
                evaluation,
                decision,
                strategy,
                memo_hit,
                node.audit,
            )
        )
    if config.audit and config.expand_dense:
        next_frontier += _more_audits(level, next_frontier, problems, config, state, view)
    return next_frontier, unanswered


def _more_audits(
    level: int,
    frontier: list[_Node],
    problems: tuple[SearchProblem, ...],
    config: SearchConfig,
    state: _State,
    view: _LevelView,
) -> list[_Node]:
    """Audit more singletons of a root whose audit cannot yet decide between halving its open groups
    and testing them one by one (at most 4 audits' worth per root; roots of 16 units and more)."""
    open_units: dict[tuple[int, str], list[Unit]] = {}
    sizes: dict[tuple[int, str], list[int]] = {}
    queued = {(n.problem_index, n.units[0]) for n in frontier if len(n.units) == 1}
    for node in frontier:
        if len(node.units) > 1:
            root = (node.problem_index, node.root)
            sizes.setdefault(root, []).append(len(node.units))
            open_units.setdefault(root, []).extend(
                u
                for u in node.units
                if (node.problem_index, u) not in state.decided and (node.problem_index, u) not in queued
            )
    extra: list[_Node] = []
    for root, units in open_units.items():
        strong, audited = state.audit_tally.get(root, [0, 0])
        size = round(sum(sizes[root]) / len(sizes[root]))
        audit = state.root_audit.get(root, config.audit)
        if audit < 4 or audited >= 4 * audit or len(units) <= audit:
            continue  # roots under 16 units: a round of one to three singletons would tell little
        if audit_is_decisive(strong, audited, size, view.group_density(root)):
            continue
        problem = problems[root[0]]
        rng = _root_rng(config, problem, root[1], salt=2 + level)
        pick = sorted(rng.choice(len(units), audit, replace=False))
        extra += [_Node(root[0], root[1], level + 2, (units[i],), audit=True) for i in pick]
    return extra


def _holds_accepted(node: _Node, problem: SearchProblem, config: SearchConfig, memo: Memo) -> bool:
    """A weak group holding a singleton already known to be accepted: effects are not monotone here."""
    return any(
        (problem.key, unit) in memo and evaluate_counts(memo[(problem.key, unit)], config).accepted
        for unit in node.units
    )


def _children(
    node: _Node,
    problem: SearchProblem,
    config: SearchConfig,
    state: _State,
    view: _LevelView,
    memo: Memo,
    forced: SplitStrategy | None,
) -> tuple[SplitStrategy, list[_Node]]:
    """Halves of a strong group, or its singletons where the root's density says halving costs more."""
    if config.expand_dense and forced is None and len(node.units) > 2:
        untested = sum((problem.key, u) not in memo for u in node.units)
        if should_expand(len(node.units), untested, view.density((node.problem_index, node.root), state)):
            state.expanded[node.problem_index] += 1
            return "singletons", [_child(node, (u,)) for u in node.units]
    strategy, children = _split(node, problem, config)
    return forced or strategy, children


def search(
    problems: Sequence[SearchProblem],
    oracle: Oracle,
    config: SearchConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    memo: Memo | None = None,
) -> SearchResult:
    """Run CHA level-synchronously over many problems sharing one oracle.

    Each depth is ONE oracle call holding every open group of every problem (in problem, root,
    left-to-right order); level 0 also holds each root's audit singletons. ``memo`` maps
    ``(problem key, unit)`` to a singleton's counts; it is read and updated in place, so a singleton
    is never evaluated twice, even across calls (a memo is only valid while each problem key keeps
    the same prompt slices and oracle settings). ``progress`` is called after each level with
    ``(group evaluations so far, groups open for the next level)``. With ``config.budget``, the last
    affordable level is evaluated partially in frontier order and the groups left over are returned
    in ``unexplored``.
    """
    config = config or SearchConfig()
    problems = _check_problems(problems)
    memo = {} if memo is None else memo
    state = _State.for_problems(len(problems))
    frontier = [node for i, p in enumerate(problems) for node in _roots(i, p, config)]
    state.root_audit = {
        (n.problem_index, n.root): audit_size(len(n.units), config.audit) for n in frontier if n.depth == 0
    }
    level, unexplored = 0, []
    while frontier:
        remaining = None if config.budget is None else config.budget - sum(state.evaluations)
        answered = _evaluate_level(frontier, problems, oracle, memo, remaining, state)
        frontier, unanswered = _process_level(level, frontier, answered, problems, config, state, memo)
        logger.debug("CHA level %d: %d groups answered, %d open", level, len(answered), len(frontier))
        if progress is not None:
            progress(sum(state.evaluations), len(frontier))
        if unanswered:
            unexplored = unanswered + frontier
            break
        level += 1
    return _result(problems, state, unexplored)


def _result(problems: tuple[SearchProblem, ...], state: _State, unexplored: list[_Node]) -> SearchResult:
    """Assemble agonists, catastrophic units and per-problem statistics from the trace."""
    ranks = [p.score_ranks() for p in problems]
    index = {p.key: i for i, p in enumerate(problems)}
    agonists = [
        _make_agonist(r, problems[index[r.problem]], ranks[index[r.problem]])
        for r in state.records
        if r.decision == "agonist"
    ]
    catastrophic = [
        CatastrophicUnit(r.problem, r.units[0], r.counts)
        for r in state.records
        if r.decision == "catastrophic"
    ]
    levels = [0] * len(problems)
    for record in state.records:
        levels[index[record.problem]] = max(levels[index[record.problem]], record.depth + 1)
    n_agonists = Counter(index[a.problem] for a in agonists)
    n_catastrophic = Counter(index[c.problem] for c in catastrophic)
    stats = tuple(
        ProblemStats(
            p.key,
            len(p.candidates),
            state.evaluations[i],
            state.memo_hits[i],
            levels[i],
            n_agonists[i],
            n_catastrophic[i],
            state.audits[i],
            state.expanded[i],
            state.rescued[i],
        )
        for i, p in enumerate(problems)
    )
    return SearchResult(
        tuple(agonists),
        tuple(catastrophic),
        tuple(state.records),
        stats,
        sum(state.evaluations),
        state.oracle_calls,
        truncated=bool(unexplored),
        unexplored=tuple(Query(problems[n.problem_index].key, n.units) for n in unexplored),
    )


def _make_agonist(record: TraceRecord, problem: SearchProblem, ranks: Mapping[Unit, int]) -> Agonist:
    """The :class:`Agonist` of a singleton record accepted by the predicate."""
    unit = record.units[0]
    ev = record.evaluation
    return Agonist(
        problem.key,
        unit,
        ev.covered,
        ev.unrelated,
        ev.max_upper,
        ev.contrast_lower,
        problem.score(unit),
        ranks.get(unit),
    )


def bound(k: int, n: int, audit: int = 0) -> float:
    """Intervention bound ``3·k·log2(N/k) + 2k + 1 + audit`` for k strong units among N in one root.

    Adaptive binary splitting evaluates the root plus both children of every strong group; the
    strong groups are the ancestors of the k strong units, at most ``k·log2(N/k) + k`` of them, so the
    cost is ≤ ``2k·log2(N/k) + 2k + 1``. The factor 3 leaves room for unbalanced halves (N not a
    power of two) and the extra level of the sign split; ``audit`` adds the audited singletons (at
    most 4 × ``SearchConfig.audit`` per root: the root's audit and up to three more rounds). For
    k = 0 it is the root plus the audit. "Strong" is judged by the pruning statistic (answer changes
    by default), so k may exceed the number of agonists.
    """
    if n < 1 or not 0 <= k <= n:
        raise ConfigError(f"bound needs 0 <= k <= n and n >= 1; got k={k!r}, n={n!r}")
    if k == 0:
        return 1.0 + min(audit, n)
    return 3.0 * k * math.log2(n / k) + 2.0 * k + 1.0 + min(audit, n)
