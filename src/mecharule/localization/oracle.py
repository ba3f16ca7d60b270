"""The ablation oracle: bridges the torch-free search and the batched engine.

One :class:`ProblemSlices` per (rule, regime): covered prompts first, unrelated prompts after, all
with the regime's baseline label (positive: the model was right / jailbroken; negative: it was not).
Baselines are re-measured on the engine's own decoding path; prompts whose label differs from the
stored one are dropped and counted (``dropped``), and the remaining counts define the slices.

The oracle hands each problem's groups to the engine in *pieces* of a few screening batches
(:func:`groups_per_piece`). With a :class:`~mecharule.io.journal.Journal`, every piece's answers
are journaled as soon as the engine returns them, and a query an earlier (killed) process answered
is served from the journal without touching the engine, so a kill loses at most the piece in flight.
The engine work a journaled answer cost (forwards, generated rows) is carried with it
(``replayed_work``), so a resumed stage reports the costs of one uninterrupted run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mecharule.executor.base import Executor, LocalExecutor
from mecharule.executor.work import BatchResult, GroupBatch
from mecharule.interventions.engine import AblationEngine
from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.values import PositionMode, ValueTable
from mecharule.io.journal import Journal
from mecharule.models.loading import ModelHandle
from mecharule.models.sites import Site
from mecharule.search.types import Query, SliceCounts
from mecharule.tasks.base import Task, stop_strings_of


@dataclass
class ProblemSlices:
    """The prompts of one search problem and its engine."""

    key: Hashable
    engine: AblationEngine
    is_covered: np.ndarray  # [prompts] bool, after dropping
    row_ids: np.ndarray  # [prompts] behaviour-table rows, after dropping
    dropped_rows: np.ndarray
    source: pd.DataFrame | None = None  # the prompt rows the engine was built on (before dropping)

    @property
    def n_covered(self) -> int:
        return int(self.is_covered.sum())

    @property
    def n_unrelated(self) -> int:
        return int((~self.is_covered).sum())


@dataclass(frozen=True)
class EngineInputs:
    """What every ablation engine of a stage shares: the model, the task (scorer, answer length,
    stop strings), the ablation values, the ablated positions and the engine's memory budget."""

    handle: ModelHandle
    task: Task
    tables: Mapping[SiteKey, ValueTable]
    positions: PositionMode
    memory_budget_mb: int | str

    def engine(self, prompts: pd.DataFrame, stored_labels: np.ndarray | None = None) -> AblationEngine:
        return AblationEngine(
            self.handle,
            prompts,
            self.task.score,
            self.tables,
            self.task.max_new_tokens,
            positions=self.positions,
            stored_labels=stored_labels,
            memory_budget_mb=self.memory_budget_mb,
            stop_strings=stop_strings_of(self.task),
        )


def build_problem(
    key: Hashable, behaviour: pd.DataFrame, slices: tuple[np.ndarray, np.ndarray], inputs: EngineInputs
) -> ProblemSlices:
    """The problem's prompts (covered ``slices[0]`` first, unrelated ``slices[1]`` after) and engine."""
    covered_rows, unrelated_rows = slices
    rows = np.concatenate([covered_rows, unrelated_rows]).astype(int)
    prompts = behaviour.iloc[rows].reset_index(drop=True)
    engine = inputs.engine(prompts, stored_labels=prompts["label"].to_numpy(bool))
    keep = np.ones(len(rows), dtype=bool)
    keep[engine.dropped] = False
    covered = np.concatenate([np.ones(len(covered_rows), bool), np.zeros(len(unrelated_rows), bool)])
    return ProblemSlices(key, engine, covered[keep], rows[keep], rows[~keep], prompts)


#: Screening batches per piece: the engine work between two journal writes. Diverging rows are
#: generated per piece, so larger pieces batch generation better and lose more to a kill.
PIECE_BATCHES = 4


def groups_per_piece(engine: AblationEngine, batches: int | None = None) -> int:
    """Groups the engine screens in ``batches`` (default :data:`PIECE_BATCHES`) forwards under its
    memory budget: a piece of this size is screened exactly as inside one larger ``run``."""
    batches = PIECE_BATCHES if batches is None else batches
    return engine.groups_per_forward * max(1, batches)


@dataclass
class EngineWork:
    """Engine work counted in a stage's summary."""

    forwards: int = 0
    generated_rows: int = 0

    @classmethod
    def of(cls, problems: Iterable[ProblemSlices]) -> EngineWork:
        engines = [p.engine.stats for p in problems]
        return cls(sum(s.forwards for s in engines), sum(s.generated_rows for s in engines))

    def __add__(self, other: EngineWork) -> EngineWork:
        return EngineWork(self.forwards + other.forwards, self.generated_rows + other.generated_rows)

    def __sub__(self, other: EngineWork) -> EngineWork:
        return EngineWork(self.forwards - other.forwards, self.generated_rows - other.generated_rows)


