"""XGBoost split semantics: every leaf path's rule fires exactly on the rows pred_leaf puts there,
including values exactly at, and within float32 rounding of, a threshold, and NaN."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st

from mecharule.rules import Condition, Rule
from mecharule.rules.trees import booster_paths, merge_conditions, split_conditions


def _edge_rows(booster: xgb.Booster, base: np.ndarray) -> np.ndarray:
    """Rows whose values sit exactly on, and one float64/float32 step around, every threshold."""
    rows = [base]
    for dump in booster.get_dump(dump_format="json"):
        stack = [json.loads(dump)]
        while stack:
            node = stack.pop()
            if "leaf" in node:
                continue
            stack.extend(node["children"])
            j, t32 = int(node["split"][1:]), np.float32(node["split_condition"])
            below32 = np.nextafter(t32, np.float32(-np.inf))
            mid = (float(below32) + float(t32)) / 2
            for value in (
                float(t32),
                float(below32),
                mid,
                np.nextafter(mid, -1.0),
                np.nextafter(mid, 2.0),
                np.nextafter(float(t32), -np.inf),
                np.nan,
            ):
                row = base[:8].copy()
                row[:, j] = value
                rows.append(row)
    return np.vstack(rows)


@pytest.mark.parametrize("tree_method", ["exact", "hist"])
def test_leaf_rules_match_pred_leaf(tree_method: str) -> None:
    rng = np.random.default_rng(1)
    n = 600
    X = np.column_stack([rng.random(n), rng.integers(0, 5, n).astype(float), rng.normal(size=n)])
    X[rng.random(n) < 0.2, 0] = np.nan
    X[rng.random(n) < 0.1, 2] = np.nan
    y = ((np.nan_to_num(X[:, 0], nan=0.9) > 0.3) & (X[:, 1] >= 2)) ^ (rng.random(n) < 0.1)
    booster = xgb.train(
        {"tree_method": tree_method, "max_depth": 4, "seed": 0, "nthread": 1, "objective": "binary:logistic"},
        xgb.DMatrix(X, label=y.astype(float), missing=np.nan),
        num_boost_round=6,
    )
    X_check = _edge_rows(booster, X)
    leaves = booster.predict(xgb.DMatrix(X_check, missing=np.nan), pred_leaf=True).astype(int)
    names = ["p", "k", "z"]
    paths = booster_paths(booster, names)
    assert len(paths) > 6
    for path in paths:
        expected = leaves[:, path.tree] == path.leaf
        assert np.array_equal(path.rule.evaluate(X_check, names), expected), (path.tree, path.leaf)


def test_split_conditions_are_complementary_and_exact_in_float32() -> None:
    values = np.array([0.30103898, 0.3010389655828476, 0.30103897, 1.0, np.nan])
    for default_yes in (True, False):
        yes, no = split_conditions("x", 0.30103898, default_yes)
        y_mask, n_mask = yes.evaluate_values(values), no.evaluate_values(values)
        assert np.array_equal(y_mask, ~n_mask)
        finite = ~np.isnan(values)
        assert np.array_equal(y_mask[finite], values[finite].astype(np.float32) < np.float32(0.30103898))
        assert y_mask[-1] == default_yes


bounds = st.builds(
    Condition,
    st.sampled_from(["a", "b"]),
    st.sampled_from(["<", "<=", ">", ">="]),
    st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0]),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(bounds, min_size=1, max_size=6))
def test_merging_bounds_preserves_semantics(conds: list[Condition]) -> None:
    grid = np.array([-2, -1, -0.5, 0, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, np.nan])
    a, b = np.meshgrid(grid, grid)
    X = np.column_stack([a.ravel(), b.ravel()])
    merged = merge_conditions(conds)
    assert len(merged) <= 4
    assert np.array_equal(Rule(tuple(conds)).evaluate(X, ["a", "b"]), Rule(merged).evaluate(X, ["a", "b"]))
