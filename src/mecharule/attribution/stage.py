"""The attribution stage: per behaviour rule, signed unit scores from each method.

For a regime (``positive``: TRAIN rows the model gets right; ``negative``: rows it gets wrong):

1. last-token states of the eligible rows → spectral embedding → k-center clusters (k = n_pairs // 4);
2. per rule: ``n_pairs`` covered rows, stratified over the clusters; each paired with its nearest
   uncovered eligible row of the same token length (EAP-IG's corrupted prompt);
3. ``atp``: AtP toward the position-aligned mean over ``n_reference`` random TRAIN rows (drawn as the
   localization stage draws them, so both use the same ablation values); ``eap_ig``: EAP-IG over the
   length-matched pairs (unmatched pairs are dropped and counted);
   A rule that covers no eligible row of the regime (a real model can fail a whole slice, such as
   every negative result) is attributed on the other regime's covered rows instead, and the record
   says so (``regime``, ``regime_fallback``); without scores, localization would search every unit;
4. writes ``attribution/rule_<id>.safetensors`` (one ``[n_layers, width]`` tensor per method) and
   ``attribution/rule_<id>.json`` (method settings, pairing statistics, top-20 units per method).

With a :class:`~mecharule.io.journal.Journal`, each rule's files are journaled with their content
digests once written; a resumed run reads a journaled rule back from its files (when they still
match the digests) instead of attributing it again. The eligible pool and reference tables are
recomputed on resume unless every rule is finished.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from mecharule.attribution import ATTRIBUTORS, AttributionRequest, select_candidates
from mecharule.errors import ConfigError, DataError
from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.values import AblationKind, PositionMode, ValueTable
from mecharule.io.journal import Journal
from mecharule.io.rundir import SCHEMA_VERSION, RunDir, atomic_path, read_json, read_parquet, write_json
from mecharule.models.loading import ModelHandle
from mecharule.models.sites import UnitKind, check_unit_kind
from mecharule.sampling import (
    REGIME_LABEL,
    Clustering,
    kcenter,
    last_token_states,
    length_matched_pairs,
    spectral_embedding,
    stratified_sample,
)
from mecharule.tasks.base import Task

log = logging.getLogger(__name__)

RuleMask = np.ndarray | Callable[[pd.DataFrame], np.ndarray]
_RULE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
TOP_UNITS = 20


@dataclass(frozen=True)
class RuleAttribution:
    """One rule's outcome: scores per method (empty if skipped) and the JSON record written."""

    rule_id: str
    scores: dict[str, torch.Tensor]
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return not self.scores


@dataclass(frozen=True)
class _Pool:
    """Eligible TRAIN rows of the regime, their prompts, answers, token lengths and clusters."""

    rows: np.ndarray
    prompts: list[str]
    answers: list[str]
    lengths: np.ndarray
    states: np.ndarray
    clustering: Clustering


