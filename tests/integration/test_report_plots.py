"""The report as a research instrument: the localization plots, the reader's warnings, sortable and
filterable tables, readable headline numbers, one copy of each table.

Each plot and each warning must appear when its data exists and not otherwise; the runs that
trigger them are the synthetic run of ``report_fixture`` with artifacts edited in memory.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mecharule.report import render_report
from mecharule.report.html import FILTER_ROWS, table
from mecharule.report.load import RunArtifacts, load_run
from mecharule.report.plots_localization import MAX_COLUMNS, effect_grid
from mecharule.report.render import build_html
from mecharule.report.sections_anchored import anchored_section
from mecharule.report.sections_localization import localization_section
from tests.integration.report_fixture import build_run_dir

SELECTIVITY = "How to read: one dot per unit ablated alone"
SCORE = "How to read: one marker per agonist"
HEATMAP = "How to read: one row per layer"
TREE = "How to read: group evaluations per level"
MCC = "How to read: no agonist reaches an HQ rule"
HQ = "Agonists whose best anchored rule reaches MCC"
WARNINGS = {
    "sparse": "Agonists are not sparse",
    "monotone": "Non-monotone effects",
    "shortlist": "Shortlist recall unknown",
    "suppression": "Joint suppression is not selective",
    "nothing": "No agonist found",
}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run_dir(tmp_path_factory.mktemp("report-plots") / "run")


@pytest.fixture(scope="module")
def full_report(full_run: Path) -> str:
    return render_report(full_run).read_text(encoding="utf-8")


@pytest.fixture()
def run(full_run: Path) -> RunArtifacts:
    return load_run(full_run)


def _section(page: str, ident: str) -> str:
    match = re.search(rf'<section id="{ident}">(.*?)</section>', page, flags=re.S)
    assert match, f"section {ident} missing"
    return match.group(1)


def _problem(run: RunArtifacts, key: str) -> dict[str, Any]:
    return next(p for p in run.problems if p["key"] == key)


def _edit(run: RunArtifacts, key: str, **changes: Any) -> RunArtifacts:
    """The run with one problem's summary entry updated."""
    localization = copy.deepcopy(run.localization) or {}
    for problem in localization["problems"]:
        if problem["key"] == key:
            problem.update(changes)
    return dataclasses.replace(run, localization=localization)


def _with_config(run: RunArtifacts, config: dict[str, Any], stages: tuple[str, ...] = ()) -> RunArtifacts:
    manifest = copy.deepcopy(run.manifest)
    manifest["config"] = config
    manifest["stages"] = {**manifest.get("stages", {}), **{s: {"wall_seconds": 1.0} for s in stages}}
    return dataclasses.replace(run, manifest=manifest)


def _warnings(html: str) -> list[str]:
    return re.findall(
        r'<div class="warning" role="note"><p class="warning-title"><strong>([^<]*)</strong>', html
    )


# -- plots ------------------------------------------------------------------------------------------
def test_each_searched_problem_gets_its_selectivity_map_and_tree_plots(full_report: str) -> None:
    body = _section(full_report, "localization")
    # R1/positive and R1/negative were searched; R2/positive was skipped (no plots)
    for caption in (SELECTIVITY, HEATMAP, TREE):
        assert body.count(f"<figcaption>{caption}") == 2, caption
    assert "τ = 0.2" in body  # the default τ: the fixture's config has no search section
    assert SCORE not in body  # the fixture's agonists carry no attribution score
    # 17 images: the 10 of before, 3 plots for each of the 2 searched problems, the greedy curves
    assert full_report.count("data:image/png;base64,") == 17


def test_the_score_plot_appears_when_agonists_carry_scores(run: RunArtifacts) -> None:
    agonists = copy.deepcopy(_problem(run, "R1/positive")["agonists"])
    for i, agonist in enumerate(agonists):
        agonist["score"] = (-1) ** i * 0.1 * (i + 1)
    scored = _edit(run, "R1/positive", agonists=agonists)
    body = localization_section(scored)
    assert body.count(f"<figcaption>{SCORE}") == 1
    assert "only CHA&#x27;s agonists are plotted" in body  # validation.json holds no per-unit effects
    unvalidated = localization_section(dataclasses.replace(scored, validation=None))
    assert unvalidated.count(f"<figcaption>{SCORE}") == 1
    assert "only CHA&#x27;s agonists are plotted" not in unvalidated


