"""Scoring proposed features: sanitised values, info dicts, names, kinds, and the one-table contract."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from mecharule.errors import ConfigError, DataError
from mecharule.features.base import compute_feature_table
from mecharule.features.sandbox import (
    FeatureColumns,
    ProposedFeature,
    SandboxLimits,
    build_rows,
    feature_name,
    score_proposed_features,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox needs POSIX resource limits")

TABLE = pd.DataFrame(
    {
        "prompt": ["a", "bb", "ccc", "dddd"],
        "n": np.array([1, 2, 3, 4], dtype=np.int64),
        "x": [0.5, np.nan, 2.0, 3.0],
        "tags": [["p"], [], ["q", "r"], ["s"]],
    }
)
LIMITS = SandboxLimits(wall_seconds=5.0, memory_mb=64)


def proposal(label: str, *lines: str) -> ProposedFeature:
    return ProposedFeature(
        label,
        f"{label} (description)",
        "def my_feature(prompt, info):\n" + "".join(f"    {line}\n" for line in lines),
        round=2,
    )


def score(*proposals: ProposedFeature, **kwargs):
    return score_proposed_features(list(proposals), TABLE, limits=kwargs.pop("limits", LIMITS), **kwargs)


def test_values_are_sanitised():
    cases = {
        "bools": ("return len(prompt) > 2", [0, 0, 1, 1]),
        "none is not applicable": ("return None if prompt == 'a' else info['n']", [np.nan, 2, 3, 4]),
        "non finite": (
            "return [math.inf, -math.inf, math.nan, 1.5][info['n'] - 1]",
            [np.nan, np.nan, np.nan, 1.5],
        ),
        "clipped": ("return [1e300, -10**400, 1e12, 7][info['n'] - 1]", [1e12, -1e12, 1e12, 7]),
        "non numeric": ("return ['3', [1], 2, {'a': 1}][info['n'] - 1]", [np.nan, np.nan, 2, np.nan]),
        "partial errors": ("return 10 // (info['n'] - 2)", [-10, np.nan, 10, 5]),
    }
    accepted, rejected = score(*(proposal(label, line) for label, (line, _) in cases.items()))
    assert rejected == []
    values = compute_feature_table(accepted, TABLE)
    for label, (_, expected) in cases.items():
        np.testing.assert_array_equal(values[feature_name(label)].to_numpy(), np.array(expected, dtype=float))


def test_info_holds_json_metadata_and_respects_info_columns():
    accepted, _ = score(
        proposal("tag count", "return len(info['tags'])"),
        proposal("x or none", "return info['x']"),
        proposal("n is int", "return isinstance(info['n'], int)"),
    )
    table = compute_feature_table(accepted, TABLE)
    np.testing.assert_array_equal(table["tag_count"], [1, 0, 2, 1])
    np.testing.assert_array_equal(table["x_or_none"], [0.5, np.nan, 2.0, 3.0])
    np.testing.assert_array_equal(table["n_is_int"], [1, 1, 1, 1])
    rows = build_rows(TABLE, ["n"])
    assert rows[0] == ["a", {"n": 1}]
    accepted, [rejection] = score(
        proposal("only n", "return info['x']"), columns=FeatureColumns(info_columns=["n"])
    )
    assert accepted == [] and "KeyError" in rejection.reason
    with pytest.raises(DataError, match="not in the prompt table"):
        build_rows(TABLE, ["missing"])


def test_rejections_for_too_many_errors_and_no_numbers():
    accepted, rejected = score(
        proposal("mostly broken", "return 1 / (info['n'] - 4)"),
        proposal("always none", "return None"),
        proposal("ok", "return 1"),
        limits=SandboxLimits(wall_seconds=5.0, max_error_fraction=0.2),
    )
    assert [f.name for f in accepted] == ["ok"]
    reasons = {r.label: r.reason for r in rejected}
    assert reasons["mostly broken"].startswith("raised on 1 of 4 rows")
    assert "no number on any" in reasons["always none"]


def test_features_carry_metadata_and_unique_names():
    accepted, _ = score(
        proposal("Digit Count!", "return len(prompt)"),
        proposal("digit count", "return len(prompt) * 2"),
        proposal("1st char code", "return 1.5"),
        columns=FeatureColumns(taken_names={"digit_count"}),
    )
    assert [f.name for f in accepted] == ["digit_count_1", "digit_count_2", "f_1st_char_code"]
    first = accepted[0]
    assert (first.origin, first.kind, first.description) == (
        "proposed",
        "count",
        "Digit Count! (description)",
    )
    assert accepted[2].kind == "numeric" and accepted[2].not_applicable == ""


def test_precomputed_values_refuse_another_table():
    [feat], _ = score(proposal("length", "return len(prompt)"))
    np.testing.assert_array_equal(feat.compute(TABLE), [1, 2, 3, 4])
    assert feat.compute.proposal.python_src.endswith("return len(prompt)\n")  # kept for features.json
    feat.compute(TABLE)[0] = 99  # callers get a copy
    assert feat.compute(TABLE)[0] == 1
    other = TABLE.assign(prompt=["z", "bb", "ccc", "dddd"])
    with pytest.raises(DataError, match="another prompt table"):
        feat.compute(other)
    with pytest.raises(DataError, match="another prompt table"):
        feat.compute(TABLE.iloc[:2])


def test_nothing_to_run_and_bad_inputs():
    assert score_proposed_features([], TABLE) == ([], [])
    with pytest.raises(DataError, match="'prompt' column"):
        score_proposed_features([proposal("x", "return 1")], TABLE.drop(columns="prompt"))
    with pytest.raises(ConfigError, match="wall_seconds"):
        SandboxLimits(wall_seconds=0)
    with pytest.raises(ConfigError, match="memory_mb"):
        SandboxLimits(memory_mb=1)
