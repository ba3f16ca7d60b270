"""The recompose stage on a real (small) run: same prompts as localization, journaled, in the report."""

from __future__ import annotations

import json

import pytest

from mecharule.config import load_config
from mecharule.executor import LocalExecutor
from mecharule.io.journal import Journal
from mecharule.pipeline import Pipeline
from mecharule.recomposition.stage import run_recompose

from .small_run import SMALL_RUN

SMALL = {**SMALL_RUN, "rules.max_rules": 2, "search.tau": 0.1, "recompose.pair_units": 4}


@pytest.fixture(scope="module")
def localized(tmp_path_factory):
    out = tmp_path_factory.mktemp("recompose")
    pipe = Pipeline(load_config(None, SMALL), out)
    for stage in ("measure", "rules", "attribute", "localize", "recompose"):
        assert getattr(pipe, stage)()
    return out, pipe


def test_alone_effects_and_union_are_localizations_own(localized):
    """Measured on the problems' own prompts: each agonist's alone effect is CHA's covered flip rate
    and the union of alone flips is localization's union flip coverage, to the prompt."""
    out, _ = localized
    summary = json.loads((out / "localization" / "summary.json").read_text())
    data = json.loads((out / "recomposition.json").read_text())
    searched = [p for p in summary["problems"] if not p["skipped"] and p["agonists"]]
    assert searched, "the small run must find agonists for this test to mean anything"
    for problem in searched:
        entry = data["problems"][problem["key"]]
        cha = {a["unit"]: a["covered_flips"] / a["covered_n"] for a in problem["agonists"]}
        assert {a["unit"]: a["alone"] for a in entry["agonists"]} == pytest.approx(cha, abs=1e-4)
        assert entry["union_alone"] == pytest.approx(
            problem["suppression"]["union_flip_coverage"]["covered"], abs=1e-4
        )
        assert entry["prompts"]["covered"] == problem["n_covered"]
        assert entry["rule_id"] == problem["rule_id"] and entry["regime"] == problem["regime"]
        n = len(problem["agonists"])
        assert len(entry["pairs"]) == min(n, 4) * (min(n, 4) - 1) // 2
        assert entry["composition"]["kind"] in {
            "single",
            "additive",
            "redundant",
            "cancelling",
            "synergistic",
        }
    assert data["evaluations"] == sum(e.get("evaluations", 0) for e in data["problems"].values()) > 0


def test_a_resumed_recompose_takes_every_set_from_its_journal(localized, tmp_path, monkeypatch):
    out, pipe = localized
    first = run_recompose(pipe.context(Journal(tmp_path / "journal")))
    expected = json.loads((out / first[0]).read_text())
    ran = []
    original = LocalExecutor.run

    def spy(self, batches, on_result):
        ran.extend(batches)
        return original(self, batches, on_result)

    monkeypatch.setattr(LocalExecutor, "run", spy)
    run_recompose(pipe.context(Journal(tmp_path / "journal")))
    assert ran == []  # every group's flips came from the journal
    assert json.loads((out / "recomposition.json").read_text()) == expected


def test_the_report_and_summary_show_the_recomposition(localized):
    out, pipe = localized
    pipe.anchor()
    pipe.report()
    html = (out / "report" / "index.html").read_text()
    assert (
        'id="recomposition"' in html
        and "units for 90%" in html
        and "Not run yet" not in html.split('id="recomposition"')[1][:2000]
    )
    summary = json.loads((out / "summary.json").read_text())
    data = json.loads((out / "recomposition.json").read_text())
    kinds = [p["composition"]["kind"] for p in data["problems"].values() if "composition" in p]
    assert sum(summary["recomposition"].values()) == len(kinds)
