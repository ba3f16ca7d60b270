"""Read and write run-directory artifacts exactly as the stages do: JSON through ``write_json``
(``schema_version`` first), Parquet through ``write_parquet`` with its provenance kept, other files
byte for byte. The result types build on these, so a load followed by a save rewrites the same
content."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from mecharule.io.rundir import atomic_path, read_json, read_parquet, write_json, write_parquet


def load_json(run_dir: Path, name: str) -> dict[str, Any]:
    return read_json(Path(run_dir) / name)


def save_json(run_dir: Path, name: str, raw: dict[str, Any]) -> None:
    write_json(Path(run_dir) / name, dict(raw))


def load_table(
    run_dir: Path, name: str, columns: dict[str, str] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A Parquet artifact and its provenance (the ``mecharule`` schema metadata, less ``schema_version``)."""
    import pyarrow.parquet as pq

    path = Path(run_dir) / name
    frame = read_parquet(path, columns=columns or ())
    raw = (pq.read_schema(path).metadata or {}).get(b"mecharule")
    provenance = json.loads(raw) if raw else {}
    if not isinstance(provenance, dict):
        provenance = {}
    provenance.pop("schema_version", None)
    return frame, provenance


def save_table(run_dir: Path, name: str, frame: pd.DataFrame, provenance: dict[str, Any]) -> None:
    write_parquet(Path(run_dir) / name, frame, dict(provenance))


def load_bytes(run_dir: Path, name: str) -> bytes:
    return (Path(run_dir) / name).read_bytes()


def save_bytes(run_dir: Path, name: str, data: bytes) -> None:
    with atomic_path(Path(run_dir) / name) as tmp:
        tmp.write_bytes(data)
