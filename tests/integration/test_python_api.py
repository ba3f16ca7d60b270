"""The Python API on the bundled organism: docs/python-api.md runs as written and prints what it
says; every artifact of a finished run round-trips through its typed result; a model loaded by hand
and passed in memory measures exactly like the model by name, and its weights key the measure stage.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import time
from pathlib import Path

import pytest

import mecharule
from mecharule.errors import ConfigError
from mecharule.results import (
    Anchoring,
    Attribution,
    Behaviour,
    Localization,
    Recomposition,
    RuleSetResult,
    Run,
    Validation,
)
from tests.unit.test_results import assert_same_files, stage_files

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"
SMALL = {
    "measure": {"max_prompts": 3000},
    "rules": {"max_rules": 1},
    "attribution": {"n_pairs": 16, "top_m": 32},
    "localize": {"n_covered": 24, "n_unrelated": 24, "n_reference": 64},
    "anchor": {"max_eval_prompts": 600, "max_agonists": 3},
}
AGONIST_LINE = re.compile(
    r"^L\d+\.mlp\[\d+\]: covered \d\.\d\d \(\d+/\d+\), unrelated \d\.\d\d \(\d+/\d+\), "
    r"selectivity -?\d\.\d\d$"
)


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


def organism_by_hand() -> tuple[object, object]:
    """The bundled organism loaded with transformers alone, as a user holding a model would."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from mecharule.zoo.registry import organism_dir

    path = organism_dir("arithmetic")
    return AutoModelForCausalLM.from_pretrained(path), PreTrainedTokenizerFast.from_pretrained(path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Run:
    return mecharule.run(
        {**SMALL, "validation.brute_force": True}, tmp_path_factory.mktemp("run") / "by-name"
    )


def test_the_python_api_doc_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) == 8
    namespace: dict[str, object] = {"__name__": "python_api_doc"}
    printed = []
    started = time.perf_counter()
    for block in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"{DOC}", "exec"), namespace)  # noqa: S102 (the doc's own code)
        printed.append(out.getvalue().splitlines())
    seconds = time.perf_counter() - started
    run, behaviour = namespace["run"], namespace["behaviour"]
    assert isinstance(run, Run) and isinstance(behaviour, Behaviour)

    first_run, accuracy, rules, agonists, anchoring, again, same, damaged = printed
    assert first_run[:2] == ["run runs/arithmetic", "  model: zoo:arithmetic"]
    assert first_run[2].startswith("  behaviour: 3,000 prompts, correct 0.")
    assert first_run[-1] == "  report: runs/arithmetic/report/index.html"
    assert (
        0.6 < behaviour.accuracy < 0.9 and accuracy[0] == f"accuracy {behaviour.accuracy:.3f} on 3000 prompts"
    )
    assert set(ast.literal_eval(accuracy[1])) == {"+", "-", "*"}
    assert rules[1].lstrip().startswith("R1: ") and "test precision" in rules[1]
    assert rules[-1].startswith("the rule covers ") and rules[-2].startswith("test MCC 0.")
    assert any(line.startswith("  R1/positive (") for line in agonists)
    assert AGONIST_LINE.match(agonists[-2]), agonists[-2]
    assert agonists[-1].endswith(("positive", "negative"))
    assert "agonists anchored" in anchoring[0]
    assert re.match(r"ablating L\d\.mlp\[\d+\] flips 0\.\d\d of the evaluation prompts", anchoring[-1])
    assert again[:2] == ["True", "None"] and again[2].startswith("recall within the shortlist")
    assert again[-1] == "index.html True"
    assert same == ["True"]
    assert re.match(r"accuracy 0\.\d{3} -> 0\.\d{3} without L\d\.mlp\[\d+\]$", damaged[0]), damaged
    before, after = namespace["same"], namespace["damaged"]
    assert isinstance(before, Behaviour) and isinstance(after, Behaviour)
    assert after.accuracy != before.accuracy  # measured again: the edited weights have another key
    assert seconds < 180, f"the doc example took {seconds:.0f}s; keep its config small"


def test_every_artifact_round_trips_through_its_result(finished, tmp_path):
    for result in (Behaviour, RuleSetResult, Attribution, Localization, Validation, Recomposition, Anchoring):
        result.load(finished.path).save(tmp_path)
    assert assert_same_files(tmp_path, finished.path) == stage_files(finished.path)
    assert any(name.endswith(".safetensors") for name in stage_files(finished.path))


def test_a_run_reads_each_stage_and_the_stage_functions_return_the_same(finished):
    run = mecharule.load_run(finished.path)
    assert run.summary is not None and run.agonists is not None and run.attribution is not None
    assert run.summary["task"] == "arithmetic" and run.summary["model"] == "zoo:arithmetic"
    assert len(run.agonists) == run.summary["n_agonists"] > 0
    assert run.behaviour is not None and round(run.behaviour.accuracy, 4) == run.summary["accuracy"]
    assert run.rules is not None and run.rules.test is not None
    assert run.rules.test.mcc == run.summary["rules_test_mcc"]
    assert run.validation is not None and run.validation.cost_ratio == run.summary["cost_ratio"]
    assert run.anchoring is not None and len(run.anchoring.agonists) == run.summary["n_anchored"]
    assert run.recomposition is not None and run.recomposition.evaluations > 0
    kinds = [run.recomposition.kind(key) for key in run.recomposition.problems]
    assert sum(run.summary["recomposition"].values()) == sum(kind is not None for kind in kinds)
    assert mecharule.recompose(run).raw == run.recomposition.raw  # done: read back, nothing run
    top = run.attribution["R1"].scores["atp"]
    assert top.shape == (2, 128)  # [n_layers, d_mlp] of the organism
    # done stages are skipped (no model loads) and return what the run holds
    assert mecharule.localize(run).raw == run.localization.raw  # type: ignore[union-attr]
    assert mecharule.extract_rules(finished.path).raw == run.rules.raw


def test_a_model_in_memory_measures_like_the_model_by_name(finished, tmp_path):
    model, tokenizer = organism_by_hand()
    run = mecharule.run(SMALL, tmp_path / "in-memory", model=(model, tokenizer))
    assert run.behaviour is not None and finished.behaviour is not None
    assert run.behaviour.accuracy == finished.behaviour.accuracy
    assert run.behaviour.table["answer"].tolist() == finished.behaviour.table["answer"].tolist()
    assert "in_memory" in run.manifest["model"]["weights"]
    with pytest.raises(ConfigError, match="measured with a model in memory"):
        mecharule.extract_rules(run)  # its keys hold the weights' fingerprint: the model is needed
    assert mecharule.extract_rules(run, model=(model, tokenizer)).raw == run.rules.raw  # type: ignore[union-attr]


def test_changing_one_weight_in_memory_changes_the_measure_key(tmp_path):
    import torch

    from mecharule.api import as_config, as_handle
    from mecharule.pipeline import Pipeline

    model, tokenizer = organism_by_hand()

    def measure_key() -> str:
        handle, config = as_handle((model, tokenizer), as_config(SMALL))
        return Pipeline(config, tmp_path, model=handle).stage_hash("measure")

    original = measure_key()
    assert measure_key() == original
    weight = model.model.layers[1].mlp.down_proj.weight  # type: ignore[attr-defined]
    value = weight[5, 7].item()
    with torch.no_grad():
        weight[5, 7] = value + 1e-3
        assert measure_key() != original
        weight[5, 7] = value
    assert measure_key() == original
