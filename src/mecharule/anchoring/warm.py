"""A warm start of the anchor stage from another run's finished anchoring.

A sweep setting that changes only what localization finds (``search.tau``, ...) anchors mostly the
same units as its base run, on the same evaluation prompts with the same ablation. Their flip columns
and anchored rules are then the base run's, so they are offered to the setting's anchor stage as
journal entries in the stage's own format: the stage takes an entry only when it matches what it
would compute (a flip column for the same kept rows; a rule fit for the same flip data, by digest)
and computes everything else. Only the caller knows that the anchoring inputs are equal (the stage's
config fields and the measure key); see :func:`mecharule.sweep.runner.SweepRunner`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mecharule.anchoring.flips import FLIP_TARGETS, flips_key
from mecharule.anchoring.neuron_rules import anchored_key
from mecharule.io.journal import Journal
from mecharule.io.rundir import RunDir, read_json, read_parquet


def warm_entries(run_dir: Path) -> list[tuple[str, Any]]:
    """The journal entries a finished anchoring in ``run_dir`` answers: each anchored agonist's flip
    column and its anchored-rule entry (none when the run's anchoring does not stand)."""
    rundir = RunDir(run_dir)
    if not (rundir.trusted("flips.parquet") and rundir.trusted("neuron_rules.json")):
        return []
    flips = read_parquet(rundir.file("flips.parquet"))
    rows = [int(r) for r in flips["row"]]
    units = [c for c in flips.columns if c not in ("row", "split", "baseline")]
    entries: list[tuple[str, Any]] = [
        (flips_key(u), {"rows": rows, "labels": flips[u].astype(bool).tolist()}) for u in units
    ]
    for entry in read_json(rundir.file("neuron_rules.json")).get("agonists", []):
        unit = str(entry.get("site"))
        if unit in units:
            entries.append((anchored_key(FLIP_TARGETS, unit, flips), entry))
    return entries


def warm_journal(source: Path, folder: Path) -> int:
    """Add ``source``'s entries to the journal in ``folder`` (those it lacks); how many were added."""
    journal = Journal(folder)
    try:
        new = [(key, value) for key, value in warm_entries(source) if journal.get(key) is None]
        journal.put_many(new)
    finally:
        journal.close()
    return len(new)


__all__ = ["warm_entries", "warm_journal"]
