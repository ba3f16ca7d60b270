"""The work an executor is given, as plain data: problems to open, batches of groups to evaluate.

A :class:`ProblemData` is everything a model replica needs to build the ablation engine of one
localization problem exactly as the driver built it: its prompt rows with their stored labels, the
rows the driver dropped, and the ablation (value tables as numpy arrays, positions, memory
budget). A :class:`GroupBatch` names the units of each group by their site names. Nothing here
holds a model, a tensor or an open file, so it travels to another process or machine as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class TableData:
    """One site's ablation values: ``values[offset - min_offset, unit]``."""

    values: np.ndarray
    min_offset: int


@dataclass(frozen=True)
class AblationData:
    """The ablation every problem of a stage shares: value tables, positions, memory budget (MB)."""

    tables: Mapping[tuple[int, str], TableData]
    positions: str
    memory_mb: int


@dataclass(frozen=True)
class ProblemData:
    """One problem's prompt rows as the driver's engine got them (before it dropped any), their
    stored labels, the rows the driver dropped (its re-measured baseline disagreed), the ablation."""

    key: str
    columns: Mapping[str, list[Any]]  # the prompt rows, column by column (prompt, answer, label, ...)
    dropped: tuple[int, ...]
    ablation: AblationData

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(dict(self.columns))

    @classmethod
    def of(
        cls, key: str, prompts: pd.DataFrame, dropped: Sequence[int], ablation: AblationData
    ) -> ProblemData:
        columns = {str(c): prompts[c].tolist() for c in prompts.columns}
        return cls(key, columns, tuple(int(i) for i in dropped), ablation)


@dataclass(frozen=True)
class GroupBatch:
    """Groups of one problem to evaluate; each group a tuple of site names (``"L3.mlp[17]"``)."""

    key: str
    groups: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, key: str, groups: Sequence[Sequence[object]]) -> GroupBatch:
        return cls(key, tuple(tuple(str(u) for u in group) for group in groups))


@dataclass(frozen=True)
class BatchResult:
    """Labels ``# [groups, prompts]`` under ablation, the (group, prompt) rows whose answer changed,
    and the engine work it cost."""

    labels: np.ndarray
    changed: tuple[tuple[int, int], ...] = ()
    forwards: int = 0
    generated_rows: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def effects(self, baseline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``# [groups, prompts]`` bool twice: did the label flip, did the answer change at all?"""
        changed = np.zeros(self.labels.shape, dtype=bool)
        for g, p in self.changed:
            changed[g, p] = True
        return self.labels != baseline[None, :], changed


__all__ = ["AblationData", "BatchResult", "GroupBatch", "ProblemData", "TableData"]
