"""The CLI options a real-model user reaches for: --device, --dtype, --max-prompts, and the default
prompt format of a real (non-organism) model."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mecharule.cli import app
from mecharule.config import load_config
from mecharule.pipeline import Pipeline, is_organism
from mecharule.zoo.registry import organism_dir


def test_measure_takes_device_dtype_and_max_prompts_without_a_config(tmp_path):
    out = tmp_path / "r"
    result = CliRunner().invoke(
        app,
        [
            "measure",
            "--task",
            "arithmetic",
            "--device",
            "cpu",
            "--dtype",
            "bfloat16",
            "--max-prompts",
            "40",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["model"] == {"name": "zoo:arithmetic", "device": "cpu", "dtype": "bfloat16"}
    assert config["task"]["max_prompts"] == 40
    assert "prompts: 40" in result.output
    assert "on cpu" in result.output  # the sizing line


def test_bad_dtype_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(
        app, ["measure", "--task", "arithmetic", "--dtype", "float8", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert "float8" in result.output and "Traceback" not in result.output


def test_real_models_get_the_tasks_real_model_format_unless_set(tmp_path):
    def options(name: str, task: str, **task_options: object) -> dict:
        config = load_config(None, {"model.name": name, "task.name": task, "task.options": task_options})
        return Pipeline(config, tmp_path / "unused").task_options()

    assert options("zoo:arithmetic", "arithmetic") == {}
    assert options(str(organism_dir("arithmetic")), "arithmetic") == {}
    assert is_organism(str(organism_dir("hans_nli")))
    assert options("HuggingFaceTB/SmolLM2-135M-Instruct", "arithmetic") == {"prompt_format": "fewshot"}
    assert options("smollm2-135m", "hans_nli") == {"prompt_format": "fewshot"}
    assert options("smollm2-135m", "bon_jailbreak") == {"prompt_format": "chat"}
    assert options("smollm2-135m", "arithmetic", prompt_format="raw") == {"prompt_format": "raw"}
