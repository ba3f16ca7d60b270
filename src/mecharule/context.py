"""What every stage works with: one :class:`StageContext` instead of ten parameters.

It holds the run's config, its directory, the model and the task (loaded on first use, so a stage
that needs no model loads none), the ``auto`` sizes resolved for that model and device, the named
random streams (:mod:`mecharule.random_streams`), the progress factory, a ``notify`` callback for
one-line messages, and the journal of the stage running now (``None`` outside a pipeline stage).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mecharule.config import RunConfig
from mecharule.estimates import Notify
from mecharule.io.journal import Journal
from mecharule.io.rundir import RunDir
from mecharule.models.loading import ZOO_PREFIX, ModelHandle, load_model
from mecharule.progress import ProgressFactory, silent
from mecharule.random_streams import stream
from mecharule.sizing import Sizing, resolve_sizing
from mecharule.tasks.base import Task, make_task

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    config: RunConfig
    rundir: RunDir
    load_handle: Callable[[], ModelHandle] | None = None  # default: load config.model
    load_task: Callable[[], Task] | None = None  # default: run_task(config)
    load_sizing: Callable[[], Sizing] | None = None  # default: resolved for the model on first use
    progress: ProgressFactory = silent
    notify: Notify = field(default=log.info)
    journal: Journal | None = None
    model_in_memory: bool = False  # the model was passed in, not loaded by name (cannot be shipped)

    @classmethod
    def of(
        cls,
        handle: ModelHandle,
        task: Task,
        run_dir: RunDir | Path,
        config: RunConfig | None = None,
        journal: Journal | None = None,
    ) -> StageContext:
        """A context around a model and task already in memory (tests, notebooks, benchmarks)."""
        rundir = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
        return cls(config or RunConfig(), rundir, lambda: handle, lambda: task, journal=journal)

    @cached_property
    def handle(self) -> ModelHandle:
        if self.load_handle is not None:
            return self.load_handle()
        cfg = self.config.model
        return load_model(cfg.name, device=cfg.device, dtype=cfg.dtype)

    @cached_property
    def task(self) -> Task:
        return self.load_task() if self.load_task is not None else run_task(self.config)

    @cached_property
    def sizing(self) -> Sizing:
        """The ``auto`` settings resolved for this model on this device."""
        if self.load_sizing is not None:
            return self.load_sizing()
        cfg = self.config
        return resolve_sizing(
            self.handle, cfg.task.max_prompts, cfg.executor.batch_size, cfg.executor.memory_budget_mb
        )

    @property
    def memory_budget_mb(self) -> int:
        budget = self.config.executor.memory_budget_mb
        return self.sizing.memory_budget_mb if budget == "auto" else budget

    @property
    def path(self) -> Path:
        return self.rundir.path

    @property
    def seed(self) -> int:
        return self.config.seed

    def rng(self, name: str, *extra: int) -> np.random.Generator:
        """The named random stream ``name`` of this run (see :mod:`mecharule.random_streams`)."""
        return stream(self.config.seed, name, *extra)


def run_task(config: RunConfig) -> Task:
    """The configured task; a real (non-organism) model gets the task's real-model prompt format
    (``REAL_MODEL_FORMATS``) unless ``prompt_format`` is set."""
    return make_task(config.task.name, task_options(config))


def task_options(config: RunConfig) -> dict[str, Any]:
    from mecharule.tasks.formats import REAL_MODEL_FORMATS

    options = dict(config.task.options)
    real_format = REAL_MODEL_FORMATS.get(config.task.name)
    if "prompt_format" not in options and real_format and not is_organism(config.model.name):
        options["prompt_format"] = real_format
    return options


def is_organism(model_name: str) -> bool:
    """A model organism (``zoo:NAME``, a bundled organism's directory, or one ``mecharule zoo train``
    wrote, which holds its ``training_report.json``): the tasks' raw formats are its language."""
    if model_name.startswith(ZOO_PREFIX):
        return True
    from mecharule.zoo.registry import ORGANISMS_DIR

    try:
        path = Path(model_name).expanduser().resolve()
        return path.is_relative_to(ORGANISMS_DIR.resolve()) or _is_trained_organism(path)
    except (OSError, ValueError):
        return False


def _is_trained_organism(path: Path) -> bool:
    report = path / "training_report.json"
    if not report.is_file():
        return False
    try:
        return "organism" in json.loads(report.read_text())
    except (OSError, ValueError):
        return False


__all__ = ["StageContext", "is_organism", "run_task", "task_options"]
