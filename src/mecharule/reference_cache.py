"""Shared reference artifacts, computed once per run and stored under ``<run>/reference/``.

Attribution, localization and anchoring all ablate towards the same reference value tables, and
localization and validation sample problems from the same spectral pool; each used to compute them
again (and again after every resume). They are stored here, keyed by everything they depend on: the
measure stage's key (model weights, task, prompts), the behaviour table's digest and their own
settings. A missing or unreadable entry is recomputed; a fresh measure removes the folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.values import AblationKind, ValueTable, reference_tables
from mecharule.io.rundir import RunDir, atomic_path, config_hash
from mecharule.models.loading import ModelHandle
from mecharule.sampling.slices import Clustering

log = logging.getLogger(__name__)
FOLDER = "reference"
T = TypeVar("T")


def _entry_key(run_dir: Path, **settings: object) -> str | None:
    """The key of an entry, or None when the run has no recorded measure (nothing to key it by)."""
    rundir = RunDir(run_dir)
    if not rundir.file("run.json").exists() or not rundir.file("behaviour.parquet").exists():
        return None
    record = rundir.stage_record("measure")
    if record is None:
        return None
    return config_hash(
        {"measure": record.get("config_hash"), "behaviour": rundir.digest("behaviour.parquet"), **settings}
    )


def _cached(
    path: Path | None, load: Callable[[Path], T], compute: Callable[[], T], save: Callable[[T, Path], None]
) -> T:
    if path is not None and path.exists():
        try:
            return load(path)
        except Exception as exc:  # a damaged entry is recomputed, never trusted
            log.warning("reference cache entry %s is unreadable (%s); recomputing it", path, exc)
    value = compute()
    if path is not None:
        with atomic_path(path) as tmp:
            save(value, tmp)
    return value


def value_tables(
    run_dir: Path | None,
    handle: ModelHandle,
    behaviour: pd.DataFrame,
    kind: str,
    ablation: AblationKind,
    n_reference: int,
    seed: int,
) -> dict[SiteKey, ValueTable]:
    """:func:`~mecharule.interventions.values.reference_tables`, stored once per run."""
    key = (
        None
        if run_dir is None
        else _entry_key(run_dir, kind=kind, ablation=ablation, n=n_reference, seed=seed)
    )
    path = None if key is None else Path(run_dir or ".") / FOLDER / f"tables-{key}.safetensors"
    tables = _cached(
        path,
        _load_tables,
        lambda: reference_tables(handle, behaviour, kind, ablation, n_reference, seed),
        _save_tables,
    )
    device = handle.device
    return {key: ValueTable(t.values.to(device), t.min_offset) for key, t in tables.items()}


def _save_tables(tables: dict[SiteKey, ValueTable], path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {f"{layer}|{kind}": table.values.contiguous().cpu() for (layer, kind), table in tables.items()}
    offsets = {f"{layer}|{kind}": str(table.min_offset) for (layer, kind), table in tables.items()}
    save_file(tensors, str(path), metadata=offsets)


def _load_tables(path: Path) -> dict[SiteKey, ValueTable]:
    from safetensors import safe_open

    tables: dict[SiteKey, ValueTable] = {}
    with safe_open(str(path), framework="pt") as handle:
        offsets = handle.metadata() or {}
        for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            layer, kind = name.split("|")
            tables[(int(layer), kind)] = ValueTable(handle.get_tensor(name), int(offsets[name]))  # type: ignore[index]
    if not tables:
        raise ValueError("no tables")
    return tables


def spectral_pool(
    run_dir: Path | None,
    handle: ModelHandle,
    behaviour: pd.DataFrame,
    pool_size: int,
    n_clusters: int,
    seed: int,
) -> tuple[np.ndarray, Clustering]:
    """:func:`~mecharule.localization.problems.spectral_pool`, stored once per run."""
    from mecharule.localization.problems import spectral_pool as compute

    key = None if run_dir is None else _entry_key(run_dir, pool=pool_size, clusters=n_clusters, seed=seed)
    path = None if key is None else Path(run_dir or ".") / FOLDER / f"pool-{key}.npz"
    return _cached(
        path,
        _load_pool,
        lambda: compute(handle, behaviour, pool_size, n_clusters, seed),
        _save_pool,
    )


def _save_pool(value: tuple[np.ndarray, Clustering], path: Path) -> None:
    pool, clustering = value
    with path.open("wb") as handle:
        np.savez(
            handle, pool=pool, Z=clustering.Z, centers=clustering.centers, assignment=clustering.assignment
        )


def _load_pool(path: Path) -> tuple[np.ndarray, Clustering]:
    with np.load(path, allow_pickle=False) as data:
        return data["pool"], Clustering(data["Z"], data["centers"], data["assignment"])


__all__ = ["FOLDER", "spectral_pool", "value_tables"]
