"""Between the executor's plain data and the ablation engine: tables to and from numpy, a batch run."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import torch

from mecharule.executor.work import BatchResult, GroupBatch, TableData
from mecharule.interventions.engine import AblationEngine
from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.values import ValueTable
from mecharule.models.sites import Site


def table_data(tables: Mapping[SiteKey, ValueTable]) -> dict[tuple[int, str], TableData]:
    """The tables as numpy float32 (exact for float16 and bfloat16 values too)."""
    return {
        (int(layer), str(kind)): TableData(t.values.detach().float().cpu().numpy(), int(t.min_offset))
        for (layer, kind), t in tables.items()
    }


def value_tables(
    data: Mapping[tuple[int, str], TableData], device: torch.device, dtype: torch.dtype
) -> dict[SiteKey, ValueTable]:
    return {
        key: ValueTable(torch.tensor(np.asarray(t.values), device=device, dtype=dtype), t.min_offset)  # type: ignore[misc]
        for key, t in data.items()
    }


@lru_cache(maxsize=1 << 20)
def _site(name: str) -> Site:
    """``Site.parse``, once per name: a search sends the same units level after level."""
    return Site.parse(name)


def run_batch(engine: AblationEngine, batch: GroupBatch) -> BatchResult:
    """Evaluate a batch's groups on ``engine``; the result carries the engine work it cost."""
    forwards, rows = engine.stats.forwards, engine.stats.generated_rows
    outcome = engine.run([[_site(name) for name in group] for group in batch.groups])
    return BatchResult(
        outcome.labels,
        tuple(outcome.changed_answers),
        engine.stats.forwards - forwards,
        engine.stats.generated_rows - rows,
    )


__all__ = ["run_batch", "table_data", "value_tables"]
