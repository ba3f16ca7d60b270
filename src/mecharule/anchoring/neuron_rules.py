"""Neuron-anchored rules: for every agonist and flip target, rules over prompt features that say
when ablating the agonist flips the behaviour. Selected on TRAIN rows, scored on held-out TEST rows
(primary) and all rows (descriptive). HQ = best test MCC >= threshold with coverage >= min_coverage.

Controls beside them: the permuted-label (fake target) control of every extraction, and random
non-agonist units of the same count put through the same flip + rule pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mecharule.anchoring.flips import FLIP_TARGETS, flip_target
from mecharule.rules.scoring import extract_and_score
from mecharule.rules.text import Glossary

HQ_THRESHOLDS = (0.70, 0.75, 0.80, 0.85, 0.90)
MIN_POSITIVES = 2


def _mcc(metrics: Mapping[str, Any] | None, scope: str) -> float:
    if not metrics or scope not in metrics:
        return float("nan")
    return float(metrics[scope].get("mcc") or 0.0)


def target_rules(
    X: pd.DataFrame,
    y: np.ndarray,
    is_test: np.ndarray,
    glossary: Glossary,
    extractor: str,
    options: Mapping[str, Any],
    seed: int,
) -> dict[str, Any]:
    n_pos = int(y[~is_test].sum())
    n_train = int((~is_test).sum())
    if n_pos < MIN_POSITIVES or n_train - n_pos < MIN_POSITIVES:
        return {
            "skipped": f"{n_pos} positives among {n_train} train rows (need {MIN_POSITIVES} of each class)"
        }
    report = extract_and_score(X, y, is_test, extractor=extractor, seed=seed, options=dict(options)).to_dict(
        glossary
    )
    control = report.get("control") or {}
    return {
        "readable": report["rules"]["readable"],
        "text": report["rules"]["text"],
        "n_conditions": report["rules"]["n_conditions"],
        "metrics": {k: report["metrics"][k] for k in ("test", "train", "all")},
        "control": {
            "test_mcc": _mcc(control.get("metrics"), "test"),
            "all_mcc": _mcc(control.get("metrics"), "all"),
        },
        "reason": report.get("reason", ""),
    }


def best_target(
    targets: Mapping[str, Mapping[str, Any]], min_coverage: float, control: bool = False
) -> dict[str, Any]:
    """The flip target with the highest test MCC among rules firing on >= min_coverage of rows."""
    best: dict[str, Any] = {"target": None, "test_mcc": 0.0, "all_mcc": 0.0, "coverage": 0.0, "readable": ""}
    for name, entry in targets.items():
        if "metrics" not in entry:
            continue
        coverage = float(entry["metrics"]["all"]["coverage"])
        if coverage < min_coverage:
            continue
        test = entry["control"]["test_mcc"] if control else _mcc(entry["metrics"], "test")
        alls = entry["control"]["all_mcc"] if control else _mcc(entry["metrics"], "all")
        if best["target"] is None or test > best["test_mcc"]:
            best = {
                "target": name,
                "test_mcc": test,
                "all_mcc": alls,
                "coverage": coverage,
                "readable": "(rule fitted on permuted labels)" if control else entry["readable"],
            }
    return best


def hq_counts(bests: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    return {
        scope: {
            f"{t:.2f}": int(sum(b[f"{scope}_mcc"] >= t for b in bests if b["target"])) for t in HQ_THRESHOLDS
        }
        for scope in ("test", "all")
    }


def anchor_units(
    flips: pd.DataFrame,
    features: pd.DataFrame,
    units: Sequence[str],
    glossary: Glossary,
    *,
    extractor: str,
    options: Mapping[str, Any],
    seed: int,
    min_coverage: float,
    hq_threshold: float,
    targets: Sequence[str] = FLIP_TARGETS,
) -> list[dict[str, Any]]:
    X = features.iloc[flips["row"].to_numpy()].reset_index(drop=True)
    is_test = (flips["split"] == "test").to_numpy()
    out = []
    for unit in units:
        per_target = {}
        rates = {}
        for target in targets:
            y = flip_target(flips, unit, target)
            rates[target] = round(float(y.mean()), 4)
            per_target[target] = target_rules(X, y, is_test, glossary, extractor, options, seed)
        best = best_target(per_target, min_coverage)
        out.append(
            {
                "site": unit,
                "n_eval": len(flips),
                "flip_rates": rates,
                "targets": per_target,
                "best": best,
                "best_control": best_target(per_target, min_coverage, control=True),
                "hq": bool(best["target"]) and best["test_mcc"] >= hq_threshold,
            }
        )
    return out