def attribute_rules(
    handle: ModelHandle,
    task: Task,
    run_dir: RunDir | Path,
    *,
    rules: Sequence[Mapping[str, Any]],
    methods: Sequence[str] = ("atp",),
    kind: UnitKind = "mlp",
    n_pairs: int = 128,
    ig_steps: int = 8,
    seed: int = 0,
    regime: str = "positive",
    positions: PositionMode = "decode",
    n_reference: int = 256,
    batch_size: int = 64,
    behaviour: pd.DataFrame | None = None,
    journal: Journal | None = None,
    ablation: AblationKind = "mean",
) -> list[RuleAttribution]:
    """Attribute every rule (``{"id": str, "mask": bool array over behaviour rows | callable(frame)}``,
    optional ``"text"``); see the module docstring. ``behaviour`` defaults to the run's table.
    ``journal``: record each finished rule there, and skip the rules an earlier (killed) run finished."""
    kind = check_unit_kind(kind)
    _check_options(methods, regime, n_pairs, rules)
    root = run_dir.path if isinstance(run_dir, RunDir) else Path(run_dir)
    out_dir = root / "attribution"
    if behaviour is None:
        behaviour = read_parquet(root / "behaviour.parquet")
    behaviour = behaviour.reset_index(drop=True)
    masks = [_rule_mask(rule, behaviour) for rule in rules]
    keys = [f"rule|{rule['id']}|{_digest(mask.tobytes())}" for rule, mask in zip(rules, masks, strict=True)]
    finished = [
        _journaled(out_dir, str(rule["id"]), key, journal) for rule, key in zip(rules, keys, strict=True)
    ]
    if all(done is not None for done in finished):
        return [done for done in finished if done is not None]
    pool = _eligible_pool(handle, behaviour, regime, n_pairs, seed)
    needs_tables = any(m in ("atp", "atp_gd") for m in methods)
    tables = (
        _reference_tables(root, handle, behaviour, kind, ablation, n_reference, seed)
        if needs_tables
        else None
    )
    results = []
    pools: dict[str, _Pool | None] = {regime: pool}
    for rule, mask, key, done in zip(rules, masks, keys, finished, strict=True):
        if done is not None:
            results.append(done)
            continue
        used = regime
        result = _attribute_one(
            handle, pool, str(rule["id"]), mask, methods, kind, tables, n_pairs, ig_steps, seed, positions,
            batch_size,
        )  # fmt: skip
        if result.skipped and not mask[pool.rows].any():
            # The rule covers no row of this regime (e.g. every negative result is wrong): rank units on
            # the other regime's covered rows rather than leave the rule unranked (all units searched).
            other = next(r for r in REGIME_LABEL if r != regime)
            if other not in pools:
                pools[other] = _optional_pool(handle, behaviour, other, n_pairs, seed)
            other_pool = pools[other]
            if other_pool is not None and mask[other_pool.rows].any():
                used = other
                result = _attribute_one(
                    handle, other_pool, str(rule["id"]), mask, methods, kind, tables, n_pairs, ig_steps,
                    seed, positions, batch_size,
                )  # fmt: skip
                result.record["regime_fallback"] = (
                    f"the rule covers no eligible {regime} TRAIN row; attributed on {other} rows"
                )
        record = {
            "rule_id": result.rule_id,
            "rule": rule.get("text", ""),
            "regime": used,
            "kind": kind,
            "positions": positions,
            "model": handle.name,
            "task": task.name,
            "seed": seed,
            **result.record,
        }
        files = _save(out_dir, result.rule_id, result.scores, record)
        if journal is not None:
            journal.put(key, {name: _digest(path.read_bytes()) for name, path in files.items()})
        results.append(RuleAttribution(result.rule_id, result.scores, record))
    return results


