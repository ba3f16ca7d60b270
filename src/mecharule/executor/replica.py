"""A model replica: what one executor worker holds (the model, the task, one engine per problem).

Built from the run's config as JSON (the model is loaded by name on the worker, never shipped), it
opens the problems it is given, re-measuring each baseline on its own device, and evaluates
batches of groups. Plain Python: the Ray executor wraps it in an actor; a test can use it as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mecharule.executor.work import BatchResult, GroupBatch, ProblemData


class Replica:
    def __init__(self, config: Mapping[str, Any], threads: int | None = None) -> None:
        import torch

        from mecharule.config import RunConfig
        from mecharule.context import run_task
        from mecharule.models.loading import load_model

        if threads:
            torch.set_num_threads(threads)
        self.config = RunConfig.model_validate(dict(config))
        cfg = self.config.model
        self.handle = load_model(cfg.name, device=cfg.device, dtype=cfg.dtype)
        self.task = run_task(self.config)
        self.engines: dict[str, Any] = {}

    def open(self, problems: Mapping[str, ProblemData]) -> dict[str, int]:
        """Build an engine per problem as the driver did; returns per problem how many rows this
        replica drops differently from the driver (0 unless its device or dtype differs)."""
        from mecharule.executor.engines import value_tables
        from mecharule.interventions.engine import AblationEngine
        from mecharule.tasks.base import stop_strings_of

        dtype = next(self.handle.model.parameters()).dtype
        disagree = {}
        for key, data in problems.items():
            prompts = data.frame()
            ablation = data.ablation
            engine = AblationEngine(
                self.handle,
                prompts,
                self.task.score,
                value_tables(ablation.tables, self.handle.device, dtype),
                self.task.max_new_tokens,
                positions=ablation.positions,  # type: ignore[arg-type]
                stored_labels=prompts["label"].to_numpy(bool),
                memory_budget_mb=ablation.memory_mb,
                stop_strings=stop_strings_of(self.task),
            )
            disagree[key] = len(set(engine.dropped.tolist()) ^ set(data.dropped))
            self.engines[key] = engine
        return disagree

    def run(self, batch: GroupBatch) -> BatchResult:
        from mecharule.executor.engines import run_batch

        return run_batch(self.engines[batch.key], batch)


__all__ = ["Replica"]
