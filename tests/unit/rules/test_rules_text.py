"""Canonical text round trip (property test) and readable rendering."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mecharule.errors import DataError
from mecharule.rules import Condition, Rule, RuleSet, describe_rule, parse_rule, parse_ruleset, ruleset_text
from mecharule.rules.language import OPS
from mecharule.rules.text import Glossary, describe_condition, rule_text

names = st.one_of(
    st.sampled_from(["a", "op_is_mul", "carry.count", "AND", "inf", "x y", "back`tick", "[0]"]),
    st.text(min_size=1, max_size=12),
)
conditions = st.builds(
    Condition,
    names,
    st.sampled_from(OPS),
    st.floats(allow_nan=False),
    st.booleans(),
)
rules = st.builds(Rule, st.lists(conditions, max_size=4).map(tuple), st.booleans())
rulesets = st.builds(RuleSet, st.lists(rules, max_size=4).map(tuple))


@settings(max_examples=300, deadline=None)
@given(rulesets)
def test_canonical_text_round_trips_exactly(ruleset: RuleSet) -> None:
    text = ruleset_text(ruleset)
    parsed = parse_ruleset(text)
    assert parsed == ruleset
    for a, b in zip(parsed.rules, ruleset.rules, strict=True):  # bit-exact thresholds, incl. -0.0
        for ca, cb in zip(a.conditions, b.conditions, strict=True):
            assert math.copysign(1, ca.threshold) == math.copysign(1, cb.threshold)
    assert ruleset_text(parsed) == text


def test_canonical_text_shape() -> None:
    rule = Rule((Condition("op_is_mul", ">=", 0.5), Condition("a", ">=", 49.5, missing=True)))
    assert rule_text(rule) == "a >= 49.5 [or missing] AND op_is_mul >= 0.5"
    assert rule_text(rule.negate()) == "NOT (a >= 49.5 [or missing] AND op_is_mul >= 0.5)"
    assert ruleset_text(RuleSet()) == "FALSE"
    assert parse_rule("TRUE") == Rule()
    assert parse_rule("`x y` < 3") == Rule((Condition("x y", "<", 3.0),))


@pytest.mark.parametrize(
    "text", ["a <", "a < 1 AND", "(a < 1", "a < 1 OR b > 2", "a ~ 1", "a < 1 [or]", "AND < 1"]
)
def test_malformed_text_is_a_data_error(text: str) -> None:
    with pytest.raises(DataError):
        parse_rule(text)


def test_readable_rendering_uses_descriptions_and_kinds() -> None:
    gloss = Glossary(
        descriptions={"op_is_mul": "operator is *", "carries": "carries in a + b", "x": "mean digit"},
        kinds={"op_is_mul": "binary", "carries": "count"},
        missing_features=frozenset({"carries"}),
    )
    assert describe_condition(Condition("op_is_mul", ">=", 0.9999999701976776), gloss) == "operator is *"
    assert describe_condition(Condition("op_is_mul", "<", 0.5, True), gloss) == "NOT operator is *"
    assert describe_condition(Condition("carries", ">", 1.5), gloss) == "carries in a + b >= 2"
    assert describe_condition(Condition("carries", "<", 1.99999), gloss) == "carries in a + b <= 1"
    assert describe_condition(Condition("carries", ">=", 2, True), gloss) == "carries in a + b >= 2 (or n/a)"
    assert describe_condition(Condition("x", "<", 0.123456789), gloss) == "mean digit < 0.123457"
    rule = Rule((Condition("op_is_mul", ">", 0.5), Condition("carries", ">=", 1.5)), negated=True)
    assert describe_rule(rule, gloss) == "NOT (carries in a + b >= 2 AND operator is *)"
    assert describe_rule(Rule((Condition("z", "<", 1.0, True),)), {"z": "zeta"}) == "zeta < 1 (or n/a)"
