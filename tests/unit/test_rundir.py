from __future__ import annotations

import json

import pandas as pd
import pytest

from mecharule.errors import RunDirError
from mecharule.io.rundir import (
    RunDir,
    atomic_path,
    config_hash,
    read_parquet,
    run_stage,
    write_json,
    write_parquet,
)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_json_and_parquet_carry_schema_version(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads((tmp_path / "a.json").read_text())["schema_version"] == 1
    write_parquet(tmp_path / "b.parquet", pd.DataFrame({"v": [1, 2]}), {"task": "t"})
    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(tmp_path / "b.parquet").metadata[b"mecharule"])
    assert meta == {"schema_version": 1, "task": "t"}
    assert read_parquet(tmp_path / "b.parquet")["v"].tolist() == [1, 2]


def test_stage_skipped_only_when_hash_and_outputs_match(tmp_path):
    rd = RunDir(tmp_path).ensure_writable()
    calls = []

    def body():
        calls.append(1)
        (tmp_path / "out.txt").write_text("x")
        return ["out.txt"]

    assert run_stage(rd, "s", "h1", body) is True
    assert run_stage(rd, "s", "h1", body) is False
    assert run_stage(rd, "s", "h2", body) is True  # config changed
    (tmp_path / "out.txt").unlink()
    assert run_stage(rd, "s", "h2", body) is True  # output lost
    assert len(calls) == 3


def test_config_hash_is_order_independent():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_unwritable_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunDirError, match="choose a writable --out"):
        RunDir(blocker / "sub").ensure_writable()
