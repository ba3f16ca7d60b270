"""Brute force: every candidate ablated alone with CHA's own predicate, and CHA's recall of its agonists
by effect bin. Imports no torch."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from mecharule.errors import ConfigError
from mecharule.search.ledger import Ledger, assemble_result, call_oracle, check_problems, decide
from mecharule.search.predicates import evaluate_counts
from mecharule.search.results import Agonist, CatastrophicUnit, ProblemStats, SearchResult, TraceRecord
from mecharule.search.types import Memo, Oracle, Query, SearchConfig, SearchProblem, Unit

__all__ = [
    "DEFAULT_BINS",
    "BinRecall",
    "BruteForceResult",
    "RecallReport",
    "brute_force",
    "recall_by_effect_bin",
]


DEFAULT_BINS: tuple[tuple[float, float], ...] = ((0.2, 0.3), (0.3, 0.5), (0.5, 1.0001))


@dataclass(frozen=True)
class BruteForceResult:
    """Every candidate ablated alone, judged by the same predicate as CHA (``records``: one per unit)."""

    agonists: tuple[Agonist, ...]
    catastrophic: tuple[CatastrophicUnit, ...]
    records: tuple[TraceRecord, ...]
    problems: tuple[ProblemStats, ...]
    group_evaluations: int
    oracle_calls: int

    @property
    def n_singletons(self) -> int:
        """N: the number of singleton ablations an exhaustive sweep costs (all candidates)."""
        return sum(p.n_candidates for p in self.problems)


def brute_force(
    problems: Sequence[SearchProblem],
    oracle: Oracle,
    config: SearchConfig | None = None,
    *,
    chunk_size: int | None = None,
    memo: Memo | None = None,
) -> BruteForceResult:
    """Ablate every candidate alone: one oracle call (or one per ``chunk_size`` queries).

    Singletons already in ``memo`` are reused (and fresh ones added). ``config.budget`` is ignored.
    """
    config = config or SearchConfig()
    problems = check_problems(problems)
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"chunk_size must be None or >= 1; got {chunk_size!r}")
    memo = {} if memo is None else memo
    todo = [Query(p.key, (u,)) for p in problems for u in p.candidates if (p.key, u) not in memo]
    size = chunk_size or max(len(todo), 1)
    state = Ledger.for_problems(len(problems))
    for start in range(0, len(todo), size):
        chunk = todo[start : start + size]
        state.oracle_calls += 1
        for query, counts in zip(chunk, call_oracle(oracle, chunk), strict=True):
            memo[(query.problem, query.units[0])] = counts
    fresh = {(q.problem, q.units[0]) for q in todo}
    for i, problem in enumerate(problems):
        for unit in problem.candidates:
            counts = memo[(problem.key, unit)]
            evaluation = evaluate_counts(counts, config)
            hit = (problem.key, unit) not in fresh
            (state.memo_hits if hit else state.evaluations)[i] += 1
            state.records.append(
                TraceRecord(
                    problem.key,
                    0,
                    0,
                    f"L{unit.layer}",
                    (unit,),
                    counts,
                    evaluation,
                    decide((unit,), evaluation),
                    None,
                    hit,
                )
            )
    result = assemble_result(problems, state, [])
    return BruteForceResult(
        result.agonists,
        result.catastrophic,
        result.trace,
        result.problems,
        result.group_evaluations,
        state.oracle_calls,
    )


@dataclass(frozen=True)
class BinRecall:
    """Recall of the reference (brute-force) agonists whose effect statistic lies in ``[low, high)``."""

    low: float
    high: float
    n_reference: int
    n_found: int
    missed: tuple[tuple[Hashable, Unit], ...]

    @property
    def recall(self) -> float | None:
        return self.n_found / self.n_reference if self.n_reference else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "low": self.low,
            "high": self.high,
            "n_reference": self.n_reference,
            "n_found": self.n_found,
            "recall": self.recall,
            "missed": [[str(p), str(u)] for p, u in self.missed],
        }


@dataclass(frozen=True)
class RecallReport:
    """CHA versus brute force on the problems both ran.

    ``by_upper`` bins agonists by the reference's ``max_effect`` = max over slices of the CP upper
    bound; ``by_point`` by the max over slices of the observed flip rate (an agonist whose point
    estimate is below the first bin falls in no bin). ``cost_ratio`` = CHA group evaluations / N
    singleton evaluations (not the reference's 2N − 1), counted on the same problems only.
    """

    by_upper: tuple[BinRecall, ...]
    by_point: tuple[BinRecall, ...]
    n_reference: int
    n_found: int
    cha_evaluations: int
    n_singletons: int

    @property
    def recall(self) -> float | None:
        return self.n_found / self.n_reference if self.n_reference else None

    @property
    def cost_ratio(self) -> float | None:
        return self.cha_evaluations / self.n_singletons if self.n_singletons else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``validation.json``)."""
        return {
            "recall": self.recall,
            "n_reference": self.n_reference,
            "n_found": self.n_found,
            "cha_evaluations": self.cha_evaluations,
            "n_singletons": self.n_singletons,
            "cost_ratio": self.cost_ratio,
            "by_upper": [b.to_dict() for b in self.by_upper],
            "by_point": [b.to_dict() for b in self.by_point],
        }


def _bin_recall(
    reference: Sequence[Agonist],
    found: set[tuple[Hashable, Unit]],
    bins: Sequence[tuple[float, float]],
    statistic: Callable[[Agonist], float],
) -> tuple[BinRecall, ...]:
    """Recall of ``reference`` agonists per half-open bin of ``statistic``."""
    out = []
    for low, high in bins:
        members = [(a.problem, a.unit) for a in reference if low <= statistic(a) < high]
        missed = tuple(m for m in members if m not in found)
        out.append(BinRecall(low, high, len(members), len(members) - len(missed), missed))
    return tuple(out)


def recall_by_effect_bin(
    bf: BruteForceResult,
    cha: SearchResult,
    bins: Sequence[tuple[float, float]] = DEFAULT_BINS,
) -> RecallReport:
    """Recall of brute-force agonists found by CHA, overall and per effect bin, plus the cost ratio."""
    for low, high in bins:
        if not low < high:
            raise ConfigError(f"each bin must be (low, high) with low < high; got {(low, high)!r}")
    common = {p.problem for p in bf.problems} & {p.problem for p in cha.problems}
    reference = [a for a in bf.agonists if a.problem in common]
    found = {(a.problem, a.unit) for a in cha.agonists}
    return RecallReport(
        by_upper=_bin_recall(reference, found, bins, lambda a: a.max_upper),
        by_point=_bin_recall(reference, found, bins, lambda a: max(a.covered.rate, a.unrelated.rate)),
        n_reference=len(reference),
        n_found=sum((a.problem, a.unit) in found for a in reference),
        cha_evaluations=sum(p.group_evaluations for p in cha.problems if p.problem in common),
        n_singletons=sum(p.n_candidates for p in bf.problems if p.problem in common),
    )
