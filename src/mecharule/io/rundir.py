"""The run directory: every artifact of a run, written atomically, with schema_version and provenance.

Files are written to a temporary name in the same directory and renamed into place, so a run killed
at any moment never leaves a half-written file under a final name; they get the permissions the
umask allows, as any other file would. ``run.json`` records, per stage, the key of what produced its
outputs (the config fields it read, the keys of the stages it read from, the model's fingerprint) and
a content digest of every output. A stage is skipped only when its key matches and every output is
still there with the same digest; a stage that starts forgets its own record and every later one
first, so a record is true or absent, never stale. Artifacts are read back through readers that name
the damaged file and the command that rewrites it. ``run.lock`` keeps a second process out.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from mecharule.errors import RunDirError

SCHEMA_VERSION = 1
LOCK_NAME = "run.lock"

# which command rewrites an artifact (named in the message when one is damaged)
PRODUCERS = {
    "behaviour.parquet": "measure",
    "features.parquet": "measure",
    "features.json": "measure",
    "rules.json": "rules",
    "summary.json": "report",
    "validation.json": "validate",
    "flips.parquet": "anchor",
    "neuron_rules.json": "anchor",
    "agonist_cards.json": "anchor",
}


def config_hash(payload: Any) -> str:
    """Stable short hash of a JSON-serialisable payload (key order independent)."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; an artifact gets what the umask allows
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, payload: dict[str, Any]) -> None:
    body = {"schema_version": SCHEMA_VERSION, **payload}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(body, indent=2, sort_keys=False, default=json_default) + "\n")


def _producer(path: Path) -> str | None:
    if "localization" in path.parts[:-1]:
        return "localize"
    if "attribution" in path.parts[:-1]:
        return "attribute"
    return PRODUCERS.get(path.name)


def _damaged(path: Path, why: str) -> RunDirError:
    producer = _producer(path)
    fix = (
        f"re-run `mecharule {producer}` on the run directory to rewrite it"
        if producer
        else "delete it and re-run the command"
    )
    return RunDirError(f"{path} is damaged ({why}); {fix}")


def read_json(path: Path, required: Sequence[str] = ()) -> dict[str, Any]:
    """A JSON object written by :func:`write_json`, checked: valid, a mapping, a schema this version
    reads, and holding the ``required`` keys."""
    if not path.exists():
        raise RunDirError(f"{path} does not exist; run the stage that writes it first")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(path, f"not valid JSON: {exc}") from exc
    except OSError as exc:
        raise _damaged(path, f"unreadable: {exc.strerror or exc}") from exc
    if not isinstance(data, dict):
        raise _damaged(path, f"a JSON {type(data).__name__} where an object was expected")
    _check_schema(path, data.get("schema_version", SCHEMA_VERSION))
    missing = [key for key in required if key not in data]
    if missing:
        raise _damaged(path, f"no {', '.join(repr(k) for k in missing)} field")
    return data


def _check_schema(path: Path, version: Any) -> None:
    if not isinstance(version, int) or isinstance(version, bool):
        raise _damaged(path, f"schema_version {version!r} is not an integer")
    if version > SCHEMA_VERSION:
        raise RunDirError(
            f"{path} has schema_version {version}, newer than this mecharule reads ({SCHEMA_VERSION}); "
            "upgrade mecharule or re-run the stage that wrote it"
        )


def write_parquet(path: Path, frame: pd.DataFrame, provenance: dict[str, Any] | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"mecharule"] = json.dumps(
        {"schema_version": SCHEMA_VERSION, **(provenance or {})}, default=json_default
    ).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


BEHAVIOUR_COLUMNS = {"label": "b", "split": "OSU"}  # column → accepted numpy dtype kinds


