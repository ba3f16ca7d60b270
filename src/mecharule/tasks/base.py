"""The task interface: a dataset of prompts, how long to answer, how to score, which features.

A task is a small object satisfying :class:`Task`. Built-in tasks register a factory in
:data:`TASKS` by name, so a run can be rebuilt from its saved ``(name, options)``. Tasks outside the
package come in two ways: an installed package declares its factory in the ``mecharule.tasks``
entry-point group, or the task name is ``module:factory`` (imported on lookup, from ``sys.path``).
This module never imports the built-in tasks: :data:`TASKS` imports them on its first lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from mecharule.errors import ConfigError, MecharuleError
from mecharule.features.base import Feature
from mecharule.registry import Registry
from mecharule.tasks.options import check_task_options, describe_parameters, task_parameters


@runtime_checkable
class Task(Protocol):
    """What every task provides.

    ``prompts()`` returns a table with a ``prompt`` column (the exact text fed to the model, no
    chat template) plus the task's metadata columns (``metadata_columns``), one row per prompt,
    with no duplicate prompts. ``score`` maps answers (decoded generated text, special tokens
    skipped) to booleans: True = the *positive* behaviour named by ``positive_label``
    ("correct", "jailbroken"). ``group_column`` names a metadata column used to stratify the
    train/test split and summaries (e.g. ``operator``), or is None.

    Optional (read with the helpers below, so a minimal task need not define them):
    ``stop_strings`` (generation ends at the first token whose text holds one; the answer is cut
    before it), ``prompt_format`` (``raw`` | ``fewshot`` | ``chat``, see
    :mod:`mecharule.tasks.formats`), and ``parse_answers(answers) -> list[str | None]`` (the value
    each answer states, None when it states none), recorded in ``behaviour.parquet``.
    """

    @property
    def name(self) -> str: ...

    @property
    def max_new_tokens(self) -> int: ...

    @property
    def positive_label(self) -> str: ...

    @property
    def metadata_columns(self) -> tuple[str, ...]: ...

    @property
    def group_column(self) -> str | None: ...

    def prompts(self) -> pd.DataFrame: ...

    def score(self, prompts: pd.DataFrame, answers: Sequence[str]) -> np.ndarray: ...

    def seed_features(self) -> Sequence[Feature]: ...

    def options(self) -> dict[str, Any]: ...


TASK_MEMBERS = (
    "name",
    "max_new_tokens",
    "positive_label",
    "metadata_columns",
    "group_column",
    "prompts",
    "score",
    "seed_features",
    "options",
)


def stop_strings_of(task: Task) -> tuple[str, ...]:
    """The task's stop strings (none for tasks that do not declare any)."""
    return tuple(getattr(task, "stop_strings", ()))


TaskFactory = Callable[..., Task]
TASK_ENTRY_POINTS = "mecharule.tasks"
TASKS: Registry[TaskFactory] = Registry(
    "task", builtin="mecharule.tasks.builtin", entry_points=TASK_ENTRY_POINTS, importable=True
)


def make_task(name: str, options: dict[str, Any] | None = None) -> Task:
    """Build a task by name (registered, an entry point, or ``module:factory``) with keyword options
    (as saved in ``run.json``)."""
    factory = TASKS.get(name)
    if not callable(factory):
        raise ConfigError(f"task {name!r} is a {type(factory).__name__}, not a factory that returns a task")
    checked = check_task_options(name, factory, options or {})
    try:
        task = factory(**checked)
    except MecharuleError:
        raise
    except (TypeError, ValueError) as exc:  # a value the annotations let through but the task rejects
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(
            f"task {name!r} rejected its options ({type(exc).__name__}: {detail}); "
            f"its options (measure.task_options) are: {describe_parameters(task_parameters(factory) or {})}"
        ) from exc
    return _checked_task(name, task)


def _checked_task(name: str, task: object) -> Task:
    """The factory's result, if it has every member of :class:`Task`."""
    members = [m for m in TASK_MEMBERS if not hasattr(task, m)]
    if members:
        raise ConfigError(
            f"task {name!r}: its factory returned a {type(task).__name__} that lacks {', '.join(members)} "
            "(see the Task protocol in mecharule.tasks.base and docs/adding-a-task.md)"
        )
    return task  # type: ignore[return-value]
