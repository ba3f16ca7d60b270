"""Executors: where a stage's group evaluations run (this process, or Ray actors on many GPUs).

See :mod:`.base` for the seam, :mod:`.work` for the data that crosses it, ``docs/scaling.md`` for
running on a Ray cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from mecharule.executor.base import Executor, LocalExecutor
from mecharule.executor.work import AblationData, BatchResult, GroupBatch, ProblemData, TableData

if TYPE_CHECKING:
    from mecharule.config import RunConfig
    from mecharule.interventions.engine import AblationEngine


def make_executor(config: RunConfig, engines: Mapping[str, AblationEngine]) -> Executor:
    """The configured executor (``executor.kind``); the local one runs on ``engines``."""
    if config.executor.kind == "local":
        return LocalExecutor(engines)
    from mecharule.executor.ray_executor import RayExecutor

    return RayExecutor(config, workers=config.executor.workers, address=config.executor.ray_address)


__all__ = [
    "AblationData",
    "BatchResult",
    "Executor",
    "GroupBatch",
    "LocalExecutor",
    "ProblemData",
    "TableData",
    "make_executor",
]
