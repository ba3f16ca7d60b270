"""The group tree of one problem: its roots (per layer or across layers), the order of their units
(by |attribution score| or a seeded shuffle) and how a strong group splits (by score sign at the
root, else into halves)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mecharule.search.density import audit_size
from mecharule.search.results import SplitStrategy
from mecharule.search.types import SearchConfig, SearchProblem, Unit

__all__ = ["Node", "child", "root_rng", "roots", "split"]


@dataclass(frozen=True)
class Node:
    """An open group: which problem, which root, how deep, which units (in their fixed order).

    ``audit`` marks a singleton drawn at level 0 to estimate the root's density (:mod:`.density`).
    """

    problem_index: int
    root: str
    depth: int
    units: tuple[Unit, ...]
    audit: bool = False


def root_rng(config: SearchConfig, problem: SearchProblem, root: str, salt: int = 0) -> np.random.Generator:
    """One independent stream per (seed, problem key, root name[, salt]), stable across processes,
    batches and the presence of other layers."""
    spawn_key = (zlib.crc32(str(problem.key).encode()), zlib.crc32(root.encode()), salt)
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=spawn_key))


def ordered_units(
    units: Sequence[Unit], problem: SearchProblem, config: SearchConfig, rng: np.random.Generator
) -> tuple[Unit, ...]:
    """Units by |score| descending (stable) if ``order_by_score`` and scores exist, else shuffled."""
    if config.order_by_score and problem.scores is not None:
        return tuple(sorted(units, key=lambda u: -abs(problem.score(u) or 0.0)))
    return tuple(units[i] for i in rng.permutation(len(units)))


def roots(index: int, problem: SearchProblem, config: SearchConfig) -> list[Node]:
    """The level-0 nodes of one problem: one group per layer (ascending) or one over all layers, each
    with its audit singletons. A root no larger than its audit + 1 is tested unit by unit instead."""
    if config.group_across_layers:
        groups = {"all": problem.candidates} if problem.candidates else {}
    else:
        layers = sorted({u.layer for u in problem.candidates})
        groups = {f"L{layer}": tuple(u for u in problem.candidates if u.layer == layer) for layer in layers}
    nodes = []
    for name, units in groups.items():
        ordered = ordered_units(units, problem, config, root_rng(config, problem, name))
        audit = audit_size(len(ordered), config.audit)
        if audit and len(ordered) <= audit + 1:
            nodes += [Node(index, name, 1, (u,), audit=True) for u in ordered]
            continue
        nodes.append(Node(index, name, 0, ordered))
        if audit:
            rng = root_rng(config, problem, name, salt=1)
            pick = sorted(rng.choice(len(ordered), audit, replace=False))
            nodes += [Node(index, name, 1, (ordered[i],), audit=True) for i in pick]
    return nodes


def split(node: Node, problem: SearchProblem, config: SearchConfig) -> tuple[SplitStrategy, list[Node]]:
    """Children of a strong group: by attribution sign at the root (if asked and possible), else halves."""
    units = node.units
    strategy: SplitStrategy = "bisect"
    if node.depth == 0 and config.sign_split_first and problem.scores is not None:
        left = tuple(u for u in units if (problem.score(u) or 0.0) >= 0.0)
        right = tuple(u for u in units if (problem.score(u) or 0.0) < 0.0)
        if left and right:
            return "score_sign", [child(node, left), child(node, right)]
        strategy = "bisect_fallback"
    mid = len(units) // 2
    return strategy, [child(node, units[:mid]), child(node, units[mid:])]


def child(node: Node, units: tuple[Unit, ...]) -> Node:
    return Node(node.problem_index, node.root, node.depth + 1, units)
