"""The flip table: every agonist ablated alone on an evaluation sample, against the baseline
re-measured on the same decoding path (prompts whose label does not reproduce are dropped).

Units are run in pieces of a few screening batches (:func:`~mecharule.localization.oracle.groups_per_piece`)
by the configured executor (this process, or Ray replicas; see ``docs/scaling.md``); with a
:class:`~mecharule.io.journal.Journal`, each unit's label column is journaled (with the kept rows it
belongs to) as its piece finishes, and a resumed run takes it from there without engine work.
The baseline pass (which rows are kept) is recomputed on resume.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mecharule.context import StageContext
from mecharule.executor import BatchResult, Executor, GroupBatch, LocalExecutor
from mecharule.interventions.engine import AblationEngine
from mecharule.io.journal import Journal
from mecharule.localization.oracle import EngineInputs, groups_per_piece
from mecharule.models.sites import Site
from mecharule.random_streams import stream

FLIP_TARGETS = ("any", "true_to_false", "false_to_true")


def agonists_from_summary(summary: Mapping[str, Any], limit: int) -> list[tuple[Site, float]]:
    """Distinct non-catastrophic agonists over all problems with their best max-effect, strongest first."""
    best: dict[Site, float] = {}
    for problem in summary.get("problems", []):
        for agonist in problem.get("agonists", []):
            site = Site.parse(agonist["unit"])
            best[site] = max(best.get(site, 0.0), float(agonist.get("max_upper", 0.0)))
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:limit]


def evaluation_rows(n_rows: int, max_rows: int, seed: int) -> np.ndarray:
    if n_rows <= max_rows:
        return np.arange(n_rows)
    return np.sort(stream(seed, "anchor.rows").choice(n_rows, size=max_rows, replace=False))


def flip_table(
    ctx: StageContext,
    inputs: EngineInputs,
    behaviour: pd.DataFrame,
    rows: np.ndarray,
    units: Sequence[Site],
    tick: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, int]:
    """``row, split, baseline`` + one bool column per unit (its label under ablation); dropped count.

    The units' columns are computed by the configured executor (``executor.kind``); with
    ``ctx.journal``, each unit's column is kept there, and those an earlier (killed) run kept are
    taken from it. ``tick(n)``: n more units' columns are done."""
    from mecharule.localization.runner import executing_engines

    source = behaviour.iloc[rows].reset_index(drop=True)
    engine = inputs.engine(source, stored_labels=behaviour["label"].to_numpy(bool)[rows])
    kept = np.delete(rows, engine.dropped)
    table = pd.DataFrame(
        {"row": kept, "split": behaviour["split"].to_numpy()[kept], "baseline": engine.baseline_labels}
    )
    with executing_engines(ctx, {FLIPS: (engine, source)}, inputs) as executor:
        ticking = _Ticking(executor, tick)
        columns = unit_labels(engine, units, kept, ctx.journal, ticking)
    if tick is not None:
        tick(len(units) - ticking.done)  # the columns taken from the journal
    for unit in units:
        table[str(unit)] = columns[unit]
    return table, len(engine.dropped)


FLIPS = "flips"  # the flip table's problem key for the executor


class _Ticking:
    """An executor whose every finished batch also ticks a progress bar by its groups."""

    def __init__(self, executor: Executor, tick: Callable[[int], None] | None) -> None:
        self.executor, self.tick = executor, tick
        self.name, self.local = executor.name, executor.local
        self.done = 0

    def open(self, problems: Any) -> None:
        self.executor.open(problems)

    def run(self, batches: Sequence[GroupBatch], on_result: Callable[[int, BatchResult], None]) -> None:
        def finished(index: int, result: BatchResult) -> None:
            on_result(index, result)
            self.done += len(batches[index].groups)
            if self.tick is not None:
                self.tick(len(batches[index].groups))

        self.executor.run(batches, finished)

    def close(self) -> None:
        self.executor.close()


def unit_labels(
    engine: AblationEngine,
    units: Sequence[Site],
    kept: np.ndarray,
    journal: Journal | None = None,
    executor: Executor | None = None,
) -> dict[Site, np.ndarray]:
    """Per unit, ``# [kept prompts]`` bool labels under its ablation alone, computed in pieces by
    ``executor`` (default: on ``engine`` here) and journaled per piece as each finishes."""
    kept_rows = [int(r) for r in kept]
    columns: dict[Site, np.ndarray] = {}
    for unit in units:
        done = journal.get(flips_key(unit)) if journal is not None else None
        if (
            isinstance(done, dict)
            and done.get("rows") == kept_rows
            and len(done.get("labels", ())) == len(kept)
        ):
            columns[unit] = np.asarray(done["labels"], dtype=bool)
    todo = [u for u in units if u not in columns]
    size = groups_per_piece(engine)
    pieces = [todo[start : start + size] for start in range(0, len(todo), size)]

    def finished(index: int, result: BatchResult) -> None:
        piece = pieces[index]
        for unit, column in zip(piece, result.labels, strict=True):  # [units, kept prompts]
            columns[unit] = np.asarray(column, dtype=bool)
        if journal is not None:
            journal.put_many(
                (flips_key(u), {"rows": kept_rows, "labels": columns[u].tolist()}) for u in piece
            )

    executor = executor or LocalExecutor({FLIPS: engine})
    executor.run([GroupBatch.of(FLIPS, [[u] for u in piece]) for piece in pieces], finished)
    return columns


def flips_key(unit: Site | str) -> str:
    """The journal key of a unit's flip column."""
    return f"flips|{unit}"


def flip_target(table: pd.DataFrame, unit: str, target: str) -> np.ndarray:
    base, ablated = table["baseline"].to_numpy(bool), table[unit].to_numpy(bool)
    if target == "any":
        return base != ablated
    if target == "true_to_false":
        return base & ~ablated
    return ~base & ablated
