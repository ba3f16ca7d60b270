"""A run directory never claims mixed or stale results: a stage's record is true or absent, cache keys
cover what a stage reads (and the model's weights, but not speed-only settings), a stage refuses
upstream outputs made under another config, and a second process is kept out by the lock."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mecharule.cli import app
from mecharule.config import load_config
from mecharule.io.rundir import RunDir
from mecharule.pipeline import Pipeline, default_stages

from .small_run import SMALL_RUN

SMALL = SMALL_RUN


def _pipe(out: Path, **overrides) -> Pipeline:
    return Pipeline(load_config(None, {**SMALL, **overrides}), out)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    pipe = _pipe(out)
    for stage in default_stages(pipe.config):
        getattr(pipe, stage)()
    return out


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def _write_config(path: Path, **overrides) -> Path:
    data: dict = {}
    for dotted, value in {**SMALL, **overrides}.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_config_change_killed_mid_stage_is_not_marked_complete(run_copy, monkeypatch):
    """The tester's case: re-run with anchor.max_agonists 2, killed after flips.parquet is replaced."""
    import mecharule.anchoring.stage as anchoring

    real_write_json = anchoring.write_json

    def killed_before_neuron_rules(path, payload):
        if Path(path).name == "neuron_rules.json":
            raise KeyboardInterrupt
        real_write_json(path, payload)

    monkeypatch.setattr(anchoring, "write_json", killed_before_neuron_rules)
    with pytest.raises(KeyboardInterrupt):
        _pipe(run_copy, **{"anchor.max_agonists": 2}).anchor()
    monkeypatch.undo()
    stages = RunDir(run_copy).manifest()["stages"]
    assert "anchor" not in stages and "report" not in stages  # forgotten before the body started
    assert "localize" in stages
    original = _pipe(run_copy)
    assert original.anchor() is True  # not "skipped (already done)" over mixed files
    flips = pd.read_parquet(run_copy / "flips.parquet")
    anchored = json.loads((run_copy / "neuron_rules.json").read_text())
    agonist_columns = [c for c in flips.columns if c not in ("row", "split", "baseline")]
    assert len(agonist_columns) == anchored["n_agonists"] == len(anchored["agonists"])


def test_report_skips_files_of_a_stage_that_does_not_stand(run_copy):
    from mecharule.report.load import load_run

    assert load_run(run_copy).neuron_rules is not None
    RunDir(run_copy).forget(["anchor"])  # as an interrupted re-run leaves it
    artifacts = load_run(run_copy)
    assert artifacts.neuron_rules is None and artifacts.flips is None
    assert artifacts.localization is not None


