"""Long stages keep finished work: a run killed inside localize, validate, anchor or measure resumes
from its journal (or saved parts) with a fresh process state, redoes at most the work in flight, and
writes exactly what an uninterrupted run writes.

A kill is simulated by a KeyboardInterrupt raised right after the N-th engine run (or generation
batch) finished, before its caller could keep the result: the worst moment, when that run's work is
lost and must be redone.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mecharule.config import load_config
from mecharule.context import StageContext
from mecharule.interventions.engine import AblationEngine
from mecharule.io.journal import Journal
from mecharule.pipeline import Pipeline

CONFIG = {
    "task.max_prompts": 2000,
    "search.n_covered": 24,
    "search.n_unrelated": 24,
    "ablation.n_reference": 64,
    "executor.memory_budget_mb": 16,  # small screening batches: many pieces to kill between
    "rules.max_rules": 1,
    "attribution.n_pairs": 16,
    "attribution.top_m": 32,
    "anchor.max_eval_prompts": 300,
    "anchor.max_agonists": 3,
}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A run directory with measure, rules and attribute done."""
    out = tmp_path_factory.mktemp("upstream")
    config = load_config(None, CONFIG)
    pipe = Pipeline(config, out)
    for stage in ("measure", "rules", "attribute"):
        getattr(pipe, stage)()
    return out, config, pipe


@pytest.fixture
def one_batch_pieces(monkeypatch):
    """Journal after every screening batch, so a kill can fall between pieces of one oracle call."""
    import mecharule.localization.oracle as oracle

    monkeypatch.setattr(oracle, "PIECE_BATCHES", 1)


class Meter:
    """Counts the work of every call of ``owner.name`` (``size(args)`` items each) and raises
    KeyboardInterrupt right after call number ``kill_after`` finished (its work is counted, and lost)."""

    def __init__(
        self,
        patch: pytest.MonkeyPatch,
        owner: Any,
        name: str,
        size: Callable[..., int],
        kill_after: int | None = None,
    ) -> None:
        self.calls: list[int] = []
        real = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            self.calls.append(size(*args, **kwargs))
            if len(self.calls) == kill_after:
                raise KeyboardInterrupt
            return result

        patch.setattr(owner, name, wrapper)

    @property
    def work(self) -> int:
        return sum(self.calls)


def engine_meter(patch: pytest.MonkeyPatch, kill_after: int | None = None) -> Meter:
    """Groups evaluated per ``AblationEngine.run``."""
    return Meter(patch, AblationEngine, "run", lambda _engine, groups: len(groups), kill_after)


def _measured(
    monkeypatch: pytest.MonkeyPatch, work: Callable[[], Any], kill_after: int | None = None
) -> tuple[Meter, Any]:
    """Run ``work`` with the engine metered; with ``kill_after``, expect the simulated kill."""
    with monkeypatch.context() as patch:
        meter = engine_meter(patch, kill_after)
        if kill_after is None:
            return meter, work()
        with pytest.raises(KeyboardInterrupt):
            work()
        return meter, None


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".partial"))
    return target


