"""Neuron-anchored rules: for every agonist and flip target, rules over prompt features that say
when ablating the agonist flips the behaviour. Selected on TRAIN rows, scored on held-out TEST rows
(primary) and all rows (descriptive). HQ = best test MCC >= threshold with coverage >= min_coverage.

Controls beside them: the permuted-label (fake target) control of every extraction, and random
non-agonist units of the same count put through the same flip + rule pipeline.

With a :class:`~mecharule.io.journal.Journal`, each unit's entry (one extractor fit per flip target)
is journaled as it is finished, keyed by the unit, the targets and a digest of the flip data it was
fitted on; a resumed run takes it from there instead of fitting again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mecharule.anchoring.flips import FLIP_TARGETS, flip_target
from mecharule.io.journal import Journal
from mecharule.io.rundir import json_default
from mecharule.rules.scoring import extract_and_score
from mecharule.rules.text import Glossary

HQ_THRESHOLDS = (0.70, 0.75, 0.80, 0.85, 0.90)
MIN_POSITIVES = 2


def _mcc(metrics: Mapping[str, Any] | None, scope: str) -> float:
    if not metrics or scope not in metrics:
        return float("nan")
    return float(metrics[scope].get("mcc") or 0.0)


@dataclass(frozen=True)
class AnchorFit:
    """How anchored rules are fitted and judged: the extractor with its options and seed, the
    features' glossary, the coverage a rule needs and the HQ threshold; ``journal``: where finished
    units are kept (None: nowhere)."""

    glossary: Glossary
    extractor: str
    options: Mapping[str, Any]
    seed: int
    min_coverage: float
    hq_threshold: float
    journal: Journal | None = None
    tick: Callable[[int], None] | None = None  # ticked once per unit anchored


def target_rules(X: pd.DataFrame, y: np.ndarray, is_test: np.ndarray, fit: AnchorFit) -> dict[str, Any]:
    n_pos = int(y[~is_test].sum())
    n_train = int((~is_test).sum())
    if n_pos < MIN_POSITIVES or n_train - n_pos < MIN_POSITIVES:
        return {
            "skipped": f"{n_pos} positives among {n_train} train rows (need {MIN_POSITIVES} of each class)"
        }
    scored = extract_and_score(
        X, y, is_test, extractor=fit.extractor, seed=fit.seed, options=dict(fit.options)
    )
    report = scored.to_dict(fit.glossary)
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
    fit: AnchorFit,
    targets: Sequence[str] = FLIP_TARGETS,
) -> list[dict[str, Any]]:
    """One entry per unit: flip rates, rules per flip target, the best target and its control.

    ``fit.journal``: keep each unit's entry there, and take those an earlier (killed) run kept."""
    X = features.iloc[flips["row"].to_numpy()].reset_index(drop=True)
    is_test = (flips["split"] == "test").to_numpy()
    journal = fit.journal
    out = []
    for unit in units:
        key = anchored_key(targets, unit, flips)
        entry = journal.get(key) if journal is not None else None
        if not isinstance(entry, dict):
            entry = _anchor_unit(flips, (X, is_test), unit, fit, targets)
            entry["best"] = best_target(entry["targets"], fit.min_coverage)
            entry["best_control"] = best_target(entry["targets"], fit.min_coverage, control=True)
            entry["hq"] = bool(entry["best"]["target"]) and entry["best"]["test_mcc"] >= fit.hq_threshold
            if journal is not None:
                entry = _plain(entry)  # as the journal will give it back (numpy scalars -> JSON)
                journal.put(key, entry)
        out.append(entry)
        if fit.tick is not None:
            fit.tick(1)
    return out


def _anchor_unit(
    flips: pd.DataFrame,
    data: tuple[pd.DataFrame, np.ndarray],
    unit: str,
    fit: AnchorFit,
    targets: Sequence[str],
) -> dict[str, Any]:
    """``data``: the features of the flip table's rows and which of them are TEST rows."""
    X, is_test = data
    per_target = {}
    rates = {}
    for target in targets:
        y = flip_target(flips, unit, target)
        rates[target] = round(float(y.mean()), 4)
        per_target[target] = target_rules(X, y, is_test, fit)
    return {"site": unit, "n_eval": len(flips), "flip_rates": rates, "targets": per_target}


def anchored_key(targets: Sequence[str], unit: str, flips: pd.DataFrame) -> str:
    """The journal key of a unit's anchored-rule entry: its targets and the flip data it is fitted on."""
    return f"anchored|{','.join(targets)}|{unit}|{_flip_digest(flips, unit)}"


def _flip_digest(flips: pd.DataFrame, unit: str) -> str:
    """Digest of what a unit's rules are fitted on: rows, split, baseline and its ablated labels."""
    digest = hashlib.blake2b(digest_size=12)
    for column in ("row", "split", "baseline", unit):
        digest.update(np.asarray(flips[column].astype(str).to_numpy(), dtype=str).tobytes())
    return digest.hexdigest()


def _plain(entry: dict[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = json.loads(json.dumps(entry, default=json_default))
    return plain
