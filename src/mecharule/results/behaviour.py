"""The measure stage's result: ``behaviour.parquet``, ``features.parquet`` and ``features.json``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from mecharule.io.rundir import BEHAVIOUR_COLUMNS
from mecharule.results.artifacts import load_json, load_table, save_json, save_table
from mecharule.results.display import html_table, number


@dataclass(frozen=True, eq=False)
class Behaviour:
    """One row per prompt: the model's answer, its label (correct / jailbroken ...) and split, beside
    the feature table (same row order) and the features' definitions.

    ``table``: ``prompt, answer, label`` (bool), ``split`` and the task's metadata columns;
    ``features``: one float64 column per feature, NaN = not applicable; ``definitions``: one dict per
    feature (``name, description, kind, ...``); ``provenance``: task, options, model, positive label.
    ``raw`` is ``features.json`` as read (the proposal log, shots ...).
    """

    table: pd.DataFrame
    features: pd.DataFrame
    provenance: Mapping[str, Any] = field(default_factory=dict)
    features_provenance: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] | None = None

    FILES: ClassVar[tuple[str, ...]] = ("behaviour.parquet", "features.parquet", "features.json")

    @property
    def definitions(self) -> tuple[Mapping[str, Any], ...]:
        return tuple((self.raw or {}).get("features") or ())

    @property
    def n_prompts(self) -> int:
        return len(self.table)

    @property
    def accuracy(self) -> float:
        """Share of prompts whose label is True (correct answers; for a jailbreak task, jailbroken)."""
        return float(self.table["label"].mean()) if len(self.table) else 0.0

    @property
    def positive_label(self) -> str:
        return str(self.provenance.get("positive_label") or "positive")

    def accuracy_by(self, column: str) -> pd.Series:
        """Share of True labels per value of a metadata column (e.g. ``operator``)."""
        return self.table.groupby(column, sort=True)["label"].mean()

    @classmethod
    def load(cls, run_dir: str | Path) -> Behaviour:
        run_dir = Path(run_dir)
        table, provenance = load_table(run_dir, "behaviour.parquet", BEHAVIOUR_COLUMNS)
        features, features_provenance = load_table(run_dir, "features.parquet")
        raw = load_json(run_dir, "features.json") if (run_dir / "features.json").exists() else None
        return cls(table, features, provenance, features_provenance, raw)

    def save(self, run_dir: str | Path) -> None:
        run_dir = Path(run_dir)
        save_table(run_dir, "behaviour.parquet", self.table, dict(self.provenance))
        save_table(run_dir, "features.parquet", self.features, dict(self.features_provenance))
        if self.raw is not None:
            save_json(run_dir, "features.json", dict(self.raw))

    def __str__(self) -> str:
        return (
            f"{self.n_prompts:,} prompts, {self.positive_label} {self.accuracy:.3f}, "
            f"{self.features.shape[1]} features"
        )

    def _repr_html_(self) -> str:
        rows = [
            ("prompts", self.n_prompts),
            (self.positive_label, self.accuracy),
            ("features", self.features.shape[1]),
            ("task", self.provenance.get("task")),
            ("model", self.provenance.get("model")),
        ]
        return html_table(("", "value"), [(k, number(v, 3)) for k, v in rows], "behaviour")
