"""Input validation shared by extractors: feature tables, binary targets, parameter tables."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from mecharule.errors import ConfigError, DataError

_FLOAT32_MAX = float(np.finfo(np.float32).max)

ParamCheck = tuple[Callable[[Any], bool], str]


def is_int(value: Any, low: int) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and bool(value >= low)


def is_real(value: Any, low: float, high: float, *, low_open: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return False
    value = float(value)
    return (value > low if low_open else value >= low) and value <= high


def check_params(owner: str, params: Mapping[str, Any], checks: Mapping[str, ParamCheck]) -> None:
    """Raise a ConfigError naming the first parameter that fails its check."""
    for name, (ok, allowed) in checks.items():
        value = params[name]
        if not ok(value):
            raise ConfigError(f"{owner}: parameter {name}={value!r} is invalid; allowed: {allowed}")


def feature_matrix(X: Any) -> tuple[np.ndarray, list[str]]:
    """Validate a feature table; return (float64 matrix [n_rows, n_features], names in given order).

    Accepts a DataFrame of numeric or bool columns (NaN = not applicable) or a 2-D numeric array
    (names ``x0, x1, ...``). Rejects non-numeric columns, duplicate names, infinities and values
    beyond float32 range (XGBoost stores features as float32).
    """
    if isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns]
        bad = [n for n, dtype in zip(names, X.dtypes, strict=True) if not _numeric_dtype(dtype)]
        if bad:
            raise DataError(f"feature columns must be numeric or bool; non-numeric columns: {bad}")
        if len(set(names)) != len(names):
            raise DataError(
                f"duplicate feature column names: {sorted({n for n in names if names.count(n) > 1})}"
            )
        matrix = X.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        try:
            matrix = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(
                "the feature matrix is not numeric; pass a DataFrame of numeric columns"
            ) from None
        if matrix.ndim != 2:
            raise DataError(f"expected a 2-D feature table, got an array of shape {matrix.shape}")
        names = [f"x{i}" for i in range(matrix.shape[1])]
    if matrix.shape[1] == 0:
        raise DataError("the feature table has no columns; at least one feature is needed")
    too_big = np.abs(np.nan_to_num(matrix, nan=0.0)) > _FLOAT32_MAX
    if too_big.any():
        cols = sorted({names[j] for j in np.flatnonzero(too_big.any(axis=0))})
        raise DataError(
            f"features {cols} contain infinite or > float32-max values; use NaN or a finite value"
        )
    return np.ascontiguousarray(matrix), names


def _numeric_dtype(dtype: Any) -> bool:
    return bool(pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype))


def binary_target(y: Any, n_rows: int) -> np.ndarray:
    """Validate a binary target (bool, or numbers in {0, 1}); return a bool array."""
    values = np.asarray(y.to_numpy() if isinstance(y, pd.Series) else y)
    if values.ndim != 1 or len(values) != n_rows:
        raise DataError(f"target has shape {values.shape} but the feature table has {n_rows} rows")
    if values.dtype == bool:
        return values
    try:
        numeric = values.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"target must be bool or 0/1; got dtype {values.dtype}") from None
    if np.isnan(numeric).any():
        raise DataError(f"target has {int(np.isnan(numeric).sum())} missing values; drop or label those rows")
    if not np.isin(numeric, (0.0, 1.0)).all():
        raise DataError(f"target must be bool or 0/1; found values {np.unique(numeric)[:5].tolist()}")
    return numeric.astype(bool)


def informative_columns(matrix: np.ndarray) -> np.ndarray:
    """Bool per column: False if the column is all-NaN, or constant with no NaN."""
    nan = np.isnan(matrix)
    with np.errstate(invalid="ignore"):
        lo, hi = (
            np.nanmin(np.where(nan, np.inf, matrix), axis=0),
            np.nanmax(np.where(nan, -np.inf, matrix), axis=0),
        )
    has_value = ~nan.all(axis=0)
    varies = has_value & ((hi > lo) | nan.any(axis=0))
    return np.asarray(varies, dtype=bool)


def check_choice(owner: str, name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{owner}: parameter {name}={value!r} is invalid; allowed: {', '.join(allowed)}")
