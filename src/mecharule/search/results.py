"""What a search returns: the query trace, agonists, catastrophic units and per-problem cost."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

from mecharule.search.predicates import Evaluation, SliceEffect
from mecharule.search.types import Query, SliceCounts, Unit

__all__ = [
    "AGONIST_COLUMNS",
    "Agonist",
    "CatastrophicUnit",
    "Decision",
    "ProblemStats",
    "SearchResult",
    "SplitStrategy",
    "TraceRecord",
]

Decision = Literal["split", "prune", "agonist", "catastrophic", "leaf_weak"]
SplitStrategy = Literal["score_sign", "bisect_fallback", "bisect", "singletons", "nonmonotone"]


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
