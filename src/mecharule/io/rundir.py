"""The run directory: every artifact of a run, written atomically, with schema_version and provenance.

Files are written to a temporary name in the same directory and renamed into place, so a run killed
at any moment never leaves a half-written file under a final name. ``run.json`` records, per stage,
the hash of the config that produced its outputs; a stage whose hash and outputs are present is
skipped on re-run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from mecharule.errors import RunDirError

SCHEMA_VERSION = 1


def config_hash(payload: Any) -> str:
    """Stable short hash of a JSON-serialisable payload (key order independent)."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, payload: dict[str, Any]) -> None:
    body = {"schema_version": SCHEMA_VERSION, **payload}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(body, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise RunDirError(f"{path} does not exist; run the stage that writes it first")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write_parquet(path: Path, frame: pd.DataFrame, provenance: dict[str, Any] | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"mecharule"] = json.dumps(
        {"schema_version": SCHEMA_VERSION, **(provenance or {})}, default=_json_default
    ).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise RunDirError(f"{path} does not exist; run the stage that writes it first")
    return pd.read_parquet(path)


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


class RunDir:
    """A run directory and its stage bookkeeping (``run.json``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def ensure_writable(self) -> RunDir:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise RunDirError(
                f"cannot write to output directory {self.path}: {exc.strerror or exc}; "
                "choose a writable --out path"
            ) from None
        return self

    def require(self, *names: str, stage: str) -> None:
        missing = [n for n in names if not self.file(n).exists()]
        if missing:
            raise RunDirError(f"{self.path} lacks {', '.join(missing)}; run `mecharule {stage}` on it first")

    # -- run.json -------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        path = self.file("run.json")
        return read_json(path) if path.exists() else {"schema_version": SCHEMA_VERSION, "stages": {}}

    def update_manifest(self, **fields: Any) -> None:
        manifest = self.manifest()
        manifest.update(fields)
        manifest.pop("schema_version", None)
        write_json(self.file("run.json"), manifest)

    def stage_is_done(self, stage: str, stage_hash: str) -> bool:
        record = self.manifest().get("stages", {}).get(stage)
        if not record or record.get("config_hash") != stage_hash:
            return False
        return all(self.file(name).exists() for name in record.get("outputs", []))

    def mark_stage_done(self, stage: str, stage_hash: str, outputs: list[str], wall_seconds: float) -> None:
        manifest = self.manifest()
        stages = dict(manifest.get("stages", {}))
        stages[stage] = {
            "config_hash": stage_hash,
            "outputs": outputs,
            "wall_seconds": round(wall_seconds, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.update_manifest(stages=stages)

    def invalidate_after(self, stage: str, order: list[str]) -> None:
        """Forget stages after ``stage`` in ``order`` (their inputs changed)."""
        manifest = self.manifest()
        stages = dict(manifest.get("stages", {}))
        later = order[order.index(stage) + 1 :] if stage in order else []
        for name in later:
            stages.pop(name, None)
        self.update_manifest(stages=stages)


def run_stage(
    rundir: RunDir,
    stage: str,
    stage_hash: str,
    body: Callable[[], list[str]],
) -> bool:
    """Run ``body`` unless the stage is already done with this hash. Returns True if it ran."""
    if rundir.stage_is_done(stage, stage_hash):
        return False
    started = time.perf_counter()
    outputs = body()
    rundir.mark_stage_done(stage, stage_hash, outputs, time.perf_counter() - started)
    return True
