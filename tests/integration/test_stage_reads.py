"""No stage reads a config field its cache key does not cover.

The pipeline runs every stage on the bundled organism with its config wrapped in a recorder that
notes each field a stage reads. A field read by a stage must be in that stage's key
(``stage_inputs.read_fields``), in the key of a stage it reads from (directly or through another,
whose key is part of its own), or be speed-only. A stage that starts reading a new field without
declaring it fails this test, instead of silently reusing results made under another value.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from mecharule.config import load_config
from mecharule.pipeline import Pipeline, default_stages
from mecharule.random_streams import describe
from mecharule.stage_inputs import SPEED_ONLY, STAGE_INPUTS, read_fields

from .small_run import SMALL_RUN

SMALL = {
    **SMALL_RUN,
    "task.max_prompts": 1200,
    "anchor.max_eval_prompts": 200,
    "anchor.max_agonists": 2,
    "validation.brute_force": True,
}


class Reads:
    """The fields read, per stage; ``stage`` is the stage running now."""

    def __init__(self) -> None:
        self.stage = "setup"
        self.by_stage: dict[str, set[str]] = {}

    def note(self, field: str) -> None:
        self.by_stage.setdefault(self.stage, set()).add(field)


class Recorder:
    """Wraps a pydantic config; reading a leaf field notes its dotted path."""

    def __init__(self, model: BaseModel, reads: Reads, path: str = "") -> None:
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_reads", reads)
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._model, name)
        if name not in type(self._model).model_fields:
            return value  # a method (model_copy ...) or a property
        dotted = f"{self._path}.{name}" if self._path else name
        if isinstance(value, BaseModel):
            return Recorder(value, self._reads, dotted)
        self._reads.note(dotted)
        return value

    def model_copy(self, **kwargs: Any) -> Recorder:
        return Recorder(self._model.model_copy(**kwargs), self._reads, self._path)

    def model_dump(self, **kwargs: Any) -> Any:
        if self._path:  # a section dumped whole is read whole
            for name in type(self._model).model_fields:
                self._reads.note(f"{self._path}.{name}")
        return self._model.model_dump(**kwargs)  # the root is dumped only to hash and record


def _upstream(stage: str) -> set[str]:
    found: set[str] = set()
    frontier = [stage]
    while frontier:
        for up in STAGE_INPUTS[frontier.pop()].upstream:
            if up not in found:
                found.add(up)
                frontier.append(up)
    return found


def _covered(field: str, declared: set[str]) -> bool:
    return field in declared or field in SPEED_ONLY or any(field.startswith(f"{d}.") for d in declared)


def test_every_field_a_stage_reads_is_in_its_key(tmp_path):
    config = load_config(None, SMALL)
    reads = Reads()
    pipe = Pipeline(config, tmp_path)
    pipe.config = Recorder(config, reads)  # type: ignore[assignment]
    for stage in default_stages(config):
        reads.stage = stage
        assert getattr(pipe, stage)() is True
    assert {"measure", "rules", "attribute", "localize", "validate", "recompose", "anchor"} <= set(
        reads.by_stage
    )
    assert pipe.rundir.manifest()["random_streams"] == describe(config.seed)  # named, recorded
    for stage, fields in reads.by_stage.items():
        if stage not in STAGE_INPUTS:
            continue  # the report reads what the stages wrote, keyed by their keys
        declared = {f for s in {stage, *_upstream(stage)} for f in read_fields(config, s)}
        unkeyed = sorted(f for f in fields if not _covered(f, declared))
        assert not unkeyed, f"{stage} reads {unkeyed} but its key does not cover them (stage_inputs.py)"


def test_the_recorder_notices_an_undeclared_read(tmp_path):
    """The check above can fail: a stage that reads a field outside its key is caught."""
    config = load_config(None, SMALL)
    reads = Reads()
    recorded = Recorder(config, reads)
    reads.stage = "rules"
    _ = recorded.anchor.max_agonists  # rules' key does not cover anchor's fields
    declared = {f for s in {"rules", *_upstream("rules")} for f in read_fields(config, s)}
    assert [f for f in reads.by_stage["rules"] if not _covered(f, declared)] == ["anchor.max_agonists"]
