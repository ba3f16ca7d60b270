"""The bookkeeping CHA and brute force share: checked problems and oracle answers, the decision on
each evaluated group, per-problem tallies, and the :class:`~.results.SearchResult` built from them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mecharule.errors import ConfigError, DataError
from mecharule.search.predicates import Evaluation
from mecharule.search.results import (
    Agonist,
    CatastrophicUnit,
    Decision,
    ProblemStats,
    SearchResult,
    TraceRecord,
)
from mecharule.search.tree import Node
from mecharule.search.types import Oracle, Query, SearchProblem, SliceCounts, Unit

__all__ = ["Ledger", "assemble_result", "call_oracle", "check_problems", "decide"]


@dataclass
class Ledger:
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
    def for_problems(cls, n: int) -> Ledger:
        return cls(evaluations=[0] * n, memo_hits=[0] * n, audits=[0] * n, expanded=[0] * n, rescued=[0] * n)


def check_problems(problems: Sequence[SearchProblem]) -> tuple[SearchProblem, ...]:
    """Validate a batch of problems: SearchProblem instances with distinct keys."""
    problems = tuple(problems)
    for problem in problems:
        if not isinstance(problem, SearchProblem):
            raise ConfigError(f"expected SearchProblem instances; got {type(problem).__name__}")
    keys = [p.key for p in problems]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"problem keys must be distinct; got {keys!r}")
    return problems


def decide(units: tuple[Unit, ...], evaluation: Evaluation) -> Decision:
    """Singletons become agonist / catastrophic / leaf_weak; larger groups split or prune."""
    if len(units) == 1:
        if evaluation.catastrophic:
            return "catastrophic"
        return "agonist" if evaluation.accepted else "leaf_weak"
    return "split" if evaluation.strong else "prune"


def call_oracle(oracle: Oracle, queries: Sequence[Query]) -> list[SliceCounts]:
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


def assemble_result(
    problems: tuple[SearchProblem, ...], state: Ledger, unexplored: list[Node]
) -> SearchResult:
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
