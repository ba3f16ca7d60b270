"""Sweep planning: --vary parsing, one factor at a time vs a grid, limits and bad input."""

from __future__ import annotations

import pytest

from mecharule.config import load_config
from mecharule.errors import ConfigError
from mecharule.sweep.plan import base_values, parse_vary, plan_settings, split_values


def test_values_split_at_top_level_commas_only():
    assert split_values("0.2, 0.3") == ["0.2", "0.3"]
    assert split_values("[atp,eap_ig],[atp]") == ["[atp,eap_ig]", "[atp]"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]
    assert split_values("{x: 1, y: 2},3") == ["{x: 1, y: 2}", "3"]


def test_a_factor_reads_yaml_values_under_the_current_key():
    factor = parse_vary("localize.tau=0.2,0.35")  # the legacy key names search.tau now
    assert (factor.key, factor.values) == ("search.tau", (0.2, 0.35))
    methods = parse_vary("attribution.methods=[atp],[atp,eap_ig]")
    assert methods.values == (["atp"], ["atp", "eap_ig"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("search.tau", "KEY=V1,V2"),
        ("search.tau=", "KEY=V1,V2"),
        ("search.tua=0.2", "unknown config key"),
        ("search.tau=0.2,0.2", "given twice"),
    ],
)
def test_bad_factors_fail_with_a_reason(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_vary(text)


def test_one_factor_at_a_time_or_the_grid():
    base = load_config(None)
    factors = [parse_vary("search.tau=0.3,0.4"), parse_vary("attribution.top_m=64,128,256")]
    single = plan_settings(base, factors, grid=False)
    assert [s.name for s in single] == [
        "search.tau=0.3",
        "search.tau=0.4",
        "attribution.top_m=64",
        "attribution.top_m=128",
        "attribution.top_m=256",
    ]
    assert single[0].config.search.tau == 0.3 and single[0].config.attribution.top_m == base.attribution.top_m
    grid = plan_settings(base, factors, grid=True)
    assert len(grid) == 6 and grid[-1].name == "search.tau=0.4+attribution.top_m=256"
    assert (grid[-1].config.search.tau, grid[-1].config.attribution.top_m) == (0.4, 256)
    assert grid[-1].folder == "search.tau=0.4+attribution.top_m=256"
    expected = {"search.tau": base.search.tau, "attribution.top_m": base.attribution.top_m}
    assert base_values(base, factors) == expected


def test_limits_and_repeated_keys_are_refused():
    base = load_config(None)
    with pytest.raises(ConfigError, match="more than --max-settings 2"):
        plan_settings(base, [parse_vary("search.tau=0.1,0.2,0.3")], grid=False, max_settings=2)
    with pytest.raises(ConfigError, match="names a key twice"):
        plan_settings(base, [parse_vary("search.tau=0.1"), parse_vary("localize.tau=0.3")], grid=False)
    with pytest.raises(ConfigError, match="tau"):  # the value is validated like --set
        plan_settings(base, [parse_vary("search.tau=2.5")], grid=False)
