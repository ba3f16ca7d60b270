"""Every stage reports progress against a total: the bar of each stage is opened with a number of
steps, and the steps ticked add up to it (CHA's adaptive search starts from an estimate and grows
its total to at least the evaluations done)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from mecharule.config import load_config
from mecharule.pipeline import Pipeline, default_stages

from .small_run import SMALL_RUN


class Bar:
    def __init__(self, desc: str, total: int | None) -> None:
        self.desc, self.total, self.done = desc, total, 0

    def __call__(self, n: int) -> None:
        self.done += n

    def grow_total(self, total: int) -> None:
        self.total = max(self.total or 0, total)

    def settle_total(self, total: int) -> None:
        self.total = total


class Recorder:
    def __init__(self) -> None:
        self.bars: list[Bar] = []

    @contextmanager
    def __call__(self, desc: str, total: int | None) -> Iterator[Bar]:
        self.bars.append(Bar(desc, total))
        yield self.bars[-1]


def test_every_stage_has_a_bar_with_a_total_that_its_steps_reach(tmp_path):
    config = load_config(None, {**SMALL_RUN, "validation.brute_force": True})
    recorder = Recorder()
    pipe = Pipeline(config, tmp_path, progress=recorder)
    for stage in default_stages(config):
        assert getattr(pipe, stage)() is True
    by_stage = {bar.desc.split(" ")[0]: bar for bar in recorder.bars}
    assert set(by_stage) == {
        "measure",
        "rules",
        "attribute",
        "localize",
        "validate",
        "recompose",
        "anchor",
        "report",
    }
    for name, bar in by_stage.items():
        assert bar.total is not None and bar.total > 0, name
        if name == "localize":  # adaptive: the total grew to cover what was done
            evaluations = json.loads((tmp_path / "localization" / "summary.json").read_text())
            assert bar.done == evaluations["group_evaluations"] and bar.total >= bar.done
        elif name == "recompose":  # an upper bound, settled to the evaluations done
            evaluations = json.loads((tmp_path / "recomposition.json").read_text())["evaluations"]
            assert bar.done == bar.total == evaluations
        elif name == "validate":  # CHA's part is an estimate; brute force's is exact
            assert bar.done > 0 and abs(bar.done - bar.total) <= bar.total // 2, (bar.done, bar.total)
        else:
            assert bar.done == bar.total, (name, bar.done, bar.total)
