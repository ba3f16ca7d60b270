"""Honest scoring (train-selected, test-scored), the permuted-label control, and the rules stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rules_synthetic import PLANTED_FEATURES, planted_table, write_run_dir

from mecharule.errors import ConfigError, DataError, RunDirError
from mecharule.rules import (
    RuleSet,
    RuleShapExtractor,
    extract_and_score,
    extract_behaviour_rules,
    format_rules_table,
    parse_ruleset,
    rule_metrics,
)


@pytest.fixture(scope="module")
def report():  # type: ignore[no-untyped-def]
    X, noisy, _, is_test = planted_table(n=4000, seed=2)
    return X, noisy, is_test, extract_and_score(X, noisy, is_test, seed=0)


def test_metrics_are_held_out_and_control_is_near_zero(report) -> None:  # type: ignore[no-untyped-def]
    X, y, is_test, rep = report
    fire = rep.rules.evaluate(X)
    assert rep.result.metrics.test == rule_metrics(fire[is_test], y[is_test])
    assert rep.result.metrics.train == rule_metrics(fire[~is_test], y[~is_test])
    assert rep.result.metrics.all == rule_metrics(fire, y)
    assert rep.result.metrics.test.mcc >= 0.8
    assert rep.n_test == is_test.sum() and rep.n_train == (~is_test).sum()
    assert rep.control is not None
    assert abs(rep.control.metrics.test.mcc) < 0.1
    assert rep.control.metrics.test.prevalence == pytest.approx(y[is_test].mean(), abs=0.05)


def test_fit_uses_train_rows_only(report) -> None:  # type: ignore[no-untyped-def]
    X, y, is_test, rep = report
    direct = RuleShapExtractor(seed=0).fit(X[~is_test], y[~is_test])
    assert direct.rules_ == rep.rules


def test_each_disjunct_is_scored_on_its_own(report) -> None:  # type: ignore[no-untyped-def]
    X, y, is_test, rep = report
    assert len(rep.result.disjuncts) == len(rep.rules)
    for item in rep.result.disjuncts:
        fire = item.rule.evaluate(X)
        assert item.metrics.test == rule_metrics(fire[is_test], y[is_test])
    body = rep.to_dict()
    assert parse_ruleset(body["rules"]["text"]) == rep.rules
    assert RuleSet.from_dict(body["rules"]["structured"]) == rep.rules
    json.dumps(body)  # JSON-serialisable as is


def test_estimator_instance_and_no_test_rows() -> None:
    X, y, _, _ = planted_table(n=800, n_distractors=3, seed=1)
    none_test = np.zeros(len(X), bool)
    rep = extract_and_score(X, y, none_test, extractor=RuleShapExtractor(n_estimators=10), control=False)
    assert rep.result.metrics.test is None and rep.control is None and rep.params["n_estimators"] == 10
    with pytest.raises(DataError, match="training rows"):
        extract_and_score(X, y, np.ones(len(X), bool))
    with pytest.raises(DataError, match="is_test"):
        extract_and_score(X, y, np.zeros(len(X) - 1, bool))


def test_stage_writes_rules_json_and_plots(tmp_path: Path) -> None:
    write_run_dir(tmp_path)
    result = extract_behaviour_rules(tmp_path, seed=0)
    on_disk = json.loads((tmp_path / "rules.json").read_text())
    assert result == on_disk and on_disk["schema_version"] == 1
    assert on_disk["target"]["name"] == "fail" and on_disk["seed"] == 0
    assert set(parse_ruleset(on_disk["rules"]["text"]).features) == PLANTED_FEATURES
    assert "operator is *" in on_disk["rules"]["readable"]
    assert on_disk["metrics"]["primary"] == "test" and on_disk["metrics"]["test"]["mcc"] > 0.6
    assert on_disk["control"]["metrics"]["test"]["mcc"] < 0.3
    assert [d["id"] for d in on_disk["disjuncts"]] == [f"R{i + 1}" for i in range(len(on_disk["disjuncts"]))]
    for name in ("shap_importance.png", "coverage_precision.png"):
        assert (tmp_path / "rules_plots" / name).read_bytes()[:4] == b"\x89PNG"
    table = format_rules_table(on_disk)
    assert "R1" in table and "fake-target control" in table and "operator is *" in table


def test_stage_success_target_and_bad_inputs(tmp_path: Path) -> None:
    write_run_dir(tmp_path, n=600)
    success = extract_behaviour_rules(tmp_path, target="success", options={"n_estimators": 20})
    assert success["target"]["definition"].startswith("label == True")
    assert success["params"]["n_estimators"] == 20
    with pytest.raises(ConfigError, match="target"):
        extract_behaviour_rules(tmp_path, target="both")
    behaviour = pd.read_parquet(tmp_path / "behaviour.parquet")
    behaviour.iloc[:-1].to_parquet(tmp_path / "behaviour.parquet")
    with pytest.raises(DataError, match="same prompts"):
        extract_behaviour_rules(tmp_path)
    behaviour.assign(split="validation").to_parquet(tmp_path / "behaviour.parquet")
    with pytest.raises(DataError, match="split"):
        extract_behaviour_rules(tmp_path)
    with pytest.raises(RunDirError, match=r"features\.parquet"):
        extract_behaviour_rules(tmp_path / "missing")