def test_plots_without_their_data_are_left_out(run: RunArtifacts) -> None:
    bare = dataclasses.replace(run, traces={})  # no trace.jsonl: no tree, no rejected units
    body = localization_section(bare)
    assert TREE not in body
    # drawn from the agonists alone
    assert body.count(f"<figcaption>{SELECTIVITY}") == 2 and body.count(f"<figcaption>{HEATMAP}") == 2
    empty = _edit(bare, "R1/positive", agonists=[])
    empty = _edit(empty, "R1/negative", agonists=[])
    body = localization_section(empty)
    assert SELECTIVITY not in body and HEATMAP not in body and TREE not in body and SCORE not in body


def test_tau_comes_from_the_config_then_the_legacy_key_then_the_default(run: RunArtifacts) -> None:
    assert run.tau == 0.2
    assert _with_config(run, {"localize": {"tau": 0.25}}).tau == 0.25
    current = _with_config(run, {"search": {"tau": 0.3}, "localize": {"tau": 0.25}})
    assert current.tau == 0.3
    assert "Dashed lines: τ = 0.3;" in localization_section(current)


def test_the_effect_map_bins_wide_layers() -> None:
    problem = {"agonists": [{"unit": "L1.mlp[4000]", "layer": 1, "covered_rate": 0.5}]}
    grid, layers, bin_size = effect_grid(problem, {0: 4096, 1: 4096})
    assert layers == [0, 1] and bin_size > 1 and grid.shape[1] <= MAX_COLUMNS
    assert grid[1, 4000 // bin_size] == 0.5 and np.count_nonzero(grid) == 1
    narrow, _, one = effect_grid(problem | {"agonists": []}, {0: 32})
    assert one == 1 and narrow.shape == (1, 32) and not narrow.any()


def test_hq_plot_is_kept_while_some_count_is_not_zero(full_report: str) -> None:
    body = _section(full_report, "anchored-rules")
    assert HQ in body and MCC not in body


def test_mcc_distribution_replaces_the_hq_plot_when_every_count_is_zero(run: RunArtifacts) -> None:
    rules = copy.deepcopy(run.neuron_rules) or {}
    for agonist in rules["agonists"]:
        agonist["best"]["test_mcc"] = min(agonist["best"]["test_mcc"], 0.4)
        agonist["hq"] = False
    zero = {scope: dict.fromkeys(("0.70", "0.75", "0.80", "0.85", "0.90"), 0) for scope in ("test", "all")}
    rules["hq_counts"] = zero
    rules["controls"]["random_neurons"]["hq_counts"] = copy.deepcopy(zero)
    body = anchored_section(dataclasses.replace(run, neuron_rules=rules))
    assert MCC in body and HQ not in body
    assert body.count("data:image/png;base64,") == 2  # flip rates + the MCC distribution


# -- warnings ---------------------------------------------------------------------------------------
def test_a_clean_run_shows_no_warning(full_report: str) -> None:
    assert _warnings(full_report) == []
    assert "No warnings:" in _section(full_report, "localization")
    assert "warn-count" not in _section(full_report, "overview")


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("sparse", {"n_candidates": 8}),  # 3 agonists of 8 candidates
        ("monotone", {"nonmonotone_splits": 2}),
        (
            "suppression",
            {"suppression": {
                "agonists": ["L0.mlp[3]"],
                "covered": {"n": 120, "positive_rate_before": 0.82, "positive_rate_after": 0.42},
                "unrelated": {"n": 120, "positive_rate_before": 0.9, "positive_rate_after": 0.6},
            }},
        ),
    ],
)  # fmt: skip
def test_a_problem_warning_appears_when_its_data_says_so(
    run: RunArtifacts, name: str, changes: dict[str, Any]
) -> None:
    page, _ = build_html(_edit(run, "R1/positive", **changes))
    body = _section(page, "localization")
    titles = _warnings(body)
    assert len(titles) == 1 and titles[0].startswith(WARNINGS[name]), titles
    assert "What it means:" in body and "What to try:" in body
    assert 'href="#problem-R1_positive"' in body.split('class="warning"')[1]
    assert 'href="#localization-warnings"' in _section(page, "overview")


def test_non_monotone_splits_are_read_from_the_trace_too(run: RunArtifacts) -> None:
    traces = copy.deepcopy(run.traces)
    traces["R1/negative"][1] = {**traces["R1/negative"][1], "split_strategy": "nonmonotone"}
    titles = _warnings(localization_section(dataclasses.replace(run, traces=traces)))
    assert titles == ["Non-monotone effects: 1 weak group(s) held accepted units"]


