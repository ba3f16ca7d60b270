"""Metrics of a rule (its firing mask) against a binary target.

Degenerate cases are defined, never NaN: a ratio whose denominator is zero is 0 (precision when the
rule never fires, recall when there are no positives, lift when the prevalence or the firing count
is zero), MCC is 0 when any margin of the confusion table is zero (as scikit-learn's
``matthews_corrcoef``), and balanced accuracy averages the rates of the classes that are present.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mecharule.errors import DataError


@dataclass(frozen=True)
class RuleMetrics:
    """Confusion counts and derived scores of a firing mask against a binary target."""

    n: int
    n_pos: int
    n_fire: int
    tp: int
    fp: int
    fn: int
    tn: int
    coverage: float
    prevalence: float
    precision: float
    recall: float
    f1: float
    mcc: float
    balanced_accuracy: float
    lift: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuleMetrics:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def mcc_from_counts(tp: Any, fp: Any, fn: Any, tn: Any) -> Any:
    """Matthews correlation from counts; works elementwise on arrays; 0 where a margin is zero."""
    tp, fp, fn, tn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn, tn))
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    num = tp * tn - fp * fn
    with np.errstate(invalid="ignore", divide="ignore"):
        mcc = np.where(den > 0, num / np.sqrt(np.where(den > 0, den, 1.0)), 0.0)
    return mcc if mcc.ndim else float(mcc)


def metrics_from_counts(tp: int, fp: int, fn: int, tn: int) -> RuleMetrics:
    """All metrics from the four confusion counts."""
    n = tp + fp + fn + tn
    n_pos, n_neg, n_fire = tp + fn, fp + tn, tp + fp
    precision, recall = _ratio(tp, n_fire), _ratio(tp, n_pos)
    prevalence = _ratio(n_pos, n)
    rates = [r for r, present in ((recall, n_pos > 0), (_ratio(tn, n_neg), n_neg > 0)) if present]
    return RuleMetrics(
        n=n,
        n_pos=n_pos,
        n_fire=n_fire,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        coverage=_ratio(n_fire, n),
        prevalence=prevalence,
        precision=precision,
        recall=recall,
        f1=_ratio(2 * precision * recall, precision + recall),
        mcc=float(mcc_from_counts(tp, fp, fn, tn)),
        balanced_accuracy=float(np.mean(rates)) if rates else 0.0,
        lift=_ratio(precision, prevalence) if n_fire else 0.0,
    )


def rule_metrics(fire: np.ndarray, y: np.ndarray) -> RuleMetrics:
    """Metrics of a boolean firing mask against a boolean (or 0/1) target of the same length."""
    fire = np.asarray(fire, dtype=bool)
    target = np.asarray(y)
    if fire.shape != target.shape or fire.ndim != 1:
        raise DataError(f"firing mask shape {fire.shape} and target shape {target.shape} must be equal 1-D")
    target = target.astype(bool)
    tp = int(np.count_nonzero(fire & target))
    fp = int(np.count_nonzero(fire & ~target))
    fn = int(np.count_nonzero(~fire & target))
    return metrics_from_counts(tp, fp, fn, len(target) - tp - fp - fn)
