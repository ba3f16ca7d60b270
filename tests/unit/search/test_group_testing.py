"""CHA on synthetic oracles: recall and cost with planted agonists, level-synchronous batching, memo,
catastrophic units, budget, predicates, determinism, trace serialisation, and a known failure mode."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from planted import CancellingOracle, PlantedOracle, U, layer_units, plant

from mecharule.errors import ConfigError, DataError
from mecharule.search import (
    Query,
    SearchConfig,
    SearchProblem,
    SliceCounts,
    Unit,
    bound,
    brute_force,
    search,
)

#: The plain halving tree (the reference): no audit, no expansion of dense groups.
TREE = SearchConfig(audit=0, expand_dense=False)


def agonist_units(result, problem="p") -> set[U]:
    return {a.unit for a in result.agonists if a.problem == problem}


def random_scores(units, seed: int) -> dict[U, float]:
    rng = np.random.default_rng(seed)
    return {u: float(rng.normal()) for u in units}


# ---------------------------------------------------------------- recall and cost with planted agonists


@pytest.mark.parametrize("n", [64, 1024, 16384])
@pytest.mark.parametrize("k", [3, 8])
@pytest.mark.parametrize("with_scores", [False, True])
def test_planted_agonists_found_within_the_bound_single_layer(n: int, k: int, with_scores: bool) -> None:
    units = layer_units(n)
    for seed in range(3):
        effects = plant(units, k, seed)
        oracle = PlantedOracle({"p": effects})
        scores = random_scores(units, seed) if with_scores else None
        result = search([SearchProblem("p", units, scores)], oracle, SearchConfig(seed=seed))
        assert agonist_units(result) == set(effects)
        # on a small root a borderline audit may choose singletons: then every unit once, plus groups
        cost = result.group_evaluations
        assert cost <= bound(k, n, audit=SearchConfig().audit) or (n <= 64 and cost <= n + 8)
        assert not result.truncated


@pytest.mark.parametrize("n", [64, 1024, 16384])
def test_planted_agonists_found_within_the_bound_across_layers(n: int) -> None:
    units = [U(layer, i) for layer in range(4) for i in range(n // 4)]
    effects = plant(units, 5, seed=11)
    oracle = PlantedOracle({"p": effects}, mode="coupled", seed=3)
    config = SearchConfig(group_across_layers=True, seed=1)
    result = search([SearchProblem("p", units)], oracle, config)
    assert agonist_units(result) == set(effects)
    assert result.group_evaluations <= bound(5, n, audit=SearchConfig().audit)
    assert [r.root for r in result.trace if r.depth == 0] == ["all"]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 300), k=st.integers(1, 6), seed=st.integers(0, 10_000), layers=st.integers(1, 3))
def test_monotone_oracle_cha_finds_exactly_the_brute_force_agonists(
    n: int, k: int, seed: int, layers: int
) -> None:
    units = [U(i % layers, i) for i in range(n)]
    effects = plant(units, min(k, n), seed, low=0.05, high=1.0)
    oracle = PlantedOracle({"p": effects}, mode="coupled", seed=seed)
    problem = SearchProblem("p", units, random_scores(units, seed))
    cha = search([problem], oracle, SearchConfig(seed=seed))
    bf = brute_force([problem], oracle)
    assert agonist_units(cha) == agonist_units(bf)
    assert {c.unit for c in cha.catastrophic} == {c.unit for c in bf.catastrophic}


def test_non_monotone_cancellation_breaks_the_reference_tree() -> None:
    """Two units that are each strong alone but cancel inside any group holding both are missed by the
    plain tree (no audit): the root shows no effect and is pruned."""
    units = layer_units(16)
    a, b = units[3], units[9]
    oracle = CancellingOracle({"p": {a: (0.5, 0.0), b: (0.5, 0.0)}}, mode="coupled", seed=0)
    oracle.masks[("p", b)] = oracle.masks[("p", a)]  # identical flip sets: XOR = nothing
    problem = SearchProblem("p", units)
    bf = brute_force([problem], oracle)
    assert agonist_units(bf) == {a, b}  # each one alone is a strong agonist
    cha = search([problem], oracle, TREE)
    assert agonist_units(cha) == set()
    assert [r.decision for r in cha.trace] == ["prune"]


def test_the_audit_rescues_a_weak_group_holding_an_accepted_unit() -> None:
    """With the audit, a pruned root that holds an audited agonist is split instead; once one of the
    two cancelling units is audited both are found, and the rescue is counted."""
    units = layer_units(16)
    a, b = units[3], units[9]
    hit = 0
    for seed in range(24):
        oracle = CancellingOracle({"p": {a: (0.5, 0.0), b: (0.5, 0.0)}}, mode="coupled", seed=0)
        oracle.masks[("p", b)] = oracle.masks[("p", a)]
        cha = search([SearchProblem("p", units)], oracle, SearchConfig(seed=seed, audit=8))
        audited = {r.units[0] for r in cha.trace if r.audit}
        if audited & {a, b}:
            hit += 1
            assert agonist_units(cha) == {a, b}
            assert cha.problems[0].nonmonotone_splits >= 1
            assert any(r.split_strategy == "nonmonotone" for r in cha.trace)
        else:
            assert agonist_units(cha) == set()
    assert hit >= 3  # the audit draws 2 of the 16 units per round: some seeds hit one of the two


# ---------------------------------------------------------------- level-synchronous batching


def test_each_depth_is_one_oracle_call_holding_every_problem_and_layer() -> None:
    units = [U(layer, i) for layer in range(3) for i in range(40)]
    effects = {"r1": plant(units, 3, seed=1), "r2": plant(units, 4, seed=2)}
    oracle = PlantedOracle(effects)
    problems = [SearchProblem(key, units) for key in effects]
    result = search(problems, oracle, SearchConfig(seed=5))
    levels = sorted({r.level for r in result.trace})
    assert result.oracle_calls == len(oracle.calls) == len(levels)
    for level, call in zip(levels, oracle.calls, strict=True):
        expected = [(r.problem, r.units) for r in result.trace if r.level == level and not r.memo_hit]
        assert [(q.problem, q.units) for q in call] == expected
    first = oracle.calls[0]
    assert {q.problem for q in first} == {"r1", "r2"}
    assert {(q.problem, q.units[0].layer) for q in first} == {(p, L) for p in effects for L in range(3)}
    for key in effects:
        assert agonist_units(result, key) == set(effects[key])
    stats = {p.problem: p for p in result.problems}
    assert max(p.levels for p in stats.values()) == result.oracle_calls
    assert sum(p.group_evaluations for p in stats.values()) == result.group_evaluations == len(result.trace)


def test_roots_are_per_layer_by_default() -> None:
    units = [U(layer, i) for layer in (2, 0, 1) for i in range(8)]
    result = search([SearchProblem("p", units)], PlantedOracle({"p": {}}), TREE)
    assert [r.root for r in result.trace] == ["L0", "L1", "L2"]
    assert all(len({u.layer for u in r.units}) == 1 for r in result.trace)
    assert result.oracle_calls == 1 and result.agonists == ()


def test_progress_reports_evaluations_and_open_groups_per_level() -> None:
    units = layer_units(64)
    calls: list[tuple[int, int]] = []
    result = search(
        [SearchProblem("p", units)],
        PlantedOracle({"p": plant(units, 2, 0)}),
        progress=lambda done, open_: calls.append((done, open_)),
    )
    assert len(calls) == result.oracle_calls
    assert calls[-1] == (result.group_evaluations, 0)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


# ---------------------------------------------------------------- memoisation


def test_no_singleton_is_queried_twice_even_across_calls_sharing_a_memo() -> None:
    units = layer_units(256)
    oracle = PlantedOracle({"p": plant(units, 6, seed=4)})
    problem = SearchProblem("p", units)
    memo: dict = {}
    first = search([problem], oracle, SearchConfig(seed=1), memo=memo)
    calls_after_first = len(oracle.calls)
    second = search([problem], oracle, SearchConfig(seed=1), memo=memo)
    singletons = oracle.queried_singletons()
    assert len(singletons) == len(set(singletons)) > 0
    assert agonist_units(first) == agonist_units(second)
    hits = [r for r in second.trace if r.memo_hit]
    assert hits and all(r.size == 1 for r in hits)
    assert second.problems[0].memo_hits == len(hits)
    # a known singleton costs nothing, so the second search may also expand more groups into them
    assert second.group_evaluations <= first.group_evaluations - len(hits)
    assert len(oracle.calls) - calls_after_first <= first.oracle_calls
    known = len(memo)
    bf = brute_force([problem], oracle, memo=memo)
    singletons = oracle.queried_singletons()
    assert len(singletons) == len(set(singletons)) == len(units)
    assert bf.group_evaluations == sum(not r.memo_hit for r in bf.records) == len(units) - known
    assert bf.oracle_calls == 1 and bf.n_singletons == len(units)
    assert agonist_units(bf) == agonist_units(first)


# ---------------------------------------- catastrophic units, predicates, agonist fields


def test_catastrophic_units_are_reported_apart_from_agonists() -> None:
    units = layer_units(32)
    boom, good = units[5], units[20]
    oracle = PlantedOracle({"p": {boom: (1.0, 1.0), good: (0.6, 0.0)}})
    for config in (SearchConfig(), SearchConfig(predicate="contrastive")):
        result = search([SearchProblem("p", units)], oracle, config)
        assert [c.unit for c in result.catastrophic] == [boom]
        assert result.catastrophic[0].counts == SliceCounts(64, 64, 64, 64)
        assert agonist_units(result) == {good}
        assert result.problems[0].n_catastrophic == 1 and result.problems[0].n_agonists == 1
        bf = brute_force([SearchProblem("p", units)], oracle, config)
        assert [c.unit for c in bf.catastrophic] == [boom] and agonist_units(bf) == {good}


def test_contrastive_predicate_rejects_a_unit_that_flips_both_slices_equally() -> None:
    units = layer_units(16)
    selective, unselective, unrelated_only = units[1], units[6], units[12]
    effects = {selective: (0.5, 0.0), unselective: (0.5, 0.5), unrelated_only: (0.0, 0.5)}
    oracle = PlantedOracle({"p": effects})
    ucb = search([SearchProblem("p", units)], oracle, TREE)
    contrastive = search([SearchProblem("p", units)], oracle, replace(TREE, predicate="contrastive"))
    assert agonist_units(ucb) == set(effects)  # reference parity: max over slices
    assert agonist_units(contrastive) == {selective}
    rejected = next(r for r in contrastive.trace if r.units == (unselective,))
    assert rejected.decision == "leaf_weak" and rejected.evaluation.strong
    assert rejected.evaluation.contrast_lower < 0.0
    only_unrelated = [r for r in contrastive.trace if set(r.units) & set(effects) == {unrelated_only}]
    assert only_unrelated and all(r.decision in ("prune", "leaf_weak") for r in only_unrelated)
    assert any(r.decision == "split" for r in ucb.trace if set(r.units) & set(effects) == {unrelated_only})


def test_contrast_margin_tightens_acceptance() -> None:
    units = layer_units(8)
    oracle = PlantedOracle({"p": {units[2]: (0.4, 0.1)}})
    loose = search([SearchProblem("p", units)], oracle, SearchConfig(predicate="contrastive"))
    strict = search(
        [SearchProblem("p", units)], oracle, SearchConfig(predicate="contrastive", contrast_margin=0.3)
    )
    assert agonist_units(loose) == {units[2]} and agonist_units(strict) == set()


def test_agonist_reports_effects_bounds_selectivity_and_score_rank() -> None:
    units = layer_units(10)
    scores = {u: float(10 - u.index) for u in units}  # unit i has rank i + 1
    oracle = PlantedOracle({"p": {units[4]: (0.5, 0.125)}})
    result = search([SearchProblem("p", units, scores)], oracle)
    (agonist,) = result.agonists
    assert agonist.unit == units[4] and agonist.score == 6.0 and agonist.score_rank == 5
    assert (agonist.covered.flips, agonist.covered.n, agonist.unrelated.flips) == (32, 64, 8)
    assert agonist.covered.lower < agonist.covered.rate == 0.5 < agonist.covered.upper
    assert agonist.selectivity == pytest.approx(0.5 - 0.125)
    assert agonist.max_upper == agonist.covered.upper
    row = agonist.to_dict()
    assert row["unit"] == "L0.mlp[4]" and row["layer"] == 0 and json.loads(json.dumps(row)) == row


def test_weak_singletons_below_seven_of_64_are_not_agonists() -> None:
    units = layer_units(4)
    oracle = PlantedOracle({"p": {units[0]: (6 / 64, 0.0), units[1]: (7 / 64, 0.0)}})
    result = search([SearchProblem("p", units)], oracle)
    assert agonist_units(result) == {units[1]}


# ---------------------------------------------------------------- splitting and ordering


def test_root_split_by_attribution_sign_then_halves() -> None:
    units = layer_units(16)
    scores = {u: (1.0 if u.index % 2 else -1.0) * (u.index + 1) for u in units}
    oracle = PlantedOracle({"p": {units[3]: (0.6, 0.0), units[4]: (0.6, 0.0)}})
    result = search([SearchProblem("p", units, scores)], oracle, TREE)
    root = result.trace[0]
    assert root.depth == 0 and root.split_strategy == "score_sign"
    left, right = (r.units for r in result.trace if r.depth == 1)
    assert all(scores[u] >= 0 for u in left) and all(scores[u] < 0 for u in right)
    assert [abs(scores[u]) for u in left] == sorted((abs(scores[u]) for u in left), reverse=True)
    assert {r.split_strategy for r in result.trace if r.depth > 0 and r.decision == "split"} == {"bisect"}


def test_sign_split_falls_back_to_halves_and_can_be_disabled() -> None:
    units = layer_units(16)
    oracle = PlantedOracle({"p": {units[3]: (0.6, 0.0)}})
    positive = {u: 1.0 + u.index for u in units}
    first = search([SearchProblem("p", units, positive)], oracle, TREE).trace[0]
    assert first.split_strategy == "bisect_fallback"
    signed = {u: (-1.0) ** u.index for u in units}
    off = search([SearchProblem("p", units, signed)], oracle, replace(TREE, sign_split_first=False))
    assert off.trace[0].split_strategy == "bisect"
    assert search([SearchProblem("p", units)], oracle, TREE).trace[0].split_strategy == "bisect"


def test_order_by_score_groups_high_scores_and_shuffle_is_seeded() -> None:
    units = layer_units(64)
    scores = {u: float(u.index) for u in units}
    oracle = PlantedOracle({"p": {units[63]: (0.6, 0.0), units[62]: (0.6, 0.0)}})
    ordered = search([SearchProblem("p", units, scores)], oracle, replace(TREE, sign_split_first=False))
    assert ordered.trace[0].units == tuple(reversed(units))
    assert ordered.group_evaluations == 1 + 2 * math.ceil(math.log2(64 / 2)) + 2  # both agonists share a path
    shuffle = replace(TREE, order_by_score=False, seed=3)
    shuffled = search([SearchProblem("p", units, scores)], oracle, shuffle)
    assert shuffled.trace[0].units != ordered.trace[0].units
    assert agonist_units(shuffled) == agonist_units(ordered) == {units[62], units[63]}


def test_same_seed_same_trace_and_a_different_seed_a_different_order() -> None:
    units = [U(layer, i) for layer in range(2) for i in range(128)]
    effects = {"p": plant(units, 5, seed=9)}
    runs = [
        search([SearchProblem("p", units)], PlantedOracle(effects), SearchConfig(seed=s)) for s in (7, 7, 8)
    ]
    assert runs[0].trace_json() == runs[1].trace_json()
    assert runs[0].trace_json() != runs[2].trace_json()
    assert agonist_units(runs[0]) == agonist_units(runs[2]) == set(effects["p"])


def test_shuffle_of_a_problem_does_not_depend_on_the_other_problems_in_the_batch() -> None:
    units = layer_units(64)
    effects = {"a": plant(units, 3, 1), "b": plant(units, 3, 2)}
    alone = search([SearchProblem("b", units)], PlantedOracle(effects), SearchConfig(seed=4))
    batched = search(
        [SearchProblem(k, units) for k in ("a", "b")], PlantedOracle(effects), SearchConfig(seed=4)
    )
    assert [r.to_dict() for r in batched.trace if r.problem == "b"] == alone.trace_json()


# ---------------------------------------------------------------- budget, trace, validation


def test_budget_caps_group_evaluations_and_reports_truncation() -> None:
    units = layer_units(1024)
    oracle = PlantedOracle({"p": plant(units, 4, seed=2)})
    full = search([SearchProblem("p", units)], oracle, SearchConfig(seed=0))
    for budget in (1, 10, full.group_evaluations - 1):
        capped = search([SearchProblem("p", units)], oracle, SearchConfig(seed=0, budget=budget))
        assert capped.group_evaluations == budget and capped.truncated
        assert capped.unexplored and all(isinstance(q, Query) for q in capped.unexplored)
        assert capped.summary()["truncated"] is True
    exact = search([SearchProblem("p", units)], oracle, SearchConfig(seed=0, budget=full.group_evaluations))
    assert not exact.truncated and agonist_units(exact) == agonist_units(full)


def test_trace_round_trips_through_json() -> None:
    units = [U(layer, i) for layer in range(2) for i in range(32)]
    scores = random_scores(units, 0)
    oracle = PlantedOracle({("rule-3", "positive"): plant(units, 3, seed=0)}, mode="coupled")
    result = search([SearchProblem(("rule-3", "positive"), units, scores)], oracle)
    payload = result.trace_json()
    assert json.loads(json.dumps(payload)) == payload
    assert len(payload) == result.group_evaluations
    decisions = {row["decision"] for row in payload}
    assert decisions <= {"split", "prune", "agonist", "catastrophic", "leaf_weak"} and "agonist" in decisions
    assert payload[0]["units"][0].startswith("L0.mlp[") and payload[0]["problem"] == "('rule-3', 'positive')"
    assert json.loads(json.dumps(result.summary()))["group_evaluations"] == result.group_evaluations


def test_unit_protocol_accepts_any_hashable_with_an_int_layer() -> None:
    assert isinstance(U(1, 2), Unit)
    with pytest.raises(ConfigError, match="layer"):
        SearchProblem("p", ["L0.mlp[1]"])  # type: ignore[list-item]


def test_invalid_problems_configs_and_oracles_are_rejected() -> None:
    units = layer_units(4)
    with pytest.raises(ConfigError, match="duplicate"):
        SearchProblem("p", [units[0], units[0]])
    with pytest.raises(ConfigError, match="distinct"):
        search([SearchProblem("p", units), SearchProblem("p", units)], PlantedOracle({}))
    with pytest.raises(ConfigError, match="finite"):
        SearchProblem("p", units, {units[0]: float("nan")})
    for bad in ({"predicate": "max"}, {"tau": 0.0}, {"alpha_slice": 0.7}, {"budget": 0}, {"seed": -1}):
        with pytest.raises(ConfigError):
            SearchConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="results for"):
        search([SearchProblem("p", units)], lambda queries: [])
    with pytest.raises(DataError, match="flips"):
        SliceCounts(65, 64, 0, 64)


def test_bound_formula() -> None:
    assert bound(1, 1) == 3.0
    assert bound(4, 1024) == pytest.approx(3 * 4 * 8 + 8 + 1)
    assert bound(4, 1024, audit=8) == pytest.approx(3 * 4 * 8 + 8 + 1 + 8)
    assert bound(0, 100) == 1.0
    assert bound(0, 100, audit=8) == 9.0
    with pytest.raises(ConfigError):
        bound(5, 4)


def test_tau_is_adjusted_for_slices_smaller_than_64_prompts() -> None:
    """2 of 32 flips has UCB 0.208 ≥ 0.2, but the reference share (6/64 → 3 of 32) lifts tau to 0.25."""
    units = layer_units(4)
    oracle = PlantedOracle({"p": {units[1]: (2 / 32, 0.0), units[2]: (3 / 32, 0.0)}}, n=32)
    adjusted = search([SearchProblem("p", units)], oracle)
    raw = search([SearchProblem("p", units)], oracle, SearchConfig(adjust_tau=False))
    assert agonist_units(adjusted) == {units[2]} and agonist_units(raw) == {units[1], units[2]}
    assert adjusted.trace[0].evaluation.tau == pytest.approx(0.2502, abs=1e-4)


def test_the_agonist_columns_are_the_keys_of_an_agonist_row() -> None:
    from mecharule.search.results import AGONIST_COLUMNS

    units = layer_units(10)
    result = search([SearchProblem("p", units)], PlantedOracle({"p": {units[4]: (0.5, 0.125)}}))
    (agonist,) = result.agonists
    assert tuple(agonist.to_dict()) == AGONIST_COLUMNS  # also the header of an empty agonists.csv
