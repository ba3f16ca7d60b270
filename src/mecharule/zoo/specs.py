"""Organism specifications: which task, which training distribution, which model shape.

The arithmetic organism is deliberately narrow (d_model 32, d_mlp 64, 2 layers): width decides
whether single units matter (DESIGN.md §6) and multiplication is sampled twice as often so that it
is learned imperfectly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mecharule.errors import UnknownNameError


@dataclass(frozen=True)
class ModelShape:
    architecture: str = "qwen2"
    d_model: int = 32
    d_mlp: int = 64
    n_layers: int = 2
    n_heads: int = 4


@dataclass(frozen=True)
class TrainingSchedule:
    steps: int = 5000
    batch_size: int = 256
    lr: float = 3e-3
    warmup: int = 200
    weight_decay: float = 0.01


@dataclass(frozen=True)
class OrganismSpec:
    """How to build one organism: a task, a training-pair sampler, a shape and a schedule."""

    name: str
    task: str
    task_options: dict[str, Any]
    # (prompt table of the task, seed) -> (train prompts, train answers, sampling weights)
    training_pairs: Callable[[pd.DataFrame, int], tuple[list[str], list[str], np.ndarray]]
    shape: ModelShape = field(default_factory=ModelShape)
    schedule: TrainingSchedule = field(default_factory=TrainingSchedule)
    heldout_fraction: float = 0.1
    slice_column: str = "operator"


def _arithmetic_pairs(table: pd.DataFrame, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    weights = np.where(table["operator"].to_numpy() == "*", 2.0, 1.0)
    return table["prompt"].tolist(), table["truth"].astype(str).tolist(), weights / weights.sum()


SPECS: dict[str, OrganismSpec] = {
    "arithmetic": OrganismSpec(
        name="arithmetic",
        task="arithmetic",
        task_options={"operators": "+-*", "min_operand": 0, "max_operand": 99},
        training_pairs=_arithmetic_pairs,
    ),
}


def organism_spec(name: str) -> OrganismSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise UnknownNameError(f"unknown organism {name!r}; trainable organisms: {', '.join(sorted(SPECS))}") from None
