"""Command-line overrides: ``--set`` (and --device/--dtype/--max-prompts) apply on top of the run's saved
config and change exactly the stages that read them; ``config show`` prints the effective config; a
misspelt key or choice gets 'did you mean'; tasks from outside the package run; ``zoo train`` never
writes into the installed package."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from mecharule.cli import app
from mecharule.config import RunConfig, load_config
from mecharule.io.rundir import RunDir
from mecharule.pipeline import Pipeline, default_stages
from mecharule.zoo.registry import ORGANISMS_DIR, training_target

from .small_run import SMALL_RUN

ROOT = Path(__file__).resolve().parents[2]
SMALL = SMALL_RUN


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    pipe = Pipeline(load_config(None, SMALL), out)
    for stage in default_stages(pipe.config):
        getattr(pipe, stage)()
    return out


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _stage_lines(stderr: str) -> dict[str, str]:
    """``{stage: 'done' | 'skipped'}`` from run's ``[stage] done|skipped (already done) in Xs`` lines."""
    return dict(re.findall(r"^\[(\w+)\] (done|skipped)", stderr, flags=re.MULTILINE))


def _saved_config(rundir: Path) -> dict:
    return RunDir(rundir).manifest()["config"]


def test_a_localize_override_reruns_localize_and_what_reads_it(run_copy):
    result = _invoke("run", "--out", run_copy, "--set", "search.tau=0.3")
    assert result.exit_code == 0, result.output
    assert _stage_lines(result.stderr) == {
        "measure": "skipped",
        "rules": "skipped",
        "attribute": "skipped",
        "localize": "done",
        "recompose": "done",
        "anchor": "done",
        "report": "done",
    }
    saved = _saved_config(run_copy)
    assert saved["search"]["tau"] == 0.3
    assert saved["search"]["n_covered"] == 16 and saved["task"]["max_prompts"] == 1500  # kept


def test_a_speed_only_override_reruns_nothing(run_copy):
    result = _invoke("run", "--out", run_copy, "--set", "executor.batch_size=7")
    assert result.exit_code == 0, result.output
    lines = _stage_lines(result.stderr)
    assert set(lines) == {"measure", "rules", "attribute", "localize", "recompose", "anchor", "report"}
    assert [stage for stage, state in lines.items() if state == "done"] == []  # the report too
    assert "batch 7" in result.stderr  # the sizing line: the override is in effect


def test_run_ends_with_a_readable_summary_and_the_raw_figures_on_request(run_copy):
    result = _invoke("run", "--out", run_copy)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.match(r"zoo:arithmetic on arithmetic: accuracy 0\.\d{3} on 1,500 prompts$", lines[0])
    assert lines[1].startswith("behaviour rules (1, when the model fails): test MCC 0.")
    assert any(line.startswith("agonists: ") for line in lines)
    assert any(re.match(r"  R1/positive: \d+ of 16 candidates", line) for line in lines)
    assert any(line.startswith("neuron-anchored rules: ") for line in lines)
    assert f"report: {run_copy / 'report' / 'index.html'}" in lines and "next:" in lines
    assert not any("0000000" in line for line in lines)  # no 16-digit floats
    raw = _invoke("run", "--out", run_copy, "--json")
    figures = json.loads(raw.stdout)
    assert figures["task"] == "arithmetic" and 0.6 < figures["accuracy"] < 0.9


def test_a_stage_command_applies_set_on_top_of_the_saved_config(run_copy):
    result = _invoke("localize", run_copy, "--set", "search.tau=0.3")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("localized → ")
    saved = _saved_config(run_copy)
    assert saved["search"]["tau"] == 0.3
    assert saved["search"]["n_covered"] == 16  # the saved, non-default value survives
    assert saved["attribution"]["top_m"] == 16
    assert RunDir(run_copy).manifest()["stages"]["localize"]["inputs"]["config"]["search.tau"] == 0.3


def test_an_option_that_changes_upstream_names_the_fix_with_the_same_options(run_copy):
    result = _invoke("rules", run_copy, "--max-prompts", "40")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert f"mecharule measure --out {run_copy}" in lines[0]
    assert lines[0].endswith("give that command the same --max-prompts 40")


@pytest.mark.parametrize(
    ("assignment", "phrases"),
    [
        (
            "search.tua=0.3",
            ("unknown config key 'search.tua'", "did you mean 'search.tau'", "n_covered"),
        ),
        ("tau=0.3", ("unknown config key 'tau'", "did you mean 'search.tau'", "keys of the config: seed")),
        ("search.predicate=obsrved", ("unknown predicate 'obsrved'", "did you mean 'observed'")),
        ("attribution.methods=[atp,eap_gi]", ("attribution.methods", "did you mean 'eap_ig'")),
        ("executor.batch_size=aut", ("a valid integer or 'auto'", "did you mean 'auto'")),
        ("search.tau", ("--set expects KEY=VALUE",)),
    ],
)
def test_a_bad_set_is_one_line_with_did_you_mean(run_copy, assignment, phrases):
    for args in (["localize", run_copy], ["run", "--out", run_copy], ["config", "show", run_copy]):
        result = _invoke(*args, "--set", assignment)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        for phrase in phrases:
            assert phrase in lines[0], (phrase, lines[0])


