"""GGUF files as models: dequantize once through transformers' GGUF loader, then load a cached directory.

A ``*.gguf`` path given as a model is converted ONCE into an ordinary Hugging Face directory (float32
safetensors + tokenizer files) under the cache, keyed by the file's sha256. Later loads read that
directory, which takes about a second for a 135M model instead of ~20 s of dequantizing. The directory
is written under a temporary name and renamed into place, and it is trusted only when it holds
``mecharule_source.json`` (written last), so an interrupted conversion is never used.

Cache layout (root: ``$MECHARULE_CACHE``, else ``~/.cache/mecharule``)::

    gguf/<file stem>-<sha256[:16]>/   a converted GGUF file given by path
    gguf/sha256/<key>.json            (path, size, mtime) -> sha256, so a cached file is not re-hashed
    models/<short name>/              a fetched known model (see mecharule.models.known)

Nothing here imports torch or transformers at module level: resolving a cached name stays cheap.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from mecharule.errors import ModelLoadError

log = logging.getLogger(__name__)

CACHE_ENV = "MECHARULE_CACHE"
SOURCE_FILE = "mecharule_source.json"
INSTALL_HINT = "pip install 'mecharule[gguf]'"
GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
_HEADER_BYTES = 24  # magic, version (u32), tensor count (u64), metadata count (u64)
_STALE_TEMP_SECONDS = 24 * 3600
# What transformers' GGUF reader raises on a truncated or corrupt file (struct.error: a short header).
_LOADER_ERRORS = (OSError, ValueError, KeyError, IndexError, RuntimeError, EOFError, struct.error)


def cache_root() -> Path:
    """``$MECHARULE_CACHE`` if set, else ``~/.cache/mecharule``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mecharule"


def is_gguf_path(name_or_path: str) -> bool:
    return name_or_path.lower().endswith(".gguf")


def is_converted(directory: Path) -> bool:
    """A finished conversion: the marker (written last) and the model config are both there."""
    return (directory / SOURCE_FILE).is_file() and (directory / "config.json").is_file()


