"""The rule language: evaluation semantics, NaN handling, canonical ordering, JSON, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mecharule.errors import ConfigError, DataError
from mecharule.rules import Condition, Rule, RuleSet

NAN = np.nan


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame({"a": [1.0, 2.0, 3.0, NAN], "b": [0.0, 1.0, NAN, 1.0]})


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("<", [True, False, False]),
        ("<=", [True, True, False]),
        (">", [False, False, True]),
        (">=", [False, True, True]),
        ("==", [False, True, False]),
        ("!=", [True, False, True]),
    ],
)
def test_every_operator_and_nan_follows_missing_flag(
    table: pd.DataFrame, op: str, expected: list[bool]
) -> None:
    for missing in (False, True):
        mask = Condition("a", op, 2.0, missing).evaluate(table)
        assert mask.tolist() == [*expected, missing]  # last row is NaN: even "!=" obeys the flag


def test_rule_is_a_conjunction_and_negation_flips_every_row(table: pd.DataFrame) -> None:
    rule = Rule((Condition("a", ">=", 2.0), Condition("b", ">=", 1.0, missing=True)))
    assert rule.evaluate(table).tolist() == [False, True, True, False]
    assert rule.negate().evaluate(table).tolist() == [True, False, False, True]
    assert Rule().evaluate(table).all()  # empty conjunction always holds
    assert not Rule(negated=True).evaluate(table).any()


def test_ruleset_is_a_disjunction(table: pd.DataFrame) -> None:
    rs = RuleSet((Rule((Condition("a", "<", 2.0),)), Rule((Condition("b", "==", 1.0),))))
    assert rs.evaluate(table).tolist() == [True, True, False, True]
    assert not RuleSet().evaluate(table).any()


def test_canonical_order_makes_equal_logic_equal_and_hashable() -> None:
    c1, c2 = Condition("b", ">", 1), Condition("a", "<", 2.5)
    r1, r2 = Rule((c1, c2)), Rule((c2, c1, c2))
    assert r1 == r2 and hash(r1) == hash(r2)
    assert r1.conditions == (c2, c1)
    assert RuleSet((r1, Rule((c1,)))) == RuleSet((Rule((c1,)), r2))
    assert isinstance(Condition("a", "<", 2).threshold, float)


def test_matrix_with_names_evaluates_like_the_dataframe(table: pd.DataFrame) -> None:
    rule = Rule((Condition("b", "<", 1.0, missing=True),))
    matrix = table.to_numpy()
    assert rule.evaluate(matrix, ["a", "b"]).tolist() == rule.evaluate(table).tolist()


def test_missing_feature_is_a_data_error_listing_available(table: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"'carry'.*available: a, b"):
        Rule((Condition("carry", ">", 0),)).evaluate(table)


def test_invalid_conditions_are_rejected() -> None:
    with pytest.raises(ConfigError, match="op '=<'"):
        Condition("a", "=<", 1.0)
    with pytest.raises(ConfigError, match="NaN threshold"):
        Condition("a", "<", float("nan"))
    with pytest.raises(ConfigError, match="non-empty"):
        Condition("", "<", 1.0)


def test_json_round_trip_is_exact_and_versioned() -> None:
    rs = RuleSet(
        (
            Rule(
                (Condition("a", ">=", 49.99999809265137, True), Condition("op", "<", 0.1 + 0.2)), negated=True
            ),
            Rule((Condition("b", "!=", -1e-300),)),
        )
    )
    data = rs.to_dict()
    assert data["schema_version"] == 1
    assert RuleSet.from_dict(data) == rs
    with pytest.raises(DataError, match="schema_version"):
        RuleSet.from_dict({**data, "schema_version": 99})
