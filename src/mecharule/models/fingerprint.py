"""A fingerprint of a model's weights, part of the measure stage's cache key.

Changing the weights in place (``mecharule zoo train --out`` over an existing organism) must
invalidate every result made with the old ones. Local files are hashed by content up to
:data:`FULL_HASH_BYTES`; a larger file is keyed by its size, modification time and the content of its
first and last mebibyte, so a 15 GB checkpoint costs milliseconds. A hub id resolves to the commit of
its cached snapshot when there is one, else to the id itself (the revision is unknown offline).
A model already in memory is keyed by :func:`tensor_fingerprint`, a hash of its parameters.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

FULL_HASH_BYTES = 256 * 2**20
EDGE_BYTES = 2**20
SAMPLE_ABOVE_ELEMENTS = 16 * 2**20  # a larger parameter is hashed on a strided sample ...
SAMPLE_ELEMENTS = 2**20  # ... of about this many values
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".model", ".jinja")
MODEL_FILE_NAMES = ("config.json", "generation_config.json", "special_tokens_map.json")


def file_fingerprint(path: Path) -> str:
    """sha256 of the content, or of size, mtime and both ends for files over FULL_HASH_BYTES."""
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if stat.st_size <= FULL_HASH_BYTES:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            digest.update(handle.read(EDGE_BYTES))
            handle.seek(-EDGE_BYTES, 2)
            digest.update(handle.read(EDGE_BYTES))
    return digest.hexdigest()[:16]


def _is_model_file(path: Path) -> bool:
    name = path.name
    return (
        name.endswith(MODEL_FILE_SUFFIXES)
        or name in MODEL_FILE_NAMES
        or name.startswith(("tokenizer", "vocab", "merges"))
    )


def directory_fingerprint(folder: Path) -> dict[str, str]:
    """{file name: fingerprint} of the weights, configs and tokenizer files of a model directory."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _is_model_file(p))
    return {str(p.relative_to(folder)): file_fingerprint(p) for p in files}


def weights_fingerprint(name: str) -> dict[str, object]:
    """What identifies the model ``name`` names: file fingerprints, a hub revision, or the name."""
    from mecharule.models.gguf import is_gguf_path
    from mecharule.models.known import resolve_known
    from mecharule.models.loading import ZOO_PREFIX

    local: str | None = None
    if name.startswith(ZOO_PREFIX):
        from mecharule.zoo.registry import ORGANISMS_DIR

        local = str(ORGANISMS_DIR / name[len(ZOO_PREFIX) :])
    elif is_gguf_path(name) or Path(name).expanduser().exists():
        local = str(Path(name).expanduser())
    else:
        local = resolve_known(name)
    if local is not None and Path(local).exists():
        path = Path(local)
        if path.is_file():
            return {"file": file_fingerprint(path)}
        return {"files": directory_fingerprint(path)}
    return {"hub": name, "revision": _cached_revision(name)}


def tensor_fingerprint(model: Any) -> str:
    """sha256 over a model's parameters in memory: each one's name, shape, dtype and bytes.

    A parameter over :data:`SAMPLE_ABOVE_ELEMENTS` values contributes every k-th value (about
    :data:`SAMPLE_ELEMENTS` of them), sampled on its own device, so an 8B model costs about a second;
    every smaller parameter is hashed in full (changing any of its values changes the fingerprint).
    Parameters on the ``meta`` device (offloaded) contribute their name, shape and dtype only.
    """
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in model.named_parameters():
            digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}\n".encode())
            if param.device.type == "meta":
                continue
            flat = param.detach().reshape(-1)
            if flat.numel() > SAMPLE_ABOVE_ELEMENTS:
                flat = flat[:: -(-flat.numel() // SAMPLE_ELEMENTS)]
            digest.update(flat.contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _cached_revision(repo_id: str) -> str | None:
    """The commit of the locally cached snapshot of a hub model, without touching the network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id the hub library rejects: the name alone keys it
        return None
    if not isinstance(found, str):
        return None
    parts = Path(found).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None


__all__ = ["directory_fingerprint", "file_fingerprint", "tensor_fingerprint", "weights_fingerprint"]
