"""Features: named, described, vectorised functions of a task's prompt table.

A feature maps the task's prompt table (one row per prompt, with the task's metadata columns) to a
float64 column. ``NaN`` means *not applicable* (e.g. "carries in addition" on a multiplication):
it is stored as NaN in ``features.parquet``, never silently filled, and the rule extractor treats it
as missing exactly as XGBoost does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from mecharule.errors import DataError

FeatureKind = Literal["binary", "count", "numeric"]


@dataclass(frozen=True)
class Feature:
    """One interpretable prompt feature.

    ``description`` is the readable form used when rules are rendered; for a binary feature it
    reads as a statement ("operator is *"), for a numeric one as a noun ("carries in a + b").
    ``not_applicable`` documents when the feature returns NaN (empty: never).
    """

    name: str
    description: str
    compute: Callable[[pd.DataFrame], np.ndarray]
    kind: FeatureKind = "numeric"
    not_applicable: str = ""
    origin: Literal["seed", "proposed"] = "seed"

    def definition(self) -> dict[str, str]:
        return {
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "not_applicable": self.not_applicable,
            "origin": self.origin,
        }


def compute_feature_table(features: Sequence[Feature], prompts: pd.DataFrame) -> pd.DataFrame:
    """Evaluate every feature on the prompt table; columns in the given (stable) order."""
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"duplicate feature names {dupes}; every feature needs a unique name")
    columns: dict[str, np.ndarray] = {}
    for feature in features:
        values = np.asarray(feature.compute(prompts), dtype=np.float64)
        if values.shape != (len(prompts),):
            raise DataError(
                f"feature {feature.name!r} returned shape {values.shape}, expected ({len(prompts)},)"
            )
        columns[feature.name] = values
    return pd.DataFrame(columns, index=prompts.index)
