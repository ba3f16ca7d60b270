"""``mecharule compare``: runs side by side and the agonist overlap of runs of the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mecharule.cli import app
from mecharule.compare import compare_runs
from mecharule.errors import RunDirError


def _run(path: Path, model: str, agonists: list[str], accuracy: float) -> Path:
    """A finished run directory with the files compare reads (no run.json: every file stands)."""
    (path / "localization").mkdir(parents=True)
    summary = {
        "model": model, "task": "arithmetic", "accuracy": accuracy, "n_rules": 2, "rules_test_mcc": 0.8,
        "rules_control_test_mcc": 0.01, "n_agonists": len(agonists), "interventions": 100,
        "hq_neurons_test_0.70": 1, "hq_neurons_fake_target_0.70": 0, "hq_neurons_random_units_0.70": 0,
        "wall_seconds": {"measure": 1.0, "localize": 2.5},
    }  # fmt: skip
    (path / "summary.json").write_text(json.dumps(summary))
    problems = [{"key": "R1/positive", "n_candidates": 40, "agonists": [{"unit": u} for u in agonists]}]
    (path / "localization" / "summary.json").write_text(json.dumps({"problems": problems}))
    return path


def test_runs_of_one_model_overlap_by_their_shared_agonists(tmp_path):
    a = _run(tmp_path / "a", "zoo:arithmetic", ["L0.mlp[3]", "L1.mlp[10]", "L1.mlp[2]"], 0.79)
    summary = json.loads((a / "summary.json").read_text())
    summary["recomposition"] = {"cancelling": 1, "redundant": 2}  # as summary.json counts the kinds
    (a / "summary.json").write_text(json.dumps(summary))
    b = _run(tmp_path / "b", "zoo:arithmetic", ["L1.mlp[10]", "L1.mlp[2]", "L0.mlp[7]"], 0.80)
    c = _run(tmp_path / "c", "smollm2-135m", ["L1.mlp[10]"], 0.24)
    tables = compare_runs([a, b, c], tmp_path / "cmp")
    runs, overlap = tables["runs"], tables["overlap"]
    assert runs["run"].tolist() == ["a", "b", "c"] and runs["accuracy"].tolist() == [0.79, 0.80, 0.24]
    assert runs["agonists / candidates"].tolist() == [0.075, 0.075, 0.025]
    assert runs["wall seconds"].tolist() == [3.5, 3.5, 3.5]
    assert runs["recomposition"].fillna("—").tolist() == ["1 cancelling, 2 redundant", "—", "—"]
    assert len(overlap) == 1  # c is another model: no pair with it
    row = overlap.iloc[0]
    assert (row["run A"], row["run B"], row["shared"], row["Jaccard"]) == ("a", "b", 2, 0.5)
    assert row["shared units"] == "L1.mlp[2], L1.mlp[10]"  # layer, then index order
    for name in ("runs.csv", "runs.md", "overlap.csv", "overlap.md", "index.html"):
        assert (tmp_path / "cmp" / name).exists(), name
    assert pd.read_csv(tmp_path / "cmp" / "overlap.csv")["Jaccard"].tolist() == [0.5]
    html = (tmp_path / "cmp" / "index.html").read_text()
    assert "Agonist overlap" in html and html.count("<img ") == 3 and "http" not in html.split("<footer>")[0]


def test_compare_needs_finished_runs_and_two_of_them(tmp_path):
    a = _run(tmp_path / "a", "m", [], 0.5)
    with pytest.raises(RunDirError, match="at least two"):
        compare_runs([a], tmp_path / "cmp")
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(
        app, ["compare", str(a), str(tmp_path / "empty"), "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "has no summary.json" in result.output


def test_the_command_prints_the_tables_and_where_the_page_is(tmp_path):
    a = _run(tmp_path / "a", "m", ["L0.mlp[1]"], 0.5)
    b = _run(tmp_path / "b", "m", ["L0.mlp[1]"], 0.6)
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert "| a | m | arithmetic |" in result.output and "| 1.000 |" in result.output
    assert f"comparison → {tmp_path / 'cmp' / 'index.html'}" in result.output