def _journaled(out_dir: Path, rule_id: str, key: str, journal: Journal | None) -> RuleAttribution | None:
    """The rule as an earlier run left it: its files, if the journal has them and they still match."""
    digests = journal.get(key) if journal is not None else None
    if not isinstance(digests, dict) or f"rule_{rule_id}.json" not in digests:
        return None
    for name, digest in digests.items():
        path = out_dir / name
        if not path.is_file() or _digest(path.read_bytes()) != digest:
            return None
    record = read_json(out_dir / f"rule_{rule_id}.json")
    record.pop("schema_version", None)
    scores: dict[str, torch.Tensor] = {}
    if f"rule_{rule_id}.safetensors" in digests:
        scores = load_file(str(out_dir / f"rule_{rule_id}.safetensors"))
    return RuleAttribution(rule_id, scores, record)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _attribute_one(
    handle: ModelHandle,
    pool: _Pool,
    rule_id: str,
    mask: np.ndarray,
    methods: Sequence[str],
    kind: UnitKind,
    tables: Mapping[SiteKey, ValueTable] | None,
    n_pairs: int,
    ig_steps: int,
    seed: int,
    positions: PositionMode,
    batch_size: int,
) -> RuleAttribution:
    fires = mask[pool.rows]
    covered_pool, uncovered_pool = np.flatnonzero(fires), np.flatnonzero(~fires)
    base = {"n_covered_available": len(covered_pool), "n_uncovered_available": len(uncovered_pool)}
    if len(covered_pool) == 0 or len(uncovered_pool) == 0:
        reason = f"{len(covered_pool)} covered and {len(uncovered_pool)} uncovered eligible rows"
        return RuleAttribution(rule_id, {}, {**base, "status": "skipped", "reason": reason})
    c = pool.clustering
    covered = stratified_sample(c.Z, c.centers, c.assignment, covered_pool, n_pairs, seed)
    pairing = length_matched_pairs(covered, uncovered_pool, pool.lengths, pool.states)
    matched = pairing.matched_pairs()
    scores: dict[str, torch.Tensor] = {}
    per_method: dict[str, Any] = {}
    for method in methods:
        if method == "eap_ig" and not matched:
            per_method[method] = {"status": "skipped", "reason": "no length-matched pair"}
            continue
        started = time.perf_counter()
        request = _request(pool, method, covered, matched, kind, positions, tables, ig_steps, batch_size)
        scores[method] = ATTRIBUTORS.get(method)(handle, request)
        per_method[method] = {
            "status": "ok",
            "n_prompts": len(request.prompts),
            "seconds": round(time.perf_counter() - started, 3),
            "top_units": _top_units(scores[method], kind),
        }
    record = {
        **base,
        "status": "ok" if scores else "skipped",
        "n_pairs": len(matched),
        "ig_steps": ig_steps,
        "pairing": pairing.stats(),
        "covered_rows": pool.rows[covered].tolist(),
        "corrupted_rows": [int(pool.rows[r]) for _, r in matched],
        "clean_rows_of_pairs": [int(pool.rows[c_]) for c_, _ in matched],
        "methods": per_method,
    }
    return RuleAttribution(rule_id, scores, record)


def _request(
    pool: _Pool,
    method: str,
    covered: np.ndarray,
    matched: list[tuple[int, int]],
    kind: UnitKind,
    positions: PositionMode,
    tables: Mapping[SiteKey, ValueTable] | None,
    ig_steps: int,
    batch_size: int,
) -> AttributionRequest:
    if method == "eap_ig":
        clean = [c for c, _ in matched]
        return AttributionRequest(
            prompts=[pool.prompts[i] for i in clean],
            answers=[pool.answers[i] for i in clean],
            corrupted_prompts=[pool.prompts[r] for _, r in matched],
            kind=kind,
            positions=positions,
            ig_steps=ig_steps,
            batch_size=batch_size,
        )
    return AttributionRequest(
        prompts=[pool.prompts[i] for i in covered],
        answers=[pool.answers[i] for i in covered],
        kind=kind,
        positions=positions,
        tables=tables,
        ig_steps=ig_steps,
        batch_size=batch_size,
    )


