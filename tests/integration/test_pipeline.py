"""End to end on the bundled organism with a small config: every stage writes its artifacts, a
re-run skips finished stages with identical results, an interrupted run resumes, bad input fails
with one line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mecharule.cli import app
from mecharule.config import load_config
from mecharule.pipeline import Pipeline, default_stages

SMALL = {
    "task.max_prompts": 3000,
    "search.n_covered": 24,
    "search.n_unrelated": 24,
    "ablation.n_reference": 64,
    "rules.max_rules": 1,
    "attribution.n_pairs": 16,
    "attribution.top_m": 32,
    "anchor.max_eval_prompts": 600,
    "anchor.max_agonists": 3,
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = load_config(None, {**SMALL, "validation.brute_force": True})
    pipe = Pipeline(config, out)
    ran = {stage: getattr(pipe, stage)() for stage in default_stages(config)}
    return out, config, ran


def test_every_stage_ran_and_wrote_its_artifacts(finished_run):
    out, _, ran = finished_run
    assert all(ran.values())
    for name in [
        "run.json",
        "behaviour.parquet",
        "features.parquet",
        "features.json",
        "rules.json",
        "localization/summary.json",
        "validation.json",
        "flips.parquet",
        "neuron_rules.json",
        "summary.json",
        "report/index.html",
    ]:
        assert (out / name).exists(), name
    for name in ["run.json", "rules.json", "validation.json", "neuron_rules.json", "summary.json"]:
        assert json.loads((out / name).read_text())["schema_version"] == 1
    behaviour = pd.read_parquet(out / "behaviour.parquet")
    assert len(behaviour) == 3000
    assert set(behaviour["split"]) == {"train", "test"}
    summary = json.loads((out / "summary.json").read_text())
    assert 0.6 <= summary["accuracy"] <= 0.9
    assert summary["n_rules"] >= 1 and summary["interventions"] > 0
    assert "cost_ratio" in summary and 0 <= summary["recall_in_shortlist"] <= 1
    assert set(summary["recall_all_units"]) <= {"positive", "negative"}
    for figures in (summary["recall_all_units"], summary["shortlist_recall"]):
        for bins in figures.values():
            assert set(bins) == {"0.5", "0.3", "0.2"}
    assert summary["cost_ratio_max"] <= 1.1
    loc = json.loads((out / "localization" / "summary.json").read_text())
    for problem in (p for p in loc["problems"] if not p["skipped"]):
        assert problem["density"] == round(len(problem["agonists"]) / problem["n_candidates"], 4)
        assert problem["audit_evaluations"] >= 1
        assert problem["cha_cannot_save"] == (problem["group_evaluations"] >= 0.9 * problem["n_candidates"])
    rules = json.loads((out / "rules.json").read_text())
    assert rules["metrics"]["test"]["mcc"] > rules["control"]["metrics"]["test"]["mcc"] + 0.3


def test_validation_counts_strong_agonists_the_shortlist_dropped(finished_run):
    """32 of 256 units are candidates: the all-units recall is below 1 where brute force over the
    other 224 finds agonists, and each one it names really flips prompts when ablated alone."""
    from mecharule.localization.stage import prepare

    out, config, _ = finished_run
    validation = json.loads((out / "validation.json").read_text())
    dropped = [(p, row) for p in validation["problems"] for row in p["agonists_outside_shortlist"]]
    assert dropped, "expected strong agonists outside a 32-unit shortlist"
    for problem in validation["problems"]:
        assert problem["n_population"] == 256 and problem["exhaustive"]
        for b in problem["bins"].values():
            outside = len(b["agonists_outside_shortlist"])
            assert b["outside_shortlist_estimate"] == outside  # exhaustive: counted, not estimated
            if outside:
                assert b["recall"] < 1 and b["shortlist_recall"] < 1
                assert b["recall"] == round(b["found"] / (b["in_shortlist"] + outside), 4)
    setup = prepare(Pipeline(config, out).context())
    problem, row = max(dropped, key=lambda item: item[1]["effect"])
    layer, index = row["unit"].removeprefix("L").replace("]", "").split(".mlp[")
    from mecharule.models.sites import Site

    flips = setup.oracle.flips(problem["key"], [[Site(int(layer), "mlp", int(index))]])[0]
    covered = setup.problems[problem["key"]].is_covered
    rate = max(flips[covered].mean(), flips[~covered].mean())
    assert rate == pytest.approx(row["effect"], abs=1e-4) and rate >= 0.2  # rounded to 4 places


def test_rerun_skips_every_stage_and_keeps_results(finished_run):
    out, config, _ = finished_run
    before = {
        p: p.read_bytes() for p in [out / "rules.json", out / "neuron_rules.json", out / "flips.parquet"]
    }
    pipe = Pipeline(config, out)
    assert not any(getattr(pipe, stage)() for stage in default_stages(config))
    assert all(p.read_bytes() == data for p, data in before.items())


def test_changing_a_late_option_reruns_only_later_stages(finished_run, tmp_path):
    out, _, _ = finished_run
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    config = load_config(None, {**SMALL, "validation.brute_force": True, "anchor.max_agonists": 2})
    pipe = Pipeline(config, copy)
    ran = {stage: getattr(pipe, stage)() for stage in default_stages(config)}
    assert not ran["measure"] and not ran["rules"] and not ran["localize"]
    assert ran["anchor"]
    assert json.loads((copy / "neuron_rules.json").read_text())["n_agonists"] <= 2


def test_a_run_killed_mid_stage_resumes(tmp_path):
    out = tmp_path / "killed"
    args = ["measure", "--out", str(out), "--max-prompts", "1500"]
    code = (
        "import sys, mecharule.rules as s\n"
        "from mecharule.cli import app\n"
        "def boom(*a, **k): raise KeyboardInterrupt\n"
        "s.extract_behaviour_rules = boom\n"
        f"sys.argv = ['mecharule', 'rules', {str(out)!r}]\n"
        "app()\n"
    )
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert killed.returncode != 0
    assert not (out / "rules.json").exists()
    assert not list(out.glob(".rules.json.*"))  # no half-written file left behind
    resumed = runner.invoke(app, ["rules", str(out)])
    assert resumed.exit_code == 0, resumed.output
    again = runner.invoke(app, args)
    assert "already measured (skipped)" in again.output
    assert (out / "rules.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["measure", "--task", "nope", "--out", "{tmp}/a"], "unknown task 'nope'"),
        (["measure", "--model", "/no/such/model", "--out", "{tmp}/b"], "cannot load model"),
        (["measure", "--model", "zoo:nope", "--out", "{tmp}/c"], "no bundled organism"),
        (["measure", "--out", "/proc/forbidden/x"], "cannot write to output directory"),
        (["rules", "{tmp}/empty"], "has no run.json"),
        (["run", "--out", "{tmp}/d", "--config", "{tmp}/missing.yaml"], "does not exist"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_config_file_sets_options_and_rejects_unknown_keys(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("seed: 3\nmeasure:\n  max_prompts: 100\nlocalize:\n  predicate: contrastive\n")
    config = load_config(good)
    assert config.seed == 3 and config.task.max_prompts == 100 and config.search.predicate == "contrastive"
    bad = tmp_path / "bad.yaml"
    bad.write_text("localize:\n  predicat: ucb\n")
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "r"), "--config", str(bad)])
    assert result.exit_code == 2 and "predicat" in result.output


def test_cli_lists(tmp_path):
    runner = CliRunner()
    assert "arithmetic" in runner.invoke(app, ["list", "tasks"]).output
    assert "zoo:arithmetic" in runner.invoke(app, ["list", "organisms"]).output
    assert "qwen2" in runner.invoke(app, ["list", "architectures"]).output


def test_organism_tokenizer_round_trips_every_prompt():
    from mecharule.models import load_model
    from mecharule.tasks import make_task

    handle = load_model("zoo:arithmetic")
    tok = handle.tokenizer
    prompts = make_task("arithmetic").prompts()["prompt"].tolist()
    encoded = tok(prompts, add_special_tokens=True)["input_ids"]
    assert [tok.decode(ids) for ids in encoded] == prompts
    from mecharule.decoding.generation import encode_prompts
    from mecharule.errors import DataError

    with pytest.raises(DataError, match="cannot encode prompt '12 x 3='"):
        encode_prompts(handle, ["1+1=", "12 x 3="])


def test_organism_training_report_meets_the_bar():
    from mecharule.zoo.registry import organism_dir

    report = json.loads((organism_dir("arithmetic") / "training_report.json").read_text())
    assert 0.60 <= report["heldout_accuracy"] <= 0.90
    assert report["heldout_accuracy_by_slice"]["*"] < report["heldout_accuracy_by_slice"]["+"]
    sweep = report["agonist_sweep"]["by_kind"]
    assert any(k["unit_slices_ge_0.2"] >= 10 and k["unit_slices_ge_0.5"] >= 3 for k in sweep.values())
    assert report["train_seconds"] <= 600


@pytest.mark.parametrize("name", ["arithmetic.yaml", "reference-parity.yaml"])
def test_example_configs_load(name):
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "examples" / name)
    assert config.task.name == "arithmetic"


def test_measure_options_do_not_override_a_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name: /no/such/dir\n")
    result = CliRunner().invoke(app, ["measure", "--out", str(tmp_path / "r"), "--config", str(cfg)])
    assert result.exit_code == 2 and "/no/such/dir" in result.output