def read_source(directory: Path) -> dict[str, Any]:
    """The provenance marker of a converted directory (empty if unreadable)."""
    try:
        data: dict[str, Any] = json.loads((directory / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data


def require_gguf_support() -> None:
    """One-line error naming the install command when ``gguf`` or ``accelerate`` is missing."""
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelLoadError(
            f"loading a GGUF file needs the {' and '.join(missing)} package(s), which are not installed; "
            f"install them with: {INSTALL_HINT}"
        )


def check_gguf_file(path: Path) -> None:
    """Cheap checks before the loader: a non-empty file that starts with a GGUF v2/v3 header."""
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise ModelLoadError(f"GGUF file {path} {what}; pass the path of a .gguf file")
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEADER_BYTES)
    except OSError as exc:
        raise ModelLoadError(f"cannot read GGUF file {path}: {exc.strerror or exc}") from exc
    if not head:
        raise ModelLoadError(f"GGUF file {path} is empty; download it again")
    if head[:4] != GGUF_MAGIC:
        raise ModelLoadError(
            f"{path} is not a GGUF file: it starts with {head[:4]!r}, not {GGUF_MAGIC!r}; "
            "pass a .gguf file, a model directory or a hub id"
        )
    version = int.from_bytes(head[4:8], "little") if len(head) >= 8 else None
    if len(head) < _HEADER_BYTES or version not in GGUF_VERSIONS:
        raise ModelLoadError(
            f"GGUF file {path} has a truncated or unsupported header "
            f"(version {version}, supported {GGUF_VERSIONS}); download it again"
        )


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised by (resolved path, size, mtime) under the cache."""
    resolved = path.resolve()
    stat = resolved.stat()
    key = hashlib.sha256(str(resolved).encode()).hexdigest()[:32]
    memo = cache_root() / "gguf" / "sha256" / f"{key}.json"
    stamp = {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        data = json.loads(memo.read_text())
        if {k: data.get(k) for k in stamp} == stamp and isinstance(data.get("sha256"), str):
            return str(data["sha256"])
    except (OSError, ValueError):
        pass
    digest = hash_file(resolved)
    _write_json_atomic(memo, {**stamp, "sha256": digest})
    return digest


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def gguf_model_dir(path: Path) -> Path:
    """The converted directory of a GGUF file: from the cache, or converted now (once).

    It lives at ``<cache>/gguf/<file stem>-<sha256[:16]>``, so a changed file is converted again.
    """
    check_gguf_file(path)
    sha256 = file_sha256(path)
    target = cache_root() / "gguf" / f"{path.name[: -len('.gguf')]}-{sha256[:16]}"
    if is_converted(target):
        return target
    log.info("converting %s once into %s", path, target)
    convert_gguf(path, target, sha256)
    return target


def convert_gguf(
    gguf_path: Path,
    target: Path,
    sha256: str,
    provenance: dict[str, Any] | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Dequantize ``gguf_path`` (whose sha256 the caller knows) into an HF directory at ``target``,
    atomically; return its provenance marker.

    An existing finished ``target`` is kept unless ``replace``; an unfinished one is replaced.
    """
    require_gguf_support()
    check_gguf_file(gguf_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        started = time.perf_counter()
        arch = _dequantize_to(gguf_path, tmp)
        marker = {
            "source": {
                "kind": "gguf",
                "file": gguf_path.name,
                "bytes": gguf_path.stat().st_size,
                "sha256": sha256,
                **(provenance or {}),
            },
            "architecture": arch,
            "dtype": "float32",
            "converted_with": _versions(),
            "convert_seconds": round(time.perf_counter() - started, 2),
        }
        _write_json_atomic(tmp / SOURCE_FILE, marker)
        tmp.chmod(0o755)  # mkdtemp made it private; the cache is an ordinary directory
        if is_converted(target) and not replace:
            return read_source(target)  # another process finished first: keep its copy
        _move_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return marker


def _dequantize_to(gguf_path: Path, out_dir: Path) -> dict[str, Any]:
    """Load the GGUF dequantized to float32, check its architecture row, save it as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mecharule.models.architectures import resolve

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        model: Any = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32, local_files_only=True, **_dequantize_kwargs()
        )
    except _LOADER_ERRORS as exc:
        kind = "struct.error" if isinstance(exc, struct.error) else type(exc).__name__
        detail = " ".join(str(exc).split())[:200]
        raise ModelLoadError(
            f"cannot load GGUF file {gguf_path}: {kind}: {detail}; the file is truncated or corrupt "
            "(download it again), or holds an architecture transformers cannot read from GGUF"
        ) from exc
    info = resolve(model, model.config.model_type)  # unsupported architecture: one-line error now
    _drop_gguf_quantizer(model)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "model_type": info.model_type,
        "n_layers": info.n_layers,
        "d_model": info.d_model,
        "d_mlp": info.d_mlp,
    }


def _dequantize_kwargs() -> dict[str, Any]:
    """Ask for plain dense weights where transformers could keep GGUF blocks (the ``kernels`` path)."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always dequantize
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _drop_gguf_quantizer(model: Any) -> None:
    """A GGUF-loaded model refuses ``save_pretrained``; its weights are already plain float32 tensors."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("mecharule", "transformers", "torch", "gguf"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def _move_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` is moved aside first and then deleted."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".tmp-old-{target.name}-", dir=target.parent))
        os.rename(target, old / "dir")
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_temps(folder: Path) -> None:
    """Delete leftovers of conversions killed more than a day ago (never trusted; they only take space)."""
    now = time.time()
    for entry in folder.glob(".tmp-*"):
        try:
            if now - entry.stat().st_mtime > _STALE_TEMP_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    from mecharule.io.rundir import write_json  # imported here: it brings pandas, which resolving never needs

    write_json(path, payload)
