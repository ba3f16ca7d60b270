"""Feature filters on hand-built tables with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mecharule.errors import ConfigError, DataError
from mecharule.features.filters import (
    drop_constant,
    drop_low_predictive_power,
    drop_near_duplicates,
    filter_features,
    predictive_power,
)

Y = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
NAN = np.nan


def test_constant_treats_nan_as_its_own_value():
    table = pd.DataFrame(
        {
            "all_same": [3.0] * 8,
            "all_nan": [NAN] * 8,
            "value_or_nan": [1.0, NAN] * 4,
            "varies": np.arange(8.0),
        }
    )
    result = drop_constant(table)
    assert result.kept == ["value_or_nan", "varies"]
    assert [(d.name, d.filter) for d in result.dropped] == [("all_same", "constant"), ("all_nan", "constant")]
    assert "3.0" in result.dropped[0].reason and "NaN" in result.dropped[1].reason
    assert result.table["value_or_nan"].isna().sum() == 4  # NaN is never filled


def test_near_duplicates_keep_the_first():
    base = np.arange(8.0)
    table = pd.DataFrame(
        {
            "a": base,
            "b": np.arange(8.0)[::-1] * 3 + 1,  # perfectly anti-correlated with a
            "c": base * 2 + 1e-9 * np.sin(base),
            "d": (base % 3),
            "e": np.where(base < 4, NAN, base),  # NaN -> 0: correlated with a but not a duplicate
        }
    )
    result = drop_near_duplicates(table)
    assert result.kept == ["a", "d", "e"]
    assert {d.name: d.reason.split(" (")[0] for d in result.dropped} == {
        "b": "near-duplicate of 'a'",
        "c": "near-duplicate of 'a'",
    }
    assert drop_near_duplicates(table, threshold=0.5).kept == ["a", "d"]
    with pytest.raises(ConfigError, match="threshold"):
        drop_near_duplicates(table, threshold=0)


def test_predictive_power_known_values():
    table = pd.DataFrame(
        {
            "perfect": [1, 1, 1, 1, 0, 0, 0, 0.0],
            "inverted": [0, 0, 0, 0, 5, 5, 5, 5.0],
            "noise": [1, 0, 1, 0, 1, 0, 1, 0.0],
            "applies_to_positives": [1, 2, 3, 4, NAN, NAN, NAN, NAN],
            "half": [1, 1, 0, 0, 1, 0, 0, 0.0],
        }
    )
    power = predictive_power(table, Y)
    assert power.loc["perfect", "best_auc"] == 1.0 and power.loc["perfect", "smd"] == np.inf
    assert power.loc["inverted", "best_auc"] == 1.0
    assert power.loc["noise", "best_auc"] == 0.5 and power.loc["noise", "smd"] == 0.0
    assert power.loc["applies_to_positives", "best_auc"] == 1.0  # through its applicability
    # "half": pos [1,1,0,0], neg [1,0,0,0]: AUC = (2 * 3.5 + 2 * 1.5) / 16 = 0.625 (ties count half)
    assert power.loc["half", "best_auc"] == pytest.approx(0.625)
    assert power.loc["half", "smd"] == pytest.approx(0.25 / np.sqrt((0.25 + 0.1875) / 2))
    result = drop_low_predictive_power(table, Y)
    assert result.kept == ["perfect", "inverted", "applies_to_positives", "half"]
    assert [d.name for d in result.dropped] == ["noise"] and "best AUC 0.500" in result.dropped[0].reason
    assert drop_low_predictive_power(table, Y, min_auc=0.7, min_smd=1.0).kept == [
        "perfect",
        "inverted",
        "applies_to_positives",
    ]


def test_nothing_passes_means_nothing_kept():
    table = pd.DataFrame({"noise": [1, 0, 1, 0, 1, 0, 1, 0.0]})
    result = drop_low_predictive_power(table, Y)
    assert result.kept == [] and len(result.dropped) == 1


def test_filter_features_runs_all_three_and_collects_reasons():
    table = pd.DataFrame(
        {
            "const": [1.0] * 8,
            "signal": [3, 4, 3, 4, 0, 1, 0, 1.0],
            "signal_copy": [6, 8, 6, 8, 0, 2, 0, 2.0],
            "noise": [1, 0, 1, 0, 1, 0, 1, 0.0],
        }
    )
    result = filter_features(table, Y)
    assert result.kept == ["signal"]
    assert [(d.name, d.filter) for d in result.dropped] == [
        ("const", "constant"),
        ("noise", "predictive_power"),
        ("signal_copy", "near_duplicate"),
    ]
    assert list(table.columns) == ["const", "signal", "signal_copy", "noise"]  # input untouched


def test_bad_inputs_are_explained():
    table = pd.DataFrame({"a": np.arange(8.0)})
    with pytest.raises(DataError, match="single class"):
        predictive_power(table, np.ones(8, dtype=bool))
    with pytest.raises(DataError, match="expected \\(8,\\)"):
        predictive_power(table, np.ones(3, dtype=bool))
    with pytest.raises(DataError, match="non-numeric"):
        drop_constant(pd.DataFrame({"s": list("abcdefgh")}))
    with pytest.raises(ConfigError, match="min_auc"):
        drop_low_predictive_power(table, Y, min_auc=0.3)