def read_parquet(path: Path, columns: Sequence[str] | Mapping[str, str] = ()) -> pd.DataFrame:
    """A table written by :func:`write_parquet`, checked: readable, a schema this version reads, and
    holding the ``columns`` (given as a mapping, each of one of the numpy dtype kinds named)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise RunDirError(f"{path} does not exist; run the stage that writes it first")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _damaged(path, f"not a readable parquet table: {str(exc).splitlines()[0][:200]}") from exc
    raw = (table.schema.metadata or {}).get(b"mecharule")
    if raw is not None:
        try:
            meta = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _damaged(path, "its mecharule metadata is not valid JSON") from exc
        _check_schema(path, meta.get("schema_version", SCHEMA_VERSION) if isinstance(meta, dict) else None)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise _damaged(path, f"no column {', '.join(repr(c) for c in missing)}")
    frame = table.to_pandas()
    if isinstance(columns, Mapping):
        for column, kinds in columns.items():
            if frame[column].dtype.kind not in kinds:
                raise _damaged(path, f"column {column!r} holds {frame[column].dtype}")
    return frame


def json_default(value: Any) -> Any:
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


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class RunDir:
    """A run directory, its stage bookkeeping (``run.json``) and its lock (``run.lock``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._digests: dict[tuple[str, int, int], str] = {}  # (name, size, mtime_ns) → digest

    def digest(self, name: str) -> str:
        """The content digest of a file of the run, computed once per version of the file."""
        stat = self.file(name).stat()
        key = (name, stat.st_size, stat.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = file_digest(self.file(name))
        return self._digests[key]

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
        if not path.exists():
            return {"schema_version": SCHEMA_VERSION, "stages": {}}
        try:
            manifest = read_json(path)
        except RunDirError as exc:
            raise RunDirError(
                f"{path} is damaged ({str(exc.__cause__ or exc)[:160]}); it records which stages are "
                "done: delete it to recompute every stage, or choose another --out"
            ) from exc
        if not isinstance(manifest.get("stages", {}), dict):
            raise RunDirError(f"{path} is damaged ('stages' is not a mapping); delete it to start over")
        return manifest

    def update_manifest(self, **fields: Any) -> None:
        manifest = self.manifest()
        manifest.update(fields)
        manifest.pop("schema_version", None)
        write_json(self.file("run.json"), manifest)

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        record = self.manifest().get("stages", {}).get(stage)
        return record if isinstance(record, dict) else None

    def why_not_done(self, stage: str, stage_hash: str) -> str | None:
        """None if ``stage`` is done under ``stage_hash`` with intact outputs; else the reason."""
        record = self.stage_record(stage)
        if record is None:
            return f"{stage} has not run in {self.path}"
        if record.get("config_hash") != stage_hash:
            return f"{stage} ran in {self.path} under another config or model"
        digests = record.get("digests")
        if not isinstance(digests, dict):
            return f"{stage}'s record in run.json has no output digests (an older mecharule wrote it)"
        for name, expected in digests.items():
            path = self.file(name)
            if not path.is_file():
                return f"{name} is missing"
            if self.digest(name) != expected:
                return f"{name} changed since {stage} wrote it"
        return None

    def stage_is_done(self, stage: str, stage_hash: str) -> bool:
        return self.why_not_done(stage, stage_hash) is None

    def intact_stages(self) -> set[str] | None:
        """Stages whose record stands with intact outputs; None when there is no ``run.json`` (a
        directory assembled by hand: its files are all there is to trust)."""
        if not self.file("run.json").exists():
            return None
        stages = self.manifest().get("stages", {})
        return {
            name
            for name, record in stages.items()
            if isinstance(record, dict) and self.stage_is_done(name, str(record.get("config_hash")))
        }

    def trusted(self, name: str) -> bool:
        """Whether an artifact may be read: it exists and, when run.json exists, the stage that
        wrote it stands recorded with it intact (files an interrupted re-run left are not)."""
        if not self.file(name).exists():
            return False
        stages = self.intact_stages()
        producer = _producer(self.file(name))
        return stages is None or producer in (None, "report") or producer in stages

    def mark_stage_done(
        self,
        stage: str,
        stage_hash: str,
        outputs: list[str],
        wall_seconds: float,
        inputs: dict[str, Any] | None = None,
    ) -> None:
        manifest = self.manifest()
        stages = dict(manifest.get("stages", {}))
        stages[stage] = {
            "config_hash": stage_hash,
            "outputs": outputs,
            "digests": {name: self.digest(name) for name in outputs},
            "wall_seconds": round(wall_seconds, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **({"inputs": inputs} if inputs is not None else {}),
        }
        self.update_manifest(stages=stages)

    def forget(self, stages: Sequence[str]) -> None:
        """Remove the records of ``stages`` (their outputs are about to be rewritten)."""
        manifest = self.manifest()
        recorded = dict(manifest.get("stages", {}))
        if any(name in recorded for name in stages):
            self.update_manifest(stages={k: v for k, v in recorded.items() if k not in stages})

    def invalidate_after(self, stage: str, order: list[str]) -> None:
        """Forget ``stage`` and every stage after it in ``order``."""
        self.forget(order[order.index(stage) :] if stage in order else [stage])

    def remove(self, names: Sequence[str]) -> None:
        """Delete files or folders of the run (stale outputs of an earlier config)."""
        import shutil

        for name in names:
            path = self.file(name)
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            parent = path.parent  # and the folders that held only it
            while parent != self.path and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    def files_under(self, folder: str) -> list[str]:
        """Every file under ``folder``, relative to the run directory, sorted."""
        root = self.file(folder)
        if not root.is_dir():
            return []
        return sorted(str(p.relative_to(self.path)) for p in root.rglob("*") if p.is_file())

    # -- run.lock -------------------------------------------------------------------------------
    @contextmanager
    def locked(self, command: str) -> Iterator[None]:
        """Hold ``run.lock`` for the block; refuse while another live process holds it."""
        self.ensure_writable()
        path = self.file(LOCK_NAME)
        mine = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "process_start": _process_start(os.getpid()),
            "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = _read_lock(path)
                if holder is not None and _holder_alive(holder):
                    raise RunDirError(_in_use_message(self.path, holder)) from None
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(mine, handle)
            break
        else:
            raise RunDirError(f"could not take {path}: another process keeps re-creating it")
        try:
            yield
        finally:
            holder = _read_lock(path)
            if holder is not None and holder.get("pid") == mine["pid"]:
                path.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict[str, Any] | None:
    """The holder recorded in a lock file; None when it is unreadable (its writer died mid-write and
    the file is older than a few seconds) or gone."""
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        try:
            young = time.time() - path.stat().st_mtime < 5.0
        except OSError:
            return None
        return {"pid": None, "command": "a starting process"} if young else None


def _process_start(pid: int) -> str | None:
    """The start time of a process in clock ticks (Linux), to tell a live holder from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _holder_alive(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    if pid is None:
        return True  # a lock being written right now
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: it cannot be checked from here
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError, TypeError):
        return False
    started = holder.get("process_start")
    return started is None or started == _process_start(int(pid))


def _in_use_message(folder: Path, holder: dict[str, Any]) -> str:
    where = f"pid {holder.get('pid')} on {holder.get('host', '?')}, since {holder.get('started', '?')}"
    return (
        f"{folder} is in use by `{holder.get('command', '?')}` ({where}); wait for it to finish or "
        f"choose another --out (if that process is gone, delete {folder / LOCK_NAME})"
    )


def run_stage(
    rundir: RunDir,
    stage: str,
    stage_hash: str,
    body: Callable[[], list[str]],
    *,
    later: Sequence[str] = (),
    stale: Sequence[str] = (),
    inputs: dict[str, Any] | None = None,
) -> bool:
    """Run ``body`` unless the stage is already done with this hash. Returns True if it ran.

    Before ``body`` starts, the records of the stage and of the ``later`` stages (which read its
    outputs) are removed and the ``stale`` paths (outputs of an earlier config) deleted: a kill inside
    ``body`` leaves no record claiming mixed files are complete.
    """
    if rundir.stage_is_done(stage, stage_hash):
        return False
    rundir.forget([stage, *later])
    rundir.remove(stale)
    started = time.perf_counter()
    outputs = body()
    rundir.mark_stage_done(stage, stage_hash, outputs, time.perf_counter() - started, inputs)
    return True