@dataclass(eq=False)
class EngineOracle:
    """Answers a list of queries (possibly of many problems) with per-slice flip counts.

    ``journal`` (optional) keeps every answer under ``namespace``; see the module docstring.
    ``computed`` counts queries the engine answered, ``replayed`` those served from the journal.
    ``executor`` runs the pieces (default: in order, on the problems' own engines); work done on
    other engines (Ray replicas) is counted in ``remote_work``.
    """

    problems: Mapping[Hashable, ProblemSlices]
    journal: Journal | None = None
    namespace: str = "oracle"
    executor: Executor | None = None
    calls: int = field(default=0, init=False)
    queries: int = field(default=0, init=False)
    computed: int = field(default=0, init=False)
    replayed: int = field(default=0, init=False)
    replayed_work: EngineWork = field(default_factory=EngineWork, init=False)
    remote_work: EngineWork = field(default_factory=EngineWork, init=False)
    progress: Callable[[int], None] | None = field(default=None, init=False)  # ticked per answer

    def journaled(self, journal: Journal | None, namespace: str) -> EngineOracle:
        """A fresh oracle over the same problems (and executor) whose answers go to ``journal``."""
        return EngineOracle(self.problems, journal, namespace, self.executor)

    def flips(self, key: Hashable, groups: Sequence[Sequence[Site]]) -> np.ndarray:
        """``# [groups, prompts]`` bool: did the label change under ablation of each group?"""
        return self.effects(key, groups)[0]

    def effects(self, key: Hashable, groups: Sequence[Sequence[Site]]) -> tuple[np.ndarray, np.ndarray]:
        """``# [groups, prompts]`` bool twice, on the driver's engine: did the label flip, did the
        answer change at all?"""
        engine = self.problems[key].engine
        outcome = engine.run(groups)
        return BatchResult(outcome.labels, tuple(outcome.changed_answers)).effects(engine.baseline_labels)

    def __call__(self, queries: Sequence[Query]) -> list[SliceCounts]:
        self.calls += 1
        self.queries += len(queries)
        results: list[SliceCounts | None] = [self._replay(q) for q in queries]
        if self.progress is not None:
            self.progress(sum(r is not None for r in results))
        by_problem: dict[Hashable, list[int]] = {}
        for i, query in enumerate(queries):
            if results[i] is None:
                by_problem.setdefault(query.problem, []).append(i)
        pieces: list[tuple[Hashable, list[int]]] = []
        for key, indices in by_problem.items():
            size = groups_per_piece(self.problems[key].engine)
            pieces += [(key, indices[start : start + size]) for start in range(0, len(indices), size)]
        batches = [GroupBatch.of(str(key), [queries[i].units for i in piece]) for key, piece in pieces]

        def answered(index: int, result: BatchResult) -> None:
            key, piece = pieces[index]
            for i, counts in zip(piece, self._answers(key, [queries[i] for i in piece], result), strict=True):
                results[i] = counts
            if self.progress is not None:
                self.progress(len(piece))

        self._executor().run(batches, answered)
        return [r for r in results if r is not None]

    def _executor(self) -> Executor:
        if self.executor is None:
            self.executor = LocalExecutor({str(k): p.engine for k, p in self.problems.items()})
        return self.executor

    def _answers(self, key: Hashable, queries: Sequence[Query], result: BatchResult) -> list[SliceCounts]:
        """The counts of one finished piece of one problem's queries; journal them."""
        problem = self.problems[key]
        flips, changed = result.effects(problem.engine.baseline_labels)
        answers = [_counts(row, moved, problem.is_covered) for row, moved in zip(flips, changed, strict=True)]
        self.computed += len(queries)
        if not self._executor().local:
            self.remote_work = self.remote_work + EngineWork(result.forwards, result.generated_rows)
        if self.journal is not None and answers:
            values = [[*_counts_list(a), 0, 0] for a in answers]
            values[-1][6:] = [result.forwards, result.generated_rows]  # the piece's work, counted once
            self.journal.put_many(zip([self.journal_key(q) for q in queries], values, strict=True))
        return answers

    def _replay(self, query: Query) -> SliceCounts | None:
        if self.journal is None:
            return None
        value = self.journal.get(self.journal_key(query))
        if not (isinstance(value, list) and len(value) == 8 and all(isinstance(v, int) for v in value)):
            return None
        self.replayed += 1
        self.replayed_work = self.replayed_work + EngineWork(value[6], value[7])
        return SliceCounts(*value[:6])

    def journal_key(self, query: Query) -> str:
        """``namespace|problem|n_units|digest of the sorted unit names``: a group is a set."""
        names = "\n".join(sorted(str(u) for u in query.units))
        digest = hashlib.blake2b(names.encode(), digest_size=12).hexdigest()
        return f"{self.namespace}|{query.problem}|{len(query.units)}|{digest}"


def _counts(flipped: np.ndarray, moved: np.ndarray, covered: np.ndarray) -> SliceCounts:
    """Per-slice counts of one group's ``# [prompts]`` flips and changed answers."""
    return SliceCounts(
        int(flipped[covered].sum()),
        int(covered.sum()),
        int(flipped[~covered].sum()),
        int((~covered).sum()),
        int(moved[covered].sum()),
        int(moved[~covered].sum()),
    )


def _counts_list(counts: SliceCounts) -> list[int | None]:
    return [
        counts.covered_flips, counts.covered_n, counts.unrelated_flips, counts.unrelated_n,
        counts.covered_changed, counts.unrelated_changed,
    ]  # fmt: skip


def _as_site(unit: object) -> Site:
    if not isinstance(unit, Site):
        raise TypeError(f"the engine oracle needs Site units, got {type(unit).__name__}")
    return unit
