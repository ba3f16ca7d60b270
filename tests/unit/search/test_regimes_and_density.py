"""The negative regime (flips not monotone, changes monotone), dense agonists (CHA must not cost
more than brute force), the observed predicate and the density estimates behind expansion."""

from __future__ import annotations

from dataclasses import replace

import pytest
from planted import DestructiveOracle, PlantedOracle, U, layer_units, plant

from mecharule.errors import DataError
from mecharule.search import SearchConfig, SearchProblem, SliceCounts, brute_force, evaluate_counts, search
from mecharule.search.density import (
    density_from_audit,
    density_from_groups,
    expected_split_cost,
    should_expand,
)


def agonists(result, key="p"):
    return {a.unit for a in result.agonists if a.problem == key}


def test_changes_must_cover_the_flips() -> None:
    assert SliceCounts(3, 64, 0, 64, 5, 0).covered_changes == 5
    assert SliceCounts(3, 64, 1, 64).unrelated_changes == 1  # not measured: the flips
    with pytest.raises(DataError, match="flips <= changed"):
        SliceCounts(6, 64, 0, 64, 5, 0)


@pytest.mark.parametrize("seed", range(3))
def test_negative_regime_pruning_on_changes_finds_what_pruning_on_flips_misses(seed: int) -> None:
    """Groups of >= 8 units fix nothing; pruning on flips loses every agonist, on changes >= 0.9."""
    units = [U(layer, i) for layer in range(2) for i in range(128)]
    effects = plant(units, 10, seed, low=0.3, high=0.7)
    oracle = DestructiveOracle({"p": effects}, destroy=8, seed=seed)
    problem = SearchProblem("p", units)
    reference = agonists(brute_force([problem], oracle))
    assert reference == set(effects)
    on_flips = search([problem], oracle, SearchConfig(prune_on="flips", audit=0, seed=seed))
    assert agonists(on_flips) == set()
    fixed = search([problem], oracle, SearchConfig(seed=seed))
    assert len(agonists(fixed) & reference) >= 0.9 * len(reference)
    singles = [r.units[0] for r in fixed.trace if r.size == 1]
    groups = sum(r.size > 1 for r in fixed.trace)
    assert len(singles) == len(set(singles)) <= len(units)  # each unit at most once
    # saturated groups look dense until they shrink below the destruction size, so CHA pays those
    # levels before it expands: at most brute force plus the groups it evaluated (here < 1.3 N)
    assert fixed.group_evaluations == len(singles) + groups <= 1.3 * len(units)


@pytest.mark.parametrize("n", [64, 256, 1024])
@pytest.mark.parametrize("share", [0.5, 0.9, 1.0])
def test_dense_agonists_cost_at_most_brute_force_plus_the_roots(n: int, share: float) -> None:
    units = layer_units(n)
    effects = plant(units, round(share * n), seed=n, low=0.4, high=0.9)
    oracle = PlantedOracle({"p": effects}, mode="coupled", seed=1)
    problem = SearchProblem("p", units)
    result = search([problem], oracle, SearchConfig(seed=2))
    assert agonists(result) == agonists(brute_force([problem], oracle))
    assert result.group_evaluations <= n + 1  # every singleton once, plus the root
    assert result.group_evaluations <= 1.05 * n or n < 64
    assert result.problems[0].expanded_groups >= 1


def test_sparse_agonists_are_not_expanded_and_stay_cheap() -> None:
    units = layer_units(2048)
    effects = plant(units, 6, seed=3)
    result = search([SearchProblem("p", units)], PlantedOracle({"p": effects}), SearchConfig(seed=3))
    assert agonists(result) == set(effects)
    assert result.group_evaluations <= 0.1 * len(units)
    assert 16 <= result.problems[0].audit_evaluations <= 4 * 16  # the root's audit, maybe more rounds


def test_audit_size_scales_with_the_root_and_a_tiny_root_is_tested_unit_by_unit() -> None:
    from mecharule.search.density import audit_size

    config = SearchConfig()
    assert [audit_size(n, config.audit) for n in (2, 6, 32, 128, 4096)] == [1, 1, 8, 16, 16]
    assert audit_size(128, SearchConfig(audit=0).audit) == 0
    units = layer_units(2)
    result = search([SearchProblem("p", units)], PlantedOracle({"p": {units[1]: (0.5, 0.0)}}))
    assert [r.size for r in result.trace] == [1, 1] and all(r.audit for r in result.trace)
    assert agonists(result) == {units[1]}
    six = layer_units(6)  # a root + one audited unit; the sparse root is then halved, not swept
    result = search([SearchProblem("p", six)], PlantedOracle({"p": {six[2]: (0.5, 0.0)}}))
    assert result.problems[0].audit_evaluations == 1 and agonists(result) == {six[2]}
    assert result.group_evaluations <= 6 + 2


def test_observed_predicate_accepts_on_the_observed_rate_not_the_upper_bound() -> None:
    units = layer_units(4)
    oracle = PlantedOracle({"p": {units[0]: (8 / 64, 0.0), units[1]: (13 / 64, 0.0)}})
    config = SearchConfig(audit=0, expand_dense=False)
    ucb = search([SearchProblem("p", units)], oracle, config)
    observed = search([SearchProblem("p", units)], oracle, replace(config, predicate="observed"))
    assert agonists(ucb) == {units[0], units[1]}  # 8/64 = 12.5 % has an upper bound above 0.2
    assert agonists(observed) == {units[1]}  # 13/64 = 20.3 % >= 0.2 observed
    # a group is pruned only when its observed change rate is below τ on both slices
    rule = replace(config, predicate="observed")
    assert evaluate_counts(SliceCounts(10, 64, 0, 64, 13, 0), rule).strong  # 13/64 changed
    assert not evaluate_counts(SliceCounts(10, 64, 0, 64, 12, 0), rule).strong
    assert evaluate_counts(SliceCounts(0, 64, 12, 64, 0, 13), rule).strong  # either slice


def test_expected_split_cost_grows_with_density_and_crosses_n() -> None:
    costs = [expected_split_cost(128, p) for p in (0.001, 0.01, 0.05, 0.2, 0.5, 1.0)]
    assert costs == sorted(costs)
    assert costs[0] < 10 and costs[-1] > 128
    assert expected_split_cost(1, 0.5) == 0.0


def test_density_estimates_are_cautious_and_monotone() -> None:
    audit = [density_from_audit(k, 8) for k in range(9)]
    assert audit == sorted(audit) and audit[0] < 0.01 and audit[2] < 0.25 < audit[8]
    assert density_from_groups(0, 4, 16) < density_from_groups(4, 4, 16) < density_from_groups(4, 4, 2)
    assert not should_expand(128, 120, 0.01) and should_expand(128, 120, 0.6)
    assert should_expand(2, 2, 0.0)
