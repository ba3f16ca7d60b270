from __future__ import annotations

import json

import pandas as pd
import pytest

from mecharule.errors import RunDirError
from mecharule.io.rundir import (
    RunDir,
    atomic_path,
    config_hash,
    read_json,
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


def _writes(folder, name):
    def body():
        (folder / name).write_text(name)
        return [name]

    return body


def test_stage_output_changed_after_recording_is_not_done(tmp_path):
    rd = RunDir(tmp_path).ensure_writable()

    def body():
        (tmp_path / "out.txt").write_text("x")
        return ["out.txt"]

    run_stage(rd, "s", "h1", body)
    assert rd.stage_is_done("s", "h1")
    (tmp_path / "out.txt").write_text("garbage")
    assert rd.why_not_done("s", "h1") == "out.txt changed since s wrote it"
    assert run_stage(rd, "s", "h1", body) is True


def test_a_starting_stage_forgets_itself_and_later_stages_before_its_body(tmp_path):
    rd = RunDir(tmp_path).ensure_writable()
    for name in ("a", "b", "c"):
        run_stage(rd, name, "h1", _writes(tmp_path, name))
    seen = {}

    def killed():
        seen["stages"] = set(rd.manifest()["stages"])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage(rd, "b", "h2", killed, later=["c"])
    assert seen["stages"] == {"a"}
    assert set(rd.manifest()["stages"]) == {"a"}  # nothing claims b's or c's files are complete


def test_damaged_json_and_parquet_name_the_file_and_the_command(tmp_path):
    (tmp_path / "rules.json").write_bytes(b"\x00\xff{not json")
    with pytest.raises(RunDirError, match=r"rules.json is damaged \(not valid JSON.*`mecharule rules`"):
        read_json(tmp_path / "rules.json")
    (tmp_path / "behaviour.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(RunDirError, match=r"behaviour.parquet is damaged.*`mecharule measure`"):
        read_parquet(tmp_path / "behaviour.parquet")
    write_parquet(tmp_path / "behaviour.parquet", pd.DataFrame({"x": [1]}))
    with pytest.raises(RunDirError, match="no column 'label'"):
        read_parquet(tmp_path / "behaviour.parquet", columns=("label",))
    write_json(tmp_path / "neuron_rules.json", {"x": 1})
    with pytest.raises(RunDirError, match="no 'agonists' field"):
        read_json(tmp_path / "neuron_rules.json", required=("agonists",))
    (tmp_path / "new.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(RunDirError, match="newer than this mecharule reads"):
        read_json(tmp_path / "new.json")


@pytest.mark.parametrize("content", ["", '{"stages": {"measure": ', "[1, 2]"])
def test_a_damaged_run_json_is_one_clear_error(tmp_path, content):
    (tmp_path / "run.json").write_text(content)
    with pytest.raises(RunDirError, match=r"run\.json is damaged.*delete it to"):
        RunDir(tmp_path).manifest()


def test_artifacts_respect_the_umask(tmp_path):
    import os

    from mecharule.io import rundir as module

    old = module.UMASK
    try:
        module.UMASK = 0o022
        write_json(tmp_path / "a.json", {})
        assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o644
        module.UMASK = 0o077
        write_json(tmp_path / "b.json", {})
        assert os.stat(tmp_path / "b.json").st_mode & 0o777 == 0o600
    finally:
        module.UMASK = old


def test_the_lock_keeps_a_second_process_out_and_is_released(tmp_path):
    rd = RunDir(tmp_path)
    with rd.locked("mecharule run"):
        holder = json.loads((tmp_path / "run.lock").read_text())
        import os

        assert holder["pid"] == os.getpid() and holder["command"] == "mecharule run"
        with pytest.raises(RunDirError, match=r"is in use by `mecharule run` \(pid \d+"), rd.locked("x"):
            pass
    assert not (tmp_path / "run.lock").exists()
    with rd.locked("again"):  # released: can be taken again
        pass


def test_a_live_lock_of_another_process_refuses_and_a_dead_ones_is_taken(tmp_path):
    import socket
    import subprocess
    import sys

    rd = RunDir(tmp_path).ensure_writable()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": child.pid, "host": socket.gethostname(), "command": "mecharule run --seed 0"}
        (tmp_path / "run.lock").write_text(json.dumps(lock))
        with pytest.raises(RunDirError, match="in use by `mecharule run --seed 0`"), rd.locked("second"):
            pass
    finally:
        child.kill()
        child.wait()
    with rd.locked("after the holder died"):  # stale: its pid is gone
        assert json.loads((tmp_path / "run.lock").read_text())["command"] == "after the holder died"


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    import os
    import socket

    rd = RunDir(tmp_path).ensure_writable()
    lock = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": "1", "command": "old"}
    (tmp_path / "run.lock").write_text(json.dumps(lock))
    with rd.locked("new"):  # same pid, other start time: the holder is gone
        pass


def test_only_artifacts_of_standing_stages_are_trusted(tmp_path):
    rd = RunDir(tmp_path).ensure_writable()
    write_json(tmp_path / "neuron_rules.json", {"agonists": []})
    assert rd.trusted("neuron_rules.json")  # no run.json: a hand-made directory
    run_stage(rd, "measure", "h", _writes(tmp_path, "behaviour.parquet"))
    assert not rd.trusted("neuron_rules.json")  # anchor is not recorded
    run_stage(rd, "anchor", "h", lambda: ["neuron_rules.json"])
    assert rd.trusted("neuron_rules.json")


def test_a_column_of_the_wrong_type_is_named(tmp_path):
    from mecharule.io.rundir import BEHAVIOUR_COLUMNS

    write_parquet(tmp_path / "behaviour.parquet", pd.DataFrame({"label": ["yes"], "split": ["train"]}))
    with pytest.raises(RunDirError, match="column 'label' holds "):
        read_parquet(tmp_path / "behaviour.parquet", columns=BEHAVIOUR_COLUMNS)
    write_parquet(tmp_path / "behaviour.parquet", pd.DataFrame({"label": [True], "split": ["train"]}))
    assert read_parquet(tmp_path / "behaviour.parquet", columns=BEHAVIOUR_COLUMNS)["label"].tolist() == [True]
