"""The executor seam: a localization run on model replicas built from the problems as data gives the
same agonists, counts and costs as the local executor, in process (no Ray) and on a local Ray cluster."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from mecharule.config import load_config
from mecharule.executor import BatchResult, GroupBatch, ProblemData
from mecharule.executor.replica import Replica
from mecharule.pipeline import Pipeline

from .small_run import SMALL_RUN

SMALL = {**SMALL_RUN, "rules.max_rules": 2, "attribution.top_m": 32}


class ReversedReplicaExecutor:
    """Replicas in this process, built from the problems as data only; batches answered in reverse
    order, as a remote executor may finish them."""

    name = "replicas"
    local = False

    def __init__(self, config: Mapping[str, Any], n: int = 2) -> None:
        self.replicas = [Replica(config) for _ in range(n)]
        self.opened: dict[str, ProblemData] = {}

    def open(self, problems: Mapping[str, ProblemData]) -> None:
        self.opened = dict(problems)
        for replica in self.replicas:
            assert not any(replica.open(problems).values())  # same drops as the driver

    def run(self, batches: Sequence[GroupBatch], on_result: Any) -> None:
        for index in reversed(range(len(batches))):
            on_result(index, self.replicas[index % len(self.replicas)].run(batches[index]))

    def close(self) -> None:
        self.replicas = []


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    """measure, rules and attribute of a small organism run, shared by the tests below."""
    out = tmp_path_factory.mktemp("executor") / "run"
    pipe = Pipeline(load_config(None, SMALL), out)
    for stage in ("measure", "rules", "attribute"):
        getattr(pipe, stage)()
    return out


def _localized(
    upstream: Path, out: Path, settings: Mapping[str, Any], monkeypatch=None, executor=None
) -> dict[str, Any]:
    shutil.copytree(upstream, out)
    config = load_config(None, {**SMALL, **settings})
    if executor is not None:
        import mecharule.localization.runner as runner

        monkeypatch.setattr(runner, "make_executor", lambda cfg, engines: executor(cfg))
    assert Pipeline(config, out).localize() is True
    summary = json.loads((out / "localization" / "summary.json").read_text())
    summary.pop("wall_seconds")
    return summary


def test_replicas_built_from_data_find_what_the_local_executor_finds(upstream, tmp_path, monkeypatch):
    local = _localized(upstream, tmp_path / "local", {})
    made: list[ReversedReplicaExecutor] = []

    def replicas(cfg):
        made.append(ReversedReplicaExecutor(cfg.model_dump(mode="json")))
        return made[-1]

    remote = _localized(upstream, tmp_path / "replicas", {}, monkeypatch, replicas)
    assert made and made[0].opened  # the work went through the data seam
    assert remote == local  # agonists, counts, forwards and generated rows
    assert local["n_agonists"] > 0 and local["group_evaluations"] > 10


def test_group_batches_and_results_are_plain_data():
    batch = GroupBatch.of("R1/positive", [["L0.mlp[3]", "L1.mlp[4]"], ["L1.mlp[7]"]])
    assert batch.groups == (("L0.mlp[3]", "L1.mlp[4]"), ("L1.mlp[7]",))
    import numpy as np

    result = BatchResult(np.array([[True, False], [True, True]]), ((0, 1),), 2, 1)
    flips, changed = result.effects(np.array([True, True]))
    assert flips.tolist() == [[False, True], [False, False]]
    assert changed.tolist() == [[False, True], [False, False]]


def test_ray_is_refused_for_a_model_in_memory(tmp_path):
    from types import SimpleNamespace

    from mecharule.context import StageContext
    from mecharule.errors import ConfigError
    from mecharule.io.rundir import RunDir
    from mecharule.localization.runner import executing

    config = load_config(None, {"executor.kind": "ray"})
    ctx = StageContext(config, RunDir(tmp_path), model_in_memory=True)
    setup = SimpleNamespace(problems={}, inputs=None)
    with pytest.raises(ConfigError, match="cannot be shipped"), executing(ctx, setup):  # type: ignore[arg-type]
        pass


def _ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _ray_available(), reason="Ray is not installed (pip install 'mecharule[ray]')")
def test_a_local_ray_cluster_finds_what_the_local_executor_finds(upstream, tmp_path, monkeypatch):
    from mecharule.executor.ray_executor import RayExecutor

    batches: list[int] = []
    run = RayExecutor.run

    def counted(self, work, on_result):
        batches.append(len(work))
        return run(self, work, on_result)

    monkeypatch.setattr(RayExecutor, "run", counted)
    local = _localized(upstream, tmp_path / "local", {})
    on_ray = _localized(upstream, tmp_path / "ray", {"executor.kind": "ray", "executor.workers": 1})
    assert sum(batches) > 0  # the group evaluations went to the Ray replica
    assert on_ray == local


@pytest.mark.slow
@pytest.mark.skipif(not _ray_available(), reason="Ray is not installed (pip install 'mecharule[ray]')")
def test_two_ray_workers_find_what_the_local_executor_finds(upstream, tmp_path):
    local = _localized(upstream, tmp_path / "local", {})
    on_ray = _localized(upstream, tmp_path / "ray", {"executor.kind": "ray", "executor.workers": 2})
    assert on_ray == local


@pytest.mark.skipif(not _ray_available(), reason="Ray is not installed (pip install 'mecharule[ray]')")
def test_the_flip_table_on_ray_is_the_local_one(upstream, tmp_path):
    """Anchoring's flip table (every agonist and control ablated alone) computed by a Ray replica."""
    import pandas as pd

    tables = {}
    for name, settings in {"local": {}, "ray": {"executor.kind": "ray", "executor.workers": 1}}.items():
        out = tmp_path / name
        _localized(upstream, out, settings)
        pipe = Pipeline(load_config(None, {**SMALL, **settings}), out)
        assert pipe.anchor() is True
        tables[name] = (
            pd.read_parquet(out / "flips.parquet"),
            json.loads((out / "neuron_rules.json").read_text()),
        )
    (local_flips, local_rules), (ray_flips, ray_rules) = tables["local"], tables["ray"]
    assert local_flips.shape[1] > 3 and local_flips.equals(ray_flips)
    assert local_rules == ray_rules