def test_config_show_prints_the_effective_config(run_copy, tmp_path):
    result = _invoke("config", "show", run_copy, "--set", "search.tau=0.3", "--set", "seed=4")
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    expected = load_config(None, {**SMALL, "search.tau": 0.3, "seed": 4})
    assert shown == expected.model_dump(mode="json")
    assert _saved_config(run_copy)["search"]["tau"] == 0.2  # showing changes nothing

    defaults = yaml.safe_load(_invoke("config", "show").stdout)
    assert defaults == RunConfig().model_dump(mode="json")
    file = tmp_path / "shown.yaml"
    file.write_text(result.stdout)
    assert load_config(file) == expected  # the output is a valid --config file


def _config_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    fields = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields += _config_fields(annotation, f"{prefix}{name}.")
        else:
            fields.append(f"{prefix}{name}")
    return fields


def test_the_example_config_lists_every_field_with_its_default():
    example = yaml.safe_load((ROOT / "examples" / "arithmetic.yaml").read_text())
    missing = []
    for dotted in _config_fields(RunConfig):
        node = example
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(dotted)
                break
            node = node[part]
    assert not missing, f"examples/arithmetic.yaml lacks {missing}"
    loaded = load_config(ROOT / "examples" / "arithmetic.yaml").model_dump(mode="json")
    defaults = RunConfig().model_dump(mode="json")
    assert loaded == defaults


TASK_MODULE = """
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mecharule.features.base import Feature


@dataclass(frozen=True)
class Doubling:
    max_operand: int = 49
    max_new_tokens: int = 4

    name = "doubling"
    positive_label = "correct"
    metadata_columns = ("a",)
    group_column = None

    def options(self):
        return {"max_operand": self.max_operand, "max_new_tokens": self.max_new_tokens}

    def prompts(self):
        a = np.arange(self.max_operand + 1)
        return pd.DataFrame({"prompt": [f"{x}+{x}=" for x in a], "a": a})

    def score(self, prompts, answers):
        return np.array([ans.strip() == str(2 * a) for a, ans in zip(prompts["a"], answers)])

    def seed_features(self):
        return [Feature("a", "a", lambda t: t["a"].to_numpy(float))]


def make_doubling(max_operand: int = 49, max_new_tokens: int = 4) -> Doubling:
    return Doubling(max_operand, max_new_tokens)
"""


def test_a_task_outside_the_package_runs_as_module_factory(tmp_path, monkeypatch):
    (tmp_path / "doubling_task.py").write_text(textwrap.dedent(TASK_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    result = _invoke(
        "measure",
        "--out",
        out,
        "--task",
        "doubling_task:make_doubling",
        "--model",
        "zoo:arithmetic",
        "--set",
        "task.options.max_operand=29",
    )
    assert result.exit_code == 0, result.output
    assert "prompts: 30" in result.stdout
    saved = _saved_config(out)
    assert saved["task"]["name"] == "doubling_task:make_doubling"
    assert saved["task"]["options"] == {"max_operand": 29}
    assert (out / "behaviour.parquet").exists()

    misspelt = _invoke("measure", "--out", tmp_path / "r2", "--task", "doubling_task:make_doublin")
    assert misspelt.exit_code == 2
    assert "has no 'make_doublin' (did you mean 'make_doubling'?)" in misspelt.output


def test_zoo_train_writes_to_a_user_directory_not_the_package(tmp_path, monkeypatch):
    assert training_target("arithmetic") == Path("organisms") / "arithmetic"
    assert training_target("arithmetic", tmp_path / "x") == tmp_path / "x"
    bundled = ORGANISMS_DIR / "arithmetic" / "model.safetensors"
    before = hashlib.sha256(bundled.read_bytes()).hexdigest(), bundled.stat().st_mtime_ns
    monkeypatch.chdir(tmp_path)
    result = _invoke("zoo", "train", "arithmetic", "--steps", "1", "--no-sweep")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "organisms" / "arithmetic" / "model.safetensors").exists()
    assert (hashlib.sha256(bundled.read_bytes()).hexdigest(), bundled.stat().st_mtime_ns) == before
    assert "--model organisms/arithmetic" in result.stdout
    assert json.loads((tmp_path / "organisms" / "arithmetic" / "training_report.json").read_text())


def test_help_lists_commands_in_pipeline_order():
    text = _invoke("--help").stdout
    order = ["run", "measure", "rules", "attribute", "localize", "validate", "recompose", "anchor", "report"]
    order += ["compare", "sweep"]
    order += ["config", "list", "zoo", "models"]
    found = re.findall(r"^│ (\w+) ", text, flags=re.MULTILINE)
    assert found == order