def _eligible_pool(
    handle: ModelHandle, behaviour: pd.DataFrame, regime: str, n_pairs: int, seed: int
) -> _Pool:
    for column in ("prompt", "answer", "label"):
        if column not in behaviour.columns:
            raise DataError(f"the behaviour table lacks column {column!r}; run `mecharule measure` first")
    train = (
        (behaviour["split"] == "train").to_numpy() if "split" in behaviour else np.ones(len(behaviour), bool)
    )
    rows = np.flatnonzero(train & (behaviour["label"].to_numpy(bool) == REGIME_LABEL[regime]))
    if len(rows) < 2:
        raise DataError(f"only {len(rows)} TRAIN rows with baseline label {REGIME_LABEL[regime]} ({regime})")
    prompts = behaviour["prompt"].iloc[rows].tolist()
    states = last_token_states(handle, prompts)
    Z = spectral_embedding(states, dim=32, seed=seed)
    centers, assignment = kcenter(Z, max(1, n_pairs // 4), seed)
    lengths = np.asarray([len(handle.tokenizer(p)["input_ids"]) for p in prompts])
    return _Pool(
        rows,
        prompts,
        behaviour["answer"].iloc[rows].tolist(),
        lengths,
        states,
        Clustering(Z, centers, assignment),
    )


def _optional_pool(
    handle: ModelHandle, behaviour: pd.DataFrame, regime: str, n_pairs: int, seed: int
) -> _Pool | None:
    try:
        return _eligible_pool(handle, behaviour, regime, n_pairs, seed)
    except DataError:
        return None


def _reference_tables(
    run_dir: Path,
    handle: ModelHandle,
    behaviour: pd.DataFrame,
    kind: UnitKind,
    ablation: AblationKind,
    n_reference: int,
    seed: int,
) -> dict[SiteKey, ValueTable]:
    """The values AtP patches towards: those localization ablates to (the shared reference draw).
    Zero ablation patches to zero; a resample ablation, whose value differs per prompt, is taken at
    its expectation over the reference draw, the mean."""
    from mecharule import reference_cache

    target: AblationKind = "zero" if ablation == "zero" else "mean"
    return reference_cache.value_tables(run_dir, handle, behaviour, kind, target, n_reference, seed)


def _rule_mask(rule: Mapping[str, Any], behaviour: pd.DataFrame) -> np.ndarray:
    raw = rule["mask"]
    mask = np.asarray(raw(behaviour) if callable(raw) else raw)
    if mask.shape != (len(behaviour),) or mask.dtype != bool:
        raise DataError(
            f"rule {rule['id']!r}: the mask must be a boolean array with one entry per behaviour row "
            f"({len(behaviour)}); got dtype {mask.dtype} and shape {mask.shape}"
        )
    return mask


def _top_units(scores: torch.Tensor, kind: UnitKind) -> list[dict[str, Any]]:
    return [
        {"site": str(s), "score": float(scores[s.layer, s.index])}
        for s in select_candidates(scores, kind, TOP_UNITS, include_zeros=True)
    ]


def _save(
    out_dir: Path, rule_id: str, scores: Mapping[str, torch.Tensor], record: dict[str, Any]
) -> dict[str, Path]:
    """Write the rule's files (no safetensors when it has no scores); returns them by name."""
    tensors_path, record_path = out_dir / f"rule_{rule_id}.safetensors", out_dir / f"rule_{rule_id}.json"
    files = {}
    if scores:
        with atomic_path(tensors_path) as tmp:
            tensors = {name: t.detach().float().contiguous().cpu() for name, t in scores.items()}
            save_file(
                tensors, str(tmp), metadata={"schema_version": str(SCHEMA_VERSION), "kind": record["kind"]}
            )
        files[tensors_path.name] = tensors_path
    write_json(record_path, record)
    files[record_path.name] = record_path
    return files


def _check_options(
    methods: Sequence[str], regime: str, n_pairs: int, rules: Sequence[Mapping[str, Any]]
) -> None:
    for method in methods:
        ATTRIBUTORS.get(method)  # raises UnknownNameError listing the valid names
    if not methods:
        raise ConfigError("methods is empty; pass at least one of " + ", ".join(ATTRIBUTORS.names()))
    if regime not in REGIME_LABEL:
        raise ConfigError(f"regime={regime!r}: allowed are {', '.join(REGIME_LABEL)}")
    if n_pairs < 1:
        raise ConfigError(f"n_pairs={n_pairs}: must be at least 1")
    for rule in rules:
        if "id" not in rule or "mask" not in rule:
            raise ConfigError(f"each rule needs 'id' and 'mask' keys; got keys {sorted(rule)}")
        if not _RULE_ID.match(str(rule["id"])):
            raise ConfigError(
                f"rule id {rule['id']!r}: use letters, digits, '_', '-' or '.' (it names files)"
            )


__all__ = ["RuleAttribution", "attribute_rules"]