def test_a_shortlist_without_validation_warns_that_recall_is_unknown(run: RunArtifacts) -> None:
    shortlisted = _with_config(run, {"attribution": {"top_m": "50%"}}, stages=("attribute",))
    assert _warnings(localization_section(shortlisted)) == []  # validated
    unvalidated = dataclasses.replace(shortlisted, validation=None)
    body = localization_section(unvalidated)
    assert _warnings(body) == [WARNINGS["shortlist"]]
    assert "--validate" in body
    counted = _with_config(
        dataclasses.replace(run, validation=None), {"attribution": {"top_m": 16}}, ("attribute",)
    )
    assert _warnings(localization_section(counted)) == [WARNINGS["shortlist"]]  # 32 candidates ≥ 16
    everything = _with_config(dataclasses.replace(run, validation=None), {"attribution": {"top_m": "100%"}})
    assert _warnings(localization_section(everything)) == []
    not_attributed = _with_config(
        dataclasses.replace(run, validation=None), {"attribution": {"top_m": "50%"}}
    )
    assert _warnings(localization_section(not_attributed)) == []  # no attribute stage: every unit searched


def test_a_search_that_found_nothing_says_why(run: RunArtifacts) -> None:
    roots = [
        {"level": 0, "depth": 0, "root": f"L{layer}", "size": 16, "decision": "prune", "audit": False,
         "memo_hit": False, "split_strategy": None, "max_index": 15,
         "covered_changed": 3, "covered_n": 64, "covered_rate": 0.03, "unrelated_rate": 0.0, "tau": 0.2}
        for layer in (0, 1)
    ]  # fmt: skip
    empty = _edit(run, "R1/negative", agonists=[], suppression={}, group_evaluations=2)
    empty = dataclasses.replace(empty, traces={**run.traces, "R1/negative": roots})
    body = localization_section(empty)
    assert _warnings(body) == ["No agonist found after only 2 evaluations"]
    assert "All 2 root group(s) (one per layer) were pruned at level 0" in body
    assert "at most 0.05 of the covered answers" in body
    # the same problem searched unit by unit: the strongest single unit is named instead
    tested = _edit(run, "R1/negative", agonists=[], suppression={}, group_evaluations=40)
    text = localization_section(tested)
    assert "No agonist found (40 evaluations)" in text  # not few: 40 ≥ its 32 candidates
    assert "units were tested alone" in text and "the strongest flipped" in text


# -- tables and page --------------------------------------------------------------------------------
def test_tables_are_sortable_and_long_ones_filterable() -> None:
    short = table(pd.DataFrame({"x": range(FILTER_ROWS)}))
    long = table(pd.DataFrame({"x": range(FILTER_ROWS + 1)}))
    assert "<table data-sortable>" in short and "data-filterable" not in short
    assert "<table data-sortable data-filterable>" in long


def test_the_page_sorts_and_filters_with_one_inline_script_and_fetches_nothing(full_report: str) -> None:
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", full_report, flags=re.S)
    assert len(scripts) == 1 and scripts[0][0] == ""  # inline, no src
    code = scripts[0][1]
    assert 'querySelectorAll("table[data-sortable]")' in code and "data-filterable" in code
    assert "parseFloat" in code and "localeCompare" in code  # numbers numerically, text naturally
    heads = re.findall(r"<table([^>]*)><thead>", full_report)
    assert heads and all("data-sortable" in attrs for attrs in heads)
    assert not re.search(r"""src\s*=\s*["']?\s*(https?:)?//""", full_report, flags=re.I)
    assert not re.search(r"<link\b", full_report, flags=re.I) and "@import" not in full_report
    assert "http://" not in full_report and "https://" not in full_report


def test_headline_numbers_have_readable_labels(full_report: str) -> None:
    body = _section(full_report, "overview")
    assert "Headline numbers" in body
    for label in (
        "distinct agonists (CHA)",
        "CHA group evaluations (interventions)",
        "wall seconds per stage",
    ):
        assert f'<th scope="row">{label}</th>' in body
    for raw in ("n_agonists", "interventions<", "cost_ratio", "wall_seconds", "schema_version"):
        assert raw not in body, raw
    assert "measure 1.0, rules 2.0 (total 3.0)" in body


def test_each_table_appears_once(full_report: str) -> None:
    assert full_report.count("rule set (any rule fires)") == 1  # the behaviour-rules table
    assert full_report.count("<th>CHA saves?</th>") == 1  # CHA versus brute force
    tables = _section(full_report, "tables")
    assert 'href="#rules"' in tables and 'href="#cost-vs-brute-force"' in tables
    assert "report/tables/behaviour_rules.csv" in tables
