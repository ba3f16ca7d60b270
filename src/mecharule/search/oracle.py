"""The ablation oracle: bridges the torch-free search and the batched engine.

One :class:`ProblemSlices` per (rule, regime): covered prompts first, unrelated prompts after, all
with the regime's baseline label (positive: the model was right / jailbroken; negative: it was not).
Baselines are re-measured on the engine's own decoding path; prompts whose label differs from the
stored one are dropped and counted (``dropped``), and the remaining counts define the slices.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mecharule.interventions.engine import AblationEngine, Scorer
from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.values import PositionMode, ValueTable
from mecharule.models.loading import ModelHandle
from mecharule.models.sites import Site
from mecharule.search.group_testing import Query, SliceCounts


@dataclass
class ProblemSlices:
    """The prompts of one search problem and its engine."""

    key: Hashable
    engine: AblationEngine
    is_covered: np.ndarray  # [prompts] bool, after dropping
    row_ids: np.ndarray  # [prompts] behaviour-table rows, after dropping
    dropped_rows: np.ndarray

    @property
    def n_covered(self) -> int:
        return int(self.is_covered.sum())

    @property
    def n_unrelated(self) -> int:
        return int((~self.is_covered).sum())


def build_problem(
    key: Hashable,
    handle: ModelHandle,
    behaviour: pd.DataFrame,
    covered_rows: np.ndarray,
    unrelated_rows: np.ndarray,
    scorer: Scorer,
    tables: Mapping[SiteKey, ValueTable],
    max_new_tokens: int,
    positions: PositionMode,
    memory_budget_mb: int | str,
    stop_strings: Sequence[str] = (),
) -> ProblemSlices:
    rows = np.concatenate([covered_rows, unrelated_rows]).astype(int)
    prompts = behaviour.iloc[rows].reset_index(drop=True)
    engine = AblationEngine(
        handle,
        prompts,
        scorer,
        tables,
        max_new_tokens,
        positions=positions,
        stored_labels=prompts["label"].to_numpy(bool),
        memory_budget_mb=memory_budget_mb,
        stop_strings=stop_strings,
    )
    keep = np.ones(len(rows), dtype=bool)
    keep[engine.dropped] = False
    covered = np.concatenate([np.ones(len(covered_rows), bool), np.zeros(len(unrelated_rows), bool)])
    return ProblemSlices(key, engine, covered[keep], rows[keep], rows[~keep])


class EngineOracle:
    """Answers a list of queries (possibly of many problems) with per-slice flip counts."""

    def __init__(self, problems: Mapping[Hashable, ProblemSlices]) -> None:
        self.problems = problems
        self.calls = 0
        self.queries = 0

    def flips(self, key: Hashable, groups: Sequence[Sequence[Site]]) -> np.ndarray:
        """``# [groups, prompts]`` bool: did the label change under ablation of each group?"""
        return self.effects(key, groups)[0]

    def effects(self, key: Hashable, groups: Sequence[Sequence[Site]]) -> tuple[np.ndarray, np.ndarray]:
        """``# [groups, prompts]`` bool twice: did the label flip, did the answer change at all?"""
        problem = self.problems[key]
        outcome = problem.engine.run(groups)
        changed = np.zeros(outcome.labels.shape, dtype=bool)
        for g, p in outcome.changed_answers:
            changed[g, p] = True
        return outcome.flips(problem.engine.baseline_labels), changed

    def __call__(self, queries: Sequence[Query]) -> list[SliceCounts]:
        self.calls += 1
        self.queries += len(queries)
        by_problem: dict[Hashable, list[int]] = {}
        for i, query in enumerate(queries):
            by_problem.setdefault(query.problem, []).append(i)
        results: list[SliceCounts | None] = [None] * len(queries)
        for key, indices in by_problem.items():
            problem = self.problems[key]
            groups = [[_as_site(u) for u in queries[i].units] for i in indices]
            flips, changed = self.effects(key, groups)
            cov = problem.is_covered
            for i, row, moved in zip(indices, flips, changed, strict=True):
                results[i] = SliceCounts(
                    int(row[cov].sum()), int(cov.sum()), int(row[~cov].sum()), int((~cov).sum()),
                    int(moved[cov].sum()), int(moved[~cov].sum()),
                )
        return [r for r in results if r is not None]


def _as_site(unit: object) -> Site:
    if not isinstance(unit, Site):
        raise TypeError(f"the engine oracle needs Site units, got {type(unit).__name__}")
    return unit
