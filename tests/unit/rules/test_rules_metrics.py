"""Metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
)

from mecharule.errors import DataError
from mecharule.rules import RuleMetrics, rule_metrics


def test_hand_computed_example() -> None:
    fire = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 0], dtype=bool)
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    m = rule_metrics(fire, y)
    assert (m.tp, m.fp, m.fn, m.tn, m.n, m.n_pos, m.n_fire) == (2, 2, 1, 5, 10, 3, 4)
    assert m.coverage == pytest.approx(0.4)
    assert m.precision == pytest.approx(0.5)
    assert m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m.mcc == pytest.approx((2 * 5 - 2 * 1) / np.sqrt(4 * 3 * 7 * 6))
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 5 / 7) / 2)
    assert m.lift == pytest.approx(0.5 / 0.3)
    assert RuleMetrics.from_dict(m.to_dict()) == m


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_agrees_with_sklearn(pairs: list[tuple[bool, bool]]) -> None:
    fire = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    m = rule_metrics(fire, y)
    both_classes_seen = len(set(y.tolist()) | set(fire.tolist())) > 1
    expected_mcc = matthews_corrcoef(y, fire) if both_classes_seen else 0.0  # sklearn warns on one label
    assert m.mcc == pytest.approx(expected_mcc, abs=1e-12)
    assert m.precision == pytest.approx(precision_score(y, fire, zero_division=0.0))
    assert m.recall == pytest.approx(recall_score(y, fire, zero_division=0.0))
    assert m.f1 == pytest.approx(f1_score(y, fire, zero_division=0.0))
    if y.any() and not y.all():
        assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, fire))


def test_degenerate_cases_are_defined_not_nan() -> None:
    never = rule_metrics(np.zeros(5, bool), np.array([1, 0, 1, 0, 0], bool))
    assert (never.mcc, never.precision, never.lift, never.coverage) == (0.0, 0.0, 0.0, 0.0)
    const = rule_metrics(np.array([1, 0, 1], bool), np.ones(3, bool))
    assert const.mcc == 0.0 and const.balanced_accuracy == pytest.approx(2 / 3)
    empty = rule_metrics(np.zeros(0, bool), np.zeros(0, bool))
    assert empty.n == 0 and empty.mcc == 0.0 and empty.balanced_accuracy == 0.0
    for value in const.to_dict().values():
        assert not np.isnan(value)


def test_shape_mismatch_is_a_data_error() -> None:
    with pytest.raises(DataError, match="shape"):
        rule_metrics(np.zeros(3, bool), np.zeros(4, bool))
