"""Typed results without a model: the synthetic run directory (real rules stage, CHA on a synthetic
oracle, hand-made anchoring) round-trips file for file; results of stages that have not run, or
whose record does not stand, are None; the display forms are known answers and escape their text;
``import mecharule`` stays light; the fingerprint of weights in memory sees one changed value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mecharule.errors import ConfigError, RunDirError
from mecharule.io.rundir import RunDir
from mecharule.models.sites import Site
from mecharule.results import (
    Agonist,
    Anchoring,
    Attribution,
    Behaviour,
    Localization,
    Recomposition,
    RuleSetResult,
    Validation,
    load_run,
)
from mecharule.rules import Condition, Rule, RuleSet
from tests.integration.report_fixture import build_run_dir

RESULTS = (Behaviour, RuleSetResult, Attribution, Localization, Validation, Recomposition, Anchoring)
NOT_STAGE_FILES = ("run.json", "run.lock", "summary.json")  # and report/


def _safetensors(path: Path) -> tuple[dict[str, list[float]], dict[str, str] | None]:
    """Tensors (as lists) and metadata of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key).flatten().tolist() for key in handle.keys()}  # noqa: SIM118
        return tensors, handle.metadata()


def assert_same_files(written: Path, original: Path) -> list[str]:
    """Every file under ``written`` equals its namesake under ``original``: JSON as parsed, Parquet
    as frames (and provenance), safetensors as tensors and metadata, anything else byte for byte.
    Returns the names compared."""
    import pyarrow.parquet as pq

    names = sorted(str(p.relative_to(written)) for p in written.rglob("*") if p.is_file())
    for name in names:
        new, old = written / name, original / name
        assert old.is_file(), f"{name} was written but the run has no such file"
        if name.endswith(".json"):
            assert json.loads(new.read_text()) == json.loads(old.read_text()), name
        elif name.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(new), pd.read_parquet(old))
            meta = [pq.read_schema(p).metadata[b"mecharule"] for p in (new, old)]
            assert json.loads(meta[0]) == json.loads(meta[1]), name
        elif name.endswith(".safetensors"):  # its writer orders metadata keys at random
            assert _safetensors(new) == _safetensors(old), name
        else:
            assert new.read_bytes() == old.read_bytes(), name
    return names


