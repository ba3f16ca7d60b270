"""Damaged or wrong inputs on the model, task and config side, through the real CLI.

Every case must end in exactly ONE line ``error: ...`` on stderr, exit status 2, no traceback, and
name its cause. Each case builds its inputs in ``tmp_path`` (a copy of a bundled organism with damaged
weights, a random-weight BERT, a garbage data file ...) and runs ``mecharule measure``. Nothing is
downloaded: the unreachable hub is a loopback port that was bound and closed, so nothing listens.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mecharule.cli import app
from mecharule.config import load_config
from mecharule.errors import ConfigError, DataError, ModelLoadError
from mecharule.models.loading import load_model
from mecharule.tasks.base import make_task
from mecharule.zoo.registry import organism_dir

Setup = Callable[[Path], list[str]]  # builds the inputs in tmp_path, returns the CLI arguments


@dataclass(frozen=True)
class Case:
    setup: Setup
    phrases: tuple[str, ...]  # each must appear in the one error line
    # run as `python -m mecharule.cli` online, against a hub endpoint where nothing listens (the
    # endpoint and offline mode are read when huggingface_hub is imported)
    fresh_process: bool = False
    whole_command: bool = False  # setup returns the whole command line, not options of `measure`
    mid_run: bool = False  # fails after the run's description lines: the error is the last line


def _organism_copy(tmp: Path, name: str = "arithmetic") -> Path:
    return Path(shutil.copytree(organism_dir(name), tmp / f"{name}-copy"))


def _damaged_weights(damage: Callable[[bytes], bytes]) -> Setup:
    def setup(tmp: Path) -> list[str]:
        model = _organism_copy(tmp)
        weights = model / "model.safetensors"
        weights.write_bytes(damage(weights.read_bytes()))
        return ["--model", str(model)]

    return setup


def _gguf(damage: Callable[[bytes], bytes]) -> Setup:
    def setup(tmp: Path) -> list[str]:
        pytest.importorskip("gguf")
        from .tiny_gguf import write_tiny_gguf

        path = write_tiny_gguf(tmp / "tiny.gguf")
        path.write_bytes(damage(path.read_bytes()))
        return ["--model", str(path)]

    return setup


def _config(section: dict, name: str = "run.yaml") -> Setup:
    def setup(tmp: Path) -> list[str]:
        path = tmp / name
        path.write_text(yaml.safe_dump(section))
        return ["--config", str(path)]

    return setup


def _data_file(task: str, file_name: str, content: bytes) -> Setup:
    def setup(tmp: Path) -> list[str]:
        data = tmp / file_name
        data.write_bytes(content)
        return _config(
            {"model": {"name": f"zoo:{task}"}, "measure": {"task": task, "task_options": {"path": str(data)}}}
        )(tmp)

    return setup


def _garbage(size: int = 4096) -> bytes:
    return bytes((i * 167 + 0x80) % 256 | 0x80 for i in range(size))  # never valid UTF-8, deterministic


def _config_dir(tmp: Path) -> list[str]:
    (tmp / "configs").mkdir()
    return ["--config", str(tmp / "configs")]


def _binary_config(tmp: Path) -> list[str]:
    (tmp / "run.yaml").write_bytes(_garbage())
    return ["--config", str(tmp / "run.yaml")]


def _bert(tmp: Path) -> list[str]:
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    BertForMaskedLM(config).save_pretrained(tmp / "bert")
    return ["--model", str(tmp / "bert")]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _no_cuda(tmp: Path) -> list[str]:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return ["--device", "cuda"]


HANS_HEADER = b"gold_label\tsentence1\tsentence2\tpairID\theuristic\tsubcase\ttemplate\n"

CASES: dict[str, Case] = {
    "safetensors-truncated": Case(
        _damaged_weights(lambda b: b[: len(b) // 2]), ("model.safetensors is damaged",)
    ),
    "safetensors-garbage": Case(
        _damaged_weights(lambda b: _garbage(len(b))), ("model.safetensors is damaged",)
    ),
    "safetensors-truncated-header": Case(_damaged_weights(lambda b: b[:20]), ("is damaged", "header")),
    "gguf-truncated": Case(
        _gguf(lambda b: b[: len(b) // 2]), ("cannot load GGUF file", "truncated or corrupt")
    ),
    "gguf-garbage": Case(_gguf(lambda b: _garbage(len(b))), ("is not a GGUF file",)),
    "gguf-garbage-after-header": Case(
        _gguf(lambda b: b[:24] + _garbage(len(b) - 24)), ("cannot load GGUF file",)
    ),
    "task-option-unknown": Case(
        _config({"measure": {"task": "arithmetic", "task_options": {"bogus": 1}}}),
        ("takes no option 'bogus'", "max_operand (int)"),
    ),
    "task-option-wrong-type": Case(
        _config({"measure": {"task": "arithmetic", "task_options": {"max_operand": "lots"}}}),
        ("max_operand='lots'", "not a valid int"),
    ),
    "task-option-wrong-list": Case(
        _config(
            {
                "model": {"name": "zoo:bon_jailbreak"},
                "measure": {"task": "bon_jailbreak", "task_options": {"sigmas": "high"}},
            }
        ),
        ("sigmas='high'", "Sequence[float]"),
    ),
    "seed-negative": Case(lambda tmp: ["--seed", "-1"], ("seed", "greater than or equal to 0")),
    "device-unknown": Case(_config({"model": {"device": "tpu9"}}), ("tpu9", "cuda:N")),
    "device-cuda-missing": Case(_no_cuda, ("'cuda' is not available", "--device cpu")),
    "dtype-unknown": Case(_config({"model": {"dtype": "float7"}}), ("float7", "accepted dtypes", "bfloat16")),
    "config-is-directory": Case(_config_dir, ("is a directory",)),
    "config-binary": Case(_binary_config, ("is not UTF-8 text",)),
    "hans-binary": Case(_data_file("hans_nli", "hans.txt", _garbage()), ("HANS file", "is not UTF-8 text")),
    "hans-wrong-columns": Case(_data_file("hans_nli", "hans.txt", b"a\tb\n1\t2\n"), ("lacks columns",)),
    "hans-empty-header-only": Case(
        _data_file("hans_nli", "hans.txt", HANS_HEADER), ("no rows with a gold label",)
    ),
    "bon-binary-csv": Case(
        _data_file("bon_jailbreak", "r.csv", _garbage()), ("request file", "not UTF-8 text")
    ),
    "bon-binary-jsonl": Case(_data_file("bon_jailbreak", "r.jsonl", _garbage()), ("not UTF-8 text",)),
    "bon-json-object": Case(_data_file("bon_jailbreak", "r.json", b'{"request": "x"}'), ("must be a list",)),
    "bon-jsonl-numbers": Case(_data_file("bon_jailbreak", "r.jsonl", b"1\n2\n"), ("must be a JSON object",)),
    "bon-wrong-columns": Case(
        _data_file("bon_jailbreak", "r.csv", b"foo,bar\n1,2\n"), ("no column 'request'",)
    ),
    "model-path-missing-relative": Case(lambda tmp: ["--model", "./no/such/model"], ("does not exist",)),
    "model-path-missing-absolute": Case(lambda tmp: ["--model", str(tmp / "nothing")], ("does not exist",)),
    "model-path-missing-home": Case(
        lambda tmp: ["--model", "~/no-such-mecharule-model"], ("does not exist",)
    ),
    "model-dir-without-config": Case(lambda tmp: ["--model", str(tmp)], ("has no config.json",)),
    "encoder-only-bert": Case(_bert, ("not a decoder-only causal LM", "encoder-only bert")),
    "known-model-typo": Case(
        lambda tmp: ["--model", "smollm2-13m"], ("did you mean the known model smollm2-135m",)
    ),
    "hub-offline-not-cached": Case(lambda tmp: ["--model", "someorg/somemodel"], ("HF_HUB_OFFLINE is set",)),
    "hub-unreachable": Case(
        lambda tmp: ["--model", "someorg/somemodel"],
        ("cannot be reached", "Connection refused"),
        fresh_process=True,
    ),
}


@functools.cache
def _measured_run() -> Path:
    """A run directory after measure and rules (built once per test session), copied by each case."""
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="mecharule-damaged-")) / "run"
    for args in (["measure", "--out", str(out), "--max-prompts", "400"], ["rules", str(out)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    return out


def _damaged_run(name: str, content: bytes, command: str) -> Setup:
    """Copy the measured run, overwrite one of its files with ``content``, run ``command`` on it."""

    def setup(tmp: Path) -> list[str]:
        run = Path(shutil.copytree(_measured_run(), tmp / "measured"))
        (run / name).write_bytes(content)
        return ["run", "--out", str(run)] if command == "run" else [command, str(run)]

    return setup


def _locked_run(tmp: Path) -> list[str]:
    run = Path(shutil.copytree(_measured_run(), tmp / "measured"))
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "command": "mecharule run --seed 0"}
    (run / "run.lock").write_text(json.dumps(holder))
    return ["run", "--out", str(run), "--seed", "1"]


def _full_disk(tmp: Path) -> list[str]:
    import errno

    import mecharule.io.rundir as rundir

    def no_space(path: Path, payload: dict) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    rundir.write_json = no_space  # restored by the test's monkeypatch of the module
    return ["measure", "--out", str(tmp / "full"), "--max-prompts", "8"]


def _rules_options(tmp: Path, **options: object) -> Path:
    path = tmp / "rules.yaml"
    path.write_text(yaml.safe_dump({"rules": {"options": options}}))
    return path


RUN_DIR_CASES: dict[str, Case] = {
    "behaviour-garbage-rules": Case(
        _damaged_run("behaviour.parquet", _garbage(), "rules"),
        ("behaviour.parquet changed since measure wrote it", "mecharule measure --out"),
        whole_command=True,
    ),
    "behaviour-garbage-report": Case(
        _damaged_run("behaviour.parquet", _garbage(), "report"),
        ("behaviour.parquet is damaged", "not a readable parquet table"),
        whole_command=True,
    ),
    "run-json-truncated-run": Case(
        _damaged_run("run.json", b'{"stages": {"measure": {"config_', "run"),
        ("run.json is damaged", "delete it to recompute"),
        whole_command=True,
    ),
    "run-json-truncated-rules": Case(
        _damaged_run("run.json", b'{"stages": {"measure": {"config_', "rules"),
        ("run.json is damaged",),
        whole_command=True,
    ),
    "run-json-empty-report": Case(
        _damaged_run("run.json", b"", "report"), ("run.json is damaged",), whole_command=True
    ),
    "features-json-garbage": Case(
        _damaged_run("features.json", _garbage(), "attribute"),
        ("features.json changed since measure wrote it",),
        whole_command=True,
    ),
    "rules-json-wrong-shape": Case(
        _damaged_run("rules.json", b'{"rules": 5}', "attribute"),
        ("rules.json changed since rules wrote it", "mecharule rules"),
        whole_command=True,
    ),
    "extractor-option-unknown": Case(
        lambda tmp: ["run", "--out", str(tmp / "r"), "--config", str(_rules_options(tmp, n_estimator=5))],
        ("extractor 'ruleshap' takes no option 'n_estimator'", "did you mean 'n_estimators'"),
        whole_command=True,
    ),
    "zoo-train-unknown": Case(
        lambda tmp: ["zoo", "train", "nope", "--out", str(tmp / "z")],
        ("unknown organism 'nope'",),
        whole_command=True,
    ),
    "run-dir-locked": Case(_locked_run, ("is in use by `mecharule run --seed 0`",), whole_command=True),
    "disk-full": Case(_full_disk, ("No space left on device", "run.json"), whole_command=True, mid_run=True),
}
CASES |= RUN_DIR_CASES


def _run_in_process(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


def _run_in_fresh_process(args: list[str], tmp: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(tmp / "hf-home")  # an empty hub cache: nothing to fall back on
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"
    command = [sys.executable, "-m", "mecharule.cli", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("case_id", list(CASES))
def test_damaged_input_is_one_line_error_with_exit_2(case_id, tmp_path, monkeypatch):
    case = CASES[case_id]
    monkeypatch.setenv("MECHARULE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # in-process runs never go online
    import mecharule.io.rundir

    monkeypatch.setattr(mecharule.io.rundir, "write_json", mecharule.io.rundir.write_json)  # restored
    if case.whole_command:
        args = case.setup(tmp_path)
    else:
        args = ["measure", "--out", str(tmp_path / "run"), "--max-prompts", "8", *case.setup(tmp_path)]
    if case.fresh_process:
        code, stdout, stderr = _run_in_fresh_process(args, tmp_path)
    else:
        code, stdout, stderr = _run_in_process(args)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, (code, stdout, stderr)
    if case.mid_run:
        assert not any(line.startswith("error") for line in lines[:-1]), stderr
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stdout + stderr
    for phrase in case.phrases:
        assert phrase in lines[0], (phrase, lines[0])


def test_python_callers_keep_the_underlying_error(tmp_path):
    """The CLI prints one line; a Python caller still gets the original exception as ``__cause__``."""
    from safetensors import SafetensorError

    model = _organism_copy(tmp_path)
    (model / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ModelLoadError) as damaged:
        load_model(str(model))
    assert isinstance(damaged.value.__cause__, SafetensorError)

    data = tmp_path / "hans.txt"
    data.write_bytes(_garbage())
    with pytest.raises(DataError) as binary:
        make_task("hans_nli", {"path": str(data)})
    assert isinstance(binary.value.__cause__, UnicodeDecodeError)

    with pytest.raises(ConfigError) as wrong_type:
        make_task("arithmetic", {"max_operand": "lots"})
    assert wrong_type.value.__cause__ is not None
    with pytest.raises(ConfigError) as bad_dtype:
        load_config(None, {"model.dtype": "float7"})
    assert bad_dtype.value.__cause__ is not None


def test_valid_task_options_are_coerced_and_still_load(tmp_path):
    """The option check is not a wall: well-typed options (and YAML's loose ones) still build the task."""
    task = make_task("arithmetic", {"max_operand": "12", "operators": "+"})
    assert task.options()["max_operand"] == 12 and len(task.prompts()) == 13 * 13


def test_cuda_index_beyond_the_visible_gpus_is_named(monkeypatch):
    """The branch a GPU machine takes (faked here): a known device passes, a missing index is named."""
    from mecharule.models.devices import check_device_available

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device_available("cuda")
    check_device_available("cuda:1")
    with pytest.raises(
        ConfigError, match=r"'cuda:2' does not exist: this machine has 2 CUDA device\(s\) \(cuda:0, cuda:1\)"
    ):
        check_device_available("cuda:2")
