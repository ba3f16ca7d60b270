"""Organism evaluation: held-out accuracy per slice and a one-by-one mean-ablation agonist sweep."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mecharule.decoding.generation import generate_answers
from mecharule.interventions.slow_path import ablated_answers
from mecharule.interventions.values import mean_tables
from mecharule.models.loading import ModelHandle
from mecharule.models.sites import UNIT_KINDS, Site
from mecharule.tasks.base import Task
from mecharule.zoo.specs import OrganismSpec


def heldout_accuracy(
    handle: ModelHandle, task: Task, table: pd.DataFrame, column: str
) -> tuple[dict[str, Any], np.ndarray]:
    answers = generate_answers(handle, table["prompt"].tolist(), task.max_new_tokens)
    labels = task.score(table, answers)
    per_slice = {
        str(k): round(float(labels[(table[column] == k).to_numpy()].mean()), 4)
        for k in sorted(table[column].unique())
    }
    return {
        "heldout_accuracy": round(float(labels.mean()), 4),
        "heldout_accuracy_by_slice": per_slice,
    }, labels


def agonist_sweep(
    handle: ModelHandle,
    task: Task,
    table: pd.DataFrame,
    labels: np.ndarray,
    column: str,
    seed: int,
    per_slice: int = 128,
    n_reference: int = 256,
) -> dict[str, Any]:
    """Flip rate of every unit alone (mean ablation, decode positions) on correct prompts per slice."""
    rng = np.random.default_rng(seed)
    slices: dict[str, np.ndarray] = {}
    for value in sorted(table[column].unique()):
        idx = np.flatnonzero((table[column] == value).to_numpy() & labels)
        if len(idx):
            slices[str(value)] = rng.choice(idx, size=min(per_slice, len(idx)), replace=False)
    ref = rng.choice(len(table), size=min(n_reference, len(table)), replace=False)
    ref_prompts = table["prompt"].iloc[ref].tolist()
    ref_answers = generate_answers(handle, ref_prompts, task.max_new_tokens)
    order = np.concatenate(list(slices.values()))
    sub = table.iloc[order].reset_index(drop=True)
    bounds = np.cumsum([0] + [len(v) for v in slices.values()])
    result: dict[str, Any] = {"slices": {k: len(v) for k, v in slices.items()}, "by_kind": {}}
    for kind in UNIT_KINDS:
        keys = [(layer, kind) for layer in range(handle.arch.n_layers)]
        tables = mean_tables(handle, keys, ref_prompts, ref_answers)
        units: list[dict[str, Any]] = []
        for layer in range(handle.arch.n_layers):
            for index in range(handle.arch.width(kind)):
                site = Site(layer, kind, index)
                answers = ablated_answers(
                    handle, sub["prompt"].tolist(), [site], tables, "decode", task.max_new_tokens
                )
                still = task.score(sub, answers)
                rates = {
                    name: round(float(1 - still[bounds[i] : bounds[i + 1]].mean()), 4)
                    for i, name in enumerate(slices)
                }
                units.append({"site": str(site), "flip_rate": rates})
        pairs = [r for u in units for r in u["flip_rate"].values()]
        result["by_kind"][kind] = {
            "n_units": len(units),
            "unit_slices_ge_0.2": int(sum(r >= 0.2 for r in pairs)),
            "unit_slices_ge_0.5": int(sum(r >= 0.5 for r in pairs)),
            "top": sorted(units, key=lambda u: -max(u["flip_rate"].values()))[:20],
        }
    return result


def evaluate_organism(
    handle: ModelHandle, task: Task, heldout: pd.DataFrame, spec: OrganismSpec, seed: int, sweep: bool = True
) -> dict[str, Any]:
    report, labels = heldout_accuracy(handle, task, heldout, spec.slice_column)
    if sweep:
        report["agonist_sweep"] = agonist_sweep(handle, task, heldout, labels, spec.slice_column, seed)
    return report
