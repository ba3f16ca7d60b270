"""The executor seam: where the group evaluations of a stage run.

A stage opens its problems once (:class:`~.work.ProblemData`: prompt rows and ablation, as data) and
then hands batches of groups (:class:`~.work.GroupBatch`) to :meth:`Executor.run`, which calls
``on_result(index, result)`` as each batch finishes, in any order, so the caller can journal a
finished batch at once. :class:`LocalExecutor` evaluates on the driver's own engines, in order (the
default); :class:`~.ray_executor.RayExecutor` on model replicas held by Ray actors. For the same
seed both give the same labels, so every result of a run is the same whichever executes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from mecharule.executor.work import BatchResult, GroupBatch, ProblemData
from mecharule.interventions.engine import AblationEngine

OnResult = Callable[[int, BatchResult], None]


class Executor(Protocol):
    name: str
    #: whether the work is done on the driver's own engines (its counters already hold it)
    local: bool

    def open(self, problems: Mapping[str, ProblemData]) -> None: ...

    def run(self, batches: Sequence[GroupBatch], on_result: OnResult) -> None: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Batches run one after the other on the driver's engines (``{problem key: engine}``)."""

    name = "local"
    local = True

    def __init__(self, engines: Mapping[str, AblationEngine]) -> None:
        self.engines = engines

    def open(self, problems: Mapping[str, ProblemData]) -> None:
        missing = sorted(set(problems) - set(self.engines))
        if missing:
            raise KeyError(f"no engine for problems {missing}")

    def run(self, batches: Sequence[GroupBatch], on_result: OnResult) -> None:
        from mecharule.executor.engines import run_batch

        for index, batch in enumerate(batches):
            on_result(index, run_batch(self.engines[batch.key], batch))

    def close(self) -> None:
        return None


__all__ = ["Executor", "LocalExecutor", "OnResult"]