def test_a_stage_refuses_upstream_made_under_another_config(run_copy, tmp_path):
    success = _write_config(tmp_path / "success.yaml", **{"rules.target": "success"})
    result = CliRunner().invoke(app, ["attribute", str(run_copy), "--config", str(success)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "rules ran in" in lines[0] and "under another config" in lines[0]
    assert f"mecharule rules {run_copy} --config {success}" in lines[0]


def test_a_hand_edited_upstream_file_is_refused(run_copy):
    (run_copy / "rules.json").write_text(json.dumps({"rules": 5}))
    result = CliRunner().invoke(app, ["localize", str(run_copy)])
    assert result.exit_code == 2
    assert "rules.json changed since rules wrote it" in result.output


def test_a_damaged_behaviour_table_is_recomputed_on_resume(run_copy):
    (run_copy / "behaviour.parquet").write_bytes(b"garbage")
    pipe = _pipe(run_copy)
    assert pipe.measure() is True  # its digest no longer matches: not skipped
    assert len(pd.read_parquet(run_copy / "behaviour.parquet")) == 1500
    assert pipe.rules() is True  # later records were forgotten when measure started


def test_speed_only_settings_are_not_in_the_key(run_copy):
    pipe = _pipe(run_copy, **{"executor.batch_size": 7, "executor.memory_budget_mb": 64})
    assert not any(getattr(pipe, stage)() for stage in ["measure", "rules", "attribute", "localize"])


def test_an_option_a_stage_reads_is_in_its_key():
    base = _pipe(Path("unused"))
    positions = _pipe(Path("unused"), **{"ablation.positions": "all"})
    assert base.stage_hash("attribute") != positions.stage_hash("attribute")  # attribute reads it
    assert base.stage_hash("rules") == positions.stage_hash("rules")  # rules does not


def test_files_of_an_earlier_config_are_removed(run_copy):
    stale = run_copy / "attribution" / "rule_R9.json"
    stale.write_text("{}")
    assert _pipe(run_copy, **{"attribution.n_pairs": 4}).attribute() is True
    assert not stale.exists()
    assert (run_copy / "attribution" / "rule_R1.json").exists()
    old_problem = run_copy / "localization" / "R9_positive" / "agonists.csv"
    old_problem.parent.mkdir()
    old_problem.write_text("problem,unit\n")
    assert _pipe(run_copy, **{"attribution.n_pairs": 4}).localize() is True
    assert not old_problem.parent.exists()
    assert (run_copy / "localization" / "R1_positive" / "agonists.csv").exists()


def test_new_weights_invalidate_measure(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from mecharule.zoo.registry import ORGANISMS_DIR

    model_dir = tmp_path / "organism"
    shutil.copytree(ORGANISMS_DIR / "arithmetic", model_dir)
    out = tmp_path / "run"
    options = {
        "model.name": str(model_dir),
        "task.max_prompts": 200,
        "task.options": {"prompt_format": "raw"},
    }
    assert _pipe(out, **options).measure() is True
    assert _pipe(out, **options).measure() is False
    weights = load_file(str(model_dir / "model.safetensors"))
    save_file({k: torch.zeros_like(v) for k, v in weights.items()}, str(model_dir / "model.safetensors"))
    assert _pipe(out, **options).measure() is True  # not "already measured" with the old accuracy
    assert pd.read_parquet(out / "behaviour.parquet")["label"].mean() == 0.0


def test_a_second_run_into_a_locked_directory_refuses(run_copy):
    import os
    import socket

    lock = {"pid": os.getppid(), "host": socket.gethostname(), "command": "mecharule run --seed 0"}
    (run_copy / "run.lock").write_text(json.dumps(lock))
    result = CliRunner().invoke(app, ["run", "--out", str(run_copy), "--seed", "1"])
    assert result.exit_code == 2
    assert "is in use by `mecharule run --seed 0`" in result.output
    assert json.loads((run_copy / "run.json").read_text())["seed"] == 0  # untouched


def test_every_agonists_csv_has_its_header_even_when_empty(finished):
    from mecharule.search.results import AGONIST_COLUMNS

    tables = sorted((finished / "localization").glob("*/agonists.csv"))
    assert tables
    for path in tables:
        assert tuple(pd.read_csv(path).columns) == AGONIST_COLUMNS, path


def test_a_problem_without_agonists_writes_a_csv_with_its_header(tmp_path):
    from types import SimpleNamespace

    from mecharule.localization.stage import _problem_entry
    from mecharule.search.results import AGONIST_COLUMNS

    result = SimpleNamespace(trace=[], agonists_for=lambda key: [], catastrophic=[])
    stats = SimpleNamespace(
        n_candidates=4, group_evaluations=2, levels=1, density=0.0, audit_evaluations=1,
        expanded_groups=0, nonmonotone_splits=0,
    )  # fmt: skip
    spec = SimpleNamespace(key="R1/negative")
    problem = SimpleNamespace(n_covered=8, n_unrelated=8, dropped_rows=[])
    _problem_entry(tmp_path, spec, problem, result, stats)
    assert tuple(pd.read_csv(tmp_path / "R1_negative" / "agonists.csv").columns) == AGONIST_COLUMNS


def test_a_trained_organism_directory_is_an_organism(tmp_path):
    from mecharule.pipeline import is_organism

    assert is_organism("zoo:arithmetic")
    assert not is_organism(str(tmp_path))
    (tmp_path / "training_report.json").write_text(json.dumps({"organism": "arithmetic", "seed": 0}))
    assert is_organism(str(tmp_path))  # `mecharule zoo train` output: the raw prompt formats apply
