"""``mecharule sweep``: each setting re-runs only the stages that read the varied field, the base run
is left as it was, and the paired tests count what the runs found."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mecharule.cli import app
from mecharule.compare import agonist_set
from mecharule.config import load_config
from mecharule.pipeline import Pipeline, default_stages
from mecharule.sweep.plan import parse_vary, plan_settings
from mecharule.sweep.runner import stage_plan

from .small_run import SMALL_RUN

SMALL = {**SMALL_RUN, "rules.max_rules": 2}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "base"
    config = load_config(None, SMALL)
    pipe = Pipeline(config, out)
    for stage in default_stages(config):
        getattr(pipe, stage)()
    pipe.write_summary()
    return out, config


def _digests(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("vary", "reused"),
    [
        ("search.tau=0.35", ["measure", "rules", "attribute"]),
        ("attribution.top_m=8", ["measure", "rules", "attribute"]),  # attribute scores every unit
        ("recompose.pair_units=3", ["measure", "rules", "attribute", "localize", "anchor"]),
        ("ablation.value=zero", ["measure", "rules"]),
        ("rules.max_rules=1", ["measure", "rules"]),
        ("task.max_prompts=1400", []),
        ("executor.batch_size=7", ["measure", "rules", "attribute", "localize", "recompose", "anchor"]),
    ],
)
def test_a_setting_reuses_exactly_the_stages_that_do_not_read_the_varied_field(base_run, vary, reused):
    base, config = base_run
    (setting,) = plan_settings(config, [parse_vary(vary)], grid=False)
    plan = stage_plan(base, Pipeline(setting.config, base))
    assert [stage for stage, done in plan.items() if done] == reused


def test_the_sweep_runs_what_changed_and_tests_it_against_the_base(base_run, tmp_path):
    base, config = base_run
    before = _digests(base)
    out = tmp_path / "tau"
    args = ["sweep", str(base), "--vary", f"localize.tau={config.search.tau},0.35", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert _digests(base) == before  # the base run is read, never written
    record = json.loads((out / "sweep.json").read_text())
    own, other = record["runs"][1], record["runs"][2]
    assert own["path"] == str(base) and own["stages"]["all"]["note"] == "the base run"
    ran = [stage for stage, r in other["stages"].items() if r["ran"]]
    assert ran == ["localize", "recompose", "anchor", "report"]
    setting = Path(other["path"])
    assert setting == out / "search.tau=0.35"
    assert json.loads((setting / "run.json").read_text())["config"]["search"]["tau"] == 0.35
    tests = pd.read_csv(out / "tests.csv").set_index("compared")
    found = tests.loc["agonist found per unit: search.tau=0.35 vs base"]
    mine, theirs = agonist_set(setting), agonist_set(base)
    assert found["pairs"] == len(mine | theirs)
    assert (found["setting > base"], found["setting < base"]) == (len(mine - theirs), len(theirs - mine))
    assert len(theirs - mine) > 0  # a higher threshold accepts fewer units: the test has pairs to count
    assert "p, exact sign test" in tests.columns and "Holm p, sign-flip test" in tests.columns
    settings = pd.read_csv(out / "settings.csv")
    assert settings["setting"].tolist() == ["base run", f"search.tau={config.search.tau}", "search.tau=0.35"]
    assert settings["agonists"].tolist()[2] == len(mine)
    assert settings["stages run"].tolist()[1:] == [
        "none (the base run's own setting)",
        "localize, recompose, anchor, report",
    ]
    html = (out / "index.html").read_text()
    assert "Paired tests against the base run" in html and html.count("<img ") == 4  # figures against tau


def test_a_rerun_sweep_reuses_every_stage_of_its_settings(base_run, tmp_path):
    base, _ = base_run
    out = tmp_path / "again"
    args = ["sweep", str(base), "--vary", "recompose.pair_units=3", "--out", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stages = json.loads((out / "sweep.json").read_text())["runs"][1]["stages"]
    assert [s for s, r in stages.items() if r["ran"]] == []
    # the table still names what was computed for the setting (from its run.json), not this call
    settings = pd.read_csv(out / "settings.csv")
    assert settings["stages run"].tolist()[1] == "recompose, report" and settings["seconds"][1] > 0


def test_a_sweep_needs_a_finished_base_run(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["sweep", str(tmp_path / "empty"), "--vary", "search.tau=0.3"])
    assert result.exit_code == 2 and "is not a finished run" in result.output


def test_the_sweep_output_may_not_live_inside_the_base_run(base_run):
    base, _ = base_run
    result = CliRunner().invoke(
        app, ["sweep", str(base), "--vary", "search.tau=0.3", "--out", str(base / "x")]
    )
    assert result.exit_code == 2 and "must not be inside the base run" in result.output
    assert not (base / "x").exists()


def test_a_setting_starts_as_a_copy_without_the_lock_journals_or_report(tmp_path):
    from mecharule.sweep.runner import seed_directory

    base = tmp_path / "base"
    for name in ("run.json", "rules.json", "run.lock", "summary.json", "localization/summary.json"):
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(name)
    for folder in (".partial/localize-x", "report"):
        (base / folder).mkdir(parents=True)
        (base / folder / "file").write_text("x")
    target = tmp_path / "out" / "search.tau=0.3"
    stale = target.with_name(target.name + ".copying")
    stale.mkdir(parents=True)
    (stale / "leftover").write_text("from a killed copy")
    seed_directory(base, target)
    copied = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert copied == ["localization/summary.json", "rules.json", "run.json"]
    assert not stale.exists()
    (target / "rules.json").write_text("changed by the setting")
    assert (base / "rules.json").read_text() == "rules.json"  # a copy, not a link


def test_a_warm_started_anchor_equals_one_computed_from_scratch(base_run, tmp_path):
    """The base run's flip columns and anchored rules are offered to the setting's anchor stage;
    what it writes is what a cold anchor stage on the same setting writes."""
    import shutil

    from mecharule.io.rundir import RunDir

    base, _ = base_run
    out = tmp_path / "warm"
    result = CliRunner().invoke(app, ["sweep", str(base), "--vary", "search.tau=0.35", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "flip columns and anchored rules offered from the base run" in result.output
    replayed = re.search(r"anchor: ([\d,]+) pieces replayed from the earlier try", result.output)
    assert replayed and int(replayed.group(1).replace(",", "")) > 0  # the stage took them
    warm = out / "search.tau=0.35"
    cold = tmp_path / "cold"
    shutil.copytree(warm, cold)
    RunDir(cold).forget(["anchor", "report"])
    setting = load_config(None, base=RunDir(warm).manifest()["config"])
    assert Pipeline(setting, cold).anchor() is True  # no journal: every unit computed
    assert json.loads((cold / "neuron_rules.json").read_text()) == json.loads(
        (warm / "neuron_rules.json").read_text()
    )
    assert pd.read_parquet(cold / "flips.parquet").equals(pd.read_parquet(warm / "flips.parquet"))
    shared = set(pd.read_parquet(base / "flips.parquet").columns) & set(
        pd.read_parquet(warm / "flips.parquet").columns
    )
    assert shared - {"row", "split", "baseline"}  # the warm start had units to offer
