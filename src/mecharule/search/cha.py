"""Contrastive Hierarchical Ablation (CHA): adaptive group testing for agonist units. Imports no torch.

A *problem* is one rule in one baseline regime: candidate units, optional signed attribution scores,
and two prompt slices (covered by the rule, unrelated to it) held by the oracle. The oracle ablates a
group of units jointly and returns flip counts on both slices (:class:`~.types.SliceCounts`).

The search ablates whole groups and only splits the groups that matter:

1. Roots: one group per layer (default) or all candidates at once; each root's units are ordered by
   |score| (``order_by_score``, when scores exist) or by a seeded shuffle.
2. Level by level, the whole frontier — every open group of every layer of every problem — goes to
   the oracle in ONE call. Singletons already known (``memo``) are not re-evaluated.
3. A group that is not *strong* is pruned; a strong group is split in two: at the root by the sign of
   the attribution score (``sign_split_first``), otherwise into halves of its ordered units.
4. A singleton is an *agonist* if it is accepted by the predicate and not *catastrophic* (it flips
   every prompt of both slices); catastrophic units are reported apart.

Layout: the inputs (:class:`~.types.SearchProblem`, :class:`~.types.SearchConfig`, the oracle's
:class:`~.types.SliceCounts`) are in :mod:`.types`; what strong and accepted mean (the predicates
``ucb``, ``observed``, ``contrastive``) in :mod:`.predicates`; roots, orders and splits of the group
tree in :mod:`.tree`; the trace and agonists returned in :mod:`.results`; this module runs the loop.

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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mecharule.errors import ConfigError
from mecharule.search.density import (
    audit_is_decisive,
    audit_size,
    density_from_audit,
    density_from_groups,
    should_expand,
)
from mecharule.search.ledger import Ledger, assemble_result, call_oracle, check_problems, decide
from mecharule.search.predicates import Evaluation, evaluate_counts
from mecharule.search.results import SearchResult, SplitStrategy, TraceRecord
from mecharule.search.tree import Node, child, root_rng, roots, split
from mecharule.search.types import Memo, Oracle, Query, SearchConfig, SearchProblem, SliceCounts, Unit

__all__ = ["bound", "search"]

logger = logging.getLogger(__name__)


def _evaluate_level(
    frontier: list[Node],
    problems: tuple[SearchProblem, ...],
    oracle: Oracle,
    memo: Memo,
    remaining: int | None,
    state: Ledger,
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
        for pos, counts in zip(pending, call_oracle(oracle, queries), strict=True):
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

    def add(self, node: Node, evaluation: Evaluation) -> None:
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

    def density(self, root: tuple[int, str], state: Ledger) -> float:
        """The root's unit density: the larger of the audit's and this level's group estimate."""
        return max(state.audit_density.get(root, 0.0), self.group_density(root))


def _process_level(
    level: int,
    frontier: list[Node],
    answered: dict[int, tuple[SliceCounts, bool]],
    problems: tuple[SearchProblem, ...],
    config: SearchConfig,
    state: Ledger,
    memo: Memo,
) -> tuple[list[Node], list[Node]]:
    """Record a decision for every answered node; return (next frontier, unanswered nodes)."""
    evaluations = {pos: evaluate_counts(counts, config) for pos, (counts, _hit) in answered.items()}
    view = _tally(frontier, evaluations, state)
    next_frontier: list[Node] = []
    unanswered: list[Node] = []
    for pos, node in enumerate(frontier):
        if pos not in answered:
            unanswered.append(node)
            continue
        counts, memo_hit = answered[pos]
        problem = problems[node.problem_index]
        evaluation = evaluations[pos]
        decision = decide(node.units, evaluation)
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


def _tally(frontier: list[Node], evaluations: dict[int, Evaluation], state: Ledger) -> _LevelView:
    """The level's view of its answered nodes; the audit densities and decided singletons updated."""
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
        for pos in evaluations
        if len(frontier[pos].units) == 1
    }
    return view


def _more_audits(
    level: int,
    frontier: list[Node],
    problems: tuple[SearchProblem, ...],
    config: SearchConfig,
    state: Ledger,
    view: _LevelView,
) -> list[Node]:
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
    extra: list[Node] = []
    for root, units in open_units.items():
        strong, audited = state.audit_tally.get(root, [0, 0])
        size = round(sum(sizes[root]) / len(sizes[root]))
        audit = state.root_audit.get(root, config.audit)
        if audit < 4 or audited >= 4 * audit or len(units) <= audit:
            continue  # roots under 16 units: a round of one to three singletons would tell little
        if audit_is_decisive(strong, audited, size, view.group_density(root)):
            continue
        problem = problems[root[0]]
        rng = root_rng(config, problem, root[1], salt=2 + level)
        pick = sorted(rng.choice(len(units), audit, replace=False))
        extra += [Node(root[0], root[1], level + 2, (units[i],), audit=True) for i in pick]
    return extra


def _holds_accepted(node: Node, problem: SearchProblem, config: SearchConfig, memo: Memo) -> bool:
    """A weak group holding a singleton already known to be accepted: effects are not monotone here."""
    return any(
        (problem.key, unit) in memo and evaluate_counts(memo[(problem.key, unit)], config).accepted
        for unit in node.units
    )


def _children(
    node: Node,
    problem: SearchProblem,
    config: SearchConfig,
    state: Ledger,
    view: _LevelView,
    memo: Memo,
    forced: SplitStrategy | None,
) -> tuple[SplitStrategy, list[Node]]:
    """Halves of a strong group, or its singletons where the root's density says halving costs more."""
    if config.expand_dense and forced is None and len(node.units) > 2:
        untested = sum((problem.key, u) not in memo for u in node.units)
        if should_expand(len(node.units), untested, view.density((node.problem_index, node.root), state)):
            state.expanded[node.problem_index] += 1
            return "singletons", [child(node, (u,)) for u in node.units]
    strategy, children = split(node, problem, config)
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
    problems = check_problems(problems)
    memo = {} if memo is None else memo
    state = Ledger.for_problems(len(problems))
    frontier = [node for i, p in enumerate(problems) for node in roots(i, p, config)]
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
    return assemble_result(problems, state, unexplored)


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
