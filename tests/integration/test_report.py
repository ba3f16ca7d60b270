"""`render_report`: a self-contained HTML report and paper-style tables from a run directory.

The full run directory is synthetic (tests/integration/report_fixture.py): real rules stage, real
torch-free CHA search and brute force on a planted oracle, hand-made anchoring files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from mecharule.errors import RunDirError
from mecharule.report import render_report
from tests.integration.report_fixture import build_run_dir

SECTION_IDS = ("overview", "behaviour", "rules", "localization", "recomposition", "anchored-rules", "tables")
TABLES = ("hq_counts", "cha_vs_bruteforce", "recall_all_units", "behaviour_rules", "agonists")
CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run_dir(tmp_path_factory.mktemp("report") / "run")


@pytest.fixture(scope="module")
def full_report(full_run: Path) -> str:
    return render_report(full_run).read_text(encoding="utf-8")


def _section(page: str, ident: str) -> str:
    match = re.search(rf'<section id="{ident}">(.*?)</section>', page, flags=re.S)
    assert match, f"section {ident} missing"
    return match.group(1)


def test_every_section_is_present_in_order_with_a_table_of_contents(full_report: str) -> None:
    positions = [full_report.index(f'<section id="{ident}">') for ident in SECTION_IDS]
    assert positions == sorted(positions)
    for ident in SECTION_IDS:
        assert f'href="#{ident}"' in full_report
    assert "not run yet" not in full_report.lower()


def test_images_are_embedded_and_nothing_is_fetched(full_report: str) -> None:
    # behaviour: group + 2 SHAP features; rules: 2 stage PNGs; localization: per layer, suppression,
    # cost, and per searched problem (2) selectivity, effect map and search tree; anchored: flip
    # rates, HQ counts; recomposition: the greedy curves
    assert full_report.count("data:image/png;base64,") == 17
    assert full_report.count("<img ") == 17
    assert "http://" not in full_report and "https://" not in full_report
    for attribute in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', full_report):
        assert attribute.startswith(("data:image/png;base64,", "#")), attribute
    # one inline script (sortable tables), nothing loaded from elsewhere
    assert full_report.count("<script>") == 1 and "<script " not in full_report
    assert "<link" not in full_report and "@import" not in full_report


def test_text_from_the_run_is_escaped(full_report: str) -> None:
    # an anchored rule and a feature description carry markup in the fixture
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in full_report
    assert "first operand &lt;a&gt;" in full_report


def test_rules_section_separates_held_out_from_descriptive_scores(full_run: Path, full_report: str) -> None:
    import json

    rules = json.loads((full_run / "rules.json").read_text())
    body = _section(full_report, "rules")
    assert "descriptive, not held out" in body and "held out (primary)" in body
    assert "fake-target control MCC" in body
    expected = f"{rules['metrics']['test']['mcc']:.3f}"
    control = f"{rules['control']['metrics']['test']['mcc']:.3f}"
    assert expected in body and control in body
    for disjunct in rules["disjuncts"]:
        assert f"<td>{disjunct['id']}</td>" in body


def test_localization_section_reports_every_problem(full_run: Path, full_report: str) -> None:
    body = _section(full_report, "localization")
    for key in ("R1/positive", "R1/negative", "R2/positive"):
        assert f"{key}:" in body
    assert "Skipped: covered slice has 4 prompts" in body
    assert "L0.mlp[3]" in body and "40/64 = 0.625" in body  # planted agonist and its covered effect
    assert 'id="cost-vs-brute-force"' in body and "Joint suppression" in body
    assert "CHA decisions per level" in body  # from trace.jsonl


def test_anchored_section_shows_best_rules_controls_and_the_union(full_run: Path, full_report: str) -> None:
    body = _section(full_report, "anchored-rules")
    flips = pd.read_parquet(full_run / "flips.parquet")
    base = flips["baseline"].to_numpy(bool)
    sites = ["L0.mlp[3]", "L1.mlp[5]", "L1.mlp[11]", "L0.mlp[7]"]  # split/row columns are not agonists
    t2f = int((base[:, None] & ~flips[sites].to_numpy(bool)).any(axis=1).sum())
    assert f"{t2f}/{int(base.sum())} ({100 * t2f / base.sum():.1f}%)" in body
    assert "least one of the 4 agonists" in body
    assert "fake-target control test MCC" in body and "0.920" in body
    assert "no rule (too few flips or low coverage)" in body  # L0.mlp[7] has no rule


def test_tables_are_written_as_markdown_and_csv(full_run: Path) -> None:
    out = full_run / "report" / "tables"
    for name in TABLES:
        assert (out / f"{name}.md").read_text().startswith("| ")
        assert len(pd.read_csv(out / f"{name}.csv")) > 0
    hq = pd.read_csv(out / "hq_counts.csv")
    assert list(hq.columns[-5:]) == ["t = 0.70", "t = 0.75", "t = 0.80", "t = 0.85", "t = 0.90"]
    main = hq[(hq["method"].str.startswith("CHA")) & (hq["scope"].str.startswith("test"))].iloc[0]
    assert [main[f"t = {t}"] for t in ("0.70", "0.75", "0.80", "0.85", "0.90")] == [3, 2, 2, 1, 1]
    assert hq["method"].str.contains("fake-target").any() and hq["method"].str.contains("random").any()
    bf = pd.read_csv(out / "cha_vs_bruteforce.csv")
    assert bf["recall in shortlist"].str.contains("100.0%").all()  # the planted oracle is monotone
    assert (bf["cost (CHA/BF)"] <= 1.05).all() and "density k/N" in bf.columns
    every = pd.read_csv(out / "recall_all_units.csv")
    top = every[(every["regime"] == "positive") & (every["observed effect"] == "≥ 0.5")].iloc[0]
    assert top["recall, all units"] == 1.0 and top["shortlist recall"] == 1.0
    agonists = pd.read_csv(out / "agonists.csv")
    assert set(agonists["unit"]) == {"L0.mlp[3]", "L1.mlp[5]", "L1.mlp[11]", "L0.mlp[7]"}
    assert "| R1 |" in (out / "behaviour_rules.md").read_text()


def test_a_measure_only_run_renders_with_not_run_yet_sections(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path / "run", stages="measure")
    page = render_report(run).read_text()
    for ident in SECTION_IDS:
        assert f'<section id="{ident}">' in page
    for ident in ("rules", "localization", "anchored-rules"):
        assert "not run yet" in _section(page, ident).lower(), ident
    assert "not run yet" not in _section(page, "overview").lower()
    assert page.count("data:image/png;base64,") == 1  # behaviour by operator only
    assert not (run / "report" / "tables").exists() or not any((run / "report" / "tables").iterdir())


def test_a_run_without_behaviour_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="mecharule measure"):
        render_report(tmp_path)


def test_rendering_does_not_touch_the_inputs(tmp_path: Path, full_run: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(full_run, copy, ignore=shutil.ignore_patterns("report"))
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()}
    render_report(copy)
    assert {p: p.stat().st_mtime_ns for p in before} == before


def _chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.browser
def test_report_renders_in_headless_chromium(full_run: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(
            "headless browser test needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
        )
    index = full_run / "report" / "index.html"
    if not index.exists():
        render_report(full_run)
    dom = _chromium("--dump-dom", index.as_uri(), tmp_path=tmp_path).stdout
    for ident in SECTION_IDS:
        assert f'id="{ident}"' in dom, ident
    assert dom.count("<img ") == 17
    assert 'class="sortable"' in dom  # the inline script ran: every table header sorts
    shot = tmp_path / "report.png"
    _chromium(
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        "--hide-scrollbars",
        index.as_uri(),
        tmp_path=tmp_path,
    )
    assert shot.stat().st_size > 10_000
    if os.environ.get("MECHARULE_SAVE_SCREENSHOT") == "1":
        source = (
            Path(os.environ.get("MECHARULE_SCREENSHOT_RUN", ""))
            if os.environ.get("MECHARULE_SCREENSHOT_RUN")
            else None
        )
        if source is not None:
            _chromium(
                f"--screenshot={shot}",
                "--window-size=1280,2400",
                "--hide-scrollbars",
                render_report(source).as_uri(),
                tmp_path=tmp_path,
            )
        shutil.copyfile(shot, REPO / "docs" / "report-screenshot.png")
