"""A stage's journal of finished work, so that a killed stage resumes without redoing it.

A journal is an append-only JSON-lines file under ``<run>/.partial/<stage>-<key>/``: one line per
finished piece of work (an oracle answer, one unit's flip column, one rule's scores), flushed and
fsync'ed as it is written. A stage opened again under the same key replays the lines an *earlier*
process wrote; work done by this process is never served back to it, so the costs a stage reports
(group evaluations, brute-force singletons) are those of one uninterrupted run. A line cut short by a
kill is ignored. The folder is removed when the stage finishes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class Journal:
    """Finished work of one stage run, keyed by strings; values are JSON-serialisable."""

    def __init__(self, folder: Path, name: str = "journal.jsonl") -> None:
        self.folder = folder
        self.path = folder / name
        self.replayed = 0  # answers served from an earlier process
        self.recorded = 0  # answers computed and written by this process
        self._earlier = self._load(self.path)
        self._handle: Any = None

    @staticmethod
    def _load(path: Path) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if not path.exists():
            return found
        _cut_to_last_line(path)  # so that this process's first line does not join a cut one
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                    found[str(entry["k"])] = entry["v"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # the line a kill cut short
        return found

    def __len__(self) -> int:
        return len(self._earlier)

    def get(self, key: str) -> Any | None:
        """The value an earlier process recorded under ``key``, or None."""
        if key not in self._earlier:
            return None
        self.replayed += 1
        return self._earlier[key]

    def put(self, key: str, value: Any) -> None:
        self.put_many([(key, value)])

    def put_many(self, entries: Iterable[tuple[str, Any]]) -> None:
        lines = [
            json.dumps({"k": key, "v": value}, separators=(",", ":"), default=_plain) + "\n"
            for key, value in entries
        ]
        if not lines:
            return
        if self._handle is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write("".join(lines))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.recorded += len(lines)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def discard(self) -> None:
        """Remove the journal's folder (the stage finished and wrote its outputs)."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        parent = self.folder.parent
        if parent.name == ".partial" and parent.exists() and not any(parent.iterdir()):
            parent.rmdir()


def _cut_to_last_line(path: Path) -> None:
    """Truncate a journal to its last complete line (a kill can cut the last one short)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as plain JSON values."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot journal a {type(value).__name__}")


__all__ = ["Journal"]
