"""GGUF files and fetched known models, end to end on a tiny GGUF written in the test (no network):
converted once into the cache, reused, identical to loading the GGUF directly; bad files fail on one
line; `mecharule models fetch` assembles a GGUF out of wheels in --wheel-dir."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mecharule.cli import app
from mecharule.errors import ModelLoadError
from mecharule.models import gguf as gguf_module
from mecharule.models.gguf import SOURCE_FILE, gguf_model_dir, is_converted
from mecharule.models.known import KNOWN_MODELS, KnownModel, WheelMember, fetched_dir
from mecharule.models.loading import load_model, resolve_model_path

from .tiny_gguf import D_MLP, D_MODEL, N_LAYERS, write_tiny_gguf

pytest.importorskip("gguf")
pytest.importorskip("accelerate")

PROMPTS = ["12+5=", "7*8= the"]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.Q8_0.gguf")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("MECHARULE_CACHE", str(root))
    return root


@pytest.fixture
def conversions(monkeypatch) -> list[Path]:
    """Records every real conversion (dequantize + save) that happens during a test."""
    calls: list[Path] = []
    original = gguf_module._dequantize_to

    def counting(gguf_path: Path, out_dir: Path) -> dict:
        calls.append(gguf_path)
        return original(gguf_path, out_dir)

    monkeypatch.setattr(gguf_module, "_dequantize_to", counting)
    return calls


def _direct(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return tokenizer, model.eval()


def _assert_same_as_direct(handle, gguf_path: Path) -> None:
    tokenizer, model = _direct(gguf_path)
    for prompt in PROMPTS:
        assert handle.tokenizer(prompt)["input_ids"] == tokenizer(prompt)["input_ids"]
    ids = torch.tensor([tokenizer(PROMPTS[1])["input_ids"]])
    with torch.no_grad():
        assert torch.equal(handle.model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_gguf_converted_once_then_reused_and_equal_to_direct_load(tiny_gguf, cache, conversions):
    first = load_model(str(tiny_gguf))
    assert (first.arch.model_type, first.arch.n_layers, first.arch.d_model, first.arch.d_mlp) == (
        "llama",
        N_LAYERS,
        D_MODEL,
        D_MLP,
    )
    assert Path(first.path).parent == cache / "gguf" and is_converted(Path(first.path))
    assert first.tokenizer.tokenize("12 t") == ["12", "Ġt"]  # the GGUF's merges survived the conversion
    second = load_model(str(tiny_gguf))
    assert conversions == [tiny_gguf]  # the second load read the cached directory
    assert second.path == first.path
    _assert_same_as_direct(second, tiny_gguf)


def test_half_written_conversion_is_not_trusted(tiny_gguf, cache, conversions):
    target = gguf_model_dir(tiny_gguf)
    (target / SOURCE_FILE).unlink()  # as if killed before the marker was written
    assert gguf_model_dir(tiny_gguf) == target
    assert len(conversions) == 2 and is_converted(target)
    assert not list(target.parent.glob(".tmp-*"))  # no leftovers


def test_changed_file_gets_its_own_conversion(tiny_gguf, tmp_path, cache):
    other = write_tiny_gguf(tmp_path / tiny_gguf.name, seed=1)  # same name, other weights
    assert resolve_model_path(str(other)) != resolve_model_path(str(tiny_gguf))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"<html>404 Not Found</html>", "is not a GGUF file"),
        (b"GGUF\x03\x00", "truncated or unsupported header"),
        ("half", "cannot load GGUF file"),
    ],
    ids=["empty", "not-gguf", "short-header", "truncated"],
)
def test_bad_gguf_is_one_line_error_through_the_cli(tiny_gguf, tmp_path, cache, content, message):
    bad = tmp_path / "model.gguf"
    data = tiny_gguf.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if content == "half" else content)
    result = CliRunner().invoke(app, ["measure", "--out", str(tmp_path / "run"), "--model", str(bad)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output
    assert not list((cache / "gguf").glob("model-*"))  # nothing half-converted is left to trust


def _wheel(folder: Path, package: str, member: str, data: bytes) -> None:
    name = f"{package.replace('-', '_')}-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(folder / name, "w") as archive:
        archive.writestr(f"{package.replace('-', '_')}/__init__.py", "")
        archive.writestr(member, data)


@pytest.fixture
def tiny_known(tiny_gguf, tmp_path, monkeypatch) -> tuple[KnownModel, Path]:
    """A known model `tiny-test` whose GGUF is split across two fake wheels in a wheel dir."""
    data = tiny_gguf.read_bytes()
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    parts = []
    for i, chunk in enumerate((data[:20_000], data[20_000:])):
        part = WheelMember(f"tiny-test-part{i}", "1.0.0", f"tiny_test_part{i}/data/tiny.gguf.part{i:02d}")
        _wheel(wheel_dir, part.package, part.member, chunk)
        parts.append(part)
    model = KnownModel(
        name="tiny-test",
        title="tiny",
        hub_id="example/tiny-test",
        model_type="llama",
        n_layers=N_LAYERS,
        d_mlp=D_MLP,
        quantization="Q8_0",
        gguf_name="tiny.gguf",
        parts=tuple(parts),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    monkeypatch.setitem(KNOWN_MODELS, model.name, model)
    return model, wheel_dir


def test_fetch_from_wheel_dir_then_load_by_short_name(tiny_known, tiny_gguf, cache, conversions):
    _, wheel_dir = tiny_known
    runner = CliRunner()
    assert resolve_model_path("tiny-test") == "example/tiny-test"  # not fetched: the hub id
    result = runner.invoke(app, ["models", "fetch", "tiny-test", "--wheel-dir", str(wheel_dir)])
    assert result.exit_code == 0, result.output
    assert f"fetched → {cache / 'models' / 'tiny-test'}" in result.output
    assert f"llama, {N_LAYERS} layers, d_model {D_MODEL}, d_mlp {D_MLP}" in result.output
    assert resolve_model_path("tiny-test") == str(fetched_dir("tiny-test"))
    listing = runner.invoke(app, ["list", "models"]).output
    assert any(
        line.startswith("tiny-test") and str(fetched_dir("tiny-test")) in line
        for line in listing.splitlines()
    )

    again = runner.invoke(app, ["models", "fetch", "tiny-test", "--wheel-dir", str(wheel_dir)])
    assert again.exit_code == 0 and "already present" in again.output
    assert len(conversions) == 1
    handle = load_model("tiny-test")
    assert handle.path == str(fetched_dir("tiny-test"))
    _assert_same_as_direct(handle, tiny_gguf)
    assert not list(cache.glob(".tmp-*")) and not list((cache / "models").glob(".tmp-*"))


def test_fetch_rejects_wheels_with_the_wrong_content(tiny_known, cache, monkeypatch):
    model, wheel_dir = tiny_known
    monkeypatch.setitem(KNOWN_MODELS, model.name, dataclasses.replace(model, sha256="0" * 64))
    result = CliRunner().invoke(app, ["models", "fetch", "tiny-test", "--wheel-dir", str(wheel_dir)])
    assert result.exit_code == 2 and "expected 0000" in result.output and "Traceback" not in result.output
    assert not fetched_dir("tiny-test").exists()


def test_offline_short_name_says_to_fetch(cache, tiny_known):
    with pytest.raises(ModelLoadError, match=r"run `mecharule models fetch tiny-test`"):
        load_model("tiny-test")