def stage_files(run_dir: Path) -> list[str]:
    """The artifacts the stages wrote (not run.json, summary.json, report/, the shared reference/)."""
    names = (str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    return sorted(
        n for n in names if n not in NOT_STAGE_FILES and not n.startswith(("report/", "reference/"))
    )


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return build_run_dir(tmp_path_factory.mktemp("synthetic"))


def test_each_result_rewrites_its_artifacts_exactly(synthetic, tmp_path):
    for result_type in RESULTS:
        if result_type is Attribution:
            continue  # the synthetic run has no attribution (the integration test covers it)
        result_type.load(synthetic).save(tmp_path)
    assert assert_same_files(tmp_path, synthetic) == stage_files(synthetic)


def test_run_reads_every_stage_that_ran(synthetic):
    run = load_run(synthetic)
    assert run.behaviour is not None and run.behaviour.n_prompts == 600
    assert run.behaviour.accuracy == pytest.approx(
        pd.read_parquet(synthetic / "behaviour.parquet")["label"].mean()
    )
    assert run.rules is not None and run.rules.target == "fail"
    assert isinstance(run.rules.disjuncts[0].rule, Rule)
    assert run.attribution is None  # not run in the synthetic directory
    assert run.localization is not None
    assert [p.key for p in run.localization] == ["R1/positive", "R1/negative", "R2/positive"]
    assert run.localization["R2/positive"].skipped.startswith("covered slice")
    planted = {"L0.mlp[3]", "L1.mlp[5]", "L1.mlp[11]", "L0.mlp[7]"}
    assert run.agonists is not None and {str(a.unit) for a in run.agonists} == planted
    assert len(run.agonists) == run.localization.n_agonists
    assert run.localization.trace("R1/positive")[0]["level"] == 0
    assert run.validation is not None and run.validation.cost_ratio is not None
    assert run.anchoring is not None and run.anchoring["L1.mlp[5]"].best.test_mcc == pytest.approx(0.82)
    assert run.anchoring["L0.mlp[7]"].best.rules is None  # the last agonist got no rule
    assert run.anchoring["L0.mlp[3]"].best.rules == RuleSet(
        (Rule((Condition("op_is_mul", ">=", 0.5), Condition("a", ">=", 50))),)
    )
    assert run.summary is not None and run.summary["n_prompts"] == 600
    assert run.config is not None and run.config.task.name == "arithmetic"


def test_stages_that_did_not_run_read_as_none(tmp_path):
    run = load_run(build_run_dir(tmp_path / "measured", stages="measure"))
    assert run.behaviour is not None
    assert (run.rules, run.localization, run.agonists, run.validation, run.anchoring) == (None,) * 5
    assert run.report_path is None
    with pytest.raises(RunDirError, match="holds no run"):
        load_run(tmp_path)


def test_files_of_an_interrupted_rerun_are_not_results(synthetic, tmp_path):
    import shutil

    copy = Path(shutil.copytree(synthetic, tmp_path / "copy"))
    run = load_run(copy)
    assert run.anchoring is not None
    RunDir(copy).forget(["anchor"])  # what a re-run of anchor does before its body starts
    assert run.anchoring is not None  # read before: kept until refreshed
    assert run.refresh().anchoring is None
    assert (copy / "neuron_rules.json").exists() and run.rules is not None


def test_an_agonist_prints_its_effects():
    raw = {
        "problem": "R1/positive", "unit": "L1.mlp[46]", "layer": 1,
        "covered_flips": 52, "covered_n": 64, "covered_rate": 52 / 64, "covered_lower": 0.69,
        "covered_upper": 0.9,
        "unrelated_flips": 3, "unrelated_n": 64, "unrelated_rate": 3 / 64, "unrelated_lower": 0.01,
        "unrelated_upper": 0.13, "max_upper": 0.9, "contrast_lower": 0.5, "selectivity": 49 / 64,
        "score": 0.54, "score_rank": 2,
    }  # fmt: skip
    agonist = Agonist.from_raw(raw)
    assert str(agonist) == "L1.mlp[46]: covered 0.81 (52/64), unrelated 0.05 (3/64), selectivity 0.77"
    assert agonist.unit == Site(1, "mlp", 46) and agonist.regime == "positive" and agonist.rule_id == "R1"
    assert "<td>L1.mlp[46]</td>" in agonist._repr_html_()


def test_rules_print_readably_with_their_scores(synthetic):
    rules = RuleSetResult.load(synthetic)
    first = rules.disjuncts[0]
    assert first.test is not None
    text = str(first)
    assert text.startswith(f"{first.id}: {first.readable}")
    assert (
        f"test precision {first.test.precision:.2f}, recall {first.test.recall:.2f}, MCC {first.test.mcc:.2f}"
        in text
    )
    assert str(rules).splitlines()[1].strip() == text
    assert "control (" in str(rules)
    assert rules[first.id] is first
    with pytest.raises(KeyError, match="its rules are"):
        rules["R99"]
    assert first.evaluate(pd.read_parquet(synthetic / "features.parquet")).dtype == bool


def test_rule_and_ruleset_display():
    rule = Rule((Condition("a", ">=", 49.5), Condition("op<x>", "<", 0.5, missing=True)))
    assert str(rule) == "a >= 49.5 AND op<x> < 0.5 (or n/a)"
    html = rule._repr_html_()
    assert "<td>op&lt;x&gt;</td>" in html and "op<x>" not in html
    rules = RuleSet((rule, Rule((Condition("b", "==", 1.0),), negated=True)))
    assert str(rules) == "(NOT (b == 1)) OR (a >= 49.5 AND op<x> < 0.5 (or n/a))"
    assert rules._repr_html_().count("<tr>") == 3
    assert str(RuleSet()) == "never"


def test_html_views_escape_their_text(synthetic):
    run = load_run(synthetic)
    assert run.anchoring is not None and run.localization is not None and run.rules is not None
    html = run.anchoring._repr_html_()
    assert "&lt;script&gt;" in html and "<script>" not in html  # a readable rule holds a <script> tag
    for shown in (run, run.rules, run.localization, run.validation, run.behaviour):
        assert shown._repr_html_().startswith("<table>")  # type: ignore[union-attr]
    assert str(run).startswith(f"run {synthetic}")
    assert "anchoring: 4 agonists anchored" in str(run)


def test_import_mecharule_is_light_and_names_resolve():
    code = (
        "import sys, mecharule\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'pandas', 'pydantic') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "assert mecharule.Site.parse('L1.mlp[3]').index == 3 and 'torch' not in sys.modules\n"
        "missing = [n for n in mecharule.__all__ if getattr(mecharule, n, None) is None]\n"
        "assert not missing, missing\n"
        "assert mecharule.run.__module__ == 'mecharule.api'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    import mecharule

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mecharule.nope  # noqa: B018


def test_configs_from_a_dict_a_path_or_dotted_keys(tmp_path):
    from mecharule.api import as_config, as_handle
    from mecharule.config import RunConfig

    nested = as_config({"measure": {"max_prompts": 40}, "search.tau": 0.3})
    assert nested.task.max_prompts == 40 and nested.search.tau == 0.3
    (tmp_path / "c.yaml").write_text("seed: 7\n")
    assert as_config(tmp_path / "c.yaml").seed == 7 and as_config(str(tmp_path / "c.yaml")).seed == 7
    assert as_config(None) == RunConfig()
    with pytest.raises(ConfigError, match=r"search\.nope"):
        as_config({"search": {"nope": 1}})
    with pytest.raises(ConfigError, match="got a int"):
        as_config(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"\(model, tokenizer\) pair"):
        as_handle("gpt2", RunConfig())  # type: ignore[arg-type]


def test_a_changed_weight_changes_the_fingerprint(monkeypatch):
    import torch

    from mecharule.models import fingerprint

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Linear(6, 64))
    before = fingerprint.tensor_fingerprint(model)
    assert fingerprint.tensor_fingerprint(model) == before
    with torch.no_grad():
        model[0].weight[2, 3] += 1e-6
    changed = fingerprint.tensor_fingerprint(model)
    assert changed != before
    assert fingerprint.tensor_fingerprint(model.to(torch.bfloat16)) != changed  # the dtype is hashed
    # a parameter over the sampling threshold is hashed on every k-th value: a sampled one counts
    monkeypatch.setattr(fingerprint, "SAMPLE_ABOVE_ELEMENTS", 100)
    monkeypatch.setattr(fingerprint, "SAMPLE_ELEMENTS", 64)
    sampled = fingerprint.tensor_fingerprint(model)  # [64, 6]: every 6th value of 384
    with torch.no_grad():
        model[1].weight[0, 0] += 1.0
    assert fingerprint.tensor_fingerprint(model) != sampled
