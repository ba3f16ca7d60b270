"""Feature filters: pure functions from a feature table to (kept table, dropped features with reasons).

Run them on TRAIN rows only, so the test split stays held out. NaN means "not applicable" and is
never filled in the returned table.

* :func:`drop_constant` — one distinct value, NaN counting as a value of its own
  (``[1, NaN]`` is not constant; an all-NaN column is).
* :func:`drop_low_predictive_power` — keep a feature if it separates the labels on its own:
  ``best AUC >= min_auc`` (default 0.55) OR ``standardised mean difference >= min_smd`` (default
  0.2). ``best AUC`` is the larger of max(AUC, 1 - AUC) on the rows where the feature applies and
  the same for its not-applicable indicator (so "applies only to multiplications" can count); the
  SMD is ``|mean_pos - mean_neg| / sqrt((var_pos + var_neg) / 2)`` on the applicable rows. The
  reference also kept every feature whose average precision beat the base rate, a clause nearly
  every positively oriented feature passes; it is not reproduced. Nothing is kept "because
  nothing passed": a table where every feature fails comes back empty, with reasons.
* :func:`drop_near_duplicates` — ``|Pearson r| >= 0.9999`` between two columns of the NaN → 0 copy;
  the earlier column wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from mecharule.errors import ConfigError, DataError

FilterName = Literal["constant", "predictive_power", "near_duplicate"]


@dataclass(frozen=True)
class DroppedFeature:
    """One feature a filter removed, and why."""

    name: str
    filter: FilterName
    reason: str


@dataclass(frozen=True)
class FilterResult:
    """The kept columns (same rows, original order) and the dropped ones."""

    table: pd.DataFrame
    dropped: tuple[DroppedFeature, ...] = ()

    @property
    def kept(self) -> list[str]:
        return [str(c) for c in self.table.columns]


def filter_features(
    table: pd.DataFrame,
    labels: Sequence[bool] | np.ndarray,
    *,
    min_auc: float = 0.55,
    min_smd: float = 0.2,
    duplicate_threshold: float = 0.9999,
) -> FilterResult:
    """Constant, then low predictive power, then near-duplicate filtering; drops accumulate."""
    dropped: list[DroppedFeature] = []
    result = drop_constant(table)
    dropped += result.dropped
    result = drop_low_predictive_power(result.table, labels, min_auc=min_auc, min_smd=min_smd)
    dropped += result.dropped
    result = drop_near_duplicates(result.table, threshold=duplicate_threshold)
    dropped += result.dropped
    return FilterResult(result.table, tuple(dropped))


def drop_constant(table: pd.DataFrame) -> FilterResult:
    """Drop columns with a single distinct value (NaN counts as a value)."""
    _check_numeric(table)
    dropped = []
    for name in table.columns:
        distinct = table[name].nunique(dropna=False)
        if distinct <= 1:
            value = "NaN" if table[name].isna().all() else repr(float(table[name].iloc[0]))
            dropped.append(DroppedFeature(str(name), "constant", f"constant (every row is {value})"))
    return _without(table, dropped)


def drop_near_duplicates(table: pd.DataFrame, threshold: float = 0.9999) -> FilterResult:
    """Drop a column whose |Pearson r| with an earlier KEPT column is >= ``threshold`` (NaN → 0)."""
    _check_numeric(table)
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"threshold must be in (0, 1], got {threshold}")
    corr = _abs_correlation(table.fillna(0.0).to_numpy(dtype=np.float64))  # [features, features]
    names = [str(c) for c in table.columns]
    kept: list[int] = []
    dropped = []
    for j, name in enumerate(names):
        if kept:
            best = max(kept, key=lambda i: corr[j, i])
            if corr[j, best] >= threshold:
                reason = f"near-duplicate of {names[best]!r} (|r| = {corr[j, best]:.6f} >= {threshold})"
                dropped.append(DroppedFeature(name, "near_duplicate", reason))
                continue
        kept.append(j)
    return _without(table, dropped)


def predictive_power(table: pd.DataFrame, labels: Sequence[bool] | np.ndarray) -> pd.DataFrame:
    """Per feature: ``best_auc`` (values or applicability, oriented) and ``smd``; one row per feature."""
    _check_numeric(table)
    y = _labels(labels, len(table))
    rows = {str(name): _column_power(table[name].to_numpy(dtype=np.float64), y) for name in table.columns}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["best_auc", "smd"])


def drop_low_predictive_power(
    table: pd.DataFrame, labels: Sequence[bool] | np.ndarray, *, min_auc: float = 0.55, min_smd: float = 0.2
) -> FilterResult:
    """Keep a feature if ``best_auc >= min_auc`` OR ``smd >= min_smd`` (see the module docstring)."""
    if not 0.5 <= min_auc <= 1.0:
        raise ConfigError(f"min_auc must be in [0.5, 1], got {min_auc}")
    if min_smd < 0:
        raise ConfigError(f"min_smd must be >= 0, got {min_smd}")
    power = predictive_power(table, labels)
    dropped = [
        DroppedFeature(name, "predictive_power",
                       f"weak: best AUC {row.best_auc:.3f} < {min_auc} and SMD {row.smd:.3f} < {min_smd}")
        for name, row in power.iterrows()
        if not (row.best_auc >= min_auc or row.smd >= min_smd)
    ]  # fmt: skip
    return _without(table, dropped)


def _column_power(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    applies = ~np.isnan(x)
    auc_values = _oriented_auc(x[applies], y[applies])
    auc_applies = _oriented_auc(applies.astype(np.float64), y)
    return max(auc_values, auc_applies), _smd(x[applies], y[applies])


def _oriented_auc(scores: np.ndarray, y: np.ndarray) -> float:
    """max(AUC, 1 - AUC) with average ranks for ties; 0.5 when a class is missing."""
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    auc = (ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(max(auc, 1.0 - auc))


def _smd(x: np.ndarray, y: np.ndarray) -> float:
    pos, neg = x[y], x[~y]
    if len(pos) == 0 or len(neg) == 0:
        return 0.0
    diff = abs(float(pos.mean() - neg.mean()))
    pooled = float(np.sqrt((pos.var() + neg.var()) / 2))
    if pooled == 0.0:
        return float("inf") if diff > 0 else 0.0
    return diff / pooled


def _abs_correlation(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0)
    norms = np.sqrt((centred**2).sum(axis=0))
    safe = np.where(norms > 0, norms, 1.0)
    z = centred / safe
    corr = np.abs(z.T @ z)
    corr[:, norms == 0] = 0.0  # a constant column correlates with nothing
    corr[norms == 0, :] = 0.0
    return corr


def _labels(labels: Sequence[bool] | np.ndarray, n_rows: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n_rows,):
        raise DataError(f"labels has shape {y.shape}; expected ({n_rows},), one per feature-table row")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise DataError("labels hold a single class; predictive power needs positive and negative rows")
    return y


def _check_numeric(table: pd.DataFrame) -> None:
    bad = [str(c) for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if bad:
        raise DataError(f"feature columns must be numeric; non-numeric: {bad}")


def _without(table: pd.DataFrame, dropped: list[DroppedFeature]) -> FilterResult:
    gone = {d.name for d in dropped}
    keep = [c for c in table.columns if str(c) not in gone]
    return FilterResult(table[keep], tuple(dropped))
