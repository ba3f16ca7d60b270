"""Brute force, recall by effect bin and cost ratio; the torch-free import contract; the benchmark runs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from planted import CancellingOracle, PlantedOracle, layer_units

from mecharule.errors import ConfigError
from mecharule.search import (
    DEFAULT_BINS,
    SearchConfig,
    SearchProblem,
    brute_force,
    cp_upper,
    recall_by_effect_bin,
    search,
)

REPO = Path(__file__).resolve().parents[3]


def test_brute_force_evaluates_every_candidate_alone_in_chunks() -> None:
    units = layer_units(50)
    oracle = PlantedOracle({"p": {units[7]: (0.5, 0.0)}, "q": {units[1]: (0.0, 0.4)}})
    problems = [SearchProblem("p", units), SearchProblem("q", units[:20])]
    bf = brute_force(problems, oracle, chunk_size=16)
    assert bf.oracle_calls == len(oracle.calls) == 5  # 70 singletons in chunks of 16
    assert all(len(q.units) == 1 for call in oracle.calls for q in call)
    assert bf.group_evaluations == bf.n_singletons == 70 == len(bf.records)
    assert {(a.problem, a.unit) for a in bf.agonists} == {("p", units[7]), ("q", units[1])}
    assert brute_force(problems, oracle).oracle_calls == 1
    with pytest.raises(ConfigError):
        brute_force(problems, oracle, chunk_size=0)


def test_recall_bins_by_upper_bound_and_by_point_estimate() -> None:
    units = layer_units(64)
    weak, mid, high = units[10], units[30], units[50]
    # 10/64 flips: point 0.156 (below every bin), UCB 0.27; 26/64: point 0.41, UCB 0.54; 51/64: both high.
    oracle = PlantedOracle({"p": {weak: (10 / 64, 0.0), mid: (26 / 64, 0.0), high: (51 / 64, 0.0)}})
    problem = SearchProblem("p", units)
    bf = brute_force([problem], oracle)
    cha = search([problem], oracle)
    report = recall_by_effect_bin(bf, cha)
    assert report.recall == 1.0 and report.n_reference == 3
    assert [b.n_reference for b in report.by_upper] == [1, 0, 2]
    assert [b.n_reference for b in report.by_point] == [0, 1, 1]
    assert report.by_upper[0].recall == 1.0 and report.by_upper[1].recall is None
    assert float(cp_upper(10, 64, 0.025)) == pytest.approx(
        next(a for a in bf.agonists if a.unit == weak).max_upper
    )
    assert report.cost_ratio == cha.group_evaluations / 64
    assert json.loads(json.dumps(report.to_dict()))["cost_ratio"] == report.cost_ratio
    assert [(b.low, b.high) for b in report.by_upper] == list(DEFAULT_BINS)


def test_recall_reports_misses_of_a_non_monotone_oracle() -> None:
    units = layer_units(16)
    a, b = units[3], units[9]
    oracle = CancellingOracle({"p": {a: (0.7, 0.0), b: (0.7, 0.0)}}, mode="coupled", seed=0)
    oracle.masks[("p", b)] = oracle.masks[("p", a)]
    problem = SearchProblem("p", units)
    tree = SearchConfig(audit=0, expand_dense=False)  # the plain tree: nothing catches the cancellation
    report = recall_by_effect_bin(brute_force([problem], oracle), search([problem], oracle, tree))
    assert report.recall == 0.0 and report.n_reference == 2
    (top,) = [x for x in report.by_upper if x.n_reference]
    assert set(top.missed) == {("p", a), ("p", b)}


def test_recall_counts_only_problems_both_runs_covered() -> None:
    units = layer_units(32)
    oracle = PlantedOracle({"p": {units[0]: (0.6, 0.0)}, "q": {units[1]: (0.6, 0.0)}})
    bf = brute_force([SearchProblem("p", units)], oracle)
    cha = search([SearchProblem("p", units), SearchProblem("q", units)], oracle)
    report = recall_by_effect_bin(bf, cha)
    assert report.n_singletons == 32
    assert report.cha_evaluations == next(p.group_evaluations for p in cha.problems if p.problem == "p")
    with pytest.raises(ConfigError, match="low < high"):
        recall_by_effect_bin(bf, cha, bins=((0.5, 0.2),))


def test_contrastive_brute_force_uses_the_same_predicate() -> None:
    units = layer_units(8)
    oracle = PlantedOracle({"p": {units[0]: (0.5, 0.5), units[1]: (0.5, 0.0)}})
    bf = brute_force([SearchProblem("p", units)], oracle, SearchConfig(predicate="contrastive"))
    assert [a.unit for a in bf.agonists] == [units[1]]


@pytest.mark.parametrize(
    "module",
    [
        "mecharule.search",
        "mecharule.search.cha",
        "mecharule.search.types",
        "mecharule.search.predicates",
        "mecharule.search.results",
        "mecharule.search.tree",
        "mecharule.search.ledger",
        "mecharule.search.stats",
        "mecharule.search.density",
        "mecharule.search.population",
        "mecharule.search.brute_force",
        "mecharule.shortlist",
        "mecharule.config",
    ],
)
def test_search_core_imports_no_torch(module: str) -> None:
    code = f"import sys, {module}; sys.exit(int(any(m in sys.modules for m in ('torch', 'transformers'))))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_benchmark_runs_on_small_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = REPO / "benchmarks" / "group_testing_synthetic.py"
    spec = importlib.util.spec_from_file_location("group_testing_synthetic", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses resolve annotations through it
    spec.loader.exec_module(bench)
    out = tmp_path / "scaling.png"
    rows = bench.main(["--sizes", "64", "256", "--ks", "2", "--repeats", "2", "--out", str(out)])
    assert out.stat().st_size > 0
    assert {(r.n, r.k) for r in rows} == {(64, 2), (256, 2)}
    assert all(r.recall == 1.0 and r.max_evaluations <= r.bound for r in rows)