# -- attribute --------------------------------------------------------------------------------------
def test_attribute_skips_journaled_rules_whose_files_still_match(upstream, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    import mecharule.attribution.stage as stage
    from mecharule.io.rundir import read_parquet

    source, _, pipe = upstream
    out = _copy(source, tmp_path / "run")
    behaviour = read_parquet(out / "behaviour.parquet")
    rules = [
        {"id": "mul", "mask": (behaviour["operator"] == "*").to_numpy(), "text": "operator == '*'"},
        {"id": "add", "mask": (behaviour["operator"] == "+").to_numpy()},
        {"id": "none", "mask": (behaviour["operator"] == "?").to_numpy()},  # skipped: no scores, a json
    ]

    def attributed(journal: Journal, kill_after: int | None = None) -> tuple[Meter, Any]:
        def run() -> Any:
            ctx = StageContext.of(pipe.handle, pipe.task, out, pipe.config, journal)
            return stage.attribute_rules(ctx, rules)

        with monkeypatch.context() as patch:
            meter = Meter(patch, stage, "_attribute_one", lambda *a, **k: 1, kill_after)
            if kill_after is None:
                return meter, run()
            with pytest.raises(KeyboardInterrupt):
                run()
            return meter, None

    folder = out / ".partial" / "attribute-test"
    _, expected = attributed(Journal(tmp_path / "j"))
    files = {p.name: p.read_bytes() for p in (out / "attribution").glob("rule_*")}
    killed, _ = attributed(Journal(folder), kill_after=2)  # "add" computed, killed before it was saved
    resumed, results = attributed(Journal(folder))
    assert killed.work + resumed.work - 3 == 1  # the rule in flight, once
    assert [r.rule_id for r in results] == ["mul", "add", "none"] and results[2].skipped
    for got, want in zip(results, expected, strict=True):
        assert set(got.scores) == set(want.scores)
        for method, scores in got.scores.items():
            torch.testing.assert_close(scores, want.scores[method].float().cpu())
    assert {p.name for p in (out / "attribution").glob("rule_*")} == set(files)

    # a rule whose file changed since it was journaled is attributed again (safetensors headers are
    # not byte-stable from one write to the next: compare tensors)
    (out / "attribution" / "rule_mul.safetensors").write_bytes(files["rule_add.safetensors"])
    again, results = attributed(Journal(folder))
    assert again.work == 1
    rewritten = load_file(str(out / "attribution" / "rule_mul.safetensors"))
    torch.testing.assert_close(rewritten["atp"], expected[0].scores["atp"].float().cpu())


# -- localize ---------------------------------------------------------------------------------------
def _prepare(out: Path, config: Any, pipe: Pipeline) -> Any:
    from mecharule.localization.stage import prepare

    return prepare(StageContext.of(pipe.handle, pipe.task, out, config))


def _localize(out: Path, config: Any, pipe: Pipeline, journal: Journal | None, setups: list[Any]) -> None:
    """Prepare (on resume too, as the pipeline does) and localize; the setup goes to ``setups``."""
    from mecharule.localization.stage import localize

    setups.append(_prepare(out, config, pipe))
    localize(StageContext.of(pipe.handle, pipe.task, out, config, journal), setups[-1])


def _localization_files(out: Path) -> dict[str, Any]:
    summary = json.loads((out / "localization" / "summary.json").read_text())
    summary.pop("wall_seconds")
    files = {p.relative_to(out).as_posix(): p.read_text() for p in (out / "localization").rglob("*.*")}
    files.pop("localization/summary.json")
    return {"summary": summary, **files}


def test_localize_killed_mid_search_resumes_without_redoing_journaled_queries(
    upstream, tmp_path, monkeypatch, one_batch_pieces
):
    from mecharule.localization.oracle import groups_per_piece

    source, config, pipe = upstream
    plain, setups = _copy(source, tmp_path / "plain"), []
    whole, _ = _measured(monkeypatch, lambda: _localize(plain, config, pipe, Journal(tmp_path / "j"), setups))
    expected = _localization_files(plain)
    piece = max(groups_per_piece(p.engine) for p in setups[0].problems.values())
    assert len(whole.calls) >= 6 and piece < max(whole.calls), "the search should take several pieces"

    out = _copy(source, tmp_path / "killed")
    folder = out / ".partial" / "localize-test"
    kill_after = len(whole.calls) // 2  # a piece of CHA's second level
    killed, _ = _measured(
        monkeypatch, lambda: _localize(out, config, pipe, Journal(folder), setups), kill_after
    )
    journal = Journal(folder)
    resumed, _ = _measured(monkeypatch, lambda: _localize(out, config, pipe, journal, setups))

    assert _localization_files(out) == expected  # summary (group evaluations, forwards...), traces, agonists
    in_flight = killed.calls[-1]
    assert 0 < in_flight <= piece
    assert killed.work + resumed.work - whole.work == in_flight  # only the lost piece is redone
    assert journal.replayed == sum(killed.calls[:-1])  # every finished query came from the journal
    assert folder.exists()  # the caller discards the journal, not the stage


def test_validate_killed_in_brute_force_resumes_with_the_same_payload(
    upstream, tmp_path, monkeypatch, one_batch_pieces
):
    from mecharule.localization.validate import validate

    source, config, pipe = upstream

    def run(out: Path, journal: Journal) -> dict[str, Any]:
        setup = _prepare(out, config, pipe)
        return validate(StageContext.of(pipe.handle, pipe.task, out, config, journal), setup)

    plain = _copy(source, tmp_path / "plain")
    whole, expected = _measured(monkeypatch, lambda: run(plain, Journal(tmp_path / "j")))
    out = _copy(source, tmp_path / "killed")
    folder = out / ".partial" / "validate-test"
    kill_after = len(whole.calls) - 3  # inside brute force over the units outside the shortlist
    killed, _ = _measured(monkeypatch, lambda: run(out, Journal(folder)), kill_after)
    journal = Journal(folder)
    resumed, payload = _measured(monkeypatch, lambda: run(out, journal))

    payload.pop("wall_seconds")
    expected.pop("wall_seconds")
    assert payload == expected  # recall, costs (group evaluations, singletons, forwards)
    assert killed.work + resumed.work - whole.work == killed.calls[-1]  # only the lost piece is redone
    assert journal.replayed == sum(killed.calls[:-1])  # CHA's and brute force's finished queries


# -- anchor -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def localized(upstream, tmp_path_factory):
    source, config, pipe = upstream
    out = _copy(source, tmp_path_factory.mktemp("localized") / "run")
    _localize(out, config, pipe, None, [])
    return out


def _anchor(out: Path, config: Any, pipe: Pipeline, journal: Journal | None) -> dict[str, Any]:
    from mecharule.anchoring.stage import anchor

    return anchor(StageContext.of(pipe.handle, pipe.task, out, config, journal))


def test_anchor_killed_mid_flip_table_and_mid_rules_resumes_identically(
    upstream, localized, tmp_path, monkeypatch, one_batch_pieces
):
    import mecharule.anchoring.neuron_rules as neuron_rules
    import mecharule.anchoring.stage as anchor_stage

    _, config, pipe = upstream

    def anchored(out: Path, journal: Journal, kill_runs: int | None = None, kill_fits: int | None = None):
        with monkeypatch.context() as patch:
            runs = engine_meter(patch, kill_runs)
            fits = Meter(patch, neuron_rules, "target_rules", lambda *a, **k: 1, kill_fits)
            # the cards (one engine run after the rules, recomputed on resume) are not what is metered
            patch.setattr(anchor_stage, "agonist_cards", lambda *args: {"agonists": {}})
            if kill_runs is None and kill_fits is None:
                _anchor(out, config, pipe, journal)
            else:
                with pytest.raises(KeyboardInterrupt):
                    _anchor(out, config, pipe, journal)
        return runs, fits

    plain = _copy(localized, tmp_path / "plain")
    whole_runs, whole_fits = anchored(plain, Journal(tmp_path / "j-plain"))
    expected = {name: (plain / name).read_bytes() for name in ("flips.parquet", "neuron_rules.json")}
    assert len(whole_runs.calls) >= 4 and set(whole_runs.calls) == {1}  # one unit per piece

    out = _copy(localized, tmp_path / "killed")
    folder = out / ".partial" / "anchor-test"
    first_runs, _ = anchored(out, Journal(folder), kill_runs=3)  # third unit's column lost
    assert not (out / "flips.parquet").exists()
    second_runs, second_fits = anchored(out, Journal(folder), kill_fits=5)  # second unit's fits lost
    last = Journal(folder)
    last_runs, last_fits = anchored(out, last)

    assert {name: (out / name).read_bytes() for name in expected} == expected
    assert first_runs.work + second_runs.work - whole_runs.work == 1  # the unit in flight, once
    assert last_runs.work == 0  # every flip column came from the journal
    redone_fits = second_fits.work + last_fits.work - whole_fits.work
    assert redone_fits == 2  # fits 4 and 5 (one agonist's first two targets): finished, not journaled
    assert last.replayed == len(whole_runs.calls) + 1  # every column + the first agonist's entry


# -- measure ----------------------------------------------------------------------------------------
@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 64 prompts; a part saved after every batch."""
    import mecharule.behaviour.measure as measure

    monkeypatch.setattr(measure, "CHUNK", 64)
    monkeypatch.setattr(measure, "CHECKPOINT_SECONDS", 0.0)


def test_measure_interrupted_mid_chunk_generates_only_the_rest(upstream, tmp_path, monkeypatch, small_chunks):
    import mecharule.decoding.generation as generation
    from mecharule.behaviour.measure import MeasureSettings, measure_behaviour

    pipe = upstream[2]
    prompts = pipe.task.prompts().iloc[:200].reset_index(drop=True)

    def measured(partial: Path, kill_after: int | None = None) -> tuple[Meter, pd.DataFrame | None]:
        def run() -> pd.DataFrame:
            settings = MeasureSettings(batch_size=16, test_fraction=0.3, seed=0, partial_dir=partial)
            return measure_behaviour(pipe.handle, pipe.task, prompts, settings)

        with monkeypatch.context() as patch:
            meter = Meter(patch, generation, "greedy_generate", lambda _h, ids, *a, **k: len(ids), kill_after)
            if kill_after is None:
                return meter, run()
            with pytest.raises(KeyboardInterrupt):
                run()
            return meter, None

    whole, expected = measured(tmp_path / "plain" / ".partial" / "measure-x")
    assert whole.work == 200
    partial = tmp_path / "killed" / ".partial" / "measure-x"
    killed, _ = measured(partial, kill_after=7)  # chunk 1 (4 batches) saved, chunk 2: 2 parts saved
    saved = sorted(p.name for p in partial.iterdir())
    assert saved == [
        "chunk-000000000.parquet",
        "chunk-000000064.part-000000-000016.parquet",
        "chunk-000000064.part-000016-000032.parquet",
    ]
    # a part that claims to continue chunk 2 but holds other prompts, and one that continues nothing
    shutil.copy(partial / saved[2], partial / "chunk-000000064.part-000032-000048.parquet")
    (partial / "chunk-000000128.part-000016-000032.parquet").write_bytes(b"not a continuation")
    resumed, table = measured(partial)

    assert table is not None and expected is not None
    pd.testing.assert_frame_equal(table, expected)
    assert resumed.work == 200 - 64 - 32  # only the rest, from the batch in flight at the kill on
    assert killed.work + resumed.work - whole.work == 16  # the batch in flight, once
    assert not partial.exists()  # measure removes its partial folder when it has the table


def test_ctrl_c_in_measure_saves_the_finished_batches_before_the_next_checkpoint(
    upstream, tmp_path, monkeypatch
):
    import mecharule.behaviour.measure as measure
    import mecharule.decoding.generation as generation

    monkeypatch.setattr(measure, "CHECKPOINT_SECONDS", 3600.0)  # no timed part before the Ctrl-C
    pipe = upstream[2]
    prompts = pipe.task.prompts().iloc[:96].reset_index(drop=True)
    partial = tmp_path / ".partial" / "measure-x"

    def run() -> pd.DataFrame:
        settings = measure.MeasureSettings(batch_size=16, test_fraction=0.3, seed=0, partial_dir=partial)
        return measure.measure_behaviour(pipe.handle, pipe.task, prompts, settings)

    with monkeypatch.context() as patch:
        Meter(patch, generation, "greedy_generate", lambda _h, ids, *a, **k: len(ids), 4)
        with pytest.raises(KeyboardInterrupt):
            run()
    saved = sum(len(pd.read_parquet(p)) for p in partial.glob("*.parquet"))
    assert saved == 48  # the three batches finished before the interrupted fourth
    with monkeypatch.context() as patch:
        resumed = Meter(patch, generation, "greedy_generate", lambda _h, ids, *a, **k: len(ids), None)
        run()
    assert resumed.work == 96 - 48


def _sigkill_when(process: Any, ready: Callable[[], bool]) -> bool:
    """SIGKILL ``process`` as soon as ``ready()``; False if it ended first."""
    import signal
    import time

    while process.poll() is None:
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.02)
    return False


def _journal_lines(out: Path, stage: str) -> int:
    found = list(out.glob(f".partial/{stage}-*/journal.jsonl"))
    return sum(len(p.read_text().splitlines()) for p in found)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["localize", "anchor"])
def test_a_real_sigkill_inside_a_stage_resumes_from_its_journal(stage, tmp_path):
    """The CLI process is SIGKILLed once its journal holds finished work; the same command resumes,
    says how much it kept, and ends with what an uninterrupted run writes."""
    import subprocess
    import sys

    import yaml

    config = tmp_path / "run.yaml"
    data: dict[str, Any] = {}
    for dotted, value in {**CONFIG, "executor.memory_budget_mb": 16}.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    config.write_text(yaml.safe_dump(data))

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "mecharule.cli", "run", "--out", str(out), "--config", str(config)]

    reference = tmp_path / "reference"
    subprocess.run(command(reference), check=True, capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _sigkill_when(process, lambda: _journal_lines(killed, stage) >= 2), "finished before the kill"
    kept = _journal_lines(killed, stage)
    assert stage not in json.loads((killed / "run.json").read_text())["stages"]
    resumed = subprocess.run(command(killed), capture_output=True, text=True, check=True)
    assert f"{stage}: resuming: {kept:,} finished pieces of work kept" in resumed.stderr
    assert not list(killed.glob(".partial/*"))  # the journal is gone once the stage is recorded
    if stage == "localize":

        def strip(summary: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in summary.items() if k != "wall_seconds"}

        ref = json.loads((reference / "localization" / "summary.json").read_text())
        got = json.loads((killed / "localization" / "summary.json").read_text())
        assert strip(got) == strip(ref)
    else:
        assert (killed / "flips.parquet").read_bytes() == (reference / "flips.parquet").read_bytes()
        ref = json.loads((reference / "neuron_rules.json").read_text())
        assert json.loads((killed / "neuron_rules.json").read_text()) == ref
